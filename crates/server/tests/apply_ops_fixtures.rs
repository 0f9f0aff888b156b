//! `applyOps` with the real oplog fixtures of mongo-tools, sent the way mongorestore sends them (one entry per
//! command, FORMATS.md 3.3), through the official Rust driver; the end states are those FORMATS.md section 6
//! gives for the real tools. Also MongoDB's error codes for bad entries, and idempotent re-application.

use std::path::PathBuf;
use std::time::Duration;

use mongodb::bson::{Bson, Document, RawDocumentBuf, doc, spec::BinarySubtype};
use mongodb::options::ClientOptions;
use mongodb::{Client, Database};
use tidemark_server::ServerConfig;
use tidemark_server::testing::{TestServer, start_test_server};

fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/mongo-tools/mongorestore/testdata")
        .join(rel)
}

/// The documents of a BSON file (concatenated documents, as mongodump writes them).
fn read_bson(rel: &str) -> Vec<Document> {
    let bytes = std::fs::read(testdata(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"));
    let mut out = Vec::new();
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        out.push(Document::from_reader(&mut rest).unwrap_or_else(|e| panic!("decode {rel}: {e}")));
    }
    out
}

async fn start() -> (TestServer, Client) {
    let server = start_test_server(ServerConfig::ephemeral()).await;
    let mut opts = ClientOptions::parse(server.uri()).await.expect("uri");
    opts.server_selection_timeout = Some(Duration::from_secs(5));
    opts.heartbeat_freq = Some(Duration::from_millis(500));
    (server, Client::with_options(opts).expect("client"))
}

/// mongorestore's handling of one entry (FORMATS.md 3.3): no-ops and index-build bookkeeping are skipped,
/// `ui` is removed unless `preserve_uuid`, and only the re-encoded fields are kept.
fn restore_form(entry: &Document, preserve_uuid: bool) -> Option<Document> {
    let op = entry.get_str("op").ok()?;
    if op == "n" {
        return None;
    }
    let mut out = Document::new();
    for k in [
        "ts",
        "t",
        "v",
        "op",
        "ns",
        "o",
        "o2",
        "ui",
        "lsid",
        "txnNumber",
        "prevOpTime",
        "multiOpType",
    ] {
        if let Some(v) = entry.get(k) {
            if k == "ui" && !preserve_uuid {
                continue;
            }
            out.insert(k, v.clone());
        }
    }
    if !preserve_uuid
        && let Ok(o) = out.get_document_mut("o")
        && let Ok(ops) = o.get_array_mut("applyOps")
    {
        for inner in ops.iter_mut() {
            if let Bson::Document(d) = inner {
                d.remove("ui");
            }
        }
    }
    Some(out)
}

async fn apply(client: &Client, entry: Document, bypass: bool) -> mongodb::error::Result<Document> {
    client
        .database("admin")
        .run_command(doc! { "applyOps": [entry], "bypassDocumentValidation": bypass })
        .await
}

/// Replays a fixture oplog entry by entry, as mongorestore does; returns the first error.
async fn replay(client: &Client, rel: &str, preserve_uuid: bool, bypass: bool) -> Result<usize, mongodb::error::Error> {
    let mut n = 0;
    for e in read_bson(rel) {
        if let Some(entry) = restore_form(&e, preserve_uuid) {
            let reply = apply(client, entry, bypass).await?;
            assert_eq!(reply.get_i32("applied"), Ok(1), "{reply}");
            assert_eq!(reply.get_array("results").unwrap(), &vec![Bson::Boolean(true)]);
            n += 1;
        }
    }
    Ok(n)
}

fn code(e: &mongodb::error::Error) -> Option<i32> {
    match e.kind.as_ref() {
        mongodb::error::ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

async fn docs(db: &Database, coll: &str) -> Vec<Document> {
    let mut c = db.collection::<Document>(coll).find(doc! {}).await.expect("find");
    let mut out = Vec::new();
    while c.advance().await.expect("advance") {
        out.push(c.deserialize_current().expect("doc"));
    }
    out
}

async fn indexes(db: &Database, coll: &str) -> Vec<Document> {
    let reply = db.run_command(doc! { "listIndexes": coll }).await.expect("listIndexes");
    reply
        .get_document("cursor")
        .unwrap()
        .get_array("firstBatch")
        .unwrap()
        .iter()
        .map(|d| d.as_document().unwrap().clone())
        .collect()
}

/// `test.foo` as in `coll_with_index` / `coll_with_ttl_index`: the document of `foo.bson` and the `f_1` index
/// of its metadata (`{f: 1}`, with `expireAfterSeconds: 1000` in the TTL variant).
async fn seed_foo(client: &Client, dir: &str, ttl: bool) {
    let db = client.database("test");
    for d in read_bson(&format!("{dir}/test/foo.bson")) {
        db.collection::<Document>("foo").insert_one(d).await.unwrap();
    }
    let mut spec = doc! { "key": { "f": 1 }, "name": "f_1" };
    if ttl {
        spec.insert("expireAfterSeconds", 1000);
    }
    db.run_command(doc! { "createIndexes": "foo", "indexes": [spec] })
        .await
        .unwrap();
}

#[tokio::test]
async fn oplogdump_with_nested_apply_ops_and_preserved_uuid() {
    let (_s, client) = start().await;
    let entries = read_bson("oplogdump/oplog.bson");
    let ui = entries[0].get("ui").cloned().unwrap();
    // `--preserveUUID --drop`: the collection is created with the dump's UUID, then gets its 5 documents.
    let create = doc! { "op": "c", "ns": "db1.$cmd", "ui": ui.clone(), "o": { "create": "c1" } };
    apply(&client, create, false).await.expect("create with ui");
    let db1 = client.database("db1");
    for d in read_bson("oplogdump/db1/c1.bson") {
        db1.collection::<Document>("c1").insert_one(d).await.unwrap();
    }
    let n = replay(&client, "oplogdump/oplog.bson", true, false)
        .await
        .expect("replay");
    assert_eq!(n, 3);
    let got = docs(&db1, "c1").await;
    let xs: Vec<i32> = got.iter().map(|d| d.get_i32("x").unwrap()).collect();
    assert_eq!(
        xs,
        (1451..=1460).collect::<Vec<_>>(),
        "TestOplogRestore: db1.c1 ends with 10 documents"
    );
    let list = db1.run_command(doc! { "listCollections": 1 }).await.unwrap();
    let info = list.get_document("cursor").unwrap().get_array("firstBatch").unwrap()[0]
        .as_document()
        .unwrap()
        .get_document("info")
        .unwrap()
        .clone();
    let Some(Bson::Binary(uuid)) = info.get("uuid") else {
        panic!("no uuid in {info}")
    };
    assert_eq!(uuid.subtype, BinarySubtype::Uuid);
    assert_eq!(hex(&uuid.bytes), "699f503df64b4aa8a484a8052046fa3a");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test]
async fn index_and_collection_commands_from_fixtures() {
    let (_s, client) = start().await;
    let test = client.database("test");

    seed_foo(&client, "coll_with_index", false).await;
    replay(&client, "oplogs/bson/drop_index.bson", false, false)
        .await
        .expect("drop_index");
    assert_eq!(docs(&test, "foo").await.len(), 1);
    let names: Vec<String> = indexes(&test, "foo")
        .await
        .iter()
        .map(|i| i.get_str("name").unwrap().to_string())
        .collect();
    assert_eq!(names, ["_id_"]);

    replay(&client, "oplogs/bson/drop_collection.bson", false, false)
        .await
        .expect("drop_collection");
    assert!(test.list_collection_names().await.unwrap().is_empty());

    seed_foo(&client, "coll_with_index", false).await;
    replay(&client, "oplogs/bson/drop_db.bson", false, false)
        .await
        .expect("drop_db");
    assert!(
        !client
            .list_database_names()
            .await
            .unwrap()
            .contains(&"test".to_string())
    );

    // create_index.bson replaces the TTL spec of f_1 with the oplog's spec.
    seed_foo(&client, "coll_with_ttl_index", true).await;
    replay(&client, "oplogs/bson/create_index.bson", false, false)
        .await
        .expect("create_index");
    let idx = indexes(&test, "foo").await;
    assert_eq!(idx.len(), 2);
    let f1 = idx.iter().find(|i| i.get_str("name") == Ok("f_1")).unwrap();
    assert_eq!(f1, &doc! { "v": 2, "key": { "f": 1.0 }, "name": "f_1" });
    test.drop().await.unwrap();

    seed_foo(&client, "coll_with_ttl_index", true).await;
    replay(&client, "oplogs/bson/collMod.bson", false, false)
        .await
        .expect("collMod");
    let f1 = indexes(&test, "foo")
        .await
        .into_iter()
        .find(|i| i.get_str("name") == Ok("f_1"))
        .unwrap();
    assert_eq!(f1.get("expireAfterSeconds").and_then(Bson::as_i64), Some(3600), "{f1}");
    test.drop().await.unwrap();

    seed_foo(&client, "coll_with_ttl_index", true).await;
    replay(&client, "oplogs/bson/collMod_with_hidden.bson", false, false)
        .await
        .expect("collMod_with_hidden");
    let f1 = indexes(&test, "foo")
        .await
        .into_iter()
        .find(|i| i.get_str("name") == Ok("f_1"))
        .unwrap();
    assert_eq!(f1.get("expireAfterSeconds").and_then(Bson::as_i64), Some(3600), "{f1}");
    assert_eq!(f1.get("hidden"), Some(&Bson::Boolean(true)));

    // collMod_indexUniqueness.bson: coll1 ends with 5 indexes, every non-_id one with prepareUnique: true.
    replay(&client, "oplogs/bson/collMod_indexUniqueness.bson", false, false)
        .await
        .expect("uniqueness");
    let idx = indexes(&client.database("mongodump_test_db"), "coll1").await;
    assert_eq!(idx.len(), 5, "{idx:?}");
    for i in idx.iter().filter(|i| i.get_str("name") != Ok("_id_")) {
        assert_eq!(i.get("prepareUnique"), Some(&Bson::Boolean(true)), "{i}");
    }
}

#[tokio::test]
async fn vectored_inserts_and_document_validation() {
    let (_s, client) = start().await;
    let db = client.database("mongodump_test_db");
    db.create_collection("coll1").await.unwrap();
    replay(&client, "oplogs/bson/vectored_insert.bson", false, false)
        .await
        .expect("vectored insert");
    let raw: Vec<RawDocumentBuf> = {
        let mut c = db.collection::<RawDocumentBuf>("coll1").find(doc! {}).await.unwrap();
        let mut v = Vec::new();
        while c.advance().await.unwrap() {
            v.push(c.deserialize_current().unwrap());
        }
        v
    };
    let expected = [doc! { "_id": 100, "a": 1 }, doc! { "_id": 200, "a": 2 }];
    let expected: Vec<RawDocumentBuf> = expected
        .iter()
        .map(|d| RawDocumentBuf::from_document(d).unwrap())
        .collect();
    assert_eq!(
        raw, expected,
        "coll1 must be byte-equal to [{{_id:100,a:1}},{{_id:200,a:2}}] (int32)"
    );
    db.drop().await.unwrap();

    db.create_collection("coll1").await.unwrap();
    replay(&client, "oplogs/bson/linked_vectored_inserts.bson", false, false)
        .await
        .expect("linked");
    let got = docs(&db, "coll1").await;
    let pairs: Vec<(i32, i32)> = got
        .iter()
        .map(|d| (d.get_i32("_id").unwrap(), d.get_i32("a").unwrap()))
        .collect();
    assert_eq!(pairs, [(300, 3), (400, 4), (500, 5), (600, 6), (700, 7)]);
    db.drop().await.unwrap();

    // bypassDocumentValidation.bson: without the flag the first invalid insert fails (121) and stops there.
    let err = replay(&client, "oplogs/bson/bypassDocumentValidation.bson", false, false)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(121), "{err}");
    let got = docs(&db, "coll1").await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].get_str("testField"), Ok("valid"));
    db.drop().await.unwrap();
    replay(&client, "oplogs/bson/bypassDocumentValidation.bson", false, true)
        .await
        .expect("with bypass");
    assert_eq!(docs(&db, "coll1").await.len(), 3);
}

