//! Object storage for Tidemark backup repositories: one small API over the local filesystem, S3-compatible
//! object stores and an in-memory store for tests.
//!
//! The repository format stores immutable, content-addressed objects under `/`-separated keys
//! (`data/ab/abcd...`, `snapshots/<id>`). All it needs from a store is whole-object put and get, ranged reads,
//! size lookups, recursive listing and deletion; [`Storage`] offers exactly that, with the same behaviour on
//! every backend (checked by [`conformance::run_backend_suite`]). The heavy lifting — S3 request signing,
//! pagination, HTTP — is done by [`opendal`]; this crate picks the backend from a URL, stacks opendal's
//! layers (retries with exponential backoff and jitter for transient errors, a bound on concurrent
//! operations, a time limit per attempt), makes local writes durable, and turns errors into
//! [`StorageError`]s that name the key at fault.
//!
//! # URLs
//!
//! | URL | Backend |
//! |---|---|
//! | `/abs/path` (or a relative path) | directory on the local filesystem |
//! | `file:///abs/path` | same, as a URL (percent-encoded) |
//! | `memory://` | a fresh in-process store, shared by clones of the [`Storage`] only (tests) |
//! | `s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1` | S3-compatible store (prefix and options optional) |
//!
//! For S3, options are taken from the URL query first, then from [`StorageConfig`] (which can be loaded
//! from a TOML or JSON file with [`StorageConfig::from_file`]), then from the environment:
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` / `AWS_DEFAULT_REGION`
//! (default `us-east-1`) and `AWS_ENDPOINT_URL` (default: AWS). Requests use path-style addressing
//! (`endpoint/bucket/key`), which every S3-compatible server accepts. Credentials are never accepted in the
//! URL, so [`Storage::url`] can be shown and logged.
//!
//! # Guarantees
//!
//! - [`Storage::put`] is atomic: a reader sees the whole old object, the whole new one, or (for a new key)
//!   none. S3 gives this natively. On the filesystem, an object is written to a temporary file under
//!   `<root>/.tmp/` (with direct I/O where the filesystem allows it: objects are written once and not read
//!   back soon, so copying them into the page cache only costs CPU and evicts the database's data),
//!   fsynced and renamed over the key; this crate then fsyncs the directory holding the new name, together
//!   with any directory the put created, so a completed put survives a power loss (keys whose first
//!   segment is `.tmp` are therefore reserved). A crash can leave stray files in `.tmp/`; they are
//!   never listed. Ranged gets of 256 KiB or more on the filesystem use direct I/O too: a restore
//!   reads each pack once.
//! - Transient failures (timeouts, throttling, connection resets, 5xx answers) are retried with exponential
//!   backoff; a failure that persists becomes [`StorageError::Transient`] naming the key. Local I/O errors
//!   that cannot go away by themselves (full or read-only disk, a directory where a file should be) are not
//!   retried.
//! - Every operation is bounded by the configured concurrency limit and by a time limit per attempt.
//! - Keys are non-empty `/`-separated relative paths without empty, `.` or `..` segments; any other
//!   characters (spaces, `%`, `+`, `?`, `#`, non-ASCII, ...) are allowed and escaped as each backend needs.
//!   On the filesystem a key cannot also be a "directory" of other keys (`a` and `a/b`); the repository
//!   layout never does this.
//! - Objects are written with one request (no multipart upload), which suits the repository's objects
//!   (packs of a few MiB up to S3's 5 GiB limit for a single PUT).
//!
//! # Testing
//!
//! [`conformance::run_backend_suite`] is the behaviour every backend must have. [`fault::FaultInjecting`]
//! (with [`Storage::open_with_faults`]) makes a store fail, stall or corrupt a chosen fraction of calls.
//! [`testing::S3TestServer`] runs a real S3-compatible server (moto) for tests, or uses the one named by
//! `TIDEMARK_TEST_S3_ENDPOINT`.

mod config;
pub mod conformance;
mod error;
pub mod fault;
mod hook;
mod location;
pub mod testing;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use opendal::Operator;
use opendal::layers::{ConcurrentLimitLayer, RetryLayer, TimeoutLayer};

