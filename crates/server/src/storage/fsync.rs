//! The `fsync` and `fsyncUnlock` commands, and `j: true` validation.
//!
//! As in mongod: `{fsync: 1}` flushes everything to the data files (a checkpoint) and answers
//! `{numFiles: 1, ok: 1}`; `{fsync: 1, lock: true}` flushes and then blocks every write (reads keep working)
//! until a matching `fsyncUnlock`. Locks nest: each lock increments `lockCount`, each `fsyncUnlock` decrements
//! it and reports the new value, and writes resume at 0; `fsyncUnlock` while not locked fails with
//! IllegalOperation "fsyncUnlock called when not locked". Both commands run only against `admin`.
//!
//! The lock is taken at the engine's write gate ([`Engine::block_writes`]), which also waits for writes
//! already in progress, and the checkpoint runs after that, so the data files then hold every acknowledged
//! write and the journal holds nothing newer: a copy of the dbpath taken while locked starts cleanly, with or
//! without `--nojournal`.

use std::sync::{Mutex, PoisonError};

use bson::{Bson, Document, doc};

use super::Storage;
use crate::commands::{AuthRequirement, Ctx, Registry, Reply, Request, get_bool, ok_with};
use crate::engine::Engine;
use crate::error::{CommandError, CommandResult};

/// Serializes `fsync` lock and `fsyncUnlock` commands (mongod's `fsyncSingleCommandExclusionMutex`), so a
/// count read and the change that follows it cannot interleave with another command's.
static FSYNC_COMMANDS: Mutex<()> = Mutex::new(());

/// The documentation link mongod returns in `seeAlso`.
pub const FSYNC_DOC_URL: &str = "http://dochub.mongodb.org/core/fsynccommand";

fn admin_only(req: &Request) -> CommandResult<()> {
    if req.db != "admin" {
        return Err(CommandError::unauthorized(format!(
            "{} may only be run against the admin database.",
            req.name
        )));
    }
    Ok(())
}

fn flush(engine: &Engine, storage: Option<&Storage>) -> CommandResult<()> {
    if let Some(s) = storage {
        s.checkpoint(engine)
            .map_err(|e| CommandError::internal(format!("fsync failed: {e}")))?;
    }
    Ok(())
}

/// Runs `fsync`: flushes, and with `lock` blocks writes. Returns the reply fields (without `ok`).
pub fn fsync(engine: &Engine, storage: Option<&Storage>, lock: bool) -> CommandResult<Document> {
    if !lock {
        flush(engine, storage)?;
        // mongod keeps this field (a constant since MMAPv1 went away) for compatibility.
        return Ok(doc! { "numFiles": 1 });
    }
    let _serial = FSYNC_COMMANDS.lock().unwrap_or_else(PoisonError::into_inner);
    // Close the gate first (waiting for writes in flight), then flush: nothing can change after the flush.
    engine.block_writes();
    if let Err(e) = flush(engine, storage) {
        engine.unblock_writes();
        return Err(e);
    }
    let count = engine.write_block_count();
    tracing::info!(lock_count = count, "mongod is locked and no writes are allowed");
    Ok(doc! {
        "info": "now locked against writes, use db.fsyncUnlock() to unlock",
        "lockCount": i64::from(count),
        "seeAlso": FSYNC_DOC_URL,
    })
}

/// Runs `fsyncUnlock`. Returns the reply fields (without `ok`).
pub fn fsync_unlock(engine: &Engine) -> CommandResult<Document> {
    let _serial = FSYNC_COMMANDS.lock().unwrap_or_else(PoisonError::into_inner);
    if engine.write_block_count() == 0 {
        return Err(CommandError::illegal_operation("fsyncUnlock called when not locked"));
    }
    let count = engine.unblock_writes();
    tracing::info!(lock_count = count, "fsyncUnlock complete");
    Ok(doc! { "info": "fsyncUnlock completed", "lockCount": i64::from(count) })
}

/// Fields `currentOp` adds while the server is fsync-locked (`{fsyncLock: true, info}`), else none.
pub fn current_op_fields(engine: &Engine) -> Document {
    if engine.write_block_count() > 0 {
        doc! { "fsyncLock": true, "info": "use db.fsyncUnlock() to terminate the fsync write/snapshot lock" }
    } else {
        Document::new()
    }
}

/// Checks a command's write concern against the journal setting: like mongod, `j: true` is refused with
/// BadValue when the server keeps no journal.
pub fn validate_journal_write_concern(body: &Document, journal_enabled: bool) -> CommandResult<()> {
    if journal_enabled {
        return Ok(());
    }
    if let Some(Bson::Document(wc)) = body.get("writeConcern")
        && matches!(wc.get("j"), Some(Bson::Boolean(true)))
    {
        return Err(CommandError::bad_value(
            "cannot use 'j' option when a host does not have journaling enabled",
        ));
    }
    Ok(())
}

fn fsync_handler(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    admin_only(req)?;
    let lock = get_bool(&req.body, "lock")?.unwrap_or(false);
    let server = ctx.server;
    let reply = fsync(&server.engine, server.storage.as_deref(), lock)?;
    Ok(ok_with(reply))
}

fn fsync_unlock_handler(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    admin_only(req)?;
    Ok(ok_with(fsync_unlock(&ctx.server.engine)?))
}

/// Registers `fsync` and `fsyncUnlock`.
pub fn register(r: &mut Registry) {
    r.register("fsync", fsync_handler, AuthRequirement::Check);
    r.register("fsyncUnlock", fsync_unlock_handler, AuthRequirement::Check);
}
