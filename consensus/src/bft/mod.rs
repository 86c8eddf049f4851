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

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use cas_engine::{BlockHash, Keypair, PackageId};

use crate::bounded::BoundedSet;
use crate::committee::{Committee, MemberIndex};
use cas_engine::crypto::SigEntry;

use crate::leader::{LeaderSchedule, LEADER_LAG_ROUNDS, LEADER_WINDOW_ROUNDS};
use crate::messages::{
    commit_vote_digest, timeout_digest, verify_availability, verify_member, verify_qc, verify_tc,
    vote_digest, witness_bytes, AvailabilityCert, Block, Message, PackageSize, QuorumCert, Round,
    SignerSignature, Timeout, TimeoutCert, TimeoutSignature, Vote, BLOCK_PAYLOAD_BYTES_MAX,
    BLOCK_PAYLOAD_TXS_MAX, BLOCK_WITNESSES_MAX, BLOCK_WITNESS_BYTES_MAX,
};
use crate::witness::{encode_witness, meets_difficulty, WitnessHash, WitnessHeader};
use crate::Action;

/// Certificates remembered as verified (each is verified once while remembered; a forgotten one is verified again).
pub const VERIFIED_CACHE_MAX: usize = 65_536;
/// Committed package ids remembered, so a late certificate of one is not proposed again.
pub const COMMITTED_PACKAGES_KEPT: usize = 262_144;

/// Witness headers waiting to be carried by a proposal; a full pool refuses more (counted).
pub const WITNESS_POOL_MAX: usize = 256;
/// Carried witness hashes remembered, so one is not proposed again.
pub const COMMITTED_WITNESSES_KEPT: usize = 65_536;

/// How long a creator's package may wait in the pool for a missing predecessor before it is proposed anyway (the
/// predecessor's certificate may never come: its creator crashed before sending it).
pub const SEQUENCE_GAP_WAIT_MS: u64 = 2_000;
/// How often a member sends its own uncommitted certificates again (see `on_tick`): well under
/// [`SEQUENCE_GAP_WAIT_MS`], so a member that missed one has it before it would give up waiting.
pub const CERT_RESEND_MS: u64 = 500;
const _: () = assert!(CERT_RESEND_MS * 2 < SEQUENCE_GAP_WAIT_MS);

/// Votes, timeouts and unrequested blocks further ahead than this many rounds are ignored, bounding what a
/// Byzantine member can make us hold: at most one vote, one commit vote and one timeout per member and round, and
/// one unrequested block per round, over this window. Honest members' rounds stay within a few of each other (each
/// round needs a quorum to end); one far behind learns the round from certificates, not from votes.
pub const FUTURE_ROUNDS_MAX: Round = 100;
/// Committed heights between passes that prune the blocks below the kept window, at most.
pub const BLOCKS_PRUNE_STEP: u64 = 64;

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
}

