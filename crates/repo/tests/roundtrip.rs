//! Backup → repository → read/export round trips, with real mongodump fixtures.

mod common;

use bson::{RawDocumentBuf, rawdoc};
use common::*;
use tidemark_repo::export::{export_archive, export_directory};
use tidemark_repo::{
    CommitOptions, NamespaceMetadata, OplogWindow, RepoError, Repository, SnapshotReader, SnapshotWriter, Storage,
    StorageConfig, Timestamp,
};

/// Backs up the real `oplogdump` fixture (admin.system.version, db1.c1 and oplog.bson).
async fn backup_oplogdump(repo: &Repository) -> tidemark_repo::Id {
    let root = fixture("mongorestore/testdata/oplogdump");
    let mut writer = SnapshotWriter::new(repo, progress()).await.unwrap();
    writer.set_member("rs0", "replset");
    writer.set_server_version("3.6.0");
    for (db, coll) in [("admin", "system.version"), ("db1", "c1")] {
        let meta = std::fs::read_to_string(root.join(db).join(format!("{coll}.metadata.json"))).unwrap();
        let mut ns = writer
            .begin_namespace(&format!("{db}.{coll}"), NamespaceMetadata::from_json(meta))
            .await
            .unwrap();
        for doc in read_bson_file(&root.join(db).join(format!("{coll}.bson"))) {
            ns.write_document(&doc).await.unwrap();
        }
        ns.finish().await.unwrap();
    }
    let mut oplog = writer.begin_oplog();
    for doc in read_bson_file(&root.join("oplog.bson")) {
        oplog.write_document(&doc).await.unwrap();
    }
    oplog.finish().await.unwrap();
    let options = CommitOptions {
        consistency_ts: Some(Timestamp { t: 1_500_000_000, i: 7 }),
        tags: vec!["nightly".into()],
        label: Some("cluster-a".into()),
        ..CommitOptions::default()
    };
    writer.commit(options).await.unwrap().0
}

/// Oplog `ts` values as pymongo reads them (an independent BSON decoder).
fn pymongo_oplog_ts(path: &std::path::Path) -> Vec<(u32, u32)> {
    let script =
        "import bson,sys\nfor d in bson.decode_all(open(sys.argv[1],'rb').read()): print(d['ts'].time, d['ts'].inc)";
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (t, i) = l.split_once(' ').unwrap();
            (t.parse().unwrap(), i.parse().unwrap())
        })
        .collect()
}

async fn fixture_round_trip(storage: Storage) {
    let repo = Repository::init(storage.clone(), Some(PASSWORD), &test_options())
        .await
        .unwrap();
    let id = backup_oplogdump(&repo).await;
    // Reopen from storage alone.
    let repo = Repository::open(storage, Some(PASSWORD)).await.unwrap();
    let reader = SnapshotReader::open(&repo, &id).await.unwrap();
    let snap = reader.snapshot();
    assert_eq!(snap.label, "cluster-a");
    assert_eq!(snap.tags, ["nightly"]);
    assert_eq!(snap.consistency_ts, Some(Timestamp { t: 1_500_000_000, i: 7 }));
    assert_eq!(snap.members.len(), 1);
    let member = &snap.members[0];
    assert_eq!(member.name, "rs0");

    let root = fixture("mongorestore/testdata/oplogdump");
    // FORMATS.md: db1.c1 holds 5 documents and has uuid 699f503d…
    let (_, c1) = reader.find_namespace("db1.c1").unwrap();
    assert_eq!(c1.data.documents, 5);
    assert_eq!(c1.uuid.as_deref(), Some("699f503df64b4aa8a484a8052046fa3a"));
    assert_eq!(
        c1.metadata_json.as_deref(),
        Some(
            std::fs::read_to_string(root.join("db1/c1.metadata.json"))
                .unwrap()
                .as_str()
        )
    );
    for ns in &member.namespaces {
        let original = read_bson_file(&root.join(&ns.db).join(format!("{}.bson", ns.collection)));
        let mut stream = reader.documents(member, ns);
        let mut got = Vec::new();
        while let Some(doc) = stream.next_document().await.unwrap() {
            got.push(doc);
        }
        assert_eq!(got, original, "{}", ns.name());
    }
    // Oplog window: first/last `ts` as pymongo decodes them from the fixture.
    let ts = pymongo_oplog_ts(&root.join("oplog.bson"));
    assert_eq!(ts.len(), 3);
    let window = member.oplog.as_ref().unwrap().window.unwrap();
    assert_eq!(
        window,
        OplogWindow {
            first: Timestamp { t: ts[0].0, i: ts[0].1 },
            last: Timestamp { t: ts[2].0, i: ts[2].1 },
        }
    );

    // Export as a dump directory: every file byte-identical to what mongodump wrote.
    let out = tempfile::tempdir().unwrap();
    let stats = export_directory(&reader, None, out.path(), false).await.unwrap();
    assert_eq!(stats.namespaces, 2);
    for rel in [
        "db1/c1.bson",
        "db1/c1.metadata.json",
        "admin/system.version.bson",
        "oplog.bson",
    ] {
        assert_eq!(
            std::fs::read(out.path().join(rel)).unwrap(),
            std::fs::read(root.join(rel)).unwrap(),
            "{rel}"
        );
    }
    assert_eq!(pymongo_oplog_ts(&out.path().join("oplog.bson")), ts);

    // Export as an archive: readable by the archive reader, with the same documents.
    let (bytes, stats) = export_archive(&reader, None, Vec::new()).await.unwrap();
    assert_eq!(stats.documents, 5 + 1 + 3);
    tidemark_format::archive::ArchiveReader::new(&bytes[..])
        .unwrap()
        .drain()
        .unwrap();
}

