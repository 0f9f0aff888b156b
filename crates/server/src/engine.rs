//! The storage engine: an in-memory catalog behind one lock, with a single choke point for every change.
//!
//! Invariants:
//! - All state lives in one [`Catalog`] behind an `RwLock`. Readers ([`Engine::read`]) share it; a writer
//!   ([`Engine::write`]) holds it exclusively for the whole logical operation, so a multi-document command
//!   sees and produces a consistent state.
//! - Every data or catalog change is a [`Mutation`] applied through [`WriteTxn::apply`]. When the write
//!   closure returns, the mutations that took effect form one [`WriteBatch`] handed to the [`Durability`]
//!   hook (journal, later the oplog) while the lock is still held; a hook that does not read batches
//!   ([`Durability::keeps_batches`], the in-memory server's) gets none, and the mutations are only
//!   counted. If the closure fails or the hook fails, the catalog is rolled back, so a batch is all or
//!   nothing.
//! - Writers first pass a gate that `fsyncLock`-style callers can close ([`Engine::block_writes`]); readers
//!   never wait on it.

pub mod batch;
pub mod catalog;
pub mod collection;
pub mod key;
pub mod namespace;

use std::io;
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};

use bson::Document;

pub use batch::{Mutation, WriteBatch};
pub use catalog::{Catalog, Database};
pub use collection::{Collection, CollectionKind, Index};
pub use namespace::Namespace;

use crate::error::{CommandError, CommandResult};

/// Where committed batches go before they become visible: a journal, an oplog, or nowhere.
pub trait Durability: Send + Sync {
    /// Records `batch`; when `sync` is true the call returns only once the batch is durable.
    fn log(&self, batch: &WriteBatch, sync: bool) -> io::Result<()>;

    /// Whether [`Durability::log`] reads its batches. When it does not, writes only count the mutations they
    /// apply instead of keeping them (an inserted document is then stored without a copy for the batch), and
    /// `log` is not called.
    fn keeps_batches(&self) -> bool {
        true
    }
}

/// Derives extra mutations from a write before it is logged (the replication oplog): sees each mutation
/// against the state before it is applied, then, once the write succeeded, may apply more mutations in the
/// same batch, so they are journaled and rolled back together with the change they describe.
pub trait WriteObserver: Send + Sync {
    /// Describes `m`, about to be applied to `before`, by pushing zero or more notes. The notes are dropped
    /// again if `m` fails.
    fn describe(&self, before: &Catalog, m: &Mutation, notes: &mut Vec<Document>);
    /// Called once the write closure succeeded, with the notes of all its mutations (possibly none), before
    /// the batch is logged.
    fn finish(&self, txn: &mut WriteTxn<'_>, notes: Vec<Document>) -> CommandResult<()>;
}

/// Durability for in-memory servers: forgets everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoDurability;

impl Durability for NoDurability {
    fn log(&self, _batch: &WriteBatch, _sync: bool) -> io::Result<()> {
        Ok(())
    }

    fn keeps_batches(&self) -> bool {
        false
    }
}

/// The storage engine.
pub struct Engine {
    catalog: RwLock<Catalog>,
    durability: RwLock<Arc<dyn Durability>>,
    observer: RwLock<Option<Arc<dyn WriteObserver>>>,
    gate: Mutex<u32>,
    gate_open: Condvar,
    metrics: QueryMetrics,
}

/// Query execution counters, reported by `serverStatus` under `metrics.queryExecutor` as mongod does:
/// `scanned` counts index keys examined, `scannedObjects` documents examined (fetched and matched).
#[derive(Debug, Default)]
pub struct QueryMetrics {
    scanned: std::sync::atomic::AtomicU64,
    scanned_objects: std::sync::atomic::AtomicU64,
}

impl QueryMetrics {
    /// Counts `n` index keys examined.
    pub fn add_keys(&self, n: u64) {
        self.scanned.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts `n` documents examined.
    pub fn add_docs(&self, n: u64) {
        self.scanned_objects.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// `(scanned, scannedObjects)` since start.
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.scanned.load(std::sync::atomic::Ordering::Relaxed),
            self.scanned_objects.load(std::sync::atomic::Ordering::Relaxed),
        )
    }
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
    applied: catalog::Applied,
    undo: Vec<catalog::Undo>,
    sync: bool,
    observer: Option<Arc<dyn WriteObserver>>,
    notes: Vec<Document>,
    session: Option<Document>,
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
        let notes_len = self.notes.len();
        if let Some(o) = &self.observer {
            o.describe(self.catalog, &m, &mut self.notes);
        }
        let r = self.catalog.apply(m, &mut self.undo, &mut self.applied);
        if r.is_err() {
            self.notes.truncate(notes_len);
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

    /// Number of mutations applied so far.
    pub fn changes(&self) -> usize {
        self.applied.len()
    }

    /// Marks the write as (part of) a retryable write: `{lsid, txnNumber}` of the command, recorded with its
    /// oplog entries.
    pub fn set_session(&mut self, session: Option<Document>) {
        self.session = session;
    }

    /// The retryable-write session set by [`WriteTxn::set_session`].
    pub fn session(&self) -> Option<&Document> {
        self.session.as_ref()
    }

    /// Stops the write observer from seeing the mutations applied from now on (used when applying oplog
    /// entries that are recorded verbatim instead of being derived again).
    pub fn unobserved(&mut self) {
        self.observer = None;
    }
}

impl Engine {
    /// An empty in-memory engine.
    pub fn new() -> Self {
        Self {
            catalog: RwLock::new(Catalog::default()),
            durability: RwLock::new(Arc::new(NoDurability)),
            observer: RwLock::new(None),
            gate: Mutex::new(0),
            gate_open: Condvar::new(),
            metrics: QueryMetrics::default(),
        }
    }

