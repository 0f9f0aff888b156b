//! What a drill compares, independent of the order documents come back in.
//!
//! - [`MultisetDigest`]: count plus the sum, modulo 2^256, of the BLAKE3 hash of every document's
//!   raw bytes. Addition commutes, so the snapshot's documents (in dump order) and the restored
//!   collection's (in whatever order the server returns them, which depends on the insertion
//!   workers) give the same digest exactly when they hold the same documents byte for byte, the
//!   same number of times (up to a 2^-128-ish chance for accidental errors). Memory stays constant
//!   however large the collection.
//! - [`OplogFootprint`]: which documents and namespaces the snapshot's oplog changes when it is
//!   replayed. Those documents legitimately differ from the dumped ones, so both sides leave them out
//!   of the digest; a namespace changed by a command (drop, rename, index builds, `collMod`...)
//!   cannot be compared with the dump at all.
//! - [`normalize`]: index specifications and collection options as canonical documents (top-level
//!   keys sorted, numbers compared by value, fields a server adds or a restore rewrites removed).

use std::collections::{BTreeMap, HashMap, HashSet};

use bson::{Bson, Document, RawBsonRef, RawDocument};

/// Order-independent digest of a multiset of documents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MultisetDigest {
    /// Documents added.
    pub(crate) count: u64,
    /// Bytes added.
    pub(crate) bytes: u64,
    sum: [u64; 4],
}

impl MultisetDigest {
    /// Adds one document.
    pub(crate) fn add(&mut self, raw: &[u8]) {
        let hash = blake3::hash(raw);
        let mut carry = false;
        for (limb, chunk) in self.sum.iter_mut().zip(hash.as_bytes().chunks_exact(8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let (s1, c1) = limb.overflowing_add(u64::from_le_bytes(word));
            let (s2, c2) = s1.overflowing_add(u64::from(carry));
            *limb = s2;
            carry = c1 || c2;
        }
        self.count += 1;
        self.bytes += raw.len() as u64;
    }

    /// The sum as hex (for reports).
    pub(crate) fn hex(&self) -> String {
        self.sum.iter().rev().map(|l| format!("{l:016x}")).collect()
    }
}

/// The `_id` of a raw document as comparable bytes (its BSON element type and value).
pub(crate) fn id_key(doc: &RawDocument) -> Option<Vec<u8>> {
    let id = doc.get("_id").ok()??;
    let mut key = vec![id.element_type() as u8];
    match id {
        RawBsonRef::Int32(n) => key = number_key(f64::from(n)),
        RawBsonRef::Int64(n) => {
            #[allow(clippy::cast_precision_loss)] // ids beyond 2^53 compare by their f64 image too
            let f = n as f64;
            key = number_key(f);
        }
        RawBsonRef::Double(f) => key = number_key(f),
        other => {
            let mut one = bson::RawDocumentBuf::new();
            one.append("", other.to_raw_bson());
            key.extend_from_slice(one.as_bytes());
        }
    }
    Some(key)
}

/// Numbers of any type that compare equal in MongoDB get one key (`_id: 1` and `_id: 1.0` are one document).
fn number_key(f: f64) -> Vec<u8> {
    let mut key = vec![b'n'];
    key.extend_from_slice(&f.to_le_bytes());
    key
}

fn bson_id_key(id: &Bson) -> Option<Vec<u8>> {
    let mut one = bson::RawDocumentBuf::new();
    one.append("_id", bson::RawBson::try_from(id.clone()).ok()?);
    id_key(&one)
}

/// What replaying an oplog changes, per namespace.
#[derive(Debug, Default)]
pub(crate) struct OplogFootprint {
    /// Documents (by [`id_key`]) written by CRUD entries.
    documents: HashMap<String, HashSet<Vec<u8>>>,
    /// Namespaces changed by a command entry, with the first command's name.
    commands: BTreeMap<String, String>,
    /// Databases dropped as a whole.
    dropped_databases: HashSet<String>,
    /// Entries seen (nested ones included).
    pub(crate) entries: u64,
}

impl OplogFootprint {
    /// Records one top-level oplog entry (nested `applyOps` and transactions included).
    pub(crate) fn add(&mut self, entry: &Document) {
        self.entries += 1;
        let ns = entry.get_str("ns").unwrap_or_default();
        let op = entry.get_str("op").unwrap_or_default();
        match op {
            "i" | "d" => self.add_document(ns, entry.get_document("o").ok().and_then(|o| o.get("_id"))),
            "u" => self.add_document(ns, entry.get_document("o2").ok().and_then(|o| o.get("_id"))),
            "c" => self.add_command(ns, entry),
            _ => {}
        }
    }

