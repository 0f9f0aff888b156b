//! Pack files and the index that locates blobs inside them.
//!
//! A blob is one chunk of plaintext (a piece of a namespace's BSON stream, or of a file). New
//! blobs that follow each other in a stream are put together, up to 64 KiB, into one zstd frame
//! (compressed or stored, see [`crate::compression`]), which is sealed and appended to the
//! current pack: a *frame* holds one blob or several, and each blob's [`PackEntry`] places the
//! frame in the pack and the blob in the frame. Packs collect many frames
//! (target size from the repository config, 16 MiB by default) so that object stores see few large
//! objects. A pack ends with its own header, sealed, followed by the header's length as a 4-byte
//! little-endian integer, so a pack alone is enough to rebuild the index:
//!
//! ```text
//! frame_0 | frame_1 | ... | frame_n-1 | sealed(zstd(header: the PackEntry of every blob)) | u32 LE header length
//! ```
//!
//! A pack is stored under `data/<first two hex digits>/<id>` where `id` is the unkeyed BLAKE3 of
//! the whole pack, so a check can verify a pack before trusting anything in it.
//!
//! The index (`index/<random id>`, [`IndexFile`] sealed and zstd-compressed, binary since the
//! [`crate::index`] format, JSON before) maps blob ids to `(pack, offset, length)`. Index objects are only ever added (by backups and copies) or replaced
//! as a whole (by prune, which writes the new index before deleting the old ones).

use serde::{Deserialize, Serialize};

use crate::compression::{Compression, append_frame, decompress, frame_bound};
use crate::crypto::{Id, MasterKeys};
use crate::error::{RepoError, Result};

/// What a blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobKind {
    /// A chunk of a namespace data stream or of a file.
    Data,
    /// A group of a stream's chunk ids (see [`crate::chunk_list`]).
    ChunkList,
}

/// One blob inside a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackEntry {
    /// Keyed hash of the plaintext.
    pub id: Id,
    /// Kind of blob.
    pub kind: BlobKind,
    /// Byte offset in the pack of the sealed frame holding the blob.
    pub offset: u64,
    /// Stored (compressed, sealed) length of that frame.
    pub length: u64,
    /// Plaintext length of the blob.
    pub raw_length: u64,
    /// Where the blob starts in its frame's plaintext: 0 when the frame holds it alone. Blobs of
    /// one frame share `offset` and `length`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub inner_offset: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl PackEntry {
    /// Whether the two entries' blobs are in the same frame (of the same pack).
    pub fn same_frame(&self, other: &PackEntry) -> bool {
        (self.offset, self.length) == (other.offset, other.length)
    }
}

/// Index entry of one pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexPack {
    /// Pack id (BLAKE3 of its bytes).
    pub id: Id,
    /// Pack size in bytes.
    pub size: u64,
    /// Its blobs.
    pub blobs: Vec<PackEntry>,
}

/// Contents of one `index/<id>` object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFile {
    /// Packs described.
    pub packs: Vec<IndexPack>,
}

/// Storage key of a pack.
pub fn pack_key(id: &Id) -> String {
    let hex = id.to_hex();
    format!("data/{}/{}", &hex[..2], hex)
}

/// Compresses (as `compression` says) and seals one blob, into one buffer.
pub fn encode_blob(keys: &MasterKeys, plaintext: &[u8], compression: Compression) -> Result<Vec<u8>> {
    encode_blob_into(keys, plaintext, compression, Vec::new())
}

/// [`encode_blob`] into `buffer` (emptied first), for callers that keep buffers for reuse.
pub fn encode_blob_into(
    keys: &MasterKeys,
    plaintext: &[u8],
    compression: Compression,
    buffer: Vec<u8>,
) -> Result<Vec<u8>> {
    let mut buffer = keys.reuse_seal_buffer(buffer, frame_bound(plaintext.len()));
    append_frame(plaintext, compression, &mut buffer)?;
    keys.seal_in_place(&mut buffer);
    Ok(buffer)
}

/// Largest plaintext of a sealed JSON object (pack header, index, manifest).
const MAX_JSON_OBJECT: u64 = 2 << 30;

