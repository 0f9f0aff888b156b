//! Parallel replay scheduling: which replayed entries may run at the same time.
//!
//! [`crate::Replayer`] turns the oplog into a sequence of one-entry `applyOps` commands that
//! mongorestore would run one after the other. Most of them are CRUD entries on single documents,
//! and entries on different documents commute: only the order of the entries of one document
//! matters. [`Partitioner`] uses that the way a MongoDB secondary does for its writer threads:
//!
//! - a CRUD entry (`i`, `u`, `d`) goes to one of N lanes chosen by a hash of its namespace and
//!   its `_id` (`o2._id` for updates, `o._id` for inserts and deletes). The `_id` is hashed in a
//!   canonical form in which values that MongoDB considers equal hash the same (`1`, `1.0`,
//!   `NumberLong(1)` and `NumberDecimal("1.0")` are one `_id`; so are a string and a symbol);
//! - entries of a namespace marked with [`Partitioner::serialize_namespace`] (capped collections,
//!   whose insertion order is their natural order, and collections with a non-simple default
//!   collation, where different strings can be the same `_id`) all go to the lane of the
//!   namespace; `create` and `convertToCapped` commands seen in the oplog mark namespaces the same
//!   way, and `renameCollection` carries the mark over;
//! - everything else is a barrier ([`Work::Barrier`]): commands (DDL, `dropDatabase`,
//!   `renameCollection`, ...) and entries whose target cannot be determined. The executor waits
//!   for every lane to drain before running a barrier, and starts the lanes again only after it;
//! - the commands of a committed transaction (a top-level entry for which [`is_isolated_entry`]
//!   holds) run as one isolated barrier unit, in their order. The several commands of other
//!   entries (the inserts of an 8.0 vectored insert, the ops of a nested `applyOps`) are
//!   scheduled one by one like top-level entries.
//!
//! Consecutive entries of one lane are batched into one `applyOps` command (mongod applies a
//! CRUD-only `applyOps` as a whole) of at most [`MAX_BATCH_ENTRIES`] entries and
//! [`MAX_BATCH_BYTES`] bytes, so that memory stays bounded by lanes × batch size; the CRUD runs
//! of a barrier unit are batched the same way.

use std::{
    collections::HashSet,
    hash::{DefaultHasher, Hash, Hasher},
};

use bson::{Bson, Document, RawBsonRef, RawDocument};

/// Entries per batched `applyOps` command.
pub const MAX_BATCH_ENTRIES: usize = 1000;
/// Encoded entry bytes per batched `applyOps` command: the 16 MiB document limit minus room for
/// the command's own fields.
pub const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024 - 64 * 1024;

/// One unit of work for the executor, in the order it must be scheduled.
#[derive(Debug, Clone, PartialEq)]
pub enum Work {
    /// An `applyOps` command to run on `admin` on lane `lane`, after the lane's earlier work.
    Lane {
        /// Lane index, below [`Partitioner::lanes`].
        lane: usize,
        /// The `{applyOps: [...], bypassDocumentValidation}` command.
        command: Document,
        /// Number of oplog entries in the command.
        entries: usize,
    },
    /// Wait for every lane to finish its earlier work, then run these commands on `admin` in
    /// order, then let the lanes continue.
    Barrier {
        /// The commands, in order.
        commands: Vec<Document>,
    },
}

#[derive(Debug, Default)]
struct Batch {
    entries: Vec<Bson>,
    bytes: usize,
}

/// Assigns replayed commands to lanes and barriers (see the module documentation).
#[derive(Debug)]
pub struct Partitioner {
    lanes: usize,
    bypass_document_validation: bool,
    batches: Vec<Batch>,
    serial: HashSet<String>,
}

impl Partitioner {
    /// A partitioner over `lanes` lanes (at least one); `bypass_document_validation` is the flag
    /// of the batched commands (`--bypassDocumentValidation`).
    #[must_use]
    pub fn new(lanes: usize, bypass_document_validation: bool) -> Self {
        let lanes = lanes.max(1);
        Self {
            lanes,
            bypass_document_validation,
            batches: (0..lanes).map(|_| Batch::default()).collect(),
            serial: HashSet::new(),
        }
    }

    /// Number of lanes.
    #[must_use]
    pub fn lanes(&self) -> usize {
        self.lanes
    }