#[tokio::test]
async fn fixture_round_trip_memory() {
    fixture_round_trip(memory().await).await;
}

#[tokio::test]
async fn fixture_round_trip_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path().to_str().unwrap(), &StorageConfig::default())
        .await
        .unwrap();
    fixture_round_trip(storage).await;
    // The layout on disk is the documented one.
    for sub in ["config", "keys", "data", "index", "snapshots"] {
        assert!(dir.path().join(sub).exists(), "{sub}");
    }
}

#[tokio::test]
async fn large_namespace_round_trip_is_byte_exact() {
    let (_, repo) = init_memory().await;
    let docs = documents(3000, &[], 0);
    let mut writer = SnapshotWriter::new(&repo, progress()).await.unwrap();
    let mut ns = writer
        .begin_namespace("shop.orders", NamespaceMetadata::default())
        .await
        .unwrap();
    for d in &docs {
        ns.write_document(d).await.unwrap();
    }
    let data = ns.finish().await.unwrap();
    let (id, stats) = writer.commit(CommitOptions::default()).await.unwrap();
    let chunks = chunk_ids(&repo, &data).await.len();
    assert!(chunks > 100, "content-defined chunking produced {chunks} chunks");
    assert_eq!(stats.total_bytes, concat(&docs).len() as u64);
    assert_eq!(stats.documents, 3000);

    let reader = SnapshotReader::open(&repo, &id).await.unwrap();
    let (member, entry) = reader.find_namespace("shop.orders").unwrap();
    let mut stream = reader.documents(member, entry);
    let mut got = Vec::new();
    while let Some(doc) = stream.next_document().await.unwrap() {
        got.extend_from_slice(doc.as_bytes());
    }
    assert_eq!(got, concat(&docs));

    // Export and read back with pymongo: same documents, same bytes once re-encoded.
    let out = tempfile::tempdir().unwrap();
    export_directory(&reader, None, out.path(), false).await.unwrap();
    let exported = out.path().join("shop/orders.bson");
    assert_eq!(std::fs::read(&exported).unwrap(), concat(&docs));
    let script = "import bson,sys,hashlib\nds=bson.decode_all(open(sys.argv[1],'rb').read())\nprint(len(ds), hashlib.sha256(b''.join(bson.encode(d) for d in ds)).hexdigest())";
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&exported)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    use sha2::Digest;
    let expected = format!("3000 {}\n", hex::encode(sha2::Sha256::digest(concat(&docs))));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
}

