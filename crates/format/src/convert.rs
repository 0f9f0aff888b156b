//! Lossless conversion between the two dump formats: directory ⇄ archive, gzip on or off.
//!
//! Documents are copied as raw bytes and metadata text is copied verbatim (never re-rendered), so
//! converting a dump and converting it back keeps every document, every archive CRC and every
//! metadata file. The namespace order follows mongodump's rules for archives: users, roles and the
//! auth version first (mongorestore reads them before anything else), ordinary collections next,
//! the oplog last. Namespaces are written one at a time, so the archive advertises
//! `concurrent_collections: 1`, which lets any restore read it without buffering.
//!
//! The archive header needs a parseable server version. A directory records it in
//! `prelude.json`; when there is none (dumps from tools before 100.12) or it says `unknown`,
//! `0.0.0` is written and [`ConvertStats::assumed_server_version`] says so.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use bson::RawDocument;
use flate2::read::MultiGzDecoder;

use crate::archive::{self, ArchiveError, ArchiveEventRef, ArchiveHeader, ArchiveReader, ArchiveWriter, PreludeEntry};
use crate::directory::{
    self, DataFileWriter, DbAuthFile, DirectoryError, DiscoverOptions, DumpEntry, DumpWriter, EntryKind,
};
use crate::metadata::Metadata;
use crate::naming::TIMESERIES_BUCKET_PREFIX;
use crate::version::ServerVersion;

/// Server version written to archive headers when the source directory does not record one.
pub const ASSUMED_SERVER_VERSION: &str = "0.0.0";

/// How to convert.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConvertOptions {
    /// Whether the source is gzip'd; `None` detects it (magic bytes or `.gz` names).
    pub input_gzip: Option<bool>,
    /// Whether to gzip the output.
    pub output_gzip: bool,
}

/// What a conversion did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ConvertStats {
    /// The file or directory written.
    pub output: PathBuf,
    /// Namespaces copied.
    pub namespaces: usize,
    /// Documents copied.
    pub documents: u64,
    /// Document bytes copied (uncompressed).
    pub bytes: u64,
    /// Set when the source had no usable server version and [`ASSUMED_SERVER_VERSION`] was written.
    pub assumed_server_version: bool,
}

/// Why a conversion failed. The partial output is removed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The source or destination directory is invalid.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// The archive is invalid or could not be written.
    #[error("archive {path}: {source}")]
    Archive {
        /// The archive file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: ArchiveError,
    },
    /// The destination exists already.
    #[error("destination {0} already exists; remove it or choose another path")]
    DestinationExists(PathBuf),
    /// A data file in the source is broken.
    #[error("reading {path}: {source}")]
    Stream {
        /// The data file.
        path: PathBuf,
        /// What is wrong, with the byte offset.
        #[source]
        source: crate::bson_stream::StreamError,
    },
}

/// Converts a dump directory into an archive file, or an archive file into a dump directory.
///
/// `dst` must not exist, except that a directory given as the archive destination receives
/// `archive` (or `archive.gz`) inside it, as mongodump does.
///
/// # Errors
/// See [`ConvertError`]. On error nothing that looks like a complete output is left behind.
pub fn convert(src: &Path, dst: &Path, options: &ConvertOptions) -> Result<ConvertStats, ConvertError> {
    let meta = std::fs::metadata(src).map_err(|source| ConvertError::Io {
        action: "cannot read",
        path: src.to_owned(),
        source,
    })?;
    if meta.is_dir() {
        let dst = archive::gzip::resolve_archive_path(dst, options.output_gzip);
        if dst.exists() {
            return Err(ConvertError::DestinationExists(dst));
        }
        let result = directory_to_archive(src, &dst, options);
        if result.is_err() {
            let _ = std::fs::remove_file(&dst);
        }
        result
    } else {
        if dst.exists() {
            return Err(ConvertError::DestinationExists(dst.to_owned()));
        }
        let result = archive_to_directory(src, dst, options);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(dst);
        }
        result
    }
}

