//! Update tests; each cites the MongoDB manual page whose examples or rules it checks.

use bson::{Bson, Document, doc};

use super::Update;

fn apply(update: Document, mut doc: Document) -> Document {
    let u = Update::parse(&update).unwrap_or_else(|e| panic!("{update}: {e}"));
    u.apply(&mut doc, false).unwrap_or_else(|e| panic!("{update}: {e}"));
    doc
}

fn apply_err(update: Document, doc: Document) -> (i32, String) {
    let mut d = doc.clone();
    let e = match Update::parse(&update) {
        Ok(u) => u.apply(&mut d, false).expect_err("update should fail"),
        Err(e) => e,
    };
    assert_eq!(d, doc, "a failed update leaves the document unchanged");
    (e.code, e.message)
}

// https://www.mongodb.com/docs/manual/reference/operator/update/set/
#[test]
fn set_top_level_embedded_and_array_fields() {
    let d = doc! {"_id": 100, "quantity": 250, "instock": true, "details": {"model": "14QQ", "make": "Clothes Corp"}, "tags": ["apparel", "clothing"], "ratings": [{"by": "Customer007", "rating": 4}]};
    let out = apply(
        doc! {"$set": {"quantity": 500, "details": {"model": "2600", "make": "Fashionaires"}, "tags": ["coats", "outerwear", "clothing"]}},
        d.clone(),
    );
    assert_eq!(out.get("quantity"), Some(&Bson::Int32(500)));
    assert_eq!(
        out.get("tags"),
        Some(&Bson::Array(vec![
            "coats".into(),
            "outerwear".into(),
            "clothing".into()
        ]))
    );
    let out = apply(doc! {"$set": {"details.make": "Kustom Kidz"}}, d.clone());
    assert_eq!(
        out.get_document("details").unwrap(),
        &doc! {"model": "14QQ", "make": "Kustom Kidz"}
    );
    let out = apply(doc! {"$set": {"tags.1": "rain gear", "ratings.0.rating": 2}}, d);
    assert_eq!(
        out.get("tags"),
        Some(&Bson::Array(vec!["apparel".into(), "rain gear".into()]))
    );
    assert_eq!(
        out.get_array("ratings").unwrap()[0],
        Bson::Document(doc! {"by": "Customer007", "rating": 2})
    );
    // "If the field does not exist, $set will add a new field"; dotted paths create documents.
    assert_eq!(
        apply(doc! {"$set": {"a.b.c": 1}}, doc! {"_id": 1}),
        doc! {"_id": 1, "a": {"b": {"c": 1}}}
    );
    // Array index past the end pads with null.
    assert_eq!(
        apply(doc! {"$set": {"a.3": 1}}, doc! {"a": [0]}),
        doc! {"a": [0, Bson::Null, Bson::Null, 1]}
    );
    // Starting in MongoDB 5.0, new fields are added in lexicographic order.
    let out = apply(
        doc! {"$set": {"b": 1, "a": 2, "c.10": 1, "c.9": 2}},
        doc! {"_id": 1, "c": {}},
    );
    assert_eq!(out, doc! {"_id": 1, "c": {"9": 2, "10": 1}, "a": 2, "b": 1});
}

#[test]
fn set_into_scalar_is_path_not_viable() {
    let (code, msg) = apply_err(doc! {"$set": {"a.b": 1}}, doc! {"_id": 1, "a": 5});
    assert_eq!(code, 28);
    assert_eq!(msg, "Cannot create field 'b' in element {a: 5}");
    assert_eq!(apply_err(doc! {"$set": {"a.x": 1}}, doc! {"_id": 1, "a": [1]}).0, 28);
    // Padding an array is limited (MongoDB: "can't backfill more than 1500000 elements").
    assert_eq!(
        apply_err(doc! {"$set": {"a.99999999": 1}}, doc! {"_id": 1, "a": []}).0,
        2
    );
    assert_eq!(
        apply_err(doc! {"$set": {"a.99999999.b": 1}}, doc! {"_id": 1, "a": []}).0,
        2
    );
}

