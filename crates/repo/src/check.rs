//! Repository verification.
//!
//! The structural check loads every snapshot, oplog slice and index object, reads every chunk-list
//! blob they refer to (verifying each against its id), and verifies that every chunk those lists
//! name is indexed and that every indexed pack exists with the indexed size. Packs
//! present in storage but in no index (left by an interrupted backup) are reported as notes:
//! they are harmless and `prune` removes them.
//!
//! With [`CheckOptions::read_data`] every pack is downloaded, its name checked against the BLAKE3
//! of its bytes, its header decrypted and compared with the index, and every blob decrypted,
//! decompressed and checked against its keyed id; then every namespace, oplog and file of every
//! snapshot, and every oplog slice (entries in order, first/last `ts` as in its manifest), is streamed and its count, size and content hash compared with the manifest. With
//! [`CheckOptions::read_data_subset`] `(n, m)` only the packs whose position in key order is
//! `n - 1` modulo `m` are read, so `m` runs with `n = 1..=m` cover the repository once.

use std::collections::{BTreeMap, HashSet};

use crate::Repository;
use crate::chunk_list::{decode_chunk_list, for_each_blob};
use crate::crypto::Id;
use crate::error::{RepoError, Result};
use crate::lock::Lock;
use crate::oplog_archive;
use crate::pack::{BlobKind, blob_bytes, decode_frame_ranges, pack_key, read_header};
use crate::reader::SnapshotReader;

/// What to verify beyond structure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckOptions {
    /// Read and verify all packs and all namespace content hashes.
    pub read_data: bool,
    /// Read only subset `n` of `m` of the packs (1-based `n`).
    pub read_data_subset: Option<(u32, u32)>,
}

/// Result of a check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Problems found (the repository is damaged when not empty).
    pub errors: Vec<String>,
    /// Harmless findings (unreferenced packs, unused blobs).
    pub notes: Vec<String>,
    /// Snapshots checked.
    pub snapshots: u64,
    /// Oplog slices checked.
    pub slices: u64,
    /// Packs read and verified.
    pub packs_read: u64,
    /// Blobs verified.
    pub blobs_verified: u64,
    /// Namespaces (and oplog slices) whose content hash was verified.
    pub namespaces_verified: u64,
}

impl CheckReport {
    /// Whether no error was found.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Checks a repository (takes a shared lock).
pub async fn check(repo: &Repository, options: CheckOptions) -> Result<CheckReport> {
    if let Some((n, m)) = options.read_data_subset
        && (m == 0 || n == 0 || n > m)
    {
        return Err(RepoError::InvalidOption {
            option: "read-data-subset",
            message: format!("{n}/{m}: need 1 <= n <= m"),
        });
    }
    let lock = Lock::acquire(&repo.storage, false).await?;
    let (result, released) = lock.hold_during(run(repo, options)).await;
    let report = result?;
    released?;
    Ok(report)
}

async fn run(repo: &Repository, options: CheckOptions) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    repo.reload_index().await?;
    // Index: pack id -> (size, blobs).
    let mut packs: BTreeMap<Id, (u64, Vec<crate::pack::PackEntry>)> = BTreeMap::new();
    for (key, file) in repo.index_files().await? {
        for pack in file.packs {
            if let Some((size, _)) = packs.get(&pack.id)
                && *size != pack.size
            {
                report
                    .errors
                    .push(format!("{key}: pack {} listed with two sizes", pack.id));
            }
            packs.insert(pack.id, (pack.size, pack.blobs));
        }
    }
    let stored: BTreeMap<String, u64> = repo
        .storage
        .list("data/")
        .await?
        .into_iter()
        .map(|m| (m.key, m.size))
        .collect();
    for (id, (size, _)) in &packs {
        match stored.get(&pack_key(id)) {
            None => report.errors.push(format!(
                "pack {} is in the index but missing from storage",
                pack_key(id)
            )),
            Some(s) if s != size => {
                report
                    .errors
                    .push(format!("pack {} has size {s}, index says {size}", pack_key(id)));
            }
            Some(_) => {}
        }
    }
    let indexed: HashSet<String> = packs.keys().map(pack_key).collect();
    for key in stored.keys() {
        if !indexed.contains(key) {
            report.notes.push(format!(
                "pack {key} is not in any index (unreferenced; prune removes it)"
            ));
        }
    }

    let mut snapshots = Vec::new();
    for id in repo.snapshot_ids().await? {
        match repo.load_snapshot(&id).await {
            Ok(s) => snapshots.push((id, s)),
            Err(e) => report.errors.push(format!("snapshot {id}: {e}")),
        }
    }
    report.snapshots = snapshots.len() as u64;
    // Chunk lists are read (and verified) here; each list once over all snapshots and slices.
    let mut lists_read = HashSet::new();
    for (id, snap) in &snapshots {
        for (name, data) in snap.streams() {
            check_stream(
                repo,
                data,
                &format!("snapshot {id}: "),
                &name,
                &mut lists_read,
                &mut report,
            )
            .await;
        }
    }

