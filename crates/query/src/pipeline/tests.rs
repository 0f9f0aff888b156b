//! Pipeline tests; each cites the MongoDB manual page whose examples or rules it checks.

use bson::{Bson, Document, doc};

use super::Pipeline;

fn run(stages: Vec<Document>, input: Vec<Document>) -> Vec<Document> {
    Pipeline::parse(&stages)
        .unwrap_or_else(|e| panic!("{stages:?}: {e}"))
        .run(input.into_iter())
        .unwrap()
}

fn parse_err(stages: Vec<Document>) -> (i32, String) {
    let e = Pipeline::parse(&stages).expect_err("pipeline should be rejected");
    (e.code, e.message)
}

fn sales() -> Vec<Document> {
    // https://www.mongodb.com/docs/manual/reference/operator/aggregation/group/ (sample data, prices as doubles)
    vec![
        doc! {"_id": 1, "item": "abc", "price": 10.0, "quantity": 2},
        doc! {"_id": 2, "item": "jkl", "price": 20.0, "quantity": 1},
        doc! {"_id": 3, "item": "xyz", "price": 5.0, "quantity": 10},
        doc! {"_id": 4, "item": "xyz", "price": 5.0, "quantity": 20},
        doc! {"_id": 5, "item": "abc", "price": 10.0, "quantity": 10},
        doc! {"_id": 6, "item": "def", "price": 7.5, "quantity": 5},
        doc! {"_id": 7, "item": "def", "price": 7.5, "quantity": 10},
        doc! {"_id": 8, "item": "abc", "price": 10.0, "quantity": 5},
    ]
}

// The mongodb driver's count_documents pipeline.
#[test]
fn count_documents_shape() {
    let out = run(
        vec![
            doc! {"$match": {"item": "abc"}},
            doc! {"$skip": 1_i64},
            doc! {"$limit": 5_i64},
            doc! {"$group": {"_id": 1, "n": {"$sum": 1}}},
        ],
        sales(),
    );
    assert_eq!(out, vec![doc! {"_id": 1, "n": 2}]);
    // No input: $group emits no group at all (the driver then reports 0).
    assert!(
        run(
            vec![
                doc! {"$match": {"item": "nope"}},
                doc! {"$group": {"_id": 1, "n": {"$sum": 1}}}
            ],
            sales()
        )
        .is_empty()
    );
}

// https://www.mongodb.com/docs/manual/reference/operator/aggregation/group/#group-by-item-having
#[test]
fn group_by_item() {
    let out = run(
        vec![
            doc! {"$group": {"_id": "$item", "totalQty": {"$sum": "$quantity"}, "avgPrice": {"$avg": "$price"}, "count": {"$count": {}}, "first": {"$first": "$_id"}, "last": {"$last": "$_id"}, "ids": {"$push": "$_id"}, "maxQ": {"$max": "$quantity"}, "minQ": {"$min": "$quantity"}}},
            doc! {"$sort": {"_id": 1}},
        ],
        sales(),
    );
    assert_eq!(
        out[0],
        doc! {"_id": "abc", "totalQty": 17, "avgPrice": 10.0, "count": 3, "first": 1, "last": 8, "ids": [1, 5, 8], "maxQ": 10, "minQ": 2}
    );
    assert_eq!(
        out.iter().map(|d| d.get_str("_id").unwrap()).collect::<Vec<_>>(),
        vec!["abc", "def", "jkl", "xyz"]
    );
    // _id: null groups everything; $sum of a constant counts; $avg of nothing is null.
    let out = run(
        vec![
            doc! {"$group": {"_id": Bson::Null, "n": {"$sum": 1}, "q": {"$sum": "$quantity"}, "a": {"$avg": "$missing"}, "m": {"$max": "$missing"}}},
        ],
        sales(),
    );
    assert_eq!(
        out,
        vec![doc! {"_id": Bson::Null, "n": 8, "q": 63, "a": Bson::Null, "m": Bson::Null}]
    );
    // A document of paths as _id; numerically equal keys share a group.
    let out = run(
        vec![
            doc! {"$group": {"_id": {"p": "$price"}, "n": {"$sum": 1}}},
            doc! {"$sort": {"_id.p": -1}},
            doc! {"$limit": 1},
        ],
        sales(),
    );
    assert_eq!(out, vec![doc! {"_id": {"p": 20.0}, "n": 1}]);
    let out = run(
        vec![doc! {"$group": {"_id": "$v", "n": {"$sum": 1}}}],
        vec![doc! {"v": 1}, doc! {"v": 1.0}, doc! {"v": 1_i64}],
    );
    assert_eq!(out, vec![doc! {"_id": 1, "n": 3}]);
}

