//! The set's mirror: a sorted copy of the unspent set, kept on its own thread from the changes every commit sends
//! it, from which UTXO snapshots are written. The shards never stop for a snapshot (copying a few million entries
//! out of them stalled every block for seconds): the mirror takes changes in commit order, so when it meets a
//! write request it holds the set at that height, and it writes while the changes of later blocks wait in its
//! bounded queue (full: the committing thread waits, so a writer slower than the chain slows the chain instead of
//! growing memory). The cost is a second copy of the set in memory, on a thread of its own at a lower priority. The
//! copy is a sorted vector plus a log of the changes since ([`SortedSet`]): a change is only appended, and the log
//! is folded in with one sort and merge when a snapshot is written or the log outgrows the copy, instead of an
//! ordered-map update per change. It owns its copy and the snapshot files it writes; it never reads the shards or
//! the store.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use cas_engine::{Hash32, OutPoint, TxOutput};

use crate::error::Error;
use crate::limits::{MIRROR_LOG_MIN, MIRROR_NICE, MIRROR_QUEUE_MAX};
use crate::snapshot;

enum Input {
    /// What one commit did to the set (a block, a genesis or snapshot load).
    Changes {
        spent: Vec<OutPoint>,
        created: Vec<(OutPoint, TxOutput)>,
    },
    /// The set was emptied (a snapshot install replaces it; its load follows as changes).
    Clear,
    /// Write the set as it stands after every change before this one: the snapshot at `height`.
    Write {
        dir: PathBuf,
        height: u64,
        commitment: Hash32,
    },
    /// Answered once everything before it is done.
    Wait { reply: SyncSender<()> },
}

/// What the ledger holds to send the mirror its changes.
#[derive(Clone)]
pub(crate) struct MirrorFeed(SyncSender<Input>);

impl MirrorFeed {
    pub(crate) fn changes(
        &self,
        spent: Vec<OutPoint>,
        created: Vec<(OutPoint, TxOutput)>,
    ) -> Result<(), Error> {
        self.send(Input::Changes { spent, created })
    }

    pub(crate) fn clear(&self) -> Result<(), Error> {
        self.send(Input::Clear)
    }

    fn send(&self, input: Input) -> Result<(), Error> {
        self.0.send(input).map_err(|_| Error::ExecutorStopped {
            name: "cas-mirror".to_string(),
        })
    }
}

/// The durable ledger's side: asks for snapshots, one at a time, and collects how they went.
pub(crate) struct Mirror {
    feed: MirrorFeed,
    /// True from a write request until its file is durable (or failed).
    writing: Arc<AtomicBool>,
    /// The outcome of the last write, until taken.
    last: Arc<Mutex<Option<Result<PathBuf, Error>>>>,
}

impl Mirror {
    /// Starts the mirror's thread with an empty set; the ledger's loads and commits fill it.
    pub(crate) fn start() -> Result<(Mirror, MirrorFeed), Error> {
        let (sender, inputs) = sync_channel(MIRROR_QUEUE_MAX);
        let writing = Arc::new(AtomicBool::new(false));
        let last = Arc::new(Mutex::new(None));
        let keeper = Keeper {
            set: SortedSet::default(),
            writing: writing.clone(),
            last: last.clone(),
        };
        std::thread::Builder::new()
            .name("cas-mirror".to_string())
            .spawn(move || {
                lower_priority();
                keeper.run(inputs)
            })
            .map_err(|e| Error::io("spawn mirror thread", Path::new("cas-mirror"), e))?;
        let feed = MirrorFeed(sender);
        let mirror = Mirror {
            feed: feed.clone(),
            writing,
            last,
        };
        Ok((mirror, feed))
    }

    /// Whether a snapshot asked for is still being written.
    pub(crate) fn writing(&self) -> bool {
        self.writing.load(Ordering::Acquire)
    }

    /// Asks for the snapshot at `height` (after every change sent so far) and returns the previous write's error,
    /// if it failed. The caller checks [`Mirror::writing`] first: one write at a time.
    pub(crate) fn write(&self, dir: &Path, height: u64, commitment: Hash32) -> Result<(), Error> {
        self.take_last()?;
        self.writing.store(true, Ordering::Release);
        self.feed.send(Input::Write {
            dir: dir.to_path_buf(),
            height,
            commitment,
        })
    }

