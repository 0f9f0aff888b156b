//! `tidemark bench follow`: does continuous oplog archiving keep up with a write load?
//!
//! An in-process 3-member replica set takes small inserts (`insert_many` of 100 documents, `w: 1`)
//! from several client tasks for a fixed time, while the follower engine archives its oplog into
//! a local repository in the same process. Reported: writes/s sustained (each insert is one oplog
//! entry), entries/s archived over the same time, the largest lag the follower reported during the
//! load, and how long after the load it had archived the last committed entry. Target: it keeps up
//! with at least 20 000 writes/s (the last entry archived less than 2 s after the load ends). Everything shares the machine's cores, so figures are lower bounds.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bson::doc;
use tidemark_core::connection::ConnectionOptions;
use tidemark_core::follow::{FollowEvent, FollowOptions, follow};
use tidemark_repo::{InitOptions, Repository, Storage, StorageConfig, Timestamp};
use tidemark_server::testing::replset::{ReplSet, ReplSetOptions};

use crate::CliError;

/// What the follower reported so far.
#[derive(Debug, Default)]
struct Seen {
    last: Option<Timestamp>,
    entries: u64,
    max_lag_secs: u64,
    slices: u64,
}

/// Writes/s the follower must keep up with.
const TARGET_WRITES_PER_SEC: f64 = 20_000.0;

pub(super) fn bench_follow(seconds: u64, writers: usize) -> Result<(), CliError> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run(seconds, writers)).map_err(Into::into)
}

async fn majority_ts(client: &mongodb::Client) -> anyhow::Result<Timestamp> {
    let hello = client.database("admin").run_command(doc! {"hello": 1}).await?;
    let ts = hello
        .get_document("lastWrite")
        .and_then(|w| w.get_document("majorityOpTime"))
        .and_then(|o| o.get_timestamp("ts"))
        .context("hello has no lastWrite.majorityOpTime")?;
    Ok(Timestamp::from(ts))
}

async fn run(seconds: u64, writers: usize) -> anyhow::Result<()> {
    let set = ReplSet::start(ReplSetOptions::in_process(3))
        .await
        .context("start an in-process replica set")?;
    let uri = set.uri();
    let scratch = tempfile::Builder::new().prefix("tidemark-bench").tempdir()?;
    let repo_dir = scratch.path().join("repo");
    std::fs::create_dir_all(&repo_dir)?;
    let storage = Storage::open(&repo_dir.display().to_string(), &StorageConfig::default()).await?;
    let repo = Repository::init(storage, None, &InitOptions::default()).await?;
    eprintln!("replica set {uri}; repository {}", repo_dir.display());

    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut connection = ConnectionOptions::default();
    connection.uri = Some(uri.clone());
    let options = FollowOptions {
        connection,
        seal_interval: Duration::from_secs(1),
        status_every: Duration::from_millis(50),
        ..FollowOptions::default()
    };
    let follower = {
        let (repo, seen, stop) = (repo.clone(), seen.clone(), stop.clone());
        tokio::spawn(async move {
            let mut on_event = move |event: FollowEvent| {
                let mut s = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                match event {
                    FollowEvent::Status(status) => {
                        s.last = status.last;
                        s.entries = status.entries;
                        s.max_lag_secs = s.max_lag_secs.max(status.lag_secs);
                    }
                    FollowEvent::Sealed(slice) => {
                        s.last = s.last.max(Some(slice.last));
                        s.slices += 1;
                    }
                    _ => {}
                }
            };
            follow(&repo, &options, stop, &mut on_event).await
        })
    };

    let client = mongodb::Client::with_uri_str(&uri).await?;
    // Let the follower find its start before the load begins.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let written = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let entries_at_start = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entries;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let coll = client.database("bench").collection::<bson::Document>("writes");
        let written = written.clone();
        tasks.push(tokio::spawn(async move {
            let mut next = 0u64;
            while Instant::now() < deadline {
                let batch: Vec<bson::Document> = (0..100)
                    .map(|k| doc! {"w": w as i64, "n": (next + k) as i64, "v": "payload-0123456789"})
                    .collect();
                next += 100;
                coll.insert_many(batch).await?;
                written.fetch_add(100, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let load_secs = start.elapsed().as_secs_f64();
    let writes = written.load(Ordering::Relaxed);
    let max_lag = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .max_lag_secs;
    // One majority write after the load: then every write of the load is committed, and the
    // question is how long until the follower has archived it.
    client
        .database("bench")
        .run_command(doc! {"insert": "writes", "documents": [{"end": true}], "writeConcern": {"w": "majority"}})
        .await?;
    let end_majority = majority_ts(&client).await?;
    let drain_start = Instant::now();
    let drained = loop {
        let (last, entries) = {
            let s = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            (s.last, s.entries)
        };
        if last.is_some_and(|l| l >= end_majority) {
            break Some((drain_start.elapsed().as_secs_f64(), entries - entries_at_start));
        }
        if drain_start.elapsed() > Duration::from_secs(120) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    stop.store(true, Ordering::SeqCst);
    let summary = follower.await.context("the follower task failed")??;

    let writes_per_sec = writes as f64 / load_secs;
    println!("load: {writes} inserts by {writers} clients in {load_secs:.1} s = {writes_per_sec:.0} writes/s (w:1)");
    println!("largest lag reported during the load: {max_lag} s (majority point - last archived)");
    let kept_up = match drained {
        Some((s, archived)) => {
            // Entries archived from the start of the load until the follower had all of them.
            let per_sec = archived as f64 / (load_secs + s);
            println!("last committed entry archived {s:.2} s after the load ended");
            println!(
                "archived: {archived} entries in {:.1} s = {per_sec:.0} entries/s",
                load_secs + s
            );
            s < 2.0
        }
        None => {
            println!("the follower had not archived the last committed entry 120 s after the load");
            false
        }
    };
    println!(
        "follower total: {} entries, {} slices, {} bytes, gaps: {}",
        summary.entries,
        summary.slices,
        summary.bytes,
        summary.gaps.len()
    );
    println!(
        "target: keeps up with >= {TARGET_WRITES_PER_SEC:.0} writes/s: {}",
        if writes_per_sec < TARGET_WRITES_PER_SEC {
            format!("not measured (the load reached only {writes_per_sec:.0} writes/s; kept up with it: {kept_up})")
        } else if kept_up {
            "yes".to_owned()
        } else {
            "NO".to_owned()
        }
    );
    drop(set);
    Ok(())
}
