//! Crash safety of the backup repository with real processes: `tidemark backup` and
//! `tidemark forget --prune` are killed with SIGKILL at several points of their run. Afterwards
//! `tidemark check --read-data` must pass (every snapshot's data present and verified), the next
//! backup and prune must work, and the latest snapshot must export byte for byte what was backed
//! up. The dumps are generated with pymongo's `bson` module (an independent encoder).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "crash test";

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
    cmd.args(args)
        .env("TIDEMARK_PASSWORD", PASSWORD)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn run_ok(args: &[&str]) -> String {
    let out: Output = command(args).output().unwrap();
    assert!(
        out.status.success(),
        "tidemark {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the command until `when` holds, then kills it with SIGKILL; true if it was killed (it
/// had not finished yet).
fn kill_when(args: &[&str], when: impl Fn() -> bool) -> bool {
    let mut child = command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if when() {
            child.kill().unwrap();
            child.wait().unwrap();
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    panic!("tidemark {args:?} did not finish");
}

/// Names of the objects under `repo/<kind>` (`data`, `index`, ...).
fn objects(repo: &Path, kind: &str) -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if let Some(name) = p.file_name().and_then(|n| n.to_str()) {
                // Files being written (temporary names) are not objects yet.
                if name.len() == 64 {
                    out.insert(name.to_owned());
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&repo.join(kind), &mut out);
    out
}

/// Writes a dump directory: `app.events` from `seed` (16 000 documents, about 6 MB of
/// mostly incompressible data) and `app.users` always the same (6 000 documents).
fn generate(dir: &Path, seed: u32) {
    let script = r#"
import bson, json, os, random, sys
root, seed = sys.argv[1], int(sys.argv[2])
os.makedirs(root + "/app", exist_ok=True)
for coll, n, s in [("events", 16000, seed), ("users", 6000, 0)]:
    r = random.Random(s)
    with open("%s/app/%s.bson" % (root, coll), "wb") as f:
        for i in range(n):
            f.write(bson.encode({"_id": i, "r": r.randbytes(200), "t": "x" * (i % 300), "k": r.random()}))
    meta = {"options": {}, "indexes": [{"v": 2, "key": {"_id": 1}, "name": "_id_"}], "collectionName": coll, "type": "collection"}
    with open("%s/app/%s.metadata.json" % (root, coll), "w") as f:
        json.dump(meta, f)
"#;
    let out = Command::new("python3")
        .args(["-c", script, dir.to_str().unwrap(), &seed.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// The repository is consistent: check reads and verifies everything, and the latest snapshot
/// exports exactly the dump `expected`.
fn assert_consistent(repo: &str, expected: &Path, scratch: &Path) {
    let report = run_ok(&["check", "--repo", repo, "--read-data"]);
    assert!(report.contains("no errors were found"), "{report}");
    let out = scratch.join(format!("export-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    run_ok(&[
        "repo",
        "export",
        "latest",
        "--repo",
        repo,
        "--out",
        out.to_str().unwrap(),
    ]);
    for coll in ["events", "users"] {
        let name = format!("app/{coll}.bson");
        assert!(
            std::fs::read(out.join(&name)).unwrap() == std::fs::read(expected.join(&name)).unwrap(),
            "{name} differs from what was backed up"
        );
    }
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn killed_backups_and_prunes_leave_a_valid_repository() {
    let dir = tempfile::tempdir().unwrap();
    let (dump1, dump2, dump3) = (dir.path().join("d1"), dir.path().join("d2"), dir.path().join("d3"));
    generate(&dump1, 1);
    generate(&dump2, 2);
    generate(&dump3, 3);
    let repo_path = dir.path().join("repo");
    let repo = repo_path.to_str().unwrap();
    // 1 MiB packs: the backups and prunes write several packs before they are killed.
    run_ok(&["repo", "init", "--repo", repo, "--pack-size", "1"]);
    run_ok(&["backup", "--repo", repo, "--from-dump", dump1.to_str().unwrap()]);

    // Backups killed after 1 and 2 new packs, and once their index is written (before the
    // manifest): the repository stays valid; the next backup works.
    let mut killed = 0;
    let mut latest = &dump1;
    for (packs, index) in [(1, 0), (2, 0), (0, 1)] {
        let before = (objects(&repo_path, "data").len(), objects(&repo_path, "index").len());
        if kill_when(
            &["backup", "--repo", repo, "--from-dump", dump2.to_str().unwrap()],
            || {
                objects(&repo_path, "data").len() >= before.0 + packs
                    && objects(&repo_path, "index").len() >= before.1 + index
            },
        ) {
            killed += 1;
        } else {
            latest = &dump2;
        }
        assert_consistent(repo, latest, dir.path());
    }
    assert!(killed >= 2, "only {killed} backups were killed before finishing");
    run_ok(&["backup", "--repo", repo, "--from-dump", dump2.to_str().unwrap()]);
    assert_consistent(repo, &dump2, dir.path());
    // The killed backups' packs are in no index: prune removes them, and nothing else breaks.
    let pruned = run_ok(&["forget", "--repo", repo, "--keep-last", "2", "--prune"]);
    assert!(!pruned.contains(" 0 unreferenced"), "{pruned}");
    assert_consistent(repo, &dump2, dir.path());

    // Prunes (d1's events dropped, packs shared with d2 repacked) killed at each of their steps:
    // new packs written, new index written, old index deleted, old packs deleted.
    run_ok(&["backup", "--repo", repo, "--from-dump", dump3.to_str().unwrap()]);
    let template = dir.path().join("template");
    copy_dir(&repo_path, &template);
    let (packs, indexes) = (objects(&template, "data"), objects(&template, "index"));
    let steps: [&dyn Fn() -> bool; 4] = [
        &|| !objects(&repo_path, "data").is_subset(&packs),
        &|| !objects(&repo_path, "index").is_subset(&indexes),
        &|| !indexes.is_subset(&objects(&repo_path, "index")),
        &|| !packs.is_subset(&objects(&repo_path, "data")),
    ];
    let mut killed = 0;
    for step in steps {
        std::fs::remove_dir_all(&repo_path).unwrap();
        copy_dir(&template, &repo_path);
        if kill_when(&["forget", "--repo", repo, "--keep-last", "1", "--prune"], step) {
            killed += 1;
        }
        assert_consistent(repo, &dump3, dir.path());
    }
    assert!(killed >= 3, "only {killed} prunes were killed before finishing");
    // The next backup works.
    run_ok(&["backup", "--repo", repo, "--from-dump", dump2.to_str().unwrap()]);
    // And so does a full prune after the last interrupted one.
    run_ok(&["forget", "--repo", repo, "--keep-last", "1", "--prune"]);
    assert_consistent(repo, &dump2, dir.path());
}

/// A `tidemark backup --uri` streams the dump into the repository, so packs are written while the
/// server is still being read: killed then, the repository stays valid and the next backup works.
#[test]
fn a_killed_backup_from_a_server_leaves_a_valid_repository() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(tidemark_server::testing::start_test_server(Default::default()));
    let uri = format!("{}/", server.uri());
    let seed = "import pymongo, random, sys\nc = pymongo.MongoClient(sys.argv[1])\nr = random.Random(5)\n\
                c.app.blobs.insert_many([{'_id': i, 'r': r.randbytes(400)} for i in range(15000)])\nprint('ok')";
    let out = Command::new("python3").args(["-c", seed, &uri]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = tempfile::tempdir().unwrap();
    let repo_path = dir.path().join("repo");
    let repo = repo_path.to_str().unwrap();
    run_ok(&["repo", "init", "--repo", repo, "--pack-size", "1"]);
    let killed = kill_when(&["backup", "--repo", repo, "--uri", &uri], || {
        !objects(&repo_path, "data").is_empty()
    });
    assert!(killed, "the backup finished before writing its first pack");
    assert!(objects(&repo_path, "snapshots").is_empty());
    run_ok(&["check", "--repo", repo, "--read-data"]);
    run_ok(&["backup", "--repo", repo, "--uri", &uri]);
    let report = run_ok(&["check", "--repo", repo, "--read-data"]);
    assert!(
        report.contains("checked 1 snapshot(s)") && report.contains("no errors were found"),
        "{report}"
    );
    runtime.block_on(server.shutdown());
}
