//! `tidemark oplog follow` against real `tidemark-server` processes under a write load from
//! pymongo: one-shot and long-running runs, SIGTERM, kill -9, a failover, a base snapshot, forget
//! and prune, and an oplog that rolls over while the follower is stopped. The archive is read back
//! with the repository library and compared byte for byte with `local.oplog.rs` as pymongo reads
//! it from the source (an independent reader).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tidemark_repo::oplog_archive::{list_slices, pitr_timeline, slice_entries};
use tidemark_repo::{Repository, Storage, StorageConfig, Timestamp};
use tidemark_server::testing::replset::{ReplSet, ReplSetOptions, server_binary};

fn tidemark(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn run(args: &[&str]) -> Output {
    tidemark(args).output().unwrap()
}

fn run_ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "tidemark {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Inserts in batches of ten until `stop_file` exists (pausing while `<stop_file>.pause` exists),
/// riding through failovers.
const WRITER: &str = r"
import sys, os, time, pymongo
from pymongo.errors import PyMongoError
c = pymongo.MongoClient(sys.argv[1])
print('writing', flush=True)
i = 0
while not os.path.exists(sys.argv[2]):
    if os.path.exists(sys.argv[2] + '.pause'):
        time.sleep(0.02)
        continue
    try:
        c.app.items.insert_many([{'_id': i * 10 + k, 'pad': 'x' * 100} for k in range(10)])
    except PyMongoError:
        time.sleep(0.05)
    i += 1
# One majority write at the end: everything written before it is majority-committed afterwards.
from pymongo import WriteConcern
c.app.get_collection('items', write_concern=WriteConcern('majority')).insert_one({'_id': 'end'})
";

/// A child process killed when the test ends, even by a failed assertion.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Guard {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Guard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

fn spawn(args: &[&str]) -> Guard {
    Guard(tidemark(args).spawn().unwrap())
}

fn start_writer(uri: &str, stop_file: &Path) -> Guard {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(WRITER)
        .arg(uri)
        .arg(stop_file)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "writing");
    Guard(child)
}

/// Writes the raw bytes of the source's oplog entries with `after < ts <= upto` (after = None: from
/// the oldest) to `out`, read by pymongo as raw BSON, and returns the majority `ts` the member
/// reports afterwards.
fn source_oplog(uri: &str, after: Option<Timestamp>, upto: Timestamp, out: &Path) -> Timestamp {
    let script = r"
import sys, json, pymongo
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp
from bson.codec_options import CodecOptions
c = pymongo.MongoClient(sys.argv[1], directConnection=True)
oplog = c.local.get_collection('oplog.rs', codec_options=CodecOptions(document_class=RawBSONDocument))
q = {'ts': {'$lte': Timestamp(int(sys.argv[4]), int(sys.argv[5]))}}
if sys.argv[2] != '-':
    q['ts']['$gt'] = Timestamp(int(sys.argv[2]), int(sys.argv[3]))
with open(sys.argv[6], 'wb') as f:
    for d in oplog.find(q).sort('$natural', 1):
        f.write(d.raw)
m = c.admin.command('hello')['lastWrite']['majorityOpTime']['ts']
print(m.time, m.inc)
";
    let (at, ai) = after.map_or(("-".to_owned(), "0".to_owned()), |a| (a.t.to_string(), a.i.to_string()));
    let printed = python(
        script,
        &[
            uri,
            &at,
            &ai,
            &upto.t.to_string(),
            &upto.i.to_string(),
            out.to_str().unwrap(),
        ],
    );
    let mut parts = printed.split_whitespace().map(|p| p.parse::<u32>().unwrap());
    Timestamp {
        t: parts.next().unwrap(),
        i: parts.next().unwrap(),
    }
}

async fn open_repo(path: &Path) -> Repository {
    let storage = Storage::open(path.to_str().unwrap(), &StorageConfig::default())
        .await
        .unwrap();
    Repository::open(storage, None).await.unwrap()
}

