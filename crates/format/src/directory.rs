//! The dump directory: discovering what a `mongodump` output directory holds, and writing one.
//!
//! # Reading ([`discover`])
//!
//! Discovery follows mongorestore's rules exactly (`mongorestore/filepath.go`):
//!
//! * **Full restore** (a directory target, no database given): every sub-directory of the
//!   target is a database and must pass [`validate_db_name`]
//!   or discovery fails; the top-level file `oplog.bson` is the oplog; any other top-level file
//!   is skipped ("don't know what to do").
//! * **Database target** (a directory plus a database name): the directory's files belong to
//!   that database.
//! * **File target**: the collection defaults to the unescaped file stem (the file must be
//!   `.bson`, `.bin`, or `.bson.gz` in gzip mode) and the database to the parent directory's
//!   name (`test` when that is `.` or `..`); the sibling `<stem>.metadata.json[.gz]` is used when
//!   present. A `system.buckets.<name>` file is a timeseries collection `<name>` whose metadata
//!   (named without the prefix) is mandatory.
//!
//! Inside a database directory, sub-directories are skipped; `*.bin` is always data; in gzip mode
//! only `*.bson.gz` and `*.metadata.json.gz` are recognised, otherwise only `*.bson` and
//! `*.metadata.json`; anything else is skipped. Data and metadata files of the same namespace
//! merge into one [`DumpEntry`]. Skipped (each reported in [`Discovery::skipped`] with its
//! reason): `$`-prefixed data files in a full restore, `system.profile` data and metadata,
//! `system.indexes` data when the directory holds `.metadata.json` files, and metadata files of
//! users/roles/auth-version collections (mongorestore never uses them). A data file named
//! `system.buckets.X` maps to the namespace `X`. A file stem that was shortened at dump time
//! (exactly 238 bytes and containing `%24`) takes its name from the `collectionName` of the
//! sibling metadata file; every stem is then `url.QueryUnescape`d (the real tool applies this
//! to the `collectionName` too, so a long name containing `+` or `%` comes back altered).
//!
//! Entries come in discovery order (directory entries sorted by byte-wise name, as Go's
//! `os.ReadDir`), and carry a kind: ordinary collection, view (`options.viewOn`), timeseries,
//! oplog (top-level `oplog.bson`, namespace `"".oplog`, and `local.oplog.rs`/`local.oplog.$main`;
//! choosing between several is the restore's job), users, roles, auth version
//! (`admin.system.*` and the `$admin.system.*` files of a `--dumpDbUsersAndRoles` dump) or
//! legacy `system.indexes`.
//!
//! In gzip mode every data and metadata file is gunzipped, including `oplog.bson`, whose name
//! never carries `.gz` (so a gzip dump's oplog read without gzip mode fails, as with the real
//! tool), and `.bin` files, which the real tool also opens through its gzip reader then. The `prelude.json[.gz]` is looked up in the target directory (the parent directory of
//! a file target), then in its parent, and its `ServerVersion` parsed ([`read_prelude`]).
//!
//! # Writing ([`DumpWriter`])
//!
//! Lays files out as mongodump does: `<out>/<db>/<stem>.bson` and `<stem>.metadata.json` with
//! the escaped (and possibly shortened) stem from [`file_stem`], timeseries data in
//! `system.buckets.<name>.bson`, `$admin.system.{users,roles,version}.bson` unescaped, the oplog
//! at `<out>/oplog.bson` and `prelude.json` last. With gzip every file is gzip-compressed (data files as
//! members of 1 MiB compressed in parallel, [`crate::parallel_gzip`]) and gets `.gz`, except
//! `oplog.bson`, which is compressed under its plain name. Data files are written with direct I/O
//! where possible ([`tidemark_directio`]). Each file is written
//! under a temporary hidden name in its final directory and renamed into place only once
//! complete and synced, so an interrupted dump never leaves a file that looks finished.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::parallel_gzip::ParallelGzEncoder;
use bson::RawDocument;
use flate2::Compression;
use flate2::read::MultiGzDecoder;
use tidemark_directio::{InputFile, OutputFile};

use crate::bson_stream::{BsonReader, MAX_DOCUMENT_SIZE, MAX_OPLOG_DOCUMENT_SIZE};
use crate::metadata::{Metadata, MetadataError};
use crate::naming::{
    NameError, Namespace, TIMESERIES_BUCKET_PREFIX, file_stem, is_shortened_stem, query_unescape,
    validate_collection_grammar, validate_db_name,
};

/// Name of the top-level oplog file.
pub const OPLOG_FILE: &str = "oplog.bson";
/// Name of the prelude file (`.gz` is appended in gzip mode).
pub const PRELUDE_FILE: &str = "prelude.json";
/// The `ServerVersion` mongodump writes when `buildInfo` failed.
pub const UNKNOWN_SERVER_VERSION: &str = "unknown";