#[tokio::test]
async fn several_members_under_one_consistency_timestamp() {
    let (_, repo) = init_memory().await;
    let mut writer = SnapshotWriter::new(&repo, progress()).await.unwrap();
    for (member, role) in [("shard01", "shard"), ("shard02", "shard"), ("configRS", "config")] {
        writer.set_member(member, role);
        let mut ns = writer
            .begin_namespace("app.users", NamespaceMetadata::default())
            .await
            .unwrap();
        for d in documents(10, &[], u64::try_from(member.len()).unwrap()) {
            ns.write_document(&d).await.unwrap();
        }
        ns.finish().await.unwrap();
    }
    let ts = Timestamp { t: 1_700_000_000, i: 1 };
    let (id, _) = writer
        .commit(CommitOptions {
            consistency_ts: Some(ts),
            ..CommitOptions::default()
        })
        .await
        .unwrap();
    let reader = SnapshotReader::open(&repo, &id).await.unwrap();
    let names: Vec<_> = reader
        .members()
        .iter()
        .map(|m| (m.name.as_str(), m.role.as_str()))
        .collect();
    assert_eq!(
        names,
        [("shard01", "shard"), ("shard02", "shard"), ("configRS", "config")]
    );
    assert!(reader.find_namespace("shard02/app.users").is_some());
    assert_eq!(reader.snapshot().consistency_ts, Some(ts));
    // Exporting needs a member choice when there are several.
    let out = tempfile::tempdir().unwrap();
    assert!(matches!(
        export_directory(&reader, None, out.path(), false).await,
        Err(RepoError::Usage(_))
    ));
    export_directory(&reader, Some("shard01"), out.path(), false)
        .await
        .unwrap();
    assert_eq!(read_bson_file(&out.path().join("app/users.bson")).len(), 10);
}

