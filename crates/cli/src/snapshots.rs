//! `tidemark snapshots`: list the snapshots of a repository, or (`--pitr`) the point-in-time
//! restore windows that snapshots and the archived oplog give, with the gaps.

use std::collections::BTreeMap;

use serde_json::json;
use tidemark_repo::oplog_archive::{list_slices, pitr_timeline};
use tidemark_repo::{Repository, Timestamp, rfc3339};

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
    /// Show the point-in-time restore windows (base snapshot + archived oplog) and the gaps instead.
    #[arg(long)]
    pitr: bool,
}

fn ts_json(ts: Timestamp) -> serde_json::Value {
    json!({"t": ts.t, "i": ts.i, "time": rfc3339(i64::from(ts.t))})
}

fn ts_text(ts: Timestamp) -> String {
    format!("{ts} {}", rfc3339(i64::from(ts.t)))
}

/// `snapshots --pitr`: per replica set, the windows a restore can reach and the holes.
async fn print_pitr(repo: &Repository, as_json: bool) -> Result<(), CliError> {
    let timeline = pitr_timeline(repo).await?;
    let slices = list_slices(repo).await?;
    let mut archives: BTreeMap<&str, (u64, u64, Timestamp, Timestamp)> = BTreeMap::new();
    for s in &slices {
        let e = archives.entry(&s.replica_set).or_insert((0, 0, s.first, s.last));
        e.0 += 1;
        e.1 += s.entries;
        e.2 = e.2.min(s.first);
        e.3 = e.3.max(s.last);
    }
    if as_json {
        let value = json!({
            "windows": timeline.windows.iter().map(|w| json!({
                "replica_set": w.replica_set, "base_snapshot": w.base_snapshot.to_hex(),
                "from": ts_json(w.from), "to": ts_json(w.to),
            })).collect::<Vec<_>>(),
            "gaps": timeline.gaps.iter().map(|g| json!({
                "replica_set": g.replica_set, "after": ts_json(g.after), "resumed_at": ts_json(g.resumed_at),
            })).collect::<Vec<_>>(),
            "archives": archives.iter().map(|(set, (n, entries, first, last))| json!({
                "replica_set": set, "slices": n, "entries": entries, "first": ts_json(*first), "last": ts_json(*last),
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("{:<12} {:<10} {:<48} to", "replica set", "base", "from");
    for w in &timeline.windows {
        println!(
            "{:<12} {:<10} {:<48} {}",
            w.replica_set,
            &w.base_snapshot.to_hex()[..8],
            ts_text(w.from),
            ts_text(w.to)
        );
    }
    println!("{} window(s)", timeline.windows.len());
    for (set, (n, entries, first, last)) in &archives {
        println!(
            "archive {set}: {n} slice(s), {entries} entries, {} .. {}",
            ts_text(*first),
            ts_text(*last)
        );
    }
    for g in &timeline.gaps {
        println!(
            "GAP {}: entries after {} are missing; the archive resumes at {}",
            g.replica_set,
            ts_text(g.after),
            ts_text(g.resumed_at)
        );
    }
    Ok(())
}

pub(crate) fn run(args: &Args) -> Result<(), CliError> {
    runtime()?.block_on(async {
        let repo = open(&args.repo).await?;
        if args.pitr {
            return print_pitr(&repo, args.json).await;
        }
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
