//! Shared helpers of the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bson::{RawDocumentBuf, rawdoc};
use tidemark_repo::chunk_list::for_each_blob;
use tidemark_repo::pack::BlobKind;
use tidemark_repo::snapshot::DataStream;
use tidemark_repo::{ChunkerParams, Id, InitOptions, KdfParams, NoProgress, Repository, Storage, StorageConfig};

pub const PASSWORD: &str = "correct horse battery staple";

/// Small chunks and packs and cheap argon2id so tests run in seconds.
pub fn test_options() -> InitOptions {
    InitOptions {
        chunker: ChunkerParams {
            min_size: 1024,
            avg_size: 4096,
            max_size: 16384,
        },
        document_chunker: ChunkerParams {
            min_size: 2048,
            avg_size: 4096,
            max_size: 16384,
        },
        compression_level: 3,
        pack_size: 256 * 1024,
        kdf: KdfParams {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        },
        ..InitOptions::default()
    }
}

pub async fn memory() -> Storage {
    Storage::open("memory://", &StorageConfig::default()).await.unwrap()
}

pub async fn init_memory() -> (Storage, Repository) {
    let storage = memory().await;
    let repo = Repository::init(storage.clone(), Some(PASSWORD), &test_options())
        .await
        .unwrap();
    (storage, repo)
}

pub fn progress() -> Arc<NoProgress> {
    Arc::new(NoProgress)
}

/// xorshift64 states from a seed: deterministic noise.
fn xorshift(seed: u64) -> impl Iterator<Item = u64> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    std::iter::repeat_with(move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    })
}

/// Deterministic pseudo-random text (xorshift), so zstd cannot collapse it.
pub fn noise(seed: u64, len: usize) -> String {
    xorshift(seed)
        .take(len)
        .map(|x| char::from(b'a' + u8::try_from(x % 26).unwrap()))
        .collect()
}

/// Deterministic pseudo-random bytes: nothing compresses them.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    xorshift(seed).take(len).map(|x| x.to_le_bytes()[0]).collect()
}

/// `n` documents of about 1 KiB each; `version` changes the payload of the documents whose index is in `changed`.
pub fn documents(n: i32, changed: &[i32], version: u64) -> Vec<RawDocumentBuf> {
    (0..n)
        .map(|i| {
            let seed = if changed.contains(&i) {
                u64::try_from(i).unwrap() + 1_000_000 * version
            } else {
                u64::try_from(i).unwrap()
            };
            rawdoc! { "_id": i, "name": format!("doc-{i}"), "payload": noise(seed, 1000) }
        })
        .collect()
}

/// The chunk ids of a stream, in order (read through its chunk lists).
pub async fn chunk_ids(repo: &Repository, data: &DataStream) -> Vec<Id> {
    let mut out = Vec::new();
    for_each_blob(repo, data, None, |id, kind| {
        if kind == BlobKind::Data {
            out.push(id);
        }
    })
    .await
    .unwrap();
    out
}

pub fn concat(docs: &[RawDocumentBuf]) -> Vec<u8> {
    docs.iter().flat_map(|d| d.as_bytes().to_vec()).collect()
}

/// Splits a `.bson` file into documents.
pub fn read_bson_file(path: &Path) -> Vec<RawDocumentBuf> {
    let bytes = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let len = usize::try_from(i32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap())).unwrap();
        out.push(RawDocumentBuf::from_bytes(bytes[pos..pos + len].to_vec()).unwrap());
        pos += len;
    }
    out
}

pub fn fixture(rel: &str) -> PathBuf {
    Path::new("/work/shared/fixtures/mongo-tools").join(rel)
}

/// `check --read-data`: every pack, blob and content hash verified.
pub async fn check_read_data(repo: &Repository) -> tidemark_repo::Result<tidemark_repo::check::CheckReport> {
    tidemark_repo::check::check(
        repo,
        tidemark_repo::check::CheckOptions {
            read_data: true,
            ..tidemark_repo::check::CheckOptions::default()
        },
    )
    .await
}

/// Flips the lowest bit of the byte `offset` bytes into `blob`'s stored form, inside its pack.
pub async fn flip_bit_in_blob(storage: &Storage, repo: &Repository, blob: &Id, offset: u64) {
    let loc = repo.locate(blob).unwrap();
    let key = tidemark_repo::pack::pack_key(&loc.pack);
    let mut bytes = storage.get(&key).await.unwrap().to_vec();
    bytes[usize::try_from(loc.entry.offset + offset).unwrap()] ^= 1;
    storage.put(&key, bytes.into()).await.unwrap();
}

/// The ids (hex) of the blobs stored in the same frame as `blob`, itself included: damage to a
/// frame is reported under whichever of them was being read.
pub async fn frame_mates(repo: &Repository, blob: &Id) -> Vec<String> {
    let loc = repo.locate(blob).unwrap();
    let mut out = Vec::new();
    for (_, file) in repo.index_files().await.unwrap() {
        for pack in file.packs.iter().filter(|p| p.id == loc.pack) {
            out.extend(
                pack.blobs
                    .iter()
                    .filter(|b| b.same_frame(&loc.entry))
                    .map(|b| b.id.to_hex()),
            );
        }
    }
    assert!(out.contains(&blob.to_hex()));
    out
}
