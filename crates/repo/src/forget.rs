//! Retention (`forget`) and space reclamation (`prune`).
//!
//! `forget` applies keep-last/hourly/daily/weekly/monthly/yearly rules per label (host or cluster)
//! with restic's semantics: snapshots are walked newest first, and a rule keeps a snapshot when
//! it is the newest one of a time bucket that rule has not used yet, until the rule has kept its
//! count. A snapshot kept by any rule is kept. Buckets are UTC hours, days, ISO weeks (starting on
//! Monday), months and years. Only manifests are deleted, so forget is cheap and reversible until
//! `prune` runs. Oplog slices follow the kept snapshots: per replica set, slices entirely older
//! than the consistency timestamp of the oldest kept snapshot (`last < C`) can no longer extend any
//! restorable window and are forgotten; a set without such a snapshot keeps every slice.
//!
//! `prune` (exclusive lock) computes the blobs still referenced by some snapshot or oplog slice
//! (chunk-list blobs and the chunks they list, through [`for_each_blob`]), deletes packs
//! with none of them, and repacks packs that are only partly used: their used blobs are copied into
//! new packs. Order keeps the repository valid at every step: new packs, then a new index covering
//! everything kept, then deletion of the old index objects, then deletion of the old packs.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::Repository;
use crate::chunk_list::for_each_blob;
use crate::crypto::Id;
use crate::error::{RepoError, Result};
use crate::lock::Lock;
use crate::oplog_archive::{self, SliceInfo};
use crate::pack::{DecodedFrame, IndexPack, PackEntry, pack_key};
use crate::repository::decode_frames;
use crate::snapshot::{Snapshot, Timestamp};
use crate::util::civil_from_days;
use crate::writer::BlobSink;

/// How many snapshots to keep per rule (0 = rule unused).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeepPolicy {
    /// Keep the newest N.
    pub last: u32,
    /// Keep the newest of each of the last N hours.
    pub hourly: u32,
    /// Days.
    pub daily: u32,
    /// ISO weeks.
    pub weekly: u32,
    /// Months.
    pub monthly: u32,
    /// Years.
    pub yearly: u32,
}

impl KeepPolicy {
    /// Whether no rule is set.
    pub fn is_empty(&self) -> bool {
        *self == KeepPolicy::default()
    }
}

/// Decision for one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgetDecision {
    /// Snapshot id.
    pub id: Id,
    /// Snapshot time.
    pub time: i64,
    /// Label (group).
    pub label: String,
    /// Rules that keep it (`last`, `hourly`, ...); empty means it is removed.
    pub reasons: Vec<&'static str>,
}

/// Result of `forget`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForgetPlan {
    /// Snapshots kept, newest first.
    pub keep: Vec<ForgetDecision>,
    /// Snapshots removed (or to remove in a dry run), newest first.
    pub remove: Vec<ForgetDecision>,
    /// Oplog slices no kept snapshot's window needs, removed (or to remove in a dry run).
    pub remove_slices: Vec<SliceInfo>,
}

fn bucket(rule: &str, time: i64) -> i64 {
    let days = time.div_euclid(86_400);
    match rule {
        "hourly" => time.div_euclid(3600),
        "daily" => days,
        // 1970-01-01 was a Thursday: shifting by 3 days makes weeks start on Monday.
        "weekly" => (days + 3).div_euclid(7),
        "monthly" => {
            let (y, m, _) = civil_from_days(days);
            y * 12 + i64::from(m)
        }
        "yearly" => civil_from_days(days).0,
        _ => time,
    }
}

