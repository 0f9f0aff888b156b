//! `metadata.json` text: what current mongodump writes for each kind of collection (FORMATS.md
//! 1.3–1.5), and how values are spelled (Go driver canonical Extended JSON).

use bson::{Bson, doc};
use tidemark_format::metadata::{Metadata, MetadataError};

#[test]
fn timeseries_example_from_the_documentation() {
    // FORMATS.md 1.3, second example (a real fixture).
    let text = r#"{"options":{"timeseries":{"timeField":"ts","metaField":"meta","granularity":"seconds","bucketMaxSpanSeconds":{"$numberInt":"3600"}}},"indexes":[{"v":{"$numberInt":"2"},"key":{"meta.device":{"$numberInt":"1"}},"name":"meta.device_1"},{"v":{"$numberInt":"2"},"key":{"ts":{"$numberInt":"1"},"meta.device":{"$numberInt":"1"}},"name":"ts_1_meta.device_1"}],"collectionName":"foo_ts","type":"timeseries"}"#;
    let m = Metadata::parse(text.as_bytes(), "foo_ts").unwrap().unwrap();
    assert!(m.is_timeseries() && !m.is_view());
    assert_eq!(m.uuid, None);
    assert_eq!(m.to_json().unwrap(), text);
}

#[test]
fn view_metadata_as_mongodump_writes_it() {
    let mut m = Metadata::new("v");
    m.options = Some(doc! { "viewOn": "c", "pipeline": [ { "$match": { "x": { "$gt": 1 } } } ] });
    m.collection_type = Some("view".into());
    assert_eq!(
        m.to_json().unwrap(),
        r#"{"options":{"viewOn":"c","pipeline":[{"$match":{"x":{"$gt":{"$numberInt":"1"}}}}]},"indexes":[],"collectionName":"v","type":"view"}"#
    );
    assert!(m.is_view());
}

#[test]
fn legacy_form_from_the_documentation_reads() {
    let text = br#"{"options":{},"indexes":[{"v":2,"key":{"_id":1},"name":"_id_","ns":"db1.c1"}],"uuid":"699f503df64b4aa8a484a8052046fa3a"}"#;
    let m = Metadata::parse(text, "c1").unwrap().unwrap();
    assert_eq!(m.options, Some(doc! {}));
    assert_eq!(
        m.indexes,
        vec![doc! { "v": 2, "key": { "_id": 1 }, "name": "_id_", "ns": "db1.c1" }]
    );
    // Rewritten as current mongodump would: empty options dropped, collectionName present.
    assert_eq!(
        m.to_json().unwrap(),
        r#"{"indexes":[{"v":{"$numberInt":"2"},"key":{"_id":{"$numberInt":"1"}},"name":"_id_","ns":"db1.c1"}],"uuid":"699f503df64b4aa8a484a8052046fa3a","collectionName":""}"#
    );
}

#[test]
fn doubles_and_other_types_are_spelled_like_the_go_driver() {
    // Go: strconv.FormatFloat(f, 'G', -1, 64), plus ".0" when there is neither '.' nor 'E'.
    let cases = [
        (1.0, "1.0"),
        (-0.0, "-0.0"),
        (0.1, "0.1"),
        (123_456.0, "123456.0"),
        (1_000_000.0, "1E+06"),
        (1_234_567.0, "1.234567E+06"),
        (0.0001, "0.0001"),
        (0.00001, "1E-05"),
        (1.0e21, "1E+21"),
        (f64::INFINITY, "Infinity"),
        (f64::NEG_INFINITY, "-Infinity"),
    ];
    for (value, spelled) in cases {
        let mut m = Metadata::new("c");
        m.options = Some(doc! { "d": value });
        let text = m.to_json().unwrap();
        assert!(
            text.starts_with(&format!(r#"{{"options":{{"d":{{"$numberDouble":"{spelled}"}}}}"#)),
            "{value}: {text}"
        );
        let back = Metadata::parse(text.as_bytes(), "c").unwrap().unwrap();
        assert_eq!(back.options.unwrap().get_f64("d").unwrap().to_bits(), value.to_bits());
    }
    let mut m = Metadata::new("c\u{2028}<>");
    m.options = Some(doc! {
        "l": 5_i64,
        "b": bson::Binary { subtype: bson::spec::BinarySubtype::Uuid, bytes: vec![0xAB; 16] },
        "dt": bson::DateTime::from_millis(-1),
        "dec": "1.50".parse::<bson::Decimal128>().unwrap(),
    });
    assert_eq!(
        m.to_json().unwrap(),
        r#"{"options":{"l":{"$numberLong":"5"},"b":{"$binary":{"base64":"q6urq6urq6urq6urq6urqw==","subType":"04"}},"dt":{"$date":{"$numberLong":"-1"}},"dec":{"$numberDecimal":"1.50"}},"indexes":[],"collectionName":"c\u2028<>"}"#
    );
}

#[test]
fn relaxed_and_legacy_values_keep_go_types() {
    let text = br#"{"options":{"size":{"$numberLong":"100096"},"max":5000000000,"f":2.5,"bin":{"$binary":"AAE=","$type":"80"},"when":{"$date":"2020-01-02T03:04:05.678Z"}},"indexes":null,"collectionName":"x","type":"collection"}"#;
    let m = Metadata::parse(text, "x").unwrap().unwrap();
    let o = m.options.as_ref().unwrap();
    assert_eq!(o.get("size"), Some(&Bson::Int64(100_096)));
    assert_eq!(o.get("max"), Some(&Bson::Int64(5_000_000_000)));
    assert_eq!(o.get("f"), Some(&Bson::Double(2.5)));
    match o.get("bin") {
        Some(Bson::Binary(b)) => assert_eq!((u8::from(b.subtype), b.bytes.as_slice()), (0x80, &[0u8, 1][..])),
        other => panic!("{other:?}"),
    }
    assert_eq!(o.get_datetime("when").unwrap().timestamp_millis(), 1_577_934_245_678);
    assert!(m.indexes.is_empty());
    // `indexes` is always written, never null.
    assert!(m.to_json().unwrap().contains(r#""indexes":[]"#));
}

#[test]
fn invalid_extended_json_is_a_parse_error() {
    for text in [
        &br#"{"options":{"x":{"$numberInt":"nope"}},"indexes":[]}"#[..],
        br#"{"options":{"x":{"$oid":"zz"}},"indexes":[]}"#,
        // The bad-format.archive case: an index key written with unescaped quotes.
        br#"{"indexes":[{"key":"{"a":"b"}"}]}"#,
    ] {
        let err = Metadata::parse(text, "test.ixtest").unwrap_err();
        assert!(
            matches!(err, MetadataError::Parse { ref location, .. } if location == "test.ixtest"),
            "{err}"
        );
    }
}
