//! The consensus wire format: messages round-trip through the untrusted decoder, and random, mutated or oversize
//! bytes are refused with a typed error, never a panic.

use cas_consensus::messages::{
    decode_message, encode_message, Block, Message, MessageDecodeError, Package, QuorumCert,
    SnapshotChunk, SnapshotChunkRequest, SnapshotInfo, Vote, BLOCK_WITNESSES_MAX,
    MESSAGE_BYTES_MAX, SNAPSHOT_CHUNK_BYTES_MAX,
};
use cas_consensus::witness::{WitnessDecodeError, WitnessHeader, WITNESS_SPAN_MAX};
use cas_engine::fixtures::{funded_genesis, key, transfer, ACCOUNT_KEYS, COMMITTEE_KEYS};
use cas_engine::genesis::genesis_outputs;
use cas_engine::{Hash32, PublicKey, Signature};
use proptest::prelude::*;

fn samples() -> Vec<Message> {
    let leader = key(COMMITTEE_KEYS, 1);
    let block = Block::new_signed(
        0,
        &leader,
        1,
        1,
        1,
        QuorumCert::genesis(),
        None,
        5,
        Vec::new(),
        vec![witness(16)],
    );
    let genesis = funded_genesis(1, 4, 2, 1, 100);
    let coins = genesis_outputs(&genesis.txs);
    let tx = transfer(
        1,
        &key(ACCOUNT_KEYS, 0),
        &coins[..1],
        &key(ACCOUNT_KEYS, 1),
        10,
        1,
    );
    vec![
        Message::Proposal(block.clone()),
        Message::Vote(Vote {
            round: 1,
            block: block.hash(),
            height: 1,
            signer: 2,
            signature: Signature([3; 64]),
        }),
        Message::BlockRequest(Hash32([4; 32])),
        Message::Package(Package {
            creator: 0,
            sequence: 9,
            txs: vec![tx],
        }),
        Message::Witness(witness(16)),
        Message::SnapshotInfoRequest,
        Message::SnapshotInfo(SnapshotInfo {
            height: 40,
            ledger_hash: Hash32([5; 32]),
            commitment: Hash32([6; 32]),
            consensus_hash: Hash32([7; 32]),
            entries: 9_000,
            witness_state: Hash32([8; 32]),
            witness_state_bytes: 70_000,
        }),
        Message::SnapshotChunkRequest(SnapshotChunkRequest {
            height: 40,
            index: 2,
        }),
        Message::SnapshotChunk(SnapshotChunk {
            height: 40,
            index: 2,
            entries: vec![8; 117 * 3],
        }),
    ]
}

#[test]
fn a_snapshot_chunk_past_its_bound_is_refused() {
    let chunk = |len| {
        Message::SnapshotChunk(SnapshotChunk {
            height: 1,
            index: 0,
            entries: vec![0; len],
        })
    };
    assert!(decode_message(&encode_message(&chunk(SNAPSHOT_CHUNK_BYTES_MAX))).is_ok());
    assert_eq!(
        decode_message(&encode_message(&chunk(SNAPSHOT_CHUNK_BYTES_MAX + 1))),
        Err(MessageDecodeError::TooMany {
            what: "snapshot chunk bytes",
            count: SNAPSHOT_CHUNK_BYTES_MAX + 1,
            max: SNAPSHOT_CHUNK_BYTES_MAX,
        })
    );
}

fn witness(hashes: usize) -> WitnessHeader {
    WitnessHeader {
        parent: Hash32([1; 32]),
        height: 2,
        first_dpos_height: 17,
        dpos_hashes: vec![Hash32([2; 32]); hashes],
        uncles: vec![Hash32([3; 32])],
        timestamp_ms: 9,
        difficulty: 4,
        miner: PublicKey([5; 32]),
        nonce: 6,
    }
}

#[test]
fn a_witness_past_its_bounds_is_refused_by_the_message_decoder() {
    let message = Message::Witness(witness(WITNESS_SPAN_MAX + 1));
    assert!(matches!(
        decode_message(&encode_message(&message)),
        Err(MessageDecodeError::Witness(
            WitnessDecodeError::TooMany { .. }
        ))
    ));
    let empty = Message::Witness(witness(0));
    assert_eq!(
        decode_message(&encode_message(&empty)),
        Err(MessageDecodeError::Witness(WitnessDecodeError::Empty))
    );
}

