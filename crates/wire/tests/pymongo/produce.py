"""Builds wire messages with pymongo (its own OP_MSG/OP_COMPRESSED encoders) and with struct +
bson.encode straight from the documented layouts; prints one JSON object per message with the
bytes and the documents the receiver must see."""
import json
import struct
import sys

import bson
from bson.codec_options import CodecOptions
from pymongo import message
from pymongo.compression_support import ZlibContext

OPTS = CodecOptions()


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def emit(name, request_id, data, body, sequences=None, compressor=None, flags=0):
    print(json.dumps({
        "name": name,
        "request_id": request_id,
        "hex": bytes(data).hex(),
        "body": bson.encode(body).hex(),
        "sequences": {k: [bson.encode(d).hex() for d in v] for k, v in (sequences or {}).items()},
        "compressor": compressor,
        "flags": flags,
    }))


docs = [{"_id": i, "name": "doc-%d" % i, "tags": ["a", "b"], "n": {"x": i * 1.5}} for i in range(5)]

rid, data, _, _ = message._op_msg(0, {"ping": 1}, "admin", None, OPTS)
emit("pymongo ping", rid, data, {"ping": 1, "$db": "admin"})

command = {"insert": "coll", "ordered": True, "documents": docs}
rid, data, _, _ = message._op_msg(0, command, "db1", None, OPTS)
emit("pymongo insert", rid, data, {"insert": "coll", "ordered": True, "$db": "db1"}, {"documents": docs})

command = {"insert": "coll", "ordered": False, "documents": docs}
rid, data, _, _ = message._op_msg(0, command, "db1", None, OPTS, ZlibContext(6))
emit("pymongo insert zlib", rid, data, {"insert": "coll", "ordered": False, "$db": "db1"}, {"documents": docs},
     compressor="zlib")

# Hand-built with struct and bson.encode: sequence before body, checksum present, exhaustAllowed.
body = {"getMore": bson.Int64(7), "collection": "c", "$db": "d"}
seq_payload = b"updates\x00" + b"".join(bson.encode(d) for d in docs[:2])
sections = b"\x01" + struct.pack("<i", 4 + len(seq_payload)) + seq_payload + b"\x00" + bson.encode(body)
flags = 1 | (1 << 16)
payload = struct.pack("<I", flags) + sections
total = 16 + len(payload) + 4
msg = struct.pack("<iiii", total, 1234, 0, 2013) + payload
msg += struct.pack("<I", crc32c(msg))
emit("struct checksum", 1234, msg, body, {"updates": docs[:2]}, flags=flags)

sys.stdout.flush()
