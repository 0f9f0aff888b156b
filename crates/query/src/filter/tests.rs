//! Filter tests; each cites the MongoDB manual page whose examples or rules it checks.

use bson::{Bson, Document, doc};

use super::Filter;

fn m(filter: Document, doc: Document) -> bool {
    Filter::parse(&filter)
        .unwrap_or_else(|e| panic!("{filter}: {e}"))
        .matches(&doc)
}

fn err(filter: Document) -> (i32, String) {
    let e = Filter::parse(&filter).expect_err("filter should be rejected");
    (e.code, e.message)
}

// https://www.mongodb.com/docs/manual/tutorial/query-arrays/
#[test]
fn array_equality_and_element_matching() {
    let doc = doc! {"item": "journal", "tags": ["blank", "red"], "dim_cm": [14, 21]};
    assert!(m(doc! {"tags": ["blank", "red"]}, doc.clone()));
    assert!(!m(doc! {"tags": ["red", "blank"]}, doc.clone())); // exact order required
    assert!(m(doc! {"tags": {"$all": ["red", "blank"]}}, doc.clone()));
    assert!(m(doc! {"tags": "red"}, doc.clone()));
    assert!(m(doc! {"dim_cm": {"$gt": 20}}, doc.clone()));
    // "one element can satisfy the greater than 15 condition and another element can satisfy the
    // less than 20 condition"
    assert!(m(doc! {"dim_cm": {"$gt": 15, "$lt": 20}}, doc! {"dim_cm": [14, 21]}));
    assert!(!m(
        doc! {"dim_cm": {"$elemMatch": {"$gt": 15, "$lt": 20}}},
        doc! {"dim_cm": [14, 21]}
    ));
    assert!(m(
        doc! {"dim_cm": {"$elemMatch": {"$gt": 15, "$lt": 20}}},
        doc! {"dim_cm": [14, 17]}
    ));
    assert!(m(doc! {"dim_cm.1": {"$gt": 20}}, doc.clone()));
    assert!(!m(doc! {"dim_cm.0": {"$gt": 20}}, doc.clone()));
    assert!(m(doc! {"tags": {"$size": 2}}, doc.clone()));
    assert!(!m(doc! {"tags": {"$size": 1}}, doc));
    // A nested array value matches an element equal to it.
    assert!(m(doc! {"a": [1, 2]}, doc! {"a": [[1, 2], 3]}));
}

// https://www.mongodb.com/docs/manual/tutorial/query-array-of-documents/
#[test]
fn arrays_of_documents() {
    let doc = doc! {"item": "journal", "instock": [{"warehouse": "A", "qty": 5}, {"warehouse": "C", "qty": 15}]};
    assert!(m(doc! {"instock": {"warehouse": "A", "qty": 5}}, doc.clone()));
    assert!(!m(doc! {"instock": {"qty": 5, "warehouse": "A"}}, doc.clone())); // field order matters
    assert!(m(doc! {"instock.qty": {"$lte": 20}}, doc.clone()));
    assert!(m(doc! {"instock.0.qty": {"$lte": 5}}, doc.clone()));
    assert!(!m(doc! {"instock.0.qty": {"$gt": 5}}, doc.clone()));
    assert!(m(
        doc! {"instock": {"$elemMatch": {"qty": 5, "warehouse": "A"}}},
        doc.clone()
    ));
    assert!(!m(
        doc! {"instock": {"$elemMatch": {"qty": {"$gt": 10, "$lte": 20}, "warehouse": "A"}}},
        doc.clone()
    ));
    // Without $elemMatch the conditions may be met by different elements.
    assert!(m(
        doc! {"instock.qty": {"$gt": 10, "$lte": 20}},
        doc! {"instock": [{"qty": 5}, {"qty": 25}, {"qty": 15}]}
    ));
    assert!(m(doc! {"instock.qty": 5, "instock.warehouse": "C"}, doc));
}

