//! What a dump holds: namespaces, kinds, document counts, sizes, indexes and the oplog window,
//! for a dump directory or an archive, compressed or not.
//!
//! This is the engine behind `tidemark inspect`. It reads a dump once, streaming, with the same
//! readers restore uses, so whatever it accepts restores and whatever it rejects would fail a
//! restore too. With [`InspectOptions::verify`] every document is also fully decoded
//! ([`validate_document`]) and problems are collected per namespace instead of stopping at the
//! first one, so an operator sees everything that is wrong with a dump in one run. Archive CRCs are
//! always checked (the archive reader does it as it goes).
//!
//! Unlike the real tools, which never sniff, this module detects gzip by itself: archives by their
//! magic bytes, directories by their `.gz` file names.

use std::io::Read;
use std::path::{Path, PathBuf};

use bson::{RawDocument, Timestamp};
use serde::Serialize;

use crate::archive::{self, ArchiveEventRef, ArchiveReader};
use crate::bson_stream::{StreamError, validate_document};
use crate::directory::{self, DiscoverOptions, EntryKind};
use crate::metadata::Metadata;
use crate::naming::Namespace;

/// How to inspect.
#[derive(Debug, Clone, Copy, Default)]
pub struct InspectOptions {
    /// Decode every document fully and report what fails.
    pub verify: bool,
    /// Whether the input is gzip'd; `None` detects it.
    pub gzip: Option<bool>,
}

/// Directory or archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DumpFormat {
    /// A mongodump output directory (or a single `.bson` file).
    Directory,
    /// A mongodump `--archive` stream.
    Archive,
}

/// A BSON timestamp as seconds and increment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct OpTime {
    /// Seconds since the Unix epoch.
    pub t: u32,
    /// Ordinal within the second.
    pub i: u32,
}

impl From<Timestamp> for OpTime {
    fn from(ts: Timestamp) -> Self {
        Self {
            t: ts.time,
            i: ts.increment,
        }
    }
}

impl std::fmt::Display for OpTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Timestamp({}, {})", self.t, self.i)
    }
}

/// First and last `ts` of an oplog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OplogWindow {
    /// Smallest `ts` seen.
    pub first: OpTime,
    /// Largest `ts` seen.
    pub last: OpTime,
}

/// One namespace of a dump.
#[derive(Debug, Clone, Serialize)]
pub struct NamespaceSummary {
    /// `db.collection` (the oplog is `.oplog`).
    pub namespace: String,
    /// `collection`, `view`, `timeseries`, `oplog`, `users`, `roles`, `authVersion` or `systemIndexes`.
    pub kind: &'static str,
    /// Documents in the data file or archive blocks.
    pub documents: u64,
    /// Bytes of those documents (uncompressed).
    pub bytes: u64,
    /// Index names from the metadata, in order.
    pub indexes: Vec<String>,
    /// Collection UUID from the metadata.
    pub uuid: Option<String>,
    /// For oplogs: the range of `ts` values.
    pub oplog_window: Option<OplogWindow>,
    /// For archives: the CRC-64/XZ stored in the namespace's EOF block, as 16 hex digits.
    pub crc: Option<String>,
    /// Everything wrong with this namespace (empty when it is fine).
    pub problems: Vec<String>,
}

/// Everything [`inspect`] found.
#[derive(Debug, Clone, Serialize)]
pub struct DumpSummary {
    /// What was inspected.
    pub path: PathBuf,
    /// Directory or archive.
    pub format: DumpFormat,
    /// Whether the input was gzip'd.
    pub gzip: bool,
    /// Source server version (archive header or `prelude.json`), when recorded.
    pub server_version: Option<String>,
    /// Version of the tool that wrote the dump (archives only).
    pub tool_version: Option<String>,
    /// Namespaces in dump order.
    pub namespaces: Vec<NamespaceSummary>,
    /// Files a restore would skip, with the reason (directories only).
    pub skipped: Vec<String>,
    /// Total documents.
    pub documents: u64,
    /// Total document bytes.
    pub bytes: u64,
    /// Whether every document was decoded.
    pub verified: bool,
}

impl DumpSummary {
    /// Number of problems across all namespaces.
    #[must_use]
    pub fn problem_count(&self) -> usize {
        self.namespaces.iter().map(|n| n.problems.len()).sum()
    }
}

/// Why a dump could not be inspected at all (problems inside one namespace of a directory are
/// reported in [`NamespaceSummary::problems`] instead).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InspectError {
    /// The path could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The directory does not follow mongodump's layout.
    #[error(transparent)]
    Directory(#[from] directory::DirectoryError),
    /// The archive is malformed.
    #[error("archive {path}: {source}")]
    Archive {
        /// The archive file.
        path: PathBuf,
        /// What is wrong, with the byte offset.
        #[source]
        source: archive::ArchiveError,
    },
}