/// Why a dump directory could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// A file or directory could not be read, created or renamed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done (`reading`, `creating`, …).
        action: &'static str,
        /// The file or directory at fault.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The target does not exist or cannot be examined.
    #[error("mongorestore target '{}' invalid: {source}", path.display())]
    InvalidTarget {
        /// The target.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A database directory name (or a database name given for writing) is not a valid name.
    #[error("invalid database name `{name}`: {source}")]
    InvalidDbName {
        /// The name.
        name: String,
        /// The rule it breaks.
        #[source]
        source: NameError,
    },
    /// A file name cannot be turned into a collection name.
    #[error("error parsing collection name from filename `{file}`: {source}")]
    FileName {
        /// The file name.
        file: String,
        /// The unescaping error.
        #[source]
        source: NameError,
    },
    /// A shortened file name whose metadata is missing or carries no `collectionName`.
    #[error("cannot recover the collection name of shortened file `{}`: {reason}", path.display())]
    ShortenedName {
        /// The data or metadata file with the shortened stem.
        path: PathBuf,
        /// Why the name could not be read.
        reason: String,
    },
    /// A metadata file could not be read or parsed.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// A file target that is not a BSON data file.
    #[error("file `{}` does not have .bson extension", path.display())]
    NotBsonFile {
        /// The target.
        path: PathBuf,
    },
    /// A directory given where a data file is required.
    #[error("file `{}` is a directory, not a bson file", path.display())]
    IsDirectory {
        /// The target.
        path: PathBuf,
    },
    /// A `system.buckets.*` file target without the timeseries metadata file next to it.
    #[error("could not find the timeseries collection metadata file for `{namespace}`")]
    TimeseriesMetadataMissing {
        /// The timeseries namespace.
        namespace: Namespace,
    },
    /// A collection name was given without a database name.
    #[error("cannot restore a collection without a specified database")]
    CollectionWithoutDb,
    /// A collection name given for restoring breaks the collection grammar (empty, `$`, NUL).
    #[error("invalid collection name: {source}")]
    InvalidCollectionName {
        /// The name.
        name: String,
        /// The rule it breaks.
        #[source]
        source: NameError,
    },
    /// The prelude file exists but cannot be used.
    #[error("error reading dump metadata from {}: {message}", path.display())]
    Prelude {
        /// The prelude file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl DirectoryError {
    fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Self {
        let path = path.to_owned();
        move |source| Self::Io { action, path, source }
    }
}

/// What a [`DumpEntry`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// An ordinary collection.
    Collection,
    /// A view (metadata with `options.viewOn`); normally metadata only.
    View,
    /// A timeseries collection; its data file holds bucket documents.
    Timeseries,
    /// An oplog: the top-level `oplog.bson` (namespace `"".oplog`) or `local.oplog.rs` /
    /// `local.oplog.$main`.
    Oplog,
    /// `admin.system.users` or `<db>.$admin.system.users`.
    Users,
    /// `admin.system.roles` or `<db>.$admin.system.roles`.
    Roles,
    /// `admin.system.version` or `<db>.$admin.system.version` (auth schema version).
    AuthVersion,
    /// Legacy (≤ 2.6) `<db>.system.indexes`: index specs with an `ns` field.
    SystemIndexes,
}

impl EntryKind {
    /// The special kind mongorestore gives a namespace, if any (before looking at metadata).
    #[must_use]
    pub fn special_for(namespace: &Namespace) -> Option<Self> {
        let (db, c) = (namespace.db.as_str(), namespace.collection.as_str());
        if (db.is_empty() && c == "oplog") || (db == "local" && (c == "oplog.rs" || c == "oplog.$main")) {
            return Some(Self::Oplog);
        }
        if c == "system.indexes" {
            return Some(Self::SystemIndexes);
        }
        let admin = db == "admin";
        match c {
            "$admin.system.users" => Some(Self::Users),
            "$admin.system.roles" => Some(Self::Roles),
            "$admin.system.version" => Some(Self::AuthVersion),
            "system.users" if admin => Some(Self::Users),
            "system.roles" if admin => Some(Self::Roles),
            "system.version" if admin => Some(Self::AuthVersion),
            _ => None,
        }
    }
}

/// One namespace found in a dump directory, with its files.
#[derive(Debug, Clone)]
pub struct DumpEntry {
    /// Source namespace (for timeseries the user-visible name, without `system.buckets.`).
    pub namespace: Namespace,
    /// What the entry holds.
    pub kind: EntryKind,
    /// The data file, if any (views and some special cases have none).
    pub data_path: Option<PathBuf>,
    /// The metadata file, if any.
    pub metadata_path: Option<PathBuf>,
    /// The parsed metadata (`None` when there is no metadata file or it is 0 bytes).
    pub metadata: Option<Metadata>,
    /// Size on disk of the data file in bytes (0 without one); mongorestore schedules the
    /// largest first when restoring several collections at once.
    pub size: u64,
    /// Whether the data and metadata files are gunzipped when read (gzip mode).
    pub gzip: bool,
}

impl DumpEntry {
    /// Largest document accepted in this entry's data file: 16 MiB + 16 KiB for oplogs,
    /// 16 MiB otherwise.
    #[must_use]
    pub fn max_document_size(&self) -> usize {
        if self.kind == EntryKind::Oplog {
            MAX_OPLOG_DOCUMENT_SIZE
        } else {
            MAX_DOCUMENT_SIZE
        }
    }

    /// Opens the data file as a stream of documents (gunzipping in gzip mode). `Ok(None)` when
    /// the entry has no data file.
    ///
    /// # Errors
    /// [`DirectoryError::Io`] naming the file when it cannot be opened or its gzip header is bad.
    pub fn open_data(&self) -> Result<Option<BsonReader<DataSource>>, DirectoryError> {
        self.data_path
            .as_deref()
            .map(|p| open_bson_file(p, self.gzip, self.max_document_size()))
            .transpose()
    }
}

/// A data file being read: plain or gunzipped, with direct I/O where the filesystem allows it
/// ([`InputFile`]: read ahead on a thread, parsed in place).
pub struct DataSource(DataSourceInner);

enum DataSourceInner {
    Plain(InputFile),
    Gzip(Box<BufReader<flate2::bufread::MultiGzDecoder<InputFile>>>),
}

