//! Time series collections in MongoDB 7.0's "viewful" layout.
//!
//! `create` with `timeseries` makes two namespaces: `<name>`, which holds no documents and is read like a
//! view whose pipeline is `[{$_internalUnpackBucket: {timeField, metaField?, bucketMaxSpanSeconds}}]`, and
//! `system.buckets.<name>`, an ordinary collection holding the bucket documents
//! `{_id, control: {version: 1, min, max}, meta?, data: {<field>: {"0": v, "1": v, …}}}`. This is the
//! layout mongodump copies (the bucket documents, verbatim) and mongorestore writes back (inserts into
//! `system.buckets.<name>`), so it is what a backup tool must see.
//!
//! Inserts into `<name>` are grouped into buckets as mongod does: measurements with the same meta value
//! whose time lies within `bucketMaxSpanSeconds` of the bucket's start (the first measurement's time
//! rounded down to `bucketRoundingSeconds`) share a bucket of at most 1000 measurements; the bucket
//! `_id` is an ObjectId whose timestamp is that start. For every meta value the newest bucket stays open
//! for later inserts. Deletes through `<name>` unpack each bucket, drop the matching measurements and
//! remove or rewrite the bucket. Buckets are written uncompressed (`control.version: 1`); reads refuse compressed
//! (version 2) columns with a clear error instead of guessing.

use std::collections::HashMap;

use bson::oid::ObjectId;
use bson::{Bson, DateTime, Document, RawDocument, RawDocumentBuf, doc};
use tidemark_query::{Filter, compare_values};

use crate::engine::{Catalog, Mutation, Namespace, WriteTxn};
use crate::error::{CommandError, CommandResult};

/// Prefix of the collection that holds a time series collection's buckets.
pub const BUCKETS_PREFIX: &str = "system.buckets.";
/// The pipeline stage that turns bucket documents into measurements.
pub const UNPACK_STAGE: &str = "$_internalUnpackBucket";
/// Most measurements mongod puts in one bucket.
pub const MAX_BUCKET_MEASUREMENTS: usize = 1000;

/// Options `create` accepts next to `timeseries` (mongod's `kAllowedCollectionCreationOptions`).
const ALLOWED_WITH_TIMESERIES: &[&str] = &[
    "timeseries",
    "expireAfterSeconds",
    "storageEngine",
    "indexOptionDefaults",
    "collation",
];

/// Whether `ns` is a `system.buckets.*` collection.
pub fn is_buckets(ns: &Namespace) -> bool {
    ns.coll.starts_with(BUCKETS_PREFIX)
}

/// The buckets collection of the time series collection `ns`.
pub fn buckets_ns(ns: &Namespace) -> CommandResult<Namespace> {
    Namespace::new(&ns.db, &format!("{BUCKETS_PREFIX}{}", ns.coll))
}

/// The options of `ns` when it is a time series collection.
pub fn options_of(cat: &Catalog, ns: &Namespace) -> CommandResult<Option<TimeseriesOptions>> {
    match cat.collection(ns) {
        Some(c) if c.is_timeseries() => {
            let spec = c.options.get_document("timeseries").map_err(|_| {
                CommandError::invalid_options(format!("time-series collection {ns} has no 'timeseries' options"))
            })?;
            TimeseriesOptions::from_document(spec).map(Some)
        }
        _ => Ok(None),
    }
}

/// The bucketing parameters of one time series collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeseriesOptions {
    /// Field holding each measurement's date.
    pub time_field: String,
    /// Field whose value identifies a series (stored once per bucket as `meta`).
    pub meta_field: Option<String>,
    /// Longest time range one bucket covers.
    pub bucket_max_span_seconds: i64,
    /// A bucket starts at its first measurement's time rounded down to a multiple of this.
    pub bucket_rounding_seconds: i64,
}

/// `(bucketMaxSpanSeconds, bucketRoundingSeconds)` of a granularity.
fn granularity_spans(granularity: &str) -> Option<(i64, i64)> {
    match granularity {
        "seconds" => Some((3600, 60)),
        "minutes" => Some((86_400, 3600)),
        "hours" => Some((2_592_000, 86_400)),
        _ => None,
    }
}

