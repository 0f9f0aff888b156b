//! Encoding of a [`WriteBatch`] as a journal record payload.
//!
//! A payload is one BSON document `{v: 1, m: [mutation, ...]}` so any BSON reader can inspect a journal.
//! Each mutation is a document with an `op` string and its fields; namespaces are stored as separate `db`
//! and `coll` strings (collection names may contain dots):
//!
//! | `op`           | fields                                              |
//! |----------------|-----------------------------------------------------|
//! | `create`       | `db, coll, uuid: Binary(subtype 4), options: {...}` |
//! | `drop`         | `db, coll`                                          |
//! | `dropDatabase` | `db`                                                |
//! | `rename`       | `db, coll, toDb, toColl`                            |
//! | `setOptions`   | `db, coll, options: {...}`                          |
//! | `createIndex`  | `db, coll, spec: {...}`                             |
//! | `setIndexSpec` | `db, coll, spec: {...}`                             |
//! | `dropIndex`    | `db, coll, name`                                    |
//! | `insert`       | `db, coll, doc: {...}` (the stored bytes)           |
//! | `upsert`       | `db, coll, doc: {...}`                              |
//! | `delete`       | `db, coll, id: <the _id value>`                     |
//!
//! Documents are embedded byte for byte, so replay stores exactly what was acknowledged.

use bson::spec::BinarySubtype;
use bson::{Binary, Bson, Document, RawArrayBuf, RawBson, RawBsonRef, RawDocument, RawDocumentBuf};

use crate::engine::{Mutation, Namespace, WriteBatch};

/// Version stored in the payload's `v` field.
pub const PAYLOAD_VERSION: i32 = 1;

/// Why bytes could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(pub String);

fn err(msg: impl Into<String>) -> CodecError {
    CodecError(msg.into())
}

fn doc_to_raw(d: &Document, what: &str) -> Result<RawDocumentBuf, CodecError> {
    RawDocumentBuf::from_document(d).map_err(|e| err(format!("cannot encode {what}: {e}")))
}

fn ns_fields(out: &mut RawDocumentBuf, ns: &Namespace) {
    out.append("db", ns.db.as_str());
    out.append("coll", ns.coll.as_str());
}

/// Encodes one mutation.
pub fn encode_mutation(m: &Mutation) -> Result<RawDocumentBuf, CodecError> {
    let mut d = RawDocumentBuf::new();
    match m {
        Mutation::CreateCollection { ns, uuid, options } => {
            d.append("op", "create");
            ns_fields(&mut d, ns);
            d.append(
                "uuid",
                RawBson::Binary(Binary {
                    subtype: BinarySubtype::Uuid,
                    bytes: uuid.to_vec(),
                }),
            );
            d.append("options", doc_to_raw(options, "collection options")?);
        }
        Mutation::DropCollection { ns } => {
            d.append("op", "drop");
            ns_fields(&mut d, ns);
        }
        Mutation::DropDatabase { db } => {
            d.append("op", "dropDatabase");
            d.append("db", db.as_str());
        }
        Mutation::RenameCollection { from, to } => {
            d.append("op", "rename");
            ns_fields(&mut d, from);
            d.append("toDb", to.db.as_str());
            d.append("toColl", to.coll.as_str());
        }
        Mutation::SetOptions { ns, options } => {
            d.append("op", "setOptions");
            ns_fields(&mut d, ns);
            d.append("options", doc_to_raw(options, "collection options")?);
        }
        Mutation::CreateIndex { ns, spec } => {
            d.append("op", "createIndex");
            ns_fields(&mut d, ns);
            d.append("spec", doc_to_raw(spec, "index spec")?);
        }
        Mutation::SetIndexSpec { ns, spec } => {
            d.append("op", "setIndexSpec");
            ns_fields(&mut d, ns);
            d.append("spec", doc_to_raw(spec, "index spec")?);
        }
        Mutation::DropIndex { ns, name } => {
            d.append("op", "dropIndex");
            ns_fields(&mut d, ns);
            d.append("name", name.as_str());
        }
        Mutation::Insert { ns, doc } => {
            d.append("op", "insert");
            ns_fields(&mut d, ns);
            d.append("doc", doc.clone());
        }
        Mutation::Upsert { ns, doc } => {
            d.append("op", "upsert");
            ns_fields(&mut d, ns);
            d.append("doc", doc.clone());
        }
        Mutation::Delete { ns, id } => {
            d.append("op", "delete");
            ns_fields(&mut d, ns);
            let id = RawBson::try_from(id.clone()).map_err(|e| err(format!("cannot encode _id: {e}")))?;
            d.append("id", id);
        }
    }
    Ok(d)
}

/// Encodes a batch as a journal payload.
pub fn encode_batch(batch: &WriteBatch) -> Result<Vec<u8>, CodecError> {
    let mut arr = RawArrayBuf::new();
    for m in &batch.mutations {
        arr.push(encode_mutation(m)?);
    }
    let mut d = RawDocumentBuf::new();
    d.append("v", PAYLOAD_VERSION);
    d.append("m", arr);
    Ok(d.into_bytes())
}

