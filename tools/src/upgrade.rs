//! The rolling-upgrade drill that `cas local --upgrade-drill` runs: while the load runs through the HTTP API, every
//! node in turn (node 0 too) is stopped gracefully (SIGTERM), its node.toml gains the scheduled upgrade to this
//! binary's newest protocol version at one agreed height, and it is started again, one node at a time. The height is
//! chosen when the first node goes, from the committee's block rate, to fall after the last restart: until then the
//! restarted nodes propose and vote under the old version beside the ones not yet restarted; at the height all
//! switch in the same block. As an operator would, the drill restarts a node only once the one restarted before it
//! is back in step (near the chain's height and voting again), so at most one node is ever away. When the chain
//! runs faster than it did when the height was chosen, the drill hurries: the next goes as soon as the one before is
//! in step rather than on its schedule, whenever the blocks left to the height would not cover the remaining
//! restarts at the recent block rate. After the load the
//! drill waits until every node runs the new version, and the run then checks what every run checks (every valid
//! transaction final, every answer right, equal commitments) and reports the longest gap between committed blocks
//! beside one round timeout.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context, Result};
use cas_consensus::protocol::PROTOCOL_VERSION_MAX;
use cas_node::config::{NodeConfig, ProtocolUpgradeConfig};

use crate::cluster::read_status;

/// What the drill did, for the run's report.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct UpgradeReport {
    pub version: u32,
    pub height: u64,
    /// Seconds into the load of each restart, in node order.
    pub restarts_s: Vec<f64>,
    /// Seconds into the load when node 0 first reported the new version, if it did during the load.
    pub switched_s: Option<f64>,
    /// Blocks the nodes refused for a protocol version their schedule did not give the height, summed over every
    /// node's processes before and after its restart (0 when the switch is clean).
    pub protocol_refused: u64,
    /// Proposals not voted for by the new version's timestamp rule, summed likewise.
    pub timestamps_refused: u64,
}

/// Seconds of looks the recent block rate is measured over.
const RATE_WINDOW_S: f64 = 3.0;
/// Seconds the drill allows each remaining restart (stop, start, back in step) when it decides whether to hurry.
const RESTART_ALLOWANCE_S: f64 = 2.0;
/// Seconds a node's status.json may lag its chain (it is written once a second), in blocks at the recent rate.
const STATUS_LAG_S: f64 = 1.0;
/// Blocks of margin beyond the rate's estimates, both when the height is chosen and when hurrying.
const MARGIN_BLOCKS: u64 = 20;
/// Votes a restarted node's new process must have sent before the next node may go (a few rounds of taking part,
/// not one lucky vote).
const IN_STEP_VOTES: u64 = 5;

/// Restarts nodes into the upgrade on a schedule; see the module doc.
pub struct UpgradeDrill {
    dir: PathBuf,
    nodes: usize,
    /// Seconds between restarts; the first comes one interval into the load.
    every_s: f64,
    /// (seconds into the load, highest height) of the looks of the last RATE_WINDOW_S.
    looks: VecDeque<(f64, u64)>,
    /// The node restarted last, when its new process was started, and the chain's height then.
    restarted: Option<(usize, SystemTime, u64)>,
    next: usize,
    pub report: UpgradeReport,
}

fn counter(status: &cas_node::Status, name: &str) -> u64 {
    status.consensus[name].as_u64().unwrap_or(0)
}

impl UpgradeDrill {
    /// A drill over `nodes` nodes for a load of `duration_s`: restarts spread so the last one leaves a quarter of
    /// the load after it.
    pub fn new(dir: &Path, nodes: usize, duration_s: f64) -> UpgradeDrill {
        UpgradeDrill {
            dir: dir.to_path_buf(),
            nodes,
            every_s: duration_s * 0.75 / (nodes as f64 + 1.0),
            looks: VecDeque::new(),
            restarted: None,
            next: 0,
            report: UpgradeReport {
                version: PROTOCOL_VERSION_MAX,
                ..UpgradeReport::default()
            },
        }
    }

