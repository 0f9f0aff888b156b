//! `tidemark oplog follow`: archive a replica set's oplog into a repository continuously, so
//! snapshots can be restored to any later moment (see `tidemark_core::follow`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use tidemark_core::follow::{FollowEvent, FollowOptions, FollowStatus, FollowSummary, follow};
use tidemark_repo::Timestamp;
use tidemark_repo::oplog_archive::SliceStart;

use crate::CliError;
use crate::dump::ConnArgs;
use crate::repo::{RepoOptions, open, runtime};

/// Arguments of `tidemark oplog`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: OplogCommand,
}

#[derive(Debug, clap::Subcommand)]
enum OplogCommand {
    /// Archive a replica set's oplog into a repository as it is written (continuous, for point-in-time restores).
    Follow(Box<FollowArgs>),
}

/// Arguments of `tidemark oplog follow` (`-h` is the host, as in the MongoDB tools; help is `--help`).
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub(crate) struct FollowArgs {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    #[command(flatten)]
    repo: RepoOptions,
    #[command(flatten)]
    conn: ConnArgs,
    /// Seal the open slice after this long: `5s`, `500ms`, `2m` (a bare number is seconds).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    seal_interval: Duration,
    /// Seal the open slice once it holds this many MiB of entries.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    seal_size: u64,
    /// Archive what is committed now, seal and exit (exit status 1 if a gap was recorded).
    #[arg(long)]
    once: bool,
    /// Print events and the summary as JSON lines on stdout.
    #[arg(long)]
    json: bool,
    /// No status line.
    #[arg(long)]
    quiet: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 5s, 500ms or 2m"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use ms, s or m)")),
    };
    if !(secs > 0.0 && secs <= 86_400.0) {
        return Err(format!("{text:?} must be more than 0 and at most a day"));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub(crate) fn run(args: &Args) -> Result<(), CliError> {
    match &args.command {
        OplogCommand::Follow(follow_args) => run_follow(follow_args),
    }
}

fn ts_json(ts: Timestamp) -> serde_json::Value {
    json!({"t": ts.t, "i": ts.i})
}

fn status_line(s: &FollowStatus) -> String {
    format!(
        "{} via {}: {} entries archived, {} slice(s) sealed, {} unsealed, lag {} s, last {}",
        s.replica_set,
        s.member,
        s.entries,
        s.slices,
        s.unsealed,
        s.lag_secs,
        s.last.map_or_else(|| "-".to_owned(), |t| t.to_string())
    )
}

fn event_json(event: &FollowEvent) -> serde_json::Value {
    match event {
        FollowEvent::Started { replica_set, start } => {
            let (kind, ts) = match start {
                SliceStart::ContinuesFrom(t) => ("continues_from", Some(*t)),
                SliceStart::GapAfter(t) => ("gap_after", Some(*t)),
                SliceStart::Fresh => ("fresh", None),
            };
            json!({"event": "started", "replica_set": replica_set, "start": kind, "ts": ts.map(ts_json)})
        }
        FollowEvent::Member { host, role } => json!({"event": "member", "host": host, "role": role.name()}),
        FollowEvent::Gap { after, oldest } => {
            json!({"event": "gap", "after": ts_json(*after), "oldest_available": ts_json(*oldest)})
        }
        FollowEvent::Sealed(s) => json!({
            "event": "sealed", "slice": s.id.to_hex(), "replica_set": s.replica_set,
            "first": ts_json(s.first), "last": ts_json(s.last),
            "continues_from": s.continues_from.map(ts_json),
            "gap_after": s.gap.as_ref().map(|g| ts_json(g.after)),
            "entries": s.entries, "bytes": s.bytes,
        }),
        FollowEvent::Retrying { message } => json!({"event": "retrying", "message": message}),
        FollowEvent::Status(s) => json!({
            "event": "status", "replica_set": s.replica_set, "member": s.member, "entries": s.entries,
            "slices": s.slices, "unsealed": s.unsealed, "lag_secs": s.lag_secs,
            "last": s.last.map(ts_json), "majority": s.majority.map(ts_json),
        }),
    }
}

fn summary_json(s: &FollowSummary) -> serde_json::Value {
    json!({
        "event": "summary", "replica_set": s.replica_set, "entries": s.entries, "slices": s.slices,
        "bytes": s.bytes, "last": s.last.map(ts_json),
        "gaps": s.gaps.iter().map(|g| json!({"after": ts_json(g.after), "resumed_at": ts_json(g.resumed_at)})).collect::<Vec<_>>(),
    })
}

fn run_follow(args: &FollowArgs) -> Result<(), CliError> {
    let connection = args.conn.to_options(None)?;
    if connection.uri.is_none() && connection.host.is_none() {
        return Err(CliError::usage("give the replica set with --uri (or --host)"));
    }
    let options = FollowOptions {
        connection,
        seal_interval: args.seal_interval,
        seal_size: args.seal_size * 1024 * 1024,
        once: args.once,
        ..FollowOptions::default()
    };
    runtime()?.block_on(async {
        let repo = open(&args.repo).await?;
        let stop = Arc::new(AtomicBool::new(false));
        {
            // SIGINT and SIGTERM seal the open slice and end the run normally.
            let stop = stop.clone();
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                stop.store(true, Ordering::SeqCst);
            });
        }
        let bar = ProgressBar::with_draw_target(
            None,
            if args.quiet || args.json {
                ProgressDrawTarget::hidden()
            } else {
                ProgressDrawTarget::stderr()
            },
        );
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(250));
        let json = args.json;
        let quiet = args.quiet;
        let log = bar.clone();
        let mut on_event = move |event: FollowEvent| {
            if json {
                println!("{}", event_json(&event));
            }
            match &event {
                FollowEvent::Gap { after, oldest } => {
                    // Loud on every output mode: restores across this point are impossible.
                    log.suspend(|| {
                        eprintln!(
                            "tidemark: GAP: the source oplog no longer holds {after} (oldest entry {oldest}); \
                             entries between them are lost from the archive"
                        );
                    });
                }
                FollowEvent::Status(s) => log.set_message(status_line(s)),
                FollowEvent::Sealed(s) if !json && !quiet => log.println(format!(
                    "sealed slice {} of {}: {} entries, {} .. {}",
                    &s.id.to_hex()[..8],
                    s.replica_set,
                    s.entries,
                    s.first,
                    s.last
                )),
                FollowEvent::Member { host, role } if !json && !quiet => {
                    log.println(format!("reading the oplog of {host} ({})", role.name()));
                }
                FollowEvent::Retrying { message } if !json => {
                    log.suspend(|| eprintln!("tidemark: retrying: {message}"));
                }
                _ => {}
            }
        };
        let summary = follow(&repo, &options, stop, &mut on_event).await;
        bar.finish_and_clear();
        let summary = summary?;
        if json {
            println!("{}", summary_json(&summary));
        } else {
            println!(
                "{}: {} entries archived in {} slice(s), {} bytes; last {}",
                summary.replica_set,
                summary.entries,
                summary.slices,
                summary.bytes,
                summary.last.map_or_else(|| "-".to_owned(), |t| t.to_string())
            );
        }
        if !summary.gaps.is_empty() {
            let list: Vec<String> = summary
                .gaps
                .iter()
                .map(|g| format!("after {} (resumed at {})", g.after, g.resumed_at))
                .collect();
            let message = format!("the archive of {} has a gap: {}", summary.replica_set, list.join(", "));
            if args.once {
                return Err(anyhow::anyhow!(message).into());
            }
            eprintln!("tidemark: GAP: {message}");
        }
        Ok(())
    })
}
