//! Stake and POS candidacy on the ledger, and the election they feed: what the DPOS committee is made from.
//!
//! A candidacy is a record in the UTXO set ([`candidacy_outpoint`]): the node key, and the address its node listens
//! on. It is declared once, by a [`TxKind::Candidacy`](crate::tx::TxKind::Candidacy) signed by the node key, and
//! never spent, like a client id claim. Stake is CAS converted into the candidate's own asset
//! ([`AssetId::stake_of`]) by a bond, and back into CAS, locked for the unbonding delay, by an unbond: so a stake
//! output is an ordinary set entry, owned by its staker, that names whom it backs, and per-asset conservation keeps
//! every transfer from creating or freeing stake. Because both live in the set, they travel with its snapshots and
//! its commitment covers them: [`StakeRegistry`] is a pure function of the set, kept up to date from each block's
//! spent and created entries and rebuilt from the set on a restart. [`StakeRegistry::elect`] picks the committee;
//! at each election height of the epoch schedule ([`elects_at`]) the ledger records the pick in the set
//! ([`election_records`]), so the next committee is a ledger fact before it serves. Validator rewards
//! ([`validator_payouts`]) split each block's fees and reward between the committee and the POS nodes.
//!
//! Punishment is a ledger fact too. Each block's issuance names the committee members whose votes are missing from
//! the certificate its consensus block carries (quorum-signed, so the evidence is the committee's own), and the
//! ledger keeps a [`Conduct`] record per member that has one: its absences in a row, its blacklist (no rewards until
//! a height), and eviction (no election picks it again, so the next candidate by stake replaces it at the next
//! hand-over). [`StakeRegistry::end_block`] writes both kinds of record a block adds. A member proven to vote for
//! two blocks in one round ([`crate::evidence`]) is out at once: no rewards, no election, no POS node. No IO here.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::crypto::PublicKey;
use crate::evidence::decode_evidence;
use crate::fasthash::FastMap;
use crate::id::{domain, AssetId, Hash32};
use crate::rules::{CANDIDACY_INDEX, CONDUCT_INDEX, ELECTION_INDEX};
use crate::tx::{OutPoint, StakeParams, TxOutput};

/// The encoded address of a candidacy: empty (none announced), an IPv4 or an IPv6 socket address.
pub const ADDRESS_BYTES: [usize; 3] = [0, 4 + 2, 16 + 2];

