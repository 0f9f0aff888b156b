//! `tidemark verify`: a restore drill. A backup is only as good as the restore it gives, so this
//! command performs one and checks the result against the snapshot's manifest.
//!
//! 1. The snapshot is restored by the ordinary restore engine (the one `tidemark restore --repo`
//!    uses: collection options, index builds, views, users and roles, `--oplogReplay` of the
//!    snapshot's oplog) into an embedded `tidemark-server` in this process (in memory, or a
//!    `--dbpath` directory left behind for inspection), or into a MongoDB given with `--target`
//!    (which must hold no user data unless `--drop`).
//! 2. Independently, the snapshot is read again: [`tidemark_repo::DocumentStream`] checks every
//!    chunk against its id and each namespace's count, size and content hash (BLAKE3 of the documents
//!    in dump order) against the manifest, and the documents are folded into an order-independent
//!    [`compare::MultisetDigest`] (sum of per-document BLAKE3 hashes).
//! 3. Every restored collection is read back in full through the driver and digested the same
//!    way; counts and digests must be equal, so the restored documents are the snapshot's byte for
//!    byte whatever order the insertion workers used. On a mismatch the documents are matched by
//!    `_id` to name a few that are missing, extra or different. `listIndexes` and
//!    `listCollections` are compared with the manifest's index specifications and options (views
//!    included), canonicalised as in [`compare::normalize`].
//!
//! After an oplog replay, documents written by the oplog (by `_id`) differ from the dumped ones by
//! design: both sides leave them out of the digest and the report counts them, and a namespace
//! changed by a replayed command (drop, rename, index build, `collMod`) is only checked for a
//! successful replay and a consistent count (a full re-read against `count`). The replay itself must
//! finish without error.
//!
//! `--at TIME` rolls the restore forward with the point-in-time restore (`restore --repo --at`: base
//! snapshot chosen by [`tidemark_core::pitr::plan_pitr`], its oplog and the archived oplog replayed up
//! to the point). The checks are then against the base snapshot, with every document written by the
//! replayed oplog (snapshot oplog up to the point, archived range) left out of the digests and counted;
//! namespaces changed by replayed commands get a count from a full re-read. What cannot be checked
//! after a roll-forward: the contents of replayed documents (the repository holds no hash of the
//! state at an arbitrary point), and namespaces created by the oplog after the snapshot (they are not
//! in its manifest).
//!
//! A chunk that fails to verify (a flipped bit in a pack, a missing pack) stops the restore; the
//! drill still checks what was restored and reports the namespace the repository could not deliver.
//!
//! Test-only fault injection: when the environment variable `TIDEMARK_DRILL_TEST_DELETE_ONE` names a
//! namespace (`db.collection`), one document of it is deleted from the restored server after the
//! restore and before the checks, so tests can prove the drill notices changes behind its back. It is
//! not meant for any other use.
//!
//! Exit status: 0 when every namespace matches, 1 otherwise (2 for invalid options).

mod compare;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use bson::{Bson, Document, RawDocumentBuf, doc};
use mongodb::Client;
use tidemark_core::offline::OfflineServer;
use tidemark_core::pitr::{PitrPlan, plan_pitr, run_pitr};
use tidemark_core::restore::{ArchiveStream, RestoreOptions, RestoreSource, RestoreSummary, plan_restore, run_restore};
use tidemark_repo::export::ExportStats;
use tidemark_repo::lock::Lock;
use tidemark_repo::snapshot::{Member, NamespaceEntry};
use tidemark_repo::{RepoError, SnapshotReader};

use crate::CliError;
use crate::dump::Bars;
use crate::repo::{RepoOptions, open};
use crate::restore::error_chain;
use compare::{MultisetDigest, OplogFootprint, id_key, index_differences, normalize, same};

/// The fault-injection variable (test-only; see the module documentation).
const DELETE_ONE_VAR: &str = "TIDEMARK_DRILL_TEST_DELETE_ONE";
/// At most this many differing `_id`s are named per namespace.
const EXAMPLES: usize = 5;
/// Collections up to this many documents get a per-`_id` diff when their digests differ.
const DIFF_LIMIT: u64 = 2_000_000;
/// Memory an embedded server needs per byte of BSON, roughly (documents, indexes, batches in flight).
const MEMORY_FACTOR: u64 = 3;

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

