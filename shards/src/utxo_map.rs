//! A shard's unspent outputs by outpoint, split into [`UTXO_MAP_PARTS`] hash maps by a byte of the tx id, so the
//! set grows one part at a time. A single map of millions of entries doubles in one go: every entry is moved while
//! the shard does nothing else (in a 180 s run at 15,000 tx/s, the doubling at 1.8 million outputs made a 10 s
//! window's p99 3.7 s). A part holds 1/256 of the entries, so its doubling is 1/256 of that pause. It owns the
//! entries only; the shard keeps the commitment and the owner index.

use cas_engine::{OutPoint, TxOutput};

use crate::hash::FastMap;
use crate::limits::UTXO_MAP_PARTS;

pub(crate) struct UtxoMap {
    parts: Vec<FastMap<OutPoint, TxOutput>>,
}

impl Default for UtxoMap {
    fn default() -> Self {
        UtxoMap {
            parts: (0..UTXO_MAP_PARTS).map(|_| FastMap::default()).collect(),
        }
    }
}

impl UtxoMap {
    /// The part an outpoint lives in: byte 16 of its tx id (a blake3 hash; the shard choice reads bytes 0..8).
    fn part(outpoint: &OutPoint) -> usize {
        usize::from(outpoint.tx.0[16]) % UTXO_MAP_PARTS
    }

    pub(crate) fn get(&self, outpoint: &OutPoint) -> Option<&TxOutput> {
        self.parts[Self::part(outpoint)].get(outpoint)
    }

    pub(crate) fn contains_key(&self, outpoint: &OutPoint) -> bool {
        self.parts[Self::part(outpoint)].contains_key(outpoint)
    }

    pub(crate) fn insert(&mut self, outpoint: OutPoint, coin: TxOutput) -> Option<TxOutput> {
        self.parts[Self::part(&outpoint)].insert(outpoint, coin)
    }

    pub(crate) fn remove(&mut self, outpoint: &OutPoint) -> Option<TxOutput> {
        self.parts[Self::part(outpoint)].remove(outpoint)
    }

    pub(crate) fn len(&self) -> usize {
        self.parts.iter().map(|part| part.len()).sum()
    }

    /// Every entry, part by part (no order to rely on).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&OutPoint, &TxOutput)> {
        self.parts.iter().flat_map(|part| part.iter())
    }
}
