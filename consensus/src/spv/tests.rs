use cas_engine::merkle;
use cas_engine::{Hash32, RejectCode, TxId};

use super::fixture::{committee_keys, payee, Fixture, CHAIN_ID, PAY_HEIGHT};
use super::payment::PaymentError;
use super::*;
use crate::messages::SignerSignature;

fn chain(fixture: &Fixture) -> HeaderChain {
    HeaderChain::new(&fixture.genesis, fixture.committee.clone()).unwrap()
}

/// Pushes heights `from..=to`, with the genesis committee's certificate on `to` only.
fn certify_up_to(chain: &mut HeaderChain, fixture: &Fixture, from: u64, to: u64) {
    for height in from..to {
        chain.push(fixture.header(height), None).unwrap();
    }
    let pushed = chain.push(fixture.header(to), Some(&fixture.cert(to)));
    assert_eq!(pushed, Ok(Pushed::Certified { from, to }));
}

#[test]
fn a_later_certificate_vouches_for_the_headers_below_it() {
    let fixture = Fixture::new(6);
    let mut chain = chain(&fixture);
    for height in 1..5 {
        assert_eq!(
            chain.push(fixture.header(height), None),
            Ok(Pushed::Held {
                pending: height as usize
            })
        );
    }
    assert_eq!((chain.tip(), chain.next_height()), (0, 5));
    assert_eq!(chain.header(1), None, "held, not certified");
    assert_eq!(
        chain.push(fixture.header(5), Some(&fixture.cert(5))),
        Ok(Pushed::Certified { from: 1, to: 5 })
    );
    assert_eq!((chain.tip(), chain.pending()), (5, 0));
    for height in 1..=5 {
        let held = chain.header(height).unwrap();
        assert_eq!(held.hash, fixture.header(height).hash());
        assert_eq!(held.own_cert.is_some(), height == 5);
    }
    // A header left without a certificate at the end stays pending, never certified.
    chain.push(fixture.header(6), None).unwrap();
    assert_eq!((chain.tip(), chain.pending()), (5, 1));
}

#[test]
fn a_header_that_does_not_link_is_refused_and_the_held_run_dropped() {
    let fixture = Fixture::new(3);
    let mut chain = chain(&fixture);
    chain.push(fixture.header(1), None).unwrap();
    let mut stray = fixture.header(2).clone();
    stray.parent = Hash32([9; 32]);
    assert!(matches!(
        chain.push(&stray, None),
        Err(SpvError::Link { height: 2, .. })
    ));
    assert_eq!((chain.tip(), chain.next_height()), (0, 1));
    assert!(matches!(
        chain.push(fixture.header(2), None),
        Err(SpvError::Height {
            found: 2,
            expected: 1
        })
    ));
    let mut other_chain = fixture.header(1).clone();
    other_chain.chain_id = CHAIN_ID + 1;
    assert!(matches!(
        chain.push(&other_chain, None),
        Err(SpvError::ChainId { .. })
    ));
    certify_up_to(&mut chain, &fixture, 1, 3);
}

#[test]
fn a_header_without_a_valid_certificate_is_not_certified() {
    let fixture = Fixture::new(4);
    let mut chain = chain(&fixture);
    certify_up_to(&mut chain, &fixture, 1, 2);
    // Signed by keys outside the committee.
    let (_, strangers) = committee_keys(10);
    let forged = Fixture::sign(fixture.statement(3, 0), &strangers);
    chain.push(fixture.header(3), None).unwrap();
    assert!(matches!(
        chain.push(
            fixture.header(4),
            Some(&Fixture::sign(fixture.statement(4, 0), &strangers))
        ),
        Err(SpvError::Certificate { height: 4, .. })
    ));
    assert_eq!((chain.tip(), chain.next_height()), (2, 3));
    assert!(matches!(
        chain.push(fixture.header(3), Some(&forged)),
        Err(SpvError::Certificate { height: 3, .. })
    ));
    // A good certificate, but over another header.
    chain.push(fixture.header(3), None).unwrap();
    assert!(matches!(
        chain.push(fixture.header(4), Some(&fixture.cert(3))),
        Err(SpvError::CertMismatch { height: 4, .. })
    ));
    // A statement changed after signing.
    let mut changed = fixture.cert(3);
    changed.statement.results_root.0[0] ^= 1;
    assert!(matches!(
        chain.push(fixture.header(3), Some(&changed)),
        Err(SpvError::Certificate { .. })
    ));
    // Too few signers.
    let mut short = fixture.cert(3);
    short.signatures.pop();
    assert!(matches!(
        chain.push(fixture.header(3), Some(&short)),
        Err(SpvError::Certificate { .. })
    ));
    assert_eq!(chain.tip(), 2);
    certify_up_to(&mut chain, &fixture, 3, 4);
}

