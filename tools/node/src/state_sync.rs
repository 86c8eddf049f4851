//! Snapshot state transfer, the fetching side: a node too far behind to catch up block by block (peers keep only
//! their last `blocks_kept` consensus blocks) asks the committee for its latest UTXO snapshot, trusts a
//! [`SnapshotInfo`] only when members holding more than a third of the stake report the very same one (so an
//! honest member is among them), fetches it chunk by chunk from those members (a bounded window of requests, each
//! chunk validated by the shards' [`Assembler`], the whole set checked against the trusted commitment), and hands
//! the assembled snapshot to the driver to install. The ledger's witness order after the snapshot height follows the
//! entries as further chunks; its bytes must hash to the trusted [`SnapshotInfo::witness_state`], so the node mints
//! the same witness rewards as its peers from the next block on (see `cas_consensus::rewards`). A bad chunk or a timeout moves to the next reporter; when none
//! is left it asks again later. Sans-IO: it returns messages to send, and never touches the ledger or the BFT.

use std::collections::BTreeMap;

use cas_consensus::committee::MemberIndex;
use cas_consensus::messages::{
    Message, SnapshotChunk, SnapshotChunkRequest, SnapshotInfo, SNAPSHOT_CHUNK_BYTES_MAX,
};
use cas_consensus::rewards::{order_state_hash, ORDER_STATE_BYTES_MAX};
use cas_consensus::Action;
use cas_shards::snapshot::Snapshot;
use cas_shards::transfer::Assembler;

// A chunk the shards cut must fit the wire's chunk bound.
const _: () = assert!(
    cas_shards::transfer::CHUNK_BYTES_MAX <= cas_consensus::messages::SNAPSHOT_CHUNK_BYTES_MAX
);

/// How long the answers to one round of snapshot queries are collected.
pub const QUERY_WAIT_MS: u64 = 2_000;
/// The least time between two rounds of queries.
pub const QUERY_RETRY_MS: u64 = 3_000;
/// Chunk requests outstanding at once (each chunk is at most the wire's chunk limit).
pub const CHUNK_WINDOW: usize = 4;
/// A source that leaves a chunk request unanswered this long is dropped for the next reporter.
pub const CHUNK_TIMEOUT_MS: u64 = 3_000;

/// A verified snapshot and the trusted description it matches, ready to install, with the witness order state
/// whose hash the description names (still to be decoded by the executor, which knows the chain's params).
pub struct Install {
    pub info: SnapshotInfo,
    pub snapshot: Snapshot,
    pub witness_state: Vec<u8>,
}

/// Chunks that carry a witness order state of `bytes` bytes (after the entries' chunks).
pub fn witness_chunk_count(bytes: u64) -> u32 {
    bytes.div_ceil(SNAPSHOT_CHUNK_BYTES_MAX as u64) as u32
}

/// Chunk `index` (counted from the first witness chunk) of an encoded witness order state.
pub fn witness_chunk(state: &[u8], index: u32) -> Option<Vec<u8>> {
    let start = (index as usize).checked_mul(SNAPSHOT_CHUNK_BYTES_MAX)?;
    if start >= state.len() {
        return None;
    }
    let end = (start + SNAPSHOT_CHUNK_BYTES_MAX).min(state.len());
    Some(state[start..end].to_vec())
}

/// Counters an operator reads (in the node's status).
#[derive(Clone, Debug, Default)]
pub struct StateSyncStats {
    pub queries: u64,
    pub chunks_received: u64,
    /// Transfers abandoned: a chunk refused, the set's commitment wrong, or a source silent.
    pub transfers_failed: u64,
}

enum Phase {
    Idle,
    /// Answers collected since `since_ms`, one per member.
    Querying {
        since_ms: u64,
        offers: BTreeMap<MemberIndex, SnapshotInfo>,
    },
    Fetching(Box<Fetch>),
}

