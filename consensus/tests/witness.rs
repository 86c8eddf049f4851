//! The POW witness chain's rules: a seeded, virtual-time run in which the difficulty converges to the target
//! interval; every way a witness can be wrong is refused with its reason; most-work fork choice; uncles cited and
//! rewarded once; the decoder's bounds.

use std::sync::atomic::AtomicBool;

use cas_consensus::witness::{
    decode_witness, encode_witness, meets_difficulty, mine, RewardKind, WitnessChain,
    WitnessDecodeError, WitnessError, WitnessHeader, WitnessLimits, WitnessParams, GENESIS_WITNESS,
    WITNESS_SPAN_MAX,
};
use cas_engine::{Hash32, PublicKey};
use proptest::prelude::*;

/// splitmix64: a seeded generator, so every run replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn dpos_hash(height: u64) -> Hash32 {
    Hash32::of("test dpos block", &height.to_le_bytes())
}

fn key(n: u8) -> PublicKey {
    PublicKey([n; 32])
}

fn params() -> WitnessParams {
    WitnessParams {
        span: 4,
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
        finalized_kept: 100_000,
        depth_kept: 64,
    }
}

/// A chain whose first `heights` DPOS blocks are final.
fn chain_with_finalized(params: WitnessParams, heights: u64) -> WitnessChain {
    let mut chain = WitnessChain::new(params, limits());
    for height in 1..=heights {
        chain.add_finalized(height, dpos_hash(height));
    }
    chain
}

/// Finds a nonce for `header` (from 0) and sets it.
fn seal(mut header: WitnessHeader) -> WitnessHeader {
    let (nonce, _) = mine(&header, 0..u64::MAX, &AtomicBool::new(false));
    header.nonce = nonce.expect("a nonce exists");
    header
}

/// Mines a child of `parent` (the chain's template, with the given miner and time).
fn child_of(chain: &WitnessChain, miner: u8, now_ms: u64) -> WitnessHeader {
    seal(chain.template(key(miner), now_ms).expect("range finalized"))
}

#[test]
fn difficulty_converges_to_the_target_interval() {
    for seed in [1u64, 2, 3] {
        let mut rng = Rng(seed);
        let params = WitnessParams {
            initial_difficulty: 64,
            ..params()
        };
        let target = params.target_interval_ms;
        let blocks = 400u64;
        let mut chain = chain_with_finalized(params.clone(), blocks * u64::from(params.span));
        // Virtual time: the miner tries `hashes_per_ms` nonces per millisecond, so the equilibrium difficulty is
        // about 2 * 1000 = 2000, thirty times the start. It re-reads the clock every 100 ms of work, like a real
        // miner updating its timestamp.
        let hashes_per_ms = 2u64;
        let chunk = hashes_per_ms * 100;
        let mut now_ms = 0u64;
        let mut timestamps = Vec::new();
        let stop = AtomicBool::new(false);
        for _ in 0..blocks {
            let mut header = chain.template(key(1), now_ms).expect("finalized");
            let start = rng.next() >> 1;
            let mut next = start;
            loop {
                header.timestamp_ms = now_ms;
                let (found, tried) = mine(&header, next..next + chunk, &stop);
                now_ms += tried / hashes_per_ms;
                next += tried;
                if let Some(nonce) = found {
                    header.nonce = nonce;
                    break;
                }
            }
            timestamps.push(header.timestamp_ms);
            chain
                .insert(header, now_ms)
                .expect("a mined template is valid");
        }
        assert_eq!(chain.best_height(), blocks);
        // The second half: long after convergence.
        let half = timestamps.len() / 2;
        let mean_ms = (timestamps[timestamps.len() - 1] - timestamps[half]) as f64
            / (timestamps.len() - 1 - half) as f64;
        assert!(
            (mean_ms - target as f64).abs() < 0.25 * target as f64,
            "seed {seed}: mean interval {mean_ms:.0} ms, target {target} ms"
        );
        let tip = chain.get(&chain.best()).expect("tip");
        assert!(
            (700..=6_000).contains(&tip.difficulty),
            "seed {seed}: difficulty {} far from the equilibrium of about 2000",
            tip.difficulty
        );
    }
}