// https://www.mongodb.com/docs/manual/reference/operator/update/unset/
#[test]
fn unset() {
    let d = doc! {"_id": 1, "sku": "abc", "quantity": 5, "instock": true, "a": [1, 2, 3]};
    assert_eq!(
        apply(doc! {"$unset": {"quantity": "", "instock": ""}}, d.clone()),
        doc! {"_id": 1, "sku": "abc", "a": [1, 2, 3]}
    );
    // On an array element $unset sets null rather than removing the element.
    assert_eq!(
        apply(doc! {"$unset": {"a.1": ""}}, d.clone()).get("a"),
        Some(&Bson::Array(vec![1.into(), Bson::Null, 3.into()]))
    );
    assert_eq!(apply(doc! {"$unset": {"nope.x": 1}}, d.clone()), d);
}

// https://www.mongodb.com/docs/manual/reference/operator/update/inc/ and /mul/
#[test]
fn inc_and_mul() {
    let d = doc! {"_id": 1, "sku": "abc123", "quantity": 10, "metrics": {"orders": 2, "ratings": 3.5}};
    let out = apply(doc! {"$inc": {"quantity": -2, "metrics.orders": 1}}, d.clone());
    assert_eq!(
        out,
        doc! {"_id": 1, "sku": "abc123", "quantity": 8, "metrics": {"orders": 3, "ratings": 3.5}}
    );
    assert_eq!(apply(doc! {"$inc": {"n": 5_i64}}, doc! {}), doc! {"n": 5_i64});
    assert_eq!(
        apply(
            doc! {"$mul": {"price": 1.25, "qty": 2}},
            doc! {"price": 10.5, "qty": 25}
        ),
        doc! {"price": 13.125, "qty": 50}
    );
    // "If the field does not exist ... $mul creates the field and sets the value to zero of the same numeric type as the multiplier."
    assert_eq!(
        apply(doc! {"$mul": {"price": 100_i64}}, doc! {"_id": 2}),
        doc! {"_id": 2, "price": 0_i64}
    );
    // "Multiply Mixed Numeric Types": int32 * int64 -> int64
    assert_eq!(
        apply(doc! {"$mul": {"price": 5_i64}}, doc! {"price": 10}),
        doc! {"price": 50_i64}
    );
    let (code, msg) = apply_err(doc! {"$inc": {"sku": 1}}, d.clone());
    assert_eq!(code, 14);
    assert_eq!(
        msg,
        "Cannot apply $inc to a value of non-numeric type. {_id: 1} has the field 'sku' of non-numeric type string"
    );
    assert_eq!(apply_err(doc! {"$inc": {"quantity": "x"}}, d).0, 14);
}

// https://www.mongodb.com/docs/manual/reference/operator/update/min/ and /max/
#[test]
fn min_max() {
    let d = doc! {"_id": 1, "highScore": 800, "lowScore": 200};
    assert_eq!(
        apply(doc! {"$min": {"lowScore": 150}}, d.clone()).get("lowScore"),
        Some(&Bson::Int32(150))
    );
    assert_eq!(
        apply(doc! {"$min": {"lowScore": 250}}, d.clone()).get("lowScore"),
        Some(&Bson::Int32(200))
    );
    assert_eq!(
        apply(doc! {"$max": {"highScore": 950}}, d.clone()).get("highScore"),
        Some(&Bson::Int32(950))
    );
    assert_eq!(
        apply(doc! {"$max": {"highScore": 700}}, d).get("highScore"),
        Some(&Bson::Int32(800))
    );
    // Comparison uses the BSON order: a string is greater than any number.
    assert_eq!(apply(doc! {"$max": {"v": "x"}}, doc! {"v": 5}), doc! {"v": "x"});
}

// https://www.mongodb.com/docs/manual/reference/operator/update/rename/
#[test]
fn rename() {
    let d = doc! {"_id": 1, "alias": ["The American Cincinnatus"], "mobile": "555-555-5555", "nmae": {"first": "george", "last": "washington"}};
    let out = apply(doc! {"$rename": {"nmae": "name"}}, d.clone());
    assert_eq!(
        out.get_document("name").unwrap(),
        &doc! {"first": "george", "last": "washington"}
    );
    assert!(!out.contains_key("nmae"));
    let out = apply(doc! {"$rename": {"nmae.first": "fname"}}, d.clone());
    assert_eq!(out.get("fname"), Some(&Bson::from("george")));
    // "If the field to rename does not exist in a document, $rename does nothing."
    assert_eq!(apply(doc! {"$rename": {"wife": "spouse"}}, d.clone()), d);
    assert_eq!(apply_err(doc! {"$rename": {"a": "a"}}, d.clone()).0, 2);
    assert_eq!(apply_err(doc! {"$rename": {"alias.0": "x"}}, d).0, 2);
}

