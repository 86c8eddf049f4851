//! Committee hand-over at an epoch's last height ([`cas_consensus::sim::epochs`]): seeded campaigns under loss
//! and reordering, a crash and restart at a boundary, and a 2/2 split at a boundary (a member leaves and one joins
//! at every boundary), and what one instance does with blocks of another epoch, over another base, or with payload
//! above its last height. More seeds: `cargo run --release -p cas-consensus --example epochs -- --seeds 1000`.

use cas_consensus::bft::{Base, Bft, Event, Recovered};
use cas_consensus::messages::{AvailabilityCert, Block, Message, PackageSize, QuorumCert};
use cas_consensus::sim::epochs::{
    committee_of, epoch_config, members_of, run_epochs, EpochFault, EPOCH_BLOCKS,
};
use cas_consensus::Action;
use cas_engine::fixtures::{key, COMMITTEE_KEYS};
use cas_engine::Hash32;

const E: u64 = EPOCH_BLOCKS;

/// Runs `seeds`; fails on the first with a problem. Returns in how many some epoch's last height was made final
/// through tail blocks (the 2-chain rule over a payload-free block above it) rather than by commit votes alone.
fn campaign(fault: EpochFault, seeds: std::ops::Range<u64>) -> usize {
    let mut through_tail = 0;
    for seed in seeds {
        let report = run_epochs(seed, fault);
        let problems = report.problems();
        assert!(
            problems.is_empty(),
            "seed {seed} ({fault:?}): {} problems, the first: {:?}",
            problems.len(),
            &problems[..problems.len().min(5)]
        );
        through_tail += report.ended_through_tail as usize;
    }
    through_tail
}

#[test]
fn hand_over_with_loss_and_reordering() {
    let through_tail = campaign(EpochFault::None, 0..40);
    eprintln!("{through_tail} of 40 runs made a last height final through tail blocks");
}

#[test]
fn hand_over_with_a_crash_at_the_boundary() {
    let through_tail = campaign(EpochFault::CrashAtBoundary, 100..140);
    assert!(through_tail > 0, "the tail path was never taken");
    eprintln!("{through_tail} of 40 runs made a last height final through tail blocks");
}

#[test]
fn hand_over_with_a_split_at_the_boundary() {
    let through_tail = campaign(EpochFault::SplitAtBoundary, 200..240);
    eprintln!("{through_tail} of 40 runs made a last height final through tail blocks");
}

/// What one member of epoch 1 (at `base`) does with a round-1 proposal: the votes it sends, and the blocks it
/// refused for their epoch or for payload above the last height.
fn answer_to(base: Base, block: Block) -> (usize, u64) {
    let committee = committee_of(1);
    let voter = (committee.leader(1) + 1) % 4;
    let (mut bft, _) = Bft::new(
        committee,
        voter,
        key(COMMITTEE_KEYS, members_of(1)[voter as usize] as u32),
        epoch_config(1),
        Recovered::at_base(base),
        base.timestamp_ms,
    );
    let actions = bft.handle(Event::Message {
        from: block.author,
        message: Message::Proposal(block),
    });
    let votes = actions
        .iter()
        .filter(|a| matches!(a, Action::Broadcast(Message::Vote(_))))
        .count();
    (votes, bft.stats.epoch_refused)
}

fn proposal(epoch: u64, qc: QuorumCert, payload: Vec<AvailabilityCert>) -> Block {
    let leader = committee_of(1).leader(1);
    Block::new_signed(
        epoch,
        &key(COMMITTEE_KEYS, members_of(1)[leader as usize] as u32),
        leader,
        1,
        1,
        qc,
        None,
        100,
        payload,
        Vec::new(),
    )
}

/// The next committee here is keys 1..=4 of the pool; in this test the block of "epoch 0" is signed by the same
/// key at the same index, as when a committee is re-elected unchanged: only the epoch inside the hash tells them
/// apart.
#[test]
fn an_instance_votes_only_for_its_epoch_over_its_own_base() {
    let base = Base {
        height: E,
        hash: Hash32([7; 32]),
        timestamp_ms: 50,
    };
    assert_eq!(answer_to(base, proposal(1, base.qc(), Vec::new())), (1, 0));
    assert_eq!(
        answer_to(base, proposal(0, base.qc(), Vec::new())),
        (0, 1),
        "a block of another epoch"
    );
    let elsewhere = QuorumCert::base(E, Hash32([8; 32]));
    assert_eq!(
        answer_to(base, proposal(1, elsewhere, Vec::new())).0,
        0,
        "a block over another base"
    );
}

