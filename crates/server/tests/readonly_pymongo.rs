//! `--queryableBackupMode`: the real `tidemark-server` binary serves a data directory written by an
//! earlier run, read-only; pymongo (an independent driver) reads it and sees every kind of write
//! refused with mongod's read-only error (IllegalOperation, 20). The checks live in
//! `readonly_pymongo.py`.

mod support;

use mongodb::bson::doc;

#[test]
fn pymongo_reads_and_every_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dbpath = dir.path().to_str().unwrap();
    let mut writable = support::ServerProcess::start(&["--dbpath", dbpath]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = mongodb::Client::with_uri_str(format!("mongodb://127.0.0.1:{}", writable.port))
            .await
            .unwrap();
        let coll = client.database("shop").collection("orders");
        coll.insert_many((0..20).map(|i| doc! {"_id": i, "total": f64::from(i) * 1.5, "expires": mongodb::bson::DateTime::from_millis(0)}))
            .await
            .unwrap();
        // A TTL index over long-expired dates: loaded with the data directory like any index.
        client
            .database("shop")
            .run_command(doc! {"createIndexes": "orders", "indexes": [{"key": {"expires": 1}, "name": "ttl", "expireAfterSeconds": 0}]})
            .await
            .unwrap();
    });
    writable.terminate();
    let server = support::ServerProcess::start(&["--dbpath", dbpath, "--queryableBackupMode"]);
    support::run_pymongo_script("readonly_pymongo.py", server.port, &["shop", "orders"]);
    // The official Rust driver sees the same: reads work, a write fails with IllegalOperation (20).
    runtime.block_on(async {
        let client = mongodb::Client::with_uri_str(format!("mongodb://127.0.0.1:{}", server.port))
            .await
            .unwrap();
        let coll = client.database("shop").collection::<mongodb::bson::Document>("orders");
        assert_eq!(coll.count_documents(doc! {"total": {"$gt": 15.0}}).await.unwrap(), 9);
        let error = coll.insert_one(doc! {"_id": "new"}).await.unwrap_err();
        match *error.kind {
            mongodb::error::ErrorKind::Command(ref c) => {
                assert_eq!((c.code, c.code_name.as_str()), (20, "IllegalOperation"), "{c:?}");
            }
            ref other => panic!("expected a command error, got {other:?}"),
        }
    });
    // The data directory is unchanged: a writable server sees the same 20 documents.
    drop(server);
    let again = support::ServerProcess::start(&["--dbpath", dbpath]);
    runtime.block_on(async {
        let client = mongodb::Client::with_uri_str(format!("mongodb://127.0.0.1:{}", again.port))
            .await
            .unwrap();
        let n = client
            .database("shop")
            .collection::<mongodb::bson::Document>("orders")
            .count_documents(doc! {})
            .await
            .unwrap();
        assert_eq!(n, 20);
    });
}
