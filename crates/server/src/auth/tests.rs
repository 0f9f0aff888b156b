//! Command-level tests of authentication and authorization through the dispatcher, with `--auth` on.

use std::sync::Arc;

use bson::{Bson, Document, doc};

use super::privileges::Target;
use super::scram::{Mechanism, ScramCredential};
use crate::commands::{ConnectionState, Ctx, Request, ServerState, dispatch};
use crate::config::ServerConfig;
use crate::engine::{Engine, Mutation, Namespace};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/mongo-tools/mongorestore/testdata/usersdump/admin"
);

fn server() -> ServerState {
    let config = ServerConfig {
        auth: true,
        ..ServerConfig::ephemeral()
    };
    ServerState::new(config, Arc::new(Engine::new()))
}

fn conn(peer: &str) -> ConnectionState {
    ConnectionState {
        peer: Some(peer.parse().unwrap()),
        ..ConnectionState::default()
    }
}

fn run(server: &ServerState, conn: &mut ConnectionState, db: &str, body: Document) -> Document {
    let req = Request::from_document(db, body).unwrap();
    let mut ctx = Ctx { server, conn };
    dispatch(&mut ctx, &req).to_document().unwrap()
}

fn code(reply: &Document) -> Option<i32> {
    reply.get_i32("code").ok()
}

fn is_ok(reply: &Document) -> bool {
    reply.get_f64("ok") == Ok(1.0)
}

/// Logs `user@db` in by setting the connection state directly (the SASL exchange itself is covered by the
/// driver tests).
fn login(server: &ServerState, conn: &mut ConnectionState, user: &str, db: &str) {
    conn.auth
        .set_authenticated(super::UserName::new(user, db), server.engine.clone());
}

#[test]
fn localhost_exception_allows_only_the_first_user_on_admin() {
    let s = server();
    let mut remote = conn("10.1.2.3:5000");
    let r = run(
        &s,
        &mut remote,
        "admin",
        doc! {"createUser": "root", "pwd": "pw", "roles": ["root"]},
    );
    assert_eq!(code(&r), Some(13), "{r}");

    let mut local = conn("127.0.0.1:5000");
    let r = run(
        &s,
        &mut local,
        "test",
        doc! {"createUser": "x", "pwd": "pw", "roles": []},
    );
    assert_eq!(code(&r), Some(13), "the exception only covers the admin database: {r}");
    let r = run(
        &s,
        &mut local,
        "admin",
        doc! {"createUser": "root", "pwd": "pw", "roles": ["root"]},
    );
    assert!(is_ok(&r), "{r}");
    // Closed once a user exists.
    let r = run(
        &s,
        &mut local,
        "admin",
        doc! {"createUser": "second", "pwd": "pw", "roles": ["root"]},
    );
    assert_eq!(code(&r), Some(13), "{r}");
    assert_eq!(
        r.get_str("errmsg").unwrap(),
        "command createUser requires authentication"
    );
}

