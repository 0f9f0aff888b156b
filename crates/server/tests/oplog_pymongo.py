"""The oplog and applyOps of tidemark-server seen through pymongo (an independent driver and BSON codec).

Usage: oplog_pymongo.py PORT TESTDATA_DIR. The server runs with --replSet rs0 --oplogSizeMB 1.
Prints OK on success; any failed check raises.
"""
import os
import sys
import time

import bson
import pymongo
from bson import SON, Timestamp
from bson.int64 import Int64
from bson.raw_bson import RawBSONDocument
from pymongo import CursorType
from pymongo.errors import OperationFailure

port = int(sys.argv[1])
testdata = sys.argv[2]
client = pymongo.MongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true", serverSelectionTimeoutMS=5000)
admin = client.admin
admin.command("replSetInitiate", {"_id": "rs0", "version": 1, "members": [{"_id": 0, "host": f"127.0.0.1:{port}"}]})
deadline = time.time() + 10
while not admin.command("hello").get("isWritablePrimary"):
    assert time.time() < deadline, "no primary"
    time.sleep(0.05)

oplog = client.local["oplog.rs"]
first = oplog.find_one(sort=[("$natural", 1)])
assert first["op"] == "n" and first["ns"] == "" and first["o"] == {"msg": "initiating set"}, first
newest = oplog.find_one(sort=[("$natural", -1)])
start = newest["ts"]
assert isinstance(start, Timestamp)

# A tailable awaitData cursor sees the writes, in order, with MongoDB's shapes.
cursor = oplog.find({"ts": {"$gt": start}}, cursor_type=CursorType.TAILABLE_AWAIT, oplog_replay=True).max_await_time_ms(200)
c = client.py.items
c.insert_one(SON([("_id", 1), ("a", 1), ("nested", SON([("k", "v")]))]))
c.update_one({"_id": 1}, {"$inc": {"a": 4}, "$set": {"nested.k": "w", "new": [1, 2]}})
c.delete_one({"_id": 1})
seen = []
deadline = time.time() + 10
while len([e for e in seen if e["op"] in "iud"]) < 3:
    assert time.time() < deadline, f"tailing stalled: {seen}"
    for e in cursor:
        seen.append(e)
    assert cursor.alive, "a tailable cursor stays alive at the end of the oplog"
crud = [e for e in seen if e["op"] in "iud"]
assert [e["op"] for e in crud] == ["i", "u", "d"], crud
ins, upd, dele = crud
assert ins["ns"] == "py.items" and ins["o"] == {"_id": 1, "a": 1, "nested": {"k": "v"}} and ins["o2"] == {"_id": 1}
assert list(ins["o"].keys()) == ["_id", "a", "nested"]
assert upd["o"] == {"$v": 2, "diff": {"u": {"a": 5}, "i": {"new": [1, 2]}, "snested": {"u": {"k": "w"}}}}, upd["o"]
assert upd["o2"] == {"_id": 1}
assert dele["o"] == {"_id": 1} and "o2" not in dele
create = [e for e in seen if e["op"] == "c"][0]
assert create["ns"] == "py.$cmd" and create["o"] == {"create": "items", "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"}}
assert create["ui"] == ins["ui"] and getattr(create["ui"], "subtype", None) == 4, create
for e in seen:
    assert isinstance(e["t"], Int64) and e["t"] == 1, e
    assert isinstance(e["v"], Int64) and e["v"] == 2, e
    assert "wall" in e
for a, b in zip(seen, seen[1:]):
    assert (b["ts"].time, b["ts"].inc) > (a["ts"].time, a["ts"].inc)
cursor.close()

# Rollover: with a 1 MB oplog, 2 MB of inserts push the oldest entries out.
big = client.py.big
for i in range(200):
    big.insert_one({"_id": i, "pad": "x" * 10000})
oldest = oplog.find_one(sort=[("$natural", 1)])
assert oldest["ts"] > start, oldest
assert oplog.find_one(sort=[("$natural", -1)])["o"]["_id"] == 199
stats = client.local.command("collStats", "oplog.rs")
assert stats["capped"] is True, stats

# applyOps of a real fixture (8.0 vectored insert), with pymongo's codec reading the file.
client.mongodump_test_db.drop_collection("coll1")
client.mongodump_test_db.create_collection("coll1")
with open(os.path.join(testdata, "oplogs/bson/vectored_insert.bson"), "rb") as f:
    for entry in bson.decode_file_iter(f):
        entry.pop("ui", None)
        for inner in entry["o"].get("applyOps", []):
            inner.pop("ui", None)
        reply = admin.command(SON([("applyOps", [entry]), ("bypassDocumentValidation", False)]))
        assert reply["applied"] == 1 and reply["results"] == [True], reply
raw = list(client.mongodump_test_db.get_collection("coll1", codec_options=bson.CodecOptions(document_class=RawBSONDocument)).find())
assert [r.raw for r in raw] == [bson.encode({"_id": 100, "a": 1}), bson.encode({"_id": 200, "a": 2})], raw

# The applied inserts were logged as ordinary entries.
logged = list(oplog.find({"ns": "mongodump_test_db.coll1", "op": "i"}))
assert [e["o"] for e in logged] == [{"_id": 100, "a": 1}, {"_id": 200, "a": 2}], logged

# Unknown op type: BadValue, nothing after it applied.
try:
    admin.command("applyOps", [{"op": "i", "ns": "py.items", "o": {"_id": 50}}, {"op": "q", "ns": "py.items"}, {"op": "i", "ns": "py.items", "o": {"_id": 51}}])
    raise AssertionError("unknown op accepted")
except OperationFailure as e:
    assert e.code == 2, e.details
    assert e.details["applied"] == 1 and e.details["results"] == [True, False], e.details
assert client.py.items.find_one({"_id": 50}) is not None
assert client.py.items.find_one({"_id": 51}) is None

print("OK")
