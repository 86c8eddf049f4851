//! The shards pipeline (`cargo bench -p cas-perf --bench shards`), each figure beside its limit from the same run:
//! (a) UTXO check + commit without signatures (quorum-attested blocks), per CPU-second of the whole process;
//! (b) the full pipeline (untrusted decode, batched signatures on the shards, UTXO rules, commit, fdatasync per
//!     block) on every core, beside the batched-verification limit of the same cores;
//! (c) the full pipeline on 1 shard against 2.
//! The load: `ACCOUNTS` accounts each making one transfer per block that spends its change from the block before,
//! so every block depends on the previous one.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use cas_engine::codec::{encode_block, BLOCK_TXS_MAX};
use cas_engine::crypto::{verify_batch, SigEntry};
use cas_engine::fixtures::{funded_genesis, key, transfer, ACCOUNT_KEYS};
use cas_engine::genesis::genesis_outputs;
use cas_engine::{merkle, Block, BlockHeader, Hash32, OutPoint, PublicKey, Transaction};
use cas_shards::{LedgerConfig, Node, NodeConfig, ShardedLedger};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CHAIN_ID: u32 = 1;
const ACCOUNTS: u32 = 10_000;
const BLOCKS: u64 = 10;
/// Blocks between `begin` and `complete`: enough that the shards always have signature jobs queued.
const PIPELINE_DEPTH: usize = 3;

const _: () = assert!(ACCOUNTS as usize <= BLOCK_TXS_MAX);

struct Load {
    genesis: Block,
    blocks: Vec<Vec<u8>>,
    txs: Vec<Transaction>,
}

