//! Transactions: UTXO inputs and outputs, fee, chain id, business network (`vn`), kind, memo, client id, and the
//! witnesses (one signature per distinct input owner over the tx id).
//!
//! The tx id is a blake3 hash of the body's fields written in a fixed canonical order, computed from the archived
//! (wire) form in place, so it never depends on how rkyv laid the bytes out. Witnesses are outside the id.

use rkyv::{Archive, Deserialize, Serialize};

use crate::crypto::{Keypair, PublicKey, Signature};
use crate::id::{domain, AssetId, Hash32, TxId};

/// The business network (VN) a transaction belongs to.
pub type VnId = u32;

/// A reference to one output of an earlier transaction.
#[derive(
    Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug,
)]
#[rkyv(derive(PartialEq, Eq, Hash, Debug))]
pub struct OutPoint {
    pub tx: TxId,
    pub index: u32,
}

impl From<&ArchivedOutPoint> for OutPoint {
    fn from(archived: &ArchivedOutPoint) -> OutPoint {
        OutPoint {
            tx: Hash32::from(&archived.tx),
            index: archived.index.to_native(),
        }
    }
}

/// A spendable amount of one asset, owned by one key, optionally locked until a height.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[rkyv(derive(Debug))]
pub struct TxOutput {
    pub amount: u64,
    pub asset: AssetId,
    pub owner: PublicKey,
    /// The output cannot be spent in a block below this height.
    pub unlock_height: Option<u64>,
}

impl From<&ArchivedTxOutput> for TxOutput {
    fn from(archived: &ArchivedTxOutput) -> TxOutput {
        TxOutput {
            amount: archived.amount.to_native(),
            asset: AssetId::from(&archived.asset),
            owner: PublicKey::from(&archived.owner),
            unlock_height: archived.unlock_height.as_ref().map(|h| h.to_native()),
        }
    }
}

/// One committee member as the genesis names it.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct CommitteeMember {
    pub key: PublicKey,
    pub stake: u64,
}

/// Chain parameters fixed at genesis.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct ChainParams {
    /// The smallest fee, in CAS, that a transfer must pay.
    pub min_fee: u64,
    /// Target block interval the proposers aim for.
    pub block_interval_ms: u64,
}

/// What a transaction does beyond moving outputs. Tokens, contracts and governance votes join as variants.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub enum TxKind {
    /// Spend inputs, create outputs, pay the fee.
    Transfer,
    /// The first transaction of the chain: creates the initial allocations (no inputs) and records the committee and
    /// parameters. Valid only in the genesis block.
    /// Part 0 carries the committee; later parts (when the allocations exceed one transaction) carry none.
    Genesis {
        part: u32,
        committee: Vec<CommitteeMember>,
        params: ChainParams,
    },
}

/// The signed part of a transaction.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct TxBody {
    /// Binds the signatures to one chain: they cannot be replayed on another.
    pub chain_id: u32,
    /// Binds the signatures to one business network.
    pub vn: VnId,
    pub kind: TxKind,
    pub inputs: Vec<OutPoint>,
    pub outputs: Vec<TxOutput>,
    /// Paid in CAS to the validators.
    pub fee: u64,
    /// Free-form routing data for the receiver (e.g. an exchange deposit tag); at most
    /// [`crate::codec::MEMO_BYTES_MAX`] bytes.
    pub memo: Vec<u8>,
    /// The sender's idempotency key: a second transaction with the same sender and client id is a duplicate.
    pub client_id: Option<u64>,
}

/// A signature by one input owner over the tx id.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct Witness {
    pub key: PublicKey,
    pub signature: Signature,
}

#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct Transaction {
    pub body: TxBody,
    pub witnesses: Vec<Witness>,
}

impl ArchivedTxBody {
    /// The tx id: the canonical hash of this body, read in place.
    pub fn tx_id(&self) -> TxId {
        let mut h = blake3::Hasher::new_derive_key(domain::TX_ID);
        h.update(&self.chain_id.to_native().to_le_bytes());
        h.update(&self.vn.to_native().to_le_bytes());
        match &self.kind {
            ArchivedTxKind::Transfer => {
                h.update(&[0]);
            }
            ArchivedTxKind::Genesis {
                part,
                committee,
                params,
            } => {
                h.update(&[1]);
                h.update(&part.to_native().to_le_bytes());
                h.update(&(committee.len() as u64).to_le_bytes());
                for member in committee.iter() {
                    h.update(&member.key.0);
                    h.update(&member.stake.to_native().to_le_bytes());
                }
                h.update(&params.min_fee.to_native().to_le_bytes());
                h.update(&params.block_interval_ms.to_native().to_le_bytes());
            }
        }
        h.update(&(self.inputs.len() as u64).to_le_bytes());
        for input in self.inputs.iter() {
            h.update(&input.tx.0);
            h.update(&input.index.to_native().to_le_bytes());
        }
        h.update(&(self.outputs.len() as u64).to_le_bytes());
        for output in self.outputs.iter() {
            hash_output(&mut h, &TxOutput::from(output));
        }
        h.update(&self.fee.to_native().to_le_bytes());
        h.update(&(self.memo.len() as u64).to_le_bytes());
        h.update(&self.memo);
        match self.client_id.as_ref() {
            None => h.update(&[0]),
            Some(id) => h.update(&[1]).update(&id.to_native().to_le_bytes()),
        };
        Hash32::from(h.finalize())
    }
}

/// Writes an output's canonical bytes: amount, asset, owner, lock flag, unlock height.
pub(crate) fn hash_output(h: &mut blake3::Hasher, output: &TxOutput) {
    h.update(&output.amount.to_le_bytes());
    h.update(&output.asset.0 .0);
    h.update(&output.owner.0);
    match output.unlock_height {
        None => h.update(&[0]),
        Some(height) => h.update(&[1]).update(&height.to_le_bytes()),
    };
}

impl TxBody {
    /// The tx id of an owned body (archives it first; wallets and tests use this, the hot path reads in place).
    pub fn tx_id(&self) -> TxId {
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(self).expect("a body always archives");
        // SAFETY: the bytes were archived just above from a value of this type.
        unsafe { rkyv::access_unchecked::<ArchivedTxBody>(&bytes) }.tx_id()
    }

    /// Signs the body with every key given (one per distinct input owner) and returns the transaction.
    pub fn sign(self, signers: &[&Keypair]) -> Transaction {
        let id = self.tx_id();
        let witnesses = signers
            .iter()
            .map(|k| Witness {
                key: k.public(),
                signature: k.sign(&id.0),
            })
            .collect();
        Transaction {
            body: self,
            witnesses,
        }
    }
}

impl Transaction {
    pub fn tx_id(&self) -> TxId {
        self.body.tx_id()
    }
}

impl ArchivedTransaction {
    pub fn tx_id(&self) -> TxId {
        self.body.tx_id()
    }
}
