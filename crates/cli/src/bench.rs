//! `tidemark bench`: throughput figures for the format layer, on generated data.
//!
//! Speed targets are checked here, never in timed tests. `tidemark bench format` writes and reads
//! the same generated documents (about 1 KiB each, mixed types) as an archive (plain and gzip) and
//! as a dump directory, and times `cat FILE > /dev/null` on the archive for reference: the
//! uncompressed archive read (with its CRC-64 checks) should stay within 2x of `cat`.
//! Run it from a release build (`cargo run --release -p tidemark -- bench format`).

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};
use bson::{RawDocumentBuf, oid::ObjectId, rawdoc};
use tidemark_format::archive::{self, ArchiveEventRef, ArchiveHeader, ArchiveReader, ArchiveWriter, PreludeEntry};
use tidemark_format::directory::{DiscoverOptions, DumpWriter, discover};
use tidemark_format::metadata::Metadata;

use crate::CliError;

mod backup;
mod follow;
mod index;
mod pitr;
mod replay;

/// Arguments of `tidemark bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// `tidemark restore --oplogReplay` of a generated oplog (mixed inserts, updates, deletes over
    /// 10 collections) with 1 and N replay workers, checking that every run gives the same
    /// `dbHash`; compared with the real mongorestore when `MONGORESTORE` names it.
    Replay {
        /// Oplog entries to generate.
        #[arg(long, default_value_t = 500_000)]
        entries: u64,
        /// Replay workers of the parallel run (default: available cores, at most 8).
        #[arg(long)]
        workers: Option<usize>,
        /// The `tidemark-server` binary (by default the one next to this executable).
        #[arg(long)]
        server_bin: Option<PathBuf>,
        /// Scratch directory for the dump (a temporary one by default).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// `tidemark backup` into a repository against `tidemark dump --archive` of the same generated
    /// dataset, restore from the repository, and the bytes stored by backups of an unchanged database
    /// and after changing 1% of the documents.
    Backup {
        /// Dataset size in MiB (the `bench dump` dataset).
        #[arg(long, default_value_t = 256)]
        size_mib: u64,
        /// The `tidemark-server` binary (by default the one next to this executable).
        #[arg(long)]
        server_bin: Option<PathBuf>,
        /// Scratch directory for the repository and the dump (a temporary one by default).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Average chunk size of the benchmark repository in KiB (`repo init --chunk-size`).
        #[arg(long)]
        chunk_size: Option<u32>,
    },
    /// Opening a repository whose index lists millions of blobs: seconds and peak memory of
    /// `tidemark snapshots` with binary index objects and with the JSON ones written before.
    Index {
        /// Blobs the generated index lists.
        #[arg(long, default_value_t = 1_000_000)]
        chunks: u64,
        /// Scratch directory for the repositories (a temporary one by default).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Another tidemark binary to time on the JSON repository too (e.g. an older build).
        #[arg(long)]
        baseline_bin: Option<PathBuf>,
    },
    /// `tidemark dump`/`tidemark restore` against a generated dataset in tidemark-server, in directory,
    /// archive and gzip modes: wall time, MB/s and peak memory; compared in the same run with the real
    /// mongodump/mongorestore when `MONGODUMP`/`MONGORESTORE` name them.
    Dump {
        /// Dataset size in MiB: four collections of 1 KiB documents plus one large collection.
        #[arg(long, default_value_t = 2048)]
        size_mib: u64,
        /// The `tidemark-server` binary (by default the one next to this executable).
        #[arg(long)]
        server_bin: Option<PathBuf>,
        /// Scratch directory for the dumps (a temporary one by default).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// tidemark-server throughput from one client: batched 1 KiB inserts and full-scan finds,
    /// in memory and with `--dbpath` (journal on).
    Server {
        /// Documents to insert (about 1 KiB each), in batches of 1000.
        #[arg(long, default_value_t = 300_000)]
        documents: u64,
        /// The `tidemark-server` binary (by default the one next to this executable).
        #[arg(long)]
        server_bin: Option<PathBuf>,
    },
    /// `tidemark oplog follow` under a write load on an in-process 3-member replica set: writes/s
    /// sustained, entries/s archived and the lag (target: keeps up with 20 000 writes/s).
    Follow {
        /// Seconds of write load.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Concurrent writing clients (each inserts batches of 100 small documents).
        #[arg(long, default_value_t = 4)]
        writers: usize,
    },
    /// `tidemark restore --at` of a base snapshot plus an archived oplog written by an
    /// application-like load: entries/s of the replay; the result must have the source's `dbHash`.
    Pitr {
        /// Oplog entries to write after the base snapshot (about).
        #[arg(long, default_value_t = 300_000)]
        entries: u64,
        /// The `tidemark-server` binary (by default the one next to this executable).
        #[arg(long)]
        server_bin: Option<PathBuf>,
    },
    /// Archive and directory read/write throughput on generated data.
    Format {
        /// Amount of document data to generate, in MiB.
        #[arg(long, default_value_t = 1024)]
        size_mib: u64,
        /// Scratch directory (a temporary one by default); everything written is removed.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Number of collections the data is spread over.
        #[arg(long, default_value_t = 4)]
        collections: usize,
    },
}

pub(crate) fn run(args: &Args) -> Result<(), CliError> {
    match &args.what {
        What::Replay {
            entries,
            workers,
            server_bin,
            dir,
        } => replay::bench_replay(
            *entries,
            workers.unwrap_or_else(tidemark_core::replay::default_replay_workers),
            server_bin.clone(),
            dir.as_deref(),
        ),
        What::Format {
            size_mib,
            dir,
            collections,
        } => bench_format(*size_mib, dir.as_deref(), (*collections).max(1)),
        What::Backup {
            size_mib,
            server_bin,
            dir,
            chunk_size,
        } => backup::bench_backup(*size_mib, server_bin.clone(), dir.as_deref(), *chunk_size),
        What::Index {
            chunks,
            dir,
            baseline_bin,
        } => index::bench_index(*chunks, dir.as_deref(), baseline_bin.clone()),
        What::Server { documents, server_bin } => bench_server(*documents, server_bin.clone()),
        What::Pitr { entries, server_bin } => pitr::bench_pitr(*entries, server_bin.clone()),
        What::Follow { seconds, writers } => follow::bench_follow(*seconds, (*writers).max(1)),
        What::Dump {
            size_mib,
            server_bin,
            dir,
        } => bench_dump(*size_mib, server_bin.clone(), dir.as_deref()),
    }
}

/// One generated document of about 1 KiB with mixed BSON types.
fn document(i: u64) -> RawDocumentBuf {
    // xorshift64: a payload that does not compress, like real binary fields.
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let payload: Vec<u8> = (0..744)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect();
    rawdoc! {
        "_id": ObjectId::new(),
        "seq": i64::try_from(i).unwrap_or(i64::MAX),
        "name": format!("customer-{i:012}-{}", "x".repeat(40)),
        "score": i as f64 / 7.0,
        "active": i.is_multiple_of(3),
        "created": bson::DateTime::from_millis(1_700_000_000_000 + i64::try_from(i).unwrap_or(0)),
        "tags": ["alpha", "beta", format!("t{}", i % 97)],
        "address": { "street": "1 Main Street", "city": "Springfield", "zip": i32::try_from(i % 99_999).unwrap_or(0) },
        "payload": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: payload },
    }
}