#[test]
fn retarget_follows_a_slow_window_down_and_is_clamped() {
    let params = params();
    let mut chain = chain_with_finalized(params.clone(), 1_000);
    // Eight blocks (the first window: heights 1..=8), each 100 s apart: 100x slower than the target.
    for i in 0..8u64 {
        let now = i * 100_000;
        chain.insert(child_of(&chain, 1, now), now).expect("valid");
    }
    // The window is far too slow: the difficulty falls, but by at most the clamp (4 -> 1).
    assert_eq!(chain.next_difficulty(&chain.best()), 1);

    // With a floor, it stops there.
    let mut floored = chain_with_finalized(
        WitnessParams {
            initial_difficulty: 64,
            min_difficulty: 32,
            ..params
        },
        1_000,
    );
    for i in 0..8u64 {
        let now = i * 100_000;
        floored
            .insert(child_of(&floored, 1, now), now)
            .expect("valid");
    }
    assert_eq!(floored.next_difficulty(&floored.best()), 32);
}

#[test]
fn a_valid_chain_grows_and_the_best_is_the_most_work() {
    let mut chain = chain_with_finalized(params(), 100);
    let a1 = child_of(&chain, 1, 1_000);
    let a1_hash = chain.insert(a1.clone(), 1_000).expect("valid").hash;
    assert_eq!(chain.best(), a1_hash);
    // A sibling with the same work does not take over (first seen wins ties).
    let mut b1 = a1.clone();
    b1.miner = key(2);
    let b1 = seal(b1);
    let b1_hash = chain.insert(b1, 1_000).expect("valid").hash;
    assert_eq!(chain.best(), a1_hash);
    // Two blocks on b1 outweigh a1.
    let mut b2 = WitnessHeader {
        parent: b1_hash,
        height: 2,
        first_dpos_height: 5,
        dpos_hashes: (5..9).map(dpos_hash).collect(),
        uncles: vec![],
        timestamp_ms: 2_000,
        difficulty: chain.next_difficulty(&b1_hash),
        miner: key(2),
        nonce: 0,
    };
    b2 = seal(b2);
    let b2_hash = chain.insert(b2, 2_000).expect("valid").hash;
    assert!(chain
        .insert(chain.get(&b2_hash).unwrap().clone(), 2_000)
        .is_err());
    assert_eq!(chain.best(), b2_hash);
    assert_eq!(chain.best_chain(), vec![b1_hash, b2_hash]);
}

#[test]
fn a_witness_over_wrong_hashes_is_refused() {
    let mut chain = chain_with_finalized(params(), 100);
    let mut header = chain.template(key(1), 0).unwrap();
    header.dpos_hashes[2] = Hash32([7; 32]);
    let header = seal(header);
    assert_eq!(
        chain.insert(header, 0),
        Err(WitnessError::WrongDposHash { height: 3 })
    );
}

#[test]
fn a_witness_with_too_little_work_is_refused() {
    let params = WitnessParams {
        initial_difficulty: 1 << 20,
        ..params()
    };
    let mut chain = chain_with_finalized(params, 100);
    let mut header = chain.template(key(1), 0).unwrap();
    header.nonce = (0..)
        .find(|&nonce| {
            let candidate = WitnessHeader {
                nonce,
                ..header.clone()
            };
            !meets_difficulty(&candidate.hash(), candidate.difficulty)
        })
        .expect("most nonces fail");
    assert_eq!(
        chain.insert(header.clone(), 0),
        Err(WitnessError::InsufficientWork {
            difficulty: 1 << 20
        })
    );
    // Claiming a lower difficulty than the retarget rule sets is refused too, even with that work done.
    header.difficulty = 2;
    let header = seal(header);
    assert_eq!(
        chain.insert(header, 0),
        Err(WitnessError::WrongDifficulty {
            expected: 1 << 20,
            got: 2
        })
    );
}

