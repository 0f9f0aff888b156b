//! Keyed BLAKE3 of many blobs at once.
//!
//! Blob ids are the keyed BLAKE3 of chunks of one to a few KiB, hundreds of thousands per backup.
//! BLAKE3 splits an input into 1 KiB *BLAKE3 chunks* whose chaining values are independent, and
//! the `blake3` crate compresses as many of them at once as the CPU has SIMD lanes (8 with AVX2,
//! 16 with AVX-512) — but only within one input: a 2 KiB blob fills two lanes, and below four
//! chunks the crate hashes them one block after another. Hashing blob by blob thus ran at a
//! fraction of the speed BLAKE3 has on large inputs, and was the largest single cost of a backup.
//!
//! Here the whole 1 KiB BLAKE3 chunks of a batch of blobs go through the crate's multi-lane
//! kernel together (`blake3::platform::Platform::hash_many`, which the crate keeps public for this
//! kind of use but outside its documented API; the minor version is pinned in `Cargo.toml`): the chunks at
//! the same position of different blobs share their chunk counter, so one call per position
//! hashes them all. The last, partial chunk of a blob (or the only chunk of a blob of at most 1 KiB)
//! holds up to 16 blocks; hashed block after block it cost as much as all the whole chunks. Its
//! whole blocks but the last go through the same kernel, grouped by chunk counter and number of
//! blocks, and only the last block of each blob is compressed alone. The parent nodes of each
//! blob, a few compressions, go through the documented `hazmat` API. The results are exactly
//! `blake3::keyed_hash` of each input; a test compares them for every length around the block,
//! chunk and tree boundaries.
//!
//! The kernels may read past the end of a lane. The AVX2 and AVX-512 assembly load some of a
//! block's 16-byte rows as whole 32- or 64-byte registers and keep only the first row: up to 48
//! bytes after a lane's last block. Inside the crate the lanes are consecutive chunks of one
//! buffer, so those bytes are the next chunk's. Here lanes come from different blobs, and a lane
//! ending at the end of its allocation made that read cross into an unmapped page (SIGSEGV).
//! So [`hash_lanes`] hands over a lane in place only when at least [`SLACK`] bytes known to be
//! readable follow it: the rest of its blob, and when the caller says the blobs are slices of one
//! buffer, the rest of that buffer. Other lanes (such as the last blob's last chunk) are hashed
//! from a copy that has that much after it.

use blake3::IncrementCounter;
use blake3::hazmat::{ChainingValue, Mode, merge_subtrees_non_root, merge_subtrees_root};
use blake3::platform::{Platform, le_bytes_from_words_32, words_from_le_bytes_32};
use blake3::{BLOCK_LEN, CHUNK_LEN, OUT_LEN};

/// BLAKE3 domain flags (specification, table 3).
const CHUNK_START: u8 = 1;
const CHUNK_END: u8 = 1 << 1;
const ROOT: u8 = 1 << 3;
const KEYED_HASH: u8 = 1 << 4;

