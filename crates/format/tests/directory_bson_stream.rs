//! BSON stream reading and `--objcheck` validation against the bsondump fixtures (FORMATS.md
//! 6.4), plus property tests: arbitrary bytes never panic or hang the reader or the validator,
//! and file-name escaping round-trips.

use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use tidemark_format::bson_stream::{
    BsonReader, MAX_DOCUMENT_SIZE, MAX_OPLOG_DOCUMENT_SIZE, StreamError, ValidationReason, validate_bytes,
    validate_document,
};
use tidemark_format::naming::{file_stem, is_shortened_stem, query_escape, query_unescape, query_unescape_bytes};

fn bsondump(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/mongo-tools/bsondump/testdata")
        .join(name)
}

/// Reads a fixture with bsondump's limit and validates every document; returns per-document
/// validation results, or the stream error.
fn objcheck(name: &str) -> Result<Vec<bool>, StreamError> {
    let bytes = fs::read(bsondump(name)).unwrap();
    let mut reader = BsonReader::new(&bytes[..], MAX_OPLOG_DOCUMENT_SIZE);
    let mut out = Vec::new();
    while let Some(doc) = reader.next_document()? {
        out.push(validate_document(&doc).is_ok());
    }
    Ok(out)
}

#[test]
fn valid_fixtures_pass() {
    assert_eq!(objcheck("sample.bson").unwrap(), [true; 4]);
    assert_eq!(objcheck("all_types.bson").unwrap(), [true; 20]);
    assert_eq!(objcheck("all_in_one_doc.bson").unwrap(), [true]);
    // 500 levels of nesting.
    assert_eq!(objcheck("deep_nested.bson").unwrap(), [true]);
    // Array keys out of sequence are accepted.
    assert_eq!(objcheck("broken_array.bson").unwrap(), [true; 20]);
}

#[test]
fn malformed_fixtures_fail() {
    // bad_type: element type byte 0xAA in the first document.
    let bytes = fs::read(bsondump("bad_type.bson")).unwrap();
    let doc = BsonReader::new(&bytes[..], MAX_DOCUMENT_SIZE)
        .next_document()
        .unwrap()
        .unwrap();
    let err = validate_document(&doc).unwrap_err();
    assert_eq!(err.reason, ValidationReason::UnknownType(0xAA));
    assert_eq!(err.offset, 0x15);
    assert!(err.to_string().contains("byte offset 21"), "{err}");
    // bad_cstring: exactly one document is structurally broken, the other three are fine.
    let results = objcheck("bad_cstring.bson").unwrap();
    assert_eq!(results.iter().filter(|ok| !**ok).count(), 1, "{results:?}");
    assert_eq!(results.len(), 4);
    // invalid_field_name: a stray trailing byte is an incomplete length prefix.
    assert!(matches!(
        objcheck("invalid_field_name.bson"),
        Err(StreamError::Truncated {
            declared: 0,
            present: 1,
            ..
        })
    ));
    // partial_file: 2 complete docs + a truncated third (length 48, 13 bytes present).
    let err = objcheck("partial_file.bson").unwrap_err();
    assert!(
        matches!(
            err,
            StreamError::Truncated {
                declared: 48,
                present: 13,
                ..
            }
        ),
        "{err}"
    );
    // random_bytes: the first length is far beyond the maximum.
    let err = objcheck("random_bytes.bson").unwrap_err();
    assert!(
        err.to_string().contains("larger than maximum of 16793600 bytes"),
        "{err}"
    );
}

#[test]
fn oplog_size_limit_is_exact() {
    // A document of exactly 16 MiB + 16 KiB is accepted by bsondump; one byte more is not.
    let size = MAX_OPLOG_DOCUMENT_SIZE;
    let mut doc = Vec::with_capacity(size);
    doc.extend_from_slice(&i32::try_from(size).unwrap().to_le_bytes());
    doc.push(0x05);
    doc.extend_from_slice(b"b\0");
    let bin_len = size - 4 - 1 - 2 - 4 - 1 - 1;
    doc.extend_from_slice(&i32::try_from(bin_len).unwrap().to_le_bytes());
    doc.push(0);
    doc.resize(size - 1, 7);
    doc.push(0);
    let d = BsonReader::new(&doc[..], MAX_OPLOG_DOCUMENT_SIZE)
        .next_document()
        .unwrap()
        .unwrap();
    validate_document(&d).unwrap();
    let mut bigger = doc.clone();
    bigger[..4].copy_from_slice(&i32::try_from(size + 1).unwrap().to_le_bytes());
    bigger.insert(size - 1, 0);
    let err = BsonReader::new(&bigger[..], MAX_OPLOG_DOCUMENT_SIZE)
        .next_document()
        .unwrap_err();
    assert!(
        err.to_string().contains("is larger than maximum of 16793600 bytes"),
        "{err}"
    );
}

