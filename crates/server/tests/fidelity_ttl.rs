//! TTL indexes through the official Rust driver, following https://www.mongodb.com/docs/manual/core/index-ttl/:
//! documents expire once the indexed date plus `expireAfterSeconds` is past (the earliest date of an array),
//! documents whose field is missing or holds no date never expire, partial TTL indexes only expire matching
//! documents, `collMod` changes of `expireAfterSeconds` apply, and on a replica set the deletions are
//! replicated as `d` oplog entries; time series buckets expire once their newest measurement is older than
//! the collection's `expireAfterSeconds`. The monitor interval (`ttlMonitorSleepSecs`) is shortened for tests.

use std::time::{Duration, Instant};

use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, IndexModel};
use tidemark_server::ServerConfig;
use tidemark_server::testing::{TestServer, start_test_server};

const INTERVAL: Duration = Duration::from_millis(100);

async fn start(repl_set: bool) -> (TestServer, Client) {
    let config = ServerConfig {
        ttl_monitor_interval: INTERVAL,
        repl_set: repl_set.then(|| "rs0".to_string()),
        ..ServerConfig::ephemeral()
    };
    let server = start_test_server(config).await;
    let mut opts = ClientOptions::parse(format!("{}/?directConnection=true", server.uri()))
        .await
        .unwrap();
    opts.server_selection_timeout = Some(Duration::from_secs(5));
    opts.heartbeat_freq = Some(Duration::from_millis(500));
    let client = Client::with_options(opts).unwrap();
    (server, client)
}

fn ago(secs: i64) -> DateTime {
    DateTime::from_millis(DateTime::now().timestamp_millis() - secs * 1000)
}

async fn ttl_index(coll: &Collection<Document>, field: &str, secs: u64, partial: Option<Document>) {
    let opts = IndexOptions::builder()
        .expire_after(Duration::from_secs(secs))
        .partial_filter_expression(partial)
        .build();
    coll.create_index(IndexModel::builder().keys(doc! { field: 1 }).options(opts).build())
        .await
        .unwrap();
}

async fn ids(coll: &Collection<Document>) -> Vec<i32> {
    let mut c = coll.find(doc! {}).sort(doc! { "_id": 1 }).await.unwrap();
    let mut out = Vec::new();
    while c.advance().await.unwrap() {
        out.push(c.deserialize_current().unwrap().get_i32("_id").unwrap());
    }
    out
}

/// Waits until the ids of `coll` are `want` (the monitor runs every [`INTERVAL`]), failing after 5 s.
async fn wait_for(coll: &Collection<Document>, want: &[i32]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = ids(coll).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "expected {want:?}, still {got:?}");
        tokio::time::sleep(INTERVAL).await;
    }
}

#[tokio::test]
async fn expired_documents_are_deleted_by_the_monitor() {
    let (_server, client) = start(false).await;
    let coll = client.database("ttl").collection::<Document>("events");
    coll.insert_many(vec![
        doc! { "_id": 1, "at": ago(7200) },                                          // expired
        doc! { "_id": 2, "at": ago(10) },                                            // not yet
        doc! { "_id": 3, "at": [ago(10), ago(7200)] },                               // earliest date counts: expired
        doc! { "_id": 4, "at": "2001-01-01" },                                       // not a date: never
        doc! { "_id": 5 },                                                           // missing: never
        doc! { "_id": 6, "at": [1, "x"] },                                           // no date in the array: never
        doc! { "_id": 7, "at": mongodb::bson::Timestamp { time: 1, increment: 1 } }, // timestamp, not date
        doc! { "_id": 8, "at": DateTime::from_millis(0) },                           // 1970: expired
    ])
    .await
    .unwrap();
    // Nothing is deleted before a TTL index exists.
    tokio::time::sleep(INTERVAL * 3).await;
    assert_eq!(ids(&coll).await, [1, 2, 3, 4, 5, 6, 7, 8]);
    ttl_index(&coll, "at", 3600, None).await;
    wait_for(&coll, &[2, 4, 5, 6, 7]).await;

    // A compound index with expireAfterSeconds is not a TTL index.
    let other = client.database("ttl").collection::<Document>("compound");
    other
        .insert_one(doc! { "_id": 1, "at": ago(7200), "k": 1 })
        .await
        .unwrap();
    let opts = IndexOptions::builder().expire_after(Duration::from_secs(1)).build();
    other
        .create_index(
            IndexModel::builder()
                .keys(doc! { "at": 1, "k": 1 })
                .options(opts)
                .build(),
        )
        .await
        .unwrap();
    tokio::time::sleep(INTERVAL * 4).await;
    assert_eq!(ids(&other).await, [1]);
}

