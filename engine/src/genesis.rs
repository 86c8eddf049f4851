//! Genesis: a TOML spec (chain id, parameters, committee with stakes, initial allocations) becomes the genesis
//! block. The committee and parameters ride inside the genesis transactions, so the genesis hash commits to them.

use std::collections::HashSet;

use serde::Deserialize;

use crate::block::{Block, BlockHeader};
use crate::codec::{COMMITTEE_MAX, OUTPUTS_MAX};
use crate::commitment::SetCommitment;
use crate::crypto::PublicKey;
use crate::governance::GovernanceParams;
use crate::id::{AssetId, Hash32};
use crate::stake::{candidacy_outpoint, candidacy_record};
use crate::text::{quote, reason};
use crate::tx::{
    ChainParams, CommitteeMember, OutPoint, StakeParams, Transaction, TxBody, TxKind, TxOutput,
};

/// Allocations a spec may list (each may split into several outputs).
pub const ALLOCATIONS_MAX: usize = 1_000_000;
/// Outputs all allocations may create together: the genesis block must pass the block decoder (its bytes), and
/// the spec is refused before anything is allocated for it.
pub const GENESIS_OUTPUTS_MAX: u64 = 500_000;
const _: () = assert!(
    GENESIS_OUTPUTS_MAX as usize * std::mem::size_of::<crate::tx::ArchivedTxOutput>()
        + (GENESIS_OUTPUTS_MAX as usize / OUTPUTS_MAX + 1) * 1024
        + COMMITTEE_MAX * std::mem::size_of::<crate::tx::ArchivedCommitteeMember>()
        <= crate::codec::BLOCK_BYTES_MAX
);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisSpec {
    pub chain_id: u32,
    #[serde(default)]
    pub timestamp_ms: u64,
    pub params: ParamsSpec,
    pub committee: Vec<MemberSpec>,
    #[serde(default)]
    pub allocations: Vec<AllocationSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamsSpec {
    pub min_fee: u64,
    pub block_interval_ms: u64,
    /// DPOS blocks per POW witness; [`DEFAULT_WITNESS_SPAN`] when absent.
    #[serde(default = "default_witness_span")]
    pub witness_span: u32,
    /// Stake, elections and rewards; every field has a default.
    #[serde(default)]
    pub stake: StakeSpec,
    /// The DEX matching fee per side, in basis points; [`DEFAULT_MATCHING_FEE_BPS`] when absent.
    #[serde(default = "default_matching_fee_bps")]
    pub matching_fee_bps: u32,
    /// The CIP governance floors; every field has a default.
    #[serde(default)]
    pub governance: GovernanceSpec,
}

/// The `[params.governance]` table (see [`GovernanceParams`] for what each field means).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GovernanceSpec {
    pub window_blocks_min: u64,
    pub quorum_bps_min: u32,
    pub approval_bps_min: u32,
}

/// The shortest CIP voting window when the genesis names none: about ten seconds of blocks.
pub const DEFAULT_WINDOW_BLOCKS_MIN: u64 = 100;
/// The smallest quorum when the genesis names none: a fifth of the ballots minted.
pub const DEFAULT_QUORUM_BPS_MIN: u32 = 2_000;
/// The smallest approval ratio when the genesis names none: yes must exceed half the votes cast.
pub const DEFAULT_APPROVAL_BPS_MIN: u32 = 5_000;

impl Default for GovernanceSpec {
    fn default() -> GovernanceSpec {
        GovernanceSpec {
            window_blocks_min: DEFAULT_WINDOW_BLOCKS_MIN,
            quorum_bps_min: DEFAULT_QUORUM_BPS_MIN,
            approval_bps_min: DEFAULT_APPROVAL_BPS_MIN,
        }
    }
}

impl GovernanceSpec {
    fn params(&self) -> Result<GovernanceParams, GenesisError> {
        let bps = crate::token::BPS;
        if self.window_blocks_min == 0
            || u64::from(self.quorum_bps_min) > bps
            || u64::from(self.approval_bps_min) >= bps
        {
            return Err(GenesisError::Governance);
        }
        Ok(GovernanceParams {
            window_blocks_min: self.window_blocks_min,
            quorum_bps_min: self.quorum_bps_min,
            approval_bps_min: self.approval_bps_min,
        })
    }
}

