//! Projections, aggregation, views over pipelines, document validation and collMod through the official
//! Rust driver, checked against MongoDB's documented results and error codes.

use mongodb::bson::{Bson, Document, doc};
use mongodb::options::{ClientOptions, FindOptions};
use mongodb::{Client, Database};
use tidemark_server::ServerConfig;
use tidemark_server::testing::{TestServer, start_test_server};

macro_rules! collect_all {
    ($cursor:expr) => {{
        let mut cursor = $cursor;
        let mut out: Vec<Document> = Vec::new();
        while cursor.advance().await.expect("advance cursor") {
            out.push(cursor.deserialize_current().expect("deserialize"));
        }
        out
    }};
}

async fn client(server: &TestServer) -> Client {
    let mut opts = ClientOptions::parse(server.uri()).await.expect("parse uri");
    opts.server_selection_timeout = Some(std::time::Duration::from_secs(5));
    Client::with_options(opts).expect("client")
}

async fn code(db: &Database, cmd: Document) -> Option<i32> {
    match db.run_command(cmd).await {
        Ok(_) => None,
        Err(e) => match *e.kind {
            mongodb::error::ErrorKind::Command(c) => Some(c.code),
            _ => None,
        },
    }
}

#[tokio::test]
async fn projection_and_aggregation() {
    let server = start_test_server(ServerConfig::ephemeral()).await;
    let client = client(&server).await;
    let coll = client.database("q").collection::<Document>("sales");
    coll.insert_many(vec![
        doc! { "_id": 1, "item": "a", "qty": 2, "price": 10 },
        doc! { "_id": 2, "item": "b", "qty": 1, "price": 20 },
        doc! { "_id": 3, "item": "a", "qty": 5, "price": 10 },
    ])
    .await
    .unwrap();
    let opts = FindOptions::builder()
        .projection(doc! { "item": 1, "_id": 0 })
        .sort(doc! { "_id": 1 })
        .build();
    let docs = collect_all!(coll.find(doc! {}).with_options(opts).await.unwrap());
    assert_eq!(
        docs,
        vec![doc! { "item": "a" }, doc! { "item": "b" }, doc! { "item": "a" }]
    );
    // Projection on the streaming (unsorted) path too.
    let opts = FindOptions::builder().projection(doc! { "qty": 1 }).build();
    let docs = collect_all!(coll.find(doc! { "item": "a" }).with_options(opts).await.unwrap());
    assert_eq!(docs, vec![doc! { "_id": 1, "qty": 2 }, doc! { "_id": 3, "qty": 5 }]);

    let pipeline = vec![
        doc! { "$group": { "_id": "$item", "total": { "$sum": { "$multiply": ["$qty", "$price"] } } } },
        doc! { "$sort": { "_id": 1 } },
    ];
    let out = collect_all!(coll.aggregate(pipeline).await.unwrap());
    assert_eq!(
        out,
        vec![doc! { "_id": "a", "total": 70 }, doc! { "_id": "b", "total": 20 }]
    );

    // aggregate without a cursor option is rejected (FailedToParse 9).
    let db = client.database("q");
    assert_eq!(code(&db, doc! { "aggregate": "sales", "pipeline": [] }).await, Some(9));
    // An unknown stage is an error, not an empty result.
    assert!(
        code(
            &db,
            doc! { "aggregate": "sales", "pipeline": [ { "$nope": 1 } ], "cursor": {} }
        )
        .await
        .is_some()
    );
}

