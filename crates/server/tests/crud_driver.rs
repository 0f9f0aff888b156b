//! CRUD, cursors, indexes and errors through the official Rust driver, against documented MongoDB behaviour.

use mongodb::bson::{Bson, Document, doc, oid::ObjectId};
use mongodb::options::{ClientOptions, FindOptions, IndexOptions, InsertManyOptions};
use mongodb::{Client, IndexModel};
use tidemark_server::ServerConfig;
use tidemark_server::testing::{TestServer, start_test_server};

async fn client(server: &TestServer) -> Client {
    let mut opts = ClientOptions::parse(server.uri()).await.expect("parse uri");
    opts.server_selection_timeout = Some(std::time::Duration::from_secs(5));
    Client::with_options(opts).expect("client")
}

fn code_of(e: &mongodb::error::Error) -> Option<i32> {
    use mongodb::error::{ErrorKind, WriteFailure};
    match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::InsertMany(im) => im.write_errors.as_ref().and_then(|w| w.first()).map(|w| w.code),
        _ => None,
    }
}

#[tokio::test]
async fn insert_find_update_delete() {
    let server = start_test_server(ServerConfig::ephemeral()).await;
    let client = client(&server).await;
    let coll = client.database("shop").collection::<Document>("items");
    let res = coll
        .insert_one(doc! { "name": "apple", "qty": 5 })
        .await
        .expect("insert");
    assert!(matches!(res.inserted_id, Bson::ObjectId(_)));
    coll.insert_many(vec![
        doc! { "_id": 1, "name": "pear", "qty": 2 },
        doc! { "_id": 2, "name": "fig", "qty": 9 },
    ])
    .await
    .expect("insert many");
    // A generated _id is placed first, as mongod does.
    let apple = coll.find_one(doc! { "name": "apple" }).await.unwrap().expect("apple");
    assert_eq!(apple.keys().next().map(String::as_str), Some("_id"));
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 3);
    assert_eq!(coll.count_documents(doc! { "qty": { "$gt": 3 } }).await.unwrap(), 2);

    let r = coll
        .update_one(doc! { "_id": 1 }, doc! { "$inc": { "qty": 10 } })
        .await
        .unwrap();
    assert_eq!((r.matched_count, r.modified_count), (1, 1));
    let pear = coll.find_one(doc! { "_id": 1 }).await.unwrap().unwrap();
    assert_eq!(pear.get_i32("qty").unwrap(), 12);
    // Setting a field to its current value matches but does not modify.
    let r = coll
        .update_one(doc! { "_id": 1 }, doc! { "$set": { "qty": 12 } })
        .await
        .unwrap();
    assert_eq!((r.matched_count, r.modified_count), (1, 0));
    let r = coll
        .update_many(doc! {}, doc! { "$set": { "seen": true } })
        .await
        .unwrap();
    assert_eq!((r.matched_count, r.modified_count), (3, 3));

    let r = coll
        .replace_one(doc! { "_id": 2 }, doc! { "name": "fig", "qty": 1 })
        .await
        .unwrap();
    assert_eq!(r.modified_count, 1);
    let fig = coll.find_one(doc! { "_id": 2 }).await.unwrap().unwrap();
    assert_eq!(fig, doc! { "_id": 2, "name": "fig", "qty": 1 });

    let d = coll.delete_one(doc! { "_id": 2 }).await.unwrap();
    assert_eq!(d.deleted_count, 1);
    let d = coll.delete_many(doc! {}).await.unwrap();
    assert_eq!(d.deleted_count, 2);
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 0);
}

#[tokio::test]
async fn documents_round_trip_byte_for_byte() {
    let server = start_test_server(ServerConfig::ephemeral()).await;
    let client = client(&server).await;
    let coll = client.database("t").collection::<mongodb::bson::RawDocumentBuf>("raw");
    let original = mongodb::bson::rawdoc! {
        "_id": ObjectId::new(), "z": 1.5, "a": { "nested": [1_i64, "two", null] },
        "int": 7, "long": 7_i64, "bin": mongodb::bson::Binary { subtype: mongodb::bson::spec::BinarySubtype::Generic, bytes: vec![0, 1, 2] },
    };
    coll.insert_one(&original).await.unwrap();
    let back = coll.find_one(doc! {}).await.unwrap().unwrap();
    assert_eq!(back.as_bytes(), original.as_bytes());
}

