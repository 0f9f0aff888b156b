//! Replay of the real oplog fixtures of the MongoDB Database Tools, with the outcomes their own
//! tests expect (FORMATS.md 3.3, 4.3 and 6).

use std::{collections::BTreeMap, path::PathBuf};

use bson::{Bson, Document, RawDocumentBuf, Timestamp, doc};
use tidemark_oplog::{IndexBuildOptions, IndexCatalog, OplogEntry, ReplayOptions, Replayer, Step};

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/mongo-tools")
        .join(rel)
}

/// Concatenated BSON documents of a fixture file (the files are well formed).
fn read_bson(rel: &str) -> Vec<RawDocumentBuf> {
    let bytes = std::fs::read(fixture(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"));
    let mut docs = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let len = usize::try_from(i32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())).unwrap();
        docs.push(RawDocumentBuf::from_bytes(bytes[at..at + len].to_vec()).unwrap());
        at += len;
    }
    docs
}

fn metadata_catalog(rel: &str, ns: &str) -> IndexCatalog {
    let text = std::fs::read_to_string(fixture(rel)).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let Bson::Document(meta) = Bson::try_from(json).unwrap() else {
        panic!("metadata is not an object")
    };
    let mut catalog = IndexCatalog::new();
    catalog.record_options(ns, meta.get_document("options").unwrap_or(&Document::new()));
    for spec in meta.get_array("indexes").unwrap() {
        catalog.add_index(ns, spec.as_document().unwrap().clone());
    }
    catalog
}

fn replay(docs: &[RawDocumentBuf], options: ReplayOptions, catalog: IndexCatalog) -> (Vec<Document>, Replayer) {
    let mut replayer = Replayer::new(options, catalog);
    let mut commands = Vec::new();
    for raw in docs {
        let Step { commands: c, stop } = replayer.push_raw(raw).unwrap();
        commands.extend(c);
        if stop {
            break;
        }
    }
    (commands, replayer)
}

fn applied_entry(cmd: &Document) -> &Document {
    let ops = cmd.get_array("applyOps").unwrap();
    assert_eq!(ops.len(), 1, "one entry per applyOps command");
    ops[0].as_document().unwrap()
}

fn index_names(catalog: &IndexCatalog, ns: &str) -> Vec<String> {
    catalog.get(ns).map_or_else(Vec::new, |c| {
        c.indexes
            .iter()
            .map(|s| s.get_str("name").unwrap().to_owned())
            .collect()
    })
}

