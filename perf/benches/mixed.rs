//! The transfer path beside business transactions and beside the VN layer (`cargo bench -p cas-perf --bench
//! mixed`): the durable pipeline (untrusted decode, batched signatures on the shards, UTXO rules, commit, fdatasync
//! per block) on every core, on three loads of the same size (`cas_perf::mixed`): plain transfers; the same with
//! every tenth account making token and contract transactions (approve, transfer-from, contract call) instead; and
//! the plain transfers on a business network without a Policy (the VN layer on). The loads take turns over
//! `ROUNDS` rounds, in a rotating order, so a neighbour's burst lands on each; the figures are the median ratios of
//! each load's TPS to the plain load's in the same round (the issues' limits: plain transfers may not slow by more
//! than 5%, with business transactions beside them or with the VN layer on), and the same for CPU per transaction,
//! which a shared VM's noise moves less.

use std::thread;
use std::time::Instant;

use cas_perf::mixed::{load, Mix};
use cas_perf::pipeline::{durable, Durable, Load};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ACCOUNTS: u32 = 10_000;
const BLOCKS: u64 = 60;
const ROUNDS: usize = 9;

fn main() {
    let cores = thread::available_parallelism().map_or(1, usize::from);
    let started = Instant::now();
    let (plain, plain_transfers) = load(ACCOUNTS, BLOCKS, Mix::Plain);
    let (mixed, mixed_transfers) = load(ACCOUNTS, BLOCKS, Mix::Business);
    let (vn, vn_transfers) = load(ACCOUNTS, BLOCKS, Mix::Vn);
    let business = mixed.txs.len() - mixed_transfers;
    println!(
        "loads: {ACCOUNTS} accounts x {BLOCKS} dependent blocks on {cores} cores; plain: {} transfers; mixed: {} \
         transfers + {business} token and contract transactions ({:.1}%); vn: {vn_transfers} transfers on a VN \
         without a Policy + its registration; built and checked in {:.1?}",
        plain.txs.len(),
        mixed_transfers,
        100.0 * business as f64 / mixed.txs.len() as f64,
        started.elapsed()
    );
    assert_eq!(plain_transfers, plain.txs.len());
    println!();
    println!(
        "| round | plain TPS | mixed TPS | mixed/plain | mixed: transfers/plain | vn TPS | vn/plain | CPU µs/tx plain \
         / mixed / vn | CPU plain/mixed | CPU plain/vn |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let loads: [&Load; 3] = [&plain, &mixed, &vn];
    let mut columns: [Vec<f64>; 5] = Default::default();
    for round in 1..=ROUNDS {
        // Rotate which goes first, so a drift over the run favours none.
        let mut runs: [Option<Durable>; 3] = [None, None, None];
        for turn in 0..3 {
            let which = (round + turn) % 3;
            runs[which] = Some(durable(loads[which], cores));
        }
        let [p, m, v] = runs.map(|run| run.expect("every load ran"));
        let transfers_per_s = mixed_transfers as f64 / (mixed.txs.len() as f64 / m.tps);
        let cpu = |run: &Durable| run.busy_cores / run.tps * 1e6;
        let row = [
            m.tps / p.tps,
            transfers_per_s / p.tps,
            v.tps / p.tps,
            cpu(&p) / cpu(&m),
            cpu(&p) / cpu(&v),
        ];
        println!(
            "| {round} | {:.0} | {:.0} | {:.3} | {:.3} | {:.0} | {:.3} | {:.1} / {:.1} / {:.1} | {:.3} | {:.3} |",
            p.tps,
            m.tps,
            row[0],
            row[1],
            v.tps,
            row[2],
            cpu(&p),
            cpu(&m),
            cpu(&v),
            row[3],
            row[4]
        );
        for (column, value) in columns.iter_mut().zip(row) {
            column.push(value);
        }
    }
    let median = |column: &mut Vec<f64>| {
        column.sort_by(f64::total_cmp);
        column[ROUNDS / 2]
    };
    let [mixed_tps, transfers, vn_tps, mixed_cpu, vn_cpu] = columns.each_mut().map(median);
    let verdict = |ratio: f64| {
        if ratio >= 0.95 {
            "holds"
        } else {
            "does not hold"
        }
    };
    println!(
        "median mixed/plain TPS: {mixed_tps:.3} (limit 0.95: {}); median plain/mixed CPU per transaction: \
         {mixed_cpu:.3} ({}); transfers alone in the mixed load: {transfers:.3} of the plain load's rate (they are \
         90% of its transactions)",
        verdict(mixed_tps),
        verdict(mixed_cpu)
    );
    println!(
        "median vn/plain TPS: {vn_tps:.3} (limit 0.95: {}); median plain/vn CPU per transaction: {vn_cpu:.3} ({})",
        verdict(vn_tps),
        verdict(vn_cpu)
    );
}
