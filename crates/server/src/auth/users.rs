//! Users and roles as stored documents: `admin.system.users` and `admin.system.roles` in MongoDB's shape.
//!
//! mongod keeps all users of all databases in `admin.system.users`, one document per user:
//! `{_id: "<db>.<user>", userId: UUID, user, db, credentials: {"SCRAM-SHA-1": {...}, "SCRAM-SHA-256": {...}},
//! [customData], roles: [{role, db}], [authenticationRestrictions]}`, and user-defined roles in
//! `admin.system.roles` as `{_id: "<db>.<role>", role, db, privileges: [{resource, actions}], roles: [...]}`.
//! Keeping exactly that shape is what lets mongodump/mongorestore move users between this server and mongod.
//! This module reads those collections through the engine, writes them through engine mutations (creating the
//! collections with mongod's unique `user_1_db_1` / `role_1_db_1` indexes on first use, and recording
//! `{_id: "authSchema", currentVersion: 5}` in `admin.system.version` as mongod does), and resolves a user's
//! roles, transitively, into privileges.

use std::collections::BTreeSet;

use bson::{Bson, Document, RawDocumentBuf, doc};

use super::privileges::{Privilege, builtin_role_privileges, is_builtin_role};
use super::scram::{Mechanism, ScramCredential};
use crate::engine::{Catalog, Engine, Mutation, Namespace, WriteTxn};
use crate::error::{CommandError, CommandResult};

/// The database holding all authorization data.
pub const ADMIN_DB: &str = "admin";
/// Collection of user documents in [`ADMIN_DB`].
pub const USERS_COLL: &str = "system.users";
/// Collection of user-defined role documents in [`ADMIN_DB`].
pub const ROLES_COLL: &str = "system.roles";
/// Collection holding the `authSchema` version document in [`ADMIN_DB`].
pub const VERSION_COLL: &str = "system.version";
/// The authorization schema version mongod 3.0+ uses (SCRAM credentials).
pub const AUTH_SCHEMA_VERSION: i32 = 5;

/// A `user@db` pair.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserName {
    /// User name.
    pub user: String,
    /// Authentication database.
    pub db: String,
}

impl UserName {
    /// Builds a user name.
    pub fn new(user: impl Into<String>, db: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            db: db.into(),
        }
    }

    /// The `_id` of the user's document: `"<db>.<user>"`.
    pub fn id(&self) -> String {
        format!("{}.{}", self.db, self.user)
    }

    /// `{user, db}`.
    pub fn to_document(&self) -> Document {
        doc! { "user": self.user.clone(), "db": self.db.clone() }
    }
}

impl std::fmt::Display for UserName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.user, self.db)
    }
}

/// A `role@db` pair.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoleName {
    /// Role name.
    pub role: String,
    /// Database the role is defined on.
    pub db: String,
}

impl RoleName {
    /// Builds a role name.
    pub fn new(role: impl Into<String>, db: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            db: db.into(),
        }
    }

    /// The `_id` of a user-defined role's document: `"<db>.<role>"`.
    pub fn id(&self) -> String {
        format!("{}.{}", self.db, self.role)
    }

    /// `{role, db}`.
    pub fn to_document(&self) -> Document {
        doc! { "role": self.role.clone(), "db": self.db.clone() }
    }

    /// Parses a role given as `"name"` (on `default_db`) or `{role, db}`, as user-management commands accept.
    pub fn parse(v: &Bson, default_db: &str) -> CommandResult<Self> {
        match v {
            Bson::String(s) => Ok(Self::new(s.clone(), default_db)),
            Bson::Document(d) => {
                let role = d.get_str("role").map_err(|_| {
                    CommandError::bad_value("Role names must be either strings or objects with 'role' and 'db' fields")
                })?;
                let db = d.get_str("db").map_err(|_| {
                    CommandError::bad_value("Role names must be either strings or objects with 'role' and 'db' fields")
                })?;
                Ok(Self::new(role, db))
            }
            _ => Err(CommandError::bad_value(
                "Role names must be either strings or objects with 'role' and 'db' fields",
            )),
        }
    }

    /// Parses an array of roles (field `field` of a command).
    pub fn parse_list(v: Option<&Bson>, field: &str, default_db: &str) -> CommandResult<Vec<Self>> {
        match v {
            Some(Bson::Array(items)) => {
                let mut out: Vec<Self> = Vec::new();
                for item in items {
                    let r = Self::parse(item, default_db)?;
                    if !out.contains(&r) {
                        out.push(r);
                    }
                }
                Ok(out)
            }
            Some(_) => Err(CommandError::type_mismatch(format!(
                "BSON field '{field}' is the wrong type, expected type 'array'"
            ))),
            None => Err(CommandError::missing_field(format!(
                "BSON field '{field}' is missing but a required field"
            ))),
        }
    }
}

