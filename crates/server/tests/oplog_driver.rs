//! The oplog of a single-member replica set, read through the official Rust driver: entry shapes as MongoDB
//! writes them (FORMATS.md section 4), tailable awaitData cursors, rollover with CappedPositionLost, the
//! `$natural` probes and `ts` range queries mongodump sends (FORMATS.md 3.1), and the periodic no-op.

use std::time::{Duration, Instant};

use mongodb::bson::{Bson, Document, Timestamp, doc};
use mongodb::options::{ClientOptions, CursorType, FindOptions, IndexOptions};
use mongodb::{Client, Collection, IndexModel};
use tidemark_server::ServerConfig;
use tidemark_server::testing::{TestServer, start_test_server};

/// Starts `--replSet rs0` (with `--oplogSizeMB` if given), initiates it and waits until it is primary.
async fn start_rs(oplog_size_mb: Option<u64>) -> (TestServer, Client) {
    let config = ServerConfig {
        repl_set: Some("rs0".into()),
        oplog_size_mb,
        ..ServerConfig::ephemeral()
    };
    let server = start_test_server(config).await;
    let mut opts = ClientOptions::parse(format!("{}/?directConnection=true", server.uri()))
        .await
        .expect("uri");
    opts.server_selection_timeout = Some(Duration::from_secs(5));
    // Awaitable hellos of the driver's monitor wait up to the heartbeat interval; keep test shutdown quick.
    opts.heartbeat_freq = Some(Duration::from_millis(500));
    let client = Client::with_options(opts).expect("client");
    let config = doc! { "_id": "rs0", "version": 1, "members": [{ "_id": 0, "host": server.addr.to_string() }] };
    client
        .database("admin")
        .run_command(doc! { "replSetInitiate": config })
        .await
        .expect("replSetInitiate");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let hello = client
            .database("admin")
            .run_command(doc! { "hello": 1 })
            .await
            .expect("hello");
        if hello.get_bool("isWritablePrimary") == Ok(true) {
            break;
        }
        assert!(Instant::now() < deadline, "no primary after replSetInitiate: {hello}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        server.state.repl.oplog().is_enabled(),
        "replSetInitiate must start the oplog"
    );
    (server, client)
}

fn oplog(client: &Client) -> Collection<Document> {
    client.database("local").collection("oplog.rs")
}

fn ts_of(d: &Document) -> (u32, u32) {
    let t = d.get_timestamp("ts").expect("entry has a Timestamp ts");
    (t.time, t.increment)
}

async fn newest(client: &Client) -> Document {
    let opts = FindOptions::builder().sort(doc! { "$natural": -1 }).limit(1).build();
    let mut c = oplog(client)
        .find(doc! {})
        .with_options(opts)
        .await
        .expect("newest probe");
    assert!(c.advance().await.expect("advance"), "the oplog is empty");
    c.deserialize_current().expect("entry")
}

/// Entries after `after`, excluding periodic no-ops, in oplog order.
async fn entries_after(client: &Client, after: Timestamp) -> Vec<Document> {
    let opts = FindOptions::builder()
        .hint(mongodb::options::Hint::Keys(doc! { "$natural": 1 }))
        .build();
    let mut c = oplog(client)
        .find(doc! { "ts": { "$gt": after }, "op": { "$ne": "n" } })
        .with_options(opts)
        .await
        .expect("find");
    let mut out = Vec::new();
    while c.advance().await.expect("advance") {
        out.push(c.deserialize_current().expect("entry"));
    }
    out
}

fn strip(entry: &Document) -> Document {
    let mut d = Document::new();
    for k in ["op", "ns", "o", "o2"] {
        if let Some(v) = entry.get(k) {
            d.insert(k, v.clone());
        }
    }
    d
}

