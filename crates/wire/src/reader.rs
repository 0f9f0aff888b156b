//! Bounds-checked reading of little-endian wire fields.
//!
//! All parsing in this crate goes through [`Reader`], a cursor over a byte slice that never
//! indexes past its end: every read checks the remaining length first and reports a
//! [`WireError`] naming the field and its offset in the message. Lengths read from the wire are
//! only ever used to slice already-received bytes, never to size an allocation.
//!
//! BSON documents are framed here (length prefix at least 5, within bounds, trailing NUL) and then
//! validated element by element with the `bson` crate's raw iterator, walking nested documents
//! with an explicit stack bounded by [`MAX_BSON_DEPTH`], so hostile nesting cannot exhaust the
//! call stack of code that later converts the document.

use bson::RawDocument;
use bson::raw::RawBsonRef;

use crate::WireError;

/// Deepest nesting of embedded documents and arrays accepted in a message, the limit the MongoDB
/// server applies when it validates incoming BSON (`maxBSONDepth`, default 200).
pub const MAX_BSON_DEPTH: usize = 200;

/// Smallest possible BSON document: int32 length plus the trailing NUL.
const MIN_DOCUMENT_LEN: usize = 5;

/// A cursor over part of a message; `base` is the offset of `data[0]` within the whole message.
pub(crate) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    /// Reads `data`, which starts `base` bytes into the message.
    pub(crate) fn new(data: &'a [u8], base: usize) -> Self {
        Self { data, pos: 0, base }
    }

    /// Offset of the next unread byte from the start of the message.
    pub(crate) fn offset(&self) -> usize {
        self.base.saturating_add(self.pos)
    }

    /// The bytes not yet read.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.data.get(self.pos..).unwrap_or_default()
    }

    /// Number of bytes not yet read.
    pub(crate) fn remaining(&self) -> usize {
        self.rest().len()
    }

    /// Takes the next `n` bytes.
    pub(crate) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], WireError> {
        let rest = self.rest();
        match rest.get(..n) {
            Some(bytes) => {
                self.pos = self.pos.saturating_add(n);
                Ok(bytes)
            }
            None => Err(WireError::Truncated {
                what: what.to_owned(),
                offset: self.offset(),
                needed: u64::try_from(n).unwrap_or(u64::MAX),
                available: rest.len(),
            }),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], WireError> {
        let bytes = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// Reads one byte.
    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, WireError> {
        Ok(self.array::<1>(what)?[0])
    }

    /// Reads a little-endian int32.
    pub(crate) fn i32(&mut self, what: &str) -> Result<i32, WireError> {
        self.array(what).map(i32::from_le_bytes)
    }

    /// Reads a little-endian uint32.
    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, WireError> {
        self.array(what).map(u32::from_le_bytes)
    }

    /// Reads a little-endian int64.
    pub(crate) fn i64(&mut self, what: &str) -> Result<i64, WireError> {
        self.array(what).map(i64::from_le_bytes)
    }

    /// Reads a NUL-terminated UTF-8 string (the terminator is consumed, not returned).
    pub(crate) fn cstring(&mut self, what: &str) -> Result<&'a str, WireError> {
        let offset = self.offset();
        let rest = self.rest();
        let Some(nul) = rest.iter().position(|&b| b == 0) else {
            return Err(WireError::Malformed {
                what: what.to_owned(),
                offset,
                reason: format!("no NUL terminator in the {} bytes that remain", rest.len()),
            });
        };
        let bytes = self.take(nul.saturating_add(1), what)?;
        let text = bytes.get(..nul).unwrap_or_default();
        std::str::from_utf8(text).map_err(|e| WireError::Malformed {
            what: what.to_owned(),
            offset,
            reason: format!("not valid UTF-8: {e}"),
        })
    }

    /// Reads one BSON document: checks its framing, validates its content and returns its bytes
    /// together with its offset in the message.
    pub(crate) fn document(&mut self, what: &str) -> Result<(&'a [u8], usize), WireError> {
        let offset = self.offset();
        let rest = self.rest();
        let Some(prefix) = rest.get(..4) else {
            return Err(WireError::Truncated {
                what: format!("{what} length"),
                offset,
                needed: 4,
                available: rest.len(),
            });
        };
        let declared = i32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        let len = usize::try_from(declared)
            .ok()
            .filter(|&l| l >= MIN_DOCUMENT_LEN)
            .ok_or_else(|| WireError::Malformed {
                what: what.to_owned(),
                offset,
                reason: format!("document length {declared} is below the BSON minimum of {MIN_DOCUMENT_LEN}"),
            })?;
        let bytes = self.take(len, what)?;
        if bytes.last() != Some(&0) {
            return Err(WireError::Malformed {
                what: what.to_owned(),
                offset,
                reason: "document does not end with a NUL byte".to_owned(),
            });
        }
        validate_bson(bytes).map_err(|reason| WireError::InvalidDocument {
            what: what.to_owned(),
            offset,
            reason,
        })?;
        Ok((bytes, offset))
    }
}