// https://www.mongodb.com/docs/manual/reference/operator/update/push/
#[test]
fn push_with_modifiers() {
    assert_eq!(
        apply(
            doc! {"$push": {"scores": 89}},
            doc! {"_id": 1, "scores": [44, 78, 38, 80]}
        )
        .get_array("scores")
        .unwrap()
        .len(),
        5
    );
    assert_eq!(
        apply(doc! {"$push": {"scores": 89}}, doc! {"_id": 1}),
        doc! {"_id": 1, "scores": [89]}
    );
    assert_eq!(
        apply(
            doc! {"$push": {"scores": {"$each": [90, 92, 85]}}},
            doc! {"scores": [44]}
        ),
        doc! {"scores": [44, 90, 92, 85]}
    );
    // "Use $push Operator with Multiple Modifiers"
    let d = doc! {"_id": 5, "quizzes": [{"wk": 1, "score": 10}, {"wk": 2, "score": 8}, {"wk": 3, "score": 5}, {"wk": 4, "score": 6}]};
    let out = apply(
        doc! {"$push": {"quizzes": {"$each": [{"wk": 5, "score": 8}, {"wk": 6, "score": 7}, {"wk": 7, "score": 6}], "$sort": {"score": -1}, "$slice": 3}}},
        d,
    );
    assert_eq!(
        out.get("quizzes"),
        Some(&Bson::Array(vec![
            Bson::Document(doc! {"wk": 1, "score": 10}),
            Bson::Document(doc! {"wk": 2, "score": 8}),
            Bson::Document(doc! {"wk": 5, "score": 8}),
        ]))
    );
    // $position: https://www.mongodb.com/docs/manual/reference/operator/update/position/
    assert_eq!(
        apply(
            doc! {"$push": {"s": {"$each": [50, 60, 70], "$position": 0}}},
            doc! {"s": [100]}
        ),
        doc! {"s": [50, 60, 70, 100]}
    );
    assert_eq!(
        apply(
            doc! {"$push": {"s": {"$each": [90, 80], "$position": -2}}},
            doc! {"s": [50, 60, 70, 100]}
        ),
        doc! {"s": [50, 60, 90, 80, 70, 100]}
    );
    // $slice negative keeps the last elements; $sort: 1 sorts values.
    assert_eq!(
        apply(
            doc! {"$push": {"s": {"$each": [80, 78, 86], "$slice": -5}}},
            doc! {"s": [40, 50, 60]}
        ),
        doc! {"s": [50, 60, 80, 78, 86]}
    );
    assert_eq!(
        apply(
            doc! {"$push": {"s": {"$each": [40, 60], "$sort": 1}}},
            doc! {"s": [89, 70, 100, 20]}
        ),
        doc! {"s": [20, 40, 60, 70, 89, 100]}
    );
    let (code, msg) = apply_err(doc! {"$push": {"a": 1}}, doc! {"_id": 1, "a": 1});
    assert_eq!(
        (code, msg.as_str()),
        (
            2,
            "The field 'a' must be an array but is of type int in document {_id: 1}"
        )
    );
    assert_eq!(
        apply_err(doc! {"$push": {"a": {"$each": [1], "$bogus": 1}}}, doc! {}).1,
        "Unrecognized clause in $push: $bogus"
    );
}

