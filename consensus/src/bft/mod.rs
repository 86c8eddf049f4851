//! Pipelined BFT among the DPOS committee: one leader per round in turn, 2-chain commit (HotStuff-2 / Jolteon).
//!
//! The protocol, as this state machine runs it:
//! - **Propose.** The leader of round r proposes a block extending its highest QC. If round r-1 ended with a QC the
//!   block carries it; if it ended in a timeout certificate (TC), the block carries the TC as well.
//! - **Vote.** A member votes for a round-r block at most once (r > last voted round), and only if it extends the
//!   QC of round r-1, or carries a TC of round r-1 and extends a QC at least as high as every QC reported in that
//!   TC. The safety state (last voted round, highest QC) is persisted before the vote leaves (`Action::Persist`
//!   first). Votes go to every member, so every member forms the QC itself and learns it one message delay after
//!   the votes; the next leader proposes as soon as it has it.
//! - **Commit (2-chain).** When a QC certifies block B whose parent P has round B.round - 1, P and its uncommitted
//!   ancestors are final, in height order. Missing ancestors are fetched (`BlockRequest`) first.
//! - **Commit (fast path, 3 message delays).** A member that learns the QC of block B (round r) and has sent no
//!   timeout for round r or later persists its highest QC and broadcasts a commit vote for B; commit votes of more
//!   than two thirds of the stake make B final at once, one message delay after the QC instead of two. It is the
//!   2-chain argument with the child's votes replaced by explicit ones: f+1 honest commit voters hold QC(B), and
//!   each of their timeouts for any round >= r comes after their commit vote, so reports a QC round >= r.
//! - **Timeouts.** A member that sees no progress before its deadline persists and broadcasts a signed timeout
//!   carrying its highest QC, and votes in that round no more; 2f+1 timeouts form a TC that moves everyone to the
//!   next round. f+1 timeouts for a round ahead make a member join it (so rounds converge after a partition).
//!   Timeouts back off exponentially while rounds keep failing and are re-broadcast until a TC forms.
//!
//! Why it is safe: if P commits, f+1 honest members voted for its certified child B and hold QC(P) as highest QC.
//! Any later TC includes one of them, so any block voted through a TC extends a QC of round >= P.round, and a
//! block voted through a QC extends a certified block whose chain already contains P. Certificates are checked
//! with the engine's batch verification; verified QCs are cached so each is checked once per member.
//!
//! Blocks also carry POW witness headers the leader holds and no ancestor carried (bounded in count and bytes), so
//! that the witness chain the ledger's rewards are minted from has one order on every node; voters check the bound
//! and the headers' claimed work only (their validity is judged, the same way everywhere, at execution).
//!
//! **Epochs.** One instance runs one committee's epoch (`BftConfig::epoch`, signed into every block and timeout, so
//! nothing of one epoch counts in another even when the committee is re-elected unchanged). With a last height
//! (`BftConfig::last_height`) it orders payload up to that height only; above it leaders propose *tail* blocks
//! without payload or witnesses, which exist only so the 2-chain rule can make the last height final when the fast
//! path does not; commits stop at the last height and [`Action::EpochEnd`] names it once. The next committee's
//! instance starts from that block ([`Recovered::at_base`]): its chain extends a *base* certificate (round 0, no
//! signatures) that it accepts for its own base only, as epoch 0's extends genesis. Safety across the boundary is
//! each instance's own (the base is final before the next instance exists); `consensus/tests/epochs.rs` runs
//! hand-overs under loss, crashes and splits at the boundary.
//!
//! This module holds the state machine's state, configuration and entry points (`new`, `handle`, the pools' inputs,
//! `install_base`); its steps live beside it: `rounds` (entering rounds, proposing, timeouts), `votes` (votes, commit
//! votes and timeouts received), `commit` (blocks, certificates and the commit rules), `payload` and `witnesses`
//! (what a proposal carries). It never does IO, reads a clock or draws randomness: every effect is an [`Action`].

mod commit;
mod payload;
mod rounds;
mod votes;
mod witnesses;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use cas_engine::{BlockHash, Keypair, PackageId};

