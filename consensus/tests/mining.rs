//! The standalone miner's protocol: requests and answers round-trip through their validating decoders; oversize
//! bytes, a witness past its bounds and an overlong reason are refused with their typed error; mutated bytes never
//! panic.

use cas_consensus::mining::{
    MiningAnswer, MiningDecodeError, MiningRequest, Verdict, MINING_BYTES_MAX,
    MINING_REASON_BYTES_MAX,
};
use cas_consensus::witness::{WitnessDecodeError, WitnessHeader, WITNESS_SPAN_MAX};
use cas_engine::{Hash32, PublicKey};
use proptest::prelude::*;

fn header(hashes: usize) -> WitnessHeader {
    WitnessHeader {
        parent: Hash32([1; 32]),
        height: 3,
        first_dpos_height: 9,
        dpos_hashes: vec![Hash32([2; 32]); hashes],
        uncles: vec![Hash32([3; 32])],
        timestamp_ms: 11,
        difficulty: 16,
        miner: PublicKey([4; 32]),
        nonce: 5,
    }
}

fn requests() -> Vec<MiningRequest> {
    vec![
        MiningRequest::Template {
            miner: PublicKey([7; 32]),
        },
        MiningRequest::Submit(header(8)),
    ]
}

fn answers() -> Vec<MiningAnswer> {
    vec![
        MiningAnswer::Template(Some(header(8))),
        MiningAnswer::Template(None),
        MiningAnswer::Submitted {
            hash: Hash32([8; 32]),
            verdict: Verdict::Accepted,
        },
        MiningAnswer::refused(Hash32([9; 32]), "x".repeat(MINING_REASON_BYTES_MAX * 2)),
    ]
}

#[test]
fn requests_and_answers_round_trip() {
    for request in requests() {
        assert_eq!(MiningRequest::decode(&request.encode()).unwrap(), request);
    }
    for answer in answers() {
        assert_eq!(MiningAnswer::decode(&answer.encode()).unwrap(), answer);
    }
    let MiningAnswer::Submitted {
        verdict: Verdict::Refused { reason },
        ..
    } = &answers()[3]
    else {
        unreachable!()
    };
    assert_eq!(reason.len(), MINING_REASON_BYTES_MAX, "cut to the bound");
}

#[test]
fn what_breaks_a_bound_is_refused_with_its_reason() {
    assert!(matches!(
        MiningRequest::decode(&vec![0; MINING_BYTES_MAX + 1]),
        Err(MiningDecodeError::TooLarge { .. })
    ));
    let unbounded = MiningRequest::Submit(header(WITNESS_SPAN_MAX + 1));
    assert!(matches!(
        MiningRequest::decode(&unbounded.encode()),
        Err(MiningDecodeError::Witness(
            WitnessDecodeError::TooMany { .. }
        ))
    ));
    let empty = MiningAnswer::Template(Some(header(0)));
    assert_eq!(
        MiningAnswer::decode(&empty.encode()),
        Err(MiningDecodeError::Witness(WitnessDecodeError::Empty))
    );
    let long = MiningAnswer::Submitted {
        hash: Hash32([1; 32]),
        verdict: Verdict::Refused {
            reason: "y".repeat(MINING_REASON_BYTES_MAX + 1),
        },
    };
    assert_eq!(
        MiningAnswer::decode(&long.encode()),
        Err(MiningDecodeError::ReasonTooLong {
            len: MINING_REASON_BYTES_MAX + 1,
            max: MINING_REASON_BYTES_MAX
        })
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn mutated_bytes_never_panic(which in 0usize..6, at in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let mut bytes = if which < 2 { requests()[which].encode() } else { answers()[which - 2].encode() };
        let at = at.index(bytes.len());
        bytes[at] ^= flip;
        if let Ok(request) = MiningRequest::decode(&bytes) {
            prop_assert_eq!(MiningRequest::decode(&request.encode()).unwrap(), request);
        }
        if let Ok(answer) = MiningAnswer::decode(&bytes) {
            prop_assert_eq!(MiningAnswer::decode(&answer.encode()).unwrap(), answer);
        }
    }
}