struct Figure {
    what: &'static str,
    bytes: u64,
    seconds: f64,
}

impl Figure {
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds.max(1e-9)
    }
}

fn timed<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(T, f64)> {
    let start = Instant::now();
    let value = f()?;
    Ok((value, start.elapsed().as_secs_f64()))
}

fn bench_format(size_mib: u64, dir: Option<&Path>, collections: usize) -> Result<(), CliError> {
    let scratch = match dir {
        Some(d) => tempfile::Builder::new().prefix("tidemark-bench").tempdir_in(d)?,
        None => tempfile::Builder::new().prefix("tidemark-bench").tempdir()?,
    };
    let target_bytes = size_mib * 1024 * 1024;
    let sample = document(0).as_bytes().len() as u64;
    let total_docs = target_bytes / sample;
    eprintln!(
        "generating {total_docs} documents of ~{sample} bytes ({size_mib} MiB) over {collections} collections in {}",
        scratch.path().display()
    );
    // Documents are generated once (10 000 distinct ones, about 10 MiB, far beyond gzip's 32 KiB
    // window) and written repeatedly, so generation is not timed and memory stays small.
    let batch: Vec<RawDocumentBuf> = (0..10_000).map(document).collect();
    let per_collection = total_docs / collections as u64;
    let names: Vec<String> = (0..collections).map(|c| format!("coll{c}")).collect();

    let mut figures = Vec::new();
    let archive_path = scratch.path().join("bench.archive");
    let (bytes, secs) = timed(|| write_archive(&archive_path, &names, per_collection, &batch, false))?;
    figures.push(Figure {
        what: "archive write",
        bytes,
        seconds: secs,
    });
    let (bytes, secs) = timed(|| read_archive(&archive_path, false))?;
    figures.push(Figure {
        what: "archive read + CRC check",
        bytes,
        seconds: secs,
    });
    let archive_len = std::fs::metadata(&archive_path)?.len();
    let ((), secs) = timed(|| cat(&archive_path))?;
    figures.push(Figure {
        what: "cat archive > /dev/null",
        bytes: archive_len,
        seconds: secs,
    });
    let cat_secs = secs;
    let read_secs = figures[1].seconds;

    let dump_dir = scratch.path().join("dump");
    let (bytes, secs) = timed(|| write_directory(&dump_dir, &names, per_collection, &batch))?;
    figures.push(Figure {
        what: "directory write",
        bytes,
        seconds: secs,
    });
    let (bytes, secs) = timed(|| read_directory(&dump_dir))?;
    figures.push(Figure {
        what: "directory read",
        bytes,
        seconds: secs,
    });
    std::fs::remove_dir_all(&dump_dir)?;
    std::fs::remove_file(&archive_path)?;

    let gz_path = scratch.path().join("bench.archive.gz");
    let (bytes, secs) = timed(|| write_archive(&gz_path, &names, per_collection, &batch, true))?;
    figures.push(Figure {
        what: "archive write, gzip",
        bytes,
        seconds: secs,
    });
    let (bytes, secs) = timed(|| read_archive(&gz_path, true))?;
    figures.push(Figure {
        what: "archive read, gzip",
        bytes,
        seconds: secs,
    });
    let gz_len = std::fs::metadata(&gz_path)?.len();

    println!("{:<28} {:>12} {:>10} {:>10}", "operation", "bytes", "seconds", "MB/s");
    for f in &figures {
        println!(
            "{:<28} {:>12} {:>10.3} {:>10.1}",
            f.what,
            f.bytes,
            f.seconds,
            f.mb_per_s()
        );
    }
    println!(
        "archive read time / cat time: {:.2}x (target <= 2x)",
        read_secs / cat_secs.max(1e-9)
    );
    println!("gzip ratio: {:.2}", archive_len as f64 / gz_len.max(1) as f64);
    Ok(())
}

