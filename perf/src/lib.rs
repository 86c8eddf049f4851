//! Shared set-up for the CAS benchmark suites: deterministic signed loads and blocks built once per run, so every
//! benchmark measures the real engine path on the same inputs; and the measuring and reporting parts of `cas bench`
//! ([`suite`]: the micro summary, [`pipeline`]: the shards pipeline, [`report`]: report.md, report.json and plots).

pub mod mixed;
pub mod pipeline;
pub mod report;
pub mod suite;

use cas_engine::fixtures::{funded_genesis, key, transfer, ACCOUNT_KEYS};
use cas_engine::genesis::genesis_outputs;
use cas_engine::merkle;
use cas_engine::{Block, BlockHeader, Hash32, MemoryLedger, PublicKey, Transaction};

pub const CHAIN_ID: u32 = 1;

/// `count` independent signed transfers (one per account) and the ledger they apply to.
pub fn transfers(count: u32) -> (MemoryLedger, Vec<Transaction>) {
    let genesis = funded_genesis(CHAIN_ID, 4, count, 1, 1_000_000);
    let ledger = MemoryLedger::from_genesis(&genesis).expect("fixture genesis is valid");
    let coins = genesis_outputs(&genesis.txs);
    let txs = coins
        .iter()
        .enumerate()
        .map(|(i, coin)| {
            let owner = key(ACCOUNT_KEYS, i as u32);
            debug_assert_eq!(owner.public(), coin.1.owner);
            transfer(
                CHAIN_ID,
                &owner,
                &[*coin],
                &key(ACCOUNT_KEYS, (i as u32 + 1) % count),
                10,
                1,
            )
        })
        .collect();
    (ledger, txs)
}

/// A block at height 1 holding `txs`, with a correct tx root.
pub fn block_of(txs: Vec<Transaction>) -> Block {
    block_at(1, Hash32::ZERO, txs)
}

/// A block at `height` (round and timestamp the same number) on `parent`, holding `txs`, with correct tx and
/// signatures roots.
pub fn block_at(height: u64, parent: Hash32, txs: Vec<Transaction>) -> Block {
    let ids: Vec<Hash32> = txs.iter().map(Transaction::tx_id).collect();
    Block {
        header: BlockHeader {
            chain_id: CHAIN_ID,
            height,
            round: height,
            parent,
            tx_root: merkle::root(&ids),
            sig_root: cas_engine::block::signatures_root(&txs),
            proposer: PublicKey::default(),
            timestamp_ms: height,
            utxo_commitment: Hash32::ZERO,
        },
        txs,
    }
}
