//! The blob index: its objects (`index/<id>`) and its in-memory form.
//!
//! Every command loads the whole index when it opens a repository, and with document chunks of a
//! few KiB a large database has hundreds of millions of blobs. So both forms are compact:
//!
//! - **Objects** are binary ([`IndexFile::encode`]): per blob its 32-byte id, a flags byte and
//!   a few varints (the frame's place, once per frame, then the blob's place in the frame and its
//!   length), about 37 bytes instead of about 210 of hex JSON, and decoded without parsing text.
//!   Objects written before (layout version 1, or zstd JSON) still read: [`IndexFile::decode`]
//!   tells them apart by their first bytes.
//! - **In memory** ([`BlobIndex`]) a blob is one fixed 52-byte record (id, interned pack number
//!   with the kind in its top bit, frame offset and stored length, place in the frame and
//!   plaintext length as `u32`) in one array sorted by id, found through a fan-out table on the
//!   id's leading bits and a binary search in its bucket. A hash map of ids to full locations
//!   cost about 3 times as much per blob.
//!
//! Binary object layout (inside `seal(zstd(...))`, like every other sealed object):
//!
//! ```text
//! "TMIX" | version u8 (2) | varint pack count
//! per pack:  pack id (32) | varint pack size | varint blob count
//!   per blob: blob id (32) | flags u8 (bit 0: chunk list; bit 1: in the previous blob's frame)
//!             | unless bit 1: zigzag varint (frame offset - end of the previous frame of the
//!               pack, 0 for the first) | varint frame stored length
//!             | varint offset in the frame's plaintext | varint plaintext length
//! BLAKE3 (unkeyed, 32 bytes) of everything before it
//! ```
//!
//! Version 1 had neither bit 1 nor the offset in the frame: every blob was a frame of its own.
//!
//! Varints are unsigned LEB128 (7 bits per byte, least significant first, at most 10 bytes).
//! The trailing hash catches damage in repositories without encryption (with encryption the seal
//! already does).

use rayon::slice::ParallelSliceMut as _;

use crate::crypto::{Id, IdMap};
use crate::error::{RepoError, Result};
use crate::pack::{BlobKind, IndexFile, IndexPack, PackEntry};

/// First bytes of a binary index object.
const MAGIC: &[u8; 4] = b"TMIX";
/// Version of the binary index layout written by this crate (1 is still read).
const BINARY_VERSION: u8 = 2;
/// Smallest encoding of one blob: id, flags and two one-byte varints.
const MIN_BLOB_BYTES: usize = 32 + 1 + 2;
/// Flags bit: the blob is a chunk list.
const FLAG_CHUNK_LIST: u8 = 1;
/// Flags bit: the blob is in the frame of the blob before it.
const FLAG_SAME_FRAME: u8 = 2;
/// Smallest encoding of one pack: id and two one-byte varints.
const MIN_PACK_BYTES: usize = 32 + 2;

/// How [`crate::Repository::write_index_as`] encodes an index object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IndexEncoding {
    /// The compact binary layout (see the module documentation); what backups write.
    #[default]
    Binary,
    /// zstd JSON `{ "packs": [...] }`, as repositories written before hold (and older versions of
    /// tidemark read).
    Json,
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value.to_le_bytes()[0] | 0x80);
        value >>= 7;
    }
    out.push(value.to_le_bytes()[0]);
}

fn zigzag(value: i128) -> u64 {
    // Offsets and lengths are u64, so the difference fits in 65 bits; clamp what cannot be stored
    // (the decoder then reports the mismatch rather than a wrong location being written).
    let v = i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX });
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

impl IndexFile {
    /// The binary encoding of this index (plaintext, before compression and sealing).
    pub fn encode(&self) -> Vec<u8> {
        let blobs: usize = self.packs.iter().map(|p| p.blobs.len()).sum();
        let mut out = Vec::with_capacity(64 + self.packs.len() * 48 + blobs * 44);
        out.extend_from_slice(MAGIC);
        out.push(BINARY_VERSION);
        put_varint(&mut out, self.packs.len() as u64);
        for pack in &self.packs {
            out.extend_from_slice(&pack.id.0);
            put_varint(&mut out, pack.size);
            put_blobs(&mut out, &pack.blobs);
        }
        let hash = blake3::hash(&out);
        out.extend_from_slice(hash.as_bytes());
        out
    }