impl Default for BftConfig {
    fn default() -> Self {
        BftConfig {
            round_timeout_ms: 1_000,
            round_timeout_max_ms: 10_000,
            payload_certs_max: 256,
            payload_pool_max: 4_096,
            blocks_kept: 10_000,
            blocks_bytes_kept: 64 * 1024 * 1024,
            request_retry_ms: 500,
            empty_block_wait_ms: 100,
            proposal_wait_ms: 0,
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

/// What a restarting member reads back from its disk.
#[derive(Clone, Debug, Default)]
pub struct Recovered {
    pub safety: SafetyState,
    /// Stored blocks, any order.
    pub blocks: Vec<Block>,
    /// The last committed block, if any.
    pub committed: Option<(u64, BlockHash)>,
}

// A message event is moved once from the driver into `handle`; boxing it would cost an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Event {
    Tick { now_ms: u64 },
    Message { from: MemberIndex, message: Message },
}

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
}

pub struct Bft {
    committee: Committee,
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
        let (committed_height, committed_hash) = recovered
            .committed
            .unwrap_or((0, crate::messages::GENESIS_HASH));
        let mut bft = Bft {
            committee,
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

    /// Rebuilds the leader history (and the committed round) from the committed chain read back at a restart:
    /// walks back from the committed block through the stored blocks as far as the history reaches.
    fn restore_leader_history(&mut self) {
        if self.committed_height == 0 {
            return;
        }
        let mut chain = Vec::new();
        let mut cursor = self.committed_hash;
        let mut reached_genesis = false;
        while let Some(block) = self.blocks.get(&cursor) {
            chain.push(block);
            if block.height == 1 {
                reached_genesis = true;
                break;
            }
            let newest = chain[0].round;
            if block.round + LEADER_LAG_ROUNDS + LEADER_WINDOW_ROUNDS < newest {
                break;
            }
            cursor = block.parent();
        }
        chain.reverse();
        let mut leaders = LeaderSchedule::default();
        leaders.restore(&chain, reached_genesis);
        self.leaders = leaders;
    }

    pub fn committed_height(&self) -> u64 {
        self.committed_height
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

    /// Offers a certified package for a future proposal; false when the pool is full (back-pressure) or the
    /// certificate does not verify. Our own certificates are always taken: their submitters have been told
    /// `accepted`, so this member must be able to propose them (its admission bounds how many there are).
    pub fn add_payload(&mut self, cert: AvailabilityCert) -> bool {
        if self.committed_packages.contains(&cert.package)
            || self.payload_pool.iter().any(|c| c.package == cert.package)
        {
            return true;
        }
        if self.payload_pool.len() >= self.config.payload_pool_max && cert.creator != self.me {
            self.stats.payload_refused += 1;
            return false;
        }
        if !self.verified_certs.contains(&(cert.package, cert.size)) {
            if verify_availability(&cert, &self.committee).is_err() {
                self.stats.refused += 1;
                return false;
            }
            self.verified_certs.insert((cert.package, cert.size));
        }
        self.pool_arrival_ms.insert(cert.package, self.now_ms);
        self.payload_pool.push_back(cert);
        if self.proposal_waiting && (self.config.proposal_wait_ms == 0 || self.ready_to_propose()) {
            let mut actions = Vec::new();
            self.propose(&mut actions);
            self.deferred.extend(actions);
        }
        true
    }

    /// Offers a witness header (one the node's witness chain accepted) for a future proposal to carry; false when
    /// the pool is full. A header already carried or pooled is taken as done.
    pub fn add_witness(&mut self, header: WitnessHeader) -> bool {
        let hash = header.hash();
        let key = (header.height, hash);
        if self.committed_witnesses.contains(&hash) || self.witness_pool.contains_key(&key) {
            return true;
        }
        if self.witness_pool.len() >= WITNESS_POOL_MAX {
            self.stats.witnesses_refused += 1;
            return false;
        }
        self.witness_pool.insert(key, header);
        true
    }

    /// Actions produced outside `handle` (a waiting proposal released by new payload); the driver takes them.
    pub fn take_deferred(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.deferred)
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
                | Message::SnapshotChunk(_) => {}
            },
        }
        actions
    }

    fn timeout_ms(&self) -> u64 {
        let factor = 1u64 << self.consecutive_timeouts.min(16);
        self.config
            .round_timeout_ms
            .saturating_mul(factor)
            .min(self.config.round_timeout_max_ms)
    }

    fn enter_round(&mut self, round: Round, via_timeout: bool, actions: &mut Vec<Action>) {
        debug_assert!(round > self.round || self.round == 0);
        if via_timeout {
            self.consecutive_timeouts = self.consecutive_timeouts.saturating_add(1);
        } else {
            self.consecutive_timeouts = 0;
        }
        self.round = round;
        self.my_timeout = None;
        self.round_deadline_ms = self.now_ms + self.timeout_ms();
        self.round_started_ms = self.now_ms;
        // Old rounds' votes and timeouts can no longer form anything useful.
        let keep_from = round.saturating_sub(2);
        self.votes.retain(|(r, _), _| *r >= keep_from);
        self.commit_votes.retain(|(r, _), _| *r >= keep_from);
        self.timeouts.retain(|r, _| *r >= keep_from);
        self.qc_rounds.retain(|r| *r >= keep_from);
        self.tc_rounds.retain(|r| *r >= keep_from);
        self.proposal_waiting = if self.leaders.covers(round) {
            self.leader(round) == self.me
        } else {
            // Behind on history: its round-robin turn, when the others are stuck (the round began with a TC) or
            // have seen it vote long enough to count it active again.
            let seen_voting = self.voting_since.is_some_and(|since| {
                since.saturating_add(LEADER_LAG_ROUNDS + LEADER_WINDOW_ROUNDS / 2) <= round
            });
            (via_timeout || seen_voting) && self.committee.leader(round) == self.me
        };
        if self.proposal_waiting && self.ready_to_propose() {
            self.propose(actions);
        }
    }

