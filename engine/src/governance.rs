//! CIP governance on the UTXO set: proposals, snapshot ballots, votes, tallies and resolutions, all of them set
//! records, so they travel with snapshots and the set's commitment covers them.
//!
//! - A **proposal** ([`TxKind::Propose`](crate::tx::TxKind::Propose)) opens a vote at its block's height, the
//!   *snapshot*, until `snapshot + window_blocks`, with a quorum and an approval ratio no laxer than the genesis
//!   floors ([`GovernanceParams`]), and optionally a parameter change with the height it takes effect at. Its id
//!   is its transaction's id; its record sits at `(id, PROPOSAL_INDEX)`.
//! - At the end of the snapshot block the ledger **mints ballots**: one per CAS each key holds in the set after
//!   that block (coins, locked coins and escrow alike), as a record at `(ballot_place(id, holder), BALLOT_INDEX)`
//!   of the proposal's ballot asset, owned by the holder, and the total minted at `(id, TALLY_INDEX)`. A ballot is
//!   bound to its holder: no transaction can spend a record, so it never moves with coins.
//! - A **vote** ([`TxKind::Vote`](crate::tx::TxKind::Vote)), naming and signed by the holder, spends its ballot
//!   and writes a vote record at `(ballot_place(id, holder), VOTE_INDEX)` with its weight and choice. A second
//!   vote finds the ballot gone and the vote there: refused. Coins moved after the snapshot carry no ballot, so they
//!   vote nowhere again.
//! - At the end of the window's last block every node **tallies** the same records: turnout (yes + no) must reach
//!   `quorum_bps` of the ballots minted and yes must exceed `approval_bps` of the turnout. The ledger writes the
//!   **resolution** at `(id, RESOLUTION_INDEX)` (yes and no) and spends the ballots nobody used. A passed
//!   parameter change applies from its stated height on ([`Governance::params_at`]).
//!
//! [`Governance`] is a pure function of the set, like [`crate::stake::StakeRegistry`]: kept up to date from each
//! block's spent and created entries, rebuilt from the set on a restart. No IO here.

use std::collections::BTreeMap;

use rkyv::{Archive, Deserialize, Serialize};

use crate::crypto::PublicKey;
use crate::fasthash::FastMap;
use crate::id::{domain, AssetId, Hash32, TxId};
use crate::stake::BlockRecords;
use crate::token::BPS;
use crate::tx::{ChainParams, OutPoint, TxOutput};

/// The set index of a proposal record.
pub const PROPOSAL_INDEX: u32 = u32::MAX - 12;
/// The set index of a ballot.
pub const BALLOT_INDEX: u32 = u32::MAX - 13;
/// The set index of a vote record.
pub const VOTE_INDEX: u32 = u32::MAX - 14;
/// The set index of the record of the ballots a proposal minted.
pub const TALLY_INDEX: u32 = u32::MAX - 15;
/// The set index of a resolution record.
pub const RESOLUTION_INDEX: u32 = u32::MAX - 16;
const _: () = assert!(RESOLUTION_INDEX >= crate::rules::RECORD_INDEX_MIN);
const _: () = assert!(PROPOSAL_INDEX < crate::contract::ledger::CONTRACT_INDEX);

/// A proposal's title, at most this many bytes of printable ASCII.
pub const TITLE_BYTES_MAX: usize = 64;

/// The genesis floors every proposal must meet or exceed.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct GovernanceParams {
    /// The shortest voting window, in blocks (at least 1).
    pub window_blocks_min: u64,
    /// The smallest quorum: turnout in basis points of the ballots minted.
    pub quorum_bps_min: u32,
    /// The smallest approval ratio: the share of the turnout that yes must exceed, in basis points.
    pub approval_bps_min: u32,
}

/// A chain parameter a resolution may change.
#[derive(
    Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug, PartialOrd, Ord, Hash,
)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum Param {
    /// The smallest fee in CAS.
    MinFee,
    /// Blocks an unbonded amount stays locked (unbonds from the effective height on).
    UnbondDelayBlocks,
}

