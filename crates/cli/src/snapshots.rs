//! `tidemark snapshots`: list the snapshots of a repository.

use serde_json::json;
use tidemark_repo::rfc3339;

use crate::CliError;
use crate::repo::{RepoOptions, open, runtime};

/// Arguments of `tidemark snapshots`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    repo: RepoOptions,
    /// Print JSON (one array of snapshot summaries).
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: &Args) -> Result<(), CliError> {
    runtime()?.block_on(async {
        let repo = open(&args.repo).await?;
        let snapshots = repo.snapshots().await?;
        if args.json {
            let list: Vec<_> = snapshots
                .iter()
                .map(|(id, s)| {
                    json!({
                        "id": id.to_hex(),
                        "time": rfc3339(s.time),
                        "host": s.host,
                        "label": s.label,
                        "tags": s.tags,
                        "members": s.members.iter().map(|m| &m.name).collect::<Vec<_>>(),
                        "namespaces": s.namespace_count(),
                        "documents": s.stats.documents,
                        "total_bytes": s.stats.total_bytes,
                        "added_bytes": s.stats.added_bytes,
                        "consistency_ts": s.consistency_ts.map(|t| json!({"t": t.t, "i": t.i})),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&list)?);
            return Ok(());
        }
        println!(
            "{:<10} {:<20} {:<16} {:>5} {:>12} {:>12}  consistency",
            "id", "time", "label", "ns", "size", "added"
        );
        for (id, s) in &snapshots {
            println!(
                "{:<10} {:<20} {:<16} {:>5} {:>12} {:>12}  {}",
                &id.to_hex()[..8],
                rfc3339(s.time),
                s.label,
                s.namespace_count(),
                s.stats.total_bytes,
                s.stats.added_bytes,
                s.consistency_ts.map(|t| t.to_string()).unwrap_or_else(|| "-".into())
            );
        }
        println!("{} snapshot(s)", snapshots.len());
        Ok(())
    })
}