#[test]
fn unauthenticated_commands_follow_mongod() {
    let s = server();
    let mut c = conn("127.0.0.1:1");
    for body in [
        doc! {"hello": 1},
        doc! {"isMaster": 1},
        doc! {"ping": 1},
        doc! {"buildInfo": 1},
        doc! {"connectionStatus": 1},
    ] {
        let r = run(&s, &mut c, "admin", body.clone());
        assert!(is_ok(&r), "{body}: {r}");
    }
    let r = run(&s, &mut c, "test", doc! {"find": "c", "filter": {}});
    assert_eq!(code(&r), Some(13));
    assert_eq!(r.get_str("codeName").unwrap(), "Unauthorized");
    assert_eq!(r.get_str("errmsg").unwrap(), "command find requires authentication");
    let r = run(&s, &mut c, "admin", doc! {"connectionStatus": 1});
    assert_eq!(
        r.get_document("authInfo")
            .unwrap()
            .get_array("authenticatedUsers")
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn roles_gate_commands() {
    let s = server();
    let mut admin = conn("127.0.0.1:1");
    assert!(is_ok(&run(
        &s,
        &mut admin,
        "admin",
        doc! {"createUser": "root", "pwd": "pw", "roles": ["root"]}
    )));
    login(&s, &mut admin, "root", "admin");
    let r = run(
        &s,
        &mut admin,
        "app",
        doc! {"createUser": "reader", "pwd": "pw", "roles": ["read"]},
    );
    assert!(is_ok(&r), "{r}");
    let r = run(
        &s,
        &mut admin,
        "app",
        doc! {"createUser": "writer", "pwd": "pw", "roles": [{"role": "readWrite", "db": "app"}]},
    );
    assert!(is_ok(&r), "{r}");

    let mut reader = conn("127.0.0.1:2");
    login(&s, &mut reader, "reader", "app");
    let r = run(&s, &mut reader, "app", doc! {"insert": "c", "documents": [{"a": 1}]});
    assert_eq!(code(&r), Some(13));
    assert!(
        r.get_str("errmsg")
            .unwrap()
            .starts_with("not authorized on app to execute command { insert: \"c\""),
        "{r}"
    );
    // Another database is out of reach even for reading.
    let r = run(&s, &mut reader, "other", doc! {"find": "c"});
    assert_eq!(code(&r), Some(13));
    // A user may look at itself without viewUser.
    let r = run(&s, &mut reader, "app", doc! {"usersInfo": "reader"});
    assert!(is_ok(&r), "{r}");
    let r = run(&s, &mut reader, "app", doc! {"usersInfo": "writer"});
    assert_eq!(code(&r), Some(13));
    // Changing one's own password needs changeOwnPassword, which `read` does not grant (manual: updateUser).
    let r = run(&s, &mut reader, "app", doc! {"updateUser": "reader", "pwd": "new"});
    assert_eq!(code(&r), Some(13), "{r}");
    let own = doc! {"resource": {"db": "app", "collection": ""}, "actions": ["changeOwnPassword"]};
    assert!(is_ok(&run(
        &s,
        &mut admin,
        "app",
        doc! {"createRole": "selfService", "privileges": [own], "roles": []}
    )));
    assert!(is_ok(&run(
        &s,
        &mut admin,
        "app",
        doc! {"grantRolesToUser": "reader", "roles": ["selfService"]}
    )));
    let r = run(&s, &mut reader, "app", doc! {"updateUser": "reader", "pwd": "new"});
    assert!(is_ok(&r), "{r}");
    let r = run(&s, &mut reader, "app", doc! {"updateUser": "writer", "pwd": "new"});
    assert_eq!(code(&r), Some(13), "{r}");

    // Granting a role takes effect on an already authenticated connection.
    let r = run(
        &s,
        &mut admin,
        "app",
        doc! {"grantRolesToUser": "reader", "roles": ["readWrite"]},
    );
    assert!(is_ok(&r), "{r}");
    assert!(super::is_allowed(
        &reader.auth,
        &Target::Collection("app".into(), "c".into()),
        "insert"
    ));
    // Dropping the user removes its privileges at once.
    assert!(is_ok(&run(&s, &mut admin, "app", doc! {"dropUser": "reader"})));
    assert!(!super::is_allowed(
        &reader.auth,
        &Target::Collection("app".into(), "c".into()),
        "find"
    ));
    let r = run(&s, &mut admin, "app", doc! {"dropUser": "reader"});
    assert_eq!(code(&r), Some(11), "{r}");
    assert_eq!(r.get_str("codeName").unwrap(), "UserNotFound");
}

#[test]
fn create_user_validation() {
    let s = server();
    let mut c = conn("127.0.0.1:1");
    let cases: Vec<(Document, i32)> = vec![
        (doc! {"createUser": "a", "pwd": "pw"}, 40414),
        (doc! {"createUser": "a", "roles": []}, 2),
        (doc! {"createUser": "a", "pwd": "pw", "roles": ["noSuchRole"]}, 31),
        (
            doc! {"createUser": "a", "pwd": "pw", "roles": [], "mechanisms": ["PLAIN"]},
            2,
        ),
        (
            doc! {"createUser": "a", "pwd": "pw", "roles": [], "mechanisms": ["SCRAM-SHA-256"], "digestPassword": false},
            2,
        ),
    ];
    for (body, expected) in cases {
        let r = run(&s, &mut c, "admin", body.clone());
        assert_eq!(code(&r), Some(expected), "{body}: {r}");
    }
    assert!(is_ok(&run(
        &s,
        &mut c,
        "admin",
        doc! {"createUser": "a", "pwd": "pw", "roles": ["root"]}
    )));
    login(&s, &mut c, "a", "admin");
    let r = run(&s, &mut c, "admin", doc! {"createUser": "a", "pwd": "pw", "roles": []});
    assert_eq!(code(&r), Some(51003));
    assert_eq!(r.get_str("errmsg").unwrap(), "User \"a@admin\" already exists");
}

#[test]
fn stored_user_has_mongod_shape_and_usable_credentials() {
    let s = server();
    let mut c = conn("127.0.0.1:1");
    let r = run(
        &s,
        &mut c,
        "admin",
        doc! {"createUser": "u", "pwd": "pencil", "roles": ["root"], "customData": {"k": 1}},
    );
    assert!(is_ok(&r), "{r}");
    let stored = s
        .engine
        .read(|cat| super::users::find_user(cat, &super::UserName::new("u", "admin")))
        .unwrap();
    let keys: Vec<&str> = stored.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["_id", "userId", "user", "db", "credentials", "customData", "roles"]
    );
    assert_eq!(stored.get_str("_id").unwrap(), "admin.u");
    match stored.get("userId") {
        Some(Bson::Binary(b)) => assert_eq!((b.subtype, b.bytes.len()), (bson::spec::BinarySubtype::Uuid, 16)),
        other => panic!("userId: {other:?}"),
    }
    // Re-deriving from the stored salt and iteration count gives the stored keys.
    for m in Mechanism::ALL {
        let cred = super::users::credential_of(&stored, m).unwrap();
        assert_eq!(cred.iteration_count, m.default_iterations());
        let input = super::scram::password_input(m, "u", "pencil").unwrap();
        let again = ScramCredential::derive_from_input(m, input.as_bytes(), &cred.salt, cred.iteration_count);
        assert_eq!(again, cred);
    }
    let r = run(&s, &mut c, "admin", doc! {"hello": 1, "saslSupportedMechs": "admin.u"});
    let mechs: Vec<&str> = r
        .get_array("saslSupportedMechs")
        .unwrap()
        .iter()
        .filter_map(Bson::as_str)
        .collect();
    assert_eq!(mechs, ["SCRAM-SHA-1", "SCRAM-SHA-256"]);
    let r = run(
        &s,
        &mut c,
        "admin",
        doc! {"hello": 1, "saslSupportedMechs": "admin.nobody"},
    );
    assert!(!r.contains_key("saslSupportedMechs"));
}

fn fixture_docs(file: &str) -> Vec<bson::RawDocumentBuf> {
    let bytes = std::fs::read(format!("{FIXTURES}/{file}")).unwrap();
    let mut out = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 4 {
        let len = usize::try_from(i32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]])).unwrap();
        out.push(bson::RawDocumentBuf::from_bytes(rest[..len].to_vec()).unwrap());
        rest = &rest[len..];
    }
    out
}

