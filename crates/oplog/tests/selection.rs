//! Namespace-aware replay: entries routed through a selection before mongorestore's rules.
//!
//! The selection used throughout: `shop.*` except `shop.secret` is selected and renamed to
//! `archive.*` (`--nsInclude 'shop.*' --nsExclude shop.secret --nsFrom 'shop.*' --nsTo 'archive.*'`);
//! `other.*` and everything else is not selected.

use bson::{Bson, Document, Timestamp, doc};
use tidemark_oplog::{IndexCatalog, OplogEntry, OplogError, ReplayOptions, Replayer, RestorePoint, Selection};

fn selection(existing: &[&str]) -> Selection {
    Selection::new(
        |ns: &str| {
            ns.strip_prefix("shop.")
                .filter(|c| *c != "secret")
                .map(|c| format!("archive.{c}"))
        },
        existing.iter().map(|s| (*s).to_owned()),
    )
}

fn replayer(existing: &[&str]) -> Replayer {
    Replayer::new(ReplayOptions::default(), IndexCatalog::new()).with_selection(selection(existing))
}

fn ts(i: u32) -> Timestamp {
    Timestamp {
        time: 100,
        increment: i,
    }
}

fn crud(i: u32, op: &str, ns: &str, o: Document) -> Document {
    let mut e = doc! {"ts": ts(i), "t": 1_i64, "v": 2, "op": op, "ns": ns, "o": o};
    if op == "u" {
        e.insert("o2", doc! {"_id": 1});
    }
    e
}

fn cmd(i: u32, db: &str, o: Document) -> Document {
    doc! {"ts": ts(i), "t": 1_i64, "v": 2, "op": "c", "ns": format!("{db}.$cmd"), "o": o}
}

/// The `(op, ns, o)` of every entry the replayer sends, in order.
fn push(r: &mut Replayer, entry: &Document) -> Vec<(String, String, Document)> {
    let step = r.push(OplogEntry::from_document(entry).unwrap()).unwrap();
    step.commands
        .iter()
        .flat_map(|c| c.get_array("applyOps").unwrap().clone())
        .map(|e| {
            let e = e.as_document().unwrap().clone();
            (
                e.get_str("op").unwrap().to_owned(),
                e.get_str("ns").unwrap().to_owned(),
                e.get_document("o").unwrap().clone(),
            )
        })
        .collect()
}

fn one(op: &str, ns: &str, o: Document) -> Vec<(String, String, Document)> {
    vec![(op.to_owned(), ns.to_owned(), o)]
}

#[test]
fn crud_is_renamed_or_skipped() {
    let mut r = replayer(&[]);
    assert_eq!(
        push(&mut r, &crud(1, "i", "shop.orders", doc! {"_id": 1})),
        one("i", "archive.orders", doc! {"_id": 1})
    );
    assert_eq!(
        push(&mut r, &crud(2, "u", "shop.orders", doc! {"$set": {"a": 1}})),
        one("u", "archive.orders", doc! {"$set": {"a": 1}})
    );
    assert!(push(&mut r, &crud(3, "i", "shop.secret", doc! {"_id": 1})).is_empty());
    assert!(push(&mut r, &crud(4, "d", "other.orders", doc! {"_id": 1})).is_empty());
    assert_eq!(
        push(&mut r, &crud(5, "d", "shop.orders", doc! {"_id": 1})),
        one("d", "archive.orders", doc! {"_id": 1})
    );
    assert_eq!((r.applied(), r.skipped()), (3, 2));
}

#[test]
fn nested_apply_ops_are_routed_one_by_one() {
    let mut r = replayer(&[]);
    let entry = cmd(
        1,
        "admin",
        doc! {"applyOps": [
            {"op": "i", "ns": "shop.a", "o": {"_id": 1}},
            {"op": "i", "ns": "other.a", "o": {"_id": 2}},
            {"op": "c", "ns": "shop.$cmd", "o": {"create": "b"}},
            {"op": "i", "ns": "shop.secret", "o": {"_id": 3}},
        ]},
    );
    assert_eq!(
        push(&mut r, &entry),
        vec![
            ("i".into(), "archive.a".into(), doc! {"_id": 1}),
            ("c".into(), "archive.$cmd".into(), doc! {"create": "b"}),
        ]
    );
    assert_eq!(r.skipped(), 2);
}