fn directory_to_archive(src: &Path, dst: &Path, options: &ConvertOptions) -> Result<ConvertStats, ConvertError> {
    let gzip = options
        .input_gzip
        .unwrap_or_else(|| crate::inspect::contains_gzip_files(src));
    let discovery = directory::discover(
        src,
        &DiscoverOptions {
            gzip,
            ..DiscoverOptions::default()
        },
    )?;

    // mongodump's archive order: auth data first, the oplog last.
    let rank = |e: &DumpEntry| match e.kind {
        EntryKind::Users | EntryKind::Roles | EntryKind::AuthVersion => 0,
        EntryKind::Oplog => 2,
        _ => 1,
    };
    let mut entries: Vec<&DumpEntry> = discovery.entries.iter().collect();
    entries.sort_by_key(|e| rank(e));

    let version_text = discovery.prelude.as_ref().map(|p| p.server_version_text.clone());
    let assumed = version_text
        .as_deref()
        .is_none_or(|v| ServerVersion::parse(v).is_none());
    let server_version = if assumed {
        ASSUMED_SERVER_VERSION.to_owned()
    } else {
        version_text.unwrap_or_default()
    };
    let tool_version = discovery
        .prelude
        .as_ref()
        .map(|p| p.tool_version_text.clone())
        .unwrap_or_default();

    let mut prelude = Vec::with_capacity(entries.len());
    for entry in &entries {
        let metadata_text = match entry.metadata_path.clone().or_else(|| special_metadata_path(entry)) {
            Some(path) => read_text(&path, entry.gzip)?,
            None => String::new(),
        };
        prelude.push(PreludeEntry::new(
            entry.namespace.db.clone(),
            entry.namespace.collection.clone(),
            metadata_text,
            archive_type(entry),
        ));
    }
    let header = ArchiveHeader::new(1, server_version, tool_version);
    let file = File::create(dst).map_err(|source| ConvertError::Io {
        action: "cannot create",
        path: dst.to_owned(),
        source,
    })?;
    let out: Box<dyn Write> = if options.output_gzip {
        Box::new(archive::gzip::gzip_writer(BufWriter::new(file)))
    } else {
        Box::new(BufWriter::new(file))
    };
    let archive_err = |source| ConvertError::Archive {
        path: dst.to_owned(),
        source,
    };
    let mut writer = ArchiveWriter::new(out, &header, &prelude).map_err(archive_err)?;
    let parsed_version = ServerVersion::parse(&header.server_version);
    let mut stats = ConvertStats {
        output: dst.to_owned(),
        assumed_server_version: assumed,
        ..ConvertStats::default()
    };
    let mut buf = Vec::new();
    for (entry, prelude_entry) in entries.iter().zip(&prelude) {
        let data_collection = prelude_entry.data_collection(parsed_version);
        let index = writer
            .namespace_index(&prelude_entry.db, &data_collection)
            .expect("invariant: every prelude entry has a data namespace");
        if let Some(mut reader) = entry.open_data()? {
            let path = entry.data_path.clone().unwrap_or_default();
            while reader.read_into(&mut buf).map_err(|source| ConvertError::Stream {
                path: path.clone(),
                source,
            })? {
                let doc = RawDocument::from_bytes(&buf)
                    .expect("invariant: read_into checked the length prefix and the terminator");
                writer.write_document(index, doc).map_err(archive_err)?;
                stats.documents += 1;
                stats.bytes += buf.len() as u64;
            }
        }
        writer.close_namespace(index).map_err(archive_err)?;
        stats.namespaces += 1;
    }
    let mut out = writer.finish().map_err(archive_err)?;
    out.flush().map_err(|source| ConvertError::Io {
        action: "cannot write",
        path: dst.to_owned(),
        source,
    })?;
    drop(out);
    Ok(stats)
}

/// The prelude `type` of a directory entry: the metadata's own `type` when recorded (current
/// mongodump copies `listCollections.type`), otherwise what the metadata implies.
fn archive_type(entry: &DumpEntry) -> String {
    match entry.kind {
        EntryKind::Oplog | EntryKind::Users | EntryKind::Roles | EntryKind::AuthVersion | EntryKind::SystemIndexes => {
            return String::new();
        }
        _ => {}
    }
    if let Some(t) = entry.metadata.as_ref().and_then(|m| m.collection_type.clone()) {
        return t;
    }
    match entry.kind {
        EntryKind::View => "view".to_owned(),
        EntryKind::Timeseries => "timeseries".to_owned(),
        _ if entry.metadata.as_ref().is_some_and(Metadata::is_view) => "view".to_owned(),
        _ if entry.metadata.as_ref().is_some_and(Metadata::is_timeseries) => "timeseries".to_owned(),
        _ => "collection".to_owned(),
    }
}

/// Restore ignores the metadata of users, roles and the auth version, so discovery does not
/// attach it; mongodump writes it all the same, and a lossless conversion keeps it.
fn special_metadata_path(entry: &DumpEntry) -> Option<PathBuf> {
    if !matches!(entry.kind, EntryKind::Users | EntryKind::Roles | EntryKind::AuthVersion) {
        return None;
    }
    let data = entry.data_path.as_ref()?;
    let name = data.file_name()?.to_str()?;
    let (stem, gz) = match name.strip_suffix(".bson.gz") {
        Some(stem) => (stem, ".gz"),
        None => (name.strip_suffix(".bson")?, ""),
    };
    let path = data.with_file_name(format!("{stem}.metadata.json{gz}"));
    path.is_file().then_some(path)
}

