//! Queries answered through the `_id` index and single-field secondary indexes must return exactly what a
//! collection scan returns, in the same order when sorted, with `skip` and `limit`. MongoDB orders index keys
//! and sorts by the BSON comparison order across types, and its comparison operators only match values of
//! the operand's type bracket (https://www.mongodb.com/docs/manual/reference/bson-type-comparison-order/);
//! a range on a multikey field matches an array when each bound is met by some element
//! (https://www.mongodb.com/docs/manual/tutorial/query-array-of-documents/). So random documents whose `_id`s
//! and fields mix numbers of every type, strings, ObjectIds, dates, booleans, documents, nulls and arrays are
//! queried through the official Rust driver, each query once as the server plans it and once forced to a
//! collection scan with `hint: {$natural: 1}`, and the answers compared. That the indexes are really used is
//! checked without timing through the `serverStatus` counters mongod reports,
//! `metrics.queryExecutor.scanned` (index keys examined) and `scannedObjects` (documents examined).

use std::time::Duration;

use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::options::{ClientOptions, Hint};
use mongodb::{Client, Collection, IndexModel};
use tidemark_server::ServerConfig;
use tidemark_server::testing::{TestServer, start_test_server};

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> i64 {
        i64::try_from(self.next() % n).unwrap()
    }
}

fn oid(n: i64) -> ObjectId {
    let mut b = [0u8; 12];
    b[4..].copy_from_slice(&n.to_be_bytes());
    ObjectId::from_bytes(b)
}

/// A unique `_id` of one of many types for document `i` (numbers of different types never collide).
fn id_value(i: i64) -> Bson {
    match i % 8 {
        0 => Bson::Int32(i32::try_from(i * 4).unwrap()),
        1 => Bson::Int64(i * 4 + 1),
        2 => Bson::Double(i as f64 * 4.0 + 2.5),
        3 => Bson::String(format!("k{:04}", (i * 7919) % 10_000)),
        4 => Bson::ObjectId(oid(i)),
        5 => Bson::DateTime(DateTime::from_millis(1_700_000_000_000 + i * 1000)),
        6 => Bson::Document(doc! { "k": i }),
        _ => Bson::Int32(-i32::try_from(i).unwrap()),
    }
}

/// An operand for `_id` predicates: often near existing values, of any plannable type.
fn id_operand(r: &mut Rng, n: i64) -> Bson {
    let i = r.below(u64::try_from(n).unwrap() + 4) - 2;
    match r.below(9) {
        0 => Bson::Int32(i32::try_from(i * 4).unwrap()),
        1 => Bson::Int64(i * 4 + r.below(3)),
        2 => Bson::Double(i as f64 * 4.0 + 0.5),
        3 => Bson::String(format!("k{:04}", r.below(10_000))),
        4 => Bson::ObjectId(oid(i)),
        5 => Bson::DateTime(DateTime::from_millis(1_700_000_000_000 + i * 1000)),
        6 => Bson::Boolean(r.below(2) == 0),
        7 => Bson::String("k".into()),
        _ => id_value(i.max(0)),
    }
}

/// A scalar of mixed type for the single-key field `b` (never an array), or `None` for a missing field.
fn scalar(r: &mut Rng) -> Option<Bson> {
    let n = r.below(30);
    Some(match r.below(9) {
        0 => Bson::Int32(i32::try_from(n).unwrap()),
        1 => Bson::Int64(n),
        2 => Bson::Double(n as f64 + 0.5),
        3 => Bson::String(format!("s{n:02}")),
        4 => Bson::DateTime(DateTime::from_millis(1_700_000_000_000 + n * 1000)),
        5 => Bson::Boolean(n % 2 == 0),
        6 => Bson::Null,
        7 => return None,
        _ => Bson::Double(f64::from(i32::try_from(n).unwrap())),
    })
}

fn b_operand(r: &mut Rng) -> Bson {
    let n = r.below(32) - 1;
    match r.below(5) {
        0 => Bson::Int32(i32::try_from(n).unwrap()),
        1 => Bson::Double(n as f64 + 0.5),
        2 => Bson::String(format!("s{n:02}")),
        3 => Bson::DateTime(DateTime::from_millis(1_700_000_000_000 + n * 1000)),
        _ => Bson::Int64(n),
    }
}

