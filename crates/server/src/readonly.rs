//! Read-only mode (`--queryableBackupMode`, as mongod names it): the server answers every read and
//! refuses every write.
//!
//! mongod refuses writes in read-only mode with `IllegalOperation` (code 20) and the message
//! "Cannot execute a write operation in read-only mode" (`WriteUnitOfWork` and
//! `RecordStore::insertRecords` in the MongoDB sources). Here the refusal happens before the
//! handler runs, for every command that can change data, the catalog or users: CRUD writes,
//! collection and index DDL, `applyOps`, user and role management, replica-set reconfiguration,
//! and `aggregate` with a `$out` or `$merge` stage. The TTL monitor does not run either (it would
//! delete documents), and `hello`/`serverStatus` report `readOnly: true`.
//!
//! Data gets into a read-only server only through [`crate::commands::ServerState::run_internal`]
//! (used by loaders such as `tidemark serve`) or by loading a data directory at start.

use bson::{Bson, Document};

use crate::error::{CommandError, CommandResult};

/// mongod's message for a write in read-only mode.
pub const READ_ONLY_MESSAGE: &str = "Cannot execute a write operation in read-only mode";

/// Commands (by registered, canonical name) that change data, the catalog, users or the topology.
const WRITE_COMMANDS: &[&str] = &[
    "insert",
    "update",
    "delete",
    "findAndModify",
    "create",
    "drop",
    "dropDatabase",
    "renameCollection",
    "collMod",
    "createIndexes",
    "dropIndexes",
    "applyOps",
    "createUser",
    "updateUser",
    "dropUser",
    "dropAllUsersFromDatabase",
    "grantRolesToUser",
    "revokeRolesFromUser",
    "createRole",
    "updateRole",
    "dropRole",
    "dropAllRolesFromDatabase",
    "grantRolesToRole",
    "revokeRolesFromRole",
    "grantPrivilegesToRole",
    "revokePrivilegesFromRole",
    "_mergeAuthzCollections",
    "replSetInitiate",
    "replSetReconfig",
];

/// Whether `command` (canonical name) with `body` would write.
pub fn is_write(command: &str, body: &Document) -> bool {
    if WRITE_COMMANDS.contains(&command) {
        return true;
    }
    command == "aggregate" && pipeline_writes(body)
}

/// Whether an `aggregate` pipeline ends in `$out` or `$merge`.
fn pipeline_writes(body: &Document) -> bool {
    let Ok(stages) = body.get_array("pipeline") else {
        return false;
    };
    stages.iter().any(|stage| match stage {
        Bson::Document(d) => d.contains_key("$out") || d.contains_key("$merge"),
        _ => false,
    })
}

/// Refuses `command` when it writes: `IllegalOperation` (20), as mongod in read-only mode.
pub fn check(command: &str, body: &Document) -> CommandResult<()> {
    if is_write(command, body) {
        return Err(CommandError::illegal_operation(READ_ONLY_MESSAGE));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    #[test]
    fn writes_and_reads() {
        for name in [
            "insert",
            "update",
            "delete",
            "findAndModify",
            "create",
            "drop",
            "createIndexes",
        ] {
            let e = check(name, &doc! {}).unwrap_err();
            assert_eq!(
                (e.code, e.code_name, e.message.as_str()),
                (20, "IllegalOperation", READ_ONLY_MESSAGE)
            );
        }
        for name in [
            "find",
            "count",
            "distinct",
            "listCollections",
            "listIndexes",
            "getMore",
            "hello",
        ] {
            check(name, &doc! {}).unwrap();
        }
        check("aggregate", &doc! {"pipeline": [{"$match": {}}]}).unwrap();
        assert!(check("aggregate", &doc! {"pipeline": [{"$match": {}}, {"$out": "x"}]}).is_err());
        assert!(check("aggregate", &doc! {"pipeline": [{"$merge": {"into": "x"}}]}).is_err());
    }
}
