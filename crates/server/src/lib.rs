//! A MongoDB-wire-compatible server for tests, restore drills and queryable backups.
//!
//! `tidemark-server` speaks MongoDB's wire protocol (OP_MSG, the legacy OP_QUERY handshake, OP_COMPRESSED)
//! well enough for the official drivers and tools to use it unchanged, and implements MongoDB's documented
//! command semantics and error codes over an in-memory storage engine (optionally made durable by the
//! `storage` layer).
//!
//! Layers, from the socket inwards:
//! - [`net`]: accept loop and per-connection tasks (framing via `tidemark-wire`, compression negotiation);
//! - [`commands`]: the command registry and handlers (handshake, admin, CRUD, indexes), [`cursor`] for
//!   open cursors, [`auth`] for authentication and authorization;
//! - [`engine`]: the catalog and documents behind one lock, changed only through logical mutation batches
//!   that pass the durability hook;
//! - [`storage`]: journal, checkpoints and recovery for `--dbpath` (plugged into the engine's durability
//!   hook); [`repl`]: replica-set topology and replication for `--replSet`.
//!
//! [`readonly`] is `--queryableBackupMode` (every write refused as mongod does); [`loading`] makes reads
//! wait for collections a loader is still filling (a backup served before it is fully loaded).
//!
//! Beside them: [`ttl`] (the TTL monitor deleting expired documents), [`empty_ts`] (mongod's replacement of
//! empty top-level timestamps on insert) and [`keyfile`] (`--keyFile` internal authentication of members).
//!
//! [`testing::start_test_server`] starts a server on a free port for other crates' tests.

pub mod auth;
pub mod commands;
pub mod config;
pub mod cursor;
pub mod empty_ts;
pub mod engine;
pub mod error;
pub mod keyfile;
pub mod loading;
pub mod net;
pub mod readonly;
pub mod repl;
pub mod storage;
pub mod testing;
pub mod timeseries;
pub mod ttl;

pub use commands::{Ctx, Reply, Request, ServerState};
pub use config::ServerConfig;
pub use engine::Engine;
pub use error::CommandError;

/// Largest BSON document accepted from clients (16 MiB), as reported in `hello.maxBsonObjectSize`.
pub const MAX_BSON_OBJECT_SIZE: usize = 16 * 1024 * 1024;
/// Largest wire message accepted, as reported in `hello.maxMessageSizeBytes`.
pub const MAX_MESSAGE_SIZE_BYTES: usize = 48_000_000;
/// Largest number of operations in one write command, as reported in `hello.maxWriteBatchSize`.
pub const MAX_WRITE_BATCH_SIZE: usize = 100_000;
/// Highest wire version (MongoDB 7.0).
pub const MAX_WIRE_VERSION: i32 = 21;
/// The MongoDB version this server reports.
pub const MONGODB_VERSION: &str = "7.0.14";