impl std::fmt::Display for RoleName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.role, self.db)
    }
}

fn ns(coll: &str) -> Namespace {
    Namespace {
        db: ADMIN_DB.to_string(),
        coll: coll.to_string(),
    }
}

/// All documents of `admin.<coll>`, decoded; documents that do not decode are skipped.
fn all_docs(catalog: &Catalog, coll: &str) -> Vec<Document> {
    catalog
        .collection(&ns(coll))
        .map(|c| c.iter().filter_map(|(_, raw)| raw.to_document().ok()).collect())
        .unwrap_or_default()
}

fn find_by_id(catalog: &Catalog, coll: &str, id: &str) -> Option<Document> {
    let c = catalog.collection(&ns(coll))?;
    let (_, raw) = c.find_id(&Bson::String(id.to_string()))?;
    raw.to_document().ok()
}

/// The stored document of `name`, if the user exists.
pub fn find_user(catalog: &Catalog, name: &UserName) -> Option<Document> {
    find_by_id(catalog, USERS_COLL, &name.id())
}

/// The stored document of user-defined role `name`, if it exists.
pub fn find_role(catalog: &Catalog, name: &RoleName) -> Option<Document> {
    find_by_id(catalog, ROLES_COLL, &name.id())
}

/// Every user document.
pub fn all_users(catalog: &Catalog) -> Vec<Document> {
    all_docs(catalog, USERS_COLL)
}

/// Every user-defined role document.
pub fn all_roles(catalog: &Catalog) -> Vec<Document> {
    all_docs(catalog, ROLES_COLL)
}

/// Whether any user or user-defined role exists (the localhost exception applies only when none does).
pub fn any_user_or_role(catalog: &Catalog) -> bool {
    [USERS_COLL, ROLES_COLL]
        .iter()
        .any(|c| catalog.collection(&ns(c)).is_some_and(|c| !c.is_empty()))
}

/// Whether `name` is a built-in role or an existing user-defined role.
pub fn role_exists(catalog: &Catalog, name: &RoleName) -> bool {
    is_builtin_role(&name.role, &name.db) || find_role(catalog, name).is_some()
}

/// The `roles` array of a user or role document, skipping malformed entries.
pub fn roles_of(d: &Document) -> Vec<RoleName> {
    let mut out = Vec::new();
    if let Ok(roles) = d.get_array("roles") {
        for r in roles {
            if let Bson::Document(rd) = r
                && let (Ok(role), Ok(db)) = (rd.get_str("role"), rd.get_str("db"))
            {
                out.push(RoleName::new(role, db));
            }
        }
    }
    out
}

/// The stored SCRAM credential of a user document for `mechanism`, if present and well formed.
pub fn credential_of(user_doc: &Document, mechanism: Mechanism) -> Option<ScramCredential> {
    let creds = user_doc.get_document("credentials").ok()?;
    let c = creds.get_document(mechanism.name()).ok()?;
    ScramCredential::from_document(mechanism, c).ok()
}

/// The mechanisms a user document has credentials for, in mongod's order.
pub fn mechanisms_of(user_doc: &Document) -> Vec<Mechanism> {
    let Ok(creds) = user_doc.get_document("credentials") else {
        return Vec::new();
    };
    Mechanism::ALL
        .into_iter()
        .filter(|m| creds.contains_key(m.name()))
        .collect()
}

/// A user's roles resolved through role inheritance.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// Every role reached, directly or through other roles.
    pub roles: BTreeSet<RoleName>,
    /// The union of their privileges.
    pub privileges: Vec<Privilege>,
}

