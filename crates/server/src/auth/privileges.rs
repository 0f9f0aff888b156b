//! MongoDB's privilege model: resources, actions, built-in roles, and what each command requires.
//!
//! A privilege is a resource pattern plus a set of action names (`find`, `insert`, `createIndex`, ...), written
//! in `admin.system.roles` as `{resource: {db, collection} | {cluster: true} | {anyResource: true}, actions}`.
//! The resource patterns match as the manual documents them: `{db: "x", collection: ""}` covers every
//! non-system collection of `x` and the database itself, `{db: "", collection: ""}` every non-system collection
//! of every database, `{db: "", collection: "c"}` collection `c` in any database, an exact pair only that
//! collection (the only way to reach a `system.*` collection apart from `anyResource`).
//!
//! Built-in roles ([`builtin_role_privileges`]) follow the manual's "Built-In Roles" page closely for the
//! actions the server implements. [`required_privileges`] maps a command invocation to the (resource, action)
//! pairs mongod checks for it; the table covers the commands this server runs, and an unlisted command only
//! needs an authenticated user (the registry decides whether it exists).

use std::collections::BTreeSet;

use bson::{Bson, Document, doc};

/// A resource pattern of a privilege.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// `{anyResource: true}`: everything, system collections and the cluster included.
    AnyResource,
    /// `{cluster: true}`: cluster-wide operations.
    Cluster,
    /// `{db: "", collection: ""}`: every database and its non-system collections.
    AnyNormal,
    /// `{db: "<db>", collection: ""}`: one database and its non-system collections.
    Database(String),
    /// `{db: "", collection: "<coll>"}`: a collection of that name in every database.
    CollectionInAnyDb(String),
    /// `{db: "<db>", collection: "<coll>"}`: exactly one collection.
    Collection(String, String),
}

/// What a command acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The cluster (server-wide commands).
    Cluster,
    /// A database as a whole.
    Database(String),
    /// Every database at once (commands such as `_mergeAuthzCollections` that may touch any of them).
    AnyDatabase,
    /// One collection.
    Collection(String, String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Cluster => f.write_str("cluster"),
            Target::Database(db) => write!(f, "database {db}"),
            Target::AnyDatabase => f.write_str("all databases"),
            Target::Collection(db, c) => write!(f, "{db}.{c}"),
        }
    }
}

fn is_system(coll: &str) -> bool {
    coll.starts_with("system.")
}

impl Resource {
    /// Whether this pattern covers `target` (the manual's matching rules, see the module docs).
    pub fn covers(&self, target: &Target) -> bool {
        match (self, target) {
            (Resource::AnyResource, _) => true,
            (Resource::Cluster, Target::Cluster) => true,
            (Resource::AnyNormal, Target::Database(_) | Target::AnyDatabase) => true,
            (Resource::AnyNormal, Target::Collection(_, c)) => !is_system(c),
            (Resource::Database(d), Target::Database(t)) => d == t,
            (Resource::Database(d), Target::Collection(t, c)) => d == t && !is_system(c),
            (Resource::CollectionInAnyDb(c), Target::Collection(_, t)) => c == t,
            (Resource::Collection(d, c), Target::Collection(td, tc)) => d == td && c == tc,
            _ => false,
        }
    }

    /// The stored form used in `admin.system.roles` and `rolesInfo`.
    pub fn to_document(&self) -> Document {
        match self {
            Resource::AnyResource => doc! { "anyResource": true },
            Resource::Cluster => doc! { "cluster": true },
            Resource::AnyNormal => doc! { "db": "", "collection": "" },
            Resource::Database(d) => doc! { "db": d.clone(), "collection": "" },
            Resource::CollectionInAnyDb(c) => doc! { "db": "", "collection": c.clone() },
            Resource::Collection(d, c) => doc! { "db": d.clone(), "collection": c.clone() },
        }
    }

