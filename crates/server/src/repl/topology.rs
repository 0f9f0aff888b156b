//! Replica set topology: the set's configuration, this member's state, what it knows of the other members,
//! and the rules that follow from them (who may write, who may read, when a write concern is satisfied).
//!
//! One [`ReplCoordinator`] lives in every server. Without `--replSet` it is inert: every check passes and
//! `hello` keeps its standalone shape. With `--replSet NAME` the server starts uninitiated (like mongod: reads
//! fail with NotPrimaryOrSecondary, writes with NotWritablePrimary) until `replSetInitiate` installs a
//! configuration, which is stored in `local.system.replset` so a member restarted on its `--dbpath` rejoins.
//!
//! There are no automatic elections: the member that runs `replSetInitiate` becomes primary in term 1, and a
//! new primary is only chosen on request (`replSetStepUp`, or `replSetStepDown` handing over to the most
//! caught-up electable secondary), through a real vote of the members ([`crate::repl::election`]). Terms work
//! as in MongoDB's protocol version 1: every member learns the highest term from heartbeats and vote
//! requests, a primary that sees a higher term steps down, and `electionId` encodes the term (`7fffffff`
//! followed by the term as eight big-endian bytes), so drivers discard stale primaries.
//!
//! All state sits behind one mutex with a condition variable that is notified on every change; awaitable
//! `hello` (the drivers' streaming monitor) and write concern waits block on it. Lock order: the engine lock
//! may be held when this mutex is taken, never the reverse (optimes are read from the engine first).

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bson::oid::ObjectId;
use bson::{Bson, DateTime, Document, Timestamp, doc};

use crate::commands::raw::as_i64;
use crate::engine::{Engine, Mutation, Namespace};
use crate::error::{CommandError, CommandResult};

/// `local.oplog.rs`: the oplog collection every member reads its own position from.
pub const OPLOG_NS: (&str, &str) = ("local", "oplog.rs");
/// `local.system.replset`: where the configuration is persisted.
pub const CONFIG_NS: (&str, &str) = ("local", "system.replset");
/// Interval between heartbeats to every other member (mongod's default is 2000 ms; shorter here so a
/// handover is noticed quickly in tests).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(250);
/// A member not heard from for this long is reported unhealthy (`health: 0`, state DOWN).
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);

/// An optime: oplog timestamp plus election term, ordered by term then timestamp as in MongoDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpTime {
    /// Oplog entry timestamp.
    pub ts: Timestamp,
    /// Term of the primary that wrote it (-1 for the null optime).
    pub t: i64,
}

impl OpTime {
    /// The null optime `{ts: Timestamp(0, 0), t: -1}`.
    pub const NULL: OpTime = OpTime {
        ts: Timestamp { time: 0, increment: 0 },
        t: -1,
    };

    /// `{ts, t}`.
    pub fn to_document(self) -> Document {
        doc! { "ts": self.ts, "t": self.t }
    }

    /// Parses `{ts, t}`; a missing `t` means -1.
    pub fn from_document(d: &Document) -> Option<OpTime> {
        let ts = d.get_timestamp("ts").ok()?;
        let t = d.get("t").and_then(as_i64).unwrap_or(-1);
        Some(OpTime { ts, t })
    }

    /// The optime's timestamp seconds as a date (what mongod reports as `optimeDate`).
    pub fn date(self) -> DateTime {
        DateTime::from_millis(i64::from(self.ts.time) * 1000)
    }

    fn key(self) -> (u32, u32) {
        (self.ts.time, self.ts.increment)
    }
}

impl PartialOrd for OpTime {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OpTime {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Timestamps only grow across terms here (a new primary starts after the last entry it applied), so
        // comparing the timestamp first orders exactly like (term, ts) for every optime that can occur, and
        // stays meaningful for entries whose writer did not record a term.
        self.key().cmp(&other.key()).then(self.t.cmp(&other.t))
    }
}

/// A member's replication state, with MongoDB's numeric codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// 0: not yet part of an initiated set.
    Startup,
    /// 1: accepts writes.
    Primary,
    /// 2: replicates from the primary.
    Secondary,
    /// 3: catching up or otherwise unavailable for reads.
    Recovering,
    /// 6: unknown (never heard from).
    Unknown,
    /// 8: unreachable.
    Down,
    /// 10: no longer in the configuration.
    Removed,
}

impl MemberState {
    /// The numeric code (`state`, `myState`).
    pub fn code(self) -> i32 {
        match self {
            MemberState::Startup => 0,
            MemberState::Primary => 1,
            MemberState::Secondary => 2,
            MemberState::Recovering => 3,
            MemberState::Unknown => 6,
            MemberState::Down => 8,
            MemberState::Removed => 10,
        }
    }

    /// The name (`stateStr`).
    pub fn name(self) -> &'static str {
        match self {
            MemberState::Startup => "STARTUP",
            MemberState::Primary => "PRIMARY",
            MemberState::Secondary => "SECONDARY",
            MemberState::Recovering => "RECOVERING",
            MemberState::Unknown => "UNKNOWN",
            MemberState::Down => "(not reachable/healthy)",
            MemberState::Removed => "REMOVED",
        }
    }

    /// The state for a numeric code received from another member.
    pub fn from_code(code: i64) -> MemberState {
        match code {
            0 => MemberState::Startup,
            1 => MemberState::Primary,
            2 => MemberState::Secondary,
            3 => MemberState::Recovering,
            8 => MemberState::Down,
            10 => MemberState::Removed,
            _ => MemberState::Unknown,
        }
    }
}

/// One entry of `members` in a replica set configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberConfig {
    /// `_id`.
    pub id: i32,
    /// `host` (`host:port`).
    pub host: String,
    /// `priority` (0 = never primary).
    pub priority: f64,
    /// `votes` (0 or 1).
    pub votes: i32,
    /// `hidden`.
    pub hidden: bool,
    /// `secondaryDelaySecs`.
    pub secondary_delay_secs: i64,
    /// `arbiterOnly` (accepted, but arbiters are not run by this server).
    pub arbiter_only: bool,
    /// `buildIndexes`.
    pub build_indexes: bool,
    /// `tags`.
    pub tags: Document,
}

impl MemberConfig {
    /// Whether this member may become primary.
    pub fn electable(&self) -> bool {
        self.priority > 0.0 && !self.arbiter_only && !self.hidden
    }