/// How one namespace came out of the drill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    /// Everything that can be checked matches.
    Ok,
    /// The restored namespace differs from the snapshot.
    Mismatch,
    /// The repository could not deliver the namespace (damaged or missing data).
    Damaged,
    /// The restore left it out on purpose (system collections mongorestore skips).
    Skipped,
    /// The restore stopped (at a damaged namespace) before reaching it: not verified.
    #[serde(rename = "not restored")]
    NotRestored,
}

/// The verdict on one namespace.
#[derive(Debug, serde::Serialize)]
struct NamespaceReport {
    namespace: String,
    kind: String,
    status: Status,
    /// Documents in the manifest.
    expected_documents: u64,
    /// Documents read back from the restored server.
    found_documents: Option<u64>,
    /// Documents written by the oplog replay, left out of the comparison.
    replayed_documents: u64,
    /// Order-independent digest of the documents compared (see [`compare::MultisetDigest`]).
    digest: Option<String>,
    bytes: u64,
    seconds: f64,
    problems: Vec<String>,
    notes: Vec<String>,
}

impl NamespaceReport {
    fn new(entry: &NamespaceEntry) -> Self {
        Self {
            namespace: entry.name(),
            kind: entry.kind.clone(),
            status: Status::Ok,
            expected_documents: entry.data.documents,
            found_documents: None,
            replayed_documents: 0,
            digest: None,
            bytes: entry.data.bytes,
            seconds: 0.0,
            problems: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn problem(&mut self, status: Status, message: impl Into<String>) {
        if self.status == Status::Ok || status == Status::Damaged {
            self.status = status;
        }
        self.problems.push(message.into());
    }
}

/// The restore phase, as measured.
#[derive(Debug, Default, serde::Serialize)]
struct RestoreReport {
    seconds: f64,
    documents: u64,
    bytes: u64,
    oplog_entries: Option<u64>,
    error: Option<String>,
}

pub(crate) fn run(args: &Args) -> Result<(), CliError> {
    if args.insertion_workers == 0 {
        return Err(CliError::usage("--numInsertionWorkersPerCollection must be positive"));
    }
    let runtime = crate::repo::runtime()?;
    match runtime.block_on(drill(args)) {
        Ok(None) => Ok(()),
        // The report is out; the command fails with its summary.
        Ok(Some(failed)) => Err(CliError::from(anyhow::anyhow!(failed))),
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

/// Where the drill restores to.
enum Target {
    Embedded(OfflineServer),
    External(String),
}

impl Target {
    fn describe(&self) -> String {
        match self {
            Target::Embedded(s) if s.dbpath().as_os_str().is_empty() => {
                "an embedded tidemark-server (in memory)".into()
            }
            Target::Embedded(s) => format!("an embedded tidemark-server (--dbpath {})", s.dbpath().display()),
            Target::External(uri) => format!("the MongoDB at {}", redact(uri)),
        }
    }
}

/// A connection string without its password.
fn redact(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &uri[..scheme], &uri[at + 1..]),
        _ => uri.to_owned(),
    }
}

/// `tidemark verify --snapshot ID` on a repository that is already open (the demo's drill): prints
/// the report and returns whether every namespace matched.
pub(crate) async fn drill_snapshot(repository: &tidemark_repo::Repository, snapshot: &str) -> anyhow::Result<bool> {
    /// The command line `tidemark verify` would be given.
    #[derive(clap::Parser)]
    struct Line {
        #[command(flatten)]
        args: Args,
    }
    let url = repository.storage().url().to_owned();
    let line = <Line as clap::Parser>::try_parse_from(["verify", "--repo", &url, "--snapshot", snapshot, "--quiet"])
        .context("drill options")?;
    Ok(drill_open(&line.args, repository).await.map_err(|e| e.error)?.is_none())
}

/// Runs the drill and prints its report; returns the failure summary when something does not match
/// (an error is a drill that could not run).
async fn drill(args: &Args) -> Result<Option<String>, CliError> {
    let repository = open(&args.repo).await?;
    drill_open(args, &repository).await
}

/// The drill on an open repository, under a shared lock.
async fn drill_open(args: &Args, repository: &tidemark_repo::Repository) -> Result<Option<String>, CliError> {
    // Shared: a prune (exclusive) cannot delete packs while the drill reads them.
    let lock = Lock::acquire(repository.storage(), false).await?;
    let (result, released) = lock.hold_during(drill_locked(args, repository)).await;
    released.context("release the repository lock")?;
    result
}

/// The member to work on: `wanted`, or the only one.
pub(crate) fn pick_member<'a>(reader: &'a SnapshotReader, wanted: Option<&str>) -> Result<&'a Member, CliError> {
    let members = reader.members();
    match wanted {
        Some(name) => members.iter().find(|m| m.name == name).ok_or_else(|| {
            CliError::usage(format!(
                "snapshot {} has no member {name:?} (members: {})",
                reader.id(),
                member_names(members)
            ))
        }),
        None if members.len() == 1 => Ok(&members[0]),
        None => Err(CliError::usage(format!(
            "snapshot {} holds {} members ({}); choose one with --member",
            reader.id(),
            members.len(),
            member_names(members)
        ))),
    }
}

