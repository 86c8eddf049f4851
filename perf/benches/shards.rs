//! The shards pipeline (`cargo bench -p cas-perf --bench shards`), each figure beside its limit from the same run:
//! (a) UTXO check + commit without signatures (quorum-attested blocks), per CPU-second of the whole process;
//! (b) the full pipeline (untrusted decode, batched signatures on the shards, UTXO rules, commit, fdatasync per
//!     block) on every core, beside the batched-verification limit of the same cores, measured before and after
//!     each of seven rounds (the median round is the figure);
//! (c) the full pipeline on 1 shard against 2.
//! The load: `ACCOUNTS` accounts each making one transfer per block that spends its change from the block before,
//! so every block depends on the previous one.

use std::thread;
use std::time::Instant;

use cas_perf::pipeline::{durable, load, utxo_only, verification_limit, PIPELINE_DEPTH};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ACCOUNTS: u32 = 10_000;
const BLOCKS: u64 = 10;
/// Rounds of (b); the median round is reported.
const ROUNDS: usize = 7;

fn main() {
    let cores = thread::available_parallelism().map_or(1, usize::from);
    println!(
        "cas-shards pipeline: {ACCOUNTS} transfers per block, {BLOCKS} dependent blocks, pipeline depth {PIPELINE_DEPTH}, \
         {cores} cores"
    );
    let started = Instant::now();
    let load = load(ACCOUNTS, BLOCKS, cores);
    println!(
        "signed {} transfers in {:.1?}",
        load.txs.len(),
        started.elapsed()
    );

    let one = utxo_only(&load, 1);
    let all = utxo_only(&load, cores);
    let (wall_1, cpu_1, wall_n, cpu_n) = (
        one.tx_per_s_wall,
        one.tx_per_cpu_s,
        all.tx_per_s_wall,
        all.tx_per_cpu_s,
    );
    println!();
    println!("(a) UTXO check + commit, signatures attested (tx ids still computed)");
    println!("| shards | tx/s (wall) | tx per CPU-second |");
    println!("|---|---|---|");
    println!("| 1 | {wall_1:.0} | {cpu_1:.0} |");
    println!("| {cores} | {wall_n:.0} | {cpu_n:.0} |");

    // Each round sits between two limit measurements and is compared with the higher: a neighbour's burst on these
    // shared machines then lowers a round's ratio rather than raising it. Every round is printed; the median is
    // the figure.
    println!();
    println!(
        "(b) full pipeline, durable (fdatasync per block), {cores} shards on {cores} cores, {ROUNDS} rounds"
    );
    println!(
        "| round | TPS | block p50 ms | busy cores | verify limit sig/s (before / after) | TPS/limit |"
    );
    println!("|---|---|---|---|---|---|");
    let mut rounds = Vec::new();
    let mut limit_after = verification_limit(&load, cores);
    for round in 1..=ROUNDS {
        let limit_before = limit_after;
        let n = durable(&load, cores);
        limit_after = verification_limit(&load, cores);
        let ratio = n.tps / limit_before.max(limit_after);
        println!(
            "| {round} | {:.0} | {:.1} | {:.2} of {cores} | {limit_before:.0} / {limit_after:.0} | {ratio:.2} |",
            n.tps, n.block_p50_ms, n.busy_cores
        );
        rounds.push((ratio, n));
    }
    rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (median_ratio, n) = rounds[rounds.len() / 2];
    let (tps_n, p50_n) = (n.tps, n.block_p50_ms);
    println!("median TPS/limit: {median_ratio:.2}");
    let one = durable(&load, 1);
    let (tps_1, p50_1) = (one.tps, one.block_p50_ms);
    println!();
    println!("(c) full pipeline, durable: 1 shard vs {cores}");
    println!("| shards | TPS | block p50 ms | vs 1 shard |");
    println!("|---|---|---|---|");
    println!("| 1 | {tps_1:.0} | {p50_1:.1} | 1.00x |");
    println!(
        "| {cores} | {tps_n:.0} | {p50_n:.1} | {:.2}x |",
        tps_n / tps_1
    );
}
