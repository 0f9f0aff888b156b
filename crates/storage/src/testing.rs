//! A real S3-compatible server for tests: `moto` in server mode, started on demand.
//!
//! Tests of S3 storage must talk to a real S3 implementation over HTTP, not to a mock of the client. If
//! `TIDEMARK_TEST_S3_ENDPOINT` is set (for example `http://127.0.0.1:9000`, with credentials in
//! `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`), [`S3TestServer::start`] uses that server; otherwise it starts
//! `python3 -m moto.server` on a free local port (moto is installed by `.ci/run`, or by hand with
//! `python3 -m pip install 'moto[server]'`) and stops it when the [`S3TestServer`] is dropped. Each call
//! creates a fresh bucket through the S3 API (with Python's `boto3`, an independent client), so tests never
//! see each other's objects.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::StorageConfig;

/// Environment variable naming an external S3-compatible server to test against instead of moto.
pub const S3_ENDPOINT_ENV: &str = "TIDEMARK_TEST_S3_ENDPOINT";

/// Credentials used with the moto server (moto accepts any).
const MOTO_KEY_ID: &str = "tidemark-test";
const MOTO_SECRET: &str = "tidemark-test-secret";

/// An S3-compatible server with a fresh bucket; stops the server (if it started one) when dropped.
#[derive(Debug)]
pub struct S3TestServer {
    endpoint: String,
    bucket: String,
    config: StorageConfig,
    child: Option<Child>,
}

impl S3TestServer {
    /// Starts moto (or uses `TIDEMARK_TEST_S3_ENDPOINT`) and creates a new, empty bucket.
    ///
    /// Fails with a message saying what to install or set if moto (or boto3) is missing.
    pub fn start() -> Result<S3TestServer, String> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let bucket = format!(
            "tidemark-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let (endpoint, config, child) = match std::env::var(S3_ENDPOINT_ENV) {
            Ok(endpoint) if !endpoint.is_empty() => {
                let config = StorageConfig {
                    endpoint: Some(endpoint.clone()),
                    access_key_id: std::env::var("AWS_ACCESS_KEY_ID").ok(),
                    secret_access_key: std::env::var("AWS_SECRET_ACCESS_KEY").ok(),
                    ..StorageConfig::default()
                };
                (endpoint, config, None)
            }
            _ => {
                let (endpoint, child) = start_moto()?;
                let config = StorageConfig {
                    endpoint: Some(endpoint.clone()),
                    access_key_id: Some(MOTO_KEY_ID.to_owned()),
                    secret_access_key: Some(MOTO_SECRET.to_owned()),
                    ..StorageConfig::default()
                };
                (endpoint, config, Some(child))
            }
        };
        let server = S3TestServer {
            endpoint,
            bucket,
            config,
            child,
        };
        server.boto3("s3.create_bucket(Bucket=bucket)")?;
        Ok(server)
    }

    /// The server's endpoint (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The bucket created for this test.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// A storage URL for `prefix` in the bucket (`s3://bucket/prefix?endpoint=...&region=us-east-1`).
    pub fn url(&self, prefix: &str) -> String {
        format!(
            "s3://{}/{}?endpoint={}&region=us-east-1",
            self.bucket, prefix, self.endpoint
        )
    }

    /// Options with the server's credentials and endpoint.
    pub fn config(&self) -> StorageConfig {
        self.config.clone()
    }

    /// Runs Python `code` with `s3` (a boto3 client for the server) and `bucket` defined, returning its
    /// standard output. Tests use it to check objects with a client independent of this crate.
    pub fn boto3(&self, code: &str) -> Result<String, String> {
        let script = format!(
            "import boto3, sys, json\n\
             s3 = boto3.client('s3', endpoint_url={endpoint:?}, region_name='us-east-1', \
             aws_access_key_id={key:?}, aws_secret_access_key={secret:?})\n\
             bucket = {bucket:?}\n{code}\n",
            endpoint = self.endpoint,
            key = self.config.access_key_id.as_deref().unwrap_or_default(),
            secret = self.config.secret_access_key.as_deref().unwrap_or_default(),
            bucket = self.bucket,
        );
        let out = Command::new("python3")
            .arg("-c")
            .arg(&script)
            .output()
            .map_err(|e| format!("cannot run python3 for boto3: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "boto3 script failed against {} (is boto3 installed? `python3 -m pip install 'moto[server]'`): {}",
                self.endpoint,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        String::from_utf8(out.stdout).map_err(|e| format!("boto3 output is not UTF-8: {e}"))
    }
}

impl Drop for S3TestServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `python3 -m moto.server` on a free port and waits until it accepts connections.
fn start_moto() -> Result<(String, Child), String> {
    let probe = Command::new("python3")
        .args(["-c", "import moto.server, boto3"])
        .output()
        .map_err(|e| format!("cannot run python3 (needed for the moto S3 test server): {e}"))?;
    if !probe.status.success() {
        return Err(format!(
            "the moto S3 test server is not installed; install it with `python3 -m pip install 'moto[server]'` \
             (done by .ci/run) or set {S3_ENDPOINT_ENV} to an S3-compatible endpoint: {}",
            String::from_utf8_lossy(&probe.stderr).trim()
        ));
    }
    let mut last_error = String::new();
    for _ in 0..3 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("cannot find a free port for moto: {e}"))?
            .port();
        let mut child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start moto: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok() {
                // Keep draining moto's request log so the pipe never fills up and blocks the server.
                if let Some(stderr) = child.stderr.take() {
                    std::thread::spawn(move || BufReader::new(stderr).lines().map_while(Result::ok).for_each(drop));
                }
                return Ok((format!("http://127.0.0.1:{port}"), child));
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut log = String::new();
                if let Some(stderr) = child.stderr.take() {
                    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                        log.push_str(&line);
                        log.push('\n');
                    }
                }
                last_error = format!("moto exited with {status} on port {port}: {log}");
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                last_error = format!("moto did not start listening on port {port} within 20 s");
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
    Err(last_error)
}
