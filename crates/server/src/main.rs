//! `tidemark-server`: a MongoDB-wire-compatible server with mongod-like options.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

/// jemalloc instead of the system allocator: the store keeps millions of small documents and index
/// entries alive while requests allocate and free large buffers around them, a mix under which
/// glibc's allocator spent about a third of an insert's CPU time (jemalloc: a third less CPU per
/// restored document, the same resident memory). See `tidemark_alloc` for the one change made to it.
#[global_allocator]
static ALLOCATOR: tidemark_alloc::Allocator = tidemark_alloc::Allocator;
use tidemark_server::commands::ServerState;
use tidemark_server::storage::{Storage, StorageOptions};
use tidemark_server::{Engine, ServerConfig};

/// Command-line options, named as mongod's.
#[derive(Debug, Parser)]
#[command(name = "tidemark-server", version, about = "A MongoDB-wire-compatible server")]
struct Args {
    /// TCP port to listen on.
    #[arg(long, default_value_t = 27017)]
    port: u16,
    /// IP address to bind (only the first of a comma-separated list is used).
    #[arg(long = "bind_ip", default_value = "127.0.0.1")]
    bind_ip: String,
    /// Data directory; without it, data lives in memory only.
    #[arg(long)]
    dbpath: Option<PathBuf>,
    /// Disable the journal.
    #[arg(long)]
    nojournal: bool,
    /// Require authentication.
    #[arg(long)]
    auth: bool,
    /// Log to this file instead of stderr.
    #[arg(long)]
    logpath: Option<PathBuf>,
    /// Replica set name.
    #[arg(long = "replSet")]
    repl_set: Option<String>,
    /// Oplog size in megabytes.
    #[arg(long = "oplogSizeMB")]
    oplog_size_mb: Option<u64>,
    /// Shared key of the replica set's members (internal authentication as `__system`); implies --auth.
    #[arg(long = "keyFile")]
    key_file: Option<PathBuf>,
    /// Read-only: every write is refused with IllegalOperation (20); with --dbpath the data directory
    /// is loaded without changing it (a shared lock keeps other servers out).
    #[arg(long = "queryableBackupMode")]
    queryable_backup_mode: bool,
}

fn main() -> ExitCode {
    // A server's heap grows by millions of small documents. Where it gets transparent huge pages
    // (a kernel set to `always`, or jemalloc configured with `thp:always`), each huge-page fault
    // may compact memory first: a restore cost the server 1.7 to 3.5 times the CPU. So the server
    // opts out for its process; where the kernel refuses, it runs as it is.
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let args = Args::parse();
    let ip_text = args.bind_ip.split(',').next().unwrap_or("127.0.0.1").trim();
    let bind_ip: IpAddr = match ip_text {
        "localhost" => IpAddr::from([127, 0, 0, 1]),
        other => match other.parse() {
            Ok(ip) => ip,
            Err(e) => {
                eprintln!("error: invalid --bind_ip '{other}': {e}");
                return ExitCode::from(2);
            }
        },
    };
    if let Err(e) = init_logging(args.logpath.as_ref()) {
        eprintln!("error: cannot open log file: {e}");
        return ExitCode::from(2);
    }
    if let Some(path) = &args.key_file
        && let Err(e) = tidemark_server::keyfile::InternalKey::load(path)
    {
        // mongod refuses to start with an unusable key file.
        tracing::error!(error = %e, "Unable to acquire security key[s]");
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let config = ServerConfig {
        bind_ip,
        port: args.port,
        dbpath: args.dbpath,
        nojournal: args.nojournal,
        auth: args.auth || args.key_file.is_some(),
        key_file: args.key_file,
        logpath: args.logpath,
        repl_set: args.repl_set,
        oplog_size_mb: args.oplog_size_mb,
        read_only: args.queryable_backup_mode,
        ..ServerConfig::default()
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let mut engine = Arc::new(Engine::new());
        // Read-only over a data directory: loaded as it is, under a shared lock held until exit.
        let mut _shared_lock = None;
        if let (true, Some(dbpath)) = (config.read_only, &config.dbpath) {
            let loaded = tidemark_server::storage::lockfile::lock_shared(dbpath)
                .and_then(|lock| Ok((lock, tidemark_server::storage::load_offline(dbpath)?)));
            match loaded {
                Ok((lock, loaded)) => {
                    _shared_lock = Some(lock);
                    engine = Arc::new(loaded);
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot open the data directory");
                    eprintln!("error: {e}");
                    return ExitCode::from(100);
                }
            }
        }
        // Like mongod, take the dbpath (lock file, recovery) before listening.
        let storage = match &config.dbpath {
            Some(_) if config.read_only => None,
            Some(dbpath) => {
                let options = StorageOptions {
                    journal: !config.nojournal,
                    ..StorageOptions::default()
                };
                match Storage::open(dbpath, &options, &engine) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot open the data directory");
                        eprintln!("error: {e}");
                        // mongod's exit code for a storage start-up failure (e.g. DBPathInUse).
                        return ExitCode::from(100);
                    }
                }
            }
            None => None,
        };
        let addr = SocketAddr::new(config.bind_ip, config.port);
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(%addr, error = %e, "cannot bind");
                eprintln!("error: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let mut state = ServerState::new(config, Arc::clone(&engine));
        if let Some(s) = &storage {
            state = state.with_storage(Arc::clone(s));
        }
        let state = Arc::new(state);
        let bound = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(address = %bound, "Waiting for connections");
        tidemark_server::net::serve(listener, state, shutdown_signal()).await;
        tracing::info!("shutting down");
        if let Some(s) = storage {
            // Final checkpoint and a clean mongod.lock; blocking file I/O, off the async workers.
            let result = tokio::task::spawn_blocking(move || s.shutdown(&engine)).await;
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "clean shutdown of the data directory failed");
                    return ExitCode::FAILURE;
                }
                Err(e) => {
                    tracing::error!(error = %e, "clean shutdown of the data directory failed");
                    return ExitCode::FAILURE;
                }
            }
        }
        ExitCode::SUCCESS
    })
}

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM: both shut down cleanly, as with mongod.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn init_logging(logpath: Option<&PathBuf>) -> std::io::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    match logpath {
        Some(p) => {
            let file = std::fs::OpenOptions::new().create(true).append(true).open(p)?;
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(false)
                .with_writer(Arc::new(file))
                .init();
        }
        None => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }
    Ok(())
}