#[tokio::test]
async fn bad_entries_fail_with_mongodb_codes_and_stop_there() {
    let (_s, client) = start().await;
    let db = client.database("e");
    db.create_collection("c").await.unwrap();
    let admin = client.database("admin");
    let run = |ops: Vec<Document>| {
        let admin = admin.clone();
        async move { admin.run_command(doc! { "applyOps": ops }).await }
    };
    let cases = [
        (doc! { "op": "x", "ns": "e.c", "o": { "_id": 9 } }, 2),
        (doc! { "op": "i", "ns": "nodot", "o": { "_id": 9 } }, 73),
        (doc! { "op": "i", "ns": "", "o": { "_id": 9 } }, 73),
        (doc! { "op": "i", "ns": "e.missing", "o": { "_id": 9 } }, 26),
        (doc! { "op": 12345, "ns": "e.c" }, 14),
        (doc! { "op": "c", "ns": "e.$cmd", "o": {} }, 2),
    ];
    for (i, (bad, want)) in cases.into_iter().enumerate() {
        let base = i32::try_from(i).unwrap() * 10;
        let ops = vec![
            doc! { "op": "i", "ns": "e.c", "o": { "_id": base } },
            bad.clone(),
            doc! { "op": "i", "ns": "e.c", "o": { "_id": base + 1 } },
        ];
        let err = run(ops).await.unwrap_err();
        assert_eq!(code(&err), Some(want), "{bad}: {err}");
        let mongodb::error::ErrorKind::Command(_) = err.kind.as_ref() else {
            unreachable!()
        };
        let got = docs(&db, "c").await;
        assert!(
            got.iter().any(|d| d.get_i32("_id") == Ok(base)),
            "the entry before {bad} is applied"
        );
        assert!(
            !got.iter().any(|d| d.get_i32("_id") == Ok(base + 1)),
            "nothing after {bad} is applied"
        );
    }
    // The failure reply says how far it got.
    let reply = admin
        .run_command(doc! { "applyOps": [{ "op": "i", "ns": "e.c", "o": { "_id": 100 } }, { "op": "z", "ns": "e.c" }] })
        .await
        .unwrap_err();
    let mongodb::error::ErrorKind::Command(_) = reply.kind.as_ref() else {
        panic!("{reply}")
    };
    let raw = client
        .database("admin")
        .run_command(doc! { "applyOps": "not an array" })
        .await
        .unwrap_err();
    assert_eq!(code(&raw), Some(14));
    // Only on admin.
    let err = db.run_command(doc! { "applyOps": [] }).await.unwrap_err();
    assert_eq!(code(&err), Some(13));
    // An empty list applies nothing and succeeds.
    let ok = admin.run_command(doc! { "applyOps": [] }).await.unwrap();
    assert_eq!(ok.get_i32("applied"), Ok(0));
}

