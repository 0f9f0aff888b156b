//! Background replication tasks of a replica set member: heartbeats to every other member, and on a
//! secondary the oplog fetcher that pulls from the primary and applies what it gets.
//!
//! Heartbeats (`replSetHeartbeat`, every [`HEARTBEAT_INTERVAL`], and at once after a topology change) carry
//! the sender's state, term, applied optime and configuration both ways; that is how a member started
//! uninitiated learns the configuration written by `replSetInitiate` on another member, how everyone learns
//! a new primary after `replSetStepUp`, and how a stale primary learns it must step down.
//!
//! The fetcher runs on secondaries: it opens a tailable, awaitData `find` on the primary's `local.oplog.rs`
//! starting at its own last applied entry (which must still be there: the first entry returned has to be
//! that one, or the member cannot continue from this source), applies every later entry with the oplog
//! application logic (which writes the same entry, same `ts`, to this member's oplog), and after each batch
//! reports its position to the primary with `replSetUpdatePosition`, which is what `w: "majority"` waits on.
//! A member with `secondaryDelaySecs` holds each entry until its wall-clock time is that old. Any error
//! (primary gone, cursor lost) drops the connection and starts over from the member's own oplog, so a member
//! killed and restarted on its `--dbpath` simply continues where its oplog ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{Bson, DateTime, Document, doc};

use super::client::{ClientError, PeerConnection};
use super::topology::{HEARTBEAT_INTERVAL, MemberState, OpTime, ReplCoordinator, ReplSetConfig, last_applied};
use crate::commands::ServerState;

/// Timeout of one heartbeat exchange.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long a fetcher `getMore` waits for new entries on the primary.
const AWAIT_DATA: Duration = Duration::from_millis(500);
/// Entries per fetcher batch.
const BATCH_SIZE: i32 = 5000;

/// Loads a stored configuration and starts the background tasks; does nothing without `--replSet`.
pub fn start(state: &Arc<ServerState>) {
    let repl = Arc::clone(&state.topology);
    if !repl.enabled() {
        return;
    }
    if let Some(stored) = super::topology::load_config(&state.engine) {
        match ReplSetConfig::parse(&stored) {
            Ok(cfg) if Some(cfg.name.as_str()) == repl.set_name() => {
                // The term survives restarts in the oplog: resume from the newest entry's.
                // So does the vote this member cast last, and with it the highest term it reached.
                let (applied, _) = last_applied(&state.engine);
                let last_vote = super::election::load_last_vote(&state.engine);
                let mut st = repl.lock();
                st.term = st.term.max(applied.t).max(last_vote.map_or(-1, |v| v.term));
                st.last_vote = last_vote;
                repl.install_config(&mut st, cfg);
                // A set whose only voter is this member elects it at once, as mongod does on restart.
                let sole_voter = st.config.as_ref().is_some_and(|c| {
                    let me = c.member_by_host(repl.me());
                    c.voters() == 1 && me.is_some_and(|m| m.votes > 0 && m.electable())
                });
                if sole_voter && repl.become_primary(&mut st).is_ok() {
                    drop(st);
                    write_noop(state, "new primary");
                }
            }
            Ok(cfg) => tracing::warn!(stored = %cfg.name, "stored replica set configuration is for another set"),
            Err(e) => tracing::warn!(error = %e, "stored replica set configuration is invalid"),
        }
    }
    tokio::spawn(heartbeat_manager(Arc::clone(state)));
    tokio::spawn(fetcher(Arc::clone(state)));
}

/// This member's report: what heartbeats carry in both directions.
pub fn self_report(state: &ServerState) -> Document {
    let repl = &state.topology;
    let (applied, wall) = last_applied(&state.engine);
    let st = repl.lock();
    let mut d = doc! {
        "set": repl.set_name().unwrap_or_default(),
        "from": repl.me(),
        "term": st.term,
        "state": st.state.code(),
        "appliedOpTime": applied.to_document(),
        "appliedWallTime": wall,
        "syncSourceHost": st.sync_source.clone().unwrap_or_default(),
    };
    if let Some(cfg) = &st.config {
        d.insert("configVersion", i32::try_from(cfg.version).unwrap_or(i32::MAX));
        d.insert("config", cfg.to_document());
    }
    d
}

