//! `tidemark copy`: copy snapshots to another repository (re-encrypted, deduplicated there).

use anyhow::Context;
use std::path::PathBuf;
use tidemark_repo::copy::{CopyOutcome, copy_slices, copy_snapshots};

use crate::CliError;
use crate::repo::{RepoOptions, open, password, runtime};
use tidemark_repo::{Repository, Storage, StorageConfig};

/// Arguments of `tidemark copy`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Source repository URL.
    #[arg(long = "from")]
    from: String,
    /// Source password file (otherwise `TIDEMARK_FROM_PASSWORD`, otherwise a prompt).
    #[arg(long)]
    from_password_file: Option<PathBuf>,
    /// The source repository is not encrypted.
    #[arg(long)]
    from_insecure_no_password: bool,
    /// Target repository (`--to`, with `--password-file`/`TIDEMARK_PASSWORD`).
    #[arg(long = "to")]
    to: String,
    /// Target password file (otherwise `TIDEMARK_PASSWORD`, otherwise a prompt).
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// The target repository is not encrypted.
    #[arg(long)]
    insecure_no_password: bool,
    /// Snapshots to copy (ids, prefixes or `latest`); all when none is given.
    snapshots: Vec<String>,
}

pub(crate) fn run(args: &Args) -> Result<(), CliError> {
    runtime()?.block_on(async {
        let from_pw = password(
            args.from_password_file.as_ref(),
            "TIDEMARK_FROM_PASSWORD",
            args.from_insecure_no_password,
            &format!("password for {}: ", args.from),
        )?;
        let storage = Storage::open(&args.from, &StorageConfig::default())
            .await
            .with_context(|| format!("open storage {}", args.from))?;
        let source = Repository::open(storage, from_pw.as_deref())
            .await
            .with_context(|| format!("open repository {}", args.from))?;
        let target = open(&RepoOptions {
            repo: args.to.clone(),
            password_file: args.password_file.clone(),
            insecure_no_password: args.insecure_no_password,
        })
        .await?;
        let ids = if args.snapshots.is_empty() {
            source.snapshots().await?.into_iter().map(|(id, _)| id).collect()
        } else {
            let mut ids = Vec::new();
            for s in &args.snapshots {
                ids.push(source.find_snapshot(s).await?);
            }
            ids
        };
        for (from, outcome) in copy_snapshots(&source, &target, &ids).await? {
            match outcome {
                CopyOutcome::Copied(to) => println!("copied {} -> {}", &from.to_hex()[..8], &to.to_hex()[..8]),
                CopyOutcome::AlreadyPresent(to) => {
                    println!(
                        "skipped {} (already in target as {})",
                        &from.to_hex()[..8],
                        &to.to_hex()[..8]
                    );
                }
            }
        }
        let slices = copy_slices(&source, &target).await?;
        let copied = slices
            .iter()
            .filter(|(_, o)| matches!(o, CopyOutcome::Copied(_)))
            .count();
        if !slices.is_empty() {
            println!(
                "oplog slices: {copied} copied, {} already in target",
                slices.len() - copied
            );
        }
        Ok(())
    })
}
