//! Property tests: the archive reader terminates with `Ok` or `Err` on any input, never panics,
//! and makes progress (every event consumes bytes); archives written from arbitrary document sets
//! read back unchanged.

use std::path::PathBuf;

use bson::{RawDocumentBuf, rawdoc};
use proptest::prelude::*;
use tidemark_format::archive::{ArchiveEvent, ArchiveHeader, ArchiveReader, ArchiveWriter, PreludeEntry};

const MAGIC: [u8; 4] = [0x6D, 0xE2, 0x99, 0x81];

fn fixture() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/mongo-tools/mongorestore/testdata/test.bar.archive");
    std::fs::read(path).expect("test.bar.archive fixture")
}

/// Reads to the end; checks that the number of events is bounded by the input size.
fn read_all(bytes: &[u8]) -> Result<usize, String> {
    let mut reader = ArchiveReader::new(bytes).map_err(|e| e.to_string())?;
    let mut events = 0usize;
    loop {
        match reader.next_event_ref() {
            Ok(Some(_)) => {
                events += 1;
                // Every event consumes at least one 5-byte document.
                assert!(
                    events * 5 <= bytes.len(),
                    "no progress: {events} events from {} bytes",
                    bytes.len()
                );
            }
            Ok(None) => return Ok(events),
            Err(e) => {
                assert!(reader.next_event_ref().is_err(), "a failed reader must stay failed");
                return Err(e.to_string());
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    Duplicate(usize, usize),
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    let at = |i: usize, len: usize| i % (len + 1);
    match m {
        Mutation::Flip(i, x) => {
            let len = bytes.len();
            bytes[i % len] ^= x | 1;
        }
        Mutation::Insert(i, data) => {
            let i = at(*i, bytes.len());
            bytes.splice(i..i, data.iter().copied());
        }
        Mutation::Delete(i, n) => {
            let i = at(*i, bytes.len());
            let end = (i + n).min(bytes.len());
            bytes.drain(i..end);
        }
        Mutation::Truncate(i) => bytes.truncate(at(*i, bytes.len())),
        Mutation::Duplicate(i, n) => {
            let i = at(*i, bytes.len());
            let end = (i + n).min(bytes.len());
            let chunk = bytes[i..end].to_vec();
            bytes.splice(end..end, chunk);
        }
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, x)| Mutation::Flip(i, x)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..12)).prop_map(|(i, d)| Mutation::Insert(i, d)),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1usize..80).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
    ]
}

/// An archive written by the crate from a small random plan: per step, a namespace and a number.
fn written_archive(plan: &[(usize, i32)], namespaces: usize) -> (Vec<u8>, Vec<Vec<RawDocumentBuf>>) {
    let names: Vec<PreludeEntry> = (0..namespaces)
        .map(|i| PreludeEntry::new("db", format!("c{i}"), "", "collection"))
        .collect();
    let header = ArchiveHeader::new(i32::try_from(namespaces).unwrap(), "7.0.16", "t");
    let mut writer = ArchiveWriter::new(Vec::new(), &header, &names).unwrap();
    let mut expected = vec![Vec::new(); namespaces];
    for &(ns, n) in plan {
        let doc = rawdoc! {"_id": n, "ns": i32::try_from(ns).unwrap(), "s": "v".repeat(usize::try_from(n.rem_euclid(20)).unwrap())};
        writer.write_document(ns, &doc).unwrap();
        expected[ns].push(doc);
    }
    for ns in 0..namespaces {
        writer.close_namespace(ns).unwrap();
    }
    (writer.finish().unwrap(), expected)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), with_magic in any::<bool>()) {
        let mut input = if with_magic { MAGIC.to_vec() } else { Vec::new() };
        input.extend(bytes);
        let _ = read_all(&input);
    }

    #[test]
    fn mutated_fixture_never_panics(mutations in prop::collection::vec(mutation(), 1..4)) {
        let mut bytes = fixture();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        let _ = read_all(&bytes);
    }

    #[test]
    fn mutated_written_archives_never_panic(
        plan in prop::collection::vec((0usize..3, any::<i32>()), 0..20),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let (mut bytes, _) = written_archive(&plan, 3);
        for m in &mutations {
            apply(&mut bytes, m);
        }
        let _ = read_all(&bytes);
    }

    #[test]
    fn written_archives_read_back_unchanged(plan in prop::collection::vec((0usize..4, any::<i32>()), 0..40)) {
        let (bytes, expected) = written_archive(&plan, 4);
        let mut reader = ArchiveReader::new(&bytes[..]).unwrap();
        let mut got = vec![Vec::new(); 4];
        while let Some(event) = reader.next_event().unwrap() {
            if let ArchiveEvent::Document { namespace, document } = event {
                got[namespace].push(document);
            }
        }
        prop_assert_eq!(got, expected);
    }
}
