//! Index keys: BSON values ordered by MongoDB's comparison rules, and extraction of key values from raw
//! documents.
//!
//! Keys wrap [`Bson`] values and compare with `tidemark_query::compare_values`, so `1`, `1.0` and
//! `NumberLong(1)` are the same key, as in a mongod index. Key extraction walks dotted paths directly on
//! the raw bytes (no full decode) and expands arrays the way multikey indexes do: each element becomes a
//! key, an empty array indexes as `undefined`, a missing field as `null`.

use std::cmp::Ordering;

use bson::{Bson, RawBsonRef, RawDocument};

/// A BSON value ordered as MongoDB orders index keys.
#[derive(Debug, Clone)]
pub struct Key(pub Bson);

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        match (&self.0, &other.0) {
            // The common `_id`: same order as `compare_values`, without its type ranking first.
            (Bson::ObjectId(a), Bson::ObjectId(b)) => a.bytes().cmp(&b.bytes()),
            (a, b) => tidemark_query::compare_values(a, b),
        }
    }
}

/// Converts a raw value to an owned [`Bson`], or `None` if its bytes are invalid.
pub fn to_bson(v: RawBsonRef<'_>) -> Option<Bson> {
    Bson::try_from(v.to_raw_bson()).ok()
}

/// The `_id` of a raw document, if present and decodable.
pub fn raw_id(doc: &RawDocument) -> Option<Bson> {
    match doc.get("_id") {
        Ok(Some(v)) => to_bson(v),
        _ => None,
    }
}

/// Values at a dotted path, expanded as a multikey index would; `None` when the path is absent everywhere.
pub fn path_values(doc: &RawDocument, path: &str) -> Option<Vec<Bson>> {
    let mut out = Vec::new();
    let parts: Vec<&str> = path.split('.').collect();
    collect(RawBsonRef::Document(doc), &parts, &mut out, 0);
    if out.is_empty() { None } else { Some(out) }
}

fn collect(value: RawBsonRef<'_>, parts: &[&str], out: &mut Vec<Bson>, depth: usize) {
    if depth > 100 {
        return;
    }
    let Some((first, rest)) = parts.split_first() else {
        match value {
            RawBsonRef::Array(arr) => {
                let before = out.len();
                for v in arr.into_iter().flatten() {
                    if let Some(b) = to_bson(v) {
                        out.push(b);
                    }
                }
                if out.len() == before {
                    out.push(Bson::Undefined);
                }
            }
            other => {
                if let Some(b) = to_bson(other) {
                    out.push(b);
                }
            }
        }
        return;
    };
    match value {
        RawBsonRef::Document(d) => {
            if let Ok(Some(v)) = d.get(first) {
                collect(v, rest, out, depth + 1);
            }
        }
        RawBsonRef::Array(arr) => {
            if first.parse::<usize>().is_ok() {
                if let Ok(Some(v)) = arr.as_doc_get(first) {
                    collect(v, rest, out, depth + 1);
                }
            } else {
                for v in arr.into_iter().flatten() {
                    if let RawBsonRef::Document(_) = v {
                        collect(v, parts, out, depth + 1);
                    }
                }
            }
        }
        _ => {}
    }
}

trait ArrayGet {
    fn as_doc_get(&self, key: &str) -> bson::raw::Result<Option<RawBsonRef<'_>>>;
}

impl ArrayGet for bson::RawArray {
    fn as_doc_get(&self, key: &str) -> bson::raw::Result<Option<RawBsonRef<'_>>> {
        match key.parse::<usize>() {
            Ok(i) => self.get(i),
            Err(_) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, rawdoc};

    #[test]
    fn numeric_keys_of_different_types_are_equal() {
        assert_eq!(Key(Bson::Int32(1)), Key(Bson::Double(1.0)));
        assert_eq!(Key(Bson::Int64(1)), Key(Bson::Int32(1)));
        assert!(Key(Bson::Int32(1)) < Key(Bson::String("a".into())));
    }

    #[test]
    fn object_id_keys_order_as_compare_values_does() {
        use bson::oid::ObjectId;
        let ids: Vec<ObjectId> = [[0u8; 12], [1; 12], [0xff; 12], [0x7f; 12]]
            .into_iter()
            .map(ObjectId::from_bytes)
            .chain((0..20).map(|_| ObjectId::new()))
            .collect();
        for a in &ids {
            for b in &ids {
                let expected = tidemark_query::compare_values(&Bson::ObjectId(*a), &Bson::ObjectId(*b));
                assert_eq!(Key(Bson::ObjectId(*a)).cmp(&Key(Bson::ObjectId(*b))), expected);
            }
        }
        assert!(Key(Bson::String("z".into())) < Key(Bson::ObjectId(ids[0])));
    }

    #[test]
    fn multikey_expansion() {
        let d = rawdoc! { "a": [1, 2], "b": { "c": [ { "d": 5 }, { "d": 6 } ] }, "e": [] };
        assert_eq!(path_values(&d, "a"), Some(vec![Bson::Int32(1), Bson::Int32(2)]));
        assert_eq!(path_values(&d, "b.c.d"), Some(vec![Bson::Int32(5), Bson::Int32(6)]));
        assert_eq!(path_values(&d, "a.1"), Some(vec![Bson::Int32(2)]));
        assert_eq!(path_values(&d, "e"), Some(vec![Bson::Undefined]));
        assert_eq!(path_values(&d, "zz"), None);
        let _ = doc! {};
    }
}