/// A candidacy address's wire form: the IP's octets, then the port big-endian; empty for none.
pub fn encode_address(address: Option<SocketAddr>) -> Vec<u8> {
    let Some(address) = address else {
        return Vec::new();
    };
    let mut bytes = match address.ip() {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    bytes.extend_from_slice(&address.port().to_be_bytes());
    bytes
}

/// Why bytes are not a candidacy address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a candidacy address has 0, 6 or 18 bytes, got {len}")]
pub struct AddressError {
    pub len: usize,
}

/// Reads [`encode_address`]'s form.
pub fn decode_address(bytes: &[u8]) -> Result<Option<SocketAddr>, AddressError> {
    let port = |tail: &[u8]| u16::from_be_bytes([tail[0], tail[1]]);
    match bytes.len() {
        0 => Ok(None),
        6 => {
            let ip: [u8; 4] = bytes[..4].try_into().expect("four bytes");
            Ok(Some(SocketAddr::new(
                Ipv4Addr::from(ip).into(),
                port(&bytes[4..]),
            )))
        }
        18 => {
            let ip: [u8; 16] = bytes[..16].try_into().expect("sixteen bytes");
            Ok(Some(SocketAddr::new(
                Ipv6Addr::from(ip).into(),
                port(&bytes[16..]),
            )))
        }
        len => Err(AddressError { len }),
    }
}

/// Where the set holds `node`'s candidacy record.
pub fn candidacy_outpoint(node: &PublicKey) -> OutPoint {
    OutPoint {
        tx: Hash32::of(domain::CANDIDACY, &node.0),
        index: CANDIDACY_INDEX,
    }
}

/// The set entry of `node`'s candidacy: a record, not a coin (amount 0, at a record index). It reuses the output
/// layout: the owner is the node key and the asset field carries the address ([`pack_address`]).
pub fn candidacy_record(node: &PublicKey, address: &[u8]) -> TxOutput {
    TxOutput {
        amount: 0,
        asset: pack_address(address),
        owner: *node,
        unlock_height: None,
    }
}

/// An encoded address ([`encode_address`]) in a record's 32-byte asset field: its length, then its bytes.
fn pack_address(address: &[u8]) -> AssetId {
    debug_assert!(ADDRESS_BYTES.contains(&address.len()));
    let mut packed = [0u8; 32];
    packed[0] = address.len() as u8;
    packed[1..1 + address.len()].copy_from_slice(address);
    AssetId(Hash32(packed))
}

/// The address [`pack_address`] packed (None when none was announced or the bytes are not one).
fn unpack_address(asset: &AssetId) -> Option<SocketAddr> {
    let packed = asset.0 .0;
    let len = usize::from(packed[0]).min(packed.len() - 1);
    decode_address(&packed[1..1 + len]).ok().flatten()
}

/// Where the set holds member `position` (0-based, in election order) of the committee elected for `epoch`.
pub fn election_outpoint(epoch: u64, position: u32) -> OutPoint {
    let mut bytes = [0u8; 12];
    bytes[..8].copy_from_slice(&epoch.to_le_bytes());
    bytes[8..].copy_from_slice(&position.to_le_bytes());
    OutPoint {
        tx: Hash32::of(domain::ELECTION, &bytes),
        index: ELECTION_INDEX,
    }
}

/// The records an election after block `height` adds to the set, if `height` is an election height
/// ([`elects_at`]): one per elected member, in election order ([`StakeRegistry::elect`] on `registry`, the state
/// after the block). So the next committee is a ledger fact: the same on every node, covered by the set's
/// commitment and its snapshots, readable until it serves ([`elected_committee`]). A record holds no CAS (amount
/// 0); the owner is the member's key, the asset field its address, and the unlock height field its stake.
pub fn election_records(
    params: &StakeParams,
    height: u64,
    registry: &StakeRegistry,
) -> Vec<(OutPoint, TxOutput)> {
    let Some(epoch) = elects_at(params, height) else {
        return Vec::new();
    };
    registry
        .elect(params)
        .into_iter()
        .enumerate()
        .map(|(position, member)| {
            let address = encode_address(member.address);
            let record = TxOutput {
                amount: 0,
                asset: pack_address(&address),
                owner: member.key,
                unlock_height: Some(member.stake),
            };
            (election_outpoint(epoch, position as u32), record)
        })
        .collect()
}

/// The committee elected for `epoch`, read from the set through `get` (positions in order until one is missing);
/// None when no election for it is recorded.
pub fn elected_committee(
    epoch: u64,
    get: impl Fn(&OutPoint) -> Option<TxOutput>,
) -> Option<Vec<Candidate>> {
    let mut members = Vec::new();
    for position in 0.. {
        let Some(record) = get(&election_outpoint(epoch, position)) else {
            break;
        };
        members.push(Candidate {
            key: record.owner,
            address: unpack_address(&record.asset),
            stake: record.unlock_height.unwrap_or(0),
        });
    }
    (!members.is_empty()).then_some(members)
}

/// A candidate's record of conduct as a committee member (see the module header). The default is a clean record,
/// which the set does not hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conduct {
    /// Certificates in a row its vote was missing from; one it is in resets the count.
    pub absences: u32,
    /// Blacklists in the current run: each started at most `blacklist_blocks` after the previous one ended.
    pub blacklists: u32,
    /// The last height its latest blacklist covers (0: never blacklisted).
    pub blacklisted_until: u64,
    /// No election picks it again, and it is no POS node.
    pub evicted: bool,
}

impl Conduct {
    /// Whether rewards of block `height` pass it by (heights start at 1, so a record never blacklisted, with 0 here,
    /// passes nothing by).
    pub fn blacklisted_at(&self, height: u64) -> bool {
        height <= self.blacklisted_until
    }

    /// The record after block `height`, whose certificate the member's vote is `absent` from or in. Reaching the
    /// absence limit blacklists it for `blacklist_blocks` and starts the count again; the `evict_after`-th blacklist
    /// of a run evicts it.
    fn after(self, params: &StakeParams, height: u64, absent: bool) -> Conduct {
        if !absent {
            return Conduct {
                absences: 0,
                ..self
            };
        }
        let absences = self.absences.saturating_add(1);
        if absences < params.absence_limit {
            return Conduct { absences, ..self };
        }
        let run_goes_on = self.blacklisted_until > 0
            && height
                <= self
                    .blacklisted_until
                    .saturating_add(params.blacklist_blocks);
        let blacklists = if run_goes_on {
            self.blacklists.saturating_add(1)
        } else {
            1
        };
        Conduct {
            absences: 0,
            blacklists,
            blacklisted_until: height.saturating_add(params.blacklist_blocks.max(1)),
            evicted: self.evicted || (params.evict_after > 0 && blacklists >= params.evict_after),
        }
    }
}

/// Where the set holds `node`'s conduct record as written after block `written`. Each change writes a new record
/// at a new place (and spends the old one), so an outpoint is created once, as every store of the set expects.
pub fn conduct_outpoint(node: &PublicKey, written: u64) -> OutPoint {
    let mut bytes = [0u8; 40];
    bytes[..32].copy_from_slice(&node.0);
    bytes[32..].copy_from_slice(&written.to_le_bytes());
    OutPoint {
        tx: Hash32::of(domain::CONDUCT, &bytes),
        index: CONDUCT_INDEX,
    }
}

