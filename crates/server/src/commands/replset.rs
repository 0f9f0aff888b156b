//! Replica set commands: `replSetInitiate`, `replSetGetConfig`, `replSetReconfig`, `replSetGetStatus`,
//! `replSetStepDown`, `replSetStepUp`, `replSetFreeze`, and the member-to-member `replSetHeartbeat`,
//! `replSetUpdatePosition` and `replSetRequestVotes`.
//!
//! Replies and errors follow the MongoDB manual: a server without `--replSet` answers NoReplicationEnabled
//! (76), an uninitiated member NotYetInitialized (94), a second initiate AlreadyInitialized (23), an invalid
//! configuration InvalidReplicaSetConfig (93), a configuration that does not include this member
//! NodeNotFound (74), and a reconfig whose version does not increase NewReplicaSetConfigurationIncompatible
//! (103). `replSetStepDown` refuses writes, waits up to `secondaryCatchUpPeriodSecs` for an electable
//! secondary to reach the primary's last optime, steps down and hands over to that member with
//! `replSetStepUp` (the member that a MongoDB election would pick: caught up, highest priority).
//! `replSetStepUp` runs a real election ([`crate::repl::election`]): it fails with CommandFailed (125)
//! "Election failed." unless a majority of the voting members grant their vote.

use std::time::{Duration, Instant};

use bson::{Bson, DateTime, doc};

use super::{AuthRequirement, Ctx, Registry, Reply, Request, ok, ok_with};
use crate::commands::raw::as_i64;
use crate::error::{CommandError, CommandResult};
use crate::repl::topology::{
    HEARTBEAT_TIMEOUT, MemberState, OpTime, ReplCoordinator, ReplSetConfig, last_applied, persist_config,
};

/// Registers this group's commands.
pub fn register(r: &mut Registry) {
    use AuthRequirement::Check;
    r.register("replSetInitiate", repl_set_initiate, Check);
    r.register("replSetGetConfig", repl_set_get_config, Check);
    r.register("replSetReconfig", repl_set_reconfig, Check);
    r.register("replSetGetStatus", repl_set_get_status, Check);
    r.register("replSetStepDown", repl_set_step_down, Check);
    r.register("replSetStepUp", repl_set_step_up, Check);
    r.register("replSetFreeze", repl_set_freeze, Check);
    r.register("replSetHeartbeat", repl_set_heartbeat, Check);
    r.register("replSetUpdatePosition", repl_set_update_position, Check);
    r.register("replSetRequestVotes", repl_set_request_votes, Check);
}

fn no_replication() -> CommandError {
    CommandError::new(76, "NoReplicationEnabled", "not running with --replSet")
}

fn not_initialized() -> CommandError {
    CommandError::new(94, "NotYetInitialized", "no replset config has been received")
}

fn admin_only(req: &Request) -> CommandResult<()> {
    if req.db != "admin" {
        return Err(CommandError::unauthorized(format!(
            "{} may only be run against the admin database.",
            req.name
        )));
    }
    Ok(())
}

fn repl<'a>(ctx: &Ctx<'a>) -> CommandResult<&'a ReplCoordinator> {
    let r = &ctx.server.topology;
    if r.enabled() { Ok(r) } else { Err(no_replication()) }
}