impl Read for DataSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.0 {
            DataSourceInner::Plain(f) => f.read(buf),
            DataSourceInner::Gzip(g) => g.read(buf),
        }
    }
}

impl BufRead for DataSource {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        match &mut self.0 {
            DataSourceInner::Plain(f) => f.fill_buf(),
            DataSourceInner::Gzip(g) => g.fill_buf(),
        }
    }

    fn consume(&mut self, amount: usize) {
        match &mut self.0 {
            DataSourceInner::Plain(f) => f.consume(amount),
            DataSourceInner::Gzip(g) => g.consume(amount),
        }
    }
}

impl std::fmt::Debug for DataSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            DataSourceInner::Plain(_) => "DataSource::Plain",
            DataSourceInner::Gzip(_) => "DataSource::Gzip",
        })
    }
}

/// Decompressed bytes buffered for the document parser of a gzip'd data file.
const GUNZIP_BUFFER: usize = 256 * 1024;

/// Opens any BSON data file (`.bson`, `.bin`, `oplog.bson`, `--oplogFile`) as a document stream,
/// gunzipping when `gzip` is set. Go's gzip reader, like this one, reads concatenated members.
///
/// # Errors
/// [`DirectoryError::Io`] naming the file.
pub fn open_bson_file(path: &Path, gzip: bool, max_size: usize) -> Result<BsonReader<DataSource>, DirectoryError> {
    let file = InputFile::open(path).map_err(DirectoryError::io("error reading BSON file", path))?;
    let inner = if gzip {
        DataSourceInner::Gzip(Box::new(BufReader::with_capacity(
            GUNZIP_BUFFER,
            flate2::bufread::MultiGzDecoder::new(file),
        )))
    } else {
        DataSourceInner::Plain(file)
    };
    Ok(BsonReader::buffered(DataSource(inner), max_size))
}

/// Why a file or directory was left out of a [`Discovery`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// Not a recognised data or metadata name (wrong extension, or a top-level file other than
    /// `oplog.bson`): "don't know what to do with file".
    UnknownFile,
    /// A directory inside a database directory.
    Subdirectory,
    /// A `$`-prefixed data file during a full restore (per-db users/roles files).
    DollarPrefixed,
    /// `system.profile` is never restored.
    SystemProfile,
    /// `system.indexes` data is redundant when the database has `.metadata.json` files.
    SystemIndexesWithMetadata,
    /// Metadata of a users, roles, auth-version or `system.indexes` collection, which
    /// mongorestore never uses.
    SpecialCollectionMetadata,
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::UnknownFile => "don't know what to do with file, skipping",
            Self::Subdirectory => "don't know what to do with subdirectory, skipping",
            Self::DollarPrefixed => "not restoring special collection in a full restore",
            Self::SystemProfile => "skipping restore of system.profile",
            Self::SystemIndexesWithMetadata => {
                "not restoring system.indexes because the database has .metadata.json files"
            }
            Self::SpecialCollectionMetadata => "metadata of users, roles, version or system.indexes is not used",
        })
    }
}

/// A file or directory left out of a [`Discovery`], for logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedFile {
    /// The file or directory.
    pub path: PathBuf,
    /// Why.
    pub reason: SkipReason,
}

/// The parsed `ServerVersion` of a `prelude.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerVersion {
    /// `"unknown"`: mongodump could not run `buildInfo`; ignored on restore.
    Unknown,
    /// `major.minor.patch` (a `-…` or `+…` suffix is dropped).
    Version([i64; 3]),
}

/// A `prelude.json` found next to a dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prelude {
    /// Where it was found.
    pub path: PathBuf,
    /// The `ServerVersion` text as written.
    pub server_version_text: String,
    /// The parsed version.
    pub server_version: ServerVersion,
    /// The `ToolVersion` text (empty when absent).
    pub tool_version_text: String,
}

/// How to read a dump directory: the restore options that change discovery.
#[derive(Debug, Clone, Default)]
pub struct DiscoverOptions {
    /// Gzip mode (`--gzip`): recognise `.bson.gz`/`.metadata.json.gz` and gunzip every file.
    pub gzip: bool,
    /// Database name (`-d`): the target directory (or file) belongs to this database.
    pub db: Option<String>,
    /// Collection name (`-c`): with a file target, the collection to restore it into.
    pub collection: Option<String>,
}

/// Everything found in a dump directory.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// The namespaces found, in discovery order.
    pub entries: Vec<DumpEntry>,
    /// Files and directories left out, with the reason, in discovery order.
    pub skipped: Vec<SkippedFile>,
    /// The prelude, when one was found in the target or its parent.
    pub prelude: Option<Prelude>,
}

impl Discovery {
    /// The entry for a namespace, if discovered.
    #[must_use]
    pub fn entry(&self, db: &str, collection: &str) -> Option<&DumpEntry> {
        self.entries
            .iter()
            .find(|e| e.namespace.db == db && e.namespace.collection == collection)
    }
}

