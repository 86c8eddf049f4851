//! UTXO rules as pure functions over a [`UtxoView`]: one transaction, and a batch applied in order.
//!
//! Signatures are checked separately and in batches ([`verify_signatures`]); the rules then check that every
//! input's owner has a signature, that inputs exist and are unspent (inside a batch the earlier transaction wins a
//! double spend), that locks are open, and that value is conserved per asset with the fee paid in CAS; stake
//! transactions convert between CAS and a candidate's stake asset under the rules of [`crate::stake`]. Every
//! failure is its own [`TxError`] variant carrying the offending index. Nothing here mutates the view.

use std::collections::HashMap;

use crate::contract::ledger::{
    code_hash, contract_account, contract_id, contract_outpoint, contract_record, parse_cached,
    parse_code, run, ArchivedContractCall, CallRefusal, CONTRACT_ACCOUNT,
};
use crate::crypto::PublicKey;
use crate::crypto::{verify_batch_sized, BatchSizer, SigEntry};
use crate::evidence::{evidence_outpoint, evidence_record, EquivocationProof, EvidenceError};
use crate::fasthash::{FastMap, FastSet};
use crate::governance::{
    ballot_outpoint, check_terms, proposal_outpoint, vote_outpoint, vote_record, ArchivedVoteCast,
    GovernanceParams, Proposal,
};
use crate::id::{AssetId, Hash32, TxId};
use crate::stake::{candidacy_outpoint, candidacy_record, decode_address};
use crate::token::{
    buy_escrow, definition_outpoint, definition_record, mint_right_of, object_kind, object_place,
    token_asset, Allowance, ArchivedAllowanceTerms, ArchivedOrderTerms, ArchivedSide,
    ArchivedTokenSpec, ObjectKind, Order, Side, DECIMALS_MAX,
};
use crate::tx::{ArchivedTransaction, ArchivedTxKind, OutPoint, Transaction, TxOutput};
use crate::vn::{
    check_policy, decode_fee, endorser_outpoint, endorser_record, endorser_weight, fee_outpoint,
    fee_record, policy_outpoint, PolicyHeader,
};

/// Read access to the unspent outputs.
pub trait UtxoView {
    fn get(&self, outpoint: &OutPoint) -> Option<TxOutput>;
}

impl UtxoView for HashMap<OutPoint, TxOutput> {
    fn get(&self, outpoint: &OutPoint) -> Option<TxOutput> {
        HashMap::get(self, outpoint).copied()
    }
}

/// What the rules need to know about where a transaction is being applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleContext {
    pub chain_id: u32,
    /// The height of the block being built or applied.
    pub height: u64,
    /// The smallest fee in CAS.
    pub min_fee: u64,
    /// Blocks an unbonded amount stays locked.
    pub unbond_delay_blocks: u64,
    /// The DEX matching fee each side of a fill pays, in basis points of the CAS notional.
    pub matching_fee_bps: u32,
    /// The first height whose blocks may carry business transactions (tokens, orders, contracts): the height of the
    /// protocol version that brings them in the committee's schedule (0 where no older binary takes part, as in
    /// tests and tools; `u64::MAX` while none is scheduled). Below it they are refused ([`TxError::NotEnabled`]).
    pub business_from: u64,
    /// The floors of a CIP proposal's terms.
    pub governance: GovernanceParams,
}

impl RuleContext {
    /// The context of block `height` of chain `chain_id` with `params`.
    pub fn of(chain_id: u32, params: &crate::tx::ChainParams, height: u64) -> RuleContext {
        RuleContext {
            chain_id,
            height,
            min_fee: params.min_fee,
            unbond_delay_blocks: params.stake.unbond_delay_blocks,
            matching_fee_bps: params.matching_fee_bps,
            business_from: 0,
            governance: params.governance,
        }
    }

    /// This context with business transactions valid from `height` on.
    pub fn with_business_from(self, height: u64) -> RuleContext {
        RuleContext {
            business_from: height,
            ..self
        }
    }
}

