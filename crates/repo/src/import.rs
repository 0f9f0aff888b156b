//! Import of a mongodump directory into a snapshot.
//!
//! The directory is discovered exactly as mongorestore does (`tidemark-format`'s
//! [`discover`]), so whatever the real tools would restore is what gets stored: every namespace
//! with its `metadata.json` kept verbatim, and `oplog.bson` as the member's oplog (its window taken
//! from the entries' `ts`). This is how a dump made by `tidemark dump` or the real mongodump becomes
//! a deduplicated, encrypted snapshot; exporting the snapshot gives the same files back.
//!
//! [`import_archive`] does the same from a `mongodump --archive` stream read once, front to back
//! (a pipe from the dump engine, so a backup stages nothing on disk). Namespaces may interleave
//! (several collections dumped at once): each namespace's documents go straight into its own open
//! stream of the snapshot as they arrive; prelude entries without data (views, empty collections)
//! are stored with their metadata only.

use std::io::Read;
use std::path::Path;

use std::collections::HashMap;

use tidemark_format::archive::{ArchiveEventRef, ArchiveReader, PreludeEntry};
use tidemark_format::directory::{DiscoverOptions, EntryKind, discover};

use crate::error::{RepoError, Result};
use crate::writer::{NamespaceMetadata, OpenNamespace, SnapshotWriter};

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
/// version). `origin` names the input in errors. Namespaces may interleave (an archive written
/// with several concurrent collections): each one is open in the snapshot from its first segment
/// to its end block.
pub async fn import_archive<R: Read>(writer: &mut SnapshotWriter, input: R, origin: &str) -> Result<ImportStats> {
    let mut reader = ArchiveReader::new(input).map_err(|e| archive_error(origin, e))?;
    writer.set_server_version(&reader.header().server_version);
    let prelude: Vec<PreludeEntry> = reader.prelude().to_vec();
    // Prelude entry of each data namespace.
    let owners: Vec<usize> = reader.namespaces().iter().map(|n| n.prelude_index).collect();
    let mut stored = vec![false; prelude.len()];
    let mut open: HashMap<usize, OpenNamespace> = HashMap::new();
    let mut stats = ImportStats::default();
    let name_of = |index: usize| format!("{}.{}", prelude[index].db, prelude[index].collection);
    loop {
        let event = reader.next_event_ref().map_err(|e| archive_error(origin, e))?;
        let Some(event) = event else { break };
        let namespace = match &event {
            ArchiveEventRef::SegmentStart { namespace, .. }
            | ArchiveEventRef::Document { namespace, .. }
            | ArchiveEventRef::NamespaceEnd { namespace, .. } => *namespace,
        };
        let index = *owners
            .get(namespace)
            .ok_or_else(|| archive_error(origin, format!("unknown namespace {namespace}")))?;
        if stored[index] {
            return Err(archive_error(
                origin,
                format!("{} has data after its end block", name_of(index)),
            ));
        }
        let entry = &prelude[index];
        if let std::collections::hash_map::Entry::Vacant(slot) = open.entry(index)
            && !matches!(event, ArchiveEventRef::Document { .. })
        {
            let started = if is_oplog(entry) {
                stats.oplog = true;
                writer.open_oplog()
            } else {
                stats.namespaces += 1;
                writer.open_namespace(&name_of(index), prelude_metadata(entry)).await?
            };
            slot.insert(started);
        }
        match event {
            ArchiveEventRef::SegmentStart { .. } => {}
            ArchiveEventRef::Document { document, .. } => {
                let target = open.get_mut(&index).ok_or_else(|| {
                    archive_error(origin, format!("document of {} outside a segment", name_of(index)))
                })?;
                writer.write_open(target, document).await?;
                stats.documents += 1;
            }
            ArchiveEventRef::NamespaceEnd { .. } => {
                if let Some(done) = open.remove(&index) {
                    writer.finish_open(done).await?;
                }
                stored[index] = true;
            }
        }
    }
    if let Some(index) = open.keys().min() {
        return Err(archive_error(
            origin,
            format!("the archive ends inside {}", name_of(*index)),
        ));
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
