//! The BFT's pool of POW witness headers waiting to be carried by a proposal, the choice of the next proposal's
//! headers, and the stateless checks a voter makes of carried ones. Their validity is judged at execution, never
//! here.

use std::collections::BTreeSet;

use cas_engine::BlockHash;

use crate::limits::{BLOCK_WITNESSES_MAX, BLOCK_WITNESS_BYTES_MAX, WITNESS_POOL_MAX};
use crate::messages::witness_bytes;
use crate::witness::{encode_witness, meets_difficulty, WitnessHash, WitnessHeader};

use super::Bft;

impl Bft {
    /// Offers a witness header (one the node's witness chain accepted) for a future proposal to carry; false when
    /// the pool is full. A header already carried or pooled is taken as done.
    pub fn add_witness(&mut self, header: WitnessHeader) -> bool {
        let hash = header.hash();
        let key = (header.height, hash);
        if self.committed_witnesses.contains(&hash) || self.witness_pool.contains_key(&key) {
            return true;
        }
        if self.witness_pool.len() >= WITNESS_POOL_MAX {
            self.stats.witnesses_refused += 1;
            return false;
        }
        self.witness_pool.insert(key, header);
        true
    }

    /// The witness headers of the next proposal: pooled ones no uncommitted ancestor carries, lowest height first
    /// (a parent or uncle before the witness that needs it), within the count and byte bounds.
    pub(super) fn select_witnesses(&self, tip: &BlockHash) -> Vec<WitnessHeader> {
        let mut in_flight = BTreeSet::new();
        let mut cursor = *tip;
        while let Some(block) = self.blocks.get(&cursor) {
            if block.height <= self.committed_height {
                break;
            }
            in_flight.extend(block.witnesses.iter().map(WitnessHeader::hash));
            cursor = block.parent();
        }
        let mut witnesses = Vec::new();
        let mut bytes = 0;
        for ((_, hash), header) in &self.witness_pool {
            if witnesses.len() >= BLOCK_WITNESSES_MAX {
                break;
            }
            if in_flight.contains(hash) {
                continue;
            }
            let size = encode_witness(header).len();
            if bytes + size > BLOCK_WITNESS_BYTES_MAX {
                break;
            }
            bytes += size;
            witnesses.push(header.clone());
        }
        witnesses
    }

    /// The stateless checks of carried witnesses: within the bounds, distinct, each carrying the work it claims.
    pub(super) fn witnesses_acceptable(witnesses: &[WitnessHeader]) -> bool {
        if witnesses.len() > BLOCK_WITNESSES_MAX
            || witness_bytes(witnesses) > BLOCK_WITNESS_BYTES_MAX
        {
            return false;
        }
        let hashes: Vec<WitnessHash> = witnesses.iter().map(WitnessHeader::hash).collect();
        let distinct: BTreeSet<&WitnessHash> = hashes.iter().collect();
        distinct.len() == hashes.len()
            && witnesses
                .iter()
                .zip(&hashes)
                .all(|(w, hash)| meets_difficulty(hash, w.difficulty))
    }
}
