//! The exchange gateway end to end (issue 17): `tools/tests/exchange_api.py` drives a 4-node `cas local --serve`
//! cluster through the HTTP API with nothing but Python's standard library, as an integrator in another language would:
//! balance and outputs, submit and wait for final, duplicate, rejections with their codes, status on another node and
//! after the submitting node is SIGKILLed and restarted, and the deposit stream resumed after a disconnect with no gap
//! and no repeat, balances at past heights, and settlement receipts checked offline with `cas receipt verify` (one byte
//! changed fails). The script says what failed.

use std::process::Command;

#[test]
fn an_exchange_integrates_over_http_with_a_standard_library_client() {
    let work = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/exchange_api.py");
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
        "the exchange script failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("exchange API: all checks passed"),
        "{stdout}"
    );
}
