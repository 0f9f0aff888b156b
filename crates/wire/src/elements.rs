//! Walking BSON elements by their framing alone: type byte, key, and a value whose size follows from
//! its type and length prefix.
//!
//! This is for hot paths that only need to find elements (the server looking for `_id` or for empty
//! timestamps in every inserted document) in documents whose content was already validated as they
//! arrived (see [`crate::decode`]). Nothing here checks UTF-8 or value contents; every length is
//! checked against the document, so hostile bytes end the walk instead of reading out of bounds, and
//! [`TopLevel::finished`] tells a clean end from a walk that gave up.

/// Size of the value of an element of type `kind` starting at `at`, when it is framed correctly and
/// ends at or before `end` (the offset of the enclosing document's terminating NUL). `None` for an
/// unknown type or a length that does not fit.
pub(crate) fn value_len(kind: u8, bytes: &[u8], at: usize, end: usize) -> Option<usize> {
    let size = match kind {
        0x01 | 0x09 | 0x11 | 0x12 => 8,
        0x10 => 4,
        0x07 => 12,
        0x13 => 16,
        0x08 => 1,
        0x06 | 0x0A | 0x7F | 0xFF => 0,
        // Length-prefixed strings (the length counts the NUL): string, JavaScript, symbol.
        0x02 | 0x0D | 0x0E => length_at(bytes, at, end).filter(|&n| n >= 1)?.checked_add(4)?,
        // Documents, arrays and code with scope: the length counts itself.
        0x03 | 0x04 | 0x0F => length_at(bytes, at, end).filter(|&n| n >= 5)?,
        // Binary: length, subtype byte, bytes.
        0x05 => length_at(bytes, at, end)?.checked_add(5)?,
        // DBPointer: a string, then an ObjectId.
        0x0C => length_at(bytes, at, end).filter(|&n| n >= 1)?.checked_add(16)?,
        // Regular expression: two cstrings.
        0x0B => {
            let area = bytes.get(at..end)?;
            let pattern = area.iter().position(|&b| b == 0)?;
            let options = area.get(pattern + 1..)?.iter().position(|&b| b == 0)?;
            pattern + 1 + options + 1
        }
        _ => return None,
    };
    (at.checked_add(size)? <= end).then_some(size)
}

/// The non-negative int32 at `at`, when its four bytes lie before `limit`.
pub(crate) fn length_at(bytes: &[u8], at: usize, limit: usize) -> Option<usize> {
    let field = bytes.get(at..at.checked_add(4).filter(|&e| e <= limit)?)?;
    usize::try_from(i32::from_le_bytes([field[0], field[1], field[2], field[3]])).ok()
}

/// One element found by [`TopLevel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element<'a> {
    /// The BSON type byte.
    pub kind: u8,
    /// The key's bytes (not checked for UTF-8).
    pub key: &'a [u8],
    /// The value's bytes.
    pub value: &'a [u8],
    /// Offset of the element (its type byte) in the document.
    pub offset: usize,
    /// Length of the whole element: type byte, key, NUL and value.
    pub len: usize,
}

/// The top-level elements of a framed BSON document, in order, by framing alone (see the
/// [module documentation](self)).
///
/// ```
/// let doc = bson::rawdoc! { "_id": 1, "a": "x" };
/// let mut walk = tidemark_wire::TopLevel::new(doc.as_bytes());
/// let keys: Vec<&[u8]> = walk.by_ref().map(|e| e.key).collect();
/// assert_eq!(keys, [&b"_id"[..], &b"a"[..]]);
/// assert!(walk.finished());
/// ```
#[derive(Debug, Clone)]
pub struct TopLevel<'a> {
    bytes: &'a [u8],
    pos: usize,
    end: usize,
    state: WalkState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WalkState {
    Walking,
    Finished,
    GaveUp,
}

