//! [`Storage`]: the persistent store of one dbpath, tying ownership, recovery, journal and checkpoints
//! together, and plugged into the engine as its [`Durability`] hook.
//!
//! Life cycle: [`Storage::open`] takes `mongod.lock`, recovers the state into the (empty) engine, opens the
//! journal for new records and installs itself as the engine's durability hook; background threads run the
//! journal group commit and periodic checkpoints. [`Storage::checkpoint`] copies the documents into new
//! data files under the engine's read lock (batches are logged under the write lock, so the copy holds exactly
//! the batches up to the last LSN handed out), then fsyncs and switches `CURRENT` with writers running again.
//! [`Storage::shutdown`] takes a final checkpoint and marks the lock file clean.
//!
//! Writes acknowledged with `j: true` wait for the journal fsync inside the durability hook; the others are
//! made durable by the group commit thread within [`crate::storage::JOURNAL_COMMIT_INTERVAL`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use bson::doc;

use super::checkpoint::{CheckpointWriter, CollectionMeta, checkpoint_dir_name, remove_other_checkpoints};
use super::codec::encode_batch;
use super::journal::{JOURNAL_DIR, Journal};
use super::lockfile::DbPathLock;
use super::recovery::{load_into, recover};
use super::{
    CHECKPOINT_INTERVAL, FORMAT_VERSION, JOURNAL_COMMIT_INTERVAL, StopSignal, StorageError, StorageResult, write_atomic,
};
use crate::engine::{Durability, Engine, Namespace, WriteBatch};

/// Name of the file identifying a dbpath's format.
pub const STORAGE_FILE: &str = "storage.bson";

/// How a dbpath is run.
#[derive(Debug, Clone)]
pub struct StorageOptions {
    /// Whether the journal is on (mongod's default; `--nojournal` turns it off).
    pub journal: bool,
    /// Period of automatic checkpoints; `None` disables them (checkpoints then happen only on `fsync` and at
    /// shutdown).
    pub checkpoint_interval: Option<Duration>,
    /// Period of the journal group commit for writes that did not ask for `j: true`.
    pub commit_interval: Duration,
}

impl Default for StorageOptions {
    fn default() -> Self {
        Self {
            journal: true,
            checkpoint_interval: Some(CHECKPOINT_INTERVAL),
            commit_interval: JOURNAL_COMMIT_INTERVAL,
        }
    }
}

/// The persistent store of one dbpath.
pub struct Storage {
    dbpath: PathBuf,
    journal: Option<Arc<Journal>>,
    /// Last LSN handed out when the journal is off.
    nojournal_lsn: AtomicU64,
    /// LSN of the current checkpoint (`None` before the first one); the mutex serializes checkpoints.
    checkpointed: Mutex<Option<u64>>,
    owner: Mutex<Option<DbPathLock>>,
    stop: Arc<StopSignal>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("dbpath", &self.dbpath)
            .field("journal", &self.journal.is_some())
            .finish()
    }
}

fn check_dbpath(dbpath: &Path) -> StorageResult<()> {
    if !dbpath.is_dir() {
        return Err(StorageError::Unsupported {
            path: dbpath.to_path_buf(),
            reason: format!(
                "Data directory {} not found. Create the missing directory or specify another path using the \
                 --dbpath option",
                dbpath.display()
            ),
        });
    }
    if dbpath.join("WiredTiger").exists() {
        return Err(StorageError::Unsupported {
            path: dbpath.to_path_buf(),
            reason: "the directory holds WiredTiger data files written by mongod, which this server cannot read".into(),
        });
    }
    Ok(())
}