    /// Waits until everything sent so far is done; returns the last write's error, if it failed.
    pub(crate) fn wait(&self) -> Result<(), Error> {
        let (reply, done) = sync_channel(1);
        self.feed.send(Input::Wait { reply })?;
        done.recv().map_err(|_| Error::ExecutorStopped {
            name: "cas-mirror".to_string(),
        })?;
        self.take_last()
    }

    fn take_last(&self) -> Result<(), Error> {
        match self.last.lock().expect("mirror result lock").take() {
            Some(Err(error)) => Err(error),
            _ => Ok(()),
        }
    }
}

/// Runs the calling thread at nice [`MIRROR_NICE`]: a snapshot's encoding, hashing and writing (seconds of CPU
/// for millions of outputs) then yields to the threads that commit blocks on a machine without a spare core,
/// instead of lengthening every block in flight; the thread still gets its share, so it keeps up on average (its
/// queue absorbs a write). Speed only: nothing the mirror writes depends on it.
fn lower_priority() {
    // SAFETY: plain syscalls on the calling thread with valid arguments.
    let lowered = unsafe {
        let thread = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, thread, MIRROR_NICE) == 0
    };
    if !lowered {
        tracing::debug!("the mirror thread runs at normal priority (could not lower it)");
    }
}

/// The mirror's thread.
struct Keeper {
    set: SortedSet,
    writing: Arc<AtomicBool>,
    last: Arc<Mutex<Option<Result<PathBuf, Error>>>>,
}

impl Keeper {
    /// Runs until every sender is gone.
    fn run(mut self, inputs: Receiver<Input>) {
        for input in inputs {
            match input {
                Input::Changes { spent, created } => self.set.log(spent, created),
                Input::Clear => self.set.clear(),
                Input::Write {
                    dir,
                    height,
                    commitment,
                } => {
                    let written =
                        snapshot::write_sorted(&dir, height, self.set.folded(), commitment);
                    *self.last.lock().expect("mirror result lock") = Some(written);
                    self.writing.store(false, Ordering::Release);
                }
                Input::Wait { reply } => {
                    let _ = reply.send(());
                }
            }
        }
    }
}

/// The unspent set as a sorted vector and the changes logged since it was last folded. An outpoint is created
/// once and spent at most once, so a logged spend removes it whether it is in the vector or among the logged
/// creations, and order among the logged changes does not matter.
#[derive(Default)]
struct SortedSet {
    /// Sorted by outpoint, each once.
    sorted: Vec<(OutPoint, TxOutput)>,
    spent: Vec<OutPoint>,
    created: Vec<(OutPoint, TxOutput)>,
}

impl SortedSet {
    fn log(&mut self, spent: Vec<OutPoint>, created: Vec<(OutPoint, TxOutput)>) {
        self.spent.extend(spent);
        self.created.extend(created);
        if self.spent.len() + self.created.len() > self.sorted.len().max(MIRROR_LOG_MIN) {
            self.fold();
        }
    }

    fn clear(&mut self) {
        *self = SortedSet::default();
    }

    /// Folds the log into the sorted vector: sorts the log, drops the spent from both, then merges the creations
    /// into the vector in place, from the back (the vector grows by their count; no second copy of the set).
    fn fold(&mut self) {
        if self.spent.is_empty() && self.created.is_empty() {
            return;
        }
        sort_by_outpoint(&mut self.spent, |outpoint| outpoint);
        sort_by_outpoint(&mut self.created, |(outpoint, _)| outpoint);
        Self::remove_sorted(&mut self.sorted, &self.spent);
        Self::remove_sorted(&mut self.created, &self.spent);
        self.spent.clear();
        merge_from_back(&mut self.sorted, &self.created);
        self.created.clear();
        debug_assert!(self.sorted.windows(2).all(|w| w[0].0 < w[1].0));
    }

