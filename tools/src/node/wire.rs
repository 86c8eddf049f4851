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
        | Message::Witness(_) => Class::Package,
    }
}

pub fn encode(message: &Message) -> (Class, Bytes) {
    (
        class_of(message),
        Bytes::from(encode_message(message).to_vec()),
    )
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
}
