//! Consensus messages and certificates: proposals (consensus blocks), votes, quorum certificates, timeouts and
//! timeout certificates, package availability (packages, acks, availability certificates) and block sync.
//!
//! Every signature covers a domain-separated digest, so a vote can never pass for a timeout or an ack. Certificate
//! checks run the cheap tests first (known, distinct signers; enough stake) and only then one batch verification of
//! all signatures with the engine's cofactored batch verifier. Messages are rkyv archives on the wire;
//! [`decode_message`] is the one entry point for untrusted bytes.

use std::collections::BTreeSet;

use cas_engine::crypto::{Keypair, SigEntry};
use cas_engine::evidence::{EquivocationProof, SignedVote};
use cas_engine::{BlockHash, Hash32, PackageId, PublicKey, Signature, Transaction, TxId};
use rkyv::{Archive, Deserialize, Serialize};

use crate::committee::{Committee, MemberIndex, COMMITTEE_MEMBERS_MAX};
use crate::witness::{check_witness_bounds, WitnessDecodeError, WitnessHeader};

pub use crate::limits::{
    BLOCK_PAYLOAD_BYTES_MAX, BLOCK_PAYLOAD_TXS_MAX, BLOCK_WITNESSES_MAX, BLOCK_WITNESS_BYTES_MAX,
    MESSAGE_BYTES_MAX, PACKAGE_TXS_MAX, PAYLOAD_CERTS_MAX, SNAPSHOT_CHUNK_BYTES_MAX,
};

pub type Round = u64;

mod domain {
    pub const BLOCK: &str = "CAS 2026-12 consensus block v2";
    pub const COMMIT_VOTE: &str = "CAS 2026-12 consensus commit vote v2";
    pub const TIMEOUT: &str = "CAS 2026-12 consensus timeout v2";
    pub const ACK: &str = "CAS 2026-12 package ack v2";
}

/// The hash every chain's first quorum certificate certifies: the consensus chain starts from it at height 0.
pub const GENESIS_HASH: BlockHash = Hash32([0; 32]);

/// One member's signature inside a certificate.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignerSignature {
    pub signer: MemberIndex,
    pub signature: Signature,
}

/// More than two thirds of the stake voted for `block` in `round`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct QuorumCert {
    pub round: Round,
    pub block: BlockHash,
    pub height: u64,
    pub signatures: Vec<SignerSignature>,
}

impl QuorumCert {
    /// The certificate of the genesis: round 0, height 0, no signatures needed.
    pub fn genesis() -> QuorumCert {
        QuorumCert::base(0, GENESIS_HASH)
    }

    /// The certificate an epoch's BFT instance starts from: round 0 over the last block of the epoch before
    /// (`height`, `block`), no signatures (that block is final by the previous committee's certificates; each
    /// instance accepts only its own base, [`crate::bft`]).
    pub fn base(height: u64, block: BlockHash) -> QuorumCert {
        QuorumCert {
            round: 0,
            block,
            height,
            signatures: Vec::new(),
        }
    }

    pub fn is_genesis(&self) -> bool {
        self.round == 0 && self.block == GENESIS_HASH && self.height == 0
    }

    /// What its signers signed in `epoch`: also the digest naming it, for caches of verified certificates.
    pub fn digest(&self, epoch: u64) -> Hash32 {
        vote_digest(epoch, self.round, &self.block, self.height)
    }
}

pub use cas_engine::evidence::vote_digest;

/// What a commit vote signs: "I hold the QC of this block, persisted, and had not timed out in its round or later".
pub fn commit_vote_digest(epoch: u64, round: Round, block: &BlockHash, height: u64) -> Hash32 {
    let mut h = blake3::Hasher::new_derive_key(domain::COMMIT_VOTE);
    h.update(&epoch.to_le_bytes());
    h.update(&round.to_le_bytes());
    h.update(&block.0);
    h.update(&height.to_le_bytes());
    Hash32::from(h.finalize())
}

pub fn timeout_digest(epoch: u64, round: Round, high_qc_round: Round) -> Hash32 {
    let mut h = blake3::Hasher::new_derive_key(domain::TIMEOUT);
    h.update(&epoch.to_le_bytes());
    h.update(&round.to_le_bytes());
    h.update(&high_qc_round.to_le_bytes());
    Hash32::from(h.finalize())
}