    fn add_document(&mut self, ns: &str, id: Option<&Bson>) {
        match id.and_then(bson_id_key) {
            Some(key) => {
                self.documents.entry(ns.to_owned()).or_default().insert(key);
            }
            // Without an _id the changed document cannot be told: the whole namespace is affected.
            None => {
                self.commands
                    .entry(ns.to_owned())
                    .or_insert_with(|| "write without _id".into());
            }
        }
    }

    fn add_command(&mut self, ns: &str, entry: &Document) {
        let db = ns.split_once('.').map_or(ns, |(db, _)| db);
        let Ok(o) = entry.get_document("o") else { return };
        if let Ok(nested) = o.get_array("applyOps") {
            for inner in nested.iter().filter_map(Bson::as_document) {
                self.add(inner);
                self.entries -= 1;
            }
            return;
        }
        let Some((name, target)) = o.iter().next() else { return };
        if name == "dropDatabase" {
            self.dropped_databases.insert(db.to_owned());
            return;
        }
        if let Bson::String(target) = target {
            let full = if target.contains('.') && name == "renameCollection" {
                target.clone()
            } else {
                format!("{db}.{target}")
            };
            self.commands.entry(full).or_insert_with(|| name.clone());
        }
        if let Ok(to) = o.get_str("to") {
            self.commands.entry(to.to_owned()).or_insert_with(|| name.clone());
        }
    }

    /// The command that changed `ns` as a whole, if any.
    pub(crate) fn command_on(&self, ns: &str) -> Option<&str> {
        let db = ns.split_once('.').map_or(ns, |(db, _)| db);
        if self.dropped_databases.contains(db) {
            return Some("dropDatabase");
        }
        self.commands.get(ns).map(String::as_str)
    }

