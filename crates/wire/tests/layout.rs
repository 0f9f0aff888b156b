//! Messages assembled byte by byte from the layouts in the MongoDB wire protocol reference and
//! the OP_MSG specification, decoded with the crate; and the crate's encoders checked against
//! the same layouts.

mod common;

use std::io::Read;

use bson::{Document, doc, rawdoc};
use bytes::BytesMut;
use common::*;
use tidemark_wire::*;

const MAX: usize = DEFAULT_MAX_MESSAGE_SIZE;

fn decode_all(bytes: &[u8]) -> Result<Option<Decoded>, WireError> {
    let mut buf = BytesMut::from(bytes);
    let out = decode(&mut buf, MAX);
    if matches!(out, Ok(Some(_))) {
        assert!(buf.is_empty(), "decode must consume exactly one message");
    }
    out
}

fn expect_msg(bytes: &[u8]) -> (MessageHeader, OpMsg, Option<Compressor>) {
    let d = decode_all(bytes).unwrap().expect("complete message");
    match d.message {
        Message::Msg(m) => (d.header, m, d.compressor),
        other => panic!("expected OP_MSG, got {other:?}"),
    }
}

/// The insert example of the OP_MSG specification ("Command Arguments As Payload").
fn spec_insert() -> (Document, Vec<Document>) {
    let body = doc! { "insert": "collectionName", "$db": "databaseName", "writeConcern": { "w": "majority" } };
    let docs = (1..=3)
        .map(|i| doc! { "_id": format!("Document#{i}"), "example": i })
        .collect();
    (body, docs)
}

#[test]
fn crc32c_reference_value() {
    // The CRC-32C check value ("123456789" -> 0xE3069283, RFC 3720 / CRC catalogue); pins the
    // test helper used to build checksummed messages below.
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
}

#[test]
fn op_msg_body_only() {
    let body = doc! { "ping": 1, "$db": "admin" };
    let bytes = op_msg(42, 0, &[section_body(&body)]);
    let (header, msg, compressor) = expect_msg(&bytes);
    assert_eq!(
        header,
        MessageHeader {
            message_length: i32::try_from(bytes.len()).unwrap(),
            request_id: 42,
            response_to: 0,
            op_code: 2013
        }
    );
    assert_eq!(msg.flags, 0);
    assert_eq!(msg.body.to_document().unwrap(), body);
    assert!(msg.sequences.is_empty());
    assert_eq!(compressor, None);
    // The encoder produces exactly the documented layout.
    assert_eq!(encode_op_msg(42, 0, &msg, None).unwrap(), bytes);
    // And so does the prefix sent before a body that is not copied.
    let mut parts = op_msg_body_prefix(42, 0, msg.body.as_bytes().len()).unwrap().to_vec();
    parts.extend_from_slice(msg.body.as_bytes());
    assert_eq!(parts, bytes);
}

#[test]
fn op_msg_with_document_sequence_in_either_order() {
    let (body, docs) = spec_insert();
    let body_first = op_msg(1, 0, &[section_body(&body), section_sequence("documents", &docs)]);
    let sequence_first = op_msg(1, 0, &[section_sequence("documents", &docs), section_body(&body)]);
    let (_, a, _) = expect_msg(&body_first);
    let (_, b, _) = expect_msg(&sequence_first);
    assert_eq!(a, b, "sections may come in any order");
    assert_eq!(a.body.to_document().unwrap(), body);
    assert_eq!(a.sequences.len(), 1);
    assert_eq!(a.sequences[0].identifier, "documents");
    let decoded_docs: Vec<Document> = a.sequences[0]
        .documents
        .iter()
        .map(|d| d.to_document().unwrap())
        .collect();
    assert_eq!(decoded_docs, docs);
    assert_eq!(encode_op_msg(1, 0, &a, None).unwrap(), body_first);
    // Merged the way the server reads it.
    let merged = a.command_document().unwrap().to_document().unwrap();
    let mut expected = body.clone();
    expected.insert(
        "documents",
        docs.iter().cloned().map(bson::Bson::Document).collect::<Vec<_>>(),
    );
    assert_eq!(merged, expected);
}