    /// Sends every entry of `ns` (`<db>.<collection>`) to one lane, in oplog order: for capped
    /// collections and collections with a non-simple default collation.
    pub fn serialize_namespace(&mut self, ns: &str) {
        self.serial.insert(ns.to_owned());
    }

    /// Whether every entry of `ns` goes to one lane.
    #[must_use]
    pub fn is_serialized(&self, ns: &str) -> bool {
        self.serial.contains(ns)
    }

    /// Schedules the commands of one [`crate::Step`], appending the resulting work to `out`.
    ///
    /// With `isolated` (a committed transaction, see [`is_isolated_entry`]) the commands run as
    /// one barrier unit, in order; otherwise each command is scheduled on its own (the inserts of
    /// a vectored insert or of a nested `applyOps` spread over the lanes like any others).
    pub fn push(&mut self, commands: Vec<Document>, isolated: bool, out: &mut Vec<Work>) {
        if commands.is_empty() {
            return;
        }
        if !isolated || commands.len() == 1 {
            for command in commands {
                self.push_one(command, out);
            }
            return;
        }
        for command in &commands {
            if let Some(entry) = single_entry(command) {
                self.observe_command(entry);
            }
        }
        self.flush(out);
        out.push(Work::Barrier {
            commands: self.batch_unit(commands),
        });
    }

    fn push_one(&mut self, command: Document, out: &mut Vec<Work>) {
        if let Some((entry, lane)) = single_entry(&command).and_then(|e| self.lane_of(e).map(|l| (e, l))) {
            let entry = entry.clone();
            self.add_to_lane(lane, entry, out);
            return;
        }
        if let Some(entry) = single_entry(&command) {
            self.observe_command(entry);
        }
        self.flush(out);
        out.push(Work::Barrier {
            commands: vec![command],
        });
    }

    /// Emits the lanes' pending batches (call at the end of the oplog).
    pub fn flush(&mut self, out: &mut Vec<Work>) {
        for lane in 0..self.lanes {
            self.flush_lane(lane, out);
        }
    }

    /// The lane of a CRUD entry, or `None` when it must be a barrier.
    #[must_use]
    pub fn lane_of(&self, entry: &Document) -> Option<usize> {
        let ns = entry.get_str("ns").ok()?;
        let id = match entry.get_str("op").ok()? {
            "i" | "d" => entry.get_document("o").ok()?.get("_id")?,
            "u" => entry.get_document("o2").ok()?.get("_id")?,
            _ => return None,
        };
        let mut hasher = DefaultHasher::new();
        ns.hash(&mut hasher);
        if !self.serial.contains(ns) {
            hash_canonical(id, &mut hasher)?;
        }
        let lanes = u64::try_from(self.lanes).ok()?;
        usize::try_from(hasher.finish() % lanes).ok()
    }

    fn observe_command(&mut self, entry: &Document) {
        if entry.get_str("op") != Ok("c") {
            return;
        }
        let Some(db) = entry
            .get_str("ns")
            .ok()
            .and_then(|ns| ns.split_once('.'))
            .map(|(db, _)| db)
        else {
            return;
        };
        let Ok(o) = entry.get_document("o") else { return };
        let Some((name, target)) = o.iter().next() else { return };
        match (name.as_str(), target) {
            ("create", Bson::String(coll)) if o.get_bool("capped") == Ok(true) || o.contains_key("collation") => {
                self.serial.insert(format!("{db}.{coll}"));
            }
            ("convertToCapped", Bson::String(coll)) => {
                self.serial.insert(format!("{db}.{coll}"));
            }
            ("renameCollection", Bson::String(from)) => {
                if self.serial.contains(from)
                    && let Ok(to) = o.get_str("to")
                {
                    self.serial.insert(to.to_owned());
                }
            }
            _ => {}
        }
    }

    fn add_to_lane(&mut self, lane: usize, entry: Document, out: &mut Vec<Work>) {
        let bytes = encoded_len(&entry);
        let batch = &self.batches[lane];
        if !batch.entries.is_empty()
            && (batch.entries.len() >= MAX_BATCH_ENTRIES || batch.bytes.saturating_add(bytes) > MAX_BATCH_BYTES)
        {
            self.flush_lane(lane, out);
        }
        let batch = &mut self.batches[lane];
        batch.entries.push(Bson::Document(entry));
        batch.bytes = batch.bytes.saturating_add(bytes);
    }

