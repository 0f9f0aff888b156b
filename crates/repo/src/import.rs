//! Import of a mongodump directory into a snapshot.
//!
//! The directory is discovered exactly as mongorestore does (`tidemark-format`'s
//! [`discover`]), so whatever the real tools would restore is what gets stored: every namespace
//! with its `metadata.json` kept verbatim, and `oplog.bson` as the member's oplog (its window taken
//! from the entries' `ts`). This is how a dump made by `tidemark dump` or the real mongodump becomes
//! a deduplicated, encrypted snapshot; exporting the snapshot gives the same files back.
//!
//! [`import_archive`] does the same from a `mongodump --archive` stream read once, front to back
//! (a pipe from the dump engine, so a backup stages nothing on disk). The stream must hold one
//! namespace at a time (written with one concurrent collection): each namespace's documents go
//! straight into the snapshot as they arrive; prelude entries without data (views, empty
//! collections) are stored with their metadata only.

use std::io::Read;
use std::path::Path;

use tidemark_format::archive::{ArchiveEvent, ArchiveReader, PreludeEntry};
use tidemark_format::directory::{DiscoverOptions, EntryKind, discover};

use crate::error::{RepoError, Result};
use crate::writer::{NamespaceMetadata, SnapshotWriter};

/// What an import stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportStats {
    /// Namespaces stored (oplog excluded).
    pub namespaces: u64,
    /// Documents stored (oplog entries included).
    pub documents: u64,
    /// Whether an oplog was stored.
    pub oplog: bool,
}

fn import_error(path: &Path, message: impl std::fmt::Display) -> RepoError {
    RepoError::Usage(format!("import {}: {message}", path.display()))
}

fn read_metadata_text(path: &Path, gzip: bool) -> Result<String> {
    let raw = std::fs::read(path).map_err(|e| import_error(path, e))?;
    let bytes = if gzip {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| import_error(path, e))?;
        out
    } else {
        raw
    };
    String::from_utf8(bytes).map_err(|e| import_error(path, e))
}

/// Streams a dump directory into the writer's current member (records the prelude's server version).
pub async fn import_directory(writer: &mut SnapshotWriter, root: &Path, gzip: bool) -> Result<ImportStats> {
    let discovery = discover(
        root,
        &DiscoverOptions {
            gzip,
            ..DiscoverOptions::default()
        },
    )
    .map_err(|e| import_error(root, e))?;
    if let Some(prelude) = &discovery.prelude {
        writer.set_server_version(&prelude.server_version_text);
    }
    let mut stats = ImportStats::default();
    // The oplog goes last, as in the dump itself.
    let (oplogs, namespaces): (Vec<_>, Vec<_>) = discovery.entries.iter().partition(|e| e.kind == EntryKind::Oplog);
    for entry in namespaces {
        let metadata = match &entry.metadata_path {
            Some(path) => {
                // Kept even when empty: mongorestore treats a 0-byte metadata file as "no metadata",
                // and the export must give the same files back.
                NamespaceMetadata::from_json(read_metadata_text(path, entry.gzip)?)
            }
            None => NamespaceMetadata::default(),
        };
        let name = format!("{}.{}", entry.namespace.db, entry.namespace.collection);
        let mut ns = writer.begin_namespace(&name, metadata).await?;
        if let Some(mut reader) = entry.open_data().map_err(|e| import_error(root, e))? {
            while let Some(doc) = reader
                .next_document()
                .map_err(|e| import_error(root, format!("{name}: {e}")))?
            {
                ns.write_document(&doc).await?;
                stats.documents += 1;
            }
        }
        ns.finish().await?;
        stats.namespaces += 1;
    }
    if let Some(entry) = oplogs.first() {
        let mut oplog = writer.begin_oplog();
        if let Some(mut reader) = entry.open_data().map_err(|e| import_error(root, e))? {
            while let Some(doc) = reader
                .next_document()
                .map_err(|e| import_error(root, format!("oplog: {e}")))?
            {
                oplog.write_document(&doc).await?;
                stats.documents += 1;
            }
        }
        oplog.finish().await?;
        stats.oplog = true;
    }
    Ok(stats)
}

