//! A restore drill (`tidemark verify`). A backup is only as good as the restore it gives, so this
//! performs one and checks the result against the snapshot's manifest.
//!
//! 1. The snapshot is restored by the ordinary restore engine (the one `tidemark restore --repo`
//!    uses: collection options, index builds, views, users and roles, `--oplogReplay` of the
//!    snapshot's oplog) into an embedded `tidemark-server` in this process (in memory, or a
//!    `--dbpath` directory left behind for inspection), or into a MongoDB given with `--target`
//!    (which must hold no user data unless `--drop`).
//! 2. Independently, the snapshot is read again: [`tidemark_repo::DocumentStream`] checks every
//!    chunk against its id and each namespace's count, size and content hash (BLAKE3 of the documents
//!    in dump order) against the manifest, and the documents are folded into an order-independent
//!    multiset digest (`compare::MultisetDigest`: the sum of per-document BLAKE3 hashes).
//! 3. Every restored collection is read back in full through the driver and digested the same
//!    way; counts and digests must be equal, so the restored documents are the snapshot's byte for
//!    byte whatever order the insertion workers used. On a mismatch the documents are matched by
//!    `_id` to name a few that are missing, extra or different. `listIndexes` and
//!    `listCollections` are compared with the manifest's index specifications and options (views
//!    included), canonicalised as in `compare::normalize`.
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
//! [`drill`] returns a [`DrillReport`]; its `ok` is true when every namespace matches (the command
//! line exits with 0 then, 1 otherwise). Errors are drills that could not run.

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
use tidemark_core::progress::Progress;
use tidemark_core::restore::{RestoreOptions, RestoreSource, RestoreSummary, plan_restore, run_restore};
use tidemark_core::snapshot_stream::SnapshotStream;
use tidemark_oplog::RestorePoint;
use tidemark_repo::lock::Lock;
use tidemark_repo::snapshot::{Member, NamespaceEntry};
use tidemark_repo::{Id, RepoError, Repository, SnapshotReader};

use crate::{Error, pick_member};
use compare::{MultisetDigest, OplogFootprint, id_key, index_differences, normalize, same};

/// The fault-injection variable (test-only; see the module documentation).
const DELETE_ONE_VAR: &str = "TIDEMARK_DRILL_TEST_DELETE_ONE";
/// At most this many differing `_id`s are named per namespace.
const EXAMPLES: usize = 5;
/// Collections up to this many documents get a per-`_id` diff when their digests differ.
const DIFF_LIMIT: u64 = 2_000_000;
/// Memory an embedded server needs per byte of BSON, roughly (documents, indexes, batches in flight).
const MEMORY_FACTOR: u64 = 3;

/// Where a drill restores to.
#[derive(Debug, Clone, Default)]
pub enum DrillTarget {
    /// An embedded `tidemark-server` in memory.
    #[default]
    InMemory,
    /// An embedded `tidemark-server` with this data directory (new or empty; kept afterwards).
    DataDirectory(PathBuf),
    /// A MongoDB at this connection string; it must hold no user data unless `drop`.
    MongoDb {
        /// The connection string.
        uri: String,
        /// Drop each collection of the snapshot before restoring it.
        drop: bool,
    },
}

/// What to drill and how.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// The snapshot (id, unique id prefix, or `latest`); `None` is `latest`. Ignored with `at`.
    pub snapshot: Option<String>,
    /// Roll forward to this point with the point-in-time restore; the base snapshot is chosen as
    /// `restore --at` chooses it.
    pub at: Option<RestorePoint>,
    /// The member (replica set or shard) when the snapshot holds several.
    pub member: Option<String>,
    /// Where to restore.
    pub target: DrillTarget,
    /// Largest snapshot (bytes of documents times 3) an embedded server may hold; `None`: half
    /// the available memory.
    pub memory_budget: Option<u64>,
    /// Insertion workers per collection (positive).
    pub insertion_workers: usize,
}

impl Default for DrillOptions {
    fn default() -> Self {
        Self {
            snapshot: None,
            at: None,
            member: None,
            target: DrillTarget::InMemory,
            memory_budget: None,
            insertion_workers: 2,
        }
    }
}

/// What a drill is about to restore, announced before the restore starts.
#[derive(Debug, Clone)]
pub struct DrillStart {
    /// The snapshot drilled (the base snapshot of a roll-forward).
    pub snapshot: Id,
    /// Its time, seconds since the epoch.
    pub time: i64,
    /// Its label.
    pub label: String,
    /// Namespaces of the member.
    pub namespaces: usize,
    /// Documents of the member, per the manifest.
    pub documents: u64,
    /// The point a roll-forward reaches.
    pub rolled_forward_to: Option<bson::Timestamp>,
    /// Where the restore goes (a password in a connection string is hidden).
    pub target: String,
}

