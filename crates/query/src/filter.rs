//! Query filters: MongoDB's predicate language.
//!
//! A filter document (<https://www.mongodb.com/docs/manual/reference/operator/query/>) is parsed
//! once into an expression tree ([`Filter::parse`]) and then evaluated against documents
//! ([`Filter::matches`]). Parsing reports the errors MongoDB reports (`unknown operator: $foo`,
//! malformed operator arguments) with MongoDB's codes.
//!
//! Evaluation follows MongoDB's array semantics. A field path yields one or more candidate values
//! (see [`crate::path::path_candidates`]); a predicate on the field matches when any candidate
//! matches, and a candidate that is an array also matches when one of its elements does (so
//! `{tags: "red"}` matches `{tags: ["red", "blank"]}` and `{tags: ["red", "blank"]}` matches the
//! whole array). `$size` and `$elemMatch` look at arrays only as a whole. Negations (`$ne`,
//! `$nin`, `$not`) negate the whole-field result, so `{qty: {$ne: 20}}` rejects `{qty: [20, 5]}`.
//! Comparison operators only compare within a type bracket (`{a: {$gt: 5}}` never matches a
//! string). Equality with `null` also matches missing fields.
//!
//! Also supported: `$expr` (with the aggregation expressions of [`crate::expr`]) and
//! `$jsonSchema` (see [`crate::schema`]). `$where` (server-side JavaScript), `$text` and the
//! geospatial operators are rejected with a clear error. Regular expressions are compiled with
//! the `regex` crate, whose syntax covers the commonly used part of PCRE (classes, anchors,
//! repetition, groups, the `i`/`m`/`s`/`x` options) but not look-around or backreferences;
//! such patterns are rejected with MongoDB's "Regular expression is invalid" error (51091).

use std::cmp::Ordering;

use bson::{Bson, Document};

use crate::compare::{Number, canonical_type, compare_values};
use crate::error::QueryError;
use crate::expr::Expression;
use crate::path::{path_candidates, split_path};
use crate::schema::Schema;

/// A parsed query filter.
#[derive(Debug, Clone)]
pub struct Filter {
    root: Expr,
}

#[derive(Debug, Clone)]
pub(crate) enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Nor(Vec<Expr>),
    Field(Vec<String>, Pred),
    Schema(Box<Schema>),
    /// `$expr`: an aggregation expression that must evaluate to a true value.
    Aggregate(Box<Expression>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Gt,
    Gte,
    Lt,
    Lte,
}

#[derive(Debug, Clone)]
pub(crate) enum Pred {
    /// Comparison-order equality (`$eq` or an implicit literal).
    Eq(Bson),
    /// An implicit regex literal `{a: /x/}`: matches strings, or an identical regex value.
    Regex(CompiledRegex),
    Cmp(CmpOp, Bson),
    In(Vec<InItem>),
    Not(Box<Pred>),
    And(Vec<Pred>),
    Exists(bool),
    Type(Vec<TypeSel>),
    Size(usize),
    Mod(i64, i64),
    ElemMatchDoc(Box<Expr>),
    ElemMatchValue(Vec<Pred>),
    /// Matches nothing (`$all: []`).
    Never,
}

#[derive(Debug, Clone)]
pub(crate) enum InItem {
    Value(Bson),
    Regex(CompiledRegex),
}

/// A selector of `$type`: one BSON type number, or every numeric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TypeSel {
    Code(i32),
    Number,
}

/// A regular expression compiled from a BSON regex or `$regex`/`$options`.
#[derive(Debug, Clone)]
pub(crate) struct CompiledRegex {
    source: bson::Regex,
    regex: regex::Regex,
}