/// What an ack signs: the package, its size, whether its signatures were checked, and the committee epoch (a
/// certificate of one epoch is never payload in another's, [`crate::bft`]).
pub fn ack_digest(epoch: u64, package: &PackageId, size: PackageSize, checked: bool) -> Hash32 {
    let mut h = blake3::Hasher::new_derive_key(domain::ACK);
    h.update(&epoch.to_le_bytes());
    h.update(&package.0);
    h.update(&size.txs.to_le_bytes());
    h.update(&size.bytes.to_le_bytes());
    h.update(&[checked as u8]);
    Hash32::from(h.finalize())
}

/// One entry of a timeout certificate: the signer's highest QC round when it timed out.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeoutSignature {
    pub signer: MemberIndex,
    pub high_qc_round: Round,
    pub signature: Signature,
}

/// More than two thirds of the stake gave up on `round`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TimeoutCert {
    pub round: Round,
    pub signatures: Vec<TimeoutSignature>,
}

impl TimeoutCert {
    /// The highest QC round any signer reported: a proposal justified by this TC must extend a QC at least this
    /// high, which is what keeps a block certified before the timeout from being forked away.
    pub fn high_qc_round(&self) -> Round {
        self.signatures
            .iter()
            .map(|s| s.high_qc_round)
            .max()
            .unwrap_or(0)
    }
}

/// A member gives up on a round, carrying its highest QC so the next leader can extend it.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Timeout {
    pub round: Round,
    pub high_qc: QuorumCert,
    pub signer: MemberIndex,
    pub signature: Signature,
}

/// A member's vote for a block.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vote {
    pub round: Round,
    pub block: BlockHash,
    pub height: u64,
    pub signer: MemberIndex,
    pub signature: Signature,
}

/// Two votes by one member for different blocks in one round: proof that it broke the rule every honest member
/// keeps (one vote per round). Kept by whoever sees both, for the punishment the ledger will record
/// (docs/dpos.md).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Equivocation {
    pub first: Vote,
    pub second: Vote,
}

impl Equivocation {
    /// Whether this proves `committee`'s member `first.signer` equivocated in `epoch`: one signer, one round, two
    /// blocks, both signatures its own.
    pub fn proves(&self, committee: &Committee, epoch: u64) -> bool {
        let (a, b) = (&self.first, &self.second);
        a.signer == b.signer
            && a.round == b.round
            && a.block != b.block
            && [a, b].iter().all(|v| {
                verify_member(
                    committee,
                    v.signer,
                    &vote_digest(epoch, v.round, &v.block, v.height),
                    &v.signature,
                )
            })
    }

    /// The proof as the ledger records it ([`cas_engine::evidence::EquivocationProof`]): it names the member by key
    /// (`member`, the signer's key in `epoch`'s committee), so it is checked without the committee at hand.
    pub fn ledger_proof(&self, member: PublicKey, epoch: u64) -> EquivocationProof {
        let signed = |vote: &Vote| SignedVote {
            block: vote.block,
            height: vote.height,
            signature: vote.signature,
        };
        EquivocationProof {
            member,
            epoch,
            round: self.first.round,
            first: signed(&self.first),
            second: signed(&self.second),
        }
    }
}

/// A consensus block: it orders availability certificates, never transactions, so its size does not grow with
/// the payload. Its parent is the block its `qc` certifies.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// The committee epoch whose BFT instance made this block ([`crate::bft`]): inside the hash, so a block of one
    /// epoch never counts in another's, even where the two committees are the same keys.
    pub epoch: u64,
    pub round: Round,
    pub height: u64,
    /// The rules this block follows: the version its height has in the committee's schedule
    /// ([`crate::protocol`]).
    pub protocol: u32,
    pub qc: QuorumCert,
    /// Present when the previous round ended in a timeout rather than a QC.
    pub tc: Option<TimeoutCert>,
    pub author: MemberIndex,
    /// The proposer's wall clock. Not checked by voters; once committed it is the one clock every executor's
    /// witness order judges carried witness timestamps by, so it is the same on every node.
    pub timestamp_ms: u64,
    pub payload: Vec<AvailabilityCert>,
    /// POW witness headers no earlier block carried (at most [`BLOCK_WITNESSES_MAX`], [`BLOCK_WITNESS_BYTES_MAX`]
    /// bytes encoded): committing them puts the witness chain in one order on every node, which is what makes
    /// the witness rewards minted from it deterministic.
    pub witnesses: Vec<WitnessHeader>,
    pub signature: Signature,
}

