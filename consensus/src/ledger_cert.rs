//! Ledger certificates: what the committee signs *after* executing a block, so that anyone holding the committee's
//! keys can check a settlement offline.
//!
//! A consensus quorum certificate is formed before execution: it orders package certificates, and says nothing of
//! which transactions the rules applied. So after executing ledger block `h` each member signs a
//! [`LedgerStatement`]: the ledger block's hash, the consensus block it came from, the root of the block's results
//! (each transaction's id and verdict code, in block order) and the UTXO set commitment after it. More than two
//! thirds of the stake on one statement make a [`LedgerCert`]. A member whose statement differs from the
//! certified one executed differently (a bug, or a broken member): its vote is counted as diverging.
//!
//! [`LedgerCertifier`] is the sans-IO collector a node runs: its own statement (once executed) and its peers' votes
//! go in, a certificate comes out once. Votes are held only for a window of heights around the executed one, one
//! per member and height, so memory is bounded whatever peers send. Signatures are checked in one batch, only
//! when a quorum on the node's own statement is present (a vote for another statement is never verified).
//!
//! Committees change with DPOS elections: a statement names its committee `epoch`, and a verifier follows
//! [`CommitteeHandover`] records from the genesis committee (epoch 0), each certified by the committee before it.

use std::collections::BTreeMap;

use cas_engine::id::DomainKey;
use cas_engine::{merkle, BlockHash, Hash32, Keypair, PublicKey, Signature, TxId};
use rkyv::{Archive, Deserialize, Serialize};

use crate::committee::{Committee, CommitteeError, MemberIndex};
use crate::limits::COMMITTEE_MEMBERS_MAX;
use crate::messages::{verify_signed, CertError, SignerSignature};

pub mod domain {
    pub const STATEMENT: &str = "CAS 2026-12 ledger statement v1";
    pub const RESULT: &str = "CAS 2026-12 ledger result leaf v1";
    pub const HANDOVER: &str = "CAS 2026-12 committee hand-over v1";
}

/// Heights below the executed one whose votes are still taken (peers run a little behind).
pub const VOTES_BEHIND: u64 = 64;
/// Heights above the executed one whose votes are held until this node executes them (peers run a little ahead).
pub const VOTES_AHEAD: u64 = 256;

/// What a member signs after executing a ledger block.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct LedgerStatement {
    pub chain_id: u32,
    /// The committee that signs: 0 is the genesis committee, each hand-over adds one.
    pub epoch: u64,
    pub height: u64,
    /// The ledger block's header hash.
    pub block: BlockHash,
    /// The committed consensus block the ledger block was built from.
    pub consensus: BlockHash,
    /// [`results_root`] of the block's transactions and verdicts.
    pub results_root: Hash32,
    /// The UTXO set commitment after the block.
    pub utxo_commitment: Hash32,
}

/// Bytes of [`LedgerStatement::to_bytes`].
pub const STATEMENT_BYTES: usize = 4 + 8 + 8 + 4 * 32;

impl LedgerStatement {
    /// Fixed little-endian layout, the order of the fields.
    pub fn to_bytes(&self) -> [u8; STATEMENT_BYTES] {
        let mut out = [0u8; STATEMENT_BYTES];
        out[..4].copy_from_slice(&self.chain_id.to_le_bytes());
        out[4..12].copy_from_slice(&self.epoch.to_le_bytes());
        out[12..20].copy_from_slice(&self.height.to_le_bytes());
        for (i, hash) in [
            self.block,
            self.consensus,
            self.results_root,
            self.utxo_commitment,
        ]
        .iter()
        .enumerate()
        {
            out[20 + 32 * i..52 + 32 * i].copy_from_slice(&hash.0);
        }
        out
    }

    pub fn from_bytes(bytes: &[u8; STATEMENT_BYTES]) -> LedgerStatement {
        let hash = |i: usize| {
            Hash32(
                bytes[20 + 32 * i..52 + 32 * i]
                    .try_into()
                    .expect("32 bytes"),
            )
        };
        LedgerStatement {
            chain_id: u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")),
            epoch: u64::from_le_bytes(bytes[4..12].try_into().expect("8 bytes")),
            height: u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes")),
            block: hash(0),
            consensus: hash(1),
            results_root: hash(2),
            utxo_commitment: hash(3),
        }
    }