/// The set entry of `node`'s conduct written after block `written`: a record (amount 0) owned by the node key, the
/// counts, the eviction and `written` in the asset field (absences and blacklists as u32 little-endian, 1 for
/// evicted, then `written` as u64 little-endian), the blacklist's end as the unlock height.
pub fn conduct_record(node: &PublicKey, conduct: &Conduct, written: u64) -> TxOutput {
    let mut packed = [0u8; 32];
    packed[..4].copy_from_slice(&conduct.absences.to_le_bytes());
    packed[4..8].copy_from_slice(&conduct.blacklists.to_le_bytes());
    packed[8] = u8::from(conduct.evicted);
    packed[9..17].copy_from_slice(&written.to_le_bytes());
    TxOutput {
        amount: 0,
        asset: AssetId(Hash32(packed)),
        owner: *node,
        unlock_height: (conduct.blacklisted_until > 0).then_some(conduct.blacklisted_until),
    }
}

/// A conduct record of the set: whose, what it says, and after which block it was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConductRecord {
    pub node: PublicKey,
    pub conduct: Conduct,
    pub written: u64,
}

/// The conduct a set entry records, if it is a conduct record (its outpoint is the place of the owner's record
/// written when it says).
pub fn decode_conduct(outpoint: &OutPoint, entry: &TxOutput) -> Option<ConductRecord> {
    if outpoint.index != CONDUCT_INDEX {
        return None;
    }
    let packed = entry.asset.0 .0;
    let written = u64::from_le_bytes(packed[9..17].try_into().expect("eight bytes"));
    if *outpoint != conduct_outpoint(&entry.owner, written) {
        return None;
    }
    let word = |at: usize| u32::from_le_bytes(packed[at..at + 4].try_into().expect("four bytes"));
    Some(ConductRecord {
        node: entry.owner,
        conduct: Conduct {
            absences: word(0),
            blacklists: word(4),
            blacklisted_until: entry.unlock_height.unwrap_or(0),
            evicted: packed[8] != 0,
        },
        written,
    })
}

/// The records the ledger itself writes at the end of a block ([`StakeRegistry::end_block`]): set entries it
/// replaces and ones it adds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockRecords {
    pub spent: Vec<(OutPoint, TxOutput)>,
    pub created: Vec<(OutPoint, TxOutput)>,
}

/// The candidate a set entry declares, if it is a candidacy record (its outpoint is the owner's record place).
pub fn decode_candidacy(outpoint: &OutPoint, entry: &TxOutput) -> Option<Candidate> {
    if outpoint.index != CANDIDACY_INDEX || *outpoint != candidacy_outpoint(&entry.owner) {
        return None;
    }
    Some(Candidate {
        key: entry.owner,
        address: unpack_address(&entry.asset),
        stake: 0,
    })
}

/// A POS candidate: its node key, where it listens, and the stake bonded to it (its own and its delegators').
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub key: PublicKey,
    pub address: Option<SocketAddr>,
    pub stake: u64,
}

/// Every candidate and its stake, as the set holds them (see the module header).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StakeRegistry {
    /// By node key: the order elections break ties in.
    candidates: BTreeMap<PublicKey, Candidate>,
    /// Each candidate's stake asset, back to its key.
    by_asset: FastMap<AssetId, PublicKey>,
    /// The conduct records the set holds, by node key: what each says and when it was written.
    conduct: BTreeMap<PublicKey, (Conduct, u64)>,
    /// Members proven to have equivocated ([`crate::evidence`]), with the height that recorded it.
    equivocated: BTreeMap<PublicKey, u64>,
}

impl StakeRegistry {
    /// The registry of a whole set (a genesis, a snapshot, a restart).
    pub fn from_entries(entries: &[(OutPoint, TxOutput)]) -> StakeRegistry {
        let mut registry = StakeRegistry::default();
        registry.apply(&[], entries);
        registry
    }

    /// Follows one block's net change to the set. The rules let a stake asset exist only for a declared candidate,
    /// so every stake entry spent or created here names one (declared earlier or in `created`).
    pub fn apply(&mut self, spent: &[(OutPoint, TxOutput)], created: &[(OutPoint, TxOutput)]) {
        for (outpoint, entry) in spent {
            if let Some(record) = decode_conduct(outpoint, entry) {
                self.conduct.remove(&record.node);
            }
        }
        for (outpoint, entry) in created {
            if let Some(record) = decode_conduct(outpoint, entry) {
                self.conduct
                    .insert(record.node, (record.conduct, record.written));
            }
            if let Some((member, height)) = decode_evidence(outpoint, entry) {
                self.equivocated.insert(member, height);
            }
            if let Some(candidate) = decode_candidacy(outpoint, entry) {
                self.by_asset
                    .insert(AssetId::stake_of(&candidate.key), candidate.key);
                self.candidates.insert(candidate.key, candidate);
            }
        }
        if self.by_asset.is_empty() {
            return;
        }
        // Spent first: a block may spend a stake output and create another for the same candidate.
        for (entries, bonded) in [(spent, false), (created, true)] {
            for (_, coin) in entries {
                let Some(key) = self.by_asset.get(&coin.asset) else {
                    continue;
                };
                let candidate = self
                    .candidates
                    .get_mut(key)
                    .expect("mapped with its record");
                candidate.stake = if bonded {
                    candidate.stake.checked_add(coin.amount)
                } else {
                    candidate.stake.checked_sub(coin.amount)
                }
                .expect(
                    "a candidate's stake is the sum of its stake outputs, within the CAS supply",
                );
            }
        }
    }

