//! Open cursors: what `find`, `aggregate`, `listCollections` and `listIndexes` leave behind for `getMore`.
//!
//! Two kinds of cursor exist. A *scan* cursor remembers only its position (the last record id returned) in a
//! collection's natural order, plus the filter, projection, skip and limit still to apply; each `getMore`
//! re-enters the engine under its read lock and continues from there, copying stored bytes straight into the
//! reply. Nothing is materialised, so full-collection scans of any size stream at memory speed. A *buffered*
//! cursor holds documents already computed (sorted results, pipeline output, catalog listings).
//!
//! A scan walks natural order or, for a `find` whose filter bounds `_id` (a range per reader when a dump
//! splits a large collection), the `_id` index over those bounds: then it remembers the last `_id`
//! returned and each `getMore` resumes the index walk just after it. Either way memory stays bounded and
//! documents leave as stored, batch by batch, instead of the whole result being materialised by `find`.
//!
//! A scan may be *tailable* (`find` with `tailable: true`, on capped collections such as `local.oplog.rs`):
//! it stays open at the end of the data and later `getMore`s continue from its last position. With
//! `awaitData`, a `getMore` that finds nothing waits up to its `maxTimeMS` (default 1 s) for a write, woken
//! by the oplog writer's change notification (see [`crate::repl::oplog::Oplog::wait_for_change`]), then
//! answers an empty batch with the same cursor id. If the capped collection rolled over past the cursor's
//! position, the `getMore` fails with CappedPositionLost (136) rather than silently skipping documents.
//!
//! Batches follow mongod's rules: the first batch defaults to 101 documents, later batches are bounded by
//! 16 MiB only, and a batch always holds at least one document even if that document alone is larger.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bson::Document;
use bson::RawDocumentBuf;
use tidemark_query::Filter;

use crate::engine::collection::{KeyRanges, valid_range};
use crate::engine::key::Key;
use crate::engine::{Engine, Namespace};
use crate::error::{CommandError, CommandResult};

/// Default number of documents in a first batch.
pub const DEFAULT_FIRST_BATCH: usize = 101;
/// Upper bound of the documents' bytes in one batch.
pub const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// A per-document transformation (a projection) applied as documents leave a scan.
pub type DocTransform = Box<dyn Fn(&Document) -> CommandResult<Document> + Send>;

/// Where a cursor's documents come from.
pub enum CursorSource {
    /// Precomputed documents.
    Buffered(VecDeque<RawDocumentBuf>),
    /// A natural-order scan of a collection.
    Scan(Box<ScanState>),
}

/// Position and remaining work of a natural-order scan.
pub struct ScanState {
    /// Collection scanned.
    pub ns: Namespace,
    /// UUID of the collection when the scan began (a dropped and recreated collection ends the scan).
    pub uuid: [u8; 16],
    /// Last record id returned.
    pub after: Option<u64>,
    /// `Some` for a walk of the `_id` index over these key ranges (ascending, disjoint) instead of
    /// natural order.
    pub id_ranges: Option<KeyRanges>,
    /// Last `_id` returned by an `_id`-index walk.
    pub after_id: Option<Key>,
    /// `$natural: -1` order.
    pub reverse: bool,
    /// Filter to apply (`None` = all documents).
    pub filter: Option<Filter>,
    /// Projection to apply.
    pub projection: Option<DocTransform>,
    /// Matching documents still to skip.
    pub skip: u64,
    /// Documents still allowed by `limit`.
    pub remaining: Option<u64>,
    /// Tailable-cursor state (`None` for ordinary scans).
    pub tail: Option<TailState>,
}

/// State of a tailable scan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TailState {
    /// `awaitData`: an empty `getMore` waits for new documents.
    pub await_data: bool,
    /// Whether `ScanState::after` is a record this scan visited (its disappearance means the position was
    /// lost to capped truncation).
    pub positioned: bool,
}

/// How long an `awaitData` `getMore` waits when it sets no `maxTimeMS` (mongod's default).
pub const DEFAULT_AWAIT_DATA_TIMEOUT: Duration = Duration::from_secs(1);

