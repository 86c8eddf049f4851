//! Transactions: UTXO inputs and outputs, fee, chain id, business network (`vn`), kind, memo, client id, and the
//! signatures (one per distinct input owner over the tx id).
//!
//! The tx id is a blake3 hash of the body's fields written in a fixed canonical order, computed from the archived
//! (wire) form in place, so it never depends on how rkyv laid the bytes out. Witnesses are outside the id.

use rkyv::{Archive, Deserialize, Serialize};

use crate::contract::ledger::{ArchivedContractArg, ContractCall};
use crate::crypto::{Keypair, PublicKey, Signature};
use crate::governance::{GovernanceParams, ParamChange, ProposalTerms, VoteCast};
use crate::id::{domain, AssetId, DomainKey, Hash32, TxId};
use crate::token::{AllowanceTerms, ArchivedSide, OrderTerms, Spend, TokenSpec};
use crate::vn::PolicyTerms;

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
    /// N: finalized DPOS blocks each POW witness commits to (1 ..= [`crate::genesis::WITNESS_SPAN_MAX`]).
    pub witness_span: u32,
    pub stake: StakeParams,
    /// The DEX matching fee each side of a fill pays, in basis points of its CAS notional (at most 10,000).
    pub matching_fee_bps: u32,
    /// The floors of every CIP proposal's window, quorum and approval ratio.
    pub governance: GovernanceParams,
}

/// The DPOS parameters: stake, elections and the reward split (the whitepaper leaves the values open; the genesis
/// defaults are in [`crate::genesis`]).
#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct StakeParams {
    /// Blocks per epoch: the committee is elected again at every multiple of it. 0: the genesis committee serves
    /// for good.
    pub epoch_blocks: u64,
    /// Members an election picks (3f + 1).
    pub committee_size: u32,
    /// Stake a candidate needs (its own and its delegators') to be a POS node, eligible for election.
    pub candidacy_stake_min: u64,
    /// Blocks an unbonded amount stays locked before it can be spent.
    pub unbond_delay_blocks: u64,
    /// CAS minted per block for the validators, beside the fees.
    pub block_reward: u64,
    /// The committee's share of each block's fees and reward, in percent (the rest goes to POS nodes by stake).
    pub committee_share_percent: u32,
    /// Certificates in a row a member's vote may be missing from before it is blacklisted (0: never).
    pub absence_limit: u32,
    /// Blocks a blacklist lasts: the member earns no rewards meanwhile.
    pub blacklist_blocks: u64,
    /// Blacklists in close succession (each starting at most `blacklist_blocks` after the last one ended) that
    /// evict a candidate: no election picks it again (0: never).
    pub evict_after: u32,
}

