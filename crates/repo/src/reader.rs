//! Reading snapshots back: namespaces and their raw documents, verified.
//!
//! Chunks are read 32 chunk-list blobs at a time: the lists' chunks are fetched with as few ranged
//! reads as their places in the packs allow and decoded on every core. Every chunk list and chunk
//! is checked against its keyed id when read (see [`crate::pack::decode_blob`]), the
//! document framing is checked as chunks are joined (documents may span chunk boundaries), and
//! at the end of a stream the count, byte size and BLAKE3 content hash must match the manifest.
//! Any mismatch is reported as [`RepoError::NamespaceDamaged`] naming the snapshot and namespace.

use bson::RawDocumentBuf;

use crate::Repository;
use crate::crypto::Id;
use crate::error::{RepoError, Result};
use std::collections::VecDeque;

use crate::chunk_list::{ChunkListCursor, read_chunk_lists};
use crate::snapshot::{DataStream, FileNode, Member, NamespaceEntry, Snapshot, member_label};

/// Largest document accepted: MongoDB's 16 MiB BSON limit plus the 16 KiB internal headroom.
pub const MAX_DOCUMENT_SIZE: usize = 16 * 1024 * 1024 + 16 * 1024;

/// A snapshot opened for reading.
#[derive(Debug, Clone)]
pub struct SnapshotReader {
    repo: Repository,
    id: Id,
    snapshot: Snapshot,
}

impl SnapshotReader {
    /// Opens a snapshot by id.
    pub async fn open(repo: &Repository, id: &Id) -> Result<Self> {
        let snapshot = repo.load_snapshot(id).await?;
        Ok(SnapshotReader {
            repo: repo.clone(),
            id: *id,
            snapshot,
        })
    }

    /// Snapshot id.
    pub fn id(&self) -> &Id {
        &self.id
    }

    /// The manifest.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Members (replica sets).
    pub fn members(&self) -> &[Member] {
        &self.snapshot.members
    }

    /// Finds a namespace (`db.collection`) in any member; with several members pass `member/db.collection`.
    pub fn find_namespace(&self, name: &str) -> Option<(&Member, &NamespaceEntry)> {
        let (member, ns) = match name.split_once('/') {
            Some((m, ns)) => (Some(m), ns),
            None => (None, name),
        };
        self.snapshot
            .members
            .iter()
            .filter(|m| member.is_none_or(|want| m.name == want))
            .flat_map(|m| m.namespaces.iter().map(move |n| (m, n)))
            .find(|(_, n)| n.name() == ns)
    }

    fn label(member: &Member, what: &str) -> String {
        member_label(&member.name, what)
    }

    /// Streams the documents of a namespace.
    pub fn documents(&self, member: &Member, entry: &NamespaceEntry) -> DocumentStream {
        DocumentStream::new(
            self.repo.clone(),
            self.id,
            Self::label(member, &entry.name()),
            entry.data.clone(),
        )
    }

    /// Reads a regular file of a member's file tree, verifying every chunk, the size and the
    /// content hash; calls `sink` with each piece of contents in order.
    pub async fn read_file(&self, member: &Member, node: &FileNode, mut sink: impl FnMut(&[u8])) -> Result<u64> {
        let name = Self::label(member, &format!("file {}", node.path));
        let damaged = |message: String| RepoError::NamespaceDamaged {
            snapshot: self.id.to_hex(),
            namespace: name.clone(),
            message,
        };
        let data = node.data.as_ref().ok_or_else(|| damaged("not a regular file".into()))?;
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        let mut chunks = ChunkSource::new(data);
        while let Some(chunk) = chunks.next(&self.repo).await.map_err(|e| damaged(e.to_string()))? {
            hasher.update(&chunk);
            size += chunk.len() as u64;
            sink(&chunk);
        }
        if size != data.bytes {
            return Err(damaged(format!("{size} bytes read, manifest says {}", data.bytes)));
        }
        if Id(*hasher.finalize().as_bytes()) != data.content_hash {
            return Err(damaged("content hash does not match the manifest".into()));
        }
        Ok(size)
    }

    /// Streams a member's oplog entries (empty when the member has no oplog).
    pub fn oplog(&self, member: &Member) -> DocumentStream {
        let data = member
            .oplog
            .as_ref()
            .map(|o| o.data.clone())
            .unwrap_or_else(|| DataStream {
                content_hash: Id(*blake3::hash(b"").as_bytes()),
                ..DataStream::default()
            });
        DocumentStream::new(self.repo.clone(), self.id, Self::label(member, "oplog"), data)
    }
}

/// Documents of one namespace, decoded chunk by chunk.
#[derive(Debug)]
pub struct DocumentStream {
    repo: Repository,
    snapshot: Id,
    name: String,
    data: DataStream,
    chunks: ChunkSource,
    buf: Vec<u8>,
    pos: usize,
    hasher: blake3::Hasher,
    documents: u64,
    bytes: u64,
    done: bool,
}