fn archive_error(origin: &str, message: impl std::fmt::Display) -> RepoError {
    RepoError::Usage(format!("import archive {origin}: {message}"))
}

fn prelude_metadata(entry: &PreludeEntry) -> NamespaceMetadata {
    if entry.metadata.is_empty() {
        NamespaceMetadata::default()
    } else {
        NamespaceMetadata::from_json(entry.metadata.clone())
    }
}

fn is_oplog(entry: &PreludeEntry) -> bool {
    entry.db.is_empty() && entry.collection == "oplog"
}

/// Streams an uncompressed archive into the writer's current member (records the header's server
/// version). `origin` names the input in errors. Fails if the archive interleaves namespaces.
pub async fn import_archive<R: Read>(writer: &mut SnapshotWriter, input: R, origin: &str) -> Result<ImportStats> {
    let mut reader = ArchiveReader::new(input).map_err(|e| archive_error(origin, e))?;
    writer.set_server_version(&reader.header().server_version);
    let prelude: Vec<PreludeEntry> = reader.prelude().to_vec();
    // Prelude entry of each data namespace.
    let owners: Vec<usize> = reader.namespaces().iter().map(|n| n.prelude_index).collect();
    let mut stored = vec![false; prelude.len()];
    let mut stats = ImportStats::default();
    let next = |reader: &mut ArchiveReader<R>| reader.next_event().map_err(|e| archive_error(origin, e));
    while let Some(event) = next(&mut reader)? {
        let (namespace, started) = match event {
            ArchiveEvent::SegmentStart { namespace, .. } => (namespace, true),
            ArchiveEvent::NamespaceEnd { namespace, .. } => (namespace, false),
            ArchiveEvent::Document { namespace, .. } => {
                return Err(archive_error(
                    origin,
                    format!("document of namespace {namespace} outside a segment"),
                ));
            }
        };
        let index = *owners
            .get(namespace)
            .ok_or_else(|| archive_error(origin, format!("unknown namespace {namespace}")))?;
        let entry = &prelude[index];
        if stored[index] {
            return Err(archive_error(
                origin,
                format!(
                    "{}.{} appears twice (namespaces must not interleave)",
                    entry.db, entry.collection
                ),
            ));
        }
        stored[index] = true;
        let name = format!("{}.{}", entry.db, entry.collection);
        let mut ns = if is_oplog(entry) {
            stats.oplog = true;
            writer.begin_oplog()
        } else {
            stats.namespaces += 1;
            writer.begin_namespace(&name, prelude_metadata(entry)).await?
        };
        // Documents until this namespace's end; other namespaces' segments are an error.
        let mut open = started;
        while open {
            match next(&mut reader)? {
                Some(ArchiveEvent::Document { namespace: n, document }) if n == namespace => {
                    ns.write_document(&document).await?;
                    stats.documents += 1;
                }
                Some(ArchiveEvent::SegmentStart { namespace: n, .. }) if n == namespace => {}
                Some(ArchiveEvent::NamespaceEnd { namespace: n, .. }) if n == namespace => open = false,
                Some(_) => {
                    return Err(archive_error(
                        origin,
                        format!(
                            "{name} is interleaved with another namespace (write the archive with one concurrent collection)"
                        ),
                    ));
                }
                None => return Err(archive_error(origin, format!("the archive ends inside {name}"))),
            }
        }
        ns.finish().await?;
    }
    // Entries without data blocks (views, and tools that skip empty namespaces), oplog last.
    let mut rest: Vec<usize> = (0..prelude.len()).filter(|i| !stored[*i]).collect();
    rest.sort_by_key(|i| is_oplog(&prelude[*i]));
    for index in rest {
        let entry = &prelude[index];
        if is_oplog(entry) {
            stats.oplog = true;
            writer.begin_oplog().finish().await?;
        } else {
            let name = format!("{}.{}", entry.db, entry.collection);
            writer
                .begin_namespace(&name, prelude_metadata(entry))
                .await?
                .finish()
                .await?;
            stats.namespaces += 1;
        }
    }
    Ok(stats)
}