/// A value for the multikey field `a`.
fn multi(r: &mut Rng) -> Bson {
    let n = r.below(20);
    match r.below(4) {
        0 => Bson::Array(vec![Bson::Int32(i32::try_from(n).unwrap()), Bson::Int64(r.below(20))]),
        1 => Bson::Array(vec![]),
        2 => Bson::Double(n as f64 + 0.5),
        _ => Bson::Int64(n),
    }
}

fn query(r: &mut Rng, n: i64) -> Document {
    let lower = ["$gt", "$gte"][usize::try_from(r.below(2)).unwrap()];
    let upper = ["$lt", "$lte"][usize::try_from(r.below(2)).unwrap()];
    let mut q = match r.below(9) {
        0 => doc! { "_id": id_operand(r, n) },
        1 => doc! { "_id": { "$in": [id_operand(r, n), id_operand(r, n), id_value(r.below(10) * 8 + 4)] } },
        2 | 3 => doc! { "_id": { lower: id_operand(r, n), upper: id_operand(r, n) } },
        4 => {
            let op = ["$gt", "$gte", "$lt", "$lte", "$eq"][usize::try_from(r.below(5)).unwrap()];
            doc! { "_id": { op: id_operand(r, n) } }
        }
        5 => {
            // Both bounds of the same type, so the range is not empty most of the time.
            let lo = r.below(u64::try_from(n).unwrap()) * 4;
            doc! { "_id": { lower: lo, upper: lo + r.below(200) } }
        }
        6 => doc! { "b": { lower: b_operand(r), upper: b_operand(r) } },
        7 => doc! { "a": { lower: b_operand(r), upper: b_operand(r) } },
        _ => doc! {},
    };
    if r.below(4) == 0 {
        q.insert("c", doc! { "$ne": r.below(3) });
    }
    if r.below(6) == 0 {
        q.insert("b", doc! { "$gte": b_operand(r) });
    }
    q
}

struct Shape {
    sort: Option<Document>,
    skip: Option<u64>,
    limit: Option<i64>,
    hint: Option<Hint>,
}

async fn run_docs(c: &Collection<Document>, q: &Document, shape: &Shape, natural: bool) -> Vec<Document> {
    let mut find = c.find(q.clone());
    if let Some(s) = &shape.sort {
        find = find.sort(s.clone());
    }
    if let Some(s) = shape.skip {
        find = find.skip(s);
    }
    if let Some(l) = shape.limit {
        find = find.limit(l);
    }
    if natural {
        find = find.hint(Hint::Keys(doc! { "$natural": 1 }));
    } else if let Some(h) = &shape.hint {
        find = find.hint(h.clone());
    }
    let mut cur = find.await.unwrap_or_else(|e| panic!("find {q}: {e}"));
    let mut out = Vec::new();
    while cur.advance().await.unwrap() {
        out.push(cur.deserialize_current().unwrap());
    }
    out
}

/// The sort key of a value as a string equal for values MongoDB sorts as ties (numbers of any type with the
/// same value; a missing field sorts as `null`).
fn sort_key(v: Option<&Bson>) -> String {
    match v {
        None | Some(Bson::Null) => "null".into(),
        Some(Bson::Int32(i)) => format!("n{}", f64::from(*i)),
        Some(Bson::Int64(i)) => format!("n{}", *i as f64),
        Some(Bson::Double(d)) => format!("n{d}"),
        Some(other) => format!("{other:?}"),
    }
}

/// `_id`s and the sort keys of the documents a query returns.
async fn run_keys(c: &Collection<Document>, q: &Document, shape: &Shape, natural: bool) -> Vec<(Bson, String)> {
    let field = shape
        .sort
        .as_ref()
        .and_then(|s| s.keys().next().cloned())
        .unwrap_or_else(|| "_id".into());
    let docs = run_docs(c, q, shape, natural).await;
    docs.into_iter()
        .map(|d| (d.get("_id").cloned().unwrap(), sort_key(d.get(&field))))
        .collect()
}

async fn run(c: &Collection<Document>, q: &Document, shape: &Shape, natural: bool) -> Vec<Bson> {
    run_docs(c, q, shape, natural)
        .await
        .into_iter()
        .map(|d| d.get("_id").cloned().unwrap())
        .collect()
}

fn sorted(mut v: Vec<Bson>) -> Vec<Bson> {
    v.sort_by_key(|b| format!("{b:?}"));
    v
}

