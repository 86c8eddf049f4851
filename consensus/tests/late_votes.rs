//! Late votes join the QC a leader carries: a QC names every member whose vote arrived before the next proposal left,
//! not only the first to reach a quorum (the ledger pays the signers of the QC each block carries, and punishment
//! will judge absence by them). A forged late vote is refused and changes nothing.

use cas_consensus::bft::{Bft, BftConfig, Event, Recovered};
use cas_consensus::committee::{Committee, MemberIndex};
use cas_consensus::messages::{vote_digest, Block, Message, QuorumCert, Vote};
use cas_consensus::Action;
use cas_engine::Keypair;

const NOW_MS: u64 = 10_000;

fn keypair(member: MemberIndex) -> Keypair {
    Keypair::from_seed(&[member as u8 + 1; 32])
}

fn committee() -> Committee {
    Committee::new((0..4).map(|i| (keypair(i).public(), 1)).collect()).unwrap()
}

fn vote(block: &Block, signer: MemberIndex, by: MemberIndex) -> Vote {
    let hash = block.hash();
    let digest = vote_digest(0, block.round, &hash, block.height);
    Vote {
        round: block.round,
        block: hash,
        height: block.height,
        signer,
        signature: keypair(by).sign(&digest.0),
    }
}

fn proposal(actions: &[Action]) -> Option<Block> {
    actions.iter().find_map(|action| match action {
        Action::Broadcast(Message::Proposal(block)) => Some(block.clone()),
        _ => None,
    })
}

#[test]
fn a_vote_after_the_quorum_joins_the_qc_the_next_block_carries() {
    let committee = committee();
    let leader = committee.leader(2);
    let config = BftConfig {
        // The leader of round 2 waits for payload before proposing an empty block: the late vote comes meanwhile.
        empty_block_wait_ms: 50,
        ..BftConfig::default()
    };
    let (mut bft, _) = Bft::new(
        committee.clone(),
        leader,
        keypair(leader),
        config,
        Recovered::default(),
        NOW_MS,
    );
    let author = committee.leader(1);
    let first = Block::new_signed(
        0,
        &keypair(author),
        author,
        1,
        1,
        QuorumCert::genesis(),
        None,
        NOW_MS,
        Vec::new(),
        Vec::new(),
    );
    let mut actions = bft.handle(Event::Message {
        from: author,
        message: Message::Proposal(first.clone()),
    });
    let others: Vec<MemberIndex> = (0..4).filter(|m| *m != leader).collect();
    // The leader's own vote and two others': a quorum, the QC forms.
    for &m in &others[..2] {
        actions.extend(bft.handle(Event::Message {
            from: m,
            message: Message::Vote(vote(&first, m, m)),
        }));
    }
    assert!(
        proposal(&actions).is_none(),
        "no payload yet: the leader waits"
    );
    let last = others[2];
    // A forged late vote (signed by someone else) is refused and joins nothing.
    bft.handle(Event::Message {
        from: last,
        message: Message::Vote(vote(&first, last, others[0])),
    });
    assert_eq!(bft.stats.late_votes, 0);
    bft.handle(Event::Message {
        from: last,
        message: Message::Vote(vote(&first, last, last)),
    });
    assert_eq!(bft.stats.late_votes, 1);
    let proposed = proposal(&bft.handle(Event::Tick {
        now_ms: NOW_MS + 100,
    }))
    .expect("the empty block after the wait");
    let mut signers: Vec<MemberIndex> = proposed.qc.signatures.iter().map(|s| s.signer).collect();
    signers.sort();
    assert_eq!(
        signers,
        vec![0, 1, 2, 3],
        "every member's vote is in the QC"
    );
    assert!(cas_consensus::messages::verify_qc(&proposed.qc, &committee, 0).is_ok());
}
