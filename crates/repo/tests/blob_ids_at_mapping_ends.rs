//! Blob ids of blobs that end where the process's memory ends.
//!
//! `MasterKeys::blob_ids` hashes many blobs through BLAKE3's multi-lane kernels, whose AVX2 and
//! AVX-512 assembly read up to 48 bytes past the end of a lane (see the `many_hashes` module). A
//! blob ending at the end of its allocation, with nothing mapped after it, must still hash, and to
//! the same id as `blob_id` gives.
//!
//! Blobs are placed at the very end of anonymous mappings. Every other mapping of a row is unmapped
//! again; the kernel places mappings next to each other, so some of the ones kept are followed by
//! a hole (checked in `/proc/self/maps`). It is its own test binary so that no other test maps
//! memory meanwhile. The blobs are separate, and slices of one buffer that ends with the mapping.

#![cfg(target_os = "linux")]

mod common;

use memmap2::MmapMut;
use tidemark_repo::Id;
use tidemark_repo::crypto::MasterKeys;

use common::random_bytes;

/// Whether `address` is inside one of this process's mappings.
fn is_mapped(address: usize) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines().any(|line| {
        let range = line.split(' ').next().unwrap_or_default();
        let bounds = range.split_once('-').and_then(|(start, end)| {
            Some((
                usize::from_str_radix(start, 16).ok()?,
                usize::from_str_radix(end, 16).ok()?,
            ))
        });
        bounds.is_some_and(|(start, end)| (start..end).contains(&address))
    })
}

#[test]
fn blobs_ending_before_an_unmapped_page_hash_like_one_by_one() {
    const SIZE: usize = 1 << 20;
    let keys = MasterKeys::generate(Id::hash(b"repository"), None);
    let mut row: Vec<Option<MmapMut>> = (0..16).map(|_| Some(MmapMut::map_anon(SIZE).unwrap())).collect();
    for (i, mapping) in row.iter_mut().enumerate() {
        if i % 2 == 1 {
            *mapping = None;
        }
    }
    let mut exercised = 0;
    for mapping in row.iter_mut().flatten() {
        let end = mapping.as_ptr() as usize + SIZE;
        if is_mapped(end) {
            continue;
        }
        exercised += 1;
        mapping[SIZE - 8192..].copy_from_slice(&random_bytes(9, 8192));
        // Four blobs (the AVX-512 kernel's four-lane path reads furthest past its first lane),
        // the first ending at the mapping's end, in every shape: whole chunks only, whole chunks
        // and a last chunk with leading blocks, one chunk or less.
        for len in [2048, 4096, 1024 + 960, 2048 + 65, 1000, 1024, 64] {
            let others: Vec<Vec<u8>> = (0..3).map(|i| random_bytes(i, len)).collect();
            let mut blobs: Vec<&[u8]> = vec![&mapping[SIZE - len..]];
            blobs.extend(others.iter().map(Vec::as_slice));
            let one_by_one: Vec<Id> = blobs.iter().map(|b| keys.blob_id(b)).collect();
            assert_eq!(keys.blob_ids(&blobs, None), one_by_one, "blobs of {len} bytes");
        }
        // Blobs of a buffer that ends with the mapping, given as slices of it.
        let buffer = &mapping[SIZE - 8192..];
        let mut blobs: Vec<&[u8]> = Vec::new();
        let mut start = 0;
        for len in [1000, 2048 + 65, 64, 1024 + 960, 1024] {
            blobs.push(&buffer[start..start + len]);
            start += len;
        }
        blobs.push(&buffer[start..]);
        let one_by_one: Vec<Id> = blobs.iter().map(|b| keys.blob_id(b)).collect();
        assert_eq!(keys.blob_ids(&blobs, Some(buffer)), one_by_one);
    }
    assert!(exercised > 0, "no mapping was followed by a hole");
}
