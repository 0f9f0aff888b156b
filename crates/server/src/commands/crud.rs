//! Data commands: `find`, `getMore`, `killCursors`, `count`, `distinct`, `aggregate`, `insert`, `update`,
//! `delete`, `findAndModify`.
//!
//! Reads take the engine's read lock; writes run inside one [`crate::engine::Engine::write`] so a whole
//! write command is one batch at the durability choke point (an ordered insert that stops at a duplicate
//! key commits the documents before it, as mongod does, and reports the failure in `writeErrors`).
//!
//! `find` picks an access path as mongod's planner would for the same results (see `Matcher::access`): a
//! `$natural` hint or sort scans the collection; a hint naming the `_id` index or a plannable single-field
//! index scans it; a sort on one such field by `±1` walks its index in order (stopping once `skip + limit`
//! documents matched) when the filter bounds that field or nothing else is indexed; otherwise equality, `$in`
//! and range predicates on a top-level indexed field (`_id` first) give index bounds, both bounds of a range
//! combined unless the index is multikey, and a range only covers its operand's type bracket, as MongoDB's
//! comparison operators do. `_id` candidates come in `_id` order, secondary ones in natural order. The full
//! filter is applied to every document examined, so results equal a full scan's. `count`, `distinct`,
//! `update`, `delete` and `findAndModify` use the same bounds. Keys and documents examined are counted in
//! `serverStatus` `metrics.queryExecutor` (`scanned`, `scannedObjects`). A query without index or sort
//! becomes a scan cursor streaming stored bytes (filtered and projected on the way when asked); a sort not
//! served by an index materialises, sorts, then skips and limits; a view is rewritten into an aggregation over
//! its source. Inserted documents without `_id` get an ObjectId placed first; an `_id` elsewhere is moved
//! first (mongod's `fixDocumentForInsert`); all other bytes are kept as sent, except empty top-level
//! timestamps, replaced as mongod does unless `bypassEmptyTsReplacement` is set (see [`crate::empty_ts`]).
//! Under `--auth`, `getMore` and `killCursors` only accept cursors opened by the same user.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::ops::Bound::{self, Excluded, Included, Unbounded};

use bson::spec::ElementType;
use bson::{Bson, Document, RawDocument, RawDocumentBuf, doc, oid::ObjectId};
use tidemark_query::{Filter, Pipeline, Projection, SortSpec, Update};

use super::admin::{ensure_collection, refused_write_error, request_ns, view_error, write_concern_j};
use super::{AuthRequirement, Ctx, Registry, Reply, Request, Stats, check_size, get_bool, get_doc, get_i64, ok_with};
use crate::cursor::{Cursor, CursorSource, DEFAULT_FIRST_BATCH, DocTransform, ScanState};
use crate::engine::QueryMetrics;
use crate::engine::collection::{Collection, KeyRanges, valid_range};
use crate::engine::key::{Key, path_values, raw_id};
use crate::engine::{Catalog, Mutation, Namespace, WriteTxn};
use crate::error::{CommandError, CommandResult};
use crate::timeseries::TimeseriesOptions;

/// Registers this group's commands.
pub fn register(r: &mut Registry) {
    use AuthRequirement::Check;
    r.register("find", find, Check);
    r.register("getMore", get_more, Check);
    r.register("killCursors", kill_cursors, Check);
    r.register("count", count, Check);
    r.register("distinct", distinct, Check);
    r.register("aggregate", aggregate, Check);
    r.register("insert", insert, Check);
    r.register("update", update, Check);
    r.register("delete", delete, Check);
    r.register("findAndModify", find_and_modify, Check);
    r.alias("findandmodify", "findAndModify");
}

// ---------------------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------------------

/// `cursor.batchSize` (for `aggregate`, `listCollections`, `listIndexes`) when `key` is `"cursor"`, or a
/// top-level `batchSize`.
pub fn batch_size_arg(body: &Document, key: &str) -> CommandResult<Option<usize>> {
    let v = if key == "cursor" {
        match get_doc(body, "cursor")? {
            Some(c) => get_i64(c, "batchSize")?,
            None => None,
        }
    } else {
        get_i64(body, key)?
    };
    match v {
        None => Ok(None),
        Some(n) if n < 0 => Err(CommandError::bad_value(format!(
            "BatchSize value must be non-negative, but received: {n}"
        ))),
        Some(n) => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
    }
}

/// Produces the first batch of `cursor`, registering it for `getMore` if documents remain.
pub fn first_batch(
    ctx: &mut Ctx<'_>,
    mut cursor: Cursor,
    batch_size: Option<usize>,
    single: bool,
) -> CommandResult<Reply> {
    let ns = cursor.ns.clone();
    if batch_size == Some(0) && !single {
        let id = ctx
            .server
            .cursors
            .register_owned(cursor, ctx.conn.auth.users().to_vec());
        return Ok(Reply::Raw(super::raw::cursor_reply(
            "firstBatch",
            std::iter::empty(),
            id,
            &ns,
        )?));
    }
    let limit = Some(batch_size.unwrap_or(DEFAULT_FIRST_BATCH));
    // Build the reply straight from the batch (stored bytes copied once), then fill in the cursor id.
    let ((mut bytes, id_offset), exhausted) = cursor.next_batch(&ctx.server.engine, limit, |b| {
        Ok((
            super::raw::cursor_reply_bytes("firstBatch", b.docs.iter().map(|d| d.as_ref()), 0, &ns)?,
            b.exhausted,
        ))
    })?;
    if !exhausted && !single {
        let id = ctx
            .server
            .cursors
            .register_owned(cursor, ctx.conn.auth.users().to_vec());
        super::raw::set_cursor_id(&mut bytes, id_offset, id)?;
    }
    let raw = RawDocumentBuf::from_bytes(bytes).map_err(|e| CommandError::internal(format!("bad reply built: {e}")))?;
    Ok(Reply::Raw(raw))
}

/// Encodes typed documents as a buffered cursor source.
fn buffered(docs: Vec<Document>) -> CommandResult<CursorSource> {
    let mut out = std::collections::VecDeque::with_capacity(docs.len());
    for d in docs {
        out.push_back(encode(&d)?);
    }
    Ok(CursorSource::Buffered(out))
}

fn encode(d: &Document) -> CommandResult<RawDocumentBuf> {
    RawDocumentBuf::from_document(d).map_err(|e| CommandError::bad_value(format!("cannot encode document: {e}")))
}

fn decode(raw: &RawDocument, ns: &Namespace) -> CommandResult<Document> {
    Document::try_from(raw).map_err(|e| CommandError::internal(format!("stored document in {ns} is invalid: {e}")))
}

/// A parsed query filter and, for each top-level field with equality, `$in` or range predicates, the index
/// key ranges its values must fall in (see [`field_bounds`]).
struct Matcher<'m> {
    filter: Option<Filter>,
    bounds: Vec<FieldBounds>,
    metrics: Option<&'m QueryMetrics>,
}

/// Index bounds of one top-level field: every document matching the filter has a key of that field in them.
struct FieldBounds {
    field: String,
    /// The intersection of the bounds of all the field's predicates: valid for indexes where each document
    /// has a single key (`{a: {$gt: 1, $lt: 3}}` matches `a: [0, 5]`, whose keys are both outside `(1, 3)`).
    all: KeyRanges,
    /// The bounds of the field's first plannable predicate alone, valid for any index.
    one: KeyRanges,
}

/// The key just past either end of the operand's type bracket, for range operators: MongoDB's `$gt`, `$lt`
/// ... only match values of the operand's canonical type (`{$gt: 5}` matches no string).
fn bracket(v: &Bson) -> Option<(Bound<Key>, Bound<Key>)> {
    use bson::oid::ObjectId;
    let k = |b: Bson| Key(b);
    Some(match v {
        Bson::Double(_) | Bson::Int32(_) | Bson::Int64(_) => {
            (Excluded(k(Bson::Null)), Excluded(k(Bson::String(String::new()))))
        }
        Bson::String(_) => (
            Included(k(Bson::String(String::new()))),
            Excluded(k(Bson::Document(Document::new()))),
        ),
        Bson::ObjectId(_) => (
            Included(k(Bson::ObjectId(ObjectId::from_bytes([0; 12])))),
            Included(k(Bson::ObjectId(ObjectId::from_bytes([0xff; 12])))),
        ),
        Bson::Boolean(_) => (Included(k(Bson::Boolean(false))), Included(k(Bson::Boolean(true)))),
        Bson::DateTime(_) => (
            Excluded(k(Bson::Boolean(true))),
            Excluded(k(Bson::Timestamp(bson::Timestamp { time: 0, increment: 0 }))),
        ),
        Bson::Timestamp(_) => (
            Included(k(Bson::Timestamp(bson::Timestamp { time: 0, increment: 0 }))),
            Included(k(Bson::Timestamp(bson::Timestamp {
                time: u32::MAX,
                increment: u32::MAX,
            }))),
        ),
        _ => return None,
    })
}

/// Whether an operand can bound an index scan: scalars whose equality and order are plain key order (strings
/// compare by bytes here, as the filter does, since collations are not applied).
fn plannable(v: &Bson) -> bool {
    match v {
        Bson::Double(d) => !d.is_nan(),
        Bson::Int32(_)
        | Bson::Int64(_)
        | Bson::String(_)
        | Bson::DateTime(_)
        | Bson::ObjectId(_)
        | Bson::Boolean(_)
        | Bson::Timestamp(_) => true,
        _ => false,
    }
}

/// The ranges matched by one predicate `op: v` on a field, if it is plannable.
fn predicate_ranges(op: &str, v: &Bson) -> Option<KeyRanges> {
    let point = |v: &Bson| (Included(Key(v.clone())), Included(Key(v.clone())));
    match op {
        "$eq" if plannable(v) => Some(vec![point(v)]),
        "$in" => {
            let Bson::Array(values) = v else { return None };
            if !values.iter().all(plannable) {
                return None;
            }
            let mut keys: Vec<Key> = values.iter().map(|v| Key(v.clone())).collect();
            keys.sort();
            keys.dedup();
            Some(keys.into_iter().map(|k| (Included(k.clone()), Included(k))).collect())
        }
        "$gt" | "$gte" | "$lt" | "$lte" if plannable(v) => {
            let (lo, hi) = bracket(v)?;
            let k = Key(v.clone());
            Some(vec![match op {
                "$gt" => (Excluded(k), hi),
                "$gte" => (Included(k), hi),
                "$lt" => (lo, Excluded(k)),
                _ => (lo, Included(k)),
            }])
        }
        _ => None,
    }
}