#[tokio::test]
async fn find_limit_and_batches_follow_mongod() {
    let server = start_test_server(ServerConfig::ephemeral()).await;
    let client = client(&server).await;
    let db = client.database("q");
    let coll = db.collection::<Document>("n");
    coll.insert_many((0..300).map(|i| doc! { "_id": i }).collect::<Vec<_>>())
        .await
        .unwrap();
    // Default first batch: 101 documents.
    let r = db.run_command(doc! { "find": "n" }).await.unwrap();
    let c = r.get_document("cursor").unwrap();
    assert_eq!(c.get_array("firstBatch").unwrap().len(), 101);
    assert_ne!(c.get_i64("id").unwrap(), 0);
    assert_eq!(c.get_str("ns").unwrap(), "q.n");
    // A negative limit returns a single batch and closes the cursor.
    let r = db.run_command(doc! { "find": "n", "limit": -5 }).await.unwrap();
    let c = r.get_document("cursor").unwrap();
    assert_eq!(c.get_array("firstBatch").unwrap().len(), 5);
    assert_eq!(c.get_i64("id").unwrap(), 0);
    // A limit smaller than a batch closes the cursor in the first batch.
    let r = db
        .run_command(doc! { "find": "n", "limit": 7, "skip": 295 })
        .await
        .unwrap();
    let c = r.get_document("cursor").unwrap();
    assert_eq!(c.get_array("firstBatch").unwrap().len(), 5);
    assert_eq!(c.get_i64("id").unwrap(), 0);
    // singleBatch.
    let r = db
        .run_command(doc! { "find": "n", "batchSize": 10, "singleBatch": true })
        .await
        .unwrap();
    let c = r.get_document("cursor").unwrap();
    assert_eq!(c.get_array("firstBatch").unwrap().len(), 10);
    assert_eq!(c.get_i64("id").unwrap(), 0);
    // batchSize 0 opens a cursor without returning documents; getMore then continues.
    let r = db.run_command(doc! { "find": "n", "batchSize": 0 }).await.unwrap();
    let c = r.get_document("cursor").unwrap();
    assert!(c.get_array("firstBatch").unwrap().is_empty());
    let id = c.get_i64("id").unwrap();
    assert_ne!(id, 0);
    let r = db
        .run_command(doc! { "getMore": id, "collection": "n", "batchSize": 250 })
        .await
        .unwrap();
    let c = r.get_document("cursor").unwrap();
    assert_eq!(c.get_array("nextBatch").unwrap().len(), 250);
    // killCursors reports what it killed.
    let r = db
        .run_command(doc! { "killCursors": "n", "cursors": [id, 42_i64] })
        .await
        .unwrap();
    assert_eq!(r.get_array("cursorsKilled").unwrap(), &vec![Bson::Int64(id)]);
    assert_eq!(r.get_array("cursorsNotFound").unwrap(), &vec![Bson::Int64(42)]);
    // Unknown find options are rejected like mongod's IDL parser does (40415).
    assert_eq!(code(&db, doc! { "find": "n", "bogus": 1 }).await, Some(40415));
    // count with skip and limit.
    let r = db
        .run_command(doc! { "count": "n", "query": { "_id": { "$gte": 100 } }, "skip": 10, "limit": 50 })
        .await
        .unwrap();
    assert_eq!(r.get_i32("n").unwrap(), 50);
}