impl<'a> TopLevel<'a> {
    /// Walks `bytes`, which must hold exactly one document (length prefix equal to its length, and a
    /// trailing NUL); anything else gives no elements and is not [`finished`](Self::finished).
    pub fn new(bytes: &'a [u8]) -> Self {
        let framed =
            length_at(bytes, 0, bytes.len()) == Some(bytes.len()) && bytes.len() >= 5 && bytes.last() == Some(&0);
        Self {
            bytes,
            pos: 4,
            end: bytes.len().saturating_sub(1),
            state: if framed { WalkState::Walking } else { WalkState::GaveUp },
        }
    }

    /// Whether the walk reached the end of the document, so that every element was seen. `false` while
    /// walking and after giving up on bytes it could not frame.
    pub fn finished(&self) -> bool {
        self.state == WalkState::Finished
    }
}

impl<'a> Iterator for TopLevel<'a> {
    type Item = Element<'a>;

    fn next(&mut self) -> Option<Element<'a>> {
        if self.state != WalkState::Walking {
            return None;
        }
        if self.pos == self.end {
            self.state = WalkState::Finished;
            return None;
        }
        let element = self.element();
        match element {
            Some(e) => self.pos = e.offset + e.len,
            None => self.state = WalkState::GaveUp,
        }
        element
    }
}

impl<'a> TopLevel<'a> {
    fn element(&self) -> Option<Element<'a>> {
        let (bytes, pos, end) = (self.bytes, self.pos, self.end);
        let kind = *bytes.get(pos)?;
        let key_area = bytes.get(pos + 1..end)?;
        let key_len = key_area.iter().position(|&b| b == 0)?;
        let at = pos + 1 + key_len + 1;
        let size = value_len(kind, bytes, at, end)?;
        Some(Element {
            kind,
            key: &key_area[..key_len],
            value: bytes.get(at..at + size)?,
            offset: pos,
            len: 1 + key_len + 1 + size,
        })
    }
}

#[cfg(test)]
mod tests {
    use bson::rawdoc;

    use super::*;

    #[test]
    fn walks_every_element_with_its_bytes() {
        let doc = rawdoc! { "_id": bson::oid::ObjectId::from_bytes([1; 12]), "s": "abc", "n": { "x": [1, 2] }, "t": bson::Timestamp { time: 0, increment: 0 } };
        let mut walk = TopLevel::new(doc.as_bytes());
        let found: Vec<Element<'_>> = walk.by_ref().collect();
        assert!(walk.finished());
        let expected: Vec<(String, bson::RawBsonRef<'_>)> = doc
            .iter()
            .map(|e| e.map(|(k, v)| (k.to_owned(), v)))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(found.len(), expected.len());
        let mut offset = 4;
        for (e, (key, value)) in found.iter().zip(&expected) {
            assert_eq!(e.key, key.as_bytes());
            assert_eq!(e.kind, value.element_type() as u8);
            assert_eq!(e.offset, offset);
            offset += e.len;
        }
        assert_eq!(found[1].value, b"\x04\0\0\0abc\0");
        assert_eq!(offset, doc.as_bytes().len() - 1);
    }

    #[test]
    fn gives_up_on_bad_framing_without_reading_out_of_bounds() {
        let doc = rawdoc! { "a": "xyz", "b": 1 }.into_bytes();
        // Every truncation and every single-byte change: the walk ends, and a finished walk framed
        // every element inside the document.
        for cut in 0..doc.len() {
            let mut walk = TopLevel::new(&doc[..cut]);
            assert_eq!(walk.next(), None);
            assert!(!walk.finished());
        }
        for i in 0..doc.len() {
            for v in [0u8, 1, 2, 0x7f, 0xff] {
                let mut bytes = doc.clone();
                bytes[i] = v;
                let mut walk = TopLevel::new(&bytes);
                let total: usize = walk.by_ref().map(|e| e.len).sum();
                if walk.finished() {
                    assert_eq!(total + 5, bytes.len());
                }
            }
        }
    }
}
