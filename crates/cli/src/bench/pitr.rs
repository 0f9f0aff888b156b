//! `tidemark bench pitr`: replay rate of a point-in-time restore from an archived oplog.
//!
//! A single-member replica set (`tidemark-server --replSet`) gets a small base dataset and a base
//! snapshot (`tidemark backup --oplog`), then an application-like write load: `insert_many` of
//! about 300-byte documents, `update_many` over ranges of live `_id`s (`$set`) and `delete_many`,
//! spread over 8 collections; every document written is its own oplog entry, as on MongoDB.
//! `tidemark oplog follow --once` archives it all, and `tidemark restore --at <last entry>` restores
//! the base and replays the archive into a fresh in-memory server. Printed: entries replayed,
//! replay seconds and entries/s (from the restore's own report), and the wall time; the restored
//! `bench` database must have the source's `dbHash` (a fast replay that gives another database is
//! a bug, not a result). Server, tool and load share the machine's cores.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, bail};
use bson::{Bson, doc};

use super::{ServerProcess, server_binary};
use crate::CliError;

/// Collections of the write load.
const COLLECTIONS: u64 = 8;
/// Documents per `insert_many`; updates and deletes work on ranges of this order.
const BATCH: u64 = 1000;

/// Runs the `tidemark` binary; returns its standard output, or its error output as the error.
fn tidemark(args: &[&str]) -> anyhow::Result<String> {
    let me = std::env::current_exe()?;
    let out = Command::new(me)
        .args(args)
        .env_remove("TIDEMARK_PASSWORD")
        .output()
        .context("run tidemark")?;
    if !out.status.success() {
        bail!(
            "tidemark {} failed: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn db_hash(client: &mongodb::Client) -> anyhow::Result<String> {
    let reply = client.database("bench").run_command(doc! {"dbHash": 1}).await?;
    match reply.get("md5") {
        Some(Bson::String(s)) => Ok(s.clone()),
        _ => bail!("dbHash reply without md5: {reply}"),
    }
}

/// The write load: about `entries` oplog entries; returns the `ts` of the newest oplog entry.
async fn write_load(client: &mongodb::Client, entries: u64) -> anyhow::Result<bson::Timestamp> {
    let db = client.database("bench");
    let mut next = vec![0_u64; usize::try_from(COLLECTIONS)?];
    let mut written = 0_u64;
    let mut round = 0_u64;
    while written < entries {
        let c = round % COLLECTIONS;
        let slot = usize::try_from(c)?;
        let coll = db.collection::<bson::Document>(&format!("c{c}"));
        let start = next[slot];
        let docs: Vec<bson::Document> = (start..start + BATCH)
            .map(|i| {
                doc! {
                    "_id": i64::try_from(i).unwrap_or(i64::MAX),
                    "customer": format!("customer-{:08}", i * 7919 % 1_000_000),
                    "status": "new",
                    "amount": f64::from(u32::try_from(i % 100_000).unwrap_or(0)) / 100.0,
                    "tags": ["alpha", format!("t{}", i % 50)],
                    "address": {"street": "1 Main Street", "city": "Springfield", "zip": format!("{:05}", i % 99_999)},
                    "note": "n".repeat(usize::try_from(100 + i % 100).unwrap_or(100)),
                }
            })
            .collect();
        coll.insert_many(docs).await?;
        next[slot] += BATCH;
        written += BATCH;
        // Update most of the previous batch, delete a tenth of the one before.
        let live = i64::try_from(start)?;
        if start >= BATCH {
            let from = live - i64::try_from(BATCH)?;
            let updated = coll
                .update_many(
                    doc! {"_id": {"$gte": from, "$lt": from + 800}},
                    doc! {"$set": {"status": "paid", "round": i64::try_from(round)?}},
                )
                .await?;
            written += updated.modified_count;
        }
        if start >= 2 * BATCH {
            let from = live - 2 * i64::try_from(BATCH)?;
            let deleted = coll
                .delete_many(doc! {"_id": {"$gte": from, "$lt": from + 100}})
                .await?;
            written += deleted.deleted_count;
        }
        round += 1;
    }
    let newest = client
        .database("local")
        .collection::<bson::Document>("oplog.rs")
        .find_one(doc! {})
        .sort(doc! {"$natural": -1})
        .await?
        .context("the oplog is empty")?;
    Ok(newest.get_timestamp("ts")?)
}

/// `tidemark bench pitr`.
pub(super) fn bench_pitr(entries: u64, server_bin: Option<PathBuf>) -> Result<(), CliError> {
    let bin = server_binary(server_bin)?;
    let scratch = tempfile::Builder::new().prefix("tidemark-bench").tempdir()?;
    let repo = scratch.path().join("repo").display().to_string();
    let source = ServerProcess::start_with(&bin, None, &["--replSet", "rs0"])?;
    let source_uri = format!("{}/?directConnection=true", source.uri);
    let runtime = tokio::runtime::Runtime::new()?;
    let source_client = runtime.block_on(async {
        let client = mongodb::Client::with_uri_str(&source_uri).await?;
        client
            .database("admin")
            .run_command(doc! {"replSetInitiate": 1})
            .await?;
        for _ in 0..200 {
            let hello = client.database("admin").run_command(doc! {"hello": 1}).await?;
            if hello.get_bool("isWritablePrimary") == Ok(true) {
                let base: Vec<bson::Document> = (0..10_000).map(|i| doc! {"_id": i, "pad": "p".repeat(100)}).collect();
                client.database("bench").collection("base").insert_many(base).await?;
                return anyhow::Ok(client);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        bail!("the replica set elected no primary")
    })?;
    let no_pw = "--insecure-no-password";
    tidemark(&["repo", "init", "--repo", &repo, no_pw])?;
    tidemark(&[
        "backup",
        "--repo",
        &repo,
        no_pw,
        "--uri",
        &source_uri,
        "--oplog",
        "--replica-set",
        "rs0",
    ])?;
    // Archives what the source has committed so far, as a cron-driven follower would.
    let follow_once = || {
        tidemark(&[
            "oplog",
            "follow",
            "--once",
            "--quiet",
            "--repo",
            &repo,
            no_pw,
            "--uri",
            &source_uri,
        ])
    };
    follow_once()?;
    let load_started = std::time::Instant::now();
    let last = runtime.block_on(write_load(&source_client, entries))?;
    println!(
        "write load: {entries}+ oplog entries over {COLLECTIONS} collections in {:.1} s",
        load_started.elapsed().as_secs_f64()
    );
    follow_once()?;
    let target = ServerProcess::start(&bin, None)?;
    let point = format!("{},{}", last.time, last.increment);
    let started = std::time::Instant::now();
    let report = tidemark(&[
        "restore",
        &target.uri,
        "--repo",
        &repo,
        no_pw,
        "--at",
        &point,
        "--json",
        "--quiet",
    ])?;
    let wall = started.elapsed().as_secs_f64();
    let report: serde_json::Value = serde_json::from_str(report.trim()).context("parse the restore report")?;
    let (source_hash, target_hash) = runtime.block_on(async {
        let target_client = mongodb::Client::with_uri_str(&target.uri).await?;
        anyhow::Ok((db_hash(&source_client).await?, db_hash(&target_client).await?))
    })?;
    if source_hash != target_hash {
        return Err(anyhow::anyhow!(
            "the restored database differs from the source: dbHash {target_hash}, source {source_hash}"
        )
        .into());
    }
    println!(
        "restore --at {point}: {} entries replayed in {:.2} s ({:.0} entries/s); whole restore {wall:.2} s",
        report["oplogApplied"],
        report["replaySeconds"].as_f64().unwrap_or(0.0),
        report["entriesPerSecond"].as_f64().unwrap_or(0.0),
    );
    println!("dbHash of the source and the restored database: {source_hash}");
    Ok(())
}