fn write_archive(
    path: &Path,
    names: &[String],
    per_collection: u64,
    batch: &[RawDocumentBuf],
    gzip: bool,
) -> anyhow::Result<u64> {
    let entries: Vec<PreludeEntry> = names
        .iter()
        .map(|n| {
            Ok(PreludeEntry::new(
                "bench",
                n.clone(),
                Metadata::new(n.clone()).to_json()?,
                "collection",
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let header = ArchiveHeader::new(
        i32::try_from(names.len()).unwrap_or(i32::MAX),
        "7.0.16",
        "tidemark-bench",
    );
    let file = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let out: Box<dyn Write> = if gzip {
        Box::new(archive::gzip::gzip_writer(file))
    } else {
        Box::new(file)
    };
    let mut writer = ArchiveWriter::new(out, &header, &entries)?;
    let mut bytes = 0u64;
    // Interleave collections in 1000-document runs, as parallel dumpers would.
    let mut written = vec![0u64; names.len()];
    while written.iter().any(|&w| w < per_collection) {
        for (index, done) in written.iter_mut().enumerate() {
            let take = (per_collection - *done).min(batch.len() as u64);
            for doc in &batch[..usize::try_from(take)?] {
                writer.write_document(index, doc)?;
                bytes += doc.as_bytes().len() as u64;
            }
            *done += take;
        }
    }
    for index in 0..names.len() {
        writer.close_namespace(index)?;
    }
    writer.finish()?.flush()?;
    Ok(bytes)
}

fn read_archive(path: &Path, gzip: bool) -> anyhow::Result<u64> {
    let file = BufReader::with_capacity(1 << 20, File::open(path)?);
    let input: Box<dyn std::io::Read> = if gzip {
        Box::new(archive::gzip::gzip_reader(file))
    } else {
        Box::new(file)
    };
    let mut reader = ArchiveReader::new(input)?;
    let mut bytes = 0u64;
    while let Some(event) = reader.next_event_ref()? {
        if let ArchiveEventRef::Document { document, .. } = event {
            bytes += document.as_bytes().len() as u64;
        }
    }
    Ok(bytes)
}

fn cat(path: &Path) -> anyhow::Result<()> {
    let status = Command::new("cat")
        .arg(path)
        .stdout(Stdio::null())
        .status()
        .context("run cat")?;
    if !status.success() {
        bail!("cat failed: {status}");
    }
    Ok(())
}

fn write_directory(
    root: &Path,
    names: &[String],
    per_collection: u64,
    batch: &[RawDocumentBuf],
) -> anyhow::Result<u64> {
    let writer = DumpWriter::new(root, false);
    let mut bytes = 0u64;
    for name in names {
        let mut file = writer.create_collection("bench", name)?;
        let mut done = 0u64;
        while done < per_collection {
            let take = (per_collection - done).min(batch.len() as u64);
            for doc in &batch[..usize::try_from(take)?] {
                file.write_document(doc)?;
                bytes += doc.as_bytes().len() as u64;
            }
            done += take;
        }
        file.finish()?;
        writer.write_metadata("bench", name, &Metadata::new(name.clone()))?;
    }
    writer.write_prelude(None, "7.0.16", "tidemark-bench")?;
    Ok(bytes)
}

fn read_directory(root: &Path) -> anyhow::Result<u64> {
    let discovery = discover(root, &DiscoverOptions::default())?;
    let mut bytes = 0u64;
    let mut buf = Vec::new();
    for entry in &discovery.entries {
        if let Some(mut reader) = entry.open_data()? {
            while reader.read_into(&mut buf)? {
                bytes += buf.len() as u64;
            }
        }
    }
    Ok(bytes)
}

/// The `tidemark-server` binary to benchmark against.
fn server_binary(server_bin: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let bin = match server_bin {
        Some(b) => b,
        None => std::env::current_exe()?.with_file_name("tidemark-server"),
    };
    if !bin.is_file() {
        bail!(
            "{} not found: build it first (cargo build --release -p tidemark-server) or pass --server-bin",
            bin.display()
        );
    }
    Ok(bin)
}

fn bench_server(documents: u64, server_bin: Option<PathBuf>) -> Result<(), CliError> {
    let bin = server_binary(server_bin)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let batch: Vec<RawDocumentBuf> = (0..1000).map(document).collect();
    let doc_bytes: u64 = batch.iter().map(|d| d.as_bytes().len() as u64).sum::<u64>() / 1000;
    println!("{documents} documents of ~{doc_bytes} bytes, batches of 1000, one client");
    println!("{:<34} {:>14} {:>12}", "operation", "rate", "seconds");
    for (label, durable) in [("in memory", false), ("--dbpath, journal", true)] {
        let dir = tempfile::tempdir()?;
        let mut server = ServerProcess::start(&bin, durable.then(|| dir.path().to_owned()))?;
        let result = runtime.block_on(server_workload(&server.uri, documents, &batch));
        server.stop();
        let (insert_secs, scan_secs, scanned_bytes) = result?;
        let inserted = documents as f64;
        println!(
            "{:<34} {:>10.0} d/s {:>12.3}",
            format!("insert, {label}"),
            inserted / insert_secs.max(1e-9),
            insert_secs
        );
        println!(
            "{:<34} {:>9.1} MB/s {:>12.3}",
            format!("full-scan find, {label}"),
            scanned_bytes as f64 / 1e6 / scan_secs.max(1e-9),
            scan_secs
        );
    }
    println!("targets: >= 100000 inserts/s in memory, >= 300 MB/s full-scan find");
    Ok(())
}

/// A `tidemark-server` child process on a free port, killed on drop.
struct ServerProcess {
    child: std::process::Child,
    uri: String,
}

impl ServerProcess {
    fn start(bin: &Path, dbpath: Option<PathBuf>) -> anyhow::Result<Self> {
        Self::start_with(bin, dbpath, &[])
    }

    /// [`ServerProcess::start`] with more server options (`--replSet rs0`, ...).
    fn start_with(bin: &Path, dbpath: Option<PathBuf>, extra: &[&str]) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut cmd = Command::new(bin);
        cmd.args(["--port", &port.to_string()])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(dbpath) = dbpath {
            cmd.arg("--dbpath").arg(dbpath);
        }
        let child = cmd.spawn().with_context(|| format!("start {}", bin.display()))?;
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed().as_secs() > 20 {
                bail!("tidemark-server did not start listening on port {port}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(Self {
            child,
            uri: format!("mongodb://127.0.0.1:{port}"),
        })
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Inserts `documents` in batches, then reads them all back; returns (insert s, scan s, bytes read).
async fn server_workload(uri: &str, documents: u64, batch: &[RawDocumentBuf]) -> anyhow::Result<(f64, f64, u64)> {
    let client = mongodb::Client::with_uri_str(uri).await?;
    let coll = client.database("bench").collection::<RawDocumentBuf>("docs");
    // Batches are built before the clock starts (fresh `_id`s, the generated bodies reused), so the
    // figure is the server's and the wire's, not the generator's.
    let mut batches = Vec::new();
    let mut done = 0u64;
    while done < documents {
        let take = usize::try_from((documents - done).min(batch.len() as u64))?;
        let docs: Vec<RawDocumentBuf> = batch[..take]
            .iter()
            .map(|d| {
                let mut fresh = rawdoc! {"_id": ObjectId::new()};
                for element in d.iter().skip(1) {
                    let (key, value) = element?;
                    fresh.append(key, value.to_raw_bson());
                }
                Ok(fresh)
            })
            .collect::<anyhow::Result<_>>()?;
        batches.push(docs);
        done += take as u64;
    }
    let started = Instant::now();
    for docs in batches {
        coll.insert_many(docs).await?;
    }
    let insert_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut cursor = coll.find(bson::doc! {}).await?;
    let mut bytes = 0u64;
    while cursor.advance().await? {
        bytes += cursor.current().as_bytes().len() as u64;
    }
    Ok((insert_secs, started.elapsed().as_secs_f64(), bytes))
}

/// One timed run of a dump or restore tool.
struct ToolRun {
    seconds: f64,
    peak_rss_kib: u64,
    /// User + system CPU time of the tool, sampled until it exits.
    cpu_seconds: f64,
}

/// User + system CPU seconds a process has used so far, from `/proc/<pid>/stat` (in `USER_HZ`,
/// which is 100 on Linux).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some((user + system) as f64 / 100.0)
}

/// Runs a command to completion, sampling its peak resident memory (`VmHWM`) from /proc.
fn run_measured(cmd: &mut Command) -> anyhow::Result<ToolRun> {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("start the tool")?;
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    let mut cpu = 0.0f64;
    let status = loop {
        cpu = cpu_seconds(child.id()).unwrap_or(cpu);
        if let Ok(text) = std::fs::read_to_string(&status_path)
            && let Some(line) = text.lines().find(|l| l.starts_with("VmHWM:"))
        {
            let kib = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let seconds = started.elapsed().as_secs_f64();
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        bail!(
            "{cmd:?} failed ({status}): {}",
            err.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
        );
    }
    Ok(ToolRun {
        seconds,
        peak_rss_kib: peak,
        cpu_seconds: cpu,
    })
}

/// Loads the benchmark dataset: four collections of ~1 KiB documents and one large collection
/// holding half of the bytes. Returns the document bytes loaded.
async fn load_dump_dataset(uri: &str, total_bytes: u64) -> anyhow::Result<u64> {
    let client = mongodb::Client::with_uri_str(uri).await?;
    let db = client.database("bench");
    let sample = document(0).as_bytes().len() as u64;
    let big_docs = total_bytes / 2 / sample;
    let small_docs = total_bytes / 2 / sample / 4;
    let mut loaded = 0u64;
    let mut seq = 0u64;
    for (name, count) in [
        ("large", big_docs),
        ("c1", small_docs),
        ("c2", small_docs),
        ("c3", small_docs),
        ("c4", small_docs),
    ] {
        let coll = db.collection::<RawDocumentBuf>(name);
        let mut done = 0u64;
        while done < count {
            let take = (count - done).min(1000);
            let docs: Vec<RawDocumentBuf> = (seq..seq + take).map(document).collect();
            loaded += docs.iter().map(|d| d.as_bytes().len() as u64).sum::<u64>();
            coll.insert_many(docs).await?;
            seq += take;
            done += take;
        }
    }
    db.run_command(
        bson::doc! {"createIndexes": "c1", "indexes": [{"key": {"seq": 1}, "name": "seq_1", "unique": true}]},
    )
    .await?;
    Ok(loaded)
}

fn bench_dump(size_mib: u64, server_bin: Option<PathBuf>, dir: Option<&Path>) -> Result<(), CliError> {
    let bin = server_binary(server_bin)?;
    let me = std::env::current_exe()?;
    let scratch = match dir {
        Some(d) => tempfile::Builder::new().prefix("tidemark-bench").tempdir_in(d)?,
        None => tempfile::Builder::new().prefix("tidemark-bench").tempdir()?,
    };
    let total_bytes = size_mib * 1024 * 1024;
    let runtime = tokio::runtime::Runtime::new()?;
    let source = ServerProcess::start(&bin, None)?;
    eprintln!("loading {size_mib} MiB into {} ...", source.uri);
    let started = Instant::now();
    let bytes = runtime.block_on(load_dump_dataset(&source.uri, total_bytes))?;
    eprintln!(
        "loaded {:.2} GB in {:.1} s",
        bytes as f64 / 1e9,
        started.elapsed().as_secs_f64()
    );
    let real_dump = std::env::var_os("MONGODUMP").map(PathBuf::from);
    let real_restore = std::env::var_os("MONGORESTORE").map(PathBuf::from);

    println!(
        "{:<40} {:>9} {:>10} {:>12} {:>7} {:>12}",
        "run", "seconds", "MB/s", "peak RSS MiB", "CPU s", "server CPU s"
    );
    let mut cold_reads = true;
    let print = |what: &str, run: &ToolRun, server_cpu: f64| {
        println!(
            "{what:<40} {:>9.2} {:>10.1} {:>12.1} {:>7.2} {:>12.2}",
            run.seconds,
            bytes as f64 / 1e6 / run.seconds.max(1e-9),
            run.peak_rss_kib as f64 / 1024.0,
            run.cpu_seconds,
            server_cpu,
        );
    };
    let server_cpu = |server: &ServerProcess| cpu_seconds(server.child.id()).unwrap_or(0.0);
    for (mode, extra) in [
        ("directory", vec![]),
        ("archive", vec!["archive"]),
        ("gzip archive", vec!["archive", "gzip"]),
    ] {
        let archive = extra.contains(&"archive");
        let gzip = extra.contains(&"gzip");
        let mut results: Vec<(&str, ToolRun, ToolRun)> = Vec::new();
        let tools: Vec<(&str, PathBuf, PathBuf, bool)> = {
            let mut t = vec![("tidemark", me.clone(), me.clone(), true)];
            if let (Some(d), Some(r)) = (&real_dump, &real_restore) {
                t.push(("mongodump/mongorestore", d.clone(), r.clone(), false));
            }
            t
        };
        for (who, dump_bin, restore_bin, ours) in tools {
            let out = scratch
                .path()
                .join(format!("{who}-{}", mode.replace(' ', "-")).replace('/', "-"));
            let mut dump = Command::new(&dump_bin);
            if ours {
                dump.arg("dump").arg("--quiet");
            }
            dump.arg(format!("--uri={}", source.uri)).arg("--db=bench");
            if archive {
                dump.arg(format!("--archive={}", out.display()));
            } else {
                dump.arg(format!("--out={}", out.display()));
            }
            if gzip {
                dump.arg("--gzip");
            }
            // Every timed run starts on warm memory (see `warm_memory`).
            warm_memory(size_mib.saturating_mul(2) << 20);
            let source_cpu = server_cpu(&source);
            let dump_run = run_measured(&mut dump)?;
            let dump_server_cpu = server_cpu(&source) - source_cpu;
            cold_reads &= drop_page_cache();
            // The target server grows to about 1.5 times the dataset; a tool holds up to a quarter of it.
            warm_memory(size_mib.saturating_mul(2) << 20);
            let target = ServerProcess::start(&bin, None)?;
            let mut restore = Command::new(&restore_bin);
            if ours {
                restore.arg("restore").arg("--quiet");
            }
            restore.arg(format!("--uri={}", target.uri));
            if archive {
                restore.arg(format!("--archive={}", out.display()));
            } else {
                restore.arg(format!("--dir={}", out.display()));
            }
            if gzip {
                restore.arg("--gzip");
            }
            let target_cpu = server_cpu(&target);
            let restore_run = run_measured(&mut restore)?;
            let restore_server_cpu = server_cpu(&target) - target_cpu;
            drop(target);
            if archive {
                std::fs::remove_file(&out)?;
            } else {
                std::fs::remove_dir_all(&out)?;
            }
            print(&format!("{who} dump, {mode}"), &dump_run, dump_server_cpu);
            print(&format!("{who} restore, {mode}"), &restore_run, restore_server_cpu);
            results.push((who, dump_run, restore_run));
        }
        if let [(_, ours_d, ours_r), (_, theirs_d, theirs_r)] = results.as_slice() {
            println!(
                "  ratios ours/theirs ({mode}): dump throughput x{:.2}, restore throughput x{:.2}, dump memory x{:.2}, restore memory x{:.2}, dump CPU x{:.2}, restore CPU x{:.2}",
                theirs_d.seconds / ours_d.seconds.max(1e-9),
                theirs_r.seconds / ours_r.seconds.max(1e-9),
                ours_d.peak_rss_kib as f64 / theirs_d.peak_rss_kib.max(1) as f64,
                ours_r.peak_rss_kib as f64 / theirs_r.peak_rss_kib.max(1) as f64,
                ours_d.cpu_seconds / theirs_d.cpu_seconds.max(1e-9),
                ours_r.cpu_seconds / theirs_r.cpu_seconds.max(1e-9),
            );
        }
    }
    if cold_reads {
        println!(
            "(the page cache was dropped after every dump: each restore read its input from disk, as after an outage)"
        );
    } else {
        println!(
            "(the page cache could not be dropped (needs root): a restore may have read its input from the cache; \
             tidemark's dump output never sits there, as it is written with direct I/O)"
        );
    }
    if real_dump.is_none() || real_restore.is_none() {
        println!("(set MONGODUMP and MONGORESTORE to the real tools to compare in the same run)");
    }
    Ok(())
}

/// Writes `bytes` of fresh memory (at most three quarters of the memory available) and gives it
/// back, just before a timed run.
///
/// On a virtual machine whose host backs guest memory only while the guest uses it (Firecracker
/// with its free-page bitmap is one), the kernel's first write to a page the host no longer backs
/// costs several times an ordinary page fault: clearing such pages was a third of the server's CPU
/// in a profile, and the same directory restore cost the server 3.6 to 8.5 s of system time
/// instead of 1.5 to 1.7 s. Which pages are cold depends on what ran before and when, so without
/// this a run's figures depend on its place in the benchmark. Memory written just before is warm,
/// and a process starting right after gets it back.
pub(crate) fn warm_memory(bytes: u64) {
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map(|kib| kib.saturating_mul(1024));
    let bytes = available.map_or(bytes, |a| bytes.min(a / 4 * 3));
    let Ok(len) = usize::try_from(bytes) else { return };
    if len == 0 {
        return;
    }
    let started = Instant::now();
    // An anonymous mapping, so the pages go back to the kernel at once when it is dropped.
    let Ok(mut memory) = memmap2::MmapMut::map_anon(len) else {
        return;
    };
    for page in memory.chunks_mut(4096) {
        page[0] = 1;
    }
    std::hint::black_box(&memory);
    drop(memory);
    tracing::debug!(
        "wrote {:.1} GiB of fresh memory in {:.1} s before a timed run",
        bytes as f64 / f64::from(1u32 << 30),
        started.elapsed().as_secs_f64()
    );
}

/// Writes dirty pages out and empties the page cache, so that each restore reads its input from
/// disk whichever tool wrote it (`tidemark dump` writes with direct I/O, mongodump through the
/// cache). Returns whether it worked (it needs root).
fn drop_page_cache() -> bool {
    let synced = Command::new("sync").status().is_ok_and(|s| s.success());
    synced && std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}