impl Param {
    fn tag(self) -> u8 {
        match self {
            Param::MinFee => 1,
            Param::UnbondDelayBlocks => 2,
        }
    }

    fn from_tag(tag: u8) -> Option<Param> {
        match tag {
            1 => Some(Param::MinFee),
            2 => Some(Param::UnbondDelayBlocks),
            _ => None,
        }
    }

    /// The name `cas gov propose --param` takes and the API shows.
    pub fn name(self) -> &'static str {
        match self {
            Param::MinFee => "min_fee",
            Param::UnbondDelayBlocks => "unbond_delay_blocks",
        }
    }

    pub fn from_name(name: &str) -> Option<Param> {
        [Param::MinFee, Param::UnbondDelayBlocks]
            .into_iter()
            .find(|param| param.name() == name)
    }
}

/// A change a passed proposal makes: `param` is `value` from height `effective_at` on.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct ParamChange {
    pub param: Param,
    pub value: u64,
    pub effective_at: u64,
}

impl From<&ArchivedParamChange> for ParamChange {
    fn from(archived: &ArchivedParamChange) -> ParamChange {
        ParamChange {
            param: match archived.param {
                ArchivedParam::MinFee => Param::MinFee,
                ArchivedParam::UnbondDelayBlocks => Param::UnbondDelayBlocks,
            },
            value: archived.value.to_native(),
            effective_at: archived.effective_at.to_native(),
        }
    }
}

/// What a proposal transaction declares.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct ProposalTerms {
    pub title: String,
    /// Blocks after the snapshot during which votes count.
    pub window_blocks: u64,
    pub quorum_bps: u32,
    pub approval_bps: u32,
    pub change: Option<ParamChange>,
}

/// What a vote transaction casts: `voter`'s ballot of `proposal`, for or against. The voter is named in the body
/// (so in the tx id), not taken from the signatures, which the id leaves out: nobody can make one signed vote count
/// another signer's ballot by dropping or reordering signatures.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct VoteCast {
    pub proposal: Hash32,
    pub voter: PublicKey,
    pub approve: bool,
}

/// Why a proposal's terms are refused (stateless: against the genesis floors and the proposal's height).
pub fn check_terms(
    terms: &ArchivedProposalTerms,
    floors: &GovernanceParams,
    height: u64,
) -> Result<(), &'static str> {
    let title = terms.title.as_str();
    if title.is_empty()
        || title.len() > TITLE_BYTES_MAX
        || !title.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        return Err("the title must be 1 to 64 bytes of printable ASCII");
    }
    let window = terms.window_blocks.to_native();
    if window < floors.window_blocks_min.max(1) {
        return Err("a window shorter than the genesis floor");
    }
    let (quorum, approval) = (terms.quorum_bps.to_native(), terms.approval_bps.to_native());
    if quorum < floors.quorum_bps_min || u64::from(quorum) > BPS {
        return Err("a quorum below the genesis floor or above 10000");
    }
    if approval < floors.approval_bps_min || u64::from(approval) >= BPS {
        return Err("an approval ratio below the genesis floor or at 10000 or above");
    }
    let end = height
        .checked_add(window)
        .ok_or("a window past the last height")?;
    if let Some(change) = terms.change.as_ref() {
        if change.effective_at.to_native() <= end {
            return Err("a change must take effect after the window ends");
        }
    }
    Ok(())
}

/// The place of `holder`'s ballot and vote for `proposal`.
pub fn ballot_place(proposal: &Hash32, holder: &PublicKey) -> Hash32 {
    let mut hasher = blake3::Hasher::new_derive_key(domain::GOVERNANCE_BALLOT);
    hasher.update(&proposal.0);
    hasher.update(&holder.0);
    Hash32::from(hasher.finalize())
}

/// Where `holder`'s ballot for `proposal` is, while unused.
pub fn ballot_outpoint(proposal: &Hash32, holder: &PublicKey) -> OutPoint {
    OutPoint {
        tx: ballot_place(proposal, holder),
        index: BALLOT_INDEX,
    }
}

