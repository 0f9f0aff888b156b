//! A backup snapshot served read-only (`tidemark serve`) over MongoDB's wire protocol, so mongosh,
//! Compass and drivers can query it without restoring it anywhere.
//!
//! The server is `tidemark-server` in this process, started in read-only mode (mongod's
//! `--queryableBackupMode`, [`tidemark_server::readonly`]): every write command fails with
//! IllegalOperation (20), "Cannot execute a write operation in read-only mode", as on mongod.
//!
//! Serving starts at once. Every collection is created up front from the manifest with its options
//! and indexes, and every view, so `listCollections` and `listIndexes` answer immediately; the
//! documents are then loaded in the background, one namespace at a time, in manifest order. The
//! collections still being filled are registered with a [`LoadGate`]: a query on one of them waits
//! until it is complete (and moves it to the front of the queue) rather than seeing part of it, and a
//! namespace the repository cannot deliver makes its queries fail with the repository's error.
//! Progress (what is loaded, how long the rest should take at the speed so far) is reported as
//! [`LoadEvent`]s as namespaces complete. The repository stays share-locked until everything is loaded (a prune
//! cannot remove packs meanwhile); after that the data lives in memory and the lock is released.
//! The server runs until the future given to [`Serving::serve_until`] completes.
//!
//! `--at TIME` serves the state at a point in time instead: that state exists only after the oplog
//! is replayed, so the point-in-time restore ([`tidemark_core::pitr`]) runs in full into a private
//! in-memory server first, and its data is then served read-only (no lazy loading in this mode).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use bson::{Bson, Document, RawDocumentBuf, doc};
use tidemark_core::pitr::PitrPlan;
use tidemark_core::progress::Progress;
use tidemark_repo::lock::Lock;
use tidemark_repo::snapshot::{Member, NamespaceEntry};
use tidemark_repo::{Id, Repository, SnapshotReader};
use tidemark_server::commands::{Request, ServerState};
use tidemark_server::loading::LoadGate;
use tidemark_server::{Engine, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::{Error, pick_member};

/// Documents per internal insert.
const BATCH_DOCUMENTS: usize = 1000;
/// Bytes per internal insert (below the 48 MB message limit a client would have).
const BATCH_BYTES: usize = 8 << 20;

/// What to serve and where.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The snapshot (id, unique id prefix, or `latest`); `None` is `latest`.
    pub snapshot: Option<String>,
    /// The member (replica set or shard) when the snapshot holds several.
    pub member: Option<String>,
    /// Where to listen (port 0: any free port).
    pub address: SocketAddr,
}

/// Progress of the background load of a served snapshot.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadEvent {
    /// A collection is loaded and can be queried.
    Loaded {
        /// `db.collection`.
        namespace: String,
        /// Its documents.
        documents: u64,
        /// Time it took.
        seconds: f64,
        /// Collections loaded or failed so far.
        collections_done: usize,
        /// Collections to load.
        collections_total: usize,
        /// Bytes of documents loaded so far.
        loaded_bytes: u64,
        /// Bytes of documents to load.
        total_bytes: u64,
        /// Time since the load started.
        elapsed: f64,
    },
    /// A collection cannot be served; its queries fail with `message`.
    Failed {
        /// `db.collection`.
        namespace: String,
        /// The repository's error.
        message: String,
    },
    /// Something that does not stop the load (the repository lock could not be refreshed).
    Warning(String),
    /// Every collection is loaded (or failed); the repository lock is released.
    Finished {
        /// Time the whole load took.
        seconds: f64,
        /// Collections that failed.
        failed: usize,
    },
}

/// A server answering queries read-only; see [`serve_snapshot`] and [`serve_point_in_time`].
pub struct Serving {
    /// The address it listens on.
    pub address: SocketAddr,
    listener: TcpListener,
    state: Arc<ServerState>,
    loader: Option<tokio::task::JoinHandle<()>>,
}