/// Why a transaction is rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("signed for chain {got}, this chain is {expected}")]
    WrongChain { expected: u32, got: u32 },
    #[error("genesis transactions are valid only in the genesis block")]
    GenesisOnly,
    #[error("a transaction must spend at least one input")]
    NoInputs,
    #[error("input {input} repeats an earlier input of the same transaction")]
    DuplicateInput { input: usize },
    #[error("input {input} does not exist")]
    MissingInput { input: usize },
    #[error("input {input} was already spent earlier in this batch")]
    DoubleSpend { input: usize },
    #[error("input {input} is locked until height {unlock_height}")]
    Locked { input: usize, unlock_height: u64 },
    #[error("output {output} has a zero amount")]
    ZeroAmount { output: usize },
    #[error("input {input}'s owner has not signed")]
    Unsigned { input: usize },
    #[error("signature {index}'s key owns none of the inputs")]
    UnusedSignature { index: usize },
    #[error("signature {index} repeats an earlier key")]
    DuplicateSigner { index: usize },
    #[error("signature {index} does not verify")]
    BadSignature { index: usize },
    #[error("input {input} overflows the sum of its asset")]
    InputOverflow { input: usize },
    #[error("output {output} overflows the sum of its asset")]
    OutputOverflow { output: usize },
    #[error("asset {asset:?}: inputs {inputs} != outputs plus fee {outputs}")]
    ValueNotConserved {
        asset: AssetId,
        inputs: u64,
        outputs: u64,
    },
    #[error("fee {fee} is below the minimum {min_fee}")]
    FeeTooLow { fee: u64, min_fee: u64 },
    #[error(
        "issuance is minted only by the node's executor, as the last transaction of a ledger block"
    )]
    IssuanceReserved,
    #[error("issuance for height {got} in block {expected}")]
    IssuanceWrongHeight { expected: u64, got: u64 },
    #[error("issuance must spend nothing but the previous block's fee pot, carry no signatures and pay no fee")]
    IssuanceNotPlain,
    #[error("the previous block's fee pot of {pot} is not spent by this block's issuance")]
    IssuancePotUnspent { pot: u64 },
    #[error("issuance pays out {paid}, less than the fee pot of {pot} it spends")]
    IssuanceBurnsFees { pot: u64, paid: u64 },
    #[error("issuance output {output} is not CAS or is locked")]
    IssuanceNotCas { output: usize },
    #[error("client id {client_id} of this sender was used by an earlier transaction")]
    DuplicateClientId { client_id: u64 },
    #[error("the stake transaction names no declared candidate")]
    NotACandidate,
    #[error("this node key has declared its candidacy already")]
    AlreadyCandidate,
    #[error("a candidacy address has 0, 6 or 18 bytes, got {len}")]
    BadAddress { len: usize },
    #[error(
        "a bond takes {spent} of stake and returns only {bonded}: stake leaves only by an unbond"
    )]
    BondFreesStake { spent: u64, bonded: u64 },
    #[error(
        "an unbond spends {spent} of stake and creates {created}: stake is added only by a bond"
    )]
    UnbondAddsStake { spent: u64, created: u64 },
    #[error("an equivocation record carries inputs, outputs, a fee or signatures")]
    EvidenceNotPlain,
    #[error("the equivocation proof proves nothing: {0}")]
    BadEvidence(EvidenceError),
    #[error("an equivocation of this member is recorded already")]
    EvidenceKnown,
    #[error("a token of this issuer and nonce is issued already")]
    TokenExists,
    #[error("the token issue is malformed: {reason}")]
    BadTokenSpec { reason: &'static str },
    #[error("a mint creates {created} mint rights from {spent}: rights only turn into tokens")]
    MintCreatesRights { spent: u64, created: u64 },
    #[error("input 0 of a transfer-from is not an allowance")]
    NotAnAllowance,
    #[error("the allowance is not of the owner the transfer-from names")]
    AllowanceOwner,
    #[error("the contract's code is refused: {reason}")]
    BadContract { reason: String },
    #[error("the call names no deployed contract, or code other than the contract's")]
    NotAContract,
    #[error("the called function may take more operations than the budget")]
    ContractBudget,
    #[error("the call failed: {reason}")]
    ContractFailed { reason: String },
    #[error("business transactions are admitted from protocol version 4 on, which the committee does not run yet")]
    NotEnabled,
    #[error("the proposal is refused: {reason}")]
    BadProposal { reason: &'static str },
    #[error("the vote names no proposal the ledger holds")]
    UnknownProposal,
    #[error("the proposal's window ended at height {end}")]
    VotingClosed { end: u64 },
    #[error("the voter held no CAS at the proposal's snapshot: no ballot")]
    NoBallot,
    #[error("the voter's ballot for this proposal is spent already")]
    AlreadyVoted,
    #[error("the voter a vote names has not signed it")]
    VoterUnsigned,
    #[error("the first signer (the sender the ledger records) does not own input 0")]
    SenderMismatch,
    #[error("the VN Policy is refused: {reason}")]
    BadPolicy { reason: &'static str },
    #[error("VN {vn} is registered already")]
    VnExists { vn: u32 },
    #[error("no registration created VN {vn}")]
    UnknownVn { vn: u32 },
    #[error("endorsements weigh {weight}, the VN's Policy asks {threshold}")]
    NotEndorsed { weight: u64, threshold: u32 },
    #[error("no output pays the VN's fee of {amount} of {token:?} to its collector")]
    VnFeeUnpaid { amount: u64, token: AssetId },
    #[error("the allowance's spender has not signed")]
    WrongSpender,
    #[error("the allowance expired at height {expires_at}")]
    AllowanceExpired { expires_at: u64 },
    #[error("{asked} asked of an allowance of {allowed}")]
    AllowanceExceeded { allowed: u64, asked: u64 },
    #[error("the allowance is malformed: {reason}")]
    BadAllowance { reason: &'static str },
    #[error("input 0 of a fill is not an order")]
    NotAnOrder,
    #[error("the order is malformed: {reason}")]
    BadOrder { reason: &'static str },
    #[error("{asked} asked of an order that holds {available}")]
    OrderExceeded { available: u64, asked: u64 },
    #[error("output 0 of a fill must pay the maker {amount} exactly")]
    MakerUnpaid { amount: u64 },
    #[error(
        "{unbonded} unbonded, only {locked} of it (the fee aside) locked until height {until}"
    )]
    UnbondNotLocked {
        unbonded: u64,
        locked: u64,
        until: u64,
    },
}

/// Set entries at output indexes from here up are ledger records (client id claims, candidacies, fee pots, election
/// records), never coins: no transaction has this many outputs, and no client input can spend one.
pub const RECORD_INDEX_MIN: u32 = u32::MAX - 255;
/// The index of a client id claim ([`claim_outpoint`]).
pub const CLAIM_INDEX: u32 = u32::MAX;
/// The index of a candidacy record ([`crate::stake::candidacy_outpoint`]).
pub const CANDIDACY_INDEX: u32 = u32::MAX - 1;
/// The index of a block's fee pot ([`fee_pot_outpoint`]).
pub const FEE_POT_INDEX: u32 = u32::MAX - 2;
/// The index of an election record ([`crate::stake::election_outpoint`]).
pub const ELECTION_INDEX: u32 = u32::MAX - 3;
/// The index of a conduct record ([`crate::stake::conduct_outpoint`]).
pub const CONDUCT_INDEX: u32 = u32::MAX - 4;
/// The index of an evidence record ([`crate::evidence::evidence_outpoint`]).
pub const EVIDENCE_INDEX: u32 = u32::MAX - 5;
// Genesis stake outputs sit at OUTPUTS_MAX + a member's position (see `genesis::genesis_set`).
const _: () =
    assert!((crate::codec::OUTPUTS_MAX + crate::codec::COMMITTEE_MAX) as u32 <= RECORD_INDEX_MIN);
const _: () = assert!(EVIDENCE_INDEX >= RECORD_INDEX_MIN);

/// Where the fees of block `height` wait to be paid out: a record of the set (so nothing is burned, and the pot
/// travels with snapshots), created by the rules at the end of a block whose accepted transactions paid fees, and
/// spent by the next block's issuance, which pays it to the validators ([`crate::stake::validator_payouts`]).
pub fn fee_pot_outpoint(height: u64) -> OutPoint {
    OutPoint {
        tx: Hash32::of(crate::id::domain::FEE_POT, &height.to_le_bytes()),
        index: FEE_POT_INDEX,
    }
}

/// The set entry of a fee pot holding `fees`: CAS owned by no key (the all-zero key, which nobody can sign for).
pub fn fee_pot_output(fees: u64) -> TxOutput {
    TxOutput {
        amount: fees,
        asset: AssetId::CAS,
        owner: PublicKey::default(),
        unlock_height: None,
    }
}

/// Where the ledger records that `sender` used `client_id`: an entry of the UTXO set at this outpoint (index
/// [`CLAIM_INDEX`], which no transaction output has), holding [`claim_output`]. So the claim is in the set's commitment,
/// its snapshots and every node's state, and a second transaction with the same sender and client id is refused in
/// block order wherever it was admitted. Claims are kept for good (one set entry per transaction that carries a
/// client id); a claim is not a coin: no input can spend it.
pub fn claim_outpoint(sender: &PublicKey, client_id: u64) -> OutPoint {
    let mut hasher = blake3::Hasher::new_derive_key(crate::id::domain::CLIENT_ID_CLAIM);
    hasher.update(&sender.0);
    hasher.update(&client_id.to_le_bytes());
    OutPoint {
        tx: Hash32::from(hasher.finalize()),
        index: CLAIM_INDEX,
    }
}

/// The set entry of a claim by `sender`.
pub fn claim_output(sender: &PublicKey) -> TxOutput {
    TxOutput {
        amount: 0,
        asset: AssetId::CLIENT_ID_CLAIM,
        owner: *sender,
        unlock_height: None,
    }
}

/// The claim a transaction makes: its sender (first signer) and client id, if it carries one.
pub fn claim_of(tx: &ArchivedTransaction) -> Option<(PublicKey, u64)> {
    let client_id = tx.body.client_id.as_ref()?.to_native();
    let sender = PublicKey::from(&tx.signatures.first()?.key);
    Some((sender, client_id))
}

/// Whether a set entry at `outpoint` is a ledger record rather than a coin.
pub fn is_record(outpoint: &OutPoint) -> bool {
    outpoint.index >= RECORD_INDEX_MIN
}

/// What an input may spend of the view: a coin, or the escrow of a ledger object ([`crate::token`]); never
/// another record.
fn spendable_of(view: &impl UtxoView, outpoint: &OutPoint) -> Option<TxOutput> {
    if is_record(outpoint) && object_kind(outpoint).is_none() {
        return None;
    }
    view.get(outpoint)
}

/// The records `tx` reads besides its inputs: its client id claim, for a stake transaction the candidacy it names,
/// for an issuance the previous block's fee pot, for a token issue the token's definition, the terms of every
/// ledger object it spends, and for a vote its proposal and the voter's ballot and vote. Not listed: the VN Policy
/// records a VN's transaction reads (its VN's header, an endorser record per signer; [`crate::vn`]), which a
/// sharded ledger keeps in full beside its shards, so the view must answer them without a prefetch. The sharded ledger fetches them with the inputs.
pub fn records_read(tx: &ArchivedTransaction) -> impl Iterator<Item = OutPoint> + '_ {
    let claim = claim_of(tx).map(|(sender, client_id)| claim_outpoint(&sender, client_id));
    let definition = match (&tx.body.kind, tx.signatures.first()) {
        (ArchivedTxKind::TokenIssue { spec }, Some(issuer)) => Some(definition_outpoint(
            &token_asset(&PublicKey::from(&issuer.key), spec.nonce.to_native()),
        )),
        (ArchivedTxKind::ContractCall { call }, _) => {
            Some(contract_outpoint(&Hash32::from(&call.contract)))
        }
        _ => None,
    };
    let terms = tx.body.inputs.iter().filter_map(|input| {
        let outpoint = OutPoint::from(input);
        object_kind(&outpoint).map(|kind| kind.terms_at(outpoint.tx))
    });
    let candidacy = stake_candidate(tx).map(|candidate| candidacy_outpoint(&candidate));
    let vote = match &tx.body.kind {
        ArchivedTxKind::Vote { cast } => {
            let (proposal, voter) = (Hash32::from(&cast.proposal), PublicKey::from(&cast.voter));
            Some([
                proposal_outpoint(&proposal),
                ballot_outpoint(&proposal, &voter),
                vote_outpoint(&proposal, &voter),
            ])
        }
        _ => None,
    };
    let (pot, evidence) = match &tx.body.kind {
        ArchivedTxKind::Issuance { height, .. } => (
            height.to_native().checked_sub(1).map(fee_pot_outpoint),
            None,
        ),
        // The member's candidacy and evidence records (a proof too short to name one reads nothing).
        ArchivedTxKind::Equivocation { proof } => (
            None,
            EquivocationProof::decode(proof)
                .ok()
                .map(|p| [candidacy_outpoint(&p.member), evidence_outpoint(&p.member)]),
        ),
        _ => (None, None),
    };
    claim
        .into_iter()
        .chain(candidacy)
        .chain(pot)
        .chain(evidence.into_iter().flatten())
        .chain(definition)
        .chain(terms)
        .chain(vote.into_iter().flatten())
}

/// The candidate a stake transaction is about: named by a bond or unbond, the first signer of a candidacy.
pub fn stake_candidate(tx: &ArchivedTransaction) -> Option<PublicKey> {
    match &tx.body.kind {
        ArchivedTxKind::Bond { candidate } | ArchivedTxKind::Unbond { candidate } => {
            Some(PublicKey::from(candidate))
        }
        ArchivedTxKind::Candidacy { .. } => tx.signatures.first().map(|s| PublicKey::from(&s.key)),
        _ => None,
    }
}

/// Checks the signatures over their tx ids for many transactions at once.
/// `ids[i]` must be `txs[i].tx_id()`. A transaction with a bad signature gets the first bad one's index.
pub fn verify_signatures(txs: &[&ArchivedTransaction], ids: &[TxId]) -> Vec<Result<(), TxError>> {
    verify_signatures_sized(txs, ids, &mut BatchSizer::new())
}

/// [`verify_signatures`] in batches sized by `sizer` (see [`BatchSizer`]): for a stream checked in many calls.
pub fn verify_signatures_sized(
    txs: &[&ArchivedTransaction],
    ids: &[TxId],
    sizer: &mut BatchSizer,
) -> Vec<Result<(), TxError>> {
    assert_eq!(txs.len(), ids.len());
    verify_batched(
        txs.len(),
        ids.iter().zip(txs).map(|(id, tx)| {
            let signatures = tx.signatures.iter();
            (id, signatures.map(|w| (&w.key.0, &w.signature.0)))
        }),
        sizer,
    )
}

/// [`verify_signatures`] for owned transactions (packages held in memory), without archiving them first.
pub fn verify_owned_signatures(txs: &[Transaction], ids: &[TxId]) -> Vec<Result<(), TxError>> {
    assert_eq!(txs.len(), ids.len());
    verify_batched(
        txs.len(),
        ids.iter().zip(txs).map(|(id, tx)| {
            let signatures = tx.signatures.iter();
            (id, signatures.map(|w| (&w.key.0, &w.signature.0)))
        }),
        &mut BatchSizer::new(),
    )
}

/// One batch verification of every signature of `count` transactions, each given with its id; the verdict per
/// transaction.
fn verify_batched<'a, W>(
    count: usize,
    txs: impl Iterator<Item = (&'a TxId, W)>,
    sizer: &mut BatchSizer,
) -> Vec<Result<(), TxError>>
where
    W: Iterator<Item = (&'a [u8; 32], &'a [u8; 64])>,
{
    let mut entries = Vec::with_capacity(count);
    let mut owner = Vec::with_capacity(count);
    for (tx_index, (id, signatures)) in txs.enumerate() {
        for (index, (key, signature)) in signatures.enumerate() {
            entries.push(SigEntry {
                message: &id.0,
                key,
                signature,
            });
            owner.push((tx_index, index));
        }
    }
    let mut verdicts = vec![Ok(()); count];
    for bad in verify_batch_sized(&entries, sizer) {
        let (tx_index, index) = owner[bad];
        if verdicts[tx_index].is_ok() {
            verdicts[tx_index] = Err(TxError::BadSignature { index });
        }
    }
    verdicts
}

/// Checks one transaction against `view` (signatures assumed checked).
pub fn check_tx(
    tx: &ArchivedTransaction,
    view: &impl UtxoView,
    ctx: &RuleContext,
) -> Result<(), TxError> {
    if let ArchivedTxKind::Equivocation { .. } = tx.body.kind {
        return check_evidence(tx, ctx, view, &FastSet::default(), &FastSet::default()).map(|_| ());
    }
    check_with(
        tx,
        &tx.body.tx_id(),
        ctx,
        &mut Scratch::default(),
        &mut |input, outpoint| spendable_of(view, outpoint).ok_or(TxError::MissingInput { input }),
        &mut |outpoint| view.get(outpoint),
    )?;
    check_candidacy(tx, view, &FastSet::default()).map(|_| ())
}

/// The checks that need no UTXO lookup: cheap, so they run first.
fn check_stateless(tx: &ArchivedTransaction, ctx: &RuleContext) -> Result<(), TxError> {
    let body = &tx.body;
    if body.chain_id.to_native() != ctx.chain_id {
        return Err(TxError::WrongChain {
            expected: ctx.chain_id,
            got: body.chain_id.to_native(),
        });
    }
    if ctx.height < ctx.business_from && body.kind.is_business() {
        return Err(TxError::NotEnabled);
    }
    match &body.kind {
        ArchivedTxKind::Genesis { .. } => return Err(TxError::GenesisOnly),
        // Only `apply_batch` admits one, at the executor's slot (see `check_issuance`).
        ArchivedTxKind::Issuance { .. } => return Err(TxError::IssuanceReserved),
        // Only `apply_batch` and `check_tx` take one, by `check_evidence`.
        ArchivedTxKind::Equivocation { .. } => return Err(TxError::EvidenceNotPlain),
        ArchivedTxKind::Candidacy { address } => {
            decode_address(address.as_slice()).map_err(|e| TxError::BadAddress { len: e.len })?;
        }
        ArchivedTxKind::TokenIssue { spec } => check_token_spec(spec)?,
        ArchivedTxKind::Propose { terms } => {
            check_terms(terms, &ctx.governance, ctx.height)
                .map_err(|reason| TxError::BadProposal { reason })?;
        }
        ArchivedTxKind::VnRegister { policy } => {
            check_policy(policy).map_err(|reason| TxError::BadPolicy { reason })?;
            if body.vn.to_native() != 0 {
                return Err(TxError::BadPolicy {
                    reason: "a VN is registered on the public network (vn 0)",
                });
            }
        }
        ArchivedTxKind::ContractDeploy { code } => {
            parse_code(code).map_err(|reason| TxError::BadContract { reason })?;
        }
        ArchivedTxKind::Approve { terms } => {
            if terms.amount.to_native() == 0 {
                return Err(TxError::BadAllowance {
                    reason: "a zero amount",
                });
            }
            if terms.expires_at.to_native() < ctx.height {
                return Err(TxError::AllowanceExpired {
                    expires_at: terms.expires_at.to_native(),
                });
            }
        }
        ArchivedTxKind::OrderPlace { terms } => {
            if AssetId::from(&terms.token) == AssetId::CAS {
                return Err(TxError::BadOrder {
                    reason: "CAS is not a token",
                });
            }
            if terms.amount.to_native() == 0 || terms.price.to_native() == 0 {
                return Err(TxError::BadOrder {
                    reason: "a zero amount or price",
                });
            }
        }
        ArchivedTxKind::TransferFrom { spend } if spend.amount.to_native() == 0 => {
            return Err(TxError::BadAllowance {
                reason: "a zero amount",
            });
        }
        ArchivedTxKind::Fill { amount } if amount.to_native() == 0 => {
            return Err(TxError::BadOrder {
                reason: "a zero amount",
            });
        }
        ArchivedTxKind::Transfer
        | ArchivedTxKind::Bond { .. }
        | ArchivedTxKind::Unbond { .. }
        | ArchivedTxKind::TokenMint { .. }
        | ArchivedTxKind::TransferFrom { .. }
        | ArchivedTxKind::Fill { .. }
        | ArchivedTxKind::ContractCall { .. }
        | ArchivedTxKind::Vote { .. } => {}
    }
    if body.inputs.is_empty() {
        return Err(TxError::NoInputs);
    }
    if let Some(input) = first_repeat(body.inputs.as_slice()) {
        return Err(TxError::DuplicateInput { input });
    }
    if let Some(output) = body.outputs.iter().position(|o| o.amount.to_native() == 0) {
        return Err(TxError::ZeroAmount { output });
    }
    if let Some(index) = first_repeat_by(tx.signatures.as_slice(), |w| w.key) {
        return Err(TxError::DuplicateSigner { index });
    }
    let fee = body.fee.to_native();
    if fee < ctx.min_fee {
        return Err(TxError::FeeTooLow {
            fee,
            min_fee: ctx.min_fee,
        });
    }
    Ok(())
}

/// The index of the first element equal to an earlier one. Lists are bounded by the codec (<= 256).
fn first_repeat<T: Eq + core::hash::Hash>(items: &[T]) -> Option<usize> {
    first_repeat_by(items, |item| item)
}

/// [`first_repeat`] comparing `key(item)`; short lists (the usual one or two entries) are compared pairwise, with
/// no allocation.
fn first_repeat_by<'a, T, K: Eq + core::hash::Hash>(
    items: &'a [T],
    key: impl Fn(&'a T) -> K,
) -> Option<usize> {
    const QUADRATIC_BELOW: usize = 16;
    if items.len() < QUADRATIC_BELOW {
        return (1..items.len()).find(|&i| {
            items[..i]
                .iter()
                .any(|earlier| key(earlier) == key(&items[i]))
        });
    }
    let mut seen = FastSet::with_capacity_and_hasher(items.len(), Default::default());
    items.iter().position(|item| !seen.insert(key(item)))
}

/// Buffers the rules reuse from one transaction to the next, so checking a transaction allocates nothing.
#[derive(Default)]
struct Scratch {
    signature_used: Vec<bool>,
    /// (asset, sum of inputs, sum of outputs plus fee); a transaction touches few assets, so a scan beats a map.
    sums: Vec<(AssetId, u64, u64)>,
    /// The coins spent by the transaction last checked, in input order.
    coins: Vec<TxOutput>,
    /// The records it spends besides its inputs (the terms of the ledger objects it spends).
    records_spent: Vec<(OutPoint, TxOutput)>,
    /// The records and ledger objects it creates besides its outputs.
    records_created: Vec<(OutPoint, TxOutput)>,
    /// The matching fees of a fill, both sides', for the block's fee pot.
    matching_fees: u64,
}

/// A ledger object that input 0 is and the transaction consumes under its terms (a transfer-from's allowance, a
/// fill's order), with its escrow entry and terms record.
struct Consumed {
    escrow: TxOutput,
    terms: TxOutput,
}

/// Runs every rule; `lookup` resolves input `i` to its coin or the reason it cannot be spent, `record` reads a
/// record (a ledger object's terms, a token's definition) as the batch so far left it. `id` is the tx id.
/// On success, `scratch.coins` holds the coins spent, in input order, and `scratch` the records it spends and
/// creates.
fn check_with(
    tx: &ArchivedTransaction,
    id: &TxId,
    ctx: &RuleContext,
    scratch: &mut Scratch,
    lookup: &mut dyn FnMut(usize, &OutPoint) -> Result<TxOutput, TxError>,
    record: &mut dyn FnMut(&OutPoint) -> Option<TxOutput>,
) -> Result<(), TxError> {
    check_stateless(tx, ctx)?;
    let body = &tx.body;
    let Scratch {
        signature_used,
        sums,
        coins,
        records_spent,
        records_created,
        matching_fees,
    } = scratch;
    signature_used.clear();
    signature_used.resize(tx.signatures.len(), false);
    sums.clear();
    sums.push((fee_asset(tx), 0, body.fee.to_native()));
    coins.clear();
    records_spent.clear();
    records_created.clear();
    *matching_fees = 0;
    let mut consumed = None;
    // A call spends its contract's coins without a signature: nobody can sign for them.
    let contract = match &body.kind {
        ArchivedTxKind::ContractCall { call } => {
            Some(contract_account(&Hash32::from(&call.contract)))
        }
        _ => None,
    };
    for (input, archived) in body.inputs.iter().enumerate() {
        let outpoint = OutPoint::from(archived);
        let coin = lookup(input, &outpoint)?;
        if let Some(unlock_height) = coin.unlock_height {
            if ctx.height < unlock_height {
                return Err(TxError::Locked {
                    input,
                    unlock_height,
                });
            }
        }
        // Who must sign: a coin's owner, an object's owner taking it back, the spender of an allowance it
        // consumes, nobody for an order it fills.
        let mut signer = Some(coin.owner).filter(|owner| Some(*owner) != contract);
        if let Some(kind) = object_kind(&outpoint) {
            let terms_at = kind.terms_at(outpoint.tx);
            let terms = record(&terms_at).ok_or(TxError::MissingInput { input })?;
            records_spent.push((terms_at, terms));
            let consumes = matches!(
                (kind, &body.kind),
                (ObjectKind::Allowance, ArchivedTxKind::TransferFrom { .. })
                    | (ObjectKind::Order, ArchivedTxKind::Fill { .. })
            );
            if input == 0 && consumes {
                signer = (kind == ObjectKind::Allowance).then_some(terms.owner);
                consumed = Some(Consumed {
                    escrow: coin,
                    terms,
                });
            }
        }
        if let Some(key) = signer {
            let index = tx.signatures.iter().position(|w| w.key.0 == key.0);
            let Some(index) = index else {
                return Err(match consumed {
                    Some(_) if input == 0 => TxError::WrongSpender,
                    _ => TxError::Unsigned { input },
                });
            };
            signature_used[index] = true;
        }
        let sum = sum_for(sums, coin.asset);
        sum.1 = sum
            .1
            .checked_add(coin.amount)
            .ok_or(TxError::InputOverflow { input })?;
        coins.push(coin);
    }
    // Endorsements come with protocol version 4: below it a VN's transactions were judged like the public
    // network's, and blocks of that time replay as they were. So does the sender's binding to input 0.
    if ctx.height >= ctx.business_from {
        if body.vn.to_native() != 0 {
            check_endorsements(tx, record, signature_used)?;
        }
        if names_its_sender(tx) {
            let sender = tx.signatures.first().map(|w| PublicKey::from(&w.key));
            if coins.first().map(|coin| coin.owner) != sender {
                return Err(TxError::SenderMismatch);
            }
        }
    }
    // A voter signs and may spend nothing (a holder who moved its coins after the snapshot still votes).
    if let ArchivedTxKind::Vote { cast } = &body.kind {
        let index = tx.signatures.iter().position(|w| w.key == cast.voter);
        signature_used[index.ok_or(TxError::VoterUnsigned)?] = true;
    }
    if let Some(index) = signature_used.iter().position(|used| !used) {
        return Err(TxError::UnusedSignature { index });
    }
    for (output, archived) in body.outputs.iter().enumerate() {
        let sum = sum_for(sums, AssetId::from(&archived.asset));
        sum.2 = sum
            .2
            .checked_add(archived.amount.to_native())
            .ok_or(TxError::OutputOverflow { output })?;
    }
    if let Some(candidate) = stake_candidate(tx) {
        convert_stake(tx, ctx, &candidate, sums)?;
    }
    let mut effects = TokenEffects {
        id,
        sums,
        created: records_created,
        matching_fees,
    };
    match &body.kind {
        ArchivedTxKind::TokenIssue { spec } => effects.issue(tx, spec, record)?,
        ArchivedTxKind::TokenMint { token } => effects.mint(&AssetId::from(token))?,
        ArchivedTxKind::Approve { terms } => effects.approve(tx, terms)?,
        ArchivedTxKind::OrderPlace { terms } => effects.place(tx, terms, ctx)?,
        ArchivedTxKind::TransferFrom { spend } => {
            let object = consumed.ok_or(TxError::NotAnAllowance)?;
            let from = PublicKey::from(&spend.from);
            effects.transfer_from(&object, &from, spend.amount.to_native(), ctx)?;
        }
        ArchivedTxKind::Fill { amount } => {
            let object = consumed.ok_or(TxError::NotAnOrder)?;
            effects.fill(tx, &object, amount.to_native(), ctx)?;
        }
        ArchivedTxKind::ContractDeploy { code } => {
            let deployer = PublicKey::from(&tx.signatures[0].key);
            effects.created.push((
                contract_outpoint(&contract_id(id)),
                contract_record(&deployer, code),
            ));
        }
        ArchivedTxKind::ContractCall { call } => effects.call(tx, call, coins, ctx, record)?,
        ArchivedTxKind::Propose { terms } => {
            let proposer = PublicKey::from(&tx.signatures[0].key);
            let proposal = Proposal::of(id, proposer, terms, ctx.height);
            effects
                .created
                .push((proposal_outpoint(id), proposal.record()));
        }
        ArchivedTxKind::Vote { cast } => {
            cast_vote(cast, ctx, record, records_spent, effects.created)?;
        }
        ArchivedTxKind::VnRegister { policy } => {
            let vn = policy.vn.to_native();
            if record(&policy_outpoint(vn)).is_some() {
                return Err(TxError::VnExists { vn });
            }
            let registrar = PublicKey::from(&tx.signatures[0].key);
            let header = PolicyHeader::of(policy, registrar);
            effects.created.push((policy_outpoint(vn), header.record()));
            for endorser in policy.endorsers.iter() {
                let at = endorser_outpoint(vn, &PublicKey::from(&endorser.key));
                effects.created.push((at, endorser_record(vn, endorser)));
            }
            if let Some(fee) = policy.fee.as_ref() {
                effects.created.push((fee_outpoint(vn), fee_record(fee)));
            }
        }
        _ => {}
    }
    if let Some(&(asset, inputs, outputs)) =
        sums.iter().find(|(_, inputs, outputs)| inputs != outputs)
    {
        return Err(TxError::ValueNotConserved {
            asset,
            inputs,
            outputs,
        });
    }
    Ok(())
}

/// Whether `tx`'s first signer is a party the ledger records (a token's issuer, an allowance's owner, an order's
/// maker, a candidate, a deployer, a proposer, a VN's registrar, a client id's sender) and input 0 is its coin.
/// Signatures are outside the tx id, so anyone relaying a transaction could reorder them: binding the first signer
/// to the owner of input 0 (which the id covers) keeps a reorder from changing whom the ledger records.
fn names_its_sender(tx: &ArchivedTransaction) -> bool {
    match &tx.body.kind {
        ArchivedTxKind::TokenIssue { .. }
        | ArchivedTxKind::Approve { .. }
        | ArchivedTxKind::OrderPlace { .. }
        | ArchivedTxKind::Candidacy { .. }
        | ArchivedTxKind::ContractDeploy { .. }
        | ArchivedTxKind::Propose { .. }
        | ArchivedTxKind::VnRegister { .. } => true,
        // Input 0 of these is a ledger object or a contract's coin, not the sender's (a vote names its voter).
        ArchivedTxKind::TransferFrom { .. }
        | ArchivedTxKind::Fill { .. }
        | ArchivedTxKind::ContractCall { .. }
        | ArchivedTxKind::Vote { .. } => false,
        _ => tx.body.client_id.is_some(),
    }
}

/// A VN transaction's Policy: its VN must be registered, the signers the Policy names as endorsers must weigh at
/// least its threshold (their signatures count as used: an endorser need own no input), and it must pay the VN's
/// fee rule if there is one.
fn check_endorsements(
    tx: &ArchivedTransaction,
    record: &mut dyn FnMut(&OutPoint) -> Option<TxOutput>,
    signature_used: &mut [bool],
) -> Result<(), TxError> {
    let vn = tx.body.vn.to_native();
    let header = record(&policy_outpoint(vn))
        .map(|entry| PolicyHeader::decode(&entry))
        .ok_or(TxError::UnknownVn { vn })?;
    if header.endorsers == 0 {
        return check_vn_fee(tx, &header, record);
    }
    let mut weight = 0u64;
    for (used, signer) in signature_used.iter_mut().zip(tx.signatures.iter()) {
        if let Some(entry) = record(&endorser_outpoint(vn, &PublicKey::from(&signer.key))) {
            weight += u64::from(endorser_weight(&entry));
            *used = true;
        }
    }
    if weight < u64::from(header.threshold) {
        return Err(TxError::NotEndorsed {
            weight,
            threshold: header.threshold,
        });
    }
    check_vn_fee(tx, &header, record)
}

/// A VN's fee rule, if it has one: an output pays its amount of its token to its collector.
fn check_vn_fee(
    tx: &ArchivedTransaction,
    header: &PolicyHeader,
    record: &mut dyn FnMut(&OutPoint) -> Option<TxOutput>,
) -> Result<(), TxError> {
    if !header.fee {
        return Ok(());
    }
    let fee = record(&fee_outpoint(header.vn))
        .map(|entry| decode_fee(&entry))
        .ok_or(TxError::UnknownVn { vn: header.vn })?;
    let paid = tx.body.outputs.iter().any(|o| {
        AssetId::from(&o.asset) == fee.token
            && PublicKey::from(&o.owner) == fee.collector
            && o.amount.to_native() >= fee.amount
    });
    if !paid {
        return Err(TxError::VnFeeUnpaid {
            amount: fee.amount,
            token: fee.token,
        });
    }
    Ok(())
}

/// A vote: the voter's ballot of an open proposal is spent and its weight written as a vote record.
fn cast_vote(
    cast: &ArchivedVoteCast,
    ctx: &RuleContext,
    record: &mut dyn FnMut(&OutPoint) -> Option<TxOutput>,
    spent: &mut Vec<(OutPoint, TxOutput)>,
    created: &mut Vec<(OutPoint, TxOutput)>,
) -> Result<(), TxError> {
    let (id, voter) = (Hash32::from(&cast.proposal), &PublicKey::from(&cast.voter));
    let at = proposal_outpoint(&id);
    let proposal = record(&at)
        .and_then(|entry| Proposal::decode(&at, &entry))
        .ok_or(TxError::UnknownProposal)?;
    if ctx.height > proposal.end {
        return Err(TxError::VotingClosed { end: proposal.end });
    }
    let ballot_at = ballot_outpoint(&id, voter);
    let Some(ballot) = record(&ballot_at) else {
        let voted = record(&vote_outpoint(&id, voter)).is_some();
        return Err(if voted {
            TxError::AlreadyVoted
        } else {
            TxError::NoBallot
        });
    };
    spent.push((ballot_at, ballot));
    created.push((
        vote_outpoint(&id, voter),
        vote_record(&id, voter, ballot.amount, cast.approve),
    ));
    Ok(())
}

/// The asset a transaction's fee is paid in: CAS. This is where a VN's Policy will name a business token for the
/// fees of its network (issue 20 leaves the hook; the Policy, and a fee pot per asset, come with the VN layer of
/// issue 21).
fn fee_asset(_tx: &ArchivedTransaction) -> AssetId {
    AssetId::CAS
}

/// The stateless checks of a token issue's spec.
fn check_token_spec(spec: &ArchivedTokenSpec) -> Result<(), TxError> {
    let bad = |reason| Err(TxError::BadTokenSpec { reason });
    let printable = |text: &str| text.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if spec.name.is_empty() || !printable(spec.name.as_str()) {
        return bad("the name must be printable ASCII, not empty");
    }
    if spec.symbol.is_empty() || !spec.symbol.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return bad("the symbol must be ASCII letters and digits, not empty");
    }
    if spec.decimals > DECIMALS_MAX {
        return bad("more than 18 decimals");
    }
    if spec.max_supply.to_native() == 0 {
        return bad("a zero maximum supply");
    }
    if spec.offered.to_native() > spec.max_supply.to_native() {
        return bad("an offer above the maximum supply");
    }
    if spec.offered.to_native() > 0 && spec.price.to_native() == 0 {
        return bad("an offer at a zero price");
    }
    Ok(())
}

