//! The load generator's map from a planned transaction's id to its place in the plan, built once before the clock
//! starts and read by every answer reader.
//!
//! Every answer is looked up by its transaction id, and the plan is large (hundreds of thousands of ids, tens of
//! MiB), so a lookup is a cache miss or two, one after another: in a profile of `cas load` at 20,000 tx/s its
//! readers spent nine tenths of their time in a hash map's probe loads. Here the readers look up a whole batch of
//! answers at once: the first pass only computes each id's slot and asks the CPU to fetch it, the second probes,
//! so the batch's misses overlap instead of queueing. Ids are blake3 hashes of the plan's own transactions, so their
//! first eight bytes already spread evenly over the slots (an id not in the plan probes to an empty slot and is
//! not found).

use cas_engine::TxId;

/// An open-addressed table of (id, plan index), at most half full, probed linearly.
pub struct IdTable {
    slots: Vec<Slot>,
    mask: usize,
}

#[derive(Clone, Copy)]
struct Slot {
    id: TxId,
    /// `EMPTY` for a free slot.
    index: u32,
}

const EMPTY: u32 = u32::MAX;

impl IdTable {
    /// The table of `ids`, each mapped to its position. Ids are distinct (a plan never repeats a transaction); fewer
    /// than `u32::MAX` of them.
    pub fn new(ids: impl ExactSizeIterator<Item = TxId>) -> IdTable {
        assert!(ids.len() < EMPTY as usize, "too many ids for a u32 index");
        let capacity = (ids.len() * 2).next_power_of_two().max(16);
        let mut table = IdTable {
            slots: vec![
                Slot {
                    id: TxId::default(),
                    index: EMPTY,
                };
                capacity
            ],
            mask: capacity - 1,
        };
        for (index, id) in ids.enumerate() {
            let mut slot = table.home(&id);
            while table.slots[slot].index != EMPTY {
                debug_assert!(table.slots[slot].id != id, "a plan repeats a transaction");
                slot = (slot + 1) & table.mask;
            }
            table.slots[slot] = Slot {
                id,
                index: index as u32,
            };
        }
        table
    }

    fn home(&self, id: &TxId) -> usize {
        u64::from_le_bytes(id.0[..8].try_into().expect("8 bytes")) as usize & self.mask
    }

    /// The plan index of each item's id (`id_of`), in order (`None`: not in the plan), into `found` (cleared
    /// first).
    pub fn find_all<T>(
        &self,
        items: &[T],
        id_of: impl Fn(&T) -> &TxId,
        found: &mut Vec<Option<u32>>,
    ) {
        for item in items {
            prefetch(&self.slots[self.home(id_of(item))]);
        }
        found.clear();
        found.extend(items.iter().map(|item| self.find(id_of(item))));
    }

    /// The plan index of `id`, if it is in the plan.
    pub fn find(&self, id: &TxId) -> Option<u32> {
        let mut slot = self.home(id);
        loop {
            let entry = &self.slots[slot];
            if entry.index == EMPTY {
                return None;
            }
            if entry.id == *id {
                return Some(entry.index);
            }
            slot = (slot + 1) & self.mask;
        }
    }
}

/// Asks the CPU to bring `slot`'s cache line in (a hint: no effect on any result).
#[inline(always)]
fn prefetch(slot: &Slot) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; the address is a live reference.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
            (slot as *const Slot).cast(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = slot;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> TxId {
        cas_engine::id::Hash32(*blake3::hash(&n.to_le_bytes()).as_bytes())
    }

    #[test]
    fn every_planned_id_finds_its_index_and_others_find_nothing() {
        let planned: Vec<TxId> = (0..10_000).map(id).collect();
        let table = IdTable::new(planned.iter().copied());
        let mut asked: Vec<TxId> = planned.iter().rev().copied().collect();
        asked.extend((10_000..12_000).map(id));
        let mut found = Vec::new();
        table.find_all(&asked, |id| id, &mut found);
        for (position, (asked, found)) in asked.iter().zip(&found).enumerate() {
            let expected = planned.iter().position(|p| p == asked).map(|i| i as u32);
            assert_eq!(*found, expected, "id at {position}");
        }
    }

    #[test]
    fn ids_sharing_a_home_slot_are_told_apart() {
        // Same first eight bytes, so the same home slot: the probe must compare whole ids.
        let mut a = [7u8; 32];
        let mut b = [7u8; 32];
        a[31] = 1;
        b[31] = 2;
        let (a, b) = (cas_engine::id::Hash32(a), cas_engine::id::Hash32(b));
        let table = IdTable::new([a, b].into_iter());
        assert_eq!(table.find(&a), Some(0));
        assert_eq!(table.find(&b), Some(1));
        assert_eq!(table.find(&cas_engine::id::Hash32([7u8; 32])), None);
    }
}
