//! The local cluster end to end, as processes: `cas local` starts 4 `cas node` processes, submits signed transfers
//! (chains of dependent ones, plus bad signatures, double spends and unknown inputs), and fails unless every valid
//! transaction is final with a receipt, every invalid one is rejected for its reason, and all nodes end with the
//! same UTXO commitment. The drill kills one node with SIGKILL mid-run and restarts it; it must catch up.

use std::process::Command;

fn local(extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_cas"))
        .args([
            "local",
            "--nodes",
            "4",
            "--accounts",
            "150",
            "--invalid-every",
            "20",
        ])
        .args(extra)
        .arg("--dir")
        .arg(dir.path())
        .output()
        .expect("cas runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "cas local failed:\n{stdout}\n{stderr}"
    );
    let report =
        std::fs::read_to_string(dir.path().join("report.json")).expect("report.json written");
    assert!(report.contains("\"commitments_equal\": true"), "{report}");
    assert!(report.contains("\"wrong_answer_count\": 0"), "{report}");
    stdout
}

#[test]
fn four_nodes_settle_every_transaction() {
    let stdout = local(&["--duration-s", "4", "--rate", "150"]);
    // 4 s x 150 tx/s over 150 accounts: 4 rounds each, 600 valid, 30 invalid (one after every 20 valid).
    assert!(
        stdout.contains("630 submitted, 600 final, 0 unanswered"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| 4 | 150 |") && stdout.contains("| yes |"),
        "{stdout}"
    );
}

#[test]
fn a_killed_node_restarts_and_catches_up() {
    let stdout = local(&["--duration-s", "9", "--rate", "100", "--kill-one"]);
    assert!(stdout.contains("| yes |"), "{stdout}");
}
