//! Persistence for `--dbpath` mode: journal (write-ahead log), checkpoints, crash recovery, the `mongod.lock`
//! ownership lock and the `fsync` lock.
//!
//! The engine keeps every document in memory; this layer makes that state survive restarts and crashes.
//! Every change reaches the engine as one [`WriteBatch`](crate::engine::WriteBatch) (see
//! [`crate::engine::Durability`]). With the journal enabled (the default), each batch is appended to the
//! journal before the write returns, and made durable either at once (`writeConcern: {j: true}`) or by the
//! next group commit (every [`JOURNAL_COMMIT_INTERVAL`], like mongod's `commitIntervalMs`). Checkpoints
//! write the whole state into fresh data files and then drop the journal they cover. On start-up, recovery
//! loads the latest checkpoint and replays the journal after it, stopping at the first torn or corrupt
//! record (the crash point), so a batch is recovered whole or not at all. With `--nojournal` only
//! checkpoints persist data (periodically, on `fsync` and at clean shutdown).
//!
//! # On-disk format (version 1)
//!
//! A dbpath holds (all integers little-endian):
//!
//! ```text
//! DBPATH/
//!   mongod.lock                 pid of the owning process + "\n"; exclusively locked (flock) while it runs,
//!                               emptied at clean shutdown. A non-empty file nobody locks is a crash leftover.
//!   storage.bson                one BSON document {format: "tidemark", version: 1}
//!   CURRENT                     "checkpoint-<lsn as 16 lowercase hex digits>\n": the checkpoint to load
//!   checkpoint-<lsn hex16>/     a complete, immutable copy of the state after the batch numbered <lsn>
//!     catalog.bson              one BSON document (below)
//!     collection-<n>.bson       documents of one collection in natural order, concatenated BSON (exactly
//!                               like a mongodump .bson file)
//!   journal/
//!     segment-<lsn hex16>.wal   journal records with LSNs starting at <lsn>
//! ```
//!
//! `catalog.bson` is `{format: "tidemark-checkpoint", version: 1, lsn: Int64, collections: [...]}` with one
//! entry per collection or view, in database then collection name order:
//! `{db, coll, uuid: Binary(subtype 4), options: {...creation options: capped/size/max, validator, viewOn,
//! pipeline, ...}, indexes: [full index specs, "_id_" first], file: "collection-<n>.bson", count: Int64,
//! bytes: Int64, crc32c: Int64}`. `count`, `bytes` and `crc32c` (CRC-32C, Castagnoli, of the whole data file)
//! let a reader prove the file complete.
//!
//! A journal segment starts with a 24-byte header: the magic `TMJOURNL`, `version: u32 = 1`,
//! `reserved: u32 = 0`, `first_lsn: u64` (equal to the file name's LSN). Records follow back to back:
//!
//! ```text
//! [payload_len: u32][crc32c: u32][lsn: u64][payload: payload_len bytes]
//! ```
//!
//! where `crc32c` covers the 8 LSN bytes followed by the payload, and LSNs increase by exactly one from record
//! to record and across segments. The payload is one BSON document `{v: 1, m: [mutation, ...]}` (see
//! [`codec`]). LSN 0 means "nothing": the first batch ever written has LSN 1.
//!
//! # Writing protocol
//!
//! - A checkpoint at LSN `L` is taken while writers are excluded (the engine's read lock), so it contains
//!   exactly batches `1..=L`. It is written into `checkpoint-<L>.tmp/`, every file fsynced, the directory
//!   renamed to `checkpoint-<L>/`, then `CURRENT.tmp` written, fsynced and renamed over `CURRENT` (the commit
//!   point), and the dbpath directory fsynced. Only then are older checkpoints and journal segments holding
//!   no LSN above `L` deleted. Before the checkpoint starts, the journal switches to a new segment starting
//!   at `L + 1`, so whole segments can be dropped.
//! - A journal record is appended with one `write` and fsynced by the group commit; a failed append is cut
//!   off again (`set_len`) so the file never holds a partial record followed by a good one.
//!
//! # Reading protocol (recovery, and offline readers such as a `--dbpath` dump)
//!
//! [`load_offline`] implements it for readers without a server: it returns an in-memory
//! [`Engine`](crate::engine::Engine) holding the recovered state.
//!
//! 1. Refuse if `mongod.lock` is locked by a live process ([`lockfile::probe`], [`lockfile::lock_shared`]).
//! 2. Read `CURRENT`; if absent the state starts empty (a fresh dbpath). Load `catalog.bson` and every data
//!    file it names, checking length, count and checksum; any mismatch is a hard error naming the file and
//!    offset (a checkpoint is never partially trusted).
//! 3. Read the journal segments in LSN order and apply every record with an LSN above the checkpoint's, in
//!    order. The first record that is cut short, fails its checksum or breaks the LSN sequence ends the
//!    journal: after a crash that is the record being written, and no write is acknowledged before its record
//!    is complete, so nothing acknowledged as durable lies beyond it. (A running server cuts that tail off,
//!    logging what it discarded; an offline reader just ignores it.)

