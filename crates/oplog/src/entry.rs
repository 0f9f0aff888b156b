//! A typed view of one oplog entry, and its re-encoding for `applyOps`.
//!
//! mongorestore decodes every entry into a fixed set of fields
//! (`ts, t, v, op, ns, o, o2, ui, lsid, txnNumber, prevOpTime, multiOpType`) and, when it sends
//! the entry to the server, encodes exactly those fields in exactly that order: `t` becomes
//! `null` when absent, `v` is always an int32, and every other field of the input (`h`, `wall`,
//! `stmtId`, `_id`, ...) is dropped. [`OplogEntry`] is that struct; [`OplogEntry::to_document`]
//! is that encoding, and [`apply_ops_command`] wraps it in the one-entry `applyOps` command.

use bson::{Binary, Bson, Document, RawDocument, Timestamp, spec::BinarySubtype};

use crate::error::OplogError;

/// The fields of an oplog entry that replay reads or passes through.
#[derive(Debug, Clone, PartialEq)]
pub struct OplogEntry {
    /// Optime timestamp (zero when absent, as for ops nested in `applyOps`).
    pub ts: Timestamp,
    /// Election term; `None` when absent (encoded as `null`).
    pub t: Option<i64>,
    /// Oplog format version, always re-encoded as int32 (0 when absent).
    pub v: i32,
    /// Operation type: `i`, `u`, `d`, `c`, `n`, ...
    pub op: String,
    /// Namespace `<db>.<coll>` (or `<db>.$cmd` for commands).
    pub ns: String,
    /// The operation document (field order preserved).
    pub o: Document,
    /// The secondary document (update target, command extras); omitted when empty.
    pub o2: Option<Document>,
    /// Collection UUID (binary subtype 4).
    pub ui: Option<Binary>,
    /// Logical session id.
    pub lsid: Option<Document>,
    /// Transaction or retryable-write number.
    pub txn_number: Option<i64>,
    /// Previous optime of the same session.
    pub prev_op_time: Option<Document>,
    /// `1` marks an 8.0+ vectored insert (not a transaction).
    pub multi_op_type: Option<i32>,
}

fn timestamp_zero() -> Timestamp {
    Timestamp { time: 0, increment: 0 }
}

/// Whether a timestamp is `Timestamp(0, 0)`.
#[must_use]
pub fn is_zero(ts: Timestamp) -> bool {
    ts.time == 0 && ts.increment == 0
}

/// Total order of timestamps (seconds, then increment).
#[must_use]
pub fn ts_key(ts: Timestamp) -> (u32, u32) {
    (ts.time, ts.increment)
}

fn integer(value: &Bson) -> Option<i64> {
    match value {
        Bson::Int32(v) => Some(i64::from(*v)),
        Bson::Int64(v) => Some(*v),
        // Integral doubles only: very old entries carry `v: 2.0`.
        Bson::Double(v) if v.fract() == 0.0 && v.is_finite() && v.abs() < 9.0e15 => format!("{v:.0}").parse().ok(),
        _ => None,
    }
}

impl OplogEntry {
    /// An entry with every field absent: `ts` zero, empty `op`, `ns` and `o`.
    #[must_use]
    pub fn empty() -> Self {
        Self {
            ts: timestamp_zero(),
            t: None,
            v: 0,
            op: String::new(),
            ns: String::new(),
            o: Document::new(),
            o2: None,
            ui: None,
            lsid: None,
            txn_number: None,
            prev_op_time: None,
            multi_op_type: None,
        }
    }

    /// Decodes an entry from raw bytes (see [`OplogEntry::from_document`]).
    ///
    /// # Errors
    /// [`OplogError::Decode`] when the bytes are not a valid document or a field has the wrong type.
    pub fn from_raw(raw: &RawDocument) -> Result<Self, OplogError> {
        let doc = Document::try_from(raw).map_err(|e| OplogError::Decode(e.to_string()))?;
        Self::from_document(&doc)
    }

