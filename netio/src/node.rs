//! A node's transport: the peer endpoint (mutually authenticated by node key), the client ingest endpoint, one
//! supervisor task per peer (dial or accept, backoff, reconnect), the lane writers and the frame readers. Owns
//! every queue between quinn and the rest of the node; never interprets a payload beyond the [`Validator`].

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use cas_engine::{Keypair, PublicKey};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::answers::{Activity, Clients};
use crate::broadcast::{TreeError, TwoTierTree};
use crate::error::{FrameError, NetError, SendError};
use crate::frame::{take_batch, write_frames, Class, FrameReader, Lane, Validator};
use crate::identity::{self, Identity};
use crate::limits::*;
use crate::peer::{Backoff, PeerCounters, PeerStats};
use crate::thread::IoThread;

/// QUIC application close codes, so the far side's log says why.
pub mod close_code {
    pub const SHUTDOWN: u32 = 0;
    pub const BAD_FRAME: u32 = 1;
    pub const REFUSED: u32 = 2;
    pub const REPLACED: u32 = 3;
    /// A client whose answer queue filled up: it does not read its answers.
    pub const SLOW_CLIENT: u32 = 4;
    /// A client connection idle too long, or a frame begun and not completed in time.
    pub const TIMEOUT: u32 = 5;
}

/// Connections from one peer waiting for its supervisor (a restart racing the old connection's close).
const INCOMING_PER_PEER_MAX: usize = 2;

/// Where a received message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// An authenticated node.
    Peer(PublicKey),
    /// A client on the ingest endpoint (no node key).
    Client(SocketAddr),
}

/// One received, validated message.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub origin: Origin,
    pub class: Class,
    pub payload: Bytes,
}

/// The receiving ends of the bridge, one per lane, so a slow bulk consumer never holds up consensus. They work
/// from any thread (`blocking_recv`) or any async executor (`recv().await`).
#[derive(Debug)]
pub struct InboundQueues {
    /// Proposals, votes and timeouts from peers.
    pub consensus: mpsc::Receiver<Inbound>,
    /// Packages, block sync and gossiped transactions from peers.
    pub bulk: mpsc::Receiver<Inbound>,
    /// Transactions from clients on the ingest endpoint.
    pub ingest: mpsc::Receiver<Inbound>,
    /// Wakes the thread that reads these queues when something arrives on any of them.
    pub waker: Arc<InboundWaker>,
}

/// Lets a plain thread that polls the inbound queues sleep until input arrives instead of on a timer: it calls
/// [`InboundWaker::register_current`] once, then parks (`std::thread::park_timeout`) when it finds nothing; netio
/// unparks it after every delivery. An unpark of a thread that is not parked only makes its next park return at
/// once, so nothing is missed between its last look and its park.
#[derive(Debug, Default)]
pub struct InboundWaker {
    thread: std::sync::OnceLock<std::thread::Thread>,
}

impl InboundWaker {
    /// Makes the calling thread the one woken (the first caller stays the one).
    pub fn register_current(&self) {
        let _ = self.thread.set(std::thread::current());
    }

    /// Wakes the registered thread (netio does on every input; an in-process source of input does too).
    pub fn wake(&self) {
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }
}

/// A node we keep a connection with, at the address the committee (or config) names for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub key: PublicKey,
    pub addr: SocketAddr,
}

/// What a node needs to start.
pub struct NodeConfig {
    pub keypair: Keypair,
    /// The peer endpoint (`127.0.0.1:0` lets the OS choose the port).
    pub listen: SocketAddr,
    /// The client ingest endpoint; `None` for a node that serves no clients.
    pub ingest_listen: Option<SocketAddr>,
    /// The ingest endpoint's connection limits and timeouts (`IngestLimits::default()`: the `limits` constants).
    pub ingest_limits: IngestLimits,
}

/// Counters of the endpoints themselves (refusals happen before there is a peer to count them on).
#[derive(Debug, Default)]
struct EndpointCounters {
    refused_handshakes: AtomicU64,
    refused_connections: AtomicU64,
    ingest_connections: AtomicU64,
    ingest_refused_full: AtomicU64,
    ingest_refused_per_source: AtomicU64,
    ingest_bad_frames: AtomicU64,
    ingest_timeouts: AtomicU64,
    ingest_rejected: AtomicU64,
    ingest_messages: AtomicU64,
}