    fn flush_lane(&mut self, lane: usize, out: &mut Vec<Work>) {
        let batch = std::mem::take(&mut self.batches[lane]);
        if batch.entries.is_empty() {
            return;
        }
        let entries = batch.entries.len();
        out.push(Work::Lane {
            lane,
            command: self.command(batch.entries),
            entries,
        });
    }

    fn command(&self, entries: Vec<Bson>) -> Document {
        let mut cmd = Document::new();
        cmd.insert("applyOps", entries);
        cmd.insert("bypassDocumentValidation", self.bypass_document_validation);
        cmd
    }

    /// Merges consecutive CRUD commands of a barrier unit into batches; commands stay alone.
    fn batch_unit(&self, commands: Vec<Document>) -> Vec<Document> {
        let mut result = Vec::new();
        let mut run = Batch::default();
        for command in commands {
            let crud = single_entry(&command)
                .filter(|e| matches!(e.get_str("op"), Ok("i" | "u" | "d")))
                .cloned();
            let Some(entry) = crud else {
                if !run.entries.is_empty() {
                    result.push(self.command(std::mem::take(&mut run).entries));
                }
                result.push(command);
                continue;
            };
            let bytes = encoded_len(&entry);
            if !run.entries.is_empty()
                && (run.entries.len() >= MAX_BATCH_ENTRIES || run.bytes.saturating_add(bytes) > MAX_BATCH_BYTES)
            {
                result.push(self.command(std::mem::take(&mut run).entries));
            }
            run.entries.push(Bson::Document(entry));
            run.bytes = run.bytes.saturating_add(bytes);
        }
        if !run.entries.is_empty() {
            result.push(self.command(run.entries));
        }
        result
    }
}

/// Whether a top-level oplog entry may be part of a transaction (`lsid` and `txnNumber`, and not
/// an 8.0 vectored insert, `multiOpType: 1`): the commands the replayer returns for it are
/// pushed as one isolated unit.
#[must_use]
pub fn is_isolated_entry(raw: &RawDocument) -> bool {
    let has = |key: &str| matches!(raw.get(key), Ok(Some(_)));
    let vectored = match raw.get("multiOpType") {
        Ok(Some(RawBsonRef::Int32(1))) => true,
        Ok(Some(RawBsonRef::Int64(1))) => true,
        Ok(Some(RawBsonRef::Double(v))) => v == 1.0,
        _ => false,
    };
    has("lsid") && has("txnNumber") && !vectored
}

/// The entry of a one-entry `{applyOps: [entry], ...}` command.
fn single_entry(command: &Document) -> Option<&Document> {
    match command.get_array("applyOps").ok()?.as_slice() {
        [Bson::Document(entry)] => Some(entry),
        _ => None,
    }
}

fn encoded_len(doc: &Document) -> usize {
    // An entry that cannot be encoded fails on the server; count it as a full batch.
    bson::to_vec(doc).map_or(MAX_BATCH_BYTES, |v| v.len())
}

/// Hashes a value so that values MongoDB compares as equal hash the same. `None` when the value
/// has no such form here (`undefined`, a decimal that does not parse), which makes its entry a
/// barrier.
fn hash_canonical(value: &Bson, hasher: &mut DefaultHasher) -> Option<()> {
    match value {
        Bson::Int32(v) => hash_number(f64::from(*v), hasher),
        #[allow(clippy::cast_precision_loss, reason = "equal values round to the same double")]
        Bson::Int64(v) => hash_number(*v as f64, hasher),
        Bson::Double(v) => hash_number(*v, hasher),
        Bson::Decimal128(d) => hash_number(d.to_string().parse::<f64>().ok()?, hasher),
        Bson::String(s) | Bson::Symbol(s) => {
            2_u8.hash(hasher);
            s.hash(hasher);
        }
        Bson::Document(d) => {
            3_u8.hash(hasher);
            d.len().hash(hasher);
            for (k, v) in d {
                k.hash(hasher);
                hash_canonical(v, hasher)?;
            }
        }
        Bson::Array(a) => {
            4_u8.hash(hasher);
            a.len().hash(hasher);
            for v in a {
                hash_canonical(v, hasher)?;
            }
        }
        Bson::Undefined => return None,
        other => {
            5_u8.hash(hasher);
            (other.element_type() as u8).hash(hasher);
            // Every remaining type compares by its exact encoding.
            let wrapped = bson::doc! {"": other.clone()};
            bson::to_vec(&wrapped).ok()?.hash(hasher);
        }
    }
    Some(())
}