/// Resolves `roles` (and the roles they inherit from) into privileges. Unknown roles grant nothing.
pub fn resolve(catalog: &Catalog, roles: &[RoleName]) -> Resolved {
    let mut out = Resolved::default();
    let mut queue: Vec<RoleName> = roles.to_vec();
    while let Some(r) = queue.pop() {
        if !out.roles.insert(r.clone()) {
            continue;
        }
        if let Some(p) = builtin_role_privileges(&r.role, &r.db) {
            out.privileges.extend(p);
            continue;
        }
        if let Some(d) = find_role(catalog, &r) {
            if let Ok(privs) = d.get_array("privileges") {
                for p in privs {
                    if let Bson::Document(pd) = p
                        && let Ok(p) = Privilege::from_document(pd)
                    {
                        out.privileges.push(p);
                    }
                }
            }
            queue.extend(roles_of(&d));
        }
    }
    out
}

/// A random v4 UUID as BSON binary subtype 4 (the `userId` of a user document).
pub fn new_user_id() -> Bson {
    Bson::Binary(bson::Binary {
        subtype: bson::spec::BinarySubtype::Uuid,
        bytes: crate::engine::new_uuid().to_vec(),
    })
}

fn ensure_collection(txn: &mut WriteTxn<'_>, coll: &str, unique_key: Option<(&str, &str)>) -> CommandResult<()> {
    // Changes to authorization data are rare and must not be lost: make the batch durable before replying, as
    // mongod's user-management commands wait for their (majority) write concern.
    txn.set_sync(true);
    let namespace = ns(coll);
    if txn.catalog().collection(&namespace).is_some() {
        return Ok(());
    }
    txn.apply(Mutation::CreateCollection {
        ns: namespace.clone(),
        uuid: crate::engine::new_uuid(),
        options: Document::new(),
    })?;
    if let Some((field, name)) = unique_key {
        txn.apply(Mutation::CreateIndex {
            ns: namespace,
            spec: doc! { "v": 2, "unique": true, "key": { field: 1, "db": 1 }, "name": name },
        })?;
    }
    Ok(())
}

fn ensure_auth_schema(txn: &mut WriteTxn<'_>) -> CommandResult<()> {
    ensure_collection(txn, VERSION_COLL, None)?;
    let present = txn
        .catalog()
        .collection(&ns(VERSION_COLL))
        .is_some_and(|c| c.find_id(&Bson::String("authSchema".into())).is_some());
    if !present {
        txn.apply(Mutation::Insert {
            ns: ns(VERSION_COLL),
            doc: to_raw(&doc! { "_id": "authSchema", "currentVersion": AUTH_SCHEMA_VERSION })?,
        })?;
    }
    Ok(())
}

fn to_raw(d: &Document) -> CommandResult<RawDocumentBuf> {
    RawDocumentBuf::from_document(d).map_err(|e| CommandError::internal(format!("cannot encode document: {e}")))
}

/// Which authorization collection a write goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthzColl {
    /// `admin.system.users`.
    Users,
    /// `admin.system.roles`.
    Roles,
}

impl AuthzColl {
    fn coll(self) -> &'static str {
        match self {
            AuthzColl::Users => USERS_COLL,
            AuthzColl::Roles => ROLES_COLL,
        }
    }

    fn unique_key(self) -> (&'static str, &'static str) {
        match self {
            AuthzColl::Users => ("user", "user_1_db_1"),
            AuthzColl::Roles => ("role", "role_1_db_1"),
        }
    }
}

/// Inserts a new user or role document (creating the collection and the auth schema document first).
pub fn insert(txn: &mut WriteTxn<'_>, which: AuthzColl, d: &Document) -> CommandResult<()> {
    insert_raw(txn, which, to_raw(d)?)
}

/// Inserts a user or role document as given (byte for byte).
pub fn insert_raw(txn: &mut WriteTxn<'_>, which: AuthzColl, d: RawDocumentBuf) -> CommandResult<()> {
    ensure_auth_schema(txn)?;
    ensure_collection(txn, which.coll(), Some(which.unique_key()))?;
    txn.apply(Mutation::Insert {
        ns: ns(which.coll()),
        doc: d,
    })
}

