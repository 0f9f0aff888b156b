//! A collection dropped while a dump runs, against an in-process `tidemark-server`.
//!
//! The drop must land exactly between `listCollections` and the collection's `listIndexes`, so the
//! dump talks to the server through a small TCP relay that forwards whole wire messages and, when
//! it sees the `listIndexes` of the doomed collection, drops that collection through a second,
//! direct connection before forwarding the command. The server then answers NamespaceNotFound
//! (26), as mongod does; mongodump's driver turns that into an empty index list and the dump goes
//! on, and so must ours.

use std::sync::{Arc, Mutex};

use bson::{Document, doc};
use mongodb::Client;
use tidemark_core::{
    dump::{DumpOptions, DumpTarget, plan_dump, run_dump},
    progress::Progress,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

#[derive(Default)]
struct Logged(Mutex<Vec<String>>);

impl Progress for Logged {
    fn log(&self, message: &str) {
        self.0.lock().unwrap().push(message.to_owned());
    }
}

/// Relays connections to `server`; drops `db.coll` (once) before forwarding its `listIndexes`.
async fn relay_dropping(server: String, db: &'static str, coll: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let direct = Client::with_uri_str(format!("mongodb://{server}/?directConnection=true"))
        .await
        .unwrap();
    let dropped = Arc::new(tokio::sync::Mutex::new(false));
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = TcpStream::connect(&server).await.unwrap();
            let (mut client_rx, mut client_tx) = client.into_split();
            let (mut server_rx, mut server_tx) = upstream.into_split();
            tokio::spawn(async move { tokio::io::copy(&mut server_rx, &mut client_tx).await });
            let direct = direct.clone();
            let dropped = dropped.clone();
            tokio::spawn(async move {
                let mut needle = b"listIndexes\0".to_vec();
                let mut name = (i32::try_from(coll.len()).unwrap() + 1).to_le_bytes().to_vec();
                name.extend_from_slice(coll.as_bytes());
                name.push(0);
                needle.extend_from_slice(&name);
                loop {
                    let mut len = [0u8; 4];
                    if client_rx.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let mut message = len.to_vec();
                    message.resize(usize::try_from(i32::from_le_bytes(len)).unwrap(), 0);
                    if client_rx.read_exact(&mut message[4..]).await.is_err() {
                        return;
                    }
                    if message.windows(needle.len()).any(|w| w == needle) {
                        let mut done = dropped.lock().await;
                        if !*done {
                            direct.database(db).collection::<Document>(coll).drop().await.unwrap();
                            *done = true;
                        }
                    }
                    if server_tx.write_all(&message).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("mongodb://{addr}/?directConnection=true")
}

#[test]
fn a_collection_dropped_during_the_dump_is_dumped_empty_with_a_warning() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = tidemark_server::testing::start_test_server(tidemark_server::ServerConfig::default()).await;
        let direct = Client::with_uri_str(format!("{}/?directConnection=true", server.uri()))
            .await
            .unwrap();
        let db = direct.database("shop");
        let docs = |n: i32| {
            (0..n)
                .map(|i| doc! {"_id": i, "sku": format!("s{i}")})
                .collect::<Vec<_>>()
        };
        db.collection::<Document>("kept").insert_many(docs(50)).await.unwrap();
        db.run_command(doc! {"createIndexes": "kept", "indexes": [{"key": {"sku": 1}, "name": "sku_1"}]})
            .await
            .unwrap();
        db.collection::<Document>("doomed").insert_many(docs(20)).await.unwrap();

        let address = server.uri().trim_start_matches("mongodb://").to_owned();
        let uri = relay_dropping(address, "shop", "doomed").await;
        let client = Client::with_uri_str(&uri).await.unwrap();
        let out = tempfile::tempdir().unwrap();
        let mut options = DumpOptions::default();
        options.target = DumpTarget::Directory(out.path().to_owned());
        let progress = Arc::new(Logged::default());
        let plan = plan_dump(&client, &options, &*progress).await.unwrap();
        let summary = run_dump(&client, &plan, &options, progress.clone()).await.unwrap();

        let counts: Vec<(String, u64)> = summary.namespaces.clone();
        assert!(counts.contains(&("shop.kept".to_owned(), 50)), "{counts:?}");
        assert!(counts.contains(&("shop.doomed".to_owned(), 0)), "{counts:?}");
        let logged = progress.0.lock().unwrap().clone();
        assert!(
            logged
                .contains(&"the collection shop.doomed appears to have been dropped after the dump started".to_owned()),
            "{logged:?}"
        );
        // The server really lost the collection, and the survivor kept its secondary index.
        let left = db.list_collection_names().await.unwrap();
        assert_eq!(left, ["kept"]);
        let kept = std::fs::read_to_string(out.path().join("shop/kept.metadata.json")).unwrap();
        assert!(kept.contains("sku_1"), "{kept}");
        let doomed = std::fs::read_to_string(out.path().join("shop/doomed.metadata.json")).unwrap();
        assert!(doomed.contains("\"indexes\":[]"), "{doomed}");
        assert_eq!(std::fs::metadata(out.path().join("shop/doomed.bson")).unwrap().len(), 0);
        server.shutdown().await;
    });
}