fn hash_number(v: f64, hasher: &mut DefaultHasher) {
    1_u8.hash(hasher);
    let canonical = if v == 0.0 {
        0.0_f64.to_bits()
    } else if v.is_nan() {
        f64::NAN.to_bits()
    } else {
        v.to_bits()
    };
    canonical.hash(hasher);
}

#[cfg(test)]
mod tests {
    use bson::{Decimal128, doc, oid::ObjectId};

    use super::*;

    fn insert(ns: &str, id: Bson) -> Document {
        doc! {"op": "i", "ns": ns, "o": {"_id": id, "x": 1}}
    }

    fn cmd(entry: Document) -> Document {
        doc! {"applyOps": [entry], "bypassDocumentValidation": false}
    }

    #[test]
    fn equal_ids_share_a_lane() {
        // MongoDB compares numbers by value across types: 1, 1.0, NumberLong(1) and
        // NumberDecimal("1.0") are the same _id (a duplicate key for the _id index).
        let p = Partitioner::new(64, false);
        let lanes: HashSet<usize> = [
            Bson::Int32(1),
            Bson::Int64(1),
            Bson::Double(1.0),
            Bson::Decimal128("1.0".parse::<Decimal128>().unwrap()),
        ]
        .into_iter()
        .map(|id| p.lane_of(&insert("db.c", id)).unwrap())
        .collect();
        assert_eq!(lanes.len(), 1);
        let a = p.lane_of(&insert("db.c", Bson::Document(doc! {"a": 2, "b": [1.0]})));
        let b = p.lane_of(&insert("db.c", Bson::Document(doc! {"a": 2_i64, "b": [1]})));
        assert_eq!(a, b);
        let zero = p.lane_of(&insert("db.c", Bson::Double(-0.0)));
        assert_eq!(zero, p.lane_of(&insert("db.c", Bson::Int32(0))));
        // Updates are routed by o2._id, deletes by o._id.
        let u = doc! {"op": "u", "ns": "db.c", "o": {"$v": 2, "diff": {}}, "o2": {"_id": 1.0}};
        let d = doc! {"op": "d", "ns": "db.c", "o": {"_id": 1_i64}};
        assert_eq!(p.lane_of(&u), p.lane_of(&insert("db.c", Bson::Int32(1))));
        assert_eq!(p.lane_of(&d), p.lane_of(&insert("db.c", Bson::Int32(1))));
    }

    #[test]
    fn ids_spread_over_lanes() {
        let p = Partitioner::new(4, false);
        let lanes: HashSet<usize> = (0..100)
            .map(|_| p.lane_of(&insert("db.c", Bson::ObjectId(ObjectId::new()))).unwrap())
            .collect();
        assert_eq!(lanes.len(), 4);
    }

    #[test]
    fn commands_and_unknown_targets_are_barriers() {
        let mut p = Partitioner::new(4, true);
        let mut out = Vec::new();
        p.push(vec![cmd(insert("db.c", Bson::Int32(1)))], false, &mut out);
        assert!(out.is_empty(), "lane work is batched until a flush");
        let drop = doc! {"op": "c", "ns": "db.$cmd", "o": {"drop": "c"}};
        p.push(vec![cmd(drop.clone())], false, &mut out);
        assert_eq!(out.len(), 2);
        let Work::Lane { command, entries, .. } = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(*entries, 1);
        assert_eq!(command.get_bool("bypassDocumentValidation"), Ok(true));
        assert_eq!(
            out[1],
            Work::Barrier {
                commands: vec![cmd(drop)]
            }
        );
        out.clear();
        p.push(
            vec![cmd(doc! {"op": "i", "ns": "db.c", "o": {"x": 1}})],
            false,
            &mut out,
        );
        assert!(matches!(&out[..], [Work::Barrier { .. }]));
    }

