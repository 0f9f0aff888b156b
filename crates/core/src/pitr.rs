//! Point-in-time restore from a backup repository: a base snapshot plus the oplog up to a point.
//!
//! A logical snapshot is consistent at its `consistency_ts`: its documents were read while the
//! oplog captured with it ran, and replaying that oplog up to `consistency_ts` makes them
//! consistent. Any later point `P` of the same replica set is reached by replaying the oplog on
//! from there, so a point is restorable when some snapshot with `consistency_ts <= P` has an
//! unbroken oplog from its `consistency_ts` to `P`: the snapshot's *window*. Without archived
//! oplog a window is the single point `consistency_ts`.
//!
//! [`plan_pitr`] chooses the base: among the windows containing `P`, the one of the newest
//! snapshot (least oplog to replay). When no window contains `P` it refuses, saying whether `P`
//! is before every snapshot, after the end of the archived oplog, or between windows (inside a
//! gap of the archive), and naming the nearest restorable points on either side.
//!
//! [`run_pitr`] then restores through the ordinary restore engine: a thread exports the base
//! snapshot as an archive stream (as `restore --repo --snapshot` does), the engine restores it
//! with the caller's namespace filters, renames and `--drop`, and replays the snapshot's oplog
//! and then the archived oplog after `consistency_ts` with one replayer, up to `P` inclusive
//! (an exclusive `--oplogLimit` one past `P`). Entries on unselected namespaces are skipped and
//! selected ones renamed (see [`tidemark_oplog::selection`]). Transactions are applied when their
//! commit is replayed: one that commits after `P` is not applied at all. Index operations of the
//! oplog are folded into the index catalog and built at the end, as for `--oplogReplay`.

use std::{
    fmt,
    io::{BufWriter, Write},
    sync::Arc,
    thread::JoinHandle,
    time::Instant,
};

use bson::Timestamp;
use mongodb::Client;
use tidemark_oplog::{RestorePoint, point::format_time};
use tidemark_repo::{Id, Repository, SnapshotReader, export::export_archive, lock::Lock};

use crate::{
    error::{Error, Result},
    progress::Progress,
    restore::{
        ArchiveStream, RestoreFailure, RestoreOptions, RestoreSource, RestoreSummary, plan_restore, run_restore,
    },
};

/// Pipe and output buffer size of the snapshot stream.
const STREAM_BUFFER: usize = 1 << 20;

/// A span of points restorable from one base snapshot of one replica set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorableWindow {
    /// Replica set (snapshot member) name.
    pub replica_set: String,
    /// The base snapshot.
    pub base_snapshot: Id,
    /// Creation time of the base snapshot (seconds since the epoch).
    pub snapshot_time: i64,
    /// The snapshot's consistency timestamp: the first restorable point.
    pub from: Timestamp,
    /// The last restorable point (the last oplog entry known after `from`).
    pub to: Timestamp,
}

/// Missing oplog of a replica set: nothing is known between `after` and `resumed_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OplogGap {
    /// Replica set name.
    pub replica_set: String,
    /// Last entry before the gap.
    pub after: Timestamp,
    /// First entry after the gap.
    pub resumed_at: Timestamp,
}

/// The restorable windows of a repository, and the gaps between them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timeline {
    /// Windows, in no particular order.
    pub windows: Vec<RestorableWindow>,
    /// Known gaps of the archived oplog.
    pub gaps: Vec<OplogGap>,
}

fn ts(t: tidemark_repo::Timestamp) -> Timestamp {
    t.into()
}

fn key(t: Timestamp) -> (u32, u32) {
    (t.time, t.increment)
}

/// `Timestamp(s, i) (time)`.
fn show(t: Timestamp) -> String {
    format!("Timestamp({}, {}) ({})", t.time, t.increment, format_time(t.time))
}

/// The restorable windows of `repo`: one per snapshot member with a consistency timestamp.
///
/// # Errors
/// The repository could not list or read its snapshots.
pub async fn timeline(repo: &Repository) -> Result<Timeline> {
    let mut windows = Vec::new();
    for (id, snapshot) in repo.snapshots().await? {
        let Some(consistency) = snapshot.consistency_ts else {
            continue;
        };
        for member in &snapshot.members {
            windows.push(RestorableWindow {
                replica_set: member.name.clone(),
                base_snapshot: id,
                snapshot_time: snapshot.time,
                from: ts(consistency),
                to: ts(consistency),
            });
        }
    }
    Ok(Timeline {
        windows,
        gaps: Vec::new(),
    })
}

/// What a point-in-time restore will do.
#[derive(Debug, Clone)]
pub struct PitrPlan {
    /// The point reached.
    pub point: RestorePoint,
    /// The window used (base snapshot, replica set, restorable span).
    pub window: RestorableWindow,
    /// The snapshot's captured oplog (first, last), replayed first.
    pub snapshot_oplog: Option<(Timestamp, Timestamp)>,
    /// Archived oplog replayed after the snapshot's: entries after `.0` up to `.1` inclusive.
    pub archived: Option<(Timestamp, Timestamp)>,
}

