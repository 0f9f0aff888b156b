//! Copying snapshots between repositories.
//!
//! Blob ids are keyed per repository, so a chunk's id differs between source and target. Copy
//! reads each chunk from the source (verified), computes its id under the target's key, stores it
//! (compressed and sealed with the target's keys) unless the target already has it, stores new
//! chunk-list blobs listing the target ids, and writes a manifest referring to those lists. Everything else in the manifest (time, label,
//! metadata, counts, content hashes, oplog window) is unchanged, so the copy restores the same
//! documents. A snapshot already present in the target (same time, host, label and content
//! hashes) is skipped, so repeating a copy is cheap. Oplog slices are copied the same way
//! ([`copy_slices`]), keeping their manifests (and so the contiguity proofs) unchanged.

use std::collections::HashMap;
use std::sync::Arc;

use crate::Repository;
use crate::chunk_list::{ListTree, MAX_GROUP, for_each_blob};
use crate::crypto::Id;
use crate::error::{RepoError, Result};
use crate::lock::Lock;
use crate::oplog_archive::{self, SliceInfo};
use crate::pack::BlobKind;
use crate::snapshot::{DataStream, Snapshot};
use crate::writer::{BlobSink, NoProgress};

/// Outcome for one source snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyOutcome {
    /// Written to the target under this id.
    Copied(Id),
    /// The target already had it (under this id).
    AlreadyPresent(Id),
}

fn fingerprint(s: &Snapshot) -> (i64, u32, String, String, Vec<Id>) {
    let mut hashes = Vec::new();
    for m in &s.members {
        hashes.extend(m.namespaces.iter().map(|n| n.data.content_hash));
        hashes.extend(m.oplog.iter().map(|o| o.data.content_hash));
        hashes.extend(m.files.iter().filter_map(|f| f.data.as_ref().map(|d| d.content_hash)));
    }
    (s.time, s.time_nanos, s.host.clone(), s.label.clone(), hashes)
}

/// Re-keys one stream: every chunk under the target's id key (stored unless present), then new
/// chunk-list blobs grouping the new ids (the groups follow the new ids, as a backup's would).
async fn remap(
    stream: &mut DataStream,
    source: &Repository,
    sink: &mut BlobSink,
    cache: &mut HashMap<Id, Id>,
) -> Result<()> {
    let mut chunks = Vec::new();
    for_each_blob(source, stream, None, |id, kind| {
        if kind == BlobKind::Data {
            chunks.push(id);
        }
    })
    .await?;
    let mut lists = ListTree::default();
    for part in chunks.chunks(MAX_GROUP) {
        let uncached: Vec<Id> = part.iter().filter(|c| !cache.contains_key(c)).copied().collect();
        let plaintexts = source.read_blobs(&uncached).await?;
        let blobs: Vec<&[u8]> = plaintexts.iter().map(Vec::as_slice).collect();
        let compression = sink.configured();
        let new_ids = sink.add_batch(&blobs, BlobKind::Data, compression).await?;
        cache.extend(uncached.iter().copied().zip(new_ids));
        let remapped: Vec<Id> = part.iter().map(|c| cache[c]).collect();
        lists.push_chunks(&remapped, sink).await?;
    }
    (stream.chunk_lists, stream.list_levels) = lists.finish(sink).await?;
    Ok(())
}

/// Copies every oplog slice of `source` that `target` lacks (same replica set, first/last `ts` and
/// content hash), so the copy keeps the restorable windows of the source.
pub async fn copy_slices(source: &Repository, target: &Repository) -> Result<Vec<(Id, CopyOutcome)>> {
    with_locks(source, target, run_slices(source, target)).await
}

async fn run_slices(source: &Repository, target: &Repository) -> Result<Vec<(Id, CopyOutcome)>> {
    let key = |s: &SliceInfo| (s.replica_set.clone(), s.first, s.last, s.content_hash);
    let existing: HashMap<_, Id> = oplog_archive::list_slices(target)
        .await?
        .iter()
        .map(|s| (key(s), s.id))
        .collect();
    let mut out = Vec::new();
    let mut cache = HashMap::new();
    for slice in oplog_archive::list_slices(source).await? {
        if let Some(present) = existing.get(&key(&slice)) {
            out.push((slice.id, CopyOutcome::AlreadyPresent(*present)));
            continue;
        }
        let mut sink = BlobSink::new(target.clone(), Arc::new(NoProgress));
        let mut data = slice.data.clone();
        remap(&mut data, source, &mut sink, &mut cache)
            .await
            .map_err(|e| RepoError::Usage(format!("copy {}: {e}", slice.label())))?;
        sink.finish().await?;
        let new_id = oplog_archive::save_copied_slice(target, &slice, data).await?;
        out.push((slice.id, CopyOutcome::Copied(new_id)));
    }
    Ok(out)
}

/// Copies snapshots from `source` to `target`.
pub async fn copy_snapshots(source: &Repository, target: &Repository, ids: &[Id]) -> Result<Vec<(Id, CopyOutcome)>> {
    with_locks(source, target, run(source, target, ids)).await
}

/// Runs `work` under shared locks of both repositories, kept fresh while it runs.
async fn with_locks<T>(source: &Repository, target: &Repository, work: impl Future<Output = Result<T>>) -> Result<T> {
    let source_lock = Lock::acquire(&source.storage, false).await?;
    let target_lock = match Lock::acquire(&target.storage, false).await {
        Ok(lock) => lock,
        Err(e) => {
            source_lock.release().await?;
            return Err(e);
        }
    };
    let ((result, target_released), source_released) = source_lock.hold_during(target_lock.hold_during(work)).await;
    let out = result?;
    target_released?;
    source_released?;
    Ok(out)
}

async fn run(source: &Repository, target: &Repository, ids: &[Id]) -> Result<Vec<(Id, CopyOutcome)>> {
    let existing: HashMap<_, Id> = target
        .snapshots()
        .await?
        .into_iter()
        .map(|(id, s)| (fingerprint(&s), id))
        .collect();
    let mut out = Vec::new();
    let mut cache = HashMap::new();
    for id in ids {
        let mut snap = source.load_snapshot(id).await?;
        if let Some(present) = existing.get(&fingerprint(&snap)) {
            out.push((*id, CopyOutcome::AlreadyPresent(*present)));
            continue;
        }
        let mut sink = BlobSink::new(target.clone(), Arc::new(NoProgress));
        for (name, data) in snap.streams_mut() {
            remap(data, source, &mut sink, &mut cache)
                .await
                .map_err(|e| RepoError::Usage(format!("copy snapshot {id}: {name}: {e}")))?;
        }
        sink.finish().await?;
        let new_id = target.save_snapshot(&snap).await?;
        out.push((*id, CopyOutcome::Copied(new_id)));
    }
    Ok(out)
}
