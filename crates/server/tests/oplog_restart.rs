//! The oplog of a `--dbpath` replica-set member across restarts of the real binary: entries are journaled in
//! the same batch as the change they record, so after a crash (SIGKILL) the documents and the oplog agree
//! exactly; after a restart, new entries continue after the newest one.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};
use support::{ServerProcess, free_port};

use mongodb::bson::{Document, doc};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection};

fn spawn(dbpath: &Path, port: u16) -> ServerProcess {
    ServerProcess::start_on(
        port,
        &[
            "--replSet",
            "rs0",
            "--dbpath",
            dbpath.to_str().expect("utf-8 temp path"),
        ],
    )
}

async fn connect(port: u16) -> Client {
    let mut opts = ClientOptions::parse(format!("mongodb://127.0.0.1:{port}/?directConnection=true"))
        .await
        .unwrap();
    opts.server_selection_timeout = Some(Duration::from_secs(5));
    opts.heartbeat_freq = Some(Duration::from_millis(500));
    Client::with_options(opts).unwrap()
}

async fn wait_primary(client: &Client) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let hello = client.database("admin").run_command(doc! { "hello": 1 }).await.unwrap();
        if hello.get_bool("isWritablePrimary") == Ok(true) {
            return;
        }
        assert!(Instant::now() < deadline, "no primary: {hello}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn all(coll: &Collection<Document>, filter: Document) -> Vec<Document> {
    let mut c = coll.find(filter).await.unwrap();
    let mut out = Vec::new();
    while c.advance().await.unwrap() {
        out.push(c.deserialize_current().unwrap());
    }
    out
}

#[tokio::test]
async fn oplog_and_data_agree_after_a_crash_and_continue_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = spawn(dir.path(), port);
    let client = connect(port).await;
    let members = vec![doc! { "_id": 0, "host": format!("127.0.0.1:{port}") }];
    client
        .database("admin")
        .run_command(doc! { "replSetInitiate": { "_id": "rs0", "version": 1, "members": members } })
        .await
        .unwrap();
    wait_primary(&client).await;
    let coll = client.database("crash").collection::<Document>("c");
    // Acknowledged with j: true: must survive the crash.
    coll.insert_one(doc! { "_id": -1 })
        .write_concern(mongodb::options::WriteConcern::builder().journal(true).build())
        .await
        .unwrap();
    for i in 0..300 {
        coll.insert_one(doc! { "_id": i, "v": "x" }).await.unwrap();
    }
    server.kill();
    drop(client);

    let mut server = spawn(dir.path(), port);
    let client = connect(port).await;
    let coll = client.database("crash").collection::<Document>("c");
    let oplog = client.database("local").collection::<Document>("oplog.rs");
    let ids: BTreeSet<i32> = all(&coll, doc! {})
        .await
        .iter()
        .map(|d| d.get_i32("_id").unwrap())
        .collect();
    let logged: BTreeSet<i32> = all(&oplog, doc! { "ns": "crash.c", "op": "i" })
        .await
        .iter()
        .map(|e| e.get_document("o").unwrap().get_i32("_id").unwrap())
        .collect();
    assert!(ids.contains(&-1), "a j:true write survives the crash");
    assert_eq!(ids, logged, "documents and oplog entries are journaled together");
    let before = all(&oplog, doc! {}).await;
    let newest = before.last().unwrap().get_timestamp("ts").unwrap();
    assert_eq!(before[0].get_document("o").unwrap(), &doc! { "msg": "initiating set" });

    wait_primary(&client).await;
    coll.insert_one(doc! { "_id": 1000 }).await.unwrap();
    let after = all(&oplog, doc! { "ts": { "$gt": newest }, "op": "i" }).await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].get_document("o").unwrap(), &doc! { "_id": 1000 });

    // A clean shutdown (SIGTERM) checkpoints the oplog like any collection; it comes back whole.
    let entries_before = all(&oplog, doc! {}).await;
    drop(client);
    server.terminate();
    let _server = spawn(dir.path(), port);
    let client = connect(port).await;
    let oplog = client.database("local").collection::<Document>("oplog.rs");
    // Every entry is back unchanged (a new primary may add its own no-op after them).
    let entries_after = all(&oplog, doc! {}).await;
    assert!(entries_after.len() >= entries_before.len());
    assert_eq!(&entries_after[..entries_before.len()], &entries_before[..]);
    let indexes = oplog.list_index_names().await.unwrap();
    assert!(indexes.is_empty(), "the oplog has no _id index: {indexes:?}");
}