impl Serving {
    /// Serves clients until `shutdown` completes; then stops the background load, if still running
    /// (its repository lock is left to go stale: it belongs to a process that stopped loading).
    pub async fn serve_until(self, shutdown: impl Future<Output = ()> + Send) {
        tidemark_server::net::serve(self.listener, self.state, shutdown).await;
        if let Some(loader) = self.loader {
            loader.abort();
        }
    }
}

/// A snapshot being served, its documents loading in the background.
pub struct ServedSnapshot {
    /// The server; call [`Serving::serve_until`].
    pub serving: Serving,
    /// The snapshot served.
    pub snapshot: Id,
    /// Its time, seconds since the epoch.
    pub time: i64,
    /// Its label.
    pub label: String,
    /// Namespaces listed (views included).
    pub namespaces: usize,
    /// Documents to load.
    pub documents: u64,
    /// Bytes of documents to load.
    pub bytes: u64,
    /// Namespaces that could not be created, with why (their queries fail).
    pub problems: Vec<String>,
    /// The background load's progress, in order; ends after [`LoadEvent::Finished`].
    pub events: mpsc::UnboundedReceiver<LoadEvent>,
}

/// Starts serving a snapshot read-only at `options.address` (see the module documentation): the
/// catalog is created at once and the documents load in the background under a shared repository
/// lock, reporting [`LoadEvent`]s.
///
/// # Errors
/// The snapshot or member cannot be found ([`Error::is_invalid_option`] for the member), the
/// address cannot be listened on, the catalog cannot be created.
pub async fn serve_snapshot(repository: &Repository, options: &ServeOptions) -> Result<ServedSnapshot, Error> {
    let lock = Lock::acquire(repository.storage(), false).await?;
    let id = repository
        .find_snapshot(options.snapshot.as_deref().unwrap_or("latest"))
        .await?;
    let reader = SnapshotReader::open(repository, &id)
        .await
        .with_context(|| format!("open snapshot {id}"))?;
    let member = pick_member(&reader, options.member.as_deref())?.clone();
    let listener = listen(options.address).await?;
    let bound = listener.local_addr().context("local address")?;

    let collections: Vec<&NamespaceEntry> = member.namespaces.iter().filter(|n| n.kind != "view").collect();
    let gate = Arc::new(LoadGate::new(collections.iter().map(|n| n.name())));
    let state = Arc::new(ServerState::new(read_only(bound), Arc::new(Engine::new())).with_load_gate(Arc::clone(&gate)));
    let catalog_state = Arc::clone(&state);
    let catalog_member = member.clone();
    let catalog_gate = Arc::clone(&gate);
    let problems = tokio::task::spawn_blocking(move || create_catalog(&catalog_state, &catalog_member, &catalog_gate))
        .await
        .context("create the catalog")?;
    let (sender, events) = mpsc::unbounded_channel();
    let loader = tokio::spawn(load_all(
        lock,
        reader.clone(),
        member.clone(),
        Arc::clone(&state),
        gate,
        sender,
    ));
    Ok(ServedSnapshot {
        serving: Serving {
            address: bound,
            listener,
            state,
            loader: Some(loader),
        },
        snapshot: id,
        time: reader.snapshot().time,
        label: reader.snapshot().label.clone(),
        namespaces: member.namespaces.len(),
        documents: collections.iter().map(|n| n.data.documents).sum(),
        bytes: collections.iter().map(|n| n.data.bytes).sum(),
        problems,
        events,
    })
}

/// The state at a point in time, ready to be served.
pub struct ServedPoint {
    /// The server; call [`Serving::serve_until`].
    pub serving: Serving,
    /// The point-in-time restore that produced the state.
    pub report: tidemark_core::pitr::PitrReport,
}

