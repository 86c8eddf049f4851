//! Which shard owns an outpoint: a fixed function of the outpoint alone, so every node with the same shard count
//! routes it the same way, and every shard count gives the same ledger. It never looks at state.

use cas_engine::OutPoint;

/// The shard (in `0..shards`) that owns `outpoint`. The tx id is a blake3 output, so its first 8 bytes are already
/// uniform; the output index is mixed in so that outputs of one transaction spread over the shards.
pub fn shard_of(outpoint: &OutPoint, shards: usize) -> usize {
    debug_assert!(shards > 0);
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&outpoint.tx.0[..8]);
    let mixed = u64::from_le_bytes(prefix)
        .wrapping_add(u64::from(outpoint.index).wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .wrapping_mul(0xbf58_476d_1ce4_e5b9);
    // Multiply-high maps the 64-bit value onto 0..shards without the bias of a modulo.
    ((u128::from(mixed) * shards as u128) >> 64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use cas_engine::id::domain;
    use cas_engine::Hash32;

    #[test]
    fn spreads_and_stays_in_range() {
        let mut counts = [0usize; 4];
        for i in 0..4000u32 {
            let outpoint = OutPoint {
                tx: Hash32::of(domain::TX_ID, &i.to_le_bytes()),
                index: i % 3,
            };
            let shard = shard_of(&outpoint, 4);
            assert_eq!(shard, shard_of(&outpoint, 4));
            counts[shard] += 1;
            assert_eq!(shard_of(&outpoint, 1), 0);
        }
        assert!(counts.iter().all(|&c| c > 800), "uneven: {counts:?}");
    }
}
