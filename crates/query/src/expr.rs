//! Aggregation expressions, the value language of `$project`, `$addFields`, `$group` and find
//! projections (<https://www.mongodb.com/docs/manual/meta/aggregation-quick-reference/#expressions>).
//!
//! Supported: field paths (`"$a.b"`, which map over arrays as MongoDB does, so `"$items.qty"`
//! is the array of every item's `qty`), the variables `$$ROOT` and `$$CURRENT`, literals (any
//! value that is not a `$` string or an operator document), `$literal`, expression objects and
//! arrays, and the operators `$add`, `$subtract`, `$multiply`, `$divide`, `$concat`, `$toUpper`,
//! `$toLower`, `$size`, `$ifNull`, `$cond`, `$eq`, `$ne`, `$gt`, `$gte`, `$lt`, `$lte`, `$cmp`,
//! `$and`, `$or`, `$not` and `$type`. Evaluation yields `None` for "missing", which stages treat
//! differently from `null` (a missing computed field is simply not written).

use std::cmp::Ordering;

use bson::{Bson, Document};

use crate::compare::{Number, compare_values};
use crate::error::QueryError;
use crate::update::arith::{add_numbers, multiply_numbers};

/// A parsed aggregation expression.
#[derive(Debug, Clone)]
pub(crate) enum Expression {
    /// A path from the current document (empty for `$$ROOT`/`$$CURRENT`).
    Path(Vec<String>),
    Literal(Bson),
    Object(Vec<(String, Expression)>),
    Array(Vec<Expression>),
    Op(Op, Vec<Expression>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Add,
    Subtract,
    Multiply,
    Divide,
    Concat,
    ToUpper,
    ToLower,
    Size,
    IfNull,
    Cond,
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    Cmp,
    And,
    Or,
    Not,
    Type,
}

fn op_by_name(name: &str) -> Option<Op> {
    Some(match name {
        "$add" => Op::Add,
        "$subtract" => Op::Subtract,
        "$multiply" => Op::Multiply,
        "$divide" => Op::Divide,
        "$concat" => Op::Concat,
        "$toUpper" => Op::ToUpper,
        "$toLower" => Op::ToLower,
        "$size" => Op::Size,
        "$ifNull" => Op::IfNull,
        "$cond" => Op::Cond,
        "$eq" => Op::Eq,
        "$ne" => Op::Ne,
        "$gt" => Op::Gt,
        "$gte" => Op::Gte,
        "$lt" => Op::Lt,
        "$lte" => Op::Lte,
        "$cmp" => Op::Cmp,
        "$and" => Op::And,
        "$or" => Op::Or,
        "$not" => Op::Not,
        "$type" => Op::Type,
        _ => return None,
    })
}

impl Expression {
    /// Parses an expression value.
    pub(crate) fn parse(value: &Bson) -> Result<Expression, QueryError> {
        match value {
            Bson::String(s) if s.starts_with("$$") => {
                let (var, rest) = s[2..].split_once('.').unwrap_or((&s[2..], ""));
                match var {
                    "ROOT" | "CURRENT" => Ok(Expression::Path(if rest.is_empty() {
                        Vec::new()
                    } else {
                        rest.split('.').map(str::to_owned).collect()
                    })),
                    _ => Err(QueryError::new(17276, format!("Use of undefined variable: {var}"))),
                }
            }
            Bson::String(s) if s.starts_with('$') => {
                let path = &s[1..];
                if path.is_empty() || path.split('.').any(str::is_empty) {
                    return Err(QueryError::new(16872, format!("'{s}' is not a valid field path")));
                }
                Ok(Expression::Path(path.split('.').map(str::to_owned).collect()))
            }
            Bson::Document(d) => match d.keys().next() {
                Some(first) if first.starts_with('$') => {
                    if d.len() != 1 {
                        return Err(QueryError::new(
                            15983,
                            format!(
                                "an expression specification must contain exactly one field, the name of the expression. Found {} fields in {d}",
                                d.len()
                            ),
                        ));
                    }
                    let arg = d.get(first).unwrap_or(&Bson::Null);
                    if first == "$literal" {
                        return Ok(Expression::Literal(arg.clone()));
                    }
                    let op = op_by_name(first).ok_or_else(|| {
                        QueryError::new(
                            crate::error::INVALID_PIPELINE_OPERATOR,
                            format!("Unrecognized expression '{first}'"),
                        )
                    })?;
                    let args = match arg {
                        Bson::Array(items) => items.iter().map(Expression::parse).collect::<Result<_, _>>()?,
                        Bson::Document(c) if op == Op::Cond => {
                            let part = |k: &str| {
                                c.get(k).map(Expression::parse).unwrap_or_else(|| {
                                    Err(QueryError::new(17080, format!("Missing '{k}' parameter to $cond")))
                                })
                            };
                            vec![part("if")?, part("then")?, part("else")?]
                        }
                        single => vec![Expression::parse(single)?],
                    };
                    check_arity(op, first, args.len())?;
                    Ok(Expression::Op(op, args))
                }
                _ => Ok(Expression::Object(
                    d.iter()
                        .map(|(k, v)| Ok((k.clone(), Expression::parse(v)?)))
                        .collect::<Result<_, QueryError>>()?,
                )),
            },
            Bson::Array(items) => Ok(Expression::Array(
                items.iter().map(Expression::parse).collect::<Result<_, _>>()?,
            )),
            other => Ok(Expression::Literal(other.clone())),
        }
    }

