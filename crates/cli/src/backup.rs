//! `tidemark backup`: store a dump in a repository as a deduplicated, encrypted snapshot.
//!
//! The source is either an existing dump directory (`--from-dump`, made by `tidemark dump` or the
//! real mongodump) or archive (`--from-archive`, unpacked losslessly first), or a server: the dump engine then writes a dump into a temporary directory
//! next to nothing else (removed afterwards), which is imported the same way. With `--oplog` the
//! snapshot's consistency timestamp is the last oplog entry captured, the point a restore with
//! oplog replay reaches.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tidemark_core::dump::{DumpOptions, DumpTarget, plan_dump, run_dump};
use tidemark_repo::import::import_directory;
use tidemark_repo::{CommitOptions, NoProgress, SnapshotWriter};

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
    /// Replica set name recorded for the member.
    #[arg(long, default_value = "")]
    replica_set: String,
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
        let temp;
        let (dir, gzip) = if let Some(dir) = &args.from_dump {
            (dir.clone(), args.gzip)
        } else if let Some(archive) = &args.from_archive {
            // Unpacked losslessly into a temporary dump directory, then imported like one.
            temp = tempfile::tempdir().context("create a temporary directory for the archive")?;
            let dst = temp.path().join("dump");
            let options = tidemark_format::convert::ConvertOptions { input_gzip: None, output_gzip: false };
            tidemark_format::convert::convert(archive, &dst, &options)
                .with_context(|| format!("unpack archive {}", archive.display()))?;
            (dst, false)
        } else {
            temp = tempfile::tempdir().context("create a temporary directory for the dump")?;
            let conn = args.conn.to_options(None)?;
            let mut options = DumpOptions::default();
            options.db.clone_from(&args.db);
            options.oplog = args.oplog;
            options.target = DumpTarget::Directory(temp.path().to_path_buf());
            let client = tidemark_core::connection::connect(&conn, "tidemark-backup").await?;
            let progress = Arc::new(tidemark_core::progress::NoProgress);
            let plan = plan_dump(&client, &options, progress.as_ref()).await?;
            run_dump(&client, &plan, &options, progress).await?;
            (temp.path().to_path_buf(), false)
        };
        let mut writer = SnapshotWriter::new(&repo, Arc::new(NoProgress)).await?;
        writer.set_member(&args.replica_set, "replset");
        let imported = import_directory(&mut writer, &dir, gzip).await?;
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