/// What a token transaction adds to the per-asset sums and the records it creates, after its inputs and outputs
/// are counted: each method folds its conversion into `sums`, so the usual per-asset check conserves value.
struct TokenEffects<'a> {
    id: &'a TxId,
    sums: &'a mut Vec<(AssetId, u64, u64)>,
    created: &'a mut Vec<(OutPoint, TxOutput)>,
    matching_fees: &'a mut u64,
}

impl TokenEffects<'_> {
    fn add_out(&mut self, asset: AssetId, amount: u64) -> Result<(), TxError> {
        let sum = sum_for(self.sums, asset);
        sum.2 = sum
            .2
            .checked_add(amount)
            .ok_or(TxError::OutputOverflow { output: 0 })?;
        Ok(())
    }

    fn add_in(&mut self, asset: AssetId, amount: u64) -> Result<(), TxError> {
        let sum = sum_for(self.sums, asset);
        sum.1 = sum
            .1
            .checked_add(amount)
            .ok_or(TxError::InputOverflow { input: 0 })?;
        Ok(())
    }

    /// Writes an object's escrow and terms at the place of this transaction's slot 0.
    fn create_object(&mut self, kind: ObjectKind, (escrow, terms): (TxOutput, TxOutput)) {
        let place = object_place(self.id, 0);
        self.created.push((kind.escrow_at(place), escrow));
        self.created.push((kind.terms_at(place), terms));
    }

    /// A token issue: the new asset's outputs, offer and mint rights come to its maximum supply.
    fn issue(
        &mut self,
        tx: &ArchivedTransaction,
        spec: &ArchivedTokenSpec,
        record: &mut dyn FnMut(&OutPoint) -> Option<TxOutput>,
    ) -> Result<(), TxError> {
        let issuer = PublicKey::from(&tx.signatures[0].key);
        let token = token_asset(&issuer, spec.nonce.to_native());
        let definition = definition_outpoint(&token);
        if record(&definition).is_some() {
            return Err(TxError::TokenExists);
        }
        let rights = mint_right_of(&token);
        let authority = spec.mint_authority.as_ref().map(PublicKey::from);
        let mut rights_out = 0u64;
        for (output, archived) in tx.body.outputs.iter().enumerate() {
            if AssetId::from(&archived.asset) != rights {
                continue;
            }
            if authority != Some(PublicKey::from(&archived.owner)) {
                return Err(TxError::BadTokenSpec {
                    reason: "mint rights go to the mint authority only",
                });
            }
            rights_out = rights_out
                .checked_add(archived.amount.to_native())
                .ok_or(TxError::OutputOverflow { output })?;
        }
        // The rights count against the supply (their outputs stay counted in their own asset, balanced here).
        self.add_in(rights, rights_out)?;
        self.add_in(token, spec.max_supply.to_native())?;
        self.add_out(token, rights_out)?;
        let offered = spec.offered.to_native();
        self.add_out(token, offered)?;
        self.created
            .push((definition, definition_record(&issuer, spec)));
        if offered > 0 {
            let offer = Order {
                maker: issuer,
                token,
                side: Side::Sell,
                escrow: offered,
                price: spec.price.to_native(),
            };
            self.create_object(ObjectKind::Order, offer.entries());
        }
        Ok(())
    }

    /// A mint: rights spent and not given back become tokens.
    fn mint(&mut self, token: &AssetId) -> Result<(), TxError> {
        let rights = mint_right_of(token);
        let (spent, created) = self
            .sums
            .iter()
            .find(|(asset, _, _)| *asset == rights)
            .map_or((0, 0), |&(_, spent, created)| (spent, created));
        let minted = spent
            .checked_sub(created)
            .ok_or(TxError::MintCreatesRights { spent, created })?;
        // The minted rights leave as rights and come back as tokens.
        self.add_out(rights, minted)?;
        self.add_in(*token, minted)
    }

    /// An approve: the allowance's amount leaves the signer's coins into its escrow.
    fn approve(
        &mut self,
        tx: &ArchivedTransaction,
        terms: &ArchivedAllowanceTerms,
    ) -> Result<(), TxError> {
        let allowance = Allowance {
            owner: PublicKey::from(&tx.signatures[0].key),
            asset: AssetId::from(&terms.asset),
            amount: terms.amount.to_native(),
            spender: PublicKey::from(&terms.spender),
            expires_at: terms.expires_at.to_native(),
        };
        self.add_out(allowance.asset, allowance.amount)?;
        self.create_object(ObjectKind::Allowance, allowance.entries());
        Ok(())
    }

    /// An order: its escrow (tokens to sell, or the price and maker's fee of tokens to buy) leaves the signer's
    /// coins.
    fn place(
        &mut self,
        tx: &ArchivedTransaction,
        terms: &ArchivedOrderTerms,
        ctx: &RuleContext,
    ) -> Result<(), TxError> {
        let token = AssetId::from(&terms.token);
        let (amount, price) = (terms.amount.to_native(), terms.price.to_native());
        let side = match terms.side {
            ArchivedSide::Sell => Side::Sell,
            ArchivedSide::Buy => Side::Buy,
        };
        let escrow = match side {
            Side::Sell => amount,
            Side::Buy => {
                buy_escrow(amount, price, ctx.matching_fee_bps).ok_or(TxError::BadOrder {
                    reason: "the price of the amount overflows",
                })?
            }
        };
        let order = Order {
            maker: PublicKey::from(&tx.signatures[0].key),
            token,
            side,
            escrow,
            price,
        };
        let (entry, terms) = order.entries();
        self.add_out(entry.asset, escrow)?;
        self.create_object(ObjectKind::Order, (entry, terms));
        Ok(())
    }

    /// A transfer-from: `amount` of the allowance moves to the outputs; the rest stays allowed, at a new place.
    fn transfer_from(
        &mut self,
        object: &Consumed,
        from: &PublicKey,
        amount: u64,
        ctx: &RuleContext,
    ) -> Result<(), TxError> {
        let allowance = Allowance::of(&object.escrow, &object.terms);
        if allowance.owner != *from {
            return Err(TxError::AllowanceOwner);
        }
        if ctx.height > allowance.expires_at {
            return Err(TxError::AllowanceExpired {
                expires_at: allowance.expires_at,
            });
        }
        let rest = allowance
            .amount
            .checked_sub(amount)
            .ok_or(TxError::AllowanceExceeded {
                allowed: allowance.amount,
                asked: amount,
            })?;
        if rest > 0 {
            self.add_out(allowance.asset, rest)?;
            let rest = Allowance {
                amount: rest,
                ..allowance
            };
            self.create_object(ObjectKind::Allowance, rest.entries());
        }
        Ok(())
    }

    /// A contract call: its code runs over the CAS its inputs bring; its transfers and what the contract keeps
    /// become coins written after the transaction's outputs, so the contract's CAS in is its CAS out.
    fn call(
        &mut self,
        tx: &ArchivedTransaction,
        call: &ArchivedContractCall,
        coins: &[TxOutput],
        ctx: &RuleContext,
        record: &mut dyn FnMut(&OutPoint) -> Option<TxOutput>,
    ) -> Result<(), TxError> {
        let contract = Hash32::from(&call.contract);
        let deployed = record(&contract_outpoint(&contract)).ok_or(TxError::NotAContract)?;
        let hash = code_hash(&call.code);
        if deployed.asset.0 != hash {
            return Err(TxError::NotAContract);
        }
        let script =
            parse_cached(hash, &call.code).map_err(|reason| TxError::BadContract { reason })?;
        let account = contract_account(&contract);
        let cas = coins.iter().filter(|coin| coin.asset == AssetId::CAS);
        // Bounded by the inputs' CAS sum, which the rules checked for overflow.
        let held: u64 = cas
            .clone()
            .filter(|coin| coin.owner == account)
            .map(|coin| coin.amount)
            .sum();
        let brought: Vec<(String, i128)> = cas
            .map(|coin| {
                let name = if coin.owner == account {
                    CONTRACT_ACCOUNT.to_string()
                } else {
                    coin.owner.to_hex()
                };
                (name, i128::from(coin.amount))
            })
            .collect();
        let transfers =
            run(&script, call, ctx.height, &brought).map_err(|refusal| match refusal {
                CallRefusal::Budget => TxError::ContractBudget,
                CallRefusal::Failed(reason) => TxError::ContractFailed { reason },
            })?;
        let sent: u64 = transfers.iter().map(|(_, amount)| amount).sum();
        let kept = held.checked_sub(sent).ok_or(TxError::ContractFailed {
            reason: "it sent more than it holds".into(),
        })?;
        let first = tx.body.outputs.len() as u32;
        let kept_coin = (kept > 0).then_some((account, kept));
        for (index, (owner, amount)) in transfers.into_iter().chain(kept_coin).enumerate() {
            let outpoint = OutPoint {
                tx: *self.id,
                index: first + index as u32,
            };
            let coin = TxOutput {
                amount,
                asset: AssetId::CAS,
                owner,
                unlock_height: None,
            };
            self.created.push((outpoint, coin));
        }
        self.add_out(AssetId::CAS, held)
    }

    /// A fill of `amount` token units at the order's price: output 0 pays the maker, both sides pay the matching
    /// fee, the rest of the escrow stays on offer at a new place.
    fn fill(
        &mut self,
        tx: &ArchivedTransaction,
        object: &Consumed,
        amount: u64,
        ctx: &RuleContext,
    ) -> Result<(), TxError> {
        let order = Order::of(&object.escrow, &object.terms);
        let (notional, fee) =
            order
                .fill_cost(amount, ctx.matching_fee_bps)
                .ok_or(TxError::BadOrder {
                    reason: "the price of the amount overflows",
                })?;
        let (taken, paid) = match order.side {
            // The maker's fee comes out of its proceeds.
            Side::Sell => (amount, notional.saturating_sub(fee)),
            // The maker's fee comes out of its escrow, with the price.
            Side::Buy => (
                notional.checked_add(fee).ok_or(TxError::BadOrder {
                    reason: "the price of the amount overflows",
                })?,
                amount,
            ),
        };
        let rest = order
            .escrow
            .checked_sub(taken)
            .ok_or(TxError::OrderExceeded {
                available: order.escrow,
                asked: taken,
            })?;
        let pays = match order.side {
            Side::Sell => AssetId::CAS,
            Side::Buy => order.token,
        };
        let maker_paid = tx.body.outputs.first().is_some_and(|o| {
            TxOutput::from(o)
                == TxOutput {
                    amount: paid,
                    asset: pays,
                    owner: order.maker,
                    unlock_height: None,
                }
        });
        if !maker_paid {
            return Err(TxError::MakerUnpaid { amount: paid });
        }
        let fees = fee.checked_mul(2).ok_or(TxError::BadOrder {
            reason: "the fee overflows",
        })?;
        self.add_out(AssetId::CAS, fees)?;
        *self.matching_fees = fees;
        if rest > 0 {
            self.add_out(object.escrow.asset, rest)?;
            let rest = Order {
                escrow: rest,
                ..order
            };
            self.create_object(ObjectKind::Order, rest.entries());
        }
        Ok(())
    }
}

