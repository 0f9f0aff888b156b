//! Discovery and layout rules of FORMATS.md sections 1.6–1.13 on synthetic dump directories
//! (for the fixtures that mongo-tools describes but does not ship: long and escaped names,
//! timeseries, `$`-prefixed files, `system.profile`, `system.indexes`).

use std::fs;
use std::io::Read;
use std::path::Path;

use bson::rawdoc;
use tidemark_format::directory::{
    DbAuthFile, DirectoryError, DiscoverOptions, DumpWriter, EntryKind, ServerVersion, SkipReason, discover,
    read_prelude,
};
use tidemark_format::metadata::Metadata;
use tidemark_format::naming::file_stem;

/// The 247-character name of the `longcollectionname` fixture.
fn long_name() -> String {
    format!(
        "aVery{}LongCollectionNameConsistingOfExactlyTwoHundredAndFortySevenCharacters",
        "Very".repeat(43)
    )
}

fn opts(gzip: bool, db: Option<&str>, collection: Option<&str>) -> DiscoverOptions {
    DiscoverOptions {
        gzip,
        db: db.map(str::to_owned),
        collection: collection.map(str::to_owned),
    }
}

fn one_doc(path: &Path) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, rawdoc! { "_id": 1 }.as_bytes()).unwrap();
}

#[test]
fn long_name_fixture_stem_and_lookup() {
    let name = long_name();
    assert_eq!(name.len(), 247);
    // FORMATS.md 1.10: the fixture's file stem.
    let expected = format!("{}%24xFO0VquRn7cg3QooSZD5sglTddU", &name[..208]);
    assert_eq!(file_stem(&name), expected);
    assert!(expected.ends_with("LongCollectionNameConsistingOfE%24xFO0VquRn7cg3QooSZD5sglTddU"));

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("longcollectionname");
    one_doc(&root.join("db1").join(format!("{expected}.bson")));
    let mut meta = Metadata::new(name.clone());
    meta.indexes
        .push(bson::doc! { "v": 2, "key": { "_id": 1 }, "name": "_id_" });
    fs::write(
        root.join("db1").join(format!("{expected}.metadata.json")),
        meta.to_json().unwrap(),
    )
    .unwrap();
    let stray = root.join(format!("{}%24someMadeUpInvalidHashString.bson", &name[..208]));
    one_doc(&stray);

    // Full restore: db1.<247-char name>; the stray top-level file is just unknown.
    let d = discover(&root, &opts(false, None, None)).unwrap();
    assert_eq!(d.entries.len(), 1);
    assert_eq!(d.entries[0].namespace.db, "db1");
    assert_eq!(d.entries[0].namespace.collection, name);
    assert_eq!(d.skipped.len(), 1);
    assert_eq!(d.skipped[0].reason, SkipReason::UnknownFile);
    // Inferring from the real file: db1 and the full name.
    let d = discover(
        &root.join("db1").join(format!("{expected}.bson")),
        &opts(false, None, None),
    )
    .unwrap();
    assert_eq!(d.entries[0].namespace.to_string(), format!("db1.{name}"));
    // The stray file as a target: its metadata is missing.
    let err = discover(&stray, &opts(false, None, None)).unwrap_err();
    assert!(matches!(err, DirectoryError::ShortenedName { .. }), "{err}");
}

#[test]
fn escaped_names_unescape_and_bad_escapes_fail() {
    let dir = tempfile::tempdir().unwrap();
    one_doc(&dir.path().join("db1/caf%C3%A9s.bson"));
    one_doc(&dir.path().join("db1/a+b.bson"));
    one_doc(&dir.path().join("db1/coll%2Fthree.bson"));
    let d = discover(dir.path(), &opts(false, None, None)).unwrap();
    let names: Vec<_> = d.entries.iter().map(|e| e.namespace.collection.clone()).collect();
    assert_eq!(names, ["a b", "caf\u{e9}s", "coll/three"]);

    one_doc(&dir.path().join("db1/bad%zz.bson"));
    let err = discover(dir.path(), &opts(false, None, None)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "error parsing collection name from filename `bad%zz.bson`: invalid URL escape \"%zz\" in file name \"bad%zz\""
    );
}

#[test]
fn invalid_database_directory_aborts() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("bad.db")).unwrap();
    let err = discover(dir.path(), &opts(false, None, None)).unwrap_err();
    assert!(
        matches!(err, DirectoryError::InvalidDbName { ref name, .. } if name == "bad.db"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("illegal character '.' found in db name 'bad.db'"),
        "{err}"
    );
}