    /// Whether a leader waiting to propose does so now: at once when no wait is configured; with new payload
    /// (certificates no uncommitted block extended by the proposal carries yet) once it is a certificate per member
    /// or the round is `proposal_wait_ms` old; without, once it is `empty_block_wait_ms` old.
    fn ready_to_propose(&self) -> bool {
        if self.config.empty_block_wait_ms == 0 {
            return true;
        }
        let waited_ms = self.now_ms.saturating_sub(self.round_started_ms);
        let new = if self.payload_pool.is_empty() {
            0
        } else {
            self.select_payload(&self.safety.high_qc.block).len()
        };
        if new == 0 {
            return waited_ms >= self.config.empty_block_wait_ms;
        }
        new >= self.committee.size() || waited_ms >= self.config.proposal_wait_ms
    }

    fn propose(&mut self, actions: &mut Vec<Action>) {
        self.proposal_waiting = false;
        let round = self.round;
        if round <= self.safety.last_voted_round {
            return; // Already voted (or proposed) in this round, possibly before a restart.
        }
        let qc = self.safety.high_qc.clone();
        let tc = if qc.round + 1 == round {
            None
        } else {
            match &self.last_tc {
                Some(tc) if tc.round + 1 == round => Some(tc.clone()),
                _ => return, // Entered this round without a certificate of the previous one: cannot justify.
            }
        };
        let payload = self.select_payload(&qc.block);
        let witnesses = self.select_witnesses(&qc.block);
        let block = Block::new_signed(
            &self.keypair,
            self.me,
            round,
            qc,
            tc,
            self.now_ms,
            payload,
            witnesses,
        );
        let hash = block.hash();
        // Proposing is voting: persist first, so a restart can never propose a second block for this round.
        self.safety.last_voted_round = round;
        actions.push(Action::Persist(self.safety.clone()));
        self.stats.proposals += 1;
        actions.push(Action::Broadcast(Message::Proposal(block.clone())));
        actions.push(Action::StoreBlock(block.clone()));
        self.blocks.insert(hash, block.clone());
        self.cast_vote(&block, hash, actions);
    }

    /// The certificates of the next proposal: those no uncommitted ancestor carries, each creator's in sequence
    /// order and without gaps (a creator's package waits for its predecessor, so its client's chain of dependent
    /// transactions runs in order), unless the predecessor has been missing for [`SEQUENCE_GAP_WAIT_MS`].
    fn select_payload(&self, tip: &BlockHash) -> Vec<AvailabilityCert> {
        let mut expected = self.next_sequence.clone();
        let mut in_flight = BTreeSet::new();
        let mut cursor = *tip;
        while let Some(block) = self.blocks.get(&cursor) {
            if block.height <= self.committed_height {
                break;
            }
            for cert in &block.payload {
                in_flight.insert(cert.package);
                let next = expected.entry(cert.creator).or_insert(0);
                *next = (*next).max(cert.sequence + 1);
            }
            cursor = block.parent();
        }
        let mut candidates: Vec<&AvailabilityCert> = self
            .payload_pool
            .iter()
            .filter(|c| {
                !in_flight.contains(&c.package) && !self.committed_packages.contains(&c.package)
            })
            .collect();
        candidates.sort_by_key(|c| (c.creator, c.sequence));
        let mut payload = Vec::new();
        let mut size = PayloadSize::default();
        for cert in candidates {
            // Stops at the first that does not fit: a creator's later package never goes before its earlier one.
            if payload.len() >= self.config.payload_certs_max || !size.add(cert.size) {
                break;
            }
            let next = expected.entry(cert.creator).or_insert(0);
            let waited = self
                .pool_arrival_ms
                .get(&cert.package)
                .map_or(0, |at| self.now_ms.saturating_sub(*at));
            // A member behind on the committed history does not know which sequences are already taken: it never
            // proposes past a gap.
            let gap_given_up = waited >= SEQUENCE_GAP_WAIT_MS && self.leaders.covers(self.round);
            if cert.sequence <= *next || gap_given_up {
                *next = (*next).max(cert.sequence + 1);
                payload.push(cert.clone());
            }
        }
        payload
    }

    /// The witness headers of the next proposal: pooled ones no uncommitted ancestor carries, lowest height first
    /// (a parent or uncle before the witness that needs it), within the count and byte bounds.
    fn select_witnesses(&self, tip: &BlockHash) -> Vec<WitnessHeader> {
        let mut in_flight = BTreeSet::new();
        let mut cursor = *tip;
        while let Some(block) = self.blocks.get(&cursor) {
            if block.height <= self.committed_height {
                break;
            }
            in_flight.extend(block.witnesses.iter().map(WitnessHeader::hash));
            cursor = block.parent();
        }
        let mut witnesses = Vec::new();
        let mut bytes = 0;
        for ((_, hash), header) in &self.witness_pool {
            if witnesses.len() >= BLOCK_WITNESSES_MAX {
                break;
            }
            if in_flight.contains(hash) {
                continue;
            }
            let size = encode_witness(header).len();
            if bytes + size > BLOCK_WITNESS_BYTES_MAX {
                break;
            }
            bytes += size;
            witnesses.push(header.clone());
        }
        witnesses
    }