/// A stake transaction's conversion between CAS and `candidate`'s stake asset, folded into `sums` so the usual
/// per-asset check conserves their total: a bond (or a candidacy's self-bond) may only add stake, an unbond may
/// only take it away, and what it takes away (less the fee, which may be paid from it) must come back as CAS locked
/// for the unbonding delay.
fn convert_stake(
    tx: &ArchivedTransaction,
    ctx: &RuleContext,
    candidate: &PublicKey,
    sums: &mut Vec<(AssetId, u64, u64)>,
) -> Result<(), TxError> {
    let stake_asset = AssetId::stake_of(candidate);
    let Some(position) = sums.iter().position(|(asset, _, _)| *asset == stake_asset) else {
        return Ok(());
    };
    let (_, spent, created) = sums.swap_remove(position);
    if let ArchivedTxKind::Unbond { .. } = tx.body.kind {
        let unbonded = spent
            .checked_sub(created)
            .ok_or(TxError::UnbondAddsStake { spent, created })?;
        let until = ctx.height.saturating_add(ctx.unbond_delay_blocks);
        let locked = tx
            .body
            .outputs
            .iter()
            .filter(|o| AssetId::from(&o.asset) == AssetId::CAS)
            .filter(|o| {
                o.unlock_height
                    .as_ref()
                    .is_some_and(|h| h.to_native() >= until)
            })
            .map(|o| o.amount.to_native())
            .fold(0u64, u64::saturating_add);
        // The fee may come out of the unbonded amount; the rest must stay locked.
        let owed = unbonded.saturating_sub(tx.body.fee.to_native());
        if locked < owed {
            return Err(TxError::UnbondNotLocked {
                unbonded,
                locked,
                until,
            });
        }
    } else if created < spent {
        return Err(TxError::BondFreesStake {
            spent,
            bonded: created,
        });
    }
    let cas = sum_for(sums, AssetId::CAS);
    cas.1 = cas
        .1
        .checked_add(spent)
        .ok_or(TxError::InputOverflow { input: 0 })?;
    cas.2 = cas
        .2
        .checked_add(created)
        .ok_or(TxError::OutputOverflow { output: 0 })?;
    Ok(())
}