/// The matching fee when the genesis names none: 0.1% of a fill's CAS notional, per side.
pub const DEFAULT_MATCHING_FEE_BPS: u32 = 10;

fn default_matching_fee_bps() -> u32 {
    DEFAULT_MATCHING_FEE_BPS
}

/// The `[params.stake]` table (see [`StakeParams`] for what each field means).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StakeSpec {
    pub epoch_blocks: u64,
    /// The genesis committee's size when absent.
    pub committee_size: Option<u32>,
    pub candidacy_stake_min: u64,
    pub unbond_delay_blocks: u64,
    pub block_reward: u64,
    pub committee_share_percent: u32,
    pub absence_limit: u32,
    pub blacklist_blocks: u64,
    pub evict_after: u32,
}

/// The whitepaper's split: 70% of each block's fees and reward to the committee, 30% to POS nodes by stake.
pub const DEFAULT_COMMITTEE_SHARE_PERCENT: u32 = 70;
/// Blocks unbonded CAS stays locked when the genesis names no delay.
pub const DEFAULT_UNBOND_DELAY_BLOCKS: u64 = 1_000;
/// The whitepaper's "N times in a row" (left to be decided there): certificates in a row a member may miss, about
/// ten seconds of blocks under load, before it is blacklisted.
pub const DEFAULT_ABSENCE_LIMIT: u32 = 100;
/// Blocks a blacklist withholds rewards for.
pub const DEFAULT_BLACKLIST_BLOCKS: u64 = 1_000;
/// The whitepaper's "repeated blacklisting": the second blacklist of a run evicts.
pub const DEFAULT_EVICT_AFTER: u32 = 2;

impl Default for StakeSpec {
    fn default() -> StakeSpec {
        StakeSpec {
            epoch_blocks: 0,
            committee_size: None,
            candidacy_stake_min: 1,
            unbond_delay_blocks: DEFAULT_UNBOND_DELAY_BLOCKS,
            block_reward: 0,
            committee_share_percent: DEFAULT_COMMITTEE_SHARE_PERCENT,
            absence_limit: DEFAULT_ABSENCE_LIMIT,
            blacklist_blocks: DEFAULT_BLACKLIST_BLOCKS,
            evict_after: DEFAULT_EVICT_AFTER,
        }
    }
}

/// The witness span of a chain whose genesis names none.
pub const DEFAULT_WITNESS_SPAN: u32 = 128;
/// The largest witness span a genesis may set (a witness header's decoder bound).
pub const WITNESS_SPAN_MAX: u32 = 1_024;

fn default_witness_span() -> u32 {
    DEFAULT_WITNESS_SPAN
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSpec {
    /// Hex public key.
    pub key: String,
    pub stake: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocationSpec {
    /// Hex public key.
    pub owner: String,
    /// Amount of each output.
    pub amount: u64,
    /// Hex asset id; CAS when absent.
    pub asset: Option<String>,
    /// How many outputs of `amount` the owner gets (default 1), so load tests can spend in parallel.
    #[serde(default = "one")]
    pub outputs: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenesisError {
    #[error("spec is not valid TOML: {0}")]
    Toml(String),
    #[error("the committee is empty")]
    EmptyCommittee,
    #[error("witness span {0} is outside 1..={max}", max = WITNESS_SPAN_MAX)]
    WitnessSpan(u32),
    #[error("the committee has {0} members, more than {COMMITTEE_MAX}")]
    CommitteeTooLarge(usize),
    #[error("committee member {index}: {reason}")]
    BadMember { index: usize, reason: String },
    #[error("allocation {index}: {reason}")]
    BadAllocation { index: usize, reason: String },
    #[error("too many allocations ({0})")]
    TooManyAllocations(usize),
    #[error("the allocations create {count} outputs, more than {GENESIS_OUTPUTS_MAX}")]
    TooManyOutputs { count: u64 },
    #[error("the committee's stakes sum past the largest stake total (u64)")]
    StakeOverflow,
    #[error("params.stake: {0}")]
    BadStakeParams(String),
    #[error("params.matching_fee_bps {0} is over 10000 (100%)")]
    MatchingFee(u32),
    #[error(
        "params.governance: window_blocks_min must be at least 1, quorum_bps_min at most 10000 and \
         approval_bps_min under 10000"
    )]
    Governance,
    #[error("the CAS allocations and the committee's stake sum past a u64")]
    CasSupplyOverflow,
}

impl GenesisSpec {
    pub fn from_toml(text: &str) -> Result<GenesisSpec, GenesisError> {
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map_or(0, |span| text[..span.start].matches('\n').count() + 1);
            GenesisError::Toml(format!("line {line}: {}", reason(&e.message().trim())))
        })
    }
}

