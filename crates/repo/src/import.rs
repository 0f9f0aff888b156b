//! Import of a mongodump directory into a snapshot.
//!
//! The directory is discovered exactly as mongorestore does (`tidemark-format`'s
//! [`discover`]), so whatever the real tools would restore is what gets stored: every namespace
//! with its `metadata.json` kept verbatim, and `oplog.bson` as the member's oplog (its window taken
//! from the entries' `ts`). This is how a dump made by `tidemark dump` or the real mongodump becomes
//! a deduplicated, encrypted snapshot; exporting the snapshot gives the same files back.

use std::io::Read;
use std::path::Path;

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
