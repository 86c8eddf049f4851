//! The node's epoch plan: which BFT instance serves which heights, and with which committee.
//!
//! With epochs in the genesis (`epoch_blocks` E > 0) and protocol version 3 scheduled
//! ([`cas_consensus::protocol::PROTOCOL_HANDOVERS`]), the committee the ledger elected for epoch e serves heights
//! e·E + 1 ..= (e + 1)·E in its own BFT instance, numbered e (`BftConfig::epoch`, `last_height`). The genesis
//! committee's instance, numbered 0, serves every height before the first epoch that starts at or above the
//! version's height (all of them when the version is never scheduled, or E = 0: the committee of genesis serves for
//! good, and elections are only recorded). Each instance starts from the last block of the one before
//! ([`cas_consensus::bft::Base`]); the driver switches when the old instance says its epoch ended
//! (`Action::EpochEnd`) and the next committee is known from the ledger ([`Committees`]).

use std::collections::BTreeMap;
use std::sync::Mutex;

use cas_consensus::committee::{Committee, CommitteeError};
use cas_consensus::protocol::{ProtocolSchedule, PROTOCOL_HANDOVERS};
use cas_engine::stake::Candidate;

/// Which instance serves which heights (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochPlan {
    epoch_blocks: u64,
    /// The first epoch an elected committee serves; None: the genesis committee serves for good.
    first: Option<u64>,
}

impl EpochPlan {
    pub fn new(epoch_blocks: u64, schedule: &ProtocolSchedule) -> EpochPlan {
        let first = match (epoch_blocks, schedule.first_height_of(PROTOCOL_HANDOVERS)) {
            (0, _) | (_, None) => None,
            // The first epoch whose first height (e·E + 1) is at or above the version's height; never epoch 0.
            (blocks, Some(height)) => Some(height.saturating_sub(1).div_ceil(blocks).max(1)),
        };
        EpochPlan {
            epoch_blocks,
            first,
        }
    }

    /// Whether elected committees ever take over.
    pub fn hands_over(&self) -> bool {
        self.first.is_some()
    }

    /// The instance serving `height` (its committee epoch).
    pub fn instance_of(&self, height: u64) -> u64 {
        let Some(first) = self.first else {
            return 0;
        };
        let epoch = height.saturating_sub(1) / self.epoch_blocks;
        if epoch < first {
            0
        } else {
            epoch
        }
    }

    /// The last height instance `epoch` serves; None when it serves for good.
    pub fn last_height(&self, epoch: u64) -> Option<u64> {
        let first = self.first?;
        Some(epoch.max(first - 1).saturating_add(1) * self.epoch_blocks)
    }

    /// The height instance `epoch` starts above (0 for the genesis committee's).
    pub fn base_height(&self, epoch: u64) -> u64 {
        epoch * self.epoch_blocks
    }

    /// The instance after `epoch`'s, if one follows it.
    pub fn next(&self, epoch: u64) -> Option<u64> {
        let first = self.first?;
        Some(if epoch == 0 { first } else { epoch + 1 })
    }
}

/// The committees the ledger elected, by epoch: recorded by the executor as it executes each election (and at start,
/// from the set), read by the driver at a hand-over. Only the newest few are kept.
#[derive(Default)]
pub struct Committees {
    elected: Mutex<BTreeMap<u64, Vec<Candidate>>>,
}

/// Elected committees kept (the current epoch's and the next one's are all a node needs).
const COMMITTEES_KEPT: usize = 4;

impl Committees {
    pub fn record(&self, epoch: u64, members: Vec<Candidate>) {
        let mut elected = self.elected.lock().expect("committees lock");
        elected.insert(epoch, members);
        while elected.len() > COMMITTEES_KEPT {
            elected.pop_first();
        }
    }

    pub fn get(&self, epoch: u64) -> Option<Vec<Candidate>> {
        self.elected
            .lock()
            .expect("committees lock")
            .get(&epoch)
            .cloned()
    }
}

/// The BFT committee of an election: its members in election order, weighted by their stake.
pub fn committee_of(members: &[Candidate]) -> Result<Committee, CommitteeError> {
    Committee::new(members.iter().map(|m| (m.key, m.stake)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cas_consensus::protocol::ProtocolUpgrade;

    fn schedule(handovers_from: Option<u64>) -> ProtocolSchedule {
        ProtocolSchedule::new(
            handovers_from
                .map(|height| ProtocolUpgrade {
                    version: PROTOCOL_HANDOVERS,
                    height,
                })
                .into_iter()
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn without_epochs_or_the_version_the_genesis_committee_serves_for_good() {
        for plan in [
            EpochPlan::new(0, &schedule(Some(1))),
            EpochPlan::new(16, &schedule(None)),
        ] {
            assert!(!plan.hands_over());
            assert_eq!(plan.instance_of(1_000_000), 0);
            assert_eq!(plan.last_height(0), None);
            assert_eq!(plan.next(0), None);
        }
    }

    #[test]
    fn from_the_version_on_each_epoch_has_its_instance() {
        let plan = EpochPlan::new(16, &schedule(Some(1)));
        assert_eq!(plan.next(0), Some(1));
        assert_eq!(
            (
                plan.instance_of(1),
                plan.instance_of(16),
                plan.last_height(0)
            ),
            (0, 0, Some(16))
        );
        assert_eq!(
            (
                plan.instance_of(17),
                plan.instance_of(32),
                plan.last_height(1)
            ),
            (1, 1, Some(32))
        );
        assert_eq!((plan.base_height(1), plan.next(1)), (16, Some(2)));
        assert_eq!(plan.instance_of(33), 2);
    }

    #[test]
    fn a_version_scheduled_mid_chain_waits_for_the_next_epoch_start() {
        // Version 3 from height 40: epoch 2 starts at 33 (below), epoch 3 at 49 (the first at or above 40).
        let plan = EpochPlan::new(16, &schedule(Some(40)));
        assert_eq!(plan.next(0), Some(3));
        assert_eq!(plan.last_height(0), Some(48));
        assert_eq!(
            (plan.instance_of(48), plan.instance_of(49)),
            (0, 3),
            "the genesis committee serves up to epoch 3"
        );
        // Exactly at an epoch's first height: that epoch.
        assert_eq!(EpochPlan::new(16, &schedule(Some(33))).next(0), Some(2));
    }
}
