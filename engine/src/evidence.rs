//! Consensus evidence the ledger checks itself: what a BFT vote signs ([`vote_digest`], used by the consensus crate
//! for every vote) and the proof that a committee member voted for two blocks in one round ([`EquivocationProof`]),
//! which a [`TxKind::Equivocation`](crate::tx::TxKind::Equivocation) transaction records. The proof stands alone:
//! the member's key, the epoch and round, and the two signed votes; anyone can check it, with no committee at hand.
//! The ledger keeps one evidence record per member ([`evidence_outpoint`]), and the member is out of rewards and
//! elections from then on ([`crate::stake::StakeRegistry`]). No IO here.

use crate::crypto::{verify_one, PublicKey, SigEntry, Signature};
use crate::id::{domain, AssetId, BlockHash, Hash32};
use crate::rules::EVIDENCE_INDEX;
use crate::tx::{OutPoint, Transaction, TxBody, TxKind, TxOutput};

/// What a member's vote for `block` (at `height`) in `round` of `epoch`'s BFT instance signs.
pub fn vote_digest(epoch: u64, round: u64, block: &BlockHash, height: u64) -> Hash32 {
    let mut h = blake3::Hasher::new_derive_key(domain::VOTE);
    h.update(&epoch.to_le_bytes());
    h.update(&round.to_le_bytes());
    h.update(&block.0);
    h.update(&height.to_le_bytes());
    Hash32::from(h.finalize())
}

/// One signed vote of a proof: the block, its height, the member's signature over [`vote_digest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedVote {
    pub block: BlockHash,
    pub height: u64,
    pub signature: Signature,
}

/// Two votes of `member` in `round` of `epoch` for two different blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EquivocationProof {
    pub member: PublicKey,
    pub epoch: u64,
    pub round: u64,
    pub first: SignedVote,
    pub second: SignedVote,
}

/// The encoded size of a proof: key, epoch, round, then per vote its block, height and signature.
pub const EQUIVOCATION_PROOF_BYTES: usize = 32 + 8 + 8 + 2 * (32 + 8 + 64);

/// Why bytes are not a proof of an equivocation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    #[error("an equivocation proof has {EQUIVOCATION_PROOF_BYTES} bytes, got {len}")]
    Length { len: usize },
    #[error("the two votes are for the same block")]
    SameBlock,
    #[error("vote {vote} is not signed by the member it names")]
    Signature { vote: usize },
}

impl EquivocationProof {
    /// The wire form: fixed fields, little-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(EQUIVOCATION_PROOF_BYTES);
        bytes.extend_from_slice(&self.member.0);
        bytes.extend_from_slice(&self.epoch.to_le_bytes());
        bytes.extend_from_slice(&self.round.to_le_bytes());
        for vote in [&self.first, &self.second] {
            bytes.extend_from_slice(&vote.block.0);
            bytes.extend_from_slice(&vote.height.to_le_bytes());
            bytes.extend_from_slice(&vote.signature.0);
        }
        bytes
    }

    /// Reads [`Self::encode`]'s form from untrusted bytes (no check of what it claims: see [`Self::check`]).
    pub fn decode(bytes: &[u8]) -> Result<EquivocationProof, EvidenceError> {
        if bytes.len() != EQUIVOCATION_PROOF_BYTES {
            return Err(EvidenceError::Length { len: bytes.len() });
        }
        let mut at = 0;
        let mut take = |n: usize| {
            let field = &bytes[at..at + n];
            at += n;
            field
        };
        let member = PublicKey(take(32).try_into().expect("32 bytes"));
        let epoch = u64::from_le_bytes(take(8).try_into().expect("8 bytes"));
        let round = u64::from_le_bytes(take(8).try_into().expect("8 bytes"));
        let mut vote = || SignedVote {
            block: Hash32(take(32).try_into().expect("32 bytes")),
            height: u64::from_le_bytes(take(8).try_into().expect("8 bytes")),
            signature: Signature(take(64).try_into().expect("64 bytes")),
        };
        let (first, second) = (vote(), vote());
        Ok(EquivocationProof {
            member,
            epoch,
            round,
            first,
            second,
        })
    }

    /// The transaction that records it on chain `chain_id`: the proof alone, no inputs, outputs, fee or signatures.
    pub fn record_tx(&self, chain_id: u32) -> Transaction {
        Transaction {
            body: TxBody {
                chain_id,
                vn: 0,
                kind: TxKind::Equivocation {
                    proof: self.encode(),
                },
                inputs: Vec::new(),
                outputs: Vec::new(),
                fee: 0,
                memo: Vec::new(),
                client_id: None,
            },
            signatures: Vec::new(),
        }
    }

    /// Whether it proves what it claims: two different blocks, each vote signed by `member` (two signature checks).
    pub fn check(&self) -> Result<(), EvidenceError> {
        if self.first.block == self.second.block {
            return Err(EvidenceError::SameBlock);
        }
        for (vote, signed) in [&self.first, &self.second].into_iter().enumerate() {
            let digest = vote_digest(self.epoch, self.round, &signed.block, signed.height);
            let entry = SigEntry {
                message: &digest.0,
                key: &self.member.0,
                signature: &signed.signature.0,
            };
            if !verify_one(&entry) {
                return Err(EvidenceError::Signature { vote });
            }
        }
        Ok(())
    }
}