/// Discovers the namespaces of a dump directory (or single data file) as mongorestore does.
///
/// # Errors
/// See [`DirectoryError`]: unreadable target, an invalid database directory name, an
/// unescapable file name, a shortened name without usable metadata, invalid metadata, a file
/// target that is not BSON, a timeseries file target without metadata, an unusable prelude.
pub fn discover(target: &Path, options: &DiscoverOptions) -> Result<Discovery, DirectoryError> {
    let stat = fs::metadata(target).map_err(|source| DirectoryError::InvalidTarget {
        path: target.to_owned(),
        source,
    })?;
    if options.db.is_none() && options.collection.is_some() {
        return Err(DirectoryError::CollectionWithoutDb);
    }
    if let Some(db) = &options.db {
        validate_db_name(db).map_err(|source| DirectoryError::InvalidDbName {
            name: db.clone(),
            source,
        })?;
    }
    if let Some(collection) = &options.collection {
        validate_collection_grammar(collection).map_err(|source| DirectoryError::InvalidCollectionName {
            name: collection.clone(),
            source,
        })?;
    }
    let prelude = read_prelude(target, options.gzip)?;
    let mut walk = Walk {
        gzip: options.gzip,
        entries: Vec::new(),
        index: HashMap::new(),
        skipped: Vec::new(),
    };
    if !stat.is_dir() {
        let collection = match &options.collection {
            Some(c) => c.clone(),
            None => match file_info(target, options.gzip)? {
                (name, FileType::Bson) => name,
                _ => {
                    return Err(DirectoryError::NotBsonFile {
                        path: target.to_owned(),
                    });
                }
            },
        };
        let db = match &options.db {
            Some(db) => db.clone(),
            None => inferred_db(target),
        };
        walk.single_file(&db, &collection, target, stat.len())?;
    } else {
        match (&options.db, &options.collection) {
            (Some(db), None) => walk.database(db, target, false)?,
            (Some(_), Some(_)) => {
                return Err(DirectoryError::IsDirectory {
                    path: target.to_owned(),
                });
            }
            // A collection without a database was rejected above.
            (None, _) => walk.all(target)?,
        }
    }
    let mut entries = Vec::with_capacity(walk.entries.len());
    for builder in walk.entries {
        entries.push(builder.finish(options.gzip)?);
    }
    Ok(Discovery {
        entries,
        skipped: walk.skipped,
        prelude,
    })
}