impl fmt::Display for PitrPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = &self.window;
        writeln!(f, "point: {}", self.point)?;
        let set = if w.replica_set.is_empty() {
            String::new()
        } else {
            format!(" (replica set {})", w.replica_set)
        };
        writeln!(
            f,
            "base snapshot: {} taken {}{set}, consistent at {}",
            w.base_snapshot,
            tidemark_repo::rfc3339(w.snapshot_time),
            show(w.from)
        )?;
        match self.snapshot_oplog {
            Some((first, last)) => writeln!(f, "replay the snapshot's oplog: {} to {}", show(first), show(last))?,
            None => writeln!(f, "the snapshot has no captured oplog")?,
        }
        match self.archived {
            Some((after, upto)) => writeln!(f, "replay archived oplog: after {} up to {}", show(after), show(upto))?,
            None => writeln!(
                f,
                "no archived oplog to replay: the point is the snapshot's consistency point"
            )?,
        }
        Ok(())
    }
}

/// Chooses the window for `point` (see the module documentation).
///
/// # Errors
/// [`Error::Data`] explaining why `point` is not restorable, with the nearest restorable points.
pub fn choose_window(timeline: &Timeline, point: &RestorePoint, replica_set: Option<&str>) -> Result<RestorableWindow> {
    let windows: Vec<&RestorableWindow> = timeline
        .windows
        .iter()
        .filter(|w| replica_set.is_none_or(|r| w.replica_set == r))
        .collect();
    let sets: std::collections::BTreeSet<&str> = windows.iter().map(|w| w.replica_set.as_str()).collect();
    if sets.len() > 1 {
        let names: Vec<&str> = sets.into_iter().collect();
        return Err(Error::Options(format!(
            "the repository holds several replica sets ({}); choose one with --member",
            names.join(", ")
        )));
    }
    let p = key(point.last);
    if let Some(best) = windows
        .iter()
        .filter(|w| key(w.from) <= p && p <= key(w.to))
        .max_by_key(|w| (key(w.from), w.snapshot_time))
    {
        return Ok((*best).clone());
    }
    let Some(first) = windows.iter().map(|w| w.from).min_by_key(|t| key(*t)) else {
        return Err(Error::Data(match replica_set {
            Some(r) => format!("no snapshot of replica set {r} has a consistency timestamp (back up with --oplog)"),
            None => "the repository has no snapshot with a consistency timestamp (back up with --oplog)".into(),
        }));
    };
    if p < key(first) {
        return Err(Error::Data(format!(
            "{point} is before every snapshot: the earliest restorable point is {}",
            show(first)
        )));
    }
    let before = windows
        .iter()
        .map(|w| w.to)
        .filter(|t| key(*t) < p)
        .max_by_key(|t| key(*t));
    let after = windows
        .iter()
        .map(|w| w.from)
        .filter(|t| key(*t) > p)
        .min_by_key(|t| key(*t));
    let nearest = match (before, after) {
        (Some(b), Some(a)) => format!("the nearest restorable points are {} and {}", show(b), show(a)),
        (Some(b), None) => format!("the last restorable point is {}", show(b)),
        (None, Some(a)) => format!("the next restorable point is {}", show(a)),
        (None, None) => String::new(),
    };
    if after.is_none() {
        return Err(Error::Data(format!(
            "{point} is after the end of the archived oplog: {nearest} (archive the oplog with `tidemark oplog follow`, or take a new backup)"
        )));
    }
    if let Some(gap) = timeline
        .gaps
        .iter()
        .filter(|g| windows.iter().any(|w| w.replica_set == g.replica_set))
        .find(|g| key(g.after) < p && p < key(g.resumed_at))
    {
        return Err(Error::Data(format!(
            "{point} is inside a gap of the archived oplog: no entries are stored between {} and {} (the oplog rolled over before they were archived); {nearest}",
            show(gap.after),
            show(gap.resumed_at)
        )));
    }
    Err(Error::Data(format!(
        "{point} is not covered by any snapshot's oplog: {nearest}"
    )))
}

/// Plans a point-in-time restore of `repo` to `point` (`member`: the replica set, when the
/// repository holds several).
///
/// # Errors
/// Repository errors, or an explanation of why `point` is not restorable.
pub async fn plan_pitr(repo: &Repository, point: RestorePoint, member: Option<&str>) -> Result<PitrPlan> {
    let timeline = timeline(repo).await?;
    let window = choose_window(&timeline, &point, member)?;
    let snapshot = repo.load_snapshot(&window.base_snapshot).await?;
    let snapshot_oplog = snapshot
        .members
        .iter()
        .find(|m| m.name == window.replica_set)
        .and_then(|m| m.oplog.as_ref())
        .and_then(|o| o.window)
        .map(|w| (ts(w.first), ts(w.last)));
    let upto = if key(point.last) <= key(window.to) {
        point.last
    } else {
        window.to
    };
    let archived = (key(point.last) > key(window.from)).then_some((window.from, upto));
    Ok(PitrPlan {
        point,
        window,
        snapshot_oplog,
        archived,
    })
}

