//! Recovery of a dbpath through the library API: every kind of change survives a crash (journal replay) and
//! a clean restart (checkpoint) exactly; a torn journal tail is cut off; damaged data files are refused with
//! the file named; offline loading reads a consistent state without touching the files.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{Document, RawDocumentBuf, doc, rawdoc};
use tidemark_server::engine::{Engine, Mutation, Namespace, WriteBatch};
use tidemark_server::storage::journal::{JOURNAL_DIR, encode_record, list_segments};
use tidemark_server::storage::{Storage, StorageError, StorageOptions, load_offline};

fn options(journal: bool) -> StorageOptions {
    StorageOptions {
        journal,
        checkpoint_interval: None,
        ..StorageOptions::default()
    }
}

fn open(dbpath: &Path, journal: bool) -> (Arc<Engine>, Arc<Storage>) {
    let engine = Arc::new(Engine::new());
    let storage = Storage::open(dbpath, &options(journal), &engine).unwrap();
    (engine, storage)
}

fn ns(db: &str, coll: &str) -> Namespace {
    Namespace::new(db, coll).unwrap()
}

fn commit(engine: &Engine, mutations: Vec<Mutation>) {
    engine.commit(WriteBatch { mutations }, true).unwrap();
}

/// Everything observable about the state: per namespace, UUID, options, index specs and documents in
/// natural order.
type Snapshot = Vec<(String, [u8; 16], Document, Vec<Document>, Vec<RawDocumentBuf>)>;

fn snapshot(engine: &Engine) -> Snapshot {
    engine.read(|catalog| {
        let mut out = Vec::new();
        for db in catalog.database_names() {
            for (name, coll) in &catalog.database(&db).unwrap().collections {
                let docs = coll.iter().map(|(_, d)| d.clone()).collect();
                out.push((
                    format!("{db}.{name}"),
                    coll.uuid,
                    coll.options.clone(),
                    coll.index_specs(),
                    docs,
                ));
            }
        }
        out
    })
}

/// A history using every kind of mutation.
fn write_history(engine: &Engine) {
    let users = ns("app", "users");
    let cap = ns("app", "log");
    commit(
        engine,
        vec![Mutation::CreateCollection {
            ns: users.clone(),
            uuid: [1; 16],
            options: doc! {},
        }],
    );
    commit(
        engine,
        vec![Mutation::CreateCollection {
            ns: cap.clone(),
            uuid: [2; 16],
            options: doc! { "capped": true, "size": 4096_i64, "max": 5_i64 },
        }],
    );
    commit(
        engine,
        vec![Mutation::CreateIndex {
            ns: users.clone(),
            spec: doc! { "v": 2, "key": { "email": 1 }, "name": "email_1", "unique": true },
        }],
    );
    // One batch of several inserts.
    commit(
        engine,
        (0..20)
            .map(|i| Mutation::Insert {
                ns: users.clone(),
                doc: rawdoc! { "_id": i, "email": format!("u{i}@example.com"), "n": f64::from(i) / 3.0 },
            })
            .collect(),
    );
    // Capped: only the last 5 stay (the engine logs the evictions as deletes).
    for i in 0..12 {
        commit(
            engine,
            vec![Mutation::Insert {
                ns: cap.clone(),
                doc: rawdoc! { "_id": i, "line": "x" },
            }],
        );
    }
    commit(
        engine,
        vec![Mutation::Upsert {
            ns: users.clone(),
            doc: rawdoc! { "_id": 3, "email": "new@example.com" },
        }],
    );
    commit(
        engine,
        vec![Mutation::Delete {
            ns: users.clone(),
            id: bson::Bson::Int32(4),
        }],
    );
    commit(
        engine,
        vec![Mutation::SetIndexSpec {
            ns: users.clone(),
            spec: doc! { "v": 2, "key": { "email": 1 }, "name": "email_1", "unique": true, "hidden": true },
        }],
    );
    commit(
        engine,
        vec![Mutation::SetOptions {
            ns: users.clone(),
            options: doc! { "validator": { "n": { "$gte": 0 } } },
        }],
    );
    let tmp = ns("scratch", "tmp");
    commit(
        engine,
        vec![Mutation::CreateCollection {
            ns: tmp.clone(),
            uuid: [3; 16],
            options: doc! {},
        }],
    );
    commit(
        engine,
        vec![Mutation::Insert {
            ns: tmp.clone(),
            doc: rawdoc! { "_id": "a" },
        }],
    );
    commit(
        engine,
        vec![Mutation::RenameCollection {
            from: tmp.clone(),
            to: ns("app", "renamed"),
        }],
    );
    commit(
        engine,
        vec![Mutation::CreateIndex {
            ns: ns("app", "renamed"),
            spec: doc! { "v": 2, "key": { "z": 1 }, "name": "z_1" },
        }],
    );
    commit(
        engine,
        vec![Mutation::DropIndex {
            ns: ns("app", "renamed"),
            name: "z_1".into(),
        }],
    );
    commit(
        engine,
        vec![Mutation::CreateCollection {
            ns: ns("gone", "a"),
            uuid: [4; 16],
            options: doc! {},
        }],
    );
    commit(
        engine,
        vec![Mutation::CreateCollection {
            ns: ns("gone", "b"),
            uuid: [5; 16],
            options: doc! {},
        }],
    );
    commit(engine, vec![Mutation::DropDatabase { db: "gone".into() }]);
    commit(
        engine,
        vec![Mutation::CreateCollection {
            ns: ns("app", "dropped"),
            uuid: [6; 16],
            options: doc! {},
        }],
    );
    commit(
        engine,
        vec![Mutation::DropCollection {
            ns: ns("app", "dropped"),
        }],
    );
    commit(
        engine,
        vec![Mutation::CreateCollection {
            ns: ns("app", "v"),
            uuid: [7; 16],
            options: doc! { "viewOn": "users", "pipeline": [{ "$match": { "n": 1 } }] },
        }],
    );
}