impl CompiledRegex {
    /// Compiles `pattern` with MongoDB's options `i`, `m`, `s`, `x` (and the no-op `u`).
    pub(crate) fn new(pattern: &str, options: &str) -> Result<Self, QueryError> {
        let mut builder = regex::RegexBuilder::new(pattern);
        let mut sorted: Vec<char> = Vec::new();
        for flag in options.chars() {
            match flag {
                'i' => builder.case_insensitive(true),
                'm' => builder.multi_line(true),
                's' => builder.dot_matches_new_line(true),
                'x' => builder.ignore_whitespace(true),
                'u' => &mut builder,
                other => {
                    return Err(QueryError::new(
                        51108,
                        format!("invalid flag in regex options: {other}"),
                    ));
                }
            };
            sorted.push(flag);
        }
        sorted.sort_unstable();
        let regex = builder
            .build()
            .map_err(|e| QueryError::new(51091, format!("Regular expression is invalid: {pattern}: {e}")))?;
        Ok(CompiledRegex {
            source: bson::Regex {
                pattern: pattern.to_owned(),
                options: sorted.into_iter().collect(),
            },
            regex,
        })
    }

    /// Whether the value is a string/symbol the expression finds a match in, or the same regex.
    fn matches(&self, value: &Bson) -> bool {
        match value {
            Bson::String(s) | Bson::Symbol(s) => self.regex.is_match(s),
            Bson::RegularExpression(r) => {
                r.pattern == self.source.pattern && sorted_chars(&r.options) == self.source.options
            }
            _ => false,
        }
    }

    /// Whether a string matches.
    pub(crate) fn is_match(&self, s: &str) -> bool {
        self.regex.is_match(s)
    }
}

fn sorted_chars(s: &str) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    chars.sort_unstable();
    chars.into_iter().collect()
}

impl Filter {
    /// Parses a filter document.
    pub fn parse(filter: &Document) -> Result<Filter, QueryError> {
        Ok(Filter {
            root: parse_expr(filter)?,
        })
    }

    /// Whether `doc` satisfies the filter.
    pub fn matches(&self, doc: &Document) -> bool {
        self.root.matches(doc)
    }

    /// The fields the filter fixes by equality, as a document (dotted paths become nested
    /// documents). An upsert that inserts starts from these fields
    /// (<https://www.mongodb.com/docs/manual/reference/method/db.collection.update/#upsert-behavior>).
    pub fn equality_fields(&self) -> Document {
        let mut out = Document::new();
        collect_equalities(&self.root, &mut out);
        out
    }
}

impl Filter {
    /// The index of the first element of the array at `array_parts` that satisfies the filter's
    /// conditions on that array: what the positional `$` update operator refers to
    /// (<https://www.mongodb.com/docs/manual/reference/operator/update/positional/>).
    pub(crate) fn positional_match(&self, doc: &Document, array_parts: &[String]) -> Option<usize> {
        let mut conditions = Vec::new();
        collect_conditions_on(&self.root, array_parts, &mut conditions);
        if conditions.is_empty() {
            return None;
        }
        let Some(Bson::Array(items)) = crate::path::lookup_path(doc, &array_parts.join(".")) else {
            return None;
        };
        items.iter().position(|item| {
            let mut single = doc.clone();
            crate::path::replace_at_path(&mut single, array_parts, Bson::Array(vec![item.clone()]))
                && conditions.iter().all(|c| c.matches(&single))
        })
    }
}

/// Field conditions (under top-level `$and`s) whose path is `prefix` or lies below it.
fn collect_conditions_on<'a>(expr: &'a Expr, prefix: &[String], out: &mut Vec<&'a Expr>) {
    match expr {
        Expr::And(items) => items.iter().for_each(|e| collect_conditions_on(e, prefix, out)),
        Expr::Field(parts, _) if parts.starts_with(prefix) => out.push(expr),
        _ => {}
    }
}

fn collect_equalities(expr: &Expr, out: &mut Document) {
    match expr {
        Expr::And(items) => items.iter().for_each(|e| collect_equalities(e, out)),
        // A single-clause `$or` is the clause itself.
        Expr::Or(items) if items.len() == 1 => items.iter().for_each(|e| collect_equalities(e, out)),
        Expr::Field(parts, pred) => {
            let mut eqs = Vec::new();
            equality_values(pred, &mut eqs);
            if let Some(value) = eqs.into_iter().next() {
                insert_nested(out, parts, value.clone());
            }
        }
        _ => {}
    }
}

