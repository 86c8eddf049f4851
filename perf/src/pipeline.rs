//! The shards pipeline measured on a generated load, shared by `cargo bench -p cas-perf --bench shards` and
//! `cas bench`: (a) UTXO check + commit without signatures (quorum-attested blocks); (b) the full durable pipeline
//! (untrusted decode, batched signatures on the shards, UTXO rules, commit, fdatasync per block); and the
//! batched-verification limit of the same cores, its peer. The load: `accounts` accounts each making one transfer
//! per block that spends its change from the block before, so every block depends on the previous one.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use cas_engine::codec::{decode_block, encode_block, BLOCK_TXS_MAX};
use cas_engine::crypto::{verify_batch, SigEntry};
use cas_engine::fixtures::{funded_genesis, key, transfer, ACCOUNT_KEYS};
use cas_engine::genesis::genesis_outputs;
use cas_engine::rules::{fee_pot_outpoint, fee_pot_output};
use cas_engine::{
    ArchivedTransaction, Block, OutPoint, SetCommitment, Transaction, TxId, TxOutput,
};
use cas_shards::{DurableLedger, DurableLedgerConfig, LedgerConfig, ShardedLedger};

use crate::CHAIN_ID;

/// Blocks between `begin` and `complete`: enough that the shards always have signature jobs queued.
pub const PIPELINE_DEPTH: usize = 3;

/// A signed load of dependent blocks over a funded genesis.
pub struct Load {
    pub genesis: Block,
    /// Encoded blocks, heights 1.. in order.
    pub blocks: Vec<Vec<u8>>,
    pub txs: Vec<Transaction>,
}

/// Signs `accounts` x `blocks` transfers on `threads` threads and encodes the blocks.
pub fn load(accounts: u32, blocks: u64, threads: usize) -> Load {
    assert!(accounts > 0 && accounts as usize <= BLOCK_TXS_MAX && blocks > 0);
    let genesis = funded_genesis(CHAIN_ID, 4, accounts, 1, 1_000_000_000);
    let coins = genesis_outputs(&genesis.txs);
    let ids: Vec<u32> = (0..accounts).collect();
    // chains[a] = account a's transfers, one per block.
    let chains: Vec<Vec<Transaction>> = thread::scope(|scope| {
        let coins = &coins;
        let handles: Vec<_> = ids
            .chunks(ids.len().div_ceil(threads.max(1)))
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|&a| {
                            let owner = key(ACCOUNT_KEYS, a);
                            let next = key(ACCOUNT_KEYS, (a + 1) % accounts);
                            let mut coin = coins[a as usize];
                            assert_eq!(coin.1.owner, owner.public());
                            (0..blocks)
                                .map(|_| {
                                    let tx = transfer(CHAIN_ID, &owner, &[coin], &next, 1, 1);
                                    coin = (
                                        OutPoint {
                                            tx: tx.tx_id(),
                                            index: 1,
                                        },
                                        tx.body.outputs[1],
                                    );
                                    tx
                                })
                                .collect::<Vec<_>>()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a signing thread panicked"))
            .collect()
    });
    let mut parent = genesis.header.hash();
    let mut encoded = Vec::new();
    let mut all = Vec::new();
    // The set and its commitment, followed block by block (every transfer is valid): each header commits to the
    // set after its parent, as the durable node checks.
    let whole = cas_engine::genesis::genesis_set(&genesis.txs);
    let mut set: std::collections::HashMap<OutPoint, TxOutput> = whole.iter().copied().collect();
    let mut commitment = SetCommitment::default();
    whole.iter().for_each(|(o, c)| commitment.insert(o, c));
    for height in 1..=blocks {
        let txs: Vec<Transaction> = chains
            .iter()
            .map(|c| c[height as usize - 1].clone())
            .collect();
        let mut block = crate::block_at(height, parent, txs);
        block.header.utxo_commitment = commitment.checksum();
        for tx in &block.txs {
            for input in &tx.body.inputs {
                let coin = set.remove(input).expect("the load spends existing coins");
                commitment.remove(input, &coin);
            }
            let id = tx.tx_id();
            for (index, coin) in tx.body.outputs.iter().enumerate() {
                let outpoint = OutPoint {
                    tx: id,
                    index: index as u32,
                };
                commitment.insert(&outpoint, coin);
                set.insert(outpoint, *coin);
            }
        }
        // The block's fees wait in its pot (no issuance spends it here: the pipeline has no executor).
        let fees: u64 = block.txs.iter().map(|tx| tx.body.fee).sum();
        if fees > 0 {
            let (outpoint, pot) = (fee_pot_outpoint(height), fee_pot_output(fees));
            commitment.insert(&outpoint, &pot);
            set.insert(outpoint, pot);
        }
        parent = block.header.hash();
        all.extend(block.txs.iter().cloned());
        encoded.push(encode_block(&block).to_vec());
    }
    Load {
        genesis,
        blocks: encoded,
        txs: all,
    }
}

/// Batched verifications per second of the load's signatures on `threads` plain threads, ids precomputed:
/// the ceiling of any pipeline that checks every signature on those cores.
pub fn verification_limit(load: &Load, threads: usize) -> f64 {
    let txs: Vec<&ArchivedTransaction> = load
        .blocks
        .iter()
        .flat_map(|bytes| {
            decode_block(bytes)
                .expect("the load's blocks decode")
                .txs
                .iter()
        })
        .collect();
    let ids: Vec<TxId> = txs.iter().map(|tx| tx.tx_id()).collect();
    batched_verification_rate(&signature_entries(&txs, &ids), threads)
}

/// The signature checks of `txs` (`ids[i]` is `txs[i]`'s id), one entry per signature, in order.
pub fn signature_entries<'a>(
    txs: &[&'a ArchivedTransaction],
    ids: &'a [TxId],
) -> Vec<SigEntry<'a>> {
    txs.iter()
        .zip(ids)
        .flat_map(|(tx, id)| {
            tx.signatures.iter().map(move |w| SigEntry {
                message: &id.0,
                key: &w.key.0,
                signature: &w.signature.0,
            })
        })
        .collect()
}

