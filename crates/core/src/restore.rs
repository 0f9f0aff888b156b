//! `restore`: load a mongodump directory, archive or BSON stream into a server.
//!
//! [`plan_restore`] reads only local input: it discovers the namespaces of a directory (through
//! `tidemark-format`'s discovery rules) or the prelude of an archive, applies the namespace
//! filters and renames, chooses the oplog to replay, and returns a [`RestorePlan`] that
//! `--dryRun` prints. [`run_restore`] then follows mongorestore's order of operations:
//! pre-flight checks; per collection drop (with `--drop`), create (options, `idIndex`, or
//! `applyOps` with the dumped UUID under `--preserveUUID`) and unordered bulk inserts of up to
//! 1000 documents (several insertion workers per collection when asked); users and roles through
//! temporary collections and `_mergeAuthzCollections`; oplog replay through `tidemark-oplog`;
//! and last the index builds from the index catalog, which by then reflects the oplog's index
//! operations. Duplicate-key and validation errors are counted, not fatal, unless
//! `--stopOnError` or `--maintainInsertionOrder`.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    io::{BufRead, BufReader, Read, Seek, Write},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use bson::{Bson, Document, RawDocumentBuf, Timestamp, doc};
use mongodb::{
    Client,
    error::ErrorKind,
    options::{Acknowledgment, CollectionOptions, WriteConcern},
};
use tidemark_format::{
    archive::{ArchiveEventRef, ArchiveReader, ServerVersion},
    bson_stream::{BsonReader, MAX_DOCUMENT_SIZE, MAX_OPLOG_DOCUMENT_SIZE, validate_document},
    directory::{DiscoverOptions, EntryKind, discover, open_bson_file},
    metadata::Metadata,
    naming::Namespace,
};
use tidemark_oplog::{IndexBuildOptions, IndexCatalog, ReplayOptions, Replayer, Selection};

use crate::{
    error::{Error, MongoContext, Result, io_error},
    nsmatch::{NamespaceMatcher, NamespaceRenamer},
    progress::Progress,
    replay::OplogSource,
};

/// Documents per insert batch (mongorestore's hidden `--batchSize` default).
pub const DEFAULT_BATCH_SIZE: usize = 1000;
/// Raw bytes per insert batch: 48 000 000 − 1 MiB.
pub const MAX_BATCH_BYTES: usize = 48_000_000 - 1_048_576;
/// Bytes of standard input buffered for the document parser (`restore -`).
const STDIN_BUFFER: usize = 256 * 1024;

/// Where the dump comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreSource {
    /// A dump directory or a single `.bson` file.
    Directory(PathBuf),
    /// An archive file, or standard input when `None`.
    Archive(Option<PathBuf>),
    /// A raw BSON stream on standard input (`-`), restored into `--db`.`--collection`.
    Stdin,
    /// An archive read from a caller-supplied stream (for example a pipe fed by another thread).
    Stream(ArchiveStream),
}

/// A readable archive stream handed to [`plan_restore`], which takes it: a plan can be made from it
/// once. Cloning shares the same stream.
#[derive(Clone)]
pub struct ArchiveStream(Arc<Mutex<Option<Box<dyn Read + Send>>>>);

impl ArchiveStream {
    /// Wraps a reader of an uncompressed archive.
    pub fn new(reader: impl Read + Send + 'static) -> Self {
        Self(Arc::new(Mutex::new(Some(Box::new(reader)))))
    }

    fn take(&self) -> Result<Box<dyn Read + Send>> {
        self.0
            .lock()
            .ok()
            .and_then(|mut r| r.take())
            .ok_or_else(|| Error::Options("the archive stream was already read".into()))
    }
}

impl fmt::Debug for ArchiveStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ArchiveStream")
    }
}

impl PartialEq for ArchiveStream {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ArchiveStream {}

/// What to restore and how (mongorestore's options).
#[derive(Debug, Clone)]
#[non_exhaustive]
#[allow(clippy::struct_excessive_bools)]
pub struct RestoreOptions {
    /// Input.
    pub source: RestoreSource,
    /// `--gzip`.
    pub gzip: bool,
    /// `--db`.
    pub db: Option<String>,
    /// `--collection`.
    pub collection: Option<String>,
    /// `--nsInclude` (empty: everything).
    pub ns_include: Vec<String>,
    /// `--nsExclude` (plus the converted `--excludeCollection*`).
    pub ns_exclude: Vec<String>,
    /// `--nsFrom`.
    pub ns_from: Vec<String>,
    /// `--nsTo`.
    pub ns_to: Vec<String>,
    /// `--drop`.
    pub drop: bool,
    /// `--oplogReplay`.
    pub oplog_replay: bool,
    /// `--oplogLimit`.
    pub oplog_limit: Option<Timestamp>,
    /// `--oplogFile`.
    pub oplog_file: Option<PathBuf>,
    /// `--oplogReplayWorkers`: lanes of the parallel oplog replay (see [`crate::replay`]).
    pub oplog_replay_workers: usize,
    /// `--objcheck`.
    pub objcheck: bool,
    /// `--filter`: only matching documents are restored.
    pub filter: Option<Document>,
    /// `--noIndexRestore`.
    pub no_index_restore: bool,
    /// `--noOptionsRestore`.
    pub no_options_restore: bool,
    /// `--keepIndexVersion`.
    pub keep_index_version: bool,
    /// `--preserveUUID`.
    pub preserve_uuid: bool,
    /// `--maintainInsertionOrder`.
    pub maintain_insertion_order: bool,
    /// `--stopOnError`.
    pub stop_on_error: bool,
    /// `--bypassDocumentValidation`.
    pub bypass_document_validation: bool,
    /// `--writeConcern` (default majority).
    pub write_concern: Option<WriteConcern>,
    /// `--restoreDbUsersAndRoles`.
    pub restore_db_users_and_roles: bool,
    /// `-j/--numParallelCollections`.
    pub parallel: usize,
    /// `--numInsertionWorkersPerCollection`.
    pub insertion_workers: usize,
    /// `--fixDottedHashIndex`.
    pub fix_dotted_hash_index: bool,
    /// `--convertLegacyIndexes`.
    pub convert_legacy_indexes: bool,
    /// Documents per insert batch.
    pub batch_size: usize,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        Self {
            source: RestoreSource::Directory(PathBuf::from("dump")),
            gzip: false,
            db: None,
            collection: None,
            ns_include: Vec::new(),
            ns_exclude: Vec::new(),
            ns_from: Vec::new(),
            ns_to: Vec::new(),
            drop: false,
            oplog_replay: false,
            oplog_limit: None,
            oplog_file: None,
            oplog_replay_workers: crate::replay::default_replay_workers(),
            objcheck: false,
            filter: None,
            no_index_restore: false,
            no_options_restore: false,
            keep_index_version: false,
            preserve_uuid: false,
            maintain_insertion_order: false,
            stop_on_error: false,
            bypass_document_validation: false,
            write_concern: None,
            restore_db_users_and_roles: false,
            parallel: 4,
            insertion_workers: 1,
            fix_dotted_hash_index: false,
            convert_legacy_indexes: false,
            batch_size: DEFAULT_BATCH_SIZE,
        }
    }
}