/// Whether the `_id` index bounds of `filter` select exactly the documents it matches: it constrains
/// `_id` alone, with comparison or `$in` operators on plannable values, whose bounds are type-bracketed
/// like the operators themselves. Then documents read through those bounds need not be matched again
/// (mongod's exact index bounds: its FETCH stage gets no filter).
fn exact_id_bounds(filter: &Document) -> bool {
    filter.len() == 1
        && filter.iter().all(|(field, cond)| {
            field == "_id"
                && match cond {
                    Bson::Document(ops) if !ops.is_empty() && ops.keys().all(|k| k.starts_with('$')) => {
                        ops.iter().all(|(op, v)| predicate_ranges(op, v).is_some())
                    }
                    v => predicate_ranges("$eq", v).is_some(),
                }
        })
}

/// The tighter of two lower bounds.
fn max_lo(a: Bound<Key>, b: Bound<Key>) -> Bound<Key> {
    tighter(a, b, std::cmp::Ordering::Greater)
}

/// The tighter of two upper bounds.
fn min_hi(a: Bound<Key>, b: Bound<Key>) -> Bound<Key> {
    tighter(a, b, std::cmp::Ordering::Less)
}

/// The tighter of two bounds on the same side: `a` when its key compares `keep_a` to `b`'s (greater for
/// lower bounds, less for upper bounds); on equal keys the exclusive one; an unbounded side never wins.
fn tighter(a: Bound<Key>, b: Bound<Key>, keep_a: std::cmp::Ordering) -> Bound<Key> {
    match (&a, &b) {
        (Unbounded, _) => b,
        (_, Unbounded) => a,
        (Included(x) | Excluded(x), Included(y) | Excluded(y)) => match x.cmp(y) {
            std::cmp::Ordering::Equal if matches!(a, Excluded(_)) => a,
            std::cmp::Ordering::Equal => b,
            order if order == keep_a => a,
            _ => b,
        },
    }
}

/// The intersection of two ascending lists of disjoint ranges (ascending and disjoint again).
fn intersect(a: &KeyRanges, b: &KeyRanges) -> KeyRanges {
    let mut out = Vec::new();
    for (alo, ahi) in a {
        for (blo, bhi) in b {
            let lo = max_lo(alo.clone(), blo.clone());
            let hi = min_hi(ahi.clone(), bhi.clone());
            if valid_range(lo.as_ref(), hi.as_ref()) {
                out.push((lo, hi));
            }
        }
    }
    out
}

/// Index bounds of the top-level fields of `filter` with plannable predicates. Every conjunct of a filter must
/// hold, so the bounds of any one field bound the candidates whatever the other predicates are.
fn field_bounds(filter: &Document) -> Vec<FieldBounds> {
    let mut out = Vec::new();
    for (field, cond) in filter {
        if field.starts_with('$') || field.contains('.') {
            continue;
        }
        let preds: Vec<KeyRanges> = match cond {
            Bson::Document(ops) if !ops.is_empty() && ops.keys().all(|k| k.starts_with('$')) => {
                ops.iter().filter_map(|(op, v)| predicate_ranges(op, v)).collect()
            }
            v => predicate_ranges("$eq", v).into_iter().collect(),
        };
        let Some(one) = preds.first().cloned() else { continue };
        let all = preds.iter().skip(1).fold(one.clone(), |acc, p| intersect(&acc, p));
        out.push(FieldBounds {
            field: field.clone(),
            all,
            one,
        });
    }
    out
}

/// An index hint resolved against the collection.
enum Hint {
    /// No hint (or an empty one), or one naming an index the planner does not scan.
    None,
    /// `{$natural: ±1}` (or `sort: {$natural: ±1}`): a collection scan.
    Natural,
    /// The field of the `_id` index or of a plannable single-field index.
    Field(String),
}

/// How a query visits documents.
enum Access<'a> {
    /// Record ids in the requested sort order (an index walk on the sort field).
    Ordered(Box<dyn Iterator<Item = u64> + 'a>),
    /// Candidate record ids from an index; `natural` asks for them in natural order (a secondary index),
    /// otherwise they are returned in index order (the `_id` index, as mongod's index scan does).
    Candidates(Box<dyn Iterator<Item = u64> + 'a>, bool),
    /// A collection scan.
    Scan,
}

impl Matcher<'static> {
    fn new(filter: Option<&Document>) -> CommandResult<Self> {
        let Some(f) = filter.filter(|f| !f.is_empty()) else {
            return Ok(Self {
                filter: None,
                bounds: Vec::new(),
                metrics: None,
            });
        };
        let parsed = Filter::parse(f).map_err(CommandError::from)?;
        Ok(Self {
            filter: Some(parsed),
            bounds: field_bounds(f),
            metrics: None,
        })
    }
}

impl<'m> Matcher<'m> {
    /// Counts keys and documents examined into `metrics` (`serverStatus` `metrics.queryExecutor`).
    fn counting(self, metrics: &QueryMetrics) -> Matcher<'_> {
        Matcher {
            filter: self.filter,
            bounds: self.bounds,
            metrics: Some(metrics),
        }
    }

    fn matches(&self, d: &Document) -> bool {
        self.filter.as_ref().is_none_or(|f| f.matches(d))
    }

    fn field(&self, field: &str) -> Option<&FieldBounds> {
        self.bounds.iter().find(|b| b.field == field)
    }

    /// Bounds usable on the index of `b.field` (intersected when each document has a single key).
    fn ranges_for(coll: &Collection, b: &FieldBounds) -> KeyRanges {
        if coll.scannable(&b.field, true) {
            b.all.clone()
        } else {
            b.one.clone()
        }
    }

    /// Picks the access path: a hinted index, an index walk in the order of a single-field sort (`sort` is
    /// the field and whether descending), an index on a field the filter bounds (`_id` first), or a scan.
    fn access<'a>(&self, coll: &'a Collection, sort: Option<(&str, bool)>, hint: &Hint) -> Access<'a> {
        let full = || vec![(Unbounded, Unbounded)];
        let sort = sort.filter(|(f, _)| coll.scannable(f, true));
        match hint {
            Hint::Natural => return Access::Scan,
            Hint::Field(field) => {
                let ranges = self.field(field).map_or_else(full, |b| Self::ranges_for(coll, b));
                if let Some((s, desc)) = sort.filter(|(s, _)| s == field)
                    && let Some(it) = coll.index_scan(s, ranges.clone(), desc)
                {
                    return Access::Ordered(it);
                }
                if let Some(it) = coll.index_scan(field, ranges, false) {
                    return Access::Candidates(it, field != "_id");
                }
            }
            Hint::None => {}
        }
        if let Some((s, desc)) = sort
            && let Some(b) = self.field(s)
            && let Some(it) = coll.index_scan(s, b.all.clone(), desc)
        {
            return Access::Ordered(it);
        }
        let mut fields: Vec<&FieldBounds> = self.bounds.iter().filter(|b| coll.scannable(&b.field, false)).collect();
        fields.sort_by_key(|b| b.field != "_id");
        if let Some(b) = fields.first()
            && let Some(it) = coll.index_scan(&b.field, Self::ranges_for(coll, b), false)
        {
            return Access::Candidates(it, b.field != "_id");
        }
        if let Some((s, desc)) = sort
            && let Some(it) = coll.index_scan(s, full(), desc)
        {
            return Access::Ordered(it);
        }
        Access::Scan
    }

    /// Matching documents along `access`: in its order (natural order for a scan or secondary candidates,
    /// reversed when `reverse`), leaving out the first `skip` matches, stopping after `stop` matches when
    /// given. Without a filter every document matches, so skipped ones are not even fetched. Counts keys and
    /// documents examined.
    fn gather<'a>(
        &self,
        coll: &'a Collection,
        ns: &Namespace,
        access: Access<'a>,
        reverse: bool,
        skip: usize,
        stop: Option<usize>,
    ) -> CommandResult<Vec<(u64, &'a RawDocumentBuf, Document)>> {
        let mut skip = skip;
        let mut keys = 0u64;
        let mut docs = 0u64;
        let mut out = Vec::new();
        let result = (|| -> CommandResult<()> {
            let (recs, lazy_keys): (Box<dyn Iterator<Item = u64> + 'a>, bool) = match access {
                Access::Ordered(it) | Access::Candidates(it, false) => (it, true),
                Access::Candidates(it, true) => {
                    let mut set = BTreeSet::new();
                    for rec in it {
                        keys += 1;
                        set.insert(rec);
                    }
                    if reverse {
                        (Box::new(set.into_iter().rev()), false)
                    } else {
                        (Box::new(set.into_iter()), false)
                    }
                }
                Access::Scan => (Box::new(coll.scan_from(None, reverse).map(|(rec, _)| rec)), false),
            };
            for rec in recs {
                if stop.is_some_and(|l| out.len() >= l) {
                    break;
                }
                if lazy_keys {
                    keys += 1;
                }
                if skip > 0 && self.filter.is_none() {
                    skip -= 1;
                    continue;
                }
                let Some(raw) = coll.get(rec) else { continue };
                docs += 1;
                let d = decode(raw, ns)?;
                if self.matches(&d) {
                    if skip > 0 {
                        skip -= 1;
                    } else {
                        out.push((rec, raw, d));
                    }
                }
            }
            Ok(())
        })();
        if let Some(m) = self.metrics {
            m.add_keys(keys);
            m.add_docs(docs);
        }
        result.map(|()| out)
    }

    /// Matching documents of a collection, through the index the filter allows if any (see
    /// [`Matcher::access`]), stopping after `limit` matches: `(record, raw, parsed)`.
    fn collect<'a>(
        &self,
        coll: &'a Collection,
        ns: &Namespace,
        reverse: bool,
        limit: Option<usize>,
    ) -> CommandResult<Vec<(u64, &'a RawDocumentBuf, Document)>> {
        let access = self.access(coll, None, &Hint::None);
        self.gather(coll, ns, access, reverse, 0, limit)
    }
}

