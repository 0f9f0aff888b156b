//! The storage engine: an in-memory catalog behind one lock, with a single choke point for every change.
//!
//! Invariants:
//! - All state lives in one [`Catalog`] behind an `RwLock`. Readers ([`Engine::read`]) share it; a writer
//!   ([`Engine::write`]) holds it exclusively for the whole logical operation, so a multi-document command
//!   sees and produces a consistent state.
//! - Every data or catalog change is a [`Mutation`] applied through [`WriteTxn::apply`]. When the write
//!   closure returns, the mutations that took effect form one [`WriteBatch`] handed to the [`Durability`]
//!   hook (journal, later the oplog) while the lock is still held. If the closure fails or the hook fails,
//!   the catalog is rolled back, so a batch is all or nothing.
//! - Writers first pass a gate that `fsyncLock`-style callers can close ([`Engine::block_writes`]); readers
//!   never wait on it.

pub mod batch;
pub mod catalog;
pub mod collection;
pub mod key;
pub mod namespace;

use std::io;
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};

pub use batch::{Mutation, WriteBatch};
pub use catalog::{Catalog, Database};
pub use collection::{Collection, CollectionKind, Index};
pub use namespace::Namespace;

use crate::error::{CommandError, CommandResult};

/// Where committed batches go before they become visible: a journal, an oplog, or nowhere.
pub trait Durability: Send + Sync {
    /// Records `batch`; when `sync` is true the call returns only once the batch is durable.
    fn log(&self, batch: &WriteBatch, sync: bool) -> io::Result<()>;
}

/// Durability for in-memory servers: forgets everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoDurability;

impl Durability for NoDurability {
    fn log(&self, _batch: &WriteBatch, _sync: bool) -> io::Result<()> {
        Ok(())
    }
}

/// The storage engine.
pub struct Engine {
    catalog: RwLock<Catalog>,
    durability: RwLock<Arc<dyn Durability>>,
    gate: Mutex<u32>,
    gate_open: Condvar,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

impl Default for Engine {
    fn default() -> Self {
        Self::new()
    }
}

/// An open write: apply mutations, read the state they produce.
pub struct WriteTxn<'a> {
    catalog: &'a mut Catalog,
    applied: Vec<Mutation>,
    undo: Vec<catalog::Undo>,
    sync: bool,
}

impl WriteTxn<'_> {
    /// The catalog as changed so far by this write.
    pub fn catalog(&self) -> &Catalog {
        self.catalog
    }

    /// Applies one mutation. On error nothing of this mutation is applied (earlier ones stay, unless the
    /// write closure itself returns an error).
    pub fn apply(&mut self, m: Mutation) -> CommandResult<()> {
        let undo_len = self.undo.len();
        let applied_len = self.applied.len();
        let r = self.catalog.apply(m, &mut self.undo, &mut self.applied);
        if r.is_err() {
            // A failed mutation leaves no partial effect behind.
            while self.undo.len() > undo_len {
                if let Some(u) = self.undo.pop() {
                    self.catalog.undo(u);
                }
            }
            self.applied.truncate(applied_len);
        }
        r
    }

    /// Requests that the batch be durable before the write returns (`writeConcern: {j: true}`).
    pub fn set_sync(&mut self, sync: bool) {
        self.sync |= sync;
    }

    /// Mutations applied so far.
    pub fn applied(&self) -> &[Mutation] {
        &self.applied
    }
}

impl Engine {
    /// An empty in-memory engine.
    pub fn new() -> Self {
        Self {
            catalog: RwLock::new(Catalog::default()),
            durability: RwLock::new(Arc::new(NoDurability)),
            gate: Mutex::new(0),
            gate_open: Condvar::new(),
        }
    }

    /// Installs the durability hook (journal); batches committed afterwards go through it.
    pub fn set_durability(&self, d: Arc<dyn Durability>) {
        *self.durability.write().unwrap_or_else(PoisonError::into_inner) = d;
    }

    /// Runs `f` with shared access to the catalog.
    pub fn read<R>(&self, f: impl FnOnce(&Catalog) -> R) -> R {
        let guard = self.catalog.read().unwrap_or_else(PoisonError::into_inner);
        f(&guard)
    }

    /// Runs `f` with exclusive access, then logs the applied batch; rolls everything back if `f` or the log
    /// fails. Waits while writes are blocked.
    pub fn write<R>(&self, f: impl FnOnce(&mut WriteTxn<'_>) -> CommandResult<R>) -> CommandResult<R> {
        let mut guard = {
            // Hold the gate while taking the lock, so `block_writes` cannot slip in between.
            let mut g = self.gate.lock().unwrap_or_else(PoisonError::into_inner);
            while *g > 0 {
                g = self.gate_open.wait(g).unwrap_or_else(PoisonError::into_inner);
            }
            self.catalog.write().unwrap_or_else(PoisonError::into_inner)
        };
        let mut txn = WriteTxn { catalog: &mut guard, applied: Vec::new(), undo: Vec::new(), sync: false };
        let result = f(&mut txn);
        let result = match result {
            Ok(r) if txn.applied.is_empty() => Ok(r),
            Ok(r) => {
                let batch = WriteBatch { mutations: std::mem::take(&mut txn.applied) };
                let durability = self.durability.read().unwrap_or_else(PoisonError::into_inner).clone();
                match durability.log(&batch, txn.sync) {
                    Ok(()) => return Ok(r),
                    Err(e) => Err(CommandError::internal(format!("failed to journal write: {e}"))),
                }
            }
            Err(e) => Err(e),
        };
        while let Some(u) = txn.undo.pop() {
            txn.catalog.undo(u);
        }
        result
    }

    /// Applies a prepared batch atomically (used by replication and restore paths).
    pub fn commit(&self, batch: WriteBatch, sync: bool) -> CommandResult<()> {
        self.write(|txn| {
            txn.set_sync(sync);
            for m in batch.mutations {
                txn.apply(m)?;
            }
            Ok(())
        })
    }

    /// Closes the write gate (nestable): writers block until every `block_writes` is matched by
    /// [`Engine::unblock_writes`]. Returns once in-flight writes have finished.
    pub fn block_writes(&self) {
        *self.gate.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        // Taking the catalog write lock waits for writes already past the gate.
        drop(self.catalog.write().unwrap_or_else(PoisonError::into_inner));
    }

    /// Reopens the write gate once per earlier [`Engine::block_writes`]; returns the remaining lock count.
    pub fn unblock_writes(&self) -> u32 {
        let mut g = self.gate.lock().unwrap_or_else(PoisonError::into_inner);
        *g = g.saturating_sub(1);
        if *g == 0 {
            self.gate_open.notify_all();
        }
        *g
    }

    /// Current write-block nesting count.
    pub fn write_block_count(&self) -> u32 {
        *self.gate.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A fresh random collection UUID.
pub fn new_uuid() -> [u8; 16] {
    *uuid::Uuid::new_v4().as_bytes()
}