fn get_str<'a>(d: &'a RawDocument, key: &str) -> Result<&'a str, CodecError> {
    match d.get(key) {
        Ok(Some(RawBsonRef::String(s))) => Ok(s),
        Ok(Some(_)) => Err(err(format!("field '{key}' is not a string"))),
        Ok(None) => Err(err(format!("field '{key}' is missing"))),
        Err(e) => Err(err(format!("invalid BSON at field '{key}': {e}"))),
    }
}

fn get_raw_doc<'a>(d: &'a RawDocument, key: &str) -> Result<&'a RawDocument, CodecError> {
    match d.get(key) {
        Ok(Some(RawBsonRef::Document(s))) => Ok(s),
        Ok(Some(_)) => Err(err(format!("field '{key}' is not a document"))),
        Ok(None) => Err(err(format!("field '{key}' is missing"))),
        Err(e) => Err(err(format!("invalid BSON at field '{key}': {e}"))),
    }
}

fn get_doc(d: &RawDocument, key: &str) -> Result<Document, CodecError> {
    let raw = get_raw_doc(d, key)?;
    Document::try_from(raw).map_err(|e| err(format!("invalid BSON in field '{key}': {e}")))
}

fn get_ns(d: &RawDocument, db_key: &str, coll_key: &str) -> Result<Namespace, CodecError> {
    Ok(Namespace {
        db: get_str(d, db_key)?.to_string(),
        coll: get_str(d, coll_key)?.to_string(),
    })
}

/// Decodes one mutation.
pub fn decode_mutation(d: &RawDocument) -> Result<Mutation, CodecError> {
    let op = get_str(d, "op")?;
    let ns = || get_ns(d, "db", "coll");
    Ok(match op {
        "create" => {
            let uuid = match d.get("uuid") {
                Ok(Some(RawBsonRef::Binary(b))) if b.subtype == BinarySubtype::Uuid => <[u8; 16]>::try_from(b.bytes)
                    .map_err(|_| err(format!("uuid has {} bytes, expected 16", b.bytes.len())))?,
                _ => return Err(err("field 'uuid' is not a UUID binary")),
            };
            Mutation::CreateCollection {
                ns: ns()?,
                uuid,
                options: get_doc(d, "options")?,
            }
        }
        "drop" => Mutation::DropCollection { ns: ns()? },
        "dropDatabase" => Mutation::DropDatabase {
            db: get_str(d, "db")?.to_string(),
        },
        "rename" => Mutation::RenameCollection {
            from: ns()?,
            to: get_ns(d, "toDb", "toColl")?,
        },
        "setOptions" => Mutation::SetOptions {
            ns: ns()?,
            options: get_doc(d, "options")?,
        },
        "createIndex" => Mutation::CreateIndex {
            ns: ns()?,
            spec: get_doc(d, "spec")?,
        },
        "setIndexSpec" => Mutation::SetIndexSpec {
            ns: ns()?,
            spec: get_doc(d, "spec")?,
        },
        "dropIndex" => Mutation::DropIndex {
            ns: ns()?,
            name: get_str(d, "name")?.to_string(),
        },
        "insert" => Mutation::Insert {
            ns: ns()?,
            doc: get_raw_doc(d, "doc")?.to_raw_document_buf(),
        },
        "upsert" => Mutation::Upsert {
            ns: ns()?,
            doc: get_raw_doc(d, "doc")?.to_raw_document_buf(),
        },
        "delete" => {
            let id = match d.get("id") {
                Ok(Some(v)) => Bson::try_from(v.to_raw_bson()).map_err(|e| err(format!("invalid _id: {e}")))?,
                Ok(None) => return Err(err("field 'id' is missing")),
                Err(e) => return Err(err(format!("invalid BSON at field 'id': {e}"))),
            };
            Mutation::Delete { ns: ns()?, id }
        }
        other => return Err(err(format!("unknown mutation op '{other}'"))),
    })
}

/// Decodes a journal payload.
pub fn decode_batch(bytes: &[u8]) -> Result<WriteBatch, CodecError> {
    let d = RawDocument::from_bytes(bytes).map_err(|e| err(format!("payload is not a BSON document: {e}")))?;
    match d.get("v") {
        Ok(Some(RawBsonRef::Int32(PAYLOAD_VERSION))) => {}
        Ok(Some(v)) => return Err(err(format!("unsupported payload version {v:?}"))),
        _ => return Err(err("payload has no version field 'v'")),
    }
    let arr = match d.get("m") {
        Ok(Some(RawBsonRef::Array(a))) => a,
        _ => return Err(err("payload has no mutation array 'm'")),
    };
    let mut mutations = Vec::new();
    for (i, item) in arr.into_iter().enumerate() {
        match item {
            Ok(RawBsonRef::Document(m)) => {
                mutations.push(decode_mutation(m).map_err(|e| err(format!("mutation {i}: {}", e.0)))?);
            }
            Ok(_) => return Err(err(format!("mutation {i} is not a document"))),
            Err(e) => return Err(err(format!("mutation {i}: invalid BSON: {e}"))),
        }
    }
    Ok(WriteBatch { mutations })
}

