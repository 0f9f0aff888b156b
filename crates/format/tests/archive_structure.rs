//! Every structural rule of the archive format, on archives assembled byte by byte here (not
//! with the crate's writer), each checked against the wording of the real `mongorestore` errors
//! quoted in the format notes (section 2.6).

use bson::{RawDocumentBuf, rawdoc};
use tidemark_format::archive::{ArchiveError, ArchiveEvent, ArchiveReader, crc64};

const MAGIC: [u8; 4] = [0x6D, 0xE2, 0x99, 0x81];
const TERM: [u8; 4] = [0xFF; 4];

/// An archive under construction.
struct Raw(Vec<u8>);

impl Raw {
    /// Magic, a header for server `server`, one metadata document per `(db, coll, type)`, TERM.
    fn prelude(server: &str, entries: &[(&str, &str, &str)]) -> Self {
        let mut bytes = MAGIC.to_vec();
        let header = rawdoc! {"concurrent_collections": 4, "version": "0.1", "server_version": server, "tool_version": "100.9.4"};
        bytes.extend_from_slice(header.as_bytes());
        for (db, coll, type_) in entries {
            let doc = rawdoc! {"db": *db, "collection": *coll, "metadata": "", "size": 0, "type": *type_};
            bytes.extend_from_slice(doc.as_bytes());
        }
        bytes.extend_from_slice(&TERM);
        Self(bytes)
    }

    fn standard() -> Self {
        Self::prelude("7.0.16", &[("test", "a", "collection"), ("test", "b", "collection")])
    }

    fn doc(mut self, doc: &RawDocumentBuf) -> Self {
        self.0.extend_from_slice(doc.as_bytes());
        self
    }

    fn term(mut self) -> Self {
        self.0.extend_from_slice(&TERM);
        self
    }

    fn header(self, db: &str, coll: &str, eof: bool, crc: u64) -> Self {
        let crc = i64::from_le_bytes(crc.to_le_bytes());
        self.doc(&rawdoc! {"db": db, "collection": coll, "EOF": eof, "CRC": crc})
    }

    /// A data segment of `docs` followed by TERM.
    fn segment(self, coll: &str, docs: &[RawDocumentBuf]) -> Self {
        let mut raw = self.header("test", coll, false, 0);
        for d in docs {
            raw = raw.doc(d);
        }
        raw.term()
    }

    /// An EOF block with the right CRC for `docs`.
    fn close(self, coll: &str, docs: &[RawDocumentBuf]) -> Self {
        let bytes: Vec<u8> = docs.iter().flat_map(|d| d.as_bytes().to_vec()).collect();
        self.header("test", coll, true, crc64(&bytes)).term()
    }

    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn read(&self) -> Result<Vec<ArchiveEvent>, ArchiveError> {
        let mut reader = ArchiveReader::new(&self.0[..])?;
        let mut out = Vec::new();
        while let Some(e) = reader.next_event()? {
            out.push(e);
        }
        Ok(out)
    }
}

fn docs() -> Vec<RawDocumentBuf> {
    vec![rawdoc! {"_id": 1, "x": "one"}, rawdoc! {"_id": 2, "x": "two"}]
}

#[test]
fn a_well_formed_interleaved_archive_reads() {
    let d = docs();
    let raw = Raw::standard()
        .segment("a", &d[..1])
        .segment("b", &[])
        .segment("a", &d[1..])
        .close("a", &d)
        .close("b", &[]);
    let mut reader = ArchiveReader::new(&raw.0[..]).unwrap();
    let mut documents = Vec::new();
    let mut firsts = 0;
    while let Some(event) = reader.next_event().unwrap() {
        match event {
            ArchiveEvent::Document { document, .. } => documents.push(document),
            ArchiveEvent::SegmentStart { first: true, .. } => firsts += 1,
            _ => {}
        }
    }
    assert_eq!(documents, d);
    assert_eq!(firsts, 2);
    assert_eq!(reader.max_open_namespaces(), 2);
    assert_eq!(reader.offset(), raw.len());
}

