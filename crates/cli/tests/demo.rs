//! `tidemark demo` runs end to end on a fresh machine: the restore to the recorded moment is exact,
//! the drill passes, and the repository it leaves behind passes a full `check --read-data`.

use std::process::Command;

#[test]
fn demo_restores_the_recorded_moment_exactly() {
    let keep = tempfile::tempdir().expect("temporary directory");
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["demo", "--orders", "3000", "--after-secs", "1", "--keep"])
        .arg(keep.path())
        .output()
        .expect("run tidemark demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["customers", "orders", "products", "events", "big_orders"] {
        let line = stdout
            .lines()
            .find(|l| l.contains(&format!("shop.{name} ")) && l.contains("sha256"))
            .unwrap_or_default();
        assert!(line.ends_with("identical"), "{name}: {line:?}\n{stdout}");
    }
    assert!(stdout.contains("oplog replayed up to"), "{stdout}");
    assert!(stdout.contains("drill passed"), "{stdout}");
    assert!(stdout.contains(", no gap"), "{stdout}");

    let repo = keep.path().join("repository");
    let check = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["check", "--read-data", "--repo"])
        .arg(&repo)
        .env("TIDEMARK_PASSWORD", "tidemark-demo")
        .output()
        .expect("run tidemark check");
    assert!(
        check.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}