#[test]
fn every_change_survives_a_crash_and_a_clean_restart_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, storage) = open(dir.path(), true);
    write_history(&engine);
    let before = snapshot(&engine);
    assert_eq!(
        before.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
        ["app.log", "app.renamed", "app.users", "app.v"]
    );
    assert_eq!(before[0].4.len(), 5, "capped collection keeps its last 5 documents");
    // Crash: no checkpoint, no shutdown code.
    drop((engine, storage));

    let (engine, storage) = open(dir.path(), true);
    assert_eq!(snapshot(&engine), before, "journal replay");
    storage.shutdown(&engine).unwrap();
    drop((engine, storage));
    assert!(list_segments(&dir.path().join(JOURNAL_DIR)).unwrap().len() <= 1);

    let (engine, storage) = open(dir.path(), true);
    assert_eq!(snapshot(&engine), before, "checkpoint load");
    // Without the journal as well.
    storage.shutdown(&engine).unwrap();
    drop((engine, storage));
    let (engine, _storage) = open(dir.path(), false);
    assert_eq!(snapshot(&engine), before, "checkpoint load with --nojournal");
}

fn last_segment(dbpath: &Path) -> std::path::PathBuf {
    list_segments(&dbpath.join(JOURNAL_DIR)).unwrap().pop().unwrap().1
}

#[test]
fn torn_journal_tail_is_cut_off_and_later_writes_follow_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = ns("t", "c");
    let (engine, storage) = open(dir.path(), true);
    commit(
        &engine,
        vec![Mutation::CreateCollection {
            ns: c.clone(),
            uuid: [9; 16],
            options: doc! {},
        }],
    );
    for i in 0..3 {
        commit(
            &engine,
            vec![Mutation::Insert {
                ns: c.clone(),
                doc: rawdoc! { "_id": i },
            }],
        );
    }
    let lsn = storage.last_lsn();
    drop((engine, storage));

    // A crash in the middle of writing the next record leaves part of it behind.
    let seg = last_segment(dir.path());
    let good_len = std::fs::metadata(&seg).unwrap().len();
    let record = encode_record(lsn + 1, b"\x05\x00\x00\x00\x00 a partially written record").unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(&record[..record.len() - 7]);
    std::fs::write(&seg, &bytes).unwrap();

    let (engine, storage) = open(dir.path(), true);
    assert_eq!(engine.read(|cat| cat.collection(&c).unwrap().len()), 3);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), good_len, "torn tail cut off");
    commit(
        &engine,
        vec![Mutation::Insert {
            ns: c.clone(),
            doc: rawdoc! { "_id": 3 },
        }],
    );
    drop((engine, storage));

    let (engine, _storage) = open(dir.path(), true);
    let ids: Vec<i32> = engine.read(|cat| {
        cat.collection(&c)
            .unwrap()
            .iter()
            .map(|(_, d)| d.get_i32("_id").unwrap())
            .collect()
    });
    assert_eq!(ids, [0, 1, 2, 3]);
}