#[test]
fn special_and_skipped_files() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x");
    for f in [
        "$admin.system.users.bson",
        "$admin.system.roles.bson",
        "$admin.system.version.bson",
    ] {
        one_doc(&db.join(f));
    }
    one_doc(&db.join("system.profile.bson"));
    fs::write(db.join("system.profile.metadata.json"), br#"{"indexes":[]}"#).unwrap();
    one_doc(&db.join("system.indexes.bson"));
    one_doc(&db.join("c.bson"));
    fs::write(db.join("c.metadata.json"), br#"{"indexes":[]}"#).unwrap();

    // Full restore: $ files and system.profile skipped; system.indexes skipped (metadata exists).
    let d = discover(dir.path(), &opts(false, None, None)).unwrap();
    assert_eq!(
        d.entries.iter().map(|e| e.namespace.to_string()).collect::<Vec<_>>(),
        ["x.c"]
    );
    let reasons: Vec<_> = d.skipped.iter().map(|s| s.reason).collect();
    assert_eq!(
        reasons,
        [
            SkipReason::DollarPrefixed,
            SkipReason::DollarPrefixed,
            SkipReason::DollarPrefixed,
            SkipReason::SystemIndexesWithMetadata,
            SkipReason::SystemProfile,
            SkipReason::SystemProfile,
        ]
    );

    // With -d the $admin files are users/roles/version intents.
    let d = discover(&db, &opts(false, Some("x"), None)).unwrap();
    let kinds: Vec<_> = d
        .entries
        .iter()
        .map(|e| (e.namespace.collection.as_str(), e.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("$admin.system.roles", EntryKind::Roles),
            ("$admin.system.users", EntryKind::Users),
            ("$admin.system.version", EntryKind::AuthVersion),
            ("c", EntryKind::Collection),
        ]
    );

    // Without any metadata files, system.indexes is the legacy index source.
    let legacy = tempfile::tempdir().unwrap();
    one_doc(&legacy.path().join("d/system.indexes.bson"));
    one_doc(&legacy.path().join("d/c.bson"));
    let d = discover(legacy.path(), &opts(false, None, None)).unwrap();
    let kinds: Vec<_> = d.entries.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EntryKind::Collection, EntryKind::SystemIndexes]);
}

#[test]
fn timeseries_and_views() {
    let dir = tempfile::tempdir().unwrap();
    let writer = DumpWriter::new(dir.path(), false);
    let mut ts = Metadata::new("foo_ts");
    ts.options =
        Some(bson::doc! { "timeseries": { "timeField": "ts", "metaField": "meta", "granularity": "seconds" } });
    ts.collection_type = Some("timeseries".into());
    writer.write_metadata("timeseries_test", "foo_ts", &ts).unwrap();
    let mut buckets = writer.create_timeseries_buckets("timeseries_test", "foo_ts").unwrap();
    buckets
        .write_document(&rawdoc! { "_id": 1, "control": { "version": 1 } })
        .unwrap();
    let written = buckets.finish().unwrap();
    assert!(written.path.ends_with("timeseries_test/system.buckets.foo_ts.bson"));
    let mut view = Metadata::new("v");
    view.options = Some(bson::doc! { "viewOn": "foo_ts", "pipeline": [] });
    view.collection_type = Some("view".into());
    writer.write_metadata("timeseries_test", "v", &view).unwrap();

    let d = discover(dir.path(), &opts(false, None, None)).unwrap();
    let got: Vec<_> = d
        .entries
        .iter()
        .map(|e| (e.namespace.to_string(), e.kind, e.data_path.is_some()))
        .collect();
    assert_eq!(
        got,
        [
            ("timeseries_test.foo_ts".to_owned(), EntryKind::Timeseries, true),
            ("timeseries_test.v".into(), EntryKind::View, false)
        ]
    );

    // Bucket file as target: -c bar_ts restores into bar_ts; the metadata is found without the prefix.
    let file = dir.path().join("timeseries_test/system.buckets.foo_ts.bson");
    let d = discover(&file, &opts(false, Some("timeseries_test"), Some("bar_ts"))).unwrap();
    assert_eq!(d.entries[0].namespace.to_string(), "timeseries_test.bar_ts");
    assert_eq!(d.entries[0].kind, EntryKind::Timeseries);
    assert!(d.entries[0].metadata.as_ref().unwrap().is_timeseries());
    // Inferred: the prefix is dropped.
    let d = discover(&file, &opts(false, None, None)).unwrap();
    assert_eq!(d.entries[0].namespace.to_string(), "timeseries_test.foo_ts");

    // ts_single_buckets_file: no metadata next to it.
    fs::remove_file(dir.path().join("timeseries_test/foo_ts.metadata.json")).unwrap();
    let err = discover(
        &file,
        &opts(false, Some("timeseries_test"), Some("system.buckets.foo_ts")),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "could not find the timeseries collection metadata file for `timeseries_test.foo_ts`"
    );
}

