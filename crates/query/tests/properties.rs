//! Property tests: the comparison order is a total order, sorting agrees with it, and parsing or
//! applying random updates, filters and pipelines never panics.

use std::cmp::Ordering;

use bson::{Binary, Bson, Decimal128, Document, Regex, Timestamp, oid::ObjectId, spec::BinarySubtype};
use proptest::prelude::*;
use tidemark_query::{Filter, Pipeline, Projection, SortSpec, Update, compare_values, identical_documents};

fn leaf() -> impl Strategy<Value = Bson> {
    prop_oneof![
        any::<i32>().prop_map(Bson::Int32),
        (-3i32..3).prop_map(Bson::Int32),
        any::<i64>().prop_map(Bson::Int64),
        (-3i64..3).prop_map(Bson::Int64),
        any::<f64>().prop_map(Bson::Double),
        prop_oneof![
            Just(f64::NAN),
            Just(-0.0),
            Just(0.5),
            Just(1.0),
            Just(f64::INFINITY),
            Just(9.3e18),
            Just(-2.5)
        ]
        .prop_map(Bson::Double),
        (any::<i64>(), -20i32..20)
            .prop_map(|(c, e)| Bson::Decimal128(format!("{c}E{e}").parse::<Decimal128>().unwrap())),
        prop_oneof![Just("NaN"), Just("-Infinity"), Just("1.0"), Just("0.50"), Just("-0")]
            .prop_map(|s| Bson::Decimal128(s.parse::<Decimal128>().unwrap())),
        "[a-c]{0,3}".prop_map(Bson::String),
        "[a-c]{0,2}".prop_map(Bson::Symbol),
        any::<bool>().prop_map(Bson::Boolean),
        Just(Bson::Null),
        Just(Bson::Undefined),
        Just(Bson::MinKey),
        Just(Bson::MaxKey),
        any::<[u8; 12]>().prop_map(|b| Bson::ObjectId(ObjectId::from_bytes(b))),
        any::<i64>().prop_map(|m| Bson::DateTime(bson::DateTime::from_millis(m))),
        (any::<u32>(), any::<u32>()).prop_map(|(time, increment)| Bson::Timestamp(Timestamp { time, increment })),
        (0u8..3, proptest::collection::vec(any::<u8>(), 0..3)).prop_map(|(s, bytes)| Bson::Binary(Binary {
            subtype: BinarySubtype::from(s),
            bytes
        })),
        ("[a-b]{0,2}", "[im]{0,1}").prop_map(|(pattern, options)| Bson::RegularExpression(Regex { pattern, options })),
        "[a-b]{0,2}".prop_map(Bson::JavaScriptCode),
    ]
}

fn value() -> impl Strategy<Value = Bson> {
    leaf().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Bson::Array),
            proptest::collection::vec(("[a-c_]{1,2}", inner), 0..4)
                .prop_map(|fields| Bson::Document(fields.into_iter().collect::<Document>())),
        ]
    })
}

fn document() -> impl Strategy<Value = Document> {
    proptest::collection::vec(
        (prop_oneof![Just("_id"), Just("a"), Just("b"), Just("c")], value()),
        0..5,
    )
    .prop_map(|fields| fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a"),
        Just("b"),
        Just("_id"),
        Just("a.b"),
        Just("a.0"),
        Just("b.1.c"),
        Just("a.b.c"),
        Just("c.0.a"),
        Just("_id.x"),
        Just("a.$"),
        Just("a.$[]"),
        Just("b.$[].c"),
        Just("a.$[x]")
    ]
    .prop_map(str::to_owned)
}

fn update_doc() -> impl Strategy<Value = Document> {
    let op = prop_oneof![
        Just("$set"),
        Just("$unset"),
        Just("$inc"),
        Just("$mul"),
        Just("$min"),
        Just("$max"),
        Just("$rename"),
        Just("$push"),
        Just("$addToSet"),
        Just("$pop"),
        Just("$pull"),
        Just("$pullAll"),
        Just("$setOnInsert"),
        Just("$currentDate"),
        Just("$bit"),
        Just("$bogus"),
        Just("x")
    ];
    let arg = prop_oneof![
        value(),
        path().prop_map(Bson::String),
        Just(Bson::Int32(1)),
        Just(Bson::Int32(-1)),
        proptest::collection::vec(value(), 0..3).prop_map(|each| {
            let mut d = Document::new();
            d.insert("$each", each);
            d.insert("$slice", -1);
            d.insert("$position", 0);
            d.insert("$sort", 1);
            Bson::Document(d)
        }),
    ];
    proptest::collection::vec((op, proptest::collection::vec((path(), arg), 0..3)), 0..3).prop_map(|ops| {
        let mut d = Document::new();
        for (op, fields) in ops {
            d.insert(op, fields.into_iter().collect::<Document>());
        }
        d
    })
}