/// Progress of a drill: the restore engine's [`Progress`] plus the drill's phases.
pub trait DrillProgress: Progress {
    /// The snapshot and target are chosen; the restore starts next.
    fn drill_started(&self, start: &DrillStart) {
        let _ = start;
    }
    /// The restore starts; `documents` is the total the manifest expects.
    fn restore_started(&self, documents: u64) {
        let _ = documents;
    }
    /// The restore is over (the checks follow).
    fn restore_finished(&self) {}
}

impl DrillProgress for tidemark_core::progress::NoProgress {}

/// How one namespace came out of the drill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
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

impl Status {
    /// Whether the namespace fails the drill.
    #[must_use]
    pub fn is_failure(self) -> bool {
        matches!(self, Status::Mismatch | Status::Damaged | Status::NotRestored)
    }
}

/// The verdict on one namespace.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NamespaceReport {
    /// `db.collection`.
    pub namespace: String,
    /// `collection`, `view` or `timeseries`, per the manifest.
    pub kind: String,
    /// The verdict.
    pub status: Status,
    /// Documents in the manifest.
    pub expected_documents: u64,
    /// Documents read back from the restored server.
    pub found_documents: Option<u64>,
    /// Documents written by the oplog replay, left out of the comparison.
    pub replayed_documents: u64,
    /// Order-independent digest of the documents compared (sum of per-document BLAKE3 hashes).
    pub digest: Option<String>,
    /// Bytes of documents, per the manifest.
    pub bytes: u64,
    /// Time spent checking it.
    pub seconds: f64,
    /// What does not match.
    pub problems: Vec<String>,
    /// What was not compared, and why.
    pub notes: Vec<String>,
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
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RestoreReport {
    /// Time the restore took.
    pub seconds: f64,
    /// Documents restored.
    pub documents: u64,
    /// Bytes of documents in the snapshot's member.
    pub bytes: u64,
    /// Oplog entries replayed, when the restore replayed an oplog.
    pub oplog_entries: Option<u64>,
    /// Why the restore stopped, when it did.
    pub error: Option<String>,
}

/// The outcome of a drill (its JSON form is `tidemark verify --json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DrillReport {
    /// The snapshot drilled, as hex.
    pub snapshot: String,
    /// Where it was restored.
    pub target: String,
    /// Whether every namespace matches and nothing failed.
    pub ok: bool,
    /// Time from the start of the restore to the end of the checks.
    pub seconds: f64,
    /// The restore phase.
    pub restore: RestoreReport,
    /// One verdict per namespace of the member, in manifest order.
    pub namespaces: Vec<NamespaceReport>,
    /// Failures of the drill as a whole (unreadable oplog, failed restore).
    pub failures: Vec<String>,
}

impl DrillReport {
    /// Namespaces that fail the drill.
    #[must_use]
    pub fn failed_namespaces(&self) -> usize {
        self.namespaces.iter().filter(|r| r.status.is_failure()).count()
    }

    /// A one-line summary of a failed drill; `None` when it passed.
    #[must_use]
    pub fn failure_summary(&self) -> Option<String> {
        if self.ok {
            return None;
        }
        Some(format!(
            "restore drill of snapshot {} failed: {} of {} namespace(s) do not match{}",
            self.snapshot.get(..8).unwrap_or(&self.snapshot),
            self.failed_namespaces(),
            self.namespaces.len(),
            if self.failures.is_empty() {
                String::new()
            } else {
                format!("; {}", self.failures.join("; "))
            }
        ))
    }
}

/// Where the drill restores to, once started.
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

