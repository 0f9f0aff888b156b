//! Writing snapshots: chunking, deduplication, packing, and the final commit.
//!
//! A backup streams each namespace's raw documents into a [`NamespaceWriter`]. They are cut into
//! content-defined chunks between documents (file contents by FastCDC; see [`crate::chunker`]),
//! so changing a document changes only the chunk holding it and the rest deduplicate against
//! earlier snapshots. Each chunk's id is the keyed BLAKE3 of its plaintext; chunks already in the
//! index (or written earlier in this snapshot) are only referenced. New chunks are put together
//! into frames of up to `FRAME_BYTES` (one zstd frame, sealed once: chunks of a few KiB
//! compress far better and far faster together), appended to a pack, which is uploaded when it
//! reaches the configured size. Chunks are handled in batches of 1 MiB whose hashing,
//! compression and sealing run on every core while the next batch is read.
//! A stream's chunk ids are grouped into chunk-list blobs ([`crate::chunk_list`]) stored the same
//! way, and the manifest records only those.
//!
//! Index objects are written as the backup goes (every [`INDEX_EVERY_BLOBS`] new blobs in
//! uploaded packs, or a quarter of the index), so new blobs wait in the compact in-memory index.
//! [`SnapshotWriter::commit`] uploads the last pack, then the index object of the packs not in
//! one yet, and finally the manifest. Dropping the writer without committing leaves uploaded
//! packs that no manifest refers to (the ones already indexed are reused by the next backup);
//! they are harmless and `prune` deletes those no snapshot needs.

use std::sync::Arc;

use bson::RawDocument;
use bytes::Bytes;

use crate::Repository;
use crate::chunk_list::ListTree;
use crate::chunker::{ByteCutter, DocumentCutter};
use crate::compression::{Chooser, Compression, Probe};
use crate::crypto::{Id, IdSet};
use crate::error::{RepoError, Result};
use crate::lock::Lock;
use crate::pack::{BlobKind, IndexPack, PackBuilder, PackBytes, encode_blob_into, pack_key};
use crate::snapshot::{
    DataStream, FileKind, FileNode, MANIFEST_VERSION, Member, NamespaceEntry, OplogEntry, OplogWindow, Snapshot,
    SnapshotStats, Timestamp,
};
use crate::util::{hostname, now_subsec_nanos, now_unix, parallel_map};

/// Receives progress events; the default methods do nothing.
pub trait Progress: Send + Sync {
    /// A namespace started.
    fn namespace_started(&self, _name: &str) {}
    /// Plaintext bytes were consumed.
    fn bytes(&self, _plaintext: u64) {}
    /// A pack was uploaded.
    fn pack_uploaded(&self, _bytes: u64) {}
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;
impl Progress for NoProgress {}

/// Collects new blobs into packs and uploads them; shared by backups, copies and prune.
pub(crate) struct BlobSink {
    repo: Repository,
    pack: PackBuilder,
    /// Blobs this sink stored that the repository's index does not have yet.
    pending: IdSet,
    /// Uploaded packs not in an index object yet.
    packs: Vec<IndexPack>,
    /// Blobs of `packs`.
    unindexed_blobs: usize,
    /// At least this many blobs go into an index object written as the sink goes.
    index_every: usize,
    /// Whether an index object is written whenever [`BlobSink::index_due`] says (backups,
    /// copies), or only one at the end (prune, which moves blobs the index still places in the
    /// packs it deletes).
    index_as_it_goes: bool,
    /// Pack uploads in flight (at most [`UPLOADS_IN_FLIGHT`]): chunking, compression and sealing
    /// go on while packs are written. Indexes are written only after every upload completed.
    uploads: tokio::task::JoinSet<Result<IndexPack>>,
    /// Pack buffers back from their uploads, reused: filling a fresh buffer costs a page fault per
    /// 4 KiB.
    spare: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    pub(crate) stats: SnapshotStats,
    progress: Arc<dyn Progress>,
}

/// A finished pack lent to the storage; its buffer goes back to the sink's spare buffers when the
/// storage drops it.
struct ReturningPack {
    pack: Option<PackBytes>,
    spare: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl AsRef<[u8]> for ReturningPack {
    fn as_ref(&self) -> &[u8] {
        self.pack.as_ref().map_or(&[], PackBytes::bytes)
    }
}

impl Drop for ReturningPack {
    fn drop(&mut self) {
        if let Some(pack) = self.pack.take() {
            self.spare
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(pack.into_buffer());
        }
    }
}

/// Room reserved for a pack: the target size, one large chunk (a pack is finished once it reaches
/// the target) and its header (about 64 bytes per blob, so at most 1/8 of the target with the
/// smallest chunks), so that finishing a pack never moves it.
fn pack_capacity(repo: &Repository) -> usize {
    let target = usize::try_from(repo.config.pack_size).unwrap_or(usize::MAX);
    target.saturating_add(target / 8).saturating_add(256 * 1024)
}

/// New blobs after which a sink writes an index object for the packs uploaded so far (about
/// 512 MiB of 2 KiB chunks), or a quarter of the repository's blobs if that is more: the blobs'
/// index entries then wait in memory as compact index records rather than as pack entries and
/// set members (about 110 bytes per blob), so a first backup of a large database does not hold
/// every new blob three times over until its end; merging into the in-memory index costs about
/// its size each time, so the quarter keeps that linear overall.
const INDEX_EVERY_BLOBS: usize = 1 << 18;

/// Pack uploads a sink runs concurrently with its caller.
const UPLOADS_IN_FLIGHT: usize = 2;

/// Plaintext bytes gathered into one frame (one zstd frame, sealed once) when new blobs are
/// stored: compression and sealing cost per frame, and blobs of a few KiB compress far better
/// together (field names and values repeat across documents).
pub(crate) const FRAME_BYTES: usize = 64 * 1024;

/// Buffers of encoded frames, given back once copied into their pack. Frames are encoded on the
/// pool's threads and copied into packs on the backup's: with a fresh buffer per frame, the
/// allocator kept handing out new memory, whose pages the kernel clears on first touch.
static FRAME_BUFFERS: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
/// Frame buffers kept at most (about 80 KiB each).
const POOLED_FRAME_BUFFERS: usize = 128;

fn take_frame_buffer() -> Vec<u8> {
    FRAME_BUFFERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .pop()
        .unwrap_or_default()
}

fn give_back_frame_buffer(buffer: Vec<u8>) {
    let mut pool = FRAME_BUFFERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if pool.len() < POOLED_FRAME_BUFFERS && buffer.capacity() <= 2 * FRAME_BYTES {
        pool.push(buffer);
    }
}

/// New blobs of a batch encoded together: one sealed frame and its blobs, in order.
struct Frame {
    /// The sealed frame.
    encoded: Vec<u8>,
    /// The blobs it holds: their position in the batch and in the frame's plaintext.
    members: Vec<(usize, u64)>,
}

/// A batch of blobs once hashed and encoded: every blob's id, and frames holding those the
/// repository lacked.
struct Prepared {
    ids: Vec<Id>,
    frames: Vec<Frame>,
    /// Sum of the measurements taken (see [`Chooser`]).
    probe: Probe,
    /// [`BlobIndex::generation`](crate::index::BlobIndex) when the blobs were looked up.
    index_generation: u64,
}

impl BlobSink {
    pub(crate) fn new(repo: Repository, progress: Arc<dyn Progress>) -> Self {
        BlobSink {
            pack: PackBuilder::with_capacity(pack_capacity(&repo)),
            repo,
            pending: IdSet::default(),
            packs: Vec::new(),
            unindexed_blobs: 0,
            index_every: INDEX_EVERY_BLOBS,
            index_as_it_goes: true,
            uploads: tokio::task::JoinSet::new(),
            spare: Arc::default(),
            stats: SnapshotStats::default(),
            progress,
        }
    }

