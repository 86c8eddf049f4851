//! Every bound of the transport in one place: frame sizes, queue depths, stream and connection counts, timers.
//! Each limit says what happens when it is reached; the relations between them are checked at compile time.

/// Bytes of a frame header: the payload length (u32, little-endian) then the class (u8).
pub const FRAME_HEADER_BYTES: usize = 5;

/// Payload bytes of one consensus message (proposal, vote, timeout). A proposal carries package certificates and
/// a quorum certificate, never transactions, so 1 MiB is generous; a larger frame closes the connection.
pub const CONSENSUS_PAYLOAD_BYTES_MAX: usize = 1024 * 1024;
/// Payload bytes of one bulk message (a package, a block-sync piece). Blocks larger than this are synced in
/// pieces by the layer above; a larger frame closes the connection.
pub const BULK_PAYLOAD_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Payload bytes of one client transaction: the engine's own limit, so the frame check and the decoder agree.
pub const CLIENT_TX_PAYLOAD_BYTES_MAX: usize = cas_engine::codec::TX_BYTES_MAX;
/// Payload bytes of one answer from the node to a client (an answer to a submit, a final receipt). Answers are
/// small; a larger one is refused by `Node::answer` (`Oversize`), and a client receiving one closes the connection.
pub const CLIENT_ANSWER_PAYLOAD_BYTES_MAX: usize = 64 * 1024;
/// The largest mining request (a found witness header, whose own bound is 64 KiB, with its envelope).
pub const MINING_PAYLOAD_BYTES_MAX: usize = 80 * 1024;

/// Outgoing consensus messages queued per peer. Full: `try_send` answers `QueueFull` at once and the rejection is
/// counted and logged; consensus retransmits on its own timers, so nothing is dropped silently.
pub const CONSENSUS_QUEUE_MAX: usize = 1024;
/// Outgoing bulk messages queued per peer (64 x 256 KiB packages = 16 MiB). Full: `try_send` answers
/// `QueueFull`, `send_blocking` waits for room (back-pressure to the producer).
pub const BULK_QUEUE_MAX: usize = 64;
/// Received consensus messages waiting for the consensus thread. Full: the stream's reader waits, so QUIC flow
/// control slows that peer only on this lane.
pub const INBOUND_CONSENSUS_MAX: usize = 4096;
/// Received bulk messages waiting for the layer above. Full: the reader waits (flow control pushes back).
pub const INBOUND_BULK_MAX: usize = 256;
/// Received client transactions waiting for validation. Full: the reader waits, so clients are slowed by QUIC
/// flow control (back-pressure to clients, never a silent drop).
pub const INBOUND_INGEST_MAX: usize = 8192;
/// Submissions (a transaction, or a batch of at most [`CLIENT_BATCH_TXS_MAX`]) a client may queue before `submit`
/// blocks.
pub const CLIENT_QUEUE_MAX: usize = 1024;
/// Transactions in one queued batch of `IngestClient::submit_batch`; larger batches are split.
pub const CLIENT_BATCH_TXS_MAX: usize = 1024;
/// Answers queued on the node for one client connection, waiting for that client's answer stream. Full (this
/// or [`ANSWER_QUEUE_BYTES_MAX`]): the client is not reading its answers, so `Node::answer` refuses the answer
/// with `QueueFull` at once, counts it, and closes that client's connection with code `SLOW_CLIENT`; later
/// answers to it are `UnknownClient`. A disconnected client learns why; a node never holds unread answers
/// without bound, nor drops one while the client believes it is still connected.
pub const ANSWER_QUEUE_MAX: usize = 32 * 1024;
/// Payload bytes queued on the node for one client connection (the other bound of its answer queue): a few seconds
/// of answers to a client submitting thousands of transactions a second, so a node briefly short of CPU does not
/// disconnect a client that reads. With [`INGEST_CONNECTIONS_MAX`] clients this bounds all queued answers to 8 GiB.
pub const ANSWER_QUEUE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Answers a client has received and not yet taken with `recv_answer`. Full: the client's reader waits, so QUIC
/// flow control stalls the node's writer for that client, and then its node-side queue fills (see
/// [`ANSWER_QUEUE_MAX`]).
pub const CLIENT_ANSWER_INBOX_MAX: usize = 4096;

