//! `cargo run --release -p cas-consensus --example sim -- --seeds N [--first S]`: runs N seeds of every fault class
//! and prints one line per class (runs, commits, violations), the commit latency of clean runs with 50 ms one-way
//! links, the signature checks per committed transaction, and a final `sim: <runs> runs, <violations> violations`.

use cas_consensus::sim::{flag, run, FaultClass, LinkModel, Scenario};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seeds: u64 = flag(&args, "--seeds").unwrap_or(100);
    let first: u64 = flag(&args, "--first").unwrap_or(1);
    let (mut runs_total, mut violations_total) = (0u64, 0u64);
    for fault in FaultClass::ALL {
        let (mut commits, mut violations, mut checks, mut txs, mut committed) =
            (0u64, 0u64, 0u64, 0u64, 0u64);
        for seed in first..first + seeds {
            let report = run(&Scenario::new(seed, fault));
            commits += report.commits;
            checks += report.signatures_checked;
            txs += report.txs_packaged;
            committed += report.txs_committed;
            for violation in &report.violations {
                eprintln!("seed={seed} fault={}: {violation}", fault.name());
            }
            violations += report.violations.len() as u64;
        }
        runs_total += seeds;
        violations_total += violations;
        println!(
            "{:<20} runs {:>5}  commits {:>8}  violations {:>3}  txs committed {:>7}  signature checks per tx {:.2}",
            fault.name(),
            seeds,
            commits,
            violations,
            committed,
            checks as f64 / txs.max(1) as f64
        );
    }
    let mut latencies = Vec::new();
    for seed in first..first + seeds.min(20) {
        let mut scenario = Scenario::new(seed, FaultClass::Clean);
        scenario.link = LinkModel::fixed(50);
        latencies.extend(run(&scenario).commit_latencies_ms);
    }
    latencies.sort_unstable();
    if !latencies.is_empty() {
        println!(
            "commit latency, 4 members, 50 ms one-way links: p50 {} ms, p99 {} ms ({:.1} message delays at p50)",
            latencies[latencies.len() / 2],
            latencies[latencies.len() * 99 / 100],
            latencies[latencies.len() / 2] as f64 / 50.0
        );
    }
    println!("sim: {runs_total} runs, {violations_total} violations");
}
