//! The `applyOps` command: applies a list of oplog entries (what `mongorestore --oplogReplay` sends, one entry
//! per command, as `{applyOps: [entry], bypassDocumentValidation}` on `admin`).
//!
//! The work is done by [`crate::repl::apply`]; this module checks the command's shape and renders MongoDB's
//! reply: `{applied: N, results: [true, ...], ok: 1}`, or on failure the error with `applied` (entries applied
//! before it) and `results` (`true` for those, `false` for the failing one) added. Entries after the failing
//! one are not applied.

use bson::{Bson, Document, doc};

use super::{AuthRequirement, Ctx, Registry, Reply, Request, get_bool, ok_with};
use crate::error::{CommandError, CommandResult};
use crate::repl::apply::{ApplyMode, ApplyOptions, apply_entries};

/// Registers `applyOps`.
pub fn register(r: &mut Registry) {
    r.register("applyOps", apply_ops, AuthRequirement::Check);
}

fn apply_ops(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    if req.db != "admin" {
        return Err(CommandError::unauthorized(
            "applyOps may only be run against the admin database.",
        ));
    }
    let Some(Bson::Array(ops)) = req.first_value() else {
        return Err(CommandError::type_mismatch(
            "BSON field 'applyOps.applyOps' is the wrong type, expected type 'array'",
        ));
    };
    for (k, _) in req.body.iter().skip(1) {
        if k == "preCondition" {
            return Err(CommandError::invalid_options(
                "applyOps 'preCondition' is not supported",
            ));
        }
    }
    let mut entries: Vec<Document> = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        match op {
            Bson::Document(d) => entries.push(d.clone()),
            _ => {
                return Err(CommandError::failed_to_parse(format!(
                    "cannot apply a malformed operation in applyOps: element {i} is not an object"
                )));
            }
        }
    }
    let options = ApplyOptions {
        mode: ApplyMode::Primary,
        bypass_document_validation: get_bool(&req.body, "bypassDocumentValidation")?.unwrap_or(false),
    };
    let state = &ctx.server;
    match apply_entries(&state.engine, state.repl.oplog(), &entries, &options) {
        Ok(n) => Ok(ok_with(doc! {
            "applied": i32::try_from(n).unwrap_or(i32::MAX),
            "results": vec![Bson::Boolean(true); n],
        })),
        Err(f) => {
            let mut results = vec![Bson::Boolean(true); f.applied];
            results.push(Bson::Boolean(false));
            let mut extra = f.error.extra.as_deref().cloned().unwrap_or_default();
            extra.insert("applied", i32::try_from(f.applied).unwrap_or(i32::MAX));
            extra.insert("results", results);
            Err(f.error.with_extra(extra))
        }
    }
}