/// Parses `--writeConcern`: `majority`, a number, a tag name, or JSON `{w, j, wtimeout}`.
///
/// # Errors
/// [`Error::Options`] for invalid JSON or a negative `w`.
pub fn parse_write_concern(text: &str) -> Result<WriteConcern> {
    let text = text.trim();
    let mut wc = WriteConcern::default();
    let w_value = if text.starts_with('{') {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::Options(format!("error parsing --writeConcern: {e}")))?;
        wc.journal = v.get("j").and_then(serde_json::Value::as_bool);
        if let Some(ms) = v.get("wtimeout").and_then(serde_json::Value::as_u64) {
            wc.w_timeout = Some(std::time::Duration::from_millis(ms));
        }
        v.get("w").cloned()
    } else {
        Some(match text.parse::<i64>() {
            Ok(n) => serde_json::Value::from(n),
            Err(_) => serde_json::Value::from(text),
        })
    };
    wc.w = match w_value {
        None => None,
        Some(serde_json::Value::Number(n)) => {
            let n = n
                .as_i64()
                .ok_or_else(|| Error::Options("invalid 'w' argument".into()))?;
            let n = u32::try_from(n).map_err(|_| Error::Options(format!("invalid 'w' argument: {n}")))?;
            Some(Acknowledgment::Nodes(n))
        }
        Some(serde_json::Value::String(s)) if s == "majority" => Some(Acknowledgment::Majority),
        Some(serde_json::Value::String(s)) => Some(Acknowledgment::Custom(s)),
        Some(other) => return Err(Error::Options(format!("invalid 'w' argument: {other}"))),
    };
    Ok(wc)
}

/// Where an intent's documents come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntentData {
    /// No data (views, metadata-only entries).
    None,
    /// A BSON file (gunzipped in gzip mode).
    File {
        /// The file.
        path: PathBuf,
        /// Whether to gunzip.
        gzip: bool,
    },
    /// A namespace of the archive (index into the reader's namespaces).
    Archive(usize),
    /// Standard input.
    Stdin,
}

/// One namespace to restore.
#[derive(Debug, Clone)]
pub struct RestoreIntent {
    /// Namespace in the dump (timeseries: the user-visible name).
    pub source: Namespace,
    /// Namespace on the destination.
    pub destination: Namespace,
    /// What it holds.
    pub kind: EntryKind,
    /// Its documents.
    pub data: IntentData,
    /// Its metadata.
    pub metadata: Option<Metadata>,
    /// Size of the data in bytes when known (directory mode).
    pub size: u64,
}

impl RestoreIntent {
    fn is_timeseries(&self) -> bool {
        self.kind == EntryKind::Timeseries || self.metadata.as_ref().is_some_and(Metadata::is_timeseries)
    }
}

type ArchiveInput = ArchiveReader<Box<dyn Read + Send>>;

/// The result of [`plan_restore`].
pub struct RestorePlan {
    /// Collections (and views) to restore, in restore order.
    pub intents: Vec<RestoreIntent>,
    /// Users, roles and auth-version intents.
    pub auth: Vec<RestoreIntent>,
    /// The oplog to replay with `--oplogReplay`.
    pub oplog: Option<RestoreIntent>,
    /// Namespaces and files not restored, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Server version the dump was taken from, when known.
    pub dump_server_version: Option<String>,
    archive: Option<ArchiveInput>,
    /// With namespace filters or renames: the oplog is replayed only on the selected namespaces.
    selection: Option<Selection>,
    /// More oplog, replayed after [`RestorePlan::oplog`] by the same replayer.
    continuation: Option<Box<dyn OplogSource>>,
}

impl RestorePlan {
    /// Replays `source` after the plan's oplog (if any), with the same replay state: a
    /// transaction may start in one and commit in the other. `--oplogLimit` applies to both.
    pub fn continue_oplog(&mut self, source: Box<dyn OplogSource>) {
        self.continuation = Some(source);
    }

    /// Whether the replay is limited to the selected namespaces (see [`tidemark_oplog::selection`]).
    #[must_use]
    pub fn replays_selected_namespaces_only(&self) -> bool {
        self.selection.is_some()
    }
}

impl fmt::Debug for RestorePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestorePlan")
            .field("intents", &self.intents)
            .field("auth", &self.auth)
            .field("oplog", &self.oplog)
            .field("skipped", &self.skipped)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for RestorePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(v) = &self.dump_server_version {
            writeln!(f, "dump server version: {v}")?;
        }
        for i in self.auth.iter().chain(&self.intents) {
            let what = match i.kind {
                EntryKind::View => "view".to_owned(),
                EntryKind::Users => "users".to_owned(),
                EntryKind::Roles => "roles".to_owned(),
                EntryKind::AuthVersion => "auth version".to_owned(),
                _ if i.size > 0 => format!("{} bytes", i.size),
                _ => "collection".to_owned(),
            };
            let indexes = i.metadata.as_ref().map_or(0, |m| m.indexes.len());
            writeln!(
                f,
                "restore {} to {} ({what}, {indexes} index(es))",
                i.source, i.destination
            )?;
        }
        if let Some(o) = &self.oplog {
            let from = match &o.data {
                IntentData::File { path, .. } => path.display().to_string(),
                _ => "archive".to_owned(),
            };
            writeln!(f, "replay oplog from {from}")?;
        }
        if let Some(c) = &self.continuation {
            writeln!(f, "replay oplog from {}", c.describe())?;
        }
        if self.selection.is_some() && (self.oplog.is_some() || self.continuation.is_some()) {
            writeln!(
                f,
                "oplog entries are applied to the restored namespaces only, under their new names"
            )?;
        }
        for (what, why) in &self.skipped {
            writeln!(f, "skip {what}: {why}")?;
        }
        Ok(())
    }
}

fn open_input(path: Option<&PathBuf>, gzip: bool) -> Result<Box<dyn Read + Send>> {
    let raw: Box<dyn Read + Send> = match path {
        Some(p) if p.as_os_str() != "-" => {
            let p = tidemark_format::archive::gzip::resolve_archive_path(p, gzip);
            Box::new(tidemark_directio::InputFile::open(&p).map_err(io_error("error opening archive", &p))?)
        }
        _ => Box::new(std::io::stdin()),
    };
    Ok(if gzip {
        Box::new(tidemark_format::archive::gzip::gzip_reader(raw))
    } else {
        raw
    })
}

#[derive(Debug, Clone)]
struct Filters {
    include: NamespaceMatcher,
    exclude: NamespaceMatcher,
    renamer: NamespaceRenamer,
}

impl Filters {
    fn new(options: &RestoreOptions, archive_mode: bool) -> Result<Self> {
        let mut include = options.ns_include.clone();
        // -d/-c with an archive are deprecated include filters.
        if archive_mode && let Some(db) = &options.db {
            let escape = |s: &str| s.replace('\\', "\\\\").replace('*', "\\*");
            include.push(match &options.collection {
                Some(c) => format!("{}.{}", escape(db), escape(c)),
                None => format!("{}.*", escape(db)),
            });
        }
        Ok(Self {
            include: NamespaceMatcher::new(&include)?,
            exclude: NamespaceMatcher::new(&options.ns_exclude)?,
            renamer: NamespaceRenamer::new(&options.ns_from, &options.ns_to)?,
        })
    }

    /// Whether any filter or rename is given (the oplog replay then needs a [`Selection`]).
    fn is_active(&self) -> bool {
        !self.include.is_empty() || !self.exclude.is_empty() || !self.renamer.is_empty()
    }

    /// The oplog selection of these filters: a namespace is selected when it would be restored,
    /// and goes to its renamed destination.
    fn into_selection(self, restored: impl IntoIterator<Item = String>) -> Selection {
        Selection::new(
            move |ns: &str| self.wanted(ns).is_none().then(|| self.renamer.rename(ns)),
            restored,
        )
    }