    fn to_document(&self) -> Document {
        doc! {
            "_id": self.id,
            "host": self.host.clone(),
            "arbiterOnly": self.arbiter_only,
            "buildIndexes": self.build_indexes,
            "hidden": self.hidden,
            "priority": self.priority,
            "tags": self.tags.clone(),
            "secondaryDelaySecs": self.secondary_delay_secs,
            "votes": self.votes,
        }
    }
}

/// A replica set configuration document (`replSetGetConfig.config`).
#[derive(Debug, Clone, PartialEq)]
pub struct ReplSetConfig {
    /// `_id`: the set name.
    pub name: String,
    /// `version`.
    pub version: i64,
    /// `term` of the primary that installed it.
    pub term: i64,
    /// `members`.
    pub members: Vec<MemberConfig>,
    /// `settings.replicaSetId`.
    pub replica_set_id: ObjectId,
}

fn invalid_config(msg: impl Into<String>) -> CommandError {
    CommandError::new(93, "InvalidReplicaSetConfig", msg)
}

fn num_field(d: &Document, key: &str, what: &str) -> CommandResult<Option<f64>> {
    match d.get(key) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::Int32(i)) => Ok(Some(f64::from(*i))),
        #[allow(clippy::cast_precision_loss)]
        Some(Bson::Int64(i)) => Ok(Some(*i as f64)),
        Some(Bson::Double(f)) => Ok(Some(*f)),
        Some(other) => Err(CommandError::type_mismatch(format!(
            "{what}: field '{key}' has type {}, expected a number",
            crate::commands::raw::type_name(other)
        ))),
    }
}

fn int_field(d: &Document, key: &str, what: &str) -> CommandResult<Option<i64>> {
    match num_field(d, key, what)? {
        None => Ok(None),
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
            #[allow(clippy::cast_possible_truncation)]
            let i = f as i64;
            Ok(Some(i))
        }
        Some(f) => Err(invalid_config(format!(
            "{what}: field '{key}' must be an integer, got {f}"
        ))),
    }
}

fn bool_field(d: &Document, key: &str, what: &str) -> CommandResult<Option<bool>> {
    match d.get(key) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::Boolean(b)) => Ok(Some(*b)),
        Some(Bson::Int32(i)) => Ok(Some(*i != 0)),
        Some(Bson::Int64(i)) => Ok(Some(*i != 0)),
        Some(Bson::Double(f)) => Ok(Some(*f != 0.0)),
        Some(other) => Err(CommandError::type_mismatch(format!(
            "{what}: field '{key}' has type {}, expected a boolean",
            crate::commands::raw::type_name(other)
        ))),
    }
}

impl ReplSetConfig {
    /// Parses and validates a configuration with mongod's rules (InvalidReplicaSetConfig, 93).
    pub fn parse(d: &Document) -> CommandResult<ReplSetConfig> {
        let name = match d.get("_id") {
            Some(Bson::String(s)) if !s.is_empty() => s.clone(),
            Some(Bson::String(_)) => return Err(invalid_config("Replica set configuration _id must not be empty")),
            Some(_) => {
                return Err(CommandError::type_mismatch(
                    "Replica set configuration _id must be a string",
                ));
            }
            None => return Err(CommandError::no_such_key("Missing expected field \"_id\"")),
        };
        let version = int_field(d, "version", "replica set configuration")?.unwrap_or(1);
        if version < 1 {
            return Err(invalid_config(format!(
                "version field value of {version} is out of range"
            )));
        }
        let term = int_field(d, "term", "replica set configuration")?.unwrap_or(-1);
        let raw_members = match d.get("members") {
            Some(Bson::Array(a)) => a,
            Some(_) => return Err(CommandError::type_mismatch("Field \"members\" must be an array")),
            None => return Err(CommandError::no_such_key("Missing expected field \"members\"")),
        };
        if raw_members.is_empty() {
            return Err(invalid_config(
                "Replica set configuration must have at least one member",
            ));
        }
        if raw_members.len() > 50 {
            return Err(invalid_config(format!(
                "Replica set configuration contains {} members, but must have no more than 50",
                raw_members.len()
            )));
        }
        let mut members = Vec::with_capacity(raw_members.len());
        for (i, m) in raw_members.iter().enumerate() {
            let Bson::Document(m) = m else {
                return Err(CommandError::type_mismatch(format!(
                    "Element {i} of \"members\" is not an object"
                )));
            };
            let what = format!("members[{i}]");
            let id = int_field(m, "_id", &what)?
                .ok_or_else(|| CommandError::no_such_key(format!("{what}: missing expected field \"_id\"")))?;
            let id = i32::try_from(id)
                .ok()
                .filter(|i| *i >= 0)
                .ok_or_else(|| invalid_config(format!("{what}._id field value of {id} is out of range")))?;
            let host = match m.get("host") {
                Some(Bson::String(h)) if !h.is_empty() => h.clone(),
                Some(_) => {
                    return Err(CommandError::type_mismatch(format!(
                        "{what}: \"host\" must be a string"
                    )));
                }
                None => {
                    return Err(CommandError::no_such_key(format!(
                        "{what}: missing expected field \"host\""
                    )));
                }
            };
            let arbiter_only = bool_field(m, "arbiterOnly", &what)?.unwrap_or(false);
            let hidden = bool_field(m, "hidden", &what)?.unwrap_or(false);
            let priority = num_field(m, "priority", &what)?.unwrap_or(if arbiter_only { 0.0 } else { 1.0 });
            if !(0.0..=1000.0).contains(&priority) {
                return Err(invalid_config(format!(
                    "{what}.priority field value of {priority} is out of range"
                )));
            }
            let votes = int_field(m, "votes", &what)?.unwrap_or(1);
            if votes != 0 && votes != 1 {
                return Err(invalid_config(format!(
                    "{what}.votes field value is {votes} but must be 0 or 1"
                )));
            }
            let delay = match int_field(m, "secondaryDelaySecs", &what)? {
                Some(v) => v,
                None => int_field(m, "slaveDelay", &what)?.unwrap_or(0),
            };
            if !(0..=3600 * 24 * 366).contains(&delay) {
                return Err(invalid_config(format!(
                    "{what}.secondaryDelaySecs field value of {delay} seconds is out of range"
                )));
            }
            if priority > 0.0 && hidden {
                return Err(invalid_config(format!("{what}: priority must be 0 when hidden=true")));
            }
            if priority > 0.0 && delay > 0 {
                return Err(invalid_config(format!(
                    "{what}: priority must be 0 when secondaryDelaySecs is used"
                )));
            }
            if priority > 0.0 && votes == 0 {
                return Err(invalid_config(format!(
                    "{what}: priority must be 0 when non-voting (votes:0)"
                )));
            }
            let build_indexes = bool_field(m, "buildIndexes", &what)?.unwrap_or(true);
            let tags = match m.get("tags") {
                Some(Bson::Document(t)) => t.clone(),
                None | Some(Bson::Null) => Document::new(),
                Some(_) => {
                    return Err(CommandError::type_mismatch(format!(
                        "{what}: \"tags\" must be an object"
                    )));
                }
            };
            members.push(MemberConfig {
                id,
                host,
                priority,
                votes: i32::from(votes == 1),
                hidden,
                secondary_delay_secs: delay,
                arbiter_only,
                build_indexes,
                tags,
            });
        }
        for (i, a) in members.iter().enumerate() {
            for b in &members[i + 1..] {
                if a.id == b.id {
                    return Err(invalid_config(format!(
                        "Found two member configurations with same _id field, {}",
                        a.id
                    )));
                }
                if a.host.eq_ignore_ascii_case(&b.host) {
                    return Err(invalid_config(format!(
                        "Found two member configurations with same host field, {}",
                        a.host
                    )));
                }
            }
        }
        let voters = members.iter().filter(|m| m.votes > 0).count();
        if voters > 7 {
            return Err(invalid_config(format!(
                "Replica set configuration contains {voters} voting members, but must be at least 1 and no more than 7"
            )));
        }
        if voters == 0 {
            return Err(invalid_config(
                "Replica set configuration must contain at least one voting member",
            ));
        }
        if !members.iter().any(MemberConfig::electable) {
            return Err(invalid_config(
                "Replica set configuration must contain at least one non-arbiter member with priority > 0",
            ));
        }
        let replica_set_id = d
            .get_document("settings")
            .ok()
            .and_then(|s| s.get_object_id("replicaSetId").ok())
            .unwrap_or_default();
        Ok(ReplSetConfig {
            name,
            version,
            term,
            members,
            replica_set_id,
        })
    }