/// The database name mongorestore infers for a file target: its directory's name, or `test`.
fn inferred_db(file: &Path) -> String {
    match file.parent().and_then(Path::file_name).and_then(|n| n.to_str()) {
        Some(name) if name != "." && name != ".." => name.to_owned(),
        _ => "test".to_owned(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileType {
    Unknown,
    Bson,
    Metadata,
}

/// mongorestore's `getInfoFromFile`: the unescaped collection name and the file's type.
fn file_info(path: &Path, gzip: bool) -> Result<(String, FileType), DirectoryError> {
    let Some(base) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok((String::new(), FileType::Unknown));
    };
    let with_ext = |stem: &str, ext: &str| path.with_file_name(format!("{stem}{ext}"));
    let (stem, kind, metadata_path) = if let Some(stem) = base.strip_suffix(".bin") {
        (stem, FileType::Bson, None)
    } else if gzip {
        if let Some(stem) = base.strip_suffix(".metadata.json.gz") {
            (stem, FileType::Metadata, Some(path.to_owned()))
        } else if let Some(stem) = base.strip_suffix(".bson.gz") {
            (stem, FileType::Bson, Some(with_ext(stem, ".metadata.json.gz")))
        } else {
            ("", FileType::Unknown, None)
        }
    } else if let Some(stem) = base.strip_suffix(".metadata.json") {
        (stem, FileType::Metadata, Some(path.to_owned()))
    } else if let Some(stem) = base.strip_suffix(".bson") {
        (stem, FileType::Bson, Some(with_ext(stem, ".metadata.json")))
    } else {
        ("", FileType::Unknown, None)
    };
    let escaped = if is_shortened_stem(stem) {
        name_from_metadata(path, metadata_path.as_deref())?
    } else {
        stem.to_owned()
    };
    let name = query_unescape(&escaped).map_err(|source| DirectoryError::FileName {
        file: base.to_owned(),
        source,
    })?;
    Ok((name, kind))
}

/// The `collectionName` of the metadata file that goes with a shortened file name.
fn name_from_metadata(path: &Path, metadata_path: Option<&Path>) -> Result<String, DirectoryError> {
    let shortened = |reason: String| DirectoryError::ShortenedName {
        path: path.to_owned(),
        reason,
    };
    let Some(metadata_path) = metadata_path else {
        return Err(shortened("metadata file path is empty".into()));
    };
    let gzip = metadata_path.extension().is_some_and(|e| e == "gz");
    let metadata = Metadata::read_file(metadata_path, gzip).map_err(|e| shortened(e.to_string()))?;
    match metadata.and_then(|m| m.collection_name).filter(|n| !n.is_empty()) {
        Some(name) => Ok(name),
        None => Err(shortened(format!(
            "no collection name found in metadata file with truncated file name `{}`",
            metadata_path.display()
        ))),
    }
}

/// One entry being assembled from its files.
struct Builder {
    namespace: Namespace,
    special: Option<EntryKind>,
    data_path: Option<PathBuf>,
    metadata_path: Option<PathBuf>,
    size: u64,
    buckets_file: bool,
}

impl Builder {
    fn finish(self, gzip: bool) -> Result<DumpEntry, DirectoryError> {
        let metadata = match &self.metadata_path {
            Some(p) => Metadata::read_file(p, gzip)?,
            None => None,
        };
        let kind = match self.special {
            Some(kind) => kind,
            None if self.buckets_file || metadata.as_ref().is_some_and(Metadata::is_timeseries) => {
                EntryKind::Timeseries
            }
            None if metadata.as_ref().is_some_and(Metadata::is_view) => EntryKind::View,
            None => EntryKind::Collection,
        };
        Ok(DumpEntry {
            namespace: self.namespace,
            kind,
            data_path: self.data_path,
            metadata_path: self.metadata_path,
            metadata,
            size: self.size,
            gzip,
        })
    }
}

/// A directory entry with what Go's `os.ReadDir` + `Stat` tell about it.
struct DirItem {
    name: std::ffi::OsString,
    path: PathBuf,
    is_dir: bool,
    size: u64,
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<DirItem>, DirectoryError> {
    let mut items = Vec::new();
    for entry in fs::read_dir(dir).map_err(DirectoryError::io("error reading directory", dir))? {
        let entry = entry.map_err(DirectoryError::io("error reading directory", dir))?;
        let path = entry.path();
        // Follow symbolic links as Go's Stat does; fall back to the link itself when dangling.
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(_) => fs::symlink_metadata(&path).map_err(DirectoryError::io("error reading", &path))?,
        };
        items.push(DirItem {
            name: entry.file_name(),
            path,
            is_dir: meta.is_dir(),
            size: meta.len(),
        });
    }
    items.sort_by(|a, b| a.name.as_encoded_bytes().cmp(b.name.as_encoded_bytes()));
    Ok(items)
}

struct Walk {
    gzip: bool,
    entries: Vec<Builder>,
    index: HashMap<Namespace, usize>,
    skipped: Vec<SkippedFile>,
}

impl Walk {
    fn skip(&mut self, path: &Path, reason: SkipReason) {
        self.skipped.push(SkippedFile {
            path: path.to_owned(),
            reason,
        });
    }

    /// `CreateAllIntents`: the top level of a full restore.
    fn all(&mut self, root: &Path) -> Result<(), DirectoryError> {
        for item in read_dir_sorted(root)? {
            if item.is_dir {
                let name = item.name.to_string_lossy().into_owned();
                validate_db_name(&name).map_err(|source| DirectoryError::InvalidDbName {
                    name: name.clone(),
                    source,
                })?;
                self.database(&name, &item.path, true)?;
            } else if item.name == OPLOG_FILE {
                self.put_data(Namespace::new("", "oplog"), &item.path, item.size, false);
            } else {
                self.skip(&item.path, SkipReason::UnknownFile);
            }
        }
        Ok(())
    }

    /// `CreateIntentsForDB`: the files of one database directory.
    fn database(&mut self, db: &str, dir: &Path, full_restore: bool) -> Result<(), DirectoryError> {
        let items = read_dir_sorted(dir)?;
        let mut uses_metadata_files = items
            .iter()
            .any(|i| i.name.as_encoded_bytes().ends_with(b".metadata.json"));
        for item in items {
            if item.is_dir {
                self.skip(&item.path, SkipReason::Subdirectory);
                continue;
            }
            let (collection, file_type) = file_info(&item.path, self.gzip)?;
            match file_type {
                FileType::Bson => {
                    let reason = if full_restore && collection.starts_with('$') {
                        Some(SkipReason::DollarPrefixed)
                    } else if collection == "system.profile" {
                        Some(SkipReason::SystemProfile)
                    } else if collection == "system.indexes" && uses_metadata_files {
                        Some(SkipReason::SystemIndexesWithMetadata)
                    } else {
                        None
                    };
                    if let Some(reason) = reason {
                        self.skip(&item.path, reason);
                        continue;
                    }
                    let (name, buckets) = match collection.strip_prefix(TIMESERIES_BUCKET_PREFIX) {
                        Some(rest) => (rest.to_owned(), true),
                        None => (collection, false),
                    };
                    self.put_data(Namespace::new(db, name), &item.path, item.size, buckets);
                }
                FileType::Metadata => {
                    if collection == "system.profile" {
                        self.skip(&item.path, SkipReason::SystemProfile);
                        continue;
                    }
                    uses_metadata_files = true;
                    self.put_metadata(Namespace::new(db, collection), &item.path);
                }
                FileType::Unknown => self.skip(&item.path, SkipReason::UnknownFile),
            }
        }
        Ok(())
    }

    /// `CreateIntentForCollection`: one data file restored into `db.collection`.
    fn single_file(&mut self, db: &str, collection: &str, file: &Path, size: u64) -> Result<(), DirectoryError> {
        if file_info(file, self.gzip)?.1 != FileType::Bson {
            return Err(DirectoryError::NotBsonFile { path: file.to_owned() });
        }
        let base = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let timeseries = base.starts_with(TIMESERIES_BUCKET_PREFIX);
        let collection = if timeseries {
            collection.strip_prefix(TIMESERIES_BUCKET_PREFIX).unwrap_or(collection)
        } else {
            collection
        };
        let namespace = Namespace::new(db, collection);
        let metadata_name = if self.gzip {
            format!("{}.metadata.json.gz", base.strip_suffix(".bson.gz").unwrap_or(base))
        } else {
            format!("{}.metadata.json", base.strip_suffix(".bson").unwrap_or(base))
        };
        let metadata_name = if timeseries {
            metadata_name
                .strip_prefix(TIMESERIES_BUCKET_PREFIX)
                .unwrap_or(&metadata_name)
                .to_owned()
        } else {
            metadata_name
        };
        let parent = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let metadata_path = match read_dir_sorted(parent) {
            Ok(items) => items
                .into_iter()
                .find(|i| i.name == metadata_name.as_str())
                .map(|i| i.path),
            Err(_) => None,
        };
        if timeseries && metadata_path.is_none() {
            return Err(DirectoryError::TimeseriesMetadataMissing { namespace });
        }
        self.put_data(namespace.clone(), file, size, timeseries);
        if let Some(path) = metadata_path {
            self.put_metadata(namespace, &path);
        }
        Ok(())
    }

    fn slot(&mut self, namespace: Namespace) -> &mut Builder {
        let next = self.entries.len();
        let i = *self.index.entry(namespace.clone()).or_insert(next);
        if i == next {
            let special = EntryKind::special_for(&namespace);
            self.entries.push(Builder {
                namespace,
                special,
                data_path: None,
                metadata_path: None,
                size: 0,
                buckets_file: false,
            });
        }
        &mut self.entries[i]
    }

    fn put_data(&mut self, namespace: Namespace, path: &Path, size: u64, buckets: bool) {
        let builder = self.slot(namespace);
        if builder.data_path.is_none() {
            builder.data_path = Some(path.to_owned());
            builder.size = size;
            builder.buckets_file = buckets;
        }
    }

    fn put_metadata(&mut self, namespace: Namespace, path: &Path) {
        match EntryKind::special_for(&namespace) {
            Some(EntryKind::Oplog) | None => {
                let builder = self.slot(namespace);
                if builder.metadata_path.is_none() {
                    builder.metadata_path = Some(path.to_owned());
                }
            }
            Some(_) => self.skip(path, SkipReason::SpecialCollectionMetadata),
        }
    }
}

/// Finds and parses `prelude.json` (`prelude.json.gz` in gzip mode) as mongorestore does: in the
/// target directory (the file's directory for a file target), else in its parent. `Ok(None)`
/// when neither exists (dumps made before tools 100.12.0 have none).
///
/// Like Go's `encoding/json`, the `ServerVersion` key matches case-insensitively and the last
/// match wins.
///
/// # Errors
/// [`DirectoryError::Prelude`] when the file exists but cannot be read, is not JSON, lacks a
/// non-empty string `ServerVersion`, or holds a version that is neither `unknown` nor
/// `X.Y.Z[-…|+…]`.
pub fn read_prelude(target: &Path, gzip: bool) -> Result<Option<Prelude>, DirectoryError> {
    let name = if gzip {
        format!("{PRELUDE_FILE}.gz")
    } else {
        PRELUDE_FILE.to_owned()
    };
    let dir = if target.is_dir() {
        target.to_owned()
    } else {
        target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned()
    };
    let candidates = [Some(dir.join(&name)), parent_dir(&dir).map(|p| p.join(&name))];
    for path in candidates.into_iter().flatten() {
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            // mongorestore ignores open errors other than "not found" (it reports no prelude).
            Err(_) => return Ok(None),
        };
        return parse_prelude(&path, file, gzip).map(Some);
    }
    Ok(None)
}

/// The parent directory as Go's `filepath.Dir` of a cleaned path sees it.
fn parent_dir(dir: &Path) -> Option<PathBuf> {
    let absolute = std::path::absolute(dir).ok()?;
    absolute.parent().map(Path::to_owned)
}

fn parse_prelude(path: &Path, file: File, gzip: bool) -> Result<Prelude, DirectoryError> {
    let fail = |message: String| DirectoryError::Prelude {
        path: path.to_owned(),
        message,
    };
    let mut text = Vec::new();
    let read = if gzip {
        MultiGzDecoder::new(file).read_to_end(&mut text)
    } else {
        BufReader::new(file).read_to_end(&mut text)
    };
    read.map_err(|e| fail(format!("failed to read prelude metadata: {e}")))?;
    let value: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| fail(format!("failed to unmarshal prelude metadata: {e}")))?;
    let mut server_version = String::new();
    let mut tool_version = String::new();
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                if key.eq_ignore_ascii_case("ToolVersion") {
                    if let serde_json::Value::String(s) = &value {
                        tool_version.clone_from(s);
                    }
                } else if key.eq_ignore_ascii_case("ServerVersion") {
                    match value {
                        serde_json::Value::String(s) => server_version = s,
                        serde_json::Value::Null => {}
                        other => {
                            return Err(fail(format!(
                                "failed to unmarshal prelude metadata: ServerVersion is {other}"
                            )));
                        }
                    }
                }
            }
        }
        serde_json::Value::Null => {}
        other => {
            return Err(fail(format!(
                "failed to unmarshal prelude metadata: {other} is not an object"
            )));
        }
    }
    if server_version.is_empty() {
        return Err(fail("ServerVersion key not found".into()));
    }
    let parsed = if server_version == UNKNOWN_SERVER_VERSION {
        ServerVersion::Unknown
    } else {
        ServerVersion::Version(
            parse_server_version(&server_version)
                .ok_or_else(|| fail(format!("failed to parse server version {server_version:?}")))?,
        )
    };
    Ok(Prelude {
        path: path.to_owned(),
        server_version_text: server_version,
        server_version: parsed,
        tool_version_text: tool_version,
    })
}

