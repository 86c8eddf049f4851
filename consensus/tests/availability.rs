//! Package availability and the BFT's payload pool keep their promise to clients (issue 16 item 12): a package
//! whose submitters wait for `accepted` is never dropped before it is certified, and a certificate of ours is never
//! refused by our own payload pool, so every `accepted` is followed by a commit.

use cas_consensus::availability::{Availability, AvailabilityConfig};
use cas_consensus::bft::{Bft, BftConfig, Recovered};
use cas_consensus::committee::{Committee, MemberIndex};
use cas_consensus::messages::{AvailabilityCert, Message};
use cas_consensus::Action;
use cas_engine::tx::{OutPoint, TxBody, TxKind};
use cas_engine::{Hash32, Keypair, Transaction};

const MEMBERS: usize = 4;

fn keypairs() -> Vec<Keypair> {
    (0..MEMBERS)
        .map(|i| Keypair::from_seed(&[i as u8 + 1; 32]))
        .collect()
}

fn committee(keys: &[Keypair]) -> Committee {
    Committee::new(keys.iter().map(|k| (k.public(), 1)).collect()).unwrap()
}

fn availabilities(packages_kept: usize) -> Vec<Availability> {
    let keys = keypairs();
    let committee = committee(&keys);
    keys.into_iter()
        .enumerate()
        .map(|(i, key)| {
            Availability::new(
                committee.clone(),
                i as MemberIndex,
                key,
                AvailabilityConfig {
                    packages_kept,
                    ..AvailabilityConfig::default()
                },
            )
        })
        .collect()
}

fn tx(seed: u8) -> Transaction {
    let owner = Keypair::from_seed(&[200; 32]);
    TxBody {
        chain_id: 1,
        vn: 0,
        kind: TxKind::Transfer,
        inputs: vec![OutPoint {
            tx: Hash32([seed; 32]),
            index: 0,
        }],
        outputs: Vec::new(),
        fee: 1,
        memo: Vec::new(),
        client_id: None,
    }
    .sign(&[&owner])
}

fn broadcast_package(actions: &[Action]) -> Message {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Broadcast(m @ Message::Package(_)) => Some(m.clone()),
            _ => None,
        })
        .expect("a created package is broadcast")
}

fn certs(actions: &[Action]) -> Vec<AvailabilityCert> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Certified(cert) => Some(cert.clone()),
            _ => None,
        })
        .collect()
}

/// The acks the other members answer `package` (from `creator`) with.
fn acks(members: &mut [Availability], creator: MemberIndex, package: &Message) -> Vec<Message> {
    let mut acks = Vec::new();
    for (i, member) in members.iter_mut().enumerate() {
        if i as MemberIndex == creator {
            continue;
        }
        for action in member.handle(creator, package.clone(), 0) {
            if let Action::Send { message, .. } = action {
                acks.push(message);
            }
        }
    }
    acks
}

/// A creator that makes more packages than it keeps, before any is acked, still certifies every one: before the
/// fix the oldest were evicted with their pending state, their acks found nothing, and their submitters never
/// heard back.
#[test]
fn own_packages_are_kept_until_certified_however_many_arrive_meanwhile() {
    let mut members = availabilities(2);
    let created = 5;
    let packages: Vec<Message> = (0..created)
        .map(|k| broadcast_package(&members[0].create(vec![tx(k)], true, 0)))
        .collect();
    let mut certified = Vec::new();
    for package in &packages {
        for ack in acks(&mut members, 0, package) {
            certified.extend(certs(&members[0].handle(1, ack, 0)));
        }
    }
    // Everyone acked unchecked but the checker; the creator certifies once every member answered.
    assert_eq!(certified.len(), created as usize, "{certified:?}");
    // Certified ones may go now: the window is back to its bound after the next package.
    members[0].create(vec![tx(99)], true, 0);
    for package in &packages[..3] {
        let Message::Package(package) = package else {
            unreachable!()
        };
        assert!(members[0].package(&package.id()).is_none());
    }
}