/// Checks the executor's issuance transaction (the last of a block): for this height, spending the previous
/// block's fee pot if there is one and nothing else, signed by nobody, paying no fee, with only unlocked CAS
/// outputs with amounts that pay out at least the pot. Returns the pot spent (if any) and the CAS it mints (what it
/// pays beyond the pot).
fn check_issuance(
    tx: &ArchivedTransaction,
    ctx: &RuleContext,
    view: &impl UtxoView,
) -> Result<(Option<(OutPoint, TxOutput)>, u64), TxError> {
    let body = &tx.body;
    if body.chain_id.to_native() != ctx.chain_id {
        return Err(TxError::WrongChain {
            expected: ctx.chain_id,
            got: body.chain_id.to_native(),
        });
    }
    let ArchivedTxKind::Issuance { height, .. } = &body.kind else {
        return Err(TxError::IssuanceReserved);
    };
    if height.to_native() != ctx.height {
        return Err(TxError::IssuanceWrongHeight {
            expected: ctx.height,
            got: height.to_native(),
        });
    }
    let pot = ctx.height.checked_sub(1).and_then(|previous| {
        let outpoint = fee_pot_outpoint(previous);
        view.get(&outpoint).map(|entry| (outpoint, entry))
    });
    let spends_pot = match (body.inputs.as_slice(), &pot) {
        ([], _) => false,
        ([input], Some((outpoint, _))) if OutPoint::from(input) == *outpoint => true,
        _ => return Err(TxError::IssuanceNotPlain),
    };
    if !tx.signatures.is_empty() || body.fee.to_native() != 0 {
        return Err(TxError::IssuanceNotPlain);
    }
    if let (false, Some((_, entry))) = (spends_pot, &pot) {
        return Err(TxError::IssuancePotUnspent { pot: entry.amount });
    }
    let mut paid = 0u64;
    for (output, archived) in body.outputs.iter().enumerate() {
        if AssetId::from(&archived.asset) != AssetId::CAS || archived.unlock_height.is_some() {
            return Err(TxError::IssuanceNotCas { output });
        }
        let amount = archived.amount.to_native();
        if amount == 0 {
            return Err(TxError::ZeroAmount { output });
        }
        paid = paid
            .checked_add(amount)
            .ok_or(TxError::OutputOverflow { output })?;
    }
    let pot_amount = pot.as_ref().map_or(0, |(_, entry)| entry.amount);
    let minted = paid
        .checked_sub(pot_amount)
        .ok_or(TxError::IssuanceBurnsFees {
            pot: pot_amount,
            paid,
        })?;
    Ok((pot, minted))
}