/// A UUID as BSON binary subtype 4 (how the catalog stores collection UUIDs).
pub fn uuid_bson(uuid: &[u8; 16]) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Uuid,
        bytes: uuid.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use bson::{doc, oid::ObjectId, rawdoc};
    use proptest::prelude::*;

    use super::*;

    fn ns(db: &str, coll: &str) -> Namespace {
        Namespace {
            db: db.into(),
            coll: coll.into(),
        }
    }

    fn every_kind() -> WriteBatch {
        let oid = ObjectId::parse_str("64b7f0c2a1b2c3d4e5f60718").unwrap();
        WriteBatch {
            mutations: vec![
                Mutation::CreateCollection {
                    ns: ns("app", "events.2024"),
                    uuid: [7; 16],
                    options: doc! { "capped": true, "size": 4096_i64, "max": 10 },
                },
                Mutation::CreateIndex {
                    ns: ns("app", "events.2024"),
                    spec: doc! { "v": 2, "key": { "a": 1 }, "name": "a_1" },
                },
                Mutation::SetIndexSpec {
                    ns: ns("app", "events.2024"),
                    spec: doc! { "v": 2, "key": { "a": 1 }, "name": "a_1", "hidden": true },
                },
                Mutation::Insert {
                    ns: ns("app", "events.2024"),
                    doc: rawdoc! { "_id": oid, "z": 1, "a": 2.5 },
                },
                Mutation::Upsert {
                    ns: ns("app", "events.2024"),
                    doc: rawdoc! { "_id": oid, "z": 2 },
                },
                Mutation::Delete {
                    ns: ns("app", "events.2024"),
                    id: Bson::ObjectId(oid),
                },
                Mutation::Delete {
                    ns: ns("app", "events.2024"),
                    id: Bson::Document(doc! { "k": [1, "x"] }),
                },
                Mutation::SetOptions {
                    ns: ns("app", "events.2024"),
                    options: doc! { "validator": { "a": { "$gt": 1 } } },
                },
                Mutation::DropIndex {
                    ns: ns("app", "events.2024"),
                    name: "a_1".into(),
                },
                Mutation::RenameCollection {
                    from: ns("app", "events.2024"),
                    to: ns("archive", "ev"),
                },
                Mutation::DropCollection {
                    ns: ns("archive", "ev"),
                },
                Mutation::DropDatabase { db: "archive".into() },
            ],
        }
    }

    #[test]
    fn every_mutation_kind_round_trips() {
        let batch = every_kind();
        let bytes = encode_batch(&batch).unwrap();
        assert_eq!(decode_batch(&bytes).unwrap(), batch);
    }

    #[test]
    fn payload_is_plain_bson_readable_by_pymongo() {
        // An independent BSON reader (pymongo's `bson`) must see the documented layout.
        let bytes = encode_batch(&every_kind()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("payload.bson");
        std::fs::write(&path, &bytes).unwrap();
        let script = r#"
import bson, sys
from bson.binary import UUID_SUBTYPE
d = bson.decode(open(sys.argv[1], 'rb').read())
assert d['v'] == 1, d
m = d['m']
assert [x['op'] for x in m] == ['create', 'createIndex', 'setIndexSpec', 'insert', 'upsert', 'delete', 'delete',
    'setOptions', 'dropIndex', 'rename', 'drop', 'dropDatabase'], m
assert m[0]['db'] == 'app' and m[0]['coll'] == 'events.2024'
assert m[0]['uuid'].subtype == UUID_SUBTYPE and bytes(m[0]['uuid']) == b'\x07' * 16
assert list(m[0]['options'].keys()) == ['capped', 'size', 'max']
assert list(m[3]['doc'].keys()) == ['_id', 'z', 'a'] and m[3]['doc']['a'] == 2.5
assert str(m[5]['id']) == '64b7f0c2a1b2c3d4e5f60718'
assert m[9]['toDb'] == 'archive' and m[9]['toColl'] == 'ev'
print('ok')
"#;
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    #[test]
    fn malformed_payloads_are_errors() {
        assert!(decode_batch(b"").is_err());
        assert!(decode_batch(&RawDocumentBuf::new().into_bytes()).is_err());
        let mut d = RawDocumentBuf::new();
        d.append("v", 2);
        d.append("m", RawArrayBuf::new());
        assert!(decode_batch(d.as_bytes()).unwrap_err().0.contains("version"));
        let mut arr = RawArrayBuf::new();
        arr.push(rawdoc! { "op": "insert", "db": "a" });
        let mut d = RawDocumentBuf::new();
        d.append("v", 1);
        d.append("m", arr);
        assert!(decode_batch(d.as_bytes()).unwrap_err().0.contains("coll"));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_batch(&bytes);
        }

        #[test]
        fn damaged_payloads_never_panic(flip in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut bytes = encode_batch(&every_kind()).unwrap();
            let at = flip.index(bytes.len());
            bytes[at] = byte;
            let _ = decode_batch(&bytes);
        }
    }
}