#[test]
fn wrong_magic_is_not_an_archive() {
    let mut raw = Raw::standard();
    raw.0[0] = 0x6C;
    let err = raw.read().unwrap_err();
    assert!(matches!(err, ArchiveError::NotAnArchive { .. }));
    assert!(
        err.to_string().contains("does not appear to be a mongodump archive"),
        "{err}"
    );
    // A plain BSON file is not an archive either.
    let err = ArchiveReader::new(rawdoc! {"a": 1}.as_bytes()).unwrap_err();
    assert!(matches!(err, ArchiveError::NotAnArchive { .. }));
}

#[test]
fn consecutive_terminators_are_rejected_at_their_offset() {
    let raw = Raw::standard();
    let at = raw.len();
    let err = raw.term().read().unwrap_err();
    assert!(
        err.to_string()
            .contains("consecutive terminators / headerless blocks are not allowed"),
        "{err}"
    );
    assert_eq!(err.offset(), Some(at));
    // An empty prelude block (terminator right after the magic) as well.
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&TERM);
    let err = ArchiveReader::new(&bytes[..]).unwrap_err();
    assert!(err.to_string().contains("consecutive terminators"), "{err}");
}

#[test]
fn invalid_lengths_and_missing_nul_are_corruption() {
    for size in [4u32, 0, 16 * 1024 * 1024 + 1, 0x8000_0000] {
        let mut raw = Raw::standard();
        let at = raw.len();
        raw.0.extend_from_slice(&size.to_le_bytes());
        raw.0.extend_from_slice(&[0; 8]);
        let err = raw.read().unwrap_err();
        assert!(
            err.to_string().contains(&format!(
                "{size} is neither a valid bson length nor a archive terminator"
            )),
            "{err}"
        );
        assert_eq!(err.offset(), Some(at));
    }
    let mut raw = Raw::standard().header("test", "a", false, 0);
    let last = raw.0.len() - 1;
    raw.0[last] = 7;
    let err = raw.read().unwrap_err();
    assert!(err.to_string().contains("doesn't end with a null byte"), "{err}");
}

#[test]
fn body_documents_outside_a_segment_are_rejected() {
    let d = docs();
    let raw =
        Raw::standard()
            .segment("a", &d)
            .header("test", "a", true, crc64(&[d[0].as_bytes(), d[1].as_bytes()].concat()));
    let at = raw.len();
    let err = raw.doc(&d[0]).read().unwrap_err();
    assert!(matches!(err, ArchiveError::DataWithoutHeader { .. }), "{err}");
    assert!(err.to_string().contains("collection data without a collection header"));
    assert_eq!(err.offset(), Some(at));
}

#[test]
fn a_namespace_cannot_reopen_after_its_eof() {
    let err = Raw::standard()
        .segment("a", &[])
        .close("a", &[])
        .segment("a", &[])
        .read()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("namespace header for already opened namespace"),
        "{err}"
    );
    let err = Raw::standard().close("a", &[]).close("a", &[]).read().unwrap_err();
    assert!(matches!(err, ArchiveError::NamespaceClosed { .. }), "{err}");
}

#[test]
fn an_eof_block_without_data_segments_is_accepted_like_the_real_tool() {
    let events = Raw::standard().close("a", &[]).close("b", &[]).read().unwrap();
    assert_eq!(events.len(), 2);
    assert!(matches!(
        events[0],
        ArchiveEvent::NamespaceEnd {
            crc: 0,
            crc_checked: true,
            ..
        }
    ));
}