    /// The configuration as `replSetGetConfig` shows it.
    pub fn to_document(&self) -> Document {
        let members: Vec<Bson> = self.members.iter().map(|m| Bson::Document(m.to_document())).collect();
        doc! {
            "_id": self.name.clone(),
            "version": i32::try_from(self.version).unwrap_or(i32::MAX),
            "term": self.term,
            "members": members,
            "protocolVersion": 1_i64,
            "writeConcernMajorityJournalDefault": true,
            "settings": {
                "chainingAllowed": true,
                "heartbeatIntervalMillis": 2000,
                "heartbeatTimeoutSecs": 10,
                "electionTimeoutMillis": 10000,
                "catchUpTimeoutMillis": -1,
                "catchUpTakeoverDelayMillis": 30000,
                "getLastErrorModes": {},
                "getLastErrorDefaults": { "w": 1, "wtimeout": 0 },
                "replicaSetId": self.replica_set_id,
            },
        }
    }

    /// The member with this host, matching `localhost` and `127.0.0.1` as the same machine.
    pub fn member_by_host(&self, host: &str) -> Option<&MemberConfig> {
        self.members.iter().find(|m| same_host(&m.host, host))
    }

    /// The member with this `_id`.
    pub fn member(&self, id: i32) -> Option<&MemberConfig> {
        self.members.iter().find(|m| m.id == id)
    }

    /// Voting members.
    pub fn voters(&self) -> usize {
        self.members.iter().filter(|m| m.votes > 0).count()
    }

    /// `majorityVoteCount`: a strict majority of the voting members.
    pub fn majority_vote_count(&self) -> usize {
        self.voters() / 2 + 1
    }

    /// `writeMajorityCount`: members that must apply a `w: "majority"` write (voting, data-bearing).
    pub fn write_majority_count(&self) -> usize {
        let data_voters = self.members.iter().filter(|m| m.votes > 0 && !m.arbiter_only).count();
        self.majority_vote_count().min(data_voters)
    }
}

/// Whether two `host:port` strings name the same member: case-insensitive, `localhost` = `127.0.0.1`, and a
/// server bound to every interface (`0.0.0.0:port`, its own address when started with `--bind_ip 0.0.0.0`)
/// matches any local name (`localhost`, `127.x.x.x`, this machine's host name) with the same port.
pub fn same_host(a: &str, b: &str) -> bool {
    fn norm(h: &str) -> String {
        let h = h.to_ascii_lowercase();
        match h.strip_prefix("localhost:") {
            Some(port) => format!("127.0.0.1:{port}"),
            None => h,
        }
    }
    fn split(h: &str) -> (&str, &str) {
        h.rsplit_once(':').unwrap_or((h, ""))
    }
    fn is_local(name: &str) -> bool {
        name.starts_with("127.")
            || name == "0.0.0.0"
            || std::env::var("HOSTNAME").is_ok_and(|own| !own.is_empty() && own.eq_ignore_ascii_case(name))
    }
    let (a, b) = (norm(a), norm(b));
    if a == b {
        return true;
    }
    let ((ha, pa), (hb, pb)) = (split(&a), split(&b));
    pa == pb && ((ha == "0.0.0.0" && is_local(hb)) || (hb == "0.0.0.0" && is_local(ha)))
}

/// What this member knows about another one.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// Last reported state.
    pub state: MemberState,
    /// Last reported applied optime.
    pub applied: OpTime,
    /// Wall-clock date of the applied optime.
    pub applied_wall: DateTime,
    /// When this member last heard from it.
    pub last_heard: Option<Instant>,
    /// Date of the last successful heartbeat.
    pub last_heartbeat: DateTime,
    /// Round-trip time of the last heartbeat.
    pub ping_ms: i64,
    /// Its sync source, as it reported.
    pub sync_source: String,
    /// When it was first heard from since it last became reachable (its `uptime` in replSetGetStatus).
    pub up_since: Option<Instant>,
}

impl Default for PeerInfo {
    fn default() -> Self {
        Self {
            state: MemberState::Unknown,
            applied: OpTime::NULL,
            applied_wall: DateTime::from_millis(0),
            last_heard: None,
            last_heartbeat: DateTime::from_millis(0),
            ping_ms: 0,
            sync_source: String::new(),
            up_since: None,
        }
    }
}

