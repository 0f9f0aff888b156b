//! Compatibility corpus: the real dump directories shipped with mongo-tools, read with the
//! outcomes that FORMATS.md section 6 (from mongo-tools' own tests) gives for them, and written
//! back byte for byte.

use std::fs;
use std::path::{Path, PathBuf};

use bson::{Bson, Decimal128};
use tidemark_format::directory::{
    DirectoryError, DiscoverOptions, Discovery, DumpEntry, DumpWriter, EntryKind, ServerVersion, SkipReason, discover,
};
use tidemark_format::metadata::Metadata;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/mongo-tools/mongorestore/testdata")
}

fn full(dir: &str) -> Discovery {
    discover(&testdata().join(dir), &DiscoverOptions::default()).unwrap_or_else(|e| panic!("{dir}: {e}"))
}

fn with(target: &str, gzip: bool, db: Option<&str>, collection: Option<&str>) -> Result<Discovery, DirectoryError> {
    let options = DiscoverOptions {
        gzip,
        db: db.map(str::to_owned),
        collection: collection.map(str::to_owned),
    };
    discover(&testdata().join(target), &options)
}

fn names(d: &Discovery) -> Vec<String> {
    d.entries.iter().map(|e| e.namespace.to_string()).collect()
}

fn count(entry: &DumpEntry) -> u64 {
    let Some(mut reader) = entry.open_data().unwrap() else {
        return 0;
    };
    while reader.next_document().unwrap().is_some() {}
    tidemark_format::bson_stream::BsonReader::count(&reader)
}

fn skipped(d: &Discovery) -> Vec<(String, SkipReason)> {
    let root = testdata();
    d.skipped
        .iter()
        .map(|s| {
            (
                s.path.strip_prefix(&root).unwrap_or(&s.path).display().to_string(),
                s.reason,
            )
        })
        .collect()
}

#[test]
fn testdirs_full_restore() {
    let d = full("testdirs");
    // filepath_test.go: db1.c1, db1.c2, db1.c3, db1.c4, db2.c1 (the .bin); the top-level
    // oplog.bson is the oplog (used only with --oplogReplay).
    assert_eq!(names(&d), ["db1.c1", "db1.c2", "db1.c3", "db1.c4", "db2.c1", ".oplog"]);
    let kinds: Vec<_> = d.entries.iter().map(|e| e.kind).collect();
    use EntryKind::*;
    assert_eq!(
        kinds,
        [Collection, Collection, Collection, Collection, Collection, Oplog]
    );
    let counts: Vec<_> = d.entries.iter().map(count).collect();
    assert_eq!(counts, [100, 0, 0, 10, 0, 0]);
    assert_eq!(counts.iter().take(5).sum::<u64>(), 110);
    // c2 and db2.c1 have no metadata; c3's metadata file is 0 bytes (= no metadata).
    let c2 = d.entry("db1", "c2").unwrap();
    assert!(c2.metadata_path.is_none() && c2.metadata.is_none());
    let c3 = d.entry("db1", "c3").unwrap();
    assert!(c3.metadata_path.is_some() && c3.metadata.is_none());
    assert!(d.entry("db2", "c1").unwrap().metadata_path.is_none());
    assert!(
        d.entry("db2", "c1")
            .unwrap()
            .data_path
            .as_ref()
            .unwrap()
            .ends_with("db2/c1.bin")
    );
    // Legacy c1 metadata: v1 _id index with an ns field, bare JSON numbers (int32).
    let c1 = d.entry("db1", "c1").unwrap().metadata.as_ref().unwrap();
    assert_eq!(c1.options.as_ref().map(|o| o.len()), Some(0));
    assert_eq!(c1.indexes[0].get("v"), Some(&Bson::Int32(1)));
    assert_eq!(c1.indexes[0].get_str("ns").unwrap(), "db1.c1");
    assert_eq!(c1.collection_name, None);
    let c4 = d.entry("db1", "c4").unwrap().metadata.as_ref().unwrap();
    assert_eq!(c4.uuid.as_deref(), Some("cdc1ea3f66974c739a083cd38ab03670"));
    // Logs mention badfile.txt, baddir, c2.txt.
    assert_eq!(
        skipped(&d),
        [
            ("testdirs/badfile.txt".into(), SkipReason::UnknownFile),
            ("testdirs/db1/baddir".into(), SkipReason::Subdirectory),
            ("testdirs/db2/c2.txt".into(), SkipReason::UnknownFile),
        ]
    );
    assert!(d.prelude.is_none());
}