#[test]
fn a_witness_with_a_bad_parent_is_refused() {
    let mut chain = chain_with_finalized(params(), 100);
    let first = child_of(&chain, 1, 0);
    let first_hash = chain.insert(first.clone(), 0).unwrap().hash;

    // An unknown parent.
    let mut orphan = chain.template(key(1), 0).unwrap();
    orphan.parent = Hash32([9; 32]);
    assert_eq!(
        chain.insert(seal(orphan), 0),
        Err(WitnessError::UnknownParent(Hash32([9; 32])))
    );
    // A known parent, but a range that does not follow the parent's.
    let mut overlapping = chain.template(key(1), 0).unwrap();
    overlapping.first_dpos_height = 1;
    overlapping.dpos_hashes = (1..5).map(dpos_hash).collect();
    assert_eq!(
        chain.insert(seal(overlapping), 0),
        Err(WitnessError::WrongStart {
            expected: 5,
            got: 1
        })
    );
    // A height that is not the parent's plus one.
    let mut skipping = chain.template(key(1), 0).unwrap();
    skipping.height = 5;
    assert_eq!(
        chain.insert(seal(skipping), 0),
        Err(WitnessError::WrongHeight {
            expected: 2,
            got: 5
        })
    );
    // A timestamp before the parent's.
    let mut early = chain.template(key(1), 0).unwrap();
    assert_eq!(early.parent, first_hash);
    early.timestamp_ms = first.timestamp_ms;
    let mut late_parent = first.clone();
    late_parent.timestamp_ms = 5_000;
    late_parent.miner = key(3);
    let late_parent_hash = chain.insert(seal(late_parent), 5_000).unwrap().hash;
    early.parent = late_parent_hash;
    early.timestamp_ms = 4_000;
    assert_eq!(
        chain.insert(seal(early), 5_000),
        Err(WitnessError::TimestampBeforeParent {
            parent: 5_000,
            got: 4_000
        })
    );
}

#[test]
fn a_witness_ahead_of_finality_or_of_the_clock_is_refused() {
    let mut chain = chain_with_finalized(params(), 3);
    assert!(chain.template(key(1), 0).is_none(), "span 4 needs 4 final");
    chain.add_finalized(4, dpos_hash(4));
    let header = chain.template(key(1), 0).unwrap();
    chain.insert(seal(header.clone()), 0).unwrap();
    assert!(
        chain.template(key(1), 0).is_none(),
        "DPOS 5..=8 are not final"
    );
    let beyond = WitnessHeader {
        parent: chain.best(),
        height: 2,
        first_dpos_height: 5,
        dpos_hashes: (5..9).map(dpos_hash).collect(),
        ..header.clone()
    };
    assert_eq!(
        chain.insert(seal(beyond), 0),
        Err(WitnessError::NotYetFinalized {
            needed: 8,
            finalized: 4
        })
    );
    let mut chain = chain_with_finalized(params(), 100);
    let future = WitnessHeader {
        timestamp_ms: 60_000,
        ..header
    };
    assert_eq!(
        chain.insert(seal(future), 0),
        Err(WitnessError::TimestampInFuture {
            now: 0,
            got: 60_000
        })
    );
}