    /// A sink for prune, which moves blobs out of packs it deletes: one index object at the end,
    /// and blobs this sink stored are told apart from indexed ones by itself alone.
    pub(crate) fn for_moving(repo: Repository) -> Self {
        let mut sink = Self::new(repo, Arc::new(NoProgress));
        sink.index_as_it_goes = false;
        sink
    }

    /// Stores the blobs the repository does not have yet, made as `compression` says; returns
    /// every blob's id, in order.
    ///
    /// Hashing, compression and sealing run on all cores; only blobs absent from the index and
    /// from this sink are encoded. Appending to packs stays sequential, so pack contents follow
    /// stream order.
    pub(crate) async fn add_batch(
        &mut self,
        blobs: &[&[u8]],
        kind: BlobKind,
        compression: Compression,
    ) -> Result<Vec<Id>> {
        let prepared = prepare(&self.repo, None, blobs, &[], compression, None, Stored::Skip)?;
        self.add_prepared(blobs, prepared, kind).await
    }

    /// Stores every blob of `blobs` that this sink has not stored yet, the repository's index
    /// notwithstanding (prune moves blobs that are indexed in the packs it deletes).
    pub(crate) async fn add_batch_again(&mut self, blobs: &[&[u8]], kind: BlobKind) -> Result<Vec<Id>> {
        let prepared = prepare(&self.repo, None, blobs, &[], self.configured(), None, Stored::Keep)?;
        self.add_prepared(blobs, prepared, kind).await
    }

    /// The sequential half of [`BlobSink::add_batch`], for batches made by [`prepare`]: a blob
    /// outside the frames was in the index then (the index only grows); one in a frame may have
    /// been stored by this sink meanwhile, and is then left out of the frame's entries (a frame
    /// none of whose blobs is left is not stored).
    async fn add_prepared(&mut self, blobs: &[&[u8]], prepared: Prepared, kind: BlobKind) -> Result<Vec<Id>> {
        let Prepared {
            ids,
            frames,
            index_generation,
            ..
        } = prepared;
        let mut stored = vec![false; blobs.len()];
        let mut entries = Vec::new();
        let mut indexed = Vec::new();
        for frame in frames {
            entries.clear();
            // Blobs this sink stored leave `pending` once an index object has them (which may
            // happen between two frames of this batch, as packs fill): if one was written since
            // the batch was looked up, the frame's blobs are looked up again.
            indexed.clear();
            self.repo.with_index(|index| {
                if self.index_as_it_goes && index.generation() != index_generation {
                    indexed.extend(frame.members.iter().map(|&(i, _)| index.contains(&ids[i])));
                }
            });
            for (k, &(i, inner_offset)) in frame.members.iter().enumerate() {
                let in_index = indexed.get(k).copied().unwrap_or(false);
                if !in_index && self.pending.insert(ids[i]) {
                    stored[i] = true;
                    entries.push((ids[i], kind, inner_offset, blobs[i].len() as u64));
                }
            }
            if !entries.is_empty() {
                self.pack.add_frame(&frame.encoded, &entries);
            }
            give_back_frame_buffer(frame.encoded);
            if entries.is_empty() {
                continue;
            }
            self.stats.new_blobs += entries.len() as u64;
            if self.pack.len() as u64 >= self.repo.config.pack_size {
                self.flush().await?;
            }
        }
        // Stream bytes count chunks only: chunk lists show in `new_blobs` and `added_bytes`.
        if kind == BlobKind::Data {
            for (plaintext, stored) in blobs.iter().zip(stored) {
                let len = plaintext.len() as u64;
                self.stats.total_bytes += len;
                if stored {
                    self.stats.new_bytes += len;
                } else {
                    self.stats.deduplicated_bytes += len;
                }
            }
        }
        Ok(ids)
    }

    /// The repository's configured compression.
    pub(crate) fn configured(&self) -> Compression {
        Compression::Level(self.repo.config.compression_level)
    }