#[test]
fn merge_authz_collections_installs_a_real_dump() {
    let s = server();
    let users = fixture_docs("system.users.bson");
    let roles = fixture_docs("system.roles.bson");
    assert_eq!((users.len(), roles.len()), (1, 1));
    // Stage them as mongorestore does, in admin.tempusers / admin.temproles.
    s.engine
        .write(|txn| {
            for (coll, docs) in [("tempusers", &users), ("temproles", &roles)] {
                let ns = Namespace::new("admin", coll)?;
                txn.apply(Mutation::CreateCollection {
                    ns: ns.clone(),
                    uuid: crate::engine::new_uuid(),
                    options: doc! {},
                })?;
                for d in docs.iter() {
                    txn.apply(Mutation::Insert {
                        ns: ns.clone(),
                        doc: d.clone(),
                    })?;
                }
            }
            Ok(())
        })
        .unwrap();
    let mut c = conn("127.0.0.1:1");
    // Without a user the command needs authentication (it is not covered by the localhost exception).
    let merge = doc! {
        "_mergeAuthzCollections": 1, "tempUsersCollection": "admin.tempusers", "tempRolesCollection": "admin.temproles",
        "drop": false, "db": "", "writeConcern": {"w": "majority"},
    };
    assert_eq!(code(&run(&s, &mut c, "admin", merge.clone())), Some(13));
    assert!(is_ok(&run(
        &s,
        &mut c,
        "admin",
        doc! {"createUser": "restorer", "pwd": "pw", "roles": ["restore"]}
    )));
    login(&s, &mut c, "restorer", "admin");
    let r = run(&s, &mut c, "admin", merge);
    assert!(is_ok(&r), "{r}");

    // The user document is stored byte for byte, and its credentials parse as SCRAM credentials with
    // mongod's salt sizes.
    let stored = s.engine.read(|cat| {
        let c = cat
            .collection(&Namespace::new("admin", "system.users").unwrap())
            .unwrap();
        c.find_id(&Bson::String("admin.reportsUser".into()))
            .map(|(_, d)| d.clone())
    });
    assert_eq!(stored.as_ref(), Some(&users[0]));
    let user = users[0].to_document().unwrap();
    let sha1 = super::users::credential_of(&user, Mechanism::ScramSha1).unwrap();
    let sha256 = super::users::credential_of(&user, Mechanism::ScramSha256).unwrap();
    assert_eq!(
        (sha1.salt.len(), sha1.iteration_count),
        (Mechanism::ScramSha1.salt_len(), 10000)
    );
    assert_eq!(
        (sha256.salt.len(), sha256.iteration_count),
        (Mechanism::ScramSha256.salt_len(), 15000)
    );

    let r = run(
        &s,
        &mut c,
        "admin",
        doc! {"usersInfo": "reportsUser", "showPrivileges": true},
    );
    let u = r.get_array("users").unwrap()[0].as_document().unwrap().clone();
    assert_eq!(u.get_array("roles").unwrap().len(), 4);
    assert!(!u.contains_key("credentials"));
    let r = run(
        &s,
        &mut c,
        "admin",
        doc! {"rolesInfo": "manageOpRole", "showPrivileges": true},
    );
    let role = r.get_array("roles").unwrap()[0].as_document().unwrap().clone();
    assert!(!role.get_bool("isBuiltin").unwrap());
    assert_eq!(role.get_array("privileges").unwrap().len(), 2);

    // The restored role grants what its document says.
    assert!(is_ok(&run(
        &s,
        &mut c,
        "admin",
        doc! {"grantRolesToUser": "restorer", "roles": ["manageOpRole"]}
    )));
    assert!(super::is_allowed(&c.auth, &Target::Cluster, "killop"));
}

