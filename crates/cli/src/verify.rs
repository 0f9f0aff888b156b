//! `tidemark verify`: a restore drill of a repository snapshot. The drill itself (restore, checks,
//! report) is [`tidemark_drill::drill`]; this module parses the options, draws the restore's
//! progress bars, prints the report as text or JSON, and exits with 1 when the drill fails.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tidemark_core::progress::Progress;
use tidemark_drill::drill::{DrillReport, Status};
use tidemark_drill::{DrillOptions, DrillProgress, DrillStart, DrillTarget};

use crate::CliError;
use crate::dump::Bars;
use crate::repo::{RepoOptions, open};

/// Arguments of `tidemark verify`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    repo: RepoOptions,
    /// The snapshot to drill (id, unique id prefix, or `latest`, the default).
    #[arg(long, value_name = "ID", conflicts_with = "at")]
    snapshot: Option<String>,
    /// Roll forward to this point (`<seconds>,<increment>`, `Timestamp(s, i)` or an RFC 3339 time) with the
    /// point-in-time restore; the base snapshot is chosen as `restore --at` chooses it.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// The member (replica set or shard) to drill when the snapshot holds several.
    #[arg(long)]
    member: Option<String>,
    /// Restore into a tidemark-server data directory here (new or empty; kept afterwards) instead of memory.
    #[arg(long, value_name = "DIR", conflicts_with = "target")]
    dbpath: Option<PathBuf>,
    /// Drill into this MongoDB instead of an embedded server (it must hold no user data unless --drop).
    #[arg(long, value_name = "URI")]
    target: Option<String>,
    /// With --target: drop each collection of the snapshot before restoring it.
    #[arg(long, requires = "target")]
    drop: bool,
    /// Largest snapshot (MiB of documents times 3) the embedded server may hold; default: half the available memory.
    #[arg(long = "memory-budget", value_name = "MiB")]
    memory_budget: Option<u64>,
    /// Insertion workers per collection.
    #[arg(long = "numInsertionWorkersPerCollection", default_value_t = 2)]
    insertion_workers: usize,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// No progress bars.
    #[arg(short, long)]
    quiet: bool,
}

impl Args {
    /// The drill's options; an invalid `--at` is a usage error.
    fn drill_options(&self) -> Result<DrillOptions, CliError> {
        let at = match &self.at {
            Some(at) => Some(tidemark_oplog::parse_restore_point(at).map_err(|e| CliError::usage(e.to_string()))?),
            None => None,
        };
        let target = match (&self.target, &self.dbpath) {
            (Some(uri), _) => DrillTarget::MongoDb {
                uri: uri.clone(),
                drop: self.drop,
            },
            (None, Some(dbpath)) => DrillTarget::DataDirectory(dbpath.clone()),
            (None, None) => DrillTarget::InMemory,
        };
        Ok(DrillOptions {
            snapshot: self.snapshot.clone(),
            at,
            member: self.member.clone(),
            target,
            memory_budget: self.memory_budget.map(|mib| mib << 20),
            insertion_workers: self.insertion_workers,
        })
    }
}

/// A drill error as the command's error: an option that does not fit is a usage error.
pub(crate) fn drill_error(error: tidemark_drill::Error) -> CliError {
    if error.is_invalid_option() {
        CliError::usage(error.to_string())
    } else {
        CliError::from(error.into_inner())
    }
}

pub(crate) fn run(args: &Args) -> Result<(), CliError> {
    if args.insertion_workers == 0 {
        return Err(CliError::usage("--numInsertionWorkersPerCollection must be positive"));
    }
    let runtime = crate::repo::runtime()?;
    let result = runtime.block_on(async {
        let options = args.drill_options()?;
        let repository = open(&args.repo).await?;
        let progress = Arc::new(DrillBars::new(args.quiet || args.json, args.json));
        tidemark_drill::drill(&repository, &options, progress)
            .await
            .map_err(drill_error)
    });
    match result {
        Ok(report) => {
            print_report(&report, args.json);
            match report.failure_summary() {
                None => Ok(()),
                // The report is out; the command fails with its summary.
                Some(failed) => Err(CliError::from(anyhow::anyhow!(failed))),
            }
        }
        Err(e) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "error": format!("{:#}", e.error)})
                );
            }
            Err(e)
        }
    }
}

/// The drill's progress on the terminal: the announcement line (not with `--json`) and the
/// restore's bars.
pub(crate) struct DrillBars {
    quiet: bool,
    json: bool,
    /// The restore's bars, while it runs.
    bars: Mutex<Option<Arc<Bars>>>,
}