fn type_error(field: &str, v: &Bson, expected: &str) -> CommandError {
    CommandError::type_mismatch(format!(
        "BSON field 'create.timeseries.{field}' is the wrong type '{}', expected type '{expected}'",
        tidemark_query::bson_type_name(v)
    ))
}

fn int_param(field: &str, v: &Bson) -> CommandResult<i64> {
    let n = crate::commands::raw::as_i64(v).ok_or_else(|| type_error(field, v, "int"))?;
    if !(1..=31_536_000).contains(&n) {
        return Err(CommandError::bad_value(format!(
            "BSON field 'create.timeseries.{field}' value must be in the range [1, 31536000]"
        )));
    }
    Ok(n)
}

impl TimeseriesOptions {
    /// Validates the options of `create <ns> {timeseries: spec, ...}` (`options` holds every create
    /// option) and returns the `timeseries` document as `listCollections` reports it: the given fields
    /// plus the defaulted `granularity` and `bucketMaxSpanSeconds`.
    pub fn validate_create(ns: &Namespace, options: &Document) -> CommandResult<Document> {
        for k in options.keys() {
            if !ALLOWED_WITH_TIMESERIES.contains(&k.as_str()) {
                return Err(CommandError::invalid_options(format!(
                    "{ns}: 'timeseries' is not allowed with '{k}'"
                )));
            }
        }
        if let Some(v) = options.get("expireAfterSeconds") {
            let n = crate::commands::raw::as_i64(v).ok_or_else(|| {
                CommandError::type_mismatch("BSON field 'create.expireAfterSeconds' must be a number")
            })?;
            if n < 0 {
                return Err(CommandError::invalid_options(
                    "TTL index 'expireAfterSeconds' option cannot be less than 0",
                ));
            }
        }
        let spec = match options.get("timeseries") {
            Some(Bson::Document(d)) => d,
            Some(other) => {
                return Err(CommandError::type_mismatch(format!(
                    "BSON field 'create.timeseries' is the wrong type '{}', expected type 'object'",
                    tidemark_query::bson_type_name(other)
                )));
            }
            None => return Err(CommandError::missing_field("BSON field 'create.timeseries' is missing")),
        };
        for k in spec.keys() {
            if !matches!(
                k.as_str(),
                "timeField" | "metaField" | "granularity" | "bucketMaxSpanSeconds" | "bucketRoundingSeconds"
            ) {
                return Err(CommandError::unknown_field(format!(
                    "BSON field 'create.timeseries.{k}' is an unknown field."
                )));
            }
        }
        let string_field = |field: &str| -> CommandResult<Option<String>> {
            match spec.get(field) {
                None => Ok(None),
                Some(Bson::String(s)) => Ok(Some(s.clone())),
                Some(v) => Err(type_error(field, v, "string")),
            }
        };
        let time_field = string_field("timeField")?.ok_or_else(|| {
            CommandError::missing_field("BSON field 'create.timeseries.timeField' is missing but a required field")
        })?;
        let meta_field = string_field("metaField")?;
        let granularity = string_field("granularity")?;
        for f in std::iter::once(&time_field).chain(meta_field.as_ref()) {
            if f.contains('\0') {
                return Err(CommandError::bad_value(
                    "The 'timeField' or the 'metaField' cannot contain embedded null bytes",
                ));
            }
            if f.starts_with('$') {
                return Err(CommandError::bad_value(
                    "The 'timeField' or 'metaField' cannot start with '$'",
                ));
            }
        }
        let top_level = |field: &str| {
            CommandError::invalid_options(format!(
                "{ns}: '{field}' must be a top-level field and not contain a '.'"
            ))
        };
        if time_field.contains('.') {
            return Err(top_level("timeField"));
        }
        if let Some(meta) = &meta_field {
            if meta == "_id" {
                return Err(CommandError::invalid_options("'metaField' cannot be \"_id\""));
            }
            if meta == &time_field {
                return Err(CommandError::invalid_options(
                    "'metaField' cannot be the same as 'timeField'",
                ));
            }
            if meta.contains('.') {
                return Err(top_level("metaField"));
            }
        }
        if let Some(g) = &granularity
            && granularity_spans(g).is_none()
        {
            return Err(CommandError::bad_value(format!(
                "Enumeration value '{g}' for field 'create.timeseries.granularity' is not a valid value."
            )));
        }
        let max_span = spec
            .get("bucketMaxSpanSeconds")
            .map(|v| int_param("bucketMaxSpanSeconds", v))
            .transpose()?;
        let rounding = spec
            .get("bucketRoundingSeconds")
            .map(|v| int_param("bucketRoundingSeconds", v))
            .transpose()?;
        let mut out = doc! { "timeField": time_field.as_str() };
        if let Some(m) = &meta_field {
            out.insert("metaField", m.as_str());
        }
        match (max_span, rounding) {
            (None, None) => {
                let g = granularity.unwrap_or_else(|| "seconds".to_string());
                let (span, _) = granularity_spans(&g).unwrap_or((3600, 60));
                out.insert("granularity", g);
                out.insert("bucketMaxSpanSeconds", i32::try_from(span).unwrap_or(i32::MAX));
            }
            (Some(span), Some(round)) => {
                if granularity.is_some() {
                    return Err(CommandError::invalid_options(
                        "Time-series 'bucketMaxSpanSeconds' and 'bucketRoundingSeconds' cannot be set together with 'granularity'",
                    ));
                }
                if span != round {
                    return Err(CommandError::invalid_options(
                        "Time-series 'bucketMaxSpanSeconds' and 'bucketRoundingSeconds' must be equal",
                    ));
                }
                out.insert("bucketRoundingSeconds", i32::try_from(round).unwrap_or(i32::MAX));
                out.insert("bucketMaxSpanSeconds", i32::try_from(span).unwrap_or(i32::MAX));
            }
            (Some(span), None) => {
                // Allowed only when it matches the granularity's own span (mongod fills it in itself).
                let g = granularity.unwrap_or_else(|| "seconds".to_string());
                match granularity_spans(&g) {
                    Some((own, _)) if own == span => {
                        out.insert("granularity", g);
                        out.insert("bucketMaxSpanSeconds", i32::try_from(span).unwrap_or(i32::MAX));
                    }
                    _ => {
                        return Err(CommandError::invalid_options(format!(
                            "Timeseries 'bucketMaxSpanSeconds' is not allowed to be set to a value other than the default for granularity '{g}' unless 'bucketRoundingSeconds' is also set"
                        )));
                    }
                }
            }
            (None, Some(_)) => {
                return Err(CommandError::invalid_options(
                    "Time-series 'bucketRoundingSeconds' requires 'bucketMaxSpanSeconds' to be set to the same value",
                ));
            }
        }
        Ok(out)
    }