    /// Decodes an index object's plaintext (binary, or the JSON of repositories written before);
    /// errors name `object`.
    pub fn decode(plain: &[u8], object: &str) -> Result<IndexFile> {
        let mut packs = Vec::new();
        for_each_pack(plain, object, |pack| {
            packs.push(pack);
            Ok(())
        })?;
        Ok(IndexFile { packs })
    }
}

/// Appends the blob count and the blobs of one pack (the layout of the module documentation).
fn put_blobs(out: &mut Vec<u8>, blobs: &[PackEntry]) {
    put_varint(out, blobs.len() as u64);
    let mut end = 0u64;
    let mut previous: Option<&PackEntry> = None;
    for blob in blobs {
        out.extend_from_slice(&blob.id.0);
        let same_frame = previous.is_some_and(|p| p.same_frame(blob));
        let kind = match blob.kind {
            BlobKind::Data => 0,
            BlobKind::ChunkList => FLAG_CHUNK_LIST,
        };
        out.push(kind | if same_frame { FLAG_SAME_FRAME } else { 0 });
        if !same_frame {
            put_varint(out, zigzag(i128::from(blob.offset) - i128::from(end)));
            put_varint(out, blob.length);
            end = blob.offset.saturating_add(blob.length);
        }
        put_varint(out, blob.inner_offset);
        put_varint(out, blob.raw_length);
        previous = Some(blob);
    }
}

/// Reads what [`put_blobs`] wrote (or layout version 1's blobs); `at` names the pack in errors.
fn read_blobs(reader: &mut Reader, version: u8, at: &dyn Fn(String) -> RepoError) -> Result<Vec<PackEntry>> {
    let count = reader
        .count(MIN_BLOB_BYTES)
        .map_err(|m| at(format!("blob count: {m}")))?;
    let mut blobs = Vec::with_capacity(count);
    let mut end = 0u64;
    let mut frame: Option<(u64, u64)> = None;
    for b in 0..count {
        let at = |m: &str| at(format!("blob {b}: {m}"));
        let blob_id = reader.id().map_err(&at)?;
        let flags = reader.byte().map_err(&at)?;
        let known = if version == 1 {
            FLAG_CHUNK_LIST
        } else {
            FLAG_CHUNK_LIST | FLAG_SAME_FRAME
        };
        if flags & !known != 0 {
            return Err(at(&format!("unknown kind {flags}")));
        }
        let kind = if flags & FLAG_CHUNK_LIST != 0 {
            BlobKind::ChunkList
        } else {
            BlobKind::Data
        };
        let (offset, length) = match frame {
            Some(previous) if flags & FLAG_SAME_FRAME != 0 => previous,
            None if flags & FLAG_SAME_FRAME != 0 => return Err(at("no frame before it")),
            _ => {
                let gap = unzigzag(reader.varint().map_err(&at)?);
                let offset = end.checked_add_signed(gap).ok_or_else(|| at("offset out of range"))?;
                let length = reader.varint().map_err(&at)?;
                end = offset.checked_add(length).ok_or_else(|| at("offset out of range"))?;
                (offset, length)
            }
        };
        frame = Some((offset, length));
        let inner_offset = if version == 1 { 0 } else { reader.varint().map_err(&at)? };
        let raw_length = reader.varint().map_err(&at)?;
        blobs.push(PackEntry {
            id: blob_id,
            kind,
            offset,
            length,
            raw_length,
            inner_offset,
        });
    }
    Ok(blobs)
}

/// First bytes of a binary pack header.
const HEADER_MAGIC: &[u8; 4] = b"TMPH";
/// Version of the binary pack header layout.
const HEADER_VERSION: u8 = 1;

/// The binary header of a pack listing `blobs`: `"TMPH" | version u8 (1) | varint blob count |
/// blobs`, the blobs as in an index object (layout 2). Sealed, it needs no checksum of its own.
pub(crate) fn encode_pack_header(blobs: &[PackEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + blobs.len() * 40);
    out.extend_from_slice(HEADER_MAGIC);
    out.push(HEADER_VERSION);
    put_blobs(&mut out, blobs);
    out
}

