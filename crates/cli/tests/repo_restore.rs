//! `tidemark backup` → `tidemark restore --repo` round trips through the real binary: a server
//! seeded by pymongo (an independent client) is backed up into a repository and restored into an
//! empty server, which must then look identical to pymongo (collection options, indexes,
//! documents byte for byte, `dbHash`). Also namespace renames, exports as a dump, and a damaged
//! chunk, which must fail the restore naming the namespace.

mod dump_support;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use dump_support::{Server, assert_same_snapshot, pymongo, restore_counts, snapshot, stderr};

/// Runs `tidemark` with the arguments and extra environment variables.
fn tidemark_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
    cmd.args(args).stdin(Stdio::null());
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "TIDEMARK_PASSWORD",
    ] {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn tidemark(args: &[&str]) -> Output {
    tidemark_env(args, &[])
}

fn ok(out: Output, what: &str) -> Output {
    assert!(out.status.success(), "{what} failed: {}", stderr(&out));
    out
}

/// Seeds a server: several types, collection options, secondary indexes, a view, an empty
/// collection, and enough data (about 6 MB) to span several chunks of the repository.
fn seed(uri: &str) {
    pymongo(
        uri,
        r#"
import datetime, decimal
from bson import Decimal128, Int64, ObjectId, Binary, Regex, Timestamp
db = client["shop"]
db.create_collection("orders", validator={"$jsonSchema": {"bsonType": "object", "required": ["qty"]}})
docs = []
for i in range(20000):
    docs.append({"_id": i, "qty": i * 2, "sku": "s%d" % (i % 97), "price": Decimal128("%d.25" % i),
                 "big": Int64(i) * 1000000007, "when": datetime.datetime(2024, 1, 1) + datetime.timedelta(seconds=i),
                 "oid": ObjectId(b"%012d" % i), "bin": Binary(bytes([i % 256]) * 16, 4),
                 "note": "n" * (i % 200), "tags": ["a", "b", "c"][: i % 4], "nested": {"x": i / 3.0, "r": Regex("^a", "i")}})
db.orders.insert_many(docs)
db.orders.create_index([("sku", 1), ("qty", -1)], name="sku_qty")
db.orders.create_index("qty", unique=True, name="qty_unique")
db.create_collection("log", capped=True, size=1 << 20)
db.log.insert_many([{"_id": i, "ts": Timestamp(1700000000 + i, 1)} for i in range(100)])
db.create_collection("big_orders", viewOn="orders", pipeline=[{"$match": {"qty": {"$gt": 100}}}])
db.create_collection("empty")
client["crm"]["people"].insert_many([{"name": "p%d" % i, "age": i % 90} for i in range(500)])
client["crm"]["people"].create_index("name", name="by_name", collation={"locale": "en", "strength": 2})
print("ok")
"#,
    );
}

/// Per database (outside admin/config/local), `dbHash`'s collection hashes, plus a SHA-256 of
/// every collection's raw documents in `_id` order as pymongo receives them.
fn hashes(uri: &str) -> String {
    pymongo(
        uri,
        r#"
import hashlib
from bson.raw_bson import RawBSONDocument
for name in sorted(client.list_database_names()):
    if name in ("admin", "config", "local"):
        continue
    db = client[name]
    h = db.command("dbHash")
    print(name, json.dumps(h["collections"], sort_keys=True))
    for spec in sorted(db.list_collections(filter={"type": "collection"}), key=lambda s: s["name"]):
        coll = db.get_collection(spec["name"], codec_options=bson.CodecOptions(document_class=RawBSONDocument))
        digest = hashlib.sha256()
        n = 0
        for d in coll.find({}).sort("_id", 1):
            digest.update(d.raw)
            n += 1
        print(name + "." + spec["name"], n, digest.hexdigest())
"#,
    )
}

struct Repo {
    _dir: tempfile::TempDir,
    url: String,
    pw: String,
}

fn repo_with_backup_of(uri: &str) -> Repo {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "correct horse\n").unwrap();
    let url = dir.path().join("repo").display().to_string();
    let pw = pw.display().to_string();
    ok(
        tidemark(&["repo", "init", "--repo", &url, "--password-file", &pw]),
        "repo init",
    );
    ok(
        tidemark(&["backup", "--repo", &url, "--password-file", &pw, "--uri", uri]),
        "backup",
    );
    Repo { _dir: dir, url, pw }
}

