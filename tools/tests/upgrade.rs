//! Issue 18's rolling upgrade as processes: `cas local --upgrade-drill` stops each of 4 nodes in turn (SIGTERM),
//! schedules the newest protocol version this binary runs in its node.toml at one height after the last restart and
//! starts it again, while HTTP load runs. Every valid transaction must be final (one round per account, so none waits
//! on another's output), every invalid one refused for its reason, the commitments equal, every node on that version
//! at the end with no block
//! refused for its version, and no two rounds in a row may time out (the round timeout doubles after each, so a
//! longest gap under two timeouts means at most one timed-out round at a time: the restarted node's turn).
//! Its own test binary, so it does not share the cores with the other cluster tests.

mod common;

#[test]
fn a_rolling_upgrade_under_load_loses_nothing_and_stalls_at_most_one_round() {
    let round_timeout_ms = 1_000;
    let (stdout, stderr, report, _dir) = common::run_local(
        400,
        &[
            "--rate",
            "25",
            "--duration-s",
            "16",
            "--via-http",
            "--http-workers",
            "8",
            "--round-timeout-ms",
            &round_timeout_ms.to_string(),
            "--upgrade-drill",
        ],
    );
    let load = &report["load"];
    assert_eq!(load["wrong_answer_count"].as_u64(), Some(0), "{report}");
    assert_eq!(load["unanswered"].as_u64(), Some(0), "{report}");
    // 16 s x 25 tx/s: 400 valid (one per account), 20 invalid.
    assert_eq!(load["final_accepted"].as_u64(), Some(400), "{report}");
    assert_eq!(
        report["commitments_equal"].as_bool(),
        Some(true),
        "{report}"
    );
    let upgrade = &report["upgrade"];
    let newest = u64::from(cas_consensus::protocol::PROTOCOL_VERSION_MAX);
    assert_eq!(upgrade["version"].as_u64(), Some(newest), "{report}");
    assert_eq!(
        upgrade["restarts_s"].as_array().map(Vec::len),
        Some(4),
        "{report}"
    );
    assert_eq!(upgrade["protocol_refused"].as_u64(), Some(0), "{report}");
    for status in report["statuses"].as_array().unwrap() {
        assert_eq!(
            status["consensus"]["protocol"].as_u64(),
            Some(newest),
            "{status}"
        );
    }
    let gap_ms = report["longest_block_gap_ms"][0]
        .as_u64()
        .expect("a gap was measured");
    assert!(
        gap_ms < 2 * round_timeout_ms,
        "longest gap between committed blocks {gap_ms} ms: two rounds in a row timed out\n{stdout}\n{stderr}"
    );
}