/// The mutable part of the coordinator.
#[derive(Debug)]
pub struct TopologyState {
    /// Installed configuration.
    pub config: Option<ReplSetConfig>,
    /// This member's state.
    pub state: MemberState,
    /// Highest term seen.
    pub term: i64,
    /// `_id` of the member believed primary.
    pub primary_id: Option<i32>,
    /// When this member last became primary.
    pub election_date: Option<DateTime>,
    /// Term in which this member last became primary.
    pub election_term: i64,
    /// `topologyVersion.counter`.
    pub topology_counter: i64,
    /// Other members by `_id`.
    pub peers: HashMap<i32, PeerInfo>,
    /// Host this member pulls the oplog from.
    pub sync_source: Option<String>,
    /// Why oplog fetching last failed, if it did (`infoMessage` in replSetGetStatus); cleared on progress.
    pub sync_message: String,
    /// Until when `replSetStepDown` forbids this member from becoming primary again.
    pub step_down_until: Option<Instant>,
    /// Set while a stepdown hands over: writes are refused.
    pub stepping_down: bool,
    /// The vote this member cast last (at most one candidate per term).
    pub last_vote: Option<crate::repl::election::LastVote>,
}

/// Replication coordinator of one server; see the module documentation.
#[derive(Debug)]
pub struct ReplCoordinator {
    set_name: Option<String>,
    me: String,
    process_id: ObjectId,
    started: Instant,
    inner: Mutex<TopologyState>,
    changed: Condvar,
    wake_heartbeats: tokio::sync::Notify,
    stopped: std::sync::atomic::AtomicBool,
    stop_notify: tokio::sync::Notify,
    oplog_state: std::sync::OnceLock<std::sync::Arc<crate::repl::ReplState>>,
}

/// `electionId` for a term: `7fffffff` followed by the term as 8 big-endian bytes (as mongod builds it).
pub fn election_id(term: i64) -> ObjectId {
    let mut bytes = [0u8; 12];
    bytes[..4].copy_from_slice(&[0x7f, 0xff, 0xff, 0xff]);
    bytes[4..].copy_from_slice(&term.to_be_bytes());
    ObjectId::from_bytes(bytes)
}

/// This member's last applied optime and its wall-clock time: the last entry of `local.oplog.rs`.
pub fn last_applied(engine: &Engine) -> (OpTime, DateTime) {
    let Ok(ns) = Namespace::new(OPLOG_NS.0, OPLOG_NS.1) else {
        return (OpTime::NULL, DateTime::from_millis(0));
    };
    engine.read(|cat| {
        let Some(last) = cat
            .collection(&ns)
            .and_then(|c| c.iter().next_back().map(|(_, d)| d.clone()))
        else {
            return (OpTime::NULL, DateTime::from_millis(0));
        };
        let ts = last.get_timestamp("ts").ok();
        let t = last.get("t").ok().flatten().and_then(|v| match v {
            bson::RawBsonRef::Int64(i) => Some(i),
            bson::RawBsonRef::Int32(i) => Some(i64::from(i)),
            _ => None,
        });
        let wall = last.get_datetime("wall").ok();
        match ts {
            Some(ts) => {
                let op = OpTime { ts, t: t.unwrap_or(-1) };
                (op, wall.unwrap_or_else(|| op.date()))
            }
            None => (OpTime::NULL, DateTime::from_millis(0)),
        }
    })
}

impl ReplCoordinator {
    /// A coordinator for a server reachable as `me` (`host:port`); `set_name` is `--replSet`.
    pub fn new(set_name: Option<String>, me: String) -> Self {
        Self {
            set_name,
            me,
            process_id: ObjectId::new(),
            started: Instant::now(),
            inner: Mutex::new(TopologyState {
                config: None,
                state: MemberState::Startup,
                term: 0,
                primary_id: None,
                election_date: None,
                election_term: 0,
                topology_counter: 0,
                peers: HashMap::new(),
                sync_source: None,
                sync_message: String::new(),
                step_down_until: None,
                stepping_down: false,
                last_vote: None,
            }),
            changed: Condvar::new(),
            wake_heartbeats: tokio::sync::Notify::new(),
            stopped: std::sync::atomic::AtomicBool::new(false),
            stop_notify: tokio::sync::Notify::new(),
            oplog_state: std::sync::OnceLock::new(),
        }
    }

    /// Whether the server runs with `--replSet`.
    pub fn enabled(&self) -> bool {
        self.set_name.is_some()
    }

    /// `--replSet` name.
    pub fn set_name(&self) -> Option<&str> {
        self.set_name.as_deref()
    }

    /// This member's `host:port`.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// Seconds since start (`uptime`).
    pub fn uptime_secs(&self) -> i64 {
        i64::try_from(self.started.elapsed().as_secs()).unwrap_or(i64::MAX)
    }

    /// Locks the state.
    pub fn lock(&self) -> MutexGuard<'_, TopologyState> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes every waiter (awaitable hello, write concern) after a change; bumps `topologyVersion` when
    /// `topology` is true.
    pub fn notify(&self, st: &mut TopologyState, topology: bool) {
        self.push_flags(st);
        if topology {
            st.topology_counter = st.topology_counter.saturating_add(1);
            self.wake_heartbeats.notify_waiters();
        }
        self.changed.notify_all();
    }

    /// Connects the oplog writer's state, which this coordinator keeps informed of the term and of whether
    /// this member is a writable primary.
    pub fn attach(&self, rs: std::sync::Arc<crate::repl::ReplState>) {
        let _ = self.oplog_state.set(rs);
        let st = self.lock();
        self.push_flags(&st);
    }

    /// The oplog writer's state, once attached.
    pub fn oplog_state(&self) -> Option<&std::sync::Arc<crate::repl::ReplState>> {
        self.oplog_state.get()
    }

    fn push_flags(&self, st: &TopologyState) {
        if let (Some(rs), true) = (self.oplog_state.get(), self.enabled()) {
            rs.set_term(st.term.max(1));
            rs.set_writable_primary(st.state == MemberState::Primary && !st.stepping_down);
        }
    }

    /// Wakes waiters without a topology change (new optimes from secondaries).
    pub fn notify_progress(&self) {
        let _guard = self.lock();
        self.changed.notify_all();
    }

    /// Resolves when a topology change asks for heartbeats to go out at once.
    pub async fn heartbeat_wakeup(&self) {
        self.wake_heartbeats.notified().await;
    }

    /// Stops the background replication tasks (server shutdown).
    pub fn stop(&self) {
        self.stopped.store(true, std::sync::atomic::Ordering::SeqCst);
        self.stop_notify.notify_waiters();
        let mut st = self.lock();
        self.notify(&mut st, false);
    }

    /// Whether [`ReplCoordinator::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Resolves once [`ReplCoordinator::stop`] is called (immediately if it was).
    pub async fn stopped(&self) {
        let notified = self.stop_notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.is_stopped() {
            return;
        }
        notified.await;
    }

