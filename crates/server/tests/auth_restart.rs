//! Users created on a `--auth --dbpath` server survive a crash (SIGKILL) and restart: after recovery the same
//! credentials log in with the official driver, roles still apply, and the localhost exception stays closed.

mod support;

use std::path::Path;
use std::time::Duration;
use support::{ServerProcess, free_port};

use mongodb::Client;
use mongodb::bson::{Document, doc};
use mongodb::error::ErrorKind;
use mongodb::options::{ClientOptions, Credential};

fn start(dbpath: &Path, port: u16) -> ServerProcess {
    ServerProcess::start_on(port, &["--auth", "--dbpath", dbpath.to_str().expect("utf-8 temp path")])
}

async fn client(port: u16, user: Option<(&str, &str, &str)>) -> Client {
    let mut opts = ClientOptions::parse(format!("mongodb://127.0.0.1:{port}"))
        .await
        .unwrap();
    opts.server_selection_timeout = Some(Duration::from_secs(5));
    opts.credential = user.map(|(u, p, db)| {
        Credential::builder()
            .username(u.to_string())
            .password(p.to_string())
            .source(db.to_string())
            .build()
    });
    Client::with_options(opts).unwrap()
}

fn code(e: &mongodb::error::Error) -> Option<i32> {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

#[tokio::test]
async fn users_survive_a_crash_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    {
        let mut server = start(dir.path(), port);
        let anon = client(port, None).await;
        anon.database("admin")
            .run_command(doc! { "createUser": "root", "pwd": "rootpw", "roles": ["root"] })
            .await
            .unwrap();
        let root = client(port, Some(("root", "rootpw", "admin"))).await;
        root.database("app")
            .run_command(doc! { "createUser": "reader", "pwd": "readpw", "roles": ["read"] })
            .await
            .unwrap();
        root.database("app")
            .collection::<Document>("c")
            .insert_one(doc! { "x": 1 })
            .await
            .unwrap();
        server.kill();
    }
    let port = free_port();
    let _server = start(dir.path(), port);
    let reader = client(port, Some(("reader", "readpw", "app"))).await;
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
    assert_eq!(code(&err), Some(13), "{err}");
    let anon = client(port, None).await;
    let err = anon
        .database("admin")
        .run_command(doc! { "createUser": "intruder", "pwd": "pw", "roles": ["root"] })
        .await
        .unwrap_err();
    assert_eq!(
        code(&err),
        Some(13),
        "the localhost exception must stay closed after recovery: {err}"
    );
    let bad = client(port, Some(("root", "wrong", "admin"))).await;
    let err = bad.database("admin").run_command(doc! { "ping": 1 }).await.unwrap_err();
    assert!(matches!(err.kind.as_ref(), ErrorKind::Authentication { .. }), "{err}");
}