    async fn flush(&mut self) -> Result<()> {
        if self.pack.is_empty() {
            return Ok(());
        }
        let reused = self
            .spare
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        let next = match reused {
            Some(buffer) => PackBuilder::with_buffer(buffer),
            None => PackBuilder::with_capacity(pack_capacity(&self.repo)),
        };
        let pack = std::mem::replace(&mut self.pack, next);
        while self.uploads.len() >= UPLOADS_IN_FLIGHT {
            self.join_upload().await?;
        }
        let storage = self.repo.storage.clone();
        let progress = self.progress.clone();
        let keys = self.repo.keys.clone();
        let spare = self.spare.clone();
        self.uploads.spawn(async move {
            // Header, sealing and the pack's hash off the task that reads the stream.
            let (pack, index) = tokio::task::spawn_blocking(move || pack.finish(&keys))
                .await
                .map_err(|e| RepoError::Usage(format!("pack finishing task failed: {e}")))??;
            let key = pack_key(&index.id);
            let len = pack.bytes().len() as u64;
            // No copy: the storage reads the pack where it was built, and the buffer comes back
            // for the next pack once the storage lets go of it.
            storage
                .put(
                    &key,
                    Bytes::from_owner(ReturningPack {
                        pack: Some(pack),
                        spare,
                    }),
                )
                .await?;
            progress.pack_uploaded(len);
            Ok(index)
        });
        Ok(())
    }

    /// Waits for one pack upload and records the pack.
    async fn join_upload(&mut self) -> Result<()> {
        match self.uploads.join_next().await {
            Some(Ok(result)) => {
                let pack = result?;
                self.stats.added_bytes += pack.size;
                self.unindexed_blobs += pack.blobs.len();
                self.packs.push(pack);
                if self.index_as_it_goes && self.index_due() {
                    self.write_index().await?;
                }
                Ok(())
            }
            Some(Err(e)) => Err(RepoError::Usage(format!("pack upload task failed: {e}"))),
            None => Ok(()),
        }
    }

    /// Waits for every pack upload.
    async fn drain_uploads(&mut self) -> Result<()> {
        while !self.uploads.is_empty() {
            self.join_upload().await?;
        }
        Ok(())
    }

    /// Whether enough blobs wait for an index object (see [`INDEX_EVERY_BLOBS`]).
    fn index_due(&self) -> bool {
        let indexed = self.repo.with_index(crate::index::BlobIndex::len);
        self.unindexed_blobs >= self.index_every.max(indexed / 4)
    }

    /// Writes an index object for the uploaded packs, which the in-memory index then holds.
    async fn write_index(&mut self) -> Result<()> {
        if self.packs.is_empty() {
            return Ok(());
        }
        let packs = std::mem::take(&mut self.packs);
        self.unindexed_blobs = 0;
        // Nothing adds blobs before the index object is written (this sink is borrowed for
        // it), and a failure to write it ends the snapshot.
        for blob in packs.iter().flat_map(|p| &p.blobs) {
            self.pending.remove(&blob.id);
        }
        self.repo.write_index(packs).await?;
        self.pending.shrink_to_fit();
        Ok(())
    }

