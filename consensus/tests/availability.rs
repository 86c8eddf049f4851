//! Package availability and the BFT's payload pool keep their promise to clients (issue 16 item 12): a package
//! whose submitters wait for `accepted` is never dropped before it is certified, and a certificate of ours is never
//! refused by our own payload pool, so every `accepted` is followed by a commit; and no block holds more than the
//! ledger block decoder accepts.

use cas_consensus::availability::{Availability, AvailabilityConfig};
use cas_consensus::bft::{Bft, BftConfig, Event, Recovered};
use cas_consensus::committee::{Committee, MemberIndex};
use cas_consensus::messages::{
    ack_digest, AckSignature, AvailabilityCert, Message, PackageSize, BLOCK_PAYLOAD_BYTES_MAX,
    BLOCK_PAYLOAD_TXS_MAX, PACKAGE_TXS_MAX,
};
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
            Action::Certified { cert, .. } => Some(cert.clone()),
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

/// A certificate this member formed (from acks it verified) reaches its payload pool marked verified, so the pool
/// does not check its signatures a second time; one that came from a peer is not, and the pool refuses it when an
/// ack's signature is wrong.
#[test]
fn only_certificates_formed_here_skip_the_payload_pools_check() {
    let mut members = availabilities(100);
    let package = broadcast_package(&members[1].create(vec![tx(7)], true, 0));
    let mut formed = Vec::new();
    for ack in acks(&mut members, 1, &package) {
        formed.extend(members[1].handle(0, ack, 0));
    }
    let flags = |actions: &[Action]| -> Vec<bool> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Certified { verified, .. } => Some(*verified),
                _ => None,
            })
            .collect()
    };
    assert_eq!(flags(&formed), [true], "formed by its creator: verified");
    let cert = certs(&formed).pop().expect("certified");
    let relayed = members[0].handle(1, Message::Cert(cert.clone()), 0);
    assert_eq!(flags(&relayed), [false], "from a peer: not verified");

    let mut forged = cert;
    forged.acks[0].signature.0[9] ^= 1;
    let keys = keypairs();
    let (mut bft, _) = Bft::new(
        committee(&keys),
        0,
        keys.into_iter().next().unwrap(),
        BftConfig::default(),
        Recovered::default(),
        0,
    );
    assert!(!bft.add_payload(forged, false), "a forged ack is refused");
    assert_eq!(bft.stats.refused, 1);
}

/// A full payload pool refuses other members' certificates but never ours (before the fix our own certificate was
/// refused after its clients were told `accepted`, and nothing would ever propose it), nor a creator's next one in
/// sequence.
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
    assert!(bft.add_payload(others[0].clone(), false));
    assert!(bft.add_payload(others[1].clone(), false));
    let size = PackageSize { txs: 1, bytes: 200 };
    assert!(
        !bft.add_payload(cert_of_size(3, 1, size), false),
        "the pool is full"
    );
    assert!(
        bft.add_payload(own, false),
        "our own certificate is refused"
    );
    // A creator's next package in sequence is taken even so: refusing it while a later one is taken (once there is
    // room) would leave a gap the proposal rule gives up on, ordering the later one first.
    assert!(
        bft.add_payload(others[2].clone(), false),
        "member 3's package 0 (next in its sequence) is refused"
    );
    assert_eq!(bft.stats.payload_refused, 1);
}

