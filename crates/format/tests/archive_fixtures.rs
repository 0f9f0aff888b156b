//! The archive reader and writer against archives written by the real `mongodump`
//! (`shared/fixtures/mongo-tools/mongorestore/testdata/*.archive`).
//!
//! Expected values come from the format notes (section 2.4 and the fixture inventory) and from
//! decoding the files with pymongo's `bson`, not from this crate.

use std::path::PathBuf;

use bson::oid::ObjectId;
use tidemark_format::archive::{ArchiveError, ArchiveEvent, ArchiveReader, ArchiveWriter, crc64};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/mongo-tools/mongorestore/testdata")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn events(bytes: &[u8]) -> Result<(ArchiveReader<&[u8]>, Vec<ArchiveEvent>), ArchiveError> {
    let mut reader = ArchiveReader::new(bytes)?;
    let mut out = Vec::new();
    while let Some(event) = reader.next_event()? {
        out.push(event);
    }
    Ok((reader, out))
}

/// The int64 stored in an EOF header, as the unsigned CRC it encodes.
fn stored_crc(value: i64) -> u64 {
    u64::from_le_bytes(value.to_le_bytes())
}

#[test]
fn test_bar_archive_decodes_to_the_documented_contents() {
    let bytes = fixture("test.bar.archive");
    assert_eq!(bytes.len(), 896);
    let (reader, events) = events(&bytes).unwrap();

    let header = reader.header();
    assert_eq!(header.concurrent_collections, 4);
    assert_eq!(header.version, "0.1");
    assert_eq!(header.server_version, "3.4.3");
    assert_eq!(header.tool_version, "r3.4.3");

    let prelude = reader.prelude();
    assert_eq!(prelude.len(), 2);
    assert_eq!(
        (prelude[0].db.as_str(), prelude[0].collection.as_str()),
        ("test", "bar")
    );
    assert_eq!(
        prelude[0].metadata,
        r#"{"options":{},"indexes":[{"v":2,"key":{"_id":1},"name":"_id_","ns":"test.bar"}]}"#
    );
    assert_eq!(
        (prelude[1].db.as_str(), prelude[1].collection.as_str()),
        ("admin", "system.version")
    );
    assert!(prelude[1].metadata.contains(r#"{"$numberDecimal":"2"}"#));
    assert!(prelude.iter().all(|e| e.size == 0 && e.type_.is_empty()));
    assert!(!reader.prelude_has_type(), "r3.4.3 wrote no `type` field");

    let version = reader.namespace_index("admin", "system.version").unwrap();
    let bar = reader.namespace_index("test", "bar").unwrap();
    let fcv = bson::rawdoc! {"_id": "featureCompatibilityVersion", "version": "3.4"};
    let oid = ObjectId::parse_str("58ffb124b721bc6c3234333c").unwrap();
    let doc = bson::rawdoc! {"_id": oid, "foo": "bar"};
    let expected = vec![
        ArchiveEvent::SegmentStart {
            namespace: version,
            first: true,
        },
        ArchiveEvent::Document {
            namespace: version,
            document: fcv.clone(),
        },
        ArchiveEvent::NamespaceEnd {
            namespace: version,
            crc: stored_crc(-682_997_726_120_892_866),
            crc_checked: true,
        },
        ArchiveEvent::SegmentStart {
            namespace: bar,
            first: true,
        },
        ArchiveEvent::Document {
            namespace: bar,
            document: doc.clone(),
        },
        ArchiveEvent::NamespaceEnd {
            namespace: bar,
            crc: stored_crc(-7_824_457_949_569_593_127),
            crc_checked: true,
        },
    ];
    assert_eq!(events, expected);
    // The documented CRCs are the CRC-64/XZ of the body documents.
    assert_eq!(crc64(fcv.as_bytes()), 0xF685_812F_D02A_263E);
    assert_eq!(crc64(doc.as_bytes()), stored_crc(-7_824_457_949_569_593_127));
    assert_eq!(reader.max_open_namespaces(), 1);
    assert_eq!(reader.offset(), 896);
    assert!(reader.is_done());
}

#[test]
fn bad_format_archive_is_structurally_valid_but_its_metadata_is_not_json() {
    let bytes = fixture("bad-format.archive");
    assert_eq!(bytes.len(), 571);
    let (reader, events) = events(&bytes).unwrap();
    assert_eq!(reader.header().server_version, "4.0.14");
    assert_eq!(reader.header().tool_version, "r4.2.2");
    let ixtest = reader.namespace_index("test", "ixtest").unwrap();
    assert_eq!(
        events,
        vec![
            ArchiveEvent::SegmentStart {
                namespace: ixtest,
                first: true
            },
            ArchiveEvent::NamespaceEnd {
                namespace: ixtest,
                crc: 0,
                crc_checked: true
            },
        ]
    );
    // The real mongorestore fails on this archive while parsing the metadata, promptly: the
    // index key `"{"a":"b"}"` has unescaped quotes.
    let metadata = &reader.prelude()[0].metadata;
    assert!(metadata.contains(r#""key":{"{"a":"b"}":"#));
    assert!(serde_json::from_str::<serde_json::Value>(metadata).is_err());
}

#[test]
fn every_truncation_of_test_bar_archive_fails() {
    let bytes = fixture("test.bar.archive");
    for len in 0..bytes.len() {
        let result = ArchiveReader::new(&bytes[..len]).and_then(|mut r| r.drain());
        let err = result.expect_err(&format!("truncated at {len} must fail"));
        if len >= 4 {
            // Past the magic, the error names a position inside the truncated input.
            if let Some(offset) = err.offset() {
                assert!(offset <= len as u64, "{len}: {err}");
            }
        }
    }
    // The cut points of the real tool's TestMongorestoreShortArchive, and the full file.
    let size = bytes.len();
    for k in 1..=10 {
        let len = size - k * (size / 10);
        assert!(
            ArchiveReader::new(&bytes[..len]).and_then(|mut r| r.drain()).is_err(),
            "{len}"
        );
    }
    ArchiveReader::new(&bytes[..]).unwrap().drain().unwrap();
}

/// Reads an archive and writes its events back through the writer.
fn rewrite(bytes: &[u8]) -> Vec<u8> {
    let mut reader = ArchiveReader::new(bytes).unwrap();
    let mut writer =
        ArchiveWriter::with_prelude_style(Vec::new(), reader.header(), reader.prelude(), reader.prelude_has_type())
            .unwrap();
    let names: Vec<_> = reader.namespaces().iter().map(|n| n.namespace.clone()).collect();
    let index = |i: usize| writer_index(&writer, &names[i]);
    let mut map = Vec::new();
    for i in 0..names.len() {
        map.push(index(i));
    }
    while let Some(event) = reader.next_event().unwrap() {
        match event {
            ArchiveEvent::SegmentStart { namespace, .. } => writer.write_documents(map[namespace], &[]).unwrap(),
            ArchiveEvent::Document { namespace, document } => writer.write_document(map[namespace], &document).unwrap(),
            ArchiveEvent::NamespaceEnd { namespace, .. } => writer.close_namespace(map[namespace]).unwrap(),
        }
    }
    writer.finish().unwrap()
}

fn writer_index(writer: &ArchiveWriter<Vec<u8>>, ns: &tidemark_format::archive::Namespace) -> usize {
    writer.namespace_index(&ns.db, &ns.collection).unwrap()
}

#[test]
fn fixtures_round_trip_through_the_writer_byte_for_byte() {
    for name in ["test.bar.archive", "bad-format.archive"] {
        let bytes = fixture(name);
        assert!(rewrite(&bytes) == bytes, "{name} differs after rewriting");
    }
}

/// Yields one byte per `read`, with an `Interrupted` error before every byte.
struct Trickle<'a> {
    bytes: &'a [u8],
    interrupt: bool,
}

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.interrupt = !self.interrupt;
        if self.interrupt {
            return Err(std::io::ErrorKind::Interrupted.into());
        }
        let Some((first, rest)) = self.bytes.split_first() else {
            return Ok(0);
        };
        if buf.is_empty() {
            return Ok(0);
        }
        buf[0] = *first;
        self.bytes = rest;
        Ok(1)
    }
}

#[test]
fn short_reads_and_interruptions_do_not_change_the_result() {
    let bytes = fixture("test.bar.archive");
    let (_, expected) = events(&bytes).unwrap();
    let mut reader = ArchiveReader::new(Trickle {
        bytes: &bytes,
        interrupt: false,
    })
    .unwrap();
    let mut got = Vec::new();
    while let Some(event) = reader.next_event().unwrap() {
        got.push(event);
    }
    assert_eq!(got, expected);
    assert_eq!(reader.offset(), 896);
}
