//! The wire and disk format: rkyv's archived form (little-endian, unaligned, 32-bit offsets, pinned in the
//! workspace manifest), and the one entry point that admits untrusted bytes.
//!
//! `decode_*` bounds the size first, then runs bytecheck over every byte, then bounds the counts inside; any
//! failure is a typed [`DecodeError`], never a panic. Its text says what failed (rkyv's checks run with rancor's
//! [`rancor::BoxedError`], which keeps the message in every build, where `rancor::Error` drops it in release
//! builds) and is bounded ([`crate::text::reason`]). Bytes that came from our own store or were already decoded
//! once are read in place with `access_*_trusted`, which skips validation.

use rkyv::rancor;
use rkyv::util::AlignedVec;

use crate::block::{ArchivedBlock, Block};
use crate::tx::{ArchivedTransaction, ArchivedTxKind, Transaction};

/// The largest encoded transaction accepted.
pub const TX_BYTES_MAX: usize = 64 * 1024;
/// Inputs per transaction.
pub const INPUTS_MAX: usize = 256;
/// Outputs per transaction.
pub const OUTPUTS_MAX: usize = 256;
/// Witnesses per transaction: at most one per input owner.
pub const SIGNATURES_MAX: usize = INPUTS_MAX;
/// Memo bytes (exchange deposit routing).
pub const MEMO_BYTES_MAX: usize = 64;
/// Committee members in a genesis transaction.
pub const COMMITTEE_MAX: usize = 1024;
/// Evidence items (encoded witness headers) one issuance transaction may carry.
pub const ISSUANCE_EVIDENCE_MAX: usize = 8;
/// Evidence bytes one issuance transaction may carry in all: with its outputs and a whole committee's keys as
/// absent it stays under [`TX_BYTES_MAX`] (a witness header with its two uncles takes well under 2 KiB).
pub const ISSUANCE_EVIDENCE_BYTES_MAX: usize = 16 * 1024;
/// Witness reward outputs one issuance transaction may pay.
pub const WITNESS_REWARD_OUTPUTS_MAX: usize = 128;
/// Outputs one issuance transaction may have: witness rewards, then validator rewards.
pub const ISSUANCE_OUTPUTS_MAX: usize =
    WITNESS_REWARD_OUTPUTS_MAX + crate::stake::VALIDATOR_PAYEES_MAX;
/// Bytes of a candidacy's address (an IPv6 socket address; the rules refuse other lengths than
/// [`crate::stake::ADDRESS_BYTES`]).
pub const CANDIDACY_ADDRESS_BYTES_MAX: usize = 18;
/// Transactions per block.
pub const BLOCK_TXS_MAX: usize = 200_000;
/// The largest encoded block accepted.
pub const BLOCK_BYTES_MAX: usize = 64 * 1024 * 1024;

const _: () = assert!(SIGNATURES_MAX <= INPUTS_MAX);
const _: () = assert!(TX_BYTES_MAX <= BLOCK_BYTES_MAX);
// Evidence, a whole committee absent (32-byte keys), a full set of issuance outputs (under 96 archived bytes each)
// and the rest of the body fit one tx.
const _: () = assert!(
    ISSUANCE_EVIDENCE_BYTES_MAX + COMMITTEE_MAX * 32 + ISSUANCE_OUTPUTS_MAX * 96 + 1024
        <= TX_BYTES_MAX
);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{len} bytes exceed the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("malformed bytes: {reason}")]
    Malformed { reason: String },
    #[error("{what}: {count} exceeds the limit of {max}")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("transaction {index} of the block: {source}")]
    InBlock {
        index: usize,
        #[source]
        source: Box<DecodeError>,
    },
}

/// The error type for checking untrusted archives: it keeps what failed and where, in release builds too.
pub type CheckError = rancor::BoxedError;

fn malformed(error: CheckError) -> DecodeError {
    DecodeError::Malformed {
        reason: crate::text::reason(&error),
    }
}

fn bound(what: &'static str, count: usize, max: usize) -> Result<(), DecodeError> {
    if count > max {
        return Err(DecodeError::TooMany { what, count, max });
    }
    Ok(())
}

/// Validates untrusted bytes as one transaction.
pub fn decode_tx(bytes: &[u8]) -> Result<&ArchivedTransaction, DecodeError> {
    if bytes.len() > TX_BYTES_MAX {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: TX_BYTES_MAX,
        });
    }
    let tx = rkyv::access::<ArchivedTransaction, CheckError>(bytes).map_err(malformed)?;
    check_tx_bounds(tx)?;
    Ok(tx)
}