/// Batched verifications per second of `entries`, split into contiguous chunks over `threads` plain threads. The
/// signatures must all be good: a limit is measured on the work a valid load needs.
pub fn batched_verification_rate(entries: &[SigEntry<'_>], threads: usize) -> f64 {
    let per_thread = entries.len().div_ceil(threads.max(1)).max(1);
    let started = Instant::now();
    thread::scope(|scope| {
        for chunk in entries.chunks(per_thread) {
            scope.spawn(move || assert!(verify_batch(chunk).is_empty(), "the signatures are good"));
        }
    });
    entries.len() as f64 / started.elapsed().as_secs_f64()
}

/// User + system CPU time of this process so far.
pub fn cpu_time() -> Duration {
    process_cpu_time("self").expect("linux /proc")
}

/// User + system CPU time of process `pid` ("self" or a number) so far, from /proc/PID/stat in clock ticks (10 ms);
/// None when the process is gone.
pub fn process_cpu_time(pid: &str) -> Option<Duration> {
    stat_cpu_time(&format!("/proc/{pid}/stat"))
}

/// User + system CPU time of each live thread of process `pid` so far: (thread id, thread name, time), from
/// /proc/PID/task/*/{comm,stat}. A thread that has exited is not listed (its time stays in
/// [`process_cpu_time`]); None when the process is gone.
pub fn threads_cpu_time(pid: &str) -> Option<Vec<(u32, String, Duration)>> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut threads = Vec::new();
    for task in tasks.flatten() {
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<u32>().ok())
        else {
            continue;
        };
        // A thread may end between the listing and the reads: it is left out, like one that ended before.
        let Ok(name) = std::fs::read_to_string(task.path().join("comm")) else {
            continue;
        };
        if let Some(time) = stat_cpu_time(&task.path().join("stat").to_string_lossy()) {
            threads.push((tid, name.trim_end().to_string(), time));
        }
    }
    Some(threads)
}

