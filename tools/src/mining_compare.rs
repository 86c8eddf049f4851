//! `cas local --compare-mining`: the same cluster and load run twice in one invocation, first with witness mining
//! off, then with `--mining-threads` per node (at least 1), and the committed TPS of both with their ratio. Mining
//! runs at SCHED_IDLE, so the ratio says whether it really only takes idle CPU from the BFT and execution paths.
//! `cas local --compare-http` does the same with the load through QUIC, then through the HTTP API.

use std::path::Path;

use anyhow::{Context, Result};

use crate::cluster::{self, ClusterArgs};

/// A finished run's `report.json`.
fn read_report(dir: &Path) -> Result<serde_json::Value> {
    let path = dir.join("report.json");
    Ok(serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?,
    )?)
}

/// Committed TPS, the best witness height (over the nodes) and the nonces all miners tried, of one finished run,
/// from its `report.json`.
fn read_run(dir: &Path) -> Result<(f64, u64, u64)> {
    let report = read_report(dir)?;
    let tps = report["load"]["committed_tps"]
        .as_f64()
        .context("the report has no committed TPS")?;
    let statuses = report["statuses"].as_array().cloned().unwrap_or_default();
    let witness_height = statuses
        .iter()
        .filter_map(|s| s["witness_height"].as_u64())
        .max()
        .unwrap_or(0);
    let hashes = statuses
        .iter()
        .filter_map(|s| s["witness_hashes"].as_u64())
        .sum();
    Ok((tps, witness_height, hashes))
}

pub fn compare(args: &ClusterArgs) -> Result<()> {
    let base = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("cas-compare-{}", std::process::id()))
    });
    let threads = args.mining_threads.max(1);
    let mut results = Vec::new();
    for (label, mining_threads) in [("off", 0), ("on", threads)] {
        let dir = base.join(format!("mining-{label}"));
        println!("== mining {label} ({mining_threads} thread(s) per node) ==");
        cluster::run(&ClusterArgs {
            compare_mining: false,
            mining_threads,
            dir: Some(dir.clone()),
            ..args.clone()
        })?;
        results.push(read_run(&dir)?);
    }
    let ((off_tps, _, _), (on_tps, witness_height, hashes)) = (results[0], results[1]);
    let ratio = on_tps / off_tps;
    println!();
    println!(
        "| mining threads per node | committed TPS off | committed TPS on | on/off | witness height reached | \
         nonces tried (all miners) |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {threads} | {off_tps:.0} | {on_tps:.0} | {ratio:.3} | {witness_height} | {hashes} |"
    );
    Ok(())
}

/// `cas local --compare-http`: the same cluster and load through the QUIC ingest endpoint, then through the HTTP
/// API, and node CPU per committed transaction of both with their ratio.
pub fn compare_http(args: &ClusterArgs) -> Result<()> {
    let base = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("cas-compare-http-{}", std::process::id()))
    });
    let mut rows = Vec::new();
    for (label, via_http) in [("quic", false), ("http", true)] {
        let dir = base.join(label);
        println!("== load through {label} ==");
        cluster::run(&ClusterArgs {
            compare_http: false,
            via_http,
            dir: Some(dir.clone()),
            ..args.clone()
        })?;
        let report = read_report(&dir)?;
        let load = &report["load"];
        rows.push((
            label,
            load["committed_tps"].as_f64().unwrap_or(0.0),
            load["latency_p50_ms"].as_f64().unwrap_or(0.0),
            load["latency_p99_ms"].as_f64().unwrap_or(0.0),
            report["node_cpu_us_per_tx"].as_f64().unwrap_or(f64::NAN),
            load["load_cpu_us_per_tx"].as_f64().unwrap_or(f64::NAN),
        ));
    }
    println!();
    println!(
        "| path | committed TPS | p50 ms | p99 ms | node CPU µs/tx | load generator CPU µs/tx |"
    );
    println!("|---|---|---|---|---|---|");
    for (label, tps, p50, p99, node, load) in &rows {
        println!("| {label} | {tps:.0} | {p50:.0} | {p99:.0} | {node:.0} | {load:.1} |");
    }
    println!(
        "node CPU per tx, http / quic: {:.2} (the issue's bound: 1.5)",
        rows[1].4 / rows[0].4
    );
    Ok(())
}