// https://www.mongodb.com/docs/manual/tutorial/query-for-null-fields/
#[test]
fn null_matches_missing() {
    let with_null = doc! {"_id": 1, "item": Bson::Null};
    let missing = doc! {"_id": 2};
    assert!(m(doc! {"item": Bson::Null}, with_null.clone()));
    assert!(m(doc! {"item": Bson::Null}, missing.clone()));
    assert!(m(doc! {"item": {"$type": 10}}, with_null.clone()));
    assert!(!m(doc! {"item": {"$type": 10}}, missing.clone()));
    assert!(!m(doc! {"item": {"$exists": false}}, with_null.clone()));
    assert!(m(doc! {"item": {"$exists": false}}, missing.clone()));
    assert!(m(doc! {"item": {"$ne": Bson::Null}}, doc! {"item": 1}));
    assert!(!m(doc! {"item": {"$ne": Bson::Null}}, missing.clone()));
    assert!(m(doc! {"item": {"$in": [Bson::Null, 3]}}, missing));
    assert!(m(doc! {"a.b": Bson::Null}, doc! {"a": [{"b": 1}, {"c": 2}]}));
    // An empty array has no element 0, yet `{"ids.0": null}` does not match it.
    assert!(!m(doc! {"ids.0": Bson::Null}, doc! {"ids": []}));
    assert!(m(doc! {"ids.0": Bson::Null}, doc! {"ids": [Bson::Null]}));
    assert!(m(doc! {"ids.0": Bson::Null}, doc! {}));
}

// https://www.mongodb.com/docs/manual/reference/operator/query/ne/ and /nin/
#[test]
fn negations_apply_to_the_whole_field() {
    assert!(!m(doc! {"qty": {"$ne": 20}}, doc! {"qty": [20, 5]}));
    assert!(m(doc! {"qty": {"$ne": 20}}, doc! {"qty": [10, 5]}));
    assert!(m(doc! {"qty": {"$ne": 20}}, doc! {"other": 1}));
    assert!(m(doc! {"quantity": {"$nin": [5, 15]}}, doc! {"quantity": 10}));
    assert!(!m(
        doc! {"tags": {"$nin": ["school"]}},
        doc! {"tags": ["school", "home"]}
    ));
    assert!(m(doc! {"tags": {"$nin": ["school"]}}, doc! {}));
    // $not: "documents that do not contain the price field" also match.
    assert!(m(doc! {"price": {"$not": {"$gt": 1.99}}}, doc! {"item": "x"}));
    assert!(m(doc! {"price": {"$not": {"$gt": 1.99}}}, doc! {"price": 1.99}));
    assert!(!m(doc! {"price": {"$not": {"$gt": 1.99}}}, doc! {"price": 2}));
    assert!(m(
        doc! {"item": {"$not": Bson::RegularExpression(bson::Regex { pattern: "^p.*".into(), options: String::new() })}},
        doc! {"item": "q"}
    ));
}

// https://www.mongodb.com/docs/manual/reference/method/db.collection.find/#query-for-ranges and
// https://www.mongodb.com/docs/manual/reference/bson-type-comparison-order/ : comparison operators
// only match documents where the field's BSON type matches the query operand's type.
#[test]
fn comparisons_stay_within_type_brackets() {
    assert!(m(doc! {"a": {"$gt": 5}}, doc! {"a": 6.5}));
    assert!(m(doc! {"a": {"$gt": 5}}, doc! {"a": 6_i64}));
    assert!(!m(doc! {"a": {"$gt": 5}}, doc! {"a": "zzz"}));
    assert!(!m(doc! {"a": {"$lt": "a"}}, doc! {"a": 1}));
    assert!(m(doc! {"a": {"$gte": "b", "$lt": "c"}}, doc! {"a": "bat"}));
    assert!(m(doc! {"a": 1}, doc! {"a": 1.0}));
    assert!(m(doc! {"a": {"$gt": Bson::MinKey}}, doc! {"a": "x"}));
    assert!(m(doc! {"a": {"$lte": Bson::Null}}, doc! {}));
    assert!(!m(doc! {"a": {"$lt": Bson::Null}}, doc! {}));
}

