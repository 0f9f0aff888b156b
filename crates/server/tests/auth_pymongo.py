"""pymongo against tidemark-server --auth: SCRAM logins, error codes and stored user shape.

Usage: python3 auth_pymongo.py <port>. Prints "OK" on success; any failed check raises.
"""

import base64
import hashlib
import hmac
import os
import sys

from bson.binary import Binary
from pymongo import MongoClient
from pymongo.errors import OperationFailure

URI = f"mongodb://127.0.0.1:{int(sys.argv[1])}/"


def client(**kw):
    return MongoClient(URI, serverSelectionTimeoutMS=5000, connectTimeoutMS=5000, **kw)


def expect_code(code, fn):
    try:
        fn()
    except OperationFailure as e:
        assert e.code == code, f"expected code {code}, got {e.code}: {e}"
        return e
    raise AssertionError(f"expected OperationFailure {code}")


anon = client()
# Handshake commands work unauthenticated; data commands do not.
anon.admin.command("ping")
e = expect_code(13, lambda: anon.app.c.find_one())
assert "requires authentication" in str(e), e

# Localhost exception: the first user, then closed.
anon.admin.command("createUser", "root", pwd="rootpw", roles=["root"])
expect_code(13, lambda: anon.admin.command("createUser", "second", pwd="pw", roles=["root"]))

root = client(username="root", password="rootpw", authSource="admin", authMechanism="SCRAM-SHA-256")
assert root.admin.command("getParameter", 1, authSchemaVersion=1)["authSchemaVersion"] == 5
root.app.command("createUser", "reader", pwd="readpw", roles=["read"])
root.app.command("createUser", "writer", pwd="writepw", roles=["readWrite"])
# RFC 4013: SOFT HYPHEN maps to nothing, so for SCRAM-SHA-256 "I\u00adX" and "IX" are the same password.
root.app.command("createUser", "prepped", pwd="I\u00adX", roles=["read"], mechanisms=["SCRAM-SHA-256"])

for mech in ("SCRAM-SHA-1", "SCRAM-SHA-256"):
    w = client(username="writer", password="writepw", authSource="app", authMechanism=mech)
    w.app.c.insert_one({"mech": mech})
    status = w.app.command("connectionStatus")
    assert status["authInfo"]["authenticatedUsers"] == [{"user": "writer", "db": "app"}], status
    bad = client(username="writer", password="wrong", authSource="app", authMechanism=mech)
    expect_code(18, lambda: bad.app.command("ping"))
# User names with ',' and '=' travel escaped as '=2C' / '=3D' inside SCRAM messages (RFC 5802 5.1).
root.app.command("createUser", "we=ird,name", pwd="pw", roles=["read"])
for mech in ("SCRAM-SHA-1", "SCRAM-SHA-256"):
    client(username="we=ird,name", password="pw", authSource="app", authMechanism=mech).app.c.find_one()
# Mechanism negotiated from saslSupportedMechs.
client(username="writer", password="writepw", authSource="app").app.command("ping")
client(username="prepped", password="IX", authSource="app", authMechanism="SCRAM-SHA-256").app.c.find_one()
expect_code(18, lambda: client(username="nobody", password="x", authSource="app").app.command("ping"))

reader = client(username="reader", password="readpw", authSource="app")
assert reader.app.c.count_documents({}) == 2
e = expect_code(13, lambda: reader.app.c.insert_one({"x": 1}))
assert "not authorized on app to execute command" in str(e), e

# Stored shape, as mongodump would read it.
info = root.app.command("usersInfo", "writer", showCredentials=True)["users"][0]
assert info["_id"] == "app.writer" and info["user"] == "writer" and info["db"] == "app", info
assert info["roles"] == [{"role": "readWrite", "db": "app"}], info
assert sorted(info["mechanisms"]) == ["SCRAM-SHA-1", "SCRAM-SHA-256"], info
assert info["credentials"]["SCRAM-SHA-1"]["iterationCount"] == 10000, info
assert info["credentials"]["SCRAM-SHA-256"]["iterationCount"] == 15000, info
raw = root.admin["system.users"].find_one({"_id": "app.writer"})
assert raw["userId"].subtype == 4, raw
assert list(raw.keys()) == ["_id", "userId", "user", "db", "credentials", "roles"], list(raw.keys())



