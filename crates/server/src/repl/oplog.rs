//! The oplog writer: turns every applied [`Mutation`] into MongoDB-shaped oplog entries in `local.oplog.rs`.
//!
//! How it works:
//! - [`Oplog`] is the engine's [`WriteObserver`]. Before each mutation is applied it describes it against the
//!   state it is about to change ([`WriteObserver::describe`]): the pre-image of an update (to compute the
//!   `$v: 2` diff), the spec of a dropped index, the record count of a dropped collection, the UUID. When the
//!   write succeeds, [`WriteObserver::finish`] stamps each description with `ts` (one strictly increasing
//!   clock, assigned under the engine's write lock, so timestamp order is commit order), `t` (the term), `v: 2`
//!   and `wall`, and inserts them into `local.oplog.rs` within the same write: entries and change are
//!   journaled in one batch and rolled back together.
//! - `local.oplog.rs` is an ordinary capped collection of the catalog created with `autoIndexId: false` (no
//!   `_id`, like mongod's), so capped rollover, checkpoints, journal recovery and `find` work unchanged. Its
//!   entries are in `ts` order, which lets [`seek_after`] find the start of `{ts: {$gte: X}}` by binary search.
//! - Entry shapes follow mongod 7.0 (field order `op, ns, ui, o, o2, ts, t, v, wall`): `i` with `o` = the
//!   document and `o2: {_id}`; `u` with `o` = `{$v: 2, diff}` (or the full new document when a diff cannot
//!   express the change exactly, e.g. reordered fields, or would be larger than the document) and
//!   `o2: {_id}`; `d` with `o: {_id}`; `c` on `<db>.$cmd` for create (with `idIndex`), drop
//!   (`o2: {numRecords}`), createIndexes (flattened spec), dropIndexes (`o2` = the dropped spec), collMod
//!   (`o2.collectionOptions_old`), renameCollection and dropDatabase (preceded by one `drop` per collection, as
//!   mongod does). Arrays changed in place get array sub-diffs (`{a: true, l?, u<i>, s<i>}`). Writes to
//!   the `local` database and capped-collection truncations are not logged.
//! - Retryable writes (commands carrying `lsid` and `txnNumber`, see [`retryable_session`]) get mongod's
//!   extra fields on their CRUD entries: `lsid`, `txnNumber` first, `stmtId` (the statement's index in the
//!   command) after `o2`, and `prevOpTime` last, chaining the statements of one command (`{ts: 0, t: -1}` for
//!   the first). `config.transactions` is not maintained.
//! - Waiters (tailable `awaitData` cursors) block on a condition variable bumped by every write that changed
//!   something; [`Oplog::wait_for_change`] never spins.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bson::{Bson, Document, RawDocumentBuf, Timestamp, doc};

use crate::engine::collection::id_index_spec;
use crate::engine::{Catalog, Collection, Engine, Mutation, Namespace, WriteObserver, WriteTxn};
use crate::error::{CommandError, CommandResult};

/// Database of the oplog.
pub const OPLOG_DB: &str = "local";
/// Collection of the oplog.
pub const OPLOG_COLLECTION: &str = "oplog.rs";

/// The oplog namespace, `local.oplog.rs`.
pub fn oplog_ns() -> Namespace {
    Namespace {
        db: OPLOG_DB.to_string(),
        coll: OPLOG_COLLECTION.to_string(),
    }
}

/// `{lsid, txnNumber}` of a retryable write command (a `txnNumber` outside a multi-document transaction), with
/// the `lsid` completed as mongod logs it: `{id, uid}`. A `uid` the client did not send is the SHA-256 of the
/// empty user name, which is what mongod records without authentication (the digest of an authenticated
/// user's name is not derived here).
pub fn retryable_session(body: &Document) -> Option<Document> {
    let Some(Bson::Document(lsid)) = body.get("lsid") else {
        return None;
    };
    let txn_number = match body.get("txnNumber") {
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Int32(n)) => i64::from(*n),
        _ => return None,
    };
    if body.contains_key("autocommit") {
        return None;
    }
    let id = lsid.get("id")?.clone();
    let uid = match lsid.get("uid") {
        Some(u) => u.clone(),
        None => {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(b"");
            Bson::Binary(bson::Binary {
                subtype: bson::spec::BinarySubtype::Generic,
                bytes: digest.to_vec(),
            })
        }
    };
    Some(doc! { "lsid": { "id": id, "uid": uid }, "txnNumber": txn_number })
}

/// Key of a description that could not be built (the write then fails with this message).
const ERROR_NOTE: &str = "$error";