#[test]
fn backup_then_restore_into_an_empty_server_is_identical() {
    let source = Server::start();
    seed(&source.uri);
    let expected = snapshot(&source.uri);
    let expected_hashes = hashes(&source.uri);
    assert!(expected_hashes.contains("shop.orders 20000 "), "{expected_hashes}");
    let repo = repo_with_backup_of(&source.uri);

    let target = Server::start();
    let out = ok(
        tidemark(&[
            "restore",
            &target.uri,
            "--repo",
            &repo.url,
            "--password-file",
            &repo.pw,
            "--snapshot",
            "latest",
        ]),
        "restore --repo",
    );
    // 20000 orders + 100 log entries + 500 people; views have no documents.
    assert_eq!(restore_counts(&out), (20600, 0), "{}", stderr(&out));
    assert_same_snapshot(&snapshot(&target.uri), &expected);
    assert_eq!(hashes(&target.uri), expected_hashes);

    // --drop restores the same snapshot again over the restored data.
    let out = ok(
        tidemark(&[
            "restore",
            &target.uri,
            "--repo",
            &repo.url,
            "--password-file",
            &repo.pw,
            "--snapshot",
            "latest",
            "--drop",
        ]),
        "restore --repo --drop",
    );
    assert_eq!(restore_counts(&out), (20600, 0));
    assert_eq!(hashes(&target.uri), expected_hashes);
}

#[test]
fn restore_from_a_repository_with_filters_renames_and_exports() {
    let source = Server::start();
    seed(&source.uri);
    let expected_hashes = hashes(&source.uri);
    let repo = repo_with_backup_of(&source.uri);
    let base = [
        "--repo",
        repo.url.as_str(),
        "--password-file",
        repo.pw.as_str(),
        "--snapshot",
        "latest",
    ];

    // mongorestore's namespace options apply: only crm, renamed.
    let target = Server::start();
    let mut args = vec!["restore", target.uri.as_str()];
    args.extend(base);
    args.extend(["--nsInclude", "crm.*", "--nsFrom", "crm.*", "--nsTo", "crm2.*"]);
    let out = ok(tidemark(&args), "restore --repo --nsFrom");
    assert_eq!(restore_counts(&out), (500, 0), "{}", stderr(&out));
    let got = pymongo(
        &target.uri,
        "print(sorted(client.list_database_names()), client.crm2.people.count_documents({}), \
         sorted(ix['name'] for ix in client.crm2.people.list_indexes()))",
    );
    assert!(
        got.contains("'crm2'") && !got.contains("'shop'") && !got.contains("'crm'"),
        "{got}"
    );
    assert!(got.contains("500 ['_id_', 'by_name']"), "{got}");

    // --out writes a dump directory; restoring it with the ordinary restore gives the same data.
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("dump");
    let mut args = vec!["restore"];
    args.extend(base);
    args.extend(["--out", out_dir.to_str().unwrap()]);
    ok(tidemark(&args), "restore --repo --out");
    let orders = std::fs::read(out_dir.join("shop/orders.bson")).unwrap();
    let count = pymongo(
        &target.uri,
        &format!(
            "print(len(bson.decode_all(open({:?}, 'rb').read())))",
            out_dir.join("shop/orders.bson")
        ),
    );
    assert_eq!((count.trim(), orders.is_empty()), ("20000", false));
    // --archive writes a mongodump archive.
    let archive = dir.path().join("all.archive");
    let mut args = vec!["restore"];
    args.extend(base);
    let spec = format!("--archive={}", archive.display());
    args.push(&spec);
    ok(tidemark(&args), "restore --repo --archive");
    let fresh = Server::start();
    ok(
        tidemark(&["restore", &fresh.uri, &spec, "--quiet"]),
        "restore of the exported archive",
    );
    assert_eq!(hashes(&fresh.uri), expected_hashes);

    // A snapshot that does not exist: a clear error, nothing restored.
    let mut args = vec!["restore", fresh.uri.as_str()];
    args.extend(&base[..4]);
    args.extend(["--snapshot", "feedbeef"]);
    let out = tidemark(&args);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("feedbeef"), "{}", stderr(&out));
}

