"""pymongo against a tidemark replica set (5 members: 3 electable, 1 hidden, 1 delayed by 1 s).

Usage: replset_pymongo.py <replica-set URI> <hidden host> <delayed host>
Checks follow the MongoDB manual: hello fields, replSetGetStatus/replSetGetConfig shapes, secondary reads,
w: "majority", NotWritablePrimary on secondaries, secondaryDelaySecs, replSetStepDown handover.
"""
import sys
import time

import pymongo
from bson import ObjectId
from pymongo import MongoClient, ReadPreference
from pymongo.errors import NotPrimaryError, OperationFailure
from pymongo.write_concern import WriteConcern

uri, hidden_host, delayed_host = sys.argv[1], sys.argv[2], sys.argv[3]


def wait(cond, what, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


client = MongoClient(uri, serverSelectionTimeoutMS=10000)
client.admin.command("ping")
wait(lambda: client.primary is not None and len(client.secondaries) == 2, "discovery of 1 primary + 2 secondaries")
primary = client.primary
assert hidden_host not in ["%s:%d" % h for h in client.nodes], "hidden members are not discovered"

hello = client.admin.command("hello")
assert hello["setName"] == "rs0", hello
assert hello["isWritablePrimary"] is True and hello["secondary"] is False, hello
assert len(hello["hosts"]) == 3, hello
assert "passives" not in hello, hello  # hidden members are in neither hosts nor passives
assert hello["me"] == hello["primary"], hello
assert isinstance(hello["electionId"], ObjectId) and str(hello["electionId"]).startswith("7fffffff"), hello
assert hello["topologyVersion"]["counter"] >= 0
assert "opTime" in hello["lastWrite"] and "majorityOpTime" in hello["lastWrite"], hello

cfg = client.admin.command("replSetGetConfig")["config"]
assert cfg["_id"] == "rs0" and len(cfg["members"]) == 5, cfg
by_host = {m["host"]: m for m in cfg["members"]}
assert by_host[hidden_host]["hidden"] is True and by_host[hidden_host]["priority"] == 0
assert by_host[delayed_host]["secondaryDelaySecs"] == 1 and by_host[delayed_host]["votes"] == 0

status = client.admin.command("replSetGetStatus")
assert status["set"] == "rs0" and status["myState"] == 1, status
states = sorted(m["stateStr"] for m in status["members"])
assert states == ["PRIMARY"] + ["SECONDARY"] * 4, states
assert sum(1 for m in status["members"] if m.get("self")) == 1
assert status["majorityVoteCount"] == 3 and status["votingMembersCount"] == 4, status

# w: majority, then a secondary read sees the document.
coll = client.app.get_collection("items", write_concern=WriteConcern(w="majority", wtimeout=10000))
written_at = time.time()
coll.insert_one({"_id": 1, "v": "x"})
sec = client.app.get_collection("items", read_preference=ReadPreference.SECONDARY)
assert wait(lambda: sec.find_one({"_id": 1}), "secondary read")["v"] == "x"

# The delayed member holds the write back for secondaryDelaySecs.
delayed = MongoClient(delayed_host, directConnection=True, readPreference="secondaryPreferred")
dh = delayed.admin.command("hello")
assert dh["hidden"] is True and dh["secondaryDelaySecs"] == 1 and dh["secondary"] is True, dh
if time.time() - written_at < 0.8:
    assert delayed.app.items.find_one({"_id": 1}) is None, "delayed member applied too early"
wait(lambda: delayed.app.items.find_one({"_id": 1}), "delayed member to apply")
assert time.time() - written_at >= 1.0, "delayed member applied before its delay"

# A direct connection to a secondary refuses writes with NotWritablePrimary (10107).
sec_host = "%s:%d" % sorted(client.secondaries)[0]
direct = MongoClient(sec_host, directConnection=True)
try:
    direct.app.items.insert_one({"_id": 2})
    raise AssertionError("write on a secondary succeeded")
except NotPrimaryError as e:
    assert e.details is None or e.details.get("code") == 10107, e.details
except OperationFailure as e:
    assert e.code == 10107, e.details

# replSetStepDown hands over; the client carries on with the new primary.
client.admin.command("replSetStepDown", 30)
wait(lambda: client.primary is not None and client.primary != primary, "a new primary")
for attempt in range(100):
    try:
        coll.insert_one({"_id": 3})
        break
    except (NotPrimaryError, pymongo.errors.AutoReconnect):
        time.sleep(0.05)
assert coll.count_documents({}) == 2
print("ok")
