//! Opening and creating repositories, the in-memory blob index, and snapshot objects.
//!
//! Object layout (all keys relative to the storage root):
//!
//! | key | contents |
//! |---|---|
//! | `config` | JSON in the clear: format version, repository id, chunker, compression, encryption mode |
//! | `keys/<id>` | JSON in the clear: argon2id salt/params and the sealed master keys |
//! | `data/<xx>/<id>` | packs (see [`crate::pack`]) |
//! | `index/<id>` | sealed binary (JSON before): packs and the blobs in them (see [`crate::index`]) |
//! | `snapshots/<id>` | sealed JSON: snapshot manifests (see [`crate::snapshot`]) |
//! | `locks/<id>` | JSON in the clear: lock holder, mode, refresh time |

use std::sync::{Arc, RwLock};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::chunker::CutRule;
use crate::crypto::{Cipher, Id, KdfParams, KeyFile, MasterKeys};
use crate::error::{RepoError, Result};
use crate::index::{BlobIndex, IndexEncoding, for_each_pack};
use crate::pack::{
    DecodedFrame, IndexFile, IndexPack, PackEntry, blob_bytes, decode_frame_ranges, open_json, pack_key, seal_json,
};
use crate::snapshot::Snapshot;
use crate::util::{hostname, now_unix, parallel_map, rfc3339};
use crate::{Storage, StorageError};

/// Repository format version written and read by this crate (2: chunk lists stored as blobs,
/// document-boundary chunking).
pub const FORMAT_VERSION: u32 = 2;

/// Chunking parameters: FastCDC 2020 for file contents, document-boundary cuts for document
/// streams (see [`crate::chunker`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// Minimum chunk size.
    pub min_size: u32,
    /// Average chunk size.
    pub avg_size: u32,
    /// Maximum chunk size.
    pub max_size: u32,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            min_size: 512 * 1024,
            avg_size: 1024 * 1024,
            max_size: 8 * 1024 * 1024,
        }
    }
}

impl ChunkerParams {
    /// Default parameters of document streams: chunks of a few documents, so that changing one
    /// document of a large collection rewrites only a few KiB.
    pub const DOCUMENTS: ChunkerParams = ChunkerParams {
        min_size: 1024,
        avg_size: 2 * 1024,
        max_size: 64 * 1024,
    };
}

/// The `config` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Format version.
    pub version: u32,
    /// Random repository id.
    pub id: Id,
    /// Chunker parameters of file contents (fixed for the repository's life so chunks dedup
    /// across snapshots).
    pub chunker: ChunkerParams,
    /// Chunker parameters of document streams (namespaces and oplogs), cut between documents.
    pub document_chunker: ChunkerParams,
    /// Which bytes of a document count towards a cut after it; absent in configs written before
    /// the rules had names (their rule, [`CutRule::WholeDocument`]).
    #[serde(default = "CutRule::unnamed")]
    pub document_cut_rule: CutRule,
    /// `zstd`.
    pub compression: String,
    /// zstd level.
    pub compression_level: i32,
    /// The [`Cipher`] that seals objects (`xaes-256-gcm`, `xchacha20poly1305`), or `none`.
    pub encryption: String,
    /// Target pack size in bytes.
    pub pack_size: u64,
}

/// Options of [`Repository::init`].
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Chunking parameters of file contents.
    pub chunker: ChunkerParams,
    /// Chunking parameters of document streams.
    pub document_chunker: ChunkerParams,
    /// zstd level (1..=22).
    pub compression_level: i32,
    /// Target pack size.
    pub pack_size: u64,
    /// argon2id costs for the key.
    pub kdf: KdfParams,
    /// Cipher of an encrypted repository.
    pub cipher: Cipher,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunker: ChunkerParams::default(),
            document_chunker: ChunkerParams::DOCUMENTS,
            compression_level: 3,
            pack_size: 16 * 1024 * 1024,
            kdf: KdfParams::default(),
            cipher: Cipher::Xaes256Gcm,
        }
    }
}

pub use crate::index::BlobLocation;

/// An open repository. Cheap to clone; clones share the blob index.
#[derive(Clone)]
pub struct Repository {
    pub(crate) storage: Storage,
    pub(crate) config: Config,
    pub(crate) keys: Arc<MasterKeys>,
    pub(crate) index: Arc<RwLock<BlobIndex>>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("url", &self.storage.url())
            .field("id", &self.config.id)
            .finish()
    }
}

