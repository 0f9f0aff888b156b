//! User and role management commands: `createUser`, `updateUser`, `dropUser`, `dropAllUsersFromDatabase`,
//! `usersInfo`, `grantRolesToUser`, `revokeRolesFromUser`, `createRole`, `updateRole`, `dropRole`,
//! `dropAllRolesFromDatabase`, `grantRolesToRole`, `revokeRolesFromRole`, `grantPrivilegesToRole`,
//! `revokePrivilegesFromRole`, `rolesInfo`, and `_mergeAuthzCollections` (how mongorestore installs dumped users and roles).
//!
//! Each handler validates its arguments with mongod's messages and codes (UserNotFound 11, RoleNotFound 31,
//! `User "u@db" already exists` 51003, ...), then changes `admin.system.users`/`system.roles` through one
//! engine write, so a command is applied whole or not at all. Handlers check their own privileges (see
//! `guard`) because `createUser`/`createRole` on `admin` must honour the localhost exception: with `--auth`,
//! a loopback connection may create the first user or role while none exists.

use std::collections::BTreeSet;

use bson::{Bson, Document, RawDocumentBuf, doc};

use super::privileges::{Privilege, Resource, builtin_role_names, builtin_role_privileges, is_builtin_role};
use super::scram::{Mechanism, ScramCredential};
use super::users::{self, AuthzColl, RoleName, UserName};
use crate::commands::{AuthRequirement, Ctx, Registry, Reply, Request, get_bool, ok_with};
use crate::engine::{Catalog, Namespace};
use crate::error::{CommandError, CommandResult};

/// Registers the handlers (with their own privilege checks, see the module docs).
pub fn register(registry: &mut Registry) {
    registry.register("createUser", create_user, AuthRequirement::None);
    registry.register("updateUser", update_user, AuthRequirement::None);
    registry.register("dropUser", drop_user, AuthRequirement::None);
    registry.register("dropAllUsersFromDatabase", drop_all_users, AuthRequirement::None);
    registry.register("usersInfo", users_info, AuthRequirement::None);
    registry.register("grantRolesToUser", grant_roles_to_user, AuthRequirement::None);
    registry.register("revokeRolesFromUser", revoke_roles_from_user, AuthRequirement::None);
    registry.register("createRole", create_role, AuthRequirement::None);
    registry.register("updateRole", update_role, AuthRequirement::None);
    registry.register("dropRole", drop_role, AuthRequirement::None);
    registry.register("rolesInfo", roles_info, AuthRequirement::None);
    registry.register("grantRolesToRole", grant_roles_to_role, AuthRequirement::None);
    registry.register("revokeRolesFromRole", revoke_roles_from_role, AuthRequirement::None);
    registry.register("grantPrivilegesToRole", grant_privileges_to_role, AuthRequirement::None);
    registry.register(
        "revokePrivilegesFromRole",
        revoke_privileges_from_role,
        AuthRequirement::None,
    );
    registry.register("dropAllRolesFromDatabase", drop_all_roles, AuthRequirement::None);
    registry.register("_mergeAuthzCollections", merge_authz_collections, AuthRequirement::None);
}

fn user_not_found(u: &UserName) -> CommandError {
    CommandError::new(
        11,
        "UserNotFound",
        format!("Could not find user \"{}\" for db \"{}\"", u.user, u.db),
    )
}

fn role_not_found(r: &RoleName) -> CommandError {
    CommandError::new(31, "RoleNotFound", format!("Could not find role: {r}"))
}

/// Whether the localhost exception lets this connection run `command`: `--auth` is on, nobody is
/// authenticated, the peer is a loopback address (or an in-process caller), no user or role exists yet, and
/// the command creates a user or role on `admin`.
fn localhost_exception(ctx: &Ctx<'_>, req: &Request) -> bool {
    if !matches!(req.name.as_str(), "createUser" | "createRole") || req.db != users::ADMIN_DB {
        return false;
    }
    let local = ctx.conn.peer.is_none_or(|p| p.ip().is_loopback());
    local && !ctx.conn.auth.is_authenticated() && !ctx.server.engine.read(users::any_user_or_role)
}

/// Checks the caller's privileges for a user-management command (nothing to check without `--auth`).
fn guard(ctx: &Ctx<'_>, req: &Request) -> CommandResult<()> {
    if !ctx.server.config.auth || localhost_exception(ctx, req) {
        return Ok(());
    }
    super::authorize(&ctx.conn.auth, &req.name, &req.db, &req.body)
}