async fn client(server: &TestServer) -> Client {
    let mut opts = ClientOptions::parse(server.uri()).await.unwrap();
    opts.server_selection_timeout = Some(Duration::from_secs(5));
    Client::with_options(opts).unwrap()
}

/// Inserts `n` documents in a shuffled order (so natural order differs from `_id` order).
async fn load(c: &Collection<Document>, r: &mut Rng, n: i64) {
    let mut docs: Vec<Document> = (0..n)
        .map(|i| {
            let mut d = doc! { "_id": id_value(i), "c": r.below(3), "a": multi(r) };
            if let Some(b) = scalar(r) {
                d.insert("b", b);
            }
            d
        })
        .collect();
    // A boolean `_id` or two.
    docs.push(doc! { "_id": true, "c": 0, "b": 3 });
    docs.push(doc! { "_id": false, "c": 1 });
    for i in (1..docs.len()).rev() {
        let j = usize::try_from(r.below(u64::try_from(i).unwrap() + 1)).unwrap();
        docs.swap(i, j);
    }
    c.insert_many(docs).await.unwrap();
    for f in ["b", "a"] {
        c.create_index(IndexModel::builder().keys(doc! { f: 1 }).build())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn index_plans_answer_like_collection_scans() {
    let server = start_test_server(ServerConfig::ephemeral()).await;
    let client = client(&server).await;
    let c = client.database("idscan").collection::<Document>("c");
    let mut r = Rng(0x1234_5678_9ABC_DEF1);
    let n = 600;
    load(&c, &mut r, n).await;

    for round in 0..250 {
        let q = query(&mut r, n);
        let sort = match r.below(7) {
            0 => Some(doc! { "_id": 1 }),
            1 => Some(doc! { "_id": -1 }),
            2 => Some(doc! { "b": 1 }),
            3 => Some(doc! { "b": -1 }),
            4 => Some(doc! { "_id": 1.0 }),
            _ => None,
        };
        let hint = match (r.below(4), &sort) {
            (0, _) => Some(Hint::Keys(doc! { "_id": 1 })),
            (1, _) => Some(Hint::Name("_id_".into())),
            (2, Some(s)) if s.contains_key("b") => Some(Hint::Keys(doc! { "b": 1 })),
            _ => None,
        };
        let shape = Shape {
            skip: (sort.is_some() && r.below(2) == 0).then(|| u64::try_from(r.below(20)).unwrap()),
            limit: (sort.is_some() && r.below(2) == 0).then(|| r.below(15) + 1),
            sort,
            hint,
        };
        let plain = Shape {
            sort: None,
            skip: None,
            limit: None,
            hint: None,
        };
        let all = run(&c, &q, &plain, true).await;
        let planned = run(&c, &q, &shape, false).await;
        let reference = run(&c, &q, &shape, true).await;
        if shape.sort.is_some() {
            // The sequence of sort keys must be the same; documents with equal keys may come in any order.
            let planned_keys = run_keys(&c, &q, &shape, false).await;
            let reference_keys = run_keys(&c, &q, &shape, true).await;
            let keys = |v: &[(Bson, String)]| v.iter().map(|(_, k)| k.clone()).collect::<Vec<_>>();
            assert_eq!(
                keys(&planned_keys),
                keys(&reference_keys),
                "round {round}: find {q} sort {:?} skip {:?} limit {:?}",
                shape.sort,
                shape.skip,
                shape.limit
            );
            if shape.skip.is_none() && shape.limit.is_none() {
                assert_eq!(
                    sorted(planned.clone()),
                    sorted(reference.clone()),
                    "round {round}: find {q}"
                );
            }
            for id in &planned {
                assert!(
                    all.contains(id),
                    "round {round}: find {q} returned {id}, which does not match"
                );
            }
        } else {
            assert_eq!(
                sorted(planned.clone()),
                sorted(reference.clone()),
                "round {round}: find {q}"
            );
            let by_id = q.keys().all(|k| k != "a" && k != "b") && q.contains_key("_id");
            let id_hint = matches!(&shape.hint, Some(Hint::Keys(k)) if k.contains_key("_id"))
                || matches!(&shape.hint, Some(Hint::Name(_)));
            if by_id || id_hint {
                // An `_id` index scan returns documents in `_id` order.
                let by_id_sort = Shape {
                    sort: Some(doc! { "_id": 1 }),
                    skip: None,
                    limit: None,
                    hint: None,
                };
                let in_id_order = run(&c, &q, &by_id_sort, true).await;
                assert_eq!(planned, in_id_order, "round {round}: find {q} via the _id index");
            }
        }
        let counted = c.count_documents(q.clone()).await.unwrap();
        assert_eq!(usize::try_from(counted).unwrap(), all.len(), "round {round}: count {q}");
        if round % 10 == 0 {
            // Writes selected through an index must touch exactly the documents a scan selects.
            let expected = all;
            let res = c.update_many(q.clone(), doc! { "$inc": { "n": 1 } }).await.unwrap();
            assert_eq!(
                usize::try_from(res.matched_count).unwrap(),
                expected.len(),
                "round {round}: update {q}"
            );
            let touched = run(&c, &doc! { "n": { "$exists": true } }, &plain, true).await;
            for id in &expected {
                assert!(touched.contains(id), "round {round}: update {q} missed {id}");
            }
            c.update_many(doc! {}, doc! { "$unset": { "n": 1 } }).await.unwrap();
        }
    }
    server.shutdown().await;
}

/// `(scanned, scannedObjects)` from `serverStatus` `metrics.queryExecutor`.
async fn examined(client: &Client) -> (i64, i64) {
    let status = client
        .database("admin")
        .run_command(doc! { "serverStatus": 1 })
        .await
        .unwrap();
    let qe = status
        .get_document("metrics")
        .and_then(|m| m.get_document("queryExecutor"))
        .unwrap_or_else(|e| panic!("serverStatus lacks metrics.queryExecutor: {e}"));
    (qe.get_i64("scanned").unwrap(), qe.get_i64("scannedObjects").unwrap())
}

/// Runs `op` and returns `(index keys, documents)` it examined.
macro_rules! cost {
    ($client:expr, $op:expr) => {{
        let before = examined($client).await;
        let out = $op;
        let after = examined($client).await;
        ((after.0 - before.0, after.1 - before.1), out)
    }};
}

#[tokio::test]
async fn index_plans_examine_only_what_they_return() {
    let server = start_test_server(ServerConfig::ephemeral()).await;
    let client = client(&server).await;
    let c = client.database("idscan").collection::<Document>("costs");
    let mut r = Rng(0x0BAD_5EED_0000_0001);
    let n: i64 = 2000;
    let mut docs: Vec<Document> = (0..n)
        .map(|i| doc! { "_id": i, "b": (i * 7) % n, "c": i % 3 })
        .collect();
    for i in (1..docs.len()).rev() {
        let j = usize::try_from(r.below(u64::try_from(i).unwrap() + 1)).unwrap();
        docs.swap(i, j);
    }
    c.insert_many(docs).await.unwrap();
    c.create_index(IndexModel::builder().keys(doc! { "b": 1 }).build())
        .await
        .unwrap();
    let all = Shape {
        sort: None,
        skip: None,
        limit: None,
        hint: None,
    };

    // A full scan examines every document (the counters count).
    let q = doc! { "_id": { "$gte": 100, "$lt": 110 } };
    let (cost, ids) = cost!(&client, run(&c, &q, &all, true).await);
    assert_eq!(ids.len(), 10);
    assert_eq!(cost, (0, n), "collection scan");
    // The same range through the `_id` index: ten keys, ten documents, in `_id` order.
    let (cost, ids) = cost!(&client, run(&c, &q, &all, false).await);
    assert_eq!(ids, (100..110).map(Bson::Int64).collect::<Vec<_>>());
    assert_eq!(cost, (10, 10), "_id range");
    let (cost, ids) = cost!(
        &client,
        run(
            &c,
            &q,
            &Shape {
                hint: Some(Hint::Name("_id_".into())),
                ..all_shape()
            },
            false
        )
        .await
    );
    assert_eq!((cost, ids.len()), ((10, 10), 10), "_id range hinted by name");

    // The query `tidemark dump` uses to find split points: walk the `_id` index and stop.
    let skip_shape = Shape {
        sort: Some(doc! { "_id": 1 }),
        skip: Some(500),
        limit: Some(1),
        hint: None,
    };
    let (cost, ids) = cost!(&client, run(&c, &doc! {}, &skip_shape, false).await);
    assert_eq!(ids, vec![Bson::Int64(500)]);
    // Without a filter, skipped index entries are not fetched: 501 keys, 1 document.
    assert_eq!(cost, (501, 1), "sort _id, skip 500, limit 1");
    let desc = Shape {
        sort: Some(doc! { "_id": -1 }),
        limit: Some(3),
        ..all_shape()
    };
    let (cost, ids) = cost!(&client, run(&c, &doc! {}, &desc, false).await);
    assert_eq!(ids, vec![Bson::Int64(1999), Bson::Int64(1998), Bson::Int64(1997)]);
    assert_eq!(cost, (3, 3), "sort _id descending, limit 3");

    // Equality and $in on `_id`.
    let (cost, ids) = cost!(
        &client,
        run(&c, &doc! { "_id": { "$in": [5, 1, 9, 5000] } }, &all, false).await
    );
    assert_eq!(
        sorted(ids),
        sorted(vec![Bson::Int64(1), Bson::Int64(5), Bson::Int64(9)])
    );
    assert_eq!(cost, (3, 3), "_id $in");

    // Both bounds of a range on a single-key secondary index are used.
    let q = doc! { "b": { "$gte": 300, "$lt": 330 } };
    let (cost, ids) = cost!(&client, run(&c, &q, &all, false).await);
    assert_eq!(ids.len(), 30);
    assert_eq!(cost, (30, 30), "secondary range");
    // A sort on the indexed field with a limit walks the index.
    let by_b = Shape {
        sort: Some(doc! { "b": -1 }),
        limit: Some(4),
        ..all_shape()
    };
    let (cost, ids) = cost!(&client, run(&c, &doc! { "c": 0 }, &by_b, false).await);
    assert_eq!(ids.len(), 4);
    assert!(cost.1 <= 12, "sort on b with limit examined {cost:?}");

    // count, update and delete take the same paths.
    let (cost, counted) = cost!(
        &client,
        c.count_documents(doc! { "_id": { "$gt": 10, "$lte": 20 } })
            .await
            .unwrap()
    );
    assert_eq!((cost, counted), ((10, 10), 10), "count");
    let (cost, res) = cost!(
        &client,
        c.update_one(doc! { "_id": 7 }, doc! { "$set": { "u": 1 } })
            .await
            .unwrap()
    );
    assert_eq!((cost, res.modified_count), ((1, 1), 1), "update by _id");
    let (cost, res) = cost!(&client, c.delete_one(doc! { "_id": 8 }).await.unwrap());
    assert_eq!((cost, res.deleted_count), ((1, 1), 1), "delete by _id");
    let (cost, res) = cost!(&client, c.delete_many(doc! { "_id": { "$gte": 1990 } }).await.unwrap());
    assert_eq!((cost, res.deleted_count), ((10, 10), 10), "delete by _id range");
    server.shutdown().await;
}

fn all_shape() -> Shape {
    Shape {
        sort: None,
        skip: None,
        limit: None,
        hint: None,
    }
}

/// An `_id`-range `find` (what a dump's parallel readers send) streams: each `getMore` continues the index
/// walk from the last `_id` returned, so, as with mongod's index scans (no snapshot across `getMore`s under
/// read concern "local"), a document inserted ahead of the cursor's position is returned and one inserted
/// behind it is not; the range's documents come once each, in `_id` order, whatever the natural order.
#[tokio::test]
async fn id_range_cursors_continue_from_their_index_position() {
    let server = start_test_server(ServerConfig::default()).await;
    let client = client(&server).await;
    let c = client.database("t").collection::<Document>("c");
    let mut ids: Vec<i32> = (0..1000).map(|i| i * 2).collect();
    ids.reverse();
    c.insert_many(ids.iter().map(|i| doc! {"_id": *i, "pad": "x".repeat(100)}))
        .await
        .unwrap();
    let mut cursor = c
        .find(doc! {"_id": {"$gte": 100, "$lt": 1500}})
        .hint(Hint::Keys(doc! {"_id": 1}))
        .batch_size(50)
        .await
        .unwrap();
    let mut seen = Vec::new();
    while cursor.advance().await.unwrap() {
        let id = cursor.current().get_i32("_id").unwrap();
        seen.push(id);
        if id == 500 {
            // Behind the position (and before the range), then ahead of it, then past the range.
            c.insert_many([
                doc! {"_id": 301},
                doc! {"_id": 99},
                doc! {"_id": 1001},
                doc! {"_id": 1501},
            ])
            .await
            .unwrap();
        }
    }
    let mut expected: Vec<i32> = (50..750).map(|i| i * 2).collect();
    expected.push(1001);
    expected.sort_unstable();
    assert_eq!(seen, expected);
    server.shutdown().await;
}