#[test]
fn testdirs_db_target_renames_the_database() {
    let d = with("testdirs/db1", false, Some("myDB"), None).unwrap();
    assert_eq!(names(&d), ["myDB.c1", "myDB.c2", "myDB.c3", "myDB.c4"]);
    assert_eq!(skipped(&d), [("testdirs/db1/baddir".into(), SkipReason::Subdirectory)]);
}

#[test]
fn gzip_mode_recognises_only_gz_names_and_bin() {
    // In gzip mode plain .bson/.metadata.json are not recognised; .bin always is.
    let d = with("testdirs", true, None, None).unwrap();
    assert_eq!(names(&d), ["db2.c1", ".oplog"]);
    assert!(d.entries.iter().all(|e| e.gzip));
    let unknown: Vec<_> = d
        .skipped
        .iter()
        .filter(|s| s.reason == SkipReason::UnknownFile)
        .map(|s| s.path.clone())
        .collect();
    assert_eq!(unknown.len(), 9, "{unknown:?}");
}

#[test]
fn oplogdump_and_collmod_ttl_index() {
    let d = full("oplogdump");
    assert_eq!(names(&d), ["admin.system.version", "db1.c1", ".oplog"]);
    assert_eq!(d.entries[0].kind, EntryKind::AuthVersion);
    assert_eq!(d.entries.iter().map(count).collect::<Vec<_>>(), [1, 5, 3]);
    let c1 = d.entry("db1", "c1").unwrap();
    assert_eq!(
        c1.metadata.as_ref().unwrap().uuid.as_deref(),
        Some("699f503df64b4aa8a484a8052046fa3a")
    );
    assert_eq!(
        c1.metadata.as_ref().unwrap().uuid_bytes().unwrap()[..4],
        [0x69, 0x9f, 0x50, 0x3d]
    );
    // The admin.system.version metadata is never used by mongorestore.
    assert_eq!(
        skipped(&d),
        [(
            "oplogdump/admin/system.version.metadata.json".into(),
            SkipReason::SpecialCollectionMetadata
        )]
    );

    let d = full("collMod_ttl_index");
    assert_eq!(names(&d), ["admin.system.version", "mongodump_test_db.coll1", ".oplog"]);
    assert_eq!(d.entries.iter().map(count).collect::<Vec<_>>(), [1, 10, 2]);
    let coll1 = d
        .entry("mongodump_test_db", "coll1")
        .unwrap()
        .metadata
        .as_ref()
        .unwrap();
    assert_eq!(coll1.indexes.len(), 2);
    // a_1.expireAfterSeconds is int32 1000.
    assert_eq!(
        coll1.index("a_1").unwrap().get("expireAfterSeconds"),
        Some(&Bson::Int32(1000))
    );
    assert_eq!(coll1.collection_type.as_deref(), Some("collection"));
    assert_eq!(coll1.collection_name.as_deref(), Some("coll1"));
}

#[test]
fn users_roles_and_version_are_special() {
    let d = full("usersdump");
    assert_eq!(
        names(&d),
        ["admin.system.roles", "admin.system.users", "admin.system.version"]
    );
    let kinds: Vec<_> = d.entries.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EntryKind::Roles, EntryKind::Users, EntryKind::AuthVersion]);
    assert_eq!(d.entries.iter().map(count).collect::<Vec<_>>(), [1, 1, 2]);
    assert!(d.entries.iter().all(|e| e.metadata_path.is_none()));
    assert_eq!(d.skipped.len(), 3);
}

#[test]
fn local_oplog_rs_is_an_oplog_candidate() {
    let d = full("dump_local_oplog");
    assert_eq!(names(&d), ["local.oplog.rs"]);
    let e = &d.entries[0];
    assert_eq!(e.kind, EntryKind::Oplog);
    assert_eq!(e.max_document_size(), 16 * 1024 * 1024 + 16 * 1024);
    assert_eq!(count(e), 100);
    let options = e.metadata.as_ref().unwrap().options.clone().unwrap();
    assert_eq!(options, bson::doc! { "capped": true, "size": 100_096 });
    assert!(e.metadata.as_ref().unwrap().indexes.is_empty());
}