/// Serves the state at `plan`'s point read-only at `address`: that state is only known after
/// replaying the oplog, so it is restored in full (point-in-time restore into a private in-memory
/// server, reporting to `progress`) and its engine is then served (no lazy loading).
///
/// # Errors
/// The address cannot be listened on, the restore fails.
pub async fn serve_point_in_time(
    repository: &Repository,
    plan: PitrPlan,
    address: SocketAddr,
    progress: Arc<dyn Progress>,
) -> Result<ServedPoint, Error> {
    let listener = listen(address).await?;
    let bound = listener.local_addr().context("local address")?;
    let scratch = tidemark_core::offline::OfflineServer::in_memory().await?;
    let client = mongodb::Client::with_uri_str(scratch.uri())
        .await
        .context("connect to the private server")?;
    let options = tidemark_core::restore::RestoreOptions::default();
    let report = tidemark_core::pitr::run_pitr(&client, repository, plan, &options, progress)
        .await
        .map_err(|failure| failure.error)?;
    drop(client);
    let engine = scratch.engine();
    scratch.close().await?;
    let state = Arc::new(ServerState::new(read_only(bound), engine));
    Ok(ServedPoint {
        serving: Serving {
            address: bound,
            listener,
            state,
            loader: None,
        },
        report,
    })
}

async fn listen(address: SocketAddr) -> Result<TcpListener, Error> {
    Ok(TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?)
}

/// A read-only server's configuration for `bound`.
fn read_only(bound: SocketAddr) -> ServerConfig {
    ServerConfig {
        bind_ip: bound.ip(),
        port: bound.port(),
        read_only: true,
        ..ServerConfig::default()
    }
}