// https://www.mongodb.com/docs/manual/reference/operator/update/addToSet/ , /pop/, /pull/, /pullAll/
#[test]
fn array_set_operators() {
    let d = doc! {"_id": 1, "letters": ["a", "b"]};
    assert_eq!(
        apply(doc! {"$addToSet": {"letters": ["c", "d"]}}, d.clone())
            .get_array("letters")
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        apply(doc! {"$addToSet": {"letters": {"$each": ["b", "c", "c"]}}}, d.clone()),
        doc! {"_id": 1, "letters": ["a", "b", "c"]}
    );
    assert_eq!(apply_err(doc! {"$addToSet": {"_id": 1}}, d.clone()).0, 2);
    assert_eq!(
        apply(doc! {"$pop": {"letters": -1}}, d.clone()),
        doc! {"_id": 1, "letters": ["b"]}
    );
    assert_eq!(
        apply(doc! {"$pop": {"letters": 1}}, d.clone()),
        doc! {"_id": 1, "letters": ["a"]}
    );
    assert_eq!(apply_err(doc! {"$pop": {"letters": 2}}, d.clone()).0, 9);
    // $pull with a condition and with values
    let stores = doc! {"_id": 1, "fruits": ["apples", "pears", "oranges", "grapes", "bananas"], "vegetables": ["carrots", "celery", "squash", "carrots"]};
    let out = apply(
        doc! {"$pull": {"fruits": {"$in": ["apples", "oranges"]}, "vegetables": "carrots"}},
        stores,
    );
    assert_eq!(
        out,
        doc! {"_id": 1, "fruits": ["pears", "grapes", "bananas"], "vegetables": ["celery", "squash"]}
    );
    assert_eq!(
        apply(
            doc! {"$pull": {"votes": {"$gte": 6}}},
            doc! {"votes": [3, 5, 6, 7, 7, 8]}
        ),
        doc! {"votes": [3, 5]}
    );
    // "Remove Items from an Array of Documents": elements containing score 8 and item "B".
    let survey = doc! {"results": [{"item": "A", "score": 5}, {"item": "B", "score": 8, "comment": "x"}]};
    assert_eq!(
        apply(doc! {"$pull": {"results": {"score": 8, "item": "B"}}}, survey),
        doc! {"results": [{"item": "A", "score": 5}]}
    );
    assert_eq!(
        apply(
            doc! {"$pullAll": {"scores": [0, 5]}},
            doc! {"scores": [0, 2, 5, 5, 1, 0]}
        ),
        doc! {"scores": [2, 1]}
    );
    assert_eq!(apply_err(doc! {"$pull": {"_id": 1}}, doc! {"_id": 1}).0, 2);
}

// https://www.mongodb.com/docs/manual/reference/operator/update/currentDate/ and /setOnInsert/
#[test]
fn current_date_and_set_on_insert() {
    let out = apply(
        doc! {"$currentDate": {"lastModified": true, "cancellation.date": {"$type": "timestamp"}}},
        doc! {"_id": 1},
    );
    assert!(matches!(out.get("lastModified"), Some(Bson::DateTime(_))));
    assert!(matches!(
        out.get_document("cancellation").unwrap().get("date"),
        Some(Bson::Timestamp(_))
    ));
    let u = Update::parse(&doc! {"$set": {"item": "apple"}, "$setOnInsert": {"defaultQty": 100}}).unwrap();
    let mut existing = doc! {"_id": 1};
    u.apply(&mut existing, false).unwrap();
    assert_eq!(existing, doc! {"_id": 1, "item": "apple"});
    let mut inserted = doc! {"_id": 1};
    u.apply(&mut inserted, true).unwrap();
    assert_eq!(inserted, doc! {"_id": 1, "defaultQty": 100, "item": "apple"});
}

// https://www.mongodb.com/docs/manual/core/document/#the-_id-field : _id is immutable.
#[test]
fn id_is_immutable() {
    let (code, msg) = apply_err(doc! {"$set": {"_id": 2}}, doc! {"_id": 1});
    assert_eq!(
        (code, msg.as_str()),
        (
            66,
            "Performing an update on the path '_id' would modify the immutable field '_id'"
        )
    );
    assert_eq!(apply_err(doc! {"$set": {"_id.a": 2}}, doc! {"_id": {"a": 1}}).0, 66);
    assert_eq!(apply_err(doc! {"$unset": {"_id": 1}}, doc! {"_id": 1}).0, 66);
    // Setting the same value is allowed and is not a change.
    let mut d = doc! {"_id": 1, "a": 1};
    assert!(
        !Update::parse(&doc! {"$set": {"_id": 1, "a": 1}})
            .unwrap()
            .apply(&mut d, false)
            .unwrap()
    );
    // An upsert may set the _id of the document it creates.
    let mut seed = doc! {};
    assert!(
        Update::parse(&doc! {"$set": {"_id": 5}})
            .unwrap()
            .apply(&mut seed, true)
            .unwrap()
    );
    assert_eq!(seed, doc! {"_id": 5});
}

