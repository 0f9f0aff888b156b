//! Plans built from the real fixtures (FORMATS.md 1.13, 2.3, 3.3 and 6), and the dump side's
//! checks, through the public API of `tidemark-core`.

use std::path::PathBuf;

use tidemark_core::{
    dump::{DumpOptions, DumpTarget, plan_dump, validate_oplog_entry},
    restore::{IntentData, RestoreOptions, RestoreSource, plan_restore},
};
use tidemark_format::directory::EntryKind;

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/mongo-tools")
        .join(rel)
}

fn directory(rel: &str) -> RestoreOptions {
    let mut o = RestoreOptions::default();
    o.source = RestoreSource::Directory(fixture(rel));
    o.parallel = 1;
    o
}

#[test]
fn testdirs_intents_in_discovery_order() {
    let plan = plan_restore(&directory("mongorestore/testdata/testdirs")).unwrap();
    let names: Vec<String> = plan.intents.iter().map(|i| i.destination.to_string()).collect();
    assert_eq!(names, ["db1.c1", "db1.c2", "db1.c3", "db1.c4", "db2.c1"]);
    // c2 and db2.c1 (the .bin) have no metadata; c3's metadata file is empty.
    let without: Vec<&str> = plan
        .intents
        .iter()
        .filter(|i| i.metadata.is_none())
        .map(|i| i.source.collection.as_str())
        .collect();
    assert_eq!(without, ["c2", "c3", "c1"]);
    // The top-level oplog.bson is not replayed without --oplogReplay.
    assert!(plan.oplog.is_none());
}

#[test]
fn renames_apply_to_the_destination() {
    let mut o = directory("mongorestore/testdata/testdirs");
    o.ns_from = vec!["db1.*".into()];
    o.ns_to = vec!["db4.test.*".into()];
    let plan = plan_restore(&o).unwrap();
    let names: Vec<String> = plan.intents.iter().map(|i| i.destination.to_string()).collect();
    assert_eq!(
        names,
        ["db4.test.c1", "db4.test.c2", "db4.test.c3", "db4.test.c4", "db2.c1"]
    );

    let mut o = directory("mongorestore/testdata/testdirs");
    o.ns_from = vec!["db1.c1".into(), "db2.c1".into()];
    o.ns_to = vec!["x.y".into(), "x.y".into()];
    let err = plan_restore(&o).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot restore with conflicting namespace destinations"),
        "{err}"
    );
}

#[test]
fn oplog_selection() {
    let mut o = directory("mongorestore/testdata/oplogdump");
    o.oplog_replay = true;
    let plan = plan_restore(&o).unwrap();
    let oplog = plan.oplog.expect("oplog.bson is replayed");
    assert!(matches!(&oplog.data, IntentData::File { path, .. } if path.ends_with("oplog.bson")));

    // --oplogFile beats local/oplog.rs, which becomes an ordinary collection.
    let mut o = directory("mongorestore/testdata/dump_local_oplog");
    o.oplog_replay = true;
    o.oplog_file = Some(fixture("mongorestore/testdata/extra_oplog.bson"));
    let plan = plan_restore(&o).unwrap();
    assert!(matches!(&plan.oplog.unwrap().data, IntentData::File { path, .. } if path.ends_with("extra_oplog.bson")));
    assert!(
        plan.intents
            .iter()
            .any(|i| i.destination.to_string() == "local.oplog.rs")
    );

    let mut o = directory("mongorestore/testdata/testdirs/db1");
    o.oplog_replay = true;
    o.db = Some("db1".into());
    let err = plan_restore(&o).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no oplog file to replay; make sure you run mongodump with --oplog"
    );
}