    /// Reads the parameters back from a stored `timeseries` document (as [`Self::validate_create`] made it,
    /// or as a `$_internalUnpackBucket` stage gives them).
    pub fn from_document(spec: &Document) -> CommandResult<Self> {
        let bad = |what: &str| CommandError::invalid_options(format!("invalid time-series options {spec}: {what}"));
        let time_field = spec
            .get_str("timeField")
            .map_err(|_| bad("no 'timeField'"))?
            .to_string();
        let meta_field = spec.get_str("metaField").ok().map(str::to_string);
        let granularity = spec.get_str("granularity").ok().and_then(granularity_spans);
        let max_span = match spec.get("bucketMaxSpanSeconds") {
            Some(v) => crate::commands::raw::as_i64(v).ok_or_else(|| bad("'bucketMaxSpanSeconds' is not a number"))?,
            None => granularity.map_or(3600, |g| g.0),
        };
        let rounding = match spec.get("bucketRoundingSeconds") {
            Some(v) => crate::commands::raw::as_i64(v).ok_or_else(|| bad("'bucketRoundingSeconds' is not a number"))?,
            None => granularity.map_or(max_span, |g| g.1),
        };
        if max_span <= 0 || rounding <= 0 {
            return Err(bad("bucket spans must be positive"));
        }
        Ok(Self {
            time_field,
            meta_field,
            bucket_max_span_seconds: max_span,
            bucket_rounding_seconds: rounding,
        })
    }

