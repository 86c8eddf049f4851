//! Blocks: a header (height, round, parent, Merkle root of tx ids, the hash of their signatures, proposer, timestamp,
//! UTXO set checksum before the block) and a body of transactions in block order. The block hash covers the header's
//! fields in canonical order. A tx id leaves the signatures out (so a receipt proves a transaction by its id); the
//! signatures root puts them back under the header hash, so a certificate on a block vouches for every byte of it
//! and a follower checks one hash where it would check every signature.

use rkyv::{Archive, Deserialize, Serialize};

use crate::crypto::PublicKey;
use crate::id::{domain, BlockHash, Hash32};
use crate::merkle;
use crate::tx::{ArchivedTransaction, Transaction};

#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct BlockHeader {
    pub chain_id: u32,
    pub height: u64,
    /// The consensus round that proposed this block.
    pub round: u64,
    pub parent: BlockHash,
    /// [`merkle::root`] of the body's tx ids in order.
    pub tx_root: Hash32,
    /// [`signatures_root`] of the body: every transaction's signatures, in order.
    pub sig_root: Hash32,
    pub proposer: PublicKey,
    /// The proposer's wall clock, as the committed consensus block carries it: the same on every node, so it is
    /// the clock the witness order judges carried witness timestamps by (never a node's local clock).
    pub timestamp_ms: u64,
    /// [`crate::commitment::SetCommitment::checksum`] of the UTXO set *before* this block: the set after its
    /// parent (height - 1). Genesis (height 0) has no parent and carries its own post-state, its outputs' set.
    /// Why the parent's state: a block is built (by the executor, from a committed consensus block) before it is
    /// executed, so its own post-state is unknown then, while the parent's is known; each header still commits to
    /// the whole chain's state, one block late, and a node checks it on apply (a mismatch changes nothing).
    pub utxo_commitment: Hash32,
}

#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct Block {
    pub header: BlockHeader,
    pub txs: Vec<Transaction>,
}

impl ArchivedBlockHeader {
    pub fn hash(&self) -> BlockHash {
        let mut h = blake3::Hasher::new_derive_key(domain::BLOCK_HASH);
        h.update(&self.chain_id.to_native().to_le_bytes());
        h.update(&self.height.to_native().to_le_bytes());
        h.update(&self.round.to_native().to_le_bytes());
        h.update(&self.parent.0);
        h.update(&self.tx_root.0);
        h.update(&self.sig_root.0);
        h.update(&self.proposer.0);
        h.update(&self.timestamp_ms.to_native().to_le_bytes());
        h.update(&self.utxo_commitment.0);
        Hash32::from(h.finalize())
    }
}

impl BlockHeader {
    pub fn hash(&self) -> BlockHash {
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(self).expect("a header always archives");
        // SAFETY: the bytes were archived just above from a value of this type.
        unsafe { rkyv::access_unchecked::<ArchivedBlockHeader>(&bytes) }.hash()
    }
}

/// The hash of the signatures of `txs`, in order: per transaction its count, then each signer's key and signature.
pub fn signatures_root(txs: &[Transaction]) -> Hash32 {
    hash_signatures(txs.iter().map(|tx| {
        let signed = tx.signatures.iter();
        (
            tx.signatures.len(),
            signed.map(|w| (&w.key.0, &w.signature.0)),
        )
    }))
}

/// [`signatures_root`] of archived transactions, read in place.
pub fn archived_signatures_root<'a>(txs: impl Iterator<Item = &'a ArchivedTransaction>) -> Hash32 {
    hash_signatures(txs.map(|tx| {
        let signed = tx.signatures.iter();
        (
            tx.signatures.len(),
            signed.map(|w| (&w.key.0, &w.signature.0)),
        )
    }))
}

/// The bytes of [`signatures_root`] gathered first and hashed in one call, so blake3 compresses their chunks side by
/// side (fed piece by piece, each 64-byte block would wait for the one before).
fn hash_signatures<'a, S>(txs: impl Iterator<Item = (usize, S)>) -> Hash32
where
    S: Iterator<Item = (&'a [u8; 32], &'a [u8; 64])>,
{
    let mut bytes = Vec::new();
    for (count, signed) in txs {
        bytes.extend_from_slice(&(count as u64).to_le_bytes());
        for (key, signature) in signed {
            bytes.extend_from_slice(key);
            bytes.extend_from_slice(signature);
        }
    }
    let mut h = blake3::Hasher::new_derive_key(domain::SIGNATURES_ROOT);
    h.update(&bytes);
    Hash32::from(h.finalize())
}

impl Block {
    /// The Merkle root over this body's tx ids.
    pub fn compute_tx_root(&self) -> Hash32 {
        let ids: Vec<Hash32> = self.txs.iter().map(Transaction::tx_id).collect();
        merkle::root(&ids)
    }

    /// [`signatures_root`] of this body.
    pub fn compute_sig_root(&self) -> Hash32 {
        signatures_root(&self.txs)
    }
}

impl ArchivedBlock {
    /// The Merkle root over this body's tx ids, read in place.
    pub fn compute_tx_root(&self) -> Hash32 {
        let ids: Vec<Hash32> = self.txs.iter().map(|tx| tx.tx_id()).collect();
        merkle::root(&ids)
    }

    /// [`signatures_root`] of this body, read in place.
    pub fn compute_sig_root(&self) -> Hash32 {
        archived_signatures_root(self.txs.iter())
    }
}