fn member_names(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| {
            if m.name.is_empty() {
                "\"\"".to_owned()
            } else {
                m.name.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Half of `MemAvailable`, in bytes (4 GiB when it cannot be read).
fn default_memory_budget() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(4 << 30, |kib| kib * 1024 / 2)
}

async fn start_target(args: &Args, member: &Member) -> Result<(Target, Client), CliError> {
    if let Some(uri) = &args.target {
        let client = Client::with_uri_str(uri)
            .await
            .with_context(|| format!("--target {}: invalid connection string", redact(uri)))?;
        if !args.drop {
            let names = client
                .list_database_names()
                .await
                .with_context(|| format!("--target {}: cannot list databases", redact(uri)))?;
            let user: Vec<_> = names
                .into_iter()
                .filter(|n| !matches!(n.as_str(), "admin" | "config" | "local"))
                .collect();
            if !user.is_empty() {
                return Err(CliError::from(anyhow::anyhow!(
                    "--target {} is not empty (databases: {}): a drill restores into it and compares; use an empty \
                     server, or --drop to drop the snapshot's collections before restoring them",
                    redact(uri),
                    user.join(", ")
                )));
            }
        }
        return Ok((Target::External(uri.clone()), client));
    }
    let bytes: u64 = member.namespaces.iter().map(|n| n.data.bytes).sum();
    let budget = args.memory_budget.map_or_else(default_memory_budget, |mib| mib << 20);
    if bytes.saturating_mul(MEMORY_FACTOR) > budget {
        return Err(CliError::from(anyhow::anyhow!(
            "the snapshot holds {} MiB of documents; an embedded tidemark-server keeps every document in memory \
             (with --dbpath too) and needs about {MEMORY_FACTOR}x that, more than the budget of {} MiB \
             (--memory-budget): drill into a MongoDB with --target URI instead",
            bytes >> 20,
            budget >> 20
        )));
    }
    let server = match &args.dbpath {
        Some(dbpath) => {
            // A drill compares with the snapshot alone: earlier data in the directory would be counted.
            if std::fs::read_dir(dbpath).is_ok_and(|mut entries| entries.next().is_some()) {
                return Err(CliError::from(anyhow::anyhow!(
                    "--dbpath {} is not empty: a drill restores into a new or empty directory",
                    dbpath.display()
                )));
            }
            OfflineServer::open_for_restore(dbpath, true).await?
        }
        None => OfflineServer::in_memory().await?,
    };
    let client = Client::with_uri_str(server.uri())
        .await
        .context("connect to the embedded server")?;
    Ok((Target::Embedded(server), client))
}

async fn drill_locked(args: &Args, repository: &tidemark_repo::Repository) -> Result<Option<String>, CliError> {
    // With --at the point-in-time planner chooses the base snapshot.
    let pitr = match &args.at {
        Some(at) => {
            let point = tidemark_oplog::parse_restore_point(at).map_err(|e| CliError::usage(e.to_string()))?;
            Some(plan_pitr(repository, point, args.member.as_deref()).await?)
        }
        None => None,
    };
    let id = match &pitr {
        Some(plan) => plan.window.base_snapshot,
        None => {
            repository
                .find_snapshot(args.snapshot.as_deref().unwrap_or("latest"))
                .await?
        }
    };
    let reader = SnapshotReader::open(repository, &id)
        .await
        .with_context(|| format!("open snapshot {id}"))?;
    let wanted = pitr
        .as_ref()
        .map(|p| p.window.replica_set.as_str())
        .or(args.member.as_deref());
    let member = pick_member(&reader, wanted)?.clone();
    let (target, client) = start_target(args, &member).await?;
    let started = Instant::now();
    if !args.json {
        let snap = reader.snapshot();
        println!(
            "Restore drill: snapshot {} ({}, {}, {} namespace(s), {} document(s)){} into {}",
            &id.to_hex()[..8],
            tidemark_repo::rfc3339(snap.time),
            snap.label,
            member.namespaces.len(),
            member.namespaces.iter().map(|n| n.data.documents).sum::<u64>(),
            pitr.as_ref()
                .map(|p| format!(" rolled forward to {}", p.point.last))
                .unwrap_or_default(),
            target.describe()
        );
    }

    let (footprint, oplog_error) = oplog_footprint(repository, &reader, &member, pitr.as_ref()).await;
    let has_oplog = member.oplog.as_ref().is_some_and(|o| o.data.documents > 0);

    let restored = match pitr {
        Some(plan) => restore_at(args, repository, plan, &reader, &member, &client).await?,
        None => restore(args, &reader, &member, &client, has_oplog).await?,
    };
    if let Ok(ns) = std::env::var(DELETE_ONE_VAR) {
        delete_one_behind_the_back(&client, &ns).await?;
    }
    let skipped: HashMap<String, String> = restored.skipped.iter().cloned().collect();
    let damaged = restored.damaged;
    let restore = restored.report;

    let reports = check_all(&reader, &member, &client, &footprint, &skipped, &damaged).await;
    let mut failures: Vec<String> = Vec::new();
    if let Some(e) = &oplog_error {
        failures.push(format!("the snapshot's oplog cannot be read: {e}"));
    }
    if let Some(e) = &restore.error {
        failures.push(format!("the restore failed: {e}"));
    }
    let bad = reports
        .iter()
        .filter(|r| matches!(r.status, Status::Mismatch | Status::Damaged | Status::NotRestored))
        .count();
    let passed = bad == 0 && failures.is_empty();
    print_report(args, &reader, &target, &restore, &reports, &failures, passed, started);
    drop(client);
    if let Target::Embedded(server) = target {
        server.close().await?;
    }
    if passed {
        Ok(None)
    } else {
        Ok(Some(format!(
            "restore drill of snapshot {} failed: {bad} of {} namespace(s) do not match{}",
            &id.to_hex()[..8],
            reports.len(),
            if failures.is_empty() {
                String::new()
            } else {
                format!("; {}", failures.join("; "))
            }
        )))
    }
}

/// Checks every namespace of the member on the restored server.
async fn check_all(
    reader: &SnapshotReader,
    member: &Member,
    client: &Client,
    footprint: &OplogFootprint,
    skipped: &HashMap<String, String>,
    damaged: &[(String, String)],
) -> Vec<NamespaceReport> {
    let mut reports = Vec::new();
    for entry in &member.namespaces {
        let mut report = NamespaceReport::new(entry);
        let name = entry.name();
        let started = Instant::now();
        if let Some((_, message)) = damaged.iter().find(|(ns, _)| *ns == name) {
            report.problem(Status::Damaged, format!("the repository cannot deliver it: {message}"));
        } else if let Some(why) = skipped.get(&name) {
            report.status = Status::Skipped;
            report.notes.push(format!("not restored: {why}"));
        } else {
            check_namespace(reader, member, entry, client, footprint, &mut report).await;
            let missing = report.found_documents.is_none_or(|n| n == 0) && entry.data.documents > 0;
            if !damaged.is_empty() && missing {
                report.status = Status::NotRestored;
                report.problems.clear();
                report
                    .notes
                    .push("the restore stopped at the damaged namespace before this one".into());
            }
        }
        report.seconds = started.elapsed().as_secs_f64();
        reports.push(report);
    }
    reports
}

/// What the restore phase produced.
struct Restored {
    report: RestoreReport,
    /// Namespaces the restore engine left out on purpose, with the reason.
    skipped: Vec<(String, String)>,
    /// Namespaces the repository could not deliver, with the error.
    damaged: Vec<(String, String)>,
}

/// Exports the member as an archive into a pipe, on a blocking thread of this runtime (the pipe
/// blocks); returns the engine's end of the pipe and the export task.
fn start_export(
    args: &Args,
    reader: &SnapshotReader,
    member: &Member,
) -> Result<(ArchiveStream, tokio::task::JoinHandle<anyhow::Result<ExportStats>>), CliError> {
    let (pipe_reader, pipe_writer) = std::io::pipe().context("create a pipe for the snapshot stream")?;
    let export_reader = reader.clone();
    let member_name = (reader.members().len() > 1).then(|| member.name.clone());
    let repo_label = args.repo.repo.clone();
    let handle = tokio::runtime::Handle::current();
    let export = tokio::task::spawn_blocking(move || {
        handle.block_on(crate::restore_repo::export_to_pipe(
            &export_reader,
            member_name.as_deref(),
            pipe_writer,
            &repo_label,
        ))
    });
    Ok((ArchiveStream::new(pipe_reader), export))
}

/// The namespace a repository error blames (without the member prefix of multi-member snapshots).
fn damaged_namespace(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(RepoError::NamespaceDamaged { namespace, .. }) = e.downcast_ref::<RepoError>() {
            return Some(namespace.rsplit('/').next().unwrap_or(namespace).to_owned());
        }
        current = e.source();
    }
    None
}

/// The restore options every drill uses.
fn drill_options(args: &Args) -> RestoreOptions {
    let mut options = RestoreOptions::default();
    options.drop = args.drop;
    options.insertion_workers = args.insertion_workers;
    options
}

/// Restores the member through the ordinary restore engine.
async fn restore(
    args: &Args,
    reader: &SnapshotReader,
    member: &Member,
    client: &Client,
    has_oplog: bool,
) -> Result<Restored, CliError> {
    let (stream, export) = start_export(args, reader, member)?;
    let mut options = drill_options(args);
    options.source = RestoreSource::Stream(stream);
    options.oplog_replay = has_oplog;
    let started = Instant::now();
    let bars = Arc::new(Bars::new(args.quiet || args.json, None, "restored"));
    bars.set_total(member.namespaces.iter().map(|n| n.data.documents).sum());
    let (result, skipped) = match plan_restore(&options) {
        Ok(plan) => {
            let skipped = plan.skipped.clone();
            let result = run_restore(client, plan, &options, bars.clone()).await;
            (result.map_err(|f| (f.summary, f.error)), skipped)
        }
        Err(e) => (Err((RestoreSummary::default(), e)), Vec::new()),
    };
    bars.done();
    let mut restored = Restored::measured(started, member, skipped, result);
    match export.await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) if crate::restore_repo::is_broken_pipe(&e) => {}
        Ok(Err(e)) => {
            let message = format!("{e:#}");
            if let Some(ns) = damaged_namespace(e.as_ref()) {
                restored.damaged.push((ns, message.clone()));
            }
            // The restore's own error (a truncated archive) is a consequence; the export's explains it.
            restored.report.error = Some(message);
        }
        Err(e) => restored.report.error = Some(format!("the snapshot export failed: {e}")),
    }
    Ok(restored)
}

