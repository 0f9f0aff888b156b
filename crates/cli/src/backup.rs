//! `tidemark backup`: store a dump in a repository as a deduplicated, encrypted snapshot.
//!
//! The source is either an existing dump directory (`--from-dump`, made by `tidemark dump` or the
//! real mongodump) or archive (`--from-archive`, unpacked losslessly first), or a server. From a
//! server nothing is staged on disk: the dump engine (several collections at once, as `dump` does)
//! hands the server's batches straight to the snapshot writer ([`dump_into_snapshot`]), so reading
//! the server and chunking, compressing, encrypting and uploading overlap. With
//! `--oplog` the snapshot's consistency timestamp is the last oplog entry captured, the point a
//! restore with oplog replay reaches.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tidemark_core::backup::dump_into_snapshot;
use tidemark_core::connection::ConnectionOptions;
use tidemark_core::dump::DumpOptions;
use tidemark_core::progress::{NoProgress as NoDumpProgress, Progress};
use tidemark_repo::import::{ImportStats, import_archive, import_directory};
use tidemark_repo::{CommitOptions, Id, NoProgress, Repository, SnapshotStats, SnapshotWriter, Timestamp};

use crate::CliError;
use crate::dump::{Bars, ConnArgs};
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
    /// No progress display.
    #[arg(long)]
    quiet: bool,
}

pub(crate) fn run(args: &Args) -> Result<(), CliError> {
    let from_files = args.from_dump.is_some() || args.from_archive.is_some();
    if from_files && (args.conn.uri.is_some() || args.conn.host.is_some() || args.oplog) {
        return Err(CliError::usage(
            "--from-dump/--from-archive cannot be combined with a server connection or --oplog",
        ));
    }
    let started = std::time::Instant::now();
    runtime()?.block_on(async {
        let repo = open(&args.repo).await?;
        let mut writer = SnapshotWriter::new(&repo, Arc::new(NoProgress)).await?;
        let imported = if let Some(dir) = &args.from_dump {
            writer.set_member(args.replica_set.as_deref().unwrap_or_default(), "replset");
            import_directory(&mut writer, dir, args.gzip).await?
        } else if let Some(archive) = &args.from_archive {
            writer.set_member(args.replica_set.as_deref().unwrap_or_default(), "replset");
            import_archive_file(&mut writer, archive).await?
        } else {
            let conn = args.conn.to_options(None)?;
            let set = match &args.replica_set {
                Some(name) => name.clone(),
                None => reported_set_name(&conn).await?,
            };
            writer.set_member(&set, "replset");
            let bars = Arc::new(Bars::new(args.quiet || args.json, None, "backed up"));
            let imported = stream_from_server(conn, args.db.clone(), args.oplog, &mut writer, bars.clone()).await;
            bars.done();
            imported?
        };
        let window = writer.oplog_window();
        let options = CommitOptions {
            oplog_window: None,
            consistency_ts: window.map(|w| w.last),
            tags: args.tags.clone(),
            label: args.label.clone(),
        };
        let (id, stats) = writer.commit(options).await?;
        let seconds = started.elapsed().as_secs_f64();
        if args.json {
            let json = serde_json::json!({
                "snapshot": id.to_hex(), "namespaces": imported.namespaces, "documents": imported.documents,
                "seconds": seconds,
                "total_bytes": stats.total_bytes, "new_bytes": stats.new_bytes,
                "deduplicated_bytes": stats.deduplicated_bytes, "added_bytes": stats.added_bytes,
                "oplog_window": window.map(|w| serde_json::json!({"first": {"t": w.first.t, "i": w.first.i}, "last": {"t": w.last.t, "i": w.last.i}})),
            });
            println!("{json}");
        } else {
            println!(
                "snapshot {} saved: {} namespace(s), {} document(s), {} bytes ({} new, {} deduplicated, {} added to storage) in {seconds:.1} s",
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
    let imported = stream_from_server(conn, None, true, &mut writer, Arc::new(NoDumpProgress))
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

/// Imports an archive file (gzip detected) read front to back, nothing staged on disk.
async fn import_archive_file(writer: &mut SnapshotWriter, path: &Path) -> Result<ImportStats, CliError> {
    let open = || tidemark_directio::InputFile::open(path).with_context(|| format!("open archive {}", path.display()));
    let gzip =
        tidemark_format::archive::gzip::sniff_gzip(path).with_context(|| format!("read archive {}", path.display()))?;
    let origin = path.display().to_string();
    let input: Box<dyn std::io::Read> = if gzip {
        Box::new(tidemark_format::archive::gzip::gzip_reader(open()?))
    } else {
        Box::new(open()?)
    };
    Ok(import_archive(writer, input, &origin).await?)
}

/// Dumps the server straight into the writer's current member.
async fn stream_from_server(
    conn: ConnectionOptions,
    db: Option<String>,
    oplog: bool,
    writer: &mut SnapshotWriter,
    progress: Arc<dyn Progress>,
) -> Result<ImportStats, CliError> {
    let mut options = DumpOptions::default();
    options.db = db;
    options.oplog = oplog;
    let client = tidemark_core::connection::connect(&conn, "tidemark-backup").await?;
    let (_, imported) = dump_into_snapshot(&client, options, writer, progress).await?;
    Ok(imported)
}