    /// Query execution counters.
    pub fn metrics(&self) -> &QueryMetrics {
        &self.metrics
    }

    /// Installs the durability hook (journal); batches committed afterwards go through it.
    pub fn set_durability(&self, d: Arc<dyn Durability>) {
        *self.durability.write().unwrap_or_else(PoisonError::into_inner) = d;
    }

    /// Installs the write observer (the oplog writer); writes started afterwards go through it.
    pub fn set_observer(&self, o: Option<Arc<dyn WriteObserver>>) {
        *self.observer.write().unwrap_or_else(PoisonError::into_inner) = o;
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
        let observer = self.observer.read().unwrap_or_else(PoisonError::into_inner).clone();
        let durability = self.durability.read().unwrap_or_else(PoisonError::into_inner).clone();
        let mut txn = WriteTxn {
            catalog: &mut guard,
            applied: catalog::Applied::new(durability.keeps_batches()),
            undo: Vec::new(),
            sync: false,
            observer,
            notes: Vec::new(),
            session: None,
        };
        let mut result = f(&mut txn);
        if result.is_ok()
            && let Some(o) = txn.observer.take()
        {
            let notes = std::mem::take(&mut txn.notes);
            if let Err(e) = o.finish(&mut txn, notes) {
                result = Err(e);
            }
        }
        let result = match result {
            // Nothing to log: either nothing changed or the durability hook does not read batches.
            Ok(r) if txn.applied.is_empty() || !txn.applied.keeps() => return Ok(r),
            Ok(r) => {
                let batch = WriteBatch {
                    mutations: txn.applied.take(),
                };
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use bson::{Bson, doc, rawdoc};

    use super::*;

    /// Records batches, and fails on demand.
    #[derive(Default)]
    struct Recorder {
        batches: StdMutex<Vec<(WriteBatch, bool)>>,
        fail: AtomicBool,
    }

    impl Durability for Recorder {
        fn log(&self, batch: &WriteBatch, sync: bool) -> io::Result<()> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(io::Error::other("disk full"));
            }
            self.batches.lock().unwrap().push((batch.clone(), sync));
            Ok(())
        }
    }

    fn ns(c: &str) -> Namespace {
        Namespace::new("db", c).unwrap()
    }

    fn create(engine: &Engine, c: &str, options: bson::Document) {
        engine
            .commit(
                WriteBatch {
                    mutations: vec![Mutation::CreateCollection {
                        ns: ns(c),
                        uuid: new_uuid(),
                        options,
                    }],
                },
                false,
            )
            .unwrap();
    }

    #[test]
    fn batches_reach_the_durability_hook_with_sync_flag() {
        let engine = Engine::new();
        let rec = Arc::new(Recorder::default());
        engine.set_durability(rec.clone());
        create(&engine, "c", doc! {});
        engine
            .write(|txn| {
                txn.set_sync(true);
                txn.apply(Mutation::Insert {
                    ns: ns("c"),
                    doc: rawdoc! { "_id": 1 },
                })?;
                txn.apply(Mutation::Insert {
                    ns: ns("c"),
                    doc: rawdoc! { "_id": 2 },
                })
            })
            .unwrap();
        let batches = rec.batches.lock().unwrap();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[1].0.mutations.len(), 2);
        assert!(batches[1].1);
        assert!(!batches[0].1);
    }