/// Go `db.StrToVersion`: drop everything from the first `-`, then from the first `+`, then split
/// into exactly three integer parts.
///
/// ```
/// use tidemark_format::directory::parse_server_version;
/// assert_eq!(parse_server_version("7.0.16"), Some([7, 0, 16]));
/// assert_eq!(parse_server_version("8.2.0-rc1+abc"), Some([8, 2, 0]));
/// assert_eq!(parse_server_version("8.0"), None);
/// ```
#[must_use]
pub fn parse_server_version(text: &str) -> Option<[i64; 3]> {
    crate::version::ServerVersion::parse(text).map(|v| [v.major, v.minor, v.patch])
}

/// Writes a dump directory laid out exactly as mongodump does.
///
/// Directories are created when the first file inside them is created, so nothing appears for
/// an empty dump.
#[derive(Debug, Clone)]
pub struct DumpWriter {
    root: PathBuf,
    gzip: bool,
}

/// The per-database users/roles/version files of `--dumpDbUsersAndRoles`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbAuthFile {
    /// `$admin.system.users.bson`.
    Users,
    /// `$admin.system.roles.bson`.
    Roles,
    /// `$admin.system.version.bson`.
    Version,
}

impl DbAuthFile {
    /// The collection part of the namespace (also the file stem, never escaped).
    #[must_use]
    pub fn collection(self) -> &'static str {
        match self {
            Self::Users => "$admin.system.users",
            Self::Roles => "$admin.system.roles",
            Self::Version => "$admin.system.version",
        }
    }
}