/// A transaction within every count the package decoder checks but larger, encoded alone, than a client may send
/// (here an issuance with the most evidence, absent members, inputs and witnesses): a Byzantine creator can put one in a package.
fn oversize_tx() -> Transaction {
    let signer = Keypair::from_seed(&[201; 32]);
    let signature = cas_engine::tx::TxSignature {
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
                absent: Some(vec![signer.public(); cas_engine::codec::COMMITTEE_MAX]),
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
        signatures: vec![signature; cas_engine::codec::SIGNATURES_MAX],
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

/// A certificate of `creator`'s package number `sequence` of `size`, acked by members 0..3 (not checked).
fn cert_of_size(creator: MemberIndex, sequence: u64, size: PackageSize) -> AvailabilityCert {
    let keys = keypairs();
    let package = Hash32(*blake3::hash(&[creator as u8, sequence as u8]).as_bytes());
    let digest = ack_digest(0, &package, size, false);
    AvailabilityCert {
        package,
        creator,
        sequence,
        size,
        acks: (0..3)
            .map(|signer| AckSignature {
                signer,
                checked: false,
                signature: keys[signer as usize].sign(&digest.0),
            })
            .collect(),
    }
}

/// Runs four BFT members until one proposes a block with payload (everyone's pool but round 1's leader's holds
/// `certs`, so round 1 is empty and the next leader proposes from its pool); returns that block.
fn first_payload_proposal(certs: &[AvailabilityCert]) -> cas_consensus::messages::Block {
    let keys = keypairs();
    let committee = committee(&keys);
    let mut members: Vec<Bft> = Vec::new();
    let mut queue = std::collections::VecDeque::new();
    for (i, key) in keys.into_iter().enumerate() {
        let (bft, actions) = Bft::new(
            committee.clone(),
            i as MemberIndex,
            key,
            BftConfig::default(),
            Recovered::default(),
            0,
        );
        members.push(bft);
        queue.extend(actions.into_iter().map(|a| (i as MemberIndex, a)));
    }
    let first_leader = committee.leader(1);
    for (i, member) in members.iter_mut().enumerate() {
        if i as MemberIndex != first_leader {
            for cert in certs {
                assert!(member.add_payload(cert.clone(), false));
            }
        }
    }
    let mut now = 0;
    for _ in 0..100 {
        while let Some((from, action)) = queue.pop_front() {
            let (targets, message): (Vec<MemberIndex>, Message) = match action {
                Action::Broadcast(message) => (
                    (0..MEMBERS as MemberIndex).filter(|m| *m != from).collect(),
                    message,
                ),
                Action::Send { to, message } => (vec![to], message),
                _ => continue,
            };
            if let Message::Proposal(block) = &message {
                if !block.payload.is_empty() {
                    return block.clone();
                }
            }
            for to in targets {
                let actions = members[to as usize].handle(Event::Message {
                    from,
                    message: message.clone(),
                });
                queue.extend(actions.into_iter().map(|a| (to, a)));
            }
        }
        now += 50;
        for (i, member) in members.iter_mut().enumerate() {
            let actions = member.handle(Event::Tick { now_ms: now });
            queue.extend(actions.into_iter().map(|a| (i as MemberIndex, a)));
        }
    }
    panic!("no proposal with payload");
}

/// Issue 16 item 11: a block could carry more transactions (or bytes) than the ledger block decoder accepts, and
/// then every executor failed on the same committed block, again after every restart. Certificates now carry the
/// package's size, signed by the ackers; a leader fills a block only to the ledger's bounds.
#[test]
fn a_leader_fills_a_block_only_to_what_the_ledger_block_decoder_accepts() {
    let by_count: Vec<AvailabilityCert> = (0..11)
        .map(|s| {
            cert_of_size(
                1,
                s,
                PackageSize {
                    txs: PACKAGE_TXS_MAX as u32,
                    bytes: 1 << 20,
                },
            )
        })
        .collect();
    let block = first_payload_proposal(&by_count);
    let txs: usize = block.payload.iter().map(|c| c.size.txs as usize).sum();
    assert!(txs <= BLOCK_PAYLOAD_TXS_MAX, "{txs}");
    assert_eq!(
        block.payload.len(),
        BLOCK_PAYLOAD_TXS_MAX / PACKAGE_TXS_MAX,
        "as many as fit"
    );

    let by_bytes: Vec<AvailabilityCert> = (0..6)
        .map(|s| {
            cert_of_size(
                2,
                s,
                PackageSize {
                    txs: 1,
                    bytes: 20 << 20,
                },
            )
        })
        .collect();
    let block = first_payload_proposal(&by_bytes);
    let bytes: usize = block.payload.iter().map(|c| c.size.bytes as usize).sum();
    assert!(bytes <= BLOCK_PAYLOAD_BYTES_MAX, "{bytes}");
    assert_eq!(block.payload.len(), 3);
}

/// A proposal over the bound is refused by its voters, and a certificate whose size was changed after the acks
/// does not verify.
#[test]
fn voters_refuse_a_block_over_the_ledger_bounds_and_a_resized_certificate() {
    let keys = keypairs();
    let committee = committee(&keys);
    let leader = committee.leader(1);
    // Not the next leader, who would keep its vote rather than send it.
    let voter = (leader + 2) % MEMBERS as MemberIndex;
    let size = PackageSize {
        txs: PACKAGE_TXS_MAX as u32,
        bytes: 1 << 20,
    };
    let fitting = BLOCK_PAYLOAD_TXS_MAX / PACKAGE_TXS_MAX;
    let certs: Vec<AvailabilityCert> = (0..fitting as u64 + 1)
        .map(|s| cert_of_size(3, s, size))
        .collect();
    let votes = |payload: Vec<AvailabilityCert>| {
        let (mut bft, _) = Bft::new(
            committee.clone(),
            voter,
            keypairs().swap_remove(voter as usize),
            BftConfig::default(),
            Recovered::default(),
            0,
        );
        let block = cas_consensus::messages::Block::new_signed(
            0,
            &keys[leader as usize],
            leader,
            1,
            1,
            cas_consensus::messages::QuorumCert::genesis(),
            None,
            0,
            payload,
            Vec::new(),
        );
        let actions = bft.handle(Event::Message {
            from: leader,
            message: Message::Proposal(block),
        });
        actions
            .iter()
            .any(|a| matches!(a, Action::Broadcast(Message::Vote(_))))
    };
    assert!(
        votes(certs[..fitting].to_vec()),
        "a block that fits gets a vote"
    );
    assert!(!votes(certs.clone()), "one over the bound does not");
    let mut resized = certs[0].clone();
    resized.size.txs = 1;
    assert!(
        !votes(vec![resized]),
        "nor does a certificate with a size its acks did not sign"
    );
}

/// A package's id covers its transactions' witnesses, not only their bodies: a creator cannot hand two members
/// packages with one id and other signatures, which would verify differently and fork their ledgers.
#[test]
fn a_package_id_covers_the_witnesses() {
    let signed = tx(9);
    let mut resigned = signed.clone();
    resigned.signatures[0].signature.0[0] ^= 1;
    assert_eq!(signed.tx_id(), resigned.tx_id());
    let package = |txs| cas_consensus::messages::Package {
        creator: 0,
        sequence: 0,
        txs,
    };
    assert_ne!(package(vec![signed]).id(), package(vec![resigned]).id());
}

/// The package window is bounded in bytes too, not only in count: before, 10,000 packages were kept whatever
/// their size (up to 32 MiB each), so memory grew with the size of packages (issue 16 item 13).
#[test]
fn the_package_window_is_bounded_in_bytes() {
    let keys = keypairs();
    let one = cas_consensus::messages::Package {
        creator: 1,
        sequence: 0,
        txs: vec![tx(1)],
    };
    let bytes = one.size().bytes as usize;
    let mut member = Availability::new(
        committee(&keys),
        0,
        keys.into_iter().next().unwrap(),
        AvailabilityConfig {
            packages_kept: 1_000,
            package_bytes_kept: 3 * bytes,
            ..AvailabilityConfig::default()
        },
    );
    let ids: Vec<_> = (0..5u8)
        .map(|k| {
            let package = cas_consensus::messages::Package {
                creator: 1,
                sequence: k as u64,
                txs: vec![tx(k + 1)],
            };
            let id = package.id();
            member.handle(1, Message::Package(package), 0);
            id
        })
        .collect();
    let kept: Vec<bool> = ids.iter().map(|id| member.package(id).is_some()).collect();
    assert_eq!(kept, [false, false, true, true, true]);
}

/// The acks by `from` members only, delivered to the creator (member 0) at `now_ms`, as sent by their signers;
/// returns the certificates formed.
fn deliver_acks(
    members: &mut [Availability],
    acks: &[Message],
    from: &[MemberIndex],
    now_ms: u64,
) -> Vec<AvailabilityCert> {
    let mut formed = Vec::new();
    for ack in acks.iter().cloned() {
        let Message::Ack(a) = &ack else {
            unreachable!()
        };
        if from.contains(&a.signer) {
            let signer = a.signer;
            formed.extend(certs(&members[0].handle(signer, ack, now_ms)));
        }
    }
    formed
}

/// A creator waits longer for a checker that is alive but behind than for one it has not heard from: giving up
/// after the short wait made every executor verify the package (10 nodes on 2 cores: 18% of certificates
/// unattested). Member 1 is member 0's other checker in a committee of 4 equal stakes.
#[test]
fn the_attestation_wait_is_long_for_a_live_checker_and_short_for_a_silent_one() {
    let config = AvailabilityConfig::default();
    assert!(config.attest_wait_ms < config.attest_wait_max_ms);
    let (short, long) = (config.attest_wait_ms, config.attest_wait_max_ms);

    // Never heard from member 1: the short wait, then an unattested certificate.
    let mut members = availabilities(100);
    let first = broadcast_package(&members[0].create(vec![tx(1)], true, 0));
    let first = acks(&mut members, 0, &first);
    assert!(deliver_acks(&mut members, &first, &[2, 3], 0).is_empty());
    assert!(certs(&members[0].on_tick(short - 1)).is_empty());
    let formed = certs(&members[0].on_tick(short));
    assert_eq!(formed.len(), 1);
    assert_eq!(members[0].stats.certs_unattested_after_wait, 1);

    // Member 1 answers the next package (checked): it is alive from now on.
    let t = short + 10;
    let second = broadcast_package(&members[0].create(vec![tx(2)], true, t));
    let second = acks(&mut members, 0, &second);
    assert_eq!(deliver_acks(&mut members, &second, &[1, 2, 3], t).len(), 1);

    // Its ack of the third is late: past the short wait the creator still waits for it, and attests.
    let third = broadcast_package(&members[0].create(vec![tx(3)], true, t));
    let third = acks(&mut members, 0, &third);
    assert!(deliver_acks(&mut members, &third, &[2, 3], t).is_empty());
    assert!(certs(&members[0].on_tick(t + short + 100)).is_empty());
    let late = deliver_acks(&mut members, &third, &[1], t + short + 200);
    assert_eq!(late.len(), 1);
    assert_eq!(members[0].stats.certs_attested, 2);

    // Then it falls silent: once it has not acked for the long wait, the creator goes back to the short one.
    let heard = t + short + 200;
    let fourth = broadcast_package(&members[0].create(vec![tx(4)], true, heard));
    let fourth = acks(&mut members, 0, &fourth);
    assert!(deliver_acks(&mut members, &fourth, &[2, 3], heard).is_empty());
    assert!(certs(&members[0].on_tick(heard + long - 1)).is_empty());
    assert_eq!(certs(&members[0].on_tick(heard + long)).len(), 1);
    assert_eq!(members[0].stats.certs_unattested_after_wait, 2);
}

/// A held package carries its transactions' ids, each the id of its transaction in order, whichever way it came:
/// made here, received from its creator, or restored after a restart.
#[test]
fn held_packages_carry_their_transactions_ids_in_order() {
    let mut members = availabilities(64);
    let txs: Vec<Transaction> = (1..=5).map(tx).collect();
    let expected: Vec<_> = txs.iter().map(|tx| tx.tx_id()).collect();
    let created = members[0].create(txs, false, 0);
    let Message::Package(package) = broadcast_package(&created) else {
        unreachable!("broadcast_package finds a package");
    };
    let id = package.id();
    assert_eq!(members[0].tx_ids(&id), Some(expected.as_slice()));
    members[1].handle(0, Message::Package(package.clone()), 0);
    assert_eq!(members[1].tx_ids(&id), Some(expected.as_slice()));
    members[2].restore(package);
    assert_eq!(members[2].tx_ids(&id), Some(expected.as_slice()));
    let own: Vec<_> = members[0]
        .own_packages()
        .map(|(_, ids)| ids.to_vec())
        .collect();
    assert_eq!(own, vec![expected]);
    assert_eq!(members[3].tx_ids(&id), None);
}
