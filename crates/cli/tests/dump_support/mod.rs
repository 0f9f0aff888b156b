//! Shared helpers of the dump and restore integration tests: an in-process `tidemark-server`,
//! running the `tidemark` binary, the real fixtures, and pymongo (an independent client) to seed
//! and inspect servers.

#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use tidemark_server::{ServerConfig, testing::TestServer};

/// A test server running on its own runtime for the duration of a test.
pub struct Server {
    runtime: tokio::runtime::Runtime,
    server: Option<TestServer>,
    /// `mongodb://127.0.0.1:<port>`.
    pub uri: String,
}

impl Server {
    /// Starts an in-memory server on a free port.
    pub fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = runtime.block_on(tidemark_server::testing::start_test_server(ServerConfig::default()));
        let uri = format!("{}/", server.uri());
        Self {
            runtime,
            server: Some(server),
            uri,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.runtime.block_on(server.shutdown());
        }
    }
}

/// Path of a file of the real mongo-tools fixtures.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/mongo-tools")
        .join(rel)
}

/// Runs `tidemark` with the arguments (stdin closed).
pub fn tidemark(args: &[&str]) -> Output {
    tidemark_stdin(args, None)
}

/// Runs `tidemark`, feeding `stdin` from a file when given.
pub fn tidemark_stdin(args: &[&str], stdin: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
    cmd.args(args).arg("--quiet");
    cmd.stdin(match stdin {
        Some(p) => Stdio::from(std::fs::File::open(p).unwrap()),
        None => Stdio::null(),
    });
    cmd.output().unwrap()
}

/// stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The "N document(s) restored successfully. M document(s) failed to restore." counts.
pub fn restore_counts(out: &Output) -> (u64, u64) {
    let text = stderr(out);
    let line = text
        .lines()
        .find(|l| l.contains("document(s) restored successfully."))
        .unwrap_or_else(|| panic!("no result line in: {text}"));
    let nums: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    (nums[0], nums[1])
}

/// Runs a pymongo script; `client` is connected to `uri`; the script prints its result.
pub fn pymongo(uri: &str, script: &str) -> String {
    let program = format!(
        "import sys, json, pymongo, bson\nfrom bson import json_util\nclient = pymongo.MongoClient(sys.argv[1], directConnection=True)\n{script}\n"
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(program)
        .arg(uri)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pymongo script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Everything pymongo sees on a server, outside admin/config/local: per collection its type,
/// options, indexes and documents (sorted by `_id`), as canonical Extended JSON, one line per
/// collection (field order preserved).
pub fn snapshot(uri: &str) -> String {
    pymongo(
        uri,
        r#"
out = {}
for name in sorted(client.list_database_names()):
    if name in ("admin", "config", "local"):
        continue
    db = client[name]
    for spec in sorted(db.list_collections(), key=lambda s: s["name"]):
        coll = db[spec["name"]]
        entry = {"type": spec.get("type"), "options": spec.get("options", {})}
        if spec.get("type") != "view":
            entry["indexes"] = sorted(
                [{k: v for k, v in ix.items() if k not in ("ns", "v")} for ix in coll.list_indexes()],
                key=lambda ix: ix["name"])
            entry["docs"] = list(coll.find({}).sort("_id", 1))
        print(name + "." + spec["name"] + " " + json_util.dumps(entry, json_options=json_util.CANONICAL_JSON_OPTIONS))
"#,
    )
}

/// Asserts two snapshots are equal, reporting the first differing collections briefly.
pub fn assert_same_snapshot(got: &str, expected: &str) {
    let got_lines: Vec<&str> = got.lines().collect();
    let want_lines: Vec<&str> = expected.lines().collect();
    let short = |s: &str| s.chars().take(600).collect::<String>();
    for (g, w) in got_lines.iter().zip(&want_lines) {
        assert!(
            g == w,
            "collection differs:\n  got:  {}\n  want: {}",
            short(g),
            short(w)
        );
    }
    let names = |ls: &[&str]| {
        ls.iter()
            .map(|l| l.split(' ').next().unwrap_or("").to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&got_lines), names(&want_lines), "collections differ");
}
