//! Replays the CRUD operations of mongo-tools' `transactions.json` fixture (real oplog entries,
//! with pre-5.0 `$set` updates) through [`Update`] and [`Filter`], and compares the result with
//! the post-images recorded in the fixture.
//!
//! Only the committed cases are used: their post-image is exactly the effect of every operation
//! they contain. The aborted and incomplete cases test transaction bookkeeping (which operations
//! to apply at all), which belongs to the oplog replayer, not to the query language.

use std::path::PathBuf;

use bson::{Bson, Document};
use tidemark_query::{Filter, Update, identical_documents};

fn fixture() -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/mongo-tools/mongorestore/testdata/transactions.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("transactions.json is JSON")
}

fn to_doc(value: &serde_json::Value) -> Document {
    match Bson::try_from(value.clone()).expect("extended JSON") {
        Bson::Document(d) => d,
        other => panic!("expected a document, got {other}"),
    }
}

/// Applies one oplog CRUD entry to an in-memory collection.
fn apply(collection: &mut Vec<Document>, op: &Document) {
    let kind = op.get_str("op").expect("op");
    let o = op.get_document("o").expect("o");
    match kind {
        "i" => collection.push(o.clone()),
        "u" => {
            let target = Filter::parse(op.get_document("o2").expect("o2")).expect("o2 filter");
            let update = Update::parse(o).expect("oplog update parses");
            for doc in collection.iter_mut().filter(|d| target.matches(d)) {
                update.apply(doc, false).expect("oplog update applies");
            }
        }
        "d" => {
            let target = Filter::parse(o).expect("delete filter");
            collection.retain(|d| !target.matches(d));
        }
        "c" => {
            if let Ok(inner) = o.get_array("applyOps") {
                for entry in inner {
                    apply(collection, entry.as_document().expect("applyOps entry"));
                }
            }
        }
        other => panic!("unexpected op {other}"),
    }
}

#[test]
fn committed_cases_reach_their_post_images() {
    let cases = fixture();
    let cases = cases.as_object().expect("cases by name");
    let mut checked = 0;
    for (name, case) in cases {
        let post: Vec<Document> = case["postimage"]
            .as_array()
            .expect("postimage")
            .iter()
            .map(to_doc)
            .collect();
        if post.is_empty() {
            continue; // aborted or incomplete transaction
        }
        let mut collection = Vec::new();
        for op in case["ops"].as_array().expect("ops") {
            apply(&mut collection, &to_doc(op));
        }
        assert_eq!(collection.len(), post.len(), "{name}: {collection:?}");
        for (got, want) in collection.iter().zip(&post) {
            assert!(identical_documents(got, want), "{name}: got {got}, want {want}");
        }
        checked += 1;
    }
    assert_eq!(checked, 6, "the fixture has six committed cases");
}
