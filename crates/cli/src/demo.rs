//! `tidemark demo`: the whole backup story on an embedded replica set, with no setup.
//!
//! An operator's questions are "is my backup consistent, can I get back to the moment before the
//! mistake, and does the restore really work?". The demo answers them on data it creates, with the
//! same engines the commands use, and proves every answer instead of asserting it:
//!
//! 1. it starts a three-member replica set of `tidemark-server` in this process (one member hidden,
//!    the one a backup should read) and loads a sample shop database;
//! 2. a workload keeps inserting, updating and deleting orders while `oplog follow` archives the
//!    committed oplog into a local encrypted repository and `backup --oplog` takes a snapshot;
//! 3. the workload pauses once: the demo records that moment's oplog timestamp and a fingerprint of
//!    every collection (documents in `_id` order hashed byte for byte, indexes, options), then writes
//!    for a few more seconds, as if a mistake happened after the moment to recover;
//! 4. `restore --at` that moment into a fresh server (base snapshot, then the snapshot's oplog and
//!    the archived oplog replayed up to the moment) must give exactly the recorded fingerprints;
//! 5. `verify` drills the snapshot (restore into an embedded server, every namespace checked against
//!    the manifest), a second backup shows deduplication, and the snapshot is exported as a
//!    mongodump archive that `inspect --verify` checks.
//!
//! Every step is narrated with its figures, and the run ends with the commands to use against a
//! real MongoDB. Exit status 0 only when the restored copy is exact and the drill passes.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bson::{Bson, Document, RawDocumentBuf, doc, oid::ObjectId, rawdoc};
use mongodb::Client;
use sha2::{Digest as _, Sha256};
use tidemark_core::connection::ConnectionOptions;
use tidemark_core::follow::{FollowEvent, FollowOptions, follow};
use tidemark_core::pitr::{plan_pitr, restorable_timeline, run_pitr};
use tidemark_core::restore::RestoreOptions;
use tidemark_core::{NoProgress, Progress};
use tidemark_format::inspect::{InspectOptions, inspect};
use tidemark_oplog::RestorePoint;
use tidemark_repo::{InitOptions, Repository, SnapshotReader, Storage, StorageConfig};
use tidemark_server::ServerConfig;
use tidemark_server::testing::replset::{ReplSet, ReplSetOptions};
use tidemark_server::testing::start_test_server;

use crate::CliError;

/// Arguments of `tidemark demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Number of orders to generate (customers and events scale with it).
    #[arg(long, default_value_t = 50_000)]
    orders: u64,
    /// Seconds the workload writes after the moment that is restored later.
    #[arg(long, default_value_t = 3)]
    after_secs: u64,
    /// Keep the repository and the exported archive in this directory instead of a temporary one.
    #[arg(long)]
    keep: Option<PathBuf>,
}

pub(crate) fn run(args: &Args) -> Result<(), CliError> {
    let runtime = tokio::runtime::Runtime::new().context("start the async runtime")?;
    runtime.block_on(demo(args)).map_err(CliError::from)
}

/// Narration: a numbered step and its details.
struct Narrator {
    step: usize,
    started: Instant,
}

impl Narrator {
    fn step(&mut self, title: &str) {
        self.step += 1;
        println!("\n{}. {title}", self.step);
    }

    fn say(&self, line: impl AsRef<str>) {
        println!("   {}", line.as_ref());
    }
}

/// The collections of the sample database, the view last.
const COLLECTIONS: [&str; 5] = ["customers", "orders", "products", "events", "big_orders"];
/// The demo repository's password (the repository is encrypted like any other).
const PASSWORD: &str = "tidemark-demo";