fn parse_key(text: &str) -> Result<PublicKey, String> {
    let key = PublicKey::from_hex(text)
        .map_err(|e| format!("key {} is not 32 hex bytes: {e}", quote(text)))?;
    let point = curve25519_dalek::edwards::CompressedEdwardsY(key.0).decompress();
    if point.is_none_or(|p| p.is_small_order()) {
        return Err(format!(
            "key {} is not a valid ed25519 public key",
            quote(text)
        ));
    }
    Ok(key)
}

/// The stake parameters a spec gives, checked.
fn stake_params(spec: &StakeSpec, genesis_members: usize) -> Result<StakeParams, GenesisError> {
    let committee_size = spec.committee_size.unwrap_or(genesis_members as u32);
    if committee_size == 0 || committee_size as usize > COMMITTEE_MAX {
        return Err(GenesisError::BadStakeParams(format!(
            "committee_size {committee_size} is outside 1..={COMMITTEE_MAX}"
        )));
    }
    if spec.epoch_blocks != 0 && spec.epoch_blocks < crate::stake::EPOCH_BLOCKS_MIN {
        return Err(GenesisError::BadStakeParams(format!(
            "epoch_blocks {} is neither 0 (no elections) nor at least {}",
            spec.epoch_blocks,
            crate::stake::EPOCH_BLOCKS_MIN
        )));
    }
    if spec.committee_share_percent > 100 {
        return Err(GenesisError::BadStakeParams(format!(
            "committee_share_percent {} is over 100",
            spec.committee_share_percent
        )));
    }
    Ok(StakeParams {
        epoch_blocks: spec.epoch_blocks,
        committee_size,
        candidacy_stake_min: spec.candidacy_stake_min,
        unbond_delay_blocks: spec.unbond_delay_blocks,
        block_reward: spec.block_reward,
        committee_share_percent: spec.committee_share_percent,
        absence_limit: spec.absence_limit,
        blacklist_blocks: spec.blacklist_blocks,
        evict_after: spec.evict_after,
    })
}

