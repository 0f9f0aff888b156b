//! Streams of concatenated BSON documents: collection `.bson`/`.bin` files, `oplog.bson`, and the
//! bodies of archive segments.
//!
//! A stream has no header, separators or trailer. Each document starts with its own int32
//! little-endian length, which must lie in `5..=max` where `max` is 16 MiB for collection data and
//! 16 MiB + 16 KiB for oplog files (an oplog entry may wrap a maximum-size document). A clean end of
//! input is accepted only at a document boundary; anything else is an error that names the byte
//! offset of the document at fault.
//!
//! Documents are returned as raw bytes ([`RawDocumentBuf`]) and never re-encoded. Only the length
//! prefix and the trailing NUL are checked here; [`validate_document`] does the full structural
//! check that `--objcheck` asks for.

use std::io::{self, BufRead, BufReader, Read, Write};

use bson::{RawDocument, RawDocumentBuf};

/// Smallest possible BSON document: an int32 length and the trailing NUL.
pub const MIN_DOCUMENT_SIZE: usize = 5;
/// Largest document allowed in a collection data file or an archive (16 MiB).
pub const MAX_DOCUMENT_SIZE: usize = 16 * 1024 * 1024;
/// Largest document allowed in an oplog file (16 MiB + 16 KiB).
pub const MAX_OPLOG_DOCUMENT_SIZE: usize = MAX_DOCUMENT_SIZE + 16 * 1024;

/// Why a BSON stream could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The underlying reader failed.
    #[error("read error at byte offset {offset}: {source}")]
    Io {
        /// Offset of the document being read.
        offset: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The length prefix is below 5 or above the stream's maximum.
    #[error(
        "invalid BSONSize at byte offset {offset}: {size} bytes is {}",
        if *size < MIN_DOCUMENT_SIZE as i64 { format!("smaller than the minimum of {MIN_DOCUMENT_SIZE} bytes") } else { format!("larger than maximum of {max} bytes") }
    )]
    InvalidSize {
        /// Offset of the length prefix.
        offset: u64,
        /// The declared length.
        size: i64,
        /// The stream's maximum document size.
        max: usize,
    },
    /// The input ended inside a document (or inside its length prefix).
    #[error(
        "unexpected EOF at byte offset {offset}: {}",
        if *declared == 0 { format!("only {present} of the 4 length bytes are present") } else { format!("document declares {declared} bytes but only {present} are present") }
    )]
    Truncated {
        /// Offset of the truncated document.
        offset: u64,
        /// Declared length (0 when the length prefix itself is cut).
        declared: usize,
        /// Bytes present before the end of input.
        present: usize,
    },
    /// The last byte of the document is not NUL.
    #[error("invalid BSON at byte offset {offset}: document of {size} bytes doesn't end with a null byte")]
    MissingTerminator {
        /// Offset of the document.
        offset: u64,
        /// Its declared length.
        size: usize,
    },
}

impl StreamError {
    /// Byte offset, from the start of the stream, of the document at fault.
    #[must_use]
    pub fn offset(&self) -> u64 {
        match self {
            Self::Io { offset, .. }
            | Self::InvalidSize { offset, .. }
            | Self::Truncated { offset, .. }
            | Self::MissingTerminator { offset, .. } => *offset,
        }
    }
}

/// Reads length-checked raw BSON documents one at a time from any reader.
///
/// ```
/// use tidemark_format::bson_stream::{BsonReader, MAX_DOCUMENT_SIZE};
/// let doc = bson::rawdoc! { "a": 1 };
/// let bytes = [doc.as_bytes(), doc.as_bytes()].concat();
/// let mut reader = BsonReader::new(&bytes[..], MAX_DOCUMENT_SIZE);
/// let mut n = 0;
/// while let Some(d) = reader.next_document().unwrap() {
///     assert_eq!(d.get_i32("a").unwrap(), 1);
///     n += 1;
/// }
/// assert_eq!(n, 2);
/// ```
pub struct BsonReader<R> {
    inner: BufReader<R>,
    max_size: usize,
    offset: u64,
    count: u64,
}