impl DocumentStream {
    pub(crate) fn new(repo: Repository, snapshot: Id, name: String, data: DataStream) -> Self {
        DocumentStream {
            repo,
            snapshot,
            name,
            chunks: ChunkSource::new(&data),
            data,
            buf: Vec::new(),
            pos: 0,
            hasher: blake3::Hasher::new(),
            documents: 0,
            bytes: 0,
            done: false,
        }
    }

    /// Namespace label used in errors (`member/db.collection`).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn damaged(&self, message: impl Into<String>) -> RepoError {
        RepoError::NamespaceDamaged {
            snapshot: self.snapshot.to_hex(),
            namespace: self.name.clone(),
            message: message.into(),
        }
    }

    /// Ensures at least `n` unread bytes are buffered; false at the end of the chunks.
    async fn fill(&mut self, n: usize) -> Result<bool> {
        while self.buf.len() - self.pos < n {
            let chunk = match self.chunks.next(&self.repo).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return Ok(false),
                Err(e) => return Err(self.damaged(e.to_string())),
            };
            self.buf.drain(..self.pos);
            self.pos = 0;
            self.buf.extend_from_slice(&chunk);
        }
        Ok(true)
    }

    /// The next document, or `None` after the last one (once every check has passed).
    pub async fn next_document(&mut self) -> Result<Option<RawDocumentBuf>> {
        if self.done {
            return Ok(None);
        }
        if !self.fill(4).await? {
            if self.buf.len() > self.pos {
                return Err(self.damaged(format!(
                    "{} trailing bytes after the last document",
                    self.buf.len() - self.pos
                )));
            }
            self.done = true;
            self.verify_end()?;
            return Ok(None);
        }
        let mut len_bytes = [0u8; 4];
        len_bytes.copy_from_slice(&self.buf[self.pos..self.pos + 4]);
        let len = i32::from_le_bytes(len_bytes);
        let len = usize::try_from(len)
            .ok()
            .filter(|l| (5..=MAX_DOCUMENT_SIZE).contains(l))
            .ok_or_else(|| {
                self.damaged(format!(
                    "invalid document length {len} after document {}",
                    self.documents
                ))
            })?;
        if !self.fill(len).await? {
            return Err(self.damaged(format!("document {} is truncated", self.documents)));
        }
        let bytes = &self.buf[self.pos..self.pos + len];
        let doc = RawDocumentBuf::from_bytes(bytes.to_vec())
            .map_err(|e| self.damaged(format!("document {} is not valid BSON: {e}", self.documents)))?;
        self.hasher.update(bytes);
        self.pos += len;
        self.documents += 1;
        self.bytes += len as u64;
        Ok(Some(doc))
    }

    fn verify_end(&self) -> Result<()> {
        if self.documents != self.data.documents {
            return Err(self.damaged(format!(
                "{} documents read, manifest says {}",
                self.documents, self.data.documents
            )));
        }
        if self.bytes != self.data.bytes {
            return Err(self.damaged(format!("{} bytes read, manifest says {}", self.bytes, self.data.bytes)));
        }
        if Id(*self.hasher.finalize().as_bytes()) != self.data.content_hash {
            return Err(self.damaged("content hash does not match the manifest"));
        }
        Ok(())
    }

    /// Reads to the end, checking everything; returns the document count.
    pub async fn verify(mut self) -> Result<u64> {
        while self.next_document().await?.is_some() {}
        Ok(self.documents)
    }
}

/// A stream's chunks in order, read a group of chunk lists at a time: the lists with one ranged
/// read (a batch's lists lie together in a pack), then their chunks with as few as their places
/// allow, so an object store sees reads of about a MiB rather than one per chunk.
#[derive(Debug)]
struct ChunkSource {
    lists: ChunkListCursor,
    ready: VecDeque<Vec<u8>>,
}

/// Chunk lists read together (about 16 chunks each).
const LISTS_PER_READ: usize = 32;

impl ChunkSource {
    fn new(data: &DataStream) -> Self {
        ChunkSource {
            lists: ChunkListCursor::new(data),
            ready: VecDeque::new(),
        }
    }

    /// The next chunk's plaintext.
    async fn next(&mut self, repo: &Repository) -> Result<Option<Vec<u8>>> {
        if self.ready.is_empty() && !self.lists.is_empty() {
            let lists = self.lists.next_lists(repo, LISTS_PER_READ).await?;
            // Errors name the blob at fault (list or chunk); the caller names the stream.
            let chunks: Vec<Id> = read_chunk_lists(repo, &lists).await?.into_iter().flatten().collect();
            self.ready = repo.read_blobs(&chunks).await?.into();
        }
        Ok(self.ready.pop_front())
    }
}