    /// The stage that unpacks this collection's buckets (mongod's view pipeline for it).
    pub fn unpack_stage(&self) -> Document {
        let mut spec = doc! { "timeField": self.time_field.as_str() };
        if let Some(m) = &self.meta_field {
            spec.insert("metaField", m.as_str());
        }
        spec.insert("bucketMaxSpanSeconds", self.bucket_max_span_seconds);
        spec.insert("bucketRoundingSeconds", self.bucket_rounding_seconds);
        doc! { UNPACK_STAGE: spec }
    }
}

/// Appends the measurements of one bucket document to `out`: one document per entry of
/// `data.<timeField>`, with the time field first, then the metaField (from `meta`), then the other data
/// fields that have a value at that position, in bucket order.
pub fn unpack(bucket: &Document, opts: &TimeseriesOptions, out: &mut Vec<Document>) -> CommandResult<()> {
    let id = bucket.get("_id").cloned().unwrap_or(Bson::Null);
    let bad = |what: String| CommandError::bad_value(format!("invalid time-series bucket {id}: {what}"));
    let data = match bucket.get("data") {
        Some(Bson::Document(d)) => d,
        Some(_) => return Err(bad("'data' is not an object".into())),
        None => return Ok(()),
    };
    let mut columns = Vec::with_capacity(data.len());
    for (field, column) in data {
        match column {
            Bson::Document(c) => columns.push((field.as_str(), c)),
            Bson::Binary(_) => {
                return Err(bad(format!(
                    "column '{field}' is compressed (control.version 2), which this server does not read"
                )));
            }
            _ => return Err(bad(format!("column '{field}' is not an object"))),
        }
    }
    let Some((_, times)) = columns.iter().find(|(f, _)| *f == opts.time_field) else {
        return Err(bad(format!("no '{}' column", opts.time_field)));
    };
    let meta = opts
        .meta_field
        .as_deref()
        .and_then(|m| bucket.get("meta").map(|v| (m, v)));
    for (pos, time) in *times {
        let mut m = doc! { opts.time_field.as_str(): time.clone() };
        if let Some((field, value)) = meta {
            m.insert(field, value.clone());
        }
        for (field, column) in &columns {
            if *field != opts.time_field
                && let Some(v) = column.get(pos)
            {
                m.insert(*field, v.clone());
            }
        }
        out.push(m);
    }
    Ok(())
}

/// A bucket being filled by one insert command.
struct OpenBucket {
    doc_id: ObjectId,
    start_ms: i64,
    meta: Option<Bson>,
    count: usize,
    min: Document,
    max: Document,
    data: Document,
    stored: bool,
    dirty: bool,
}

impl OpenBucket {
    /// Reopens a stored (uncompressed) bucket; `None` when it cannot take more measurements.
    fn reopen(bucket: &Document, opts: &TimeseriesOptions) -> Option<Self> {
        let Ok(doc_id) = bucket.get_object_id("_id") else {
            return None;
        };
        let control = bucket.get_document("control").ok()?;
        if !matches!(control.get("version"), Some(Bson::Int32(1))) {
            return None;
        }
        let min = control.get_document("min").ok()?.clone();
        let max = control.get_document("max").ok()?.clone();
        let start_ms = min.get_datetime(&opts.time_field).ok()?.timestamp_millis();
        let data = bucket.get_document("data").ok()?.clone();
        let count = data.get_document(&opts.time_field).ok()?.len();
        Some(Self {
            doc_id,
            start_ms,
            meta: bucket.get("meta").cloned(),
            count,
            min,
            max,
            data,
            stored: true,
            dirty: false,
        })
    }

