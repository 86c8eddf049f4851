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
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use cas_consensus::committee::{Committee, CommitteeError};
use cas_consensus::ledger_cert::{follow_handovers, CommitteeHandover};
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

/// The certified hand-overs this node holds (each committee's signature on the next one), oldest first: what a
/// receipt of a later epoch carries so a verifier can follow the committees from genesis. Kept in
/// `handovers.json`, written whole (atomically) when one is added: one per epoch, a few hundred bytes each.
pub struct Handovers {
    path: PathBuf,
    chain_id: u32,
    genesis: Committee,
    list: Mutex<Vec<CommitteeHandover>>,
}

impl Handovers {
    /// The hand-overs kept in `data_dir`, checked as a chain from the genesis committee.
    pub fn open(data_dir: &Path, chain_id: u32, genesis: &Committee) -> Result<Handovers> {
        let path = data_dir.join("handovers.json");
        let list = match std::fs::read(&path) {
            Ok(bytes) => {
                let json: Vec<crate::receipt::HandoverJson> = serde_json::from_slice(&bytes)
                    .with_context(|| format!("{} does not parse", path.display()))?;
                let list = json
                    .iter()
                    .map(crate::receipt::HandoverJson::to_handover)
                    .collect::<Result<Vec<_>>>()?;
                follow_handovers(chain_id, genesis.clone(), &list)
                    .with_context(|| format!("{}", path.display()))?;
                list
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Handovers {
            path,
            chain_id,
            genesis: genesis.clone(),
            list: Mutex::new(list),
        })
    }

    /// Takes the hand-overs in `offered` that come after the ones held (from another node's `GET /v1/handovers`),
    /// if the whole chain still leads from the genesis committee; returns how many were new.
    pub fn merge(&self, offered: Vec<CommitteeHandover>) -> Result<usize> {
        let mut list = self.list.lock().expect("handovers lock");
        let last = list.last().map_or(0, |h| h.epoch);
        let mut merged = list.clone();
        merged.extend(offered.into_iter().filter(|h| h.epoch > last));
        follow_handovers(self.chain_id, self.genesis.clone(), &merged)
            .context("the offered hand-overs do not follow from the genesis committee")?;
        let added = merged.len() - list.len();
        if added > 0 {
            *list = merged;
            self.write(&list)?;
        }
        Ok(added)
    }

    /// Every hand-over held, oldest first.
    pub fn all(&self) -> Vec<CommitteeHandover> {
        self.list.lock().expect("handovers lock").clone()
    }

    fn write(&self, list: &[CommitteeHandover]) -> Result<()> {
        let json: Vec<_> = list
            .iter()
            .map(crate::receipt::HandoverJson::from_handover)
            .collect();
        crate::durable::write_atomic(&self.path, &serde_json::to_vec(&json)?)
            .with_context(|| format!("writing {}", self.path.display()))
    }

    /// Keeps a certified hand-over after the ones held, durably before returning, when the chain it ends still
    /// leads from the genesis committee (a node that joined the committee without the hand-overs before it keeps
    /// none of its own until it has them: a receipt carrying a broken chain would not verify). Returns whether it
    /// was kept.
    pub fn add(&self, handover: CommitteeHandover) -> Result<bool> {
        let mut list = self.list.lock().expect("handovers lock");
        if list.iter().any(|h| h.epoch >= handover.epoch) {
            return Ok(false);
        }
        let mut extended = list.clone();
        extended.push(handover);
        if let Err(error) = follow_handovers(self.chain_id, self.genesis.clone(), &extended) {
            tracing::warn!(%error, "a certified hand-over does not follow the ones held here; not kept");
            return Ok(false);
        }
        *list = extended;
        self.write(&list)?;
        Ok(true)
    }

    /// Whether the hand-over to `epoch` is held.
    pub fn has(&self, epoch: u64) -> bool {
        self.list
            .lock()
            .expect("handovers lock")
            .iter()
            .any(|h| h.epoch == epoch)
    }

    /// The hand-overs a verifier follows to reach the committee that certified `height`.
    pub fn up_to(&self, height: u64) -> Vec<CommitteeHandover> {
        self.list
            .lock()
            .expect("handovers lock")
            .iter()
            .filter(|h| h.first_height <= height)
            .cloned()
            .collect()
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

    /// Certified hand-overs survive a restart, in order, once per epoch; a receipt of a height gets the ones up to
    /// its committee.
    #[test]
    fn hand_overs_are_kept_and_given_up_to_a_height() {
        use cas_consensus::ledger_cert::HandoverSigning;
        use cas_engine::fixtures::{key, COMMITTEE_KEYS};
        let keys: Vec<_> = (0..4).map(|i| key(COMMITTEE_KEYS, i)).collect();
        let genesis = Committee::new(keys.iter().map(|k| (k.public(), 1)).collect()).unwrap();
        let certified = |epoch: u64, first_height: u64| {
            let proposal = CommitteeHandover {
                chain_id: 5,
                epoch,
                first_height,
                members: keys.iter().map(|k| (k.public(), 1)).collect(),
                signatures: Vec::new(),
            };
            let (mut signing, _) =
                HandoverSigning::new(genesis.clone(), 0, &keys[0], proposal.clone());
            let mut formed = None;
            for m in 1..3 {
                let (_, vote) =
                    HandoverSigning::new(genesis.clone(), m, &keys[m as usize], proposal.clone());
                formed = signing.on_vote(&vote).unwrap().or(formed);
            }
            formed.expect("a quorum")
        };
        let dir = tempfile::tempdir().unwrap();
        let kept = Handovers::open(dir.path(), 5, &genesis).unwrap();
        assert!(kept.add(certified(1, 17)).unwrap());
        assert!(!kept.add(certified(1, 17)).unwrap(), "once per epoch");
        assert!(kept.add(certified(2, 33)).unwrap());
        let again = Handovers::open(dir.path(), 5, &genesis).unwrap();
        assert!(again.has(1) && again.has(2) && !again.has(3));
        assert_eq!(again.up_to(16).len(), 0);
        assert_eq!(again.up_to(20).len(), 1);
        assert_eq!(again.up_to(40).len(), 2);
        // Another chain's genesis does not lead to them: the file is refused.
        assert!(Handovers::open(dir.path(), 6, &genesis).is_err());
        // A node that missed them takes them from another's list, once, and only a chain from genesis.
        let other = tempfile::tempdir().unwrap();
        let late = Handovers::open(other.path(), 5, &genesis).unwrap();
        let mut forged = certified(3, 49);
        forged.signatures.truncate(1);
        assert!(late.merge(vec![certified(1, 17), forged]).is_err());
        assert!(!late.has(1), "nothing taken from a broken chain");
        let mut unsigned = certified(2, 33);
        unsigned.signatures.clear();
        assert!(
            !late.add(unsigned).unwrap(),
            "a hand-over nobody signed is not kept"
        );
        assert_eq!(late.merge(again.all()).unwrap(), 2);
        assert_eq!(late.merge(again.all()).unwrap(), 0);
        assert_eq!(
            Handovers::open(other.path(), 5, &genesis).unwrap().all(),
            again.all()
        );
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