    /// Parses the stored form; errors name the offending field.
    pub fn from_document(d: &Document) -> Result<Self, String> {
        if let Some(v) = d.get("anyResource") {
            return if v == &Bson::Boolean(true) && d.len() == 1 {
                Ok(Resource::AnyResource)
            } else {
                Err("resource 'anyResource' must be exactly {anyResource: true}".into())
            };
        }
        if let Some(v) = d.get("cluster") {
            return if v == &Bson::Boolean(true) && d.len() == 1 {
                Ok(Resource::Cluster)
            } else {
                Err("resource 'cluster' must be exactly {cluster: true}".into())
            };
        }
        let db = d
            .get_str("db")
            .map_err(|_| "resource needs a string 'db'".to_string())?;
        let coll = d
            .get_str("collection")
            .map_err(|_| "resource needs a string 'collection'".to_string())?;
        if d.len() != 2 {
            return Err("resource may only have 'db' and 'collection'".into());
        }
        Ok(match (db.is_empty(), coll.is_empty()) {
            (true, true) => Resource::AnyNormal,
            (false, true) => Resource::Database(db.to_string()),
            (true, false) => Resource::CollectionInAnyDb(coll.to_string()),
            (false, false) => Resource::Collection(db.to_string(), coll.to_string()),
        })
    }
}

/// A resource and the actions allowed on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Privilege {
    /// The resource pattern.
    pub resource: Resource,
    /// Action names.
    pub actions: BTreeSet<String>,
}

impl Privilege {
    /// Builds a privilege from a resource and action names.
    pub fn new(resource: Resource, actions: &[&str]) -> Self {
        Self {
            resource,
            actions: actions.iter().map(|a| (*a).to_string()).collect(),
        }
    }

    /// Whether this privilege allows `action` on `target`.
    pub fn allows(&self, target: &Target, action: &str) -> bool {
        (self.actions.contains(action) || self.actions.contains("anyAction")) && self.resource.covers(target)
    }

    /// The stored form `{resource, actions}`.
    pub fn to_document(&self) -> Document {
        doc! {
            "resource": self.resource.to_document(),
            "actions": self.actions.iter().cloned().map(Bson::String).collect::<Vec<_>>(),
        }
    }

    /// Parses the stored form `{resource, actions}`.
    pub fn from_document(d: &Document) -> Result<Self, String> {
        let resource = Resource::from_document(
            d.get_document("resource")
                .map_err(|_| "privilege needs a 'resource' object".to_string())?,
        )?;
        let actions = d
            .get_array("actions")
            .map_err(|_| "privilege needs an 'actions' array".to_string())?;
        let mut set = BTreeSet::new();
        for a in actions {
            match a {
                Bson::String(s) => {
                    set.insert(s.clone());
                }
                _ => return Err("privilege actions must be strings".into()),
            }
        }
        Ok(Self { resource, actions: set })
    }
}

