//! How consensus messages ride netio: which class (and so which lane and priority) each message takes, the epoch
//! of the BFT instance each frame belongs to, and the validator netio runs on every inbound payload before the node
//! sees it.
//!
//! A peer frame is `message | epoch (u64 LE)`: the epoch goes last so the archived message keeps the alignment it
//! was written with. Around a committee hand-over a member runs two instances for a while (the epoch that ended
//! answers stragglers, the next one proceeds), and the tag routes each frame to its instance without decoding it
//! twice ([`crate::epochs`]).

use bytes::Bytes;
use cas_consensus::messages::{decode_message, encode_message, Message, MessageDecodeError};
use cas_netio::Class;

/// The netio class of a consensus message: the ordering path on the consensus lane, everything else bulk.
pub fn class_of(message: &Message) -> Class {
    match message {
        Message::Proposal(_) => Class::Proposal,
        Message::Vote(_) | Message::CommitVote(_) => Class::Vote,
        Message::Timeout(_) => Class::Timeout,
        // Catch-up traffic, blocks or snapshot state transfer: the sync class on the bulk lane.
        Message::BlockRequest(_)
        | Message::BlockResponse(_)
        | Message::SnapshotInfoRequest
        | Message::SnapshotInfo(_)
        | Message::SnapshotChunkRequest(_)
        | Message::SnapshotChunk(_) => Class::BlockSync,
        // Witness blocks are rare, small and never urgent: the bulk lane.
        Message::Package(_)
        | Message::Ack(_)
        | Message::Cert(_)
        | Message::PackageRequest(_)
        | Message::Witness(_)
        | Message::LedgerVote(_)
        | Message::HandoverVote(_) => Class::Package,
    }
}

/// Bytes of the epoch tag at the end of a peer frame.
const EPOCH_TAG_BYTES: usize = 8;

/// A peer frame: the message, tagged with the epoch of the instance that sends it (0 for what no instance owns:
/// witnesses, ledger votes carry their own epoch in what they sign).
pub fn encode(epoch: u64, message: &Message) -> (Class, Bytes) {
    let archived = encode_message(message);
    let mut bytes = Vec::with_capacity(archived.len() + EPOCH_TAG_BYTES);
    bytes.extend_from_slice(&archived);
    bytes.extend_from_slice(&epoch.to_le_bytes());
    (class_of(message), Bytes::from(bytes))
}

/// A peer frame's message bytes and epoch tag.
fn untag(payload: &[u8]) -> Result<(&[u8], u64), MessageDecodeError> {
    let split = payload
        .len()
        .checked_sub(EPOCH_TAG_BYTES)
        .ok_or_else(|| MessageDecodeError::Malformed("shorter than its epoch tag".into()))?;
    let (message, tag) = payload.split_at(split);
    Ok((
        message,
        u64::from_le_bytes(tag.try_into().expect("8 bytes")),
    ))
}

/// netio's inbound check ([`validate`]), and the answer a client gets for a transaction that fails it: the same
/// `Rejected` (code of `Rejection::Decode`, no tx id) that admission gives undecodable bytes, so the client keeps
/// its connection and the answers owed for its other transactions. A miner's undecodable request has no answer
/// to carry a refusal without a witness hash, so it still closes that connection.
pub struct WireValidator;

impl cas_netio::Validator for WireValidator {
    fn validate(&self, class: Class, payload: &[u8]) -> Result<(), String> {
        validate(class, payload)
    }

    fn rejection(&self, class: Class, reason: &str) -> Option<Bytes> {
        (class == Class::ClientTx).then(|| {
            let code = cas_engine::RejectCode::Undecodable.number();
            let answer = cas_engine::client::ClientAnswer::Rejected {
                tx: None,
                code,
                reason: cas_engine::client::ClientAnswer::reason(format!("undecodable: {reason}")),
            };
            Bytes::from(answer.encode())
        })
    }
}

/// netio's inbound check: client transactions through the engine's decoder, a standalone miner's requests through
/// the mining decoder, peer messages through the consensus decoder, and the class must be the one the message
/// belongs to.
pub fn validate(class: Class, payload: &[u8]) -> Result<(), String> {
    if class == Class::ClientTx {
        return cas_engine::codec::decode_tx(payload)
            .map(|_| ())
            .map_err(|e| e.to_string());
    }
    if class == Class::Mining {
        return cas_consensus::mining::MiningRequest::decode(payload)
            .map(|_| ())
            .map_err(|e| e.to_string());
    }
    let (message, _) = untag(payload).map_err(|e| e.to_string())?;
    let message = decode_message(message).map_err(|e| e.to_string())?;
    if class_of(&message) != class {
        return Err(format!(
            "a {:?} message framed as {class:?}",
            class_of(&message)
        ));
    }
    Ok(())
}