/// Drills a snapshot of an open repository (see the module documentation), under a shared
/// repository lock so a prune cannot delete packs while the drill reads them.
///
/// # Errors
/// The drill could not run: invalid options ([`Error::is_invalid_option`]), a target that cannot
/// be used, an unreadable snapshot. Mismatches are not errors: they are in the report.
pub async fn drill(
    repository: &Repository,
    options: &DrillOptions,
    progress: Arc<dyn DrillProgress>,
) -> Result<DrillReport, Error> {
    if options.insertion_workers == 0 {
        return Err(Error::invalid_option(
            "--numInsertionWorkersPerCollection must be positive",
        ));
    }
    let lock = Lock::acquire(repository.storage(), false).await?;
    let (result, released) = lock.hold_during(drill_locked(repository, options, progress)).await;
    released.context("release the repository lock")?;
    result
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

async fn start_target(options: &DrillOptions, member: &Member) -> Result<(Target, Client), Error> {
    let dbpath = match &options.target {
        DrillTarget::MongoDb { uri, drop } => {
            let client = Client::with_uri_str(uri)
                .await
                .with_context(|| format!("--target {}: invalid connection string", redact(uri)))?;
            if !drop {
                let names = client
                    .list_database_names()
                    .await
                    .with_context(|| format!("--target {}: cannot list databases", redact(uri)))?;
                let user: Vec<_> = names
                    .into_iter()
                    .filter(|n| !matches!(n.as_str(), "admin" | "config" | "local"))
                    .collect();
                if !user.is_empty() {
                    return Err(Error::from(anyhow::anyhow!(
                        "--target {} is not empty (databases: {}): a drill restores into it and compares; use an \
                         empty server, or --drop to drop the snapshot's collections before restoring them",
                        redact(uri),
                        user.join(", ")
                    )));
                }
            }
            return Ok((Target::External(uri.clone()), client));
        }
        DrillTarget::DataDirectory(dbpath) => Some(dbpath),
        DrillTarget::InMemory => None,
    };
    let bytes: u64 = member.namespaces.iter().map(|n| n.data.bytes).sum();
    let budget = options.memory_budget.unwrap_or_else(default_memory_budget);
    if bytes.saturating_mul(MEMORY_FACTOR) > budget {
        return Err(Error::from(anyhow::anyhow!(
            "the snapshot holds {} MiB of documents; an embedded tidemark-server keeps every document in memory \
             (with --dbpath too) and needs about {MEMORY_FACTOR}x that, more than the budget of {} MiB \
             (--memory-budget): drill into a MongoDB with --target URI instead",
            bytes >> 20,
            budget >> 20
        )));
    }
    let server = match dbpath {
        Some(dbpath) => {
            // A drill compares with the snapshot alone: earlier data in the directory would be counted.
            if std::fs::read_dir(dbpath).is_ok_and(|mut entries| entries.next().is_some()) {
                return Err(Error::from(anyhow::anyhow!(
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

async fn drill_locked(
    repository: &Repository,
    options: &DrillOptions,
    progress: Arc<dyn DrillProgress>,
) -> Result<DrillReport, Error> {
    // With a point to reach the point-in-time planner chooses the base snapshot.
    let pitr = match options.at {
        Some(point) => Some(plan_pitr(repository, point, options.member.as_deref()).await?),
        None => None,
    };
    let id = match &pitr {
        Some(plan) => plan.window.base_snapshot,
        None => {
            repository
                .find_snapshot(options.snapshot.as_deref().unwrap_or("latest"))
                .await?
        }
    };
    let reader = SnapshotReader::open(repository, &id)
        .await
        .with_context(|| format!("open snapshot {id}"))?;
    let wanted = pitr
        .as_ref()
        .map(|p| p.window.replica_set.as_str())
        .or(options.member.as_deref());
    let member = pick_member(&reader, wanted)?.clone();
    let (target, client) = start_target(options, &member).await?;
    let started = Instant::now();
    let snap = reader.snapshot();
    progress.drill_started(&DrillStart {
        snapshot: id,
        time: snap.time,
        label: snap.label.clone(),
        namespaces: member.namespaces.len(),
        documents: member.namespaces.iter().map(|n| n.data.documents).sum(),
        rolled_forward_to: pitr.as_ref().map(|p| p.point.last),
        target: target.describe(),
    });

    let (footprint, oplog_error) = oplog_footprint(repository, &reader, &member, pitr.as_ref()).await;
    let has_oplog = member.oplog.as_ref().is_some_and(|o| o.data.documents > 0);

    let restored = match pitr {
        Some(plan) => restore_at(options, repository, plan, &reader, &member, &client, &progress).await?,
        None => restore(options, &reader, &member, &client, has_oplog, &progress).await?,
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
    let ok = !reports.iter().any(|r| r.status.is_failure()) && failures.is_empty();
    let report = DrillReport {
        snapshot: id.to_hex(),
        target: target.describe(),
        ok,
        seconds: started.elapsed().as_secs_f64(),
        restore,
        namespaces: reports,
        failures,
    };
    drop(client);
    if let Target::Embedded(server) = target {
        server.close().await?;
    }
    Ok(report)
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

/// The namespace a repository error blames (without the member prefix of multi-member snapshots).
fn damaged_namespace(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(error);
    while let Some(e) = current {
        // `tidemark_core::Error::Repo` is transparent: its source skips the repository error itself.
        let repo_error = e
            .downcast_ref::<RepoError>()
            .or(match e.downcast_ref::<tidemark_core::Error>() {
                Some(tidemark_core::Error::Repo(inner)) => Some(inner),
                _ => None,
            });
        if let Some(RepoError::NamespaceDamaged { namespace, .. }) = repo_error {
            return Some(namespace.rsplit('/').next().unwrap_or(namespace).to_owned());
        }
        current = e.source();
    }
    None
}

/// The restore options every drill uses.
fn restore_options(options: &DrillOptions) -> RestoreOptions {
    let mut restore = RestoreOptions::default();
    restore.drop = matches!(options.target, DrillTarget::MongoDb { drop: true, .. });
    restore.insertion_workers = options.insertion_workers;
    restore
}

/// Starts exporting `member` of the snapshot as an archive into a pipe read by the restore engine
/// (the drill holds the repository lock itself).
fn start_export(reader: &SnapshotReader, member: &Member) -> Result<(RestoreSource, SnapshotStream), Error> {
    let member_name = (reader.members().len() > 1).then(|| member.name.clone());
    let (stream, export) = SnapshotStream::start(reader.clone(), member_name, None)?;
    Ok((RestoreSource::Stream(stream), export))
}

/// Restores the member through the ordinary restore engine.
async fn restore(
    options: &DrillOptions,
    reader: &SnapshotReader,
    member: &Member,
    client: &Client,
    has_oplog: bool,
    progress: &Arc<dyn DrillProgress>,
) -> Result<Restored, Error> {
    let (source, export) = start_export(reader, member)?;
    let mut restore = restore_options(options);
    restore.source = source;
    restore.oplog_replay = has_oplog;
    let started = Instant::now();
    progress.restore_started(member.namespaces.iter().map(|n| n.data.documents).sum());
    let (result, skipped) = match plan_restore(&restore) {
        Ok(plan) => {
            let skipped = plan.skipped.clone();
            let engine_progress: Arc<dyn Progress> = progress.clone();
            let result = run_restore(client, plan, &restore, engine_progress).await;
            (result.map_err(|f| (f.summary, f.error)), skipped)
        }
        Err(e) => (Err((RestoreSummary::default(), e)), Vec::new()),
    };
    progress.restore_finished();
    // The engine is done with the stream: a blocked export sees a broken pipe, which is expected.
    drop(restore);
    let mut restored = Restored::measured(started, member, skipped, result);
    let export_error = tokio::task::spawn_blocking(move || export.finish())
        .await
        .context("the snapshot export")?;
    if let Err(e) = export_error {
        let namespace = damaged_namespace(&e);
        let message = format!("{:#}", anyhow::Error::new(e));
        if let Some(ns) = namespace {
            restored.damaged.push((ns, message.clone()));
        }
        // The restore's own error (a truncated archive) is a consequence; the export's explains it.
        restored.report.error = Some(message);
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
                let namespace = damaged_namespace(&error);
                // "context: cause: cause", the whole chain.
                let message = format!("{:#}", anyhow::Error::new(error));
                if let Some(ns) = namespace {
                    restored.damaged.push((ns, message.clone()));
                }
                restored.report.error = Some(message);
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
    options: &DrillOptions,
    repository: &Repository,
    plan: PitrPlan,
    reader: &SnapshotReader,
    member: &Member,
    client: &Client,
    progress: &Arc<dyn DrillProgress>,
) -> Result<Restored, Error> {
    // The namespaces the engine leaves out, by its own rules: plan a restore of the same stream.
    let (source, export) = start_export(reader, member)?;
    let mut restore = restore_options(options);
    restore.source = source;
    let skipped = plan_restore(&restore).map(|p| p.skipped.clone()).unwrap_or_default();
    // The plan took the stream and is dropped: the export stops with a broken pipe, which is expected.
    let _ = tokio::task::spawn_blocking(move || export.finish()).await;

    let started = Instant::now();
    progress.restore_started(member.namespaces.iter().map(|n| n.data.documents).sum());
    let engine_progress: Arc<dyn Progress> = progress.clone();
    let result = run_pitr(client, repository, plan, &restore, engine_progress).await;
    progress.restore_finished();
    let result = result.map(|r| r.summary).map_err(|f| (f.summary, f.error));
    Ok(Restored::measured(started, member, skipped, result))
}

/// What the restore's oplog replay will change, read before it runs: the snapshot's oplog (up to the
/// point with `--at`) and the archived range a roll-forward replays. Returns a read error too.
async fn oplog_footprint(
    repository: &Repository,
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
async fn delete_one_behind_the_back(client: &Client, ns: &str) -> Result<(), Error> {
    let (db, coll) = ns
        .split_once('.')
        .ok_or_else(|| Error::invalid_option(format!("{DELETE_ONE_VAR}={ns}: expected db.collection")))?;
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
