//! `tidemark bench index`: opening a repository whose index lists millions of blobs.
//!
//! Every command reads the whole blob index when it opens a repository. This benchmark writes
//! the index objects of a large repository (synthetic entries: `--chunks` blobs in packs of
//! 7,000, the count a 16 MiB pack of 2 KiB chunks holds, spread over ten index objects as ten
//! backups would write them; no pack data) twice, once binary and once as the JSON that
//! repositories written before hold, and times `tidemark snapshots` (open, load the index, list)
//! on each as a separate process, with its peak memory. `--baseline-bin` runs another tidemark
//! binary on the JSON repository too, to compare with a build from before the binary index.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use tidemark_repo::index::IndexEncoding;
use tidemark_repo::pack::{BlobKind, IndexPack, PackEntry};
use tidemark_repo::{Id, InitOptions, Repository, Storage, StorageConfig};

use super::{ToolRun, run_measured};
use crate::CliError;

/// Password of the benchmark repositories.
const PASSWORD: &str = "tidemark bench";
/// Blobs per pack (a 16 MiB pack of 2 KiB chunks and their chunk lists).
const BLOBS_PER_PACK: u64 = 7_000;
/// Blobs per frame, and a frame's stored bytes (32 chunks of about 2 KiB, compressed).
const BLOBS_PER_FRAME: u64 = 32;
const FRAME_LENGTH: u64 = 48 * 1024;
/// Index objects the entries are spread over.
const INDEX_OBJECTS: u64 = 10;

/// The synthetic packs of index object `object` (of [`INDEX_OBJECTS`]): ids from a counter, stored
/// lengths of about 2.2 KiB, one chunk list per 16 chunks.
fn packs(object: u64, chunks: u64) -> Vec<IndexPack> {
    let per_object = chunks.div_ceil(INDEX_OBJECTS);
    let first = object * per_object;
    let last = (first + per_object).min(chunks);
    let mut out = Vec::new();
    let mut blob = first;
    while blob < last {
        let count = BLOBS_PER_PACK.min(last - blob);
        // Frames of 32 blobs, as backups of 2 KiB chunks store them.
        let mut offset = 0u64;
        let mut inner_offset = 0u64;
        let blobs: Vec<PackEntry> = (blob..blob + count)
            .map(|n| {
                let raw_length = 1024 + (n * 7919) % 2048;
                if n % BLOBS_PER_FRAME == 0 {
                    offset += FRAME_LENGTH;
                    inner_offset = 0;
                }
                let entry = PackEntry {
                    id: Id::hash(&n.to_le_bytes()),
                    kind: if n % 16 == 15 {
                        BlobKind::ChunkList
                    } else {
                        BlobKind::Data
                    },
                    offset,
                    length: FRAME_LENGTH,
                    raw_length,
                    inner_offset,
                };
                inner_offset += raw_length;
                entry
            })
            .collect();
        out.push(IndexPack {
            id: Id::hash(format!("pack {blob}").as_bytes()),
            size: offset + FRAME_LENGTH + 4096,
            blobs,
        });
        blob += count;
    }
    out
}

/// A repository at `dir` whose index lists `chunks` blobs, written as `encoding`.
async fn generate(dir: &Path, chunks: u64, encoding: IndexEncoding) -> anyhow::Result<()> {
    let url = dir.display().to_string();
    let storage = Storage::open(&url, &StorageConfig::default()).await?;
    let repo = Repository::init(storage, Some(PASSWORD), &InitOptions::default())
        .await
        .with_context(|| format!("create repository {url}"))?;
    for object in 0..INDEX_OBJECTS {
        repo.write_index_as(packs(object, chunks), encoding).await?;
    }
    Ok(())
}

/// Total size of the index objects of the repository at `dir`.
fn index_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir.join("index")).context("read index/")? {
        total += entry?.metadata()?.len();
    }
    Ok(total)
}

fn open_and_list(bin: &Path, repo: &Path) -> anyhow::Result<ToolRun> {
    run_measured(
        Command::new(bin)
            .env("TIDEMARK_PASSWORD", PASSWORD)
            .args(["snapshots", "--json"])
            .arg(format!("--repo={}", repo.display())),
    )
}

pub(super) fn bench_index(chunks: u64, dir: Option<&Path>, baseline_bin: Option<PathBuf>) -> Result<(), CliError> {
    let me = std::env::current_exe()?;
    let scratch = match dir {
        Some(d) => tempfile::Builder::new().prefix("tidemark-bench").tempdir_in(d)?,
        None => tempfile::Builder::new().prefix("tidemark-bench").tempdir()?,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let empty = scratch.path().join("empty");
    let binary = scratch.path().join("binary");
    let json = scratch.path().join("json");
    eprintln!(
        "writing index objects of {chunks} blobs in {} ...",
        scratch.path().display()
    );
    runtime.block_on(async {
        generate(&empty, 0, IndexEncoding::Binary).await?;
        generate(&binary, chunks, IndexEncoding::Binary).await?;
        generate(&json, chunks, IndexEncoding::Json).await
    })?;

    println!(
        "{:<52} {:>12} {:>9} {:>12}",
        "open + list (tidemark snapshots)", "index bytes", "seconds", "peak RSS MiB"
    );
    let print = |what: &str, repo: &Path, run: &ToolRun| -> anyhow::Result<()> {
        println!(
            "{what:<52} {:>12} {:>9.2} {:>12.1}",
            index_bytes(repo)?,
            run.seconds,
            run.peak_rss_kib as f64 / 1024.0
        );
        Ok(())
    };
    let base = open_and_list(&me, &empty)?;
    print("empty repository", &empty, &base)?;
    let run = open_and_list(&me, &binary)?;
    print("binary index objects", &binary, &run)?;
    let per_blob =
        |run: &ToolRun| (run.peak_rss_kib.saturating_sub(base.peak_rss_kib)) as f64 * 1024.0 / chunks.max(1) as f64;
    let mut summary = vec![format!(
        "binary: {:.1} stored bytes and {:.0} bytes of memory per blob",
        index_bytes(&binary)? as f64 / chunks.max(1) as f64,
        per_blob(&run)
    )];
    let run = open_and_list(&me, &json)?;
    print("JSON index objects (written before)", &json, &run)?;
    summary.push(format!(
        "JSON: {:.1} stored bytes and {:.0} bytes of memory per blob",
        index_bytes(&json)? as f64 / chunks.max(1) as f64,
        per_blob(&run)
    ));
    if let Some(bin) = baseline_bin {
        let run = open_and_list(&bin, &json)?;
        print(&format!("JSON index objects, {}", bin.display()), &json, &run)?;
        summary.push(format!(
            "baseline binary: {:.0} bytes of memory per blob",
            per_blob(&run)
        ));
    }
    println!();
    for line in summary {
        println!("{line}");
    }
    Ok(())
}
