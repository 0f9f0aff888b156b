//! Property tests: decoding arbitrary or corrupted bytes never panics, encoding then decoding
//! is the identity, and the result does not depend on how the stream is split.

mod common;

use bson::{RawDocumentBuf, rawdoc};
use bytes::BytesMut;
use proptest::prelude::*;
use tidemark_wire::*;

const MAX: usize = DEFAULT_MAX_MESSAGE_SIZE;

/// Decodes everything in `bytes`, checking the streaming contract on the way: `Ok(None)` leaves
/// the buffer untouched, `Ok(Some)` consumes exactly `messageLength` bytes.
fn decode_stream(bytes: &[u8], max: usize) -> Vec<Result<Decoded, String>> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    loop {
        let before = buf.len();
        let declared = buf.get(..4).map(|b| i32::from_le_bytes(b.try_into().unwrap()));
        match decode(&mut buf, max) {
            Ok(None) => {
                assert_eq!(buf.len(), before);
                break;
            }
            Ok(Some(d)) => {
                let consumed = before - buf.len();
                assert_eq!(Some(i32::try_from(consumed).unwrap()), declared);
                out.push(Ok(d));
            }
            Err(e) => {
                // Either the message was consumed, or (framing error) the buffer is untouched.
                assert!(buf.len() == before || Some(i32::try_from(before - buf.len()).unwrap()) == declared);
                let stop = buf.len() == before;
                out.push(Err(e.to_string()));
                if stop {
                    break;
                }
            }
        }
    }
    out
}

fn arb_raw_doc() -> impl Strategy<Value = RawDocumentBuf> {
    (
        any::<i32>(),
        "[a-z]{0,12}",
        proptest::collection::vec(any::<u8>(), 0..40),
        any::<bool>(),
    )
        .prop_map(|(n, s, bin, flag)| {
            rawdoc! {
                "n": n,
                "s": s,
                "bin": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: bin },
                "nested": { "flag": flag, "arr": [1, "two", { "three": 3.0 }] },
            }
        })
}

fn arb_op_msg() -> impl Strategy<Value = OpMsg> {
    let flags = prop_oneof![
        Just(0u32),
        Just(FLAG_CHECKSUM_PRESENT),
        Just(FLAG_MORE_TO_COME),
        Just(FLAG_EXHAUST_ALLOWED | 1 << 20)
    ];
    let sequences = proptest::collection::vec(("[a-z]{1,10}", proptest::collection::vec(arb_raw_doc(), 0..5)), 0..3)
        .prop_map(|seqs| {
            let mut seen = std::collections::HashSet::new();
            seqs.into_iter()
                .filter(|(id, _)| seen.insert(id.clone()))
                .map(|(identifier, documents)| DocumentSequence { identifier, documents })
                .collect::<Vec<_>>()
        });
    (flags, arb_raw_doc(), sequences).prop_map(|(flags, body, sequences)| OpMsg { flags, body, sequences })
}

fn arb_compressor() -> impl Strategy<Value = Option<Compressor>> {
    prop_oneof![
        Just(None),
        (0u32..=9).prop_map(|l| Some(Compressor::Zlib { level: Some(l) })),
        (1i32..=5).prop_map(|l| Some(Compressor::Zstd { level: Some(l) })),
    ]
}