#[tokio::test]
async fn reapplying_entries_is_harmless() {
    let (_s, client) = start().await;
    let db = client.database("r");
    db.create_collection("c").await.unwrap();
    let ops = vec![
        doc! { "op": "i", "ns": "r.c", "o": { "_id": 1, "a": 1 } },
        doc! { "op": "i", "ns": "r.c", "o": { "_id": 2, "a": 1 } },
        doc! { "op": "u", "ns": "r.c", "o": { "$v": 2, "diff": { "u": { "a": 5 }, "i": { "b": true } } }, "o2": { "_id": 1 } },
        doc! { "op": "u", "ns": "r.c", "o": { "$set": { "c": 3 } }, "o2": { "_id": 1 } },
        doc! { "op": "d", "ns": "r.c", "o": { "_id": 2 } },
        doc! { "op": "u", "ns": "r.c", "o": { "$v": 2, "diff": { "u": { "a": 0 } } }, "o2": { "_id": 42 } },
        doc! { "op": "n", "ns": "", "o": { "msg": "noop" } },
    ];
    for _ in 0..2 {
        let reply = client
            .database("admin")
            .run_command(doc! { "applyOps": ops.clone() })
            .await
            .expect("applyOps");
        assert_eq!(reply.get_i32("applied"), Ok(7));
        assert_eq!(docs(&db, "c").await, vec![doc! { "_id": 1, "a": 5, "b": true, "c": 3 }]);
    }
    // Replacement form of `u`.
    client
        .database("admin")
        .run_command(
            doc! { "applyOps": [{ "op": "u", "ns": "r.c", "o": { "_id": 1, "only": 1 }, "o2": { "_id": 1 } }] },
        )
        .await
        .unwrap();
    assert_eq!(docs(&db, "c").await, vec![doc! { "_id": 1, "only": 1 }]);
    // Commands: rename with dropTarget, create with a UUID, dropDatabase.
    db.create_collection("d").await.unwrap();
    let uuid = Bson::Binary(mongodb::bson::Binary {
        subtype: BinarySubtype::Uuid,
        bytes: vec![7; 16],
    });
    client
        .database("admin")
        .run_command(doc! { "applyOps": [
            { "op": "c", "ns": "r.$cmd", "o": { "renameCollection": "r.c", "to": "r.d", "stayTemp": false, "dropTarget": true } },
            { "op": "c", "ns": "r.$cmd", "ui": uuid.clone(), "o": { "create": "u" } },
        ] })
        .await
        .unwrap();
    let mut names = db.list_collection_names().await.unwrap();
    names.sort();
    assert_eq!(names, ["d", "u"]);
    assert_eq!(docs(&db, "d").await, vec![doc! { "_id": 1, "only": 1 }]);
    client
        .database("admin")
        .run_command(doc! { "applyOps": [{ "op": "c", "ns": "r.$cmd", "o": { "dropDatabase": 1 } }] })
        .await
        .unwrap();
    assert!(db.list_collection_names().await.unwrap().is_empty());
}