/// Where `holder`'s vote on `proposal` is, once cast.
pub fn vote_outpoint(proposal: &Hash32, holder: &PublicKey) -> OutPoint {
    OutPoint {
        tx: ballot_place(proposal, holder),
        index: VOTE_INDEX,
    }
}

pub fn proposal_outpoint(proposal: &Hash32) -> OutPoint {
    OutPoint {
        tx: *proposal,
        index: PROPOSAL_INDEX,
    }
}

pub fn tally_outpoint(proposal: &Hash32) -> OutPoint {
    OutPoint {
        tx: *proposal,
        index: TALLY_INDEX,
    }
}

pub fn resolution_outpoint(proposal: &Hash32) -> OutPoint {
    OutPoint {
        tx: *proposal,
        index: RESOLUTION_INDEX,
    }
}

/// The asset of `proposal`'s ballots.
pub fn ballot_asset(proposal: &Hash32) -> AssetId {
    AssetId(Hash32::of(domain::GOVERNANCE_BALLOT, &proposal.0))
}

/// The asset a vote record of `proposal` holds its weight in: one for each choice.
pub fn vote_asset(proposal: &Hash32, approve: bool) -> AssetId {
    let mut bytes = [0u8; 33];
    bytes[..32].copy_from_slice(&proposal.0);
    bytes[32] = u8::from(approve);
    AssetId(Hash32::of(domain::GOVERNANCE_VOTE, &bytes))
}

/// A proposal as its record holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub id: Hash32,
    pub proposer: PublicKey,
    /// The height whose holdings minted the ballots (the proposal's own block).
    pub snapshot: u64,
    /// The last height a vote counts at; the tally is taken at its end.
    pub end: u64,
    pub quorum_bps: u32,
    pub approval_bps: u32,
    pub change: Option<ParamChange>,
}

impl Proposal {
    /// The proposal `terms` opens as transaction `id` of block `height`, signed first by `proposer`.
    pub fn of(id: &TxId, proposer: PublicKey, terms: &ArchivedProposalTerms, height: u64) -> Self {
        Proposal {
            id: *id,
            proposer,
            snapshot: height,
            end: height.saturating_add(terms.window_blocks.to_native()),
            quorum_bps: terms.quorum_bps.to_native(),
            approval_bps: terms.approval_bps.to_native(),
            change: terms.change.as_ref().map(ParamChange::from),
        }
    }

    /// Its set entry: amount 0 (a record is no balance), the terms packed in the asset field, the end height in
    /// the lock field.
    pub fn record(&self) -> TxOutput {
        let mut packed = [0u8; 32];
        packed[0..2].copy_from_slice(&(self.quorum_bps as u16).to_le_bytes());
        packed[2..4].copy_from_slice(&(self.approval_bps as u16).to_le_bytes());
        if let Some(change) = self.change {
            packed[4] = change.param.tag();
            packed[5..13].copy_from_slice(&change.value.to_le_bytes());
            packed[13..21].copy_from_slice(&change.effective_at.to_le_bytes());
        }
        packed[21..29].copy_from_slice(&self.snapshot.to_le_bytes());
        TxOutput {
            amount: 0,
            asset: AssetId(Hash32(packed)),
            owner: self.proposer,
            unlock_height: Some(self.end),
        }
    }

    /// The proposal a set entry records, if it is a proposal record.
    pub fn decode(outpoint: &OutPoint, entry: &TxOutput) -> Option<Proposal> {
        if outpoint.index != PROPOSAL_INDEX {
            return None;
        }
        let packed = &entry.asset.0 .0;
        let u64_at =
            |at: usize| u64::from_le_bytes(packed[at..at + 8].try_into().expect("8 bytes"));
        let change = Param::from_tag(packed[4]).map(|param| ParamChange {
            param,
            value: u64_at(5),
            effective_at: u64_at(13),
        });
        Some(Proposal {
            id: outpoint.tx,
            proposer: entry.owner,
            snapshot: u64_at(21),
            end: entry.unlock_height?,
            quorum_bps: u32::from(u16::from_le_bytes([packed[0], packed[1]])),
            approval_bps: u32::from(u16::from_le_bytes([packed[2], packed[3]])),
            change,
        })
    }

