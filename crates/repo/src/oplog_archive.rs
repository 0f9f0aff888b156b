//! Continuous oplog archiving: slices of a replica set's oplog stored between snapshots.
//!
//! A snapshot taken with its oplog is consistent at one timestamp; restoring to any later moment
//! needs every oplog entry after it. A follower (`tidemark oplog follow`) stores those entries as
//! *slices*: runs of consecutive oplog entries of one replica set. A slice's entries are a chunked
//! [`DataStream`] written through the same chunker, blob sink, packs and index as a snapshot's
//! oplog; its manifest (`oplog/<slice id>`, sealed zstd JSON, id = BLAKE3 of the plaintext) is written
//! last and is the commit point, so a crash leaves at most unreferenced packs.
//!
//! Contiguity is proven, not assumed: a slice records `continues_from`, the `ts` of the entry just
//! before its first one, which the follower found again in the source oplog before reading on. A
//! slice therefore holds *every* entry in `(continues_from, last]`. When the follower could not find
//! that entry (the oplog rolled over while it was stopped) the slice records a `gap` instead and
//! holds every entry in `[first, last]` only.
//!
//! From slices and snapshots, [`pitr_timeline`] derives the restorable windows: each snapshot with
//! a consistency timestamp `C` is a base; its window runs from `C` as far as slices chain without
//! a hole after it. [`read_range`] streams the entries of a range across slices, verified, and
//! refuses a range the archive does not cover contiguously.
//!
//! Retention (see [`crate::forget`]): slices entirely older than the consistency timestamp of the
//! oldest snapshot of their replica set that is kept (`last < C`) are no longer part of any window
//! and are forgotten with it; `prune` keeps every blob a remaining slice uses.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bson::{RawDocument, RawDocumentBuf};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::Repository;
use crate::StorageError;
use crate::crypto::Id;
use crate::error::{RepoError, Result};
use crate::pack::{open_json, seal_json};
use crate::reader::DocumentStream;
use crate::snapshot::{DataStream, Snapshot, Timestamp};
use crate::util::{hostname, now_unix};
use crate::writer::{BlobSink, NoProgress, Progress, StreamWriter};

/// Manifest format version of slices written by this crate.
pub const SLICE_VERSION: u32 = 2;

/// Key prefix of slice manifests.
pub const SLICE_PREFIX: &str = "oplog/";

/// A slice manifest as stored (sealed JSON under `oplog/<id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SliceManifest {
    version: u32,
    replica_set: String,
    first: Timestamp,
    last: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    continues_from: Option<Timestamp>,
    /// `ts` of the last archived entry before a hole, when the follower could not resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gap_after: Option<Timestamp>,
    time: i64,
    host: String,
    data: DataStream,
}

/// A sealed slice: a run of consecutive oplog entries of one replica set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceInfo {
    /// Slice id (BLAKE3 of the manifest plaintext; object `oplog/<id>`).
    pub id: Id,
    /// Replica set name (`setName`).
    pub replica_set: String,
    /// `ts` of the first entry.
    pub first: Timestamp,
    /// `ts` of the last entry.
    pub last: Timestamp,
    /// `ts` of the entry just before `first` in the source oplog (the last entry of the previous
    /// slice, or a base snapshot's consistency timestamp): the slice holds every entry after it.
    pub continues_from: Option<Timestamp>,
    /// Entries missing before this slice: the follower could not find its resume point again.
    pub gap: Option<OplogGap>,
    /// Number of entries.
    pub entries: u64,
    /// Bytes of the entries.
    pub bytes: u64,
    /// BLAKE3 (unkeyed) of the concatenated entries.
    pub content_hash: Id,
    /// Creation time, seconds since the epoch.
    pub time: i64,
    /// Host that wrote the slice.
    pub host: String,
    /// The entries as stored (chunk list).
    pub data: DataStream,
}

impl SliceInfo {
    fn from_manifest(id: Id, m: SliceManifest) -> Self {
        SliceInfo {
            id,
            gap: m.gap_after.map(|after| OplogGap {
                replica_set: m.replica_set.clone(),
                after,
                resumed_at: m.first,
            }),
            replica_set: m.replica_set,
            first: m.first,
            last: m.last,
            continues_from: m.continues_from,
            entries: m.data.documents,
            bytes: m.data.bytes,
            content_hash: m.data.content_hash,
            time: m.time,
            host: m.host,
            data: m.data,
        }
    }

    /// The lowest position `P` ("every entry up to `P` is known") from which this slice continues
    /// without a hole: `continues_from`, or `first` when nothing proves what came before it.
    pub fn covers_from(&self) -> Timestamp {
        self.continues_from.unwrap_or(self.first)
    }