impl DrillBars {
    /// No bars with `quiet`; no announcement line with `json`.
    pub(crate) fn new(quiet: bool, json: bool) -> Self {
        Self {
            quiet,
            json,
            bars: Mutex::new(None),
        }
    }

    fn bars(&self) -> Option<Arc<Bars>> {
        self.bars.lock().ok().and_then(|b| b.clone())
    }
}

impl Progress for DrillBars {
    fn start(&self, namespace: &str, total: Option<u64>) {
        if let Some(bars) = self.bars() {
            bars.start(namespace, total);
        }
    }
    fn advance(&self, namespace: &str, documents: u64) {
        if let Some(bars) = self.bars() {
            bars.advance(namespace, documents);
        }
    }
    fn finish(&self, namespace: &str) {
        if let Some(bars) = self.bars() {
            bars.finish(namespace);
        }
    }
    fn log(&self, message: &str) {
        if let Some(bars) = self.bars() {
            bars.log(message);
        }
    }
}

impl DrillProgress for DrillBars {
    fn drill_started(&self, start: &DrillStart) {
        if self.json {
            return;
        }
        println!(
            "Restore drill: snapshot {} ({}, {}, {} namespace(s), {} document(s)){} into {}",
            &start.snapshot.to_hex()[..8],
            tidemark_repo::rfc3339(start.time),
            start.label,
            start.namespaces,
            start.documents,
            start
                .rolled_forward_to
                .map(|point| format!(" rolled forward to {point}"))
                .unwrap_or_default(),
            start.target
        );
    }

    fn restore_started(&self, documents: u64) {
        let bars = Arc::new(Bars::new(self.quiet, None, "restored"));
        bars.set_total(documents);
        if let Ok(mut current) = self.bars.lock() {
            *current = Some(bars);
        }
    }

    fn restore_finished(&self) {
        if let Some(bars) = self.bars.lock().ok().and_then(|mut b| b.take()) {
            bars.done();
        }
    }
}

fn mb_per_sec(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / 1e6 / seconds.max(1e-9)
}

/// Prints the drill's report on stdout: JSON, or a line per namespace and a verdict.
pub(crate) fn print_report(report: &DrillReport, json: bool) {
    if json {
        match serde_json::to_string(report) {
            Ok(text) => println!("{text}"),
            Err(e) => println!("{}", serde_json::json!({"ok": false, "error": format!("report: {e}")})),
        }
        return;
    }
    let restore = &report.restore;
    let reports = &report.namespaces;
    println!(
        "restored {} document(s), {:.1} MB in {:.2} s ({:.1} MB/s){}",
        restore.documents,
        restore.bytes as f64 / 1e6,
        restore.seconds,
        mb_per_sec(restore.bytes, restore.seconds),
        restore
            .oplog_entries
            .map(|n| format!("; {n} oplog entries replayed"))
            .unwrap_or_default()
    );
    let width = reports.iter().map(|r| r.namespace.len()).max().unwrap_or(10);
    for r in reports {
        let verdict = match r.status {
            Status::Ok => "ok",
            Status::Mismatch => "MISMATCH",
            Status::Damaged => "DAMAGED",
            Status::Skipped => "skipped",
            Status::NotRestored => "NOT RESTORED",
        };
        let figures = match (r.kind.as_str(), r.found_documents) {
            ("view", _) => "view".to_owned(),
            (_, Some(found)) => format!(
                "{found}/{} docs  {:.1} MB  checked in {:.2} s ({:.1} MB/s)",
                r.expected_documents,
                r.bytes as f64 / 1e6,
                r.seconds,
                mb_per_sec(r.bytes, r.seconds)
            ),
            (_, None) => format!("{} docs expected", r.expected_documents),
        };
        println!("  {verdict:<12}  {:<width$}  {figures}", r.namespace);
        for p in &r.problems {
            println!("                {p}");
        }
        for n in &r.notes {
            println!("                note: {n}");
        }
    }
    for f in &report.failures {
        println!("  FAILED        {f}");
    }
    let seconds = report.seconds;
    if report.ok {
        println!(
            "drill passed in {seconds:.1} s: {} namespace(s) match the snapshot",
            reports.len()
        );
    } else {
        println!(
            "drill FAILED in {seconds:.1} s: {} of {} namespace(s) do not match",
            report.failed_namespaces(),
            reports.len()
        );
    }
}
