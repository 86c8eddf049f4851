//! A fast keyed hasher for the maps of the hot path (the rules' in-block overlay, the shards' sets and indexes).
//! Their keys are outpoints (a blake3 tx id and an index) and public keys: already uniform bytes, so SipHash's cost
//! buys nothing but time. Each 8-byte word is folded in with a multiply, starting from a per-process random key, so
//! bucket positions cannot be predicted from outside (no hash flooding by ground tx ids). The key only places
//! buckets, like std's `RandomState`: no result of the engine depends on it. It hashes; it never compares or stores.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

fn process_key() -> u64 {
    static KEY: OnceLock<u64> = OnceLock::new();
    *KEY.get_or_init(|| RandomState::new().hash_one(0x5eed_u64))
}

#[derive(Clone, Copy)]
pub struct FoldState {
    key: u64,
}

impl Default for FoldState {
    fn default() -> Self {
        FoldState { key: process_key() }
    }
}

impl BuildHasher for FoldState {
    type Hasher = FoldHasher;
    fn build_hasher(&self) -> FoldHasher {
        FoldHasher { state: self.key }
    }
}

pub struct FoldHasher {
    state: u64,
}

impl FoldHasher {
    #[inline]
    fn fold(&mut self, word: u64) {
        self.state = (self.state ^ word).wrapping_mul(MULTIPLIER).rotate_left(29);
    }
}

impl Hasher for FoldHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.fold(u64::from_le_bytes(word.try_into().expect("8 bytes")));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.fold(u64::from_le_bytes(last));
        }
    }

    #[inline]
    fn write_u32(&mut self, value: u32) {
        self.fold(u64::from(value));
    }

    #[inline]
    fn write_u64(&mut self, value: u64) {
        self.fold(value);
    }

    #[inline]
    fn write_usize(&mut self, value: usize) {
        self.fold(value as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        let mut z = self.state;
        z = (z ^ (z >> 32)).wrapping_mul(0xd6e8_feb8_6659_fd93);
        z ^ (z >> 32)
    }
}

pub type FastMap<K, V> = std::collections::HashMap<K, V, FoldState>;
pub type FastSet<K> = std::collections::HashSet<K, FoldState>;
