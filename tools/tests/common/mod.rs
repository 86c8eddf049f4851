//! What the integration tests that drive a cluster from a Python script share (the scripts' own shared part is
//! `tests/harness.py`).

use std::process::Command;

/// Runs `tests/<script>` with the `cas` binary and a fresh work folder; fails with its output unless it exits 0 and
/// prints `passed`. Returns its standard output.
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
