//! Exchanges with the real mongodump/mongorestore where the server once answered differently from mongod,
//! replayed through the official Rust driver so that they need no real tool.
//!
//! Index specs: mongod stores and lists a text index with its text fields folded into `_fts: "text", _ftsx: 1`
//! plus `weights`, `default_language`, `language_override` and `textIndexVersion: 3`, and a `2dsphere` index
//! with `2dsphereIndexVersion: 3` (MongoDB manual, "Text Indexes" and "2dsphere Indexes"; the text form is
//! also what the real `index_collation.json` fixture of mongo-tools holds). mongodump copies `listIndexes`
//! output verbatim into `<coll>.metadata.json` and mongorestore sends those specs back in `createIndexes`,
//! so both the creation from a user's spec and the re-creation from the stored form must give that form.

use std::path::PathBuf;
use std::time::Duration;

use mongodb::bson::{Bson, Document, doc};
use mongodb::options::ClientOptions;
use mongodb::{Client, Database};
use tidemark_server::ServerConfig;
use tidemark_server::testing::{TestServer, start_test_server};

async fn start() -> (TestServer, Client) {
    let server = start_test_server(ServerConfig::ephemeral()).await;
    let mut opts = ClientOptions::parse(server.uri()).await.expect("uri");
    opts.server_selection_timeout = Some(Duration::from_secs(5));
    (server, Client::with_options(opts).expect("client"))
}

/// The `listIndexes` documents of `db.coll`, in server order.
async fn list_indexes(db: &Database, coll: &str) -> Vec<Document> {
    let reply = db.run_command(doc! { "listIndexes": coll }).await.expect("listIndexes");
    reply
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .expect("cursor.firstBatch")
        .iter()
        .map(|b| b.as_document().expect("index document").clone())
        .collect()
}

fn named<'a>(indexes: &'a [Document], name: &str) -> &'a Document {
    indexes
        .iter()
        .find(|i| i.get_str("name") == Ok(name))
        .unwrap_or_else(|| panic!("no index {name} in {indexes:?}"))
}

fn keys(d: &Document) -> Vec<&str> {
    d.keys().map(String::as_str).collect()
}

/// The `example_text` index of the real mongo-tools fixture `index_collation.json` (canonical Extended
/// JSON written by mongodump from a real mongod), without its pre-4.4 `ns` field.
fn fixture_text_index() -> Document {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/mongo-tools/mongorestore/testdata/index_collation.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).expect("fixture JSON");
    let Bson::Document(meta) = Bson::try_from(json).expect("fixture Extended JSON") else {
        panic!("fixture is not a document")
    };
    let mut index = meta
        .get_array("indexes")
        .expect("indexes")
        .iter()
        .filter_map(Bson::as_document)
        .find(|i| i.get_str("name") == Ok("example_text"))
        .expect("example_text index in the fixture")
        .clone();
    index.remove("ns");
    index
}

/// The same fields with the same values, in any order (the fixture's JSON was written with unordered keys).
fn same_fields(a: &Document, b: &Document) -> bool {
    a.len() == b.len() && a.iter().all(|(k, v)| b.get(k) == Some(v))
}

#[tokio::test]
async fn text_index_is_listed_in_mongod_stored_form() {
    let (server, client) = start().await;
    let db = client.database("rt_text");
    db.run_command(
        doc! { "createIndexes": "foo", "indexes": [ { "key": { "name": "text" }, "name": "example_text" } ] },
    )
    .await
    .expect("createIndexes");
    let listed = list_indexes(&db, "foo").await;
    let text = named(&listed, "example_text");
    let fixture = fixture_text_index();
    assert!(
        same_fields(text, &fixture),
        "listed {text}, real mongod stored {fixture}"
    );
    assert_eq!(
        keys(text),
        [
            "v",
            "key",
            "name",
            "weights",
            "default_language",
            "language_override",
            "textIndexVersion"
        ]
    );
    assert_eq!(
        text.get_document("key").expect("key"),
        &doc! { "_fts": "text", "_ftsx": 1 }
    );

    // The same user spec again is the same index.
    let again = db
        .run_command(
            doc! { "createIndexes": "foo", "indexes": [ { "key": { "name": "text" }, "name": "example_text" } ] },
        )
        .await
        .expect("createIndexes again");
    assert_eq!(again.get_str("note"), Ok("all indexes already exist"));

    // mongorestore sends the stored form back (the fixture's spec, `ns` removed): the result is identical.
    db.run_command(doc! { "createIndexes": "restored", "indexes": [ fixture.clone() ] })
        .await
        .expect("createIndexes from metadata");
    let restored = list_indexes(&db, "restored").await;
    assert_eq!(named(&restored, "example_text"), text);
    server.shutdown().await;
}

#[tokio::test]
async fn compound_text_index_with_weights() {
    let (server, client) = start().await;
    let db = client.database("rt_text2");
    db.run_command(doc! { "createIndexes": "c", "indexes": [ {
        "key": { "a": 1, "title": "text", "body": "text" },
        "name": "a_text",
        "weights": { "title": 10 },
        "default_language": "spanish",
        "sparse": false,
    } ] })
    .await
    .expect("createIndexes");
    let listed = list_indexes(&db, "c").await;
    let spec = named(&listed, "a_text");
    // Prefix fields stay in place, the text fields become `_fts`/`_ftsx`; every text field gets a weight
    // (1 unless given), listed in field-name order; given options come before the text options.
    assert_eq!(
        spec.get_document("key").expect("key"),
        &doc! { "a": 1, "_fts": "text", "_ftsx": 1 }
    );
    assert_eq!(
        spec.get_document("weights").expect("weights"),
        &doc! { "body": 1, "title": 10 }
    );
    assert_eq!(spec.get_str("default_language"), Ok("spanish"));
    assert_eq!(spec.get_str("language_override"), Ok("language"));
    assert_eq!(spec.get_i32("textIndexVersion"), Ok(3));
    assert_eq!(
        keys(spec),
        [
            "v",
            "key",
            "name",
            "sparse",
            "weights",
            "default_language",
            "language_override",
            "textIndexVersion"
        ]
    );

    let bad = db
        .run_command(doc! { "createIndexes": "c", "indexes": [ {
            "key": { "t": "text" }, "name": "t_text", "weights": { "t": "heavy" },
        } ] })
        .await;
    assert!(bad.is_err(), "a non-numeric weight must be refused");
    server.shutdown().await;
}

#[tokio::test]
async fn two_d_sphere_index_records_its_version() {
    let (server, client) = start().await;
    let db = client.database("rt_geo");
    db.run_command(doc! { "createIndexes": "places", "indexes": [
        { "key": { "loc": "2dsphere" }, "name": "loc_2dsphere" },
        { "key": { "old": "2dsphere" }, "name": "old_2dsphere", "2dsphereIndexVersion": 2 },
        { "key": { "flat": "2d" }, "name": "flat_2d" },
    ] })
    .await
    .expect("createIndexes");
    let listed = list_indexes(&db, "places").await;
    assert_eq!(
        named(&listed, "loc_2dsphere"),
        &doc! { "v": 2, "key": { "loc": "2dsphere" }, "name": "loc_2dsphere", "2dsphereIndexVersion": 3 }
    );
    assert_eq!(named(&listed, "old_2dsphere").get_i32("2dsphereIndexVersion"), Ok(2));
    assert_eq!(
        named(&listed, "flat_2d"),
        &doc! { "v": 2, "key": { "flat": "2d" }, "name": "flat_2d" }
    );
    server.shutdown().await;
}