// https://www.mongodb.com/docs/manual/reference/operator/query/in/ and /regex/
#[test]
fn regexes_and_in() {
    let re = |p: &str, o: &str| {
        Bson::RegularExpression(bson::Regex {
            pattern: p.into(),
            options: o.into(),
        })
    };
    let doc = doc! {"item": "Pens", "tags": ["school", "office"]};
    assert!(m(doc! {"tags": {"$in": [re("^be", ""), re("^sch", "")]}}, doc.clone()));
    assert!(m(doc! {"item": re("^pen", "i")}, doc.clone()));
    assert!(!m(doc! {"item": re("^pen", "")}, doc.clone()));
    assert!(m(doc! {"item": {"$regex": "^PEN", "$options": "i"}}, doc.clone()));
    assert!(m(doc! {"item": {"$regex": re("ns$", "")}}, doc.clone()));
    // "m" option: ^ and $ match at line breaks.
    assert!(m(
        doc! {"d": {"$regex": "^S", "$options": "m"}},
        doc! {"d": "First line\nSecond line"}
    ));
    assert!(!m(doc! {"d": {"$regex": "^S"}}, doc! {"d": "First line\nSecond line"}));
    // "x" option ignores whitespace in the pattern.
    assert!(m(
        doc! {"d": {"$regex": "a b # comment\n c", "$options": "x"}},
        doc! {"d": "abc"}
    ));
    // $eq with a regex operand compares regex values, not strings.
    assert!(!m(doc! {"item": {"$eq": re("Pens", "")}}, doc.clone()));
    assert!(m(doc! {"r": {"$eq": re("a", "i")}}, doc! {"r": re("a", "i")}));
    assert_eq!(err(doc! {"a": {"$regex": "x", "$options": "q"}}).0, 51108);
    assert_eq!(err(doc! {"a": {"$options": "i"}}).1, "$options needs a $regex");
}

// https://www.mongodb.com/docs/manual/reference/operator/query/type/
#[test]
fn type_operator() {
    assert!(m(doc! {"zip": {"$type": "string"}}, doc! {"zip": "10025"}));
    assert!(m(doc! {"zip": {"$type": 2}}, doc! {"zip": "10025"}));
    assert!(m(doc! {"zip": {"$type": 2.0}}, doc! {"zip": "10025"}));
    assert!(m(doc! {"zip": {"$type": "number"}}, doc! {"zip": 10025_i64}));
    assert!(m(doc! {"zip": {"$type": ["double", "int"]}}, doc! {"zip": 1}));
    assert!(!m(doc! {"zip": {"$type": "long"}}, doc! {"zip": 1}));
    // Arrays: $type matches when an element has the type, and "array" matches the array itself.
    assert!(m(doc! {"zip": {"$type": "string"}}, doc! {"zip": [1, "x"]}));
    assert!(m(doc! {"zip": {"$type": "array"}}, doc! {"zip": []}));
    assert!(m(doc! {"a": {"$type": "minKey"}}, doc! {"a": Bson::MinKey}));
    assert_eq!(
        err(doc! {"a": {"$type": "foo"}}),
        (2, "Unknown type name alias: foo".into())
    );
    assert_eq!(
        err(doc! {"a": {"$type": 100}}),
        (2, "Invalid numerical type code: 100".into())
    );
}

