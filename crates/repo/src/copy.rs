//! Copying snapshots between repositories.
//!
//! Blob ids are keyed per repository, so a chunk's id differs between source and target. Copy
//! reads each chunk from the source (verified), computes its id under the target's key, stores it
//! (compressed and sealed with the target's keys) unless the target already has it, and writes a
//! manifest whose chunk lists use the target ids. Everything else in the manifest (time, label,
//! metadata, counts, content hashes, oplog window) is unchanged, so the copy restores the same
//! documents. A snapshot already present in the target (same time, host, label and content
//! hashes) is skipped, so repeating a copy is cheap. Oplog slices are copied the same way
//! ([`copy_slices`]), keeping their manifests (and so the contiguity proofs) unchanged.

use std::collections::HashMap;
use std::sync::Arc;

use crate::Repository;
use crate::crypto::Id;
use crate::error::Result;
use crate::lock::Lock;
use crate::oplog_archive::{self, SliceInfo};
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

async fn remap(
    stream: &mut DataStream,
    source: &Repository,
    sink: &mut BlobSink,
    target: &Repository,
    cache: &mut HashMap<Id, Id>,
) -> Result<()> {
    for chunk in &mut stream.chunks {
        if let Some(mapped) = cache.get(chunk) {
            *chunk = *mapped;
            continue;
        }
        let plain = source.read_blob(chunk).await?;
        let new_id = target.keys.blob_id(&plain);
        if !sink.has(&new_id) {
            sink.add_new(new_id, &plain).await?;
        }
        cache.insert(*chunk, new_id);
        *chunk = new_id;
    }
    Ok(())
}

/// Copies every oplog slice of `source` that `target` lacks (same replica set, first/last `ts` and
/// content hash), so the copy keeps the restorable windows of the source.
pub async fn copy_slices(source: &Repository, target: &Repository) -> Result<Vec<(Id, CopyOutcome)>> {
    let source_lock = Lock::acquire(&source.storage, false).await?;
    let target_lock = Lock::acquire(&target.storage, false).await?;
    let result = run_slices(source, target).await;
    source_lock.release().await?;
    target_lock.release().await?;
    result
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
        remap(&mut data, source, &mut sink, target, &mut cache).await?;
        sink.finish().await?;
        let new_id = oplog_archive::save_copied_slice(target, &slice, data).await?;
        out.push((slice.id, CopyOutcome::Copied(new_id)));
    }
    Ok(out)
}

/// Copies snapshots from `source` to `target`.
pub async fn copy_snapshots(source: &Repository, target: &Repository, ids: &[Id]) -> Result<Vec<(Id, CopyOutcome)>> {
    let source_lock = Lock::acquire(&source.storage, false).await?;
    let target_lock = Lock::acquire(&target.storage, false).await?;
    let result = run(source, target, ids).await;
    source_lock.release().await?;
    target_lock.release().await?;
    result
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
        for member in &mut snap.members {
            for ns in &mut member.namespaces {
                remap(&mut ns.data, source, &mut sink, target, &mut cache).await?;
            }
            if let Some(oplog) = &mut member.oplog {
                remap(&mut oplog.data, source, &mut sink, target, &mut cache).await?;
            }
            for file in &mut member.files {
                if let Some(data) = &mut file.data {
                    remap(data, source, &mut sink, target, &mut cache).await?;
                }
            }
        }
        sink.finish().await?;
        let new_id = target.save_snapshot(&snap).await?;
        out.push((*id, CopyOutcome::Copied(new_id)));
    }
    Ok(out)
}
