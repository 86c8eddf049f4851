//! The ledger's witness order: two independent executors fed the same committed blocks (carrying witnesses,
//! an uncle, a duplicate and a forgery among them) mint byte-identical issuance transactions; an uncle is paid
//! once; a third order rebuilt from the stored ledger blocks alone agrees, and a doctored issuance is caught; an
//! order restored from the state exported at any height (what a snapshot carries) and fed the blocks above it
//! mints what the stored blocks minted and ends in the same state.

use std::sync::atomic::AtomicBool;

use cas_consensus::rewards::{
    issuance_tx, OrderError, OrderStateError, WitnessOrder, REWARD_CONFIRMATIONS,
};
use cas_consensus::witness::{
    mine, RewardKind, WitnessChain, WitnessError, WitnessHeader, WitnessLimits, WitnessParams,
};
use cas_engine::{merkle, Block, BlockHash, BlockHeader, Hash32, PublicKey, Transaction};

const CHAIN: u32 = 9;

fn key(n: u8) -> PublicKey {
    PublicKey([n; 32])
}

fn params() -> WitnessParams {
    WitnessParams {
        span: 2,
        target_interval_ms: 1_000,
        retarget_window: 8,
        initial_difficulty: 4,
        min_difficulty: 1,
        uncle_depth_max: 3,
        base_reward: 1_000,
        halving_interval: 1_000,
        uncle_reward_percent: 25,
        nephew_reward_percent: 3,
        future_drift_ms: 10_000,
    }
}

fn limits() -> WitnessLimits {
    WitnessLimits {
        finalized_kept: 10_000,
        depth_kept: 64,
    }
}

fn seal(mut header: WitnessHeader) -> WitnessHeader {
    let (nonce, _) = mine(&header, 0..u64::MAX, &AtomicBool::new(false));
    header.nonce = nonce.expect("a nonce exists");
    header
}

fn timestamp(height: u64) -> u64 {
    1_700_000_000_000 + height * 1_000
}

/// What one node's executor does with a committed block: witness order first, then the ledger block with its
/// issuance last, then the block's hash into the order.
fn execute(
    order: &mut WitnessOrder,
    height: u64,
    parent: BlockHash,
    carried: &[WitnessHeader],
) -> (Block, Vec<(usize, WitnessError)>) {
    let outcome = order.execute(height, timestamp(height), carried);
    let txs: Vec<Transaction> = vec![issuance_tx(
        CHAIN,
        height,
        carried,
        &outcome.rewards,
        Default::default(),
    )];
    let ids: Vec<Hash32> = txs.iter().map(Transaction::tx_id).collect();
    let block = Block {
        header: BlockHeader {
            chain_id: CHAIN,
            height,
            round: height,
            parent,
            tx_root: merkle::root(&ids),
            sig_root: cas_engine::block::signatures_root(&txs),
            proposer: key(99),
            timestamp_ms: timestamp(height),
            utxo_commitment: Hash32::ZERO,
        },
        txs,
    };
    order.finalize(height, block.header.hash());
    (block, outcome.skipped)
}

/// Mines witness blocks on a miners' own chain (fed the ledger hashes as they become final); the committed
/// blocks carry them in a schedule with an uncle, a duplicate and a forgery.
struct Scenario {
    ledger: Vec<Block>,
    uncle: Hash32,
    miner_chain: WitnessChain,
}

fn run_executors() -> (Scenario, WitnessOrder, WitnessOrder) {
    let mut a = WitnessOrder::new(params(), limits(), REWARD_CONFIRMATIONS);
    let mut b = WitnessOrder::new(params(), limits(), REWARD_CONFIRMATIONS);
    let mut miners = WitnessChain::new(params(), limits());
    let mut ledger: Vec<Block> = Vec::new();
    let mut uncle = Hash32::ZERO;
    for height in 1..=16u64 {
        let now = timestamp(height);
        // Witnesses mined over the blocks final so far, carried by this block.
        let mut carried = Vec::new();
        if miners.template(key(1), now).is_some() {
            let best = seal(miners.template(key(1), now).unwrap());
            if height == 3 {
                // A sibling by another miner: it loses the race and becomes an uncle.
                let sibling = seal(miners.template(key(2), now).unwrap());
                uncle = sibling.hash();
                let mut forged = best.clone();
                forged.nonce = forged.nonce.wrapping_add(1);
                forged.difficulty = u64::MAX;
                carried = vec![best.clone(), sibling.clone(), best.clone(), forged];
                miners.insert(best, now).unwrap();
                miners.insert(sibling, now).unwrap();
            } else {
                carried.push(best.clone());
                miners.insert(best, now).unwrap();
            }
        }
        let parent = ledger.last().map_or(Hash32::ZERO, |b| b.header.hash());
        let (from_a, skipped_a) = execute(&mut a, height, parent, &carried);
        let (from_b, skipped_b) = execute(&mut b, height, parent, &carried);
        assert_eq!(
            from_a, from_b,
            "both executors build the same block {height}"
        );
        assert_eq!(skipped_a, skipped_b);
        if height == 3 {
            // The repeat and the forgery are skipped, for their reasons, by both.
            assert_eq!(skipped_a.len(), 2);
            assert!(matches!(skipped_a[0], (2, WitnessError::Duplicate(_))));
            assert!(matches!(
                skipped_a[1],
                (3, WitnessError::InsufficientWork { .. })
            ));
        } else {
            assert!(skipped_a.is_empty(), "block {height}: {skipped_a:?}");
        }
        miners.add_finalized(height, from_a.header.hash());
        ledger.push(from_a);
    }
    let scenario = Scenario {
        ledger,
        uncle,
        miner_chain: miners,
    };
    (scenario, a, b)
}