pub use config::{
    DEFAULT_MAX_CONCURRENCY, DEFAULT_RETRIES, DEFAULT_RETRY_DELAY, DEFAULT_TIMEOUT, MAX_RETRY_DELAY, StorageConfig,
};
pub use error::{Operation, StorageError};
pub use fault::FaultInjecting;
use location::Location;

/// Directory (under a filesystem root) where objects are written before being renamed into place.
const FS_TEMP_DIR: &str = ".tmp";

/// Size of an object as seen by [`Storage::head`] and [`Storage::list`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectMeta {
    /// The object's key.
    pub key: String,
    /// The object's size in bytes.
    pub size: u64,
}

/// A handle on one object store (a directory, a bucket prefix, or memory). Cheap to clone, `Send + Sync`;
/// clones share connections and the concurrency bound.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

struct Inner {
    op: Operator,
    url: String,
    /// Root directory for the filesystem backend, whose directories this crate fsyncs after each put.
    fs_root: Option<PathBuf>,
    /// Whether puts and ranged gets on the filesystem bypass opendal for [`put_file`] and
    /// [`get_file_range`] (direct I/O); not when faults are injected, which happens in opendal's
    /// layers.
    direct_io: bool,
    /// Buffers of ranged reads from the filesystem, back from the callers that dropped them.
    read_buffers: ReadBuffers,
    retries: usize,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("url", &self.inner.url)
            .finish_non_exhaustive()
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Storage {
    /// Opens the store named by `url` (see the crate documentation for the forms) with `config`.
    ///
    /// Opening checks the URL and options but does not contact a remote store; the first operation does.
    pub async fn open(url: &str, config: &StorageConfig) -> Result<Storage, StorageError> {
        Storage::build(url, config, None).await
    }

    /// Like [`Storage::open`], with `faults` injected between the backend and the retry and timeout layers,
    /// to test how callers and retries cope with an unreliable store.
    pub async fn open_with_faults(
        url: &str,
        config: &StorageConfig,
        faults: FaultInjecting,
    ) -> Result<Storage, StorageError> {
        Storage::build(url, config, Some(faults)).await
    }

    async fn build(url: &str, config: &StorageConfig, faults: Option<FaultInjecting>) -> Result<Storage, StorageError> {
        let location = Location::parse(url)?;
        if config.max_concurrency == Some(0) {
            return Err(StorageError::config("max_concurrency must be at least 1"));
        }
        let (op, display_url, fs_root) = match location {
            Location::Memory => {
                let op = Operator::new(opendal::services::Memory::default()).map_err(|e| open_error(url, e))?;
                (op, "memory://".to_owned(), None)
            }
            Location::Fs { root } => {
                let root_str = root
                    .to_str()
                    .ok_or_else(|| StorageError::config(format!("storage path {root:?} is not UTF-8")))?
                    .to_owned();
                let temp_str = format!("{}/{FS_TEMP_DIR}", root_str.trim_end_matches('/'));
                let root_for_create = root.clone();
                tokio::task::spawn_blocking(move || std::fs::create_dir_all(&root_for_create))
                    .await
                    .map_err(|e| StorageError::config(format!("storage path {root_str:?}: {e}")))?
                    .map_err(|e| StorageError::config(format!("storage path {root_str:?}: cannot create it: {e}")))?;
                let builder = opendal::services::Fs::default()
                    .root(&root_str)
                    .atomic_write_dir(&temp_str);
                let op = Operator::new(builder).map_err(|e| open_error(&root_str, e))?;
                (op, url.to_owned(), Some(root))
            }
            Location::S3 {
                bucket,
                prefix,
                endpoint,
                region,
            } => {
                install_tls_provider();
                opendal_http_transport_reqwest::install_default();
                let endpoint = endpoint
                    .or_else(|| config.endpoint.clone())
                    .or_else(|| env("AWS_ENDPOINT_URL"));
                let region = region
                    .or_else(|| config.region.clone())
                    .or_else(|| env("AWS_REGION"))
                    .or_else(|| env("AWS_DEFAULT_REGION"))
                    .unwrap_or_else(|| "us-east-1".to_owned());
                let access_key_id = config.access_key_id.clone().or_else(|| env("AWS_ACCESS_KEY_ID"));
                let secret = config
                    .secret_access_key
                    .clone()
                    .or_else(|| env("AWS_SECRET_ACCESS_KEY"));
                let token = config.session_token.clone().or_else(|| env("AWS_SESSION_TOKEN"));
                let (Some(access_key_id), Some(secret)) = (access_key_id, secret) else {
                    return Err(StorageError::config(format!(
                        "s3 bucket {bucket:?}: no credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
                         or access_key_id and secret_access_key in the config file"
                    )));
                };
                let mut builder = opendal::services::S3::default()
                    .bucket(&bucket)
                    .root(&format!("/{prefix}"))
                    .region(&region)
                    .access_key_id(&access_key_id)
                    .secret_access_key(&secret)
                    .disable_config_load()
                    .disable_ec2_metadata();
                if let Some(token) = &token {
                    builder = builder.session_token(token);
                }
                let mut display = format!("s3://{bucket}/{prefix}?");
                if let Some(endpoint) = &endpoint {
                    let parsed = url::Url::parse(endpoint).map_err(|e| {
                        StorageError::config(format!("s3 bucket {bucket:?}: invalid endpoint {endpoint:?}: {e}"))
                    })?;
                    if !parsed.username().is_empty() || parsed.password().is_some() {
                        return Err(StorageError::config(format!(
                            "s3 bucket {bucket:?}: the endpoint must not contain credentials"
                        )));
                    }
                    builder = builder.endpoint(endpoint);
                    display.push_str("endpoint=");
                    display.push_str(endpoint);
                    display.push('&');
                }
                display.push_str("region=");
                display.push_str(&region);
                let op = Operator::new(builder).map_err(|e| open_error(&display, e))?;
                (op, display, None)
            }
        };
        let retries = config.retries.unwrap_or(DEFAULT_RETRIES);
        let timeout = config.timeout.unwrap_or(DEFAULT_TIMEOUT);
        let mut op = op;
        let direct_io = fs_root.is_some() && faults.is_none();
        if let Some(faults) = faults {
            op = op.layer(faults);
        }
        op = op
            .layer(ConcurrentLimitLayer::new(
                config.max_concurrency.unwrap_or(DEFAULT_MAX_CONCURRENCY),
            ))
            .layer(TimeoutLayer::new().with_timeout(timeout).with_io_timeout(timeout))
            .layer(hook::TransientMarker);
        if retries > 0 {
            op = op.layer(
                RetryLayer::new()
                    .with_max_times(retries)
                    .with_min_delay(config.retry_delay.unwrap_or(DEFAULT_RETRY_DELAY))
                    .with_max_delay(MAX_RETRY_DELAY)
                    .with_factor(2.0)
                    .with_jitter(),
            );
        }
        Ok(Storage {
            inner: Arc::new(Inner {
                op,
                url: display_url,
                fs_root,
                direct_io,
                read_buffers: ReadBuffers::default(),
                retries,
            }),
        })
    }

    /// The store's URL, without secrets (for S3: with the effective endpoint and region).
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    fn error(&self, err: opendal::Error, operation: Operation, key: &str) -> StorageError {
        StorageError::from_opendal(err, operation, key, self.inner.retries)
    }

    /// Classifies a failed read: reading a "directory" (a prefix of other keys, on the filesystem) is
    /// reading an object that does not exist.
    async fn read_error(&self, err: opendal::Error, key: &str) -> StorageError {
        if err.kind() != opendal::ErrorKind::NotFound
            && matches!(self.inner.op.stat(key).await, Ok(meta) if meta.is_dir())
        {
            return not_found(key);
        }
        self.error(err, Operation::Get, key)
    }

    /// Stores `data` under `key`, replacing any existing object; atomic (whole object or nothing).
    pub async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        check_key(key)?;
        let Some(root) = &self.inner.fs_root else {
            return self
                .inner
                .op
                .write(key, data)
                .await
                .map(drop)
                .map_err(|e| self.error(e, Operation::Put, key));
        };
        // Directories that the write creates must reach the disk too: remember the deepest one that exists.
        let existing = deepest_existing_dir(root, key).await;
        if self.inner.direct_io {
            put_file(root, key, data).await?;
        } else {
            self.inner
                .op
                .write(key, data)
                .await
                .map_err(|e| self.error(e, Operation::Put, key))?;
        }
        sync_dirs(root, key, existing).await
    }