impl Restored {
    /// The outcome of a restore of `member` that started at `started`.
    fn measured(
        started: Instant,
        member: &Member,
        skipped: Vec<(String, String)>,
        result: Result<RestoreSummary, (RestoreSummary, tidemark_core::Error)>,
    ) -> Self {
        let mut restored = Restored {
            report: RestoreReport {
                seconds: started.elapsed().as_secs_f64(),
                bytes: member.namespaces.iter().map(|n| n.data.bytes).sum(),
                ..RestoreReport::default()
            },
            skipped,
            damaged: Vec::new(),
        };
        let summary = match result {
            Ok(summary) => summary,
            Err((summary, error)) => {
                if let Some(ns) = damaged_namespace(&error) {
                    restored.damaged.push((ns, error_chain(&error)));
                }
                restored.report.error = Some(error_chain(&error));
                summary
            }
        };
        restored.report.documents = summary.successes;
        restored.report.oplog_entries = summary.oplog_entries;
        restored
    }
}

/// Rolls the base snapshot forward to `plan`'s point with the point-in-time restore.
async fn restore_at(
    args: &Args,
    repository: &tidemark_repo::Repository,
    plan: PitrPlan,
    reader: &SnapshotReader,
    member: &Member,
    client: &Client,
) -> Result<Restored, CliError> {
    // The namespaces the engine leaves out, by its own rules: plan a restore of the same stream.
    let (stream, export) = start_export(args, reader, member)?;
    let mut options = drill_options(args);
    options.source = RestoreSource::Stream(stream);
    let skipped = plan_restore(&options).map(|p| p.skipped.clone()).unwrap_or_default();
    // The plan is dropped: the export stops with a broken pipe, which is expected.
    let _ = export.await;

    let started = Instant::now();
    let bars = Arc::new(Bars::new(args.quiet || args.json, None, "restored"));
    bars.set_total(member.namespaces.iter().map(|n| n.data.documents).sum());
    let result = run_pitr(client, repository, plan, &options, bars.clone()).await;
    bars.done();
    let result = result.map(|r| r.summary).map_err(|f| (f.summary, f.error));
    Ok(Restored::measured(started, member, skipped, result))
}