/// A copy of the endpoint counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointStats {
    /// Handshakes that failed: unknown or wrong key, bad signature, timeouts.
    pub refused_handshakes: u64,
    /// Authenticated connections closed at once: wrong dial direction, wrong address, busy.
    pub refused_connections: u64,
    /// Client connections accepted on the ingest endpoint.
    pub ingest_connections: u64,
    /// Client connections refused because the ingest endpoint held its most ([`IngestLimits::connections_max`]).
    pub ingest_refused_full: u64,
    /// Client connections refused because their source held its most
    /// ([`IngestLimits::connections_per_source_max`]).
    pub ingest_refused_per_source: u64,
    /// Client connections closed for a bad frame (a broken header, a class not for clients, a truncated frame,
    /// or a payload the validator refused with no rejection answer).
    pub ingest_bad_frames: u64,
    /// Client connections closed with `TIMEOUT`: idle too long, or a frame not completed in time.
    pub ingest_timeouts: u64,
    /// Client payloads the validator refused and the client was answered a rejection for (connection kept).
    pub ingest_rejected: u64,
    /// Client transactions delivered.
    pub ingest_messages: u64,
    /// Client connections open now (each has an answer queue).
    pub ingest_clients_open: u64,
    /// Answers written to clients' answer streams.
    pub answers_sent: u64,
    /// Answers refused because the client's answer queue was full (that client was disconnected).
    pub answers_refused_full: u64,
}

struct Outgoing {
    class: Class,
    payload: Bytes,
}

struct PeerLink {
    addr: SocketAddr,
    queues: [mpsc::Sender<Outgoing>; 2],
    counters: Arc<PeerCounters>,
    incoming: mpsc::Sender<quinn::Connection>,
    task: tokio::task::AbortHandle,
}

struct Shared {
    me: PublicKey,
    identity: Identity,
    endpoint: quinn::Endpoint,
    peers: RwLock<HashMap<PublicKey, Arc<PeerLink>>>,
    /// The keys the TLS verifier accepts from dialers; kept equal to `peers`' keys.
    peer_keys: Arc<RwLock<HashSet<PublicKey>>>,
    validator: Arc<dyn Validator>,
    inbound: [mpsc::Sender<Inbound>; 2],
    inbound_ingest: mpsc::Sender<Inbound>,
    waker: Arc<InboundWaker>,
    clients: Clients,
    ingest_limits: IngestLimits,
    counters: EndpointCounters,
}

/// A running transport. Dropping it closes both endpoints (peers see a `SHUTDOWN` close) and joins the thread.
pub struct Node {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    ingest_addr: Option<SocketAddr>,
    // Last field: dropped after `shared`'s users are gone from this side.
    io: IoThread,
}

impl Node {
    /// Binds both endpoints on a new netio thread. Peers are added with [`Node::set_peers`].
    pub fn start(
        config: NodeConfig,
        validator: impl Validator,
    ) -> Result<(Node, InboundQueues), NetError> {
        config.ingest_limits.check().map_err(NetError::Limits)?;
        let ingest_limits = config.ingest_limits;
        let identity = Identity::new(&config.keypair)?;
        let peer_keys = Arc::new(RwLock::new(HashSet::new()));
        let node_server = identity::node_server_config(&identity, peer_keys.clone())?;
        let ingest_server = identity::ingest_server_config(&identity)?;
        let (consensus_tx, consensus_rx) = mpsc::channel(INBOUND_CONSENSUS_MAX);
        let (bulk_tx, bulk_rx) = mpsc::channel(INBOUND_BULK_MAX);
        let (ingest_tx, ingest_rx) = mpsc::channel(INBOUND_INGEST_MAX);
        let validator: Arc<dyn Validator> = Arc::new(validator);
        let waker = Arc::new(InboundWaker::default());
        let waker_for_reader = waker.clone();
        let me = identity.key();
        let (listen, ingest_listen) = (config.listen, config.ingest_listen);
        let (io, (shared, local_addr, ingest_addr)) =
            IoThread::start("cas-netio", move |ready, shutdown| async move {
                let endpoint = match identity::endpoint(listen, Some(node_server)) {
                    Ok(endpoint) => endpoint,
                    Err(source) => {
                        let _ = ready.send(Err(NetError::Bind {
                            addr: listen,
                            source,
                        }));
                        return;
                    }
                };
                let ingest = match ingest_listen
                    .map(|addr| {
                        identity::endpoint(addr, Some(ingest_server)).map_err(|e| (addr, e))
                    })
                    .transpose()
                {
                    Ok(ingest) => ingest,
                    Err((addr, source)) => {
                        let _ = ready.send(Err(NetError::Bind { addr, source }));
                        return;
                    }
                };
                let shared = Arc::new(Shared {
                    me,
                    identity,
                    endpoint: endpoint.clone(),
                    peers: RwLock::new(HashMap::new()),
                    peer_keys,
                    validator,
                    inbound: [consensus_tx, bulk_tx],
                    inbound_ingest: ingest_tx,
                    waker: waker_for_reader,
                    clients: Clients::default(),
                    ingest_limits,
                    counters: EndpointCounters::default(),
                });
                let local_addr = endpoint
                    .local_addr()
                    .expect("a bound endpoint has an address");
                let ingest_addr = ingest
                    .as_ref()
                    .map(|e| e.local_addr().expect("a bound endpoint has an address"));
                tokio::spawn(accept_peers(shared.clone()));
                if let Some(ingest) = ingest.clone() {
                    tokio::spawn(accept_clients(shared.clone(), ingest));
                }
                tracing::info!(key = ?me, %local_addr, ?ingest_addr, "netio started");
                let _ = ready.send(Ok((shared, local_addr, ingest_addr)));
                let _ = shutdown.await;
                endpoint.close(close_code::SHUTDOWN.into(), b"shutdown");
                if let Some(ingest) = &ingest {
                    ingest.close(close_code::SHUTDOWN.into(), b"shutdown");
                }
                let wait = Duration::from_millis(SHUTDOWN_WAIT_MS);
                let _ = tokio::time::timeout(wait, endpoint.wait_idle()).await;
                tracing::info!(key = ?me, "netio stopped");
            })?;
        let node = Node {
            shared,
            local_addr,
            ingest_addr,
            io,
        };
        let inbound = InboundQueues {
            consensus: consensus_rx,
            bulk: bulk_rx,
            ingest: ingest_rx,
            waker,
        };
        Ok((node, inbound))
    }