#[tokio::test]
async fn file_trees_round_trip_and_deduplicate() {
    use tidemark_repo::snapshot::FileKind;
    let (storage, repo) = init_memory().await;
    let big: Vec<u8> = noise(77, 400_000).into_bytes();
    let store = |contents: Vec<u8>| {
        let repo = repo.clone();
        async move {
            let mut writer = SnapshotWriter::new(&repo, progress()).await.unwrap();
            writer.add_tree_entry("journal", FileKind::Dir, 0o755, 1, None).unwrap();
            writer
                .add_tree_entry("current", FileKind::Symlink, 0o777, 1, Some("journal"))
                .unwrap();
            let mut f = writer.begin_file("collection-0.wt", 0o600, 2).unwrap();
            for piece in contents.chunks(10_000) {
                f.write(piece).await.unwrap();
            }
            f.finish().await.unwrap();
            writer.commit(CommitOptions::default()).await.unwrap()
        }
    };
    let (_, first) = store(big.clone()).await;
    assert_eq!(first.total_bytes, 400_000);
    // Change one 4 KiB block in the middle: only the chunks around it are new.
    let mut changed = big.clone();
    changed[200_000..204_096].fill(b'#');
    let (id, second) = store(changed.clone()).await;
    assert!(second.new_bytes < 400_000 / 5, "{second:?}");

    let reader = SnapshotReader::open(&repo, &id).await.unwrap();
    let member = &reader.members()[0];
    assert_eq!(member.files.len(), 3);
    assert_eq!(member.files[1].target.as_deref(), Some("journal"));
    let mut back = Vec::new();
    reader
        .read_file(member, &member.files[2], |piece| back.extend_from_slice(piece))
        .await
        .unwrap();
    assert_eq!(back, changed);
    let checked = tidemark_repo::check::check(
        &repo,
        tidemark_repo::check::CheckOptions {
            read_data: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(checked.is_ok(), "{:?}", checked.errors);
    assert!(storage.list("snapshots/").await.unwrap().len() == 2);
    let mut writer = SnapshotWriter::new(&repo, progress()).await.unwrap();
    assert!(writer.begin_file("../escape", 0, 0).is_err());
    writer.abort().await.unwrap();
}

#[tokio::test]
async fn compression_follows_each_stream_and_everything_reads_back() {
    let (_, repo) = init_memory().await;
    // Binary payloads (like encrypted fields or media) and lowercase text (entropy coding halves it).
    let binary: Vec<RawDocumentBuf> = (0..1500_u64)
        .map(|i| {
            let bytes = random_bytes(i, 1000);
            rawdoc! { "_id": i64::try_from(i).unwrap(), "blob": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes } }
        })
        .collect();
    let text = documents(1500, &[], 0);
    let mut writer = SnapshotWriter::new(&repo, progress()).await.unwrap();
    let mut streams = Vec::new();
    for (ns, docs) in [("media.files", &binary), ("shop.notes", &text)] {
        let mut w = writer.begin_namespace(ns, NamespaceMetadata::default()).await.unwrap();
        for d in docs.iter() {
            w.write_document(d).await.unwrap();
        }
        streams.push((ns, docs, w.finish().await.unwrap()));
    }
    let (id, _) = writer.commit(CommitOptions::default()).await.unwrap();

    for (ns, docs, data) in &streams {
        // Blobs of one frame share its stored bytes.
        let (mut raw, mut stored, mut frames) = (0u64, 0u64, std::collections::HashSet::new());
        for chunk in chunk_ids(&repo, data).await {
            let loc = repo.locate(&chunk).unwrap();
            raw += loc.entry.raw_length;
            if frames.insert((loc.pack, loc.entry.offset)) {
                stored += loc.entry.length;
            }
        }
        assert_eq!(raw, concat(docs).len() as u64, "{ns}");
        assert!(frames.len() * 8 < docs.len(), "{ns}: {} frames", frames.len());
        if *ns == "media.files" {
            // Stored: the plaintext plus seal (40 bytes) and zstd frame header, never more.
            let frames = frames.len() as u64;
            assert!(stored <= raw + 60 * frames, "{ns}: {stored} bytes stored for {raw}");
        } else {
            // 26 letters need under 5 bits each: only entropy coding gets there.
            assert!(stored * 10 < raw * 7, "{ns}: {stored} bytes stored for {raw}");
        }
        let reader = SnapshotReader::open(&repo, &id).await.unwrap();
        let (member, entry) = reader.find_namespace(ns).unwrap();
        let mut stream = reader.documents(member, entry);
        let mut got = Vec::new();
        while let Some(doc) = stream.next_document().await.unwrap() {
            got.extend_from_slice(doc.as_bytes());
        }
        assert_eq!(got, concat(docs), "{ns}");
    }
    let report = check_read_data(&repo).await.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
}

/// Backs up `docs` as one namespace; returns the snapshot, its stream and the stats.
async fn backup_documents(
    repo: &Repository,
    docs: &[RawDocumentBuf],
) -> (
    tidemark_repo::Id,
    tidemark_repo::snapshot::DataStream,
    tidemark_repo::SnapshotStats,
) {
    backup_indexing_every(repo, docs, None, true).await.unwrap()
}

/// Backs `docs` up (with an index object every `blobs` new blobs, if given); with `commit` false
/// the snapshot is abandoned before its end (as by a killed backup).
async fn backup_indexing_every(
    repo: &Repository,
    docs: &[RawDocumentBuf],
    blobs: Option<usize>,
    commit: bool,
) -> Option<(
    tidemark_repo::Id,
    tidemark_repo::snapshot::DataStream,
    tidemark_repo::SnapshotStats,
)> {
    let mut writer = SnapshotWriter::new(repo, progress()).await.unwrap();
    if let Some(blobs) = blobs {
        writer.set_index_interval(blobs);
    }
    let mut ns = writer
        .begin_namespace("shop.events", NamespaceMetadata::default())
        .await
        .unwrap();
    for d in docs {
        ns.write_document(d).await.unwrap();
    }
    if !commit {
        return None;
    }
    let data = ns.finish().await.unwrap();
    let (id, stats) = writer.commit(CommitOptions::default()).await.unwrap();
    Some((id, data, stats))
}

/// An archive export of several namespaces larger than a turn interleaves them, as `mongodump -j`
/// does, so a restore inserts into several collections at once; the same snapshot gives the same
/// bytes; every namespace's documents come back whole and in order, with their EOF CRC checked.
#[tokio::test]
async fn an_archive_export_interleaves_namespaces_deterministically() {
    let (_, repo) = init_memory().await;
    let names = ["shop.a", "shop.b", "shop.c", "shop.d", "shop.e", "shop.f"];
    // 2,000 documents of about 1 KiB: two turns of the export each.
    let all: Vec<Vec<RawDocumentBuf>> = (0..names.len())
        .map(|n| documents(2_000, &[], u64::try_from(n).unwrap()))
        .collect();
    let mut writer = SnapshotWriter::new(&repo, progress()).await.unwrap();
    for (name, docs) in names.iter().zip(&all) {
        let mut ns = writer
            .begin_namespace(name, NamespaceMetadata::default())
            .await
            .unwrap();
        for d in docs {
            ns.write_document(d).await.unwrap();
        }
        ns.finish().await.unwrap();
    }
    let (id, _) = writer.commit(CommitOptions::default()).await.unwrap();
    let reader = SnapshotReader::open(&repo, &id).await.unwrap();
    let (bytes, stats) = export_archive(&reader, None, Vec::new()).await.unwrap();
    assert_eq!((stats.namespaces, stats.documents), (6, 12_000));
    assert_eq!(export_archive(&reader, None, Vec::new()).await.unwrap().0, bytes);

    let mut archive = tidemark_format::archive::ArchiveReader::new(&bytes[..]).unwrap();
    let order: Vec<String> = archive
        .namespaces()
        .iter()
        .map(|ns| format!("{}.{}", ns.namespace.db, ns.namespace.collection))
        .collect();
    let mut got: Vec<Vec<u8>> = vec![Vec::new(); order.len()];
    let (mut segments, mut ended, mut open_at_once, mut open) = (Vec::new(), 0, 0, 0);
    while let Some(event) = archive.next_event().unwrap() {
        match event {
            tidemark_format::archive::ArchiveEvent::SegmentStart { namespace, first } => {
                segments.push(namespace);
                if first {
                    open += 1;
                    open_at_once = open_at_once.max(open);
                }
            }
            tidemark_format::archive::ArchiveEvent::Document { namespace, document } => {
                got[namespace].extend_from_slice(document.as_bytes());
            }
            tidemark_format::archive::ArchiveEvent::NamespaceEnd { crc_checked, .. } => {
                assert!(crc_checked);
                ended += 1;
                open -= 1;
            }
        }
    }
    assert_eq!(ended, 6);
    assert_eq!(open_at_once, tidemark_repo::export::ARCHIVE_PARALLEL);
    // The first four namespaces take turns before any of them ends.
    assert_eq!(segments[..4].iter().collect::<std::collections::HashSet<_>>().len(), 4);
    for (name, docs) in names.iter().zip(&all) {
        let at = order.iter().position(|o| o == name).unwrap();
        assert_eq!(got[at], concat(docs), "{name}");
    }
}

/// The namespace's documents as a snapshot reader gives them back, concatenated.
async fn read_back(repo: &Repository, id: &tidemark_repo::Id) -> Vec<u8> {
    let reader = SnapshotReader::open(repo, id).await.unwrap();
    let (member, entry) = reader.find_namespace("shop.events").unwrap();
    let mut stream = reader.documents(member, entry);
    let mut got = Vec::new();
    while let Some(doc) = stream.next_document().await.unwrap() {
        got.extend_from_slice(doc.as_bytes());
    }
    got
}

/// A stream of about forty thousand chunks is recorded as a few lists of lists (the manifest
/// stays small), reads back byte for byte, passes `check --read-data`, deduplicates entirely
/// when unchanged and nearly entirely when one document changed, and survives a copy.
#[tokio::test]
async fn a_large_stream_is_recorded_as_lists_of_lists() {
    use tidemark_repo::chunk_list::MAX_TOP;
    let mut options = test_options();
    // A few small documents per chunk.
    options.document_chunker = tidemark_repo::ChunkerParams {
        min_size: 64,
        avg_size: 256,
        max_size: 1024,
    };
    let repo = Repository::init(memory().await, Some(PASSWORD), &options)
        .await
        .unwrap();
    // About 2,600 chunk lists, so about 160 lists of lists (list boundaries fall at random with
    // probability 1/16): more than MAX_TOP by many standard deviations, whatever the repository's
    // random key, so there are always at least two levels.
    let docs: Vec<RawDocumentBuf> = (0..150_000)
        .map(|i| rawdoc! { "_id": i, "v": noise(u64::try_from(i).unwrap(), 60) })
        .collect();
    let (first, data, _) = backup_documents(&repo, &docs).await;
    let chunks = chunk_ids(&repo, &data).await.len();
    assert!(chunks > 35_000, "{chunks} chunks");
    assert!(
        data.list_levels >= 2,
        "{} levels over {chunks} chunks",
        data.list_levels
    );
    assert!(!data.chunk_lists.is_empty() && data.chunk_lists.len() <= MAX_TOP);
    assert_eq!(read_back(&repo, &first).await, concat(&docs));
    let report = check_read_data(&repo).await.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);

    let (_, same, stats) = backup_documents(&repo, &docs).await;
    assert_eq!(
        (same.chunk_lists, same.list_levels),
        (data.chunk_lists.clone(), data.list_levels)
    );
    assert_eq!((stats.new_blobs, stats.added_bytes), (0, 0));

    let mut changed = docs.clone();
    changed[32_345] = rawdoc! { "_id": 32_345, "v": "changed" };
    let (second, _, stats) = backup_documents(&repo, &changed).await;
    // The chunk, and about one list per level (two where a boundary moved).
    assert!(
        (1..=2 + 2 * (u64::from(data.list_levels) + 1)).contains(&stats.new_blobs),
        "{stats:?}"
    );
    assert_eq!(read_back(&repo, &second).await, concat(&changed));

    let target = Repository::init(memory().await, Some(PASSWORD), &options)
        .await
        .unwrap();
    let copied = tidemark_repo::copy::copy_snapshots(&repo, &target, &[second])
        .await
        .unwrap();
    let tidemark_repo::copy::CopyOutcome::Copied(copy) = copied[0].1 else {
        panic!("{copied:?}");
    };
    assert_eq!(read_back(&target, &copy).await, concat(&changed));
    let report = check_read_data(&target).await.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
}