/// What a transaction does beyond moving outputs. Tokens, contracts and governance votes join as variants.
/// Every variant stays at most 32 bytes archived (a key), so the kind does not grow every transfer on the wire.
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
        params: Box<ChainParams>,
    },
    /// New CAS minted by the node itself, never by a client: the POW witness rewards that matured at ledger block
    /// `height`, as outputs. Each node's executor builds it from the consensus block's carried witness headers
    /// (`evidence`, each an encoded witness header, kept so the issuance can be re-derived from the ledger alone)
    /// and appends it as the last transaction of every ledger block. No inputs, no signatures, no fee.
    /// `absent`: the serving committee's members whose votes are missing from the certificate the consensus block
    /// carries, by key (None when that certificate is not the committee's own, as at the first block of a BFT
    /// instance): what the ledger's conduct records count ([`crate::stake::Conduct`]).
    Issuance {
        height: u64,
        evidence: Vec<Vec<u8>>,
        absent: Option<Vec<PublicKey>>,
    },
    /// Bonds CAS as stake for the POS candidate `candidate` (delegation; a candidate bonding to itself is its
    /// self-bond): CAS inputs become outputs of [`AssetId::stake_of`] the candidate, owned by the staker
    /// ([`crate::stake`] has the rules). The candidate must have declared its candidacy.
    Bond { candidate: PublicKey },
    /// Turns stake for `candidate` back into CAS, locked for the chain's unbonding delay.
    Unbond { candidate: PublicKey },
    /// Records that a committee member voted for two blocks in one round: `proof` is an
    /// [`EquivocationProof`](crate::evidence::EquivocationProof), which the rules check themselves. No inputs,
    /// outputs, fee or signatures: a node that sees the two votes submits it, and the ledger takes one per member
    /// (it is out of rewards and elections from then on).
    Equivocation { proof: Vec<u8> },
    /// Declares (or updates) a POS candidacy: the node key is the first signer, `address` where its node listens
    /// ([`crate::stake::encode_address`]: empty, or an IPv4 or IPv6 socket address). May bond stake to itself in
    /// the same transaction.
    Candidacy { address: Vec<u8> },
    /// Issues a token ([`crate::token`]): the first signer is the issuer; the outputs of the new asset, the offer
    /// and the outputs of its mint rights add up to `max_supply` exactly.
    TokenIssue { spec: Box<TokenSpec> },
    /// Converts mint rights of `token` (inputs, signed by their owner) into `token` one for one.
    TokenMint { token: AssetId },
    /// Grants an allowance out of the first signer's coins of its asset, kept as a ledger object.
    Approve { terms: Box<AllowanceTerms> },
    /// Moves `spend.amount` of the allowance of `spend.from` that input 0 is: signed by its spender, before it
    /// expires.
    TransferFrom { spend: Box<Spend> },
    /// Places a limit order out of the first signer's coins, kept as a ledger object.
    OrderPlace { terms: Box<OrderTerms> },
    /// Fills `amount` token units of the order that input 0 is, at its price; output 0 pays its maker.
    Fill { amount: u64 },
    /// Deploys a contract ([`crate::contract::ledger`]): its source, checked, recorded by its hash.
    ContractDeploy { code: Vec<u8> },
    /// Calls a contract: its inputs may spend the contract's coins, which its code moves.
    ContractCall { call: Box<ContractCall> },
    /// Opens a CIP vote ([`crate::governance`]): its ballots are minted from the holdings after this block.
    Propose { terms: Box<ProposalTerms> },
    /// Casts the named voter's ballot of a proposal (the voter signs; its signature need spend no input).
    Vote { cast: Box<VoteCast> },
    /// Registers a business network with its endorsement Policy ([`crate::vn`]), on the public network.
    VnRegister { policy: Box<PolicyTerms> },
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
pub struct TxSignature {
    pub key: PublicKey,
    pub signature: Signature,
}

#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct Transaction {
    pub body: TxBody,
    pub signatures: Vec<TxSignature>,
}

/// The tx id hasher with its derive-key context already absorbed (cloned per id: saves one compression).
static TX_ID: DomainKey = DomainKey::new(domain::TX_ID);

/// Where a body's canonical bytes go: straight into a hasher (one id), or appended to a buffer (many ids hashed
/// side by side, see [`tx_ids`]). Both see the same bytes in the same order.
trait Canonical {
    fn put(&mut self, bytes: &[u8]);
    fn put_output(&mut self, output: &TxOutput);
}

/// Gathers canonical bytes in a stack buffer and hands them to blake3 in large pieces: many small `update` calls
/// cost more than the hashing of a transfer's ~250 bytes. The bytes hashed are the same as writing each field.
struct CanonicalWriter {
    hasher: blake3::Hasher,
    buffer: [u8; CanonicalWriter::BUFFER_BYTES],
    len: usize,
}

impl CanonicalWriter {
    /// Holds a transfer with a few inputs and outputs whole, so it is hashed in one call.
    const BUFFER_BYTES: usize = 1024;

    fn new(hasher: blake3::Hasher) -> CanonicalWriter {
        CanonicalWriter {
            hasher,
            buffer: [0; Self::BUFFER_BYTES],
            len: 0,
        }
    }

    /// Makes room for `bytes` more (at most `BUFFER_BYTES`) and returns them to write into.
    #[inline]
    fn reserve(&mut self, bytes: usize) -> &mut [u8] {
        debug_assert!(bytes <= Self::BUFFER_BYTES);
        if self.len + bytes > Self::BUFFER_BYTES {
            self.hasher.update(&self.buffer[..self.len]);
            self.len = 0;
        }
        &mut self.buffer[self.len..self.len + bytes]
    }

    fn finalize(mut self) -> Hash32 {
        self.hasher.update(&self.buffer[..self.len]);
        Hash32::from(self.hasher.finalize())
    }
}

impl Canonical for CanonicalWriter {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        if bytes.len() > Self::BUFFER_BYTES {
            self.hasher.update(&self.buffer[..self.len]);
            self.len = 0;
            self.hasher.update(bytes);
            return;
        }
        self.reserve(bytes.len()).copy_from_slice(bytes);
        self.len += bytes.len();
    }

    #[inline]
    fn put_output(&mut self, output: &TxOutput) {
        let written = write_output(self.reserve(OUTPUT_BYTES_MAX), output);
        self.len += written;
    }
}