/// Persists a configuration adopted from another member (off the async workers).
async fn persist(state: &Arc<ServerState>, cfg: ReplSetConfig) {
    let s = Arc::clone(state);
    let r = tokio::task::spawn_blocking(move || super::topology::persist_config(&s.engine, &cfg)).await;
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot store the replica set configuration"),
        Err(e) => tracing::warn!(error = %e, "cannot store the replica set configuration"),
    }
}

/// Keeps one heartbeat task per other member of the current configuration.
async fn heartbeat_manager(state: Arc<ServerState>) {
    let repl = Arc::clone(&state.topology);
    let mut running: std::collections::HashMap<String, tokio::task::JoinHandle<()>> = Default::default();
    while !repl.is_stopped() {
        let hosts: Vec<String> = {
            let st = repl.lock();
            st.config
                .as_ref()
                .map(|c| {
                    c.members
                        .iter()
                        .filter(|m| !super::topology::same_host(&m.host, repl.me()))
                })
                .into_iter()
                .flatten()
                .map(|m| m.host.clone())
                .collect()
        };
        running.retain(|h, task| {
            let keep = hosts.contains(h) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for h in hosts {
            running
                .entry(h.clone())
                .or_insert_with(|| tokio::spawn(heartbeat_peer(Arc::clone(&state), h)));
        }
        tokio::select! {
            () = repl.stopped() => break,
            () = repl.heartbeat_wakeup() => {}
            () = tokio::time::sleep(HEARTBEAT_INTERVAL) => {}
        }
    }
    for (_, task) in running {
        task.abort();
    }
}

/// Heartbeats one member until it leaves the configuration or the server stops.
async fn heartbeat_peer(state: Arc<ServerState>, host: String) {
    let repl = Arc::clone(&state.topology);
    let mut conn: Option<PeerConnection> = None;
    while !repl.is_stopped() {
        let in_config = repl
            .lock()
            .config
            .as_ref()
            .is_some_and(|c| c.members.iter().any(|m| m.host == host));
        if !in_config {
            return;
        }
        if conn.is_none() {
            conn = crate::keyfile::connect(&host, HEARTBEAT_TIMEOUT, state.internal_key.as_deref())
                .await
                .ok();
        }
        if let Some(c) = conn.as_mut() {
            let mut cmd = doc! { "replSetHeartbeat": repl.set_name().unwrap_or_default() };
            for (k, v) in self_report(&state) {
                if k != "set" {
                    cmd.insert(k, v);
                }
            }
            let sent = Instant::now();
            match c.run("admin", cmd, HEARTBEAT_TIMEOUT).await {
                Ok(reply) => {
                    if let Some(cfg) = repl.observe_peer(&reply, Some(sent.elapsed())) {
                        persist(&state, cfg).await;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "heartbeat failed");
                    conn = None;
                }
            }
        }
        if conn.is_none() {
            repl.peer_unreachable(&host);
        }
        tokio::select! {
            () = repl.stopped() => return,
            () = repl.heartbeat_wakeup() => {}
            () = tokio::time::sleep(HEARTBEAT_INTERVAL) => {}
        }
    }
}

/// Why a fetch round ended.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Other(String),
    #[error("{0}")]
    Diverged(String),
}

/// The fetcher loop: while secondary with a known primary, pull and apply its oplog.
async fn fetcher(state: Arc<ServerState>) {
    let repl = Arc::clone(&state.topology);
    while !repl.is_stopped() {
        let source = {
            let st = repl.lock();
            if st.state == MemberState::Secondary {
                ReplCoordinator::primary_of(&st)
            } else {
                None
            }
        };
        let Some(source) = source else {
            set_sync_source(&repl, None);
            tokio::select! {
                () = repl.stopped() => return,
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            continue;
        };
        set_sync_source(&repl, Some(source.clone()));
        if let Err(e) = fetch_from(&state, &source).await {
            tracing::debug!(source = %source, error = %e, "oplog fetching stopped; retrying");
            if set_sync_message(&repl, e.to_string()) && matches!(e, FetchError::Diverged(_)) {
                tracing::warn!(source = %source, error = %e, "cannot replicate from the sync source");
            }
            tokio::select! {
                () = repl.stopped() => return,
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }
}

/// Records why fetching stopped (empty once it progresses); returns whether the message changed.
fn set_sync_message(repl: &ReplCoordinator, message: String) -> bool {
    let mut st = repl.lock();
    let changed = st.sync_message != message;
    st.sync_message = message;
    changed
}

fn set_sync_source(repl: &ReplCoordinator, source: Option<String>) {
    let mut st = repl.lock();
    if st.sync_source != source {
        st.sync_source = source;
        repl.notify(&mut st, false);
    }
}

/// Whether the fetcher should keep pulling from `source`.
fn still_syncing_from(repl: &ReplCoordinator, source: &str) -> bool {
    let st = repl.lock();
    !repl.is_stopped()
        && st.state == MemberState::Secondary
        && ReplCoordinator::primary_of(&st).is_some_and(|p| p == source)
}

/// One fetch round against `source`; returns when the source changes or on any error.
async fn fetch_from(state: &Arc<ServerState>, source: &str) -> Result<(), FetchError> {
    let repl = Arc::clone(&state.topology);
    let mut conn = crate::keyfile::connect(source, HEARTBEAT_TIMEOUT, state.internal_key.as_deref()).await?;
    let (mine, _) = last_applied(&state.engine);
    let filter = if mine == OpTime::NULL {
        doc! {}
    } else {
        doc! { "ts": { "$gte": mine.ts } }
    };
    let find = doc! {
        "find": "oplog.rs",
        "filter": filter,
        "tailable": true,
        "awaitData": true,
        "batchSize": BATCH_SIZE,
    };
    let reply = conn.run("local", find, Duration::from_secs(30)).await?;
    let (mut cursor_id, first) = cursor_batch(&reply, "firstBatch")?;
    let mut batch = first;
    if mine != OpTime::NULL {
        // The source must still hold our last entry; it comes back first and is not applied again.
        let first_ts = batch.first().and_then(|d| d.get_timestamp("ts").ok());
        if first_ts != Some(mine.ts) {
            return Err(FetchError::Diverged(format!(
                "our last applied optime {:?} is not in the oplog of {source} (this member would need a rollback)",
                mine.ts
            )));
        }
        batch.remove(0);
    }
    let mut last_ts = mine.ts;
    loop {
        if !still_syncing_from(&repl, source) {
            return Ok(());
        }
        if !batch.is_empty() {
            if let Some(ts) = batch.last().and_then(|d| d.get_timestamp("ts").ok()) {
                last_ts = ts;
            }
            apply_with_delay(state, source, std::mem::take(&mut batch)).await?;
            report_position(state, &mut conn).await?;
            set_sync_message(&repl, String::new());
        }
        if cursor_id == 0 {
            // Not tailable (or the cursor died): poll again from the last entry seen.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let find = doc! { "find": "oplog.rs", "filter": { "ts": { "$gt": last_ts } }, "batchSize": BATCH_SIZE,
            "tailable": true, "awaitData": true };
            let reply = conn.run("local", find, Duration::from_secs(30)).await?;
            let (id, b) = cursor_batch(&reply, "firstBatch")?;
            cursor_id = id;
            batch = b;
            continue;
        }
        let get_more = doc! {
            "getMore": cursor_id,
            "collection": "oplog.rs",
            "batchSize": BATCH_SIZE,
            "maxTimeMS": i64::try_from(AWAIT_DATA.as_millis()).unwrap_or(500),
        };
        let reply = conn.run("local", get_more, Duration::from_secs(30)).await?;
        let (id, b) = cursor_batch(&reply, "nextBatch")?;
        cursor_id = id;
        batch = b;
    }
}

fn cursor_batch(reply: &Document, field: &str) -> Result<(i64, Vec<Document>), FetchError> {
    let cursor = reply
        .get_document("cursor")
        .map_err(|_| FetchError::Other("reply has no cursor".into()))?;
    let id = cursor.get("id").and_then(crate::commands::raw::as_i64).unwrap_or(0);
    let docs = cursor
        .get_array(field)
        .map_err(|_| FetchError::Other(format!("cursor has no {field}")))?
        .iter()
        .filter_map(|b| match b {
            Bson::Document(d) => Some(d.clone()),
            _ => None,
        })
        .collect();
    Ok((id, docs))
}

/// Applies fetched entries, holding each until it is `secondaryDelaySecs` old on a delayed member.
async fn apply_with_delay(state: &Arc<ServerState>, source: &str, entries: Vec<Document>) -> Result<(), FetchError> {
    let repl = Arc::clone(&state.topology);
    let delay = {
        let st = repl.lock();
        st.config
            .as_ref()
            .and_then(|c| c.member_by_host(repl.me()))
            .map_or(0, |m| m.secondary_delay_secs)
    };
    if delay <= 0 {
        return apply_now(state, entries).await;
    }
    let delay_ms = delay.saturating_mul(1000);
    let mut pending = Vec::new();
    for entry in entries {
        let written = entry
            .get_datetime("wall")
            .map(|d| d.timestamp_millis())
            .or_else(|_| entry.get_timestamp("ts").map(|ts| i64::from(ts.time) * 1000))
            .unwrap_or(0);
        let due = written.saturating_add(delay_ms);
        let now = DateTime::now().timestamp_millis();
        if due > now {
            if !pending.is_empty() {
                apply_now(state, std::mem::take(&mut pending)).await?;
            }
            let wait = Duration::from_millis(u64::try_from(due - now).unwrap_or(0));
            tokio::select! {
                () = repl.stopped() => return Ok(()),
                () = tokio::time::sleep(wait) => {}
            }
            if !still_syncing_from(&repl, source) {
                return Ok(());
            }
        }
        pending.push(entry);
    }
    if !pending.is_empty() {
        apply_now(state, pending).await?;
    }
    Ok(())
}

async fn apply_now(state: &Arc<ServerState>, entries: Vec<Document>) -> Result<(), FetchError> {
    let s = Arc::clone(state);
    tokio::task::spawn_blocking(move || apply_fetched(&s, &entries))
        .await
        .map_err(|e| FetchError::Other(format!("oplog application task failed: {e}")))?
        .map_err(|e| FetchError::Other(format!("oplog application failed: {e}")))
}

/// Applies entries fetched from the sync source with secondary semantics: idempotent, each entry recorded
/// verbatim (same `ts`) in this member's oplog, which is created on first use.
fn apply_fetched(state: &ServerState, entries: &[Document]) -> crate::error::CommandResult<()> {
    let oplog = state.repl.oplog();
    if !oplog.is_enabled() {
        oplog.enable(&state.engine)?;
    }
    let options = super::apply::ApplyOptions {
        mode: super::apply::ApplyMode::Secondary,
        ..Default::default()
    };
    super::apply::apply_entries(&state.engine, oplog, entries, &options)
        .map(|_| ())
        .map_err(|f| f.error)
}

/// Writes a no-op oplog entry `{msg}` on a member that just became primary (`"initiating set"`, `"new
/// primary"`), creating the oplog first if needed, as mongod does.
pub fn write_noop(state: &ServerState, msg: &str) {
    let oplog = state.repl.oplog();
    let result = if oplog.is_enabled() {
        Ok(())
    } else {
        oplog.enable(&state.engine)
    }
    .and_then(|()| oplog.append_noop(&state.engine, doc! { "msg": msg }).map(|_| ()));
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot write the no-op oplog entry");
    }
}

/// Tells the primary how far this member has applied (`replSetUpdatePosition`).
async fn report_position(state: &Arc<ServerState>, conn: &mut PeerConnection) -> Result<(), FetchError> {
    let (applied, wall) = last_applied(&state.engine);
    let (member_id, cfg_version) = {
        let st = state.topology.lock();
        (state.topology.my_id(&st), st.config.as_ref().map_or(0, |c| c.version))
    };
    let Some(member_id) = member_id else { return Ok(()) };
    let cmd = doc! {
        "replSetUpdatePosition": 1,
        "optimes": [{
            "durableOpTime": applied.to_document(),
            "durableWallTime": wall,
            "appliedOpTime": applied.to_document(),
            "appliedWallTime": wall,
            "memberId": member_id,
            "cfgver": cfg_version,
        }],
    };
    conn.run("admin", cmd, HEARTBEAT_TIMEOUT).await?;
    Ok(())
}