    /// The stateless checks of carried witnesses: within the bounds, distinct, each carrying the work it claims.
    fn witnesses_acceptable(witnesses: &[WitnessHeader]) -> bool {
        if witnesses.len() > BLOCK_WITNESSES_MAX
            || witness_bytes(witnesses) > BLOCK_WITNESS_BYTES_MAX
        {
            return false;
        }
        let hashes: Vec<WitnessHash> = witnesses.iter().map(WitnessHeader::hash).collect();
        let distinct: BTreeSet<&WitnessHash> = hashes.iter().collect();
        distinct.len() == hashes.len()
            && witnesses
                .iter()
                .zip(&hashes)
                .all(|(w, hash)| meets_difficulty(hash, w.difficulty))
    }

    fn check_qc(&mut self, qc: &QuorumCert) -> bool {
        let digest = qc.digest();
        if self.verified_qcs.contains(&digest) {
            return true;
        }
        if verify_qc(qc, &self.committee).is_err() {
            return false;
        }
        self.verified_qcs.insert(digest);
        true
    }

    /// Checks a block's form, signatures and certificates. Its author must lead its round unless the block was
    /// requested (a certificate names it: who proposed it no longer matters) or this member's history does not
    /// cover the round (it cannot tell who leads; see [`crate::leader`]).
    fn check_block(&mut self, block: &Block, requested: bool) -> bool {
        if (!requested
            && self.leaders.covers(block.round)
            && block.author != self.leader(block.round))
            || block.qc.height.checked_add(1) != Some(block.height)
            || block.round <= block.qc.round
            || block.payload.len() > self.config.payload_certs_max
            || PayloadSize::of(&block.payload).is_none()
            || !Self::witnesses_acceptable(&block.witnesses)
        {
            return false;
        }
        if let Some(tc) = &block.tc {
            if tc.round.checked_add(1) != Some(block.round)
                || verify_tc(tc, &self.committee).is_err()
            {
                return false;
            }
        }
        if !verify_member(
            &self.committee,
            block.author,
            &block.hash(),
            &block.signature,
        ) || !self.check_qc(&block.qc)
        {
            return false;
        }
        for cert in &block.payload {
            if !self.verified_certs.contains(&(cert.package, cert.size)) {
                if verify_availability(cert, &self.committee).is_err() {
                    return false;
                }
                self.verified_certs.insert((cert.package, cert.size));
            }
        }
        true
    }

    fn on_block(&mut self, from: MemberIndex, block: Block, live: bool, actions: &mut Vec<Action>) {
        let hash = block.hash();
        let known = self.blocks.contains_key(&hash);
        if !known {
            let requested = self.requested.contains_key(&hash);
            if !(requested || self.unrequested_block_acceptable(&block, hash))
                || !self.check_block(&block, requested)
            {
                self.stats.refused += 1;
                // Its QC is valid on its own (checked here): a member far behind in rounds, or that does not see
                // the block's author as the round's leader (behind on the history that chose it), still learns
                // the QC, fetches what it certifies and catches up.
                self.learn_qc(&block.qc, actions);
                return;
            }
            if block.round > self.leaders.committed_round() {
                self.round_blocks.entry(block.round).or_insert(hash);
            }
            actions.push(Action::StoreBlock(block.clone()));
            self.blocks.insert(hash, block.clone());
            if self.safety.high_qc.block == hash {
                // The QC for this block came first: run the commit rule for it now that the block is here.
                self.process_qc(self.safety.high_qc.clone(), actions);
            }
        }
        self.requested.remove(&hash);
        if let Some(tc) = &block.tc {
            self.process_tc(tc.clone(), actions);
        }
        self.process_qc(block.qc.clone(), actions);
        if block.height > self.committed_height + 1 && !self.blocks.contains_key(&block.parent()) {
            self.request(block.parent(), Some(from), actions);
        }
        self.try_commit(actions);
        if live && block.round == self.round && self.safe_to_vote(&block) {
            self.vote(&block, hash, actions);
        }
    }

    /// Takes a QC that came with a message this member does not hold (a refused block, a timeout too far ahead)
    /// when it is higher than ours and verifies.
    fn learn_qc(&mut self, qc: &QuorumCert, actions: &mut Vec<Action>) {
        if qc.round > self.safety.high_qc.round && self.check_qc(qc) {
            self.process_qc(qc.clone(), actions);
            self.try_commit(actions);
        }
    }