#[test]
fn hostile_nesting_does_not_overflow_the_stack() {
    // One million nested documents: {"":{"":{...}}}, 7 bytes of overhead per level.
    let depth = 1_000_000usize;
    let total = 5 + 7 * depth;
    let mut bytes = Vec::with_capacity(total);
    for level in 0..depth {
        let len = i32::try_from(total - 7 * level).unwrap();
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.extend_from_slice(&[0x03, 0x00]);
    }
    bytes.extend_from_slice(&5i32.to_le_bytes());
    bytes.push(0);
    bytes.extend(std::iter::repeat_n(0u8, depth));
    assert_eq!(bytes.len(), total);
    validate_bytes(&bytes).unwrap();
    // Corrupt the innermost terminator: caught, with its offset.
    let innermost = 7 * depth + 4;
    bytes[innermost] = 0x0A;
    let err = validate_bytes(&bytes).unwrap_err();
    assert!(err.offset >= innermost, "{err}");
}

/// Whether the bson crate can walk every element, recursively (its only complaint allowed is
/// UTF-8, which `--objcheck` does not check).
fn iterates_fully(d: &bson::RawDocument) -> bool {
    let utf8 = |e: &bson::raw::Error| e.to_string().to_lowercase().contains("utf-8");
    d.iter().all(|e| match e {
        Ok((_, bson::RawBsonRef::Document(sub))) => iterates_fully(sub),
        Ok((_, bson::RawBsonRef::Array(arr))) => arr.into_iter().all(|v| match v {
            Ok(bson::RawBsonRef::Document(sub)) => iterates_fully(sub),
            Ok(_) => true,
            Err(e) => utf8(&e),
        }),
        Ok(_) => true,
        Err(e) => utf8(&e),
    })
}

fn arbitrary_doc() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        any::<i32>().prop_map(bson::Bson::Int32),
        any::<i64>().prop_map(bson::Bson::Int64),
        any::<f64>().prop_map(bson::Bson::Double),
        ".{0,8}".prop_map(bson::Bson::String),
        any::<bool>().prop_map(bson::Bson::Boolean),
        Just(bson::Bson::Null),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(|bytes| bson::Bson::Binary(bson::Binary {
            subtype: bson::spec::BinarySubtype::Generic,
            bytes
        })),
    ];
    let value = leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(bson::Bson::Array),
            proptest::collection::vec(("[a-z]{0,3}", inner), 0..4)
                .prop_map(|kv| bson::Bson::Document(kv.into_iter().collect())),
        ]
    });
    proptest::collection::vec(("[a-z]{1,3}", value), 0..5).prop_map(|kv| {
        let doc: bson::Document = kv.into_iter().collect();
        bson::to_vec(&doc).unwrap()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn reader_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut reader = BsonReader::new(&bytes[..], MAX_DOCUMENT_SIZE);
        // Each step consumes at least 5 bytes or stops, so this terminates.
        for _ in 0..=bytes.len() {
            match reader.next_document() {
                Ok(Some(doc)) => { let _ = validate_document(&doc); }
                Ok(None) | Err(_) => break,
            }
        }
    }

    #[test]
    fn validator_never_panics_and_accepts_what_bson_encodes(doc in arbitrary_doc(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4)) {
        prop_assert!(validate_bytes(&doc).is_ok());
        let mut mutated = doc.clone();
        for (i, b) in flips {
            let at = i.index(mutated.len());
            mutated[at] = b;
        }
        let _ = validate_bytes(&mutated);
        // What we accept, the bson crate can iterate fully (types and lengths are consistent).
        if validate_bytes(&mutated).is_ok()
            && let Ok(raw) = bson::RawDocument::from_bytes(&mutated)
        {
            prop_assert!(iterates_fully(raw), "{:?}", mutated);
        }
    }

    #[test]
    fn escape_round_trips(name in "\\PC{0,40}") {
        let escaped = query_escape(&name);
        prop_assert!(escaped.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~+%".contains(&b)));
        prop_assert_eq!(query_unescape(&escaped).unwrap(), name);
    }

    #[test]
    fn unescape_never_panics(input in "[%+a-fA-F0-9zZ]{0,12}") {
        let _ = query_unescape_bytes(&input);
    }

    #[test]
    fn stems_fit_in_255_bytes_with_any_extension(name in "[a-z/é ]{100,300}") {
        let stem = file_stem(&name);
        prop_assert!(stem.len() <= 238);
        prop_assert!(stem.len() + ".metadata.json.gz".len() <= 255);
        if query_escape(&name).len() > 238 {
            prop_assert!(is_shortened_stem(&stem));
        } else {
            prop_assert_eq!(query_unescape(&stem).unwrap(), name);
        }
    }
}

/// Every document of `path` as read by the data-file reader (direct I/O where the filesystem
/// allows it), or the stream error.
fn read_data_file(path: &Path, gzip: bool) -> Result<Vec<Vec<u8>>, StreamError> {
    let mut reader = tidemark_format::directory::open_bson_file(path, gzip, MAX_OPLOG_DOCUMENT_SIZE).unwrap();
    let mut docs = Vec::new();
    while let Some(doc) = reader.next_document()? {
        docs.push(doc.into_bytes());
    }
    Ok(docs)
}

#[test]
fn data_files_give_the_in_memory_reader_s_documents_and_errors() {
    // The fixtures, valid and broken, read from their files as a restore reads them.
    for name in [
        "sample.bson",
        "broken_array.bson",
        "bad_cstring.bson",
        "invalid_field_name.bson",
        "partial_file.bson",
        "random_bytes.bson",
    ] {
        let bytes = fs::read(bsondump(name)).unwrap();
        let in_memory: Result<Vec<Vec<u8>>, StreamError> = BsonReader::new(&bytes[..], MAX_OPLOG_DOCUMENT_SIZE)
            .map(|d| d.map(bson::RawDocumentBuf::into_bytes))
            .collect();
        let from_file = read_data_file(&bsondump(name), false);
        match (in_memory, from_file) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{name}"),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{name}"),
            (a, b) => panic!("{name}: {a:?} against {b:?}"),
        }
    }
}

