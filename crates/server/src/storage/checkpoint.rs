//! Checkpoints: a complete copy of the state in fresh data files, switched in atomically.
//!
//! [`CheckpointWriter`] writes `checkpoint-<lsn>.tmp/` (one raw BSON stream per collection plus
//! `catalog.bson`), fsyncs every file, renames the directory into place and finally replaces `CURRENT`, which is
//! the commit point: a crash at any earlier moment leaves the previous checkpoint in charge. [`read_current`]
//! loads the checkpoint `CURRENT` names and proves every file complete (length, document count, CRC-32C)
//! before trusting it. The exact layout is documented in the [`crate::storage`] module docs.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use bson::{Bson, Document, RawDocument, RawDocumentBuf, doc};

use super::codec::uuid_bson;
use super::{FORMAT_VERSION, StorageError, StorageResult, sync_dir, write_atomic};
use crate::engine::Namespace;

/// Name of the pointer file naming the current checkpoint.
pub const CURRENT_FILE: &str = "CURRENT";
/// Name of the catalog file inside a checkpoint directory.
pub const CATALOG_FILE: &str = "catalog.bson";
/// Value of the catalog's `format` field.
pub const CATALOG_FORMAT: &str = "tidemark-checkpoint";

const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// Directory name of the checkpoint at `lsn`.
pub fn checkpoint_dir_name(lsn: u64) -> String {
    format!("checkpoint-{lsn:016x}")
}

/// Parses a checkpoint directory name back into its LSN.
pub fn parse_checkpoint_dir_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("checkpoint-")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// What the catalog records about one collection or view.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionMeta {
    /// Its namespace.
    pub ns: Namespace,
    /// Its UUID.
    pub uuid: [u8; 16],
    /// Creation options (capped settings, validator, view definition, ...).
    pub options: Document,
    /// Full index specs, `_id_` first.
    pub indexes: Vec<Document>,
}

/// One collection of a loaded checkpoint.
#[derive(Debug, Clone)]
pub struct CollectionImage {
    /// Catalog entry.
    pub meta: CollectionMeta,
    /// Documents in natural order.
    pub docs: Vec<RawDocumentBuf>,
}

/// A loaded checkpoint.
#[derive(Debug, Clone)]
pub struct CheckpointData {
    /// LSN of the last batch it contains.
    pub lsn: u64,
    /// Its directory.
    pub dir: PathBuf,
    /// Collections in catalog order.
    pub collections: Vec<CollectionImage>,
}

struct CrcWriter {
    inner: BufWriter<File>,
    digest: crc::Digest<'static, u32>,
    bytes: u64,
}

/// Writes a checkpoint; nothing is visible to readers until [`CheckpointWriter::commit`].
pub struct CheckpointWriter {
    dbpath: PathBuf,
    tmp_dir: PathBuf,
    lsn: u64,
    entries: Vec<Bson>,
    /// Data files written but not yet fsynced (done in [`CheckpointWriter::commit`], so that the caller can
    /// release its locks once the bytes are in the OS).
    files: Vec<(PathBuf, File)>,
}

impl std::fmt::Debug for CheckpointWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointWriter")
            .field("tmp_dir", &self.tmp_dir)
            .field("lsn", &self.lsn)
            .finish()
    }
}

impl CheckpointWriter {
    /// Starts a checkpoint of the state after batch `lsn`, in a temporary directory of `dbpath`.
    pub fn begin(dbpath: &Path, lsn: u64) -> StorageResult<Self> {
        let tmp_dir = dbpath.join(format!("{}.tmp", checkpoint_dir_name(lsn)));
        if tmp_dir.exists() {
            std::fs::remove_dir_all(&tmp_dir).map_err(StorageError::io("remove leftover", &tmp_dir))?;
        }
        std::fs::create_dir_all(&tmp_dir).map_err(StorageError::io("create directory", &tmp_dir))?;
        Ok(Self {
            dbpath: dbpath.to_path_buf(),
            tmp_dir,
            lsn,
            entries: Vec::new(),
            files: Vec::new(),
        })
    }