    pub fn candidate(&self, key: &PublicKey) -> Option<&Candidate> {
        self.candidates.get(key)
    }

    /// Every candidate, by node key.
    pub fn candidates(&self) -> impl Iterator<Item = &Candidate> {
        self.candidates.values()
    }

    /// The POS nodes: candidates whose stake reaches the chain's threshold and that are not evicted (by their
    /// conduct or by a proven equivocation), by node key.
    pub fn pos_nodes<'a>(&'a self, params: &'a StakeParams) -> impl Iterator<Item = &'a Candidate> {
        self.candidates.values().filter(|c| {
            c.stake > 0
                && c.stake >= params.candidacy_stake_min
                && !self.conduct(&c.key).evicted
                && !self.equivocated.contains_key(&c.key)
        })
    }

    /// The height whose block recorded `key`'s equivocation, if one is.
    pub fn equivocated_at(&self, key: &PublicKey) -> Option<u64> {
        self.equivocated.get(key).copied()
    }

    /// `key`'s conduct record (a clean one when the set holds none).
    pub fn conduct(&self, key: &PublicKey) -> Conduct {
        self.conduct
            .get(key)
            .map_or_else(Conduct::default, |(c, _)| *c)
    }

    /// Every conduct record the set holds, by node key.
    pub fn conducts(&self) -> impl Iterator<Item = (&PublicKey, &Conduct)> {
        self.conduct
            .iter()
            .map(|(key, (conduct, _))| (key, conduct))
    }

    /// Whether `key` takes its share of block `height`'s validator rewards: not while blacklisted, and never again
    /// once proven to equivocate.
    pub fn rewarded(&self, key: &PublicKey, height: u64) -> bool {
        !self.conduct(key).blacklisted_at(height) && !self.equivocated.contains_key(key)
    }

    /// What the ledger writes after block `height`, beyond its transactions, and takes into this registry: the
    /// conduct records the block's `absent` list changes (None, or no absence limit: none; only candidates count),
    /// then the election records when `height` is an election height ([`election_records`], which leaves out the
    /// evicted, this block's included). Every node writes the same from the same set and block.
    pub fn end_block(
        &mut self,
        params: &StakeParams,
        height: u64,
        absent: Option<&[PublicKey]>,
    ) -> BlockRecords {
        let mut records = BlockRecords::default();
        if let (Some(absent), true) = (absent, params.absence_limit > 0) {
            let absent: BTreeSet<PublicKey> = absent
                .iter()
                .filter(|key| self.candidates.contains_key(key))
                .copied()
                .collect();
            let counting: BTreeSet<PublicKey> = self
                .conduct
                .iter()
                .filter(|(_, (conduct, _))| conduct.absences > 0)
                .map(|(key, _)| *key)
                .chain(absent.iter().copied())
                .collect();
            for key in counting {
                let held = self.conduct.get(&key).copied();
                let before = held.map_or_else(Conduct::default, |(c, _)| c);
                let after = before.after(params, height, absent.contains(&key));
                if after == before {
                    continue;
                }
                if let Some((before, written)) = held {
                    records.spent.push((
                        conduct_outpoint(&key, written),
                        conduct_record(&key, &before, written),
                    ));
                }
                if after == Conduct::default() {
                    self.conduct.remove(&key);
                } else {
                    records.created.push((
                        conduct_outpoint(&key, height),
                        conduct_record(&key, &after, height),
                    ));
                    self.conduct.insert(key, (after, height));
                }
            }
        }
        records
            .created
            .extend(election_records(params, height, self));
        records
    }

    /// The committee an election at this state picks: the `committee_size` POS nodes with the most stake, ties to
    /// the smaller node key, listed in that order. Every node computes the same from the same set.
    pub fn elect(&self, params: &StakeParams) -> Vec<Candidate> {
        let mut ranked: Vec<&Candidate> = self.pos_nodes(params).collect();
        ranked.sort_by(|a, b| b.stake.cmp(&a.stake).then(a.key.cmp(&b.key)));
        ranked
            .into_iter()
            .take(params.committee_size as usize)
            .cloned()
            .collect()
    }
}