async fn demo(args: &Args) -> anyhow::Result<()> {
    let mut n = Narrator {
        step: 0,
        started: Instant::now(),
    };
    println!(
        "Tidemark demo: back up a live replica set, archive its oplog, restore to a moment in the past, and prove it."
    );

    n.step("Start an embedded replica set (three tidemark-server members, one hidden)");
    let set = ReplSet::start(ReplSetOptions {
        hidden: true,
        ..ReplSetOptions::in_process(3)
    })
    .await
    .context("start the replica set")?;
    let uri = set.uri();
    let client = Client::with_uri_str(&uri).await.context("connect to the replica set")?;
    let build = client.database("admin").run_command(doc! {"buildInfo": 1}).await?;
    n.say(format!(
        "{uri} (reporting MongoDB {}); the hidden member is not in the URI, as drivers never use it",
        build.get_str("version").unwrap_or("?")
    ));

    n.step("Load a sample shop database");
    let started = Instant::now();
    let loaded = load_dataset(&client, args.orders).await?;
    n.say(format!(
        "{} documents ({:.1} MB of BSON) in {:.2} s: customers, orders, products, a capped events log, a view",
        loaded.documents,
        loaded.bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    ));
    n.say(
        "indexes: customers.email (unique), orders {customer: 1, created: -1}, orders.status (partial), products.price",
    );

    let scratch: (PathBuf, Option<tempfile::TempDir>) = match &args.keep {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
            (dir.clone(), None)
        }
        None => {
            let t = tempfile::tempdir()?;
            (t.path().to_owned(), Some(t))
        }
    };
    let (work, _guard) = scratch;
    let repo_dir = work.join("repository");
    let archive = work.join("snapshot.archive");
    for p in [&repo_dir, &archive] {
        if p.exists() {
            bail!("{} already exists; choose an empty --keep directory", p.display());
        }
    }

    n.step("Create an encrypted backup repository on local disk");
    let repo_url = repo_dir.to_string_lossy().into_owned();
    let storage = Storage::open(&repo_url, &StorageConfig::default()).await?;
    let repo = Repository::init(storage, Some(PASSWORD), &InitOptions::default()).await?;
    n.say(format!(
        "{repo_url}: content-defined chunks, BLAKE3 ids, zstd, {} (key from argon2id)",
        repo.config().encryption
    ));

    n.step("Start a writing workload and archive the oplog continuously (tidemark oplog follow)");
    let workload = Workload::start(client.clone(), 1);
    let archived_upto = Arc::new(AtomicU64::new(0));
    let stop_follower = Arc::new(AtomicBool::new(false));
    let follower = {
        let repo = repo.clone();
        let mut connection = ConnectionOptions::default();
        connection.uri = Some(uri.clone());
        let options = FollowOptions {
            connection,
            seal_interval: Duration::from_secs(1),
            ..FollowOptions::default()
        };
        let stop = stop_follower.clone();
        let upto = archived_upto.clone();
        tokio::spawn(async move {
            let mut member = String::new();
            let mut on_event = |event: FollowEvent| match event {
                FollowEvent::Member { host, role } => member = format!("{host} ({})", role.name()),
                FollowEvent::Status(status) => {
                    if let Some(last) = status.last {
                        upto.store(u64::from(last.t) << 32 | u64::from(last.i), Ordering::SeqCst);
                    }
                }
                FollowEvent::Sealed(slice) => {
                    upto.fetch_max(
                        u64::from(slice.last.t) << 32 | u64::from(slice.last.i),
                        Ordering::SeqCst,
                    );
                }
                _ => {}
            };
            let summary = follow(&repo, &options, stop, &mut on_event).await;
            (summary, member)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    n.say(format!(
        "workload: inserts, updates and deletes on shop.orders ({} writes so far); slices sealed every second",
        workload.writes()
    ));

    n.step("Back up the live replica set into the repository (tidemark backup --oplog)");
    let started = Instant::now();
    let first = crate::backup::snapshot_server(&repo, &uri, "rs0", vec!["demo".into()]).await?;
    let secs = started.elapsed().as_secs_f64();
    n.say(format!(
        "snapshot {}: {} namespaces, {} documents, {:.1} MB in {secs:.2} s ({:.0} MB/s) while {} writes ran",
        &first.id.to_hex()[..8],
        first.namespaces,
        first.documents,
        first.stats.total_bytes as f64 / 1e6,
        first.stats.total_bytes as f64 / 1e6 / secs.max(1e-9),
        workload.writes()
    ));
    n.say(format!(
        "stored {:.1} MB after compression and encryption; consistent at {}",
        first.stats.added_bytes as f64 / 1e6,
        first.consistency.map_or("?".into(), |t| t.to_string())
    ));

    n.step("Keep writing, then record the moment to come back to");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes_before = workload.stop().await?;
    let moment = last_write(&client).await?;
    let mut recorded = Vec::new();
    for name in COLLECTIONS {
        recorded.push(fingerprint(&client, "shop", name).await?);
    }
    let orders_then = recorded[1].documents;
    n.say(format!(
        "moment {moment}: {writes_before} writes since the workload started; shop.orders holds {orders_then} documents"
    ));
    n.say("fingerprint of every collection recorded (documents byte for byte in _id order, indexes, options)");
    let workload = Workload::start(client.clone(), 2);
    tokio::time::sleep(Duration::from_secs(args.after_secs)).await;
    let writes_after = workload.stop().await?;
    let end = last_write(&client).await?;
    n.say(format!(
        "then {writes_after} more writes for {} s (the 'mistake'), up to {end}",
        args.after_secs
    ));

    n.step("Wait for the archive to catch up and stop the follower");
    let deadline = Instant::now() + Duration::from_secs(30);
    let end_key = u64::from(end.time) << 32 | u64::from(end.increment);
    while archived_upto.load(Ordering::SeqCst) < end_key {
        if Instant::now() > deadline {
            bail!("the oplog follower did not archive up to {end} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_follower.store(true, Ordering::SeqCst);
    let (summary, member) = follower.await.context("the follower task failed")?;
    let summary = summary?;
    n.say(format!(
        "read from {member}: {} entries in {} slices ({:.1} KB), no gap",
        summary.entries,
        summary.slices,
        summary.bytes as f64 / 1e3
    ));
    if !summary.gaps.is_empty() {
        bail!("the follower recorded gaps: {:?}", summary.gaps);
    }
    let windows = restorable_timeline(&repo).await?;
    for w in &windows.windows {
        n.say(format!(
            "restorable window of {}: {} .. {} (base snapshot {})",
            w.replica_set,
            w.from,
            w.to,
            &w.base_snapshot.to_hex()[..8]
        ));
    }

    n.step("Restore to the recorded moment into a new, empty server (tidemark restore --at)");
    let target = start_test_server(ServerConfig::ephemeral()).await;
    let target_client = Client::with_uri_str(target.uri())
        .await
        .context("connect to the target server")?;
    let point = RestorePoint::at_timestamp(moment);
    let plan = plan_pitr(&repo, point, None).await?;
    let progress: Arc<dyn Progress> = Arc::new(NoProgress);
    let report = run_pitr(&target_client, &repo, plan, &RestoreOptions::default(), progress)
        .await
        .map_err(|failure| anyhow::anyhow!("{}", failure.error))?;
    n.say(format!(
        "base snapshot {} restored, oplog replayed up to {moment} inclusive: {} in {:.2} s{}",
        &report.plan.window.base_snapshot.to_hex()[..8],
        report.summary.result_line(),
        report.seconds,
        report
            .replay_rate()
            .map_or(String::new(), |rate| format!(" ({rate:.0} oplog entries/s)"))
    ));

    n.step("Prove the restored copy is the database as it was at that moment");
    let mut exact = true;
    for (name, then) in COLLECTIONS.iter().zip(&recorded) {
        let restored = fingerprint(&target_client, "shop", name).await?;
        let same = &restored == then;
        exact &= same;
        n.say(format!(
            "shop.{name:<11} {:>7} documents  sha256 {}  {}",
            then.documents,
            &then.content_hash[..16],
            if same { "identical" } else { "DIFFERENT" }
        ));
        if !same {
            n.say(format!("then:     {then:?}"));
            n.say(format!("restored: {restored:?}"));
        }
    }
    let now_orders = fingerprint(&client, "shop", "orders").await?;
    n.say(format!(
        "(the live shop.orders has moved on: {} documents, sha256 {})",
        now_orders.documents,
        &now_orders.content_hash[..16]
    ));
    if !exact {
        bail!("the point-in-time restore differs from the recorded state");
    }

    n.step("Drill the snapshot (tidemark verify): restore it into an embedded server and check it");
    let drill = tidemark_drill::DrillOptions {
        snapshot: Some(first.id.to_hex()),
        ..tidemark_drill::DrillOptions::default()
    };
    let progress = Arc::new(crate::verify::DrillBars::new(true, false));
    let report = tidemark_drill::drill(&repo, &drill, progress)
        .await
        .map_err(tidemark_drill::Error::into_inner)?;
    crate::verify::print_report(&report, false);
    if !report.ok {
        bail!("the restore drill found problems");
    }

    n.step("Back up again: unchanged data is deduplicated");
    let started = Instant::now();
    let second = crate::backup::snapshot_server(&repo, &uri, "rs0", vec!["demo".into()]).await?;
    n.say(format!(
        "snapshot {} in {:.2} s: {:.1} MB of documents, {:.2} MB new, {:.2} MB added to storage ({:.1}% of the first)",
        &second.id.to_hex()[..8],
        started.elapsed().as_secs_f64(),
        second.stats.total_bytes as f64 / 1e6,
        second.stats.new_bytes as f64 / 1e6,
        second.stats.added_bytes as f64 / 1e6,
        100.0 * second.stats.added_bytes as f64 / first.stats.added_bytes.max(1) as f64
    ));

    n.step("Export the snapshot as a mongodump archive and check it (tidemark repo export, inspect --verify)");
    let reader = SnapshotReader::open(&repo, &second.id).await?;
    let file = std::fs::File::create(&archive).with_context(|| format!("create {}", archive.display()))?;
    let (_, exported) = tidemark_repo::export::export_archive(&reader, None, std::io::BufWriter::new(file)).await?;
    let summary = inspect(
        &archive,
        &InspectOptions {
            verify: true,
            gzip: None,
        },
    )?;
    if summary.problem_count() > 0 {
        bail!("the exported archive has {} problem(s)", summary.problem_count());
    }
    n.say(format!(
        "{}: {} namespaces, {} documents, every document decoded and every CRC-64 checked; mongorestore reads it",
        archive.display(),
        exported.namespaces,
        summary.documents
    ));

    n.step("Do the same with your own MongoDB");
    n.say("export TIDEMARK_PASSWORD=...");
    n.say("tidemark repo init --repo s3://bucket/prod          # or a local directory");
    n.say("tidemark oplog follow --uri mongodb://rs0-a,rs0-b,rs0-c/?replicaSet=rs0 --repo s3://bucket/prod &");
    n.say("tidemark backup --uri mongodb://rs0-a,rs0-b,rs0-c/?replicaSet=rs0 --oplog --repo s3://bucket/prod");
    n.say("tidemark snapshots --pitr --repo s3://bucket/prod");
    n.say("tidemark restore --uri mongodb://NEWHOST:27017 --repo s3://bucket/prod --at 2026-11-24T18:03:12Z");
    n.say("tidemark verify --repo s3://bucket/prod --snapshot latest");
    n.say("tidemark dump --uri mongodb://HOST:27017 --oplog --archive=backup.archive --gzip   # mongodump's formats");
    println!(
        "\nDone in {:.1} s: the restore to {moment} is exact and the drill passed.",
        n.started.elapsed().as_secs_f64()
    );
    drop(target_client);
    drop(client);
    target.shutdown().await;
    drop(set);
    Ok(())
}

/// The newest write of the set: `lastWrite.opTime.ts` from the primary's `hello`.
async fn last_write(client: &Client) -> anyhow::Result<bson::Timestamp> {
    let hello = client.database("admin").run_command(doc! {"hello": 1}).await?;
    hello
        .get_document("lastWrite")
        .and_then(|w| w.get_document("opTime"))
        .and_then(|o| o.get_timestamp("ts"))
        .context("hello without lastWrite.opTime.ts")
}

/// Inserts, updates and deletes orders until stopped.
struct Workload {
    stop: Arc<AtomicBool>,
    writes: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Workload {
    fn start(client: Client, seed: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(run_workload(client, seed, stop.clone(), writes.clone()));
        Workload { stop, writes, task }
    }

    fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// Stops after the write in flight; returns the number of acknowledged writes.
    async fn stop(self) -> anyhow::Result<u64> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.context("the workload task failed")??;
        Ok(self.writes.load(Ordering::SeqCst))
    }
}

async fn run_workload(client: Client, seed: u64, stop: Arc<AtomicBool>, writes: Arc<AtomicU64>) -> anyhow::Result<()> {
    let orders = client.database("shop").collection::<Document>("orders");
    let mut rng = Rng(0x00DD_BA11_u64 ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut next = seed << 40;
    while !stop.load(Ordering::SeqCst) {
        let batch: Vec<Document> = (0..20)
            .map(|_| {
                next += 1;
                doc! {
                    "_id": ObjectId::from_bytes({
                        let mut id = [0u8; 12];
                        id[..8].copy_from_slice(&(0x6570_0000_0000_0000_u64 + next).to_be_bytes());
                        id
                    }),
                    "customer": i64::try_from(rng.below(1000)).unwrap_or(0),
                    "total": (rng.below(100_000) as f64) / 100.0,
                    "status": "placed",
                    "created": bson::DateTime::now(),
                }
            })
            .collect();
        orders.insert_many(batch).await?;
        let status = STATUSES[usize::try_from(rng.below(4)).unwrap_or(0)];
        let customer = i64::try_from(rng.below(1000)).unwrap_or(0);
        orders
            .update_many(
                doc! {"customer": customer},
                doc! {"$set": {"status": status}, "$inc": {"revision": 1}},
            )
            .await?;
        orders
            .delete_one(doc! {"customer": customer, "status": "delivered"})
            .await?;
        writes.fetch_add(22, Ordering::SeqCst);
        tokio::task::yield_now().await;
    }
    Ok(())
}

struct Loaded {
    documents: u64,
    bytes: u64,
}

/// Deterministic pseudo-random numbers (xorshift64), so every run loads the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
const COUNTRIES: [&str; 8] = ["FR", "DE", "US", "JP", "BR", "IN", "NG", "AU"];
const STATUSES: [&str; 4] = ["placed", "paid", "shipped", "delivered"];

async fn load_dataset(client: &Client, orders: u64) -> anyhow::Result<Loaded> {
    let db = client.database("shop");
    let mut rng = Rng(0x5EED_CAFE_F00D_D00D);
    let mut loaded = Loaded { documents: 0, bytes: 0 };
    let customers = (orders / 5).max(10);
    let products = 1000u64;
    let base_ms = 1_700_000_000_000_i64;

    db.run_command(doc! {"create": "events", "capped": true, "size": 1_048_576, "max": 5000})
        .await?;
    db.run_command(doc! {
        "createIndexes": "customers",
        "indexes": [{"key": {"email": 1}, "name": "email_1", "unique": true}],
    })
    .await?;
    db.run_command(doc! {
        "createIndexes": "orders",
        "indexes": [
            {"key": {"customer": 1, "created": -1}, "name": "customer_1_created_-1"},
            {"key": {"status": 1}, "name": "status_1", "partialFilterExpression": {"status": {"$ne": "delivered"}}},
        ],
    })
    .await?;
    db.run_command(doc! {"createIndexes": "products", "indexes": [{"key": {"price": 1}, "name": "price_1"}]})
        .await?;
    db.run_command(
        doc! {"create": "big_orders", "viewOn": "orders", "pipeline": [{"$match": {"total": {"$gt": 500.0}}}]},
    )
    .await?;

    let mut batch = Vec::with_capacity(1000);
    let flush = |name: &'static str, batch: &mut Vec<RawDocumentBuf>| {
        let docs = std::mem::take(batch);
        let coll = db.collection::<RawDocumentBuf>(name);
        async move {
            if !docs.is_empty() {
                coll.insert_many(docs).await?;
            }
            Ok::<_, anyhow::Error>(())
        }
    };
    for sku in 0..products {
        let doc = rawdoc! {
            "_id": format!("SKU-{sku:05}"),
            "title": format!("Product {sku}"),
            "price": bson::Decimal128::from_bytes(decimal_cents(rng.below(50_000) + 99)),
            "stock": i32::try_from(rng.below(500)).unwrap_or(0),
            "tags": ["demo", COUNTRIES[usize::try_from(rng.below(8)).unwrap_or(0)]],
        };
        loaded.bytes += doc.as_bytes().len() as u64;
        batch.push(doc);
    }
    flush("products", &mut batch).await?;
    for id in 0..customers {
        let doc = rawdoc! {
            "_id": i64::try_from(id).unwrap_or(i64::MAX),
            "name": format!("Customer {id}"),
            "email": format!("customer{id}@example.com"),
            "country": COUNTRIES[usize::try_from(rng.below(8)).unwrap_or(0)],
            "joined": bson::DateTime::from_millis(base_ms - i64::try_from(rng.below(86_400_000 * 900)).unwrap_or(0)),
            "vip": rng.below(10) == 0,
            "address": {"street": format!("{} Harbour Road", rng.below(300)), "zip": format!("{:05}", rng.below(99_999))},
        };
        loaded.bytes += doc.as_bytes().len() as u64;
        batch.push(doc);
        if batch.len() == 1000 {
            flush("customers", &mut batch).await?;
        }
    }
    flush("customers", &mut batch).await?;
    for i in 0..orders {
        let mut id = [0u8; 12];
        id[..8].copy_from_slice(&(0x6560_0000_0000_0000_u64 + i).to_be_bytes());
        let lines = 1 + rng.below(4);
        let mut items = bson::RawArrayBuf::new();
        let mut total = 0.0;
        for _ in 0..lines {
            let qty = 1 + rng.below(5);
            let price = (rng.below(20_000) as f64) / 100.0;
            total += price * qty as f64;
            items.push(rawdoc! {"sku": format!("SKU-{:05}", rng.below(products)), "qty": i32::try_from(qty).unwrap_or(1), "price": price});
        }
        let doc = rawdoc! {
            "_id": ObjectId::from_bytes(id),
            "customer": i64::try_from(rng.below(customers)).unwrap_or(0),
            "items": items,
            "total": (total * 100.0).round() / 100.0,
            "status": STATUSES[usize::try_from(rng.below(4)).unwrap_or(0)],
            "created": bson::DateTime::from_millis(base_ms + i64::try_from(i).unwrap_or(0) * 60_000),
            "note": if rng.below(20) == 0 { bson::RawBson::String("gift wrap".into()) } else { bson::RawBson::Null },
        };
        loaded.bytes += doc.as_bytes().len() as u64;
        batch.push(doc);
        if batch.len() == 1000 {
            flush("orders", &mut batch).await?;
        }
    }
    flush("orders", &mut batch).await?;
    for i in 0..(orders / 5).max(10) {
        let doc = rawdoc! {
            "ts": bson::Timestamp { time: 1_700_000_000 + u32::try_from(i).unwrap_or(0), increment: 1 },
            "kind": "page_view",
            "path": format!("/product/{}", rng.below(products)),
        };
        batch.push(doc);
        if batch.len() == 1000 {
            flush("events", &mut batch).await?;
        }
    }
    flush("events", &mut batch).await?;
    for name in ["customers", "orders", "products", "events"] {
        loaded.documents += db.collection::<Document>(name).estimated_document_count().await?;
    }
    loaded.bytes = loaded.bytes.max(1);
    Ok(loaded)
}

/// Decimal128 bytes for `cents / 100` (coefficient `cents`, exponent -2).
fn decimal_cents(cents: u64) -> [u8; 16] {
    // IEEE 754-2008 BID: exponent bias 6176; small coefficients fit the low 64 bits.
    let exponent = u64::try_from(6176 - 2).unwrap_or(0);
    let high = exponent << 49;
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&cents.to_le_bytes());
    bytes[8..].copy_from_slice(&high.to_le_bytes());
    bytes
}

/// What must be equal between a collection and its restored copy.
#[derive(Debug, PartialEq, Eq)]
struct Fingerprint {
    documents: u64,
    content_hash: String,
    indexes: Vec<String>,
    options: String,
}

async fn fingerprint(client: &Client, db: &str, name: &str) -> anyhow::Result<Fingerprint> {
    let database = client.database(db);
    let mut hasher = Sha256::new();
    let mut documents = 0u64;
    let mut cursor = database
        .collection::<RawDocumentBuf>(name)
        .find(doc! {})
        .sort(doc! {"_id": 1})
        .await?;
    while cursor.advance().await? {
        let raw = cursor.current();
        hasher.update(raw.as_bytes());
        documents += 1;
    }
    let content_hash = hasher.finalize().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    });
    let mut indexes = Vec::new();
    let listed = database.run_command(doc! {"listIndexes": name, "cursor": {}}).await;
    if let Ok(reply) = listed {
        for spec in reply.get_document("cursor")?.get_array("firstBatch")? {
            if let Bson::Document(spec) = spec {
                let mut spec = spec.clone();
                spec.remove("ns");
                indexes.push(spec.to_string());
            }
        }
    }
    indexes.sort();
    let listed = database
        .run_command(doc! {"listCollections": 1, "filter": {"name": name}})
        .await?;
    let options = listed
        .get_document("cursor")?
        .get_array("firstBatch")?
        .first()
        .and_then(Bson::as_document)
        .and_then(|c| c.get_document("options").ok())
        .map(ToString::to_string)
        .unwrap_or_default();
    Ok(Fingerprint {
        documents,
        content_hash,
        indexes,
        options,
    })
}