    /// Uploads the last pack and writes the index object of the packs not in one yet.
    pub(crate) async fn finish(mut self) -> Result<SnapshotStats> {
        self.flush().await?;
        self.drain_uploads().await?;
        self.write_index().await?;
        Ok(self.stats)
    }
}

/// Blobs hashed together by one [`crate::crypto::MasterKeys::blob_ids`] call: a whole batch of
/// 2 KiB chunks. The last, partial BLAKE3 chunks of blobs are hashed in groups of equal length
/// (up to 16 kinds), so only hundreds of blobs fill the 16 lanes of AVX-512; batches in flight
/// keep the cores busy instead (64 per call: 1.19 s for an unchanged 1 GiB backup; 1,024: 1.11 s).
const IDS_PER_CALL: usize = 1024;

/// The ids of `blobs`, in order, hashed [`IDS_PER_CALL`] at a time (on every core when
/// `parallel`); `backing` is the buffer they are slices of, if one.
fn blob_ids(repo: &Repository, backing: Option<&[u8]>, blobs: &[&[u8]], parallel: bool) -> Result<Vec<Id>> {
    let groups: Vec<&[&[u8]]> = blobs.chunks(IDS_PER_CALL).collect();
    let ids = parallel_map(&groups, parallel, |group| Ok(repo.keys.blob_ids(group, backing)))?;
    Ok(ids.into_iter().flatten().collect())
}

/// Whether [`prepare`] encodes blobs the repository's index already has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    /// Only blobs absent from the index are encoded (backups).
    Skip,
    /// Every blob is encoded (prune, moving blobs out of packs it deletes).
    Keep,
}

/// Hashes `blobs` and encodes those to store (see [`Stored`]) into frames of about
/// [`FRAME_BYTES`] of plaintext, blobs in stream order, as `compression` says (`backing`, when
/// the blobs are slices of one buffer, saves copying them together). With `probe_level`,
/// the frames holding a blob whose `probes` flag is set are also measured (see [`Chooser`]).
/// Hashing and encoding run on every core once the batch is large enough.
fn prepare(
    repo: &Repository,
    backing: Option<&[u8]>,
    blobs: &[&[u8]],
    probes: &[bool],
    compression: Compression,
    probe_level: Option<i32>,
    stored: Stored,
) -> Result<Prepared> {
    let bytes: usize = blobs.iter().map(|b| b.len()).sum();
    let parallel = bytes >= PARALLEL_MIN_BYTES;
    let ids = blob_ids(repo, backing, blobs, parallel)?;
    // Frames: the blobs to store, consecutive ones together up to the frame size.
    let mut plans: Vec<(Vec<usize>, bool)> = Vec::new();
    let mut open_bytes = 0usize;
    let index_generation = repo.with_index(|index| {
        for (i, (blob, id)) in blobs.iter().zip(&ids).enumerate() {
            if stored == Stored::Skip && index.contains(id) {
                continue;
            }
            let probe = probes.get(i).copied().unwrap_or(false);
            match plans.last_mut() {
                Some((members, probed)) if open_bytes + blob.len() <= FRAME_BYTES => {
                    members.push(i);
                    *probed |= probe;
                    open_bytes += blob.len();
                }
                _ => {
                    plans.push((vec![i], probe));
                    open_bytes = blob.len();
                }
            }
        }
        index.generation()
    });
    let encoded = parallel_map(&plans, parallel, |(members, probed)| {
        encode_frame(
            repo,
            backing,
            blobs,
            members,
            compression,
            probe_level.filter(|_| *probed),
        )
    })?;
    let mut frames = Vec::with_capacity(encoded.len());
    let mut probe = Probe::default();
    for (frame, measured) in encoded {
        frames.push(frame);
        probe += measured;
    }
    Ok(Prepared {
        ids,
        frames,
        probe,
        index_generation,
    })
}

/// Seals the frame of `blobs[members]` (compressed as `compression` says) and, with
/// `probe_level`, measures its plaintext.
fn encode_frame(
    repo: &Repository,
    backing: Option<&[u8]>,
    blobs: &[&[u8]],
    members: &[usize],
    compression: Compression,
    probe_level: Option<i32>,
) -> Result<(Frame, Probe)> {
    let mut inner = Vec::with_capacity(members.len());
    let mut offset = 0u64;
    for &i in members {
        inner.push((i, offset));
        offset += blobs[i].len() as u64;
    }
    let plaintext = frame_plaintext(backing, blobs, members);
    let probe = match probe_level {
        Some(level) => Probe::measure(&plaintext, level)?,
        None => Probe::default(),
    };
    let encoded = encode_blob_into(&repo.keys, &plaintext, compression, take_frame_buffer())?;
    Ok((
        Frame {
            encoded,
            members: inner,
        },
        probe,
    ))
}

/// The plaintext of a frame holding `blobs[members]`: borrowed when they lie one after the other
/// in `backing` (the chunks of a batch, unless deduplicated chunks separate them), else joined.
fn frame_plaintext<'a>(backing: Option<&'a [u8]>, blobs: &[&'a [u8]], members: &[usize]) -> std::borrow::Cow<'a, [u8]> {
    use std::borrow::Cow;
    if let [only] = members {
        return Cow::Borrowed(blobs[*only]);
    }
    if let Some(backing) = backing {
        // Where each member starts in `backing`, if it lies inside it.
        let base = backing.as_ptr() as usize;
        let start_of = |blob: &[u8]| {
            let start = (blob.as_ptr() as usize).checked_sub(base)?;
            (start + blob.len() <= backing.len()).then_some(start)
        };
        let first = members.first().and_then(|&i| start_of(blobs[i]));
        let mut end = first;
        for &i in members {
            end = match (end, start_of(blobs[i])) {
                (Some(end), Some(start)) if start == end => Some(start + blobs[i].len()),
                _ => None,
            };
        }
        if let (Some(first), Some(end)) = (first, end) {
            return Cow::Borrowed(&backing[first..end]);
        }
    }
    let mut joined = Vec::with_capacity(members.iter().map(|&i| blobs[i].len()).sum());
    for &i in members {
        joined.extend_from_slice(blobs[i]);
    }
    Cow::Owned(joined)
}

/// `data` cut into pieces of the given lengths.
fn split<'a>(data: &'a [u8], lengths: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(lengths.len());
    let mut offset = 0;
    for &len in lengths {
        out.push(&data[offset..offset + len]);
        offset += len;
    }
    out
}

/// A batch of complete chunks on its way to the sink.
struct Batch {
    /// The chunks' plaintext, concatenated.
    data: Vec<u8>,
    /// Chunk lengths.
    cuts: Vec<usize>,
    /// Which chunks are measured for the stream's [`Chooser`].
    probes: Vec<bool>,
    /// How the chunks are compressed.
    compression: Compression,
    /// The repository's level, the one measurements compare with.
    level: i32,
    /// Ids and frames (once prepared).
    prepared: Option<Prepared>,
}

impl Batch {
    fn chunks(&self) -> Vec<&[u8]> {
        split(&self.data, &self.cuts)
    }

    /// Hashes, compresses and seals the batch's chunks (on every core).
    fn prepare(mut self, repo: &Repository) -> Result<Batch> {
        let chunks = split(&self.data, &self.cuts);
        let prepared = prepare(
            repo,
            Some(&self.data),
            &chunks,
            &self.probes,
            self.compression,
            Some(self.level),
            Stored::Skip,
        )?;
        self.prepared = Some(prepared);
        Ok(self)
    }
}

/// Below this many bytes a batch is encoded on the calling thread.
const PARALLEL_MIN_BYTES: usize = 256 * 1024;
/// Plaintext gathered before chunks are hashed, compressed and sealed together.
const BATCH_BYTES: usize = 1024 * 1024;
/// Batches of one stream being prepared at once: while one waits for its last chunks, the
/// workers already take the next one's, so no core idles between batches.
const BATCHES_IN_FLIGHT: usize = 3;

/// How a stream is cut.
enum Cutter {
    Documents(DocumentCutter),
    Bytes(ByteCutter),
}

/// Turns one stream (a namespace, an oplog, a file) into chunks, chunk-list blobs and its
/// [`DataStream`] record. Plaintext is buffered until [`BATCH_BYTES`] of complete chunks are
/// ready, then the batch goes to the sink at once (and is content-hashed meanwhile).
pub(crate) struct StreamWriter {
    cutter: Cutter,
    /// Plaintext not yet stored: complete chunks (`cuts`), then the open chunk.
    buf: Vec<u8>,
    /// Lengths of the complete chunks at the start of `buf`.
    cuts: Vec<usize>,
    /// Bytes of `buf` covered by `cuts`.
    cut_bytes: usize,
    /// The content hash (of the batches sent to be prepared).
    hasher: HashRelay,
    /// The batches being prepared on the blocking pool while the next one fills, oldest first.
    in_flight: std::collections::VecDeque<tokio::task::JoinHandle<Result<Batch>>>,
    /// Buffers of stored batches, reused for the next `buf`s: a fresh 1 MiB buffer costs a page
    /// fault per 4 KiB as it fills.
    spare: Vec<Vec<u8>>,
    /// How the stream's chunks are compressed.
    chooser: Chooser,
    lists: ListTree,
    stream: DataStream,
    repo: Repository,
}

impl StreamWriter {
    /// A document stream (cut between documents).
    pub(crate) fn for_documents(repo: &Repository) -> Self {
        let cutter = DocumentCutter::new(
            repo.config.document_chunker,
            repo.config.document_cut_rule,
            repo.keys.document_cut_key(),
        );
        Self::new(repo, Cutter::Documents(cutter))
    }