    /// The documents of `ns` changed by replay (empty when none).
    pub(crate) fn changed_ids(&self, ns: &str) -> Option<&HashSet<Vec<u8>>> {
        self.documents.get(ns)
    }
}

/// Fields that say nothing about what a restore must reproduce: the index version (mongorestore
/// rewrites it), the namespace (older servers), build hints, the UUID (restores create new ones).
const VOLATILE_FIELDS: &[&str] = &["v", "ns", "background", "uuid", "idIndex", "recordIdsReplicated"];

/// A specification or options document in canonical form.
pub(crate) fn normalize(doc: &Document) -> Document {
    let mut keys: Vec<&String> = doc.keys().filter(|k| !VOLATILE_FIELDS.contains(&k.as_str())).collect();
    keys.sort();
    let mut out = Document::new();
    for k in keys {
        if let Some(v) = doc.get(k) {
            out.insert(k.clone(), normalize_value(v));
        }
    }
    out
}

/// Numbers as doubles (an `Int32` size and an `Int64` size are the same option); nested field order kept
/// (it matters in key patterns and pipelines).
fn normalize_value(v: &Bson) -> Bson {
    match v {
        Bson::Int32(n) => Bson::Double(f64::from(*n)),
        #[allow(clippy::cast_precision_loss)]
        Bson::Int64(n) => Bson::Double(*n as f64),
        Bson::Document(d) => Bson::Document(d.iter().map(|(k, v)| (k.clone(), normalize_value(v))).collect()),
        Bson::Array(a) => Bson::Array(a.iter().map(normalize_value).collect()),
        other => other.clone(),
    }
}

/// Whether two normalised documents are equal field order included (`Document`'s `==` ignores the
/// order, which matters in key patterns and pipelines).
pub(crate) fn same(a: &Document, b: &Document) -> bool {
    match (bson::to_vec(a), bson::to_vec(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Differences between expected and found index specifications, matched by name.
pub(crate) fn index_differences(expected: &[Document], found: &[Document]) -> Vec<String> {
    let by_name = |specs: &[Document]| -> BTreeMap<String, Document> {
        specs
            .iter()
            .map(|s| (s.get_str("name").unwrap_or("?").to_owned(), normalize(s)))
            .collect()
    };
    let expected = by_name(expected);
    let found = by_name(found);
    let mut out = Vec::new();
    for (name, spec) in &expected {
        match found.get(name) {
            None => out.push(format!("index {name} missing (expected {spec})")),
            Some(f) if !same(f, spec) => out.push(format!("index {name} differs: expected {spec}, found {f}")),
            Some(_) => {}
        }
    }
    for name in found.keys().filter(|n| !expected.contains_key(*n)) {
        out.push(format!("unexpected index {name}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use bson::{doc, rawdoc};

    use super::*;

    #[test]
    fn digest_ignores_order_but_not_content() {
        let docs = [rawdoc! {"_id": 1}, rawdoc! {"_id": 2, "x": "y"}, rawdoc! {"_id": 3}];
        let mut a = MultisetDigest::default();
        let mut b = MultisetDigest::default();
        for d in &docs {
            a.add(d.as_bytes());
        }
        for d in docs.iter().rev() {
            b.add(d.as_bytes());
        }
        assert_eq!(a, b);
        let mut c = MultisetDigest::default();
        c.add(docs[0].as_bytes());
        c.add(docs[1].as_bytes());
        c.add(rawdoc! {"_id": 3, "extra": true}.as_bytes());
        assert_ne!(a, c);
        // A duplicated document is not the same multiset as the set.
        let mut d = a;
        d.add(docs[0].as_bytes());
        assert_ne!(a.hex(), d.hex());
    }

    #[test]
    fn footprint_of_crud_commands_and_transactions() {
        let mut f = OplogFootprint::default();
        f.add(&doc! {"op": "i", "ns": "a.x", "o": {"_id": 1_i32, "v": 1}});
        f.add(&doc! {"op": "u", "ns": "a.x", "o": {"$v": 2}, "o2": {"_id": 2_i64}});
        f.add(&doc! {"op": "c", "ns": "admin.$cmd", "o": {"applyOps": [
            {"op": "d", "ns": "a.y", "o": {"_id": "k"}},
            {"op": "c", "ns": "a.$cmd", "o": {"createIndexes": "z", "v": 2, "key": {"q": 1}, "name": "q_1"}},
        ]}});
        f.add(&doc! {"op": "c", "ns": "a.$cmd", "o": {"renameCollection": "a.p", "to": "a.q"}});
        let x = f.changed_ids("a.x").unwrap();
        assert!(x.contains(&id_key(&rawdoc! {"_id": 1.0}).unwrap()));
        assert!(x.contains(&id_key(&rawdoc! {"_id": 2_i32}).unwrap()));
        assert!(
            f.changed_ids("a.y")
                .unwrap()
                .contains(&id_key(&rawdoc! {"_id": "k"}).unwrap())
        );
        assert_eq!(f.command_on("a.z"), Some("createIndexes"));
        assert_eq!(f.command_on("a.p"), Some("renameCollection"));
        assert_eq!(f.command_on("a.q"), Some("renameCollection"));
        assert_eq!(f.command_on("a.x"), None);
        assert_eq!(f.entries, 4);
    }

    #[test]
    fn index_specs_compare_by_meaning() {
        let expected = [doc! {"v": 2, "key": {"a": 1, "b": -1}, "name": "ab", "unique": true, "ns": "d.c"}];
        let same = [doc! {"name": "ab", "unique": true, "key": {"a": 1_i64, "b": -1.0}, "v": 1}];
        assert!(index_differences(&expected, &same).is_empty());
        let reordered = [doc! {"name": "ab", "unique": true, "key": {"b": -1, "a": 1}}];
        assert_eq!(index_differences(&expected, &reordered).len(), 1);
        let extra = [same[0].clone(), doc! {"name": "z", "key": {"z": 1}}];
        assert_eq!(index_differences(&expected, &extra), ["unexpected index z"]);
        assert!(index_differences(&expected, &[])[0].starts_with("index ab missing"));
    }
}
