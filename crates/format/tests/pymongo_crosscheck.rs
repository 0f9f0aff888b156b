//! Cross-checks with an independent reader: pymongo's `bson` module decodes what the directory
//! writer produces (plain and gzip dumps, escaped and shortened names, metadata), and judges
//! thousands of corrupted documents the same way `validate_document` does.
//!
//! The tests need `python3` with pymongo installed; they fail (rather than pass silently) if it
//! is missing.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use bson::{Bson, Document, rawdoc};
use tidemark_format::bson_stream::{BsonReader, MAX_DOCUMENT_SIZE, validate_bytes};
use tidemark_format::directory::{DbAuthFile, DumpWriter};
use tidemark_format::metadata::{Metadata, ext_value};

/// Decodes every data file with `bson.decode_all` and every metadata file with
/// `json_util.loads`, re-emitting both as canonical Extended JSON keyed by relative path.
const DECODE_DUMP: &str = r#"
import bson, gzip, json, os, sys
from bson import json_util
from bson.json_util import JSONOptions, JSONMode
canon = JSONOptions(json_mode=JSONMode.CANONICAL)
root, gz = sys.argv[1], sys.argv[2] == "1"
out = {}
for d, _, files in os.walk(root):
    for f in files:
        p = os.path.join(d, f)
        rel = os.path.relpath(p, root)
        raw = open(p, "rb").read()
        if gz:
            raw = gzip.decompress(raw)
        if ".metadata.json" in f:
            text = raw.decode("utf-8")
            doc = json_util.loads(text, json_options=canon)
            out[rel] = {"metadata": json_util.dumps(doc, json_options=canon), "newline": text.endswith("\n")}
        elif f.startswith("prelude.json"):
            out[rel] = {"prelude": json.loads(raw)}
        else:
            docs = bson.decode_all(raw)
            out[rel] = {"docs": [json_util.dumps(x, json_options=canon) for x in docs]}
print(json.dumps(out))
"#;

fn python(script: &str, args: &[&str]) -> serde_json::Value {
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 with pymongo is required for this test");
    assert!(
        output.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn from_extjson(text: &str) -> Document {
    match ext_value(serde_json::from_str(text).unwrap()).unwrap() {
        Bson::Document(d) => d,
        other => panic!("{other:?}"),
    }
}

fn long_name() -> String {
    format!(
        "aVery{}LongCollectionNameConsistingOfExactlyTwoHundredAndFortySevenCharacters",
        "Very".repeat(43)
    )
}

fn sample_docs() -> Vec<bson::RawDocumentBuf> {
    let uuid = bson::Binary {
        subtype: bson::spec::BinarySubtype::Uuid,
        bytes: (1u8..=16).collect(),
    };
    vec![
        rawdoc! { "_id": 1, "i64": 5_000_000_000_i64, "d": 1.0, "big": 1.0e21, "s": "caf\u{e9} \u{2028}" },
        rawdoc! { "_id": 2, "nested": { "a": [1, 2.5, { "b": bson::RawBson::Null }] }, "u": uuid,
        "t": bson::Timestamp { time: 7, increment: 9 }, "dt": bson::DateTime::from_millis(1_600_000_000_123),
        "dec": "1.50".parse::<bson::Decimal128>().unwrap() },
    ]
}

fn write_dump(root: &Path, gzip: bool) -> Vec<(String, String)> {
    let writer = DumpWriter::new(root, gzip);
    let names = [
        "plain".to_owned(),
        "coll/three".into(),
        "caf\u{e9}s".into(),
        "a b+c".into(),
        long_name(),
    ];
    let mut written = Vec::new();
    for name in &names {
        let mut file = writer.create_collection("db1", name).unwrap();
        for doc in sample_docs() {
            file.write_document(&doc).unwrap();
        }
        let data = file.finish().unwrap();
        let mut meta = Metadata::new(name.clone());
        meta.indexes
            .push(bson::doc! { "v": 2, "key": { "_id": 1 }, "name": "_id_" });
        meta.indexes.push(
            bson::doc! { "v": 2, "key": { "f": 1.0, "g": -1_i64 }, "name": "f_1_g_-1", "expireAfterSeconds": 3600 },
        );
        meta.options =
            Some(bson::doc! { "capped": true, "size": 4096_i64, "collation": { "locale": "fr", "strength": 2 } });
        meta.uuid = Some("ffa7054f30dc422696fa9607e150cb53".into());
        meta.collection_type = Some("collection".into());
        let path = writer.write_metadata("db1", name, &meta).unwrap();
        written.push((rel(root, &data.path), rel(root, &path)));
    }
    writer.create_collection("db1", "empty").unwrap().finish().unwrap();
    let mut users = writer.create_db_auth_file("db1", DbAuthFile::Users).unwrap();
    users
        .write_document(&rawdoc! { "_id": "db1.u", "user": "u", "db": "db1" })
        .unwrap();
    users.finish().unwrap();
    let mut oplog = writer.create_oplog().unwrap();
    oplog
        .write_document(&rawdoc! { "op": "n", "ns": "", "o": { "msg": "x" } })
        .unwrap();
    oplog.finish().unwrap();
    writer.write_prelude(None, "7.0.16", "100.10.0").unwrap().unwrap();
    written
}

fn rel(root: &Path, path: &Path) -> String {
    path.strip_prefix(root).unwrap().to_string_lossy().into_owned()
}

fn check_dump(gzip: bool) {
    let dir = tempfile::tempdir().unwrap();
    let written = write_dump(dir.path(), gzip);
    let decoded = python(
        DECODE_DUMP,
        &[dir.path().to_str().unwrap(), if gzip { "1" } else { "0" }],
    );
    let files = decoded.as_object().unwrap();
    let gz = if gzip { ".gz" } else { "" };
    // Layout: escaped and shortened names, the oplog's name never gets .gz.
    let mut names: Vec<_> = files.keys().cloned().collect();
    names.sort();
    let stem = format!("{}%24xFO0VquRn7cg3QooSZD5sglTddU", &long_name()[..208]);
    let mut expected: Vec<String> = ["a+b%2Bc", "caf%C3%A9s", "coll%2Fthree", "plain", stem.as_str()]
        .iter()
        .flat_map(|s| [format!("db1/{s}.bson{gz}"), format!("db1/{s}.metadata.json{gz}")])
        .chain([
            format!("db1/empty.bson{gz}"),
            format!("db1/$admin.system.users.bson{gz}"),
        ])
        .chain(["oplog.bson".to_owned(), format!("prelude.json{gz}")])
        .collect();
    expected.sort();
    assert_eq!(names, expected);

    let samples = sample_docs();
    for (data, meta) in &written {
        let docs = files[data]["docs"].as_array().unwrap();
        assert_eq!(docs.len(), 2, "{data}");
        for (got, want) in docs.iter().zip(&samples) {
            // pymongo's decoding, re-encoded as canonical Extended JSON, equals the original.
            assert_eq!(
                from_extjson(got.as_str().unwrap()),
                want.to_document().unwrap(),
                "{data}"
            );
        }
        let m = &files[meta];
        assert_eq!(m["newline"], false);
        let doc = from_extjson(m["metadata"].as_str().unwrap());
        let keys: Vec<_> = doc.keys().cloned().collect();
        assert_eq!(keys, ["options", "indexes", "uuid", "collectionName", "type"], "{meta}");
        assert_eq!(
            doc.get_array("indexes").unwrap()[0].as_document().unwrap().get("v"),
            Some(&Bson::Int32(2))
        );
        let options = doc.get_document("options").unwrap();
        assert_eq!(options.get("size"), Some(&Bson::Int64(4096)));
        assert!(long_name() == doc.get_str("collectionName").unwrap() || !meta.contains("%24"));
    }
    assert_eq!(
        files[&format!("db1/empty.bson{gz}")]["docs"].as_array().unwrap().len(),
        0
    );
    assert_eq!(
        files[&format!("db1/$admin.system.users.bson{gz}")]["docs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let oplog = files["oplog.bson"]["docs"].as_array().unwrap();
    assert_eq!(from_extjson(oplog[0].as_str().unwrap()).get_str("op").unwrap(), "n");
    assert_eq!(
        files[&format!("prelude.json{gz}")]["prelude"],
        serde_json::json!({"ServerVersion":"7.0.16","ToolVersion":"100.10.0"})
    );
}

#[test]
fn pymongo_reads_a_plain_dump() {
    check_dump(false);
}

#[test]
fn pymongo_reads_a_gzip_dump() {
    check_dump(true);
}

/// For each hex-encoded document, whether `bson.decode` accepts it (UTF-8 checking off and
/// out-of-range dates allowed, since `--objcheck` checks neither).
const JUDGE: &str = r#"
import bson, json, sys
from bson.codec_options import CodecOptions, DatetimeConversion
opts = CodecOptions(unicode_decode_error_handler="replace", datetime_conversion=DatetimeConversion.DATETIME_AUTO)
out = []
for h in json.load(open(sys.argv[1])):
    try:
        bson.decode(bytes.fromhex(h), codec_options=opts)
        out.append([True, ""])
    except Exception as e:
        out.append([False, type(e).__name__ + ": " + str(e)])
print(json.dumps(out))
"#;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/mongo-tools/bsondump/testdata")
        .join(name)
}

/// Deterministic xorshift, so the corpus is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
    }
}