#[test]
fn data_files_of_every_length_read_back_document_for_document() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    // Documents of uneven sizes (one of 16 MiB), so that they straddle the reader's 4 KiB blocks and
    // 1 MiB buffers, then filler documents that end the file exactly on a 1 MiB boundary.
    let mut docs: Vec<Vec<u8>> = (0..3000_i32)
        .map(|i| {
            let pad = vec![u8::try_from(i % 251).unwrap(); usize::try_from(i * 7 % 2500).unwrap()];
            bson::rawdoc! {"i": i, "pad": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: pad }}
                .into_bytes()
        })
        .collect();
    let big = vec![7u8; MAX_DOCUMENT_SIZE - 40];
    docs.push(
        bson::rawdoc! {"big": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: big }}.into_bytes(),
    );
    let mut total: usize = docs.iter().map(Vec::len).sum();
    let boundary = total.next_multiple_of(1 << 20) + (1 << 20);
    while total < boundary {
        let left = boundary - total;
        // A document holding only a binary field "p" takes 13 bytes besides the binary's bytes.
        let pad = if left >= 2 * 4096 { 4096 } else { left - 13 };
        let doc =
            bson::rawdoc! {"p": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: vec![1u8; pad] }}
                .into_bytes();
        total += doc.len();
        docs.push(doc);
    }
    assert_eq!(total, boundary, "the filler ends the file on a 1 MiB boundary");
    let bytes = docs.concat();
    let plain = dir.path().join("c.bson");
    fs::write(&plain, &bytes).unwrap();
    assert_eq!(read_data_file(&plain, false).unwrap(), docs);
    let gz = dir.path().join("c.bson.gz");
    let mut encoder = flate2::write::GzEncoder::new(fs::File::create(&gz).unwrap(), flate2::Compression::fast());
    encoder.write_all(&bytes).unwrap();
    encoder.finish().unwrap();
    assert_eq!(read_data_file(&gz, true).unwrap(), docs);

    // Cut anywhere, the file reads as the documents before the cut, then names the one cut short
    // by its offset (or ends cleanly when the cut falls between documents).
    let starts: Vec<usize> = docs
        .iter()
        .scan(0, |at, d| {
            let start = *at;
            *at += d.len();
            Some(start)
        })
        .collect();
    let cut_file = dir.path().join("cut.bson");
    for cut in [
        0,
        1,
        4096,
        4097,
        1 << 20,
        (1 << 20) + 3,
        starts[2000],
        starts[3000] + 100,
        bytes.len() - 1,
    ] {
        fs::write(&cut_file, &bytes[..cut]).unwrap();
        let whole = starts.iter().filter(|&&s| s < cut).count();
        let last_start = starts[whole.saturating_sub(1)];
        match read_data_file(&cut_file, false) {
            Ok(read) => {
                assert!(starts.contains(&cut) || cut == 0, "cut at {cut} read cleanly");
                assert_eq!(read, docs[..read.len()], "cut at {cut}");
            }
            Err(e) => {
                assert_eq!(e.offset(), last_start as u64, "cut at {cut}: {e}");
                assert!(matches!(e, StreamError::Truncated { .. }), "cut at {cut}: {e}");
            }
        }
    }
}
