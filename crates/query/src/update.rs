//! Update documents: operator updates, replacements and oplog deltas.
//!
//! An update is either a document of update operators
//! (<https://www.mongodb.com/docs/manual/reference/operator/update/>) or a replacement document.
//! [`Update::parse`] validates it as MongoDB does: unknown operators and non-document operands
//! are `FailedToParse` (9), and two operators touching the same path or a path and its prefix
//! are `ConflictingUpdateOperators` (40). [`Update::apply`] then changes a document in place:
//!
//! * fields are processed in the order MongoDB 5.0+ uses, lexicographic by path with numeric
//!   components in numeric order, so new fields are appended in that order;
//! * dotted paths create missing intermediate documents, array indexes pad with `null`, and a
//!   path that runs into a scalar is `PathNotViable` (28);
//! * `_id` is immutable: an update that would change it fails with `ImmutableField` (66);
//!   replacements keep the original `_id`;
//! * `$setOnInsert` only applies when the update inserts (an upsert);
//! * positional paths are resolved per document: `$` is the array element the query matched
//!   ([`Update::apply_with_filter`]), `$[]` every element, and `$[<id>]` the elements matching
//!   the `arrayFilters` entry for `<id>` ([`Update::parse_with_array_filters`]);
//! * `{$v: 1, $set/$unset}` (pre-5.0 oplog form) is accepted, and `{$v: 2, diff: {...}}` (the
//!   5.0+ oplog form) is applied with [`apply_oplog_diff`].

pub(crate) mod arith;
mod diff;

use std::cmp::Ordering;

use bson::{Bson, Document};

pub use diff::apply_oplog_diff;

use crate::Filter;
use crate::compare::{Number, compare_values};
use crate::error::{CONFLICTING_UPDATE_OPERATORS, IMMUTABLE_FIELD, PATH_NOT_VIABLE, QueryError};
use crate::expr::type_name;
use crate::filter::{Expr, Pred, integral_value, is_operator_doc, parse_field_value, parse_filter_expr};
use crate::path::array_index;
use crate::sort::SortSpec;
use arith::ArithError;

/// A parsed update: operators, a replacement document, or an oplog delta.
#[derive(Debug, Clone)]
pub struct Update {
    kind: Kind,
    /// `arrayFilters` by identifier, for `$[<identifier>]` path components.
    array_filters: Vec<(String, Filter)>,
}

#[derive(Debug, Clone)]
enum Kind {
    Replacement(Document),
    Operators(Vec<FieldUpdate>),
    OplogDiff(Document),
}

#[derive(Debug, Clone)]
struct FieldUpdate {
    path: String,
    parts: Vec<String>,
    op: Op,
}

#[derive(Debug, Clone)]
enum Op {
    Set(Bson),
    SetOnInsert(Bson),
    Unset,
    Inc(Bson),
    Mul(Bson),
    Min(Bson),
    Max(Bson),
    Rename(String, Vec<String>),
    Push(Push),
    AddToSet(Vec<Bson>),
    Pop(bool),
    Pull(PullCondition),
    PullAll(Vec<Bson>),
    CurrentDate(bool),
    /// `$bit`: `and`/`or`/`xor` with integer operands, applied in order.
    Bit(Vec<(BitOp, Bson)>),
}

#[derive(Debug, Clone, Copy)]
enum BitOp {
    And,
    Or,
    Xor,
}

#[derive(Debug, Clone)]
struct Push {
    each: Vec<Bson>,
    slice: Option<i64>,
    position: Option<i64>,
    sort: Option<PushSort>,
}

#[derive(Debug, Clone)]
enum PushSort {
    Values(bool),
    Fields(SortSpec),
}

#[derive(Debug, Clone)]
enum PullCondition {
    /// A value or operator document applied to each element as a value.
    Value(Pred),
    /// A query applied to elements that are documents.
    Query(Expr),
}

fn parse_error(message: impl Into<String>) -> QueryError {
    QueryError::failed_to_parse(message)
}

fn type_name_of(value: &Bson) -> &'static str {
    type_name(Some(value))
}

impl Update {
    /// Parses an update: an operator document (first key starts with `$`) or a replacement.
    pub fn parse(update: &Document) -> Result<Update, QueryError> {
        let is_operator_form = update.keys().next().is_some_and(|k| k.starts_with('$'));
        if !is_operator_form {
            if let Some(k) = update.keys().find(|k| k.starts_with('$')) {
                return Err(QueryError::new(
                    52,
                    format!(
                        "The dollar ($) prefixed field '{k}' in '{k}' is not allowed in the context of an update's replacement document. Consider using an aggregation pipeline with $replaceWith."
                    ),
                ));
            }
            return Ok(Update {
                kind: Kind::Replacement(update.clone()),
                array_filters: Vec::new(),
            });
        }
        if let Some(version) = update.get("$v")
            && integral_value(version) == Some(2)
        {
            return match update.get("diff") {
                Some(Bson::Document(diff)) => Ok(Update {
                    kind: Kind::OplogDiff(diff.clone()),
                    array_filters: Vec::new(),
                }),
                _ => Err(parse_error("a $v: 2 update must have a 'diff' document")),
            };
        }
        let mut fields = Vec::new();
        for (operator, operand) in update {
            if operator == "$v" {
                continue;
            }
            let Bson::Document(operand) = operand else {
                return Err(parse_error(format!(
                    "Modifiers operate on fields but we found type {} instead. For example: {{$mod: {{<field>: ...}}}} not {{{operator}: {operand}}}",
                    type_name_of(operand)
                )));
            };
            for (path, arg) in operand {
                validate_path(path)?;
                let op = parse_operator(operator, path, arg)?;
                fields.push(FieldUpdate {
                    path: path.clone(),
                    parts: path.split('.').map(str::to_owned).collect(),
                    op,
                });
            }
        }
        check_conflicts(&fields)?;
        fields.sort_by(|a, b| compare_paths(&a.parts, &b.parts));
        Ok(Update {
            kind: Kind::Operators(fields),
            array_filters: Vec::new(),
        })
    }