/// Decodes a pack header's plaintext: binary, or the JSON array of packs written before; errors
/// name `object`.
pub(crate) fn decode_pack_header(plain: &[u8], object: &str) -> Result<Vec<PackEntry>> {
    if plain.first() == Some(&b'[') {
        return serde_json::from_slice(plain).map_err(|e| RepoError::corrupt(object, format!("header: {e}")));
    }
    let corrupt = |message: String| RepoError::corrupt(object, format!("header: {message}"));
    if plain.len() < HEADER_MAGIC.len() + 1 || &plain[..HEADER_MAGIC.len()] != HEADER_MAGIC {
        return Err(corrupt("not a pack header (unknown leading bytes)".into()));
    }
    let version = plain[HEADER_MAGIC.len()];
    if version != HEADER_VERSION {
        return Err(corrupt(format!(
            "layout version {version}, this tidemark reads {HEADER_VERSION}"
        )));
    }
    let mut reader = Reader {
        bytes: plain,
        pos: HEADER_MAGIC.len() + 1,
    };
    let blobs = read_blobs(&mut reader, BINARY_VERSION, &corrupt)?;
    if reader.pos != plain.len() {
        return Err(corrupt(format!(
            "{} bytes after the last blob",
            plain.len() - reader.pos
        )));
    }
    Ok(blobs)
}

/// Calls `visit` with each pack of an index object's plaintext, in order, without holding the
/// whole decoded object (binary objects); errors name `object`.
pub(crate) fn for_each_pack(plain: &[u8], object: &str, mut visit: impl FnMut(IndexPack) -> Result<()>) -> Result<()> {
    if plain.first() == Some(&b'{') {
        let file: IndexFile =
            serde_json::from_slice(plain).map_err(|e| RepoError::corrupt(object, format!("JSON index: {e}")))?;
        return file.packs.into_iter().try_for_each(visit);
    }
    let corrupt = |message: String| RepoError::corrupt(object, format!("binary index: {message}"));
    if plain.len() < MAGIC.len() + 1 + 32 || &plain[..MAGIC.len()] != MAGIC {
        return Err(corrupt("not an index object (unknown leading bytes)".into()));
    }
    let version = plain[MAGIC.len()];
    if !(1..=BINARY_VERSION).contains(&version) {
        return Err(corrupt(format!(
            "layout version {version}, this tidemark reads {BINARY_VERSION}"
        )));
    }
    let (body, hash) = plain.split_at(plain.len() - 32);
    if blake3::hash(body).as_bytes() != hash {
        return Err(corrupt("checksum mismatch".into()));
    }
    let mut reader = Reader {
        bytes: body,
        pos: MAGIC.len() + 1,
    };
    let pack_count = reader
        .count(MIN_PACK_BYTES)
        .map_err(|m| corrupt(format!("pack count: {m}")))?;
    for p in 0..pack_count {
        let at = |m: &str| corrupt(format!("pack {p}: {m}"));
        let id = reader.id().map_err(&at)?;
        let size = reader.varint().map_err(&at)?;
        let blobs = read_blobs(&mut reader, version, &|m| corrupt(format!("pack {p} ({id}), {m}")))?;
        visit(IndexPack { id, size, blobs })?;
    }
    if reader.pos != body.len() {
        return Err(corrupt(format!(
            "{} bytes after the last pack",
            body.len() - reader.pos
        )));
    }
    Ok(())
}

/// Bounds-checked cursor over a binary index object.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> std::result::Result<&[u8], &'static str> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or("truncated")?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn byte(&mut self) -> std::result::Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }

    fn id(&mut self) -> std::result::Result<Id, &'static str> {
        let mut id = [0u8; 32];
        id.copy_from_slice(self.take(32)?);
        Ok(Id(id))
    }

    fn varint(&mut self) -> std::result::Result<u64, &'static str> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return Err("varint overflows 64 bits");
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes")
    }

    /// A count of items of at least `min_bytes` each, bounded by the bytes left (so a damaged
    /// count cannot make the reader reserve memory for items that are not there).
    fn count(&mut self, min_bytes: usize) -> std::result::Result<usize, &'static str> {
        let n = self.varint()?;
        let left = (self.bytes.len() - self.pos) / min_bytes;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= left)
            .ok_or("count larger than the object")
    }
}

