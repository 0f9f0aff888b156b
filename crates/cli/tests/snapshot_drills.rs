//! `tidemark verify` and `tidemark serve` through the real binary, on a backup of a server seeded by
//! pymongo (an independent client) with several collections, indexes (TTL, partial, unique,
//! compound), a capped collection and a view.
//!
//! - The drill must pass on the snapshot, and must fail naming the namespace when a pack is
//!   damaged, when a pack is missing, and when a document disappears from the restored server behind
//!   the drill's back (the test-only `TIDEMARK_DRILL_TEST_DELETE_ONE` hook).
//! - `serve`: pymongo reads the served snapshot (right after start, while it loads) and must get what
//!   a full `restore --repo` of the same snapshot gives; every write must fail with mongod's
//!   read-only error (the server's own `readonly_pymongo.py` checks).

mod dump_support;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use dump_support::{Server, pymongo, stderr};

struct Repo {
    _dir: tempfile::TempDir,
    url: String,
    pw: String,
}

fn tidemark_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
    cmd.args(args).stdin(Stdio::null()).env_remove("TIDEMARK_PASSWORD");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Seeds the source server and backs it up into a new repository.
fn backed_up_shop() -> Repo {
    let server = Server::start();
    pymongo(
        &server.uri,
        r#"
import datetime, random
from bson import Decimal128, ObjectId
rng = random.Random(7)
db = client["shop"]
far = datetime.datetime(2200, 1, 1)
# About 3 MB of incompressible text: most of the repository's bytes belong to shop.orders.
db.orders.insert_many([{"_id": i, "customer": i % 300, "status": ["new", "paid", "shipped"][i % 3],
                        "total": Decimal128("%d.99" % i), "blob": "%x" % rng.getrandbits(4096)}
                       for i in range(3000)])
db.orders.create_index([("customer", 1), ("total", -1)], name="customer_total")
db.orders.create_index("status", name="open_status", partialFilterExpression={"status": {"$ne": "shipped"}})
db.customers.insert_many([{"_id": ObjectId(), "email": "c%d@example.com" % i, "expires": far} for i in range(300)])
db.customers.create_index("email", unique=True, name="email_unique")
db.customers.create_index("expires", expireAfterSeconds=3600, name="expires_ttl")
db.create_collection("events", capped=True, size=65536, max=100)
db.events.insert_many([{"n": i} for i in range(150)])
db.create_collection("paid_orders", viewOn="orders", pipeline=[{"$match": {"status": "paid"}}])
client["crm"]["notes"].insert_many([{"_id": "n%d" % i, "text": "note %d" % i} for i in range(50)])
client.admin.command("createUser", "ops", pwd="secret", roles=["root"])
db.command("createUser", "clerk", pwd="secret", roles=[{"role": "read", "db": "shop"}])
db.command("createRole", "auditor", privileges=[{"resource": {"db": "shop", "collection": "orders"}, "actions": ["find"]}], roles=[])
print("ok")
"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "drill password\n").unwrap();
    let url = dir.path().join("repo").display().to_string();
    let pw = pw.display().to_string();
    for args in [
        vec!["repo", "init", "--repo", &url, "--password-file", &pw],
        vec!["backup", "--repo", &url, "--password-file", &pw, "--uri", &server.uri],
    ] {
        let out = tidemark_env(&args, &[]);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    Repo { _dir: dir, url, pw }
}

fn verify(repo: &Repo, extra: &[&str], env: &[(&str, &str)]) -> (Output, serde_json::Value) {
    let mut args = vec![
        "verify",
        "--repo",
        &repo.url,
        "--password-file",
        &repo.pw,
        "--json",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    let out = tidemark_env(&args, env);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}\n{}", stderr(&out)));
    (out, json)
}

/// `namespace -> status` from the JSON report.
fn statuses(report: &serde_json::Value) -> Vec<(String, String)> {
    report["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["namespace"].as_str().unwrap().to_owned(),
                n["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn namespace<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["namespace"] == name)
        .unwrap_or_else(|| panic!("{name} not in {report}"))
}

fn packs(repo: &Repo) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(&repo.url).join("data"), &mut out);
    assert!(!out.is_empty());
    out
}

#[test]
fn a_good_snapshot_passes_and_a_document_deleted_behind_the_back_is_named() {
    let repo = backed_up_shop();
    let (out, report) = verify(&repo, &[], &[]);
    assert!(out.status.success(), "{report:#}\n{}", stderr(&out));
    assert_eq!(report["ok"], true);
    let all = statuses(&report);
    for ns in [
        "shop.orders",
        "shop.customers",
        "shop.events",
        "shop.paid_orders",
        "crm.notes",
        "admin.system.users",
        "admin.system.roles",
    ] {
        assert!(all.contains(&(ns.to_owned(), "ok".to_owned())), "{ns}: {all:?}");
    }
    assert!(all.iter().all(|(_, s)| s == "ok" || s == "skipped"), "{all:?}");
    assert_eq!(namespace(&report, "shop.orders")["found_documents"], 3000);
    // The capped collection keeps its last 100 documents, as the source server did.
    assert_eq!(namespace(&report, "shop.events")["found_documents"], 100);

    // Text report: one line per namespace and the verdict.
    let text = tidemark_env(
        &["verify", "--repo", &repo.url, "--password-file", &repo.pw, "--quiet"],
        &[],
    );
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(text.status.success(), "{stdout}");
    assert!(
        stdout.contains("drill passed") && stdout.contains("shop.customers"),
        "{stdout}"
    );

    // --dbpath keeps the restored copy; the directory must be new or empty.
    let scratch = tempfile::tempdir().unwrap();
    let dbpath = scratch.path().join("drill");
    let (out, report) = verify(&repo, &["--dbpath", dbpath.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{report:#}");
    assert!(dbpath.join("storage.bson").exists());
    let (out, report) = verify(&repo, &["--dbpath", dbpath.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(report["error"].as_str().unwrap().contains("is not empty"), "{report}");
    // A snapshot over the memory budget is refused before anything starts.
    let (out, report) = verify(&repo, &["--memory-budget", "1"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(report["error"].as_str().unwrap().contains("--target"), "{report}");

    let (out, report) = verify(&repo, &[], &[("TIDEMARK_DRILL_TEST_DELETE_ONE", "crm.notes")]);
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    assert_eq!(report["ok"], false);
    let bad: Vec<_> = statuses(&report)
        .into_iter()
        .filter(|(_, s)| s != "ok" && s != "skipped")
        .collect();
    assert_eq!(bad, [("crm.notes".to_owned(), "mismatch".to_owned())]);
    let problems = namespace(&report, "crm.notes")["problems"].to_string();
    assert!(
        problems.contains("50 document(s) expected, 49 found") && problems.contains("is missing"),
        "{problems}"
    );
    assert!(stderr(&out).contains("1 of"), "{}", stderr(&out));
}

#[test]
fn a_flipped_bit_in_a_pack_names_the_namespace() {
    let repo = backed_up_shop();
    for pack in packs(&repo) {
        let mut bytes = std::fs::read(&pack).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        std::fs::write(&pack, bytes).unwrap();
    }
    let (out, report) = verify(&repo, &[], &[]);
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    let orders = namespace(&report, "shop.orders");
    assert_eq!(orders["status"], "damaged", "{report:#}");
    assert!(orders["problems"].to_string().contains("shop.orders"), "{orders}");
    // Nothing else is blamed on the repository.
    let damaged: Vec<_> = statuses(&report).into_iter().filter(|(_, s)| s == "damaged").collect();
    assert_eq!(damaged.len(), 1, "{damaged:?}");

    // Served, the damaged collection fails its queries with the repository's error; the others answer.
    let (mut serve, port) = spawn_serve(&repo, &["--snapshot", "latest", "--quiet"], Stdio::null());
    let answers = pymongo(
        &format!("mongodb://127.0.0.1:{port}/"),
        r#"
print(client.crm.notes.count_documents({}))
try:
    client.shop.orders.find_one()
except pymongo.errors.OperationFailure as e:
    print(e.code, "shop.orders could not be loaded" in str(e))
"#,
    );
    assert_eq!(answers, "50\n96 True\n");
    let _ = serve.kill();
    let _ = serve.wait();
}

#[test]
fn a_missing_pack_names_the_namespace() {
    let repo = backed_up_shop();
    for pack in packs(&repo) {
        std::fs::remove_file(pack).unwrap();
    }
    let (out, report) = verify(&repo, &[], &[]);
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    let damaged: Vec<_> = statuses(&report).into_iter().filter(|(_, s)| s == "damaged").collect();
    assert_eq!(damaged.len(), 1, "{report:#}");
    let ns = &damaged[0].0;
    assert!(
        namespace(&report, ns)["problems"].to_string().contains(ns.as_str()),
        "{report:#}"
    );
    // The namespaces after it were never restored: the drill says so instead of passing them.
    assert!(statuses(&report).iter().any(|(_, s)| s == "not restored"), "{report:#}");
}

/// Everything pymongo reads from a server: collection names and types, indexes, documents in
/// `_id` order (canonical Extended JSON), `count_documents` with a filter, and an aggregation.
const READ_EVERYTHING: &str = r#"
from bson import json_util
opts = json_util.JSONOptions(json_mode=json_util.JSONMode.CANONICAL)
out = []
for name in sorted(n for n in client.list_database_names() if n not in ("admin", "config", "local")):
    db = client[name]
    out.append([name, sorted(db.list_collection_names())])
    for spec in sorted(db.list_collections(), key=lambda s: s["name"]):
        coll = db[spec["name"]]
        out.append([spec["name"], spec["type"], json_util.dumps(spec.get("options", {}), json_options=opts)])
        if spec["type"] == "view":
            out.append(json_util.dumps(list(coll.find().sort("_id", 1)), json_options=opts))
            continue
        out.append(sorted(json_util.dumps(i, json_options=opts) for i in coll.list_indexes()))
        out.append(json_util.dumps(list(coll.find().sort("_id", 1)), json_options=opts))
        out.append(coll.count_documents({"_id": {"$exists": True}}))
out.append(json_util.dumps(list(client.shop.orders.aggregate([
    {"$match": {"status": {"$ne": "shipped"}}},
    {"$group": {"_id": "$customer", "n": {"$sum": 1}, "total": {"$sum": "$total"}}},
    {"$sort": {"_id": 1}}, {"$limit": 20}])), json_options=opts))
out.append(client.shop.customers.count_documents({"email": {"$regex": "^c1"}}))
print(json.dumps(out))
"#;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `tidemark serve` on a free port with `args` and waits until it listens.
fn spawn_serve(repo: &Repo, args: &[&str], stdout: Stdio) -> (std::process::Child, u16) {
    let port = free_port();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args([
            "serve",
            "--repo",
            &repo.url,
            "--password-file",
            &repo.pw,
            "--port",
            &port.to_string(),
        ])
        .args(args)
        .env_remove("TIDEMARK_PASSWORD")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "tidemark serve did not listen on {port}");
        assert!(serve.try_wait().unwrap().is_none(), "tidemark serve exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    (serve, port)
}

#[test]
fn serve_gives_what_a_full_restore_gives_and_refuses_every_write() {
    let repo = backed_up_shop();
    // The reference: a full restore of the same snapshot.
    let restored = Server::start();
    let out = tidemark_env(
        &[
            "restore",
            &restored.uri,
            "--repo",
            &repo.url,
            "--password-file",
            &repo.pw,
            "--snapshot",
            "latest",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let expected = pymongo(&restored.uri, READ_EVERYTHING);

    let (serve, port) = spawn_serve(&repo, &["--snapshot", "latest"], Stdio::piped());
    // Straight away, while the collections may still be loading.
    let uri = format!("mongodb://127.0.0.1:{port}/");
    let served = pymongo(&uri, READ_EVERYTHING);
    assert_eq!(served, expected);
    assert!(
        served.contains("customer_total") && served.contains("paid_orders"),
        "{served}"
    );

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../server/tests/readonly_pymongo.py");
    let checked = Command::new("python3")
        .args([script, &port.to_string(), "shop", "orders"])
        .output()
        .unwrap();
    assert!(
        checked.status.success() && String::from_utf8_lossy(&checked.stdout).trim_end().ends_with("OK"),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert_eq!(
        pymongo(&uri, READ_EVERYTHING),
        expected,
        "a refused write changed something"
    );

    // SIGTERM (as Ctrl-C) stops it cleanly.
    let status = Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = serve.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("serving snapshot") && stdout.contains("loaded shop.orders"),
        "{stdout}"
    );
}

/// A dump of a seeded server plus an oplog.bson written by pymongo (insert, update, delete, index
/// build), backed up with `backup --from-dump`: a snapshot whose oplog changes documents.
fn backed_up_with_oplog(server: &Server) -> Repo {
    pymongo(
        &server.uri,
        r#"
client.shop.orders.insert_many([{"_id": i, "s": "x" * i} for i in range(200)])
client.shop.customers.insert_many([{"_id": i, "email": "c%d" % i} for i in range(20)])
print("ok")
"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("dump");
    let out = tidemark_env(
        &["dump", "--uri", &server.uri, "-o", dump.to_str().unwrap(), "--quiet"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let written = Command::new("python3")
        .arg("-c")
        .arg(
            r#"
import datetime, sys, bson
from bson import Timestamp
T, w = 1800000000, datetime.datetime(2027, 1, 15)
entries = [
    {"ts": Timestamp(T, 1), "t": 1, "v": 2, "op": "i", "ns": "shop.orders", "o": {"_id": 1000, "s": "new"}, "wall": w},
    {"ts": Timestamp(T, 2), "t": 1, "v": 2, "op": "u", "ns": "shop.orders", "o": {"$v": 2, "diff": {"u": {"s": "changed"}}},
     "o2": {"_id": 1}, "wall": w},
    {"ts": Timestamp(T + 1, 1), "t": 1, "v": 2, "op": "d", "ns": "shop.orders", "o": {"_id": 2}, "wall": w},
    {"ts": Timestamp(T + 2, 1), "t": 1, "v": 2, "op": "c", "ns": "shop.$cmd",
     "o": {"createIndexes": "customers", "v": 2, "key": {"x": 1}, "name": "x_1"}, "wall": w},
]
open(sys.argv[1] + "/oplog.bson", "wb").write(b"".join(bson.encode(e) for e in entries))
"#,
        )
        .arg(&dump)
        .status()
        .unwrap();
    assert!(written.success());
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "drill password\n").unwrap();
    let url = dir.path().join("repo").display().to_string();
    let pw = pw.display().to_string();
    for args in [
        vec!["repo", "init", "--repo", &url, "--password-file", &pw],
        vec![
            "backup",
            "--repo",
            &url,
            "--password-file",
            &pw,
            "--from-dump",
            dump.to_str().unwrap(),
        ],
    ] {
        let out = tidemark_env(&args, &[]);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    Repo { _dir: dir, url, pw }
}

#[test]
fn oplog_replay_and_roll_forward_into_a_target() {
    let source = Server::start();
    let repo = backed_up_with_oplog(&source);

    // Embedded: the replay is applied; the documents it wrote are counted, the rest compared.
    let (out, report) = verify(&repo, &[], &[]);
    assert!(out.status.success(), "{report:#}");
    assert_eq!(report["restore"]["oplog_entries"], 4, "{report:#}");
    let orders = namespace(&report, "shop.orders");
    assert_eq!(orders["status"], "ok");
    assert_eq!(orders["replayed_documents"], 2, "{orders}"); // _id 1 and 2 in the dump, 1000 and 1 restored
    assert_eq!(orders["found_documents"], 200);
    assert!(
        namespace(&report, "shop.customers")["notes"]
            .to_string()
            .contains("createIndexes")
    );

    // Into a MongoDB given with --target, rolled forward to the snapshot's consistency point.
    let target = Server::start();
    let (out, report) = verify(&repo, &["--target", &target.uri, "--at", "1800000002,1"], &[]);
    assert!(out.status.success(), "{report:#}");
    // pymongo sees the rolled-forward state the drill checked.
    let state = pymongo(
        &target.uri,
        r#"
o = client.shop.orders
print(o.count_documents({}), o.find_one({"_id": 1000})["s"], o.find_one({"_id": 1})["s"], o.find_one({"_id": 2}))
print(sorted(i["name"] for i in client.shop.customers.list_indexes()))
"#,
    );
    assert_eq!(state, "200 new changed None\n['_id_', 'x_1']\n");

    // The target now holds data: refused without --drop, accepted with it.
    let (out, _) = verify(&repo, &["--target", &target.uri], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is not empty"), "{}", stderr(&out));
    let (out, report) = verify(&repo, &["--target", &target.uri, "--drop"], &[]);
    assert!(out.status.success(), "{report:#}");

    // serve --at: the rolled-forward state, read-only.
    let (mut serve, port) = spawn_serve(&repo, &["--at", "1800000002,1", "--quiet"], Stdio::null());
    let served = pymongo(
        &format!("mongodb://127.0.0.1:{port}/"),
        r#"
o = client.shop.orders
print(o.count_documents({}), o.find_one({"_id": 1000})["s"], o.find_one({"_id": 1})["s"], o.find_one({"_id": 2}))
print(sorted(i["name"] for i in client.shop.customers.list_indexes()))
try:
    o.insert_one({"_id": "x"})
except pymongo.errors.OperationFailure as e:
    print(e.code)
"#,
    );
    assert_eq!(served, "200 new changed None\n['_id_', 'x_1']\n20\n");
    let _ = serve.kill();
    let _ = serve.wait();

    // A point before every snapshot is refused with the planner's explanation.
    let out = tidemark_env(
        &[
            "verify",
            "--repo",
            &repo.url,
            "--password-file",
            &repo.pw,
            "--at",
            "1800000000,2",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("before every snapshot"), "{}", stderr(&out));
}
