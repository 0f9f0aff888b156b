//! `tidemark bench backup`: backup repository throughput and deduplication.
//!
//! A `tidemark-server` process is loaded with the same generated dataset as `bench dump` (about
//! 1 KiB documents with an incompressible payload, four small collections and a large one). Then,
//! each as a separate `tidemark` process:
//! 1. `tidemark dump --archive` of the database, the reference;
//! 2. a full `tidemark backup --uri` into a new repository (target: at least 80% of the dump's
//!    throughput);
//! 3. `tidemark restore --repo --snapshot latest` into a fresh server (restore throughput);
//! 4. a second backup of the unchanged database (target: it adds at most 1% of the first backup's
//!    stored bytes);
//! 5. a third backup after `$set` on 1% of the documents, every 100th one, so changes are spread
//!    over the whole dataset, the worst case for deduplication (target: at most 5%).
//!
//! Stored bytes are measured on disk (every object under the repository directory), not taken from
//! the command's own report.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

use super::{ServerProcess, ToolRun, cpu_seconds, load_dump_dataset, run_measured, server_binary, warm_memory};
use crate::CliError;

/// Password of the benchmark repository.
const PASSWORD: &str = "tidemark bench";

/// Total size of the files under `dir`.
fn stored_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0u64;
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            stored_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// `$set` on every 100th document of each collection (by `seq`); returns the documents changed.
async fn change_one_percent(uri: &str) -> anyhow::Result<u64> {
    let client = mongodb::Client::with_uri_str(uri).await?;
    let db = client.database("bench");
    let mut changed = 0u64;
    for name in ["large", "c1", "c2", "c3", "c4"] {
        let coll = db.collection::<bson::Document>(name);
        let filter = bson::doc! {"seq": {"$mod": [100_i64, 7_i64]}};
        let result = coll
            .update_many(filter, bson::doc! {"$set": {"score": -1.5, "active": true}})
            .await?;
        changed += result.modified_count;
    }
    Ok(changed)
}

fn tidemark(me: &Path) -> Command {
    let mut cmd = Command::new(me);
    cmd.env("TIDEMARK_PASSWORD", PASSWORD);
    cmd
}

