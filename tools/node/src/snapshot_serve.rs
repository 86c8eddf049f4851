//! Snapshot state transfer, the serving side: a thread that answers peers' snapshot queries and chunk requests
//! from this node's snapshot files (written by the durable ledger, read-only here) and the anchors the executor
//! records for each snapshot height (the ledger and consensus block hashes there, and the ledger's witness order
//! state, served as the chunks after the entries'). It keeps one snapshot in memory
//! at a time; it reads files off the driver's thread, so consensus never waits on a snapshot read. Requests reach
//! it through a bounded queue; a full queue drops the request (counted), and the asker retries or moves on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

use cas_consensus::messages::{Message, SnapshotChunk, SnapshotChunkRequest, SnapshotInfo};
use cas_consensus::rewards::order_state_hash;
use cas_engine::{BlockHash, Hash32, PublicKey};
use cas_shards::snapshot::{self, Snapshot};
use cas_shards::transfer::{chunk_count, encode_chunk};

use crate::wire;

/// Requests waiting for the serving thread.
pub const SERVE_QUEUE_MAX: usize = 64;
/// Snapshot heights whose anchors are remembered (the durable ledger keeps two snapshot files).
pub const ANCHORS_KEPT: usize = 8;

/// What a peer asked for.
pub enum ServeRequest {
    Info,
    Chunk(SnapshotChunkRequest),
}

/// The block hashes at a snapshot height and the ledger's witness order state after it (encoded, with its hash):
/// what a receiver needs besides the set to continue from there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anchor {
    pub ledger_hash: BlockHash,
    pub consensus_hash: BlockHash,
    pub witness_state: Arc<Vec<u8>>,
    pub witness_state_hash: Hash32,
}

impl Anchor {
    pub fn new(
        ledger_hash: BlockHash,
        consensus_hash: BlockHash,
        witness_state: Vec<u8>,
    ) -> Anchor {
        Anchor {
            ledger_hash,
            consensus_hash,
            witness_state_hash: order_state_hash(&witness_state),
            witness_state: Arc::new(witness_state),
        }
    }
}

/// Anchors by height, shared by the executor (writer) and the serving thread (reader); bounded.
#[derive(Default)]
pub struct Anchors {
    by_height: Mutex<BTreeMap<u64, Anchor>>,
    /// Requests dropped because the serving queue was full.
    pub dropped: AtomicU64,
    pub served_chunks: AtomicU64,
}

impl Anchors {
    pub fn record(&self, height: u64, anchor: Anchor) {
        let mut by_height = self.by_height.lock().expect("anchors lock");
        by_height.insert(height, anchor);
        while by_height.len() > ANCHORS_KEPT {
            by_height.pop_first();
        }
    }

    /// The newest snapshot height this node recorded.
    pub fn latest_height(&self) -> Option<u64> {
        self.by_height
            .lock()
            .expect("anchors lock")
            .last_key_value()
            .map(|(height, _)| *height)
    }

    fn get(&self, height: u64) -> Option<Anchor> {
        self.by_height
            .lock()
            .expect("anchors lock")
            .get(&height)
            .cloned()
    }
}

pub struct SnapshotServer {
    pub snapshot_dir: PathBuf,
    pub anchors: Arc<Anchors>,
    pub netio: Arc<cas_netio::Node>,
    /// The snapshot last read, kept for the chunk requests that follow a query.
    pub cached: Option<Arc<Snapshot>>,
}

impl SnapshotServer {
    /// Answers each request to the peer that sent it, tagged with the epoch it was asked in.
    pub fn run(mut self, requests: Receiver<(PublicKey, u64, ServeRequest)>) {
        while let Ok((from, epoch, request)) = requests.recv() {
            let reply = match request {
                ServeRequest::Info => Some(Message::SnapshotInfo(self.info())),
                ServeRequest::Chunk(request) => self.chunk(request).map(Message::SnapshotChunk),
            };
            let Some(message) = reply else {
                continue;
            };
            let (class, bytes) = wire::encode(epoch, &message);
            if let Err(error) = self.netio.try_send(&from, class, bytes) {
                tracing::debug!(to = %from, %error, "snapshot answer refused");
            }
        }
    }

    /// The newest snapshot file with a known anchor, described; height 0 when there is none.
    fn info(&mut self) -> SnapshotInfo {
        let none = SnapshotInfo {
            height: 0,
            ledger_hash: BlockHash::default(),
            commitment: BlockHash::default(),
            consensus_hash: BlockHash::default(),
            entries: 0,
            witness_state: Hash32::default(),
            witness_state_bytes: 0,
        };
        let listed = match snapshot::list(&self.snapshot_dir) {
            Ok(listed) => listed,
            Err(error) => {
                tracing::warn!(%error, "cannot list snapshots to serve");
                return none;
            }
        };
        for (height, _) in listed {
            let Some(anchor) = self.anchors.get(height) else {
                continue;
            };
            let Some(snapshot) = self.load(height) else {
                continue;
            };
            return SnapshotInfo {
                height,
                ledger_hash: anchor.ledger_hash,
                commitment: snapshot.commitment,
                consensus_hash: anchor.consensus_hash,
                entries: snapshot.entries.len() as u64,
                witness_state: anchor.witness_state_hash,
                witness_state_bytes: anchor.witness_state.len() as u64,
            };
        }
        none
    }

    fn chunk(&mut self, request: SnapshotChunkRequest) -> Option<SnapshotChunk> {
        let snapshot = self.load(request.height)?;
        let entry_chunks = chunk_count(snapshot.entries.len() as u64) as u32;
        let entries = match request.index.checked_sub(entry_chunks) {
            None => encode_chunk(&snapshot.entries, request.index)?,
            Some(index) => {
                let anchor = self.anchors.get(request.height)?;
                crate::state_sync::witness_chunk(&anchor.witness_state, index)?
            }
        };
        self.anchors.served_chunks.fetch_add(1, Ordering::Relaxed);
        Some(SnapshotChunk {
            height: request.height,
            index: request.index,
            entries,
        })
    }

    /// The snapshot at `height`, from the cache or its file (a file deleted since, or damaged, gives None).
    fn load(&mut self, height: u64) -> Option<Arc<Snapshot>> {
        if let Some(cached) = self.cached.as_ref().filter(|s| s.height == height) {
            return Some(cached.clone());
        }
        match snapshot::read(&snapshot::snapshot_path(&self.snapshot_dir, height)) {
            Ok(read) if read.height == height => {
                let read = Arc::new(read);
                self.cached = Some(read.clone());
                Some(read)
            }
            Ok(_) => None,
            Err(error) => {
                tracing::debug!(height, %error, "snapshot not served");
                None
            }
        }
    }
}