struct Fetch {
    info: SnapshotInfo,
    /// The members that reported `info`, tried in turn.
    sources: Vec<MemberIndex>,
    source: usize,
    assembler: Assembler,
    /// Chunk index -> when it was asked for.
    requested: BTreeMap<u32, u64>,
    /// Chunks arrived ahead of the next one the assembler takes (at most [`CHUNK_WINDOW`]).
    arrived: BTreeMap<u32, Vec<u8>>,
    next_to_request: u32,
    /// The witness order state's bytes taken so far, in chunk order.
    witness_state: Vec<u8>,
    /// The next chunk index taken (the entries' chunks, then the witness state's).
    next_to_take: u32,
}

impl Fetch {
    fn new(
        info: SnapshotInfo,
        sources: Vec<MemberIndex>,
        source: usize,
        assembler: Assembler,
    ) -> Fetch {
        Fetch {
            info,
            sources,
            source,
            assembler,
            requested: BTreeMap::new(),
            arrived: BTreeMap::new(),
            next_to_request: 0,
            witness_state: Vec::new(),
            next_to_take: 0,
        }
    }

    /// Every chunk of the transfer: the entries', then the witness state's.
    fn chunks(&self) -> u32 {
        self.assembler.chunks() + witness_chunk_count(self.info.witness_state_bytes)
    }
}

pub struct StateSync {
    me: MemberIndex,
    stakes: Vec<u64>,
    validity_stake: u64,
    /// A snapshot is worth installing when it is more than this many blocks above the committed height; the
    /// committee is asked when a QC this far ahead is seen (and once at start).
    gap_blocks: u64,
    phase: Phase,
    queried_once: bool,
    last_query_ms: u64,
    pub stats: StateSyncStats,
}

impl StateSync {
    pub fn new(me: MemberIndex, stakes: Vec<u64>, validity_stake: u64, gap_blocks: u64) -> Self {
        assert!(validity_stake > 0, "a trusted report needs some stake");
        StateSync {
            me,
            stakes,
            validity_stake,
            gap_blocks,
            phase: Phase::Idle,
            queried_once: false,
            last_query_ms: 0,
            stats: StateSyncStats::default(),
        }
    }

    /// The snapshot being fetched: its height, the chunks taken so far and the transfer's chunks in all.
    pub fn progress(&self) -> Option<(u64, u32, u32)> {
        match &self.phase {
            Phase::Fetching(fetch) => Some((fetch.info.height, fetch.next_to_take, fetch.chunks())),
            _ => None,
        }
    }

    /// Whether a round of queries or a transfer is under way.
    pub fn busy(&self) -> bool {
        !matches!(self.phase, Phase::Idle)
    }

    /// Starts a round of queries when the node seems far behind (or has never asked), expires a round whose answers
    /// are in, and replaces a silent source.
    pub fn on_tick(
        &mut self,
        now_ms: u64,
        committed_height: u64,
        high_qc_height: u64,
    ) -> Vec<Action> {
        match &mut self.phase {
            Phase::Idle => {
                let behind = high_qc_height > committed_height + self.gap_blocks;
                let due = !self.queried_once || now_ms >= self.last_query_ms + QUERY_RETRY_MS;
                if (behind || !self.queried_once) && due {
                    self.queried_once = true;
                    self.last_query_ms = now_ms;
                    self.stats.queries += 1;
                    self.phase = Phase::Querying {
                        since_ms: now_ms,
                        offers: BTreeMap::new(),
                    };
                    tracing::info!(
                        committed_height,
                        high_qc_height,
                        "asking the committee for its snapshots"
                    );
                    return vec![Action::Broadcast(Message::SnapshotInfoRequest)];
                }
                Vec::new()
            }
            Phase::Querying { since_ms, .. } => {
                if now_ms >= *since_ms + QUERY_WAIT_MS {
                    tracing::debug!("no snapshot reported by enough stake; asking again later");
                    self.phase = Phase::Idle;
                }
                Vec::new()
            }
            Phase::Fetching(fetch) => {
                let silent = fetch
                    .requested
                    .values()
                    .any(|asked| now_ms >= asked + CHUNK_TIMEOUT_MS);
                if silent {
                    tracing::warn!(
                        source = fetch.sources[fetch.source],
                        "snapshot source silent; trying the next one"
                    );
                    return self.next_source(now_ms);
                }
                Vec::new()
            }
        }
    }