    pub fn key(&self) -> PublicKey {
        self.shared.me
    }

    /// The bound peer endpoint.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound client ingest endpoint, if any.
    pub fn ingest_addr(&self) -> Option<SocketAddr> {
        self.ingest_addr
    }

    /// Makes `peers` the set of nodes we keep connections with: new ones get a supervisor (the node with the
    /// smaller key dials, the other accepts), removed ones are disconnected, a changed address restarts one.
    pub fn set_peers(&self, peers: &[Peer]) -> Result<(), NetError> {
        if peers.len() > PEERS_MAX {
            return Err(NetError::TooManyPeers {
                count: peers.len(),
                max: PEERS_MAX,
            });
        }
        if peers.iter().any(|peer| peer.key == self.shared.me) {
            return Err(NetError::SelfAsPeer);
        }
        let wanted: HashMap<PublicKey, SocketAddr> =
            peers.iter().map(|peer| (peer.key, peer.addr)).collect();
        let mut links = self.shared.peers.write().expect("peers lock");
        let mut keys = self.shared.peer_keys.write().expect("peer keys lock");
        links.retain(|key, link| {
            let keep = wanted.get(key) == Some(&link.addr);
            if !keep {
                link.task.abort();
                keys.remove(key);
                tracing::info!(peer = ?key, "peer removed");
            }
            keep
        });
        for (key, addr) in wanted {
            if links.contains_key(&key) {
                continue;
            }
            let (consensus_tx, consensus_rx) = mpsc::channel(CONSENSUS_QUEUE_MAX);
            let (bulk_tx, bulk_rx) = mpsc::channel(BULK_QUEUE_MAX);
            let (incoming_tx, incoming_rx) = mpsc::channel(INCOMING_PER_PEER_MAX);
            let counters = Arc::new(PeerCounters::default());
            let supervisor = Supervisor {
                shared: self.shared.clone(),
                key,
                addr,
                queues: [consensus_rx, bulk_rx],
                unsent: [Vec::new(), Vec::new()],
                incoming: incoming_rx,
                counters: counters.clone(),
            };
            let task = self.io.runtime.spawn(supervisor.run()).abort_handle();
            links.insert(
                key,
                Arc::new(PeerLink {
                    addr,
                    queues: [consensus_tx, bulk_tx],
                    counters,
                    incoming: incoming_tx,
                    task,
                }),
            );
            keys.insert(key);
            tracing::info!(peer = ?key, %addr, "peer added");
        }
        debug_assert_eq!(links.len(), keys.len());
        Ok(())
    }

    fn link(&self, to: &PublicKey, class: Class, len: usize) -> Result<Arc<PeerLink>, SendError> {
        if !class.between_nodes() {
            return Err(SendError::WrongClass(class));
        }
        let max = class.payload_bytes_max();
        if len > max {
            return Err(SendError::Oversize { class, len, max });
        }
        let links = self.shared.peers.read().expect("peers lock");
        links.get(to).cloned().ok_or(SendError::UnknownPeer(*to))
    }