    /// Writes one collection's catalog entry and documents (in natural order) to the OS; they reach the disk
    /// in [`CheckpointWriter::commit`].
    pub fn add_collection<'a>(
        &mut self,
        meta: &CollectionMeta,
        docs: impl IntoIterator<Item = &'a RawDocument>,
    ) -> StorageResult<()> {
        let file_name = format!("collection-{}.bson", self.entries.len());
        let path = self.tmp_dir.join(&file_name);
        let file = File::create(&path).map_err(StorageError::io("create", &path))?;
        let mut w = CrcWriter {
            inner: BufWriter::new(file),
            digest: CRC32C.digest(),
            bytes: 0,
        };
        let mut count: i64 = 0;
        for d in docs {
            let bytes = d.as_bytes();
            w.inner.write_all(bytes).map_err(StorageError::io("write", &path))?;
            w.digest.update(bytes);
            w.bytes = w.bytes.saturating_add(u64::try_from(bytes.len()).unwrap_or(u64::MAX));
            count = count.saturating_add(1);
        }
        let file = w
            .inner
            .into_inner()
            .map_err(|e| StorageError::io("write", &path)(e.into_error()))?;
        self.files.push((path, file));
        let bytes = i64::try_from(w.bytes).unwrap_or(i64::MAX);
        self.entries.push(Bson::Document(doc! {
            "db": &meta.ns.db,
            "coll": &meta.ns.coll,
            "uuid": uuid_bson(&meta.uuid),
            "options": meta.options.clone(),
            "indexes": meta.indexes.iter().cloned().map(Bson::Document).collect::<Vec<_>>(),
            "file": file_name,
            "count": count,
            "bytes": bytes,
            "crc32c": i64::from(w.digest.finalize()),
        }));
        Ok(())
    }

    /// Writes the catalog, makes everything durable and switches `CURRENT` to this checkpoint.
    pub fn commit(self) -> StorageResult<PathBuf> {
        for (path, file) in &self.files {
            file.sync_all().map_err(StorageError::io("fsync", path))?;
        }
        let catalog = doc! {
            "format": CATALOG_FORMAT,
            "version": i64::from(FORMAT_VERSION),
            "lsn": i64::try_from(self.lsn).map_err(|_| StorageError::Apply {
                what: "checkpoint".into(),
                reason: format!("lsn {} is too large", self.lsn),
            })?,
            "collections": self.entries,
        };
        let mut bytes = Vec::new();
        catalog.to_writer(&mut bytes).map_err(|e| StorageError::Apply {
            what: format!("catalog of checkpoint {}", self.tmp_dir.display()),
            reason: e.to_string(),
        })?;
        let catalog_path = self.tmp_dir.join(CATALOG_FILE);
        let mut f = File::create(&catalog_path).map_err(StorageError::io("create", &catalog_path))?;
        f.write_all(&bytes).map_err(StorageError::io("write", &catalog_path))?;
        f.sync_all().map_err(StorageError::io("fsync", &catalog_path))?;
        drop(f);
        sync_dir(&self.tmp_dir)?;
        let name = checkpoint_dir_name(self.lsn);
        let final_dir = self.dbpath.join(&name);
        if final_dir.exists() {
            // Same LSN means same content; an earlier identical checkpoint is replaced.
            let current = read_current_name(&self.dbpath)?;
            if current.as_deref() == Some(name.as_str()) {
                std::fs::remove_dir_all(&self.tmp_dir).map_err(StorageError::io("remove", &self.tmp_dir))?;
                return Ok(final_dir);
            }
            std::fs::remove_dir_all(&final_dir).map_err(StorageError::io("remove stale", &final_dir))?;
        }
        std::fs::rename(&self.tmp_dir, &final_dir).map_err(StorageError::io("rename into place", &final_dir))?;
        sync_dir(&self.dbpath)?;
        write_atomic(&self.dbpath, CURRENT_FILE, format!("{name}\n").as_bytes())?;
        Ok(final_dir)
    }
}

/// The checkpoint directory name `CURRENT` holds, if the file exists.
pub fn read_current_name(dbpath: &Path) -> StorageResult<Option<String>> {
    let path = dbpath.join(CURRENT_FILE);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io("read", &path)(e)),
    };
    let name = std::str::from_utf8(&text)
        .ok()
        .map(str::trim_end)
        .filter(|n| parse_checkpoint_dir_name(n).is_some())
        .ok_or_else(|| StorageError::corrupt(&path, 0, "does not name a checkpoint directory"))?;
    Ok(Some(name.to_string()))
}