use crate::bounded::BoundedSet;
use crate::committee::{Committee, MemberIndex};
use crate::leader::LeaderSchedule;
use crate::limits;
use crate::messages::{
    AvailabilityCert, Block, Message, PackageSize, QuorumCert, Round, Timeout, TimeoutCert, Vote,
};
use crate::protocol::ProtocolSchedule;
use crate::witness::{WitnessHash, WitnessHeader};
use crate::Action;

pub use crate::limits::{
    BLOCKS_PRUNE_STEP, CERT_RESEND_MS, COMMITTED_PACKAGES_KEPT, COMMITTED_WITNESSES_KEPT,
    FUTURE_ROUNDS_MAX, SEQUENCE_GAP_WAIT_MS, VERIFIED_CACHE_MAX, WITNESS_POOL_MAX,
};

#[derive(Clone, Debug)]
pub struct BftConfig {
    /// The first timeout of a round.
    pub round_timeout_ms: u64,
    /// The cap of the exponential backoff.
    pub round_timeout_max_ms: u64,
    /// Certificates per proposed block.
    pub payload_certs_max: usize,
    /// Other members' certificates waiting for a proposal; a full pool refuses more of theirs (each creator keeps
    /// its own and proposes them when it leads). This member's own certificates are always taken.
    pub payload_pool_max: usize,
    /// Committed blocks kept in memory for members that catch up.
    pub blocks_kept: u64,
    /// Their encoded bytes kept, in all (estimated, [`Block::encoded_bytes_estimate`]): the window is whichever
    /// bound is reached first, so under load it holds fewer, larger blocks instead of growing with block size.
    pub blocks_bytes_kept: usize,
    /// How long an unanswered block request waits before it is sent again.
    pub request_retry_ms: u64,
    /// A leader with nothing to propose waits this long for payload before proposing an empty block, so an idle
    /// chain does not spin through rounds (0: propose at once). Must be well under the round timeout.
    pub empty_block_wait_ms: u64,
    /// A leader with some new payload, but less than one certificate per member, waits up to this long from the
    /// round's start for more before proposing (0: propose at once). At low load this batches several packages per
    /// block instead of one, so the per-block work (votes, fsyncs, a ledger block on every member) does not grow
    /// with the number of packages; under load a block fills at once and nothing waits. At most
    /// `empty_block_wait_ms` (ignored when that is 0).
    pub proposal_wait_ms: u64,
    /// Which rules each height follows ([`crate::protocol`]): the same on every member.
    pub protocol: ProtocolSchedule,
    /// The committee epoch this instance runs (0: the genesis committee's), signed into its blocks and timeouts.
    pub epoch: u64,
    /// The epoch's last height (None: the committee serves for good). Blocks above it are *tail* blocks: no payload,
    /// no witnesses, there only so the 2-chain rule can make the last height final; they are never committed to the
    /// ledger. Once the last height is final the instance says so ([`Action::EpochEnd`]) and the next epoch's
    /// instance starts from it ([`Recovered::at_base`]).
    pub last_height: Option<u64>,
}

impl Default for BftConfig {
    fn default() -> Self {
        BftConfig {
            round_timeout_ms: limits::ROUND_TIMEOUT_MS_DEFAULT,
            round_timeout_max_ms: limits::ROUND_TIMEOUT_MAX_MS_DEFAULT,
            payload_certs_max: limits::PAYLOAD_CERTS_MAX_DEFAULT,
            payload_pool_max: limits::PAYLOAD_POOL_MAX_DEFAULT,
            blocks_kept: limits::BLOCKS_KEPT_DEFAULT,
            blocks_bytes_kept: limits::BLOCKS_BYTES_KEPT_DEFAULT,
            request_retry_ms: limits::REQUEST_RETRY_MS_DEFAULT,
            empty_block_wait_ms: limits::EMPTY_BLOCK_WAIT_MS_DEFAULT,
            proposal_wait_ms: limits::PROPOSAL_WAIT_MS_DEFAULT,
            protocol: ProtocolSchedule::default(),
            epoch: 0,
            last_height: None,
        }
    }
}

/// What must survive a crash for this member to stay safe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SafetyState {
    pub last_voted_round: Round,
    pub high_qc: QuorumCert,
    /// The highest round this member sent a timeout for: it never commit-votes a block of that round or earlier.
    pub last_timeout_round: Round,
}