#[tokio::test]
async fn cursors_span_several_batches() {
    let server = start_test_server(ServerConfig::ephemeral()).await;
    let client = client(&server).await;
    let coll = client.database("t").collection::<Document>("many");
    let docs: Vec<Document> = (0..1000).map(|i| doc! { "_id": i, "v": i % 7 }).collect();
    coll.insert_many(docs).await.unwrap();
    // Default batching: 101 documents in the first batch, the rest via getMore.
    let mut cursor = coll.find(doc! {}).await.unwrap();
    let mut ids = Vec::new();
    while cursor.advance().await.unwrap() {
        ids.push(cursor.deserialize_current().unwrap().get_i32("_id").unwrap());
    }
    assert_eq!(ids, (0..1000).collect::<Vec<_>>());
    // Small explicit batch size and a filter.
    let opts = FindOptions::builder().batch_size(3).build();
    let mut cursor = coll.find(doc! { "v": 0 }).with_options(opts).await.unwrap();
    let mut n = 0;
    while cursor.advance().await.unwrap() {
        n += 1;
    }
    assert_eq!(n, (0..1000).filter(|i| i % 7 == 0).count());
    // Sort, skip and limit.
    let opts = FindOptions::builder()
        .sort(doc! { "_id": -1 })
        .skip(10)
        .limit(5)
        .build();
    let mut cursor = coll.find(doc! {}).with_options(opts).await.unwrap();
    let mut got = Vec::new();
    while cursor.advance().await.unwrap() {
        got.push(cursor.deserialize_current().unwrap().get_i32("_id").unwrap());
    }
    assert_eq!(got, vec![989, 988, 987, 986, 985]);
    // Reverse natural order via hint.
    let opts = FindOptions::builder()
        .hint(mongodb::options::Hint::Keys(doc! { "$natural": -1 }))
        .limit(2)
        .build();
    let mut cursor = coll.find(doc! {}).with_options(opts).await.unwrap();
    let mut got = Vec::new();
    while cursor.advance().await.unwrap() {
        got.push(cursor.deserialize_current().unwrap().get_i32("_id").unwrap());
    }
    assert_eq!(got, vec![999, 998]);
}

#[tokio::test]
async fn unique_index_violations_report_11000() {
    let server = start_test_server(ServerConfig::ephemeral()).await;
    let client = client(&server).await;
    let coll = client.database("t").collection::<Document>("u");
    coll.insert_one(doc! { "_id": 1, "email": "a@x" }).await.unwrap();
    let err = coll.insert_one(doc! { "_id": 1 }).await.unwrap_err();
    assert_eq!(code_of(&err), Some(11000));
    // Same key value with another numeric type is the same key (1 == 1.0 in MongoDB).
    let err = coll.insert_one(doc! { "_id": 1.0 }).await.unwrap_err();
    assert_eq!(code_of(&err), Some(11000));

    let model = IndexModel::builder()
        .keys(doc! { "email": 1 })
        .options(IndexOptions::builder().unique(true).build())
        .build();
    coll.create_index(model).await.unwrap();
    let err = coll.insert_one(doc! { "_id": 2, "email": "a@x" }).await.unwrap_err();
    assert_eq!(code_of(&err), Some(11000));

    // An unordered batch keeps going after the duplicate; an ordered one stops.
    let opts = InsertManyOptions::builder().ordered(false).build();
    let err = coll
        .insert_many(vec![
            doc! { "_id": 3, "email": "b" },
            doc! { "_id": 4, "email": "b" },
            doc! { "_id": 5, "email": "c" },
        ])
        .with_options(opts)
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), Some(11000));
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 3);

    // Building a unique index over duplicate data fails with 11000.
    let other = client.database("t").collection::<Document>("dups");
    other.insert_many(vec![doc! { "k": 1 }, doc! { "k": 1 }]).await.unwrap();
    let model = IndexModel::builder()
        .keys(doc! { "k": 1 })
        .options(IndexOptions::builder().unique(true).build())
        .build();
    let err = other.create_index(model).await.unwrap_err();
    assert_eq!(code_of(&err), Some(11000));
}

