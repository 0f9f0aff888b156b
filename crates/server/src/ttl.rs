//! The TTL monitor: deletes documents whose TTL-indexed date is older than the index's `expireAfterSeconds`.
//!
//! Documented behaviour (<https://www.mongodb.com/docs/manual/core/index-ttl/>), reproduced here:
//! - a TTL index is a single-field index with `expireAfterSeconds`; compound indexes never expire documents;
//! - a document expires once `indexed date + expireAfterSeconds` is in the past; when the field is an array
//!   the earliest date in it counts; a missing field or one holding no date never expires;
//! - a partial TTL index only expires documents that match its `partialFilterExpression`;
//! - the background task runs every `ttlMonitorSleepSecs` (60 s; here [`ServerConfig::ttl_monitor_interval`]),
//!   only on a primary or standalone; secondaries receive the deletions through replication;
//! - `collMod` changes of `expireAfterSeconds` take effect at the next pass (the spec is read each pass).
//!
//! A pass ([`sweep`]) first finds candidates under the read lock, then deletes them in one engine write per
//! collection, re-checking each document inside the write; deletions are ordinary [`Mutation::Delete`]s, so
//! they are journaled and logged as `d` oplog entries like any client delete. Views and capped collections
//! (where TTL indexes are not allowed) are skipped. The buckets of a time series collection created with
//! `expireAfterSeconds` expire whole, once their newest measurement is older than that.
//!
//! [`ServerConfig::ttl_monitor_interval`]: crate::config::ServerConfig::ttl_monitor_interval

use std::sync::Weak;
use std::time::{Duration, Instant};

use bson::{Bson, Document, RawDocument, doc};
use tidemark_query::Filter;

use crate::engine::key::path_values;
use crate::engine::{Catalog, Collection, Engine, Mutation, Namespace};
use crate::error::CommandResult;
use crate::repl::ReplState;

/// mongod's default `ttlMonitorSleepSecs`.
pub const DEFAULT_TTL_MONITOR_INTERVAL: Duration = Duration::from_secs(60);

/// One TTL index of a collection, ready to test documents.
struct TtlIndex {
    field: String,
    expire_after_ms: i64,
    partial: Option<Filter>,
}

impl TtlIndex {
    /// The TTL rule of an index spec, if it is a valid single-field TTL index.
    fn from_spec(spec: &Document) -> Option<Self> {
        let key = spec.get_document("key").ok()?;
        if key.len() != 1 {
            return None;
        }
        let field = key.keys().next()?.clone();
        if field == "_id" {
            return None;
        }
        let secs: i64 = match spec.get("expireAfterSeconds")? {
            Bson::Int32(n) => i64::from(*n),
            Bson::Int64(n) => *n,
            Bson::Double(d) if d.is_finite() && *d >= 0.0 && *d <= f64::from(i32::MAX) => {
                // In range (checked above): whole seconds, as mongod stores them.
                #[allow(clippy::cast_possible_truncation)]
                let whole = d.trunc() as i64;
                whole
            }
            _ => return None,
        };
        if !(0..=i64::from(i32::MAX)).contains(&secs) {
            return None;
        }
        let ms = secs.checked_mul(1000)?;
        let partial = match spec.get("partialFilterExpression") {
            Some(Bson::Document(d)) => Some(Filter::parse(d).ok()?),
            _ => None,
        };
        Some(Self {
            field,
            expire_after_ms: ms,
            partial,
        })
    }

    /// Whether `doc` has expired at `now_ms` (milliseconds since the epoch).
    fn expired(&self, doc: &RawDocument, now_ms: i64) -> bool {
        let Some(values) = path_values(doc, &self.field) else {
            return false;
        };
        let Some(earliest) = values
            .iter()
            .filter_map(|v| match v {
                Bson::DateTime(d) => Some(d.timestamp_millis()),
                _ => None,
            })
            .min()
        else {
            return false;
        };
        if earliest.saturating_add(self.expire_after_ms) >= now_ms {
            return false;
        }
        match &self.partial {
            None => true,
            Some(f) => Document::try_from(doc).is_ok_and(|d| f.matches(&d)),
        }
    }
}

