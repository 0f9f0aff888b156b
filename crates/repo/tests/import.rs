//! Real mongodump directories imported into a repository and exported back, file for file.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use tidemark_repo::export::export_directory;
use tidemark_repo::import::import_directory;
use tidemark_repo::{CommitOptions, SnapshotReader, SnapshotWriter};

fn files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn real_dumps_come_back_byte_identical() {
    let (_, repo) = init_memory().await;
    for name in [
        "oplogdump",
        "collMod_ttl_index",
        "coll_with_index",
        "duplicate_index_key_with_oplog",
        "indextestdump",
        "longindextestdump",
        "usersdump",
        "testdirs",
        "prelude_test/prelude_top_level",
    ] {
        let src = fixture("mongorestore/testdata").join(name);
        let discovery = tidemark_format::directory::discover(&src, &Default::default()).unwrap();
        let mut writer = SnapshotWriter::new(&repo, progress()).await.unwrap();
        let stats = import_directory(&mut writer, &src, false).await.unwrap();
        let (id, _) = writer.commit(CommitOptions::default()).await.unwrap();
        let reader = SnapshotReader::open(&repo, &id).await.unwrap();
        let out = tempfile::tempdir().unwrap();
        let exported = export_directory(&reader, None, out.path(), false).await.unwrap();
        assert_eq!(exported.documents, stats.documents, "{name}");

        // Every file mongorestore would read from the source is in the export, identical.
        let mut expected = 0;
        for entry in &discovery.entries {
            for path in entry.data_path.iter().chain(&entry.metadata_path) {
                let mut rel = path.strip_prefix(&src).unwrap().to_path_buf();
                // Legacy `.bin` data files are exported under mongodump's `.bson` name.
                if rel.extension().is_some_and(|e| e == "bin") {
                    rel.set_extension("bson");
                }
                let got =
                    std::fs::read(out.path().join(&rel)).unwrap_or_else(|e| panic!("{name}: {}: {e}", rel.display()));
                assert_eq!(got, std::fs::read(path).unwrap(), "{name}: {}", rel.display());
                expected += 1;
            }
        }
        // And nothing else, apart from the prelude.
        let written: Vec<_> = files(out.path())
            .into_iter()
            .filter(|p| p != Path::new("prelude.json"))
            .collect();
        assert_eq!(written.len(), expected, "{name}: {written:?}");
        if let Some(prelude) = &discovery.prelude {
            let text = std::fs::read_to_string(out.path().join("prelude.json")).unwrap();
            assert!(
                text.contains(&format!("\"ServerVersion\":\"{}\"", prelude.server_version_text)),
                "{text}"
            );
        }
    }
    // Nine snapshots of overlapping fixtures: the repository stays consistent.
    let report = tidemark_repo::check::check(
        &repo,
        tidemark_repo::check::CheckOptions {
            read_data: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(report.is_ok(), "{:?}", report.errors);
    assert_eq!(report.snapshots, 9);
}

/// The real mongodump archive (FORMATS.md: `test.bar` with one document `{_id, foo: "bar"}` and
/// `admin.system.version`), streamed in: the same snapshot content as importing the directory it
/// converts to, and its truncations fail instead of storing partial namespaces.
#[tokio::test]
async fn a_real_archive_streams_in() {
    use tidemark_repo::import::import_archive;
    let (_, repo) = init_memory().await;
    let path = fixture("mongorestore/testdata/test.bar.archive");
    let bytes = std::fs::read(&path).unwrap();
    let mut writer = SnapshotWriter::new(&repo, progress()).await.unwrap();
    let stats = import_archive(&mut writer, &bytes[..], "test.bar.archive")
        .await
        .unwrap();
    assert_eq!((stats.namespaces, stats.documents, stats.oplog), (2, 2, false));
    let (id, _) = writer.commit(CommitOptions::default()).await.unwrap();
    let reader = SnapshotReader::open(&repo, &id).await.unwrap();
    let (member, entry) = reader.find_namespace("test.bar").unwrap();
    let mut docs = reader.documents(member, entry);
    let doc = docs.next_document().await.unwrap().unwrap();
    assert_eq!(doc.get_str("foo").unwrap(), "bar");
    assert!(docs.next_document().await.unwrap().is_none());
    assert_eq!(member.server_version, "3.4.3");
    let text = entry.metadata_json.as_deref().unwrap();
    assert!(text.contains(r#""name":"_id_","ns":"test.bar""#), "{text}");

    // The directory the archive converts to gives the same namespaces and content (its discovery,
    // like mongorestore's, ignores the metadata of admin.system.version; the archive keeps it).
    let dir = tempfile::tempdir().unwrap();
    let options = tidemark_format::convert::ConvertOptions {
        input_gzip: None,
        output_gzip: false,
    };
    tidemark_format::convert::convert(&path, &dir.path().join("d"), &options).unwrap();
    let mut writer = SnapshotWriter::new(&repo, progress()).await.unwrap();
    import_directory(&mut writer, &dir.path().join("d"), false)
        .await
        .unwrap();
    let (other, _) = writer.commit(CommitOptions::default()).await.unwrap();
    let other = SnapshotReader::open(&repo, &other).await.unwrap();
    let summary = |r: &SnapshotReader| {
        let mut v: Vec<_> = r.members()[0]
            .namespaces
            .iter()
            .map(|n| (n.name(), n.kind.clone(), n.data.documents, n.data.content_hash))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    assert_eq!(summary(&reader), summary(&other));

    for cut in [bytes.len() - 1, bytes.len() / 2, 10] {
        let mut writer = SnapshotWriter::new(&repo, progress()).await.unwrap();
        assert!(
            import_archive(&mut writer, &bytes[..cut], "truncated").await.is_err(),
            "{cut} bytes accepted"
        );
    }
}

/// An archive whose namespaces interleave (as a dump of several collections at once writes it)
/// streams in: every namespace comes back byte for byte, with its count and content hash.
#[tokio::test]
async fn an_interleaved_archive_streams_in() {
    use tidemark_format::archive::{ArchiveHeader, ArchiveWriter, PreludeEntry};
    use tidemark_repo::import::import_archive;

    let names = ["a", "b", "c"];
    let docs: Vec<Vec<bson::RawDocumentBuf>> = (0..3u64)
        .map(|n| {
            let changed: Vec<i32> = (0..1500).collect();
            documents(1500, &changed, n + 1)
        })
        .collect();
    let entries: Vec<PreludeEntry> = names
        .iter()
        .map(|c| PreludeEntry::new("shop", *c, "", "collection"))
        .collect();
    let header = ArchiveHeader::new(4, "7.0.0", "test");
    let mut archive = ArchiveWriter::new(Vec::new(), &header, &entries).unwrap();
    // Round robin in runs of 7 documents: every namespace has many segments.
    for start in (0..1500).step_by(7) {
        for (n, set) in docs.iter().enumerate() {
            for d in &set[start..(start + 7).min(1500)] {
                archive.write_document(n, d).unwrap();
            }
        }
    }
    for n in 0..3 {
        archive.close_namespace(n).unwrap();
    }
    let bytes = archive.finish().unwrap();

    let (_, repo) = init_memory().await;
    let mut writer = SnapshotWriter::new(&repo, progress()).await.unwrap();
    let stats = import_archive(&mut writer, &bytes[..], "test archive").await.unwrap();
    assert_eq!((stats.namespaces, stats.documents), (3, 4500));
    let (id, _) = writer.commit(CommitOptions::default()).await.unwrap();
    let reader = SnapshotReader::open(&repo, &id).await.unwrap();
    for (name, set) in names.iter().zip(&docs) {
        let (member, entry) = reader.find_namespace(&format!("shop.{name}")).unwrap();
        let mut stream = reader.documents(member, entry);
        let mut got = Vec::new();
        while let Some(d) = stream.next_document().await.unwrap() {
            got.extend_from_slice(d.as_bytes());
        }
        assert_eq!(got, concat(set), "shop.{name}");
    }
    // A truncated archive (cut inside the data) is an error naming where it stopped.
    let cut = &bytes[..bytes.len() / 2];
    let mut writer = SnapshotWriter::new(&repo, progress()).await.unwrap();
    let err = import_archive(&mut writer, cut, "test archive").await.unwrap_err();
    assert!(err.to_string().contains("test archive"), "{err}");
    writer.abort().await.unwrap();
}