/// The encoded size of carried witnesses, as the bound counts it.
pub fn witness_bytes(witnesses: &[WitnessHeader]) -> usize {
    witnesses
        .iter()
        .map(|w| crate::witness::encode_witness(w).len())
        .sum()
}

impl Block {
    pub fn parent(&self) -> BlockHash {
        self.qc.block
    }

    /// The block hash, which the author signs: every field but the signatures inside the certificates.
    pub fn hash(&self) -> BlockHash {
        let mut h = blake3::Hasher::new_derive_key(domain::BLOCK);
        h.update(&self.epoch.to_le_bytes());
        h.update(&self.round.to_le_bytes());
        h.update(&self.height.to_le_bytes());
        h.update(&self.protocol.to_le_bytes());
        h.update(&self.qc.digest(self.epoch).0);
        match &self.tc {
            None => h.update(&[0]),
            Some(tc) => h.update(&[1]).update(&tc.round.to_le_bytes()),
        };
        h.update(&self.author.to_le_bytes());
        h.update(&self.timestamp_ms.to_le_bytes());
        h.update(&(self.payload.len() as u64).to_le_bytes());
        for cert in &self.payload {
            h.update(&cert.package.0);
        }
        // A witness's hash is its proof of work over every one of its fields.
        h.update(&(self.witnesses.len() as u64).to_le_bytes());
        for witness in &self.witnesses {
            h.update(&witness.hash().0);
        }
        Hash32::from(h.finalize())
    }

    /// About the bytes this block takes encoded (and so, roughly, in memory): what windows of kept blocks count.
    pub fn encoded_bytes_estimate(&self) -> usize {
        let signatures = |count: usize| count * std::mem::size_of::<ArchivedSignerSignature>();
        std::mem::size_of::<ArchivedBlock>()
            + signatures(self.qc.signatures.len())
            + self.tc.as_ref().map_or(0, |tc| {
                std::mem::size_of::<ArchivedTimeoutCert>()
                    + tc.signatures.len() * std::mem::size_of::<ArchivedTimeoutSignature>()
            })
            + self
                .payload
                .iter()
                .map(|cert| {
                    std::mem::size_of::<ArchivedAvailabilityCert>()
                        + cert.acks.len() * std::mem::size_of::<ArchivedAckSignature>()
                })
                .sum::<usize>()
            + witness_bytes(&self.witnesses)
    }

    /// Builds and signs a block of `epoch`.
    #[allow(clippy::too_many_arguments)]
    pub fn new_signed(
        epoch: u64,
        keypair: &Keypair,
        author: MemberIndex,
        round: Round,
        protocol: u32,
        qc: QuorumCert,
        tc: Option<TimeoutCert>,
        timestamp_ms: u64,
        payload: Vec<AvailabilityCert>,
        witnesses: Vec<WitnessHeader>,
    ) -> Block {
        let height = qc.height + 1;
        let mut block = Block {
            epoch,
            round,
            height,
            protocol,
            qc,
            tc,
            author,
            timestamp_ms,
            payload,
            witnesses,
            signature: Signature([0; 64]),
        };
        block.signature = keypair.sign(&block.hash().0);
        block
    }
}

/// A batch of client transactions made by one member's Synchronizer.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Package {
    pub creator: MemberIndex,
    /// The creator's package counter: with the creator, it makes ids unique.
    pub sequence: u64,
    pub txs: Vec<Transaction>,
}

impl Package {
    pub fn id(&self) -> PackageId {
        self.id_and_tx_ids().0
    }

    /// The package id and, computed on the way, its transactions' ids in order: a holder keeps them, so no
    /// transaction id is computed again on this member (for its checks, its answers, its execution).
    pub fn id_and_tx_ids(&self) -> (PackageId, Vec<TxId>) {
        let tx_ids = cas_engine::tx::owned_tx_ids(&self.txs);
        let mut h = blake3::Hasher::new_derive_key(cas_engine::id::domain::PACKAGE_ID);
        h.update(&self.creator.to_le_bytes());
        h.update(&self.sequence.to_le_bytes());
        h.update(&(self.txs.len() as u64).to_le_bytes());
        for id in &tx_ids {
            h.update(&id.0);
        }
        // The signatures too: two packages with one id hold the same bytes, so every member that holds it verifies
        // the same signatures and builds the same ledger block from it.
        for tx in &self.txs {
            h.update(&(tx.signatures.len() as u32).to_le_bytes());
            for signature in &tx.signatures {
                h.update(&signature.key.0);
                h.update(&signature.signature.0);
            }
        }
        (Hash32::from(h.finalize()), tx_ids)
    }