#[test]
fn namespace_headers_are_decoded_strictly() {
    let cases = [
        (
            rawdoc! {"db": "test", "collection": "a", "EOF": false, "CRC": 0_i64, "extra": 1},
            "unknown BSON NamespaceHeader: `extra`",
        ),
        (
            rawdoc! {"db": "test", "collection": "a", "EOF": false, "CRC": 0_i32},
            "`CRC` is BSON",
        ),
        (
            rawdoc! {"db": "test", "collection": "a", "EOF": 0, "CRC": 0_i64},
            "`EOF` is BSON",
        ),
        (
            rawdoc! {"db": 1, "collection": "a", "EOF": false, "CRC": 0_i64},
            "`db` is BSON",
        ),
        (
            rawdoc! {"db": "test", "collection": 2.5, "EOF": false, "CRC": 0_i64},
            "`collection` is BSON",
        ),
        (
            rawdoc! {"db": "test", "collection": "", "EOF": false, "CRC": 0_i64},
            "collection header is missing a Collection",
        ),
        (
            rawdoc! {"db": "test", "EOF": false, "CRC": 0_i64},
            "collection header is missing a Collection",
        ),
    ];
    for (header, message) in cases {
        let raw = Raw::standard();
        let at = raw.len();
        let err = raw.doc(&header).term().read().unwrap_err();
        assert!(matches!(err, ArchiveError::BadNamespaceHeader { .. }), "{err}");
        assert!(err.to_string().contains(message), "{err} does not contain {message}");
        assert_eq!(err.offset(), Some(at));
    }
}

#[test]
fn crc_mismatch_uses_the_real_tool_wording() {
    let d = docs();
    let good = crc64(&[d[0].as_bytes(), d[1].as_bytes()].concat());
    let err = Raw::standard()
        .segment("a", &d)
        .header("test", "a", true, good ^ 1)
        .term()
        .read()
        .unwrap_err();
    assert_eq!(
        err.to_string().split(" (EOF block").next().unwrap(),
        format!("CRC mismatch for namespace `test.a`, {good}!={}", good ^ 1)
    );
    // The stored CRC is the uint64 bit pattern in an int64: a "negative" CRC must match too.
    let negative = (0..64)
        .map(|i| rawdoc! {"k": i})
        .find(|d| crc64(d.as_bytes()) >> 63 == 1)
        .unwrap();
    let crc = crc64(negative.as_bytes());
    let raw = Raw::standard()
        .segment("a", &[negative])
        .header("test", "a", true, crc)
        .term()
        .close("b", &[]);
    raw.read().unwrap();
}

#[test]
fn muted_namespaces_skip_documents_and_the_crc_check() {
    let d = docs();
    let raw = Raw::standard()
        .segment("a", &d)
        .header("test", "a", true, 12345)
        .term()
        .segment("b", &d)
        .close("b", &d);
    let mut reader = ArchiveReader::new(&raw.0[..]).unwrap();
    let a = reader.namespace_index("test", "a").unwrap();
    let b = reader.namespace_index("test", "b").unwrap();
    reader.mute(a);
    let mut events = Vec::new();
    while let Some(e) = reader.next_event().unwrap() {
        events.push(e);
    }
    let docs_of = |ns| {
        events
            .iter()
            .filter(|e| matches!(e, ArchiveEvent::Document { namespace, .. } if *namespace == ns))
            .count()
    };
    assert_eq!((docs_of(a), docs_of(b)), (0, 2));
    assert!(events.contains(&ArchiveEvent::NamespaceEnd {
        namespace: a,
        crc: 12345,
        crc_checked: false
    }));
    assert_eq!(
        reader.namespace_totals(a),
        Some((2, (d[0].as_bytes().len() + d[1].as_bytes().len()) as u64))
    );
}

#[test]
fn end_of_input_is_only_legal_between_blocks() {
    let d = docs();
    // Inside a segment (after a complete document, before the terminator).
    let raw = Raw::standard().header("test", "a", false, 0).doc(&d[0]);
    let err = raw.read().unwrap_err();
    assert!(err.to_string().contains("unexpected EOF"), "{err}");
    assert_eq!(err.offset(), Some(raw.len()));
    // After an EOF header, before its terminator.
    let err = Raw::standard()
        .segment("a", &[])
        .header("test", "a", true, 0)
        .read()
        .unwrap_err();
    assert!(err.to_string().contains("unexpected EOF"), "{err}");
    // Inside the prelude, and right after the magic.
    let err = ArchiveReader::new(&Raw::standard().0[..40]).unwrap_err();
    assert!(err.to_string().contains("corruption found in archive"), "{err}");
    assert!(ArchiveReader::new(&MAGIC[..]).is_err());
    assert!(ArchiveReader::new(&MAGIC[..2]).is_err());
}