#[tokio::test]
async fn writes_produce_mongodb_shaped_entries_in_order() {
    let (_server, client) = start_rs(None).await;
    let first = newest(&client).await;
    assert_eq!(first.get_str("op"), Ok("n"));
    assert_eq!(first.get_document("o").unwrap(), &doc! { "msg": "initiating set" });
    let start = first.get_timestamp("ts").unwrap();

    let db = client.database("shop");
    db.create_collection("items").await.expect("create");
    let items = db.collection::<Document>("items");
    items
        .insert_one(doc! { "_id": 1, "name": "pear", "sub": { "x": 1, "y": 2 }, "tmp": true })
        .await
        .unwrap();
    items
        .insert_many(vec![doc! { "_id": 2, "n": 1 }, doc! { "_id": 3, "n": 2 }])
        .await
        .unwrap();
    items
        .update_one(
            doc! { "_id": 1 },
            doc! { "$set": { "name": "fig", "sub.x": 5 }, "$unset": { "tmp": "" } },
        )
        .await
        .unwrap();
    items
        .update_one(doc! { "_id": 2 }, doc! { "$set": { "added": "yes" } })
        .await
        .unwrap();
    items.delete_one(doc! { "_id": 3 }).await.unwrap();
    items
        .create_index(
            IndexModel::builder()
                .keys(doc! { "n": 1 })
                .options(IndexOptions::builder().name("n_1".to_string()).build())
                .build(),
        )
        .await
        .unwrap();
    items.drop_index("n_1").await.unwrap();
    client
        .database("admin")
        .run_command(doc! { "renameCollection": "shop.items", "to": "shop.goods" })
        .await
        .unwrap();
    db.collection::<Document>("goods").drop().await.unwrap();
    db.collection::<Document>("other")
        .insert_one(doc! { "_id": "k" })
        .await
        .unwrap();
    db.drop().await.unwrap();
    // Writes to the local database are never logged.
    client
        .database("local")
        .collection::<Document>("scratch")
        .insert_one(doc! { "_id": 1 })
        .await
        .unwrap();

    let got = entries_after(&client, start).await;
    let ui = got[0]
        .get("ui")
        .cloned()
        .expect("create carries the new collection's UUID");
    assert!(
        matches!(&ui, Bson::Binary(b) if b.subtype == mongodb::bson::spec::BinarySubtype::Uuid && b.bytes.len() == 16)
    );
    let expected = vec![
        doc! { "op": "c", "ns": "shop.$cmd", "o": { "create": "items", "idIndex": { "v": 2, "key": { "_id": 1 }, "name": "_id_" } } },
        doc! { "op": "i", "ns": "shop.items", "o": { "_id": 1, "name": "pear", "sub": { "x": 1, "y": 2 }, "tmp": true }, "o2": { "_id": 1 } },
        doc! { "op": "i", "ns": "shop.items", "o": { "_id": 2, "n": 1 }, "o2": { "_id": 2 } },
        doc! { "op": "i", "ns": "shop.items", "o": { "_id": 3, "n": 2 }, "o2": { "_id": 3 } },
        doc! { "op": "u", "ns": "shop.items", "o": { "$v": 2, "diff": { "d": { "tmp": false }, "u": { "name": "fig" }, "ssub": { "u": { "x": 5 } } } }, "o2": { "_id": 1 } },
        doc! { "op": "u", "ns": "shop.items", "o": { "$v": 2, "diff": { "i": { "added": "yes" } } }, "o2": { "_id": 2 } },
        doc! { "op": "d", "ns": "shop.items", "o": { "_id": 3 } },
        doc! { "op": "c", "ns": "shop.$cmd", "o": { "createIndexes": "items", "v": 2, "key": { "n": 1 }, "name": "n_1" } },
        doc! { "op": "c", "ns": "shop.$cmd", "o": { "dropIndexes": "items", "index": "n_1" }, "o2": { "v": 2, "key": { "n": 1 }, "name": "n_1" } },
        doc! { "op": "c", "ns": "shop.$cmd", "o": { "renameCollection": "shop.items", "to": "shop.goods", "stayTemp": false, "dropTarget": false } },
        doc! { "op": "c", "ns": "shop.$cmd", "o": { "drop": "goods" }, "o2": { "numRecords": 2_i64 } },
    ];
    let stripped: Vec<Document> = got.iter().map(strip).collect();
    assert_eq!(&stripped[..expected.len()], &expected[..], "full oplog: {got:#?}");
    // Then the other collection's create and insert, its drop by dropDatabase, and dropDatabase itself.
    let rest: Vec<(String, String)> = stripped[expected.len()..]
        .iter()
        .map(|d| {
            (
                d.get_str("op").unwrap().to_string(),
                d.get_document("o").unwrap().keys().next().cloned().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        rest,
        [("c", "create"), ("i", "_id"), ("c", "drop"), ("c", "dropDatabase")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert_eq!(
        stripped.last().unwrap().get_document("o").unwrap(),
        &doc! { "dropDatabase": 1 }
    );
    assert!(
        got.iter()
            .all(|e| e.get_str("ns").is_ok_and(|ns| !ns.starts_with("local.")))
    );
    // Every entry of the renamed collection keeps the UUID given at creation.
    for e in &got[..10] {
        assert_eq!(e.get("ui"), Some(&ui), "{e}");
    }
    // ts strictly increasing, t = 1, v = 2, wall a date; field order as mongod writes it.
    let mut prev = ts_of(&first);
    for e in &got {
        assert!(ts_of(e) > prev, "ts must increase strictly: {e}");
        prev = ts_of(e);
        assert_eq!(e.get_i64("t"), Ok(1));
        assert_eq!(e.get_i64("v"), Ok(2));
        assert!(e.get_datetime("wall").is_ok());
        let keys: Vec<&str> = e
            .keys()
            .map(String::as_str)
            .filter(|k| !matches!(*k, "ui" | "o2"))
            .collect();
        if e.get_str("op") == Ok("c") {
            assert_eq!(keys, ["op", "ns", "o", "ts", "t", "v", "wall"]);
        } else {
            // The driver's writes are retryable writes: mongod's form of FORMATS.md 4.1.
            assert_eq!(
                keys,
                [
                    "lsid",
                    "txnNumber",
                    "op",
                    "ns",
                    "o",
                    "stmtId",
                    "ts",
                    "t",
                    "v",
                    "wall",
                    "prevOpTime"
                ],
                "{e}"
            );
        }
    }
}

/// The retryable-write fields, compared with the real retryable inserts of `bypassDocumentValidation.bson`.
#[tokio::test]
async fn retryable_writes_carry_session_fields() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures/mongo-tools/mongorestore/testdata/oplogs/bson/bypassDocumentValidation.bson"
    );
    let bytes = std::fs::read(path).expect("fixture");
    let mut rest = bytes.as_slice();
    let mut real = Vec::new();
    while !rest.is_empty() {
        real.push(Document::from_reader(&mut rest).expect("fixture entry"));
    }
    let real_insert = real
        .iter()
        .find(|e| e.get_str("op") == Ok("i"))
        .expect("a retryable insert");
    let real_keys: Vec<&str> = real_insert.keys().map(String::as_str).collect();

    let (_server, client) = start_rs(None).await;
    let start = newest(&client).await.get_timestamp("ts").unwrap();
    let c = client.database("r").collection::<Document>("c");
    c.insert_one(doc! { "_id": 0 }).await.unwrap();
    c.insert_many(vec![doc! { "_id": 1 }, doc! { "_id": 2 }]).await.unwrap();
    let got: Vec<Document> = entries_after(&client, start)
        .await
        .into_iter()
        .filter(|e| e.get_str("op") == Ok("i"))
        .collect();
    assert_eq!(got.len(), 3);
    for e in &got {
        let keys: Vec<&str> = e.keys().map(String::as_str).collect();
        assert_eq!(keys, real_keys, "{e}");
        // Without authentication the lsid's uid is the SHA-256 of the empty user name, as in the fixture.
        assert_eq!(
            e.get_document("lsid").unwrap().get("uid"),
            real_insert.get_document("lsid").unwrap().get("uid")
        );
    }
    let stmt = |e: &Document| e.get_i32("stmtId").unwrap();
    let prev = |e: &Document| e.get_document("prevOpTime").unwrap().clone();
    assert_eq!(stmt(&got[0]), 0);
    assert_eq!(
        prev(&got[0]),
        doc! { "ts": Timestamp { time: 0, increment: 0 }, "t": -1_i64 }
    );
    // insert_many: one command, statements 0 and 1, the second chained to the first.
    assert_eq!(got[1].get("txnNumber"), got[2].get("txnNumber"));
    assert_ne!(got[0].get("txnNumber"), got[1].get("txnNumber"));
    assert_eq!((stmt(&got[1]), stmt(&got[2])), (0, 1));
    assert_eq!(
        prev(&got[2]),
        doc! { "ts": got[1].get_timestamp("ts").unwrap(), "t": 1_i64 }
    );

    // Without retryable writes, no session fields.
    let mut opts = ClientOptions::parse(format!("{}/?directConnection=true&retryWrites=false", _server.uri()))
        .await
        .unwrap();
    opts.heartbeat_freq = Some(Duration::from_millis(500));
    let plain = Client::with_options(opts).unwrap();
    let mark = newest(&client).await.get_timestamp("ts").unwrap();
    plain
        .database("r")
        .collection::<Document>("c")
        .insert_one(doc! { "_id": 3 })
        .await
        .unwrap();
    let e = &entries_after(&client, mark).await[0];
    let keys: Vec<&str> = e.keys().map(String::as_str).collect();
    assert_eq!(keys, ["op", "ns", "ui", "o", "o2", "ts", "t", "v", "wall"]);
}

#[tokio::test]
async fn replacement_and_upsert_entries() {
    let (_server, client) = start_rs(None).await;
    let start = newest(&client).await.get_timestamp("ts").unwrap();
    let c = client.database("t").collection::<Document>("c");
    c.insert_one(doc! { "_id": 1, "a": 1, "b": 2 }).await.unwrap();
    c.replace_one(doc! { "_id": 1 }, doc! { "z": 1, "a": 1 }).await.unwrap();
    c.update_one(doc! { "_id": 9 }, doc! { "$set": { "q": 1 } })
        .upsert(true)
        .await
        .unwrap();
    let got: Vec<Document> = entries_after(&client, start).await.iter().map(strip).collect();
    // A replacement that reorders fields cannot be a diff: the full new document is logged.
    assert_eq!(
        got[got.len() - 2],
        doc! { "op": "u", "ns": "t.c", "o": { "_id": 1, "z": 1, "a": 1 }, "o2": { "_id": 1 } }
    );
    // An upsert that inserts is logged as an insert.
    assert_eq!(
        got[got.len() - 1],
        doc! { "op": "i", "ns": "t.c", "o": { "_id": 9, "q": 1 }, "o2": { "_id": 9 } }
    );
}

#[tokio::test]
async fn mongodump_probes_and_ts_range_query() {
    let (_server, client) = start_rs(None).await;
    let c = client.database("d").collection::<Document>("c");
    for i in 0..50 {
        c.insert_one(doc! { "_id": i }).await.unwrap();
    }
    let oldest = {
        let opts = FindOptions::builder().sort(doc! { "$natural": 1 }).limit(1).build();
        let mut cur = oplog(&client).find(doc! {}).with_options(opts).await.unwrap();
        assert!(cur.advance().await.unwrap());
        cur.deserialize_current().unwrap()
    };
    assert_eq!(oldest.get_document("o").unwrap(), &doc! { "msg": "initiating set" });
    let newest_entry = newest(&client).await;
    assert_eq!(newest_entry.get_document("o").unwrap(), &doc! { "_id": 49 });
    // The window mongodump reads: {$and: [{ts: {$gte: start}}, {ts: {$lte: end}}]} with oplogReplay.
    let all: Vec<Document> = entries_after(&client, Timestamp { time: 0, increment: 0 })
        .await
        .into_iter()
        .filter(|e| e.get_str("op") == Ok("i"))
        .collect();
    let start = all[10].get_timestamp("ts").unwrap();
    let end = all[20].get_timestamp("ts").unwrap();
    let reply = client
        .database("local")
        .run_command(doc! {
            "find": "oplog.rs",
            "filter": { "$and": [{ "ts": { "$gte": start } }, { "ts": { "$lte": end } }] },
            "oplogReplay": true,
        })
        .await
        .unwrap();
    let batch = reply.get_document("cursor").unwrap().get_array("firstBatch").unwrap();
    let ids: Vec<i32> = batch
        .iter()
        .map(|d| {
            d.as_document()
                .unwrap()
                .get_document("o")
                .unwrap()
                .get_i32("_id")
                .unwrap()
        })
        .collect();
    assert_eq!(ids, (10..=20).collect::<Vec<i32>>());
    // $gt excludes the bound itself.
    let mut cur = oplog(&client).find(doc! { "ts": { "$gt": end } }).await.unwrap();
    assert!(cur.advance().await.unwrap());
    let first_after = cur.deserialize_current().unwrap();
    assert_eq!(first_after.get_document("o").unwrap(), &doc! { "_id": 21 });
    // listCollections shows the capped oplog with no _id index.
    let specs = oplog(&client).list_index_names().await.unwrap();
    assert!(specs.is_empty(), "{specs:?}");
}

#[tokio::test]
async fn tailable_await_data_cursor_follows_writes() {
    let (_server, client) = start_rs(None).await;
    let start = newest(&client).await.get_timestamp("ts").unwrap();
    let opts = FindOptions::builder()
        .cursor_type(CursorType::TailableAwait)
        .max_await_time(Duration::from_millis(300))
        .build();
    let mut cursor = oplog(&client)
        .find(doc! { "ts": { "$gt": start } })
        .with_options(opts)
        .await
        .expect("tail");
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            let c = client.database("w").collection::<Document>("c");
            for i in 0..20 {
                c.insert_one(doc! { "_id": i, "v": i * 10 }).await.unwrap();
                if i % 5 == 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        })
    };
    let mut inserts = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while inserts.len() < 20 {
        assert!(
            Instant::now() < deadline,
            "tailing stalled after {} entries",
            inserts.len()
        );
        let more = tokio::time::timeout(Duration::from_secs(10), cursor.advance())
            .await
            .expect("entry in time")
            .unwrap();
        if !more {
            continue;
        }
        let e = cursor.deserialize_current().unwrap();
        if e.get_str("op") == Ok("i") {
            inserts.push(e);
        }
    }
    writer.await.unwrap();
    for (i, e) in (0..).zip(&inserts) {
        assert_eq!(
            strip(e),
            doc! { "op": "i", "ns": "w.c", "o": { "_id": i, "v": i * 10 }, "o2": { "_id": i } }
        );
    }
}