/// Summarises the dump at `path`: a directory, a single `.bson` file, or an archive file.
///
/// # Errors
/// See [`InspectError`]. A directory namespace whose data file is broken is reported in its
/// [`NamespaceSummary::problems`]; a broken archive stops the inspection because nothing after
/// the fault can be located.
pub fn inspect(path: &Path, options: &InspectOptions) -> Result<DumpSummary, InspectError> {
    let io_err = |source| InspectError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io_err)?;
    if meta.is_file() && !has_bson_extension(path) {
        return inspect_archive(path, options);
    }
    inspect_directory(path, options)
}

fn has_bson_extension(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    [".bson", ".bson.gz", ".bin"].iter().any(|ext| name.ends_with(ext))
}

fn inspect_archive(path: &Path, options: &InspectOptions) -> Result<DumpSummary, InspectError> {
    let io_err = |source| InspectError::Io {
        path: path.to_owned(),
        source,
    };
    let gzip = match options.gzip {
        Some(g) => g,
        None => crate::archive::gzip::sniff_gzip(path).map_err(io_err)?,
    };
    let file = tidemark_directio::InputFile::open(path).map_err(io_err)?;
    let input: Box<dyn Read> = if gzip {
        Box::new(archive::gzip::gzip_reader(file))
    } else {
        Box::new(file)
    };
    let archive_err = |source| InspectError::Archive {
        path: path.to_owned(),
        source,
    };
    let mut reader = ArchiveReader::new(input).map_err(archive_err)?;

    let mut namespaces: Vec<NamespaceSummary> = reader
        .namespaces()
        .iter()
        .map(|data_ns| {
            let entry = &reader.prelude()[data_ns.prelude_index];
            let logical = Namespace::new(entry.db.clone(), entry.collection.clone());
            let metadata = Metadata::parse(entry.metadata.as_bytes(), &logical.to_string());
            let mut summary = summary_for(
                &logical,
                kind_of(&logical, &entry.type_, metadata.as_ref().ok().and_then(Option::as_ref)),
            );
            match metadata {
                Ok(Some(m)) => describe_metadata(&mut summary, &m),
                Ok(None) => {}
                Err(e) => summary.problems.push(e.to_string()),
            }
            summary
        })
        .collect();

    let mut windows: Vec<Option<OplogWindow>> = vec![None; namespaces.len()];
    while let Some(event) = reader.next_event_ref().map_err(archive_err)? {
        match event {
            ArchiveEventRef::Document { namespace, document } => {
                let summary = &mut namespaces[namespace];
                summary.documents += 1;
                summary.bytes += document.as_bytes().len() as u64;
                check_document(
                    summary,
                    &mut windows[namespace],
                    document,
                    options.verify,
                    summary.documents,
                );
            }
            ArchiveEventRef::NamespaceEnd { namespace, crc, .. } => {
                namespaces[namespace].crc = Some(format!("{crc:016x}"));
            }
            ArchiveEventRef::SegmentStart { .. } => {}
        }
    }
    for (summary, window) in namespaces.iter_mut().zip(windows) {
        summary.oplog_window = window;
    }
    let header = reader.header();
    Ok(finish(DumpSummary {
        path: path.to_owned(),
        format: DumpFormat::Archive,
        gzip,
        server_version: Some(header.server_version.clone()),
        tool_version: Some(header.tool_version.clone()),
        namespaces,
        skipped: Vec::new(),
        documents: 0,
        bytes: 0,
        verified: options.verify,
    }))
}

fn inspect_directory(path: &Path, options: &InspectOptions) -> Result<DumpSummary, InspectError> {
    let gzip = match options.gzip {
        Some(g) => g,
        None => contains_gzip_files(path),
    };
    let discovery = directory::discover(
        path,
        &DiscoverOptions {
            gzip,
            ..DiscoverOptions::default()
        },
    )?;
    let mut namespaces = Vec::with_capacity(discovery.entries.len());
    for entry in &discovery.entries {
        let mut summary = summary_for(&entry.namespace, kind_name(entry.kind, entry.metadata.as_ref()));
        if let Some(m) = &entry.metadata {
            describe_metadata(&mut summary, m);
        }
        let mut window = None;
        match entry.open_data() {
            Ok(Some(mut reader)) => {
                let mut buf = Vec::new();
                loop {
                    match reader.read_into(&mut buf) {
                        Ok(true) => {
                            summary.documents += 1;
                            summary.bytes += buf.len() as u64;
                            match RawDocument::from_bytes(&buf) {
                                Ok(doc) => {
                                    let n = summary.documents;
                                    check_document(&mut summary, &mut window, doc, options.verify, n);
                                }
                                Err(e) => summary.problems.push(format!("document {}: {e}", summary.documents)),
                            }
                        }
                        Ok(false) => break,
                        Err(e) => {
                            summary.problems.push(stream_problem(entry.data_path.as_deref(), &e));
                            break;
                        }
                    }
                }
            }
            Ok(None) => {}
            Err(e) => summary.problems.push(e.to_string()),
        }
        summary.oplog_window = window;
        namespaces.push(summary);
    }
    let skipped = discovery
        .skipped
        .iter()
        .map(|s| format!("{}: {}", s.path.display(), s.reason))
        .collect();
    let server_version = discovery.prelude.as_ref().map(|p| p.server_version_text.clone());
    Ok(finish(DumpSummary {
        path: path.to_owned(),
        format: DumpFormat::Directory,
        gzip,
        server_version,
        tool_version: None,
        namespaces,
        skipped,
        documents: 0,
        bytes: 0,
        verified: options.verify,
    }))
}