    /// Queues a message without waiting. A full queue answers [`SendError::QueueFull`] (counted and logged):
    /// the policy for consensus messages, whose senders retransmit on their own timers.
    pub fn try_send(&self, to: &PublicKey, class: Class, payload: Bytes) -> Result<(), SendError> {
        let link = self.link(to, class, payload.len())?;
        let queue = &link.queues[class.lane() as usize];
        queue
            .try_send(Outgoing { class, payload })
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => {
                    PeerCounters::add(&link.counters.queue_full, 1);
                    tracing::warn!(peer = ?to, ?class, "outgoing queue full; message refused");
                    SendError::QueueFull { peer: *to, class }
                }
                mpsc::error::TrySendError::Closed(_) => SendError::Closed,
            })
    }

    /// Queues a message, waiting for room: back-pressure for bulk producers. Call it from a plain thread, never
    /// from inside an async runtime (use [`Node::send`] there).
    pub fn send_blocking(
        &self,
        to: &PublicKey,
        class: Class,
        payload: Bytes,
    ) -> Result<(), SendError> {
        let link = self.link(to, class, payload.len())?;
        link.queues[class.lane() as usize]
            .blocking_send(Outgoing { class, payload })
            .map_err(|_| SendError::Closed)
    }

    /// Queues a message, waiting for room (any async executor).
    pub async fn send(
        &self,
        to: &PublicKey,
        class: Class,
        payload: Bytes,
    ) -> Result<(), SendError> {
        let link = self.link(to, class, payload.len())?;
        link.queues[class.lane() as usize]
            .send(Outgoing { class, payload })
            .await
            .map_err(|_| SendError::Closed)
    }

    /// Queues `payload` to every peer without waiting; returns the peers it could not be queued for, and why.
    pub fn broadcast(&self, class: Class, payload: Bytes) -> Vec<(PublicKey, SendError)> {
        let keys: Vec<PublicKey> = self
            .shared
            .peers
            .read()
            .expect("peers lock")
            .keys()
            .copied()
            .collect();
        keys.into_iter()
            .filter_map(|key| {
                self.try_send(&key, class, payload.clone())
                    .err()
                    .map(|error| (key, error))
            })
            .collect()
    }

    /// Relays a message that `origin` broadcast to our children in `tree`; returns those it could not be
    /// queued for (a child must be one of our peers).
    pub fn relay(
        &self,
        tree: &TwoTierTree,
        origin: PublicKey,
        class: Class,
        payload: Bytes,
    ) -> Result<Vec<(PublicKey, SendError)>, TreeError> {
        let children = tree.children(origin, self.shared.me)?;
        Ok(children
            .into_iter()
            .filter_map(|child| {
                self.try_send(&child, class, payload.clone())
                    .err()
                    .map(|error| (child, error))
            })
            .collect())
    }

    /// Queues an answer (opaque bytes the layer above encodes) for the client connected from `client` (the
    /// address of its `Origin::Client`), without waiting. Answers to one client are written in the order they
    /// were queued, on one node -> client stream. `Ok` means queued, not delivered: a client that disconnects
    /// loses what was queued for it.
    ///
    /// Errors: [`SendError::UnknownClient`] if no connection from `client` is open (never was, or closed);
    /// [`SendError::Oversize`] past [`CLIENT_ANSWER_PAYLOAD_BYTES_MAX`]; [`SendError::QueueFull`] (class
    /// `ClientAnswer`, zero peer key) when the client's queue ([`ANSWER_QUEUE_MAX`] answers or
    /// [`ANSWER_QUEUE_BYTES_MAX`] bytes) is full: the client is not reading its answers, so it is disconnected
    /// with close code `SLOW_CLIENT` and later answers to it are `UnknownClient`. Counted in [`EndpointStats`].
    pub fn answer(&self, client: SocketAddr, payload: Bytes) -> Result<(), SendError> {
        self.shared.clients.answer(client, payload)
    }

    /// Every peer's counters, ordered by key.
    pub fn peer_stats(&self) -> Vec<PeerStats> {
        let links = self.shared.peers.read().expect("peers lock");
        let mut stats: Vec<PeerStats> = links
            .iter()
            .map(|(key, link)| link.counters.snapshot(*key))
            .collect();
        stats.sort_by_key(|stats| stats.key);
        stats
    }

    pub fn endpoint_stats(&self) -> EndpointStats {
        let counters = &self.shared.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        EndpointStats {
            refused_handshakes: load(&counters.refused_handshakes),
            refused_connections: load(&counters.refused_connections),
            ingest_connections: load(&counters.ingest_connections),
            ingest_refused_full: load(&counters.ingest_refused_full),
            ingest_refused_per_source: load(&counters.ingest_refused_per_source),
            ingest_bad_frames: load(&counters.ingest_bad_frames),
            ingest_timeouts: load(&counters.ingest_timeouts),
            ingest_rejected: load(&counters.ingest_rejected),
            ingest_messages: load(&counters.ingest_messages),
            ingest_clients_open: self.shared.clients.connected() as u64,
            answers_sent: load(&self.shared.clients.sent),
            answers_refused_full: load(&self.shared.clients.refused_full),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let links = self.shared.peers.read().expect("peers lock");
        for link in links.values() {
            link.task.abort();
        }
    }
}