// https://www.mongodb.com/docs/manual/reference/operator/query/exists/ and /mod/ and /all/
#[test]
fn exists_mod_all() {
    assert!(m(doc! {"qty": {"$exists": true, "$nin": [5, 15]}}, doc! {"qty": 10}));
    assert!(!m(doc! {"qty": {"$exists": true, "$nin": [5, 15]}}, doc! {}));
    assert!(m(
        doc! {"a.b": {"$exists": true}},
        doc! {"a": [{"c": 1}, {"b": Bson::Null}]}
    ));
    assert!(m(doc! {"qty": {"$mod": [4, 0]}}, doc! {"qty": 12}));
    assert!(!m(doc! {"qty": {"$mod": [4, 0]}}, doc! {"qty": 21}));
    // "$mod ... truncates floating point values toward zero": 5.9 % 4 -> 1
    assert!(m(doc! {"qty": {"$mod": [4.0, 1]}}, doc! {"qty": 5.9}));
    assert!(m(doc! {"qty": {"$mod": [4, -1]}}, doc! {"qty": -5}));
    assert_eq!(err(doc! {"qty": {"$mod": [4]}}).1, "malformed mod, not enough elements");
    assert_eq!(
        err(doc! {"qty": {"$mod": [4, 1, 2]}}).1,
        "malformed mod, too many elements"
    );
    assert_eq!(err(doc! {"qty": {"$mod": [0, 1]}}).1, "divisor cannot be 0");
    assert!(m(
        doc! {"tags": {"$all": ["appliance", "school"]}},
        doc! {"tags": ["appliance", "school", "book"]}
    ));
    assert!(!m(
        doc! {"tags": {"$all": ["appliance", "pen"]}},
        doc! {"tags": ["appliance", "school"]}
    ));
    assert!(!m(doc! {"tags": {"$all": []}}, doc! {"tags": []}));
    assert!(m(
        doc! {"qty": {"$all": [{"$elemMatch": {"size": "M", "num": {"$gt": 50}}}, {"$elemMatch": {"num": 100, "color": "green"}}]}},
        doc! {"qty": [{"size": "M", "num": 100, "color": "green"}]}
    ));
}

// https://www.mongodb.com/docs/manual/reference/operator/query/and/ (and /or/, /nor/)
#[test]
fn logical_operators() {
    let f = doc! {"$or": [{"quantity": {"$lt": 20}}, {"price": 10}]};
    assert!(m(f.clone(), doc! {"quantity": 30, "price": 10}));
    assert!(!m(f, doc! {"quantity": 30, "price": 11}));
    assert!(m(doc! {"$and": [{"a": 1}, {"b": 2}]}, doc! {"a": 1, "b": 2}));
    // $nor: "contain the price field whose value is not equal to 1.99 ... or do not contain"
    let nor = doc! {"$nor": [{"price": 1.99}, {"sale": true}]};
    assert!(m(nor.clone(), doc! {"price": 2}));
    assert!(m(nor.clone(), doc! {}));
    assert!(!m(nor, doc! {"sale": true}));
    assert!(m(doc! {"$comment": "ignored", "a": 1}, doc! {"a": 1}));
    assert_eq!(err(doc! {"$or": []}).1, "$and/$or/$nor must be a nonempty array");
    assert_eq!(
        err(doc! {"$or": [1]}).1,
        "$or/$and/$nor entries need to be full objects"
    );
}

// Unknown operators: MongoDB answers BadValue (2) "unknown operator: $foo" / "unknown top level operator".
#[test]
fn unknown_operators_and_where() {
    assert_eq!(err(doc! {"a": {"$foo": 1}}), (2, "unknown operator: $foo".into()));
    assert_eq!(err(doc! {"a": {"$gt": 1, "b": 1}}), (2, "unknown operator: b".into()));
    let (code, msg) = err(doc! {"$foo": 1});
    assert_eq!(code, 2);
    assert!(msg.starts_with("unknown top level operator: $foo"), "{msg}");
    let (code, msg) = err(doc! {"$where": "this.a > 1"});
    assert_eq!(code, 2);
    assert!(msg.contains("$where"), "{msg}");
    // A literal document whose first key is not an operator is an equality match.
    assert!(m(doc! {"a": {"b": 1, "$c": 2}}, doc! {"a": {"b": 1, "$c": 2}}));
}

// https://www.mongodb.com/docs/manual/reference/method/db.collection.update/#upsert-with-unique-index
// "the update creates a base document from the equality clauses in the <query> parameter"
#[test]
fn equality_fields_for_upserts() {
    let f = Filter::parse(
        &doc! {"_id": 7, "a.b": 1, "c": {"$eq": "x"}, "d": {"$gt": 1}, "$and": [{"e": true}], "$or": [{"f": 1}, {"g": 1}]},
    )
    .unwrap();
    assert_eq!(f.equality_fields(), doc! {"_id": 7, "a": {"b": 1}, "c": "x", "e": true});
    // A one-clause $or is normalised to its clause, as MongoDB's query optimiser does.
    let f = Filter::parse(&doc! {"$or": [{"f": 1}], "h": {"$in": [2]}}).unwrap();
    assert_eq!(f.equality_fields(), doc! {"f": 1, "h": 2});
}

