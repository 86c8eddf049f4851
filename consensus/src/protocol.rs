//! Protocol versions: which consensus rules a block follows, chosen by its height from a schedule every member
//! configures the same, so a committee changes its rules at an agreed height without stopping.
//!
//! Every [`crate::messages::Block`] carries the version its height has under the schedule, inside the signed hash.
//! A member refuses a block whose version is not the one its own schedule gives that height: a node that was not
//! upgraded stops following at the switch (and says why) instead of voting under rules the others no longer keep,
//! and an upgraded node never takes an old-rules block above the switch.
//!
//! **Rolling upgrade.** Each operator in turn installs a binary that knows the new version and schedules it at the
//! same future height (`protocol_upgrades` in node.toml), restarting one node at a time. Until that height the new
//! binary proposes and votes exactly like the old one, so it joins the old committee; at the height every upgraded
//! member switches in the same block. The wire format itself is versioned apart from this (netio's ALPN): what
//! changes the bytes of a message needs a new ALPN, what changes only the rules needs a new protocol version.
//!
//! The versions this binary knows:
//! - **1**: the rules from genesis. A block's timestamp is the proposer's clock, unchecked.
//! - **2**: block timestamps are monotonic: a proposer stamps at least its parent's timestamp, and a member votes
//!   only for a block whose timestamp is at least its parent's and at most [`TIMESTAMP_AHEAD_MAX_MS`] ahead of its
//!   own clock. The committed timestamp is the clock the executors judge witness headers by (and what receipts
//!   show); under version 1 one proposer with a clock far behind could take it backwards.
//! - **3**: version 2, and committee hand-overs: with epochs in the genesis (`epoch_blocks` E > 0), from the
//!   first epoch that starts at or above the version's height, each epoch's committee is the one the ledger
//!   elected for it, running its own BFT instance over the epoch's heights (`BftConfig::epoch`, `last_height`;
//!   the node's epoch plan). Under versions 1 and 2 elections are recorded and the genesis committee serves on.
//! - **4**: version 3, and business transactions (token issues and mints, allowances, orders and fills, contract
//!   deploys and calls: issue 20). A binary older than this one cannot decode them, so they are valid only in
//!   blocks from the version's height on: the ledger rules refuse them below it (`RuleContext::business_from`, set
//!   by the node from this schedule, followers included) and members refuse them at admission until then
//!   (`Synchronizer::set_business`), both with `not_enabled`.

/// The version from genesis.
pub const PROTOCOL_GENESIS: u32 = 1;
/// The newest version this binary can run.
pub const PROTOCOL_VERSION_MAX: u32 = 4;
/// The first version whose elected committees take over at epoch boundaries (see the module doc).
pub const PROTOCOL_HANDOVERS: u32 = 3;
/// The first version whose members admit business transactions (see the module doc).
pub const PROTOCOL_BUSINESS: u32 = 4;
/// Under version 2, how far ahead of a voter's clock a block's timestamp may be (clock skew between members plus
/// the time a proposal takes to arrive, with a wide margin).
pub const TIMESTAMP_AHEAD_MAX_MS: u64 = 5_000;

/// From `height` on, blocks follow `version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProtocolUpgrade {
    pub version: u32,
    pub height: u64,
}

/// Why a schedule is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("protocol version {version} is newer than this binary runs (at most {PROTOCOL_VERSION_MAX}): install a newer binary")]
    Unknown { version: u32 },
    #[error("protocol upgrades must raise the version and the height in order: {version} at height {height} follows {previous_version} at height {previous_height}")]
    OutOfOrder {
        version: u32,
        height: u64,
        previous_version: u32,
        previous_height: u64,
    },
}

/// The version of every height: [`PROTOCOL_GENESIS`] from block 1, then each upgrade from its height.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProtocolSchedule {
    upgrades: Vec<ProtocolUpgrade>,
}

