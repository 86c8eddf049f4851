//! What a Byzantine committee member can make another hold is bounded (issue 16 item 13): votes and timeouts are
//! taken only from their signers, one vote per signer and round, over a window of rounds; a leader's second block
//! for a round, or a block far ahead, is refused unless a certificate makes the member ask for it.

use cas_consensus::bft::{Bft, BftConfig, Event, Recovered, FUTURE_ROUNDS_MAX};
use cas_consensus::committee::{Committee, MemberIndex};
use cas_consensus::messages::{vote_digest, Block, Message, QuorumCert, Vote};
use cas_consensus::Action;
use cas_engine::{Hash32, Keypair};

const MEMBERS: usize = 4;

fn keypairs() -> Vec<Keypair> {
    (0..MEMBERS)
        .map(|i| Keypair::from_seed(&[i as u8 + 1; 32]))
        .collect()
}

fn committee() -> Committee {
    Committee::new(keypairs().iter().map(|k| (k.public(), 1)).collect()).unwrap()
}

fn member(me: MemberIndex) -> Bft {
    Bft::new(
        committee(),
        me,
        keypairs().swap_remove(me as usize),
        BftConfig::default(),
        Recovered::default(),
        0,
    )
    .0
}

fn vote(signer: MemberIndex, round: u64, block: Hash32) -> Vote {
    let digest = vote_digest(0, round, &block, 1);
    Vote {
        round,
        block,
        height: 1,
        signer,
        signature: keypairs()[signer as usize].sign(&digest.0),
    }
}

/// Before: a vote was held under whatever signer it named (its signature is checked only at a quorum), and one
/// member could make another hold a vote for every made-up block of every round in a 10,000-round window.
#[test]
fn votes_are_held_only_from_their_signer_and_once_per_round() {
    let mut bft = member(0);
    bft.handle(Event::Message {
        from: 1,
        message: Message::Vote(vote(2, 1, Hash32([1; 32]))),
    });
    assert_eq!(bft.stats.refused, 1, "a vote relayed by another member");
    for k in 0..1_000u32 {
        let mut block = [0u8; 32];
        block[..4].copy_from_slice(&k.to_le_bytes());
        bft.handle(Event::Message {
            from: 1,
            message: Message::Vote(vote(1, 1, Hash32(block))),
        });
    }
    assert_eq!(
        bft.stats.refused, 1_000,
        "only the first of a signer's votes in a round is held"
    );
}

fn proposal(round: u64, timestamp_ms: u64) -> (MemberIndex, Block) {
    let leader = committee().leader(round);
    let block = Block::new_signed(
        0,
        &keypairs()[leader as usize],
        leader,
        round,
        1,
        QuorumCert::genesis(),
        None,
        timestamp_ms,
        Vec::new(),
        Vec::new(),
    );
    (leader, block)
}

/// Before: every valid block a leader signed was held (and journaled), any number per round and any round ahead.
#[test]
fn a_leader_gets_one_unrequested_block_per_round_within_the_window() {
    let (leader, first) = proposal(1, 0);
    let me = (leader + 1) % MEMBERS as MemberIndex;
    let mut bft = member(me);
    let stored = |actions: &[Action]| actions.iter().any(|a| matches!(a, Action::StoreBlock(_)));
    let actions = bft.handle(Event::Message {
        from: leader,
        message: Message::Proposal(first),
    });
    assert!(stored(&actions));
    assert_eq!(bft.stats.refused, 0);
    for timestamp_ms in 1..50 {
        let (_, other) = proposal(1, timestamp_ms);
        let actions = bft.handle(Event::Message {
            from: leader,
            message: Message::BlockResponse(other),
        });
        assert!(!stored(&actions), "a second block for round 1 is held");
    }
    assert_eq!(bft.stats.refused, 49);
    let far = (bft.round() + FUTURE_ROUNDS_MAX + 1..)
        .find(|r| committee().leader(*r) == leader)
        .unwrap();
    let (_, ahead) = proposal(far, 0);
    let actions = bft.handle(Event::Message {
        from: leader,
        message: Message::Proposal(ahead),
    });
    assert!(!stored(&actions), "a block past the window is held");
    assert_eq!(bft.stats.refused, 50);
}

/// The kept-blocks window counts bytes by an estimate: it must be the encoded size, near enough.
#[test]
fn a_blocks_byte_estimate_is_its_encoded_size() {
    use cas_consensus::messages::{
        ack_digest, encode_message, AckSignature, AvailabilityCert, PackageSize,
    };
    let keys = keypairs();
    for certs in [0usize, 1, 10, 256] {
        let payload: Vec<AvailabilityCert> = (0..certs)
            .map(|k| {
                let package = Hash32(*blake3::hash(&k.to_le_bytes()).as_bytes());
                let size = PackageSize { txs: 5, bytes: 900 };
                let digest = ack_digest(0, &package, size, false);
                AvailabilityCert {
                    package,
                    creator: 1,
                    sequence: k as u64,
                    size,
                    acks: (0..3)
                        .map(|signer| AckSignature {
                            signer,
                            checked: false,
                            signature: keys[signer as usize].sign(&digest.0),
                        })
                        .collect(),
                }
            })
            .collect();
        let block = Block::new_signed(
            0,
            &keys[1],
            1,
            1,
            1,
            QuorumCert::genesis(),
            None,
            0,
            payload,
            Vec::new(),
        );
        let encoded = encode_message(&Message::Proposal(block.clone())).len();
        let estimate = block.encoded_bytes_estimate();
        assert!(
            estimate <= encoded + 64 && encoded <= estimate + 64,
            "{certs} certificates: estimate {estimate}, encoded {encoded}"
        );
    }
}
