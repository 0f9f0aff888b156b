//! Secondary apply lag under a steady write load: starts an in-process three-member replica set, inserts at
//! a fixed rate (default 10 000 documents per second, in batches of 100, `w: 1`) for a few seconds while
//! sampling how far each secondary's last applied entry is behind the primary's (wall-clock time of the
//! oplog entries, from `hello.lastWrite.lastWriteDate`), then reports the lag distribution and how long the
//! secondaries need to catch up once the load stops.
//!
//! `cargo run --release -p tidemark-server --example replset_lag -- [writes_per_sec] [seconds]`

use std::time::{Duration, Instant};

use bson::{Document, doc};
use tidemark_server::repl::client::PeerConnection;
use tidemark_server::testing::replset::{ReplSet, ReplSetOptions};

const BATCH: usize = 100;

async fn last_write_millis(conn: &mut PeerConnection) -> Result<i64, Box<dyn std::error::Error>> {
    let h = conn.run("admin", doc! { "hello": 1 }, Duration::from_secs(5)).await?;
    Ok(h.get_document("lastWrite")?
        .get_datetime("lastWriteDate")?
        .timestamp_millis())
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let rate: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let secs: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let set = ReplSet::start(ReplSetOptions::in_process(3)).await?;
    let primary = set.wait_for_primary(Duration::from_secs(5)).await?;
    let secondaries: Vec<usize> = (0..3).filter(|i| *i != primary).collect();
    let primary_host = set.members[primary].host.clone();

    // The load: one connection sending batches on a fixed schedule.
    let batches_per_sec = (rate / BATCH as u64).max(1);
    let interval = Duration::from_micros(1_000_000 / batches_per_sec);
    let total_batches = batches_per_sec * secs;
    let load = tokio::spawn(async move {
        let mut conn = PeerConnection::connect(&primary_host, Duration::from_secs(2)).await?;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let started = Instant::now();
        for b in 0..total_batches {
            tick.tick().await;
            let docs: Vec<Document> = (0..BATCH as u64)
                .map(|i| doc! { "_id": i64::try_from(b * BATCH as u64 + i).unwrap_or(i64::MAX), "payload": "x".repeat(100) })
                .collect();
            conn.run(
                "bench",
                doc! { "insert": "load", "documents": docs, "writeConcern": { "w": 1 } },
                Duration::from_secs(10),
            )
            .await?;
        }
        Ok::<Duration, tidemark_server::repl::client::ClientError>(started.elapsed())
    });

    let mut pconn = PeerConnection::connect(&set.members[primary].host, Duration::from_secs(2)).await?;
    let mut sconns = Vec::new();
    for s in &secondaries {
        sconns.push(PeerConnection::connect(&set.members[*s].host, Duration::from_secs(2)).await?);
    }
    let mut lags: Vec<i64> = Vec::new();
    while !load.is_finished() {
        let p = last_write_millis(&mut pconn).await?;
        for c in &mut sconns {
            let s = last_write_millis(c).await?;
            // A member that has not fetched its first entry yet reports the epoch: not a lag sample.
            if s > 0 {
                lags.push((p - s).max(0));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = load.await??;
    let stopped = Instant::now();
    for s in &secondaries {
        set.wait_for_caught_up(*s, primary, Duration::from_secs(60)).await?;
    }
    let catch_up = stopped.elapsed();
    lags.sort_unstable();
    let written = total_batches * BATCH as u64;
    println!(
        "wrote {written} documents in {:.2}s ({:.0}/s, target {rate}/s)",
        elapsed.as_secs_f64(),
        written as f64 / elapsed.as_secs_f64()
    );
    println!(
        "secondary apply lag over {} samples: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
        lags.len(),
        percentile(&lags, 0.5),
        percentile(&lags, 0.9),
        percentile(&lags, 0.99),
        lags.last().copied().unwrap_or(0)
    );
    println!(
        "both secondaries caught up {} ms after the load stopped",
        catch_up.as_millis()
    );
    Ok(())
}