    #[test]
    fn lane_batches_are_bounded() {
        let mut p = Partitioner::new(1, false);
        let mut out = Vec::new();
        for i in 0..2500 {
            p.push(vec![cmd(insert("db.c", Bson::Int32(i)))], false, &mut out);
        }
        p.flush(&mut out);
        let sizes: Vec<usize> = out
            .iter()
            .map(|w| match w {
                Work::Lane { command, entries, .. } => {
                    assert_eq!(command.get_array("applyOps").unwrap().len(), *entries);
                    *entries
                }
                Work::Barrier { .. } => panic!("no barrier expected"),
            })
            .collect();
        assert_eq!(sizes, [1000, 1000, 500]);
        let big = "x".repeat(6 * 1024 * 1024);
        out.clear();
        for i in 0..3 {
            p.push(
                vec![cmd(doc! {"op": "i", "ns": "db.c", "o": {"_id": i, "s": &big}})],
                false,
                &mut out,
            );
        }
        p.flush(&mut out);
        assert_eq!(out.len(), 2, "two 6 MiB entries fit under 16 MiB, three do not");
    }

    #[test]
    fn transaction_units_keep_order_and_are_batched() {
        let mut p = Partitioner::new(4, false);
        let mut out = Vec::new();
        let unit = vec![
            cmd(insert("db.a", Bson::Int32(1))),
            cmd(insert("db.b", Bson::Int32(2))),
            cmd(doc! {"op": "c", "ns": "db.$cmd", "o": {"create": "d"}}),
            cmd(insert("db.d", Bson::Int32(3))),
        ];
        p.push(unit, true, &mut out);
        let [Work::Barrier { commands }] = &out[..] else {
            panic!("{out:?}")
        };
        let ids: Vec<usize> = commands
            .iter()
            .map(|c| c.get_array("applyOps").unwrap().len())
            .collect();
        assert_eq!(ids, [2, 1, 1]);
    }

    #[test]
    fn other_multi_command_steps_spread_over_lanes() {
        // The inserts of a vectored insert or nested applyOps are independent documents.
        let mut p = Partitioner::new(4, false);
        let mut out = Vec::new();
        let step: Vec<Document> = (0..40).map(|i| cmd(insert("db.c", Bson::Int32(i)))).collect();
        p.push(step, false, &mut out);
        assert!(out.is_empty());
        p.flush(&mut out);
        assert!(out.len() > 1 && out.iter().all(|w| matches!(w, Work::Lane { .. })));
        let total: usize = out
            .iter()
            .map(|w| match w {
                Work::Lane { entries, .. } => *entries,
                Work::Barrier { .. } => 0,
            })
            .sum();
        assert_eq!(total, 40);
    }

    #[test]
    fn transaction_shaped_entries_are_isolated() {
        let txn = bson::rawdoc! {"op": "c", "ns": "admin.$cmd", "o": {"applyOps": []},
        "lsid": {"id": 1}, "txnNumber": 3_i64};
        assert!(is_isolated_entry(&txn));
        let vectored = bson::rawdoc! {"op": "c", "ns": "admin.$cmd", "o": {"applyOps": []},
        "lsid": {"id": 1}, "txnNumber": 3_i64, "multiOpType": 1};
        assert!(!is_isolated_entry(&vectored));
        assert!(!is_isolated_entry(&bson::rawdoc! {"op": "c", "o": {"applyOps": []}}));
    }

    #[test]
    fn capped_and_collated_collections_use_one_lane() {
        let mut p = Partitioner::new(8, false);
        let mut out = Vec::new();
        let create = doc! {"op": "c", "ns": "db.$cmd", "o": {"create": "cap", "capped": true, "size": 4096}};
        p.push(vec![cmd(create)], false, &mut out);
        let coll =
            doc! {"op": "c", "ns": "db.$cmd", "o": {"create": "ci", "collation": {"locale": "en", "strength": 2}}};
        p.push(vec![cmd(coll)], false, &mut out);
        let rename = doc! {"op": "c", "ns": "db.$cmd", "o": {"renameCollection": "db.cap", "to": "db.cap2"}};
        p.push(vec![cmd(rename)], false, &mut out);
        for ns in ["db.cap", "db.ci", "db.cap2"] {
            assert!(p.is_serialized(ns));
            let lanes: HashSet<usize> = (0..50)
                .map(|i| p.lane_of(&insert(ns, Bson::Int32(i))).unwrap())
                .collect();
            assert_eq!(lanes.len(), 1, "{ns}");
        }
        assert!(!p.is_serialized("db.other"));
    }
}
