//! `cas pipeline`: one process runs the ledger pipeline alone (no consensus, no network) on the load generator's
//! plan (untrusted decode -> batched signature checks spread over threads -> UTXO rules -> commit) and prints TPS
//! and block latency beside the batched-verification limit of the same threads, measured in the same run.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use cas_engine::codec::decode_tx;
use cas_engine::fixtures::funded_genesis;
use cas_engine::genesis::genesis_outputs;
use cas_engine::rules::{apply_batch, verify_signatures, TxError};
use cas_engine::{ArchivedTransaction, MemoryLedger, OutPoint, TxId, TxOutput};
use rkyv::util::AlignedVec;

use crate::load::{self, LoadPlan, Sabotage};
use crate::LocalArgs;

const CHAIN_ID: u32 = 1;
const FEE: u64 = 1;
const GENESIS_AMOUNT: u64 = 1_000_000_000;

struct Load {
    /// Encoded transactions in submission order.
    txs: Vec<AlignedVec>,
    /// The expected rejection of each invalid transaction, by index.
    sabotaged: Vec<(usize, Sabotage)>,
}

pub fn run(args: &LocalArgs) -> Result<()> {
    ensure!(
        args.accounts > 0 && args.rounds > 0 && args.block_txs > 0,
        "accounts, rounds and block-txs must be > 0"
    );
    let threads = args
        .threads
        .unwrap_or_else(|| thread::available_parallelism().map_or(1, usize::from))
        .max(1);
    println!(
        "cas pipeline: one process, ledger pipeline only (decode -> batched signatures on {threads} threads -> UTXO \
         rules -> commit); no consensus, no network: see cas local"
    );
    let genesis = funded_genesis(CHAIN_ID, 4, args.accounts, 1, GENESIS_AMOUNT);
    let mut ledger = MemoryLedger::from_genesis(&genesis)?;
    let supply_before: u128 = ledger.utxos().values().map(|c| u128::from(c.amount)).sum();

    let started = Instant::now();
    let load = generate(args, &genesis_outputs(&genesis.txs))?;
    eprintln!(
        "signed {} transactions in {:.2?}",
        load.txs.len(),
        started.elapsed()
    );

    let limit_per_s = verification_limit(&load, threads);
    let mut verdicts: Vec<Result<(), TxError>> = Vec::with_capacity(load.txs.len());
    let mut block_latencies = Vec::new();
    let run_started = Instant::now();
    let mut fees = 0u64;
    let mut issued = 0u64;
    for (block_index, block) in load.txs.chunks(args.block_txs).enumerate() {
        let block_started = Instant::now();
        let archived: Vec<&ArchivedTransaction> = block
            .iter()
            .map(|bytes| decode_tx(bytes))
            .collect::<Result<_, _>>()?;
        let ids: Vec<TxId> = archived.iter().map(|tx| tx.tx_id()).collect();
        let signature_verdicts = parallel_signatures(&archived, &ids, threads);
        let height = block_index as u64 + 1;
        let outcome = apply_batch(
            &archived,
            &ids,
            &signature_verdicts,
            ledger.utxos(),
            &ledger.context_for(height),
        );
        ledger.commit(&outcome, height);
        fees += outcome.fees;
        issued += outcome.issued;
        verdicts.extend(outcome.verdicts);
        block_latencies.push(block_started.elapsed());
        eprint!(
            "\rblock {:>4}  {:>8} txs done",
            block_index + 1,
            verdicts.len()
        );
    }
    let elapsed = run_started.elapsed();
    eprintln!();

    let rejected = verdicts.iter().filter(|v| v.is_err()).count();
    check_sabotage(&load.sabotaged, &verdicts)?;
    // Supply is conserved except by issuance (in); fees stay in the set, in each block's fee pot.
    let supply_after: u128 = ledger
        .utxos()
        .values()
        .map(|c| u128::from(c.amount))
        .sum::<u128>();
    ensure!(
        supply_after == supply_before + u128::from(issued),
        "supply changed: {supply_before} + issued {issued} -> {supply_after}"
    );

    let tps = load.txs.len() as f64 / elapsed.as_secs_f64();
    block_latencies.sort();
    println!();
    println!("| txs | blocks | accepted | rejected | TPS | block p50 ms | block p99 ms | verify limit sig/s | TPS/limit |");
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.0} | {:.2} |",
        load.txs.len(),
        block_latencies.len(),
        load.txs.len() - rejected,
        rejected,
        tps,
        millis(percentile(&block_latencies, 50)),
        millis(percentile(&block_latencies, 99)),
        limit_per_s,
        tps / limit_per_s,
    );
    println!();
    println!(
        "every sabotaged transaction was rejected for its reason; supply conserved (fees {fees})"
    );
    println!(
        "final height {}  utxo commitment {}",
        ledger.height,
        ledger.commitment()
    );
    Ok(())
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// The shared load plan (chains of dependent transfers plus rotating invalid ones), encoded for the pipeline.
fn generate(args: &LocalArgs, genesis: &[(OutPoint, TxOutput)]) -> Result<Load> {
    let plan = LoadPlan {
        chain_id: CHAIN_ID,
        first_account: 0,
        accounts: args.accounts,
        rounds: args.rounds,
        fee: FEE,
        invalid_every: args.invalid_every,
        rate_per_s: 0,
        workload: args.workload,
    };
    let planned = load::plan(&plan, genesis)?;
    let sabotaged = planned
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.sabotage.map(|kind| (i, kind)))
        .collect();
    Ok(Load {
        txs: planned
            .iter()
            .map(|p| {
                let mut aligned = AlignedVec::with_capacity(p.encoded.len());
                aligned.extend_from_slice(&p.encoded);
                aligned
            })
            .collect(),
        sabotaged,
    })
}

