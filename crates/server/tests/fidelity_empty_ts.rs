//! Empty-timestamp replacement through the official Rust driver.
//!
//! Documented rule (https://www.mongodb.com/docs/manual/reference/bson-types/#timestamps): "If you insert a
//! document containing an empty BSON timestamp in a top-level field, the MongoDB server replaces that empty
//! timestamp with the current timestamp value", except in `_id`. mongod applies the same rule to
//! replacement-style updates (`update`, `findAndModify`, including upserts) but not to update operators nor
//! to pipelines, and `bypassEmptyTsReplacement: true` (SERVER-88750, 7.0.13+/8.0; sent by mongorestore)
//! turns it off. The expectations below follow mongod's own jstest `bypass_empty_ts_replacement.js`.

use mongodb::bson::{Bson, Document, Timestamp, doc};
use mongodb::{Client, Database};
use tidemark_server::ServerConfig;
use tidemark_server::testing::start_test_server;

const ZERO: Timestamp = Timestamp { time: 0, increment: 0 };

async fn run(db: &Database, cmd: Document) -> Document {
    db.run_command(cmd).await.expect("command")
}

fn now_secs() -> u32 {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    u32::try_from(s).unwrap()
}

/// Runs the 17 write shapes of mongod's test with `bypass` and returns field `a` of each resulting document.
async fn seventeen_shapes(db: &Database, bypass: bool, base: i32) -> Vec<Bson> {
    let c = "ts";
    let id = |i: i32| base + i;
    let ins = |d: Document| doc! { "insert": c, "documents": [d], "bypassEmptyTsReplacement": bypass };
    let upd = |q: Document, u: Bson, upsert: bool| {
        doc! { "update": c, "updates": [{ "q": q, "u": u, "upsert": upsert }], "bypassEmptyTsReplacement": bypass }
    };
    let fam = |q: Document, u: Bson, upsert: bool| {
        doc! { "findAndModify": c, "query": q, "update": u, "upsert": upsert, "bypassEmptyTsReplacement": bypass }
    };
    run(db, ins(doc! { "_id": id(1), "a": ZERO })).await;
    for (i, v) in [(2, 1), (3, 2), (6, 3), (7, 4), (8, 5), (9, 6), (10, 7), (11, 8)] {
        run(db, ins(doc! { "_id": id(i), "a": v })).await;
    }
    let replacement = Bson::Document(doc! { "a": ZERO });
    let set = Bson::Document(doc! { "$set": { "a": ZERO } });
    let pipeline = Bson::Array(vec![Bson::Document(doc! { "$addFields": { "a": ZERO } })]);
    run(db, upd(doc! { "_id": id(2) }, replacement.clone(), false)).await;
    run(db, fam(doc! { "_id": id(3) }, replacement.clone(), false)).await;
    run(db, upd(doc! { "_id": id(4) }, replacement.clone(), true)).await;
    run(db, fam(doc! { "_id": id(5) }, replacement.clone(), true)).await;
    run(db, upd(doc! { "_id": id(6) }, set.clone(), false)).await;
    run(db, fam(doc! { "_id": id(7) }, set.clone(), false)).await;
    run(db, upd(doc! { "_id": id(8) }, pipeline.clone(), false)).await;
    run(db, fam(doc! { "_id": id(9) }, pipeline.clone(), false)).await;
    run(db, upd(doc! { "_id": id(10) }, set.clone(), false)).await;
    run(db, fam(doc! { "_id": id(11) }, set.clone(), false)).await;
    run(db, upd(doc! { "_id": id(12) }, set.clone(), true)).await;
    run(db, fam(doc! { "_id": id(13) }, set.clone(), true)).await;
    run(db, upd(doc! { "_id": id(14) }, pipeline.clone(), true)).await;
    run(db, fam(doc! { "_id": id(15) }, pipeline.clone(), true)).await;
    run(
        db,
        upd(
            doc! { "_id": id(16) },
            Bson::Document(doc! { "$setOnInsert": { "a": ZERO } }),
            true,
        ),
    )
    .await;
    run(
        db,
        fam(
            doc! { "_id": id(17) },
            Bson::Document(doc! { "$setOnInsert": { "a": ZERO } }),
            true,
        ),
    )
    .await;
    let coll = db.collection::<Document>(c);
    let mut out = Vec::new();
    for i in 1..=17 {
        let d = coll.find_one(doc! { "_id": id(i) }).await.unwrap().expect("document");
        out.push(d.get("a").cloned().unwrap_or(Bson::Null));
    }
    out
}