/// Accepts node connections: the TLS verifier has already refused unknown keys; here the dial direction and
/// the address are checked, then the connection goes to its peer's supervisor.
async fn accept_peers(shared: Arc<Shared>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        tokio::spawn(accept_peer(shared.clone(), incoming));
    }
}

async fn accept_peer(shared: Arc<Shared>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let connection = match incoming.await {
        Ok(connection) => connection,
        Err(error) => {
            PeerCounters::add(&shared.counters.refused_handshakes, 1);
            tracing::warn!(%remote, reason = %error, "refused a node connection");
            return;
        }
    };
    let refuse = |reason: &str| {
        PeerCounters::add(&shared.counters.refused_connections, 1);
        tracing::warn!(%remote, reason, "refused a node connection");
        connection.close(close_code::REFUSED.into(), reason.as_bytes());
    };
    let Some(key) = identity::peer_key(&connection) else {
        return refuse("no node key in the certificate");
    };
    let link = shared.peers.read().expect("peers lock").get(&key).cloned();
    let Some(link) = link else {
        return refuse("not a configured peer");
    };
    if key > shared.me {
        return refuse("the node with the smaller key dials");
    }
    if link.addr.ip() != remote.ip() {
        return refuse("the key connected from another address than configured");
    }
    if link.incoming.try_send(connection.clone()).is_err() {
        refuse("too many connections from this peer at once");
    }
}

/// The ingest endpoint's connection slots: in all, and per source ([`IngestLimits`]).
struct IngestSlots {
    limits: IngestLimits,
    /// Connections held, in all and by source. One short lock per connection opened or closed.
    held: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// Why a client was refused a slot.
enum NoSlot {
    Full,
    SourceFull,
}

/// One client connection's slot, given back when dropped.
struct IngestSlot {
    slots: Arc<IngestSlots>,
    source: IpAddr,
}

/// The source a client's connection counts against: its IPv4 address (also when written IPv4-mapped), or its
/// IPv6 /64, the block one host usually has, so one host cannot take a slot per address it owns.
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

impl IngestSlots {
    fn take(self: &Arc<Self>, ip: IpAddr) -> Result<IngestSlot, NoSlot> {
        let source = source_of(ip);
        let mut held = self.held.lock().expect("ingest slots lock");
        let (total, by_source) = &mut *held;
        if *total >= self.limits.connections_max {
            return Err(NoSlot::Full);
        }
        let of_source = by_source.entry(source).or_insert(0);
        if *of_source >= self.limits.connections_per_source_max {
            return Err(NoSlot::SourceFull);
        }
        *of_source += 1;
        *total += 1;
        Ok(IngestSlot {
            slots: self.clone(),
            source,
        })
    }
}

impl Drop for IngestSlot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().expect("ingest slots lock");
        let (total, by_source) = &mut *held;
        *total -= 1;
        let of_source = by_source
            .get_mut(&self.source)
            .expect("a held slot has its source counted");
        *of_source -= 1;
        if *of_source == 0 {
            by_source.remove(&self.source);
        }
        debug_assert!(by_source.values().sum::<usize>() == *total);
    }
}

/// Accepts client connections on the ingest endpoint, up to [`IngestLimits::connections_max`] at once and
/// [`IngestLimits::connections_per_source_max`] from one source; more are refused before the handshake.
async fn accept_clients(shared: Arc<Shared>, ingest: quinn::Endpoint) {
    let slots = Arc::new(IngestSlots {
        limits: shared.ingest_limits,
        held: Mutex::new((0, HashMap::new())),
    });
    while let Some(incoming) = ingest.accept().await {
        let remote = incoming.remote_address();
        let slot = match slots.take(remote.ip()) {
            Ok(slot) => slot,
            Err(NoSlot::Full) => {
                PeerCounters::add(&shared.counters.ingest_refused_full, 1);
                tracing::warn!(%remote, "refused a client: ingest connections at the limit");
                incoming.refuse();
                continue;
            }
            Err(NoSlot::SourceFull) => {
                PeerCounters::add(&shared.counters.ingest_refused_per_source, 1);
                tracing::warn!(%remote, "refused a client: its source holds the most ingest connections one may");
                incoming.refuse();
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let connection = match incoming.await {
                Ok(connection) => connection,
                Err(error) => {
                    PeerCounters::add(&shared.counters.refused_handshakes, 1);
                    tracing::warn!(%remote, reason = %error, "refused a client connection");
                    return;
                }
            };
            PeerCounters::add(&shared.counters.ingest_connections, 1);
            tracing::debug!(%remote, "client connected");
            serve_client(&shared, remote, connection).await;
            tracing::debug!(%remote, "client disconnected");
            drop(slot);
        });
    }
}