/// Where a blob lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    /// Pack id.
    pub pack: Id,
    /// Entry in the pack.
    pub entry: PackEntry,
}

/// One blob in memory: 52 bytes, no padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    id: [u8; 32],
    /// Index into [`BlobIndex::packs`]; the top bit marks a chunk list.
    pack: u32,
    offset: u32,
    length: u32,
    raw_length: u32,
    inner_offset: u32,
}

impl Record {
    /// The id's first 8 bytes as a number ordered like the id.
    fn prefix(&self) -> u64 {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.id[..8]);
        u64::from_be_bytes(first)
    }
}

/// Top bit of [`Record::pack`]: the blob is a chunk list.
const CHUNK_LIST_BIT: u32 = 1 << 31;

/// The in-memory blob index: blob id → pack, offset, lengths and kind.
///
/// Records sorted by id, a fan-out table of bucket starts on the first `bits` bits of the id, and
/// pack ids interned (a pack holds thousands of blobs). Blobs are added a batch at a time
/// (a whole repository at open, one index object at a commit): the batch is sorted and merged.
/// Offsets and lengths are kept as `u32`, so packs must stay under 4 GiB (the repository's pack
/// size is at most 2 GiB); a larger one is refused when loading, naming the index object.
#[derive(Debug, Default, Clone)]
pub struct BlobIndex {
    records: Vec<Record>,
    fanout: Vec<usize>,
    bits: u32,
    packs: Vec<Id>,
    pack_numbers: IdMap<u32>,
    /// Incremented by every addition: tells a writer that looked blobs up before whether blobs
    /// were added since.
    generation: u64,
}

impl BlobIndex {
    /// Number of blobs.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no blob is indexed.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Changes whenever blobs are added.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Bytes of memory the index holds (records, fan-out table, pack table), for reports.
    pub fn memory_bytes(&self) -> usize {
        self.records.capacity() * std::mem::size_of::<Record>()
            + self.fanout.capacity() * std::mem::size_of::<usize>()
            + self.packs.capacity() * 32
            + self.pack_numbers.capacity() * (32 + 4 + 1)
    }

    fn find(&self, id: &Id) -> Option<&Record> {
        let bucket = self.bucket(id);
        let (start, end) = (*self.fanout.get(bucket)?, *self.fanout.get(bucket + 1)?);
        let slice = self.records.get(start..end)?;
        slice.binary_search_by(|r| r.id.cmp(&id.0)).ok().map(|i| &slice[i])
    }

    fn bucket(&self, id: &Id) -> usize {
        if self.bits == 0 {
            return 0;
        }
        (u32::from_be_bytes([id.0[0], id.0[1], id.0[2], id.0[3]]) >> (32 - self.bits)) as usize
    }

    /// Whether a blob is indexed.
    pub fn contains(&self, id: &Id) -> bool {
        self.find(id).is_some()
    }

    /// Where a blob is, if indexed.
    pub fn get(&self, id: &Id) -> Option<BlobLocation> {
        let r = self.find(id)?;
        Some(BlobLocation {
            pack: self.packs[(r.pack & !CHUNK_LIST_BIT) as usize],
            entry: PackEntry {
                id: *id,
                kind: if r.pack & CHUNK_LIST_BIT != 0 {
                    BlobKind::ChunkList
                } else {
                    BlobKind::Data
                },
                offset: u64::from(r.offset),
                length: u64::from(r.length),
                raw_length: u64::from(r.raw_length),
                inner_offset: u64::from(r.inner_offset),
            },
        })
    }