    /// Whether a block nobody asked for may be held: its round is above the committed one and within
    /// [`FUTURE_ROUNDS_MAX`] of ours, and no other block was taken for its round (an equivocating leader's second
    /// one is fetched only if a certificate names it).
    fn unrequested_block_acceptable(&self, block: &Block, hash: BlockHash) -> bool {
        block.round > self.leaders.committed_round()
            && block.round <= self.round.saturating_add(FUTURE_ROUNDS_MAX)
            && self
                .round_blocks
                .get(&block.round)
                .is_none_or(|taken| *taken == hash)
    }

    /// Whether `vote`'s signer already has a vote held for another block in the same round (equivocation, or a
    /// flood of made-up blocks): only its first is held.
    fn voted_other_block(
        &self,
        held: &BTreeMap<(Round, BlockHash), BTreeMap<MemberIndex, Vote>>,
        vote: &Vote,
    ) -> bool {
        held.range(
            (vote.round, cas_engine::Hash32([0; 32]))
                ..=(vote.round, cas_engine::Hash32([0xff; 32])),
        )
        .any(|((_, block), votes)| *block != vote.block && votes.contains_key(&vote.signer))
    }

    fn safe_to_vote(&self, block: &Block) -> bool {
        if block.round <= self.safety.last_voted_round {
            return false;
        }
        #[cfg(test)]
        if self.broken_vote_rule {
            return true;
        }
        // Below an installed snapshot this member knows no chain to judge a block by: it never votes there.
        if block.height <= self.installed_height {
            return false;
        }
        if block.qc.round.checked_add(1) == Some(block.round) {
            return true;
        }
        block.tc.as_ref().is_some_and(|tc| {
            tc.round.checked_add(1) == Some(block.round) && block.qc.round >= tc.high_qc_round()
        })
    }

    fn vote(&mut self, block: &Block, hash: BlockHash, actions: &mut Vec<Action>) {
        self.voting_since.get_or_insert(block.round);
        self.safety.last_voted_round = block.round;
        actions.push(Action::Persist(self.safety.clone()));
        self.cast_vote(block, hash, actions);
    }

    /// Signs and sends a vote whose round is already persisted as voted.
    fn cast_vote(&mut self, block: &Block, hash: BlockHash, actions: &mut Vec<Action>) {
        debug_assert_eq!(self.safety.last_voted_round, block.round);
        let digest = vote_digest(block.round, &hash, block.height);
        let vote = Vote {
            round: block.round,
            block: hash,
            height: block.height,
            signer: self.me,
            signature: self.keypair.sign(&digest.0),
        };
        self.stats.votes_sent += 1;
        actions.push(Action::Broadcast(Message::Vote(vote)));
        self.on_vote(vote, actions);
    }

    fn on_vote(&mut self, vote: Vote, actions: &mut Vec<Action>) {
        if self.committee.key(vote.signer).is_none()
            || vote.round.saturating_add(1) < self.round
            || vote.round > self.round.saturating_add(FUTURE_ROUNDS_MAX)
            || self.qc_rounds.contains(&vote.round)
        {
            return;
        }
        if self.voted_other_block(&self.votes, &vote) {
            self.stats.refused += 1;
            return;
        }
        let entry = self.votes.entry((vote.round, vote.block)).or_default();
        entry.insert(vote.signer, vote);
        let stake: u64 = entry.keys().map(|m| self.committee.stake(*m)).sum();
        if stake < self.committee.quorum_stake() {
            return;
        }
        // Quorum reached on unverified votes: verify them in one batch, drop the bad ones, and form the QC if
        // a quorum remains.
        let first = entry.values().next().expect("a quorum has votes");
        let qc = QuorumCert {
            round: first.round,
            block: first.block,
            height: first.height,
            signatures: entry
                .values()
                .map(|v| SignerSignature {
                    signer: v.signer,
                    signature: v.signature,
                })
                .collect(),
        };
        match verify_qc(&qc, &self.committee) {
            Ok(()) => {
                self.qc_rounds.insert(qc.round);
                self.verified_qcs.insert(qc.digest());
                self.stats.qcs_formed += 1;
                self.process_qc(qc, actions);
                self.try_commit(actions);
            }
            Err(_) => {
                // Keep only votes that verify one by one, so a forged vote cannot block the round.
                let digest = vote_digest(vote.round, &vote.block, vote.height);
                let committee = &self.committee;
                entry.retain(|signer, v| verify_member(committee, *signer, &digest, &v.signature));
                self.stats.refused += 1;
            }
        }
    }