fn equality_values<'a>(pred: &'a Pred, out: &mut Vec<&'a Bson>) {
    match pred {
        Pred::Eq(v) => out.push(v),
        Pred::And(items) => items.iter().for_each(|p| equality_values(p, out)),
        Pred::In(items) if items.len() == 1 => {
            if let Some(InItem::Value(v)) = items.first() {
                out.push(v);
            }
        }
        _ => {}
    }
}

/// Inserts `value` at the dotted path, creating documents; skips paths blocked by non-documents.
fn insert_nested(doc: &mut Document, parts: &[String], value: Bson) {
    let Some((first, rest)) = parts.split_first() else {
        return;
    };
    if rest.is_empty() {
        if !doc.contains_key(first) {
            doc.insert(first.clone(), value);
        }
        return;
    }
    let entry = doc
        .entry(first.clone())
        .or_insert_with(|| Bson::Document(Document::new()));
    if let Bson::Document(inner) = entry {
        insert_nested(inner, rest, value);
    }
}

impl Expr {
    pub(crate) fn matches(&self, doc: &Document) -> bool {
        match self {
            Expr::And(items) => items.iter().all(|e| e.matches(doc)),
            Expr::Or(items) => items.iter().any(|e| e.matches(doc)),
            Expr::Nor(items) => !items.iter().any(|e| e.matches(doc)),
            Expr::Field(parts, pred) => pred.matches_field(&path_candidates(doc, parts)),
            Expr::Schema(schema) => schema.matches(doc),
            // Evaluation errors (such as a type error in `$add`) make the document not match.
            Expr::Aggregate(expr) => expr.evaluate(doc).is_ok_and(|v| crate::expr::truthy(&v)),
        }
    }
}

impl Pred {
    /// Whole-field evaluation over the candidates a path produced.
    pub(crate) fn matches_field(&self, candidates: &[Option<&Bson>]) -> bool {
        match self {
            Pred::Not(inner) => !inner.matches_field(candidates),
            Pred::And(items) => items.iter().all(|p| p.matches_field(candidates)),
            Pred::Exists(want) => candidates.iter().any(Option::is_some) == *want,
            Pred::Never => false,
            _ => candidates.iter().any(|c| self.matches_candidate(*c)),
        }
    }

    /// One candidate: missing, a value, or an array whose elements are tried too.
    fn matches_candidate(&self, candidate: Option<&Bson>) -> bool {
        let Some(value) = candidate else {
            return self.matches_missing();
        };
        if self.matches_value(value) {
            return true;
        }
        match (self, value) {
            (Pred::Size(_) | Pred::ElemMatchDoc(_) | Pred::ElemMatchValue(_), _) => false,
            (_, Bson::Array(items)) => items.iter().any(|item| self.matches_value(item)),
            _ => false,
        }
    }

    /// Missing fields compare equal to null for equality, `$in`, `$gte` and `$lte`.
    fn matches_missing(&self) -> bool {
        match self {
            Pred::Eq(Bson::Null) | Pred::Cmp(CmpOp::Gte | CmpOp::Lte, Bson::Null) => true,
            Pred::In(items) => items.iter().any(|i| matches!(i, InItem::Value(Bson::Null))),
            _ => false,
        }
    }

    fn matches_value(&self, value: &Bson) -> bool {
        match self {
            Pred::Eq(target) => compare_values(value, target) == Ordering::Equal,
            Pred::Regex(re) => re.matches(value),
            Pred::Cmp(op, target) => compare_op(*op, value, target),
            Pred::In(items) => items.iter().any(|item| match item {
                InItem::Value(target) => compare_values(value, target) == Ordering::Equal,
                InItem::Regex(re) => re.matches(value),
            }),
            Pred::Type(selectors) => selectors.iter().any(|s| type_matches(*s, value)),
            Pred::Size(n) => matches!(value, Bson::Array(items) if items.len() == *n),
            Pred::Mod(divisor, remainder) => mod_matches(value, *divisor, *remainder),
            Pred::ElemMatchDoc(expr) => match value {
                Bson::Array(items) => items
                    .iter()
                    .any(|item| matches!(item, Bson::Document(d) if expr.matches(d))),
                _ => false,
            },
            Pred::ElemMatchValue(preds) => match value {
                Bson::Array(items) => items
                    .iter()
                    .any(|item| preds.iter().all(|p| p.matches_field(&[Some(item)]))),
                _ => false,
            },
            Pred::Not(_) | Pred::And(_) | Pred::Exists(_) | Pred::Never => self.matches_field(&[Some(value)]),
        }
    }
}

