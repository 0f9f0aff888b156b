//! `dump`: read a server and write a mongodump-compatible directory or archive.
//!
//! The work is split in two, as the real tool does: [`plan_dump`] asks the server what exists
//! (`buildInfo`, `listDatabases`, `listCollections`, `listIndexes`, estimated counts) and applies
//! mongodump's inclusion rules, producing a [`DumpPlan`] that `--dryRun` prints; [`run_dump`]
//! then streams every collection with `find` (`hint {$natural: 1}` unless a query is given) into
//! its output, up to `-j` collections at a time. Documents travel as raw BSON from the cursor to
//! the file, so nothing is re-encoded.
//!
//! With `--oplog`, the oplog is read *while* collections are dumped, from the start timestamp
//! on, into a spool file: unlike mongodump, a long dump does not need the oplog to still hold its
//! start at the end. Each poll must begin exactly at the last entry seen; if the server has
//! already discarded it, the dump fails with mongodump's "oplog overflow" message.

use std::{
    fmt,
    fs::File,
    io::{BufWriter, Seek, Write},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bson::{Bson, Document, RawDocumentBuf, Timestamp, doc};
use mongodb::{
    Client,
    action::Action as _,
    options::Hint,
    raw_batch_cursor::{RawBatch, RawBatchCursor},
};
use tidemark_directio::OutputFile;
use tidemark_format::{
    archive::{ArchiveHeader, ArchiveWriter, HeldBytes, NamespaceWriter, PreludeEntry, SharedArchiveWriter},
    bson_stream::{BsonReader, MAX_OPLOG_DOCUMENT_SIZE},
    directory::{DataFileWriter, DbAuthFile, DumpWriter},
    metadata::Metadata,
    parallel_gzip::ParallelGzEncoder,
};

use crate::{
    error::{Error, MongoContext, Result, io_error},
    progress::Progress,
};

/// Where the dump goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DumpTarget {
    /// A dump directory (`--out`, default `dump`).
    Directory(PathBuf),
    /// An archive file, or standard output when `None` (`--archive[=<file>]`).
    Archive(Option<PathBuf>),
    /// The raw BSON of one collection on standard output (`--out -`).
    Stdout,
    /// Every namespace's documents handed to a receiver in the same process, as the server sent
    /// them (a backup storing them in a repository): no file or archive in between.
    Documents(DocumentOutput),
}

/// What a dump to [`DumpTarget::Documents`] sends, in order: the prelude first, then the
/// namespaces' documents and ends, interleaved when several collections are dumped at once.
#[derive(Debug)]
pub enum DumpEvent {
    /// Every namespace of the dump as an archive's prelude lists them (metadata as
    /// `metadata.json` text; the oplog last, as database `""`, collection `"oplog"`). Later
    /// events name a namespace by its index here.
    Prelude {
        /// The server's version.
        server_version: String,
        /// The namespaces.
        entries: Vec<PreludeEntry>,
    },
    /// A batch of documents as the server's reply holds them (checked to hold documents only).
    Batch {
        /// Index of the namespace in the prelude.
        namespace: usize,
        /// The server's reply.
        batch: RawBatch,
    },
    /// One document (oplog entries, read back from the dump's spool file).
    Document {
        /// Index of the namespace in the prelude.
        namespace: usize,
        /// The document.
        document: RawDocumentBuf,
    },
    /// The namespace is complete (sent for every namespace, views and empty ones included).
    End {
        /// Index of the namespace in the prelude.
        namespace: usize,
    },
}

/// The sending end of a [`DumpTarget::Documents`] dump. Cloning shares the channel; the receiver
/// sees its end once the dump has finished and every clone is dropped.
#[derive(Clone)]
pub struct DocumentOutput(tokio::sync::mpsc::Sender<DumpEvent>);

impl DocumentOutput {
    /// Sends the dump's events into `sender` (a bounded channel: the dump waits for its receiver).
    #[must_use]
    pub fn new(sender: tokio::sync::mpsc::Sender<DumpEvent>) -> Self {
        Self(sender)
    }

    async fn send(&self, event: DumpEvent) -> Result<()> {
        self.0.send(event).await.map_err(|_| Error::ReceiverGone)
    }
}

impl fmt::Debug for DocumentOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DocumentOutput")
    }
}

impl PartialEq for DocumentOutput {
    fn eq(&self, other: &Self) -> bool {
        self.0.same_channel(&other.0)
    }
}

impl Eq for DocumentOutput {}

/// What to dump and how.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DumpOptions {
    /// `--db`.
    pub db: Option<String>,
    /// `--collection`.
    pub collection: Option<String>,
    /// `--query`/`--queryFile`, already parsed (field order kept).
    pub query: Option<Document>,
    /// `--excludeCollection`.
    pub exclude_collections: Vec<String>,
    /// `--excludeCollectionsWithPrefix`.
    pub exclude_collection_prefixes: Vec<String>,
    /// Output.
    pub target: DumpTarget,
    /// `--gzip`.
    pub gzip: bool,
    /// `--oplog`.
    pub oplog: bool,
    /// `--dumpDbUsersAndRoles`.
    pub dump_db_users_and_roles: bool,
    /// `--viewsAsCollections`.
    pub views_as_collections: bool,
    /// `-j/--numParallelCollections` (at least 1).
    pub parallel: usize,
    /// Version string recorded in the archive header and `prelude.json`.
    pub tool_version: String,
    /// Collections with at least this many documents (estimated) are read by `parallel`
    /// concurrent `_id`-range cursors instead of one natural-order cursor.
    pub split_threshold: u64,
}

impl Default for DumpOptions {
    fn default() -> Self {
        Self {
            db: None,
            collection: None,
            query: None,
            exclude_collections: Vec::new(),
            exclude_collection_prefixes: Vec::new(),
            target: DumpTarget::Directory(PathBuf::from("dump")),
            gzip: false,
            oplog: false,
            dump_db_users_and_roles: false,
            views_as_collections: false,
            parallel: 4,
            tool_version: concat!("tidemark-", env!("CARGO_PKG_VERSION")).to_owned(),
            split_threshold: 500_000,
        }
    }
}

