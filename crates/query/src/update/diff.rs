//! The `$v: 2` "delta" update format MongoDB 5.0+ writes to the oplog.
//!
//! An oplog `u` entry's `o` field is `{$v: 2, diff: <diff>}`. A document diff has up to three
//! sections and any number of sub-diffs:
//!
//! * `u: {field: value}`: replace (or add) fields;
//! * `i: {field: value}`: insert fields (appended at the end of the document);
//! * `d: {field: false}`: delete fields;
//! * `s<field>: <diff>`: apply a nested diff to the document or array in `field`.
//!
//! An array diff is marked by `a: true` and holds `l: <new length>` (truncate or pad with null),
//! `u<index>: value` (set an element, padding with null) and `s<index>: <diff>` entries.
//!
//! As MongoDB's applier does, fields are rewritten in place in the order of the pre-image,
//! updated fields that did not exist are appended in the order of the `u` section, and inserted
//! fields are appended last. A sub-diff for a missing field does nothing, and a sub-diff meeting
//! a value of the wrong type (or an array element past the end) writes null: that only happens
//! when an oplog entry is re-applied, and a later entry rewrites the value.

use bson::{Bson, Document};

use crate::error::QueryError;
use crate::path::array_index;

fn diff_error(message: impl Into<String>) -> QueryError {
    QueryError::bad_value(message)
}

/// Applies a `$v: 2` oplog diff (the value of `diff`) to `doc`.
pub fn apply_oplog_diff(doc: &mut Document, diff: &Document) -> Result<(), QueryError> {
    let updated = apply_to_document(doc, diff)?;
    *doc = updated;
    Ok(())
}

/// A sub-diff: either a document diff or an array diff (`a: true`).
fn is_array_diff(diff: &Document) -> bool {
    matches!(diff.get("a"), Some(Bson::Boolean(true)))
}

fn section<'a>(diff: &'a Document, name: &str) -> Result<Option<&'a Document>, QueryError> {
    match diff.get(name) {
        None => Ok(None),
        Some(Bson::Document(d)) => Ok(Some(d)),
        Some(other) => Err(diff_error(format!(
            "oplog diff section '{name}' must be a document, found {other}"
        ))),
    }
}

fn apply_to_document(pre: &Document, diff: &Document) -> Result<Document, QueryError> {
    let updates = section(diff, "u")?;
    let inserts = section(diff, "i")?;
    let deletes = section(diff, "d")?;
    let mut subdiffs: Vec<(&str, &Document)> = Vec::new();
    for (key, value) in diff {
        match key.as_str() {
            "u" | "i" | "d" => {}
            _ => match (key.strip_prefix('s'), value) {
                (Some(field), Bson::Document(sub)) => subdiffs.push((field, sub)),
                (Some(_), other) => {
                    return Err(diff_error(format!(
                        "oplog sub-diff '{key}' must be a document, found {other}"
                    )));
                }
                (None, _) => return Err(diff_error(format!("unknown oplog diff section '{key}'"))),
            },
        }
    }
    let mut out = Document::new();
    for (field, value) in pre {
        if deletes.is_some_and(|d| d.contains_key(field)) || inserts.is_some_and(|i| i.contains_key(field)) {
            continue;
        }
        if let Some(new) = updates.and_then(|u| u.get(field)) {
            out.insert(field.clone(), new.clone());
        } else if let Some((_, sub)) = subdiffs.iter().find(|(f, _)| *f == field) {
            out.insert(field.clone(), apply_subdiff(Some(value), sub)?);
        } else {
            out.insert(field.clone(), value.clone());
        }
    }
    if let Some(u) = updates {
        for (field, value) in u {
            if !pre.contains_key(field) {
                out.insert(field.clone(), value.clone());
            }
        }
    }
    if let Some(i) = inserts {
        for (field, value) in i {
            out.insert(field.clone(), value.clone());
        }
    }
    Ok(out)
}

/// Applies a sub-diff to the value it names. A value of the wrong type (or a missing array
/// element) becomes null: the diff is being re-applied and a later entry rewrites the value.
fn apply_subdiff(value: Option<&Bson>, sub: &Document) -> Result<Bson, QueryError> {
    match (value, is_array_diff(sub)) {
        (Some(Bson::Array(items)), true) => Ok(Bson::Array(apply_to_array(items, sub)?)),
        (Some(Bson::Document(d)), false) => Ok(Bson::Document(apply_to_document(d, sub)?)),
        _ => Ok(Bson::Null),
    }
}

