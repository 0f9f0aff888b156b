//! Reading snapshots back: namespaces and their raw documents, verified.
//!
//! Chunks are read ahead of the consumer by a task of each stream, 32 chunk-list blobs at a time:
//! the lists' chunks are fetched with as few ranged reads as their places in the packs allow,
//! decoded on every core and joined into batches of about 2 MiB, in which documents are parsed
//! without another copy. Every chunk list and chunk
//! is checked against its keyed id when read (see [`crate::pack::decode_blob`]), the
//! document framing is checked as chunks are joined (documents may span chunk boundaries), and
//! at the end of a stream the count, byte size and BLAKE3 content hash must match the manifest.
//! Any mismatch is reported as [`RepoError::NamespaceDamaged`] naming the snapshot and namespace.

use bson::{RawDocument, RawDocumentBuf};

use crate::Repository;
use crate::crypto::Id;
use crate::error::{RepoError, Result};

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
        let mut size = 0u64;
        let mut chunks = ChunkSource::new(self.repo.clone(), data);
        while let Some(batch) = chunks.next_batch().await.map_err(|e| damaged(e.to_string()))? {
            size += batch.len() as u64;
            sink(&batch);
        }
        if size != data.bytes {
            return Err(damaged(format!("{size} bytes read, manifest says {}", data.bytes)));
        }
        if chunks.content_hash() != Some(data.content_hash) {
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
    snapshot: Id,
    name: String,
    data: DataStream,
    chunks: ChunkSource,
    /// The batch being parsed, or (while a document spans two batches) that document's bytes.
    buf: Vec<u8>,
    pos: usize,
    /// The rest of a batch whose first bytes completed a spanning document.
    pending: Option<(Vec<u8>, usize)>,
    documents: u64,
    bytes: u64,
    done: bool,
}

