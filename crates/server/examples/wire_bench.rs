//! Throughput check over the raw wire protocol: batched inserts of 1 KiB documents, then a full-collection
//! scan through `find`/`getMore`. Run against a release server:
//! `cargo run --release --example wire_bench -- 127.0.0.1:27017 [batches]`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use bson::{RawDocumentBuf, rawdoc};
use bytes::BytesMut;
use tidemark_wire::{DocumentSequence, Message, OpMsg};

fn roundtrip(s: &mut TcpStream, buf: &mut BytesMut, msg: &OpMsg) -> Result<RawDocumentBuf, Box<dyn std::error::Error>> {
    s.write_all(&tidemark_wire::encode_op_msg(1, 0, msg, None)?)?;
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        if let Some(d) = tidemark_wire::decode(buf, 64 << 20)? {
            return match d.message {
                Message::Msg(m) => Ok(m.body),
                Message::Query(_) => Err("unexpected OP_QUERY reply".into()),
            };
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err("server closed the connection".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let addr = args.get(1).map_or("127.0.0.1:27017", String::as_str);
    let batches: i64 = args.get(2).and_then(|b| b.parse().ok()).unwrap_or(200);
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let mut buf = BytesMut::new();
    if batches > 0 {
        roundtrip(
            &mut s,
            &mut buf,
            &OpMsg::new(rawdoc! { "drop": "docs", "$db": "bench" }),
        )?;
    }
    let pad = "x".repeat(1000);
    let started = Instant::now();
    for b in 0..batches {
        let documents = (0..1000)
            .map(|i| rawdoc! { "_id": b * 1000 + i, "pad": pad.as_str() })
            .collect();
        let msg = OpMsg {
            flags: 0,
            body: rawdoc! { "insert": "docs", "$db": "bench" },
            sequences: vec![DocumentSequence {
                identifier: "documents".into(),
                documents,
            }],
        };
        roundtrip(&mut s, &mut buf, &msg)?;
    }
    let secs = started.elapsed().as_secs_f64();
    if batches > 0 {
        println!("insert: {:.0} docs/s", (batches * 1000) as f64 / secs);
    }

    let started = Instant::now();
    let mut bytes = 0usize;
    let mut reply = roundtrip(
        &mut s,
        &mut buf,
        &OpMsg::new(rawdoc! { "find": "docs", "$db": "bench" }),
    )?;
    loop {
        bytes += reply.as_bytes().len();
        let cursor = reply.get_document("cursor")?;
        let id = cursor.get_i64("id")?;
        if id == 0 {
            break;
        }
        reply = roundtrip(
            &mut s,
            &mut buf,
            &OpMsg::new(rawdoc! { "getMore": id, "collection": "docs", "$db": "bench" }),
        )?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!("scan: {:.0} MB/s ({} MB)", bytes as f64 / secs / 1e6, bytes / 1_000_000);
    Ok(())
}
