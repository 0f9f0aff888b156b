//! The `mongodump --archive` stream format: many collections multiplexed into one byte stream.
//!
//! An archive exists so that a whole dump can travel through a pipe or a single object: the real
//! `mongodump` interleaves the data of up to `-j` collections into one stream, and the real
//! `mongorestore` demultiplexes it again. The grammar is
//!
//! ```text
//! archive  := MAGIC(6D E2 99 81)  header-doc  metadata-doc*  TERM  block*
//! block    := ns-header(EOF=false)  document*  TERM     a data segment
//!           | ns-header(EOF=true, CRC)  TERM            end of a namespace
//! TERM     := FF FF FF FF
//! ```
//!
//! There is no trailer: a clean end of input is legal only where a new block would start, and the
//! stream is complete when every namespace announced in the prelude has been closed by exactly one
//! EOF block. The EOF block carries a CRC-64/XZ ([`crc64`]) of every body document of the
//! namespace, in stream order.
//!
//! Pieces:
//! - [`prelude`]: header and collection-metadata documents, server version parsing and the
//!   timeseries data-namespace rule.
//! - [`reader`]: [`ArchiveReader`], a pull-based, single-threaded demultiplexer. It returns one
//!   [`ArchiveEvent`] at a time and never blocks on a consumer, so it cannot deadlock; every
//!   structural anomaly the real tool rejects is an [`ArchiveError`] carrying the byte offset.
//! - [`writer`]: [`ArchiveWriter`] (single-threaded, exact segment switching as `mongodump` does
//!   it) and [`SharedArchiveWriter`] with per-namespace [`NamespaceWriter`] handles for several
//!   producer threads.
//! - [`gzip`]: `--gzip` wraps the whole archive in one gzip stream.
//!
//! Offsets in errors count bytes of the *uncompressed* archive from its first byte (the magic).

use std::fmt;
use std::io;

pub mod gzip;
pub mod prelude;
pub mod reader;
pub mod writer;

pub use prelude::{ArchiveHeader, PreludeEntry, ServerVersion, data_collection};
pub use reader::{ArchiveEvent, ArchiveEventRef, ArchiveReader, DataNamespace};
pub use writer::{ArchiveWriter, HeldBytes, NamespaceWriter, SharedArchiveWriter};

/// The archive magic number; stored little-endian as the first four bytes.
pub const MAGIC: u32 = 0x8199_E26D;
/// The magic number as it appears on disk.
pub const MAGIC_BYTES: [u8; 4] = MAGIC.to_le_bytes();
/// The block terminator as it appears on disk (`0xFFFFFFFF`).
pub const TERMINATOR: [u8; 4] = [0xFF; 4];
/// How many bytes of one namespace `mongodump` buffers before handing them to the archive
/// (the maximum BSON document size); the [`NamespaceWriter`] default.
pub const SEGMENT_BUFFER_SIZE: usize = crate::bson_stream::MAX_DOCUMENT_SIZE;

/// The CRC-64/XZ of `bytes`.
///
/// ```
/// assert_eq!(tidemark_format::archive::crc64(b"123456789"), 0x995D_C9BB_DF19_39FA);
/// assert_eq!(tidemark_format::archive::crc64(b""), 0);
/// ```
#[must_use]
pub fn crc64(bytes: &[u8]) -> u64 {
    let mut crc = NamespaceCrc::new();
    crc.update(bytes);
    crc.value()
}

/// A running CRC-64/XZ (reflected ECMA-182, init and final xor `!0`; the same as Go's
/// `hash/crc64` with the ECMA table) over the body documents of one namespace.
///
/// Computed with `crc-fast`, which uses carry-less multiplication where the CPU has it, on 512-bit
/// vectors where it has VPCLMULQDQ (several times the speed of the 128-bit PCLMULQDQ kernel): every
/// byte of an archive goes through this checksum when it is written and when it is read.
#[derive(Clone)]
pub struct NamespaceCrc(crc_fast::Digest);

impl NamespaceCrc {
    /// A checksum of no bytes (value 0).
    #[must_use]
    pub fn new() -> Self {
        Self(crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Xz))
    }

    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The checksum of everything added so far.
    #[must_use]
    pub fn value(&self) -> u64 {
        self.0.finalize()
    }
}