    /// What is signed.
    pub fn digest(&self) -> Hash32 {
        Hash32::of(domain::STATEMENT, &self.to_bytes())
    }
}

/// The leaf of a transaction's result: its place in the block, its id, and its verdict code (0 when applied).
pub fn result_leaf(index: u32, tx: &TxId, code: u16) -> Hash32 {
    RESULT.hash(&result_bytes(index, tx, code))
}

fn result_bytes(index: u32, tx: &TxId, code: u16) -> [u8; 38] {
    let mut bytes = [0u8; 4 + 32 + 2];
    bytes[..4].copy_from_slice(&index.to_le_bytes());
    bytes[4..36].copy_from_slice(&tx.0);
    bytes[36..].copy_from_slice(&code.to_le_bytes());
    bytes
}

static RESULT: DomainKey = DomainKey::new(domain::RESULT);

/// The leaves of a block's results, in block order: [`result_leaf`] of each, hashed side by side.
pub fn result_leaves(results: &[(TxId, u16)]) -> Vec<Hash32> {
    let bytes: Vec<[u8; 38]> = results
        .iter()
        .enumerate()
        .map(|(index, (tx, code))| result_bytes(index as u32, tx, *code))
        .collect();
    let messages: Vec<&[u8]> = bytes.iter().map(|b| &b[..]).collect();
    let mut leaves = vec![Hash32::ZERO; results.len()];
    RESULT.hash_many(&messages, &mut leaves);
    leaves
}

/// The Merkle root over a block's results ([`merkle::root`] of [`result_leaves`]).
pub fn results_root(results: &[(TxId, u16)]) -> Hash32 {
    merkle::root(&result_leaves(results))
}

/// One member's signature on a statement, named by its height and digest.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct LedgerVote {
    pub height: u64,
    pub digest: Hash32,
    pub signer: MemberIndex,
    pub signature: Signature,
}

/// More than two thirds of the stake signed `statement`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LedgerCert {
    pub statement: LedgerStatement,
    pub signatures: Vec<SignerSignature>,
}

impl LedgerCert {
    /// `statement | count u16 | count x (signer u16 | signature (64))`, little-endian.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(STATEMENT_BYTES + 2 + self.signatures.len() * 66);
        out.extend_from_slice(&self.statement.to_bytes());
        out.extend_from_slice(&(self.signatures.len() as u16).to_le_bytes());
        for s in &self.signatures {
            out.extend_from_slice(&s.signer.to_le_bytes());
            out.extend_from_slice(&s.signature.0);
        }
        out
    }

    /// Reads [`LedgerCert::to_bytes`]; the signatures are not checked here ([`verify_ledger_cert`] does).
    pub fn from_bytes(bytes: &[u8]) -> Result<LedgerCert, String> {
        let Some((statement, rest)) = bytes.split_first_chunk::<STATEMENT_BYTES>() else {
            return Err(format!(
                "{} bytes, a statement is {STATEMENT_BYTES}",
                bytes.len()
            ));
        };
        let Some((count, rest)) = rest.split_first_chunk::<2>() else {
            return Err("no signature count".into());
        };
        let count = u16::from_le_bytes(*count) as usize;
        if count > COMMITTEE_MEMBERS_MAX || rest.len() != count * 66 {
            return Err(format!("{count} signatures in {} bytes", rest.len()));
        }
        let signatures = rest
            .chunks_exact(66)
            .map(|s| SignerSignature {
                signer: u16::from_le_bytes([s[0], s[1]]),
                signature: Signature(s[2..].try_into().expect("64 bytes")),
            })
            .collect();
        Ok(LedgerCert {
            statement: LedgerStatement::from_bytes(statement),
            signatures,
        })
    }
}

/// Checks distinct members, a quorum of stake and every signature on the statement.
pub fn verify_ledger_cert(cert: &LedgerCert, committee: &Committee) -> Result<(), CertError> {
    let digest = cert.statement.digest();
    let signers = cert
        .signatures
        .iter()
        .map(|s| (s.signer, &digest.0[..], &s.signature));
    verify_signed(committee, signers, committee.quorum_stake())
}

