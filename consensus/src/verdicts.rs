//! Signature verification for the state machines: the engine's batch verifier, plus an optional per-thread memo of
//! good verdicts that only the simulator turns on (its members run in one thread and check the same certificates
//! n times over). A memo of good verdicts changes no outcome: the engine's cofactored verdict for an exact (key,
//! message, signature) triple is the same in any batch. A node never turns it on.

use std::cell::RefCell;
use std::collections::HashSet;

use cas_engine::crypto::SigEntry;

thread_local! {
    static GOOD: RefCell<Option<HashSet<[u8; 32]>>> = const { RefCell::new(None) };
}

pub use crate::limits::MEMO_ENTRIES_MAX;

fn triple_hash(entry: &SigEntry<'_>) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(entry.key);
    h.update(entry.signature);
    h.update(entry.message);
    *h.finalize().as_bytes()
}

/// Verifies `entries`; returns the indices of the bad ones, ascending (as `cas_engine::crypto::verify_batch`).
pub fn verify_batch(entries: &[SigEntry<'_>]) -> Vec<usize> {
    let memo_on = GOOD.with(|good| good.borrow().is_some());
    if !memo_on {
        return cas_engine::crypto::verify_batch(entries);
    }
    let hashes: Vec<[u8; 32]> = entries.iter().map(triple_hash).collect();
    let unknown: Vec<usize> = GOOD.with(|good| {
        let good = good.borrow();
        let good = good.as_ref().expect("checked above");
        (0..entries.len())
            .filter(|i| !good.contains(&hashes[*i]))
            .collect()
    });
    let to_check: Vec<SigEntry<'_>> = unknown.iter().map(|i| entries[*i]).collect();
    let bad: Vec<usize> = cas_engine::crypto::verify_batch(&to_check)
        .into_iter()
        .map(|i| unknown[i])
        .collect();
    GOOD.with(|good| {
        let mut good = good.borrow_mut();
        let good = good.as_mut().expect("checked above");
        if good.len() + unknown.len() > MEMO_ENTRIES_MAX {
            good.clear();
        }
        for index in &unknown {
            if !bad.contains(index) {
                good.insert(hashes[*index]);
            }
        }
    });
    bad
}

/// Turns the memo on for this thread until the guard is dropped (the simulator, for one run).
pub struct MemoGuard {
    previous: Option<HashSet<[u8; 32]>>,
}

pub fn memo_on() -> MemoGuard {
    let previous = GOOD.with(|good| good.borrow_mut().replace(HashSet::new()));
    MemoGuard { previous }
}

impl Drop for MemoGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        GOOD.with(|good| *good.borrow_mut() = previous);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cas_engine::fixtures::{key, COMMITTEE_KEYS};

    #[test]
    fn memo_gives_the_engines_verdicts() {
        let keypair = key(COMMITTEE_KEYS, 0);
        let public = keypair.public();
        let message = [3u8; 32];
        let good = keypair.sign(&message);
        let mut bad = good;
        bad.0[5] ^= 1;
        let entries = [
            SigEntry {
                message: &message,
                key: &public.0,
                signature: &good.0,
            },
            SigEntry {
                message: &message,
                key: &public.0,
                signature: &bad.0,
            },
        ];
        let plain = verify_batch(&entries);
        assert_eq!(plain, vec![1]);
        let _guard = memo_on();
        assert_eq!(verify_batch(&entries), plain);
        // Twice: the good one now comes from the memo, the bad one is checked again and still refused.
        assert_eq!(verify_batch(&entries), plain);
        assert_eq!(verify_batch(&entries[1..]), vec![0]);
    }
}