/// Reads `tailable`/`awaitData` of a `find`: `None` for an ordinary cursor. Like mongod, `awaitData` needs
/// `tailable`, and a tailable cursor allows no sort but `{$natural: 1}`.
pub fn tail_options(body: &Document, natural_sort: Option<bool>, has_sort: bool) -> CommandResult<Option<TailState>> {
    let tailable = crate::commands::get_bool(body, "tailable")?.unwrap_or(false);
    let await_data = crate::commands::get_bool(body, "awaitData")?.unwrap_or(false);
    if await_data && !tailable {
        return Err(CommandError::failed_to_parse(
            "Cannot set 'awaitData' without also setting 'tailable'",
        ));
    }
    if !tailable {
        return Ok(None);
    }
    if has_sort || natural_sort == Some(true) {
        return Err(CommandError::bad_value(
            "cannot use tailable option with a sort other than {$natural: 1}",
        ));
    }
    Ok(Some(TailState {
        await_data,
        positioned: false,
    }))
}

/// Splits a `sort` that only names `$natural` into a scan direction (`Some(true)` = reverse), leaving other
/// sorts as they are.
pub fn natural_sort(sort: Option<Document>) -> (Option<Document>, Option<bool>) {
    match sort {
        Some(s) if s.len() == 1 && s.contains_key("$natural") => {
            let reverse = s
                .get("$natural")
                .and_then(crate::commands::raw::as_i64)
                .is_some_and(|v| v < 0);
            (None, Some(reverse))
        }
        other => (other, None),
    }
}

/// An open cursor.
pub struct Cursor {
    /// Namespace reported in replies (`db.coll`, or `db.$cmd.listCollections`...).
    pub ns: String,
    /// Database the cursor belongs to (getMore must name it).
    pub db: String,
    /// Collection name a getMore must give.
    pub collection: String,
    /// The documents.
    pub source: CursorSource,
}

/// One batch taken from a cursor.
pub struct Batch<'a> {
    /// Encoded documents.
    pub docs: Vec<Cow<'a, [u8]>>,
    /// Whether the cursor has nothing more to give.
    pub exhausted: bool,
}

impl Cursor {
    /// Whether this is a tailable `awaitData` cursor.
    pub fn awaits_data(&self) -> bool {
        matches!(&self.source, CursorSource::Scan(s) if s.tail.is_some_and(|t| t.await_data))
    }

    /// When an empty `getMore` on this cursor stops waiting: `maxTimeMS` (default 1 s) from now for
    /// `awaitData` cursors, `None` (answer at once) for others, which refuse a `maxTimeMS` as mongod does.
    pub fn await_deadline(&self, get_more: &Document) -> CommandResult<Option<Instant>> {
        let max_time = crate::commands::get_i64(get_more, "maxTimeMS")?;
        if !self.awaits_data() {
            if max_time.is_some_and(|m| m != 0) {
                return Err(CommandError::bad_value(
                    "cannot set maxTimeMS on getMore command for a non-awaitData cursor",
                ));
            }
            return Ok(None);
        }
        let wait = match max_time {
            Some(m) if m < 0 => {
                return Err(CommandError::bad_value(format!(
                    "{m} value for maxTimeMS is out of range"
                )));
            }
            Some(m) => Duration::from_millis(m.unsigned_abs()),
            None => DEFAULT_AWAIT_DATA_TIMEOUT,
        };
        Ok(Some(Instant::now() + wait))
    }