#[test]
fn above_the_last_height_only_payload_free_blocks() {
    // An instance whose base is its epoch's last height already: every block it sees is a tail block.
    let base = Base {
        height: 2 * E,
        hash: Hash32([7; 32]),
        timestamp_ms: 50,
    };
    assert_eq!(answer_to(base, proposal(1, base.qc(), Vec::new())), (1, 0));
    let cert = AvailabilityCert {
        package: Hash32([3; 32]),
        creator: 0,
        sequence: 0,
        size: PackageSize { txs: 1, bytes: 100 },
        acks: Vec::new(),
    };
    assert_eq!(
        answer_to(base, proposal(1, base.qc(), vec![cert])),
        (0, 1),
        "a tail block with payload"
    );
}

/// A package certificate signs its epoch: the same acks that certify a package in one epoch certify nothing in the
/// next, even from the same keys.
#[test]
fn a_package_certificate_counts_in_its_own_epoch_only() {
    use cas_consensus::messages::{ack_digest, verify_availability, AckSignature};
    let committee = committee_of(1);
    let package = Hash32([4; 32]);
    let size = PackageSize { txs: 2, bytes: 300 };
    let cert = AvailabilityCert {
        package,
        creator: 0,
        sequence: 0,
        size,
        acks: (0..3u16)
            .map(|signer| AckSignature {
                signer,
                checked: true,
                signature: key(COMMITTEE_KEYS, members_of(1)[signer as usize] as u32)
                    .sign(&ack_digest(1, &package, size, true).0),
            })
            .collect(),
    };
    assert!(verify_availability(&cert, &committee, 1).is_ok());
    assert!(verify_availability(&cert, &committee, 2).is_err());
}

/// A QC signed in one epoch certifies nothing in the next, even when the committee is the same keys at the same
/// indexes: the votes sign their epoch.
#[test]
fn a_quorum_certificate_counts_in_its_own_epoch_only() {
    use cas_consensus::messages::{vote_digest, SignerSignature};
    let base = Base {
        height: E,
        hash: Hash32([7; 32]),
        timestamp_ms: 50,
    };
    let certified = Hash32([9; 32]);
    let qc_signed_in = |epoch: u64| QuorumCert {
        round: 3,
        block: certified,
        height: E + 1,
        signatures: (0..3u16)
            .map(|signer| SignerSignature {
                signer,
                signature: key(COMMITTEE_KEYS, members_of(1)[signer as usize] as u32)
                    .sign(&vote_digest(epoch, 3, &certified, E + 1).0),
            })
            .collect(),
    };
    let committee = committee_of(1);
    let leader = committee.leader(4);
    let block_over = |qc: QuorumCert| {
        Block::new_signed(
            1,
            &key(COMMITTEE_KEYS, members_of(1)[leader as usize] as u32),
            leader,
            4,
            1,
            qc,
            None,
            100,
            Vec::new(),
            Vec::new(),
        )
    };
    assert_eq!(answer_to(base, block_over(qc_signed_in(1))).0, 1);
    assert_eq!(
        answer_to(base, block_over(qc_signed_in(0))).0,
        0,
        "a QC of epoch 0"
    );
}

/// A member that crashed between committing its epoch's last height and starting the next instance says the epoch
/// ended again when it restarts from its disk.
#[test]
fn a_restart_at_the_last_height_ends_the_epoch_again() {
    let base = Base {
        height: E,
        hash: Hash32([7; 32]),
        timestamp_ms: 50,
    };
    // Epoch 1's last height is 2E; here the member's disk holds that block as committed.
    let last = Block::new_signed(
        1,
        &key(COMMITTEE_KEYS, members_of(1)[1] as u32),
        1,
        9,
        1,
        QuorumCert::base(2 * E - 1, Hash32([5; 32])),
        None,
        777,
        Vec::new(),
        Vec::new(),
    );
    let hash = last.hash();
    let recovered = Recovered {
        blocks: vec![last],
        committed: Some((2 * E, hash)),
        ..Recovered::at_base(base)
    };
    let (bft, actions) = Bft::new(
        committee_of(1),
        2,
        key(COMMITTEE_KEYS, members_of(1)[2] as u32),
        epoch_config(1),
        recovered,
        1_000,
    );
    assert!(bft.epoch_ended());
    let ends: Vec<&Base> = actions
        .iter()
        .filter_map(|a| match a {
            Action::EpochEnd(base) => Some(base),
            _ => None,
        })
        .collect();
    assert_eq!(
        ends,
        [&Base {
            height: 2 * E,
            hash,
            timestamp_ms: 777
        }]
    );
}
