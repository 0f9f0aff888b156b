//! `tidemark restore --repo URL --snapshot ID`: restore a snapshot of a backup repository.
//!
//! Two modes. With `--out DIR` or `--archive FILE` the snapshot is exported as a
//! mongodump-compatible dump (what `tidemark repo export` writes) and nothing touches a server.
//! Otherwise the snapshot goes into a server through the ordinary restore engine, so every
//! mongorestore option (namespace filters and renames, `--drop`, `--oplogReplay` ...) applies
//! unchanged: a thread exports the snapshot as an archive stream into an in-process pipe whose
//! read end is the engine's archive input ([`SnapshotStream`], shared with point-in-time restore). The
//! repository and snapshot are opened first, on this thread. Nothing is staged on disk, memory stays
//! bounded by the pipe and the engine's buffers, and the chunks are verified (decrypted,
//! authenticated, counted and hashed per namespace) as they stream. If the repository cannot
//! deliver a namespace, the export thread's error, which names the snapshot and namespace, is
//! the command's error (the engine only sees a truncated archive).

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use tidemark_core::restore::{RestoreOptions, RestoreSource};
use tidemark_core::snapshot_stream::SnapshotStream;
use tidemark_repo::SnapshotReader;
use tidemark_repo::export::{export_archive, export_directory};
use tidemark_repo::lock::Lock;

use crate::CliError;
use crate::repo::{RepoOptions, open};

/// Pipe and output buffer size of the streaming export.
const STREAM_BUFFER: usize = 1 << 20;

/// The repository options of `tidemark restore`.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct RepoSource {
    /// Restore a snapshot of this backup repository (`/path`, `s3://bucket/prefix?...`) instead of a dump.
    #[arg(long = "repo", value_name = "URL")]
    pub(crate) repo: Option<String>,
    /// With --repo: the snapshot (id, unique id prefix, or `latest`).
    #[arg(long, requires = "repo", value_name = "ID")]
    pub(crate) snapshot: Option<String>,
    /// With --repo: restore the state at this point: an RFC 3339 time (every oplog entry of that
    /// second and before) or an oplog timestamp `Timestamp(secs, inc)` / `secs,inc` (inclusive).
    #[arg(long, requires = "repo", conflicts_with = "snapshot", value_name = "POINT")]
    pub(crate) at: Option<String>,
    /// With --repo: read the repository password from this file (else `TIDEMARK_PASSWORD`, else a prompt).
    #[arg(long = "password-file", requires = "repo", value_name = "FILE")]
    pub(crate) password_file: Option<PathBuf>,
    /// With --repo: the repository is not encrypted.
    #[arg(long = "insecure-no-password", requires = "repo")]
    pub(crate) insecure_no_password: bool,
    /// With --repo: write the snapshot as a dump directory here instead of restoring it into a server.
    #[arg(long, requires = "repo", value_name = "DIR")]
    pub(crate) out: Option<PathBuf>,
    /// With --repo: the member (replica set or shard) to restore when the snapshot holds several.
    #[arg(long, requires = "repo")]
    pub(crate) member: Option<String>,
}

/// What [`start`] decided.
pub(crate) enum RepoRestore {
    /// No `--repo`: an ordinary restore.
    NotRequested,
    /// The snapshot was exported as a dump; the command is done.
    Exported,
    /// The restore reads the snapshot from this export, to be finished with [`RepoRestore::finish`].
    Streaming(Exporter),
}

/// The export of a snapshot into the restore engine's pipe.
pub(crate) struct Exporter {
    export: SnapshotStream,
    /// What the export's error is about (snapshot and repository).
    context: String,
    /// The runtime the repository was opened on, which serves its connections.
    _runtime: tokio::runtime::Runtime,
}

impl RepoRestore {
    /// Waits for the export thread; returns its error, if any, which explains a failed restore
    /// better than the engine's (a truncated archive).
    pub(crate) fn finish(self) -> Option<CliError> {
        let Self::Streaming(exporter) = self else { return None };
        let context = exporter.context;
        exporter
            .export
            .finish()
            .err()
            .map(|e| CliError::from(anyhow::Error::new(e).context(context)))
    }
}

impl RepoSource {
    pub(crate) fn repo_options(&self, repo: &str) -> RepoOptions {
        RepoOptions {
            repo: repo.to_owned(),
            password_file: self.password_file.clone(),
            insecure_no_password: self.insecure_no_password,
        }
    }
}