    fn new(time_ms: i64, meta: Option<Bson>, opts: &TimeseriesOptions) -> Self {
        let rounding_ms = opts.bucket_rounding_seconds.saturating_mul(1000);
        let start_ms = time_ms - time_ms.rem_euclid(rounding_ms);
        let mut bytes = ObjectId::new().bytes();
        let secs = u32::try_from(start_ms.div_euclid(1000)).unwrap_or(0);
        bytes[..4].copy_from_slice(&secs.to_be_bytes());
        Self {
            doc_id: ObjectId::from_bytes(bytes),
            start_ms,
            meta,
            count: 0,
            min: Document::new(),
            max: Document::new(),
            data: Document::new(),
            stored: false,
            dirty: true,
        }
    }

    fn accepts(&self, time_ms: i64, opts: &TimeseriesOptions) -> bool {
        self.count < MAX_BUCKET_MEASUREMENTS
            && time_ms >= self.start_ms
            && time_ms - self.start_ms < opts.bucket_max_span_seconds.saturating_mul(1000)
    }

    fn add(&mut self, measurement: &Document, opts: &TimeseriesOptions) {
        let pos = self.count.to_string();
        for (field, value) in measurement {
            if Some(field) == opts.meta_field.as_ref() {
                continue;
            }
            match self.data.get_mut(field) {
                Some(Bson::Document(column)) => {
                    column.insert(pos.clone(), value.clone());
                }
                _ => {
                    self.data.insert(field.clone(), doc! { pos.as_str(): value.clone() });
                }
            }
            let is_time = field == &opts.time_field;
            let lower = if is_time {
                Bson::DateTime(DateTime::from_millis(self.start_ms))
            } else {
                value.clone()
            };
            match self.min.get(field) {
                Some(old) if is_time || compare_values(old, &lower).is_le() => {}
                _ => {
                    self.min.insert(field.clone(), lower);
                }
            }
            match self.max.get(field) {
                Some(old) if compare_values(old, value).is_ge() => {}
                _ => {
                    self.max.insert(field.clone(), value.clone());
                }
            }
        }
        self.count += 1;
        self.dirty = true;
    }

    fn to_document(&self) -> Document {
        let mut d = doc! {
            "_id": self.doc_id,
            "control": { "version": 1, "min": self.min.clone(), "max": self.max.clone() },
        };
        if let Some(m) = &self.meta {
            d.insert("meta", m.clone());
        }
        d.insert("data", self.data.clone());
        d
    }
}

/// Deletes the measurements of the time series collection `ns` that match `filter` (only the first one
/// with `just_one`), as mongod 7.0 does for any query: a bucket left empty is deleted, any other bucket
/// touched is rewritten with its remaining measurements (same `_id`, start and meta). Returns how many
/// measurements were deleted.
pub fn delete_measurements(
    txn: &mut WriteTxn<'_>,
    ns: &Namespace,
    opts: &TimeseriesOptions,
    filter: &Filter,
    just_one: bool,
) -> CommandResult<usize> {
    let buckets = buckets_ns(ns)?;
    let Some(coll) = txn.catalog().collection(&buckets) else {
        return Ok(0);
    };
    let mut deleted = 0usize;
    let mut changes: Vec<Mutation> = Vec::new();
    for (_, raw) in coll.iter() {
        if just_one && deleted > 0 {
            break;
        }
        let bucket = Document::try_from(raw.as_ref())
            .map_err(|e| CommandError::bad_value(format!("invalid bucket in {buckets}: {e}")))?;
        let mut measurements = Vec::new();
        unpack(&bucket, opts, &mut measurements)?;
        let before = measurements.len();
        let mut removed = 0usize;
        measurements.retain(|m| {
            let remove = !(just_one && deleted + removed > 0) && filter.matches(m);
            removed += usize::from(remove);
            !remove
        });
        if removed == 0 {
            continue;
        }
        deleted += removed;
        let id = bucket.get("_id").cloned().unwrap_or(Bson::Null);
        if removed == before {
            changes.push(Mutation::Delete {
                ns: buckets.clone(),
                id,
            });
            continue;
        }
        let (Bson::ObjectId(doc_id), Some(start)) = (id, OpenBucket::reopen(&bucket, opts).map(|b| b.start_ms)) else {
            return Err(CommandError::bad_value(format!(
                "time-series bucket {} in {buckets} cannot be rewritten",
                bucket.get("_id").cloned().unwrap_or(Bson::Null)
            )));
        };
        let mut rewritten = OpenBucket::new(start, bucket.get("meta").cloned(), opts);
        rewritten.doc_id = doc_id;
        for m in &measurements {
            rewritten.add(m, opts);
        }
        let doc = RawDocumentBuf::from_document(&rewritten.to_document())
            .map_err(|e| CommandError::internal(format!("encode bucket: {e}")))?;
        changes.push(Mutation::Upsert {
            ns: buckets.clone(),
            doc,
        });
    }
    for m in changes {
        txn.apply(m)?;
    }
    Ok(deleted)
}