/// Comparison within a type bracket; MinKey and MaxKey operands compare against every type.
fn compare_op(op: CmpOp, value: &Bson, target: &Bson) -> bool {
    // NaN equals NaN but is otherwise unordered for query comparisons: `$gt`/`$lt` never match
    // when either side is NaN, `$gte`/`$lte` only when both are.
    let (value_nan, target_nan) = (is_nan(value), is_nan(target));
    if value_nan || target_nan {
        return matches!(op, CmpOp::Gte | CmpOp::Lte) && value_nan && target_nan;
    }
    let cross_type = matches!(target, Bson::MinKey | Bson::MaxKey);
    if !cross_type && canonical_type(value) != canonical_type(target) {
        return false;
    }
    let ord = compare_values(value, target);
    match op {
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Gte => ord != Ordering::Less,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Lte => ord != Ordering::Greater,
    }
}

fn is_nan(value: &Bson) -> bool {
    match value {
        Bson::Double(d) => d.is_nan(),
        Bson::Decimal128(d) => d.to_string().ends_with("NaN"),
        _ => false,
    }
}

/// The `$type` number of a value (<https://www.mongodb.com/docs/manual/reference/bson-types/>).
pub(crate) fn bson_type_code(value: &Bson) -> i32 {
    match value {
        Bson::Double(_) => 1,
        Bson::String(_) => 2,
        Bson::Document(_) => 3,
        Bson::Array(_) => 4,
        Bson::Binary(_) => 5,
        Bson::Undefined => 6,
        Bson::ObjectId(_) => 7,
        Bson::Boolean(_) => 8,
        Bson::DateTime(_) => 9,
        Bson::Null => 10,
        Bson::RegularExpression(_) => 11,
        Bson::DbPointer(_) => 12,
        Bson::JavaScriptCode(_) => 13,
        Bson::Symbol(_) => 14,
        Bson::JavaScriptCodeWithScope(_) => 15,
        Bson::Int32(_) => 16,
        Bson::Timestamp(_) => 17,
        Bson::Int64(_) => 18,
        Bson::Decimal128(_) => 19,
        Bson::MinKey => -1,
        Bson::MaxKey => 127,
    }
}

fn type_matches(selector: TypeSel, value: &Bson) -> bool {
    match selector {
        TypeSel::Number => Number::of(value).is_some(),
        TypeSel::Code(code) => bson_type_code(value) == code,
    }
}

/// The BSON type aliases `$type` and `$jsonSchema`'s `bsonType` accept.
pub(crate) fn type_alias(name: &str) -> Option<TypeSel> {
    let code = match name {
        "double" => 1,
        "string" => 2,
        "object" => 3,
        "array" => 4,
        "binData" => 5,
        "undefined" => 6,
        "objectId" => 7,
        "bool" => 8,
        "date" => 9,
        "null" => 10,
        "regex" => 11,
        "dbPointer" => 12,
        "javascript" => 13,
        "symbol" => 14,
        "javascriptWithScope" => 15,
        "int" => 16,
        "timestamp" => 17,
        "long" => 18,
        "decimal" => 19,
        "minKey" => -1,
        "maxKey" => 127,
        "number" => return Some(TypeSel::Number),
        _ => return None,
    };
    Some(TypeSel::Code(code))
}

fn parse_type_selector(value: &Bson) -> Result<TypeSel, QueryError> {
    match value {
        Bson::String(name) => {
            type_alias(name).ok_or_else(|| QueryError::bad_value(format!("Unknown type name alias: {name}")))
        }
        other => {
            let code = integral_value(other)
                .ok_or_else(|| QueryError::type_mismatch("type must be represented as a number or a string"))?;
            let valid = matches!(code, -1 | 1..=19 | 127);
            match i32::try_from(code) {
                Ok(code) if valid => Ok(TypeSel::Code(code)),
                _ => Err(QueryError::bad_value(format!("Invalid numerical type code: {code}"))),
            }
        }
    }
}