/// With `--repo`: exports the snapshot (`--out`/`--archive`) or points `options` at a stream of it.
///
/// `archive` is restore's `--archive` value (an output file here, `-` for stdout), `gzip` its
/// `--gzip` (gzipped output files in directory mode), `target` its positional dump target.
pub(crate) fn start(
    source: &RepoSource,
    archive: Option<&str>,
    gzip: bool,
    target: Option<&str>,
    options: &mut RestoreOptions,
) -> Result<RepoRestore, CliError> {
    let Some(repo) = &source.repo else {
        return Ok(RepoRestore::NotRequested);
    };
    let Some(snapshot) = source.snapshot.clone() else {
        return Err(CliError::usage(
            "--repo needs --snapshot ID (or --snapshot latest), or --at POINT",
        ));
    };
    if let Some(t) = target {
        return Err(CliError::usage(format!(
            "cannot restore from {t:?} and from --repo at once (with --repo, --out DIR writes a dump directory)"
        )));
    }
    if options.oplog_file.is_some() {
        return Err(CliError::usage(
            "cannot use --oplogFile with --repo (the snapshot's oplog is replayed)",
        ));
    }
    let repo_options = source.repo_options(repo);
    if archive.is_some() || source.out.is_some() {
        if archive.is_some() && source.out.is_some() {
            return Err(CliError::usage("--out and --archive are mutually exclusive"));
        }
        export(
            &repo_options,
            &snapshot,
            source.member.as_deref(),
            archive,
            source.out.as_ref(),
            gzip,
        )?;
        return Ok(RepoRestore::Exported);
    }
    if gzip {
        return Err(CliError::usage(
            "--gzip applies to --out with --repo (the stream is not compressed)",
        ));
    }
    // Opened here, before the restore engine reads the archive prelude: a password prompt has the
    // terminal to itself, and a snapshot that cannot be opened is reported as such, not as a
    // truncated archive. The runtime stays alive while the export uses the repository's
    // connections.
    let runtime = crate::repo::runtime()?;
    let (reader, lock) = runtime.block_on(async {
        let repository = open(&repo_options).await?;
        // Shared: a prune (exclusive) cannot delete packs while they are read.
        let lock = Lock::acquire(repository.storage(), false).await?;
        let opened = async {
            let id = repository.find_snapshot(&snapshot).await?;
            SnapshotReader::open(&repository, &id)
                .await
                .with_context(|| format!("open snapshot {id}"))
        }
        .await;
        match opened {
            Ok(reader) => anyhow::Ok((reader, lock)),
            Err(e) => {
                let _ = lock.release().await;
                Err(e)
            }
        }
    })?;
    let context = format!("restore snapshot {} from {}", reader.id(), repo_options.repo);
    let (stream, export) = SnapshotStream::start(reader, source.member.clone(), Some(lock))?;
    options.source = RestoreSource::Stream(stream);
    options.gzip = false;
    Ok(RepoRestore::Streaming(Exporter {
        export,
        context,
        _runtime: runtime,
    }))
}

/// Writes the snapshot as a dump directory or archive file (`-`: standard output).
fn export(
    repo_options: &RepoOptions,
    snapshot: &str,
    member: Option<&str>,
    archive: Option<&str>,
    out: Option<&PathBuf>,
    gzip: bool,
) -> Result<(), CliError> {
    let runtime = crate::repo::runtime()?;
    runtime.block_on(async {
        let repository = open(repo_options).await?;
        let lock = Lock::acquire(repository.storage(), false).await?;
        let (result, released) = lock
            .hold_during(export_locked(&repository, snapshot, member, archive, out, gzip))
            .await;
        result?;
        released.context("release the repository lock")?;
        Ok(())
    })
}

async fn export_locked(
    repository: &tidemark_repo::Repository,
    snapshot: &str,
    member: Option<&str>,
    archive: Option<&str>,
    out: Option<&PathBuf>,
    gzip: bool,
) -> Result<(), CliError> {
    let id = repository.find_snapshot(snapshot).await?;
    let reader = SnapshotReader::open(repository, &id).await?;
    let stats = match (archive, out) {
        (Some("-"), _) => {
            let (stdout, stats) = export_archive(
                &reader,
                member,
                BufWriter::with_capacity(STREAM_BUFFER, std::io::stdout()),
            )
            .await?;
            stdout
                .into_inner()
                .map_err(std::io::IntoInnerError::into_error)
                .and_then(|mut s| s.flush())
                .context("write the archive to standard output")?;
            stats
        }
        (Some(path), _) => {
            if gzip {
                return Err(CliError::usage("--gzip applies to --out only"));
            }
            let file = std::fs::File::create(path).with_context(|| format!("create {path}"))?;
            let (file, stats) = export_archive(&reader, member, BufWriter::with_capacity(STREAM_BUFFER, file)).await?;
            file.into_inner()
                .map_err(std::io::IntoInnerError::into_error)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("write {path}"))?;
            stats
        }
        (None, Some(dir)) => export_directory(&reader, member, dir, gzip).await?,
        (None, None) => return Err(CliError::usage("give --out DIR or --archive FILE")),
    };
    eprintln!(
        "exported snapshot {id}: {} namespace(s), {} document(s)",
        stats.namespaces, stats.documents
    );
    Ok(())
}