#[tokio::test]
async fn views_apply_their_pipeline() {
    let server = start_test_server(ServerConfig::ephemeral()).await;
    let client = client(&server).await;
    let db = client.database("v");
    db.collection::<Document>("people")
        .insert_many(vec![
            doc! { "_id": 1, "name": "ann", "age": 30 },
            doc! { "_id": 2, "name": "bob", "age": 17 },
            doc! { "_id": 3, "name": "cyd", "age": 45 },
        ])
        .await
        .unwrap();
    db.run_command(doc! { "create": "adults", "viewOn": "people", "pipeline": [ { "$match": { "age": { "$gte": 18 } } }, { "$project": { "age": 0 } } ] })
        .await
        .unwrap();
    // A view on a view stacks pipelines.
    db.run_command(
        doc! { "create": "a_names", "viewOn": "adults", "pipeline": [ { "$match": { "name": { "$regex": "^a" } } } ] },
    )
    .await
    .unwrap();
    let adults = db.collection::<Document>("adults");
    let docs = collect_all!(adults.find(doc! {}).sort(doc! { "_id": -1 }).await.unwrap());
    assert_eq!(
        docs,
        vec![doc! { "_id": 3, "name": "cyd" }, doc! { "_id": 1, "name": "ann" }]
    );
    assert_eq!(adults.count_documents(doc! { "name": "ann" }).await.unwrap(), 1);
    assert_eq!(
        adults.distinct("name", doc! {}).await.unwrap(),
        vec![Bson::from("ann"), Bson::from("cyd")]
    );
    let stacked = collect_all!(db.collection::<Document>("a_names").find(doc! {}).await.unwrap());
    assert_eq!(stacked, vec![doc! { "_id": 1, "name": "ann" }]);
    // Writes and index commands on views fail with CommandNotSupportedOnView (166).
    assert_eq!(
        code(
            &db,
            doc! { "update": "adults", "updates": [ { "q": {}, "u": { "$set": { "x": 1 } } } ] }
        )
        .await,
        Some(166)
    );
    assert_eq!(
        code(&db, doc! { "delete": "adults", "deletes": [ { "q": {}, "limit": 0 } ] }).await,
        Some(166)
    );
    assert_eq!(
        code(
            &db,
            doc! { "createIndexes": "adults", "indexes": [ { "key": { "a": 1 }, "name": "a_1" } ] }
        )
        .await,
        Some(166)
    );
    assert_eq!(code(&db, doc! { "listIndexes": "adults" }).await, Some(166));
}

#[tokio::test]
async fn validators_are_enforced() {
    let server = start_test_server(ServerConfig::ephemeral()).await;
    let client = client(&server).await;
    let db = client.database("val");
    db.run_command(doc! { "create": "c", "validator": { "qty": { "$type": "int", "$gte": 0 } } })
        .await
        .unwrap();
    let coll = db.collection::<Document>("c");
    coll.insert_one(doc! { "_id": 1, "qty": 3 }).await.unwrap();
    let r = db
        .run_command(doc! { "insert": "c", "documents": [ { "_id": 2, "qty": -1 } ] })
        .await
        .unwrap();
    let we = r.get_array("writeErrors").unwrap()[0].as_document().unwrap();
    assert_eq!(we.get_i32("code").unwrap(), 121);
    assert_eq!(
        we.get_document("errInfo").unwrap().get("failingDocumentId"),
        Some(&Bson::Int32(2))
    );
    // bypassDocumentValidation skips the check.
    let r = db
        .run_command(
            doc! { "insert": "c", "documents": [ { "_id": 3, "qty": "many" } ], "bypassDocumentValidation": true },
        )
        .await
        .unwrap();
    assert_eq!(r.get_i32("n").unwrap(), 1);
    // Updates are validated too.
    let r = db
        .run_command(doc! { "update": "c", "updates": [ { "q": { "_id": 1 }, "u": { "$set": { "qty": "x" } } } ] })
        .await
        .unwrap();
    assert_eq!(
        r.get_array("writeErrors").unwrap()[0]
            .as_document()
            .unwrap()
            .get_i32("code")
            .unwrap(),
        121
    );
    // validationLevel moderate: documents that already fail may be updated.
    db.run_command(doc! { "collMod": "c", "validationLevel": "moderate" })
        .await
        .unwrap();
    let r = db
        .run_command(doc! { "update": "c", "updates": [ { "q": { "_id": 3 }, "u": { "$set": { "note": 1 } } } ] })
        .await
        .unwrap();
    assert_eq!(r.get_i32("nModified").unwrap(), 1);
    // validationAction warn accepts invalid documents.
    db.run_command(doc! { "collMod": "c", "validationAction": "warn" })
        .await
        .unwrap();
    coll.insert_one(doc! { "_id": 4, "qty": -5 }).await.unwrap();
    // listCollections shows the stored validation options.
    let r = db
        .run_command(doc! { "listCollections": 1, "filter": { "name": "c" } })
        .await
        .unwrap();
    let opts = r.get_document("cursor").unwrap().get_array("firstBatch").unwrap()[0]
        .as_document()
        .unwrap()
        .get_document("options")
        .unwrap()
        .clone();
    assert_eq!(opts.get_str("validationLevel").unwrap(), "moderate");
    assert_eq!(opts.get_str("validationAction").unwrap(), "warn");
    assert_eq!(
        code(&db, doc! { "collMod": "c", "validationLevel": "sometimes" }).await,
        Some(2)
    );
    assert_eq!(
        code(&db, doc! { "collMod": "missing", "validationLevel": "off" }).await,
        Some(26)
    );
}