    /// Reads the whole object stored under `key`.
    pub async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        check_key(key)?;
        match self.inner.op.read(key).await {
            Ok(buf) => Ok(buf.to_bytes()),
            Err(e) => Err(self.read_error(e, key).await),
        }
    }

    /// Reads bytes `range` of the object under `key`. The range must lie within the object; an empty range
    /// still checks that the object exists.
    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        check_key(key)?;
        let invalid = |size: Option<u64>| range_error(key, &range, size);
        if range.start > range.end {
            return Err(invalid(None));
        }
        if range.start == range.end {
            let meta = self.head(key).await?.ok_or_else(|| not_found(key))?;
            return if range.end <= meta.size {
                Ok(Bytes::new())
            } else {
                Err(invalid(Some(meta.size)))
            };
        }
        if let (Some(root), true) = (&self.inner.fs_root, self.inner.direct_io) {
            return get_file_range(root, key, range, &self.inner.read_buffers).await;
        }
        let want = range.end - range.start;
        let result = self.inner.op.read_with(key).range(range.clone()).await;
        let bytes = match result {
            Ok(buf) => buf.to_bytes(),
            Err(e) if e.kind() == opendal::ErrorKind::RangeNotSatisfied => {
                let size = self.head(key).await?.ok_or_else(|| not_found(key))?.size;
                return Err(invalid(Some(size)));
            }
            Err(e) => return Err(self.read_error(e, key).await),
        };
        if u64::try_from(bytes.len()).ok() != Some(want) {
            let size = self.head(key).await?.ok_or_else(|| not_found(key))?.size;
            return Err(invalid(Some(size)));
        }
        Ok(bytes)
    }

    /// The size of the object under `key`, or `None` if there is none.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StorageError> {
        check_key(key)?;
        match self.inner.op.stat(key).await {
            Ok(meta) if meta.is_file() => Ok(Some(ObjectMeta {
                key: key.to_owned(),
                size: meta.content_length(),
            })),
            Ok(_) => Ok(None),
            Err(e)
                if matches!(
                    e.kind(),
                    opendal::ErrorKind::NotFound | opendal::ErrorKind::IsADirectory
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.error(e, Operation::Head, key)),
        }
    }

    /// Every object whose key starts with `prefix` (a plain string prefix: `"snapshots/"`, `"data/a"` or `""`
    /// for all), at any depth, sorted by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        if prefix.starts_with('/') {
            return Err(StorageError::InvalidKey {
                key: prefix.to_owned(),
                reason: "list prefixes are relative",
            });
        }
        let dir = prefix.rfind('/').map_or("", |i| &prefix[..=i]);
        let entries = match self.inner.op.list_with(dir).recursive(true).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(self.error(e, Operation::List, prefix)),
        };
        let temp_prefix = format!("{FS_TEMP_DIR}/");
        let mut out: Vec<ObjectMeta> = entries
            .into_iter()
            .filter(|e| e.metadata().is_file())
            .filter(|e| e.path().starts_with(prefix) && !e.path().starts_with(&temp_prefix))
            .map(|e| ObjectMeta {
                size: e.metadata().content_length(),
                key: e.path().to_owned(),
            })
            .collect();
        out.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        out.dedup_by(|a, b| a.key == b.key);
        Ok(out)
    }

    /// Deletes the object under `key`; deleting a missing object succeeds.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        check_key(key)?;
        self.inner
            .op
            .delete(key)
            .await
            .map_err(|e| self.error(e, Operation::Delete, key))
    }

    /// Deletes every object in `keys` (missing ones are fine), batching requests where the store can (S3
    /// deletes up to 1000 keys per request). On failure the error names the first key of the batch; the
    /// message says which object failed when the store reports it.
    pub async fn delete_many<I>(&self, keys: I) -> Result<(), StorageError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let keys: Vec<String> = keys.into_iter().map(|k| k.as_ref().to_owned()).collect();
        for key in &keys {
            check_key(key)?;
        }
        let Some(first) = keys.first().cloned() else {
            return Ok(());
        };
        self.inner
            .op
            .delete_iter(keys)
            .await
            .map_err(|e| self.error(e, Operation::Delete, &first))
    }
}