/// What the restore's oplog replay will change, read before it runs: the snapshot's oplog (up to the
/// point with `--at`) and the archived range a roll-forward replays. Returns a read error too.
async fn oplog_footprint(
    repository: &tidemark_repo::Repository,
    reader: &SnapshotReader,
    member: &Member,
    pitr: Option<&PitrPlan>,
) -> (OplogFootprint, Option<String>) {
    let mut footprint = OplogFootprint::default();
    let limit = pitr.map(|p| p.point.last);
    let mut error = read_footprint(reader.oplog(member), limit, &mut footprint).await;
    if let Some((after, upto)) = pitr.and_then(|p| p.archived) {
        match tidemark_repo::oplog_archive::read_range(repository, &member.name, after.into(), upto.into()).await {
            Ok(mut range) => loop {
                match range.next_entry().await {
                    Ok(Some(raw)) => match raw.to_document() {
                        Ok(entry) => footprint.add(&entry),
                        Err(e) => break error = Some(format!("archived oplog entry is not valid BSON: {e}")),
                    },
                    Ok(None) => break,
                    Err(e) => break error = Some(format!("archived oplog: {e}")),
                }
            },
            Err(e) => error = Some(format!("archived oplog: {e}")),
        }
    }
    (footprint, error)
}

/// Adds the snapshot oplog's entries up to `limit` (inclusive) to `footprint`; returns a read error.
async fn read_footprint(
    mut oplog: tidemark_repo::DocumentStream,
    limit: Option<bson::Timestamp>,
    footprint: &mut OplogFootprint,
) -> Option<String> {
    loop {
        match oplog.next_document().await {
            Ok(Some(raw)) => match raw.to_document() {
                Ok(entry) => {
                    let past = limit.is_some_and(|l| {
                        entry
                            .get_timestamp("ts")
                            .is_ok_and(|ts| (ts.time, ts.increment) > (l.time, l.increment))
                    });
                    if !past {
                        footprint.add(&entry);
                    }
                }
                Err(e) => return Some(format!("oplog entry {} is not valid BSON: {e}", footprint.entries)),
            },
            Ok(None) => return None,
            Err(e) => return Some(e.to_string()),
        }
    }
}