def manual_scram(c, db, user, password, mech, skip_empty, speculative):
    """A SCRAM client written from RFC 5802/7677 with hashlib, independent of the server's code."""
    algo = "sha256" if mech == "SCRAM-SHA-256" else "sha1"
    pwd = password if algo == "sha256" else hashlib.md5(f"{user}:mongo:{password}".encode()).hexdigest()
    cnonce = base64.b64encode(os.urandom(24)).decode()
    first_bare = f"n={user},r={cnonce}"
    start = {"saslStart": 1, "mechanism": mech, "payload": Binary(("n,," + first_bare).encode())}
    if skip_empty:
        start["options"] = {"skipEmptyExchange": True}
    if speculative:
        reply = c.admin.command(
            {"hello": 1, "saslSupportedMechs": f"{db}.{user}", "speculativeAuthenticate": dict(start, db=db)}
        )
        assert mech in reply["saslSupportedMechs"], reply
        r = reply["speculativeAuthenticate"]
    else:
        r = c[db].command(start)
    assert r["done"] is False, r
    server_first = r["payload"].decode()
    fields = dict(kv.split("=", 1) for kv in server_first.split(","))
    assert fields["r"].startswith(cnonce) and len(fields["r"]) > len(cnonce), server_first
    assert int(fields["i"]) == (15000 if algo == "sha256" else 10000), server_first
    salted = hashlib.pbkdf2_hmac(algo, pwd.encode(), base64.b64decode(fields["s"]), int(fields["i"]))
    client_key = hmac.new(salted, b"Client Key", algo).digest()
    stored_key = hashlib.new(algo, client_key).digest()
    without_proof = f"c=biws,r={fields['r']}"
    auth_message = f"{first_bare},{server_first},{without_proof}".encode()
    signature = hmac.new(stored_key, auth_message, algo).digest()
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature))).decode()
    if speculative and not skip_empty:
        # A wrong conversation id is a ProtocolError and ends the conversation: start again.
        bad = {"saslContinue": 1, "conversationId": r["conversationId"] + 7, "payload": Binary(b"x")}
        expect_code(17, lambda: c[db].command(bad))
        return manual_scram(c, db, user, password, mech, skip_empty, False)
    r2 = c[db].command(
        {"saslContinue": 1, "conversationId": r["conversationId"], "payload": Binary(f"{without_proof},p={proof}".encode())}
    )
    server_key = hmac.new(salted, b"Server Key", algo).digest()
    expected_v = "v=" + base64.b64encode(hmac.new(server_key, auth_message, algo).digest()).decode()
    assert r2["payload"].decode() == expected_v, r2
    if skip_empty:
        assert r2["done"] is True, r2
    else:
        assert r2["done"] is False, r2
        # Not authenticated until the empty exchange completes.
        assert c.admin.command("connectionStatus")["authInfo"]["authenticatedUsers"] == []
        r3 = c[db].command({"saslContinue": 1, "conversationId": r["conversationId"], "payload": Binary(b"")})
        assert r3["done"] is True, r3
    status = c.admin.command("connectionStatus")
    assert status["authInfo"]["authenticatedUsers"] == [{"user": user, "db": db}], status


for mech in ("SCRAM-SHA-1", "SCRAM-SHA-256"):
    for skip_empty in (True, False):
        for speculative in (True, False):
            # One pooled connection, so the whole conversation happens on the same socket.
            single = client(maxPoolSize=1)
            manual_scram(single, "app", "writer", "writepw", mech, skip_empty, speculative)
            single.app.c.find_one()
            single.close()

root.app.command("dropUser", "reader")
expect_code(11, lambda: root.app.command("dropUser", "reader"))
print("OK")