fn name_arg(req: &Request) -> CommandResult<String> {
    match req.first_value() {
        Some(Bson::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Bson::String(_)) => Err(CommandError::bad_value(format!(
            "{} requires a non-empty name",
            req.name
        ))),
        _ => Err(CommandError::type_mismatch(format!(
            "BSON field '{}' is the wrong type, expected type 'string'",
            req.name
        ))),
    }
}

fn optional_doc(body: &Document, command: &str, field: &str) -> CommandResult<Option<Document>> {
    match body.get(field) {
        None => Ok(None),
        Some(Bson::Document(d)) => Ok(Some(d.clone())),
        Some(_) => Err(CommandError::type_mismatch(format!(
            "BSON field '{command}.{field}' is the wrong type, expected type 'object'"
        ))),
    }
}

fn check_roles_exist(catalog: &Catalog, roles: &[RoleName]) -> CommandResult<()> {
    for r in roles {
        if !users::role_exists(catalog, r) {
            return Err(role_not_found(r));
        }
    }
    Ok(())
}

fn roles_bson(roles: &[RoleName]) -> Vec<Bson> {
    roles.iter().map(|r| Bson::Document(r.to_document())).collect()
}

fn parse_mechanisms(body: &Document, command: &str) -> CommandResult<Option<Vec<Mechanism>>> {
    let Some(v) = body.get("mechanisms") else {
        return Ok(None);
    };
    let Bson::Array(items) = v else {
        return Err(CommandError::type_mismatch(format!(
            "BSON field '{command}.mechanisms' is the wrong type, expected type 'array'"
        )));
    };
    if items.is_empty() {
        return Err(CommandError::bad_value("mechanisms field must not be empty"));
    }
    let mut out = Vec::new();
    for item in items {
        let Bson::String(name) = item else {
            return Err(CommandError::bad_value("mechanisms must be strings"));
        };
        let m = Mechanism::from_name(name)
            .ok_or_else(|| CommandError::bad_value(format!("Unknown auth mechanism '{name}'")))?;
        if !out.contains(&m) {
            out.push(m);
        }
    }
    out.sort();
    Ok(Some(out))
}

/// Builds the `credentials` sub-document for `mechanisms`.
fn build_credentials(
    user: &str,
    pwd: &str,
    digest_password: bool,
    mechanisms: &[Mechanism],
) -> CommandResult<Document> {
    let mut creds = Document::new();
    for &m in mechanisms {
        let cred = match (m, digest_password) {
            (Mechanism::ScramSha1, true) => ScramCredential::derive(m, user, pwd),
            (Mechanism::ScramSha1, false) => {
                // The client already sent hex(MD5("<user>:mongo:<pwd>")).
                Ok(ScramCredential::derive_from_input(
                    m,
                    pwd.as_bytes(),
                    &super::scram::random_bytes(m.salt_len()),
                    m.default_iterations(),
                ))
            }
            (Mechanism::ScramSha256, true) => ScramCredential::derive(m, user, pwd),
            (Mechanism::ScramSha256, false) => {
                return Err(CommandError::bad_value(
                    "Use of SCRAM-SHA-256 requires undigested passwords",
                ));
            }
        }
        .map_err(|e| CommandError::bad_value(e.to_string()))?;
        creds.insert(m.name(), cred.to_document());
    }
    Ok(creds)
}