#[test]
fn validation_agrees_with_pymongo_on_corrupted_documents() {
    let mut seeds = Vec::new();
    for name in ["all_types.bson", "sample.bson", "all_in_one_doc.bson"] {
        let bytes = fs::read(fixture(name)).unwrap();
        let mut reader = BsonReader::new(&bytes[..], MAX_DOCUMENT_SIZE);
        while let Some(doc) = reader.next_document().unwrap() {
            seeds.push(doc.as_bytes().to_vec());
        }
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut cases = Vec::new();
    for _ in 0..4000 {
        let mut doc = seeds[rng.below(seeds.len())].clone();
        for _ in 0..1 + rng.below(2) {
            let at = 4 + rng.below(doc.len() - 5);
            doc[at] = match rng.below(3) {
                0 => u8::try_from(rng.next() & 0xFF).unwrap(),
                1 => doc[at] ^ 1,
                _ => 0,
            };
        }
        cases.push(doc);
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("cases.json");
    let hex: Vec<String> = cases
        .iter()
        .map(|c| c.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    fs::write(&input, serde_json::to_vec(&hex).unwrap()).unwrap();
    let verdicts = python(JUDGE, &[input.to_str().unwrap()]);
    let verdicts = verdicts.as_array().unwrap();
    assert_eq!(verdicts.len(), cases.len());
    let (mut accepted, mut rejected, mut disagreements) = (0, 0, Vec::new());
    for (case, verdict) in cases.iter().zip(verdicts) {
        let theirs = verdict[0].as_bool().unwrap();
        let ours = validate_bytes(case);
        if theirs {
            accepted += 1
        } else {
            rejected += 1
        }
        if ours.is_ok() != theirs {
            disagreements.push(format!("{ours:?} vs pymongo {}", verdict[1]));
        }
    }
    assert!(
        accepted > 100 && rejected > 100,
        "accepted {accepted}, rejected {rejected}"
    );
    assert!(
        disagreements.is_empty(),
        "{} disagreements, e.g. {:#?}",
        disagreements.len(),
        &disagreements[..disagreements.len().min(10)]
    );
}
