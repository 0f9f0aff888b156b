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

impl Server {
    /// Starts an in-memory single-node replica set `rs0` and initiates it.
    pub fn start_replica_set() -> Self {
        Self::start_replica_set_with(ServerConfig::default())
    }

    /// Starts an in-memory single-node replica set `rs0` with `config` otherwise, and initiates it.
    pub fn start_replica_set_with(config: ServerConfig) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let config = ServerConfig {
            repl_set: Some("rs0".to_owned()),
            ..config
        };
        let server = runtime.block_on(tidemark_server::testing::start_test_server(config));
        let uri = format!("{}/", server.uri());
        let this = Self {
            runtime,
            server: Some(server),
            uri,
        };
        pymongo(&this.uri, "client.admin.command('replSetInitiate')\nprint('ok')");
        this
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
    pymongo_with_args(uri, script, &[])
}

/// [`pymongo`] with more arguments for the script (`sys.argv[2]` on).
pub fn pymongo_with_args(uri: &str, script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(pymongo_program(script))
        .arg(uri)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pymongo script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A Python program running `script` with `client` connected to `sys.argv[1]`.
pub fn pymongo_program(script: &str) -> String {
    format!(
        "import sys, json, pymongo, bson\nfrom bson import json_util\nclient = pymongo.MongoClient(sys.argv[1], directConnection=True)\n{script}\n"
    )
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

/// Checks an archive with an independent Python reader written from the format description
/// (FORMATS.md 2.1–2.5): magic, header and prelude field types, strict namespace headers,
/// CRC-64/XZ of every namespace, each prelude namespace closed exactly once, never more open
/// namespaces than `concurrent_collections`. Prints `ns count` per namespace, sorted.
pub fn check_archive(uri: &str, path: &Path) -> String {
    pymongo(
        uri,
        &format!(
            r#"
import struct
POLY = 0xC96C5795D7870F42
TABLE = []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ POLY if c & 1 else c >> 1
    TABLE.append(c)
def crc64(data, crc):
    crc ^= 0xFFFFFFFFFFFFFFFF
    for b in data:
        crc = TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFFFFFFFFFF
data = open({path:?}, "rb").read()
assert data[:4] == bytes([0x6D, 0xE2, 0x99, 0x81]), "magic"
pos = 4
def next_doc():
    global pos
    n = struct.unpack_from("<i", data, pos)[0]
    if n == -1:
        pos += 4
        return None
    assert 5 <= n <= 16 * 1024 * 1024 and data[pos + n - 1] == 0, "bad length %d at %d" % (n, pos)
    raw = data[pos:pos + n]
    pos += n
    return raw
header_raw = next_doc()
header = bson.decode(header_raw, codec_options=bson.CodecOptions(document_class=bson.SON))
assert list(header.keys()) == ["concurrent_collections", "version", "server_version", "tool_version"], header
assert header["version"] == "0.1" and isinstance(header["concurrent_collections"], int)
assert struct.unpack_from("<b", header_raw, 4)[0] == 0x10, "concurrent_collections must be int32"
major, minor, patch = header["server_version"].split("-")[0].split(".")[:3]
int(major); int(minor); int(patch)
expected = {{}}
while True:
    raw = next_doc()
    if raw is None:
        break
    entry = bson.decode(raw)
    assert isinstance(entry["metadata"], str) and entry["size"] == 0 and isinstance(entry["size"], int)
    coll = entry["collection"]
    if entry.get("type") == "timeseries" and header["server_version"] < "8.3":
        coll = "system.buckets." + coll
    expected[(entry["db"], coll)] = 0
open_ns, closed, crcs, order = set(), set(), {{}}, []
max_open = 0
while pos < len(data):
    raw = next_doc()
    assert raw is not None, "terminator where a header is expected"
    h = bson.decode(raw, codec_options=bson.CodecOptions(document_class=bson.SON))
    assert list(h.keys()) == ["db", "collection", "EOF", "CRC"], h
    assert raw[4] == 0x02 and isinstance(h["EOF"], bool) and isinstance(h["CRC"], int)
    key = (h["db"], h["collection"])
    assert key in expected and key not in closed, key
    if h["EOF"]:
        want = h["CRC"] & 0xFFFFFFFFFFFFFFFF
        assert crcs.get(key, 0) == want, "CRC mismatch for %s" % (key,)
        assert next_doc() is None
        open_ns.discard(key)
        closed.add(key)
        continue
    if key not in open_ns:
        order.append(key)
    open_ns.add(key)
    max_open = max(max_open, len(open_ns))
    while True:
        body = next_doc()
        if body is None:
            break
        crcs[key] = crc64(body, crcs.get(key, 0))
        expected[key] += 1
assert not open_ns and closed == set(expected), (open_ns, set(expected) - closed)
assert max_open <= header["concurrent_collections"], max_open
auth = [i for i, k in enumerate(order) if k[1] in ("system.users", "system.roles", "system.version") and k[0] == "admin"]
assert auth == list(range(len(auth))), "users, roles and version must come first"
for (db, coll), n in sorted(expected.items()):
    print("%s.%s %d" % (db, coll, n))
"#,
            path = path.to_str().unwrap()
        ),
    )
}