    fn status(&self, i: usize) -> Option<cas_node::Status> {
        read_status(&self.dir.join(format!("node{i}/status.json")))
    }

    fn highest(&self) -> u64 {
        (0..self.nodes)
            .filter_map(|i| self.status(i))
            .map(|s| s.height)
            .max()
            .unwrap_or(0)
    }

    /// Blocks per second over the last RATE_WINDOW_S of looks.
    fn recent_rate(&self) -> f64 {
        match (self.looks.front(), self.looks.back()) {
            (Some((t0, h0)), Some((t1, h1))) => (h1 - h0) as f64 / (t1 - t0).max(0.5),
            _ => 0.0,
        }
    }

    /// Whether the node restarted last runs again (its new process wrote a status) within a few blocks of the
    /// chain, past the height the chain had at its restart, and votes (its new process has sent
    /// `IN_STEP_VOTES`): only then may the next go without stalling the committee. Height alone is not enough: a new
    /// process writes its stored height first, and the chain's height at the restart is read from status files up
    /// to a second old, so a node still catching up could pass for one in step, and the next restart would leave
    /// two of four nodes silent for two round timeouts.
    fn restarted_in_step(&self, highest: u64) -> bool {
        let Some((i, started, height_then)) = self.restarted else {
            return false;
        };
        let path = self.dir.join(format!("node{i}/status.json"));
        let written = std::fs::metadata(&path).and_then(|m| m.modified());
        written.is_ok_and(|written| written > started)
            && self.status(i).is_some_and(|s| {
                s.height > height_then
                    && s.height + 3 >= highest
                    && counter(&s, "votes_sent") >= IN_STEP_VOTES
            })
    }

    /// Whether the next node may go: it is the first, or the one restarted before it is back in step.
    fn previous_in_step(&self, highest: u64) -> bool {
        self.next == 0 || self.restarted_in_step(highest)
    }

    /// Whether the chain would reach the upgrade before the remaining restarts at their schedule's pace: the
    /// blocks left do not cover them at the recent rate.
    fn must_hurry(&self, highest: u64) -> bool {
        if self.next == 0 || self.next >= self.nodes {
            return false;
        }
        let left_s = (self.nodes - self.next) as f64 * RESTART_ALLOWANCE_S + STATUS_LAG_S;
        let needed = (self.recent_rate() * left_s).ceil() as u64 + MARGIN_BLOCKS;
        highest + needed >= self.report.height
    }

    /// One look at the schedule, `elapsed` seconds into the load.
    pub fn step(
        &mut self,
        elapsed: f64,
        children: &mut [Child],
        start: impl Fn(usize) -> Result<Child>,
    ) -> Result<()> {
        let highest = self.highest();
        self.looks.push_back((elapsed, highest));
        while self
            .looks
            .front()
            .is_some_and(|(t, _)| *t < elapsed - RATE_WINDOW_S)
        {
            self.looks.pop_front();
        }
        if self.report.switched_s.is_none()
            && self.report.height > 0
            && self
                .status(0)
                .is_some_and(|s| counter(&s, "protocol") == u64::from(self.report.version))
        {
            eprintln!(
                "  {elapsed:>5.1} s  node 0 runs protocol {}",
                self.report.version
            );
            self.report.switched_s = Some(elapsed);
        }
        if self.next >= self.nodes {
            return Ok(());
        }
        // As an operator would: the next node goes only once the one before is back in step, on its schedule or
        // early when the chain nears the upgrade.
        if !self.previous_in_step(highest) {
            return Ok(());
        }
        let scheduled = elapsed >= self.every_s * (self.next as f64 + 1.0);
        let hurry = !scheduled && self.must_hurry(highest);
        if !scheduled && !hurry {
            return Ok(());
        }
        if hurry {
            eprintln!(
                "  {elapsed:>5.1} s  hurrying: height {highest} of {}, {:.1} blocks/s",
                self.report.height,
                self.recent_rate()
            );
        }
        if self.next == 0 {
            // Where the chain will be once every node has restarted, at its recent rate, plus a margin for the
            // restarts' own slowdown: the upgrade must not come before the last node runs the new binary.
            let (height, rate) = (highest, self.recent_rate());
            let to_last_restart_s = self.every_s * (self.nodes as f64 - 1.0);
            self.report.height = height + (rate * to_last_restart_s * 1.5) as u64 + MARGIN_BLOCKS;
            eprintln!(
                "  {elapsed:>5.1} s  upgrade to protocol {} scheduled at height {} (now {height}, {rate:.1} blocks/s)",
                self.report.version, self.report.height
            );
        }
        let i = self.next;
        self.next += 1;
        self.restart(i, elapsed, children, start)
    }