/// Unidirectional streams a peer or client may have open towards us at once (one per lane, plus slack for a
/// stream being replaced). More are refused by QUIC's own stream limit.
pub const STREAMS_PER_CONNECTION_MAX: u32 = 8;
/// Client connections served at once by the ingest endpoint; more are refused before the handshake, logged and
/// counted (`EndpointStats::ingest_refused_full`).
pub const INGEST_CONNECTIONS_MAX: usize = 1024;
/// Client connections one source may hold at once on the ingest endpoint: a source is an IPv4 address, or an IPv6
/// /64 (what one host usually gets). More are refused before the handshake, logged and counted
/// (`EndpointStats::ingest_refused_per_source`), so one process can take at most a sixteenth of
/// [`INGEST_CONNECTIONS_MAX`] and never lock the others out. Load generators and exchanges behind one address
/// open a few connections each; those needing more set [`IngestLimits`] higher.
pub const INGEST_CONNECTIONS_PER_SOURCE_MAX: usize = 64;
/// A client connection on which nothing happens for this long (no frame received, no answer written) is closed
/// with code `TIMEOUT` and counted: an abandoned connection gives its slot back. QUIC keep-alives do not count,
/// since they keep a connection open without carrying anything. Long enough for a client waiting for a final
/// receipt.
pub const INGEST_IDLE_TIMEOUT_MS: u64 = 60_000;
/// A client frame whose first header byte has been read must be complete (header and payload) within this long,
/// or the connection is closed with code `TIMEOUT` and counted: a half-sent frame cannot hold a reader, a
/// buffer and a slot for ever. A frame of [`CLIENT_TX_PAYLOAD_BYTES_MAX`] takes milliseconds on any live link.
pub const INGEST_FRAME_TIMEOUT_MS: u64 = 10_000;
/// How long a client connection refused for a broken frame (or a timeout) stays open to deliver the answers
/// already queued for it before the close; it reads nothing more meanwhile.
pub const ANSWER_DRAIN_WAIT_MS: u64 = 5_000;
/// Handshakes in progress at once on one endpoint; more are refused by quinn.
pub const HANDSHAKES_MAX: usize = 256;
/// Peers one node keeps connections with (committee plus its broadcast children).
pub const PEERS_MAX: usize = cas_engine::codec::COMMITTEE_MAX + 64;

/// First reconnect delay after a failed or lost connection.
pub const BACKOFF_INITIAL_MS: u64 = 50;
/// Reconnect delays double up to this cap.
pub const BACKOFF_MAX_MS: u64 = 5_000;
/// A dial that has not completed its handshake by then counts as failed.
pub const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// A connection silent for this long is closed (keep-alives keep live ones open).
pub const IDLE_TIMEOUT_MS: u64 = 10_000;

/// The largest UDP payload an endpoint accepts and path MTU discovery searches up to. QUIC starts every path at
/// 1,200 bytes and raises it only once a probe of a larger size is acknowledged, so a 1,500-byte network stays at
/// quinn's usual 1,452 while loopback and links with jumbo frames carry four and a half times as much per datagram:
/// a packet's fixed cost (a header, its encryption, an ACK, a trip through the kernel) is paid that much less often.
/// Bounded by segmentation offload: quinn sends up to ten equal datagrams in one GSO send, which the kernel takes
/// only up to 64 KiB in all; with 8,952-byte datagrams (a 9,000-byte jumbo frame) the local cluster stalled, most
/// likely because those sends failed, and at 6,500 (ten fit) it does not. (The UDP receive buffers grow with it.)
pub const UDP_PAYLOAD_MAX: u16 = 6_500;
/// Keep-alive interval; also how quickly a vanished peer is noticed together with the idle timeout.
pub const KEEP_ALIVE_MS: u64 = 1_000;
/// How often a connected peer's RTT is sampled into its counters.
pub const RTT_SAMPLE_MS: u64 = 500;
/// How long shutdown waits for peers to acknowledge the close.
pub const SHUTDOWN_WAIT_MS: u64 = 1_000;

/// How long a finishing client waits for the node to read what it queued.
pub const FLUSH_WAIT_MS: u64 = 10_000;

/// Frames a stream writer takes from its queue for one write when more than one is waiting: one write (one wake
/// of the connection) carries them all, so many small messages cost about what one does. The first frame is
/// always taken, whatever its size; more are added while the write stays under [`WRITE_BATCH_BYTES_MAX`].
pub const WRITE_BATCH_FRAMES_MAX: usize = 512;
/// Bytes one coalesced write carries at most (past the first frame), so a lane's write never grows unbounded.
pub const WRITE_BATCH_BYTES_MAX: usize = 1024 * 1024;

