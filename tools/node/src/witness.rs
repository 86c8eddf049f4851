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

use std::net::SocketAddr;

use anyhow::{Context, Result};
use cas_consensus::mining::{MiningAnswer, Verdict};
use cas_consensus::witness::{
    decode_witness, encode_witness, mine, WitnessChain, WitnessError, WitnessHeader,
};
#[cfg(test)]
use cas_consensus::witness::{WitnessLimits, WitnessParams};
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
/// Accepted witnesses waiting for the driver to offer them to the BFT leader's pool (to be carried into the ledger's
/// witness order); the oldest is dropped when full (counted).
pub const CARRY_QUEUE_MAX: usize = 256;
/// `witness.bin` is compacted (rewritten with only the witnesses the chain still holds) once it passes this size
/// and twice its size after the last compaction. Older witnesses need not stay in it: those the ledger took are
/// recorded in its blocks' issuance evidence, which is where `cas witness verify` reads the full history.
pub const WITNESS_FILE_BYTES_MAX: u64 = 64 * 1024 * 1024;
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
    /// Times `witness.bin` was compacted.
    pub compactions: u64,
}

/// `witness.bin`: the witnesses this node accepted, in acceptance order, as `length u32 LE | rkyv header`, bounded
/// by compaction (see [`WITNESS_FILE_BYTES_MAX`]). Appends are not fsynced: a lost tail is refetched from peers or
/// mined again, and a torn last record is ignored on load.
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

    fn record(header: &WitnessHeader) -> Vec<u8> {
        let bytes = encode_witness(header);
        let mut record = Vec::with_capacity(4 + bytes.len());
        record.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        record.extend_from_slice(&bytes);
        record
    }

    /// Replaces the file with `headers` only (parents before children), atomically: written aside, synced, renamed.
    /// Returns the new size.
    pub fn rewrite<'a>(&self, headers: impl IntoIterator<Item = &'a WitnessHeader>) -> Result<u64> {
        let aside = self.path.with_extension("bin.tmp");
        let mut file =
            File::create(&aside).with_context(|| format!("cannot create {}", aside.display()))?;
        let mut bytes = 0u64;
        for header in headers {
            let record = Self::record(header);
            file.write_all(&record)?;
            bytes += record.len() as u64;
        }
        file.sync_all()?;
        std::fs::rename(&aside, &self.path)
            .with_context(|| format!("cannot replace {}", self.path.display()))?;
        Ok(bytes)
    }

    fn len(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
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
    store: WitnessFile,
    file: File,
    /// `witness.bin`'s size now, its bound, and its size after the last compaction.
    file_bytes: u64,
    file_bytes_max: u64,
    compacted_bytes: u64,
    pub stats: WitnessStats,
}

