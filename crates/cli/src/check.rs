//! `tidemark check`: verify a repository's structure and, optionally, its data.

use anyhow::anyhow;
use tidemark_repo::check::{CheckOptions, check};

use crate::CliError;
use crate::repo::{RepoOptions, open, runtime};

/// Arguments of `tidemark check`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    repo: RepoOptions,
    /// Read every pack and verify every blob and every namespace content hash.
    #[arg(long, conflicts_with = "read_data_subset")]
    read_data: bool,
    /// Read only subset N of M of the packs, e.g. `2/5`.
    #[arg(long, value_name = "N/M", value_parser = parse_subset)]
    read_data_subset: Option<(u32, u32)>,
}

fn parse_subset(text: &str) -> Result<(u32, u32), String> {
    let (n, m) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not of the form N/M"))?;
    let n: u32 = n.parse().map_err(|e| format!("N in {text:?}: {e}"))?;
    let m: u32 = m.parse().map_err(|e| format!("M in {text:?}: {e}"))?;
    if n == 0 || m == 0 || n > m {
        return Err(format!("{text:?}: need 1 <= N <= M"));
    }
    Ok((n, m))
}

pub(crate) fn run(args: &Args) -> Result<(), CliError> {
    runtime()?.block_on(async {
        let repo = open(&args.repo).await?;
        let options = CheckOptions {
            read_data: args.read_data,
            read_data_subset: args.read_data_subset,
        };
        let report = check(&repo, options).await?;
        for note in &report.notes {
            println!("note: {note}");
        }
        for error in &report.errors {
            println!("error: {error}");
        }
        println!(
            "checked {} snapshot(s), {} oplog slice(s); read {} pack(s), {} blob(s), {} namespace(s)",
            report.snapshots, report.slices, report.packs_read, report.blobs_verified, report.namespaces_verified
        );
        if report.is_ok() {
            println!("no errors were found");
            Ok(())
        } else {
            Err(anyhow!("{} error(s) found; the repository is damaged", report.errors.len()).into())
        }
    })
}