/// A valid encoded message of any supported kind.
fn arb_message_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (arb_op_msg(), arb_compressor(), any::<i32>())
            .prop_map(|(m, c, id)| encode_op_msg(id, 0, &m, c.as_ref()).unwrap()),
        (arb_raw_doc(), any::<i32>()).prop_map(|(q, id)| {
            encode_op_query(
                id,
                &OpQuery {
                    flags: 0,
                    full_collection_name: "admin.$cmd".into(),
                    number_to_skip: 0,
                    number_to_return: -1,
                    query: q,
                    return_fields_selector: None,
                },
            )
            .unwrap()
        }),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, v)| Mutation::Set(i, v)),
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8)).prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), 1usize..8).prop_map(|(i, n)| Mutation::Remove(i, n)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    let len = bytes.len();
    match m {
        Mutation::Set(i, v) => bytes[i % len] = *v,
        Mutation::Flip(i, b) => bytes[i % len] ^= 1 << b,
        Mutation::Truncate(i) => bytes.truncate(i % len),
        Mutation::Insert(i, v) => {
            let at = i % len;
            bytes.splice(at..at, v.iter().copied());
        }
        Mutation::Remove(i, n) => {
            let at = i % len;
            bytes.drain(at..(at + n).min(len));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), max in 0usize..100_000) {
        decode_stream(&bytes, max);
        let _ = decode_message(&bytes, max);
        let _ = decode_op_reply(&bytes);
    }

    #[test]
    fn arbitrary_payload_behind_valid_header_never_panics(
        op in prop_oneof![Just(2013i32), Just(2004), Just(2012), Just(1), any::<i32>()],
        payload in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let bytes = common::message(1, 0, op, &payload);
        let results = decode_stream(&bytes, MAX);
        prop_assert_eq!(results.len(), 1);
    }

    #[test]
    fn mutated_messages_never_panic(
        original in arb_message_bytes(),
        mutations in proptest::collection::vec(arb_mutation(), 1..4),
        fix_length in any::<bool>(),
    ) {
        let mut bytes = original;
        for m in &mutations {
            apply(&mut bytes, m);
        }
        if fix_length && bytes.len() >= 4 {
            // Keep the frame consistent so the mutation reaches the inner parsers.
            let len = i32::try_from(bytes.len()).unwrap().to_le_bytes();
            bytes[..4].copy_from_slice(&len);
        }
        decode_stream(&bytes, MAX);
        let _ = decode_op_reply(&bytes);
    }

    #[test]
    fn op_msg_round_trips(msg in arb_op_msg(), compressor in arb_compressor(), id in any::<i32>(), to in any::<i32>()) {
        let bytes = encode_op_msg(id, to, &msg, compressor.as_ref()).unwrap();
        let decoded = decode_message(&bytes, MAX).unwrap();
        prop_assert_eq!(decoded.header.request_id, id);
        prop_assert_eq!(decoded.header.response_to, to);
        prop_assert_eq!(decoded.header.op_code, OP_MSG);
        prop_assert_eq!(decoded.compressor.map(|c| c.id()), compressor.map(|c| c.id()));
        prop_assert_eq!(decoded.message, Message::Msg(msg));
    }

    #[test]
    fn op_reply_round_trips(docs in proptest::collection::vec(arb_raw_doc(), 0..5), flags in any::<u32>(), cursor in any::<i64>()) {
        let bytes = encode_op_reply(1, 2, flags, cursor, 0, &docs);
        let (header, reply) = decode_op_reply(&bytes).unwrap();
        prop_assert_eq!(header.op_code, OP_REPLY);
        prop_assert_eq!(reply.response_flags, flags);
        prop_assert_eq!(reply.cursor_id, cursor);
        prop_assert_eq!(reply.documents, docs);
    }

    #[test]
    fn split_feeding_matches_one_shot(
        messages in proptest::collection::vec(arb_message_bytes(), 1..4),
        cuts in proptest::collection::vec(1usize..64, 1..200),
    ) {
        let stream = messages.concat();
        let one_shot = decode_stream(&stream, MAX);
        prop_assert_eq!(one_shot.len(), messages.len());
        prop_assert!(one_shot.iter().all(Result::is_ok));

        let mut buf = BytesMut::new();
        let mut split = Vec::new();
        let mut pos = 0;
        let mut cut_iter = cuts.iter().cycle();
        while pos < stream.len() {
            let n = (*cut_iter.next().unwrap()).min(stream.len() - pos);
            buf.extend_from_slice(&stream[pos..pos + n]);
            pos += n;
            while let Some(d) = decode(&mut buf, MAX).unwrap() {
                split.push(Ok(d));
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(split, one_shot);
    }
}
