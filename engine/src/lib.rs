//! The CAS ledger's domain, pure and deterministic: no threads, no IO, no clocks, no randomness.
//!
//! Ids and hashes ([`id`]), keys and batch signature verification ([`crypto`]), transactions ([`tx`]), blocks and
//! their Merkle trees ([`block`], [`merkle`]), the UTXO set commitment ([`commitment`]), the zero-copy codec with
//! the one untrusted decoder ([`codec`]), bounded echoes of untrusted text in errors ([`text`]), the UTXO rules
//! ([`rules`]), stake, candidacy and elections ([`stake`]), business tokens, allowances and
//! orders ([`token`]), CIP governance ([`governance`]), business networks and their endorsement Policy ([`vn`]), genesis ([`genesis`]) and an in-memory reference
//! ledger ([`ledger`]). Every other crate builds on these types.

pub mod block;
pub mod client;
pub mod codec;
pub mod commitment;
pub mod contract;
pub mod crypto;
pub mod evidence;
pub mod fasthash;
pub mod fixtures;
pub mod genesis;
pub mod governance;
pub mod hash_many;
pub mod id;
pub mod keystream;
pub mod ledger;
pub mod merkle;
pub mod parted_map;
pub mod reject;
pub mod rules;
pub mod stake;
pub mod synchronizer;
pub mod text;
pub mod token;
pub mod tx;
pub mod vn;

pub use block::{ArchivedBlock, ArchivedBlockHeader, Block, BlockHeader};
pub use codec::DecodeError;
pub use commitment::SetCommitment;
pub use crypto::{Keypair, PublicKey, Signature};
pub use id::{AssetId, BlockHash, Hash32, PackageId, TxId};
pub use ledger::MemoryLedger;
pub use reject::RejectCode;
pub use rules::{RuleContext, TxError, UtxoView};
pub use tx::{
    ArchivedTransaction, OutPoint, Transaction, TxBody, TxKind, TxOutput, TxSignature, VnId,
};