fn check_chunker(c: ChunkerParams) -> Result<()> {
    let ranges = (64..=1_048_576).contains(&c.min_size)
        && (256..=4_194_304).contains(&c.avg_size)
        && (1024..=16_777_216).contains(&c.max_size);
    if !(ranges && c.min_size <= c.avg_size && c.avg_size <= c.max_size) {
        return Err(RepoError::InvalidOption {
            option: "chunker",
            message: format!("need min <= avg <= max, min in 64..=1Mi, avg in 256..=4Mi, max in 1Ki..=16Mi; got {c:?}"),
        });
    }
    Ok(())
}

fn check_params(options: &InitOptions) -> Result<()> {
    check_chunker(options.chunker)?;
    check_chunker(options.document_chunker)?;
    if !(1..=22).contains(&options.compression_level) {
        return Err(RepoError::InvalidOption {
            option: "compression_level",
            message: format!("{} is outside 1..=22", options.compression_level),
        });
    }
    // Packs end after the blob that reaches the target, so a pack stays well under the 4 GiB
    // that in-memory index records can point into.
    if !(1024..=MAX_PACK_SIZE).contains(&options.pack_size) {
        return Err(RepoError::InvalidOption {
            option: "pack_size",
            message: "must be between 1024 bytes and 2 GiB".into(),
        });
    }
    Ok(())
}

/// Largest pack size target.
const MAX_PACK_SIZE: u64 = 2 << 30;

/// Largest gap between two blobs read with one request.
const READ_GAP: u64 = 64 * 1024;
/// Largest single ranged read.
const READ_SPAN: u64 = 16 * 1024 * 1024;

fn blob_end(loc: &BlobLocation) -> Result<u64> {
    loc.entry
        .offset
        .checked_add(loc.entry.length)
        .ok_or_else(|| RepoError::corrupt(pack_key(&loc.pack), format!("blob {} has a bad offset", loc.entry.id)))
}

/// Decodes `entries` of pack `pack` (key `key`) from `bytes`, the pack's bytes from offset `base`
/// on: entries of one frame next to each other share one decoding; frames are decoded on all
/// cores when there are several. Returns the frames in the order of `entries`, each with its blobs'
/// places, without copying blobs out ([`DecodedFrame::into_blobs`] gives them as plaintexts).
pub(crate) fn decode_frames(
    keys: &MasterKeys,
    bytes: &[u8],
    base: u64,
    entries: &[PackEntry],
    pack: &Id,
    key: &str,
) -> Result<Vec<DecodedFrame>> {
    let frames: Vec<&[PackEntry]> = entries.chunk_by(|a, b| a.same_frame(b)).collect();
    let one = |frame: &&[PackEntry]| -> Result<DecodedFrame> {
        let first = frame[0];
        let relative = PackEntry {
            offset: first
                .offset
                .checked_sub(base)
                .ok_or_else(|| RepoError::corrupt(key, format!("blob {} lies before the bytes read", first.id)))?,
            ..first
        };
        decode_frame_ranges(keys, blob_bytes(bytes, &relative, key)?, frame, pack)
    };
    parallel_map(&frames, frames.len() >= 4, one)
}

impl Repository {
    /// Creates a repository. `password: None` selects the explicit no-encryption mode.
    pub async fn init(storage: Storage, password: Option<&str>, options: &InitOptions) -> Result<Repository> {
        check_params(options)?;
        if storage.head("config").await?.is_some() {
            return Err(RepoError::AlreadyExists {
                url: storage.url().to_owned(),
            });
        }
        let config = Config {
            version: FORMAT_VERSION,
            id: Id::random(),
            chunker: options.chunker,
            document_chunker: options.document_chunker,
            document_cut_rule: CutRule::Geometric,
            compression: "zstd".into(),
            compression_level: options.compression_level,
            encryption: if password.is_some() {
                options.cipher.name()
            } else {
                "none"
            }
            .into(),
            pack_size: options.pack_size,
        };
        let keys = MasterKeys::generate(config.id, password.is_some().then_some(options.cipher));
        let key_file = KeyFile::wrap(
            &keys,
            password.map(str::as_bytes),
            options.kdf,
            rfc3339(now_unix()),
            hostname(),
        )?;
        let key_json = serde_json::to_vec_pretty(&key_file).map_err(|e| RepoError::Usage(e.to_string()))?;
        storage
            .put(&format!("keys/{}", Id::random()), Bytes::from(key_json))
            .await?;
        let config_json = serde_json::to_vec_pretty(&config).map_err(|e| RepoError::Usage(e.to_string()))?;
        // `config` last: a repository exists only once its key does.
        storage.put("config", Bytes::from(config_json)).await?;
        Ok(Repository {
            storage,
            config,
            keys: Arc::new(keys),
            index: Arc::default(),
        })
    }

