//! The deterministic two-tier broadcast tree of the whitepaper (DPOS -> POS -> the rest), computed from the
//! member lists alone so every node derives the same tree without talking. Pure: says who relays to whom; the
//! node sends.
//!
//! Tier 1: the origin (a committee member) sends to every other committee member. Tier 2: POS node `j` is a child
//! of committee member `j mod D`, so the committee shares the POS tier evenly. Tier 3: lay the POS nodes and then
//! the others in one list `L`; the node at position `p >= P` of `L` is a child of position `(p - P) / fanout`, so
//! each POS node roots up to `fanout` others and each of those relays to up to `fanout` more.

use cas_engine::PublicKey;

/// Why a tree cannot be built or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("the committee is empty")]
    EmptyCommittee,
    #[error("fan-out must be at least 1")]
    ZeroFanout,
    #[error("{0:?} appears twice in the member lists")]
    Duplicate(PublicKey),
    #[error("the origin {0:?} is not a committee member")]
    OriginNotInCommittee(PublicKey),
    #[error("{0} nodes below the POS tier, but no POS node to root them")]
    NoPosTier(usize),
}

/// The members of each tier, in an order every node agrees on (e.g. by stake, then key).
#[derive(Debug, Clone)]
pub struct TwoTierTree {
    committee: Vec<PublicKey>,
    /// POS nodes, then the others: the third tier's heap layout runs over this list.
    lower: Vec<PublicKey>,
    pos_count: usize,
    fanout: usize,
}

impl TwoTierTree {
    pub fn new(
        committee: Vec<PublicKey>,
        pos: Vec<PublicKey>,
        others: Vec<PublicKey>,
        fanout: usize,
    ) -> Result<TwoTierTree, TreeError> {
        if committee.is_empty() {
            return Err(TreeError::EmptyCommittee);
        }
        if fanout == 0 {
            return Err(TreeError::ZeroFanout);
        }
        let mut seen = std::collections::HashSet::new();
        for key in committee.iter().chain(&pos).chain(&others) {
            if !seen.insert(*key) {
                return Err(TreeError::Duplicate(*key));
            }
        }
        if pos.is_empty() && !others.is_empty() {
            return Err(TreeError::NoPosTier(others.len()));
        }
        let pos_count = pos.len();
        let mut lower = pos;
        lower.extend(others);
        Ok(TwoTierTree {
            committee,
            lower,
            pos_count,
            fanout,
        })
    }

