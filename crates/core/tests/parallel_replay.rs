//! The parallel replay executor against an in-process `tidemark-server`, through the official
//! driver: per-document order under several lanes, barriers, and the detection of collections
//! whose entries must stay in one lane.

use bson::{Bson, Document, doc};
use mongodb::options::{CollationStrength, CreateCollectionOptions};
use tidemark_core::replay::{ParallelReplay, serialize_existing_collections};
use tidemark_oplog::Partitioner;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn cmd(entry: Document) -> Vec<Document> {
    vec![doc! {"applyOps": [entry], "bypassDocumentValidation": false}]
}

#[test]
fn capped_and_collated_collections_are_serialized() {
    runtime().block_on(async {
        let server = tidemark_server::testing::start_test_server(tidemark_server::ServerConfig::default()).await;
        let client = mongodb::Client::with_uri_str(server.uri()).await.unwrap();
        let db = client.database("app");
        db.create_collection("plain").await.unwrap();
        db.create_collection("capped")
            .with_options(CreateCollectionOptions::builder().capped(true).size(1 << 20).build())
            .await
            .unwrap();
        let collation = mongodb::options::Collation::builder()
            .locale("en")
            .strength(CollationStrength::Secondary)
            .build();
        db.create_collection("folded")
            .with_options(CreateCollectionOptions::builder().collation(collation).build())
            .await
            .unwrap();
        let mut partitioner = Partitioner::new(4, false);
        serialize_existing_collections(&client, &mut partitioner).await.unwrap();
        assert!(partitioner.is_serialized("app.capped"));
        assert!(partitioner.is_serialized("app.folded"));
        assert!(!partitioner.is_serialized("app.plain"));
        server.shutdown().await;
    });
}

#[test]
fn each_document_keeps_its_order_across_lanes_and_barriers() {
    runtime().block_on(async {
        let server = tidemark_server::testing::start_test_server(tidemark_server::ServerConfig::default()).await;
        let client = mongodb::Client::with_uri_str(server.uri()).await.unwrap();
        client.database("app").create_collection("c").await.unwrap();
        let mut replay = ParallelReplay::new(&client, Partitioner::new(4, false));
        assert_eq!(replay.lanes(), 4);
        // 20 documents, each inserted then pushed to 50 times, interleaved; `$push` appends, so
        // any reordering of one document's entries shows in its array.
        for id in 0..20 {
            replay
                .push(cmd(doc! {"op": "i", "ns": "app.c", "o": {"_id": id, "seq": []}}), false)
                .await
                .unwrap();
        }
        for step in 0..50 {
            for id in 0..20 {
                let o = doc! {"$push": {"seq": step}};
                replay
                    .push(cmd(doc! {"op": "u", "ns": "app.c", "o": o, "o2": {"_id": id}}), false)
                    .await
                    .unwrap();
            }
            if step == 25 {
                // A barrier: the collection created here must see nothing of later lane work.
                replay
                    .push(cmd(doc! {"op": "c", "ns": "app.$cmd", "o": {"create": "after"}}), false)
                    .await
                    .unwrap();
            }
        }
        replay.finish().await.unwrap();
        let coll = client.database("app").collection::<Document>("c");
        let expected: Vec<Bson> = (0..50).map(Bson::Int32).collect();
        for id in 0..20 {
            let d = coll.find_one(doc! {"_id": id}).await.unwrap().unwrap();
            assert_eq!(d.get_array("seq").unwrap(), &expected, "document {id}");
        }
        let names = client.database("app").list_collection_names().await.unwrap();
        assert!(names.contains(&"after".to_owned()), "{names:?}");
        server.shutdown().await;
    });
}

#[test]
fn a_lane_failure_stops_the_replay_with_mongorestores_message() {
    runtime().block_on(async {
        let server = tidemark_server::testing::start_test_server(tidemark_server::ServerConfig::default()).await;
        let client = mongodb::Client::with_uri_str(server.uri()).await.unwrap();
        let mut replay = ParallelReplay::new(&client, Partitioner::new(3, false));
        // No collection app.missing: the insert fails with NamespaceNotFound.
        replay
            .push(cmd(doc! {"op": "i", "ns": "app.missing", "o": {"_id": 1}}), false)
            .await
            .unwrap();
        let err = replay
            .push(cmd(doc! {"op": "c", "ns": "app.$cmd", "o": {"create": "after"}}), false)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "restore error: error applying oplog: applyOps");
        let names = client.database("app").list_collection_names().await.unwrap();
        assert!(!names.contains(&"after".to_owned()), "{names:?}");
        server.shutdown().await;
    });
}
