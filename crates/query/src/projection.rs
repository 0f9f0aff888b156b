//! Projections: choosing which fields of a document to return.
//!
//! A projection (<https://www.mongodb.com/docs/manual/reference/method/db.collection.find/#projection>)
//! is either an *inclusion* (`{a: 1, "b.c": 1}`: only those fields, plus `_id` unless
//! `_id: 0`) or an *exclusion* (`{a: 0}`: everything but those fields). Mixing the two (other than
//! `_id: 0`) is an error, as are two paths where one is a prefix of the other ("path
//! collision"). Values other than numbers and booleans are expressions computed into the result
//! (`{total: "$price"}`, literals, `{$literal: ...}`); they make the projection an inclusion.
//! Dotted inclusions through arrays keep the named field of every document element and drop
//! non-document elements; dotted exclusions remove the field from each document element.
//!
//! The same tree serves the aggregation `$project` and `$unset` stages.

use bson::{Bson, Document};

use crate::error::QueryError;
use crate::expr::Expression;

/// A parsed projection.
#[derive(Debug, Clone)]
pub struct Projection {
    root: Node,
    inclusion: bool,
}

#[derive(Debug, Clone, Default)]
struct Node {
    children: Vec<(String, Child)>,
}

#[derive(Debug, Clone)]
enum Child {
    Include,
    Exclude,
    Computed(Expression),
    Nested(Node),
}

impl Node {
    fn get(&self, name: &str) -> Option<&Child> {
        self.children.iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }

    fn has_computed(&self) -> bool {
        self.children.iter().any(|(_, c)| match c {
            Child::Computed(_) => true,
            Child::Nested(n) => n.has_computed(),
            _ => false,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Include,
    Exclude,
    Computed,
}

impl Projection {
    /// Parses a `find` projection document.
    pub fn parse(proj: &Document) -> Result<Projection, QueryError> {
        let mut builder = Builder::default();
        builder.add_document(proj, "")?;
        Ok(builder.finish())
    }

    /// Parses an aggregation `$project` specification (which must not be empty).
    pub(crate) fn parse_stage(spec: &Document) -> Result<Projection, QueryError> {
        if spec.is_empty() {
            return Err(QueryError::new(
                51272,
                "Invalid $project :: caused by :: projection specification must have at least one field",
            ));
        }
        // Aggregation reports projection errors under the stage name.
        Projection::parse(spec)
            .map_err(|e| QueryError::new(e.code, format!("Invalid $project :: caused by :: {}", e.message)))
    }

    /// An exclusion of the given paths (the `$unset` stage).
    pub(crate) fn exclusion(paths: &[String]) -> Result<Projection, QueryError> {
        let mut builder = Builder::default();
        for p in paths {
            builder.add(p, Child::Exclude, Kind::Exclude)?;
        }
        Ok(builder.finish())
    }

    /// Applies the projection to a document.
    pub fn apply(&self, doc: &Document) -> Document {
        if self.inclusion {
            let mut out = include(&self.root, doc, true);
            add_computed(&self.root, doc, &mut out);
            out
        } else {
            exclude(&self.root, doc)
        }
    }

    /// Like [`Projection::apply`], but reports errors from computed expressions.
    pub(crate) fn try_apply(&self, doc: &Document) -> Result<Document, QueryError> {
        if self.inclusion {
            let mut out = include(&self.root, doc, true);
            try_add_computed(&self.root, doc, &mut out)?;
            Ok(out)
        } else {
            Ok(exclude(&self.root, doc))
        }
    }
}

#[derive(Default)]
struct Builder {
    root: Node,
    /// The kind of the first non-`_id` field, which fixes inclusion versus exclusion.
    mode: Option<Kind>,
}

impl Builder {
    fn finish(self) -> Projection {
        let inclusion = match self.mode {
            Some(kind) => kind != Kind::Exclude,
            // Only `_id` was named: `{_id: 1}` returns just `_id`, `{_id: 0}` everything else.
            None => matches!(self.root.get("_id"), Some(Child::Include)),
        };
        Projection {
            root: self.root,
            inclusion,
        }
    }

    fn add_document(&mut self, spec: &Document, prefix: &str) -> Result<(), QueryError> {
        for (field, value) in spec {
            if field.starts_with('$') {
                return Err(QueryError::new(
                    16410,
                    format!(
                        "FieldPath field names may not start with '$'. Consider using $getField or $setField. ('{field}')"
                    ),
                ));
            }
            if field.ends_with(".$") || field == "$" {
                return Err(QueryError::bad_value(format!(
                    "positional projection ('{field}') is not supported by this server"
                )));
            }
            let path = if prefix.is_empty() {
                field.clone()
            } else {
                format!("{prefix}.{field}")
            };
            match value {
                Bson::Boolean(_) | Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => {
                    let include = crate::filter::truthy(value);
                    let (child, kind) = if include {
                        (Child::Include, Kind::Include)
                    } else {
                        (Child::Exclude, Kind::Exclude)
                    };
                    self.add(&path, child, kind)?;
                }
                Bson::Document(d) if d.keys().next().is_some_and(|k| k.starts_with('$')) => {
                    let op = d.keys().next().map(String::as_str).unwrap_or_default();
                    if matches!(op, "$slice" | "$elemMatch" | "$meta") {
                        return Err(QueryError::bad_value(format!(
                            "the {op} projection operator is not supported by this server (field '{path}')"
                        )));
                    }
                    self.add(&path, Child::Computed(Expression::parse(value)?), Kind::Computed)?;
                }
                Bson::Document(d) if !d.is_empty() => self.add_document(d, &path)?,
                Bson::Document(_) => {
                    return Err(QueryError::new(
                        51270,
                        format!("An empty sub-projection is not a valid value. Found empty object at path {path}"),
                    ));
                }
                other => self.add(&path, Child::Computed(Expression::parse(other)?), Kind::Computed)?,
            }
        }
        Ok(())
    }

    fn add(&mut self, path: &str, child: Child, kind: Kind) -> Result<(), QueryError> {
        if path != "_id" || kind == Kind::Computed {
            match (self.mode, kind) {
                (None, k) => self.mode = Some(k),
                (Some(Kind::Exclude), Kind::Include) => {
                    return Err(QueryError::new(
                        31253,
                        format!("Cannot do inclusion on field {path} in exclusion projection"),
                    ));
                }
                (Some(Kind::Exclude), Kind::Computed) => {
                    return Err(QueryError::new(
                        31252,
                        format!("Cannot use expression other than $meta in exclusion projection (field {path})"),
                    ));
                }
                (Some(Kind::Include | Kind::Computed), Kind::Exclude) => {
                    return Err(QueryError::new(
                        31254,
                        format!("Cannot do exclusion on field {path} in inclusion projection"),
                    ));
                }
                _ => {}
            }
        }
        let parts: Vec<&str> = path.split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(QueryError::new(
                15998,
                format!("FieldPath field names may not be empty strings (in '{path}')"),
            ));
        }
        let mut node = &mut self.root;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let position = node.children.iter().position(|(n, _)| n == part);
            if last {
                if position.is_some() {
                    return Err(QueryError::new(31250, format!("Path collision at {path}")));
                }
                node.children.push(((*part).to_owned(), child));
                return Ok(());
            }
            let index = match position {
                Some(index) => index,
                None => {
                    node.children.push(((*part).to_owned(), Child::Nested(Node::default())));
                    node.children.len() - 1
                }
            };
            node = match &mut node.children[index].1 {
                Child::Nested(n) => n,
                _ => {
                    return Err(QueryError::new(
                        31249,
                        format!(
                            "Path collision at {path} remaining portion {}",
                            parts[i + 1..].join(".")
                        ),
                    ));
                }
            };
        }
        Ok(())
    }
}

fn include(node: &Node, doc: &Document, top: bool) -> Document {
    let mut out = Document::new();
    for (field, value) in doc {
        match node.get(field) {
            Some(Child::Include) => {
                out.insert(field.clone(), value.clone());
            }
            Some(Child::Nested(sub)) => {
                if let Some(v) = include_value(sub, value) {
                    out.insert(field.clone(), v);
                }
            }
            // `_id` is included unless explicitly excluded.
            None if top && field == "_id" => {
                out.insert(field.clone(), value.clone());
            }
            _ => {}
        }
    }
    out
}

fn include_value(node: &Node, value: &Bson) -> Option<Bson> {
    match value {
        Bson::Document(d) => Some(Bson::Document(include(node, d, false))),
        Bson::Array(items) => Some(Bson::Array(
            items.iter().filter_map(|i| include_value(node, i)).collect(),
        )),
        _ => None,
    }
}

fn add_computed(node: &Node, root: &Document, out: &mut Document) {
    // Expression errors cannot be reported from `apply`; such fields are left out.
    let _ = try_add_computed(node, root, out);
}

fn try_add_computed(node: &Node, root: &Document, out: &mut Document) -> Result<(), QueryError> {
    for (field, child) in &node.children {
        match child {
            Child::Computed(expr) => {
                if let Some(v) = expr.evaluate(root)? {
                    out.insert(field.clone(), v);
                }
            }
            Child::Nested(sub) if sub.has_computed() => {
                let target = match out.get_mut(field) {
                    Some(Bson::Document(d)) => d,
                    _ => {
                        out.insert(field.clone(), Document::new());
                        match out.get_mut(field) {
                            Some(Bson::Document(d)) => d,
                            _ => continue,
                        }
                    }
                };
                try_add_computed(sub, root, target)?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn exclude(node: &Node, doc: &Document) -> Document {
    let mut out = Document::new();
    for (field, value) in doc {
        match node.get(field) {
            Some(Child::Exclude) => {}
            Some(Child::Nested(sub)) => {
                out.insert(field.clone(), exclude_value(sub, value));
            }
            _ => {
                out.insert(field.clone(), value.clone());
            }
        }
    }
    out
}

fn exclude_value(node: &Node, value: &Bson) -> Bson {
    match value {
        Bson::Document(d) => Bson::Document(exclude(node, d)),
        Bson::Array(items) => Bson::Array(items.iter().map(|i| exclude_value(node, i)).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn p(spec: Document, doc: Document) -> Document {
        Projection::parse(&spec)
            .unwrap_or_else(|e| panic!("{spec}: {e}"))
            .apply(&doc)
    }

    fn inventory() -> Document {
        doc! {"_id": 1, "item": "journal", "status": "A", "size": {"h": 14, "w": 21, "uom": "cm"}, "instock": [{"warehouse": "A", "qty": 5}, {"warehouse": "C", "qty": 15}]}
    }

    // https://www.mongodb.com/docs/manual/tutorial/project-fields-from-query-results/
    #[test]
    fn inclusion_and_id_rules() {
        assert_eq!(
            p(doc! {"item": 1, "status": 1}, inventory()),
            doc! {"_id": 1, "item": "journal", "status": "A"}
        );
        assert_eq!(
            p(doc! {"item": 1, "status": 1, "_id": 0}, inventory()),
            doc! {"item": "journal", "status": "A"}
        );
        assert_eq!(
            p(doc! {"item": true, "size.uom": 1}, inventory()),
            doc! {"_id": 1, "item": "journal", "size": {"uom": "cm"}}
        );
        assert_eq!(
            p(doc! {"size": {"uom": 1}}, inventory()),
            doc! {"_id": 1, "size": {"uom": "cm"}}
        );
        assert_eq!(
            p(doc! {"item": 1, "instock.qty": 1}, inventory()),
            doc! {"_id": 1, "item": "journal", "instock": [{"qty": 5}, {"qty": 15}]}
        );
        assert_eq!(p(doc! {"_id": 0}, doc! {"_id": 1, "a": 2}), doc! {"a": 2});
        assert_eq!(p(doc! {"_id": 1}, doc! {"_id": 1, "a": 2}), doc! {"_id": 1});
        assert_eq!(p(doc! {}, inventory()), inventory());
        // Non-document array elements are dropped by a dotted inclusion.
        assert_eq!(
            p(doc! {"a.b": 1, "_id": 0}, doc! {"a": [{"b": 1, "c": 2}, 5, [{"b": 3}]]}),
            doc! {"a": [{"b": 1}, [{"b": 3}]]}
        );
    }

    #[test]
    fn exclusion() {
        assert_eq!(
            p(doc! {"status": 0, "instock": 0}, inventory()),
            doc! {"_id": 1, "item": "journal", "size": {"h": 14, "w": 21, "uom": "cm"}}
        );
        assert_eq!(
            p(
                doc! {"size.uom": 0, "instock.warehouse": 0, "_id": 0, "item": 0, "status": 0},
                inventory()
            ),
            doc! {"size": {"h": 14, "w": 21}, "instock": [{"qty": 5}, {"qty": 15}]}
        );
    }

    // Projection with expressions (MongoDB 4.4+): computed fields.
    #[test]
    fn computed_fields() {
        assert_eq!(
            p(
                doc! {"item": 1, "where": "$instock.warehouse", "tag": "x", "lit": {"$literal": 1}, "_id": 0},
                inventory()
            ),
            doc! {"item": "journal", "where": ["A", "C"], "tag": "x", "lit": 1}
        );
        assert_eq!(p(doc! {"s.h": "$size.h", "_id": 0}, inventory()), doc! {"s": {"h": 14}});
    }

    #[test]
    fn errors() {
        let code = |spec: Document| Projection::parse(&spec).unwrap_err().code;
        // "Cannot do exclusion on field b in inclusion projection"
        let e = Projection::parse(&doc! {"a": 1, "b": 0}).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (31254, "Cannot do exclusion on field b in inclusion projection")
        );
        assert_eq!(code(doc! {"a": 0, "b": 1}), 31253);
        assert_eq!(code(doc! {"a": 1, "a.b": 1}), 31249);
        assert_eq!(code(doc! {"a.b": 1, "a": 1}), 31250);
        assert_eq!(code(doc! {"a": {"$slice": 1}}), 2);
        assert_eq!(code(doc! {"a": {"$elemMatch": {"b": 1}}}), 2);
        assert_eq!(code(doc! {"a.$": 1}), 2);
    }
}