    /// Whether `yes` and `no` out of `minted` ballots pass it.
    pub fn passes(&self, yes: u128, no: u128, minted: u128) -> bool {
        let turnout = yes + no;
        let bps = u128::from(BPS);
        minted > 0
            && turnout * bps >= u128::from(self.quorum_bps) * minted
            && yes * bps > u128::from(self.approval_bps) * turnout
    }
}

/// A record holding a u128 pair in its asset field (amount 0, owned by nobody).
fn pair_record(first: u128, second: u128) -> TxOutput {
    let mut packed = [0u8; 32];
    packed[..16].copy_from_slice(&first.to_le_bytes());
    packed[16..].copy_from_slice(&second.to_le_bytes());
    TxOutput {
        amount: 0,
        asset: AssetId(Hash32(packed)),
        owner: PublicKey::default(),
        unlock_height: None,
    }
}

fn decode_pair(entry: &TxOutput) -> (u128, u128) {
    let packed = &entry.asset.0 .0;
    (
        u128::from_le_bytes(packed[..16].try_into().expect("16 bytes")),
        u128::from_le_bytes(packed[16..].try_into().expect("16 bytes")),
    )
}

/// A vote record: `weight` for or against, owned by the voter.
pub fn vote_record(proposal: &Hash32, voter: &PublicKey, weight: u64, approve: bool) -> TxOutput {
    TxOutput {
        amount: weight,
        asset: vote_asset(proposal, approve),
        owner: *voter,
        unlock_height: None,
    }
}

/// How a vote ended, as its resolution record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolution {
    pub yes: u128,
    pub no: u128,
    pub passed: bool,
}

/// A proposal and what the set says of its vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProposalState {
    pub proposal: Proposal,
    /// Ballots minted at the snapshot (None until the snapshot block ends).
    pub minted: Option<u128>,
    /// Votes cast so far, for and against.
    pub yes: u128,
    pub no: u128,
    pub resolution: Option<Resolution>,
}

/// Every proposal, its ballots and votes, as the set holds them (see the module header).
#[derive(Clone, Debug, Default)]
pub struct Governance {
    proposals: BTreeMap<Hash32, Proposal>,
    /// Ballots minted, by proposal.
    minted: FastMap<Hash32, u128>,
    /// Resolutions' (yes, no), by proposal.
    resolved: FastMap<Hash32, (u128, u128)>,
    /// Unused ballots, by ballot asset (an outpoint's place does not name its proposal; the asset does).
    ballots: FastMap<AssetId, BTreeMap<OutPoint, TxOutput>>,
    /// Vote weights cast, by vote asset.
    votes: FastMap<AssetId, u128>,
}

impl Governance {
    /// Follows a block's (or a loaded set's) net change; entries may come in any order.
    pub fn apply(&mut self, spent: &[(OutPoint, TxOutput)], created: &[(OutPoint, TxOutput)]) {
        for (outpoint, entry) in spent {
            match outpoint.index {
                BALLOT_INDEX => {
                    let ballots = self.ballots.entry(entry.asset).or_default();
                    ballots.remove(outpoint);
                    if ballots.is_empty() {
                        self.ballots.remove(&entry.asset);
                    }
                }
                VOTE_INDEX => {
                    let sum = self.votes.entry(entry.asset).or_default();
                    *sum -= u128::from(entry.amount);
                }
                _ => {}
            }
        }
        for (outpoint, entry) in created {
            match outpoint.index {
                PROPOSAL_INDEX => {
                    if let Some(proposal) = Proposal::decode(outpoint, entry) {
                        self.proposals.insert(proposal.id, proposal);
                    }
                }
                TALLY_INDEX => {
                    self.minted.insert(outpoint.tx, decode_pair(entry).0);
                }
                RESOLUTION_INDEX => {
                    self.resolved.insert(outpoint.tx, decode_pair(entry));
                }
                BALLOT_INDEX => {
                    let ballots = self.ballots.entry(entry.asset).or_default();
                    ballots.insert(*outpoint, *entry);
                }
                VOTE_INDEX => {
                    *self.votes.entry(entry.asset).or_default() += u128::from(entry.amount);
                }
                _ => {}
            }
        }
    }

