//! Auth-schema versions: may users and roles from this dump be merged into this server?
//!
//! mongorestore compares the auth schema of the dump with the destination's before it restores
//! users or roles (FORMATS.md 3.2.2). The dump side is 5 for dumps of servers ≥ 8.1 without
//! looking at any file; otherwise the `{_id: "authSchema", currentVersion: N}` document of the
//! dumped `admin.system.version` (a file without it is an error), or 3 under
//! `--restoreDbUsersAndRoles` and 1 otherwise when there is no version file at all. The server
//! side comes from `getParameter {authSchemaVersion: 1}` (1 when the parameter or the command is
//! unknown). Versions 2 and 4 are mid-upgrade states and always refused.

use bson::{Bson, Document};

use crate::error::{Error, Result};

/// The dump's auth-schema version.
///
/// `dump_server_version` is the version from `prelude.json` or the archive header;
/// `version_documents` the documents of the dumped `admin.system.version` (or
/// `$admin.system.version`), `None` when the dump has no such file.
///
/// # Errors
/// [`Error::Data`] when the version file lacks the `authSchema` document or its
/// `currentVersion` is not an integer.
pub fn dump_auth_version(
    dump_server_version: Option<&str>,
    version_documents: Option<&[Document]>,
    restore_db_users_and_roles: bool,
) -> Result<i64> {
    let parsed = dump_server_version.and_then(tidemark_format::archive::ServerVersion::parse);
    if parsed.is_some_and(|v| (v.major, v.minor) >= (8, 1)) {
        return Ok(5);
    }
    let Some(docs) = version_documents else {
        return Ok(if restore_db_users_and_roles { 3 } else { 1 });
    };
    let schema = docs
        .iter()
        .find(|d| d.get_str("_id") == Ok("authSchema"))
        .ok_or_else(|| Error::Data("system.version bson file does not have authSchema document".into()))?;
    match schema.get("currentVersion") {
        Some(Bson::Int32(v)) => Ok(i64::from(*v)),
        Some(Bson::Int64(v)) => Ok(*v),
        _ => Err(Error::Data(
            "can't unmarshal system.version currentVersion as an int".into(),
        )),
    }
}

/// Whether users and roles of auth schema `dump` may be merged into a server at `server`.
///
/// # Errors
/// [`Error::Data`] for a mid-upgrade version (2 or 4) or an invalid pair.
pub fn check_auth_versions(dump: i64, server: i64) -> Result<()> {
    for (side, v) in [("dump", dump), ("server", server)] {
        if v == 2 || v == 4 {
            return Err(Error::Data(format!(
                "detected auth schema version {v} on the {side}: finish the upgrade or roll it back"
            )));
        }
    }
    match (dump, server) {
        (3, 5) | (5, 5) | (3, 3) | (1, 1) | (1, 3) => Ok(()),
        _ => Err(Error::Data(format!(
            "invalid auth pair: dump version {dump}, server version {server}"
        ))),
    }
}