/// The test-only fault: deletes one document of `ns` from the restored server.
async fn delete_one_behind_the_back(client: &Client, ns: &str) -> Result<(), CliError> {
    let (db, coll) = ns
        .split_once('.')
        .ok_or_else(|| CliError::usage(format!("{DELETE_ONE_VAR}={ns}: expected db.collection")))?;
    client
        .database(db)
        .collection::<Document>(coll)
        .delete_one(doc! {})
        .await
        .with_context(|| format!("{DELETE_ONE_VAR}: delete a document of {ns}"))?;
    Ok(())
}

/// Checks one restored namespace against the snapshot.
async fn check_namespace(
    reader: &SnapshotReader,
    member: &Member,
    entry: &NamespaceEntry,
    client: &Client,
    footprint: &OplogFootprint,
    report: &mut NamespaceReport,
) {
    let name = entry.name();
    let database = client.database(&entry.db);
    // Options and kind, from listCollections.
    let listed = database
        .run_command(doc! {"listCollections": 1, "filter": {"name": entry.collection.as_str()}})
        .await;
    let info = match listed {
        Ok(reply) => reply
            .get_document("cursor")
            .ok()
            .and_then(|c| c.get_array("firstBatch").ok())
            .and_then(|b| b.first())
            .and_then(Bson::as_document)
            .cloned(),
        Err(e) => {
            report.problem(Status::Mismatch, format!("listCollections failed: {e}"));
            return;
        }
    };
    let Some(info) = info else {
        report.problem(Status::Mismatch, "not found on the restored server");
        return;
    };
    let command = footprint.command_on(&name);
    if let Some(command) = command {
        report.notes.push(format!(
            "changed by a replayed {command} command: options, indexes and documents not compared with the dump"
        ));
    } else {
        compare_options(entry, &info, report);
    }
    if entry.kind == "view" {
        return;
    }
    if entry.kind == "timeseries" {
        report
            .notes
            .push("time series: documents are stored in buckets by the server, not compared".into());
        return;
    }
    if command.is_none() {
        compare_indexes(entry, &database, report).await;
    }
    compare_documents(
        reader,
        member,
        entry,
        client,
        footprint.changed_ids(&name),
        command.is_some(),
        report,
    )
    .await;
}