/// A number with an integral value, as an i64 (doubles must be whole).
pub(crate) fn integral_value(value: &Bson) -> Option<i64> {
    match value {
        Bson::Int32(v) => Some(i64::from(*v)),
        Bson::Int64(v) => Some(*v),
        Bson::Double(d) if d.fract() == 0.0 && d.abs() < 9.2e18 => Some(crate::compare::double_trunc_to_i64(*d)),
        Bson::Decimal128(d) => {
            let f: f64 = d.to_string().parse().ok()?;
            (f.fract() == 0.0 && f.abs() < 9.2e18).then(|| crate::compare::double_trunc_to_i64(f))
        }
        _ => None,
    }
}

/// A number truncated toward zero to an i64, as `$mod` does; NaN and infinities have none.
fn truncated_value(value: &Bson) -> Option<i64> {
    let f = match value {
        Bson::Int32(v) => return Some(i64::from(*v)),
        Bson::Int64(v) => return Some(*v),
        Bson::Double(d) => *d,
        Bson::Decimal128(d) => d.to_string().parse().ok()?,
        _ => return None,
    };
    (f.is_finite() && f.abs() < 9.2e18).then(|| crate::compare::double_trunc_to_i64(f))
}

fn mod_matches(value: &Bson, divisor: i64, remainder: i64) -> bool {
    match truncated_value(value) {
        Some(v) => v.wrapping_rem(divisor) == remainder,
        None => false,
    }
}

/// `$exists`-style truthiness of an operator argument.
pub(crate) fn truthy(value: &Bson) -> bool {
    match value {
        Bson::Boolean(b) => *b,
        Bson::Null | Bson::Undefined => false,
        Bson::Int32(v) => *v != 0,
        Bson::Int64(v) => *v != 0,
        Bson::Double(v) => *v != 0.0,
        _ => true,
    }
}

fn parse_expr(filter: &Document) -> Result<Expr, QueryError> {
    let mut items = Vec::new();
    for (key, value) in filter {
        if let Some(op) = key.strip_prefix('$') {
            match op {
                "and" | "or" | "nor" => {
                    let branches = parse_branches(key, value)?;
                    items.push(match op {
                        "and" => Expr::And(branches),
                        "or" => Expr::Or(branches),
                        _ => Expr::Nor(branches),
                    });
                }
                "comment" => {}
                "where" => {
                    return Err(QueryError::bad_value(
                        "$where is not allowed: server-side JavaScript is not supported by this server",
                    ));
                }
                "jsonSchema" => match value {
                    Bson::Document(schema) => items.push(Expr::Schema(Box::new(Schema::parse(schema)?))),
                    _ => return Err(QueryError::type_mismatch("$jsonSchema must be an object")),
                },
                "expr" => items.push(Expr::Aggregate(Box::new(Expression::parse(value)?))),
                "text" | "sampleRate" | "alwaysTrue" | "alwaysFalse" => {
                    return Err(QueryError::new(
                        crate::error::NOT_IMPLEMENTED,
                        format!("the {key} query operator is not supported by this server"),
                    ));
                }
                _ => {
                    return Err(QueryError::bad_value(format!(
                        "unknown top level operator: {key}. If you have a field name that starts with a '$' symbol, consider using $getField or $setField."
                    )));
                }
            }
        } else {
            items.push(Expr::Field(split_path(key), parse_field_value(value)?));
        }
    }
    Ok(match items.len() {
        1 => items.pop().unwrap_or(Expr::And(Vec::new())),
        _ => Expr::And(items),
    })
}

fn parse_branches(key: &str, value: &Bson) -> Result<Vec<Expr>, QueryError> {
    let Bson::Array(entries) = value else {
        return Err(QueryError::bad_value(format!("{key} must be an array")));
    };
    if entries.is_empty() {
        return Err(QueryError::bad_value("$and/$or/$nor must be a nonempty array"));
    }
    entries
        .iter()
        .map(|entry| match entry {
            Bson::Document(d) => parse_expr(d),
            _ => Err(QueryError::bad_value("$or/$and/$nor entries need to be full objects")),
        })
        .collect()
}