#[tokio::test]
async fn coll_mod_changes_index_options() {
    let server = start_test_server(ServerConfig::ephemeral()).await;
    let client = client(&server).await;
    let db = client.database("cm");
    db.run_command(
        doc! { "createIndexes": "c", "indexes": [ { "key": { "t": 1 }, "name": "t_1", "expireAfterSeconds": 60 } ] },
    )
    .await
    .unwrap();
    let r = db
        .run_command(doc! { "collMod": "c", "index": { "name": "t_1", "expireAfterSeconds": 120 } })
        .await
        .unwrap();
    assert_eq!(r.get("expireAfterSeconds_old"), Some(&Bson::Int32(60)));
    assert_eq!(r.get("expireAfterSeconds_new"), Some(&Bson::Int32(120)));
    let r = db
        .run_command(doc! { "collMod": "c", "index": { "keyPattern": { "t": 1 }, "hidden": true } })
        .await
        .unwrap();
    assert!(!r.get_bool("hidden_old").unwrap());
    assert!(r.get_bool("hidden_new").unwrap());
    let r = db.run_command(doc! { "listIndexes": "c" }).await.unwrap();
    let spec = r.get_document("cursor").unwrap().get_array("firstBatch").unwrap()[1]
        .as_document()
        .unwrap()
        .clone();
    assert_eq!(
        spec,
        doc! { "v": 2, "key": { "t": 1 }, "name": "t_1", "expireAfterSeconds": 120, "hidden": true }
    );
}

#[tokio::test]
async fn update_errors_and_pipeline_updates() {
    let server = start_test_server(ServerConfig::ephemeral()).await;
    let client = client(&server).await;
    let db = client.database("ue");
    db.collection::<Document>("c")
        .insert_one(doc! { "_id": 1, "a": 1, "s": "x" })
        .await
        .unwrap();
    // Changing _id is ImmutableField (66).
    let r = db
        .run_command(doc! { "update": "c", "updates": [ { "q": { "_id": 1 }, "u": { "$set": { "_id": 2 } } } ] })
        .await
        .unwrap();
    assert_eq!(
        r.get_array("writeErrors").unwrap()[0]
            .as_document()
            .unwrap()
            .get_i32("code")
            .unwrap(),
        66
    );
    // $inc on a string: TypeMismatch (14).
    let r = db
        .run_command(doc! { "update": "c", "updates": [ { "q": { "_id": 1 }, "u": { "$inc": { "s": 1 } } } ] })
        .await
        .unwrap();
    assert_eq!(
        r.get_array("writeErrors").unwrap()[0]
            .as_document()
            .unwrap()
            .get_i32("code")
            .unwrap(),
        14
    );
    // Replacement with multi is rejected.
    let r = db
        .run_command(doc! { "update": "c", "updates": [ { "q": {}, "u": { "b": 1 }, "multi": true } ] })
        .await
        .unwrap();
    assert!(r.contains_key("writeErrors"));
    // Pipeline-style update.
    let r = db.run_command(doc! { "update": "c", "updates": [ { "q": { "_id": 1 }, "u": [ { "$set": { "b": { "$add": ["$a", 10] } } } ] } ] }).await.unwrap();
    assert_eq!(r.get_i32("nModified").unwrap(), 1);
    let d = db
        .collection::<Document>("c")
        .find_one(doc! { "_id": 1 })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d, doc! { "_id": 1, "a": 1, "s": "x", "b": 11 });
    // delete limit must be 0 or 1.
    let r = db
        .run_command(doc! { "delete": "c", "deletes": [ { "q": {}, "limit": 2 } ] })
        .await
        .unwrap();
    assert!(r.contains_key("writeErrors"));
    // writeConcern with j:true is accepted.
    let r = db
        .run_command(doc! { "insert": "c", "documents": [ { "_id": 9 } ], "writeConcern": { "w": 1, "j": true } })
        .await
        .unwrap();
    assert_eq!(r.get_i32("n").unwrap(), 1);
}

