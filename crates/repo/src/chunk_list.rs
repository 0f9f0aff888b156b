//! Chunk lists: a stream's chunk ids stored as blobs that deduplicate themselves.
//!
//! A stream of a few GiB cut into chunks of a few KiB has hundreds of thousands of chunk ids. Written
//! inline in every manifest they would cost more than the data an unchanged database adds, so the
//! manifest holds only the ids of *chunk-list blobs* ([`DataStream::chunk_lists`]), restic's tree idea
//! applied to one stream. A chunk-list blob is the concatenation of up to [`MAX_GROUP`] chunk ids
//! (32 bytes each), stored like any other blob (compressed, sealed, keyed id, kind `chunk_list` in
//! the pack header and index). Groups are cut by content: a group ends after a chunk id whose
//! first four bytes, read as a little-endian integer, are a multiple of [`AVERAGE_GROUP`]. Chunk
//! ids are keyed hashes, so that happens at random with probability 1/16, yet for the same ids at
//! the same places: an unchanged stream yields the same groups (stored once), and a changed chunk
//! dirties only the group holding it.
//!
//! A large stream has many chunk lists (one per ~32 KiB of data), so lists are grouped the same way
//! into lists of lists, level upon level, until at most [`MAX_TOP`] ids remain: those are what the
//! manifest records ([`DataStream::chunk_lists`], with [`DataStream::list_levels`] levels of lists
//! above the chunk lists). A manifest thus stays a few KiB per namespace whatever its size, and an
//! unchanged stream stores no new list at any level. Streams small enough to need no upper level
//! (at most [`MAX_TOP`] chunk lists) are recorded as before the upper levels existed.
//!
//! `ListTree` builds the levels as chunk ids arrive (memory bounded by [`MAX_TOP`] ids per
//! level), `ChunkListCursor` reads a stream's chunk lists back in order, and [`for_each_blob`] is
//! the one walker of everything a stream references; check, prune and copy go through it.

use std::collections::{HashSet, VecDeque};

use crate::Repository;
use crate::compression::Compression;
use crate::crypto::Id;
use crate::error::{RepoError, Result};
use crate::pack::{BlobKind, pack_key};
use crate::snapshot::DataStream;
use crate::writer::BlobSink;

/// Most list ids a stream's record holds; more are grouped into a list of lists.
pub const MAX_TOP: usize = 64;

/// Average number of chunk ids per chunk-list blob.
pub const AVERAGE_GROUP: u32 = 16;
/// Most chunk ids in one chunk-list blob.
pub const MAX_GROUP: usize = 256;
const ID_LEN: usize = 32;

/// Groups a stream's chunk ids into chunk-list blobs.
#[derive(Debug, Default)]
pub(crate) struct ChunkListBuilder {
    current: Vec<u8>,
}

impl ChunkListBuilder {
    /// Appends a chunk id; returns a finished group's plaintext when this id ends one.
    pub(crate) fn push(&mut self, id: &Id) -> Option<Vec<u8>> {
        self.current.extend_from_slice(&id.0);
        let mut first = [0u8; 4];
        first.copy_from_slice(&id.0[..4]);
        let boundary = u32::from_le_bytes(first).is_multiple_of(AVERAGE_GROUP);
        (boundary || self.current.len() >= MAX_GROUP * ID_LEN).then(|| std::mem::take(&mut self.current))
    }

    /// The last, incomplete group, if any.
    pub(crate) fn finish(&mut self) -> Option<Vec<u8>> {
        (!self.current.is_empty()).then(|| std::mem::take(&mut self.current))
    }
}

/// One level of a [`ListTree`].
#[derive(Debug, Default)]
struct TreeLevel {
    groups: ChunkListBuilder,
    /// Ids of the lists stored at this level, while they may still be the top (at most
    /// [`MAX_TOP`]); once there are more, they go up a level as they come.
    stored: Vec<Id>,
    overflowed: bool,
}

/// Groups a stream's chunk ids into chunk lists, and those into lists of lists as needed, storing
/// every list blob through the sink as it closes (see the module documentation).
#[derive(Debug, Default)]
pub(crate) struct ListTree {
    levels: Vec<TreeLevel>,
}

