//! The local cluster end to end, as processes: `cas local` starts 4 `cas node` processes, submits signed transfers
//! (chains of dependent ones, plus bad signatures, double spends and unknown inputs), and fails unless every valid
//! transaction is final with a receipt, every invalid one is rejected for its reason, and all nodes end with the
//! same UTXO commitment. The drill kills one node with SIGKILL mid-run and restarts it; it must catch up. With a
//! small in-memory block window, the restarted node is further behind than its peers keep blocks: it must install
//! a snapshot the committee vouches for, catch up from there and end with the same commitment.

use std::process::Command;

fn local(extra: &[&str]) -> String {
    local_report(extra).0
}

/// Runs `cas local` with `extra` arguments; returns its output and its report.json.
fn local_report(extra: &[&str]) -> (String, serde_json::Value) {
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
    (
        stdout,
        serde_json::from_str(&report).expect("report.json parses"),
    )
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

#[test]
fn a_node_behind_the_peers_window_installs_a_snapshot_and_catches_up() {
    // Peers keep 10 blocks in memory; the victim restarts once they are 30 blocks past where it stopped.
    let (stdout, report) = local_report(&[
        "--duration-s",
        "6",
        "--rate",
        "100",
        "--kill-one",
        "--restart-behind-blocks",
        "30",
        "--blocks-kept",
        "10",
        "--snapshot-every",
        "5",
        "--snapshot-sync-gap",
        "10",
    ]);
    assert!(stdout.contains("| yes |"), "{stdout}");
    let statuses = report["statuses"].as_array().expect("statuses");
    let victim = &statuses[3];
    let installs = victim["snapshot_installs"].as_u64().unwrap();
    let installed_at = victim["snapshot_installed_height"].as_u64().unwrap();
    assert!(
        installs >= 1,
        "the restarted node installed no snapshot: {victim}"
    );
    assert!(
        installed_at >= 30,
        "installed at height {installed_at}: {victim}"
    );
    let served: u64 = statuses[..3]
        .iter()
        .map(|s| s["snapshot_chunks_served"].as_u64().unwrap())
        .sum();
    assert!(served >= 1, "no peer served a chunk: {statuses:?}");
    // It went on executing blocks after the snapshot, to the others' height and commitment.
    let height = victim["height"].as_u64().unwrap();
    assert!(height > installed_at, "{victim}");
    for other in &statuses[..3] {
        assert_eq!(other["utxo_commitment"], victim["utxo_commitment"]);
        assert!(other["height"].as_u64().unwrap().abs_diff(height) <= 1);
        assert_eq!(other["snapshot_installs"].as_u64(), Some(0));
    }
}