fn read_text(path: &Path, gzip: bool) -> Result<String, ConvertError> {
    let io = |source| ConvertError::Io {
        action: "cannot read",
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let mut text = String::new();
    if gzip {
        MultiGzDecoder::new(BufReader::new(file))
            .read_to_string(&mut text)
            .map_err(io)?;
    } else {
        BufReader::new(file).read_to_string(&mut text).map_err(io)?;
    }
    Ok(text)
}

/// Where an archive namespace's data goes in a directory.
enum Target {
    /// No data file (views in directory form are metadata only).
    None,
    /// A data file being written.
    File(DataFileWriter),
}

fn archive_to_directory(src: &Path, dst: &Path, options: &ConvertOptions) -> Result<ConvertStats, ConvertError> {
    let io = |source| ConvertError::Io {
        action: "cannot read",
        path: src.to_owned(),
        source,
    };
    let gzip = match options.input_gzip {
        Some(g) => g,
        None => crate::archive::gzip::sniff_gzip(src).map_err(io)?,
    };
    let file = tidemark_directio::InputFile::open(src).map_err(io)?;
    let input: Box<dyn Read> = if gzip {
        Box::new(archive::gzip::gzip_reader(file))
    } else {
        Box::new(file)
    };
    let archive_err = |source| ConvertError::Archive {
        path: src.to_owned(),
        source,
    };
    let mut reader = ArchiveReader::new(input).map_err(archive_err)?;
    std::fs::create_dir_all(dst).map_err(|source| ConvertError::Io {
        action: "cannot create",
        path: dst.to_owned(),
        source,
    })?;
    let writer = DumpWriter::new(dst, options.output_gzip);

    for entry in reader.prelude() {
        if !entry.metadata.is_empty() {
            writer.write_metadata_text(&entry.db, &entry.collection, &entry.metadata)?;
        }
    }
    let mut targets: Vec<Option<Target>> = (0..reader.namespaces().len()).map(|_| None).collect();
    let mut stats = ConvertStats {
        output: dst.to_owned(),
        ..ConvertStats::default()
    };
    while let Some(event) = reader.next_event_ref().map_err(archive_err)? {
        match event {
            ArchiveEventRef::SegmentStart { namespace, first: true } => {
                let data_ns = &reader.namespaces()[namespace];
                let entry = &reader.prelude()[data_ns.prelude_index];
                targets[namespace] = Some(open_target(&writer, entry, &data_ns.namespace.collection)?);
            }
            ArchiveEventRef::SegmentStart { .. } => {}
            ArchiveEventRef::Document { namespace, document } => {
                if let Some(Target::File(file)) = &mut targets[namespace] {
                    file.write_document(document)?;
                }
                stats.documents += 1;
                stats.bytes += document.as_bytes().len() as u64;
            }
            ArchiveEventRef::NamespaceEnd { namespace, .. } => {
                if let Some(Target::File(file)) = targets[namespace].take() {
                    file.finish()?;
                }
                stats.namespaces += 1;
            }
        }
    }
    let header = reader.header();
    let tool = header.tool_version.clone();
    writer.write_prelude(None, &header.server_version, &tool)?;
    Ok(stats)
}

fn open_target(writer: &DumpWriter, entry: &PreludeEntry, data_collection: &str) -> Result<Target, ConvertError> {
    if entry.db.is_empty() && entry.collection == "oplog" {
        return Ok(Target::File(writer.create_oplog()?));
    }
    let auth = match entry.collection.as_str() {
        "$admin.system.users" => Some(DbAuthFile::Users),
        "$admin.system.roles" => Some(DbAuthFile::Roles),
        "$admin.system.version" => Some(DbAuthFile::Version),
        _ => None,
    };
    if let Some(kind) = auth {
        return Ok(Target::File(writer.create_db_auth_file(&entry.db, kind)?));
    }
    let metadata = Metadata::parse(entry.metadata.as_bytes(), &format!("{}.{}", entry.db, entry.collection))
        .ok()
        .flatten();
    if metadata.as_ref().is_some_and(Metadata::is_view) {
        return Ok(Target::None);
    }
    if let Some(timeseries) = data_collection.strip_prefix(TIMESERIES_BUCKET_PREFIX)
        && entry.type_ == "timeseries"
    {
        return Ok(Target::File(writer.create_timeseries_buckets(&entry.db, timeseries)?));
    }
    Ok(Target::File(writer.create_collection(&entry.db, data_collection)?))
}
