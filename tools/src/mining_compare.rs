//! `cas local --compare-mining`: the same cluster and load run twice in one invocation, first with witness mining
//! off, then with `--mining-threads` per node (at least 1), and the committed TPS of both with their ratio. Mining
//! runs at SCHED_IDLE, so the ratio says whether it really only takes idle CPU from the BFT and execution paths.

use std::path::Path;

use anyhow::{Context, Result};

use crate::cluster::{self, ClusterArgs};

/// Committed TPS, the best witness height (over the nodes) and the nonces all miners tried, of one finished run,
/// from its `report.json`.
fn read_run(dir: &Path) -> Result<(f64, u64, u64)> {
    let path = dir.join("report.json");
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?,
    )?;
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
