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

use std::fmt;

use bson::RawDocument;
use bson::raw::RawBsonRef;

use crate::WireError;
use crate::elements::{length_at, value_len};

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
    pub(crate) fn take(&mut self, n: usize, what: &(impl fmt::Display + ?Sized)) -> Result<&'a [u8], WireError> {
        let rest = self.rest();
        match rest.get(..n) {
            Some(bytes) => {
                self.pos = self.pos.saturating_add(n);
                Ok(bytes)
            }
            None => Err(WireError::Truncated {
                what: what.to_string(),
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
    pub(crate) fn document(&mut self, what: &(impl fmt::Display + ?Sized)) -> Result<(&'a [u8], usize), WireError> {
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
                what: what.to_string(),
                offset,
                reason: format!("document length {declared} is below the BSON minimum of {MIN_DOCUMENT_LEN}"),
            })?;
        let bytes = self.take(len, what)?;
        if bytes.last() != Some(&0) {
            return Err(WireError::Malformed {
                what: what.to_string(),
                offset,
                reason: "document does not end with a NUL byte".to_owned(),
            });
        }
        if !surely_valid(bytes) {
            validate_bson(bytes).map_err(|reason| WireError::InvalidDocument {
                what: what.to_string(),
                offset,
                reason,
            })?;
        }
        Ok((bytes, offset))
    }
}

/// Whether the framed document `bytes` is certainly valid, by one byte-level walk that knows the common
/// element types (numbers, strings, documents, arrays, binary, ObjectId, booleans, dates, null, regexes,
/// timestamps, decimals, min/max keys).
///
/// `false` means "not shown valid", not "invalid": the caller then runs [`validate_bson`], which decides
/// and explains. So this may give up on anything unusual (JavaScript, symbols, DBPointers, the old binary
/// subtype) but must never accept what [`validate_bson`] refuses: every length is checked against the
/// enclosing document, every key and string is checked for UTF-8, booleans are 0 or 1, and nesting is
/// bounded by [`MAX_BSON_DEPTH`]. It exists because validating each incoming document element by element
/// through the generic iterator costs several times this walk.
pub(crate) fn surely_valid(bytes: &[u8]) -> bool {
    let Some(len) = framed_len(bytes, 0, bytes.len()).filter(|&n| n == bytes.len()) else {
        return false;
    };
    // ends[d]: offset of the terminating NUL of the open document at depth d.
    let mut ends = [0usize; MAX_BSON_DEPTH + 1];
    let mut depth = 0usize;
    ends[0] = len - 1;
    let mut pos = 4usize;
    loop {
        let end = ends[depth];
        if pos == end {
            if depth == 0 {
                return true;
            }
            depth -= 1;
            pos = end + 1;
            continue;
        }
        // Type byte, key up to its NUL (inside this document, before its terminator), then the value.
        let Some(&kind) = bytes.get(pos) else { return false };
        let Some(key_area) = bytes.get(pos + 1..end) else {
            return false;
        };
        let Some(key_len) = key_area.iter().position(|&b| b == 0) else {
            return false;
        };
        if !utf8(&key_area[..key_len]) {
            return false;
        }
        let value = pos + 1 + key_len + 1;
        let size = match kind {
            // JavaScript, symbols, code with scope, DBPointers: left to the full validation.
            0x0C..=0x0F => return false,
            0x08 if !matches!(bytes.get(value), Some(0 | 1)) => return false,
            // Binary subtype 2 (old binary) nests a second length.
            0x05 if bytes.get(value + 4).is_none_or(|&subtype| subtype == 2) => return false,
            0x03 | 0x04 => {
                let Some(n) = framed_len(bytes, value, end) else {
                    return false;
                };
                if depth + 1 > MAX_BSON_DEPTH {
                    return false;
                }
                depth += 1;
                ends[depth] = value + n - 1;
                pos = value + 4;
                continue;
            }
            _ => match value_len(kind, bytes, value, end) {
                Some(size) => size,
                None => return false,
            },
        };
        let text_ok = match kind {
            // int32 length, UTF-8 bytes, NUL.
            0x02 => bytes.get(value + size - 1) == Some(&0) && bytes.get(value + 4..value + size - 1).is_some_and(utf8),
            // Pattern and options, both NUL-terminated UTF-8.
            0x0B => bytes
                .get(value..value + size - 1)
                .is_some_and(|both| both.split(|&b| b == 0).all(utf8)),
            _ => true,
        };
        if !text_ok {
            return false;
        }
        match value.checked_add(size) {
            Some(next) if next <= end => pos = next,
            _ => return false,
        }
    }
}

/// The length of a document framed at `start` (int32 length of at least 5 and a trailing NUL), when
/// it ends at or before `limit`.
fn framed_len(bytes: &[u8], start: usize, limit: usize) -> Option<usize> {
    let n = length_at(bytes, start, limit).filter(|&n| n >= MIN_DOCUMENT_LEN)?;
    let last = start.checked_add(n)?.checked_sub(1)?;
    (start + n <= limit && bytes.get(last) == Some(&0)).then_some(n)
}

