//! `tidemark`: backup and restore for MongoDB.
//!
//! This crate only parses arguments, renders results and maps errors to exit codes; the work is done
//! by the library crates. Each subcommand lives in its own module with an `Args` struct and a `run`
//! function.
//!
//! Exit codes (also in the README):
//! - `0`: success;
//! - `1`: the command failed (bad input, I/O error, server error, data that does not verify);
//! - `2`: the command line is invalid (unknown option, contradictory options).

mod bench;
mod bsondump;
mod convert;
mod demo;
mod dump;
mod inspect;
mod restore;
mod restore_pitr;
mod restore_repo;
// Backup repository commands.
mod backup;
mod check;
mod copy;
mod forget;
mod oplog;
mod repo;
mod serve;
mod snapshots;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// jemalloc, as in tidemark-server: `demo`, `verify` and `serve` run that server in this process,
/// and restores and backups allocate and free many document-sized buffers. `tidemark_alloc` also
/// clears the driver's zeroed reply buffers in place instead of letting every page fault back in.
#[global_allocator]
static ALLOCATOR: tidemark_alloc::Allocator = tidemark_alloc::Allocator;

/// Backup and restore for MongoDB.
#[derive(Debug, Parser)]
#[command(name = "tidemark", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole story on an embedded replica set: workload, oplog archive, backup, restore to a moment, drill.
    Demo(demo::Args),
    /// Print BSON files as Extended JSON, one document per line (like `bsondump`).
    Bsondump(bsondump::Args),
    /// Dump databases into a directory or archive, like `mongodump` (same options and formats).
    Dump(Box<dump::Args>),
    /// Restore a dump directory or archive, like `mongorestore` (same options and formats).
    Restore(Box<restore::Args>),
    /// Show what a dump directory or archive holds: namespaces, counts, sizes, indexes, oplog window.
    Inspect(inspect::Args),
    /// Convert a dump directory to an archive or back, gzip on or off, losslessly.
    Convert(convert::Args),
    /// Benchmarks on generated data (formats, server, dump/restore); run from a release build.
    Bench(bench::Args),
    /// Backup repository: `init` a new one, `export` a snapshot as a dump, `unlock` stale locks.
    Repo(repo::Args),
    /// Back up a server (or import a dump directory) into a repository as a deduplicated, encrypted snapshot.
    Backup(Box<backup::Args>),
    /// List the snapshots of a repository.
    Snapshots(snapshots::Args),
    /// Verify a repository: structure, and with --read-data every blob and namespace content hash.
    Check(check::Args),
    /// Remove snapshots by retention policy (--keep-last/hourly/daily/weekly/monthly/yearly), optionally prune.
    Forget(forget::Args),
    /// Copy snapshots between repositories, re-encrypting and deduplicating in the target.
    Copy(copy::Args),
    /// Oplog archiving: `follow` stores a replica set's oplog continuously for point-in-time restores.
    Oplog(oplog::Args),
    /// Restore drill: restore a snapshot into an embedded server (or --target) and check it against the manifest.
    Verify(Box<verify::Args>),
    /// Serve a snapshot read-only over the MongoDB wire protocol (mongosh, Compass, drivers), loading it lazily.
    Serve(Box<serve::Args>),
}

/// Failure classes with their documented exit codes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Failure {
    /// The command ran and failed.
    Failed,
    /// The command line was invalid.
    Usage,
}

impl Failure {
    fn exit_code(self) -> ExitCode {
        match self {
            Self::Failed => ExitCode::from(1),
            Self::Usage => ExitCode::from(2),
        }
    }
}

/// An error on its way to the user: a one-line message and an exit class.
#[derive(Debug)]
pub(crate) struct CliError {
    pub(crate) failure: Failure,
    pub(crate) error: anyhow::Error,
}

impl CliError {
    /// An invalid combination of options, reported like a usage error.
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self {
            failure: Failure::Usage,
            error: anyhow::anyhow!(message.into()),
        }
    }
}

impl<E: Into<anyhow::Error>> From<E> for CliError {
    fn from(error: E) -> Self {
        Self {
            failure: Failure::Failed,
            error: error.into(),
        }
    }
}

fn main() -> ExitCode {
    // Freed pages go back to the kernel after 1 s instead of 10 (see `tidemark_alloc`): a restore
    // frees as much as it allocates, and with the default about twice its live memory stayed resident.
    tidemark_alloc::keep_freed_pages_for(std::time::Duration::from_secs(1));
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Bsondump(args) => bsondump::run(&args),
        Command::Dump(args) => dump::run(&args),
        Command::Restore(args) => restore::run(&args),
        Command::Inspect(args) => inspect::run(&args),
        Command::Convert(args) => convert::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Repo(args) => repo::run(&args),
        Command::Backup(args) => backup::run(&args),
        Command::Snapshots(args) => snapshots::run(&args),
        Command::Check(args) => check::run(&args),
        Command::Forget(args) => forget::run(&args),
        Command::Copy(args) => copy::run(&args),
        Command::Oplog(args) => oplog::run(&args),
        Command::Verify(args) => verify::run(&args),
        Command::Serve(args) => serve::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e.error) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tidemark: error: {:#}", e.error);
            e.failure.exit_code()
        }
    }
}

/// Output piped into `head` and closed early is not a failure.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}