/// What a point-in-time restore did.
#[derive(Debug, Clone)]
pub struct PitrReport {
    /// The plan that was run.
    pub plan: PitrPlan,
    /// The restore engine's counts (documents of the base snapshot, oplog entries).
    pub summary: RestoreSummary,
    /// Wall-clock seconds of the whole restore.
    pub seconds: f64,
}

impl PitrReport {
    /// Oplog entries read per second of replay (applied and skipped).
    #[must_use]
    pub fn replay_rate(&self) -> Option<f64> {
        let seconds = self.summary.oplog_seconds?;
        let entries = self.summary.oplog_entries? + self.summary.oplog_skipped.unwrap_or(0);
        #[allow(clippy::cast_precision_loss)]
        (seconds > 0.0).then(|| entries as f64 / seconds)
    }
}

/// The thread exporting the base snapshot into the engine's archive stream.
struct SnapshotExport {
    thread: JoinHandle<Result<()>>,
}

impl SnapshotExport {
    /// Starts exporting member `member` of snapshot `id` as an archive into a pipe.
    fn start(repo: &Repository, id: Id, member: String) -> Result<(ArchiveStream, Self)> {
        let (reader, writer) = std::io::pipe().map_err(crate::error::io_error(
            "error creating a pipe for the snapshot stream",
            "pipe",
        ))?;
        let repo = repo.clone();
        let thread = std::thread::Builder::new()
            .name("snapshot-export".into())
            .spawn(move || -> Result<()> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(crate::error::io_error(
                        "error starting the snapshot export runtime",
                        "runtime",
                    ))?;
                runtime.block_on(async move {
                    let snapshot = SnapshotReader::open(&repo, &id).await?;
                    let out = BufWriter::with_capacity(STREAM_BUFFER, writer);
                    let (out, _) = export_archive(&snapshot, Some(&member), out).await?;
                    out.into_inner()
                        .map_err(std::io::IntoInnerError::into_error)
                        .and_then(|mut pipe| pipe.flush())
                        .map_err(crate::error::io_error("error writing the snapshot stream", "pipe"))
                })
            })
            .map_err(crate::error::io_error(
                "error starting the snapshot export thread",
                "thread",
            ))?;
        Ok((ArchiveStream::new(reader), Self { thread }))
    }

    /// The export's own error, which explains a failed restore better than the engine's
    /// (a truncated archive); a broken pipe only means the engine stopped reading.
    fn finish(self) -> Option<Error> {
        match self.thread.join() {
            Ok(Ok(())) => None,
            Ok(Err(Error::Io { source, .. })) if source.kind() == std::io::ErrorKind::BrokenPipe => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(Error::Data("the snapshot export thread panicked".into())),
        }
    }
}

/// Runs a point-in-time restore into `client` (see the module documentation). `options` carries
/// the namespace filters and renames, `--drop`, parallelism and the other restore options; its
/// source and oplog fields are set here.
///
/// # Errors
/// A [`RestoreFailure`] with the counts reached.
pub async fn run_pitr(
    client: &Client,
    repo: &Repository,
    plan: PitrPlan,
    options: &RestoreOptions,
    progress: Arc<dyn Progress>,
) -> Result<PitrReport, Box<RestoreFailure>> {
    let started = Instant::now();
    let fail = |error: Error| {
        Box::new(RestoreFailure {
            error,
            summary: RestoreSummary::default(),
        })
    };
    // Shared: a prune (exclusive) cannot delete packs while they are read.
    let lock = Lock::acquire(repo.storage(), false).await.map_err(|e| fail(e.into()))?;
    let result = restore_locked(client, repo, &plan, options, progress).await;
    let released = lock.release().await;
    let summary = result?;
    released.map_err(|e| fail(e.into()))?;
    Ok(PitrReport {
        plan,
        summary,
        seconds: started.elapsed().as_secs_f64(),
    })
}

async fn restore_locked(
    client: &Client,
    repo: &Repository,
    plan: &PitrPlan,
    options: &RestoreOptions,
    progress: Arc<dyn Progress>,
) -> Result<RestoreSummary, Box<RestoreFailure>> {
    let fail = |error: Error| {
        Box::new(RestoreFailure {
            error,
            summary: RestoreSummary::default(),
        })
    };
    let (stream, export) =
        SnapshotExport::start(repo, plan.window.base_snapshot, plan.window.replica_set.clone()).map_err(fail)?;
    let mut options = options.clone();
    options.source = RestoreSource::Stream(stream);
    options.gzip = false;
    options.oplog_file = None;
    options.oplog_replay = plan.snapshot_oplog.is_some();
    options.oplog_limit = plan.point.exclusive_limit();
    let restore_plan = match plan_restore(&options) {
        Ok(p) => p,
        Err(e) => return Err(fail(export.finish().unwrap_or(e))),
    };
    let result = run_restore(client, restore_plan, &options, progress).await;
    match (result, export.finish()) {
        (Ok(summary), None) => Ok(summary),
        (Ok(summary), Some(error)) => Err(Box::new(RestoreFailure { error, summary })),
        (Err(mut failure), Some(error)) => {
            failure.error = error;
            Err(failure)
        }
        (Err(failure), None) => Err(failure),
    }
}
