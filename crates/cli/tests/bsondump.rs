//! `tidemark bsondump` against the real bsondump's test files and expected outputs.

use std::path::PathBuf;
use std::process::{Command, Output};

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/mongo-tools/bsondump/testdata")
        .join(name)
}

fn bsondump(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .arg("bsondump")
        .args(args)
        .output()
        .expect("run tidemark")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn sample_output_equals_the_real_tools_output() {
    let file = testdata("sample.bson");
    let expected = std::fs::read(testdata("sample.json")).unwrap();
    let out = bsondump(&[file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, expected);
    assert!(stderr(&out).contains("4 objects found"));

    // --bsonFile, standard input and --outFile give the same bytes.
    let out = bsondump(&["--bsonFile", file.to_str().unwrap()]);
    assert_eq!(out.stdout, expected);
    let stdin = std::fs::File::open(&file).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .arg("bsondump")
        .stdin(stdin)
        .output()
        .unwrap();
    assert_eq!(out.stdout, expected);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out.json");
    let out = bsondump(&["--outFile", target.to_str().unwrap(), file.to_str().unwrap()]);
    assert!(out.status.success());
    assert_eq!(std::fs::read(&target).unwrap(), expected);
}

#[test]
fn quiet_hides_the_summary_only() {
    let out = bsondump(&["--quiet", testdata("sample.bson").to_str().unwrap()]);
    assert!(out.status.success());
    assert!(!stderr(&out).contains("objects found"));
    assert_eq!(out.stdout, std::fs::read(testdata("sample.json")).unwrap());
}

#[test]
fn undecodable_documents_are_skipped_without_objcheck_and_fatal_with_it() {
    // FORMATS.md 6.4: bad_cstring without --objcheck exits 0 with "unable to dump document", 3 printed.
    let file = testdata("bad_cstring.bson");
    let out = bsondump(&[file.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(stderr(&out).contains("unable to dump document 1"), "{}", stderr(&out));
    assert_eq!(out.stdout.iter().filter(|&&b| b == b'\n').count(), 3);
    for name in ["bad_cstring.bson", "bad_type.bson"] {
        for kind in ["json", "debug"] {
            let out = bsondump(&["--objcheck", "--type", kind, testdata(name).to_str().unwrap()]);
            assert_eq!(out.status.code(), Some(1), "{name} {kind}");
        }
    }
}

#[test]
fn broken_streams_fail_with_the_byte_offset() {
    let cases = [
        ("partial_file.bson", "byte offset 164"),
        ("random_bytes.bson", "larger than maximum of 16793600 bytes"),
        ("invalid_field_name.bson", "byte offset 283"),
    ];
    for (name, needle) in cases {
        let out = bsondump(&["--objcheck", testdata(name).to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{name}");
        assert!(stderr(&out).contains(needle), "{name}: {}", stderr(&out));
        assert!(stderr(&out).contains(name), "error names the file: {}", stderr(&out));
    }
}

#[test]
fn out_of_sequence_array_keys_and_deep_nesting_are_valid() {
    for name in ["broken_array.bson", "deep_nested.bson", "all_types.bson"] {
        for kind in ["json", "debug"] {
            let out = bsondump(&["--objcheck", "--type", kind, testdata(name).to_str().unwrap()]);
            assert!(out.status.success(), "{name} {kind}: {}", stderr(&out));
        }
    }
}

#[test]
fn debug_listing_shows_every_type_number() {
    let out = bsondump(&["--type=debug", testdata("all_types.bson").to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    // 20 top-level documents plus 2 nested ones (FORMATS.md 6.4).
    assert_eq!(text.matches("--- new object ---").count(), 22);
    for t in [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 17, 18, -1, 127] {
        assert!(text.contains(&format!("type: {t:>4} size:")), "type {t} missing");
    }
}

#[test]
fn a_document_of_the_maximum_oplog_size_is_accepted_and_one_byte_more_is_not() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, ok) in [(0usize, true), (1, false)] {
        let size = 16 * 1024 * 1024 + 16 * 1024 + extra;
        // {"s": <binary>} : 4 (len) + 1 (type) + 2 ("s\0") + 4 (bin len) + 1 (subtype) + n + 1 (end)
        let payload = size - 13;
        let doc = bson::rawdoc! { "s": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: vec![7u8; payload] } };
        assert_eq!(doc.as_bytes().len(), size);
        let path = dir.path().join(format!("big{extra}.bson"));
        std::fs::write(&path, doc.as_bytes()).unwrap();
        let out = bsondump(&["--quiet", path.to_str().unwrap()]);
        assert_eq!(out.status.success(), ok, "{}", stderr(&out));
        if !ok {
            assert!(
                stderr(&out).contains("is larger than maximum of 16793600 bytes"),
                "{}",
                stderr(&out)
            );
        }
    }
}

#[test]
fn canonical_output_round_trips_through_pymongo() {
    // An independent reader: pymongo parses our canonical Extended JSON back into BSON that must
    // equal the original file byte for byte.
    let file = testdata("sample.bson");
    let out = bsondump(&[file.to_str().unwrap()]);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    std::fs::write(&json, &out.stdout).unwrap();
    let script = r"
import sys, bson
from bson import json_util
from bson.codec_options import CodecOptions
opts = json_util.JSONOptions(json_mode=json_util.JSONMode.CANONICAL, document_class=bson.SON)
docs = [json_util.loads(line, json_options=opts) for line in open(sys.argv[1])]
raw = b''.join(bson.encode(d) for d in docs)
assert raw == open(sys.argv[2], 'rb').read(), 'bytes differ'
print(len(docs))
";
    let py = Command::new("python3")
        .args(["-c", script, json.to_str().unwrap(), file.to_str().unwrap()])
        .output();
    let py = py.expect("python3 with pymongo (installed by .ci/run)");
    assert!(py.status.success(), "{}", String::from_utf8_lossy(&py.stderr));
    assert_eq!(String::from_utf8_lossy(&py.stdout).trim(), "4");
}

#[test]
fn debug_listing_of_an_undecodable_document_shows_only_its_header() {
    // What the real bsondump prints for bad_type.bson (first document's element `a` has type 0xAA):
    // the header of that document, nothing of its elements, then the next documents.
    let out = bsondump(&["--type=debug", testdata("bad_type.bson").to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("--- new object ---\n\tsize : 82\n--- new object ---\n"),
        "{text}"
    );
    assert!(
        stderr(&out).contains("encountered error debugging BSON data"),
        "{}",
        stderr(&out)
    );
}