#[tokio::test]
async fn documents_spanning_read_batches_come_back_byte_exact() {
    let (_, repo) = init_memory().await;
    // Sizes from 100 bytes to 40 KiB, and three documents of 3 MiB (more than a read batch):
    // documents cross the boundaries of chunks and of the reader's batches at every offset.
    let docs: Vec<RawDocumentBuf> = (0..1500u64)
        .map(|i| {
            let len = if i % 500 == 250 {
                3 << 20
            } else {
                100 + usize::try_from(i * 7919 % 40_000).unwrap()
            };
            rawdoc! { "_id": i64::try_from(i).unwrap(), "payload": bson::Binary {
                subtype: bson::spec::BinarySubtype::Generic,
                bytes: random_bytes(i, len),
            } }
        })
        .collect();
    let (id, _, _) = backup_documents(&repo, &docs).await;
    let expected = concat(&docs);
    assert!(expected.len() > 12 << 20, "{}", expected.len());

    let reader = SnapshotReader::open(&repo, &id).await.unwrap();
    let (member, entry) = reader.find_namespace("shop.events").unwrap();
    // A stream left early stops its read-ahead; the next one starts over.
    let mut early = reader.documents(member, entry);
    for _ in 0..10 {
        early.next_document_ref().await.unwrap().unwrap();
    }
    drop(early);
    let mut stream = reader.documents(member, entry);
    let mut got = Vec::with_capacity(expected.len());
    let mut count = 0;
    while let Some(doc) = stream.next_document_ref().await.unwrap() {
        assert_eq!(doc.get_i64("_id").unwrap(), count);
        got.extend_from_slice(doc.as_bytes());
        count += 1;
    }
    assert_eq!(count, 1500);
    assert_eq!(got, expected);
    assert_eq!(reader.documents(member, entry).verify().await.unwrap(), 1500);
}

