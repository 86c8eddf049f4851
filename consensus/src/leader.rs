//! Who leads a round: committee order (round-robin), skipping members that have shown no sign of life in the
//! recent committed history, so a crashed member costs a few round timeouts instead of one in every n rounds for
//! as long as it is down (leader reputation, as Aptos and Sui do it, reduced to what our committed chain says).
//!
//! **The rule.** For round `r`, look at the committed blocks whose rounds lie in the window
//! `(r - LAG - WINDOW, r - LAG]`. A member is *active* if it authored one of them, signed its QC, or acked one of
//! its availability certificates. The leader is the round-robin leader of `r` if active, else the next active member
//! after it in committee order. When the window holds no committed block, or this member's committed history does
//! not cover it (it has not committed up to round `r - LAG`, or its history starts after the window, as right after
//! a snapshot install), it is plain round-robin.
//!
//! **A member whose history does not cover a round** (restarted, or behind) does not know whom the others chose:
//! it votes for the first proposal of the round from any member (still one vote per round), and proposes only in
//! its round-robin turns of rounds that began with a timeout certificate (when the others are stuck, or behind
//! too, and fall back to round-robin themselves), or once it has voted long enough for its votes to be in the
//! others' window (they count it active again). So a member coming back from a crash follows the others' leader
//! at once instead of competing with it for votes, and takes its turns again while it still fetches old blocks.
//!
//! **Why every honest member computes the same leader.** The rule reads only committed blocks at rounds up to
//! `r - LAG`, and only once this member has committed a block at round `r - LAG` or later. Committed chains never
//! disagree (that is BFT safety), and a round at or below one's last committed block's round either holds a block
//! of the committed chain or never will (the chain is linear). So two members that both apply the rule read the same
//! window and choose the same leader; a member that falls back to round-robin may disagree for a while, which costs
//! at most its vote in those rounds, never safety: the vote rules do not depend on who leads, and a block fetched
//! because a certificate names it is taken whoever proposed it.
//!
//! **Cost of a crash.** A member that dies stops signing. It stays active until its last activity leaves the window,
//! `LAG + WINDOW` rounds later; until then its own rounds time out (about `(LAG + WINDOW) / n` of them, two or three
//! with 4 members). It comes back as soon as a committed block shows it signing again (its votes are in QCs and its
//! acks in certificates once it runs), then leads its rounds as before.

use std::collections::{BTreeMap, BTreeSet};

use crate::committee::{Committee, MemberIndex};
use crate::messages::{Block, Round};

pub use crate::limits::{LEADER_LAG_ROUNDS, LEADER_WINDOW_ROUNDS};

/// Recent committed history, by round: who showed a sign of life in each committed block.
#[derive(Clone, Debug, Default)]
pub struct LeaderSchedule {
    active: BTreeMap<Round, BTreeSet<MemberIndex>>,
    /// The first round from which the history is complete (none yet: nothing known).
    complete_from: Option<Round>,
    /// The round of the newest committed block recorded.
    committed_round: Round,
}

impl LeaderSchedule {
    /// A chain that starts here: its history is complete (there is none before).
    pub fn from_genesis() -> LeaderSchedule {
        LeaderSchedule {
            complete_from: Some(0),
            ..LeaderSchedule::default()
        }
    }

    /// Records a committed block (in commit order).
    pub fn record(&mut self, block: &Block) {
        let mut active = BTreeSet::from([block.author]);
        active.extend(block.qc.signatures.iter().map(|s| s.signer));
        for cert in &block.payload {
            active.extend(cert.acks.iter().map(|a| a.signer));
        }
        self.active.insert(block.round, active);
        self.complete_from.get_or_insert(block.round);
        self.committed_round = self.committed_round.max(block.round);
        // Only what a later round's window can still read is kept.
        let keep_from = self
            .committed_round
            .saturating_sub(LEADER_LAG_ROUNDS + LEADER_WINDOW_ROUNDS);
        self.active = self.active.split_off(&keep_from);
    }

    /// Records committed blocks read back after a restart, oldest first; the history is complete from the oldest.
    pub fn restore(&mut self, chain: &[&Block], from_genesis: bool) {
        self.complete_from = if from_genesis {
            Some(0)
        } else {
            chain.first().map(|b| b.round)
        };
        for block in chain {
            self.record(block);
        }
    }

    /// The round of the newest committed block recorded (0 when none is known).
    pub fn committed_round(&self) -> Round {
        self.committed_round
    }

    /// Forgets the history (a snapshot was installed: what came before it is not known here).
    pub fn reset(&mut self) {
        *self = LeaderSchedule::default();
    }