fn compare_options(entry: &NamespaceEntry, info: &Document, report: &mut NamespaceReport) {
    let found_kind = info.get_str("type").unwrap_or("collection");
    if found_kind != entry.kind {
        report.problem(
            Status::Mismatch,
            format!("restored as a {found_kind}, the snapshot has a {}", entry.kind),
        );
    }
    let expected = match entry.options.clone().map(tidemark_format::metadata::ext_value) {
        Some(Ok(Bson::Document(d))) => d,
        None => Document::new(),
        Some(Ok(_)) | Some(Err(_)) => {
            report.problem(Status::Mismatch, "the manifest's options are not a document");
            return;
        }
    };
    let found = info.get_document("options").cloned().unwrap_or_default();
    let (expected, found) = (normalize(&expected), normalize(&found));
    if !same(&expected, &found) {
        report.problem(
            Status::Mismatch,
            format!("options differ: expected {expected}, found {found}"),
        );
    }
}

async fn compare_indexes(entry: &NamespaceEntry, database: &mongodb::Database, report: &mut NamespaceReport) {
    let mut expected = Vec::new();
    for spec in &entry.indexes {
        match tidemark_format::metadata::ext_value(spec.clone()) {
            Ok(Bson::Document(d)) => expected.push(d),
            _ => report.problem(
                Status::Mismatch,
                format!("the manifest's index {spec} is not a document"),
            ),
        }
    }
    let listed = database
        .run_command(doc! {"listIndexes": entry.collection.as_str(), "cursor": {}})
        .await;
    let found: Vec<Document> = match listed {
        Ok(reply) => reply
            .get_document("cursor")
            .ok()
            .and_then(|c| c.get_array("firstBatch").ok())
            .map(|b| b.iter().filter_map(Bson::as_document).cloned().collect())
            .unwrap_or_default(),
        Err(e) => {
            report.problem(Status::Mismatch, format!("listIndexes failed: {e}"));
            return;
        }
    };
    for difference in index_differences(&expected, &found) {
        report.problem(Status::Mismatch, difference);
    }
}

/// Digests of one side: everything, and the documents left out because the oplog changed them.
#[derive(Default)]
struct Side {
    digest: MultisetDigest,
    replayed: u64,
    total: u64,
}

impl Side {
    fn add(&mut self, raw: &bson::RawDocument, changed: Option<&std::collections::HashSet<Vec<u8>>>) {
        self.total += 1;
        if let Some(changed) = changed
            && id_key(raw).is_some_and(|k| changed.contains(&k))
        {
            self.replayed += 1;
            return;
        }
        self.digest.add(raw.as_bytes());
    }
}

#[allow(clippy::too_many_arguments)]
async fn compare_documents(
    reader: &SnapshotReader,
    member: &Member,
    entry: &NamespaceEntry,
    client: &Client,
    changed: Option<&std::collections::HashSet<Vec<u8>>>,
    by_command: bool,
    report: &mut NamespaceReport,
) {
    let collection = client
        .database(&entry.db)
        .collection::<RawDocumentBuf>(&entry.collection);
    let mut found = Side::default();
    let read: anyhow::Result<()> = async {
        let mut cursor = collection.find(doc! {}).await?;
        while cursor.advance().await? {
            found.add(cursor.current(), changed);
        }
        Ok(())
    }
    .await;
    if let Err(e) = read {
        report.problem(Status::Mismatch, format!("reading it back failed: {e:#}"));
        return;
    }
    report.found_documents = Some(found.total);
    if by_command {
        // Only the server's own consistency can be checked: a full re-read against `count`.
        match collection.count_documents(doc! {}).await {
            Ok(n) if n == found.total => {}
            Ok(n) => report.problem(
                Status::Mismatch,
                format!("count says {n} documents, a full read returned {}", found.total),
            ),
            Err(e) => report.problem(Status::Mismatch, format!("count failed: {e}")),
        }
        return;
    }
    let mut expected = Side::default();
    let mut stream = reader.documents(member, entry);
    loop {
        match stream.next_document().await {
            Ok(Some(doc)) => expected.add(&doc, changed),
            Ok(None) => break,
            Err(e) => {
                report.problem(Status::Damaged, format!("the repository cannot deliver it: {e}"));
                return;
            }
        }
    }
    report.replayed_documents = expected.replayed.max(found.replayed);
    report.digest = Some(found.digest.hex());
    if changed.is_some() {
        report.notes.push(format!(
            "{} snapshot / {} restored document(s) written by the oplog replay, not compared with the dump",
            expected.replayed, found.replayed
        ));
    }
    if expected.digest == found.digest {
        return;
    }
    let compared_expected = expected.total - expected.replayed;
    let compared_found = found.total - found.replayed;
    let mut message = if compared_expected == compared_found {
        format!("{compared_found} document(s) as expected, but their contents differ")
    } else {
        format!("{compared_expected} document(s) expected, {compared_found} found")
    };
    if expected.total <= DIFF_LIMIT {
        match differing_ids(reader, member, entry, &collection, changed).await {
            Ok(examples) if !examples.is_empty() => {
                message.push_str(": ");
                message.push_str(&examples.join(", "));
            }
            Ok(_) => {}
            Err(e) => message.push_str(&format!(" (no per-document diff: {e:#})")),
        }
    }
    report.problem(Status::Mismatch, message);
}

