//! Offline mode: dump from and restore into a `tidemark-server` data directory (`--dbpath`) while no
//! server runs on it.
//!
//! The dump and restore engines speak to a server through the driver and nothing else; rather than a
//! second code path that reads or writes the data files, this module loads the directory into an
//! in-process `tidemark-server` listening on a private loopback port (`127.0.0.1`, port chosen by the OS),
//! lets the unchanged engine run against [`OfflineServer::uri`], and stops it again with
//! [`OfflineServer::close`].
//!
//! - For a dump, [`OfflineServer::open_for_dump`] holds a shared lock on `mongod.lock` for the server's
//!   whole life (so no server can take the directory over meanwhile, and a running one makes the dump
//!   fail with the pid and path), and loads the latest checkpoint plus journal into memory with
//!   [`tidemark_server::storage::load_offline`]. Nothing on disk is changed.
//! - For a restore, [`OfflineServer::open_for_restore`] opens the directory exactly as `tidemark-server
//!   --dbpath` does ([`Storage::open`]: exclusive lock, crash recovery, journal), so every insert batch is
//!   journaled as one record: a restore killed midway leaves a directory that recovers to the batches
//!   written before the kill, each whole. [`OfflineServer::close`] takes the final checkpoint and marks the
//!   lock file clean, as a clean server shutdown does.
//!
//! A data directory written by MongoDB's own `mongod` (WiredTiger files) is recognised by
//! [`detect_wiredtiger`] and refused with an explanation: those files can only be read by `mongod`.
//! [`OfflineServer::in_memory`] serves an empty in-memory server the same way, as a scratch target.
//! The background TTL monitor is effectively off in every mode: an offline copy reproduces the files as
//! they are rather than running the server's maintenance on them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tidemark_server::commands::ServerState;
use tidemark_server::storage::lockfile::{SharedLock, lock_shared};
use tidemark_server::storage::{Storage, StorageError, StorageOptions};
use tidemark_server::{Engine, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::connection::ConnectionOptions;
use crate::error::{Error, Result};

/// Name of the file identifying a tidemark data directory (`{format: "tidemark", version: 1}`).
const STORAGE_FILE: &str = "storage.bson";
/// Files MongoDB's WiredTiger storage engine keeps at the top of every data directory.
const WIREDTIGER_FILES: [&str; 4] = ["WiredTiger", "WiredTiger.wt", "WiredTiger.lock", "WiredTiger.turtle"];
/// TTL monitor period of offline servers: long enough that it never runs during one command.
const OFFLINE_TTL_INTERVAL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Why `dbpath` looks like a data directory of MongoDB's `mongod` (WiredTiger), or `None`.
///
/// Evidence, in order: the WiredTiger metadata files (`WiredTiger`, `WiredTiger.wt`, `WiredTiger.lock`,
/// `WiredTiger.turtle`), a `storage.bson` naming `storage.engine: "wiredTiger"` (what mongod writes), or
/// any `*.wt` table file.
pub fn detect_wiredtiger(dbpath: &Path) -> Option<String> {
    for name in WIREDTIGER_FILES {
        if dbpath.join(name).exists() {
            return Some(format!("it contains the WiredTiger file '{name}'"));
        }
    }
    if let Ok(bytes) = std::fs::read(dbpath.join(STORAGE_FILE))
        && let Ok(doc) = bson::Document::from_reader(bytes.as_slice())
        && let Ok(engine) = doc.get_document("storage").and_then(|s| s.get_str("engine"))
    {
        return Some(format!("its {STORAGE_FILE} names the storage engine '{engine}'"));
    }
    let entries = std::fs::read_dir(dbpath).ok()?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".wt") {
            return Some(format!("it contains the WiredTiger table file '{name}'"));
        }
    }
    None
}

/// The refusal for a WiredTiger directory.
fn wiredtiger_error(dbpath: &Path, evidence: &str) -> Error {
    Error::Data(format!(
        "--dbpath {}: this is a data directory of MongoDB's mongod (WiredTiger storage engine): {evidence}. \
         tidemark cannot read or write WiredTiger files; --dbpath only works on directories of \
         tidemark-server. Start mongod on this directory and run tidemark dump or restore against it over the \
         network (--uri mongodb://...), or back up a filesystem snapshot of the directory taken while mongod is stopped or \
         fsync-locked",
        dbpath.display()
    ))
}

/// An error of the storage layer, in terms of the `--dbpath` option.
fn storage_error(dbpath: &Path, what: &str, e: &StorageError) -> Error {
    let hint = match e {
        StorageError::DbPathInUse { .. } => {
            "; stop that server first, or run the command against it over the network with --uri"
        }
        _ => "",
    };
    Error::Data(format!("--dbpath {}: cannot {what}: {e}{hint}", dbpath.display()))
}