/// How a client connection ends, seen from the node.
enum ClientEnd {
    /// The client closed it, or it was lost.
    Gone,
    /// The answer writer stopped (the client was forgotten, or a write failed).
    WriterStopped(String),
    /// The node refuses the client: `code` and `reason` are the close's.
    Refused { code: u32, reason: String },
}

/// Serves one client connection: its streams in, its answers out, its idle bound. A refused client (a broken
/// frame, a timeout) is read no more, forgotten (later answers to it are `UnknownClient`), then given up to
/// [`ANSWER_DRAIN_WAIT_MS`] to receive the answers already queued for it before the close.
async fn serve_client(shared: &Arc<Shared>, remote: SocketAddr, connection: quinn::Connection) {
    let limits = shared.ingest_limits;
    let activity = Arc::new(Activity::new());
    let writer = shared
        .clients
        .register(remote, connection.clone(), activity.clone())
        .run(&shared.clients.sent);
    tokio::pin!(writer);
    let reader = read_streams(
        shared.clone(),
        Origin::Client(remote),
        connection.clone(),
        None,
        Some(&activity),
    );
    let end = tokio::select! {
        refused = reader => match refused {
            None => ClientEnd::Gone,
            Some(error) => {
                let counter = match error {
                    FrameError::Timeout { .. } => &shared.counters.ingest_timeouts,
                    _ => &shared.counters.ingest_bad_frames,
                };
                PeerCounters::add(counter, 1);
                let code = match error {
                    FrameError::Timeout { .. } => close_code::TIMEOUT,
                    _ => close_code::BAD_FRAME,
                };
                ClientEnd::Refused { code, reason: error.to_string() }
            }
        },
        reason = &mut writer => ClientEnd::WriterStopped(reason),
        () = activity.idle(limits.idle_timeout_ms) => {
            PeerCounters::add(&shared.counters.ingest_timeouts, 1);
            ClientEnd::Refused {
                code: close_code::TIMEOUT,
                reason: format!("idle for {} ms", limits.idle_timeout_ms),
            }
        }
    };
    match end {
        ClientEnd::Gone => {}
        ClientEnd::WriterStopped(reason) => {
            tracing::debug!(%remote, %reason, "client answer stream ended");
            connection.close(close_code::SHUTDOWN.into(), reason.as_bytes());
        }
        ClientEnd::Refused { code, reason } => {
            tracing::warn!(%remote, %reason, "closing a client connection once its queued answers are sent");
            // Forgetting the client closes its queue: the writer sends what it holds, then ends.
            shared.clients.deregister(remote, connection.stable_id());
            let drain = Duration::from_millis(ANSWER_DRAIN_WAIT_MS);
            if tokio::time::timeout(drain, &mut writer).await.is_err() {
                tracing::warn!(%remote, "the refused client did not take its answers in time");
            }
            connection.close(code.into(), reason.as_bytes());
        }
    }
    shared.clients.deregister(remote, connection.stable_id());
}

/// Reads every stream the far side opens until the connection ends (`None`) or one stream's frame is refused
/// (`Some`, the first such error; the other streams are no longer read). Each frame received marks `activity`.
async fn read_streams(
    shared: Arc<Shared>,
    origin: Origin,
    connection: quinn::Connection,
    counters: Option<Arc<PeerCounters>>,
    activity: Option<&Arc<Activity>>,
) -> Option<FrameError> {
    let mut readers = JoinSet::new();
    loop {
        tokio::select! {
            accepted = connection.accept_uni() => match accepted {
                Ok(recv) => {
                    readers.spawn(read_stream(
                        shared.clone(),
                        origin,
                        recv,
                        counters.clone(),
                        activity.cloned(),
                    ));
                }
                Err(_) => return None,
            },
            // Also reaps finished readers, so the set stays bounded by the stream limit.
            Some(done) = readers.join_next() => {
                if let Ok(Some(error)) = done {
                    return Some(error);
                }
            }
        }
    }
}

/// Reads a peer's streams until the connection ends; a refused frame closes the connection.
async fn read_peer_streams(
    shared: Arc<Shared>,
    key: PublicKey,
    connection: quinn::Connection,
    counters: Arc<PeerCounters>,
) {
    let origin = Origin::Peer(key);
    let refused = read_streams(
        shared,
        origin,
        connection.clone(),
        Some(counters.clone()),
        None,
    )
    .await;
    if let Some(error) = refused {
        PeerCounters::add(&counters.bad_frames, 1);
        let reason = error.to_string();
        tracing::warn!(?origin, %reason, "closing the connection: bad frame");
        connection.close(close_code::BAD_FRAME.into(), reason.as_bytes());
    }
}