/// The committee of the next epoch, certified by the current one (DPOS elections produce these; a verifier
/// follows them from the genesis committee).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitteeHandover {
    pub chain_id: u32,
    /// The epoch the new committee signs as: the current one plus one.
    pub epoch: u64,
    /// The first ledger height the new committee certifies.
    pub first_height: u64,
    pub members: Vec<(PublicKey, u64)>,
    /// The current committee's signatures on [`CommitteeHandover::digest`].
    pub signatures: Vec<SignerSignature>,
}

impl CommitteeHandover {
    pub fn digest(&self) -> Hash32 {
        let mut h = blake3::Hasher::new_derive_key(domain::HANDOVER);
        h.update(&self.chain_id.to_le_bytes());
        h.update(&self.epoch.to_le_bytes());
        h.update(&self.first_height.to_le_bytes());
        h.update(&(self.members.len() as u32).to_le_bytes());
        for (key, stake) in &self.members {
            h.update(&key.0);
            h.update(&stake.to_le_bytes());
        }
        Hash32::from(h.finalize())
    }
}

/// One member's signature on the hand-over to epoch `epoch`'s committee (the digest of the [`CommitteeHandover`]
/// its own ledger gives: the committee elected for that epoch, and its first height).
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandoverVote {
    pub epoch: u64,
    pub digest: Hash32,
    pub signer: MemberIndex,
    pub signature: Signature,
}

/// Why a hand-over vote is not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandoverVoteError {
    #[error("a vote for the hand-over to epoch {found}, this one is to epoch {expected}")]
    Epoch { found: u64, expected: u64 },
    #[error("a vote for another hand-over than this member's ledger gives (another committee or first height)")]
    Digest,
    #[error("signer {0} is not a member of the signing committee")]
    UnknownSigner(MemberIndex),
    #[error("the signature of member {0} does not verify")]
    Signature(MemberIndex),
}

/// Collects the current committee's signatures on the hand-over to the next one until more than two thirds of its
/// stake signed: then the [`CommitteeHandover`] is certified, and a verifier that knows the current committee
/// knows the next one ([`follow_handovers`]).
pub struct HandoverSigning {
    committee: Committee,
    proposal: CommitteeHandover,
    digest: Hash32,
    votes: BTreeMap<MemberIndex, Signature>,
    formed: bool,
}

impl HandoverSigning {
    /// This member's signature on `proposal` (its signatures empty), as `me` of `committee`, and the collector.
    pub fn new(
        committee: Committee,
        me: MemberIndex,
        keypair: &Keypair,
        proposal: CommitteeHandover,
    ) -> (HandoverSigning, HandoverVote) {
        let digest = proposal.digest();
        let vote = HandoverVote {
            epoch: proposal.epoch,
            digest,
            signer: me,
            signature: keypair.sign(&digest.0),
        };
        let mut votes = BTreeMap::new();
        votes.insert(me, vote.signature);
        let signing = HandoverSigning {
            committee,
            proposal,
            digest,
            votes,
            formed: false,
        };
        (signing, vote)
    }

    /// The epoch handed over to.
    pub fn epoch(&self) -> u64 {
        self.proposal.epoch
    }

    /// Whether the hand-over was certified here.
    pub fn formed(&self) -> bool {
        self.formed
    }

    /// A peer's vote; returns the certified hand-over when this vote completes the quorum (once).
    pub fn on_vote(
        &mut self,
        vote: &HandoverVote,
    ) -> Result<Option<CommitteeHandover>, HandoverVoteError> {
        if vote.epoch != self.proposal.epoch {
            return Err(HandoverVoteError::Epoch {
                found: vote.epoch,
                expected: self.proposal.epoch,
            });
        }
        if vote.digest != self.digest {
            return Err(HandoverVoteError::Digest);
        }
        let key = self
            .committee
            .key(vote.signer)
            .ok_or(HandoverVoteError::UnknownSigner(vote.signer))?;
        let entry = cas_engine::crypto::SigEntry {
            message: &self.digest.0,
            key: &key.0,
            signature: &vote.signature.0,
        };
        if !cas_engine::crypto::verify_one(&entry) {
            return Err(HandoverVoteError::Signature(vote.signer));
        }
        self.votes.insert(vote.signer, vote.signature);
        Ok(self.certify())
    }