    /// Parses an update together with the `arrayFilters` option
    /// (<https://www.mongodb.com/docs/manual/reference/operator/update/positional-filtered/>):
    /// each filter names one identifier used as `$[<identifier>]` in the update's paths.
    pub fn parse_with_array_filters(update: &Document, array_filters: &[Document]) -> Result<Update, QueryError> {
        let mut parsed = Update::parse(update)?;
        for spec in array_filters {
            let id = array_filter_identifier(spec)?;
            if parsed.array_filters.iter().any(|(existing, _)| *existing == id) {
                return Err(parse_error(format!(
                    "Found multiple array filters with the same top-level field name {id}"
                )));
            }
            parsed.array_filters.push((id, Filter::parse(spec)?));
        }
        let used: Vec<String> = match &parsed.kind {
            Kind::Operators(fields) => fields
                .iter()
                .flat_map(|f| f.parts.iter())
                .filter_map(|p| p.strip_prefix("$[").and_then(|r| r.strip_suffix(']')))
                .filter(|id| !id.is_empty())
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        if let Some(id) = used
            .iter()
            .find(|id| !parsed.array_filters.iter().any(|(f, _)| f == *id))
        {
            let path = match &parsed.kind {
                Kind::Operators(fields) => fields
                    .iter()
                    .find(|f| f.parts.iter().any(|p| *p == format!("$[{id}]")))
                    .map(|f| f.path.clone())
                    .unwrap_or_default(),
                _ => String::new(),
            };
            return Err(QueryError::bad_value(format!(
                "No array filter found for identifier '{id}' in path '{path}'"
            )));
        }
        if let Some((id, _)) = parsed.array_filters.iter().find(|(id, _)| !used.contains(id)) {
            return Err(parse_error(format!(
                "The array filter for identifier '{id}' was not used in the update {update}"
            )));
        }
        Ok(parsed)
    }

    /// Whether this is a replacement document rather than operators.
    pub fn is_replacement(&self) -> bool {
        matches!(self.kind, Kind::Replacement(_))
    }

    /// The replacement document, when this is a replacement.
    pub fn replacement(&self) -> Option<&Document> {
        match &self.kind {
            Kind::Replacement(d) => Some(d),
            _ => None,
        }
    }

    /// Builds the document an upsert inserts when `filter` matched nothing
    /// (<https://www.mongodb.com/docs/manual/reference/method/db.collection.updateOne/#upsert>):
    /// a replacement is inserted as is, taking `_id` from the filter's equality fields when it has
    /// none; operators are applied (with `$setOnInsert`) to the filter's equality fields. `_id`,
    /// when present, is moved first. Generating a missing `_id` is left to the caller.
    pub fn upsert_document(&self, filter: &crate::Filter) -> Result<Document, QueryError> {
        let seed = filter.equality_fields();
        let mut doc = match &self.kind {
            Kind::Replacement(replacement) => {
                let mut doc = replacement.clone();
                if !doc.contains_key("_id")
                    && let Some(id) = seed.get("_id")
                {
                    doc.insert("_id", id.clone());
                }
                doc
            }
            _ => {
                let mut doc = seed;
                self.apply(&mut doc, true)?;
                doc
            }
        };
        if let Some(id) = doc.remove("_id") {
            let mut ordered = Document::new();
            ordered.insert("_id", id);
            ordered.extend(doc);
            doc = ordered;
        }
        Ok(doc)
    }

    /// Applies the update to `doc`; `is_upsert_insert` enables `$setOnInsert` and allows setting
    /// an `_id` the document does not have yet. Returns whether the document changed. On error
    /// the document is left unchanged.
    pub fn apply(&self, doc: &mut Document, is_upsert_insert: bool) -> Result<bool, QueryError> {
        self.apply_with_filter(doc, is_upsert_insert, None)
    }

    /// Like [`Update::apply`], with the query that selected `doc`, which the positional `$`
    /// operator needs to know which array element matched.
    pub fn apply_with_filter(
        &self,
        doc: &mut Document,
        is_upsert_insert: bool,
        query: Option<&Filter>,
    ) -> Result<bool, QueryError> {
        let original_id = doc.get("_id").cloned();
        let mut updated = match &self.kind {
            Kind::Replacement(replacement) => {
                let mut out = Document::new();
                match (&original_id, replacement.get("_id")) {
                    (Some(old), Some(new)) if !same_id(old, new) => {
                        return Err(QueryError::new(
                            IMMUTABLE_FIELD,
                            format!(
                                "After applying the update, the (immutable) field '_id' was found to have been altered to _id: {new}"
                            ),
                        ));
                    }
                    (Some(old), _) => {
                        out.insert("_id", old.clone());
                    }
                    (None, _) => {}
                }
                for (k, v) in replacement {
                    if !(k == "_id" && out.contains_key("_id")) {
                        out.insert(k.clone(), v.clone());
                    }
                }
                out
            }
            Kind::Operators(fields) => {
                let mut work = doc.clone();
                for field in fields {
                    if field.parts.iter().any(|p| is_positional(p)) {
                        let concrete =
                            expand_positional(&work, &field.parts, &self.array_filters, query, is_upsert_insert)?;
                        for parts in concrete {
                            let one = FieldUpdate {
                                path: parts.join("."),
                                parts,
                                op: field.op.clone(),
                            };
                            apply_field(&mut work, &one, is_upsert_insert, original_id.as_ref())?;
                        }
                    } else {
                        apply_field(&mut work, field, is_upsert_insert, original_id.as_ref())?;
                    }
                }
                if let Some(old) = &original_id {
                    match work.get("_id") {
                        Some(new) if same_id(old, new) => {}
                        _ => {
                            return Err(QueryError::new(
                                IMMUTABLE_FIELD,
                                "Performing an update on the path '_id' would modify the immutable field '_id'",
                            ));
                        }
                    }
                }
                work
            }
            Kind::OplogDiff(diff) => {
                let mut work = doc.clone();
                apply_oplog_diff(&mut work, diff)?;
                work
            }
        };
        let changed = !crate::compare::identical_documents(&updated, doc);
        if changed {
            std::mem::swap(doc, &mut updated);
        }
        Ok(changed)
    }
}

/// `_id` values are the same when they compare equal and have the same BSON type.
fn same_id(a: &Bson, b: &Bson) -> bool {
    a.element_type() == b.element_type() && compare_values(a, b) == Ordering::Equal
}

fn validate_path(path: &str) -> Result<(), QueryError> {
    if path.is_empty() {
        return Err(QueryError::new(56, "An empty update path is not valid."));
    }
    if path.split('.').any(str::is_empty) {
        return Err(QueryError::new(
            56,
            format!("The update path '{path}' contains an empty field name, which is not allowed."),
        ));
    }
    let mut dollars = 0;
    for part in path.split('.') {
        if part == "$" {
            dollars += 1;
        } else if let Some(inner) = part.strip_prefix("$[") {
            let id = inner.strip_suffix(']').unwrap_or("?");
            let valid = id.is_empty()
                || (id.starts_with(|c: char| c.is_ascii_lowercase()) && id.chars().all(|c| c.is_ascii_alphanumeric()));
            if !valid {
                return Err(QueryError::bad_value(format!(
                    "The array filter identifier in path '{path}' must be an alphanumeric string beginning with a lowercase letter, found '{part}'"
                )));
            }
        }
    }
    if dollars > 1 {
        return Err(QueryError::bad_value(format!(
            "Too many positional (i.e. '$') elements found in path '{path}'"
        )));
    }
    if path == "$" || path.starts_with("$.") || path.starts_with("$[") {
        return Err(QueryError::bad_value(format!(
            "Cannot have array filter identifier (i.e. '$[<id>]') or positional operator as the first element of a path: '{path}'"
        )));
    }
    Ok(())
}

/// `$`, `$[]` and `$[<identifier>]` path components.
fn is_positional(part: &str) -> bool {
    part == "$" || (part.starts_with("$[") && part.ends_with(']'))
}

/// The identifier an `arrayFilters` document constrains (the first component of its fields).
fn array_filter_identifier(spec: &Document) -> Result<String, QueryError> {
    let mut found: Option<String> = None;
    for (key, value) in spec {
        let id = if key.starts_with('$') {
            match value {
                Bson::Array(items) => match items.first() {
                    Some(Bson::Document(d)) => array_filter_identifier(d)?,
                    _ => continue,
                },
                _ => continue,
            }
        } else {
            key.split('.').next().unwrap_or_default().to_owned()
        };
        match &found {
            Some(existing) if *existing != id => {
                return Err(parse_error(format!(
                    "Error parsing array filter :: caused by :: Expected a single top-level field name, found '{existing}' and '{id}'"
                )));
            }
            _ => found = Some(id),
        }
    }
    found.ok_or_else(|| parse_error("Cannot use an expression without a top-level field name in arrayFilters"))
}

/// Turns a path with positional components into the concrete paths it designates in `doc`.
fn expand_positional(
    doc: &Document,
    parts: &[String],
    array_filters: &[(String, Filter)],
    query: Option<&Filter>,
    is_upsert_insert: bool,
) -> Result<Vec<Vec<String>>, QueryError> {
    let mut pending: Vec<Vec<String>> = vec![Vec::new()];
    for part in parts {
        if !is_positional(part) {
            pending.iter_mut().for_each(|p| p.push(part.clone()));
            continue;
        }
        let mut next = Vec::new();
        for prefix in pending {
            let joined = prefix.join(".");
            let items = match crate::path::lookup_path(doc, &joined) {
                Some(Bson::Array(items)) => items,
                None if part == "$" && !is_upsert_insert => {
                    return Err(QueryError::bad_value(
                        "The positional operator did not find the match needed from the query.",
                    ));
                }
                None => {
                    return Err(QueryError::bad_value(format!(
                        "The path '{joined}' must exist in the document in order to apply array updates."
                    )));
                }
                Some(other) => {
                    let last = prefix.last().cloned().unwrap_or_default();
                    return Err(QueryError::bad_value(format!(
                        "Cannot apply array updates to non-array element {last}: {other}"
                    )));
                }
            };
            let indexes: Vec<usize> = if part == "$" {
                let position = query.and_then(|q| q.positional_match(doc, &prefix)).ok_or_else(|| {
                    QueryError::bad_value("The positional operator did not find the match needed from the query.")
                })?;
                vec![position]
            } else if part == "$[]" {
                (0..items.len()).collect()
            } else {
                let id = &part[2..part.len() - 1];
                let filter = array_filters
                    .iter()
                    .find(|(f, _)| f == id)
                    .map(|(_, f)| f)
                    .ok_or_else(|| {
                        QueryError::bad_value(format!(
                            "No array filter found for identifier '{id}' in path '{}'",
                            parts.join(".")
                        ))
                    })?;
                items
                    .iter()
                    .enumerate()
                    .filter(|(_, item)| {
                        let mut wrapper = Document::new();
                        wrapper.insert(id, (*item).clone());
                        filter.matches(&wrapper)
                    })
                    .map(|(i, _)| i)
                    .collect()
            };
            for i in indexes {
                let mut p = prefix.clone();
                p.push(i.to_string());
                next.push(p);
            }
        }
        pending = next;
    }
    Ok(pending)
}

/// Orders paths component by component; numeric components compare numerically.
fn compare_paths(a: &[String], b: &[String]) -> Ordering {
    for (x, y) in a.iter().zip(b.iter()) {
        let ord = match (array_index(x), array_index(y)) {
            (Some(i), Some(j)) => i.cmp(&j),
            _ => x.as_bytes().cmp(y.as_bytes()),
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    a.len().cmp(&b.len())
}

fn check_conflicts(fields: &[FieldUpdate]) -> Result<(), QueryError> {
    let mut paths: Vec<&[String]> = Vec::new();
    for f in fields {
        paths.push(&f.parts);
        if let Op::Rename(_, to) = &f.op {
            paths.push(to);
        }
    }
    for (i, a) in paths.iter().enumerate() {
        for b in &paths[..i] {
            let shorter = a.len().min(b.len());
            if a[..shorter] == b[..shorter] {
                return Err(QueryError::new(
                    CONFLICTING_UPDATE_OPERATORS,
                    format!(
                        "Updating the path '{}' would create a conflict at '{}'",
                        a.join("."),
                        a[..shorter].join(".")
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn parse_operator(operator: &str, path: &str, arg: &Bson) -> Result<Op, QueryError> {
    let numeric = |name: &str| -> Result<Bson, QueryError> {
        if Number::of(arg).is_some() {
            Ok(arg.clone())
        } else {
            Err(QueryError::type_mismatch(format!(
                "Cannot {name} with non-numeric argument: {{{path}: {arg}}}"
            )))
        }
    };
    Ok(match operator {
        "$set" => Op::Set(arg.clone()),
        "$setOnInsert" => Op::SetOnInsert(arg.clone()),
        "$unset" => Op::Unset,
        "$inc" => Op::Inc(numeric("increment")?),
        "$mul" => Op::Mul(numeric("multiply")?),
        "$min" => Op::Min(arg.clone()),
        "$max" => Op::Max(arg.clone()),
        "$rename" => {
            let Bson::String(to) = arg else {
                return Err(QueryError::bad_value(format!(
                    "The 'to' field for $rename must be a string: {path}: {arg}"
                )));
            };
            validate_path(to)?;
            if path.split('.').any(is_positional) || to.split('.').any(is_positional) {
                return Err(QueryError::bad_value(format!(
                    "The source and target field for $rename may not be dynamic: {path}: \"{to}\""
                )));
            }
            if to == path {
                return Err(QueryError::bad_value(format!(
                    "The source and target field for $rename must differ: {path}: \"{to}\""
                )));
            }
            let (from_parts, to_parts): (Vec<&str>, Vec<&str>) = (path.split('.').collect(), to.split('.').collect());
            let shorter = from_parts.len().min(to_parts.len());
            if from_parts[..shorter] == to_parts[..shorter] {
                return Err(QueryError::bad_value(format!(
                    "The source and target field for $rename must not be on the same path: {path}: \"{to}\""
                )));
            }
            Op::Rename(to.clone(), to.split('.').map(str::to_owned).collect())
        }
        "$push" => Op::Push(parse_push(arg)?),
        "$addToSet" => match arg {
            Bson::Document(d) if d.contains_key("$each") => match d.get("$each") {
                Some(Bson::Array(items)) if d.len() == 1 => Op::AddToSet(items.clone()),
                Some(Bson::Array(_)) => {
                    let extra = d.keys().find(|k| *k != "$each").cloned().unwrap_or_default();
                    return Err(QueryError::bad_value(format!(
                        "Found unexpected fields after $each in $addToSet: {extra}"
                    )));
                }
                Some(other) => {
                    return Err(QueryError::type_mismatch(format!(
                        "The argument to $each in $addToSet must be an array but it was of type {}",
                        type_name_of(other)
                    )));
                }
                None => Op::AddToSet(vec![arg.clone()]),
            },
            single => Op::AddToSet(vec![single.clone()]),
        },
        "$pop" => match integral_value(arg) {
            Some(1) => Op::Pop(false),
            Some(-1) => Op::Pop(true),
            _ => return Err(parse_error(format!("$pop expects 1 or -1, found: {arg}"))),
        },
        "$pull" => Op::Pull(match arg {
            Bson::Document(d) if !is_operator_doc(d) => PullCondition::Query(parse_filter_expr(d)?),
            other => PullCondition::Value(parse_field_value(other)?),
        }),
        "$pullAll" => match arg {
            Bson::Array(items) => Op::PullAll(items.clone()),
            other => {
                return Err(QueryError::bad_value(format!(
                    "$pullAll requires an array argument but was given a {}",
                    type_name_of(other)
                )));
            }
        },
        "$bit" => {
            let Bson::Document(spec) = arg else {
                return Err(QueryError::bad_value(format!(
                    "The $bit modifier is not compatible with a {}. You must pass in an embedded document: {{$bit: {{field: {{and/or/xor: #}}}}",
                    type_name_of(arg)
                )));
            };
            if spec.is_empty() {
                return Err(QueryError::bad_value(format!(
                    "You must pass in at least one bitwise operation. The format is: {{$bit: {{field: {{and/or/xor: #}}}} (field '{path}')"
                )));
            }
            let mut ops = Vec::new();
            for (name, operand) in spec {
                let op = match name.as_str() {
                    "and" => BitOp::And,
                    "or" => BitOp::Or,
                    "xor" => BitOp::Xor,
                    other => {
                        return Err(QueryError::bad_value(format!(
                            "The $bit modifier only supports 'and', 'or', and 'xor', not '{other}' which is an unknown operator: {{{other}: {operand}}}"
                        )));
                    }
                };
                if !matches!(operand, Bson::Int32(_) | Bson::Int64(_)) {
                    return Err(QueryError::bad_value(format!(
                        "The $bit modifier field must be an Integer(32/64 bit); a '{}' is not supported here: {{{name}: {operand}}}",
                        type_name_of(operand)
                    )));
                }
                ops.push((op, operand.clone()));
            }
            Op::Bit(ops)
        }
        "$currentDate" => match arg {
            Bson::Boolean(_) => Op::CurrentDate(false),
            Bson::Document(d) => match d.get("$type") {
                Some(Bson::String(t)) if t == "date" && d.len() == 1 => Op::CurrentDate(false),
                Some(Bson::String(t)) if t == "timestamp" && d.len() == 1 => Op::CurrentDate(true),
                _ => {
                    return Err(QueryError::bad_value(
                        "The '$type' string field is required to be 'date' or 'timestamp': {$currentDate: {field : {$type: 'date'}}}",
                    ));
                }
            },
            other => {
                return Err(QueryError::bad_value(format!(
                    "{} is not valid type for $currentDate. Please use a boolean ('true') or a $type expression ({{$type: 'timestamp/date'}}).",
                    type_name_of(other)
                )));
            }
        },
        other => {
            return Err(parse_error(format!(
                "Unknown modifier: {other}. Expected a valid update modifier or pipeline-style update specified as an array"
            )));
        }
    })
}

fn parse_push(arg: &Bson) -> Result<Push, QueryError> {
    let spec = match arg {
        Bson::Document(d) if d.contains_key("$each") => d,
        single => {
            return Ok(Push {
                each: vec![single.clone()],
                slice: None,
                position: None,
                sort: None,
            });
        }
    };
    let mut push = Push {
        each: Vec::new(),
        slice: None,
        position: None,
        sort: None,
    };
    for (k, v) in spec {
        match k.as_str() {
            "$each" => match v {
                Bson::Array(items) => push.each = items.clone(),
                other => {
                    return Err(QueryError::bad_value(format!(
                        "The argument to $each in $push must be an array but it was of type: {}",
                        type_name_of(other)
                    )));
                }
            },
            "$slice" => {
                push.slice = Some(integral_value(v).ok_or_else(|| {
                    QueryError::bad_value(format!(
                        "The value for $slice must be an integer value but was given type: {}",
                        type_name_of(v)
                    ))
                })?);
            }
            "$position" => {
                push.position = Some(integral_value(v).ok_or_else(|| {
                    QueryError::bad_value(format!(
                        "The value for $position must be an integer value, not of type: {}",
                        type_name_of(v)
                    ))
                })?);
            }
            "$sort" => {
                push.sort = Some(match v {
                    Bson::Document(fields) => {
                        if fields.is_empty() {
                            return Err(QueryError::bad_value(
                                "The $sort pattern is empty when it should be a set of fields.",
                            ));
                        }
                        PushSort::Fields(
                            SortSpec::parse(fields)
                                .map_err(|_| QueryError::bad_value("The $sort element value must be either 1 or -1"))?,
                        )
                    }
                    other => match integral_value(other) {
                        Some(1) => PushSort::Values(true),
                        Some(-1) => PushSort::Values(false),
                        _ => {
                            return Err(QueryError::bad_value(
                                "The $sort is invalid: use 1/-1 to sort the whole element, or {field:1/-1} to sort embedded fields",
                            ));
                        }
                    },
                });
            }
            other => return Err(QueryError::bad_value(format!("Unrecognized clause in $push: {other}"))),
        }
    }
    Ok(push)
}

/// A mutable container along a path.
enum Container<'a> {
    Doc(&'a mut Document),
    Arr(&'a mut Vec<Bson>),
}

/// The place a path ends at: a field of a document or an element of an array.
enum Slot<'a> {
    Field(&'a mut Document, &'a str),
    Element(&'a mut Vec<Bson>, usize),
}

impl Slot<'_> {
    fn get(&self) -> Option<&Bson> {
        match self {
            Slot::Field(d, k) => d.get(*k),
            Slot::Element(a, i) => a.get(*i),
        }
    }

    fn get_mut(&mut self) -> Option<&mut Bson> {
        match self {
            Slot::Field(d, k) => d.get_mut(*k),
            Slot::Element(a, i) => a.get_mut(*i),
        }
    }

    fn set(&mut self, value: Bson) {
        match self {
            Slot::Field(d, k) => {
                d.insert(*k, value);
            }
            Slot::Element(a, i) => {
                while a.len() <= *i {
                    a.push(Bson::Null);
                }
                a[*i] = value;
            }
        }
    }

    /// `$unset` removes a field; on an array element it sets `null` (the array keeps its length).
    fn remove(&mut self) -> Option<Bson> {
        match self {
            Slot::Field(d, k) => d.remove(*k),
            Slot::Element(a, i) => a.get_mut(*i).map(|e| std::mem::replace(e, Bson::Null)),
        }
    }

    fn name(&self) -> String {
        match self {
            Slot::Field(_, k) => (*k).to_owned(),
            Slot::Element(_, i) => i.to_string(),
        }
    }
}

/// MongoDB refuses to pad an array with more than this many nulls to reach an index.
pub(crate) const MAX_PADDING: usize = 1_500_000;

fn check_padding(len: usize, index: usize) -> Result<(), QueryError> {
    if index.saturating_sub(len) > MAX_PADDING {
        return Err(QueryError::bad_value(format!(
            "can't backfill more than {MAX_PADDING} elements (array of length {len}, index {index})"
        )));
    }
    Ok(())
}

fn cannot_create(field: &str, parent: &str, value: &Bson) -> QueryError {
    QueryError::new(
        PATH_NOT_VIABLE,
        format!("Cannot create field '{field}' in element {{{parent}: {value}}}"),
    )
}

/// Walks to the slot for `parts`. With `create`, missing documents are created and arrays padded;
/// without, `Ok(None)` means the path does not exist.
fn navigate<'a>(doc: &'a mut Document, parts: &'a [String], create: bool) -> Result<Option<Slot<'a>>, QueryError> {
    let Some((last, inner)) = parts.split_last() else {
        return Ok(None);
    };
    let mut current = Container::Doc(doc);
    for (i, part) in inner.iter().enumerate() {
        let next_name = &parts[i + 1];
        let child: &'a mut Bson = match current {
            Container::Doc(d) => {
                if !d.contains_key(part) {
                    if !create {
                        return Ok(None);
                    }
                    d.insert(part.clone(), Document::new());
                }
                match d.get_mut(part) {
                    Some(c) => c,
                    None => return Ok(None),
                }
            }
            Container::Arr(a) => {
                let Some(index) = array_index(part) else {
                    if create {
                        return Err(cannot_create(part, &parts[..i].join("."), &Bson::Array(a.clone())));
                    }
                    return Ok(None);
                };
                if index >= a.len() {
                    if !create {
                        return Ok(None);
                    }
                    check_padding(a.len(), index)?;
                    while a.len() < index {
                        a.push(Bson::Null);
                    }
                    a.push(Bson::Document(Document::new()));
                }
                match a.get_mut(index) {
                    Some(c) => c,
                    None => return Ok(None),
                }
            }
        };
        current = match child {
            Bson::Document(d) => Container::Doc(d),
            Bson::Array(a) => Container::Arr(a),
            other => {
                if create {
                    return Err(cannot_create(next_name, part, other));
                }
                return Ok(None);
            }
        };
    }
    match current {
        Container::Doc(d) => Ok(Some(Slot::Field(d, last.as_str()))),
        Container::Arr(a) => match array_index(last) {
            Some(index) => {
                if create {
                    check_padding(a.len(), index)?;
                }
                Ok(Some(Slot::Element(a, index)))
            }
            None if create => {
                let parent = parts[..parts.len() - 1].join(".");
                Err(cannot_create(last, &parent, &Bson::Array(a.clone())))
            }
            None => Ok(None),
        },
    }
}

/// Whether any value strictly before the end of the path is an array.
fn path_crosses_array(doc: &Document, parts: &[String]) -> bool {
    let mut current: Option<&Bson> = None;
    for (i, part) in parts.iter().enumerate() {
        let next = match current {
            None if i == 0 => doc.get(part),
            Some(Bson::Document(d)) => d.get(part),
            Some(Bson::Array(_)) => return true,
            _ => return false,
        };
        match next {
            Some(v) => current = Some(v),
            None => return false,
        }
    }
    false
}

fn id_for_message(id: Option<&Bson>) -> String {
    match id {
        Some(v) => format!("{{_id: {v}}}"),
        None => "{}".to_owned(),
    }
}

fn apply_field(
    doc: &mut Document,
    field: &FieldUpdate,
    is_upsert_insert: bool,
    id: Option<&Bson>,
) -> Result<(), QueryError> {
    let parts = &field.parts;
    match &field.op {
        Op::Set(value) => set_value(doc, parts, value.clone()),
        Op::SetOnInsert(value) => {
            if is_upsert_insert {
                set_value(doc, parts, value.clone())
            } else {
                Ok(())
            }
        }
        Op::Unset => {
            if let Some(mut slot) = navigate(doc, parts, false)? {
                slot.remove();
            }
            Ok(())
        }
        Op::Inc(n) | Op::Mul(n) => {
            let is_inc = matches!(field.op, Op::Inc(_));
            let mut slot = navigate(doc, parts, true)?.ok_or_else(|| cannot_create(&field.path, "", &Bson::Null))?;
            let name = if is_inc { "$inc" } else { "$mul" };
            let value = match slot.get() {
                None if is_inc => n.clone(),
                // $mul on a missing field sets zero of the multiplier's type.
                None => arith::mul(n, &Bson::Int32(0))
                    .map_err(|_| QueryError::type_mismatch(format!("Cannot apply {name} to {n}")))?,
                Some(current) => {
                    let r = if is_inc {
                        arith::inc(current, n)
                    } else {
                        arith::mul(current, n)
                    };
                    r.map_err(|e| match e {
                        ArithError::NonNumeric => QueryError::type_mismatch(format!(
                            "Cannot apply {name} to a value of non-numeric type. {} has the field '{}' of non-numeric type {}",
                            id_for_message(id),
                            slot.name(),
                            type_name_of(current)
                        )),
                        ArithError::Overflow => QueryError::bad_value(format!(
                            "Failed to apply {name} operations to current value ({current}) for document {}",
                            id_for_message(id)
                        )),
                    })?
                }
            };
            slot.set(value);
            Ok(())
        }
        Op::Min(v) | Op::Max(v) => {
            let want = if matches!(field.op, Op::Min(_)) {
                Ordering::Less
            } else {
                Ordering::Greater
            };
            let mut slot = navigate(doc, parts, true)?.ok_or_else(|| cannot_create(&field.path, "", &Bson::Null))?;
            let replace = match slot.get() {
                None => true,
                Some(current) => compare_values(v, current) == want,
            };
            if replace {
                slot.set(v.clone());
            }
            Ok(())
        }
        Op::Rename(to, to_parts) => {
            if path_crosses_array(doc, parts) {
                return Err(QueryError::bad_value(format!(
                    "The source field cannot be an array element, '{}' in doc with {}",
                    field.path,
                    id_for_message(id)
                )));
            }
            let Some(mut source) = navigate(doc, parts, false)? else {
                return Ok(());
            };
            let Some(value) = source.remove() else {
                return Ok(());
            };
            if path_crosses_array(doc, to_parts) {
                return Err(QueryError::bad_value(format!(
                    "The destination field cannot be an array element, '{to}' in doc with {}",
                    id_for_message(id)
                )));
            }
            set_value(doc, to_parts, value)
        }
        Op::Push(push) => {
            let mut slot = navigate(doc, parts, true)?.ok_or_else(|| cannot_create(&field.path, "", &Bson::Null))?;
            let name = slot.name();
            if slot.get().is_none() {
                slot.set(Bson::Array(Vec::new()));
            }
            let Some(Bson::Array(items)) = slot.get_mut() else {
                let found = slot.get().map(type_name_of).unwrap_or("missing");
                return Err(QueryError::bad_value(format!(
                    "The field '{name}' must be an array but is of type {found} in document {}",
                    id_for_message(id)
                )));
            };
            apply_push(items, push);
            Ok(())
        }
        Op::AddToSet(values) => {
            let mut slot = navigate(doc, parts, true)?.ok_or_else(|| cannot_create(&field.path, "", &Bson::Null))?;
            let name = slot.name();
            if slot.get().is_none() {
                slot.set(Bson::Array(Vec::new()));
            }
            let Some(Bson::Array(items)) = slot.get_mut() else {
                let found = slot.get().map(type_name_of).unwrap_or("missing");
                return Err(QueryError::bad_value(format!(
                    "Cannot apply $addToSet to non-array field. Field named '{name}' has non-array type {found}"
                )));
            };
            for v in values {
                if !items.iter().any(|e| compare_values(e, v) == Ordering::Equal) {
                    items.push(v.clone());
                }
            }
            Ok(())
        }
        Op::Pop(first) => {
            let Some(mut slot) = navigate(doc, parts, false)? else {
                return Ok(());
            };
            match slot.get_mut() {
                None => Ok(()),
                Some(Bson::Array(items)) => {
                    if !items.is_empty() {
                        if *first {
                            items.remove(0);
                        } else {
                            items.pop();
                        }
                    }
                    Ok(())
                }
                Some(other) => Err(QueryError::type_mismatch(format!(
                    "Path '{}' contains an element of non-array type '{}'",
                    field.path,
                    type_name_of(other)
                ))),
            }
        }
        Op::Pull(_) | Op::PullAll(_) => {
            let Some(mut slot) = navigate(doc, parts, false)? else {
                return Ok(());
            };
            match slot.get_mut() {
                None => Ok(()),
                Some(Bson::Array(items)) => {
                    items.retain(|e| !pull_matches(&field.op, e));
                    Ok(())
                }
                Some(_) => Err(QueryError::bad_value("Cannot apply $pull to a non-array value")),
            }
        }
        Op::Bit(ops) => {
            let mut slot = navigate(doc, parts, true)?.ok_or_else(|| cannot_create(&field.path, "", &Bson::Null))?;
            // A missing field starts from zero of the first operand's type.
            let mut value = match slot.get() {
                None => match ops.first() {
                    Some((_, Bson::Int64(_))) => Bson::Int64(0),
                    _ => Bson::Int32(0),
                },
                Some(current @ (Bson::Int32(_) | Bson::Int64(_))) => current.clone(),
                Some(other) => {
                    return Err(QueryError::bad_value(format!(
                        "Cannot apply $bit to a value of non-integral type.{} has the field {} of non-integer type {}",
                        id_for_message(id),
                        slot.name(),
                        type_name_of(other)
                    )));
                }
            };
            for (op, operand) in ops {
                value = bitwise(*op, &value, operand);
            }
            slot.set(value);
            Ok(())
        }
        Op::CurrentDate(timestamp) => {
            let now = bson::DateTime::now();
            let value = if *timestamp {
                let secs = u32::try_from(now.timestamp_millis().div_euclid(1000)).unwrap_or(u32::MAX);
                Bson::Timestamp(bson::Timestamp {
                    time: secs,
                    increment: 1,
                })
            } else {
                Bson::DateTime(now)
            };
            set_value(doc, parts, value)
        }
    }
}

/// `$bit` on integers: int32 with int32 stays int32, anything with an int64 is an int64.
fn bitwise(op: BitOp, a: &Bson, b: &Bson) -> Bson {
    let apply64 = |x: i64, y: i64| match op {
        BitOp::And => x & y,
        BitOp::Or => x | y,
        BitOp::Xor => x ^ y,
    };
    match (a, b) {
        (Bson::Int32(x), Bson::Int32(y)) => Bson::Int32(match op {
            BitOp::And => x & y,
            BitOp::Or => x | y,
            BitOp::Xor => x ^ y,
        }),
        _ => {
            let wide = |v: &Bson| match v {
                Bson::Int32(i) => i64::from(*i),
                Bson::Int64(i) => *i,
                _ => 0,
            };
            Bson::Int64(apply64(wide(a), wide(b)))
        }
    }
}

fn set_value(doc: &mut Document, parts: &[String], value: Bson) -> Result<(), QueryError> {
    if let Some(mut slot) = navigate(doc, parts, true)? {
        slot.set(value);
    }
    Ok(())
}

fn pull_matches(op: &Op, element: &Bson) -> bool {
    match op {
        Op::Pull(PullCondition::Value(pred)) => pred.matches_field(&[Some(element)]),
        Op::Pull(PullCondition::Query(expr)) => matches!(element, Bson::Document(d) if expr.matches(d)),
        Op::PullAll(values) => values.iter().any(|v| compare_values(v, element) == Ordering::Equal),
        _ => false,
    }
}

fn apply_push(items: &mut Vec<Bson>, push: &Push) {
    let len = i64::try_from(items.len()).unwrap_or(i64::MAX);
    let position = match push.position {
        None => len,
        Some(p) if p < 0 => len.saturating_add(p).max(0),
        Some(p) => p.min(len),
    };
    let at = usize::try_from(position).unwrap_or(items.len()).min(items.len());
    let tail = items.split_off(at);
    items.extend(push.each.iter().cloned());
    items.extend(tail);
    match &push.sort {
        Some(PushSort::Values(ascending)) => items.sort_by(|a, b| {
            let ord = compare_values(a, b);
            if *ascending { ord } else { ord.reverse() }
        }),
        Some(PushSort::Fields(spec)) => {
            let empty = Document::new();
            items.sort_by(|a, b| {
                let da = a.as_document().unwrap_or(&empty);
                let db = b.as_document().unwrap_or(&empty);
                spec.compare(da, db)
            });
        }
        None => {}
    }
    if let Some(slice) = push.slice {
        let n = usize::try_from(slice.unsigned_abs()).unwrap_or(usize::MAX);
        if slice >= 0 {
            items.truncate(n);
        } else if items.len() > n {
            items.drain(..items.len() - n);
        }
    }
}

#[cfg(test)]
mod tests;