/// Whether a document is an operator document (`{$gt: 1}`) rather than a literal to compare with.
/// DBRef-shaped documents (`{$ref, $id}`) are literals.
fn is_operator_document(doc: &Document) -> bool {
    match doc.keys().next() {
        Some(first) => first.starts_with('$') && !matches!(first.as_str(), "$ref" | "$id" | "$db"),
        None => false,
    }
}

/// Parses the value given for a field: a literal, a regex, or an operator document.
pub(crate) fn parse_field_value(value: &Bson) -> Result<Pred, QueryError> {
    match value {
        Bson::RegularExpression(re) => Ok(Pred::Regex(CompiledRegex::new(&re.pattern, &re.options)?)),
        Bson::Document(ops) if is_operator_document(ops) => {
            let mut preds = parse_operators(ops)?;
            Ok(if preds.len() == 1 {
                preds.remove(0)
            } else {
                Pred::And(preds)
            })
        }
        literal => Ok(Pred::Eq(literal.clone())),
    }
}

fn parse_operators(ops: &Document) -> Result<Vec<Pred>, QueryError> {
    let mut preds = Vec::new();
    for (op, arg) in ops {
        let pred = match op.as_str() {
            "$eq" => Pred::Eq(arg.clone()),
            "$ne" => {
                if matches!(arg, Bson::RegularExpression(_)) {
                    return Err(QueryError::bad_value("Can't have regex as arg to $ne."));
                }
                Pred::Not(Box::new(Pred::Eq(arg.clone())))
            }
            "$gt" => Pred::Cmp(CmpOp::Gt, arg.clone()),
            "$gte" => Pred::Cmp(CmpOp::Gte, arg.clone()),
            "$lt" => Pred::Cmp(CmpOp::Lt, arg.clone()),
            "$lte" => Pred::Cmp(CmpOp::Lte, arg.clone()),
            "$in" => Pred::In(parse_in_list(op, arg)?),
            "$nin" => Pred::Not(Box::new(Pred::In(parse_in_list(op, arg)?))),
            "$exists" => Pred::Exists(truthy(arg)),
            "$type" => match arg {
                Bson::Array(items) => Pred::Type(items.iter().map(parse_type_selector).collect::<Result<_, _>>()?),
                single => Pred::Type(vec![parse_type_selector(single)?]),
            },
            "$size" => Pred::Size(parse_size(arg)?),
            "$all" => parse_all(arg)?,
            "$mod" => parse_mod(arg)?,
            "$regex" => {
                let options = match ops.get("$options") {
                    None => None,
                    Some(Bson::String(o)) => Some(o.as_str()),
                    Some(_) => return Err(QueryError::bad_value("$options has to be a string")),
                };
                Pred::Regex(parse_regex_operator(arg, options)?)
            }
            "$options" => {
                if !ops.contains_key("$regex") {
                    return Err(QueryError::bad_value("$options needs a $regex"));
                }
                continue;
            }
            "$elemMatch" => match arg {
                Bson::Document(inner) if is_operator_document(inner) && !is_logical(inner) => {
                    Pred::ElemMatchValue(parse_operators(inner)?)
                }
                Bson::Document(inner) => Pred::ElemMatchDoc(Box::new(parse_expr(inner)?)),
                _ => return Err(QueryError::bad_value("$elemMatch needs an Object")),
            },
            "$not" => match arg {
                Bson::RegularExpression(re) => {
                    Pred::Not(Box::new(Pred::Regex(CompiledRegex::new(&re.pattern, &re.options)?)))
                }
                Bson::Document(inner) if inner.is_empty() => return Err(QueryError::bad_value("$not cannot be empty")),
                Bson::Document(inner) => Pred::Not(Box::new(Pred::And(parse_operators(inner)?))),
                _ => return Err(QueryError::bad_value("$not needs a regex or a document")),
            },
            "$comment" => continue,
            "$slice" | "$meta" => {
                return Err(QueryError::bad_value(format!(
                    "{op} is a projection operator and cannot be used in a query"
                )));
            }
            _ => return Err(QueryError::bad_value(format!("unknown operator: {op}"))),
        };
        preds.push(pred);
    }
    Ok(preds)
}