// https://www.mongodb.com/docs/manual/reference/method/db.collection.replaceOne/
#[test]
fn replacement_keeps_id() {
    let u = Update::parse(&doc! {"name": "x", "n": 1}).unwrap();
    assert!(u.is_replacement());
    let mut d = doc! {"a": 5, "_id": 3};
    assert!(u.apply(&mut d, false).unwrap());
    assert_eq!(d, doc! {"_id": 3, "name": "x", "n": 1});
    let mut d = doc! {"_id": 3};
    assert!(
        Update::parse(&doc! {"n": 1, "_id": 3})
            .unwrap()
            .apply(&mut d, false)
            .unwrap()
    );
    assert_eq!(d, doc! {"_id": 3, "n": 1});
    let (code, msg) = apply_err(doc! {"_id": 4, "n": 1}, doc! {"_id": 3});
    assert_eq!(code, 66);
    assert!(
        msg.contains("(immutable) field '_id' was found to have been altered"),
        "{msg}"
    );
    assert_eq!(Update::parse(&doc! {"a": 1, "$set": {"b": 1}}).unwrap_err().code, 52);
}

// Conflicting paths: MongoDB reports ConflictingUpdateOperators (40).
#[test]
fn parse_errors() {
    let e = Update::parse(&doc! {"$set": {"a.b": 1}, "$inc": {"a": 1}}).unwrap_err();
    assert_eq!((e.code, e.code_name), (40, "ConflictingUpdateOperators"));
    assert_eq!(e.message, "Updating the path 'a' would create a conflict at 'a'");
    assert_eq!(
        Update::parse(&doc! {"$set": {"a": 1}, "$unset": {"a": 1}})
            .unwrap_err()
            .code,
        40
    );
    assert_eq!(
        Update::parse(&doc! {"$rename": {"a": "b"}, "$set": {"b.c": 1}})
            .unwrap_err()
            .code,
        40
    );
    let e = Update::parse(&doc! {"$foo": {"a": 1}}).unwrap_err();
    assert_eq!(e.code, 9);
    assert!(e.message.starts_with("Unknown modifier: $foo"), "{}", e.message);
    assert_eq!(Update::parse(&doc! {"$set": 5}).unwrap_err().code, 9);
    assert!(Update::parse(&doc! {"$set": {}}).is_ok()); // empty operands are no-ops since 5.0
}

// Pre-5.0 oplog update entries: {$v: 1, $set: {...}, $unset: {...}}; 5.0+: {$v: 2, diff: {...}}.
#[test]
fn oplog_forms() {
    let mut d = doc! {"_id": 1, "a": 1, "b": 2};
    Update::parse(&doc! {"$v": 1, "$set": {"a": 5}, "$unset": {"b": true}})
        .unwrap()
        .apply(&mut d, false)
        .unwrap();
    assert_eq!(d, doc! {"_id": 1, "a": 5});
    Update::parse(&doc! {"$v": 2, "diff": {"u": {"a": 6}, "i": {"c": 1}}})
        .unwrap()
        .apply(&mut d, false)
        .unwrap();
    assert_eq!(d, doc! {"_id": 1, "a": 6, "c": 1});
}

// https://www.mongodb.com/docs/manual/reference/method/db.collection.update/#upsert-behavior :
// the inserted document starts from the equality clauses of the query, then the update applies.
#[test]
fn upsert_documents() {
    let filter = crate::Filter::parse(&doc! {"name": "Andy", "rating": {"$gt": 1}, "_id": 7}).unwrap();
    let u = Update::parse(&doc! {"$inc": {"score": 1}, "$setOnInsert": {"new": true}}).unwrap();
    assert_eq!(
        u.upsert_document(&filter).unwrap(),
        doc! {"_id": 7, "name": "Andy", "new": true, "score": 1}
    );
    let r = Update::parse(&doc! {"name": "Bob"}).unwrap();
    assert_eq!(r.upsert_document(&filter).unwrap(), doc! {"_id": 7, "name": "Bob"});
    let bad = Update::parse(&doc! {"$set": {"_id": 8}}).unwrap();
    assert_eq!(bad.upsert_document(&filter).unwrap_err().code, 66);
}