#[test]
fn headers_held_without_a_certificate_are_bounded() {
    let fixture = Fixture::new(PENDING_HEADERS_MAX as u64 + 1);
    let mut chain = chain(&fixture);
    for height in 1..=PENDING_HEADERS_MAX as u64 {
        chain.push(fixture.header(height), None).unwrap();
    }
    let height = PENDING_HEADERS_MAX as u64 + 1;
    assert!(matches!(
        chain.push(fixture.header(height), None),
        Err(SpvError::TooManyPending { .. })
    ));
    assert_eq!((chain.tip(), chain.pending()), (0, 0));
}

/// The genesis committee's hand-over to the committee of keys 10..14 as epoch 1 from `first_height`.
fn handover_from(
    fixture: &Fixture,
    first_height: u64,
) -> (CommitteeHandover, Vec<cas_engine::Keypair>) {
    let (next, next_keys) = committee_keys(10);
    let mut handover = CommitteeHandover {
        chain_id: CHAIN_ID,
        epoch: 1,
        first_height,
        members: next_keys.iter().map(|k| (k.public(), 1)).collect(),
        signatures: Vec::new(),
    };
    assert_eq!(next.size(), 4);
    let digest = handover.digest();
    handover.signatures = (0..3)
        .map(|i| SignerSignature {
            signer: i as u16,
            signature: fixture.keys[i].sign(&digest.0),
        })
        .collect();
    (handover, next_keys)
}

#[test]
fn certificates_of_later_epochs_verify_only_through_the_hand_overs() {
    let fixture = Fixture::new(6);
    let mut chain = chain(&fixture);
    certify_up_to(&mut chain, &fixture, 1, 3);
    let (handover, next_keys) = handover_from(&fixture, 4);
    let next_cert = Fixture::sign(fixture.statement(5, 1), &next_keys);
    chain.push(fixture.header(4), None).unwrap();
    assert!(matches!(
        chain.push(fixture.header(5), Some(&next_cert)),
        Err(SpvError::Epoch {
            height: 5,
            source: EpochError::Unreached(1)
        })
    ));
    chain.follow(std::slice::from_ref(&handover)).unwrap();
    assert_eq!(chain.last_epoch(), 1);
    // The old committee no longer certifies the new epoch's heights.
    chain.push(fixture.header(4), None).unwrap();
    assert!(matches!(
        chain.push(fixture.header(5), Some(&fixture.cert(5))),
        Err(SpvError::Epoch {
            source: EpochError::Heights { .. },
            ..
        })
    ));
    chain.push(fixture.header(4), None).unwrap();
    assert_eq!(
        chain.push(fixture.header(5), Some(&next_cert)),
        Ok(Pushed::Certified { from: 4, to: 5 })
    );
    // Hand-overs already followed cannot be dropped, and new ones must fit the certificates held.
    assert_eq!(
        chain.follow(&[]),
        Err(SpvError::HandoversRewritten { position: 0 })
    );
    let mut fresh = HeaderChain::new(&fixture.genesis, fixture.committee.clone()).unwrap();
    certify_up_to(&mut fresh, &fixture, 1, 3);
    let (early, _) = handover_from(&fixture, 2);
    assert!(matches!(
        fresh.follow(&[early]),
        Err(SpvError::HandoverConflict { height: 3, .. })
    ));
    let mut forged = handover.clone();
    forged.members[0].1 = 9;
    assert!(matches!(
        fresh.follow(&[forged]),
        Err(SpvError::Handover(_))
    ));
    assert_eq!(fresh.last_epoch(), 0);
}

#[test]
fn a_payment_is_checked_against_the_certified_header_held() {
    let fixture = Fixture::new(4);
    let mut chain = chain(&fixture);
    assert!(matches!(
        chain.check_payment(&fixture.proof(PAY_HEIGHT, 0)),
        Err(PaymentError::UnknownHeight { height: 3, tip: 0 })
    ));
    certify_up_to(&mut chain, &fixture, 1, PAY_HEIGHT);
    let paid = chain.check_payment(&fixture.proof(PAY_HEIGHT, 0)).unwrap();
    let (_, results) = &fixture.blocks[&PAY_HEIGHT];
    assert_eq!((paid.tx, paid.height, paid.index), (results[0].0, 3, 0));
    assert_eq!(paid.rejection, None);
    let to_payee: u64 = paid.paying(&payee().public()).map(|(_, o)| o.amount).sum();
    assert_eq!(to_payee, 10);
    assert!(paid
        .created
        .iter()
        .all(|(outpoint, _)| outpoint.tx == paid.tx));
    // A rejected transaction is proved rejected, and created nothing.
    let rejected = chain.check_payment(&fixture.proof(PAY_HEIGHT, 1)).unwrap();
    assert_eq!(rejected.rejection, RejectCode::from_u16(13));
    assert!(rejected.created.is_empty());
}

