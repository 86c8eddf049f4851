//! A set that remembers at most a fixed number of entries, forgetting the oldest first: for caches (certificates
//! already verified) and recent history (packages already committed) that must not grow with the chain.

use std::collections::{BTreeSet, VecDeque};

#[derive(Clone, Debug)]
pub struct BoundedSet<T: Ord + Copy> {
    members: BTreeSet<T>,
    order: VecDeque<T>,
    capacity: usize,
}

impl<T: Ord + Copy> BoundedSet<T> {
    pub fn new(capacity: usize) -> BoundedSet<T> {
        assert!(capacity > 0);
        BoundedSet {
            members: BTreeSet::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    pub fn contains(&self, value: &T) -> bool {
        self.members.contains(value)
    }

    /// Inserts `value`, forgetting the oldest entry when full.
    pub fn insert(&mut self, value: T) {
        if !self.members.insert(value) {
            return;
        }
        self.order.push_back(value);
        if self.order.len() > self.capacity {
            let oldest = self.order.pop_front().expect("over capacity, so not empty");
            self.members.remove(&oldest);
        }
        debug_assert_eq!(self.members.len(), self.order.len());
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_the_oldest_beyond_capacity() {
        let mut set = BoundedSet::new(3);
        for value in [1, 2, 3, 2, 4] {
            set.insert(value);
        }
        assert_eq!(set.len(), 3);
        assert!(!set.contains(&1) && set.contains(&2) && set.contains(&3) && set.contains(&4));
    }
}