#[test]
fn two_executors_mint_identical_rewards_and_an_uncle_is_paid_once() {
    let (scenario, a, b) = run_executors();
    assert_eq!(a.chain().best(), b.chain().best());
    assert_eq!(a.chain().best(), scenario.miner_chain.best());
    assert!(a.chain().contains(&scenario.uncle));
    let best_height = a.chain().best_height();
    assert!(best_height >= 6, "witness height {best_height}");
    assert_eq!(a.chain().paid_height(), best_height - REWARD_CONFIRMATIONS);

    let mut minted = Vec::new();
    for block in &scenario.ledger {
        let issuance = block.txs.last().unwrap();
        minted.extend(issuance.body.outputs.iter().map(|o| (o.owner, o.amount)));
    }
    let miner = |n: u8| minted.iter().filter(|(to, _)| *to == key(n)).count();
    // Miner 2 mined only the uncle: paid exactly once, the uncle share of the base reward.
    let uncle_payments: Vec<_> = minted.iter().filter(|(to, _)| *to == key(2)).collect();
    assert_eq!(uncle_payments, vec![&(key(2), 1_000 * 25 / 100)]);
    // Miner 1: one miner reward per paid height plus one nephew reward.
    assert_eq!(miner(1) as u64, a.chain().paid_height() + 1);
    let nephew_paid = scenario
        .ledger
        .iter()
        .flat_map(|b| &b.txs.last().unwrap().body.outputs)
        .filter(|o| o.owner == key(1) && o.amount == 1_000 * 3 / 100)
        .count();
    assert_eq!(nephew_paid, 1);
    let kinds: Vec<RewardKind> = {
        // What the miners' own chain says the paid heights owe, for comparison with what the ledger minted.
        let mut chain = scenario.miner_chain.clone();
        let rewards = chain.mature_rewards(REWARD_CONFIRMATIONS);
        let owed: Vec<_> = rewards.iter().map(|r| (r.to, r.amount)).collect();
        assert_eq!(
            owed, minted,
            "the ledger minted exactly what the witness chain owes"
        );
        rewards.iter().map(|r| r.kind).collect()
    };
    assert_eq!(kinds.iter().filter(|k| **k == RewardKind::Uncle).count(), 1);
}

#[test]
fn the_order_rebuilt_from_stored_blocks_agrees_and_catches_a_doctored_issuance() {
    let (scenario, a, _) = run_executors();
    let mut rebuilt = WitnessOrder::new(params(), limits(), REWARD_CONFIRMATIONS);
    for block in &scenario.ledger {
        rebuilt.replay(block).expect("a stored block replays");
    }
    assert_eq!(rebuilt.chain().best(), a.chain().best());
    assert_eq!(rebuilt.chain().paid_height(), a.chain().paid_height());
    assert_eq!(rebuilt.executed_height(), 16);

    // A block whose issuance pays one unit more than owed.
    let paying = scenario
        .ledger
        .iter()
        .position(|b| !b.txs.last().unwrap().body.outputs.is_empty())
        .expect("some block pays");
    let mut doctored = scenario.ledger.clone();
    doctored[paying].txs.last_mut().unwrap().body.outputs[0].amount += 1;
    let mut order = WitnessOrder::new(params(), limits(), REWARD_CONFIRMATIONS);
    let mut result = Ok(());
    for block in &doctored {
        result = order.replay(block);
        if result.is_err() {
            break;
        }
    }
    assert_eq!(
        result,
        Err(OrderError::Mismatch {
            height: paying as u64 + 1
        })
    );

    // A block without its issuance, and blocks out of order, are typed errors too.
    let mut order = WitnessOrder::new(params(), limits(), REWARD_CONFIRMATIONS);
    let mut bare = scenario.ledger[0].clone();
    bare.txs.clear();
    assert_eq!(
        order.replay(&bare),
        Err(OrderError::MissingIssuance { height: 1 })
    );
    assert_eq!(
        order.replay(&scenario.ledger[1]),
        Err(OrderError::OutOfOrder {
            executed: 0,
            got: 2
        })
    );
}

