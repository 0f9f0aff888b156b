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
//! hashes them all. The partial last chunk and the parent nodes of each blob, a few compressions,
//! go through the documented `hazmat` API, and inputs of one chunk or less through
//! `blake3::keyed_hash`. The results are exactly `blake3::keyed_hash` of each input; a test
//! compares them for every length around the chunk and tree boundaries.

use blake3::IncrementCounter;
use blake3::hazmat::{ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root};
use blake3::platform::{Platform, words_from_le_bytes_32};
use blake3::{CHUNK_LEN, OUT_LEN};

/// BLAKE3 domain flags (specification, table 3).
const CHUNK_START: u8 = 1;
const CHUNK_END: u8 = 1 << 1;
const KEYED_HASH: u8 = 1 << 4;

/// `blake3::keyed_hash(key, input)` of every input, in order.
pub(crate) fn keyed_hashes(key: &[u8; 32], inputs: &[&[u8]]) -> Vec<[u8; 32]> {
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
    let mut lanes: Vec<&[u8; CHUNK_LEN]> = Vec::with_capacity(inputs.len());
    let mut owners: Vec<usize> = Vec::with_capacity(inputs.len());
    let mut out: Vec<u8> = Vec::with_capacity(inputs.len() * OUT_LEN);
    for position in 0..positions {
        lanes.clear();
        owners.clear();
        for (i, input) in inputs.iter().enumerate() {
            if input.len() <= CHUNK_LEN {
                continue;
            }
            let (whole, _) = input.as_chunks::<CHUNK_LEN>();
            if let Some(chunk) = whole.get(position) {
                lanes.push(chunk);
                owners.push(first[i] + position);
            }
        }
        out.clear();
        out.resize(lanes.len() * OUT_LEN, 0);
        platform.hash_many(
            &lanes,
            &key_words,
            position as u64,
            IncrementCounter::No,
            KEYED_HASH,
            CHUNK_START,
            CHUNK_END,
            &mut out,
        );
        for (cv, &owner) in out.chunks_exact(OUT_LEN).zip(&owners) {
            cvs[owner].copy_from_slice(cv);
        }
    }

    inputs
        .iter()
        .zip(&first)
        .map(|(input, &start)| {
            if input.len() <= CHUNK_LEN {
                return *blake3::keyed_hash(key, input).as_bytes();
            }
            let chunks = input.len().div_ceil(CHUNK_LEN);
            let (whole, tail) = input.as_chunks::<CHUNK_LEN>();
            if !tail.is_empty() {
                cvs[start + whole.len()] = blake3::Hasher::new_keyed(key)
                    .set_input_offset((whole.len() * CHUNK_LEN) as u64)
                    .update(tail)
                    .finalize_non_root();
            }
            root(&cvs[start..start + chunks], key)
        })
        .collect()
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
        let inputs: Vec<Vec<u8>> = lengths.iter().map(|&len| noise(len, len as u64)).collect();
        let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
        // All at once (lanes of different lengths share calls), one at a time, and in a batch
        // wider than any SIMD degree.
        let all = keyed_hashes(&key, &refs);
        for (input, got) in refs.iter().zip(&all) {
            assert_eq!(got, blake3::keyed_hash(&key, input).as_bytes(), "{} bytes", input.len());
            assert_eq!(&keyed_hashes(&key, &[input])[0], got);
        }
        let many: Vec<Vec<u8>> = (0..40).map(|i| noise(2048 + 37 * i, i as u64)).collect();
        let refs: Vec<&[u8]> = many.iter().map(Vec::as_slice).collect();
        for (input, got) in refs.iter().zip(keyed_hashes(&key, &refs)) {
            assert_eq!(&got, blake3::keyed_hash(&key, input).as_bytes());
        }
        assert!(keyed_hashes(&key, &[]).is_empty());
    }

    #[test]
    fn left_subtrees_are_those_of_the_specification() {
        for n in 2..=300u64 {
            let expected = blake3::hazmat::left_subtree_len(n * 1024) / 1024;
            assert_eq!(left_chunks(usize::try_from(n).unwrap()) as u64, expected, "{n} chunks");
        }
    }
}