/// Checks that `dbpath` is a tidemark data directory that can be dumped.
fn check_dump_dir(dbpath: &Path) -> Result<()> {
    let meta = std::fs::metadata(dbpath).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::Data(format!(
            "--dbpath {}: no such data directory; nothing to dump",
            dbpath.display()
        )),
        _ => Error::Data(format!(
            "--dbpath {}: cannot read the data directory: {e}",
            dbpath.display()
        )),
    })?;
    if !meta.is_dir() {
        return Err(Error::Data(format!("--dbpath {}: not a directory", dbpath.display())));
    }
    if let Some(evidence) = detect_wiredtiger(dbpath) {
        return Err(wiredtiger_error(dbpath, &evidence));
    }
    check_storage_file(dbpath, false)
}

/// Checks `storage.bson`. Without one, the directory is refused unless `allow_missing` (a restore target).
fn check_storage_file(dbpath: &Path, allow_missing: bool) -> Result<()> {
    let path = dbpath.join(STORAGE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && allow_missing => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Data(format!(
                "--dbpath {}: not a tidemark-server data directory (it has no {STORAGE_FILE}); nothing to dump",
                dbpath.display()
            )));
        }
        Err(e) => return Err(Error::Data(format!("--dbpath {}: cannot read: {e}", path.display()))),
    };
    let doc = bson::Document::from_reader(bytes.as_slice()).map_err(|e| {
        Error::Data(format!(
            "--dbpath {}: {} is not a BSON document: {e}",
            dbpath.display(),
            path.display()
        ))
    })?;
    if doc.get_str("format") != Ok("tidemark") {
        return Err(Error::Data(format!(
            "--dbpath {}: {} does not describe a tidemark-server data directory (found {doc})",
            dbpath.display(),
            path.display()
        )));
    }
    Ok(())
}

