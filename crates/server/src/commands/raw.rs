//! Small BSON helpers shared by handlers: type names as mongod prints them, numeric coercion, and a
//! builder for cursor replies that copies stored document bytes straight into the reply.

use bson::{Bson, RawDocumentBuf};

use crate::error::{CommandError, CommandResult};

/// mongod's name for a value's BSON type (as in `$type` and error messages).
pub use tidemark_query::bson_type_name as type_name;

/// A numeric value as i64 when it is integral (doubles are truncated toward zero only if exactly integral).
pub fn as_i64(v: &Bson) -> Option<i64> {
    match v {
        Bson::Int32(i) => Some(i64::from(*i)),
        Bson::Int64(i) => Some(*i),
        Bson::Double(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.2e18 => {
            // The range check above makes this conversion exact.
            #[allow(clippy::cast_possible_truncation)]
            Some(*f as i64)
        }
        Bson::Decimal128(d) => d.to_string().parse::<i64>().ok(),
        _ => None,
    }
}

/// Writes a BSON document element by element into a byte buffer, letting whole stored documents be
/// appended by copying their bytes.
#[derive(Debug)]
pub struct RawWriter {
    buf: Vec<u8>,
    /// Offsets of the length prefixes of the documents currently open.
    open: Vec<usize>,
}

impl Default for RawWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl RawWriter {
    /// Starts a top-level document.
    pub fn new() -> Self {
        Self::with_capacity(256)
    }

    /// Starts a top-level document in a buffer of `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut w = Self {
            buf: Vec::with_capacity(capacity),
            open: Vec::new(),
        };
        w.open_doc();
        w
    }

    fn open_doc(&mut self) {
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0, 0, 0]);
    }

    fn key(&mut self, tag: u8, key: &str) {
        self.buf.push(tag);
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.push(0);
    }

    /// Current encoded size.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing but the document header has been written.
    pub fn is_empty(&self) -> bool {
        self.buf.len() <= 4
    }

    /// Opens an embedded document (`0x03`) or array (`0x04`) under `key`.
    pub fn start(&mut self, key: &str, array: bool) {
        self.key(if array { 4 } else { 3 }, key);
        self.open_doc();
    }

    /// Closes the innermost open document or array.
    pub fn end(&mut self) -> CommandResult<()> {
        self.buf.push(0);
        let start = self
            .open
            .pop()
            .ok_or_else(|| CommandError::internal("unbalanced reply builder"))?;
        let len = i32::try_from(self.buf.len() - start)
            .map_err(|_| CommandError::internal("reply document larger than 2 GiB"))?;
        self.buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
        Ok(())
    }

    /// Appends a stored document's bytes under `key`.
    pub fn doc_bytes(&mut self, key: &str, bytes: &[u8]) {
        self.key(3, key);
        self.buf.extend_from_slice(bytes);
    }

    /// Appends an i64.
    pub fn i64(&mut self, key: &str, v: i64) {
        self.key(0x12, key);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Appends a double.
    pub fn f64(&mut self, key: &str, v: f64) {
        self.key(1, key);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Appends a string.
    pub fn str(&mut self, key: &str, v: &str) -> CommandResult<()> {
        self.key(2, key);
        let len = i32::try_from(v.len() + 1).map_err(|_| CommandError::internal("string too long"))?;
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(v.as_bytes());
        self.buf.push(0);
        Ok(())
    }

    /// Finishes the top-level document.
    pub fn finish(mut self) -> CommandResult<RawDocumentBuf> {
        while !self.open.is_empty() {
            self.end()?;
        }
        RawDocumentBuf::from_bytes(self.buf).map_err(|e| CommandError::internal(format!("bad reply built: {e}")))
    }
}

/// Builds `{cursor: {<batch_key>: [docs], id, ns}, ok: 1.0}` from stored bytes.
pub fn cursor_reply<'a>(
    batch_key: &str,
    docs: impl IntoIterator<Item = &'a [u8]>,
    cursor_id: i64,
    ns: &str,
) -> CommandResult<RawDocumentBuf> {
    let (bytes, _) = cursor_reply_bytes(batch_key, docs, cursor_id, ns)?;
    RawDocumentBuf::from_bytes(bytes).map_err(|e| CommandError::internal(format!("bad reply built: {e}")))
}

/// Like [`cursor_reply`], returning the encoded bytes and the offset of the 8-byte cursor id, so the id can
/// be filled in once known (see [`set_cursor_id`]).
pub fn cursor_reply_bytes<'a>(
    batch_key: &str,
    docs: impl IntoIterator<Item = &'a [u8]>,
    cursor_id: i64,
    ns: &str,
) -> CommandResult<(Vec<u8>, usize)> {
    let docs: Vec<&[u8]> = docs.into_iter().collect();
    // Room for every document, its element header (type, index key, NUL) and the fields around:
    // the reply is built without ever moving.
    let capacity = docs.iter().map(|d| d.len() + 8).sum::<usize>() + ns.len() + 128;
    let mut w = RawWriter::with_capacity(capacity);
    w.start("cursor", false);
    w.start(batch_key, true);
    let mut index = itoa::Buffer::new();
    for (i, d) in docs.into_iter().enumerate() {
        w.doc_bytes(index.format(i), d);
    }
    w.end()?;
    w.i64("id", cursor_id);
    let id_offset = w.len() - 8;
    w.str("ns", ns)?;
    w.end()?;
    w.f64("ok", 1.0);
    while !w.open.is_empty() {
        w.end()?;
    }
    Ok((w.buf, id_offset))
}

/// Overwrites the cursor id of a reply built by [`cursor_reply_bytes`].
pub fn set_cursor_id(bytes: &mut [u8], id_offset: usize, cursor_id: i64) -> CommandResult<()> {
    let slot = id_offset
        .checked_add(8)
        .and_then(|end| bytes.get_mut(id_offset..end))
        .ok_or_else(|| CommandError::internal("cursor id offset outside the reply"))?;
    slot.copy_from_slice(&cursor_id.to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, rawdoc};

    #[test]
    fn cursor_reply_round_trips_through_bson_decoder() {
        let a = rawdoc! { "_id": 1, "x": "y" };
        let b = rawdoc! { "_id": 2, "nested": { "k": [1, 2] } };
        let reply = cursor_reply("firstBatch", [a.as_bytes(), b.as_bytes()], 42, "db.c").unwrap();
        let d = reply.to_document().unwrap();
        assert_eq!(
            d,
            doc! { "cursor": { "firstBatch": [ { "_id": 1, "x": "y" }, { "_id": 2, "nested": { "k": [1, 2] } } ],
            "id": 42_i64, "ns": "db.c" }, "ok": 1.0 }
        );
    }

    #[test]
    fn integral_coercion() {
        assert_eq!(as_i64(&Bson::Double(3.0)), Some(3));
        assert_eq!(as_i64(&Bson::Double(3.5)), None);
        assert_eq!(as_i64(&Bson::String("3".into())), None);
    }
}
