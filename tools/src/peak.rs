//! The peak search of `cas local --find-peak`, of the short search that ends the default `cas local`, and of
//! `cas bench`'s cluster sweep: whole clusters (fresh keys, genesis and node processes each time) at offered rates
//! stepped up by a factor until one commits less than [`TPS_SHARE_MIN`] of what it was offered or its p99 passes
//! [`P99_MS_MAX`] (such a step, past the first, runs once more before it counts: one latency spike of a shared
//! machine must not end the search); then a few bisections between the last rate that held and the first that did not. The last
//! rate that held is the peak. A run with a wrong answer, a lost connection or unequal commitments is an error,
//! never a step that merely "did not hold". A finished step's node data folders are removed (its reports stay).

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cluster::{self, ClusterArgs, ClusterReport};

/// A step holds when it commits at least this share of what it was offered...
pub const TPS_SHARE_MIN: f64 = 0.95;
/// ...and its p99 submit-to-final latency is at most this.
pub const P99_MS_MAX: f64 = 1_000.0;
/// Offered rates are not stepped past this (a bound on the search, far above any one machine).
const RATE_MAX: u64 = 10_000_000;

/// How a search steps.
#[derive(Clone, Debug)]
pub struct PeakSearch {
    pub start_rate: u64,
    /// Each step up offers this factor more.
    pub growth: f64,
    /// Bisections between the last rate that held and the first that did not.
    pub refinements: usize,
    /// Seconds of load per step.
    pub step_s: u64,
    /// Steps at most, bisections included (None: until the peak is bracketed and refined).
    pub steps_max: Option<usize>,
}

