//! Business networks (VNs) and their endorsement Policy on the UTXO set.
//!
//! Every transaction names a VN (`vn` in its signed body; 0 is the public network, which asks nothing more). A VN
//! is registered once by a [`TxKind::VnRegister`](crate::tx::TxKind::VnRegister) on the public network, with its
//! Policy: the endorsers (RS keys) with a weight each, and the weight of endorsements a transaction of the VN needs
//! (all of them, k of n with weights of 1, or any weighted threshold; or none, a VN without a Policy, only routed
//! and isolated). The Policy is kept as set records: a header
//! at `(vn_place(vn), VN_INDEX)` (threshold, endorser count and total weight packed in its asset field, the
//! registrar as owner), one record per endorser at `(endorser_place(vn, key), ENDORSER_INDEX)`, and the VN's fee rule,
//! if it has one, at `(vn_place(vn), VN_FEE_INDEX)`: every transaction of the VN pays that much of a business token
//! to the Policy's collector (the network's own fee stays in CAS, for the validators).
//!
//! An endorsement is a signature over the transaction's id by an endorser's key, in the transaction's signature
//! list beside its owners' (so it is checked in the same batch as every signature, and it needs no input: an
//! endorser's signature counts as used). The rules read the VN's header and, for each signer, the endorser record
//! it would have, and refuse a transaction of a VN whose endorsing signers weigh less than the threshold
//! (`not_endorsed`). No IO here.

use rkyv::{Archive, Deserialize, Serialize};

use crate::crypto::PublicKey;
use crate::id::{domain, AssetId, DomainKey, Hash32};
use crate::tx::{OutPoint, TxOutput, VnId};

/// The set index of a VN's Policy header.
pub const VN_INDEX: u32 = u32::MAX - 17;
/// The set index of an endorser's record.
pub const ENDORSER_INDEX: u32 = u32::MAX - 18;
/// The set index of a VN's fee rule.
pub const VN_FEE_INDEX: u32 = u32::MAX - 19;
const _: () = assert!(VN_FEE_INDEX >= crate::rules::RECORD_INDEX_MIN);
const _: () = assert!(VN_INDEX < crate::governance::RESOLUTION_INDEX);

/// The most endorsers a Policy names (each is a record read for every signer of the VN's transactions).
pub const ENDORSERS_MAX: usize = 16;

/// One endorser of a VN: an RS key and the weight of its endorsement.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct Endorser {
    pub key: PublicKey,
    pub weight: u32,
}

/// A VN's fee rule in a business token: every transaction of the VN has an output paying at least `amount` of
/// `token` to `collector`.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct VnFee {
    pub token: AssetId,
    pub amount: u64,
    pub collector: PublicKey,
}

/// What a VN registration declares.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct PolicyTerms {
    /// The network's id (not 0, the public network), free until this registration.
    pub vn: VnId,
    pub endorsers: Vec<Endorser>,
    /// The endorsing weight a transaction of the VN needs (1 ..= the endorsers' total; 0 with no endorsers: a VN
    /// without a Policy, whose transactions need no endorsement).
    pub threshold: u32,
    /// The VN's fee rule in a business token, if any.
    pub fee: Option<VnFee>,
}

/// Why a Policy is refused (stateless).
pub fn check_policy(terms: &ArchivedPolicyTerms) -> Result<(), &'static str> {
    if terms.vn.to_native() == 0 {
        return Err("VN 0 is the public network");
    }
    if terms
        .fee
        .as_ref()
        .is_some_and(|fee| fee.amount.to_native() == 0)
    {
        return Err("a fee rule of 0");
    }
    let endorsers = terms.endorsers.as_slice();
    if endorsers.len() > ENDORSERS_MAX {
        return Err("a Policy names at most 16 endorsers");
    }
    // No endorsers and a threshold of 0: a VN without a Policy (routed and isolated, nothing to endorse).
    if endorsers.is_empty() && terms.threshold.to_native() == 0 {
        return Ok(());
    }
    if endorsers.iter().any(|e| e.weight.to_native() == 0) {
        return Err("an endorser of weight 0");
    }
    let distinct =
        (1..endorsers.len()).all(|i| endorsers[..i].iter().all(|e| e.key != endorsers[i].key));
    if !distinct {
        return Err("an endorser named twice");
    }
    let total: u64 = endorsers
        .iter()
        .map(|e| u64::from(e.weight.to_native()))
        .sum();
    let threshold = u64::from(terms.threshold.to_native());
    if threshold == 0 || threshold > total {
        return Err("a threshold of 0 (with endorsers) or above the endorsers' total weight");
    }
    Ok(())
}

/// Every transaction of a VN hashes its header's and its signers' endorser places: contexts hashed once.
static POLICY_PLACE: DomainKey = DomainKey::new(domain::VN_POLICY);
static ENDORSER_PLACE: DomainKey = DomainKey::new(domain::VN_ENDORSER);

/// Where VN `vn`'s Policy header is.
pub fn policy_outpoint(vn: VnId) -> OutPoint {
    OutPoint {
        tx: POLICY_PLACE.hash(&vn.to_le_bytes()),
        index: VN_INDEX,
    }
}