impl Canonical for Vec<u8> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }

    #[inline]
    fn put_output(&mut self, output: &TxOutput) {
        let mut bytes = [0u8; OUTPUT_BYTES_MAX];
        let written = write_output(&mut bytes, output);
        self.extend_from_slice(&bytes[..written]);
    }
}

impl ArchivedTxBody {
    /// The tx id: the canonical hash of this body, read in place.
    pub fn tx_id(&self) -> TxId {
        let mut h = CanonicalWriter::new(TX_ID.hasher());
        self.write_canonical(&mut h);
        h.finalize()
    }

    /// Writes the body's canonical bytes (what its id hashes) to `h`.
    fn write_canonical(&self, h: &mut impl Canonical) {
        h.put(&self.chain_id.to_native().to_le_bytes());
        h.put(&self.vn.to_native().to_le_bytes());
        match &self.kind {
            ArchivedTxKind::Transfer => {
                h.put(&[0]);
            }
            ArchivedTxKind::Genesis {
                part,
                committee,
                params,
            } => {
                h.put(&[1]);
                h.put(&part.to_native().to_le_bytes());
                h.put(&(committee.len() as u64).to_le_bytes());
                for member in committee.iter() {
                    h.put(&member.key.0);
                    h.put(&member.stake.to_native().to_le_bytes());
                }
                h.put(&params.min_fee.to_native().to_le_bytes());
                h.put(&params.block_interval_ms.to_native().to_le_bytes());
                h.put(&params.witness_span.to_native().to_le_bytes());
                let stake = &params.stake;
                h.put(&stake.epoch_blocks.to_native().to_le_bytes());
                h.put(&stake.committee_size.to_native().to_le_bytes());
                h.put(&stake.candidacy_stake_min.to_native().to_le_bytes());
                h.put(&stake.unbond_delay_blocks.to_native().to_le_bytes());
                h.put(&stake.block_reward.to_native().to_le_bytes());
                h.put(&stake.committee_share_percent.to_native().to_le_bytes());
                h.put(&stake.absence_limit.to_native().to_le_bytes());
                h.put(&stake.blacklist_blocks.to_native().to_le_bytes());
                h.put(&stake.evict_after.to_native().to_le_bytes());
                h.put(&params.matching_fee_bps.to_native().to_le_bytes());
                let governance = &params.governance;
                h.put(&governance.window_blocks_min.to_native().to_le_bytes());
                h.put(&governance.quorum_bps_min.to_native().to_le_bytes());
                h.put(&governance.approval_bps_min.to_native().to_le_bytes());
            }
            ArchivedTxKind::Issuance {
                height,
                evidence,
                absent,
            } => {
                h.put(&[2]);
                h.put(&height.to_native().to_le_bytes());
                h.put(&(evidence.len() as u64).to_le_bytes());
                for item in evidence.iter() {
                    h.put(&(item.len() as u64).to_le_bytes());
                    h.put(item);
                }
                match absent.as_ref() {
                    None => h.put(&[0]),
                    Some(keys) => {
                        h.put(&[1]);
                        h.put(&(keys.len() as u64).to_le_bytes());
                        for key in keys.iter() {
                            h.put(&key.0);
                        }
                    }
                }
            }
            ArchivedTxKind::Bond { candidate } => {
                h.put(&[3]);
                h.put(&candidate.0);
            }
            ArchivedTxKind::Equivocation { proof } => {
                h.put(&[6]);
                h.put(&(proof.len() as u64).to_le_bytes());
                h.put(proof);
            }
            ArchivedTxKind::Unbond { candidate } => {
                h.put(&[4]);
                h.put(&candidate.0);
            }
            ArchivedTxKind::Candidacy { address } => {
                h.put(&[5]);
                h.put(&(address.len() as u64).to_le_bytes());
                h.put(address);
            }
            ArchivedTxKind::TokenIssue { spec } => {
                h.put(&[7]);
                h.put(&spec.nonce.to_native().to_le_bytes());
                h.put(&(spec.name.len() as u64).to_le_bytes());
                h.put(spec.name.as_bytes());
                h.put(&(spec.symbol.len() as u64).to_le_bytes());
                h.put(spec.symbol.as_bytes());
                h.put(&[spec.decimals]);
                h.put(&spec.max_supply.to_native().to_le_bytes());
                h.put(&spec.offered.to_native().to_le_bytes());
                h.put(&spec.price.to_native().to_le_bytes());
                match spec.mint_authority.as_ref() {
                    None => h.put(&[0]),
                    Some(key) => {
                        h.put(&[1]);
                        h.put(&key.0);
                    }
                }
            }
            ArchivedTxKind::TokenMint { token } => {
                h.put(&[8]);
                h.put(&token.0 .0);
            }
            ArchivedTxKind::Approve { terms } => {
                h.put(&[9]);
                h.put(&terms.asset.0 .0);
                h.put(&terms.spender.0);
                h.put(&terms.amount.to_native().to_le_bytes());
                h.put(&terms.expires_at.to_native().to_le_bytes());
            }
            ArchivedTxKind::TransferFrom { spend } => {
                h.put(&[10]);
                h.put(&spend.from.0);
                h.put(&spend.amount.to_native().to_le_bytes());
            }
            ArchivedTxKind::OrderPlace { terms } => {
                h.put(&[11]);
                h.put(&terms.token.0 .0);
                h.put(&[match terms.side {
                    ArchivedSide::Sell => 0,
                    ArchivedSide::Buy => 1,
                }]);
                h.put(&terms.amount.to_native().to_le_bytes());
                h.put(&terms.price.to_native().to_le_bytes());
            }
            ArchivedTxKind::Fill { amount } => {
                h.put(&[12]);
                h.put(&amount.to_native().to_le_bytes());
            }
            ArchivedTxKind::ContractDeploy { code } => {
                h.put(&[13]);
                h.put(&(code.len() as u64).to_le_bytes());
                h.put(code);
            }
            ArchivedTxKind::ContractCall { call } => {
                h.put(&[14]);
                h.put(&call.contract.0);
                h.put(&(call.function.len() as u64).to_le_bytes());
                h.put(call.function.as_bytes());
                h.put(&(call.args.len() as u64).to_le_bytes());
                for arg in call.args.iter() {
                    match arg {
                        ArchivedContractArg::Int(value) => {
                            h.put(&[0]);
                            h.put(&value.to_native().to_le_bytes());
                        }
                        ArchivedContractArg::Text(text) => {
                            h.put(&[1]);
                            h.put(&(text.len() as u64).to_le_bytes());
                            h.put(text.as_bytes());
                        }
                    }
                }
                h.put(&(call.code.len() as u64).to_le_bytes());
                h.put(&call.code);
            }
            ArchivedTxKind::Propose { terms } => {
                h.put(&[15]);
                h.put(&(terms.title.len() as u64).to_le_bytes());
                h.put(terms.title.as_bytes());
                h.put(&terms.window_blocks.to_native().to_le_bytes());
                h.put(&terms.quorum_bps.to_native().to_le_bytes());
                h.put(&terms.approval_bps.to_native().to_le_bytes());
                match terms.change.as_ref().map(ParamChange::from) {
                    None => h.put(&[0]),
                    Some(change) => {
                        h.put(&[1, change.param as u8]);
                        h.put(&change.value.to_le_bytes());
                        h.put(&change.effective_at.to_le_bytes());
                    }
                }
            }
            ArchivedTxKind::Vote { cast } => {
                h.put(&[16]);
                h.put(&cast.proposal.0);
                h.put(&cast.voter.0);
                h.put(&[u8::from(cast.approve)]);
            }
            ArchivedTxKind::VnRegister { policy } => {
                h.put(&[17]);
                h.put(&policy.vn.to_native().to_le_bytes());
                h.put(&(policy.endorsers.len() as u64).to_le_bytes());
                for endorser in policy.endorsers.iter() {
                    h.put(&endorser.key.0);
                    h.put(&endorser.weight.to_native().to_le_bytes());
                }
                h.put(&policy.threshold.to_native().to_le_bytes());
                match policy.fee.as_ref() {
                    None => h.put(&[0]),
                    Some(fee) => {
                        h.put(&[1]);
                        h.put(&fee.token.0 .0);
                        h.put(&fee.amount.to_native().to_le_bytes());
                        h.put(&fee.collector.0);
                    }
                }
            }
        }
        h.put(&(self.inputs.len() as u64).to_le_bytes());
        for input in self.inputs.iter() {
            h.put(&input.tx.0);
            h.put(&input.index.to_native().to_le_bytes());
        }
        h.put(&(self.outputs.len() as u64).to_le_bytes());
        for output in self.outputs.iter() {
            h.put_output(&TxOutput::from(output));
        }
        h.put(&self.fee.to_native().to_le_bytes());
        h.put(&(self.memo.len() as u64).to_le_bytes());
        h.put(&self.memo);
        match self.client_id.as_ref() {
            None => h.put(&[0]),
            Some(id) => {
                h.put(&[1]);
                h.put(&id.to_native().to_le_bytes());
            }
        };
    }
}

