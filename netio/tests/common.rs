//! Helpers shared by the loopback tests: nodes on 127.0.0.1 with OS-chosen ports, keys in a fixed order, and
//! bounded waits that poll (so a loaded machine only makes a test slower, never wrong).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cas_engine::{Keypair, PublicKey};
use cas_netio::frame::validate_client_tx;
use cas_netio::node::{Inbound, InboundQueues, Node, NodeConfig, Peer};
use tokio::sync::mpsc;

/// How long any one expected event may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// `count` keypairs sorted by public key, so index order is dial order (the smaller key dials).
pub fn sorted_keys(namespace: u8, count: u32) -> Vec<Keypair> {
    let mut keys: Vec<Keypair> = (0..count)
        .map(|index| cas_engine::fixtures::key(namespace, index))
        .collect();
    keys.sort_by_key(|key| key.public());
    keys
}

pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub fn start(keypair: &Keypair, listen: SocketAddr) -> (Node, InboundQueues) {
    Node::start(
        NodeConfig {
            keypair: Keypair::from_seed(&keypair.seed()),
            listen,
            ingest_listen: Some(loopback()),
        },
        validate_client_tx,
    )
    .expect("node starts")
}

pub fn peer(node: &Node) -> Peer {
    Peer {
        key: node.key(),
        addr: node.local_addr(),
    }
}

/// Connects every node to every other.
pub fn mesh(nodes: &[&Node]) {
    for node in nodes {
        let peers: Vec<Peer> = nodes
            .iter()
            .filter(|other| other.key() != node.key())
            .map(|other| peer(other))
            .collect();
        node.set_peers(&peers).unwrap();
    }
}

/// The next message on `queue`, or a panic after [`WAIT`].
pub fn recv(queue: &mut mpsc::Receiver<Inbound>, what: &str) -> Inbound {
    let deadline = Instant::now() + WAIT;
    loop {
        match queue.try_recv() {
            Ok(message) => return message,
            Err(mpsc::error::TryRecvError::Empty) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(error) => panic!("waiting for {what}: {error:?} after {WAIT:?}"),
        }
    }
}

/// Polls `condition` until it holds, or panics after [`WAIT`].
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn stats_of(node: &Node, key: PublicKey) -> cas_netio::peer::PeerStats {
    node.peer_stats()
        .into_iter()
        .find(|stats| stats.key == key)
        .expect("a configured peer has stats")
}