fn sum_for(sums: &mut Vec<(AssetId, u64, u64)>, asset: AssetId) -> &mut (AssetId, u64, u64) {
    let index = match sums.iter().position(|(a, _, _)| *a == asset) {
        Some(index) => index,
        None => {
            sums.push((asset, 0, 0));
            sums.len() - 1
        }
    };
    &mut sums[index]
}

/// The result of applying a batch: a verdict per transaction and the net change to the UTXO set.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    pub verdicts: Vec<Result<(), TxError>>,
    /// Outputs of the view spent by accepted transactions, with their coins (for the set commitment).
    pub spent: Vec<(OutPoint, TxOutput)>,
    /// Outputs created by accepted transactions and not spent again inside the batch.
    pub created: Vec<(OutPoint, TxOutput)>,
    /// The fees of the accepted transactions, gathered in the block's fee pot ([`fee_pot_outpoint`]).
    pub fees: u64,
    /// The CAS minted by an accepted issuance transaction, beyond the fee pot it pays out (the only way supply grows
    /// after genesis).
    pub issued: u64,
    /// The members an accepted issuance reports absent from the block's certificate (see
    /// [`TxKind::Issuance`](crate::tx::TxKind::Issuance)): the ledger's conduct records count them.
    pub absent: Option<Vec<PublicKey>>,
}