impl<R: Read> BsonReader<R> {
    /// Buffer size used for the internal [`BufReader`].
    const BUFFER: usize = 256 * 1024;

    /// A reader that accepts documents of at most `max_size` bytes
    /// ([`MAX_DOCUMENT_SIZE`] or [`MAX_OPLOG_DOCUMENT_SIZE`]).
    pub fn new(reader: R, max_size: usize) -> Self {
        Self {
            inner: BufReader::with_capacity(Self::BUFFER, reader),
            max_size,
            offset: 0,
            count: 0,
        }
    }

    /// Byte offset of the next document (equal to the bytes consumed so far).
    #[must_use]
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Number of documents returned so far.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Gives back the underlying reader (buffered input that was not consumed is lost).
    pub fn into_inner(self) -> R {
        self.inner.into_inner()
    }

    /// Reads the next document's bytes into `buf` (cleared first). Returns `Ok(false)` at a clean
    /// end of input. Reusing one buffer avoids an allocation per document.
    ///
    /// # Errors
    /// See [`StreamError`]; after an error the stream position is undefined.
    pub fn read_into(&mut self, buf: &mut Vec<u8>) -> Result<bool, StreamError> {
        buf.clear();
        let offset = self.offset;
        let mut len_bytes = [0u8; 4];
        let got = read_full(&mut self.inner, &mut len_bytes).map_err(|source| StreamError::Io { offset, source })?;
        if got == 0 {
            return Ok(false);
        }
        if got < 4 {
            return Err(StreamError::Truncated { offset, declared: 0, present: got });
        }
        let size = i32::from_le_bytes(len_bytes);
        let size_ok = usize::try_from(size).ok().filter(|s| (MIN_DOCUMENT_SIZE..=self.max_size).contains(s));
        let Some(size) = size_ok else {
            return Err(StreamError::InvalidSize { offset, size: i64::from(size), max: self.max_size });
        };
        buf.reserve(size);
        buf.extend_from_slice(&len_bytes);
        let body = size - 4;
        let got = (&mut self.inner)
            .take(body as u64)
            .read_to_end(buf)
            .map_err(|source| StreamError::Io { offset, source })?;
        if got < body {
            return Err(StreamError::Truncated { offset, declared: size, present: 4 + got });
        }
        if buf[size - 1] != 0 {
            return Err(StreamError::MissingTerminator { offset, size });
        }
        self.offset += size as u64;
        self.count += 1;
        Ok(true)
    }

    /// Reads the next document, or `None` at a clean end of input.
    ///
    /// # Errors
    /// See [`StreamError`].
    pub fn next_document(&mut self) -> Result<Option<RawDocumentBuf>, StreamError> {
        let mut buf = Vec::new();
        if !self.read_into(&mut buf)? {
            return Ok(None);
        }
        let offset = self.offset - buf.len() as u64;
        // Length and terminator were checked above, which is all `from_bytes` checks.
        RawDocumentBuf::from_bytes(buf)
            .map(Some)
            .map_err(|_| StreamError::MissingTerminator { offset, size: 0 })
    }

    /// Whether the input is exhausted, without consuming anything.
    ///
    /// # Errors
    /// I/O errors of the underlying reader.
    pub fn at_eof(&mut self) -> io::Result<bool> {
        Ok(self.inner.fill_buf()?.is_empty())
    }
}

impl<R: Read> Iterator for BsonReader<R> {
    type Item = Result<RawDocumentBuf, StreamError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_document().transpose()
    }
}

/// Reads until `buf` is full or the input ends; returns the number of bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Writes raw documents back to back, counting documents and bytes.
pub struct BsonWriter<W: Write> {
    inner: W,
    documents: u64,
    bytes: u64,
}

