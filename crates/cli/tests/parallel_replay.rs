//! Parallel `restore --oplogReplay`: the number of replay workers does not change the result.
//!
//! A 50 000-entry oplog over 10 collections (inserts, `$v: 2` updates, deletes, with `_id`s
//! written as int32, double or int64 so equal `_id`s come in different types, plus transactions
//! and drop/create commands) is written by pymongo's `bson` module, which also computes the
//! expected final state. It is replayed with 1 and 4 workers into two servers: both must match
//! the expected state and have the same `dbHash`. The real oplog fixtures give the same
//! documents with 1 and 4 workers.

mod dump_support;

use dump_support::{Server, assert_same_snapshot, fixture, pymongo, snapshot, stderr, tidemark};

const GENERATOR: &str = r#"
import sys, random, datetime, uuid, bson, json
from bson import Int64, Timestamp
from bson.binary import Binary, UUID_SUBTYPE
path, total = sys.argv[2], int(sys.argv[3])
rnd = random.Random(20240611)
out = open(path, 'wb')
inc = 0
def emit(e):
    global inc
    inc += 1
    d = {'ts': Timestamp(1700000000 + inc // 1000, inc % 1000 + 1), 't': Int64(1), 'v': 2,
         'wall': datetime.datetime(2024, 1, 1)}
    d.update(e)
    out.write(bson.encode(d))
colls = ['c%d' % i for i in range(10)]
state = {c: {} for c in colls}
for c in colls:
    emit({'op': 'c', 'ns': 'bench.$cmd', 'o': {'create': c}})
count = len(colls)
forms = [int, float, Int64]
n = 0
while count < total:
    n += 1
    c = rnd.choice(colls)
    ns = 'bench.' + c
    k = rnd.randrange(300)
    key = rnd.choice(forms)(k)
    r = rnd.random()
    if n % 7919 == 0:
        emit({'op': 'c', 'ns': 'bench.$cmd', 'o': {'drop': c}})
        emit({'op': 'c', 'ns': 'bench.$cmd', 'o': {'create': c}})
        state[c] = {}
        count += 2
    elif n % 997 == 0:
        ops = []
        for j in range(rnd.randrange(2, 6)):
            c2 = rnd.choice(colls)
            k2 = rnd.randrange(300)
            ops.append({'op': 'i', 'ns': 'bench.' + c2, 'o': {'_id': k2, 'v': n * 10 + j}})
            state[c2][k2] = n * 10 + j
        emit({'op': 'c', 'ns': 'admin.$cmd', 'o': {'applyOps': ops},
              'lsid': {'id': Binary(uuid.uuid4().bytes, UUID_SUBTYPE)}, 'txnNumber': Int64(n),
              'prevOpTime': {'ts': Timestamp(0, 0), 't': Int64(-1)}})
        count += len(ops)
    elif r < 0.4 or k not in state[c]:
        emit({'op': 'i', 'ns': ns, 'o': {'_id': key, 'v': n, 'pad': 'x' * rnd.randrange(40)}})
        state[c][k] = n
        count += 1
    elif r < 0.85:
        emit({'op': 'u', 'ns': ns, 'o': {'$v': 2, 'diff': {'u': {'v': n}}}, 'o2': {'_id': key}})
        state[c][k] = n
        count += 1
    else:
        emit({'op': 'd', 'ns': ns, 'o': {'_id': key}})
        del state[c][k]
        count += 1
out.close()
print(json.dumps({'entries': count, 'state': {c: sorted([k, v] for k, v in s.items()) for c, s in state.items()}}))
"#;

const STATE: &str = r#"
state = {}
for c in ['c%d' % i for i in range(10)]:
    state[c] = sorted([int(d['_id']), d['v']] for d in client.bench[c].find({}, {'v': 1}))
print(json.dumps({'state': state, 'md5': client.bench.command('dbHash')['md5']}))
"#;

fn replay_json(uri: &str, dir: &str, workers: &str) -> serde_json::Value {
    let out = tidemark(&[
        "restore",
        uri,
        dir,
        "--oplogReplay",
        "--json",
        "--oplogReplayWorkers",
        workers,
    ]);
    assert!(out.status.success(), "workers {workers}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn one_and_four_workers_give_the_same_database() {
    let dir = tempfile::tempdir().unwrap();
    let oplog = dir.path().join("oplog.bson");
    // The generator only uses pymongo's bson module; its client never connects.
    let expected: serde_json::Value = serde_json::from_str(&pymongo(
        "mongodb://127.0.0.1:1",
        &format!("sys.argv[2:] = [{:?}, '50000']\n{GENERATOR}", oplog.to_str().unwrap()),
    ))
    .unwrap();
    let dir_arg = dir.path().to_str().unwrap();
    let mut hashes = Vec::new();
    for workers in ["1", "4"] {
        let server = Server::start();
        let summary = replay_json(&server.uri, dir_arg, workers);
        assert_eq!(summary["oplogEntries"], expected["entries"], "workers {workers}");
        let got: serde_json::Value = serde_json::from_str(&pymongo(&server.uri, STATE)).unwrap();
        assert_eq!(got["state"], expected["state"], "workers {workers}");
        hashes.push(got["md5"].as_str().unwrap().to_owned());
    }
    assert_eq!(hashes[0], hashes[1]);
}

#[test]
fn fixtures_replay_the_same_with_any_worker_count() {
    // Vectored inserts need the collection they write to (as in mongo-tools' own tests).
    let coll1 = Some("client.mongodump_test_db.create_collection('coll1')\nprint('ok')");
    let vectored = "mongorestore/testdata/oplogs/bson/vectored_insert.bson";
    let linked = "mongorestore/testdata/oplogs/bson/linked_vectored_inserts.bson";
    for (dump, extra, setup) in [
        ("mongorestore/testdata/oplogdump", None, None),
        ("mongorestore/testdata/duplicate_index_key_with_oplog", None, None),
        ("mongorestore/testdata/dump_with_noop_in_oplog", None, None),
        (
            "mongorestore/testdata/coll_with_index",
            Some("mongorestore/testdata/oplogs/bson/drop_index.bson"),
            None,
        ),
        ("mongorestore/testdata/coll_without_index", Some(vectored), coll1),
        ("mongorestore/testdata/coll_without_index", Some(linked), coll1),
    ] {
        let mut snapshots = Vec::new();
        for workers in ["1", "4"] {
            let server = Server::start();
            if let Some(script) = setup {
                pymongo(&server.uri, script);
            }
            let path = fixture(dump);
            let mut args = vec!["restore", server.uri.as_str(), path.to_str().unwrap(), "--oplogReplay"];
            let file = extra.map(fixture);
            if let Some(f) = &file {
                args.extend(["--oplogFile", f.to_str().unwrap()]);
            }
            args.extend(["--oplogReplayWorkers", workers]);
            let out = tidemark(&args);
            assert!(out.status.success(), "{dump} workers {workers}: {}", stderr(&out));
            snapshots.push(snapshot(&server.uri));
        }
        assert!(!snapshots[0].trim().is_empty(), "{dump}");
        assert_same_snapshot(&snapshots[1], &snapshots[0]);
    }
}

#[test]
fn worker_count_must_be_positive() {
    let out = tidemark(&[
        "restore",
        fixture("mongorestore/testdata/oplogdump").to_str().unwrap(),
        "--oplogReplay",
        "--oplogReplayWorkers",
        "0",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("oplogReplayWorkers must be positive"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_first_failure_stops_the_replay() {
    // An insert into a collection that does not exist fails (NamespaceNotFound); with several
    // workers the replay must still stop there, with mongorestore's message, before the command
    // that follows it in the oplog.
    let dir = tempfile::tempdir().unwrap();
    let oplog = dir.path().join("oplog.bson");
    let script = format!(
        r#"
import datetime
from bson import Int64, Timestamp
out = open({:?}, 'wb')
entries = [{{'op': 'c', 'ns': 'app.$cmd', 'o': {{'create': 'a'}}}}]
entries += [{{'op': 'i', 'ns': 'app.a', 'o': {{'_id': i}}}} for i in range(200)]
entries += [{{'op': 'i', 'ns': 'app.missing', 'o': {{'_id': 1}}}}]
entries += [{{'op': 'i', 'ns': 'app.a', 'o': {{'_id': 1000 + i}}}} for i in range(200)]
entries += [{{'op': 'c', 'ns': 'app.$cmd', 'o': {{'create': 'after'}}}}]
for n, e in enumerate(entries):
    e.update({{'ts': Timestamp(1700000000, n + 1), 't': Int64(1), 'v': 2, 'wall': datetime.datetime(2024, 1, 1)}})
    out.write(bson.encode(e))
out.close()
print('ok')
"#,
        oplog.to_str().unwrap()
    );
    pymongo("mongodb://127.0.0.1:1", &script);
    let server = Server::start();
    let out = tidemark(&[
        "restore",
        &server.uri,
        dir.path().to_str().unwrap(),
        "--oplogReplay",
        "--oplogReplayWorkers",
        "4",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("error applying oplog: applyOps"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("app.missing"), "{}", stderr(&out));
    let names = pymongo(&server.uri, "print(sorted(client.app.list_collection_names()))");
    assert_eq!(names.trim(), "['a']");
}