/// Checks `storage.bson` (or writes it in a directory without one).
fn check_storage_file(dbpath: &Path) -> StorageResult<()> {
    let path = dbpath.join(STORAGE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let d = bson::Document::from_reader(bytes.as_slice())
                .map_err(|e| StorageError::corrupt(&path, 0, format!("not a BSON document: {e}")))?;
            let version = d.get_i32("version").ok();
            if d.get_str("format") != Ok("tidemark") || version != i32::try_from(FORMAT_VERSION).ok() {
                return Err(StorageError::Unsupported {
                    path,
                    reason: format!("expected {{format: \"tidemark\", version: {FORMAT_VERSION}}}, found {d}"),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let d = doc! { "format": "tidemark", "version": i32::try_from(FORMAT_VERSION).unwrap_or(1) };
            let mut bytes = Vec::new();
            d.to_writer(&mut bytes).map_err(|e| StorageError::Apply {
                what: STORAGE_FILE.into(),
                reason: e.to_string(),
            })?;
            write_atomic(dbpath, STORAGE_FILE, &bytes)
        }
        Err(e) => Err(StorageError::io("read", &path)(e)),
    }
}

impl Storage {
    /// Opens `dbpath`: takes ownership, recovers its state into `engine` (which must be empty), and installs
    /// the journal as the engine's durability hook.
    pub fn open(dbpath: &Path, options: &StorageOptions, engine: &Arc<Engine>) -> StorageResult<Arc<Storage>> {
        check_dbpath(dbpath)?;
        if !engine.read(|catalog| catalog.database_names().is_empty()) {
            return Err(StorageError::Apply {
                what: format!("data directory {}", dbpath.display()),
                reason: "the engine already holds data; recovery needs an empty engine".into(),
            });
        }
        let owner = DbPathLock::acquire(dbpath)?;
        if owner.previous_shutdown_unclean() {
            tracing::info!(
                "Detected unclean shutdown - {} is not empty; recovering",
                owner.path().display()
            );
        }
        check_storage_file(dbpath)?;
        let recovered = recover(dbpath, true)?;
        if let Some(d) = &recovered.discarded {
            tracing::warn!("journal recovery: {d}");
        }
        let last_lsn = recovered.last_lsn;
        let checkpoint_lsn = recovered.checkpoint.as_ref().map(|c| c.lsn);
        let replayed = recovered.batches.len();
        let segments = recovered.segments.clone();
        load_into(engine, recovered)?;
        tracing::info!(
            "recovered {} up to lsn {last_lsn} (checkpoint {:?}, {replayed} journal records replayed)",
            dbpath.display(),
            checkpoint_lsn
        );
        let journal_dir = dbpath.join(JOURNAL_DIR);
        let had_journal = !segments.is_empty();
        let journal = if options.journal {
            Some(Arc::new(Journal::open(
                &journal_dir,
                last_lsn.saturating_add(1),
                segments,
            )?))
        } else {
            None
        };
        let storage = Arc::new(Storage {
            dbpath: dbpath.to_path_buf(),
            journal,
            nojournal_lsn: AtomicU64::new(last_lsn),
            checkpointed: Mutex::new(checkpoint_lsn),
            owner: Mutex::new(Some(owner)),
            stop: Arc::new(StopSignal::default()),
            threads: Mutex::new(Vec::new()),
        });
        if checkpoint_lsn.is_none() || (!options.journal && had_journal) {
            // Give a fresh dbpath its first (empty) checkpoint; without a journal, make replayed records
            // durable in data files before the journal that held them is dropped.
            storage.checkpoint(engine)?;
        }
        if !options.journal && had_journal {
            remove_journal_dir(&journal_dir)?;
        }
        engine.set_durability(storage.clone());
        storage.start_threads(options, engine)?;
        Ok(storage)
    }

    fn start_threads(self: &Arc<Self>, options: &StorageOptions, engine: &Arc<Engine>) -> StorageResult<()> {
        let mut threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(j) = &self.journal {
            let h = j
                .start_flusher(options.commit_interval)
                .map_err(StorageError::io("start the journal thread for", &self.dbpath))?;
            threads.push(h);
        }
        if let Some(interval) = options.checkpoint_interval {
            let weak_self: Weak<Storage> = Arc::downgrade(self);
            let weak_engine: Weak<Engine> = Arc::downgrade(engine);
            let stop = Arc::clone(&self.stop);
            let h = std::thread::Builder::new()
                .name("checkpointer".into())
                .spawn(move || {
                    while !stop.sleep(interval) {
                        let (Some(storage), Some(engine)) = (weak_self.upgrade(), weak_engine.upgrade()) else {
                            return;
                        };
                        if let Err(e) = storage.checkpoint(&engine) {
                            tracing::error!("periodic checkpoint of {} failed: {e}", storage.dbpath.display());
                        }
                    }
                })
                .map_err(StorageError::io("start the checkpoint thread for", &self.dbpath))?;
            threads.push(h);
        }
        Ok(())
    }

    /// The data directory.
    pub fn dbpath(&self) -> &Path {
        &self.dbpath
    }

    /// Whether writes are journaled (false with `--nojournal`).
    pub fn journal_enabled(&self) -> bool {
        self.journal.is_some()
    }

    /// LSN of the last batch applied.
    pub fn last_lsn(&self) -> u64 {
        match &self.journal {
            Some(j) => j.last_lsn(),
            None => self.nojournal_lsn.load(Ordering::SeqCst),
        }
    }

    /// LSN of the current checkpoint, if one was taken.
    pub fn checkpoint_lsn(&self) -> Option<u64> {
        *self.checkpointed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the engine's whole state to new data files (unless nothing changed since the last checkpoint)
    /// and drops the journal it covers. Readers never wait; writers wait while the documents are copied to the
    /// OS (fsyncs and the switch of `CURRENT` happen after). Returns the checkpoint LSN.
    pub fn checkpoint(&self, engine: &Engine) -> StorageResult<u64> {
        let mut checkpointed = self.checkpointed.lock().unwrap_or_else(PoisonError::into_inner);
        // Under the read lock no batch is being logged, so the state is exactly batches 1..=lsn.
        let written = engine.read(|catalog| -> StorageResult<Option<(u64, CheckpointWriter)>> {
            let lsn = self.last_lsn();
            if *checkpointed == Some(lsn) {
                return Ok(None);
            }
            if let Some(j) = &self.journal {
                // Records after this checkpoint go to a new segment, so covered segments can be deleted whole.
                j.rotate()?;
            }
            let mut writer = CheckpointWriter::begin(&self.dbpath, lsn)?;
            for db in catalog.database_names() {
                let Some(database) = catalog.database(&db) else {
                    continue;
                };
                for (name, coll) in &database.collections {
                    let meta = CollectionMeta {
                        ns: Namespace {
                            db: db.clone(),
                            coll: name.clone(),
                        },
                        uuid: coll.uuid,
                        options: coll.options.clone(),
                        indexes: coll.index_specs(),
                    };
                    writer.add_collection(&meta, coll.iter().map(|(_, d)| d.as_ref()))?;
                }
            }
            Ok(Some((lsn, writer)))
        })?;
        let Some((lsn, writer)) = written else {
            return Ok(checkpointed.unwrap_or_default());
        };
        writer.commit()?;
        // Still under the mutex: a caller seeing this LSN also sees the covered journal gone.
        *checkpointed = Some(lsn);
        if let Some(j) = &self.journal {
            j.remove_through(lsn)?;
        }
        remove_other_checkpoints(&self.dbpath, &checkpoint_dir_name(lsn))?;
        tracing::debug!("checkpoint of {} at lsn {lsn}", self.dbpath.display());
        Ok(lsn)
    }

    /// Clean shutdown: stops background work, takes a final checkpoint and releases the dbpath. Later writes
    /// are not persisted.
    pub fn shutdown(&self, engine: &Engine) -> StorageResult<()> {
        self.stop.stop();
        if let Some(j) = &self.journal {
            j.stop_flusher();
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        for t in threads {
            let _ = t.join();
        }
        self.checkpoint(engine)?;
        if let Some(j) = &self.journal {
            j.sync_all()?;
        }
        if let Some(owner) = self.owner.lock().unwrap_or_else(PoisonError::into_inner).take() {
            owner.release()?;
        }
        Ok(())
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        // Background threads hold only weak references; wake them so they exit now.
        self.stop.stop();
        if let Some(j) = &self.journal {
            j.stop_flusher();
        }
    }
}

fn remove_journal_dir(dir: &Path) -> StorageResult<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io("remove", dir)(e)),
    }
}

impl Durability for Storage {
    fn log(&self, batch: &WriteBatch, sync: bool) -> std::io::Result<()> {
        match &self.journal {
            Some(journal) => {
                let payload = encode_batch(batch).map_err(std::io::Error::other)?;
                let lsn = journal.append(&payload)?;
                if sync {
                    journal.sync_to(lsn)?;
                }
            }
            None => {
                // Without a journal a batch is durable at the next checkpoint; `j: true` is refused earlier, by
                // write-concern validation (see `validate_journal_write_concern`).
                self.nojournal_lsn.fetch_add(1, Ordering::SeqCst);
            }
        }
        Ok(())
    }
}