/// Where the set holds the evidence recorded against `member`: one record per member (a second proof against it
/// adds nothing: it is out already).
pub fn evidence_outpoint(member: &PublicKey) -> OutPoint {
    OutPoint {
        tx: Hash32::of(domain::EVIDENCE, &member.0),
        index: EVIDENCE_INDEX,
    }
}

/// The set entry recording that `member` was proven to equivocate, recorded in block `height`: a record (amount 0)
/// owned by the member, `height` as its unlock height.
pub fn evidence_record(member: &PublicKey, height: u64) -> TxOutput {
    TxOutput {
        amount: 0,
        asset: AssetId::CAS,
        owner: *member,
        unlock_height: Some(height),
    }
}

/// The member and recording height of an evidence record, if the entry is one.
pub fn decode_evidence(outpoint: &OutPoint, entry: &TxOutput) -> Option<(PublicKey, u64)> {
    (outpoint.index == EVIDENCE_INDEX && *outpoint == evidence_outpoint(&entry.owner))
        .then(|| (entry.owner, entry.unlock_height.unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Keypair;

    fn signed(keypair: &Keypair, epoch: u64, round: u64, block: u8, height: u64) -> SignedVote {
        let block = Hash32([block; 32]);
        SignedVote {
            block,
            height,
            signature: keypair.sign(&vote_digest(epoch, round, &block, height).0),
        }
    }

    fn proof(keypair: &Keypair) -> EquivocationProof {
        crate::fixtures::equivocation(keypair, 3, 17, 1, 2)
    }

    #[test]
    fn a_proof_round_trips_and_checks() {
        let member = Keypair::from_seed(&[7; 32]);
        let proof = proof(&member);
        let bytes = proof.encode();
        assert_eq!(bytes.len(), EQUIVOCATION_PROOF_BYTES);
        assert_eq!(EquivocationProof::decode(&bytes), Ok(proof));
        assert_eq!(proof.check(), Ok(()));
        assert_eq!(
            EquivocationProof::decode(&bytes[1..]),
            Err(EvidenceError::Length {
                len: EQUIVOCATION_PROOF_BYTES - 1
            })
        );
    }

    #[test]
    fn a_proof_that_proves_nothing_is_refused() {
        let member = Keypair::from_seed(&[7; 32]);
        let other = Keypair::from_seed(&[8; 32]);
        // One block twice.
        let mut same = proof(&member);
        same.second = same.first;
        assert_eq!(same.check(), Err(EvidenceError::SameBlock));
        // A vote signed by someone else, of another round, or of another epoch.
        let mut forged = proof(&member);
        forged.second = signed(&other, 3, 17, 2, 40);
        assert_eq!(forged.check(), Err(EvidenceError::Signature { vote: 1 }));
        let mut rounds = proof(&member);
        rounds.first = signed(&member, 3, 16, 1, 40);
        assert_eq!(rounds.check(), Err(EvidenceError::Signature { vote: 0 }));
        let mut epochs = proof(&member);
        epochs.epoch = 4;
        assert_eq!(epochs.check(), Err(EvidenceError::Signature { vote: 0 }));
    }

    #[test]
    fn an_evidence_record_is_found_only_at_its_place() {
        let member = PublicKey([4; 32]);
        let record = evidence_record(&member, 90);
        assert_eq!(
            decode_evidence(&evidence_outpoint(&member), &record),
            Some((member, 90))
        );
        assert!(crate::rules::is_record(&evidence_outpoint(&member)));
        assert!(decode_evidence(&evidence_outpoint(&PublicKey([5; 32])), &record).is_none());
    }
}