    /// Produces the next batch of at most `max_docs` documents (and about [`MAX_BATCH_BYTES`]), then calls
    /// `emit` with it (inside the engine's read lock for scans, so stored bytes are not copied twice).
    pub fn next_batch<R>(
        &mut self,
        engine: &Engine,
        max_docs: Option<usize>,
        emit: impl FnOnce(Batch<'_>) -> CommandResult<R>,
    ) -> CommandResult<R> {
        let max_docs = max_docs.unwrap_or(usize::MAX).max(1);
        match &mut self.source {
            CursorSource::Buffered(queue) => {
                let mut n = 0;
                let mut bytes = 0usize;
                while n < queue.len() && n < max_docs {
                    let len = queue[n].as_bytes().len();
                    if n > 0 && bytes.saturating_add(len) > MAX_BATCH_BYTES {
                        break;
                    }
                    bytes = bytes.saturating_add(len);
                    n += 1;
                }
                let taken: Vec<RawDocumentBuf> = queue.drain(..n).collect();
                let exhausted = queue.is_empty();
                emit(Batch {
                    docs: taken.iter().map(|d| Cow::Borrowed(d.as_bytes())).collect(),
                    exhausted,
                })
            }
            CursorSource::Scan(scan) => engine.read(|cat| {
                let Some(coll) = cat.collection(&scan.ns).filter(|c| c.uuid == scan.uuid) else {
                    return emit(Batch {
                        docs: Vec::new(),
                        exhausted: true,
                    });
                };
                if let (Some(tail), Some(after)) = (scan.tail, scan.after)
                    && tail.positioned
                    && coll.get(after).is_none()
                    && coll.iter().next().is_some_and(|(first, _)| first > after)
                {
                    return Err(CommandError::new(
                        136,
                        "CappedPositionLost",
                        format!(
                            "CollectionScan died due to position in capped collection being deleted. \
                             Last seen record id: RecordId({after}) in {}",
                            scan.ns
                        ),
                    ));
                }
                let mut docs: Vec<Cow<'_, [u8]>> = Vec::new();
                let mut bytes = 0usize;
                let walk: Box<dyn Iterator<Item = (u64, &RawDocumentBuf)> + '_> = match &scan.id_ranges {
                    Some(ranges) => {
                        let ranges = ranges_after(ranges, scan.after_id.as_ref());
                        let Some(recs) = coll.index_scan("_id", ranges, false) else {
                            return emit(Batch {
                                docs: Vec::new(),
                                exhausted: true,
                            });
                        };
                        Box::new(recs.filter_map(|rec| coll.get(rec).map(|raw| (rec, raw))))
                    }
                    None => Box::new(coll.scan_from(scan.after, scan.reverse)),
                };
                let mut iter = walk.peekable();
                let mut exhausted = false;
                let mut last_in_index: Option<&RawDocumentBuf> = None;
                loop {
                    if docs.len() >= max_docs || scan.remaining == Some(0) {
                        exhausted = scan.remaining == Some(0) || iter.peek().is_none();
                        break;
                    }
                    let Some(&(rec, raw)) = iter.peek() else {
                        exhausted = true;
                        break;
                    };
                    let len = raw.as_bytes().len();
                    if !docs.is_empty() && bytes.saturating_add(len) > MAX_BATCH_BYTES {
                        break;
                    }
                    iter.next();
                    engine.metrics().add_docs(1);
                    scan.after = Some(rec);
                    if scan.id_ranges.is_some() {
                        engine.metrics().add_keys(1);
                        last_in_index = Some(raw);
                    }
                    if let Some(t) = &mut scan.tail {
                        t.positioned = true;
                    }
                    let needs_doc = scan.filter.is_some() || scan.projection.is_some();
                    let parsed = if needs_doc {
                        Some(raw.to_document().map_err(|e| {
                            CommandError::internal(format!("stored document in {} is invalid: {e}", scan.ns))
                        })?)
                    } else {
                        None
                    };
                    if let (Some(f), Some(d)) = (&scan.filter, &parsed)
                        && !f.matches(d)
                    {
                        continue;
                    }
                    if scan.skip > 0 {
                        scan.skip -= 1;
                        continue;
                    }
                    if let Some(r) = &mut scan.remaining {
                        *r -= 1;
                    }
                    match (&scan.projection, parsed) {
                        (Some(p), Some(d)) => {
                            let projected = p(&d)?;
                            let enc = RawDocumentBuf::from_document(&projected)
                                .map_err(|e| CommandError::internal(format!("cannot encode projection: {e}")))?;
                            bytes = bytes.saturating_add(enc.as_bytes().len());
                            docs.push(Cow::Owned(enc.into_bytes()));
                        }
                        _ => {
                            bytes = bytes.saturating_add(len);
                            docs.push(Cow::Borrowed(raw.as_bytes()));
                        }
                    }
                }
                // The next batch resumes after the last `_id` walked.
                if let Some(raw) = last_in_index {
                    let id = raw.get("_id").ok().flatten().and_then(crate::engine::key::to_bson);
                    let Some(id) = id else {
                        return Err(CommandError::internal(format!(
                            "stored document in {} has an invalid _id",
                            scan.ns
                        )));
                    };
                    scan.after_id = Some(Key(id));
                }
                if scan.tail.is_some() {
                    // A tailable cursor stays open at the end of the data (until its limit is reached).
                    exhausted = scan.remaining == Some(0);
                }
                emit(Batch { docs, exhausted })
            }),
        }
    }
}