    /// A member's description of its latest snapshot. Once the same one is reported by more than a third of the
    /// stake and lies far enough above `committed_height`, its transfer starts.
    pub fn on_info(
        &mut self,
        from: MemberIndex,
        info: SnapshotInfo,
        committed_height: u64,
        now_ms: u64,
    ) -> Vec<Action> {
        let Phase::Querying { offers, .. } = &mut self.phase else {
            return Vec::new();
        };
        if from == self.me || from as usize >= self.stakes.len() || info.height == 0 {
            return Vec::new();
        }
        offers.insert(from, info);
        let stake: u64 = offers
            .iter()
            .filter(|(_, offer)| **offer == info)
            .map(|(member, _)| self.stakes[*member as usize])
            .sum();
        if stake < self.validity_stake {
            return Vec::new();
        }
        if info.witness_state_bytes > ORDER_STATE_BYTES_MAX as u64 {
            tracing::warn!(
                bytes = info.witness_state_bytes,
                "a trusted snapshot's witness order state is over the limit; not taken"
            );
            self.phase = Phase::Idle;
            return Vec::new();
        }
        if info.height <= committed_height + self.gap_blocks {
            tracing::debug!(
                height = info.height,
                committed_height,
                "the committee's snapshot is not far enough ahead to install"
            );
            self.phase = Phase::Idle;
            return Vec::new();
        }
        let assembler = match Assembler::new(info.height, info.commitment, info.entries) {
            Ok(assembler) => assembler,
            Err(error) => {
                tracing::warn!(%error, "a trusted snapshot cannot be taken");
                self.phase = Phase::Idle;
                return Vec::new();
            }
        };
        let sources: Vec<MemberIndex> = offers
            .iter()
            .filter(|(_, offer)| **offer == info)
            .map(|(member, _)| *member)
            .collect();
        tracing::info!(
            height = info.height,
            entries = info.entries,
            chunks = assembler.chunks(),
            reporters = sources.len(),
            "fetching a trusted snapshot"
        );
        self.phase = Phase::Fetching(Box::new(Fetch::new(info, sources, 0, assembler)));
        self.request_more(now_ms)
    }