/// `hint`: `{$natural: 1|-1}` picks the scan direction; any other hint must name an existing index.
fn hint_direction(body: &Document, coll: Option<&Collection>) -> CommandResult<bool> {
    match body.get("hint") {
        None => Ok(false),
        Some(Bson::Document(h)) if h.is_empty() => Ok(false),
        Some(Bson::Document(h)) if h.contains_key("$natural") => {
            Ok(h.get("$natural").and_then(super::raw::as_i64).is_some_and(|v| v < 0))
        }
        Some(h) => {
            let exists = coll.is_none_or(|c| {
                c.indexes().iter().any(|i| match h {
                    Bson::String(name) => &i.name == name,
                    Bson::Document(k) => &i.key_pattern() == k,
                    _ => false,
                })
            });
            if exists {
                Ok(false)
            } else {
                Err(CommandError::bad_value(
                    "hint provided does not correspond to an existing index",
                ))
            }
        }
    }
}

/// Resolves a (validated, see [`hint_direction`]) hint to the planner's [`Hint`].
fn resolve_hint(body: &Document, coll: &Collection) -> Hint {
    let index = match body.get("hint") {
        Some(Bson::Document(h)) if h.contains_key("$natural") => {
            return Hint::Natural;
        }
        Some(Bson::Document(h)) if h.is_empty() => None,
        Some(Bson::Document(k)) => coll.indexes().iter().find(|i| &i.key_pattern() == k),
        Some(Bson::String(name)) => coll.indexes().iter().find(|i| &i.name == name),
        _ => None,
    };
    match index {
        Some(i) if i.fields.len() == 1 && coll.scannable(&i.fields[0], false) => Hint::Field(i.fields[0].clone()),
        _ => Hint::None,
    }
}

/// The field and direction (`true` = descending) of a sort on one field by `1` or `-1`.
fn single_field_sort(sort: Option<&Document>) -> Option<(&str, bool)> {
    let s = sort?;
    if s.len() != 1 {
        return None;
    }
    let (field, dir) = s.iter().next()?;
    let dir = match dir {
        Bson::Int32(i) => i64::from(*i),
        Bson::Int64(i) => *i,
        Bson::Double(d) if *d == 1.0 || *d == -1.0 => {
            if *d > 0.0 {
                1
            } else {
                -1
            }
        }
        _ => return None,
    };
    match dir {
        1 => Some((field.as_str(), false)),
        -1 => Some((field.as_str(), true)),
        _ => None,
    }
}

/// The stages a view expands to (its own pipeline after those of the views it is defined on), and the
/// underlying collection's namespace.
fn resolve_view(cat: &Catalog, ns: &Namespace) -> CommandResult<Option<(Namespace, Vec<Document>)>> {
    let mut current = ns.clone();
    let mut stages: Vec<Document> = Vec::new();
    let mut depth = 0;
    loop {
        let Some(coll) = cat.collection(&current) else {
            return Ok(if depth == 0 { None } else { Some((current, stages)) });
        };
        if let Some(opts) = crate::timeseries::options_of(cat, &current)? {
            // Mongod's view pipeline of a time series collection: unpack its buckets.
            let mut all = vec![opts.unpack_stage()];
            all.extend(stages);
            return Ok(Some((crate::timeseries::buckets_ns(&current)?, all)));
        }
        if !coll.is_view() {
            return Ok(if depth == 0 { None } else { Some((current, stages)) });
        }
        depth += 1;
        if depth > 20 {
            return Err(CommandError::new(
                43,
                "ViewDepthLimitExceeded",
                "View depth too deep or view cycle detected; maximum depth is 20",
            ));
        }
        let mut own: Vec<Document> = match coll.options.get("pipeline") {
            Some(Bson::Array(a)) => a.iter().filter_map(|s| s.as_document().cloned()).collect(),
            _ => Vec::new(),
        };
        own.extend(stages);
        stages = own;
        let on = coll.options.get_str("viewOn").unwrap_or_default().to_string();
        current = Namespace::new(&ns.db, &on)?;
    }
}

/// Runs `stages` over the documents of `ns` (resolving views) and returns the output.
fn run_pipeline(ctx: &Ctx<'_>, ns: &Namespace, stages: Vec<Document>) -> CommandResult<Vec<Document>> {
    ctx.server.engine.read(|cat| {
        let (source, mut all) = match resolve_view(cat, ns)? {
            Some((src, view_stages)) => (src, view_stages),
            None => (ns.clone(), Vec::new()),
        };
        all.extend(stages);
        // A leading `$_internalUnpackBucket` turns bucket documents into measurements.
        let unpack = match all.first().and_then(|s| s.get(crate::timeseries::UNPACK_STAGE)) {
            Some(Bson::Document(spec)) => Some(TimeseriesOptions::from_document(spec)?),
            Some(_) => {
                return Err(CommandError::failed_to_parse(format!(
                    "{} specification must be an object",
                    crate::timeseries::UNPACK_STAGE
                )));
            }
            None => None,
        };
        if unpack.is_some() {
            all.remove(0);
        }
        let pipeline = Pipeline::parse(&all).map_err(CommandError::from)?;
        let mut docs: Vec<Document> = Vec::new();
        if let Some(c) = cat.collection(&source) {
            for (_, raw) in c.iter() {
                let d = decode(raw, &source)?;
                match &unpack {
                    Some(opts) => crate::timeseries::unpack(&d, opts, &mut docs)?,
                    None => docs.push(d),
                }
            }
        }
        pipeline.run(docs.into_iter()).map_err(CommandError::from)
    })
}