impl Default for NamespaceCrc {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for NamespaceCrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NamespaceCrc({:#018x})", self.value())
    }
}

/// Namespaces in headers are database and *data* collection (for timeseries before 8.3, the
/// `system.buckets.` collection); the oplog is `"".oplog`.
pub use crate::naming::Namespace;

/// Why an archive could not be read or written. Reader errors carry the byte offset (in the
/// uncompressed stream) of the document or terminator at fault; the messages contain the
/// wording of the real tools' errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// The underlying reader or writer failed.
    #[error("archive I/O error at byte offset {offset}: {source}")]
    Io {
        /// Offset in the archive where the operation was.
        offset: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The first four bytes are not the archive magic.
    #[error("stream or file does not appear to be a mongodump archive (first bytes {found:02x?})")]
    NotAnArchive {
        /// The bytes found (fewer than four when the input is shorter).
        found: Vec<u8>,
    },
    /// A low-level framing error: bad length, missing NUL, truncated document, misplaced
    /// terminator.
    #[error("corruption found in archive at byte offset {offset}; {message}")]
    Corrupt {
        /// Offset of the length prefix or terminator at fault.
        offset: u64,
        /// What is wrong.
        message: String,
    },
    /// The header or a collection-metadata document of the prelude does not decode.
    #[error("invalid archive prelude at byte offset {offset}: {message}")]
    Prelude {
        /// Offset of the document.
        offset: u64,
        /// What is wrong.
        message: String,
    },
    /// A namespace header is not exactly `{db: string, collection: string, EOF: bool, CRC: int64}`
    /// with a non-empty collection.
    #[error("error demultiplexing archive at byte offset {offset}; {message}")]
    BadNamespaceHeader {
        /// Offset of the header document.
        offset: u64,
        /// What is wrong.
        message: String,
    },
    /// A namespace that the prelude does not announce.
    #[error("no intent for namespace `{namespace}` (namespace header at byte offset {offset})")]
    UnknownNamespace {
        /// Offset of the header document (0 for writer errors).
        offset: u64,
        /// The namespace.
        namespace: String,
    },
    /// A data header for a namespace whose EOF block was already seen (or written).
    #[error(
        "error demultiplexing archive at byte offset {offset}; namespace header for already opened namespace `{namespace}` (it was already closed)"
    )]
    NamespaceClosed {
        /// Offset of the header document (0 for writer errors).
        offset: u64,
        /// The namespace.
        namespace: String,
    },
    /// A body document outside a data segment (for example right after an EOF block).
    #[error("error demultiplexing archive at byte offset {offset}; collection data without a collection header")]
    DataWithoutHeader {
        /// Offset of the document.
        offset: u64,
    },
    /// The CRC in an EOF block differs from the CRC of the namespace's documents.
    #[error("CRC mismatch for namespace `{namespace}`, {computed}!={stored} (EOF block at byte offset {offset})")]
    CrcMismatch {
        /// Offset of the EOF header.
        offset: u64,
        /// The namespace.
        namespace: String,
        /// CRC of the documents read.
        computed: u64,
        /// CRC stored in the EOF header (its int64 bit pattern read as unsigned).
        stored: u64,
    },
    /// The stream ended while namespaces were still open.
    #[error(
        "error demultiplexing archive at byte offset {offset}; archive finished but contained files were unfinished ({})",
        quote_join(.namespaces)
    )]
    UnfinishedNamespaces {
        /// End of the stream.
        offset: u64,
        /// The open namespaces.
        namespaces: Vec<String>,
    },
    /// The stream ended before a prelude namespace was closed (or even started).
    #[error(
        "error demultiplexing archive at byte offset {offset}; archive finished before all collections were seen (`{namespace}`)"
    )]
    MissingNamespace {
        /// End of the stream.
        offset: u64,
        /// The first namespace never closed, in prelude order.
        namespace: String,
    },
    /// More namespaces open at once than the header's `concurrent_collections` allows.
    #[error(
        "opening namespace `{namespace}` would make {open} namespaces open at once, more than concurrent_collections = {limit}"
    )]
    TooManyOpenNamespaces {
        /// The namespace being opened.
        namespace: String,
        /// How many would be open.
        open: usize,
        /// The header's limit.
        limit: usize,
    },
    /// A writer was asked to do something the format cannot express.
    #[error("invalid archive write: {0}")]
    InvalidWrite(String),
    /// `finish` was called while prelude namespaces had not been closed.
    #[error("archive is incomplete: namespaces not closed: {}", quote_join(.0))]
    NotFinished(Vec<String>),
    /// A previous error left the reader or writer in an undefined state.
    #[error("archive {0} already failed")]
    Failed(&'static str),
}

impl ArchiveError {
    /// Byte offset of the fault, for reader errors.
    #[must_use]
    pub fn offset(&self) -> Option<u64> {
        match self {
            Self::Io { offset, .. }
            | Self::Corrupt { offset, .. }
            | Self::Prelude { offset, .. }
            | Self::BadNamespaceHeader { offset, .. }
            | Self::UnknownNamespace { offset, .. }
            | Self::NamespaceClosed { offset, .. }
            | Self::DataWithoutHeader { offset }
            | Self::CrcMismatch { offset, .. }
            | Self::UnfinishedNamespaces { offset, .. }
            | Self::MissingNamespace { offset, .. } => Some(*offset),
            Self::NotAnArchive { .. }
            | Self::TooManyOpenNamespaces { .. }
            | Self::InvalidWrite(_)
            | Self::NotFinished(_)
            | Self::Failed(_) => None,
        }
    }
}

/// `"a", "b"`, as Go's `util.QuoteAndJoin`.
fn quote_join(items: &[String]) -> String {
    items.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_documented_check_values() {
        assert_eq!(crc64(b"123456789"), 0x995D_C9BB_DF19_39FA);
        let mut running = NamespaceCrc::new();
        assert_eq!(running.value(), 0);
        running.update(b"1234");
        running.update(b"56789");
        assert_eq!(running.value(), 0x995D_C9BB_DF19_39FA);
    }

    #[test]
    fn magic_is_stored_little_endian() {
        assert_eq!(MAGIC_BYTES, [0x6D, 0xE2, 0x99, 0x81]);
    }
}
