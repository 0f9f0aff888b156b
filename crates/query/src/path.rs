//! Dotted field paths.
//!
//! MongoDB addresses nested fields with dotted paths (`"a.b.c"`), where a component may also be
//! an array index (`"a.0.b"`). Two readings exist:
//!
//! * [`lookup_path`] follows the path literally: each component selects a field of a document
//!   or, if it is a decimal index, an element of an array. This is what update operators and
//!   aggregation `$unwind` need.
//! * [`path_candidates`] is the reading query predicates and sorts use
//!   (<https://www.mongodb.com/docs/manual/tutorial/query-array-of-documents/>): when the path
//!   meets an array before its last component, the rest of the path is applied to every document
//!   in the array (and, for a numeric component, also to the element at that index), so one path
//!   can yield several values. A branch that ends before the path does (a document without the
//!   field, or a scalar where a document was needed) yields "missing" (`None`), which is what lets
//!   `{"a.b": null}` match documents without `a.b`; array elements that are not documents are
//!   skipped without yielding anything.

use bson::{Bson, Document};

/// Splits a dotted path into its components.
pub fn split_path(path: &str) -> Vec<String> {
    path.split('.').map(str::to_owned).collect()
}

/// Parses a path component as an array index: decimal digits without a leading zero (except `0`).
pub fn array_index(component: &str) -> Option<usize> {
    if component.is_empty() || !component.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if component.len() > 1 && component.starts_with('0') {
        return None;
    }
    component.parse().ok()
}

/// Follows a dotted path literally (fields of documents, numeric indexes of arrays).
///
/// Returns `None` when any component is absent or the path runs into a scalar.
pub fn lookup_path<'a>(doc: &'a Document, path: &str) -> Option<&'a Bson> {
    let mut parts = path.split('.');
    let first = parts.next()?;
    let mut current = doc.get(first)?;
    for part in parts {
        current = match current {
            Bson::Document(d) => d.get(part)?,
            Bson::Array(a) => a.get(array_index(part)?)?,
            _ => return None,
        };
    }
    Some(current)
}

/// Replaces the value at a literal path (fields of documents, indexes of arrays); returns whether
/// the path existed.
pub(crate) fn replace_at_path(doc: &mut Document, parts: &[String], value: Bson) -> bool {
    let Some((first, rest)) = parts.split_first() else {
        return false;
    };
    let Some(mut current) = doc.get_mut(first) else {
        return false;
    };
    for part in rest {
        current = match current {
            Bson::Document(d) => match d.get_mut(part) {
                Some(v) => v,
                None => return false,
            },
            Bson::Array(a) => match array_index(part).and_then(|i| a.get_mut(i)) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    *current = value;
    true
}

/// Every value a query path reaches in `doc`, with `None` standing for a missing branch.
///
/// Arrays at the end of the path are returned whole; callers that match elements too (as query
/// predicates do) look inside them.
pub fn path_candidates<'a>(doc: &'a Document, parts: &[String]) -> Vec<Option<&'a Bson>> {
    let mut out = Vec::new();
    collect_in_document(doc, parts, &mut out);
    out
}

fn collect_in_document<'a>(doc: &'a Document, parts: &[String], out: &mut Vec<Option<&'a Bson>>) {
    let Some((first, rest)) = parts.split_first() else {
        return;
    };
    match doc.get(first) {
        None => out.push(None),
        Some(value) if rest.is_empty() => out.push(Some(value)),
        Some(Bson::Document(inner)) => collect_in_document(inner, rest, out),
        Some(Bson::Array(items)) => collect_in_array(items, rest, out),
        Some(_) => out.push(None),
    }
}