fn txn(i: u32, o: Document) -> Document {
    let lsid = doc! {"id": bson::Binary { subtype: bson::spec::BinarySubtype::Uuid, bytes: vec![7; 16] }};
    doc! {"ts": ts(i), "t": 1_i64, "v": 2, "op": "c", "ns": "admin.$cmd", "o": o, "lsid": lsid, "txnNumber": 3_i64,
    "prevOpTime": {"ts": Timestamp { time: 0, increment: 0 }, "t": -1_i64}}
}

#[test]
fn transactions_apply_only_their_selected_ops_at_commit() {
    let mut r = replayer(&[]);
    let first = txn(
        1,
        doc! {"applyOps": [
            {"op": "i", "ns": "shop.a", "o": {"_id": 1}},
            {"op": "i", "ns": "other.a", "o": {"_id": 1}},
        ], "partialTxn": true},
    );
    assert!(
        push(&mut r, &first).is_empty(),
        "a partial transaction waits for its end"
    );
    let last = txn(
        2,
        doc! {"applyOps": [
            {"op": "u", "ns": "shop.a", "o": {"$set": {"x": 1}}, "o2": {"_id": 1}},
            {"op": "d", "ns": "shop.secret", "o": {"_id": 9}},
        ]},
    );
    let step = r.push(OplogEntry::from_document(&last).unwrap()).unwrap();
    let ns: Vec<&str> = step
        .commands
        .iter()
        .map(|c| {
            c.get_array("applyOps").unwrap()[0]
                .as_document()
                .unwrap()
                .get_str("ns")
                .unwrap()
        })
        .collect();
    assert_eq!(ns, ["archive.a", "archive.a"]);
    assert!(tidemark_oplog::is_isolated_entry(
        &bson::RawDocumentBuf::from_document(&last).unwrap()
    ));
    assert_eq!((r.applied(), r.skipped()), (2, 2));
}

#[test]
fn a_transaction_committed_after_the_point_is_not_applied_at_all() {
    // The prepared transaction's data entry is before the point, its commit after: nothing of it
    // is applied, while the plain insert before the point is.
    let point = RestorePoint::at_timestamp(ts(3));
    let options = ReplayOptions::new(point.exclusive_limit(), false, false);
    let mut r = Replayer::new(options, IndexCatalog::new()).with_selection(selection(&[]));
    let prepared = txn(
        2,
        doc! {"applyOps": [{"op": "i", "ns": "shop.a", "o": {"_id": 1}}], "prepare": true},
    );
    let commit = txn(
        4,
        doc! {"commitTransaction": 1, "commitTimestamp": Timestamp { time: 100, increment: 4 }},
    );
    assert_eq!(push(&mut r, &crud(1, "i", "shop.b", doc! {"_id": 1})).len(), 1);
    assert!(push(&mut r, &prepared).is_empty());
    assert!(push(&mut r, &crud(3, "i", "shop.b", doc! {"_id": 2})).len() == 1);
    let step = r.push(OplogEntry::from_document(&commit).unwrap()).unwrap();
    assert!(step.stop && step.commands.is_empty());
    assert_eq!(r.open_transactions(), 1, "discarded at the end");
}

#[test]
fn a_large_transaction_whose_last_entry_is_after_the_point_is_not_applied_at_all() {
    let point = RestorePoint::at_timestamp(ts(2));
    let options = ReplayOptions::new(point.exclusive_limit(), false, false);
    let mut r = Replayer::new(options, IndexCatalog::new()).with_selection(selection(&[]));
    let chunk = |i: u32, partial: bool| {
        let mut o = doc! {"applyOps": [{"op": "i", "ns": "shop.a", "o": {"_id": i}}]};
        if partial {
            o.insert("partialTxn", true);
        }
        txn(i, o)
    };
    assert!(push(&mut r, &chunk(1, true)).is_empty());
    assert!(push(&mut r, &chunk(2, true)).is_empty());
    let step = r.push(OplogEntry::from_document(&chunk(3, false)).unwrap()).unwrap();
    assert!(step.stop && step.commands.is_empty());
    assert_eq!((r.applied(), r.open_transactions()), (0, 1));
    // The same transaction with the point at its last entry is applied whole.
    let point = RestorePoint::at_timestamp(ts(3));
    let options = ReplayOptions::new(point.exclusive_limit(), false, false);
    let mut r = Replayer::new(options, IndexCatalog::new()).with_selection(selection(&[]));
    push(&mut r, &chunk(1, true));
    push(&mut r, &chunk(2, true));
    assert_eq!(push(&mut r, &chunk(3, false)).len(), 3);
}

