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
            ingest_limits: Default::default(),
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

/// A raw quinn client endpoint on its own runtime, bound to `bind` (any 127.0.0.0/8 address works on Linux's
/// loopback, so tests can play clients from different sources), to send what the real client never would. A
/// thread of its own drives the runtime, so connections keep being served between `block_on` calls.
pub struct RawEndpoint {
    handle: tokio::runtime::Handle,
    pub endpoint: quinn::Endpoint,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    driver: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RawEndpoint {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(driver) = self.driver.take() {
            let _ = driver.join();
        }
    }
}

impl RawEndpoint {
    pub fn bound(bind: &str) -> RawEndpoint {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let handle = runtime.handle().clone();
        let bind: SocketAddr = bind.parse().unwrap();
        let endpoint = runtime.block_on(async { quinn::Endpoint::client(bind).unwrap() });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let driver = std::thread::spawn(move || {
            let _ = runtime.block_on(stopped);
        });
        RawEndpoint {
            handle,
            endpoint,
            stop: Some(stop),
            driver: Some(driver),
        }
    }

    /// Runs `future` to completion on this endpoint's runtime.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.handle.block_on(future)
    }

    /// A client connection to `node`'s ingest endpoint, or why there is none.
    pub fn connect_ingest(&self, node: &Node) -> Result<quinn::Connection, String> {
        let config = cas_netio::identity::ingest_client_config(node.key()).unwrap();
        self.block_on(async {
            let connecting = self
                .endpoint
                .connect_with(
                    config,
                    node.ingest_addr().unwrap(),
                    cas_netio::identity::SERVER_NAME,
                )
                .unwrap();
            tokio::time::timeout(WAIT, connecting)
                .await
                .map_err(|_| "timeout".to_string())?
                .map_err(|e| e.to_string())
        })
    }

    /// Waits for the node to close `connection`: its close code and reason.
    pub fn await_close(&self, connection: &quinn::Connection) -> (u64, String) {
        self.block_on(async {
            match tokio::time::timeout(WAIT, connection.closed())
                .await
                .expect("the node closes the connection")
            {
                quinn::ConnectionError::ApplicationClosed(close) => (
                    close.error_code.into_inner(),
                    String::from_utf8_lossy(&close.reason).into_owned(),
                ),
                other => panic!("expected an application close, got {other}"),
            }
        })
    }
}

/// A node with these ingest limits whose validator accepts any client bytes but those starting with `bad`.
pub fn start_with_limits(namespace: u8, limits: cas_netio::IngestLimits) -> (Node, InboundQueues) {
    Node::start(
        NodeConfig {
            keypair: Keypair::from_seed(&cas_engine::fixtures::key(namespace, 0).seed()),
            listen: loopback(),
            ingest_listen: Some(loopback()),
            ingest_limits: limits,
        },
        |_: cas_netio::Class, payload: &[u8]| match payload.starts_with(b"bad") {
            true => Err("starts with bad".to_string()),
            false => Ok(()),
        },
    )
    .expect("node starts")
}
