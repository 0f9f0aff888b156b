//! `tidemark bench replay`: oplog replay throughput, one worker against several.
//!
//! A realistic oplog is written straight into a dump directory (`oplog.bson`): the creation of
//! 10 collections, then a mix of inserts (about 300-byte documents), `$v: 2` updates of live
//! documents and deletes, spread at random over the collections and a few thousand `_id`s
//! each, the way a busy application writes. `tidemark restore --oplogReplay` replays it into a
//! fresh in-memory `tidemark-server` with `--oplogReplayWorkers 1` and then with N workers; each
//! run prints entries per second, and the `dbHash` of every run must be the same (a faster
//! replay that gives another database is a bug, not a result). When `MONGORESTORE` names the
//! real mongorestore, it replays the same dump and the ratio to it is printed (target: 5x).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use bson::{Bson, DateTime, Document, Timestamp, doc};

use super::{ServerProcess, ToolRun, run_measured, server_binary};
use crate::CliError;

/// Collections the generated workload writes to.
const COLLECTIONS: usize = 10;
/// Distinct `_id`s per collection.
const IDS_PER_COLLECTION: u64 = 5000;

/// A small deterministic generator (xorshift64*): the same oplog on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn entry(seq: u64, op: &str, ns: String, o: Document, o2: Option<Document>) -> anyhow::Result<Document> {
    let time = 1_700_000_000 + u32::try_from(seq / 1000)?;
    let increment = u32::try_from(seq % 1000)? + 1;
    let mut e = doc! {
        "ts": Timestamp { time, increment },
        "t": 1_i64,
        "v": 2,
        "op": op,
        "ns": ns,
        "o": o,
    };
    if let Some(o2) = o2 {
        e.insert("o2", o2);
    }
    e.insert(
        "wall",
        DateTime::from_millis(i64::from(time) * 1000 + i64::from(increment)),
    );
    Ok(e)
}

/// Writes `entries` oplog entries to `path`; returns the number written.
fn generate(path: &Path, entries: u64) -> anyhow::Result<u64> {
    let mut out = BufWriter::new(std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut live = vec![vec![false; usize::try_from(IDS_PER_COLLECTION)?]; COLLECTIONS];
    let mut seq = 0_u64;
    let mut write = |e: Document, seq: &mut u64| -> anyhow::Result<()> {
        e.to_writer(&mut out)?;
        *seq += 1;
        Ok(())
    };
    for c in 0..COLLECTIONS {
        let o = doc! {"create": format!("c{c}"), "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"}};
        write(entry(seq, "c", "bench.$cmd".into(), o, None)?, &mut seq)?;
    }
    while seq < entries {
        let c = usize::try_from(rng.below(COLLECTIONS as u64))?;
        let id = rng.below(IDS_PER_COLLECTION);
        let slot = usize::try_from(id)?;
        let ns = format!("bench.c{c}");
        let key = i64::try_from(id)?;
        let roll = rng.below(100);
        let e = if !live[c][slot] || roll < 45 {
            live[c][slot] = true;
            let status = ["new", "paid", "shipped"][usize::try_from(rng.below(3))?];
            let o = doc! {
                "_id": key,
                "seq": i64::try_from(seq)?,
                "customer": format!("customer-{:08}", rng.below(1_000_000)),
                "status": status,
                "amount": f64::from(u32::try_from(rng.below(100_000))?) / 100.0,
                "tags": ["alpha", format!("t{}", rng.below(50))],
                "address": {"street": "1 Main Street", "city": "Springfield", "zip": format!("{:05}", rng.below(99_999))},
                "note": "n".repeat(usize::try_from(100 + rng.below(100))?),
            };
            entry(seq, "i", ns, o, Some(doc! {"_id": key}))?
        } else if roll < 85 {
            let o = doc! {"$v": 2, "diff": {"u": {"status": "updated", "seq": i64::try_from(seq)?}}};
            entry(seq, "u", ns, o, Some(doc! {"_id": key}))?
        } else {
            live[c][slot] = false;
            entry(seq, "d", ns, doc! {"_id": key}, None)?
        };
        write(e, &mut seq)?;
    }
    out.flush()?;
    Ok(seq)
}

