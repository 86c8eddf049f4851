//! The wire frame: `[payload length: u32 LE][class: u8][payload]`, with a hard maximum per class checked before
//! anything is allocated. Owns the message classes and their lanes (which stream, which priority). It never
//! interprets a payload: the layer above supplies the validating decoder ([`Validator`]).

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};

use crate::error::FrameError;
use crate::limits::{
    BULK_PAYLOAD_BYTES_MAX, CLIENT_ANSWER_PAYLOAD_BYTES_MAX, CLIENT_TX_PAYLOAD_BYTES_MAX,
    CONSENSUS_PAYLOAD_BYTES_MAX, FRAME_HEADER_BYTES, MINING_PAYLOAD_BYTES_MAX,
    WRITE_BATCH_BYTES_MAX, WRITE_BATCH_FRAMES_MAX,
};

/// What a message is, which decides its lane, its size limit and its queue policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Class {
    /// A BFT proposal (consensus lane).
    Proposal = 1,
    /// A BFT vote (consensus lane).
    Vote = 2,
    /// A BFT timeout or timeout certificate (consensus lane).
    Timeout = 3,
    /// A package of instructions for availability (bulk lane).
    Package = 4,
    /// A block or a piece of one, for sync and the two-tier broadcast (bulk lane).
    BlockSync = 5,
    /// A client's signed transaction: on the ingest endpoint from clients, on the bulk lane when gossiped.
    ClientTx = 6,
    /// The node's answer to a client (accepted, duplicate, rejected, overloaded, a final receipt), opaque bytes
    /// the node encodes. Only ever node -> client on the ingest endpoint: a client or a peer sending one is
    /// refused as a wrong-lane frame.
    ClientAnswer = 7,
    /// A standalone miner's request to the node it follows (a mining template, or a witness it found), opaque
    /// bytes the node decodes. Only ever client -> node on the ingest endpoint; answered as a `ClientAnswer`.
    Mining = 8,
}

impl Class {
    /// Every class a frame may carry.
    pub const ALL: [Class; 8] = [
        Class::Proposal,
        Class::Vote,
        Class::Timeout,
        Class::Package,
        Class::BlockSync,
        Class::ClientTx,
        Class::ClientAnswer,
        Class::Mining,
    ];

    /// The classes a client may send on the ingest endpoint.
    pub const FROM_CLIENTS: [Class; 2] = [Class::ClientTx, Class::Mining];

    /// The classes that travel between nodes (every class but [`Class::ClientAnswer`]).
    pub const BETWEEN_NODES: [Class; 6] = [
        Class::Proposal,
        Class::Vote,
        Class::Timeout,
        Class::Package,
        Class::BlockSync,
        Class::ClientTx,
    ];

    pub fn from_byte(byte: u8) -> Result<Class, FrameError> {
        Class::ALL
            .into_iter()
            .find(|class| *class as u8 == byte)
            .ok_or(FrameError::UnknownClass(byte))
    }

    /// The lane this class travels on between nodes; [`Lane::Ingest`] for [`Class::ClientAnswer`], which never
    /// does. ([`Class::ClientTx`] also arrives from clients on the ingest endpoint, but between nodes it is bulk.)
    pub fn lane(self) -> Lane {
        match self {
            Class::Proposal | Class::Vote | Class::Timeout => Lane::Consensus,
            Class::Package | Class::BlockSync | Class::ClientTx => Lane::Bulk,
            Class::ClientAnswer | Class::Mining => Lane::Ingest,
        }
    }

    /// Whether this class may be sent to or received from a peer node.
    pub fn between_nodes(self) -> bool {
        self.lane() != Lane::Ingest
    }

    /// The largest payload of this class; a larger frame is refused before its payload is read.
    pub fn payload_bytes_max(self) -> usize {
        match self {
            Class::Proposal | Class::Vote | Class::Timeout => CONSENSUS_PAYLOAD_BYTES_MAX,
            Class::Package | Class::BlockSync => BULK_PAYLOAD_BYTES_MAX,
            Class::ClientTx => CLIENT_TX_PAYLOAD_BYTES_MAX,
            Class::ClientAnswer => CLIENT_ANSWER_PAYLOAD_BYTES_MAX,
            Class::Mining => MINING_PAYLOAD_BYTES_MAX,
        }
    }
}

