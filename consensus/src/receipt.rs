//! A settlement receipt and its offline check: a transaction, its place in a ledger block (a Merkle path to the
//! header's tx root, and one to the results root that carries its verdict), the header, and the committee's
//! [`LedgerCert`] on the block's result, with the committee hand-overs since genesis. Checking it needs nothing but
//! the genesis committee: no node, no ledger.
//!
//! What a good receipt proves: more than two thirds of the stake of the committee of the statement's epoch signed
//! that, after executing the block with this header (which links to its consensus block by the statement), this
//! transaction sits at this index with this verdict: applied (code 0) or rejected with a stable [`RejectCode`].

use cas_engine::merkle::{self, ProofStep};
use cas_engine::{BlockHash, BlockHeader, RejectCode, Transaction, TxId};

use crate::committee::Committee;
use crate::ledger_cert::{
    committee_for, follow_handovers, result_leaf, verify_ledger_cert, CommitteeHandover,
    EpochError, HandoverError, LedgerCert,
};
use crate::messages::CertError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The signed transaction's bytes, as in the block.
    pub tx: Vec<u8>,
    pub index: u32,
    /// 0 when applied, else the [`RejectCode`] number.
    pub code: u16,
    pub tx_path: Vec<ProofStep>,
    pub results_path: Vec<ProofStep>,
    pub header: BlockHeader,
    pub cert: LedgerCert,
    pub handovers: Vec<CommitteeHandover>,
}

/// What a receipt proves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settled {
    pub tx: TxId,
    pub height: u64,
    pub index: u32,
    pub block: BlockHash,
    pub consensus: BlockHash,
    /// The rule the transaction broke (nothing changed), or None when it was applied.
    pub rejection: Option<RejectCode>,
    pub epoch: u64,
    /// Stake that signed, and the stake of the committee.
    pub signed_stake: u64,
    pub committee_stake: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("the transaction does not decode: {0}")]
    Tx(cas_engine::DecodeError),
    #[error("the transaction's bytes are not its canonical encoding")]
    NonCanonicalTx,
    #[error("the transaction's signatures do not verify: {0}")]
    TxSignature(cas_engine::TxError),
    #[error("chain id {found}, the genesis says {expected}")]
    ChainId { found: u32, expected: u32 },
    #[error("the header's hash is not the block the certificate names")]
    Header,
    #[error("the header is at height {header}, the certificate at {cert}")]
    Height { header: u64, cert: u64 },
    #[error("the transaction is not under the header's tx root by the path given")]
    TxPath,
    #[error("the transaction's place and verdict are not under the certified results root by the path given")]
    ResultsPath,
    #[error("verdict code {0} is not a known code")]
    Code(u16),
    #[error("the certificate names epoch {0}, which the hand-overs given do not reach")]
    Epoch(u64),
    #[error("height {height} is outside epoch {epoch}'s heights")]
    EpochHeights { height: u64, epoch: u64 },
    #[error(transparent)]
    Handover(#[from] HandoverError),
    #[error("the certificate does not verify")]
    Certificate(#[from] CertError),
}

/// Why a proof's transaction bytes are not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxBytesError {
    #[error("the transaction does not decode: {0}")]
    Decode(cas_engine::DecodeError),
    #[error("the transaction's bytes are not its canonical encoding")]
    NonCanonical,
    #[error("the transaction's signatures do not verify: {0}")]
    Signature(cas_engine::TxError),
}

