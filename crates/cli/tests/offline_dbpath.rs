//! `tidemark dump --dbpath` and `tidemark restore --dbpath` on `tidemark-server` data directories, run
//! through the real `tidemark` binary; data is seeded and inspected with pymongo (an independent client),
//! and data directories are served by the same storage layer `tidemark-server --dbpath` uses.

mod dump_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dump_support::{Server, assert_same_snapshot, fixture, pymongo, restore_counts, snapshot, stderr, tidemark};
use tidemark_server::commands::ServerState;
use tidemark_server::storage::{Storage, StorageOptions};
use tidemark_server::{Engine, ServerConfig};

/// A server over a data directory, in this process, exactly as `tidemark-server --dbpath` runs one.
struct DbPathServer {
    /// Runs the accept loop; dropping it stops the server abruptly, like a crash.
    _runtime: tokio::runtime::Runtime,
    engine: Arc<Engine>,
    storage: Arc<Storage>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    uri: String,
}

impl DbPathServer {
    fn open(dbpath: &Path) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let engine = Arc::new(Engine::new());
        let storage = Storage::open(dbpath, &StorageOptions::default(), &engine).unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let config = ServerConfig {
            port: addr.port(),
            dbpath: Some(dbpath.to_path_buf()),
            ..ServerConfig::default()
        };
        let state = Arc::new(ServerState::new(config, Arc::clone(&engine)).with_storage(Arc::clone(&storage)));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        runtime.spawn(tidemark_server::net::serve(listener, state, async move {
            let _ = stopped.await;
        }));
        Self {
            _runtime: runtime,
            engine,
            storage,
            stop: Some(stop),
            uri: format!("mongodb://{addr}/"),
        }
    }

    /// Clean shutdown: final checkpoint, lock file emptied.
    fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.storage.shutdown(&self.engine).unwrap();
    }
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Seeds collections with indexes and options, a view and several BSON types.
fn seed(uri: &str, part: u32) {
    pymongo(
        uri,
        &format!(
            r#"
import datetime, decimal
from bson import Binary, Decimal128, ObjectId, Int64, Regex, Timestamp
db = client["shop"]
part = {part}
if part == 0:
    db.create_collection("log", capped=True, size=65536, max=50)
    db.create_collection("orders", validator={{"$jsonSchema": {{"bsonType": "object", "required": ["qty"]}}}})
    db.orders.create_index([("customer", 1), ("day", -1)], name="customer_day")
    db.orders.create_index("sku", unique=True, partialFilterExpression={{"qty": {{"$gt": 0}}}})
    db.create_collection("big_orders", viewOn="orders", pipeline=[{{"$match": {{"qty": {{"$gte": 5}}}}}}])
    client["other"]["plain"].insert_many([{{"_id": i, "s": "x" * i}} for i in range(40)])
base = part * 500
db.orders.insert_many([
    {{"_id": base + i, "customer": "c%d" % (i % 7), "day": datetime.datetime(2024, 1, 1 + i % 28),
      "qty": i % 9, "sku": "sku-%d" % (base + i), "price": Decimal128("%d.25" % i), "n": Int64(i * 1000003),
      "oid": ObjectId(b"%012d" % (base + i)), "bin": Binary(bytes([i % 256]) * 5, 4 if i % 2 else 0),
      "re": Regex("^a.*", "i"), "ts": Timestamp(1700000000 + i, 1), "f": i / 3.0, "nested": {{"a": [i, {{"b": None}}]}}}}
    for i in range(500)
])
db.log.insert_many([{{"_id": base + i, "msg": "line %d" % i}} for i in range(60)])
db.orders.delete_many({{"_id": {{"$in": [base + 3, base + 4]}}}})
db.orders.update_one({{"_id": base + 5}}, {{"$set": {{"qty": 8, "tags": ["a", "b"]}}}})
print("ok")
"#
        ),
    );
}

