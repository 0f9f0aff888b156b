"""Reads hex-encoded messages (one per line) produced by the Rust encoders and parses them with
pymongo's reply reader (decompress + _OpMsg.unpack) or, for layouts pymongo does not read
(document sequences, OP_REPLY), with struct following the documented layouts. Prints one JSON
object per message."""
import json
import struct
import sys

import bson
from pymongo.compression_support import decompress
from pymongo.message import _OpMsg

for line in sys.stdin:
    data = bytes.fromhex(line.strip())
    length, request_id, response_to, op_code = struct.unpack_from("<iiii", data)
    assert length == len(data), (length, len(data))
    out = {"request_id": request_id, "response_to": response_to, "op_code": op_code}
    rest = data[16:]
    if op_code == 2012:
        op_code, size, compressor_id = struct.unpack_from("<iiB", rest)
        rest = decompress(rest[9:], compressor_id, 48000000)
        assert len(rest) == size
        out["compressor_id"] = compressor_id
    if op_code == 2013:
        flags = struct.unpack_from("<I", rest)[0]
        if rest[4] == 0 and len(rest) == 5 + struct.unpack_from("<i", rest, 5)[0]:
            reply = _OpMsg.unpack(rest)  # pymongo's own OP_MSG reply parser
            out["docs"] = [bson.encode(d).hex() for d in reply.unpack_response()]
        else:
            pos, docs, seqs = 4, [], {}
            while pos < len(rest):
                kind = rest[pos]
                pos += 1
                if kind == 0:
                    (n,) = struct.unpack_from("<i", rest, pos)
                    docs.append(bson.encode(bson.decode(rest[pos:pos + n])).hex())
                    pos += n
                else:
                    (n,) = struct.unpack_from("<i", rest, pos)
                    section = rest[pos + 4:pos + n]
                    ident, _, seq = section.partition(b"\x00")
                    seqs[ident.decode()] = [bson.encode(d).hex() for d in bson.decode_all(seq)]
                    pos += n
            out["docs"] = docs
            out["sequences"] = seqs
        out["flags"] = flags
    elif op_code == 1:
        flags, cursor_id, starting_from, number_returned = struct.unpack_from("<iqii", rest)
        docs = bson.decode_all(rest[20:])
        assert len(docs) == number_returned
        out.update(flags=flags, cursor_id=cursor_id, starting_from=starting_from,
                   docs=[bson.encode(d).hex() for d in docs])
    print(json.dumps(out))
