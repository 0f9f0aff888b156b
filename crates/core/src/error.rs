//! The one error type of dump and restore.
//!
//! Every variant carries a context phrase naming what was being done and on which namespace,
//! file or option; the cause stays attached as the error's source, so a renderer that walks the
//! chain (`{:#}` with anyhow) prints "context: cause" without duplicating either.

use std::{io, path::PathBuf};

/// A failed dump or restore.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server or the driver reported an error.
    #[error("{context}")]
    Mongo {
        /// What was being done.
        context: String,
        /// The driver error.
        #[source]
        source: Box<mongodb::error::Error>,
    },
    /// Reading or writing a local file failed.
    #[error("{context} {}", path.display())]
    Io {
        /// What was being done.
        context: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The archive is malformed or could not be written.
    #[error("{context}")]
    Archive {
        /// What was being done.
        context: String,
        /// The archive error.
        #[source]
        source: tidemark_format::archive::ArchiveError,
    },
    /// A dump directory could not be read or written.
    #[error(transparent)]
    Directory(#[from] tidemark_format::directory::DirectoryError),
    /// Metadata could not be parsed or rendered.
    #[error(transparent)]
    Metadata(#[from] tidemark_format::metadata::MetadataError),
    /// Oplog replay failed.
    #[error("error applying oplog")]
    Oplog(#[from] tidemark_oplog::OplogError),
    /// The backup repository failed.
    #[error(transparent)]
    Repo(#[from] tidemark_repo::RepoError),
    /// Input data (metadata, BSON file, names) is invalid.
    #[error("{0}")]
    Data(String),
    /// Options are invalid or contradict each other (reported before any work is done).
    #[error("{0}")]
    Options(String),
    /// The receiver of a [`DumpTarget::Documents`](crate::dump::DumpTarget::Documents) dump stopped
    /// taking documents (it failed, and reports why itself).
    #[error("the receiver of the dumped documents stopped")]
    ReceiverGone,
}

impl Error {
    /// Whether the server answered NamespaceNotFound (26): the collection or database named by the
    /// command does not exist (for example because it was dropped after it was listed).
    #[must_use]
    pub fn is_namespace_not_found(&self) -> bool {
        match self {
            Self::Mongo { source, .. } => {
                matches!(&*source.kind, mongodb::error::ErrorKind::Command(c) if c.code == NAMESPACE_NOT_FOUND)
            }
            _ => false,
        }
    }
}

/// MongoDB's NamespaceNotFound error code.
const NAMESPACE_NOT_FOUND: i32 = 26;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a context phrase to driver errors.
pub(crate) trait MongoContext<T> {
    /// Wraps the error with `context`.
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> MongoContext<T> for std::result::Result<T, mongodb::error::Error> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Mongo {
            context: context(),
            source: Box::new(source),
        })
    }
}

/// Builds an [`Error::Io`].
pub(crate) fn io_error(context: &str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
    let context = context.to_owned();
    let path = path.into();
    move |source| Error::Io { context, path, source }
}