#[test]
fn drop_index_removes_it_from_the_catalog_without_sending_it() {
    let catalog = metadata_catalog(
        "mongorestore/testdata/coll_with_index/test/foo.metadata.json",
        "test.foo",
    );
    assert_eq!(index_names(&catalog, "test.foo"), ["_id_", "f_1"]);
    let (commands, replayer) = replay(
        &read_bson("mongorestore/testdata/oplogs/bson/drop_index.bson"),
        ReplayOptions::default(),
        catalog,
    );
    assert!(commands.is_empty(), "{commands:?}");
    assert_eq!(index_names(replayer.catalog(), "test.foo"), ["_id_"]);
    // Only the _id index remains, and it is never sent through createIndexes.
    assert!(
        replayer
            .catalog()
            .create_indexes_commands(IndexBuildOptions::default())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn drop_collection_and_drop_database_clear_the_catalog_and_are_applied() {
    for (file, command) in [("drop_collection.bson", "drop"), ("drop_db.bson", "dropDatabase")] {
        let catalog = metadata_catalog(
            "mongorestore/testdata/coll_with_index/test/foo.metadata.json",
            "test.foo",
        );
        let (commands, replayer) = replay(
            &read_bson(&format!("mongorestore/testdata/oplogs/bson/{file}")),
            ReplayOptions::default(),
            catalog,
        );
        assert!(replayer.catalog().get("test.foo").is_none(), "{file}");
        let sent: Vec<&str> = commands
            .iter()
            .map(|c| {
                applied_entry(c)
                    .get_document("o")
                    .unwrap()
                    .keys()
                    .next()
                    .unwrap()
                    .as_str()
            })
            .collect();
        assert_eq!(sent, [command], "{file}");
        assert!(
            !applied_entry(&commands[0]).contains_key("ui"),
            "ui dropped without --preserveUUID"
        );
    }
}

#[test]
fn create_index_and_coll_mod_fold_into_the_catalog() {
    let base = "mongorestore/testdata/coll_with_ttl_index/test/foo.metadata.json";
    let (commands, replayer) = replay(
        &read_bson("mongorestore/testdata/oplogs/bson/create_index.bson"),
        ReplayOptions::default(),
        metadata_catalog(base, "test.foo"),
    );
    assert!(commands.is_empty());
    assert_eq!(index_names(replayer.catalog(), "test.foo"), ["_id_", "f_1"]);

    let (commands, replayer) = replay(
        &read_bson("mongorestore/testdata/oplogs/bson/collMod.bson"),
        ReplayOptions::default(),
        metadata_catalog(base, "test.foo"),
    );
    assert!(commands.is_empty(), "an index-only collMod is not sent: {commands:?}");
    let f1 = &replayer.catalog().get("test.foo").unwrap().indexes[1];
    assert_eq!(
        f1.get("expireAfterSeconds")
            .and_then(Bson::as_i64)
            .or_else(|| f1.get_i32("expireAfterSeconds").ok().map(i64::from)),
        Some(3600)
    );

    let (_, replayer) = replay(
        &read_bson("mongorestore/testdata/oplogs/bson/collMod_with_hidden.bson"),
        ReplayOptions::default(),
        metadata_catalog(base, "test.foo"),
    );
    let f1 = &replayer.catalog().get("test.foo").unwrap().indexes[1];
    assert_eq!(f1.get_bool("hidden"), Ok(true));
    assert!(f1.get("expireAfterSeconds").is_some());
}

#[test]
fn coll_mod_index_uniqueness_sets_prepare_unique_everywhere() {
    let docs = read_bson("mongorestore/testdata/oplogs/bson/collMod_indexUniqueness.bson");
    let (_, replayer) = replay(&docs, ReplayOptions::default(), IndexCatalog::new());
    let ns = "mongodump_test_db.coll1";
    let cmds = replayer
        .catalog()
        .create_indexes_commands(IndexBuildOptions::default())
        .unwrap();
    let (_, coll, cmd) = cmds.iter().find(|(db, c, _)| format!("{db}.{c}") == ns).unwrap();
    assert_eq!(coll, "coll1");
    let indexes = cmd.get_array("indexes").unwrap();
    // 5 indexes in total with the _id index, which is created with the collection.
    assert_eq!(indexes.len(), 4);
    for spec in indexes {
        assert_eq!(
            spec.as_document().unwrap().get_bool("prepareUnique"),
            Ok(true),
            "{spec}"
        );
    }
}

#[test]
fn index_build_entries_from_fixture_directories() {
    // commit_indexes_build: a_1 and b_1 (with partialFilterExpression) via commitIndexBuild.
    let (_, r) = replay(
        &read_bson("mongorestore/testdata/commit_indexes_build/oplog.bson"),
        ReplayOptions::default(),
        IndexCatalog::new(),
    );
    assert_eq!(index_names(r.catalog(), "commit_index.test"), ["a_1", "b_1"]);
    // create_indexes: createIndexes entries.
    let (_, r) = replay(
        &read_bson("mongorestore/testdata/create_indexes/oplog.bson"),
        ReplayOptions::default(),
        IndexCatalog::new(),
    );
    assert_eq!(index_names(r.catalog(), "create_indexes.test"), ["a_1", "b_1"]);
    let b1 = &r.catalog().get("create_indexes.test").unwrap().indexes[1];
    assert!(b1.contains_key("partialFilterExpression"));
    // oplog_ignore_index: startIndexBuild + abortIndexBuild are both skipped.
    let (commands, r) = replay(
        &read_bson("mongorestore/testdata/oplog_ignore_index/oplog.bson"),
        ReplayOptions::default(),
        IndexCatalog::new(),
    );
    assert!(commands.is_empty());
    assert_eq!(r.applied(), 0);
    // tools-2002: create is applied, createIndexes folded.
    let (commands, r) = replay(
        &read_bson("mongorestore/testdata/tools-2002/oplog.bson"),
        ReplayOptions::default(),
        IndexCatalog::new(),
    );
    assert_eq!(commands.len(), 1);
    assert_eq!(index_names(r.catalog(), "foo.bar"), ["a_1_b_1"]);
}

#[test]
fn noops_and_config_namespaces_are_skipped() {
    let (commands, _) = replay(
        &read_bson("mongorestore/testdata/dump_with_noop_in_oplog/oplog.bson"),
        ReplayOptions::default(),
        IndexCatalog::new(),
    );
    let ops: Vec<(String, String)> = commands
        .iter()
        .map(|c| {
            let e = applied_entry(c);
            (e.get_str("op").unwrap().to_owned(), e.get_str("ns").unwrap().to_owned())
        })
        .collect();
    assert_eq!(
        ops,
        [
            ("c".to_owned(), "test.$cmd".to_owned()),
            ("i".to_owned(), "test.data".to_owned())
        ]
    );

    // The shape of oplog_partial_skips (FORMATS.md 6.2): config namespaces outside the kept list
    // are skipped, retryable writes (lsid + txnNumber on a CRUD op) are ordinary entries.
    let lsid = doc! {"id": bson::Binary { subtype: bson::spec::BinarySubtype::Uuid, bytes: vec![7; 16] }};
    let entries = [
        doc! {"op": "c", "ns": "config.$cmd", "o": {"create": "cache.test"}},
        doc! {"op": "i", "ns": "config.cache.test", "o": {"_id": 1}},
        doc! {"op": "i", "ns": "config.system.sessions", "o": {"_id": 1}},
        doc! {"op": "d", "ns": "config.system.sessions", "o": {"_id": 1}},
        doc! {"op": "i", "ns": "config.settings", "o": {"_id": "balancer"}},
        doc! {"op": "i", "ns": "__mdb_internal_x.c", "o": {"_id": 1}},
        doc! {"op": "c", "ns": "db3.$cmd", "o": {"create": "c1"}},
        doc! {"op": "i", "ns": "db3.c1", "o": {"_id": 1}, "lsid": lsid.clone(), "txnNumber": 1_i64, "stmtId": 0},
        doc! {"op": "km", "ns": "", "o": {}},
    ];
    let mut replayer = Replayer::new(ReplayOptions::default(), IndexCatalog::new());
    let mut sent = Vec::new();
    for e in entries {
        for c in replayer.push(OplogEntry::from_document(&e).unwrap()).unwrap().commands {
            sent.push(applied_entry(&c).get_str("ns").unwrap().to_owned());
        }
    }
    assert_eq!(sent, ["config.settings", "db3.$cmd", "db3.c1"]);
}

#[test]
fn nested_apply_ops_are_flattened_and_lose_ui() {
    let docs = read_bson("mongorestore/testdata/oplogdump/oplog.bson");
    let (commands, replayer) = replay(&docs, ReplayOptions::default(), IndexCatalog::new());
    let xs: Vec<i32> = commands
        .iter()
        .map(|c| applied_entry(c).get_document("o").unwrap().get_i32("x").unwrap())
        .collect();
    assert_eq!(xs, [1456, 1457, 1458, 1459, 1460]);
    assert!(
        commands
            .iter()
            .all(|c| !applied_entry(c).contains_key("ui") && !applied_entry(c).contains_key("h"))
    );
    assert!(
        commands
            .iter()
            .all(|c| c.get_bool("bypassDocumentValidation") == Ok(false))
    );
    assert_eq!(replayer.applied(), 6);

    let (commands, _) = replay(&docs, ReplayOptions::new(None, true, true), IndexCatalog::new());
    // Every 3.6 entry (top-level and nested) carries a `ui`; --preserveUUID keeps it.
    assert_eq!(commands.len(), 5);
    assert!(
        commands
            .iter()
            .all(|c| matches!(applied_entry(c).get("ui"), Some(Bson::Binary(_))))
    );
    assert!(
        commands
            .iter()
            .all(|c| c.get_bool("bypassDocumentValidation") == Ok(true))
    );
}

#[test]
fn oplog_limit_is_exclusive_and_nested_limit_is_an_error() {
    let docs = read_bson("mongorestore/testdata/extra_oplog.bson");
    let limit = Timestamp {
        time: 1_500_000_000,
        increment: 1,
    };
    let (commands, replayer) = replay(
        &docs,
        ReplayOptions::new(Some(limit), false, false),
        IndexCatalog::new(),
    );
    assert_eq!(commands.len(), 4);
    assert!(replayer.stopped());
    // v 2.0 (double) is re-encoded as int32, `t` as null, `_id`/`h` dropped.
    let e = applied_entry(&commands[0]);
    assert_eq!(e.get("v"), Some(&Bson::Int32(2)));
    assert_eq!(e.get("t"), Some(&Bson::Null));
    assert!(!e.contains_key("_id") && !e.contains_key("h"));

    // oplogdump: the nested 3.6-style entries carry their own ts (1511064038:29..31).
    let docs = read_bson("mongorestore/testdata/oplogdump/oplog.bson");
    let mut replayer = Replayer::new(
        ReplayOptions::new(
            Some(Timestamp {
                time: 1_511_064_038,
                increment: 30,
            }),
            false,
            false,
        ),
        IndexCatalog::new(),
    );
    assert_eq!(replayer.push_raw(&docs[0]).unwrap().commands.len(), 1);
    assert!(matches!(
        replayer.push_raw(&docs[1]),
        Err(tidemark_oplog::OplogError::NestedLimit { .. })
    ));
}

#[test]
fn vectored_inserts_are_not_transactions() {
    let (commands, _) = replay(
        &read_bson("mongorestore/testdata/oplogs/bson/vectored_insert.bson"),
        ReplayOptions::default(),
        IndexCatalog::new(),
    );
    let docs: Vec<&Document> = commands
        .iter()
        .map(|c| applied_entry(c).get_document("o").unwrap())
        .collect();
    assert_eq!(docs, [&doc! {"_id": 100, "a": 1}, &doc! {"_id": 200, "a": 2}]);
    let (commands, _) = replay(
        &read_bson("mongorestore/testdata/oplogs/bson/linked_vectored_inserts.bson"),
        ReplayOptions::default(),
        IndexCatalog::new(),
    );
    let ids: Vec<i32> = commands
        .iter()
        .map(|c| applied_entry(c).get_document("o").unwrap().get_i32("_id").unwrap())
        .collect();
    assert_eq!(ids, [300, 400, 500, 600, 700]);
}

#[test]
fn bypass_document_validation_fixture_is_encoded_with_the_flag() {
    let docs = read_bson("mongorestore/testdata/oplogs/bson/bypassDocumentValidation.bson");
    let (commands, _) = replay(&docs, ReplayOptions::new(None, false, true), IndexCatalog::new());
    assert!(!commands.is_empty());
    assert!(
        commands
            .iter()
            .all(|c| c.keys().collect::<Vec<_>>() == ["applyOps", "bypassDocumentValidation"])
    );
}

#[test]
fn unknown_and_conversion_commands_are_errors() {
    let docs = read_bson("mongodump/testdata/importCollection.bson");
    let mut replayer = Replayer::new(ReplayOptions::default(), IndexCatalog::new());
    let err = replayer.push_raw(&docs[0]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("unknown oplog command name importCollection: "),
        "{err}"
    );
    let entry = OplogEntry::from_document(
        &doc! {"op": "c", "ns": "db.$cmd", "o": {"upgradeDowngradeViewlessTimeseries": "foo_ts", "isUpgrade": true}},
    )
    .unwrap();
    let err = replayer.push(entry).unwrap_err();
    assert!(
        err.to_string().contains("upgradeDowngradeViewlessTimeseries")
            && err.to_string().contains("crosses a timeseries format conversion")
    );
    // dropIdent is skipped, also when nested in applyOps.
    let nested = doc! {"op": "c", "ns": "admin.$cmd", "o": {"applyOps": [
    {"op": "i", "ns": "t.c", "o": {"_id": 1}}, {"op": "c", "ns": "t.$cmd", "o": {"dropIdent": "collection-7"}}, {"op": "i", "ns": "t.c", "o": {"_id": 2}}]}};
    let step = replayer.push(OplogEntry::from_document(&nested).unwrap()).unwrap();
    assert_eq!(step.commands.len(), 2);
}

/// Applies `applyOps` commands to an in-memory model of the collections: enough of insert,
/// `$set` / `$v:2` updates and delete to compare with the fixtures' post-images.
#[derive(Default)]
struct Model(BTreeMap<String, Vec<Document>>);

impl Model {
    fn apply(&mut self, cmd: &Document) {
        let e = applied_entry(cmd);
        let ns = e.get_str("ns").unwrap().to_owned();
        let o = e.get_document("o").unwrap();
        let coll = self.0.entry(ns).or_default();
        match e.get_str("op").unwrap() {
            "i" => coll.push(o.clone()),
            "d" => coll.retain(|d| d.get("_id") != o.get("_id")),
            "u" => {
                let id = e.get_document("o2").unwrap().get("_id").unwrap();
                let target = coll.iter_mut().find(|d| d.get("_id") == Some(id)).unwrap();
                let set = o
                    .get_document("$set")
                    .or_else(|_| o.get_document("diff").and_then(|d| d.get_document("u")))
                    .unwrap();
                for (k, v) in set {
                    target.insert(k.clone(), v.clone());
                }
            }
            other => panic!("unexpected op {other}"),
        }
    }
}

/// Rewrites legacy `{"$binary": "<b64>", "$type": "<hex>"}` into the canonical form the bson
/// crate's Extended JSON parser accepts (the Go parser accepts both).
fn canonical_binary(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if let (Some(serde_json::Value::String(b64)), Some(serde_json::Value::String(t))) =
                (map.get("$binary"), map.get("$type"))
            {
                let canonical = serde_json::json!({"$binary": {"base64": b64, "subType": t}});
                *value = canonical;
                return;
            }
            map.values_mut().for_each(canonical_binary);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(canonical_binary),
        _ => {}
    }
}

/// A transaction test case: name, ops, namespace and expected post-image.
type Case = (String, Vec<Document>, String, Option<Vec<Document>>);

fn load_cases(rel: &str) -> Vec<Case> {
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture(rel)).unwrap()).unwrap();
    canonical_binary(&mut json);
    let mut cases = Vec::new();
    for (name, case) in json.as_object().unwrap() {
        let Bson::Document(case) = Bson::try_from(case.clone()).unwrap() else {
            panic!()
        };
        let ops = case
            .get_array("ops")
            .unwrap()
            .iter()
            .map(|o| o.as_document().unwrap().clone())
            .collect();
        let post = case
            .get_array("postimage")
            .ok()
            .map(|p| p.iter().map(|o| o.as_document().unwrap().clone()).collect());
        cases.push((
            name.clone(),
            ops,
            case.get_str("ns").unwrap_or_default().to_owned(),
            post,
        ));
    }
    cases
}