/// The tx ids of `txs`, in order: the same as calling [`ArchivedTransaction::tx_id`] on each, with the bodies of at
/// most one blake3 chunk (a transfer's ~230 bytes) hashed sixteen at a time ([`crate::hash_many`]).
pub fn tx_ids(txs: &[&ArchivedTransaction]) -> Vec<TxId> {
    body_ids(txs.iter().map(|tx| &tx.body), txs.len())
}

/// The tx ids of owned transactions, in order: archived together in one buffer, then hashed as [`tx_ids`] does
/// (sixteen at a time), instead of archiving each body on its own as [`TxBody::tx_id`] does: for packages and
/// blocks held as owned values.
pub fn owned_tx_ids(txs: &[Transaction]) -> Vec<TxId> {
    let mut bytes = rkyv::util::AlignedVec::<16>::with_capacity(txs.len() * 320);
    let mut ends = Vec::with_capacity(txs.len());
    for tx in txs {
        bytes = rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(&tx.body, bytes)
            .expect("a body always archives");
        ends.push(bytes.len());
        // The next body starts aligned, as an archive's root must be.
        while bytes.len() % 16 != 0 {
            bytes.push(0);
        }
    }
    let mut start = 0;
    let bodies = ends.iter().map(|&end| {
        // SAFETY: bytes[start..end] was archived just above from a `TxBody`, its root at the end as rkyv puts it.
        let body = unsafe { rkyv::access_unchecked::<ArchivedTxBody>(&bytes[start..end]) };
        start = end.next_multiple_of(16);
        body
    });
    body_ids(bodies, txs.len())
}

