//! Protocol versions at the BFT's edge (issue 18, rolling upgrade): a block must carry the version the member's
//! schedule gives its height, and version 2's timestamp rule decides votes and what a leader stamps. The committee
//! crossing a switch under faults is in tests/sim.rs.

use cas_consensus::bft::{Bft, BftConfig, Event, Recovered};
use cas_consensus::committee::{Committee, MemberIndex};
use cas_consensus::messages::{vote_digest, Block, Message, QuorumCert, SignerSignature, Vote};
use cas_consensus::protocol::{ProtocolSchedule, ProtocolUpgrade, TIMESTAMP_AHEAD_MAX_MS};
use cas_consensus::Action;
use cas_engine::Keypair;

/// The voters' clock.
const NOW_MS: u64 = 10_000;
/// The timestamp of the block at height 1, which every case builds on.
const PARENT_MS: u64 = 9_000;

fn keypair(member: MemberIndex) -> Keypair {
    Keypair::from_seed(&[member as u8 + 1; 32])
}

fn committee() -> Committee {
    Committee::new((0..4).map(|i| (keypair(i).public(), 1)).collect()).unwrap()
}

/// Version 2 from height 2, or none when `upgraded` is false (a node that was not upgraded).
fn config(upgraded: bool) -> BftConfig {
    let upgrades = if upgraded {
        vec![ProtocolUpgrade {
            version: 2,
            height: 2,
        }]
    } else {
        Vec::new()
    };
    BftConfig {
        empty_block_wait_ms: 0,
        protocol: ProtocolSchedule::new(upgrades).unwrap(),
        ..BftConfig::default()
    }
}

fn member(me: MemberIndex, upgraded: bool, now_ms: u64) -> Bft {
    Bft::new(
        committee(),
        me,
        keypair(me),
        config(upgraded),
        Recovered::default(),
        now_ms,
    )
    .0
}

/// A block of `round` (led by member `round % 4`) on `qc`.
fn block(round: u64, protocol: u32, qc: QuorumCert, timestamp_ms: u64) -> Block {
    let author = committee().leader(round);
    Block::new_signed(
        0,
        &keypair(author),
        author,
        round,
        protocol,
        qc,
        None,
        timestamp_ms,
        Vec::new(),
        Vec::new(),
    )
}

fn qc_for(block: &Block) -> QuorumCert {
    let hash = block.hash();
    let digest = vote_digest(0, block.round, &hash, block.height);
    QuorumCert {
        round: block.round,
        block: hash,
        height: block.height,
        signatures: (0..3)
            .map(|signer| SignerSignature {
                signer,
                signature: keypair(signer).sign(&digest.0),
            })
            .collect(),
    }
}

fn deliver(bft: &mut Bft, block: Block) -> Vec<Action> {
    bft.handle(Event::Message {
        from: block.author,
        message: Message::Proposal(block),
    })
}

fn voted(actions: &[Action]) -> bool {
    actions.iter().any(|action| {
        matches!(
            action,
            Action::Send {
                message: Message::Vote(_),
                ..
            } | Action::Broadcast(Message::Vote(_))
        )
    })
}

/// Member 0 holding the block at height 1 (protocol 1, stamped [`PARENT_MS`]), which it voted for.
fn past_the_first_block(upgraded: bool) -> (Bft, QuorumCert) {
    let mut bft = member(0, upgraded, NOW_MS);
    let first = block(1, 1, QuorumCert::genesis(), PARENT_MS);
    assert!(voted(&deliver(&mut bft, first.clone())));
    (bft, qc_for(&first))
}

#[test]
fn a_block_of_another_version_than_its_height_has_is_refused() {
    // Version 2 at height 1, where the schedule still says 1.
    let mut bft = member(0, true, NOW_MS);
    let early = block(1, 2, QuorumCert::genesis(), PARENT_MS);
    assert!(!voted(&deliver(&mut bft, early)));
    assert_eq!(bft.stats.protocol_refused, 1);
    // Version 1 at height 2, past the switch: an old leader's block.
    let (mut bft, qc) = past_the_first_block(true);
    assert!(!voted(&deliver(&mut bft, block(2, 1, qc, NOW_MS))));
    assert_eq!(bft.stats.protocol_refused, 1);
    // A node that was not upgraded refuses the new version's first block, and takes it before the switch.
    let (mut old, qc) = past_the_first_block(false);
    assert!(!voted(&deliver(&mut old, block(2, 2, qc.clone(), NOW_MS))));
    assert_eq!(old.stats.protocol_refused, 1);
    let (mut old, _) = past_the_first_block(false);
    assert!(voted(&deliver(&mut old, block(2, 1, qc, NOW_MS))));
}

#[test]
fn under_version_2_a_member_votes_only_for_timestamps_between_its_parents_and_its_clock_ahead() {
    for (timestamp_ms, votes) in [
        (PARENT_MS - 1, false),
        (PARENT_MS, true),
        (NOW_MS, true),
        (NOW_MS + TIMESTAMP_AHEAD_MAX_MS, true),
        (NOW_MS + TIMESTAMP_AHEAD_MAX_MS + 1, false),
    ] {
        let (mut bft, qc) = past_the_first_block(true);
        let actions = deliver(&mut bft, block(2, 2, qc, timestamp_ms));
        assert_eq!(voted(&actions), votes, "timestamp {timestamp_ms}");
        assert_eq!(bft.stats.timestamps_refused, u64::from(!votes));
        assert_eq!(bft.stats.refused, 0);
    }
    // Version 1 leaves timestamps alone: a block behind its parent gets the vote.
    let (mut old, qc) = past_the_first_block(false);
    assert!(voted(&deliver(&mut old, block(2, 1, qc, PARENT_MS - 1))));
}

#[test]
fn a_leader_whose_clock_is_behind_stamps_its_parents_timestamp_under_version_2() {
    for (upgraded, stamped) in [(true, PARENT_MS), (false, PARENT_MS - 4_000)] {
        // Member 2 leads round 2; its clock reads 4 s before the parent's timestamp.
        let mut leader = member(2, upgraded, PARENT_MS - 4_000);
        let first = block(1, 1, QuorumCert::genesis(), PARENT_MS);
        let mut actions = deliver(&mut leader, first.clone());
        // Votes for it come to the next leader, which forms the QC, enters round 2 and proposes at once.
        let digest = vote_digest(0, first.round, &first.hash(), first.height);
        for signer in [0, 3] {
            actions.extend(leader.handle(Event::Message {
                from: signer,
                message: Message::Vote(Vote {
                    round: first.round,
                    block: first.hash(),
                    height: first.height,
                    signer,
                    signature: keypair(signer).sign(&digest.0),
                }),
            }));
        }
        let proposal = actions
            .iter()
            .find_map(|action| match action {
                Action::Broadcast(Message::Proposal(block)) if block.round == 2 => Some(block),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no proposal for round 2: {actions:?}"));
        assert_eq!(proposal.protocol, if upgraded { 2 } else { 1 });
        assert_eq!(proposal.timestamp_ms, stamped);
    }
}