/// A stream between two nodes, or the ingest endpoint's streams. Between nodes each lane has its own QUIC
/// stream, so consensus frames never queue behind a package being written, and the consensus stream has the
/// higher send priority. [`Lane::Ingest`] is the client connection: one stream client -> node (transactions)
/// and one node -> client (answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    Consensus = 0,
    Bulk = 1,
    Ingest = 2,
}

impl Lane {
    pub const ALL: [Lane; 3] = [Lane::Consensus, Lane::Bulk, Lane::Ingest];
    /// The lanes of a node-to-node connection, one stream each way per lane; their discriminants index arrays.
    pub const BETWEEN_NODES: [Lane; 2] = [Lane::Consensus, Lane::Bulk];

    /// quinn's stream priority: higher is sent first when both lanes have data.
    pub fn priority(self) -> i32 {
        match self {
            Lane::Consensus => 100,
            Lane::Bulk | Lane::Ingest => 0,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Lane::Consensus => "consensus lane",
            Lane::Bulk => "bulk lane",
            Lane::Ingest => "ingest endpoint",
        }
    }
}

/// The validating decoder of the layer above: accepts a payload of `class` or says why not. Run on every
/// received frame before it is delivered, so the layer above may then read it in place without checking again
/// (e.g. `cas_engine::codec::decode_tx` for [`Class::ClientTx`]).
pub trait Validator: Send + Sync + 'static {
    fn validate(&self, class: Class, payload: &[u8]) -> Result<(), String>;

    /// The answer (a [`Class::ClientAnswer`] payload, in the layer above's encoding) for a client whose frame of
    /// `class` [`Validator::validate`] refused with `reason`. `Some`: the node queues it on that client's answer
    /// stream and keeps the connection (a wallet's one bad transaction costs it neither its connection nor the
    /// answers owed for its earlier ones). `None` (the default): the connection is refused as a bad frame, after
    /// the answers already queued for it are sent.
    fn rejection(&self, class: Class, reason: &str) -> Option<Bytes> {
        let _ = (class, reason);
        None
    }
}

impl<F> Validator for F
where
    F: Fn(Class, &[u8]) -> Result<(), String> + Send + Sync + 'static,
{
    fn validate(&self, class: Class, payload: &[u8]) -> Result<(), String> {
        self(class, payload)
    }
}

/// Client transactions through the engine's untrusted decoder; every other class is accepted as opaque bytes.
pub fn validate_client_tx(class: Class, payload: &[u8]) -> Result<(), String> {
    if class == Class::ClientTx {
        cas_engine::codec::decode_tx(payload).map_err(|error| error.to_string())?;
    }
    Ok(())
}

/// The header of a frame carrying `len` payload bytes of `class`.
pub fn encode_header(class: Class, len: usize) -> [u8; FRAME_HEADER_BYTES] {
    assert!(
        len <= class.payload_bytes_max(),
        "callers check sizes first"
    );
    let mut header = [0u8; FRAME_HEADER_BYTES];
    header[..4].copy_from_slice(&(len as u32).to_le_bytes());
    header[4] = class as u8;
    header
}

/// Reads a header: the class must be known and the length within its limit.
pub fn decode_header(header: &[u8; FRAME_HEADER_BYTES]) -> Result<(Class, usize), FrameError> {
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let class = Class::from_byte(header[4])?;
    let max = class.payload_bytes_max();
    if len > max {
        return Err(FrameError::Oversize { class, len, max });
    }
    Ok((class, len))
}

/// One frame in memory (tests, fuzzing and tools): header then payload.
pub fn encode_frame(class: Class, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    bytes.extend_from_slice(&encode_header(class, payload.len()));
    bytes.extend_from_slice(payload);
    bytes
}