#[test]
fn carried_witnesses_are_bounded_by_the_decoder_and_covered_by_the_block_hash() {
    let leader = key(COMMITTEE_KEYS, 1);
    let carrying = |witnesses: Vec<WitnessHeader>| {
        Block::new_signed(
            0,
            &leader,
            1,
            1,
            1,
            QuorumCert::genesis(),
            None,
            5,
            Vec::new(),
            witnesses,
        )
    };
    let too_many = carrying(vec![witness(4); BLOCK_WITNESSES_MAX + 1]);
    assert!(matches!(
        decode_message(&encode_message(&Message::Proposal(too_many))),
        Err(MessageDecodeError::TooMany {
            what: "carried witnesses",
            ..
        })
    ));
    let unbounded = carrying(vec![witness(WITNESS_SPAN_MAX + 1)]);
    assert!(matches!(
        decode_message(&encode_message(&Message::BlockResponse(unbounded))),
        Err(MessageDecodeError::Witness(
            WitnessDecodeError::TooMany { .. }
        ))
    ));
    let block = carrying(vec![witness(4)]);
    let mut other = witness(4);
    other.nonce += 1;
    let mut swapped = block.clone();
    swapped.witnesses = vec![other];
    assert_ne!(
        block.hash(),
        swapped.hash(),
        "a carried witness is signed by the proposer"
    );
    assert_ne!(block.hash(), carrying(Vec::new()).hash());
}

#[test]
fn messages_round_trip() {
    for message in samples() {
        assert_eq!(decode_message(&encode_message(&message)).unwrap(), message);
    }
}

#[test]
fn oversize_is_refused_before_parsing() {
    let bytes = vec![0u8; MESSAGE_BYTES_MAX + 1];
    assert!(matches!(
        decode_message(&bytes),
        Err(MessageDecodeError::TooLarge { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1_024)) {
        let _ = decode_message(&bytes);
    }

    #[test]
    fn mutated_messages_never_panic(which in 0usize..5, at in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let mut bytes = encode_message(&samples()[which]).to_vec();
        let at = at.index(bytes.len());
        bytes[at] ^= flip;
        if let Ok(message) = decode_message(&bytes) {
            // Whatever is accepted re-encodes to something the decoder accepts again.
            prop_assert_eq!(decode_message(&encode_message(&message)).unwrap(), message);
        }
    }
}

/// Two votes of one member in one round, for two blocks, both signed by it: a proof; anything less is not.
#[test]
fn an_equivocation_proves_only_what_it_shows() {
    use cas_consensus::messages::{vote_digest, Equivocation, Vote};
    use cas_engine::fixtures::{key, COMMITTEE_KEYS};
    use cas_engine::Hash32;
    let committee = cas_consensus::committee::Committee::new(
        (0..4)
            .map(|i| (key(COMMITTEE_KEYS, i).public(), 100))
            .collect(),
    )
    .unwrap();
    let vote = |signer: u16, round: u64, block: u8, by: u32| {
        let block = Hash32([block; 32]);
        Vote {
            round,
            block,
            height: 3,
            signer,
            signature: key(COMMITTEE_KEYS, by).sign(&vote_digest(0, round, &block, 3).0),
        }
    };
    let proof = |first, second| Equivocation { first, second }.proves(&committee, 0);
    assert!(proof(vote(1, 5, 1, 1), vote(1, 5, 2, 1)));
    assert!(
        !proof(vote(1, 5, 1, 1), vote(1, 5, 1, 1)),
        "the same block twice"
    );
    assert!(!proof(vote(1, 5, 1, 1), vote(1, 6, 2, 1)), "two rounds");
    assert!(!proof(vote(1, 5, 1, 1), vote(2, 5, 2, 2)), "two members");
    assert!(
        !proof(vote(1, 5, 1, 1), vote(1, 5, 2, 2)),
        "a signature that is not its own"
    );
}