#[tokio::test]
async fn await_data_get_more_times_out_empty_and_keeps_the_cursor() {
    let (_server, client) = start_rs(None).await;
    let local = client.database("local");
    let reply = local
        .run_command(doc! { "find": "oplog.rs", "filter": {}, "tailable": true, "awaitData": true })
        .await
        .unwrap();
    let cursor = reply.get_document("cursor").unwrap();
    let id = cursor.get_i64("id").unwrap();
    assert_ne!(id, 0, "a tailable cursor stays open at the end of the data");
    let t0 = Instant::now();
    let more = local
        .run_command(doc! { "getMore": id, "collection": "oplog.rs", "maxTimeMS": 400 })
        .await
        .unwrap();
    let waited = t0.elapsed();
    let c = more.get_document("cursor").unwrap();
    assert_eq!(c.get_i64("id"), Ok(id));
    assert!(c.get_array("nextBatch").unwrap().is_empty());
    assert!(
        waited >= Duration::from_millis(350),
        "getMore returned after {waited:?}"
    );
    // A write during the wait ends it early with the new entry.
    let c2 = client.clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        c2.database("x")
            .collection::<Document>("y")
            .insert_one(doc! { "_id": 7 })
            .await
            .unwrap();
    });
    let t0 = Instant::now();
    let more = local
        .run_command(doc! { "getMore": id, "collection": "oplog.rs", "maxTimeMS": 20000 })
        .await
        .unwrap();
    writer.await.unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "waited {:?} despite a write",
        t0.elapsed()
    );
    let batch = more
        .get_document("cursor")
        .unwrap()
        .get_array("nextBatch")
        .unwrap()
        .clone();
    let last = batch.last().and_then(Bson::as_document).expect("new entries");
    assert_eq!(last.get_document("o").unwrap(), &doc! { "_id": 7 });
    // Option rules as in mongod.
    let err = local
        .run_command(doc! { "find": "oplog.rs", "awaitData": true })
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(9));
    client.database("x").create_collection("plain").await.unwrap();
    let err = client
        .database("x")
        .run_command(doc! { "find": "plain", "tailable": true })
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(2));
}