    /// The certified hand-over, the first time the votes held make a quorum.
    pub fn certify(&mut self) -> Option<CommitteeHandover> {
        let stake: u64 = self.votes.keys().map(|m| self.committee.stake(*m)).sum();
        if self.formed || stake < self.committee.quorum_stake() {
            return None;
        }
        self.formed = true;
        let mut handover = self.proposal.clone();
        handover.signatures = self
            .votes
            .iter()
            .map(|(signer, signature)| SignerSignature {
                signer: *signer,
                signature: *signature,
            })
            .collect();
        Some(handover)
    }
}

/// Why a chain of hand-overs does not lead to a committee.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandoverError {
    #[error("hand-over {position}: chain id {found}, the genesis says {expected}")]
    ChainId {
        position: usize,
        found: u32,
        expected: u32,
    },
    #[error("hand-over {position}: epoch {found} is not after epoch {current}")]
    Epoch {
        position: usize,
        found: u64,
        current: u64,
    },
    #[error(
        "hand-over {position}: first height {found} is not above the previous one's {previous}"
    )]
    Height {
        position: usize,
        found: u64,
        previous: u64,
    },
    #[error("hand-over {position}: not certified by the committee of epoch {epoch}: {source}")]
    Certificate {
        position: usize,
        epoch: u64,
        #[source]
        source: CertError,
    },
    #[error("hand-over {position}: {source}")]
    Committee {
        position: usize,
        #[source]
        source: CommitteeError,
    },
}

/// A committee and the epoch and first height it signs from.
#[derive(Clone, Debug)]
pub struct EpochCommittee {
    pub epoch: u64,
    pub first_height: u64,
    pub committee: Committee,
}

/// Follows `handovers` in order from the genesis committee; returns every committee on the way, genesis first.
pub fn follow_handovers(
    chain_id: u32,
    genesis: Committee,
    handovers: &[CommitteeHandover],
) -> Result<Vec<EpochCommittee>, HandoverError> {
    let mut chain = vec![EpochCommittee {
        epoch: 0,
        first_height: 0,
        committee: genesis,
    }];
    for (position, handover) in handovers.iter().enumerate() {
        let current = chain.last().expect("genesis first");
        if handover.chain_id != chain_id {
            return Err(HandoverError::ChainId {
                position,
                found: handover.chain_id,
                expected: chain_id,
            });
        }
        // Instances may skip epoch numbers (hand-overs start at a protocol upgrade's first epoch), never go back.
        if handover.epoch <= current.epoch {
            return Err(HandoverError::Epoch {
                position,
                found: handover.epoch,
                current: current.epoch,
            });
        }
        if handover.first_height <= current.first_height {
            return Err(HandoverError::Height {
                position,
                found: handover.first_height,
                previous: current.first_height,
            });
        }
        let digest = handover.digest();
        let signers = handover
            .signatures
            .iter()
            .map(|s| (s.signer, &digest.0[..], &s.signature));
        verify_signed(
            &current.committee,
            signers,
            current.committee.quorum_stake(),
        )
        .map_err(|source| HandoverError::Certificate {
            position,
            epoch: current.epoch,
            source,
        })?;
        let committee = Committee::new(handover.members.clone())
            .map_err(|source| HandoverError::Committee { position, source })?;
        chain.push(EpochCommittee {
            epoch: handover.epoch,
            first_height: handover.first_height,
            committee,
        });
    }
    Ok(chain)
}

/// Why no committee of a followed chain signs a height as an epoch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EpochError {
    #[error("the certificate names epoch {0}, which the hand-overs given do not reach")]
    Unreached(u64),
    #[error("height {height} is outside epoch {epoch}'s heights")]
    Heights { height: u64, epoch: u64 },
}

/// The committee of `chain` ([`follow_handovers`]) that signs `height` as `epoch`: the epoch must be one the chain
/// reaches, and the height within its heights (from its first height to the next epoch's first, excluded).
pub fn committee_for(
    chain: &[EpochCommittee],
    epoch: u64,
    height: u64,
) -> Result<&EpochCommittee, EpochError> {
    let position = chain
        .iter()
        .position(|c| c.epoch == epoch)
        .ok_or(EpochError::Unreached(epoch))?;
    let next_first = chain.get(position + 1).map(|c| c.first_height);
    let found = &chain[position];
    if height < found.first_height || next_first.is_some_and(|f| height >= f) {
        return Err(EpochError::Heights { height, epoch });
    }
    Ok(found)
}

