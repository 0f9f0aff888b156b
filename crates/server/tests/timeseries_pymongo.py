"""Time series collections through pymongo, checked against MongoDB 7.0's documented behaviour.

Usage: timeseries_pymongo.py PORT MODE. MODE "write" creates `tsdb.weather` (timeField "time",
metaField "meta", granularity seconds), inserts measurements and checks everything; MODE "reload"
checks that a restarted server (same --dbpath) still serves the same collection and buckets.
Expected buckets are computed here from the documented rules (same meta, start = first time rounded
down to bucketRoundingSeconds, time < start + bucketMaxSpanSeconds, at most 1000 measurements).
Prints OK on success; any failed check raises.
"""
import datetime
import sys

import pymongo
from bson import SON, ObjectId
from pymongo.errors import BulkWriteError, OperationFailure

port, mode = int(sys.argv[1]), sys.argv[2]
client = pymongo.MongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true", serverSelectionTimeoutMS=5000)
db = client.tsdb
BASE = datetime.datetime(2024, 1, 1, 0, 0, 0)
SPAN, ROUNDING, MAX_COUNT = 3600, 60, 1000


def measurements():
    """Three series; the first spans several hours, the second overflows the 1000-measurement limit."""
    docs = []
    for i in range(12):
        docs.append({"time": BASE + datetime.timedelta(minutes=13 * i, seconds=7), "meta": {"sensor": 1}, "value": i})
    for i in range(1500):
        docs.append({"time": BASE + datetime.timedelta(seconds=i), "meta": {"sensor": 2}, "value": 1500 - i, "tag": "b"})
    for i in range(5):
        docs.append({"time": BASE + datetime.timedelta(hours=5, minutes=i), "meta": "plain", "value": float(i) / 2})
    return docs


def expected_buckets(docs):
    """[(meta, start, [measurements])] in the documented bucketing rules."""
    open_buckets, buckets = {}, []
    for d in docs:
        key = repr(d["meta"])
        secs = int((d["time"] - datetime.datetime(1970, 1, 1)).total_seconds())
        b = open_buckets.get(key)
        if b is None or not (b[1] <= d["time"] and (d["time"] - b[1]).total_seconds() < SPAN and len(b[2]) < MAX_COUNT):
            start = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=secs - secs % ROUNDING)
            b = (d["meta"], start, [])
            open_buckets[key] = b
            buckets.append(b)
        b[2].append(d)
    return buckets


def expect_error(code, fn):
    try:
        fn()
    except OperationFailure as e:
        assert e.code == code, (code, e.code, e.details)
        return e
    raise AssertionError(f"expected error {code}")


def collection_entry(name):
    entries = list(db.list_collections(filter={"name": name}))
    assert len(entries) == 1, entries
    return entries[0]


def check_reads(docs):
    weather = db.weather
    assert weather.count_documents({}) == len(docs)
    assert weather.estimated_document_count() == len(docs)
    # Filter on the metaField and a data field, sorted on the time field.
    got = list(weather.find({"meta.sensor": 1, "value": {"$gte": 5}}).sort("time", -1))
    want = sorted((d for d in docs if d["meta"] == {"sensor": 1} and d["value"] >= 5), key=lambda d: d["time"], reverse=True)
    assert got == want, (got, want)
    # Every measurement comes back exactly as inserted (its generated _id included).
    by_id = {d["_id"]: d for d in docs}
    everything = list(weather.find())
    assert len(everything) == len(docs)
    for d in everything:
        assert by_id[d["_id"]] == d, d
    # Projection, a time range, skip and limit.
    window = list(
        weather.find(
            {"time": {"$gte": BASE + datetime.timedelta(seconds=100), "$lt": BASE + datetime.timedelta(seconds=200)}},
            {"_id": 0, "value": 1},
        ).sort("value", 1).skip(10).limit(5)
    )
    values = sorted(d["value"] for d in docs if BASE + datetime.timedelta(seconds=100) <= d["time"] < BASE + datetime.timedelta(seconds=200))
    assert window == [{"value": v} for v in values[10:15]], window
    # Aggregation over the measurements.
    per_series = {repr(r["_id"]): r["n"] for r in weather.aggregate([{"$group": {"_id": "$meta", "n": {"$sum": 1}}}])}
    assert per_series == {repr({"sensor": 1}): 12, repr({"sensor": 2}): 1500, repr("plain"): 5}, per_series
    assert sorted(weather.distinct("meta.sensor")) == [1, 2]


def check_buckets(docs):
    want = expected_buckets(docs)
    got = list(db["system.buckets.weather"].find())
    assert len(got) == len(want), (len(got), len(want))
    by_key = {(repr(b["meta"]), b["control"]["min"]["time"]): b for b in got}
    for meta, start, members in want:
        b = by_key[(repr(meta), start)]
        assert list(b.keys()) == ["_id", "control", "meta", "data"], b.keys()
        assert isinstance(b["_id"], ObjectId)
        assert b["_id"].generation_time.replace(tzinfo=None) == start, (b["_id"], start)
        assert b["control"]["version"] == 1
        assert b["meta"] == meta
        assert b["control"]["max"]["time"] == max(m["time"] for m in members)
        assert b["control"]["min"]["value"] == min(m["value"] for m in members)
        assert b["control"]["max"]["value"] == max(m["value"] for m in members)
        assert list(b["data"]["time"].keys()) == [str(i) for i in range(len(members))]
        assert [b["data"]["time"][str(i)] for i in range(len(members))] == [m["time"] for m in members]
        assert [b["data"]["_id"][str(i)] for i in range(len(members))] == [m["_id"] for m in members]
        assert "meta" not in b["data"]


