//! `tidemark restore URI --repo URL --at POINT`: point-in-time restore from a backup repository.
//!
//! Parses the point (`tidemark_oplog::point`), plans with [`tidemark_core::pitr::plan_pitr`]
//! (base snapshot, replayed oplog ranges, or a refusal explaining why the point is not
//! restorable), prints the plan with `--dryRun`, and otherwise runs
//! [`tidemark_core::pitr::run_pitr`] with the restore's namespace filters, renames and options,
//! reporting what it did: base snapshot, replayed range, entries applied and skipped, time and
//! entries per second (on stderr, or as JSON on stdout with `--json`).

use std::sync::Arc;

use bson::Timestamp;
use serde_json::{Value, json};
use tidemark_core::{
    connection::ConnectionOptions,
    pitr::{PitrPlan, plan_pitr, run_pitr},
    restore::RestoreOptions,
};

use crate::{
    CliError,
    dump::{Bars, OutputArgs, runtime},
    repo::open,
    restore_repo::RepoSource,
};

fn ts_json(t: Timestamp) -> Value {
    json!({"t": t.time, "i": t.increment})
}

fn plan_json(plan: &PitrPlan) -> Value {
    json!({
        "point": ts_json(plan.point.last),
        "baseSnapshot": plan.window.base_snapshot.to_string(),
        "replicaSet": plan.window.replica_set,
        "consistencyTs": ts_json(plan.window.from.into()),
        "windowEnd": ts_json(plan.window.to.into()),
        "snapshotOplog": plan.snapshot_oplog.map(|(first, last)| json!({"first": ts_json(first), "last": ts_json(last)})),
        "archivedOplog": plan.archived.map(|(after, upto)| json!({"after": ts_json(after), "upto": ts_json(upto)})),
    })
}

/// Runs `restore --repo --at`.
pub(crate) fn run(
    at: &str,
    source: &RepoSource,
    conn: &ConnectionOptions,
    options: &RestoreOptions,
    output: &OutputArgs,
) -> Result<(), CliError> {
    let point = tidemark_oplog::parse_restore_point(at).map_err(|e| CliError::usage(e.to_string()))?;
    let Some(repo_url) = &source.repo else {
        return Err(CliError::usage("--at needs --repo"));
    };
    runtime()?.block_on(async {
        let repository = open(&source.repo_options(repo_url)).await?;
        let plan = plan_pitr(&repository, point, source.member.as_deref()).await?;
        if output.dry_run {
            if output.json {
                println!("{}", plan_json(&plan));
            } else {
                eprint!("{plan}");
                eprintln!("dry run completed");
            }
            return Ok(());
        }
        if !output.quiet && !output.json {
            eprint!("{plan}");
        }
        let client = tidemark_core::connection::connect(conn, "tidemark-restore").await?;
        let bars = Arc::new(Bars::new(output.quiet, None, "restored"));
        let result = run_pitr(&client, &repository, plan.clone(), options, bars.clone()).await;
        bars.done();
        let (report, error) = match result {
            Ok(report) => (Some(report), None),
            Err(failure) => (None, Some(failure.error)),
        };
        if output.json {
            let mut value = plan_json(&plan);
            if let (Some(r), Value::Object(map)) = (&report, &mut value) {
                let namespaces: Vec<Value> = r
                    .summary
                    .namespaces
                    .iter()
                    .map(|(ns, ok, failed)| json!({"namespace": ns, "restored": ok, "failed": failed}))
                    .collect();
                map.insert("namespaces".into(), namespaces.into());
                map.insert("restored".into(), r.summary.successes.into());
                map.insert("failed".into(), r.summary.failures.into());
                map.insert("oplogApplied".into(), r.summary.oplog_entries.into());
                map.insert("oplogSkipped".into(), r.summary.oplog_skipped.into());
                map.insert("replaySeconds".into(), r.summary.oplog_seconds.into());
                map.insert("entriesPerSecond".into(), r.replay_rate().into());
                map.insert("seconds".into(), r.seconds.into());
            }
            if let Value::Object(map) = &mut value {
                map.insert("error".into(), error.as_ref().map(crate::restore::error_chain).into());
            }
            println!("{value}");
        } else if let Some(r) = &report {
            if !output.quiet {
                for (ns, ok, failed) in &r.summary.namespaces {
                    eprintln!("{ns}: {ok} document(s) restored, {failed} failed");
                }
            }
            eprintln!(
                "restored {} to {}: {} oplog entries applied, {} skipped, in {:.1}s (replay {:.1}s, {:.0} entries/s)",
                plan.window.base_snapshot,
                plan.point,
                r.summary.oplog_entries.unwrap_or(0),
                r.summary.oplog_skipped.unwrap_or(0),
                r.seconds,
                r.summary.oplog_seconds.unwrap_or(0.0),
                r.replay_rate().unwrap_or(0.0),
            );
            eprintln!("{}", r.summary.result_line());
        }
        match error {
            Some(e) => Err(CliError::from(e)),
            None => Ok(()),
        }
    })
}