#[test]
fn legacy_index_metadata_keeps_types() {
    let d = full("duplicate_index_key");
    let e = d.entry("indextest", "duplicate_index_key").unwrap();
    assert_eq!(count(e), 0);
    let m = e.metadata.as_ref().unwrap();
    let keys: Vec<_> = m
        .indexes
        .iter()
        .map(|i| i.get_document("key").unwrap().get("foo").cloned())
        .collect();
    assert_eq!(
        keys,
        [
            None,
            Some(Bson::String(String::new())),
            Some(Bson::Double(1.0)),
            Some(Bson::Int32(1)),
            Some(Bson::Int32(2))
        ]
    );
    assert!(m.indexes.iter().all(|i| i.get("v") == Some(&Bson::Int32(1))));

    let d = full("indextestdump");
    let e = d.entry("indextest", "test_collection").unwrap();
    assert_eq!(count(e), 100);
    let idx = e.metadata.as_ref().unwrap().index("a_1_b_true").unwrap();
    assert_eq!(
        idx.get_document("key").unwrap(),
        &bson::doc! { "a": 1.0, "b": true, "c": "0".parse::<Decimal128>().unwrap(), "d": "" }
    );
    assert_eq!(idx.get("safe"), Some(&Bson::Boolean(true)));
    assert_eq!(idx.get("v"), Some(&Bson::Int32(1)));

    let d = full("longindextestdump");
    let m = d.entries[0].metadata.as_ref().unwrap();
    assert_eq!(m.indexes.len(), 1);
    assert_eq!(m.indexes[0].get_str("name").unwrap().len(), 129);

    // A plain JSON number in an otherwise canonical file (coll_with_ttl_index).
    let d = full("coll_with_ttl_index");
    let m = d.entry("test", "foo").unwrap().metadata.as_ref().unwrap();
    assert_eq!(
        m.index("f_1").unwrap().get("expireAfterSeconds"),
        Some(&Bson::Int32(1000))
    );
    assert_eq!(
        m.index("f_1").unwrap().get_document("key").unwrap().get("f"),
        Some(&Bson::Double(1.0))
    );
}

#[test]
fn foodump_has_no_prelude_and_no_collection_name() {
    let d = full("foodump");
    assert_eq!(names(&d), ["test.foo"]);
    assert_eq!(count(&d.entries[0]), 1);
    let m = d.entries[0].metadata.as_ref().unwrap();
    assert_eq!(m.collection_name, None);
    assert_eq!(m.indexes[0].get_str("ns").unwrap(), "test.foo");
    assert!(d.prelude.is_none());
}