    /// Stops node `i` gracefully, writes the upgrade into its config, starts it again.
    fn restart(
        &mut self,
        i: usize,
        elapsed: f64,
        children: &mut [Child],
        start: impl Fn(usize) -> Result<Child>,
    ) -> Result<()> {
        let highest = self.highest();
        ensure!(
            highest < self.report.height,
            "the chain reached height {highest}, past the upgrade at {}, before node {i} was upgraded: the block \
             rate grew during the drill; run it longer (--duration-s) or at a steadier rate",
            self.report.height
        );
        eprintln!("  {elapsed:>5.1} s  upgrading node {i}: SIGTERM, new config, start");
        // SAFETY: kill(2) on our own child's pid, with a valid signal number.
        unsafe { libc::kill(children[i].id() as i32, libc::SIGTERM) };
        let exit = children[i].wait()?;
        ensure!(exit.success(), "node {i} stopped with {exit} on SIGTERM");
        let last = self
            .status(i)
            .with_context(|| format!("node {i} left no status"))?;
        self.report.protocol_refused += counter(&last, "protocol_refused");
        self.report.timestamps_refused += counter(&last, "timestamps_refused");
        let path = self.dir.join(format!("node{i}.toml"));
        let mut config = NodeConfig::load(&path)?;
        config.protocol_upgrades = vec![ProtocolUpgradeConfig {
            version: self.report.version,
            height: self.report.height,
        }];
        std::fs::write(&path, config.to_toml())?;
        let started = SystemTime::now();
        children[i] = start(i)?;
        self.restarted = Some((i, started, highest));
        self.report.restarts_s.push(elapsed);
        Ok(())
    }

    /// After the load: restarts the nodes the load ended before, then waits until every node runs the new version.
    pub fn finish(
        &mut self,
        started: Instant,
        children: &mut [Child],
        start: impl Fn(usize) -> Result<Child>,
    ) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(300);
        while self.next < self.nodes {
            if !self.previous_in_step(self.highest()) {
                ensure!(
                    Instant::now() < deadline,
                    "node {} was not back in step 5 minutes after its restart",
                    self.next - 1
                );
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            let i = self.next;
            self.next += 1;
            self.restart(i, started.elapsed().as_secs_f64(), children, &start)?;
        }
        loop {
            let versions: Vec<u64> = (0..self.nodes)
                .map(|i| self.status(i).map_or(0, |s| counter(&s, "protocol")))
                .collect();
            if versions
                .iter()
                .all(|v| *v == u64::from(self.report.version))
            {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "not every node reached protocol {} at height {} in 5 minutes after the load: versions {versions:?}",
                    self.report.version,
                    self.report.height
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if self.report.switched_s.is_none() {
            eprintln!(
                "  {:>5.1} s  every node runs protocol {} (after the load)",
                started.elapsed().as_secs_f64(),
                self.report.version
            );
        }
        Ok(())
    }

    /// Adds the final processes' refusals (their last status, once stopped).
    pub fn count_final(&mut self, statuses: &[cas_node::Status]) {
        for status in statuses {
            self.report.protocol_refused += counter(status, "protocol_refused");
            self.report.timestamps_refused += counter(status, "timestamps_refused");
        }
    }
}
