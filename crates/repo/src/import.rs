//! Import of a mongodump directory into a snapshot.
//!
//! The directory is discovered exactly as mongorestore does (`tidemark-format`'s
//! [`discover`]), so whatever the real tools would restore is what gets stored: every namespace
//! with its `metadata.json` kept verbatim, and `oplog.bson` as the member's oplog (its window taken
//! from the entries' `ts`). This is how a dump made by `tidemark dump` or the real mongodump becomes
//! a deduplicated, encrypted snapshot; exporting the snapshot gives the same files back.
//!
//! [`import_archive`] does the same from a `mongodump --archive` stream read once, front to back.
//! Namespaces may interleave (several collections dumped at once): each namespace's documents go
//! straight into its own open stream of the snapshot as they arrive; prelude entries without data
//! (views, empty collections) are stored with their metadata only. [`DumpImport`] is that logic
//! on its own, for a backup that hands the dump engine's batches over directly.

use std::io::Read;
use std::path::Path;

use std::collections::HashMap;

use tidemark_format::archive::{ArchiveEventRef, ArchiveReader, PreludeEntry};
use tidemark_format::directory::{DiscoverOptions, EntryKind, discover};

use crate::error::{RepoError, Result};
use bson::RawDocument;

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

/// A member of a snapshot built from a dump's namespaces as they arrive, in any interleaving: the
/// entries of an archive, or the dump engine's batches handed over directly (nothing serialized
/// in between). Namespaces are named by their index in the prelude, the list of every namespace of
/// the dump with its `metadata.json` text (an archive's prelude; the oplog as database `""`,
/// collection `"oplog"`). Each one is open in the snapshot from its first data to its end;
/// [`DumpImport::finish`] stores the entries that had no data (views, empty collections), oplog last.
pub struct DumpImport<'w> {
    writer: &'w mut SnapshotWriter,
    prelude: Vec<PreludeEntry>,
    /// Which prelude entries are stored already.
    stored: Vec<bool>,
    open: HashMap<usize, OpenNamespace>,
    stats: ImportStats,
    /// Names the input in errors.
    origin: String,
}

impl<'w> DumpImport<'w> {
    /// Starts importing into the writer's current member (records the server version).
    pub fn new(writer: &'w mut SnapshotWriter, server_version: &str, prelude: Vec<PreludeEntry>, origin: &str) -> Self {
        writer.set_server_version(server_version);
        DumpImport {
            writer,
            stored: vec![false; prelude.len()],
            prelude,
            open: HashMap::new(),
            stats: ImportStats::default(),
            origin: origin.to_owned(),
        }
    }

    fn error(&self, message: impl std::fmt::Display) -> RepoError {
        archive_error(&self.origin, message)
    }

    fn name_of(&self, index: usize) -> String {
        format!("{}.{}", self.prelude[index].db, self.prelude[index].collection)
    }

    /// Opens prelude entry `index` if it is not open yet.
    ///
    /// # Errors
    /// An unknown index, a namespace that already ended, or the writer's error.
    pub async fn start(&mut self, index: usize) -> Result<()> {
        let Some(entry) = self.prelude.get(index) else {
            return Err(self.error(format!("unknown namespace {index}")));
        };
        if self.stored[index] {
            return Err(self.error(format!("{} has data after its end", self.name_of(index))));
        }
        if self.open.contains_key(&index) {
            return Ok(());
        }
        let started = if is_oplog(entry) {
            self.stats.oplog = true;
            self.writer.open_oplog()
        } else {
            self.stats.namespaces += 1;
            let metadata = prelude_metadata(entry);
            let name = self.name_of(index);
            // Invalid metadata is the input's fault: name the input.
            self.writer.open_namespace(&name, metadata).await.map_err(|e| match e {
                RepoError::Usage(message) => self.error(message),
                other => other,
            })?
        };
        self.open.insert(index, started);
        Ok(())
    }

    /// Appends a document to prelude entry `index`, which must be open.
    ///
    /// # Errors
    /// A namespace that is not open, or the writer's error.
    pub async fn document(&mut self, index: usize, document: &RawDocument) -> Result<()> {
        let Some(target) = self.open.get_mut(&index) else {
            let name = self.prelude.get(index).map(|_| self.name_of(index));
            return Err(self.error(format!(
                "document of {} outside its data",
                name.unwrap_or_else(|| format!("unknown namespace {index}"))
            )));
        };
        self.writer.write_open(target, document).await?;
        self.stats.documents += 1;
        Ok(())
    }

    /// Ends prelude entry `index` (stored as it is, empty if it never started).
    ///
    /// # Errors
    /// An unknown index, a namespace that already ended, or the writer's error.
    pub async fn end(&mut self, index: usize) -> Result<()> {
        self.start(index).await?;
        if let Some(done) = self.open.remove(&index) {
            self.writer.finish_open(done).await?;
        }
        self.stored[index] = true;
        Ok(())
    }

    /// Stores the entries that had no data, oplog last, and returns what was stored.
    ///
    /// # Errors
    /// A namespace still open (the input ended inside it), or the writer's error.
    pub async fn finish(mut self) -> Result<ImportStats> {
        if let Some(index) = self.open.keys().min() {
            return Err(self.error(format!("the input ends inside {}", self.name_of(*index))));
        }
        let mut rest: Vec<usize> = (0..self.prelude.len()).filter(|i| !self.stored[*i]).collect();
        rest.sort_by_key(|i| is_oplog(&self.prelude[*i]));
        for index in rest {
            self.end(index).await?;
        }
        Ok(self.stats)
    }
}

/// Streams an uncompressed archive into the writer's current member (records the header's server
/// version). `origin` names the input in errors. Namespaces may interleave (an archive written
/// with several concurrent collections): each one is open in the snapshot from its first segment
/// to its end block.
pub async fn import_archive<R: Read>(writer: &mut SnapshotWriter, input: R, origin: &str) -> Result<ImportStats> {
    let mut reader = ArchiveReader::new(input).map_err(|e| archive_error(origin, e))?;
    // Prelude entry of each data namespace.
    let owners: Vec<usize> = reader.namespaces().iter().map(|n| n.prelude_index).collect();
    let server_version = reader.header().server_version.clone();
    let mut import = DumpImport::new(writer, &server_version, reader.prelude().to_vec(), origin);
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
        match event {
            ArchiveEventRef::SegmentStart { .. } => import.start(index).await?,
            ArchiveEventRef::Document { document, .. } => import.document(index, document).await?,
            ArchiveEventRef::NamespaceEnd { .. } => import.end(index).await?,
        }
    }
    import.finish().await
}