    /// One proposal and its vote so far.
    pub fn get(&self, id: &Hash32) -> Option<ProposalState> {
        let proposal = *self.proposals.get(id)?;
        let yes = self.votes.get(&vote_asset(id, true)).copied().unwrap_or(0);
        let no = self.votes.get(&vote_asset(id, false)).copied().unwrap_or(0);
        let resolution = self.resolved.get(id).map(|&(yes, no)| Resolution {
            yes,
            no,
            passed: proposal.passes(yes, no, self.minted.get(id).copied().unwrap_or(0)),
        });
        Some(ProposalState {
            proposal,
            minted: self.minted.get(id).copied(),
            yes,
            no,
            resolution,
        })
    }

    /// Every proposal, by id.
    pub fn all(&self) -> impl Iterator<Item = ProposalState> + '_ {
        self.proposals.keys().filter_map(|id| self.get(id))
    }

    /// `base` with every passed change in effect at `height` (in the order they took effect; of two at one
    /// height, the later-ending vote's, then the greater id, wins).
    pub fn params_at(&self, base: &ChainParams, height: u64) -> ChainParams {
        // Read per block: the resolution record's tally decides, no vote is summed again.
        let mut changes: Vec<(u64, u64, Hash32, ParamChange)> = self
            .proposals
            .values()
            .filter_map(|p| {
                let change = p.change.filter(|c| c.effective_at <= height)?;
                let &(yes, no) = self.resolved.get(&p.id)?;
                let minted = self.minted.get(&p.id).copied().unwrap_or(0);
                p.passes(yes, no, minted)
                    .then_some((change.effective_at, p.end, p.id, change))
            })
            .collect();
        changes.sort_unstable_by_key(|&(at, end, id, _)| (at, end, id));
        let mut params = base.clone();
        for (_, _, _, change) in changes {
            match change.param {
                Param::MinFee => params.min_fee = change.value,
                Param::UnbondDelayBlocks => params.stake.unbond_delay_blocks = change.value,
            }
        }
        params
    }

    /// Whether ending block `height` needs every key's CAS holdings (a proposal's snapshot is this block).
    pub fn needs_holdings(&self, height: u64) -> bool {
        self.proposals
            .values()
            .any(|p| p.snapshot == height && !self.minted.contains_key(&p.id))
    }

    /// The records the ledger writes at the end of block `height`: the ballots of proposals whose snapshot it is
    /// (from `holdings`, each key's CAS in the set after the block; asked only when
    /// [`Governance::needs_holdings`]), and the resolutions of votes whose window it ends, with their unused
    /// ballots spent. Applied to this registry before they are returned.
    pub fn end_block(
        &mut self,
        height: u64,
        holdings: impl FnOnce() -> Vec<(PublicKey, u128)>,
    ) -> BlockRecords {
        let mut records = BlockRecords {
            spent: Vec::new(),
            created: Vec::new(),
        };
        if self.needs_holdings(height) {
            let mut holders = holdings();
            // Nobody signs for the zero key (fee pots): it holds no ballots.
            holders.retain(|(key, amount)| *amount > 0 && *key != PublicKey::default());
            holders.sort_unstable_by_key(|(key, _)| *key);
            let opened = self.proposals.values().filter(|p| p.snapshot == height);
            for proposal in opened {
                let mut minted = 0u128;
                for (holder, amount) in &holders {
                    let weight = u64::try_from(*amount).unwrap_or(u64::MAX);
                    minted += u128::from(weight);
                    records.created.push((
                        ballot_outpoint(&proposal.id, holder),
                        TxOutput {
                            amount: weight,
                            asset: ballot_asset(&proposal.id),
                            owner: *holder,
                            unlock_height: None,
                        },
                    ));
                }
                records
                    .created
                    .push((tally_outpoint(&proposal.id), pair_record(minted, 0)));
            }
        }
        let closing: Vec<Hash32> = self
            .proposals
            .values()
            .filter(|p| p.end == height && !self.resolved.contains_key(&p.id))
            .map(|p| p.id)
            .collect();
        for id in closing {
            let state = self.get(&id).expect("a known proposal");
            records
                .created
                .push((resolution_outpoint(&id), pair_record(state.yes, state.no)));
            if let Some(unused) = self.ballots.get(&ballot_asset(&id)) {
                records.spent.extend(unused.iter().map(|(o, e)| (*o, *e)));
            }
        }
        self.apply(&records.spent, &records.created);
        records
    }
}

