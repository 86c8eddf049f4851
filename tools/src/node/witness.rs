//! The node's side of the POW witness chain. One witness thread owns [`WitnessNode`] (the sans-IO chain, the
//! finalized ledger hashes, a bounded queue of witnesses waiting for finality, the append-only `witness.bin`) and
//! is fed through one bounded inbox by the executor (stored block hashes), the driver (gossip) and the miners
//! (finds). Miners run at the lowest scheduling priority (SCHED_IDLE, else nice 19) and share no lock with the
//! executor or the driver: an idle-priority thread preempted while holding such a lock would stall the BFT path.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
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
/// Inputs waiting for the witness thread; the executor waits when it is full, gossip and finds are dropped (counted).
pub const WITNESS_INBOX_MAX: usize = 1_024;
/// How often the witness thread refreshes the miners' template even when nothing arrived (its timestamp).
const TEMPLATE_REFRESH: Duration = Duration::from_millis(1_000);
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
    /// Opens the node's witness state: the chain over the given finalized ledger hashes (heights `first_height`..,
    /// in order; above 1 when the node's store starts at an installed snapshot), then every stored witness replayed
    /// through validation (one that no longer validates is skipped).
    pub fn open(
        data_dir: &Path,
        params: WitnessParams,
        first_height: u64,
        finalized: impl IntoIterator<Item = BlockHash>,
    ) -> Result<WitnessNode> {
        let mut chain = WitnessChain::new(params, WitnessLimits::default());
        if first_height > 1 {
            chain.skip_finalized_to(first_height);
        }
        for (index, hash) in finalized.into_iter().enumerate() {
            chain.add_finalized(first_height + index as u64, hash);
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

/// What the witness thread receives.
#[derive(Debug)]
pub enum WitnessInput {
    /// The executor stored ledger block `height` with this hash.
    Finalized(u64, BlockHash),
    /// The executor installed a UTXO snapshot: the next finalized height is this one, none below it is known.
    SkipTo(u64),
    /// A witness from a peer.
    Gossip(WitnessHeader),
    /// A witness a local miner found.
    Mined(WitnessHeader),
}

/// What the witness thread publishes for the miners and the status file; miners read the template under a lock
/// that only they and the witness thread take, and only to clone or replace it.
#[derive(Default)]
pub struct WitnessShared {
    template: Mutex<Option<WitnessHeader>>,
    /// Bumped whenever the template's parent changes: a miner on an older generation drops its work.
    generation: AtomicU64,
    pub best_height: AtomicU64,
    pub mined: AtomicU64,
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    /// Gossip or finds dropped because the inbox was full.
    pub dropped: AtomicU64,
    /// Nonces this node's miners tried (their hash rate is what idle CPU they got).
    pub hashes: AtomicU64,
}

impl WitnessShared {
    fn template(&self) -> (u64, Option<WitnessHeader>) {
        let generation = self.generation.load(Ordering::Acquire);
        let template = self.template.lock().expect("template lock").clone();
        (generation, template)
    }
}

/// Offers an input without waiting; a full inbox drops it and counts it.
pub fn offer_input(inbox: &SyncSender<WitnessInput>, shared: &WitnessShared, input: WitnessInput) {
    match inbox.try_send(input) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
        Err(TrySendError::Disconnected(_)) => {}
    }
}

/// The witness thread: owns the node's witness state until every sender of `inbox` is gone.
pub struct WitnessService {
    pub node: WitnessNode,
    pub shared: Arc<WitnessShared>,
    pub publish: Publish,
    /// The key miners of this node mine for.
    pub miner: PublicKey,
}

impl WitnessService {
    pub fn run(mut self, inbox: Receiver<WitnessInput>) {
        let mut last_refresh = std::time::Instant::now();
        self.refresh_template();
        loop {
            let input = match inbox.recv_timeout(TEMPLATE_REFRESH) {
                Ok(input) => Some(input),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let best_before = self.node.chain.best();
            let finalized_before = self.node.chain.finalized_height();
            if let Some(input) = input {
                self.handle(input);
                while let Ok(input) = inbox.try_recv() {
                    self.handle(input);
                }
            }
            let changed = self.node.chain.best() != best_before
                || self.node.chain.finalized_height() != finalized_before;
            if changed || last_refresh.elapsed() >= TEMPLATE_REFRESH {
                last_refresh = std::time::Instant::now();
                self.refresh_template();
            }
        }
    }

    fn handle(&mut self, input: WitnessInput) {
        let now = wall_ms();
        let accepted = match input {
            WitnessInput::Finalized(height, hash) => self.node.add_finalized(height, hash, now),
            WitnessInput::SkipTo(height) => {
                self.node.chain.skip_finalized_to(height);
                Vec::new()
            }
            WitnessInput::Gossip(header) | WitnessInput::Mined(header)
                if self.node.chain.contains(&header.hash()) =>
            {
                Vec::new()
            }
            WitnessInput::Gossip(header) => match self.node.offer(header.clone(), now) {
                Ok(()) => vec![header],
                Err(error) => {
                    tracing::debug!(%error, "witness refused");
                    Vec::new()
                }
            },
            WitnessInput::Mined(header) => match self.node.offer(header.clone(), now) {
                Ok(()) => {
                    self.node.stats.mined += 1;
                    vec![header]
                }
                Err(error) => {
                    tracing::debug!(%error, "a mined witness was refused");
                    Vec::new()
                }
            },
        };
        // Newly accepted witnesses are passed on once: a standalone miner reaches one node, the rest hear it here.
        for header in &accepted {
            (self.publish)(header);
        }
        let stats = &self.node.stats;
        let shared = &self.shared;
        shared
            .best_height
            .store(self.node.chain.best_height(), Ordering::Relaxed);
        shared.mined.store(stats.mined, Ordering::Relaxed);
        shared.accepted.store(stats.accepted, Ordering::Relaxed);
        shared.refused.store(stats.refused, Ordering::Relaxed);
    }

    fn refresh_template(&mut self) {
        let template = self.node.chain.template(self.miner, wall_ms());
        let mut slot = self.shared.template.lock().expect("template lock");
        let new_parent = slot.as_ref().map(|t| t.parent) != template.as_ref().map(|t| t.parent);
        *slot = template;
        drop(slot);
        if new_parent {
            self.shared.generation.fetch_add(1, Ordering::Release);
        }
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

/// Where the witness thread sends a witness to pass on (the node gossips it to peers).
pub type Publish = Arc<dyn Fn(&WitnessHeader) + Send + Sync>;

/// Starts `count` mining threads on the witness thread's template; finds go to `inbox`; they stop when `stop` is
/// set.
pub fn spawn_miners(
    count: usize,
    shared: Arc<WitnessShared>,
    inbox: SyncSender<WitnessInput>,
    stop: Arc<AtomicBool>,
) -> Result<Vec<JoinHandle<()>>> {
    (0..count)
        .map(|index| {
            let shared = shared.clone();
            let inbox = inbox.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("cas-miner-{index}"))
                .spawn(move || {
                    let priority = lower_thread_priority();
                    tracing::info!(index, priority, "miner started");
                    mine_until_stopped(&shared, &inbox, &stop);
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

fn mine_until_stopped(shared: &WitnessShared, inbox: &SyncSender<WitnessInput>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let (generation, template) = shared.template();
        let Some(mut header) = template else {
            std::thread::sleep(MINER_IDLE_WAIT);
            continue;
        };
        let earliest = header.timestamp_ms;
        let mut nonce = random_nonce();
        while !stop.load(Ordering::Relaxed)
            && shared.generation.load(Ordering::Acquire) == generation
        {
            header.timestamp_ms = wall_ms().max(earliest);
            let (found, tried) = mine(
                &header,
                nonce..nonce.saturating_add(MINING_CHUNK_NONCES),
                stop,
            );
            shared.hashes.fetch_add(tried, Ordering::Relaxed);
            nonce = nonce.wrapping_add(tried);
            if let Some(found) = found {
                header.nonce = found;
                offer_input(inbox, shared, WitnessInput::Mined(header));
                // Wait (a while) for the witness thread to move the template on, rather than mine a sibling of our
                // own find; if it refused the find, the template stays and mining resumes on it.
                let waited = std::time::Instant::now();
                while !stop.load(Ordering::Relaxed)
                    && shared.generation.load(Ordering::Acquire) == generation
                    && waited.elapsed() < TEMPLATE_REFRESH
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cas_engine::Hash32;

    fn params() -> WitnessParams {
        WitnessParams {
            span: 2,
            initial_difficulty: 8,
            min_difficulty: 1,
            ..WitnessParams::default()
        }
    }

    fn ledger_hash(height: u64) -> BlockHash {
        Hash32::of("test ledger block", &height.to_le_bytes())
    }

    fn mined(node: &WitnessNode) -> WitnessHeader {
        let mut header = node.chain.template(PublicKey([1; 32]), wall_ms()).unwrap();
        let (nonce, _) = mine(&header, 0..u64::MAX, &AtomicBool::new(false));
        header.nonce = nonce.unwrap();
        header
    }

    #[test]
    fn early_witnesses_wait_for_finality_and_everything_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut node =
            WitnessNode::open(dir.path(), params(), 1, (1..=2).map(ledger_hash)).unwrap();
        let first = mined(&node);
        node.offer(first, wall_ms()).unwrap();
        // A second node ahead of this one mines over heights 3..=4; here they are not final yet.
        let mut ahead = WitnessNode::open(
            tempfile::tempdir().unwrap().path(),
            params(),
            1,
            (1..=4).map(ledger_hash),
        )
        .unwrap();
        ahead
            .offer(
                node.chain.get(&node.chain.best()).unwrap().clone(),
                wall_ms(),
            )
            .unwrap();
        let second = mined(&ahead);
        assert!(matches!(
            node.offer(second.clone(), wall_ms()),
            Err(WitnessError::NotYetFinalized { .. })
        ));
        assert!(node.add_finalized(3, ledger_hash(3), wall_ms()).is_empty());
        assert_eq!(
            node.add_finalized(4, ledger_hash(4), wall_ms()),
            vec![second]
        );
        assert_eq!(node.chain.best_height(), 2);
        assert_eq!(node.stats.refused, 0);
        let best = node.chain.best();
        drop(node);

        // Reopened over the same ledger: the stored witnesses are replayed, with a torn tail ignored.
        let path = dir.path().join("witness.bin");
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[200, 1, 0]).unwrap();
        let reopened =
            WitnessNode::open(dir.path(), params(), 1, (1..=4).map(ledger_hash)).unwrap();
        assert_eq!(reopened.chain.best(), best);
        assert_eq!(WitnessFile::new(dir.path()).load().unwrap().len(), 2);
    }

    #[test]
    fn a_witness_over_other_blocks_is_refused_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut node =
            WitnessNode::open(dir.path(), params(), 1, (1..=2).map(ledger_hash)).unwrap();
        let other_dir = tempfile::tempdir().unwrap();
        let forked = WitnessNode::open(
            other_dir.path(),
            params(),
            1,
            [Hash32([7; 32]), ledger_hash(2)],
        )
        .unwrap();
        let header = mined(&forked);
        assert_eq!(
            node.offer(header, wall_ms()),
            Err(WitnessError::WrongDposHash { height: 1 })
        );
        assert_eq!(node.stats.refused, 1);
        assert_eq!(node.chain.best_height(), 0);
    }
}