#[test]
fn corrupt_record_in_the_middle_ends_the_journal_there() {
    let dir = tempfile::tempdir().unwrap();
    let c = ns("t", "c");
    let (engine, storage) = open(dir.path(), true);
    commit(
        &engine,
        vec![Mutation::CreateCollection {
            ns: c.clone(),
            uuid: [9; 16],
            options: doc! {},
        }],
    );
    for i in 0..4 {
        commit(
            &engine,
            vec![Mutation::Insert {
                ns: c.clone(),
                doc: rawdoc! { "_id": i, "pad": "0123456789" },
            }],
        );
    }
    drop((engine, storage));
    let seg = last_segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    // Flip a bit inside the third insert's document: that record and the one after it are dropped.
    let needle = b"0123456789";
    let positions: Vec<usize> = bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| w == needle)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(positions.len(), 4);
    bytes[positions[2]] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();

    let (engine, _storage) = open(dir.path(), true);
    let ids: Vec<i32> = engine.read(|cat| {
        cat.collection(&c)
            .unwrap()
            .iter()
            .map(|(_, d)| d.get_i32("_id").unwrap())
            .collect()
    });
    assert_eq!(ids, [0, 1]);
}

#[test]
fn damaged_checkpoint_refuses_to_start_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, storage) = open(dir.path(), false);
    commit(
        &engine,
        vec![Mutation::CreateCollection {
            ns: ns("a", "b"),
            uuid: [1; 16],
            options: doc! {},
        }],
    );
    commit(
        &engine,
        vec![Mutation::Insert {
            ns: ns("a", "b"),
            doc: rawdoc! { "_id": 1, "v": "hello" },
        }],
    );
    storage.shutdown(&engine).unwrap();
    drop((engine, storage));
    let current = std::fs::read_to_string(dir.path().join("CURRENT")).unwrap();
    let file = dir.path().join(current.trim()).join("collection-0.bson");
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x20;
    std::fs::write(&file, &bytes).unwrap();

    let engine = Arc::new(Engine::new());
    let err = Storage::open(dir.path(), &options(false), &engine).unwrap_err();
    assert!(matches!(err, StorageError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains(&file.display().to_string()), "{err}");
}

#[test]
fn offline_load_reads_checkpoint_and_journal_without_changing_files() {
    let dir = tempfile::tempdir().unwrap();
    let c = ns("db", "c");
    let (engine, storage) = open(dir.path(), true);
    commit(
        &engine,
        vec![Mutation::CreateCollection {
            ns: c.clone(),
            uuid: [8; 16],
            options: doc! {},
        }],
    );
    commit(
        &engine,
        vec![Mutation::Insert {
            ns: c.clone(),
            doc: rawdoc! { "_id": 1 },
        }],
    );
    storage.checkpoint(&engine).unwrap();
    commit(
        &engine,
        vec![Mutation::Insert {
            ns: c.clone(),
            doc: rawdoc! { "_id": 2 },
        }],
    );
    // While the server owns the dbpath, offline readers are refused.
    assert!(matches!(
        load_offline(dir.path()),
        Err(StorageError::DbPathInUse { .. })
    ));
    let expected = snapshot(&engine);
    drop((engine, storage));
    // Leave a torn tail too: an offline reader ignores it but must not cut it off.
    let seg = last_segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(&[1, 2, 3]);
    std::fs::write(&seg, &bytes).unwrap();

    let listing = |p: &Path| {
        let mut v: Vec<(String, u64)> = walk(p);
        v.sort();
        v
    };
    let files_before = listing(dir.path());
    let offline = load_offline(dir.path()).unwrap();
    assert_eq!(snapshot(&offline), expected);
    assert_eq!(listing(dir.path()), files_before, "offline load changed files");
}