/// Where the record of `key` as an endorser of `vn` is (if it is one).
pub fn endorser_outpoint(vn: VnId, key: &PublicKey) -> OutPoint {
    let mut bytes = [0u8; 36];
    bytes[..4].copy_from_slice(&vn.to_le_bytes());
    bytes[4..].copy_from_slice(&key.0);
    OutPoint {
        tx: ENDORSER_PLACE.hash(&bytes),
        index: ENDORSER_INDEX,
    }
}

/// Where VN `vn`'s fee rule is (if it has one).
pub fn fee_outpoint(vn: VnId) -> OutPoint {
    OutPoint {
        tx: policy_outpoint(vn).tx,
        index: VN_FEE_INDEX,
    }
}

/// A fee rule's record: the token as its asset, the collector as owner, the amount in the lock field (amount 0: a
/// record is no balance, so the rule adds nothing to the collector's balance or the token's supply).
pub fn fee_record(fee: &ArchivedVnFee) -> TxOutput {
    TxOutput {
        amount: 0,
        asset: AssetId::from(&fee.token),
        owner: PublicKey::from(&fee.collector),
        unlock_height: Some(fee.amount.to_native()),
    }
}

/// The fee rule a record holds.
pub fn decode_fee(entry: &TxOutput) -> VnFee {
    VnFee {
        token: entry.asset,
        amount: entry.unlock_height.unwrap_or(0),
        collector: entry.owner,
    }
}

/// A VN's Policy as its header record holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyHeader {
    pub vn: VnId,
    pub registrar: PublicKey,
    pub threshold: u32,
    pub endorsers: u8,
    pub total_weight: u64,
    /// Whether the VN has a fee rule ([`fee_outpoint`]).
    pub fee: bool,
}

impl PolicyHeader {
    pub fn of(terms: &ArchivedPolicyTerms, registrar: PublicKey) -> PolicyHeader {
        let endorsers = terms.endorsers.as_slice();
        PolicyHeader {
            vn: terms.vn.to_native(),
            registrar,
            threshold: terms.threshold.to_native(),
            endorsers: endorsers.len() as u8,
            total_weight: endorsers
                .iter()
                .map(|e| u64::from(e.weight.to_native()))
                .sum(),
            fee: terms.fee.is_some(),
        }
    }

    /// Its set entry: amount 0 (a record is no balance), the rest packed in the asset field.
    pub fn record(&self) -> TxOutput {
        let mut packed = [0u8; 32];
        packed[0..4].copy_from_slice(&self.vn.to_le_bytes());
        packed[4..8].copy_from_slice(&self.threshold.to_le_bytes());
        packed[8] = self.endorsers;
        packed[9..17].copy_from_slice(&self.total_weight.to_le_bytes());
        packed[17] = u8::from(self.fee);
        TxOutput {
            amount: 0,
            asset: AssetId(Hash32(packed)),
            owner: self.registrar,
            unlock_height: None,
        }
    }

    pub fn decode(entry: &TxOutput) -> PolicyHeader {
        let packed = &entry.asset.0 .0;
        let u32_at =
            |at: usize| u32::from_le_bytes(packed[at..at + 4].try_into().expect("4 bytes"));
        PolicyHeader {
            vn: u32_at(0),
            registrar: entry.owner,
            threshold: u32_at(4),
            endorsers: packed[8],
            total_weight: u64::from_le_bytes(packed[9..17].try_into().expect("8 bytes")),
            fee: packed[17] == 1,
        }
    }
}

/// What an RS signs to be served VN `vn`'s transactions from height `from` (the node's routed stream): an
/// endorser of the VN, proven by its key's signature over this digest.
pub fn stream_request_digest(vn: VnId, from: u64) -> [u8; 32] {
    let mut bytes = [0u8; 12];
    bytes[..4].copy_from_slice(&vn.to_le_bytes());
    bytes[4..].copy_from_slice(&from.to_le_bytes());
    Hash32::of(domain::VN_STREAM_REQUEST, &bytes).0
}

/// An endorser's record: its key as owner, its weight packed in the asset field (amount 0).
pub fn endorser_record(vn: VnId, endorser: &ArchivedEndorser) -> TxOutput {
    let mut packed = [0u8; 32];
    packed[0..4].copy_from_slice(&vn.to_le_bytes());
    packed[4..8].copy_from_slice(&endorser.weight.to_native().to_le_bytes());
    TxOutput {
        amount: 0,
        asset: AssetId(Hash32(packed)),
        owner: PublicKey::from(&endorser.key),
        unlock_height: None,
    }
}

/// The weight an endorser's record gives its signature.
pub fn endorser_weight(entry: &TxOutput) -> u32 {
    u32::from_le_bytes(entry.asset.0 .0[4..8].try_into().expect("4 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_record_decodes_to_itself() {
        let header = PolicyHeader {
            vn: 77,
            registrar: PublicKey([4; 32]),
            threshold: 5,
            endorsers: 3,
            total_weight: 9,
            fee: true,
        };
        assert_eq!(PolicyHeader::decode(&header.record()), header);
        assert_ne!(policy_outpoint(1), policy_outpoint(2));
        assert_ne!(
            endorser_outpoint(1, &PublicKey([1; 32])),
            endorser_outpoint(2, &PublicKey([1; 32]))
        );
    }
}