    /// What this package adds to a block.
    pub fn size(&self) -> PackageSize {
        let bytes: usize = self.txs.iter().map(cas_engine::codec::encoded_tx_len).sum();
        PackageSize {
            txs: self.txs.len() as u32,
            bytes: bytes as u32,
        }
    }
}

/// What a package adds to a ledger block: its transactions and their encoded bytes
/// ([`cas_engine::codec::encoded_tx_len`]). The ackers sign it with the package id, so a leader bounds a block by
/// its certificates alone ([`BLOCK_PAYLOAD_TXS_MAX`], [`BLOCK_PAYLOAD_BYTES_MAX`]) and voters check the bound.
#[derive(
    Archive,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
)]
pub struct PackageSize {
    pub txs: u32,
    /// At most [`MESSAGE_BYTES_MAX`] for a package that decodes.
    pub bytes: u32,
}

/// A member holds a package; `checked` says it also verified every signature in it and found them good.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    pub package: PackageId,
    pub checked: bool,
    pub signer: MemberIndex,
    pub signature: Signature,
}

/// One ack inside an availability certificate.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckSignature {
    pub signer: MemberIndex,
    pub checked: bool,
    pub signature: Signature,
}

/// More than two thirds of the stake hold `package`. See [`crate::availability`] for what `checked` buys.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AvailabilityCert {
    pub package: PackageId,
    pub creator: MemberIndex,
    /// The creator's package counter (part of the package id): leaders order a creator's packages by it, so a
    /// client's later transactions never run before its earlier ones.
    pub sequence: u64,
    /// Signed by every ack with the package id.
    pub size: PackageSize,
    pub acks: Vec<AckSignature>,
}

impl AvailabilityCert {
    /// Stake of the members that attest they verified the package's signatures.
    pub fn checked_stake(&self, committee: &Committee) -> u64 {
        self.acks
            .iter()
            .filter(|a| a.checked)
            .map(|a| committee.stake(a.signer))
            .sum()
    }

    /// Whether executors may skip re-verifying the package's signatures: the checked attestations carry more than
    /// a third of the stake, so at least one honest member checked.
    pub fn attested(&self, committee: &Committee) -> bool {
        self.checked_stake(committee) >= committee.validity_stake()
    }
}

/// A member's latest UTXO snapshot, as it describes it (state transfer for a member too far behind to catch up
/// block by block). A receiver trusts it only when more than a third of the stake reports the same one.
#[derive(
    Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub struct SnapshotInfo {
    /// The ledger height the snapshot holds the set after (0: the sender has no snapshot to offer).
    pub height: u64,
    /// The hash of the ledger block at `height` (the parent of the next one).
    pub ledger_hash: BlockHash,
    /// The UTXO set commitment at `height`.
    pub commitment: Hash32,
    /// The committed consensus block at `height`, from which the receiver's BFT resumes.
    pub consensus_hash: BlockHash,
    /// Unspent outputs in the set; fixes how many chunks of entries the transfer has.
    pub entries: u64,
    /// The hash of the ledger's witness order after `height` ([`crate::rewards::order_state_hash`]), so the
    /// receiver mints the same witness rewards from the next block on, and its length in bytes: it follows the
    /// entries as further chunks of at most [`SNAPSHOT_CHUNK_BYTES_MAX`] bytes each.
    pub witness_state: Hash32,
    pub witness_state_bytes: u64,
}

/// Asks for chunk `index` of the sender's snapshot at `height`.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotChunkRequest {
    pub height: u64,
    pub index: u32,
}

