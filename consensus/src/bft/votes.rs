//! The BFT's votes: the vote rule (`safe_to_vote`), casting a vote, and collecting votes, commit votes and timeouts
//! into quorum certificates, fast-path commits and timeout certificates. At most one held vote per signer and round;
//! signatures are checked in one batch once a quorum's stake is in.

use std::collections::BTreeMap;

use cas_engine::crypto::SigEntry;
use cas_engine::BlockHash;

use crate::committee::MemberIndex;
use crate::limits::FUTURE_ROUNDS_MAX;
use crate::messages::{
    commit_vote_digest, timeout_digest, verify_member, verify_qc, vote_digest, Block, Equivocation,
    Message, QuorumCert, Round, SignerSignature, Timeout, TimeoutCert, TimeoutSignature, Vote,
};
use crate::protocol::{Rules, TIMESTAMP_AHEAD_MAX_MS};
use crate::Action;

use super::Bft;

impl Bft {
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

    /// `vote` names another block than the one its signer's held vote of that round: when both signatures are its
    /// own, that is an equivocation, reported once per member and round.
    fn report_equivocation(&mut self, vote: Vote, actions: &mut Vec<Action>) {
        if self.equivocations.contains(&(vote.signer, vote.round)) {
            return;
        }
        let held = self
            .votes
            .range(
                (vote.round, cas_engine::Hash32([0; 32]))
                    ..=(vote.round, cas_engine::Hash32([0xff; 32])),
            )
            .find_map(|(_, votes)| votes.get(&vote.signer))
            .copied();
        let Some(first) = held else {
            return;
        };
        let evidence = Equivocation {
            first,
            second: vote,
        };
        if evidence.proves(&self.committee, self.config.epoch) {
            self.equivocations.insert((vote.signer, vote.round));
            self.stats.equivocations += 1;
            actions.push(Action::Equivocation(Box::new(evidence)));
        }
    }

    pub(super) fn safe_to_vote(&self, block: &Block) -> bool {
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

    /// The timestamp rule of the block's version: under monotonic timestamps, at least its parent's (so a member
    /// votes under it only for blocks whose parent it holds) and at most [`TIMESTAMP_AHEAD_MAX_MS`] ahead of this
    /// member's clock.
    pub(super) fn timestamp_acceptable(&self, block: &Block) -> bool {
        if !Rules::of(block.protocol).monotonic_timestamps {
            return true;
        }
        self.parent_timestamp_ms(&block.qc)
            .is_some_and(|parent_ms| block.timestamp_ms >= parent_ms)
            && block.timestamp_ms <= self.now_ms.saturating_add(TIMESTAMP_AHEAD_MAX_MS)
    }

    /// The timestamp of the block `qc` certifies, when it is held (genesis: 0).
    pub(super) fn parent_timestamp_ms(&self, qc: &QuorumCert) -> Option<u64> {
        if self.is_base(qc) {
            return Some(self.base.timestamp_ms);
        }
        self.blocks.get(&qc.block).map(|parent| parent.timestamp_ms)
    }

    pub(super) fn vote(&mut self, block: &Block, hash: BlockHash, actions: &mut Vec<Action>) {
        self.voting_since.get_or_insert(block.round);
        self.safety.last_voted_round = block.round;
        actions.push(Action::Persist(self.safety.clone()));
        self.cast_vote(block, hash, actions);
    }

    /// Signs and sends a vote whose round is already persisted as voted.
    pub(super) fn cast_vote(&mut self, block: &Block, hash: BlockHash, actions: &mut Vec<Action>) {
        debug_assert_eq!(self.safety.last_voted_round, block.round);
        let digest = vote_digest(self.config.epoch, block.round, &hash, block.height);
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

    pub(super) fn on_vote(&mut self, vote: Vote, actions: &mut Vec<Action>) {
        if self.committee.key(vote.signer).is_none()
            || vote.round.saturating_add(1) < self.round
            || vote.round > self.round.saturating_add(FUTURE_ROUNDS_MAX)
        {
            return;
        }
        if self.qc_rounds.contains(&vote.round) {
            self.late_vote(&vote);
            return;
        }
        if self.voted_other_block(&self.votes, &vote) {
            self.stats.refused += 1;
            self.report_equivocation(vote, actions);
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
        match verify_qc(&qc, &self.committee, self.config.epoch) {
            Ok(()) => {
                self.qc_rounds.insert(qc.round);
                self.verified_qcs.insert(qc.digest(self.config.epoch));
                self.stats.qcs_formed += 1;
                self.process_qc(qc, actions);
                self.try_commit(actions);
            }
            Err(_) => {
                // Keep only votes that verify one by one, so a forged vote cannot block the round.
                let digest = vote_digest(self.config.epoch, vote.round, &vote.block, vote.height);
                let committee = &self.committee;
                entry.retain(|signer, v| verify_member(committee, *signer, &digest, &v.signature));
                self.stats.refused += 1;
            }
        }
    }

    /// A vote for a round whose QC formed already: when it is for the QC this member holds as its highest (the one
    /// its next proposal carries) and verifies, its signature joins that QC. A QC then names every member whose vote
    /// arrived before the block carrying it left, not only the first to reach a quorum: the ledger pays, and will
    /// judge absence by, the signers of the QC each block carries, and with the first quorum only the farthest
    /// honest member would be left out of nearly every one. Safety reads nothing here (a QC needs a quorum; more
    /// signatures of the same digest change nothing it proves).
    fn late_vote(&mut self, vote: &Vote) {
        let qc = &self.safety.high_qc;
        if qc.round != vote.round
            || qc.block != vote.block
            || qc.height != vote.height
            || qc.signatures.iter().any(|s| s.signer == vote.signer)
            || qc.signatures.len() >= self.committee.size()
        {
            return;
        }
        let digest = vote_digest(self.config.epoch, vote.round, &vote.block, vote.height);
        if !verify_member(&self.committee, vote.signer, &digest, &vote.signature) {
            self.stats.refused += 1;
            return;
        }
        self.safety.high_qc.signatures.push(SignerSignature {
            signer: vote.signer,
            signature: vote.signature,
        });
        self.stats.late_votes += 1;
    }

    pub(super) fn on_commit_vote(&mut self, vote: Vote, actions: &mut Vec<Action>) {
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
        let digest = commit_vote_digest(self.config.epoch, vote.round, &vote.block, vote.height);
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

    pub(super) fn on_timeout(&mut self, timeout: Timeout, actions: &mut Vec<Action>) {
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
        let digest = timeout_digest(self.config.epoch, timeout.round, timeout.high_qc.round);
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
}