fn ttl_indexes(coll: &Collection) -> Vec<TtlIndex> {
    if coll.is_virtual() || coll.is_capped() {
        return Vec::new();
    }
    let mut out: Vec<TtlIndex> = coll
        .indexes()
        .iter()
        .filter_map(|i| TtlIndex::from_spec(&i.spec))
        .collect();
    out.extend(bucket_expiry(coll));
    out
}

/// The buckets of a time series collection created with `expireAfterSeconds` expire as a whole once
/// their newest measurement (`control.max.<timeField>`) is older than that, as mongod documents it.
fn bucket_expiry(coll: &Collection) -> Option<TtlIndex> {
    let options = &coll.options;
    if !options.contains_key("clusteredIndex") {
        return None;
    }
    let time_field = options.get_document("timeseries").ok()?.get_str("timeField").ok()?;
    let expire = options.get("expireAfterSeconds")?.clone();
    TtlIndex::from_spec(&doc! { "key": { format!("control.max.{time_field}"): 1 }, "expireAfterSeconds": expire })
}

/// `_id`s of the documents of `coll` expired under any of its TTL indexes at `now_ms`.
fn expired_ids(coll: &Collection, now_ms: i64) -> Vec<Bson> {
    let indexes = ttl_indexes(coll);
    if indexes.is_empty() {
        return Vec::new();
    }
    coll.iter()
        .filter(|(_, d)| indexes.iter().any(|i| i.expired(d, now_ms)))
        .filter_map(|(_, d)| d.get("_id").ok().flatten().and_then(|v| Bson::try_from(v).ok()))
        .collect()
}

fn candidates(cat: &Catalog, now_ms: i64) -> Vec<(Namespace, Vec<Bson>)> {
    let mut out = Vec::new();
    for db in cat.database_names() {
        let Some(database) = cat.database(&db) else { continue };
        for (name, coll) in &database.collections {
            let ids = expired_ids(coll, now_ms);
            if !ids.is_empty() {
                out.push((
                    Namespace {
                        db: db.clone(),
                        coll: name.clone(),
                    },
                    ids,
                ));
            }
        }
    }
    out
}

/// One TTL pass at `now`: deletes every expired document through the engine; returns how many it deleted.
pub fn sweep(engine: &Engine, now: bson::DateTime) -> CommandResult<u64> {
    let now_ms = now.timestamp_millis();
    let work = engine.read(|cat| candidates(cat, now_ms));
    let mut deleted = 0u64;
    for (ns, ids) in work {
        deleted += engine.write(|txn| {
            let mut n = 0u64;
            for id in ids {
                // The document may have changed or gone since the read: check again under the write lock.
                let still_expired = txn.catalog().collection(&ns).is_some_and(|coll| {
                    let indexes = ttl_indexes(coll);
                    coll.find_id(&id)
                        .is_some_and(|(_, d)| indexes.iter().any(|i| i.expired(d, now_ms)))
                });
                if still_expired {
                    txn.apply(Mutation::Delete { ns: ns.clone(), id })?;
                    n += 1;
                }
            }
            Ok(n)
        })?;
    }
    Ok(deleted)
}

/// Starts the background monitor: every `interval`, while this node is a primary or standalone, runs
/// [`sweep`]. The thread ends once the engine is dropped.
pub fn spawn_monitor(engine: Weak<Engine>, repl: Weak<ReplState>, interval: Duration) {
    let interval = interval.max(Duration::from_millis(10));
    let step = interval.min(Duration::from_millis(250));
    let spawned = std::thread::Builder::new().name("ttl-monitor".into()).spawn(move || {
        let mut next = Instant::now() + interval;
        loop {
            std::thread::sleep(step);
            let (Some(engine), Some(repl)) = (engine.upgrade(), repl.upgrade()) else {
                return;
            };
            if Instant::now() < next {
                continue;
            }
            next = Instant::now() + interval;
            if !repl.is_writable_primary() {
                continue;
            }
            match sweep(&engine, bson::DateTime::now()) {
                Ok(0) => {}
                Ok(n) => tracing::debug!(deleted = n, "TTL monitor deleted expired documents"),
                Err(e) => tracing::warn!(error = %e, "TTL monitor pass failed"),
            }
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the TTL monitor thread");
    }
}
