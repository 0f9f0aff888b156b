//! `tidemark dump` → `tidemark restore` round trips against `tidemark-server`, in directory and
//! archive modes, with and without gzip. The source is seeded from a real mongodump fixture and
//! with pymongo (collection options, secondary indexes, a view); the restored server must look
//! identical to pymongo, which is a client we did not write.

mod dump_support;

use dump_support::{
    Server, assert_same_snapshot, check_archive, fixture, pymongo, restore_counts, snapshot, stderr, tidemark,
};

fn seed(uri: &str) {
    let out = tidemark(&[
        "restore",
        uri,
        fixture("mongorestore/testdata/testdirs").to_str().unwrap(),
        "-j1",
        "--numInsertionWorkersPerCollection",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // FORMATS.md 6.2: a full restore of testdirs restores 110 documents.
    assert_eq!(restore_counts(&out), (110, 0));
    pymongo(
        uri,
        r#"
db = client["shop"]
db.create_collection("orders", validator={"$jsonSchema": {"bsonType": "object", "required": ["qty"]}})
db.orders.insert_many([{"_id": i, "qty": i * 2, "sku": "s%d" % (i % 7), "tags": ["a", "b"][: i % 3]} for i in range(250)])
db.orders.create_index([("sku", 1), ("qty", -1)], name="sku_qty")
db.orders.create_index("qty", unique=True, name="qty_unique")
db.create_collection("big_orders", viewOn="orders", pipeline=[{"$match": {"qty": {"$gt": 100}}}])
db.create_collection("empty")
print("ok")
"#,
    );
}

fn round_trip(dump_args: &[&str], restore_args: &[&str]) {
    let source = Server::start();
    seed(&source.uri);
    let expected = snapshot(&source.uri);
    assert!(
        expected.contains("shop.orders {") && expected.contains("shop.big_orders {"),
        "{expected}"
    );

    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["dump", source.uri.as_str()];
    let joined: Vec<String> = dump_args
        .iter()
        .map(|a| a.replace("{dir}", dir.path().to_str().unwrap()))
        .collect();
    args.extend(joined.iter().map(String::as_str));
    let out = tidemark(&args);
    assert!(out.status.success(), "dump {dump_args:?}: {}", stderr(&out));

    let target = Server::start();
    let mut args = vec!["restore", target.uri.as_str()];
    let joined: Vec<String> = restore_args
        .iter()
        .map(|a| a.replace("{dir}", dir.path().to_str().unwrap()))
        .collect();
    args.extend(joined.iter().map(String::as_str));
    let out = tidemark(&args);
    assert!(out.status.success(), "restore {restore_args:?}: {}", stderr(&out));
    // 110 fixture documents + 250 orders; the view has no data of its own.
    assert_eq!(restore_counts(&out), (360, 0), "{}", stderr(&out));
    assert_same_snapshot(&snapshot(&target.uri), &expected);
}

#[test]
fn directory_round_trip() {
    round_trip(&["-o", "{dir}/out"], &["{dir}/out"]);
}

#[test]
fn directory_gzip_round_trip() {
    round_trip(&["--out={dir}/out", "--gzip"], &["--dir", "{dir}/out", "--gzip"]);
}

#[test]
fn archive_round_trip() {
    round_trip(
        &["--archive={dir}/dump.archive", "-j", "2"],
        &["--archive={dir}/dump.archive"],
    );
}

#[test]
fn archive_gzip_round_trip() {
    round_trip(
        &["--archive={dir}/dump.archive.gz", "--gzip"],
        &["--archive={dir}/dump.archive.gz", "--gzip"],
    );
}

#[test]
fn dump_directory_layout_matches_mongodump() {
    let source = Server::start();
    seed(&source.uri);
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("dump");
    let out = tidemark(&[
        "dump",
        "--uri",
        &source.uri,
        "-d",
        "shop",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shop = out_dir.join("shop");
    // FORMATS.md 1.1/1.4/1.7: views get metadata only, empty collections an empty .bson, the
    // prelude of a --db dump goes inside the database directory.
    assert!(shop.join("orders.bson").is_file() && shop.join("orders.metadata.json").is_file());
    assert!(shop.join("big_orders.metadata.json").is_file() && !shop.join("big_orders.bson").exists());
    assert_eq!(std::fs::metadata(shop.join("empty.bson")).unwrap().len(), 0);
    assert!(shop.join("prelude.json").is_file() && !out_dir.join("prelude.json").exists());
    // The data file is the plain concatenation of the documents: pymongo's decoder reads it.
    let count = pymongo(
        &source.uri,
        &format!(
            "print(len(bson.decode_all(open({:?}, 'rb').read())))",
            shop.join("orders.bson").to_str().unwrap()
        ),
    );
    assert_eq!(count.trim(), "250");
    let meta = std::fs::read_to_string(shop.join("big_orders.metadata.json")).unwrap();
    assert!(
        meta.starts_with(r#"{"options":{"viewOn":"orders","pipeline":["#),
        "{meta}"
    );
    assert!(
        meta.ends_with(r#""indexes":[],"collectionName":"big_orders","type":"view"}"#),
        "{meta}"
    );
}

#[test]
fn dump_query_and_single_collection_to_stdout() {
    let source = Server::start();
    seed(&source.uri);
    let dir = tempfile::tempdir().unwrap();
    let out = tidemark(&[
        "dump",
        &source.uri,
        "-d",
        "shop",
        "-c",
        "orders",
        "-q",
        r#"{"qty": {"$lt": 10}}"#,
        "--out",
        "-",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let path = dir.path().join("orders.bson");
    std::fs::write(&path, &out.stdout).unwrap();
    let ids = pymongo(
        &source.uri,
        &format!(
            "print([d['_id'] for d in bson.decode_all(open({:?}, 'rb').read())])",
            path.to_str().unwrap()
        ),
    );
    assert_eq!(ids.trim(), "[0, 1, 2, 3, 4]");
}

#[test]
fn large_collections_are_split_by_id_ranges() {
    let source = Server::start();
    pymongo(
        &source.uri,
        r#"
client.big.oids.insert_many([{"n": i} for i in range(3000)])
client.big.mixed.insert_many([{"_id": i} for i in range(1500)] + [{"_id": "s%d" % i} for i in range(1500)])
print("ok")
"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let out = tidemark(&[
        "dump",
        &source.uri,
        "-d",
        "big",
        "-o",
        out_dir.to_str().unwrap(),
        "-j",
        "4",
        "--split-threshold",
        "1000",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Only the ObjectId collection can be split soundly.
    assert_eq!(
        summary["split"],
        serde_json::json!([{"namespace": "big.oids", "ranges": 4}]),
        "{summary}"
    );
    assert_eq!(summary["documents"], 6000);
    // Every document exactly once, whether the collection could be split (ObjectIds) or not
    // (two _id types).
    for coll in ["oids", "mixed"] {
        let file = out_dir.join("big").join(format!("{coll}.bson"));
        let stats = pymongo(
            &source.uri,
            &format!(
                "docs = bson.decode_all(open({:?}, 'rb').read())\nids = [json_util.dumps(d['_id']) for d in docs]\nprint(len(ids), len(set(ids)), client.big[{coll:?}].count_documents({{}}))",
                file.to_str().unwrap()
            ),
        );
        assert_eq!(stats.trim(), "3000 3000 3000", "{coll}");
    }
    let target = Server::start();
    let out = tidemark(&[
        "restore",
        &target.uri,
        out_dir.to_str().unwrap(),
        "--numInsertionWorkersPerCollection",
        "3",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(restore_counts(&out), (6000, 0));
    assert_same_snapshot(&snapshot(&target.uri), &snapshot(&source.uri));
}

#[test]
fn archive_structure_passes_an_independent_reader() {
    let source = Server::start();
    seed(&source.uri);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("dump.archive");
    // To stdout, as `--archive` without a value does; progress must stay on stderr.
    let out = tidemark(&["dump", &source.uri, "--archive", "-j", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::write(&archive, &out.stdout).unwrap();
    let listing = check_archive(&source.uri, &archive);
    assert_eq!(
        listing.lines().collect::<Vec<_>>(),
        [
            "db1.c1 100",
            "db1.c2 0",
            "db1.c3 0",
            "db1.c4 10",
            "db2.c1 0",
            "shop.big_orders 0",
            "shop.empty 0",
            "shop.orders 250"
        ]
    );
    // And restore it from stdin.
    let target = Server::start();
    let out = dump_support::tidemark_stdin(&["restore", &target.uri, "--archive"], Some(&archive));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(restore_counts(&out), (360, 0));
    assert_same_snapshot(&snapshot(&target.uri), &snapshot(&source.uri));
}

#[test]
fn views_as_collections_and_excludes() {
    let source = Server::start();
    seed(&source.uri);
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let out = tidemark(&[
        "dump",
        &source.uri,
        "-d",
        "shop",
        "--viewsAsCollections",
        "-o",
        out_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // FORMATS.md 1.4: only views, dumped as data; metadata without viewOn/pipeline.
    let shop = out_dir.join("shop");
    assert!(!shop.join("orders.bson").exists());
    let meta = std::fs::read_to_string(shop.join("big_orders.metadata.json")).unwrap();
    assert_eq!(meta, r#"{"indexes":[],"collectionName":"big_orders","type":"view"}"#);
    let n = pymongo(
        &source.uri,
        &format!(
            "print(len(bson.decode_all(open({:?}, 'rb').read())))",
            shop.join("big_orders.bson").to_str().unwrap()
        ),
    );
    assert_eq!(n.trim(), "199");

    let out_dir = dir.path().join("out2");
    let out = tidemark(&[
        "dump",
        &source.uri,
        "--db",
        "db1",
        "--excludeCollection",
        "c1",
        "--excludeCollectionsWithPrefix",
        "c3",
        "-o",
        out_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut files: Vec<String> = std::fs::read_dir(out_dir.join("db1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "c2.bson",
            "c2.metadata.json",
            "c4.bson",
            "c4.metadata.json",
            "prelude.json"
        ]
    );
}

#[test]
fn dump_of_a_restored_mongodump_fixture_reproduces_its_files() {
    // collMod_ttl_index was written by a real mongodump: restoring it and dumping it again must
    // give the same data bytes and the same metadata text (the UUID aside: the server assigns a
    // new one).
    let server = Server::start();
    let fixture_dir = fixture("mongorestore/testdata/collMod_ttl_index");
    let out = tidemark(&[
        "restore",
        &server.uri,
        fixture_dir.to_str().unwrap(),
        "--nsInclude",
        "mongodump_test_db.*",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(restore_counts(&out), (10, 0));
    let dir = tempfile::tempdir().unwrap();
    let out = tidemark(&[
        "dump",
        &server.uri,
        "-d",
        "mongodump_test_db",
        "-o",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ours = dir.path().join("mongodump_test_db");
    let theirs = fixture_dir.join("mongodump_test_db");
    assert_eq!(
        std::fs::read(ours.join("coll1.bson")).unwrap(),
        std::fs::read(theirs.join("coll1.bson")).unwrap()
    );
    let uuid = strip_uuid(&std::fs::read_to_string(ours.join("coll1.metadata.json")).unwrap());
    let expected = strip_uuid(&std::fs::read_to_string(theirs.join("coll1.metadata.json")).unwrap());
    assert_eq!(uuid, expected);
}

/// Replaces the 32 hex digits of `"uuid":"…"` with a placeholder.
fn strip_uuid(text: &str) -> String {
    match text.find("\"uuid\":\"") {
        Some(at) => {
            let start = at + 8;
            format!("{}<uuid>{}", &text[..start], &text[start + 32..])
        }
        None => text.to_owned(),
    }
}

#[test]
fn dump_dry_run_and_missing_collection() {
    let source = Server::start();
    seed(&source.uri);
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let out = tidemark(&["dump", &source.uri, "--dryRun", "-o", out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan = stderr(&out);
    assert!(
        plan.contains("dump shop.orders (collection): 250 document(s)"),
        "{plan}"
    );
    assert!(plan.contains("dump shop.big_orders (view): metadata only"), "{plan}");
    assert!(!out_dir.exists(), "a dry run writes nothing");

    // FORMATS.md 1.1: a nonexistent -d X -c Y exits 0 without writing anything.
    let out = tidemark(&[
        "dump",
        &source.uri,
        "-d",
        "shop",
        "-c",
        "nope",
        "-o",
        out_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!out_dir.exists());
}

#[test]
fn users_and_roles_round_trip() {
    let source = Server::start();
    pymongo(
        &source.uri,
        "client.shop.command('createRole', 'reader', privileges=[{'resource': {'db': 'shop', 'collection': ''}, 'actions': ['find']}], roles=[])\nclient.shop.command('createUser', 'alice', pwd='pw', roles=['reader'])\nclient.shop.items.insert_one({'a': 1})\nprint('ok')",
    );
    let users = "print(sorted((u['user'], u['db'], sorted(r['role'] for r in u['roles'])) for u in client.shop.command('usersInfo')['users']))";
    let expected = pymongo(&source.uri, users);
    assert_eq!(expected.trim(), "[('alice', 'shop', ['reader'])]");
    let dir = tempfile::tempdir().unwrap();
    // A full dump (admin.system.users) and a per-database dump (--dumpDbUsersAndRoles).
    let full = dir.path().join("full");
    let out = tidemark(&["dump", &source.uri, "-o", full.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let per_db = dir.path().join("db");
    let out = tidemark(&[
        "dump",
        &source.uri,
        "-d",
        "shop",
        "--dumpDbUsersAndRoles",
        "-o",
        per_db.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        per_db.join("shop/$admin.system.users.bson").is_file()
            && per_db.join("shop/$admin.system.roles.bson").is_file()
    );

    let target = Server::start();
    let out = tidemark(&["restore", &target.uri, full.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(pymongo(&target.uri, users), expected);
    // No temporary collections are left behind.
    let admin = pymongo(
        &target.uri,
        "print(sorted(n for n in client.admin.list_collection_names() if n.startswith('temp')))",
    );
    assert_eq!(admin.trim(), "[]");

    let target = Server::start();
    let out = tidemark(&[
        "restore",
        &target.uri,
        "-d",
        "shop",
        "--restoreDbUsersAndRoles",
        per_db.join("shop").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(pymongo(&target.uri, users), expected);
}

/// A `Timestamp(0, 0)` in a top-level field survives dump and restore: mongod (and
/// tidemark-server, 7.0.14) replaces an empty timestamp in an inserted document's top-level field
/// by the current time unless the insert says `bypassEmptyTsReplacement: true`, which the restore
/// sends as mongorestore does (FORMATS.md §3.2). Checked through pymongo on both servers.
#[test]
fn zero_timestamps_survive_dump_and_restore() {
    let source = Server::start();
    let script = r#"
from bson import Timestamp
db = client["ts"]
docs = [{"_id": 1, "t": Timestamp(0, 0), "nested": {"t": Timestamp(0, 0)}}, {"_id": 2, "t": Timestamp(5, 6)}]
db.command({"insert": "c", "documents": docs, "bypassEmptyTsReplacement": True})
db.c.insert_one({"_id": 3, "t": Timestamp(0, 0)})
print(sorted((d["_id"], d["t"].time, d["t"].inc) for d in db.c.find()))
"#;
    let seeded = pymongo(&source.uri, script);
    // Without the option the server replaced document 3's timestamp, as mongod does.
    assert!(seeded.starts_with("[(1, 0, 0), (2, 5, 6), (3, "), "{seeded}");
    assert!(!seeded.contains("(3, 0, 0)"), "{seeded}");
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("dump");
    let out = tidemark(&["dump", "--uri", &source.uri, "-o", out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let target = Server::start();
    let out = tidemark(&["restore", "--uri", &target.uri, out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let read = r#"
db = client["ts"]
print(sorted((d["_id"], d["t"].time, d["t"].inc) for d in db.c.find()), db.c.find_one({"_id": 1})["nested"]["t"])
"#;
    let restored = pymongo(&target.uri, read);
    let source_view = pymongo(&source.uri, read);
    assert_eq!(restored, source_view);
    assert!(
        restored.contains("(1, 0, 0)") && restored.contains("Timestamp(0, 0)"),
        "{restored}"
    );
}