    /// Decodes the known fields of an entry; unknown fields are ignored.
    ///
    /// # Errors
    /// [`OplogError::Decode`] naming the field whose type is wrong.
    pub fn from_document(doc: &Document) -> Result<Self, OplogError> {
        let wrong = |field: &str, value: &Bson| {
            OplogError::Decode(format!(
                "field '{field}' has unexpected type {:?}",
                value.element_type()
            ))
        };
        let mut entry = Self::empty();
        for (key, value) in doc {
            match (key.as_str(), value) {
                (_, Bson::Null) => {}
                ("ts", Bson::Timestamp(ts)) => entry.ts = *ts,
                ("t", v) => entry.t = Some(integer(v).ok_or_else(|| wrong(key, v))?),
                ("v", v) => {
                    let n = integer(v).ok_or_else(|| wrong(key, v))?;
                    entry.v = i32::try_from(n).map_err(|_| wrong(key, v))?;
                }
                ("op", Bson::String(s)) => entry.op.clone_from(s),
                ("ns", Bson::String(s)) => entry.ns.clone_from(s),
                ("o", Bson::Document(d)) => entry.o = d.clone(),
                ("o2", Bson::Document(d)) => entry.o2 = Some(d.clone()),
                ("ui", Bson::Binary(b)) => entry.ui = Some(b.clone()),
                ("lsid", Bson::Document(d)) => entry.lsid = Some(d.clone()),
                ("txnNumber", v) => entry.txn_number = Some(integer(v).ok_or_else(|| wrong(key, v))?),
                ("prevOpTime", Bson::Document(d)) => entry.prev_op_time = Some(d.clone()),
                ("multiOpType", v) => {
                    let n = integer(v).ok_or_else(|| wrong(key, v))?;
                    entry.multi_op_type = Some(i32::try_from(n).map_err(|_| wrong(key, v))?);
                }
                ("ts" | "op" | "ns" | "o" | "o2" | "ui" | "lsid" | "prevOpTime", v) => return Err(wrong(key, v)),
                _ => {}
            }
        }
        Ok(entry)
    }

    /// The command name of a `c` entry: the first key of `o`.
    #[must_use]
    pub fn command_name(&self) -> Option<&str> {
        self.o.keys().next().map(String::as_str)
    }

    /// The database part of `ns`.
    #[must_use]
    pub fn db(&self) -> &str {
        self.ns.split_once('.').map_or(self.ns.as_str(), |(db, _)| db)
    }

    /// Encodes the entry the way mongorestore sends it: fields
    /// `ts, t, v, op, ns, o, o2, ui, lsid, txnNumber, prevOpTime, multiOpType` in that order,
    /// `t` null when absent, `v` int32, `o2` omitted when empty.
    #[must_use]
    pub fn to_document(&self) -> Document {
        let mut doc = Document::new();
        doc.insert("ts", self.ts);
        doc.insert("t", self.t.map_or(Bson::Null, Bson::Int64));
        doc.insert("v", self.v);
        doc.insert("op", self.op.clone());
        doc.insert("ns", self.ns.clone());
        doc.insert("o", self.o.clone());
        if let Some(o2) = self.o2.as_ref().filter(|d| !d.is_empty()) {
            doc.insert("o2", o2.clone());
        }
        if let Some(ui) = &self.ui {
            doc.insert("ui", ui.clone());
        }
        if let Some(lsid) = &self.lsid {
            doc.insert("lsid", lsid.clone());
        }
        if let Some(n) = self.txn_number {
            doc.insert("txnNumber", n);
        }
        if let Some(p) = &self.prev_op_time {
            doc.insert("prevOpTime", p.clone());
        }
        if let Some(m) = self.multi_op_type {
            doc.insert("multiOpType", m);
        }
        doc
    }

    /// Whether the UUID is a proper collection UUID (binary subtype 4).
    #[must_use]
    pub fn has_uuid(&self) -> bool {
        self.ui.as_ref().is_some_and(|b| b.subtype == BinarySubtype::Uuid)
    }
}

/// `{applyOps: [<entry>], bypassDocumentValidation: <flag>}`, run on `admin` with no write concern.
#[must_use]
pub fn apply_ops_command(entry: &OplogEntry, bypass_document_validation: bool) -> Document {
    let mut cmd = Document::new();
    cmd.insert("applyOps", vec![Bson::Document(entry.to_document())]);
    cmd.insert("bypassDocumentValidation", bypass_document_validation);
    cmd
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    #[test]
    fn re_encoding_orders_fields_and_drops_the_rest() {
        let input = doc! {
            "_id": bson::oid::ObjectId::new(), "ts": Timestamp { time: 5, increment: 2 }, "h": 77_i64,
            "v": 2.0, "op": "i", "ns": "test.data", "o": { "_id": 10.0, "z": 1, "a": 2 }, "wall": 1,
        };
        let entry = OplogEntry::from_document(&input).unwrap();
        let out = entry.to_document();
        let keys: Vec<&str> = out.keys().map(String::as_str).collect();
        assert_eq!(keys, ["ts", "t", "v", "op", "ns", "o"]);
        assert_eq!(out.get("t"), Some(&Bson::Null));
        assert_eq!(out.get("v"), Some(&Bson::Int32(2)));
        let o_keys: Vec<&str> = out.get_document("o").unwrap().keys().map(String::as_str).collect();
        assert_eq!(o_keys, ["_id", "z", "a"]);
    }

    #[test]
    fn wrong_types_are_decode_errors() {
        assert!(OplogEntry::from_document(&doc! {"op": 1}).is_err());
        assert!(OplogEntry::from_document(&doc! {"v": "x"}).is_err());
        assert!(OplogEntry::from_document(&doc! {"v": 2.5}).is_err());
    }
}
