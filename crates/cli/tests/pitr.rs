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

use dump_support::{Server, pymongo, stderr};

/// Runs `tidemark` (stdin closed, no repository password in the environment).
fn tidemark(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(args)
        .env_remove("TIDEMARK_PASSWORD")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

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
    # The writer's own model of the database.
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
    let program = format!(
        "import sys, json, pymongo\nclient = pymongo.MongoClient(sys.argv[1], directConnection=True)\n{COMPARE}"
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(program)
        .arg(target)
        .arg(ops)
        .arg(point)
        .arg(selection)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "compare failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// An oplog timestamp as `(seconds, increment)`.
type Point = (u32, u32);

/// `t,i` as a pair.
fn parse_point(p: &str) -> (u32, u32) {
    let (t, i) = p.split_once(',').unwrap();
    (t.parse().unwrap(), i.parse().unwrap())
}

/// Archives the source's oplog after `after` into the repository with the repository's slice
/// writer: `pieces` contiguous slices, then (with `gap`) a slice that resumes `gap` entries later
/// and records the hole, as the follower does after an oplog rollover. Returns the `ts` of every
/// entry archived contiguously, and the hole's `(after, resumed_at)`.
fn archive_oplog(
    repo: &Repo,
    source: &str,
    after: (u32, u32),
    pieces: usize,
    gap: usize,
) -> (Vec<Point>, Option<(Point, Point)>) {
    use tidemark_repo::oplog_archive::{SliceStart, SliceWriter};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let storage = tidemark_repo::Storage::open(&repo.url, &tidemark_repo::StorageConfig::default())
            .await
            .unwrap();
        let repository = tidemark_repo::Repository::open(storage, None).await.unwrap();
        let lock = tidemark_repo::lock::Lock::acquire(repository.storage(), false)
            .await
            .unwrap();
        let client = mongodb::Client::with_uri_str(format!("{source}?directConnection=true"))
            .await
            .unwrap();
        let oplog = client.database("local").collection::<bson::RawDocumentBuf>("oplog.rs");
        let from = bson::Timestamp {
            time: after.0,
            increment: after.1,
        };
        let mut cursor = oplog
            .find(bson::doc! {"ts": {"$gt": from}})
            .sort(bson::doc! {"$natural": 1})
            .await
            .unwrap();
        let mut entries = Vec::new();
        while cursor.advance().await.unwrap() {
            entries.push(bson::RawDocumentBuf::from_bytes(cursor.current().as_bytes().to_vec()).unwrap());
        }
        let ts = |e: &bson::RawDocumentBuf| {
            let t = e.get_timestamp("ts").unwrap();
            (t.time, t.increment)
        };
        let contiguous = entries.len() - if gap > 0 { entries.len() / 4 } else { 0 };
        let mut start = SliceStart::ContinuesFrom(tidemark_repo::Timestamp { t: after.0, i: after.1 });
        let size = contiguous.div_ceil(pieces);
        for piece in entries[..contiguous].chunks(size) {
            let mut writer = SliceWriter::new(&repository, "rs0", start);
            for e in piece {
                writer.write_entry(e).await.unwrap();
            }
            let slice = writer.seal().await.unwrap().unwrap();
            start = SliceStart::ContinuesFrom(slice.last);
        }
        let mut hole = None;
        if gap > 0 {
            let resume = contiguous + gap;
            let SliceStart::ContinuesFrom(last) = start else {
                unreachable!()
            };
            let mut writer = SliceWriter::new(&repository, "rs0", SliceStart::GapAfter(last));
            for e in &entries[resume..] {
                writer.write_entry(e).await.unwrap();
            }
            writer.seal().await.unwrap().unwrap();
            hole = Some(((last.t, last.i), ts(&entries[resume])));
        }
        lock.release().await.unwrap();
        (entries[..contiguous].iter().map(ts).collect(), hole)
    })
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
        .arg(format!(
            "import sys, json, pymongo\nclient = pymongo.MongoClient(sys.argv[1], directConnection=True)\n{WRITER}"
        ))
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
    // Three fuzzy snapshots while the writer runs, then renames join the workload.
    let points: Vec<String> = (0..3).map(|_| backup(&repo, &source.uri)).collect();
    std::fs::write(&phase2, "").unwrap();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert!(writer.wait().unwrap().success());
    let written = std::fs::read_to_string(&ops).unwrap();
    let kinds: std::collections::BTreeSet<&str> = written.lines().map(|l| l.split('"').nth(3).unwrap_or("")).collect();
    assert_eq!(kinds.len(), 8, "the workload exercised {kinds:?}");
    assert!(
        parse_point(&points[0]) < parse_point(&points[1]) && parse_point(&points[1]) < parse_point(&points[2]),
        "{points:?}"
    );

    let everything = r#"{"include": null, "from": "", "to": ""}"#;
    // Snapshots alone: each consistency point is restorable, nothing else.
    for (n, point) in points.iter().enumerate() {
        let target = Server::start();
        let out = ok(restore_at(&repo, &target.uri, point, &[]), "restore --at");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let consistency = format!("{},{}", report["consistencyTs"]["t"], report["consistencyTs"]["i"]);
        assert_eq!(&consistency, point, "{report}");
        assert!(report["oplogApplied"].as_u64().unwrap() > 0, "{report}");
        assert_eq!(compare(&target.uri, &ops, point, everything), "same", "at {point}");
        // The model tells the points apart: the workload wrote between the snapshots.
        let other = &points[(n + 1) % points.len()];
        assert_ne!(
            compare(&target.uri, &ops, other, everything),
            "same",
            "{point} vs {other}"
        );
    }
    let target = Server::start();
    let (t1, i1) = parse_point(&points[1]);
    let out = restore_at(&repo, &target.uri, &format!("{t1},{}", i1 + 1), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("the nearest restorable points are"),
        "{}",
        stderr(&out)
    );

    // Archive the oplog from the first snapshot on, in three slices, and then a hole.
    let (archived, hole) = archive_oplog(&repo, &source.uri, parse_point(&points[0]), 3, 12);
    let (hole_after, hole_resumed) = hole.unwrap();
    let mut rng = Rng(20_261_124);
    let mut chosen: Vec<(u32, u32)> = (0..4).map(|_| archived[rng.below(archived.len())]).collect();
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
        assert_eq!(
            compare(&target.uri, &ops, &point, everything),
            "same",
            "at {point}: {report}"
        );
    }

    // Namespace-aware replay at a point after renames: only app.*, renamed to copy.* (renames into
    // other.* leave the selection).
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
    let inside = format!("{},{}", hole_after.0, hole_after.1 + 1);
    if parse_point(&inside) < hole_resumed {
        let out = restore_at(&repo, &target.uri, &inside, &[]);
        assert_eq!(out.status.code(), Some(1));
        let message = stderr(&out);
        assert!(
            message.contains("is inside a gap of the archived oplog of rs0: no entries are stored between"),
            "{message}"
        );
        assert!(
            message.contains(&format!("Timestamp({}, {})", hole_after.0, hole_after.1)),
            "{message}"
        );
        assert!(
            message.contains(&format!("Timestamp({}, {})", hole_resumed.0, hole_resumed.1)),
            "{message}"
        );
    }
    let out = restore_at(&repo, &target.uri, &format!("{},0", hole_resumed.0 + 3600), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is after a gap of the archived oplog of rs0"),
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
        Some(u64::from(archived.last().unwrap().0)),
        "{plan}"
    );
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