    #[test]
    fn a_failed_log_rolls_the_whole_batch_back() {
        let engine = Engine::new();
        let rec = Arc::new(Recorder::default());
        engine.set_durability(rec.clone());
        create(&engine, "c", doc! {});
        engine
            .commit(
                WriteBatch {
                    mutations: vec![Mutation::Insert {
                        ns: ns("c"),
                        doc: rawdoc! { "_id": 1, "v": 1 },
                    }],
                },
                false,
            )
            .unwrap();
        rec.fail.store(true, Ordering::SeqCst);
        let r = engine.write(|txn| {
            txn.apply(Mutation::Upsert {
                ns: ns("c"),
                doc: rawdoc! { "_id": 1, "v": 2 },
            })?;
            txn.apply(Mutation::Insert {
                ns: ns("c"),
                doc: rawdoc! { "_id": 2 },
            })?;
            txn.apply(Mutation::CreateIndex {
                ns: ns("c"),
                spec: doc! { "v": 2, "key": { "v": 1 }, "name": "v_1" },
            })?;
            txn.apply(Mutation::DropCollection { ns: ns("c") })
        });
        assert!(r.is_err());
        engine.read(|cat| {
            let c = cat.collection(&ns("c")).expect("collection restored");
            assert_eq!(c.len(), 1);
            assert_eq!(
                c.find_id(&Bson::Int32(1)).unwrap().1.as_bytes(),
                rawdoc! { "_id": 1, "v": 1 }.as_bytes()
            );
            assert_eq!(c.indexes().len(), 1);
        });
    }

    #[test]
    fn a_failed_mutation_leaves_earlier_ones_in_place() {
        let engine = Engine::new();
        create(&engine, "c", doc! {});
        let n = engine
            .write(|txn| {
                txn.apply(Mutation::Insert {
                    ns: ns("c"),
                    doc: rawdoc! { "_id": 1 },
                })?;
                let dup = txn.apply(Mutation::Insert {
                    ns: ns("c"),
                    doc: rawdoc! { "_id": 1.0 },
                });
                assert_eq!(dup.unwrap_err().code, 11000);
                Ok(txn.changes())
            })
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(engine.read(|cat| cat.collection(&ns("c")).unwrap().len()), 1);
    }

    #[test]
    fn capped_inserts_log_the_removed_documents() {
        let engine = Engine::new();
        let rec = Arc::new(Recorder::default());
        engine.set_durability(rec.clone());
        create(&engine, "cap", doc! { "capped": true, "size": 4096, "max": 2 });
        for i in 0..3 {
            engine
                .commit(
                    WriteBatch {
                        mutations: vec![Mutation::Insert {
                            ns: ns("cap"),
                            doc: rawdoc! { "_id": i },
                        }],
                    },
                    false,
                )
                .unwrap();
        }
        let batches = rec.batches.lock().unwrap();
        let last = &batches.last().unwrap().0.mutations;
        assert_eq!(last.len(), 2);
        assert_eq!(
            last[1],
            Mutation::Delete {
                ns: ns("cap"),
                id: Bson::Int32(0)
            }
        );
    }

    #[test]
    fn blocked_writes_wait_while_reads_proceed() {
        let engine = Arc::new(Engine::new());
        create(&engine, "c", doc! {});
        engine.block_writes();
        let e2 = Arc::clone(&engine);
        let writer = std::thread::spawn(move || {
            e2.commit(
                WriteBatch {
                    mutations: vec![Mutation::Insert {
                        ns: ns("c"),
                        doc: rawdoc! { "_id": 1 },
                    }],
                },
                false,
            )
        });
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(engine.read(|cat| cat.collection(&ns("c")).unwrap().len()), 0);
        assert!(!writer.is_finished());
        assert_eq!(engine.unblock_writes(), 0);
        writer.join().unwrap().unwrap();
        assert_eq!(engine.read(|cat| cat.collection(&ns("c")).unwrap().len()), 1);
    }

    #[test]
    fn upsert_replaces_in_place_keeping_natural_order() {
        let engine = Engine::new();
        create(&engine, "c", doc! {});
        for i in 0..3 {
            engine
                .commit(
                    WriteBatch {
                        mutations: vec![Mutation::Insert {
                            ns: ns("c"),
                            doc: rawdoc! { "_id": i },
                        }],
                    },
                    false,
                )
                .unwrap();
        }
        engine
            .commit(
                WriteBatch {
                    mutations: vec![Mutation::Upsert {
                        ns: ns("c"),
                        doc: rawdoc! { "_id": 0, "x": 1 },
                    }],
                },
                false,
            )
            .unwrap();
        engine
            .commit(
                WriteBatch {
                    mutations: vec![Mutation::Upsert {
                        ns: ns("c"),
                        doc: rawdoc! { "_id": 9 },
                    }],
                },
                false,
            )
            .unwrap();
        let order: Vec<bson::Document> = engine.read(|cat| {
            cat.collection(&ns("c"))
                .unwrap()
                .iter()
                .map(|(_, d)| d.to_document().unwrap())
                .collect()
        });
        assert_eq!(
            order,
            vec![
                doc! { "_id": 0, "x": 1 },
                doc! { "_id": 1 },
                doc! { "_id": 2 },
                doc! { "_id": 9 }
            ]
        );
    }
}