#[test]
fn a_forged_proof_is_refused() {
    let fixture = Fixture::new(4);
    let mut chain = chain(&fixture);
    certify_up_to(&mut chain, &fixture, 1, 4);
    let good = fixture.proof(PAY_HEIGHT, 0);
    let mut path = good.clone();
    path.tx_path[0].sibling.0[0] ^= 1;
    assert_eq!(
        chain.check_payment(&path),
        Err(PaymentError::TxPath { height: 3 })
    );
    let mut verdict = good.clone();
    verdict.code = 13;
    assert_eq!(
        chain.check_payment(&verdict),
        Err(PaymentError::ResultsPath)
    );
    let mut place = good.clone();
    place.height = 2;
    assert!(matches!(
        chain.check_payment(&place),
        Err(PaymentError::TxPath { height: 2 })
    ));
    let mut bytes = good.clone();
    bytes.tx[40] ^= 1;
    assert!(matches!(
        chain.check_payment(&bytes),
        Err(PaymentError::Tx(_))
    ));
    // A transaction in a block of its own, with a certificate by strangers: its path leads to a root the held
    // header does not have, whatever the proof's certificate says.
    let (_, strangers) = committee_keys(10);
    let (txs, _) = &fixture.blocks[&PAY_HEIGHT];
    let lone: Vec<TxId> = vec![txs[0].tx_id()];
    let mut fake = good.clone();
    fake.tx_path = merkle::proof(&lone, 0).unwrap();
    let mut statement = fixture.statement(PAY_HEIGHT, 0);
    statement.block = Hash32([8; 32]);
    fake.cert = Some(Fixture::sign(statement, &strangers));
    assert!(matches!(
        chain.check_payment(&fake),
        Err(PaymentError::TxPath { .. })
    ));
    let mut long = good;
    long.results_path = vec![long.results_path[0]; payment::PATH_STEPS_MAX + 1];
    assert!(matches!(
        chain.check_payment(&long),
        Err(PaymentError::PathTooLong { .. })
    ));
}

#[test]
fn a_header_held_through_a_later_certificate_takes_the_results_root_of_a_verified_one() {
    let fixture = Fixture::new(4);
    let mut chain = chain(&fixture);
    certify_up_to(&mut chain, &fixture, 1, 4);
    assert_eq!(chain.header(PAY_HEIGHT).unwrap().own_cert, None);
    let good = fixture.proof(PAY_HEIGHT, 2);
    assert_eq!(chain.check_payment(&good).unwrap().index, 2);
    let mut none = good.clone();
    none.cert = None;
    assert_eq!(
        chain.check_payment(&none),
        Err(PaymentError::NoResultsRoot { height: 3 })
    );
    let mut other = good.clone();
    other.cert = Some(fixture.cert(4));
    assert!(matches!(
        chain.check_payment(&other),
        Err(PaymentError::HeaderMismatch { height: 3, .. })
    ));
    let (_, strangers) = committee_keys(10);
    let mut forged = good;
    forged.cert = Some(Fixture::sign(fixture.statement(PAY_HEIGHT, 0), &strangers));
    assert!(matches!(
        chain.check_payment(&forged),
        Err(PaymentError::Certificate(SpvError::Certificate { .. }))
    ));
}

#[test]
fn a_stored_chain_restores_only_over_its_genesis() {
    let fixture = Fixture::new(4);
    let mut chain = chain(&fixture);
    certify_up_to(&mut chain, &fixture, 1, 2);
    let bytes = store::encode(chain.chain_id(), chain.headers());
    let (chain_id, headers) = store::decode(&bytes).unwrap();
    assert_eq!(chain_id, CHAIN_ID);
    let mut restored = HeaderChain::restore(
        &fixture.genesis,
        fixture.committee.clone(),
        chain.handovers(),
        headers.clone(),
    )
    .unwrap();
    assert_eq!((restored.tip(), restored.headers()), (2, chain.headers()));
    certify_up_to(&mut restored, &fixture, 3, 4);
    let mut other_genesis = fixture.genesis.clone();
    other_genesis.timestamp_ms += 1;
    assert!(matches!(
        HeaderChain::restore(&other_genesis, fixture.committee.clone(), &[], headers),
        Err(SpvError::GenesisMismatch)
    ));
}