    /// Opens a repository with a password (`None` for an unencrypted repository) and loads its index.
    pub async fn open(storage: Storage, password: Option<&str>) -> Result<Repository> {
        let config_bytes = match storage.get("config").await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                return Err(RepoError::NotARepository {
                    url: storage.url().to_owned(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        // The version first: another version's config may not even parse as this one's.
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        let versioned: Versioned =
            serde_json::from_slice(&config_bytes).map_err(|e| RepoError::corrupt("config", e.to_string()))?;
        if versioned.version != FORMAT_VERSION {
            return Err(RepoError::UnsupportedVersion {
                url: storage.url().to_owned(),
                found: versioned.version,
                supported: FORMAT_VERSION,
            });
        }
        let config: Config =
            serde_json::from_slice(&config_bytes).map_err(|e| RepoError::corrupt("config", e.to_string()))?;
        check_chunker(config.chunker).map_err(|e| RepoError::corrupt("config", e.to_string()))?;
        check_chunker(config.document_chunker).map_err(|e| RepoError::corrupt("config", e.to_string()))?;
        if !(1..=22).contains(&config.compression_level) || config.pack_size < 1024 {
            return Err(RepoError::corrupt(
                "config",
                "compression level or pack size out of range",
            ));
        }
        let key_objects = storage.list("keys/").await?;
        let mut found = None;
        let encrypted = config.encryption != "none";
        if encrypted && Cipher::from_name(&config.encryption).is_none() {
            return Err(RepoError::corrupt(
                "config",
                format!("unknown encryption {:?}", config.encryption),
            ));
        }
        for meta in &key_objects {
            let raw = storage.get(&meta.key).await?;
            let file: KeyFile =
                serde_json::from_slice(&raw).map_err(|e| RepoError::corrupt(meta.key.clone(), e.to_string()))?;
            // Only keys of the repository's own mode are candidates: a stray clear key cannot make
            // an encrypted repository open without its password (nor block opening with it).
            if (file.kdf == "none") == encrypted {
                continue;
            }
            if let Some(keys) = file.unwrap_keys(password.map(str::as_bytes), &meta.key)? {
                found = Some(keys);
                break;
            }
        }
        let Some(keys) = found else {
            return Err(RepoError::WrongPassword {
                url: storage.url().to_owned(),
                keys: key_objects.len(),
            });
        };
        if keys.repository_id != config.id {
            return Err(RepoError::corrupt("config", "key belongs to another repository"));
        }
        if keys.encryption.is_some() != encrypted || (encrypted && keys.cipher.name() != config.encryption) {
            return Err(RepoError::corrupt(
                "config",
                "encryption mode does not match the repository's key",
            ));
        }
        let repo = Repository {
            storage,
            config,
            keys: Arc::new(keys),
            index: Arc::default(),
        };
        repo.reload_index().await?;
        Ok(repo)
    }

    /// The storage.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether objects are encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.keys.encryption.is_some()
    }

    /// Reads all `index/` objects into memory.
    pub async fn reload_index(&self) -> Result<()> {
        let mut index = BlobIndex::default();
        let objects = self.storage.list("index/").await?;
        index.reserve(BlobIndex::blobs_at_most(objects.iter().map(|m| m.size).sum()));
        for meta in objects {
            let sealed = self.storage.get(&meta.key).await?;
            let plain = open_json(&self.keys, &sealed, &meta.key)?;
            drop(sealed);
            // One pack at a time, so a large object is never held decoded as a whole.
            for_each_pack(&plain, &meta.key, |pack| index.stage(&pack, &meta.key))?;
        }
        index.merge_staged(0);
        *self.index.write().unwrap_or_else(std::sync::PoisonError::into_inner) = index;
        Ok(())
    }

    /// Every index object with its key.
    pub async fn index_files(&self) -> Result<Vec<(String, IndexFile)>> {
        let mut out = Vec::new();
        for meta in self.storage.list("index/").await? {
            let sealed = self.storage.get(&meta.key).await?;
            let plain = open_json(&self.keys, &sealed, &meta.key)?;
            let file = IndexFile::decode(&plain, &meta.key)?;
            out.push((meta.key, file));
        }
        Ok(out)
    }

    /// Writes an index object (binary) and adds it to the in-memory index.
    pub(crate) async fn write_index(&self, packs: Vec<IndexPack>) -> Result<String> {
        self.write_index_as(packs, IndexEncoding::Binary).await
    }

    /// Writes an index object for packs already stored, encoded as `encoding`, and adds it to the
    /// in-memory index; returns its key. Backups, copies and prune do this themselves; the JSON
    /// encoding is for repositories that older versions of tidemark must still read.
    pub async fn write_index_as(&self, packs: Vec<IndexPack>, encoding: IndexEncoding) -> Result<String> {
        let file = IndexFile { packs };
        let plain = match encoding {
            IndexEncoding::Binary => file.encode(),
            IndexEncoding::Json => serde_json::to_vec(&file).map_err(|e| RepoError::Usage(e.to_string()))?,
        };
        let key = format!("index/{}", Id::random());
        let sealed = seal_json(&self.keys, &plain)?;
        drop(plain);
        // Checked before the object is stored, so an index no reader can hold is never written.
        BlobIndex::check_fits(&file.packs, &key)?;
        self.storage.put(&key, Bytes::from(sealed)).await?;
        self.index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .add_packs(&file.packs, &key)?;
        Ok(key)
    }

    /// Location of a blob, if indexed.
    pub fn locate(&self, id: &Id) -> Option<BlobLocation> {
        self.index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
    }

    /// Runs `f` with the in-memory index held for reading: one lock for a whole batch of lookups.
    pub(crate) fn with_index<R>(&self, f: impl FnOnce(&BlobIndex) -> R) -> R {
        f(&self.index.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Whether a blob is indexed.
    pub fn has_blob(&self, id: &Id) -> bool {
        self.locate(id).is_some()
    }

    /// Reads, decrypts, decompresses and verifies one blob.
    pub async fn read_blob(&self, id: &Id) -> Result<Vec<u8>> {
        let mut blobs = self.read_blobs(std::slice::from_ref(id)).await?;
        blobs.pop().ok_or_else(|| RepoError::Usage("no blob read".into()))
    }

    /// Reads several blobs (each verified), in order. Blobs stored next to each other in a pack
    /// are fetched with one ranged read, and decoded on every core.
    pub async fn read_blobs(&self, ids: &[Id]) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::with_capacity(ids.len());
        self.read_frames(ids, |frame| out.extend(frame.into_blobs())).await?;
        Ok(out)
    }

    /// [`Repository::read_blobs`] appended to `out`, one after the other, without a buffer per
    /// blob; returns each blob's length, in order.
    pub async fn read_blobs_into(&self, ids: &[Id], out: &mut Vec<u8>) -> Result<Vec<usize>> {
        let mut lengths = Vec::with_capacity(ids.len());
        self.read_frames(ids, |DecodedFrame { plaintext, ranges }| {
            for range in ranges {
                lengths.push(range.len());
                out.extend_from_slice(&plaintext[range]);
            }
        })
        .await?;
        Ok(lengths)
    }

    /// Reads the frames holding `ids` (each blob verified) and hands them to `each` in the order
    /// of `ids`, each with the places of the blobs asked for. Blobs stored next to each other in
    /// a pack are fetched with one ranged read, and frames decoded on every core.
    async fn read_frames(&self, ids: &[Id], mut each: impl FnMut(DecodedFrame)) -> Result<()> {
        let locations = ids
            .iter()
            .map(|id| {
                self.locate(id).ok_or_else(|| RepoError::MissingBlob {
                    blob: id.to_hex(),
                    referrer: "read".into(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut start = 0;
        while start < locations.len() {
            // A run: blobs of one pack, in increasing offsets with small gaps, up to a size limit.
            let first = locations[start];
            let mut end = start + 1;
            let mut run_end = blob_end(&first)?;
            while let Some(next) = locations.get(end) {
                let next_end = blob_end(next)?;
                let previous = &locations[end - 1];
                if next.pack == previous.pack && next.entry.same_frame(&previous.entry) {
                    // The next blob of the same frame.
                    end += 1;
                    continue;
                }
                if next.pack != first.pack
                    || next.entry.offset < run_end
                    || next.entry.offset - run_end > READ_GAP
                    || next_end - first.entry.offset > READ_SPAN
                {
                    break;
                }
                run_end = next_end;
                end += 1;
            }
            let key = pack_key(&first.pack);
            let bytes = self.storage.get_range(&key, first.entry.offset..run_end).await?;
            let entries: Vec<PackEntry> = locations[start..end].iter().map(|loc| loc.entry).collect();
            let frames = decode_frames(&self.keys, &bytes, first.entry.offset, &entries, &first.pack, &key)?;
            frames.into_iter().for_each(&mut each);
            start = end;
        }
        Ok(())
    }

    /// Ids of all snapshots, sorted.
    pub async fn snapshot_ids(&self) -> Result<Vec<Id>> {
        let mut ids = Vec::new();
        for meta in self.storage.list("snapshots/").await? {
            let name = meta.key.trim_start_matches("snapshots/");
            let id = Id::from_hex(name)
                .ok_or_else(|| RepoError::corrupt(meta.key.clone(), "object name is not a snapshot id"))?;
            ids.push(id);
        }
        Ok(ids)
    }

    /// Loads one snapshot manifest, checking that its content matches its id.
    pub async fn load_snapshot(&self, id: &Id) -> Result<Snapshot> {
        let key = format!("snapshots/{id}");
        let sealed = match self.storage.get(&key).await {
            Ok(s) => s,
            Err(StorageError::NotFound { .. }) => return Err(RepoError::SnapshotNotFound(id.to_hex())),
            Err(e) => return Err(e.into()),
        };
        let plain = open_json(&self.keys, &sealed, &key)?;
        if Id::hash(&plain) != *id {
            return Err(RepoError::corrupt(key, "manifest does not match its id"));
        }
        let snapshot: Snapshot = serde_json::from_slice(&plain).map_err(|e| RepoError::corrupt(&key, e.to_string()))?;
        if snapshot.version > crate::snapshot::MANIFEST_VERSION {
            return Err(RepoError::Usage(format!(
                "{key}: manifest version {} was written by a newer tidemark (this one reads up to {})",
                snapshot.version,
                crate::snapshot::MANIFEST_VERSION
            )));
        }
        Ok(snapshot)
    }

    /// All snapshots, oldest first.
    pub async fn snapshots(&self) -> Result<Vec<(Id, Snapshot)>> {
        let mut out = Vec::new();
        for id in self.snapshot_ids().await? {
            let snap = self.load_snapshot(&id).await?;
            out.push((id, snap));
        }
        out.sort_by_key(|s| (s.1.time, s.1.time_nanos, s.0));
        Ok(out)
    }

    /// Resolves a full id, a unique hex prefix, or `latest`.
    pub async fn find_snapshot(&self, text: &str) -> Result<Id> {
        if text == "latest" {
            let all = self.snapshots().await?;
            return all
                .last()
                .map(|(id, _)| *id)
                .ok_or_else(|| RepoError::SnapshotNotFound("latest".into()));
        }
        let lower = text.to_ascii_lowercase();
        let matches: Vec<Id> = self
            .snapshot_ids()
            .await?
            .into_iter()
            .filter(|id| id.to_hex().starts_with(&lower))
            .collect();
        match matches.as_slice() {
            [] => Err(RepoError::SnapshotNotFound(text.to_owned())),
            [one] => Ok(*one),
            _ => Err(RepoError::AmbiguousSnapshot(text.to_owned())),
        }
    }

    /// Stores a manifest (the commit point) and returns its id.
    pub(crate) async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<Id> {
        let json = serde_json::to_vec(snapshot).map_err(|e| RepoError::Usage(e.to_string()))?;
        let id = Id::hash(&json);
        self.storage
            .put(&format!("snapshots/{id}"), Bytes::from(seal_json(&self.keys, &json)?))
            .await?;
        Ok(id)
    }

    /// Adds another password.
    pub async fn add_key(&self, password: &str, kdf: KdfParams) -> Result<String> {
        if !self.is_encrypted() {
            return Err(RepoError::PasswordMode(
                "an unencrypted repository has no passwords".into(),
            ));
        }
        let file = KeyFile::wrap(
            &self.keys,
            Some(password.as_bytes()),
            kdf,
            rfc3339(now_unix()),
            hostname(),
        )?;
        let json = serde_json::to_vec_pretty(&file).map_err(|e| RepoError::Usage(e.to_string()))?;
        let key = format!("keys/{}", Id::random());
        self.storage.put(&key, Bytes::from(json)).await?;
        Ok(key)
    }
}