/// The error of a filesystem `operation` on `key` done outside opendal (direct I/O).
fn file_error(key: &str, operation: Operation, error: &std::io::Error) -> StorageError {
    match error.kind() {
        std::io::ErrorKind::PermissionDenied => StorageError::PermissionDenied {
            key: key.to_owned(),
            message: error.to_string(),
        },
        _ => StorageError::Other {
            key: key.to_owned(),
            operation,
            message: error.to_string(),
        },
    }
}

/// A ranged read of `key` that the object cannot serve: outside its `size` bytes, or invalid.
fn range_error(key: &str, range: &Range<u64>, size: Option<u64>) -> StorageError {
    StorageError::Other {
        key: key.to_owned(),
        operation: Operation::Get,
        message: match size {
            Some(size) => format!(
                "range {}..{} is outside the object ({size} bytes)",
                range.start, range.end
            ),
            None => format!("invalid range {}..{}", range.start, range.end),
        },
    }
}

fn not_found(key: &str) -> StorageError {
    StorageError::NotFound { key: key.to_owned() }
}

fn open_error(what: &str, err: opendal::Error) -> StorageError {
    StorageError::config(format!("{what}: {err}"))
}

/// Checks that `key` is a relative `/`-separated path that every backend stores under the same name.
fn check_key(key: &str) -> Result<(), StorageError> {
    let reason = if key.is_empty() {
        "empty key"
    } else if key.starts_with('/') {
        "keys are relative (no leading '/')"
    } else if key.ends_with('/') {
        "keys name objects, not directories (no trailing '/')"
    } else if key.split('/').any(str::is_empty) {
        "empty path segment ('//')"
    } else if key.split('/').any(|s| s == "." || s == "..") {
        "'.' and '..' segments are not allowed"
    } else if key.contains('\0') {
        "NUL character"
    } else if key.split('/').next() == Some(FS_TEMP_DIR) {
        "the .tmp/ prefix is reserved for writes in progress"
    } else {
        return Ok(());
    };
    Err(StorageError::InvalidKey {
        key: key.to_owned(),
        reason,
    })
}