impl ProtocolSchedule {
    /// A schedule from upgrades in order of height, each raising the version, none newer than this binary runs.
    pub fn new(upgrades: Vec<ProtocolUpgrade>) -> Result<ProtocolSchedule, ScheduleError> {
        let mut previous = ProtocolUpgrade {
            version: PROTOCOL_GENESIS,
            height: 0,
        };
        for upgrade in &upgrades {
            if upgrade.version > PROTOCOL_VERSION_MAX {
                return Err(ScheduleError::Unknown {
                    version: upgrade.version,
                });
            }
            if upgrade.version <= previous.version || upgrade.height <= previous.height {
                return Err(ScheduleError::OutOfOrder {
                    version: upgrade.version,
                    height: upgrade.height,
                    previous_version: previous.version,
                    previous_height: previous.height,
                });
            }
            previous = *upgrade;
        }
        Ok(ProtocolSchedule { upgrades })
    }

    /// The version blocks at `height` follow.
    pub fn at(&self, height: u64) -> u32 {
        self.upgrades
            .iter()
            .rev()
            .find(|upgrade| upgrade.height <= height)
            .map_or(PROTOCOL_GENESIS, |upgrade| upgrade.version)
    }

    /// The first height whose blocks follow `version` or a later one, if the schedule ever reaches it.
    pub fn first_height_of(&self, version: u32) -> Option<u64> {
        self.upgrades
            .iter()
            .find(|upgrade| upgrade.version >= version)
            .map(|upgrade| upgrade.height)
    }

    /// The first upgrade above `height`, if one is scheduled.
    pub fn next_after(&self, height: u64) -> Option<ProtocolUpgrade> {
        self.upgrades.iter().copied().find(|u| u.height > height)
    }
}

/// What a version changes, asked by the code that differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// Version 2: see the module doc.
    pub monotonic_timestamps: bool,
}

impl Rules {
    pub fn of(version: u32) -> Rules {
        Rules {
            monotonic_timestamps: version >= 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade(version: u32, height: u64) -> ProtocolUpgrade {
        ProtocolUpgrade { version, height }
    }

    #[test]
    fn heights_take_the_version_of_the_last_upgrade_at_or_below_them() {
        let schedule = ProtocolSchedule::new(vec![upgrade(2, 100)]).unwrap();
        assert_eq!(schedule.at(0), PROTOCOL_GENESIS);
        assert_eq!(schedule.at(99), 1);
        assert_eq!(schedule.at(100), 2);
        assert_eq!(schedule.at(u64::MAX), 2);
        assert_eq!(schedule.next_after(99), Some(upgrade(2, 100)));
        assert_eq!(schedule.next_after(100), None);
        assert_eq!(ProtocolSchedule::default().at(5), PROTOCOL_GENESIS);
        let schedule = ProtocolSchedule::new(vec![upgrade(2, 10), upgrade(3, 50)]).unwrap();
        assert_eq!(schedule.first_height_of(2), Some(10));
        assert_eq!(schedule.first_height_of(PROTOCOL_HANDOVERS), Some(50));
        assert_eq!(ProtocolSchedule::default().first_height_of(2), None);
    }

    #[test]
    fn schedules_that_lower_repeat_or_outrun_the_binary_are_refused() {
        assert_eq!(
            ProtocolSchedule::new(vec![upgrade(PROTOCOL_VERSION_MAX + 1, 10)]),
            Err(ScheduleError::Unknown {
                version: PROTOCOL_VERSION_MAX + 1
            })
        );
        for bad in [
            vec![upgrade(1, 10)],
            vec![upgrade(2, 0)],
            vec![upgrade(2, 10), upgrade(2, 20)],
        ] {
            assert!(matches!(
                ProtocolSchedule::new(bad),
                Err(ScheduleError::OutOfOrder { .. })
            ));
        }
        assert!(Rules::of(2).monotonic_timestamps && !Rules::of(1).monotonic_timestamps);
        assert!(Rules::of(3).monotonic_timestamps);
    }
}