    fn wanted(&self, ns: &str) -> Option<&'static str> {
        if !self.include.is_empty() && !self.include.matches(ns) {
            return Some("not included by --nsInclude");
        }
        if self.exclude.matches(ns) {
            return Some("excluded by --nsExclude");
        }
        None
    }
}

/// Builds the plan from local input only (no server access).
///
/// # Errors
/// Discovery and archive-prelude errors, option conflicts found in the input (two oplogs,
/// conflicting rename destinations, `--restoreDbUsersAndRoles` without users or roles).
#[allow(clippy::too_many_lines)]
pub fn plan_restore(options: &RestoreOptions) -> Result<RestorePlan> {
    let archive_mode = matches!(options.source, RestoreSource::Archive(_) | RestoreSource::Stream(_));
    let filters = Filters::new(options, archive_mode)?;
    let mut plan = RestorePlan {
        intents: Vec::new(),
        auth: Vec::new(),
        oplog: None,
        skipped: Vec::new(),
        dump_server_version: None,
        archive: None,
        selection: None,
        continuation: None,
    };
    let mut found: Vec<RestoreIntent> = Vec::new();
    match &options.source {
        RestoreSource::Stdin => {
            let (Some(db), Some(c)) = (&options.db, &options.collection) else {
                return Err(Error::Options(
                    "cannot restore from stdin without a specified collection".into(),
                ));
            };
            found.push(RestoreIntent {
                source: Namespace::new(db.clone(), c.clone()),
                destination: Namespace::new(db.clone(), c.clone()),
                kind: EntryKind::Collection,
                data: IntentData::Stdin,
                metadata: None,
                size: 0,
            });
        }
        RestoreSource::Directory(target) => {
            let discovery = discover(
                target,
                &DiscoverOptions {
                    gzip: options.gzip,
                    db: options.db.clone(),
                    collection: options.collection.clone(),
                },
            )?;
            plan.dump_server_version = discovery.prelude.as_ref().map(|p| p.server_version_text.clone());
            for s in &discovery.skipped {
                plan.skipped.push((s.path.display().to_string(), s.reason.to_string()));
            }
            for e in discovery.entries {
                let data = match &e.data_path {
                    Some(p) => IntentData::File {
                        path: p.clone(),
                        gzip: e.gzip,
                    },
                    None => IntentData::None,
                };
                found.push(RestoreIntent {
                    destination: e.namespace.clone(),
                    source: e.namespace,
                    kind: e.kind,
                    data,
                    metadata: e.metadata,
                    size: e.size,
                });
            }
        }
        RestoreSource::Archive(_) | RestoreSource::Stream(_) => {
            let input = match &options.source {
                RestoreSource::Stream(stream) => stream.take()?,
                RestoreSource::Archive(path) => open_input(path.as_ref(), options.gzip)?,
                RestoreSource::Directory(_) | RestoreSource::Stdin => {
                    return Err(Error::Options("not an archive source".into()));
                }
            };
            let reader = ArchiveReader::new(input).map_err(|source| Error::Archive {
                context: "error reading the archive prelude".into(),
                source,
            })?;
            let header = reader.header().clone();
            plan.dump_server_version = Some(header.server_version.clone());
            let version = ServerVersion::parse(&header.server_version);
            for (index, ns) in reader.namespaces().iter().enumerate() {
                let entry = &reader.prelude()[ns.prelude_index];
                let metadata = Metadata::parse(
                    entry.metadata.as_bytes(),
                    &format!("archive prelude entry {}.{}", entry.db, entry.collection),
                )?;
                let source = Namespace::new(entry.db.clone(), entry.collection.clone());
                let data_collection = entry.data_collection(version);
                let kind = EntryKind::special_for(&source).unwrap_or_else(|| match &metadata {
                    Some(m) if m.is_view() => EntryKind::View,
                    Some(m) if m.is_timeseries() || data_collection != entry.collection => EntryKind::Timeseries,
                    _ => EntryKind::Collection,
                });
                found.push(RestoreIntent {
                    destination: source.clone(),
                    source,
                    kind,
                    data: IntentData::Archive(index),
                    metadata,
                    size: u64::try_from(entry.size).unwrap_or(0),
                });
            }
            plan.archive = Some(reader);
        }
    }

    // Oplog candidates: high priority (top-level oplog.bson / archive oplog / --oplogFile), low
    // priority (local.oplog.rs / local.oplog.$main).
    let mut high: Vec<RestoreIntent> = Vec::new();
    let mut low: Vec<RestoreIntent> = Vec::new();
    if let Some(file) = &options.oplog_file {
        high.push(RestoreIntent {
            source: Namespace::new("", "oplog"),
            destination: Namespace::new("", "oplog"),
            kind: EntryKind::Oplog,
            data: IntentData::File {
                path: file.clone(),
                gzip: options.gzip,
            },
            metadata: None,
            size: 0,
        });
    }
    let full_restore = options.db.is_none();
    let mut destinations: HashMap<String, String> = HashMap::new();
    for mut intent in found {
        let src = intent.source.to_string();
        match intent.kind {
            EntryKind::Oplog if intent.source.db.is_empty() => {
                if options.oplog_replay {
                    high.push(intent);
                } else {
                    plan.skipped.push((src, "oplog is only used with --oplogReplay".into()));
                    mute(&mut plan, &intent);
                }
                continue;
            }
            EntryKind::Oplog if options.oplog_replay => {
                low.push(intent);
                continue;
            }
            EntryKind::Users | EntryKind::Roles | EntryKind::AuthVersion => {
                plan.auth.push(intent);
                continue;
            }
            EntryKind::SystemIndexes => {
                plan.skipped
                    .push((src, "legacy system.indexes is not restored as data".into()));
                mute(&mut plan, &intent);
                continue;
            }
            _ => {}
        }
        if archive_mode && full_restore && intent.source.collection.starts_with('$') {
            plan.skipped
                .push((src, "not restoring special collection in a full restore".into()));
            mute(&mut plan, &intent);
            continue;
        }
        if intent.source.collection == "system.profile" {
            plan.skipped.push((src, "skipping restore of system.profile".into()));
            mute(&mut plan, &intent);
            continue;
        }
        if let Some(why) = filters.wanted(&src) {
            plan.skipped.push((src, why.into()));
            mute(&mut plan, &intent);
            continue;
        }
        let dest = filters.renamer.rename(&src);
        intent.destination = Namespace::parse(&dest);
        if let Some(previous) = destinations.insert(dest.clone(), src.clone()) {
            return Err(Error::Options(format!(
                "cannot restore with conflicting namespace destinations: {previous} and {src} both restore to {dest}"
            )));
        }
        plan.intents.push(intent);
    }
    if high.len() > 1 || low.len() > 1 {
        return Err(Error::Options(
            "cannot provide both an oplog.bson file and an oplog file with --oplogFile, nor can you provide both a local/oplog.rs.bson and a local/oplog.$main.bson file".into(),
        ));
    }
    if options.oplog_replay {
        plan.oplog = high.pop().or_else(|| low.pop());
        // A low-priority oplog that lost against a high-priority one is an ordinary collection.
        plan.intents.extend(low);
        if plan.oplog.is_none() {
            return Err(Error::Options(
                "no oplog file to replay; make sure you run mongodump with --oplog".into(),
            ));
        }
    }
    if filters.is_active() {
        let restored: Vec<String> = plan.intents.iter().map(|i| i.source.to_string()).collect();
        plan.selection = Some(filters.into_selection(restored));
    }
    if options.restore_db_users_and_roles
        && !plan
            .auth
            .iter()
            .any(|a| matches!(a.kind, EntryKind::Users | EntryKind::Roles))
    {
        return Err(Error::Options(
            "No users or roles found in restore target. Please omit --restoreDbUsersAndRoles, or use a dump created with --dumpDbUsersAndRoles.".into(),
        ));
    }
    if options.parallel > 1 && !archive_mode {
        plan.intents.sort_by_key(|i| std::cmp::Reverse(i.size));
    }
    Ok(plan)
}