/// New repositories cut document streams into chunks of about the configured average size (two
/// 1 KiB documents per chunk with the defaults); a repository whose config names no cut rule was
/// created before the rule existed and keeps cutting as it always did (one such document per
/// chunk), so its next backups still deduplicate against its earlier snapshots.
/// A repository initialised with `options` whose `config` object is then edited by `edit`, as one
/// written by an earlier version would be.
async fn with_config(options: &tidemark_repo::InitOptions, edit: impl FnOnce(&mut serde_json::Value)) -> Repository {
    let storage = memory().await;
    Repository::init(storage.clone(), Some(PASSWORD), options)
        .await
        .unwrap();
    let mut config: serde_json::Value = serde_json::from_slice(&storage.get("config").await.unwrap()).unwrap();
    edit(&mut config);
    storage
        .put("config", bytes::Bytes::from(serde_json::to_vec(&config).unwrap()))
        .await
        .unwrap();
    Repository::open(storage, Some(PASSWORD)).await.unwrap()
}

#[tokio::test]
async fn a_repository_keeps_the_cut_rule_it_was_created_with() {
    let mut options = test_options();
    options.document_chunker = tidemark_repo::ChunkerParams::DOCUMENTS;
    let docs = documents(2_000, &[], 0);
    let doc_len = docs[0].as_bytes().len();
    assert!((1024..1100).contains(&doc_len), "{doc_len}");

    let storage = memory().await;
    let repo = Repository::init(storage.clone(), Some(PASSWORD), &options)
        .await
        .unwrap();
    let config: serde_json::Value = serde_json::from_slice(&storage.get("config").await.unwrap()).unwrap();
    assert_eq!(config["document_cut_rule"], "geometric");
    let (_, data, _) = backup_documents(&repo, &docs).await;
    let chunks = chunk_ids(&repo, &data).await.len();
    let mean = data.bytes / chunks as u64;
    // The configured 2 KiB plus about half a document.
    assert!(
        (1900..3100).contains(&mean),
        "mean chunk {mean} bytes over {chunks} chunks"
    );

    // A repository created with the linear rule keeps it.
    let repo = with_config(&options, |config| config["document_cut_rule"] = "beyond-minimum".into()).await;
    assert_eq!(repo.config().document_cut_rule, tidemark_repo::CutRule::BeyondMinimum);
    let (first, _, _) = backup_documents(&repo, &docs).await;
    let (_, _, stats) = backup_documents(&repo, &docs).await;
    assert_eq!((stats.new_blobs, stats.added_bytes), (0, 0));
    assert_eq!(read_back(&repo, &first).await, concat(&docs));

    let repo = with_config(&options, |config| {
        config.as_object_mut().unwrap().remove("document_cut_rule");
    })
    .await;
    assert_eq!(repo.config().document_cut_rule, tidemark_repo::CutRule::WholeDocument);
    let (first, data, _) = backup_documents(&repo, &docs).await;
    assert_eq!(chunk_ids(&repo, &data).await.len(), docs.len());
    let (_, _, stats) = backup_documents(&repo, &docs).await;
    assert_eq!((stats.new_blobs, stats.added_bytes), (0, 0));
    assert_eq!(read_back(&repo, &first).await, concat(&docs));
}