#[test]
fn collection_ddl_follows_the_selection() {
    let mut r = replayer(&[]);
    assert_eq!(
        push(
            &mut r,
            &cmd(1, "shop", doc! {"create": "a", "capped": true, "size": 4096})
        ),
        one("c", "archive.$cmd", doc! {"create": "a", "capped": true, "size": 4096})
    );
    assert!(push(&mut r, &cmd(2, "shop", doc! {"create": "secret"})).is_empty());
    assert!(push(&mut r, &cmd(3, "other", doc! {"create": "a"})).is_empty());
    assert_eq!(
        push(
            &mut r,
            &cmd(4, "shop", doc! {"collMod": "a", "validator": {"x": {"$exists": true}}})
        ),
        one(
            "c",
            "archive.$cmd",
            doc! {"collMod": "a", "validator": {"x": {"$exists": true}}}
        )
    );
    assert_eq!(
        push(&mut r, &cmd(5, "shop", doc! {"drop": "a"})),
        one("c", "archive.$cmd", doc! {"drop": "a"})
    );
    assert!(push(&mut r, &cmd(6, "other", doc! {"drop": "a"})).is_empty());
    // A view over a selected collection keeps pointing at that collection's destination.
    let mut renamed = Replayer::new(ReplayOptions::default(), IndexCatalog::new()).with_selection(Selection::new(
        |ns: &str| match ns {
            "shop.src" => Some("shop.src_copy".into()),
            "shop.v" => Some("shop.v".into()),
            _ => None,
        },
        [],
    ));
    assert_eq!(
        push(
            &mut renamed,
            &cmd(7, "shop", doc! {"create": "v", "viewOn": "src", "pipeline": []})
        ),
        one(
            "c",
            "shop.$cmd",
            doc! {"create": "v", "viewOn": "src_copy", "pipeline": []}
        )
    );
}

#[test]
fn index_operations_fold_into_the_catalog_under_destination_names() {
    let mut r = replayer(&[]);
    for entry in [
        cmd(
            1,
            "shop",
            doc! {"createIndexes": "a", "v": 2, "key": {"x": 1}, "name": "x_1"},
        ),
        cmd(
            2,
            "shop",
            doc! {"createIndexes": "a", "v": 2, "key": {"y": 1}, "name": "y_1"},
        ),
        cmd(3, "shop", doc! {"dropIndexes": "a", "index": "y_1"}),
        cmd(
            4,
            "shop",
            doc! {"collMod": "a", "index": {"name": "x_1", "hidden": true}},
        ),
        cmd(
            5,
            "shop",
            doc! {"createIndexes": "secret", "v": 2, "key": {"z": 1}, "name": "z_1"},
        ),
        cmd(
            6,
            "other",
            doc! {"createIndexes": "a", "v": 2, "key": {"z": 1}, "name": "z_1"},
        ),
    ] {
        assert!(push(&mut r, &entry).is_empty(), "index operations are built at the end");
    }
    let commands = r
        .catalog()
        .create_indexes_commands(tidemark_oplog::IndexBuildOptions::default())
        .unwrap();
    let built: Vec<(String, String, Vec<Bson>)> = commands
        .into_iter()
        .map(|(db, coll, c)| (db, coll, c.get_array("indexes").unwrap().clone()))
        .collect();
    assert_eq!(built.len(), 1, "{built:?}");
    let (db, coll, indexes) = &built[0];
    assert_eq!((db.as_str(), coll.as_str()), ("archive", "a"));
    assert_eq!(indexes.len(), 1);
    let spec = indexes[0].as_document().unwrap();
    assert_eq!(spec.get_str("name").unwrap(), "x_1");
    assert_eq!(spec.get_bool("hidden"), Ok(true));
}

#[test]
fn drop_database_drops_only_the_selected_collections_that_exist() {
    // shop.a was restored, shop.b is created by the oplog, shop.c was dropped before, shop.secret
    // and other.* are not selected.
    let mut r = replayer(&["shop.a", "shop.c", "shop.secret", "other.x"]);
    push(&mut r, &crud(1, "i", "shop.b", doc! {"_id": 1}));
    push(&mut r, &cmd(2, "shop", doc! {"drop": "c"}));
    let drops = push(&mut r, &cmd(3, "shop", doc! {"dropDatabase": 1}));
    assert_eq!(
        drops,
        vec![
            ("c".into(), "archive.$cmd".into(), doc! {"drop": "a"}),
            ("c".into(), "archive.$cmd".into(), doc! {"drop": "b"}),
        ]
    );
    assert!(push(&mut r, &cmd(4, "other", doc! {"dropDatabase": 1})).is_empty());
    assert!(
        push(&mut r, &cmd(5, "shop", doc! {"dropDatabase": 1})).is_empty(),
        "nothing selected is left in shop"
    );
}