impl DocumentStream {
    pub(crate) fn new(repo: Repository, snapshot: Id, name: String, data: DataStream) -> Self {
        DocumentStream {
            snapshot,
            name,
            chunks: ChunkSource::new(repo, &data),
            data,
            buf: Vec::new(),
            pos: 0,
            pending: None,
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

    /// Ensures the next `n` unread bytes are contiguous in `buf`; false at the end of the chunks.
    /// A batch is parsed where it arrived; only a document that spans two batches is copied.
    async fn fill(&mut self, n: usize) -> Result<bool> {
        while self.buf.len() - self.pos < n {
            let (next, start) = match self.pending.take() {
                Some(rest) => rest,
                None => match self.chunks.next_batch().await {
                    Ok(Some(batch)) => (batch, 0),
                    Ok(None) => return Ok(false),
                    Err(e) => return Err(self.damaged(e.to_string())),
                },
            };
            if self.pos == self.buf.len() {
                self.buf = next;
                self.pos = start;
                continue;
            }
            let missing = n - (self.buf.len() - self.pos);
            let take = missing.min(next.len() - start);
            let mut joined = Vec::with_capacity(n.max(self.buf.len() - self.pos + take));
            joined.extend_from_slice(&self.buf[self.pos..]);
            joined.extend_from_slice(&next[start..start + take]);
            self.buf = joined;
            self.pos = 0;
            if start + take < next.len() {
                self.pending = Some((next, start + take));
            }
        }
        Ok(true)
    }

    /// The next document, or `None` after the last one (once every check has passed).
    pub async fn next_document(&mut self) -> Result<Option<RawDocumentBuf>> {
        Ok(self.next_document_ref().await?.map(ToOwned::to_owned))
    }

    /// The next document, borrowed from the stream's buffer (no copy), or `None` after the last
    /// one (once every check has passed).
    pub async fn next_document_ref(&mut self) -> Result<Option<&RawDocument>> {
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
        let (start, number) = (self.pos, self.documents);
        self.pos += len;
        self.documents += 1;
        self.bytes += len as u64;
        match RawDocument::from_bytes(&self.buf[start..start + len]) {
            Ok(doc) => Ok(Some(doc)),
            Err(e) => Err(self.damaged(format!("document {number} is not valid BSON: {e}"))),
        }
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
        if self.chunks.content_hash() != Some(self.data.content_hash) {
            return Err(self.damaged("content hash does not match the manifest"));
        }
        Ok(())
    }

    /// Reads to the end, checking everything; returns the document count.
    pub async fn verify(mut self) -> Result<u64> {
        while self.next_document_ref().await?.is_some() {}
        Ok(self.documents)
    }
}

/// A stream's plaintext in order, in batches of whole chunks, read ahead by a task of its own.
///
/// The task reads a group of chunk lists at a time (a group's lists lie together in a pack, so
/// usually with one ranged read), then their chunks with as few ranged reads as their places
/// allow, decoded on every core, a batch of about [`BATCH_BYTES`] at a time; it joins each batch
/// into one buffer and adds it to the content hash (BLAKE3 is several times faster over a
/// megabyte than over one document at a time). [`READS_IN_FLIGHT`] batches are fetched and
/// decoded at once, and up to [`BATCHES_AHEAD`] hashed ones wait for the reader, so fetching,
/// decoding and hashing overlap with each other and with whatever consumes the documents.
#[derive(Debug)]
struct ChunkSource {
    state: SourceState,
    content_hash: Option<Id>,
}

#[derive(Debug)]
enum SourceState {
    /// Not started (the task starts at the first read, inside the caller's runtime).
    Idle(Repository, ChunkListCursor),
    Running(tokio::sync::mpsc::Receiver<Result<Piece>>, tokio::task::AbortHandle),
    Finished,
}

/// What the read-ahead task sends.
#[derive(Debug)]
enum Piece {
    /// Plaintext of consecutive chunks.
    Batch(Vec<u8>),
    /// After the last batch: BLAKE3 of all of them.
    End(Id),
}

/// Chunk lists read together (about 16 chunks each).
const LISTS_PER_READ: usize = 32;
/// Plaintext of one batch (a chunk larger than this is a batch by itself).
const BATCH_BYTES: u64 = 2 * 1024 * 1024;
/// Batches decoded and hashed ahead of the consumer (besides those in [`READS_IN_FLIGHT`]).
const BATCHES_AHEAD: usize = 2;
/// Batches of one stream being read and decoded at once: the next ones are fetched and decoded
/// while the one before is hashed and handed over (one at a time, a stream's reads, its decoding
/// and its hashing took turns, and a restore's largest collection ran alone at the end).
const READS_IN_FLIGHT: usize = 3;

impl ChunkSource {
    fn new(repo: Repository, data: &DataStream) -> Self {
        ChunkSource {
            state: SourceState::Idle(repo, ChunkListCursor::new(data)),
            content_hash: None,
        }
    }

    /// BLAKE3 of the whole stream, once [`ChunkSource::next_batch`] returned `None`.
    fn content_hash(&self) -> Option<Id> {
        self.content_hash
    }

    /// The next batch of plaintext, or `None` after the last one.
    async fn next_batch(&mut self) -> Result<Option<Vec<u8>>> {
        if let SourceState::Idle(..) = self.state {
            let SourceState::Idle(repo, lists) = std::mem::replace(&mut self.state, SourceState::Finished) else {
                unreachable!("checked above")
            };
            let (tx, rx) = tokio::sync::mpsc::channel(BATCHES_AHEAD);
            let task = tokio::spawn(async move {
                if let Err(e) = read_ahead(&repo, lists, &tx).await {
                    // The receiver may be gone already; nobody is left to tell then.
                    let _ = tx.send(Err(e)).await;
                }
            });
            self.state = SourceState::Running(rx, task.abort_handle());
        }
        let SourceState::Running(rx, _) = &mut self.state else {
            return Ok(None);
        };
        let piece = rx.recv().await;
        match piece {
            Some(Ok(Piece::Batch(batch))) => Ok(Some(batch)),
            Some(Ok(Piece::End(hash))) => {
                self.content_hash = Some(hash);
                self.state = SourceState::Finished;
                Ok(None)
            }
            Some(Err(e)) => {
                self.state = SourceState::Finished;
                Err(e)
            }
            None => {
                self.state = SourceState::Finished;
                Err(RepoError::Usage("the chunk read-ahead task stopped".into()))
            }
        }
    }
}

impl Drop for ChunkSource {
    fn drop(&mut self) {
        if let SourceState::Running(_, task) = &self.state {
            task.abort();
        }
    }
}

/// Hashes and hands over a batch once read; `false` once the reader is gone.
async fn deliver(
    read: tokio::task::JoinHandle<Result<Vec<u8>>>,
    hasher: &mut blake3::Hasher,
    tx: &tokio::sync::mpsc::Sender<Result<Piece>>,
) -> Result<bool> {
    let batch = read
        .await
        .map_err(|e| RepoError::Usage(format!("chunk read task failed: {e}")))??;
    hasher.update(&batch);
    Ok(tx.send(Ok(Piece::Batch(batch))).await.is_ok())
}

/// The read-ahead task of a [`ChunkSource`]: sends every batch, then the content hash. Returns
/// early, without error, when the reader is gone.
async fn read_ahead(
    repo: &Repository,
    mut lists: ChunkListCursor,
    tx: &tokio::sync::mpsc::Sender<Result<Piece>>,
) -> Result<()> {
    let mut hasher = blake3::Hasher::new();
    let mut reads: std::collections::VecDeque<tokio::task::JoinHandle<Result<Vec<u8>>>> =
        std::collections::VecDeque::new();
    while !lists.is_empty() {
        let group = lists.next_lists(repo, LISTS_PER_READ).await?;
        // Errors name the blob at fault (list or chunk); the reader names the stream.
        let chunks: Vec<Id> = read_chunk_lists(repo, &group).await?.into_iter().flatten().collect();
        let mut start = 0;
        while start < chunks.len() {
            let mut end = start;
            let mut bytes = 0u64;
            while end < chunks.len() && (end == start || bytes < BATCH_BYTES) {
                bytes += repo.locate(&chunks[end]).map_or(0, |l| l.entry.raw_length);
                end += 1;
            }
            let ids = chunks[start..end].to_vec();
            let source = repo.clone();
            reads.push_back(tokio::spawn(async move {
                let mut batch = Vec::with_capacity(usize::try_from(bytes).unwrap_or(0));
                source.read_blobs_into(&ids, &mut batch).await?;
                Ok(batch)
            }));
            if reads.len() >= READS_IN_FLIGHT
                && let Some(oldest) = reads.pop_front()
                && !deliver(oldest, &mut hasher, tx).await?
            {
                return Ok(());
            }
            start = end;
        }
    }
    while let Some(oldest) = reads.pop_front() {
        if !deliver(oldest, &mut hasher, tx).await? {
            return Ok(());
        }
    }
    let _ = tx.send(Ok(Piece::End(Id(*hasher.finalize().as_bytes())))).await;
    Ok(())
}
