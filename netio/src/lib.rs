//! CAS transport: QUIC between committee nodes and from clients. quinn runs on tokio's current-thread runtime in
//! its own thread ("cas-netio"); the rest of the node talks to it through bounded queues only. It never imports
//! shards or consensus: payloads are bytes tagged with a [`frame::Class`], checked by a [`frame::Validator`] the
//! layer above supplies (e.g. the engine's `decode_tx` for client transactions).
//!
//! # Protocol
//! - **Identity** ([`identity`]): each node's TLS certificate is self-signed by its ed25519 node key, so the key
//!   in the certificate *is* the node id. The dialer accepts only the key configured for the address it dials;
//!   the acceptor accepts only configured peer keys, connecting from the configured IP. Either way the TLS 1.3
//!   handshake signature is verified under that same key (cofactored ed25519 from the engine). Refusals are
//!   logged with a reason and counted. Clients use a separate ingest endpoint (ALPN `cas-ingest/1`) that asks
//!   for no certificate; clients check the node's key.
//! - **Who dials**: of two peers, the one with the smaller key dials; the other waits. One connection per pair,
//!   no races. A newer connection from a peer replaces the old one (a restart).
//! - **Frames** ([`frame`]): `[len u32 LE][class u8][payload]`; the length is checked against the class's limit
//!   ([`limits`]) before anything is allocated, and the payload buffer grows with the bytes that arrive, never
//!   to the declared length up front. An unknown class, an oversize or truncated frame, a class on the wrong
//!   lane or a payload the validator rejects closes that connection with code `BAD_FRAME` and the reason as the
//!   close reason (for clients, see the refusal policy below); every other connection is untouched. Where a
//!   stream can carry only some classes, the class is checked from the header, before the payload is read.
//! - **Lanes**: between nodes, a unidirectional stream per lane per direction. Consensus (proposal, vote,
//!   timeout) has quinn priority 100, bulk (package, block sync, gossiped transaction) priority 0, so a vote
//!   never waits behind a 256 KiB package being written. Inbound, each lane has its own queue.
//! - **Queues and policies**: consensus out, per peer, [`limits::CONSENSUS_QUEUE_MAX`]: a full queue answers
//!   `QueueFull` at once, counted and logged (consensus retransmits on its timers; nothing is dropped
//!   silently). Bulk out, per peer, [`limits::BULK_QUEUE_MAX`]: `try_send` answers `QueueFull`, `send_blocking`
//!   and `send` wait (back-pressure). Inbound queues full: the stream's reader waits, so QUIC flow control slows
//!   that sender on that lane only; clients are slowed the same way (never dropped). A message dequeued but cut
//!   off by a lost connection is sent again first on the next one (at-least-once across reconnects).
//! - **Ingest endpoint and the answer path**: a client connection has one stream client -> node carrying only
//!   [`Class::ClientTx`] and [`Class::Mining`] (a standalone miner's requests) (delivered as
//!   `Inbound { origin: Origin::Client(addr), .. }` after the validator), and
//!   one stream node -> client carrying only [`Class::ClientAnswer`] (opaque bytes the node encodes: accepted,
//!   duplicate, rejected, overloaded, final receipts; at most [`limits::CLIENT_ANSWER_PAYLOAD_BYTES_MAX`]).
//!   `ClientAnswer` is never sent between nodes (`WrongClass`); one received from a client or a peer is a
//!   wrong-lane frame (`BAD_FRAME`), before any validator sees it. [`Node::answer`] queues an answer for the
//!   connection of `Origin::Client(addr)` without waiting; its writer opens the node -> client stream with the
//!   first answer and writes them in queue order. Each client's queue holds [`limits::ANSWER_QUEUE_MAX`]
//!   answers or [`limits::ANSWER_QUEUE_BYTES_MAX`] bytes. **Policy when full**: the client is not reading its
//!   answers, so that answer is refused with `QueueFull` at once, the refusal is counted and logged, and the
//!   client is disconnected with close code `SLOW_CLIENT` (QUIC delivers the reason unless the close packet is
//!   lost, then the client sees a reset); later answers to it, like answers to any client not connected, are
//!   `UnknownClient`. The node never holds unread answers without bound, and never drops one while the client
//!   believes it is still connected. A client's state (queue, writer) goes when its connection closes; `Ok`
//!   from `answer` means queued, not delivered. The client ([`ingest::IngestClient`]) reads its answer stream
//!   into an inbox of [`limits::CLIENT_ANSWER_INBOX_MAX`]: full, its reader waits and flow control holds the
//!   node's writer; any frame but a `ClientAnswer` within its limit, or a second answer stream, closes the
//!   connection as a bad frame. Answers received before a disconnection are still handed out, then
//!   `NetError::ConnectionLost` with the reason.
//! - **Ingest bounds** ([`IngestLimits`], set in [`NodeConfig`]): at most `connections_max` client connections
//!   in all and `connections_per_source_max` from one source (an IPv4 address or an IPv6 /64), so one process
//!   cannot lock honest clients out; more are refused before the handshake and counted
//!   (`ingest_refused_full`, `ingest_refused_per_source`). A client connection with no frame received and no
//!   answer written for `idle_timeout_ms`, or a frame whose first byte was read and that is not complete within
//!   `frame_timeout_ms`, is closed with code `TIMEOUT` (counted in `ingest_timeouts`), so a silent or half-sent
//!   client gives its slot and its buffer back.
//! - **Refusing a client frame without losing its answers**: a client's transactions are answered later
//!   (accepted once certified, final once committed), so closing its connection at its first bad frame would
//!   lose the answers owed for the valid ones before it. Two rules keep them: (1) a payload the validator
//!   refuses, where the validator supplies an answer for it ([`Validator::rejection`]; the node's answers a
//!   `Rejected`), is answered on the client's answer stream like any other answer and the connection carries on
//!   (counted in `ingest_rejected`); the rejection may reach the client before answers to earlier
//!   transactions, which arrive as usual. (2) A frame that breaks the framing itself (bad header, wrong class,
//!   truncated, timed out), or a refused payload with no rejection answer, ends the connection, but gracefully:
//!   the node stops reading it and forgets the client (later answers to it are `UnknownClient`, a typed error
//!   to the layer above), writes the answers already queued, waits up to [`limits::ANSWER_DRAIN_WAIT_MS`] for
//!   the client to acknowledge them, then closes with the reason. Answers that the layer above produces after
//!   that point (e.g. a final receipt) are not delivered on that connection: the client learns from the close
//!   that it broke the protocol and asks for the status of what it sent.
//! - **Peers** ([`node`], [`peer`]): a supervisor task per peer dials with capped exponential backoff
//!   (50 ms doubling to 5 s) and keeps counters: bytes, messages, RTT, reconnects, refusals, full queues.
//! - **Broadcast** ([`broadcast`]): send-to-all to the committee, and the deterministic two-tier tree
//!   (DPOS -> POS -> the rest) that every node derives from the member lists alone and relays along.
//!
//! # Dependencies and why each earns its place
//! - `quinn` (chosen in DESIGN) with `tokio` as its runtime: measured ~4x faster than quinn on glommio here.
//! - `rustls` with the `ring` provider installed explicitly in every config (no process-wide default to be
//!   missing at start): quinn's TLS 1.3; `ring` because quinn's `rustls-ring` feature already builds it.
//! - `rcgen`: makes the self-signed X.509 certificate carrying the node's ed25519 key; writing DER by hand would
//!   be more code to get wrong. Reading the key back out is a 40-line bounded DER walk ([`identity`]), not a
//!   full X.509 parser.
//! - `bytes`: quinn's buffer type; one payload shared by every peer of a broadcast without copies.
//! - `tracing` for logs, `thiserror` for the typed errors. tokio's bounded `mpsc` is the bridge: it works from
//!   plain threads (`blocking_recv`, `try_send`) and from any async executor, so no extra channel crate.

mod answers;
pub mod broadcast;
pub mod error;
pub mod frame;
pub mod identity;
pub mod ingest;
pub mod limits;
pub mod node;
pub mod peer;
mod thread;

pub use error::{FrameError, NetError, SendError};
pub use frame::{Class, Lane, Validator};
pub use limits::IngestLimits;
pub use node::{Inbound, InboundQueues, InboundWaker, Node, NodeConfig, Origin, Peer};