    /// A chunk from a peer: taken only from the current source, for an outstanding request. Returns the requests
    /// that follow and, once the set is whole and reproduces the trusted commitment, the snapshot to install.
    pub fn on_chunk(
        &mut self,
        from: MemberIndex,
        chunk: SnapshotChunk,
        now_ms: u64,
    ) -> (Vec<Action>, Option<Install>) {
        let Phase::Fetching(fetch) = &mut self.phase else {
            return (Vec::new(), None);
        };
        if from != fetch.sources[fetch.source]
            || chunk.height != fetch.info.height
            || fetch.requested.remove(&chunk.index).is_none()
        {
            return (Vec::new(), None);
        }
        self.stats.chunks_received += 1;
        fetch.arrived.insert(chunk.index, chunk.entries);
        let entry_chunks = fetch.assembler.chunks();
        while fetch.next_to_take < fetch.chunks() {
            let next = fetch.next_to_take;
            let Some(bytes) = fetch.arrived.remove(&next) else {
                break;
            };
            fetch.next_to_take += 1;
            if next < entry_chunks {
                if let Err(error) = fetch.assembler.push(fetch.info.height, next, &bytes) {
                    tracing::warn!(source = from, %error, "snapshot chunk refused; trying the next source");
                    return (self.next_source(now_ms), None);
                }
                continue;
            }
            let last = next + 1 == fetch.chunks();
            let full = bytes.len() == SNAPSHOT_CHUNK_BYTES_MAX;
            let total = fetch.witness_state.len() as u64 + bytes.len() as u64;
            if (!last && !full) || total > fetch.info.witness_state_bytes {
                tracing::warn!(
                    source = from,
                    chunk = next,
                    "witness order state chunk of the wrong size; trying the next source"
                );
                return (self.next_source(now_ms), None);
            }
            fetch.witness_state.extend_from_slice(&bytes);
        }
        if fetch.next_to_take < fetch.chunks() {
            return (self.request_more(now_ms), None);
        }
        let Phase::Fetching(fetch) = std::mem::replace(&mut self.phase, Phase::Idle) else {
            unreachable!("fetching above");
        };
        let Fetch {
            info,
            sources,
            source,
            assembler,
            witness_state,
            ..
        } = *fetch;
        let witness_state_ok = witness_state.len() as u64 == info.witness_state_bytes
            && order_state_hash(&witness_state) == info.witness_state;
        match assembler.finish() {
            Ok(snapshot) if witness_state_ok => (
                Vec::new(),
                Some(Install {
                    info,
                    snapshot,
                    witness_state,
                }),
            ),
            outcome => {
                match outcome {
                    Err(error) => {
                        tracing::warn!(source = from, %error, "assembled snapshot refused; trying the next source")
                    }
                    Ok(_) => tracing::warn!(
                        source = from,
                        "the witness order state does not match the trusted hash; trying the next source"
                    ),
                }
                // Restart the transfer from the next reporter (the set was wrong as a whole).
                match Assembler::new(info.height, info.commitment, info.entries) {
                    Ok(assembler) => {
                        self.phase =
                            Phase::Fetching(Box::new(Fetch::new(info, sources, source, assembler)));
                        (self.next_source(now_ms), None)
                    }
                    Err(_) => (Vec::new(), None),
                }
            }
        }
    }

    /// Drops what the current source gave and starts over from the next reporter, or gives up for now.
    fn next_source(&mut self, now_ms: u64) -> Vec<Action> {
        self.stats.transfers_failed += 1;
        let Phase::Fetching(fetch) = &mut self.phase else {
            return Vec::new();
        };
        fetch.source += 1;
        if fetch.source >= fetch.sources.len() {
            tracing::warn!(
                height = fetch.info.height,
                "no reporter delivered the snapshot; asking again later"
            );
            self.phase = Phase::Idle;
            self.last_query_ms = now_ms;
            return Vec::new();
        }
        match Assembler::new(fetch.info.height, fetch.info.commitment, fetch.info.entries) {
            Ok(assembler) => fetch.assembler = assembler,
            Err(_) => {
                self.phase = Phase::Idle;
                return Vec::new();
            }
        }
        fetch.requested.clear();
        fetch.arrived.clear();
        fetch.next_to_request = 0;
        fetch.next_to_take = 0;
        fetch.witness_state.clear();
        self.request_more(now_ms)
    }

