//! A subset of the aggregation pipeline.
//!
//! Stages (<https://www.mongodb.com/docs/manual/reference/operator/aggregation-pipeline/>):
//! `$match`, `$project`, `$addFields`/`$set`, `$unset`, `$replaceRoot`/`$replaceWith`, `$sort`,
//! `$skip`, `$limit`, `$count`, `$group` (accumulators `$sum`, `$avg`, `$min`, `$max`,
//! `$first`, `$last`, `$push`, `$addToSet`, `$count`), `$unwind`, `$sortByCount` and `$facet`. Each stage is parsed and
//! validated up front ([`Pipeline::parse`]); an unknown stage is MongoDB's error 40324
//! (`Unrecognized pipeline stage name: '$foo'`). [`Pipeline::run`] then streams the input
//! through the stages: `$match`, `$project`-like stages and `$unwind` work document by document,
//! while `$sort`, `$group` and `$count` need all their input.
//!
//! The driver's `count_documents` sends
//! `[{$match: filter}, {$skip: n}?, {$limit: n}?, {$group: {_id: 1, n: {$sum: 1}}}]`, which this
//! covers.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use bson::{Bson, Document};

use crate::compare::{Number, compare_values};
use crate::error::QueryError;
use crate::expr::Expression;
use crate::filter::{Filter, integral_value};
use crate::projection::Projection;
use crate::sort::SortSpec;
use crate::update::arith::add_numbers;

/// A parsed aggregation pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    stages: Vec<Stage>,
}

#[derive(Debug, Clone)]
enum Stage {
    Match(Filter),
    Project(Projection),
    AddFields(Vec<(Vec<String>, Expression)>),
    ReplaceRoot(Expression),
    Sort(SortSpec),
    Skip(u64),
    Limit(u64),
    Count(String),
    Group(Box<Group>),
    Unwind(Unwind),
    SortByCount(Expression),
    Facet(Vec<(String, Pipeline)>),
}

#[derive(Debug, Clone)]
struct Group {
    id: Expression,
    fields: Vec<(String, Accumulator, Expression)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accumulator {
    Sum,
    Avg,
    Min,
    Max,
    First,
    Last,
    Push,
    AddToSet,
    Count,
}

#[derive(Debug, Clone)]
struct Unwind {
    path: Vec<String>,
    include_array_index: Option<String>,
    preserve_null_and_empty: bool,
}

impl Pipeline {
    /// Parses pipeline stages.
    pub fn parse(stages: &[Document]) -> Result<Pipeline, QueryError> {
        Ok(Pipeline {
            stages: stages.iter().map(parse_stage).collect::<Result<_, _>>()?,
        })
    }

