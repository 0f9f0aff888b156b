//! The archive writer: exact block layout, enforced rules, several producer threads, and a
//! cross-check of its output by an independent reader (pymongo's `bson` module walking the
//! grammar, with its own CRC-64/XZ).

use std::collections::HashMap;
use std::io::Write;
use std::process::Command;

use bson::{RawDocumentBuf, rawdoc};
use tidemark_format::archive::{
    ArchiveError, ArchiveEvent, ArchiveHeader, ArchiveReader, ArchiveWriter, PreludeEntry, SharedArchiveWriter, crc64,
};

const TERM: [u8; 4] = [0xFF; 4];

fn entries(names: &[&str]) -> Vec<PreludeEntry> {
    names
        .iter()
        .map(|n| PreludeEntry::new("db", *n, r#"{"indexes":[]}"#, "collection"))
        .collect()
}

/// Reads an archive back: documents per namespace name, and the stored CRC of each namespace.
fn read_back(bytes: &[u8]) -> (HashMap<String, Vec<RawDocumentBuf>>, HashMap<String, u64>, usize) {
    let mut reader = ArchiveReader::new(bytes).unwrap();
    let names: Vec<String> = reader.namespaces().iter().map(|n| n.namespace.to_string()).collect();
    let mut docs: HashMap<String, Vec<RawDocumentBuf>> = HashMap::new();
    let mut crcs = HashMap::new();
    while let Some(event) = reader.next_event().unwrap() {
        match event {
            ArchiveEvent::Document { namespace, document } => {
                docs.entry(names[namespace].clone()).or_default().push(document)
            }
            ArchiveEvent::NamespaceEnd {
                namespace,
                crc,
                crc_checked,
            } => {
                assert!(crc_checked);
                crcs.insert(names[namespace].clone(), crc);
            }
            ArchiveEvent::SegmentStart { .. } => {}
        }
    }
    (docs, crcs, reader.max_open_namespaces())
}

fn concat(docs: &[RawDocumentBuf]) -> Vec<u8> {
    docs.iter().flat_map(|d| d.as_bytes().to_vec()).collect()
}

#[test]
fn layout_matches_mongodump_block_by_block() {
    let header = ArchiveHeader::new(4, "7.0.16", "100.9.4");
    let mut w = ArchiveWriter::new(Vec::new(), &header, &entries(&["a", "b"])).unwrap();
    let prelude_len = w.bytes_written();
    let d1 = rawdoc! {"_id": 1};
    let d2 = rawdoc! {"_id": 2};
    w.write_document(0, &d1).unwrap();
    w.write_document(0, &d2).unwrap(); // same namespace: same segment
    w.write_document(1, &d1).unwrap(); // switch: TERM then header
    w.close_namespace(0).unwrap(); // TERM (closes b's segment), EOF a, TERM
    w.close_namespace(1).unwrap(); // b has no open segment now: EOF b, TERM
    let bytes = w.finish().unwrap();

    let hdr = |coll: &str, eof: bool, crc: u64| {
        rawdoc! {"db": "db", "collection": coll, "EOF": eof, "CRC": i64::from_le_bytes(crc.to_le_bytes())}
            .as_bytes()
            .to_vec()
    };
    let mut expected = Vec::new();
    expected.extend(hdr("a", false, 0));
    expected.extend(d1.as_bytes());
    expected.extend(d2.as_bytes());
    expected.extend(TERM);
    expected.extend(hdr("b", false, 0));
    expected.extend(d1.as_bytes());
    expected.extend(TERM);
    expected.extend(hdr("a", true, crc64(&concat(&[d1.clone(), d2.clone()]))));
    expected.extend(TERM);
    expected.extend(hdr("b", true, crc64(d1.as_bytes())));
    expected.extend(TERM);
    assert_eq!(&bytes[usize::try_from(prelude_len).unwrap()..], &expected[..]);

    // The prelude: magic, header with int32 concurrent_collections, entries with int32 size and type.
    assert_eq!(&bytes[..4], &[0x6D, 0xE2, 0x99, 0x81]);
    let header_doc = rawdoc! {"concurrent_collections": 4_i32, "version": "0.1", "server_version": "7.0.16", "tool_version": "100.9.4"};
    assert_eq!(&bytes[4..4 + header_doc.as_bytes().len()], header_doc.as_bytes());
    let entry =
        rawdoc! {"db": "db", "collection": "a", "metadata": r#"{"indexes":[]}"#, "size": 0_i32, "type": "collection"};
    let at = 4 + header_doc.as_bytes().len();
    assert_eq!(&bytes[at..at + entry.as_bytes().len()], entry.as_bytes());
}

#[test]
fn empty_namespaces_get_an_empty_segment_then_eof() {
    let header = ArchiveHeader::new(1, "6.0.0", "t");
    let mut w = ArchiveWriter::new(Vec::new(), &header, &entries(&["view"])).unwrap();
    let start = usize::try_from(w.bytes_written()).unwrap();
    w.close_namespace(0).unwrap();
    let bytes = w.finish().unwrap();
    let mut expected = rawdoc! {"db": "db", "collection": "view", "EOF": false, "CRC": 0_i64}
        .as_bytes()
        .to_vec();
    expected.extend(TERM);
    expected.extend(rawdoc! {"db": "db", "collection": "view", "EOF": true, "CRC": 0_i64}.as_bytes());
    expected.extend(TERM);
    assert_eq!(&bytes[start..], &expected[..]);
    ArchiveReader::new(&bytes[..]).unwrap().drain().unwrap();
}

#[test]
fn rules_are_enforced() {
    let header = ArchiveHeader::new(1, "7.0.0", "t");
    let mut w = ArchiveWriter::new(Vec::new(), &header, &entries(&["a", "b"])).unwrap();
    w.write_document(0, &rawdoc! {"x": 1}).unwrap();
    let err = w.write_document(1, &rawdoc! {"x": 1}).unwrap_err();
    assert!(
        matches!(err, ArchiveError::TooManyOpenNamespaces { limit: 1, open: 2, .. }),
        "{err}"
    );
    w.close_namespace(0).unwrap();
    assert!(matches!(
        w.write_document(0, &rawdoc! {}).unwrap_err(),
        ArchiveError::NamespaceClosed { .. }
    ));
    assert!(matches!(
        w.close_namespace(0).unwrap_err(),
        ArchiveError::NamespaceClosed { .. }
    ));
    assert!(matches!(
        w.write_document(7, &rawdoc! {}).unwrap_err(),
        ArchiveError::UnknownNamespace { .. }
    ));
    // Badly framed buffers are refused before anything is written.
    let before = w.bytes_written();
    for bad in [vec![1u8, 2, 3], vec![5, 0, 0, 0, 1], vec![6, 0, 0, 0, 0, 0, 0]] {
        assert!(matches!(
            w.write_documents(1, &bad).unwrap_err(),
            ArchiveError::InvalidWrite(_)
        ));
    }
    assert_eq!(w.bytes_written(), before);
    let err = w.finish().unwrap_err();
    assert!(err.to_string().contains(r#""db.b""#), "{err}");

    // Prelude problems.
    let bad_version = ArchiveHeader::new(4, "unknown", "t");
    assert!(ArchiveWriter::new(Vec::new(), &bad_version, &[]).is_err());
    assert!(ArchiveWriter::new(Vec::new(), &ArchiveHeader::new(0, "7.0.0", "t"), &[]).is_err());
    assert!(ArchiveWriter::new(Vec::new(), &header, &entries(&["a", "a"])).is_err());
    assert!(ArchiveWriter::new(Vec::new(), &header, &entries(&[""])).is_err());
}

#[test]
fn timeseries_entries_write_to_the_buckets_namespace() {
    let ts = PreludeEntry::new("db", "ts", "{}", "timeseries");
    let w = ArchiveWriter::new(
        Vec::new(),
        &ArchiveHeader::new(4, "7.0.16", "t"),
        std::slice::from_ref(&ts),
    )
    .unwrap();
    assert_eq!(w.namespace_index("db", "system.buckets.ts"), Some(0));
    let w = ArchiveWriter::new(Vec::new(), &ArchiveHeader::new(4, "8.3.0", "t"), &[ts]).unwrap();
    assert_eq!(w.namespace_index("db", "ts"), Some(0));
}

#[test]
fn several_producer_threads_interleave_without_losing_anything() {
    const PRODUCERS: usize = 4;
    let names: Vec<String> = (0..6).map(|i| format!("c{i}")).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let header = ArchiveHeader::new(i32::try_from(PRODUCERS).unwrap(), "7.0.16", "t");
    let shared = SharedArchiveWriter::new(ArchiveWriter::new(Vec::new(), &header, &entries(&name_refs)).unwrap());
    let docs_for = |i: usize| -> Vec<RawDocumentBuf> {
        (0..300).map(|n| rawdoc! {"_id": i32::try_from(n).unwrap(), "ns": i32::try_from(i).unwrap(), "pad": "x".repeat(n % 50)}).collect()
    };

    // Four workers take namespaces from a queue, like `-j 4`.
    let queue = std::sync::Mutex::new((0..names.len()).collect::<Vec<_>>());
    std::thread::scope(|scope| {
        for _ in 0..PRODUCERS {
            scope.spawn(|| {
                loop {
                    let Some(i) = queue.lock().unwrap().pop() else { break };
                    let mut ns = shared.namespace_writer_with_buffer(i, 512).unwrap();
                    for d in docs_for(i) {
                        ns.write_document(&d).unwrap();
                        if d.get_i32("_id").unwrap() % 37 == 0 {
                            std::thread::yield_now();
                        }
                    }
                    ns.finish().unwrap();
                }
            });
        }
    });
    let bytes = shared.finish().unwrap();
    let (docs, crcs, max_open) = read_back(&bytes);
    for (i, name) in names.iter().enumerate() {
        let expected = docs_for(i);
        let key = format!("db.{name}");
        assert_eq!(docs[&key], expected, "{key}");
        assert_eq!(crcs[&key], crc64(&concat(&expected)));
    }
    assert!((1..=PRODUCERS).contains(&max_open), "{max_open}");
}

#[test]
fn namespace_writer_slots_follow_concurrent_collections() {
    let header = ArchiveHeader::new(2, "7.0.16", "t");
    let shared = SharedArchiveWriter::new(ArchiveWriter::new(Vec::new(), &header, &entries(&["a", "b", "c"])).unwrap());
    let a = shared.namespace_writer(0).unwrap();
    let b = shared.namespace_writer(1).unwrap();
    assert!(matches!(
        shared.namespace_writer(2).unwrap_err(),
        ArchiveError::TooManyOpenNamespaces { .. }
    ));
    assert!(shared.namespace_writer(0).is_err(), "a namespace has one writer");
    // Direct writes to a namespace owned by a handle are refused.
    assert!(
        shared
            .with_writer(|w| w.write_document(0, &rawdoc! {}))
            .unwrap()
            .is_err()
    );
    a.finish().unwrap();
    let c = shared.namespace_writer(2).unwrap();
    drop(b); // never finished
    c.finish().unwrap();
    let err = shared.finish().unwrap_err();
    assert!(
        matches!(err, ArchiveError::NotFinished(ref v) if v == &["db.b".to_owned()]),
        "{err}"
    );
}

#[test]
fn gzip_wrapped_archive_round_trips() {
    use tidemark_format::archive::gzip::{gzip_reader, gzip_writer};
    let header = ArchiveHeader::new(4, "7.0.16", "t");
    let mut w = ArchiveWriter::new(gzip_writer(Vec::new()), &header, &entries(&["a"])).unwrap();
    w.write_document(0, &rawdoc! {"x": "y"}).unwrap();
    w.close_namespace(0).unwrap();
    let compressed = w.finish().unwrap().finish().unwrap();
    assert_eq!(&compressed[..2], &[0x1F, 0x8B]);
    let mut reader = ArchiveReader::new(gzip_reader(&compressed[..])).unwrap();
    reader.drain().unwrap();
    assert_eq!(reader.namespace_totals(0).map(|t| t.0), Some(1));
}

/// Decompresses argv[1] with `gzip.decompress` (one stream) into argv[2], checks it against a
/// member-by-member decompression with zlib, and prints the number of members.
const PY_GZIP_MEMBERS: &str = r"
import gzip, sys, zlib
data = open(sys.argv[1], 'rb').read()
whole = gzip.decompress(data)
parts, members, rest = [], 0, data
while rest:
    d = zlib.decompressobj(31)
    parts.append(d.decompress(rest))
    parts.append(d.flush())
    members += 1
    rest = d.unused_data
assert b''.join(parts) == whole
open(sys.argv[2], 'wb').write(whole)
print(members)
";

/// A gzip archive of several members (compressed in parallel) is one gzip stream to Python's
/// `gzip` module, an independent reader, and holds exactly the plain archive's bytes.
#[test]
fn parallel_gzip_archive_reads_as_one_stream_in_python() {
    use tidemark_format::archive::gzip::gzip_writer;
    let write = |out: Box<dyn Write>| -> Box<dyn Write> {
        let header = ArchiveHeader::new(2, "7.0.16", "t");
        let mut w = ArchiveWriter::new(out, &header, &entries(&["a", "b"])).unwrap();
        let mut x = 7u64;
        for i in 0..6000i64 {
            // About 1 KiB each, half of it incompressible: several 1 MiB members.
            let payload: Vec<u8> = (0..512)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x.to_le_bytes()[0]
                })
                .collect();
            let doc = rawdoc! {"_id": i, "text": "x".repeat(500), "payload": bson::Binary {
            subtype: bson::spec::BinarySubtype::Generic, bytes: payload }};
            w.write_document(usize::try_from(i % 2).unwrap(), &doc).unwrap();
        }
        w.close_namespace(0).unwrap();
        w.close_namespace(1).unwrap();
        w.finish().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let plain_path = dir.path().join("plain");
    let gz_path = dir.path().join("archive.gz");
    drop(write(Box::new(std::fs::File::create(&plain_path).unwrap())));
    // Dropping the encoder finishes it, as flate2's encoders do.
    drop(write(Box::new(gzip_writer(std::fs::File::create(&gz_path).unwrap()))));
    let out = Command::new("python3")
        .args(["-c", PY_GZIP_MEMBERS])
        .arg(&gz_path)
        .arg(dir.path().join("unzipped"))
        .output()
        .unwrap();
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    let members: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    // 6000 documents of about 1 KiB: 6 MiB and more, in 1 MiB members.
    assert!(members >= 6, "expected several gzip members, saw {members}");
    let plain = std::fs::read(&plain_path).unwrap();
    assert!(plain.len() > 6 << 20);
    assert_eq!(std::fs::read(dir.path().join("unzipped")).unwrap(), plain);
}

/// Walks the archive grammar with pymongo's `bson` (an independent decoder) and computes the
/// CRCs with its own bitwise CRC-64/XZ; prints a JSON summary.
const PY_WALKER: &str = r#"
import bson, json, struct, sys
from bson import json_util

def crc64(data):
    crc = 0xFFFFFFFFFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0xC96C5795D7870F42 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFFFFFFFFFF

data = open(sys.argv[1], 'rb').read()
assert data[:4] == bytes([0x6D, 0xE2, 0x99, 0x81]), 'magic'
pos = 4
def unit():
    global pos
    (n,) = struct.unpack_from('<I', data, pos)
    if n == 0xFFFFFFFF:
        pos += 4
        return None
    raw = data[pos:pos + n]
    assert len(raw) == n and raw[-1] == 0
    pos += n
    return raw

def types(d):
    return {k: type(v).__name__ for k, v in d.items()}

header = bson.decode(unit())
out = {'header': header, 'header_types': types(header), 'prelude': [], 'blocks': []}
while True:
    raw = unit()
    if raw is None:
        break
    d = bson.decode(raw)
    out['prelude'].append({'doc': d, 'types': types(d)})
running = {}
while pos < len(data):
    h = bson.decode(unit())
    assert list(h.keys()) == ['db', 'collection', 'EOF', 'CRC'], h
    assert isinstance(h['CRC'], bson.int64.Int64)
    ns = h['db'] + '.' + h['collection']
    docs = []
    while True:
        raw = unit()
        if raw is None:
            break
        assert not h['EOF'], 'document in an EOF block'
        running[ns] = running.get(ns, b'') + raw
        docs.append(json.loads(json_util.dumps(bson.decode(raw), json_options=json_util.CANONICAL_JSON_OPTIONS)))
    block = {'ns': ns, 'eof': h['EOF'], 'docs': docs}
    if h['EOF']:
        block['crc_ok'] = (h['CRC'] & 0xFFFFFFFFFFFFFFFF) == crc64(running.get(ns, b''))
    else:
        assert h['CRC'] == 0
    out['blocks'].append(block)
print(json.dumps(out))
"#;

#[test]
fn pymongo_walks_our_archive() {
    if Command::new("python3")
        .args(["-c", "import bson"])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        panic!("python3 with pymongo's bson module is required for this test");
    }
    let header = ArchiveHeader::new(2, "7.0.16", "100.9.4");
    let prelude = vec![
        PreludeEntry::new("admin", "system.version", "{}", "collection"),
        PreludeEntry::new("db", "a", r#"{"indexes":[]}"#, "collection"),
        PreludeEntry::new("db", "v", r#"{"options":{"viewOn":"a"}}"#, "view"),
        PreludeEntry::new("", "oplog", "", ""),
    ];
    let a_docs = [
        rawdoc! {"_id": 1, "n": 1.5, "s": "é", "big": 1_i64 << 40},
        rawdoc! {"_id": 2, "arr": [1, "two", {"three": 3}], "nested": {"deep": true}},
        rawdoc! {"_id": 3, "ts": bson::Timestamp { time: 5, increment: 1 }},
    ];
    let version_doc = rawdoc! {"_id": "featureCompatibilityVersion", "version": "7.0"};
    let oplog_doc = rawdoc! {"op": "n", "ns": "", "o": {"msg": "noop"}};
    let mut w = ArchiveWriter::new(Vec::new(), &header, &prelude).unwrap();
    let (version, a, v, oplog) = (0, 1, 2, 3);
    w.write_document(version, &version_doc).unwrap();
    w.close_namespace(version).unwrap();
    w.write_document(a, &a_docs[0]).unwrap();
    w.write_documents(v, &[]).unwrap();
    w.write_document(a, &a_docs[1]).unwrap();
    w.close_namespace(v).unwrap();
    w.write_document(a, &a_docs[2]).unwrap();
    w.close_namespace(a).unwrap();
    w.write_document(oplog, &oplog_doc).unwrap();
    w.close_namespace(oplog).unwrap();
    let bytes = w.finish().unwrap();

    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(&bytes).unwrap();
    let out = Command::new("python3")
        .arg("-c")
        .arg(PY_WALKER)
        .arg(file.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    assert_eq!(summary["header"]["concurrent_collections"], 2);
    assert_eq!(summary["header"]["server_version"], "7.0.16");
    assert_eq!(summary["header_types"]["concurrent_collections"], "int");
    let decoded_prelude = summary["prelude"].as_array().unwrap();
    assert_eq!(decoded_prelude.len(), prelude.len());
    for (got, want) in decoded_prelude.iter().zip(&prelude) {
        assert_eq!(got["doc"]["db"], want.db.as_str());
        assert_eq!(got["doc"]["collection"], want.collection.as_str());
        assert_eq!(got["doc"]["metadata"], want.metadata.as_str());
        assert_eq!(got["doc"]["type"], want.type_.as_str());
        assert_eq!(got["doc"]["size"], 0);
        assert_eq!(got["types"]["size"], "int", "size must be int32, not Int64");
    }

    let canonical = |d: &RawDocumentBuf| -> serde_json::Value {
        bson::Bson::Document(d.to_document().unwrap()).into_canonical_extjson()
    };
    let block = |ns: &str, eof: bool, docs: &[&RawDocumentBuf]| {
        let mut b =
            serde_json::json!({"ns": ns, "eof": eof, "docs": docs.iter().map(|d| canonical(d)).collect::<Vec<_>>()});
        if eof {
            b["crc_ok"] = serde_json::Value::Bool(true);
        }
        b
    };
    let expected = vec![
        block("admin.system.version", false, &[&version_doc]),
        block("admin.system.version", true, &[]),
        block("db.a", false, &[&a_docs[0]]),
        block("db.v", false, &[]),
        block("db.a", false, &[&a_docs[1]]),
        block("db.v", true, &[]),
        block("db.a", false, &[&a_docs[2]]),
        block("db.a", true, &[]),
        block(".oplog", false, &[&oplog_doc]),
        block(".oplog", true, &[]),
    ];
    assert_eq!(summary["blocks"].as_array().unwrap(), &expected);
}

/// Accepts `room` bytes, then fails every write.
#[derive(Debug)]
struct Full {
    room: usize,
}

impl Write for Full {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.room == 0 {
            return Err(std::io::Error::other("disk full"));
        }
        let n = buf.len().min(self.room);
        self.room -= n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn output_errors_are_reported_with_their_offset_and_poison_the_writer() {
    let header = ArchiveHeader::new(4, "7.0.16", "t");
    assert!(matches!(
        ArchiveWriter::new(Full { room: 10 }, &header, &entries(&["a"])).unwrap_err(),
        ArchiveError::Io { offset: 0, .. }
    ));
    let mut w = ArchiveWriter::new(Full { room: 300 }, &header, &entries(&["a"])).unwrap();
    let start = w.bytes_written();
    let err = w.write_document(0, &rawdoc! {"pad": "p".repeat(400)}).unwrap_err();
    assert!(
        matches!(err, ArchiveError::Io { offset, .. } if offset >= start),
        "{err}"
    );
    assert!(err.to_string().contains("disk full"), "{err}");
    assert!(matches!(w.close_namespace(0).unwrap_err(), ArchiveError::Failed(_)));
    assert!(matches!(w.finish().unwrap_err(), ArchiveError::Failed(_)));
}

/// Documents handed over inside held buffers (as the dump hands over the server's replies) give the
/// archive that copying them one by one gives, byte for byte: same segments at the same document
/// boundaries, same interleaving, same checksums.
#[test]
fn held_documents_write_the_same_bytes_as_copied_ones() {
    let docs: Vec<RawDocumentBuf> = (0..200)
        .map(|n: i32| rawdoc! {"_id": n, "pad": "y".repeat(usize::try_from(n % 37).unwrap())})
        .collect();
    // A "reply": the documents inside an array of a wrapping document, as a server's batch holds them.
    let mut reply = RawDocumentBuf::new();
    let mut batch = bson::RawArrayBuf::new();
    for d in &docs {
        batch.push(d.clone());
    }
    reply.append("nextBatch", batch);
    let bytes = reply.clone().into_bytes();
    let ranges: Vec<std::ops::Range<usize>> = docs
        .iter()
        .map(|d| {
            let start = bytes
                .windows(d.as_bytes().len())
                .position(|w| w == d.as_bytes())
                .unwrap();
            start..start + d.as_bytes().len()
        })
        .collect();
    let held: tidemark_format::archive::HeldBytes = std::sync::Arc::new(bytes);

    let write = |held_mode: bool| {
        let header = ArchiveHeader::new(2, "7.0.16", "t");
        let shared = SharedArchiveWriter::new(ArchiveWriter::new(Vec::new(), &header, &entries(&["a", "b"])).unwrap());
        let mut a = shared.namespace_writer_with_buffer(0, 700).unwrap();
        let mut b = shared.namespace_writer_with_buffer(1, 700).unwrap();
        // Alternate between the namespaces in uneven steps, so that segments interleave.
        for (step, chunk) in ranges.chunks(7).enumerate() {
            let w = if step % 3 == 0 { &mut b } else { &mut a };
            if held_mode {
                w.write_held(&held, chunk.iter().cloned()).unwrap();
            } else {
                for r in chunk {
                    w.write_document(bson::RawDocument::from_bytes(&held.as_ref().as_ref()[r.clone()]).unwrap())
                        .unwrap();
                }
            }
        }
        a.finish().unwrap();
        b.finish().unwrap();
        shared.finish().unwrap()
    };
    let copied = write(false);
    let from_held = write(true);
    assert_eq!(from_held, copied);
    let (read, crcs, _) = read_back(&from_held);
    assert_eq!(read["db.a"].len() + read["db.b"].len(), docs.len());
    assert_eq!(crcs.len(), 2);
    let mut reader = ArchiveReader::new(&from_held[..]).unwrap();
    let mut segments = 0;
    while let Some(event) = reader.next_event().unwrap() {
        segments += usize::from(matches!(event, ArchiveEvent::SegmentStart { .. }));
    }
    assert!(segments >= 8, "{segments} segments");

    // A range that is not one document is refused.
    let header = ArchiveHeader::new(1, "7.0.16", "t");
    let shared = SharedArchiveWriter::new(ArchiveWriter::new(Vec::new(), &header, &entries(&["a"])).unwrap());
    let mut a = shared.namespace_writer(0).unwrap();
    let first = ranges[0].clone();
    assert!(
        a.write_held(&held, std::iter::once(first.start..first.end + 1))
            .is_err()
    );
    assert!(a.write_held(&held, std::iter::once(0..usize::MAX)).is_err());
}

/// The checksum is computed while segments are copied out, through a staging buffer of a few
/// hundred KiB: runs of small documents that overflow it, documents larger than it, and segments
/// split across several hand-overs all end with the CRC-64/XZ of exactly the namespace's documents.
#[test]
fn checksums_of_documents_of_every_size_match_the_whole_stream() {
    let sized = |n: usize, len: usize| {
        let mut doc = rawdoc! {"_id": i64::try_from(n).unwrap()};
        doc.append(
            "pad",
            bson::Binary {
                subtype: bson::spec::BinarySubtype::Generic,
                bytes: (0..len).map(|i| u8::try_from((i * 31 + n) % 251).unwrap()).collect(),
            },
        );
        doc
    };
    // 100 KiB documents overflow the staging buffer every few documents; 300 KiB and 3 MiB ones are
    // larger than it; tiny ones sit between them.
    let sizes = [
        100 << 10,
        100 << 10,
        100 << 10,
        10,
        300 << 10,
        100 << 10,
        3 << 20,
        20,
        100 << 10,
    ];
    let docs: Vec<RawDocumentBuf> = (0..40).map(|n| sized(n, sizes[n % sizes.len()])).collect();
    let mut reply = RawDocumentBuf::new();
    let mut batch = bson::RawArrayBuf::new();
    for d in &docs {
        batch.push(d.clone());
    }
    reply.append("nextBatch", batch);
    let bytes = reply.into_bytes();
    let mut from = 0;
    let ranges: Vec<std::ops::Range<usize>> = docs
        .iter()
        .map(|d| {
            let len = d.as_bytes().len();
            let start = from + bytes[from..].windows(len).position(|w| w == d.as_bytes()).unwrap();
            from = start + len;
            start..start + len
        })
        .collect();
    let held: tidemark_format::archive::HeldBytes = std::sync::Arc::new(bytes);

    let header = ArchiveHeader::new(2, "7.0.16", "t");
    let shared = SharedArchiveWriter::new(ArchiveWriter::new(Vec::new(), &header, &entries(&["a", "b"])).unwrap());
    let mut a = shared.namespace_writer_with_buffer(0, 1 << 20).unwrap();
    let mut b = shared.namespace_writer(1).unwrap();
    // `a` takes the documents held in one reply, in steps of three, so that its 1 MiB segments end
    // inside a reply; `b` copies the same documents in and hands them over every other step, so
    // that the two interleave.
    for (step, chunk) in ranges.chunks(3).enumerate() {
        a.write_held(&held, chunk.iter().cloned()).unwrap();
        if step % 2 == 0 {
            b.flush().unwrap();
        }
        for r in chunk {
            b.write_document(bson::RawDocument::from_bytes(&held.as_ref().as_ref()[r.clone()]).unwrap())
                .unwrap();
        }
    }
    a.finish().unwrap();
    b.finish().unwrap();
    let archive = shared.finish().unwrap();

    let (read, crcs, _) = read_back(&archive);
    let whole = crc64(&concat(&docs));
    for ns in ["db.a", "db.b"] {
        assert_eq!(read[ns], docs, "{ns}");
        assert_eq!(crcs[ns], whole, "{ns}");
    }
    let mut reader = ArchiveReader::new(&archive[..]).unwrap();
    let mut segments = 0;
    while let Some(event) = reader.next_event().unwrap() {
        segments += usize::from(matches!(event, ArchiveEvent::SegmentStart { .. }));
    }
    assert!(segments >= 10, "{segments} segments");
}