#[test]
fn merge_with_drop_replaces_the_user_set() {
    let s = server();
    let mut c = conn("127.0.0.1:1");
    assert!(is_ok(&run(
        &s,
        &mut c,
        "admin",
        doc! {"createUser": "root", "pwd": "pw", "roles": ["root"]}
    )));
    login(&s, &mut c, "root", "admin");
    assert!(is_ok(&run(
        &s,
        &mut c,
        "app",
        doc! {"createUser": "old", "pwd": "pw", "roles": ["read"]}
    )));
    let users = fixture_docs("system.users.bson");
    s.engine
        .write(|txn| {
            let ns = Namespace::new("admin", "tempusers")?;
            txn.apply(Mutation::CreateCollection {
                ns: ns.clone(),
                uuid: crate::engine::new_uuid(),
                options: doc! {},
            })?;
            txn.apply(Mutation::Insert {
                ns,
                doc: users[0].clone(),
            })
        })
        .unwrap();
    let r = run(
        &s,
        &mut c,
        "admin",
        doc! {"_mergeAuthzCollections": 1, "tempUsersCollection": "admin.tempusers", "drop": true, "db": "app"},
    );
    assert!(is_ok(&r), "{r}");
    let names: Vec<String> = s.engine.read(|cat| {
        super::users::all_users(cat)
            .iter()
            .map(|d| d.get_str("_id").unwrap().to_string())
            .collect()
    });
    // Only users of "app" were in scope: the app user is gone, admin users are kept, and the staged admin
    // user is outside the scope and not installed.
    assert_eq!(names, ["admin.root"]);
}