/// The oplog writer and clock (see the module documentation).
#[derive(Debug)]
pub struct Oplog {
    size_bytes: u64,
    enabled: AtomicBool,
    clock: Mutex<Timestamp>,
    term: Arc<AtomicI64>,
    changes: Mutex<u64>,
    changed: Condvar,
    appended: AtomicU64,
    noop_interval_ms: AtomicU64,
}

impl Oplog {
    /// A disabled writer for an oplog of `size_bytes`, stamping entries with the term in `term`.
    pub fn new(size_bytes: u64, term: Arc<AtomicI64>) -> Self {
        Self {
            size_bytes,
            enabled: AtomicBool::new(false),
            clock: Mutex::new(Timestamp { time: 0, increment: 0 }),
            term,
            changes: Mutex::new(0),
            changed: Condvar::new(),
            appended: AtomicU64::new(0),
            noop_interval_ms: AtomicU64::new(u64::try_from(super::DEFAULT_NOOP_INTERVAL.as_millis()).unwrap_or(10_000)),
        }
    }

    /// Whether writes are being logged.
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::SeqCst)
    }

    /// Capped size of `local.oplog.rs` in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Creation options of `local.oplog.rs`.
    pub fn collection_options(&self) -> Document {
        doc! { "capped": true, "size": i64::try_from(self.size_bytes).unwrap_or(i64::MAX), "autoIndexId": false }
    }

    /// Creates `local.oplog.rs` if missing and starts logging.
    pub fn enable(&self, engine: &Engine) -> CommandResult<()> {
        let options = self.collection_options();
        engine.write(|txn| {
            txn.unobserved();
            if txn.catalog().collection(&oplog_ns()).is_none() {
                txn.apply(Mutation::CreateCollection {
                    ns: oplog_ns(),
                    uuid: crate::engine::new_uuid(),
                    options,
                })?;
            }
            Ok(())
        })?;
        self.resume(engine);
        self.enabled.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Starts logging if `local.oplog.rs` exists, with the clock after its newest entry; returns whether it did.
    pub fn resume(&self, engine: &Engine) -> bool {
        let newest = engine.read(|cat| {
            let coll = cat.collection(&oplog_ns())?;
            Some(
                coll.iter()
                    .next_back()
                    .and_then(|(_, d)| d.get_timestamp("ts").ok())
                    .unwrap_or(Timestamp { time: 0, increment: 0 }),
            )
        });
        match newest {
            Some(ts) => {
                self.advance_clock(ts);
                self.enabled.store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// Makes the clock return timestamps after `ts` from now on (used when entries are copied verbatim).
    pub fn advance_clock(&self, ts: Timestamp) {
        let mut c = self.clock.lock().unwrap_or_else(PoisonError::into_inner);
        if (ts.time, ts.increment) > (c.time, c.increment) {
            *c = ts;
        }
    }

    /// The last timestamp handed out.
    pub fn last_timestamp(&self) -> Timestamp {
        *self.clock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next timestamp: `(now, 1)` in a new second, else the previous one with the increment bumped. Also
    /// the value that replaces empty timestamps in inserted documents, so those follow commit order too.
    pub fn next_timestamp(&self) -> Timestamp {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let now = u32::try_from(now).unwrap_or(u32::MAX);
        let mut c = self.clock.lock().unwrap_or_else(PoisonError::into_inner);
        *c = if now > c.time {
            Timestamp {
                time: now,
                increment: 1,
            }
        } else if c.increment == u32::MAX {
            Timestamp {
                time: c.time.saturating_add(1),
                increment: 1,
            }
        } else {
            Timestamp {
                time: c.time,
                increment: c.increment + 1,
            }
        };
        *c
    }

    /// Stamps `notes` (`{op, ns, ui?, o, o2?}`) with `ts`, `t`, `v` and `wall` and inserts them into the oplog
    /// within `txn`. Returns the timestamps assigned.
    pub fn append(&self, txn: &mut WriteTxn<'_>, notes: Vec<Document>) -> CommandResult<Vec<Timestamp>> {
        let term = self.term.load(Ordering::SeqCst);
        let wall = bson::DateTime::now();
        self.ensure_collection(txn)?;
        let session = txn.session().cloned();
        let mut stmt_id = 0_i32;
        let mut prev = doc! { "ts": Timestamp { time: 0, increment: 0 }, "t": -1_i64 };
        let mut out = Vec::with_capacity(notes.len());
        for n in notes {
            let retryable = session.is_some() && matches!(n.get_str("op"), Ok("i" | "u" | "d"));
            let mut n = match &session {
                Some(sess) if retryable => {
                    // mongod's retryable-write form: `lsid, txnNumber` first, `stmtId` after the operation.
                    let mut d = sess.clone();
                    d.extend(n);
                    d.insert("stmtId", stmt_id);
                    stmt_id = stmt_id.saturating_add(1);
                    d
                }
                _ => n,
            };
            let ts = self.next_timestamp();
            n.insert("ts", ts);
            n.insert("t", term);
            n.insert("v", 2_i64);
            n.insert("wall", wall);
            if retryable {
                // Statements of one retryable write are chained; the first has no predecessor.
                n.insert("prevOpTime", std::mem::replace(&mut prev, doc! { "ts": ts, "t": term }));
            }
            let raw = RawDocumentBuf::from_document(&n)
                .map_err(|e| CommandError::internal(format!("cannot encode oplog entry: {e}")))?;
            txn.apply(Mutation::Insert {
                ns: oplog_ns(),
                doc: raw,
            })?;
            out.push(ts);
        }
        self.appended
            .fetch_add(u64::try_from(out.len()).unwrap_or(0), Ordering::SeqCst);
        Ok(out)
    }

    /// Recreates `local.oplog.rs` if a client dropped it, so logging (and with it every write) keeps working.
    fn ensure_collection(&self, txn: &mut WriteTxn<'_>) -> CommandResult<()> {
        if txn.catalog().collection(&oplog_ns()).is_none() {
            let options = self.collection_options();
            txn.apply(Mutation::CreateCollection {
                ns: oplog_ns(),
                uuid: crate::engine::new_uuid(),
                options,
            })?;
        }
        Ok(())
    }

    /// Inserts an entry exactly as given (a secondary recording what it applied); the clock moves past its
    /// `ts`.
    pub fn append_verbatim(&self, txn: &mut WriteTxn<'_>, entry: &Document) -> CommandResult<()> {
        let ts = entry
            .get_timestamp("ts")
            .map_err(|_| CommandError::bad_value("oplog entry to record has no 'ts' timestamp"))?;
        let raw = RawDocumentBuf::from_document(entry)
            .map_err(|e| CommandError::internal(format!("cannot encode oplog entry: {e}")))?;
        self.ensure_collection(txn)?;
        txn.apply(Mutation::Insert {
            ns: oplog_ns(),
            doc: raw,
        })?;
        self.advance_clock(ts);
        self.appended.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Writes one no-op entry `{op: "n", ns: "", o: msg}`.
    pub fn append_noop(&self, engine: &Engine, msg: Document) -> CommandResult<Timestamp> {
        if !self.is_enabled() {
            return Err(CommandError::new(
                94,
                "NotYetInitialized",
                "no replset config has been received; the oplog is not initialized",
            ));
        }
        let ts = engine.write(|txn| {
            txn.unobserved();
            self.append(txn, vec![doc! { "op": "n", "ns": "", "o": msg }])
        })?;
        self.notify();
        Ok(ts.first().copied().unwrap_or(Timestamp { time: 0, increment: 0 }))
    }

    /// Number of entries appended since start (the periodic no-op writer watches it).
    pub fn appended_count(&self) -> u64 {
        self.appended.load(Ordering::SeqCst)
    }

    /// Sets the periodic no-op interval.
    pub fn set_noop_interval(&self, interval: Duration) {
        self.noop_interval_ms.store(
            u64::try_from(interval.as_millis()).unwrap_or(u64::MAX).max(1),
            Ordering::SeqCst,
        );
    }

    fn noop_interval(&self) -> Duration {
        Duration::from_millis(self.noop_interval_ms.load(Ordering::SeqCst))
    }

    /// The change counter, to pass to [`Oplog::wait_for_change`].
    pub fn change_count(&self) -> u64 {
        *self.changes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Blocks until a write after the one numbered `seen` (see [`Oplog::change_count`]) or until `deadline`;
    /// returns whether something changed.
    pub fn wait_for_change(&self, seen: u64, deadline: Instant) -> bool {
        let mut g = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if *g != seen {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = self
                .changed
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn notify(&self) {
        let mut g = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        *g = g.wrapping_add(1);
        self.changed.notify_all();
    }
}

impl WriteObserver for Oplog {
    fn describe(&self, before: &Catalog, m: &Mutation, notes: &mut Vec<Document>) {
        if !self.is_enabled() {
            return;
        }
        if let Err(e) = describe(before, m, notes) {
            notes.push(doc! { ERROR_NOTE: e.message });
        }
    }

    fn finish(&self, txn: &mut WriteTxn<'_>, notes: Vec<Document>) -> CommandResult<()> {
        if txn.changes() > 0 {
            // Waiters re-check once the write lock is released; a rolled-back write only wakes them early.
            self.notify();
        }
        if notes.is_empty() {
            return Ok(());
        }
        if let Some(msg) = notes.iter().find_map(|n| n.get_str(ERROR_NOTE).ok()) {
            return Err(CommandError::internal(format!("cannot build oplog entry: {msg}")));
        }
        self.append(txn, merge_drop_target(notes))?;
        Ok(())
    }
}

/// Turns `drop X` immediately followed by `renameCollection ... to: X` (a rename with `dropTarget: true`) into
/// one rename entry whose `dropTarget` is the dropped collection's UUID, as mongod logs it.
fn merge_drop_target(notes: Vec<Document>) -> Vec<Document> {
    let mut out: Vec<Document> = Vec::with_capacity(notes.len());
    for mut n in notes {
        let is_rename =
            n.get_str("op") == Ok("c") && n.get_document("o").is_ok_and(|o| o.contains_key("renameCollection"));
        if is_rename
            && let Some(prev) = out.last()
            && let Ok(prev_o) = prev.get_document("o")
            && let (Ok(dropped), Ok(prev_ns)) = (prev_o.get_str("drop"), prev.get_str("ns"))
            && let Ok(o) = n.get_document("o")
            && let Ok(to) = o.get_str("to")
            && prev_ns
                .strip_suffix(".$cmd")
                .map(|db| format!("{db}.{dropped}"))
                .as_deref()
                == Some(to)
        {
            let target_uuid = prev.get("ui").cloned().unwrap_or(Bson::Boolean(true));
            let num_records = prev
                .get_document("o2")
                .ok()
                .and_then(|o2| o2.get("numRecords").cloned());
            out.pop();
            if let Ok(o) = n.get_document_mut("o") {
                o.insert("dropTarget", target_uuid);
            }
            if let Some(nr) = num_records {
                n.insert("o2", doc! { "numRecords": nr });
            }
        }
        out.push(n);
    }
    out
}

fn uuid_bson(uuid: &[u8; 16]) -> Bson {
    Bson::Binary(bson::Binary {
        subtype: bson::spec::BinarySubtype::Uuid,
        bytes: uuid.to_vec(),
    })
}

fn cmd_ns(db: &str) -> String {
    format!("{db}.$cmd")
}

fn entry(op: &str, ns: String, ui: Option<&[u8; 16]>, o: Document, o2: Option<Document>) -> Document {
    let mut d = doc! { "op": op, "ns": ns };
    if let Some(u) = ui {
        d.insert("ui", uuid_bson(u));
    }
    d.insert("o", o);
    if let Some(o2) = o2 {
        d.insert("o2", o2);
    }
    d
}

fn to_doc(raw: &RawDocumentBuf, ns: &Namespace) -> CommandResult<Document> {
    raw.to_document()
        .map_err(|e| CommandError::internal(format!("invalid document in {ns}: {e}")))
}

fn count_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Describes one mutation as oplog entries (without `ts`/`t`/`v`/`wall`).
fn describe(before: &Catalog, m: &Mutation, notes: &mut Vec<Document>) -> CommandResult<()> {
    let target = m.target();
    if target == OPLOG_DB || target.starts_with("local.") {
        return Ok(());
    }
    match m {
        Mutation::CreateCollection { ns, uuid, options } => {
            let mut o = doc! { "create": ns.coll.clone() };
            for (k, v) in options {
                if k != "idIndex" {
                    o.insert(k.clone(), v.clone());
                }
            }
            let auto_id = !matches!(options.get("autoIndexId"), Some(Bson::Boolean(false)));
            if !options.contains_key("viewOn") && auto_id {
                let id_index = match options.get("idIndex") {
                    Some(Bson::Document(d)) => {
                        let mut spec = id_index_spec();
                        for (k, v) in d {
                            if !matches!(k.as_str(), "v" | "key" | "name" | "ns") {
                                spec.insert(k.clone(), v.clone());
                            }
                        }
                        spec
                    }
                    _ => id_index_spec(),
                };
                o.insert("idIndex", id_index);
            }
            notes.push(entry("c", cmd_ns(&ns.db), Some(uuid), o, None));
        }
        Mutation::DropCollection { ns } => {
            if let Some(coll) = before.collection(ns) {
                notes.push(drop_note(ns, coll));
            }
        }
        Mutation::DropDatabase { db } => {
            let Some(d) = before.database(db) else { return Ok(()) };
            for (name, coll) in &d.collections {
                let ns = Namespace {
                    db: db.clone(),
                    coll: name.clone(),
                };
                notes.push(drop_note(&ns, coll));
            }
            notes.push(entry("c", cmd_ns(db), None, doc! { "dropDatabase": 1 }, None));
        }
        Mutation::RenameCollection { from, to } => {
            let ui = before.collection(from).map(|c| c.uuid);
            let o = doc! {
                "renameCollection": from.to_string(),
                "to": to.to_string(),
                "stayTemp": false,
                "dropTarget": false,
            };
            notes.push(entry("c", cmd_ns(&from.db), ui.as_ref(), o, None));
        }
        Mutation::SetOptions { ns, options } => {
            let Some(coll) = before.collection(ns) else {
                return Ok(());
            };
            let mut o = doc! { "collMod": ns.coll.clone() };
            let mut old = doc! { "uuid": uuid_bson(&coll.uuid) };
            for (k, v) in options {
                if coll.options.get(k) != Some(v) {
                    o.insert(k.clone(), v.clone());
                    if let Some(prev) = coll.options.get(k) {
                        old.insert(k.clone(), prev.clone());
                    }
                }
            }
            notes.push(entry(
                "c",
                cmd_ns(&ns.db),
                Some(&coll.uuid),
                o,
                Some(doc! { "collectionOptions_old": old }),
            ));
        }
        Mutation::CreateIndex { ns, spec } => {
            let ui = before.collection(ns).map(|c| c.uuid);
            let mut o = doc! { "createIndexes": ns.coll.clone() };
            for (k, v) in spec {
                if k != "ns" {
                    o.insert(k.clone(), v.clone());
                }
            }
            notes.push(entry("c", cmd_ns(&ns.db), ui.as_ref(), o, None));
        }
        Mutation::SetIndexSpec { ns, spec } => {
            let Some(coll) = before.collection(ns) else {
                return Ok(());
            };
            let name = spec.get_str("name").unwrap_or_default();
            let old_spec = coll
                .indexes()
                .iter()
                .find(|i| i.name == name)
                .map(|i| i.spec.clone())
                .unwrap_or_default();
            let mut index = doc! { "name": name };
            let mut o2 = doc! { "collectionOptions_old": { "uuid": uuid_bson(&coll.uuid) } };
            let mut keys: Vec<String> = spec.keys().cloned().collect();
            keys.extend(old_spec.keys().filter(|k| !spec.contains_key(k.as_str())).cloned());
            for k in keys {
                if matches!(k.as_str(), "name" | "key" | "v" | "ns") {
                    continue;
                }
                let new_v = spec.get(&k).cloned().unwrap_or(Bson::Boolean(false));
                let old_v = old_spec.get(&k).cloned();
                if old_v.as_ref() == Some(&new_v) {
                    continue;
                }
                index.insert(k.clone(), new_v);
                o2.insert(format!("{k}_old"), old_v.unwrap_or(Bson::Boolean(false)));
            }
            let o = doc! { "collMod": ns.coll.clone(), "index": index };
            notes.push(entry("c", cmd_ns(&ns.db), Some(&coll.uuid), o, Some(o2)));
        }
        Mutation::DropIndex { ns, name } => {
            let Some(coll) = before.collection(ns) else {
                return Ok(());
            };
            let spec = coll
                .indexes()
                .iter()
                .find(|i| &i.name == name)
                .map(|i| i.spec.clone())
                .unwrap_or_default();
            let o = doc! { "dropIndexes": ns.coll.clone(), "index": name.clone() };
            notes.push(entry("c", cmd_ns(&ns.db), Some(&coll.uuid), o, Some(spec)));
        }
        Mutation::Insert { ns, doc: raw } => {
            let ui = before.collection(ns).map(|c| c.uuid);
            let d = to_doc(raw, ns)?;
            let o2 = d.get("_id").map(|id| doc! { "_id": id.clone() });
            notes.push(entry("i", ns.to_string(), ui.as_ref(), d, o2));
        }
        Mutation::Upsert { ns, doc: raw } => {
            let Some(coll) = before.collection(ns) else {
                return Ok(());
            };
            let new = to_doc(raw, ns)?;
            let id = new.get("_id").cloned().unwrap_or(Bson::Null);
            match coll.find_id(&id) {
                None => {
                    notes.push(entry(
                        "i",
                        ns.to_string(),
                        Some(&coll.uuid),
                        new,
                        Some(doc! { "_id": id }),
                    ));
                }
                Some((_, old_raw)) => {
                    if old_raw.as_bytes() == raw.as_bytes() {
                        return Ok(());
                    }
                    let old = to_doc(old_raw, ns)?;
                    let o = update_description(&old, &new);
                    notes.push(entry(
                        "u",
                        ns.to_string(),
                        Some(&coll.uuid),
                        o,
                        Some(doc! { "_id": id }),
                    ));
                }
            }
        }
        Mutation::Delete { ns, id } => {
            let Some(coll) = before.collection(ns) else {
                return Ok(());
            };
            if coll.find_id(id).is_some() {
                notes.push(entry(
                    "d",
                    ns.to_string(),
                    Some(&coll.uuid),
                    doc! { "_id": id.clone() },
                    None,
                ));
            }
        }
    }
    Ok(())
}

fn drop_note(ns: &Namespace, coll: &Collection) -> Document {
    let o = doc! { "drop": ns.coll.clone() };
    entry(
        "c",
        cmd_ns(&ns.db),
        Some(&coll.uuid),
        o,
        Some(doc! { "numRecords": count_i64(coll.len()) }),
    )
}

/// The `o` of an update entry: `{$v: 2, diff}` when the diff reproduces `new` exactly (bytes, field order
/// included) from `old`, else the full new document (a replacement). The engine does not know whether the
/// client sent modifiers or a replacement, so a replacement that keeps the field order is logged as a diff;
/// applying either form gives the same document.
pub fn update_description(old: &Document, new: &Document) -> Document {
    let diff = compute_diff(old, new);
    let mut check = old.clone();
    let reproduces = tidemark_query::apply_oplog_diff(&mut check, &diff).is_ok()
        && bson::to_vec(&check).ok() == bson::to_vec(new).ok();
    if reproduces {
        doc! { "$v": 2, "diff": diff }
    } else {
        new.clone()
    }
}

/// MongoDB's `$v: 2` document diff from `old` to `new`: `d` (deleted fields), `u` (updated), `i` (inserted,
/// appended at the end), `s<field>` (sub-diffs of embedded documents).
pub fn compute_diff(old: &Document, new: &Document) -> Document {
    let mut deleted = Document::new();
    let mut updated = Document::new();
    let mut inserted = Document::new();
    let mut subs = Document::new();
    for k in old.keys() {
        if !new.contains_key(k) {
            deleted.insert(k.clone(), false);
        }
    }
    for (k, nv) in new {
        match old.get(k) {
            None => {
                inserted.insert(k.clone(), nv.clone());
            }
            Some(ov) if tidemark_query::identical_values(ov, nv) => {}
            Some(ov) => match sub_diff(ov, nv) {
                Some(sd) => {
                    subs.insert(format!("s{k}"), sd);
                }
                None => {
                    updated.insert(k.clone(), nv.clone());
                }
            },
        }
    }
    let mut diff = Document::new();
    if !deleted.is_empty() {
        diff.insert("d", deleted);
    }
    if !updated.is_empty() {
        diff.insert("u", updated);
    }
    if !inserted.is_empty() {
        diff.insert("i", inserted);
    }
    diff.extend(subs);
    diff
}

/// The sub-diff turning `old` into `new` when both are documents or both arrays (`None`: replace the value).
fn sub_diff(old: &Bson, new: &Bson) -> Option<Document> {
    match (old, new) {
        (Bson::Document(od), Bson::Document(nd)) => Some(compute_diff(od, nd)),
        (Bson::Array(oa), Bson::Array(na)) => Some(array_diff(oa, na)),
        _ => None,
    }
}

/// MongoDB's array diff: `a: true`, `l: <new length>` (int32) when the length changes, then per changed index
/// `u<i>` (new value, also for appended elements) or `s<i>` (sub-diff of an embedded document or array).
fn array_diff(old: &[Bson], new: &[Bson]) -> Document {
    let mut d = doc! { "a": true };
    if new.len() != old.len() {
        match i32::try_from(new.len()) {
            Ok(n) => d.insert("l", n),
            Err(_) => d.insert("l", i64::try_from(new.len()).unwrap_or(i64::MAX)),
        };
    }
    for (i, nv) in new.iter().enumerate() {
        match old.get(i) {
            Some(ov) if tidemark_query::identical_values(ov, nv) => {}
            Some(ov) => match sub_diff(ov, nv) {
                Some(sd) => {
                    d.insert(format!("s{i}"), sd);
                }
                None => {
                    d.insert(format!("u{i}"), nv.clone());
                }
            },
            None => {
                d.insert(format!("u{i}"), nv.clone());
            }
        }
    }
    d
}

/// The lower `ts` bound a filter on the oplog implies: `{ts: {$gte|$gt: X}}`, `{ts: X}`, or such a clause
/// inside a top-level `$and`. Returns the bound and whether it is inclusive.
pub fn ts_lower_bound(filter: &Document) -> Option<(Timestamp, bool)> {
    let mut best: Option<(Timestamp, bool)> = None;
    let mut consider = |b: (Timestamp, bool)| {
        let better = match best {
            None => true,
            Some((t, incl)) => (b.0.time, b.0.increment) > (t.time, t.increment) || (b.0 == t && incl && !b.1),
        };
        if better {
            best = Some(b);
        }
    };
    if let Some(v) = filter.get("ts") {
        match v {
            Bson::Timestamp(t) => consider((*t, true)),
            Bson::Document(ops) => {
                for (op, val) in ops {
                    if let Bson::Timestamp(t) = val {
                        match op.as_str() {
                            "$gte" | "$eq" => consider((*t, true)),
                            "$gt" => consider((*t, false)),
                            _ => {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if let Ok(clauses) = filter.get_array("$and") {
        for c in clauses {
            if let Bson::Document(d) = c
                && let Some(b) = ts_lower_bound(d)
            {
                consider(b);
            }
        }
    }
    best
}

fn entry_ts(coll: &Collection, rec: u64) -> Option<(u32, u32)> {
    coll.get(rec)
        .and_then(|d| d.get_timestamp("ts").ok())
        .map(|t| (t.time, t.increment))
}

/// For a forward scan of the oplog collection that only wants entries with `ts >= bound` (or `>`), the record
/// id to start after (`None` = from the beginning). Binary search over record ids when they are contiguous
/// (always, for an oplog only truncated from the front), else a linear scan.
pub fn seek_after(coll: &Collection, bound: Timestamp, inclusive: bool) -> Option<u64> {
    let b = (bound.time, bound.increment);
    let wanted = |t: (u32, u32)| if inclusive { t >= b } else { t > b };
    let (first, _) = coll.iter().next()?;
    let (last, _) = coll.iter().next_back()?;
    let contiguous = u64::try_from(coll.len()).ok() == last.checked_sub(first).and_then(|d| d.checked_add(1));
    let first_wanted = if contiguous {
        // Smallest record in [first, last + 1) whose ts is wanted (last + 1 = none).
        let (mut lo, mut hi) = (first, last.saturating_add(1));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match entry_ts(coll, mid) {
                Some(t) if wanted(t) => hi = mid,
                Some(_) => lo = mid + 1,
                // Entries without a ts are not expected; give up on seeking.
                None => return None,
            }
        }
        lo
    } else {
        coll.iter()
            .find(|(_, d)| d.get_timestamp("ts").is_ok_and(|t| wanted((t.time, t.increment))))
            .map_or(last.saturating_add(1), |(r, _)| r)
    };
    first_wanted.checked_sub(1)
}

/// Where a forward scan of `coll` may start for `filter`: after the entry preceding the first one the
/// filter's lower `ts` bound admits, for `local.oplog.rs` only (the one collection known to be in `ts`
/// order). `None` means from the beginning.
pub fn scan_start(ns: &Namespace, coll: &Collection, filter: Option<&Document>, reverse: bool) -> Option<u64> {
    if reverse || ns.db != OPLOG_DB || ns.coll != OPLOG_COLLECTION {
        return None;
    }
    let (bound, inclusive) = ts_lower_bound(filter?)?;
    seek_after(coll, bound, inclusive)
}

/// Writes `{msg: "periodic noop"}` whenever the node is an initiated primary and nothing reached the oplog for
/// a whole interval. Ends once the server state or the engine is gone.
pub(crate) fn spawn_noop_writer(state: super::WeakRepl, engine: Weak<Engine>) {
    let spawned = std::thread::Builder::new().name("oplog-noop".into()).spawn(move || {
        let mut last_seen = u64::MAX;
        let mut since = Instant::now();
        loop {
            let interval = match state.upgrade() {
                Some(s) => s.oplog().noop_interval(),
                None => return,
            };
            std::thread::sleep(interval.min(Duration::from_millis(100)));
            let (Some(s), Some(engine)) = (state.upgrade(), engine.upgrade()) else {
                return;
            };
            let oplog = s.oplog();
            let count = oplog.appended_count();
            if count != last_seen {
                last_seen = count;
                since = Instant::now();
                continue;
            }
            if since.elapsed() >= oplog.noop_interval() && oplog.is_enabled() && s.is_writable_primary() {
                if let Err(e) = oplog.append_noop(&engine, doc! { "msg": "periodic noop" }) {
                    tracing::warn!(error = %e, "cannot write the periodic no-op oplog entry");
                }
                since = Instant::now();
                last_seen = oplog.appended_count();
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the periodic no-op writer");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicI64;

    use bson::{Timestamp, doc};

    use super::*;

    /// The update example of FORMATS.md 4.1 (a time series bucket update): the diff of the pre- and post-image
    /// has exactly the real entry's shape, and applying it reproduces the post-image.
    #[test]
    fn diff_matches_the_mongodb_example_and_round_trips() {
        let old = doc! {
            "_id": 1,
            "control": { "min": { "ts": 1 }, "max": { "_id": 5, "ts": 2 } },
            "data": { "ts": { "128": 1 }, "measurement": { "128": 291 }, "_id": { "128": 7 } },
        };
        let new = doc! {
            "_id": 1,
            "control": { "min": { "ts": 1 }, "max": { "_id": 6, "ts": 3 } },
            "data": { "ts": { "128": 1, "129": 2 }, "measurement": { "128": 291, "129": 292 }, "_id": { "128": 7, "129": 8 } },
        };
        let diff = compute_diff(&old, &new);
        assert_eq!(
            diff,
            doc! {
                "scontrol": { "smax": { "u": { "_id": 6, "ts": 3 } } },
                "sdata": { "sts": { "i": { "129": 2 } }, "smeasurement": { "i": { "129": 292 } }, "s_id": { "i": { "129": 8 } } },
            }
        );
        assert_eq!(update_description(&old, &new), doc! { "$v": 2, "diff": diff });
        // A reordering cannot be expressed as a diff: the entry carries the full document.
        let reordered = doc! { "data": 1, "_id": 1 };
        assert_eq!(update_description(&old, &reordered), reordered);
    }

    /// Array changes as MongoDB's diff writes them (`{a: true, l: 2, u1: 2}` turns `[1]` into `[1, 2]`).
    #[test]
    fn array_diffs() {
        let old = doc! { "_id": 0, "theSet": [1], "xs": [1, 2, 3], "ds": [{ "x": 1 }, { "x": 2 }] };
        let new = doc! { "_id": 0, "theSet": [1, 2], "xs": [1, 5], "ds": [{ "x": 1 }, { "x": 3 }] };
        let diff = compute_diff(&old, &new);
        assert_eq!(
            diff,
            doc! {
                "stheSet": { "a": true, "l": 2, "u1": 2 },
                "sxs": { "a": true, "l": 2, "u1": 5 },
                "sds": { "a": true, "s1": { "u": { "x": 3 } } },
            }
        );
        assert_eq!(update_description(&old, &new), doc! { "$v": 2, "diff": diff });
    }

    #[test]
    fn ts_bounds_from_mongodump_filters() {
        let a = Timestamp { time: 10, increment: 2 };
        let b = Timestamp { time: 20, increment: 1 };
        let f = doc! { "$and": [{ "ts": { "$gte": a } }, { "ts": { "$lte": b } }] };
        assert_eq!(ts_lower_bound(&f), Some((a, true)));
        assert_eq!(ts_lower_bound(&doc! { "ts": { "$gt": b } }), Some((b, false)));
        assert_eq!(ts_lower_bound(&doc! { "ts": { "$lte": b } }), None);
        assert_eq!(ts_lower_bound(&doc! {}), None);
    }

    #[test]
    fn seek_finds_the_first_wanted_entry_after_truncation() {
        let engine = Engine::new();
        let oplog = Oplog::new(1 << 20, Arc::new(AtomicI64::new(1)));
        oplog.enable(&engine).unwrap();
        engine
            .write(|txn| {
                for i in 1..=100u32 {
                    let e = doc! { "op": "n", "ns": "", "o": {}, "ts": Timestamp { time: 5, increment: i * 2 } };
                    txn.apply(Mutation::Insert {
                        ns: oplog_ns(),
                        doc: RawDocumentBuf::from_document(&e).unwrap(),
                    })?;
                }
                Ok(())
            })
            .unwrap();
        engine.read(|cat| {
            let coll = cat.collection(&oplog_ns()).unwrap();
            let first_ts = |after: Option<u64>| {
                coll.scan_from(after, false)
                    .next()
                    .map(|(_, d)| d.get_timestamp("ts").unwrap().increment)
            };
            assert_eq!(
                first_ts(seek_after(coll, Timestamp { time: 5, increment: 40 }, true)),
                Some(40)
            );
            assert_eq!(
                first_ts(seek_after(coll, Timestamp { time: 5, increment: 40 }, false)),
                Some(42)
            );
            assert_eq!(
                first_ts(seek_after(coll, Timestamp { time: 5, increment: 41 }, true)),
                Some(42)
            );
            assert_eq!(
                first_ts(seek_after(coll, Timestamp { time: 1, increment: 0 }, true)),
                Some(2)
            );
            assert_eq!(
                first_ts(seek_after(coll, Timestamp { time: 9, increment: 0 }, true)),
                None
            );
        });
    }
}