    /// Evaluates against the current document; `None` is "missing".
    pub(crate) fn evaluate(&self, doc: &Document) -> Result<Option<Bson>, QueryError> {
        match self {
            Expression::Path(parts) if parts.is_empty() => Ok(Some(Bson::Document(doc.clone()))),
            Expression::Path(parts) => Ok(path_value(doc, parts)),
            Expression::Literal(v) => Ok(Some(v.clone())),
            Expression::Object(fields) => {
                let mut out = Document::new();
                for (k, e) in fields {
                    if let Some(v) = e.evaluate(doc)? {
                        out.insert(k.clone(), v);
                    }
                }
                Ok(Some(Bson::Document(out)))
            }
            Expression::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for e in items {
                    // Missing values inside array expressions become null.
                    out.push(e.evaluate(doc)?.unwrap_or(Bson::Null));
                }
                Ok(Some(Bson::Array(out)))
            }
            Expression::Op(op, args) => evaluate_op(*op, args, doc),
        }
    }
}

fn check_arity(op: Op, name: &str, n: usize) -> Result<(), QueryError> {
    let ok = match op {
        Op::Subtract | Op::Divide | Op::Eq | Op::Ne | Op::Gt | Op::Gte | Op::Lt | Op::Lte | Op::Cmp => n == 2,
        Op::ToUpper | Op::ToLower | Op::Size | Op::Not | Op::Type => n == 1,
        Op::Cond => n == 3,
        Op::IfNull => n >= 2,
        Op::Add | Op::Multiply | Op::Concat | Op::And | Op::Or => true,
    };
    if ok {
        Ok(())
    } else {
        Err(QueryError::new(
            16020,
            format!("Expression {name} takes a different number of arguments: {n} given"),
        ))
    }
}

/// Aggregation field-path semantics: arrays along the path map to arrays of the values found.
pub(crate) fn path_value(doc: &Document, parts: &[String]) -> Option<Bson> {
    let (first, rest) = parts.split_first()?;
    let value = doc.get(first)?;
    if rest.is_empty() {
        return Some(value.clone());
    }
    descend(value, rest)
}

fn descend(value: &Bson, parts: &[String]) -> Option<Bson> {
    match value {
        Bson::Document(d) => path_value(d, parts),
        Bson::Array(items) => Some(Bson::Array(
            items.iter().filter_map(|item| descend(item, parts)).collect(),
        )),
        _ => None,
    }
}

/// The value of argument `i` (arity is checked when parsing, so a missing one is "missing").
fn arg(values: &[Option<Bson>], i: usize) -> Option<Bson> {
    values.get(i).cloned().flatten()
}

fn is_nullish(v: &Option<Bson>) -> bool {
    matches!(v, None | Some(Bson::Null | Bson::Undefined))
}

/// Aggregation truthiness: false, null, missing, undefined and numeric zero are false.
pub(crate) fn truthy(v: &Option<Bson>) -> bool {
    match v {
        None | Some(Bson::Null | Bson::Undefined) => false,
        Some(Bson::Boolean(b)) => *b,
        Some(other) => match Number::of(other) {
            Some(_) => compare_values(other, &Bson::Int32(0)) != Ordering::Equal,
            None => true,
        },
    }
}

