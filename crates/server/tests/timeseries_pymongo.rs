//! Time series collections against the real `tidemark-server` binary, with pymongo (an independent
//! driver and BSON codec) as the client: `create` options and validation, `listCollections` shapes,
//! measurements packed into `system.buckets.<name>` by mongod's documented bucketing rules, reads that
//! unpack them, and the same state served again after a restart on the same `--dbpath`. The checks
//! live in `timeseries_pymongo.py`.

mod support;

#[test]
fn pymongo_time_series_collections_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let dbpath = dir.path().to_str().unwrap();
    let mut server = support::ServerProcess::start(&["--dbpath", dbpath]);
    support::run_pymongo_script("timeseries_pymongo.py", server.port, &["write"]);
    server.terminate();
    let again = support::ServerProcess::start(&["--dbpath", dbpath]);
    support::run_pymongo_script("timeseries_pymongo.py", again.port, &["reload"]);
}