fn mute(plan: &mut RestorePlan, intent: &RestoreIntent) {
    if let (Some(reader), IntentData::Archive(i)) = (plan.archive.as_mut(), &intent.data) {
        reader.mute(*i);
    }
}

/// Per-namespace and total counts of a restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreSummary {
    /// `(destination namespace, restored, failed)` in plan order.
    pub namespaces: Vec<(String, u64, u64)>,
    /// Documents inserted.
    pub successes: u64,
    /// Documents that failed (duplicate key, validation).
    pub failures: u64,
    /// Oplog entries applied.
    pub oplog_entries: Option<u64>,
    /// Oplog entries skipped because they touch no selected namespace (with namespace filters).
    pub oplog_skipped: Option<u64>,
    /// Seconds spent replaying the oplog (reading, applying and waiting for the workers).
    pub oplog_seconds: Option<f64>,
}

impl RestoreSummary {
    /// mongorestore's result line.
    #[must_use]
    pub fn result_line(&self) -> String {
        format!(
            "{} document(s) restored successfully. {} document(s) failed to restore.",
            self.successes, self.failures
        )
    }
}

/// A failed restore with the counts reached before the failure.
#[derive(Debug)]
pub struct RestoreFailure {
    /// The error.
    pub error: Error,
    /// Counts so far.
    pub summary: RestoreSummary,
}

#[derive(Debug, Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
}

struct Context {
    client: Client,
    options: RestoreOptions,
    progress: Arc<dyn Progress>,
    filter: Option<tidemark_query::Filter>,
    counts: Mutex<BTreeMap<String, Arc<Counts>>>,
    /// The destination's version as (major, minor, patch), asked once.
    server_version: (i64, i64, i64),
}

/// Whether the destination accepts `bypassEmptyTsReplacement` (SERVER-88750), which mongorestore
/// sends so that a restored `Timestamp(0, 0)` in a top-level field stays as it was instead of being
/// replaced by the current time: 8.0 and later, 7.0.13, 6.0.17 and 5.0.29 on (FORMATS.md §3.2).
fn takes_bypass_empty_ts((major, minor, patch): (i64, i64, i64)) -> bool {
    major >= 8
        || matches!((major, minor), (7, 0) if patch >= 13)
        || matches!((major, minor), (6, 0) if patch >= 17)
        || matches!((major, minor), (5, 0) if patch >= 29)
}

/// Largest command body of an insert sent without a document sequence: mongod's limit for a
/// command (16 MiB plus 16 KiB), less room for the other fields.
const MAX_INSERT_COMMAND: usize = 16 * 1024 * 1024 - 64 * 1024;

/// What an insert command reported.
struct InsertOutcome {
    /// `(index in the batch, code, message)` of each document refused.
    write_errors: Vec<(usize, i32, String)>,
    write_concern_error: Option<String>,
}

impl Context {
    fn counts(&self, ns: &str) -> Arc<Counts> {
        let mut map = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(ns.to_owned()).or_default().clone()
    }

    fn collection(&self, ns: &Namespace) -> mongodb::Collection<RawDocumentBuf> {
        let wc = self
            .options
            .write_concern
            .clone()
            .unwrap_or_else(WriteConcern::majority);
        self.client
            .database(&ns.db)
            .collection_with_options(&ns.collection, CollectionOptions::builder().write_concern(wc).build())
    }
}

fn is_tolerated(code: i32) -> bool {
    code == 11000 || code == 121
}

/// Documents to insert with one `insert_many` (or `insert` commands).
#[derive(Default)]
struct Batch {
    documents: Vec<RawDocumentBuf>,
    /// Raw bytes of `documents`.
    bytes: usize,
    /// Whether a document holds an empty top-level timestamp and the destination takes
    /// `bypassEmptyTsReplacement` (found as each document is added, while its bytes are in the
    /// CPU cache).
    empty_timestamps: bool,
}

/// Inserts one batch; returns `(inserted, failed)` or a fatal error.
async fn insert_batch(
    ctx: &Context,
    ns: &Namespace,
    insert_ns: &Namespace,
    batch: Batch,
    timeseries: bool,
) -> Result<(u64, u64)> {
    let Batch {
        documents: batch,
        empty_timestamps,
        ..
    } = batch;
    let n = u64::try_from(batch.len()).unwrap_or(u64::MAX);
    let ordered = ctx.options.maintain_insertion_order;
    let bypass_validation = ctx.options.bypass_document_validation && !timeseries;
    // Only batches that hold an empty timestamp need the option; the others take the driver's
    // insert, whose document sequence the server reads without a copy.
    let outcome = if empty_timestamps {
        insert_command(ctx, ns, insert_ns, &batch, ordered, bypass_validation).await?
    } else {
        let coll = ctx.collection(insert_ns);
        let mut action = coll.insert_many(batch).ordered(ordered);
        if bypass_validation {
            action = action.bypass_document_validation(true);
        }
        match action.await {
            Ok(_) => InsertOutcome {
                write_errors: Vec::new(),
                write_concern_error: None,
            },
            Err(e) => {
                let ErrorKind::InsertMany(ref failure) = *e.kind else {
                    return Err(Error::Mongo {
                        context: format!("error restoring {ns}"),
                        source: Box::new(e),
                    });
                };
                InsertOutcome {
                    write_errors: failure
                        .write_errors
                        .iter()
                        .flatten()
                        .map(|w| (w.index, w.code, w.message.clone()))
                        .collect(),
                    write_concern_error: failure.write_concern_error.as_ref().map(|w| w.message.clone()),
                }
            }
        }
    };
    if let Some(message) = outcome.write_concern_error {
        return Err(Error::Data(format!("{ns}: write concern error: {message}")));
    }
    let errors = outcome.write_errors;
    if errors.is_empty() {
        return Ok((n, 0));
    }
    let failed = u64::try_from(errors.len()).unwrap_or(u64::MAX);
    let inserted = if ordered {
        errors
            .iter()
            .map(|w| w.0)
            .min()
            .map_or(n, |i| u64::try_from(i).unwrap_or(0))
    } else {
        n.saturating_sub(failed)
    };
    let fatal = errors.iter().find(|w| !is_tolerated(w.1));
    let strict = ctx.options.stop_on_error || ctx.options.maintain_insertion_order;
    if let Some(w) = fatal.or(if strict { errors.first() } else { None }) {
        let counts = ctx.counts(&ns.to_string());
        counts.ok.fetch_add(inserted, Ordering::SeqCst);
        counts.failed.fetch_add(failed, Ordering::SeqCst);
        return Err(Error::Data(format!("{ns}: error restoring documents: {}", w.2)));
    }
    for w in &errors {
        ctx.progress.log(&format!("continuing through error: {}", w.2));
    }
    Ok((inserted, failed))
}

/// Whether a top-level field of `doc` holds `Timestamp(0, 0)`, which the server would replace on
/// insert (`_id` included, to be safe). Found by the elements' framing alone (no key or value is
/// decoded): every restored document passes here.
fn has_empty_top_level_timestamp(doc: &bson::RawDocument) -> bool {
    tidemark_wire::TopLevel::new(doc.as_bytes()).any(|e| e.kind == 0x11 && e.value == [0u8; 8])
}

