//! The BFT's rounds: entering a round (and who leads it), the leader's proposal, the round timeout and its
//! backoff, timeout certificates, and the periodic work of a tick (resent certificates, timeouts, block requests).
//! Safety state is persisted (`Action::Persist`) before a proposal or a timeout leaves.

use cas_engine::BlockHash;

use crate::leader::LeaderSchedule;
use crate::limits::{
    CERT_RESEND_MS, LEADER_LAG_ROUNDS, LEADER_WINDOW_ROUNDS, ROUND_TIMEOUT_DOUBLINGS_MAX,
};
use crate::messages::{timeout_digest, Block, Message, Round, Timeout, TimeoutCert};
use crate::protocol::Rules;
use crate::Action;

use super::Bft;

impl Bft {
    /// Rebuilds the leader history (and the committed round) from the committed chain read back at a restart:
    /// walks back from the committed block through the stored blocks as far as the history reaches.
    pub(super) fn restore_leader_history(&mut self) {
        if self.committed_height == self.base.height {
            return;
        }
        let mut chain = Vec::new();
        let mut cursor = self.committed_hash;
        let mut reached_genesis = false;
        while let Some(block) = self.blocks.get(&cursor) {
            chain.push(block);
            if block.height == self.base.height + 1 {
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

    fn timeout_ms(&self) -> u64 {
        let factor = 1u64 << self.consecutive_timeouts.min(ROUND_TIMEOUT_DOUBLINGS_MAX);
        self.config
            .round_timeout_ms
            .saturating_mul(factor)
            .min(self.config.round_timeout_max_ms)
    }

    pub(super) fn enter_round(
        &mut self,
        round: Round,
        via_timeout: bool,
        actions: &mut Vec<Action>,
    ) {
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
    pub(super) fn ready_to_propose(&self) -> bool {
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

    pub(super) fn propose(&mut self, actions: &mut Vec<Action>) {
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
        // Above the epoch's last height only tail blocks: nothing to order, only the certificates that make the
        // last height final.
        let (payload, witnesses) = if self.is_tail(qc.height.saturating_add(1)) {
            (Vec::new(), Vec::new())
        } else {
            (
                self.select_payload(&qc.block),
                self.select_witnesses(&qc.block),
            )
        };
        let protocol = self.config.protocol.at(qc.height.saturating_add(1));
        // Under monotonic timestamps never below the parent's, whatever this member's clock says (a parent not
        // held, which a leader almost never lacks, leaves the voters to judge).
        let timestamp_ms = match self.parent_timestamp_ms(&qc) {
            Some(parent_ms) if Rules::of(protocol).monotonic_timestamps => {
                self.now_ms.max(parent_ms)
            }
            _ => self.now_ms,
        };
        let block = Block::new_signed(
            self.config.epoch,
            &self.keypair,
            self.me,
            round,
            protocol,
            qc,
            tc,
            timestamp_ms,
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

    pub(super) fn process_tc(&mut self, tc: TimeoutCert, actions: &mut Vec<Action>) {
        if tc.round.saturating_add(1) > self.round {
            let round = tc.round.saturating_add(1);
            self.last_tc = Some(tc);
            self.enter_round(round, true, actions);
        }
    }

    pub(super) fn local_timeout(&mut self, actions: &mut Vec<Action>) {
        self.safety.last_voted_round = self.safety.last_voted_round.max(self.round);
        self.safety.last_timeout_round = self.safety.last_timeout_round.max(self.round);
        actions.push(Action::Persist(self.safety.clone()));
        let high_qc = self.safety.high_qc.clone();
        let digest = timeout_digest(self.config.epoch, self.round, high_qc.round);
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

    pub(super) fn on_tick(&mut self, now_ms: u64, actions: &mut Vec<Action>) {
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
