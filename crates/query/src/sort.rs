//! Sort specifications.
//!
//! A sort document maps field paths to `1` (ascending) or `-1` (descending)
//! (<https://www.mongodb.com/docs/manual/reference/method/cursor.sort/>). Each document's sort key
//! for a path is built as MongoDB documents it: a missing field sorts as `null`; when the path
//! reaches arrays, an ascending sort uses the smallest element and a descending sort the largest
//! ("With arrays, a less-than comparison or an ascending sort compares the smallest elements of
//! the array, and a greater-than comparison or a descending sort compares the largest elements");
//! an empty array sorts below `null`. Keys are compared with [`compare_values`].

use std::cmp::Ordering;

use bson::{Bson, Document};

use crate::compare::compare_values;
use crate::error::QueryError;
use crate::path::{flattened_values, split_path};

/// A parsed sort specification.
#[derive(Debug, Clone, Default)]
pub struct SortSpec {
    keys: Vec<(Vec<String>, bool)>,
}

impl SortSpec {
    /// Parses a sort document; values must be 1 or -1 (as int, long or double).
    pub fn parse(sort: &Document) -> Result<SortSpec, QueryError> {
        let mut keys = Vec::with_capacity(sort.len());
        for (field, direction) in sort {
            if field.is_empty() || field.split('.').any(str::is_empty) {
                return Err(QueryError::bad_value(format!(
                    "The sort field path is invalid: '{field}'"
                )));
            }
            let ascending = match direction {
                Bson::Int32(1) | Bson::Int64(1) => true,
                Bson::Int32(-1) | Bson::Int64(-1) => false,
                Bson::Double(d) if *d == 1.0 => true,
                Bson::Double(d) if *d == -1.0 => false,
                Bson::Document(d) if d.contains_key("$meta") => {
                    return Err(QueryError::bad_value(format!(
                        "$meta sort keys are not supported by this server (field '{field}')"
                    )));
                }
                _ => {
                    return Err(QueryError::new(
                        15975,
                        "$sort key ordering must be 1 (for ascending) or -1 (for descending)",
                    ));
                }
            };
            keys.push((split_path(field), ascending));
        }
        Ok(SortSpec { keys })
    }

