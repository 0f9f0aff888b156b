//! Elections as in MongoDB's protocol version 1: a candidate asks every voting member for its vote with
//! `replSetRequestVotes`, first in a dry run at its current term, then for real in the next term, and becomes
//! primary only with the votes of a majority of the voting members.
//!
//! A voter decides from its own state, never from what the candidate believes about it: it refuses a
//! candidate whose term is lower than its own, whose configuration is older (by term, then version), whose
//! set name differs, or whose last applied optime is older than the voter's own, and in a real election it
//! votes at most once per term. Because a write acknowledged with `w: "majority"` is on a majority of the
//! voting members, and any majority overlaps it, a member missing such a write can never collect enough
//! votes: that is what keeps majority-committed writes through a change of primary.
//!
//! The vote is stored before it is granted (`local.replset.election`, one document `{term, candidateIndex}`,
//! as mongod stores it), so a voter restarted within a term does not vote a second time, and the term a
//! member reached survives a restart even when no primary wrote in it.

use std::time::Duration;

use bson::{Bson, Document, doc};

use super::topology::{
    OpTime, ReplCoordinator, ReplSetConfig, TopologyState, last_applied, load_local_document, store_local_document,
};
use crate::commands::ServerState;
use crate::commands::raw::as_i64;
use crate::engine::Engine;
use crate::error::{CommandError, CommandResult};

/// `local.replset.election`: where a member stores the vote it cast last.
pub const ELECTION_NS: (&str, &str) = ("local", "replset.election");
/// How long a candidate waits for each voter (connecting included).
const VOTE_TIMEOUT: Duration = Duration::from_secs(3);

/// The vote a member cast last: the term, and the candidate's index in the configuration's `members`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastVote {
    /// Term of the election.
    pub term: i64,
    /// Index of the candidate in `members`.
    pub candidate_index: i64,
}

/// A `replSetRequestVotes` request.
#[derive(Debug, Clone, PartialEq)]
pub struct VoteRequest {
    /// `setName`.
    pub set_name: String,
    /// `dryRun`: asks whether the vote would be granted, without recording it.
    pub dry_run: bool,
    /// `term`: the candidate's current term (dry run) or the term it runs for.
    pub term: i64,
    /// `candidateIndex`: the candidate's index in `members`.
    pub candidate_index: i64,
    /// `configVersion`.
    pub config_version: i64,
    /// `configTerm`.
    pub config_term: i64,
    /// `lastAppliedOpTime`: the candidate's newest oplog entry.
    pub last_applied: OpTime,
}

impl VoteRequest {
    /// The command document sent to a voter.
    pub fn to_command(&self) -> Document {
        doc! {
            "replSetRequestVotes": 1,
            "setName": self.set_name.clone(),
            "dryRun": self.dry_run,
            "term": self.term,
            "candidateIndex": self.candidate_index,
            "configVersion": self.config_version,
            "configTerm": self.config_term,
            "lastAppliedOpTime": self.last_applied.to_document(),
        }
    }

    /// Parses a received request; older senders name the optime `lastCommittedOp`.
    pub fn parse(body: &Document) -> CommandResult<VoteRequest> {
        let int = |key: &str| {
            body.get(key)
                .and_then(as_i64)
                .ok_or_else(|| CommandError::no_such_key(format!("Missing expected field \"{key}\"")))
        };
        let set_name = match body.get("setName") {
            Some(Bson::String(s)) => s.clone(),
            Some(_) => return Err(CommandError::type_mismatch("\"setName\" must be a string")),
            None => return Err(CommandError::no_such_key("Missing expected field \"setName\"")),
        };
        let optime = body
            .get_document("lastAppliedOpTime")
            .or_else(|_| body.get_document("lastCommittedOp"))
            .ok()
            .and_then(OpTime::from_document)
            .ok_or_else(|| CommandError::no_such_key("Missing expected field \"lastAppliedOpTime\""))?;
        Ok(VoteRequest {
            set_name,
            dry_run: crate::commands::get_bool(body, "dryRun")?.unwrap_or(false),
            term: int("term")?,
            candidate_index: int("candidateIndex")?,
            config_version: int("configVersion")?,
            config_term: body.get("configTerm").and_then(as_i64).unwrap_or(-1),
            last_applied: optime,
        })
    }
}

/// A voter's answer: `{term, voteGranted, reason}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoteResponse {
    /// The voter's term after considering the request.
    pub term: i64,
    /// Whether the vote is granted.
    pub vote_granted: bool,
    /// Why not (empty when granted).
    pub reason: String,
}