/// What mongorestore turns an entry into before sending it (FORMATS.md 3.3): skipped entries give nothing,
/// `commitIndexBuild` becomes one `createIndexes` per index (the tools build it from their index catalog).
fn restore_commands(entry: &Document) -> Vec<Document> {
    let ns = entry.get_str("ns").unwrap_or_default();
    let allowed_config = [
        "chunks",
        "collections",
        "databases",
        "settings",
        "shards",
        "tags",
        "version",
    ];
    if let Some(rest) = ns.strip_prefix("config.")
        && !allowed_config.contains(&rest)
    {
        return Vec::new();
    }
    let Some(e) = restore_form(entry, false) else {
        return Vec::new();
    };
    let first = e
        .get_document("o")
        .ok()
        .and_then(|o| o.keys().next().cloned())
        .unwrap_or_default();
    if e.get_str("op") != Ok("c") {
        return vec![e];
    }
    match first.as_str() {
        "startIndexBuild" | "abortIndexBuild" | "setMultikeyMetadata" | "dropIdent" => Vec::new(),
        "commitIndexBuild" => {
            let o = e.get_document("o").unwrap();
            let coll = o.get_str("commitIndexBuild").unwrap();
            o.get_array("indexes")
                .unwrap()
                .iter()
                .map(|spec| {
                    let mut cmd = doc! { "createIndexes": coll };
                    cmd.extend(spec.as_document().unwrap().clone());
                    doc! { "op": "c", "ns": ns, "o": cmd }
                })
                .collect()
        }
        _ => vec![e],
    }
}

