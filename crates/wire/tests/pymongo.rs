//! Cross-checks with pymongo, a client we did not write: messages built by pymongo's own
//! encoders (and by Python's `struct` + `bson.encode` from the documented layouts) are decoded by
//! this crate, and messages encoded by this crate are parsed by pymongo's reply reader and
//! `bson.decode`.
//!
//! Skipped (with a note on stderr) when `python3` with pymongo is not available.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use bson::{Document, RawDocumentBuf, doc};
use serde_json::Value;
use tidemark_wire::*;

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/pymongo")
        .join(name)
}

fn pymongo_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import bson, pymongo.message, pymongo.compression_support"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipping: python3 with pymongo is not available");
    }
    ok
}

fn run_python(name: &str, stdin: &str) -> Vec<Value> {
    let mut child = Command::new("python3")
        .arg(script(name))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn doc_of(hex_str: &str) -> Document {
    bson::from_slice(&hex(hex_str)).unwrap()
}

#[test]
fn decodes_messages_built_by_pymongo() {
    if !pymongo_available() {
        return;
    }
    let cases = run_python("produce.py", "");
    assert_eq!(cases.len(), 4);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let bytes = hex(case["hex"].as_str().unwrap());
        let decoded = decode_message(&bytes, DEFAULT_MAX_MESSAGE_SIZE).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            i64::from(decoded.header.request_id),
            case["request_id"].as_i64().unwrap(),
            "{name}"
        );
        assert_eq!(
            decoded.compressor.map(|c| c.name()),
            case["compressor"].as_str(),
            "{name}"
        );
        let Message::Msg(msg) = decoded.message else {
            panic!("{name}: expected OP_MSG")
        };
        assert_eq!(u64::from(msg.flags), case["flags"].as_u64().unwrap(), "{name}");
        assert_eq!(
            msg.body.to_document().unwrap(),
            doc_of(case["body"].as_str().unwrap()),
            "{name}"
        );
        let expected = case["sequences"].as_object().unwrap();
        assert_eq!(msg.sequences.len(), expected.len(), "{name}");
        for (identifier, docs) in expected {
            let seq = msg
                .sequence(identifier)
                .unwrap_or_else(|| panic!("{name}: no sequence {identifier}"));
            let want: Vec<Document> = docs
                .as_array()
                .unwrap()
                .iter()
                .map(|d| doc_of(d.as_str().unwrap()))
                .collect();
            let got: Vec<Document> = seq.documents.iter().map(|d| d.to_document().unwrap()).collect();
            assert_eq!(got, want, "{name}");
        }
    }
}

#[test]
fn pymongo_reads_messages_encoded_here() {
    if !pymongo_available() {
        return;
    }
    let reply = RawDocumentBuf::from_document(&doc! {
        "cursor": { "firstBatch": [{ "_id": 1, "v": "x" }], "id": 0_i64, "ns": "db.c" },
        "ok": 1.0,
    })
    .unwrap();
    let docs: Vec<RawDocumentBuf> = (0..3usize)
        .map(|i| RawDocumentBuf::from_document(&doc! { "_id": i32::try_from(i).unwrap(), "s": "y".repeat(i) }).unwrap())
        .collect();
    let with_sequence = OpMsg {
        flags: 0,
        body: RawDocumentBuf::from_document(&doc! { "insert": "c", "$db": "d" }).unwrap(),
        sequences: vec![DocumentSequence {
            identifier: "documents".into(),
            documents: docs.clone(),
        }],
    };
    let messages = [
        encode_op_msg(10, 1, &OpMsg::new(reply.clone()), None).unwrap(),
        encode_op_msg(
            11,
            2,
            &OpMsg::new(reply.clone()),
            Some(&Compressor::Zlib { level: None }),
        )
        .unwrap(),
        encode_op_msg(12, 3, &with_sequence, None).unwrap(),
        encode_op_reply(13, 4, REPLY_FLAG_AWAIT_CAPABLE, 0, 0, &docs),
    ];
    let input: String = messages.iter().map(|m| to_hex(m) + "\n").collect();
    let out = run_python("consume.py", &input);
    assert_eq!(out.len(), 4);
    for (i, o) in out.iter().enumerate() {
        assert_eq!(o["request_id"].as_i64(), Some(10 + i64::try_from(i).unwrap()));
        assert_eq!(o["response_to"].as_i64(), Some(1 + i64::try_from(i).unwrap()));
    }
    let docs_of = |v: &Value| -> Vec<Document> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|d| doc_of(d.as_str().unwrap()))
            .collect()
    };
    let reply_doc = reply.to_document().unwrap();
    assert_eq!(out[0]["op_code"].as_i64(), Some(2013));
    assert_eq!(docs_of(&out[0]["docs"]), vec![reply_doc.clone()]);
    assert_eq!(out[1]["compressor_id"].as_i64(), Some(2));
    assert_eq!(docs_of(&out[1]["docs"]), vec![reply_doc]);
    let want_docs: Vec<Document> = docs.iter().map(|d| d.to_document().unwrap()).collect();
    assert_eq!(docs_of(&out[2]["sequences"]["documents"]), want_docs);
    assert_eq!(out[3]["op_code"].as_i64(), Some(1));
    assert_eq!(out[3]["flags"].as_i64(), Some(8));
    assert_eq!(docs_of(&out[3]["docs"]), want_docs);
}

/// The commands pymongo never compresses (its implementation of the compression specification)
/// are exactly those [`is_compressible_command`] refuses.
#[test]
fn compression_exemptions_match_pymongo() {
    if !pymongo_available() {
        return;
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import pymongo.compression_support as c; print('\\n'.join(sorted(c._NO_COMPRESSION)))",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let names: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(names.len() >= 9, "{names:?}");
    for name in &names {
        assert!(!is_compressible_command(name), "{name} must not be compressed");
    }
    // Every exempt name known here is exempt in pymongo too.
    for name in [
        "hello",
        "isMaster",
        "saslStart",
        "saslContinue",
        "getnonce",
        "authenticate",
        "createUser",
        "updateUser",
        "copydbSaslStart",
        "copydbgetnonce",
        "copydb",
    ] {
        assert!(
            names.contains(&name.to_ascii_lowercase()),
            "{name} is not exempt in pymongo"
        );
    }
}