pub(super) fn bench_backup(
    size_mib: u64,
    server_bin: Option<PathBuf>,
    dir: Option<&Path>,
    chunk_kib: Option<u32>,
) -> Result<(), CliError> {
    let bin = server_binary(server_bin)?;
    let me = std::env::current_exe()?;
    let scratch = match dir {
        Some(d) => tempfile::Builder::new().prefix("tidemark-bench").tempdir_in(d)?,
        None => tempfile::Builder::new().prefix("tidemark-bench").tempdir()?,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let source = ServerProcess::start(&bin, None)?;
    eprintln!("loading {size_mib} MiB into {} ...", source.uri);
    let bytes = runtime.block_on(load_dump_dataset(&source.uri, size_mib * 1024 * 1024))?;
    let repo = scratch.path().join("repo");
    let repo_arg = format!("--repo={}", repo.display());
    let uri_arg = format!("--uri={}", source.uri);

    println!(
        "{:<44} {:>9} {:>10} {:>12} {:>7} {:>12}",
        "run", "seconds", "MB/s", "peak RSS MiB", "CPU s", "server CPU s"
    );
    let print = |what: &str, run: &ToolRun, server_cpu: f64| {
        println!(
            "{what:<44} {:>9.2} {:>10.1} {:>12.1} {:>7.2} {:>12.2}",
            run.seconds,
            bytes as f64 / 1e6 / run.seconds.max(1e-9),
            run.peak_rss_kib as f64 / 1024.0,
            run.cpu_seconds,
            server_cpu,
        );
    };
    // CPU seconds a server spends during `run` (both share the machine's cores).
    let measured_against = |server: &ServerProcess, cmd: &mut Command| -> anyhow::Result<(ToolRun, f64)> {
        let before = cpu_seconds(server.child.id()).unwrap_or(0.0);
        let run = run_measured(cmd)?;
        Ok((run, cpu_seconds(server.child.id()).unwrap_or(before) - before))
    };

    let archive = scratch.path().join("dump.archive");
    // Each timed run starts on warm memory (see `warm_memory`): the tools hold up to about the
    // dataset's size, a target server 1.5 times it.
    let warm = || warm_memory(size_mib.saturating_mul(2) << 20);
    warm();
    let (dump, dump_server) = measured_against(
        &source,
        tidemark(&me)
            .args(["dump", "--quiet", &uri_arg, "--db=bench"])
            .arg(format!("--archive={}", archive.display())),
    )?;
    std::fs::remove_file(&archive)?;
    print("tidemark dump --archive", &dump, dump_server);

    let mut init = tidemark(&me);
    init.args(["repo", "init", &repo_arg]);
    if let Some(kib) = chunk_kib {
        init.arg(format!("--chunk-size={kib}"));
    }
    run_measured(&mut init)?;
    let empty = stored_bytes(&repo)?;
    let backup = |what: &str| -> anyhow::Result<(ToolRun, f64, u64)> {
        let before = stored_bytes(&repo)?;
        warm();
        let (run, server) = measured_against(
            &source,
            tidemark(&me).args(["backup", &repo_arg, &uri_arg, "--db=bench"]),
        )?;
        print(what, &run, server);
        Ok((run, server, stored_bytes(&repo)? - before))
    };
    let (full, full_server, first) = backup("tidemark backup (full)")?;
    let parts: Vec<String> = ["data", "index", "snapshots"]
        .iter()
        .map(|dir| Ok(format!("{dir}/ {:.1} MB", stored_bytes(&repo.join(dir))? as f64 / 1e6)))
        .collect::<anyhow::Result<_>>()?;

    warm();
    let target = ServerProcess::start(&bin, None)?;
    let (restore, restore_server) = measured_against(
        &target,
        tidemark(&me).args([
            "restore",
            "--quiet",
            &format!("--uri={}", target.uri),
            &repo_arg,
            "--snapshot=latest",
        ]),
    )?;
    drop(target);
    print("tidemark restore --repo --snapshot latest", &restore, restore_server);

    let (_, _, unchanged) = backup("tidemark backup (unchanged database)")?;
    let changed_docs = runtime.block_on(change_one_percent(&source.uri))?;
    let (_, _, changed) = backup("tidemark backup (1% of documents changed)")?;

    let pct = |added: u64| added as f64 * 100.0 / first.max(1) as f64;
    let ratio = dump.seconds / full.seconds.max(1e-9) * 100.0;
    println!();
    println!(
        "data {:.1} MB; repository: {:.1} MB after the first backup (from {} bytes empty): {}",
        bytes as f64 / 1e6,
        first as f64 / 1e6,
        empty,
        parts.join(", ")
    );
    println!("backup throughput = {ratio:.0}% of dump --archive (target >= 80%)");
    // Tool and server share the cores: CPU time over the core count bounds the wall time.
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let floor = |run: &ToolRun, server: f64| (run.cpu_seconds + server) / cores as f64;
    println!(
        "CPU (tool + server): dump --archive {:.2} + {:.2} s, full backup {:.2} + {:.2} s; on {cores} cores \
         no faster than {:.2} s and {:.2} s",
        dump.cpu_seconds,
        dump_server,
        full.cpu_seconds,
        full_server,
        floor(&dump, dump_server),
        floor(&full, full_server),
    );
    println!(
        "restore from the repository: {:.1} MB/s",
        bytes as f64 / 1e6 / restore.seconds.max(1e-9)
    );
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(repo.join("config"))?)?;
    println!(
        "chunks: documents {}, files {}",
        config["document_chunker"], config["chunker"]
    );
    println!(
        "unchanged database: +{unchanged} bytes = {:.2}% of the first backup (target <= 1%)",
        pct(unchanged)
    );
    println!(
        "{changed_docs} documents changed (1%): +{changed} bytes = {:.2}% of the first backup (target <= 5%)",
        pct(changed)
    );
    Ok(())
}
