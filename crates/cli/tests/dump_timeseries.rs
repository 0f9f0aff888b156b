//! Time series collections through `tidemark dump` and `tidemark restore` (FORMATS.md 1.5), against
//! `tidemark-server` in MongoDB 7.0's layout. pymongo, a client we did not write, seeds the source and
//! reads both ends: a dump holds `system.buckets.<name>.bson` (the bucket documents, byte for byte) and
//! `<name>.metadata.json` (with the user-facing indexes); a restore into a fresh server gives back the
//! same measurements, indexes and buckets; restoring over an existing one without `--drop` fails as mongorestore does.

mod dump_support;

use dump_support::{Server, pymongo, pymongo_with_args, stderr, tidemark};

/// Seeds `metrics.weather` (three series spanning several buckets) and an ordinary collection.
fn seed(uri: &str) {
    pymongo(
        uri,
        r#"
import datetime
db = client["metrics"]
db.create_collection("weather", timeseries={"timeField": "ts", "metaField": "station", "granularity": "minutes"})
base = datetime.datetime(2024, 3, 1)
docs = []
for s in range(3):
    for i in range(400):
        docs.append({"ts": base + datetime.timedelta(minutes=7 * i + s), "station": {"id": s, "site": "n%d" % s},
                     "temp": 10.5 + (i % 17) - s, "ok": i % 5 != 0})
db.weather.insert_many(docs)
db.weather.create_index([("station.site", 1), ("ts", -1)], name="site_ts")
db.plain.insert_many([{"_id": i, "v": i} for i in range(10)])
print("ok")
"#,
    );
}

/// What pymongo sees of the time series collection: its `listCollections` options, the measurements
/// (sorted by `_id`, canonical Extended JSON) and the hex of every bucket's raw bytes in natural order.
fn state(uri: &str) -> String {
    pymongo(
        uri,
        r#"
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
db = client["metrics"]
entry = [c for c in db.list_collections() if c["name"] == "weather"][0]
assert entry["type"] == "timeseries", entry
measurements = sorted(db.weather.find(), key=lambda d: d["_id"])
raw = db.get_collection("system.buckets.weather", codec_options=CodecOptions(document_class=RawBSONDocument))
buckets = [b.raw.hex() for b in raw.find()]
print(json_util.dumps({"options": entry["options"], "indexes": list(db.weather.list_indexes()),
                       "bucket_indexes": list(raw.list_indexes()), "n": len(measurements), "measurements": measurements,
                       "buckets": buckets, "plain": list(db.plain.find().sort("_id", 1))},
                      json_options=json_util.CANONICAL_JSON_OPTIONS))
"#,
    )
}

fn restore_into_fresh(args: &[&str], expected: &str) -> Server {
    let target = Server::start();
    let mut all = vec!["restore", target.uri.as_str()];
    all.extend_from_slice(args);
    let out = tidemark(&all);
    assert!(out.status.success(), "restore {args:?}: {}", stderr(&out));
    assert_eq!(state(&target.uri), expected, "restore {args:?}");
    target
}

#[test]
fn time_series_dump_and_restore_directory_and_archive() {
    let source = Server::start();
    seed(&source.uri);
    let expected = state(&source.uri);
    assert!(
        expected.contains(r#""n": {"$numberInt": "1200"}"#),
        "{}",
        &expected[..300.min(expected.len())]
    );
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("dump");
    let out = tidemark(&["dump", &source.uri, "-o", out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    // FORMATS.md 1.5: the data file is the buckets collection, the metadata the logical collection.
    let metrics = out_dir.join("metrics");
    let data = metrics.join("system.buckets.weather.bson");
    let meta = metrics.join("weather.metadata.json");
    assert!(data.is_file() && meta.is_file());
    assert!(!metrics.join("weather.bson").exists() && !metrics.join("system.buckets.weather.metadata.json").exists());
    // The file is exactly the source's bucket documents, concatenated in natural order.
    let check = pymongo_with_args(
        &source.uri,
        r#"
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
raw = client["metrics"].get_collection("system.buckets.weather", codec_options=CodecOptions(document_class=RawBSONDocument))
want = b"".join(b.raw for b in raw.find())
assert len(want) > 0
assert open(sys.argv[2], "rb").read() == want
meta = json.loads(open(sys.argv[3]).read())
entry = [c for c in client["metrics"].list_collections() if c["name"] == "weather"][0]
assert json_util.loads(json.dumps(meta["options"])) == entry["options"], meta
assert meta["options"]["timeseries"]["granularity"] == "minutes"
assert meta["collectionName"] == "weather" and meta["type"] == "timeseries", meta
assert [dict(i) for i in json_util.loads(json.dumps(meta["indexes"]))] == [dict(i) for i in client["metrics"].weather.list_indexes()], meta
assert [i["name"] for i in meta["indexes"]] == ["station_1_ts_1", "site_ts"], meta
assert "uuid" not in meta, meta
print("checked")
"#,
        &[data.to_str().unwrap(), meta.to_str().unwrap()],
    );
    assert_eq!(check.trim(), "checked");

    // Directory restore into a fresh server: same measurements, same buckets byte for byte.
    let target = restore_into_fresh(&[out_dir.to_str().unwrap()], &expected);

    // Restoring over it without --drop is mongorestore's pre-flight error, and changes nothing.
    let again = tidemark(&["restore", target.uri.as_str(), out_dir.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    let message = stderr(&again);
    assert!(
        message.contains(
            "timeseries collection metrics.weather already exists on the destination. You must remove this collection from the destination or use --drop"
        ),
        "{message}"
    );
    assert_eq!(state(&target.uri), expected);
    // With --drop the collection and its buckets are replaced by the dump's.
    let dropped = tidemark(&["restore", target.uri.as_str(), "--drop", out_dir.to_str().unwrap()]);
    assert!(dropped.status.success(), "{}", stderr(&dropped));
    assert_eq!(state(&target.uri), expected);

    // Archive, gzipped: the same result.
    let archive = dir.path().join("dump.archive.gz");
    let arg = format!("--archive={}", archive.to_str().unwrap());
    let out = tidemark(&["dump", &source.uri, &arg, "--gzip"]);
    assert!(out.status.success(), "{}", stderr(&out));
    restore_into_fresh(&[&arg, "--gzip"], &expected);
}
