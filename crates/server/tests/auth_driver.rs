//! Authentication and authorization checked with the official Rust driver against a server started with
//! `--auth`: SCRAM-SHA-1 and SCRAM-SHA-256 logins (speculative and mechanism negotiation included), wrong
//! passwords, and the Unauthorized (13) errors MongoDB documents for missing privileges.

use std::time::Duration;

use mongodb::bson::{Document, doc};
use mongodb::error::ErrorKind;
use mongodb::options::{AuthMechanism, ClientOptions, Credential};
use mongodb::{Client, error::Error};
use tidemark_server::ServerConfig;
use tidemark_server::testing::{TestServer, start_test_server};

async fn auth_server() -> TestServer {
    start_test_server(ServerConfig {
        auth: true,
        ..ServerConfig::ephemeral()
    })
    .await
}

async fn client(server: &TestServer, credential: Option<Credential>) -> Client {
    let mut opts = ClientOptions::parse(server.uri()).await.unwrap();
    opts.server_selection_timeout = Some(Duration::from_secs(5));
    opts.connect_timeout = Some(Duration::from_secs(5));
    opts.credential = credential;
    Client::with_options(opts).unwrap()
}

fn cred(user: &str, pwd: &str, source: &str, mechanism: Option<AuthMechanism>) -> Credential {
    Credential::builder()
        .username(user.to_string())
        .password(pwd.to_string())
        .source(source.to_string())
        .mechanism(mechanism)
        .build()
}

/// Creates `root` through the localhost exception, then the other users as root.
async fn setup(server: &TestServer) -> Client {
    let anon = client(server, None).await;
    anon.database("admin")
        .run_command(doc! { "createUser": "root", "pwd": "rootpw", "roles": ["root"] })
        .await
        .expect("localhost exception lets the first user be created");
    let root = client(
        server,
        Some(cred("root", "rootpw", "admin", Some(AuthMechanism::ScramSha256))),
    )
    .await;
    let app = root.database("app");
    app.run_command(doc! { "createUser": "reader", "pwd": "readpw", "roles": ["read"] })
        .await
        .unwrap();
    app.run_command(doc! { "createUser": "writer", "pwd": "writepw", "roles": [{ "role": "readWrite", "db": "app" }] })
        .await
        .unwrap();
    app.run_command(doc! {
        "createUser": "legacy", "pwd": "legacypw", "roles": ["readWrite"], "mechanisms": ["SCRAM-SHA-1"],
    })
    .await
    .unwrap();
    root
}

fn command_code(e: &Error) -> Option<i32> {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) => Some(w.code),
        _ => None,
    }
}

#[tokio::test]
async fn scram_sha256_and_sha1_logins_work() {
    let server = auth_server().await;
    let root = setup(&server).await;
    root.database("app")
        .collection::<Document>("c")
        .insert_one(doc! { "x": 1 })
        .await
        .unwrap();

    for mechanism in [Some(AuthMechanism::ScramSha1), Some(AuthMechanism::ScramSha256), None] {
        let c = client(&server, Some(cred("writer", "writepw", "app", mechanism.clone()))).await;
        let status = c
            .database("app")
            .run_command(doc! { "connectionStatus": 1 })
            .await
            .unwrap();
        let users = status
            .get_document("authInfo")
            .unwrap()
            .get_array("authenticatedUsers")
            .unwrap();
        assert_eq!(users.len(), 1, "{mechanism:?}: {status}");
        assert_eq!(users[0].as_document().unwrap(), &doc! { "user": "writer", "db": "app" });
        let n = c
            .database("app")
            .collection::<Document>("c")
            .count_documents(doc! {})
            .await
            .unwrap();
        assert!(n >= 1);
    }

    // A user with only SCRAM-SHA-1 credentials: the driver learns it from saslSupportedMechs and picks SHA-1.
    let legacy = client(&server, Some(cred("legacy", "legacypw", "app", None))).await;
    legacy
        .database("app")
        .collection::<Document>("c")
        .insert_one(doc! { "y": 2 })
        .await
        .unwrap();
    // ...and asking for SHA-256 explicitly fails.
    let wrong_mech = client(
        &server,
        Some(cred("legacy", "legacypw", "app", Some(AuthMechanism::ScramSha256))),
    )
    .await;
    let err = wrong_mech
        .database("app")
        .run_command(doc! { "ping": 1 })
        .await
        .unwrap_err();
    assert!(matches!(err.kind.as_ref(), ErrorKind::Authentication { .. }), "{err}");
}