async fn replay_fixture(client: &Client, rel: &str) {
    for entry in read_bson(rel) {
        for cmd in restore_commands(&entry) {
            apply(client, cmd.clone(), false)
                .await
                .unwrap_or_else(|e| panic!("{rel}: {cmd}: {e}"));
        }
    }
}

#[tokio::test]
async fn directory_fixture_oplogs_replay_to_the_documented_state() {
    let (_s, client) = start().await;
    // TestOplogReplayNoop: test.data = 1 document, {a: 1}.
    replay_fixture(&client, "dump_with_noop_in_oplog/oplog.bson").await;
    let data = docs(&client.database("test"), "data").await;
    assert_eq!(data.len(), 1);
    assert_eq!(data[0].get("a").and_then(Bson::as_f64), Some(1.0));
    // TestOplogRestoreTools2002: create with a 4.0 idIndex (with ns) and a compound index.
    replay_fixture(&client, "tools-2002/oplog.bson").await;
    let names: Vec<String> = indexes(&client.database("foo"), "bar")
        .await
        .iter()
        .map(|i| i.get_str("name").unwrap().to_string())
        .collect();
    assert_eq!(names, ["_id_", "a_1_b_1"]);
    // TestCreateIndexes: 3 indexes on create_indexes.test, the partial one keeping its filter.
    replay_fixture(&client, "create_indexes/oplog.bson").await;
    let idx = indexes(&client.database("create_indexes"), "test").await;
    assert_eq!(idx.len(), 3);
    assert_eq!(
        idx[2].get_document("partialFilterExpression").unwrap(),
        &doc! { "a": 1.0 }
    );
    // TestCommitIndexBuild: _id_, a_1, b_1.
    replay_fixture(&client, "commit_indexes_build/oplog.bson").await;
    let names: Vec<String> = indexes(&client.database("commit_index"), "test")
        .await
        .iter()
        .map(|i| i.get_str("name").unwrap().to_string())
        .collect();
    assert_eq!(names, ["_id_", "a_1", "b_1"]);
    assert_eq!(docs(&client.database("commit_index"), "test").await.len(), 1);
}