fn check_cases(rel: &str, interleave: bool) {
    let cases = load_cases(rel);
    let mut replayer = Replayer::new(ReplayOptions::default(), IndexCatalog::new());
    let mut model = Model::default();
    let mut queues: Vec<std::collections::VecDeque<Document>> =
        cases.iter().map(|c| c.1.iter().cloned().collect()).collect();
    // Either case by case, or round-robin over all cases (each keeps its own order).
    loop {
        let mut progressed = false;
        for q in &mut queues {
            let batch: Vec<Document> = if interleave {
                q.pop_front().into_iter().collect()
            } else {
                q.drain(..).collect()
            };
            for op in batch {
                progressed = true;
                for cmd in replayer.push(OplogEntry::from_document(&op).unwrap()).unwrap().commands {
                    model.apply(&cmd);
                }
            }
        }
        if !progressed {
            break;
        }
    }
    let mut checked = 0;
    for (name, _, ns, post) in &cases {
        let Some(post) = post else { continue };
        checked += 1;
        let got = model.0.get(ns).cloned().unwrap_or_default();
        assert_eq!(&got, post, "{rel}: case {name:?}");
    }
    assert!(checked >= 10, "{rel}: only {checked} cases with a post-image");
}

#[test]
fn transactions_fixture_post_images() {
    check_cases("mongorestore/testdata/transactions.json", false);
    check_cases("mongorestore/testdata/transactions.json", true);
    check_cases("common/txn/testdata/oplog_entries.json", false);
    check_cases("common/txn/testdata/oplog_entries.json", true);
}