/// Kind of a dumped namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollectionKind {
    /// An ordinary collection.
    Collection,
    /// A view (metadata only unless `--viewsAsCollections`).
    View,
    /// A timeseries collection (data from its buckets collection).
    Timeseries,
    /// Users, roles or auth version of `--dumpDbUsersAndRoles` (no metadata).
    AuthData,
}

/// One namespace of the plan.
#[derive(Debug, Clone)]
pub struct CollectionPlan {
    /// Database.
    pub db: String,
    /// Logical collection name (the name in metadata and in the archive prelude).
    pub name: String,
    /// Kind.
    pub kind: CollectionKind,
    /// The collection the documents are read from (`None`: no data, as for views).
    pub source: Option<(String, String)>,
    /// `find` filter.
    pub filter: Document,
    /// Whether the find uses `hint {$natural: 1}`.
    pub natural_hint: bool,
    /// The collection part of the data file name / archive namespace.
    pub data_collection: String,
    /// Metadata (`None`: no metadata file, as for per-database auth data).
    pub metadata: Option<Metadata>,
    /// `listCollections` type (`collection`, `view`, `timeseries`, or empty).
    pub type_name: String,
    /// Estimated document count, when known.
    pub estimated_count: Option<u64>,
    /// Users, roles and auth version: dumped before everything else.
    pub first: bool,
}

impl CollectionPlan {
    /// `db.name`.
    #[must_use]
    pub fn namespace(&self) -> String {
        format!("{}.{}", self.db, self.name)
    }
}

/// The result of [`plan_dump`]: everything that will be written.
#[derive(Debug, Clone)]
pub struct DumpPlan {
    /// `buildInfo.version` of the source (`unknown` when it failed).
    pub server_version: String,
    /// Namespaces to dump, in dump order (auth data first).
    pub collections: Vec<CollectionPlan>,
    /// Namespaces that exist but are not dumped, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Oplog start, when `--oplog` is given.
    pub oplog_start: Option<Timestamp>,
}

impl fmt::Display for DumpPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "source server version: {}", self.server_version)?;
        for c in &self.collections {
            let kind = match c.kind {
                CollectionKind::Collection => "collection",
                CollectionKind::View => "view",
                CollectionKind::Timeseries => "timeseries",
                CollectionKind::AuthData => "auth data",
            };
            let count = c.estimated_count.map_or_else(|| "?".to_owned(), |n| n.to_string());
            let data = if c.source.is_some() {
                format!("{count} document(s)")
            } else {
                "metadata only".to_owned()
            };
            writeln!(f, "dump {} ({kind}): {data}", c.namespace())?;
        }
        for (ns, why) in &self.skipped {
            writeln!(f, "skip {ns}: {why}")?;
        }
        if let Some(ts) = self.oplog_start {
            writeln!(f, "oplog from {}:{}", ts.time, ts.increment)?;
        }
        Ok(())
    }
}

/// What a dump wrote.
#[derive(Debug, Clone, Default)]
pub struct DumpSummary {
    /// Documents per namespace, in plan order.
    pub namespaces: Vec<(String, u64)>,
    /// Namespaces read through several `_id`-range cursors, with the number of ranges.
    pub split: Vec<(String, usize)>,
    /// Sum over all namespaces.
    pub documents: u64,
    /// Oplog entries written with `--oplog`.
    pub oplog_entries: Option<u64>,
}

/// `config` collections kept in a full dump (FORMATS.md 1.12): the same seven whose oplog entries
/// restore replays.
use tidemark_oplog::replay::KEPT_CONFIG_COLLECTIONS as KEPT_CONFIG;

/// mongodump's `shouldSkipSystemNamespace` plus the `$` rule: why a collection is not dumped.
#[must_use]
pub fn skip_reason(db: &str, collection: &str, explicit_config: bool) -> Option<&'static str> {
    if collection.contains('$') && !collection.contains(".oplog.$") {
        return Some("name contains '$'");
    }
    match db {
        "admin" => (collection == "system.keys").then_some("admin.system.keys is never dumped"),
        "config" if !explicit_config => {
            (!KEPT_CONFIG.contains(&collection)).then_some("config collection not kept in a full dump")
        }
        "config" => None,
        _ => (collection.starts_with("system.") && collection != "system.js").then_some("system collection"),
    }
}

