//! Write concern on a replica set primary: after a write command succeeds, wait until enough members have
//! applied it, or report a `writeConcernError` as mongod does.
//!
//! `w: <n>` counts voting, data-bearing members (the primary included) whose applied optime has reached the
//! primary's last optime after the write; `w: "majority"` needs `writeMajorityCount` of them. Secondaries
//! report their position with `replSetUpdatePosition` after every applied batch, which wakes the waiters.
//! `wtimeout` (milliseconds, 0 = none) bounds the wait: on expiry the command still succeeds (`ok: 1`, the
//! write happened) with `writeConcernError: {code: 64, codeName: "WriteConcernFailed", errmsg: "waiting for
//! replication timed out", errInfo: {wtimeout: true, writeConcern}}`. A `w` larger than the voting members
//! gives UnsatisfiableWriteConcern (100) and an unknown mode name UnknownReplWriteConcern (79), also as
//! `writeConcernError`. Without a `writeConcern` the implicit default of a replica set applies, which for
//! MongoDB 5.0 and later is `{w: "majority"}`.

use std::time::Duration;

use bson::{Bson, Document, doc};

use super::topology::{CommandKind, command_kind, last_applied};
use crate::commands::raw::as_i64;
use crate::commands::{Reply, Request, ServerState};
use crate::error::{CommandError, CommandResult};

/// What a write concern asks for.
#[derive(Debug, Clone, PartialEq)]
enum W {
    /// A number of members.
    Count(i64),
    /// `"majority"`.
    Majority,
    /// A tag set mode name.
    Mode(String),
}

/// Rejects a malformed `writeConcern.w` before the command runs, as mongod does (FailedToParse, 9).
pub fn validate(body: &Document) -> CommandResult<()> {
    if let Some(Bson::Document(wc)) = body.get("writeConcern") {
        match wc.get("w") {
            None | Some(Bson::String(_)) => {}
            Some(v) => match as_i64(v) {
                Some(n) if n < 0 => return Err(CommandError::failed_to_parse("w cannot be a negative value")),
                Some(_) => {}
                None => return Err(CommandError::failed_to_parse("w has to be a number or a string")),
            },
        }
    }
    Ok(())
}

/// Waits for the command's write concern when this server is a replica set primary and the command wrote;
/// adds `writeConcernError` to the reply when it cannot be satisfied.
pub fn apply(server: &ServerState, request: &Request, reply: Reply) -> CommandResult<Reply> {
    let repl = &server.topology;
    if !repl.enabled() || command_kind(&request.name, &request.body) != CommandKind::Write || request.db == "local" {
        return Ok(reply);
    }
    let (w, wtimeout, provenance, given) = match request.body.get("writeConcern") {
        Some(Bson::Document(wc)) if wc.contains_key("w") => {
            let w = match wc.get("w") {
                Some(Bson::String(s)) if s == "majority" => W::Majority,
                Some(Bson::String(s)) => W::Mode(s.clone()),
                Some(v) => match as_i64(v) {
                    Some(n) => W::Count(n),
                    None => return Err(CommandError::failed_to_parse("w has to be a number or a string")),
                },
                None => W::Count(1),
            };
            let wtimeout = wc.get("wtimeout").and_then(as_i64).unwrap_or(0);
            (w, wtimeout, "clientSupplied", wc.clone())
        }
        Some(Bson::Document(wc)) => {
            let wtimeout = wc.get("wtimeout").and_then(as_i64).unwrap_or(0);
            (W::Majority, wtimeout, "implicitDefault", wc.clone())
        }
        _ => (
            W::Majority,
            0,
            "implicitDefault",
            doc! { "w": "majority", "wtimeout": 0 },
        ),
    };
    if matches!(w, W::Count(n) if n <= 1) {
        return Ok(reply);
    }
    let mut doc = reply.into_document()?;
    if !matches!(doc.get("ok"), Some(Bson::Double(f)) if *f == 1.0) {
        return Ok(Reply::Doc(doc));
    }
    let (voters, majority) = {
        let st = repl.lock();
        match &st.config {
            Some(c) => (
                c.members.iter().filter(|m| m.votes > 0 && !m.arbiter_only).count(),
                c.write_majority_count(),
            ),
            None => return Ok(Reply::Doc(doc)),
        }
    };
    let needed = match &w {
        W::Majority => majority,
        W::Count(n) => {
            let n = usize::try_from(*n).unwrap_or(usize::MAX);
            if n > voters {
                doc.insert(
                    "writeConcernError",
                    wc_error(
                        100,
                        "UnsatisfiableWriteConcern",
                        "Not enough data-bearing nodes",
                        &given,
                        provenance,
                        false,
                    ),
                );
                return Ok(Reply::Doc(doc));
            }
            n
        }
        W::Mode(name) => {
            let msg = format!("No write concern mode named '{name}' found in replica set configuration");
            doc.insert(
                "writeConcernError",
                wc_error(79, "UnknownReplWriteConcern", &msg, &given, provenance, false),
            );
            return Ok(Reply::Doc(doc));
        }
    };
    let (target, _) = last_applied(&server.engine);
    let timeout = (wtimeout > 0).then(|| Duration::from_millis(u64::try_from(wtimeout).unwrap_or(u64::MAX)));
    match repl.wait_for_replication(&server.engine, target, needed, timeout) {
        Ok(true) => {}
        Ok(false) => {
            doc.insert(
                "writeConcernError",
                wc_error(
                    64,
                    "WriteConcernFailed",
                    "waiting for replication timed out",
                    &given,
                    provenance,
                    true,
                ),
            );
        }
        Err(e) => {
            doc.insert(
                "writeConcernError",
                wc_error(e.code, e.code_name, &e.message, &given, provenance, false),
            );
        }
    }
    Ok(Reply::Doc(doc))
}

fn wc_error(code: i32, code_name: &str, msg: &str, given: &Document, provenance: &str, wtimeout: bool) -> Document {
    let mut wc = given.clone();
    wc.insert("provenance", provenance);
    let mut info = Document::new();
    if wtimeout {
        info.insert("wtimeout", true);
    }
    info.insert("writeConcern", wc);
    doc! { "code": code, "codeName": code_name, "errmsg": msg, "errInfo": info }
}