    /// Whether the specification has no keys (no ordering).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Compares two documents by the specification.
    pub fn compare(&self, a: &Document, b: &Document) -> Ordering {
        for (parts, ascending) in &self.keys {
            let ka = sort_key(a, parts, *ascending);
            let kb = sort_key(b, parts, *ascending);
            let ord = compare_values(ka, kb);
            let ord = if *ascending { ord } else { ord.reverse() };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    }

    /// Sorts documents in place (stable, as equal keys keep their input order).
    ///
    /// Each document's keys are computed once, not at every comparison.
    pub fn sort(&self, docs: &mut [Document]) {
        if self.is_empty() || docs.len() < 2 {
            return;
        }
        let keys: Vec<Vec<Bson>> = docs
            .iter()
            .map(|d| {
                self.keys
                    .iter()
                    .map(|(parts, asc)| sort_key(d, parts, *asc).clone())
                    .collect()
            })
            .collect();
        let mut order: Vec<usize> = (0..docs.len()).collect();
        order.sort_by(|&i, &j| {
            for ((x, y), (_, ascending)) in keys[i].iter().zip(&keys[j]).zip(&self.keys) {
                let ord = compare_values(x, y);
                let ord = if *ascending { ord } else { ord.reverse() };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
            Ordering::Equal
        });
        let mut taken: Vec<Option<Document>> = docs.iter_mut().map(|d| Some(std::mem::take(d))).collect();
        for (slot, index) in docs.iter_mut().zip(order) {
            if let Some(d) = taken.get_mut(index).and_then(Option::take) {
                *slot = d;
            }
        }
    }
}

/// The value a document sorts by for one path: the minimum (ascending) or maximum (descending) of
/// the values the path reaches. MongoDB's key for an empty array is `undefined`, which sorts above
/// MinKey and below null.
fn sort_key<'a>(doc: &'a Document, parts: &[String], ascending: bool) -> &'a Bson {
    static UNDEFINED: Bson = Bson::Undefined;
    let (mut values, saw_empty) = flattened_values(doc, parts);
    if saw_empty {
        values.push(&UNDEFINED);
    }
    let chosen = if ascending {
        values.into_iter().min_by(|x, y| compare_values(x, y))
    } else {
        values.into_iter().max_by(|x, y| compare_values(x, y))
    };
    // A path that reaches nothing at all (for example through an empty array) sorts as null.
    chosen.unwrap_or(&Bson::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn sorted(spec: Document, docs: Vec<Document>) -> Vec<Bson> {
        let mut docs = docs;
        SortSpec::parse(&spec).unwrap().sort(&mut docs);
        docs.into_iter()
            .map(|d| d.get("_id").cloned().unwrap_or(Bson::Null))
            .collect()
    }

    // https://www.mongodb.com/docs/manual/reference/method/cursor.sort/#sort-by-an-array-field
    #[test]
    fn arrays_sort_by_min_ascending_and_max_descending() {
        let docs = vec![
            doc! {"_id": "A", "v": [1, 10]},
            doc! {"_id": "B", "v": [3, 5]},
            doc! {"_id": "C", "v": 4},
        ];
        assert_eq!(
            sorted(doc! {"v": 1}, docs.clone()),
            vec![Bson::from("A"), "B".into(), "C".into()]
        );
        assert_eq!(
            sorted(doc! {"v": -1}, docs),
            vec![Bson::from("A"), "B".into(), "C".into()]
        );
    }

    // https://www.mongodb.com/docs/manual/reference/bson-type-comparison-order/ : "The comparison
    // treats a non-existent field as if it were null" and "treats the empty array as less than
    // null or a missing field value".
    #[test]
    fn missing_is_null_and_empty_array_is_lowest() {
        let docs = vec![
            doc! {"_id": 1, "v": "s"},
            doc! {"_id": 2, "v": 5},
            doc! {"_id": 3},
            doc! {"_id": 4, "v": Bson::Null},
            doc! {"_id": 5, "v": []},
            doc! {"_id": 6, "v": Bson::MinKey},
        ];
        assert_eq!(
            sorted(doc! {"v": 1}, docs.clone()),
            vec![Bson::Int32(6), 5.into(), 3.into(), 4.into(), 2.into(), 1.into()]
        );
        assert_eq!(
            sorted(doc! {"v": -1}, docs),
            vec![Bson::Int32(1), 2.into(), 3.into(), 4.into(), 5.into(), 6.into()]
        );
    }

    #[test]
    fn compound_and_dotted_keys() {
        let docs = vec![
            doc! {"_id": 1, "a": {"b": 2}, "c": 1},
            doc! {"_id": 2, "a": {"b": 1}, "c": 2},
            doc! {"_id": 3, "a": {"b": 2}, "c": 0},
            doc! {"_id": 4, "a": [{"b": 0}, {"b": 9}], "c": 0},
        ];
        assert_eq!(
            sorted(doc! {"a.b": 1, "c": -1}, docs.clone()),
            vec![Bson::Int32(4), 2.into(), 1.into(), 3.into()]
        );
        assert_eq!(
            sorted(doc! {"a.b": -1.0, "c": 1_i64}, docs),
            vec![Bson::Int32(4), 3.into(), 1.into(), 2.into()]
        );
    }

    #[test]
    fn invalid_directions_are_rejected() {
        let e = SortSpec::parse(&doc! {"a": 2}).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                15975,
                "$sort key ordering must be 1 (for ascending) or -1 (for descending)"
            )
        );
        assert!(SortSpec::parse(&doc! {"a": "asc"}).is_err());
        assert!(SortSpec::parse(&doc! {"a": {"$meta": "textScore"}}).is_err());
    }
}
