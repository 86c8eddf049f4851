//! The `cas` binary end to end: key files, genesis from a spec, an offline transfer read back through the
//! untrusted decoder, bad input answered with one line and a non-zero exit, and `cas bench`'s report folder.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn cas(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cas"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("cas runs")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "cas failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// A failure is one `error:` line, a non-zero exit, and no panic.
fn assert_clean_failure(output: &Output, needle: &str) {
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains(needle),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
}

#[test]
fn keygen_genesis_tx_and_show() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let alice = stdout(&cas(&["keygen", "--out", "alice.key"], path))
        .trim()
        .to_string();
    let validator = stdout(&cas(&["keygen", "--out", "validator.key"], path))
        .trim()
        .to_string();
    assert_eq!(alice.len(), 64);
    let mode = std::fs::metadata(path.join("alice.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_clean_failure(
        &cas(&["keygen", "--out", "alice.key"], path),
        "cannot create key file",
    );

    let spec = format!(
        "chain_id = 9\n[params]\nmin_fee = 2\nblock_interval_ms = 100\n\
         [[committee]]\nkey = \"{validator}\"\nstake = 10\n\
         [[allocations]]\nowner = \"{alice}\"\namount = 500\noutputs = 3\n"
    );
    std::fs::write(path.join("spec.toml"), spec).unwrap();
    let printed = stdout(&cas(
        &["genesis", "--spec", "spec.toml", "--out", "genesis.bin"],
        path,
    ));
    assert!(printed.contains("committee 1  outputs 3"), "{printed}");
    let shown = stdout(&cas(&["show", "genesis.bin"], path));
    assert!(
        shown.starts_with("block ") && shown.contains("at height 0"),
        "{shown}"
    );

    let fake_input = format!("{}:0", "ab".repeat(32));
    let output = format!("{validator}:400");
    let tx_id = stdout(&cas(
        &[
            "tx",
            "--key",
            "alice.key",
            "--chain-id",
            "9",
            "--input",
            &fake_input,
            "--output",
            &output,
            "--fee",
            "2",
            "--memo",
            "deposit-42",
            "--out",
            "tx.bin",
        ],
        path,
    ));
    let shown = stdout(&cas(&["show", "tx.bin"], path));
    assert!(
        shown.starts_with(&format!("transaction {}", tx_id.trim())),
        "{shown}"
    );
}

#[test]
fn bad_input_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    std::fs::write(
        path.join("bad.toml"),
        "chain_id = 1\ncommittee = []\n[params]\nmin_fee = 1\nblock_interval_ms = 1\n",
    )
    .unwrap();
    assert_clean_failure(
        &cas(&["genesis", "--spec", "bad.toml"], path),
        "committee is empty",
    );
    std::fs::write(path.join("garbage.bin"), [0xffu8; 100]).unwrap();
    assert_clean_failure(
        &cas(&["show", "garbage.bin"], path),
        "neither a transaction nor a block",
    );
    assert_clean_failure(&cas(&["show", "missing.bin"], path), "cannot read");
    std::fs::write(path.join("k.key"), "secret = \"00\"\npublic = \"00\"\n").unwrap();
    let args = [
        "tx",
        "--key",
        "k.key",
        "--chain-id",
        "1",
        "--input",
        "x:0",
        "--output",
        "y:1",
        "--fee",
        "1",
        "--out",
        "t",
    ];
    // Readable by others: refused before it is read.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path.join("k.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_clean_failure(&cas(&args, path), "chmod 600");
    std::fs::set_permissions(path.join("k.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_clean_failure(&cas(&args, path), "secret is not 32 hex bytes");
}

#[test]
fn pipeline_job_runs_small() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "pipeline",
        "--accounts",
        "50",
        "--rounds",
        "4",
        "--block-txs",
        "64",
        "--invalid-every",
        "10",
    ];
    let out = stdout(&cas(&args, dir.path()));
    assert!(
        out.contains("every sabotaged transaction was rejected for its reason; supply conserved"),
        "{out}"
    );
    assert!(out.contains("| 220 | 4 | 200 | 20 |"), "{out}");
}

/// `cas bench`, cut down to one small cluster and two projected sizes: every report file is written and the table
/// holds the whitepaper's, the measured and the simulated rows, each labelled.
#[test]
fn bench_writes_a_labelled_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_cas"))
        .args([
            "bench",
            "--quick",
            "--nodes",
            "4",
            "--rate",
            "300",
            "--duration-s",
            "3",
        ])
        .args(["--project", "3,999", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cas bench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for file in [
        "report.md",
        "report.json",
        "tps.svg",
        "tps.png",
        "latency.svg",
        "latency.png",
    ] {
        assert!(
            out.join(file).metadata().unwrap().len() > 0,
            "{file} is empty"
        );
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for row in [
        "| whitepaper | 999 | 13,092 |",
        "| measured | 4 |",
        "| simulated | 3 |",
        "| simulated | 999 |",
    ] {
        assert!(md.contains(row), "report.md lacks {row:?}:\n{md}");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["measured"][0]["commitments_equal"], true);
    assert!(json["simulated"][1]["tps"].as_f64().unwrap() > 0.0);
}