/// Series key of a meta value (its exact BSON bytes; absent meta is its own series).
fn series_key(meta: Option<&Bson>) -> Vec<u8> {
    match meta {
        None => Vec::new(),
        Some(v) => {
            let mut key = vec![1];
            if let Ok(raw) = RawDocumentBuf::from_document(&doc! { "m": v.clone() }) {
                key.extend_from_slice(raw.as_bytes());
            }
            key
        }
    }
}

/// Inserts `measurements` into the time series collection `ns` (whose options are `opts`) by packing
/// them into buckets of `system.buckets.<name>`. Returns how many were inserted and the write errors
/// (`{index, code, errmsg}`) of those refused; with `ordered` the first error stops the batch.
pub fn insert_measurements(
    txn: &mut WriteTxn<'_>,
    ns: &Namespace,
    opts: &TimeseriesOptions,
    measurements: Vec<std::borrow::Cow<'_, RawDocument>>,
    ordered: bool,
) -> CommandResult<(usize, Vec<Document>)> {
    let buckets = buckets_ns(ns)?;
    // The newest bucket of every series is open for new measurements, as mongod keeps it.
    let mut open: HashMap<Vec<u8>, OpenBucket> = HashMap::new();
    if let Some(coll) = txn.catalog().collection(&buckets) {
        for (_, raw) in coll.iter() {
            let Ok(d) = Document::try_from(raw.as_ref()) else {
                continue;
            };
            let Some(b) = OpenBucket::reopen(&d, opts) else {
                continue;
            };
            let key = series_key(b.meta.as_ref());
            if open.get(&key).is_none_or(|o| o.start_ms <= b.start_ms) {
                open.insert(key, b);
            }
        }
    }
    let mut closed: Vec<OpenBucket> = Vec::new();
    let mut n = 0usize;
    let mut errors = Vec::new();
    for (i, raw) in measurements.into_iter().enumerate() {
        let r = crate::commands::crud::prepare_insert(raw, None).and_then(|raw| {
            let m = Document::try_from(raw.as_ref())
                .map_err(|e| CommandError::bad_value(format!("invalid BSON document: {e}")))?;
            let Some(Bson::DateTime(t)) = m.get(&opts.time_field) else {
                return Err(CommandError::bad_value(format!(
                    "'{}' must be present and contain a valid BSON UTC datetime value",
                    opts.time_field
                )));
            };
            Ok((t.timestamp_millis(), m))
        });
        let (time_ms, m) = match r {
            Ok(v) => v,
            Err(e) => {
                errors.push(e.to_write_error(i));
                if ordered {
                    break;
                }
                continue;
            }
        };
        let meta = opts.meta_field.as_ref().and_then(|f| m.get(f)).cloned();
        let key = series_key(meta.as_ref());
        let fits = open.get(&key).is_some_and(|b| b.accepts(time_ms, opts));
        if !fits {
            let fresh = OpenBucket::new(time_ms, meta, opts);
            if let Some(old) = open.insert(key.clone(), fresh) {
                closed.push(old);
            }
        }
        if let Some(b) = open.get_mut(&key) {
            b.add(&m, opts);
        }
        n += 1;
    }
    if txn.catalog().collection(&buckets).is_none() {
        return Err(CommandError::namespace_not_found(format!(
            "the buckets collection {buckets} of time-series collection {ns} is missing"
        )));
    }
    let mut written: Vec<OpenBucket> = closed
        .into_iter()
        .chain(open.into_values())
        .filter(|b| b.dirty)
        .collect();
    written.sort_by_key(|b| b.doc_id);
    for b in written {
        let doc = RawDocumentBuf::from_document(&b.to_document())
            .map_err(|e| CommandError::internal(format!("encode bucket: {e}")))?;
        txn.apply(if b.stored {
            Mutation::Upsert {
                ns: buckets.clone(),
                doc,
            }
        } else {
            Mutation::Insert {
                ns: buckets.clone(),
                doc,
            }
        })?;
    }
    Ok((n, errors))
}

