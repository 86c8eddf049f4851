//! The node's side of the POW witness chain: the shared [`WitnessNode`] (the sans-IO chain, the finalized ledger
//! hashes the executor feeds it, a bounded queue of witnesses waiting for finality, and the append-only
//! `witness.bin` file), and the mining threads. Miners run at the lowest scheduling priority (SCHED_IDLE, else
//! nice 19) and take the lock only between nonce chunks, so they use idle CPU and never hold up the BFT path.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use cas_consensus::witness::{
    decode_witness, encode_witness, mine, WitnessChain, WitnessError, WitnessHeader, WitnessLimits,
    WitnessParams,
};
use cas_engine::{BlockHash, PublicKey};

/// Witnesses whose DPOS range is not final here yet, held until it is; the oldest is dropped when full.
pub const PENDING_WITNESSES_MAX: usize = 64;
/// Nonces a miner tries between looks at the chain (a new best tip makes its work stale).
pub const MINING_CHUNK_NONCES: u64 = 1 << 16;
/// How long a miner waits when there is nothing to mine (the next range is not final yet).
const MINER_IDLE_WAIT: Duration = Duration::from_millis(100);
/// A record of `witness.bin` is at most this long (a witness header's decoder bound).
const RECORD_BYTES_MAX: usize = cas_consensus::witness::WITNESS_BYTES_MAX;

/// The wall clock in milliseconds since the Unix epoch (witness timestamps are compared across machines).
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Counters for the status file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WitnessStats {
    pub accepted: u64,
    pub refused: u64,
    pub mined: u64,
    /// Pending witnesses dropped because the queue was full.
    pub pending_dropped: u64,
}

/// `witness.bin`: every witness this node accepted, in acceptance order, as `length u32 LE | rkyv header`.
/// Appends are not fsynced: a lost tail is refetched from peers or mined again, and a torn last record is
/// ignored on load.
pub struct WitnessFile {
    path: PathBuf,
}

impl WitnessFile {
    pub fn new(data_dir: &Path) -> WitnessFile {
        WitnessFile {
            path: data_dir.join("witness.bin"),
        }
    }

    /// Every whole record, decoded with the untrusted decoder.
    pub fn load(&self) -> Result<Vec<WitnessHeader>> {
        if !self.path.exists() {
            return Ok(Vec::new());
        }
        let bytes = std::fs::read(&self.path)
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        let mut headers = Vec::new();
        let mut at = 0usize;
        while at + 4 <= bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
            if len > RECORD_BYTES_MAX || at + 4 + len > bytes.len() {
                break; // a torn tail
            }
            let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(len);
            aligned.extend_from_slice(&bytes[at + 4..at + 4 + len]);
            let header = decode_witness(&aligned).with_context(|| {
                format!("{}: record at byte {at} is malformed", self.path.display())
            })?;
            headers.push(header);
            at += 4 + len;
        }
        Ok(headers)
    }

    fn open_append(&self) -> Result<File> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .with_context(|| format!("cannot open {}", self.path.display()))
    }
}

/// What the driver, the executor and the miners share. Held behind a mutex; every holder keeps it briefly.
pub struct WitnessNode {
    pub chain: WitnessChain,
    pending: VecDeque<WitnessHeader>,
    file: File,
    pub stats: WitnessStats,
}

impl WitnessNode {
    /// Opens the node's witness state: the chain over the given finalized ledger hashes (heights 1.., in order),
    /// then every stored witness replayed through validation (one that no longer validates is skipped).
    pub fn open(
        data_dir: &Path,
        params: WitnessParams,
        finalized: impl IntoIterator<Item = BlockHash>,
    ) -> Result<WitnessNode> {
        let mut chain = WitnessChain::new(params, WitnessLimits::default());
        for (index, hash) in finalized.into_iter().enumerate() {
            chain.add_finalized(index as u64 + 1, hash);
        }
        let file = WitnessFile::new(data_dir);
        let stored = file.load()?;
        let mut skipped = 0;
        for header in stored {
            if chain.insert(header, u64::MAX).is_err() {
                skipped += 1;
            }
        }
        if skipped > 0 {
            tracing::warn!(
                skipped,
                "stored witnesses that no longer validate were skipped"
            );
        }
        Ok(WitnessNode {
            chain,
            pending: VecDeque::new(),
            file: file.open_append()?,
            stats: WitnessStats::default(),
        })
    }