/// The archived entries of `rs0`, checking that every slice continues the one before it, from the
/// first slice on. Returns (where the first slice continues from, its bytes, the last `ts`).
async fn archived(repo_path: &Path) -> (Option<Timestamp>, Vec<u8>, Timestamp, usize) {
    let repo = open_repo(repo_path).await;
    let slices = list_slices(&repo).await.unwrap();
    assert!(!slices.is_empty());
    let mut bytes = Vec::new();
    let mut previous: Option<Timestamp> = None;
    for s in &slices {
        assert_eq!(s.replica_set, "rs0");
        assert!(s.gap.is_none(), "unexpected gap in slice {}", s.id);
        if let Some(p) = previous {
            assert_eq!(
                s.continues_from,
                Some(p),
                "slice {} does not continue the one before it",
                s.id
            );
        }
        let mut stream = slice_entries(&repo, s);
        while let Some(doc) = stream.next_document().await.unwrap() {
            bytes.extend_from_slice(doc.as_bytes());
        }
        previous = Some(s.last);
    }
    (slices[0].continues_from, bytes, previous.unwrap(), slices.len())
}

/// Reads `--json` events of a running follower on a thread.
fn event_stream(child: &mut Child) -> mpsc::Receiver<serde_json::Value> {
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    rx
}

fn wait_sealed(rx: &mpsc::Receiver<serde_json::Value>, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while seen
        .iter()
        .filter(|e: &&serde_json::Value| e["event"] == "sealed")
        .count()
        < n
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = rx
            .recv_timeout(left)
            .expect("the follower sealed too few slices in time");
        seen.push(event);
    }
    seen
}

fn ts_json(v: &serde_json::Value) -> Timestamp {
    Timestamp {
        t: u32::try_from(v["t"].as_u64().unwrap()).unwrap(),
        i: u32::try_from(v["i"].as_u64().unwrap()).unwrap(),
    }
}

