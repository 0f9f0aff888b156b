//! Dump and restore orchestration: the engine behind `tidemark dump` and `tidemark restore`.
//!
//! This is the only crate that talks to a server (through the official `mongodb` driver). It
//! reads and writes the on-disk formats through `tidemark-format` and replays oplogs through the
//! sans-IO rules of `tidemark-oplog`. Each command is split into a plan (what will be read,
//! written, skipped and why; printable for `--dryRun`) and its execution; progress goes through
//! the [`Progress`] trait so the library never prints.
//!
//! - [`authschema`]: the auth-schema compatibility rules for users and roles.
//! - [`connection`]: the tools' connection options folded into driver options.
//! - [`dump`]: [`dump::plan_dump`] and [`dump::run_dump`].
//! - [`restore`]: [`restore::plan_restore`] and [`restore::run_restore`].
//! - [`backup`]: a server dumped straight into a backup repository snapshot.
//! - [`replay`]: parallel oplog replay (lanes by namespace and `_id`, barriers for commands).
//! - [`follow`]: continuous oplog archiving into a repository (`tidemark oplog follow`).
//! - [`nsmatch`]: `--nsInclude`/`--nsExclude`/`--nsFrom`/`--nsTo` patterns.
//! - [`pitr`]: point-in-time restore from a backup repository (base snapshot + oplog up to a point).
//! - [`snapshot_stream`]: a backup snapshot streamed into the restore engine through a pipe.
//! - [`offline`]: `--dbpath`, dump and restore of a `tidemark-server` data directory with no server running.

pub mod authschema;
pub mod backup;
pub mod connection;
pub mod dump;
pub mod error;
pub mod follow;
pub mod nsmatch;
pub mod offline;
pub mod pitr;
pub mod progress;
pub mod replay;
pub mod restore;
pub mod snapshot_stream;

pub use error::{Error, Result};
pub use progress::{NoProgress, Progress};
