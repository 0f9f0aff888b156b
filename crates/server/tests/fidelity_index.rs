//! Secondary index scans must give exactly the results of a full scan. MongoDB's comparison operators only
//! match values of the operand's type bracket (https://www.mongodb.com/docs/manual/reference/bson-type-comparison-order/)
//! and match arrays when any element matches (https://www.mongodb.com/docs/manual/tutorial/query-arrays/), so
//! random documents mixing numbers of every type, strings, dates, booleans, nulls, missing fields and arrays
//! are queried through the official Rust driver on an indexed and an unindexed copy, with `find`, `count`,
//! `update` and `delete`, and the answers compared.

use std::time::Duration;

use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection, IndexModel};
use tidemark_server::ServerConfig;
use tidemark_server::testing::start_test_server;

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

fn value(r: &mut Rng) -> Option<Bson> {
    let n = r.below(20);
    Some(match r.below(11) {
        0 => Bson::Int32(i32::try_from(n).unwrap()),
        1 => Bson::Int64(n),
        2 => Bson::Double(n as f64 + 0.5),
        3 => Bson::String(format!("s{n}")),
        4 => Bson::DateTime(DateTime::from_millis(1_700_000_000_000 + n * 1000)),
        5 => Bson::Boolean(n % 2 == 0),
        6 => Bson::Null,
        7 => return None,
        8 => Bson::Array(vec![Bson::Int32(i32::try_from(n).unwrap()), Bson::Int64(r.below(20))]),
        9 => Bson::Array(vec![]),
        _ => Bson::Double(f64::from(i32::try_from(n).unwrap())),
    })
}

fn operand(r: &mut Rng) -> Bson {
    let n = r.below(22) - 1;
    match r.below(4) {
        0 => Bson::Int32(i32::try_from(n).unwrap()),
        1 => Bson::Double(n as f64 + 0.5),
        2 => Bson::DateTime(DateTime::from_millis(1_700_000_000_000 + n * 1000)),
        _ => Bson::Int64(n),
    }
}

fn query(r: &mut Rng) -> Document {
    let field = if r.below(4) == 0 { "d" } else { "a" };
    let op = ["$eq", "$gt", "$gte", "$lt", "$lte", "eq"][usize::try_from(r.below(6)).unwrap()];
    let mut q = if op == "eq" {
        doc! { field: operand(r) }
    } else if r.below(3) == 0 {
        // Two bounds on one field: elements of an array may satisfy each separately.
        doc! { field: { op: operand(r), "$lt": operand(r) } }
    } else {
        doc! { field: { op: operand(r) } }
    };
    if r.below(4) == 0 {
        q.insert("b", doc! { "$ne": r.below(3) });
    }
    q
}

async fn ids(c: &Collection<Document>, q: Document) -> Vec<Bson> {
    let mut cur = c.find(q).await.unwrap();
    let mut out = Vec::new();
    while cur.advance().await.unwrap() {
        out.push(cur.deserialize_current().unwrap().get("_id").cloned().unwrap());
    }
    out
}

#[tokio::test]
async fn index_scans_answer_like_full_scans_on_random_data() {
    let server = start_test_server(ServerConfig::ephemeral()).await;
    let mut opts = ClientOptions::parse(server.uri()).await.unwrap();
    opts.server_selection_timeout = Some(Duration::from_secs(5));
    let client = Client::with_options(opts).unwrap();
    let db = client.database("idx");
    let indexed = db.collection::<Document>("indexed");
    let plain = db.collection::<Document>("plain");
    for f in ["a", "d"] {
        indexed
            .create_index(IndexModel::builder().keys(doc! { f: 1 }).build())
            .await
            .unwrap();
    }
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    let mut docs = Vec::new();
    for i in 0..400 {
        let mut d = doc! { "_id": i, "b": r.below(3) };
        if let Some(v) = value(&mut r) {
            d.insert("a", v);
        }
        if let Some(v) = value(&mut r) {
            d.insert("d", v);
        }
        docs.push(d);
    }
    indexed.insert_many(docs.clone()).await.unwrap();
    plain.insert_many(docs).await.unwrap();

    for round in 0..150 {
        let q = query(&mut r);
        assert_eq!(ids(&indexed, q.clone()).await, ids(&plain, q.clone()).await, "find {q}");
        assert_eq!(
            indexed.count_documents(q.clone()).await.unwrap(),
            plain.count_documents(q.clone()).await.unwrap(),
            "count {q}"
        );
        if round % 5 == 0 {
            // Writes through the index must keep it in step with the documents.
            let v = value(&mut r).unwrap_or(Bson::Int32(3));
            let u = doc! { "$set": { "a": v } };
            let x = indexed.update_many(q.clone(), u.clone()).await.unwrap();
            let y = plain.update_many(q.clone(), u).await.unwrap();
            assert_eq!(
                (x.matched_count, x.modified_count),
                (y.matched_count, y.modified_count),
                "update {q}"
            );
        }
        if round % 17 == 0 {
            let q = query(&mut r);
            let x = indexed.delete_one(q.clone()).await.unwrap();
            let y = plain.delete_one(q.clone()).await.unwrap();
            assert_eq!(x.deleted_count, y.deleted_count, "delete {q}");
        }
    }
    let all_i: Vec<Document> = {
        let mut c = indexed.find(doc! {}).await.unwrap();
        let mut v = Vec::new();
        while c.advance().await.unwrap() {
            v.push(c.deserialize_current().unwrap());
        }
        v
    };
    let mut c = plain.find(doc! {}).await.unwrap();
    let mut all_p = Vec::new();
    while c.advance().await.unwrap() {
        all_p.push(c.deserialize_current().unwrap());
    }
    assert_eq!(all_i, all_p);

    // The indexed collection's queries did use its index: the postings answer a range lookup.
    let ns = tidemark_server::engine::Namespace::new("idx", "indexed").unwrap();
    let used = server.state.engine.read(|cat| {
        let c = cat.collection(&ns).unwrap();
        let k = tidemark_server::engine::key::Key(Bson::Int32(5));
        c.index_scan(
            "a",
            vec![(std::ops::Bound::Included(k.clone()), std::ops::Bound::Included(k))],
            false,
        )
        .is_some()
    });
    assert!(used);
}