/// `seal(zstd(JSON))`: how pack headers, index objects and manifests are stored. Their hex ids and
/// repeated field names compress to well under half, which matters once chunks are a few KiB.
pub(crate) fn seal_json(keys: &MasterKeys, json: &[u8]) -> Result<Vec<u8>> {
    encode_blob(keys, json, Compression::Level(JSON_LEVEL))
}

/// zstd level of sealed JSON objects: hex ids dominate them, and entropy coding alone halves
/// those, so higher levels gain little and an index of a large backup is written at its end.
const JSON_LEVEL: i32 = 1;

/// Opens an object written by [`seal_json`], returning its plaintext (JSON text, or a binary
/// index object).
pub(crate) fn open_json(keys: &MasterKeys, sealed: &[u8], object: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let compressed = keys.open(sealed, object)?;
    let mut json = Vec::new();
    zstd::stream::read::Decoder::new(&compressed[..])
        .and_then(|d| d.take(MAX_JSON_OBJECT + 1).read_to_end(&mut json))
        .map_err(|e| RepoError::corrupt(object, format!("zstd: {e}")))?;
    if json.len() as u64 > MAX_JSON_OBJECT {
        return Err(RepoError::corrupt(object, "larger than 2 GiB once decompressed"));
    }
    Ok(json)
}

/// Largest plaintext of one frame: a file chunk (16 MiB at most) alone, or blobs packed together
/// up to [`crate::writer::FRAME_BYTES`].
const MAX_FRAME: u64 = 16 * 1024 * 1024;

/// Opens and decompresses one sealed frame; errors name `object`.
fn open_frame(keys: &MasterKeys, stored: &[u8], object: &dyn Fn() -> String) -> Result<Vec<u8>> {
    let compressed = keys.open(stored, &object())?;
    // Every frame records its plaintext size (see `crate::compression`).
    let size = match zstd::zstd_safe::get_frame_content_size(&compressed) {
        Ok(Some(size)) if size <= MAX_FRAME => size,
        Ok(Some(_)) => return Err(RepoError::corrupt(object(), "frame larger than 16 MiB")),
        _ => return Err(RepoError::corrupt(object(), "zstd: no frame content size")),
    };
    let capacity = usize::try_from(size).map_err(|_| RepoError::corrupt(object(), "frame does not fit in memory"))?;
    let plaintext =
        decompress(&compressed, capacity).map_err(|e| RepoError::corrupt(object(), format!("zstd: {e}")))?;
    if plaintext.len() as u64 != size {
        return Err(RepoError::corrupt(object(), "frame shorter than its content size"));
    }
    Ok(plaintext)
}

/// Opens, decompresses and verifies one blob against its id.
pub fn decode_blob(keys: &MasterKeys, stored: &[u8], entry: &PackEntry, pack: &Id) -> Result<Vec<u8>> {
    let mut blobs = decode_frame(keys, stored, std::slice::from_ref(entry), pack)?;
    blobs.pop().ok_or_else(|| RepoError::Usage("no blob decoded".into()))
}

/// Opens and decompresses one frame (`stored`) and returns the plaintext of each of `entries`
/// (blobs of that frame, in any order), each verified against its id. The error names the pack,
/// and the blob at fault.
pub fn decode_frame(keys: &MasterKeys, stored: &[u8], entries: &[PackEntry], pack: &Id) -> Result<Vec<Vec<u8>>> {
    decode_frame_ranges(keys, stored, entries, pack).map(DecodedFrame::into_blobs)
}

/// A frame's plaintext and where each requested blob lies in it.
pub(crate) struct DecodedFrame {
    /// The whole plaintext of the frame.
    pub plaintext: Vec<u8>,
    /// The blobs' bytes, in the order they were asked for.
    pub ranges: Vec<std::ops::Range<usize>>,
}

impl DecodedFrame {
    /// Each blob in a buffer of its own, in order; a blob alone in its frame keeps the frame's.
    pub(crate) fn into_blobs(self) -> Vec<Vec<u8>> {
        let DecodedFrame { plaintext, ranges } = self;
        if let [only] = &ranges[..]
            && only.len() == plaintext.len()
        {
            return vec![plaintext];
        }
        ranges.into_iter().map(|range| plaintext[range].to_vec()).collect()
    }
}