/// The deepest directory on the way from `root` to `key`'s parent that already exists (`root` itself
/// when none does, or when the lookup fails).
async fn deepest_existing_dir(root: &Path, key: &str) -> PathBuf {
    let root = root.to_path_buf();
    let mut dir = root.join(key);
    tokio::task::spawn_blocking(move || {
        while dir.pop() && dir.starts_with(&root) {
            if dir.is_dir() {
                return dir;
            }
        }
        root
    })
    .await
    .unwrap_or_default()
}

/// Writes an object on the filesystem as opendal's atomic writes do — into a temporary file under
/// `<root>/.tmp/`, synced, then renamed over the key — but with direct I/O
/// ([`tidemark_directio::write_file`]): a backup writes its packs once and never reads them back, and
/// through the page cache the copy into fresh cache pages was a quarter of a backup's CPU time.
async fn put_file(root: &Path, key: &str, data: Bytes) -> Result<(), StorageError> {
    let target = root.join(key);
    let temp_dir = root.join(FS_TEMP_DIR);
    let name = key.rsplit('/').next().unwrap_or(key);
    let temp = temp_dir.join(format!("{name}.{:016x}", rand::random::<u64>()));
    let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        std::fs::create_dir_all(&temp_dir)?;
        let result = tidemark_directio::write_file(&temp, &data)
            .and_then(|file| file.sync_all())
            .and_then(|()| match target.parent() {
                Some(parent) => std::fs::create_dir_all(parent),
                None => Ok(()),
            })
            .and_then(|()| std::fs::rename(&temp, &target));
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result
    })
    .await;
    let error = match written {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) => e,
        Err(e) => std::io::Error::other(e.to_string()),
    };
    Err(file_error(key, Operation::Put, &error))
}