/// Inserts a batch with `insert` commands carrying `bypassEmptyTsReplacement: true`, as
/// mongorestore does on destinations that take it (the driver's `insert_many` cannot add the
/// field). Each command holds at most [`MAX_INSERT_COMMAND`] bytes of documents; write errors
/// come back with their index in the whole batch.
async fn insert_command(
    ctx: &Context,
    ns: &Namespace,
    insert_ns: &Namespace,
    batch: &[RawDocumentBuf],
    ordered: bool,
    bypass_validation: bool,
) -> Result<InsertOutcome> {
    let write_concern = ctx.options.write_concern.clone().unwrap_or_else(WriteConcern::majority);
    let write_concern = bson::to_raw_document_buf(&write_concern)
        .map_err(|e| Error::Data(format!("{ns}: invalid write concern: {e}")))?;
    let mut outcome = InsertOutcome {
        write_errors: Vec::new(),
        write_concern_error: None,
    };
    let mut start = 0;
    while start < batch.len() {
        let mut documents = bson::RawArrayBuf::new();
        let mut bytes = 0;
        let mut end = start;
        while end < batch.len() && (end == start || bytes + batch[end].as_bytes().len() <= MAX_INSERT_COMMAND) {
            bytes += batch[end].as_bytes().len();
            documents.push(batch[end].clone());
            end += 1;
        }
        let mut command = bson::rawdoc! { "insert": insert_ns.collection.as_str() };
        command.append("documents", documents);
        command.append("ordered", ordered);
        if bypass_validation {
            command.append("bypassDocumentValidation", true);
        }
        command.append("bypassEmptyTsReplacement", true);
        command.append("writeConcern", write_concern.clone());
        let reply = ctx
            .client
            .database(&insert_ns.db)
            .run_raw_command(command)
            .await
            .context(|| format!("error restoring {ns}"))?;
        if let Ok(errors) = reply.get_array("writeErrors") {
            for error in errors.iter().filter_map(|e| e.as_document()) {
                let index = error
                    .get_i32("index")
                    .ok()
                    .and_then(|i| usize::try_from(i).ok())
                    .unwrap_or(0);
                let code = error.get_i32("code").unwrap_or(0);
                let message = error.get_str("errmsg").unwrap_or_default().to_owned();
                outcome.write_errors.push((start + index, code, message));
            }
        }
        if let Ok(wce) = reply.get_document("writeConcernError") {
            outcome.write_concern_error = Some(wce.get_str("errmsg").unwrap_or_default().to_owned());
        }
        if ordered && !outcome.write_errors.is_empty() {
            break;
        }
        start = end;
    }
    Ok(outcome)
}

/// Accumulates documents into batches and inserts them through `workers` concurrent inserters.
struct BatchSink {
    sender: Option<tokio::sync::mpsc::Sender<Batch>>,
    workers: tokio::task::JoinSet<Result<()>>,
    batch: Batch,
    batch_size: usize,
    /// Whether the destination takes `bypassEmptyTsReplacement`, so documents are checked for
    /// empty timestamps.
    check_empty_timestamps: bool,
}

impl BatchSink {
    fn new(ctx: &Arc<Context>, intent: &RestoreIntent, insert_ns: Namespace) -> Self {
        let workers_n = if ctx.options.maintain_insertion_order {
            1
        } else {
            ctx.options.insertion_workers.max(1)
        };
        // One batch waiting per worker: the reader fills the next one while they insert.
        let (sender, receiver) = tokio::sync::mpsc::channel::<Batch>(workers_n);
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        let mut workers = tokio::task::JoinSet::new();
        let timeseries = intent.is_timeseries();
        for _ in 0..workers_n {
            let ctx = ctx.clone();
            let receiver = receiver.clone();
            let ns = intent.destination.clone();
            let insert_ns = insert_ns.clone();
            workers.spawn(async move {
                let counts = ctx.counts(&ns.to_string());
                loop {
                    let next = receiver.lock().await.recv().await;
                    let Some(batch) = next else { return Ok(()) };
                    let (ok, failed) = insert_batch(&ctx, &ns, &insert_ns, batch, timeseries).await?;
                    counts.ok.fetch_add(ok, Ordering::SeqCst);
                    counts.failed.fetch_add(failed, Ordering::SeqCst);
                    ctx.progress.advance(&ns.to_string(), ok + failed);
                }
            });
        }
        Self {
            sender: Some(sender),
            workers,
            batch: Batch::default(),
            batch_size: ctx.options.batch_size.max(1),
            check_empty_timestamps: takes_bypass_empty_ts(ctx.server_version),
        }
    }