/// Checks the counts inside an archived transaction (inputs, outputs, signatures, memo, committee) against the limits;
/// for containers (blocks, packages) that archive transactions inside themselves.
pub fn check_tx_bounds(tx: &ArchivedTransaction) -> Result<(), DecodeError> {
    bound("inputs", tx.body.inputs.len(), INPUTS_MAX)?;
    bound("outputs", tx.body.outputs.len(), OUTPUTS_MAX)?;
    bound("signatures", tx.signatures.len(), SIGNATURES_MAX)?;
    bound("memo bytes", tx.body.memo.len(), MEMO_BYTES_MAX)?;
    match &tx.body.kind {
        ArchivedTxKind::Genesis { committee, .. } => {
            bound("committee members", committee.len(), COMMITTEE_MAX)?;
        }
        ArchivedTxKind::Issuance {
            evidence, absent, ..
        } => {
            if let Some(absent) = absent.as_ref() {
                bound("issuance absent members", absent.len(), COMMITTEE_MAX)?;
            }
            bound(
                "issuance evidence items",
                evidence.len(),
                ISSUANCE_EVIDENCE_MAX,
            )?;
            let bytes = evidence.iter().map(|item| item.len()).sum();
            bound(
                "issuance evidence bytes",
                bytes,
                ISSUANCE_EVIDENCE_BYTES_MAX,
            )?;
            bound(
                "issuance outputs",
                tx.body.outputs.len(),
                ISSUANCE_OUTPUTS_MAX,
            )?;
        }
        ArchivedTxKind::Candidacy { address } => {
            bound(
                "candidacy address bytes",
                address.len(),
                CANDIDACY_ADDRESS_BYTES_MAX,
            )?;
        }
        ArchivedTxKind::Equivocation { proof } => {
            bound(
                "equivocation proof bytes",
                proof.len(),
                crate::evidence::EQUIVOCATION_PROOF_BYTES,
            )?;
        }
        ArchivedTxKind::TokenIssue { spec } => {
            bound(
                "token name bytes",
                spec.name.len(),
                crate::token::NAME_BYTES_MAX,
            )?;
            bound(
                "token symbol bytes",
                spec.symbol.len(),
                crate::token::SYMBOL_BYTES_MAX,
            )?;
        }
        ArchivedTxKind::ContractDeploy { code } => {
            bound(
                "contract code bytes",
                code.len(),
                crate::contract::SOURCE_BYTES_MAX,
            )?;
        }
        ArchivedTxKind::VnRegister { policy } => {
            bound(
                "policy endorsers",
                policy.endorsers.len(),
                crate::vn::ENDORSERS_MAX,
            )?;
        }
        ArchivedTxKind::Propose { terms } => {
            bound(
                "proposal title bytes",
                terms.title.len(),
                crate::governance::TITLE_BYTES_MAX,
            )?;
        }
        ArchivedTxKind::ContractCall { call } => {
            use crate::contract::ledger::{
                ArchivedContractArg, ARG_TEXT_BYTES_MAX, FUNCTION_BYTES_MAX,
            };
            bound(
                "contract code bytes",
                call.code.len(),
                crate::contract::SOURCE_BYTES_MAX,
            )?;
            bound(
                "contract function bytes",
                call.function.len(),
                FUNCTION_BYTES_MAX,
            )?;
            bound(
                "contract arguments",
                call.args.len(),
                crate::contract::ARGS_MAX,
            )?;
            for arg in call.args.iter() {
                if let ArchivedContractArg::Text(text) = arg {
                    bound("contract argument bytes", text.len(), ARG_TEXT_BYTES_MAX)?;
                }
            }
        }
        ArchivedTxKind::Transfer
        | ArchivedTxKind::Bond { .. }
        | ArchivedTxKind::Unbond { .. }
        | ArchivedTxKind::TokenMint { .. }
        | ArchivedTxKind::Approve { .. }
        | ArchivedTxKind::TransferFrom { .. }
        | ArchivedTxKind::OrderPlace { .. }
        | ArchivedTxKind::Fill { .. }
        | ArchivedTxKind::Vote { .. } => {}
    }
    Ok(())
}

/// Validates untrusted bytes as one block, including every transaction's bounds.
pub fn decode_block(bytes: &[u8]) -> Result<&ArchivedBlock, DecodeError> {
    if bytes.len() > BLOCK_BYTES_MAX {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: BLOCK_BYTES_MAX,
        });
    }
    let block = rkyv::access::<ArchivedBlock, CheckError>(bytes).map_err(malformed)?;
    bound("block transactions", block.txs.len(), BLOCK_TXS_MAX)?;
    for (index, tx) in block.txs.iter().enumerate() {
        check_tx_bounds(tx).map_err(|source| DecodeError::InBlock {
            index,
            source: Box::new(source),
        })?;
    }
    Ok(block)
}

/// Reads bytes that this process archived or validated before, in place, without checking them again.
///
/// # Safety
/// `bytes` must hold an archived [`Transaction`] produced by [`encode_tx`] or accepted by [`decode_tx`].
pub unsafe fn access_tx_trusted(bytes: &[u8]) -> &ArchivedTransaction {
    rkyv::access_unchecked::<ArchivedTransaction>(bytes)
}

/// Reads a block from our own store in place, without checking it again.
///
/// # Safety
/// `bytes` must hold an archived [`Block`] produced by [`encode_block`] or accepted by [`decode_block`].
pub unsafe fn access_block_trusted(bytes: &[u8]) -> &ArchivedBlock {
    rkyv::access_unchecked::<ArchivedBlock>(bytes)
}