/// Actions of the `read` role (manual: "read" built-in role).
const READ: &[&str] = &[
    "changeStream",
    "collStats",
    "dbHash",
    "dbStats",
    "find",
    "killCursors",
    "listCollections",
    "listIndexes",
    "listSearchIndexes",
];
/// Actions `readWrite` adds to [`READ`].
const WRITE: &[&str] = &[
    "convertToCapped",
    "createCollection",
    "createIndex",
    "createSearchIndexes",
    "dropCollection",
    "dropIndex",
    "dropSearchIndex",
    "insert",
    "remove",
    "renameCollectionSameDB",
    "update",
    "updateSearchIndex",
];
/// Actions of `dbAdmin` on the database's non-system collections.
const DB_ADMIN: &[&str] = &[
    "bypassDocumentValidation",
    "collMod",
    "collStats",
    "compact",
    "convertToCapped",
    "createCollection",
    "createIndex",
    "dbStats",
    "dropCollection",
    "dropDatabase",
    "dropIndex",
    "enableProfiler",
    "listCollections",
    "listIndexes",
    "planCacheIndexFilter",
    "planCacheRead",
    "planCacheWrite",
    "reIndex",
    "renameCollectionSameDB",
    "storageDetails",
    "validate",
];
/// Actions of `dbAdmin` on `system.profile`.
const DB_ADMIN_PROFILE: &[&str] = &[
    "changeStream",
    "collStats",
    "convertToCapped",
    "createCollection",
    "dbHash",
    "dbStats",
    "dropCollection",
    "find",
    "killCursors",
    "listCollections",
    "listIndexes",
    "planCacheRead",
];
/// Actions of `userAdmin` on its database.
const USER_ADMIN: &[&str] = &[
    "changeCustomData",
    "changePassword",
    "createRole",
    "createUser",
    "dropRole",
    "dropUser",
    "grantRole",
    "revokeRole",
    "setAuthenticationRestriction",
    "viewRole",
    "viewUser",
];
/// Cluster actions of `clusterMonitor`.
const CLUSTER_MONITOR: &[&str] = &[
    "connPoolStats",
    "getCmdLineOpts",
    "getDefaultRWConcern",
    "getLog",
    "getParameter",
    "getShardMap",
    "hostInfo",
    "inprog",
    "listDatabases",
    "listSessions",
    "listShards",
    "netstat",
    "replSetGetConfig",
    "replSetGetStatus",
    "serverStatus",
    "shardingState",
    "top",
];
/// Cluster actions of `clusterManager`.
const CLUSTER_MANAGER: &[&str] = &[
    "appendOplogNote",
    "applicationMessage",
    "cleanupOrphaned",
    "flushRouterConfig",
    "listSessions",
    "replSetConfigure",
    "replSetGetConfig",
    "replSetGetStatus",
    "replSetStateChange",
    "resync",
    "setFeatureCompatibilityVersion",
];
/// Cluster actions of `hostManager`.
const HOST_MANAGER: &[&str] = &[
    "applicationMessage",
    "connPoolSync",
    "flushRouterConfig",
    "fsync",
    "invalidateUserCache",
    "killAnyCursor",
    "killAnySession",
    "killop",
    "logRotate",
    "resync",
    "setParameter",
    "shutdown",
    "touch",
    "unlock",
];
/// Actions of `restore` on non-system collections (and what `_mergeAuthzCollections` needs).
const RESTORE: &[&str] = &[
    "bypassDocumentValidation",
    "changeCustomData",
    "changePassword",
    "collMod",
    "convertToCapped",
    "createCollection",
    "createIndex",
    "createRole",
    "createUser",
    "dropCollection",
    "dropRole",
    "dropUser",
    "grantRole",
    "insert",
    "revokeRole",
    "viewRole",
    "viewUser",
];