    let mut slices = Vec::new();
    for id in oplog_archive::slice_ids(repo).await? {
        match oplog_archive::load_slice(repo, &id).await {
            Ok(s) => slices.push(s),
            Err(e) => report.errors.push(format!("oplog slice {id}: {e}")),
        }
    }
    report.slices = slices.len() as u64;
    for slice in &slices {
        check_stream(repo, &slice.data, "", &slice.label(), &mut lists_read, &mut report).await;
    }

    let subset = if options.read_data {
        Some((1, 1))
    } else {
        options.read_data_subset
    };
    if let Some((n, m)) = subset {
        for (position, (id, (_, entries))) in packs.iter().enumerate() {
            if (position as u64) % u64::from(m) != u64::from(n - 1) {
                continue;
            }
            let key = pack_key(id);
            if !stored.contains_key(&key) {
                continue;
            }
            report.packs_read += 1;
            if let Err(e) = verify_pack(repo, id, entries, &mut report).await {
                report.errors.push(e.to_string());
            }
        }
    }
    if options.read_data {
        for slice in &slices {
            match oplog_archive::verify_slice(repo, slice).await {
                Ok(_) => report.namespaces_verified += 1,
                Err(e) => report.errors.push(e.to_string()),
            }
        }
        for (id, _) in &snapshots {
            let reader = SnapshotReader::open(repo, id).await?;
            for member in reader.members() {
                for ns in &member.namespaces {
                    match reader.documents(member, ns).verify().await {
                        Ok(_) => report.namespaces_verified += 1,
                        Err(e) => report.errors.push(e.to_string()),
                    }
                }
                if member.oplog.is_some() {
                    match reader.oplog(member).verify().await {
                        Ok(_) => report.namespaces_verified += 1,
                        Err(e) => report.errors.push(e.to_string()),
                    }
                }
                for file in member.files.iter().filter(|f| f.data.is_some()) {
                    if let Err(e) = reader.read_file(member, file, |_| {}).await {
                        report.errors.push(e.to_string());
                    }
                }
            }
        }
    }
    Ok(report)
}

/// Walks one stream's blobs (see [`for_each_blob`]): reports a chunk list that cannot be read and
/// every chunk missing from the index, as `{context}...` naming `referrer`.
async fn check_stream(
    repo: &Repository,
    data: &crate::snapshot::DataStream,
    context: &str,
    referrer: &str,
    lists_read: &mut HashSet<Id>,
    report: &mut CheckReport,
) {
    let mut seen = HashSet::new();
    let mut missing = Vec::new();
    let walked = for_each_blob(repo, data, Some(lists_read), |blob, kind| {
        // A missing chunk list fails the walk itself, with its own error.
        if kind == BlobKind::Data && seen.insert(blob) && !repo.has_blob(&blob) {
            missing.push(blob);
        }
    })
    .await;
    for blob in missing {
        let error = RepoError::MissingBlob {
            blob: blob.to_hex(),
            referrer: referrer.to_owned(),
        };
        report.errors.push(format!("{context}{error}"));
    }
    if let Err(e) = walked {
        report.errors.push(format!("{context}{referrer}: {e}"));
    }
}

async fn verify_pack(
    repo: &Repository,
    id: &Id,
    indexed: &[crate::pack::PackEntry],
    report: &mut CheckReport,
) -> Result<()> {
    let key = pack_key(id);
    let bytes = repo.storage.get(&key).await?;
    if Id::hash(&bytes) != *id {
        return Err(RepoError::corrupt(&key, "content does not match the pack id"));
    }
    let header = read_header(&repo.keys, &bytes, &key)?;
    if header != indexed {
        report.errors.push(format!("{key}: header differs from the index"));
    }
    for frame in header.chunk_by(|a, b| a.same_frame(b)) {
        let decoded =
            blob_bytes(&bytes, &frame[0], &key).and_then(|stored| decode_frame_ranges(&repo.keys, stored, frame, id));
        let decoded = match decoded {
            Ok(decoded) => decoded,
            Err(e) => {
                report.errors.push(e.to_string());
                continue;
            }
        };
        for (entry, range) in frame.iter().zip(decoded.ranges) {
            if entry.kind == BlobKind::ChunkList
                && let Err(e) = decode_chunk_list(&decoded.plaintext[range])
            {
                report.errors.push(format!("{key} (chunk list {}): {e}", entry.id));
                continue;
            }
            report.blobs_verified += 1;
        }
    }
    Ok(())
}