/// Splits the first frame off `bytes`: its class, its payload and the rest.
pub fn decode_frame(bytes: &[u8]) -> Result<(Class, &[u8], &[u8]), FrameError> {
    let Some(header) = bytes.first_chunk::<FRAME_HEADER_BYTES>() else {
        return Err(FrameError::Truncated {
            got: bytes.len(),
            want: FRAME_HEADER_BYTES,
        });
    };
    let (class, len) = decode_header(header)?;
    let body = &bytes[FRAME_HEADER_BYTES..];
    if body.len() < len {
        return Err(FrameError::Truncated {
            got: FRAME_HEADER_BYTES + body.len(),
            want: FRAME_HEADER_BYTES + len,
        });
    }
    Ok((class, &body[..len], &body[len..]))
}

/// Chunks one read takes from a stream at most: everything that has arrived, up to this many received segments
/// (each at most a datagram), so a stream of small frames costs one read per many frames, not several per frame.
const READ_CHUNKS_MAX: usize = 64;

/// Reads frames from one QUIC stream through a buffer: each read takes the segments that have arrived (often many
/// small frames), and frames are cut from the buffer, each payload copied out on its own (a kept payload never pins
/// the buffer). The buffer holds at most the frame being completed plus one read's segments: reading stops while
/// the caller has not asked for the next frame, so QUIC flow control still holds a sender back.
pub struct FrameReader {
    recv: quinn::RecvStream,
    buffered: BytesMut,
    chunks: Vec<Bytes>,
}

impl FrameReader {
    pub fn new(recv: quinn::RecvStream) -> FrameReader {
        FrameReader {
            recv,
            buffered: BytesMut::new(),
            chunks: vec![Bytes::new(); READ_CHUNKS_MAX],
        }
    }

    /// The next frame; `Ok(None)` is a clean end between frames. `check` refuses a frame by its class as soon as
    /// its header is in, before its payload is read, so a frame of a class this stream never carries is refused
    /// before its payload is read. With a `frame_timeout`, a frame whose first byte has been read must be complete
    /// within it ([`FrameError::Timeout`]); waiting for that first byte is not bounded here (the connection's idle
    /// bound is the caller's).
    ///
    /// The buffer grows as bytes arrive, never to the declared length up front: a header announcing a large frame
    /// that never comes costs what was actually sent, not the class's limit.
    pub async fn next(
        &mut self,
        frame_timeout: Option<Duration>,
        check: impl FnOnce(Class) -> Result<(), FrameError>,
    ) -> Result<Option<(Class, Bytes)>, FrameError> {
        if self.buffered.is_empty() && !self.fill().await? {
            return Ok(None);
        }
        let rest = self.complete(check);
        match frame_timeout {
            None => rest.await.map(Some),
            Some(limit) => match tokio::time::timeout(limit, rest).await {
                Ok(frame) => frame.map(Some),
                Err(_) => Err(FrameError::Timeout {
                    timeout_ms: limit.as_millis().min(u64::MAX as u128) as u64,
                }),
            },
        }
    }

    /// The next frame if it is already whole in the buffer, without reading: `None` when the buffer holds less
    /// than a whole frame (what it holds stays for [`FrameReader::next`]). `check` as for `next`, once the header is
    /// in. A reader that drains every buffered frame after each `next` hands them on in one batch.
    pub fn next_buffered(
        &mut self,
        check: impl FnOnce(Class) -> Result<(), FrameError>,
    ) -> Option<Result<(Class, Bytes), FrameError>> {
        let header: &[u8; FRAME_HEADER_BYTES] =
            self.buffered.get(..FRAME_HEADER_BYTES)?.try_into().ok()?;
        let (class, len) = match decode_header(header) {
            Ok(frame) => frame,
            Err(error) => return Some(Err(error)),
        };
        if let Err(error) = check(class) {
            return Some(Err(error));
        }
        (self.buffered.len() >= FRAME_HEADER_BYTES + len).then(|| Ok((class, self.cut(len))))
    }