    /// Current term (to stamp oplog entries with `t`).
    pub fn term(&self) -> i64 {
        if !self.enabled() {
            return -1;
        }
        self.lock().term
    }

    /// Whether this member accepts writes now.
    pub fn is_writable_primary(&self) -> bool {
        if !self.enabled() {
            return true;
        }
        let st = self.lock();
        st.state == MemberState::Primary && !st.stepping_down
    }

    /// This member's state.
    pub fn state(&self) -> MemberState {
        self.lock().state
    }

    /// This member's `_id` in the installed configuration.
    pub fn my_id(&self, st: &TopologyState) -> Option<i32> {
        st.config
            .as_ref()
            .and_then(|c| c.member_by_host(&self.me))
            .map(|m| m.id)
    }

    /// Host of the member believed primary.
    pub fn primary_host(&self) -> Option<String> {
        let st = self.lock();
        Self::primary_of(&st)
    }

    /// Host of the member believed primary, from a locked state.
    pub fn primary_of(st: &TopologyState) -> Option<String> {
        let id = st.primary_id?;
        st.config.as_ref()?.member(id).map(|m| m.host.clone())
    }

    /// Installs `config` (already validated and containing this member) as the current configuration.
    /// `become_primary` makes this member primary in the next term (replSetInitiate).
    pub fn install_config(&self, st: &mut TopologyState, config: ReplSetConfig) {
        let my_id = config.member_by_host(&self.me).map(|m| m.id);
        st.peers
            .retain(|id, _| config.member(*id).is_some() && Some(*id) != my_id);
        for m in &config.members {
            if Some(m.id) != my_id {
                st.peers.entry(m.id).or_default();
            }
        }
        if st.primary_id.is_some_and(|p| config.member(p).is_none()) {
            st.primary_id = None;
        }
        match my_id {
            None => {
                st.state = MemberState::Removed;
                st.primary_id = None;
            }
            Some(_) if st.state == MemberState::Startup || st.state == MemberState::Removed => {
                st.state = MemberState::Secondary;
            }
            Some(_) => {}
        }
        if config.term > st.term {
            st.term = config.term;
        }
        st.config = Some(config);
        self.notify(st, true);
    }

    /// Makes this member primary in the next term without asking anyone: for a member that is the only
    /// voter (replSetInitiate, restart of a one-voter set).
    pub fn become_primary(&self, st: &mut TopologyState) -> CommandResult<()> {
        let term = st.term.saturating_add(1);
        self.become_primary_in(st, term)
    }

    /// Makes this member primary in `term`, which it won (see [`crate::repl::election`]).
    pub fn become_primary_in(&self, st: &mut TopologyState, term: i64) -> CommandResult<()> {
        let my_id = self
            .my_id(st)
            .ok_or_else(|| CommandError::new(94, "NotYetInitialized", "no replset config has been received"))?;
        st.term = term;
        st.state = MemberState::Primary;
        st.primary_id = Some(my_id);
        st.election_date = Some(DateTime::now());
        st.election_term = st.term;
        st.stepping_down = false;
        st.sync_source = None;
        if let Some(cfg) = st.config.as_mut() {
            cfg.term = st.term;
        }
        tracing::info!(term = st.term, member = %self.me, "transition to PRIMARY");
        self.notify(st, true);
        Ok(())
    }

    /// Moves this member to `term` if it is higher than its own; a primary steps down, as in MongoDB, since
    /// a later term means another member is or may become primary. Returns whether the term changed; the
    /// caller notifies.
    pub fn adopt_term(&self, st: &mut TopologyState, term: i64) -> bool {
        if term <= st.term {
            return false;
        }
        st.term = term;
        if st.state == MemberState::Primary {
            tracing::info!(term, member = %self.me, "stepping down: a member reports a higher term");
            st.state = MemberState::Secondary;
            st.primary_id = None;
            st.stepping_down = false;
        }
        true
    }

    /// Makes this member a secondary (stepdown, or a higher term seen).
    pub fn become_secondary(&self, st: &mut TopologyState) {
        if st.state == MemberState::Primary {
            tracing::info!(term = st.term, member = %self.me, "transition to SECONDARY");
            if st.primary_id == self.my_id(st) {
                st.primary_id = None;
            }
        }
        st.state = MemberState::Secondary;
        st.stepping_down = false;
        self.notify(st, true);
    }

    /// Takes in what another member reported (heartbeat in either direction): its state, term, applied
    /// optime, and a newer configuration if it has one. Returns a newly adopted configuration, which the
    /// caller stores with [`persist_config`] (outside this lock, as the engine lock comes first).
    pub fn observe_peer(&self, report: &Document, rtt: Option<Duration>) -> Option<ReplSetConfig> {
        let mut st = self.lock();
        if !self.enabled() {
            return None;
        }
        let mut adopted = None;
        if let Ok(cfg_doc) = report.get_document("config")
            && let Ok(cfg) = ReplSetConfig::parse(cfg_doc)
            && Some(cfg.name.as_str()) == self.set_name.as_deref()
        {
            // A configuration is newer by term, then version: a new primary's term reaches every member.
            let newer = st
                .config
                .as_ref()
                .is_none_or(|c| crate::repl::election::config_older((c.version, c.term), (cfg.version, cfg.term)));
            if newer && cfg.member_by_host(&self.me).is_some() {
                adopted = Some(cfg.clone());
                self.install_config(&mut st, cfg);
            }
        }
        let Some(config) = st.config.clone() else {
            return adopted;
        };
        let from = report
            .get_str("from")
            .ok()
            .and_then(|h| config.member_by_host(h))
            .map(|m| m.id);
        let Some(from) = from else { return adopted };
        if Some(from) == self.my_id(&st) {
            return adopted;
        }
        let term = report.get("term").and_then(as_i64).unwrap_or(-1);
        let state = MemberState::from_code(report.get("state").and_then(as_i64).unwrap_or(6));
        let mut topology_changed = self.adopt_term(&mut st, term);
        if state == MemberState::Primary && term >= st.term && st.primary_id != Some(from) {
            st.primary_id = Some(from);
            if st.state == MemberState::Primary {
                st.state = MemberState::Secondary;
            }
            topology_changed = true;
        }
        if state != MemberState::Primary && st.primary_id == Some(from) {
            st.primary_id = None;
            topology_changed = true;
        }
        let peer = st.peers.entry(from).or_default();
        if peer.state != state {
            peer.state = state;
        }
        if let Ok(op) = report.get_document("appliedOpTime")
            && let Some(op) = OpTime::from_document(op)
        {
            peer.applied = op;
        }
        if let Ok(w) = report.get_datetime("appliedWallTime") {
            peer.applied_wall = *w;
        }
        peer.sync_source = report.get_str("syncSourceHost").unwrap_or_default().to_string();
        if peer.last_heard.is_none_or(|t| t.elapsed() >= HEARTBEAT_TIMEOUT) {
            peer.up_since = Some(Instant::now());
        }
        peer.last_heard = Some(Instant::now());
        peer.last_heartbeat = DateTime::now();
        if let Some(rtt) = rtt {
            peer.ping_ms = i64::try_from(rtt.as_millis()).unwrap_or(i64::MAX);
        }
        self.notify(&mut st, topology_changed);
        adopted
    }