/// A manifest document (canonical Extended JSON) as BSON.
fn manifest_document(value: &serde_json::Value, what: &str) -> Result<Document, String> {
    match tidemark_format::metadata::ext_value(value.clone()) {
        Ok(Bson::Document(d)) => Ok(d),
        Ok(_) => Err(format!("{what} is not a document")),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

/// Creates every collection (options, indexes) and then every view, through the server's own
/// commands; returns what could not be created (those collections are marked failed in the gate).
fn create_catalog(state: &ServerState, member: &Member, gate: &LoadGate) -> Vec<String> {
    let mut problems = Vec::new();
    let mut ordered: Vec<&NamespaceEntry> = member.namespaces.iter().filter(|n| n.kind != "view").collect();
    ordered.extend(member.namespaces.iter().filter(|n| n.kind == "view"));
    for entry in ordered {
        let name = entry.name();
        if let Err(e) = create_namespace(state, entry) {
            let message = format!("{name}: cannot be served: {e}");
            gate.failed(&name, message.clone());
            problems.push(message);
        }
    }
    problems
}

fn create_namespace(state: &ServerState, entry: &NamespaceEntry) -> Result<(), String> {
    let options = match &entry.options {
        Some(v) => manifest_document(v, "options")?,
        None => Document::new(),
    };
    let mut create = doc! {"create": entry.collection.as_str()};
    for (k, v) in options {
        // Server-assigned or replication-only fields are not creation options.
        if !matches!(k.as_str(), "uuid" | "recordIdsReplicated") {
            create.insert(k, v);
        }
    }
    run_command(state, &entry.db, create, Vec::new())?;
    let mut indexes = Vec::new();
    for spec in &entry.indexes {
        let mut spec = manifest_document(spec, "index")?;
        if spec.get_str("name") == Ok("_id_") {
            continue;
        }
        spec.remove("ns");
        indexes.push(Bson::Document(spec));
    }
    if !indexes.is_empty() {
        run_command(
            state,
            &entry.db,
            doc! {"createIndexes": entry.collection.as_str(), "indexes": indexes},
            Vec::new(),
        )?;
    }
    Ok(())
}

/// Runs one command as the server itself.
fn run_command(state: &ServerState, db: &str, body: Document, documents: Vec<RawDocumentBuf>) -> Result<(), String> {
    let raw = RawDocumentBuf::from_document(&body).map_err(|e| e.to_string())?;
    let sequences = if documents.is_empty() {
        Vec::new()
    } else {
        vec![("documents".to_owned(), documents)]
    };
    let request = Request::from_raw(Some(db), raw, sequences).map_err(|e| e.message)?;
    state.run_internal(&request).map(|_| ()).map_err(|e| e.message)
}

/// Loads every collection the gate hands out, then releases the repository lock.
async fn load_all(
    mut lock: Lock,
    reader: SnapshotReader,
    member: Member,
    state: Arc<ServerState>,
    gate: Arc<LoadGate>,
    events: mpsc::UnboundedSender<LoadEvent>,
) {
    // A receiver that went away only means nobody watches the progress.
    let report = |event| {
        let _ = events.send(event);
    };
    let started = Instant::now();
    let total_bytes: u64 = member.namespaces.iter().map(|n| n.data.bytes).sum();
    let mut loaded_bytes = 0u64;
    let mut failed = 0usize;
    while let Some(name) = gate.next() {
        let Some(entry) = member.namespaces.iter().find(|n| n.name() == name) else {
            gate.failed(&name, "not in the snapshot");
            continue;
        };
        let ns_started = Instant::now();
        match load_namespace(&reader, &member, entry, &state).await {
            Ok(documents) => {
                gate.loaded(&name);
                loaded_bytes += entry.data.bytes;
                let (collections_done, collections_total) = gate.progress();
                report(LoadEvent::Loaded {
                    namespace: name,
                    documents,
                    seconds: ns_started.elapsed().as_secs_f64(),
                    collections_done,
                    collections_total,
                    loaded_bytes,
                    total_bytes,
                    elapsed: started.elapsed().as_secs_f64(),
                });
            }
            Err(e) => {
                failed += 1;
                let message = format!("{e:#}");
                gate.failed(&name, message.clone());
                report(LoadEvent::Failed {
                    namespace: name,
                    message,
                });
            }
        }
        if let Err(e) = lock.refresh().await {
            report(LoadEvent::Warning(format!("cannot refresh the repository lock: {e}")));
        }
    }
    // Everything is in memory now: the repository may be pruned again.
    if let Err(e) = lock.release().await {
        report(LoadEvent::Warning(format!("cannot release the repository lock: {e}")));
    }
    report(LoadEvent::Finished {
        seconds: started.elapsed().as_secs_f64(),
        failed,
    });
}

/// Streams one namespace's documents into its (already created) collection.
async fn load_namespace(
    reader: &SnapshotReader,
    member: &Member,
    entry: &NamespaceEntry,
    state: &Arc<ServerState>,
) -> anyhow::Result<u64> {
    let mut stream = reader.documents(member, entry);
    let mut batch = Vec::new();
    let mut bytes = 0usize;
    let mut documents = 0u64;
    loop {
        let next = stream.next_document().await?;
        let end = next.is_none();
        if let Some(doc) = next {
            bytes += doc.as_bytes().len();
            batch.push(doc);
            documents += 1;
        }
        if !batch.is_empty() && (end || batch.len() >= BATCH_DOCUMENTS || bytes >= BATCH_BYTES) {
            let docs = std::mem::take(&mut batch);
            bytes = 0;
            let state = Arc::clone(state);
            let (db, coll) = (entry.db.clone(), entry.collection.clone());
            tokio::task::spawn_blocking(move || {
                let body = doc! {
                    "insert": coll.as_str(), "ordered": true, "bypassDocumentValidation": true,
                    tidemark_server::empty_ts::BYPASS_OPTION: true,
                };
                run_command(&state, &db, body, docs)
            })
            .await
            .context("insert task")?
            .map_err(|e| anyhow::anyhow!("insert into {}: {e}", entry.name()))?;
        }
        if end {
            return Ok(documents);
        }
    }
}