/// Deletes checkpoint directories (and leftover temporary ones) other than `keep`.
pub fn remove_other_checkpoints(dbpath: &Path, keep: &str) -> StorageResult<()> {
    let entries = std::fs::read_dir(dbpath).map_err(StorageError::io("list", dbpath))?;
    let mut removed = false;
    for entry in entries {
        let entry = entry.map_err(StorageError::io("list", dbpath))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let base = name.strip_suffix(".tmp").unwrap_or(name);
        if name != keep && parse_checkpoint_dir_name(base).is_some() {
            let path = entry.path();
            std::fs::remove_dir_all(&path).map_err(StorageError::io("remove old checkpoint", &path))?;
            removed = true;
        }
    }
    if removed {
        sync_dir(dbpath)?;
    }
    Ok(())
}

fn catalog_field<'a>(catalog: &'a Document, key: &str, path: &Path) -> StorageResult<&'a Bson> {
    catalog
        .get(key)
        .ok_or_else(|| StorageError::corrupt(path, 0, format!("catalog has no '{key}' field")))
}

fn as_u64(v: &Bson, what: &str, path: &Path) -> StorageResult<u64> {
    let n = match v {
        Bson::Int64(n) => *n,
        Bson::Int32(n) => i64::from(*n),
        _ => {
            return Err(StorageError::corrupt(
                path,
                0,
                format!("catalog field '{what}' is not an integer"),
            ));
        }
    };
    u64::try_from(n).map_err(|_| StorageError::corrupt(path, 0, format!("catalog field '{what}' is negative")))
}

fn parse_entry(
    entry: &Bson,
    index: usize,
    catalog_path: &Path,
) -> StorageResult<(CollectionMeta, String, u64, u64, u32)> {
    let bad = |msg: String| StorageError::corrupt(catalog_path, 0, format!("collection entry {index}: {msg}"));
    let Bson::Document(e) = entry else {
        return Err(bad("not a document".into()));
    };
    let s = |k: &str| {
        e.get_str(k)
            .map(str::to_string)
            .map_err(|_| bad(format!("'{k}' is not a string")))
    };
    let ns = Namespace {
        db: s("db")?,
        coll: s("coll")?,
    };
    let uuid = match e.get("uuid") {
        Some(Bson::Binary(b)) => {
            <[u8; 16]>::try_from(b.bytes.as_slice()).map_err(|_| bad("uuid is not 16 bytes".into()))?
        }
        _ => return Err(bad("'uuid' is not a binary".into())),
    };
    let options = e
        .get_document("options")
        .map_err(|_| bad("'options' is not a document".into()))?
        .clone();
    let indexes = match e.get("indexes") {
        Some(Bson::Array(a)) => a
            .iter()
            .map(|i| match i {
                Bson::Document(d) => Ok(d.clone()),
                _ => Err(bad("an index spec is not a document".into())),
            })
            .collect::<StorageResult<Vec<_>>>()?,
        _ => return Err(bad("'indexes' is not an array".into())),
    };
    let file = s("file")?;
    if file.contains('/') || file.contains('\\') || file.starts_with('.') {
        return Err(bad(format!("file name '{file}' leaves the checkpoint directory")));
    }
    let count = as_u64(e.get("count").unwrap_or(&Bson::Null), "count", catalog_path)?;
    let bytes = as_u64(e.get("bytes").unwrap_or(&Bson::Null), "bytes", catalog_path)?;
    let crc = as_u64(e.get("crc32c").unwrap_or(&Bson::Null), "crc32c", catalog_path)?;
    let crc = u32::try_from(crc).map_err(|_| bad("crc32c does not fit in 32 bits".into()))?;
    Ok((
        CollectionMeta {
            ns,
            uuid,
            options,
            indexes,
        },
        file,
        count,
        bytes,
        crc,
    ))
}

/// Splits a data file into documents, checking each length prefix and terminator.
pub fn split_documents(bytes: &[u8], path: &Path) -> StorageResult<Vec<RawDocumentBuf>> {
    let mut docs = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let offset = u64::try_from(pos).unwrap_or(u64::MAX);
        let Some(len_bytes) = bytes.get(pos..pos.saturating_add(4)) else {
            return Err(StorageError::corrupt(
                path,
                offset,
                "document length prefix is cut short",
            ));
        };
        let len = i32::from_le_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
        let len = usize::try_from(len)
            .ok()
            .filter(|l| *l >= 5)
            .ok_or_else(|| StorageError::corrupt(path, offset, format!("invalid document length {len}")))?;
        let Some(doc_bytes) = pos.checked_add(len).and_then(|end| bytes.get(pos..end)) else {
            return Err(StorageError::corrupt(
                path,
                offset,
                format!(
                    "document of {len} bytes runs past the end of the file ({} bytes)",
                    bytes.len()
                ),
            ));
        };
        let doc = RawDocumentBuf::from_bytes(doc_bytes.to_vec())
            .map_err(|e| StorageError::corrupt(path, offset, format!("invalid BSON document: {e}")))?;
        for element in doc.iter() {
            element.map_err(|e| StorageError::corrupt(path, offset, format!("invalid BSON document: {e}")))?;
        }
        docs.push(doc);
        pos += len;
    }
    Ok(docs)
}