    async fn push(&mut self, doc: RawDocumentBuf) -> Result<()> {
        let len = doc.as_bytes().len();
        let batch = &self.batch;
        if !batch.documents.is_empty()
            && (batch.documents.len() >= self.batch_size || batch.bytes + len > MAX_BATCH_BYTES)
        {
            self.flush().await?;
        }
        let batch = &mut self.batch;
        batch.bytes += len;
        batch.empty_timestamps |= self.check_empty_timestamps && has_empty_top_level_timestamp(&doc);
        batch.documents.push(doc);
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        if self.batch.documents.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        let sent = match &self.sender {
            Some(s) => s.send(batch).await.is_ok(),
            None => false,
        };
        if !sent {
            // A worker stopped: surface its error.
            return self.finish().await;
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        if let Some(sender) = self.sender.take()
            && !self.batch.documents.is_empty()
        {
            let batch = std::mem::take(&mut self.batch);
            // A send error means every worker stopped; their error is collected below.
            let _ = sender.send(batch).await;
        }
        let mut first_error = None;
        while let Some(joined) = self.workers.join_next().await {
            let result = joined.map_err(|e| Error::Data(format!("insertion worker failed: {e}")));
            if let Err(e) = result.and_then(|r| r)
                && first_error.is_none()
            {
                first_error = Some(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Whether a document passes `--objcheck` and `--filter`.
fn accept(ctx: &Context, doc: &bson::RawDocument, ns: &Namespace) -> Result<bool> {
    if ctx.options.objcheck {
        validate_document(doc).map_err(|e| Error::Data(format!("{ns}: invalid document: {e}")))?;
    }
    if let Some(filter) = &ctx.filter {
        let decoded = Document::try_from(doc).map_err(|e| Error::Data(format!("{ns}: invalid document: {e}")))?;
        return Ok(filter.matches(&decoded));
    }
    Ok(true)
}

/// Server version as (major, minor, patch).
async fn server_version(client: &Client) -> (i64, i64, i64) {
    let info = client.database("admin").run_command(doc! {"buildInfo": 1}).await.ok();
    let text = info.as_ref().and_then(|i| i.get_str("version").ok()).unwrap_or("0.0.0");
    ServerVersion::parse(text).map_or((0, 0, 0), |v| (v.major, v.minor, v.patch))
}

async fn existing_collections(client: &Client, db: &str) -> Result<HashSet<String>> {
    let names = client
        .database(db)
        .list_collection_names()
        .await
        .context(|| format!("error listing collections of {db}"))?;
    Ok(names.into_iter().collect())
}

/// The collection options sent with `create` (FORMATS.md 3.2).
fn create_options(intent: &RestoreIntent, catalog: &IndexCatalog, options: &RestoreOptions) -> Document {
    if options.no_options_restore {
        return Document::new();
    }
    let mut opts = intent
        .metadata
        .as_ref()
        .and_then(|m| m.options.clone())
        .unwrap_or_default();
    let ns = intent.destination.to_string();
    if !opts.contains_key("clusteredIndex")
        && let Some(id) = catalog
            .get(&ns)
            .and_then(|c| c.indexes.iter().find(|s| s.get_str("name") == Ok("_id_")))
    {
        let mut id = id.clone();
        let v1 = matches!(id.get("v"), Some(Bson::Int32(1) | Bson::Int64(1))) || id.get_f64("v") == Ok(1.0);
        if !options.keep_index_version && !options.preserve_uuid {
            id.remove("v");
        }
        if v1
            && id
                .get_document("collation")
                .is_ok_and(|c| c.get_str("locale") == Ok("simple"))
        {
            id.remove("collation");
        }
        id.insert("ns", ns.as_str());
        opts.remove("autoIndexId");
        opts.insert("idIndex", id);
    }
    if opts.get_bool("autoIndexId") == Ok(false) && options.db.as_deref() != Some("local") {
        opts.insert("autoIndexId", true);
    }
    opts.remove("recordIdsReplicated");
    if intent.is_timeseries() {
        opts.remove("idIndex");
    }
    opts
}

async fn prepare_collection(
    ctx: &Context,
    intent: &RestoreIntent,
    catalog: &IndexCatalog,
    existing: &mut HashMap<String, HashSet<String>>,
) -> Result<()> {
    let ns = &intent.destination;
    if !existing.contains_key(&ns.db) {
        existing.insert(ns.db.clone(), existing_collections(&ctx.client, &ns.db).await?);
    }
    let names = existing.entry(ns.db.clone()).or_default();
    let mut exists = names.contains(&ns.collection);
    if ctx.options.drop && exists {
        if ns.collection.starts_with("system.") {
            ctx.progress
                .log(&format!("cannot drop system collection {ns}, skipping"));
        } else {
            let wc = ctx.options.write_concern.clone().unwrap_or_else(WriteConcern::majority);
            let mut cmd = doc! {"drop": ns.collection.as_str()};
            cmd.insert(
                "writeConcern",
                bson::to_bson(&wc).unwrap_or(Bson::Document(doc! {"w": "majority"})),
            );
            match ctx.client.database(&ns.db).run_command(cmd).await {
                Ok(_) => {}
                Err(e) if matches!(*e.kind, ErrorKind::Command(ref c) if c.code == 26) => {}
                Err(e) => {
                    return Err(Error::Mongo {
                        context: format!("error dropping collection {ns}"),
                        source: Box::new(e),
                    });
                }
            }
            names.remove(&ns.collection);
            exists = false;
        }
    }
    if exists {
        ctx.progress
            .log(&format!("restoring to existing collection {ns} without dropping"));
        return Ok(());
    }
    let opts = create_options(intent, catalog, &ctx.options);
    let uuid = intent.metadata.as_ref().and_then(Metadata::uuid_bytes);
    if ctx.options.preserve_uuid
        && let Some(uuid) = uuid
    {
        let mut o = doc! {"create": ns.collection.as_str()};
        o.extend(opts);
        let entry = doc! {
            "ts": Timestamp { time: 0, increment: 0 }, "t": Bson::Null, "v": 0, "op": "c",
            "ns": format!("{}.$cmd", ns.db), "o": o,
            "ui": bson::Binary { subtype: bson::spec::BinarySubtype::Uuid, bytes: uuid.to_vec() },
        };
        let cmd = doc! {"applyOps": [entry], "bypassDocumentValidation": ctx.options.bypass_document_validation};
        ctx.client
            .database("admin")
            .run_command(cmd)
            .await
            .context(|| format!("error creating collection {ns}"))?;
    } else {
        if ctx.options.preserve_uuid {
            ctx.progress
                .log(&format!("no UUID in the metadata of {ns}: creating it with a new UUID"));
        }
        let mut cmd = doc! {"create": ns.collection.as_str()};
        cmd.extend(opts);
        ctx.client
            .database(&ns.db)
            .run_command(cmd)
            .await
            .context(|| format!("error creating collection {ns}"))?;
    }
    names.insert(ns.collection.clone());
    Ok(())
}

/// The namespace documents are inserted into (buckets collection for timeseries on < 8.3).
fn insert_namespace(intent: &RestoreIntent, version: (i64, i64, i64)) -> Namespace {
    if intent.is_timeseries() && version < (8, 3, 0) {
        Namespace::new(
            intent.destination.db.clone(),
            format!("system.buckets.{}", intent.destination.collection),
        )
    } else {
        intent.destination.clone()
    }
}

async fn restore_file(ctx: Arc<Context>, intent: RestoreIntent, insert_ns: Namespace) -> Result<()> {
    let ns = intent.destination.clone();
    ctx.progress.start(&ns.to_string(), None);
    let mut sink = BatchSink::new(&ctx, &intent, insert_ns);
    let input: Box<dyn BufRead + Send> = match &intent.data {
        IntentData::File { path, gzip } => Box::new(open_bson_file(path, *gzip, MAX_DOCUMENT_SIZE)?.into_inner()),
        IntentData::Stdin => Box::new(BufReader::with_capacity(STDIN_BUFFER, std::io::stdin())),
        _ => return Ok(()),
    };
    let mut reader = BsonReader::buffered(input, MAX_DOCUMENT_SIZE);
    let mut buf = Vec::new();
    let result: Result<()> = async {
        loop {
            let more = reader
                .read_into(&mut buf)
                .map_err(|e| Error::Data(format!("{ns}: reading bson input: {e}")))?;
            if !more {
                break;
            }
            let doc = RawDocumentBuf::from_bytes(std::mem::take(&mut buf))
                .map_err(|e| Error::Data(format!("{ns}: reading bson input: {e}")))?;
            if accept(&ctx, &doc, &ns)? {
                sink.push(doc).await?;
            }
        }
        Ok(())
    }
    .await;
    let finished = sink.finish().await;
    ctx.progress.finish(&ns.to_string());
    result.and(finished)
}

/// Runs a restore plan.
///
/// # Errors
/// A [`RestoreFailure`] carrying the error and the counts reached.
pub async fn run_restore(
    client: &Client,
    plan: RestorePlan,
    options: &RestoreOptions,
    progress: Arc<dyn Progress>,
) -> Result<RestoreSummary, Box<RestoreFailure>> {
    let filter = match &options.filter {
        Some(f) => match tidemark_query::Filter::parse(f) {
            Ok(f) => Some(f),
            Err(e) => {
                return Err(Box::new(RestoreFailure {
                    error: Error::Options(format!("invalid --filter: {e}")),
                    summary: RestoreSummary::default(),
                }));
            }
        },
        None => None,
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        options: options.clone(),
        progress,
        filter,
        counts: Mutex::new(BTreeMap::new()),
        server_version: server_version(client).await,
    });
    let order: Vec<String> = plan.intents.iter().map(|i| i.destination.to_string()).collect();
    let result = execute(&ctx, plan).await;
    let counts = ctx.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut summary = RestoreSummary::default();
    for ns in order {
        let (ok, failed) = counts.get(&ns).map_or((0, 0), |c| {
            (c.ok.load(Ordering::SeqCst), c.failed.load(Ordering::SeqCst))
        });
        summary.successes += ok;
        summary.failures += failed;
        summary.namespaces.push((ns, ok, failed));
    }
    match result {
        Ok(replayed) => {
            summary.oplog_entries = replayed.map(|r| r.applied);
            summary.oplog_skipped = replayed.map(|r| r.skipped);
            summary.oplog_seconds = replayed.map(|r| r.seconds);
            Ok(summary)
        }
        Err(error) => Err(Box::new(RestoreFailure { error, summary })),
    }
}

#[allow(clippy::too_many_lines)]
/// What the oplog replay of a restore did.
#[derive(Debug, Clone, Copy)]
struct Replayed {
    applied: u64,
    skipped: u64,
    seconds: f64,
}

/// Runs the plan; returns what the oplog replay did, when an oplog was replayed.
async fn execute(ctx: &Arc<Context>, mut plan: RestorePlan) -> Result<Option<Replayed>> {
    let options = &ctx.options;
    let version = ctx.server_version;

    // Pre-flight checks.
    for intent in &plan.intents {
        if intent.is_timeseries() && options.no_options_restore {
            return Err(Error::Options(
                "cannot specify --noOptionsRestore when restoring timeseries collections".into(),
            ));
        }
        if !options.no_index_restore
            && let Some(m) = &intent.metadata
        {
            for index in &m.indexes {
                let key = index.get_document("key").cloned().unwrap_or_default();
                if key.values().any(|v| matches!(v, Bson::String(s) if s == "geoHaystack")) {
                    return Err(Error::Data(format!(
                        "found a geoHaystack index: {index} on {}. geoHaystack indexes are not supported by the destination cluster. Remove the index from the source or use --noIndexRestore to skip all indexes.",
                        intent.destination
                    )));
                }
            }
        }
    }

    // Index catalog from metadata, keyed by destination.
    let mut catalog = IndexCatalog::new();
    for intent in &plan.intents {
        let ns = intent.destination.to_string();
        if let Some(m) = &intent.metadata
            && !m.is_view()
        {
            catalog.record_options(&ns, m.options.as_ref().unwrap_or(&Document::new()));
            for spec in &m.indexes {
                catalog.add_index(&ns, spec.clone());
            }
        }
    }

    // Create (and drop) every collection first.
    let mut existing = HashMap::new();
    for intent in &plan.intents {
        if intent.is_timeseries() && !options.drop {
            let names = existing_collections(&ctx.client, &intent.destination.db).await?;
            if names.contains(&intent.destination.collection) {
                return Err(Error::Data(format!(
                    "timeseries collection {} already exists on the destination. You must remove this collection from the destination or use --drop",
                    intent.destination
                )));
            }
        }
        prepare_collection(ctx, intent, &catalog, &mut existing).await?;
    }

    // Data.
    let mut oplog_spool: Option<std::fs::File> = None;
    if let Some(mut reader) = plan.archive.take() {
        let oplog_index = match &plan.oplog {
            Some(RestoreIntent {
                data: IntentData::Archive(i),
                ..
            }) => Some(*i),
            _ => None,
        };
        let mut sinks: HashMap<usize, (Namespace, BatchSink)> = HashMap::new();
        let by_index: HashMap<usize, &RestoreIntent> = plan
            .intents
            .iter()
            .filter_map(|i| match i.data {
                IntentData::Archive(idx) => Some((idx, i)),
                _ => None,
            })
            .collect();
        let mut auth_docs: HashMap<usize, Vec<RawDocumentBuf>> = HashMap::new();
        let auth_index: HashSet<usize> = plan
            .auth
            .iter()
            .filter_map(|a| {
                if let IntentData::Archive(i) = a.data {
                    Some(i)
                } else {
                    None
                }
            })
            .collect();
        loop {
            let event = reader.next_event_ref().map_err(|source| Error::Archive {
                context: "error reading the archive".into(),
                source,
            })?;
            let Some(event) = event else { break };
            match event {
                ArchiveEventRef::SegmentStart { .. } => {}
                ArchiveEventRef::Document { namespace, document } => {
                    if Some(namespace) == oplog_index {
                        let spool = match &mut oplog_spool {
                            Some(s) => s,
                            None => oplog_spool.insert(
                                tempfile::tempfile()
                                    .map_err(io_error("error creating oplog spool", std::env::temp_dir()))?,
                            ),
                        };
                        spool
                            .write_all(document.as_bytes())
                            .map_err(io_error("error writing oplog spool", std::env::temp_dir()))?;
                    } else if auth_index.contains(&namespace) {
                        auth_docs.entry(namespace).or_default().push(document.to_owned());
                    } else if let Some(intent) = by_index.get(&namespace) {
                        let ns = intent.destination.clone();
                        if !accept(ctx, document, &ns)? {
                            continue;
                        }
                        let doc = document.to_owned();
                        let entry = sinks.entry(namespace).or_insert_with(|| {
                            ctx.progress.start(&ns.to_string(), None);
                            (
                                ns.clone(),
                                BatchSink::new(ctx, intent, insert_namespace(intent, version)),
                            )
                        });
                        entry.1.push(doc).await?;
                    }
                }
                ArchiveEventRef::NamespaceEnd { namespace, .. } => {
                    if let Some((ns, mut sink)) = sinks.remove(&namespace) {
                        sink.finish().await?;
                        ctx.progress.finish(&ns.to_string());
                    }
                }
            }
        }
        for (_, (_, mut sink)) in sinks {
            sink.finish().await?;
        }
        restore_auth(ctx, &plan, |i| match i.data {
            IntentData::Archive(idx) => Ok(auth_docs.remove(&idx).unwrap_or_default()),
            _ => Ok(Vec::new()),
        })
        .await?;
    } else {
        let semaphore = Arc::new(tokio::sync::Semaphore::new(options.parallel.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for intent in plan.intents.iter().filter(|i| i.data != IntentData::None) {
            let permit = semaphore
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| Error::Data(e.to_string()))?;
            let ctx = ctx.clone();
            let intent = intent.clone();
            let insert_ns = insert_namespace(&intent, version);
            tasks.spawn(async move {
                let _permit = permit;
                restore_file(ctx, intent, insert_ns).await
            });
        }
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            let r = joined
                .map_err(|e| Error::Data(format!("restore task failed: {e}")))
                .and_then(|r| r);
            if let Err(e) = r
                && first_error.is_none()
            {
                first_error = Some(e);
                tasks.abort_all();
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        restore_auth(ctx, &plan, |i| match &i.data {
            IntentData::File { path, gzip } => {
                let mut r = open_bson_file(path, *gzip, MAX_DOCUMENT_SIZE)?;
                let mut docs = Vec::new();
                while let Some(d) = r
                    .next_document()
                    .map_err(|e| Error::Data(format!("{}: reading bson input: {e}", path.display())))?
                {
                    docs.push(d);
                }
                Ok(docs)
            }
            _ => Ok(Vec::new()),
        })
        .await?;
    }

    // Oplog.
    let mut replayed = None;
    if plan.oplog.is_some() || plan.continuation.is_some() {
        let started = std::time::Instant::now();
        let mut replayer = Replayer::new(
            ReplayOptions::new(
                options.oplog_limit,
                options.preserve_uuid,
                options.bypass_document_validation,
            ),
            catalog,
        );
        if let Some(selection) = plan.selection.take() {
            replayer = replayer.with_selection(selection);
        }
        let input: Box<dyn BufRead + Send> = match (plan.oplog.as_ref().map(|o| &o.data), oplog_spool) {
            (Some(IntentData::File { path, gzip }), _) => {
                Box::new(open_bson_file(path, *gzip, MAX_OPLOG_DOCUMENT_SIZE)?.into_inner())
            }
            (_, Some(mut spool)) => {
                spool
                    .rewind()
                    .map_err(io_error("error reading oplog spool", std::env::temp_dir()))?;
                Box::new(BufReader::new(spool))
            }
            _ => Box::new(std::io::empty()),
        };
        let mut reader = BsonReader::buffered(input, MAX_OPLOG_DOCUMENT_SIZE);
        let mut partitioner =
            tidemark_oplog::Partitioner::new(options.oplog_replay_workers, options.bypass_document_validation);
        crate::replay::serialize_existing_collections(&ctx.client, &mut partitioner).await?;
        let mut lanes = crate::replay::ParallelReplay::new(&ctx.client, partitioner);
        ctx.progress.start(OPLOG_PROGRESS, None);
        let mut stopped = false;
        while let Some(raw) = reader
            .next_document()
            .map_err(|e| Error::Data(format!("error reading oplog bson input: {e}")))?
        {
            stopped = replay_entry(ctx, &mut replayer, &mut lanes, &raw).await?;
            if stopped {
                break;
            }
        }
        if let Some(mut more) = plan.continuation.take()
            && !stopped
        {
            while let Some(raw) = more.next_entry().await? {
                if replay_entry(ctx, &mut replayer, &mut lanes, &raw).await? {
                    break;
                }
            }
        }
        lanes.finish().await?;
        ctx.progress.finish(OPLOG_PROGRESS);
        ctx.progress
            .log(&format!("applied {} oplog entries", replayer.applied()));
        if replayer.skipped() > 0 {
            ctx.progress.log(&format!(
                "skipped {} oplog entries outside the restored namespaces",
                replayer.skipped()
            ));
        }
        replayed = Some(Replayed {
            applied: replayer.applied(),
            skipped: replayer.skipped(),
            seconds: started.elapsed().as_secs_f64(),
        });
        catalog = replayer.into_catalog();
    }

    // Indexes.
    if !options.no_index_restore {
        let commands = catalog.create_indexes_commands(IndexBuildOptions::new(
            options.keep_index_version,
            options.convert_legacy_indexes,
            options.fix_dotted_hash_index,
        ))?;
        for (db, coll, cmd) in commands {
            let ns = format!("{db}.{coll}");
            ctx.progress
                .log(&format!("restoring indexes for collection {ns} from metadata"));
            if let Err(e) = ctx.client.database(&db).run_command(cmd).await {
                return Err(Error::Mongo {
                    context: format!("{ns}: error creating indexes for {ns}: createIndex error"),
                    source: Box::new(e),
                });
            }
        }
    }
    Ok(replayed)
}

/// The progress name of the oplog replay.
pub const OPLOG_PROGRESS: &str = "oplog replay";

/// Replays one top-level entry; returns whether `--oplogLimit` was reached.
async fn replay_entry(
    ctx: &Context,
    replayer: &mut Replayer,
    lanes: &mut crate::replay::ParallelReplay,
    raw: &bson::RawDocument,
) -> Result<bool> {
    let step = replayer.push_raw(raw)?;
    let isolated = tidemark_oplog::is_isolated_entry(raw);
    lanes.push(step.commands, isolated).await?;
    if !step.stop {
        ctx.progress.advance(OPLOG_PROGRESS, 1);
    }
    Ok(step.stop)
}

/// Users and roles through temporary collections and `_mergeAuthzCollections`.
async fn restore_auth(
    ctx: &Arc<Context>,
    plan: &RestorePlan,
    mut load: impl FnMut(&RestoreIntent) -> Result<Vec<RawDocumentBuf>>,
) -> Result<()> {
    let options = &ctx.options;
    let wanted = options.restore_db_users_and_roles || options.db.is_none() || options.db.as_deref() == Some("admin");
    let users = plan.auth.iter().find(|a| a.kind == EntryKind::Users);
    let roles = plan.auth.iter().find(|a| a.kind == EntryKind::Roles);
    if !wanted || (users.is_none() && roles.is_none()) {
        return Ok(());
    }
    let version_docs = match plan.auth.iter().find(|a| a.kind == EntryKind::AuthVersion) {
        Some(intent) => Some(
            load(intent)?
                .iter()
                .map(|raw| {
                    Document::try_from(raw.as_ref())
                        .map_err(|e| Error::Data(format!("invalid system.version document: {e}")))
                })
                .collect::<Result<Vec<_>>>()?,
        ),
        None => None,
    };
    let dump_version = crate::authschema::dump_auth_version(
        plan.dump_server_version.as_deref(),
        version_docs.as_deref(),
        options.restore_db_users_and_roles,
    )?;
    let admin = ctx.client.database("admin");
    let server_version = match admin
        .run_command(doc! {"getParameter": 1, "authSchemaVersion": 1})
        .await
    {
        Ok(reply) => match reply.get("authSchemaVersion") {
            Some(Bson::Int32(v)) => i64::from(*v),
            Some(Bson::Int64(v)) => *v,
            _ => 1,
        },
        Err(_) => 1,
    };
    crate::authschema::check_auth_versions(dump_version, server_version)?;
    for (intent, temp) in [(users, "tempusers"), (roles, "temproles")] {
        let _ = admin.collection::<Document>(temp).drop().await;
        if let Some(intent) = intent {
            let docs = load(intent)?;
            if !docs.is_empty() {
                admin
                    .collection::<RawDocumentBuf>(temp)
                    .insert_many(docs)
                    .await
                    .context(|| format!("error restoring {}", intent.source))?;
            }
        }
    }
    let db = if options.restore_db_users_and_roles {
        options.db.clone().unwrap_or_default()
    } else {
        String::new()
    };
    let cmd = doc! {
        "_mergeAuthzCollections": 1, "tempUsersCollection": "admin.tempusers", "tempRolesCollection": "admin.temproles",
        "drop": options.drop, "db": db, "writeConcern": {"w": "majority"},
    };
    let merged = admin
        .run_command(cmd)
        .await
        .context(|| "error running merge command".into());
    for temp in ["tempusers", "temproles"] {
        let _ = admin.collection::<Document>(temp).drop().await;
    }
    merged.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_timestamps_are_found_at_the_top_level_only() {
        use bson::{Timestamp, rawdoc};
        let zero = Timestamp { time: 0, increment: 0 };
        assert!(has_empty_top_level_timestamp(&rawdoc! {"a": 1, "t": zero}));
        assert!(has_empty_top_level_timestamp(&rawdoc! {"_id": zero}));
        // Eight zero bytes that are not an empty timestamp: a zero int64, a zero double, a
        // timestamp one second in, an empty timestamp below the top level.
        assert!(!has_empty_top_level_timestamp(
            &rawdoc! {"n": 0_i64, "d": 0.0, "t": Timestamp { time: 1, increment: 0 }, "sub": {"t": zero}}
        ));
        assert!(!has_empty_top_level_timestamp(&rawdoc! {"s": "x"}));
    }

    #[test]
    fn write_concern_forms() {
        assert_eq!(
            parse_write_concern("majority").unwrap().w,
            Some(Acknowledgment::Majority)
        );
        assert_eq!(parse_write_concern("2").unwrap().w, Some(Acknowledgment::Nodes(2)));
        assert_eq!(
            parse_write_concern("dc1").unwrap().w,
            Some(Acknowledgment::Custom("dc1".into()))
        );
        let wc = parse_write_concern(r#"{"w":1,"j":true,"wtimeout":500}"#).unwrap();
        assert_eq!((wc.w, wc.journal), (Some(Acknowledgment::Nodes(1)), Some(true)));
        assert!(parse_write_concern(r#"{"w":-1}"#).is_err());
    }
}