    /// Takes the frame of payload length `len` that the buffer starts with (whole in it): its payload.
    fn cut(&mut self, len: usize) -> Bytes {
        self.buffered.advance(FRAME_HEADER_BYTES);
        let payload = Bytes::copy_from_slice(&self.buffered[..len]);
        self.buffered.advance(len);
        payload
    }

    /// Cuts the frame that starts the buffer, reading until it is complete.
    async fn complete(
        &mut self,
        check: impl FnOnce(Class) -> Result<(), FrameError>,
    ) -> Result<(Class, Bytes), FrameError> {
        self.fill_to(FRAME_HEADER_BYTES).await?;
        let header: &[u8; FRAME_HEADER_BYTES] = self.buffered[..FRAME_HEADER_BYTES]
            .try_into()
            .expect("the buffer holds a header");
        let (class, len) = decode_header(header)?;
        check(class)?;
        self.fill_to(FRAME_HEADER_BYTES + len).await?;
        Ok((class, self.cut(len)))
    }

    /// Reads until the buffer holds `want` bytes; the stream ending first is a truncated frame.
    async fn fill_to(&mut self, want: usize) -> Result<(), FrameError> {
        while self.buffered.len() < want {
            if !self.fill().await? {
                return Err(FrameError::Truncated {
                    got: self.buffered.len(),
                    want,
                });
            }
        }
        Ok(())
    }