/// Decides which snapshots a policy keeps (pure; `snapshots` in any order).
pub fn plan_forget(snapshots: &[(Id, Snapshot)], policy: &KeepPolicy) -> ForgetPlan {
    let mut groups: BTreeMap<&str, Vec<&(Id, Snapshot)>> = BTreeMap::new();
    for s in snapshots {
        groups.entry(s.1.label.as_str()).or_default().push(s);
    }
    let mut plan = ForgetPlan::default();
    for (_, mut group) in groups {
        group.sort_by_key(|s| std::cmp::Reverse((s.1.time, s.1.time_nanos, s.0)));
        let mut rules: Vec<(&'static str, u32, Option<i64>)> = [
            ("last", policy.last),
            ("hourly", policy.hourly),
            ("daily", policy.daily),
            ("weekly", policy.weekly),
            ("monthly", policy.monthly),
            ("yearly", policy.yearly),
        ]
        .into_iter()
        .map(|(n, c)| (n, c, None))
        .collect();
        for (id, snap) in group {
            let mut reasons = Vec::new();
            for (name, left, last_bucket) in &mut rules {
                if *left == 0 {
                    continue;
                }
                let b = bucket(name, snap.time);
                if *name == "last" || *last_bucket != Some(b) {
                    *left -= 1;
                    *last_bucket = Some(b);
                    reasons.push(*name);
                }
            }
            let decision = ForgetDecision {
                id: *id,
                time: snap.time,
                label: snap.label.clone(),
                reasons,
            };
            if decision.reasons.is_empty() {
                plan.remove.push(decision)
            } else {
                plan.keep.push(decision)
            }
        }
    }
    plan
}

/// Applies a policy: deletes the manifests it does not keep (nothing in a dry run).
pub async fn forget(repo: &Repository, policy: &KeepPolicy, dry_run: bool) -> Result<ForgetPlan> {
    if policy.is_empty() {
        return Err(RepoError::InvalidOption {
            option: "keep",
            message: "no --keep-* rule given; refusing to remove every snapshot".into(),
        });
    }
    let lock = if dry_run {
        None
    } else {
        Some(Lock::acquire(&repo.storage, true).await?)
    };
    let snapshots = repo.snapshots().await?;
    let mut plan = plan_forget(&snapshots, policy);
    let kept: Vec<&Snapshot> = snapshots
        .iter()
        .filter(|(id, _)| plan.keep.iter().any(|d| d.id == *id))
        .map(|(_, s)| s)
        .collect();
    plan.remove_slices = slices_outside_windows(&oplog_archive::list_slices(repo).await?, &kept);
    if !dry_run {
        for d in &plan.remove {
            repo.storage.delete(&format!("snapshots/{}", d.id)).await?;
        }
        for s in &plan.remove_slices {
            oplog_archive::delete_slice(repo, &s.id).await?;
        }
    }
    if let Some(lock) = lock {
        lock.release().await?;
    }
    Ok(plan)
}

/// Slices no window of the `kept` snapshots needs: per replica set, those entirely older than the
/// consistency timestamp of the oldest kept snapshot of that set (`last < C`). A replica set no kept
/// snapshot with a consistency timestamp belongs to keeps all its slices (nothing proves them useless).
pub fn slices_outside_windows(slices: &[SliceInfo], kept: &[&Snapshot]) -> Vec<SliceInfo> {
    let sets: BTreeSet<&str> = slices.iter().map(|s| s.replica_set.as_str()).collect();
    let mut oldest: HashMap<String, Timestamp> = HashMap::new();
    for snap in kept {
        let Some(c) = snap.consistency_ts else { continue };
        for set in oplog_archive::member_sets(snap, &sets) {
            let entry = oldest.entry(set).or_insert(c);
            *entry = (*entry).min(c);
        }
    }
    slices
        .iter()
        .filter(|s| oldest.get(&s.replica_set).is_some_and(|c| s.last < *c))
        .cloned()
        .collect()
}

/// Removes specific snapshots.
pub async fn forget_ids(repo: &Repository, ids: &[Id]) -> Result<()> {
    let lock = Lock::acquire(&repo.storage, true).await?;
    for id in ids {
        repo.load_snapshot(id).await?;
        repo.storage.delete(&format!("snapshots/{id}")).await?;
    }
    lock.release().await
}

/// What prune does (or would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrunePlan {
    /// Packs deleted outright (no used blob).
    pub delete_packs: Vec<Id>,
    /// Packs whose used blobs are copied to new packs before deletion.
    pub repack_packs: Vec<Id>,
    /// Stored packs no index mentions (from interrupted backups), deleted.
    pub unindexed_packs: Vec<String>,
    /// Packs kept as they are.
    pub kept_packs: usize,
    /// Used blobs to copy.
    pub blobs_to_repack: u64,
    /// Bytes of storage freed (before counting the new packs).
    pub bytes_freed: u64,
    /// Bytes written into new packs.
    pub bytes_added: u64,
}