#[test]
fn op_msg_with_several_sequences_and_empty_sequence() {
    let body = doc! { "update": "c", "$db": "d" };
    let updates = vec![doc! { "q": { "example": 1 }, "u": { "$set": { "example": 4 } } }];
    let bytes = op_msg(
        3,
        0,
        &[
            section_body(&body),
            section_sequence("updates", &updates),
            section_sequence("other", &[]),
        ],
    );
    let (_, msg, _) = expect_msg(&bytes);
    assert_eq!(msg.sequence("updates").unwrap().documents.len(), 1);
    assert!(msg.sequence("other").unwrap().documents.is_empty());
    assert_eq!(encode_op_msg(3, 0, &msg, None).unwrap(), bytes);
}

#[test]
fn op_msg_checksum_verified_and_produced() {
    let (body, docs) = spec_insert();
    let bytes = op_msg(
        9,
        FLAG_CHECKSUM_PRESENT,
        &[section_body(&body), section_sequence("documents", &docs)],
    );
    let (_, msg, _) = expect_msg(&bytes);
    assert_eq!(msg.flags, FLAG_CHECKSUM_PRESENT);
    assert_eq!(msg.sequences[0].documents.len(), 3);
    // The encoder appends the same CRC-32C the reference helper computed.
    assert_eq!(encode_op_msg(9, 0, &msg, None).unwrap(), bytes);
}

#[test]
fn corrupted_checksum_is_rejected() {
    let body = doc! { "ping": 1, "$db": "admin" };
    let good = op_msg(9, FLAG_CHECKSUM_PRESENT, &[section_body(&body)]);
    // A flipped bit in the body, in the header, and in the checksum itself.
    for index in [30, 5, good.len() - 1] {
        let mut bad = good.clone();
        bad[index] ^= 0x04;
        let err = decode_all(&bad).unwrap_err();
        assert!(matches!(err, WireError::ChecksumMismatch { .. }), "byte {index}: {err}");
    }
}

#[test]
fn checksum_flag_without_room_for_checksum() {
    // flagBits says a checksum follows, but the message ends right after the flags.
    let bytes = message(1, 0, 2013, &1u32.to_le_bytes());
    assert!(matches!(decode_all(&bytes), Err(WireError::Truncated { .. })));
}

#[test]
fn flag_bits() {
    let body = section_body(&doc! { "hello": 1, "$db": "admin" });
    // moreToCome and exhaustAllowed are defined; bit 17 is an undefined optional bit (ignored).
    for flags in [FLAG_MORE_TO_COME, FLAG_EXHAUST_ALLOWED, 1 << 17] {
        let (_, msg, _) = expect_msg(&op_msg(1, flags, std::slice::from_ref(&body)));
        assert_eq!(msg.flags, flags);
        assert_eq!(msg.more_to_come(), flags == FLAG_MORE_TO_COME);
        assert_eq!(msg.exhaust_allowed(), flags == FLAG_EXHAUST_ALLOWED);
    }
    // Undefined required bits (2..=15) are errors.
    for bit in 2..16 {
        let err = decode_all(&op_msg(1, 1 << bit, std::slice::from_ref(&body))).unwrap_err();
        assert!(
            matches!(err, WireError::UnknownRequiredFlags { unknown, .. } if unknown == 1 << bit),
            "{err}"
        );
    }
}

#[test]
fn section_structure_errors() {
    let body = section_body(&doc! { "ping": 1, "$db": "admin" });
    // Payload type 2 (internal to the server) and anything else are errors naming the offset.
    let mut kind2 = body.clone();
    kind2[0] = 2;
    let err = decode_all(&op_msg(1, 0, &[body.clone(), kind2])).unwrap_err();
    let offset = 20 + body.len();
    assert!(
        matches!(err, WireError::BadSectionKind { kind: 2, offset: o } if o == offset),
        "{err}"
    );
    // No body at all.
    let err = decode_all(&op_msg(1, 0, &[section_sequence("documents", &[doc! {}])])).unwrap_err();
    assert!(err.to_string().contains("no payload type 0 section"), "{err}");
    let err = decode_all(&op_msg(1, 0, &[])).unwrap_err();
    assert!(err.to_string().contains("no payload type 0 section"), "{err}");
    // Two bodies.
    let err = decode_all(&op_msg(1, 0, &[body.clone(), body.clone()])).unwrap_err();
    assert!(err.to_string().contains("exactly one body"), "{err}");
    // Identifiers are unique per message.
    let seq = section_sequence("documents", &[doc! { "a": 1 }]);
    let err = decode_all(&op_msg(1, 0, &[body.clone(), seq.clone(), seq.clone()])).unwrap_err();
    assert!(err.to_string().contains("appears twice"), "{err}");
}