/// Loads the checkpoint named by `CURRENT`, verifying every file; `None` if there is no `CURRENT`.
pub fn read_current(dbpath: &Path) -> StorageResult<Option<CheckpointData>> {
    let Some(name) = read_current_name(dbpath)? else {
        return Ok(None);
    };
    let dir = dbpath.join(&name);
    let lsn = parse_checkpoint_dir_name(&name).unwrap_or_default();
    let catalog_path = dir.join(CATALOG_FILE);
    let bytes = std::fs::read(&catalog_path).map_err(StorageError::io("read", &catalog_path))?;
    let catalog = Document::from_reader(bytes.as_slice())
        .map_err(|e| StorageError::corrupt(&catalog_path, 0, format!("not a BSON document: {e}")))?;
    if catalog.get_str("format") != Ok(CATALOG_FORMAT) {
        return Err(StorageError::Unsupported {
            path: catalog_path,
            reason: format!("format is not '{CATALOG_FORMAT}'"),
        });
    }
    let version = as_u64(
        catalog_field(&catalog, "version", &catalog_path)?,
        "version",
        &catalog_path,
    )?;
    if version != u64::from(FORMAT_VERSION) {
        return Err(StorageError::Unsupported {
            path: catalog_path,
            reason: format!("checkpoint format version {version} (this build reads version {FORMAT_VERSION})"),
        });
    }
    let catalog_lsn = as_u64(catalog_field(&catalog, "lsn", &catalog_path)?, "lsn", &catalog_path)?;
    if catalog_lsn != lsn {
        return Err(StorageError::corrupt(
            &catalog_path,
            0,
            format!("catalog lsn {catalog_lsn} does not match directory {name}"),
        ));
    }
    let Bson::Array(entries) = catalog_field(&catalog, "collections", &catalog_path)? else {
        return Err(StorageError::corrupt(&catalog_path, 0, "'collections' is not an array"));
    };
    let mut collections = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let (meta, file, count, size, crc) = parse_entry(entry, i, &catalog_path)?;
        let path = dir.join(&file);
        let data = std::fs::read(&path).map_err(StorageError::io("read", &path))?;
        let actual = u64::try_from(data.len()).unwrap_or(u64::MAX);
        if actual != size {
            return Err(StorageError::corrupt(
                &path,
                actual.min(size),
                format!("file has {actual} bytes, the catalog says {size}"),
            ));
        }
        let actual_crc = CRC32C.checksum(&data);
        if actual_crc != crc {
            return Err(StorageError::corrupt(
                &path,
                0,
                format!("CRC-32C is {actual_crc:#010x}, the catalog says {crc:#010x}"),
            ));
        }
        let docs = split_documents(&data, &path)?;
        if u64::try_from(docs.len()).unwrap_or(u64::MAX) != count {
            return Err(StorageError::corrupt(
                &path,
                0,
                format!("file holds {} documents, the catalog says {count}", docs.len()),
            ));
        }
        collections.push(CollectionImage { meta, docs });
    }
    Ok(Some(CheckpointData { lsn, dir, collections }))
}

#[cfg(test)]
mod tests {
    use bson::rawdoc;

    use super::*;

    fn meta(db: &str, coll: &str) -> CollectionMeta {
        CollectionMeta {
            ns: Namespace {
                db: db.into(),
                coll: coll.into(),
            },
            uuid: [3; 16],
            options: doc! { "capped": true, "size": 8192_i64 },
            indexes: vec![doc! { "v": 2, "key": { "_id": 1 }, "name": "_id_" }],
        }
    }

    fn write_sample(dbpath: &Path, lsn: u64) -> Vec<RawDocumentBuf> {
        let docs = vec![rawdoc! { "_id": 1, "a": "x" }, rawdoc! { "_id": 2, "b": [1, 2] }];
        let mut w = CheckpointWriter::begin(dbpath, lsn).unwrap();
        w.add_collection(&meta("app", "c.d"), docs.iter().map(|d| d.as_ref()))
            .unwrap();
        w.add_collection(&meta("app", "empty"), std::iter::empty()).unwrap();
        w.commit().unwrap();
        docs
    }