fn check_sabotage(sabotaged: &[(usize, Sabotage)], verdicts: &[Result<(), TxError>]) -> Result<()> {
    for &(index, kind) in sabotaged {
        let expected = match kind {
            Sabotage::BadSignature => TxError::BadSignature { index: 0 },
            Sabotage::DoubleSpend => TxError::DoubleSpend { input: 0 },
            Sabotage::UnknownInput => TxError::MissingInput { input: 0 },
        };
        ensure!(
            verdicts[index] == Err(expected.clone()),
            "tx {index}: expected {expected:?}, got {:?}",
            verdicts[index]
        );
    }
    let rejected = verdicts.iter().filter(|v| v.is_err()).count();
    ensure!(
        rejected == sabotaged.len(),
        "{rejected} rejected, but only {} were sabotaged",
        sabotaged.len()
    );
    Ok(())
}

/// Signature checks of one block, split into contiguous chunks over `threads`.
fn parallel_signatures(
    txs: &[&ArchivedTransaction],
    ids: &[TxId],
    threads: usize,
) -> Vec<Result<(), TxError>> {
    let per_thread = txs.len().div_ceil(threads).max(1);
    thread::scope(|scope| {
        let handles: Vec<_> = txs
            .chunks(per_thread)
            .zip(ids.chunks(per_thread))
            .map(|(t, i)| scope.spawn(move || verify_signatures(t, i)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("verification thread"))
            .collect()
    })
}

/// The physical limit of this pipeline: batched verifications per second of good signatures (a sample of up to
/// 40,000 of the load's valid transactions) on the same threads, with nothing else running.
fn verification_limit(load: &Load, threads: usize) -> f64 {
    let sabotaged: std::collections::HashSet<usize> =
        load.sabotaged.iter().map(|(index, _)| *index).collect();
    let sample: Vec<&ArchivedTransaction> = (0..load.txs.len())
        .filter(|index| !sabotaged.contains(index))
        .take(40_000)
        .map(|index| decode_tx(&load.txs[index]).expect("generated bytes decode"))
        .collect();
    let ids: Vec<TxId> = sample.iter().map(|tx| tx.tx_id()).collect();
    cas_perf::pipeline::batched_verification_rate(
        &cas_perf::pipeline::signature_entries(&sample, &ids),
        threads,
    )
}
