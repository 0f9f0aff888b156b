//! Oplog tailing throughput: an in-process single-member replica set, one writer inserting documents in
//! batches, and one client tailing `local.oplog.rs` with a tailable awaitData cursor through the official
//! driver. Prints the entries per second the tailer received.
//! `cargo run --release --example oplog_tail_bench -- [documents] [batch]`.

use std::time::{Duration, Instant};

use mongodb::bson::{Document, doc};
use mongodb::options::{ClientOptions, CursorType, FindOptions};
use mongodb::{Client, Collection};
use tidemark_server::ServerConfig;
use tidemark_server::testing::start_test_server;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let total: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let batch: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1000).max(1);
    let config = ServerConfig {
        repl_set: Some("rs0".into()),
        oplog_size_mb: Some(1024),
        ..ServerConfig::ephemeral()
    };
    let server = start_test_server(config).await;
    let mut opts = ClientOptions::parse(format!("{}/?directConnection=true", server.uri())).await?;
    opts.heartbeat_freq = Some(Duration::from_millis(500));
    let client = Client::with_options(opts)?;
    let members = vec![doc! { "_id": 0, "host": server.addr.to_string() }];
    client
        .database("admin")
        .run_command(doc! { "replSetInitiate": { "_id": "rs0", "version": 1, "members": members } })
        .await?;
    while client
        .database("admin")
        .run_command(doc! { "hello": 1 })
        .await?
        .get_bool("isWritablePrimary")
        != Ok(true)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let oplog: Collection<Document> = client.database("local").collection("oplog.rs");
    let newest = oplog
        .find_one(doc! {})
        .sort(doc! { "$natural": -1 })
        .await?
        .ok_or("empty oplog after initiation")?;
    let start = newest.get_timestamp("ts")?;

    let writer = {
        let coll: Collection<Document> = client.database("bench").collection("docs");
        tokio::spawn(async move {
            let payload = "x".repeat(100);
            let mut next = 0usize;
            while next < total {
                let n = batch.min(total - next);
                let docs: Vec<Document> = (next..next + n)
                    .map(|i| doc! { "_id": i64::try_from(i).unwrap_or(i64::MAX), "payload": &payload })
                    .collect();
                coll.insert_many(docs).await?;
                next += n;
            }
            Ok::<(), mongodb::error::Error>(())
        })
    };

    let find = FindOptions::builder()
        .cursor_type(CursorType::TailableAwait)
        .max_await_time(Duration::from_millis(500))
        .build();
    let t0 = Instant::now();
    let mut cursor = oplog
        .find(doc! { "ts": { "$gt": start }, "op": "i" })
        .with_options(find)
        .await?;
    let mut seen = 0usize;
    while seen < total {
        if cursor.advance().await? {
            seen += 1;
        }
    }
    let elapsed = t0.elapsed();
    writer.await??;
    let secs = elapsed.as_secs_f64();
    println!(
        "tailed {seen} oplog entries in {secs:.2} s: {:.0} entries/s",
        f64::from(u32::try_from(seen).unwrap_or(u32::MAX)) / secs
    );
    server.shutdown().await;
    Ok(())
}