    /// Fills the request window from the current source.
    fn request_more(&mut self, now_ms: u64) -> Vec<Action> {
        let Phase::Fetching(fetch) = &mut self.phase else {
            return Vec::new();
        };
        let mut actions = Vec::new();
        while fetch.requested.len() + fetch.arrived.len() < CHUNK_WINDOW
            && fetch.next_to_request < fetch.chunks()
        {
            let index = fetch.next_to_request;
            fetch.next_to_request += 1;
            fetch.requested.insert(index, now_ms);
            actions.push(Action::Send {
                to: fetch.sources[fetch.source],
                message: Message::SnapshotChunkRequest(SnapshotChunkRequest {
                    height: fetch.info.height,
                    index,
                }),
            });
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cas_engine::{AssetId, Hash32, OutPoint, PublicKey, SetCommitment, TxOutput};
    use cas_shards::transfer::{chunk_count, encode_chunk};

    fn entries(count: u32) -> (Vec<(OutPoint, TxOutput)>, Hash32) {
        let mut entries: Vec<(OutPoint, TxOutput)> = (0..count)
            .map(|i| {
                (
                    OutPoint {
                        tx: Hash32::of("state sync test", &i.to_le_bytes()),
                        index: 0,
                    },
                    TxOutput {
                        amount: u64::from(i) + 1,
                        asset: AssetId::CAS,
                        owner: PublicKey([1; 32]),
                        unlock_height: None,
                    },
                )
            })
            .collect();
        entries.sort_unstable_by_key(|(o, _)| *o);
        let mut set = SetCommitment::default();
        entries.iter().for_each(|(o, c)| set.insert(o, c));
        (entries, set.checksum())
    }

    fn info(height: u64, commitment: Hash32, count: u64) -> SnapshotInfo {
        SnapshotInfo {
            height,
            ledger_hash: Hash32([1; 32]),
            commitment,
            consensus_hash: Hash32([2; 32]),
            entries: count,
            witness_state: cas_consensus::rewards::order_state_hash(&[]),
            witness_state_bytes: 0,
        }
    }

    fn requests(actions: &[Action]) -> Vec<(MemberIndex, u32)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send {
                    to,
                    message: Message::SnapshotChunkRequest(r),
                } => Some((*to, r.index)),
                _ => None,
            })
            .collect()
    }

    /// Four equal members (f = 1): two matching reports are trusted, one is not; a corrupt source is left for the
    /// next reporter, whose chunks install.
    #[test]
    fn two_matching_reports_are_trusted_and_a_corrupt_source_is_replaced() {
        let (set, commitment) = entries(5_000);
        let count = set.len() as u64;
        let chunks: Vec<Vec<u8>> = (0..chunk_count(count) as u32)
            .map(|i| encode_chunk(&set, i).unwrap())
            .collect();
        let mut sync = StateSync::new(3, vec![1; 4], 2, 10);
        let actions = sync.on_tick(0, 5, 5);
        assert!(matches!(
            actions[..],
            [Action::Broadcast(Message::SnapshotInfoRequest)]
        ));
        // One report, or two that differ, are not enough; one from this member does not count.
        assert!(sync
            .on_info(0, info(100, commitment, count), 5, 1)
            .is_empty());
        assert!(sync
            .on_info(3, info(100, commitment, count), 5, 1)
            .is_empty());
        assert!(sync
            .on_info(1, info(100, Hash32([9; 32]), count), 5, 1)
            .is_empty());
        let actions = sync.on_info(2, info(100, commitment, count), 5, 2);
        assert_eq!(requests(&actions), vec![(0, 0), (0, 1)]);
        // Source 0 sends a corrupt chunk 1 after a good chunk 0: the transfer moves to member 2 from chunk 0.
        let (_, done) = sync.on_chunk(
            0,
            SnapshotChunk {
                height: 100,
                index: 0,
                entries: chunks[0].clone(),
            },
            3,
        );
        assert!(done.is_none());
        let mut corrupt = chunks[1].clone();
        corrupt[40] ^= 1;
        let (actions, done) = sync.on_chunk(
            0,
            SnapshotChunk {
                height: 100,
                index: 1,
                entries: corrupt,
            },
            4,
        );
        assert!(done.is_none());
        assert_eq!(requests(&actions), vec![(2, 0), (2, 1)]);
        assert_eq!(sync.stats.transfers_failed, 1);
        // A chunk from the dropped source is ignored now.
        let (_, done) = sync.on_chunk(
            0,
            SnapshotChunk {
                height: 100,
                index: 0,
                entries: chunks[0].clone(),
            },
            5,
        );
        assert!(done.is_none());
        let mut installed = None;
        for (index, chunk) in chunks.iter().enumerate().rev() {
            let (_, done) = sync.on_chunk(
                2,
                SnapshotChunk {
                    height: 100,
                    index: index as u32,
                    entries: chunk.clone(),
                },
                6,
            );
            installed = installed.or(done);
        }
        let install = installed.expect("the whole set arrived from an honest reporter");
        assert_eq!(install.info, info(100, commitment, count));
        assert_eq!(install.snapshot.entries, set);
        assert!(!sync.busy());
    }

    /// The witness order state follows the entries as chunks; bytes that do not hash to the trusted value are
    /// refused as a whole and the next reporter's are taken.
    #[test]
    fn the_witness_order_state_follows_the_entries_and_must_match_its_hash() {
        let (set, commitment) = entries(10);
        let count = set.len() as u64;
        let state: Vec<u8> = (0..SNAPSHOT_CHUNK_BYTES_MAX + 1_000)
            .map(|i| (i % 251) as u8)
            .collect();
        let trusted = SnapshotInfo {
            witness_state: order_state_hash(&state),
            witness_state_bytes: state.len() as u64,
            ..info(100, commitment, count)
        };
        let mut chunks = vec![encode_chunk(&set, 0).unwrap()];
        chunks.push(witness_chunk(&state, 0).unwrap());
        chunks.push(witness_chunk(&state, 1).unwrap());
        assert_eq!(witness_chunk(&state, 2), None);
        assert_eq!(witness_chunk_count(state.len() as u64), 2);
        let mut sync = StateSync::new(0, vec![1; 4], 2, 10);
        sync.on_tick(0, 5, 5);
        sync.on_info(1, trusted, 5, 1);
        let actions = sync.on_info(2, trusted, 5, 1);
        assert_eq!(requests(&actions), vec![(1, 0), (1, 1), (1, 2)]);
        // Source 1 sends a damaged last byte of the state: everything else checks out, the hash does not.
        let mut damaged = chunks.clone();
        *damaged[2].last_mut().unwrap() ^= 1;
        let mut last = Vec::new();
        for (index, chunk) in damaged.into_iter().enumerate() {
            let (actions, done) = sync.on_chunk(
                1,
                SnapshotChunk {
                    height: 100,
                    index: index as u32,
                    entries: chunk,
                },
                2,
            );
            assert!(done.is_none());
            last = actions;
        }
        assert_eq!(requests(&last), vec![(2, 0), (2, 1), (2, 2)]);
        let mut installed = None;
        for (index, chunk) in chunks.into_iter().enumerate() {
            let (_, done) = sync.on_chunk(
                2,
                SnapshotChunk {
                    height: 100,
                    index: index as u32,
                    entries: chunk,
                },
                3,
            );
            installed = installed.or(done);
        }
        let install = installed.expect("the honest reporter's state matches");
        assert_eq!(install.witness_state, state);
        assert_eq!(install.snapshot.entries, set);
    }

    #[test]
    fn a_snapshot_not_far_enough_ahead_is_not_fetched_and_silence_ends_a_round() {
        let (_, commitment) = entries(3);
        let mut sync = StateSync::new(0, vec![1; 4], 2, 10);
        sync.on_tick(0, 95, 95);
        sync.on_info(1, info(100, commitment, 3), 95, 1);
        assert!(sync.on_info(2, info(100, commitment, 3), 95, 1).is_empty());
        assert!(!sync.busy());
        // Not behind and asked before: no new round until a QC shows the node far behind.
        assert!(sync.on_tick(10_000, 95, 100).is_empty());
        assert_eq!(sync.on_tick(10_000, 95, 200).len(), 1);
        assert!(sync.busy());
        sync.on_tick(10_000 + QUERY_WAIT_MS, 95, 200);
        assert!(!sync.busy());
    }
}