impl<W: Write> BsonWriter<W> {
    /// Wraps a writer. Callers that write to files should pass a buffered writer.
    pub fn new(inner: W) -> Self {
        Self { inner, documents: 0, bytes: 0 }
    }

    /// Appends one document, unchanged.
    ///
    /// # Errors
    /// I/O errors of the underlying writer.
    pub fn write_document(&mut self, doc: &RawDocument) -> io::Result<()> {
        self.inner.write_all(doc.as_bytes())?;
        self.documents += 1;
        self.bytes += doc.as_bytes().len() as u64;
        Ok(())
    }

    /// Documents written so far.
    #[must_use]
    pub fn documents(&self) -> u64 {
        self.documents
    }

    /// Bytes written so far.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Flushes and returns the underlying writer.
    ///
    /// # Errors
    /// I/O errors of the final flush.
    pub fn finish(mut self) -> io::Result<W> {
        self.inner.flush()?;
        Ok(self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(docs: &[RawDocumentBuf]) -> Vec<u8> {
        docs.iter().flat_map(|d| d.as_bytes().to_vec()).collect()
    }

    #[test]
    fn reads_documents_and_stops_cleanly() {
        let bytes = stream(&[bson::rawdoc! {"a": 1}, bson::rawdoc! {"b": "x"}]);
        let docs: Vec<_> = BsonReader::new(&bytes[..], MAX_DOCUMENT_SIZE).collect::<Result<_, _>>().unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].get_str("b").unwrap(), "x");
    }

    #[test]
    fn truncated_document_names_its_offset() {
        let first = bson::rawdoc! {"a": 1};
        let mut bytes = stream(&[first.clone(), bson::rawdoc! {"b": "xyz"}]);
        bytes.truncate(bytes.len() - 3);
        let mut r = BsonReader::new(&bytes[..], MAX_DOCUMENT_SIZE);
        assert!(r.next_document().unwrap().is_some());
        let err = r.next_document().unwrap_err();
        assert_eq!(err.offset(), first.as_bytes().len() as u64);
        assert!(matches!(err, StreamError::Truncated { .. }), "{err}");
    }

    #[test]
    fn partial_length_prefix_is_an_error() {
        let err = BsonReader::new(&[7u8, 0][..], MAX_DOCUMENT_SIZE).next_document().unwrap_err();
        assert!(matches!(err, StreamError::Truncated { declared: 0, present: 2, .. }));
    }

    #[test]
    fn sizes_outside_limits_are_rejected() {
        for size in [4i32, -1, i32::try_from(MAX_DOCUMENT_SIZE).unwrap() + 1] {
            let err = BsonReader::new(&size.to_le_bytes()[..], MAX_DOCUMENT_SIZE).next_document().unwrap_err();
            assert!(matches!(err, StreamError::InvalidSize { .. }), "{err}");
        }
        let err = BsonReader::new(&(16_793_601i32).to_le_bytes()[..], MAX_OPLOG_DOCUMENT_SIZE)
            .next_document()
            .unwrap_err();
        assert!(err.to_string().contains("larger than maximum of 16793600 bytes"), "{err}");
    }

    #[test]
    fn missing_terminator_is_rejected() {
        let mut bytes = bson::rawdoc! {"a": 1}.as_bytes().to_vec();
        *bytes.last_mut().unwrap() = 1;
        let err = BsonReader::new(&bytes[..], MAX_DOCUMENT_SIZE).next_document().unwrap_err();
        assert!(matches!(err, StreamError::MissingTerminator { .. }));
    }

    #[test]
    fn writer_round_trips_bytes() {
        let docs = [bson::rawdoc! {"a": 1.5}, bson::rawdoc! {"z": [1, 2]}];
        let mut w = BsonWriter::new(Vec::new());
        for d in &docs {
            w.write_document(d).unwrap();
        }
        assert_eq!(w.documents(), 2);
        assert_eq!(w.finish().unwrap(), stream(&docs));
    }
}
