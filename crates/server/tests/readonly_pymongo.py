"""Writes of every kind against a read-only server (mongod's --queryableBackupMode), through pymongo.

Usage: readonly_pymongo.py PORT DB COLLECTION. The collection exists and holds documents. mongod in
read-only mode refuses writes with IllegalOperation (20), "Cannot execute a write operation in
read-only mode"; reads work. Prints OK on success; any failed check raises.
"""
import sys

import pymongo
from pymongo import InsertOne, UpdateOne
from pymongo.errors import BulkWriteError, OperationFailure

port, db_name, coll_name = int(sys.argv[1]), sys.argv[2], sys.argv[3]
client = pymongo.MongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true", serverSelectionTimeoutMS=5000)
db = client[db_name]
coll = db[coll_name]

assert client.admin.command("hello")["readOnly"] is True
before = sorted(map(repr, coll.find()))
assert before, "the collection should hold documents"
first_id = coll.find_one()["_id"]

writes = {
    "insert_one": lambda: coll.insert_one({"x": 1}),
    "insert_many": lambda: coll.insert_many([{"x": 1}, {"x": 2}]),
    "update_one": lambda: coll.update_one({"_id": first_id}, {"$set": {"changed": True}}),
    "update_many": lambda: coll.update_many({}, {"$set": {"changed": True}}),
    "replace_one": lambda: coll.replace_one({"_id": first_id}, {"replaced": True}),
    "upsert": lambda: coll.update_one({"_id": "new"}, {"$set": {"a": 1}}, upsert=True),
    "delete_one": lambda: coll.delete_one({"_id": first_id}),
    "delete_many": lambda: coll.delete_many({}),
    "find_one_and_update": lambda: coll.find_one_and_update({"_id": first_id}, {"$set": {"a": 1}}),
    "find_one_and_delete": lambda: coll.find_one_and_delete({"_id": first_id}),
    "bulk_write": lambda: coll.bulk_write([InsertOne({"x": 1}), UpdateOne({}, {"$set": {"y": 1}})]),
    "create_collection": lambda: db.create_collection("brand_new"),
    "create_view": lambda: db.command("create", "brand_new_view", viewOn=coll_name, pipeline=[]),
    "drop_collection": lambda: db.command("drop", coll_name),
    "drop_database": lambda: db.command("dropDatabase"),
    "create_index": lambda: coll.create_index([("x", 1)]),
    "drop_indexes": lambda: db.command("dropIndexes", coll_name, index="*"),
    "rename": lambda: client.admin.command("renameCollection", f"{db_name}.{coll_name}", to=f"{db_name}.renamed"),
    "coll_mod": lambda: db.command("collMod", coll_name, validator={"x": {"$exists": True}}),
    "aggregate_out": lambda: list(coll.aggregate([{"$match": {}}, {"$out": "copy"}])),
    "aggregate_merge": lambda: list(coll.aggregate([{"$merge": {"into": "copy"}}])),
    "create_user": lambda: db.command("createUser", "eve", pwd="pw", roles=[]),
    "apply_ops": lambda: client.admin.command(
        "applyOps", [{"op": "i", "ns": f"{db_name}.{coll_name}", "o": {"_id": "applied"}}]
    ),
}
for name, write in writes.items():
    try:
        write()
    except BulkWriteError as e:
        codes = [w["code"] for w in e.details.get("writeErrors", [])]
        raise AssertionError(f"{name}: expected a command error, got write errors {codes}") from e
    except OperationFailure as e:
        assert e.code == 20, f"{name}: code {e.code} ({e.details})"
        assert e.details.get("codeName") == "IllegalOperation", f"{name}: {e.details}"
        assert "Cannot execute a write operation in read-only mode" in str(e), f"{name}: {e}"
    else:
        raise AssertionError(f"{name}: the write was accepted")

# Nothing changed, and reads of every kind still work.
assert sorted(map(repr, coll.find())) == before
assert coll.count_documents({}) == len(before)
assert list(coll.aggregate([{"$count": "n"}]))[0]["n"] == len(before)
assert coll_name in db.list_collection_names()
assert "brand_new" not in db.list_collection_names()
print("OK")