    /// A byte stream (file contents, cut by FastCDC).
    pub(crate) fn for_bytes(repo: &Repository) -> Self {
        let cutter = ByteCutter::new(repo.config.chunker, repo.keys.chunker_seed());
        Self::new(repo, Cutter::Bytes(cutter))
    }

    fn new(repo: &Repository, cutter: Cutter) -> Self {
        StreamWriter {
            cutter,
            buf: Vec::new(),
            spare: Vec::new(),
            cuts: Vec::new(),
            cut_bytes: 0,
            hasher: HashRelay::Here(Box::default()),
            in_flight: std::collections::VecDeque::new(),
            chooser: Chooser::new(repo.config.compression_level),
            lists: ListTree::default(),
            stream: DataStream::default(),
            repo: repo.clone(),
        }
    }

    /// Appends one document (document streams).
    pub(crate) async fn push_document(&mut self, doc: &[u8], sink: &mut BlobSink) -> Result<()> {
        self.stream.documents += 1;
        if let Cutter::Documents(cutter) = &mut self.cutter {
            let cut = cutter.document(doc);
            if cut.before {
                self.close_chunk();
            }
            self.buf.extend_from_slice(doc);
            if cut.after {
                self.close_chunk();
            }
        } else {
            self.buf.extend_from_slice(doc);
        }
        self.stream.bytes += doc.len() as u64;
        self.store_if_full(sink).await
    }

    /// Appends bytes (byte streams).
    pub(crate) async fn push_bytes(&mut self, data: &[u8], sink: &mut BlobSink) -> Result<()> {
        self.buf.extend_from_slice(data);
        self.stream.bytes += data.len() as u64;
        if let Cutter::Bytes(cutter) = &self.cutter
            && self.buf.len() - self.cut_bytes >= cutter.window()
        {
            let lengths = cutter.cuts(&self.buf[self.cut_bytes..], false);
            self.cut_bytes += lengths.iter().sum::<usize>();
            self.cuts.extend(lengths);
        }
        self.store_if_full(sink).await
    }

    /// Documents so far.
    pub(crate) fn documents(&self) -> u64 {
        self.stream.documents
    }

    /// Ends the open chunk where `buf` ends.
    fn close_chunk(&mut self) {
        let open = self.buf.len() - self.cut_bytes;
        if open > 0 {
            self.cuts.push(open);
            self.cut_bytes = self.buf.len();
        }
    }

    async fn store_if_full(&mut self, sink: &mut BlobSink) -> Result<()> {
        if self.cut_bytes >= BATCH_BYTES {
            self.store(sink).await?;
        }
        Ok(())
    }

    /// Sends the complete chunks to be prepared in the background, after storing the batch
    /// prepared before (and any chunk-list blobs it finishes): reading the next batch, encoding
    /// this one and uploading packs overlap.
    async fn store(&mut self, sink: &mut BlobSink) -> Result<()> {
        if self.cuts.is_empty() {
            return Ok(());
        }
        if self.in_flight.len() >= BATCHES_IN_FLIGHT {
            self.settle_one(sink).await?;
        }
        let mut next = self.spare.pop().unwrap_or_default();
        next.clear();
        next.extend_from_slice(&self.buf[self.cut_bytes..]);
        self.buf.truncate(self.cut_bytes);
        let cuts = std::mem::take(&mut self.cuts);
        let batch = Batch {
            data: std::mem::replace(&mut self.buf, next),
            probes: cuts.iter().map(|&len| self.chooser.probe_next(len)).collect(),
            cuts,
            compression: self.chooser.current(),
            level: self.chooser.level(),
            prepared: None,
        };
        self.cut_bytes = 0;
        let repo = self.repo.clone();
        let (hashed, next_hasher) = tokio::sync::oneshot::channel();
        let hasher = std::mem::replace(&mut self.hasher, HashRelay::Coming(next_hasher));
        self.in_flight.push_back(tokio::task::spawn_blocking(move || {
            let mut hasher = hasher.take_blocking()?;
            hasher.update(&batch.data);
            // The next batch's task waits for it; gone only when that task failed already.
            let _ = hashed.send(hasher);
            batch.prepare(&repo)
        }));
        Ok(())
    }

    /// Stores every batch in flight into the sink.
    async fn settle(&mut self, sink: &mut BlobSink) -> Result<()> {
        while !self.in_flight.is_empty() {
            self.settle_one(sink).await?;
        }
        Ok(())
    }

    /// Stores the oldest batch in flight, if any, into the sink (in stream order).
    async fn settle_one(&mut self, sink: &mut BlobSink) -> Result<()> {
        let Some(handle) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let mut batch = handle
            .await
            .map_err(|e| RepoError::Usage(format!("chunk encoding task failed: {e}")))??;
        let prepared = batch
            .prepared
            .take()
            .ok_or_else(|| RepoError::Usage("chunk batch stored before it was prepared".into()))?;
        self.chooser.observe(prepared.probe);
        let ids = sink.add_prepared(&batch.chunks(), prepared, BlobKind::Data).await?;
        self.spare.push(batch.data);
        self.lists.push_chunks(&ids, sink).await
    }

