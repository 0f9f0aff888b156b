//! Internal authentication with `--keyFile`, following
//! https://www.mongodb.com/docs/manual/core/security-internal-authentication/ (keyfiles: 6 to 1024 base64
//! characters, whitespace ignored, no group/world permissions on UNIX; enforcing keyfile access control
//! implies client access control) and https://www.mongodb.com/docs/manual/tutorial/deploy-replica-set-with-keyfile-access-control/:
//! members of a set started with a key file authenticate to each other and replicate while clients must
//! authenticate; the internal `__system@local` user can only be used with the key.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mongodb::bson::{Document, doc};
use mongodb::error::ErrorKind;
use mongodb::options::{AuthMechanism, ClientOptions, Credential};
use mongodb::{Client, options::WriteConcern};
use tidemark_server::keyfile::{InternalKey, KeyFileError};
use tidemark_server::testing::replset::{ReplSet, ReplSetOptions};

const KEY: &str = "c2VjcmV0S2V5Rm9yVGVzdHM=";

fn key_file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    let mut f = std::fs::File::create(&p).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn code(e: &mongodb::error::Error) -> Option<i32> {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::Authentication { .. } => Some(18),
        _ => None,
    }
}

async fn client(uri: &str, cred: Option<(&str, &str, &str)>) -> Client {
    let mut opts = ClientOptions::parse(uri).await.unwrap();
    opts.server_selection_timeout = Some(Duration::from_secs(10));
    opts.credential = cred.map(|(u, p, src)| {
        Credential::builder()
            .username(u.to_string())
            .password(p.to_string())
            .source(src.to_string())
            .mechanism(AuthMechanism::ScramSha256)
            .build()
    });
    Client::with_options(opts).unwrap()
}

#[test]
fn key_files_follow_mongods_rules() {
    let dir = tempfile::tempdir().unwrap();
    let open = key_file(dir.path(), "open", KEY, 0o644);
    assert!(matches!(InternalKey::load(&open), Err(KeyFileError::TooOpen { .. })));
    let short = key_file(dir.path(), "short", "abc12", 0o600);
    assert!(matches!(
        InternalKey::load(&short),
        Err(KeyFileError::Length { len: 5, .. })
    ));
    let long = key_file(dir.path(), "long", &"a".repeat(1025), 0o400);
    assert!(matches!(
        InternalKey::load(&long),
        Err(KeyFileError::Length { len: 1025, .. })
    ));
    let bad = key_file(dir.path(), "bad", "abc_defg", 0o600);
    assert!(matches!(
        InternalKey::load(&bad),
        Err(KeyFileError::InvalidChar { ch: '_', .. })
    ));
    // Whitespace (including line breaks) is ignored.
    let spaced = key_file(dir.path(), "spaced", " c2Vj cmV0\nS2V5 \n", 0o600);
    assert!(InternalKey::load(&spaced).is_ok());
    assert!(matches!(
        InternalKey::load(&dir.path().join("missing")),
        Err(KeyFileError::Read { .. })
    ));

    // The server binary refuses to start with such a file, naming it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark-server"))
        .args(["--port", "0", "--replSet", "rs0", "--keyFile"])
        .arg(&open)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("permissions on {} are too open", open.display())),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_set_with_a_key_file_replicates_with_auth_on() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "key", KEY, 0o600);
    let set = ReplSet::start(ReplSetOptions {
        key_file: Some(key),
        ..ReplSetOptions::in_process(3)
    })
    .await
    .expect("members authenticate to each other and the set comes up");
    let primary = set.wait_for_primary(Duration::from_secs(10)).await.unwrap();
    let primary_uri = set.members[primary].direct_uri();

    // --keyFile implies --auth: an unauthenticated client may not write.
    let anon = client(&primary_uri, None).await;
    let e = anon
        .database("app")
        .collection::<Document>("items")
        .insert_one(doc! { "_id": 0 })
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(13), "{e}");
    // The localhost exception still allows the first user.
    anon.database("admin")
        .run_command(doc! { "createUser": "root", "pwd": "rootpw", "roles": ["root"] })
        .await
        .unwrap();

    let root = client(&set.uri(), Some(("root", "rootpw", "admin"))).await;
    root.database("app")
        .collection::<Document>("items")
        .insert_one(doc! { "_id": 1, "x": "replicated" })
        .write_concern(
            WriteConcern::builder()
                .w(mongodb::options::Acknowledgment::Nodes(3))
                .build(),
        )
        .await
        .expect("w:3 is acknowledged once both secondaries, authenticated with the key, applied the write");
    // The user and the document reached every secondary.
    for (i, m) in set.members.iter().enumerate() {
        if i == primary {
            continue;
        }
        let direct = client(&m.direct_uri(), Some(("root", "rootpw", "admin"))).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = direct
                .database("app")
                .collection::<Document>("items")
                .find_one(doc! { "_id": 1 })
                .selection_criteria(mongodb::options::SelectionCriteria::ReadPreference(
                    mongodb::options::ReadPreference::SecondaryPreferred {
                        options: Default::default(),
                    },
                ))
                .await
                .unwrap();
            if got.is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "member {i} never received the document");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // __system@local: refused without the key, all-powerful with it.
    let wrong = client(&primary_uri, Some(("__system", "not-the-key", "local"))).await;
    let e = wrong
        .database("admin")
        .run_command(doc! { "ping": 1 })
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(18), "{e}");
    let system = client(&primary_uri, Some(("__system", KEY, "local"))).await;
    let n = system
        .database("app")
        .collection::<Document>("items")
        .count_documents(doc! {})
        .await
        .expect("the internal user reads any database");
    assert_eq!(n, 1);
    system
        .database("local")
        .collection::<Document>("oplog.rs")
        .find_one(doc! {})
        .await
        .expect("and the oplog");
}

#[tokio::test]
async fn without_a_key_file_the_internal_user_does_not_exist() {
    let server = tidemark_server::testing::start_test_server(tidemark_server::ServerConfig {
        auth: true,
        ..tidemark_server::ServerConfig::ephemeral()
    })
    .await;
    let c = client(&server.uri(), Some(("__system", KEY, "local"))).await;
    let e = c.database("admin").run_command(doc! { "ping": 1 }).await.unwrap_err();
    assert_eq!(code(&e), Some(18), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_processes_started_with_key_file_replicate() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "key", KEY, 0o400);
    let set = ReplSet::start(ReplSetOptions {
        key_file: Some(key),
        ..ReplSetOptions::processes(3, env!("CARGO_BIN_EXE_tidemark-server"))
    })
    .await
    .expect("a set of --keyFile processes comes up");
    let primary = set.wait_for_primary(Duration::from_secs(10)).await.unwrap();
    // The harness authenticates as __system with the key: it may write and then read on every member.
    set.command(
        primary,
        "app",
        doc! { "insert": "p", "documents": [{ "_id": 1 }], "writeConcern": { "w": 3 } },
    )
    .await
    .expect("w:3 insert replicated by authenticated members");
    let anon = client(&set.members[primary].direct_uri(), None).await;
    let e = anon
        .database("app")
        .run_command(doc! { "count": "p" })
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(13), "--keyFile implies --auth: {e}");
}