#[test]
fn uncles_are_cited_and_rewarded_once() {
    let params = params();
    let base = params.base_reward;
    let mut chain = chain_with_finalized(params, 1_000);
    let a1 = child_of(&chain, 1, 0);
    let a1_hash = chain.insert(a1.clone(), 0).unwrap().hash;
    let mut b1 = a1.clone();
    b1.miner = key(2);
    let b1_hash = chain.insert(seal(b1), 0).unwrap().hash;
    assert_eq!(chain.best(), a1_hash, "b1 lost the race");

    // The template of a2 cites b1 by itself.
    let a2 = child_of(&chain, 1, 1_000);
    assert_eq!(a2.uncles, vec![b1_hash]);
    let a2_hash = chain.insert(a2, 1_000).unwrap().hash;

    // A later witness cannot cite b1 again, nor an ancestor, nor a duplicate, nor an unknown block.
    let mut a3 = chain.template(key(1), 2_000).unwrap();
    assert!(a3.uncles.is_empty(), "b1 is cited already");
    a3.uncles = vec![b1_hash];
    assert_eq!(
        chain.insert(seal(a3.clone()), 2_000),
        Err(WitnessError::UncleAlreadyCited { index: 0 })
    );
    a3.uncles = vec![a1_hash];
    assert_eq!(
        chain.insert(seal(a3.clone()), 2_000),
        Err(WitnessError::UncleIsAncestor { index: 0 })
    );
    a3.uncles = vec![Hash32([5; 32])];
    assert_eq!(
        chain.insert(seal(a3.clone()), 2_000),
        Err(WitnessError::UnknownUncle {
            index: 0,
            hash: Hash32([5; 32])
        })
    );
    // A sibling of a2 is not an uncle of a2's child... until it is cited by one: a sibling of the parent is fine.
    a3.uncles = vec![];
    let a3_hash = chain.insert(seal(a3), 2_000).unwrap().hash;

    // Pay everything: b1's miner is paid once as an uncle, a2's miner once as nephew.
    let rewards = chain.mature_rewards(0);
    let uncle: Vec<_> = rewards
        .iter()
        .filter(|r| r.kind == RewardKind::Uncle)
        .collect();
    assert_eq!(uncle.len(), 1);
    assert_eq!(uncle[0].to, key(2));
    assert_eq!(uncle[0].witness, b1_hash);
    assert_eq!(uncle[0].amount, base * 25 / 100);
    let nephew: Vec<_> = rewards
        .iter()
        .filter(|r| r.kind == RewardKind::Nephew)
        .collect();
    assert_eq!(nephew.len(), 1);
    assert_eq!(nephew[0].to, key(1));
    assert_eq!(nephew[0].height, 2);
    let miners: Vec<_> = rewards
        .iter()
        .filter(|r| r.kind == RewardKind::Miner)
        .map(|r| r.witness)
        .collect();
    assert_eq!(miners, vec![a1_hash, a2_hash, a3_hash]);
    assert!(chain.mature_rewards(0).is_empty(), "paid once");
}

#[test]
fn an_uncle_too_deep_is_not_related() {
    let mut chain = chain_with_finalized(params(), 1_000);
    let a1 = child_of(&chain, 1, 0);
    chain.insert(a1.clone(), 0).unwrap();
    let mut b1 = a1;
    b1.miner = key(2);
    let b1_hash = chain.insert(seal(b1), 0).unwrap().hash;
    // uncle_depth_max is 3: a witness at height 5 may not cite a height-1 uncle.
    for t in 1..4u64 {
        let mut next = chain.template(key(1), t * 1_000).unwrap();
        next.uncles.clear();
        chain.insert(seal(next), t * 1_000).unwrap();
    }
    let mut late = chain.template(key(1), 9_000).unwrap();
    assert!(late.uncles.is_empty());
    late.uncles = vec![b1_hash];
    assert_eq!(
        chain.insert(seal(late), 9_000),
        Err(WitnessError::UncleNotRelated { index: 0 })
    );
}

#[test]
fn rewards_wait_for_confirmations_and_halve() {
    let params = WitnessParams {
        halving_interval: 2,
        ..params()
    };
    assert_eq!(params.base_reward_at(1), 1_000);
    assert_eq!(params.base_reward_at(2), 1_000);
    assert_eq!(params.base_reward_at(3), 500);
    let mut chain = chain_with_finalized(params, 1_000);
    for t in 0..3u64 {
        let header = child_of(&chain, 1, t * 1_000);
        chain.insert(header, t * 1_000).unwrap();
    }
    let paid = chain.mature_rewards(2);
    assert_eq!(paid.len(), 1, "only height 1 is two deep");
    assert_eq!(paid[0].height, 1);
    assert!(chain.mature_rewards(2).is_empty());
}