/// Every file under `dir`, relative path to contents.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn dump_of_a_dbpath_equals_a_network_dump_byte_for_byte() {
    let work = tmp();
    let dbpath = work.path().join("data");
    std::fs::create_dir(&dbpath).unwrap();
    let server = DbPathServer::open(&dbpath);
    seed(&server.uri, 0);
    // Part of the state in a checkpoint, the rest only in the journal.
    server.storage.checkpoint(&server.engine).unwrap();
    seed(&server.uri, 1);
    let net = work.path().join("net");
    let out = tidemark(&["dump", "--uri", &server.uri, "--out", s(&net)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let net_archive = work.path().join("net.archive");
    let out = tidemark(&[
        "dump",
        "--uri",
        &server.uri,
        &format!("--archive={}", s(&net_archive)),
        "-j1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Stopped like a crash (no final checkpoint): the journal holds the second part.
    drop(server);
    assert!(
        !std::fs::read_to_string(dbpath.join("mongod.lock")).unwrap().is_empty(),
        "lock file should still name the crashed owner"
    );

    let offline = work.path().join("offline");
    let out = tidemark(&["dump", "--dbpath", s(&dbpath), "--out", s(&offline)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (got, want) = (files(&offline), files(&net));
    assert_eq!(
        got.iter().map(|f| &f.0).collect::<Vec<_>>(),
        want.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    assert!(want.iter().any(|(p, _)| p.ends_with("shop/orders.bson")));
    for ((path, g), (_, w)) in got.iter().zip(&want) {
        assert!(g == w, "{} differs", path.display());
    }
    let offline_archive = work.path().join("offline.archive");
    let out = tidemark(&[
        "dump",
        "--dbpath",
        s(&dbpath),
        &format!("--archive={}", s(&offline_archive)),
        "-j1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::read(&offline_archive).unwrap() == std::fs::read(&net_archive).unwrap());

    // Reading changed nothing: the directory still starts, with the same data.
    let files_before = files(&dbpath);
    let reopened = DbPathServer::open(&dbpath);
    let n = pymongo(&reopened.uri, "print(client.shop.orders.count_documents({}))");
    assert_eq!(n.trim(), "996");
    reopened.shutdown();
    assert!(files_before.iter().any(|(p, _)| p.starts_with("journal")));
}

#[test]
fn a_dbpath_owned_by_a_running_server_is_refused() {
    let work = tmp();
    let server = DbPathServer::open(work.path());
    seed(&server.uri, 0);
    let out = tidemark(&["dump", "--dbpath", s(work.path()), "--out", s(&work.path().join("o"))]);
    assert!(!out.status.success());
    let err = stderr(&out);
    let lock = work.path().join("mongod.lock");
    assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
    assert!(err.contains(s(&lock)), "{err}");
    assert!(!work.path().join("o").exists());

    let dump = work.path().join("dump");
    let out = tidemark(&["dump", "--uri", &server.uri, "--out", s(&dump)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = tidemark(&["restore", "--dbpath", s(work.path()), s(&dump)]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("pid {}", std::process::id())) && err.contains(s(&lock)),
        "{err}"
    );
    server.shutdown();
}

#[test]
fn restore_into_a_new_dbpath_keeps_documents_indexes_and_options() {
    let work = tmp();
    let source = Server::start();
    seed(&source.uri, 0);
    seed(&source.uri, 1);
    let dump = work.path().join("dump");
    let out = tidemark(&["dump", "--uri", &source.uri, "--out", s(&dump)]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Missing directory: created, like mongod's first start.
    let dbpath = work.path().join("new").join("data");
    let out = tidemark(&["restore", "--dbpath", s(&dbpath), s(&dump)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(restore_counts(&out), (996 + 50 + 40, 0));
    // Clean shutdown: checkpoint written, lock file empty.
    assert_eq!(std::fs::read_to_string(dbpath.join("mongod.lock")).unwrap(), "");
    assert!(
        std::fs::read_to_string(dbpath.join("CURRENT"))
            .unwrap()
            .starts_with("checkpoint-")
    );

    let restored = DbPathServer::open(&dbpath);
    assert_same_snapshot(&snapshot(&restored.uri), &snapshot(&source.uri));
    let options = pymongo(
        &restored.uri,
        "o = client.shop.log.options()\nprint(o['capped'], o['size'], o['max'])",
    );
    assert_eq!(options.trim(), "True 65536 50");
    restored.shutdown();

    // The real mongorestore fixture directory, against a network restore of it.
    let fixture_dir = fixture("mongorestore/testdata/testdirs");
    let network = Server::start();
    let out = tidemark(&["restore", &network.uri, s(&fixture_dir), "-j1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let fixture_db = work.path().join("fixture-db");
    let out = tidemark(&["restore", "--dbpath", s(&fixture_db), s(&fixture_dir), "-j1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(restore_counts(&out), (110, 0));
    let restored = DbPathServer::open(&fixture_db);
    assert_same_snapshot(&snapshot(&restored.uri), &snapshot(&network.uri));
    restored.shutdown();
}

/// Writes a dump directory with pymongo's `bson`: `drill.a` (`small` documents) and `drill.b` (`large`),
/// `_id` 0.. in order.
fn write_drill_dump(dir: &Path, small: u32, large: u32) {
    let db = dir.join("drill");
    std::fs::create_dir_all(&db).unwrap();
    let script = format!(
        r#"
import bson, json, sys
d = sys.argv[1]
for name, n in (("a", {small}), ("b", {large})):
    with open(d + "/" + name + ".bson", "wb") as f:
        f.write(b"".join(bson.encode({{"_id": i, "pad": "p" * 40, "c": name}}) for i in range(n)))
    meta = {{"options": {{}}, "indexes": [{{"v": 2, "key": {{"_id": 1}}, "name": "_id_"}}],
            "collectionName": name, "type": "collection"}}
    open(d + "/" + name + ".metadata.json", "w").write(json.dumps(meta))
"#
    );
    let out = Command::new("python3").arg("-c").arg(script).arg(&db).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

#[test]
fn restore_killed_midway_leaves_whole_batches_and_a_directory_that_starts() {
    const SMALL: u32 = 3_000;
    const LARGE: u32 = 300_000;
    const BATCH: u32 = 1_000;
    let work = tmp();
    let dump = work.path().join("dump");
    write_drill_dump(&dump, SMALL, LARGE);
    let a_bytes = std::fs::metadata(dump.join("drill/a.bson")).unwrap().len();
    let dbpath = work.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["restore", "--quiet", "-j1", "--dbpath", s(&dbpath), s(&dump)])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill once the journal holds clearly more than the first collection: inside the second one.
    let journal = dbpath.join("journal");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if dir_size(&journal) > 3 * a_bytes + 200_000 {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("restore ended before it could be interrupted: {status}");
        }
        assert!(Instant::now() < deadline, "restore made no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!std::fs::read_to_string(dbpath.join("mongod.lock")).unwrap().is_empty());

    // The directory starts (recovery), with the first collection whole and whole batches of the second.
    let server = DbPathServer::open(&dbpath);
    let report = pymongo(
        &server.uri,
        r#"
out = []
for name in ("a", "b"):
    ids = [d["_id"] for d in client.drill[name].find({}, {"_id": 1})]
    assert ids == list(range(len(ids))), name + " is not a prefix in order"
    assert all(d["pad"] == "p" * 40 for d in client.drill[name].find({}, {"pad": 1}))
    out.append(str(len(ids)))
print(" ".join(out))
"#,
    );
    let counts: Vec<u32> = report.split_whitespace().map(|n| n.parse().unwrap()).collect();
    assert_eq!(counts[0], SMALL, "first collection incomplete");
    assert!(
        counts[1] > 0 && counts[1] < LARGE,
        "not interrupted inside drill.b: {counts:?}"
    );
    assert_eq!(counts[1] % BATCH, 0, "a partial insert batch survived: {counts:?}");
    server.shutdown();

    // Restoring again with --drop over the recovered directory completes it.
    let out = tidemark(&["restore", "--drop", "--dbpath", s(&dbpath), s(&dump)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(restore_counts(&out), (u64::from(SMALL + LARGE), 0));
}

#[test]
fn a_wiredtiger_directory_is_refused_with_an_explanation() {
    let work = tmp();
    let wt = work.path().join("mongod-data");
    std::fs::create_dir(&wt).unwrap();
    // The files a real mongod keeps at the top of its dbpath.
    std::fs::write(
        wt.join("WiredTiger"),
        "WiredTiger\nWiredTiger 11.2.0: (December 14, 2023)\n",
    )
    .unwrap();
    std::fs::write(wt.join("WiredTiger.wt"), [0u8; 64]).unwrap();
    std::fs::write(wt.join("collection-0-1234567890.wt"), [0u8; 64]).unwrap();
    std::fs::write(wt.join("mongod.lock"), "").unwrap();
    let before = files(&wt);
    for args in [
        vec!["dump", "--dbpath", s(&wt), "--out", s(&work.path().join("o"))],
        vec![
            "restore",
            "--dbpath",
            s(&wt),
            s(&fixture("mongorestore/testdata/testdirs")),
        ],
    ] {
        let out = tidemark(&args);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(err.contains("WiredTiger") && err.contains("cannot read"), "{err}");
        assert!(err.contains("mongod") && err.contains("--uri"), "{err}");
        assert!(err.contains(s(&wt)), "{err}");
    }
    assert_eq!(files(&wt), before, "the directory was changed");
    assert!(!work.path().join("o").exists());

    // Only a storage.bson naming the WiredTiger engine, as mongod writes it.
    let only_meta = work.path().join("meta-only");
    std::fs::create_dir(&only_meta).unwrap();
    let mut bytes = Vec::new();
    bson::doc! {"storage": {"engine": "wiredTiger", "options": {"directoryPerDB": false, "directoryForIndexes": false}}}
        .to_writer(&mut bytes)
        .unwrap();
    std::fs::write(only_meta.join("storage.bson"), bytes).unwrap();
    let out = tidemark(&["dump", "--dbpath", s(&only_meta), "--out", s(&work.path().join("o"))]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("WiredTiger"), "{}", stderr(&out));
}

#[test]
fn dbpath_conflicts_and_missing_directories() {
    let work = tmp();
    let db = s(work.path());
    for (extra, option) in [
        (vec!["--uri", "mongodb://localhost/"], "--uri"),
        (vec!["mongodb://localhost/"], "a connection string"),
        (vec!["--host", "localhost"], "--host"),
        (vec!["--port", "27017"], "--port"),
        (vec!["-u", "admin", "-p", "x"], "--username"),
        (vec!["--authenticationDatabase", "admin"], "--authenticationDatabase"),
    ] {
        for cmd in ["dump", "restore"] {
            let mut args = vec![cmd, "--dbpath", db];
            args.extend(&extra);
            let out = tidemark(&args);
            assert!(!out.status.success());
            let err = stderr(&out);
            assert!(
                err.contains(&format!("bad option: --dbpath cannot be used with {option}")),
                "{args:?}: {err}"
            );
        }
    }
    // Dumping a directory that is missing, or holds no data files, names the path.
    let missing = work.path().join("absent");
    let out = tidemark(&["dump", "--dbpath", s(&missing), "--out", s(&work.path().join("o"))]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(s(&missing)) && stderr(&out).contains("no such data directory"),
        "{}",
        stderr(&out)
    );
    let out = tidemark(&["dump", "--dbpath", db, "--oplog"]);
    assert!(
        stderr(&out).contains("bad option: --oplog cannot be used with --dbpath"),
        "{}",
        stderr(&out)
    );
    assert!(!missing.exists());
    let empty = work.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = tidemark(&["dump", "--dbpath", s(&empty), "--out", s(&work.path().join("o"))]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(s(&empty)) && stderr(&out).contains("storage.bson"),
        "{}",
        stderr(&out)
    );
}