    /// Runs the pipeline over the input documents.
    pub fn run(&self, input: impl Iterator<Item = Document>) -> Result<Vec<Document>, QueryError> {
        let mut docs: Vec<Document> = Vec::new();
        let mut stages = self.stages.iter().peekable();
        // Leading $match stages filter while the input is read.
        let mut leading: Vec<&Filter> = Vec::new();
        while let Some(Stage::Match(f)) = stages.peek() {
            leading.push(f);
            stages.next();
        }
        for doc in input {
            if leading.iter().all(|f| f.matches(&doc)) {
                docs.push(doc);
            }
        }
        for stage in stages {
            docs = run_stage(stage, docs)?;
        }
        Ok(docs)
    }
}

fn stage_error(code: i32, message: impl Into<String>) -> QueryError {
    QueryError::new(code, message)
}

fn parse_stage(stage: &Document) -> Result<Stage, QueryError> {
    if stage.len() != 1 {
        return Err(stage_error(
            40323,
            "A pipeline stage specification object must contain exactly one field.",
        ));
    }
    let Some((name, spec)) = stage.iter().next() else {
        return Err(stage_error(
            40323,
            "A pipeline stage specification object must contain exactly one field.",
        ));
    };
    let doc_spec = |code: i32| -> Result<&Document, QueryError> {
        spec.as_document().ok_or_else(|| {
            stage_error(
                code,
                format!(
                    "{name} specification must be an object, found {}",
                    crate::expr::type_name(Some(spec))
                ),
            )
        })
    };
    Ok(match name.as_str() {
        "$match" => Stage::Match(Filter::parse(doc_spec(15959)?)?),
        "$project" => Stage::Project(Projection::parse_stage(doc_spec(15969)?)?),
        "$addFields" | "$set" => {
            let spec = doc_spec(40272)?;
            let mut fields = Vec::new();
            flatten_add_fields(spec, &[], &mut fields)?;
            Stage::AddFields(fields)
        }
        "$unset" => {
            let paths = match spec {
                Bson::String(s) => vec![s.clone()],
                Bson::Array(items) => items
                    .iter()
                    .map(|i| {
                        i.as_str().map(str::to_owned).ok_or_else(|| {
                            stage_error(
                                31120,
                                "$unset specification must be a string or an array containing only string values",
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?,
                _ => return Err(stage_error(31002, "$unset specification must be a string or an array")),
            };
            Stage::Project(Projection::exclusion(&paths)?)
        }
        "$replaceRoot" => {
            let new_root = doc_spec(40228)?
                .get("newRoot")
                .ok_or_else(|| stage_error(40231, "no newRoot specified for the $replaceRoot stage"))?;
            Stage::ReplaceRoot(Expression::parse(new_root)?)
        }
        "$replaceWith" => Stage::ReplaceRoot(Expression::parse(spec)?),
        "$sort" => {
            let spec = doc_spec(15973)?;
            if spec.is_empty() {
                return Err(stage_error(15976, "$sort stage must have at least one sort key"));
            }
            Stage::Sort(SortSpec::parse(spec)?)
        }
        "$skip" => {
            let n = integral_value(spec).ok_or_else(|| {
                stage_error(
                    15972,
                    format!(
                        "Argument to $skip must be a number not a {}",
                        crate::expr::type_name(Some(spec))
                    ),
                )
            })?;
            Stage::Skip(u64::try_from(n).map_err(|_| stage_error(15956, "Argument to $skip cannot be negative"))?)
        }
        "$limit" => {
            let n =
                integral_value(spec).ok_or_else(|| stage_error(15957, "the limit must be specified as a number"))?;
            match u64::try_from(n) {
                Ok(n) if n > 0 => Stage::Limit(n),
                _ => return Err(stage_error(15958, "the limit must be positive")),
            }
        }
        "$count" => {
            let Bson::String(field) = spec else {
                return Err(stage_error(40156, "the count field must be a non-empty string"));
            };
            if field.is_empty() {
                return Err(stage_error(40157, "the count field must be a non-empty string"));
            }
            if field.starts_with('$') {
                return Err(stage_error(40158, "the count field cannot be a $-prefixed path"));
            }
            if field.contains('.') {
                return Err(stage_error(40160, "the count field cannot contain '.'"));
            }
            Stage::Count(field.clone())
        }
        "$group" => Stage::Group(Box::new(parse_group(doc_spec(15947)?)?)),
        "$unwind" => Stage::Unwind(parse_unwind(spec)?),
        "$sortByCount" => {
            let valid = match spec {
                Bson::String(p) => p.starts_with('$'),
                Bson::Document(d) => d.len() == 1 && d.keys().next().is_some_and(|k| k.starts_with('$')),
                _ => false,
            };
            if !valid {
                return Err(stage_error(
                    40148,
                    "the sortByCount field must be defined as a $-prefixed path or an expression",
                ));
            }
            Stage::SortByCount(Expression::parse(spec)?)
        }
        "$facet" => {
            let spec = doc_spec(15947)?;
            if spec.is_empty() {
                return Err(stage_error(
                    40169,
                    "the $facet specification must be a non-empty object",
                ));
            }
            let mut facets = Vec::new();
            for (name, stages) in spec {
                let Bson::Array(stages) = stages else {
                    return Err(stage_error(
                        40170,
                        format!(
                            "arguments to $facet must be arrays, {name} is type {}",
                            crate::expr::type_name(Some(stages))
                        ),
                    ));
                };
                let stages = stages
                    .iter()
                    .map(|s| {
                        s.as_document()
                            .cloned()
                            .ok_or_else(|| stage_error(40171, "subpipeline stages must be objects"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if let Some(bad) = stages
                    .iter()
                    .filter_map(|s| s.keys().next())
                    .find(|k| matches!(k.as_str(), "$facet" | "$out" | "$merge" | "$collStats" | "$indexStats"))
                {
                    return Err(stage_error(
                        40600,
                        format!("{bad} is not allowed to be used within a $facet stage"),
                    ));
                }
                facets.push((name.clone(), Pipeline::parse(&stages)?));
            }
            Stage::Facet(facets)
        }
        other => {
            return Err(stage_error(
                40324,
                format!("Unrecognized pipeline stage name: '{other}'"),
            ));
        }
    })
}

/// `$addFields: {a: {b: expr}}` adds `a.b` (merging into an existing `a`), so nested plain
/// documents are flattened into dotted paths.
fn flatten_add_fields(
    spec: &Document,
    prefix: &[String],
    out: &mut Vec<(Vec<String>, Expression)>,
) -> Result<(), QueryError> {
    for (field, value) in spec {
        if field.starts_with('$') {
            return Err(QueryError::new(
                16410,
                format!(
                    "FieldPath field names may not start with '$'. Consider using $getField or $setField. ('{field}')"
                ),
            ));
        }
        let mut path = prefix.to_vec();
        path.extend(field.split('.').map(str::to_owned));
        if path.iter().any(String::is_empty) {
            return Err(QueryError::new(
                15998,
                format!("FieldPath field names may not be empty strings (in '{field}')"),
            ));
        }
        match value {
            Bson::Document(d) if !d.is_empty() && !d.keys().next().is_some_and(|k| k.starts_with('$')) => {
                flatten_add_fields(d, &path, out)?;
            }
            other => out.push((path, Expression::parse(other)?)),
        }
    }
    Ok(())
}

fn parse_group(spec: &Document) -> Result<Group, QueryError> {
    let id = spec
        .get("_id")
        .ok_or_else(|| stage_error(15955, "a group specification must include an _id"))?;
    let mut group = Group {
        id: Expression::parse(id)?,
        fields: Vec::new(),
    };
    for (field, value) in spec {
        if field == "_id" {
            continue;
        }
        if field.contains('.') {
            return Err(stage_error(
                40235,
                format!("The field name '{field}' cannot contain '.'"),
            ));
        }
        if field.starts_with('$') {
            return Err(stage_error(
                40236,
                format!("The field name '{field}' cannot be an operator name"),
            ));
        }
        let Bson::Document(acc) = value else {
            return Err(stage_error(
                40234,
                format!("The field '{field}' must be an accumulator object"),
            ));
        };
        if acc.len() != 1 {
            return Err(stage_error(
                40238,
                format!("The field '{field}' must specify one accumulator"),
            ));
        }
        let Some((op, arg)) = acc.iter().next() else {
            return Err(stage_error(
                40234,
                format!("The field '{field}' must be an accumulator object"),
            ));
        };
        let accumulator = match op.as_str() {
            "$sum" => Accumulator::Sum,
            "$avg" => Accumulator::Avg,
            "$min" => Accumulator::Min,
            "$max" => Accumulator::Max,
            "$first" => Accumulator::First,
            "$last" => Accumulator::Last,
            "$push" => Accumulator::Push,
            "$addToSet" => Accumulator::AddToSet,
            "$count" => Accumulator::Count,
            other => return Err(stage_error(15952, format!("unknown group operator '{other}'"))),
        };
        let expr = if accumulator == Accumulator::Count {
            if !matches!(arg, Bson::Document(d) if d.is_empty()) {
                return Err(stage_error(9, "$count takes no arguments, i.e. $count:{}"));
            }
            Expression::Literal(Bson::Int32(1))
        } else {
            Expression::parse(arg)?
        };
        group.fields.push((field.clone(), accumulator, expr));
    }
    Ok(group)
}

fn parse_unwind(spec: &Bson) -> Result<Unwind, QueryError> {
    let (path, include_array_index, preserve) = match spec {
        Bson::String(p) => (p.clone(), None, false),
        Bson::Document(d) => {
            let mut path = None;
            let mut index = None;
            let mut preserve = false;
            for (k, v) in d {
                match (k.as_str(), v) {
                    ("path", Bson::String(p)) => path = Some(p.clone()),
                    ("path", _) => return Err(stage_error(28808, "expected a string as the path for $unwind stage")),
                    ("includeArrayIndex", Bson::String(i)) => {
                        if i.is_empty() || i.starts_with('$') {
                            return Err(stage_error(
                                28822,
                                format!(
                                    "includeArrayIndex option to $unwind stage should not be prefixed with a '$': {i}"
                                ),
                            ));
                        }
                        index = Some(i.clone());
                    }
                    ("includeArrayIndex", _) => {
                        return Err(stage_error(
                            28810,
                            "expected a non-empty string for the includeArrayIndex option to $unwind stage",
                        ));
                    }
                    ("preserveNullAndEmptyArrays", Bson::Boolean(b)) => preserve = *b,
                    ("preserveNullAndEmptyArrays", _) => {
                        return Err(stage_error(
                            28809,
                            "expected a boolean for the preserveNullAndEmptyArrays option to $unwind stage",
                        ));
                    }
                    (other, _) => {
                        return Err(stage_error(
                            28811,
                            format!("unrecognized option to $unwind stage: {other}"),
                        ));
                    }
                }
            }
            (
                path.ok_or_else(|| stage_error(28812, "no path specified to $unwind stage"))?,
                index,
                preserve,
            )
        }
        _ => {
            return Err(stage_error(
                15981,
                "expected either a string or an object as specification for $unwind stage",
            ));
        }
    };
    let Some(field) = path.strip_prefix('$') else {
        return Err(stage_error(
            28818,
            format!("path option to $unwind stage should be prefixed with a '$': {path}"),
        ));
    };
    if field.is_empty() || field.split('.').any(str::is_empty) {
        return Err(stage_error(28818, format!("invalid path for $unwind: {path}")));
    }
    Ok(Unwind {
        path: field.split('.').map(str::to_owned).collect(),
        include_array_index,
        preserve_null_and_empty: preserve,
    })
}

fn run_stage(stage: &Stage, docs: Vec<Document>) -> Result<Vec<Document>, QueryError> {
    Ok(match stage {
        Stage::Match(filter) => docs.into_iter().filter(|d| filter.matches(d)).collect(),
        Stage::Project(projection) => docs.iter().map(|d| projection.try_apply(d)).collect::<Result<_, _>>()?,
        Stage::AddFields(fields) => {
            let mut out = Vec::with_capacity(docs.len());
            for doc in docs {
                let mut values = Vec::with_capacity(fields.len());
                for (_, expr) in fields {
                    values.push(expr.evaluate(&doc)?);
                }
                let mut doc = doc;
                for ((path, _), value) in fields.iter().zip(values) {
                    set_agg_path(&mut doc, path, value);
                }
                out.push(doc);
            }
            out
        }
        Stage::ReplaceRoot(expr) => {
            let mut out = Vec::with_capacity(docs.len());
            for doc in &docs {
                match expr.evaluate(doc)? {
                    Some(Bson::Document(d)) => out.push(d),
                    other => {
                        return Err(stage_error(
                            40228,
                            format!(
                                "'newRoot' expression must evaluate to an object, but resulting value was: {}. Type of resulting value: '{}'. Input document: {doc}",
                                other.clone().unwrap_or(Bson::Null),
                                crate::expr::type_name(other.as_ref())
                            ),
                        ));
                    }
                }
            }
            out
        }
        Stage::Sort(spec) => {
            let mut docs = docs;
            spec.sort(&mut docs);
            docs
        }
        Stage::Skip(n) => docs
            .into_iter()
            .skip(usize::try_from(*n).unwrap_or(usize::MAX))
            .collect(),
        Stage::Limit(n) => docs
            .into_iter()
            .take(usize::try_from(*n).unwrap_or(usize::MAX))
            .collect(),
        Stage::Count(field) => {
            if docs.is_empty() {
                Vec::new()
            } else {
                let n = i64::try_from(docs.len()).unwrap_or(i64::MAX);
                let value = i32::try_from(n).map(Bson::Int32).unwrap_or(Bson::Int64(n));
                let mut d = Document::new();
                d.insert(field.clone(), value);
                vec![d]
            }
        }
        Stage::Group(group) => run_group(group, docs)?,
        Stage::SortByCount(expr) => {
            let group = Group {
                id: expr.clone(),
                fields: vec![(
                    "count".to_owned(),
                    Accumulator::Sum,
                    Expression::Literal(Bson::Int32(1)),
                )],
            };
            let mut grouped = run_group(&group, docs)?;
            let by_count = SortSpec::parse(&bson::doc! {"count": -1})?;
            by_count.sort(&mut grouped);
            grouped
        }
        Stage::Facet(facets) => {
            let mut out = Document::new();
            for (name, pipeline) in facets {
                let results = pipeline.run(docs.iter().cloned())?;
                out.insert(
                    name.clone(),
                    Bson::Array(results.into_iter().map(Bson::Document).collect()),
                );
            }
            vec![out]
        }
        Stage::Unwind(unwind) => {
            let mut out = Vec::new();
            for doc in docs {
                unwind_doc(unwind, doc, &mut out);
            }
            out
        }
    })
}

/// Sets a path for `$addFields`: creates documents, maps over arrays of documents, and removes
/// the field when the value is missing.
fn set_agg_path(doc: &mut Document, path: &[String], value: Option<Bson>) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        match value {
            Some(v) => {
                doc.insert(first.clone(), v);
            }
            None => {
                doc.remove(first);
            }
        }
        return;
    }
    match doc.get_mut(first) {
        Some(Bson::Document(inner)) => set_agg_path(inner, rest, value),
        Some(Bson::Array(items)) => {
            for item in items.iter_mut() {
                if let Bson::Document(inner) = item {
                    set_agg_path(inner, rest, value.clone());
                }
            }
        }
        _ => {
            let mut inner = Document::new();
            set_agg_path(&mut inner, rest, value);
            doc.insert(first.clone(), inner);
        }
    }
}

fn unwind_doc(unwind: &Unwind, doc: Document, out: &mut Vec<Document>) {
    let joined = unwind.path.join(".");
    let value = crate::path::lookup_path(&doc, &joined).cloned();
    let with_index = |mut d: Document, index: Option<usize>| {
        if let Some(field) = &unwind.include_array_index {
            let v = index
                .and_then(|i| i64::try_from(i).ok())
                .map(Bson::Int64)
                .unwrap_or(Bson::Null);
            set_agg_path(
                &mut d,
                &field.split('.').map(str::to_owned).collect::<Vec<_>>(),
                Some(v),
            );
        }
        d
    };
    match value {
        Some(Bson::Array(items)) if !items.is_empty() => {
            for (i, item) in items.into_iter().enumerate() {
                let mut d = doc.clone();
                set_agg_path(&mut d, &unwind.path, Some(item));
                out.push(with_index(d, Some(i)));
            }
        }
        Some(Bson::Array(_)) => {
            if unwind.preserve_null_and_empty {
                let mut d = doc;
                set_agg_path(&mut d, &unwind.path, None);
                out.push(with_index(d, None));
            }
        }
        None | Some(Bson::Null | Bson::Undefined) => {
            if unwind.preserve_null_and_empty {
                out.push(with_index(doc, None));
            }
        }
        // "a non-array, non-null, non-missing operand is treated as a single element array"
        Some(_) => out.push(with_index(doc, None)),
    }
}

/// A group key ordered by [`compare_values`], so numerically equal keys share a group.
#[derive(Debug, Clone)]
struct Key(Bson);

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        compare_values(&self.0, &other.0) == Ordering::Equal
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
        compare_values(&self.0, &other.0)
    }
}

#[derive(Debug, Clone)]
enum State {
    Sum(Bson),
    Avg(Bson, u64),
    Extreme(Option<Bson>),
    First(Option<Bson>),
    Last(Bson),
    List(Vec<Bson>),
}

fn run_group(group: &Group, docs: Vec<Document>) -> Result<Vec<Document>, QueryError> {
    let mut index: BTreeMap<Key, usize> = BTreeMap::new();
    let mut groups: Vec<(Bson, Vec<State>)> = Vec::new();
    for doc in &docs {
        let key = group.id.evaluate(doc)?.unwrap_or(Bson::Null);
        let slot = match index.get(&Key(key.clone())) {
            Some(i) => *i,
            None => {
                let states = group
                    .fields
                    .iter()
                    .map(|(_, acc, _)| match acc {
                        Accumulator::Sum | Accumulator::Count => State::Sum(Bson::Int32(0)),
                        Accumulator::Avg => State::Avg(Bson::Int32(0), 0),
                        Accumulator::Min | Accumulator::Max => State::Extreme(None),
                        Accumulator::First => State::First(None),
                        Accumulator::Last => State::Last(Bson::Null),
                        Accumulator::Push | Accumulator::AddToSet => State::List(Vec::new()),
                    })
                    .collect();
                groups.push((key.clone(), states));
                index.insert(Key(key), groups.len() - 1);
                groups.len() - 1
            }
        };
        let states = &mut groups[slot].1;
        for ((_, acc, expr), state) in group.fields.iter().zip(states.iter_mut()) {
            let value = expr.evaluate(doc)?;
            accumulate(*acc, state, value);
        }
    }
    Ok(groups
        .into_iter()
        .map(|(key, states)| {
            let mut out = Document::new();
            out.insert("_id", key);
            for ((field, _, _), state) in group.fields.iter().zip(states) {
                out.insert(field.clone(), finish(state));
            }
            out
        })
        .collect())
}

fn accumulate(acc: Accumulator, state: &mut State, value: Option<Bson>) {
    match (acc, state) {
        (Accumulator::Sum | Accumulator::Count, State::Sum(total)) => {
            // $sum ignores non-numeric values.
            if let Some(v) = value.filter(|v| Number::of(v).is_some())
                && let Some(t) = add_numbers(total, &v)
            {
                *total = t;
            }
        }
        (Accumulator::Avg, State::Avg(total, count)) => {
            if let Some(v) = value.filter(|v| Number::of(v).is_some())
                && let Some(t) = add_numbers(total, &v)
            {
                *total = t;
                *count += 1;
            }
        }
        (Accumulator::Min | Accumulator::Max, State::Extreme(best)) => {
            // $min/$max ignore null and missing values.
            let Some(v) = value.filter(|v| !matches!(v, Bson::Null | Bson::Undefined)) else {
                return;
            };
            let want = if acc == Accumulator::Min {
                Ordering::Less
            } else {
                Ordering::Greater
            };
            if best.as_ref().is_none_or(|b| compare_values(&v, b) == want) {
                *best = Some(v);
            }
        }
        (Accumulator::First, State::First(first)) if first.is_none() => {
            *first = Some(value.unwrap_or(Bson::Null));
        }
        (Accumulator::Last, State::Last(last)) => *last = value.unwrap_or(Bson::Null),
        (Accumulator::Push, State::List(items)) => items.extend(value),
        (Accumulator::AddToSet, State::List(items)) => {
            if let Some(v) = value
                && !items.iter().any(|i| compare_values(i, &v) == Ordering::Equal)
            {
                items.push(v);
            }
        }
        _ => {}
    }
}

fn finish(state: State) -> Bson {
    match state {
        State::Sum(total) => total,
        State::Avg(_, 0) => Bson::Null,
        State::Avg(total, count) => match total {
            Bson::Decimal128(_) => {
                let divisor: Bson = Bson::Double(1.0 / count as f64);
                crate::update::arith::multiply_numbers(&total, &divisor).unwrap_or(Bson::Null)
            }
            other => {
                let sum = crate::update::arith::to_f64(&other).unwrap_or(f64::NAN);
                Bson::Double(sum / count as f64)
            }
        },
        State::Extreme(best) => best.unwrap_or(Bson::Null),
        State::First(first) => first.unwrap_or(Bson::Null),
        State::Last(last) => last,
        State::List(items) => Bson::Array(items),
    }
}

#[cfg(test)]
mod tests;