fn collect_in_array<'a>(items: &'a [Bson], parts: &[String], out: &mut Vec<Option<&'a Bson>>) {
    let Some((first, rest)) = parts.split_first() else {
        return;
    };
    let numeric = array_index(first);
    if let Some(index) = numeric {
        match items.get(index) {
            Some(value) if rest.is_empty() => out.push(Some(value)),
            Some(Bson::Document(inner)) => collect_in_document(inner, rest, out),
            Some(Bson::Array(inner)) => collect_in_array(inner, rest, out),
            _ => {}
        }
    }
    for item in items {
        // Arrays nested directly in arrays are not traversed by field paths.
        if let Bson::Document(inner) = item {
            // A numeric component addresses the array position first; elements are only
            // consulted for a field literally named that way.
            if numeric.is_none() || inner.contains_key(first) {
                collect_in_document(inner, parts, out);
            }
        }
    }
    // An array that yields nothing (empty, or only scalars) contributes no candidate at all, not
    // "missing": MongoDB does not match `{"ids.0": null}` against `{ids: []}`.
}

/// The values a dotted path reaches, with arrays at the end of the path expanded into their
/// elements and missing branches skipped: the values `distinct` reports for a document
/// (<https://www.mongodb.com/docs/manual/reference/command/distinct/>: "If the value of the
/// specified field is an array, distinct considers each element of the array as a separate value").
pub fn path_values<'a>(doc: &'a Document, path: &str) -> Vec<&'a Bson> {
    let mut out = Vec::new();
    for candidate in path_candidates(doc, &split_path(path)).into_iter().flatten() {
        match candidate {
            Bson::Array(items) => out.extend(items.iter()),
            other => out.push(other),
        }
    }
    out
}

/// Values a path reaches, flattened one level the way sort keys are built: leaf arrays contribute
/// their elements, and a missing branch contributes `Null`.
///
/// An empty leaf array contributes nothing; [`sort_key`](crate::SortSpec) treats a path with only
/// empty arrays as lower than null, as MongoDB does.
pub(crate) fn flattened_values<'a>(doc: &'a Document, parts: &[String]) -> (Vec<&'a Bson>, bool) {
    let mut values = Vec::new();
    let mut saw_empty_array = false;
    for candidate in path_candidates(doc, parts) {
        match candidate {
            None => values.push(&Bson::Null),
            Some(Bson::Array(items)) if items.is_empty() => saw_empty_array = true,
            Some(Bson::Array(items)) => values.extend(items.iter()),
            Some(value) => values.push(value),
        }
    }
    (values, saw_empty_array)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn literal_lookup_uses_indexes() {
        let d = doc! {"a": {"b": [10, {"c": 5}]}};
        assert_eq!(lookup_path(&d, "a.b.0"), Some(&Bson::Int32(10)));
        assert_eq!(lookup_path(&d, "a.b.1.c"), Some(&Bson::Int32(5)));
        assert_eq!(lookup_path(&d, "a.b.c"), None);
        assert_eq!(lookup_path(&d, "a.x"), None);
        assert_eq!(array_index("01"), None);
        assert_eq!(array_index("10"), Some(10));
    }

    // https://www.mongodb.com/docs/manual/tutorial/query-array-of-documents/ : a dotted path
    // through an array of documents reaches the field in every element.
    #[test]
    fn query_paths_fan_out_through_arrays() {
        let d = doc! {"instock": [{"warehouse": "A", "qty": 5}, {"warehouse": "C", "qty": 15}, {"other": 1}]};
        let got = path_candidates(&d, &split_path("instock.qty"));
        assert_eq!(got, vec![Some(&Bson::Int32(5)), Some(&Bson::Int32(15)), None]);
        let got = path_candidates(&d, &split_path("instock.0.qty"));
        assert_eq!(got, vec![Some(&Bson::Int32(5))]);
        assert_eq!(path_candidates(&doc! {"a": 1}, &split_path("a.b")), vec![None]);
        // distinct-style values: leaf arrays expanded, missing skipped.
        let d = doc! {"a": [{"b": [1, 2]}, {"b": 3}, {"c": 4}]};
        assert_eq!(
            path_values(&d, "a.b"),
            vec![&Bson::Int32(1), &Bson::Int32(2), &Bson::Int32(3)]
        );
    }
}
