//! Collections, views, capped collections, indexes and error codes through the official Rust driver. Expected
//! shapes and codes are those documented for MongoDB 7.0 (listCollections, listIndexes, error codes table).

use mongodb::bson::{Bson, Document, doc};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, IndexModel};
use tidemark_server::ServerConfig;
use tidemark_server::testing::{TestServer, start_test_server};

/// Drains a driver cursor.
macro_rules! collect_all {
    ($cursor:expr) => {{
        let mut cursor = $cursor;
        let mut out = Vec::new();
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

async fn command_code(db: &mongodb::Database, cmd: Document) -> Option<i32> {
    match db.run_command(cmd).await {
        Ok(_) => None,
        Err(e) => match *e.kind {
            mongodb::error::ErrorKind::Command(c) => Some(c.code),
            _ => None,
        },
    }
}

#[tokio::test]
async fn list_collections_entries_have_mongod_shape() {
    let server = start_test_server(ServerConfig::ephemeral()).await;
    let client = client(&server).await;
    let db = client.database("shapes");
    db.create_collection("plain").await.unwrap();
    db.run_command(doc! { "create": "cap", "capped": true, "size": 1000, "max": 3 })
        .await
        .unwrap();
    db.run_command(doc! { "create": "v", "viewOn": "plain", "pipeline": [] })
        .await
        .unwrap();
    let reply = db.run_command(doc! { "listCollections": 1 }).await.unwrap();
    let cursor = reply.get_document("cursor").unwrap();
    assert_eq!(cursor.get_str("ns").unwrap(), "shapes.$cmd.listCollections");
    assert_eq!(cursor.get_i64("id").unwrap(), 0);
    let batch = cursor.get_array("firstBatch").unwrap();
    let by_name = |n: &str| -> Document {
        batch
            .iter()
            .filter_map(Bson::as_document)
            .find(|d| d.get_str("name") == Ok(n))
            .cloned()
            .expect(n)
    };
    let plain = by_name("plain");
    let keys: Vec<&str> = plain.keys().map(String::as_str).collect();
    assert_eq!(keys, ["name", "type", "options", "info", "idIndex"]);
    assert_eq!(plain.get_str("type").unwrap(), "collection");
    assert_eq!(plain.get_document("options").unwrap(), &doc! {});
    let info = plain.get_document("info").unwrap();
    assert!(!info.get_bool("readOnly").unwrap());
    match info.get("uuid") {
        Some(Bson::Binary(b)) => {
            assert_eq!(b.subtype, mongodb::bson::spec::BinarySubtype::Uuid);
            assert_eq!(b.bytes.len(), 16);
        }
        other => panic!("uuid must be a UUID binary, got {other:?}"),
    }
    assert_eq!(
        plain.get_document("idIndex").unwrap(),
        &doc! { "v": 2, "key": { "_id": 1 }, "name": "_id_" }
    );
    // mongod rounds a capped size up to a multiple of 256 bytes.
    let cap = by_name("cap");
    let opts = cap.get_document("options").unwrap();
    assert!(opts.get_bool("capped").unwrap());
    assert_eq!(opts.get("size"), Some(&Bson::Int32(1024)));
    assert_eq!(opts.get("max"), Some(&Bson::Int32(3)));
    let view = by_name("v");
    assert_eq!(view.get_str("type").unwrap(), "view");
    assert_eq!(
        view.get_document("options").unwrap(),
        &doc! { "viewOn": "plain", "pipeline": [] }
    );
    assert!(view.get_document("info").unwrap().get_bool("readOnly").unwrap());
    assert!(!view.contains_key("idIndex"));

    let names = db
        .list_collection_names()
        .filter(doc! { "type": "view" })
        .await
        .unwrap();
    assert_eq!(names, vec!["v".to_string()]);
    let reply = db
        .run_command(doc! { "listCollections": 1, "nameOnly": true, "filter": { "name": "plain" } })
        .await
        .unwrap();
    let first = reply.get_document("cursor").unwrap().get_array("firstBatch").unwrap();
    assert_eq!(
        first,
        &vec![Bson::Document(doc! { "name": "plain", "type": "collection" })]
    );
}

#[tokio::test]
async fn list_indexes_keeps_specs_and_id_first() {
    let server = start_test_server(ServerConfig::ephemeral()).await;
    let client = client(&server).await;
    let coll = client.database("idx").collection::<Document>("c");
    coll.insert_one(doc! { "a": 1 }).await.unwrap();
    let db = client.database("idx");
    db.run_command(doc! { "createIndexes": "c", "indexes": [
        { "key": { "b": -1, "a": 1 }, "name": "b_-1_a_1", "sparse": true },
        { "key": { "t": "text" }, "name": "t_text", "weights": { "t": 3 } },
        { "key": { "e": 1 }, "name": "ttl", "expireAfterSeconds": 3600_i64 },
    ] })
    .await
    .unwrap();
    let specs = collect_all!(coll.list_indexes().await.unwrap());
    let names: Vec<String> = specs
        .iter()
        .map(|m| m.options.as_ref().and_then(|o| o.name.clone()).unwrap_or_default())
        .collect();
    assert_eq!(names, ["_id_", "b_-1_a_1", "t_text", "ttl"]);
    // Raw specs keep key order and option types.
    let reply = db.run_command(doc! { "listIndexes": "c" }).await.unwrap();
    let cursor = reply.get_document("cursor").unwrap();
    assert_eq!(cursor.get_str("ns").unwrap(), "idx.$cmd.listIndexes.c");
    let batch = cursor.get_array("firstBatch").unwrap();
    assert_eq!(
        batch[0].as_document().unwrap(),
        &doc! { "v": 2, "key": { "_id": 1 }, "name": "_id_" }
    );
    let compound = batch[1].as_document().unwrap();
    assert_eq!(
        compound,
        &doc! { "v": 2, "key": { "b": -1, "a": 1 }, "name": "b_-1_a_1", "sparse": true }
    );
    assert_eq!(
        batch[3].as_document().unwrap().get("expireAfterSeconds"),
        Some(&Bson::Int64(3600))
    );

    // Same key, different name → IndexOptionsConflict (85); same name, different key → 86.
    assert_eq!(
        command_code(&db, doc! { "createIndexes": "c", "indexes": [ { "key": { "e": 1 }, "name": "other", "expireAfterSeconds": 3600_i64 } ] }).await,
        Some(85)
    );
    assert_eq!(
        command_code(
            &db,
            doc! { "createIndexes": "c", "indexes": [ { "key": { "zz": 1 }, "name": "ttl" } ] }
        )
        .await,
        Some(86)
    );
    // Re-creating an identical index is a no-op.
    let r = db.run_command(doc! { "createIndexes": "c", "indexes": [ { "key": { "t": "text" }, "name": "t_text", "weights": { "t": 3 } } ] }).await.unwrap();
    assert_eq!(r.get_str("note").unwrap(), "all indexes already exist");

    // Drop by key pattern, by name, by list; _id_ cannot be dropped; unknown names are IndexNotFound (27).
    db.run_command(doc! { "dropIndexes": "c", "index": { "b": -1, "a": 1 } })
        .await
        .unwrap();
    assert_eq!(
        command_code(&db, doc! { "dropIndexes": "c", "index": "_id_" }).await,
        Some(72)
    );
    assert_eq!(
        command_code(&db, doc! { "dropIndexes": "c", "index": "nope" }).await,
        Some(27)
    );
    db.run_command(doc! { "dropIndexes": "c", "index": ["t_text"] })
        .await
        .unwrap();
    let r = db.run_command(doc! { "dropIndexes": "c", "index": "*" }).await.unwrap();
    assert_eq!(r.get_i32("nIndexesWas").unwrap(), 2);
    let left = collect_all!(coll.list_indexes().await.unwrap());
    assert_eq!(left.len(), 1);
    assert_eq!(command_code(&db, doc! { "listIndexes": "missing" }).await, Some(26));

    let model = IndexModel::builder()
        .keys(doc! { "u": 1 })
        .options(IndexOptions::builder().unique(true).build())
        .build();
    coll.create_index(model).await.unwrap();
}

#[tokio::test]
async fn capped_collections_roll_over_in_natural_order() {
    let server = start_test_server(ServerConfig::ephemeral()).await;
    let client = client(&server).await;
    let db = client.database("cap");
    db.run_command(doc! { "create": "log", "capped": true, "size": 100000, "max": 3 })
        .await
        .unwrap();
    let coll = db.collection::<Document>("log");
    for i in 0..5 {
        coll.insert_one(doc! { "_id": i }).await.unwrap();
    }
    let docs = collect_all!(coll.find(doc! {}).await.unwrap());
    assert_eq!(docs, vec![doc! { "_id": 2 }, doc! { "_id": 3 }, doc! { "_id": 4 }]);
    // Size-bounded: a 4096-byte cap holds only the newest ~1 KiB documents.
    db.run_command(doc! { "create": "bytes", "capped": true, "size": 4096 })
        .await
        .unwrap();
    let coll = db.collection::<Document>("bytes");
    let pad = "x".repeat(1000);
    for i in 0..10 {
        coll.insert_one(doc! { "_id": i, "pad": pad.clone() }).await.unwrap();
    }
    let ids: Vec<i32> = collect_all!(coll.find(doc! {}).await.unwrap())
        .iter()
        .map(|d| d.get_i32("_id").unwrap())
        .collect();
    assert!(ids.len() >= 3 && ids.len() <= 4, "{ids:?}");
    assert_eq!(*ids.last().unwrap(), 9);
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1));
    let stats = db.run_command(doc! { "collStats": "bytes" }).await.unwrap();
    assert!(stats.get_bool("capped").unwrap());
}

#[tokio::test]
async fn views_are_readable_and_not_writable() {
    let server = start_test_server(ServerConfig::ephemeral()).await;
    let client = client(&server).await;
    let db = client.database("views");
    let base = db.collection::<Document>("base");
    base.insert_many(vec![doc! { "_id": 1, "k": "a" }, doc! { "_id": 2, "k": "b" }])
        .await
        .unwrap();
    db.run_command(doc! { "create": "all", "viewOn": "base" })
        .await
        .unwrap();
    let view = db.collection::<Document>("all");
    let docs = collect_all!(view.find(doc! {}).await.unwrap());
    assert_eq!(docs.len(), 2);
    assert_eq!(view.count_documents(doc! {}).await.unwrap(), 2);
    let err = view.insert_one(doc! { "x": 1 }).await.unwrap_err();
    match *err.kind {
        mongodb::error::ErrorKind::Command(c) => assert_eq!(c.code, 166),
        other => panic!("expected CommandNotSupportedOnView, got {other:?}"),
    }
}

#[tokio::test]
async fn documented_error_codes() {
    let server = start_test_server(ServerConfig::ephemeral()).await;
    let client = client(&server).await;
    let db = client.database("errs");
    // CommandNotFound (59), with mongod's message.
    let err = db.run_command(doc! { "frobnicate": 1 }).await.unwrap_err();
    match *err.kind {
        mongodb::error::ErrorKind::Command(c) => {
            assert_eq!(c.code, 59);
            assert_eq!(c.code_name, "CommandNotFound");
            assert_eq!(c.message, "no such command: 'frobnicate'");
        }
        other => panic!("{other:?}"),
    }
    // NamespaceNotFound (26).
    assert_eq!(command_code(&db, doc! { "collStats": "missing" }).await, Some(26));
    assert_eq!(
        command_code(&db, doc! { "renameCollection": "errs.missing", "to": "errs.other" }).await,
        Some(13)
    );
    let admin = client.database("admin");
    assert_eq!(
        command_code(&admin, doc! { "renameCollection": "errs.missing", "to": "errs.other" }).await,
        Some(26)
    );
    // InvalidNamespace (73).
    assert_eq!(
        command_code(&db, doc! { "insert": "a$b", "documents": [ {} ] }).await,
        Some(73)
    );
    assert_eq!(command_code(&db, doc! { "create": "" }).await, Some(73));
    assert_eq!(
        command_code(&client.database("bad.db"), doc! { "create": "c" }).await,
        Some(73)
    );
    // NamespaceExists (48) for a create with different options.
    db.run_command(doc! { "create": "c1" }).await.unwrap();
    db.run_command(doc! { "create": "c1" }).await.unwrap();
    assert_eq!(
        command_code(&db, doc! { "create": "c1", "capped": true, "size": 4096 }).await,
        Some(48)
    );
    // Dropping a missing collection succeeds (MongoDB 7.0).
    db.run_command(doc! { "drop": "nothing" }).await.unwrap();
    // getMore on an unknown cursor: CursorNotFound (43).
    assert_eq!(
        command_code(&db, doc! { "getMore": 12345_i64, "collection": "c1" }).await,
        Some(43)
    );
}

#[tokio::test]
async fn rename_drop_and_list_databases() {
    let server = start_test_server(ServerConfig::ephemeral()).await;
    let client = client(&server).await;
    let db = client.database("r1");
    db.collection::<Document>("a")
        .insert_one(doc! { "x": 1 })
        .await
        .unwrap();
    db.collection::<Document>("b")
        .insert_one(doc! { "y": 1 })
        .await
        .unwrap();
    let admin = client.database("admin");
    assert_eq!(
        command_code(&admin, doc! { "renameCollection": "r1.a", "to": "r1.b" }).await,
        Some(48)
    );
    admin
        .run_command(doc! { "renameCollection": "r1.a", "to": "r1.b", "dropTarget": true })
        .await
        .unwrap();
    let names = db.list_collection_names().await.unwrap();
    assert_eq!(names, vec!["b".to_string()]);
    let b = db.collection::<Document>("b").find_one(doc! {}).await.unwrap().unwrap();
    assert_eq!(b.get_i32("x").unwrap(), 1);
    let dbs = client.list_database_names().await.unwrap();
    assert!(dbs.contains(&"r1".to_string()));
    let full = admin.run_command(doc! { "listDatabases": 1 }).await.unwrap();
    let entry = full
        .get_array("databases")
        .unwrap()
        .iter()
        .filter_map(Bson::as_document)
        .find(|d| d.get_str("name") == Ok("r1"))
        .unwrap()
        .clone();
    assert!(entry.get_i64("sizeOnDisk").unwrap() > 0);
    assert!(!entry.get_bool("empty").unwrap());
    assert!(full.get_i64("totalSize").unwrap() > 0);
    let filtered = admin
        .run_command(doc! { "listDatabases": 1, "nameOnly": true, "filter": { "name": "nomatch" } })
        .await
        .unwrap();
    assert!(filtered.get_array("databases").unwrap().is_empty());
    db.drop().await.unwrap();
    assert!(!client.list_database_names().await.unwrap().contains(&"r1".to_string()));
}

#[tokio::test]
async fn list_databases_shows_only_authorized_databases_under_auth() {
    let server = start_test_server(ServerConfig {
        auth: true,
        ..ServerConfig::ephemeral()
    })
    .await;
    // The localhost exception lets the first user be created without credentials.
    let anon = client(&server).await;
    anon.database("admin")
        .run_command(doc! { "createUser": "root", "pwd": "rootpw", "roles": [ { "role": "root", "db": "admin" } ] })
        .await
        .unwrap();
    let with_user = |user: &str, pwd: &str| {
        let uri = format!("mongodb://{user}:{pwd}@{}/?authSource=admin", server.addr);
        async move {
            let mut opts = ClientOptions::parse(uri).await.unwrap();
            opts.server_selection_timeout = Some(std::time::Duration::from_secs(5));
            Client::with_options(opts).unwrap()
        }
    };
    let root = with_user("root", "rootpw").await;
    root.database("appdb")
        .collection::<Document>("c")
        .insert_one(doc! { "x": 1 })
        .await
        .unwrap();
    root.database("otherdb")
        .collection::<Document>("c")
        .insert_one(doc! { "x": 1 })
        .await
        .unwrap();
    root.database("admin")
        .run_command(doc! { "createUser": "app", "pwd": "apppw", "roles": [ { "role": "readWrite", "db": "appdb" } ] })
        .await
        .unwrap();
    let app = with_user("app", "apppw").await;
    assert_eq!(app.list_database_names().await.unwrap(), vec!["appdb".to_string()]);
    let all = root.list_database_names().await.unwrap();
    assert!(all.contains(&"appdb".to_string()) && all.contains(&"otherdb".to_string()));
}

#[tokio::test]
async fn restore_style_create_and_create_indexes_are_normalised() {
    // mongorestore sends `idIndex` and index specs with `ns`, without `v`, with an explicit simple
    // collation and `ignoreUnknownIndexOptions`; mongod stores them in its canonical form.
    let server = start_test_server(ServerConfig::ephemeral()).await;
    let client = client(&server).await;
    let db = client.database("rs");
    db.run_command(doc! { "create": "c", "idIndex": { "key": { "_id": 1 }, "name": "_id_", "ns": "rs.c" } })
        .await
        .unwrap();
    db.run_command(doc! {
        "createIndexes": "c",
        "indexes": [ { "key": { "a": 1 }, "name": "a_1", "ns": "rs.c", "collation": { "locale": "simple" } } ],
        "ignoreUnknownIndexOptions": true,
    })
    .await
    .unwrap();
    let r = db.run_command(doc! { "listCollections": 1 }).await.unwrap();
    let entry = r.get_document("cursor").unwrap().get_array("firstBatch").unwrap()[0]
        .as_document()
        .unwrap()
        .clone();
    assert_eq!(entry.get_document("options").unwrap(), &doc! {});
    assert_eq!(
        entry.get_document("idIndex").unwrap(),
        &doc! { "v": 2, "key": { "_id": 1 }, "name": "_id_" }
    );
    let r = db.run_command(doc! { "listIndexes": "c" }).await.unwrap();
    let specs = r
        .get_document("cursor")
        .unwrap()
        .get_array("firstBatch")
        .unwrap()
        .clone();
    assert_eq!(
        specs[1].as_document().unwrap(),
        &doc! { "v": 2, "key": { "a": 1 }, "name": "a_1" }
    );
    let p = client
        .database("admin")
        .run_command(doc! { "getParameter": 1, "authSchemaVersion": 1 })
        .await
        .unwrap();
    assert_eq!(p.get_i32("authSchemaVersion").unwrap(), 5);
}