fn apply_to_array(pre: &[Bson], diff: &Document) -> Result<Vec<Bson>, QueryError> {
    let mut out = pre.to_vec();
    if let Some(length) = diff.get("l") {
        let length = crate::filter::integral_value(length)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| {
                diff_error(format!(
                    "oplog array diff length must be a non-negative integer, found {length}"
                ))
            })?;
        if length > pre.len().saturating_add(super::MAX_PADDING) {
            return Err(diff_error(format!("oplog array diff length {length} is too large")));
        }
        out.resize(length, Bson::Null);
    }
    for (key, value) in diff {
        if key == "a" || key == "l" {
            continue;
        }
        let mut chars = key.chars();
        let kind = chars.next().map(String::from).unwrap_or_default();
        let index = chars.as_str();
        let index = array_index(index).ok_or_else(|| diff_error(format!("unknown oplog array diff entry '{key}'")))?;
        if index > out.len().saturating_add(super::MAX_PADDING) {
            return Err(diff_error(format!("oplog array diff index {index} is too large")));
        }
        if index >= out.len() {
            out.resize(
                index
                    .checked_add(1)
                    .ok_or_else(|| diff_error("oplog array diff index overflow"))?,
                Bson::Null,
            );
        }
        match (kind.as_str(), value) {
            ("u", v) => out[index] = v.clone(),
            ("s", Bson::Document(sub)) => {
                let current = pre.get(index).map(|_| out[index].clone());
                out[index] = apply_subdiff(current.as_ref(), sub)?;
            }
            _ => return Err(diff_error(format!("unknown oplog array diff entry '{key}'"))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    // Delta format as written by MongoDB 5.0+ (see docs/FORMATS.md and MongoDB's doc_diff grammar).
    #[test]
    fn document_sections() {
        let mut d = doc! {"_id": 1, "a": 1, "b": 2, "c": {"x": 1, "y": 2}, "e": 5};
        apply_oplog_diff(&mut d, &doc! {"d": {"b": false}, "u": {"a": 10, "z": 0}, "i": {"e": 6, "n": 7}, "sc": {"u": {"y": 3}, "i": {"w": 4}}}).unwrap();
        assert_eq!(
            d,
            doc! {"_id": 1, "a": 10, "c": {"x": 1, "y": 3, "w": 4}, "z": 0, "e": 6, "n": 7}
        );
    }

    #[test]
    fn array_diffs() {
        let mut d = doc! {"_id": 1, "arr": [1, {"k": 1}, 3, 4]};
        apply_oplog_diff(
            &mut d,
            &doc! {"sarr": {"a": true, "l": 3, "u0": 9, "s1": {"u": {"k": 2}}}},
        )
        .unwrap();
        assert_eq!(d, doc! {"_id": 1, "arr": [9, {"k": 2}, 3]});
        apply_oplog_diff(&mut d, &doc! {"sarr": {"a": true, "u4": "x"}}).unwrap();
        assert_eq!(d, doc! {"_id": 1, "arr": [9, {"k": 2}, 3, Bson::Null, "x"]});
        // Re-application: sub-diffs meeting the wrong type or a missing element write null, and a
        // sub-diff for a missing field does nothing.
        apply_oplog_diff(
            &mut d,
            &doc! {"sarr": {"a": true, "s0": {"u": {"k": 1}}, "s6": {"u": {"k": 1}}}, "snope": {"u": {"x": 1}}},
        )
        .unwrap();
        assert_eq!(
            d,
            doc! {"_id": 1, "arr": [Bson::Null, {"k": 2}, 3, Bson::Null, "x", Bson::Null, Bson::Null]}
        );
        assert!(apply_oplog_diff(&mut d, &doc! {"q": 1}).is_err());
        assert!(apply_oplog_diff(&mut d, &doc! {"sarr": {"a": true, "x1": 1}}).is_err());
        assert!(apply_oplog_diff(&mut d, &doc! {"sarr": {"a": true, "é1": 1}}).is_err());
        assert!(apply_oplog_diff(&mut d, &doc! {"sarr": {"a": true, "u99999999": 1}}).is_err());
    }
}