    /// How errors name the slice: `oplog slice <id> (<replica set>)`.
    pub fn label(&self) -> String {
        format!("oplog slice {} ({})", self.id, self.replica_set)
    }
}

/// Entries known to be missing from the archive of a replica set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OplogGap {
    /// Replica set name.
    pub replica_set: String,
    /// `ts` of the last entry archived before the hole.
    pub after: Timestamp,
    /// `ts` of the first entry archived after the hole.
    pub resumed_at: Timestamp,
}

/// A restorable window: any moment in `[from, to]` can be reached from the base snapshot by
/// replaying archived oplog entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PitrWindow {
    /// Replica set name.
    pub replica_set: String,
    /// The snapshot to restore first.
    pub base_snapshot: Id,
    /// The base snapshot's consistency timestamp.
    pub from: Timestamp,
    /// The last timestamp the archive covers contiguously after `from`.
    pub to: Timestamp,
}

/// Restorable windows and known holes of a repository.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PitrTimeline {
    /// One window per base snapshot and replica set, by replica set then `from`.
    pub windows: Vec<PitrWindow>,
    /// Holes in the archive, by replica set then position.
    pub gaps: Vec<OplogGap>,
}

/// Ids of all slice manifests (unsorted).
pub async fn slice_ids(repo: &Repository) -> Result<Vec<Id>> {
    let mut ids = Vec::new();
    for meta in repo.storage.list(SLICE_PREFIX).await? {
        let name = meta.key.trim_start_matches(SLICE_PREFIX);
        let id =
            Id::from_hex(name).ok_or_else(|| RepoError::corrupt(meta.key.clone(), "object name is not a slice id"))?;
        ids.push(id);
    }
    Ok(ids)
}

/// Loads one slice manifest, checking that its content matches its id.
pub async fn load_slice(repo: &Repository, id: &Id) -> Result<SliceInfo> {
    let key = format!("{SLICE_PREFIX}{id}");
    let sealed = match repo.storage.get(&key).await {
        Ok(s) => s,
        Err(StorageError::NotFound { .. }) => {
            return Err(RepoError::corrupt(key, "oplog slice not found"));
        }
        Err(e) => return Err(e.into()),
    };
    let plain = open_json(&repo.keys, &sealed, &key)?;
    if Id::hash(&plain) != *id {
        return Err(RepoError::corrupt(key, "slice manifest does not match its id"));
    }
    let manifest: SliceManifest =
        serde_json::from_slice(&plain).map_err(|e| RepoError::corrupt(&key, e.to_string()))?;
    if manifest.version != SLICE_VERSION {
        return Err(RepoError::corrupt(
            key,
            format!("unsupported slice version {}", manifest.version),
        ));
    }
    if manifest.first > manifest.last || manifest.continues_from.is_some_and(|c| c >= manifest.first) {
        return Err(RepoError::corrupt(key, "slice timestamps are out of order"));
    }
    Ok(SliceInfo::from_manifest(*id, manifest))
}

/// Every slice, sorted by (replica set, first, last, id).
pub async fn list_slices(repo: &Repository) -> Result<Vec<SliceInfo>> {
    let mut out = Vec::new();
    for id in slice_ids(repo).await? {
        out.push(load_slice(repo, &id).await?);
    }
    out.sort_by(|a, b| (&a.replica_set, a.first, a.last, a.id).cmp(&(&b.replica_set, b.first, b.last, b.id)));
    Ok(out)
}

/// The slice of `replica_set` that ends last (where a follower resumes), if any.
pub async fn last_slice(repo: &Repository, replica_set: &str) -> Result<Option<SliceInfo>> {
    Ok(list_slices(repo)
        .await?
        .into_iter()
        .filter(|s| s.replica_set == replica_set)
        .max_by_key(|s| (s.last, s.time)))
}

/// Deletes a slice manifest (its data stays until `prune`).
pub(crate) async fn delete_slice(repo: &Repository, id: &Id) -> Result<()> {
    repo.storage.delete(&format!("{SLICE_PREFIX}{id}")).await?;
    Ok(())
}

/// Where a new slice starts relative to what is already archived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SliceStart {
    /// Its first entry directly follows the entry with this `ts` in the source oplog (found again).
    ContinuesFrom(Timestamp),
    /// The follower could not find the entry with this `ts` again: entries after it are missing.
    GapAfter(Timestamp),
    /// Nothing was archived before (no resume point, no base snapshot).
    Fresh,
}