#[test]
fn prelude_errors_and_exact_text() {
    let dir = tempfile::tempdir().unwrap();
    let writer = DumpWriter::new(dir.path().join("dump"), false);
    // Nothing dumped: no directory, no prelude.
    assert_eq!(writer.write_prelude(None, "7.0.16", "100.x.y").unwrap(), None);
    writer.create_collection("db", "c").unwrap().finish().unwrap();
    let path = writer.write_prelude(None, "8.0.4", "100.11.0").unwrap().unwrap();
    assert_eq!(
        fs::read(&path).unwrap(),
        br#"{"ServerVersion":"8.0.4","ToolVersion":"100.11.0"}"#
    );
    // A --db dump puts it in the db directory.
    let path = writer.write_prelude(Some("db"), "8.0.4", "<&>").unwrap().unwrap();
    assert!(path.ends_with("dump/db/prelude.json"));
    assert_eq!(
        fs::read(&path).unwrap(),
        br#"{"ServerVersion":"8.0.4","ToolVersion":"\u003c\u0026\u003e"}"#
    );

    for (text, message) in [
        (&br#"{"ToolVersion":"x"}"#[..], "ServerVersion key not found"),
        (br#"{"ServerVersion":""}"#, "ServerVersion key not found"),
        (br#"{"ServerVersion":"8.0"}"#, "failed to parse server version"),
        (br#"{"ServerVersion":7}"#, "failed to unmarshal"),
        (b"not json", "failed to unmarshal"),
    ] {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("prelude.json"), text).unwrap();
        let err = read_prelude(d.path(), false).unwrap_err();
        assert!(err.to_string().contains(message), "{err}");
    }
    // Go's encoding/json matches keys case-insensitively.
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("prelude.json"), br#"{"serverversion":"6.0.1-rc0"}"#).unwrap();
    let p = read_prelude(d.path(), false).unwrap().unwrap();
    assert_eq!(p.server_version, ServerVersion::Version([6, 0, 1]));
}

#[test]
fn gzip_layout_and_oplog_quirk() {
    let dir = tempfile::tempdir().unwrap();
    let writer = DumpWriter::new(dir.path(), true);
    let mut c = writer.create_collection("db", "c").unwrap();
    c.write_document(&rawdoc! { "a": 1 }).unwrap();
    c.finish().unwrap();
    writer.create_collection("db", "empty").unwrap().finish().unwrap();
    writer.write_metadata("db", "c", &Metadata::new("c")).unwrap();
    let mut users = writer.create_db_auth_file("db", DbAuthFile::Users).unwrap();
    users.write_document(&rawdoc! { "user": "u", "db": "db" }).unwrap();
    users.finish().unwrap();
    let mut oplog = writer.create_oplog().unwrap();
    oplog.write_document(&rawdoc! { "op": "n" }).unwrap();
    oplog.finish().unwrap();
    writer.write_prelude(None, "7.0.16", "t").unwrap();

    let mut files: Vec<_> = walk_names(dir.path());
    files.sort();
    assert_eq!(
        files,
        [
            "db/$admin.system.users.bson.gz",
            "db/c.bson.gz",
            "db/c.metadata.json.gz",
            "db/empty.bson.gz",
            "oplog.bson",
            "prelude.json.gz"
        ]
    );
    // Every file is one gzip member; the oplog is compressed under its plain name.
    for name in &files {
        let bytes = fs::read(dir.path().join(name)).unwrap();
        assert_eq!(&bytes[..2], &[0x1f, 0x8b], "{name}");
        let mut single = flate2::read::GzDecoder::new(&bytes[..]);
        let mut out = Vec::new();
        single.read_to_end(&mut out).unwrap();
    }

    // Restored with gzip: everything reads, oplog included.
    let d = discover(dir.path(), &opts(true, None, None)).unwrap();
    let got: Vec<_> = d.entries.iter().map(|e| e.namespace.to_string()).collect();
    assert_eq!(got, ["db.c", "db.empty", ".oplog"]);
    let mut r = d.entries[2].open_data().unwrap().unwrap();
    assert_eq!(r.next_document().unwrap().unwrap().get_str("op").unwrap(), "n");
    assert_eq!(d.prelude.unwrap().server_version, ServerVersion::Version([7, 0, 16]));
    // Without gzip: the .gz files are not recognised, and the gzip'd oplog.bson fails to read.
    let d = discover(dir.path(), &opts(false, None, None)).unwrap();
    assert_eq!(d.entries.len(), 1);
    let mut r = d.entries[0].open_data().unwrap().unwrap();
    assert!(r.next_document().is_err());
}

fn walk_names(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            for inner in walk_names(&path) {
                out.push(format!("{}/{inner}", path.file_name().unwrap().to_string_lossy()));
            }
        } else {
            out.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    out
}

#[test]
fn empty_collection_gives_empty_file_and_unfinished_files_vanish() {
    let dir = tempfile::tempdir().unwrap();
    let writer = DumpWriter::new(dir.path(), false);
    let written = writer.create_collection("db", "empty").unwrap().finish().unwrap();
    assert_eq!(fs::metadata(&written.path).unwrap().len(), 0);
    {
        let mut w = writer.create_collection("db", "partial").unwrap();
        w.write_document(&rawdoc! { "a": 1 }).unwrap();
        // Dropped without finish: as if the dump was interrupted.
    }
    assert_eq!(walk_names(dir.path()), ["db/empty.bson"]);
    // Invalid database names are refused before anything is created.
    assert!(matches!(
        writer.create_collection("a.b", "c"),
        Err(DirectoryError::InvalidDbName { .. })
    ));
}
