//! `tidemark serve`: a backup snapshot served read-only over MongoDB's wire protocol, so mongosh,
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
//! Progress (what is loaded, how long the rest should take at the speed so far) is printed as
//! namespaces complete. The repository stays share-locked until everything is loaded (a prune
//! cannot remove packs meanwhile); after that the data lives in memory and the lock is released.
//! Ctrl-C (or SIGTERM) stops the server.
//!
//! `--at TIME` serves the state at a point in time instead: that state exists only after the oplog
//! is replayed, so the point-in-time restore ([`tidemark_core::pitr`]) runs in full into a private
//! in-memory server first, and its data is then served read-only (no lazy loading in this mode).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use bson::{Bson, Document, RawDocumentBuf, doc};
use tidemark_repo::SnapshotReader;
use tidemark_repo::lock::Lock;
use tidemark_repo::snapshot::{Member, NamespaceEntry};
use tidemark_server::commands::{Request, ServerState};
use tidemark_server::loading::LoadGate;
use tidemark_server::{Engine, ServerConfig};

use crate::CliError;
use crate::repo::{RepoOptions, open};

/// Documents per internal insert.
const BATCH_DOCUMENTS: usize = 1000;
/// Bytes per internal insert (below the 48 MB message limit a client would have).
const BATCH_BYTES: usize = 8 << 20;

/// Arguments of `tidemark serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    repo: RepoOptions,
    /// The snapshot to serve (id, unique id prefix, or `latest`).
    #[arg(long, value_name = "ID", required_unless_present = "at", conflicts_with = "at")]
    snapshot: Option<String>,
    /// Serve the state at this point (`<seconds>,<increment>`, `Timestamp(s, i)` or an RFC 3339 time):
    /// restored in full with the point-in-time restore first, then served.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// The member (replica set or shard) to serve when the snapshot holds several.
    #[arg(long)]
    member: Option<String>,
    /// TCP port to listen on.
    #[arg(long, default_value_t = 27017)]
    port: u16,
    /// IP address to listen on.
    #[arg(long = "bind_ip", alias = "bind-ip", default_value = "127.0.0.1")]
    bind_ip: String,
    /// No loading progress lines.
    #[arg(short, long)]
    quiet: bool,
}

pub(crate) fn run(args: &Args) -> Result<(), CliError> {
    let bind_ip: IpAddr = match args.bind_ip.as_str() {
        "localhost" => IpAddr::from([127, 0, 0, 1]),
        other => other
            .parse()
            .map_err(|e| CliError::usage(format!("invalid --bind_ip {other:?}: {e}")))?,
    };
    let runtime = crate::repo::runtime()?;
    let addr = SocketAddr::new(bind_ip, args.port);
    match &args.at {
        Some(at) => runtime.block_on(serve_at(args, at, addr)),
        None => runtime.block_on(serve(args, addr)),
    }
}

/// `--at`: the state at a point is only known after replaying the oplog, so it is restored in full
/// (point-in-time restore into a private in-memory server) and its engine is then served read-only.
async fn serve_at(args: &Args, at: &str, addr: SocketAddr) -> Result<(), CliError> {
    let point = tidemark_oplog::parse_restore_point(at).map_err(|e| CliError::usage(e.to_string()))?;
    let started = Instant::now();
    let repository = open(&args.repo).await?;
    let plan = tidemark_core::pitr::plan_pitr(&repository, point, args.member.as_deref()).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr().context("local address")?;
    if !args.quiet {
        eprint!("{plan}");
    }
    let scratch = tidemark_core::offline::OfflineServer::in_memory().await?;
    let client = mongodb::Client::with_uri_str(scratch.uri())
        .await
        .context("connect to the private server")?;
    let bars = Arc::new(crate::dump::Bars::new(args.quiet, None, "restored"));
    let options = tidemark_core::restore::RestoreOptions::default();
    let result = tidemark_core::pitr::run_pitr(&client, &repository, plan.clone(), &options, bars.clone()).await;
    bars.done();
    let report = result.map_err(|failure| CliError::from(failure.error))?;
    drop(client);
    let engine = scratch.engine();
    scratch.close().await?;
    let config = ServerConfig {
        bind_ip: bound.ip(),
        port: bound.port(),
        read_only: true,
        ..ServerConfig::default()
    };
    println!(
        "serving the state at {} (base snapshot {}, {} document(s), {} oplog entries replayed) read-only on \
         mongodb://{bound}/ after {:.2} s; Ctrl-C stops",
        plan.point.last,
        &plan.window.base_snapshot.to_hex()[..8],
        report.summary.successes,
        report.summary.oplog_entries.unwrap_or(0),
        started.elapsed().as_secs_f64()
    );
    let state = Arc::new(ServerState::new(config, engine));
    tidemark_server::net::serve(listener, state, shutdown_signal()).await;
    println!("stopped");
    Ok(())
}