// https://www.mongodb.com/docs/manual/reference/operator/query/jsonSchema/
#[test]
fn json_schema_validator() {
    let schema = doc! {"$jsonSchema": {
        "bsonType": "object",
        "required": ["name", "year", "major"],
        "properties": {
            "name": {"bsonType": "string", "description": "must be a string and is required"},
            "year": {"bsonType": "int", "minimum": 2017, "maximum": 3017},
            "major": {"enum": ["Math", "English", "Computer Science", "History", Bson::Null]},
            "gpa": {"bsonType": ["double"]},
            "address": {"bsonType": "object", "required": ["city"], "properties": {"street": {"bsonType": "string"}, "city": {"bsonType": "string"}}},
            "code": {"bsonType": "string", "minLength": 2, "maxLength": 3, "pattern": "^[A-Z]+$"},
            "scores": {"bsonType": "array", "items": {"bsonType": "number", "minimum": 0}}
        }
    }};
    let good = doc! {"name": "Alice", "year": 2019, "major": "History", "gpa": 3.2, "address": {"city": "NYC"}, "code": "AB", "scores": [1, 2.5]};
    assert!(m(schema.clone(), good.clone()));
    let mut bad = good.clone();
    bad.remove("name");
    assert!(!m(schema.clone(), bad));
    let with = |k: &str, v: Bson| {
        let mut d = good.clone();
        d.insert(k, v);
        d
    };
    assert!(!m(schema.clone(), with("year", Bson::Int32(2016))));
    assert!(!m(schema.clone(), with("year", Bson::Int64(2019)))); // bsonType int only
    assert!(!m(schema.clone(), with("major", "Art".into())));
    assert!(m(schema.clone(), with("major", Bson::Null)));
    assert!(!m(schema.clone(), with("gpa", Bson::Int32(3))));
    assert!(!m(
        schema.clone(),
        with("address", Bson::Document(doc! {"street": "x"}))
    ));
    assert!(!m(schema.clone(), with("code", "A".into())));
    assert!(!m(schema.clone(), with("code", "abc".into())));
    assert!(!m(schema.clone(), with("scores", Bson::Array(vec![Bson::Int32(-1)]))));
    let closed = doc! {"$jsonSchema": {"properties": {"_id": {}, "a": {}}, "additionalProperties": false}};
    assert!(m(closed.clone(), doc! {"_id": 1, "a": 2}));
    assert!(!m(closed, doc! {"_id": 1, "b": 2}));
    assert_eq!(
        err(doc! {"$jsonSchema": {"foo": 1}}).1,
        "Unknown $jsonSchema keyword: foo"
    );
}

// NaN: "NaN is equal to NaN but otherwise always compares to false" (MongoDB comparison match
// expressions); documented order puts NaN below all numbers for sorting only.
#[test]
fn nan_in_comparisons() {
    assert!(m(doc! {"a": f64::NAN}, doc! {"a": f64::NAN}));
    assert!(!m(doc! {"a": {"$lt": 0}}, doc! {"a": f64::NAN}));
    assert!(!m(doc! {"a": {"$gt": f64::NAN}}, doc! {"a": 5}));
    assert!(m(doc! {"a": {"$gte": f64::NAN}}, doc! {"a": f64::NAN}));
}

// https://www.mongodb.com/docs/manual/reference/operator/query/expr/
#[test]
fn expr_compares_fields_of_the_same_document() {
    let f = doc! {"$expr": {"$gt": ["$spent", "$budget"]}};
    assert!(m(
        f.clone(),
        doc! {"_id": 1, "category": "food", "budget": 400, "spent": 450}
    ));
    assert!(!m(f, doc! {"_id": 2, "category": "drinks", "budget": 100, "spent": 50}));
}