    /// Notes a failed heartbeat to `host`: once it has been silent for [`HEARTBEAT_TIMEOUT`] it is reported
    /// DOWN, and if it was the primary this member no longer names a primary (as mongod does when the
    /// primary becomes unreachable).
    pub fn peer_unreachable(&self, host: &str) {
        let mut st = self.lock();
        let Some(id) = st.config.as_ref().and_then(|c| c.member_by_host(host)).map(|m| m.id) else {
            return;
        };
        let silent = st
            .peers
            .get(&id)
            .is_none_or(|p| p.last_heard.is_none_or(|t| t.elapsed() >= HEARTBEAT_TIMEOUT));
        if !silent {
            return;
        }
        let mut topology_changed = false;
        if let Some(p) = st.peers.get_mut(&id)
            && p.state != MemberState::Down
        {
            p.state = MemberState::Down;
            p.up_since = None;
            topology_changed = true;
        }
        if st.primary_id == Some(id) {
            st.primary_id = None;
            topology_changed = true;
        }
        if topology_changed {
            self.notify(&mut st, true);
        }
    }

    /// Records a secondary's progress (`replSetUpdatePosition`).
    pub fn update_position(&self, member_id: i32, applied: OpTime, wall: Option<DateTime>) {
        let mut st = self.lock();
        if let Some(peer) = st.peers.get_mut(&member_id) {
            if applied > peer.applied {
                peer.applied = applied;
                if let Some(w) = wall {
                    peer.applied_wall = w;
                }
            }
            peer.last_heard = Some(Instant::now());
            if peer.state == MemberState::Unknown || peer.state == MemberState::Down {
                peer.state = MemberState::Secondary;
            }
        }
        self.notify(&mut st, false);
    }

    /// Members (including this one, at `my_applied`) that have applied `target`, counting only voters.
    fn acknowledged(&self, st: &TopologyState, my_applied: OpTime, target: OpTime) -> usize {
        let Some(cfg) = &st.config else { return 0 };
        let my_id = self.my_id(st);
        cfg.members
            .iter()
            .filter(|m| m.votes > 0 && !m.arbiter_only)
            .filter(|m| {
                if Some(m.id) == my_id {
                    my_applied >= target
                } else {
                    st.peers.get(&m.id).is_some_and(|p| p.applied >= target)
                }
            })
            .count()
    }

    /// The majority-committed optime: the newest optime applied by `writeMajorityCount` voters.
    pub fn majority_optime(&self, st: &TopologyState, my_applied: OpTime) -> OpTime {
        let Some(cfg) = &st.config else { return OpTime::NULL };
        let my_id = self.my_id(st);
        let mut optimes: Vec<OpTime> = cfg
            .members
            .iter()
            .filter(|m| m.votes > 0 && !m.arbiter_only)
            .map(|m| {
                if Some(m.id) == my_id {
                    my_applied
                } else {
                    st.peers.get(&m.id).map_or(OpTime::NULL, |p| p.applied)
                }
            })
            .collect();
        optimes.sort_unstable_by(|a, b| b.cmp(a));
        let need = cfg.write_majority_count();
        need.checked_sub(1)
            .and_then(|i| optimes.get(i).copied())
            .unwrap_or(OpTime::NULL)
    }