// https://www.mongodb.com/docs/manual/reference/operator/update/positional/
#[test]
fn positional_operator_uses_the_query_match() {
    let filter = crate::Filter::parse(&doc! {"_id": 1, "grades": 80}).unwrap();
    let u = Update::parse(&doc! {"$set": {"grades.$": 82}}).unwrap();
    let mut d = doc! {"_id": 1, "grades": [85, 80, 80]};
    assert!(u.apply_with_filter(&mut d, false, Some(&filter)).unwrap());
    assert_eq!(d, doc! {"_id": 1, "grades": [85, 82, 80]});
    // "Update Embedded Documents Using Multiple Field Matches" with $elemMatch.
    let filter =
        crate::Filter::parse(&doc! {"_id": 5, "grades": {"$elemMatch": {"grade": {"$lte": 90}, "mean": {"$gt": 80}}}})
            .unwrap();
    let u = Update::parse(&doc! {"$set": {"grades.$.std": 6}}).unwrap();
    let mut d = doc! {"_id": 5, "grades": [{"grade": 80, "mean": 75, "std": 8}, {"grade": 85, "mean": 90, "std": 5}, {"grade": 90, "mean": 85, "std": 3}]};
    u.apply_with_filter(&mut d, false, Some(&filter)).unwrap();
    assert_eq!(
        d.get_array("grades").unwrap()[1],
        Bson::Document(doc! {"grade": 85, "mean": 90, "std": 6})
    );
    let e = u.apply(&mut d, false).unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            2,
            "The positional operator did not find the match needed from the query."
        )
    );
    assert_eq!(Update::parse(&doc! {"$set": {"a.$.b.$": 1}}).unwrap_err().code, 2);
}

// https://www.mongodb.com/docs/manual/reference/operator/update/positional-all/ and
// https://www.mongodb.com/docs/manual/reference/operator/update/positional-filtered/
#[test]
fn all_positional_and_array_filters() {
    let mut d = doc! {"_id": 1, "grades": [85, 82, 80]};
    Update::parse(&doc! {"$inc": {"grades.$[]": 10}})
        .unwrap()
        .apply(&mut d, false)
        .unwrap();
    assert_eq!(d, doc! {"_id": 1, "grades": [95, 92, 90]});
    let u = Update::parse_with_array_filters(
        &doc! {"$set": {"grades.$[element]": 100}},
        &[doc! {"element": {"$gte": 100}}],
    )
    .unwrap();
    let mut d = doc! {"_id": 1, "grades": [95, 102, 90, 150]};
    u.apply(&mut d, false).unwrap();
    assert_eq!(d, doc! {"_id": 1, "grades": [95, 100, 90, 100]});
    let u = Update::parse_with_array_filters(
        &doc! {"$set": {"grades.$[elem].mean": 100}},
        &[doc! {"elem.grade": {"$gte": 85}}],
    )
    .unwrap();
    let mut d = doc! {"_id": 2, "grades": [{"grade": 90, "mean": 75}, {"grade": 87, "mean": 90}, {"grade": 85, "mean": 85}, {"grade": 70, "mean": 6}]};
    u.apply(&mut d, false).unwrap();
    let means: Vec<i32> = d
        .get_array("grades")
        .unwrap()
        .iter()
        .map(|g| g.as_document().unwrap().get_i32("mean").unwrap())
        .collect();
    assert_eq!(means, vec![100, 100, 100, 6]);
    assert_eq!(
        Update::parse_with_array_filters(&doc! {"$set": {"a.$[x]": 1}}, &[])
            .unwrap_err()
            .code,
        2
    );
    assert_eq!(
        Update::parse_with_array_filters(&doc! {"$set": {"a": 1}}, &[doc! {"x": 1}])
            .unwrap_err()
            .code,
        9
    );
    assert_eq!(apply_err(doc! {"$set": {"a.$[]": 1}}, doc! {"_id": 1, "a": 5}).0, 2);
}

// https://www.mongodb.com/docs/manual/reference/operator/update/bit/
#[test]
fn bitwise_updates() {
    // Bitwise AND: 13 (1101) and 10 (1010) -> 8 (1000); OR: 3 (0011) | 5 (0101) -> 7; XOR: 1 ^ 5 -> 4.
    assert_eq!(
        apply(doc! {"$bit": {"expdata": {"and": 10}}}, doc! {"_id": 1, "expdata": 13}),
        doc! {"_id": 1, "expdata": 8}
    );
    assert_eq!(
        apply(doc! {"$bit": {"expdata": {"or": 5_i64}}}, doc! {"_id": 2, "expdata": 3}),
        doc! {"_id": 2, "expdata": 7_i64}
    );
    assert_eq!(
        apply(doc! {"$bit": {"expdata": {"xor": 5}}}, doc! {"_id": 3, "expdata": 1}),
        doc! {"_id": 3, "expdata": 4}
    );
    assert_eq!(apply_err(doc! {"$bit": {"x": {"and": 1.5}}}, doc! {"_id": 1}).0, 2);
    assert_eq!(
        apply_err(doc! {"$bit": {"x": {"and": 1}}}, doc! {"_id": 1, "x": "s"}).0,
        2
    );
}