/// Buffers of [`get_file_range`], reused: a fresh one of 16 MiB costs a page fault per 4 KiB.
#[derive(Default, Clone)]
struct ReadBuffers(Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

/// Buffers kept for reuse (a restore has a few ranged reads in flight).
const KEPT_READ_BUFFERS: usize = 4;

impl ReadBuffers {
    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop()
            .unwrap_or_default()
    }

    fn give_back(&self, buffer: Vec<u8>) {
        let mut kept = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if kept.len() < KEPT_READ_BUFFERS {
            kept.push(buffer);
        }
    }
}

/// The bytes of a ranged read, in their buffer, which goes back for reuse when they are dropped.
struct RangeRead {
    buffer: Vec<u8>,
    range: Range<usize>,
    buffers: ReadBuffers,
}

impl AsRef<[u8]> for RangeRead {
    fn as_ref(&self) -> &[u8] {
        &self.buffer[self.range.clone()]
    }
}

impl Drop for RangeRead {
    fn drop(&mut self) {
        self.buffers.give_back(std::mem::take(&mut self.buffer));
    }
}

/// Reads bytes `range` of an object on the filesystem with direct I/O
/// ([`tidemark_directio::read_range`]): a restore reads its packs once, and through the page
/// cache the kernel's copy of every byte was the largest cost of the thread reading them.
async fn get_file_range(
    root: &Path,
    key: &str,
    range: Range<u64>,
    buffers: &ReadBuffers,
) -> Result<Bytes, StorageError> {
    let path = root.join(key);
    let buffer = buffers.take();
    let wanted = range.clone();
    let read = tokio::task::spawn_blocking(move || {
        let read = tidemark_directio::read_range(&path, wanted, buffer);
        let size = match &read {
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => std::fs::metadata(&path).ok().map(|m| m.len()),
            _ => None,
        };
        (read, size)
    })
    .await;
    let error = match read {
        Ok((Ok((buffer, at)), _)) => {
            return Ok(Bytes::from_owner(RangeRead {
                buffer,
                range: at,
                buffers: buffers.clone(),
            }));
        }
        Ok((Err(e), size)) => match e.kind() {
            std::io::ErrorKind::UnexpectedEof => range_error(key, &range, size),
            // Reading a directory fails as the backend's read does: no object there.
            std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory => not_found(key),
            _ => file_error(key, Operation::Get, &e),
        },
        Err(e) => file_error(key, Operation::Get, &std::io::Error::other(e.to_string())),
    };
    Err(error)
}

/// Fsyncs the directories from `key`'s parent up to `existing` (the deepest one that existed before the
/// put), so the rename that published the object, and every directory created for it, are on disk.
async fn sync_dirs(root: &Path, key: &str, existing: PathBuf) -> Result<(), StorageError> {
    let root = root.to_path_buf();
    let key_owned = key.to_owned();
    let synced = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let stop = if existing.starts_with(&root) {
            existing
        } else {
            root.clone()
        };
        let mut dir = root.join(&key_owned);
        while dir.pop() && dir.starts_with(&stop) {
            std::fs::File::open(&dir)?.sync_all()?;
        }
        Ok(())
    })
    .await;
    let message = match synced {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) => format!("fsync of the object's directory failed: {e}"),
        Err(e) => format!("fsync of the object's directory failed: {e}"),
    };
    Err(StorageError::Other {
        key: key.to_owned(),
        operation: Operation::Put,
        message,
    })
}

/// Makes TLS available to the HTTP client used for S3 (ring, already used by the MongoDB driver).
fn install_tls_provider() {
    // An error only means a provider is already installed for the process, which is what we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
