//! `tidemark dump --oplog` against a single-node replica set of `tidemark-server`: the oplog is
//! read while collections are dumped, and `restore --oplogReplay` brings the target to the state
//! at the end of the dump: one consistent point in time.

mod dump_support;

use dump_support::{Server, pymongo, restore_counts, stderr, tidemark};

#[test]
fn oplog_captured_during_the_dump_restores_one_point_in_time() {
    let source = Server::start_replica_set();
    pymongo(
        &source.uri,
        "client.app.items.insert_many([{'_id': i, 'v': 0, 'pad': 'x' * 200} for i in range(20000)])\nclient.app.create_collection('log')\nclient.app.items.update_one({'_id': 19999}, {'$set': {'w': 1}})\nprint('ok')",
    );
    // The oplog window includes the newest entry at its start (mongodump's [start, end]): make
    // that an idempotent update rather than the create of app.log, which would be replayed onto
    // the restored collection.
    // Writes during the dump, from another process.
    let mut writer = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, time, pymongo\nc = pymongo.MongoClient(sys.argv[1], directConnection=True)\nend = time.time() + 3\nfor i in range(20000):\n    if time.time() > end:\n        break\n    c.app.items.update_one({'_id': i}, {'$set': {'v': 1}})\n    c.app.log.insert_one({'_id': i})\n    if i == 20:\n        print('writing', flush=True)\n",
        )
        .arg(&source.uri)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Start the dump once the writer is under way, so the dump runs while it writes.
    let mut line = String::new();
    let mut stdout = std::io::BufReader::new(writer.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line.trim(), "writing");
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let archive = dir.path().join("dump.archive.gz");
    // A directory dump and a gzip archive dump, one after the other while the writer runs.
    let dumps = [
        (
            vec!["-o".to_owned(), out_dir.display().to_string()],
            vec![out_dir.display().to_string()],
        ),
        (
            vec![format!("--archive={}", archive.display()), "--gzip".to_owned()],
            vec![format!("--archive={}", archive.display()), "--gzip".to_owned()],
        ),
    ];
    let mut restores = Vec::new();
    for (dump_args, restore_args) in &dumps {
        let mut args = vec!["dump", source.uri.as_str(), "--oplog", "--json"];
        args.extend(dump_args.iter().map(String::as_str));
        let out = tidemark(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        // Writes landed inside the window (two entries per step of the writer).
        assert!(summary["oplogEntries"].as_u64().unwrap() > 2, "{summary}");
        restores.push(restore_args.clone());
    }
    let writer = writer.wait_with_output().unwrap();
    assert!(writer.status.success());
    assert!(out_dir.join("oplog.bson").is_file());

    for restore_args in restores {
        let target = Server::start();
        let mut args = vec!["restore", target.uri.as_str(), "--oplogReplay"];
        args.extend(restore_args.iter().map(String::as_str));
        let out = tidemark(&args);
        assert!(out.status.success(), "{restore_args:?}: {}", stderr(&out));
        assert_eq!(restore_counts(&out).1, 0);
        // The restored state is one point in time of the source: the writer updates item i, then
        // logs i, so the logged ids are a prefix 0..k and the updated items are that prefix or one
        // more. A dump without a consistent oplog window would show holes.
        let state = pymongo(
            &target.uri,
            "logged = sorted(d['_id'] for d in client.app.log.find())\nupdated = sorted(d['_id'] for d in client.app.items.find({'v': 1}))\nprint(logged == list(range(len(logged))), updated[:len(logged)] == logged, len(updated) - len(logged) in (0, 1), len(logged) > 0, client.app.items.count_documents({}))",
        );
        assert_eq!(state.trim(), "True True True True 20000", "{restore_args:?}");
    }
}