/// Decodes a proof's transaction and checks that its bytes are the canonical ones its owners signed; returns it
/// with its id.
pub fn check_tx_bytes(bytes: &[u8]) -> Result<(Transaction, TxId), TxBytesError> {
    let tx = cas_engine::codec::decode_tx(bytes).map_err(TxBytesError::Decode)?;
    // The id covers the fields, not rkyv's padding: only the canonical encoding is taken, so no byte of a proof
    // can change without failing it.
    let owned = cas_engine::codec::to_owned_tx(tx);
    if cas_engine::codec::encode_tx(&owned).as_slice() != bytes {
        return Err(TxBytesError::NonCanonical);
    }
    let tx_id = tx.tx_id();
    // The id covers the body; the signatures are checked too, so the bytes are the ones the owners signed.
    if let Some(Err(error)) = cas_engine::rules::verify_signatures(&[tx], &[tx_id]).pop() {
        return Err(TxBytesError::Signature(error));
    }
    Ok((owned, tx_id))
}

/// Checks `receipt` against the genesis committee of chain `chain_id`.
pub fn verify_receipt(
    receipt: &Receipt,
    chain_id: u32,
    genesis: Committee,
) -> Result<Settled, ReceiptError> {
    let (_, tx_id) = check_tx_bytes(&receipt.tx).map_err(|error| match error {
        TxBytesError::Decode(e) => ReceiptError::Tx(e),
        TxBytesError::NonCanonical => ReceiptError::NonCanonicalTx,
        TxBytesError::Signature(e) => ReceiptError::TxSignature(e),
    })?;
    let statement = &receipt.cert.statement;
    for found in [statement.chain_id, receipt.header.chain_id] {
        if found != chain_id {
            return Err(ReceiptError::ChainId {
                found,
                expected: chain_id,
            });
        }
    }
    if receipt.header.height != statement.height {
        return Err(ReceiptError::Height {
            header: receipt.header.height,
            cert: statement.height,
        });
    }
    if receipt.header.hash() != statement.block {
        return Err(ReceiptError::Header);
    }
    if !merkle::verify(&receipt.header.tx_root, &tx_id, &receipt.tx_path) {
        return Err(ReceiptError::TxPath);
    }
    let leaf = result_leaf(receipt.index, &tx_id, receipt.code);
    if !merkle::verify(&statement.results_root, &leaf, &receipt.results_path) {
        return Err(ReceiptError::ResultsPath);
    }
    let rejection = match receipt.code {
        0 => None,
        code => Some(RejectCode::from_u16(code).ok_or(ReceiptError::Code(code))?),
    };
    let chain = follow_handovers(chain_id, genesis, &receipt.handovers)?;
    let epoch =
        committee_for(&chain, statement.epoch, statement.height).map_err(|error| match error {
            EpochError::Unreached(epoch) => ReceiptError::Epoch(epoch),
            EpochError::Heights { height, epoch } => ReceiptError::EpochHeights { height, epoch },
        })?;
    verify_ledger_cert(&receipt.cert, &epoch.committee)?;
    let signed_stake = receipt
        .cert
        .signatures
        .iter()
        .map(|s| epoch.committee.stake(s.signer))
        .sum();
    Ok(Settled {
        tx: tx_id,
        height: statement.height,
        index: receipt.index,
        block: statement.block,
        consensus: statement.consensus,
        rejection,
        epoch: statement.epoch,
        signed_stake,
        committee_stake: epoch
            .committee
            .members()
            .map(|m| epoch.committee.stake(m))
            .sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::committee::MemberIndex;
    use crate::ledger_cert::{result_leaves, LedgerCertifier, LedgerStatement};
    use cas_engine::codec::encode_tx;
    use cas_engine::fixtures::{key, COMMITTEE_KEYS};
    use cas_engine::{Hash32, Keypair, PublicKey};

    /// A receipt for the second of three transfers in a block certified by three of four members.
    fn receipt() -> (Receipt, Committee) {
        use cas_engine::fixtures::{funded_genesis, ring_transfers};
        let chain_id = 7;
        let genesis = funded_genesis(chain_id, 4, 3, 1, 1_000);
        let txs = ring_transfers(chain_id, &genesis, 3);
        let ids: Vec<TxId> = txs.iter().map(|t| t.tx_id()).collect();
        let results = [(ids[0], 0), (ids[1], 13), (ids[2], 0)];
        let header = BlockHeader {
            chain_id,
            height: 9,
            round: 12,
            parent: Hash32([1; 32]),
            tx_root: merkle::root(&ids),
            sig_root: cas_engine::block::signatures_root(&txs),
            proposer: PublicKey([2; 32]),
            timestamp_ms: 1_000,
            utxo_commitment: Hash32([3; 32]),
        };
        let statement = LedgerStatement {
            chain_id,
            epoch: 0,
            height: 9,
            block: header.hash(),
            consensus: Hash32([4; 32]),
            results_root: crate::ledger_cert::results_root(&results),
            utxo_commitment: Hash32([5; 32]),
        };
        let keys: Vec<Keypair> = (0..4).map(|i| key(COMMITTEE_KEYS, i)).collect();
        let committee = Committee::new(keys.iter().map(|k| (k.public(), 1)).collect()).unwrap();
        let mut certifiers: Vec<LedgerCertifier> = keys
            .into_iter()
            .enumerate()
            .map(|(i, k)| LedgerCertifier::new(committee.clone(), i as MemberIndex, k, 0, 8))
            .collect();
        let votes: Vec<_> = certifiers[1..3]
            .iter_mut()
            .map(|c| c.executed(statement).0)
            .collect();
        certifiers[0].executed(statement);
        certifiers[0].on_vote(votes[0]);
        let cert = certifiers[0].on_vote(votes[1]).1.expect("a quorum");
        let receipt = Receipt {
            tx: encode_tx(&txs[1]).to_vec(),
            index: 1,
            code: 13,
            tx_path: merkle::proof(&ids, 1).unwrap(),
            results_path: merkle::proof(&result_leaves(&results), 1).unwrap(),
            header,
            cert,
            handovers: Vec::new(),
        };
        (receipt, committee)
    }

    #[test]
    fn a_good_receipt_proves_the_place_and_the_verdict() {
        let (receipt, committee) = receipt();
        let chain_id = receipt.header.chain_id;
        let settled = verify_receipt(&receipt, chain_id, committee).unwrap();
        assert_eq!(settled.height, 9);
        assert_eq!(settled.index, 1);
        assert_eq!(settled.rejection, RejectCode::from_u16(13));
        assert_eq!((settled.signed_stake, settled.committee_stake), (3, 4));
    }

    #[test]
    fn any_changed_part_fails() {
        let (good, committee) = receipt();
        let chain_id = good.header.chain_id;
        let check = |receipt: &Receipt| verify_receipt(receipt, chain_id, committee.clone());
        let mut r = good.clone();
        r.code = 0;
        assert_eq!(check(&r), Err(ReceiptError::ResultsPath));
        let mut r = good.clone();
        r.index = 0;
        assert_eq!(check(&r), Err(ReceiptError::ResultsPath));
        let mut r = good.clone();
        r.header.timestamp_ms += 1;
        assert_eq!(check(&r), Err(ReceiptError::Header));
        let mut r = good.clone();
        r.tx_path[0].sibling.0[0] ^= 1;
        assert_eq!(check(&r), Err(ReceiptError::TxPath));
        let mut r = good.clone();
        r.cert.statement.utxo_commitment.0[0] ^= 1;
        assert!(matches!(check(&r), Err(ReceiptError::Certificate(_))));
        let mut r = good.clone();
        r.cert.statement.epoch = 1;
        assert!(matches!(check(&r), Err(ReceiptError::Epoch(1))));
        assert!(matches!(
            verify_receipt(&good, chain_id + 1, committee.clone()),
            Err(ReceiptError::ChainId { .. })
        ));
        // Every single byte of the transaction matters.
        for at in 0..good.tx.len() {
            let mut r = good.clone();
            r.tx[at] ^= 1;
            assert!(check(&r).is_err(), "byte {at} of the transaction changed");
        }
    }
}