    #[test]
    fn write_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_current(dir.path()).unwrap().is_none());
        let docs = write_sample(dir.path(), 42);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(CURRENT_FILE)).unwrap(),
            "checkpoint-000000000000002a\n"
        );
        let cp = read_current(dir.path()).unwrap().unwrap();
        assert_eq!(cp.lsn, 42);
        assert_eq!(cp.collections.len(), 2);
        assert_eq!(cp.collections[0].meta, meta("app", "c.d"));
        assert_eq!(cp.collections[0].docs, docs);
        assert!(cp.collections[1].docs.is_empty());
        assert!(!dir.path().join("checkpoint-000000000000002a.tmp").exists());
    }

    #[test]
    fn data_file_is_a_plain_bson_stream_and_catalog_is_documented_shape() {
        // pymongo's bson module reads the data file as concatenated documents (like a mongodump .bson file)
        // and checks the catalog fields, including the CRC-32C... computed by Python's own implementation.
        let dir = tempfile::tempdir().unwrap();
        write_sample(dir.path(), 7);
        let script = r#"
import bson, sys, os
d = sys.argv[1]
name = open(os.path.join(d, 'CURRENT')).read().strip()
cp = os.path.join(d, name)
cat = bson.decode(open(os.path.join(cp, 'catalog.bson'), 'rb').read())
assert cat['format'] == 'tidemark-checkpoint' and cat['version'] == 1 and cat['lsn'] == 7, cat
e = cat['collections'][0]
assert (e['db'], e['coll'], e['count']) == ('app', 'c.d', 2), e
data = open(os.path.join(cp, e['file']), 'rb').read()
assert len(data) == e['bytes']
docs = bson.decode_all(data)
assert docs == [{'_id': 1, 'a': 'x'}, {'_id': 2, 'b': [1, 2]}], docs
def crc32c(b):
    crc = 0xFFFFFFFF
    for x in b:
        crc ^= x
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF
assert crc32c(data) == e['crc32c'], (crc32c(data), e['crc32c'])
assert e['uuid'].subtype == 4
print('ok')
"#;
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    #[test]
    fn damaged_data_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        write_sample(dir.path(), 1);
        let file = dir.path().join("checkpoint-0000000000000001/collection-0.bson");
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[10] ^= 1;
        std::fs::write(&file, &bytes).unwrap();
        let err = read_current(dir.path()).unwrap_err().to_string();
        assert!(err.contains("collection-0.bson") && err.contains("CRC-32C"), "{err}");
        bytes.truncate(20);
        std::fs::write(&file, &bytes).unwrap();
        let err = read_current(dir.path()).unwrap_err().to_string();
        assert!(err.contains("collection-0.bson") && err.contains("offset 20"), "{err}");
    }

    #[test]
    fn new_checkpoint_replaces_current_and_old_ones_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        write_sample(dir.path(), 1);
        let mut w = CheckpointWriter::begin(dir.path(), 5).unwrap();
        w.add_collection(&meta("x", "y"), std::iter::empty()).unwrap();
        // Until commit, the old checkpoint is the current one.
        assert_eq!(read_current(dir.path()).unwrap().unwrap().lsn, 1);
        w.commit().unwrap();
        let cp = read_current(dir.path()).unwrap().unwrap();
        assert_eq!((cp.lsn, cp.collections.len()), (5, 1));
        remove_other_checkpoints(dir.path(), &checkpoint_dir_name(5)).unwrap();
        assert!(!dir.path().join(checkpoint_dir_name(1)).exists());
        assert!(dir.path().join(checkpoint_dir_name(5)).exists());
    }

    #[test]
    fn split_documents_rejects_bad_framing_without_panicking() {
        let p = Path::new("x.bson");
        assert!(split_documents(&[1, 0], p).is_err());
        assert!(split_documents(&[4, 0, 0, 0, 0], p).is_err());
        assert!(split_documents(&[0xff, 0xff, 0xff, 0x7f, 0], p).is_err());
        assert!(split_documents(&[0xff, 0xff, 0xff, 0xff, 0], p).is_err());
        assert_eq!(split_documents(&[5, 0, 0, 0, 0], p).unwrap().len(), 1);
    }

    proptest::proptest! {
        #[test]
        fn split_documents_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..128)) {
            let _ = split_documents(&bytes, Path::new("x.bson"));
        }
    }
}