/// Reads frames from one stream: checks, validates and delivers each, until the stream ends (`None`) or a frame
/// is refused (`Some`). A client's payload the validator refuses is answered with the validator's rejection, if
/// it has one, and reading goes on.
async fn read_stream(
    shared: Arc<Shared>,
    origin: Origin,
    recv: quinn::RecvStream,
    counters: Option<Arc<PeerCounters>>,
    activity: Option<Arc<Activity>>,
) -> Option<FrameError> {
    let frame_timeout = match origin {
        Origin::Client(_) => Some(Duration::from_millis(shared.ingest_limits.frame_timeout_ms)),
        // Peers are authenticated nodes whose bulk frames may be large on a busy link.
        Origin::Peer(_) => None,
    };
    let mut stream_lane: Option<Lane> = None;
    let mut frames = FrameReader::new(recv);
    loop {
        // Checked from the header alone, before the payload is read: clients send only transactions (an answer
        // is node -> client), peers only classes between nodes, each stream on one lane.
        let check = |class: Class| {
            let lane_error = match origin {
                Origin::Client(_) if !Class::FROM_CLIENTS.contains(&class) => {
                    Some("ingest stream from a client")
                }
                Origin::Client(_) => None,
                Origin::Peer(_) if !class.between_nodes() => Some("node connection"),
                Origin::Peer(_) => match stream_lane {
                    Some(lane) if lane != class.lane() => Some(lane.name()),
                    _ => None,
                },
            };
            match lane_error {
                Some(lane) => Err(FrameError::WrongLane { class, lane }),
                None => Ok(()),
            }
        };
        let (class, payload) = match frames.next(frame_timeout, check).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return None,
            Err(FrameError::Read(reason)) => {
                tracing::debug!(?origin, %reason, "stream ended");
                return None;
            }
            Err(error) => return Some(error),
        };
        debug_assert!(
            class.between_nodes() || class == Class::Mining,
            "refused by the check above"
        );
        if let Some(activity) = &activity {
            activity.touch();
        }
        stream_lane = Some(class.lane());
        if let Err(reason) = shared.validator.validate(class, &payload) {
            let Origin::Client(client) = origin else {
                return Some(FrameError::Invalid { class, reason });
            };
            let Some(rejection) = shared.validator.rejection(class, &reason) else {
                return Some(FrameError::Invalid { class, reason });
            };
            PeerCounters::add(&shared.counters.ingest_rejected, 1);
            tracing::debug!(%client, ?class, %reason, "answered a rejection for a client's payload");
            if let Err(error) = shared.clients.answer(client, rejection) {
                // The client is being disconnected (its answer queue is full, or it is gone): read no more.
                tracing::debug!(%client, %error, "rejection not queued");
                return None;
            }
            continue;
        }
        let queue = match origin {
            Origin::Peer(_) => &shared.inbound[class.lane() as usize],
            Origin::Client(_) => &shared.inbound_ingest,
        };
        if let Some(counters) = &counters {
            PeerCounters::add(&counters.messages_received, 1);
            PeerCounters::add(
                &counters.bytes_received,
                (FRAME_HEADER_BYTES + payload.len()) as u64,
            );
        } else {
            PeerCounters::add(&shared.counters.ingest_messages, 1);
        }
        // Waiting here is the back-pressure: this stream stops being read, QUIC flow control stalls the sender.
        if queue
            .send(Inbound {
                origin,
                class,
                payload,
            })
            .await
            .is_err()
        {
            return None;
        }
        shared.waker.wake();
    }
}

/// Keeps one peer connected for as long as it is configured.
struct Supervisor {
    shared: Arc<Shared>,
    key: PublicKey,
    addr: SocketAddr,
    queues: [mpsc::Receiver<Outgoing>; 2],
    /// Per lane, the messages taken from the queue whose write a lost connection interrupted: sent first on the
    /// next connection, so a reconnect never loses a dequeued message (it may deliver some twice).
    unsent: [Vec<Outgoing>; 2],
    incoming: mpsc::Receiver<quinn::Connection>,
    counters: Arc<PeerCounters>,
}

enum SessionEnd {
    Closed(String),
    Replaced(quinn::Connection),
}