/// One step: what was offered and what the cluster did with it.
#[derive(Clone, Debug, Serialize)]
pub struct PeakStep {
    pub offered_tps: u64,
    pub committed_tps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub node_cpu_us_per_tx: Option<f64>,
    pub load_cpu_us_per_tx: f64,
    pub held: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct PeakOutcome {
    pub nodes: usize,
    pub steps: Vec<PeakStep>,
    /// The run at the highest rate that held (None: not even the first did).
    pub peak: Option<ClusterReport>,
}

impl PeakOutcome {
    /// Adds a step; the peak moves to it if it held at a higher rate. Whether it held.
    fn record(&mut self, report: ClusterReport) -> bool {
        let step = PeakStep::of(&report);
        let held = step.held;
        let rate = step.offered_tps;
        self.steps.push(step);
        if held
            && self
                .peak
                .as_ref()
                .is_none_or(|peak| peak.load.offered_rate_per_s < rate)
        {
            self.peak = Some(report);
        }
        held
    }
}

impl PeakStep {
    fn of(report: &ClusterReport) -> PeakStep {
        let load = &report.load;
        PeakStep {
            offered_tps: load.offered_rate_per_s,
            committed_tps: load.committed_tps,
            p50_ms: load.latency_p50_ms,
            p99_ms: load.latency_p99_ms,
            node_cpu_us_per_tx: report.node_cpu_us_per_tx,
            load_cpu_us_per_tx: load.load_cpu_us_per_tx,
            held: load.committed_tps >= TPS_SHARE_MIN * load.offered_rate_per_s as f64
                && load.latency_p99_ms <= P99_MS_MAX,
        }
    }
}

/// Runs the search with `args` as the cluster (its rate and duration replaced by each step's); each step's files go
/// to `base/peak-<rate>`.
pub fn search(args: &ClusterArgs, search: &PeakSearch, base: PathBuf) -> Result<PeakOutcome> {
    let mut outcome = PeakOutcome {
        nodes: args.nodes,
        steps: Vec::new(),
        peak: None,
    };
    let measure = |rate: u64, folder: String| -> Result<ClusterReport> {
        eprintln!(
            "peak search: {} nodes at {rate} tx/s for {} s",
            args.nodes, search.step_s
        );
        let dir = base.join(folder);
        let report = cluster::measure(&ClusterArgs {
            rate: Some(rate),
            duration_s: search.step_s,
            dir: Some(dir.clone()),
            find_peak: false,
            ..args.clone()
        })
        .with_context(|| format!("the peak search's run at {rate} tx/s"))?;
        remove_node_data(&dir);
        Ok(report)
    };
    let run = |rate: u64, outcome: &mut PeakOutcome| -> Result<bool> {
        if outcome.record(measure(rate, format!("peak-{rate}"))?) {
            return Ok(true);
        }
        // A machine shared with others has latency spikes: a step that does not hold (past the first) runs once
        // more before it counts, so one spike does not end the search below the peak.
        if outcome.steps.len() == 1 {
            return Ok(false);
        }
        eprintln!("peak search: {rate} tx/s did not hold; once more to confirm");
        Ok(outcome.record(measure(rate, format!("peak-{rate}-again"))?))
    };
    let mut held_at = None;
    let mut failed_at = None;
    let mut rate = search.start_rate.max(1);
    // Up while the steps hold; when the first does not, down until one does (a machine slower than expected).
    while rate <= RATE_MAX && search.steps_max.is_none_or(|max| outcome.steps.len() < max) {
        if run(rate, &mut outcome)? {
            held_at = Some(rate);
            if failed_at.is_some() {
                break;
            }
            rate = ((rate as f64 * search.growth) as u64).max(rate + 1);
        } else {
            failed_at = Some(failed_at.map_or(rate, |failed: u64| failed.min(rate)));
            if held_at.is_some() || rate == 1 {
                break;
            }
            rate = ((rate as f64 / search.growth) as u64).max(1);
        }
    }
    if let (Some(mut low), Some(mut high)) = (held_at, failed_at) {
        for _ in 0..search.refinements {
            if search
                .steps_max
                .is_some_and(|max| outcome.steps.len() >= max)
            {
                break;
            }
            let middle = low + (high - low) / 2;
            if middle == low {
                break;
            }
            if run(middle, &mut outcome)? {
                low = middle;
            } else {
                high = middle;
            }
        }
    }
    Ok(outcome)
}

/// Removes the nodes' data folders of a finished step (blocks, journal, snapshots: about a gigabyte per 20 s at
/// 20,000 tx/s), keeping its reports, configs and logs: a search must not fill the disk. Best effort.
fn remove_node_data(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let is_node_folder = entry.file_type().is_ok_and(|kind| kind.is_dir())
            && entry.file_name().to_string_lossy().starts_with("node");
        if is_node_folder {
            if let Err(error) = std::fs::remove_dir_all(entry.path()) {
                tracing::debug!(path = %entry.path().display(), %error, "a step's node data was not removed");
            }
        }
    }
}

/// Prints every step and the peak row beside the CPU limit of the peak's run.
pub fn print(outcome: &PeakOutcome) {
    println!();
    println!(
        "peak search ({} nodes; a step holds at >= {:.0}% of the offered rate committed and p99 <= {P99_MS_MAX:.0} ms):",
        outcome.nodes,
        TPS_SHARE_MIN * 100.0
    );
    println!("| offered tx/s | committed TPS | p50 ms | p99 ms | node CPU µs/tx | load CPU µs/tx | held |");
    println!("|---|---|---|---|---|---|---|");
    for step in &outcome.steps {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {} | {:.1} | {} |",
            step.offered_tps,
            step.committed_tps,
            step.p50_ms,
            step.p99_ms,
            step.node_cpu_us_per_tx
                .map_or("-".to_string(), |us| format!("{us:.0}")),
            step.load_cpu_us_per_tx,
            if step.held { "yes" } else { "no" },
        );
    }
    match &outcome.peak {
        Some(peak) => println!(
            "peak: {:.0} TPS committed at {} tx/s offered (p50 {:.0} ms, p99 {:.0} ms), {:.2} of the CPU limit of \
             {:.0} tx/s",
            peak.load.committed_tps,
            peak.load.offered_rate_per_s,
            peak.load.latency_p50_ms,
            peak.load.latency_p99_ms,
            peak.load.committed_tps / peak.cpu_limit_tps,
            peak.cpu_limit_tps
        ),
        None => println!("peak: not even the first rate held"),
    }
}