fn stream_problem(path: Option<&Path>, error: &StreamError) -> String {
    match path {
        Some(p) => format!("{}: {error}", p.display()),
        None => error.to_string(),
    }
}

/// Whether any file below `path` (or `path` itself) has a gzip dump extension.
pub(crate) fn contains_gzip_files(path: &Path) -> bool {
    let is_gz = |p: &Path| p.to_string_lossy().ends_with(".gz");
    if path.is_file() {
        return is_gz(path);
    }
    let Ok(top) = std::fs::read_dir(path) else { return false };
    top.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            std::fs::read_dir(&p)
                .map(|d| d.flatten().any(|f| is_gz(&f.path())))
                .unwrap_or(false)
        } else {
            is_gz(&p)
        }
    })
}

fn finish(mut summary: DumpSummary) -> DumpSummary {
    summary.documents = summary.namespaces.iter().map(|n| n.documents).sum();
    summary.bytes = summary.namespaces.iter().map(|n| n.bytes).sum();
    summary
}

fn summary_for(namespace: &Namespace, kind: &'static str) -> NamespaceSummary {
    NamespaceSummary {
        namespace: namespace.to_string(),
        kind,
        documents: 0,
        bytes: 0,
        indexes: Vec::new(),
        uuid: None,
        oplog_window: None,
        crc: None,
        problems: Vec::new(),
    }
}

fn describe_metadata(summary: &mut NamespaceSummary, metadata: &Metadata) {
    summary.indexes = metadata
        .indexes
        .iter()
        .filter_map(|i| i.get_str("name").ok().map(str::to_owned))
        .collect();
    summary.uuid.clone_from(&metadata.uuid);
}

/// Kind of an archive namespace: special namespaces first, then the prelude's `type`, then metadata.
fn kind_of(namespace: &Namespace, prelude_type: &str, metadata: Option<&Metadata>) -> &'static str {
    if let Some(kind) = EntryKind::special_for(namespace) {
        return kind_name(kind, metadata);
    }
    match prelude_type {
        "view" => "view",
        "timeseries" => "timeseries",
        _ => kind_name(EntryKind::Collection, metadata),
    }
}

fn kind_name(kind: EntryKind, metadata: Option<&Metadata>) -> &'static str {
    match kind {
        EntryKind::Collection if metadata.is_some_and(Metadata::is_view) => "view",
        EntryKind::Collection if metadata.is_some_and(Metadata::is_timeseries) => "timeseries",
        EntryKind::Collection => "collection",
        EntryKind::View => "view",
        EntryKind::Timeseries => "timeseries",
        EntryKind::Oplog => "oplog",
        EntryKind::Users => "users",
        EntryKind::Roles => "roles",
        EntryKind::AuthVersion => "authVersion",
        EntryKind::SystemIndexes => "systemIndexes",
    }
}

/// Per-document work: the oplog window for oplogs and, when verifying, a full decode.
fn check_document(
    summary: &mut NamespaceSummary,
    window: &mut Option<OplogWindow>,
    doc: &RawDocument,
    verify: bool,
    number: u64,
) {
    if summary.kind == "oplog" {
        match doc.get_timestamp("ts") {
            Ok(ts) => {
                let ts = OpTime::from(ts);
                let w = window.get_or_insert(OplogWindow { first: ts, last: ts });
                w.first = w.first.min(ts);
                w.last = w.last.max(ts);
            }
            Err(e) => summary
                .problems
                .push(format!("oplog entry {number} has no valid ts: {e}")),
        }
    }
    if verify && let Err(e) = validate_document(doc) {
        summary.problems.push(format!("document {number}: {e}"));
    }
}