impl Supervisor {
    async fn run(mut self) {
        let dials = self.shared.me < self.key;
        let mut backoff = Backoff::default();
        let mut pending: Option<quinn::Connection> = None;
        loop {
            let connection = if let Some(connection) = pending.take() {
                connection
            } else if dials {
                match self.dial().await {
                    Ok(connection) => connection,
                    Err(reason) => {
                        PeerCounters::add(&self.counters.connect_failures, 1);
                        let delay = backoff.next_delay();
                        tracing::warn!(peer = ?self.key, addr = %self.addr, %reason, ?delay, "dial failed");
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                }
            } else {
                match self.incoming.recv().await {
                    Some(connection) => connection,
                    None => return,
                }
            };
            backoff.reset();
            self.counters.session_started();
            tracing::info!(peer = ?self.key, remote = %connection.remote_address(), "peer connected");
            let end = self.session(&connection).await;
            self.counters.session_ended();
            match end {
                SessionEnd::Replaced(newer) => {
                    tracing::info!(peer = ?self.key, "peer reconnected; replacing the old connection");
                    connection.close(
                        close_code::REPLACED.into(),
                        b"replaced by a newer connection",
                    );
                    pending = Some(newer);
                }
                SessionEnd::Closed(reason) => {
                    tracing::info!(peer = ?self.key, %reason, "peer disconnected");
                    connection.close(close_code::SHUTDOWN.into(), b"session ended");
                    if dials {
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
        }
    }

    async fn dial(&self) -> Result<quinn::Connection, String> {
        let config = identity::node_client_config(&self.shared.identity, self.key)
            .map_err(|error| error.to_string())?;
        let connecting = self
            .shared
            .endpoint
            .connect_with(config, self.addr, identity::SERVER_NAME)
            .map_err(|error| error.to_string())?;
        match tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), connecting).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no handshake within {CONNECT_TIMEOUT_MS} ms")),
        }
    }

    /// Serves one connection: a stream per lane out, every stream in, RTT samples, until it ends or is replaced.
    async fn session(&mut self, connection: &quinn::Connection) -> SessionEnd {
        let mut readers = JoinSet::new();
        readers.spawn(read_peer_streams(
            self.shared.clone(),
            self.key,
            connection.clone(),
            self.counters.clone(),
        ));
        let mut streams = Vec::with_capacity(Lane::BETWEEN_NODES.len());
        for lane in Lane::BETWEEN_NODES {
            match connection.open_uni().await {
                Ok(send) => {
                    send.set_priority(lane.priority())
                        .expect("a fresh stream accepts a priority");
                    streams.push(send);
                }
                Err(error) => {
                    return SessionEnd::Closed(format!("opening the {}: {error}", lane.name()))
                }
            }
        }
        let [consensus_send, bulk_send] = &mut streams[..] else {
            unreachable!("one stream per lane")
        };
        let [consensus_queue, bulk_queue] = &mut self.queues;
        let [consensus_unsent, bulk_unsent] = &mut self.unsent;
        let counters = &self.counters;
        tokio::select! {
            reason = write_lane(Lane::Consensus, consensus_send, consensus_queue, consensus_unsent, counters) => {
                SessionEnd::Closed(reason)
            }
            reason = write_lane(Lane::Bulk, bulk_send, bulk_queue, bulk_unsent, counters) => {
                SessionEnd::Closed(reason)
            }
            error = connection.closed() => SessionEnd::Closed(error.to_string()),
            newer = self.incoming.recv() => match newer {
                Some(newer) => SessionEnd::Replaced(newer),
                None => SessionEnd::Closed("peer removed".to_string()),
            },
            () = sample_rtt(connection, counters) => unreachable!("sampling runs until cancelled"),
        }
    }
}

/// Writes one lane's queue to its stream until the queue closes or a write fails. What is queued when the writer
/// comes round goes out in one write ([`take_batch`]).
async fn write_lane(
    lane: Lane,
    send: &mut quinn::SendStream,
    queue: &mut mpsc::Receiver<Outgoing>,
    unsent: &mut Vec<Outgoing>,
    counters: &PeerCounters,
) -> String {
    loop {
        if unsent.is_empty() {
            take_batch(queue, unsent, |message| message.payload.len()).await;
            if unsent.is_empty() {
                return format!("{} queue closed", lane.name());
            }
        }
        let frames = unsent
            .iter()
            .map(|message| (message.class, message.payload.clone()));
        if let Err(error) = write_frames(send, frames).await {
            PeerCounters::add(&counters.lost_on_disconnect, unsent.len() as u64);
            return format!("writing on the {}: {error}", lane.name());
        }
        let bytes: usize = unsent
            .iter()
            .map(|message| FRAME_HEADER_BYTES + message.payload.len())
            .sum();
        PeerCounters::add(&counters.messages_sent, unsent.len() as u64);
        PeerCounters::add(&counters.bytes_sent, bytes as u64);
        unsent.clear();
    }
}

async fn sample_rtt(connection: &quinn::Connection, counters: &PeerCounters) {
    let mut ticker = tokio::time::interval(Duration::from_millis(RTT_SAMPLE_MS));
    loop {
        ticker.tick().await;
        let rtt_us = connection.rtt().as_micros().min(u64::MAX as u128) as u64;
        counters.rtt_us.store(rtt_us, Ordering::Relaxed);
    }
}