    /// Removes from `entries` (sorted) every outpoint in `spent` (sorted), in one pass over both.
    fn remove_sorted(entries: &mut Vec<(OutPoint, TxOutput)>, spent: &[OutPoint]) {
        let mut next = 0;
        entries.retain(|(outpoint, _)| {
            while next < spent.len() && spent[next] < *outpoint {
                next += 1;
            }
            spent.get(next) != Some(outpoint)
        });
    }

    /// Every unspent output, in outpoint order.
    fn folded(&mut self) -> impl ExactSizeIterator<Item = (&OutPoint, &TxOutput)> {
        self.fold();
        self.sorted.iter().map(|(outpoint, coin)| (outpoint, coin))
    }
}

/// Sorts `entries` by outpoint. Outpoints lead with a tx id, a hash, so the top bits of its first bytes spread
/// large logs evenly over buckets that are in outpoint order: one counting pass and one in-place permutation
/// (American flag sort: each entry moves to its bucket's next free slot) leave a few entries per bucket, each
/// bucket then sorted alone. Entries are 128 bytes in the log of creations, where a comparison sort moved each one
/// some twenty times. Ids that share a prefix (ground on purpose) only make their bucket's sort larger; small
/// inputs take the comparison sort.
fn sort_by_outpoint<T: Copy>(entries: &mut [T], outpoint: impl Fn(&T) -> &OutPoint) {
    const RADIX_MIN: usize = 4096;
    if entries.len() < RADIX_MIN {
        entries.sort_unstable_by(|a, b| outpoint(a).cmp(outpoint(b)));
        return;
    }
    // About four entries per bucket, 2^10 to 2^16 buckets.
    let bits = (entries.len().ilog2() - 2).clamp(10, 16);
    let bucket = |entry: &T| {
        let tx = &outpoint(entry).tx.0;
        (u32::from_be_bytes([tx[0], tx[1], tx[2], tx[3]]) >> (32 - bits)) as usize
    };
    let mut ends = vec![0usize; 1 << bits];
    for entry in entries.iter() {
        ends[bucket(entry)] += 1;
    }
    let mut total = 0;
    for end in ends.iter_mut() {
        total += *end;
        *end = total;
    }
    // next[b]: the first slot of bucket b not yet holding one of its own entries.
    let mut next: Vec<usize> = std::iter::once(0)
        .chain(ends[..ends.len() - 1].iter().copied())
        .collect();
    for b in 0..ends.len() {
        while next[b] < ends[b] {
            // Carry the entry at b's next slot to its own bucket, and the entry it displaces on, until one
            // belongs in b.
            let mut carried = entries[next[b]];
            loop {
                let home = bucket(&carried);
                if home == b {
                    break;
                }
                std::mem::swap(&mut carried, &mut entries[next[home]]);
                next[home] += 1;
            }
            entries[next[b]] = carried;
            next[b] += 1;
        }
    }
    let mut start = 0;
    for &end in &ends {
        entries[start..end].sort_unstable_by(|a, b| outpoint(a).cmp(outpoint(b)));
        start = end;
    }
}

