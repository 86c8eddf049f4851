//! `cas local` as far as it exists before the cluster: one process runs the ledger pipeline on a generated load
//! (untrusted decode -> batched signature checks spread over threads -> UTXO rules -> commit) and prints TPS and
//! latency beside the batched-verification limit of the same threads, measured in the same run. The multi-node
//! cluster with consensus replaces this job when the node lands.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use cas_engine::codec::{decode_tx, encode_tx};
use cas_engine::crypto::{verify_batch, SigEntry};
use cas_engine::fixtures::{funded_genesis, key, ACCOUNT_KEYS};
use cas_engine::genesis::genesis_outputs;
use cas_engine::rules::{apply_batch, verify_signatures, TxError};
use cas_engine::{
    ArchivedTransaction, Hash32, Keypair, MemoryLedger, OutPoint, Transaction, TxId, TxOutput,
};
use rkyv::util::AlignedVec;

use crate::LocalArgs;

const CHAIN_ID: u32 = 1;
const FEE: u64 = 1;
const GENESIS_AMOUNT: u64 = 1_000_000_000;

/// Why a generated transaction is invalid on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sabotage {
    BadSignature,
    DoubleSpend,
    UnknownInput,
}

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
        "cas local: one process, ledger pipeline only (decode -> batched signatures on {threads} threads -> UTXO \
         rules -> commit); consensus and the multi-node cluster come with the node"
    );
    let genesis = funded_genesis(CHAIN_ID, 4, args.accounts, 1, GENESIS_AMOUNT);
    let mut ledger = MemoryLedger::from_genesis(&genesis)?;
    let supply_before: u128 = ledger.utxos().values().map(|c| u128::from(c.amount)).sum();

    let started = Instant::now();
    let load = generate(args, threads, &genesis_outputs(&genesis.txs));
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
    let supply_after: u128 = ledger
        .utxos()
        .values()
        .map(|c| u128::from(c.amount))
        .sum::<u128>()
        + u128::from(fees);
    ensure!(
        supply_after == supply_before,
        "supply changed: {supply_before} -> {supply_after}"
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

/// Pre-signs `rounds` transfers per account: each spends the account's change from its previous transfer (chains
/// of dependent transactions), sending 1 CAS to the next account. After every `invalid_every`-th valid one, an
/// invalid one is added (rotating bad signature, double spend, unknown input).
fn generate(args: &LocalArgs, threads: usize, genesis: &[(OutPoint, TxOutput)]) -> Load {
    let accounts: Vec<u32> = (0..args.accounts).collect();
    let per_thread = accounts.len().div_ceil(threads);
    // chains[a][r] = account a's transfer of round r.
    let chains: Vec<Vec<Transaction>> = thread::scope(|scope| {
        let handles: Vec<_> = accounts
            .chunks(per_thread)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|&a| chain(args, a, genesis))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("signing thread"))
            .collect()
    });
    let mut txs = Vec::new();
    let mut sabotaged = Vec::new();
    let mut valid = 0usize;
    for round in 0..args.rounds as usize {
        for (account, chain) in chains.iter().enumerate() {
            let tx = &chain[round];
            txs.push(encode_tx(tx));
            valid += 1;
            if args.invalid_every > 0 && valid % args.invalid_every == 0 {
                let kind = [
                    Sabotage::BadSignature,
                    Sabotage::DoubleSpend,
                    Sabotage::UnknownInput,
                ][(valid / args.invalid_every) % 3];
                sabotaged.push((txs.len(), kind));
                txs.push(encode_tx(&sabotage(
                    tx,
                    kind,
                    &key(ACCOUNT_KEYS, account as u32),
                )));
            }
        }
    }
    Load { txs, sabotaged }
}

fn chain(args: &LocalArgs, account: u32, genesis: &[(OutPoint, TxOutput)]) -> Vec<Transaction> {
    let owner = key(ACCOUNT_KEYS, account);
    let next = key(ACCOUNT_KEYS, (account + 1) % args.accounts);
    let mut coin = *genesis
        .iter()
        .find(|(_, c)| c.owner == owner.public())
        .expect("every account is funded");
    (0..args.rounds)
        .map(|_| {
            let tx = cas_engine::fixtures::transfer(CHAIN_ID, &owner, &[coin], &next, 1, FEE);
            coin = (
                OutPoint {
                    tx: tx.tx_id(),
                    index: 1,
                },
                tx.body.outputs[1],
            );
            tx
        })
        .collect()
}

/// An invalid copy of `tx` placed right after it.
fn sabotage(tx: &Transaction, kind: Sabotage, owner: &Keypair) -> Transaction {
    let mut bad = tx.clone();
    match kind {
        Sabotage::BadSignature => {
            bad.body.outputs[0].amount += 1;
            bad.body.outputs[1].amount -= 1;
            bad.witnesses[0].signature.0[7] ^= 1;
        }
        // Same input, another recipient split: the original spent it first.
        Sabotage::DoubleSpend => {
            bad.body.outputs[0].amount += 1;
            bad.body.outputs[1].amount -= 1;
            bad = bad.body.sign(&[owner]);
        }
        Sabotage::UnknownInput => {
            bad.body.inputs[0].tx = Hash32(*blake3::hash(&tx.tx_id().0).as_bytes());
            bad = bad.body.sign(&[owner]);
        }
    }
    bad
}

fn check_sabotage(sabotaged: &[(usize, Sabotage)], verdicts: &[Result<(), TxError>]) -> Result<()> {
    for &(index, kind) in sabotaged {
        let expected = match kind {
            Sabotage::BadSignature => TxError::BadSignature { witness: 0 },
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
    let per_thread = sample.len().div_ceil(threads).max(1);
    let started = Instant::now();
    thread::scope(|scope| {
        for (t, i) in sample.chunks(per_thread).zip(ids.chunks(per_thread)) {
            scope.spawn(move || {
                let entries: Vec<SigEntry<'_>> = t
                    .iter()
                    .zip(i)
                    .flat_map(|(tx, id)| {
                        tx.witnesses.iter().map(move |w| SigEntry {
                            message: &id.0,
                            key: &w.key.0,
                            signature: &w.signature.0,
                        })
                    })
                    .collect();
                verify_batch(&entries)
            });
        }
    });
    let signatures: usize = sample.iter().map(|tx| tx.witnesses.len()).sum();
    signatures as f64 / started.elapsed().as_secs_f64()
}