fn uuid_hex(info: Option<&Document>) -> Option<String> {
    let Some(Bson::Binary(b)) = info.and_then(|i| i.get("uuid")) else {
        return None;
    };
    Some(b.bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// The metadata of a collection as current mongodump writes it: `options` omitted when empty,
/// `uuid` when known, `type` when reported.
#[must_use]
pub fn collection_metadata(
    options: &Document,
    indexes: &[Document],
    uuid: Option<&str>,
    name: &str,
    type_name: &str,
) -> Metadata {
    let mut meta = Metadata::new(name);
    meta.options = (!options.is_empty()).then(|| options.clone());
    meta.indexes = indexes.to_vec();
    meta.uuid = uuid.map(str::to_owned);
    meta.collection_type = (!type_name.is_empty()).then(|| type_name.to_owned());
    meta
}

async fn cursor_documents(client: &Client, db: &str, command: Document) -> Result<Vec<Document>> {
    let what = format!("{} on {db}", command.keys().next().map_or("command", String::as_str));
    let mut cursor = client
        .database(db)
        .run_cursor_command(command)
        .await
        .context(|| format!("error running {what}"))?;
    let mut out = Vec::new();
    while cursor.advance().await.context(|| format!("error reading {what}"))? {
        out.push(
            cursor
                .deserialize_current()
                .context(|| format!("error decoding {what}"))?,
        );
    }
    Ok(out)
}

/// Indexes of `db.coll`. A collection dropped after it was listed has none: mongodump's driver
/// answers NamespaceNotFound with an empty index list and the dump goes on; so does this one, with
/// a warning.
async fn list_indexes(client: &Client, db: &str, coll: &str, progress: &dyn Progress) -> Result<Vec<Document>> {
    let listed = cursor_documents(client, db, doc! {"listIndexes": coll, "cursor": {}}).await;
    Ok(absent_if_dropped(listed, &format!("{db}.{coll}"), progress)?.unwrap_or_default())
}

/// `None` (with a warning) when `result` failed only because the collection no longer exists.
///
/// A collection listed by the plan may be dropped before its turn comes: its indexes and
/// documents are then empty, as for mongodump, instead of failing the whole dump.
fn absent_if_dropped<T>(result: Result<T>, ns: &str, progress: &dyn Progress) -> Result<Option<T>> {
    match result {
        Err(e) if e.is_namespace_not_found() => {
            progress.log(&format!(
                "the collection {ns} appears to have been dropped after the dump started"
            ));
            Ok(None)
        }
        other => other.map(Some),
    }
}

async fn estimated_count(client: &Client, db: &str, coll: &str) -> Option<u64> {
    let reply = client.database(db).run_command(doc! {"count": coll}).await.ok()?;
    match reply.get("n") {
        Some(Bson::Int32(n)) => u64::try_from(*n).ok(),
        Some(Bson::Int64(n)) => u64::try_from(*n).ok(),
        Some(Bson::Double(n)) if *n >= 0.0 => format!("{n:.0}").parse().ok(),
        _ => None,
    }
}

/// Bytes a dump asks for per batch. Small enough that the reply's buffers stay in the CPU cache
/// while they are copied (the server caps batches at 16 MiB, which is slower and holds more
/// memory per cursor); large enough that round trips cost little.
const BATCH_BYTES: u64 = 1 << 20;

/// Bytes of one collection an archive dump gathers before handing them to the output (mongodump:
/// 16 MiB). Consecutive hand-overs of one namespace continue the same segment, so the archive of a
/// single collection is the same byte for byte whatever this size. With several collections at
/// once it only interleaves them more finely, and each holds 4 MiB of server replies instead of 16.
const ARCHIVE_HANDOVER_BYTES: usize = 4 << 20;

/// The `batchSize` that makes batches of about [`BATCH_BYTES`], from the collection's average
/// document size (`collStats.avgObjSize`); `None` (the server's default) when it is unknown.
async fn batch_size_for(client: &Client, db: &str, coll: &str) -> Option<u32> {
    let reply = client.database(db).run_command(doc! {"collStats": coll}).await.ok()?;
    let average = match reply.get("avgObjSize")? {
        Bson::Int32(n) => u64::try_from(*n).ok()?,
        Bson::Int64(n) => u64::try_from(*n).ok()?,
        Bson::Double(n) if *n >= 1.0 => format!("{n:.0}").parse().ok()?,
        _ => return None,
    };
    u32::try_from((BATCH_BYTES / average.max(1)).clamp(101, 100_000)).ok()
}

fn server_major_minor(version: &str) -> (u32, u32) {
    let mut parts = version.split(['.', '-', '+']).map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Asks the server what to dump and applies mongodump's inclusion rules.
///
/// # Errors
/// [`Error::Mongo`] when a listing command fails, [`Error::Options`] for `--oplog` on a server
/// without an oplog.
#[allow(clippy::too_many_lines)]
pub async fn plan_dump(client: &Client, options: &DumpOptions, progress: &dyn Progress) -> Result<DumpPlan> {
    let admin = client.database("admin");
    let server_version = match admin.run_command(doc! {"buildInfo": 1}).await {
        Ok(info) => info.get_str("version").unwrap_or("unknown").to_owned(),
        Err(_) => "unknown".to_owned(),
    };
    let viewless_timeseries = server_major_minor(&server_version) >= (8, 3);
    let mut plan = DumpPlan {
        server_version,
        collections: Vec::new(),
        skipped: Vec::new(),
        oplog_start: None,
    };

    if options.oplog {
        plan.oplog_start = Some(oplog_start(client).await?);
    }

    let databases: Vec<String> = match &options.db {
        Some(db) => vec![db.clone()],
        None => {
            let names = client
                .list_database_names()
                .await
                .context(|| "error listing databases".to_owned())?;
            names
                .into_iter()
                .filter(|db| {
                    if db == "local" {
                        plan.skipped
                            .push((db.clone(), "the local database is only dumped with --db local".into()));
                        return false;
                    }
                    if db.starts_with("__mdb_internal") {
                        plan.skipped.push((db.clone(), "internal database".into()));
                        return false;
                    }
                    true
                })
                .collect()
        }
    };
    let explicit_config = options.db.as_deref() == Some("config");

    for db in &databases {
        let filter = match &options.collection {
            Some(c) => doc! {"name": c},
            None => doc! {},
        };
        let specs = cursor_documents(client, db, doc! {"listCollections": 1, "filter": filter, "cursor": {}}).await?;
        if let Some(c) = &options.collection
            && specs.is_empty()
        {
            progress.log(&format!("namespace with DB {db} and collection {c} does not exist"));
            return Ok(plan);
        }
        let mut firsts = Vec::new();
        let mut rest = Vec::new();
        for spec in specs {
            let Ok(name) = spec.get_str("name").map(str::to_owned) else {
                continue;
            };
            let ns = format!("{db}.{name}");
            if options.collection.is_none() {
                if let Some(why) = skip_reason(db, &name, explicit_config) {
                    plan.skipped.push((ns, why.into()));
                    continue;
                }
                if options.exclude_collections.contains(&name) {
                    plan.skipped.push((ns, "--excludeCollection".into()));
                    continue;
                }
                if options
                    .exclude_collection_prefixes
                    .iter()
                    .any(|p| name.starts_with(p.as_str()))
                {
                    plan.skipped.push((ns, "--excludeCollectionsWithPrefix".into()));
                    continue;
                }
            }
            if options.oplog && db == "config" && name.contains("eshardingOperations") {
                return Err(Error::Options(
                    "detected resharding in progress. Cannot dump with --oplog while resharding".into(),
                ));
            }
            let type_name = spec.get_str("type").unwrap_or("collection").to_owned();
            let mut coll_options = spec.get_document("options").cloned().unwrap_or_default();
            let uuid = uuid_hex(spec.get_document("info").ok());
            let kind = match type_name.as_str() {
                "view" => CollectionKind::View,
                "timeseries" => CollectionKind::Timeseries,
                _ => CollectionKind::Collection,
            };
            if options.views_as_collections && kind != CollectionKind::View {
                plan.skipped.push((ns, "--viewsAsCollections dumps only views".into()));
                continue;
            }
            let (indexes, source, data_collection, estimated) = match kind {
                CollectionKind::View if !options.views_as_collections => (Vec::new(), None, name.clone(), None),
                CollectionKind::View => {
                    coll_options.remove("viewOn");
                    coll_options.remove("pipeline");
                    (Vec::new(), Some((db.clone(), name.clone())), name.clone(), None)
                }
                CollectionKind::Timeseries if !viewless_timeseries => {
                    let buckets = format!("system.buckets.{name}");
                    // Before 8.3 the data lives only in the buckets collection; a server without
                    // it would silently yield an empty dump, so refuse instead.
                    let listed = cursor_documents(
                        client,
                        db,
                        doc! {"listCollections": 1, "filter": {"name": &buckets}, "cursor": {}},
                    )
                    .await?;
                    if listed.is_empty() {
                        return Err(Error::Data(format!(
                            "cannot dump timeseries collection {ns}: its buckets collection {db}.{buckets} does not exist"
                        )));
                    }
                    let count = estimated_count(client, db, &buckets).await;
                    (
                        list_indexes(client, db, &name, progress).await?,
                        Some((db.clone(), buckets.clone())),
                        buckets,
                        count,
                    )
                }
                _ => {
                    let count = estimated_count(client, db, &name).await;
                    (
                        list_indexes(client, db, &name, progress).await?,
                        Some((db.clone(), name.clone())),
                        name.clone(),
                        count,
                    )
                }
            };
            let uuid = if kind == CollectionKind::Collection { uuid } else { None };
            let metadata = collection_metadata(&coll_options, &indexes, uuid.as_deref(), &name, &type_name);
            let first = db == "admin" && ["system.users", "system.roles", "system.version"].contains(&name.as_str());
            let filter = options.query.clone().unwrap_or_default();
            let item = CollectionPlan {
                db: db.clone(),
                name: name.clone(),
                kind,
                source,
                natural_hint: options.query.is_none(),
                filter,
                data_collection,
                metadata: Some(metadata),
                type_name,
                estimated_count: estimated,
                first,
            };
            if first { firsts.push(item) } else { rest.push(item) }
        }
        if options.dump_db_users_and_roles && db != "admin" {
            for (coll, filter) in [
                ("system.users", doc! {"db": db.as_str()}),
                ("system.roles", doc! {"db": db.as_str()}),
                ("system.version", doc! {}),
            ] {
                firsts.push(CollectionPlan {
                    db: db.clone(),
                    name: format!("$admin.{coll}"),
                    kind: CollectionKind::AuthData,
                    source: Some(("admin".to_owned(), coll.to_owned())),
                    filter,
                    natural_hint: false,
                    data_collection: format!("$admin.{coll}"),
                    metadata: None,
                    type_name: String::new(),
                    estimated_count: None,
                    first: true,
                });
            }
        }
        plan.collections.extend(firsts);
        plan.collections.extend(rest);
    }
    // Auth data of every database first, as the archive reader requires.
    plan.collections.sort_by_key(|c| !c.first);
    Ok(plan)
}

/// Start of the oplog window: the oldest open transaction's start, or the newest entry.
async fn oplog_start(client: &Client) -> Result<Timestamp> {
    let hello = client
        .database("admin")
        .run_command(doc! {"isMaster": 1})
        .await
        .context(|| "error running isMaster".into())?;
    if hello.get_str("msg") == Ok("isdbgrid") {
        return Err(Error::Options(
            "can't use --oplog option when dumping from a mongos".into(),
        ));
    }
    if !hello.contains_key("hosts") && !hello.contains_key("setName") {
        return Err(Error::Options(
            "--oplog requires a replica set member: the server has no oplog".into(),
        ));
    }
    let txns = client.database("config").collection::<Document>("transactions");
    let open = txns
        .find_one(doc! {"state": {"$in": ["prepared", "inProgress"]}})
        .sort(doc! {"startOpTime": 1})
        .await
        .context(|| "error reading config.transactions".into())?;
    if let Some(ts) = open
        .as_ref()
        .and_then(|t| t.get_document("startOpTime").ok())
        .and_then(|o| o.get_timestamp("ts").ok())
    {
        return Ok(ts);
    }
    newest_oplog_ts(client).await
}

async fn newest_oplog_ts(client: &Client) -> Result<Timestamp> {
    let oplog = client.database("local").collection::<Document>("oplog.rs");
    let newest = oplog
        .find_one(doc! {})
        .sort(doc! {"$natural": -1})
        .await
        .context(|| "error reading the newest oplog entry".into())?;
    newest
        .and_then(|d| d.get_timestamp("ts").ok())
        .ok_or_else(|| Error::Data("the oplog (local.oplog.rs) is empty".into()))
}

/// mongodump's `oplogDocumentValidator`: entries that make a consistent dump impossible.
///
/// # Errors
/// [`Error::Data`] with mongodump's message.
pub fn validate_oplog_entry(entry: &Document) -> Result<()> {
    let o = entry.get_document("o").ok();
    let has = |k: &str| o.is_some_and(|o| o.contains_key(k));
    if entry.get_str("ns") == Ok("admin.system.version") {
        return Err(Error::Data(
            "cannot dump with oplog if admin.system.version is modified".into(),
        ));
    }
    if has("renameCollection") {
        return Err(Error::Data("cannot dump with oplog while renames occur".into()));
    }
    if has("importCollection") {
        return Err(Error::Data(
            "cannot dump with oplog while importCollection occurs".into(),
        ));
    }
    if has("upgradeDowngradeViewlessTimeseries") {
        return Err(Error::Data(
            "cannot dump with oplog while a timeseries format conversion caused by an FCV change between 8.x and 9.0 occurs"
                .into(),
        ));
    }
    let ns = entry.get_str("ns").unwrap_or_default();
    if ns.starts_with("config.")
        && o.and_then(|o| o.get_str("create").ok()).is_some_and(|c| {
            [
                "reshardingOperations",
                "localReshardingOperations.donor",
                "localReshardingOperations.recipient",
            ]
            .contains(&c)
        })
    {
        return Err(Error::Data("cannot dump with oplog while resharding".into()));
    }
    Ok(())
}

/// Reads the oplog from `start` into a spool file until `stop` is set and the window's end
/// (the newest entry at that moment) has been read.
async fn tail_oplog(client: Client, start: Timestamp, stop: Arc<AtomicBool>) -> Result<(File, u64)> {
    let mut spool =
        tempfile::tempfile().map_err(io_error("error creating the oplog spool file", std::env::temp_dir()))?;
    let oplog = client.database("local").collection::<RawDocumentBuf>("oplog.rs");
    let mut last = start;
    let mut first_poll = true;
    let mut count = 0u64;
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        let end = if stopping {
            Some(newest_oplog_ts(&client).await?)
        } else {
            None
        };
        let mut filter = doc! {"ts": {"$gte": last}};
        if let Some(end) = end {
            filter = doc! {"$and": [{"ts": {"$gte": last}}, {"ts": {"$lte": end}}]};
        }
        let mut cursor = oplog.find(filter).await.context(|| "error reading the oplog".into())?;
        let mut seen_first = false;
        while cursor.advance().await.context(|| "error reading the oplog".into())? {
            let raw = cursor.current();
            let ts = raw
                .get_timestamp("ts")
                .map_err(|e| Error::Data(format!("oplog entry without ts: {e}")))?;
            if !seen_first {
                seen_first = true;
                if ts != last {
                    return Err(Error::Data(
                        "oplog overflow: mongodump was unable to capture all new oplog entries during execution".into(),
                    ));
                }
                if !first_poll {
                    // Already written by the previous poll.
                    continue;
                }
            }
            let doc = Document::try_from(raw).map_err(|e| Error::Data(format!("invalid oplog entry: {e}")))?;
            validate_oplog_entry(&doc)?;
            spool
                .write_all(raw.as_bytes())
                .map_err(io_error("error writing the oplog spool file", std::env::temp_dir()))?;
            count += 1;
            last = ts;
        }
        if !seen_first {
            return Err(Error::Data(
                "oplog overflow: mongodump was unable to capture all new oplog entries during execution".into(),
            ));
        }
        first_poll = false;
        if stopping {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    spool
        .rewind()
        .map_err(io_error("error rewinding the oplog spool file", std::env::temp_dir()))?;
    Ok((spool, count))
}

/// An output stream that must be closed explicitly, so that errors of the final flush (and of
/// the gzip trailer) are reported instead of being lost in a `Drop`.
pub(crate) trait Output: Write + Send {
    /// Flushes and finishes the stream.
    fn close(self: Box<Self>) -> std::io::Result<()>;
}

impl<W: Write + Send> Output for BufWriter<W> {
    fn close(mut self: Box<Self>) -> std::io::Result<()> {
        self.flush()
    }
}

impl Output for ParallelGzEncoder<Box<dyn Output>> {
    fn close(self: Box<Self>) -> std::io::Result<()> {
        (*self).finish()?.close()
    }
}

impl Output for OutputFile {
    fn close(self: Box<Self>) -> std::io::Result<()> {
        (*self).finish().map(drop)
    }
}

type BoxWrite = Box<dyn Output>;

fn maybe_gzip(out: BoxWrite, gzip: bool) -> BoxWrite {
    if gzip {
        Box::new(ParallelGzEncoder::new(out, flate2::Compression::default()))
    } else {
        out
    }
}

/// A per-namespace sink.
enum Sink {
    Directory(DataFileWriter),
    Stdout(BoxWrite),
    Archive(Box<NamespaceWriter<BoxWrite>>),
    /// A [`DumpTarget::Documents`] receiver, and the namespace's index in its prelude.
    Documents(DocumentOutput, usize),
}

impl Sink {
    async fn write(&mut self, doc: &bson::RawDocument, ns: &str) -> Result<()> {
        match self {
            Self::Directory(w) => Ok(w.write_document(doc)?),
            Self::Stdout(w) => w.write_all(doc.as_bytes()).map_err(io_error("error writing", "-")),
            Self::Archive(w) => w.write_document(doc).map_err(|source| Error::Archive {
                context: format!("error writing {ns} to the archive"),
                source,
            }),
            Self::Documents(output, namespace) => {
                let event = DumpEvent::Document {
                    namespace: *namespace,
                    document: doc.to_owned(),
                };
                output.send(event).await
            }
        }
    }

    async fn finish(self, ns: &str) -> Result<()> {
        match self {
            Self::Directory(w) => w.finish().map(|_| ()).map_err(Error::from),
            Self::Stdout(w) => w.close().map_err(io_error("error writing", "-")),
            Self::Archive(w) => w.finish().map_err(|source| Error::Archive {
                context: format!("error closing {ns} in the archive"),
                source,
            }),
            Self::Documents(output, namespace) => output.send(DumpEvent::End { namespace }).await,
        }
    }
}

/// `_id` boundaries splitting a collection into `parts` ranges of about equal size, or `None`
/// when it cannot be split soundly.
///
/// Range predicates only match values of one BSON type bracket, so a collection is split only
/// when its smallest and largest `_id` (in `_id` index order, which groups values by type) are of
/// the same bracket: then every `_id` in between is too. Boundaries come from `skip` on the `_id`
/// index; the ranges are `[b0, b1), [b1, b2), ..., [b(n-1), max]`.
async fn split_points(coll: &mongodb::Collection<RawDocumentBuf>, count: u64, parts: u64) -> Result<Option<Vec<Bson>>> {
    let id_at = |skip: u64, direction: i32| {
        let coll = coll.clone();
        async move {
            let found = coll
                .find_one(doc! {})
                .sort(doc! {"_id": direction})
                .skip(skip)
                .await
                .context(|| "error finding split points".to_owned())?;
            Ok::<_, Error>(found.and_then(|d| {
                d.get("_id")
                    .ok()
                    .flatten()
                    .and_then(|v| v.to_raw_bson().try_into().ok())
            }))
        }
    };
    let (Some(min), Some(max)) = (id_at(0, 1).await?, id_at(0, -1).await?) else {
        return Ok(None);
    };
    let bracket = |v: &Bson| match v {
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => 1,
        Bson::String(_) | Bson::Symbol(_) => 2,
        Bson::ObjectId(_) => 3,
        Bson::DateTime(_) => 4,
        _ => 0,
    };
    if bracket(&min) == 0 || bracket(&min) != bracket(&max) {
        return Ok(None);
    }
    let mut points = vec![min];
    for k in 1..parts {
        match id_at(count / parts * k, 1).await? {
            Some(b) if bracket(&b) == bracket(&max) && points.last() != Some(&b) => points.push(b),
            _ => {}
        }
    }
    points.push(max);
    Ok(Some(points))
}

/// The next raw batch of a cursor (the driver's zero-copy batch cursor: documents are written
/// straight from the server's reply, without a copy or an allocation per document).
async fn next_batch(cursor: &mut RawBatchCursor, what: &str) -> Result<Option<RawBatch>> {
    use futures_util::StreamExt;
    cursor
        .next()
        .await
        .transpose()
        .context(|| format!("error reading from {what}"))
}

/// Writes every document of a batch (a document receiver gets the whole batch, an archive keeps
/// it until the documents' segment is written); returns how many.
async fn write_batch(batch: RawBatch, sink: &mut Sink, ns: &str, what: &str) -> Result<u64> {
    let handed_over = matches!(sink, Sink::Documents(..) | Sink::Archive(..));
    let reply = batch.as_raw_document().as_bytes();
    let mut held_ranges = Vec::new();
    let mut n = 0u64;
    for element in batch.doc_slices().context(|| format!("error reading from {what}"))? {
        let doc = element.ok().and_then(|value| value.as_document()).ok_or_else(|| {
            Error::Data(format!(
                "error reading from {what}: the server returned a batch element that is not a document"
            ))
        })?;
        if !handed_over {
            sink.write(doc, ns).await?;
        } else if matches!(sink, Sink::Archive(..)) {
            // The document's place in the reply (it is a slice of it).
            let start = doc.as_bytes().as_ptr().addr().wrapping_sub(reply.as_ptr().addr());
            held_ranges.push(start..start.saturating_add(doc.as_bytes().len()));
        }
        n += 1;
    }
    match sink {
        Sink::Documents(output, namespace) => {
            let event = DumpEvent::Batch {
                namespace: *namespace,
                batch,
            };
            output.send(event).await?;
        }
        Sink::Archive(w) => {
            let held: HeldBytes = Arc::new(HeldReply(batch));
            w.write_held(&held, held_ranges).map_err(|source| Error::Archive {
                context: format!("error writing {ns} to the archive"),
                source,
            })?;
        }
        Sink::Directory(_) | Sink::Stdout(_) => {}
    }
    Ok(n)
}

/// A server reply whose documents an archive writer holds instead of copying them.
struct HeldReply(RawBatch);

impl AsRef<[u8]> for HeldReply {
    fn as_ref(&self) -> &[u8] {
        self.0.as_raw_document().as_bytes()
    }
}

async fn dump_collection(
    client: Client,
    plan: CollectionPlan,
    mut sink: Sink,
    progress: Arc<dyn Progress>,
    split: Option<(u64, u64)>,
) -> Result<(u64, usize)> {
    let ns = plan.namespace();
    let mut count = 0u64;
    let mut ranges = 1;
    if let Some((db, coll)) = &plan.source {
        progress.start(&ns, plan.estimated_count);
        let collection = client.database(db).collection::<RawDocumentBuf>(coll);
        let batch_size = batch_size_for(&client, db, coll).await;
        let points = match split {
            Some((n, parts)) if parts > 1 => match split_points(&collection, n, parts).await {
                Ok(points) => points,
                Err(e) => {
                    progress.log(&format!("not splitting {ns}: {e}"));
                    None
                }
            },
            _ => None,
        };
        let mut filters = Vec::new();
        match &points {
            Some(points) if points.len() > 2 => {
                for (i, pair) in points.windows(2).enumerate() {
                    let upper = if i + 2 == points.len() { "$lte" } else { "$lt" };
                    filters.push(doc! {"_id": {"$gte": pair[0].clone(), upper: pair[1].clone()}});
                }
            }
            _ => filters.push(plan.filter.clone()),
        }
        ranges = filters.len();
        // A range cursor reads in `_id` order; a whole collection in natural order (unless a query
        // picks the plan).
        let hint = if ranges > 1 {
            Some(doc! {"_id": 1})
        } else {
            plan.natural_hint.then(|| doc! {"$natural": 1})
        };
        let what = format!("{db}.{coll}");
        // Every cursor reads on its own task and hands its raw batches to the one writer through a
        // channel with room for one batch per cursor: a cursor asks for its next batch while the
        // writer is still writing the previous one, so neither waits for the other, and memory
        // stays bounded whatever the collection size.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<RawBatch>(ranges);
        let mut readers = tokio::task::JoinSet::new();
        for filter in filters {
            let collection = collection.clone();
            let tx = tx.clone();
            let what = what.clone();
            let progress = progress.clone();
            let hint = hint.clone();
            readers.spawn(async move {
                let find = collection
                    .find(filter)
                    .optional(hint, |find, hint| find.hint(Hint::Keys(hint)))
                    .optional(batch_size, |find, size| find.batch_size(size))
                    .batch();
                let opened = find.await.context(|| format!("error reading from {what}"));
                let Some(mut cursor) = absent_if_dropped(opened, &what, &*progress)? else {
                    return Ok(());
                };
                while let Some(batch) = next_batch(&mut cursor, &what).await? {
                    if tx.send(batch).await.is_err() {
                        break;
                    }
                }
                Ok::<_, Error>(())
            });
        }
        drop(tx);
        while let Some(batch) = rx.recv().await {
            let n = write_batch(batch, &mut sink, &ns, &what).await?;
            count += n;
            progress.advance(&ns, n);
        }
        while let Some(joined) = readers.join_next().await {
            joined.map_err(|e| Error::Data(format!("reader of {ns} failed: {e}")))??;
        }
        progress.finish(&ns);
    }
    sink.finish(&ns).await?;
    Ok((count, ranges))
}

fn open_data_file(writer: &DumpWriter, plan: &CollectionPlan) -> Result<DataFileWriter> {
    Ok(match plan.kind {
        CollectionKind::AuthData => {
            let file = match plan.name.as_str() {
                "$admin.system.users" => DbAuthFile::Users,
                "$admin.system.roles" => DbAuthFile::Roles,
                _ => DbAuthFile::Version,
            };
            writer.create_db_auth_file(&plan.db, file)?
        }
        CollectionKind::Timeseries if plan.data_collection != plan.name => {
            writer.create_timeseries_buckets(&plan.db, &plan.name)?
        }
        _ => writer.create_collection(&plan.db, &plan.data_collection)?,
    })
}

/// The archive prelude of a plan: every collection with its metadata, then the oplog when one is
/// captured (database `""`, collection `"oplog"`, as mongodump writes it).
fn prelude_entries(plan: &DumpPlan) -> Result<Vec<PreludeEntry>> {
    let mut entries: Vec<PreludeEntry> = plan
        .collections
        .iter()
        .map(|c| {
            let text = c
                .metadata
                .as_ref()
                .map(Metadata::to_json)
                .transpose()?
                .unwrap_or_default();
            Ok(PreludeEntry::new(
                c.db.clone(),
                c.name.clone(),
                text,
                c.type_name.clone(),
            ))
        })
        .collect::<Result<_>>()?;
    if plan.oplog_start.is_some() {
        entries.push(PreludeEntry::new(
            String::new(),
            "oplog".to_owned(),
            String::new(),
            String::new(),
        ));
    }
    Ok(entries)
}

/// Runs a planned dump.
///
/// # Errors
/// The first failure of any collection, of the oplog reader or of the output.
#[allow(clippy::too_many_lines)]
pub async fn run_dump(
    client: &Client,
    plan: &DumpPlan,
    options: &DumpOptions,
    progress: Arc<dyn Progress>,
) -> Result<DumpSummary> {
    let parallel = options.parallel.max(1);
    let stop = Arc::new(AtomicBool::new(false));
    let tailer = plan
        .oplog_start
        .map(|start| tokio::spawn(tail_oplog(client.clone(), start, stop.clone())));

    // Open the output.
    let mut archive: Option<SharedArchiveWriter<BoxWrite>> = None;
    match &options.target {
        DumpTarget::Archive(path) => {
            let out: BoxWrite = match path {
                Some(p) => {
                    let p = tidemark_format::archive::gzip::resolve_archive_path(p, options.gzip);
                    Box::new(OutputFile::create(&p).map_err(io_error("error creating archive", &p))?)
                }
                None => Box::new(BufWriter::new(std::io::stdout())),
            };
            let out = maybe_gzip(out, options.gzip);
            let concurrent = i32::try_from(parallel).unwrap_or(i32::MAX);
            let header = ArchiveHeader::new(concurrent, plan.server_version.clone(), options.tool_version.clone());
            let entries = prelude_entries(plan)?;
            let writer = ArchiveWriter::new(out, &header, &entries).map_err(|source| Error::Archive {
                context: "error writing the archive prelude".into(),
                source,
            })?;
            archive = Some(SharedArchiveWriter::new(writer));
        }
        DumpTarget::Documents(output) => {
            let event = DumpEvent::Prelude {
                server_version: plan.server_version.clone(),
                entries: prelude_entries(plan)?,
            };
            output.send(event).await?;
        }
        DumpTarget::Stdout => {
            if plan.collections.len() != 1 {
                return Err(Error::Options(
                    "bad option: can only dump a single collection to stdout".into(),
                ));
            }
        }
        DumpTarget::Directory(_) => {}
    }

    let mut summary = DumpSummary::default();
    let mut results: Vec<(usize, (u64, usize))> = Vec::new();
    // Auth data first and alone, then the rest `parallel` at a time.
    let (firsts, rest): (Vec<usize>, Vec<usize>) =
        (0..plan.collections.len()).partition(|i| plan.collections[*i].first);
    for group in [firsts, rest] {
        let semaphore = Arc::new(tokio::sync::Semaphore::new(parallel));
        let mut tasks = tokio::task::JoinSet::new();
        for i in group {
            let item = plan.collections[i].clone();
            let sink = match (&options.target, &archive) {
                (_, Some(archive)) => {
                    let idx = archive
                        .with_writer(|w| w.namespace_index(&item.db, &item.data_collection))
                        .map_err(|source| Error::Archive {
                            context: "archive writer".into(),
                            source,
                        })?
                        .ok_or_else(|| Error::Data(format!("{} is not in the archive prelude", item.namespace())))?;
                    Some(idx)
                }
                _ => None,
            };
            let permit = semaphore
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| Error::Data(e.to_string()))?;
            let client = client.clone();
            let progress = progress.clone();
            let target = options.target.clone();
            let gzip = options.gzip;
            let archive = archive.clone();
            let split_threshold = options.split_threshold;
            let parts = u64::try_from(parallel).unwrap_or(1);
            tasks.spawn(async move {
                let _permit = permit;
                let sink = match (target, sink, archive) {
                    (_, Some(idx), Some(archive)) => Sink::Archive(Box::new(
                        archive
                            .namespace_writer_with_buffer(idx, ARCHIVE_HANDOVER_BYTES)
                            .map_err(|source| Error::Archive {
                                context: "archive writer".into(),
                                source,
                            })?,
                    )),
                    (DumpTarget::Documents(output), _, _) => Sink::Documents(output, i),
                    (DumpTarget::Stdout, _, _) => Sink::Stdout(Box::new(BufWriter::new(std::io::stdout()))),
                    (DumpTarget::Directory(out), _, _) => {
                        let writer = DumpWriter::new(out, gzip);
                        if let Some(meta) = &item.metadata {
                            writer.write_metadata(&item.db, &item.name, meta)?;
                        }
                        if item.source.is_none() {
                            return Ok((i, (0, 1)));
                        }
                        Sink::Directory(open_data_file(&writer, &item)?)
                    }
                    _ => return Err(Error::Data("inconsistent dump target".into())),
                };
                let split = item
                    .estimated_count
                    .filter(|n| item.kind == CollectionKind::Collection && item.natural_hint && *n >= split_threshold)
                    .map(|n| (n, parts));
                let n = dump_collection(client, item, sink, progress, split).await?;
                Ok::<_, Error>((i, n))
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let result = joined.map_err(|e| Error::Data(format!("dump task failed: {e}")))?;
            match result {
                Ok(r) => results.push(r),
                Err(e) => {
                    stop.store(true, Ordering::SeqCst);
                    return Err(e);
                }
            }
        }
    }
    results.sort_by_key(|(i, _)| *i);
    for (i, (n, ranges)) in results {
        summary.namespaces.push((plan.collections[i].namespace(), n));
        summary.documents += n;
        if ranges > 1 {
            summary.split.push((plan.collections[i].namespace(), ranges));
        }
    }

    // The oplog window ends now.
    if let Some(tailer) = tailer {
        stop.store(true, Ordering::SeqCst);
        let (mut spool, count) = tailer
            .await
            .map_err(|e| Error::Data(format!("oplog reader failed: {e}")))??;
        summary.oplog_entries = Some(count);
        let mut sink = match (&options.target, &archive) {
            (_, Some(archive)) => {
                let idx = archive
                    .with_writer(|w| w.namespace_index("", "oplog"))
                    .map_err(|source| Error::Archive {
                        context: "archive writer".into(),
                        source,
                    })?
                    .ok_or_else(|| Error::Data("oplog is not in the archive prelude".into()))?;
                Sink::Archive(Box::new(archive.namespace_writer(idx).map_err(|source| {
                    Error::Archive {
                        context: "archive writer".into(),
                        source,
                    }
                })?))
            }
            (DumpTarget::Documents(output), None) => Sink::Documents(output.clone(), plan.collections.len()),
            // gzip content under the plain name oplog.bson, as mongodump does.
            (DumpTarget::Directory(out), None) => Sink::Directory(DumpWriter::new(out, options.gzip).create_oplog()?),
            _ => return Err(Error::Data("--oplog needs a directory or archive output".into())),
        };
        let mut reader = BsonReader::new(&mut spool, MAX_OPLOG_DOCUMENT_SIZE);
        while let Some(entry) = reader
            .next_document()
            .map_err(|e| Error::Data(format!("error reading the oplog spool file: {e}")))?
        {
            sink.write(&entry, "oplog").await?;
        }
        sink.finish("oplog").await?;
    }

    if let Some(archive) = archive {
        let out = archive.finish().map_err(|source| Error::Archive {
            context: "error finishing the archive".into(),
            source,
        })?;
        out.close()
            .map_err(io_error("error writing archive", PathBuf::from("archive")))?;
    }
    if let DumpTarget::Directory(out) = &options.target {
        DumpWriter::new(out, options.gzip).write_prelude(
            options.db.as_deref(),
            &plan.server_version,
            &options.tool_version,
        )?;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_namespace_rules() {
        assert!(skip_reason("admin", "system.keys", false).is_some());
        assert!(skip_reason("admin", "system.users", false).is_none());
        assert!(skip_reason("config", "chunks", false).is_none());
        assert!(skip_reason("config", "system.sessions", false).is_some());
        assert!(skip_reason("config", "system.sessions", true).is_none());
        assert!(skip_reason("db", "system.js", false).is_none());
        assert!(skip_reason("db", "system.views", false).is_some());
        assert!(skip_reason("db", "a$b", false).is_some());
        assert!(skip_reason("local", "oplog.$main", true).is_some());
        assert!(skip_reason("local", "x.oplog.$main", true).is_none());
    }

    #[test]
    fn metadata_matches_the_real_fixture_bytes() {
        // mongorestore/testdata/collMod_ttl_index's layout as written by current mongodump.
        let indexes = vec![
            doc! {"v": 2, "key": {"_id": 1}, "name": "_id_"},
            doc! {"v": 2, "key": {"a": 1}, "name": "a_1", "expireAfterSeconds": 1000},
        ];
        let json = collection_metadata(
            &doc! {},
            &indexes,
            Some("ffa7054f30dc422696fa9607e150cb53"),
            "coll1",
            "collection",
        )
        .to_json()
        .unwrap();
        assert_eq!(
            json,
            r#"{"indexes":[{"v":{"$numberInt":"2"},"key":{"_id":{"$numberInt":"1"}},"name":"_id_"},{"v":{"$numberInt":"2"},"key":{"a":{"$numberInt":"1"}},"name":"a_1","expireAfterSeconds":{"$numberInt":"1000"}}],"uuid":"ffa7054f30dc422696fa9607e150cb53","collectionName":"coll1","type":"collection"}"#
        );
    }

    #[test]
    fn oplog_validator_messages() {
        let bad = doc! {"op": "c", "ns": "test.$cmd", "o": {"renameCollection": "test.a", "to": "test.b"}};
        assert_eq!(
            validate_oplog_entry(&bad).unwrap_err().to_string(),
            "cannot dump with oplog while renames occur"
        );
        let ok = doc! {"op": "i", "ns": "test.a", "o": {"_id": 1}};
        assert!(validate_oplog_entry(&ok).is_ok());
    }
}
