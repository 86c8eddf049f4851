//! A member that installed a snapshot (`Bft::install_base`) continues from its height: it never votes for a block
//! at or below it, while a member without one votes for the same proposal.

use cas_consensus::bft::{Bft, BftConfig, Event, Recovered};
use cas_consensus::committee::Committee;
use cas_consensus::messages::{Block, Message, QuorumCert};
use cas_consensus::Action;
use cas_engine::fixtures::{key, COMMITTEE_KEYS};
use cas_engine::Hash32;

fn committee() -> Committee {
    Committee::new(
        (0..4)
            .map(|i| (key(COMMITTEE_KEYS, i).public(), 100))
            .collect(),
    )
    .unwrap()
}

fn member(index: u16) -> Bft {
    let (bft, _) = Bft::new(
        committee(),
        index,
        key(COMMITTEE_KEYS, u32::from(index)),
        BftConfig::default(),
        Recovered::default(),
        0,
    );
    bft
}

fn votes(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Broadcast(Message::Vote(_))))
        .count()
}

#[test]
fn no_vote_at_or_below_an_installed_snapshot() {
    let committee = committee();
    let leader = committee.leader(1);
    let proposal = Block::new_signed(
        0,
        &key(COMMITTEE_KEYS, u32::from(leader)),
        leader,
        1,
        1,
        QuorumCert::genesis(),
        None,
        5,
        Vec::new(),
        Vec::new(),
    );
    let voter = (leader + 1) % 4;
    // Without a snapshot, the round-1 proposal at height 1 gets this member's vote.
    let mut plain = member(voter);
    let actions = plain.handle(Event::Message {
        from: leader,
        message: Message::Proposal(proposal.clone()),
    });
    assert_eq!(votes(&actions), 1);

    // After installing a snapshot at height 5, the same proposal (height 1) gets none.
    let mut installed = member(voter);
    installed.install_base(5, Hash32([9; 32]));
    assert_eq!(installed.committed_height(), 5);
    let actions = installed.handle(Event::Message {
        from: leader,
        message: Message::Proposal(proposal),
    });
    assert_eq!(votes(&actions), 0);
}
