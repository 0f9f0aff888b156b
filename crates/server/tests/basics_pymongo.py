"""Basic behaviour of tidemark-server seen through pymongo (an independent driver and BSON codec).

Usage: basics_pymongo.py PORT. Prints OK on success; any failed check raises.
"""
import sys

import bson
import pymongo
from bson import ObjectId, SON
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

port = int(sys.argv[1])
client = pymongo.MongoClient(f"mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=5000, compressors="zlib")
client.drop_database("py")
db = client.py

# Handshake facts drivers rely on.
hello = client.admin.command("hello")
assert hello["isWritablePrimary"] is True
assert hello["maxWireVersion"] == 21 and hello["minWireVersion"] == 0
assert hello["maxBsonObjectSize"] == 16 * 1024 * 1024
info = client.server_info()
assert info["version"].startswith("7.0."), info["version"]
assert info["versionArray"][:2] == [7, 0]
assert client.admin.command("ping")["ok"] == 1.0
fcv = client.admin.command({"getParameter": 1, "featureCompatibilityVersion": 1})
assert fcv["featureCompatibilityVersion"]["version"] == "7.0"

# Inserts: generated _id placed first; field order and types preserved.
c = db.items
res = c.insert_one(SON([("b", 1), ("a", bson.Int64(2)), ("c", 1.5)]))
assert isinstance(res.inserted_id, ObjectId)
raw = c.find_one({}, )
assert list(raw.keys()) == ["_id", "b", "a", "c"], list(raw.keys())
assert isinstance(raw["a"], bson.Int64)
# An explicit _id that is not first is moved first, as mongod does.
c.insert_one(SON([("x", 1), ("_id", "k1")]))
assert list(c.find_one({"_id": "k1"}).keys()) == ["_id", "x"]

# Many documents across batches (zlib-compressed traffic).
c.insert_many([{"_id": i, "v": i % 5} for i in range(1000)])
assert c.count_documents({}) == 1002
assert c.estimated_document_count() == 1002
seen = [d["_id"] for d in c.find({"v": {"$exists": True}}).batch_size(50)]
assert seen == list(range(1000))
assert [d["_id"] for d in c.find({"v": 3}).sort("_id", -1).limit(3)] == [998, 993, 988]
assert sorted(c.distinct("v")) == [0, 1, 2, 3, 4]

# Updates and upserts.
r = c.update_many({"v": 0}, {"$set": {"zero": True}})
assert (r.matched_count, r.modified_count) == (200, 200)
r = c.update_one({"_id": "new"}, {"$set": {"n": 1}}, upsert=True)
assert r.upserted_id == "new" and r.matched_count == 0
r = c.replace_one({"_id": "new"}, {"n": 2})
assert r.modified_count == 1 and c.find_one({"_id": "new"}) == {"_id": "new", "n": 2}

# Duplicate keys.
try:
    c.insert_one({"_id": 5})
    raise AssertionError("duplicate _id accepted")
except DuplicateKeyError as e:
    assert e.code == 11000
    assert e.details["keyValue"] == {"_id": 5}
c.create_index([("email", pymongo.ASCENDING)], unique=True, sparse=True)
c.insert_one({"_id": "e1", "email": "a@b"})
try:
    c.insert_many([{"_id": "e2", "email": "z"}, {"_id": "e3", "email": "a@b"}, {"_id": "e4"}], ordered=False)
    raise AssertionError("duplicate email accepted")
except BulkWriteError as e:
    assert e.details["nInserted"] == 2
    assert [w["code"] for w in e.details["writeErrors"]] == [11000]
    assert e.details["writeErrors"][0]["index"] == 1

# Deletes.
assert c.delete_many({"v": 4}).deleted_count == 200
assert c.delete_one({"_id": "e1"}).deleted_count == 1

# Indexes listed as created, _id_ first.
names = [ix["name"] for ix in c.list_indexes()]
assert names == ["_id_", "email_1"], names

# Errors.
try:
    db.command("noSuchCommand")
    raise AssertionError("unknown command accepted")
except OperationFailure as e:
    assert e.code == 59 and "no such command: 'noSuchCommand'" in str(e)
try:
    db.command("collStats", "absent")
    raise AssertionError("collStats on a missing collection succeeded")
except OperationFailure as e:
    assert e.code == 26
try:
    db.command({"insert": "bad$name", "documents": [{}]})
    raise AssertionError("invalid namespace accepted")
except OperationFailure as e:
    assert e.code == 73

# Capped rollover and listCollections.
db.create_collection("cap", capped=True, size=4096, max=2)
for i in range(4):
    db.cap.insert_one({"_id": i})
assert [d["_id"] for d in db.cap.find()] == [2, 3]
opts = db.cap.options()
assert opts["capped"] is True and opts["max"] == 2
colls = {x["name"]: x for x in db.list_collections()}
assert colls["items"]["type"] == "collection"
assert colls["items"]["info"]["readOnly"] is False

# Views.
db.command("create", "zeros", viewOn="items", pipeline=[{"$match": {"v": 0}}])
assert db.zeros.count_documents({}) == 200
assert db.zeros.find_one({"_id": 5})["zero"] is True

# dbHash: MD5 over each collection's documents in _id order, then over the per-collection hex digests.
import hashlib
h = client.hashdb
h.drop_collection("a")
docs = [SON([("_id", i), ("v", "x" * i)]) for i in (5, 1, 3, 2, 4)]
h.a.insert_many(docs)
expected = hashlib.md5(b"".join(bson.encode(d) for d in sorted(docs, key=lambda d: d["_id"]))).hexdigest()
res = h.command("dbHash")
assert res["collections"] == {"a": expected}, res
assert res["md5"] == hashlib.md5(expected.encode()).hexdigest()
v = h.command("validate", "a")
assert v["valid"] is True and v["nrecords"] == 5
client.drop_database("hashdb")

client.drop_database("py")
assert "py" not in client.list_database_names()
print("OK")
