//! The binary Merkle tree over a block's tx ids, with inclusion proofs for light wallets and settlement receipts.
//!
//! Leaves and inner nodes hash under different domains (no second-preimage by posing a node as a leaf), and an
//! odd node is promoted to the next level unchanged rather than paired with a copy of itself (so two different
//! lists of ids never share a root, unlike Bitcoin's duplication). The root of no leaves is all zeros.

use crate::id::{domain, DomainKey, Hash32};

static LEAF: DomainKey = DomainKey::new(domain::MERKLE_LEAF);
static NODE: DomainKey = DomainKey::new(domain::MERKLE_NODE);

fn leaf(id: &Hash32) -> Hash32 {
    LEAF.hash(&id.0)
}

fn node(left: &Hash32, right: &Hash32) -> Hash32 {
    let mut h = NODE.hasher();
    h.update(&left.0);
    h.update(&right.0);
    Hash32::from(h.finalize())
}

/// The root over `ids` in order. Each level's hashes are independent, so they go through
/// [`DomainKey::hash_many`] (sixteen side by side where the CPU allows); [`proof`] and [`verify`] take the same
/// steps one hash at a time.
pub fn root(ids: &[Hash32]) -> Hash32 {
    if ids.is_empty() {
        return Hash32::ZERO;
    }
    let messages: Vec<&[u8]> = ids.iter().map(|id| &id.0[..]).collect();
    let mut level = vec![Hash32::ZERO; ids.len()];
    LEAF.hash_many(&messages, &mut level);
    while level.len() > 1 {
        let pairs: Vec<[u8; 64]> = level
            .chunks_exact(2)
            .map(|pair| {
                let mut bytes = [0u8; 64];
                bytes[..32].copy_from_slice(&pair[0].0);
                bytes[32..].copy_from_slice(&pair[1].0);
                bytes
            })
            .collect();
        let messages: Vec<&[u8]> = pairs.iter().map(|pair| &pair[..]).collect();
        let mut next = vec![Hash32::ZERO; pairs.len()];
        NODE.hash_many(&messages, &mut next);
        // An odd node is promoted unchanged.
        if level.len() % 2 == 1 {
            next.push(level[level.len() - 1]);
        }
        level = next;
    }
    level[0]
}

fn next_level(level: &[Hash32]) -> Vec<Hash32> {
    level
        .chunks(2)
        .map(|pair| {
            if pair.len() == 2 {
                node(&pair[0], &pair[1])
            } else {
                pair[0]
            }
        })
        .collect()
}

/// One step of an inclusion proof: the sibling, and whether it sits to the left.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ProofStep {
    pub sibling: Hash32,
    pub sibling_is_left: bool,
}

/// The path from leaf `index` to the root, or `None` when the index is out of range.
pub fn proof(ids: &[Hash32], index: usize) -> Option<Vec<ProofStep>> {
    if index >= ids.len() {
        return None;
    }
    let mut steps = Vec::new();
    let mut level: Vec<Hash32> = ids.iter().map(leaf).collect();
    let mut position = index;
    while level.len() > 1 {
        let sibling = position ^ 1;
        if sibling < level.len() {
            steps.push(ProofStep {
                sibling: level[sibling],
                sibling_is_left: sibling < position,
            });
        }
        level = next_level(&level);
        position /= 2;
    }
    Some(steps)
}

/// Checks that `id` is included under `root` by `steps`.
pub fn verify(root_expected: &Hash32, id: &Hash32, steps: &[ProofStep]) -> bool {
    let computed = steps.iter().fold(leaf(id), |acc, step| {
        if step.sibling_is_left {
            node(&step.sibling, &acc)
        } else {
            node(&acc, &step.sibling)
        }
    });
    computed == *root_expected
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(count: usize) -> Vec<Hash32> {
        (0..count as u32)
            .map(|i| Hash32::of(domain::TX_ID, &i.to_le_bytes()))
            .collect()
    }

    /// The root the tree's definition gives, one hash at a time.
    fn root_one_by_one(ids: &[Hash32]) -> Hash32 {
        if ids.is_empty() {
            return Hash32::ZERO;
        }
        let mut level: Vec<Hash32> = ids.iter().map(leaf).collect();
        while level.len() > 1 {
            level = next_level(&level);
        }
        level[0]
    }

    /// The batched root is the one-hash-at-a-time root for every count around the sixteen lanes and their
    /// powers, odd levels included.
    #[test]
    fn batched_root_is_the_one_by_one_root() {
        for count in (0..70).chain([255, 256, 257, 1000]) {
            let ids = ids(count);
            assert_eq!(root(&ids), root_one_by_one(&ids), "{count} leaves");
        }
    }

    #[test]
    fn every_leaf_proves_and_a_wrong_one_does_not() {
        for count in [1, 2, 3, 5, 8, 13] {
            let ids = ids(count);
            let root = root(&ids);
            for (index, id) in ids.iter().enumerate() {
                let steps = proof(&ids, index).unwrap();
                assert!(verify(&root, id, &steps), "leaf {index} of {count}");
                assert!(!verify(&root, &Hash32::ZERO, &steps));
            }
            assert!(proof(&ids, count).is_none());
        }
    }

    #[test]
    fn odd_promotion_does_not_collide_with_duplication() {
        let three = ids(3);
        let four = vec![three[0], three[1], three[2], three[2]];
        assert_ne!(root(&three), root(&four));
        assert_ne!(root(&three[..2]), root(&three));
    }
}