/// What the certifier did with a vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteOutcome {
    /// Held until this node executes the height, or until a quorum is present.
    Held,
    /// Outside the window of heights, from a non-member, or a second vote of a member for a height.
    Refused,
    /// For a height certified already.
    Late,
}

crate::counters! {
    /// The certifier's counters (the node's status).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct CertifierStats {
        pub votes_taken: u64,
        pub votes_refused: u64,
        pub votes_late: u64,
        /// Votes for a statement other than this node's at the same height.
        pub votes_diverging: u64,
        pub bad_signatures: u64,
        pub certs_formed: u64,
    }
}

struct Height {
    /// This node's statement and its digest, once executed.
    own: Option<(LedgerStatement, Hash32)>,
    /// One vote per member: its digest and signature, and whether the signature was verified.
    votes: BTreeMap<MemberIndex, (Hash32, Signature, bool)>,
}

/// Collects the votes on each executed height until a certificate forms (see the module docs).
pub struct LedgerCertifier {
    committee: Committee,
    me: MemberIndex,
    keypair: Keypair,
    epoch: u64,
    executed: u64,
    heights: BTreeMap<u64, Height>,
    /// Heights certified in the window (their votes are no longer held).
    certified: std::collections::BTreeSet<u64>,
    pub stats: CertifierStats,
}

