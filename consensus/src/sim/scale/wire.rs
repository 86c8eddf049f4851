//! What the scale model's messages weigh on the wire: sizes from the fields' widths (what the rkyv encoding holds,
//! give or take alignment), because encoding every simulated message would cost more than the rest of the model.
//! Packages are sized without transactions; the model adds its cohorts' bytes.

use crate::messages::{AvailabilityCert, Block, Message, QuorumCert, TimeoutCert};

/// Framing of every message (length, type, lane) on the wire.
const MESSAGE_FRAMING_BYTES: usize = 16;
const SIGNATURE_BYTES: usize = 64;
const HASH_BYTES: usize = 32;

/// The encoded size of a message, a package's without its transactions. An archived enum is as wide as its widest
/// variant (a block's inline fields), so no message is smaller than that.
pub fn encoded_bytes(message: &Message) -> usize {
    const VOTE: usize = 8 + HASH_BYTES + 8 + 2 + SIGNATURE_BYTES;
    let inline = core::mem::size_of::<crate::messages::ArchivedMessage>();
    MESSAGE_FRAMING_BYTES
        + inline.max(match message {
            Message::Proposal(block) | Message::BlockResponse(block) => block_bytes(block),
            Message::Vote(_) | Message::CommitVote(_) => VOTE,
            Message::Timeout(timeout) => 8 + qc_bytes(&timeout.high_qc) + 2 + SIGNATURE_BYTES,
            Message::BlockRequest(_) | Message::PackageRequest(_) => HASH_BYTES,
            Message::Package(_) => 2 + 8 + 8,
            Message::Ack(_) => HASH_BYTES + 1 + 2 + SIGNATURE_BYTES,
            Message::Cert(cert) => cert_bytes(cert),
            // Not sent by the committee's state machines (node gossip); sized by its encoding if it ever is.
            Message::Witness(_)
            | Message::SnapshotInfoRequest
            | Message::SnapshotInfo(_)
            | Message::SnapshotChunkRequest(_)
            | Message::SnapshotChunk(_)
            | Message::LedgerVote(_)
            | Message::HandoverVote(_) => crate::messages::encode_message(message).len(),
        })
}

fn qc_bytes(qc: &QuorumCert) -> usize {
    8 + HASH_BYTES + 8 + qc.signatures.len() * (2 + SIGNATURE_BYTES)
}

fn tc_bytes(tc: &TimeoutCert) -> usize {
    8 + tc.signatures.len() * (2 + 8 + SIGNATURE_BYTES)
}

fn cert_bytes(cert: &AvailabilityCert) -> usize {
    HASH_BYTES + 2 + 8 + cert.acks.len() * (2 + 1 + SIGNATURE_BYTES)
}

pub fn block_bytes(block: &Block) -> usize {
    8 + 8
        + qc_bytes(&block.qc)
        + block.tc.as_ref().map_or(0, tc_bytes)
        + 2
        + 8
        + block.payload.iter().map(cert_bytes).sum::<usize>()
        + SIGNATURE_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{encode_message, Vote};
    use cas_engine::{Hash32, Signature};

    #[test]
    fn sizes_are_close_to_the_encoding() {
        let vote = Message::Vote(Vote {
            round: 9,
            block: Hash32([1; 32]),
            height: 8,
            signer: 3,
            signature: Signature([2; 64]),
        });
        let modeled = encoded_bytes(&vote) as f64;
        let encoded = encode_message(&vote).len() as f64;
        assert!(
            (modeled - encoded).abs() / encoded < 0.25,
            "{modeled} vs {encoded}"
        );
    }
}