fn concat(parts: &[&[&'static str]]) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn db_role_privileges(role: &str, db: &str) -> Option<Vec<Privilege>> {
    let d = || Resource::Database(db.to_string());
    let c = |name: &str| Resource::Collection(db.to_string(), name.to_string());
    Some(match role {
        "read" => vec![Privilege::new(d(), READ), Privilege::new(c("system.js"), READ)],
        "readWrite" => {
            let rw = concat(&[READ, WRITE]);
            vec![Privilege::new(d(), &rw), Privilege::new(c("system.js"), &rw)]
        }
        "dbAdmin" => vec![
            Privilege::new(d(), DB_ADMIN),
            Privilege::new(c("system.profile"), DB_ADMIN_PROFILE),
        ],
        "userAdmin" => vec![Privilege::new(d(), USER_ADMIN)],
        "dbOwner" => {
            let mut v = db_role_privileges("readWrite", db)?;
            v.extend(db_role_privileges("dbAdmin", db)?);
            v.extend(db_role_privileges("userAdmin", db)?);
            v
        }
        _ => return None,
    })
}

fn admin_role_privileges(role: &str) -> Option<Vec<Privilege>> {
    let admin = |c: &str| Resource::Collection("admin".into(), c.into());
    let authz_read = &["collStats", "dbHash", "dbStats", "find", "killCursors", "planCacheRead"];
    Some(match role {
        "readAnyDatabase" => vec![
            Privilege::new(Resource::AnyNormal, READ),
            Privilege::new(Resource::CollectionInAnyDb("system.js".into()), READ),
            Privilege::new(Resource::Cluster, &["listDatabases"]),
        ],
        "readWriteAnyDatabase" => {
            let rw = concat(&[READ, WRITE]);
            vec![
                Privilege::new(Resource::AnyNormal, &rw),
                Privilege::new(Resource::CollectionInAnyDb("system.js".into()), &rw),
                Privilege::new(Resource::Cluster, &["listDatabases"]),
            ]
        }
        "userAdminAnyDatabase" => vec![
            Privilege::new(Resource::AnyNormal, USER_ADMIN),
            Privilege::new(
                Resource::Cluster,
                &["authSchemaUpgrade", "invalidateUserCache", "listDatabases"],
            ),
            Privilege::new(admin("system.users"), authz_read),
            Privilege::new(admin("system.roles"), authz_read),
            Privilege::new(admin("system.version"), authz_read),
        ],
        "dbAdminAnyDatabase" => vec![
            Privilege::new(Resource::AnyNormal, DB_ADMIN),
            Privilege::new(Resource::CollectionInAnyDb("system.profile".into()), DB_ADMIN_PROFILE),
            Privilege::new(Resource::Cluster, &["listDatabases"]),
        ],
        "clusterMonitor" => vec![
            Privilege::new(Resource::Cluster, CLUSTER_MONITOR),
            Privilege::new(
                Resource::AnyNormal,
                &["collStats", "dbStats", "getShardVersion", "indexStats"],
            ),
            Privilege::new(Resource::Collection("local".into(), "system.replset".into()), &["find"]),
        ],
        "clusterManager" => vec![
            Privilege::new(Resource::Cluster, CLUSTER_MANAGER),
            Privilege::new(Resource::Collection("local".into(), "system.replset".into()), READ),
        ],
        "hostManager" => vec![Privilege::new(Resource::Cluster, HOST_MANAGER)],
        "clusterAdmin" => {
            let mut v = admin_role_privileges("clusterManager")?;
            v.extend(admin_role_privileges("clusterMonitor")?);
            v.extend(admin_role_privileges("hostManager")?);
            v.push(Privilege::new(Resource::AnyNormal, &["dropDatabase"]));
            v
        }
        "backup" => vec![
            Privilege::new(
                Resource::AnyNormal,
                &[
                    "collStats",
                    "dbHash",
                    "dbStats",
                    "find",
                    "listCollections",
                    "listIndexes",
                ],
            ),
            // Authorization data, the oplog and other system collections mongodump reads.
            Privilege::new(
                Resource::AnyResource,
                &["find", "listCollections", "listIndexes", "collStats", "dbStats"],
            ),
            Privilege::new(
                Resource::Cluster,
                &[
                    "appendOplogNote",
                    "getParameter",
                    "listDatabases",
                    "serverStatus",
                    "setUserWriteBlockMode",
                ],
            ),
        ],
        "restore" => vec![
            Privilege::new(Resource::AnyNormal, RESTORE),
            Privilege::new(
                Resource::AnyNormal,
                &["listCollections", "listIndexes", "find", "dropDatabase"],
            ),
            Privilege::new(Resource::CollectionInAnyDb("system.js".into()), &concat(&[READ, WRITE])),
            Privilege::new(admin("system.users"), &concat(&[READ, WRITE])),
            Privilege::new(admin("system.roles"), &concat(&[READ, WRITE])),
            Privilege::new(admin("system.version"), &concat(&[READ, WRITE])),
            Privilege::new(Resource::Cluster, &["getParameter", "listDatabases"]),
        ],
        "root" => {
            let mut v = admin_role_privileges("readWriteAnyDatabase")?;
            v.extend(admin_role_privileges("dbAdminAnyDatabase")?);
            v.extend(admin_role_privileges("userAdminAnyDatabase")?);
            v.extend(admin_role_privileges("clusterAdmin")?);
            v.extend(admin_role_privileges("restore")?);
            v.extend(admin_role_privileges("backup")?);
            // root may act on system collections (validate, applyOps on any namespace, ...).
            v.push(Privilege::new(Resource::AnyResource, &["validate", "applyOps"]));
            v
        }
        _ => return None,
    })
}

/// The privileges of built-in role `role` defined on `db`, or `None` when no such built-in role exists there
/// (the `*AnyDatabase`, cluster and backup roles exist only on `admin`; database roles exist on every db).
pub fn builtin_role_privileges(role: &str, db: &str) -> Option<Vec<Privilege>> {
    if let Some(p) = db_role_privileges(role, db) {
        return Some(p);
    }
    if db == "admin" {
        admin_role_privileges(role)
    } else {
        None
    }
}

/// Whether `role@db` names a built-in role.
pub fn is_builtin_role(role: &str, db: &str) -> bool {
    builtin_role_privileges(role, db).is_some()
}

/// Names of the built-in roles defined on `db` (for `rolesInfo` with `showBuiltinRoles`).
pub fn builtin_role_names(db: &str) -> Vec<&'static str> {
    let mut v = vec!["dbAdmin", "dbOwner", "read", "readWrite", "userAdmin"];
    if db == "admin" {
        v.extend([
            "backup",
            "clusterAdmin",
            "clusterManager",
            "clusterMonitor",
            "dbAdminAnyDatabase",
            "hostManager",
            "readAnyDatabase",
            "readWriteAnyDatabase",
            "restore",
            "root",
            "userAdminAnyDatabase",
        ]);
    }
    v.sort_unstable();
    v
}

/// What running a command needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// Allowed without authentication.
    Nothing,
    /// Any authenticated user may run it.
    Authenticated,
    /// Every listed (target, action) pair must be allowed.
    Actions(Vec<(Target, &'static str)>),
    /// The command is about named users: when they are all the caller itself, the `own` actions suffice (none
    /// for reading one's own `usersInfo`); otherwise the `other` actions are needed.
    SelfOr {
        /// The `(user, db)` pairs the command is about.
        users: Vec<(String, String)>,
        /// What the caller needs when acting on itself.
        own: Vec<(Target, &'static str)>,
        /// What the caller needs otherwise.
        other: Vec<(Target, &'static str)>,
    },
}

/// Commands mongod runs without authentication.
const NO_AUTH: &[&str] = &[
    "hello",
    "isMaster",
    "ismaster",
    "buildInfo",
    "buildinfo",
    "saslStart",
    "saslContinue",
    "authenticate",
    "ping",
    "getnonce",
    "logout",
    "connectionStatus",
    "whatsmyuri",
    "endSessions",
    "getLastError",
    "listCommands",
];

fn ns_target(db: &str, body: &Document, command: &str) -> Target {
    match body.get(command) {
        Some(Bson::String(c)) => Target::Collection(db.to_string(), c.clone()),
        _ => Target::Database(db.to_string()),
    }
}

fn split_ns(ns: &str) -> Option<Target> {
    let (db, coll) = ns.split_once('.')?;
    if db.is_empty() || coll.is_empty() {
        return None;
    }
    Some(Target::Collection(db.to_string(), coll.to_string()))
}

fn role_dbs(body: &Document, field: &str, default_db: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(roles) = body.get_array(field) {
        for r in roles {
            let db = match r {
                Bson::Document(d) => d.get_str("db").unwrap_or(default_db).to_string(),
                _ => default_db.to_string(),
            };
            if !out.contains(&db) {
                out.push(db);
            }
        }
    }
    if out.is_empty() {
        out.push(default_db.to_string());
    }
    out
}

/// The privileges mongod checks before running `command` (the name as registered) on `db` with `body`.
pub fn required_privileges(command: &str, db: &str, body: &Document) -> Requirement {
    if NO_AUTH.contains(&command) {
        return Requirement::Nothing;
    }
    let coll = || ns_target(db, body, command);
    let dbt = || Target::Database(db.to_string());
    let one = |t: Target, a: &'static str| Requirement::Actions(vec![(t, a)]);
    match command {
        "find" | "count" | "distinct" | "mapReduce" => one(coll(), "find"),
        "dbHash" | "dbhash" => one(dbt(), "dbHash"),
        "getMore" => match body.get_str("collection") {
            Ok(c) => one(Target::Collection(db.to_string(), c.to_string()), "find"),
            Err(_) => one(dbt(), "find"),
        },
        "killCursors" => match body.get_str("killCursors") {
            Ok(c) => one(Target::Collection(db.to_string(), c.to_string()), "killCursors"),
            Err(_) => one(dbt(), "killCursors"),
        },
        "aggregate" => {
            let mut v = vec![(coll(), "find")];
            if let Ok(stages) = body.get_array("pipeline") {
                for s in stages {
                    let Bson::Document(stage) = s else { continue };
                    for key in ["$out", "$merge"] {
                        match stage.get(key) {
                            Some(Bson::String(c)) => {
                                let t = Target::Collection(db.to_string(), c.clone());
                                v.push((t.clone(), "insert"));
                                v.push((t, "remove"));
                            }
                            Some(Bson::Document(spec)) => {
                                let tdb = spec.get_str("db").unwrap_or(db).to_string();
                                let tc = match spec.get("coll").or_else(|| spec.get("into")) {
                                    Some(Bson::String(c)) => c.clone(),
                                    Some(Bson::Document(i)) => i.get_str("coll").unwrap_or_default().to_string(),
                                    _ => String::new(),
                                };
                                let t = Target::Collection(tdb, tc);
                                v.push((t.clone(), "insert"));
                                v.push((t, "remove"));
                            }
                            _ => {}
                        }
                    }
                    if stage.contains_key("$currentOp") {
                        v.push((Target::Cluster, "inprog"));
                    }
                }
            }
            Requirement::Actions(v)
        }
        "explain" => match body.get("explain") {
            // Explaining a command needs the privileges of the command explained.
            Some(Bson::Document(inner)) => match inner.keys().next() {
                Some(name) if name != "explain" => required_privileges(name, db, inner),
                _ => Requirement::Authenticated,
            },
            _ => Requirement::Authenticated,
        },
        "insert" => one(coll(), "insert"),
        "update" => one(coll(), "update"),
        "delete" => one(coll(), "remove"),
        "findAndModify" | "findandmodify" => {
            if matches!(body.get("remove"), Some(Bson::Boolean(true))) {
                Requirement::Actions(vec![(coll(), "find"), (coll(), "remove")])
            } else {
                Requirement::Actions(vec![(coll(), "find"), (coll(), "update")])
            }
        }
        "create" => one(coll(), "createCollection"),
        "drop" => one(coll(), "dropCollection"),
        "createIndexes" => one(coll(), "createIndex"),
        "dropIndexes" | "deleteIndexes" => one(coll(), "dropIndex"),
        "listIndexes" => one(coll(), "listIndexes"),
        "collMod" => one(coll(), "collMod"),
        "collStats" => one(coll(), "collStats"),
        "validate" => one(coll(), "validate"),
        "convertToCapped" => one(coll(), "convertToCapped"),
        "listCollections" => one(dbt(), "listCollections"),
        "dbStats" => one(dbt(), "dbStats"),
        "dropDatabase" => one(dbt(), "dropDatabase"),
        "renameCollection" => {
            let from = body.get_str("renameCollection").ok().and_then(split_ns);
            let to = body.get_str("to").ok().and_then(split_ns);
            match (from, to) {
                (Some(Target::Collection(fd, fc)), Some(Target::Collection(td, tc))) if fd == td => {
                    Requirement::Actions(vec![
                        (Target::Database(fd.clone()), "renameCollectionSameDB"),
                        (Target::Collection(fd, fc), "renameCollectionSameDB"),
                        (Target::Collection(td, tc), "renameCollectionSameDB"),
                    ])
                }
                (Some(from), Some(to)) => Requirement::Actions(vec![
                    (from.clone(), "find"),
                    (from, "dropCollection"),
                    (to.clone(), "insert"),
                    (to.clone(), "createIndex"),
                    (to, "createCollection"),
                ]),
                _ => Requirement::Actions(vec![(Target::Cluster, "anyAction")]),
            }
        }
        "listDatabases" => Requirement::Authenticated,
        "serverStatus" => one(Target::Cluster, "serverStatus"),
        "hostInfo" => one(Target::Cluster, "hostInfo"),
        "getCmdLineOpts" => one(Target::Cluster, "getCmdLineOpts"),
        "getParameter" => one(Target::Cluster, "getParameter"),
        "setParameter" => one(Target::Cluster, "setParameter"),
        "getLog" => one(Target::Cluster, "getLog"),
        "top" => one(Target::Cluster, "top"),
        "currentOp" => one(Target::Cluster, "inprog"),
        "killOp" => one(Target::Cluster, "killop"),
        "fsync" => one(Target::Cluster, "fsync"),
        "fsyncUnlock" => one(Target::Cluster, "unlock"),
        "shutdown" => one(Target::Cluster, "shutdown"),
        "logRotate" => one(Target::Cluster, "logRotate"),
        "replSetGetStatus" => one(Target::Cluster, "replSetGetStatus"),
        "replSetGetConfig" => one(Target::Cluster, "replSetGetConfig"),
        "replSetInitiate" | "replSetReconfig" => one(Target::Cluster, "replSetConfigure"),
        "replSetStepDown" | "replSetFreeze" => one(Target::Cluster, "replSetStateChange"),
        "appendOplogNote" => one(Target::Cluster, "appendOplogNote"),
        "setFeatureCompatibilityVersion" => one(Target::Cluster, "setFeatureCompatibilityVersion"),
        "applyOps" => one(Target::Cluster, "applyOps"),
        "createUser" => {
            let mut v = vec![(dbt(), "createUser")];
            for rdb in role_dbs(body, "roles", db) {
                v.push((Target::Database(rdb), "grantRole"));
            }
            Requirement::Actions(v)
        }
        "updateUser" => {
            // mongod: changing one's own password or custom data needs changeOwnPassword / changeOwnCustomData;
            // anything else, or another user, needs the general actions.
            let user = body.get_str("updateUser").unwrap_or_default().to_string();
            let mut general = Vec::new();
            let mut own = Vec::new();
            let mut own_possible = true;
            if body.contains_key("pwd") {
                general.push((dbt(), "changePassword"));
                own.push((dbt(), "changeOwnPassword"));
            }
            if body.contains_key("customData") {
                general.push((dbt(), "changeCustomData"));
                own.push((dbt(), "changeOwnCustomData"));
            }
            if body.contains_key("roles") {
                own_possible = false;
                for rdb in role_dbs(body, "roles", db) {
                    general.push((Target::Database(rdb.clone()), "grantRole"));
                    general.push((Target::Database(rdb), "revokeRole"));
                }
            }
            if body.contains_key("authenticationRestrictions") || body.contains_key("mechanisms") {
                own_possible = false;
                general.push((dbt(), "setAuthenticationRestriction"));
            }
            if general.is_empty() {
                general.push((dbt(), "changePassword"));
            }
            if own_possible {
                Requirement::SelfOr {
                    users: vec![(user, db.to_string())],
                    own,
                    other: general,
                }
            } else {
                Requirement::Actions(general)
            }
        }
        "dropUser" | "dropAllUsersFromDatabase" => one(dbt(), "dropUser"),
        "grantRolesToUser" => Requirement::Actions(
            role_dbs(body, "roles", db)
                .into_iter()
                .map(|d| (Target::Database(d), "grantRole"))
                .collect(),
        ),
        "revokeRolesFromUser" => Requirement::Actions(
            role_dbs(body, "roles", db)
                .into_iter()
                .map(|d| (Target::Database(d), "revokeRole"))
                .collect(),
        ),
        "usersInfo" => {
            let mut names = Vec::new();
            let mut dbs = vec![db.to_string()];
            match body.get("usersInfo") {
                Some(Bson::String(u)) => names.push((u.clone(), db.to_string())),
                Some(Bson::Document(d)) => {
                    if let (Ok(u), Ok(udb)) = (d.get_str("user"), d.get_str("db")) {
                        names.push((u.to_string(), udb.to_string()));
                        dbs = vec![udb.to_string()];
                    }
                }
                Some(Bson::Array(items)) => {
                    dbs.clear();
                    for item in items {
                        match item {
                            Bson::String(u) => {
                                names.push((u.clone(), db.to_string()));
                                dbs.push(db.to_string());
                            }
                            Bson::Document(d) => {
                                if let (Ok(u), Ok(udb)) = (d.get_str("user"), d.get_str("db")) {
                                    names.push((u.to_string(), udb.to_string()));
                                    dbs.push(udb.to_string());
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
            if matches!(body.get("forAllDBs"), Some(Bson::Boolean(true))) {
                return one(Target::AnyDatabase, "viewUser");
            }
            dbs.dedup();
            let acts = dbs.into_iter().map(|d| (Target::Database(d), "viewUser")).collect();
            if names.is_empty() {
                Requirement::Actions(acts)
            } else {
                Requirement::SelfOr {
                    users: names,
                    own: Vec::new(),
                    other: acts,
                }
            }
        }
        "createRole" => one(dbt(), "createRole"),
        "updateRole" => Requirement::Actions(vec![(dbt(), "grantRole"), (dbt(), "revokeRole")]),
        "dropRole" | "dropAllRolesFromDatabase" => one(dbt(), "dropRole"),
        "grantRolesToRole" | "grantPrivilegesToRole" => one(dbt(), "grantRole"),
        "revokeRolesFromRole" | "revokePrivilegesFromRole" => one(dbt(), "revokeRole"),
        "rolesInfo" => one(dbt(), "viewRole"),
        "_mergeAuthzCollections" => {
            let mut v: Vec<(Target, &'static str)> = [
                "createUser",
                "createRole",
                "grantRole",
                "revokeRole",
                "dropUser",
                "dropRole",
            ]
            .into_iter()
            .map(|a| (Target::AnyDatabase, a))
            .collect();
            for field in ["tempUsersCollection", "tempRolesCollection"] {
                if let Some(t) = body.get_str(field).ok().and_then(split_ns) {
                    v.push((t, "find"));
                }
            }
            Requirement::Actions(v)
        }
        _ => Requirement::Authenticated,
    }
}

/// Whether `privileges` allow `action` on `target`.
pub fn allowed(privileges: &[Privilege], target: &Target, action: &str) -> bool {
    privileges.iter().any(|p| p.allows(target, action))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coll(db: &str, c: &str) -> Target {
        Target::Collection(db.into(), c.into())
    }

    #[test]
    fn read_role_reads_but_does_not_write() {
        let p = builtin_role_privileges("read", "sales").unwrap();
        assert!(allowed(&p, &coll("sales", "orders"), "find"));
        assert!(!allowed(&p, &coll("sales", "orders"), "insert"));
        assert!(!allowed(&p, &coll("other", "orders"), "find"));
        // Normal resources exclude system collections, except the explicit system.js grant.
        assert!(!allowed(&p, &coll("sales", "system.users"), "find"));
        assert!(allowed(&p, &coll("sales", "system.js"), "find"));
    }

    #[test]
    fn any_database_roles_only_exist_on_admin() {
        assert!(builtin_role_privileges("readAnyDatabase", "test").is_none());
        assert!(builtin_role_privileges("root", "test").is_none());
        let p = builtin_role_privileges("readWriteAnyDatabase", "admin").unwrap();
        assert!(allowed(&p, &coll("x", "y"), "insert"));
        assert!(!allowed(&p, &coll("admin", "system.users"), "insert"));
    }

    #[test]
    fn root_covers_user_admin_and_cluster() {
        let p = builtin_role_privileges("root", "admin").unwrap();
        assert!(allowed(&p, &Target::Database("any".into()), "createUser"));
        assert!(allowed(&p, &Target::Cluster, "serverStatus"));
        assert!(allowed(&p, &coll("admin", "system.users"), "find"));
        assert!(allowed(&p, &Target::AnyDatabase, "dropRole"));
    }

    #[test]
    fn resource_documents_round_trip() {
        for r in [
            Resource::AnyResource,
            Resource::Cluster,
            Resource::AnyNormal,
            Resource::Database("a".into()),
            Resource::CollectionInAnyDb("c".into()),
            Resource::Collection("a".into(), "c".into()),
        ] {
            assert_eq!(Resource::from_document(&r.to_document()).unwrap(), r);
        }
        assert!(Resource::from_document(&doc! {"cluster": false}).is_err());
        assert!(Resource::from_document(&doc! {"db": 1, "collection": ""}).is_err());
    }

    #[test]
    fn command_requirements() {
        assert_eq!(
            required_privileges("hello", "admin", &doc! {"hello": 1}),
            Requirement::Nothing
        );
        assert_eq!(
            required_privileges("insert", "t", &doc! {"insert": "c"}),
            Requirement::Actions(vec![(coll("t", "c"), "insert")])
        );
        assert_eq!(
            required_privileges("getMore", "t", &doc! {"getMore": 5_i64, "collection": "c"}),
            Requirement::Actions(vec![(coll("t", "c"), "find")])
        );
    }
}