#[test]
fn prelude_lookup() {
    let v7016 = Some(ServerVersion::Version([7, 0, 16]));
    // Target = the dir: found at the top.
    let d = full("prelude_test/prelude_top_level");
    assert_eq!(d.prelude.as_ref().map(|p| p.server_version), v7016);
    assert_eq!(names(&d), ["test.foo"]);
    // Target = …/test without -d: the files sit at the top level and are ignored; version from
    // the parent.
    let d = full("prelude_test/prelude_top_level/test");
    assert!(d.entries.is_empty());
    assert_eq!(d.skipped.len(), 2);
    assert_eq!(d.prelude.as_ref().map(|p| p.server_version), v7016);
    // Target = …/test/foo.bson: restores test.foo; prelude from the file's directory's parent.
    let d = full("prelude_test/prelude_top_level/test/foo.bson");
    assert_eq!(names(&d), ["test.foo"]);
    assert_eq!(count(&d.entries[0]), 1);
    assert!(d.entries[0].metadata.is_some());
    assert_eq!(d.prelude.as_ref().map(|p| p.server_version), v7016);
    // Prelude written by a --db dump, inside the db directory.
    let d = with("prelude_test/prelude_db_target/test", false, Some("test"), None).unwrap();
    assert_eq!(d.prelude.as_ref().map(|p| p.server_version), v7016);
    assert!(
        d.prelude
            .as_ref()
            .unwrap()
            .path
            .ends_with("prelude_db_target/test/prelude.json")
    );
    assert_eq!(names(&d), ["test.foo"]);
    assert_eq!(
        skipped(&d),
        [(
            "prelude_test/prelude_db_target/test/prelude.json".into(),
            SkipReason::UnknownFile
        )]
    );
    // Gzip prelude found in the parent; the .gz files in the target are ignored without -d.
    let d = with("prelude_test/prelude_gzip/test", true, None, None).unwrap();
    assert_eq!(d.prelude.as_ref().map(|p| p.server_version), v7016);
    assert!(d.entries.is_empty());
    // With -d the gzip files are read.
    let d = with("prelude_test/prelude_gzip/test", true, Some("test"), None).unwrap();
    assert_eq!(names(&d), ["test.foo"]);
    assert_eq!(count(&d.entries[0]), 1);
    assert_eq!(
        d.entries[0].metadata.as_ref().unwrap().uuid.as_deref(),
        Some("47e9795dfa3049f6961a04aca38c4e8e")
    );
    // Without gzip the prelude.json.gz is not looked for.
    assert!(
        with("prelude_test/prelude_gzip", false, None, None)
            .unwrap()
            .prelude
            .is_none()
    );
    // "unknown" is accepted and ignored.
    let d = full("prelude_test/server_version_unknown");
    assert_eq!(
        d.prelude.as_ref().map(|p| p.server_version),
        Some(ServerVersion::Unknown)
    );
}

#[test]
fn single_file_targets() {
    // db inferred from the directory (`testdata`), collection from the stem.
    let d = full("hashedIndexes.bson");
    assert_eq!(names(&d), ["testdata.hashedIndexes"]);
    assert_eq!(count(&d.entries[0]), 2);
    let m = d.entries[0].metadata.as_ref().unwrap();
    let index_names: Vec<_> = m.indexes.iter().map(|i| i.get_str("name").unwrap()).collect();
    assert_eq!(index_names, ["_id_", "a.a_1", "a.b_hashed", "b_hashed"]);
    assert_eq!(
        m.index("a.b_hashed").unwrap().get_document("key").unwrap(),
        &bson::doc! { "a.b": "hashed" }
    );

    let d = full("local/test_auto_idx.bson");
    assert_eq!(names(&d), ["local.test_auto_idx"]);
    assert_eq!(count(&d.entries[0]), 2);
    assert_eq!(
        d.entries[0].metadata.as_ref().unwrap().options,
        Some(bson::doc! { "autoIndexId": false })
    );

    // -d/-c override the inferred names.
    let d = with("hashedIndexes.bson", false, Some("db1"), Some("coll1")).unwrap();
    assert_eq!(names(&d), ["db1.coll1"]);

    // A non-BSON file target, and a directory where a file is required.
    assert!(matches!(
        with("hashedIndexes.metadata.json", false, None, None),
        Err(DirectoryError::NotBsonFile { .. })
    ));
    assert!(matches!(
        with("testdirs/db2/c2.txt", false, None, None),
        Err(DirectoryError::NotBsonFile { .. })
    ));
    assert!(matches!(
        with("testdirs/db1", false, Some("a"), Some("b")),
        Err(DirectoryError::IsDirectory { .. })
    ));
    // -c without -d, and names that fail validation.
    assert!(matches!(
        with("hashedIndexes.bson", false, None, Some("c")),
        Err(DirectoryError::CollectionWithoutDb)
    ));
    assert!(matches!(
        with("testdirs/db1", false, Some("a.b"), None),
        Err(DirectoryError::InvalidDbName { .. })
    ));
    let err = with("hashedIndexes.bson", false, Some("db"), Some("a$b")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid collection name: illegal character '$' found in 'a$b'"
    );
    // Missing target.
    assert!(matches!(
        full_err("does-not-exist"),
        DirectoryError::InvalidTarget { .. }
    ));
}

fn full_err(dir: &str) -> DirectoryError {
    discover(&testdata().join(dir), &DiscoverOptions::default()).unwrap_err()
}