#[test]
fn renames_within_out_of_and_into_the_selection() {
    let mut r = replayer(&["shop.a", "shop.b"]);
    let rename = |i: u32, from: &str, to: &str| {
        cmd(
            i,
            from.split('.').next().unwrap(),
            doc! {"renameCollection": from, "to": to, "stayTemp": false, "dropTarget": false},
        )
    };
    // Within: both ends renamed.
    assert_eq!(
        push(&mut r, &rename(1, "shop.a", "shop.a2")),
        one(
            "c",
            "archive.$cmd",
            doc! {"renameCollection": "archive.a", "to": "archive.a2", "stayTemp": false, "dropTarget": false}
        )
    );
    // Later writes to the new name follow it; a drop of the renamed collection drops its destination.
    assert_eq!(
        push(&mut r, &crud(2, "i", "shop.a2", doc! {"_id": 5})),
        one("i", "archive.a2", doc! {"_id": 5})
    );
    // Out of the selection: the collection leaves it, its destination is dropped.
    assert_eq!(
        push(&mut r, &rename(3, "shop.b", "other.b")),
        one("c", "archive.$cmd", doc! {"drop": "b"})
    );
    assert!(push(&mut r, &crud(4, "i", "other.b", doc! {"_id": 1})).is_empty());
    // Neither end selected.
    assert!(push(&mut r, &rename(5, "other.b", "other.c")).is_empty());
    // dropDatabase after the renames drops the collections as they are named now.
    assert_eq!(
        push(&mut r, &cmd(6, "shop", doc! {"dropDatabase": 1})),
        one("c", "archive.$cmd", doc! {"drop": "a2"})
    );
    // Into the selection: refused, naming the entry and the namespaces.
    let err = r
        .push(OplogEntry::from_document(&rename(7, "other.c", "shop.c")).unwrap())
        .unwrap_err();
    assert!(matches!(err, OplogError::RenameIntoSelection { .. }));
    assert_eq!(
        err.to_string(),
        "renameCollection at Timestamp(100, 7) moves other.c, which is not selected, into the selected namespace shop.c: its documents are not part of this restore; select other.c as well (for example --nsInclude 'other.*')"
    );
}

#[test]
fn indexes_to_build_follow_renamed_collections() {
    let mut r = replayer(&["shop.a", "shop.b"]);
    push(
        &mut r,
        &cmd(
            1,
            "shop",
            doc! {"createIndexes": "a", "v": 2, "key": {"x": 1}, "name": "x_1"},
        ),
    );
    push(
        &mut r,
        &cmd(
            2,
            "shop",
            doc! {"createIndexes": "b", "v": 2, "key": {"y": 1}, "name": "y_1"},
        ),
    );
    push(
        &mut r,
        &cmd(
            3,
            "shop",
            doc! {"renameCollection": "shop.a", "to": "shop.b", "dropTarget": true},
        ),
    );
    let built: Vec<(String, String)> = r
        .catalog()
        .create_indexes_commands(tidemark_oplog::IndexBuildOptions::default())
        .unwrap()
        .into_iter()
        .map(|(db, coll, c)| {
            let names: Vec<&str> = c
                .get_array("indexes")
                .unwrap()
                .iter()
                .map(|i| i.as_document().unwrap().get_str("name").unwrap())
                .collect();
            (format!("{db}.{coll}"), names.join(","))
        })
        .collect();
    assert_eq!(built, [("archive.b".to_owned(), "x_1".to_owned())]);
}

#[test]
fn renames_inside_transactions_and_apply_ops_are_routed() {
    let mut r = replayer(&["shop.a"]);
    let entry = cmd(
        1,
        "admin",
        doc! {"applyOps": [
            {"op": "c", "ns": "shop.$cmd", "o": {"renameCollection": "shop.a", "to": "other.a", "dropTarget": false}},
        ]},
    );
    assert_eq!(push(&mut r, &entry), one("c", "archive.$cmd", doc! {"drop": "a"}));
}

#[test]
fn without_a_selection_nothing_changes() {
    let mut r = Replayer::new(ReplayOptions::default(), IndexCatalog::new());
    assert_eq!(
        push(&mut r, &cmd(1, "shop", doc! {"dropDatabase": 1})),
        one("c", "shop.$cmd", doc! {"dropDatabase": 1})
    );
    assert_eq!(
        push(&mut r, &crud(2, "i", "other.a", doc! {"_id": 1})),
        one("i", "other.a", doc! {"_id": 1})
    );
    assert_eq!(r.skipped(), 0);
}