/// `blake3::keyed_hash(key, input)` of every input, in order. `within`, when the inputs are
/// slices of one buffer, is that buffer (it lets lanes be hashed in place more often).
pub(crate) fn keyed_hashes(key: &[u8; 32], inputs: &[&[u8]], within: Option<&[u8]>) -> Vec<[u8; 32]> {
    let readable: Vec<&[u8]> = inputs.iter().map(|input| readable_from(input, within)).collect();
    // Chaining values of every BLAKE3 chunk of the inputs longer than one chunk, input after
    // input; `first[i]` is where input `i`'s start (inputs of one chunk or less have none).
    let mut first = Vec::with_capacity(inputs.len());
    let mut total = 0usize;
    let mut positions = 0usize;
    for input in inputs {
        first.push(total);
        if input.len() > CHUNK_LEN {
            total += input.len().div_ceil(CHUNK_LEN);
            positions = positions.max(input.len() / CHUNK_LEN);
        }
    }
    let mut cvs: Vec<ChainingValue> = vec![[0; OUT_LEN]; total];

    // Whole chunks, one multi-lane call per position in the inputs.
    let platform = Platform::detect();
    let key_words = words_from_le_bytes_32(key);
    let mut lanes: Vec<&[u8]> = Vec::with_capacity(inputs.len());
    let mut owners: Vec<usize> = Vec::with_capacity(inputs.len());
    let mut out: Vec<u8> = Vec::with_capacity(inputs.len() * OUT_LEN);
    for position in 0..positions {
        lanes.clear();
        owners.clear();
        for (i, input) in inputs.iter().enumerate() {
            if input.len() > CHUNK_LEN && input.len() / CHUNK_LEN > position {
                lanes.push(&readable[i][position * CHUNK_LEN..]);
                owners.push(first[i] + position);
            }
        }
        hash_lanes::<CHUNK_LEN>(&platform, &lanes, &key_words, position as u64, CHUNK_END, &mut out);
        for (cv, &owner) in out.chunks_exact(OUT_LEN).zip(&owners) {
            cvs[owner].copy_from_slice(cv);
        }
    }

    // Last chunks: the chaining value of a partial last chunk, or the hash of a one-chunk input.
    let mut hashes: Vec<[u8; OUT_LEN]> = vec![[0; OUT_LEN]; inputs.len()];
    let mut tails: Vec<Tail<'_>> = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.iter().enumerate() {
        if input.is_empty() {
            hashes[i] = *blake3::keyed_hash(key, input).as_bytes();
            continue;
        }
        let (whole, rest) = input.as_chunks::<CHUNK_LEN>();
        let (counter, bytes, root) = match (whole.len(), rest.is_empty()) {
            (1, true) => (0, &input[..], true),
            (_, true) => continue,
            (0, false) => (0, rest, true),
            (n, false) => (n, rest, false),
        };
        tails.push(Tail {
            owner: i,
            counter,
            bytes,
            readable: &readable[i][counter * CHUNK_LEN..],
            root,
        });
    }
    tails.sort_unstable_by_key(|t| (t.counter, t.leading_blocks()));
    for group in tails.chunk_by(|a, b| (a.counter, a.leading_blocks()) == (b.counter, b.leading_blocks())) {
        let counter = group[0].counter as u64;
        let mut states = vec![key_words; group.len()];
        if let Some(kernel) = leading_blocks_kernel(group[0].leading_blocks()) {
            kernel(&platform, group, &key_words, counter, &mut out, &mut states);
        }
        for (tail, mut cv) in group.iter().zip(states) {
            let last_start = tail.leading_blocks() * BLOCK_LEN;
            let last = &tail.bytes[last_start..];
            let mut block = [0u8; BLOCK_LEN];
            block[..last.len()].copy_from_slice(last);
            let mut flags = KEYED_HASH | CHUNK_END;
            if last_start == 0 {
                flags |= CHUNK_START;
            }
            if tail.root {
                flags |= ROOT;
            }
            // At most BLOCK_LEN (64) bytes.
            let block_len = u8::try_from(last.len()).unwrap_or(u8::MAX);
            platform.compress_in_place(&mut cv, &block, block_len, counter, flags);
            let bytes = le_bytes_from_words_32(&cv);
            if tail.root {
                hashes[tail.owner] = bytes;
            } else {
                cvs[first[tail.owner] + tail.counter] = bytes;
            }
        }
    }

    for ((input, &start), hash) in inputs.iter().zip(&first).zip(hashes.iter_mut()) {
        if input.len() > CHUNK_LEN {
            *hash = root(&cvs[start..start + input.len().div_ceil(CHUNK_LEN)], key);
        }
    }
    hashes
}

/// The last chunk of an input: partial, or the whole of an input of one chunk at most.
struct Tail<'a> {
    /// Index of the input.
    owner: usize,
    /// The chunk's counter (its index in the input).
    counter: usize,
    /// Its bytes (1 to 1024).
    bytes: &'a [u8],
    /// The memory known to be readable from its start (see [`readable_from`]).
    readable: &'a [u8],
    /// Whether it is the whole input, so its last block gives the root hash.
    root: bool,
}

impl Tail<'_> {
    /// Whole blocks before the last block (which may be whole too).
    fn leading_blocks(&self) -> usize {
        self.bytes.len().div_ceil(BLOCK_LEN) - 1
    }
}

