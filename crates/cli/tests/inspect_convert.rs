//! `tidemark inspect` and `tidemark convert` on real mongodump output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/mongo-tools/mongorestore/testdata")
}

fn tidemark(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(args)
        .output()
        .expect("run tidemark")
}

fn inspect_json(path: &Path, extra: &[&str]) -> (Output, Value) {
    let mut args = vec!["inspect", "--json"];
    args.extend_from_slice(extra);
    args.push(path.to_str().unwrap());
    let out = tidemark(&args);
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, json)
}

fn namespace<'a>(summary: &'a Value, name: &str) -> &'a Value {
    summary["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["namespace"] == name)
        .unwrap_or_else(|| panic!("{name} missing from {summary:#}"))
}

#[test]
fn inspect_reports_the_worked_archive_example() {
    // FORMATS.md 2.4: test.bar.archive, server 3.4.3, tools r3.4.3, two namespaces with these CRCs.
    let (out, summary) = inspect_json(&fixtures().join("test.bar.archive"), &["--verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(summary["format"], "archive");
    assert_eq!(summary["server_version"], "3.4.3");
    assert_eq!(summary["tool_version"], "r3.4.3");
    let version = namespace(&summary, "admin.system.version");
    assert_eq!(version["kind"], "authVersion");
    assert_eq!(version["documents"], 1);
    assert_eq!(
        version["crc"],
        format!("{:016x}", (-682_997_726_120_892_866_i64).cast_unsigned())
    );
    let bar = namespace(&summary, "test.bar");
    assert_eq!(bar["documents"], 1);
    assert_eq!(
        bar["crc"],
        format!("{:016x}", (-7_824_457_949_569_593_127_i64).cast_unsigned())
    );
    assert_eq!(summary["documents"], 2);
}

#[test]
fn inspect_reports_oplog_windows_and_counts() {
    // FORMATS.md 6.2 oplogdump: db1.c1 holds 5 documents, oplog.bson 3 entries.
    let (out, summary) = inspect_json(&fixtures().join("oplogdump"), &["--verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(namespace(&summary, "db1.c1")["documents"], 5);
    assert_eq!(
        namespace(&summary, "db1.c1")["uuid"],
        "699f503df64b4aa8a484a8052046fa3a"
    );
    let oplog = namespace(&summary, ".oplog");
    assert_eq!(oplog["kind"], "oplog");
    assert_eq!(oplog["documents"], 3);
    let window = &oplog["oplog_window"];
    assert!(window["first"]["t"].as_u64().unwrap() <= window["last"]["t"].as_u64().unwrap());
}

#[test]
fn inspect_lists_what_restore_would_skip() {
    // FORMATS.md 6.2 testdirs: 110 documents; badfile.txt, baddir and c2.txt are skipped.
    let (out, summary) = inspect_json(&fixtures().join("testdirs"), &[]);
    assert!(out.status.success());
    assert_eq!(summary["documents"], 110);
    let skipped = summary["skipped"].to_string();
    for name in ["badfile.txt", "baddir", "c2.txt"] {
        assert!(skipped.contains(name), "{name} not in {skipped}");
    }
}

#[test]
fn inspect_flags_invalid_metadata_and_broken_archives() {
    // bad-format.archive: structurally valid, but its metadata for test.ixtest is invalid JSON.
    let (out, summary) = inspect_json(&fixtures().join("bad-format.archive"), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        !namespace(&summary, "test.ixtest")["problems"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // A truncated archive fails with the byte offset.
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixtures().join("test.bar.archive")).unwrap();
    let cut = dir.path().join("cut.archive");
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    let out = tidemark(&["inspect", cut.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("offset"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every file below `dir`, relative path -> bytes.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn directory_to_archive_and_back_is_lossless() {
    // A real mongodump directory (users, roles, version and a collection) survives
    // directory -> archive -> directory byte for byte, gzip or not.
    for gzip in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let src = fixtures().join("usersdump");
        let archive = dir.path().join("dump.archive");
        let back = dir.path().join("back");
        let mut args = vec!["convert", src.to_str().unwrap(), archive.to_str().unwrap()];
        if gzip {
            args.push("--gzip");
        }
        let out = tidemark(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        if gzip {
            assert_eq!(&std::fs::read(&archive).unwrap()[..2], &[0x1f, 0x8b]);
        }
        let out = tidemark(&["convert", archive.to_str().unwrap(), back.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let original: Vec<_> = tree(&src);
        let mut copied: Vec<_> = tree(&back);
        // The archive records no prelude.json for a dump that had none; ours writes one.
        copied.retain(|(name, _)| name != "prelude.json");
        assert_eq!(original, copied);
    }
}

#[test]
fn archive_to_directory_and_back_keeps_documents_and_crcs() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures().join("test.bar.archive");
    let out_dir = dir.path().join("dump");
    let again = dir.path().join("again.archive.gz");
    assert!(
        tidemark(&["convert", src.to_str().unwrap(), out_dir.to_str().unwrap(), "--gzip"])
            .status
            .success()
    );
    assert!(out_dir.join("test/bar.bson.gz").is_file());
    assert!(out_dir.join("prelude.json.gz").is_file());
    let out = tidemark(&["convert", out_dir.to_str().unwrap(), again.to_str().unwrap(), "--gzip"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, before) = inspect_json(&src, &[]);
    let (_, after) = inspect_json(&again, &[]);
    assert_eq!(after["server_version"], "3.4.3");
    for ns in ["test.bar", "admin.system.version"] {
        assert_eq!(namespace(&before, ns)["crc"], namespace(&after, ns)["crc"], "{ns}");
        assert_eq!(
            namespace(&before, ns)["documents"],
            namespace(&after, ns)["documents"],
            "{ns}"
        );
    }
}

#[test]
fn converted_directories_decode_with_pymongo() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("dump");
    let src = fixtures().join("test.bar.archive");
    assert!(
        tidemark(&["convert", src.to_str().unwrap(), out_dir.to_str().unwrap()])
            .status
            .success()
    );
    let script = r#"
import sys, bson
from bson import json_util
docs = bson.decode_all(open(sys.argv[1] + '/test/bar.bson', 'rb').read())
assert len(docs) == 1 and docs[0]['foo'] == 'bar', docs
meta = json_util.loads(open(sys.argv[1] + '/test/bar.metadata.json').read())
assert any(ix['name'] == '_id_' for ix in meta['indexes']), meta
print('ok')
"#;
    let py = Command::new("python3")
        .args(["-c", script, out_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(py.status.success(), "{}", String::from_utf8_lossy(&py.stderr));
}

#[test]
fn a_failed_conversion_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixtures().join("test.bar.archive")).unwrap();
    let cut = dir.path().join("cut.archive");
    std::fs::write(&cut, &bytes[..bytes.len() - 20]).unwrap();
    let target = dir.path().join("out");
    let out = tidemark(&["convert", cut.to_str().unwrap(), target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!target.exists());
    // Refuses to overwrite.
    let existing = dir.path().join("exists");
    std::fs::create_dir(&existing).unwrap();
    let out = tidemark(&[
        "convert",
        fixtures().join("test.bar.archive").to_str().unwrap(),
        existing.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
}