/// Children per node in the third tier of the broadcast tree.
pub const FANOUT_DEFAULT: usize = 8;

/// The ingest endpoint's bounds as a node is configured with them; [`IngestLimits::default`] is the constants
/// above. Tests set them low (on loopback every client shares one source address); an operator may raise the
/// per-source limit for a gateway that many clients share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestLimits {
    /// See [`INGEST_CONNECTIONS_MAX`].
    pub connections_max: usize,
    /// See [`INGEST_CONNECTIONS_PER_SOURCE_MAX`]; at least 1 and at most `connections_max`.
    pub connections_per_source_max: usize,
    /// See [`INGEST_IDLE_TIMEOUT_MS`]; positive.
    pub idle_timeout_ms: u64,
    /// See [`INGEST_FRAME_TIMEOUT_MS`]; positive.
    pub frame_timeout_ms: u64,
}

impl Default for IngestLimits {
    fn default() -> IngestLimits {
        IngestLimits {
            connections_max: INGEST_CONNECTIONS_MAX,
            connections_per_source_max: INGEST_CONNECTIONS_PER_SOURCE_MAX,
            idle_timeout_ms: INGEST_IDLE_TIMEOUT_MS,
            frame_timeout_ms: INGEST_FRAME_TIMEOUT_MS,
        }
    }
}

impl IngestLimits {
    /// Why these limits cannot work, if they cannot.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.connections_max == 0 {
            return Err("connections_max must be positive");
        }
        if self.connections_per_source_max == 0
            || self.connections_per_source_max > self.connections_max
        {
            return Err("connections_per_source_max must be within 1..=connections_max");
        }
        if self.idle_timeout_ms == 0 || self.frame_timeout_ms == 0 {
            return Err("the ingest timeouts must be positive");
        }
        Ok(())
    }
}

const _: () = assert!(CONSENSUS_PAYLOAD_BYTES_MAX <= BULK_PAYLOAD_BYTES_MAX);
const _: () = assert!(CLIENT_TX_PAYLOAD_BYTES_MAX <= CONSENSUS_PAYLOAD_BYTES_MAX);
const _: () = assert!(MINING_PAYLOAD_BYTES_MAX <= CONSENSUS_PAYLOAD_BYTES_MAX);
const _: () = assert!(CLIENT_ANSWER_PAYLOAD_BYTES_MAX <= ANSWER_QUEUE_BYTES_MAX);
// The length field is a u32 with room to spare.
const _: () = assert!(BULK_PAYLOAD_BYTES_MAX < u32::MAX as usize);
const _: () = assert!(BACKOFF_INITIAL_MS > 0 && BACKOFF_INITIAL_MS <= BACKOFF_MAX_MS);
const _: () = assert!(KEEP_ALIVE_MS < IDLE_TIMEOUT_MS);
const _: () = assert!(STREAMS_PER_CONNECTION_MAX >= 2);
// One source holds at most a sixteenth of the ingest slots: at least sixteen are needed to fill the endpoint.
const _: () = assert!(
    INGEST_CONNECTIONS_PER_SOURCE_MAX > 0
        && INGEST_CONNECTIONS_PER_SOURCE_MAX * 16 <= INGEST_CONNECTIONS_MAX
);
// A frame in progress is bounded more tightly than the silence between frames, and keep-alives (which carry
// nothing) come far more often than either.
const _: () = assert!(INGEST_FRAME_TIMEOUT_MS <= INGEST_IDLE_TIMEOUT_MS);
const _: () = assert!(KEEP_ALIVE_MS < INGEST_FRAME_TIMEOUT_MS && ANSWER_DRAIN_WAIT_MS > 0);
const _: () = assert!(CONSENSUS_QUEUE_MAX > 0 && BULK_QUEUE_MAX > 0 && CLIENT_QUEUE_MAX > 0);
const _: () = assert!(ANSWER_QUEUE_MAX > 0 && CLIENT_ANSWER_INBOX_MAX > 0);
// quinn's bounds (the QUIC minimum, the largest UDP payload), and ten datagrams within one 64 KiB GSO send.
const _: () = assert!(UDP_PAYLOAD_MAX >= 1_200 && UDP_PAYLOAD_MAX as usize * 10 <= 65_000);
const _: () =
    assert!(WRITE_BATCH_FRAMES_MAX > 0 && WRITE_BATCH_BYTES_MAX >= CLIENT_ANSWER_PAYLOAD_BYTES_MAX);
