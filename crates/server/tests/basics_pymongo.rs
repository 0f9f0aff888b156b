//! pymongo (an independent driver and BSON codec) against the real `tidemark-server` binary; the checks
//! live in `basics_pymongo.py` and follow MongoDB's documented behaviour.

mod support;

#[test]
fn pymongo_basics_against_the_binary() {
    let server = support::ServerProcess::start(&[]);
    support::run_pymongo_script("basics_pymongo.py", server.port, &[]);
}