/// Validates a framed BSON document: every element, recursively, with nesting bounded by
/// [`MAX_BSON_DEPTH`]. Returns a description of the first problem found.
pub(crate) fn validate_bson(bytes: &[u8]) -> Result<(), String> {
    let root = RawDocument::from_bytes(bytes).map_err(|e| e.to_string())?;
    // Each entry is an iterator over one (sub)document; the path is kept for error messages.
    let mut stack: Vec<(bson::raw::RawIter<'_>, String)> = vec![(root.iter_elements(), String::new())];
    while let Some((iter, path)) = stack.last_mut() {
        let Some(item) = iter.next() else {
            stack.pop();
            continue;
        };
        let in_path = |e: bson::raw::Error| match path.is_empty() {
            true => e.to_string(),
            false => format!("{e} (inside {path})"),
        };
        let element = item.map_err(in_path)?;
        let key = element.key();
        let value = element.value().map_err(in_path)?;
        let nested = match value {
            RawBsonRef::Document(doc) => Some(doc),
            RawBsonRef::Array(arr) => Some(RawDocument::from_bytes(arr.as_bytes()).map_err(|e| e.to_string())?),
            RawBsonRef::JavaScriptCodeWithScope(code) => Some(code.scope),
            _ => None,
        };
        if let Some(doc) = nested {
            let child = if path.is_empty() {
                key.to_owned()
            } else {
                format!("{path}.{key}")
            };
            if stack.len() > MAX_BSON_DEPTH {
                return Err(format!("nesting deeper than {MAX_BSON_DEPTH} levels at {child}"));
            }
            stack.push((doc.iter_elements(), child));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::rawdoc;

    #[test]
    fn reads_fields_and_reports_offsets() {
        let bytes = [1, 0, 0, 0, b'a', b'b', 0, 9];
        let mut r = Reader::new(&bytes, 100);
        assert_eq!(r.i32("x").unwrap(), 1);
        assert_eq!(r.cstring("name").unwrap(), "ab");
        assert_eq!(r.offset(), 107);
        let err = r.i32("tail").unwrap_err();
        assert_eq!(
            err.to_string(),
            "tail at offset 107 is truncated: it needs 4 bytes but only 1 remain"
        );
    }

    #[test]
    fn cstring_without_terminator_is_rejected() {
        let mut r = Reader::new(b"abc", 0);
        assert!(matches!(
            r.cstring("ident"),
            Err(WireError::Malformed { offset: 0, .. })
        ));
    }

    #[test]
    fn document_framing_is_checked() {
        // Declared length larger than the bytes present.
        let mut r = Reader::new(&[0x10, 0, 0, 0, 0], 0);
        assert!(matches!(
            r.document("doc"),
            Err(WireError::Truncated {
                needed: 16,
                available: 5,
                ..
            })
        ));
        // Declared length below the minimum.
        let mut r = Reader::new(&[4, 0, 0, 0, 0], 0);
        assert!(matches!(r.document("doc"), Err(WireError::Malformed { .. })));
        // Missing trailing NUL.
        let mut r = Reader::new(&[5, 0, 0, 0, 1], 0);
        assert!(matches!(r.document("doc"), Err(WireError::Malformed { .. })));
    }

    #[test]
    fn nesting_limit_matches_server_depth() {
        // A chain of `depth` nested documents below the top-level one.
        fn nested(depth: usize) -> bson::RawDocumentBuf {
            let mut doc = rawdoc! { "leaf": 1 };
            for _ in 0..depth {
                doc = rawdoc! { "s": doc };
            }
            doc
        }
        assert!(validate_bson(nested(MAX_BSON_DEPTH).as_bytes()).is_ok());
        let err = validate_bson(nested(MAX_BSON_DEPTH + 1).as_bytes()).unwrap_err();
        assert!(err.contains("nesting deeper than 200"), "{err}");
    }

    #[test]
    fn invalid_utf8_inside_nested_document_is_found() {
        // {a: {b: "\xff"}} built by hand: the string value holds an invalid UTF-8 byte.
        let inner: Vec<u8> = [&[14u8, 0, 0, 0, 2, b'b', 0, 2, 0, 0, 0, 0xff, 0][..], &[0]].concat();
        let mut outer = vec![0u8; 4];
        outer.extend_from_slice(&[3, b'a', 0]);
        outer.extend_from_slice(&inner);
        outer.push(0);
        let len = i32::try_from(outer.len()).unwrap().to_le_bytes();
        outer[..4].copy_from_slice(&len);
        let err = validate_bson(&outer).unwrap_err();
        assert!(err.contains("inside a"), "{err}");
    }
}