/// Builds the genesis block: height 0, no parent, one or more genesis transactions (part 0 carries the committee;
/// outputs are split into parts of at most [`OUTPUTS_MAX`]) and the UTXO commitment of the allocations.
pub fn genesis_block(spec: &GenesisSpec) -> Result<Block, GenesisError> {
    if spec.committee.is_empty() {
        return Err(GenesisError::EmptyCommittee);
    }
    if spec.params.witness_span == 0 || spec.params.witness_span > WITNESS_SPAN_MAX {
        return Err(GenesisError::WitnessSpan(spec.params.witness_span));
    }
    if spec.committee.len() > COMMITTEE_MAX {
        return Err(GenesisError::CommitteeTooLarge(spec.committee.len()));
    }
    if u64::from(spec.params.matching_fee_bps) > crate::token::BPS {
        return Err(GenesisError::MatchingFee(spec.params.matching_fee_bps));
    }
    let stake = stake_params(&spec.params.stake, spec.committee.len())?;
    if spec.allocations.len() > ALLOCATIONS_MAX {
        return Err(GenesisError::TooManyAllocations(spec.allocations.len()));
    }
    // Counted before anything is built: a spec's counts are untrusted.
    let count: u64 = spec.allocations.iter().map(|a| u64::from(a.outputs)).sum();
    if count > GENESIS_OUTPUTS_MAX {
        return Err(GenesisError::TooManyOutputs { count });
    }
    let mut seen = HashSet::new();
    let mut committee = Vec::with_capacity(spec.committee.len());
    for (index, member) in spec.committee.iter().enumerate() {
        let bad = |reason: String| GenesisError::BadMember { index, reason };
        let key = parse_key(&member.key).map_err(bad)?;
        if member.stake == 0 {
            return Err(bad("stake is zero".into()));
        }
        if !seen.insert(key) {
            return Err(bad("key appears twice".into()));
        }
        committee.push(CommitteeMember {
            key,
            stake: member.stake,
        });
    }
    // Every node refuses a committee whose stakes overflow: refused here, not after it is handed out.
    committee
        .iter()
        .try_fold(0u64, |sum, member| sum.checked_add(member.stake))
        .ok_or(GenesisError::StakeOverflow)?;
    let mut outputs = Vec::with_capacity(count as usize);
    // CAS's supply, the committee's stake (CAS bonded at genesis) included, must fit a u64: stake and fees are CAS,
    // so every sum the stake registry and the fee pots keep is then bounded. (Other assets may allocate more in
    // all; the rules refuse spending more than a u64 of one together, `InputOverflow`.)
    let mut cas_supply: u128 = committee.iter().map(|m| u128::from(m.stake)).sum();
    for (index, allocation) in spec.allocations.iter().enumerate() {
        let bad = |reason: String| GenesisError::BadAllocation { index, reason };
        let owner = parse_key(&allocation.owner).map_err(bad)?;
        let asset = match &allocation.asset {
            None => AssetId::CAS,
            Some(text) => AssetId(Hash32::from_hex(text).map_err(|e| bad(format!("asset: {e}")))?),
        };
        if committee
            .iter()
            .any(|member| asset == AssetId::stake_of(&member.key))
        {
            return Err(bad(
                "asset: stake is bonded by transactions, not allocated".into()
            ));
        }
        if asset == AssetId::CLIENT_ID_CLAIM {
            return Err(bad(
                "asset: ff..ff marks client id claims, it is not an asset".into(),
            ));
        }
        if allocation.amount == 0 || allocation.outputs == 0 {
            return Err(bad("amount and outputs must be positive".into()));
        }
        if asset == AssetId::CAS {
            cas_supply += u128::from(allocation.amount) * u128::from(allocation.outputs);
            if cas_supply > u128::from(u64::MAX) {
                return Err(GenesisError::CasSupplyOverflow);
            }
        }
        let output = TxOutput {
            amount: allocation.amount,
            asset,
            owner,
            unlock_height: None,
        };
        outputs.extend(std::iter::repeat_n(output, allocation.outputs as usize));
    }
    let params = Box::new(ChainParams {
        min_fee: spec.params.min_fee,
        block_interval_ms: spec.params.block_interval_ms,
        witness_span: spec.params.witness_span,
        stake,
        matching_fee_bps: spec.params.matching_fee_bps,
        governance: spec.params.governance.params()?,
    });
    let mut parts: Vec<Vec<TxOutput>> = outputs
        .chunks(OUTPUTS_MAX)
        .map(<[TxOutput]>::to_vec)
        .collect();
    if parts.is_empty() {
        parts.push(Vec::new());
    }
    let txs: Vec<Transaction> = parts
        .into_iter()
        .enumerate()
        .map(|(part, outputs)| Transaction {
            body: TxBody {
                chain_id: spec.chain_id,
                vn: 0,
                kind: TxKind::Genesis {
                    part: part as u32,
                    committee: if part == 0 {
                        committee.clone()
                    } else {
                        Vec::new()
                    },
                    params: params.clone(),
                },
                inputs: Vec::new(),
                outputs,
                fee: 0,
                memo: Vec::new(),
                client_id: None,
            },
            signatures: Vec::new(),
        })
        .collect();
    let mut commitment = SetCommitment::default();
    for (outpoint, output) in genesis_set(&txs) {
        commitment.insert(&outpoint, &output);
    }
    let mut block = Block {
        header: BlockHeader {
            chain_id: spec.chain_id,
            height: 0,
            round: 0,
            parent: Hash32::ZERO,
            tx_root: Hash32::ZERO,
            sig_root: Hash32::ZERO,
            proposer: PublicKey::default(),
            timestamp_ms: spec.timestamp_ms,
            utxo_commitment: commitment.checksum(),
        },
        txs,
    };
    block.header.tx_root = block.compute_tx_root();
    block.header.sig_root = block.compute_sig_root();
    Ok(block)
}