fn repl_set_initiate(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    admin_only(req)?;
    let repl = repl(ctx)?;
    let set_name = repl.set_name().unwrap_or_default().to_string();
    let given = match req.first_value() {
        Some(Bson::Document(d)) => d.clone(),
        _ => doc! { "_id": set_name.clone(), "version": 1, "members": [{ "_id": 0, "host": repl.me() }] },
    };
    if repl.lock().config.is_some() {
        return Err(CommandError::new(23, "AlreadyInitialized", "already initialized"));
    }
    let mut cfg = ReplSetConfig::parse(&given)?;
    if cfg.name != set_name {
        return Err(CommandError::new(
            93,
            "InvalidReplicaSetConfig",
            format!(
                "Attempting to initiate a replica set with name {}, but command line reports {set_name}; rejecting",
                cfg.name
            ),
        ));
    }
    if cfg.member_by_host(repl.me()).is_none() {
        return Err(node_not_found(&cfg));
    }
    cfg.term = 0;
    persist_config(&ctx.server.engine, &cfg)?;
    let mut st = repl.lock();
    if st.config.is_some() {
        return Err(CommandError::new(23, "AlreadyInitialized", "already initialized"));
    }
    repl.install_config(&mut st, cfg);
    let me_electable = repl
        .my_id(&st)
        .and_then(|id| st.config.as_ref()?.member(id))
        .is_some_and(|m| m.electable());
    if me_electable {
        repl.become_primary(&mut st)?;
    }
    drop(st);
    crate::repl::sync::write_noop(ctx.server, "initiating set");
    Ok(ok())
}

fn node_not_found(cfg: &ReplSetConfig) -> CommandError {
    CommandError::new(
        74,
        "NodeNotFound",
        format!(
            "No host described in new configuration with {{version: {}, term: {}}} for replica set {} maps to this node",
            cfg.version, cfg.term, cfg.name
        ),
    )
}

fn repl_set_get_config(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    admin_only(req)?;
    let repl = repl(ctx)?;
    let st = repl.lock();
    let cfg = st.config.as_ref().ok_or_else(not_initialized)?;
    let mut reply = doc! { "config": cfg.to_document() };
    if req
        .body
        .get("commitmentStatus")
        .is_some_and(|v| matches!(v, Bson::Boolean(true)))
    {
        reply.insert("commitmentStatus", true);
    }
    Ok(ok_with(reply))
}

fn repl_set_reconfig(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    admin_only(req)?;
    let repl = repl(ctx)?;
    let Some(Bson::Document(given)) = req.first_value() else {
        return Err(CommandError::type_mismatch(
            "replSetReconfig argument must be an object",
        ));
    };
    let force = crate::commands::get_bool(&req.body, "force")?.unwrap_or(false);
    let mut cfg = ReplSetConfig::parse(given)?;
    let (current_version, term, state) = {
        let st = repl.lock();
        let cur = st.config.as_ref().ok_or_else(not_initialized)?;
        (cur.version, st.term, st.state)
    };
    if state != MemberState::Primary && !force {
        return Err(CommandError::new(
            10107,
            "NotWritablePrimary",
            "replSetReconfig should only be run on a writable PRIMARY. Current state SECONDARY;",
        ));
    }
    if Some(cfg.name.as_str()) != repl.set_name() {
        return Err(CommandError::new(
            103,
            "NewReplicaSetConfigurationIncompatible",
            format!(
                "New and old configurations differ in replica set name; old was {}, and new is {}",
                repl.set_name().unwrap_or_default(),
                cfg.name
            ),
        ));
    }
    if force {
        cfg.version = current_version.saturating_add(10_000 + i64::from(rand::random::<u16>() % 10_000));
    } else if cfg.version <= current_version {
        return Err(CommandError::new(
            103,
            "NewReplicaSetConfigurationIncompatible",
            format!(
                "New replica set configuration version must be greater than old, but {} is not greater than {current_version} for replica set {}",
                cfg.version, cfg.name
            ),
        ));
    }
    if cfg.member_by_host(repl.me()).is_none() {
        return Err(node_not_found(&cfg));
    }
    cfg.term = term;
    persist_config(&ctx.server.engine, &cfg)?;
    let mut st = repl.lock();
    repl.install_config(&mut st, cfg);
    if st.state == MemberState::Primary
        && repl
            .my_id(&st)
            .and_then(|id| st.config.as_ref()?.member(id))
            .is_some_and(|m| !m.electable())
    {
        repl.become_secondary(&mut st);
    }
    Ok(ok())
}

