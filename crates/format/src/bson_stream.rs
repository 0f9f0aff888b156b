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
    inner: R,
    max_size: usize,
    offset: u64,
    count: u64,
}

impl<R: Read> BsonReader<BufReader<R>> {
    /// Buffer size used for the internal [`BufReader`].
    const BUFFER: usize = 256 * 1024;

    /// A reader that accepts documents of at most `max_size` bytes
    /// ([`MAX_DOCUMENT_SIZE`] or [`MAX_OPLOG_DOCUMENT_SIZE`]), buffering `reader`.
    pub fn new(reader: R, max_size: usize) -> Self {
        Self::buffered(BufReader::with_capacity(Self::BUFFER, reader), max_size)
    }
}

impl<R: BufRead> BsonReader<R> {
    /// A reader over input that is buffered already (a [`tidemark_directio::InputFile`], a
    /// slice): documents are copied out of its buffer once, with no buffer in between.
    pub fn buffered(reader: R, max_size: usize) -> Self {
        Self {
            inner: reader,
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

    /// Gives back the underlying reader, positioned at the next document.
    pub fn into_inner(self) -> R {
        self.inner
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
            return Err(StreamError::Truncated {
                offset,
                declared: 0,
                present: got,
            });
        }
        let size = i32::from_le_bytes(len_bytes);
        let size_ok = usize::try_from(size)
            .ok()
            .filter(|s| (MIN_DOCUMENT_SIZE..=self.max_size).contains(s));
        let Some(size) = size_ok else {
            return Err(StreamError::InvalidSize {
                offset,
                size: i64::from(size),
                max: self.max_size,
            });
        };
        buf.reserve_exact(size);
        buf.extend_from_slice(&len_bytes);
        // Straight out of the reader's buffer, a piece at a time.
        while buf.len() < size {
            let available = match self.inner.fill_buf() {
                Ok(available) => available,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(StreamError::Io { offset, source }),
            };
            if available.is_empty() {
                return Err(StreamError::Truncated {
                    offset,
                    declared: size,
                    present: buf.len(),
                });
            }
            let n = available.len().min(size - buf.len());
            buf.extend_from_slice(&available[..n]);
            self.inner.consume(n);
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

impl<R: BufRead> Iterator for BsonReader<R> {
    type Item = Result<RawDocumentBuf, StreamError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_document().transpose()
    }
}

/// Reads until `buf` is full or the input ends; returns the number of bytes read.
pub(crate) fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
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
        Self {
            inner,
            documents: 0,
            bytes: 0,
        }
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

/// Why a document failed full structural validation ([`validate_document`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid BSON at byte offset {offset} of the document: {reason}")]
pub struct ValidationError {
    /// Offset, from the start of the document, of the element or length at fault.
    pub offset: usize,
    /// What is wrong there.
    pub reason: ValidationReason,
}

/// The structural defect found by [`validate_document`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationReason {
    /// The document's own length prefix does not match its byte count.
    #[error("document length prefix says {declared} bytes but {actual} are present")]
    LengthMismatch {
        /// Declared length.
        declared: i64,
        /// Bytes present.
        actual: usize,
    },
    /// An element type byte that BSON does not define.
    #[error("unknown element type 0x{0:02X}")]
    UnknownType(u8),
    /// A key or other C string has no terminating NUL inside its document.
    #[error("C string is not terminated before the end of its document")]
    UnterminatedCString,
    /// An element's value extends past the end of its enclosing document.
    #[error("value of element type 0x{0:02X} runs past the end of its document")]
    ValueOverrun(u8),
    /// A length-prefixed value (string, document, binary, code with scope) declares a bad length.
    #[error("invalid length {length} for element type 0x{element_type:02X}")]
    InvalidLength {
        /// The element type.
        element_type: u8,
        /// The declared length.
        length: i64,
    },
    /// A string value does not end with a NUL byte.
    #[error("string value is not terminated by a NUL byte")]
    StringNotTerminated,
    /// A boolean byte other than 0 or 1.
    #[error("invalid boolean byte 0x{0:02X}")]
    InvalidBoolean(u8),
    /// An embedded document or array does not end with a NUL byte where its length says it ends.
    #[error("embedded document does not end with a NUL byte")]
    MissingTerminator,
    /// A NUL byte appears where an element type byte is expected, before the declared end.
    #[error("document terminator found before its declared end")]
    EarlyTerminator,
    /// A code-with-scope value whose total length disagrees with its parts.
    #[error("code with scope declares {declared} bytes but its parts take {actual}")]
    CodeWithScopeLength {
        /// Declared total length.
        declared: i64,
        /// Sum of the parts.
        actual: i64,
    },
    /// Old binary subtype 0x02 whose inner length disagrees with the outer one.
    #[error("binary subtype 0x02 inner length {inner} does not match outer length {outer}")]
    OldBinaryLength {
        /// Inner length.
        inner: i64,
        /// Outer length.
        outer: i64,
    },
}

/// Fully checks the structure of one document, as `--objcheck` does: every element has a defined
/// type byte, every key is a terminated C string, every value lies inside its document with a
/// consistent length, and embedded documents and arrays are valid in turn.
///
/// The walk is iterative (an explicit stack, no recursion), so a hostile document nested
/// millions of levels deep cannot overflow the call stack. Array keys are not required to be
/// `"0"`, `"1"`, … in sequence (the real tools accept out-of-sequence keys), and string contents
/// are not checked for UTF-8, matching the Go driver's decoder.
///
/// # Errors
/// The first defect found, with its byte offset inside the document.
pub fn validate_document(doc: &RawDocument) -> Result<(), ValidationError> {
    validate_bytes(doc.as_bytes())
}

/// [`validate_document`] on a byte slice that has not been wrapped as a [`RawDocument`].
///
/// # Errors
/// See [`validate_document`].
pub fn validate_bytes(bytes: &[u8]) -> Result<(), ValidationError> {
    let err = |offset: usize, reason: ValidationReason| Err(ValidationError { offset, reason });
    let Some(declared) = read_i32(bytes, 0) else {
        return err(
            0,
            ValidationReason::LengthMismatch {
                declared: -1,
                actual: bytes.len(),
            },
        );
    };
    if usize::try_from(declared).ok() != Some(bytes.len()) || bytes.len() < MIN_DOCUMENT_SIZE {
        return err(
            0,
            ValidationReason::LengthMismatch {
                declared: i64::from(declared),
                actual: bytes.len(),
            },
        );
    }
    // Each frame is the offset one past the end of an open document (its NUL terminator is at end - 1).
    let mut stack: Vec<usize> = vec![bytes.len()];
    let mut pos = 4usize;
    while let Some(&end) = stack.last() {
        let last = end - 1;
        if pos == last {
            if bytes[last] != 0 {
                return err(last, ValidationReason::MissingTerminator);
            }
            pos = end;
            stack.pop();
            continue;
        }
        let element_start = pos;
        let element_type = bytes[pos];
        if element_type == 0 {
            return err(pos, ValidationReason::EarlyTerminator);
        }
        pos += 1;
        pos = skip_cstring(bytes, pos, last).ok_or(ValidationError {
            offset: element_start,
            reason: ValidationReason::UnterminatedCString,
        })?;
        let value_start = pos;
        let overrun = ValidationError {
            offset: element_start,
            reason: ValidationReason::ValueOverrun(element_type),
        };
        let fixed = |n: usize| value_start.checked_add(n).filter(|&e| e <= last);
        let next = match element_type {
            0x01 | 0x09 | 0x11 | 0x12 => fixed(8).ok_or(overrun)?,
            0x07 => fixed(12).ok_or(overrun)?,
            0x10 => fixed(4).ok_or(overrun)?,
            0x13 => fixed(16).ok_or(overrun)?,
            0x06 | 0x0A | 0x7F | 0xFF => value_start,
            0x08 => {
                let next = fixed(1).ok_or(overrun)?;
                if bytes[value_start] > 1 {
                    return err(element_start, ValidationReason::InvalidBoolean(bytes[value_start]));
                }
                next
            }
            0x02 | 0x0D | 0x0E => read_string(bytes, value_start, last, element_type, element_start)?,
            0x0C => {
                let after = read_string(bytes, value_start, last, element_type, element_start)?;
                after.checked_add(12).filter(|&e| e <= last).ok_or(overrun)?
            }
            0x0B => {
                let after = skip_cstring(bytes, value_start, last).ok_or(ValidationError {
                    offset: element_start,
                    reason: ValidationReason::UnterminatedCString,
                })?;
                skip_cstring(bytes, after, last).ok_or(ValidationError {
                    offset: element_start,
                    reason: ValidationReason::UnterminatedCString,
                })?
            }
            0x05 => {
                let len = read_i32(bytes, value_start)
                    .filter(|_| value_start + 4 <= last)
                    .ok_or(overrun.clone())?;
                let invalid = || ValidationError {
                    offset: element_start,
                    reason: ValidationReason::InvalidLength {
                        element_type,
                        length: i64::from(len),
                    },
                };
                let data_len = usize::try_from(len).map_err(|_| invalid())?;
                let data_start = value_start + 5;
                let next = data_start.checked_add(data_len).filter(|&e| e <= last).ok_or(overrun)?;
                if bytes[value_start + 4] == 0x02 {
                    let inner = read_i32(bytes, data_start).filter(|_| data_len >= 4);
                    if inner.and_then(|i| usize::try_from(i).ok()) != Some(data_len.wrapping_sub(4)) {
                        return err(
                            element_start,
                            ValidationReason::OldBinaryLength {
                                inner: inner.map_or(-1, i64::from),
                                outer: i64::from(len),
                            },
                        );
                    }
                }
                next
            }
            0x03 | 0x04 => {
                let doc_end = embedded_end(bytes, value_start, last, element_type, element_start)?;
                stack.push(doc_end);
                pos = value_start + 4;
                continue;
            }
            0x0F => {
                let total = read_i32(bytes, value_start)
                    .filter(|_| value_start + 4 <= last)
                    .ok_or(overrun.clone())?;
                let code_end = read_string(bytes, value_start + 4, last, element_type, element_start)?;
                let scope_end = embedded_end(bytes, code_end, last, element_type, element_start)?;
                let actual = scope_end - value_start;
                if usize::try_from(total).ok() != Some(actual) {
                    return err(
                        element_start,
                        ValidationReason::CodeWithScopeLength {
                            declared: i64::from(total),
                            actual: i64::try_from(actual).unwrap_or(i64::MAX),
                        },
                    );
                }
                stack.push(scope_end);
                pos = code_end + 4;
                continue;
            }
            other => return err(element_start, ValidationReason::UnknownType(other)),
        };
        pos = next;
    }
    Ok(())
}

/// Little-endian int32 at `at`, if four bytes are there.
fn read_i32(bytes: &[u8], at: usize) -> Option<i32> {
    let slice = bytes.get(at..at.checked_add(4)?)?;
    Some(i32::from_le_bytes(slice.try_into().ok()?))
}

/// Offset just past the NUL that ends the C string starting at `at`, searching before `limit`.
fn skip_cstring(bytes: &[u8], at: usize, limit: usize) -> Option<usize> {
    let window = bytes.get(at..limit)?;
    window.iter().position(|&b| b == 0).map(|i| at + i + 1)
}

/// Offset just past a length-prefixed, NUL-terminated string value starting at `at`.
fn read_string(
    bytes: &[u8],
    at: usize,
    limit: usize,
    element_type: u8,
    element_start: usize,
) -> Result<usize, ValidationError> {
    let overrun = || ValidationError {
        offset: element_start,
        reason: ValidationReason::ValueOverrun(element_type),
    };
    let len = read_i32(bytes, at).filter(|_| at + 4 <= limit).ok_or_else(overrun)?;
    let size = usize::try_from(len).ok().filter(|&s| s >= 1).ok_or(ValidationError {
        offset: element_start,
        reason: ValidationReason::InvalidLength {
            element_type,
            length: i64::from(len),
        },
    })?;
    let end = (at + 4).checked_add(size).filter(|&e| e <= limit).ok_or_else(overrun)?;
    if bytes[end - 1] != 0 {
        return Err(ValidationError {
            offset: element_start,
            reason: ValidationReason::StringNotTerminated,
        });
    }
    Ok(end)
}

/// End offset of an embedded document starting at `at` whose bytes must lie before `limit`.
fn embedded_end(
    bytes: &[u8],
    at: usize,
    limit: usize,
    element_type: u8,
    element_start: usize,
) -> Result<usize, ValidationError> {
    let overrun = || ValidationError {
        offset: element_start,
        reason: ValidationReason::ValueOverrun(element_type),
    };
    let len = read_i32(bytes, at).filter(|_| at + 4 <= limit).ok_or_else(overrun)?;
    let size = usize::try_from(len)
        .ok()
        .filter(|&s| s >= MIN_DOCUMENT_SIZE)
        .ok_or(ValidationError {
            offset: element_start,
            reason: ValidationReason::InvalidLength {
                element_type,
                length: i64::from(len),
            },
        })?;
    at.checked_add(size).filter(|&e| e <= limit).ok_or_else(overrun)
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
        let docs: Vec<_> = BsonReader::new(&bytes[..], MAX_DOCUMENT_SIZE)
            .collect::<Result<_, _>>()
            .unwrap();
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
        let err = BsonReader::new(&[7u8, 0][..], MAX_DOCUMENT_SIZE)
            .next_document()
            .unwrap_err();
        assert!(matches!(
            err,
            StreamError::Truncated {
                declared: 0,
                present: 2,
                ..
            }
        ));
    }

    #[test]
    fn sizes_outside_limits_are_rejected() {
        for size in [4i32, -1, i32::try_from(MAX_DOCUMENT_SIZE).unwrap() + 1] {
            let err = BsonReader::new(&size.to_le_bytes()[..], MAX_DOCUMENT_SIZE)
                .next_document()
                .unwrap_err();
            assert!(matches!(err, StreamError::InvalidSize { .. }), "{err}");
        }
        let err = BsonReader::new(&(16_793_601i32).to_le_bytes()[..], MAX_OPLOG_DOCUMENT_SIZE)
            .next_document()
            .unwrap_err();
        assert!(
            err.to_string().contains("larger than maximum of 16793600 bytes"),
            "{err}"
        );
    }

    #[test]
    fn missing_terminator_is_rejected() {
        let mut bytes = bson::rawdoc! {"a": 1}.as_bytes().to_vec();
        *bytes.last_mut().unwrap() = 1;
        let err = BsonReader::new(&bytes[..], MAX_DOCUMENT_SIZE)
            .next_document()
            .unwrap_err();
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