fn code(e: &mongodb::error::Error) -> Option<i32> {
    match e.kind.as_ref() {
        mongodb::error::ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

#[tokio::test]
async fn small_oplog_rolls_over_and_a_lost_position_is_reported() {
    let (server, client) = start_rs(Some(1)).await;
    let local = client.database("local");
    let reply = local
        .run_command(doc! { "find": "oplog.rs", "filter": {}, "tailable": true, "batchSize": 1 })
        .await
        .unwrap();
    let id = reply.get_document("cursor").unwrap().get_i64("id").unwrap();
    assert_ne!(id, 0);
    let c = client.database("big").collection::<Document>("c");
    let filler = "x".repeat(10_000);
    for i in 0..250 {
        c.insert_one(doc! { "_id": i, "pad": &filler }).await.unwrap();
    }
    // The oldest entries are gone: the oplog holds at most its capped size.
    let oldest = {
        let opts = FindOptions::builder().sort(doc! { "$natural": 1 }).limit(1).build();
        let mut cur = oplog(&client).find(doc! {}).with_options(opts).await.unwrap();
        assert!(cur.advance().await.unwrap());
        cur.deserialize_current().unwrap()
    };
    assert_eq!(
        oldest.get_str("op"),
        Ok("i"),
        "initiating set must have rolled off: {oldest}"
    );
    let bytes = server.state.engine.read(|cat| {
        let ns = tidemark_server::engine::Namespace::new("local", "oplog.rs").unwrap();
        cat.collection(&ns).map(|c| c.data_size()).unwrap()
    });
    assert!(bytes <= 1024 * 1024, "oplog holds {bytes} bytes");
    let newest_entry = newest(&client).await;
    assert_eq!(newest_entry.get_document("o").unwrap().get_i32("_id"), Ok(249));
    // The tailable cursor's position (the first entry) was truncated away.
    let err = local
        .run_command(doc! { "getMore": id, "collection": "oplog.rs" })
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(136), "{err}");
    // ... and the cursor is gone.
    let err = local
        .run_command(doc! { "getMore": id, "collection": "oplog.rs" })
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(43));
}