/// A full payload pool refuses other members' certificates but never ours: before the fix our own certificate was
/// refused after its clients were told `accepted`, and nothing would ever propose it.
#[test]
fn a_full_payload_pool_still_takes_our_own_certificates() {
    let mut members = availabilities(100);
    let mut cert_of = |creator: MemberIndex, seed: u8| {
        let package = broadcast_package(&members[creator as usize].create(vec![tx(seed)], true, 0));
        let mut formed = Vec::new();
        for ack in acks(&mut members, creator, &package) {
            formed.extend(certs(&members[creator as usize].handle(0, ack, 0)));
        }
        formed.pop().expect("certified")
    };
    let others = [cert_of(1, 1), cert_of(2, 2), cert_of(3, 3)];
    let own = cert_of(0, 4);
    let keys = keypairs();
    let (mut bft, _) = Bft::new(
        committee(&keys),
        0,
        keys.into_iter().next().unwrap(),
        BftConfig {
            payload_pool_max: 2,
            ..BftConfig::default()
        },
        Recovered::default(),
        0,
    );
    assert!(bft.add_payload(others[0].clone()));
    assert!(bft.add_payload(others[1].clone()));
    assert!(!bft.add_payload(others[2].clone()), "the pool is full");
    assert!(bft.add_payload(own), "our own certificate is refused");
    assert_eq!(bft.stats.payload_refused, 1);
}

/// A transaction within every count the package decoder checks but larger, encoded alone, than a client may send
/// (here an issuance with the most evidence, inputs and witnesses): a Byzantine creator can put one in a package.
fn oversize_tx() -> Transaction {
    let signer = Keypair::from_seed(&[201; 32]);
    let witness = cas_engine::tx::Witness {
        key: signer.public(),
        signature: signer.sign(b"not the tx id"),
    };
    let item = vec![
        7u8;
        cas_engine::codec::ISSUANCE_EVIDENCE_BYTES_MAX
            / cas_engine::codec::ISSUANCE_EVIDENCE_MAX
    ];
    Transaction {
        body: TxBody {
            chain_id: 1,
            vn: 0,
            kind: TxKind::Issuance {
                height: 1,
                evidence: vec![item; cas_engine::codec::ISSUANCE_EVIDENCE_MAX],
            },
            inputs: (0..cas_engine::codec::INPUTS_MAX as u32)
                .map(|index| OutPoint {
                    tx: Hash32([3; 32]),
                    index,
                })
                .collect(),
            outputs: Vec::new(),
            fee: 0,
            memo: Vec::new(),
            client_id: None,
        },
        witnesses: vec![witness; cas_engine::codec::WITNESSES_MAX],
    }
}

/// Issue 16 item 10: a checker verified a package's signatures by re-encoding each transaction and decoding it
/// with the client decoder, which refuses one over the size limit, and `expect`ed that to succeed: one such
/// package from a Byzantine creator panicked every checker. Now the signatures are checked as held.
#[test]
fn a_package_transaction_over_the_size_limit_is_no_panic_for_its_checkers() {
    let oversize = oversize_tx();
    let encoded = cas_engine::codec::encode_tx(&oversize);
    assert!(encoded.len() > cas_engine::codec::TX_BYTES_MAX);
    assert!(cas_engine::codec::decode_tx(&encoded).is_err());
    let package = Message::Package(cas_consensus::messages::Package {
        creator: 1,
        sequence: 0,
        txs: vec![tx(5), oversize],
    });
    // It passes the wire's decoder: any member can receive it.
    let wire = cas_consensus::messages::encode_message(&package);
    assert!(cas_consensus::messages::decode_message(&wire).is_ok());

    let mut members = availabilities(100);
    // Member 2 is a checker of member 1's packages (stake after the creator's up to a third).
    assert!(Availability::is_checker(&committee(&keypairs()), 1, 2));
    let actions = members[2].handle(1, package, 0);
    let ack = actions
        .iter()
        .find_map(|a| match a {
            Action::Send {
                message: Message::Ack(ack),
                ..
            } => Some(ack),
            _ => None,
        })
        .expect("the checker acks");
    assert!(!ack.checked, "a bad signature is not attested");
    let id = match &members[2].package(&ack.package) {
        Some(package) => package.id(),
        None => panic!("stored"),
    };
    assert_eq!(
        members[2].verify_for_execution(&id),
        Some(vec![true, false]),
        "the good one verifies, the oversize one (bad signature) does not"
    );
}