/// mongod accepts, in `applyOps` as in replication, the errors that only say a command entry's effect
/// is already there (`acceptableErrors` in `repl/oplog.cpp`): a restore of a fuzzy dump replays the
/// `create` of a collection the dump already holds. Anything else still fails.
#[tokio::test]
async fn command_entries_whose_effect_is_already_there_succeed() {
    let (_s, client) = start().await;
    let db = client.database("f");
    db.create_collection("there").await.unwrap();
    let admin = client.database("admin");
    let idempotent = [
        doc! { "op": "c", "ns": "f.$cmd", "o": { "create": "there" } },
        doc! { "op": "c", "ns": "f.$cmd", "o": { "drop": "never" } },
        doc! { "op": "c", "ns": "f.$cmd", "o": { "dropIndexes": "there", "index": "no_such_index" } },
        doc! { "op": "c", "ns": "f.$cmd", "o": { "dropIndexes": "never", "index": "x_1" } },
        doc! { "op": "c", "ns": "f.$cmd", "o": { "collMod": "never", "validationLevel": "off" } },
        doc! { "op": "c", "ns": "f.$cmd", "o": { "renameCollection": "f.never", "to": "f.other" } },
        doc! { "op": "c", "ns": "nothing.$cmd", "o": { "dropDatabase": 1 } },
    ];
    for entry in idempotent {
        let reply = admin
            .run_command(doc! { "applyOps": [entry.clone()] })
            .await
            .unwrap_or_else(|e| panic!("{entry}: {e}"));
        assert_eq!(reply.get_i32("applied"), Ok(1), "{entry}: {reply}");
    }
    let names = db.list_collection_names().await.unwrap();
    assert_eq!(names, vec!["there".to_owned()]);
    // Not an "already there" error: still refused, with mongod's code.
    let err = admin
        .run_command(doc! { "applyOps": [{ "op": "i", "ns": "f.never", "o": { "_id": 1 } }] })
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(26));
}
