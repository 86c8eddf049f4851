//! Four endpoints on loopback exchange every class of message, clients submit on the ingest endpoint, and the
//! two-tier broadcast tree relays a block to everyone exactly once.

mod common;

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use cas_engine::codec::encode_tx;
use cas_engine::PublicKey;
use cas_netio::broadcast::TwoTierTree;
use cas_netio::frame::{Class, Lane};
use cas_netio::ingest::IngestClient;
use cas_netio::node::Origin;
use common::*;

/// A payload that names its sender and class, so the receiver can check it got exactly the right ones.
fn payload(from: PublicKey, class: Class) -> Bytes {
    let mut bytes = from.0.to_vec();
    bytes.push(class as u8);
    // Bulk messages are package-sized, so they really share the connection with consensus traffic.
    let extra = if class.lane() == Lane::Bulk {
        256 * 1024
    } else {
        100
    };
    bytes.resize(33 + extra, class as u8);
    Bytes::from(bytes)
}

#[test]
fn four_endpoints_exchange_every_class() {
    init_logs();
    let keys = sorted_keys(20, 4);
    let mut nodes: Vec<_> = keys.iter().map(|key| start(key, loopback())).collect();
    let refs: Vec<_> = nodes.iter().map(|(node, _)| node).collect();
    mesh(&refs);
    let tx = Bytes::from(
        encode_tx(&cas_engine::fixtures::funded_genesis(7, 4, 2, 1, 5).txs[0]).to_vec(),
    );

    for (node, _) in &nodes {
        for class in Class::BETWEEN_NODES {
            let body = if class == Class::ClientTx {
                tx.clone()
            } else {
                payload(node.key(), class)
            };
            if class == Class::Vote {
                // Votes go out through send-to-all, the committee broadcast.
                assert!(node.broadcast(class, body).is_empty());
                continue;
            }
            for (other, _) in &nodes {
                if other.key() != node.key() {
                    node.try_send(&other.key(), class, body.clone()).unwrap();
                }
            }
        }
    }

    for (node, inbound) in &mut nodes {
        let mut got: BTreeSet<(PublicKey, Class)> = BTreeSet::new();
        for _ in 0..3 * 3 {
            let message = recv(&mut inbound.consensus, "a consensus message");
            assert_eq!(message.class.lane(), Lane::Consensus);
            let Origin::Peer(from) = message.origin else {
                panic!("consensus from a client")
            };
            assert_eq!(message.payload, payload(from, message.class));
            assert!(
                got.insert((from, message.class)),
                "duplicate {:?}",
                message.class
            );
        }
        for _ in 0..3 * 3 {
            let message = recv(&mut inbound.bulk, "a bulk message");
            assert_eq!(message.class.lane(), Lane::Bulk);
            let Origin::Peer(from) = message.origin else {
                panic!("bulk from a client")
            };
            if message.class == Class::ClientTx {
                assert_eq!(message.payload, tx);
            } else {
                assert_eq!(message.payload, payload(from, message.class));
            }
            assert!(
                got.insert((from, message.class)),
                "duplicate {:?}",
                message.class
            );
        }
        assert_eq!(
            got.len(),
            3 * Class::BETWEEN_NODES.len(),
            "node {:?}",
            node.key()
        );
        assert!(inbound.consensus.try_recv().is_err() && inbound.bulk.try_recv().is_err());
    }

    // Each node's counters saw six messages each way per peer, and a round-trip time.
    for (node, _) in &nodes {
        wait_until("RTT samples", || {
            node.peer_stats()
                .iter()
                .all(|stats| stats.rtt.as_nanos() > 0)
        });
        for stats in node.peer_stats() {
            assert!(stats.connected);
            assert_eq!(
                (stats.messages_sent, stats.messages_received),
                (6, 6),
                "{stats:?}"
            );
            assert!(stats.bytes_sent > 2 * 256 * 1024 && stats.bytes_received > 2 * 256 * 1024);
            assert_eq!(
                (stats.reconnects, stats.queue_full, stats.bad_frames),
                (0, 0, 0)
            );
        }
    }

    // Clients need no node key: each submits to one node's ingest endpoint, which validates with decode_tx.
    for (node, inbound) in &mut nodes {
        let client = IngestClient::connect(node.ingest_addr().unwrap(), node.key()).unwrap();
        for _ in 0..10 {
            client.submit(tx.clone()).unwrap();
        }
        client.finish();
        for _ in 0..10 {
            let message = recv(&mut inbound.ingest, "a client transaction");
            assert!(matches!(message.origin, Origin::Client(_)));
            assert_eq!((message.class, &message.payload), (Class::ClientTx, &tx));
        }
        assert_eq!(node.endpoint_stats().ingest_messages, 10);
    }
}

#[test]
fn the_two_tier_tree_reaches_everyone_once() {
    init_logs();
    let keys = sorted_keys(21, 5);
    let mut nodes: Vec<_> = keys.iter().map(|key| start(key, loopback())).collect();
    let refs: Vec<_> = nodes.iter().map(|(node, _)| node).collect();
    mesh(&refs);
    let all: Vec<PublicKey> = nodes.iter().map(|(node, _)| node.key()).collect();
    let key = |index: usize| all[index];
    // Committee {0, 1}, POS {2, 3}, others {4}, fan-out 1: 0 -> 1, 0 -> 2, 1 -> 3, 2 -> 4.
    let tree =
        TwoTierTree::new(vec![key(0), key(1)], vec![key(2), key(3)], vec![key(4)], 1).unwrap();
    let origin = key(0);
    let block = Bytes::from_static(b"a finalized block");
    assert!(nodes[0]
        .0
        .relay(&tree, origin, Class::BlockSync, block.clone())
        .unwrap()
        .is_empty());

    let mut parent_of = HashMap::new();
    let mut pending = vec![1usize, 2];
    while let Some(index) = pending.pop() {
        let message = recv(&mut nodes[index].1.bulk, "the relayed block");
        assert_eq!(message.payload, block);
        let Origin::Peer(from) = message.origin else {
            panic!("block from a client")
        };
        parent_of.insert(index, from);
        let (node, _) = &nodes[index];
        assert!(node
            .relay(&tree, origin, Class::BlockSync, block.clone())
            .unwrap()
            .is_empty());
        for (child, (other, _)) in nodes.iter().enumerate() {
            if tree
                .children(origin, node.key())
                .unwrap()
                .contains(&other.key())
            {
                pending.push(child);
            }
        }
    }
    assert_eq!(
        parent_of,
        HashMap::from([(1, key(0)), (2, key(0)), (3, key(1)), (4, key(2))])
    );
    // Nobody got it twice.
    std::thread::sleep(std::time::Duration::from_millis(200));
    for (node, inbound) in &mut nodes {
        assert!(
            inbound.bulk.try_recv().is_err(),
            "{:?} got a second copy",
            node.key()
        );
    }
}
