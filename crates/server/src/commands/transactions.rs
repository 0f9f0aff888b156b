//! Multi-document transactions, refused honestly.
//!
//! tidemark-server has no multi-document transactions. Applying the writes of a transaction one by one and
//! then failing its `commitTransaction` (or silently accepting it) would break the atomicity clients rely on,
//! so transactions are refused before any of their statements runs, as mongod does where transactions are
//! unavailable:
//! - on a standalone server, any command carrying `txnNumber` fails with IllegalOperation (20) "Transaction
//!   numbers are only allowed on a replica set member or mongos" (checked in `commands::run`, which also
//!   refuses retryable writes there, as a standalone mongod does);
//! - on a replica set member, a command with `startTransaction` fails with IllegalOperation (20), and one
//!   continuing a transaction (`autocommit: false` without `startTransaction`), as well as `commitTransaction`
//!   and `abortTransaction`, fails with NoSuchTransaction (251), since no transaction can be in progress.

use bson::{Bson, Document};

use super::{AuthRequirement, Ctx, Registry, Reply, Request};
use crate::error::{CommandError, CommandResult};

/// Message of the error refusing `startTransaction` on a replica set member.
pub const UNSUPPORTED: &str = "multi-document transactions are not supported by tidemark-server";

/// Registers `commitTransaction` and `abortTransaction`.
pub fn register(r: &mut Registry) {
    r.register("commitTransaction", end_transaction, AuthRequirement::None);
    r.register("abortTransaction", end_transaction, AuthRequirement::None);
}

/// Refuses a command that starts or continues a multi-document transaction (on a replica set member; a
/// standalone server refuses every `txnNumber` before this runs).
pub fn check(body: &Document) -> CommandResult<()> {
    if body.contains_key("startTransaction") {
        return Err(CommandError::new(20, "IllegalOperation", UNSUPPORTED));
    }
    if body.contains_key("autocommit") {
        return Err(no_such_transaction(body));
    }
    Ok(())
}

/// NoSuchTransaction (251) with mongod's message for a transaction number that matches no transaction.
fn no_such_transaction(body: &Document) -> CommandError {
    let number = match body.get("txnNumber") {
        Some(Bson::Int64(n)) => n.to_string(),
        Some(Bson::Int32(n)) => n.to_string(),
        _ => "none".to_string(),
    };
    CommandError::new(
        251,
        "NoSuchTransaction",
        format!(
            "Given transaction number {number} does not match any in-progress transactions. The active \
             transaction number is -1"
        ),
    )
}

fn end_transaction(_ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    Err(no_such_transaction(&req.body))
}