#[test]
fn unfinished_and_unseen_namespaces_fail_at_the_end() {
    let raw = Raw::standard().segment("a", &[]).segment("b", &[]).close("b", &[]);
    let err = raw.read().unwrap_err();
    assert!(
        err.to_string()
            .contains(r#"archive finished but contained files were unfinished ("test.a")"#),
        "{err}"
    );
    assert_eq!(err.offset(), Some(raw.len()));
    let err = Raw::standard().segment("a", &[]).close("a", &[]).read().unwrap_err();
    assert!(
        err.to_string()
            .contains("archive finished before all collections were seen (`test.b`)"),
        "{err}"
    );
    // A prelude with no entries and no blocks is a complete (empty) archive.
    assert_eq!(Raw::prelude("7.0.16", &[]).read().unwrap(), vec![]);
}

#[test]
fn namespaces_missing_from_the_prelude_are_rejected() {
    let err = Raw::standard().segment("zzz", &[]).read().unwrap_err();
    assert!(matches!(err, ArchiveError::UnknownNamespace { .. }), "{err}");
    assert!(err.to_string().contains("no intent for namespace `test.zzz`"), "{err}");
}

#[test]
fn timeseries_data_lives_in_the_buckets_namespace_before_8_3() {
    let bucket = rawdoc! {"_id": 1, "control": {"version": 1}};
    let old = Raw::prelude("5.0.0-rc0", &[("test", "ts", "timeseries")]);
    let ok = Raw(old.0.clone())
        .header("test", "system.buckets.ts", false, 0)
        .doc(&bucket)
        .term();
    let ok = ok
        .header("test", "system.buckets.ts", true, crc64(bucket.as_bytes()))
        .term();
    ok.read().unwrap();
    let err = old.segment("ts", &[]).read().unwrap_err();
    assert!(matches!(err, ArchiveError::UnknownNamespace { .. }), "{err}");
    // From 8.3 on, data uses the collection's own name.
    Raw::prelude("8.3.0", &[("test", "ts", "timeseries")])
        .segment("ts", &[])
        .close("ts", &[])
        .read()
        .unwrap();
}

#[test]
fn prelude_documents_are_read_tolerantly() {
    let mut bytes = MAGIC.to_vec();
    // Unknown fields, int64 size, no type; header without tool_version.
    bytes.extend_from_slice(
        rawdoc! {"concurrent_collections": 2_i64, "version": "0.1", "server_version": "4.4.0", "x": true}.as_bytes(),
    );
    bytes.extend_from_slice(
        rawdoc! {"db": "d", "collection": "c", "metadata": "{}", "size": 10_i64, "other": [1]}.as_bytes(),
    );
    bytes.extend_from_slice(&TERM);
    let reader = ArchiveReader::new(&bytes[..]).unwrap();
    assert_eq!(reader.header().concurrent_collections, 2);
    assert_eq!(reader.header().tool_version, "");
    assert_eq!((reader.prelude()[0].size, reader.prelude()[0].type_.as_str()), (10, ""));
    // A known field of the wrong type is an error naming it.
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(rawdoc! {"concurrent_collections": "four"}.as_bytes());
    bytes.extend_from_slice(&TERM);
    let err = ArchiveReader::new(&bytes[..]).unwrap_err();
    assert!(err.to_string().contains("concurrent_collections"), "{err}");
}

#[test]
fn after_an_error_the_reader_stays_failed() {
    let raw = Raw::standard().term();
    let mut reader = ArchiveReader::new(&raw.0[..]).unwrap();
    assert!(reader.next_event().is_err());
    assert!(matches!(reader.next_event(), Err(ArchiveError::Failed(_))));
}
