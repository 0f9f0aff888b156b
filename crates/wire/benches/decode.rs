//! Decoding throughput of a bulk insert: one `OP_MSG` whose `documents` sequence holds
//! 1000 documents of 1 KiB, uncompressed and zstd-compressed.
//!
//! Run with `cargo bench -p tidemark-wire`; prints the time per message and the throughput.
//! (A plain timing loop keeps the bench free of extra dependencies.)

use std::time::Instant;

use bson::rawdoc;
use bytes::BytesMut;
use tidemark_wire::{Compressor, DEFAULT_MAX_MESSAGE_SIZE, DocumentSequence, OpMsg, decode, encode_op_msg};

fn main() {
    let documents = (0..1000)
        .map(|i| rawdoc! { "_id": i, "payload": "p".repeat(1024 - 28) })
        .collect::<Vec<_>>();
    let msg = OpMsg {
        flags: 0,
        body: rawdoc! { "insert": "bench", "$db": "db" },
        sequences: vec![DocumentSequence {
            identifier: "documents".into(),
            documents,
        }],
    };
    for compressor in [None, Some(Compressor::Zstd { level: None })] {
        let bytes = encode_op_msg(1, 0, &msg, compressor.as_ref()).expect("encode");
        let rounds = 200;
        let start = Instant::now();
        for _ in 0..rounds {
            let mut buf = BytesMut::from(&bytes[..]);
            let decoded = decode(&mut buf, DEFAULT_MAX_MESSAGE_SIZE)
                .expect("decode")
                .expect("complete");
            std::hint::black_box(decoded);
        }
        let per = start.elapsed() / rounds;
        let mib_s = 1_024_000.0 / per.as_secs_f64() / (1024.0 * 1024.0);
        let name = compressor.map_or("uncompressed", |c| c.name());
        println!(
            "decode 1000 x 1 KiB ({name}, {} wire bytes): {per:?} per message, {mib_s:.0} MiB/s",
            bytes.len()
        );
    }
}
