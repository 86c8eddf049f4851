//! Witness headers in consensus blocks: a leader carries what its pool holds (lowest height first, within the
//! bound), and a voter refuses a proposal past the bound, repeating a header, or carrying one without its claimed
//! work.

use std::sync::atomic::AtomicBool;

use cas_consensus::bft::{Bft, BftConfig, Event, Recovered};
use cas_consensus::committee::Committee;
use cas_consensus::messages::{Block, Message, QuorumCert, BLOCK_WITNESSES_MAX};
use cas_consensus::witness::{mine, WitnessHeader};
use cas_consensus::Action;
use cas_engine::fixtures::{key, COMMITTEE_KEYS};
use cas_engine::{Hash32, PublicKey};

const MEMBERS: u32 = 4;

fn committee() -> Committee {
    Committee::new(
        (0..MEMBERS)
            .map(|i| (key(COMMITTEE_KEYS, i).public(), 1))
            .collect(),
    )
    .unwrap()
}

fn member(index: u16) -> Bft {
    let config = BftConfig {
        empty_block_wait_ms: 10,
        ..BftConfig::default()
    };
    Bft::new(
        committee(),
        index,
        key(COMMITTEE_KEYS, u32::from(index)),
        config,
        Recovered::default(),
        0,
    )
    .0
}

/// A header with real work (difficulty 2), distinct per `n`.
fn witness(n: u64, height: u64) -> WitnessHeader {
    let mut header = WitnessHeader {
        parent: Hash32([n as u8; 32]),
        height,
        first_dpos_height: 1,
        dpos_hashes: vec![Hash32([7; 32]); 4],
        uncles: Vec::new(),
        timestamp_ms: n,
        difficulty: 2,
        miner: PublicKey([1; 32]),
        nonce: 0,
    };
    header.nonce = mine(&header, 0..u64::MAX, &AtomicBool::new(false))
        .0
        .unwrap();
    header
}

fn proposals(actions: &[Action]) -> Vec<Block> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Broadcast(Message::Proposal(block)) => Some(block.clone()),
            _ => None,
        })
        .collect()
}

fn votes(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Broadcast(Message::Vote(_))))
        .count()
}

#[test]
fn a_leader_carries_pooled_witnesses_lowest_height_first_within_the_bound() {
    let committee = committee();
    let leader = committee.leader(1);
    let mut bft = member(leader);
    let pooled: Vec<WitnessHeader> = (0..BLOCK_WITNESSES_MAX as u64 + 3)
        .map(|n| witness(n, 20 - n))
        .collect();
    for header in &pooled {
        assert!(bft.add_witness(header.clone()));
    }
    let actions = bft.handle(Event::Tick { now_ms: 50 });
    let blocks = proposals(&actions);
    assert_eq!(blocks.len(), 1);
    let carried = &blocks[0].witnesses;
    assert_eq!(carried.len(), BLOCK_WITNESSES_MAX);
    let heights: Vec<u64> = carried.iter().map(|w| w.height).collect();
    let mut sorted = heights.clone();
    sorted.sort();
    assert_eq!(heights, sorted);
    assert_eq!(heights[0], 20 - (BLOCK_WITNESSES_MAX as u64 + 2));

    // A voter accepts it and votes.
    let voter = (0..MEMBERS as u16).find(|m| *m != leader).unwrap();
    let mut other = member(voter);
    let actions = other.handle(Event::Message {
        from: leader,
        message: Message::Proposal(blocks[0].clone()),
    });
    assert_eq!(votes(&actions), 1);
}

#[test]
fn a_voter_refuses_a_proposal_over_the_bound_or_with_a_forged_witness() {
    let committee = committee();
    let leader = committee.leader(1);
    let leader_key = key(COMMITTEE_KEYS, u32::from(leader));
    let voter = (0..MEMBERS as u16).find(|m| *m != leader).unwrap();
    let propose = |witnesses: Vec<WitnessHeader>| {
        Block::new_signed(
            0,
            &leader_key,
            leader,
            1,
            1,
            QuorumCert::genesis(),
            None,
            5,
            Vec::new(),
            witnesses,
        )
    };
    let mut forged = witness(1, 3);
    forged.difficulty = u64::MAX;
    let over: Vec<WitnessHeader> = (0..BLOCK_WITNESSES_MAX as u64 + 1)
        .map(|n| witness(n, 2))
        .collect();
    let twice = vec![witness(1, 2), witness(1, 2)];
    for (what, witnesses) in [
        ("over the bound", over),
        ("forged", vec![forged]),
        ("repeated", twice),
    ] {
        let mut bft = member(voter);
        let actions = bft.handle(Event::Message {
            from: leader,
            message: Message::Proposal(propose(witnesses)),
        });
        assert_eq!(votes(&actions), 0, "{what}");
        assert_eq!(bft.stats.refused, 1, "{what}");
    }
    let mut bft = member(voter);
    let actions = bft.handle(Event::Message {
        from: leader,
        message: Message::Proposal(propose(vec![witness(1, 2)])),
    });
    assert_eq!(votes(&actions), 1);
}
