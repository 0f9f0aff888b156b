//! pymongo (an independent driver and BSON codec) tails the oplog of the real `tidemark-server` binary started
//! with `--replSet rs0 --oplogSizeMB 1`, and replays a real oplog fixture with `applyOps`; the checks live in
//! `oplog_pymongo.py` and follow MongoDB's documented behaviour.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn pymongo_tails_the_oplog_and_applies_fixtures() {
    let ok = Command::new("python3")
        .args(["-c", "import pymongo"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "python3 with pymongo is required for this test");
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_tidemark-server"))
        .args([
            "--bind_ip",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--replSet",
            "rs0",
            "--oplogSizeMB",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tidemark-server");
    let _server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "tidemark-server did not start listening on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oplog_pymongo.py");
    let testdata = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures/mongo-tools/mongorestore/testdata"
    );
    let out = Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .arg(testdata)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("OK"),
        "pymongo checks failed:\n{stdout}\n{stderr}"
    );
}