fn filter_doc() -> impl Strategy<Value = Document> {
    let op = prop_oneof![
        Just("$eq"),
        Just("$ne"),
        Just("$gt"),
        Just("$gte"),
        Just("$lt"),
        Just("$lte"),
        Just("$in"),
        Just("$nin"),
        Just("$exists"),
        Just("$type"),
        Just("$size"),
        Just("$all"),
        Just("$mod"),
        Just("$elemMatch"),
        Just("$not"),
        Just("$regex")
    ];
    proptest::collection::vec(
        (
            path(),
            prop_oneof![
                value(),
                (op, value()).prop_map(|(o, v)| {
                    let mut d = Document::new();
                    d.insert(o, v);
                    Bson::Document(d)
                })
            ],
        ),
        0..3,
    )
    .prop_map(|fields| fields.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn compare_is_reflexive_and_antisymmetric(a in value(), b in value()) {
        prop_assert_eq!(compare_values(&a, &a), Ordering::Equal);
        prop_assert_eq!(compare_values(&a, &b), compare_values(&b, &a).reverse());
    }

    #[test]
    fn compare_is_transitive(mut values in proptest::collection::vec(value(), 3..8)) {
        values.sort_by(compare_values);
        for i in 0..values.len() {
            for j in i..values.len() {
                prop_assert_ne!(compare_values(&values[i], &values[j]), Ordering::Greater, "{} > {}", values[i], values[j]);
            }
        }
    }

    #[test]
    fn numbers_are_transitive_across_types(x in leaf(), y in leaf(), z in leaf()) {
        let (xy, yz, xz) = (compare_values(&x, &y), compare_values(&y, &z), compare_values(&x, &z));
        if xy != Ordering::Greater && yz != Ordering::Greater {
            prop_assert_ne!(xz, Ordering::Greater);
        }
        if xy == Ordering::Equal && yz == Ordering::Equal {
            prop_assert_eq!(xz, Ordering::Equal);
        }
    }

    #[test]
    fn sort_agrees_with_compare_for_scalars(values in proptest::collection::vec(leaf(), 0..10), ascending in any::<bool>()) {
        let mut docs: Vec<Document> = values.into_iter().map(|v| { let mut d = Document::new(); d.insert("v", v); d }).collect();
        let mut spec = Document::new();
        spec.insert("v", if ascending { 1 } else { -1 });
        let spec = SortSpec::parse(&spec).unwrap();
        spec.sort(&mut docs);
        for pair in docs.windows(2) {
            let ord = compare_values(pair[0].get("v").unwrap(), pair[1].get("v").unwrap());
            let ord = if ascending { ord } else { ord.reverse() };
            prop_assert_ne!(ord, Ordering::Greater);
        }
    }

    #[test]
    fn sort_compare_is_a_total_order(docs in proptest::collection::vec(document(), 3..6)) {
        let mut spec = Document::new();
        spec.insert("a", 1);
        spec.insert("b.c", -1);
        let spec = SortSpec::parse(&spec).unwrap();
        for a in &docs {
            prop_assert_eq!(spec.compare(a, a), Ordering::Equal);
            for b in &docs {
                prop_assert_eq!(spec.compare(a, b), spec.compare(b, a).reverse());
            }
        }
        let mut sorted = docs.clone();
        sorted.sort_by(|a, b| spec.compare(a, b));
        // The key-caching sort gives the same (stable) order as sorting by `compare`.
        let mut cached = docs.clone();
        spec.sort(&mut cached);
        prop_assert!(sorted.iter().zip(&cached).all(|(x, y)| identical_documents(x, y)));
        for i in 0..sorted.len() {
            for j in i..sorted.len() {
                prop_assert_ne!(spec.compare(&sorted[i], &sorted[j]), Ordering::Greater);
            }
        }
    }

    #[test]
    fn update_apply_never_panics(doc in document(), update in update_doc(), upsert in any::<bool>(), query in filter_doc()) {
        let parsed = if update.to_string().contains("$[x]") {
            Update::parse_with_array_filters(&update, &[bson::doc! {"x": {"$gt": 0}}])
        } else {
            Update::parse(&update)
        };
        let query = Filter::parse(&query).ok();
        if let Ok(u) = parsed {
            let mut d = doc.clone();
            match u.apply_with_filter(&mut d, upsert, query.as_ref()) {
                Ok(changed) => prop_assert_eq!(changed, !identical_documents(&d, &doc)),
                Err(_) => prop_assert!(identical_documents(&d, &doc)),
            }
            if let Some(id) = doc.get("_id") {
                // An existing _id never changes, whatever the update did.
                prop_assert_eq!(d.get("_id").map(|v| compare_values(v, id)), Some(Ordering::Equal));
            }
        }
    }

    #[test]
    fn filters_projections_and_pipelines_never_panic(doc in document(), filter in filter_doc(), proj in document()) {
        if let Ok(f) = Filter::parse(&filter) {
            let _ = f.matches(&doc);
            let _ = f.equality_fields();
        }
        if let Ok(p) = Projection::parse(&proj) {
            let _ = p.apply(&doc);
        }
        let mut group = Document::new();
        group.insert("_id", "$a");
        group.insert("s", bson::doc! {"$sum": "$b"});
        group.insert("v", bson::doc! {"$avg": "$c"});
        let stages = vec![bson::doc! {"$match": filter}, bson::doc! {"$unwind": "$a"}, bson::doc! {"$group": group}];
        if let Ok(p) = Pipeline::parse(&stages) {
            let _ = p.run(std::iter::once(doc));
        }
    }
}