/// Current-format metadata files (as written by recent mongodump) that must be reproduced byte
/// for byte by read-then-write.
const CURRENT_FORMAT: &[&str] = &[
    "collMod_ttl_index/mongodump_test_db/coll1.metadata.json",
    "collMod_ttl_index/admin/system.version.metadata.json",
    "aws_test_db/c1.metadata.json",
    "coll_with_index/test/foo.metadata.json",
    "coll_without_index/test/foo.metadata.json",
    "duplicate_index_key_with_oplog/test/foo.metadata.json",
    "indexmetadata/indextest/test_coll_no_index_ns.metadata.json",
    "testdirs/db1/c4.metadata.json",
];

#[test]
fn current_metadata_round_trips_byte_for_byte() {
    for rel in CURRENT_FORMAT {
        let original = fs::read(testdata().join(rel)).unwrap();
        let meta = Metadata::parse(&original, rel).unwrap().unwrap();
        assert_eq!(meta.to_json().unwrap().as_bytes(), &original[..], "{rel}");
    }
}

#[test]
fn every_metadata_fixture_round_trips_semantically() {
    let mut seen = 0;
    for path in walk(&testdata()) {
        if !path.to_string_lossy().ends_with(".metadata.json") {
            continue;
        }
        let text = fs::read(&path).unwrap();
        let Some(meta) = Metadata::parse(&text, &path.display().to_string()).unwrap() else {
            assert!(text.is_empty());
            continue;
        };
        let again = Metadata::parse(meta.to_json().unwrap().as_bytes(), "rewritten")
            .unwrap()
            .unwrap();
        let mut expected = meta.clone();
        // Written as current mongodump does: empty options omitted, collectionName always present.
        expected.options = meta.options.filter(|o| !o.is_empty());
        expected.collection_name = Some(meta.collection_name.unwrap_or_default());
        assert_eq!(again, expected, "{}", path.display());
        seen += 1;
    }
    assert!(seen >= 25, "{seen}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Read every fixture dump directory, write it back with [`DumpWriter`], and compare: data files
/// byte for byte, current-format metadata byte for byte, and the rediscovered namespaces.
#[test]
fn dumps_round_trip_through_the_writer() {
    let dirs = [
        "testdirs",
        "oplogdump",
        "collMod_ttl_index",
        "usersdump",
        "dump_local_oplog",
        "duplicate_index_key",
        "indextestdump",
        "foodump",
        "coll_with_index",
    ];
    for dir in dirs {
        let source = full(dir);
        let out = tempfile::tempdir().unwrap();
        let writer = DumpWriter::new(out.path(), false);
        for entry in &source.entries {
            let ns = &entry.namespace;
            let mut file = if entry.kind == EntryKind::Oplog && ns.db.is_empty() {
                writer.create_oplog().unwrap()
            } else {
                writer.create_collection(&ns.db, &ns.collection).unwrap()
            };
            if let Some(mut reader) = entry.open_data().unwrap() {
                while let Some(doc) = reader.next_document().unwrap() {
                    file.write_document(&doc).unwrap();
                }
            }
            let written = file.finish().unwrap();
            if let Some(data) = &entry.data_path {
                assert_eq!(
                    fs::read(&written.path).unwrap(),
                    fs::read(data).unwrap(),
                    "{}",
                    data.display()
                );
            }
            if let (Some(meta), Some(original)) = (&entry.metadata, &entry.metadata_path) {
                let path = writer.write_metadata(&ns.db, &ns.collection, meta).unwrap();
                let rel = original
                    .strip_prefix(testdata())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                if CURRENT_FORMAT.contains(&rel.as_str()) {
                    assert_eq!(fs::read(&path).unwrap(), fs::read(original).unwrap(), "{rel}");
                }
            }
        }
        writer.write_prelude(None, "7.0.16", "100.10.0").unwrap().unwrap();
        let again = discover(out.path(), &DiscoverOptions::default()).unwrap();
        let before: Vec<_> = source.entries.iter().map(|e| (e.namespace.clone(), e.kind)).collect();
        let after: Vec<_> = again.entries.iter().map(|e| (e.namespace.clone(), e.kind)).collect();
        // .bin files come back as .bson, which sorts the same here.
        assert_eq!(after, before, "{dir}");
        assert_eq!(
            again.prelude.unwrap().server_version,
            ServerVersion::Version([7, 0, 16])
        );
    }
}