    /// Waits until `needed` voting members have applied `target`, or `timeout` passes (Ok(false)).
    /// Fails with PrimarySteppedDown if this member stops being primary while waiting.
    pub fn wait_for_replication(
        &self,
        engine: &Engine,
        target: OpTime,
        needed: usize,
        timeout: Option<Duration>,
    ) -> CommandResult<bool> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let (mine, _) = last_applied(engine);
            let st = self.lock();
            if self.acknowledged(&st, mine, target) >= needed {
                return Ok(true);
            }
            if st.state != MemberState::Primary {
                return Err(CommandError::new(
                    189,
                    "PrimarySteppedDown",
                    "Primary stepped down while waiting for replication",
                ));
            }
            let wait = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(false);
                    }
                    (d - now).min(Duration::from_millis(100))
                }
                None => Duration::from_millis(100),
            };
            // Bounded waits: our own optime moves without a notification, so re-check periodically.
            drop(
                self.changed
                    .wait_timeout(st, wait)
                    .unwrap_or_else(PoisonError::into_inner),
            );
        }
    }

    /// Awaitable hello: when the client sends the current `topologyVersion` with `maxAwaitTimeMS`, waits
    /// until the topology changes or that time passes.
    pub fn await_topology_change(&self, body: &Document) {
        if !self.enabled() {
            return;
        }
        let Ok(tv) = body.get_document("topologyVersion") else {
            return;
        };
        let Some(max_wait) = body.get("maxAwaitTimeMS").and_then(as_i64) else {
            return;
        };
        let max_wait = Duration::from_millis(u64::try_from(max_wait.clamp(0, 60_000)).unwrap_or(0));
        if tv.get_object_id("processId").ok() != Some(self.process_id) {
            return;
        }
        let counter = tv.get("counter").and_then(as_i64).unwrap_or(-1);
        let deadline = Instant::now() + max_wait;
        let mut st = self.lock();
        while st.topology_counter == counter && !self.is_stopped() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            st = self
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Fills the replica set fields of a `hello`/`isMaster` reply (`primary_field` is `isWritablePrimary`
    /// or `ismaster`). Leaves standalone replies untouched.
    pub fn hello_fields(&self, engine: &Engine, primary_field: &str, reply: &mut Document) {
        let Some(set_name) = self.set_name.clone() else { return };
        let (applied, wall) = last_applied(engine);
        let st = self.lock();
        let writable = st.state == MemberState::Primary && !st.stepping_down;
        reply.insert(primary_field, writable);
        reply.insert(
            "topologyVersion",
            doc! { "processId": self.process_id, "counter": st.topology_counter },
        );
        let me_cfg = st.config.as_ref().and_then(|c| c.member_by_host(&self.me));
        let (Some(cfg), Some(me_cfg)) = (st.config.as_ref(), me_cfg) else {
            reply.insert("secondary", false);
            reply.insert("info", "Does not have a valid replica set config");
            reply.insert("isreplicaset", true);
            return;
        };
        let hosts: Vec<Bson> = cfg
            .members
            .iter()
            .filter(|m| !m.hidden && !m.arbiter_only && m.priority > 0.0)
            .map(|m| Bson::String(m.host.clone()))
            .collect();
        let passives: Vec<Bson> = cfg
            .members
            .iter()
            .filter(|m| !m.hidden && !m.arbiter_only && m.priority == 0.0)
            .map(|m| Bson::String(m.host.clone()))
            .collect();
        reply.insert("hosts", hosts);
        if !passives.is_empty() {
            reply.insert("passives", passives);
        }
        reply.insert("setName", set_name);
        reply.insert("setVersion", i32::try_from(cfg.version).unwrap_or(i32::MAX));
        reply.insert("secondary", st.state == MemberState::Secondary);
        if let Some(p) = Self::primary_of(&st) {
            reply.insert("primary", p);
        }
        if me_cfg.priority == 0.0 {
            reply.insert("passive", true);
        }
        if me_cfg.hidden {
            reply.insert("hidden", true);
        }
        if me_cfg.secondary_delay_secs > 0 {
            reply.insert("secondaryDelaySecs", me_cfg.secondary_delay_secs);
        }
        if !me_cfg.tags.is_empty() {
            reply.insert("tags", me_cfg.tags.clone());
        }
        reply.insert("me", me_cfg.host.clone());
        if st.state == MemberState::Primary {
            reply.insert("electionId", election_id(st.election_term));
        }
        let majority = self.majority_optime(&st, applied);
        reply.insert(
            "lastWrite",
            doc! {
                "opTime": applied.to_document(),
                "lastWriteDate": wall,
                "majorityOpTime": majority.to_document(),
                "majorityWriteDate": majority.date(),
            },
        );
    }

    /// Checks that a command may run in this member's current state (NotWritablePrimary for writes off
    /// the primary, NotPrimaryNoSecondaryOk / NotPrimaryOrSecondary for reads).
    pub fn check_command(&self, name: &str, db: &str, body: &Document) -> CommandResult<()> {
        if !self.enabled() {
            return Ok(());
        }
        if self.is_stopped() {
            return Err(CommandError::new(
                91,
                "ShutdownInProgress",
                "The server is in quiesce mode and will shut down",
            ));
        }
        let kind = command_kind(name, body);
        if kind == CommandKind::Write {
            super::write_concern::validate(body)?;
        }
        if kind == CommandKind::Other || db == "local" {
            return Ok(());
        }
        let st = self.lock();
        // Like mongod, state-change errors carry the topologyVersion, so drivers can tell them from stale ones.
        let err = |code, name, msg: &str| {
            CommandError::new(code, name, msg).with_extra(doc! {
                "topologyVersion": { "processId": self.process_id, "counter": st.topology_counter },
            })
        };
        match kind {
            CommandKind::Write => {
                if st.state == MemberState::Primary && !st.stepping_down {
                    Ok(())
                } else {
                    Err(err(10107, "NotWritablePrimary", "not primary"))
                }
            }
            CommandKind::Read => match st.state {
                MemberState::Primary => Ok(()),
                MemberState::Secondary if secondary_ok(body) => Ok(()),
                MemberState::Secondary => Err(err(
                    13435,
                    "NotPrimaryNoSecondaryOk",
                    "not primary and secondaryOk=false",
                )),
                _ => Err(err(
                    13436,
                    "NotPrimaryOrSecondary",
                    "node is not in primary or recovering state",
                )),
            },
            CommandKind::Other => Ok(()),
        }
    }
}

/// Stores `config` in `local.system.replset` (one document, `_id` = set name).
pub fn persist_config(engine: &Engine, config: &ReplSetConfig) -> CommandResult<()> {
    store_local_document(
        engine,
        CONFIG_NS,
        &config.to_document(),
        "the replica set configuration",
    )
}

/// Replaces the document with `doc`'s `_id` in a `local` collection of replication state, creating the
/// collection first if needed; `what` names the document in errors.
pub fn store_local_document(engine: &Engine, ns: (&str, &str), doc: &Document, what: &str) -> CommandResult<()> {
    let ns = Namespace::new(ns.0, ns.1)?;
    let doc = bson::RawDocumentBuf::from_document(doc)
        .map_err(|e| CommandError::internal(format!("cannot encode {what}: {e}")))?;
    engine.write(|txn| {
        if txn.catalog().collection(&ns).is_none() {
            txn.apply(Mutation::CreateCollection {
                ns: ns.clone(),
                uuid: crate::engine::new_uuid(),
                options: doc! {},
            })?;
        }
        txn.apply(Mutation::Upsert { ns: ns.clone(), doc })
    })
}

/// The stored configuration, if `local.system.replset` has one.
pub fn load_config(engine: &Engine) -> Option<Document> {
    load_local_document(engine, CONFIG_NS)
}

/// The first document of a `local` collection of replication state, if there is one.
pub fn load_local_document(engine: &Engine, ns: (&str, &str)) -> Option<Document> {
    let ns = Namespace::new(ns.0, ns.1).ok()?;
    engine.read(|cat| {
        cat.collection(&ns)
            .and_then(|c| c.iter().next().and_then(|(_, d)| d.to_document().ok()))
    })
}

/// How a command relates to replica set member states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    /// Changes data: primary only.
    Write,
    /// Reads data: primary, or secondary with `secondaryOk`.
    Read,
    /// Runs anywhere (handshake, diagnostics, replication commands, getMore/killCursors on open cursors).
    Other,
}

