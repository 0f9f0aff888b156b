//! `mongod.lock`: exactly one process may use a dbpath.
//!
//! Like mongod, the owner writes its pid into `DBPATH/mongod.lock` and holds an exclusive advisory lock
//! (`flock` on Unix, via [`std::fs::File::try_lock`]) on it for its whole life. The OS drops the lock when the
//! process dies, even by `kill -9`, so a lock file left behind by a crash is not an error: the next owner just
//! takes it over (its non-empty content only tells that the last shutdown was not clean). A clean shutdown
//! empties the file. Offline readers call [`probe`] to refuse working under a live server.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{StorageError, StorageResult};

/// Name of the lock file inside the dbpath (the same as mongod's).
pub const LOCK_FILE: &str = "mongod.lock";

/// Ownership of a dbpath, held until dropped or [`DbPathLock::release`]d.
#[derive(Debug)]
pub struct DbPathLock {
    file: File,
    path: PathBuf,
    unclean: bool,
}

impl DbPathLock {
    /// Takes ownership of `dbpath`, or fails with [`StorageError::DbPathInUse`] if a live process holds it.
    pub fn acquire(dbpath: &Path) -> StorageResult<Self> {
        let path = dbpath.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(StorageError::io("open", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let pid = read_pid(&mut file);
                return Err(StorageError::DbPathInUse { path, pid });
            }
            Err(TryLockError::Error(e)) => return Err(StorageError::io("lock", &path)(e)),
        }
        let unclean = file.metadata().map_err(StorageError::io("stat", &path))?.len() > 0;
        file.set_len(0).map_err(StorageError::io("truncate", &path))?;
        file.seek(SeekFrom::Start(0)).map_err(StorageError::io("seek", &path))?;
        writeln!(file, "{}", std::process::id()).map_err(StorageError::io("write", &path))?;
        file.sync_all().map_err(StorageError::io("fsync", &path))?;
        Ok(Self { file, path, unclean })
    }

    /// Whether the previous owner left the file non-empty, i.e. did not shut down cleanly.
    pub fn previous_shutdown_unclean(&self) -> bool {
        self.unclean
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Marks a clean shutdown (empties the file) and gives up ownership.
    pub fn release(self) -> StorageResult<()> {
        self.file.set_len(0).map_err(StorageError::io("truncate", &self.path))?;
        self.file.sync_all().map_err(StorageError::io("fsync", &self.path))?;
        // Dropping the file closes it, which releases the flock.
        Ok(())
    }
}

/// Who, if anyone, owns a dbpath.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockStatus {
    /// No live owner. `unclean` tells whether the last owner crashed (its pid is still in the file).
    Free {
        /// Whether the lock file is non-empty (the last shutdown was not clean).
        unclean: bool,
    },
    /// A live process holds the lock.
    InUse {
        /// The pid it wrote, if readable.
        pid: Option<u32>,
    },
}

/// Checks whether a live process owns `dbpath`, without taking ownership or creating anything.
pub fn probe(dbpath: &Path) -> StorageResult<LockStatus> {
    let path = dbpath.join(LOCK_FILE);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LockStatus::Free { unclean: false }),
        Err(e) => return Err(StorageError::io("open", &path)(e)),
    };
    match file.try_lock_shared() {
        Ok(()) => {
            let unclean = file.metadata().map_err(StorageError::io("stat", &path))?.len() > 0;
            file.unlock().map_err(StorageError::io("unlock", &path))?;
            Ok(LockStatus::Free { unclean })
        }
        Err(TryLockError::WouldBlock) => Ok(LockStatus::InUse {
            pid: read_pid(&mut file),
        }),
        Err(TryLockError::Error(e)) => Err(StorageError::io("lock", &path)(e)),
    }
}

/// A shared hold on a dbpath's lock file, taken by offline readers: while held, no server can take
/// ownership (it would fail with DBPathInUse), and a live server's ownership makes taking it fail.
#[derive(Debug)]
pub struct SharedLock {
    _file: Option<File>,
}

/// Takes a [`SharedLock`] on `dbpath`, or fails with [`StorageError::DbPathInUse`] if a live process owns
/// it. A dbpath without a lock file (never used by a server) needs no lock and none is created.
pub fn lock_shared(dbpath: &Path) -> StorageResult<SharedLock> {
    let path = dbpath.join(LOCK_FILE);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SharedLock { _file: None }),
        Err(e) => return Err(StorageError::io("open", &path)(e)),
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(SharedLock { _file: Some(file) }),
        Err(TryLockError::WouldBlock) => {
            let pid = read_pid(&mut file);
            Err(StorageError::DbPathInUse { path, pid })
        }
        Err(TryLockError::Error(e)) => Err(StorageError::io("lock", &path)(e)),
    }
}

/// The pid written in a lock file, if it holds one (at most a few bytes are read).
fn read_pid(file: &mut File) -> Option<u32> {
    let mut buf = Vec::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(32).read_to_end(&mut buf).ok()?;
    std::str::from_utf8(&buf).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_owner_is_refused_and_sees_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = DbPathLock::acquire(dir.path()).unwrap();
        assert!(!first.previous_shutdown_unclean());
        // flock locks belong to the open file description, so a second open in this process conflicts too.
        match DbPathLock::acquire(dir.path()) {
            Err(StorageError::DbPathInUse { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected DbPathInUse, got {other:?}"),
        }
        assert_eq!(
            probe(dir.path()).unwrap(),
            LockStatus::InUse {
                pid: Some(std::process::id())
            }
        );
        let msg = DbPathLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(msg.contains("mongod.lock") && msg.contains("already running"), "{msg}");
        first.release().unwrap();
        assert_eq!(probe(dir.path()).unwrap(), LockStatus::Free { unclean: false });
        let again = DbPathLock::acquire(dir.path()).unwrap();
        assert!(!again.previous_shutdown_unclean());
    }

    #[test]
    fn stale_lock_file_from_a_crash_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOCK_FILE), "999999\n").unwrap();
        assert_eq!(probe(dir.path()).unwrap(), LockStatus::Free { unclean: true });
        let lock = DbPathLock::acquire(dir.path()).unwrap();
        assert!(lock.previous_shutdown_unclean());
        let content = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(content, format!("{}\n", std::process::id()));
        drop(lock);
        // Dropped without release: like a crash, the pid stays but nobody holds the lock.
        assert_eq!(probe(dir.path()).unwrap(), LockStatus::Free { unclean: true });
    }

    #[test]
    fn shared_lock_excludes_an_owner_and_the_other_way_round() {
        let dir = tempfile::tempdir().unwrap();
        let owner = DbPathLock::acquire(dir.path()).unwrap();
        assert!(matches!(lock_shared(dir.path()), Err(StorageError::DbPathInUse { .. })));
        owner.release().unwrap();
        let reader = lock_shared(dir.path()).unwrap();
        assert!(matches!(
            DbPathLock::acquire(dir.path()),
            Err(StorageError::DbPathInUse { .. })
        ));
        // Readers share.
        let _second_reader = lock_shared(dir.path()).unwrap();
        drop(reader);
    }

    #[test]
    fn probe_does_not_create_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(probe(dir.path()).unwrap(), LockStatus::Free { unclean: false });
        assert!(!dir.path().join(LOCK_FILE).exists());
    }
}
