//! `tidemark forget`: remove snapshots by retention policy, optionally pruning the data.

use tidemark_repo::forget::{KeepPolicy, forget, prune};
use tidemark_repo::rfc3339;

use crate::CliError;
use crate::repo::{RepoOptions, open, runtime};

/// Arguments of `tidemark forget`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    repo: RepoOptions,
    /// Keep the N newest snapshots.
    #[arg(long, default_value_t = 0)]
    keep_last: u32,
    /// Keep the newest snapshot of each of the last N hours.
    #[arg(long, default_value_t = 0)]
    keep_hourly: u32,
    /// Keep the newest snapshot of each of the last N days.
    #[arg(long, default_value_t = 0)]
    keep_daily: u32,
    /// Keep the newest snapshot of each of the last N weeks.
    #[arg(long, default_value_t = 0)]
    keep_weekly: u32,
    /// Keep the newest snapshot of each of the last N months.
    #[arg(long, default_value_t = 0)]
    keep_monthly: u32,
    /// Keep the newest snapshot of each of the last N years.
    #[arg(long, default_value_t = 0)]
    keep_yearly: u32,
    /// Also delete the data no remaining snapshot needs.
    #[arg(long)]
    prune: bool,
    /// Only show what would be removed.
    #[arg(long)]
    dry_run: bool,
}

pub(crate) fn run(args: &Args) -> Result<(), CliError> {
    let policy = KeepPolicy {
        last: args.keep_last,
        hourly: args.keep_hourly,
        daily: args.keep_daily,
        weekly: args.keep_weekly,
        monthly: args.keep_monthly,
        yearly: args.keep_yearly,
    };
    if policy.is_empty() {
        return Err(CliError::usage("give at least one --keep-* rule"));
    }
    runtime()?.block_on(async {
        let repo = open(&args.repo).await?;
        let plan = forget(&repo, &policy, args.dry_run).await?;
        for d in &plan.keep {
            println!("keep   {} {} {:<16} ({})", &d.id.to_hex()[..8], rfc3339(d.time), d.label, d.reasons.join(", "));
        }
        let verb = if args.dry_run { "would remove" } else { "remove" };
        for d in &plan.remove {
            println!("{verb} {} {} {}", &d.id.to_hex()[..8], rfc3339(d.time), d.label);
        }
        println!("{} kept, {} {}", plan.keep.len(), plan.remove.len(), if args.dry_run { "to remove" } else { "removed" });
        if !plan.remove_slices.is_empty() {
            println!(
                "{} oplog slice(s) older than every kept snapshot's window {}",
                plan.remove_slices.len(),
                if args.dry_run { "to remove" } else { "removed" }
            );
        }
        if args.prune {
            let p = prune(&repo, args.dry_run).await?;
            println!(
                "prune: {} pack(s) deleted, {} repacked ({} blobs), {} unreferenced, {} kept; {} bytes freed, {} written",
                p.delete_packs.len(),
                p.repack_packs.len(),
                p.blobs_to_repack,
                p.unindexed_packs.len(),
                p.kept_packs,
                p.bytes_freed,
                p.bytes_added
            );
        }
        Ok(())
    })
}
