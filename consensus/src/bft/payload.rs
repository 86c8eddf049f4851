//! The BFT's payload pool: certified packages waiting for a proposal, and the choice of the next proposal's
//! certificates (each creator's in sequence order, within the block's transaction and byte bounds). It never holds
//! a package's transactions, only their certificates.

use std::collections::BTreeSet;

use cas_engine::BlockHash;

use crate::limits::{BLOCK_PAYLOAD_BYTES_MAX, BLOCK_PAYLOAD_TXS_MAX, SEQUENCE_GAP_WAIT_MS};
use crate::messages::{verify_availability, AvailabilityCert, PackageSize};

use super::Bft;

impl Bft {
    /// Offers a certified package for a future proposal; false when the pool is full (back-pressure) or the
    /// certificate does not verify (checked here unless `verified`: this member formed it from acks it checked).
    /// Our own certificates are always taken: their submitters have been told `accepted`, so this member must be
    /// able to propose them (its admission bounds how many there are). So is a creator's next package in sequence:
    /// refusing it while a later one of the same creator was taken would leave a gap that the proposal rule gives
    /// up on after [`SEQUENCE_GAP_WAIT_MS`], ordering a client's dependent transaction before the one it spends;
    /// there is one such package per creator, so the pool holds at most `payload_pool_max` + committee size.
    pub fn add_payload(&mut self, cert: AvailabilityCert, verified: bool) -> bool {
        if self.committed_packages.contains(&cert.package)
            || self.payload_pool.iter().any(|c| c.package == cert.package)
        {
            return true;
        }
        let next_in_sequence =
            self.next_sequence.get(&cert.creator).copied().unwrap_or(0) == cert.sequence;
        if self.payload_pool.len() >= self.config.payload_pool_max
            && cert.creator != self.me
            && !next_in_sequence
        {
            self.stats.payload_refused += 1;
            return false;
        }
        if !verified && !self.verified_certs.contains(&(cert.package, cert.size)) {
            if verify_availability(&cert, &self.committee, self.config.epoch).is_err() {
                self.stats.refused += 1;
                return false;
            }
            self.verified_certs.insert((cert.package, cert.size));
        }
        self.pool_arrival_ms.insert(cert.package, self.now_ms);
        self.payload_pool.push_back(cert);
        if self.proposal_waiting && (self.config.proposal_wait_ms == 0 || self.ready_to_propose()) {
            let mut actions = Vec::new();
            self.propose(&mut actions);
            self.deferred.extend(actions);
        }
        true
    }

    /// The certificates of the next proposal: those no uncommitted ancestor carries, each creator's in sequence
    /// order and without gaps (a creator's package waits for its predecessor, so its client's chain of dependent
    /// transactions runs in order), unless the predecessor has been missing for [`SEQUENCE_GAP_WAIT_MS`].
    pub(super) fn select_payload(&self, tip: &BlockHash) -> Vec<AvailabilityCert> {
        let mut expected = self.next_sequence.clone();
        let mut in_flight = BTreeSet::new();
        let mut cursor = *tip;
        while let Some(block) = self.blocks.get(&cursor) {
            if block.height <= self.committed_height {
                break;
            }
            for cert in &block.payload {
                in_flight.insert(cert.package);
                let next = expected.entry(cert.creator).or_insert(0);
                *next = (*next).max(cert.sequence + 1);
            }
            cursor = block.parent();
        }
        let mut candidates: Vec<&AvailabilityCert> = self
            .payload_pool
            .iter()
            .filter(|c| {
                !in_flight.contains(&c.package) && !self.committed_packages.contains(&c.package)
            })
            .collect();
        candidates.sort_by_key(|c| (c.creator, c.sequence));
        let mut payload = Vec::new();
        let mut size = PayloadSize::default();
        for cert in candidates {
            // Stops at the first that does not fit: a creator's later package never goes before its earlier one.
            if payload.len() >= self.config.payload_certs_max || !size.add(cert.size) {
                break;
            }
            let next = expected.entry(cert.creator).or_insert(0);
            let waited = self
                .pool_arrival_ms
                .get(&cert.package)
                .map_or(0, |at| self.now_ms.saturating_sub(*at));
            // A member behind on the committed history does not know which sequences are already taken: it never
            // proposes past a gap.
            let gap_given_up = waited >= SEQUENCE_GAP_WAIT_MS && self.leaders.covers(self.round);
            if cert.sequence <= *next || gap_given_up {
                *next = (*next).max(cert.sequence + 1);
                payload.push(cert.clone());
            }
        }
        payload
    }
}

/// The ledger block a proposal's certificates make, as they add up: within [`BLOCK_PAYLOAD_TXS_MAX`] and
/// [`BLOCK_PAYLOAD_BYTES_MAX`] every executor's block decoder accepts it.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct PayloadSize {
    txs: usize,
    bytes: usize,
}

impl PayloadSize {
    /// The size of these certificates' block, or None when it does not fit.
    pub(super) fn of(certs: &[AvailabilityCert]) -> Option<PayloadSize> {
        let mut size = PayloadSize::default();
        certs.iter().all(|cert| size.add(cert.size)).then_some(size)
    }

    /// Adds a package when the block still fits with it; false (and unchanged) when it does not.
    fn add(&mut self, package: PackageSize) -> bool {
        let txs = self.txs + package.txs as usize;
        let bytes = self.bytes + package.bytes as usize;
        if txs > BLOCK_PAYLOAD_TXS_MAX || bytes > BLOCK_PAYLOAD_BYTES_MAX {
            return false;
        }
        *self = PayloadSize { txs, bytes };
        true
    }
}