impl WitnessNode {
    /// Opens the node's witness state on a fresh chain over the given finalized ledger hashes (heights
    /// `first_height`.., in order), then every stored witness replayed through validation (one that no longer
    /// validates is skipped). The node itself seeds the chain with the ledger's witness order ([`Self::open_with`]).
    #[cfg(test)]
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
        Self::open_with(data_dir, chain, WITNESS_FILE_BYTES_MAX)
    }

    /// Opens the node's witness state on `chain` (the node seeds it with the ledger's witness order, rebuilt from
    /// the stored blocks: every witness the ledger took, with its work, over every stored block's hash), then
    /// replays `witness.bin` on top; `witness.bin` is bounded by `file_bytes_max`. A stored witness whose parent is
    /// neither in the seed nor earlier in the file (compaction cut it off) is skipped.
    pub fn open_with(
        data_dir: &Path,
        mut chain: WitnessChain,
        file_bytes_max: u64,
    ) -> Result<WitnessNode> {
        let file = WitnessFile::new(data_dir);
        let stored = file.load()?;
        let mut skipped = 0;
        for header in stored {
            if !chain.contains(&header.hash()) && chain.insert(header, u64::MAX).is_err() {
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
            file_bytes: file.len(),
            file_bytes_max,
            compacted_bytes: 0,
            store: file,
            stats: WitnessStats::default(),
        })
    }

    /// Offers a witness (gossiped or mined here). Accepted ones are stored and returned for gossip; one over a
    /// range not final here yet waits in the pending queue.
    pub fn offer(&mut self, header: WitnessHeader, now_ms: u64) -> Result<(), WitnessError> {
        match self.chain.insert(header.clone(), now_ms) {
            Ok(inserted) => {
                self.stats.accepted += 1;
                let record = WitnessFile::record(&header);
                match self.file.write_all(&record) {
                    Ok(()) => self.file_bytes += record.len() as u64,
                    Err(error) => tracing::warn!(%error, "a witness was not stored"),
                }
                if let Err(error) = self.compact_if_due() {
                    tracing::warn!(%error, "witness.bin was not compacted");
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

    /// Rewrites `witness.bin` with the witnesses the chain still holds once it is over its bound (and has doubled
    /// since the last compaction, so a large live set is not rewritten on every append).
    fn compact_if_due(&mut self) -> Result<()> {
        if self.file_bytes <= self.file_bytes_max
            || self.file_bytes <= self.compacted_bytes.saturating_mul(2)
        {
            return Ok(());
        }
        let before = self.file_bytes;
        let after = self.store.rewrite(self.chain.headers())?;
        self.file = self.store.open_append()?;
        self.file_bytes = after;
        self.compacted_bytes = after;
        self.stats.compactions += 1;
        tracing::info!(before, after, "witness.bin compacted");
        Ok(())
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
    /// The executor installed a UTXO snapshot: the node's chain starts again as the ledger's witness order restored
    /// with it (every witness the ledger took, the finalized hashes it keeps up to the snapshot height).
    Reseed(Box<WitnessChain>),
    /// A witness from a peer.
    Gossip(WitnessHeader),
    /// A witness a local miner found.
    Mined(WitnessHeader),
    /// A witness a standalone miner (`cas mine`) submitted through the client endpoint; it gets the verdict.
    Submitted {
        header: WitnessHeader,
        client: SocketAddr,
    },
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
    /// Accepted witnesses for the driver to hand to the BFT (see [`CARRY_QUEUE_MAX`]); only the witness thread
    /// pushes and only the driver drains, each briefly.
    carry: Mutex<VecDeque<WitnessHeader>>,
    /// Witnesses dropped from the carry queue because the driver did not drain it in time.
    pub carry_dropped: AtomicU64,
}

impl WitnessShared {
    /// Queues accepted witnesses for the BFT to carry.
    pub fn queue_for_carrying(&self, headers: impl IntoIterator<Item = WitnessHeader>) {
        let mut queue = self.carry.lock().expect("carry lock");
        for header in headers {
            if queue.len() >= CARRY_QUEUE_MAX {
                queue.pop_front();
                self.carry_dropped.fetch_add(1, Ordering::Relaxed);
            }
            queue.push_back(header);
        }
    }

    /// The miners' current template, if a range is ready to mine (standalone miners get it over the network).
    pub fn current_template(&self) -> Option<WitnessHeader> {
        self.template().1
    }

    /// Replaces the miners' template; a new parent (or none) moves them off their stale work.
    pub fn set_template(&self, template: Option<WitnessHeader>) {
        let mut slot = self.template.lock().expect("template lock");
        let new_parent = slot.as_ref().map(|t| t.parent) != template.as_ref().map(|t| t.parent);
        *slot = template;
        drop(slot);
        if new_parent {
            self.generation.fetch_add(1, Ordering::Release);
        }
    }

    /// Takes every witness waiting to be carried.
    pub fn take_for_carrying(&self) -> Vec<WitnessHeader> {
        self.carry.lock().expect("carry lock").drain(..).collect()
    }

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
    /// Where the verdict on a standalone miner's submission goes (the node answers that client).
    pub answer: AnswerClient,
}

/// Sends encoded bytes to a client of the ingest endpoint.
pub type AnswerClient = Arc<dyn Fn(SocketAddr, Vec<u8>) + Send + Sync>;

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
            WitnessInput::Reseed(chain) => {
                self.node.chain = *chain;
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
            WitnessInput::Submitted { header, client } => {
                let hash = header.hash();
                let (verdict, accepted) = match self.node.offer(header.clone(), now) {
                    Ok(()) => (Verdict::Accepted, vec![header]),
                    Err(WitnessError::NotYetFinalized { .. }) => (Verdict::Pending, Vec::new()),
                    Err(error) => {
                        tracing::debug!(%client, %error, "a submitted witness was refused");
                        let MiningAnswer::Submitted { verdict, .. } =
                            MiningAnswer::refused(hash, error)
                        else {
                            unreachable!("refused builds a verdict")
                        };
                        (verdict, Vec::new())
                    }
                };
                let answer = MiningAnswer::Submitted { hash, verdict };
                (self.answer)(client, answer.encode());
                accepted
            }
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
        if !accepted.is_empty() {
            self.shared.queue_for_carrying(accepted);
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
        self.shared
            .set_template(self.node.chain.template(self.miner, wall_ms()));
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

    /// Mines the node's next witness at virtual time `now_ms` (the retarget then sees the target interval).
    fn mined_at(node: &WitnessNode, now_ms: u64) -> WitnessHeader {
        let mut header = node.chain.template(PublicKey([1; 32]), now_ms).unwrap();
        let (nonce, _) = mine(&header, 0..u64::MAX, &AtomicBool::new(false));
        header.nonce = nonce.unwrap();
        header
    }

    #[test]
    fn witness_bin_stays_bounded_and_reopens_on_the_ledger_order() {
        let dir = tempfile::tempdir().unwrap();
        let limits = WitnessLimits {
            finalized_kept: 10_000,
            depth_kept: 20,
        };
        let bound = 4 * 1024;
        let witnesses = 150u64;
        let interval = params().target_interval_ms;
        let chain_over_ledger = || {
            let mut chain = WitnessChain::new(params(), limits.clone());
            for height in 1..=witnesses * 2 + 2 {
                chain.add_finalized(height, ledger_hash(height));
            }
            chain
        };
        // What the ledger's witness order would hold: the same witnesses, carried in order.
        let mut order = chain_over_ledger();
        let mut node = WitnessNode::open_with(dir.path(), chain_over_ledger(), bound).unwrap();
        let mut appended = 0u64;
        for index in 1..=witnesses {
            let now = index * interval;
            let header = mined_at(&node, now);
            appended += WitnessFile::record(&header).len() as u64;
            order.insert(header.clone(), now).unwrap();
            node.offer(header, now).unwrap();
            // Never past the larger of the bound and twice the live set, plus the record just written.
            let live: u64 = node
                .chain
                .headers()
                .iter()
                .map(|h| WitnessFile::record(h).len() as u64)
                .sum();
            assert!(node.file_bytes <= bound.max(2 * live) + 1_024);
        }
        assert!(node.stats.compactions >= 1);
        let on_disk = std::fs::metadata(dir.path().join("witness.bin"))
            .unwrap()
            .len();
        assert_eq!(on_disk, node.file_bytes);
        assert!(on_disk < appended / 2, "{on_disk} of {appended} bytes");
        let best = node.chain.best();
        // A witness the ledger never took: only witness.bin has it; it must come back too.
        let extra = mined_at(&node, (witnesses + 1) * interval);
        node.offer(extra.clone(), (witnesses + 1) * interval)
            .unwrap();
        drop(node);

        // The compacted file alone no longer reaches back to the first witness; on the ledger's order it does.
        let fresh = WitnessNode::open_with(dir.path(), chain_over_ledger(), bound).unwrap();
        assert_eq!(fresh.chain.best_height(), 0);
        let reopened = WitnessNode::open_with(dir.path(), order, bound).unwrap();
        assert!(reopened.chain.contains(&best));
        assert_eq!(reopened.chain.best(), extra.hash());
    }
}