impl DumpWriter {
    /// A writer for the output directory `root` (`dump` by default in mongodump).
    pub fn new(root: impl Into<PathBuf>, gzip: bool) -> Self {
        Self {
            root: root.into(),
            gzip,
        }
    }

    /// The output directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether files are gzip-compressed.
    #[must_use]
    pub fn gzip(&self) -> bool {
        self.gzip
    }

    fn with_gz(&self, name: String) -> String {
        if self.gzip { name + ".gz" } else { name }
    }

    fn db_dir(&self, db: &str) -> Result<PathBuf, DirectoryError> {
        validate_db_name(db).map_err(|source| DirectoryError::InvalidDbName {
            name: db.to_owned(),
            source,
        })?;
        Ok(self.root.join(db))
    }

    /// Path of a collection's data file: `<root>/<db>/<stem>.bson[.gz]`.
    ///
    /// # Errors
    /// [`DirectoryError::InvalidDbName`].
    pub fn data_path(&self, db: &str, collection: &str) -> Result<PathBuf, DirectoryError> {
        Ok(self
            .db_dir(db)?
            .join(self.with_gz(format!("{}.bson", file_stem(collection)))))
    }

    /// Path of a collection's metadata file: `<root>/<db>/<stem>.metadata.json[.gz]`.
    ///
    /// # Errors
    /// [`DirectoryError::InvalidDbName`].
    pub fn metadata_path(&self, db: &str, collection: &str) -> Result<PathBuf, DirectoryError> {
        Ok(self
            .db_dir(db)?
            .join(self.with_gz(format!("{}.metadata.json", file_stem(collection)))))
    }

    /// Starts a collection's data file (finish it even when the collection is empty: mongodump
    /// always writes the file).
    ///
    /// # Errors
    /// [`DirectoryError`] for an invalid database name or an I/O failure.
    pub fn create_collection(&self, db: &str, collection: &str) -> Result<DataFileWriter, DirectoryError> {
        DataFileWriter::create(self.data_path(db, collection)?, self.gzip)
    }

    /// Starts the data file of a timeseries collection as dumped from servers before 8.3: the
    /// bucket documents go to `system.buckets.<name>.bson`.
    ///
    /// # Errors
    /// As [`DumpWriter::create_collection`].
    pub fn create_timeseries_buckets(&self, db: &str, timeseries: &str) -> Result<DataFileWriter, DirectoryError> {
        self.create_collection(db, &format!("{TIMESERIES_BUCKET_PREFIX}{timeseries}"))
    }

    /// Starts one of the `$admin.system.*` files of a `--db <db> --dumpDbUsersAndRoles` dump.
    ///
    /// # Errors
    /// As [`DumpWriter::create_collection`].
    pub fn create_db_auth_file(&self, db: &str, file: DbAuthFile) -> Result<DataFileWriter, DirectoryError> {
        let path = self
            .db_dir(db)?
            .join(self.with_gz(format!("{}.bson", file.collection())));
        DataFileWriter::create(path, self.gzip)
    }

    /// Starts `<root>/oplog.bson` (gzip-compressed content under its plain name in gzip mode).
    ///
    /// # Errors
    /// I/O failures.
    pub fn create_oplog(&self) -> Result<DataFileWriter, DirectoryError> {
        DataFileWriter::create(self.root.join(OPLOG_FILE), self.gzip)
    }

    /// Writes a collection's metadata file with the exact text of current mongodump.
    ///
    /// # Errors
    /// Rendering failures ([`MetadataError::Render`]) and I/O failures.
    pub fn write_metadata(&self, db: &str, collection: &str, metadata: &Metadata) -> Result<PathBuf, DirectoryError> {
        self.write_metadata_text(db, collection, &metadata.to_json()?)
    }

    /// Writes metadata text verbatim (for example the `metadata` string of an archive prelude
    /// entry), so converting a dump never rewrites what the source tool wrote.
    ///
    /// # Errors
    /// As [`DumpWriter::write_metadata`], without the rendering step.
    pub fn write_metadata_text(&self, db: &str, collection: &str, text: &str) -> Result<PathBuf, DirectoryError> {
        let path = self.metadata_path(db, collection)?;
        write_whole_file(&path, text.as_bytes(), self.gzip)?;
        Ok(path)
    }

    /// Writes `prelude.json[.gz]` — call it last. It goes to `<root>/prelude.json`, or to
    /// `<root>/<db>/prelude.json` for a single-database dump. Returns `Ok(None)` without writing
    /// when that directory does not exist (nothing was dumped).
    ///
    /// # Errors
    /// I/O failures.
    pub fn write_prelude(
        &self,
        db: Option<&str>,
        server_version: &str,
        tool_version: &str,
    ) -> Result<Option<PathBuf>, DirectoryError> {
        let dir = match db {
            Some(db) => self.root.join(db),
            None => self.root.clone(),
        };
        if !dir.is_dir() {
            return Ok(None);
        }
        let path = dir.join(self.with_gz(PRELUDE_FILE.to_owned()));
        write_whole_file(&path, prelude_json(server_version, tool_version).as_bytes(), self.gzip)?;
        Ok(Some(path))
    }
}

