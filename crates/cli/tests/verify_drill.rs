//! `tidemark verify`: restore drills through the real binary. A server seeded by pymongo (an
//! independent client) with several collections, indexes (TTL, partial, unique, compound), a capped
//! collection and a view is backed up; the drill must pass on the snapshot, and must fail naming the
//! namespace when a pack is damaged, when a pack is missing, and when a document disappears from the
//! restored server behind the drill's back (the test-only `TIDEMARK_DRILL_TEST_DELETE_ONE` hook).

mod dump_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use dump_support::{Server, pymongo, stderr};

struct Repo {
    _dir: tempfile::TempDir,
    url: String,
    pw: String,
}

fn tidemark_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
    cmd.args(args).stdin(Stdio::null()).env_remove("TIDEMARK_PASSWORD");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Seeds the source server and backs it up into a new repository.
fn backed_up_shop() -> Repo {
    let server = Server::start();
    pymongo(
        &server.uri,
        r#"
import datetime, random
from bson import Decimal128, ObjectId
rng = random.Random(7)
db = client["shop"]
far = datetime.datetime(2200, 1, 1)
# About 3 MB of incompressible text: most of the repository's bytes belong to shop.orders.
db.orders.insert_many([{"_id": i, "customer": i % 300, "status": ["new", "paid", "shipped"][i % 3],
                        "total": Decimal128("%d.99" % i), "blob": "%x" % rng.getrandbits(4096)}
                       for i in range(3000)])
db.orders.create_index([("customer", 1), ("total", -1)], name="customer_total")
db.orders.create_index("status", name="open_status", partialFilterExpression={"status": {"$ne": "shipped"}})
db.customers.insert_many([{"_id": ObjectId(), "email": "c%d@example.com" % i, "expires": far} for i in range(300)])
db.customers.create_index("email", unique=True, name="email_unique")
db.customers.create_index("expires", expireAfterSeconds=3600, name="expires_ttl")
db.create_collection("events", capped=True, size=65536, max=100)
db.events.insert_many([{"n": i} for i in range(150)])
db.create_collection("paid_orders", viewOn="orders", pipeline=[{"$match": {"status": "paid"}}])
client["crm"]["notes"].insert_many([{"_id": "n%d" % i, "text": "note %d" % i} for i in range(50)])
print("ok")
"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "drill password\n").unwrap();
    let url = dir.path().join("repo").display().to_string();
    let pw = pw.display().to_string();
    for args in [
        vec!["repo", "init", "--repo", &url, "--password-file", &pw],
        vec!["backup", "--repo", &url, "--password-file", &pw, "--uri", &server.uri],
    ] {
        let out = tidemark_env(&args, &[]);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    Repo { _dir: dir, url, pw }
}

fn verify(repo: &Repo, extra: &[&str], env: &[(&str, &str)]) -> (Output, serde_json::Value) {
    let mut args = vec![
        "verify",
        "--repo",
        &repo.url,
        "--password-file",
        &repo.pw,
        "--json",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    let out = tidemark_env(&args, env);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}\n{}", stderr(&out)));
    (out, json)
}

/// `namespace -> status` from the JSON report.
fn statuses(report: &serde_json::Value) -> Vec<(String, String)> {
    report["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["namespace"].as_str().unwrap().to_owned(),
                n["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn namespace<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["namespace"] == name)
        .unwrap_or_else(|| panic!("{name} not in {report}"))
}

fn packs(repo: &Repo) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(&repo.url).join("data"), &mut out);
    assert!(!out.is_empty());
    out
}

#[test]
fn a_good_snapshot_passes_and_a_document_deleted_behind_the_back_is_named() {
    let repo = backed_up_shop();
    let (out, report) = verify(&repo, &[], &[]);
    assert!(out.status.success(), "{report:#}\n{}", stderr(&out));
    assert_eq!(report["ok"], true);
    let all = statuses(&report);
    for ns in [
        "shop.orders",
        "shop.customers",
        "shop.events",
        "shop.paid_orders",
        "crm.notes",
    ] {
        assert!(all.contains(&(ns.to_owned(), "ok".to_owned())), "{ns}: {all:?}");
    }
    assert!(all.iter().all(|(_, s)| s == "ok" || s == "skipped"), "{all:?}");
    assert_eq!(namespace(&report, "shop.orders")["found_documents"], 3000);
    // The capped collection keeps its last 100 documents, as the source server did.
    assert_eq!(namespace(&report, "shop.events")["found_documents"], 100);

    // Text report: one line per namespace and the verdict.
    let text = tidemark_env(
        &["verify", "--repo", &repo.url, "--password-file", &repo.pw, "--quiet"],
        &[],
    );
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(text.status.success(), "{stdout}");
    assert!(
        stdout.contains("drill passed") && stdout.contains("shop.customers"),
        "{stdout}"
    );

    let (out, report) = verify(&repo, &[], &[("TIDEMARK_DRILL_TEST_DELETE_ONE", "crm.notes")]);
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    assert_eq!(report["ok"], false);
    let bad: Vec<_> = statuses(&report)
        .into_iter()
        .filter(|(_, s)| s != "ok" && s != "skipped")
        .collect();
    assert_eq!(bad, [("crm.notes".to_owned(), "mismatch".to_owned())]);
    let problems = namespace(&report, "crm.notes")["problems"].to_string();
    assert!(
        problems.contains("50 document(s) expected, 49 found") && problems.contains("is missing"),
        "{problems}"
    );
    assert!(stderr(&out).contains("1 of"), "{}", stderr(&out));
}

#[test]
fn a_flipped_bit_in_a_pack_names_the_namespace() {
    let repo = backed_up_shop();
    for pack in packs(&repo) {
        let mut bytes = std::fs::read(&pack).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        std::fs::write(&pack, bytes).unwrap();
    }
    let (out, report) = verify(&repo, &[], &[]);
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    let orders = namespace(&report, "shop.orders");
    assert_eq!(orders["status"], "damaged", "{report:#}");
    assert!(orders["problems"].to_string().contains("shop.orders"), "{orders}");
    // Nothing else is blamed on the repository.
    let damaged: Vec<_> = statuses(&report).into_iter().filter(|(_, s)| s == "damaged").collect();
    assert_eq!(damaged.len(), 1, "{damaged:?}");
}

#[test]
fn a_missing_pack_names_the_namespace() {
    let repo = backed_up_shop();
    for pack in packs(&repo) {
        std::fs::remove_file(pack).unwrap();
    }
    let (out, report) = verify(&repo, &[], &[]);
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    let damaged: Vec<_> = statuses(&report).into_iter().filter(|(_, s)| s == "damaged").collect();
    assert_eq!(damaged.len(), 1, "{report:#}");
    let ns = &damaged[0].0;
    assert!(
        namespace(&report, ns)["problems"].to_string().contains(ns.as_str()),
        "{report:#}"
    );
    // The namespaces after it were never restored: the drill says so instead of passing them.
    assert!(statuses(&report).iter().any(|(_, s)| s == "not restored"), "{report:#}");
}