/// Writes one slice. The caller holds a shared repository lock (see [`crate::lock::Lock`]) so
/// that `prune` does not mistake the packs written before the seal for leftovers.
pub struct SliceWriter {
    repo: Repository,
    replica_set: String,
    start: SliceStart,
    sink: BlobSink,
    stream: StreamWriter,
    first: Option<Timestamp>,
    last: Option<Timestamp>,
    entries: u64,
    bytes: u64,
}

impl std::fmt::Debug for SliceWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SliceWriter")
            .field("replica_set", &self.replica_set)
            .field("start", &self.start)
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

impl SliceWriter {
    /// Starts a slice of `replica_set`.
    pub fn new(repo: &Repository, replica_set: &str, start: SliceStart) -> Self {
        Self::with_progress(repo, replica_set, start, Arc::new(NoProgress))
    }

    /// Starts a slice, reporting bytes and pack uploads to `progress`.
    pub fn with_progress(repo: &Repository, replica_set: &str, start: SliceStart, progress: Arc<dyn Progress>) -> Self {
        SliceWriter {
            repo: repo.clone(),
            replica_set: replica_set.to_owned(),
            start,
            sink: BlobSink::new(repo.clone(), progress),
            stream: StreamWriter::for_documents(repo),
            first: None,
            last: None,
            entries: 0,
            bytes: 0,
        }
    }

    /// Appends one oplog entry; its `ts` must be greater than every `ts` before it.
    pub async fn write_entry(&mut self, entry: &RawDocument) -> Result<()> {
        let ts = entry
            .get_timestamp("ts")
            .map(Timestamp::from)
            .map_err(|e| RepoError::InvalidDocument {
                namespace: format!("{}/oplog", self.replica_set),
                message: format!("oplog entry {} has no timestamp `ts`: {e}", self.entries),
            })?;
        let floor = self.last.or(match self.start {
            SliceStart::ContinuesFrom(t) | SliceStart::GapAfter(t) => Some(t),
            SliceStart::Fresh => None,
        });
        if let Some(floor) = floor
            && ts <= floor
        {
            return Err(RepoError::InvalidDocument {
                namespace: format!("{}/oplog", self.replica_set),
                message: format!("oplog entry {ts} does not come after {floor}"),
            });
        }
        self.first.get_or_insert(ts);
        self.last = Some(ts);
        self.entries += 1;
        self.bytes += entry.as_bytes().len() as u64;
        self.stream.push_document(entry.as_bytes(), &mut self.sink).await
    }

    /// Entries written so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// `ts` of the last entry written, if any.
    pub fn last(&self) -> Option<Timestamp> {
        self.last
    }

    /// Uploads the data, the index, then the manifest (the commit point). An empty slice writes
    /// nothing and returns `None`.
    pub async fn seal(self) -> Result<Option<SliceInfo>> {
        let (Some(first), Some(last)) = (self.first, self.last) else {
            return Ok(None);
        };
        let SliceWriter {
            repo,
            replica_set,
            start,
            mut sink,
            stream,
            ..
        } = self;
        let data = stream.finish(&mut sink).await?;
        sink.finish().await?;
        let (continues_from, gap_after) = match start {
            SliceStart::ContinuesFrom(t) => (Some(t), None),
            SliceStart::GapAfter(t) => (None, Some(t)),
            SliceStart::Fresh => (None, None),
        };
        let manifest = SliceManifest {
            version: SLICE_VERSION,
            replica_set,
            first,
            last,
            continues_from,
            gap_after,
            time: now_unix(),
            host: hostname(),
            data,
        };
        let id = store_manifest(&repo, &manifest).await?;
        Ok(Some(SliceInfo::from_manifest(id, manifest)))
    }
}

/// Stores an already known slice (a copy from another repository) with its chunk list remapped.
pub(crate) async fn save_copied_slice(repo: &Repository, slice: &SliceInfo, data: DataStream) -> Result<Id> {
    let manifest = SliceManifest {
        version: SLICE_VERSION,
        replica_set: slice.replica_set.clone(),
        first: slice.first,
        last: slice.last,
        continues_from: slice.continues_from,
        gap_after: slice.gap.as_ref().map(|g| g.after),
        time: slice.time,
        host: slice.host.clone(),
        data,
    };
    store_manifest(repo, &manifest).await
}

/// Writes a slice manifest (the slice's commit point) under its id, the BLAKE3 of its JSON.
async fn store_manifest(repo: &Repository, manifest: &SliceManifest) -> Result<Id> {
    let json = serde_json::to_vec(manifest).map_err(|e| RepoError::Usage(e.to_string()))?;
    let id = Id::hash(&json);
    repo.storage
        .put(
            &format!("{SLICE_PREFIX}{id}"),
            Bytes::from(seal_json(&repo.keys, &json)?),
        )
        .await?;
    Ok(id)
}