    /// Whether this member's committed history covers the window of `round` (always, for the chain's first
    /// rounds, where there is no window yet): only then does it know the leader every other such member chooses.
    pub fn covers(&self, round: Round) -> bool {
        let Some(horizon) = round.checked_sub(LEADER_LAG_ROUNDS) else {
            return true;
        };
        let window_start = horizon.saturating_sub(LEADER_WINDOW_ROUNDS) + 1;
        window_start > horizon
            || (self.committed_round >= horizon
                && self.complete_from.is_some_and(|from| from <= window_start))
    }

    /// The leader of `round` (see the module doc): round-robin where the history does not cover it.
    pub fn leader(&self, committee: &Committee, round: Round) -> MemberIndex {
        let rotation = committee.leader(round);
        let Some(horizon) = round.checked_sub(LEADER_LAG_ROUNDS) else {
            return rotation;
        };
        let window_start = horizon.saturating_sub(LEADER_WINDOW_ROUNDS) + 1;
        if window_start > horizon || !self.covers(round) {
            return rotation;
        }
        let active: BTreeSet<MemberIndex> = self
            .active
            .range(window_start..=horizon)
            .flat_map(|(_, members)| members.iter().copied())
            .collect();
        if active.is_empty() {
            return rotation;
        }
        let size = committee.size() as u64;
        (0..size)
            .map(|step| ((rotation as u64 + step) % size) as MemberIndex)
            .find(|member| active.contains(member))
            .unwrap_or(rotation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{QuorumCert, SignerSignature};
    use cas_engine::{Hash32, Keypair, Signature};

    fn committee() -> Committee {
        Committee::new(
            (0..4u8)
                .map(|i| (Keypair::from_seed(&[i + 1; 32]).public(), 1))
                .collect(),
        )
        .unwrap()
    }

    /// A committed block of `round` by `author` whose QC `signers` signed.
    fn block(round: Round, author: MemberIndex, signers: &[MemberIndex]) -> Block {
        Block {
            epoch: 0,
            round,
            height: round,
            protocol: 1,
            qc: QuorumCert {
                round: round - 1,
                block: Hash32([round as u8; 32]),
                height: round - 1,
                signatures: signers
                    .iter()
                    .map(|&signer| SignerSignature {
                        signer,
                        signature: Signature([0; 64]),
                    })
                    .collect(),
            },
            tc: None,
            author,
            timestamp_ms: 0,
            payload: Vec::new(),
            witnesses: Vec::new(),
            signature: Signature([0; 64]),
        }
    }

    /// Member 2 is dead: it neither leads nor signs; its rounds have no committed block.
    fn history(up_to: Round) -> LeaderSchedule {
        let mut schedule = LeaderSchedule::from_genesis();
        for round in (1..=up_to).filter(|r| r % 4 != 2) {
            schedule.record(&block(round, (round % 4) as MemberIndex, &[0, 1, 3]));
        }
        schedule
    }

    #[test]
    fn a_silent_member_is_skipped_by_every_member_whose_history_covers_the_round() {
        let committee = committee();
        let (ahead, behind) = (history(19), history(15));
        // Round 18 is member 2's turn; both have committed past its horizon (14): both skip to member 3.
        assert_eq!(committee.leader(18), 2);
        assert_eq!(ahead.leader(&committee, 18), 3);
        assert_eq!(behind.leader(&committee, 18), 3);
        // The others keep their turns.
        assert_eq!(ahead.leader(&committee, 21), 1);
        // Round 22's horizon (18) is past what `behind` committed: it falls back to round-robin until it catches up
        // (the one way two honest members disagree, costing at most its vote).
        assert_eq!(ahead.leader(&committee, 22), 3);
        assert_eq!(behind.leader(&committee, 22), 2);
    }

    #[test]
    fn a_member_that_signs_again_leads_again_and_no_history_means_round_robin() {
        let committee = committee();
        let mut schedule = history(43);
        assert_eq!(schedule.leader(&committee, 46), 3);
        // Member 2 is back: its vote is in the QC of block 44.
        schedule.record(&block(44, 0, &[1, 2, 3]));
        for round in 45..=47 {
            schedule.record(&block(round, (round % 4) as MemberIndex, &[0, 1, 3]));
        }
        assert_eq!(schedule.leader(&committee, 50), 2);
        // After a snapshot install nothing is known: plain round-robin.
        schedule.reset();
        assert_eq!(schedule.leader(&committee, 54), 2);
        assert_eq!(
            LeaderSchedule::default().leader(&committee, 50),
            committee.leader(50)
        );
    }
}
