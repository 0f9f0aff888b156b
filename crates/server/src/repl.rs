//! Replication: the oplog (`local.oplog.rs`), applying oplog entries (`applyOps`, secondaries), and the
//! replica-set state other layers read (set name, term, whether this node accepts writes).
//!
//! [`ReplState`] is created once per server by [`crate::commands::ServerState::new`]. It installs the oplog
//! writer ([`oplog::Oplog`]) as the engine's [`crate::engine::WriteObserver`], so every write of a replica-set
//! member records its oplog entries in the same engine write (and journal batch) as the change itself. A
//! standalone server installs it too, but with logging disabled: it then only wakes tailable cursors waiting
//! for new documents in capped collections.
//!
//! The oplog starts recording at initiation ([`ReplState::initiate`], used by `replSetInitiate`), which creates
//! `local.oplog.rs` and writes the `{msg: "initiating set"}` no-op; a restarted member whose data directory
//! already holds the oplog resumes logging at once, after the newest entry's timestamp.

pub mod apply;
pub mod client;
pub mod election;
pub mod oplog;
pub mod sync;
pub mod topology;
pub mod write_concern;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bson::doc;

use crate::config::ServerConfig;
use crate::engine::Engine;
use crate::error::CommandResult;

pub use oplog::{OPLOG_COLLECTION, OPLOG_DB, Oplog};

/// Oplog size used when `--oplogSizeMB` is not given: 192 MiB, kept in memory (mongod sizes its default from
/// the free disk space, with a 990 MB floor; an in-memory server picks a fixed, smaller size).
pub const DEFAULT_OPLOG_SIZE_MB: u64 = 192;

/// How often an idle primary writes a `{msg: "periodic noop"}` entry (mongod's `periodicNoopIntervalSecs`).
pub const DEFAULT_NOOP_INTERVAL: Duration = Duration::from_secs(10);

/// Replica-set state shared by the command layer, the oplog writer and the replication threads.
#[derive(Debug)]
pub struct ReplState {
    set_name: Option<String>,
    term: Arc<AtomicI64>,
    writable_primary: AtomicBool,
    oplog: Arc<Oplog>,
}

impl ReplState {
    /// Creates the state for `config` over `engine` and installs the oplog writer. With `--replSet` and an
    /// existing `local.oplog.rs` (a restarted member) logging resumes immediately; with `--replSet` a
    /// background thread writes periodic no-ops while the node is an idle primary (see
    /// [`ReplState::set_writable_primary`]).
    pub fn new(config: &ServerConfig, engine: &Arc<Engine>) -> Arc<Self> {
        let size_mb = config.oplog_size_mb.unwrap_or(DEFAULT_OPLOG_SIZE_MB).max(1);
        let term = Arc::new(AtomicI64::new(1));
        let oplog = Arc::new(Oplog::new(size_mb.saturating_mul(1024 * 1024), Arc::clone(&term)));
        let state = Arc::new(Self {
            set_name: config.repl_set.clone(),
            term,
            writable_primary: AtomicBool::new(config.repl_set.is_none()),
            oplog: Arc::clone(&oplog),
        });
        engine.set_observer(Some(oplog.clone() as Arc<dyn crate::engine::WriteObserver>));
        if state.set_name.is_some() {
            // A restarted member keeps logging into its oplog; whether it is primary is the topology's call.
            oplog.resume(engine);
            oplog::spawn_noop_writer(Arc::downgrade(&state), Arc::downgrade(engine));
        }
        state
    }

    /// The replica set name (`--replSet`), if any.
    pub fn set_name(&self) -> Option<&str> {
        self.set_name.as_deref()
    }

    /// The current election term (`t` of new oplog entries); 1 after initiation.
    pub fn term(&self) -> i64 {
        self.term.load(Ordering::SeqCst)
    }

    /// Sets the election term (called by the topology layer on elections).
    pub fn set_term(&self, term: i64) {
        self.term.store(term, Ordering::SeqCst);
    }

    /// Whether this node accepts writes as a primary (always true for a standalone).
    pub fn is_writable_primary(&self) -> bool {
        self.writable_primary.load(Ordering::SeqCst)
    }

    /// Marks this node as primary (accepting writes) or not. The topology layer calls it on every member-state
    /// change; the periodic no-op writer only writes while it is true.
    pub fn set_writable_primary(&self, primary: bool) {
        self.writable_primary.store(primary, Ordering::SeqCst);
    }

    /// The oplog writer.
    pub fn oplog(&self) -> &Arc<Oplog> {
        &self.oplog
    }

    /// Initiates the set on this node: creates `local.oplog.rs` (capped, `--oplogSizeMB`), starts logging and
    /// writes the `{msg: "initiating set"}` no-op; the node becomes primary in term 1. Idempotent for the
    /// oplog (an existing one is kept).
    pub fn initiate(&self, engine: &Engine) -> CommandResult<()> {
        self.oplog.enable(engine)?;
        self.oplog.append_noop(engine, doc! { "msg": "initiating set" })?;
        self.writable_primary.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Sets how often an idle primary writes a periodic no-op (tests shorten it).
    pub fn set_noop_interval(&self, interval: Duration) {
        self.oplog.set_noop_interval(interval);
    }
}

/// A weak handle to the state, for background threads that must not keep a stopped server alive.
pub(crate) type WeakRepl = Weak<ReplState>;