/// New repositories seal with XAES-256-GCM; one created with XChaCha20-Poly1305 (as every
/// repository was before) keeps it. Both back up and read back, and a `config` naming another
/// cipher than the key's is refused rather than read with the wrong one.
#[tokio::test]
async fn each_repository_keeps_its_cipher() {
    let docs = documents(300, &[], 0);
    for (cipher, name) in [
        (tidemark_repo::Cipher::Xaes256Gcm, "xaes-256-gcm"),
        (tidemark_repo::Cipher::XChaCha20Poly1305, "xchacha20poly1305"),
    ] {
        let mut options = test_options();
        options.cipher = cipher;
        let storage = memory().await;
        let repo = Repository::init(storage.clone(), Some(PASSWORD), &options)
            .await
            .unwrap();
        assert_eq!(repo.config().encryption, name);
        let (first, _, _) = backup_documents(&repo, &docs).await;
        let repo = Repository::open(storage.clone(), Some(PASSWORD)).await.unwrap();
        assert_eq!(read_back(&repo, &first).await, concat(&docs));

        let other = if cipher == tidemark_repo::Cipher::Xaes256Gcm {
            "xchacha20poly1305"
        } else {
            "xaes-256-gcm"
        };
        for wrong in [other, "aes-128-ecb"] {
            let mut config: serde_json::Value = serde_json::from_slice(&storage.get("config").await.unwrap()).unwrap();
            config["encryption"] = wrong.into();
            storage
                .put("config", bytes::Bytes::from(serde_json::to_vec(&config).unwrap()))
                .await
                .unwrap();
            let err = Repository::open(storage.clone(), Some(PASSWORD))
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains("config"), "{wrong}: {err}");
        }
    }
    assert_eq!(
        tidemark_repo::InitOptions::default().cipher,
        tidemark_repo::Cipher::Xaes256Gcm
    );
}