impl ListTree {
    fn level(&mut self, level: usize) -> &mut TreeLevel {
        if self.levels.len() <= level {
            self.levels.resize_with(level + 1, TreeLevel::default);
        }
        &mut self.levels[level]
    }

    /// Appends chunk ids.
    pub(crate) async fn push_chunks(&mut self, chunks: &[Id], sink: &mut BlobSink) -> Result<()> {
        self.push(0, chunks.to_vec(), sink).await
    }

    /// Feeds ids into `level`'s groups, stores the groups that close, and feeds their ids upward.
    async fn push(&mut self, mut level: usize, mut ids: Vec<Id>, sink: &mut BlobSink) -> Result<()> {
        while !ids.is_empty() {
            let groups: Vec<Vec<u8>> = {
                let groups = &mut self.level(level).groups;
                ids.iter().filter_map(|id| groups.push(id)).collect()
            };
            ids = self.store(level, groups, sink).await?;
            level += 1;
        }
        Ok(())
    }

    /// Stores lists of `level`; returns the ids to feed to the level above.
    async fn store(&mut self, level: usize, groups: Vec<Vec<u8>>, sink: &mut BlobSink) -> Result<Vec<Id>> {
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let slices: Vec<&[u8]> = groups.iter().map(Vec::as_slice).collect();
        // Ids are random bytes: compressing them never pays.
        let ids = sink
            .add_batch(&slices, BlobKind::ChunkList, Compression::Stored)
            .await?;
        let this = self.level(level);
        if this.overflowed {
            return Ok(ids);
        }
        this.stored.extend(ids);
        if this.stored.len() > MAX_TOP {
            this.overflowed = true;
            return Ok(std::mem::take(&mut this.stored));
        }
        Ok(Vec::new())
    }

    /// Stores the last lists of every level; returns the top level's ids and how many levels of
    /// lists are above the chunk lists.
    pub(crate) async fn finish(mut self, sink: &mut BlobSink) -> Result<(Vec<Id>, u32)> {
        let mut level = 0;
        loop {
            let last: Vec<Vec<u8>> = self.level(level).groups.finish().into_iter().collect();
            let up = self.store(level, last, sink).await?;
            self.push(level + 1, up, sink).await?;
            let this = self.level(level);
            if !this.overflowed {
                let levels = u32::try_from(level).map_err(|_| RepoError::Usage("list tree too deep".into()))?;
                return Ok((std::mem::take(&mut this.stored), levels));
            }
            level += 1;
        }
    }
}

/// Reads a stream's chunk-list ids in stream order, descending its upper levels as needed.
#[derive(Debug)]
pub(crate) struct ChunkListCursor {
    /// Lists still to read, in stream order, with their level (0: a chunk list).
    pending: VecDeque<(Id, u32)>,
}

impl ChunkListCursor {
    pub(crate) fn new(data: &DataStream) -> Self {
        ChunkListCursor {
            pending: data.chunk_lists.iter().map(|id| (*id, data.list_levels)).collect(),
        }
    }

    /// Whether every chunk list was returned.
    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The next chunk lists (at most `max`, at least one unless the stream has no more).
    pub(crate) async fn next_lists(&mut self, repo: &Repository, max: usize) -> Result<Vec<Id>> {
        while let Some(&(list, level)) = self.pending.front()
            && level > 0
        {
            self.pending.pop_front();
            for child in read_chunk_list(repo, &list).await?.into_iter().rev() {
                self.pending.push_front((child, level - 1));
            }
        }
        let mut lists = Vec::new();
        while lists.len() < max
            && let Some(&(list, 0)) = self.pending.front()
        {
            self.pending.pop_front();
            lists.push(list);
        }
        Ok(lists)
    }
}

/// Parses a chunk-list blob's plaintext.
pub fn decode_chunk_list(plaintext: &[u8]) -> std::result::Result<Vec<Id>, String> {
    if plaintext.is_empty() || !plaintext.len().is_multiple_of(ID_LEN) || plaintext.len() > MAX_GROUP * ID_LEN {
        return Err(format!(
            "{} bytes is not a list of 1 to {MAX_GROUP} chunk ids",
            plaintext.len()
        ));
    }
    Ok(plaintext
        .chunks_exact(ID_LEN)
        .map(|c| {
            let mut id = [0u8; ID_LEN];
            id.copy_from_slice(c);
            Id(id)
        })
        .collect())
}