impl Default for SafetyState {
    fn default() -> Self {
        SafetyState {
            last_voted_round: 0,
            high_qc: QuorumCert::genesis(),
            last_timeout_round: 0,
        }
    }
}

/// The block an instance starts from: genesis for epoch 0, the last block of the epoch before otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Base {
    pub height: u64,
    pub hash: BlockHash,
    /// Its timestamp: the first block above it may not be stamped earlier (monotonic timestamps).
    pub timestamp_ms: u64,
}

impl Base {
    pub const GENESIS: Base = Base {
        height: 0,
        hash: crate::messages::GENESIS_HASH,
        timestamp_ms: 0,
    };

    /// The certificate that stands for it ([`QuorumCert::base`]).
    pub fn qc(&self) -> QuorumCert {
        QuorumCert::base(self.height, self.hash)
    }
}

impl Default for Base {
    fn default() -> Self {
        Base::GENESIS
    }
}

/// What a restarting member reads back from its disk.
#[derive(Clone, Debug, Default)]
pub struct Recovered {
    pub safety: SafetyState,
    /// Stored blocks, any order.
    pub blocks: Vec<Block>,
    /// The last committed block, if any.
    pub committed: Option<(u64, BlockHash)>,
    /// Where the instance's chain starts (genesis unless it is a later epoch's).
    pub base: Base,
}

impl Recovered {
    /// A fresh instance of a later epoch, starting from `base` (final by the previous committee).
    pub fn at_base(base: Base) -> Recovered {
        Recovered {
            safety: SafetyState {
                high_qc: base.qc(),
                ..SafetyState::default()
            },
            blocks: Vec::new(),
            committed: Some((base.height, base.hash)),
            base,
        }
    }
}

// A message event is moved once from the driver into `handle`; boxing it would cost an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Event {
    Tick { now_ms: u64 },
    Message { from: MemberIndex, message: Message },
}

crate::counters! {
    /// Counters an operator (or the simulator) reads.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct BftStats {
        pub proposals: u64,
        pub votes_sent: u64,
        pub qcs_formed: u64,
        pub commit_votes_sent: u64,
        /// Commits made final by commit votes (the fast path) rather than by the 2-chain rule.
        pub fast_commits: u64,
        pub tcs_formed: u64,
        pub timeouts_sent: u64,
        pub commits: u64,
        /// Invalid messages refused (bad signature, wrong leader, bad certificate).
        pub refused: u64,
        /// A commit that did not extend this member's committed chain: a safety violation, never expected.
        pub conflicting_commits: u64,
        /// Payload certificates refused because the pool was full.
        pub payload_refused: u64,
        /// Witness headers refused because the witness pool was full.
        pub witnesses_refused: u64,
        /// Witness headers carried by committed blocks.
        pub witnesses_committed: u64,
        /// Blocks refused because their protocol version is not the one this member's schedule gives their height: a
        /// member on one side of an upgrade the other side did not schedule (also counted in `refused`).
        pub protocol_refused: u64,
        /// Proposals not voted for because their timestamp broke the version's rules (behind its parent, or too far
        /// ahead of this member's clock).
        pub timestamps_refused: u64,
        /// Blocks refused for naming another epoch, or for carrying payload or witnesses above the epoch's last height.
        pub epoch_refused: u64,
        /// Members proven to have voted for two blocks in one round ([`Action::Equivocation`]), once per round.
        pub equivocations: u64,
        /// Tail blocks committed (above the epoch's last height: never delivered).
        pub tail_commits: u64,
        /// Votes that arrived after their round's QC formed and joined it before it was carried.
        pub late_votes: u64,
        /// The epoch's last height was made final together with a tail block (its 2-chain, or commit votes on it), not
        /// by commit votes on the last height itself.
        pub ends_through_tail: u64,
    }
}