/// [`leading_blocks_cvs`] for tails of `blocks` leading blocks (1 to 15; `hash_many` takes arrays of a
/// fixed length, so each count is its own instance); `None` when there are none.
fn leading_blocks_kernel(blocks: usize) -> Option<LeadingBlocks> {
    Some(match blocks {
        1 => leading_blocks_cvs::<{ BLOCK_LEN }>,
        2 => leading_blocks_cvs::<{ 2 * BLOCK_LEN }>,
        3 => leading_blocks_cvs::<{ 3 * BLOCK_LEN }>,
        4 => leading_blocks_cvs::<{ 4 * BLOCK_LEN }>,
        5 => leading_blocks_cvs::<{ 5 * BLOCK_LEN }>,
        6 => leading_blocks_cvs::<{ 6 * BLOCK_LEN }>,
        7 => leading_blocks_cvs::<{ 7 * BLOCK_LEN }>,
        8 => leading_blocks_cvs::<{ 8 * BLOCK_LEN }>,
        9 => leading_blocks_cvs::<{ 9 * BLOCK_LEN }>,
        10 => leading_blocks_cvs::<{ 10 * BLOCK_LEN }>,
        11 => leading_blocks_cvs::<{ 11 * BLOCK_LEN }>,
        12 => leading_blocks_cvs::<{ 12 * BLOCK_LEN }>,
        13 => leading_blocks_cvs::<{ 13 * BLOCK_LEN }>,
        14 => leading_blocks_cvs::<{ 14 * BLOCK_LEN }>,
        15 => leading_blocks_cvs::<{ 15 * BLOCK_LEN }>,
        _ => return None,
    })
}