fn repl_set_get_status(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    admin_only(req)?;
    let repl = repl(ctx)?;
    let (applied, wall) = last_applied(&ctx.server.engine);
    let st = repl.lock();
    let cfg = st.config.as_ref().ok_or_else(not_initialized)?;
    let my_id = repl.my_id(&st);
    let majority = repl.majority_optime(&st, applied);
    let now = DateTime::now();
    let sync_source = st.sync_source.clone().unwrap_or_default();
    let sync_source_id = cfg.member_by_host(&sync_source).map_or(-1, |m| m.id);
    let mut members = Vec::new();
    for m in &cfg.members {
        let mut d = doc! { "_id": m.id, "name": m.host.clone() };
        if Some(m.id) == my_id {
            d.insert("health", 1.0);
            d.insert("state", st.state.code());
            d.insert("stateStr", st.state.name());
            d.insert("uptime", repl.uptime_secs());
            d.insert("optime", applied.to_document());
            d.insert("optimeDate", applied.date());
            d.insert("lastAppliedWallTime", wall);
            d.insert("lastDurableWallTime", wall);
            d.insert("syncSourceHost", sync_source.clone());
            d.insert("syncSourceId", sync_source_id);
            d.insert("infoMessage", st.sync_message.clone());
            if st.state == MemberState::Primary {
                d.insert(
                    "electionTime",
                    bson::Timestamp {
                        time: election_secs(st.election_date),
                        increment: 1,
                    },
                );
                d.insert("electionDate", st.election_date.unwrap_or(now));
            }
            d.insert("configVersion", i32::try_from(cfg.version).unwrap_or(i32::MAX));
            d.insert("configTerm", cfg.term);
            d.insert("self", true);
            d.insert("lastHeartbeatMessage", "");
        } else {
            let peer = st.peers.get(&m.id).cloned().unwrap_or_default();
            let healthy = peer.last_heard.is_some_and(|t| t.elapsed() < HEARTBEAT_TIMEOUT);
            let state = if healthy {
                peer.state
            } else if peer.last_heard.is_some() {
                MemberState::Down
            } else {
                MemberState::Unknown
            };
            d.insert("health", if healthy { 1.0 } else { 0.0 });
            d.insert("state", state.code());
            d.insert("stateStr", state.name());
            let uptime = peer.up_since.filter(|_| healthy).map_or(0, |t| t.elapsed().as_secs());
            d.insert("uptime", i64::try_from(uptime).unwrap_or(i64::MAX));
            d.insert("optime", peer.applied.to_document());
            d.insert("optimeDurable", peer.applied.to_document());
            d.insert("optimeDate", peer.applied.date());
            d.insert("optimeDurableDate", peer.applied.date());
            d.insert("lastAppliedWallTime", peer.applied_wall);
            d.insert("lastDurableWallTime", peer.applied_wall);
            d.insert("lastHeartbeat", peer.last_heartbeat);
            d.insert("lastHeartbeatRecv", peer.last_heartbeat);
            d.insert("pingMs", peer.ping_ms);
            d.insert(
                "lastHeartbeatMessage",
                if healthy {
                    ""
                } else {
                    "Couldn't get a connection within the time limit"
                },
            );
            d.insert("syncSourceHost", peer.sync_source.clone());
            d.insert(
                "syncSourceId",
                cfg.member_by_host(&peer.sync_source).map_or(-1, |s| s.id),
            );
            d.insert("infoMessage", "");
            d.insert("configVersion", i32::try_from(cfg.version).unwrap_or(i32::MAX));
            d.insert("configTerm", cfg.term);
        }
        members.push(Bson::Document(d));
    }
    let voters = i32::try_from(cfg.voters()).unwrap_or(i32::MAX);
    let writable_voters =
        i32::try_from(cfg.members.iter().filter(|m| m.votes > 0 && m.electable()).count()).unwrap_or(i32::MAX);
    let reply = doc! {
        "set": cfg.name.clone(),
        "date": now,
        "myState": st.state.code(),
        "term": st.term,
        "syncSourceHost": sync_source,
        "syncSourceId": sync_source_id,
        "heartbeatIntervalMillis": i64::try_from(crate::repl::topology::HEARTBEAT_INTERVAL.as_millis()).unwrap_or(2000),
        "majorityVoteCount": i32::try_from(cfg.majority_vote_count()).unwrap_or(i32::MAX),
        "writeMajorityCount": i32::try_from(cfg.write_majority_count()).unwrap_or(i32::MAX),
        "votingMembersCount": voters,
        "writableVotingMembersCount": writable_voters,
        "optimes": {
            "lastCommittedOpTime": majority.to_document(),
            "lastCommittedWallTime": majority.date(),
            "readConcernMajorityOpTime": majority.to_document(),
            "appliedOpTime": applied.to_document(),
            "durableOpTime": applied.to_document(),
            "lastAppliedWallTime": wall,
            "lastDurableWallTime": wall,
        },
        "members": members,
    };
    Ok(ok_with(reply))
}