async fn db_hash(uri: &str) -> anyhow::Result<String> {
    let client = mongodb::Client::with_uri_str(uri).await?;
    let reply = client.database("bench").run_command(doc! {"dbHash": 1}).await?;
    match reply.get("md5") {
        Some(Bson::String(s)) => Ok(s.clone()),
        _ => bail!("dbHash reply without md5: {reply}"),
    }
}

/// `tidemark bench replay`.
pub(super) fn bench_replay(
    entries: u64,
    workers: usize,
    server_bin: Option<PathBuf>,
    dir: Option<&Path>,
) -> Result<(), CliError> {
    let bin = server_binary(server_bin)?;
    let me = std::env::current_exe()?;
    let scratch = match dir {
        Some(d) => tempfile::Builder::new().prefix("tidemark-bench").tempdir_in(d)?,
        None => tempfile::Builder::new().prefix("tidemark-bench").tempdir()?,
    };
    let dump = scratch.path().join("dump");
    std::fs::create_dir_all(&dump)?;
    let written = generate(&dump.join("oplog.bson"), entries)?;
    let bytes = std::fs::metadata(dump.join("oplog.bson"))?.len();
    println!(
        "{written} oplog entries ({:.1} MB) over {COLLECTIONS} collections: inserts, $v:2 updates, deletes",
        bytes as f64 / 1e6
    );
    let runtime = tokio::runtime::Runtime::new()?;
    println!(
        "{:<36} {:>9} {:>12} {:>12}",
        "run", "seconds", "entries/s", "peak RSS MiB"
    );
    let mut runs: Vec<(String, ToolRun)> = Vec::new();
    let mut hashes: Vec<(String, String)> = Vec::new();
    let workers = workers.max(1);
    let mut counts = vec![1];
    if workers > 1 {
        counts.push(workers);
    }
    let real = std::env::var_os("MONGORESTORE").map(PathBuf::from);
    let mut tools: Vec<(String, Command)> = Vec::new();
    for n in counts {
        let mut cmd = Command::new(&me);
        cmd.args([
            "restore",
            "--quiet",
            "--oplogReplay",
            "--oplogReplayWorkers",
            &n.to_string(),
        ]);
        tools.push((format!("tidemark, {n} worker(s)"), cmd));
    }
    if let Some(real) = &real {
        tools.push(("mongorestore --oplogReplay".into(), Command::new(real)));
    }
    for (label, mut cmd) in tools {
        let server = ServerProcess::start(&bin, None)?;
        if label.starts_with("mongorestore") {
            cmd.arg("--oplogReplay");
        }
        cmd.arg(format!("--uri={}", server.uri))
            .arg(format!("--dir={}", dump.display()));
        let run = run_measured(&mut cmd)?;
        println!(
            "{label:<36} {:>9.2} {:>12.0} {:>12.1}",
            run.seconds,
            written as f64 / run.seconds.max(1e-9),
            run.peak_rss_kib as f64 / 1024.0
        );
        hashes.push((label.clone(), runtime.block_on(db_hash(&server.uri))?));
        runs.push((label, run));
    }
    if let Some((first_label, first)) = hashes.first()
        && let Some((label, other)) = hashes.iter().find(|(_, h)| h != first)
    {
        return Err(anyhow::anyhow!(
            "the replays differ: dbHash {first} after '{first_label}', {other} after '{label}'"
        )
        .into());
    }
    println!(
        "dbHash of every run: {}",
        hashes.first().map_or("", |(_, h)| h.as_str())
    );
    if let [(_, one), (_, many), ..] = runs.as_slice()
        && workers > 1
    {
        println!(
            "speed-up of {workers} workers over 1: x{:.2}",
            one.seconds / many.seconds.max(1e-9)
        );
    }
    match (
        real,
        runs.first(),
        runs.iter().rev().find(|(l, _)| l.starts_with("tidemark")),
    ) {
        (Some(_), Some(_), Some((label, ours))) => {
            if let Some((_, theirs)) = runs.iter().find(|(l, _)| l.starts_with("mongorestore")) {
                println!(
                    "ratio {label} / mongorestore: x{:.2} (target x5)",
                    theirs.seconds / ours.seconds.max(1e-9)
                );
            }
        }
        _ => println!("(set MONGORESTORE to the real mongorestore to compare in the same run)"),
    }
    Ok(())
}