    fn on_commit_vote(&mut self, vote: Vote, actions: &mut Vec<Action>) {
        if self.committee.key(vote.signer).is_none()
            || vote.height <= self.committed_height
            || vote.round > self.round.saturating_add(FUTURE_ROUNDS_MAX)
        {
            return;
        }
        if self.voted_other_block(&self.commit_votes, &vote) {
            self.stats.refused += 1;
            return;
        }
        let entry = self
            .commit_votes
            .entry((vote.round, vote.block))
            .or_default();
        entry.insert(vote.signer, vote);
        let stake: u64 = entry.keys().map(|m| self.committee.stake(*m)).sum();
        if stake < self.committee.quorum_stake() {
            return;
        }
        let digest = commit_vote_digest(vote.round, &vote.block, vote.height);
        let signatures: Vec<(MemberIndex, cas_engine::Signature)> =
            entry.values().map(|v| (v.signer, v.signature)).collect();
        let entries: Vec<SigEntry<'_>> = signatures
            .iter()
            .map(|(signer, signature)| SigEntry {
                message: &digest.0,
                key: &self.committee.key(*signer).expect("checked on arrival").0,
                signature: &signature.0,
            })
            .collect();
        let bad: Vec<MemberIndex> = crate::verdicts::verify_batch(&entries)
            .into_iter()
            .map(|i| signatures[i].0)
            .collect();
        if !bad.is_empty() {
            self.stats.refused += 1;
            let entry = self
                .commit_votes
                .get_mut(&(vote.round, vote.block))
                .expect("present");
            entry.retain(|signer, _| !bad.contains(signer));
            return;
        }
        self.commit_votes.remove(&(vote.round, vote.block));
        let target_height = self
            .commit_target
            .and_then(|t| self.blocks.get(&t))
            .map_or(0, |b| b.height);
        if vote.height > target_height {
            self.stats.fast_commits += 1;
            self.commit_target = Some(vote.block);
        }
        self.try_commit(actions);
    }

    fn on_timeout(&mut self, timeout: Timeout, actions: &mut Vec<Action>) {
        if timeout.round > self.round.saturating_add(FUTURE_ROUNDS_MAX) {
            // Too far ahead to hold, but its QC tells a member left behind where the others are.
            self.learn_qc(&timeout.high_qc, actions);
            return;
        }
        if timeout.round < self.round || self.tc_rounds.contains(&timeout.round) {
            // Still learn its QC: a straggler's timeout can carry the QC we miss.
            if self.safety.high_qc.round < timeout.high_qc.round && self.check_qc(&timeout.high_qc)
            {
                self.process_qc(timeout.high_qc, actions);
                self.try_commit(actions);
            }
            return;
        }
        let digest = timeout_digest(timeout.round, timeout.high_qc.round);
        if !verify_member(&self.committee, timeout.signer, &digest, &timeout.signature)
            || !self.check_qc(&timeout.high_qc)
        {
            self.stats.refused += 1;
            return;
        }
        self.process_qc(timeout.high_qc.clone(), actions);
        let round = timeout.round;
        let entry = self.timeouts.entry(round).or_default();
        entry.insert(timeout.signer, timeout);
        let stake: u64 = entry.keys().map(|m| self.committee.stake(*m)).sum();
        if stake >= self.committee.quorum_stake() {
            let tc = TimeoutCert {
                round,
                signatures: entry
                    .values()
                    .map(|t| TimeoutSignature {
                        signer: t.signer,
                        high_qc_round: t.high_qc.round,
                        signature: t.signature,
                    })
                    .collect(),
            };
            self.tc_rounds.insert(round);
            self.stats.tcs_formed += 1;
            self.process_tc(tc, actions);
        } else if stake >= self.committee.validity_stake() && round >= self.round {
            // f+1 members gave up on this round: at least one honest did, so join it.
            if round > self.round {
                self.round = round;
                self.round_deadline_ms = self.now_ms;
                self.my_timeout = None;
            }
            if self.my_timeout.is_none() {
                self.local_timeout(actions);
            }
        }
        self.try_commit(actions);
    }

