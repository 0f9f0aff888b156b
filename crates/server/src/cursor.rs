//! Open cursors: what `find`, `aggregate`, `listCollections` and `listIndexes` leave behind for `getMore`.
//!
//! Two kinds of cursor exist. A *scan* cursor remembers only its position (the last record id returned) in a
//! collection's natural order, plus the filter, projection, skip and limit still to apply; each `getMore`
//! re-enters the engine under its read lock and continues from there, copying stored bytes straight into the
//! reply. Nothing is materialised, so full-collection scans of any size stream at memory speed. A *buffered*
//! cursor holds documents already computed (sorted results, pipeline output, catalog listings).
//!
//! Batches follow mongod's rules: the first batch defaults to 101 documents, later batches are bounded by
//! 16 MiB only, and a batch always holds at least one document even if that document alone is larger.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, PoisonError};

use bson::RawDocumentBuf;
use bson::Document;
use tidemark_query::Filter;

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
                emit(Batch { docs: taken.iter().map(|d| Cow::Borrowed(d.as_bytes())).collect(), exhausted })
            }
            CursorSource::Scan(scan) => engine.read(|cat| {
                let Some(coll) = cat.collection(&scan.ns).filter(|c| c.uuid == scan.uuid) else {
                    return emit(Batch { docs: Vec::new(), exhausted: true });
                };
                let mut docs: Vec<Cow<'_, [u8]>> = Vec::new();
                let mut bytes = 0usize;
                let mut iter = coll.scan_from(scan.after, scan.reverse).peekable();
                let mut exhausted = false;
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
                    scan.after = Some(rec);
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
                emit(Batch { docs, exhausted })
            }),
        }
    }
}

/// Registry of open cursors.
pub struct CursorManager {
    cursors: Mutex<HashMap<i64, Cursor>>,
    next_id: AtomicI64,
}

impl Default for CursorManager {
    fn default() -> Self {
        // Start ids at a random positive value, as mongod does, so ids are not guessable across restarts.
        let start = i64::from(rand::random::<u32>()) << 20;
        Self { cursors: Mutex::new(HashMap::new()), next_id: AtomicI64::new(start.max(1)) }
    }
}

impl CursorManager {
    /// Stores a cursor and returns its new id (never 0).
    pub fn register(&self, cursor: Cursor) -> i64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.cursors.lock().unwrap_or_else(PoisonError::into_inner).insert(id, cursor);
        id
    }

    /// Takes a cursor out for a getMore (put it back with [`CursorManager::put_back`]).
    pub fn take(&self, id: i64) -> Option<Cursor> {
        self.cursors.lock().unwrap_or_else(PoisonError::into_inner).remove(&id)
    }

    /// Returns a cursor that still has documents.
    pub fn put_back(&self, id: i64, cursor: Cursor) {
        self.cursors.lock().unwrap_or_else(PoisonError::into_inner).insert(id, cursor);
    }

    /// Kills a cursor; returns whether it existed.
    pub fn kill(&self, id: i64) -> bool {
        self.cursors.lock().unwrap_or_else(PoisonError::into_inner).remove(&id).is_some()
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