    /// Adds the blobs of `packs` (read from index object `object`, named in errors). A blob
    /// already indexed keeps its first location.
    pub fn add_packs<'a>(&mut self, packs: impl IntoIterator<Item = &'a IndexPack>, object: &str) -> Result<()> {
        let packs: Vec<&IndexPack> = packs.into_iter().collect();
        let sorted = self.records.len();
        self.generation += 1;
        // Room grows by a quarter at least: a backup adds an index object every so many new
        // blobs (a quarter of the index, once it is large), and growing the array by exactly each
        // one would copy it every time.
        let adding: usize = packs.iter().map(|p| p.blobs.len()).sum();
        if self.records.capacity() - self.records.len() < adding {
            self.reserve(adding.max(self.records.len() / 4));
        }
        let result = packs.into_iter().try_for_each(|p| self.stage(p, object));
        if result.is_err() {
            self.records.truncate(sorted);
        }
        self.merge_staged(sorted);
        result
    }

    /// Makes room for `blobs` more records at once, so loading a large index never copies the
    /// array while growing it (room never written to costs address space, not memory).
    pub(crate) fn reserve(&mut self, blobs: usize) {
        self.records.reserve_exact(blobs);
    }

    /// Upper bound of the blobs an index object of `size` stored bytes can list: every blob takes
    /// at least its 32-byte id, which no compression shrinks.
    pub(crate) fn blobs_at_most(size: u64) -> usize {
        usize::try_from(size / 32).unwrap_or(usize::MAX)
    }

    /// Fails, naming `object`, when a blob of `packs` lies where a record cannot point (past 4 GiB).
    pub fn check_fits(packs: &[IndexPack], object: &str) -> Result<()> {
        for pack in packs {
            for blob in &pack.blobs {
                Self::record_fields(pack, blob, object)?;
            }
        }
        Ok(())
    }

    fn record_fields(pack: &IndexPack, blob: &PackEntry, object: &str) -> Result<(u32, u32, u32, u32)> {
        let small = |v: u64| u32::try_from(v).ok();
        match (
            small(blob.offset),
            small(blob.length),
            small(blob.raw_length),
            small(blob.inner_offset),
        ) {
            (Some(offset), Some(length), Some(raw_length), Some(inner_offset)) => {
                Ok((offset, length, raw_length, inner_offset))
            }
            _ => Err(RepoError::corrupt(
                object,
                format!(
                    "blob {} of pack {} lies beyond 4 GiB (packs must be smaller)",
                    blob.id, pack.id
                ),
            )),
        }
    }

    /// Appends a pack's records after the sorted ones; lookups are wrong until
    /// [`BlobIndex::merge_staged`] ran.
    pub(crate) fn stage(&mut self, pack: &IndexPack, object: &str) -> Result<()> {
        let number = match self.pack_numbers.get(&pack.id) {
            Some(&n) => n,
            None => {
                let n = u32::try_from(self.packs.len())
                    .ok()
                    .filter(|n| n & CHUNK_LIST_BIT == 0)
                    .ok_or_else(|| RepoError::corrupt(object, "more than 2^31 packs"))?;
                self.packs.push(pack.id);
                self.pack_numbers.insert(pack.id, n);
                n
            }
        };
        for blob in &pack.blobs {
            let (offset, length, raw_length, inner_offset) = Self::record_fields(pack, blob, object)?;
            let kind = match blob.kind {
                BlobKind::Data => 0,
                BlobKind::ChunkList => CHUNK_LIST_BIT,
            };
            self.records.push(Record {
                id: blob.id.0,
                pack: number | kind,
                offset,
                length,
                raw_length,
                inner_offset,
            });
        }
        Ok(())
    }

    /// Sorts the records from `sorted` on, merges them into the sorted ones (in place, from the
    /// back), drops repeated ids (keeping the earlier location) and rebuilds the fan-out table.
    pub(crate) fn merge_staged(&mut self, sorted: usize) {
        if sorted == self.records.len() && !self.fanout.is_empty() {
            return;
        }
        // In place on every core (a stable sort would allocate half the array again); ids are
        // uniform, so their first 8 bytes almost always decide. Of two records of one id in a
        // batch, either may stay.
        self.records[sorted..].par_sort_unstable_by(|a, b| a.prefix().cmp(&b.prefix()).then_with(|| a.id.cmp(&b.id)));
        if sorted > 0 && sorted < self.records.len() {
            let total = self.records.len();
            let staged: Vec<Record> = self.records[sorted..].to_vec();
            // Merge from the back into the space the staged records occupied. On equal ids the
            // staged record goes after the older one, so the dedup below keeps the older one.
            let (mut i, mut j, mut k) = (sorted, staged.len(), total);
            while j > 0 {
                if i > 0 && self.records[i - 1].id > staged[j - 1].id {
                    self.records[k - 1] = self.records[i - 1];
                    i -= 1;
                } else {
                    self.records[k - 1] = staged[j - 1];
                    j -= 1;
                }
                k -= 1;
            }
        }
        self.records.dedup_by(|later, earlier| later.id == earlier.id);
        self.rebuild_fanout();
    }

    fn rebuild_fanout(&mut self) {
        // About 4 records per bucket: a lookup binary-searches a few neighbouring records, so it
        // touches one or two cache lines beyond the table.
        let n = self.records.len();
        self.bits = (usize::BITS - (n / 4).leading_zeros()).min(24);
        let buckets = 1usize << self.bits;
        self.fanout.clear();
        self.fanout.reserve_exact(buckets + 1);
        let mut at = 0usize;
        for b in 0..buckets {
            self.fanout.push(at);
            while at < n && self.bucket(&Id(self.records[at].id)) == b {
                at += 1;
            }
        }
        self.fanout.push(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pack of `blobs` blobs: frames of one, and from the tenth blob on frames of four.
    fn pack(seed: u8, blobs: usize) -> IndexPack {
        let mut offset = 0;
        let mut inner_offset = 0;
        let mut entries: Vec<PackEntry> = Vec::new();
        for i in 0..blobs {
            let shared = i > 10 && i % 4 != 0;
            if let Some(previous) = entries.last() {
                if shared {
                    inner_offset += previous.raw_length;
                } else {
                    offset += previous.length + u64::from(i == 3) * 7;
                    inner_offset = 0;
                }
            }
            let length = match entries.last() {
                Some(previous) if shared => previous.length,
                _ => 100 + i as u64,
            };
            entries.push(PackEntry {
                id: Id(*blake3::hash(format!("{seed}/{i}").as_bytes()).as_bytes()),
                kind: if i % 16 == 0 {
                    BlobKind::ChunkList
                } else {
                    BlobKind::Data
                },
                offset,
                length,
                raw_length: 2000 + i as u64 * 300,
                inner_offset,
            });
        }
        IndexPack {
            id: Id(*blake3::hash(&[seed]).as_bytes()),
            size: 0,
            blobs: entries,
        }
    }

    /// The layout of version 1: every blob a frame of its own, no offset in the frame.
    fn encode_version_1(file: &IndexFile) -> Vec<u8> {
        let mut out = b"TMIX\x01".to_vec();
        put_varint(&mut out, file.packs.len() as u64);
        for pack in &file.packs {
            out.extend_from_slice(&pack.id.0);
            put_varint(&mut out, pack.size);
            put_varint(&mut out, pack.blobs.len() as u64);
            let mut end = 0u64;
            for blob in &pack.blobs {
                out.extend_from_slice(&blob.id.0);
                out.push(u8::from(blob.kind == BlobKind::ChunkList));
                put_varint(&mut out, zigzag(i128::from(blob.offset) - i128::from(end)));
                put_varint(&mut out, blob.length);
                put_varint(&mut out, blob.raw_length);
                end = blob.offset + blob.length;
            }
        }
        let hash = blake3::hash(&out);
        out.extend_from_slice(hash.as_bytes());
        out
    }

    #[test]
    fn pack_headers_are_binary_and_json_ones_still_read() {
        let blobs = pack(5, 40).blobs;
        let binary = encode_pack_header(&blobs);
        assert_eq!(decode_pack_header(&binary, "data/ab/x").unwrap(), blobs);
        let json = serde_json::to_vec(&blobs).unwrap();
        assert!(json.len() > 3 * binary.len(), "{} {}", json.len(), binary.len());
        assert_eq!(decode_pack_header(&json, "data/ab/x").unwrap(), blobs);
        for cut in [0, 3, 5, 6, 40, binary.len() - 1] {
            let err = decode_pack_header(&binary[..cut], "data/ab/x").unwrap_err().to_string();
            assert!(err.contains("data/ab/x"), "{err}");
        }
        let mut longer = binary.clone();
        longer.push(0);
        let err = decode_pack_header(&longer, "data/ab/x").unwrap_err().to_string();
        assert!(err.contains("1 bytes after the last blob"), "{err}");
    }

    #[test]
    fn version_1_objects_still_read() {
        let mut file = IndexFile {
            packs: vec![pack(1, 10), pack(2, 0), pack(3, 7)],
        };
        file.packs[2].blobs.swap(1, 4);
        assert!(file.packs.iter().flat_map(|p| &p.blobs).all(|b| b.inner_offset == 0));
        assert_eq!(IndexFile::decode(&encode_version_1(&file), "index/x").unwrap(), file);
        // Version 1 knew no frames shared by several blobs.
        let mut bad = encode_version_1(&IndexFile {
            packs: vec![pack(1, 2)],
        });
        bad.truncate(bad.len() - 32);
        let second_flags = 5 + 1 + 32 + 1 + 1 + (32 + 1 + 1 + 1 + 2) + 32;
        bad[second_flags] |= FLAG_SAME_FRAME;
        bad.extend_from_slice(blake3::hash(&bad.clone()).as_bytes());
        let err = IndexFile::decode(&bad, "index/v1").unwrap_err().to_string();
        assert!(err.contains("index/v1") && err.contains("unknown kind"), "{err}");
    }

    #[test]
    fn binary_round_trip_and_json_still_reads() {
        let mut file = IndexFile {
            packs: vec![pack(1, 50), pack(2, 0), pack(3, 7)],
        };
        file.packs[0].size = 1 << 40;
        // Blobs out of offset order encode too (negative gaps).
        file.packs[2].blobs.swap(1, 4);
        assert!(file.packs[0].blobs.iter().any(|b| b.inner_offset > 0));
        let binary = file.encode();
        assert_eq!(IndexFile::decode(&binary, "index/x").unwrap(), file);
        // About 36 to 40 bytes per blob, against about 200 of JSON.
        assert!(binary.len() < 60 * 57 + 100, "{}", binary.len());
        let json = serde_json::to_vec(&file).unwrap();
        assert!(json.len() > 3 * binary.len(), "{} {}", json.len(), binary.len());
        assert_eq!(IndexFile::decode(&json, "index/x").unwrap(), file);
    }

    #[test]
    fn damaged_binary_objects_are_errors_naming_the_object() {
        let binary = IndexFile {
            packs: vec![pack(1, 5)],
        }
        .encode();
        for cut in [0, 3, 5, 40, binary.len() - 33, binary.len() - 1] {
            let err = IndexFile::decode(&binary[..cut], "index/abc").unwrap_err().to_string();
            assert!(err.contains("index/abc"), "{err}");
        }
        for at in 0..binary.len() {
            let mut bad = binary.clone();
            bad[at] ^= 0x40;
            let err = IndexFile::decode(&bad, "index/abc").unwrap_err().to_string();
            assert!(err.contains("index/abc"), "{err}");
        }
        // A well-formed object (checksum right) with a count beyond its size.
        let mut bad = binary[..binary.len() - 32].to_vec();
        bad[5] = 0x7f;
        bad.extend_from_slice(blake3::hash(&bad).as_bytes());
        let err = IndexFile::decode(&bad, "index/abc").unwrap_err().to_string();
        assert!(err.contains("pack count: count larger than the object"), "{err}");
    }

    #[test]
    fn lookups_merges_and_duplicates() {
        let mut index = BlobIndex::default();
        let (a, b, c) = (pack(1, 3000), pack(2, 10), pack(3, 500));
        index.add_packs([&a], "index/1").unwrap();
        assert_eq!(index.len(), 3000);
        // Merging keeps the first location of a blob stored twice.
        let mut again = c.clone();
        again.blobs.push(a.blobs[7]);
        index.add_packs([&b, &again], "index/2").unwrap();
        assert_eq!(index.len(), 3510);
        for p in [&a, &b, &c] {
            for blob in &p.blobs {
                let loc = index.get(&blob.id).unwrap();
                assert_eq!((loc.pack, loc.entry), (p.id, *blob));
            }
        }
        assert!(!index.contains(&Id([0; 32])));
        assert!(!index.contains(&Id([0xff; 32])));
        assert!(index.memory_bytes() < 3510 * 60 + 64 * 1024);
        // An entry past 4 GiB is refused and leaves the index as it was.
        let mut big = pack(4, 2);
        big.blobs[1].offset = 1 << 32;
        let err = index.add_packs([&big], "index/3").unwrap_err().to_string();
        assert!(err.contains("index/3") && err.contains("4 GiB"), "{err}");
        assert_eq!(index.len(), 3510);
        assert!(index.contains(&a.blobs[0].id));
    }
}