/// Why a committee peer's frame is not a message for the driver. Counted and dropped: a peer's bytes never stop
/// the node.
#[derive(Debug, thiserror::Error)]
pub enum PeerMessageError {
    /// netio lets this class travel between nodes (client transactions may be gossiped), but members of this
    /// committee exchange only consensus messages.
    #[error("a {0:?} frame is not a consensus message; members send none")]
    NotConsensus(Class),
    #[error("the payload does not decode: {0}")]
    Decode(#[from] MessageDecodeError),
    #[error("a {message:?} message framed as {class:?}")]
    WrongClass { message: Class, class: Class },
}

/// A committee peer's frame as the consensus message it must be, and the epoch it is tagged with.
pub fn peer_message(class: Class, payload: &[u8]) -> Result<(u64, Message), PeerMessageError> {
    if matches!(class, Class::ClientTx | Class::ClientAnswer | Class::Mining) {
        return Err(PeerMessageError::NotConsensus(class));
    }
    let (message, epoch) = untag(payload)?;
    let message = decode_message(message)?;
    if class_of(&message) != class {
        return Err(PeerMessageError::WrongClass {
            message: class_of(&message),
            class,
        });
    }
    Ok((epoch, message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cas_engine::tx::{OutPoint, TxBody, TxKind};
    use cas_engine::{Hash32, Keypair};

    /// Issue 16 item 9: netio passes a committee peer's `ClientTx` frame (a valid transaction) to the driver,
    /// whose decode failure used to end its loop and with it the node.
    #[test]
    fn a_peer_frame_that_is_no_consensus_message_is_a_typed_refusal() {
        let keypair = Keypair::from_seed(&[7; 32]);
        let tx = TxBody {
            chain_id: 1,
            vn: 0,
            kind: TxKind::Transfer,
            inputs: vec![OutPoint {
                tx: Hash32([1; 32]),
                index: 0,
            }],
            outputs: Vec::new(),
            fee: 1,
            memo: Vec::new(),
            client_id: None,
        }
        .sign(&[&keypair]);
        let bytes = cas_engine::codec::encode_tx(&tx);
        assert_eq!(
            validate(Class::ClientTx, &bytes),
            Ok(()),
            "netio lets it through"
        );
        assert!(matches!(
            peer_message(Class::ClientTx, &bytes),
            Err(PeerMessageError::NotConsensus(Class::ClientTx))
        ));
        assert!(matches!(
            peer_message(Class::Package, &[0xab; 64]),
            Err(PeerMessageError::Decode(_))
        ));
        let (class, request) = encode(7, &Message::BlockRequest(Hash32([2; 32])));
        assert!(matches!(
            peer_message(Class::Proposal, &request),
            Err(PeerMessageError::WrongClass { .. })
        ));
        assert!(matches!(
            peer_message(class, &request),
            Ok((7, Message::BlockRequest(_)))
        ));
        assert!(matches!(
            peer_message(class, &request[..4]),
            Err(PeerMessageError::Decode(_))
        ));
    }

    /// Issue 16: undecodable bytes from a client or a peer get a reason that says what failed (not rancor's
    /// "failed without error information" of release builds), within a bound.
    #[test]
    fn undecodable_bytes_get_a_readable_bounded_reason() {
        for class in [Class::ClientTx, Class::Mining, Class::Vote, Class::Package] {
            let reason = validate(class, &[0xab; 300]).unwrap_err();
            assert!(
                !reason.contains("without error information"),
                "{class:?}: {reason}"
            );
            assert!(reason.len() < 1024, "{class:?}: {} bytes", reason.len());
        }
    }

    #[test]
    fn an_undecodable_client_tx_is_answered_rejected() {
        use cas_engine::client::ClientAnswer;
        use cas_netio::Validator;
        let reason = validate(Class::ClientTx, &[0xab; 300]).unwrap_err();
        let answer = WireValidator.rejection(Class::ClientTx, &reason).unwrap();
        let ClientAnswer::Rejected { tx, code, reason } = ClientAnswer::decode(&answer).unwrap()
        else {
            panic!("a rejection")
        };
        assert_eq!((tx, code), (None, 1));
        assert!(reason.starts_with("undecodable: "), "{reason}");
        assert!(WireValidator.rejection(Class::Mining, "bad").is_none());
    }
}