/// The prelude text exactly as Go's `json.Marshal` prints it (compact, HTML-escaped strings).
///
/// ```
/// use tidemark_format::directory::prelude_json;
/// assert_eq!(prelude_json("7.0.16", "100.x.y"), r#"{"ServerVersion":"7.0.16","ToolVersion":"100.x.y"}"#);
/// ```
#[must_use]
pub fn prelude_json(server_version: &str, tool_version: &str) -> String {
    let mut out = String::from("{\"ServerVersion\":");
    crate::extjson::write_go_string(&mut out, server_version, true);
    out.push_str(",\"ToolVersion\":");
    crate::extjson::write_go_string(&mut out, tool_version, true);
    out.push('}');
    out
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A hidden temporary name in the same directory as `path` (kept short so that a 255-byte final
/// name never makes the temporary name too long).
fn temp_path_for(path: &Path) -> PathBuf {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".tidemark-{}-{n}.tmp", std::process::id()))
}

fn create_parent(path: &Path) -> Result<(), DirectoryError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(DirectoryError::io("error creating directory", parent))?;
    }
    Ok(())
}

/// Writes a small file in one go (temporary name, sync, rename).
fn write_whole_file(path: &Path, bytes: &[u8], gzip: bool) -> Result<(), DirectoryError> {
    let mut writer = DataFileWriter::create(path.to_owned(), gzip)?;
    writer.write_bytes(bytes)?;
    writer.finish()?;
    Ok(())
}

/// Output of a data file: plain or gzip, over a direct-I/O file.
enum Sink {
    Plain(Box<OutputFile>),
    Gzip(Box<ParallelGzEncoder<OutputFile>>),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(w) => w.write(buf),
            Self::Gzip(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(w) => w.flush(),
            Self::Gzip(w) => w.flush(),
        }
    }
}

impl Sink {
    fn into_file(self) -> io::Result<File> {
        match self {
            Self::Plain(w) => w.finish(),
            Self::Gzip(w) => w.finish()?.finish(),
        }
    }
}

/// What a finished data file contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    /// Final path.
    pub path: PathBuf,
    /// Documents written.
    pub documents: u64,
    /// Uncompressed bytes written.
    pub bytes: u64,
}

/// A data file being written under a temporary name; [`DataFileWriter::finish`] puts it in place.
/// Dropping it unfinished removes the temporary file.
pub struct DataFileWriter {
    path: PathBuf,
    temp_path: PathBuf,
    sink: Option<Sink>,
    documents: u64,
    bytes: u64,
    finished: bool,
}

impl std::fmt::Debug for DataFileWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataFileWriter")
            .field("path", &self.path)
            .field("documents", &self.documents)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl DataFileWriter {
    /// Starts writing `path` (through a temporary file next to it), gzip-compressing if asked.
    ///
    /// # Errors
    /// [`DirectoryError::Io`] when the directory or file cannot be created.
    pub fn create(path: PathBuf, gzip: bool) -> Result<Self, DirectoryError> {
        create_parent(&path)?;
        let temp_path = temp_path_for(&path);
        let file = OutputFile::create(&temp_path).map_err(DirectoryError::io("error creating", &temp_path))?;
        let sink = if gzip {
            Sink::Gzip(Box::new(ParallelGzEncoder::new(file, Compression::default())))
        } else {
            Sink::Plain(Box::new(file))
        };
        Ok(Self {
            path,
            temp_path,
            sink: Some(sink),
            documents: 0,
            bytes: 0,
            finished: false,
        })
    }

    /// The final path of the file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one document, unchanged.
    ///
    /// # Errors
    /// [`DirectoryError::Io`] naming the file.
    pub fn write_document(&mut self, doc: &RawDocument) -> Result<(), DirectoryError> {
        self.write_bytes(doc.as_bytes())?;
        self.documents += 1;
        Ok(())
    }

    fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), DirectoryError> {
        let sink = self.sink.as_mut().ok_or_else(|| DirectoryError::Io {
            action: "error writing",
            path: self.path.clone(),
            source: io::Error::other("file already finished"),
        })?;
        sink.write_all(bytes)
            .map_err(DirectoryError::io("error writing", &self.path))?;
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    /// Documents written so far.
    #[must_use]
    pub fn documents(&self) -> u64 {
        self.documents
    }

    /// Uncompressed bytes written so far.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Flushes (ending the gzip member), syncs and renames the file into place.
    ///
    /// # Errors
    /// [`DirectoryError::Io`] naming the file.
    pub fn finish(mut self) -> Result<WrittenFile, DirectoryError> {
        let sink = self.sink.take().ok_or_else(|| DirectoryError::Io {
            action: "error writing",
            path: self.path.clone(),
            source: io::Error::other("file already finished"),
        })?;
        let file = sink
            .into_file()
            .map_err(DirectoryError::io("error writing", &self.path))?;
        file.sync_all()
            .map_err(DirectoryError::io("error syncing", &self.path))?;
        drop(file);
        fs::rename(&self.temp_path, &self.path).map_err(DirectoryError::io("error renaming into", &self.path))?;
        self.finished = true;
        Ok(WrittenFile {
            path: self.path.clone(),
            documents: self.documents,
            bytes: self.bytes,
        })
    }
}

impl Drop for DataFileWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = fs::remove_file(&self.temp_path);
        }
    }
}
