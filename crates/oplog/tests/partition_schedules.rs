//! Every schedule that respects the partitioning gives the state of sequential application.
//!
//! Random oplogs of inserts, updates and deletes on a few `_id`s (written as int32, int64 and
//! double, which MongoDB treats as one `_id`) in a few namespaces, with collection drops,
//! renames and multi-entry transactions among them, go through [`Partitioner`]. The lane work
//! between two barriers is then interleaved in a random order (each lane's own order kept), the
//! way independent workers may run it, and applied to a small in-memory model of the server;
//! the final state must equal applying the entries one by one in oplog order. Updates append to
//! a history so that any reordering of one document's entries would show.

use std::collections::BTreeMap;

use bson::{Bson, Document, doc};
use proptest::prelude::*;
use tidemark_oplog::{Partitioner, Work};

const NAMESPACES: [&str; 3] = ["db.a", "db.b", "other.c"];

#[derive(Debug, Clone)]
enum Op {
    Insert(usize, i64, u8, i64),
    Update(usize, i64, u8, i64),
    Delete(usize, i64, u8),
    Drop(usize),
    Rename(usize, usize),
    Transaction(Vec<(usize, i64, i64)>),
}

/// The same `_id` value in one of three numeric types.
fn id(value: i64, form: u8) -> Bson {
    match form % 3 {
        0 => Bson::Int32(i32::try_from(value).unwrap()),
        1 => Bson::Int64(value),
        _ => Bson::Double(f64::from(i32::try_from(value).unwrap())),
    }
}

fn cmd(entry: Document) -> Document {
    doc! {"applyOps": [entry], "bypassDocumentValidation": false}
}

fn steps(ops: &[Op]) -> Vec<Vec<Document>> {
    ops.iter()
        .map(|op| match op {
            Op::Insert(ns, i, f, v) => {
                vec![cmd(
                    doc! {"op": "i", "ns": NAMESPACES[*ns], "o": {"_id": id(*i, *f), "v": *v}},
                )]
            }
            Op::Update(ns, i, f, v) => vec![cmd(
                doc! {"op": "u", "ns": NAMESPACES[*ns], "o": {"$push": {"v": *v}}, "o2": {"_id": id(*i, *f)}},
            )],
            Op::Delete(ns, i, f) => vec![cmd(doc! {"op": "d", "ns": NAMESPACES[*ns], "o": {"_id": id(*i, *f)}})],
            Op::Drop(ns) => {
                let (db, coll) = NAMESPACES[*ns].split_once('.').unwrap();
                vec![cmd(doc! {"op": "c", "ns": format!("{db}.$cmd"), "o": {"drop": coll}})]
            }
            Op::Rename(from, to) => vec![cmd(doc! {"op": "c", "ns": "admin.$cmd",
            "o": {"renameCollection": NAMESPACES[*from], "to": NAMESPACES[*to], "dropTarget": true}})],
            Op::Transaction(writes) => writes
                .iter()
                .map(|(ns, i, v)| cmd(doc! {"op": "i", "ns": NAMESPACES[*ns], "o": {"_id": id(*i, 0), "v": *v}}))
                .collect(),
        })
        .collect()
}

type State = BTreeMap<String, BTreeMap<i64, Vec<i64>>>;

fn key(id: &Bson) -> i64 {
    match id {
        Bson::Int32(v) => i64::from(*v),
        Bson::Int64(v) => *v,
        Bson::Double(v) => format!("{v:.0}").parse().unwrap(),
        other => panic!("unexpected _id {other}"),
    }
}

