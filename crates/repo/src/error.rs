//! Errors of the repository layer.
//!
//! Every variant names the object, snapshot, namespace or option at fault so the message alone is
//! enough to act on. Storage errors are kept whole (not flattened into strings) so callers can still
//! ask whether they are retryable.

use crate::StorageError;

/// Result alias of this crate.
pub type Result<T, E = RepoError> = std::result::Result<T, E>;

/// What can go wrong in a repository operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepoError {
    /// The storage layer failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// `init` found an existing repository.
    #[error("a repository already exists at {url} (object `config` is present)")]
    AlreadyExists {
        /// Storage URL.
        url: String,
    },
    /// `open` found no repository.
    #[error("no repository at {url} (object `config` is missing)")]
    NotARepository {
        /// Storage URL.
        url: String,
    },
    /// The repository was written in a format this build does not read.
    #[error("repository {url} has format version {found}, this tidemark reads {supported}")]
    UnsupportedVersion {
        /// Storage URL.
        url: String,
        /// Version in the repository's `config`.
        found: u32,
        /// Version this build reads and writes.
        supported: u32,
    },
    /// No key could be unlocked with the given password.
    #[error("wrong password: none of the {keys} key(s) in {url} can be opened with it")]
    WrongPassword {
        /// Storage URL.
        url: String,
        /// How many key objects were tried.
        keys: usize,
    },
    /// A password was given to an unencrypted repository, or none to an encrypted one.
    #[error("{0}")]
    PasswordMode(String),
    /// An option has a value the repository cannot use.
    #[error("invalid option {option}: {message}")]
    InvalidOption {
        /// Option name.
        option: &'static str,
        /// Why it was refused.
        message: String,
    },
    /// A stored object failed authentication, decompression, parsing or its hash check.
    #[error("corrupt object {object}: {message}")]
    Corrupt {
        /// Object key (and blob id within it when known).
        object: String,
        /// What is wrong with it.
        message: String,
    },
    /// A namespace's data does not match what the snapshot recorded.
    #[error("namespace {namespace} of snapshot {snapshot} is damaged: {message}")]
    NamespaceDamaged {
        /// Snapshot id.
        snapshot: String,
        /// `db.collection` (with the member name when the snapshot has several).
        namespace: String,
        /// What does not match.
        message: String,
    },
    /// An oplog slice's data does not match its manifest.
    #[error("oplog slice {slice} of replica set {replica_set} is damaged: {message}")]
    SliceDamaged {
        /// Slice id.
        slice: String,
        /// Replica set name.
        replica_set: String,
        /// What does not match.
        message: String,
    },
    /// The oplog archive cannot serve a request (a gap, or a range it does not cover).
    #[error("oplog archive of replica set {replica_set:?}: {message}")]
    OplogArchive {
        /// Replica set name.
        replica_set: String,
        /// What is missing.
        message: String,
    },
    /// A blob referenced by a snapshot is not in the index.
    #[error("blob {blob} referenced by {referrer} is missing from the index")]
    MissingBlob {
        /// Blob id.
        blob: String,
        /// Who refers to it.
        referrer: String,
    },
    /// No snapshot matches the given id or prefix.
    #[error("snapshot {0} not found")]
    SnapshotNotFound(String),
    /// A prefix matches several snapshots.
    #[error("snapshot id prefix {0} is ambiguous")]
    AmbiguousSnapshot(String),
    /// The repository is locked by someone else in a conflicting mode.
    #[error("repository is locked {mode} by {holder} since {time} (lock {key}); remove it with `unlock` if stale")]
    Locked {
        /// `exclusively` or `shared`.
        mode: &'static str,
        /// `host` + pid of the holder.
        holder: String,
        /// Time of the last refresh.
        time: String,
        /// Lock object key.
        key: String,
    },
    /// A document written to a namespace is not valid BSON.
    #[error("invalid document for namespace {namespace}: {message}")]
    InvalidDocument {
        /// Namespace being written.
        namespace: String,
        /// Why it was refused.
        message: String,
    },
    /// A caller misused the API (for example writing after finish).
    #[error("{0}")]
    Usage(String),
    /// Writing an export failed.
    #[error("export to {path}: {message}")]
    Export {
        /// Destination path.
        path: String,
        /// Cause.
        message: String,
    },
}

impl RepoError {
    pub(crate) fn corrupt(object: impl Into<String>, message: impl Into<String>) -> Self {
        RepoError::Corrupt {
            object: object.into(),
            message: message.into(),
        }
    }
}
