//! Shared by the integration tests that drive the real `tidemark-server` binary from another client:
//! start it on a free loopback port and wait until it listens, and run a pymongo script against it.

#![allow(dead_code)] // each test binary uses its own subset

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `tidemark-server` child process, killed when dropped.
pub struct ServerProcess {
    child: Child,
    /// The loopback port it listens on.
    pub port: u16,
}

impl ServerProcess {
    /// Starts the binary with `--bind_ip 127.0.0.1 --port <free port>` plus `args`, and waits (up to
    /// 20 s) until the port accepts connections.
    pub fn start(args: &[&str]) -> Self {
        Self::start_on(free_port(), args)
    }

    /// Like [`ServerProcess::start`] on a given port (a restart on the same port and dbpath).
    pub fn start_on(port: u16, args: &[&str]) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_tidemark-server"))
            .args(["--bind_ip", "127.0.0.1", "--port", &port.to_string()])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tidemark-server");
        let server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tidemark-server did not start listening on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

impl ServerProcess {
    /// Kills the process with SIGKILL (a crash, not a shutdown) and waits for it.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill tidemark-server");
        self.child.wait().expect("wait for tidemark-server");
    }

    /// Stops the process with SIGTERM (a clean shutdown, as an init system would) and waits for it.
    pub fn terminate(&mut self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        assert!(status.is_ok_and(|s| s.success()), "send SIGTERM to tidemark-server");
        self.child.wait().expect("wait for tidemark-server");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs `tests/<script>` with python3 (pymongo is installed by `.ci/run`) with the server's port and
/// `extra` arguments; the script prints `OK` last when every check passed.
pub fn run_pymongo_script(script: &str, port: u16, extra: &[&str]) {
    let available = Command::new("python3")
        .args(["-c", "import pymongo"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(available, "python3 with pymongo is required for this test");
    let path = format!("{}/tests/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(path)
        .arg(port.to_string())
        .args(extra)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("OK"),
        "pymongo checks failed:\n{stdout}\n{stderr}"
    );
}
