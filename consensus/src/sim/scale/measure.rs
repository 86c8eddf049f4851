//! What a run of the scale model measures: every transaction of the window from submission to finality at its
//! origin (as weighted cohorts), the rate at which transactions become final, and each resource's utilization.
//! It only records; the model decides what happened.

use super::resources::Window;

/// Per node and resource, the window's utilization split into its fixed and its load-proportional part.
#[derive(Clone, Copy, Debug)]
pub struct ResourceUse {
    pub node: usize,
    pub cpu: bool,
    pub overhead: f64,
    pub load: f64,
    /// Load µs per submitted transaction over the whole run, per unit of the resource (a core, the uplink).
    pub load_us_per_tx: f64,
}

/// What one run measured.
#[derive(Clone, Debug)]
pub struct RunStats {
    pub offered_tps: f64,
    /// The window's transactions that became final at their origin by the end of the run, per second of window:
    /// the offered rate, less what never became final.
    pub window_txs_final_tps: f64,
    /// Transactions (submitted whenever) that became final at their origin during the window, per second: the
    /// rate the network served while saturated (with a latency longer than the warm-up it undercounts, since the
    /// pipeline was still filling when the window opened).
    pub final_during_window_tps: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    /// Median latency of the window's first and last third (by submit time): a growing queue shows here.
    pub latency_first_third_ms: f64,
    pub latency_last_third_ms: f64,
    /// Share of the window's transactions not final when the run ended.
    pub unfinished_fraction: f64,
    pub resources: Vec<ResourceUse>,
    pub protocol: ProtocolCounts,
}

/// What the committee did in a run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProtocolCounts {
    /// Distinct blocks committed, and the transactions in them.
    pub blocks_committed: u64,
    pub txs_committed: u64,
    /// Committed transactions whose package's certificate was not attested (every executor verified them).
    pub txs_unattested: u64,
    /// Rounds member 0 reached, packages made (all members), and virtual time simulated.
    pub rounds: u64,
    pub packages: u64,
    pub simulated_ms: u64,
}

/// The window's transactions as they are submitted and become final.
pub struct Measurements {
    window: Window,
    submitted_window: u64,
    submitted_run: u64,
    final_window: u64,
    /// (final µs, count) of every transaction that became final, whenever submitted.
    finals: Vec<(u64, u32)>,
    /// (latency µs, count, submit µs) of the window's transactions that became final.
    latencies: Vec<(u64, u32, u64)>,
}

/// The p-quantile of weighted latency samples sorted by latency, over `total` transactions (those without a sample
/// never became final and count as infinitely late).
fn percentile_ms(samples: &[(u64, u32, u64)], total: u64, p: f64) -> f64 {
    let rank = ((total as f64 * p).ceil() as u64).max(1);
    let mut seen = 0u64;
    for &(latency_us, count, _) in samples {
        seen += u64::from(count);
        if seen >= rank {
            return latency_us as f64 / 1_000.0;
        }
    }
    f64::INFINITY
}

impl Measurements {
    pub fn new(window: Window) -> Measurements {
        Measurements {
            window,
            submitted_window: 0,
            submitted_run: 0,
            final_window: 0,
            finals: Vec::new(),
            latencies: Vec::new(),
        }
    }

    pub fn submitted(&mut self, submit_us: u64, count: u64) {
        self.submitted_run += count;
        if self.window.contains(submit_us) {
            self.submitted_window += count;
        }
    }

    /// `count` transactions submitted at `submit_us` are final at their origin at `now_us`.
    pub fn became_final(&mut self, submit_us: u64, count: u32, now_us: u64) {
        debug_assert!(now_us >= submit_us);
        self.finals.push((now_us, count));
        if self.window.contains(submit_us) {
            self.final_window += u64::from(count);
            // A transaction becomes final at its origin once: more finals than submissions is a model bug.
            assert!(
                self.final_window <= self.submitted_window,
                "more transactions final than submitted"
            );
            self.latencies.push((now_us - submit_us, count, submit_us));
        }
    }

    pub fn submitted_run(&self) -> u64 {
        self.submitted_run
    }

    /// Every transaction submitted in the window is final.
    pub fn all_final(&self) -> bool {
        self.final_window == self.submitted_window
    }

    pub fn into_stats(
        mut self,
        offered_tps: f64,
        resources: Vec<ResourceUse>,
        protocol: ProtocolCounts,
    ) -> RunStats {
        self.latencies.sort_unstable();
        let total = self.submitted_window;
        let third = self.window.length_us() / 3;
        let first_end = self.window.from_us + third;
        let last_start = self.window.to_us - third;
        let median_of = |keep: &dyn Fn(u64) -> bool| -> f64 {
            let samples: Vec<(u64, u32, u64)> = self
                .latencies
                .iter()
                .copied()
                .filter(|s| keep(s.2))
                .collect();
            let count: u64 = samples.iter().map(|s| u64::from(s.1)).sum();
            percentile_ms(&samples, count, 0.5)
        };
        let window_s = self.window.length_us() as f64 / 1e6;
        let final_during_window: u64 = self
            .finals
            .iter()
            .filter(|(at, _)| self.window.contains(*at))
            .map(|(_, count)| u64::from(*count))
            .sum();
        RunStats {
            offered_tps,
            window_txs_final_tps: self.final_window as f64 / window_s,
            final_during_window_tps: final_during_window as f64 / window_s,
            latency_p50_ms: percentile_ms(&self.latencies, total, 0.5),
            latency_p99_ms: percentile_ms(&self.latencies, total, 0.99),
            latency_first_third_ms: median_of(&|submit| submit < first_end),
            latency_last_third_ms: median_of(&|submit| submit >= last_start),
            unfinished_fraction: if total == 0 {
                0.0
            } else {
                (total - self.final_window) as f64 / total as f64
            },
            resources,
            protocol,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_weigh_cohorts_and_count_the_unfinished_as_late() {
        let samples = [(1_000, 98, 0), (5_000, 1, 0), (9_000, 1, 0)];
        assert_eq!(percentile_ms(&samples, 100, 0.5), 1.0);
        assert_eq!(percentile_ms(&samples, 100, 0.99), 5.0);
        assert_eq!(percentile_ms(&samples, 100, 1.0), 9.0);
        // Two more transactions were submitted and never became final.
        assert_eq!(percentile_ms(&samples, 102, 0.99), f64::INFINITY);
    }
}