fn election_secs(d: Option<DateTime>) -> u32 {
    d.map_or(0, |d| u32::try_from(d.timestamp_millis() / 1000).unwrap_or(0))
}

fn repl_set_step_down(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    admin_only(req)?;
    let repl = repl(ctx)?;
    // The manual: a non-numeric period means 60 seconds; the catch-up wait defaults to 10 seconds (0 with
    // `force: true`) and must be shorter than the stepdown period.
    let secs = req.first_value().and_then(as_i64).unwrap_or(60);
    let force = crate::commands::get_bool(&req.body, "force")?.unwrap_or(false);
    let catch_up =
        crate::commands::get_i64(&req.body, "secondaryCatchUpPeriodSecs")?.unwrap_or(if force { 0 } else { 10 });
    if secs <= 0 {
        return Err(CommandError::bad_value(format!(
            "stepdown period must be a positive integer, got {secs}"
        )));
    }
    if catch_up >= secs {
        return Err(CommandError::bad_value(format!(
            "stepdown period must be longer than secondaryCatchUpPeriodSecs; stepdown period: {secs} seconds, secondaryCatchUpPeriodSecs: {catch_up} seconds"
        )));
    }
    {
        let mut st = repl.lock();
        if st.state != MemberState::Primary {
            return Err(CommandError::new(
                10107,
                "NotWritablePrimary",
                "not primary so can't step down",
            ));
        }
        st.stepping_down = true;
        repl.notify(&mut st, true);
    }
    let deadline = Instant::now() + Duration::from_secs(u64::try_from(catch_up.max(0)).unwrap_or(0));
    let (target, _) = last_applied(&ctx.server.engine);
    let chosen = loop {
        let candidate = {
            let st = repl.lock();
            caught_up_electable(repl, &st, target)
        };
        if candidate.is_some() || Instant::now() >= deadline {
            break candidate;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if chosen.is_none() && !force {
        let mut st = repl.lock();
        st.stepping_down = false;
        repl.notify(&mut st, true);
        return Err(CommandError::new(
            262,
            "ExceededTimeLimit",
            format!(
                "No electable secondaries caught up as of {}. Please use the replSetStepDown command with the argument {{force: true}} to force node to step down.",
                DateTime::now()
            ),
        ));
    }
    {
        let mut st = repl.lock();
        st.step_down_until = Some(Instant::now() + Duration::from_secs(u64::try_from(secs).unwrap_or(60)));
        repl.become_secondary(&mut st);
    }
    if let Some(host) = chosen {
        // Hand over: the caught-up member becomes primary in the next term, as an election would decide.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let key = ctx.server.internal_key.clone();
            let result = handle.block_on(async {
                let mut c = crate::keyfile::connect(&host, Duration::from_secs(2), key.as_deref()).await?;
                c.run("admin", doc! { "replSetStepUp": 1 }, Duration::from_secs(5))
                    .await
            });
            if let Err(e) = result {
                tracing::warn!(target = %host, error = %e, "handing over to the caught-up secondary failed");
            }
        }
    }
    Ok(ok())
}

/// The electable, healthy secondary with the highest priority that has applied `target`.
fn caught_up_electable(
    repl: &ReplCoordinator,
    st: &crate::repl::topology::TopologyState,
    target: OpTime,
) -> Option<String> {
    let cfg = st.config.as_ref()?;
    let my_id = repl.my_id(st);
    cfg.members
        .iter()
        .filter(|m| Some(m.id) != my_id && m.electable())
        .filter(|m| {
            st.peers.get(&m.id).is_some_and(|p| {
                p.applied >= target
                    && p.state == MemberState::Secondary
                    && p.last_heard.is_some_and(|t| t.elapsed() < HEARTBEAT_TIMEOUT)
            })
        })
        .max_by(|a, b| a.priority.total_cmp(&b.priority))
        .map(|m| m.host.clone())
}

fn repl_set_step_up(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    admin_only(req)?;
    let repl = repl(ctx)?;
    let skip_dry_run = crate::commands::get_bool(&req.body, "skipDryRun")?.unwrap_or(false);
    {
        let st = repl.lock();
        let cfg = st.config.as_ref().ok_or_else(not_initialized)?;
        let me = repl.my_id(&st).and_then(|id| cfg.member(id)).cloned();
        let Some(me) = me else { return Err(not_initialized()) };
        if st.state == MemberState::Primary {
            return Ok(ok_with(doc! { "info": "already primary" }));
        }
        if !me.electable() || me.votes == 0 {
            return Err(CommandError::new(
                125,
                "CommandFailed",
                "Election failed: this member is not electable (priority 0, hidden, arbiter or non-voting)",
            ));
        }
        if st.step_down_until.is_some_and(|t| Instant::now() < t) {
            // A member that just stepped down does not stand for election during its stepdown period.
            return Err(CommandError::new(
                125,
                "CommandFailed",
                "Election failed: member is in its stepdown period",
            ));
        }
    }
    crate::repl::election::stand_for_election(ctx.server, skip_dry_run)?;
    crate::repl::sync::write_noop(ctx.server, "new primary");
    Ok(ok())
}

fn repl_set_request_votes(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    if repl(ctx)?.lock().config.is_none() {
        return Err(not_initialized());
    }
    let request = crate::repl::election::VoteRequest::parse(&req.body)?;
    let response = crate::repl::election::answer_vote_request(ctx.server, &request)?;
    Ok(ok_with(response.to_document()))
}

fn repl_set_freeze(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    admin_only(req)?;
    let repl = repl(ctx)?;
    let secs = req.first_value().and_then(as_i64).unwrap_or(0);
    let mut st = repl.lock();
    st.step_down_until = (secs > 0).then(|| Instant::now() + Duration::from_secs(u64::try_from(secs).unwrap_or(0)));
    Ok(ok())
}

fn repl_set_heartbeat(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    let repl = repl(ctx)?;
    if let Some(Bson::String(name)) = req.first_value()
        && Some(name.as_str()) != repl.set_name()
    {
        return Err(CommandError::new(
            185,
            "InconsistentReplicaSetNames",
            format!(
                "Our set name of {} does not match name {name} reported by remote node",
                repl.set_name().unwrap_or_default()
            ),
        ));
    }
    if let Some(cfg) = repl.observe_peer(&req.body, None)
        && let Err(e) = persist_config(&ctx.server.engine, &cfg)
    {
        tracing::warn!(error = %e, "cannot store the replica set configuration");
    }
    Ok(ok_with(crate::repl::sync::self_report(ctx.server)))
}

fn repl_set_update_position(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    let repl = repl(ctx)?;
    let Ok(optimes) = req.body.get_array("optimes") else {
        return Err(CommandError::no_such_key("Missing expected field \"optimes\""));
    };
    for entry in optimes {
        let Some(d) = entry.as_document() else { continue };
        let Some(member) = d.get("memberId").and_then(as_i64).and_then(|i| i32::try_from(i).ok()) else {
            continue;
        };
        let Some(applied) = d.get_document("appliedOpTime").ok().and_then(OpTime::from_document) else {
            continue;
        };
        let wall = d.get_datetime("appliedWallTime").ok().copied();
        repl.update_position(member, applied, wall);
    }
    Ok(ok())
}