#[tokio::test]
async fn clustered_and_timeseries_options_are_listed() {
    let server = start_test_server(ServerConfig::ephemeral()).await;
    let client = client(&server).await;
    let db = client.database("opts");
    db.run_command(doc! { "create": "cl", "clusteredIndex": { "key": { "_id": 1 }, "unique": true } })
        .await
        .unwrap();
    db.run_command(
        doc! { "create": "ts", "timeseries": { "timeField": "t", "metaField": "m", "granularity": "seconds" } },
    )
    .await
    .unwrap();
    let r = db.run_command(doc! { "listCollections": 1 }).await.unwrap();
    let batch = r
        .get_document("cursor")
        .unwrap()
        .get_array("firstBatch")
        .unwrap()
        .clone();
    let find = |n: &str| {
        batch
            .iter()
            .filter_map(Bson::as_document)
            .find(|d| d.get_str("name") == Ok(n))
            .unwrap()
            .clone()
    };
    let cl = find("cl");
    assert_eq!(cl.get_str("type").unwrap(), "collection");
    assert!(cl.get_document("options").unwrap().contains_key("clusteredIndex"));
    let ts = find("ts");
    assert_eq!(ts.get_str("type").unwrap(), "timeseries");
    assert_eq!(
        ts.get_document("options")
            .unwrap()
            .get_document("timeseries")
            .unwrap()
            .get_str("timeField")
            .unwrap(),
        "t"
    );
}

#[tokio::test]
async fn array_filters_and_positional_updates() {
    // The examples of MongoDB's manual pages for `$[<identifier>]` and `$`.
    let server = start_test_server(ServerConfig::ephemeral()).await;
    let client = client(&server).await;
    let coll = client.database("af").collection::<Document>("students");
    coll.insert_many(vec![
        doc! { "_id": 1, "grades": [95, 92, 90] },
        doc! { "_id": 2, "grades": [98, 100, 102] },
        doc! { "_id": 3, "grades": [95, 110, 100] },
    ])
    .await
    .unwrap();
    let r = coll
        .update_many(
            doc! { "grades": { "$gte": 100 } },
            doc! { "$set": { "grades.$[element]": 100 } },
        )
        .array_filters(vec![doc! { "element": { "$gte": 100 } }])
        .await
        .unwrap();
    assert_eq!((r.matched_count, r.modified_count), (2, 2));
    let all = collect_all!(coll.find(doc! {}).await.unwrap());
    assert_eq!(
        all,
        vec![
            doc! { "_id": 1, "grades": [95, 92, 90] },
            doc! { "_id": 2, "grades": [98, 100, 100] },
            doc! { "_id": 3, "grades": [95, 100, 100] },
        ]
    );
    let pos = client.database("af").collection::<Document>("pos");
    pos.insert_one(doc! { "_id": 1, "grades": [85, 80, 80] }).await.unwrap();
    pos.update_one(doc! { "_id": 1, "grades": 80 }, doc! { "$set": { "grades.$": 82 } })
        .await
        .unwrap();
    assert_eq!(
        pos.find_one(doc! {}).await.unwrap().unwrap(),
        doc! { "_id": 1, "grades": [85, 82, 80] }
    );
}