/// Reads and verifies one chunk-list blob; the index must list it as a chunk list.
pub async fn read_chunk_list(repo: &Repository, list: &Id) -> Result<Vec<Id>> {
    let mut lists = read_chunk_lists(repo, std::slice::from_ref(list)).await?;
    lists.pop().ok_or_else(|| RepoError::Usage("no chunk list read".into()))
}

/// Reads and verifies several chunk-list blobs at once (neighbours in a pack share one read).
pub async fn read_chunk_lists(repo: &Repository, lists: &[Id]) -> Result<Vec<Vec<Id>>> {
    for list in lists {
        if let Some(loc) = repo.locate(list)
            && loc.entry.kind != BlobKind::ChunkList
        {
            return Err(RepoError::corrupt(
                format!("{} (blob {list})", pack_key(&loc.pack)),
                "indexed as a data chunk, referenced as a chunk list",
            ));
        }
    }
    let plaintexts = repo.read_blobs(lists).await?;
    lists
        .iter()
        .zip(plaintexts)
        .map(|(list, plaintext)| {
            decode_chunk_list(&plaintext).map_err(|e| RepoError::corrupt(format!("chunk list {list}"), e))
        })
        .collect()
}

/// Calls `visit` with every blob `data` references, in stream order: each chunk-list blob, then
/// the chunks it lists. With `visited`, the chunks of a chunk list already in the set are not
/// visited again (the list itself still is), so walking many snapshots reads each list once.
/// Fails on the first chunk list that is missing or damaged (the caller names the stream).
///
/// Lists of lists come before the lists they list; a list of lists already visited is not
/// descended again (its lists were visited then).
pub async fn for_each_blob(
    repo: &Repository,
    data: &DataStream,
    mut visited: Option<&mut HashSet<Id>>,
    mut visit: impl FnMut(Id, BlobKind),
) -> Result<()> {
    let mut pending: VecDeque<(Id, u32)> = data.chunk_lists.iter().map(|id| (*id, data.list_levels)).collect();
    while let Some((list, level)) = pending.pop_front() {
        visit(list, BlobKind::ChunkList);
        if visited.as_deref().is_some_and(|seen| seen.contains(&list)) {
            continue;
        }
        let listed = read_chunk_list(repo, &list).await?;
        if level == 0 {
            for chunk in listed {
                visit(chunk, BlobKind::Data);
            }
        } else {
            for child in listed.into_iter().rev() {
                pending.push_front((child, level - 1));
            }
        }
        // Only a list read whole counts as visited: a damaged one fails every walk through it.
        if let Some(seen) = visited.as_deref_mut() {
            seen.insert(list);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_content_defined_and_bounded() {
        let ids: Vec<Id> = (0..5000u32).map(|i| Id::hash(&i.to_le_bytes())).collect();
        let group = |ids: &[Id]| {
            let mut b = ChunkListBuilder::default();
            let mut out: Vec<Vec<u8>> = ids.iter().filter_map(|id| b.push(id)).collect();
            out.extend(b.finish());
            out
        };
        let groups = group(&ids);
        let mean = ids.len() / groups.len();
        assert!((8..32).contains(&mean), "mean group {mean}");
        assert!(groups.iter().all(|g| g.len() <= MAX_GROUP * ID_LEN));
        let decoded: Vec<Id> = groups.iter().flat_map(|g| decode_chunk_list(g).unwrap()).collect();
        assert_eq!(decoded, ids);
        // Changing one id changes one group (or two, when it was a boundary).
        let mut changed = ids.clone();
        changed[2500] = Id::hash(b"other");
        let other = group(&changed);
        let kept = other.iter().filter(|g| groups.contains(g)).count();
        assert!(kept + 2 >= groups.len(), "{kept} of {} groups kept", groups.len());
        assert!(decode_chunk_list(&[0; 33]).is_err());
        assert!(decode_chunk_list(&[]).is_err());
    }
}