#[test]
fn user_defined_roles() {
    let s = server();
    let mut c = conn("127.0.0.1:1");
    assert!(is_ok(&run(
        &s,
        &mut c,
        "admin",
        doc! {"createUser": "root", "pwd": "pw", "roles": ["root"]}
    )));
    login(&s, &mut c, "root", "admin");
    let r = run(
        &s,
        &mut c,
        "app",
        doc! {"createRole": "inserter", "privileges": [{"resource": {"db": "app", "collection": "log"}, "actions": ["insert"]}], "roles": []},
    );
    assert!(is_ok(&r), "{r}");
    let r = run(
        &s,
        &mut c,
        "app",
        doc! {"createRole": "bad", "privileges": [{"resource": {"cluster": true}, "actions": ["inprog"]}], "roles": []},
    );
    assert_eq!(code(&r), Some(49), "{r}");
    let r = run(
        &s,
        &mut c,
        "app",
        doc! {"createRole": "read", "privileges": [], "roles": []},
    );
    assert_eq!(code(&r), Some(2), "{r}");
    assert!(is_ok(&run(
        &s,
        &mut c,
        "app",
        doc! {"createUser": "w", "pwd": "pw", "roles": ["inserter"]}
    )));
    let mut w = conn("127.0.0.1:2");
    login(&s, &mut w, "w", "app");
    assert!(super::is_allowed(
        &w.auth,
        &Target::Collection("app".into(), "log".into()),
        "insert"
    ));
    assert!(!super::is_allowed(
        &w.auth,
        &Target::Collection("app".into(), "other".into()),
        "insert"
    ));
    let r = run(&s, &mut c, "app", doc! {"rolesInfo": 1, "showBuiltinRoles": true});
    let names: Vec<&str> = r
        .get_array("roles")
        .unwrap()
        .iter()
        .filter_map(|d| d.as_document()?.get_str("role").ok())
        .collect();
    assert!(names.contains(&"inserter") && names.contains(&"readWrite"), "{names:?}");
    assert!(is_ok(&run(&s, &mut c, "app", doc! {"dropRole": "inserter"})));
    assert!(!super::is_allowed(
        &w.auth,
        &Target::Collection("app".into(), "log".into()),
        "insert"
    ));
    let r = run(&s, &mut c, "app", doc! {"usersInfo": "w"});
    assert_eq!(
        r.get_array("users").unwrap()[0]
            .as_document()
            .unwrap()
            .get_array("roles")
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn get_parameter_reports_auth_schema_version_5() {
    let s = ServerState::new(ServerConfig::ephemeral(), Arc::new(Engine::new()));
    let mut c = conn("127.0.0.1:1");
    let r = run(&s, &mut c, "admin", doc! {"getParameter": 1, "authSchemaVersion": 1});
    assert_eq!(r.get_i32("authSchemaVersion").ok(), Some(5), "{r}");
}

#[test]
fn unauthorized_message_renders_the_command_like_mongod() {
    let s = server();
    let mut c = conn("127.0.0.1:1");
    assert!(is_ok(&run(
        &s,
        &mut c,
        "admin",
        doc! {"createUser": "root", "pwd": "pw", "roles": ["root"]}
    )));
    login(&s, &mut c, "root", "admin");
    assert!(is_ok(&run(
        &s,
        &mut c,
        "app",
        doc! {"createUser": "reader", "pwd": "pw", "roles": ["read"]}
    )));
    let mut reader = conn("127.0.0.1:2");
    login(&s, &mut reader, "reader", "app");
    let id = uuid::Uuid::parse_str("07e7b998-a2d7-43c3-92ea-70033ad20e7c").unwrap();
    let lsid = bson::Binary {
        subtype: bson::spec::BinarySubtype::Uuid,
        bytes: id.as_bytes().to_vec(),
    };
    let r = run(
        &s,
        &mut reader,
        "admin",
        doc! {"find": "system.users", "filter": {}, "lsid": {"id": lsid}, "$db": "admin"},
    );
    // The shape of a real mongod message for the same command.
    assert_eq!(
        r.get_str("errmsg").unwrap(),
        "not authorized on admin to execute command { find: \"system.users\", filter: {}, lsid: { id: \
         UUID(\"07e7b998-a2d7-43c3-92ea-70033ad20e7c\") }, $db: \"admin\" }"
    );
}

#[test]
fn role_privilege_and_inheritance_commands() {
    let s = server();
    let mut c = conn("127.0.0.1:1");
    assert!(is_ok(&run(
        &s,
        &mut c,
        "admin",
        doc! {"createUser": "root", "pwd": "pw", "roles": ["root"]}
    )));
    login(&s, &mut c, "root", "admin");
    for role in ["a", "b"] {
        let r = run(
            &s,
            &mut c,
            "app",
            doc! {"createRole": role, "privileges": [], "roles": []},
        );
        assert!(is_ok(&r), "{r}");
    }
    assert!(is_ok(&run(
        &s,
        &mut c,
        "app",
        doc! {"grantRolesToRole": "a", "roles": ["b"]}
    )));
    // b -> a would close a cycle.
    let r = run(&s, &mut c, "app", doc! {"grantRolesToRole": "b", "roles": ["a"]});
    assert_eq!(r.get_str("codeName").ok(), Some("InvalidRoleModification"), "{r}");
    let log = doc! {"resource": {"db": "app", "collection": "log"}, "actions": ["insert", "find"]};
    assert!(is_ok(&run(
        &s,
        &mut c,
        "app",
        doc! {"grantPrivilegesToRole": "b", "privileges": [log]}
    )));
    assert!(is_ok(&run(
        &s,
        &mut c,
        "app",
        doc! {"createUser": "u", "pwd": "pw", "roles": ["a"]}
    )));
    let mut u = conn("127.0.0.1:2");
    login(&s, &mut u, "u", "app");
    let log_coll = Target::Collection("app".into(), "log".into());
    assert!(
        super::is_allowed(&u.auth, &log_coll, "insert"),
        "inherited through a -> b"
    );
    let revoke = doc! {"resource": {"db": "app", "collection": "log"}, "actions": ["insert"]};
    assert!(is_ok(&run(
        &s,
        &mut c,
        "app",
        doc! {"revokePrivilegesFromRole": "b", "privileges": [revoke]}
    )));
    assert!(!super::is_allowed(&u.auth, &log_coll, "insert"));
    assert!(super::is_allowed(&u.auth, &log_coll, "find"));

    let r = run(&s, &mut c, "app", doc! {"usersInfo": 1, "filter": {"user": "u"}});
    assert_eq!(r.get_array("users").unwrap().len(), 1, "{r}");
    let r = run(&s, &mut c, "admin", doc! {"usersInfo": {"forAllDBs": true}});
    let ids: Vec<&str> = r
        .get_array("users")
        .unwrap()
        .iter()
        .filter_map(|u| u.as_document()?.get_str("_id").ok())
        .collect();
    assert_eq!(ids, ["admin.root", "app.u"], "{r}");
    let r = run(&s, &mut u, "admin", doc! {"usersInfo": {"forAllDBs": true}});
    assert_eq!(code(&r), Some(13), "{r}");
    let r = run(&s, &mut c, "app", doc! {"usersInfo": 1, "filter": {"user": "nobody"}});
    assert_eq!(r.get_array("users").unwrap().len(), 0, "{r}");

    let r = run(&s, &mut c, "app", doc! {"dropAllRolesFromDatabase": 1});
    assert_eq!(r.get_i32("n").ok(), Some(2), "{r}");
    assert!(!super::is_allowed(&u.auth, &log_coll, "find"));
    let r = run(&s, &mut c, "app", doc! {"usersInfo": "u"});
    assert!(
        r.get_array("users").unwrap()[0]
            .as_document()
            .unwrap()
            .get_array("roles")
            .unwrap()
            .is_empty()
    );
}

#[test]
fn backup_and_restore_roles_cover_the_tools_needs() {
    let s = server();
    let mut c = conn("127.0.0.1:1");
    assert!(is_ok(&run(
        &s,
        &mut c,
        "admin",
        doc! {"createUser": "root", "pwd": "pw", "roles": ["root"]}
    )));
    login(&s, &mut c, "root", "admin");
    assert!(is_ok(&run(
        &s,
        &mut c,
        "admin",
        doc! {"createUser": "b", "pwd": "pw", "roles": ["backup"]}
    )));
    assert!(is_ok(&run(
        &s,
        &mut c,
        "admin",
        doc! {"createUser": "r", "pwd": "pw", "roles": ["restore"]}
    )));
    let mut b = conn("127.0.0.1:2");
    login(&s, &mut b, "b", "admin");
    let users = Target::Collection("admin".into(), "system.users".into());
    let oplog = Target::Collection("local".into(), "oplog.rs".into());
    // mongodump reads every database, the authorization collections and the oplog, and writes nothing.
    assert!(super::is_allowed(&b.auth, &users, "find"));
    assert!(super::is_allowed(&b.auth, &oplog, "find"));
    assert!(super::is_allowed(&b.auth, &Target::Cluster, "listDatabases"));
    assert!(!super::is_allowed(
        &b.auth,
        &Target::Collection("app".into(), "c".into()),
        "insert"
    ));
    let mut r = conn("127.0.0.1:3");
    login(&s, &mut r, "r", "admin");
    let coll = Target::Collection("app".into(), "c".into());
    for action in [
        "createCollection",
        "insert",
        "createIndex",
        "dropCollection",
        "listCollections",
    ] {
        assert!(super::is_allowed(&r.auth, &coll, action), "{action}");
    }
    assert!(super::is_allowed(&r.auth, &Target::Cluster, "getParameter"));
    // Oplog replay (applyOps) needs more than restore, as the mongorestore manual says.
    assert!(!super::is_allowed(&r.auth, &Target::Cluster, "applyOps"));
    assert!(super::is_allowed(&c.auth, &Target::Cluster, "applyOps"));
}

#[test]
fn localhost_exception_covers_replica_set_initiation_after_hello() {
    let s = server();
    let mut remote = conn("192.0.2.1:1");
    let mut local = conn("127.0.0.1:1");
    for c in [&mut remote, &mut local] {
        assert!(is_ok(&run(&s, c, "admin", doc! {"hello": 1})));
    }
    let init = || Request::from_document("admin", doc! {"replSetInitiate": {}}).unwrap();
    assert!(super::authorize(&local.auth, "replSetInitiate", "admin", &init().body).is_ok());
    assert_eq!(
        super::authorize(&remote.auth, "replSetInitiate", "admin", &init().body)
            .unwrap_err()
            .code,
        13
    );
    // Other commands still need a user.
    assert_eq!(
        super::authorize(&local.auth, "find", "admin", &doc! {"find": "c"})
            .unwrap_err()
            .code,
        13
    );
    assert!(is_ok(&run(
        &s,
        &mut local,
        "admin",
        doc! {"createUser": "root", "pwd": "pw", "roles": ["root"]}
    )));
    assert_eq!(
        super::authorize(&local.auth, "replSetInitiate", "admin", &init().body)
            .unwrap_err()
            .code,
        13
    );
}