    /// Offers a witness (gossiped or mined here). Accepted ones are stored and returned for gossip; one over a
    /// range not final here yet waits in the pending queue.
    pub fn offer(&mut self, header: WitnessHeader, now_ms: u64) -> Result<(), WitnessError> {
        match self.chain.insert(header.clone(), now_ms) {
            Ok(inserted) => {
                self.stats.accepted += 1;
                let bytes = encode_witness(&header);
                let mut record = Vec::with_capacity(4 + bytes.len());
                record.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                record.extend_from_slice(&bytes);
                if let Err(error) = self.file.write_all(&record) {
                    tracing::warn!(%error, "a witness was not stored");
                }
                tracing::debug!(hash = %inserted.hash, height = header.height, best = inserted.new_best, "witness accepted");
                Ok(())
            }
            Err(WitnessError::NotYetFinalized { needed, finalized }) => {
                if self.pending.len() >= PENDING_WITNESSES_MAX {
                    self.pending.pop_front();
                    self.stats.pending_dropped += 1;
                }
                self.pending.push_back(header);
                Err(WitnessError::NotYetFinalized { needed, finalized })
            }
            Err(error) => {
                self.stats.refused += 1;
                Err(error)
            }
        }
    }

    /// The executor made ledger block `height` final: record it and retry the witnesses waiting for it.
    /// Returns the witnesses accepted now (to gossip on).
    pub fn add_finalized(
        &mut self,
        height: u64,
        hash: BlockHash,
        now_ms: u64,
    ) -> Vec<WitnessHeader> {
        self.chain.add_finalized(height, hash);
        let mut accepted = Vec::new();
        let waiting: Vec<WitnessHeader> = self.pending.drain(..).collect();
        for header in waiting {
            if header.last_dpos_height() > height {
                self.pending.push_back(header);
            } else if self.offer(header.clone(), now_ms).is_ok() {
                accepted.push(header);
            }
        }
        accepted
    }
}

/// The idlest scheduling this thread can get: SCHED_IDLE, else nice 19. Returns which it got.
pub fn lower_thread_priority() -> &'static str {
    // SAFETY: plain syscalls on the calling thread with valid arguments; no memory is shared with the kernel
    // beyond the `sched_param` read during the call.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) == 0 {
            return "SCHED_IDLE";
        }
        let thread = libc::syscall(libc::SYS_gettid) as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, thread, 19) == 0 {
            return "nice 19";
        }
    }
    "normal (could not lower it)"
}

/// Where a miner sends what it found (the node gossips it to peers).
pub type Publish = Arc<dyn Fn(&WitnessHeader) + Send + Sync>;

/// Starts `count` mining threads for `miner` over the shared witness state; they stop when `stop` is set.
pub fn spawn_miners(
    count: usize,
    shared: Arc<Mutex<WitnessNode>>,
    miner: PublicKey,
    publish: Publish,
    stop: Arc<AtomicBool>,
    hashes: Arc<AtomicU64>,
) -> Result<Vec<JoinHandle<()>>> {
    (0..count)
        .map(|index| {
            let shared = shared.clone();
            let publish = publish.clone();
            let stop = stop.clone();
            let hashes = hashes.clone();
            std::thread::Builder::new()
                .name(format!("cas-miner-{index}"))
                .spawn(move || {
                    let priority = lower_thread_priority();
                    tracing::info!(index, priority, "miner started");
                    mine_until_stopped(&shared, miner, &publish, &stop, &hashes);
                })
                .context("cannot start a mining thread")
        })
        .collect()
}

fn random_nonce() -> u64 {
    let mut bytes = [0u8; 8];
    // Without entropy every miner starts at 0 and they duplicate each other's work; still correct.
    let _ = getrandom::getrandom(&mut bytes);
    u64::from_le_bytes(bytes) >> 1
}

fn mine_until_stopped(
    shared: &Mutex<WitnessNode>,
    miner: PublicKey,
    publish: &Publish,
    stop: &AtomicBool,
    hashes: &AtomicU64,
) {
    while !stop.load(Ordering::Relaxed) {
        let template = shared
            .lock()
            .expect("witness lock")
            .chain
            .template(miner, wall_ms());
        let Some(mut header) = template else {
            std::thread::sleep(MINER_IDLE_WAIT);
            continue;
        };
        let parent_timestamp = header.timestamp_ms;
        let mut nonce = random_nonce();
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            header.timestamp_ms = wall_ms().max(parent_timestamp);
            let (found, tried) = mine(
                &header,
                nonce..nonce.saturating_add(MINING_CHUNK_NONCES),
                stop,
            );
            hashes.fetch_add(tried, Ordering::Relaxed);
            nonce = nonce.wrapping_add(tried);
            let mut node = shared.lock().expect("witness lock");
            if let Some(found) = found {
                header.nonce = found;
                match node.offer(header.clone(), wall_ms()) {
                    Ok(()) => {
                        node.stats.mined += 1;
                        drop(node);
                        publish(&header);
                    }
                    Err(error) => tracing::debug!(%error, "a mined witness was refused"),
                }
                break;
            }
            if node.chain.best() != header.parent {
                break; // someone extended the chain: this work is stale
            }
        }
    }
}