/// The ids of `count` bodies: their canonical bytes written one after another, then hashed sixteen at a time.
fn body_ids<'a>(bodies: impl Iterator<Item = &'a ArchivedTxBody>, count: usize) -> Vec<TxId> {
    let mut bytes = Vec::with_capacity(count * 256);
    let mut ends = Vec::with_capacity(count);
    for body in bodies {
        body.write_canonical(&mut bytes);
        ends.push(bytes.len());
    }
    let mut start = 0;
    let messages: Vec<&[u8]> = ends
        .iter()
        .map(|&end| {
            let message = &bytes[start..end];
            start = end;
            message
        })
        .collect();
    let mut ids = vec![TxId::default(); messages.len()];
    TX_ID.hash_many(&messages, &mut ids);
    ids
}

/// The most bytes [`write_output`] writes: amount, asset, owner, lock flag, unlock height.
pub(crate) const OUTPUT_BYTES_MAX: usize = 8 + 32 + 32 + 1 + 8;

/// Writes an output's canonical bytes (amount, asset, owner, lock flag, unlock height) at the start of `out`;
/// returns how many.
pub(crate) fn write_output(out: &mut [u8], output: &TxOutput) -> usize {
    out[..8].copy_from_slice(&output.amount.to_le_bytes());
    out[8..40].copy_from_slice(&output.asset.0 .0);
    out[40..72].copy_from_slice(&output.owner.0);
    match output.unlock_height {
        None => {
            out[72] = 0;
            73
        }
        Some(height) => {
            out[72] = 1;
            out[73..81].copy_from_slice(&height.to_le_bytes());
            OUTPUT_BYTES_MAX
        }
    }
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
        let signatures = signers
            .iter()
            .map(|k| TxSignature {
                key: k.public(),
                signature: k.sign(&id.0),
            })
            .collect();
        Transaction {
            body: self,
            signatures,
        }
    }
}