impl VoteResponse {
    /// The reply fields.
    pub fn to_document(&self) -> Document {
        doc! { "term": self.term, "voteGranted": self.vote_granted, "reason": self.reason.clone() }
    }
}

/// Whether configuration `(version, term)` `a` is older than `b`: terms decide when both are known and
/// differ, versions otherwise (mongod's ordering of `ConfigVersionAndTerm`).
pub fn config_older(a: (i64, i64), b: (i64, i64)) -> bool {
    let ((av, at), (bv, bt)) = (a, b);
    if at != -1 && bt != -1 && at != bt {
        at < bt
    } else {
        av < bv
    }
}

fn show(op: OpTime) -> String {
    format!("{{ ts: Timestamp({}, {}), t: {} }}", op.ts.time, op.ts.increment, op.t)
}

/// Decides a vote with mongod's rules, in its order, from this member's state and last applied optime.
/// A real (not dry-run) request with a higher term first moves this member to that term (a primary steps
/// down). Returns the answer and, when a real vote was granted, the vote to store before replying.
pub fn decide_vote(
    repl: &ReplCoordinator,
    st: &mut TopologyState,
    req: &VoteRequest,
    my_applied: OpTime,
) -> (VoteResponse, Option<LastVote>) {
    if !req.dry_run && repl.adopt_term(st, req.term) {
        repl.notify(st, true);
    }
    let refuse = |st: &TopologyState, reason: String| {
        let response = VoteResponse {
            term: st.term,
            vote_granted: false,
            reason,
        };
        (response, None)
    };
    let (my_version, my_config_term, my_set) = match &st.config {
        Some(c) => (c.version, c.term, c.name.clone()),
        None => return refuse(st, "no replica set configuration has been received".into()),
    };
    if req.term < st.term {
        return refuse(
            st,
            format!("candidate's term ({}) is lower than mine ({})", req.term, st.term),
        );
    }
    if config_older((req.config_version, req.config_term), (my_version, my_config_term)) {
        return refuse(
            st,
            format!(
                "candidate's config with {{version: {}, term: {}}} is older than mine with {{version: {my_version}, term: {my_config_term}}}",
                req.config_version, req.config_term
            ),
        );
    }
    if req.set_name != my_set {
        return refuse(
            st,
            format!("candidate's set name ({}) differs from mine ({my_set})", req.set_name),
        );
    }
    if req.last_applied < my_applied {
        return refuse(
            st,
            format!(
                "candidate's data is staler than mine. candidate's last applied OpTime: {}, my last applied OpTime: {}",
                show(req.last_applied),
                show(my_applied)
            ),
        );
    }
    if !req.dry_run
        && let Some(v) = st.last_vote.filter(|v| v.term >= req.term)
    {
        return refuse(
            st,
            format!(
                "already voted for another candidate ({}) this term ({})",
                v.candidate_index, v.term
            ),
        );
    }
    let vote = (!req.dry_run).then_some(LastVote {
        term: req.term,
        candidate_index: req.candidate_index,
    });
    if let Some(v) = vote {
        st.last_vote = Some(v);
    }
    let response = VoteResponse {
        term: st.term,
        vote_granted: true,
        reason: String::new(),
    };
    (response, vote)
}

/// Stores `vote` in `local.replset.election`.
pub fn persist_last_vote(engine: &Engine, vote: LastVote) -> CommandResult<()> {
    let d = doc! { "_id": "lastVote", "term": vote.term, "candidateIndex": vote.candidate_index };
    store_local_document(engine, ELECTION_NS, &d, "the last vote")
}

/// The stored last vote, if this member ever voted.
pub fn load_last_vote(engine: &Engine) -> Option<LastVote> {
    let d = load_local_document(engine, ELECTION_NS)?;
    Some(LastVote {
        term: d.get("term").and_then(as_i64)?,
        candidate_index: d.get("candidateIndex").and_then(as_i64).unwrap_or(-1),
    })
}

/// Answers `replSetRequestVotes`: decides with [`decide_vote`] and stores a granted real vote before the
/// reply leaves (a vote that could not be stored is not granted).
pub fn answer_vote_request(server: &ServerState, req: &VoteRequest) -> CommandResult<VoteResponse> {
    let (my_applied, _) = last_applied(&server.engine);
    let repl = &server.topology;
    let (response, vote) = {
        let mut st = repl.lock();
        decide_vote(repl, &mut st, req, my_applied)
    };
    if let Some(vote) = vote {
        persist_last_vote(&server.engine, vote)?;
    }
    tracing::info!(
        candidate = req.candidate_index,
        term = req.term,
        dry_run = req.dry_run,
        granted = response.vote_granted,
        reason = %response.reason,
        "vote request"
    );
    Ok(response)
}