#[test]
fn archive_prelude_becomes_intents() {
    // test.bar.archive: prelude test.bar + admin.system.version (FORMATS.md 2.4 worked example).
    let mut o = RestoreOptions::default();
    o.source = RestoreSource::Archive(Some(fixture("mongorestore/testdata/test.bar.archive")));
    let plan = plan_restore(&o).unwrap();
    let names: Vec<String> = plan.intents.iter().map(|i| i.destination.to_string()).collect();
    assert_eq!(names, ["test.bar"]);
    assert_eq!(
        plan.auth.iter().map(|a| a.kind).collect::<Vec<_>>(),
        [EntryKind::AuthVersion]
    );
    assert_eq!(plan.dump_server_version.as_deref(), Some("3.4.3"));
    // Legacy relaxed metadata: a bare JSON integer is an int32, as the Go driver reads it.
    let meta = plan.intents[0].metadata.as_ref().unwrap();
    assert_eq!(meta.indexes[0].get("v"), Some(&bson::Bson::Int32(2)));

    // -d/-c act as include filters in archive mode.
    o.db = Some("other".into());
    let plan = plan_restore(&o).unwrap();
    assert!(plan.intents.is_empty());
    assert!(plan.skipped.iter().any(|(ns, _)| ns == "test.bar"));
}

#[test]
fn dump_refuses_an_oplog_window_with_import_collection() {
    // FORMATS.md 6.3: the exact message of oplogDocumentValidator.
    let bytes = std::fs::read(fixture("mongodump/testdata/importCollection.bson")).unwrap();
    let entry = bson::Document::from_reader(&mut bytes.as_slice()).unwrap();
    assert_eq!(
        validate_oplog_entry(&entry).unwrap_err().to_string(),
        "cannot dump with oplog while importCollection occurs"
    );
}

#[test]
fn dump_oplog_needs_a_replica_set() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = tidemark_server::testing::start_test_server(tidemark_server::ServerConfig::default()).await;
        let mut conn = tidemark_core::connection::ConnectionOptions::default();
        conn.uri = Some(format!("{}/", server.uri()));
        let client = tidemark_core::connection::connect(&conn, "test").await.unwrap();
        let mut options = DumpOptions::default();
        options.oplog = true;
        options.target = DumpTarget::Archive(None);
        let err = plan_dump(&client, &options, &tidemark_core::NoProgress)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("replica set"), "{err}");
        server.shutdown().await;
    });
}

fn bson_file(rel: &str) -> Vec<bson::Document> {
    let bytes = std::fs::read(fixture(rel)).unwrap();
    let mut docs = Vec::new();
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        docs.push(bson::Document::from_reader(&mut rest).unwrap());
    }
    docs
}

#[test]
fn auth_schema_versions_of_the_fixtures() {
    use tidemark_core::authschema::{check_auth_versions, dump_auth_version};
    // metadata_test.go TestGetDumpAuthVersion (FORMATS.md 6.1).
    let v3 = bson_file("mongorestore/testdata/auth_version_3.bson");
    let v5 = bson_file("mongorestore/testdata/auth_version_5.bson");
    let no_schema = bson_file("mongorestore/testdata/system.version.no_auth_schema.bson");
    assert_eq!(dump_auth_version(None, Some(&v3), false).unwrap(), 3);
    assert_eq!(dump_auth_version(None, Some(&v3), true).unwrap(), 3);
    assert_eq!(dump_auth_version(None, Some(&v5), false).unwrap(), 5);
    let err = dump_auth_version(Some("8.0.0"), Some(&no_schema), false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "system.version bson file does not have authSchema document"
    );
    assert_eq!(dump_auth_version(Some("8.1.0"), Some(&no_schema), false).unwrap(), 5);
    assert_eq!(dump_auth_version(None, None, false).unwrap(), 1);
    assert_eq!(dump_auth_version(None, None, true).unwrap(), 3);
    // usersdump: FCV 4.2 + authSchema 5.
    let users = bson_file("mongorestore/testdata/usersdump/admin/system.version.bson");
    assert_eq!(dump_auth_version(None, Some(&users), false).unwrap(), 5);

    for ok in [(3, 5), (5, 5), (3, 3), (1, 1), (1, 3)] {
        assert!(check_auth_versions(ok.0, ok.1).is_ok(), "{ok:?}");
    }
    for bad in [(1, 5), (5, 3), (5, 1), (3, 1), (2, 5), (5, 4)] {
        assert!(check_auth_versions(bad.0, bad.1).is_err(), "{bad:?}");
    }
}