#[tokio::test]
async fn inserts_and_replacements_fill_empty_timestamps_unless_bypassed() {
    let server = start_test_server(ServerConfig::ephemeral()).await;
    let client = Client::with_uri_str(server.uri()).await.unwrap();
    let db = client.database("fid");
    let before = now_secs();

    let filled = seventeen_shapes(&db, false, 100).await;
    let mut seen = Vec::new();
    for (i, a) in filled.iter().enumerate() {
        let n = i + 1;
        match a {
            Bson::Timestamp(t) if n <= 5 => {
                assert!(
                    t.time >= before && t.time <= now_secs() + 1,
                    "doc {n}: {t:?} is not now"
                );
                seen.push(*t);
            }
            Bson::Timestamp(t) => assert_eq!(*t, ZERO, "doc {n} must keep the empty timestamp"),
            other => panic!("doc {n}: unexpected {other:?}"),
        }
    }
    // Each replacement is a fresh value, increasing in write order.
    assert!(
        seen.windows(2)
            .all(|w| (w[0].time, w[0].increment) < (w[1].time, w[1].increment)),
        "{seen:?}"
    );

    let bypassed = seventeen_shapes(&db, true, 200).await;
    for (i, a) in bypassed.iter().enumerate() {
        assert_eq!(a, &Bson::Timestamp(ZERO), "doc {} with bypassEmptyTsReplacement", i + 1);
    }
}

#[tokio::test]
async fn id_and_nested_empty_timestamps_are_kept() {
    let server = start_test_server(ServerConfig::ephemeral()).await;
    let client = Client::with_uri_str(server.uri()).await.unwrap();
    let coll = client.database("fid").collection::<Document>("nested");
    coll.insert_one(doc! { "_id": ZERO, "n": { "t": ZERO }, "arr": [ZERO], "top": ZERO, "late": Timestamp { time: 0, increment: 3 } })
        .await
        .unwrap();
    let d = coll
        .find_one(doc! { "_id": ZERO })
        .await
        .unwrap()
        .expect("found by empty _id");
    assert_eq!(d.get("n"), Some(&Bson::Document(doc! { "t": ZERO })));
    assert_eq!(d.get("arr"), Some(&Bson::Array(vec![Bson::Timestamp(ZERO)])));
    assert_eq!(
        d.get("late"),
        Some(&Bson::Timestamp(Timestamp { time: 0, increment: 3 }))
    );
    match d.get("top") {
        Some(Bson::Timestamp(t)) => assert!(t.time > 0, "top-level field replaced, got {t:?}"),
        other => panic!("unexpected {other:?}"),
    }
    // Field order is kept.
    let keys: Vec<&str> = d.keys().map(String::as_str).collect();
    assert_eq!(keys, ["_id", "n", "arr", "top", "late"]);
    // A replacement of the document with `_id: Timestamp(0,0)` keeps the `_id`, fills `a`.
    coll.replace_one(doc! { "_id": ZERO }, doc! { "_id": ZERO, "a": ZERO })
        .await
        .unwrap();
    let d = coll.find_one(doc! { "_id": ZERO }).await.unwrap().expect("still found");
    assert!(matches!(d.get("a"), Some(Bson::Timestamp(t)) if t.time > 0), "{d:?}");
}