pub struct Bft {
    committee: Committee,
    /// Where this instance's chain starts.
    base: Base,
    /// The epoch's last height is final and [`Action::EpochEnd`] was emitted.
    epoch_ended: bool,
    me: MemberIndex,
    keypair: Keypair,
    config: BftConfig,
    now_ms: u64,
    round: Round,
    safety: SafetyState,
    /// The TC that ended the round before `round`, when it ended that way.
    last_tc: Option<TimeoutCert>,
    blocks: BTreeMap<BlockHash, Block>,
    committed_height: u64,
    committed_hash: BlockHash,
    /// The height of the last snapshot installed ([`Bft::install_base`]); 0 when none was.
    installed_height: u64,
    /// Recent committed blocks by height, to recognise a commit rule firing for a block that conflicts with them.
    committed_by_height: BTreeMap<u64, BlockHash>,
    /// Blocks below this height have been pruned (see `try_commit`).
    pruned_below: u64,
    /// The committed blocks in the window, oldest first, with their estimated bytes, and those bytes in all.
    committed_bytes: VecDeque<(u64, usize)>,
    committed_bytes_total: usize,
    /// The highest block that the commit rule made final but whose ancestors are not all here yet.
    commit_target: Option<BlockHash>,
    /// The block accepted for each round above the committed one without having been requested: a second one for
    /// the same round (an equivocating leader) is refused unless a certificate makes us request it.
    round_blocks: BTreeMap<Round, BlockHash>,
    /// When our own uncommitted certificates were last sent again.
    certs_resent_ms: u64,
    /// Who leads each round, from the recent committed history ([`crate::leader`]).
    leaders: LeaderSchedule,
    /// The first round this member voted in since it started: once its votes have had time to reach committed
    /// QCs, the others count it active, so it takes its turns even while its own history is behind.
    voting_since: Option<Round>,
    votes: BTreeMap<(Round, BlockHash), BTreeMap<MemberIndex, Vote>>,
    commit_votes: BTreeMap<(Round, BlockHash), BTreeMap<MemberIndex, Vote>>,
    /// The highest round this member sent a commit vote for.
    commit_voted_round: Round,
    timeouts: BTreeMap<Round, BTreeMap<MemberIndex, Timeout>>,
    /// Rounds for which this member already formed a QC or TC.
    qc_rounds: BTreeSet<Round>,
    tc_rounds: BTreeSet<Round>,
    verified_qcs: BoundedSet<cas_engine::Hash32>,
    /// (member, round) of the equivocations already reported.
    equivocations: BoundedSet<(MemberIndex, Round)>,
    /// Certificates verified, by what their acks sign (the size too: a leader cannot swap it in a verified one).
    verified_certs: BoundedSet<(PackageId, PackageSize)>,
    round_deadline_ms: u64,
    round_started_ms: u64,
    /// This member leads the current round and has not proposed yet (waiting for payload).
    proposal_waiting: bool,
    consecutive_timeouts: u32,
    /// The timeout this member sent for the current round, re-broadcast until a TC forms.
    my_timeout: Option<(Timeout, u64)>,
    requested: BTreeMap<BlockHash, u64>,
    payload_pool: VecDeque<AvailabilityCert>,
    pool_arrival_ms: BTreeMap<PackageId, u64>,
    /// Per creator, the package sequence after the last one committed.
    next_sequence: BTreeMap<MemberIndex, u64>,
    deferred: Vec<Action>,
    committed_packages: BoundedSet<PackageId>,
    /// Witness headers to carry, lowest height first.
    witness_pool: BTreeMap<(u64, WitnessHash), WitnessHeader>,
    committed_witnesses: BoundedSet<WitnessHash>,
    pub stats: BftStats,
    /// Test-only: vote for any proposal from the round's leader, ignoring which QC it extends.
    #[cfg(test)]
    pub(crate) broken_vote_rule: bool,
    /// Test-only: commit-vote even after having timed out in the block's round.
    #[cfg(test)]
    pub(crate) broken_commit_vote_rule: bool,
}