/// The signature of [`leading_blocks_cvs`].
type LeadingBlocks = fn(&Platform, &[Tail<'_>], &[u32; 8], u64, &mut Vec<u8>, &mut [[u32; 8]]);

/// Sets `states` to the chaining value after the first `N` bytes (the leading blocks) of each tail of
/// `group` (all with the same counter), through the multi-lane kernel.
fn leading_blocks_cvs<const N: usize>(
    platform: &Platform,
    group: &[Tail<'_>],
    key_words: &[u32; 8],
    counter: u64,
    out: &mut Vec<u8>,
    states: &mut [[u32; 8]],
) {
    let lanes: Vec<&[u8]> = group.iter().map(|tail| tail.readable).collect();
    hash_lanes::<N>(platform, &lanes, key_words, counter, 0, out);
    for (state, cv) in states.iter_mut().zip(out.as_chunks::<OUT_LEN>().0) {
        *state = words_from_le_bytes_32(cv);
    }
}

/// Bytes that must be readable after every lane handed to `hash_many` (one block: more than the
/// kernels read past a lane, see the module documentation).
const SLACK: usize = BLOCK_LEN;

/// The memory known to be readable from the start of `input`: to the end of `within` when
/// `input` lies inside it, else `input` itself.
fn readable_from<'a>(input: &'a [u8], within: Option<&'a [u8]>) -> &'a [u8] {
    within
        .and_then(|buffer| {
            let offset = (input.as_ptr() as usize).checked_sub(buffer.as_ptr() as usize)?;
            (offset.checked_add(input.len())? <= buffer.len()).then(|| &buffer[offset..])
        })
        .unwrap_or(input)
}

/// `platform.hash_many` of lanes of `N` bytes (keyed, chunk-start flags, `flags_end` on their
/// last block, all at chunk counter `counter`) into `out`, one chaining value per lane. Each
/// lane is given as the readable memory from its start (see [`readable_from`]); one with fewer
/// than [`SLACK`] bytes of it after the lane is hashed from a copy followed by that many bytes.
fn hash_lanes<const N: usize>(
    platform: &Platform,
    lanes: &[&[u8]],
    key_words: &[u32; 8],
    counter: u64,
    flags_end: u8,
    out: &mut Vec<u8>,
) {
    let in_place = |lane: &[u8]| lane.len() >= N + SLACK;
    let mut copies: Vec<u8> = Vec::new();
    for lane in lanes.iter().filter(|lane| !in_place(lane)) {
        copies.extend_from_slice(&lane[..N]);
    }
    copies.resize(copies.len() + SLACK, 0);
    let mut copied = copies.as_chunks::<N>().0.iter();
    let arrays: Vec<&[u8; N]> = lanes
        .iter()
        .filter_map(|lane| {
            if in_place(lane) {
                lane.first_chunk::<N>()
            } else {
                copied.next()
            }
        })
        .collect();
    debug_assert_eq!(arrays.len(), lanes.len());
    out.clear();
    out.resize(arrays.len() * OUT_LEN, 0);
    platform.hash_many(
        &arrays,
        key_words,
        counter,
        IncrementCounter::No,
        KEYED_HASH,
        CHUNK_START,
        flags_end,
        out,
    );
}

/// The root hash over the chaining values of an input's chunks (at least two).
fn root(cvs: &[ChainingValue], key: &[u8; 32]) -> [u8; 32] {
    let left = left_chunks(cvs.len());
    let (l, r) = cvs.split_at(left);
    *merge_subtrees_root(&subtree(l, key), &subtree(r, key), Mode::KeyedHash(key)).as_bytes()
}

/// The chaining value of a non-root subtree over these chunks' chaining values.
fn subtree(cvs: &[ChainingValue], key: &[u8; 32]) -> ChainingValue {
    if let [one] = cvs {
        return *one;
    }
    let (l, r) = cvs.split_at(left_chunks(cvs.len()));
    merge_subtrees_non_root(&subtree(l, key), &subtree(r, key), Mode::KeyedHash(key))
}

/// Chunks in the left subtree of `n` (at least two): the largest power of two below `n`.
fn left_chunks(n: usize) -> usize {
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::util::test_noise as noise;

    #[test]
    fn equal_blake3_keyed_hash_for_every_shape() {
        let key = *blake3::hash(b"test key").as_bytes();
        let mut lengths: Vec<usize> = vec![0, 1, 63, 64, 65, 1023];
        for chunks in 1..=9 {
            for delta in [-65i64, -64, -1, 0, 1, 64, 65, 700] {
                lengths.push(usize::try_from(chunks * 1024 + delta).unwrap());
            }
        }
        lengths.extend([16 * 1024, 17 * 1024 + 5, 33 * 1024 - 1, 64 * 1024 + 1]);
        // Every number of blocks in a last chunk, ending on a block boundary or not.
        for chunks in 0..=2 {
            for blocks in 0..16 {
                for rest in [1, 17, 63, 64] {
                    lengths.push(chunks * 1024 + blocks * 64 + rest);
                }
            }
        }
        let inputs: Vec<Vec<u8>> = lengths.iter().map(|&len| noise(len, len as u64)).collect();
        let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
        // All at once (lanes of different lengths share calls), one at a time, and in a batch
        // wider than any SIMD degree.
        let all = keyed_hashes(&key, &refs, None);
        for (input, got) in refs.iter().zip(&all) {
            assert_eq!(got, blake3::keyed_hash(&key, input).as_bytes(), "{} bytes", input.len());
            assert_eq!(&keyed_hashes(&key, &[input], None)[0], got);
        }
        // As slices of one buffer, said so: lanes are hashed in place up to the buffer's end.
        let joined = inputs.concat();
        let mut slices: Vec<&[u8]> = Vec::new();
        let mut start = 0;
        for input in &inputs {
            slices.push(&joined[start..start + input.len()]);
            start += input.len();
        }
        assert_eq!(keyed_hashes(&key, &slices, Some(&joined)), all);
        // Inputs outside the buffer said to hold them are hashed as if it were not given.
        assert_eq!(keyed_hashes(&key, &refs, Some(&joined[..4096])), all);
        // Many of the same shape fill the lanes of one call.
        let many: Vec<Vec<u8>> = (0..40)
            .map(|i| noise(2048 + 37 * i, i as u64))
            .chain((0..40).map(|i| noise(1500, 100 + i)))
            .chain((0..40).map(|i| noise(700, 200 + i)))
            .collect();
        let refs: Vec<&[u8]> = many.iter().map(Vec::as_slice).collect();
        for (input, got) in refs.iter().zip(keyed_hashes(&key, &refs, None)) {
            assert_eq!(&got, blake3::keyed_hash(&key, input).as_bytes());
        }
        assert!(keyed_hashes(&key, &[], None).is_empty());
    }

    #[test]
    fn left_subtrees_are_those_of_the_specification() {
        for n in 2..=300u64 {
            let expected = blake3::hazmat::left_subtree_len(n * 1024) / 1024;
            assert_eq!(left_chunks(usize::try_from(n).unwrap()) as u64, expected, "{n} chunks");
        }
    }
}