/// Archives `tx` into a buffer of exactly its length ([`encoded_tx_len`]).
pub fn encode_tx(tx: &Transaction) -> AlignedVec {
    rkyv::api::high::to_bytes_in::<_, rancor::Error>(
        tx,
        AlignedVec::with_capacity(encoded_tx_len(tx)),
    )
    .expect("archiving into memory cannot fail")
}

/// Archives `block` into a buffer of exactly its length ([`encoded_block_len`]): a block of megabytes is written
/// once, where a growing buffer copied it at each doubling, every time into pages not touched before.
pub fn encode_block(block: &Block) -> AlignedVec {
    let len = encoded_block_len(block.txs.iter().map(encoded_tx_len).sum());
    rkyv::api::high::to_bytes_in::<_, rancor::Error>(block, AlignedVec::with_capacity(len))
        .expect("archiving into memory cannot fail")
}

/// The bytes `tx` takes in any archive: alone (`encode_tx(tx).len()`) or as one element of a block's or a package's
/// transactions. The format is unaligned (no padding), so an archive of transactions is their sum plus its own
/// fixed part; this computes it from the counts, without archiving.
pub fn encoded_tx_len(tx: &Transaction) -> usize {
    use crate::tx::{
        ArchivedCommitteeMember, ArchivedOutPoint, ArchivedTxOutput, ArchivedTxSignature, TxKind,
    };
    use std::mem::size_of;
    let body = &tx.body;
    let kind = match &body.kind {
        TxKind::Transfer
        | TxKind::Bond { .. }
        | TxKind::Unbond { .. }
        | TxKind::TokenMint { .. }
        | TxKind::Fill { .. } => 0,
        TxKind::TransferFrom { .. } => size_of::<crate::token::ArchivedSpend>(),
        TxKind::TokenIssue { spec } => {
            size_of::<crate::token::ArchivedTokenSpec>()
                + out_of_line(spec.name.len())
                + out_of_line(spec.symbol.len())
        }
        TxKind::Approve { .. } => size_of::<crate::token::ArchivedAllowanceTerms>(),
        TxKind::ContractDeploy { code } => code.len(),
        TxKind::ContractCall { call } => {
            use crate::contract::ledger::{ArchivedContractArg, ArchivedContractCall, ContractArg};
            size_of::<ArchivedContractCall>()
                + out_of_line(call.function.len())
                + call.code.len()
                + call
                    .args
                    .iter()
                    .map(|arg| {
                        size_of::<ArchivedContractArg>()
                            + match arg {
                                ContractArg::Int(_) => 0,
                                ContractArg::Text(text) => out_of_line(text.len()),
                            }
                    })
                    .sum::<usize>()
        }
        TxKind::OrderPlace { .. } => size_of::<crate::token::ArchivedOrderTerms>(),
        TxKind::Propose { terms } => {
            size_of::<crate::governance::ArchivedProposalTerms>() + out_of_line(terms.title.len())
        }
        TxKind::Vote { .. } => size_of::<crate::governance::ArchivedVoteCast>(),
        TxKind::VnRegister { policy } => {
            size_of::<crate::vn::ArchivedPolicyTerms>()
                + policy.endorsers.len() * size_of::<crate::vn::ArchivedEndorser>()
        }
        TxKind::Candidacy { address } => address.len(),
        TxKind::Equivocation { proof } => proof.len(),
        TxKind::Genesis { committee, .. } => {
            committee.len() * size_of::<ArchivedCommitteeMember>()
                + size_of::<crate::tx::ArchivedChainParams>()
        }
        TxKind::Issuance {
            evidence, absent, ..
        } => {
            evidence
                .iter()
                .map(|item| size_of::<rkyv::vec::ArchivedVec<u8>>() + item.len())
                .sum::<usize>()
                + absent
                    .as_ref()
                    .map_or(0, |keys| keys.len() * size_of::<crate::crypto::PublicKey>())
        }
    };
    size_of::<ArchivedTransaction>()
        + body.inputs.len() * size_of::<ArchivedOutPoint>()
        + body.outputs.len() * size_of::<ArchivedTxOutput>()
        + body.memo.len()
        + tx.signatures.len() * size_of::<ArchivedTxSignature>()
        + kind
}

/// The encoded length of a block whose transactions take `txs_bytes` in all (see [`encoded_tx_len`]).
pub fn encoded_block_len(txs_bytes: usize) -> usize {
    std::mem::size_of::<ArchivedBlock>() + txs_bytes
}

/// The bytes a string of `len` bytes takes outside its archived field: none when it fits inline.
fn out_of_line(len: usize) -> usize {
    if len <= rkyv::string::repr::INLINE_CAPACITY {
        0
    } else {
        len
    }
}

/// Turns a validated archived transaction back into an owned one (tools and tests; not the hot path).
pub fn to_owned_tx(tx: &ArchivedTransaction) -> Transaction {
    rkyv::deserialize::<Transaction, rancor::Error>(tx).expect("a validated archive deserializes")
}

/// Turns a validated archived block back into an owned one (tools and tests; not the hot path).
pub fn to_owned_block(block: &ArchivedBlock) -> Block {
    rkyv::deserialize::<Block, rancor::Error>(block).expect("a validated archive deserializes")
}