    /// Stores the rest of the stream and returns its record.
    pub(crate) async fn finish(mut self, sink: &mut BlobSink) -> Result<DataStream> {
        match &self.cutter {
            Cutter::Documents(_) => self.close_chunk(),
            Cutter::Bytes(cutter) => {
                let lengths = cutter.cuts(&self.buf[self.cut_bytes..], true);
                self.cut_bytes += lengths.iter().sum::<usize>();
                self.cuts.extend(lengths);
            }
        }
        self.store(sink).await?;
        self.settle(sink).await?;
        let (lists, levels) = std::mem::take(&mut self.lists).finish(sink).await?;
        self.stream.chunk_lists = lists;
        self.stream.list_levels = levels;
        // Every batch was settled: the last one has handed the hasher on.
        let relay = std::mem::replace(&mut self.hasher, HashRelay::Here(Box::default()));
        let hasher = relay.take().await?;
        self.stream.content_hash = Id(*hasher.finalize().as_bytes());
        Ok(self.stream)
    }
}

/// A stream's content hash, passed from batch to batch: each batch's encoding task takes it from
/// the task of the batch before, hashes its own bytes and hands it on, so the stream is hashed in
/// order on the tasks beside the encoding, not on the task reading the stream.
enum HashRelay {
    /// No batch is being hashed.
    Here(Box<blake3::Hasher>),
    /// The task of the last batch sent hands it over when it has hashed its bytes.
    Coming(tokio::sync::oneshot::Receiver<Box<blake3::Hasher>>),
}

/// The hasher was dropped by a task that failed.
fn hash_lost<E>(_: E) -> RepoError {
    RepoError::Usage("the content hash was lost with a failed chunk encoding task".into())
}

impl HashRelay {
    /// The hasher, once the batch before has hashed its bytes (on a blocking task).
    fn take_blocking(self) -> Result<Box<blake3::Hasher>> {
        match self {
            HashRelay::Here(hasher) => Ok(hasher),
            HashRelay::Coming(receiver) => receiver.blocking_recv().map_err(hash_lost),
        }
    }

    /// The hasher, once the batch before has hashed its bytes.
    async fn take(self) -> Result<Box<blake3::Hasher>> {
        match self {
            HashRelay::Here(hasher) => Ok(hasher),
            HashRelay::Coming(receiver) => receiver.await.map_err(hash_lost),
        }
    }
}

/// Metadata of a namespace being backed up.
#[derive(Debug, Clone, Default)]
pub struct NamespaceMetadata {
    /// The `metadata.json` text exactly as mongodump writes it (kept verbatim for export).
    pub metadata_json: Option<String>,
}

impl NamespaceMetadata {
    /// From the text of a `metadata.json`.
    pub fn from_json(text: impl Into<String>) -> Self {
        NamespaceMetadata {
            metadata_json: Some(text.into()),
        }
    }

    /// From a parsed [`tidemark_format::metadata::Metadata`].
    pub fn from_metadata(metadata: &tidemark_format::metadata::Metadata) -> Result<Self> {
        let text = metadata
            .to_json()
            .map_err(|e| RepoError::Usage(format!("serialize metadata: {e}")))?;
        Ok(Self::from_json(text))
    }
}

/// Streams a snapshot into the repository.
pub struct SnapshotWriter {
    repo: Repository,
    sink: BlobSink,
    lock: Option<Lock>,
    members: Vec<Member>,
    current: usize,
    time: i64,
    time_nanos: u32,
    progress: Arc<dyn Progress>,
}

impl std::fmt::Debug for SnapshotWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotWriter")
            .field("repo", &self.repo)
            .field("members", &self.members.len())
            .finish()
    }
}

fn split_namespace(ns: &str) -> Result<(&str, &str)> {
    match ns.split_once('.') {
        Some((db, coll)) if !db.is_empty() && !coll.is_empty() => Ok((db, coll)),
        _ => Err(RepoError::Usage(format!(
            "namespace {ns:?} is not of the form db.collection"
        ))),
    }
}

/// Options of [`SnapshotWriter::commit`].
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// Oplog window of the current member (otherwise taken from the oplog entries written).
    pub oplog_window: Option<OplogWindow>,
    /// Cluster-wide consistency timestamp.
    pub consistency_ts: Option<Timestamp>,
    /// Tags.
    pub tags: Vec<String>,
    /// Host or cluster label (defaults to the host name).
    pub label: Option<String>,
}

impl SnapshotWriter {
    /// Starts a snapshot, taking a shared lock.
    pub async fn new(repo: &Repository, progress: Arc<dyn Progress>) -> Result<Self> {
        let lock = Lock::acquire(&repo.storage, false).await?;
        Ok(SnapshotWriter {
            repo: repo.clone(),
            sink: BlobSink::new(repo.clone(), progress.clone()),
            lock: Some(lock),
            members: vec![Member {
                name: String::new(),
                role: "replset".into(),
                ..Member::default()
            }],
            current: 0,
            time: now_unix(),
            time_nanos: now_subsec_nanos(),
            progress,
        })
    }

    /// Writes an index object whenever at least `blobs` new blobs are in uploaded packs (by
    /// default 262,144, or a quarter of the repository's blobs if more), so the index entries
    /// of a long backup wait in the compact in-memory index, and a backup that is interrupted
    /// leaves its uploaded packs indexed for the next one to deduplicate against.
    pub fn set_index_interval(&mut self, blobs: usize) {
        self.sink.index_every = blobs.max(1);
    }

