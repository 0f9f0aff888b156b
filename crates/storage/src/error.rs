//! Errors of the storage layer.
//!
//! Callers (the repository format) need to tell a handful of situations apart — a missing object, an
//! access problem, a transient failure worth retrying later, a configuration mistake — without depending on
//! the object-store library underneath. Every variant that concerns an object names its key, so a failed
//! backup or restore says which object was at fault.

use std::fmt;

/// An error from a [`Storage`](crate::Storage) operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The object does not exist.
    #[error("object {key:?} not found")]
    NotFound {
        /// Key of the missing object.
        key: String,
    },
    /// The store refused access to the object (bad credentials, missing permission).
    #[error("permission denied for {key:?}: {message}")]
    PermissionDenied {
        /// Key (or prefix) of the operation.
        key: String,
        /// What the store said.
        message: String,
    },
    /// A failure that may go away on its own (timeout, throttling, connection reset, 5xx), still present
    /// after the configured retries.
    #[error("transient failure on {key:?} (still failing after {retries} retries): {message}")]
    Transient {
        /// Key (or prefix) of the operation.
        key: String,
        /// How many retries were made before giving up.
        retries: usize,
        /// What the store said.
        message: String,
    },
    /// The storage URL or configuration is invalid.
    #[error("storage configuration: {message}")]
    Config {
        /// What is wrong, naming the option at fault.
        message: String,
    },
    /// The key is not a valid object key (empty, absolute, with empty, `.` or `..` segments, ...).
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey {
        /// The rejected key.
        key: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// Any other failure of an operation on an object.
    #[error("storage operation {operation} on {key:?} failed: {message}")]
    Other {
        /// Key (or prefix) of the operation.
        key: String,
        /// The operation (`put`, `get`, `head`, `list`, `delete`).
        operation: Operation,
        /// What the store said.
        message: String,
    },
}

impl StorageError {
    /// Whether the error means the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }

    /// Whether trying the same operation again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StorageError::Transient { .. })
    }

    /// The object key (or list prefix) the error is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            StorageError::NotFound { key }
            | StorageError::PermissionDenied { key, .. }
            | StorageError::Transient { key, .. }
            | StorageError::InvalidKey { key, .. }
            | StorageError::Other { key, .. } => Some(key),
            StorageError::Config { .. } => None,
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> StorageError {
        StorageError::Config {
            message: message.into(),
        }
    }

    /// Classifies an object-store error for `key`.
    pub(crate) fn from_opendal(err: opendal::Error, operation: Operation, key: &str, retries: usize) -> StorageError {
        let key = key.to_owned();
        let message = err.to_string();
        match err.kind() {
            opendal::ErrorKind::NotFound => StorageError::NotFound { key },
            opendal::ErrorKind::PermissionDenied => StorageError::PermissionDenied { key, message },
            opendal::ErrorKind::ConfigInvalid => StorageError::Config {
                message: format!("{key:?}: {message}"),
            },
            opendal::ErrorKind::RateLimited => StorageError::Transient { key, retries, message },
            _ if crate::hook::was_transient(&err) => StorageError::Transient { key, retries, message },
            _ => StorageError::Other {
                key,
                operation,
                message,
            },
        }
    }
}

/// The storage operation an error comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    /// [`Storage::put`](crate::Storage::put).
    Put,
    /// [`Storage::get`](crate::Storage::get) and [`Storage::get_range`](crate::Storage::get_range).
    Get,
    /// [`Storage::head`](crate::Storage::head).
    Head,
    /// [`Storage::list`](crate::Storage::list).
    List,
    /// [`Storage::delete`](crate::Storage::delete).
    Delete,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Put => "put",
            Operation::Get => "get",
            Operation::Head => "head",
            Operation::List => "list",
            Operation::Delete => "delete",
        })
    }
}