fn password_arg(body: &Document, command: &str) -> CommandResult<Option<String>> {
    match body.get("pwd") {
        None => Ok(None),
        Some(Bson::String(s)) if s.is_empty() => Err(CommandError::bad_value("Password cannot be empty")),
        Some(Bson::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(CommandError::type_mismatch(format!(
            "BSON field '{command}.pwd' is the wrong type, expected type 'string'"
        ))),
    }
}

/// `createUser`.
pub fn create_user(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    guard(ctx, req)?;
    let name = UserName::new(name_arg(req)?, req.db.clone());
    if name.db == "local" {
        return Err(CommandError::bad_value("Cannot create users in the local database"));
    }
    let external = name.db == "$external";
    let pwd = password_arg(&req.body, "createUser")?;
    if external && pwd.is_some() {
        return Err(CommandError::bad_value(
            "Cannot set the password for users defined on the '$external' database",
        ));
    }
    if !external && pwd.is_none() {
        return Err(CommandError::bad_value(
            "Must provide a 'pwd' field for all user documents, except those with '$external' as the user's source db",
        ));
    }
    let roles = RoleName::parse_list(req.body.get("roles"), "createUser.roles", &req.db)?;
    let custom_data = optional_doc(&req.body, "createUser", "customData")?;
    let digest_password = get_bool(&req.body, "digestPassword")?.unwrap_or(true);
    let mechanisms = match parse_mechanisms(&req.body, "createUser")? {
        Some(m) => m,
        None if digest_password => Mechanism::ALL.to_vec(),
        None => vec![Mechanism::ScramSha1],
    };
    let credentials = match &pwd {
        Some(p) => build_credentials(&name.user, p, digest_password, &mechanisms)?,
        None => doc! { "external": true },
    };
    let mut user_doc = doc! {
        "_id": name.id(),
        "userId": users::new_user_id(),
        "user": name.user.clone(),
        "db": name.db.clone(),
        "credentials": credentials,
    };
    if let Some(c) = custom_data {
        user_doc.insert("customData", c);
    }
    user_doc.insert("roles", roles_bson(&roles));
    if let Some(r) = req.body.get("authenticationRestrictions") {
        user_doc.insert("authenticationRestrictions", r.clone());
    }
    ctx.server.engine.write(|txn| {
        if users::find_user(txn.catalog(), &name).is_some() {
            return Err(CommandError::new(
                51003,
                "Location51003",
                format!("User \"{name}\" already exists"),
            ));
        }
        check_roles_exist(txn.catalog(), &roles)?;
        users::insert(txn, AuthzColl::Users, &user_doc)
    })?;
    Ok(ok_with(Document::new()))
}

/// `updateUser`.
pub fn update_user(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    guard(ctx, req)?;
    let name = UserName::new(name_arg(req)?, req.db.clone());
    let pwd = password_arg(&req.body, "updateUser")?;
    let roles = match req.body.get("roles") {
        Some(v) => Some(RoleName::parse_list(Some(v), "updateUser.roles", &req.db)?),
        None => None,
    };
    let custom_data = optional_doc(&req.body, "updateUser", "customData")?;
    let mechanisms = parse_mechanisms(&req.body, "updateUser")?;
    let digest_password = get_bool(&req.body, "digestPassword")?.unwrap_or(true);
    let restrictions = req.body.get("authenticationRestrictions").cloned();
    if pwd.is_none() && roles.is_none() && custom_data.is_none() && mechanisms.is_none() && restrictions.is_none() {
        return Err(CommandError::bad_value(
            "Must specify at least one field to update in updateUser",
        ));
    }
    // Derive new credentials (PBKDF2, deliberately slow) before taking the engine's write lock.
    let new_credentials = match &pwd {
        Some(p) => {
            let existing = ctx
                .server
                .engine
                .read(|catalog| users::find_user(catalog, &name).map(|d| users::mechanisms_of(&d)))
                .ok_or_else(|| user_not_found(&name))?;
            let mechs = match &mechanisms {
                Some(m) => m.clone(),
                None if existing.is_empty() => Mechanism::ALL.to_vec(),
                None => existing,
            };
            Some(build_credentials(&name.user, p, digest_password, &mechs)?)
        }
        None => None,
    };
    ctx.server.engine.write(|txn| {
        let mut user_doc = users::find_user(txn.catalog(), &name).ok_or_else(|| user_not_found(&name))?;
        let existing = users::mechanisms_of(&user_doc);
        if let Some(creds) = &new_credentials {
            user_doc.insert("credentials", creds.clone());
        } else if let Some(mechs) = &mechanisms {
            if !mechs.iter().all(|m| existing.contains(m)) {
                return Err(CommandError::bad_value(
                    "mechanisms field must be a subset of previously set mechanisms",
                ));
            }
            if let Ok(creds) = user_doc.get_document_mut("credentials") {
                for m in Mechanism::ALL {
                    if !mechs.contains(&m) {
                        creds.remove(m.name());
                    }
                }
            }
        }
        if let Some(c) = &custom_data {
            user_doc.insert("customData", c.clone());
        }
        if let Some(r) = &roles {
            check_roles_exist(txn.catalog(), r)?;
            user_doc.insert("roles", roles_bson(r));
        }
        if let Some(r) = &restrictions {
            user_doc.insert("authenticationRestrictions", r.clone());
        }
        users::replace(txn, AuthzColl::Users, &user_doc)
    })?;
    Ok(ok_with(Document::new()))
}

/// `dropUser`.
pub fn drop_user(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    guard(ctx, req)?;
    let name = UserName::new(name_arg(req)?, req.db.clone());
    ctx.server.engine.write(|txn| {
        if users::delete(txn, AuthzColl::Users, &name.id())? {
            Ok(())
        } else {
            Err(user_not_found(&name))
        }
    })?;
    Ok(ok_with(Document::new()))
}

/// `dropAllUsersFromDatabase`: reply `{n: <users removed>}`.
pub fn drop_all_users(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    guard(ctx, req)?;
    let db = req.db.clone();
    let n = ctx.server.engine.write(|txn| {
        let ids: Vec<String> = users::all_users(txn.catalog())
            .iter()
            .filter(|d| d.get_str("db") == Ok(db.as_str()))
            .filter_map(|d| d.get_str("_id").ok().map(str::to_string))
            .collect();
        for id in &ids {
            users::delete(txn, AuthzColl::Users, id)?;
        }
        Ok(ids.len())
    })?;
    Ok(ok_with(doc! { "n": i32::try_from(n).unwrap_or(i32::MAX) }))
}

fn modify_user_roles(ctx: &mut Ctx<'_>, req: &Request, grant: bool) -> CommandResult<Reply> {
    guard(ctx, req)?;
    let name = UserName::new(name_arg(req)?, req.db.clone());
    let field = format!("{}.roles", req.name);
    let roles = RoleName::parse_list(req.body.get("roles"), &field, &req.db)?;
    ctx.server.engine.write(|txn| {
        let mut user_doc = users::find_user(txn.catalog(), &name).ok_or_else(|| user_not_found(&name))?;
        check_roles_exist(txn.catalog(), &roles)?;
        let mut current = users::roles_of(&user_doc);
        if grant {
            for r in &roles {
                if !current.contains(r) {
                    current.push(r.clone());
                }
            }
        } else {
            current.retain(|r| !roles.contains(r));
        }
        user_doc.insert("roles", roles_bson(&current));
        users::replace(txn, AuthzColl::Users, &user_doc)
    })?;
    Ok(ok_with(Document::new()))
}

/// `grantRolesToUser`.
pub fn grant_roles_to_user(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    modify_user_roles(ctx, req, true)
}

/// `revokeRolesFromUser`.
pub fn revoke_roles_from_user(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    modify_user_roles(ctx, req, false)
}

/// Which users a `usersInfo` request selects.
enum UserSelection {
    AllOnDb(String),
    AllDbs,
    Names(Vec<UserName>),
}

fn parse_user_selection(req: &Request) -> CommandResult<UserSelection> {
    let one = |v: &Bson| -> CommandResult<UserName> {
        match v {
            Bson::String(s) => Ok(UserName::new(s.clone(), req.db.clone())),
            Bson::Document(d) => match (d.get_str("user"), d.get_str("db")) {
                (Ok(u), Ok(db)) => Ok(UserName::new(u, db)),
                _ => Err(CommandError::bad_value(
                    "User name must contain string fields 'user' and 'db'",
                )),
            },
            _ => Err(CommandError::bad_value(
                "User name must be either a string or an object",
            )),
        }
    };
    match req.body.get("usersInfo") {
        Some(Bson::Document(d)) if d.get("forAllDBs") == Some(&Bson::Boolean(true)) => Ok(UserSelection::AllDbs),
        Some(Bson::Array(items)) => Ok(UserSelection::Names(
            items.iter().map(one).collect::<CommandResult<_>>()?,
        )),
        Some(v @ (Bson::String(_) | Bson::Document(_))) => Ok(UserSelection::Names(vec![one(v)?])),
        Some(v) if crate::commands::raw::as_i64(v) == Some(1) => Ok(UserSelection::AllOnDb(req.db.clone())),
        _ => Err(CommandError::bad_value(
            "usersInfo must be 1, a user name, a {user, db} document, an array of those, or {forAllDBs: true}",
        )),
    }
}

fn privileges_bson(privileges: &[Privilege]) -> Vec<Bson> {
    privileges.iter().map(|p| Bson::Document(p.to_document())).collect()
}

/// `usersInfo` (forms `1`, `"name"`, `{user, db}`, arrays of those, `{forAllDBs: true}`; options
/// `showCredentials`, `showPrivileges`).
pub fn users_info(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    guard(ctx, req)?;
    let selection = parse_user_selection(req)?;
    let show_credentials = get_bool(&req.body, "showCredentials")?.unwrap_or(false);
    let show_privileges = get_bool(&req.body, "showPrivileges")?.unwrap_or(false);
    let filter = crate::commands::get_doc(&req.body, "filter")?
        .map(|f| tidemark_query::Filter::parse(f).map_err(CommandError::from))
        .transpose()?;
    let out = ctx.server.engine.read(|catalog| {
        let mut docs: Vec<Document> = match &selection {
            UserSelection::AllDbs => users::all_users(catalog),
            UserSelection::AllOnDb(db) => users::all_users(catalog)
                .into_iter()
                .filter(|d| d.get_str("db") == Ok(db.as_str()))
                .collect(),
            UserSelection::Names(names) => names.iter().filter_map(|n| users::find_user(catalog, n)).collect(),
        };
        if !matches!(selection, UserSelection::Names(_)) {
            docs.sort_by(|a, b| {
                (a.get_str("db").ok(), a.get_str("user").ok()).cmp(&(b.get_str("db").ok(), b.get_str("user").ok()))
            });
        }
        docs.iter()
            .filter(|d| filter.as_ref().is_none_or(|f| f.matches(d)))
            .map(|d| {
                let mut u = Document::new();
                for key in ["_id", "userId", "user", "db"] {
                    if let Some(v) = d.get(key) {
                        u.insert(key, v.clone());
                    }
                }
                if show_credentials && let Some(c) = d.get("credentials") {
                    u.insert("credentials", c.clone());
                }
                if let Some(c) = d.get("customData") {
                    u.insert("customData", c.clone());
                }
                let roles = users::roles_of(d);
                u.insert("roles", roles_bson(&roles));
                let mechs: Vec<Bson> = users::mechanisms_of(d)
                    .iter()
                    .map(|m| Bson::String(m.name().to_string()))
                    .collect();
                u.insert("mechanisms", mechs);
                if show_privileges {
                    let resolved = users::resolve(catalog, &roles);
                    let inherited: Vec<RoleName> = resolved.roles.iter().cloned().collect();
                    u.insert("inheritedRoles", roles_bson(&inherited));
                    u.insert("inheritedPrivileges", privileges_bson(&resolved.privileges));
                }
                Bson::Document(u)
            })
            .collect::<Vec<Bson>>()
    });
    Ok(ok_with(doc! { "users": out }))
}

fn parse_privileges(body: &Document, command: &str, db: &str) -> CommandResult<Vec<Privilege>> {
    let field = format!("{command}.privileges");
    let Some(v) = body.get("privileges") else {
        return Err(CommandError::missing_field(format!(
            "BSON field '{field}' is missing but a required field"
        )));
    };
    let Bson::Array(items) = v else {
        return Err(CommandError::type_mismatch(format!(
            "BSON field '{field}' is the wrong type, expected type 'array'"
        )));
    };
    let mut out = Vec::new();
    for item in items {
        let Bson::Document(d) = item else {
            return Err(CommandError::failed_to_parse("Each privilege must be an object"));
        };
        let p = Privilege::from_document(d).map_err(CommandError::failed_to_parse)?;
        if db != users::ADMIN_DB {
            let confined = match &p.resource {
                Resource::Database(d) | Resource::Collection(d, _) => d == db,
                _ => false,
            };
            if !confined {
                return Err(CommandError::new(
                    49,
                    "InvalidRoleModification",
                    format!(
                        "Roles on the '{db}' database cannot be granted privileges that target other databases or the cluster"
                    ),
                ));
            }
        }
        out.push(p);
    }
    Ok(out)
}

fn check_role_graph(catalog: &Catalog, role: &RoleName, roles: &[RoleName]) -> CommandResult<()> {
    check_roles_exist(catalog, roles)?;
    if users::resolve(catalog, roles).roles.contains(role) {
        return Err(CommandError::new(
            49,
            "InvalidRoleModification",
            format!("Granting roles to {role} would introduce a cycle in the role graph"),
        ));
    }
    Ok(())
}

/// `createRole`.
pub fn create_role(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    guard(ctx, req)?;
    let name = RoleName::new(name_arg(req)?, req.db.clone());
    if is_builtin_role(&name.role, &name.db) {
        return Err(CommandError::bad_value(
            "Cannot create roles with the same name as a built-in role",
        ));
    }
    let privileges = parse_privileges(&req.body, "createRole", &req.db)?;
    let roles = RoleName::parse_list(req.body.get("roles"), "createRole.roles", &req.db)?;
    let mut role_doc = doc! {
        "_id": name.id(),
        "role": name.role.clone(),
        "db": name.db.clone(),
        "privileges": privileges_bson(&privileges),
        "roles": roles_bson(&roles),
    };
    if let Some(r) = req.body.get("authenticationRestrictions") {
        role_doc.insert("authenticationRestrictions", r.clone());
    }
    ctx.server.engine.write(|txn| {
        if users::find_role(txn.catalog(), &name).is_some() {
            return Err(CommandError::new(
                51002,
                "Location51002",
                format!("Role \"{name}\" already exists"),
            ));
        }
        check_role_graph(txn.catalog(), &name, &roles)?;
        users::insert(txn, AuthzColl::Roles, &role_doc)
    })?;
    Ok(ok_with(Document::new()))
}

/// `updateRole` (replaces `privileges` and/or `roles`).
pub fn update_role(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    guard(ctx, req)?;
    let name = RoleName::new(name_arg(req)?, req.db.clone());
    let privileges = if req.body.contains_key("privileges") {
        Some(parse_privileges(&req.body, "updateRole", &req.db)?)
    } else {
        None
    };
    let roles = match req.body.get("roles") {
        Some(v) => Some(RoleName::parse_list(Some(v), "updateRole.roles", &req.db)?),
        None => None,
    };
    if privileges.is_none() && roles.is_none() && !req.body.contains_key("authenticationRestrictions") {
        return Err(CommandError::bad_value(
            "Must specify at least one field to update in updateRole",
        ));
    }
    ctx.server.engine.write(|txn| {
        let mut role_doc = users::find_role(txn.catalog(), &name).ok_or_else(|| role_not_found(&name))?;
        if let Some(p) = &privileges {
            role_doc.insert("privileges", privileges_bson(p));
        }
        if let Some(r) = &roles {
            check_role_graph(txn.catalog(), &name, r)?;
            role_doc.insert("roles", roles_bson(r));
        }
        if let Some(r) = req.body.get("authenticationRestrictions") {
            role_doc.insert("authenticationRestrictions", r.clone());
        }
        users::replace(txn, AuthzColl::Roles, &role_doc)
    })?;
    Ok(ok_with(Document::new()))
}

/// `dropRole`: removes the role and every grant of it to users and roles, as mongod does.
pub fn drop_role(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    guard(ctx, req)?;
    let name = RoleName::new(name_arg(req)?, req.db.clone());
    if is_builtin_role(&name.role, &name.db) {
        return Err(CommandError::new(
            49,
            "InvalidRoleModification",
            format!("Cannot drop built-in role: {name}"),
        ));
    }
    ctx.server.engine.write(|txn| {
        if !users::delete(txn, AuthzColl::Roles, &name.id())? {
            return Err(role_not_found(&name));
        }
        remove_grants(txn, std::slice::from_ref(&name))
    })?;
    Ok(ok_with(Document::new()))
}

fn stored_privileges(d: &Document) -> Vec<Privilege> {
    d.get_array("privileges")
        .map(|a| {
            a.iter()
                .filter_map(|p| {
                    if let Bson::Document(pd) = p {
                        Privilege::from_document(pd).ok()
                    } else {
                        None
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

fn modify_role_roles(ctx: &mut Ctx<'_>, req: &Request, grant: bool) -> CommandResult<Reply> {
    guard(ctx, req)?;
    let name = RoleName::new(name_arg(req)?, req.db.clone());
    let field = format!("{}.roles", req.name);
    let roles = RoleName::parse_list(req.body.get("roles"), &field, &req.db)?;
    ctx.server.engine.write(|txn| {
        let mut role_doc = users::find_role(txn.catalog(), &name).ok_or_else(|| role_not_found(&name))?;
        let mut current = users::roles_of(&role_doc);
        if grant {
            check_role_graph(txn.catalog(), &name, &roles)?;
            for r in &roles {
                if !current.contains(r) {
                    current.push(r.clone());
                }
            }
        } else {
            current.retain(|r| !roles.contains(r));
        }
        role_doc.insert("roles", roles_bson(&current));
        users::replace(txn, AuthzColl::Roles, &role_doc)
    })?;
    Ok(ok_with(Document::new()))
}

/// `grantRolesToRole`.
pub fn grant_roles_to_role(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    modify_role_roles(ctx, req, true)
}

/// `revokeRolesFromRole`.
pub fn revoke_roles_from_role(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    modify_role_roles(ctx, req, false)
}

fn modify_role_privileges(ctx: &mut Ctx<'_>, req: &Request, grant: bool) -> CommandResult<Reply> {
    guard(ctx, req)?;
    let name = RoleName::new(name_arg(req)?, req.db.clone());
    let changes = parse_privileges(&req.body, &req.name, &req.db)?;
    ctx.server.engine.write(|txn| {
        let mut role_doc = users::find_role(txn.catalog(), &name).ok_or_else(|| role_not_found(&name))?;
        let mut current = stored_privileges(&role_doc);
        for change in &changes {
            match current.iter_mut().find(|p| p.resource == change.resource) {
                Some(p) if grant => p.actions.extend(change.actions.iter().cloned()),
                Some(p) => p.actions.retain(|a| !change.actions.contains(a)),
                None if grant => current.push(change.clone()),
                None => {}
            }
        }
        current.retain(|p| !p.actions.is_empty());
        role_doc.insert("privileges", privileges_bson(&current));
        users::replace(txn, AuthzColl::Roles, &role_doc)
    })?;
    Ok(ok_with(Document::new()))
}

/// `grantPrivilegesToRole`.
pub fn grant_privileges_to_role(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    modify_role_privileges(ctx, req, true)
}

/// `revokePrivilegesFromRole`.
pub fn revoke_privileges_from_role(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    modify_role_privileges(ctx, req, false)
}

/// `dropAllRolesFromDatabase`: reply `{n: <roles removed>}`; grants of those roles are removed as well.
pub fn drop_all_roles(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    guard(ctx, req)?;
    let db = req.db.clone();
    let n = ctx.server.engine.write(|txn| {
        let names: Vec<RoleName> = users::all_roles(txn.catalog())
            .iter()
            .filter(|d| d.get_str("db") == Ok(db.as_str()))
            .filter_map(|d| d.get_str("role").ok().map(|r| RoleName::new(r, db.clone())))
            .collect();
        for name in &names {
            users::delete(txn, AuthzColl::Roles, &name.id())?;
        }
        remove_grants(txn, &names)?;
        Ok(names.len())
    })?;
    Ok(ok_with(doc! { "n": i32::try_from(n).unwrap_or(i32::MAX) }))
}

/// Removes every grant of `dropped` roles from users and remaining roles.
fn remove_grants(txn: &mut crate::engine::WriteTxn<'_>, dropped: &[RoleName]) -> CommandResult<()> {
    for (which, docs) in [
        (AuthzColl::Users, users::all_users(txn.catalog())),
        (AuthzColl::Roles, users::all_roles(txn.catalog())),
    ] {
        for mut d in docs {
            let roles = users::roles_of(&d);
            if roles.iter().any(|r| dropped.contains(r)) {
                let kept: Vec<RoleName> = roles.into_iter().filter(|r| !dropped.contains(r)).collect();
                d.insert("roles", roles_bson(&kept));
                users::replace(txn, which, &d)?;
            }
        }
    }
    Ok(())
}

fn role_info(catalog: &Catalog, name: &RoleName, show_privileges: bool) -> Option<Document> {
    let (stored, direct_roles, direct_privileges) = if let Some(p) = builtin_role_privileges(&name.role, &name.db) {
        (None, Vec::new(), p)
    } else {
        let d = users::find_role(catalog, name)?;
        let privs = stored_privileges(&d);
        let roles = users::roles_of(&d);
        (Some(d), roles, privs)
    };
    let mut out = Document::new();
    if let Some(d) = &stored
        && let Some(id) = d.get("_id")
    {
        out.insert("_id", id.clone());
    }
    out.insert("role", name.role.clone());
    out.insert("db", name.db.clone());
    out.insert("isBuiltin", stored.is_none());
    out.insert("roles", roles_bson(&direct_roles));
    let resolved = users::resolve(catalog, &direct_roles);
    let inherited: Vec<RoleName> = resolved.roles.iter().cloned().collect();
    out.insert("inheritedRoles", roles_bson(&inherited));
    if show_privileges {
        out.insert("privileges", privileges_bson(&direct_privileges));
        let mut all = direct_privileges;
        all.extend(resolved.privileges);
        out.insert("inheritedPrivileges", privileges_bson(&all));
    }
    Some(out)
}

/// `rolesInfo` (forms `1`, `"name"`, `{role, db}`, arrays of those; options `showPrivileges`,
/// `showBuiltinRoles`).
pub fn roles_info(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    guard(ctx, req)?;
    let show_privileges = match req.body.get("showPrivileges") {
        Some(Bson::String(s)) if s == "asUserFragment" => true,
        _ => get_bool(&req.body, "showPrivileges")?.unwrap_or(false),
    };
    let show_builtin = get_bool(&req.body, "showBuiltinRoles")?.unwrap_or(false);
    let one = |v: &Bson| -> CommandResult<RoleName> {
        RoleName::parse(v, &req.db)
            .map_err(|_| CommandError::bad_value("Role name must be either a string or an object with 'role' and 'db'"))
    };
    let names: Option<Vec<RoleName>> = match req.body.get("rolesInfo") {
        Some(Bson::Array(items)) => Some(items.iter().map(one).collect::<CommandResult<_>>()?),
        Some(v @ (Bson::String(_) | Bson::Document(_))) => Some(vec![one(v)?]),
        Some(v) if crate::commands::raw::as_i64(v) == Some(1) => None,
        _ => {
            return Err(CommandError::bad_value(
                "rolesInfo must be 1, a role name, a {role, db} document, or an array of those",
            ));
        }
    };
    let db = req.db.clone();
    let out: Vec<Bson> = ctx.server.engine.read(|catalog| {
        let names = names.unwrap_or_else(|| {
            let mut v: Vec<RoleName> = users::all_roles(catalog)
                .iter()
                .filter(|d| d.get_str("db") == Ok(db.as_str()))
                .filter_map(|d| d.get_str("role").ok().map(|r| RoleName::new(r, db.clone())))
                .collect();
            if show_builtin {
                v.extend(
                    builtin_role_names(&db)
                        .into_iter()
                        .map(|r| RoleName::new(r, db.clone())),
                );
            }
            v.sort();
            v
        });
        names
            .iter()
            .filter_map(|n| role_info(catalog, n, show_privileges))
            .map(Bson::Document)
            .collect()
    });
    Ok(ok_with(doc! { "roles": out }))
}

fn temp_docs(catalog: &Catalog, field: &str, body: &Document) -> CommandResult<Option<Vec<RawDocumentBuf>>> {
    let ns = match body.get(field) {
        None => return Ok(None),
        Some(Bson::String(s)) if s.is_empty() => return Ok(None),
        Some(Bson::String(s)) => Namespace::parse(s)?,
        Some(_) => {
            return Err(CommandError::type_mismatch(format!(
                "BSON field '_mergeAuthzCollections.{field}' is the wrong type, expected type 'string'"
            )));
        }
    };
    Ok(Some(
        catalog
            .collection(&ns)
            .map(|c| c.iter().map(|(_, d)| d.clone()).collect())
            .unwrap_or_default(),
    ))
}

fn merge_one(
    txn: &mut crate::engine::WriteTxn<'_>,
    which: AuthzColl,
    incoming: Vec<RawDocumentBuf>,
    db: &str,
    drop: bool,
) -> CommandResult<()> {
    let name_field = match which {
        AuthzColl::Users => "user",
        AuthzColl::Roles => "role",
    };
    let in_scope = |d: &Document| db.is_empty() || d.get_str("db") == Ok(db);
    let mut incoming_ids = BTreeSet::new();
    let mut parsed = Vec::new();
    for raw in incoming {
        let d = raw
            .to_document()
            .map_err(|e| CommandError::failed_to_parse(format!("invalid authorization document: {e}")))?;
        let (Ok(id), Ok(_), Ok(_)) = (d.get_str("_id"), d.get_str(name_field), d.get_str("db")) else {
            return Err(CommandError::failed_to_parse(format!(
                "authorization document lacks a string _id, {name_field} or db: {d}"
            )));
        };
        if !in_scope(&d) {
            continue;
        }
        incoming_ids.insert(id.to_string());
        parsed.push((id.to_string(), raw));
    }
    let existing = match which {
        AuthzColl::Users => users::all_users(txn.catalog()),
        AuthzColl::Roles => users::all_roles(txn.catalog()),
    };
    let existing_ids: BTreeSet<String> = existing
        .iter()
        .filter(|d| in_scope(d))
        .filter_map(|d| d.get_str("_id").ok().map(str::to_string))
        .collect();
    if drop {
        for id in existing_ids.difference(&incoming_ids) {
            users::delete(txn, which, id)?;
        }
    }
    for (id, raw) in parsed {
        if existing_ids.contains(&id) {
            if drop {
                users::delete(txn, which, &id)?;
                users::insert_raw(txn, which, raw)?;
            }
        } else {
            users::insert_raw(txn, which, raw)?;
        }
    }
    Ok(())
}

/// `_mergeAuthzCollections {tempUsersCollection, tempRolesCollection, drop, db}`: installs the users and roles
/// mongorestore staged in temporary collections. With `drop: true` the users/roles in scope (database `db`, or
/// all when `db` is `""`) that are not in the temporary collections are removed and staged ones replace
/// existing ones; without it, staged users/roles that already exist are left as they are.
pub fn merge_authz_collections(ctx: &mut Ctx<'_>, req: &Request) -> CommandResult<Reply> {
    guard(ctx, req)?;
    let drop = get_bool(&req.body, "drop")?.unwrap_or(false);
    let db = match req.body.get("db") {
        None => String::new(),
        Some(Bson::String(s)) => s.clone(),
        Some(_) => {
            return Err(CommandError::type_mismatch(
                "BSON field '_mergeAuthzCollections.db' is the wrong type, expected type 'string'",
            ));
        }
    };
    let body = req.body.clone();
    ctx.server.engine.write(|txn| {
        let users_in = temp_docs(txn.catalog(), "tempUsersCollection", &body)?;
        let roles_in = temp_docs(txn.catalog(), "tempRolesCollection", &body)?;
        if users_in.is_none() && roles_in.is_none() {
            return Err(CommandError::bad_value(
                "Must provide at least one of \"tempUsersCollection\" and \"tempRolesCollection\"",
            ));
        }
        // Roles first, so users restored with them find their roles.
        if let Some(r) = roles_in {
            merge_one(txn, AuthzColl::Roles, r, &db, drop)?;
        }
        if let Some(u) = users_in {
            merge_one(txn, AuthzColl::Users, u, &db, drop)?;
        }
        Ok(())
    })?;
    Ok(ok_with(Document::new()))
}
