//! pymongo (an independent driver and BSON codec) tails the oplog of the real `tidemark-server` binary started
//! with `--replSet rs0 --oplogSizeMB 1`, and replays a real oplog fixture with `applyOps`; the checks live in
//! `oplog_pymongo.py` and follow MongoDB's documented behaviour.

mod support;

#[test]
fn pymongo_tails_the_oplog_and_applies_fixtures() {
    let server = support::ServerProcess::start(&["--replSet", "rs0", "--oplogSizeMB", "1"]);
    let testdata = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures/mongo-tools/mongorestore/testdata"
    );
    support::run_pymongo_script("oplog_pymongo.py", server.port, &[testdata]);
}
