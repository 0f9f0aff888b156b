//! The server at the wire level: raw OP_MSG / OP_QUERY exchanges, oversized documents, and arbitrary bytes
//! from a hostile client (the server must keep serving everyone else).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bson::{RawDocumentBuf, doc, rawdoc};
use bytes::BytesMut;
use proptest::prelude::*;
use tidemark_server::ServerConfig;
use tidemark_server::testing::{TestServer, start_test_server};
use tidemark_wire::{DocumentSequence, Message, OpMsg, OpQuery};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn start(rt: &tokio::runtime::Runtime) -> TestServer {
    rt.block_on(start_test_server(ServerConfig::ephemeral()))
}

/// Reads one whole reply message from a blocking socket.
fn read_reply(stream: &mut TcpStream) -> tidemark_wire::Decoded {
    let mut buf = BytesMut::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if let Some(d) = tidemark_wire::decode(&mut buf, 64 * 1024 * 1024).expect("valid reply") {
            return d;
        }
        let n = stream.read(&mut chunk).expect("read reply");
        assert!(n > 0, "server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn op_msg(stream: &mut TcpStream, msg: &OpMsg) -> RawDocumentBuf {
    let bytes = tidemark_wire::encode_op_msg(7, 0, msg, None).expect("encode");
    stream.write_all(&bytes).expect("send");
    match read_reply(stream).message {
        Message::Msg(m) => m.body,
        Message::Query(_) => panic!("expected OP_MSG reply"),
    }
}

fn ping(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let reply = op_msg(&mut s, &OpMsg::new(rawdoc! { "ping": 1, "$db": "admin" }));
    reply.get_f64("ok").ok() == Some(1.0)
}

#[test]
fn legacy_op_query_handshake_gets_op_reply() {
    let rt = runtime();
    let server = start(&rt);
    let mut s = TcpStream::connect(server.addr).unwrap();
    let q = OpQuery {
        flags: 0,
        full_collection_name: "admin.$cmd".into(),
        number_to_skip: 0,
        number_to_return: -1,
        query: rawdoc! { "isMaster": 1, "client": { "driver": { "name": "raw", "version": "0" } } },
        return_fields_selector: None,
    };
    s.write_all(&tidemark_wire::encode_op_query(1, &q).unwrap()).unwrap();
    let mut buf = BytesMut::new();
    let mut chunk = vec![0u8; 65536];
    let reply = loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() >= 4 {
            let len = usize::try_from(i32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]])).unwrap();
            if buf.len() >= len {
                break tidemark_wire::decode_op_reply(&buf[..len]).unwrap();
            }
        }
    };
    let (header, reply) = reply;
    assert_eq!(header.response_to, 1);
    let d = reply.documents[0].to_document().unwrap();
    assert!(d.get_bool("ismaster").unwrap());
    assert_eq!(d.get_i32("maxWireVersion").unwrap(), 21);
    assert_eq!(d.get_i32("minWireVersion").unwrap(), 0);
    assert_eq!(d.get_i32("maxBsonObjectSize").unwrap(), 16 * 1024 * 1024);
    assert_eq!(d.get_i32("maxMessageSizeBytes").unwrap(), 48_000_000);
    assert_eq!(d.get_i32("maxWriteBatchSize").unwrap(), 100_000);
    assert_eq!(d.get_i32("logicalSessionTimeoutMinutes").unwrap(), 30);
    assert!(d.get_datetime("localTime").is_ok());
    assert!(!d.get_bool("readOnly").unwrap());
}

#[test]
fn documents_over_16_mib_are_rejected_with_10334() {
    let rt = runtime();
    let server = start(&rt);
    let mut s = TcpStream::connect(server.addr).unwrap();
    let big = "x".repeat(16 * 1024 * 1024);
    let too_large = rawdoc! { "_id": 1, "big": big };
    let small = rawdoc! { "_id": 2 };
    let msg = OpMsg {
        flags: 0,
        body: rawdoc! { "insert": "c", "ordered": false, "$db": "t" },
        sequences: vec![DocumentSequence {
            identifier: "documents".into(),
            documents: vec![too_large, small],
        }],
    };
    let reply = op_msg(&mut s, &msg).to_document().unwrap();
    assert_eq!(reply.get_i32("n").unwrap(), 1, "{reply}");
    let err = reply.get_array("writeErrors").unwrap()[0]
        .as_document()
        .unwrap()
        .clone();
    assert_eq!(err.get_i32("index").unwrap(), 0);
    assert_eq!(err.get_i32("code").unwrap(), 10334);
    // The connection is still usable.
    let count = op_msg(&mut s, &OpMsg::new(rawdoc! { "count": "c", "$db": "t" }))
        .to_document()
        .unwrap();
    assert_eq!(count, doc! { "n": 1, "ok": 1.0 });
}

