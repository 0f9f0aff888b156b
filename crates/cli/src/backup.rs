//! `tidemark backup`: store a dump in a repository as a deduplicated, encrypted snapshot.
//!
//! The source is either an existing dump directory (`--from-dump`, made by `tidemark dump` or the
//! real mongodump) or archive (`--from-archive`, unpacked losslessly first), or a server. From a
//! server nothing is staged on disk: the dump engine runs on its own thread and writes an archive
//! (several collections at once, as `dump` does) into an OS pipe, which is imported into the
//! snapshot as it arrives (one open stream per collection),
//! so reading the server and chunking, compressing, encrypting and uploading overlap. With
//! `--oplog` the snapshot's consistency timestamp is the last oplog entry captured, the point a
//! restore with oplog replay reaches.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tidemark_core::connection::ConnectionOptions;
use tidemark_core::dump::{ArchiveOutput, DumpOptions, DumpTarget, plan_dump, run_dump};
use tidemark_repo::import::{ImportStats, import_archive, import_directory};
use tidemark_repo::{CommitOptions, Id, NoProgress, Repository, SnapshotStats, SnapshotWriter, Timestamp};

use crate::CliError;
use crate::dump::ConnArgs;
use crate::repo::{RepoOptions, open, runtime};

/// Arguments of `tidemark backup` (`-h` is the host, as in the MongoDB tools; help is `--help`).
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub(crate) struct Args {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    #[command(flatten)]
    repo: RepoOptions,
    /// Import this dump directory instead of reading a server.
    #[arg(long, value_name = "DIR")]
    from_dump: Option<PathBuf>,
    /// Import this archive (`mongodump --archive`, gzip detected) instead of reading a server.
    #[arg(long, value_name = "FILE", conflicts_with = "from_dump")]
    from_archive: Option<PathBuf>,
    /// The dump directory is gzipped (`mongodump --gzip`).
    #[arg(long, requires = "from_dump")]
    gzip: bool,
    #[command(flatten)]
    conn: ConnArgs,
    /// Capture the oplog during the dump (point-in-time snapshot of a replica set).
    #[arg(long)]
    oplog: bool,
    /// Only this database.
    #[arg(short = 'd', long)]
    db: Option<String>,
    /// Tag for the snapshot (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Host or cluster label (defaults to this host's name); forget groups snapshots by it.
    #[arg(long)]
    label: Option<String>,
    /// Replica set name recorded for the member (default: the set name the server reports, which is
    /// what `oplog follow` records, so the snapshot and the archived oplog form one restorable window).
    #[arg(long)]
    replica_set: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: &Args) -> Result<(), CliError> {
    let from_files = args.from_dump.is_some() || args.from_archive.is_some();
    if from_files && (args.conn.uri.is_some() || args.conn.host.is_some() || args.oplog) {
        return Err(CliError::usage(
            "--from-dump/--from-archive cannot be combined with a server connection or --oplog",
        ));
    }
    runtime()?.block_on(async {
        let repo = open(&args.repo).await?;
        let mut writer = SnapshotWriter::new(&repo, Arc::new(NoProgress)).await?;
        let imported = if let Some(dir) = &args.from_dump {
            writer.set_member(args.replica_set.as_deref().unwrap_or_default(), "replset");
            import_directory(&mut writer, dir, args.gzip).await?
        } else if let Some(archive) = &args.from_archive {
            // Unpacked losslessly into a temporary dump directory, then imported like one.
            writer.set_member(args.replica_set.as_deref().unwrap_or_default(), "replset");
            let temp = tempfile::tempdir().context("create a temporary directory for the archive")?;
            let dst = temp.path().join("dump");
            let options = tidemark_format::convert::ConvertOptions { input_gzip: None, output_gzip: false };
            tidemark_format::convert::convert(archive, &dst, &options)
                .with_context(|| format!("unpack archive {}", archive.display()))?;
            import_directory(&mut writer, &dst, false).await?
        } else {
            let conn = args.conn.to_options(None)?;
            let set = match &args.replica_set {
                Some(name) => name.clone(),
                None => reported_set_name(&conn).await?,
            };
            writer.set_member(&set, "replset");
            stream_from_server(conn, args.db.clone(), args.oplog, &mut writer).await?
        };
        let window = writer.oplog_window();
        let options = CommitOptions {
            oplog_window: None,
            consistency_ts: window.map(|w| w.last),
            tags: args.tags.clone(),
            label: args.label.clone(),
        };
        let (id, stats) = writer.commit(options).await?;
        if args.json {
            let json = serde_json::json!({
                "snapshot": id.to_hex(), "namespaces": imported.namespaces, "documents": imported.documents,
                "total_bytes": stats.total_bytes, "new_bytes": stats.new_bytes,
                "deduplicated_bytes": stats.deduplicated_bytes, "added_bytes": stats.added_bytes,
                "oplog_window": window.map(|w| serde_json::json!({"first": {"t": w.first.t, "i": w.first.i}, "last": {"t": w.last.t, "i": w.last.i}})),
            });
            println!("{json}");
        } else {
            println!(
                "snapshot {} saved: {} namespace(s), {} document(s), {} bytes ({} new, {} deduplicated, {} added to storage)",
                &id.to_hex()[..8],
                imported.namespaces,
                imported.documents,
                stats.total_bytes,
                stats.new_bytes,
                stats.deduplicated_bytes,
                stats.added_bytes
            );
        }
        Ok(())
    })
}