/// The shortest epoch a genesis may set (besides 0, no elections): half an epoch of notice before a committee
/// serves leaves at least this many blocks' half for its hand-over to be certified and its members to connect.
pub const EPOCH_BLOCKS_MIN: u64 = 8;

/// The epoch schedule (`epoch_blocks` = E > 0): epoch e covers ledger heights e·E + 1 ..= (e + 1)·E, and its
/// committee is elected from the set after height [`election_height`] = e·E − E/2, the middle of the epoch before,
/// so every node knows it E/2 blocks before it serves. The genesis committee serves epoch 0 (and every epoch when
/// E = 0).
pub fn epoch_of(params: &StakeParams, height: u64) -> u64 {
    match params.epoch_blocks {
        0 => 0,
        blocks => height.saturating_sub(1) / blocks,
    }
}

/// The first ledger height of `epoch` (see [`epoch_of`]).
pub fn first_height(params: &StakeParams, epoch: u64) -> u64 {
    epoch.saturating_mul(params.epoch_blocks).saturating_add(1)
}

/// The height after which the committee of `epoch` is elected; None for epoch 0 and when there are no elections.
pub fn election_height(params: &StakeParams, epoch: u64) -> Option<u64> {
    let blocks = params.epoch_blocks;
    (blocks > 0 && epoch > 0).then(|| epoch * blocks - blocks / 2)
}

/// The epoch whose committee an election after `height` picks, if `height` is an election height.
pub fn elects_at(params: &StakeParams, height: u64) -> Option<u64> {
    let blocks = params.epoch_blocks;
    if blocks == 0 {
        return None;
    }
    let epoch = (height + blocks / 2) / blocks;
    (election_height(params, epoch) == Some(height)).then_some(epoch)
}

/// Payees one block's validator rewards go to at most: with the witness rewards they fit one issuance
/// ([`crate::codec::ISSUANCE_OUTPUTS_MAX`]).
pub const VALIDATOR_PAYEES_MAX: usize = 32;

/// How block `h`'s issuance pays `pot` (block `h - 1`'s fees plus the block reward) to the validators, every node
/// the same: the committee's share (`committee_share_percent`) to the members whose votes are in the certificate
/// of block `h - 1` (`voters`, with their committee stake), by stake; the rest to the POS nodes (`pos`, with their
/// stake), by stake. A share with nobody to take it goes to the other; with neither, the whole pot goes to the
/// block's `proposer`, so nothing is burned. Shares are floored; the remainder of each goes to its first payee. At
/// most [`VALIDATOR_PAYEES_MAX`] payees: the voters with the most stake first, then the POS nodes with the most. One
/// amount per key (a voter that is also a POS node gets one output), in key order, none zero. Keys are distinct
/// within `voters` (a certificate's signers) and within `pos` (the registry's candidates).
pub fn validator_payouts(
    params: &StakeParams,
    pot: u64,
    voters: &[(PublicKey, u64)],
    pos: &[(PublicKey, u64)],
    proposer: PublicKey,
) -> Vec<(PublicKey, u64)> {
    let by_stake = |list: &[(PublicKey, u64)]| {
        let mut sorted: Vec<(PublicKey, u64)> = list
            .iter()
            .copied()
            .filter(|(_, stake)| *stake > 0)
            .collect();
        sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        sorted
    };
    let mut voters = by_stake(voters);
    voters.truncate(VALIDATOR_PAYEES_MAX);
    let mut pos = by_stake(pos);
    // POS nodes fill the payees the voters leave, the ones that are voters too counting once.
    let mut room = VALIDATOR_PAYEES_MAX - voters.len();
    pos.retain(|(key, _)| {
        let voter = voters.iter().any(|(v, _)| v == key);
        let kept = voter || room > 0;
        if kept && !voter {
            room -= 1;
        }
        kept
    });
    let committee_share =
        (u128::from(pot) * u128::from(params.committee_share_percent.min(100)) / 100) as u64;
    let (committee_share, pos_share) = match (voters.is_empty(), pos.is_empty()) {
        (false, false) => (committee_share, pot - committee_share),
        (false, true) => (pot, 0),
        (true, false) => (0, pot),
        (true, true) => {
            return if pot > 0 {
                vec![(proposer, pot)]
            } else {
                Vec::new()
            }
        }
    };
    let mut paid: BTreeMap<PublicKey, u64> = BTreeMap::new();
    for (share, payees) in [(committee_share, &voters), (pos_share, &pos)] {
        split_by_stake(share, payees, &mut paid);
    }
    paid.into_iter().filter(|(_, amount)| *amount > 0).collect()
}

