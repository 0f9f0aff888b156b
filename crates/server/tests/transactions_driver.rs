//! tidemark-server has no multi-document transactions, so it must refuse them before any statement is
//! applied, as mongod does where transactions are unavailable. A standalone mongod answers any command with
//! `txnNumber` with IllegalOperation (20) "Transaction numbers are only allowed on a replica set member or
//! mongos" (https://www.mongodb.com/docs/manual/core/transactions/ : transactions need a replica set or a
//! sharded cluster). On a replica set member the first statement of a transaction fails with
//! IllegalOperation, and `commitTransaction`/`abortTransaction` answer NoSuchTransaction (251), never
//! CommandNotFound (59). Driven through the official Rust driver's transaction API.

use std::time::{Duration, Instant};

use mongodb::Client;
use mongodb::bson::{Document, doc};
use mongodb::error::{Error, ErrorKind};
use mongodb::options::ClientOptions;
use tidemark_server::ServerConfig;
use tidemark_server::testing::{TestServer, start_test_server};

async fn client(server: &TestServer) -> Client {
    let mut opts = ClientOptions::parse(format!("{}/?directConnection=true", server.uri()))
        .await
        .expect("uri");
    opts.server_selection_timeout = Some(Duration::from_secs(5));
    opts.heartbeat_freq = Some(Duration::from_millis(500));
    Client::with_options(opts).expect("client")
}

/// `(code, message)` of a command error.
fn command_error(e: &Error) -> (i32, String) {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => (c.code, c.message.clone()),
        ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) => (w.code, w.message.clone()),
        other => panic!("expected a command error, got {other:?}"),
    }
}

async fn start_rs() -> (TestServer, Client) {
    let server = start_test_server(ServerConfig {
        repl_set: Some("rs0".into()),
        ..ServerConfig::ephemeral()
    })
    .await;
    let client = client(&server).await;
    let config = doc! { "_id": "rs0", "version": 1, "members": [{ "_id": 0, "host": server.addr.to_string() }] };
    client
        .database("admin")
        .run_command(doc! { "replSetInitiate": config })
        .await
        .expect("replSetInitiate");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let hello = client
            .database("admin")
            .run_command(doc! { "hello": 1 })
            .await
            .expect("hello");
        if hello.get_bool("isWritablePrimary") == Ok(true) {
            break;
        }
        assert!(Instant::now() < deadline, "no primary after replSetInitiate: {hello}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (server, client)
}

#[tokio::test]
async fn standalone_refuses_transaction_numbers() {
    let server = start_test_server(ServerConfig::ephemeral()).await;
    let client = client(&server).await;
    let coll = client.database("t").collection::<Document>("c");
    let mut session = client.start_session().await.expect("session");
    session
        .start_transaction()
        .await
        .expect("start_transaction is client-side");
    let err = coll
        .insert_one(doc! { "_id": 1, "x": 1 })
        .session(&mut session)
        .await
        .expect_err("a standalone refuses transactions");
    // The retryable writes specification has drivers replace the message of an IllegalOperation (20) whose
    // `errmsg` starts with "Transaction numbers" (mongod's standalone answer) by this advice, so seeing it
    // proves the server sent that answer.
    assert_eq!(
        command_error(&err),
        (
            20,
            "This MongoDB deployment does not support retryable writes. Please add retryWrites=false to your \
             connection string."
                .to_string()
        )
    );
    let _ = session.abort_transaction().await;
    assert_eq!(
        coll.count_documents(doc! {}).await.expect("count"),
        0,
        "nothing of the transaction is applied"
    );
    // commitTransaction is a known command: with a transaction number it gets the same answer, not 59.
    let err = client
        .database("admin")
        .run_command(doc! { "commitTransaction": 1, "txnNumber": 1_i64, "autocommit": false })
        .await
        .expect_err("commit on a standalone");
    assert_eq!(command_error(&err).0, 20);
    server.shutdown().await;
}

#[tokio::test]
async fn replica_set_member_refuses_transactions_before_applying_anything() {
    let (server, client) = start_rs().await;
    let coll = client.database("t").collection::<Document>("c");
    coll.insert_one(doc! { "_id": 0 }).await.expect("plain insert works");

    let mut session = client.start_session().await.expect("session");
    session
        .start_transaction()
        .await
        .expect("start_transaction is client-side");
    let err = coll
        .insert_one(doc! { "_id": 1 })
        .session(&mut session)
        .await
        .expect_err("transactions are refused");
    let (code, message) = command_error(&err);
    assert_eq!(code, 20, "{message}");
    assert!(
        message.contains("multi-document transactions are not supported"),
        "{message}"
    );
    // The driver sends no later statement or commit of a transaction whose first statement failed, so send
    // a continuation by hand: a write with `autocommit: false` outside a started transaction.
    let err = client
        .database("t")
        .run_command(doc! {
            "delete": "c", "deletes": [{ "q": {}, "limit": 0 }], "txnNumber": 7_i64, "autocommit": false,
        })
        .await
        .expect_err("a continued transaction does not exist");
    let (code, message) = command_error(&err);
    assert_eq!(code, 251, "{message}");
    assert!(
        message.contains("Given transaction number 7 does not match"),
        "{message}"
    );
    let _ = session.abort_transaction().await;

    for name in ["commitTransaction", "abortTransaction"] {
        let err = client
            .database("admin")
            .run_command(doc! { name: 1, "txnNumber": 1_i64, "autocommit": false })
            .await
            .expect_err("no transaction is in progress");
        assert_eq!(command_error(&err).0, 251, "{name}: {err}");
    }
    let ids: Vec<Document> = {
        use futures_util_shim::collect;
        collect(coll.find(doc! {}).await.expect("find")).await
    };
    assert_eq!(
        ids,
        vec![doc! { "_id": 0 }],
        "only the write outside the transaction is applied"
    );

    // Retryable writes (a txnNumber without autocommit) still work on a replica set.
    coll.insert_one(doc! { "_id": 2 }).await.expect("retryable insert");
    assert_eq!(coll.count_documents(doc! {}).await.expect("count"), 2);
    drop(session);
    server.shutdown().await;
}

mod futures_util_shim {
    use mongodb::Cursor;
    use mongodb::bson::Document;

    /// All documents of a cursor.
    pub async fn collect(mut cursor: Cursor<Document>) -> Vec<Document> {
        let mut out = Vec::new();
        while cursor.advance().await.expect("advance") {
            out.push(cursor.deserialize_current().expect("document"));
        }
        out
    }
}