/// What a backup of a server stored (see [`snapshot_server`]).
pub(crate) struct ServerSnapshot {
    /// The snapshot.
    pub(crate) id: Id,
    /// Sizes and deduplication.
    pub(crate) stats: SnapshotStats,
    /// Namespaces stored (oplog excluded).
    pub(crate) namespaces: u64,
    /// Documents stored (oplog entries included).
    pub(crate) documents: u64,
    /// The point the snapshot is consistent at (the last oplog entry captured).
    pub(crate) consistency: Option<Timestamp>,
}

/// `tidemark backup --uri URI --oplog --replica-set SET --tag ...` as a function, for the demo.
pub(crate) async fn snapshot_server(
    repo: &Repository,
    uri: &str,
    replica_set: &str,
    tags: Vec<String>,
) -> anyhow::Result<ServerSnapshot> {
    let mut conn = ConnectionOptions::default();
    conn.uri = Some(uri.to_owned());
    let mut writer = SnapshotWriter::new(repo, Arc::new(NoProgress)).await?;
    writer.set_member(replica_set, "replset");
    let imported = stream_from_server(conn, None, true, &mut writer)
        .await
        .map_err(|e| e.error)?;
    let consistency = writer.oplog_window().map(|w| w.last);
    let options = CommitOptions {
        oplog_window: None,
        consistency_ts: consistency,
        tags,
        label: None,
    };
    let (id, stats) = writer.commit(options).await?;
    Ok(ServerSnapshot {
        id,
        stats,
        namespaces: imported.namespaces,
        documents: imported.documents,
        consistency,
    })
}

/// The replica set name the server reports in `hello` (`""` for a standalone).
async fn reported_set_name(conn: &ConnectionOptions) -> Result<String, CliError> {
    let client = tidemark_core::connection::connect(conn, "tidemark-backup").await?;
    let hello = client
        .database("admin")
        .run_command(bson::doc! {"hello": 1})
        .await
        .context("run hello to learn the replica set name")?;
    Ok(hello.get_str("setName").unwrap_or_default().to_owned())
}

/// Dumps the server on a separate thread as an archive into a pipe and imports it as it arrives.
async fn stream_from_server(
    conn: ConnectionOptions,
    db: Option<String>,
    oplog: bool,
    writer: &mut SnapshotWriter,
) -> Result<ImportStats, CliError> {
    let mut options = DumpOptions::default();
    options.db = db;
    options.oplog = oplog;
    let (input, output) = std::io::pipe().context("create a pipe for the dump stream")?;
    options.target = DumpTarget::Stream(ArchiveOutput::new(output));
    let dumper = std::thread::Builder::new()
        .name("dump".into())
        .spawn(move || -> Result<(), CliError> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("start async runtime")?;
            runtime.block_on(async {
                let client = tidemark_core::connection::connect(&conn, "tidemark-backup").await?;
                let progress = Arc::new(tidemark_core::progress::NoProgress);
                let plan = plan_dump(&client, &options, progress.as_ref()).await?;
                run_dump(&client, &plan, &options, progress).await?;
                Ok(())
            })
            // `options` (and the pipe's write end, if the dump never took it) is dropped here,
            // so the import sees the end of the stream.
        })
        .context("start the dump thread")?;
    let imported = import_archive(writer, input, "from the dump engine").await;
    let dumped = dumper
        .join()
        .unwrap_or_else(|_| Err(CliError::from(anyhow::anyhow!("the dump thread panicked"))));
    match (imported, dumped) {
        (Ok(stats), Ok(())) => Ok(stats),
        // The import stopped reading (it failed, and says why); the dump only saw a closed pipe.
        (Err(e), Err(dump)) if is_broken_pipe(&dump.error) => Err(e.into()),
        // A failed dump explains a failed import (a truncated stream) better than the import's error.
        (_, Err(dump)) => Err(dump),
        (Err(e), Ok(())) => Err(e.into()),
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}