#[tokio::test]
async fn duplicate_key_error_shape_matches_mongod() {
    let server = start_test_server(ServerConfig::ephemeral()).await;
    let client = client(&server).await;
    let db = client.database("test");
    db.run_command(doc! { "insert": "c", "documents": [ { "_id": 1 } ] })
        .await
        .unwrap();
    let reply = db
        .run_command(doc! { "insert": "c", "documents": [ { "_id": 1 } ] })
        .await
        .unwrap();
    assert_eq!(reply.get_i32("n").unwrap(), 0);
    let errors = reply.get_array("writeErrors").unwrap();
    let e = errors[0].as_document().unwrap();
    assert_eq!(e.get_i32("index").unwrap(), 0);
    assert_eq!(e.get_i32("code").unwrap(), 11000);
    assert_eq!(e.get_document("keyPattern").unwrap(), &doc! { "_id": 1 });
    assert_eq!(e.get_document("keyValue").unwrap(), &doc! { "_id": 1 });
    assert_eq!(
        e.get_str("errmsg").unwrap(),
        "E11000 duplicate key error collection: test.c index: _id_ dup key: { _id: 1 }"
    );
}

#[tokio::test]
async fn upserts_report_the_new_id() {
    let server = start_test_server(ServerConfig::ephemeral()).await;
    let client = client(&server).await;
    let coll = client.database("t").collection::<Document>("up");
    let opts = mongodb::options::UpdateOptions::builder().upsert(true).build();
    let r = coll
        .update_one(doc! { "sku": "x1" }, doc! { "$set": { "qty": 3 } })
        .with_options(opts.clone())
        .await
        .unwrap();
    assert_eq!((r.matched_count, r.modified_count), (0, 0));
    let id = r.upserted_id.expect("upserted id");
    let d = coll.find_one(doc! { "_id": id.clone() }).await.unwrap().unwrap();
    // The equality fields of the filter become part of the inserted document.
    assert_eq!(d.get_str("sku").unwrap(), "x1");
    assert_eq!(d.get_i32("qty").unwrap(), 3);
    let r = coll
        .update_one(doc! { "sku": "x1" }, doc! { "$set": { "qty": 4 } })
        .with_options(opts)
        .await
        .unwrap();
    assert_eq!((r.matched_count, r.modified_count, r.upserted_id), (1, 1, None));
    // Upsert with an explicit _id in the filter keeps that _id.
    let reply = client
        .database("t")
        .run_command(
            doc! { "update": "up", "updates": [ { "q": { "_id": 77 }, "u": { "$set": { "a": 1 } }, "upsert": true } ] },
        )
        .await
        .unwrap();
    assert_eq!(reply.get_i32("n").unwrap(), 1);
    assert_eq!(reply.get_i32("nModified").unwrap(), 0);
    assert_eq!(
        reply.get_array("upserted").unwrap()[0].as_document().unwrap(),
        &doc! { "index": 0, "_id": 77 }
    );
}

#[tokio::test]
async fn find_and_modify_variants() {
    let server = start_test_server(ServerConfig::ephemeral()).await;
    let client = client(&server).await;
    let coll = client.database("t").collection::<Document>("fam");
    coll.insert_many(vec![doc! { "_id": 1, "n": 1 }, doc! { "_id": 2, "n": 2 }])
        .await
        .unwrap();
    let before = coll
        .find_one_and_update(doc! { "_id": 1 }, doc! { "$inc": { "n": 5 } })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(before, doc! { "_id": 1, "n": 1 });
    let after = coll
        .find_one_and_update(doc! { "_id": 1 }, doc! { "$inc": { "n": 1 } })
        .return_document(mongodb::options::ReturnDocument::After)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after, doc! { "_id": 1, "n": 7 });
    let removed = coll
        .find_one_and_delete(doc! {})
        .sort(doc! { "n": 1 })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(removed, doc! { "_id": 2, "n": 2 });
    let none = coll.find_one_and_delete(doc! { "_id": 99 }).await.unwrap();
    assert!(none.is_none());
    let up = coll
        .find_one_and_replace(doc! { "_id": 5 }, doc! { "x": 1 })
        .upsert(true)
        .return_document(mongodb::options::ReturnDocument::After)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(up, doc! { "_id": 5, "x": 1 });
}

#[tokio::test]
async fn distinct_unwinds_arrays_and_merges_numeric_types() {
    let server = start_test_server(ServerConfig::ephemeral()).await;
    let client = client(&server).await;
    let coll = client.database("t").collection::<Document>("d");
    coll.insert_many(vec![
        doc! { "tags": ["a", "b"], "n": 1 },
        doc! { "tags": "b", "n": 1.0 },
        doc! { "n": 2_i64 },
    ])
    .await
    .unwrap();
    let tags = coll.distinct("tags", doc! {}).await.unwrap();
    assert_eq!(tags, vec![Bson::String("a".into()), Bson::String("b".into())]);
    let ns = coll.distinct("n", doc! {}).await.unwrap();
    assert_eq!(ns.len(), 2);
}