// https://www.mongodb.com/docs/manual/reference/operator/aggregation/unwind/
#[test]
fn unwind() {
    let input = vec![
        doc! {"_id": 1, "item": "ABC", "price": 80, "sizes": ["S", "M", "L"]},
        doc! {"_id": 2, "item": "EFG", "price": 120, "sizes": []},
        doc! {"_id": 3, "item": "IJK", "price": 160, "sizes": "M"},
        doc! {"_id": 4, "item": "LMN", "price": 10},
        doc! {"_id": 5, "item": "XYZ", "price": 5.75, "sizes": Bson::Null},
    ];
    let out = run(vec![doc! {"$unwind": "$sizes"}], input.clone());
    let sizes: Vec<_> = out
        .iter()
        .map(|d| (d.get_i32("_id").unwrap(), d.get_str("sizes").unwrap()))
        .collect();
    assert_eq!(sizes, vec![(1, "S"), (1, "M"), (1, "L"), (3, "M")]);
    let out = run(
        vec![doc! {"$unwind": {"path": "$sizes", "preserveNullAndEmptyArrays": true, "includeArrayIndex": "idx"}}],
        input,
    );
    assert_eq!(out.len(), 7);
    assert_eq!(
        out[1],
        doc! {"_id": 1, "item": "ABC", "price": 80, "sizes": "M", "idx": 1_i64}
    );
    assert_eq!(out[3], doc! {"_id": 2, "item": "EFG", "price": 120, "idx": Bson::Null});
    assert_eq!(
        out[6],
        doc! {"_id": 5, "item": "XYZ", "price": 5.75, "sizes": Bson::Null, "idx": Bson::Null}
    );
    assert_eq!(parse_err(vec![doc! {"$unwind": "sizes"}]).0, 28818);
}

// https://www.mongodb.com/docs/manual/reference/operator/aggregation/project/ , /addFields/, /unset/, /count/
#[test]
fn reshaping_stages() {
    let input = vec![
        doc! {"_id": 1, "title": "abc123", "isbn": "0001122223334", "author": {"last": "zzz", "first": "aaa"}, "copies": 5},
    ];
    let out = run(vec![doc! {"$project": {"title": 1, "author": 1}}], input.clone());
    assert_eq!(
        out,
        vec![doc! {"_id": 1, "title": "abc123", "author": {"last": "zzz", "first": "aaa"}}]
    );
    let out = run(
        vec![doc! {"$project": {"_id": 0, "author.first": 0, "isbn": 0}}],
        input.clone(),
    );
    assert_eq!(
        out,
        vec![doc! {"title": "abc123", "author": {"last": "zzz"}, "copies": 5}]
    );
    let out = run(
        vec![doc! {"$project": {"title": 1, "lastName": "$author.last", "n": {"$add": ["$copies", 1]}}}],
        input.clone(),
    );
    assert_eq!(out, vec![doc! {"_id": 1, "title": "abc123", "lastName": "zzz", "n": 6}]);
    let out = run(
        vec![doc! {"$addFields": {"total": "$copies", "author.middle": "m", "title": "$nope"}}],
        input.clone(),
    );
    assert_eq!(
        out,
        vec![
            doc! {"_id": 1, "isbn": "0001122223334", "author": {"last": "zzz", "first": "aaa", "middle": "m"}, "copies": 5, "total": 5}
        ]
    );
    // "Adding Fields to an Embedded Document": a nested spec merges into the existing document.
    let out = run(
        vec![
            doc! {"$set": {"author": {"nick": "z"}}},
            doc! {"$unset": ["isbn", "copies", "title"]},
        ],
        input.clone(),
    );
    assert_eq!(
        out,
        vec![doc! {"_id": 1, "author": {"last": "zzz", "first": "aaa", "nick": "z"}}]
    );
    let out = run(
        vec![doc! {"$match": {"copies": {"$gt": 1}}}, doc! {"$count": "passing"}],
        input.clone(),
    );
    assert_eq!(out, vec![doc! {"passing": 1}]);
    assert!(
        run(
            vec![doc! {"$match": {"copies": {"$gt": 10}}}, doc! {"$count": "passing"}],
            input.clone()
        )
        .is_empty()
    );
    let out = run(vec![doc! {"$replaceRoot": {"newRoot": "$author"}}], input);
    assert_eq!(out, vec![doc! {"last": "zzz", "first": "aaa"}]);
}