/// Streams the entries of one slice, verified (chunk ids, framing, count, size, content hash).
pub fn slice_entries(repo: &Repository, slice: &SliceInfo) -> DocumentStream {
    DocumentStream::new(
        repo.clone(),
        slice.id,
        format!("{}/oplog slice", slice.replica_set),
        slice.data.clone(),
    )
}

/// Reads a whole slice and checks that its entries are in order and match its first/last `ts`.
pub async fn verify_slice(repo: &Repository, slice: &SliceInfo) -> Result<u64> {
    let damaged = |message: String| RepoError::SliceDamaged {
        slice: slice.id.to_hex(),
        replica_set: slice.replica_set.clone(),
        message,
    };
    let mut stream = slice_entries(repo, slice);
    let mut previous: Option<Timestamp> = None;
    let mut first = None;
    while let Some(doc) = stream.next_document().await.map_err(|e| damaged(e.to_string()))? {
        let ts = entry_ts(&doc).map_err(damaged)?;
        if previous.is_some_and(|p| ts <= p) {
            return Err(damaged(format!("entry {ts} is out of order")));
        }
        first.get_or_insert(ts);
        previous = Some(ts);
    }
    if first != Some(slice.first) || previous != Some(slice.last) {
        return Err(damaged(format!(
            "entries span {first:?}..{previous:?}, manifest says {}..{}",
            slice.first, slice.last
        )));
    }
    Ok(slice.entries)
}

fn entry_ts(doc: &RawDocument) -> std::result::Result<Timestamp, String> {
    doc.get_timestamp("ts")
        .map(Timestamp::from)
        .map_err(|e| format!("entry without a timestamp `ts`: {e}"))
}

/// Which replica set a snapshot member stands for. A member recorded without a name (a backup
/// that did not learn its set name) stands for the only replica set the archive knows, if any.
pub(crate) fn member_sets(snapshot: &Snapshot, archived_sets: &BTreeSet<&str>) -> Vec<String> {
    let mut out = Vec::new();
    for m in &snapshot.members {
        if !m.name.is_empty() {
            out.push(m.name.clone());
        } else if snapshot.members.len() == 1 && archived_sets.len() == 1 {
            out.extend(archived_sets.iter().map(|s| (*s).to_owned()));
        }
    }
    out
}

/// Follows slices from position `from` (every entry up to it is known): returns the slices to read
/// in order and the position reached. Among slices continuing at or before the position, the one
/// reaching furthest is taken, so overlapping slices (two followers) are harmless.
fn chain<'a>(slices: &[&'a SliceInfo], from: Timestamp, upto: Option<Timestamp>) -> (Vec<&'a SliceInfo>, Timestamp) {
    let mut position = from;
    let mut out = Vec::new();
    while upto.is_none_or(|u| position < u) {
        let next = slices
            .iter()
            .filter(|s| s.covers_from() <= position && s.last > position)
            .max_by_key(|s| (s.last, s.id));
        let Some(next) = next else { break };
        out.push(*next);
        position = next.last;
    }
    (out, position)
}

/// Restorable windows (one per base snapshot and replica set) and the holes of the archive.
pub async fn pitr_timeline(repo: &Repository) -> Result<PitrTimeline> {
    let slices = list_slices(repo).await?;
    let snapshots = repo.snapshots().await?;
    Ok(timeline_of(&slices, &snapshots))
}

fn timeline_of(slices: &[SliceInfo], snapshots: &[(Id, Snapshot)]) -> PitrTimeline {
    let mut by_set: BTreeMap<&str, Vec<&SliceInfo>> = BTreeMap::new();
    for s in slices {
        by_set.entry(s.replica_set.as_str()).or_default().push(s);
    }
    let archived: BTreeSet<&str> = by_set.keys().copied().collect();
    let mut timeline = PitrTimeline::default();
    for (id, snap) in snapshots {
        let Some(from) = snap.consistency_ts else { continue };
        for set in member_sets(snap, &archived) {
            let set_slices = by_set.get(set.as_str()).map(Vec::as_slice).unwrap_or_default();
            let (_, to) = chain(set_slices, from, None);
            timeline.windows.push(PitrWindow {
                replica_set: set,
                base_snapshot: *id,
                from,
                to,
            });
        }
    }
    timeline
        .windows
        .sort_by(|a, b| (&a.replica_set, a.from, a.base_snapshot).cmp(&(&b.replica_set, b.from, b.base_snapshot)));
    for (set, set_slices) in &by_set {
        let mut reached: Option<Timestamp> = None;
        for s in set_slices {
            if let Some(gap) = &s.gap {
                timeline.gaps.push(gap.clone());
            } else if let Some(p) = reached
                && s.covers_from() > p
            {
                timeline.gaps.push(OplogGap {
                    replica_set: (*set).to_owned(),
                    after: p,
                    resumed_at: s.first,
                });
            }
            reached = Some(reached.map_or(s.last, |p| p.max(s.last)));
        }
    }
    timeline
}

