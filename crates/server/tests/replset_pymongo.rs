//! pymongo (an independent driver) against a five-member tidemark replica set with a hidden and a delayed
//! member; the checks live in `replset_pymongo.py` and follow the MongoDB manual.

use std::process::Command;

use tidemark_server::testing::replset::{ReplSet, ReplSetOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pymongo_against_a_five_member_set() {
    let ok = Command::new("python3")
        .args(["-c", "import pymongo"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "python3 with pymongo is required for this test");
    let options = ReplSetOptions {
        members: 5,
        hidden: true,
        delayed_secs: Some(1),
        ..ReplSetOptions::default()
    };
    let set = ReplSet::start(options).await.unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/replset_pymongo.py");
    let uri = set.uri();
    let hidden = set.members[3].host.clone();
    let delayed = set.members[4].host.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .arg(uri)
            .arg(hidden)
            .arg(delayed)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim() == "ok",
        "pymongo checks failed:\n{stdout}\n{stderr}"
    );
}
