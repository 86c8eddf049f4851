//! The operator's surface (issue 18): `tools/tests/operator_surface.py` starts a 4-node `cas local --serve` cluster,
//! checks `/health` and `/status` on every node, checks every node's `/metrics` with `promtool check metrics`, has a
//! real Prometheus scrape them once a second while `cas load --api` drives load and asks it that committed
//! transactions and the height rose on every node, then SIGKILLs a node and follows its `/health` through the restart
//! (down, 503 catching up, 200). Where Debian's `prometheus` package is not installed the Prometheus part says SKIP
//! (.ci/run installs it).

use std::process::Command;

#[test]
fn health_status_and_metrics_hold_on_a_loaded_cluster_and_through_a_restart() {
    let work = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/operator_surface.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_cas"))
        .arg(work.path())
        .output()
        .expect("python3 runs (the machines ship CPython 3.11)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the operator surface script failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("operator surface: all checks passed"),
        "{stdout}"
    );
    eprintln!("{stdout}");
}