#[test]
fn sequence_size_errors() {
    let body = section_body(&doc! { "insert": "c", "$db": "d" });
    let good = section_sequence("documents", &[doc! { "a": 1 }, doc! { "b": 2 }]);
    // Size smaller than size field + identifier terminator.
    let mut tiny = good.clone();
    tiny[1..5].copy_from_slice(&4i32.to_le_bytes());
    assert!(matches!(
        decode_all(&op_msg(1, 0, &[body.clone(), tiny])),
        Err(WireError::Malformed { .. })
    ));
    // Negative size.
    let mut negative = good.clone();
    negative[1..5].copy_from_slice(&(-10i32).to_le_bytes());
    assert!(matches!(
        decode_all(&op_msg(1, 0, &[body.clone(), negative])),
        Err(WireError::Malformed { .. })
    ));
    // Size running past the end of the message.
    let mut long = good.clone();
    let size = i32::from_le_bytes(long[1..5].try_into().unwrap());
    long[1..5].copy_from_slice(&(size + 1).to_le_bytes());
    assert!(matches!(
        decode_all(&op_msg(1, 0, &[body.clone(), long])),
        Err(WireError::Truncated { .. })
    ));
    // Size one byte short: the last document overruns the section.
    let mut short = good.clone();
    short[1..5].copy_from_slice(&(size - 1).to_le_bytes());
    let err = decode_all(&op_msg(1, 0, &[short, body.clone()])).unwrap_err();
    assert!(
        err.to_string().contains("document 1 of sequence \"documents\""),
        "{err}"
    );
    // Identifier without terminator inside the section.
    let mut raw_section = vec![1u8];
    raw_section.extend_from_slice(&7i32.to_le_bytes());
    raw_section.extend_from_slice(b"abc");
    let err = decode_all(&op_msg(1, 0, &[body.clone(), raw_section])).unwrap_err();
    assert!(err.to_string().contains("identifier"), "{err}");
}

#[test]
fn invalid_bson_inside_documents() {
    // A body whose length prefix says 5 but ends with a non-NUL byte.
    let err = decode_all(&op_msg(1, 0, &[vec![0, 5, 0, 0, 0, 1]])).unwrap_err();
    assert!(err.to_string().contains("NUL"), "{err}");
    // A body with a string element whose length runs past the document.
    let mut bad = bson_bytes(&doc! { "s": "abc" });
    bad[7] = 0x40; // string length field of "s"
    let mut section = vec![0u8];
    section.extend_from_slice(&bad);
    let err = decode_all(&op_msg(1, 0, &[section])).unwrap_err();
    assert!(matches!(err, WireError::InvalidDocument { offset: 21, .. }), "{err}");
}

#[test]
fn message_length_checks() {
    // Below the header size, and negative.
    for len in [15i32, 0, -1, i32::MIN] {
        let mut buf = BytesMut::from(&len.to_le_bytes()[..]);
        let err = decode(&mut buf, MAX).unwrap_err();
        assert!(matches!(err, WireError::InvalidMessageLength { .. }) && err.is_framing_error());
        assert_eq!(buf.len(), 4, "an unframeable stream is left untouched");
    }
    // Above the maximum: rejected from the first four bytes, before the rest arrives.
    let mut buf = BytesMut::from(&48_000_001i32.to_le_bytes()[..]);
    let err = decode(&mut buf, MAX).unwrap_err();
    assert_eq!(
        err.to_string(),
        "messageLength is 48000001 bytes, above the maximum of 48000000 bytes"
    );
    assert!(err.is_framing_error());
    assert_eq!(buf.len(), 4);
    // A custom maximum applies too, including to the decompressed size.
    let body = section_body(&doc! { "ping": 1, "$db": "admin", "pad": "x".repeat(100) });
    let bytes = op_msg(1, 0, &[body]);
    let mut buf = BytesMut::from(&bytes[..]);
    assert!(matches!(
        decode(&mut buf, bytes.len() - 1),
        Err(WireError::TooLarge { .. })
    ));
    let msg = OpMsg::new(rawdoc! { "ping": 1, "$db": "admin", "pad": "x".repeat(1000) });
    let compressed = encode_op_msg(1, 0, &msg, Some(&Compressor::Zlib { level: None })).unwrap();
    assert!(compressed.len() < 200);
    let err = decode_message(&compressed, 500).unwrap_err();
    assert!(err.to_string().contains("uncompressedSize plus header"), "{err}");
}