/// Merges `created` (sorted, no outpoint in `sorted`) into `sorted` (sorted): the vector grows by `created`'s
/// length and is filled from the back, the larger head of the two runs first, so nothing is written over an entry
/// not yet moved.
fn merge_from_back(sorted: &mut Vec<(OutPoint, TxOutput)>, created: &[(OutPoint, TxOutput)]) {
    let kept = sorted.len();
    sorted.extend_from_slice(created);
    let (mut i, mut j) = (kept, created.len());
    while j > 0 {
        let write = i + j - 1;
        if i > 0 && sorted[i - 1].0 > created[j - 1].0 {
            sorted[write] = sorted[i - 1];
            i -= 1;
        } else {
            sorted[write] = created[j - 1];
            j -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use cas_engine::{AssetId, Hash32, PublicKey};

    use super::*;

    fn outpoint(n: u64) -> OutPoint {
        OutPoint {
            tx: Hash32(*blake3::hash(&n.to_le_bytes()).as_bytes()),
            index: (n % 3) as u32,
        }
    }

    fn coin(n: u64) -> TxOutput {
        TxOutput {
            amount: n + 1,
            asset: AssetId::CAS,
            owner: PublicKey::default(),
            unlock_height: None,
        }
    }

    /// The bucketed sort orders like the comparison sort: random ids at sizes around its threshold and bucket
    /// counts, ids that share their first bytes (one crowded bucket), and equal ids with different indices.
    #[test]
    fn outpoints_sort_in_order_by_buckets_whatever_their_prefixes() {
        let crowded = |n: u64| {
            let mut o = outpoint(n);
            o.tx.0[..3].copy_from_slice(&[0xab, 0xcd, 0xef]);
            o
        };
        let twins = |n: u64| OutPoint {
            tx: outpoint(n / 4).tx,
            index: (n % 4) as u32,
        };
        let makers: [&dyn Fn(u64) -> OutPoint; 3] = [&outpoint, &crowded, &twins];
        for make in makers {
            for len in [0, 1, 4095, 4096, 5000, 70_000, 300_000] {
                let mut entries: Vec<(OutPoint, TxOutput)> = (0..len as u64)
                    .map(|n| (make(n.wrapping_mul(0x9e37_79b9)), coin(n)))
                    .collect();
                let mut expected = entries.clone();
                expected.sort_by_key(|(o, _)| *o);
                sort_by_outpoint(&mut entries, |(o, _)| o);
                assert!(entries == expected, "{len} entries");
            }
        }
    }

    /// Merging from the back interleaves the two runs in order, whichever run ends first or is empty.
    #[test]
    fn creations_merge_into_the_sorted_vector_in_order() {
        let sorted_of = |ns: &[u64]| {
            let mut v: Vec<(OutPoint, TxOutput)> =
                ns.iter().map(|&n| (outpoint(n), coin(n))).collect();
            v.sort_by_key(|(o, _)| *o);
            v
        };
        for (kept, created) in [
            (0..0, 0..5),
            (0..5, 5..5),
            (0..1000, 1000..1300),
            (0..7, 7..2000),
        ] {
            let kept: Vec<u64> = kept.collect();
            let created: Vec<u64> = created.collect();
            let mut sorted = sorted_of(&kept);
            merge_from_back(&mut sorted, &sorted_of(&created));
            let all: Vec<u64> = kept.iter().chain(&created).copied().collect();
            assert!(
                sorted == sorted_of(&all),
                "{} + {}",
                kept.len(),
                created.len()
            );
        }
    }

    /// Random commits (each spends some live outputs, including ones created in the same log, and creates new
    /// ones), folded at random points and by size: the set always lists what an ordered map fed the same changes
    /// holds, in order.
    #[test]
    fn the_sorted_set_lists_what_an_ordered_map_holds_through_any_folds() {
        // A fixed xorshift: the same changes every run.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut below = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n.max(1) as u64) as usize
        };
        let mut set = SortedSet::default();
        let mut model: BTreeMap<OutPoint, TxOutput> = BTreeMap::new();
        let mut live: Vec<OutPoint> = Vec::new();
        let mut next = 0u64;
        for commit in 0..2_000 {
            let mut spent = Vec::new();
            for _ in 0..below(live.len().min(40) + 1) {
                let outpoint = live.swap_remove(below(live.len()));
                model.remove(&outpoint);
                spent.push(outpoint);
            }
            let mut created = Vec::new();
            for _ in 0..below(60) {
                let (outpoint, coin) = (outpoint(next), coin(next));
                next += 1;
                model.insert(outpoint, coin);
                live.push(outpoint);
                created.push((outpoint, coin));
            }
            set.log(spent, created);
            if commit % 97 == 0 || below(50) == 0 {
                let listed: Vec<(OutPoint, TxOutput)> = set
                    .folded()
                    .map(|(outpoint, coin)| (*outpoint, *coin))
                    .collect();
                let expected: Vec<(OutPoint, TxOutput)> = model
                    .iter()
                    .map(|(outpoint, coin)| (*outpoint, *coin))
                    .collect();
                assert_eq!(listed, expected, "after commit {commit}");
            }
        }
        assert!(next > 20_000 && !model.is_empty());
        set.clear();
        assert_eq!(set.folded().len(), 0);
    }
}