/// Where an index of a time series collection lives: the spec stored on `system.buckets.<name>`, with
/// the key translated to bucket fields as mongod does (`<metaField>.x` → `meta.x`; a measurement field
/// `f` ascending → `control.min.f: 1, control.max.f: 1`, descending → `control.max.f: -1,
/// control.min.f: -1`) and the user's spec kept under `originalSpec` for `listIndexes` of `<name>`.
/// `spec` is a normalised `{v, key, name, ...}` spec.
pub fn buckets_index_spec(opts: &TimeseriesOptions, spec: &Document) -> CommandResult<Document> {
    let key = spec.get_document("key").cloned().unwrap_or_default();
    let unsupported = |what: String| CommandError::cannot_create_index(format!("{what} on a time-series collection"));
    for option in ["unique", "partialFilterExpression", "expireAfterSeconds", "weights"] {
        if spec.contains_key(option) && !(option == "unique" && matches!(spec.get(option), Some(Bson::Boolean(false))))
        {
            return Err(unsupported(format!("index option '{option}' is not supported")));
        }
    }
    let mut bucket_key = Document::new();
    for (field, dir) in &key {
        let meta_rest = opts.meta_field.as_ref().and_then(|m| {
            if field == m {
                Some(String::new())
            } else {
                field
                    .strip_prefix(m.as_str())
                    .and_then(|r| r.strip_prefix('.'))
                    .map(|r| format!(".{r}"))
            }
        });
        if let Some(rest) = meta_rest {
            bucket_key.insert(format!("meta{rest}"), dir.clone());
            continue;
        }
        let ascending = match crate::commands::raw::as_i64(dir) {
            Some(1) => true,
            Some(-1) => false,
            _ => {
                return Err(unsupported(format!(
                    "index key {field}: {dir} is not supported (only the metaField takes other index types; measurement fields take 1 or -1)"
                )));
            }
        };
        let (first, second) = if ascending { ("min", "max") } else { ("max", "min") };
        bucket_key.insert(format!("control.{first}.{field}"), dir.clone());
        bucket_key.insert(format!("control.{second}.{field}"), dir.clone());
    }
    let mut out = Document::new();
    for (k, v) in spec {
        out.insert(
            k.clone(),
            if k == "key" {
                Bson::Document(bucket_key.clone())
            } else {
                v.clone()
            },
        );
    }
    out.insert("originalSpec", spec.clone());
    Ok(out)
}

/// The index mongod creates with a time series collection that has a metaField: `{<metaField>: 1,
/// <timeField>: 1}`, in user-facing form.
pub fn default_index_spec(opts: &TimeseriesOptions) -> Option<Document> {
    let meta = opts.meta_field.as_ref()?;
    let time = &opts.time_field;
    Some(doc! { "v": 2, "key": { meta.as_str(): 1, time.as_str(): 1 }, "name": format!("{meta}_1_{time}_1") })
}

/// How `listIndexes` of `<name>` shows an index of its buckets collection (the user's spec).
pub fn user_index_spec(buckets_spec: &Document) -> Document {
    match buckets_spec.get("originalSpec") {
        Some(Bson::Document(original)) => original.clone(),
        _ => buckets_spec.clone(),
    }
}
