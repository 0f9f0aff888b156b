//! Recovery: rebuild the state of a dbpath from its checkpoint and journal.
//!
//! [`recover`] reads what is on disk (the checkpoint `CURRENT` names, then every journal record after it, in
//! LSN order) without needing an engine, so offline readers can use it as well as the server. It stops at
//! the first torn or corrupt record: that record and everything after it were never acknowledged as durable.
//! With `repair` (the server's start-up) that tail is cut off the files, so new records follow the last good
//! one. [`load_into`] then applies the result to an empty [`Engine`]: each checkpointed collection becomes
//! one batch (create, indexes, documents in natural order), each journal record its own batch.

use std::path::{Path, PathBuf};

use super::checkpoint::{CheckpointData, read_current};
use super::codec::decode_batch;
use super::journal::{JOURNAL_DIR, ScanEnd, list_segments, read_segment};
use super::{StorageError, StorageResult, sync_dir};
use crate::engine::{Engine, Mutation, WriteBatch};

/// One journal record to replay.
#[derive(Debug, Clone)]
pub struct RecoveredBatch {
    /// Its LSN.
    pub lsn: u64,
    /// Segment file it came from.
    pub path: PathBuf,
    /// Offset of the record in that file.
    pub offset: u64,
    /// The decoded batch.
    pub batch: WriteBatch,
}

/// Everything needed to rebuild the state.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    /// The checkpoint, if any.
    pub checkpoint: Option<CheckpointData>,
    /// Journal records after the checkpoint, in LSN order.
    pub batches: Vec<RecoveredBatch>,
    /// LSN of the last batch in the recovered state (0 for an empty dbpath).
    pub last_lsn: u64,
    /// Journal segments left on disk: `(first lsn, path)`.
    pub segments: Vec<(u64, PathBuf)>,
    /// Description of the discarded journal tail, if the journal did not end cleanly.
    pub discarded: Option<String>,
}

/// Reads the state of `dbpath`. With `repair`, a torn or corrupt journal tail is cut off the files (and
/// segments after it deleted); without, files are only read.
pub fn recover(dbpath: &Path, repair: bool) -> StorageResult<Recovered> {
    let checkpoint = read_current(dbpath)?;
    let checkpoint_lsn = checkpoint.as_ref().map_or(0, |c| c.lsn);
    let journal_dir = dbpath.join(JOURNAL_DIR);
    let mut segments = Vec::new();
    let mut batches = Vec::new();
    let mut discarded: Option<String> = None;
    let mut next_expected: Option<u64> = None;
    let mut last_lsn = checkpoint_lsn;
    let mut touched_dir = false;
    for (first, path) in list_segments(&journal_dir)? {
        if discarded.is_some() {
            // Everything after the crash point goes.
            if repair {
                std::fs::remove_file(&path).map_err(StorageError::io("delete", &path))?;
                touched_dir = true;
            }
            continue;
        }
        match next_expected {
            None if first > checkpoint_lsn.saturating_add(1) => {
                return Err(StorageError::corrupt(
                    &path,
                    0,
                    format!(
                        "journal starts at lsn {first} but the checkpoint only covers lsn {checkpoint_lsn}: \
                         records in between are missing"
                    ),
                ));
            }
            Some(expected) if first != expected => {
                discarded = Some(format!(
                    "segment {} starts at lsn {first}, expected {expected}; it and later segments were ignored",
                    path.display()
                ));
                if repair {
                    std::fs::remove_file(&path).map_err(StorageError::io("delete", &path))?;
                    touched_dir = true;
                }
                continue;
            }
            _ => {}
        }
        let contents = read_segment(&path, first)?;
        let count = u64::try_from(contents.records.len()).unwrap_or(u64::MAX);
        next_expected = Some(first.saturating_add(count));
        for (lsn, offset, payload) in contents.records {
            if lsn <= checkpoint_lsn {
                continue;
            }
            let batch = decode_batch(&payload).map_err(|e| {
                StorageError::corrupt(
                    &path,
                    offset,
                    format!("journal record lsn {lsn} cannot be decoded: {e}"),
                )
            })?;
            last_lsn = lsn;
            batches.push(RecoveredBatch {
                lsn,
                path: path.clone(),
                offset,
                batch,
            });
        }
        match contents.end {
            ScanEnd::Clean => segments.push((first, path)),
            ScanEnd::Torn { offset } | ScanEnd::Corrupt { offset, .. } => {
                let why = match &contents.end {
                    ScanEnd::Corrupt { reason, .. } => reason.clone(),
                    _ => "record cut short".to_string(),
                };
                discarded = Some(format!(
                    "journal {} ends at offset {offset} ({why}); {} trailing bytes discarded",
                    path.display(),
                    contents.file_len.saturating_sub(contents.valid_len)
                ));
                if repair {
                    if contents.valid_len == 0 {
                        std::fs::remove_file(&path).map_err(StorageError::io("delete", &path))?;
                        touched_dir = true;
                        continue;
                    }
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(StorageError::io("open", &path))?;
                    f.set_len(contents.valid_len)
                        .map_err(StorageError::io("truncate", &path))?;
                    f.sync_all().map_err(StorageError::io("fsync", &path))?;
                }
                segments.push((first, path));
            }
        }
    }
    if touched_dir {
        sync_dir(&journal_dir)?;
    }
    Ok(Recovered {
        checkpoint,
        batches,
        last_lsn,
        segments,
        discarded,
    })
}