#[test]
fn incomplete_messages_wait_for_more_bytes() {
    let bytes = op_msg(1, 0, &[section_body(&doc! { "ping": 1, "$db": "admin" })]);
    for cut in [0, 1, 3, 4, 15, 16, bytes.len() - 1] {
        let mut buf = BytesMut::from(&bytes[..cut]);
        assert!(decode(&mut buf, MAX).unwrap().is_none(), "cut at {cut}");
        assert_eq!(buf.len(), cut, "nothing consumed while incomplete");
    }
}

#[test]
fn unsupported_opcodes_are_named_and_consumed() {
    let insert = message(5, 0, 2002, &[0; 8]);
    let ping = op_msg(6, 0, &[section_body(&doc! { "ping": 1, "$db": "admin" })]);
    let mut buf = BytesMut::from(&[insert.clone(), ping].concat()[..]);
    let err = decode(&mut buf, MAX).unwrap_err();
    assert!(err.to_string().contains("unsupported opCode 2002 (OP_INSERT)"), "{err}");
    assert!(!err.is_framing_error());
    // The bad message was removed; the next one decodes.
    let next = decode(&mut buf, MAX).unwrap().unwrap();
    assert_eq!(next.header.request_id, 6);
    // OP_REPLY is not a request either.
    let err = decode_all(&message(1, 0, 1, &[0; 20])).unwrap_err();
    assert!(err.to_string().contains("OP_REPLY"), "{err}");
}

/// The handshake of FORMATS.md section 3.0: legacy OP_QUERY to `admin.$cmd`, flags 0,
/// numberToSkip 0, numberToReturn -1, query `{isMaster: 1, helloOk: true, ...}`.
#[test]
fn op_query_is_master_handshake() {
    let query = doc! {
        "isMaster": 1,
        "helloOk": true,
        "backpressure": true,
        "compression": ["zstd", "zlib"],
        "client": {
            "application": { "name": "mongodump" },
            "driver": { "name": "mongo-go-driver", "version": "v2.2.0" },
            "os": { "type": "linux", "architecture": "amd64" },
            "platform": "go1.24.0",
        },
    };
    let mut payload = Vec::new();
    payload.extend_from_slice(&0i32.to_le_bytes()); // flags
    payload.extend_from_slice(b"admin.$cmd\0"); // fullCollectionName
    payload.extend_from_slice(&0i32.to_le_bytes()); // numberToSkip
    payload.extend_from_slice(&(-1i32).to_le_bytes()); // numberToReturn
    payload.extend_from_slice(&bson_bytes(&query));
    let bytes = message(1, 0, 2004, &payload);
    let decoded = decode_all(&bytes).unwrap().unwrap();
    assert_eq!(decoded.header.op_code, OP_QUERY);
    let Message::Query(q) = decoded.message else {
        panic!("expected OP_QUERY")
    };
    assert_eq!(q.flags, 0);
    assert_eq!(q.full_collection_name, "admin.$cmd");
    assert_eq!(q.database(), "admin");
    assert!(q.is_command());
    assert_eq!(q.number_to_skip, 0);
    assert_eq!(q.number_to_return, -1);
    assert_eq!(q.query.to_document().unwrap(), query);
    assert_eq!(q.return_fields_selector, None);
    assert_eq!(encode_op_query(1, &q).unwrap(), bytes);

    // SecondaryOk (bit 2) and a returnFieldsSelector.
    let mut with_fields = payload.clone();
    with_fields[0] = 4;
    with_fields.extend_from_slice(&bson_bytes(&doc! { "a": 1 }));
    let decoded = decode_all(&message(2, 0, 2004, &with_fields)).unwrap().unwrap();
    let Message::Query(q) = decoded.message else {
        panic!("expected OP_QUERY")
    };
    assert_eq!(q.flags, 4);
    assert_eq!(
        q.return_fields_selector.unwrap().to_document().unwrap(),
        doc! { "a": 1 }
    );

    // Bytes after the selector are an error.
    let mut trailing = with_fields.clone();
    trailing.push(0);
    let err = decode_all(&message(3, 0, 2004, &trailing)).unwrap_err();
    assert!(err.to_string().contains("1 bytes after returnFieldsSelector"), "{err}");
    // Collection name without terminator.
    let err = decode_all(&message(3, 0, 2004, b"\0\0\0\0admin")).unwrap_err();
    assert!(err.to_string().contains("fullCollectionName"), "{err}");
}

