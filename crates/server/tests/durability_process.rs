//! Durability of `--dbpath` mode, checked against the real `tidemark-server` binary with the official
//! MongoDB Rust driver: `kill -9` during a `j: true` write load, `--nojournal` clean shutdown, the `fsync`
//! lock (blocking writes, lock counts, copying the dbpath while locked) and `mongod.lock` ownership.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mongodb::bson::{Bson, Document, doc};
use mongodb::options::WriteConcern;
use mongodb::{Client, Collection};

const BIN: &str = env!("CARGO_BIN_EXE_tidemark-server");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `tidemark-server` child process.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(dbpath: &Path, extra: &[&str]) -> Server {
        let port = free_port();
        let child = Command::new(BIN)
            .args(["--port", &port.to_string(), "--dbpath"])
            .arg(dbpath)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut server = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("server exited during start-up: {status}");
            }
            assert!(Instant::now() < deadline, "server did not start listening on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    async fn client(&self) -> Client {
        let uri = format!(
            "mongodb://127.0.0.1:{}/?directConnection=true&serverSelectionTimeoutMS=2000",
            self.port
        );
        Client::with_uri_str(uri).await.unwrap()
    }

    /// SIGKILL: no shutdown code runs.
    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM: clean shutdown, as for mongod.
    fn terminate(mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn journaled() -> WriteConcern {
    WriteConcern::builder().journal(true).build()
}

fn payload(writer: usize, i: usize) -> Document {
    doc! {
        "_id": format!("w{writer}-{i}"),
        "writer": writer as i64,
        "i": i as i64,
        "pad": "x".repeat(300 + i % 50),
        "nested": { "a": [1, 2.5, "three"], "b": Bson::Null },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_journaled_writes_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let client = server.client().await;
    let coll: Collection<Document> = client.database("load").collection("docs");
    coll.insert_one(doc! { "_id": "first" })
        .write_concern(journaled())
        .await
        .unwrap();

    // Single-document inserts from 3 writers, plus insert_many batches of 10 from a 4th; every acknowledged
    // `_id` (or batch) is recorded.
    let acked: Arc<Mutex<Vec<Document>>> = Arc::default();
    let acked_batches: Arc<Mutex<BTreeSet<usize>>> = Arc::default();
    let mut tasks = Vec::new();
    for writer in 0..3 {
        let coll = coll.clone();
        let acked = Arc::clone(&acked);
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let d = payload(writer, i);
                if coll.insert_one(d.clone()).write_concern(journaled()).await.is_err() {
                    return;
                }
                acked.lock().unwrap().push(d);
            }
        }));
    }
    {
        let coll = coll.clone();
        let acked_batches = Arc::clone(&acked_batches);
        tasks.push(tokio::spawn(async move {
            for b in 0.. {
                let docs: Vec<Document> = (0..10).map(|k| payload(100 + b, k)).collect();
                if coll.insert_many(docs).write_concern(journaled()).await.is_err() {
                    return;
                }
                acked_batches.lock().unwrap().insert(b);
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 150 || acked_batches.lock().unwrap().len() < 5 {
        assert!(Instant::now() < deadline, "write load too slow");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Writes are still in flight when the process dies.
    server.kill9();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let acked_batches = acked_batches.lock().unwrap().clone();

    let server = Server::start(dir.path(), &[]);
    let client = server.client().await;
    let coll: Collection<Document> = client.database("load").collection("docs");
    let mut found: BTreeMap<String, Document> = BTreeMap::new();
    let mut cursor = coll.find(doc! {}).await.unwrap();
    while cursor.advance().await.unwrap() {
        let d = cursor.deserialize_current().unwrap();
        found.insert(d.get_str("_id").unwrap().to_string(), d);
    }
    assert!(found.contains_key("first"));
    for d in &acked {
        let id = d.get_str("_id").unwrap();
        assert_eq!(found.get(id), Some(d), "acknowledged document {id} lost or changed");
    }
    // insert_many batches are all or nothing; acknowledged ones are all there.
    let mut per_batch: BTreeMap<usize, usize> = BTreeMap::new();
    for d in found.values() {
        if let Ok(w) = d.get_i64("writer")
            && w >= 100
        {
            *per_batch.entry(usize::try_from(w - 100).unwrap()).or_default() += 1;
        }
    }
    for b in &acked_batches {
        assert_eq!(per_batch.get(b), Some(&10), "acknowledged batch {b} incomplete");
    }
    for (b, n) in &per_batch {
        assert_eq!(*n, 10, "batch {b} partially applied");
    }
    // Nothing else appeared: at most the one in-flight insert per writer was applied without its ack.
    let unacked = found.len() - 1 - acked.len() - 10 * acked_batches.len();
    assert!(unacked <= 3 + 10, "{unacked} unexpected documents");

    // The recovered server keeps working and survives a second crash with the new writes.
    coll.insert_one(doc! { "_id": "after" })
        .write_concern(journaled())
        .await
        .unwrap();
    server.kill9();
    let server = Server::start(dir.path(), &[]);
    let coll: Collection<Document> = server.client().await.database("load").collection("docs");
    assert!(coll.find_one(doc! { "_id": "after" }).await.unwrap().is_some());
    assert_eq!(
        coll.count_documents(doc! {}).await.unwrap(),
        u64::try_from(found.len() + 1).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nojournal_clean_shutdown_then_restart_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--nojournal"]);
    let client = server.client().await;
    let db = client.database("app");
    db.create_collection("events").capped(true).size(1 << 20).await.unwrap();
    let coll: Collection<Document> = db.collection("users");
    let docs: Vec<Document> = (0..200)
        .map(|i| doc! { "_id": i, "name": format!("user{i}"), "age": i % 90 })
        .collect();
    coll.insert_many(docs.clone()).await.unwrap();
    coll.create_index(mongodb::IndexModel::builder().keys(doc! { "name": 1 }).build())
        .await
        .unwrap();
    coll.delete_one(doc! { "_id": 7 }).await.unwrap();
    coll.update_one(doc! { "_id": 8 }, doc! { "$set": { "age": 1000 } })
        .await
        .unwrap();
    assert!(
        !dir.path().join("journal").exists(),
        "--nojournal must not write a journal"
    );
    // Like mongod without a journal, `j: true` is refused with BadValue and nothing is written.
    let e = coll
        .insert_one(doc! { "_id": "j" })
        .write_concern(journaled())
        .await
        .unwrap_err();
    assert_eq!(error_code(&e), Some(2), "{e}");
    assert!(
        e.to_string()
            .contains("cannot use 'j' option when a host does not have journaling enabled"),
        "{e}"
    );
    assert!(coll.find_one(doc! { "_id": "j" }).await.unwrap().is_none());
    let status = server.terminate();
    assert!(status.success(), "{status}");
    // A clean shutdown empties mongod.lock, as mongod does.
    assert_eq!(std::fs::read(dir.path().join("mongod.lock")).unwrap().len(), 0);

    let server = Server::start(dir.path(), &["--nojournal"]);
    let client = server.client().await;
    let coll: Collection<Document> = client.database("app").collection("users");
    let mut got = Vec::new();
    let mut cursor = coll.find(doc! {}).await.unwrap();
    while cursor.advance().await.unwrap() {
        got.push(cursor.deserialize_current().unwrap());
    }
    let mut want: Vec<Document> = docs.into_iter().filter(|d| d.get_i32("_id") != Ok(7)).collect();
    want[7].insert("age", 1000);
    assert_eq!(got, want, "documents or their natural order changed");
    let names: Vec<String> = coll.list_index_names().await.unwrap();
    assert_eq!(names, vec!["_id_".to_string(), "name_1".to_string()]);
    let specs = client
        .database("app")
        .run_command(doc! { "listCollections": 1, "filter": { "name": "events" } })
        .await
        .unwrap();
    let first = specs.get_document("cursor").unwrap().get_array("firstBatch").unwrap();
    let options = first[0].as_document().unwrap().get_document("options").unwrap();
    assert_eq!(options.get_bool("capped"), Ok(true), "{options}");
}

async fn command(client: &Client, cmd: Document) -> mongodb::error::Result<Document> {
    client.database("admin").run_command(cmd).await
}

fn error_code(e: &mongodb::error::Error) -> Option<i32> {
    match &*e.kind {
        mongodb::error::ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fsync_lock_blocks_writes_until_fully_unlocked_while_reads_work() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let client = server.client().await;
    let coll: Collection<Document> = client.database("test").collection("c");
    coll.insert_one(doc! { "_id": 1 }).await.unwrap();

    // Not locked yet: IllegalOperation with mongod's message.
    let e = command(&client, doc! { "fsyncUnlock": 1 }).await.unwrap_err();
    assert_eq!(error_code(&e), Some(20), "{e}");
    assert!(e.to_string().contains("fsyncUnlock called when not locked"), "{e}");
    // Admin only.
    let e = client
        .database("test")
        .run_command(doc! { "fsync": 1 })
        .await
        .unwrap_err();
    assert_eq!(error_code(&e), Some(13), "{e}");
    // Plain fsync.
    let r = command(&client, doc! { "fsync": 1 }).await.unwrap();
    assert_eq!(r.get_i32("numFiles"), Ok(1), "{r}");

    let r = command(&client, doc! { "fsync": 1, "lock": true }).await.unwrap();
    assert_eq!(r.get_i64("lockCount"), Ok(1), "{r}");
    assert_eq!(
        r.get_str("info"),
        Ok("now locked against writes, use db.fsyncUnlock() to unlock")
    );
    let r = command(&client, doc! { "fsync": 1, "lock": true }).await.unwrap();
    assert_eq!(r.get_i64("lockCount"), Ok(2), "{r}");

    let writer = {
        let coll = coll.clone();
        tokio::spawn(async move { coll.insert_one(doc! { "_id": 2 }).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!writer.is_finished(), "insert completed while fsync-locked");
    // Reads keep working.
    assert_eq!(coll.find_one(doc! { "_id": 1 }).await.unwrap(), Some(doc! { "_id": 1 }));
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 1);

    let r = command(&client, doc! { "fsyncUnlock": 1 }).await.unwrap();
    assert_eq!(r.get_i64("lockCount"), Ok(1), "{r}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!writer.is_finished(), "insert completed with lockCount 1");

    let r = command(&client, doc! { "fsyncUnlock": 1 }).await.unwrap();
    assert_eq!(r.get_i64("lockCount"), Ok(0), "{r}");
    assert_eq!(r.get_str("info"), Ok("fsyncUnlock completed"));
    tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 2);
    let e = command(&client, doc! { "fsyncUnlock": 1 }).await.unwrap_err();
    assert_eq!(error_code(&e), Some(20), "{e}");
}

fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp").arg("-r").arg(from).arg(to).status().unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dbpath_copied_while_fsync_locked_starts_with_nojournal() {
    copy_while_locked(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nojournal_dbpath_copied_while_fsync_locked_starts_with_nojournal() {
    copy_while_locked(&["--nojournal"]).await;
}

/// Writes, fsync-locks a server started with `original_args`, copies its dbpath with `cp -r` and starts a
/// `--nojournal` server on the copy.
async fn copy_while_locked(original_args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let dbpath = dir.path().join("db");
    std::fs::create_dir(&dbpath).unwrap();
    let server = Server::start(&dbpath, original_args);
    let client = server.client().await;
    let coll: Collection<Document> = client.database("shop").collection("orders");
    // Default write concern: these are at most in the journal, not yet in data files.
    for i in 0..300 {
        coll.insert_one(doc! { "_id": i, "total": f64::from(i) * 1.5 })
            .await
            .unwrap();
    }
    coll.create_index(mongodb::IndexModel::builder().keys(doc! { "total": -1 }).build())
        .await
        .unwrap();
    coll.delete_many(doc! { "_id": { "$lt": 10 } }).await.unwrap();

    command(&client, doc! { "fsync": 1, "lock": true }).await.unwrap();
    let blocked = {
        let coll = coll.clone();
        tokio::spawn(async move { coll.insert_one(doc! { "_id": "late" }).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let copy = dir.path().join("copy");
    copy_dir(&dbpath, &copy);

    let second = Server::start(&copy, &["--nojournal"]);
    let copy_client = second.client().await;
    let copied: Collection<Document> = copy_client.database("shop").collection("orders");
    assert_eq!(copied.count_documents(doc! {}).await.unwrap(), 290);
    assert_eq!(
        copied.find_one(doc! { "_id": 299 }).await.unwrap(),
        Some(doc! { "_id": 299, "total": 448.5 })
    );
    assert!(copied.find_one(doc! { "_id": "late" }).await.unwrap().is_none());
    assert_eq!(
        copied.list_index_names().await.unwrap(),
        vec!["_id_".to_string(), "total_-1".to_string()]
    );
    drop(second);

    command(&client, doc! { "fsyncUnlock": 1 }).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), blocked)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 291);
}

#[test]
fn second_server_on_a_live_dbpath_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start(dir.path(), &[]);
    let out = Command::new(BIN)
        .args(["--port", &free_port().to_string(), "--dbpath"])
        .arg(dir.path())
        .output()
        .unwrap();
    // mongod exits with code 100 when it cannot lock the dbpath.
    assert_eq!(out.status.code(), Some(100));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("mongod.lock") && stderr.contains("already running"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("pid {}", first.child.id())), "{stderr}");
    // The owner is unaffected.
    assert!(TcpStream::connect(("127.0.0.1", first.port)).is_ok());
    drop(first);
    // A lock file left by a killed server is not an error.
    let again = Server::start(dir.path(), &[]);
    again.kill9();
    let _third = Server::start(dir.path(), &[]);
}
