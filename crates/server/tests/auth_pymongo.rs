//! pymongo (an independent client and SCRAM implementation) against the real `tidemark-server` binary
//! started with `--auth`; the checks themselves live in `auth_pymongo.py`.

mod support;

#[test]
fn pymongo_scram_and_authorization() {
    let server = support::ServerProcess::start(&["--auth"]);
    support::run_pymongo_script("auth_pymongo.py", server.port, &[]);
}