fn walk(p: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let meta = e.metadata().unwrap();
        if meta.is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push((e.path().display().to_string(), meta.len()));
        }
    }
    out
}

#[test]
fn periodic_checkpoint_moves_current_forward_and_drops_covered_journal() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::new());
    let opts = StorageOptions {
        checkpoint_interval: Some(Duration::from_millis(20)),
        ..StorageOptions::default()
    };
    let storage = Storage::open(dir.path(), &opts, &engine).unwrap();
    commit(
        &engine,
        vec![Mutation::CreateCollection {
            ns: ns("p", "c"),
            uuid: [1; 16],
            options: doc! {},
        }],
    );
    commit(
        &engine,
        vec![Mutation::Insert {
            ns: ns("p", "c"),
            doc: rawdoc! { "_id": 1 },
        }],
    );
    let lsn = storage.last_lsn();
    let deadline = Instant::now() + Duration::from_secs(10);
    while storage.checkpoint_lsn() != Some(lsn) {
        assert!(Instant::now() < deadline, "no periodic checkpoint");
        std::thread::sleep(Duration::from_millis(5));
    }
    let current = std::fs::read_to_string(dir.path().join("CURRENT")).unwrap();
    assert_eq!(current, format!("checkpoint-{lsn:016x}\n"));
    let segments = list_segments(&dir.path().join(JOURNAL_DIR)).unwrap();
    assert_eq!(segments.iter().map(|s| s.0).collect::<Vec<_>>(), [lsn + 1]);
    storage.shutdown(&engine).unwrap();
}

#[test]
fn crash_during_a_checkpoint_leaves_the_previous_one_in_charge() {
    for journal in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let c = ns("k", "c");
        let (engine, storage) = open(dir.path(), journal);
        commit(
            &engine,
            vec![Mutation::CreateCollection {
                ns: c.clone(),
                uuid: [5; 16],
                options: doc! {},
            }],
        );
        commit(
            &engine,
            vec![Mutation::Insert {
                ns: c.clone(),
                doc: rawdoc! { "_id": 1 },
            }],
        );
        let checkpointed = storage.checkpoint(&engine).unwrap();
        commit(
            &engine,
            vec![Mutation::Insert {
                ns: c.clone(),
                doc: rawdoc! { "_id": 2 },
            }],
        );
        let last = storage.last_lsn();
        drop((engine, storage));
        // What a crash at various points of the next checkpoint leaves behind: a half-written temporary
        // directory, a renamed but not yet current directory, a half-written CURRENT.tmp.
        let half = dir.path().join(format!("checkpoint-{:016x}.tmp", last + 7));
        std::fs::create_dir(&half).unwrap();
        std::fs::write(half.join("collection-0.bson"), [1, 2, 3]).unwrap();
        let unswitched = dir.path().join(format!("checkpoint-{last:016x}"));
        std::fs::create_dir(&unswitched).unwrap();
        std::fs::write(unswitched.join("catalog.bson"), [9, 9]).unwrap();
        std::fs::write(dir.path().join("CURRENT.tmp"), "checkpoint-").unwrap();

        let (engine, storage) = open(dir.path(), journal);
        let ids: Vec<i32> = engine.read(|cat| {
            cat.collection(&c)
                .unwrap()
                .iter()
                .map(|(_, d)| d.get_i32("_id").unwrap())
                .collect()
        });
        // With the journal the write after the checkpoint is replayed; without it only the checkpoint counts.
        assert_eq!(ids, if journal { vec![1, 2] } else { vec![1] }, "journal: {journal}");
        if !journal {
            assert_eq!(storage.checkpoint_lsn(), Some(checkpointed));
        }
        commit(
            &engine,
            vec![Mutation::Insert {
                ns: c.clone(),
                doc: rawdoc! { "_id": 3 },
            }],
        );
        commit(
            &engine,
            vec![Mutation::Insert {
                ns: c.clone(),
                doc: rawdoc! { "_id": 4 },
            }],
        );
        let expected = snapshot(&engine);
        storage.shutdown(&engine).unwrap();
        drop((engine, storage));
        assert!(!half.exists(), "leftover temporary checkpoint not cleaned up");
        let (engine, _storage) = open(dir.path(), journal);
        assert_eq!(snapshot(&engine), expected, "journal: {journal}");
    }
}