impl ArchivedTxKind {
    /// A business transaction: a token issue or mint, an allowance, an order or fill, a contract deploy or call, a
    /// CIP proposal or vote, a VN registration (what an older binary cannot decode).
    pub fn is_business(&self) -> bool {
        matches!(
            self,
            ArchivedTxKind::TokenIssue { .. }
                | ArchivedTxKind::TokenMint { .. }
                | ArchivedTxKind::Approve { .. }
                | ArchivedTxKind::TransferFrom { .. }
                | ArchivedTxKind::OrderPlace { .. }
                | ArchivedTxKind::Fill { .. }
                | ArchivedTxKind::ContractDeploy { .. }
                | ArchivedTxKind::ContractCall { .. }
                | ArchivedTxKind::Propose { .. }
                | ArchivedTxKind::Vote { .. }
                | ArchivedTxKind::VnRegister { .. }
        )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{funded_genesis, key};

    /// The id as first specified: every field written to blake3 on its own. The buffered writer must match it.
    fn reference_id(body: &TxBody) -> TxId {
        let mut h = blake3::Hasher::new_derive_key(domain::TX_ID);
        h.update(&body.chain_id.to_le_bytes());
        h.update(&body.vn.to_le_bytes());
        match &body.kind {
            TxKind::Transfer => {
                h.update(&[0]);
            }
            TxKind::Genesis {
                part,
                committee,
                params,
            } => {
                h.update(&[1]);
                h.update(&part.to_le_bytes());
                h.update(&(committee.len() as u64).to_le_bytes());
                for member in committee {
                    h.update(&member.key.0);
                    h.update(&member.stake.to_le_bytes());
                }
                h.update(&params.min_fee.to_le_bytes());
                h.update(&params.block_interval_ms.to_le_bytes());
                h.update(&params.witness_span.to_le_bytes());
                let stake = &params.stake;
                h.update(&stake.epoch_blocks.to_le_bytes());
                h.update(&stake.committee_size.to_le_bytes());
                h.update(&stake.candidacy_stake_min.to_le_bytes());
                h.update(&stake.unbond_delay_blocks.to_le_bytes());
                h.update(&stake.block_reward.to_le_bytes());
                h.update(&stake.committee_share_percent.to_le_bytes());
                h.update(&stake.absence_limit.to_le_bytes());
                h.update(&stake.blacklist_blocks.to_le_bytes());
                h.update(&stake.evict_after.to_le_bytes());
                h.update(&params.matching_fee_bps.to_le_bytes());
                let governance = &params.governance;
                h.update(&governance.window_blocks_min.to_le_bytes());
                h.update(&governance.quorum_bps_min.to_le_bytes());
                h.update(&governance.approval_bps_min.to_le_bytes());
            }
            TxKind::Issuance {
                height,
                evidence,
                absent,
            } => {
                h.update(&[2]);
                h.update(&height.to_le_bytes());
                h.update(&(evidence.len() as u64).to_le_bytes());
                for item in evidence {
                    h.update(&(item.len() as u64).to_le_bytes());
                    h.update(item);
                }
                match absent {
                    None => {
                        h.update(&[0]);
                    }
                    Some(keys) => {
                        h.update(&[1]);
                        h.update(&(keys.len() as u64).to_le_bytes());
                        for key in keys {
                            h.update(&key.0);
                        }
                    }
                }
            }
            TxKind::Bond { candidate } => {
                h.update(&[3]).update(&candidate.0);
            }
            TxKind::Equivocation { proof } => {
                h.update(&[6]);
                h.update(&(proof.len() as u64).to_le_bytes());
                h.update(proof);
            }
            TxKind::Unbond { candidate } => {
                h.update(&[4]).update(&candidate.0);
            }
            TxKind::Candidacy { address } => {
                h.update(&[5]);
                h.update(&(address.len() as u64).to_le_bytes());
                h.update(address);
            }
            TxKind::TokenIssue { spec } => {
                h.update(&[7]).update(&spec.nonce.to_le_bytes());
                h.update(&(spec.name.len() as u64).to_le_bytes());
                h.update(spec.name.as_bytes());
                h.update(&(spec.symbol.len() as u64).to_le_bytes());
                h.update(spec.symbol.as_bytes()).update(&[spec.decimals]);
                h.update(&spec.max_supply.to_le_bytes());
                h.update(&spec.offered.to_le_bytes());
                h.update(&spec.price.to_le_bytes());
                match &spec.mint_authority {
                    None => h.update(&[0]),
                    Some(key) => h.update(&[1]).update(&key.0),
                };
            }
            TxKind::TokenMint { token } => {
                h.update(&[8]).update(&token.0 .0);
            }
            TxKind::Approve { terms } => {
                h.update(&[9])
                    .update(&terms.asset.0 .0)
                    .update(&terms.spender.0);
                h.update(&terms.amount.to_le_bytes());
                h.update(&terms.expires_at.to_le_bytes());
            }
            TxKind::TransferFrom { spend } => {
                h.update(&[10]).update(&spend.from.0);
                h.update(&spend.amount.to_le_bytes());
            }
            TxKind::OrderPlace { terms } => {
                h.update(&[11]).update(&terms.token.0 .0);
                h.update(&[terms.side as u8]);
                h.update(&terms.amount.to_le_bytes());
                h.update(&terms.price.to_le_bytes());
            }
            TxKind::Fill { amount } => {
                h.update(&[12]).update(&amount.to_le_bytes());
            }
            TxKind::ContractDeploy { code } => {
                h.update(&[13]).update(&(code.len() as u64).to_le_bytes());
                h.update(code);
            }
            TxKind::ContractCall { call } => {
                h.update(&[14]).update(&call.contract.0);
                h.update(&(call.function.len() as u64).to_le_bytes());
                h.update(call.function.as_bytes());
                h.update(&(call.args.len() as u64).to_le_bytes());
                for arg in &call.args {
                    match arg {
                        crate::contract::ledger::ContractArg::Int(value) => {
                            h.update(&[0]).update(&value.to_le_bytes());
                        }
                        crate::contract::ledger::ContractArg::Text(text) => {
                            h.update(&[1]).update(&(text.len() as u64).to_le_bytes());
                            h.update(text.as_bytes());
                        }
                    }
                }
                h.update(&(call.code.len() as u64).to_le_bytes());
                h.update(&call.code);
            }
            TxKind::Propose { terms } => {
                h.update(&[15])
                    .update(&(terms.title.len() as u64).to_le_bytes());
                h.update(terms.title.as_bytes());
                h.update(&terms.window_blocks.to_le_bytes());
                h.update(&terms.quorum_bps.to_le_bytes());
                h.update(&terms.approval_bps.to_le_bytes());
                match &terms.change {
                    None => h.update(&[0]),
                    Some(change) => h
                        .update(&[1, change.param as u8])
                        .update(&change.value.to_le_bytes())
                        .update(&change.effective_at.to_le_bytes()),
                };
            }
            TxKind::Vote { cast } => {
                h.update(&[16]).update(&cast.proposal.0);
                h.update(&cast.voter.0);
                h.update(&[u8::from(cast.approve)]);
            }
            TxKind::VnRegister { policy } => {
                h.update(&[17]).update(&policy.vn.to_le_bytes());
                h.update(&(policy.endorsers.len() as u64).to_le_bytes());
                for endorser in &policy.endorsers {
                    h.update(&endorser.key.0)
                        .update(&endorser.weight.to_le_bytes());
                }
                h.update(&policy.threshold.to_le_bytes());
                match &policy.fee {
                    None => h.update(&[0]),
                    Some(fee) => h
                        .update(&[1])
                        .update(&fee.token.0 .0)
                        .update(&fee.amount.to_le_bytes())
                        .update(&fee.collector.0),
                };
            }
        }
        h.update(&(body.inputs.len() as u64).to_le_bytes());
        for input in &body.inputs {
            h.update(&input.tx.0);
            h.update(&input.index.to_le_bytes());
        }
        h.update(&(body.outputs.len() as u64).to_le_bytes());
        for output in &body.outputs {
            h.update(&output.amount.to_le_bytes());
            h.update(&output.asset.0 .0);
            h.update(&output.owner.0);
            match output.unlock_height {
                None => h.update(&[0]),
                Some(height) => h.update(&[1]).update(&height.to_le_bytes()),
            };
        }
        h.update(&body.fee.to_le_bytes());
        h.update(&(body.memo.len() as u64).to_le_bytes());
        h.update(&body.memo);
        match body.client_id {
            None => h.update(&[0]),
            Some(id) => h.update(&[1]).update(&id.to_le_bytes()),
        };
        Hash32::from(h.finalize())
    }

    fn many_inputs(count: u32, memo: usize, client_id: Option<u64>) -> TxBody {
        let owner = key(1, 1).public();
        TxBody {
            chain_id: 7,
            vn: 3,
            kind: TxKind::Transfer,
            inputs: (0..count)
                .map(|index| OutPoint {
                    tx: Hash32::of(domain::TX_ID, &index.to_le_bytes()),
                    index,
                })
                .collect(),
            outputs: (0..count)
                .map(|i| TxOutput {
                    amount: u64::from(i) + 1,
                    asset: AssetId::CAS,
                    owner,
                    unlock_height: (i % 2 == 0).then_some(u64::from(i) * 1000),
                })
                .collect(),
            fee: 5,
            memo: vec![0xab; memo],
            client_id,
        }
    }

    fn issuance(evidence: Vec<Vec<u8>>) -> TxBody {
        TxBody {
            kind: TxKind::Issuance {
                height: 12,
                evidence,
                absent: Some(vec![key(2, 2).public()]),
            },
            inputs: Vec::new(),
            ..many_inputs(3, 0, None)
        }
    }

    /// One body of each token kind.
    fn token_bodies() -> Vec<TxBody> {
        crate::fixtures::token_kinds()
            .into_iter()
            .map(|kind| TxBody {
                kind,
                ..many_inputs(2, 3, Some(1))
            })
            .collect()
    }

    #[test]
    fn buffered_id_equals_field_by_field_hashing() {
        let genesis = funded_genesis(7, 4, 40, 2, 1_000);
        for tx in &genesis.txs {
            assert_eq!(tx.tx_id(), reference_id(&tx.body));
        }
        for (count, memo, client_id) in [
            (1, 0, None),
            (2, 64, Some(9)),
            (40, 17, Some(1)),
            (256, 64, None),
        ] {
            let body = many_inputs(count, memo, client_id);
            assert_eq!(body.tx_id(), reference_id(&body), "{count} inputs");
        }
        // An issuance with evidence past the writer's buffer, and one whose evidence is split differently.
        let whole = issuance(vec![vec![0xcd; 3_000], vec![1, 2]]);
        assert_eq!(whole.tx_id(), reference_id(&whole));
        let split = issuance(vec![vec![0xcd; 1_500], vec![0xcd; 1_500], vec![1, 2]]);
        assert_ne!(whole.tx_id(), split.tx_id(), "item lengths are hashed");
        let tokens = token_bodies();
        for body in &tokens {
            assert_eq!(body.tx_id(), reference_id(body), "{:?}", body.kind);
        }
        let ids: std::collections::HashSet<TxId> = tokens.iter().map(TxBody::tx_id).collect();
        assert_eq!(ids.len(), tokens.len(), "every kind hashes apart");
    }

    #[test]
    fn ids_hashed_side_by_side_equal_field_by_field_hashing() {
        // Bodies of every size class: transfers around and past one blake3 chunk (1,024 bytes), genesis parts and
        // issuances, more than one group of sixteen and a tail.
        let mut bodies: Vec<TxBody> = funded_genesis(7, 4, 40, 2, 1_000)
            .txs
            .into_iter()
            .map(|tx| tx.body)
            .collect();
        for memo in (0..1_000).step_by(37) {
            bodies.push(many_inputs(1 + (memo as u32 % 3), memo, Some(memo as u64)));
        }
        bodies.push(many_inputs(40, 17, None));
        bodies.push(issuance(vec![vec![0xcd; 3_000], vec![1, 2]]));
        bodies.extend(token_bodies());
        let archived: Vec<rkyv::util::AlignedVec> = bodies
            .iter()
            .map(|body| {
                let tx = Transaction {
                    body: body.clone(),
                    signatures: Vec::new(),
                };
                rkyv::to_bytes::<rkyv::rancor::Error>(&tx).expect("archives")
            })
            .collect();
        let txs: Vec<&ArchivedTransaction> = archived
            .iter()
            .map(|bytes| {
                rkyv::access::<ArchivedTransaction, rkyv::rancor::Error>(bytes).expect("valid")
            })
            .collect();
        let ids = tx_ids(&txs);
        assert_eq!(ids.len(), bodies.len());
        for (body, id) in bodies.iter().zip(&ids) {
            assert_eq!(*id, reference_id(body));
        }
        // Owned transactions archived together give the same ids, whatever their sizes and mix.
        let owned: Vec<Transaction> = bodies
            .iter()
            .map(|body| Transaction {
                body: body.clone(),
                signatures: Vec::new(),
            })
            .collect();
        assert_eq!(owned_tx_ids(&owned), ids);
        assert_eq!(owned_tx_ids(&owned[3..4]), ids[3..4]);
        assert!(owned_tx_ids(&[]).is_empty());
    }
}