    /// Appends what has arrived (waiting for at least one segment); false once the stream has ended.
    async fn fill(&mut self) -> Result<bool, FrameError> {
        match self.recv.read_chunks(&mut self.chunks).await {
            Ok(Some(read)) => {
                for chunk in &mut self.chunks[..read] {
                    self.buffered.extend_from_slice(chunk);
                    *chunk = Bytes::new();
                }
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(error) => Err(FrameError::Read(error.to_string())),
        }
    }
}

/// Payloads up to this size are copied next to their headers when written: one buffer for a run of small frames
/// (answers, transactions, votes) instead of two chunks per frame; larger ones go as chunks of their own.
const WRITE_COPY_BYTES_MAX: usize = 1024;

/// Writes several frames to a QUIC stream in one write: one wake of the connection for the lot. Small payloads are
/// gathered with the headers into one buffer, large ones are passed on without copying.
pub async fn write_frames(
    send: &mut quinn::SendStream,
    frames: impl IntoIterator<Item = (Class, Bytes)>,
) -> Result<(), quinn::WriteError> {
    let frames: Vec<(Class, Bytes)> = frames.into_iter().collect();
    // Sized once for every small frame and header: growing it copied the buffer again at each doubling.
    let gathered_bytes: usize = frames
        .iter()
        .map(|(_, payload)| {
            FRAME_HEADER_BYTES
                + if payload.len() <= WRITE_COPY_BYTES_MAX {
                    payload.len()
                } else {
                    0
                }
        })
        .sum();
    let mut chunks = Vec::new();
    let mut gathered = BytesMut::with_capacity(gathered_bytes);
    for (class, payload) in frames {
        gathered.extend_from_slice(&encode_header(class, payload.len()));
        if payload.len() <= WRITE_COPY_BYTES_MAX {
            gathered.extend_from_slice(&payload);
        } else {
            chunks.push(gathered.split().freeze());
            chunks.push(payload);
        }
    }
    if !gathered.is_empty() {
        chunks.push(gathered.freeze());
    }
    send.write_all_chunks(&mut chunks).await
}

/// Takes the first item from `queue` (waiting for it), then as many more as are already queued, up to
/// [`WRITE_BATCH_FRAMES_MAX`] items and [`WRITE_BATCH_BYTES_MAX`] bytes past the first: what one coalesced write
/// carries. Empty when the queue has closed.
pub async fn take_batch<T>(
    queue: &mut tokio::sync::mpsc::Receiver<T>,
    batch: &mut Vec<T>,
    bytes_of: impl Fn(&T) -> usize,
) {
    let Some(first) = queue.recv().await else {
        return;
    };
    let mut bytes = bytes_of(&first);
    batch.push(first);
    while batch.len() < WRITE_BATCH_FRAMES_MAX && bytes < WRITE_BATCH_BYTES_MAX {
        match queue.try_recv() {
            Ok(item) => {
                bytes += bytes_of(&item);
                batch.push(item);
            }
            Err(_) => break,
        }
    }
}

/// Writes one frame to a QUIC stream without copying the payload.
pub async fn write_frame(
    send: &mut quinn::SendStream,
    class: Class,
    payload: Bytes,
) -> Result<(), quinn::WriteError> {
    let header = Bytes::copy_from_slice(&encode_header(class, payload.len()));
    send.write_all_chunks(&mut [header, payload]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_for_every_class() {
        for class in Class::ALL {
            let payload = vec![class as u8; 100];
            let mut bytes = encode_frame(class, &payload);
            bytes.extend_from_slice(&encode_frame(Class::Vote, b"next"));
            let (got_class, got_payload, rest) = decode_frame(&bytes).unwrap();
            assert_eq!(got_class, class);
            assert_eq!(got_payload, &payload[..]);
            let (next_class, next_payload, rest) = decode_frame(rest).unwrap();
            assert_eq!((next_class, next_payload), (Class::Vote, &b"next"[..]));
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn unknown_class_is_refused() {
        for byte in [0u8, 9, 0xff] {
            let mut bytes = encode_frame(Class::Vote, b"x");
            bytes[4] = byte;
            assert_eq!(decode_frame(&bytes), Err(FrameError::UnknownClass(byte)));
        }
    }

    #[test]
    fn oversize_is_refused_from_the_header_alone() {
        for class in Class::ALL {
            let max = class.payload_bytes_max();
            let mut header = encode_header(class, 0);
            header[..4].copy_from_slice(&((max + 1) as u32).to_le_bytes());
            assert_eq!(
                decode_header(&header),
                Err(FrameError::Oversize {
                    class,
                    len: max + 1,
                    max
                })
            );
            header[..4].copy_from_slice(&(max as u32).to_le_bytes());
            assert_eq!(decode_header(&header), Ok((class, max)));
        }
    }

    #[test]
    fn truncated_header_and_payload_are_refused() {
        let bytes = encode_frame(Class::Package, &[7u8; 64]);
        assert_eq!(
            decode_frame(&bytes[..3]),
            Err(FrameError::Truncated { got: 3, want: 5 })
        );
        assert_eq!(
            decode_frame(&bytes[..20]),
            Err(FrameError::Truncated { got: 20, want: 69 })
        );
    }

    #[test]
    fn client_tx_goes_through_the_engine_decoder() {
        assert!(validate_client_tx(Class::ClientTx, &[0xab; 40]).is_err());
        assert!(validate_client_tx(Class::Package, &[0xab; 40]).is_ok());
        let genesis = cas_engine::fixtures::funded_genesis(1, 4, 1, 1, 10);
        let tx = cas_engine::codec::encode_tx(&genesis.txs[0]);
        assert_eq!(validate_client_tx(Class::ClientTx, &tx), Ok(()));
    }

    #[test]
    fn every_class_has_one_lane_and_a_limit() {
        for class in Class::ALL {
            assert_eq!(Class::from_byte(class as u8), Ok(class));
            assert!(class.payload_bytes_max() > 0);
        }
        assert!(Lane::Consensus.priority() > Lane::Bulk.priority());
        for class in Class::BETWEEN_NODES {
            assert!(class.between_nodes());
            assert!(Lane::BETWEEN_NODES.contains(&class.lane()));
        }
        assert_eq!(Class::ClientAnswer.lane(), Lane::Ingest);
        assert!(!Class::ClientAnswer.between_nodes());
        assert_eq!(Class::Mining.lane(), Lane::Ingest);
        assert!(!Class::Mining.between_nodes());
        assert_eq!(Class::ALL.len(), Class::BETWEEN_NODES.len() + 2);
    }
}