fn evaluate_op(op: Op, args: &[Expression], doc: &Document) -> Result<Option<Bson>, QueryError> {
    let mut values = Vec::with_capacity(args.len());
    for a in args {
        values.push(a.evaluate(doc)?);
    }
    let first = values.first().cloned().flatten();
    Ok(match op {
        Op::Add | Op::Multiply => {
            let mut acc = if op == Op::Add { Bson::Int32(0) } else { Bson::Int32(1) };
            let mut date = false;
            for v in &values {
                if is_nullish(v) {
                    return Ok(Some(Bson::Null));
                }
                let v = v.clone().unwrap_or(Bson::Null);
                let v = match (op, v) {
                    (Op::Add, Bson::DateTime(d)) if !date => {
                        date = true;
                        Bson::Int64(d.timestamp_millis())
                    }
                    (_, v) => v,
                };
                acc = if op == Op::Add {
                    add_numbers(&acc, &v)
                } else {
                    multiply_numbers(&acc, &v)
                }
                .ok_or_else(|| {
                    QueryError::type_mismatch(format!(
                        "${} only supports numeric types, not {v}",
                        if op == Op::Add { "add" } else { "multiply" }
                    ))
                })?;
            }
            if date {
                let millis = acc.as_i64().or_else(|| acc.as_i32().map(i64::from)).unwrap_or(0);
                Some(Bson::DateTime(bson::DateTime::from_millis(millis)))
            } else {
                Some(acc)
            }
        }
        Op::Subtract => {
            if values.iter().any(is_nullish) {
                return Ok(Some(Bson::Null));
            }
            let (a, b) = (
                arg(&values, 0).unwrap_or(Bson::Null),
                arg(&values, 1).unwrap_or(Bson::Null),
            );
            let negated = multiply_numbers(&b, &Bson::Int32(-1));
            negated
                .and_then(|n| add_numbers(&a, &n))
                .map(Some)
                .ok_or_else(|| QueryError::type_mismatch(format!("can't $subtract {b} from {a}")))?
        }
        Op::Divide => {
            if values.iter().any(is_nullish) {
                return Ok(Some(Bson::Null));
            }
            let num = |v: &Option<Bson>| v.as_ref().and_then(crate::update::arith::to_f64);
            match (num(&arg(&values, 0)), num(&arg(&values, 1))) {
                (Some(_), Some(0.0)) => return Err(QueryError::new(16608, "can't $divide by zero")),
                (Some(a), Some(d)) => Some(Bson::Double(a / d)),
                _ => return Err(QueryError::type_mismatch("$divide only supports numeric types")),
            }
        }
        Op::Concat => {
            let mut out = String::new();
            for v in &values {
                match v {
                    None | Some(Bson::Null | Bson::Undefined) => return Ok(Some(Bson::Null)),
                    Some(Bson::String(s)) => out.push_str(s),
                    Some(other) => {
                        return Err(QueryError::new(
                            16702,
                            format!("$concat only supports strings, not {other}"),
                        ));
                    }
                }
            }
            Some(Bson::String(out))
        }
        Op::ToUpper | Op::ToLower => {
            let s = match &first {
                None | Some(Bson::Null | Bson::Undefined) => String::new(),
                Some(Bson::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            Some(Bson::String(if op == Op::ToUpper {
                s.to_ascii_uppercase()
            } else {
                s.to_ascii_lowercase()
            }))
        }
        Op::Size => match &first {
            Some(Bson::Array(items)) => Some(Bson::Int32(i32::try_from(items.len()).unwrap_or(i32::MAX))),
            _ => return Err(QueryError::new(17124, "The argument to $size must be an array")),
        },
        Op::IfNull => values
            .iter()
            .find(|v| !is_nullish(v))
            .cloned()
            .unwrap_or_else(|| values.last().cloned().flatten()),
        Op::Cond => {
            if truthy(&arg(&values, 0)) {
                arg(&values, 1)
            } else {
                arg(&values, 2)
            }
        }
        Op::Eq | Op::Ne | Op::Gt | Op::Gte | Op::Lt | Op::Lte | Op::Cmp => {
            // Missing compares as below null in aggregation comparisons; treat it as null here.
            let a = arg(&values, 0).unwrap_or(Bson::Undefined);
            let b = arg(&values, 1).unwrap_or(Bson::Undefined);
            let ord = compare_values(&a, &b);
            Some(match op {
                Op::Eq => Bson::Boolean(ord == Ordering::Equal),
                Op::Ne => Bson::Boolean(ord != Ordering::Equal),
                Op::Gt => Bson::Boolean(ord == Ordering::Greater),
                Op::Gte => Bson::Boolean(ord != Ordering::Less),
                Op::Lt => Bson::Boolean(ord == Ordering::Less),
                Op::Lte => Bson::Boolean(ord != Ordering::Greater),
                _ => Bson::Int32(match ord {
                    Ordering::Less => -1,
                    Ordering::Equal => 0,
                    Ordering::Greater => 1,
                }),
            })
        }
        Op::And => Some(Bson::Boolean(values.iter().all(truthy))),
        Op::Or => Some(Bson::Boolean(values.iter().any(truthy))),
        Op::Not => Some(Bson::Boolean(!truthy(&arg(&values, 0)))),
        Op::Type => Some(Bson::String(type_name(arg(&values, 0).as_ref()).to_owned())),
    })
}

/// `$type`'s names for BSON types ("missing" for an absent value).
pub(crate) fn type_name(value: Option<&Bson>) -> &'static str {
    value.map_or("missing", bson_type_name)
}

/// mongod's name for a value's BSON type, as `$type` accepts and error messages print it.
#[must_use]
pub fn bson_type_name(value: &Bson) -> &'static str {
    match value {
        Bson::Double(_) => "double",
        Bson::String(_) => "string",
        Bson::Document(_) => "object",
        Bson::Array(_) => "array",
        Bson::Binary(_) => "binData",
        Bson::Undefined => "undefined",
        Bson::ObjectId(_) => "objectId",
        Bson::Boolean(_) => "bool",
        Bson::DateTime(_) => "date",
        Bson::Null => "null",
        Bson::RegularExpression(_) => "regex",
        Bson::DbPointer(_) => "dbPointer",
        Bson::JavaScriptCode(_) => "javascript",
        Bson::Symbol(_) => "symbol",
        Bson::JavaScriptCodeWithScope(_) => "javascriptWithScope",
        Bson::Int32(_) => "int",
        Bson::Timestamp(_) => "timestamp",
        Bson::Int64(_) => "long",
        Bson::Decimal128(_) => "decimal",
        Bson::MinKey => "minKey",
        Bson::MaxKey => "maxKey",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn eval(expr: Bson, doc: Document) -> Option<Bson> {
        Expression::parse(&expr).unwrap().evaluate(&doc).unwrap()
    }

    // https://www.mongodb.com/docs/manual/reference/aggregation-variables/ and field paths:
    // "$instock.qty" on an array of documents yields the array of qty values.
    #[test]
    fn field_paths_map_over_arrays() {
        let d = doc! {"instock": [{"qty": 5}, {"w": 1}, {"qty": 15}], "a": {"b": 1}};
        assert_eq!(
            eval("$instock.qty".into(), d.clone()),
            Some(Bson::Array(vec![5.into(), 15.into()]))
        );
        assert_eq!(eval("$a.b".into(), d.clone()), Some(Bson::Int32(1)));
        assert_eq!(eval("$nope".into(), d.clone()), None);
        assert_eq!(eval("$$ROOT.a".into(), d.clone()), Some(Bson::Document(doc! {"b": 1})));
        assert_eq!(
            eval(Bson::Document(doc! {"$literal": "$a"}), d.clone()),
            Some(Bson::String("$a".into()))
        );
        assert_eq!(
            eval(Bson::Document(doc! {"x": "$a.b", "y": "$nope"}), d),
            Some(Bson::Document(doc! {"x": 1}))
        );
    }

    // https://www.mongodb.com/docs/manual/reference/operator/aggregation/add/ , /concat/, /cond/
    #[test]
    fn operators() {
        let d = doc! {"price": 10, "fee": 2.5, "item": "abc", "qty": 250};
        assert_eq!(
            eval(Bson::Document(doc! {"$add": ["$price", "$fee"]}), d.clone()),
            Some(Bson::Double(12.5))
        );
        assert_eq!(
            eval(Bson::Document(doc! {"$add": ["$price", "$missing"]}), d.clone()),
            Some(Bson::Null)
        );
        assert_eq!(
            eval(Bson::Document(doc! {"$concat": ["$item", " - ", "x"]}), d.clone()),
            Some(Bson::from("abc - x"))
        );
        assert_eq!(
            eval(
                Bson::Document(doc! {"$cond": {"if": {"$gte": ["$qty", 250]}, "then": 30, "else": 20}}),
                d.clone()
            ),
            Some(Bson::Int32(30))
        );
        assert_eq!(
            eval(Bson::Document(doc! {"$ifNull": ["$missing", "Unspecified"]}), d.clone()),
            Some(Bson::from("Unspecified"))
        );
        assert_eq!(
            eval(Bson::Document(doc! {"$type": "$fee"}), d),
            Some(Bson::from("double"))
        );
        let e = Expression::parse(&Bson::Document(doc! {"$foo": 1})).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (168, "Unrecognized expression '$foo'"));
    }
}
