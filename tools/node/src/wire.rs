//! How consensus messages ride netio: which class (and so which lane and priority) each message takes, and the
//! validator netio runs on every inbound payload before the node sees it.

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
        | Message::LedgerVote(_) => Class::Package,
    }
}

pub fn encode(message: &Message) -> (Class, Bytes) {
    (
        class_of(message),
        Bytes::from(encode_message(message).to_vec()),
    )
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
    let message = decode_message(payload).map_err(|e| e.to_string())?;
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

/// A committee peer's frame as the consensus message it must be.
pub fn peer_message(class: Class, payload: &[u8]) -> Result<Message, PeerMessageError> {
    if matches!(class, Class::ClientTx | Class::ClientAnswer | Class::Mining) {
        return Err(PeerMessageError::NotConsensus(class));
    }
    let message = decode_message(payload)?;
    if class_of(&message) != class {
        return Err(PeerMessageError::WrongClass {
            message: class_of(&message),
            class,
        });
    }
    Ok(message)
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
        let (class, request) = encode(&Message::BlockRequest(Hash32([2; 32])));
        assert!(matches!(
            peer_message(Class::Proposal, &request),
            Err(PeerMessageError::WrongClass { .. })
        ));
        assert!(peer_message(class, &request).is_ok());
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