/// Flips bytes in the middle of every pack: the restore must fail and name the namespace.
#[test]
fn a_damaged_chunk_fails_the_restore_naming_the_namespace() {
    let source = Server::start();
    pymongo(
        &source.uri,
        "client.big.data.insert_many([{'_id': i, 'pad': 'x%d' % i * 40} for i in range(30000)])\nprint('ok')",
    );
    let repo = repo_with_backup_of(&source.uri);
    let mut damaged = 0;
    for pack in walk(&Path::new(&repo.url).join("data")) {
        let mut bytes = std::fs::read(&pack).unwrap();
        let mid = bytes.len() / 2;
        for b in &mut bytes[mid..mid + 16] {
            *b ^= 0x5a;
        }
        std::fs::write(&pack, bytes).unwrap();
        damaged += 1;
    }
    assert!(damaged > 0);
    let target = Server::start();
    let out = tidemark(&[
        "restore",
        &target.uri,
        "--repo",
        &repo.url,
        "--password-file",
        &repo.pw,
        "--snapshot",
        "latest",
    ]);
    assert!(!out.status.success(), "restore of a damaged snapshot succeeded");
    let text = stderr(&out);
    assert!(text.contains("big.data") && text.contains("damaged"), "{text}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The same round trip with the repository in S3 (moto): `--repo s3://bucket/prefix?endpoint=...`,
/// credentials from the environment. boto3 (an independent S3 client) sees the repository's objects.
#[test]
fn round_trip_through_s3() {
    let s3 = match tidemark_storage::testing::S3TestServer::start() {
        Ok(s) => s,
        Err(e) => panic!("S3 test server: {e}"),
    };
    let config = s3.config();
    let key = config.access_key_id.clone().unwrap_or_default();
    let secret = config.secret_access_key.clone().unwrap_or_default();
    let env = [
        ("AWS_ACCESS_KEY_ID", key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
        ("TIDEMARK_PASSWORD", "s3 password"),
    ];
    let url = s3.url("backups/prod");
    let source = Server::start();
    seed(&source.uri);
    let expected = snapshot(&source.uri);
    let expected_hashes = hashes(&source.uri);
    ok(tidemark_env(&["repo", "init", "--repo", &url], &env), "repo init on S3");
    ok(
        tidemark_env(&["backup", "--repo", &url, "--uri", &source.uri, "--tag", "s3"], &env),
        "backup to S3",
    );
    let listing = s3
        .boto3(
            "keys = [o['Key'] for p in s3.get_paginator('list_objects_v2').paginate(Bucket=bucket) for o in p.get('Contents', [])]\n\
             print(sorted({k.split('/')[2] for k in keys if k.startswith('backups/prod/')}))",
        )
        .unwrap();
    assert_eq!(listing.trim(), "['config', 'data', 'index', 'keys', 'snapshots']");

    let target = Server::start();
    let out = ok(
        tidemark_env(&["restore", &target.uri, "--repo", &url, "--snapshot", "latest"], &env),
        "restore from S3",
    );
    assert_eq!(restore_counts(&out), (20600, 0), "{}", stderr(&out));
    assert_same_snapshot(&snapshot(&target.uri), &expected);
    assert_eq!(hashes(&target.uri), expected_hashes);

    // Without credentials the error says what to set.
    let out = tidemark_env(
        &["restore", &target.uri, "--repo", &url, "--snapshot", "latest"],
        &[("TIDEMARK_PASSWORD", "s3 password")],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("AWS_ACCESS_KEY_ID"), "{}", stderr(&out));
}

/// `backup --from-archive` stores real mongodump archives (FORMATS.md §6): the plain archive and the
/// same bytes gzip'd by Python's `gzip` (detected, not declared) give the same content, which the
/// second backup deduplicates entirely; the restored collection is the fixture's one document. An
/// archive whose metadata is invalid JSON fails, naming the namespace, and stores no snapshot.
#[test]
fn real_archives_are_backed_up_plain_or_gzipped() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "correct horse\n").unwrap();
    let (url, pw) = (dir.path().join("repo").display().to_string(), pw.display().to_string());
    ok(
        tidemark(&["repo", "init", "--repo", &url, "--password-file", &pw]),
        "repo init",
    );
    let archive = dump_support::fixture("mongorestore/testdata/test.bar.archive");
    let gzipped = dir.path().join("test.bar.archive.gz");
    let zipped = Command::new("python3")
        .args([
            "-c",
            "import gzip, sys; open(sys.argv[2], 'wb').write(gzip.compress(open(sys.argv[1], 'rb').read()))",
        ])
        .arg(&archive)
        .arg(&gzipped)
        .status()
        .unwrap();
    assert!(zipped.success());
    let backup = |path: &Path| {
        let path = path.display().to_string();
        tidemark(&[
            "backup",
            "--repo",
            &url,
            "--password-file",
            &pw,
            "--from-archive",
            &path,
            "--json",
        ])
    };
    let summary = |out: Output| -> serde_json::Value {
        serde_json::from_slice(&ok(out, "backup --from-archive").stdout).unwrap()
    };
    let plain = summary(backup(&archive));
    // test.bar (1 document) and admin.system.version (1 document).
    assert_eq!(
        (plain["namespaces"].as_u64(), plain["documents"].as_u64()),
        (Some(2), Some(2)),
        "{plain}"
    );
    let zipped = summary(backup(&gzipped));
    assert_eq!(zipped["documents"], plain["documents"], "{zipped}");
    assert_eq!(zipped["new_bytes"].as_u64(), Some(0), "{zipped}");
    assert_eq!(zipped["total_bytes"], plain["total_bytes"], "{zipped}");

    let target = Server::start();
    ok(
        tidemark(&[
            "restore",
            &target.uri,
            "--repo",
            &url,
            "--password-file",
            &pw,
            "--snapshot",
            "latest",
        ]),
        "restore --repo",
    );
    let docs = pymongo(
        &target.uri,
        "print([sorted(d.keys()) + [d['foo']] for d in client['test']['bar'].find()])",
    );
    assert_eq!(docs.trim(), "[['_id', 'foo', 'bar']]");

    let bad = dump_support::fixture("mongorestore/testdata/bad-format.archive");
    let out = backup(&bad);
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(
        message.contains("test.ixtest") && message.contains("bad-format.archive"),
        "{message}"
    );
    let listed = ok(
        tidemark(&["snapshots", "--repo", &url, "--password-file", &pw, "--json"]),
        "snapshots",
    );
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
}

/// When the repository fails while a backup streams from the server, the backup stops with the
/// repository's error (naming the object it could not write), not the dump's view of it, exits 1
/// and commits no snapshot.
#[test]
fn a_repository_failure_during_a_backup_is_reported_and_commits_nothing() {
    let source = Server::start();
    seed(&source.uri);
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "correct horse\n").unwrap();
    let root = dir.path().join("repo");
    let (url, pw) = (root.display().to_string(), pw.display().to_string());
    ok(
        tidemark(&["repo", "init", "--repo", &url, "--password-file", &pw]),
        "repo init",
    );
    // Packs go under data/: a file in its place makes every pack write fail (even as root).
    let _ = std::fs::remove_dir_all(root.join("data"));
    std::fs::write(root.join("data"), b"not a directory").unwrap();
    let out = tidemark(&["backup", "--repo", &url, "--password-file", &pw, "--uri", &source.uri]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(message.contains("data/") && !message.contains("receiver"), "{message}");
    std::fs::remove_file(root.join("data")).unwrap();
    let listed = ok(
        tidemark(&["snapshots", "--repo", &url, "--password-file", &pw, "--json"]),
        "snapshots",
    );
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed}");
}
