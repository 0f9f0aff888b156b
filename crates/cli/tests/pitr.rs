//! `tidemark restore --repo R --at POINT` against a replica set of `tidemark-server` under a random
//! workload.
//!
//! A seeded random writer (pymongo, an independent client) runs inserts, updates, deletes,
//! collection creates, drops, renames (within the `app` database and out of it) and index builds
//! and drops, one operation at a time; after each operation it reads the timestamp of the newest
//! entry of the source's oplog, which is that operation's. Backups with `--oplog` run while it
//! writes, so every snapshot is fuzzy and needs its captured oplog. The expected state at a point
//! `P` is the writer's own model after the operations with `ts <= P` (the writer knows what each
//! operation means; our replay code plays no part in it), and every restore is compared with it
//! through pymongo: collections, documents and index names, also with namespace filters and renames.

mod dump_support;

use std::path::Path;

use dump_support::{Server, pymongo, pymongo_program, pymongo_with_args, stderr};

/// Runs `tidemark` (stdin closed, no repository password in the environment).
fn tidemark(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(args)
        .env_remove("TIDEMARK_PASSWORD")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// The writer's model of the database: what each operation does, as MongoDB documents it.
const MODEL: &str = r#"
def apply(live, indexes, op):
    ns = op["ns"]
    if op["op"] == "ins":
        live[ns][op["doc"]["_id"]] = op["doc"]
    elif op["op"] == "upd":
        live[ns][op["id"]] = dict(live[ns][op["id"]], v=op["v"], u=True)
    elif op["op"] == "del":
        del live[ns][op["id"]]
    elif op["op"] == "create":
        live[ns], indexes[ns] = {}, set()
    elif op["op"] == "drop":
        del live[ns], indexes[ns]
    elif op["op"] == "rename":
        live[op["to"]], indexes[op["to"]] = live.pop(ns), indexes.pop(ns)
    elif op["op"] == "index":
        indexes[ns].add(op["name"])
    elif op["op"] == "dropIndex":
        indexes[ns].discard(op["name"])
"#;

/// The random writer: `argv[2]` ops file (JSON lines), `argv[3]` seed, `argv[4]` operations after
/// the file `argv[5]` appears. Prints `writing` once under way. Every operation makes exactly one
/// oplog entry. Renames and drops start only once `argv[5]` exists: a backup with `--oplog`
/// refuses a window containing a rename, as mongodump does, and fails on a collection dropped
/// while it lists its indexes, so they only go with the archived oplog.
const WRITER: &str = r#"
import os, random, time
path, seed, count, phase2 = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
renames, drops, left = 0, 0, None
rng = random.Random(seed)
oplog = client.local["oplog.rs"]
live = {"app.c0": {}, "app.c1": {}, "other.o0": {}}  # ns -> {_id: doc}
indexes = {ns: set() for ns in live}
out = open(path, "w")
def last_ts():
    e = next(oplog.find({"op": {"$ne": "n"}}).sort("$natural", -1).limit(1))
    return [e["ts"].time, e["ts"].inc]
def coll(ns):
    db, c = ns.split(".", 1)
    return client[db][c]
next_id = 0
k = -1
while left is None or left > 0:
    k += 1
    if k == 20:
        print("writing", flush=True)
    if left is None and k > 20 and os.path.exists(phase2):
        renames, drops, left = 4, 2, count
    if left is not None:
        left -= 1
    names = sorted(live)
    app = [n for n in names if n.startswith("app.")]
    kind = rng.choices(["ins", "upd", "del", "create", "drop", "rename", "index", "dropIndex"],
                       [30, 25, 10, 3, drops, renames, 3, 2])[0]
    ns = rng.choice(names)
    op = None
    if kind == "ins":
        next_id += 1
        doc = {"_id": next_id, "v": k, "pad": "x" * rng.randrange(50)}
        coll(ns).insert_one(doc)
        op = {"op": "ins", "ns": ns, "doc": doc}
    elif kind == "upd" and live[ns]:
        i = rng.choice(sorted(live[ns]))
        coll(ns).update_one({"_id": i}, {"$set": {"v": k, "u": True}})
        op = {"op": "upd", "ns": ns, "id": i, "v": k}
    elif kind == "del" and live[ns]:
        i = rng.choice(sorted(live[ns]))
        coll(ns).delete_one({"_id": i})
        op = {"op": "del", "ns": ns, "id": i}
    elif kind == "create":
        ns = "app.n%d" % k
        client.app.create_collection("n%d" % k)
        op = {"op": "create", "ns": ns}
    elif kind == "drop" and len(app) > 1:
        ns = rng.choice(app)
        coll(ns).drop()
        op = {"op": "drop", "ns": ns}
    elif kind == "rename" and app:
        ns = rng.choice(app)
        to = rng.choice(["app.r%d" % k, "other.r%d" % k])
        client.admin.command("renameCollection", ns, to=to)
        op = {"op": "rename", "ns": ns, "to": to}
    elif kind == "index" and ns not in ("other.o0",):
        name = "ix%d" % k
        coll(ns).create_index([("v", 1), ("f%d" % k, 1)], name=name)
        op = {"op": "index", "ns": ns, "name": name}
    elif kind == "dropIndex" and indexes[ns]:
        name = rng.choice(sorted(indexes[ns]))
        coll(ns).drop_index(name)
        op = {"op": "dropIndex", "ns": ns, "name": name}
    if op is None:
        continue
    apply(live, indexes, op)
    op["ts"] = last_ts()
    out.write(json.dumps(op) + "\n")
    out.flush()
    time.sleep(0.002)
print("done", flush=True)
"#;

/// Compares a restored server with the writer's model at a point.
/// `argv[2]` ops file, `argv[3]` point `t,i`, `argv[4]` JSON `{"include": prefix or null,
/// "from": prefix, "to": prefix}` describing the selection. Prints `same` or the differences.
const COMPARE: &str = r#"
ops = [json.loads(l) for l in open(sys.argv[2])]
t, i = map(int, sys.argv[3].split(","))
sel = json.loads(sys.argv[4])
live = {"app.c0": {}, "app.c1": {}, "other.o0": {}}
indexes = {ns: set() for ns in live}
for seed_ns, docs in json.loads(open(sys.argv[2] + ".seed").read()).items():
    for d in docs:
        live[seed_ns][d["_id"]] = d
for op in ops:
    if tuple(op["ts"]) > (t, i):
        break
    apply(live, indexes, op)
want = {}
for ns in live:
    if sel["include"] is not None and not ns.startswith(sel["include"]):
        continue
    dest = sel["to"] + ns[len(sel["from"]):] if sel["from"] and ns.startswith(sel["from"]) else ns
    want[dest] = {"docs": [live[ns][k] for k in sorted(live[ns])], "indexes": sorted(indexes[ns])}
got = {}
for db in client.list_database_names():
    if db in ("admin", "config", "local"):
        continue
    for name in client[db].list_collection_names():
        c = client[db][name]
        got[db + "." + name] = {"docs": list(c.find({}).sort("_id", 1)),
                                "indexes": sorted(ix["name"] for ix in c.list_indexes() if ix["name"] != "_id_")}
if got == want:
    print("same")
else:
    for ns in sorted(set(got) | set(want)):
        if got.get(ns) != want.get(ns):
            print("differs", ns, "got", str(got.get(ns))[:300], "want", str(want.get(ns))[:300])
"#;

fn ok(out: std::process::Output, what: &str) -> std::process::Output {
    assert!(out.status.success(), "{what} failed: {}", stderr(&out));
    out
}

struct Repo {
    _dir: tempfile::TempDir,
    url: String,
}

fn init_repo() -> Repo {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("repo").display().to_string();
    ok(
        tidemark(&["repo", "init", "--repo", &url, "--insecure-no-password"]),
        "repo init",
    );
    Repo { _dir: dir, url }
}

/// Backs up `uri` with `--oplog`; returns the consistency point `t,i`.
fn backup(repo: &Repo, uri: &str) -> String {
    let out = ok(
        tidemark(&[
            "backup",
            "--repo",
            &repo.url,
            "--insecure-no-password",
            "--uri",
            uri,
            "--oplog",
            "--replica-set",
            "rs0",
            "--json",
        ]),
        "backup",
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let last = &json["oplog_window"]["last"];
    format!("{},{}", last["t"], last["i"])
}

fn restore_at(repo: &Repo, target: &str, point: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "restore",
        target,
        "--repo",
        &repo.url,
        "--insecure-no-password",
        "--at",
        point,
        "--json",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    tidemark(&args)
}

fn compare(target: &str, ops: &Path, point: &str, selection: &str) -> String {
    let ops = ops.display().to_string();
    pymongo_with_args(target, &format!("{MODEL}{COMPARE}"), &[&ops, point, selection])
        .trim()
        .to_owned()
}

/// An oplog timestamp as `(seconds, increment)`.
type Point = (u32, u32);

/// `t,i` as a pair.
fn parse_point(p: &str) -> (u32, u32) {
    let (t, i) = p.split_once(',').unwrap();
    (t.parse().unwrap(), i.parse().unwrap())
}

/// `tidemark oplog follow` on `repo` from `uri`, with `extra` arguments.
fn follow_command(repo: &Repo, uri: &str, extra: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"));
    cmd.args([
        "oplog",
        "follow",
        "--uri",
        uri,
        "--repo",
        &repo.url,
        "--insecure-no-password",
        "--quiet",
    ])
    .args(extra)
    .env_remove("TIDEMARK_PASSWORD")
    .stdin(std::process::Stdio::null());
    cmd
}

/// Archives everything committed now and seals (`oplog follow --once`).
fn follow_once(repo: &Repo, uri: &str) -> std::process::Output {
    follow_command(repo, uri, &["--once"]).output().unwrap()
}

/// A follower running in the background, sealing slices often.
fn spawn_follower(repo: &Repo, uri: &str) -> std::process::Child {
    follow_command(repo, uri, &["--seal-interval", "200ms"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// `ts` of every entry of the source's oplog after `after`, in order.
fn source_oplog_after(uri: &str, after: Point) -> Vec<Point> {
    let out = pymongo(
        uri,
        &format!(
            "from bson import Timestamp\nfor e in client.local['oplog.rs'].find({{'ts': {{'$gt': Timestamp({}, {})}}}}).sort('$natural', 1):\n    print(e['ts'].time, e['ts'].inc)",
            after.0, after.1
        ),
    );
    out.lines()
        .map(|l| {
            let (t, i) = l.split_once(' ').unwrap();
            (t.parse().unwrap(), i.parse().unwrap())
        })
        .collect()
}

#[test]
fn restores_to_random_points_of_a_random_workload_match_the_writers_model() {
    let source = Server::start_replica_set();
    let dir = tempfile::tempdir().unwrap();
    let ops = dir.path().join("ops.jsonl");
    let phase2 = dir.path().join("phase2");
    // Seed documents, recorded for the model.
    let seed = pymongo(
        &source.uri,
        "seed = {'app.c0': [{'_id': -i, 'v': -1} for i in range(1, 300)], 'app.c1': [], 'other.o0': [{'_id': -1, 'v': -1}]}\nfor ns, docs in seed.items():\n    db, c = ns.split('.', 1)\n    client[db].create_collection(c)\n    if docs:\n        client[db][c].insert_many([dict(d) for d in docs])\nprint(json.dumps(seed))",
    );
    std::fs::write(dir.path().join("ops.jsonl.seed"), seed.trim()).unwrap();
    let repo = init_repo();

    let mut writer = std::process::Command::new("python3")
        .arg("-c")
        .arg(pymongo_program(&format!("{MODEL}{WRITER}")))
        .arg(&source.uri)
        .arg(&ops)
        .arg("20261124")
        .arg("300")
        .arg(&phase2)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stdout = std::io::BufReader::new(writer.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line.trim(), "writing");
    // Three fuzzy snapshots while the writer runs; the follower archives from the first one on,
    // is killed (SIGKILL) in the middle and restarted; then renames and drops join the workload.
    let mut points = vec![backup(&repo, &source.uri)];
    // A first slice continuing from the first snapshot (a follower with no slice yet starts at the
    // newest snapshot), then a long-running follower.
    let first = follow_once(&repo, &source.uri);
    assert!(first.status.success(), "oplog follow --once: {}", stderr(&first));
    let mut follower = spawn_follower(&repo, &source.uri);
    points.push(backup(&repo, &source.uri));
    follower.kill().unwrap();
    follower.wait().unwrap();
    points.push(backup(&repo, &source.uri));
    let mut follower = spawn_follower(&repo, &source.uri);
    std::fs::write(&phase2, "").unwrap();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert!(writer.wait().unwrap().success());
    follower.kill().unwrap();
    follower.wait().unwrap();
    let caught_up = follow_once(&repo, &source.uri);
    assert!(
        caught_up.status.success(),
        "oplog follow --once: {}",
        stderr(&caught_up)
    );
    let written = std::fs::read_to_string(&ops).unwrap();
    let kinds: std::collections::BTreeSet<&str> = written.lines().map(|l| l.split('"').nth(3).unwrap_or("")).collect();
    assert_eq!(kinds.len(), 8, "the workload exercised {kinds:?}");
    assert!(
        parse_point(&points[0]) < parse_point(&points[1]) && parse_point(&points[1]) < parse_point(&points[2]),
        "{points:?}"
    );
    let archived = source_oplog_after(&source.uri, parse_point(&points[0]));
    assert!(archived.len() > 300, "{}", archived.len());

    // The three consistency points, random points of the window, and its end.
    let everything = r#"{"include": null, "from": "", "to": ""}"#;
    let mut rng = Rng(20_261_124);
    let mut chosen: Vec<Point> = points.iter().map(|p| parse_point(p)).collect();
    chosen.extend((0..3).map(|_| archived[rng.below(archived.len())]));
    chosen.push(*archived.last().unwrap());
    for (t, i) in chosen {
        let point = format!("{t},{i}");
        let target = Server::start();
        let out = ok(restore_at(&repo, &target.uri, &point, &[]), "restore --at");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        // The base is the newest snapshot at or before the point.
        let base = points.iter().rev().find(|p| parse_point(p) <= (t, i)).unwrap();
        let consistency = format!("{},{}", report["consistencyTs"]["t"], report["consistencyTs"]["i"]);
        assert_eq!(&consistency, base, "{report}");
        assert!(report["oplogApplied"].as_u64().unwrap() > 0, "{report}");
        assert_eq!(
            compare(&target.uri, &ops, &point, everything),
            "same",
            "at {point}: {report}"
        );
        // The model tells points apart: the workload wrote after each snapshot.
        if point == points[0] {
            assert_ne!(compare(&target.uri, &ops, &points[1], everything), "same");
        }
    }

    // Namespace-aware replay at the end, after renames and drops: only app.*, renamed to copy.*
    // (renames into other.* leave the selection).
    let point = format!("{},{}", archived.last().unwrap().0, archived.last().unwrap().1);
    let target = Server::start();
    let out = ok(
        restore_at(
            &repo,
            &target.uri,
            &point,
            &["--nsInclude", "app.*", "--nsFrom", "app.*", "--nsTo", "copy.*"],
        ),
        "restore --at with a selection",
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["oplogSkipped"].as_u64().unwrap() > 0, "{report}");
    assert!(report["entriesPerSecond"].as_f64().unwrap() > 0.0, "{report}");
    assert_eq!(
        compare(
            &target.uri,
            &ops,
            &point,
            r#"{"include": "app.", "from": "app.", "to": "copy."}"#
        ),
        "same"
    );

    // Points that are not restorable are refused with an explanation, before anything is written.
    let target = Server::start();
    let (t0, _) = parse_point(&points[0]);
    let out = restore_at(&repo, &target.uri, &format!("{},0", t0 - 3600), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is before every snapshot: the earliest restorable point is Timestamp("),
        "{}",
        stderr(&out)
    );
    let (tl, il) = *archived.last().unwrap();
    let out = restore_at(&repo, &target.uri, &format!("{},0", tl + 3600), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "is after the end of the archived oplog: the last restorable point is Timestamp({tl}, {il})"
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        compare(
            &target.uri,
            &ops,
            "0,0",
            r#"{"include": "none.", "from": "", "to": ""}"#
        ),
        "same",
        "nothing was written"
    );
    let out = restore_at(&repo, &target.uri, "yesterday", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("invalid --at value: "));

    // --dryRun prints the plan only.
    let out = ok(restore_at(&repo, &target.uri, &point, &["--dryRun"]), "dry run");
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["baseSnapshot"].as_str().unwrap().len(), 64, "{plan}");
    assert!(plan["snapshotOplog"]["first"]["t"].is_u64(), "{plan}");
    assert_eq!(
        plan["archivedOplog"]["upto"]["t"].as_u64(),
        Some(u64::from(tl)),
        "{plan}"
    );
}

#[test]
fn a_point_in_an_oplog_gap_is_refused_with_the_nearest_restorable_points() {
    // A 1 MiB oplog that rolls over while the follower is stopped.
    let source = Server::start_replica_set_with(tidemark_server::ServerConfig {
        oplog_size_mb: Some(1),
        ..tidemark_server::ServerConfig::default()
    });
    pymongo(
        &source.uri,
        "client.app.t.insert_many([{'_id': i} for i in range(100)])",
    );
    let repo = init_repo();
    let base = parse_point(&backup(&repo, &source.uri));
    assert!(follow_once(&repo, &source.uri).status.success());
    pymongo(&source.uri, "client.app.t.insert_one({'_id': 'marker'})");
    assert!(follow_once(&repo, &source.uri).status.success());
    let before_gap = *source_oplog_after(&source.uri, base).last().unwrap();
    pymongo(
        &source.uri,
        "for k in range(30):\n    client.app.big.insert_many([{'pad': 'y' * 1000} for i in range(100)])",
    );
    let out = follow_once(&repo, &source.uri);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a one-shot follow that records a gap fails: {}",
        stderr(&out)
    );
    let resumed = source_oplog_after(&source.uri, (0, 0))[0];
    assert!(resumed > before_gap);

    let target = Server::start();
    // The end of the window before the gap is restorable.
    let end = format!("{},{}", before_gap.0, before_gap.1);
    ok(
        restore_at(&repo, &target.uri, &end, &["--drop"]),
        "restore --at the end of the window",
    );
    let state = pymongo(
        &target.uri,
        "print(client.app.t.count_documents({}), client.app.big.count_documents({}))",
    );
    assert_eq!(state.trim(), "101 0");
    // Inside the gap: refused, naming the gap and the nearest restorable point.
    let inside = format!("{},{}", before_gap.0, before_gap.1 + 1);
    if parse_point(&inside) < resumed {
        let out = restore_at(&repo, &target.uri, &inside, &[]);
        assert_eq!(out.status.code(), Some(1));
        let message = stderr(&out);
        assert!(
            message.contains(&format!(
                "is inside a gap of the archived oplog of rs0: no entries are stored between Timestamp({}, {})",
                before_gap.0, before_gap.1
            )),
            "{message}"
        );
        assert!(
            message.contains(&format!(
                "the last restorable point is Timestamp({}, {})",
                before_gap.0, before_gap.1
            )),
            "{message}"
        );
    }
    // After the gap, with no snapshot after it: refused too; a new snapshot makes it restorable.
    let newest = *source_oplog_after(&source.uri, (0, 0)).last().unwrap();
    let newest = format!("{},{}", newest.0, newest.1);
    let out = restore_at(&repo, &target.uri, &newest, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is after a gap of the archived oplog of rs0"),
        "{}",
        stderr(&out)
    );
    let second = backup(&repo, &source.uri);
    let out = ok(
        restore_at(&repo, &target.uri, &second, &["--drop"]),
        "restore --at the new base",
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        format!("{},{}", report["consistencyTs"]["t"], report["consistencyTs"]["i"]),
        second
    );
    let state = pymongo(
        &target.uri,
        "print(client.app.t.count_documents({}), client.app.big.count_documents({}))",
    );
    assert_eq!(state.trim(), "101 3000");
}

/// A small deterministic generator (xorshift) for the chosen points.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        usize::try_from(self.0 % u64::try_from(n).unwrap()).unwrap()
    }
}