/// Every key's CAS in `entries` (the reference ledger's way; the shards keep an owner index instead).
pub fn cas_holdings<'a>(
    entries: impl Iterator<Item = (&'a OutPoint, &'a TxOutput)>,
) -> Vec<(PublicKey, u128)> {
    let mut held: FastMap<PublicKey, u128> = FastMap::default();
    for (_, entry) in entries {
        if entry.asset == AssetId::CAS && entry.amount > 0 {
            *held.entry(entry.owner).or_default() += u128::from(entry.amount);
        }
    }
    held.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proposal(change: Option<ParamChange>) -> Proposal {
        Proposal {
            id: Hash32([7; 32]),
            proposer: PublicKey([9; 32]),
            snapshot: 12,
            end: 30,
            quorum_bps: 2_000,
            approval_bps: 5_000,
            change,
        }
    }

    #[test]
    fn a_proposal_record_decodes_to_itself() {
        for change in [
            None,
            Some(ParamChange {
                param: Param::UnbondDelayBlocks,
                value: u64::MAX,
                effective_at: 31,
            }),
        ] {
            let p = proposal(change);
            assert_eq!(
                Proposal::decode(&proposal_outpoint(&p.id), &p.record()),
                Some(p)
            );
        }
        let p = proposal(None);
        assert_eq!(Proposal::decode(&tally_outpoint(&p.id), &p.record()), None);
    }

    #[test]
    fn passing_needs_the_quorum_and_more_than_the_approval_ratio() {
        let p = proposal(None);
        assert!(p.passes(11, 9, 100));
        assert!(!p.passes(10, 9, 100), "turnout 19 of 100 is under 20%");
        assert!(!p.passes(10, 10, 100), "yes must exceed half");
        assert!(!p.passes(0, 0, 0), "no ballots, no resolution");
    }

    #[test]
    fn the_registry_rebuilds_from_the_set_in_any_order() {
        let p = proposal(None);
        let holder = PublicKey([3; 32]);
        let mut live = Governance::default();
        live.apply(&[], &[(proposal_outpoint(&p.id), p.record())]);
        let minted = live.end_block(12, || vec![(holder, 40), (PublicKey::default(), 5)]);
        assert_eq!(
            minted.created.len(),
            2,
            "one ballot (none for the zero key) and the tally"
        );
        let ballot = minted.created[0];
        let vote = (
            vote_outpoint(&p.id, &holder),
            vote_record(&p.id, &holder, 40, true),
        );
        live.apply(&[ballot], &[vote]);
        let closed = live.end_block(30, Vec::new);
        assert_eq!(closed.created.len(), 1);
        let state = live.get(&p.id).unwrap();
        assert_eq!(
            state.resolution.map(|r| (r.yes, r.passed)),
            Some((40, true))
        );
        let set = [
            closed.created[0],
            vote,
            minted.created[1],
            (proposal_outpoint(&p.id), p.record()),
        ];
        let mut rebuilt = Governance::default();
        rebuilt.apply(&[], &set);
        assert_eq!(rebuilt.get(&p.id), Some(state));
    }
}
