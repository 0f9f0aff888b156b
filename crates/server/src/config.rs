//! Server configuration: the subset of mongod's startup options this server understands.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Startup options (see `tidemark-server --help`).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to bind.
    pub bind_ip: IpAddr,
    /// TCP port (0 picks a free port).
    pub port: u16,
    /// Data directory; `None` keeps everything in memory.
    pub dbpath: Option<PathBuf>,
    /// Disables the journal (writes are checkpointed only).
    pub nojournal: bool,
    /// Enforces authentication and authorization.
    pub auth: bool,
    /// Log file; `None` logs to stderr.
    pub logpath: Option<PathBuf>,
    /// Replica set name, when running as a single-node replica set.
    pub repl_set: Option<String>,
    /// Oplog size in MB.
    pub oplog_size_mb: Option<u64>,
    /// Largest accepted wire message in bytes.
    pub max_message_size: usize,
    /// How often the TTL monitor deletes expired documents (mongod's `ttlMonitorSleepSecs`, 60 s).
    pub ttl_monitor_interval: Duration,
    /// `--keyFile`: shared secret of replica-set members (internal authentication); implies `auth`.
    pub key_file: Option<PathBuf>,
    /// `--queryableBackupMode`: read-only; every write is refused (see [`crate::readonly`]).
    pub read_only: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            port: 27017,
            dbpath: None,
            nojournal: false,
            auth: false,
            logpath: None,
            repl_set: None,
            oplog_size_mb: None,
            max_message_size: crate::MAX_MESSAGE_SIZE_BYTES,
            ttl_monitor_interval: crate::ttl::DEFAULT_TTL_MONITOR_INTERVAL,
            key_file: None,
            read_only: false,
        }
    }
}

impl ServerConfig {
    /// An in-memory configuration on 127.0.0.1 with port 0 (for tests).
    pub fn ephemeral() -> Self {
        Self {
            port: 0,
            ..Self::default()
        }
    }
}