/// One chunk of a snapshot: encoded entries, sorted by outpoint across the whole snapshot (validated by the
/// receiver's assembler; the set it builds must reproduce the trusted commitment), or, at the indexes after the
/// entries' chunks, consecutive bytes of the witness order state (checked against the trusted hash).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    pub height: u64,
    pub index: u32,
    pub entries: Vec<u8>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Proposal(Block),
    Vote(Vote),
    /// A vote to commit a certified block (its `signature` covers [`commit_vote_digest`]).
    CommitVote(Vote),
    Timeout(Timeout),
    /// Asks for a block the sender is missing.
    BlockRequest(BlockHash),
    BlockResponse(Block),
    Package(Package),
    Ack(Ack),
    Cert(AvailabilityCert),
    /// Asks for a package the sender must execute but does not hold.
    PackageRequest(PackageId),
    /// A POW witness block, gossiped to every node (see [`crate::witness`]); never on the ordering path.
    Witness(WitnessHeader),
    /// Asks a member for its latest snapshot's [`SnapshotInfo`] (node-level state transfer, never the BFT's).
    SnapshotInfoRequest,
    SnapshotInfo(SnapshotInfo),
    SnapshotChunkRequest(SnapshotChunkRequest),
    SnapshotChunk(SnapshotChunk),
    /// A member's signature on its result of executing a ledger block (see [`crate::ledger_cert`]).
    LedgerVote(crate::ledger_cert::LedgerVote),
    /// A member's signature on the hand-over to the next committee ([`crate::ledger_cert::HandoverSigning`]).
    HandoverVote(crate::ledger_cert::HandoverVote),
}

impl Message {
    /// Whether the message belongs to the ordering path (never to wait behind bulk traffic).
    pub fn is_consensus(&self) -> bool {
        matches!(
            self,
            Message::Proposal(_) | Message::Vote(_) | Message::Timeout(_)
        )
    }
}

/// Why a certificate or signed message is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("signer {0} is not a committee member")]
    UnknownSigner(MemberIndex),
    #[error("signer {0} appears twice")]
    DuplicateSigner(MemberIndex),
    #[error("stake {stake} is below the required {required}")]
    NotEnoughStake { stake: u64, required: u64 },
    #[error("signature of signer {0} is invalid")]
    BadSignature(MemberIndex),
    #[error("a genesis certificate must have round 0, height 0 and no signatures")]
    BadGenesis,
}

/// Checks distinct known signers and their stake, then verifies every signature in one batch.
pub(crate) fn verify_signed<'a>(
    committee: &Committee,
    signers: impl Iterator<Item = (MemberIndex, &'a [u8], &'a Signature)>,
    required: u64,
) -> Result<(), CertError> {
    let mut seen = BTreeSet::new();
    let mut stake = 0u64;
    let mut keys = Vec::new();
    let mut entries = Vec::new();
    for (signer, message, signature) in signers {
        let key = committee
            .key(signer)
            .ok_or(CertError::UnknownSigner(signer))?;
        if !seen.insert(signer) {
            return Err(CertError::DuplicateSigner(signer));
        }
        stake += committee.stake(signer);
        keys.push(signer);
        entries.push(SigEntry {
            message,
            key: &key.0,
            signature: &signature.0,
        });
    }
    if stake < required {
        return Err(CertError::NotEnoughStake { stake, required });
    }
    match crate::verdicts::verify_batch(&entries).first() {
        Some(&bad) => Err(CertError::BadSignature(keys[bad])),
        None => Ok(()),
    }
}

/// Checks a QC of `epoch`'s committee.
pub fn verify_qc(qc: &QuorumCert, committee: &Committee, epoch: u64) -> Result<(), CertError> {
    if qc.block == GENESIS_HASH || qc.round == 0 {
        return if qc.is_genesis() {
            Ok(())
        } else {
            Err(CertError::BadGenesis)
        };
    }
    let digest = qc.digest(epoch);
    let signers = qc
        .signatures
        .iter()
        .map(|s| (s.signer, &digest.0[..], &s.signature));
    verify_signed(committee, signers, committee.quorum_stake())
}

/// Checks a TC of `epoch`'s committee.
pub fn verify_tc(tc: &TimeoutCert, committee: &Committee, epoch: u64) -> Result<(), CertError> {
    let digests: Vec<Hash32> = tc
        .signatures
        .iter()
        .map(|s| timeout_digest(epoch, tc.round, s.high_qc_round))
        .collect();
    let signers = tc
        .signatures
        .iter()
        .zip(&digests)
        .map(|(s, d)| (s.signer, &d.0[..], &s.signature));
    verify_signed(committee, signers, committee.quorum_stake())
}

/// Checks a package certificate of `epoch`'s committee.
pub fn verify_availability(
    cert: &AvailabilityCert,
    committee: &Committee,
    epoch: u64,
) -> Result<(), CertError> {
    let digests: Vec<Hash32> = cert
        .acks
        .iter()
        .map(|a| ack_digest(epoch, &cert.package, cert.size, a.checked))
        .collect();
    let signers = cert
        .acks
        .iter()
        .zip(&digests)
        .map(|(a, d)| (a.signer, &d.0[..], &a.signature));
    verify_signed(committee, signers, committee.quorum_stake())
}