fn known_fields(req: &Request, allowed: &[&str]) -> CommandResult<()> {
    for k in req.body.keys().skip(1) {
        if !allowed.contains(&k.as_str()) && !super::admin::is_generic_arg(k) {
            return Err(CommandError::unknown_field(format!(
                "BSON field '{}.{k}' is an unknown field.",
                req.name
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------------------------------------

const FIND_FIELDS: &[&str] = &[
    "filter",
    "sort",
    "projection",
    "skip",
    "limit",
    "batchSize",
    "singleBatch",
    "hint",
    "collation",
    "allowDiskUse",
    "noCursorTimeout",
    "tailable",
    "awaitData",
    "allowPartialResults",
    "returnKey",
    "showRecordId",
    "min",
    "max",
    "let",
    "oplogReplay",
    "readOnce",
    "term",
];

fn find(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    known_fields(req, FIND_FIELDS)?;
    let ns = request_ns(req)?;
    Stats::add(&ctx.server.stats.op_query, 1);
    let filter = get_doc(&req.body, "filter")?.cloned();
    let sort = get_doc(&req.body, "sort")?.filter(|s| !s.is_empty()).cloned();
    // `sort: {$natural: ±1}` is a scan direction; tailable cursors are scans that stay open.
    let (sort, natural) = crate::cursor::natural_sort(sort);
    let tail = crate::cursor::tail_options(&req.body, natural, sort.is_some())?;
    let projection = get_doc(&req.body, "projection")?.filter(|p| !p.is_empty()).cloned();
    let skip = match get_i64(&req.body, "skip")? {
        Some(s) if s < 0 => {
            return Err(CommandError::bad_value(format!(
                "Skip value must be non-negative, but received: {s}"
            )));
        }
        s => u64::try_from(s.unwrap_or(0)).unwrap_or(0),
    };
    let mut single = get_bool(&req.body, "singleBatch")?.unwrap_or(false);
    let limit = match get_i64(&req.body, "limit")? {
        Some(l) if l < 0 => {
            // A negative limit (legacy form) asks for a single batch of at most |limit| documents.
            single = true;
            Some(l.unsigned_abs())
        }
        Some(0) | None => None,
        Some(l) => Some(l.unsigned_abs()),
    };
    let mut batch_size = batch_size_arg(&req.body, "batchSize")?;
    if let Some(l) = limit {
        let l = usize::try_from(l).unwrap_or(usize::MAX);
        // The first batch holds at most the default (or requested) batch size, and never more than the limit.
        batch_size = Some(batch_size.map_or(l.min(DEFAULT_FIRST_BATCH), |b| if b == 0 { 0 } else { b.min(l) }));
        if single {
            batch_size = Some(l);
        }
    }
    let matcher = Matcher::new(filter.as_ref())?.counting(ctx.server.engine.metrics());
    let proj = projection
        .as_ref()
        .map(|p| Projection::parse(p).map_err(CommandError::from))
        .transpose()?;
    let sort_spec = sort
        .as_ref()
        .map(|s| SortSpec::parse(s).map_err(CommandError::from))
        .transpose()?;

    enum Plan {
        View,
        Scan([u8; 16], bool, Option<u64>),
        IdScan([u8; 16], KeyRanges),
        Buffered(Vec<Document>),
        Ready(std::collections::VecDeque<RawDocumentBuf>),
    }
    let plan = ctx.server.engine.read(|cat| -> CommandResult<Plan> {
        let Some(coll) = cat.collection(&ns) else {
            hint_direction(&req.body, None)?;
            return Ok(Plan::Buffered(Vec::new()));
        };
        if coll.is_virtual() {
            return Ok(Plan::View);
        }
        let hinted = hint_direction(&req.body, Some(coll))?;
        let reverse = natural.unwrap_or(hinted);
        if tail.is_some() && !coll.is_capped() {
            return Err(CommandError::bad_value(format!(
                "error processing query: ns={ns} tailable cursor requested on non capped collection"
            )));
        }
        // `sort: {$natural: ±1}` forces a collection scan, as a `$natural` hint does.
        let hint = if natural.is_some() {
            Hint::Natural
        } else {
            resolve_hint(&req.body, coll)
        };
        // An unsorted walk of the `_id` index streams from the index position kept by the cursor
        // (documents as stored, bounded memory) instead of being materialised here.
        let id_walk = sort_spec.is_none()
            && tail.is_none()
            && coll.has_id_index()
            && match &hint {
                Hint::Field(f) => f == "_id",
                Hint::None => matcher.field("_id").is_some() && coll.scannable("_id", false),
                Hint::Natural => false,
            };
        if id_walk {
            let ranges = matcher
                .field("_id")
                .map_or_else(|| vec![(Unbounded, Unbounded)], |b| Matcher::ranges_for(coll, b));
            return Ok(Plan::IdScan(coll.uuid, ranges));
        }
        let access = if tail.is_some() {
            Access::Scan
        } else {
            matcher.access(coll, single_field_sort(sort.as_ref()), &hint)
        };
        let ordered = matches!(access, Access::Ordered(_));
        if sort_spec.is_none() && matches!(access, Access::Scan) {
            // Oplog queries with a lower `ts` bound start at that entry instead of scanning from the start.
            let start = crate::repl::oplog::scan_start(&ns, coll, filter.as_ref(), reverse);
            return Ok(Plan::Scan(coll.uuid, reverse, start));
        }
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        let limit = limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX));
        // Without an in-memory sort the walk skips, and stops once `limit` documents matched.
        let final_order = sort_spec.is_none() || ordered;
        let (walk_skip, stop, skip) = if final_order { (skip, limit, 0) } else { (0, None, skip) };
        let mut found = matcher.gather(coll, &ns, access, reverse, walk_skip, stop)?;
        if let Some(s) = sort_spec.as_ref().filter(|_| !ordered) {
            found.sort_by(|a, b| s.compare(&a.2, &b.2));
        }
        // Documents are returned as stored (no re-encoding) unless projected.
        let mut out = std::collections::VecDeque::new();
        for (_, raw, d) in found.into_iter().skip(skip).take(limit.unwrap_or(usize::MAX)) {
            out.push_back(match &proj {
                Some(p) => encode(&p.apply(&d))?,
                None => raw.clone(),
            });
        }
        Ok(Plan::Ready(out))
    })?;
    let source = match plan {
        Plan::Buffered(docs) => buffered(docs)?,
        Plan::Ready(docs) => CursorSource::Buffered(docs),
        Plan::IdScan(uuid, ranges) => {
            let projection: Option<DocTransform> =
                proj.map(|p| Box::new(move |d: &Document| Ok(p.apply(d))) as DocTransform);
            // Exact bounds need no second look at the documents, as in mongod's plans.
            let exact = filter.as_ref().is_some_and(exact_id_bounds);
            CursorSource::Scan(Box::new(ScanState {
                ns: ns.clone(),
                uuid,
                after: None,
                id_ranges: Some(ranges),
                after_id: None,
                reverse: false,
                filter: if exact { None } else { matcher.filter },
                projection,
                skip,
                remaining: limit,
                tail: None,
            }))
        }
        Plan::Scan(uuid, reverse, start) => {
            let projection: Option<DocTransform> =
                proj.map(|p| Box::new(move |d: &Document| Ok(p.apply(d))) as DocTransform);
            CursorSource::Scan(Box::new(ScanState {
                ns: ns.clone(),
                uuid,
                after: start,
                id_ranges: None,
                after_id: None,
                reverse,
                filter: matcher.filter,
                projection,
                skip,
                remaining: limit,
                tail,
            }))
        }
        Plan::View => {
            let mut stages = Vec::new();
            if let Some(f) = filter.filter(|f| !f.is_empty()) {
                stages.push(doc! { "$match": f });
            }
            if let Some(s) = sort {
                stages.push(doc! { "$sort": s });
            }
            if skip > 0 {
                stages.push(doc! { "$skip": i64::try_from(skip).unwrap_or(i64::MAX) });
            }
            if let Some(l) = limit {
                stages.push(doc! { "$limit": i64::try_from(l).unwrap_or(i64::MAX) });
            }
            if let Some(p) = projection {
                stages.push(doc! { "$project": p });
            }
            buffered(run_pipeline(ctx, &ns, stages)?)?
        }
    };
    let cursor = Cursor {
        ns: ns.to_string(),
        db: ns.db.clone(),
        collection: ns.coll.clone(),
        source,
    };
    first_batch(ctx, cursor, batch_size, single)
}

fn get_more(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    Stats::add(&ctx.server.stats.op_getmore, 1);
    let id = match req.first_value() {
        Some(Bson::Int64(i)) => *i,
        _ => {
            return Err(CommandError::type_mismatch(
                "BSON field 'getMore.getMore' is the wrong type, expected type 'long'",
            ));
        }
    };
    let coll = match req.body.get("collection") {
        Some(Bson::String(s)) => s.clone(),
        _ => {
            return Err(CommandError::missing_field(
                "BSON field 'getMore.collection' is missing but a required field",
            ));
        }
    };
    let batch_size = batch_size_arg(&req.body, "batchSize")?.filter(|b| *b > 0);
    if ctx.server.config.auth {
        ctx.server.cursors.check_owner(id, ctx.conn.auth.users())?;
    }
    let mut cursor = ctx
        .server
        .cursors
        .take(id)
        .ok_or_else(|| CommandError::cursor_not_found(format!("cursor id {id} not found")))?;
    if cursor.db != req.db || cursor.collection != coll {
        let cursor_ns = cursor.ns.clone();
        ctx.server.cursors.put_back(id, cursor);
        return Err(CommandError::unauthorized(format!(
            "Requested getMore on namespace '{}.{coll}', but cursor belongs to a different namespace {cursor_ns}",
            req.db
        )));
    }
    let ns = cursor.ns.clone();
    // Tailable awaitData cursors wait (without holding any lock) for a write before answering empty.
    let deadline = match cursor.await_deadline(&req.body) {
        Ok(d) => d,
        Err(e) => {
            ctx.server.cursors.put_back(id, cursor);
            return Err(e);
        }
    };
    let oplog = ctx.server.repl.oplog();
    let result = loop {
        let seen = oplog.change_count();
        let r = cursor.next_batch(&ctx.server.engine, batch_size, |b| {
            let exhausted = b.exhausted;
            let id_out = if exhausted { 0 } else { id };
            super::raw::cursor_reply("nextBatch", b.docs.iter().map(|d| d.as_ref()), id_out, &ns)
                .map(|r| (r, exhausted, b.docs.is_empty()))
        });
        match (&r, deadline) {
            (Ok((_, false, true)), Some(d)) if oplog.wait_for_change(seen, d) => continue,
            _ => break r.map(|(reply, exhausted, _)| (reply, exhausted)),
        }
    };
    match result {
        Ok((reply, exhausted)) => {
            if !exhausted {
                ctx.server.cursors.put_back(id, cursor);
            }
            Ok(Reply::Raw(reply))
        }
        Err(e) => Err(e),
    }
}

/// Whether the caller holds `killAnyCursor` (e.g. through `hostManager`/`root`), which lets `killCursors` close
/// cursors other users opened; `getMore` has no such exception.
fn may_kill_any_cursor(ctx: &Ctx<'_>, req: &Request) -> bool {
    use crate::auth::privileges::Target;
    let coll = req.collection().unwrap_or_default();
    crate::auth::is_allowed(&ctx.conn.auth, &Target::Cluster, "killAnyCursor")
        || crate::auth::is_allowed(
            &ctx.conn.auth,
            &Target::Collection(req.db.clone(), coll),
            "killAnyCursor",
        )
}

fn kill_cursors(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    request_ns(req)?;
    let ids = match req.body.get("cursors") {
        Some(Bson::Array(a)) => a.clone(),
        _ => {
            return Err(CommandError::missing_field(
                "BSON field 'killCursors.cursors' is missing but a required field",
            ));
        }
    };
    let mut killed = Vec::new();
    let mut not_found = Vec::new();
    for v in ids {
        let Bson::Int64(id) = v else {
            return Err(CommandError::type_mismatch(
                "BSON field 'killCursors.cursors' must contain longs",
            ));
        };
        if ctx.server.config.auth && !may_kill_any_cursor(ctx, req) {
            ctx.server.cursors.check_owner(id, ctx.conn.auth.users())?;
        }
        if ctx.server.cursors.kill(id) {
            killed.push(Bson::Int64(id));
        } else {
            not_found.push(Bson::Int64(id));
        }
    }
    Ok(ok_with(
        doc! { "cursorsKilled": killed, "cursorsNotFound": not_found, "cursorsAlive": [], "cursorsUnknown": [] },
    ))
}

fn count(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    let ns = request_ns(req)?;
    Stats::add(&ctx.server.stats.op_query, 1);
    let query = get_doc(&req.body, "query")?.cloned();
    let skip = match get_i64(&req.body, "skip")? {
        Some(s) if s < 0 => return Err(CommandError::bad_value("skip value is negative in count query")),
        s => usize::try_from(s.unwrap_or(0)).unwrap_or(usize::MAX),
    };
    let limit = get_i64(&req.body, "limit")?
        .filter(|l| *l != 0)
        .map(|l| usize::try_from(l.unsigned_abs()).unwrap_or(usize::MAX));
    let matcher = Matcher::new(query.as_ref())?.counting(ctx.server.engine.metrics());
    let is_view = ctx
        .server
        .engine
        .read(|cat| cat.collection(&ns).is_some_and(Collection::is_virtual));
    let total = if is_view {
        let mut stages = Vec::new();
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            stages.push(doc! { "$match": q });
        }
        run_pipeline(ctx, &ns, stages)?.len()
    } else {
        ctx.server.engine.read(|cat| -> CommandResult<usize> {
            let Some(coll) = cat.collection(&ns) else { return Ok(0) };
            hint_direction(&req.body, Some(coll))?;
            if matcher.filter.is_none() {
                return Ok(coll.len());
            }
            let access = matcher.access(coll, None, &resolve_hint(&req.body, coll));
            Ok(matcher.gather(coll, &ns, access, false, 0, None)?.len())
        })?
    };
    let mut n = total.saturating_sub(skip);
    if let Some(l) = limit {
        n = n.min(l);
    }
    let n = i32::try_from(n)
        .map(Bson::Int32)
        .unwrap_or_else(|_| Bson::Int64(i64::try_from(n).unwrap_or(i64::MAX)));
    Ok(ok_with(doc! { "n": n }))
}

fn distinct(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    let ns = request_ns(req)?;
    Stats::add(&ctx.server.stats.op_query, 1);
    let key = match req.body.get("key") {
        Some(Bson::String(k)) => k.clone(),
        Some(_) => {
            return Err(CommandError::type_mismatch(
                "BSON field 'distinct.key' is the wrong type, expected type 'string'",
            ));
        }
        None => {
            return Err(CommandError::missing_field(
                "BSON field 'distinct.key' is missing but a required field",
            ));
        }
    };
    let query = get_doc(&req.body, "query")?.cloned();
    let matcher = Matcher::new(query.as_ref())?.counting(ctx.server.engine.metrics());
    let is_view = ctx
        .server
        .engine
        .read(|cat| cat.collection(&ns).is_some_and(Collection::is_virtual));
    let mut set: BTreeSet<Key> = BTreeSet::new();
    let mut add = |raw: &RawDocument| {
        if let Some(vals) = path_values(raw, &key) {
            for v in vals {
                if !matches!(v, Bson::Undefined) {
                    set.insert(Key(v));
                }
            }
        }
    };
    if is_view {
        let mut stages = Vec::new();
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            stages.push(doc! { "$match": q });
        }
        for d in run_pipeline(ctx, &ns, stages)? {
            add(&encode(&d)?);
        }
    } else {
        ctx.server.engine.read(|cat| -> CommandResult<()> {
            let Some(coll) = cat.collection(&ns) else { return Ok(()) };
            if matcher.filter.is_none() {
                for (_, raw) in coll.iter() {
                    add(raw);
                }
            } else {
                for (_, raw, _) in matcher.collect(coll, &ns, false, None)? {
                    add(raw);
                }
            }
            Ok(())
        })?;
    }
    let values: Vec<Bson> = set.into_iter().map(|k| k.0).collect();
    Ok(ok_with(doc! { "values": values }))
}

fn aggregate(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    Stats::add(&ctx.server.stats.op_query, 1);
    let stages: Vec<Document> = match req.body.get("pipeline") {
        Some(Bson::Array(a)) => a
            .iter()
            .map(|s| match s {
                Bson::Document(d) => Ok(d.clone()),
                _ => Err(CommandError::type_mismatch(
                    "Each element of the 'pipeline' array must be an object",
                )),
            })
            .collect::<CommandResult<_>>()?,
        Some(_) => {
            return Err(CommandError::type_mismatch(
                "'pipeline' option must be specified as an array",
            ));
        }
        None => {
            return Err(CommandError::missing_field(
                "BSON field 'aggregate.pipeline' is missing but a required field",
            ));
        }
    };
    if !req.body.contains_key("cursor") && !get_bool(&req.body, "explain")?.unwrap_or(false) {
        return Err(CommandError::failed_to_parse(
            "The 'cursor' option is required, except for aggregate with the explain argument",
        ));
    }
    let batch_size = batch_size_arg(&req.body, "cursor")?;
    let (ns, reply_ns) = match req.first_value() {
        Some(Bson::String(_)) => {
            let ns = request_ns(req)?;
            let s = ns.to_string();
            (Some(ns), s)
        }
        Some(v) if super::raw::as_i64(v) == Some(1) => (None, format!("{}.$cmd.aggregate", req.db)),
        _ => {
            return Err(CommandError::failed_to_parse(
                "Invalid aggregate namespace: the first field must be a collection name or 1",
            ));
        }
    };
    // `$out` as last stage: run the rest, then replace the target collection with the output.
    let out_target = stages.last().and_then(|s| s.get("$out")).cloned();
    let mut stages = stages;
    if out_target.is_some() {
        stages.pop();
    }
    let docs = match &ns {
        Some(ns) if count_pipeline(&stages).is_some() => {
            let (query, skip, limit) = count_pipeline(&stages).unwrap_or_default();
            count_documents(ctx, ns, query, skip, limit)?
        }
        Some(ns) => run_pipeline(ctx, ns, stages)?,
        None => {
            let pipeline = Pipeline::parse(&stages).map_err(CommandError::from)?;
            pipeline.run(std::iter::empty()).map_err(CommandError::from)?
        }
    };
    if let Some(target) = out_target {
        let target_ns = match target {
            Bson::String(c) => Namespace::new(&req.db, &c)?,
            Bson::Document(d) => Namespace::new(
                d.get_str("db").unwrap_or(&req.db),
                d.get_str("coll")
                    .map_err(|_| CommandError::failed_to_parse("$out requires 'coll'"))?,
            )?,
            _ => {
                return Err(CommandError::failed_to_parse(
                    "$out only supports a string or object argument",
                ));
            }
        };
        write_out(ctx, &target_ns, docs, write_concern_j(&req.body))?;
        let cursor = Cursor {
            ns: reply_ns,
            db: req.db.clone(),
            collection: String::new(),
            source: buffered(Vec::new())?,
        };
        return first_batch(ctx, cursor, batch_size, false);
    }
    let collection = ns
        .as_ref()
        .map(|n| n.coll.clone())
        .unwrap_or_else(|| "$cmd.aggregate".into());
    let cursor = Cursor {
        ns: reply_ns,
        db: req.db.clone(),
        collection,
        source: buffered(docs)?,
    };
    first_batch(ctx, cursor, batch_size, false)
}

/// Recognises the pipeline drivers send for `countDocuments`:
/// `[{$match}?, {$skip}?, {$limit}?, {$group: {_id: 1, n: {$sum: 1}}}]` → `(filter, skip, limit)`.
fn count_pipeline(stages: &[Document]) -> Option<(Option<Document>, u64, Option<u64>)> {
    let (last, rest) = stages.split_last()?;
    let group = last.get_document("$group").ok()?;
    if last.len() != 1 || group.len() != 2 || group.get("_id").and_then(super::raw::as_i64) != Some(1) {
        return None;
    }
    let (field, acc) = group.iter().find(|(k, _)| k.as_str() != "_id")?;
    if field != "n" || acc.as_document()?.get("$sum").and_then(super::raw::as_i64) != Some(1) {
        return None;
    }
    let mut query = None;
    let mut skip = 0u64;
    let mut limit = None;
    let mut stage_iter = rest.iter().peekable();
    if let Some(m) = stage_iter.peek().and_then(|s| s.get_document("$match").ok()) {
        query = Some(m.clone());
        stage_iter.next();
    }
    if let Some(s) = stage_iter
        .peek()
        .and_then(|s| s.get("$skip"))
        .and_then(super::raw::as_i64)
    {
        skip = u64::try_from(s).ok()?;
        stage_iter.next();
    }
    if let Some(l) = stage_iter
        .peek()
        .and_then(|s| s.get("$limit"))
        .and_then(super::raw::as_i64)
    {
        limit = Some(u64::try_from(l).ok()?);
        stage_iter.next();
    }
    if stage_iter.next().is_some() {
        return None;
    }
    Some((query, skip, limit))
}

/// `countDocuments` without a pipeline engine: `[{_id: 1, n: <count>}]`, or nothing when no document matches.
fn count_documents(
    ctx: &Ctx<'_>,
    ns: &Namespace,
    query: Option<Document>,
    skip: u64,
    limit: Option<u64>,
) -> CommandResult<Vec<Document>> {
    let matcher = Matcher::new(query.as_ref())?.counting(ctx.server.engine.metrics());
    let total = ctx.server.engine.read(|cat| -> CommandResult<Option<usize>> {
        match cat.collection(ns) {
            None => Ok(Some(0)),
            Some(c) if c.is_virtual() => Ok(None),
            Some(c) if matcher.filter.is_none() => Ok(Some(c.len())),
            Some(c) => Ok(Some(matcher.collect(c, ns, false, None)?.len())),
        }
    })?;
    let Some(total) = total else {
        let mut stages = Vec::new();
        if let Some(q) = query {
            stages.push(doc! { "$match": q });
        }
        let n = run_pipeline(ctx, ns, stages)?.len();
        return count_result(n, skip, limit);
    };
    count_result(total, skip, limit)
}

fn count_result(total: usize, skip: u64, limit: Option<u64>) -> CommandResult<Vec<Document>> {
    let mut n = u64::try_from(total).unwrap_or(u64::MAX).saturating_sub(skip);
    if let Some(l) = limit {
        n = n.min(l);
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    let n = i32::try_from(n)
        .map(Bson::Int32)
        .unwrap_or_else(|_| Bson::Int64(i64::try_from(n).unwrap_or(i64::MAX)));
    Ok(vec![doc! { "_id": 1, "n": n }])
}

fn write_out(ctx: &Ctx<'_>, target: &Namespace, docs: Vec<Document>, j: bool) -> CommandResult<()> {
    ctx.server.engine.write(|txn| {
        txn.set_sync(j);
        let (options, specs) = match txn.catalog().collection(target) {
            Some(c) if c.is_virtual() => return Err(refused_write_error(target, c)),
            Some(c) => (c.options.clone(), c.index_specs()),
            None => (Document::new(), Vec::new()),
        };
        if txn.catalog().collection(target).is_some() {
            txn.apply(Mutation::DropCollection { ns: target.clone() })?;
        }
        txn.apply(Mutation::CreateCollection {
            ns: target.clone(),
            uuid: crate::engine::new_uuid(),
            options,
        })?;
        for spec in specs.into_iter().skip(1) {
            txn.apply(Mutation::CreateIndex {
                ns: target.clone(),
                spec,
            })?;
        }
        for d in docs {
            let raw = prepare_insert(Cow::Owned(encode(&d)?), None)?;
            txn.apply(Mutation::Insert {
                ns: target.clone(),
                doc: raw,
            })?;
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------------------
// Writes
// ---------------------------------------------------------------------------------------------------------

/// Makes a document ready to be stored, in one pass over its top-level fields: puts `_id` first (generating
/// an ObjectId when missing) without touching the other fields' bytes, refuses an `_id` mongod refuses, and,
/// when `empty_ts` gives the clock, replaces empty top-level timestamps (see [`crate::empty_ts`]).
///
/// A document that already starts with `_id` and has nothing to replace is stored as it came: borrowed bytes
/// are copied once, owned ones not at all.
pub fn prepare_insert(
    doc: Cow<'_, RawDocument>,
    empty_ts: Option<&mut dyn FnMut() -> bson::Timestamp>,
) -> CommandResult<RawDocumentBuf> {
    check_size(&doc)?;
    let scan = InsertScan::of(&doc, empty_ts.is_some())?;
    let raw = if scan.id_first {
        doc.into_owned()
    } else {
        with_id_first(doc.as_bytes(), scan.id)?
    };
    match empty_ts {
        Some(next) if scan.empty_ts => crate::empty_ts::fill_raw(raw, next),
        _ => Ok(raw),
    }
}

/// What [`prepare_insert`] needs to know of a document's top-level fields.
#[derive(Debug, Default)]
struct InsertScan {
    /// Offset and length of the (first) `_id` element.
    id: Option<(usize, usize)>,
    /// Whether `_id` is the first field.
    id_first: bool,
    /// Whether a field other than `_id` holds an empty timestamp (looked for only when asked).
    empty_ts: bool,
}

impl InsertScan {
    /// Scans `doc`, stopping at `_id` unless `find_empty_ts`.
    fn of(doc: &RawDocument, find_empty_ts: bool) -> CommandResult<Self> {
        // Documents arrive validated, so walking their framing is enough. A walk that gives up (possible
        // only for bytes that did not come through the wire) leaves the decision, and the error message, to
        // the checked iterator.
        let mut scan = Self::default();
        let mut walk = tidemark_wire::TopLevel::new(doc.as_bytes());
        for (i, element) in walk.by_ref().enumerate() {
            if scan.id.is_none() && element.key == b"_id" {
                refuse_id_type(element.kind)?;
                scan.id = Some((element.offset, element.len));
                scan.id_first = i == 0;
                if !find_empty_ts || scan.empty_ts {
                    return Ok(scan);
                }
            } else if find_empty_ts
                && element.kind == ElementType::Timestamp as u8
                && element.key != b"_id"
                && element.value.iter().all(|&b| b == 0)
            {
                scan.empty_ts = true;
                if scan.id.is_some() {
                    return Ok(scan);
                }
            }
        }
        if walk.finished() {
            return Ok(scan);
        }
        Self::checked(doc, find_empty_ts)
    }

    /// [`InsertScan::of`] through the `bson` crate's checked iterator.
    fn checked(doc: &RawDocument, find_empty_ts: bool) -> CommandResult<Self> {
        let mut scan = Self::default();
        let mut offset = 4usize;
        for (i, elem) in doc.iter_elements().enumerate() {
            let elem = elem.map_err(|e| CommandError::bad_value(format!("invalid BSON document: {e}")))?;
            // Each element is: type byte, key, NUL, value.
            let elem_len = elem.key().len().saturating_add(2).saturating_add(elem.len());
            if scan.id.is_none() && elem.key() == "_id" {
                elem.value()
                    .map_err(|e| CommandError::bad_value(format!("invalid _id: {e}")))?;
                refuse_id_type(elem.element_type() as u8)?;
                scan.id = Some((offset, elem_len));
                scan.id_first = i == 0;
                if !find_empty_ts {
                    break;
                }
            } else if find_empty_ts && !scan.empty_ts {
                scan.empty_ts = crate::empty_ts::is_empty_element(&elem)?;
            }
            offset = offset.saturating_add(elem_len);
        }
        Ok(scan)
    }
}

/// Refuses the `_id` types mongod refuses.
fn refuse_id_type(kind: u8) -> CommandResult<()> {
    match ElementType::from(kind) {
        Some(ElementType::Array) => Err(CommandError::bad_value("can't use an array for _id")),
        Some(ElementType::RegularExpression) => Err(CommandError::bad_value("can't use a regex for _id")),
        Some(ElementType::Undefined) => Err(CommandError::bad_value("can't use a undefined for _id")),
        _ => Ok(()),
    }
}

/// A copy of the document `bytes` with its `_id` element (at `(offset, len)`) moved first, or a new ObjectId
/// `_id` put first when it has none.
fn with_id_first(bytes: &[u8], id_elem: Option<(usize, usize)>) -> CommandResult<RawDocumentBuf> {
    let mut out = Vec::with_capacity(bytes.len() + 17);
    out.extend_from_slice(&[0, 0, 0, 0]);
    match id_elem {
        Some((offset, len)) => {
            let start = offset;
            let end = offset
                .checked_add(len)
                .ok_or_else(|| CommandError::bad_value("invalid _id element"))?;
            let elem = bytes
                .get(start..end)
                .ok_or_else(|| CommandError::bad_value("invalid _id element"))?;
            out.extend_from_slice(elem);
            out.extend_from_slice(bytes.get(4..start).unwrap_or_default());
            out.extend_from_slice(bytes.get(end..).unwrap_or_default());
        }
        None => {
            out.push(0x07);
            out.extend_from_slice(b"_id\0");
            out.extend_from_slice(&ObjectId::new().bytes());
            out.extend_from_slice(bytes.get(4..).unwrap_or_default());
        }
    }
    let len = i32::try_from(out.len()).map_err(|_| CommandError::bson_object_too_large("document too large"))?;
    out[..4].copy_from_slice(&len.to_le_bytes());
    let raw = RawDocumentBuf::from_bytes(out).map_err(|e| CommandError::bad_value(format!("invalid document: {e}")))?;
    check_size(&raw)?;
    Ok(raw)
}

/// A collection's validator, ready to check documents.
struct Validator {
    filter: Filter,
    moderate: bool,
    warn: bool,
}

impl Validator {
    fn for_collection(coll: Option<&Collection>, bypass: bool) -> CommandResult<Option<Self>> {
        let Some(coll) = coll else { return Ok(None) };
        if bypass {
            return Ok(None);
        }
        let Ok(v) = coll.options.get_document("validator") else {
            return Ok(None);
        };
        if v.is_empty() {
            return Ok(None);
        }
        let level = coll.options.get_str("validationLevel").unwrap_or("strict");
        if level == "off" {
            return Ok(None);
        }
        Ok(Some(Self {
            filter: Filter::parse(v).map_err(CommandError::from)?,
            moderate: level == "moderate",
            warn: coll.options.get_str("validationAction").unwrap_or("error") == "warn",
        }))
    }

    /// Checks a new version of a document (`old` is the version it replaces, for updates).
    fn check(&self, ns: &Namespace, new: &Document, old: Option<&Document>) -> CommandResult<()> {
        if self.filter.matches(new) {
            return Ok(());
        }
        if self.moderate && old.is_some_and(|o| !self.filter.matches(o)) {
            return Ok(());
        }
        if self.warn {
            tracing::warn!(namespace = %ns, "Document would fail validation");
            return Ok(());
        }
        let id = new.get("_id").cloned().unwrap_or(Bson::Null);
        Err(CommandError::document_validation_failure("Document failed validation")
            .with_extra(doc! { "errInfo": { "failingDocumentId": id, "details": { "operatorName": "$and", "schemaRulesNotSatisfied": [] } } }))
    }
}

/// The clock for empty-timestamp replacement, or `None` when the command sets `bypassEmptyTsReplacement`.
fn empty_ts_clock<'a>(ctx: &Ctx<'a>, req: &Request) -> CommandResult<Option<&'a crate::repl::Oplog>> {
    let bypass = get_bool(&req.body, crate::empty_ts::BYPASS_OPTION)?.unwrap_or(false);
    Ok((!bypass).then(|| ctx.server.repl.oplog().as_ref()))
}

fn write_ops_count(n: usize) -> CommandResult<()> {
    if n == 0 || n > crate::MAX_WRITE_BATCH_SIZE {
        return Err(CommandError::new(
            16,
            "InvalidLength",
            format!(
                "Write batch sizes must be between 1 and {}. Got {n} operations.",
                crate::MAX_WRITE_BATCH_SIZE
            ),
        ));
    }
    Ok(())
}

fn write_reply(mut reply: Document, errors: Vec<Document>) -> Reply {
    if !errors.is_empty() {
        reply.insert("writeErrors", errors);
    }
    ok_with(reply)
}

fn insert(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    let ns = request_ns(req)?;
    let docs = req.documents("documents")?;
    write_ops_count(docs.len())?;
    let ordered = get_bool(&req.body, "ordered")?.unwrap_or(true);
    let bypass = get_bool(&req.body, "bypassDocumentValidation")?.unwrap_or(false);
    let empty_ts = empty_ts_clock(ctx, req)?;
    let j = write_concern_j(&req.body);
    let (n, errors) = ctx.server.engine.write(|txn| {
        txn.set_sync(j);
        txn.set_session(crate::repl::oplog::retryable_session(&req.body));
        if let Some(opts) = crate::timeseries::options_of(txn.catalog(), &ns)? {
            return crate::timeseries::insert_measurements(txn, &ns, &opts, docs, ordered);
        }
        ensure_collection(txn, &ns)?;
        let validator = Validator::for_collection(txn.catalog().collection(&ns), bypass)?;
        let mut n = 0usize;
        let mut errors = Vec::new();
        let mut next_ts = empty_ts.map(|oplog| move || oplog.next_timestamp());
        for (i, raw) in docs.into_iter().enumerate() {
            let clock = next_ts.as_mut().map(|f| f as &mut dyn FnMut() -> bson::Timestamp);
            let r = prepare_insert(raw, clock).and_then(|raw| {
                if let Some(v) = &validator {
                    v.check(&ns, &decode(&raw, &ns)?, None)?;
                }
                txn.apply(Mutation::Insert {
                    ns: ns.clone(),
                    doc: raw,
                })
            });
            match r {
                Ok(()) => n += 1,
                Err(e) => {
                    errors.push(e.to_write_error(i));
                    if ordered {
                        break;
                    }
                }
            }
        }
        Ok((n, errors))
    })?;
    Stats::add(&ctx.server.stats.op_insert, n);
    Ok(write_reply(doc! { "n": i32::try_from(n).unwrap_or(i32::MAX) }, errors))
}

/// Outcome of one update statement.
#[derive(Default)]
struct UpdateOutcome {
    matched: usize,
    modified: usize,
    upserted: Option<Bson>,
    /// (before, after) of the first document touched, for findAndModify.
    first: Option<(Option<Document>, Document)>,
}

/// The modification an update statement makes: operators/replacement, or an aggregation pipeline.
enum Modifier {
    Update(Update),
    Pipeline(Pipeline),
}

impl Modifier {
    fn parse(u: &Bson, array_filters: &[Document]) -> CommandResult<Self> {
        match u {
            Bson::Document(d) if array_filters.is_empty() => {
                Ok(Modifier::Update(Update::parse(d).map_err(CommandError::from)?))
            }
            Bson::Document(d) => Ok(Modifier::Update(
                Update::parse_with_array_filters(d, array_filters).map_err(CommandError::from)?,
            )),
            Bson::Array(stages) => {
                let stages: Vec<Document> = stages
                    .iter()
                    .map(|s| {
                        s.as_document()
                            .cloned()
                            .ok_or_else(|| CommandError::failed_to_parse("pipeline stages must be objects"))
                    })
                    .collect::<CommandResult<_>>()?;
                Ok(Modifier::Pipeline(
                    Pipeline::parse(&stages).map_err(CommandError::from)?,
                ))
            }
            _ => Err(CommandError::failed_to_parse(
                "Update argument must be either an object or an array",
            )),
        }
    }

    fn is_replacement(&self) -> bool {
        matches!(self, Modifier::Update(u) if u.is_replacement())
    }

    /// Applies to `doc` (selected by `query`, for the positional `$` operator); returns whether it changed.
    fn apply(&self, doc: &mut Document, upsert_insert: bool, query: Option<&Filter>) -> CommandResult<bool> {
        match self {
            Modifier::Update(u) => {
                if u.is_replacement() {
                    let id = doc.get("_id").cloned();
                    let before = doc.clone();
                    u.apply_with_filter(doc, upsert_insert, query)
                        .map_err(CommandError::from)?;
                    if let Some(id) = id
                        && !doc.contains_key("_id")
                    {
                        let mut with_id = doc! { "_id": id };
                        with_id.extend(std::mem::take(doc));
                        *doc = with_id;
                    }
                    Ok(*doc != before)
                } else {
                    u.apply_with_filter(doc, upsert_insert, query)
                        .map_err(CommandError::from)
                }
            }
            Modifier::Pipeline(p) => {
                let before = doc.clone();
                let mut out = p.run(std::iter::once(doc.clone())).map_err(CommandError::from)?;
                if out.len() != 1 {
                    return Err(CommandError::bad_value(
                        "an update pipeline must produce exactly one document",
                    ));
                }
                *doc = out.remove(0);
                Ok(*doc != before)
            }
        }
    }
}

/// The `arrayFilters` option of an update statement or `findAndModify`.
fn array_filters_arg(d: &Document) -> CommandResult<Vec<Document>> {
    match d.get("arrayFilters") {
        None | Some(Bson::Null) => Ok(Vec::new()),
        Some(Bson::Array(a)) => a
            .iter()
            .map(|f| {
                f.as_document()
                    .cloned()
                    .ok_or_else(|| CommandError::type_mismatch("arrayFilters entries must be objects"))
            })
            .collect(),
        Some(_) => Err(CommandError::type_mismatch(
            "BSON field 'arrayFilters' must be an array",
        )),
    }
}

/// Ensures `_id` is first in a typed document, generating one if absent.
fn id_first(doc: Document, id: Option<Bson>) -> Document {
    let id = doc
        .get("_id")
        .cloned()
        .or(id)
        .unwrap_or_else(|| Bson::ObjectId(ObjectId::new()));
    let mut out = doc! { "_id": id };
    for (k, v) in doc {
        if k != "_id" {
            out.insert(k, v);
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn apply_update(
    txn: &mut WriteTxn<'_>,
    ns: &Namespace,
    query: &Document,
    modifier: &Modifier,
    multi: bool,
    upsert: bool,
    sort: Option<&SortSpec>,
    bypass: bool,
    want_docs: bool,
    empty_ts: Option<&crate::repl::Oplog>,
    metrics: &QueryMetrics,
) -> CommandResult<UpdateOutcome> {
    if multi && modifier.is_replacement() {
        return Err(CommandError::failed_to_parse(
            "multi update is not supported for replacement-style update",
        ));
    }
    let matcher = Matcher::new(Some(query))?.counting(metrics);
    if let Some(c) = txn.catalog().collection(ns).filter(|c| c.is_virtual()) {
        return Err(refused_write_error(ns, c));
    }
    let targets: Vec<Document> = match txn.catalog().collection(ns) {
        None => Vec::new(),
        Some(coll) => {
            let limit = if multi || sort.is_some() { None } else { Some(1) };
            let mut docs: Vec<Document> = matcher
                .collect(coll, ns, false, limit)?
                .into_iter()
                .map(|(_, _, d)| d)
                .collect();
            if let Some(s) = sort {
                docs.sort_by(|a, b| s.compare(a, b));
                if !multi {
                    docs.truncate(1);
                }
            }
            docs
        }
    };
    let mut out = UpdateOutcome::default();
    if targets.is_empty() {
        if !upsert {
            return Ok(out);
        }
        let base = match &matcher.filter {
            Some(f) => f.equality_fields(),
            None => Document::new(),
        };
        let mut doc = if modifier.is_replacement() {
            Document::new()
        } else {
            base.clone()
        };
        modifier.apply(&mut doc, true, matcher.filter.as_ref())?;
        if modifier.is_replacement()
            && let Some(id) = base.get("_id")
            && !doc.contains_key("_id")
        {
            doc.insert("_id", id.clone());
        }
        if modifier.is_replacement()
            && let Some(oplog) = empty_ts
        {
            crate::empty_ts::fill(&mut doc, &mut || oplog.next_timestamp());
        }
        let doc = id_first(doc, None);
        ensure_collection(txn, ns)?;
        if let Some(v) = Validator::for_collection(txn.catalog().collection(ns), bypass)? {
            v.check(ns, &doc, None)?;
        }
        let raw = prepare_insert(Cow::Owned(encode(&doc)?), None)?;
        txn.apply(Mutation::Insert {
            ns: ns.clone(),
            doc: raw,
        })?;
        out.matched = 0;
        out.upserted = doc.get("_id").cloned();
        if want_docs {
            out.first = Some((None, doc));
        }
        return Ok(out);
    }
    let validator = Validator::for_collection(txn.catalog().collection(ns), bypass)?;
    for old in targets {
        let mut new = old.clone();
        let mut changed = modifier.apply(&mut new, false, matcher.filter.as_ref())?;
        if modifier.is_replacement()
            && let Some(oplog) = empty_ts
        {
            changed |= crate::empty_ts::fill(&mut new, &mut || oplog.next_timestamp());
        }
        if new.get("_id") != old.get("_id") {
            let shown = new
                .get("_id")
                .map(crate::engine::collection::shell_repr)
                .unwrap_or_default();
            return Err(CommandError::new(
                66,
                "ImmutableField",
                format!(
                    "After applying the update, the (immutable) field '_id' was found to have been altered to _id: {shown}"
                ),
            ));
        }
        out.matched += 1;
        if changed {
            if let Some(v) = &validator {
                v.check(ns, &new, Some(&old))?;
            }
            let raw = encode(&new)?;
            check_size(&raw)?;
            txn.apply(Mutation::Upsert {
                ns: ns.clone(),
                doc: raw,
            })?;
            out.modified += 1;
        }
        if want_docs && out.first.is_none() {
            out.first = Some((Some(old), new));
        }
    }
    Ok(out)
}

fn update(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    let ns = request_ns(req)?;
    let statements = req.documents("updates")?;
    write_ops_count(statements.len())?;
    let ordered = get_bool(&req.body, "ordered")?.unwrap_or(true);
    let bypass = get_bool(&req.body, "bypassDocumentValidation")?.unwrap_or(false);
    let empty_ts = empty_ts_clock(ctx, req)?;
    let j = write_concern_j(&req.body);
    let stmts: Vec<Document> = statements
        .iter()
        .map(|r| {
            Document::try_from(r.as_ref())
                .map_err(|e| CommandError::failed_to_parse(format!("invalid update statement: {e}")))
        })
        .collect::<CommandResult<_>>()?;
    let metrics = ctx.server.engine.metrics();
    let (n, modified, upserted, errors) = ctx.server.engine.write(|txn| {
        txn.set_sync(j);
        txn.set_session(crate::repl::oplog::retryable_session(&req.body));
        if let Some(c) = txn.catalog().collection(&ns).filter(|c| c.is_virtual()) {
            return Err(refused_write_error(&ns, c));
        }
        let mut n = 0usize;
        let mut modified = 0usize;
        let mut upserted = Vec::new();
        let mut errors = Vec::new();
        for (i, st) in stmts.iter().enumerate() {
            let r = (|| -> CommandResult<UpdateOutcome> {
                let q = get_doc(st, "q")?.cloned().unwrap_or_default();
                let u = st.get("u").ok_or_else(|| {
                    CommandError::missing_field("BSON field 'update.updates.u' is missing but a required field")
                })?;
                let modifier = Modifier::parse(u, &array_filters_arg(st)?)?;
                let multi = get_bool(st, "multi")?.unwrap_or(false);
                let upsert = get_bool(st, "upsert")?.unwrap_or(false);
                apply_update(
                    txn, &ns, &q, &modifier, multi, upsert, None, bypass, false, empty_ts, metrics,
                )
            })();
            match r {
                Ok(o) => {
                    if let Some(id) = o.upserted {
                        n += 1;
                        upserted.push(doc! { "index": i32::try_from(i).unwrap_or(i32::MAX), "_id": id });
                    } else {
                        n += o.matched;
                        modified += o.modified;
                    }
                }
                Err(e) => {
                    errors.push(e.to_write_error(i));
                    if ordered {
                        break;
                    }
                }
            }
        }
        Ok((n, modified, upserted, errors))
    })?;
    Stats::add(&ctx.server.stats.op_update, stmts.len());
    let mut reply = doc! {
        "n": i32::try_from(n).unwrap_or(i32::MAX),
        "nModified": i32::try_from(modified).unwrap_or(i32::MAX),
    };
    if !upserted.is_empty() {
        reply.insert("upserted", upserted);
    }
    Ok(write_reply(reply, errors))
}

fn delete(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    let ns = request_ns(req)?;
    let statements = req.documents("deletes")?;
    write_ops_count(statements.len())?;
    let ordered = get_bool(&req.body, "ordered")?.unwrap_or(true);
    let j = write_concern_j(&req.body);
    let stmts: Vec<Document> = statements
        .iter()
        .map(|r| {
            Document::try_from(r.as_ref())
                .map_err(|e| CommandError::failed_to_parse(format!("invalid delete statement: {e}")))
        })
        .collect::<CommandResult<_>>()?;
    let metrics = ctx.server.engine.metrics();
    let (n, errors) = ctx.server.engine.write(|txn| {
        txn.set_sync(j);
        txn.set_session(crate::repl::oplog::retryable_session(&req.body));
        if txn.catalog().collection(&ns).is_some_and(Collection::is_view) {
            return Err(view_error(&ns));
        }
        let mut n = 0usize;
        let mut errors = Vec::new();
        for (i, st) in stmts.iter().enumerate() {
            let r = (|| -> CommandResult<usize> {
                let q = get_doc(st, "q")?.cloned().unwrap_or_default();
                let limit = match st.get("limit") {
                    Some(v) => super::raw::as_i64(v).ok_or_else(|| {
                        CommandError::type_mismatch("BSON field 'delete.deletes.limit' must be a number")
                    })?,
                    None => {
                        return Err(CommandError::missing_field(
                            "BSON field 'delete.deletes.limit' is missing but a required field",
                        ));
                    }
                };
                if limit != 0 && limit != 1 {
                    return Err(CommandError::failed_to_parse(format!(
                        "The limit field in delete objects must be 0 or 1. Got {limit}"
                    )));
                }
                if let Some(opts) = crate::timeseries::options_of(txn.catalog(), &ns)? {
                    let filter = Filter::parse(&q).map_err(CommandError::from)?;
                    return crate::timeseries::delete_measurements(txn, &ns, &opts, &filter, limit == 1);
                }
                let ids: Vec<Bson> = match txn.catalog().collection(&ns) {
                    None => return Ok(0),
                    Some(c) if c.is_virtual() => return Err(refused_write_error(&ns, c)),
                    Some(c) => {
                        let matcher = Matcher::new(Some(&q))?.counting(metrics);
                        let lim = if limit == 1 { Some(1) } else { None };
                        matcher
                            .collect(c, &ns, false, lim)?
                            .into_iter()
                            .filter_map(|(_, raw, _)| raw_id(raw))
                            .collect()
                    }
                };
                let count = ids.len();
                for id in ids {
                    txn.apply(Mutation::Delete { ns: ns.clone(), id })?;
                }
                Ok(count)
            })();
            match r {
                Ok(c) => n += c,
                Err(e) => {
                    errors.push(e.to_write_error(i));
                    if ordered {
                        break;
                    }
                }
            }
        }
        Ok((n, errors))
    })?;
    Stats::add(&ctx.server.stats.op_delete, stmts.len());
    Ok(write_reply(doc! { "n": i32::try_from(n).unwrap_or(i32::MAX) }, errors))
}

fn find_and_modify(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    let ns = request_ns(req)?;
    let body = &req.body;
    let query = get_doc(body, "query")?.cloned().unwrap_or_default();
    let sort = get_doc(body, "sort")?
        .filter(|s| !s.is_empty())
        .map(|s| SortSpec::parse(s).map_err(CommandError::from))
        .transpose()?;
    let fields = get_doc(body, "fields")?
        .filter(|f| !f.is_empty())
        .map(|f| Projection::parse(f).map_err(CommandError::from))
        .transpose()?;
    let remove = get_bool(body, "remove")?.unwrap_or(false);
    let return_new = get_bool(body, "new")?.unwrap_or(false);
    let upsert = get_bool(body, "upsert")?.unwrap_or(false);
    let bypass = get_bool(body, "bypassDocumentValidation")?.unwrap_or(false);
    let empty_ts = empty_ts_clock(ctx, req)?;
    let update = body.get("update").filter(|u| !matches!(u, Bson::Null));
    if remove && update.is_some() {
        return Err(CommandError::failed_to_parse(
            "Cannot specify both an update and remove=true",
        ));
    }
    if !remove && update.is_none() {
        return Err(CommandError::failed_to_parse(
            "Either an update or remove=true must be specified",
        ));
    }
    if remove && return_new {
        return Err(CommandError::failed_to_parse(
            "Cannot specify both new=true and remove=true; 'remove' always returns the deleted document",
        ));
    }
    if remove && upsert {
        return Err(CommandError::failed_to_parse(
            "Cannot specify both upsert=true and remove=true",
        ));
    }
    let array_filters = array_filters_arg(body)?;
    let modifier = update.map(|u| Modifier::parse(u, &array_filters)).transpose()?;
    let j = write_concern_j(body);
    let metrics = ctx.server.engine.metrics();
    let (value, last_error) = ctx.server.engine.write(|txn| {
        txn.set_sync(j);
        txn.set_session(crate::repl::oplog::retryable_session(&req.body));
        if remove {
            let Some(coll) = txn.catalog().collection(&ns) else {
                return Ok((None, doc! { "n": 0 }));
            };
            if coll.is_virtual() {
                return Err(refused_write_error(&ns, coll));
            }
            let matcher = Matcher::new(Some(&query))?.counting(metrics);
            let mut docs: Vec<Document> = matcher
                .collect(coll, &ns, false, if sort.is_some() { None } else { Some(1) })?
                .into_iter()
                .map(|(_, _, d)| d)
                .collect();
            if let Some(s) = &sort {
                docs.sort_by(|a, b| s.compare(a, b));
            }
            let Some(doc) = docs.into_iter().next() else {
                return Ok((None, doc! { "n": 0 }));
            };
            let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
            txn.apply(Mutation::Delete { ns: ns.clone(), id })?;
            return Ok((Some(doc), doc! { "n": 1 }));
        }
        let Some(modifier) = &modifier else {
            return Err(CommandError::internal("update missing"));
        };
        let o = apply_update(
            txn,
            &ns,
            &query,
            modifier,
            false,
            upsert,
            sort.as_ref(),
            bypass,
            true,
            empty_ts,
            metrics,
        )?;
        let mut last =
            doc! { "n": i32::from(o.first.is_some()), "updatedExisting": o.upserted.is_none() && o.matched > 0 };
        if let Some(id) = &o.upserted {
            last.insert("upserted", id.clone());
        }
        let value = match o.first {
            None => None,
            Some((before, after)) => {
                if return_new {
                    Some(after)
                } else {
                    before
                }
            }
        };
        Ok((value, last))
    })?;
    let value = match (value, &fields) {
        (Some(v), Some(p)) => Bson::Document(p.apply(&v)),
        (Some(v), None) => Bson::Document(v),
        (None, _) => Bson::Null,
    };
    Ok(ok_with(doc! { "lastErrorObject": last_error, "value": value }))
}

#[cfg(test)]
mod tests {
    use bson::{Regex, Timestamp, rawdoc};

    use super::*;

    fn clock() -> impl FnMut() -> Timestamp {
        let mut i = 0;
        move || {
            i += 1;
            Timestamp { time: 9, increment: i }
        }
    }

    fn prepare(doc: &RawDocument, with_clock: bool) -> CommandResult<RawDocumentBuf> {
        let mut next = clock();
        prepare_insert(
            Cow::Borrowed(doc),
            with_clock.then_some(&mut next as &mut dyn FnMut() -> Timestamp),
        )
    }

    #[test]
    fn id_goes_first_and_other_bytes_stay() {
        let first = rawdoc! { "_id": 1, "a": "x" };
        assert_eq!(prepare(&first, true).unwrap().as_bytes(), first.as_bytes());
        let later = rawdoc! { "a": "x", "_id": 1, "b": 2.5 };
        assert_eq!(prepare(&later, true).unwrap(), rawdoc! { "_id": 1, "a": "x", "b": 2.5 });
        let none = prepare(&rawdoc! { "a": 1 }, false).unwrap();
        let keys: Vec<&str> = none.iter_elements().map(|e| e.unwrap().key()).collect();
        assert_eq!(keys, ["_id", "a"]);
        assert!(matches!(none.get("_id"), Ok(Some(bson::RawBsonRef::ObjectId(_)))));
    }

    #[test]
    fn ids_mongod_refuses_are_refused() {
        let regex = Regex {
            pattern: "a".into(),
            options: String::new(),
        };
        for (doc, message) in [
            (rawdoc! { "_id": [1] }, "can't use an array for _id"),
            (rawdoc! { "a": 1, "_id": regex }, "can't use a regex for _id"),
            (
                rawdoc! { "_id": bson::RawBson::Undefined },
                "can't use a undefined for _id",
            ),
        ] {
            for with_clock in [false, true] {
                assert_eq!(prepare(&doc, with_clock).unwrap_err().message, message);
            }
        }
    }

    #[test]
    fn empty_top_level_timestamps_are_filled_only_with_a_clock() {
        let zero = Timestamp { time: 0, increment: 0 };
        let doc = rawdoc! { "a": zero, "_id": zero, "n": { "t": zero }, "b": zero };
        assert_eq!(
            prepare(&doc, true).unwrap(),
            rawdoc! { "_id": zero, "a": Timestamp { time: 9, increment: 1 }, "n": { "t": zero }, "b": Timestamp { time: 9, increment: 2 } }
        );
        assert_eq!(
            prepare(&doc, false).unwrap(),
            rawdoc! { "_id": zero, "a": zero, "n": { "t": zero }, "b": zero }
        );
    }

    /// The framing walk and the checked iterator find the same things, and a document the walk cannot
    /// frame gets the checked iterator's error.
    #[test]
    fn both_scans_agree() {
        let zero = Timestamp { time: 0, increment: 0 };
        let docs = [
            rawdoc! {},
            rawdoc! { "_id": 1 },
            rawdoc! { "a": zero, "_id": "k" },
            rawdoc! { "a": 1, "_id": zero, "_id": 2, "t": zero },
            rawdoc! { "s": "x", "d": { "_id": 1 } },
        ];
        for doc in &docs {
            for find in [false, true] {
                let fast = InsertScan::of(doc, find).unwrap();
                let checked = InsertScan::checked(doc, find).unwrap();
                assert_eq!(
                    (fast.id, fast.id_first, fast.empty_ts),
                    (checked.id, checked.id_first, checked.empty_ts),
                    "{doc:?}"
                );
            }
        }
        // {"a": "x"} whose string length points past the document.
        let bad = RawDocument::from_bytes(b"\x0e\0\0\0\x02a\0\x09\0\0\0x\0\0").unwrap();
        let err = InsertScan::of(bad, true).unwrap_err();
        assert!(err.message.starts_with("invalid BSON document"), "{}", err.message);
    }
}