/// Applies `txs` in order on top of `view`: a later transaction may spend an earlier one's outputs, and of two
/// spends of one outpoint the earlier wins (the later gets [`TxError::DoubleSpend`]). Rejected transactions change
/// nothing. `signature_verdicts[i]` is [`verify_signatures`]' verdict for `txs[i]`; `ids[i]` its tx id.
/// An issuance transaction is admitted only as the last of the batch (the executor's slot); anywhere else it gets
/// [`TxError::IssuanceReserved`]. Fees stay in the set, in the block's fee pot; supply grows only by `issued`.
pub fn apply_batch(
    txs: &[&ArchivedTransaction],
    ids: &[TxId],
    signature_verdicts: &[Result<(), TxError>],
    view: &impl UtxoView,
    ctx: &RuleContext,
) -> BatchOutcome {
    assert_eq!(txs.len(), ids.len());
    assert_eq!(txs.len(), signature_verdicts.len());
    let (inputs, outputs) = txs.iter().fold((0, 0), |(inputs, outputs), tx| {
        (
            inputs + tx.body.inputs.len(),
            outputs + tx.body.outputs.len(),
        )
    });
    // Inputs the view lacks: only these can name an output created in this batch (an outpoint is created once, so
    // it cannot be in the view too). Created outputs enter the overlay only when one of these names them, which
    // keeps the overlay to the spends in the common case of a batch with no chains inside it.
    let unresolved: FastSet<OutPoint> = txs
        .iter()
        .flat_map(|tx| tx.body.inputs.iter().map(OutPoint::from))
        .filter(|outpoint| view.get(outpoint).is_none())
        .collect();
    // What this batch did to an outpoint: one map for both, so an input is looked up once before the view.
    let mut overlay: FastMap<OutPoint, InBatch> =
        FastMap::with_capacity_and_hasher(inputs + unresolved.len(), Default::default());
    // Outputs created in this batch, in creation order, and the positions of those spent again inside it (usually
    // none, so the list becomes the outcome as it is, without a copy).
    let mut created: Vec<(OutPoint, TxOutput)> = Vec::with_capacity(outputs);
    let mut spent_created: Vec<usize> = Vec::new();
    // Client id claims made in this batch (see `claim_outpoint`).
    let mut claimed: FastSet<OutPoint> = FastSet::default();
    // Candidacies declared in this batch.
    let mut declared: FastSet<PublicKey> = FastSet::default();
    // Members whose equivocation this batch records.
    let mut evidenced: FastSet<PublicKey> = FastSet::default();
    let mut scratch = Scratch::default();
    let mut outcome = BatchOutcome {
        verdicts: Vec::with_capacity(txs.len()),
        spent: Vec::with_capacity(inputs),
        ..BatchOutcome::default()
    };
    let last = txs.len().saturating_sub(1);
    for (position, ((tx, id), signature_verdict)) in
        txs.iter().zip(ids).zip(signature_verdicts).enumerate()
    {
        if let ArchivedTxKind::Issuance { .. } = tx.body.kind {
            let verdict = if position == last {
                signature_verdict
                    .clone()
                    .and_then(|()| check_issuance(tx, ctx, view))
            } else {
                Err(TxError::IssuanceReserved)
            };
            match verdict {
                Ok((pot, minted)) => {
                    if let Some((outpoint, entry)) = pot {
                        overlay.insert(outpoint, InBatch::Spent);
                        outcome.spent.push((outpoint, entry));
                    }
                    for (index, archived) in tx.body.outputs.iter().enumerate() {
                        let outpoint = OutPoint {
                            tx: *id,
                            index: index as u32,
                        };
                        overlay.insert(outpoint, InBatch::Created(created.len()));
                        created.push((outpoint, TxOutput::from(archived)));
                    }
                    outcome.issued = minted;
                    if let ArchivedTxKind::Issuance { absent, .. } = &tx.body.kind {
                        outcome.absent = absent
                            .as_ref()
                            .map(|keys| keys.iter().map(PublicKey::from).collect());
                    }
                    outcome.verdicts.push(Ok(()));
                }
                Err(error) => outcome.verdicts.push(Err(error)),
            }
            continue;
        }
        if let ArchivedTxKind::Equivocation { .. } = tx.body.kind {
            let verdict = signature_verdict
                .clone()
                .and_then(|()| check_evidence(tx, ctx, view, &declared, &evidenced));
            match verdict {
                Ok(member) => {
                    evidenced.insert(member);
                    created.push((
                        evidence_outpoint(&member),
                        evidence_record(&member, ctx.height),
                    ));
                    outcome.verdicts.push(Ok(()));
                }
                Err(error) => outcome.verdicts.push(Err(error)),
            }
            continue;
        }
        let verdict = signature_verdict.clone().and_then(|()| {
            check_with(
                tx,
                id,
                ctx,
                &mut scratch,
                &mut |input, outpoint| match overlay.get(outpoint) {
                    Some(InBatch::Created(index)) => Ok(created[*index].1),
                    Some(InBatch::Spent) => Err(TxError::DoubleSpend { input }),
                    None => spendable_of(view, outpoint).ok_or(TxError::MissingInput { input }),
                },
                &mut |outpoint| match overlay.get(outpoint) {
                    Some(InBatch::Created(index)) => Some(created[*index].1),
                    Some(InBatch::Spent) => None,
                    None => view.get(outpoint),
                },
            )
        });
        if let Err(error) = verdict {
            outcome.verdicts.push(Err(error));
            continue;
        }
        let record = match check_candidacy(tx, view, &declared) {
            Ok(record) => record,
            Err(error) => {
                outcome.verdicts.push(Err(error));
                continue;
            }
        };
        // Its client id, once per sender: claimed in the set, or earlier in this batch, means a duplicate.
        if let Some((sender, client_id)) = claim_of(tx) {
            let claim = claim_outpoint(&sender, client_id);
            if claimed.contains(&claim) || view.get(&claim).is_some() {
                outcome
                    .verdicts
                    .push(Err(TxError::DuplicateClientId { client_id }));
                continue;
            }
            claimed.insert(claim);
            created.push((claim, claim_output(&sender)));
        }
        if let Some(record) = record {
            declared.insert(record.1.owner);
            created.push(record);
        }
        let inputs = tx.body.inputs.iter().map(OutPoint::from);
        for (outpoint, coin) in inputs
            .zip(scratch.coins.iter().copied())
            .chain(scratch.records_spent.drain(..))
        {
            match overlay.insert(outpoint, InBatch::Spent) {
                None => outcome.spent.push((outpoint, coin)),
                Some(InBatch::Created(index)) => spent_created.push(index),
                Some(InBatch::Spent) => unreachable!("check_with refuses a spent input"),
            }
        }
        // Ledger objects and token records: always in the overlay, since a later transaction of the batch reads
        // their terms or spends their escrow (few, unlike outputs).
        for (outpoint, entry) in scratch.records_created.drain(..) {
            overlay.insert(outpoint, InBatch::Created(created.len()));
            created.push((outpoint, entry));
        }
        for (index, archived) in tx.body.outputs.iter().enumerate() {
            let outpoint = OutPoint {
                tx: *id,
                index: index as u32,
            };
            if !unresolved.is_empty() && unresolved.contains(&outpoint) {
                overlay.insert(outpoint, InBatch::Created(created.len()));
            }
            created.push((outpoint, TxOutput::from(archived)));
        }
        outcome.fees = outcome
            .fees
            .checked_add(tx.body.fee.to_native() + scratch.matching_fees)
            .expect("fees are bounded by supply");
        outcome.verdicts.push(Ok(()));
    }
    // The block's fees wait in its pot for the next block's issuance.
    if outcome.fees > 0 {
        created.push((fee_pot_outpoint(ctx.height), fee_pot_output(outcome.fees)));
    }
    if !spent_created.is_empty() {
        let mut unspent = vec![true; created.len()];
        spent_created
            .iter()
            .for_each(|&index| unspent[index] = false);
        let mut flags = unspent.into_iter();
        created.retain(|_| flags.next().expect("one flag per output"));
    }
    outcome.created = created;
    outcome
}