/// `ranges` from just after `after` on (all of them when nothing was returned yet).
fn ranges_after(ranges: &KeyRanges, after: Option<&Key>) -> KeyRanges {
    let Some(after) = after else {
        return ranges.clone();
    };
    ranges
        .iter()
        .filter_map(|(lo, hi)| {
            let lo = match lo {
                Bound::Included(k) | Bound::Excluded(k) if k > after => lo.clone(),
                _ => Bound::Excluded(after.clone()),
            };
            valid_range(lo.as_ref(), hi.as_ref()).then(|| (lo, hi.clone()))
        })
        .collect()
}

/// How long an unused cursor stays open (mongod's `cursorTimeoutMillis` default: 10 minutes).
pub const CURSOR_TIMEOUT: Duration = Duration::from_secs(600);

/// Registry of open cursors.
pub struct CursorManager {
    cursors: Mutex<HashMap<i64, (Cursor, Instant)>>,
    /// Users authenticated on the connection that created each cursor (checked by getMore/killCursors
    /// under `--auth`, as mongod does).
    owners: Mutex<HashMap<i64, Vec<crate::auth::UserName>>>,
    next_id: AtomicI64,
}

impl Default for CursorManager {
    fn default() -> Self {
        // Start ids at a random positive value, as mongod does, so ids are not guessable across restarts.
        let start = i64::from(rand::random::<u32>()) << 20;
        Self {
            cursors: Mutex::new(HashMap::new()),
            owners: Mutex::new(HashMap::new()),
            next_id: AtomicI64::new(start.max(1)),
        }
    }
}

impl CursorManager {
    /// Stores a cursor and returns its new id (never 0). Cursors idle for [`CURSOR_TIMEOUT`] are closed here.
    pub fn register(&self, cursor: Cursor) -> i64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut map = self.cursors.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, (_, used)| now.duration_since(*used) < CURSOR_TIMEOUT);
        map.insert(id, (cursor, now));
        let mut owners = self.owners.lock().unwrap_or_else(PoisonError::into_inner);
        owners.retain(|k, _| map.contains_key(k));
        id
    }

    /// [`CursorManager::register`], recording the users authenticated on the creating connection.
    pub fn register_owned(&self, cursor: Cursor, owner: Vec<crate::auth::UserName>) -> i64 {
        let id = self.register(cursor);
        self.owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, owner);
        id
    }

    /// Checks that a connection authenticated as `users` may use cursor `id`: like mongod, it must share a
    /// user with the connection that created the cursor (both unauthenticated also matches). Unknown cursors
    /// pass (the caller reports CursorNotFound).
    pub fn check_owner(&self, id: i64, users: &[crate::auth::UserName]) -> crate::error::CommandResult<()> {
        let owners = self.owners.lock().unwrap_or_else(PoisonError::into_inner);
        match owners.get(&id) {
            Some(owner) if !(owner.iter().any(|o| users.contains(o)) || owner.is_empty() && users.is_empty()) => {
                Err(crate::error::CommandError::unauthorized(format!(
                    "cursor id {id} was not created by the authenticated user"
                )))
            }
            _ => Ok(()),
        }
    }

    /// Takes a cursor out for a getMore (put it back with [`CursorManager::put_back`]).
    pub fn take(&self, id: i64) -> Option<Cursor> {
        self.cursors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id)
            .map(|(c, _)| c)
    }

    /// Returns a cursor that still has documents.
    pub fn put_back(&self, id: i64, cursor: Cursor) {
        let mut map = self.cursors.lock().unwrap_or_else(PoisonError::into_inner);
        map.insert(id, (cursor, Instant::now()));
    }

    /// Kills a cursor; returns whether it existed.
    pub fn kill(&self, id: i64) -> bool {
        self.owners.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
        self.cursors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id)
            .is_some()
    }

    /// Number of open cursors.
    pub fn len(&self) -> usize {
        self.cursors.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether no cursor is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
