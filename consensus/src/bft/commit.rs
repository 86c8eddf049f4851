//! The BFT's blocks and commits: checking and taking blocks (proposed or fetched), verifying and learning QCs,
//! fetching missing blocks, the 2-chain and fast-path commit rules, and committing the chain in height order while
//! pruning what falls out of the kept window. A commit that conflicts with the committed chain is counted, never
//! applied.

use cas_engine::BlockHash;

use crate::committee::MemberIndex;
use crate::limits::{BLOCKS_PRUNE_STEP, FUTURE_ROUNDS_MAX};
use crate::messages::{
    commit_vote_digest, verify_availability, verify_member, verify_qc, verify_tc, Block, Message,
    QuorumCert, Vote,
};
use crate::Action;

use super::payload::PayloadSize;
use super::Bft;

impl Bft {
    pub(super) fn check_qc(&mut self, qc: &QuorumCert) -> bool {
        if qc.round == 0 || qc.height <= self.base.height {
            // No signatures: only the certificate this instance starts from; nothing else at or below its base.
            return self.is_base(qc);
        }
        let digest = qc.digest(self.config.epoch);
        if self.verified_qcs.contains(&digest) {
            return true;
        }
        if verify_qc(qc, &self.committee, self.config.epoch).is_err() {
            return false;
        }
        self.verified_qcs.insert(digest);
        true
    }

    /// Checks a block's form, signatures and certificates. Its author must lead its round unless the block was
    /// requested (a certificate names it: who proposed it no longer matters) or this member's history does not
    /// cover the round (it cannot tell who leads; see [`crate::leader`]).
    fn check_block(&mut self, block: &Block, requested: bool) -> bool {
        if block.protocol != self.config.protocol.at(block.height) {
            self.stats.protocol_refused += 1;
            return false;
        }
        if block.epoch != self.config.epoch
            || (self.is_tail(block.height)
                && (!block.payload.is_empty() || !block.witnesses.is_empty()))
        {
            self.stats.epoch_refused += 1;
            return false;
        }
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
                || verify_tc(tc, &self.committee, self.config.epoch).is_err()
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
                if verify_availability(cert, &self.committee, self.config.epoch).is_err() {
                    return false;
                }
                self.verified_certs.insert((cert.package, cert.size));
            }
        }
        true
    }

    pub(super) fn on_block(
        &mut self,
        from: MemberIndex,
        block: Block,
        live: bool,
        actions: &mut Vec<Action>,
    ) {
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
            if self.timestamp_acceptable(&block) {
                self.vote(&block, hash, actions);
            } else {
                self.stats.timestamps_refused += 1;
            }
        }
    }

    /// Takes a QC that came with a message this member does not hold (a refused block, a timeout too far ahead)
    /// when it is higher than ours and verifies.
    pub(super) fn learn_qc(&mut self, qc: &QuorumCert, actions: &mut Vec<Action>) {
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

    pub(super) fn process_qc(&mut self, qc: QuorumCert, actions: &mut Vec<Action>) {
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
            let digest = commit_vote_digest(self.config.epoch, qc.round, &qc.block, qc.height);
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

    pub(super) fn request(
        &mut self,
        hash: BlockHash,
        from: Option<MemberIndex>,
        actions: &mut Vec<Action>,
    ) {
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

    /// Whether a block at `height` lies above the epoch's last height.
    pub(super) fn is_tail(&self, height: u64) -> bool {
        self.config.last_height.is_some_and(|last| height > last)
    }

    /// Commits the chain up to the commit target once every block of it is here.
    pub(super) fn try_commit(&mut self, actions: &mut Vec<Action>) {
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
        let tail_in_chain = chain
            .first()
            .is_some_and(|newest| self.is_tail(self.blocks[newest].height));
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
            if self.is_tail(block.height) {
                self.stats.tail_commits += 1;
            } else {
                self.stats.commits += 1;
                let end = Some(block.height) == self.config.last_height;
                let base = crate::bft::Base {
                    height: block.height,
                    hash,
                    timestamp_ms: block.timestamp_ms,
                };
                actions.push(Action::Commit(block));
                if end {
                    self.epoch_ended = true;
                    if tail_in_chain {
                        self.stats.ends_through_tail += 1;
                    }
                    actions.push(Action::EpochEnd(base));
                }
            }
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
}