/// Verifies one member's signature over a digest.
pub fn verify_member(
    committee: &Committee,
    signer: MemberIndex,
    digest: &Hash32,
    signature: &Signature,
) -> bool {
    verify_signed(
        committee,
        std::iter::once((signer, &digest.0[..], signature)),
        0,
    )
    .is_ok()
}

/// Why untrusted bytes are not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageDecodeError {
    #[error("{len} bytes exceed the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("{what}: {count} exceeds the limit of {max}")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("witness: {0}")]
    Witness(#[from] WitnessDecodeError),
    #[error("transaction {index} of the package: {source}")]
    Transaction {
        index: usize,
        #[source]
        source: cas_engine::DecodeError,
    },
}

/// Validates untrusted bytes as a message (size, bytecheck, every count bounded) and returns it owned.
pub fn decode_message(bytes: &[u8]) -> Result<Message, MessageDecodeError> {
    if bytes.len() > MESSAGE_BYTES_MAX {
        return Err(MessageDecodeError::TooLarge {
            len: bytes.len(),
            max: MESSAGE_BYTES_MAX,
        });
    }
    let archived = rkyv::access::<ArchivedMessage, cas_engine::codec::CheckError>(bytes)
        .map_err(|e| MessageDecodeError::Malformed(cas_engine::text::reason(&e)))?;
    let bound = |what, count: usize, max| {
        if count > max {
            Err(MessageDecodeError::TooMany { what, count, max })
        } else {
            Ok(())
        }
    };
    match archived {
        ArchivedMessage::Proposal(block) | ArchivedMessage::BlockResponse(block) => {
            bound(
                "qc signatures",
                block.qc.signatures.len(),
                COMMITTEE_MEMBERS_MAX,
            )?;
            if let Some(tc) = block.tc.as_ref() {
                bound("tc signatures", tc.signatures.len(), COMMITTEE_MEMBERS_MAX)?;
            }
            bound(
                "payload certificates",
                block.payload.len(),
                PAYLOAD_CERTS_MAX,
            )?;
            for cert in block.payload.iter() {
                bound("acks", cert.acks.len(), COMMITTEE_MEMBERS_MAX)?;
            }
            bound(
                "carried witnesses",
                block.witnesses.len(),
                BLOCK_WITNESSES_MAX,
            )?;
            for witness in block.witnesses.iter() {
                check_witness_bounds(witness)?;
            }
        }
        ArchivedMessage::Timeout(timeout) => bound(
            "qc signatures",
            timeout.high_qc.signatures.len(),
            COMMITTEE_MEMBERS_MAX,
        )?,
        ArchivedMessage::Cert(cert) => bound("acks", cert.acks.len(), COMMITTEE_MEMBERS_MAX)?,
        ArchivedMessage::Package(package) => {
            bound("package transactions", package.txs.len(), PACKAGE_TXS_MAX)?;
            // Each transaction must pass the engine's own bounds.
            for (index, tx) in package.txs.iter().enumerate() {
                cas_engine::codec::check_tx_bounds(tx)
                    .map_err(|source| MessageDecodeError::Transaction { index, source })?;
            }
        }
        ArchivedMessage::Witness(header) => check_witness_bounds(header)?,
        ArchivedMessage::SnapshotChunk(chunk) => bound(
            "snapshot chunk bytes",
            chunk.entries.len(),
            SNAPSHOT_CHUNK_BYTES_MAX,
        )?,
        ArchivedMessage::SnapshotInfoRequest
        | ArchivedMessage::SnapshotInfo(_)
        | ArchivedMessage::SnapshotChunkRequest(_)
        | ArchivedMessage::Vote(_)
        | ArchivedMessage::CommitVote(_)
        | ArchivedMessage::Ack(_)
        | ArchivedMessage::BlockRequest(_)
        | ArchivedMessage::PackageRequest(_)
        | ArchivedMessage::LedgerVote(_)
        | ArchivedMessage::HandoverVote(_) => {}
    }
    rkyv::deserialize::<Message, cas_engine::codec::CheckError>(archived)
        .map_err(|e| MessageDecodeError::Malformed(cas_engine::text::reason(&e)))
}

pub fn encode_message(message: &Message) -> rkyv::util::AlignedVec {
    rkyv::to_bytes::<rkyv::rancor::Error>(message).expect("archiving into memory cannot fail")
}