/// OP_REPLY per the wire protocol reference: header, int32 responseFlags, int64 cursorID,
/// int32 startingFrom, int32 numberReturned, documents.
#[test]
fn op_reply_layout_field_by_field() {
    let d1 = doc! { "ismaster": true, "maxWireVersion": 21, "ok": 1.0 };
    let d2 = doc! { "second": "x" };
    let bytes = encode_op_reply(
        77,
        1234,
        REPLY_FLAG_AWAIT_CAPABLE,
        0x0102_0304_0506_0708,
        5,
        &[raw(&d1), raw(&d2)],
    );
    let le32 = |at: usize| i32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let (b1, b2) = (bson_bytes(&d1), bson_bytes(&d2));
    assert_eq!(usize::try_from(le32(0)).unwrap(), bytes.len()); // messageLength
    assert_eq!(bytes.len(), 36 + b1.len() + b2.len());
    assert_eq!(le32(4), 77); // requestID
    assert_eq!(le32(8), 1234); // responseTo
    assert_eq!(le32(12), 1); // opCode OP_REPLY
    assert_eq!(le32(16), 8); // responseFlags: AwaitCapable is bit 3
    assert_eq!(bytes[20..28], [8, 7, 6, 5, 4, 3, 2, 1]); // cursorID, little-endian int64
    assert_eq!(le32(28), 5); // startingFrom
    assert_eq!(le32(32), 2); // numberReturned
    assert_eq!(bytes[36..36 + b1.len()], b1[..]);
    assert_eq!(bytes[36 + b1.len()..], b2[..]);

    let (header, reply) = decode_op_reply(&bytes).unwrap();
    assert_eq!(header.response_to, 1234);
    assert_eq!(reply.cursor_id, 0x0102_0304_0506_0708);
    assert_eq!(reply.documents[1].to_document().unwrap(), d2);
    // numberReturned must match.
    let mut wrong = bytes.clone();
    wrong[32] = 3;
    assert!(decode_op_reply(&wrong).is_err());
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::ZlibEncoder::new(data, flate2::Compression::default())
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn op_compressed_zlib_zstd_and_noop() {
    let (body, docs) = spec_insert();
    let original = op_msg(11, 0, &[section_body(&body), section_sequence("documents", &docs)]);
    let inner = &original[16..];
    let size = i32::try_from(inner.len()).unwrap();
    let (_, expected, _) = expect_msg(&original);
    let cases = [
        (2u8, zlib(inner), Some(Compressor::Zlib { level: None })),
        (
            3u8,
            zstd::encode_all(inner, 3).unwrap(),
            Some(Compressor::Zstd { level: None }),
        ),
        (0u8, inner.to_vec(), None),
    ];
    for (id, payload, compressor) in cases {
        let bytes = op_compressed(11, 2013, size, id, &payload);
        let (header, msg, got) = expect_msg(&bytes);
        assert_eq!(msg, expected, "compressor {id}");
        assert_eq!(got, compressor);
        // The header describes the original message.
        assert_eq!(header.op_code, OP_MSG);
        assert_eq!(header.request_id, 11);
        assert_eq!(usize::try_from(header.message_length).unwrap(), original.len());
    }
}

#[test]
fn op_compressed_query_and_checksum_inside() {
    let mut payload = Vec::new();
    payload.extend_from_slice(&0i32.to_le_bytes());
    payload.extend_from_slice(b"admin.$cmd\0");
    payload.extend_from_slice(&0i32.to_le_bytes());
    payload.extend_from_slice(&(-1i32).to_le_bytes());
    payload.extend_from_slice(&bson_bytes(&doc! { "isMaster": 1 }));
    let bytes = op_compressed(4, 2004, i32::try_from(payload.len()).unwrap(), 2, &zlib(&payload));
    let decoded = decode_all(&bytes).unwrap().unwrap();
    assert!(matches!(decoded.message, Message::Query(ref q) if q.full_collection_name == "admin.$cmd"));

    // A checksummed OP_MSG compressed: the CRC covers the original (uncompressed) message.
    let original = op_msg(
        4,
        FLAG_CHECKSUM_PRESENT,
        &[section_body(&doc! { "ping": 1, "$db": "x" })],
    );
    let inner = &original[16..];
    let bytes = op_compressed(
        4,
        2013,
        i32::try_from(inner.len()).unwrap(),
        3,
        &zstd::encode_all(inner, 1).unwrap(),
    );
    let (_, msg, _) = expect_msg(&bytes);
    assert_eq!(msg.flags, FLAG_CHECKSUM_PRESENT);
}

#[test]
fn op_compressed_errors() {
    let original = op_msg(1, 0, &[section_body(&doc! { "ping": 1, "$db": "admin" })]);
    let inner = &original[16..];
    let size = i32::try_from(inner.len()).unwrap();
    let err_of = |bytes: Vec<u8>| decode_all(&bytes).unwrap_err().to_string();
    // Snappy is recognised and refused clearly; unknown ids too.
    assert!(err_of(op_compressed(1, 2013, size, 1, inner)).contains("compressorId 1 (snappy) is not supported"));
    assert!(err_of(op_compressed(1, 2013, size, 9, inner)).contains("compressorId 9 (unknown)"));
    // uncompressedSize must equal the real size, both ways.
    assert!(err_of(op_compressed(1, 2013, size + 1, 2, &zlib(inner))).contains("declares"));
    assert!(err_of(op_compressed(1, 2013, size - 1, 2, &zlib(inner))).contains("more than"));
    assert!(err_of(op_compressed(1, 2013, -1, 2, &zlib(inner))).contains("negative"));
    // Corrupt compressed data.
    let mut corrupt = zlib(inner);
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0xff;
    assert!(err_of(op_compressed(1, 2013, size, 2, &corrupt)).contains("zlib decompression"));
    // Raw deflate is not the zlib format.
    let mut raw_deflate = Vec::new();
    flate2::read::DeflateEncoder::new(inner, flate2::Compression::default())
        .read_to_end(&mut raw_deflate)
        .unwrap();
    assert!(err_of(op_compressed(1, 2013, size, 2, &raw_deflate)).contains("zlib decompression"));
    // OP_COMPRESSED cannot wrap itself or OP_REPLY.
    assert!(err_of(op_compressed(1, 2012, size, 0, inner)).contains("originalOpcode"));
    assert!(err_of(op_compressed(1, 1, size, 0, inner)).contains("originalOpcode"));
    // Header fields missing.
    assert!(matches!(
        decode_all(&message(1, 0, 2012, &[1, 2, 3])),
        Err(WireError::Truncated { .. })
    ));
}

#[test]
fn encode_decode_round_trips() {
    let (body, docs) = spec_insert();
    let msg = OpMsg {
        flags: FLAG_EXHAUST_ALLOWED,
        body: raw(&body),
        sequences: vec![DocumentSequence {
            identifier: "documents".into(),
            documents: docs.iter().map(raw).collect(),
        }],
    };
    let compressors = [
        None,
        Some(Compressor::Zlib { level: Some(1) }),
        Some(Compressor::Zstd { level: None }),
        Some(Compressor::Zstd { level: Some(19) }),
    ];
    for flags in [FLAG_EXHAUST_ALLOWED, FLAG_EXHAUST_ALLOWED | FLAG_CHECKSUM_PRESENT] {
        let msg = OpMsg { flags, ..msg.clone() };
        for compressor in &compressors {
            let bytes = encode_op_msg(-5, 99, &msg, compressor.as_ref()).unwrap();
            let expected_op = if compressor.is_some() { OP_COMPRESSED } else { OP_MSG };
            assert_eq!(i32::from_le_bytes(bytes[12..16].try_into().unwrap()), expected_op);
            let decoded = decode_all(&bytes).unwrap().unwrap();
            assert_eq!(decoded.header.request_id, -5);
            assert_eq!(decoded.header.response_to, 99);
            assert_eq!(decoded.message, Message::Msg(msg.clone()));
            assert_eq!(decoded.compressor.map(|c| c.name()), compressor.map(|c| c.name()));
        }
    }
    // A NUL byte cannot be encoded in an identifier.
    let bad = OpMsg {
        sequences: vec![DocumentSequence {
            identifier: "a\0b".into(),
            documents: vec![],
        }],
        ..msg.clone()
    };
    assert!(matches!(
        encode_op_msg(1, 0, &bad, None),
        Err(WireError::InvalidArgument { .. })
    ));
}

#[test]
fn byte_by_byte_feeding_matches_one_shot() {
    let (body, docs) = spec_insert();
    let msg = OpMsg {
        flags: FLAG_CHECKSUM_PRESENT,
        body: raw(&body),
        sequences: vec![DocumentSequence {
            identifier: "documents".into(),
            documents: docs.iter().map(raw).collect(),
        }],
    };
    let stream = [
        encode_op_msg(1, 0, &msg, None).unwrap(),
        encode_op_msg(2, 0, &msg, Some(&Compressor::Zstd { level: None })).unwrap(),
        encode_op_query(
            3,
            &OpQuery {
                flags: 0,
                full_collection_name: "admin.$cmd".into(),
                number_to_skip: 0,
                number_to_return: -1,
                query: rawdoc! { "isMaster": 1 },
                return_fields_selector: None,
            },
        )
        .unwrap(),
        encode_op_msg(4, 0, &msg, Some(&Compressor::Zlib { level: None })).unwrap(),
    ]
    .concat();

    let mut one_shot = Vec::new();
    let mut buf = BytesMut::from(&stream[..]);
    while let Some(d) = decode(&mut buf, MAX).unwrap() {
        one_shot.push(d);
    }
    assert!(buf.is_empty());
    assert_eq!(one_shot.len(), 4);

    let mut split = Vec::new();
    let mut buf = BytesMut::new();
    for &byte in &stream {
        buf.extend_from_slice(&[byte]);
        while let Some(d) = decode(&mut buf, MAX).unwrap() {
            split.push(d);
        }
    }
    assert!(buf.is_empty());
    assert_eq!(split, one_shot);
}

#[test]
fn command_document_rejects_field_and_sequence_with_same_name() {
    let msg = OpMsg {
        flags: 0,
        body: rawdoc! { "insert": "c", "documents": [], "$db": "d" },
        sequences: vec![DocumentSequence {
            identifier: "documents".into(),
            documents: vec![rawdoc! { "a": 1 }],
        }],
    };
    let err = msg.command_document().unwrap_err();
    assert!(err.to_string().contains("same identifier"), "{err}");
    let plain = OpMsg::new(rawdoc! { "ping": 1 });
    assert_eq!(plain.command_document().unwrap(), plain.body);
}

#[test]
fn compression_exemptions() {
    for name in [
        "hello",
        "isMaster",
        "ismaster",
        "saslStart",
        "saslContinue",
        "createUser",
        "updateUser",
        "getnonce",
        "authenticate",
    ] {
        assert!(!is_compressible_command(name), "{name}");
    }
    for name in ["find", "insert", "getMore", "aggregate", "ping"] {
        assert!(is_compressible_command(name), "{name}");
    }
}

/// 1000 documents of 1 KiB in one `documents` sequence, as a bulk insert sends them.
#[test]
fn large_document_sequence() {
    let docs: Vec<Document> = (0..1000)
        .map(|i| doc! { "_id": i, "payload": "p".repeat(1024 - 28) })
        .collect();
    assert_eq!(bson_bytes(&docs[0]).len(), 1024);
    let bytes = op_msg(
        1,
        0,
        &[
            section_body(&doc! { "insert": "c", "$db": "d" }),
            section_sequence("documents", &docs),
        ],
    );
    let start = std::time::Instant::now();
    let (_, msg, _) = expect_msg(&bytes);
    let elapsed = start.elapsed();
    let seq = msg.sequence("documents").unwrap();
    assert_eq!(seq.documents.len(), 1000);
    assert_eq!(seq.documents[999].to_document().unwrap(), docs[999]);
    assert!(seq.documents.iter().all(|d| d.as_bytes().len() == 1024));
    eprintln!("decoded 1000 x 1 KiB documents in {elapsed:?}");
}