/// utime + stime of a /proc stat file (process or thread), in clock ticks of 10 ms.
fn stat_cpu_time(path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(path).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// A fresh directory under the system's temp dir for one measurement.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cas-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// What (a) measured: attested blocks through the ledger, no store.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct UtxoOnly {
    pub shards: usize,
    pub tx_per_s_wall: f64,
    pub tx_per_cpu_s: f64,
}

/// (a): attested blocks through the ledger (no store, tx ids still computed).
pub fn utxo_only(load: &Load, shards: usize) -> UtxoOnly {
    let config = LedgerConfig {
        shards,
        pin_cores: true,
        on_caller_thread: false,
        business_from: 0,
    };
    let mut ledger =
        ShardedLedger::from_genesis(&load.genesis, &config).expect("the load's genesis is valid");
    let (wall, cpu) = (Instant::now(), cpu_time());
    let mut in_flight = VecDeque::new();
    let mut accepted = 0usize;
    for bytes in &load.blocks {
        in_flight.push_back(ledger.begin_attested(bytes.clone()).expect("a valid block"));
        if in_flight.len() == PIPELINE_DEPTH {
            let outcome = ledger
                .finish(in_flight.pop_front().expect("full"))
                .expect("a valid block");
            accepted += outcome.verdicts.iter().filter(|v| v.is_ok()).count();
        }
    }
    while let Some(pending) = in_flight.pop_front() {
        let outcome = ledger.finish(pending).expect("a valid block");
        accepted += outcome.verdicts.iter().filter(|v| v.is_ok()).count();
    }
    let (wall, cpu) = (wall.elapsed(), cpu_time() - cpu);
    assert_eq!(accepted, load.txs.len(), "every transfer is valid");
    let txs = load.txs.len() as f64;
    UtxoOnly {
        shards,
        tx_per_s_wall: txs / wall.as_secs_f64(),
        tx_per_cpu_s: txs / cpu.as_secs_f64().max(1e-3),
    }
}

/// What (b) measured: the durable node on the load.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Durable {
    pub shards: usize,
    pub tps: f64,
    pub block_p50_ms: f64,
    /// Cores busy on average while the blocks ran (process CPU time / wall time): idle cores show as a gap to
    /// the shard count.
    pub busy_cores: f64,
}

/// (b): the durable node (signatures, rules, commit, fdatasync per block) on `shards` shards.
pub fn durable(load: &Load, shards: usize) -> Durable {
    let dir = temp_dir(&format!("pipeline-{shards}"));
    let config = DurableLedgerConfig {
        ledger: LedgerConfig {
            shards,
            pin_cores: true,
            on_caller_thread: false,
            business_from: 0,
        },
        ..DurableLedgerConfig::default()
    };
    let (mut node, _) =
        DurableLedger::open(&dir, &config, Some(&load.genesis)).expect("a fresh store opens");
    let (started, cpu) = (Instant::now(), cpu_time());
    let mut in_flight = VecDeque::new();
    let mut latencies = Vec::new();
    let mut accepted = 0usize;
    let mut complete = |node: &mut DurableLedger,
                        (begun, flight): (Instant, cas_shards::InFlight)| {
        let receipt = node.complete(flight).expect("a valid block commits");
        latencies.push(begun.elapsed());
        accepted += receipt
            .outcome
            .verdicts
            .iter()
            .filter(|v| v.is_ok())
            .count();
    };
    for bytes in &load.blocks {
        in_flight.push_back((
            Instant::now(),
            node.begin(bytes.clone()).expect("a valid block"),
        ));
        if in_flight.len() == PIPELINE_DEPTH {
            complete(&mut node, in_flight.pop_front().expect("full"));
        }
    }
    while let Some(flight) = in_flight.pop_front() {
        complete(&mut node, flight);
    }
    let (elapsed, cpu) = (started.elapsed(), cpu_time() - cpu);
    assert_eq!(accepted, load.txs.len(), "every transfer is valid");
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
    latencies.sort();
    Durable {
        shards,
        tps: load.txs.len() as f64 / elapsed.as_secs_f64(),
        block_p50_ms: latencies[latencies.len() / 2].as_secs_f64() * 1e3,
        busy_cores: cpu.as_secs_f64() / elapsed.as_secs_f64(),
    }
}