#[test]
fn an_order_restored_at_any_height_continues_like_the_one_exported() {
    let (scenario, a, b) = run_executors();
    assert_eq!(
        a.export(),
        b.export(),
        "equal orders export equal bytes (what f+1 members vouch for)"
    );
    let mut replayed = WitnessOrder::new(params(), limits(), REWARD_CONFIRMATIONS);
    let mut exports = vec![replayed.export()];
    for block in &scenario.ledger {
        replayed.replay(block).unwrap();
        exports.push(replayed.export());
    }
    let fresh = WitnessOrder::new(params(), limits(), REWARD_CONFIRMATIONS);
    for (height, state) in exports.iter().enumerate() {
        let height = height as u64;
        let mut restored = fresh
            .restored(height, state)
            .expect("an exported state restores");
        assert_eq!(
            &restored.export(),
            state,
            "restore then export is the identity"
        );
        // The blocks above the snapshot replay: the restored order pays exactly what they minted.
        for block in &scenario.ledger[height as usize..] {
            restored
                .replay(block)
                .unwrap_or_else(|e| panic!("restored at {height}: {e}"));
        }
        assert_eq!(restored.export(), a.export(), "restored at {height}");
    }

    // The state of another height, or damaged bytes, are typed errors.
    assert!(matches!(
        fresh.restored(7, &exports[8]),
        Err(OrderStateError::WrongHeight {
            expected: 7,
            got: 8
        })
    ));
    let mut damaged = exports[8].clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x40;
    assert!(fresh.restored(8, &damaged).map(|o| o.export()) != Ok(exports[8].clone()));
    assert!(fresh
        .restored(8, &exports[8][..exports[8].len() - 1])
        .is_err());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 200, ..Default::default() })]

    /// Mutated order state bytes (untrusted until their hash is checked) restore to an error or to some order,
    /// never a panic; an order that restores can still execute the next block.
    #[test]
    fn mutated_order_state_never_panics(flips in proptest::collection::vec((0usize..1 << 16, 1u8..=255), 1..6)) {
        let (scenario, _, _) = run_executors();
        let mut order = WitnessOrder::new(params(), limits(), REWARD_CONFIRMATIONS);
        for block in &scenario.ledger[..8] {
            order.replay(block).unwrap();
        }
        let mut bytes = order.export();
        for (at, mask) in flips {
            let len = bytes.len();
            bytes[at % len] ^= mask;
        }
        if let Ok(mut restored) = order.restored(8, &bytes) {
            let _ = restored.replay(&scenario.ledger[8]);
        }
    }

    /// Whatever headers a proposer carries (any heights, ranges, timestamps, parents; difficulty 1, so each passes
    /// the work check and reaches the stateful rules, which refuse them), execution never panics and two
    /// executors agree.
    #[test]
    fn arbitrary_carried_headers_never_panic_and_executors_agree(
        fields in proptest::collection::vec(
            (0u8..4, proptest::num::u64::ANY, 0u64..40, 1usize..4, proptest::num::u64::ANY, 0u8..3),
            1..24,
        )
    ) {
        let mut a = WitnessOrder::new(params(), limits(), REWARD_CONFIRMATIONS);
        let mut b = WitnessOrder::new(params(), limits(), REWARD_CONFIRMATIONS);
        let mut known = vec![cas_consensus::witness::GENESIS_WITNESS];
        let mut parent_hash = Hash32::ZERO;
        for (index, (parent, height, first, span, stamp, uncles)) in fields.into_iter().enumerate() {
            let block_height = index as u64 + 1;
            let header = WitnessHeader {
                parent: known[usize::from(parent) % known.len()],
                height: if height % 2 == 0 { height % 8 } else { height },
                first_dpos_height: first,
                dpos_hashes: (0..span as u64).map(|i| Hash32::of("dpos", &(first + i).to_le_bytes())).collect(),
                uncles: known.iter().take(usize::from(uncles)).copied().collect(),
                timestamp_ms: stamp % (timestamp(block_height) + 20_000),
                difficulty: 1,
                miner: key(1),
                nonce: 0,
            };
            known.push(header.hash());
            let carried = [header];
            let (from_a, skipped_a) = execute(&mut a, block_height, parent_hash, &carried);
            let (from_b, skipped_b) = execute(&mut b, block_height, parent_hash, &carried);
            proptest::prop_assert_eq!(&from_a, &from_b);
            proptest::prop_assert_eq!(skipped_a, skipped_b);
            parent_hash = from_a.header.hash();
        }
    }
}