#[tokio::test]
async fn wrong_password_and_unknown_user_fail_authentication() {
    let server = auth_server().await;
    setup(&server).await;
    for (user, pwd, mech) in [
        ("writer", "nope", AuthMechanism::ScramSha256),
        ("writer", "nope", AuthMechanism::ScramSha1),
        ("ghost", "x", AuthMechanism::ScramSha256),
    ] {
        let c = client(&server, Some(cred(user, pwd, "app", Some(mech.clone())))).await;
        let err = c.database("app").run_command(doc! { "ping": 1 }).await.unwrap_err();
        match err.kind.as_ref() {
            ErrorKind::Authentication { message, .. } => {
                assert!(message.contains("Authentication failed"), "{user}/{mech:?}: {message}")
            }
            other => panic!("{user}/{mech:?}: expected an authentication error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn privileges_follow_roles() {
    let server = auth_server().await;
    let root = setup(&server).await;
    root.database("app")
        .collection::<Document>("c")
        .insert_one(doc! { "x": 1 })
        .await
        .unwrap();

    // Unauthenticated: find requires authentication.
    let anon = client(&server, None).await;
    let err = anon
        .database("app")
        .collection::<Document>("c")
        .find_one(doc! {})
        .await
        .unwrap_err();
    assert_eq!(command_code(&err), Some(13), "{err}");
    assert!(err.to_string().contains("requires authentication"), "{err}");

    // read: can find, cannot insert.
    let reader = client(&server, Some(cred("reader", "readpw", "app", None))).await;
    assert!(
        reader
            .database("app")
            .collection::<Document>("c")
            .find_one(doc! {})
            .await
            .unwrap()
            .is_some()
    );
    let err = reader
        .database("app")
        .collection::<Document>("c")
        .insert_one(doc! { "x": 2 })
        .await
        .unwrap_err();
    assert_eq!(command_code(&err), Some(13), "{err}");
    assert!(
        err.to_string().contains("not authorized on app to execute command"),
        "{err}"
    );

    // readWrite on app: writes there, but nothing on another database.
    let writer = client(&server, Some(cred("writer", "writepw", "app", None))).await;
    writer
        .database("app")
        .collection::<Document>("c")
        .insert_one(doc! { "x": 3 })
        .await
        .unwrap();
    let err = writer
        .database("other")
        .collection::<Document>("c")
        .insert_one(doc! { "x": 3 })
        .await
        .unwrap_err();
    assert_eq!(command_code(&err), Some(13), "{err}");
    let err = writer
        .database("admin")
        .run_command(doc! { "serverStatus": 1 })
        .await
        .unwrap_err();
    assert_eq!(command_code(&err), Some(13), "{err}");

    // root: anything, including other databases and user administration.
    root.database("other")
        .collection::<Document>("c")
        .insert_one(doc! { "x": 4 })
        .await
        .unwrap();
    root.database("admin")
        .run_command(doc! { "serverStatus": 1 })
        .await
        .unwrap();
    let info = root.database("app").run_command(doc! { "usersInfo": 1 }).await.unwrap();
    let names: Vec<&str> = info
        .get_array("users")
        .unwrap()
        .iter()
        .filter_map(|u| u.as_document()?.get_str("user").ok())
        .collect();
    assert_eq!(names, ["legacy", "reader", "writer"]);

    // listDatabases shows users without the listDatabases action only the databases they have privileges on.
    assert_eq!(reader.list_database_names().await.unwrap(), ["app"]);
    let all = root.list_database_names().await.unwrap();
    assert!(
        ["admin", "app", "other"].iter().all(|d| all.iter().any(|n| n == d)),
        "{all:?}"
    );

    // Granting readWrite to reader lets its existing client write at once.
    root.database("app")
        .run_command(doc! { "grantRolesToUser": "reader", "roles": ["readWrite"] })
        .await
        .unwrap();
    reader
        .database("app")
        .collection::<Document>("c")
        .insert_one(doc! { "x": 5 })
        .await
        .unwrap();
}

#[tokio::test]
async fn failed_proof_is_authentication_failed_18() {
    let server = auth_server().await;
    setup(&server).await;
    // One pooled connection, so the conversation stays on one socket.
    let mut opts = ClientOptions::parse(server.uri()).await.unwrap();
    opts.max_pool_size = Some(1);
    opts.server_selection_timeout = Some(Duration::from_secs(5));
    let anon = Client::with_options(opts).unwrap();
    let db = anon.database("app");
    let first = db
        .run_command(doc! {
            "saslStart": 1, "mechanism": "SCRAM-SHA-256",
            "payload": mongodb::bson::Binary { subtype: mongodb::bson::spec::BinarySubtype::Generic, bytes: b"n,,n=writer,r=abcdefghijklmnop".to_vec() },
            "options": { "skipEmptyExchange": true },
        })
        .await
        .unwrap();
    assert!(!first.get_bool("done").unwrap());
    let server_first = String::from_utf8(first.get_binary_generic("payload").unwrap().clone()).unwrap();
    let nonce = server_first
        .split(',')
        .find_map(|f| f.strip_prefix("r="))
        .unwrap()
        .to_string();
    assert!(nonce.starts_with("abcdefghijklmnop"), "{server_first}");
    let bogus = format!("c=biws,r={nonce},p={}", "A".repeat(43) + "=");
    let err = db
        .run_command(doc! {
            "saslContinue": 1, "conversationId": first.get_i32("conversationId").unwrap(),
            "payload": mongodb::bson::Binary { subtype: mongodb::bson::spec::BinarySubtype::Generic, bytes: bogus.into_bytes() },
        })
        .await
        .unwrap_err();
    match err.kind.as_ref() {
        ErrorKind::Command(c) => {
            assert_eq!(
                (c.code, c.code_name.as_str(), c.message.as_str()),
                (18, "AuthenticationFailed", "Authentication failed.")
            )
        }
        other => panic!("expected a command error, got {other:?}"),
    }
}
