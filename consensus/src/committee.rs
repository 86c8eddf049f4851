//! The DPOS committee as consensus sees it: members in a fixed order, their keys and stakes, and the stake
//! thresholds (quorum = more than two thirds, validity = more than one third). Pure data; no IO.

use cas_engine::PublicKey;

/// A member's position in the committee; certificates name signers by it.
pub type MemberIndex = u16;

pub use crate::limits::COMMITTEE_MEMBERS_MAX;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committee {
    keys: Vec<PublicKey>,
    stakes: Vec<u64>,
    stake_total: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitteeError {
    #[error("a committee needs 1 to {COMMITTEE_MEMBERS_MAX} members, got {0}")]
    Size(usize),
    #[error("member {0} has zero stake")]
    ZeroStake(usize),
    #[error("the stakes overflow u64")]
    StakeOverflow,
}

impl Committee {
    pub fn new(members: Vec<(PublicKey, u64)>) -> Result<Committee, CommitteeError> {
        if members.is_empty() || members.len() > COMMITTEE_MEMBERS_MAX {
            return Err(CommitteeError::Size(members.len()));
        }
        if let Some(index) = members.iter().position(|(_, stake)| *stake == 0) {
            return Err(CommitteeError::ZeroStake(index));
        }
        let stake_total = members
            .iter()
            .try_fold(0u64, |sum, (_, stake)| sum.checked_add(*stake))
            .ok_or(CommitteeError::StakeOverflow)?;
        let (keys, stakes) = members.into_iter().unzip();
        Ok(Committee {
            keys,
            stakes,
            stake_total,
        })
    }

    pub fn size(&self) -> usize {
        self.keys.len()
    }

    pub fn key(&self, member: MemberIndex) -> Option<&PublicKey> {
        self.keys.get(member as usize)
    }

    pub fn index_of(&self, key: &PublicKey) -> Option<MemberIndex> {
        self.keys
            .iter()
            .position(|k| k == key)
            .map(|i| i as MemberIndex)
    }

    pub fn stake(&self, member: MemberIndex) -> u64 {
        self.stakes.get(member as usize).copied().unwrap_or(0)
    }

    /// Stake that makes a quorum: more than two thirds of the total.
    pub fn quorum_stake(&self) -> u64 {
        self.stake_total / 3 * 2 + (self.stake_total % 3 * 2) / 3 + 1
    }

    /// Stake that must include an honest member: more than one third of the total.
    pub fn validity_stake(&self) -> u64 {
        self.stake_total / 3 + 1
    }

    /// The leader of a round: members take turns in committee order.
    pub fn leader(&self, round: u64) -> MemberIndex {
        (round % self.keys.len() as u64) as MemberIndex
    }

    pub fn members(&self) -> impl Iterator<Item = MemberIndex> + '_ {
        (0..self.keys.len()).map(|i| i as MemberIndex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committee(stakes: &[u64]) -> Committee {
        Committee::new(
            stakes
                .iter()
                .enumerate()
                .map(|(i, s)| (PublicKey([i as u8; 32]), *s))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn thresholds_are_strict_fractions() {
        // n = 3f + 1 equal stakes: quorum 2f + 1, validity f + 1.
        for f in 1..20u64 {
            let c = committee(&vec![1; (3 * f + 1) as usize]);
            assert_eq!(c.quorum_stake(), 2 * f + 1);
            assert_eq!(c.validity_stake(), f + 1);
        }
        // Quorum is always more than 2/3 and the smallest such integer.
        for total in 1..200u64 {
            let c = committee(&[total]);
            let q = c.quorum_stake();
            assert!(
                3 * q > 2 * total && 3 * (q - 1) <= 2 * total,
                "total {total}"
            );
        }
    }

    #[test]
    fn rejects_bad_committees() {
        assert_eq!(Committee::new(vec![]), Err(CommitteeError::Size(0)));
        assert_eq!(
            Committee::new(vec![(PublicKey([1; 32]), 0)]),
            Err(CommitteeError::ZeroStake(0))
        );
        assert_eq!(
            Committee::new(vec![
                (PublicKey([1; 32]), u64::MAX),
                (PublicKey([2; 32]), 1)
            ]),
            Err(CommitteeError::StakeOverflow)
        );
    }
}