/// Whether an index spec is the one every collection gets at creation (`_id_`, or a clustered index).
fn is_implicit_index(spec: &bson::Document) -> bool {
    spec.get_str("name") == Ok("_id_") || spec.get_bool("clustered") == Ok(true)
}

/// Applies a recovered state to an engine that is still empty (and has no durability hook yet).
pub fn load_into(engine: &Engine, recovered: Recovered) -> StorageResult<()> {
    if let Some(cp) = recovered.checkpoint {
        let dir = cp.dir;
        for image in cp.collections {
            let ns = image.meta.ns;
            let mut mutations = Vec::with_capacity(image.docs.len() + image.meta.indexes.len() + 1);
            mutations.push(Mutation::CreateCollection {
                ns: ns.clone(),
                uuid: image.meta.uuid,
                options: image.meta.options,
            });
            for spec in image.meta.indexes {
                if !is_implicit_index(&spec) {
                    mutations.push(Mutation::CreateIndex { ns: ns.clone(), spec });
                }
            }
            for doc in image.docs {
                mutations.push(Mutation::Insert { ns: ns.clone(), doc });
            }
            engine
                .commit(WriteBatch { mutations }, false)
                .map_err(|e| StorageError::Apply {
                    what: format!("collection {ns} of checkpoint {}", dir.display()),
                    reason: e.to_string(),
                })?;
        }
    }
    for b in recovered.batches {
        engine.commit(b.batch, false).map_err(|e| StorageError::Apply {
            what: format!(
                "journal record lsn {} ({} at offset {})",
                b.lsn,
                b.path.display(),
                b.offset
            ),
            reason: e.to_string(),
        })?;
    }
    Ok(())
}

/// Loads the state of a dbpath no server is running on into a new in-memory engine (for offline readers
/// such as a `--dbpath` dump). Nothing on disk is changed; a torn journal tail is ignored. Fails with
/// [`StorageError::DbPathInUse`] while a server owns the dbpath, and while loading keeps a shared lock so no
/// server can start meanwhile.
pub fn load_offline(dbpath: &Path) -> StorageResult<Engine> {
    let _hold = super::lockfile::lock_shared(dbpath)?;
    let recovered = recover(dbpath, false)?;
    if let Some(d) = &recovered.discarded {
        tracing::warn!("journal of {}: {d}", dbpath.display());
    }
    let engine = Engine::new();
    load_into(&engine, recovered)?;
    Ok(engine)
}