    /// Everyone in the tree.
    pub fn len(&self) -> usize {
        self.committee.len() + self.lower.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// Who relays to `me` (whatever the origin, below the committee): the committee member `j mod D` for POS node
    /// `j`, the node `(p - P) / fanout` of the lower list for the node at its position `p >= P`. None for a
    /// committee member (it hears the origin itself) and for a key not in the tree. A follower reads from its parent.
    pub fn parent(&self, me: &PublicKey) -> Option<PublicKey> {
        let position = self.lower.iter().position(|key| key == me)?;
        Some(if position < self.pos_count {
            self.committee[position % self.committee.len()]
        } else {
            self.lower[(position - self.pos_count) / self.fanout]
        })
    }

    /// `me`'s parent, its parent's parent and so on up to a committee member: where a follower reads from, nearest
    /// first (each further one a fallback). Empty for a committee member or a key not in the tree.
    pub fn ancestors(&self, me: &PublicKey) -> Vec<PublicKey> {
        let mut chain = Vec::new();
        let mut node = *me;
        while let Some(parent) = self.parent(&node) {
            chain.push(parent);
            node = parent;
        }
        chain
    }

    /// Whom `me` relays a message from `origin` to. Empty for leaves and for keys not in the tree.
    pub fn children(&self, origin: PublicKey, me: PublicKey) -> Result<Vec<PublicKey>, TreeError> {
        if !self.committee.contains(&origin) {
            return Err(TreeError::OriginNotInCommittee(origin));
        }
        let mut children = Vec::new();
        if let Some(member) = self.committee.iter().position(|key| *key == me) {
            if me == origin {
                children.extend(self.committee.iter().filter(|key| **key != me));
            }
            let members = self.committee.len();
            children.extend(
                self.lower[..self.pos_count]
                    .iter()
                    .skip(member)
                    .step_by(members),
            );
        } else if let Some(position) = self.lower.iter().position(|key| *key == me) {
            let first = self.pos_count + position * self.fanout;
            let end = (first + self.fanout).min(self.lower.len());
            if first < end {
                children.extend(&self.lower[first..end]);
            }
        }
        Ok(children)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(start: u8, count: usize) -> Vec<PublicKey> {
        (0..count)
            .map(|index| {
                let mut bytes = [start; 32];
                bytes[..8].copy_from_slice(&(index as u64).to_le_bytes());
                PublicKey(bytes)
            })
            .collect()
    }

    /// Follows the relays from the origin and returns how many hops reached each node.
    fn reach(tree: &TwoTierTree, origin: PublicKey) -> std::collections::HashMap<PublicKey, usize> {
        let mut depth = std::collections::HashMap::from([(origin, 0usize)]);
        let mut frontier = vec![origin];
        while let Some(node) = frontier.pop() {
            for child in tree.children(origin, node).unwrap() {
                assert!(
                    depth.insert(child, depth[&node] + 1).is_none(),
                    "{child:?} has two parents"
                );
                frontier.push(child);
            }
        }
        depth
    }

    #[test]
    fn every_member_is_reached_exactly_once_from_every_origin() {
        for (committee, pos, others, fanout) in [
            (1, 0, 0, 1),
            (4, 0, 0, 8),
            (4, 3, 50, 2),
            (7, 20, 0, 8),
            (21, 100, 878, 8),
            (3, 1, 10, 1),
        ] {
            let tree = TwoTierTree::new(keys(1, committee), keys(2, pos), keys(3, others), fanout)
                .unwrap();
            for origin in keys(1, committee) {
                let depth = reach(&tree, origin);
                assert_eq!(depth.len(), tree.len(), "sizes {committee}/{pos}/{others}");
                for member in keys(1, committee) {
                    assert!(depth[&member] <= 1, "committee in one hop");
                }
                for node in keys(2, pos) {
                    assert!(depth[&node] <= 2, "POS in at most two hops");
                }
            }
        }
    }

    #[test]
    fn parents_are_the_inverse_of_children() {
        for (committee, pos, others, fanout) in [
            (4, 3, 0, 2),
            (4, 3, 50, 2),
            (21, 100, 878, 8),
            (3, 1, 10, 1),
        ] {
            let tree = TwoTierTree::new(keys(1, committee), keys(2, pos), keys(3, others), fanout)
                .unwrap();
            let origin = keys(1, committee)[0];
            for node in keys(2, pos).into_iter().chain(keys(3, others)) {
                let parent = tree.parent(&node).expect("below the committee");
                assert!(tree.children(origin, parent).unwrap().contains(&node));
                let ancestors = tree.ancestors(&node);
                assert_eq!(ancestors[0], parent);
                assert!(keys(1, committee).contains(ancestors.last().unwrap()));
                assert!(ancestors.len() <= 1 + pos + others, "no cycle");
            }
            for member in keys(1, committee) {
                assert_eq!(tree.parent(&member), None);
            }
        }
    }

    #[test]
    fn the_tree_is_deterministic_and_bounded_by_the_fanout() {
        let build = || TwoTierTree::new(keys(1, 4), keys(2, 8), keys(3, 100), 3).unwrap();
        let (a, b) = (build(), build());
        let origin = keys(1, 4)[2];
        for node in keys(3, 100) {
            let children = a.children(origin, node).unwrap();
            assert_eq!(children, b.children(origin, node).unwrap());
            assert!(children.len() <= 3);
        }
    }

    #[test]
    fn bad_trees_are_refused() {
        assert_eq!(
            TwoTierTree::new(vec![], keys(2, 1), vec![], 2).unwrap_err(),
            TreeError::EmptyCommittee
        );
        assert_eq!(
            TwoTierTree::new(keys(1, 2), vec![], vec![], 0).unwrap_err(),
            TreeError::ZeroFanout
        );
        assert_eq!(
            TwoTierTree::new(keys(1, 2), vec![], keys(3, 4), 2).unwrap_err(),
            TreeError::NoPosTier(4)
        );
        let duplicate = keys(1, 2)[1];
        assert_eq!(
            TwoTierTree::new(keys(1, 2), vec![duplicate], vec![], 2).unwrap_err(),
            TreeError::Duplicate(duplicate)
        );
        let tree = TwoTierTree::new(keys(1, 2), keys(2, 2), vec![], 2).unwrap();
        let outsider = keys(2, 1)[0];
        assert_eq!(
            tree.children(outsider, outsider).unwrap_err(),
            TreeError::OriginNotInCommittee(outsider)
        );
    }
}