/// [`decode_frame`] without copying the blobs out of the frame's plaintext.
pub(crate) fn decode_frame_ranges(
    keys: &MasterKeys,
    stored: &[u8],
    entries: &[PackEntry],
    pack: &Id,
) -> Result<DecodedFrame> {
    let Some(first) = entries.first() else {
        return Ok(DecodedFrame {
            plaintext: Vec::new(),
            ranges: Vec::new(),
        });
    };
    let frame_name = || {
        if entries.len() == 1 {
            format!("{} (blob {})", pack_key(pack), first.id)
        } else {
            format!(
                "{} (frame at offset {} holding blob {})",
                pack_key(pack),
                first.offset,
                first.id
            )
        }
    };
    let plaintext = open_frame(keys, stored, &frame_name)?;
    let mut ranges = Vec::with_capacity(entries.len());
    for entry in entries {
        let range = usize::try_from(entry.inner_offset).ok().and_then(|start| {
            let end = start.checked_add(usize::try_from(entry.raw_length).ok()?)?;
            (end <= plaintext.len()).then_some(start..end)
        });
        let Some(range) = range else {
            return Err(RepoError::corrupt(
                format!("{} (blob {})", pack_key(pack), entry.id),
                "decompressed length differs from the index",
            ));
        };
        ranges.push(range);
    }
    let blobs: Vec<&[u8]> = ranges.iter().map(|r| &plaintext[r.clone()]).collect();
    for (entry, id) in entries.iter().zip(keys.blob_ids(&blobs, Some(&plaintext))) {
        if id != entry.id {
            return Err(RepoError::corrupt(
                format!("{} (blob {})", pack_key(pack), entry.id),
                "content does not match its id",
            ));
        }
    }
    Ok(DecodedFrame { plaintext, ranges })
}

/// Where a pack starts in its buffer: at the first address that is a multiple of this, so that a
/// local repository writes it with direct I/O straight from the buffer. (Allocators place large
/// buffers a random number of cache lines past a page boundary, which cost a copy of every pack.)
pub const PACK_ALIGN: usize = 4096;

/// Builds one pack in memory.
#[derive(Debug, Default)]
pub struct PackBuilder {
    /// Padding up to an aligned address, then the pack.
    data: Vec<u8>,
    /// Where the pack starts in `data`.
    start: usize,
    entries: Vec<PackEntry>,
}

/// A finished pack in the buffer it was built in (see [`PACK_ALIGN`]).
#[derive(Debug)]
pub struct PackBytes {
    buffer: Vec<u8>,
    start: usize,
}

impl PackBytes {
    /// The pack.
    pub fn bytes(&self) -> &[u8] {
        &self.buffer[self.start..]
    }

    /// The buffer, for building another pack in.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buffer
    }
}

impl AsRef<[u8]> for PackBytes {
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}

impl PackBuilder {
    /// A builder with room for a pack of about `size` bytes, so filling it never moves it.
    pub fn with_capacity(size: usize) -> Self {
        Self::with_buffer(Vec::with_capacity(size + PACK_ALIGN))
    }

    /// A builder filling `buffer` (emptied first), for reusing the buffer of a finished pack.
    pub fn with_buffer(mut buffer: Vec<u8>) -> Self {
        buffer.clear();
        // Within the allocation as long as it has room for the padding (else unaligned, which
        // costs a copy when written, nothing else).
        let start = buffer.as_ptr().align_offset(PACK_ALIGN).min(buffer.capacity());
        buffer.resize(start, 0);
        PackBuilder {
            data: buffer,
            start,
            entries: Vec::new(),
        }
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.data.len() - self.start
    }
    /// Whether no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// Appends an encoded blob (a frame holding it alone).
    pub fn add(&mut self, id: Id, kind: BlobKind, encoded: &[u8], raw_length: u64) {
        self.add_frame(encoded, &[(id, kind, 0, raw_length)]);
    }