    fn process_qc(&mut self, qc: QuorumCert, actions: &mut Vec<Action>) {
        if qc.round > self.safety.high_qc.round {
            self.safety.high_qc = qc.clone();
        }
        #[cfg(test)]
        let timed_out_since =
            !self.broken_commit_vote_rule && qc.round <= self.safety.last_timeout_round;
        #[cfg(not(test))]
        let timed_out_since = qc.round <= self.safety.last_timeout_round;
        if qc.round > self.commit_voted_round
            && !timed_out_since
            && qc.height > self.committed_height
        {
            self.commit_voted_round = qc.round;
            actions.push(Action::Persist(self.safety.clone()));
            let digest = commit_vote_digest(qc.round, &qc.block, qc.height);
            let vote = Vote {
                round: qc.round,
                block: qc.block,
                height: qc.height,
                signer: self.me,
                signature: self.keypair.sign(&digest.0),
            };
            self.stats.commit_votes_sent += 1;
            actions.push(Action::Broadcast(Message::CommitVote(vote)));
            self.on_commit_vote(vote, actions);
        }
        // The 2-chain rule: a QC for B whose parent is from the round just before B makes the parent final.
        if let Some(certified) = self.blocks.get(&qc.block) {
            if certified.qc.round.checked_add(1) == Some(certified.round)
                && certified.qc.height > self.committed_height
            {
                let target_height = self
                    .commit_target
                    .and_then(|t| self.blocks.get(&t))
                    .map_or(0, |b| b.height);
                if certified.qc.height > target_height {
                    self.commit_target = Some(certified.qc.block);
                }
            }
        } else if qc.height > self.committed_height {
            self.request(qc.block, None, actions);
        }
        if qc.round.saturating_add(1) > self.round {
            self.enter_round(qc.round.saturating_add(1), false, actions);
        }
    }

    fn process_tc(&mut self, tc: TimeoutCert, actions: &mut Vec<Action>) {
        if tc.round.saturating_add(1) > self.round {
            let round = tc.round.saturating_add(1);
            self.last_tc = Some(tc);
            self.enter_round(round, true, actions);
        }
    }

    fn request(&mut self, hash: BlockHash, from: Option<MemberIndex>, actions: &mut Vec<Action>) {
        if self.requested.contains_key(&hash) || self.blocks.contains_key(&hash) {
            return;
        }
        self.requested.insert(hash, self.now_ms);
        let message = Message::BlockRequest(hash);
        actions.push(match from {
            Some(to) if to != self.me => Action::Send { to, message },
            _ => Action::Broadcast(message),
        });
    }

    /// Commits the chain up to the commit target once every block of it is here.
    fn try_commit(&mut self, actions: &mut Vec<Action>) {
        let Some(target) = self.commit_target else {
            return;
        };
        let mut chain = Vec::new();
        let mut cursor = target;
        loop {
            let Some(block) = self.blocks.get(&cursor) else {
                self.request(cursor, None, actions);
                return;
            };
            if block.height <= self.committed_height {
                // Already final at this height: it must be the block we committed there.
                let ours = self.committed_by_height.get(&block.height);
                if ours.is_some_and(|hash| *hash != cursor) {
                    self.stats.conflicting_commits += 1;
                }
                break;
            }
            chain.push(cursor);
            if block.height == self.committed_height + 1 {
                if block.parent() != self.committed_hash {
                    self.stats.conflicting_commits += 1;
                    self.commit_target = None;
                    return;
                }
                break;
            }
            cursor = block.parent();
        }
        self.commit_target = None;
        for hash in chain.into_iter().rev() {
            let block = self.blocks[&hash].clone();
            self.committed_height = block.height;
            self.committed_hash = hash;
            self.leaders.record(&block);
            // Rounds at or below the committed one take no more blocks: their bookkeeping goes.
            self.round_blocks = self.round_blocks.split_off(&(block.round + 1));
            self.committed_by_height.insert(block.height, hash);
            let bytes = block.encoded_bytes_estimate();
            self.committed_bytes.push_back((block.height, bytes));
            self.committed_bytes_total += bytes;
            for cert in &block.payload {
                self.committed_packages.insert(cert.package);
                let next = self.next_sequence.entry(cert.creator).or_insert(0);
                *next = (*next).max(cert.sequence + 1);
            }
            for witness in &block.witnesses {
                let hash = witness.hash();
                self.committed_witnesses.insert(hash);
                self.witness_pool.remove(&(witness.height, hash));
                self.stats.witnesses_committed += 1;
            }
            self.stats.commits += 1;
            actions.push(Action::Commit(block));
        }
        let committed = &self.committed_packages;
        self.payload_pool
            .retain(|c| !committed.contains(&c.package));
        self.pool_arrival_ms
            .retain(|package, _| !committed.contains(package));
        // Pruned every few heights (a sixteenth of the window, at most BLOCKS_PRUNE_STEP), not on every commit: a
        // pass over the kept blocks costs their number; between passes the window holds that many more.
        while self.committed_bytes_total > self.config.blocks_bytes_kept
            && self.committed_bytes.len() > 1
        {
            let (_, bytes) = self.committed_bytes.pop_front().expect("not empty");
            self.committed_bytes_total -= bytes;
        }
        let by_bytes = self
            .committed_bytes
            .front()
            .map_or(0, |(height, _)| *height);
        let keep_from = self
            .committed_height
            .saturating_sub(self.config.blocks_kept)
            .max(by_bytes);
        while self
            .committed_bytes
            .front()
            .is_some_and(|(height, _)| *height < keep_from)
        {
            let (_, bytes) = self.committed_bytes.pop_front().expect("not empty");
            self.committed_bytes_total -= bytes;
        }
        let step = (self.config.blocks_kept / 16).clamp(1, BLOCKS_PRUNE_STEP);
        if keep_from >= self.pruned_below + step {
            self.blocks.retain(|_, b| b.height >= keep_from);
            self.committed_by_height = self.committed_by_height.split_off(&keep_from);
            self.pruned_below = keep_from;
        }
    }