impl Bft {
    /// Starts (or restarts) a member from what its disk holds.
    pub fn new(
        committee: Committee,
        me: MemberIndex,
        keypair: Keypair,
        config: BftConfig,
        recovered: Recovered,
        now_ms: u64,
    ) -> (Bft, Vec<Action>) {
        assert_eq!(
            committee.key(me),
            Some(&keypair.public()),
            "the key must be member {me}'s"
        );
        assert!(
            config.empty_block_wait_ms < config.round_timeout_ms,
            "an empty-block wait must leave the round time to finish"
        );
        assert!(
            config.empty_block_wait_ms == 0
                || config.proposal_wait_ms <= config.empty_block_wait_ms,
            "a leader with payload waits no longer than one without"
        );
        let base = recovered.base;
        let (committed_height, committed_hash) =
            recovered.committed.unwrap_or((base.height, base.hash));
        assert!(
            committed_height >= base.height,
            "an instance never commits below its base"
        );
        let mut bft = Bft {
            committee,
            base,
            epoch_ended: false,
            me,
            keypair,
            config,
            now_ms,
            round: 0,
            safety: recovered.safety,
            last_tc: None,
            blocks: recovered
                .blocks
                .into_iter()
                .map(|b| (b.hash(), b))
                .collect(),
            committed_height,
            committed_hash,
            installed_height: 0,
            committed_by_height: BTreeMap::from([(committed_height, committed_hash)]),
            round_blocks: BTreeMap::new(),
            certs_resent_ms: 0,
            leaders: LeaderSchedule::from_genesis(),
            voting_since: None,
            pruned_below: 0,
            committed_bytes: VecDeque::new(),
            committed_bytes_total: 0,
            commit_target: None,
            votes: BTreeMap::new(),
            commit_votes: BTreeMap::new(),
            commit_voted_round: 0,
            timeouts: BTreeMap::new(),
            qc_rounds: BTreeSet::new(),
            tc_rounds: BTreeSet::new(),
            verified_qcs: BoundedSet::new(VERIFIED_CACHE_MAX),
            equivocations: BoundedSet::new(VERIFIED_CACHE_MAX),
            verified_certs: BoundedSet::new(VERIFIED_CACHE_MAX),
            round_deadline_ms: 0,
            round_started_ms: now_ms,
            proposal_waiting: false,
            consecutive_timeouts: 0,
            my_timeout: None,
            requested: BTreeMap::new(),
            payload_pool: VecDeque::new(),
            pool_arrival_ms: BTreeMap::new(),
            next_sequence: BTreeMap::new(),
            deferred: Vec::new(),
            committed_packages: BoundedSet::new(COMMITTED_PACKAGES_KEPT),
            witness_pool: BTreeMap::new(),
            committed_witnesses: BoundedSet::new(COMMITTED_WITNESSES_KEPT),
            stats: BftStats::default(),
            #[cfg(test)]
            broken_vote_rule: false,
            #[cfg(test)]
            broken_commit_vote_rule: false,
        };
        bft.restore_leader_history();
        let mut actions = Vec::new();
        // Restarted with the epoch's last height already committed (a crash between the commit and the hand-over):
        // say so again, so the next instance starts.
        if bft.config.last_height == Some(bft.committed_height)
            && bft.committed_height > base.height
        {
            if let Some(last) = bft.blocks.get(&bft.committed_hash) {
                bft.epoch_ended = true;
                actions.push(Action::EpochEnd(Base {
                    height: last.height,
                    hash: bft.committed_hash,
                    timestamp_ms: last.timestamp_ms,
                }));
            }
        }
        let start = bft.safety.high_qc.round.max(bft.safety.last_voted_round) + 1;
        bft.enter_round(start, false, &mut actions);
        (bft, actions)
    }

    pub fn round(&self) -> Round {
        self.round
    }

    /// The leader of `round`, as this member sees it now ([`crate::leader`]).
    pub fn leader(&self, round: Round) -> MemberIndex {
        self.leaders.leader(&self.committee, round)
    }

    /// Whether this member's history covers `round`, so that it holds others to [`Bft::leader`] there.
    pub fn knows_leader(&self, round: Round) -> bool {
        self.leaders.covers(round)
    }

    pub fn committed_height(&self) -> u64 {
        self.committed_height
    }

    /// The committee epoch this instance runs.
    pub fn epoch(&self) -> u64 {
        self.config.epoch
    }

    /// Whether the epoch's last height is final (the instance proposes only tail blocks from here).
    pub fn epoch_ended(&self) -> bool {
        self.epoch_ended
    }