#[test]
fn follows_a_replica_set_through_restarts_kills_and_a_failover_without_gaps_or_duplicates() {
    let binary = server_binary().expect("tidemark-server binary (cargo build -p tidemark-server)");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let options = ReplSetOptions {
        hidden: true,
        ..ReplSetOptions::processes(3, binary)
    };
    let mut set = rt.block_on(ReplSet::start(options)).unwrap();
    let uri = set.uri();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo_s = repo.to_str().unwrap();
    run_ok(&["repo", "init", "--repo", repo_s, "--insecure-no-password"]);
    let stop = dir.path().join("stop");
    let mut writer = start_writer(&uri, &stop);
    std::thread::sleep(Duration::from_millis(500));

    // A base snapshot: the archive starts at its consistency timestamp.
    let backup = run_ok(&[
        "backup",
        "--repo",
        repo_s,
        "--insecure-no-password",
        "--uri",
        &uri,
        "--oplog",
        "--replica-set",
        "rs0",
        "--json",
    ]);
    let backup: serde_json::Value = serde_json::from_str(backup.trim()).unwrap();
    let base_ts = ts_json(&backup["oplog_window"]["last"]);

    let follow = [
        "oplog",
        "follow",
        "--uri",
        &uri,
        "--repo",
        repo_s,
        "--insecure-no-password",
        "--json",
    ];
    let once = [&follow[..], &["--once"]].concat();
    let out = run_ok(&once);
    let events = json_lines(&out);
    assert!(
        events.iter().any(|e| e["event"] == "member" && e["role"] == "hidden"),
        "the hidden member is preferred: {out}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "started" && e["start"] == "continues_from" && ts_json(&e["ts"]) == base_ts)
    );
    std::thread::sleep(Duration::from_millis(300));
    run_ok(&once);

    // Long-running, with a failover in the middle, ended by SIGTERM.
    let long = [&follow[..], &["--seal-interval", "300ms"]].concat();
    let mut child = spawn(&long);
    let rx = event_stream(&mut child);
    wait_sealed(&rx, 2);
    let primary = rt.block_on(set.wait_for_primary(Duration::from_secs(10))).unwrap();
    let other = 1 - primary.min(1); // members 0 and 1 are electable; 2 is hidden
    // A planned failover: writes pause until the new primary has caught up, as replSetStepDown
    // would wait for. (An election of a member lacking majority-committed entries would lose them.)
    let pause = dir.path().join("stop.pause");
    std::fs::write(&pause, b"").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    rt.block_on(set.wait_for_caught_up(other, primary, Duration::from_secs(10)))
        .unwrap();
    rt.block_on(set.step_up(other)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while rt.block_on(set.primary()) != Some(other) {
        assert!(Instant::now() < deadline, "member {other} did not become primary");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::remove_file(&pause).unwrap();
    wait_sealed(&rx, 2);
    // A second snapshot while the follower runs (snapshots and the follower share the lock).
    let backup2 = run_ok(&[
        "backup",
        "--repo",
        repo_s,
        "--insecure-no-password",
        "--uri",
        &uri,
        "--oplog",
        "--replica-set",
        "rs0",
        "--json",
    ]);
    let backup2: serde_json::Value = serde_json::from_str(backup2.trim()).unwrap();
    let base2_ts = ts_json(&backup2["oplog_window"]["last"]);
    wait_sealed(&rx, 1);
    // The hidden member it reads goes away: the follower moves to a secondary and goes on.
    rt.block_on(set.kill(2));
    let seen = wait_sealed(&rx, 2);
    assert!(
        seen.iter().any(|e| e["event"] == "member" && e["role"] == "secondary"),
        "{seen:?}"
    );
    assert!(
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM ends the follower normally: {status:?}");
    let rest: Vec<_> = rx.iter().collect();
    assert_eq!(
        rest.last().map(|e| e["event"].clone()),
        Some("summary".into()),
        "{rest:?}"
    );

    // Killed with SIGKILL mid-run: the unsealed entries are read again by the next run.
    let mut child = spawn(&long);
    let rx = event_stream(&mut child);
    wait_sealed(&rx, 2);
    std::thread::sleep(Duration::from_millis(150));
    child.kill().unwrap();
    child.wait().unwrap();

    std::fs::write(&stop, b"").unwrap();
    assert!(writer.wait().unwrap().success());
    let out = run_ok(&once);
    assert!(json_lines(&out).iter().all(|e| e["event"] != "gap"));

    // Every entry after the base snapshot, exactly once, in order, as the source has them.
    let (from, bytes, last, slices) = rt.block_on(archived(&repo));
    assert_eq!(from, Some(base_ts));
    assert!(slices >= 8, "{slices} slices");
    let primary = rt.block_on(set.wait_for_primary(Duration::from_secs(10))).unwrap();
    let expected = dir.path().join("expected.bson");
    let majority = source_oplog(&set.members[primary].direct_uri(), Some(base_ts), last, &expected);
    let expected = std::fs::read(&expected).unwrap();
    assert!(expected.len() > 100_000, "{} bytes of oplog", expected.len());
    assert!(
        bytes == expected,
        "archived {} bytes, the source oplog has {}",
        bytes.len(),
        expected.len()
    );
    assert!(last <= majority, "archived {last} beyond the majority point {majority}");
    // Everything the writer did is archived (the last --once ran after its final majority write).
    let after_last = python(
        "import sys, pymongo\nfrom bson.timestamp import Timestamp\nc = pymongo.MongoClient(sys.argv[1], directConnection=True)\nprint(c.local.oplog.rs.count_documents({'ns': 'app.items', 'ts': {'$gt': Timestamp(int(sys.argv[2]), int(sys.argv[3]))}}))",
        &[
            &set.members[primary].direct_uri(),
            &last.t.to_string(),
            &last.i.to_string(),
        ],
    );
    assert_eq!(after_last.trim(), "0", "writes after the archive's end");

    let pitr: serde_json::Value = serde_json::from_str(&run_ok(&[
        "snapshots",
        "--pitr",
        "--json",
        "--repo",
        repo_s,
        "--insecure-no-password",
    ]))
    .unwrap();
    assert_eq!(pitr["gaps"], serde_json::json!([]));
    let windows = pitr["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 2);
    assert!(windows.iter().all(|w| ts_json(&w["to"]) == last), "{pitr}");

    // Forget the first snapshot and prune: the slices the second snapshot's window needs stay, whole.
    run_ok(&[
        "forget",
        "--repo",
        repo_s,
        "--insecure-no-password",
        "--keep-last",
        "1",
        "--prune",
    ]);
    let check = run_ok(&["check", "--repo", repo_s, "--insecure-no-password", "--read-data"]);
    assert!(
        check.contains("checked 1 snapshot(s)") && check.contains("no errors were found"),
        "{check}"
    );
    let repo_lib = rt.block_on(open_repo(&repo));
    let timeline = rt.block_on(pitr_timeline(&repo_lib)).unwrap();
    assert_eq!(timeline.windows.len(), 1);
    assert_eq!((timeline.windows[0].from, timeline.windows[0].to), (base2_ts, last));
    let left = rt.block_on(list_slices(&repo_lib)).unwrap();
    assert!(left.len() < slices && left.iter().all(|s| s.last >= base2_ts));
    let mut range = rt
        .block_on(tidemark_repo::oplog_archive::read_range(
            &repo_lib, "rs0", base2_ts, last,
        ))
        .unwrap();
    let mut after_prune = Vec::new();
    while let Some(doc) = rt.block_on(range.next_entry()).unwrap() {
        after_prune.extend_from_slice(doc.as_bytes());
    }
    let expected2 = dir.path().join("expected2.bson");
    source_oplog(&set.members[primary].direct_uri(), Some(base2_ts), last, &expected2);
    assert!(after_prune == std::fs::read(&expected2).unwrap());
    drop(set);
}

#[test]
fn an_oplog_rolled_over_while_stopped_is_a_recorded_reported_gap() {
    let binary = server_binary().expect("tidemark-server binary (cargo build -p tidemark-server)");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new(binary)
        .args([
            "--port",
            &port.to_string(),
            "--bind_ip",
            "127.0.0.1",
            "--replSet",
            "rs0",
            "--oplogSizeMB",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let uri = format!("mongodb://127.0.0.1:{port}/?directConnection=true");
    python(
        r"
import sys, time, pymongo
c = pymongo.MongoClient(sys.argv[1], directConnection=True, serverSelectionTimeoutMS=10000)
c.admin.command('replSetInitiate')
while not c.admin.command('hello').get('isWritablePrimary'):
    time.sleep(0.05)
c.app.t.insert_many([{'_id': i} for i in range(100)])
",
        &[&uri],
    );
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo_s = repo.to_str().unwrap();
    run_ok(&["repo", "init", "--repo", repo_s, "--insecure-no-password"]);
    let once = [
        "oplog",
        "follow",
        "--once",
        "--json",
        "--uri",
        &uri,
        "--repo",
        repo_s,
        "--insecure-no-password",
    ];
    // No slice and no snapshot: the archive starts with the newest committed entry.
    let first = json_lines(&run_ok(&once));
    assert!(first.iter().any(|e| e["event"] == "started" && e["start"] == "fresh"));
    let resume = ts_json(&first.last().unwrap()["last"]);

    // About 3 MiB of oplog while the follower is stopped: the 1 MiB oplog rolls past the resume point.
    let oldest = python(
        r"
import sys, pymongo
c = pymongo.MongoClient(sys.argv[1], directConnection=True)
for k in range(30):
    c.app.big.insert_many([{'pad': 'y' * 1000} for i in range(100)])
o = c.local.oplog.rs.find_one(sort=[('$natural', 1)])['ts']
print(o.time, o.inc)
",
        &[&uri],
    );
    let mut parts = oldest.split_whitespace().map(|p| p.parse::<u32>().unwrap());
    let oldest = Timestamp {
        t: parts.next().unwrap(),
        i: parts.next().unwrap(),
    };
    assert!(oldest > resume);

    let out = run(&once);
    assert_eq!(out.status.code(), Some(1), "a one-shot run that records a gap fails");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("GAP") && stderr.contains(&resume.to_string()),
        "{stderr}"
    );
    let summary = json_lines(&String::from_utf8_lossy(&out.stdout)).pop().unwrap();
    assert_eq!(ts_json(&summary["gaps"][0]["after"]), resume);
    assert_eq!(ts_json(&summary["gaps"][0]["resumed_at"]), oldest);

    let pitr: serde_json::Value = serde_json::from_str(&run_ok(&[
        "snapshots",
        "--pitr",
        "--json",
        "--repo",
        repo_s,
        "--insecure-no-password",
    ]))
    .unwrap();
    let gaps = pitr["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1);
    assert_eq!(
        (ts_json(&gaps[0]["after"]), ts_json(&gaps[0]["resumed_at"])),
        (resume, oldest)
    );
    let table = run_ok(&["snapshots", "--pitr", "--repo", repo_s, "--insecure-no-password"]);
    assert!(table.contains("GAP rs0: entries after"), "{table}");

    // After the gap the archive holds exactly what the source still had, and continues without a gap.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let lib = rt.block_on(open_repo(&repo));
    let slices = rt.block_on(list_slices(&lib)).unwrap();
    let gap_slice = slices.iter().find(|s| s.gap.is_some()).unwrap();
    let mut archived = Vec::new();
    let mut stream = slice_entries(&lib, gap_slice);
    while let Some(doc) = rt.block_on(stream.next_document()).unwrap() {
        archived.extend_from_slice(doc.as_bytes());
    }
    let expected = dir.path().join("expected.bson");
    source_oplog(&uri, None, gap_slice.last, &expected);
    assert!(archived == std::fs::read(&expected).unwrap());
    let again = run_ok(&once);
    assert!(json_lines(&again).iter().all(|e| e["event"] != "gap"));
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn entries_a_majority_has_not_applied_are_not_archived_until_it_has() {
    let binary = server_binary().expect("tidemark-server binary (cargo build -p tidemark-server)");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut set = rt
        .block_on(ReplSet::start(ReplSetOptions::processes(3, binary)))
        .unwrap();
    let uri = set.uri();
    let primary = rt.block_on(set.wait_for_primary(Duration::from_secs(10))).unwrap();
    let primary_uri = set.members[primary].direct_uri();
    let insert = r"
import sys, pymongo
from pymongo import WriteConcern
c = pymongo.MongoClient(sys.argv[1], directConnection=True)
coll = c.app.get_collection('t', write_concern=WriteConcern(sys.argv[2] if sys.argv[2] == 'majority' else int(sys.argv[2])))
for i in range(20):
    coll.insert_one({'k': sys.argv[3], 'i': i})
e = c.local.oplog.rs.find_one({'ns': 'app.t', 'o.k': sys.argv[3]}, sort=[('$natural', 1)])['ts']
m = c.admin.command('hello')['lastWrite']['majorityOpTime']['ts']
print(e.time, e.inc, m.time, m.inc)
";
    python(insert, &[&primary_uri, "majority", "committed"]);
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo_s = repo.to_str().unwrap();
    run_ok(&["repo", "init", "--repo", repo_s, "--insecure-no-password"]);
    let once = [
        "oplog",
        "follow",
        "--once",
        "--json",
        "--uri",
        &uri,
        "--repo",
        repo_s,
        "--insecure-no-password",
    ];
    run_ok(&once);

    // Both secondaries down: writes with w:1 are applied by the primary alone, not committed.
    for i in (0..3).filter(|i| *i != primary) {
        rt.block_on(set.kill(i));
    }
    let printed = python(insert, &[&primary_uri, "1", "uncommitted"]);
    let n: Vec<u32> = printed.split_whitespace().map(|p| p.parse().unwrap()).collect();
    let (first_uncommitted, majority) = (Timestamp { t: n[0], i: n[1] }, Timestamp { t: n[2], i: n[3] });
    assert!(
        majority < first_uncommitted,
        "the server reports them as not majority-committed"
    );
    // A long-running follower (no end point of its own) reads them but must hold them back.
    let long: Vec<&str> = once.iter().copied().filter(|a| *a != "--once").collect();
    let mut child = spawn(&long);
    let rx = event_stream(&mut child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut statuses = 0;
    while statuses < 3 {
        let e = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("status events");
        if e["event"] == "status" {
            statuses += 1;
        }
    }
    assert!(
        Command::new("kill")
            .arg("-INT")
            .arg(child.id().to_string())
            .status()
            .unwrap()
            .success()
    );
    assert!(child.wait().unwrap().success(), "SIGINT ends the follower normally");
    let summary = rx.iter().last().unwrap();
    assert_eq!(summary["event"], "summary");
    let last = ts_json(&summary["last"]);
    assert!(
        last < first_uncommitted,
        "archived up to {last}, beyond the majority point {majority}"
    );

    // Once the secondaries are back and have applied them, they are archived, with no gap.
    for i in (0..3).filter(|i| *i != primary) {
        rt.block_on(set.restart(i)).unwrap();
    }
    rt.block_on(set.wait_for_healthy(Duration::from_secs(30))).unwrap();
    python(insert, &[&primary_uri, "majority", "after"]);
    let primary = rt.block_on(set.wait_for_primary(Duration::from_secs(10))).unwrap();
    run_ok(&once);
    let (from, bytes, last, _) = rt.block_on(archived(&repo));
    let expected = dir.path().join("expected.bson");
    let first = rt.block_on(async {
        let lib = open_repo(&repo).await;
        list_slices(&lib).await.unwrap()[0].first
    });
    assert_eq!(from, None, "the archive started fresh");
    let before_first = Timestamp {
        t: first.t,
        i: first.i - 1,
    };
    source_oplog(&set.members[primary].direct_uri(), Some(before_first), last, &expected);
    assert!(bytes == std::fs::read(&expected).unwrap());
    assert!(last >= first_uncommitted);
}
