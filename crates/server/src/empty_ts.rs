//! Empty-timestamp replacement: mongod's rule that a top-level `Timestamp(0, 0)` in a newly written document
//! is replaced by the current timestamp.
//!
//! MongoDB documents the rule for inserts ("If you insert a document containing an empty BSON timestamp in a
//! top-level field, the MongoDB server replaces that empty timestamp with the current timestamp value", with
//! `_id` as the exception, <https://www.mongodb.com/docs/manual/reference/bson-types/#timestamps>). mongod
//! applies it to the documents of `insert` and to replacement-style updates (`update` and `findAndModify`,
//! both for matched documents and upserts), but not to update operators such as `$set`/`$setOnInsert` nor
//! to pipeline updates. The command option `bypassEmptyTsReplacement: true` (mongod 7.0.13+/8.0, sent by
//! mongorestore) disables it, so restored documents keep their zero timestamps.
//!
//! Each replaced field gets its own value from the oplog clock ([`crate::repl::Oplog::next_timestamp`]), so
//! values are unique and strictly increasing in commit order, and later than every oplog entry before them.
//! Documents without an empty top-level timestamp are left byte for byte as sent.

use bson::raw::RawElement;
use bson::spec::ElementType;
use bson::{Bson, Document, RawBsonRef, RawDocument, RawDocumentBuf, Timestamp};

use crate::error::{CommandError, CommandResult};

/// The command option that disables the replacement.
pub const BYPASS_OPTION: &str = "bypassEmptyTsReplacement";

/// Whether `t` is the empty timestamp `Timestamp(0, 0)`.
pub fn is_empty(t: Timestamp) -> bool {
    t.time == 0 && t.increment == 0
}

/// Whether a top-level element is an empty timestamp that must be replaced (any field but `_id`).
pub fn is_empty_element(elem: &RawElement<'_>) -> CommandResult<bool> {
    if elem.element_type() != ElementType::Timestamp || elem.key() == "_id" {
        return Ok(false);
    }
    match elem.value() {
        Ok(RawBsonRef::Timestamp(t)) => Ok(is_empty(t)),
        Ok(_) => Ok(false),
        Err(e) => Err(CommandError::bad_value(format!("invalid BSON document: {e}"))),
    }
}

/// Whether a raw document has an empty timestamp in a top-level field other than `_id`.
pub fn raw_needs_fill(doc: &RawDocument) -> CommandResult<bool> {
    for elem in doc.iter_elements() {
        let elem = elem.map_err(|e| CommandError::bad_value(format!("invalid BSON document: {e}")))?;
        if is_empty_element(&elem)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Replaces every empty top-level timestamp except `_id`'s with a fresh value from `next`, keeping the field
/// order; returns whether anything was replaced.
pub fn fill(doc: &mut Document, next: &mut dyn FnMut() -> Timestamp) -> bool {
    let mut changed = false;
    for (key, value) in doc.iter_mut() {
        if key != "_id"
            && let Bson::Timestamp(t) = value
            && is_empty(*t)
        {
            *t = next();
            changed = true;
        }
    }
    changed
}

/// [`fill`] for a raw document: returns it unchanged (same bytes) when it has no empty top-level timestamp.
pub fn fill_raw(doc: RawDocumentBuf, next: &mut dyn FnMut() -> Timestamp) -> CommandResult<RawDocumentBuf> {
    if !raw_needs_fill(&doc)? {
        return Ok(doc);
    }
    let mut d = doc
        .to_document()
        .map_err(|e| CommandError::bad_value(format!("invalid BSON document: {e}")))?;
    fill(&mut d, next);
    RawDocumentBuf::from_document(&d).map_err(|e| CommandError::bad_value(format!("cannot encode document: {e}")))
}

#[cfg(test)]
mod tests {
    use bson::{doc, rawdoc};

    use super::*;

    fn counter() -> impl FnMut() -> Timestamp {
        let mut i = 0;
        move || {
            i += 1;
            Timestamp { time: 7, increment: i }
        }
    }

    #[test]
    fn only_top_level_non_id_empty_timestamps_are_replaced() {
        let zero = Timestamp { time: 0, increment: 0 };
        let set = Timestamp { time: 0, increment: 5 };
        let mut d = doc! { "_id": zero, "a": zero, "b": { "c": zero }, "d": [zero], "e": set, "f": zero };
        let mut next = counter();
        assert!(fill(&mut d, &mut next));
        assert_eq!(
            d,
            doc! {
                "_id": zero, "a": Timestamp { time: 7, increment: 1 }, "b": { "c": zero }, "d": [zero], "e": set,
                "f": Timestamp { time: 7, increment: 2 }
            }
        );
    }

    #[test]
    fn raw_documents_without_empty_timestamps_keep_their_bytes() {
        let raw = rawdoc! { "_id": 1, "x": 1.5, "t": Timestamp { time: 1, increment: 0 } };
        let mut next = counter();
        let out = fill_raw(raw.clone(), &mut next).unwrap();
        assert_eq!(out.as_bytes(), raw.as_bytes());
        let raw = rawdoc! { "_id": 1, "t": Timestamp { time: 0, increment: 0 }, "z": "k" };
        let out = fill_raw(raw, &mut next).unwrap();
        assert_eq!(
            out.to_document().unwrap(),
            doc! { "_id": 1, "t": Timestamp { time: 7, increment: 1 }, "z": "k" }
        );
    }
}