/// Replaces the user or role document with the same `_id`.
pub fn replace(txn: &mut WriteTxn<'_>, which: AuthzColl, d: &Document) -> CommandResult<()> {
    ensure_collection(txn, which.coll(), Some(which.unique_key()))?;
    txn.apply(Mutation::Upsert {
        ns: ns(which.coll()),
        doc: to_raw(d)?,
    })
}

/// Deletes the user or role document with `_id` `id`; returns whether it existed.
pub fn delete(txn: &mut WriteTxn<'_>, which: AuthzColl, id: &str) -> CommandResult<bool> {
    txn.set_sync(true);
    let namespace = ns(which.coll());
    let exists = txn
        .catalog()
        .collection(&namespace)
        .is_some_and(|c| c.find_id(&Bson::String(id.to_string())).is_some());
    if exists {
        txn.apply(Mutation::Delete {
            ns: namespace,
            id: Bson::String(id.to_string()),
        })?;
    }
    Ok(exists)
}

/// Reads the catalog through `engine` (shorthand used by the command handlers).
pub fn read<R>(engine: &Engine, f: impl FnOnce(&Catalog) -> R) -> R {
    engine.read(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_parse_both_forms() {
        assert_eq!(
            RoleName::parse(&Bson::String("read".into()), "test").unwrap(),
            RoleName::new("read", "test")
        );
        let d = Bson::Document(doc! {"role": "root", "db": "admin"});
        assert_eq!(RoleName::parse(&d, "test").unwrap(), RoleName::new("root", "admin"));
        assert!(RoleName::parse(&Bson::Int32(1), "test").is_err());
        assert!(RoleName::parse_list(None, "createUser.roles", "test").is_err());
    }

    #[test]
    fn writes_create_collections_in_mongod_shape() {
        let engine = Engine::new();
        let user = doc! { "_id": "test.u", "user": "u", "db": "test", "credentials": {}, "roles": [ {"role": "read", "db": "test"} ] };
        engine.write(|txn| insert(txn, AuthzColl::Users, &user)).unwrap();
        engine.read(|cat| {
            let found = find_user(cat, &UserName::new("u", "test")).unwrap();
            assert_eq!(found, user);
            let version = find_by_id(cat, VERSION_COLL, "authSchema").unwrap();
            assert_eq!(version.get_i32("currentVersion").unwrap(), 5);
            let specs = cat.collection(&ns(USERS_COLL)).unwrap().index_specs();
            assert!(specs.iter().any(|s| s.get_str("name") == Ok("user_1_db_1")));
            assert!(any_user_or_role(cat));
        });
        // The unique index on {user, db} rejects a second document for the same user.
        let dup = doc! { "_id": "other", "user": "u", "db": "test", "credentials": {}, "roles": [] };
        let err = engine.write(|txn| insert(txn, AuthzColl::Users, &dup)).unwrap_err();
        assert_eq!(err.code, 11000);
    }

    #[test]
    fn resolve_follows_user_defined_roles() {
        let engine = Engine::new();
        let role = doc! {
            "_id": "admin.manageOpRole", "role": "manageOpRole", "db": "admin",
            "privileges": [ { "resource": { "cluster": true }, "actions": ["inprog", "killop"] } ],
            "roles": [ { "role": "read", "db": "reporting" } ],
        };
        engine.write(|txn| insert(txn, AuthzColl::Roles, &role)).unwrap();
        let resolved = engine.read(|cat| resolve(cat, &[RoleName::new("manageOpRole", "admin")]));
        use super::super::privileges::{Target, allowed};
        assert!(allowed(&resolved.privileges, &Target::Cluster, "killop"));
        assert!(allowed(
            &resolved.privileges,
            &Target::Collection("reporting".into(), "x".into()),
            "find"
        ));
        assert!(!allowed(
            &resolved.privileges,
            &Target::Collection("reporting".into(), "x".into()),
            "insert"
        ));
        assert!(resolved.roles.contains(&RoleName::new("read", "reporting")));
    }
}