/// Splits `share` over `payees` in proportion to their stake (floored), the remainder to the first.
fn split_by_stake(share: u64, payees: &[(PublicKey, u64)], paid: &mut BTreeMap<PublicKey, u64>) {
    let total: u128 = payees.iter().map(|(_, stake)| u128::from(*stake)).sum();
    if share == 0 || total == 0 {
        return;
    }
    let mut given = 0u64;
    for (key, stake) in payees {
        let amount = (u128::from(share) * u128::from(*stake) / total) as u64;
        given += amount;
        *paid.entry(*key).or_default() += amount;
    }
    *paid.entry(payees[0].0).or_default() += share - given;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> PublicKey {
        PublicKey([seed; 32])
    }

    fn params(committee_size: u32, candidacy_stake_min: u64) -> StakeParams {
        StakeParams {
            epoch_blocks: 10,
            committee_size,
            candidacy_stake_min,
            unbond_delay_blocks: 5,
            block_reward: 0,
            committee_share_percent: 70,
            absence_limit: 3,
            blacklist_blocks: 10,
            evict_after: 2,
        }
    }

    fn stake(candidate: u8, owner: u8, amount: u64, index: u32) -> (OutPoint, TxOutput) {
        (
            OutPoint {
                tx: Hash32([owner; 32]),
                index,
            },
            TxOutput {
                amount,
                asset: AssetId::stake_of(&key(candidate)),
                owner: key(owner),
                unlock_height: None,
            },
        )
    }

    fn declare(candidate: u8, address: Option<SocketAddr>) -> (OutPoint, TxOutput) {
        let node = key(candidate);
        (
            candidacy_outpoint(&node),
            candidacy_record(&node, &encode_address(address)),
        )
    }

    #[test]
    fn addresses_round_trip_and_bad_lengths_are_refused() {
        for address in [
            None,
            Some("10.1.2.3:9000".parse().unwrap()),
            Some("[2001:db8::7]:65535".parse().unwrap()),
        ] {
            let bytes = encode_address(address);
            assert!(ADDRESS_BYTES.contains(&bytes.len()));
            assert_eq!(decode_address(&bytes), Ok(address));
            let (outpoint, entry) = declare(3, address);
            assert_eq!(
                decode_candidacy(&outpoint, &entry).unwrap().address,
                address
            );
        }
        assert_eq!(decode_address(&[1, 2, 3]), Err(AddressError { len: 3 }));
    }

    #[test]
    fn a_record_elsewhere_is_not_a_candidacy() {
        let (outpoint, entry) = declare(3, None);
        let moved = OutPoint {
            tx: Hash32([9; 32]),
            ..outpoint
        };
        assert!(decode_candidacy(&moved, &entry).is_none());
        let other_owner = TxOutput {
            owner: key(4),
            ..entry
        };
        assert!(decode_candidacy(&outpoint, &other_owner).is_none());
    }

    #[test]
    fn stake_follows_the_set_and_a_rebuild_agrees() {
        let mut registry = StakeRegistry::default();
        // Block 1: two candidacies with self-bonds; a delegation to candidate 2.
        let block1 = vec![
            declare(1, Some("10.0.0.1:1".parse().unwrap())),
            stake(1, 1, 500, 0),
            declare(2, None),
            stake(2, 2, 300, 0),
            stake(2, 7, 400, 1),
        ];
        registry.apply(&[], &block1);
        assert_eq!(registry.candidate(&key(1)).unwrap().stake, 500);
        assert_eq!(registry.candidate(&key(2)).unwrap().stake, 700);
        // Block 2: the delegator unbonds 150 of its 400 (spends it, keeps 250 as stake).
        let block2_spent = vec![block1[4]];
        let block2_created = vec![stake(2, 7, 250, 2)];
        registry.apply(&block2_spent, &block2_created);
        assert_eq!(registry.candidate(&key(2)).unwrap().stake, 550);
        // The set after both blocks gives the same registry when read whole.
        let set = vec![
            block1[0],
            block1[1],
            block1[2],
            block1[3],
            block2_created[0],
        ];
        assert_eq!(StakeRegistry::from_entries(&set), registry);
    }

    #[test]
    fn the_schedule_elects_each_committee_half_an_epoch_ahead() {
        let mut p = params(4, 1);
        p.epoch_blocks = 10;
        assert_eq!(
            (epoch_of(&p, 1), epoch_of(&p, 10), epoch_of(&p, 11)),
            (0, 0, 1)
        );
        assert_eq!(
            (
                first_height(&p, 0),
                first_height(&p, 1),
                first_height(&p, 3)
            ),
            (1, 11, 31)
        );
        assert_eq!(election_height(&p, 0), None);
        assert_eq!(election_height(&p, 1), Some(5));
        assert_eq!(election_height(&p, 2), Some(15));
        let elections: Vec<(u64, u64)> = (0..40)
            .filter_map(|h| elects_at(&p, h).map(|e| (h, e)))
            .collect();
        assert_eq!(elections, vec![(5, 1), (15, 2), (25, 3), (35, 4)]);
        for (height, epoch) in elections {
            assert!(height < first_height(&p, epoch) && epoch_of(&p, height) == epoch - 1);
        }
        // No elections: the genesis committee serves every height.
        p.epoch_blocks = 0;
        assert_eq!(epoch_of(&p, 1_000_000), 0);
        assert!((0..100).all(|h| elects_at(&p, h).is_none()));
    }

    #[test]
    fn an_election_is_recorded_at_its_height_and_read_back() {
        let mut p = params(2, 1);
        p.epoch_blocks = 10;
        let registry = StakeRegistry::from_entries(&[
            declare(1, Some("10.0.0.1:9000".parse().unwrap())),
            stake(1, 1, 300, 0),
            declare(2, None),
            stake(2, 2, 500, 0),
            declare(3, None),
            stake(3, 3, 100, 0),
        ]);
        assert!(election_records(&p, 14, &registry).is_empty());
        let records = election_records(&p, 15, &registry);
        assert_eq!(records.len(), 2);
        assert!(records
            .iter()
            .all(|(o, r)| crate::rules::is_record(o) && r.amount == 0));
        let set: std::collections::HashMap<OutPoint, TxOutput> = records.into_iter().collect();
        let elected = elected_committee(2, |o| set.get(o).copied()).unwrap();
        assert_eq!(elected, registry.elect(&p));
        assert_eq!(elected[1].address, Some("10.0.0.1:9000".parse().unwrap()));
        assert!(elected_committee(3, |o| set.get(o).copied()).is_none());
    }

    #[test]
    fn payouts_split_70_30_by_stake_and_pay_every_unit() {
        let p = params(4, 1);
        // 1,000 split: 700 to voters 1 (stake 3) and 2 (stake 1); 300 to POS nodes 2 (stake 200) and 3 (stake 100).
        let payouts = validator_payouts(
            &p,
            1_000,
            &[(key(1), 3), (key(2), 1)],
            &[(key(3), 100), (key(2), 200)],
            key(9),
        );
        assert_eq!(
            payouts,
            vec![(key(1), 525), (key(2), 175 + 200), (key(3), 100)]
        );
        // Floors leave a remainder; it goes to the first payee of its share, and the total is exact.
        let payouts = validator_payouts(
            &p,
            10,
            &[(key(1), 1), (key(2), 1), (key(3), 1)],
            &[(key(4), 1)],
            key(9),
        );
        assert_eq!(payouts.iter().map(|(_, a)| a).sum::<u64>(), 10);
        assert_eq!(
            payouts,
            vec![(key(1), 3), (key(2), 2), (key(3), 2), (key(4), 3)]
        );
        // Nobody to take one share: the other takes the whole; nobody at all: the proposer.
        assert_eq!(
            validator_payouts(&p, 10, &[], &[(key(4), 5)], key(9)),
            vec![(key(4), 10)]
        );
        assert_eq!(
            validator_payouts(&p, 10, &[(key(1), 5)], &[], key(9)),
            vec![(key(1), 10)]
        );
        assert_eq!(
            validator_payouts(&p, 10, &[], &[], key(9)),
            vec![(key(9), 10)]
        );
        assert!(validator_payouts(&p, 0, &[(key(1), 5)], &[], key(9)).is_empty());
    }

    #[test]
    fn payouts_are_bounded_and_keep_the_largest_stakes() {
        let p = params(4, 1);
        let voters: Vec<(PublicKey, u64)> = (1..=40).map(|i| (key(i), u64::from(i))).collect();
        let payouts = validator_payouts(&p, 1_000_000, &voters, &[(key(200), 1)], key(9));
        assert_eq!(payouts.len(), VALIDATOR_PAYEES_MAX);
        // The 32 voters with the most stake (9..=40) take the committee's share; no room is left for POS nodes, so
        // the voters take the whole pot.
        assert!(payouts.iter().all(|(k, _)| k.0[0] >= 9 && k.0[0] <= 40));
        assert_eq!(payouts.iter().map(|(_, a)| a).sum::<u64>(), 1_000_000);
    }

    #[test]
    fn election_takes_the_most_stake_and_breaks_ties_by_key() {
        let mut set = Vec::new();
        for (candidate, amount) in [(1, 100), (2, 900), (3, 500), (4, 500), (5, 40), (6, 0)] {
            set.push(declare(candidate, None));
            if amount > 0 {
                set.push(stake(candidate, candidate, amount, 0));
            }
        }
        let registry = StakeRegistry::from_entries(&set);
        let elected: Vec<(u8, u64)> = registry
            .elect(&params(4, 50))
            .iter()
            .map(|c| (c.key.0[0], c.stake))
            .collect();
        // 5 is under the threshold and 6 has no stake; 3 and 4 tie and the smaller key goes first.
        assert_eq!(elected, vec![(2, 900), (3, 500), (4, 500), (1, 100)]);
        assert_eq!(registry.elect(&params(2, 50)).len(), 2);
        assert_eq!(registry.pos_nodes(&params(4, 50)).count(), 4);
    }

    /// Runs `end_block` over heights `from..` with the given absent lists, applying its records to `set`, and checks
    /// each step against a rebuild from the set.
    fn run_blocks(
        registry: &mut StakeRegistry,
        set: &mut BTreeMap<OutPoint, TxOutput>,
        p: &StakeParams,
        from: u64,
        absent: &[Option<Vec<PublicKey>>],
    ) {
        for (offset, absent) in absent.iter().enumerate() {
            let records = registry.end_block(p, from + offset as u64, absent.as_deref());
            for (outpoint, record) in &records.spent {
                assert_eq!(set.remove(outpoint).as_ref(), Some(record));
            }
            for (outpoint, record) in records.created {
                assert!(set.insert(outpoint, record).is_none(), "created once");
            }
            let entries: Vec<_> = set.iter().map(|(o, c)| (*o, *c)).collect();
            assert_eq!(&StakeRegistry::from_entries(&entries), registry);
        }
    }

    #[test]
    fn absences_in_a_row_blacklist_and_a_second_blacklist_evicts() {
        let mut p = params(2, 1);
        p.epoch_blocks = 0;
        let mut set: BTreeMap<OutPoint, TxOutput> = [
            declare(1, None),
            stake(1, 1, 300, 0),
            declare(2, None),
            stake(2, 2, 200, 0),
            declare(3, None),
            stake(3, 3, 100, 0),
        ]
        .into_iter()
        .collect();
        let entries: Vec<_> = set.iter().map(|(o, c)| (*o, *c)).collect();
        let mut registry = StakeRegistry::from_entries(&entries);
        let one = || Some(vec![key(1)]);
        // Absent twice, then present: the count starts again and no record is left.
        run_blocks(
            &mut registry,
            &mut set,
            &p,
            1,
            &[one(), one(), Some(vec![])],
        );
        assert_eq!(registry.conduct(&key(1)), Conduct::default());
        assert!(registry.conducts().next().is_none());
        // A certificate that is not the committee's (None) neither counts nor resets; a stranger's key is ignored.
        run_blocks(
            &mut registry,
            &mut set,
            &p,
            4,
            &[one(), None, Some(vec![key(9), key(1)])],
        );
        assert_eq!(registry.conduct(&key(1)).absences, 2);
        assert!(registry.conducts().all(|(k, _)| *k == key(1)));
        // The third absence in a row (the limit), at block 7, blacklists it for 10 blocks: no rewards at 8..=17.
        run_blocks(&mut registry, &mut set, &p, 7, &[one()]);
        let conduct = registry.conduct(&key(1));
        assert_eq!(
            conduct,
            Conduct {
                absences: 0,
                blacklists: 1,
                blacklisted_until: 17,
                evicted: false
            }
        );
        assert!(!registry.rewarded(&key(1), 17) && registry.rewarded(&key(1), 18));
        assert!(registry.rewarded(&key(2), 8));
        assert_eq!(registry.elect(&p)[0].key, key(1));
        // Three more absences blacklist it again within the run: evicted, out of elections and POS nodes.
        run_blocks(&mut registry, &mut set, &p, 8, &[one(), one(), one()]);
        let conduct = registry.conduct(&key(1));
        assert_eq!((conduct.blacklists, conduct.evicted), (2, true));
        let elected: Vec<PublicKey> = registry.elect(&p).iter().map(|c| c.key).collect();
        assert_eq!(elected, vec![key(2), key(3)]);
        assert!(registry.pos_nodes(&p).all(|c| c.key != key(1)));
        // A blacklist long after the last one ended starts a new run.
        let later = Conduct {
            blacklists: 1,
            blacklisted_until: 17,
            absences: 2,
            ..Conduct::default()
        }
        .after(&p, 40, true);
        assert_eq!(
            (later.blacklists, later.blacklisted_until, later.evicted),
            (1, 50, false)
        );
        // With no absence limit nothing is counted.
        p.absence_limit = 0;
        let before = registry.clone();
        run_blocks(&mut registry, &mut set, &p, 11, &[Some(vec![key(2)])]);
        assert_eq!(registry, before);
    }

    #[test]
    fn a_conduct_record_elsewhere_or_of_another_height_is_not_one() {
        let conduct = Conduct {
            absences: 2,
            blacklists: 1,
            blacklisted_until: 70,
            evicted: true,
        };
        let record = conduct_record(&key(4), &conduct, 60);
        let outpoint = conduct_outpoint(&key(4), 60);
        assert_eq!(
            decode_conduct(&outpoint, &record),
            Some(ConductRecord {
                node: key(4),
                conduct,
                written: 60
            })
        );
        assert!(crate::rules::is_record(&outpoint) && record.amount == 0);
        assert!(decode_conduct(&conduct_outpoint(&key(4), 61), &record).is_none());
        assert!(decode_conduct(&conduct_outpoint(&key(5), 60), &record).is_none());
    }
}