    /// Whether `qc` is the certificate this instance starts from (no signatures: see [`QuorumCert::base`]).
    pub(crate) fn is_base(&self, qc: &QuorumCert) -> bool {
        qc.round == 0 && qc.height == self.base.height && qc.block == self.base.hash
    }

    pub fn me(&self) -> MemberIndex {
        self.me
    }

    /// The height of the highest QC this member holds: how far the committee is known to be.
    pub fn high_qc_height(&self) -> u64 {
        self.safety.high_qc.height
    }

    /// The node installed a UTXO snapshot at `height`, whose committed consensus block is `hash` (trusted because
    /// more than a third of the stake reported it): the committed chain continues from there. Blocks at or below it
    /// are forgotten and never voted for (see `safe_to_vote`: a belt on top of the round rules, which alone keep
    /// every member safe, this one after a restart included); a commit target above it is pursued from `height + 1`
    /// (its missing blocks are requested again). Returns the actions that follow (requests, commits).
    pub fn install_base(&mut self, height: u64, hash: BlockHash) -> Vec<Action> {
        assert!(
            height > self.committed_height,
            "a snapshot base moves the committed height forward"
        );
        self.committed_height = height;
        self.committed_hash = hash;
        self.installed_height = height;
        self.committed_by_height = BTreeMap::from([(height, hash)]);
        self.committed_bytes.clear();
        self.committed_bytes_total = 0;
        self.leaders.reset();
        self.blocks.retain(|_, b| b.height >= height);
        self.requested.clear();
        if self
            .commit_target
            .is_some_and(|t| self.blocks.get(&t).is_none_or(|b| b.height <= height))
        {
            self.commit_target = None;
        }
        let mut actions = self.take_deferred();
        // The highest QC may certify a block whose parent is now final-able: run the commit rule for it again.
        let high_qc = self.safety.high_qc.clone();
        if high_qc.height > height {
            self.process_qc(high_qc, &mut actions);
        }
        self.try_commit(&mut actions);
        actions
    }

    /// Actions produced outside `handle` (a waiting proposal released by new payload); the driver takes them.
    pub fn take_deferred(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.deferred)
    }

    /// The protocol version blocks at `height` follow under this member's schedule.
    pub fn protocol_at(&self, height: u64) -> u32 {
        self.config.protocol.at(height)
    }

    /// The first scheduled upgrade above `height`.
    pub fn protocol_next_after(&self, height: u64) -> Option<crate::protocol::ProtocolUpgrade> {
        self.config.protocol.next_after(height)
    }

    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        let mut actions = self.take_deferred();
        match event {
            Event::Tick { now_ms } => self.on_tick(now_ms, &mut actions),
            Event::Message { from, message } => match message {
                Message::Proposal(block) => self.on_block(from, block, true, &mut actions),
                Message::BlockResponse(block) => self.on_block(from, block, false, &mut actions),
                // Members send their own votes and timeouts, never relay others': one that names another signer
                // than its sender is refused before it is held.
                Message::Vote(vote) | Message::CommitVote(vote) if vote.signer != from => {
                    self.stats.refused += 1
                }
                Message::Timeout(timeout) if timeout.signer != from => self.stats.refused += 1,
                Message::Vote(vote) => self.on_vote(vote, &mut actions),
                Message::CommitVote(vote) => self.on_commit_vote(vote, &mut actions),
                Message::Timeout(timeout) => self.on_timeout(timeout, &mut actions),
                Message::BlockRequest(hash) => {
                    if let Some(block) = self.blocks.get(&hash) {
                        actions.push(Action::Send {
                            to: from,
                            message: Message::BlockResponse(block.clone()),
                        });
                    }
                }
                Message::Package(_)
                | Message::Ack(_)
                | Message::Cert(_)
                | Message::PackageRequest(_)
                | Message::Witness(_)
                | Message::SnapshotInfoRequest
                | Message::SnapshotInfo(_)
                | Message::SnapshotChunkRequest(_)
                | Message::SnapshotChunk(_)
                | Message::LedgerVote(_)
                | Message::HandoverVote(_) => {}
            },
        }
        actions
    }
}