#[tokio::test]
async fn idle_primary_writes_periodic_noops() {
    let (server, client) = start_rs(None).await;
    server.state.repl.set_noop_interval(Duration::from_millis(200));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = oplog(&client)
            .count_documents(doc! { "op": "n", "ns": "", "o": { "msg": "periodic noop" } })
            .await
            .unwrap();
        if n >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no periodic no-op entries written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let e = newest(&client).await;
    assert_eq!(strip(&e), doc! { "op": "n", "ns": "", "o": { "msg": "periodic noop" } });
    assert!(e.get("ui").is_none() && e.get("o2").is_none());
}

/// A rename over an existing collection is one `renameCollection` entry whose `dropTarget` is the UUID of the
/// collection it replaced (FORMATS.md 4.2), not a separate drop.
#[tokio::test]
async fn rename_with_drop_target_is_one_entry() {
    let (_server, client) = start_rs(None).await;
    let db = client.database("rn");
    db.collection::<Document>("a")
        .insert_one(doc! { "_id": 1 })
        .await
        .unwrap();
    db.collection::<Document>("b")
        .insert_one(doc! { "_id": 2 })
        .await
        .unwrap();
    let start = newest(&client).await.get_timestamp("ts").unwrap();
    let target = {
        let list = db
            .run_command(doc! { "listCollections": 1, "filter": { "name": "b" } })
            .await
            .unwrap();
        let first = list.get_document("cursor").unwrap().get_array("firstBatch").unwrap()[0].clone();
        first
            .as_document()
            .unwrap()
            .get_document("info")
            .unwrap()
            .get("uuid")
            .cloned()
            .unwrap()
    };
    client
        .database("admin")
        .run_command(doc! { "renameCollection": "rn.a", "to": "rn.b", "dropTarget": true })
        .await
        .unwrap();
    let got = entries_after(&client, start).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0].get_document("o").unwrap(),
        &doc! { "renameCollection": "rn.a", "to": "rn.b", "stayTemp": false, "dropTarget": target }
    );
    assert_eq!(got[0].get_str("ns"), Ok("rn.$cmd"));
}