/// Classifies a command by name (and for `aggregate`, by a `$out`/`$merge` stage).
pub fn command_kind(name: &str, body: &Document) -> CommandKind {
    match name {
        "insert"
        | "update"
        | "delete"
        | "findAndModify"
        | "findandmodify"
        | "create"
        | "drop"
        | "dropDatabase"
        | "createIndexes"
        | "dropIndexes"
        | "deleteIndexes"
        | "collMod"
        | "renameCollection"
        | "applyOps"
        | "createUser"
        | "updateUser"
        | "dropUser"
        | "dropAllUsersFromDatabase"
        | "createRole"
        | "updateRole"
        | "dropRole"
        | "dropAllRolesFromDatabase"
        | "grantRolesToUser"
        | "revokeRolesFromUser"
        | "grantRolesToRole"
        | "revokeRolesFromRole"
        | "grantPrivilegesToRole"
        | "revokePrivilegesFromRole"
        | "convertToCapped"
        | "cloneCollectionAsCapped"
        | "emptycapped" => CommandKind::Write,
        "aggregate" => {
            let writes = body.get_array("pipeline").is_ok_and(|p| {
                p.iter().any(|s| {
                    s.as_document()
                        .is_some_and(|d| d.contains_key("$out") || d.contains_key("$merge"))
                })
            });
            if writes { CommandKind::Write } else { CommandKind::Read }
        }
        "find" | "count" | "distinct" | "listCollections" | "listIndexes" | "dbStats" | "collStats" | "dbstats"
        | "collstats" | "dataSize" | "listDatabases" => CommandKind::Read,
        _ => CommandKind::Other,
    }
}

/// Whether the command allows running on a secondary: a `$readPreference` other than `primary`.
pub fn secondary_ok(body: &Document) -> bool {
    match body.get_document("$readPreference") {
        Ok(rp) => rp.get_str("mode").is_ok_and(|m| m != "primary"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Document {
        doc! { "_id": "rs0", "members": [
            { "_id": 0, "host": "127.0.0.1:1" },
            { "_id": 1, "host": "127.0.0.1:2" },
            { "_id": 2, "host": "127.0.0.1:3", "priority": 0, "hidden": true, "secondaryDelaySecs": 5, "votes": 0 },
        ] }
    }

    #[test]
    fn hosts_match_across_local_spellings() {
        assert!(same_host("localhost:27017", "127.0.0.1:27017"));
        assert!(same_host("0.0.0.0:27017", "localhost:27017"));
        assert!(!same_host("0.0.0.0:27017", "127.0.0.1:27018"));
        assert!(!same_host("db1.example.net:27017", "127.0.0.1:27017"));
    }

    #[test]
    fn malformed_write_concern_is_rejected_before_the_write() {
        let c = ReplCoordinator::new(Some("rs0".into()), "127.0.0.1:1".into());
        let e = c
            .check_command("insert", "app", &doc! { "writeConcern": { "w": true } })
            .unwrap_err();
        assert_eq!((e.code, e.code_name), (9, "FailedToParse"));
    }

    #[test]
    fn election_id_encodes_the_term_as_mongod_does() {
        // mongod's electionId for term 1 is ObjectId("7fffffff0000000000000001").
        assert_eq!(election_id(1).to_hex(), "7fffffff0000000000000001");
        assert!(election_id(2).bytes() > election_id(1).bytes());
    }

    #[test]
    fn config_rules_follow_the_manual() {
        let cfg = ReplSetConfig::parse(&three()).unwrap();
        assert_eq!(cfg.voters(), 2);
        assert_eq!(cfg.majority_vote_count(), 2);
        assert_eq!(cfg.write_majority_count(), 2);
        let mut bad = three();
        bad.get_array_mut("members").unwrap()[2]
            .as_document_mut()
            .unwrap()
            .insert("priority", 1);
        let e = ReplSetConfig::parse(&bad).unwrap_err();
        assert_eq!(e.code, 93);
        let mut dup = three();
        dup.get_array_mut("members").unwrap()[1]
            .as_document_mut()
            .unwrap()
            .insert("_id", 0);
        assert_eq!(ReplSetConfig::parse(&dup).unwrap_err().code, 93);
    }

    #[test]
    fn hello_lists_hosts_and_passives_as_the_manual_describes() {
        // hosts: electable members; passives: priority 0 members that are not hidden; hidden: neither.
        let cfg = doc! { "_id": "rs0", "members": [
            { "_id": 0, "host": "127.0.0.1:1" },
            { "_id": 1, "host": "127.0.0.1:2", "priority": 0 },
            { "_id": 2, "host": "127.0.0.1:3", "priority": 0, "hidden": true },
        ] };
        let c = ReplCoordinator::new(Some("rs0".into()), "localhost:2".into());
        let engine = Engine::new();
        let mut uninitiated = Document::new();
        c.hello_fields(&engine, "isWritablePrimary", &mut uninitiated);
        assert_eq!(uninitiated.get_bool("isreplicaset").ok(), Some(true));
        assert_eq!(uninitiated.get_bool("isWritablePrimary").ok(), Some(false));
        let mut st = c.lock();
        c.install_config(&mut st, ReplSetConfig::parse(&cfg).unwrap());
        drop(st);
        let mut hello = Document::new();
        c.hello_fields(&engine, "isWritablePrimary", &mut hello);
        assert_eq!(
            hello.get_array("hosts").unwrap(),
            &vec![Bson::String("127.0.0.1:1".into())]
        );
        assert_eq!(
            hello.get_array("passives").unwrap(),
            &vec![Bson::String("127.0.0.1:2".into())]
        );
        assert_eq!(hello.get_bool("passive").ok(), Some(true));
        assert!(hello.get("hidden").is_none());
        // `me` is the host as the configuration spells it.
        assert_eq!(hello.get_str("me").ok(), Some("127.0.0.1:2"));
        assert_eq!(hello.get_bool("secondary").ok(), Some(true));
        assert!(hello.get("electionId").is_none() && hello.get("primary").is_none());
    }

    #[test]
    fn writes_off_primary_fail_with_not_writable_primary() {
        let c = ReplCoordinator::new(Some("rs0".into()), "127.0.0.1:2".into());
        let e = c.check_command("insert", "test", &doc! {}).unwrap_err();
        assert_eq!((e.code, e.code_name), (10107, "NotWritablePrimary"));
        let e = c.check_command("find", "test", &doc! {}).unwrap_err();
        assert_eq!(e.code, 13436);
        let mut st = c.lock();
        c.install_config(&mut st, ReplSetConfig::parse(&three()).unwrap());
        drop(st);
        let e = c.check_command("find", "test", &doc! {}).unwrap_err();
        assert_eq!((e.code, e.code_name), (13435, "NotPrimaryNoSecondaryOk"));
        c.check_command(
            "find",
            "test",
            &doc! { "$readPreference": { "mode": "secondaryPreferred" } },
        )
        .unwrap();
        c.check_command("insert", "local", &doc! {}).unwrap();
    }
}