/// What an equivocation record needs besides the set: this chain, nothing but its proof (no inputs, outputs, fee or
/// signatures), and a proof that proves (two signature checks). Returns the member it proves against. The node's
/// admission runs it too, so a proof that proves nothing never takes room in a package.
pub fn check_evidence_alone(tx: &ArchivedTransaction, chain_id: u32) -> Result<PublicKey, TxError> {
    let body = &tx.body;
    if body.chain_id.to_native() != chain_id {
        return Err(TxError::WrongChain {
            expected: chain_id,
            got: body.chain_id.to_native(),
        });
    }
    let ArchivedTxKind::Equivocation { proof } = &body.kind else {
        return Err(TxError::EvidenceNotPlain);
    };
    if !body.inputs.is_empty()
        || !body.outputs.is_empty()
        || body.fee.to_native() != 0
        || !tx.signatures.is_empty()
    {
        return Err(TxError::EvidenceNotPlain);
    }
    let proof = EquivocationProof::decode(proof).map_err(TxError::BadEvidence)?;
    proof.check().map_err(TxError::BadEvidence)?;
    Ok(proof.member)
}

/// An equivocation record against `view` and the batch so far: [`check_evidence_alone`], then the member must be
/// a candidate (declared in the view or earlier in the batch) with no evidence recorded yet (in the view or by
/// `evidenced`, earlier in the batch). Returns the member.
fn check_evidence(
    tx: &ArchivedTransaction,
    ctx: &RuleContext,
    view: &impl UtxoView,
    declared: &FastSet<PublicKey>,
    evidenced: &FastSet<PublicKey>,
) -> Result<PublicKey, TxError> {
    let member = check_evidence_alone(tx, ctx.chain_id)?;
    if evidenced.contains(&member) || view.get(&evidence_outpoint(&member)).is_some() {
        return Err(TxError::EvidenceKnown);
    }
    if !declared.contains(&member) && view.get(&candidacy_outpoint(&member)).is_none() {
        return Err(TxError::NotACandidate);
    }
    Ok(member)
}

/// The candidacy side of a stake transaction that passed every other rule: a bond or unbond needs its candidate
/// declared (in the view or by `declared`, earlier in the batch); a candidacy needs its node key undeclared, and
/// gives the record to create.
fn check_candidacy(
    tx: &ArchivedTransaction,
    view: &impl UtxoView,
    declared: &FastSet<PublicKey>,
) -> Result<Option<(OutPoint, TxOutput)>, TxError> {
    let Some(candidate) = stake_candidate(tx) else {
        return Ok(None);
    };
    let record = candidacy_outpoint(&candidate);
    let exists = declared.contains(&candidate) || view.get(&record).is_some();
    match &tx.body.kind {
        ArchivedTxKind::Candidacy { .. } if exists => Err(TxError::AlreadyCandidate),
        ArchivedTxKind::Candidacy { address } => {
            Ok(Some((record, candidacy_record(&candidate, address))))
        }
        _ if exists => Ok(None),
        _ => Err(TxError::NotACandidate),
    }
}

/// What a batch did to an outpoint so far.
#[derive(Clone, Copy)]
enum InBatch {
    /// Created by an accepted transaction of this batch: `created[index]`.
    Created(usize),
    /// Spent by an accepted transaction of this batch.
    Spent,
}