/// Blob ids of every index object, with how many objects there are.
async fn indexed_blob_ids(repo: &Repository) -> (usize, Vec<tidemark_repo::Id>) {
    let files = repo.index_files().await.unwrap();
    let ids = files
        .iter()
        .flat_map(|(_, file)| file.packs.iter().flat_map(|p| p.blobs.iter().map(|b| b.id)))
        .collect();
    (files.len(), ids)
}

/// A backup writes index objects as it goes: each blob is stored and indexed once even when the
/// same chunks recur across batches written before and after an index object; the snapshot reads
/// back and checks. A backup abandoned halfway (as a killed one) leaves its uploaded packs indexed,
/// the repository checks, and the next backup of the same data deduplicates against them.
#[tokio::test]
async fn index_objects_are_written_as_a_backup_goes() {
    let repo = Repository::init(memory().await, Some(PASSWORD), &test_options())
        .await
        .unwrap();
    // 2,000 distinct documents twice over: the same chunks recur in later batches.
    let distinct = documents(2_000, &[], 0);
    let docs: Vec<RawDocumentBuf> = (0..2).flat_map(|_| distinct.iter().cloned()).collect();
    let (first, _, stats) = backup_indexing_every(&repo, &docs, Some(20), true).await.unwrap();
    let (objects, ids) = indexed_blob_ids(&repo).await;
    assert!(objects >= 3, "{objects} index objects");
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a blob was stored twice");
    assert_eq!(ids.len() as u64, stats.new_blobs);
    let reopened = Repository::open(repo.storage().clone(), Some(PASSWORD)).await.unwrap();
    assert_eq!(read_back(&reopened, &first).await, concat(&docs));
    let report = check_read_data(&reopened).await.unwrap();
    assert!(report.is_ok(), "{report:?}");

    // Abandoned after most of a new collection: its packs so far are indexed.
    let all: Vec<i32> = (0..8_000).collect();
    let more = documents(8_000, &all, 1);
    assert!(backup_indexing_every(&reopened, &more, Some(20), false).await.is_none());
    // The chunks the abandoned backup indexed (its last packs and batches in flight were not).
    let files = reopened.index_files().await.unwrap();
    let first_ids: std::collections::HashSet<_> = ids.iter().collect();
    let abandoned_chunk_bytes: u64 = files
        .iter()
        .flat_map(|(_, file)| file.packs.iter().flat_map(|p| &p.blobs))
        .filter(|b| b.kind == tidemark_repo::pack::BlobKind::Data && !first_ids.contains(&b.id))
        .map(|b| b.raw_length)
        .sum();
    assert!(
        abandoned_chunk_bytes > 256 * 1024,
        "{abandoned_chunk_bytes} bytes indexed before the end"
    );
    let reopened = Repository::open(repo.storage().clone(), Some(PASSWORD)).await.unwrap();
    let report = check_read_data(&reopened).await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    let (again, _, stats) = backup_documents(&reopened, &more).await;
    assert_eq!(stats.deduplicated_bytes, abandoned_chunk_bytes, "{stats:?}");
    assert_eq!(read_back(&reopened, &again).await, concat(&more));
}