#[test]
fn sort_skip_limit() {
    let out = run(
        vec![
            doc! {"$sort": {"quantity": -1, "_id": 1}},
            doc! {"$skip": 1},
            doc! {"$limit": 2},
        ],
        sales(),
    );
    let ids: Vec<i32> = out.iter().map(|d| d.get_i32("_id").unwrap()).collect();
    assert_eq!(ids, vec![3, 5]);
}

// Parse errors use MongoDB's codes.
#[test]
fn stage_errors() {
    assert_eq!(
        parse_err(vec![doc! {"$foo": {}}]),
        (40324, "Unrecognized pipeline stage name: '$foo'".into())
    );
    assert_eq!(parse_err(vec![doc! {"$match": {}, "$limit": 1}]).0, 40323);
    assert_eq!(parse_err(vec![doc! {"$limit": 0}]).0, 15958);
    assert_eq!(parse_err(vec![doc! {"$skip": -1}]).0, 15956);
    assert_eq!(parse_err(vec![doc! {"$group": {"n": {"$sum": 1}}}]).0, 15955);
    assert_eq!(
        parse_err(vec![doc! {"$group": {"_id": 1, "n": {"$foo": 1}}}]),
        (15952, "unknown group operator '$foo'".into())
    );
    assert_eq!(parse_err(vec![doc! {"$group": {"_id": 1, "n": 1}}]).0, 40234);
    assert_eq!(parse_err(vec![doc! {"$sort": {}}]).0, 15976);
    assert_eq!(parse_err(vec![doc! {"$project": {}}]).0, 51272);
    assert_eq!(parse_err(vec![doc! {"$match": {"a": {"$foo": 1}}}]).0, 2);
}

// https://www.mongodb.com/docs/manual/reference/operator/aggregation/sortByCount/ and /facet/
#[test]
fn sort_by_count_and_facet() {
    let docs = vec![
        doc! {"_id": 1, "tags": ["painting", "satire", "Expressionism", "caricature"]},
        doc! {"_id": 2, "tags": ["woodcut", "Expressionism"]},
        doc! {"_id": 3, "tags": ["oil", "Surrealism", "painting"]},
        doc! {"_id": 4, "tags": ["woodblock", "ukiyo-e"]},
        doc! {"_id": 5, "tags": ["Surrealism", "painting", "oil"]},
    ];
    let out = run(
        vec![
            doc! {"$unwind": "$tags"},
            doc! {"$sortByCount": "$tags"},
            doc! {"$limit": 2},
        ],
        docs.clone(),
    );
    assert_eq!(
        out,
        vec![
            doc! {"_id": "painting", "count": 3},
            doc! {"_id": "Expressionism", "count": 2}
        ]
    );
    let out = run(
        vec![
            doc! {"$facet": {"n": [{"$count": "total"}], "firstTwo": [{"$sort": {"_id": -1}}, {"$limit": 2}, {"$project": {"_id": 1}}]}},
        ],
        docs,
    );
    assert_eq!(
        out,
        vec![doc! {"n": [{"total": 5}], "firstTwo": [{"_id": 5}, {"_id": 4}]}]
    );
    assert_eq!(parse_err(vec![doc! {"$sortByCount": "tags"}]).0, 40148);
    assert_eq!(parse_err(vec![doc! {"$facet": {"x": [{"$facet": {}}]}}]).0, 40600);
}
