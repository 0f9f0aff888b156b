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

use std::{fmt, sync::Arc, time::Instant};

use bson::Timestamp;
use mongodb::Client;
use tidemark_oplog::{RestorePoint, point::format_time};
use tidemark_repo::{
    Repository, SnapshotReader,
    lock::Lock,
    oplog_archive::{OplogRange, PitrTimeline, PitrWindow, pitr_timeline, read_range},
};

use crate::{
    error::{Error, Result},
    progress::Progress,
    replay::OplogSource,
    restore::{RestoreFailure, RestoreOptions, RestoreSource, RestoreSummary, plan_restore, run_restore},
    snapshot_stream::SnapshotStream,
};

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

/// What a point-in-time restore will do.
#[derive(Debug, Clone)]
pub struct PitrPlan {
    /// The point reached.
    pub point: RestorePoint,
    /// The window used (base snapshot, replica set, restorable span from its consistency
    /// timestamp to the end of the archived oplog that follows it without a gap).
    pub window: PitrWindow,
    /// Creation time of the base snapshot (seconds since the epoch).
    pub snapshot_time: i64,
    /// The member of the base snapshot to restore (`None`: its only member).
    pub member: Option<String>,
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
            tidemark_repo::rfc3339(self.snapshot_time),
            show(ts(w.from))
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
pub fn choose_window(timeline: &PitrTimeline, point: &RestorePoint, replica_set: Option<&str>) -> Result<PitrWindow> {
    let windows: Vec<&PitrWindow> = timeline
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
        .filter(|w| key(ts(w.from)) <= p && p <= key(ts(w.to)))
        .max_by_key(|w| (w.from, w.base_snapshot))
    {
        return Ok((*best).clone());
    }
    let Some(first) = windows.iter().map(|w| ts(w.from)).min_by_key(|t| key(*t)) else {
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
        .map(|w| ts(w.to))
        .filter(|t| key(*t) < p)
        .max_by_key(|t| key(*t));
    let after = windows
        .iter()
        .map(|w| ts(w.from))
        .filter(|t| key(*t) > p)
        .min_by_key(|t| key(*t));
    let nearest = match (before, after) {
        (Some(b), Some(a)) => format!("the nearest restorable points are {} and {}", show(b), show(a)),
        (Some(b), None) => format!("the last restorable point is {}", show(b)),
        (None, Some(a)) => format!("the next restorable point is {}", show(a)),
        (None, None) => String::new(),
    };
    if let Some(gap) = timeline
        .gaps
        .iter()
        .filter(|g| windows.iter().any(|w| w.replica_set == g.replica_set))
        .find(|g| key(ts(g.after)) < p && p < key(ts(g.resumed_at)))
    {
        return Err(Error::Data(format!(
            "{point} is inside a gap of the archived oplog of {}: no entries are stored between {} and {} (the source's oplog rolled over before they were archived); {nearest}",
            gap.replica_set,
            show(ts(gap.after)),
            show(ts(gap.resumed_at))
        )));
    }
    // A hole after the last restorable point breaks every chain from an earlier base.
    if let Some(gap) = timeline
        .gaps
        .iter()
        .filter(|g| windows.iter().any(|w| w.replica_set == g.replica_set))
        .filter(|g| key(ts(g.after)) < p && before.is_none_or(|b| key(ts(g.after)) >= key(b)))
        .min_by_key(|g| g.after)
    {
        return Err(Error::Data(format!(
            "{point} is after a gap of the archived oplog of {} (no entries are stored between {} and {}) and no snapshot was taken after the gap before it; {nearest}",
            gap.replica_set,
            show(ts(gap.after)),
            show(ts(gap.resumed_at))
        )));
    }
    if after.is_none() {
        return Err(Error::Data(format!(
            "{point} is after the end of the archived oplog: {nearest} (archive the oplog with `tidemark oplog follow`, or take a new backup)"
        )));
    }
    Err(Error::Data(format!(
        "{point} is not covered by any snapshot's oplog: {nearest}"
    )))
}

/// The archive's timeline ([`pitr_timeline`]), plus the consistency point of every snapshot it
/// has no window for (a snapshot whose replica set has no archived oplog, or whose member has no
/// name while the archive holds none or several sets): each is restorable on its own.
///
/// # Errors
/// The repository could not list its snapshots or slices.
pub async fn restorable_timeline(repo: &Repository) -> Result<PitrTimeline> {
    let mut timeline = pitr_timeline(repo).await?;
    for (id, snapshot) in repo.snapshots().await? {
        let Some(consistency) = snapshot.consistency_ts else {
            continue;
        };
        if timeline.windows.iter().any(|w| w.base_snapshot == id) {
            continue;
        }
        for member in &snapshot.members {
            timeline.windows.push(PitrWindow {
                replica_set: member.name.clone(),
                base_snapshot: id,
                from: consistency,
                to: consistency,
            });
        }
    }
    Ok(timeline)
}

/// Plans a point-in-time restore of `repo` to `point` (`member`: the replica set, when the
/// repository holds several).
///
/// # Errors
/// Repository errors, or an explanation of why `point` is not restorable.
pub async fn plan_pitr(repo: &Repository, point: RestorePoint, member: Option<&str>) -> Result<PitrPlan> {
    let timeline = restorable_timeline(repo).await?;
    let window = choose_window(&timeline, &point, member)?;
    let snapshot = repo.load_snapshot(&window.base_snapshot).await?;
    // A member recorded without a name stands for the only replica set (see `pitr_timeline`).
    let (member, base) = match snapshot.members.iter().find(|m| m.name == window.replica_set) {
        Some(m) => (Some(m.name.clone()), m),
        None => match snapshot.members.as_slice() {
            [only] => (None, only),
            _ => {
                return Err(Error::Data(format!(
                    "snapshot {} has no member {}",
                    window.base_snapshot, window.replica_set
                )));
            }
        },
    };
    let snapshot_oplog = base
        .oplog
        .as_ref()
        .and_then(|o| o.window)
        .map(|w| (ts(w.first), ts(w.last)));
    let from = ts(window.from);
    let archived = (key(point.last) > key(from)).then_some((from, point.last));
    Ok(PitrPlan {
        point,
        snapshot_time: snapshot.time,
        member,
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
    // Opened before the snapshot streams: a range the archive cannot deliver fails before any write.
    let archived = match plan.archived {
        Some((after, upto)) => Some(
            read_range(repo, &plan.window.replica_set, after.into(), upto.into())
                .await
                .map_err(|e| fail(e.into()))?,
        ),
        None => None,
    };
    let snapshot = SnapshotReader::open(repo, &plan.window.base_snapshot)
        .await
        .map_err(|e| fail(e.into()))?;
    let (stream, export) = SnapshotStream::start(snapshot, plan.member.clone(), None).map_err(fail)?;
    let mut options = options.clone();
    options.source = RestoreSource::Stream(stream);
    options.gzip = false;
    options.oplog_file = None;
    options.oplog_replay = plan.snapshot_oplog.is_some();
    options.oplog_limit = plan.point.exclusive_limit();
    let mut restore_plan = match plan_restore(&options) {
        Ok(p) => p,
        Err(e) => return Err(fail(export.finish().err().unwrap_or(e))),
    };
    if let Some(range) = archived {
        restore_plan.continue_oplog(Box::new(ArchivedOplog {
            range,
            replica_set: plan.window.replica_set.clone(),
        }));
    }
    let result = run_restore(client, restore_plan, &options, progress).await;
    match (result, export.finish().err()) {
        (Ok(summary), None) => Ok(summary),
        (Ok(summary), Some(error)) => Err(Box::new(RestoreFailure { error, summary })),
        (Err(mut failure), Some(error)) => {
            failure.error = error;
            Err(failure)
        }
        (Err(failure), None) => Err(failure),
    }
}

/// Archived oplog slices as the restore engine's continuation of the snapshot's oplog.
struct ArchivedOplog {
    range: OplogRange,
    replica_set: String,
}

impl OplogSource for ArchivedOplog {
    fn next_entry(
        &mut self,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Option<bson::RawDocumentBuf>>> + Send + '_>> {
        Box::pin(async move { Ok(self.range.next_entry().await?) })
    }

    fn describe(&self) -> String {
        format!(
            "the archived oplog of {} after {}",
            self.replica_set,
            show(ts(self.range.position()))
        )
    }
}

#[cfg(test)]
mod tests {
    use tidemark_repo::{Id, oplog_archive::OplogGap};

    use super::*;

    fn t(t: u32, i: u32) -> tidemark_repo::Timestamp {
        tidemark_repo::Timestamp { t, i }
    }

    fn window(id: u8, from: tidemark_repo::Timestamp, to: tidemark_repo::Timestamp) -> PitrWindow {
        PitrWindow {
            replica_set: "rs0".into(),
            base_snapshot: Id([id; 32]),
            from,
            to,
        }
    }

    /// Snapshot 1 at 100 with oplog to 150, a hole (150, 200), snapshot 2 at 210 with oplog to 300,
    /// snapshot 3 at 250 (inside the second window).
    fn timeline() -> PitrTimeline {
        PitrTimeline {
            windows: vec![
                window(1, t(100, 1), t(150, 3)),
                window(2, t(210, 1), t(300, 0)),
                window(3, t(250, 2), t(300, 0)),
            ],
            gaps: vec![OplogGap {
                replica_set: "rs0".into(),
                after: t(150, 3),
                resumed_at: t(200, 1),
            }],
        }
    }

    fn at(time: u32, increment: u32) -> RestorePoint {
        RestorePoint::at_timestamp(Timestamp { time, increment })
    }

    fn refusal(point: RestorePoint) -> String {
        choose_window(&timeline(), &point, None).unwrap_err().to_string()
    }

    #[test]
    fn the_newest_base_whose_window_reaches_the_point_is_chosen() {
        let tl = timeline();
        let base = |p| choose_window(&tl, &p, None).unwrap().base_snapshot.0[0];
        assert_eq!(base(at(100, 1)), 1, "a consistency point itself");
        assert_eq!(base(at(150, 3)), 1, "the end of a window is inclusive");
        assert_eq!(base(at(249, 0)), 2);
        assert_eq!(base(at(250, 2)), 3, "newest base with consistency_ts <= point");
        assert_eq!(base(at(300, 0)), 3);
        let second = tidemark_oplog::parse_restore_point("1970-01-01T00:04:59Z").unwrap();
        assert_eq!(base(second), 3, "a time includes its whole second");
    }

    #[test]
    fn unrestorable_points_are_explained() {
        assert_eq!(
            refusal(at(100, 0)),
            "Timestamp(100, 0) is before every snapshot: the earliest restorable point is Timestamp(100, 1) (1970-01-01T00:01:40Z)"
        );
        assert_eq!(
            refusal(at(300, 1)),
            "Timestamp(300, 1) is after the end of the archived oplog: the last restorable point is Timestamp(300, 0) (1970-01-01T00:05:00Z) (archive the oplog with `tidemark oplog follow`, or take a new backup)"
        );
        assert_eq!(
            refusal(at(170, 0)),
            "Timestamp(170, 0) is inside a gap of the archived oplog of rs0: no entries are stored between Timestamp(150, 3) (1970-01-01T00:02:30Z) and Timestamp(200, 1) (1970-01-01T00:03:20Z) (the source's oplog rolled over before they were archived); the nearest restorable points are Timestamp(150, 3) (1970-01-01T00:02:30Z) and Timestamp(210, 1) (1970-01-01T00:03:30Z)"
        );
        // After the gap but before the next snapshot: the archive resumed, but no base precedes it.
        assert!(
            refusal(at(205, 0)).starts_with("Timestamp(205, 0) is after a gap of the archived oplog of rs0 (no entries are stored between Timestamp(150, 3) (1970-01-01T00:02:30Z) and Timestamp(200, 1) (1970-01-01T00:03:20Z)) and no snapshot was taken after the gap before it; the nearest restorable points are Timestamp(150, 3)"),
            "{}",
            refusal(at(205, 0))
        );
        // Between windows without a known gap.
        let mut tl = timeline();
        tl.gaps.clear();
        assert!(
            choose_window(&tl, &at(205, 0), None)
                .unwrap_err()
                .to_string()
                .starts_with("Timestamp(205, 0) is not covered by any snapshot's oplog: the nearest restorable points are Timestamp(150, 3)")
        );
    }

    #[test]
    fn several_replica_sets_need_a_choice() {
        let mut tl = timeline();
        tl.windows.push(PitrWindow {
            replica_set: "rs1".into(),
            ..window(4, t(100, 1), t(400, 0))
        });
        let err = choose_window(&tl, &at(120, 0), None).unwrap_err().to_string();
        assert_eq!(
            err,
            "the repository holds several replica sets (rs0, rs1); choose one with --member"
        );
        assert_eq!(
            choose_window(&tl, &at(350, 0), Some("rs1")).unwrap().base_snapshot.0[0],
            4
        );
        assert!(choose_window(&tl, &at(120, 0), Some("rs9")).is_err());
    }
}