fn utf8(bytes: &[u8]) -> bool {
    bytes.is_ascii() || std::str::from_utf8(bytes).is_ok()
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

    /// A document with every element type the quick check knows, nested documents and arrays, and
    /// non-ASCII keys and strings.
    fn common_types() -> bson::RawDocumentBuf {
        use bson::{Binary, DateTime, Decimal128, Regex, Timestamp, oid::ObjectId, spec::BinarySubtype};
        let doc = bson::doc! {
            "_id": ObjectId::from_bytes([7; 12]), "d": 1.5, "s": "caf\u{e9} \u{1F600}",
            "n": { "a": [1_i32, "x", { "k\u{e9}": null }] },
            "bin": Binary { subtype: BinarySubtype::Generic, bytes: vec![1, 2, 3] },
            "u": bson::Bson::Undefined, "t": true, "f": false, "dt": DateTime::from_millis(5), "z": null,
            "re": Regex { pattern: "^a.*".into(), options: "i".into() },
            "i": 3_i32, "ts": Timestamp { time: 1, increment: 2 }, "l": 4_i64,
            "dec": Decimal128::from_bytes([3; 16]), "max": bson::Bson::MaxKey, "min": bson::Bson::MinKey,
        };
        bson::RawDocumentBuf::from_document(&doc).unwrap()
    }

    /// Valid documents with the element types the quick check leaves to the full validation.
    fn unusual_types() -> Vec<bson::RawDocumentBuf> {
        use bson::{Binary, JavaScriptCodeWithScope, spec::BinarySubtype};
        let mut docs: Vec<bson::RawDocumentBuf> = [
            bson::doc! { "old": Binary { subtype: BinarySubtype::BinaryOld, bytes: vec![9, 9] } },
            bson::doc! { "js": bson::Bson::JavaScriptCode("f()".into()) },
            bson::doc! { "sym": bson::Bson::Symbol("sy".into()) },
            bson::doc! { "jsw": JavaScriptCodeWithScope { code: "g()".into(), scope: bson::doc! { "v": 1 } } },
        ]
        .iter()
        .map(|d| bson::RawDocumentBuf::from_document(d).unwrap())
        .collect();
        // A DBPointer cannot be built through the `bson` API: {ptr: DBPointer("db.c", ObjectId)} by hand.
        let mut bytes = vec![0u8; 4];
        bytes.extend_from_slice(b"\x0cptr\0\x05\0\0\0db.c\0");
        bytes.extend_from_slice(&[1; 12]);
        bytes.push(0);
        let len = i32::try_from(bytes.len()).unwrap().to_le_bytes();
        bytes[..4].copy_from_slice(&len);
        docs.push(bson::RawDocumentBuf::from_bytes(bytes).unwrap());
        docs
    }

    #[test]
    fn quick_check_accepts_common_documents_and_leaves_the_rest() {
        assert!(surely_valid(common_types().as_bytes()));
        assert!(surely_valid(rawdoc! {}.as_bytes()));
        for doc in unusual_types() {
            assert!(validate_bson(doc.as_bytes()).is_ok());
            assert!(!surely_valid(doc.as_bytes()), "{doc:?}");
        }
    }

    /// The quick check never accepts a document the full validation refuses: every byte of a
    /// document with every element type it knows, set to each of a range of values, and every
    /// truncation, is judged by both.
    #[test]
    fn quick_check_accepts_nothing_the_full_validation_refuses() {
        let base = common_types().into_bytes();
        let values: Vec<u8> = (0u8..=20).chain([0x7E, 0x7F, 0x80, 0xC3, 0xE9, 0xFE, 0xFF]).collect();
        let (mut accepted, mut refused) = (0usize, 0usize);
        let mut judge = |bytes: &[u8], what: &dyn Fn() -> String| {
            let full = validate_bson(bytes);
            if surely_valid(bytes) {
                accepted += 1;
                assert!(
                    full.is_ok(),
                    "{}: accepted by the quick check, refused by validate_bson",
                    what()
                );
            } else if full.is_err() {
                refused += 1;
            }
        };
        for i in 0..base.len() {
            for &v in &values {
                let mut bytes = base.clone();
                bytes[i] = v;
                judge(&bytes, &|| format!("byte {i} set to {v:#x}"));
            }
        }
        for cut in 0..base.len() {
            judge(&base[..cut], &|| format!("cut at {cut}"));
        }
        // Both outcomes occur often, so the comparison above means something.
        assert!(
            accepted > 1000 && refused > 1000,
            "accepted {accepted}, refused {refused}"
        );
    }

    #[test]
    fn quick_check_gives_up_beyond_the_depth_limit() {
        let mut doc = rawdoc! { "leaf": 1 };
        for _ in 0..MAX_BSON_DEPTH {
            doc = rawdoc! { "s": doc };
        }
        assert!(surely_valid(doc.as_bytes()));
        let deeper = rawdoc! { "s": doc };
        assert!(!surely_valid(deeper.as_bytes()));
        assert!(validate_bson(deeper.as_bytes()).is_err());
    }
}