    /// Switches to (creating if needed) the member (replica set) that following namespaces belong to.
    /// A fresh writer starts in an unnamed `replset` member.
    pub fn set_member(&mut self, name: &str, role: &str) {
        if let Some(i) = self.members.iter().position(|m| m.name == name) {
            self.members[i].role = role.to_owned();
            self.current = i;
        } else if self.members.len() == 1
            && self.members[0].name.is_empty()
            && self.members[0].namespaces.is_empty()
            && self.members[0].oplog.is_none()
            && self.members[0].files.is_empty()
        {
            self.members[0].name = name.to_owned();
            self.members[0].role = role.to_owned();
            self.current = 0;
        } else {
            self.members.push(Member {
                name: name.to_owned(),
                role: role.to_owned(),
                ..Member::default()
            });
            self.current = self.members.len() - 1;
        }
    }

    /// Records the server version of the current member (used when exporting archives).
    pub fn set_server_version(&mut self, version: &str) {
        self.members[self.current].server_version = version.to_owned();
    }

    /// Oplog window of the current member so far (from the oplog entries written), if any.
    pub fn oplog_window(&self) -> Option<OplogWindow> {
        self.members[self.current].oplog.as_ref().and_then(|o| o.window)
    }

    async fn refresh_lock(&mut self) -> Result<()> {
        if let Some(lock) = &mut self.lock {
            lock.refresh().await?;
        }
        Ok(())
    }

    /// Starts a namespace `db.collection` of the current member.
    pub async fn begin_namespace(&mut self, ns: &str, metadata: NamespaceMetadata) -> Result<NamespaceWriter<'_>> {
        let open = self.open_namespace(ns, metadata).await?;
        Ok(NamespaceWriter { writer: self, open })
    }

    /// Starts the oplog of the current member.
    pub fn begin_oplog(&mut self) -> NamespaceWriter<'_> {
        let open = self.open_oplog();
        NamespaceWriter { writer: self, open }
    }

    /// Starts a namespace of the current member that does not borrow the writer, so several can
    /// be open at once (an archive whose namespaces interleave); write with
    /// [`SnapshotWriter::write_open`], end with [`SnapshotWriter::finish_open`].
    pub async fn open_namespace(&mut self, ns: &str, metadata: NamespaceMetadata) -> Result<OpenNamespace> {
        let (db, collection) = split_namespace(ns)?;
        let mut entry = NamespaceEntry {
            db: db.to_owned(),
            collection: collection.to_owned(),
            kind: "collection".into(),
            metadata_json: None,
            options: None,
            indexes: Vec::new(),
            uuid: None,
            data: DataStream::default(),
        };
        if let Some(text) = metadata.metadata_json {
            let parsed = tidemark_format::metadata::Metadata::parse(text.as_bytes(), ns)
                .map_err(|e| RepoError::Usage(e.to_string()))?;
            if let Some(md) = parsed {
                if let Some(t) = &md.collection_type {
                    entry.kind.clone_from(t);
                }
                entry.options = md.options.map(|o| bson::Bson::Document(o).into_canonical_extjson());
                entry.indexes = md
                    .indexes
                    .into_iter()
                    .map(|i| bson::Bson::Document(i).into_canonical_extjson())
                    .collect();
                entry.uuid = md.uuid;
            }
            entry.metadata_json = Some(text);
        }
        self.refresh_lock().await?;
        self.progress.namespace_started(ns);
        Ok(OpenNamespace {
            member: self.current,
            target: Target::Namespace(Box::new(entry)),
            stream: StreamWriter::for_documents(&self.repo),
            first_ts: None,
            last_ts: None,
        })
    }

    /// [`SnapshotWriter::open_namespace`] for the current member's oplog.
    pub fn open_oplog(&mut self) -> OpenNamespace {
        self.progress.namespace_started("oplog");
        OpenNamespace {
            member: self.current,
            target: Target::Oplog,
            stream: StreamWriter::for_documents(&self.repo),
            first_ts: None,
            last_ts: None,
        }
    }

    /// Appends one document to an open namespace (its bytes are stored exactly).
    pub async fn write_open(&mut self, open: &mut OpenNamespace, doc: &RawDocument) -> Result<()> {
        if matches!(open.target, Target::Oplog)
            && let Ok(ts) = doc.get_timestamp("ts")
        {
            let ts = Timestamp::from(ts);
            open.first_ts.get_or_insert(ts);
            open.last_ts = Some(ts);
        }
        let bytes = doc.as_bytes();
        open.stream.push_document(bytes, &mut self.sink).await?;
        // Keep the shared lock fresh during long collections so prune never mistakes this backup
        // (and its not yet indexed packs) for a crashed one.
        if open.stream.documents().is_multiple_of(4096) {
            self.refresh_lock().await?;
        }
        self.progress.bytes(bytes.len() as u64);
        Ok(())
    }

    /// Ends an open namespace and records it in its member.
    pub async fn finish_open(&mut self, open: OpenNamespace) -> Result<DataStream> {
        let OpenNamespace {
            member,
            target,
            stream,
            first_ts,
            last_ts,
        } = open;
        let data = stream.finish(&mut self.sink).await?;
        let member = &mut self.members[member];
        match target {
            Target::Namespace(mut entry) => {
                entry.data = data.clone();
                member.namespaces.push(*entry);
            }
            Target::Oplog => {
                let window = first_ts.zip(last_ts).map(|(first, last)| OplogWindow { first, last });
                member.oplog = Some(OplogEntry {
                    window,
                    data: data.clone(),
                });
            }
        }
        Ok(data)
    }

    /// Uploads the remaining data, the index, then the manifest (the commit point).
    pub async fn commit(mut self, options: CommitOptions) -> Result<(Id, SnapshotStats)> {
        if let Some(window) = options.oplog_window {
            let member = &mut self.members[self.current];
            member
                .oplog
                .get_or_insert_with(|| OplogEntry {
                    window: None,
                    data: DataStream::default(),
                })
                .window = Some(window);
        }
        let mut stats = std::mem::replace(&mut self.sink, BlobSink::new(self.repo.clone(), self.progress.clone()))
            .finish()
            .await?;
        stats.documents = self
            .members
            .iter()
            .flat_map(|m| &m.namespaces)
            .map(|n| n.data.documents)
            .sum();
        let snapshot = Snapshot {
            version: MANIFEST_VERSION,
            time: self.time,
            time_nanos: self.time_nanos,
            host: hostname(),
            label: options.label.unwrap_or_else(hostname),
            tags: options.tags,
            consistency_ts: options.consistency_ts,
            members: std::mem::take(&mut self.members),
            stats,
        };
        let id = self.repo.save_snapshot(&snapshot).await?;
        if let Some(lock) = self.lock.take() {
            lock.release().await?;
        }
        Ok((id, stats))
    }

    /// Abandons the snapshot, releasing the lock (uploaded packs stay until `prune`).
    pub async fn abort(mut self) -> Result<()> {
        if let Some(lock) = self.lock.take() {
            lock.release().await?;
        }
        Ok(())
    }
}