/// `$elemMatch` documents whose first key is `$and`/`$or`/`$nor` use the query form.
fn is_logical(doc: &Document) -> bool {
    matches!(doc.keys().next().map(String::as_str), Some("$and" | "$or" | "$nor"))
}

fn parse_in_list(op: &str, arg: &Bson) -> Result<Vec<InItem>, QueryError> {
    let Bson::Array(items) = arg else {
        return Err(QueryError::bad_value(format!("{op} needs an array")));
    };
    items
        .iter()
        .map(|item| match item {
            Bson::RegularExpression(re) => Ok(InItem::Regex(CompiledRegex::new(&re.pattern, &re.options)?)),
            Bson::Document(d) if is_operator_document(d) => Err(QueryError::bad_value("cannot nest $ under $in")),
            other => Ok(InItem::Value(other.clone())),
        })
        .collect()
}

fn parse_size(arg: &Bson) -> Result<usize, QueryError> {
    let n = match arg {
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => {
            integral_value(arg).ok_or_else(|| QueryError::bad_value(format!("$size must be a whole number: {arg}")))?
        }
        _ => return Err(QueryError::bad_value("$size needs a number")),
    };
    usize::try_from(n).map_err(|_| QueryError::bad_value("$size may not be negative"))
}

fn parse_all(arg: &Bson) -> Result<Pred, QueryError> {
    let Bson::Array(items) = arg else {
        return Err(QueryError::bad_value("$all needs an array"));
    };
    if items.is_empty() {
        return Ok(Pred::Never);
    }
    let preds = items
        .iter()
        .map(|item| match item {
            Bson::RegularExpression(re) => Ok(Pred::Regex(CompiledRegex::new(&re.pattern, &re.options)?)),
            Bson::Document(d) if d.keys().next().map(String::as_str) == Some("$elemMatch") => {
                let mut inner = parse_operators(d)?;
                Ok(if inner.len() == 1 {
                    inner.remove(0)
                } else {
                    Pred::And(inner)
                })
            }
            Bson::Document(d) if is_operator_document(d) => Err(QueryError::bad_value("no $ expressions in $all")),
            other => Ok(Pred::Eq(other.clone())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Pred::And(preds))
}

fn parse_mod(arg: &Bson) -> Result<Pred, QueryError> {
    let Bson::Array(items) = arg else {
        return Err(QueryError::bad_value("malformed mod, needs to be an array"));
    };
    match items.len() {
        0 | 1 => return Err(QueryError::bad_value("malformed mod, not enough elements")),
        2 => {}
        _ => return Err(QueryError::bad_value("malformed mod, too many elements")),
    }
    let divisor =
        truncated_value(&items[0]).ok_or_else(|| QueryError::bad_value("malformed mod, divisor not a number"))?;
    let remainder =
        truncated_value(&items[1]).ok_or_else(|| QueryError::bad_value("malformed mod, remainder not a number"))?;
    if divisor == 0 {
        return Err(QueryError::bad_value("divisor cannot be 0"));
    }
    Ok(Pred::Mod(divisor, remainder))
}

fn parse_regex_operator(arg: &Bson, options: Option<&str>) -> Result<CompiledRegex, QueryError> {
    match arg {
        Bson::String(pattern) => CompiledRegex::new(pattern, options.unwrap_or("")),
        Bson::RegularExpression(re) => {
            if options.is_some() && !re.options.is_empty() {
                return Err(QueryError::new(51075, "options set in both $regex and $options"));
            }
            CompiledRegex::new(&re.pattern, options.unwrap_or(&re.options))
        }
        _ => Err(QueryError::bad_value("$regex has to be a string")),
    }
}

/// Parses a filter into its expression tree (used by `$pull` conditions).
pub(crate) fn parse_filter_expr(filter: &Document) -> Result<Expr, QueryError> {
    parse_expr(filter)
}

/// Whether a document is an operator document such as `{$gte: 6}` (used by `$pull`).
pub(crate) fn is_operator_doc(doc: &Document) -> bool {
    is_operator_document(doc)
}

#[cfg(test)]
mod tests;
