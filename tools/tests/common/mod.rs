//! What the integration tests that drive a cluster share: running `cas local` and reading its report, and running
//! a Python script (the scripts' own shared part is `tests/harness.py`).

use std::process::Command;

/// Runs `tests/<script>` with the `cas` binary and a fresh work folder; fails with its output unless it exits 0 and
/// prints `passed`. Returns its standard output.
#[allow(dead_code)] // As above.
pub fn run_script(script: &str, passed: &str) -> String {
    let work = tempfile::tempdir().unwrap();
    let path = format!("{}/tests/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("python3")
        .arg(&path)
        .arg(env!("CARGO_BIN_EXE_cas"))
        .arg(work.path())
        .output()
        .expect("python3 runs (the machines ship CPython 3.11)");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(passed), "{stdout}");
    stdout
}

/// Runs `cas local --nodes 4 --accounts <accounts> --invalid-every 20` with `extra` arguments in a fresh folder;
/// fails with its output unless it exits 0. Returns its standard output and error, its report.json and the folder.
#[allow(dead_code)] // Each test binary compiles this module; not every one runs `cas local` directly.
pub fn run_local(
    accounts: u32,
    extra: &[&str],
) -> (String, String, serde_json::Value, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_cas"))
        .args(["local", "--nodes", "4", "--invalid-every", "20"])
        .args(["--accounts", &accounts.to_string()])
        .args(extra)
        .arg("--dir")
        .arg(dir.path())
        .output()
        .expect("cas runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(
        output.status.success(),
        "cas local failed:\n{stdout}\n{stderr}"
    );
    let report =
        std::fs::read_to_string(dir.path().join("report.json")).expect("report.json written");
    let report = serde_json::from_str(&report).expect("report.json parses");
    (stdout, stderr, report, dir)
}