/// Deletes unreferenced data (exclusive lock). With `dry_run` only plans.
pub async fn prune(repo: &Repository, dry_run: bool) -> Result<PrunePlan> {
    let lock = Lock::acquire(&repo.storage, true).await?;
    let result = run_prune(repo, dry_run).await;
    lock.release().await?;
    result
}

async fn run_prune(repo: &Repository, dry_run: bool) -> Result<PrunePlan> {
    // Every blob some snapshot references, chunk lists included; a chunk list that cannot be
    // read stops prune (what it lists would otherwise look unused).
    let mut used: HashSet<Id> = HashSet::new();
    let mut lists_read = HashSet::new();
    for (id, snap) in repo.snapshots().await? {
        for (name, data) in snap.streams() {
            for_each_blob(repo, data, Some(&mut lists_read), |blob, _| {
                used.insert(blob);
            })
            .await
            .map_err(|e| RepoError::Usage(format!("prune stopped: snapshot {id}: {name}: {e}")))?;
        }
    }
    for slice in oplog_archive::list_slices(repo).await? {
        for_each_blob(repo, &slice.data, Some(&mut lists_read), |blob, _| {
            used.insert(blob);
        })
        .await
        .map_err(|e| RepoError::Usage(format!("prune stopped: {}: {e}", slice.label())))?;
    }
    let index_files = repo.index_files().await?;
    let mut packs: BTreeMap<Id, IndexPack> = BTreeMap::new();
    for (_, file) in &index_files {
        for p in &file.packs {
            packs.insert(p.id, p.clone());
        }
    }
    let stored: HashMap<String, u64> = repo
        .storage
        .list("data/")
        .await?
        .into_iter()
        .map(|m| (m.key, m.size))
        .collect();
    let mut plan = PrunePlan::default();
    let mut assigned: HashSet<Id> = HashSet::new();
    let mut keep: Vec<IndexPack> = Vec::new();
    // pack -> used entries to copy
    let mut repack: Vec<(IndexPack, Vec<usize>)> = Vec::new();
    for pack in packs.values() {
        if !stored.contains_key(&pack_key(&pack.id)) {
            // Missing from storage: drop it from the index (check reports it until then).
            continue;
        }
        let wanted: Vec<usize> = pack
            .blobs
            .iter()
            .enumerate()
            .filter(|(_, b)| used.contains(&b.id) && !assigned.contains(&b.id))
            .map(|(i, _)| i)
            .collect();
        for &i in &wanted {
            assigned.insert(pack.blobs[i].id);
        }
        if wanted.len() == pack.blobs.len() {
            keep.push(pack.clone());
        } else if wanted.is_empty() {
            plan.delete_packs.push(pack.id);
            plan.bytes_freed += pack.size;
        } else {
            plan.repack_packs.push(pack.id);
            plan.bytes_freed += pack.size;
            plan.blobs_to_repack += wanted.len() as u64;
            repack.push((pack.clone(), wanted));
        }
    }
    let indexed: HashSet<String> = packs.keys().map(pack_key).collect();
    for (key, size) in &stored {
        if !indexed.contains(key) {
            plan.unindexed_packs.push(key.clone());
            plan.bytes_freed += size;
        }
    }
    plan.unindexed_packs.sort();
    plan.kept_packs = keep.len();
    if dry_run || (plan.delete_packs.is_empty() && plan.repack_packs.is_empty() && plan.unindexed_packs.is_empty()) {
        return Ok(plan);
    }

    let mut sink = BlobSink::for_moving(repo.clone());
    for (pack, wanted) in &repack {
        let key = pack_key(&pack.id);
        let bytes = repo.storage.get(&key).await?;
        let entries: Vec<PackEntry> = wanted.iter().map(|&i| pack.blobs[i]).collect();
        let plaintexts: Vec<Vec<u8>> = decode_frames(&repo.keys, &bytes, 0, &entries, &pack.id, &key)?
            .into_iter()
            .flat_map(DecodedFrame::into_blobs)
            .collect();
        // Kept blobs move together, in frames again, one kind at a time.
        let mut start = 0;
        for run in entries.chunk_by(|a, b| a.kind == b.kind) {
            let blobs: Vec<&[u8]> = plaintexts[start..start + run.len()].iter().map(Vec::as_slice).collect();
            sink.add_batch_again(&blobs, run[0].kind).await?;
            start += run.len();
        }
    }
    let stats = sink.finish().await?;
    plan.bytes_added = stats.added_bytes;
    if !keep.is_empty() {
        repo.write_index(keep).await?;
    }
    // The new index objects (random names) now cover everything kept: the old ones can go.
    for (key, _) in &index_files {
        repo.storage.delete(key).await?;
    }
    for id in plan.delete_packs.iter().chain(&plan.repack_packs) {
        repo.storage.delete(&pack_key(id)).await?;
    }
    for key in &plan.unindexed_packs {
        repo.storage.delete(key).await?;
    }
    repo.reload_index().await?;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::SnapshotStats;

    fn snap(time: i64, label: &str) -> Snapshot {
        Snapshot {
            version: crate::snapshot::MANIFEST_VERSION,
            time,
            time_nanos: 0,
            host: "h".into(),
            label: label.into(),
            tags: Vec::new(),
            consistency_ts: None,
            members: Vec::new(),
            stats: SnapshotStats::default(),
        }
    }

    fn ids(plan: &[ForgetDecision]) -> Vec<i64> {
        plan.iter().map(|d| d.time).collect()
    }

    // 2024-01-01T00:00:00Z is a Monday.
    const JAN1: i64 = 1_704_067_200;
    const DAY: i64 = 86_400;

    #[test]
    fn daily_keeps_newest_per_day() {
        // Two snapshots a day for five days (09:00 and 21:00).
        let list: Vec<_> = (0..5)
            .flat_map(|d| [9, 21].map(|h| JAN1 + d * DAY + h * 3600))
            .enumerate()
            .map(|(i, t)| (Id([u8::try_from(i).unwrap(); 32]), snap(t, "a")))
            .collect();
        let plan = plan_forget(
            &list,
            &KeepPolicy {
                daily: 3,
                ..KeepPolicy::default()
            },
        );
        assert_eq!(
            ids(&plan.keep),
            vec![
                JAN1 + 4 * DAY + 21 * 3600,
                JAN1 + 3 * DAY + 21 * 3600,
                JAN1 + 2 * DAY + 21 * 3600
            ]
        );
        assert_eq!(plan.remove.len(), 7);
        // keep-last and daily together: the union, with both reasons on the newest.
        let plan = plan_forget(
            &list,
            &KeepPolicy {
                last: 2,
                daily: 1,
                ..KeepPolicy::default()
            },
        );
        assert_eq!(plan.keep.len(), 2);
        assert_eq!(plan.keep[0].reasons, ["last", "daily"]);
        assert_eq!(plan.keep[1].reasons, ["last"]);
    }

    #[test]
    fn weekly_monthly_yearly_buckets_and_labels() {
        // Sunday 2024-01-07 and Monday 2024-01-08 are in different ISO weeks.
        let sunday = JAN1 + 6 * DAY;
        let monday = JAN1 + 7 * DAY;
        assert_ne!(bucket("weekly", sunday), bucket("weekly", monday));
        assert_eq!(bucket("weekly", JAN1), bucket("weekly", sunday));
        assert_eq!(bucket("monthly", JAN1), bucket("monthly", JAN1 + 30 * DAY));
        assert_ne!(bucket("monthly", JAN1), bucket("monthly", JAN1 + 31 * DAY));
        assert_ne!(bucket("yearly", JAN1 - 1), bucket("yearly", JAN1));
        // Labels are grouped separately: keep-last 1 keeps one per label.
        let list = vec![
            (Id([1; 32]), snap(JAN1, "a")),
            (Id([2; 32]), snap(JAN1 + 1, "a")),
            (Id([3; 32]), snap(JAN1, "b")),
        ];
        let plan = plan_forget(
            &list,
            &KeepPolicy {
                last: 1,
                ..KeepPolicy::default()
            },
        );
        let mut kept: Vec<_> = plan.keep.iter().map(|d| d.id).collect();
        kept.sort();
        assert_eq!(kept, vec![Id([2; 32]), Id([3; 32])]);
    }
}