    /// Appends an encoded frame holding `blobs`: (id, kind, offset in the frame's plaintext,
    /// length).
    pub fn add_frame(&mut self, encoded: &[u8], blobs: &[(Id, BlobKind, u64, u64)]) {
        let offset = self.len() as u64;
        for &(id, kind, inner_offset, raw_length) in blobs {
            self.entries.push(PackEntry {
                id,
                kind,
                offset,
                length: encoded.len() as u64,
                raw_length,
                inner_offset,
            });
        }
        self.data.extend_from_slice(encoded);
    }
    /// Finishes the pack: returns its bytes and index entry.
    pub fn finish(self, keys: &MasterKeys) -> Result<(PackBytes, IndexPack)> {
        let PackBuilder {
            mut data,
            start,
            entries,
        } = self;
        let header = crate::index::encode_pack_header(&entries);
        let sealed = seal_json(keys, &header)?;
        let len = u32::try_from(sealed.len()).map_err(|_| RepoError::Usage("pack header too large".into()))?;
        data.extend_from_slice(&sealed);
        data.extend_from_slice(&len.to_le_bytes());
        let pack = PackBytes { buffer: data, start };
        let id = Id::hash(pack.bytes());
        let size = pack.bytes().len() as u64;
        Ok((
            pack,
            IndexPack {
                id,
                size,
                blobs: entries,
            },
        ))
    }
}

/// Reads the header of a whole pack (already verified or not), checking every entry stays inside it.
pub fn read_header(keys: &MasterKeys, pack: &[u8], key: &str) -> Result<Vec<PackEntry>> {
    let total = pack.len();
    let len_start = total
        .checked_sub(4)
        .ok_or_else(|| RepoError::corrupt(key, "shorter than 4 bytes"))?;
    let mut len_bytes = [0u8; 4];
    len_bytes.copy_from_slice(&pack[len_start..]);
    let header_len = usize::try_from(u32::from_le_bytes(len_bytes))
        .map_err(|_| RepoError::corrupt(key, "header length does not fit"))?;
    let header_start = len_start
        .checked_sub(header_len)
        .ok_or_else(|| RepoError::corrupt(key, "header length exceeds pack"))?;
    let header = open_json(keys, &pack[header_start..len_start], &format!("{key} (header)"))?;
    let entries = crate::index::decode_pack_header(&header, key)?;
    for e in &entries {
        let end = e.offset.checked_add(e.length);
        if end.is_none_or(|end| end > header_start as u64) {
            return Err(RepoError::corrupt(
                key,
                format!("blob {} lies outside the data area", e.id),
            ));
        }
    }
    Ok(entries)
}

/// Slices an entry out of a pack held in memory (bounds checked).
pub fn blob_bytes<'a>(pack: &'a [u8], entry: &PackEntry, key: &str) -> Result<&'a [u8]> {
    let start = usize::try_from(entry.offset).ok();
    let end = entry
        .offset
        .checked_add(entry.length)
        .and_then(|e| usize::try_from(e).ok());
    match (start, end) {
        (Some(s), Some(e)) if s <= e && e <= pack.len() => Ok(&pack[s..e]),
        _ => Err(RepoError::corrupt(
            key,
            format!("blob {} lies outside the pack", entry.id),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trip() {
        let keys = MasterKeys::generate(Id::random(), Some(crate::crypto::Cipher::Xaes256Gcm));
        let mut b = PackBuilder::with_capacity(1 << 16);
        let blobs: Vec<Vec<u8>> = vec![b"alpha".repeat(100), b"beta".to_vec()];
        for blob in &blobs {
            let enc = encode_blob(&keys, blob, Compression::Level(3)).unwrap();
            b.add(keys.blob_id(blob), BlobKind::Data, &enc, blob.len() as u64);
        }
        let (pack, index) = b.finish(&keys).unwrap();
        let bytes = pack.bytes();
        assert_eq!(pack.bytes().as_ptr().align_offset(PACK_ALIGN), 0);
        assert_eq!(index.id, Id::hash(bytes));
        let entries = read_header(&keys, bytes, "p").unwrap();
        assert_eq!(entries, index.blobs);
        for (e, blob) in entries.iter().zip(&blobs) {
            let got = decode_blob(&keys, blob_bytes(bytes, e, "p").unwrap(), e, &index.id).unwrap();
            assert_eq!(&got, blob);
        }
        // Truncated or garbage packs are errors, not panics.
        assert!(read_header(&keys, &bytes[..3], "p").is_err());
        assert!(read_header(&keys, &[0xff; 8], "p").is_err());
    }
}