fn election_failed() -> CommandError {
    CommandError::new(125, "CommandFailed", "Election failed.")
}

/// What the voters answered in one round.
struct Tally {
    granted: usize,
    highest_term: i64,
}

/// Sends `req` to every host in `voters` at once and counts the granted votes; an unreachable voter or an
/// unreadable answer counts as a refusal.
async fn request_votes(server: &ServerState, voters: &[String], req: &VoteRequest) -> Tally {
    let mut tasks = tokio::task::JoinSet::new();
    for host in voters {
        let host = host.clone();
        let key = server.internal_key.clone();
        let command = req.to_command();
        tasks.spawn(async move {
            let mut conn = crate::keyfile::connect(&host, VOTE_TIMEOUT, key.as_deref()).await?;
            let reply = conn.run("admin", command, VOTE_TIMEOUT).await;
            reply.map(|r| (host, r))
        });
    }
    let mut tally = Tally {
        granted: 0,
        highest_term: req.term,
    };
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok((host, reply))) => {
                let granted = reply.get_bool("voteGranted").unwrap_or(false);
                let term = reply.get("term").and_then(as_i64).unwrap_or(-1);
                tally.highest_term = tally.highest_term.max(term);
                if granted {
                    tally.granted += 1;
                } else {
                    let reason = reply.get_str("reason").unwrap_or_default();
                    tracing::info!(voter = %host, term = req.term, dry_run = req.dry_run, %reason, "vote refused");
                }
            }
            Ok(Err(e)) => tracing::info!(error = %e, dry_run = req.dry_run, "no vote from a member"),
            Err(e) => tracing::warn!(error = %e, "vote request task failed"),
        }
    }
    tally
}

/// The parts of the configuration an election needs, read under the lock.
struct Ballot {
    template: VoteRequest,
    voters: Vec<String>,
    self_votes: usize,
    needed: usize,
}

fn ballot(repl: &ReplCoordinator, st: &TopologyState, my_applied: OpTime) -> CommandResult<Ballot> {
    let cfg: &ReplSetConfig = st
        .config
        .as_ref()
        .ok_or_else(|| CommandError::new(94, "NotYetInitialized", "no replset config has been received"))?;
    let my_id = repl.my_id(st);
    let index = cfg
        .members
        .iter()
        .position(|m| Some(m.id) == my_id)
        .ok_or_else(|| CommandError::new(94, "NotYetInitialized", "this member is not in the configuration"))?;
    let voters = cfg
        .members
        .iter()
        .filter(|m| m.votes > 0 && Some(m.id) != my_id)
        .map(|m| m.host.clone())
        .collect();
    Ok(Ballot {
        template: VoteRequest {
            set_name: cfg.name.clone(),
            dry_run: true,
            term: st.term,
            candidate_index: i64::try_from(index).unwrap_or(-1),
            config_version: cfg.version,
            config_term: cfg.term,
            last_applied: my_applied,
        },
        voters,
        self_votes: usize::from(cfg.members[index].votes > 0),
        needed: cfg.majority_vote_count(),
    })
}