/// Prepares a restore target: creates a missing directory (as mongod does on its first start) and refuses
/// WiredTiger directories and non-empty directories that are not tidemark data directories.
fn prepare_restore_dir(dbpath: &Path, create: bool) -> Result<()> {
    match std::fs::metadata(dbpath) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(Error::Data(format!("--dbpath {}: not a directory", dbpath.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            std::fs::create_dir_all(dbpath).map_err(|e| {
                Error::Data(format!(
                    "--dbpath {}: cannot create the directory: {e}",
                    dbpath.display()
                ))
            })?;
            return Ok(());
        }
        Err(e) => {
            return Err(Error::Data(format!(
                "--dbpath {}: cannot restore into it: {e}",
                dbpath.display()
            )));
        }
    }
    if let Some(evidence) = detect_wiredtiger(dbpath) {
        return Err(wiredtiger_error(dbpath, &evidence));
    }
    if !dbpath.join(STORAGE_FILE).exists() {
        let mut entries = std::fs::read_dir(dbpath)
            .map_err(|e| Error::Data(format!("--dbpath {}: cannot list: {e}", dbpath.display())))?;
        if let Some(Ok(first)) = entries.next() {
            return Err(Error::Data(format!(
                "--dbpath {}: the directory is neither empty nor a tidemark-server data directory (it has no \
                 {STORAGE_FILE} but holds '{}'); restore into an empty or new directory",
                dbpath.display(),
                first.file_name().to_string_lossy()
            )));
        }
    }
    check_storage_file(dbpath, true)
}

/// An in-process server over a data directory, listening on a private loopback port.
#[derive(Debug)]
pub struct OfflineServer {
    uri: String,
    dbpath: PathBuf,
    engine: Arc<Engine>,
    /// The journaled store (restore only).
    storage: Option<Arc<Storage>>,
    /// Keeps servers out of the directory while it is dumped.
    _shared: Option<SharedLock>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl OfflineServer {
    /// Loads the data directory `dbpath` for reading: fails if it is missing, not a tidemark-server
    /// directory, a WiredTiger directory, or owned by a running server (the error names its pid and the lock
    /// file). Nothing on disk is changed.
    pub async fn open_for_dump(dbpath: &Path) -> Result<Self> {
        let path = dbpath.to_path_buf();
        let (engine, shared) = tokio::task::spawn_blocking(move || -> Result<(Engine, SharedLock)> {
            check_dump_dir(&path)?;
            let shared = lock_shared(&path).map_err(|e| storage_error(&path, "dump it", &e))?;
            let engine =
                tidemark_server::storage::load_offline(&path).map_err(|e| storage_error(&path, "load it", &e))?;
            Ok((engine, shared))
        })
        .await
        .map_err(|e| Error::Data(format!("--dbpath {}: loading failed: {e}", dbpath.display())))??;
        Self::serve(dbpath, Arc::new(engine), None, Some(shared)).await
    }

    /// Opens the data directory `dbpath` for writing, as `tidemark-server --dbpath` would (exclusive lock,
    /// recovery of an earlier crash, journal). A missing directory is created when `create` is true; an
    /// empty one becomes a new data directory. Fails for a WiredTiger directory, a non-empty directory that
    /// is not a tidemark-server one, or a directory owned by a running server.
    pub async fn open_for_restore(dbpath: &Path, create: bool) -> Result<Self> {
        let path = dbpath.to_path_buf();
        let (engine, storage) = tokio::task::spawn_blocking(move || -> Result<(Arc<Engine>, Arc<Storage>)> {
            prepare_restore_dir(&path, create)?;
            let engine = Arc::new(Engine::new());
            let options = StorageOptions::default();
            let storage = Storage::open(&path, &options, &engine).map_err(|e| storage_error(&path, "open it", &e))?;
            Ok((engine, storage))
        })
        .await
        .map_err(|e| Error::Data(format!("--dbpath {}: opening failed: {e}", dbpath.display())))??;
        Self::serve(dbpath, engine, Some(storage), None).await
    }

    /// An empty in-memory server on a private loopback port (a scratch target, such as a restore
    /// drill's): nothing touches the disk, and the TTL monitor stays off as in the other modes.
    pub async fn in_memory() -> Result<Self> {
        Self::serve(Path::new(""), Arc::new(Engine::new()), None, None).await
    }

    async fn serve(
        dbpath: &Path,
        engine: Arc<Engine>,
        storage: Option<Arc<Storage>>,
        shared: Option<SharedLock>,
    ) -> Result<Self> {
        let cannot_listen = |e: std::io::Error| {
            let what = if storage.is_some() || shared.is_some() {
                format!("--dbpath {}", dbpath.display())
            } else {
                "in-memory server".to_owned()
            };
            Error::Data(format!("{what}: cannot listen on 127.0.0.1: {e}"))
        };
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .map_err(cannot_listen)?;
        let addr = listener.local_addr().map_err(cannot_listen)?;
        let config = ServerConfig {
            bind_ip: addr.ip(),
            port: addr.port(),
            dbpath: storage.as_ref().map(|_| dbpath.to_path_buf()),
            ttl_monitor_interval: OFFLINE_TTL_INTERVAL,
            ..ServerConfig::default()
        };
        let mut state = ServerState::new(config, Arc::clone(&engine));
        if let Some(s) = &storage {
            state = state.with_storage(Arc::clone(s));
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(tidemark_server::net::serve(listener, Arc::new(state), async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            uri: format!("mongodb://{addr}/?directConnection=true"),
            dbpath: dbpath.to_path_buf(),
            engine,
            storage,
            _shared: shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The connection string of the private server.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The engine holding the server's data (to serve it again elsewhere, e.g. read-only).
    pub fn engine(&self) -> Arc<Engine> {
        Arc::clone(&self.engine)
    }

    /// The data directory.
    pub fn dbpath(&self) -> &Path {
        &self.dbpath
    }

    /// Connection options reaching the private server (no authentication, no TLS).
    pub fn connection_options(&self) -> ConnectionOptions {
        ConnectionOptions {
            uri: Some(self.uri.clone()),
            ..ConnectionOptions::default()
        }
    }

    /// Stops the server. After a restore, takes the final checkpoint and marks the directory cleanly shut
    /// down; after a dump, releases the shared lock. Clients should be dropped first: later writes are not
    /// persisted.
    pub async fn close(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(storage) = self.storage.take() {
            let engine = Arc::clone(&self.engine);
            let dbpath = self.dbpath.clone();
            tokio::task::spawn_blocking(move || storage.shutdown(&engine))
                .await
                .map_err(|e| Error::Data(format!("--dbpath {}: shutdown failed: {e}", dbpath.display())))?
                .map_err(|e| storage_error(&dbpath, "shut it down cleanly", &e))?;
        }
        Ok(())
    }
}

impl Drop for OfflineServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wiredtiger_evidence() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(detect_wiredtiger(dir.path()), None);
        std::fs::write(dir.path().join("collection-0-123.wt"), b"x").unwrap();
        assert!(detect_wiredtiger(dir.path()).unwrap().contains("collection-0-123.wt"));

        let dir = tempfile::tempdir().unwrap();
        // What mongod writes into storage.bson.
        let doc = bson::doc! {"storage": {"engine": "wiredTiger", "options": {"directoryPerDB": false}}};
        let mut bytes = Vec::new();
        doc.to_writer(&mut bytes).unwrap();
        std::fs::write(dir.path().join(STORAGE_FILE), bytes).unwrap();
        assert!(detect_wiredtiger(dir.path()).unwrap().contains("wiredTiger"));

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("WiredTiger"), b"WiredTiger\nWiredTiger 11.2.0\n").unwrap();
        assert!(detect_wiredtiger(dir.path()).unwrap().contains("'WiredTiger'"));
    }

    #[test]
    fn restore_target_rules() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("new/sub");
        assert!(prepare_restore_dir(&fresh, false).is_err());
        prepare_restore_dir(&fresh, true).unwrap();
        assert!(fresh.is_dir());
        // Empty: fine. Foreign files without storage.bson: refused, naming one.
        prepare_restore_dir(&fresh, false).unwrap();
        std::fs::write(fresh.join("notes.txt"), b"x").unwrap();
        let e = prepare_restore_dir(&fresh, false).unwrap_err().to_string();
        assert!(e.contains("notes.txt"), "{e}");
    }

    #[test]
    fn dump_source_rules() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent");
        let e = check_dump_dir(&missing).unwrap_err().to_string();
        assert!(e.contains(&missing.display().to_string()), "{e}");
        let e = check_dump_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("storage.bson"), "{e}");
    }
}
