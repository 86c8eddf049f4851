//! The transfer path with and without a mixed load (`cargo bench -p cas-perf --bench mixed`): the durable pipeline
//! (untrusted decode, batched signatures on the shards, UTXO rules, commit, fdatasync per block) on every core, on
//! two loads of the same size (`cas_perf::mixed`): plain transfers, and the same with every tenth account making
//! token and contract transactions (approve, transfer-from, contract call) instead. The loads alternate over
//! `ROUNDS` rounds each, so a neighbour's burst lands on both; the figures are the median ratio of the mixed load's
//! TPS to the plain load's in the same round (the limit: plain transfers may not slow by more than 5%), and
//! the same for CPU per transaction, which a shared VM's noise moves less.

use std::thread;
use std::time::Instant;

use cas_perf::mixed::load;
use cas_perf::pipeline::durable;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ACCOUNTS: u32 = 10_000;
const BLOCKS: u64 = 60;
const ROUNDS: usize = 9;

fn main() {
    let cores = thread::available_parallelism().map_or(1, usize::from);
    let started = Instant::now();
    let (plain, plain_transfers) = load(ACCOUNTS, BLOCKS, false);
    let (mixed, mixed_transfers) = load(ACCOUNTS, BLOCKS, true);
    let business = mixed.txs.len() - mixed_transfers;
    println!(
        "mixed load: {ACCOUNTS} accounts x {BLOCKS} dependent blocks on {cores} cores; plain: {} transfers; mixed: {} \
         transfers + {business} token and contract transactions ({:.1}%); built and checked in {:.1?}",
        plain.txs.len(),
        mixed_transfers,
        100.0 * business as f64 / mixed.txs.len() as f64,
        started.elapsed()
    );
    assert_eq!(plain_transfers, plain.txs.len());
    println!();
    println!(
        "| round | plain TPS | mixed TPS (all) | mixed/plain | mixed: transfers per s | transfers/plain | CPU µs/tx \
         plain / mixed | CPU plain/mixed |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut ratios = Vec::new();
    let mut transfer_ratios = Vec::new();
    let mut cpu_ratios = Vec::new();
    for round in 1..=ROUNDS {
        // Alternate which goes first, so a drift over the run favours neither.
        let (p, m) = if round % 2 == 1 {
            let p = durable(&plain, cores);
            (p, durable(&mixed, cores))
        } else {
            let m = durable(&mixed, cores);
            (durable(&plain, cores), m)
        };
        let seconds = mixed.txs.len() as f64 / m.tps;
        let transfers_per_s = mixed_transfers as f64 / seconds;
        let ratio = m.tps / p.tps;
        let transfer_ratio = transfers_per_s / p.tps;
        // CPU per transaction (busy cores over TPS): what a neighbour's burst on a shared VM moves least.
        let (cpu_p, cpu_m) = (p.busy_cores / p.tps * 1e6, m.busy_cores / m.tps * 1e6);
        let cpu_ratio = cpu_p / cpu_m;
        println!(
            "| {round} | {:.0} | {:.0} | {ratio:.3} | {transfers_per_s:.0} | {transfer_ratio:.3} | {cpu_p:.1} / \
             {cpu_m:.1} | {cpu_ratio:.3} |",
            p.tps, m.tps
        );
        ratios.push(ratio);
        transfer_ratios.push(transfer_ratio);
        cpu_ratios.push(cpu_ratio);
    }
    for list in [&mut ratios, &mut transfer_ratios, &mut cpu_ratios] {
        list.sort_by(f64::total_cmp);
    }
    let (median, transfers_median) = (ratios[ROUNDS / 2], transfer_ratios[ROUNDS / 2]);
    let cpu_median = cpu_ratios[ROUNDS / 2];
    let verdict = |ratio: f64| {
        if ratio >= 0.95 {
            "holds"
        } else {
            "does not hold"
        }
    };
    println!(
        "median mixed/plain TPS: {median:.3} (limit 0.95: {}); median plain/mixed CPU per transaction: \
         {cpu_median:.3} ({}); transfers alone in the mixed load: {transfers_median:.3} of the plain load's rate \
         (they are 90% of its transactions)",
        verdict(median),
        verdict(cpu_median)
    );
}