/// Runs an election with this member as the candidate (`replSetStepUp`): a dry run at the current term
/// unless `skip_dry_run`, then the real election in the next term, which this member enters by voting for
/// itself (stored first). On a majority it becomes primary in that term; otherwise it fails with mongod's
/// CommandFailed "Election failed.", leaving the term raised as mongod does. Must run on a thread that may
/// block (command handlers do), as it waits for the voters.
pub fn stand_for_election(server: &ServerState, skip_dry_run: bool) -> CommandResult<()> {
    let repl = &server.topology;
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| CommandError::internal("elections need the server's runtime"))?;
    let (my_applied, _) = last_applied(&server.engine);
    let ballot = {
        let st = repl.lock();
        ballot(repl, &st, my_applied)?
    };
    let start_term = ballot.template.term;
    if !skip_dry_run {
        let tally = handle.block_on(request_votes(server, &ballot.voters, &ballot.template));
        if tally.highest_term > start_term {
            let mut st = repl.lock();
            if repl.adopt_term(&mut st, tally.highest_term) {
                repl.notify(&mut st, true);
            }
            return Err(election_failed());
        }
        if ballot.self_votes + tally.granted < ballot.needed {
            tracing::info!(
                votes = ballot.self_votes + tally.granted,
                needed = ballot.needed,
                "dry run election lost"
            );
            return Err(election_failed());
        }
    }
    let term = start_term.saturating_add(1);
    let own_vote = LastVote {
        term,
        candidate_index: ballot.template.candidate_index,
    };
    {
        let mut st = repl.lock();
        if st.term != start_term {
            // Another election or a new primary moved the term meanwhile.
            return Err(election_failed());
        }
        repl.adopt_term(&mut st, term);
        st.last_vote = Some(own_vote);
        repl.notify(&mut st, true);
    }
    persist_last_vote(&server.engine, own_vote)?;
    let real = VoteRequest {
        dry_run: false,
        term,
        ..ballot.template.clone()
    };
    let tally = handle.block_on(request_votes(server, &ballot.voters, &real));
    let mut st = repl.lock();
    if tally.highest_term > term {
        if repl.adopt_term(&mut st, tally.highest_term) {
            repl.notify(&mut st, true);
        }
        return Err(election_failed());
    }
    let votes = ballot.self_votes + tally.granted;
    if votes < ballot.needed || st.term != term {
        tracing::info!(term, votes, needed = ballot.needed, "election lost");
        return Err(election_failed());
    }
    tracing::info!(term, votes, "election won");
    repl.become_primary_in(&mut st, term)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::Timestamp;

    fn at(time: u32) -> OpTime {
        OpTime {
            ts: Timestamp { time, increment: 1 },
            t: 1,
        }
    }

    fn voter() -> ReplCoordinator {
        let c = ReplCoordinator::new(Some("rs0".into()), "127.0.0.1:2".into());
        let cfg = doc! { "_id": "rs0", "version": 2, "term": 1, "members": [
            { "_id": 0, "host": "127.0.0.1:1" },
            { "_id": 1, "host": "127.0.0.1:2" },
            { "_id": 2, "host": "127.0.0.1:3" },
        ] };
        let mut st = c.lock();
        c.install_config(&mut st, ReplSetConfig::parse(&cfg).unwrap());
        drop(st);
        c
    }

    fn request(term: i64, dry_run: bool, applied: OpTime) -> VoteRequest {
        VoteRequest {
            set_name: "rs0".into(),
            dry_run,
            term,
            candidate_index: 0,
            config_version: 2,
            config_term: 1,
            last_applied: applied,
        }
    }

    #[test]
    fn a_candidate_behind_the_voter_is_refused() {
        let c = voter();
        let mut st = c.lock();
        let (r, vote) = decide_vote(&c, &mut st, &request(2, false, at(10)), at(11));
        assert!(!r.vote_granted && vote.is_none());
        assert!(
            r.reason.starts_with("candidate's data is staler than mine"),
            "{}",
            r.reason
        );
        // The real request still moved the voter to the candidate's term, as in mongod.
        assert_eq!((r.term, st.term), (2, 2));
        let (r, _) = decide_vote(&c, &mut st, &request(3, true, at(11)), at(11));
        assert!(r.vote_granted, "an equal optime is recent enough");
        assert_eq!(st.term, 2, "a dry run does not change the term");
    }

    #[test]
    fn one_vote_per_term_and_no_vote_for_stale_terms_or_configs() {
        let c = voter();
        let mut st = c.lock();
        let (r, vote) = decide_vote(&c, &mut st, &request(2, false, at(10)), at(10));
        assert!(r.vote_granted);
        assert_eq!(
            vote,
            Some(LastVote {
                term: 2,
                candidate_index: 0
            })
        );
        let mut other = request(2, false, at(12));
        other.candidate_index = 2;
        let (r, _) = decide_vote(&c, &mut st, &other, at(10));
        assert_eq!(r.reason, "already voted for another candidate (0) this term (2)");
        let (r, _) = decide_vote(&c, &mut st, &request(1, true, at(12)), at(10));
        assert_eq!(r.reason, "candidate's term (1) is lower than mine (2)");
        let mut old_config = request(3, true, at(12));
        old_config.config_version = 1;
        let (r, _) = decide_vote(&c, &mut st, &old_config, at(10));
        assert!(r.reason.starts_with("candidate's config with"), "{}", r.reason);
        let mut other_set = request(3, true, at(12));
        other_set.set_name = "rs1".into();
        let (r, _) = decide_vote(&c, &mut st, &other_set, at(10));
        assert_eq!(r.reason, "candidate's set name (rs1) differs from mine (rs0)");
    }

    #[test]
    fn requests_round_trip_through_the_command_document() {
        let req = request(4, true, at(7));
        assert_eq!(VoteRequest::parse(&req.to_command()).unwrap(), req);
        assert!(config_older((5, 1), (1, 2)) && config_older((1, 2), (2, 2)) && !config_older((3, -1), (2, 4)));
    }
}