    fn local_timeout(&mut self, actions: &mut Vec<Action>) {
        self.safety.last_voted_round = self.safety.last_voted_round.max(self.round);
        self.safety.last_timeout_round = self.safety.last_timeout_round.max(self.round);
        actions.push(Action::Persist(self.safety.clone()));
        let high_qc = self.safety.high_qc.clone();
        let digest = timeout_digest(self.round, high_qc.round);
        let timeout = Timeout {
            round: self.round,
            high_qc,
            signer: self.me,
            signature: self.keypair.sign(&digest.0),
        };
        self.stats.timeouts_sent += 1;
        self.my_timeout = Some((timeout.clone(), self.now_ms + self.timeout_ms()));
        actions.push(Action::Broadcast(Message::Timeout(timeout.clone())));
        self.on_timeout(timeout, actions);
    }

    fn on_tick(&mut self, now_ms: u64, actions: &mut Vec<Action>) {
        self.now_ms = self.now_ms.max(now_ms);
        // Our own certificates not yet committed are sent again now and then: a member that was down when one was
        // first broadcast would otherwise wait for it past the sequence gap and propose its successors first.
        if self.now_ms >= self.certs_resent_ms + CERT_RESEND_MS {
            self.certs_resent_ms = self.now_ms;
            let me = self.me;
            let due_before = self.now_ms.saturating_sub(CERT_RESEND_MS);
            for cert in self.payload_pool.iter().filter(|c| c.creator == me) {
                if self
                    .pool_arrival_ms
                    .get(&cert.package)
                    .is_some_and(|at| *at <= due_before)
                {
                    actions.push(Action::Broadcast(Message::Cert(cert.clone())));
                }
            }
        }
        if self.proposal_waiting && self.ready_to_propose() {
            self.propose(actions);
        }
        match &self.my_timeout {
            None if self.now_ms >= self.round_deadline_ms => self.local_timeout(actions),
            Some((timeout, resend_at)) if self.now_ms >= *resend_at => {
                // No TC yet: the timeout or its answers may have been lost. Say it again.
                let timeout = timeout.clone();
                self.my_timeout = Some((timeout.clone(), self.now_ms + self.timeout_ms()));
                actions.push(Action::Broadcast(Message::Timeout(timeout)));
            }
            _ => {}
        }
        let retry_before = self.now_ms.saturating_sub(self.config.request_retry_ms);
        let stale: Vec<BlockHash> = self
            .requested
            .iter()
            .filter(|(_, at)| **at <= retry_before)
            .map(|(h, _)| *h)
            .collect();
        for hash in stale {
            self.requested.remove(&hash);
            self.request(hash, None, actions);
        }
    }
}

/// The ledger block a proposal's certificates make, as they add up: within [`BLOCK_PAYLOAD_TXS_MAX`] and
/// [`BLOCK_PAYLOAD_BYTES_MAX`] every executor's block decoder accepts it.
#[derive(Clone, Copy, Debug, Default)]
struct PayloadSize {
    txs: usize,
    bytes: usize,
}

impl PayloadSize {
    /// The size of these certificates' block, or None when it does not fit.
    fn of(certs: &[AvailabilityCert]) -> Option<PayloadSize> {
        let mut size = PayloadSize::default();
        certs.iter().all(|cert| size.add(cert.size)).then_some(size)
    }

    /// Adds a package when the block still fits with it; false (and unchanged) when it does not.
    fn add(&mut self, package: PackageSize) -> bool {
        let txs = self.txs + package.txs as usize;
        let bytes = self.bytes + package.bytes as usize;
        if txs > BLOCK_PAYLOAD_TXS_MAX || bytes > BLOCK_PAYLOAD_BYTES_MAX {
            return false;
        }
        *self = PayloadSize { txs, bytes };
        true
    }
}