/// The coins the genesis allocations create, with their outpoints (the genesis transactions' outputs).
pub fn genesis_outputs(txs: &[Transaction]) -> Vec<(OutPoint, TxOutput)> {
    txs.iter()
        .filter(|tx| matches!(tx.body.kind, TxKind::Genesis { .. }))
        .flat_map(|tx| {
            let id = tx.tx_id();
            tx.body.outputs.iter().enumerate().map(move |(i, o)| {
                (
                    OutPoint {
                        tx: id,
                        index: i as u32,
                    },
                    *o,
                )
            })
        })
        .collect()
}

/// The whole set the genesis starts the ledger with (what its header commits to): the allocations'
/// [`genesis_outputs`], and for each member of the genesis committee a candidacy record (no address announced)
/// and its stake, as a stake output owned by the member at index [`OUTPUTS_MAX`] + its position in the committee's
/// transaction (no transaction output has that index). So the genesis committee stands for election like any
/// candidate, with the stake the genesis gives it.
pub fn genesis_set(txs: &[Transaction]) -> Vec<(OutPoint, TxOutput)> {
    let mut set = genesis_outputs(txs);
    for tx in txs {
        let TxKind::Genesis { committee, .. } = &tx.body.kind else {
            continue;
        };
        let id = tx.tx_id();
        for (position, member) in committee.iter().enumerate() {
            set.push((
                candidacy_outpoint(&member.key),
                candidacy_record(&member.key, &[]),
            ));
            let stake = TxOutput {
                amount: member.stake,
                asset: AssetId::stake_of(&member.key),
                owner: member.key,
                unlock_height: None,
            };
            let index = (OUTPUTS_MAX + position) as u32;
            set.push((OutPoint { tx: id, index }, stake));
        }
    }
    set
}