def list_shapes():
    ts = collection_entry("weather")
    assert ts["type"] == "timeseries", ts
    assert ts["options"] == {
        "timeseries": {"timeField": "time", "metaField": "meta", "granularity": "seconds", "bucketMaxSpanSeconds": 3600}
    }, ts
    assert ts["info"]["readOnly"] is False
    assert "uuid" not in ts["info"] and "idIndex" not in ts
    buckets = collection_entry("system.buckets.weather")
    assert buckets["type"] == "collection", buckets
    assert buckets["options"]["timeseries"] == ts["options"]["timeseries"]
    assert buckets["info"]["uuid"].subtype == 4
    # With a metaField mongod creates the {meta: 1, time: 1} index; listIndexes shows the user's keys,
    # the buckets collection holds them translated to bucket fields.
    assert [dict(i) for i in db.weather.list_indexes()] == [{"v": 2, "key": {"meta": 1, "time": 1}, "name": "meta_1_time_1"}]
    bucket_keys = {i["name"]: dict(i["key"]) for i in db["system.buckets.weather"].list_indexes()}
    assert bucket_keys["meta_1_time_1"] == {"meta": 1, "control.min.time": 1, "control.max.time": 1}, bucket_keys


if mode == "write":
    client.drop_database("tsdb")
    db.create_collection("weather", timeseries={"timeField": "time", "metaField": "meta"})
    list_shapes()
    # Creating it again with the same options is a no-op; different options are NamespaceExists (48).
    db.command("create", "weather", timeseries={"timeField": "time", "metaField": "meta"})
    expect_error(48, lambda: db.command("create", "weather", timeseries={"timeField": "time"}))
    expect_error(48, lambda: db.command("create", "weather"))

    # Validation, with mongod's codes.
    expect_error(40414, lambda: db.command("create", "bad", timeseries={}))
    expect_error(40414, lambda: db.command("create", "bad", timeseries={"metaField": "m"}))
    expect_error(72, lambda: db.command("create", "bad", timeseries={"timeField": "t", "metaField": "t"}))
    expect_error(72, lambda: db.command("create", "bad", timeseries={"timeField": "t", "metaField": "_id"}))
    expect_error(72, lambda: db.command("create", "bad", timeseries={"timeField": "a.b"}))
    expect_error(2, lambda: db.command("create", "bad", timeseries={"timeField": "t", "granularity": "days"}))
    expect_error(14, lambda: db.command("create", "bad", timeseries={"timeField": 1}))
    expect_error(40415, lambda: db.command("create", "bad", timeseries={"timeField": "t", "extra": 1}))
    expect_error(72, lambda: db.command("create", "bad", timeseries={"timeField": "t"}, capped=True, size=4096))
    expect_error(72, lambda: db.command("create", "bad", timeseries={"timeField": "t", "bucketMaxSpanSeconds": 600, "bucketRoundingSeconds": 300}))
    expect_error(72, lambda: db.command("create", "bad", timeseries={"timeField": "t", "granularity": "minutes", "bucketMaxSpanSeconds": 60, "bucketRoundingSeconds": 60}))
    assert "bad" not in db.list_collection_names() and "system.buckets.bad" not in db.list_collection_names()

    # Granularity and custom bucketing fill in what mongod reports.
    db.create_collection("hourly", timeseries={"timeField": "t", "granularity": "hours"}, expireAfterSeconds=86400)
    hourly = collection_entry("hourly")["options"]
    assert hourly["timeseries"] == {"timeField": "t", "granularity": "hours", "bucketMaxSpanSeconds": 2592000}, hourly
    assert hourly["expireAfterSeconds"] == 86400
    db.create_collection("custom", timeseries={"timeField": "t", "bucketMaxSpanSeconds": 600, "bucketRoundingSeconds": 600})
    custom = collection_entry("custom")["options"]["timeseries"]
    assert custom == {"timeField": "t", "bucketRoundingSeconds": 600, "bucketMaxSpanSeconds": 600}, custom
    # Dropping the time series collection drops its buckets too.
    db.custom.insert_one({"t": BASE})
    assert db["system.buckets.custom"].count_documents({}) == 1
    db.drop_collection("custom")
    names = db.list_collection_names()
    assert "custom" not in names and "system.buckets.custom" not in names, names

    # Inserts: the time field must be a date (BadValue, 2); ordered inserts stop at the first error.
    docs = measurements()
    db.weather.insert_many(docs[:700])
    db.weather.insert_many(docs[700:1000])
    for d in docs[1000:]:
        db.weather.insert_one(d)
    try:
        db.weather.insert_many([{"time": BASE, "meta": "late"}, {"meta": "x"}, {"time": "noon"}], ordered=False)
        raise AssertionError("expected a bulk write error")
    except BulkWriteError as e:
        assert [w["code"] for w in e.details["writeErrors"]] == [2, 2], e.details
        assert [w["index"] for w in e.details["writeErrors"]] == [1, 2], e.details
        assert e.details["nInserted"] == 1
    assert db.weather.count_documents({"meta": "late"}) == 1
    db["system.buckets.weather"].delete_many({"meta": "late"})
    check_reads(docs)
    check_buckets(docs)
    list_shapes()

    # Secondary indexes: metaField sub-paths map to `meta`, measurement fields to control.min/max.
    db.weather.create_index([("meta.sensor", 1)], name="sensor")
    db.weather.create_index([("value", -1), ("meta", 1)], name="value_meta")
    user = {i["name"]: dict(i["key"]) for i in db.weather.list_indexes()}
    assert user == {"meta_1_time_1": {"meta": 1, "time": 1}, "sensor": {"meta.sensor": 1}, "value_meta": {"value": -1, "meta": 1}}, user
    bucket_keys = {i["name"]: dict(i["key"]) for i in db["system.buckets.weather"].list_indexes()}
    assert bucket_keys["sensor"] == {"meta.sensor": 1}, bucket_keys
    assert bucket_keys["value_meta"] == {"control.max.value": -1, "control.min.value": -1, "meta": 1}, bucket_keys
    expect_error(67, lambda: db.weather.create_index([("value", 1)], unique=True))
    expect_error(67, lambda: db.weather.create_index([("value", "text")]))
    db.command("dropIndexes", "weather", index=SON([("value", -1), ("meta", 1)]))
    db.weather.drop_index("sensor")
    assert [i["name"] for i in db.weather.list_indexes()] == ["meta_1_time_1"]
    check_reads(docs)
    # A collection without metaField has no default index.
    assert list(db.hourly.list_indexes()) == []

    # Deletes with any query (MongoDB 7.0): emptied buckets go away, others keep their other measurements.
    gone = db.gone
    db.create_collection("gone", timeseries={"timeField": "time", "metaField": "meta"})
    gone.insert_many([{"time": BASE + datetime.timedelta(minutes=10 * i), "meta": "a", "value": i} for i in range(12)])
    assert db["system.buckets.gone"].count_documents({}) == 2  # 00:00-00:50 and 01:00-01:50
    assert gone.delete_many({"value": {"$lt": 6}}).deleted_count == 6
    assert db["system.buckets.gone"].count_documents({}) == 1
    assert gone.delete_many({"value": {"$in": [7, 9]}}).deleted_count == 2
    remaining = list(gone.find().sort("time", 1))
    assert [d["value"] for d in remaining] == [6, 8, 10, 11], remaining
    (bucket,) = list(db["system.buckets.gone"].find())
    assert list(bucket["data"]["time"].keys()) == ["0", "1", "2", "3"], bucket
    assert bucket["control"]["min"]["value"] == 6 and bucket["control"]["max"]["value"] == 11, bucket
    assert bucket["control"]["min"]["time"] == BASE + datetime.timedelta(hours=1), bucket
    assert gone.delete_one({"meta": "a"}).deleted_count == 1
    assert gone.count_documents({}) == 3
    assert gone.delete_many({}).deleted_count == 3
    assert db["system.buckets.gone"].count_documents({}) == 0
    # Other document writes are refused with CommandNotSupportedOnView (166), changing nothing.
    gone.insert_one({"time": BASE, "meta": "b", "value": 1})
    expect_error(166, lambda: gone.update_one({}, {"$set": {"value": 2}}))
    expect_error(166, lambda: gone.find_one_and_delete({}))
    expect_error(166, lambda: list(db.weather.aggregate([{"$match": {}}, {"$out": "gone"}])))
    assert [d["value"] for d in gone.find()] == [1]
    # Renaming would separate the collection from its buckets: refused (IllegalOperation, 20).
    expect_error(20, lambda: client.admin.command("renameCollection", "tsdb.gone", to="tsdb.moved"))
    expect_error(20, lambda: client.admin.command("renameCollection", "tsdb.system.buckets.gone", to="tsdb.moved"))
    assert "gone" in db.list_collection_names() and "moved" not in db.list_collection_names()
    db.drop_collection("gone")
elif mode == "reload":
    docs = sorted(db.weather.find(), key=lambda d: (repr(d["meta"]), d["time"]))
    assert len(docs) == 1517, len(docs)
    list_shapes()
    by_series = {}
    for d in docs:
        by_series.setdefault(repr(d["meta"]), []).append(d)
    # Buckets survive unchanged, so the documented bucketing of the measurements still holds.
    ordered = [d for key in (repr({"sensor": 1}), repr({"sensor": 2}), repr("plain")) for d in by_series[key]]
    check_buckets(ordered)
    check_reads(ordered)
    assert "hourly" in db.list_collection_names()
else:
    raise SystemExit(f"unknown mode {mode}")
print("OK")