/// Streams one regular file of a file tree (block-level backup of a data directory).
pub struct FileWriter<'a> {
    writer: &'a mut SnapshotWriter,
    node: FileNode,
    stream: StreamWriter,
}

impl std::fmt::Debug for FileWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWriter")
            .field("path", &self.node.path)
            .finish_non_exhaustive()
    }
}

impl FileWriter<'_> {
    /// Appends file contents.
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.stream.push_bytes(data, &mut self.writer.sink).await?;
        self.writer.progress.bytes(data.len() as u64);
        Ok(())
    }

    /// Ends the file and records it in the current member's tree.
    pub async fn finish(self) -> Result<DataStream> {
        let FileWriter {
            writer,
            mut node,
            stream,
        } = self;
        let data = stream.finish(&mut writer.sink).await?;
        node.data = Some(data.clone());
        writer.members[writer.current].files.push(node);
        writer.refresh_lock().await?;
        Ok(data)
    }
}

fn check_tree_path(path: &str) -> Result<()> {
    if path.is_empty() || path.starts_with('/') || path.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
        return Err(RepoError::Usage(format!(
            "file tree path {path:?} must be relative, without empty, . or .. parts"
        )));
    }
    Ok(())
}

impl SnapshotWriter {
    /// Starts a regular file of the current member's file tree (`path` relative, '/'-separated).
    pub fn begin_file(&mut self, path: &str, mode: u32, mtime: i64) -> Result<FileWriter<'_>> {
        check_tree_path(path)?;
        self.progress.namespace_started(path);
        let stream = StreamWriter::for_bytes(&self.repo);
        let node = FileNode {
            path: path.to_owned(),
            kind: FileKind::File,
            mode,
            mtime,
            target: None,
            data: None,
        };
        Ok(FileWriter {
            writer: self,
            node,
            stream,
        })
    }

    /// Records a directory or symbolic link (`target` for links) in the current member's file tree.
    pub fn add_tree_entry(
        &mut self,
        path: &str,
        kind: FileKind,
        mode: u32,
        mtime: i64,
        target: Option<&str>,
    ) -> Result<()> {
        check_tree_path(path)?;
        if kind == FileKind::File {
            return Err(RepoError::Usage(format!("{path}: regular files go through begin_file")));
        }
        let node = FileNode {
            path: path.to_owned(),
            kind,
            mode,
            mtime,
            target: target.map(str::to_owned),
            data: None,
        };
        self.members[self.current].files.push(node);
        Ok(())
    }
}

impl Drop for SnapshotWriter {
    /// An abandoned writer (an error propagated with `?`) releases its lock in the background when a
    /// tokio runtime is available; after a real crash the lock goes stale instead.
    fn drop(&mut self) {
        if let Some(lock) = self.lock.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(async move {
                // Best effort: a lock left behind becomes stale on its own.
                let _ = lock.release().await;
            });
        }
    }
}

enum Target {
    Namespace(Box<NamespaceEntry>),
    Oplog,
}

/// A namespace being written that does not borrow its [`SnapshotWriter`] (see
/// [`SnapshotWriter::open_namespace`]).
pub struct OpenNamespace {
    member: usize,
    target: Target,
    stream: StreamWriter,
    first_ts: Option<Timestamp>,
    last_ts: Option<Timestamp>,
}

impl std::fmt::Debug for OpenNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenNamespace").finish_non_exhaustive()
    }
}

/// Streams one namespace's documents.
pub struct NamespaceWriter<'a> {
    writer: &'a mut SnapshotWriter,
    open: OpenNamespace,
}

impl std::fmt::Debug for NamespaceWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamespaceWriter").finish_non_exhaustive()
    }
}

impl NamespaceWriter<'_> {
    /// Appends one document (its bytes are stored exactly).
    pub async fn write_document(&mut self, doc: &RawDocument) -> Result<()> {
        self.writer.write_open(&mut self.open, doc).await
    }

    /// Ends the namespace and records it in the snapshot.
    pub async fn finish(self) -> Result<DataStream> {
        self.writer.finish_open(self.open).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_borrow_neighbouring_chunks_and_join_the_others() {
        let data: Vec<u8> = (0..100u8).collect();
        let chunks = split(&data, &[10, 20, 30, 40]);
        let joined = |members: &[usize]| -> Vec<u8> { members.iter().flat_map(|&i| chunks[i].to_vec()).collect() };
        for members in [&[0, 1, 2, 3][..], &[1, 2], &[3], &[0, 2], &[1, 3], &[2, 1]] {
            let got = frame_plaintext(Some(&data), &chunks, members);
            assert_eq!(&*got, &joined(members)[..], "{members:?}");
            let neighbours = members.windows(2).all(|w| w[1] == w[0] + 1);
            assert_eq!(matches!(got, std::borrow::Cow::Borrowed(_)), neighbours, "{members:?}");
            assert_eq!(&*frame_plaintext(None, &chunks, members), &joined(members)[..]);
        }
        // Slices of another buffer are joined, never borrowed from the wrong one.
        let other = data.clone();
        let foreign = split(&other, &[50, 50]);
        assert_eq!(&*frame_plaintext(Some(&data), &foreign, &[0, 1]), &other[..]);
    }
}