/// The committee and parameters recorded in a genesis block, if it has them.
pub fn genesis_committee(block: &Block) -> Option<(&[CommitteeMember], &ChainParams)> {
    block.txs.iter().find_map(|tx| match &tx.body.kind {
        TxKind::Genesis {
            part: 0,
            committee,
            params,
        } => Some((committee.as_slice(), &**params)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(members: &[(u8, u64)], allocations: &[(u64, u32)]) -> GenesisSpec {
        let key = |seed: u8| {
            crate::crypto::Keypair::from_seed(&[seed; 32])
                .public()
                .to_string()
        };
        GenesisSpec {
            chain_id: 1,
            timestamp_ms: 0,
            params: ParamsSpec {
                min_fee: 1,
                block_interval_ms: 100,
                witness_span: DEFAULT_WITNESS_SPAN,
                stake: StakeSpec::default(),
                matching_fee_bps: DEFAULT_MATCHING_FEE_BPS,
                governance: GovernanceSpec::default(),
            },
            committee: members
                .iter()
                .map(|&(seed, stake)| MemberSpec {
                    key: key(seed),
                    stake,
                })
                .collect(),
            allocations: allocations
                .iter()
                .map(|&(amount, outputs)| AllocationSpec {
                    owner: key(100),
                    amount,
                    asset: None,
                    outputs,
                })
                .collect(),
        }
    }

    #[test]
    fn a_cas_supply_past_a_u64_is_refused() {
        let error = genesis_block(&spec(&[(1, 10)], &[(u64::MAX / 2, 2), (5, 1)])).unwrap_err();
        assert_eq!(error, GenesisError::CasSupplyOverflow);
        // The committee's stake counts toward CAS.
        let error = genesis_block(&spec(&[(1, 10)], &[(u64::MAX - 5, 1)])).unwrap_err();
        assert_eq!(error, GenesisError::CasSupplyOverflow);
        assert!(genesis_block(&spec(&[(1, 10)], &[(u64::MAX - 10, 1)])).is_ok());
        // Another asset may allocate more than a u64 in all.
        let mut token = spec(&[(1, 10)], &[(u64::MAX, 2)]);
        token.allocations[0].asset = Some("ab".repeat(32));
        assert!(genesis_block(&token).is_ok());
    }

    /// Issue 16 item 6: `cas genesis` aborted on memory (378 GB asked) for a huge `outputs` count.
    #[test]
    fn a_huge_outputs_count_is_refused_before_anything_is_allocated() {
        let error = genesis_block(&spec(&[(1, 1)], &[(1, u32::MAX), (1, u32::MAX)])).unwrap_err();
        assert_eq!(
            error,
            GenesisError::TooManyOutputs {
                count: 2 * u64::from(u32::MAX)
            }
        );
        // The largest allowed genesis encodes within the block decoder's bound.
        let block = genesis_block(&spec(&[(1, 1)], &[(1, GENESIS_OUTPUTS_MAX as u32)])).unwrap();
        let bytes = crate::codec::encode_block(&block);
        assert!(crate::codec::decode_block(&bytes).is_ok());
    }

    /// Issue 16 item 6: stakes that overflow passed `cas genesis` (exit 0) and every node then refused the chain.
    /// (Allocations of other assets that sum past u64 stay allowed: the rules refuse spending them together,
    /// `InputOverflow`; CAS's supply is bounded, see `a_cas_supply_past_a_u64_is_refused`.)
    #[test]
    fn governance_floors_out_of_range_are_refused() {
        let floors = |window_blocks_min, quorum_bps_min, approval_bps_min| {
            let mut spec = spec(&[(1, 1)], &[]);
            spec.params.governance = GovernanceSpec {
                window_blocks_min,
                quorum_bps_min,
                approval_bps_min,
            };
            genesis_block(&spec).map(drop)
        };
        assert_eq!(floors(1, 10_000, 9_999), Ok(()));
        for (window, quorum, approval) in
            [(0, 2_000, 5_000), (10, 10_001, 5_000), (10, 2_000, 10_000)]
        {
            assert_eq!(
                floors(window, quorum, approval),
                Err(GenesisError::Governance)
            );
        }
    }

    #[test]
    fn stakes_that_overflow_are_refused() {
        assert_eq!(
            genesis_block(&spec(&[(1, u64::MAX), (2, 1)], &[])).unwrap_err(),
            GenesisError::StakeOverflow
        );
        assert!(genesis_block(&spec(&[(1, u64::MAX - 1), (2, 1)], &[])).is_ok());
    }

    /// Issue 16: a key of 1 MB in a spec came back whole in the error; now it is quoted within a bound.
    #[test]
    fn errors_quote_bad_input_within_a_bound() {
        let huge = "z".repeat(1 << 20);
        let spec = format!(
            "chain_id = 1\n[params]\nmin_fee = 1\nblock_interval_ms = 1\n[[committee]]\nkey = \"{huge}\"\nstake = 1\n"
        );
        let error = genesis_block(&GenesisSpec::from_toml(&spec).unwrap())
            .unwrap_err()
            .to_string();
        assert!(error.contains("is not 32 hex bytes"), "{error:.200}");
        assert!(error.contains("more bytes)"), "{error:.200}");
        assert!(error.len() < 1024, "{} bytes", error.len());

        let spec = format!(
            "chain_id = 1\n[params]\nmin_fee = \"{huge}\"\nblock_interval_ms = 1\ncommittee = []\n"
        );
        let error = GenesisSpec::from_toml(&spec).unwrap_err().to_string();
        assert!(error.contains("line 3"), "{error:.200}");
        assert!(error.len() < 1024, "{} bytes", error.len());
    }
}