/// The archived entries of one replica set in a range, read across slices (see [`read_range`]).
#[derive(Debug)]
pub struct OplogRange {
    repo: Repository,
    replica_set: String,
    upto: Timestamp,
    slices: std::vec::IntoIter<SliceInfo>,
    /// The slice being read, its stream and the `ts` of its last entry read.
    current: Option<(SliceInfo, DocumentStream, Option<Timestamp>)>,
    position: Timestamp,
    done: bool,
}

/// Every archived entry of `replica_set` with `after < ts <= upto`, in order, read across slices.
/// Fails at once with [`RepoError::OplogArchive`] when the archive is not contiguous over that
/// range (a gap, or nothing archived), and while reading when a slice fails to verify.
pub async fn read_range(repo: &Repository, replica_set: &str, after: Timestamp, upto: Timestamp) -> Result<OplogRange> {
    let slices = list_slices(repo).await?;
    let set_slices: Vec<&SliceInfo> = slices.iter().filter(|s| s.replica_set == replica_set).collect();
    let (plan, reached) = chain(&set_slices, after, Some(upto));
    if reached < upto {
        let next = set_slices.iter().filter(|s| s.last > reached).map(|s| s.first).min();
        let message = match next {
            _ if set_slices.is_empty() => "nothing is archived".to_owned(),
            Some(resumed) => format!(
                "entries after {reached} are missing (a gap: the archive resumes at {resumed}); {upto} cannot be reached from {after}"
            ),
            None => format!("the archive ends at {reached}; {upto} cannot be reached from {after}"),
        };
        return Err(RepoError::OplogArchive {
            replica_set: replica_set.to_owned(),
            message,
        });
    }
    let plan: Vec<SliceInfo> = plan.into_iter().cloned().collect();
    Ok(OplogRange {
        replica_set: replica_set.to_owned(),
        upto,
        slices: plan.into_iter(),
        current: None,
        position: after,
        done: upto <= after,
        repo: repo.clone(),
    })
}

impl OplogRange {
    /// The next entry, or `None` once every entry up to `upto` was returned.
    pub async fn next_entry(&mut self) -> Result<Option<RawDocumentBuf>> {
        while !self.done {
            if self.current.is_none() {
                let Some(slice) = self.slices.next() else {
                    if self.position < self.upto {
                        return Err(RepoError::OplogArchive {
                            replica_set: self.replica_set.clone(),
                            message: format!(
                                "entries after {} are missing (up to {} was requested)",
                                self.position, self.upto
                            ),
                        });
                    }
                    self.done = true;
                    break;
                };
                let stream = slice_entries(&self.repo, &slice);
                self.current = Some((slice, stream, None));
            }
            let Some((slice, stream, previous)) = &mut self.current else {
                continue;
            };
            let damaged = |message: String| RepoError::SliceDamaged {
                slice: slice.id.to_hex(),
                replica_set: slice.replica_set.clone(),
                message,
            };
            let Some(doc) = stream.next_document().await.map_err(|e| damaged(e.to_string()))? else {
                // Whole slice read and verified: it must have ended where its manifest says.
                if self.position < slice.last {
                    return Err(damaged(format!(
                        "entries end before the manifest's last {}",
                        slice.last
                    )));
                }
                self.current = None;
                continue;
            };
            let ts = entry_ts(&doc).map_err(damaged)?;
            if previous.is_some_and(|p| ts <= p) {
                return Err(damaged(format!("entry {ts} is out of order")));
            }
            *previous = Some(ts);
            if ts <= self.position {
                // Already returned, or before the range: the slice starts earlier than needed.
                continue;
            }
            if ts > slice.last {
                return Err(damaged(format!(
                    "entry {ts} is after the manifest's last {}",
                    slice.last
                )));
            }
            if ts > self.upto {
                self.done = true;
                break;
            }
            self.position = ts;
            return Ok(Some(doc));
        }
        Ok(None)
    }

    /// `ts` of the last entry returned (`after` before the first).
    pub fn position(&self) -> Timestamp {
        self.position
    }
}