async fn serve(args: &Args, addr: SocketAddr) -> Result<(), CliError> {
    let started = Instant::now();
    let repository = open(&args.repo).await?;
    let lock = Lock::acquire(repository.storage(), false).await?;
    let id = repository
        .find_snapshot(args.snapshot.as_deref().unwrap_or("latest"))
        .await?;
    let reader = SnapshotReader::open(&repository, &id)
        .await
        .with_context(|| format!("open snapshot {id}"))?;
    let member = crate::verify::pick_member(&reader, args.member.as_deref())?.clone();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr().context("local address")?;

    let collections: Vec<&NamespaceEntry> = member.namespaces.iter().filter(|n| n.kind != "view").collect();
    let gate = Arc::new(LoadGate::new(collections.iter().map(|n| n.name())));
    let config = ServerConfig {
        bind_ip: bound.ip(),
        port: bound.port(),
        read_only: true,
        ..ServerConfig::default()
    };
    let state = Arc::new(ServerState::new(config, Arc::new(Engine::new())).with_load_gate(Arc::clone(&gate)));
    let catalog_state = Arc::clone(&state);
    let catalog_member = member.clone();
    let catalog_gate = Arc::clone(&gate);
    let problems = tokio::task::spawn_blocking(move || create_catalog(&catalog_state, &catalog_member, &catalog_gate))
        .await
        .context("create the catalog")?;
    for p in &problems {
        eprintln!("warning: {p}");
    }
    let total_bytes: u64 = collections.iter().map(|n| n.data.bytes).sum();
    let total_docs: u64 = collections.iter().map(|n| n.data.documents).sum();
    println!(
        "serving snapshot {} ({}, {}) read-only on mongodb://{bound}/ after {:.2} s",
        &id.to_hex()[..8],
        tidemark_repo::rfc3339(reader.snapshot().time),
        reader.snapshot().label,
        started.elapsed().as_secs_f64()
    );
    println!(
        "{} namespace(s) listed; loading {total_docs} document(s), {:.1} MB in the background (queries on a \
         collection wait until it is loaded); Ctrl-C stops",
        member.namespaces.len(),
        total_bytes as f64 / 1e6
    );
    let loader = tokio::spawn(load_all(
        lock,
        reader.clone(),
        member.clone(),
        Arc::clone(&state),
        gate,
        args.quiet,
    ));
    tidemark_server::net::serve(listener, state, shutdown_signal()).await;
    println!("stopped");
    // A lock left by an interrupted load belongs to a process that no longer exists: stale at once.
    loader.abort();
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
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
    quiet: bool,
) {
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
                if !quiet {
                    let (done, total) = gate.progress();
                    let elapsed = started.elapsed().as_secs_f64();
                    let rest = total_bytes.saturating_sub(loaded_bytes);
                    let left = if rest == 0 {
                        "done".to_owned()
                    } else if loaded_bytes == 0 {
                        "estimating the rest".to_owned()
                    } else {
                        format!("about {:.0} s left", rest as f64 * elapsed / loaded_bytes as f64)
                    };
                    println!(
                        "loaded {name}: {documents} document(s) in {:.2} s; {done}/{total} collections, {:.1} of {:.1} MB, {left}",
                        ns_started.elapsed().as_secs_f64(),
                        loaded_bytes as f64 / 1e6,
                        total_bytes as f64 / 1e6,
                    );
                }
            }
            Err(e) => {
                failed += 1;
                let message = format!("{e:#}");
                eprintln!("error: {name} cannot be served: {message}");
                gate.failed(&name, message);
            }
        }
        if let Err(e) = lock.refresh().await {
            eprintln!("warning: cannot refresh the repository lock: {e}");
        }
    }
    if !quiet {
        println!(
            "all collections loaded in {:.1} s{}",
            started.elapsed().as_secs_f64(),
            if failed > 0 {
                format!(" ({failed} failed)")
            } else {
                String::new()
            }
        );
    }
    // Everything is in memory now: the repository may be pruned again.
    if let Err(e) = lock.release().await {
        eprintln!("warning: cannot release the repository lock: {e}");
    }
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
