//! Cursor ownership under `--auth`, through the official Rust driver: a `getMore` or `killCursors` by a user
//! other than the one who opened the cursor fails with Unauthorized (13), "cursor id ... was not created by
//! the authenticated user", as mongod answers (https://www.mongodb.com/docs/manual/reference/command/getMore/:
//! "If authentication is turned on, you can only issue a getMore against cursors you created"; the same rule
//! applies to killCursors, https://www.mongodb.com/docs/manual/reference/command/killCursors/). The cursor
//! stays usable by its owner.

use std::time::Duration;

use mongodb::bson::{Bson, Document, doc};
use mongodb::error::ErrorKind;
use mongodb::options::{AuthMechanism, ClientOptions, Credential};
use mongodb::{Client, Database};
use tidemark_server::ServerConfig;
use tidemark_server::testing::{TestServer, start_test_server};

async fn client(server: &TestServer, user: Option<(&str, &str)>) -> Client {
    let mut opts = ClientOptions::parse(server.uri()).await.unwrap();
    opts.server_selection_timeout = Some(Duration::from_secs(5));
    opts.credential = user.map(|(u, p)| {
        Credential::builder()
            .username(u.to_string())
            .password(p.to_string())
            .source("admin".to_string())
            .mechanism(AuthMechanism::ScramSha256)
            .build()
    });
    Client::with_options(opts).unwrap()
}

fn unauthorized(r: Result<Document, mongodb::error::Error>, id: i64) {
    let e = r.expect_err("another user's cursor must be refused");
    match e.kind.as_ref() {
        ErrorKind::Command(c) => {
            assert_eq!(c.code, 13, "{c:?}");
            assert_eq!(c.code_name, "Unauthorized");
            assert!(
                c.message
                    .contains(&format!("cursor id {id} was not created by the authenticated user")),
                "{}",
                c.message
            );
        }
        other => panic!("unexpected error {other:?}"),
    }
}

async fn open_cursor(db: &Database) -> i64 {
    let r = db.run_command(doc! { "find": "items", "batchSize": 2 }).await.unwrap();
    r.get_document("cursor").unwrap().get_i64("id").unwrap()
}

#[tokio::test]
async fn get_more_and_kill_cursors_are_limited_to_the_cursor_owner() {
    let server = start_test_server(ServerConfig {
        auth: true,
        ..ServerConfig::ephemeral()
    })
    .await;
    client(&server, None)
        .await
        .database("admin")
        .run_command(doc! { "createUser": "root", "pwd": "rootpw", "roles": ["root"] })
        .await
        .unwrap();
    let root = client(&server, Some(("root", "rootpw"))).await;
    root.database("admin")
        .run_command(doc! { "createUser": "alice", "pwd": "a", "roles": [{ "role": "readWrite", "db": "app" }] })
        .await
        .unwrap();
    root.database("admin")
        .run_command(doc! { "createUser": "bob", "pwd": "b", "roles": [{ "role": "readWrite", "db": "app" }] })
        .await
        .unwrap();
    let docs: Vec<Document> = (0..10).map(|i| doc! { "_id": i }).collect();
    root.database("app")
        .collection::<Document>("items")
        .insert_many(docs)
        .await
        .unwrap();

    let alice = client(&server, Some(("alice", "a"))).await.database("app");
    let bob = client(&server, Some(("bob", "b"))).await.database("app");
    let id = open_cursor(&alice).await;
    assert_ne!(id, 0);

    unauthorized(bob.run_command(doc! { "getMore": id, "collection": "items" }).await, id);
    unauthorized(
        bob.run_command(doc! { "killCursors": "items", "cursors": [id] }).await,
        id,
    );
    // Even a root user may not take over another user's cursor.
    unauthorized(
        root.database("app")
            .run_command(doc! { "getMore": id, "collection": "items" })
            .await,
        id,
    );

    // killCursors, unlike getMore, is allowed with the killAnyCursor privilege (root has it via hostManager).
    let id3 = open_cursor(&alice).await;
    let killed = root
        .database("app")
        .run_command(doc! { "killCursors": "items", "cursors": [id3] })
        .await
        .unwrap();
    assert_eq!(killed.get_array("cursorsKilled").unwrap(), &vec![Bson::Int64(id3)]);

    // The owner still reads the whole result, then can kill a second cursor.
    let more = alice
        .run_command(doc! { "getMore": id, "collection": "items", "batchSize": 100 })
        .await
        .unwrap();
    let cursor = more.get_document("cursor").unwrap();
    assert_eq!(cursor.get_array("nextBatch").unwrap().len(), 8);
    let id2 = open_cursor(&alice).await;
    let killed = alice
        .run_command(doc! { "killCursors": "items", "cursors": [id2] })
        .await
        .unwrap();
    assert_eq!(killed.get_array("cursorsKilled").unwrap(), &vec![Bson::Int64(id2)]);
}

#[tokio::test]
async fn without_auth_any_connection_may_continue_a_cursor() {
    let server = start_test_server(ServerConfig::ephemeral()).await;
    let a = client(&server, None).await.database("app");
    let docs: Vec<Document> = (0..5).map(|i| doc! { "_id": i }).collect();
    a.collection::<Document>("items").insert_many(docs).await.unwrap();
    let id = open_cursor(&a).await;
    let b = client(&server, None).await.database("app");
    let more = b
        .run_command(doc! { "getMore": id, "collection": "items" })
        .await
        .unwrap();
    assert_eq!(
        more.get_document("cursor")
            .unwrap()
            .get_array("nextBatch")
            .unwrap()
            .len(),
        3
    );
}