#[tokio::test]
async fn partial_ttl_indexes_and_coll_mod() {
    let (_server, client) = start(false).await;
    let db = client.database("ttl");
    let coll = db.collection::<Document>("partial");
    coll.insert_many(vec![
        doc! { "_id": 1, "at": ago(7200), "kind": "temp" },
        doc! { "_id": 2, "at": ago(7200), "kind": "keep" },
        doc! { "_id": 3, "at": ago(600), "kind": "temp" },
    ])
    .await
    .unwrap();
    ttl_index(&coll, "at", 3600, Some(doc! { "kind": "temp" })).await;
    wait_for(&coll, &[2, 3]).await;
    // Lowering expireAfterSeconds with collMod makes the 10-minute-old document expire too.
    let r = db
        .run_command(doc! { "collMod": "partial", "index": { "keyPattern": { "at": 1 }, "expireAfterSeconds": 60 } })
        .await
        .unwrap();
    assert_eq!(r.get("expireAfterSeconds_new"), Some(&Bson::Int32(60)));
    wait_for(&coll, &[2]).await;
}

#[tokio::test]
async fn replica_set_primary_logs_ttl_deletes_in_the_oplog() {
    let (server, client) = start(true).await;
    let admin = client.database("admin");
    let config = doc! { "_id": "rs0", "version": 1, "members": [{ "_id": 0, "host": server.addr.to_string() }] };
    admin.run_command(doc! { "replSetInitiate": config }).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin
        .run_command(doc! { "hello": 1 })
        .await
        .unwrap()
        .get_bool("isWritablePrimary")
        != Ok(true)
    {
        assert!(Instant::now() < deadline, "no primary");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let coll = client.database("ttl").collection::<Document>("rs");
    coll.insert_many(vec![
        doc! { "_id": 1, "at": ago(7200) },
        doc! { "_id": 2, "at": ago(1) },
    ])
    .await
    .unwrap();
    ttl_index(&coll, "at", 3600, None).await;
    wait_for(&coll, &[2]).await;
    let oplog = client.database("local").collection::<Document>("oplog.rs");
    let d = oplog
        .find_one(doc! { "op": "d", "ns": "ttl.rs" })
        .await
        .unwrap()
        .expect("a delete entry for the expired document");
    assert_eq!(d.get_document("o").unwrap(), &doc! { "_id": 1 });
}

#[tokio::test]
async fn time_series_buckets_expire_once_their_newest_measurement_has() {
    let (_server, client) = start(false).await;
    let db = client.database("ttl");
    db.run_command(
        doc! { "create": "readings", "timeseries": { "timeField": "t", "metaField": "m" }, "expireAfterSeconds": 3600 },
    )
    .await
    .unwrap();
    let coll = db.collection::<Document>("readings");
    coll.insert_many(vec![
        doc! { "_id": 1, "t": ago(3 * 86_400), "m": "a" }, // a bucket of its own, long expired
        doc! { "_id": 2, "t": ago(3 * 86_400 - 60), "m": "a" }, // same bucket
        doc! { "_id": 3, "t": ago(60), "m": "a" },         // a recent bucket
        doc! { "_id": 4, "t": ago(3 * 86_400), "m": "b" }, // another series, expired
    ])
    .await
    .unwrap();
    wait_for(&coll, &[3]).await;
    let buckets = db.collection::<Document>("system.buckets.readings");
    assert_eq!(buckets.count_documents(doc! {}).await.unwrap(), 1);
}