/// Applies one `applyOps` command: inserts replace (oplog application upserts), updates append
/// to an existing document, deletes remove, `drop` and `renameCollection` act on collections.
fn apply(state: &mut State, command: &Document) {
    for entry in command.get_array("applyOps").unwrap() {
        let entry = entry.as_document().unwrap();
        let ns = entry.get_str("ns").unwrap();
        let o = entry.get_document("o").unwrap();
        match entry.get_str("op").unwrap() {
            "i" => {
                let docs = state.entry(ns.to_owned()).or_default();
                docs.insert(key(o.get("_id").unwrap()), vec![o.get_i64("v").unwrap()]);
            }
            "u" => {
                let k = key(entry.get_document("o2").unwrap().get("_id").unwrap());
                let v = o.get_document("$push").unwrap().get_i64("v").unwrap();
                if let Some(doc) = state.get_mut(ns).and_then(|docs| docs.get_mut(&k)) {
                    doc.push(v);
                }
            }
            "d" => {
                if let Some(docs) = state.get_mut(ns) {
                    docs.remove(&key(o.get("_id").unwrap()));
                }
            }
            "c" => {
                let db = ns.split_once('.').unwrap().0;
                if let Ok(coll) = o.get_str("drop") {
                    state.remove(&format!("{db}.{coll}"));
                } else {
                    let from = o.get_str("renameCollection").unwrap();
                    let to = o.get_str("to").unwrap();
                    if let Some(docs) = state.remove(from) {
                        state.insert(to.to_owned(), docs);
                    }
                }
            }
            other => panic!("unexpected op {other}"),
        }
    }
}

fn op() -> impl Strategy<Value = Op> {
    let ns = 0..NAMESPACES.len();
    let id = 0_i64..4;
    prop_oneof![
        6 => (ns.clone(), id.clone(), any::<u8>(), any::<i64>()).prop_map(|(n, i, f, v)| Op::Insert(n, i, f, v)),
        6 => (ns.clone(), id.clone(), any::<u8>(), any::<i64>()).prop_map(|(n, i, f, v)| Op::Update(n, i, f, v)),
        3 => (ns.clone(), id.clone(), any::<u8>()).prop_map(|(n, i, f)| Op::Delete(n, i, f)),
        1 => ns.clone().prop_map(Op::Drop),
        1 => (ns.clone(), ns.clone()).prop_filter("distinct", |(a, b)| a != b).prop_map(|(a, b)| Op::Rename(a, b)),
        1 => prop::collection::vec((ns, id, any::<i64>()), 1..5).prop_map(Op::Transaction),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn any_schedule_matches_sequential_application(
        ops in prop::collection::vec(op(), 0..80),
        lanes in 1_usize..6,
        choices in prop::collection::vec(any::<u16>(), 0..400),
        isolate in prop::collection::vec(any::<bool>(), 0..80),
    ) {
        let steps = steps(&ops);
        let mut sequential = State::new();
        for command in steps.iter().flatten() {
            apply(&mut sequential, command);
        }

        let mut partitioner = Partitioner::new(lanes, false);
        let mut work = Vec::new();
        for (i, step) in steps.iter().cloned().enumerate() {
            // Multi-command steps are tried both isolated (transactions) and spread (vectored
            // inserts): both must be correct.
            partitioner.push(step, isolate.get(i).copied().unwrap_or(true), &mut work);
        }
        partitioner.flush(&mut work);
        let scheduled: usize = work
            .iter()
            .map(|w| match w {
                Work::Lane { command, entries, .. } => {
                    assert_eq!(command.get_array("applyOps").unwrap().len(), *entries);
                    *entries
                }
                Work::Barrier { commands } => commands.iter().map(|c| c.get_array("applyOps").unwrap().len()).sum(),
            })
            .sum();
        prop_assert_eq!(scheduled, steps.iter().map(Vec::len).sum::<usize>());

        let mut parallel = State::new();
        let mut choices = choices.into_iter().cycle();
        let mut queues: Vec<Vec<Document>> = vec![Vec::new(); lanes];
        let mut drain = |queues: &mut Vec<Vec<Document>>, state: &mut State| {
            // Interleave the lanes at random, each lane in its own order.
            for q in queues.iter_mut() {
                q.reverse();
            }
            loop {
                let ready: Vec<usize> = (0..queues.len()).filter(|&l| !queues[l].is_empty()).collect();
                if ready.is_empty() {
                    break;
                }
                let pick = ready[usize::from(choices.next().unwrap_or(0)) % ready.len()];
                let command = queues[pick].pop().unwrap();
                apply(state, &command);
            }
        };
        for w in work {
            match w {
                Work::Lane { lane, command, .. } => queues[lane].push(command),
                Work::Barrier { commands } => {
                    drain(&mut queues, &mut parallel);
                    for command in &commands {
                        apply(&mut parallel, command);
                    }
                }
            }
        }
        drain(&mut queues, &mut parallel);
        prop_assert_eq!(parallel, sequential);
    }
}
