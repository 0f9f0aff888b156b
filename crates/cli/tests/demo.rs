//! `tidemark demo` runs end to end on a fresh machine and proves its restored copy exact.

use std::process::Command;

#[test]
fn demo_restores_an_exact_copy() {
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["demo", "--orders", "3000"])
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
    // 3000 orders + 600 customers + 1000 products + 600 events.
    assert!(
        stdout.contains("5200 document(s) restored successfully. 0 document(s) failed to restore."),
        "{stdout}"
    );
}
