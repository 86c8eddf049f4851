//! The crate's typed errors: frame decoding, configuration and start-up, and sending. Each carries what an
//! operator needs to find the cause (the peer, the class, the sizes).

use cas_engine::PublicKey;

use crate::frame::Class;

/// Why a frame (or the stream carrying it) was refused. The connection that sent it is closed with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unknown message class {0}")]
    UnknownClass(u8),
    #[error("{class:?} frame of {len} bytes exceeds the limit of {max}")]
    Oversize {
        class: Class,
        len: usize,
        max: usize,
    },
    #[error("stream ended inside a frame ({got} of {want} bytes)")]
    Truncated { got: usize, want: usize },
    #[error("{class:?} is not allowed on this {lane}")]
    WrongLane { class: Class, lane: &'static str },
    #[error("{class:?} payload rejected by the decoder: {reason}")]
    Invalid { class: Class, reason: String },
    #[error("stream read failed: {0}")]
    Read(String),
    /// A client frame begun but not completed in time (`limits::INGEST_FRAME_TIMEOUT_MS`).
    #[error("frame not completed within {timeout_ms} ms of its first byte")]
    Timeout { timeout_ms: u64 },
}

/// Start-up and configuration failures.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("certificate for the node key: {0}")]
    Certificate(String),
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the netio thread: {0}")]
    Thread(std::io::Error),
    #[error("connecting to {addr}: {reason}")]
    Connect {
        addr: std::net::SocketAddr,
        reason: String,
    },
    #[error("{count} peers exceed the limit of {max}")]
    TooManyPeers { count: usize, max: usize },
    #[error("ingest limits: {0}")]
    Limits(&'static str),
    #[error("the peer list names our own key")]
    SelfAsPeer,
    #[error("connection to {addr} lost: {reason}")]
    ConnectionLost {
        addr: std::net::SocketAddr,
        reason: String,
    },
}

/// Why an outgoing message was not queued. Nothing is dropped without one of these reaching the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("{0:?} is not a peer")]
    UnknownPeer(PublicKey),
    /// For [`Class::ClientAnswer`] and [`Class::ClientTx`] there is no peer key: `peer` is the zero key, and the
    /// client is the one the call named.
    #[error("{class:?} queue to {peer:?} is full")]
    QueueFull { peer: PublicKey, class: Class },
    /// `Node::answer` to a client address with no open ingest connection (never connected, gone, or closed).
    #[error("no client connected from {0}")]
    UnknownClient(std::net::SocketAddr),
    #[error("{class:?} payload of {len} bytes exceeds the limit of {max}")]
    Oversize {
        class: Class,
        len: usize,
        max: usize,
    },
    #[error("{0:?} cannot be sent on this endpoint")]
    WrongClass(Class),
    #[error("the transport is shut down")]
    Closed,
}