// Modules: `lockfile` (dbpath ownership), `journal` (framing, segments, group commit), `codec` (batch
// payloads), `checkpoint` (data files), `recovery` (rebuilding state), `store` (the `Storage` hook tying them
// together), `fsync` (the fsync lock commands).
pub mod checkpoint;
pub mod codec;
pub mod fsync;
pub mod journal;
pub mod lockfile;
pub mod recovery;
pub mod store;

pub use recovery::load_offline;
pub use store::{Storage, StorageOptions};

use std::io;
use std::path::{Path, PathBuf};

/// Format version written in `storage.bson`, `catalog.bson` and journal segment headers.
pub const FORMAT_VERSION: u32 = 1;
/// How often the journal group commit runs for writes that did not ask for `j: true` (mongod's default
/// `commitIntervalMs`).
pub const JOURNAL_COMMIT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);
/// How often a checkpoint is taken when something changed (WiredTiger's default `syncdelay`).
pub const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Failures of the persistence layer. Each names the file (and offset, for corruption) at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// An operating-system call failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done ("open", "write", "fsync", ...).
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A file's contents are not what this format allows.
    #[error("corrupt data file {} at offset {offset}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset of the problem within the file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// Another live process owns the dbpath.
    #[error(
        "Unable to lock the lock file: {} (Resource temporarily unavailable). Another tidemark-server or mongod \
         instance{} is already running on the {} directory",
        path.display(),
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        path.parent().map(|p| p.display().to_string()).unwrap_or_default()
    )]
    DbPathInUse {
        /// The lock file.
        path: PathBuf,
        /// The pid written in it, if readable.
        pid: Option<u32>,
    },
    /// The files were written by an unknown format version or by another program.
    #[error("unsupported data files in {}: {reason}", path.display())]
    Unsupported {
        /// The file or directory.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// An earlier journal write or fsync failed; no further writes are accepted (the journal could otherwise
    /// hold acknowledged writes behind a hole).
    #[error("journal is unusable after an earlier failure: {0}")]
    JournalFailed(String),
    /// A recovered batch could not be applied to the engine.
    #[error("cannot apply {what}: {reason}")]
    Apply {
        /// Which record or file.
        what: String,
        /// The engine's error.
        reason: String,
    },
}

impl StorageError {
    /// Builds an [`StorageError::Io`] (usable as `map_err(StorageError::io("open", &path))`).
    pub fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StorageError + 'a {
        move |source| StorageError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// Builds a [`StorageError::Corrupt`].
    pub fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> StorageError {
        StorageError::Corrupt {
            path: path.to_path_buf(),
            offset,
            reason: reason.into(),
        }
    }
}

impl From<StorageError> for io::Error {
    fn from(e: StorageError) -> Self {
        io::Error::other(e)
    }
}

/// Result alias for this module.
pub type StorageResult<T> = Result<T, StorageError>;

/// Fsyncs a directory so that creations, renames and deletions inside it are durable.
pub fn sync_dir(dir: &Path) -> StorageResult<()> {
    let f = std::fs::File::open(dir).map_err(StorageError::io("open directory", dir))?;
    f.sync_all().map_err(StorageError::io("fsync directory", dir))
}

/// Writes `bytes` to `dir/name` atomically: a temporary file is written and fsynced, renamed over the target,
/// and the directory fsynced.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> StorageResult<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{name}.tmp"));
    let target = dir.join(name);
    let mut f = std::fs::File::create(&tmp).map_err(StorageError::io("create", &tmp))?;
    f.write_all(bytes).map_err(StorageError::io("write", &tmp))?;
    f.sync_all().map_err(StorageError::io("fsync", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, &target).map_err(StorageError::io("rename into place", &target))?;
    sync_dir(dir)
}

/// A stop flag background threads sleep on. Threads keep only this (and weak references to what they work
/// on) while sleeping, so dropping the owner is never delayed by a sleeping thread.
#[derive(Debug, Default)]
pub(crate) struct StopSignal {
    stopped: std::sync::Mutex<bool>,
    wake: std::sync::Condvar,
}

impl StopSignal {
    /// Sleeps up to `interval`; returns true once [`StopSignal::stop`] was called.
    pub(crate) fn sleep(&self, interval: std::time::Duration) -> bool {
        use std::sync::PoisonError;
        let stopped = self.stopped.lock().unwrap_or_else(PoisonError::into_inner);
        if *stopped {
            return true;
        }
        let (stopped, _) = self
            .wake
            .wait_timeout(stopped, interval)
            .unwrap_or_else(PoisonError::into_inner);
        *stopped
    }

    /// Wakes every sleeper and makes later sleeps return at once.
    pub(crate) fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        self.wake.notify_all();
    }
}
