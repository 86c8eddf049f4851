//! The fault drills' parts that `cas local` runs: the SIGKILL storm (`--kill-every-s`) and the ledger lookups
//! the drills check with. The storm: while the load runs, one node at a time (never node 0, which
//! takes the load) is killed with SIGKILL every few seconds and restarted half an interval later, so at most one
//! node is down at any moment, and the last restart comes at least [`CATCH_UP_S`] before the load ends. The run then checks what every run checks (every valid transaction final with its
//! receipt, every answer right, equal commitments) and reports the longest gap between consecutive committed
//! blocks, read from node 0's stored ledger blocks (proposal timestamps), beside one round timeout.

use std::path::Path;
use std::process::Child;

use anyhow::{Context, Result};
use cas_shards::{BlockStore, StoreConfig};

/// The storm's last restart comes at least this long before the load ends, so the restarted node catches up on
/// blocks that still come. A member restarted a few blocks behind a chain that then goes idle can stay behind:
/// its peers' empty blocks carry no ledger heights to pull it along, and the blocks it lacks may have left their
/// in-memory window (the SIGKILL storm test failed that way in CI twice, the node 3 blocks behind for 30 s). That
/// gap is the node's to close; the drill checks what a storm under load does.
pub const CATCH_UP_S: f64 = 2.5;

/// Kills and restarts nodes on a schedule; see the module doc.
pub struct Storm {
    every_s: f64,
    /// How long the load runs: no kill whose restart would come within [`CATCH_UP_S`] of its end.
    load_s: f64,
    nodes: usize,
    /// xorshift64 state: which node goes next.
    rng: u64,
    next_kill_s: f64,
    /// The node down now, and when it was killed (seconds into the load).
    down: Option<(usize, f64)>,
    pub kills: u64,
}

impl Storm {
    pub fn new(every_s: f64, load_s: f64, nodes: usize, seed: u64) -> Storm {
        Storm {
            every_s,
            load_s,
            nodes,
            rng: seed | 1,
            next_kill_s: every_s,
            down: None,
            kills: 0,
        }
    }

    fn next_victim(&mut self) -> usize {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        1 + (self.rng % (self.nodes as u64 - 1)) as usize
    }

    /// One look at the schedule, `elapsed` seconds into the load: restarts the node that is down once it has been
    /// down half an interval, or kills the next one when its time has come.
    pub fn step(
        &mut self,
        elapsed: f64,
        children: &mut [Child],
        start: impl Fn(usize) -> Result<Child>,
    ) -> Result<()> {
        if let Some((victim, since)) = self.down {
            if elapsed >= since + self.every_s / 2.0 {
                eprintln!("  {elapsed:>5.1} s  restarting node {victim}");
                children[victim] = start(victim)?;
                self.down = None;
            }
            return Ok(());
        }
        let restart_s = self.next_kill_s + self.every_s / 2.0;
        if elapsed >= self.next_kill_s && restart_s + CATCH_UP_S <= self.load_s {
            let victim = self.next_victim();
            eprintln!("  {elapsed:>5.1} s  SIGKILL node {victim}");
            let _ = children[victim].kill();
            let _ = children[victim].wait();
            self.down = Some((victim, elapsed));
            self.kills += 1;
            self.next_kill_s += self.every_s;
        }
        Ok(())
    }

    /// Restarts the node still down when the load ends, so every node is compared.
    pub fn finish(
        &mut self,
        children: &mut [Child],
        start: impl Fn(usize) -> Result<Child>,
    ) -> Result<()> {
        if let Some((victim, _)) = self.down.take() {
            eprintln!("  restarting node {victim} after the load");
            children[victim] = start(victim)?;
        }
        Ok(())
    }
}

/// Visits the ledger blocks stored in `data_dir` (a stopped node's), newest first, until `visit` says stop or
/// the oldest block still stored is passed.
fn stored_blocks_newest_first(
    data_dir: &Path,
    mut visit: impl FnMut(u64, &cas_engine::ArchivedBlock) -> bool,
) -> Result<()> {
    let (store, _) = BlockStore::open(
        &data_dir.join("ledger").join("blocks"),
        &StoreConfig::default(),
    )
    .with_context(|| format!("opening the block store of {}", data_dir.display()))?;
    let Some(durable) = store.durable_height() else {
        return Ok(());
    };
    for height in (1..=durable).rev() {
        let Ok(bytes) = store.read(height) else {
            break;
        };
        let block = cas_engine::codec::decode_block(&bytes)
            .with_context(|| format!("stored block {height}"))?;
        if !visit(height, block) {
            break;
        }
    }
    Ok(())
}

/// The longest gap between consecutive committed ledger blocks stored in `data_dir` (a stopped node's) whose
/// timestamps fall in `from_ms..=to_ms` (wall clock), and the height that ended it.
pub fn longest_block_gap(data_dir: &Path, from_ms: u64, to_ms: u64) -> Result<Option<(u64, u64)>> {
    let mut longest: Option<(u64, u64)> = None;
    let mut later: Option<u64> = None;
    // Newest first, until the load's start (older heights may have been pruned after a snapshot).
    stored_blocks_newest_first(data_dir, |height, block| {
        let at = block.header.timestamp_ms.to_native();
        if at > to_ms {
            return true;
        }
        if let Some(next) = later {
            let gap = next.saturating_sub(at);
            if longest.is_none_or(|(longest, _)| gap > longest) {
                longest = Some((gap, height + 1));
            }
        }
        later = Some(at);
        at >= from_ms
    })?;
    Ok(longest)
}

/// The ids of every transaction in the ledger blocks stored in `data_dir` (a stopped node's), from the oldest
/// block still stored.
pub fn stored_tx_ids(data_dir: &Path) -> Result<std::collections::HashSet<cas_engine::TxId>> {
    let mut ids = std::collections::HashSet::new();
    stored_blocks_newest_first(data_dir, |_, block| {
        let txs: Vec<_> = block.txs.iter().collect();
        ids.extend(cas_engine::tx::tx_ids(&txs));
        true
    })?;
    Ok(ids)
}
