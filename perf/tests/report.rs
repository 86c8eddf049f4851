//! The report folder: every file is written, the plots are real images, and the table labels each row's source.

use cas_perf::pipeline::{Durable, UtxoOnly};
use cas_perf::report::{
    Machine, MeasuredRow, PipelineFigures, Report, SimulatedRow, Validation, WhitepaperRow,
    REPORT_FILES,
};
use cas_perf::suite::{Figure, MicroSummary};

fn report() -> Report {
    Report {
        machine: Machine {
            cores: 2,
            cpu_model: "test cpu".into(),
            quick: true,
            written_unix_s: 0,
            wall_s: 1.0,
        },
        micro: MicroSummary {
            verify_batched_per_core_s: 60_000.0,
            figures: vec![Figure {
                name: "batched ed25519 verification, 1 core",
                unit: "signatures/s",
                value: 60_000.0,
                peer_name: "single verification",
                peer_value: 25_000.0,
            }],
        },
        pipeline: PipelineFigures {
            accounts: 1_000,
            blocks: 4,
            utxo_only: vec![UtxoOnly {
                shards: 1,
                tx_per_s_wall: 200_000.0,
                tx_per_cpu_s: 190_000.0,
            }],
            durable: Durable {
                shards: 2,
                tps: 80_000.0,
                block_p50_ms: 30.0,
                busy_cores: 1.9,
            },
            verify_limit_sig_s: 110_000.0,
        },
        measured: vec![MeasuredRow {
            nodes: 4,
            offered_tps: 5_000.0,
            tps: 4_900.0,
            p50_ms: 120.0,
            p99_ms: 400.0,
            cpu_limit_tps: 60_000.0,
            rejected: 3,
            commitments_equal: true,
        }],
        simulated: vec![
            SimulatedRow {
                nodes: 4,
                model: "signatures + execution".into(),
                committee: 4,
                tps: 5_000.0,
                p50_ms: 110.0,
                p99_ms: 300.0,
                bottleneck: "offered load".into(),
            },
            SimulatedRow {
                nodes: 999,
                model: "signatures + execution".into(),
                committee: 22,
                tps: 20_000.0,
                p50_ms: 900.0,
                p99_ms: 1_500.0,
                bottleneck: "bandwidth".into(),
            },
        ],
        validation: vec![Validation {
            nodes: 4,
            model: "signatures + execution".into(),
            measured_tps: 4_900.0,
            simulated_tps: 5_000.0,
            measured_p50_ms: 120.0,
            simulated_p50_ms: 110.0,
        }],
        whitepaper: vec![
            WhitepaperRow {
                nodes: 3,
                tps: 138_363.0,
                latency_s: 0.23,
            },
            WhitepaperRow {
                nodes: 999,
                tps: 13_092.0,
                latency_s: 3.37,
            },
        ],
        model_parameters: vec!["one-way latency 200 us (assumed, LAN)".into()],
    }
}

#[test]
fn writes_every_file_with_labelled_rows() {
    let dir = tempfile::tempdir().unwrap();
    let written = report().write(dir.path()).unwrap();
    assert_eq!(written.len(), REPORT_FILES.len());
    for path in &written {
        let bytes = std::fs::read(path).unwrap();
        assert!(bytes.len() > 100, "{} is nearly empty", path.display());
        match path.extension().and_then(|e| e.to_str()) {
            Some("png") => assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display()),
            Some("svg") => assert!(String::from_utf8_lossy(&bytes).contains("<svg")),
            _ => {}
        }
    }
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    for label in [
        "| whitepaper | 3 | 138,363 |",
        "| measured | 4 | 4,900 |",
        "| simulated | 999 | 20,000 |",
    ] {
        assert!(md.contains(label), "report.md lacks {label:?}:\n{md}");
    }
    assert!(
        md.contains("| 4 | 4,900 | 5,000 | +2% |"),
        "validation row:\n{md}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(json["simulated"][1]["nodes"], 999);
}
