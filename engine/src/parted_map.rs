//! A hash map for sets that grow to millions of entries on the hot path (the shards' unspent outputs, the node's
//! transaction index), split into [`PARTS`] [`FastMap`]s whose sizes are staggered across one doubling, so they
//! outgrow their tables one at a time.
//!
//! One map of millions of entries doubles in one go: every entry moves, and the new table's pages are faulted in,
//! while its thread does nothing else. Parts of equal share all reach their limit at nearly the same total size (a
//! part's share varies by about its square root), so splitting alone only cuts the pause into pieces that fall
//! together. Here part `i` takes a share proportional to `2^(i / PARTS)`: the largest twice the smallest, so as the
//! map grows by any factor of two every part doubles exactly once, at sizes spread evenly (in log scale) over that
//! doubling, and the table work and fresh memory of a growing map arrive a part at a time.
//!
//! A key's part comes from bits 20..52 of its [`FoldState`] hash, which the parts' own tables do not look at (they
//! take a bucket from the low bits, below bit 20 while a part holds fewer than a million entries, and a tag from
//! the top seven).

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};
use std::sync::OnceLock;

use crate::fasthash::{FastMap, FoldState};

/// The parts a map is split into.
pub const PARTS: usize = 256;

/// `bounds()[i]` is the smallest 32-bit routing value that goes to part `i` (`bounds()[0]` is 0): part `i` covers
/// `[2^(i/PARTS) - 1, 2^((i+1)/PARTS) - 1)` of the unit interval, so its share is proportional to `2^(i/PARTS)`.
fn bounds() -> &'static [u32; PARTS] {
    static BOUNDS: OnceLock<[u32; PARTS]> = OnceLock::new();
    BOUNDS.get_or_init(|| {
        std::array::from_fn(|i| (((i as f64 / PARTS as f64).exp2() - 1.0) * 4_294_967_296.0) as u32)
    })
}

/// A map split into parts of staggered sizes; see the module doc. Iteration order is unspecified.
pub struct PartedMap<K, V> {
    parts: Vec<FastMap<K, V>>,
    route: FoldState,
}

impl<K, V> Default for PartedMap<K, V> {
    fn default() -> Self {
        PartedMap {
            parts: (0..PARTS).map(|_| FastMap::default()).collect(),
            route: FoldState::default(),
        }
    }
}

impl<K: Hash + Eq, V> PartedMap<K, V> {
    fn part<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        let value = (self.route.hash_one(key) >> 20) as u32;
        bounds().partition_point(|bound| *bound <= value) - 1
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.parts[self.part(key)].get(key)
    }

    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.parts[self.part(key)].contains_key(key)
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let part = self.part(&key);
        self.parts[part].insert(key, value)
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let part = self.part(key);
        self.parts[part].remove(key)
    }

    pub fn len(&self) -> usize {
        self.parts.iter().map(|part| part.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.iter().all(|part| part.is_empty())
    }

    /// Every entry, part by part (no order to rely on).
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.parts.iter().flat_map(|part| part.iter())
    }

    /// Each part's entry count and table capacity, in part order (for tests and diagnostics).
    pub fn part_sizes(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.parts.iter().map(|part| (part.len(), part.capacity()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_rise_from_zero_and_shares_double_across_the_parts() {
        let bounds = bounds();
        assert_eq!(bounds[0], 0);
        assert!(bounds.windows(2).all(|pair| pair[0] < pair[1]));
        let share = |i: usize| {
            let end = bounds.get(i + 1).map_or(1u64 << 32, |b| u64::from(*b));
            end - u64::from(bounds[i])
        };
        let ratio = share(PARTS - 1) as f64 / share(0) as f64;
        assert!(
            (ratio - 2.0).abs() < 0.02,
            "last share / first share = {ratio}"
        );
    }

    #[test]
    fn behaves_as_one_map() {
        let mut map = PartedMap::default();
        let mut reference = std::collections::HashMap::new();
        let mut state = 0x1234_5678_u64;
        for step in 0..50_000u64 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let key = state >> 50;
            if step % 3 == 0 {
                assert_eq!(map.remove(&key), reference.remove(&key));
            } else {
                assert_eq!(map.insert(key, step), reference.insert(key, step));
            }
            assert_eq!(map.get(&key), reference.get(&key));
            assert_eq!(map.contains_key(&key), reference.contains_key(&key));
        }
        assert_eq!(map.len(), reference.len());
        let mut entries: Vec<(u64, u64)> = map.iter().map(|(k, v)| (*k, *v)).collect();
        entries.sort_unstable();
        let mut expected: Vec<(u64, u64)> = reference.into_iter().collect();
        expected.sort_unstable();
        assert_eq!(entries, expected);
    }

    #[test]
    fn parts_outgrow_their_tables_one_at_a_time() {
        // Grow past a doubling of the whole map and record the total size at which each part's table grew: the
        // growths spread over the doubling instead of bunching where equal parts would all grow together.
        let mut map: PartedMap<u64, ()> = PartedMap::default();
        let mut capacities: Vec<usize> = map.part_sizes().map(|(_, c)| c).collect();
        let mut growths = Vec::new();
        let (from, to) = (1usize << 19, 1usize << 20);
        for key in 0..to as u64 {
            map.insert(key.wrapping_mul(0x9e37_79b9_7f4a_7c15), ());
            let size = key as usize + 1;
            if size > from && size.is_multiple_of(64) {
                for (part, (_, capacity)) in map.part_sizes().enumerate() {
                    if capacity > capacities[part] {
                        growths.push(size);
                        capacities[part] = capacity;
                    }
                }
            } else if size <= from && size.is_multiple_of(4096) {
                capacities = map.part_sizes().map(|(_, c)| c).collect();
            }
        }
        assert!(
            growths.len() >= PARTS - 8,
            "{} of {PARTS} parts grew",
            growths.len()
        );
        // In any eighth of the doubling, at most a quarter of the parts grow (evenly spread: about an eighth).
        let step = (to - from) / 8;
        for eighth in 0..8 {
            let start = from + eighth * step;
            let count = growths
                .iter()
                .filter(|s| (start..start + step).contains(s))
                .count();
            assert!(
                count <= PARTS / 4,
                "{count} parts grew between {start} and {}",
                start + step
            );
        }
    }
}