impl LedgerCertifier {
    /// `executed`: the height this node has executed (votes are taken around it).
    pub fn new(
        committee: Committee,
        me: MemberIndex,
        keypair: Keypair,
        epoch: u64,
        executed: u64,
    ) -> LedgerCertifier {
        LedgerCertifier {
            committee,
            me,
            keypair,
            epoch,
            executed,
            heights: BTreeMap::new(),
            certified: Default::default(),
            stats: CertifierStats::default(),
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The committee whose votes this certifier collects.
    pub fn committee(&self) -> &Committee {
        &self.committee
    }

    /// This node executed a block: returns its signed vote (to broadcast) and the certificate if the votes held
    /// for the height already make a quorum with it.
    pub fn executed(&mut self, statement: LedgerStatement) -> (LedgerVote, Option<LedgerCert>) {
        let digest = statement.digest();
        let vote = LedgerVote {
            height: statement.height,
            digest,
            signer: self.me,
            signature: self.keypair.sign(&digest.0),
        };
        self.executed = self.executed.max(statement.height);
        self.prune();
        let height = self.heights.entry(statement.height).or_insert(Height {
            own: None,
            votes: BTreeMap::new(),
        });
        height.own = Some((statement, digest));
        // Our own signature is good by construction.
        height.votes.insert(self.me, (digest, vote.signature, true));
        for (member, (their, _, _)) in &height.votes {
            if *member != self.me && *their != digest {
                self.stats.votes_diverging += 1;
            }
        }
        let cert = self.try_certify(statement.height);
        (vote, cert)
    }

    /// A peer's vote (the caller checked that `vote.signer` is the peer that sent it).
    pub fn on_vote(&mut self, vote: LedgerVote) -> (VoteOutcome, Option<LedgerCert>) {
        let in_window = vote.height + VOTES_BEHIND > self.executed
            && vote.height <= self.executed + VOTES_AHEAD;
        if !in_window || self.committee.key(vote.signer).is_none() || vote.signer == self.me {
            self.stats.votes_refused += 1;
            return (VoteOutcome::Refused, None);
        }
        if self.certified.contains(&vote.height) {
            self.stats.votes_late += 1;
            return (VoteOutcome::Late, None);
        }
        let height = self.heights.entry(vote.height).or_insert(Height {
            own: None,
            votes: BTreeMap::new(),
        });
        if height.votes.contains_key(&vote.signer) {
            self.stats.votes_refused += 1;
            return (VoteOutcome::Refused, None);
        }
        height
            .votes
            .insert(vote.signer, (vote.digest, vote.signature, false));
        self.stats.votes_taken += 1;
        if let Some((_, own)) = height.own {
            if own != vote.digest {
                self.stats.votes_diverging += 1;
                return (VoteOutcome::Held, None);
            }
        }
        (VoteOutcome::Held, self.try_certify(vote.height))
    }

    /// A certificate once the votes on this node's statement hold a quorum of stake with good signatures.
    fn try_certify(&mut self, at: u64) -> Option<LedgerCert> {
        let height = self.heights.get_mut(&at)?;
        let (statement, digest) = height.own?;
        let agreeing = |votes: &BTreeMap<MemberIndex, (Hash32, Signature, bool)>| {
            votes
                .iter()
                .filter(|(_, (d, _, _))| *d == digest)
                .map(|(m, _)| self.committee.stake(*m))
                .sum::<u64>()
        };
        if agreeing(&height.votes) < self.committee.quorum_stake() {
            return None;
        }
        let unverified: Vec<(MemberIndex, Signature)> = height
            .votes
            .iter()
            .filter(|(_, (d, _, checked))| *d == digest && !checked)
            .map(|(m, (_, s, _))| (*m, *s))
            .collect();
        let entries: Vec<cas_engine::crypto::SigEntry<'_>> = unverified
            .iter()
            .map(|(m, s)| cas_engine::crypto::SigEntry {
                message: &digest.0,
                key: &self.committee.key(*m).expect("a member").0,
                signature: &s.0,
            })
            .collect();
        let bad = crate::verdicts::verify_batch(&entries);
        for (index, (member, _)) in unverified.iter().enumerate() {
            if bad.contains(&index) {
                // A forged vote under a member's name: dropped, so the member's real one is never taken either.
                height.votes.remove(member);
                self.stats.bad_signatures += 1;
            } else if let Some(vote) = height.votes.get_mut(member) {
                vote.2 = true;
            }
        }
        if agreeing(&height.votes) < self.committee.quorum_stake() {
            return None;
        }
        let signatures = height
            .votes
            .iter()
            .filter(|(_, (d, _, _))| *d == digest)
            .map(|(m, (_, s, _))| SignerSignature {
                signer: *m,
                signature: *s,
            })
            .collect();
        self.heights.remove(&at);
        self.certified.insert(at);
        self.stats.certs_formed += 1;
        Some(LedgerCert {
            statement,
            signatures,
        })
    }

    /// Drops what fell behind the window.
    fn prune(&mut self) {
        let floor = self.executed.saturating_sub(VOTES_BEHIND);
        self.heights = self.heights.split_off(&floor);
        self.certified = self.certified.split_off(&floor);
    }

    /// Heights whose votes are held now (for tests and the status).
    pub fn held_heights(&self) -> usize {
        self.heights.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cas_engine::fixtures::{key, COMMITTEE_KEYS};

    fn committee(n: usize) -> (Committee, Vec<Keypair>) {
        let keys: Vec<Keypair> = (0..n).map(|i| key(COMMITTEE_KEYS, i as u32)).collect();
        let committee = Committee::new(keys.iter().map(|k| (k.public(), 1)).collect()).unwrap();
        (committee, keys)
    }

    fn statement(height: u64, results: u8) -> LedgerStatement {
        LedgerStatement {
            chain_id: 7,
            epoch: 0,
            height,
            block: Hash32([height as u8; 32]),
            consensus: Hash32([2; 32]),
            results_root: Hash32([results; 32]),
            utxo_commitment: Hash32([4; 32]),
        }
    }

    fn certifiers(n: usize) -> (Committee, Vec<LedgerCertifier>) {
        let (committee, keys) = committee(n);
        let certifiers = keys
            .into_iter()
            .enumerate()
            .map(|(i, k)| LedgerCertifier::new(committee.clone(), i as MemberIndex, k, 0, 0))
            .collect();
        (committee, certifiers)
    }

    /// The leaves hashed side by side are each transaction's [`result_leaf`], for counts around the sixteen lanes.
    #[test]
    fn result_leaves_are_each_result_leaf() {
        for count in [0usize, 1, 15, 16, 17, 40] {
            let results: Vec<(TxId, u16)> = (0..count)
                .map(|i| (Hash32::of("test tx", &i.to_le_bytes()), (i % 3) as u16))
                .collect();
            let one_by_one: Vec<Hash32> = results
                .iter()
                .enumerate()
                .map(|(index, (tx, code))| result_leaf(index as u32, tx, *code))
                .collect();
            assert_eq!(result_leaves(&results), one_by_one, "{count} results");
        }
    }

    #[test]
    fn a_quorum_on_one_statement_certifies_once_and_the_certificate_verifies() {
        let (committee, mut members) = certifiers(4);
        let votes: Vec<LedgerVote> = members[1..]
            .iter_mut()
            .map(|m| m.executed(statement(1, 3)).0)
            .collect();
        // Votes arrive before node 0 executed: held, no certificate.
        assert_eq!(members[0].on_vote(votes[0]), (VoteOutcome::Held, None));
        assert_eq!(members[0].on_vote(votes[1]), (VoteOutcome::Held, None));
        let (_, cert) = members[0].executed(statement(1, 3));
        let cert = cert.expect("three of four agree");
        assert_eq!(cert.signatures.len(), 3);
        verify_ledger_cert(&cert, &committee).unwrap();
        assert_eq!(LedgerCert::from_bytes(&cert.to_bytes()).unwrap(), cert);
        assert_eq!(members[0].on_vote(votes[2]), (VoteOutcome::Late, None));
        assert_eq!(members[0].stats.certs_formed, 1);
        assert_eq!(members[0].held_heights(), 0);
    }

    #[test]
    fn diverging_and_forged_votes_make_no_certificate() {
        let (_, mut members) = certifiers(4);
        let good = members[1].executed(statement(1, 3)).0;
        let diverging = members[2].executed(statement(1, 9)).0;
        let mut forged = members[3].executed(statement(1, 3)).0;
        forged.signature.0[0] ^= 1;
        assert_eq!(members[0].executed(statement(1, 3)).1, None);
        assert_eq!(members[0].on_vote(good).1, None);
        assert_eq!(members[0].on_vote(diverging).1, None);
        assert_eq!(members[0].on_vote(forged).1, None);
        assert_eq!(members[0].stats.votes_diverging, 1);
        assert_eq!(members[0].stats.bad_signatures, 1);
        // A second vote of a member for the height is refused, and nothing is certified.
        assert_eq!(members[0].on_vote(good).0, VoteOutcome::Refused);
        assert_eq!(members[0].stats.certs_formed, 0);
    }

    #[test]
    fn votes_outside_the_window_or_from_strangers_are_refused() {
        let (_, mut members) = certifiers(4);
        let mut vote = members[1].executed(statement(VOTES_AHEAD + 1, 3)).0;
        assert_eq!(members[0].on_vote(vote).0, VoteOutcome::Refused);
        vote.height = 5;
        vote.signer = 9;
        assert_eq!(members[0].on_vote(vote).0, VoteOutcome::Refused);
        vote.signer = 0;
        assert_eq!(members[0].on_vote(vote).0, VoteOutcome::Refused);
        // Executing far ahead prunes what fell behind.
        vote.signer = 1;
        assert_eq!(members[0].on_vote(vote).0, VoteOutcome::Held);
        members[0].executed(statement(5 + VOTES_BEHIND + 10, 3));
        assert_eq!(members[0].held_heights(), 1);
    }

    #[test]
    fn a_certificate_with_a_changed_byte_or_too_few_signers_fails() {
        let (committee, mut members) = certifiers(4);
        let votes: Vec<LedgerVote> = members[1..3]
            .iter_mut()
            .map(|m| m.executed(statement(1, 3)).0)
            .collect();
        members[0].executed(statement(1, 3));
        members[0].on_vote(votes[0]);
        let cert = members[0].on_vote(votes[1]).1.unwrap();
        let mut changed = cert.clone();
        changed.statement.results_root.0[0] ^= 1;
        assert!(matches!(
            verify_ledger_cert(&changed, &committee),
            Err(CertError::BadSignature(_))
        ));
        let mut short = cert.clone();
        short.signatures.pop();
        assert!(matches!(
            verify_ledger_cert(&short, &committee),
            Err(CertError::NotEnoughStake { .. })
        ));
    }

    #[test]
    fn hand_overs_are_followed_only_when_the_committee_before_signed_them() {
        let (genesis, keys) = committee(4);
        let next: Vec<(PublicKey, u64)> = (10..14)
            .map(|i| (key(COMMITTEE_KEYS, i).public(), 1))
            .collect();
        let mut handover = CommitteeHandover {
            chain_id: 7,
            epoch: 1,
            first_height: 100,
            members: next,
            signatures: Vec::new(),
        };
        let digest = handover.digest();
        handover.signatures = (0..3)
            .map(|i| SignerSignature {
                signer: i as MemberIndex,
                signature: keys[i].sign(&digest.0),
            })
            .collect();
        let chain = follow_handovers(7, genesis.clone(), std::slice::from_ref(&handover)).unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[1].epoch, 1);
        assert_eq!(
            chain[1].committee.key(0),
            Some(&key(COMMITTEE_KEYS, 10).public())
        );
        let mut tampered = handover.clone();
        tampered.members[0].1 = 5;
        assert!(matches!(
            follow_handovers(7, genesis.clone(), &[tampered]),
            Err(HandoverError::Certificate { .. })
        ));
        assert!(matches!(
            follow_handovers(8, genesis.clone(), std::slice::from_ref(&handover)),
            Err(HandoverError::ChainId { .. })
        ));
        let resign = |mut h: CommitteeHandover| {
            let digest = h.digest();
            for s in &mut h.signatures {
                s.signature = keys[s.signer as usize].sign(&digest.0);
            }
            h
        };
        // Epochs may jump (hand-overs begin at an upgrade's first epoch), never go back.
        let mut jumped = handover.clone();
        jumped.epoch = 3;
        let chain = follow_handovers(7, genesis.clone(), &[resign(jumped)]).unwrap();
        assert_eq!(chain[1].epoch, 3);
        let mut back = handover;
        back.epoch = 0;
        assert!(matches!(
            follow_handovers(7, genesis, &[resign(back)]),
            Err(HandoverError::Epoch { .. })
        ));
    }

    #[test]
    fn a_hand_over_is_certified_once_a_quorum_signed_the_same_committee() {
        let (committee, keys) = committee(4);
        let proposal = || CommitteeHandover {
            chain_id: 7,
            epoch: 2,
            first_height: 65,
            members: (10..14)
                .map(|i| (key(COMMITTEE_KEYS, i).public(), 1))
                .collect(),
            signatures: Vec::new(),
        };
        let (mut signing, own) = HandoverSigning::new(committee.clone(), 0, &keys[0], proposal());
        assert_eq!((own.epoch, own.signer), (2, 0));
        let vote_of = |member: usize, handover: &CommitteeHandover| {
            HandoverSigning::new(
                committee.clone(),
                member as MemberIndex,
                &keys[member],
                handover.clone(),
            )
            .1
        };
        // Another committee in a member's ledger: refused, as are a forged signature and an unknown signer.
        let mut other = proposal();
        other.members[0].1 = 2;
        assert_eq!(
            signing.on_vote(&vote_of(1, &other)),
            Err(HandoverVoteError::Digest)
        );
        let mut forged = vote_of(1, &proposal());
        forged.signature = keys[2].sign(&forged.digest.0);
        assert_eq!(
            signing.on_vote(&forged),
            Err(HandoverVoteError::Signature(1))
        );
        let mut stranger = vote_of(1, &proposal());
        stranger.signer = 9;
        assert_eq!(
            signing.on_vote(&stranger),
            Err(HandoverVoteError::UnknownSigner(9))
        );
        assert_eq!(signing.on_vote(&vote_of(1, &proposal())), Ok(None));
        let certified = signing
            .on_vote(&vote_of(2, &proposal()))
            .unwrap()
            .expect("three of four");
        assert_eq!(certified.signatures.len(), 3);
        assert!(signing.formed());
        assert_eq!(
            signing.on_vote(&vote_of(3, &proposal())),
            Ok(None),
            "formed once"
        );
        let chain = follow_handovers(7, committee, &[certified]).unwrap();
        assert_eq!((chain[1].epoch, chain[1].first_height), (2, 65));
    }

    #[test]
    fn a_result_leaf_binds_place_id_and_code() {
        let id = Hash32([1; 32]);
        let leaf = result_leaf(0, &id, 0);
        assert_ne!(leaf, result_leaf(1, &id, 0));
        assert_ne!(leaf, result_leaf(0, &id, 12));
        assert_ne!(leaf, result_leaf(0, &Hash32([2; 32]), 0));
        let results = [(id, 0), (Hash32([2; 32]), 12), (Hash32([3; 32]), 0)];
        let leaves = result_leaves(&results);
        let path = merkle::proof(&leaves, 1).unwrap();
        assert!(merkle::verify(&results_root(&results), &leaves[1], &path));
    }
}
