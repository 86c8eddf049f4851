//! The operator's metrics scraped by a real Prometheus server (issue 18): `tools/tests/prometheus_scrape.py` starts
//! a 4-node `cas local --serve` cluster, checks every node's `/metrics` with `promtool check metrics`, has
//! Prometheus scrape them once a second while `cas load --api` drives load, and asks Prometheus that committed
//! transactions and the height rose on every node. Where Debian's `prometheus` package is not installed the script
//! says SKIP (.ci/run installs it).

use std::process::Command;

#[test]
fn prometheus_scrapes_every_node_and_sees_the_ledger_grow() {
    let work = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/prometheus_scrape.py");
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
        "the Prometheus script failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("prometheus scrape: all checks passed") || stdout.starts_with("SKIP"),
        "{stdout}"
    );
    eprintln!("{stdout}");
}