#[test]
fn op_msg_with_checksum_and_document_sequences() {
    let rt = runtime();
    let server = start(&rt);
    let mut s = TcpStream::connect(server.addr).unwrap();
    let msg = OpMsg {
        flags: tidemark_wire::FLAG_CHECKSUM_PRESENT,
        body: rawdoc! { "insert": "seq", "$db": "t" },
        sequences: vec![DocumentSequence {
            identifier: "documents".into(),
            documents: (0..10).map(|i| rawdoc! { "_id": i }).collect(),
        }],
    };
    let reply = op_msg(&mut s, &msg).to_document().unwrap();
    assert_eq!(reply, doc! { "n": 10, "ok": 1.0 });
    // A corrupted checksum closes the connection; others are unaffected.
    let mut bytes = tidemark_wire::encode_op_msg(9, 0, &msg, None).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    s.write_all(&bytes).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut one = [0u8; 1];
    assert_eq!(s.read(&mut one).unwrap_or(0), 0, "connection must be closed");
    assert!(ping(server.addr));
}

#[test]
fn compressed_requests_get_compressed_replies() {
    let rt = runtime();
    let server = start(&rt);
    let mut s = TcpStream::connect(server.addr).unwrap();
    let hello = op_msg(
        &mut s,
        &OpMsg::new(rawdoc! { "hello": 1, "compression": ["snappy", "zstd", "zlib"], "$db": "admin" }),
    );
    let agreed: Vec<String> = hello
        .to_document()
        .unwrap()
        .get_array("compression")
        .unwrap()
        .iter()
        .filter_map(|b| b.as_str().map(String::from))
        .collect();
    assert_eq!(agreed, vec!["zstd".to_string(), "zlib".to_string()]);
    for c in [
        tidemark_wire::Compressor::Zlib { level: None },
        tidemark_wire::Compressor::Zstd { level: None },
    ] {
        let bytes =
            tidemark_wire::encode_op_msg(3, 0, &OpMsg::new(rawdoc! { "ping": 1, "$db": "admin" }), Some(&c)).unwrap();
        s.write_all(&bytes).unwrap();
        let reply = read_reply(&mut s);
        assert_eq!(reply.compressor.map(|x| x.name()), Some(c.name()));
        let Message::Msg(m) = reply.message else {
            panic!("expected OP_MSG")
        };
        assert_eq!(m.body.get_f64("ok").ok(), Some(1.0));
    }
}

#[test]
fn more_to_come_requests_get_no_reply() {
    // An unacknowledged write (w: 0) sets moreToCome: the server applies it and sends nothing back, so
    // the next reply on the connection answers the next request.
    let rt = runtime();
    let server = start(&rt);
    let mut s = TcpStream::connect(server.addr).unwrap();
    let w0 = OpMsg {
        flags: tidemark_wire::FLAG_MORE_TO_COME,
        body: rawdoc! { "insert": "w0", "documents": [ { "_id": 1 } ], "writeConcern": { "w": 0 }, "$db": "t" },
        sequences: Vec::new(),
    };
    s.write_all(&tidemark_wire::encode_op_msg(5, 0, &w0, None).unwrap())
        .unwrap();
    let bytes = tidemark_wire::encode_op_msg(6, 0, &OpMsg::new(rawdoc! { "count": "w0", "$db": "t" }), None).unwrap();
    s.write_all(&bytes).unwrap();
    let reply = read_reply(&mut s);
    assert_eq!(reply.header.response_to, 6);
    let Message::Msg(m) = reply.message else {
        panic!("expected OP_MSG")
    };
    assert_eq!(m.body.to_document().unwrap(), doc! { "n": 1, "ok": 1.0 });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_do_not_take_the_server_down(
        garbage in proptest::collection::vec(any::<u8>(), 0..2048),
        header_len in 16i32..4096,
        op in prop_oneof![Just(2013i32), Just(2004), Just(2012), any::<i32>()],
    ) {
        thread_local! {
            static SERVER: (tokio::runtime::Runtime, SocketAddr) = {
                let rt = runtime();
                let server = start(&rt);
                let addr = server.addr;
                std::mem::forget(server);
                (rt, addr)
            };
        }
        let addr = SERVER.with(|(_, a)| *a);
        // Raw garbage, and garbage behind a plausible header.
        for framed in [false, true] {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            let mut bytes = Vec::new();
            if framed {
                bytes.extend_from_slice(&header_len.to_le_bytes());
                bytes.extend_from_slice(&1i32.to_le_bytes());
                bytes.extend_from_slice(&0i32.to_le_bytes());
                bytes.extend_from_slice(&op.to_le_bytes());
            }
            bytes.extend_from_slice(&garbage);
            let _ = s.write_all(&bytes);
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
        }
        prop_assert!(ping(addr));
    }
}
