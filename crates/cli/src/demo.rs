//! `tidemark demo`: the whole backup-and-restore story on an embedded server, with no setup.
//!
//! It starts an in-memory `tidemark-server`, loads a sample shop dataset (collections with
//! secondary and unique indexes, a view, a capped collection, mixed BSON types), dumps it with the
//! same engine as `tidemark dump` (directory, then gzip'd archive), inspects and fully verifies the
//! archive, restores it into a second, empty server with the engine of `tidemark restore`, and proves
//! the copy is exact: per collection, the documents (byte for byte, in `_id` order), the indexes
//! and the options must be identical. Every step is narrated with its figures, and the run ends with
//! the commands to use against a real MongoDB. Exit status 0 only when the copy is exact.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use bson::{Bson, Document, RawDocumentBuf, doc, oid::ObjectId, rawdoc};
use mongodb::Client;
use sha2::{Digest as _, Sha256};
use tidemark_core::dump::{DumpOptions, DumpTarget, plan_dump, run_dump};
use tidemark_core::restore::{RestoreOptions, RestoreSource, plan_restore, run_restore};
use tidemark_core::{NoProgress, Progress};
use tidemark_format::inspect::{InspectOptions, inspect};
use tidemark_server::ServerConfig;
use tidemark_server::testing::start_test_server;

use crate::CliError;

/// Arguments of `tidemark demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Number of orders to generate (customers and events scale with it).
    #[arg(long, default_value_t = 50_000)]
    orders: u64,
    /// Keep the dump files in this directory instead of a temporary one.
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

async fn demo(args: &Args) -> anyhow::Result<()> {
    let mut n = Narrator {
        step: 0,
        started: Instant::now(),
    };
    println!("Tidemark demo: back up a MongoDB deployment, restore it elsewhere, and prove the copy is exact.");

    n.step("Start an embedded MongoDB-compatible server (tidemark-server, in memory)");
    let source = start_test_server(ServerConfig::ephemeral()).await;
    let source_uri = source.uri();
    let client = Client::with_uri_str(&source_uri)
        .await
        .context("connect to the source server")?;
    let build = client.database("admin").run_command(doc! {"buildInfo": 1}).await?;
    n.say(format!(
        "listening on {source_uri}, reporting MongoDB {}",
        build.get_str("version").unwrap_or("?")
    ));

    n.step("Load a sample shop database");
    let started = Instant::now();
    let loaded = load_dataset(&client, args.orders).await?;
    let secs = started.elapsed().as_secs_f64();
    n.say(format!(
        "{} documents ({:.1} MB of BSON) in {secs:.2} s: customers, orders, products, a capped events log, a view",
        loaded.documents,
        loaded.bytes as f64 / 1e6
    ));
    n.say("indexes: customers.email (unique), orders {customer: 1, created: -1}, orders.status, products.price");

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
    let dump_dir = work.join("dump");
    let archive = work.join("shop.archive.gz");
    for p in [&dump_dir, &archive] {
        if p.exists() {
            bail!("{} already exists; choose an empty --keep directory", p.display());
        }
    }

    n.step("Dump it like mongodump: a directory, then a gzip'd archive");
    let progress: Arc<dyn Progress> = Arc::new(NoProgress);
    for (target, gzip, label) in [
        (DumpTarget::Directory(dump_dir.clone()), false, "directory"),
        (DumpTarget::Archive(Some(archive.clone())), true, "gzip archive"),
    ] {
        let mut options = DumpOptions::default();
        options.target = target;
        options.gzip = gzip;
        let started = Instant::now();
        let plan = plan_dump(&client, &options, progress.as_ref()).await?;
        let summary = run_dump(&client, &plan, &options, progress.clone()).await?;
        let secs = started.elapsed().as_secs_f64();
        let on_disk = disk_usage(if gzip { &archive } else { &dump_dir });
        n.say(format!(
            "{label}: {} namespaces, {} documents in {secs:.2} s ({:.0} MB/s), {:.1} MB on disk",
            summary.namespaces.len(),
            summary.documents,
            loaded.bytes as f64 / 1e6 / secs.max(1e-9),
            on_disk as f64 / 1e6
        ));
    }
    n.say(format!("files in {}", work.display()));

    n.step("Inspect the archive and verify it (every document decoded, every CRC-64 checked)");
    let summary = inspect(
        &archive,
        &InspectOptions {
            verify: true,
            gzip: None,
        },
    )?;
    for ns in summary.namespaces.iter().filter(|ns| ns.namespace.starts_with("shop.")) {
        n.say(format!(
            "{:<16} {:<11} {:>7} documents  indexes: {}",
            ns.namespace,
            ns.kind,
            ns.documents,
            ns.indexes.join(", ")
        ));
    }
    if summary.problem_count() > 0 {
        bail!("the archive has {} problem(s)", summary.problem_count());
    }
    n.say(format!(
        "{} documents, {:.1} MB, no problems",
        summary.documents,
        summary.bytes as f64 / 1e6
    ));

    n.step("Restore the archive into a second, empty server, like mongorestore");
    let target = start_test_server(ServerConfig::ephemeral()).await;
    let target_client = Client::with_uri_str(target.uri())
        .await
        .context("connect to the target server")?;
    let mut options = RestoreOptions::default();
    options.source = RestoreSource::Archive(Some(archive.clone()));
    options.gzip = true;
    let started = Instant::now();
    let plan = plan_restore(&options)?;
    let restored = run_restore(&target_client, plan, &options, progress.clone())
        .await
        .map_err(|failure| anyhow::anyhow!("{failure:?}"))?;
    let secs = started.elapsed().as_secs_f64();
    n.say(format!(
        "into {} in {secs:.2} s: {}",
        target.uri(),
        restored.result_line()
    ));

    n.step("Prove the copy is exact: documents byte for byte, indexes and options");
    let mut exact = true;
    for name in ["customers", "orders", "products", "events", "big_orders"] {
        let a = fingerprint(&client, "shop", name).await?;
        let b = fingerprint(&target_client, "shop", name).await?;
        let same = a == b;
        exact &= same;
        n.say(format!(
            "shop.{name:<11} {:>7} documents  sha256 {}  {}",
            a.documents,
            &a.content_hash[..16],
            if same { "identical" } else { "DIFFERENT" }
        ));
        if !same {
            n.say(format!("source: {a:?}"));
            n.say(format!("copy:   {b:?}"));
        }
    }
    if !exact {
        bail!("the restored copy differs from the source");
    }

    n.step("Do the same with your own MongoDB");
    n.say("tidemark dump --uri mongodb://HOST:27017 --oplog --archive=backup.archive --gzip");
    n.say("tidemark inspect --verify backup.archive");
    n.say("tidemark restore --uri mongodb://OTHER:27017 --archive=backup.archive --gzip --oplogReplay --drop");
    n.say("tidemark convert backup.archive backup-dir        # archive -> mongodump directory");
    println!(
        "\nDone in {:.1} s: the restored copy is exact.",
        n.started.elapsed().as_secs_f64()
    );
    drop(target_client);
    drop(client);
    target.shutdown().await;
    source.shutdown().await;
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

fn disk_usage(path: &Path) -> u64 {
    if path.is_file() {
        return std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    }
    std::fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| disk_usage(&e.path())).sum())
        .unwrap_or(0)
}