fn load(threads: usize) -> Load {
    let genesis = funded_genesis(CHAIN_ID, 4, ACCOUNTS, 1, 1_000_000_000);
    let coins = genesis_outputs(&genesis.txs);
    let accounts: Vec<u32> = (0..ACCOUNTS).collect();
    // chains[a] = account a's transfers, one per block.
    let chains: Vec<Vec<Transaction>> = thread::scope(|scope| {
        let coins = &coins;
        let handles: Vec<_> = accounts
            .chunks(accounts.len().div_ceil(threads))
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|&a| {
                            let owner = key(ACCOUNT_KEYS, a);
                            let next = key(ACCOUNT_KEYS, (a + 1) % ACCOUNTS);
                            let mut coin = coins[a as usize];
                            assert_eq!(coin.1.owner, owner.public());
                            (0..BLOCKS)
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
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let mut parent = genesis.header.hash();
    let mut blocks = Vec::new();
    let mut all = Vec::new();
    for height in 1..=BLOCKS {
        let txs: Vec<Transaction> = chains
            .iter()
            .map(|c| c[height as usize - 1].clone())
            .collect();
        let ids: Vec<Hash32> = txs.iter().map(Transaction::tx_id).collect();
        let block = Block {
            header: BlockHeader {
                chain_id: CHAIN_ID,
                height,
                round: height,
                parent,
                tx_root: merkle::root(&ids),
                proposer: PublicKey::default(),
                timestamp_ms: height,
                utxo_commitment: Hash32::ZERO,
            },
            txs,
        };
        parent = block.header.hash();
        all.extend(block.txs.iter().cloned());
        blocks.push(encode_block(&block).to_vec());
    }
    Load {
        genesis,
        blocks,
        txs: all,
    }
}

/// Batched verifications per second of the load's signatures on `threads` plain threads, ids precomputed:
/// the ceiling of any pipeline that checks every signature on those cores.
fn verification_limit(load: &Load, threads: usize) -> f64 {
    let ids: Vec<Hash32> = load.txs.iter().map(Transaction::tx_id).collect();
    let per_thread = load.txs.len().div_ceil(threads);
    let started = Instant::now();
    thread::scope(|scope| {
        for (txs, ids) in load.txs.chunks(per_thread).zip(ids.chunks(per_thread)) {
            scope.spawn(move || {
                let entries: Vec<SigEntry<'_>> = txs
                    .iter()
                    .zip(ids)
                    .flat_map(|(tx, id)| {
                        tx.witnesses.iter().map(move |w| SigEntry {
                            message: &id.0,
                            key: &w.key.0,
                            signature: &w.signature.0,
                        })
                    })
                    .collect();
                assert!(verify_batch(&entries).is_empty(), "the load is valid");
            });
        }
    });
    let signatures: usize = load.txs.iter().map(|tx| tx.witnesses.len()).sum();
    signatures as f64 / started.elapsed().as_secs_f64()
}

/// User + system CPU time of this process so far (from /proc/self/stat, in clock ticks of 10 ms).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("linux /proc");
    let after_name = &stat[stat.rfind(')').expect("stat has a name") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cas-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// (a): attested blocks through the ledger (no store); returns (tx/s wall, tx per CPU-second).
fn utxo_only(load: &Load, shards: usize) -> (f64, f64) {
    let config = LedgerConfig {
        shards,
        pin_cores: true,
    };
    let mut ledger = ShardedLedger::from_genesis(&load.genesis, &config).unwrap();
    let (wall, cpu) = (Instant::now(), cpu_time());
    let mut in_flight = VecDeque::new();
    let mut accepted = 0usize;
    for bytes in &load.blocks {
        in_flight.push_back(ledger.begin_attested(bytes.clone()).unwrap());
        if in_flight.len() == PIPELINE_DEPTH {
            let outcome = ledger.finish(in_flight.pop_front().unwrap()).unwrap();
            accepted += outcome.verdicts.iter().filter(|v| v.is_ok()).count();
        }
    }
    while let Some(pending) = in_flight.pop_front() {
        let outcome = ledger.finish(pending).unwrap();
        accepted += outcome.verdicts.iter().filter(|v| v.is_ok()).count();
    }
    let (wall, cpu) = (wall.elapsed(), cpu_time() - cpu);
    assert_eq!(accepted, load.txs.len(), "every transfer is valid");
    let txs = load.txs.len() as f64;
    (txs / wall.as_secs_f64(), txs / cpu.as_secs_f64().max(1e-3))
}

/// (b), (c): the durable node; returns (tx/s, block p50 ms).
fn pipeline(load: &Load, shards: usize) -> (f64, f64) {
    let dir = temp_dir(&format!("pipeline-{shards}"));
    let config = NodeConfig {
        ledger: LedgerConfig {
            shards,
            pin_cores: true,
        },
        ..NodeConfig::default()
    };
    let (mut node, _) = Node::open(&dir, &config, Some(&load.genesis)).unwrap();
    let started = Instant::now();
    let mut in_flight = VecDeque::new();
    let mut latencies = Vec::new();
    let mut accepted = 0usize;
    let mut complete = |node: &mut Node, (begun, flight): (Instant, cas_shards::InFlight)| {
        let receipt = node.complete(flight).unwrap();
        latencies.push(begun.elapsed());
        accepted += receipt
            .outcome
            .verdicts
            .iter()
            .filter(|v| v.is_ok())
            .count();
    };
    for bytes in &load.blocks {
        in_flight.push_back((Instant::now(), node.begin(bytes.clone()).unwrap()));
        if in_flight.len() == PIPELINE_DEPTH {
            complete(&mut node, in_flight.pop_front().unwrap());
        }
    }
    while let Some(flight) = in_flight.pop_front() {
        complete(&mut node, flight);
    }
    let elapsed = started.elapsed();
    assert_eq!(accepted, load.txs.len(), "every transfer is valid");
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
    latencies.sort();
    (
        load.txs.len() as f64 / elapsed.as_secs_f64(),
        latencies[latencies.len() / 2].as_secs_f64() * 1e3,
    )
}

fn main() {
    let cores = thread::available_parallelism().map_or(1, usize::from);
    println!(
        "cas-shards pipeline: {ACCOUNTS} transfers per block, {BLOCKS} dependent blocks, pipeline depth {PIPELINE_DEPTH}, \
         {cores} cores"
    );
    let started = Instant::now();
    let load = load(cores);
    println!(
        "signed {} transfers in {:.1?}",
        load.txs.len(),
        started.elapsed()
    );

    let (wall_1, cpu_1) = utxo_only(&load, 1);
    let (wall_n, cpu_n) = utxo_only(&load, cores);
    println!();
    println!("(a) UTXO check + commit, signatures attested (tx ids still computed)");
    println!("| shards | tx/s (wall) | tx per CPU-second |");
    println!("|---|---|---|");
    println!("| 1 | {wall_1:.0} | {cpu_1:.0} |");
    println!("| {cores} | {wall_n:.0} | {cpu_n:.0} |");

    let limit_before = verification_limit(&load, cores);
    let (tps_n, p50_n) = pipeline(&load, cores);
    let limit_after = verification_limit(&load, cores);
    let (tps_1, p50_1) = pipeline(&load, 1);
    let limit = limit_before.max(limit_after);
    println!();
    println!("(b) full pipeline, durable (fdatasync per block), {cores} shards on {cores} cores");
    println!("| TPS | block p50 ms | verify limit sig/s (before / after) | TPS/limit |");
    println!("|---|---|---|---|");
    println!(
        "| {tps_n:.0} | {p50_n:.1} | {limit_before:.0} / {limit_after:.0} | {:.2} |",
        tps_n / limit
    );
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