#[test]
fn mining_stops_when_asked() {
    let chain = chain_with_finalized(
        WitnessParams {
            initial_difficulty: u64::MAX,
            ..params()
        },
        100,
    );
    let header = chain.template(key(1), 0).unwrap();
    let stop = AtomicBool::new(true);
    let (found, tried) = mine(&header, 0..u64::MAX, &stop);
    assert_eq!(found, None);
    assert!(tried <= 2 * cas_consensus::witness::STOP_CHECK_NONCES);
}

#[test]
fn the_decoder_round_trips_and_keeps_its_bounds() {
    let chain = chain_with_finalized(params(), 100);
    let header = child_of(&chain, 1, 0);
    let bytes = encode_witness(&header);
    assert_eq!(decode_witness(&bytes), Ok(header.clone()));
    let huge = WitnessHeader {
        dpos_hashes: vec![Hash32::ZERO; WITNESS_SPAN_MAX + 1],
        ..header.clone()
    };
    assert!(matches!(
        decode_witness(&encode_witness(&huge)),
        Err(WitnessDecodeError::TooMany { .. })
    ));
    let empty = WitnessHeader {
        dpos_hashes: vec![],
        ..header.clone()
    };
    assert_eq!(
        decode_witness(&encode_witness(&empty)),
        Err(WitnessDecodeError::Empty)
    );
    let uncles = WitnessHeader {
        uncles: vec![GENESIS_WITNESS; 3],
        ..header
    };
    assert!(matches!(
        decode_witness(&encode_witness(&uncles)),
        Err(WitnessDecodeError::TooMany { .. })
    ));
}

proptest! {
    #[test]
    fn mutated_witness_bytes_never_panic(flips in proptest::collection::vec((0usize..4096, any::<u8>()), 1..8)) {
        let chain = chain_with_finalized(params(), 100);
        let header = chain.template(key(1), 0).unwrap();
        let mut bytes = encode_witness(&header).to_vec();
        for (at, value) in flips {
            let len = bytes.len();
            bytes[at % len] ^= value;
        }
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        aligned.extend_from_slice(&bytes);
        let _ = decode_witness(&aligned);
    }
}

/// A side witness whose retarget window reaches below what the chain still keeps is refused as too deep (it once
/// panicked on the missing ancestor; carried into the ledger's witness order, that would stop every executor).
#[test]
fn a_retarget_window_below_the_kept_depth_is_refused_not_a_panic() {
    let params = params(); // retarget window 8
    let limits = WitnessLimits {
        finalized_kept: 100_000,
        depth_kept: 10,
    };
    let mut chain = WitnessChain::new(params.clone(), limits);
    for height in 1..=400 {
        chain.add_finalized(height, dpos_hash(height));
    }
    let mut now = 0;
    let mut by_height = Vec::new();
    for _ in 0..30 {
        now += params.target_interval_ms;
        let header = child_of(&chain, 1, now);
        by_height.push(header.clone());
        chain.insert(header, now).expect("valid");
    }
    assert_eq!(chain.best_height(), 30);
    // A sibling of height 25 (a window start: 1 + 3 * 8) on the kept block 24; its window reaches back to 16,
    // below the kept floor of 20.
    let parent = &by_height[23];
    let mut side = WitnessHeader {
        parent: parent.hash(),
        height: 25,
        first_dpos_height: parent.last_dpos_height() + 1,
        dpos_hashes: (0..u64::from(params.span))
            .map(|i| dpos_hash(parent.last_dpos_height() + 1 + i))
            .collect(),
        uncles: vec![],
        timestamp_ms: now,
        difficulty: 1,
        miner: key(9),
        nonce: 0,
    };
    side = seal(side);
    assert_eq!(
        chain.insert(side, now),
        Err(WitnessError::TooDeep {
            height: 25,
            best: 30
        })
    );
}