/// A few `_id`s whose documents are missing, extra or different on the restored server.
async fn differing_ids(
    reader: &SnapshotReader,
    member: &Member,
    entry: &NamespaceEntry,
    collection: &mongodb::Collection<RawDocumentBuf>,
    changed: Option<&std::collections::HashSet<Vec<u8>>>,
) -> anyhow::Result<Vec<String>> {
    // _id key -> (hash of the document, the _id for display).
    let mut expected: HashMap<Vec<u8>, (blake3::Hash, String)> = HashMap::new();
    let mut stream = reader.documents(member, entry);
    while let Some(doc) = stream.next_document().await? {
        if let Some(key) = id_key(&doc).filter(|k| !changed.is_some_and(|c| c.contains(k))) {
            expected.insert(key, (blake3::hash(doc.as_bytes()), show_id(&doc)));
        }
    }
    let mut out = Vec::new();
    let mut cursor = collection.find(doc! {}).await?;
    while cursor.advance().await? {
        let doc = cursor.current();
        let Some(key) = id_key(doc).filter(|k| !changed.is_some_and(|c| c.contains(k))) else {
            continue;
        };
        match expected.remove(&key) {
            Some((hash, _)) if hash == blake3::hash(doc.as_bytes()) => {}
            Some((_, id)) => out.push(format!("_id {id} differs")),
            None => out.push(format!("_id {} is extra", show_id(doc))),
        }
    }
    let mut missing: Vec<String> = expected
        .into_values()
        .map(|(_, id)| format!("_id {id} is missing"))
        .collect();
    missing.sort();
    out.extend(missing);
    let more = out.len().saturating_sub(EXAMPLES);
    out.truncate(EXAMPLES);
    if more > 0 {
        out.push(format!("and {more} more"));
    }
    Ok(out)
}

fn show_id(doc: &bson::RawDocument) -> String {
    match doc.get("_id") {
        Ok(Some(id)) => id
            .to_raw_bson()
            .try_into()
            .map(|b: Bson| b.into_relaxed_extjson().to_string())
            .unwrap_or_else(|_| "?".into()),
        _ => "(none)".into(),
    }
}

fn mb_per_sec(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / 1e6 / seconds.max(1e-9)
}

#[allow(clippy::too_many_arguments)]
fn print_report(
    args: &Args,
    reader: &SnapshotReader,
    target: &Target,
    restore: &RestoreReport,
    reports: &[NamespaceReport],
    failures: &[String],
    passed: bool,
    started: Instant,
) {
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        let json = serde_json::json!({
            "snapshot": reader.id().to_hex(),
            "target": target.describe(),
            "ok": passed,
            "seconds": seconds,
            "restore": restore,
            "namespaces": reports,
            "failures": failures,
        });
        println!("{json}");
        return;
    }
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
    for f in failures {
        println!("  FAILED        {f}");
    }
    let bad = reports
        .iter()
        .filter(|r| matches!(r.status, Status::Mismatch | Status::Damaged | Status::NotRestored))
        .count();
    if passed {
        println!(
            "drill passed in {seconds:.1} s: {} namespace(s) match the snapshot",
            reports.len()
        );
    } else {
        println!(
            "drill FAILED in {seconds:.1} s: {bad} of {} namespace(s) do not match",
            reports.len()
        );
    }
}
