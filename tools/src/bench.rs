//! `cas bench`: the perf suite in one command. It runs (a) the micro summary, (b) the single-node durable pipeline,
//! (c) a sweep of real `cas local` clusters over node counts sized to this machine's cores, then (d) the scale model
//! (the consensus simulator with CPU and uplink costs) calibrated from (a) and (b), checked against (c) and projected
//! to the whitepaper's 3..999 nodes; and writes the report folder (report.md, report.json, SVG and PNG plots).
//! Every figure stands beside its limit or a peer from the same run; every projected row is labelled simulated.

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context, Result};
use cas_consensus::sim::scale::{
    project, project_saturated, ScaleParams, TOTAL_NODES_MAX, TOTAL_NODES_MIN, WHITEPAPER_ROWS,
};
use cas_node::config::PACKAGE_WAIT_MS_PER_MEMBER;
use cas_perf::pipeline::{self, UtxoOnly};
use cas_perf::report::{
    Machine, MeasuredRow, PipelineFigures, Report, SimulatedRow, Validation, WhitepaperRow,
};
use cas_perf::suite::{self, Budget, MicroSummary};

use crate::cluster::{self, ClusterArgs, ClusterReport};
use crate::peak::{self, PeakSearch};

#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// Shorter measurements and a sweep of at most 3 cluster sizes: under 5 minutes on 2 cores.
    #[arg(long)]
    pub quick: bool,
    /// The report folder.
    #[arg(long, default_value = "bench-report")]
    pub out: PathBuf,
    /// Node counts of the real cluster sweep, comma-separated (default: sized to the cores).
    #[arg(long, value_delimiter = ',')]
    pub nodes: Vec<usize>,
    /// Offered load of each cluster run, tx/s (default: 2,500 per core).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Load time of each cluster run, seconds (default: 8 quick, 20 full).
    #[arg(long)]
    pub duration_s: Option<u64>,
    /// Node counts the scale model projects, comma-separated (default: the whitepaper's 25, 3..999).
    #[arg(long, value_delimiter = ',')]
    pub project: Vec<usize>,
}

/// The node counts of the real sweep: committee sizes 3f+1 from 4 up to max(10, 2 x cores), at most 3 (quick) or 5
/// of them spread evenly, so a bigger machine runs bigger clusters with the same command.
pub fn sweep_nodes(cores: usize, quick: bool) -> Vec<usize> {
    let f_max = ((10.max(2 * cores) - 1) / 3).max(1);
    let points = if quick { 3 } else { 5 }.min(f_max);
    let mut nodes: Vec<usize> = (0..points)
        .map(|i| {
            let f = if points == 1 {
                1
            } else {
                1 + i * (f_max - 1) / (points - 1)
            };
            3 * f + 1
        })
        .collect();
    nodes.dedup();
    nodes
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let started = Instant::now();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let nodes = if args.nodes.is_empty() {
        sweep_nodes(cores, args.quick)
    } else {
        args.nodes.clone()
    };
    ensure!(
        nodes.iter().all(|n| *n >= 1),
        "node counts must be positive"
    );
    let rate = args.rate.unwrap_or(2_500 * cores as u64);
    let duration_s = args.duration_s.unwrap_or(if args.quick { 8 } else { 20 });
    let phase = |name: &str| eprintln!("[{:>5.1} s] {name}", started.elapsed().as_secs_f64());
    eprintln!(
        "cas bench{}: {cores} cores; cluster sweep over {nodes:?} nodes {} for {duration_s} s each; report in {}",
        if args.quick { " --quick" } else { "" },
        if args.rate.is_some() {
            format!("at {rate} tx/s")
        } else {
            format!("(each a peak search from {rate} tx/s, steps of")
        },
        args.out.display()
    );

    phase("(a) micro summary");
    let budget = if args.quick {
        Budget::quick()
    } else {
        Budget::full()
    };
    let micro = suite::micro(budget, |name| phase(&format!("(a) {name}")));

    phase("(b) single-node durable pipeline: signing the load");
    let (accounts, blocks) = if args.quick {
        (10_000, 6)
    } else {
        (10_000, 10)
    };
    let pipeline = measure_pipeline(accounts, blocks, cores, &phase);

    let mut measured = Vec::new();
    let mut cluster_reports = Vec::new();
    for &n in &nodes {
        phase(&format!("(c) cluster of {n} nodes"));
        let cluster_args = ClusterArgs {
            nodes: n,
            followers: 0,
            duration_s,
            rate: Some(rate),
            find_peak: false,
            accounts: rate.max(10_000) as u32,
            invalid_every: 100,
            workload: crate::load::Workload::Chain,
            dir: None,
            kill_one: false,
            kill_every_s: None,
            upgrade_drill: false,
            flood_rate: None,
            flood_accounts: 10_000,
            mining_threads: 0,
            witness_span: cas_engine::genesis::DEFAULT_WITNESS_SPAN,
            epoch_blocks: 0,
            absence_limit: cas_engine::genesis::DEFAULT_ABSENCE_LIMIT,
            blacklist_blocks: cas_engine::genesis::DEFAULT_BLACKLIST_BLOCKS,
            hand_over: false,
            transparent_huge_pages: false,
            business: false,
            compare_mining: false,
            serve: false,
            via_http: false,
            http_workers: 32,
            wait_final: false,
            netns: false,
            link_delay_ms: 0,
            link_jitter_ms: 0,
            link_loss_pct: 0.0,
            link_mbit: 0,
            compare_http: false,
            blocks_kept: cas_consensus::bft::BftConfig::default().blocks_kept,
            snapshot_every: 500,
            snapshot_sync_gap: 1_000,
            restart_behind_blocks: 0,
            empty_block_wait_ms: 100,
            proposal_wait_ms: None,
            package_wait_ms: None,
            round_timeout_ms: 1_000,
            load_connections: 1,
            load_tick_ms: crate::load::LOAD_TICK_MS_DEFAULT,
            load_window: crate::load::LOAD_WINDOW_DEFAULT,
        };
        // A given --rate measures that rate; otherwise each size's row is its peak (the search of `cas local
        // --find-peak`, from the default rate), so the rows show capacity, not what was offered.
        let report = if args.rate.is_some() {
            cluster::measure(&cluster_args)
        } else {
            let search = PeakSearch {
                start_rate: rate,
                growth: 1.5,
                refinements: if args.quick { 1 } else { 2 },
                step_s: duration_s,
                steps_max: None,
            };
            let base = pipeline::temp_dir(&format!("peak-{n}"));
            peak::search(&cluster_args, &search, base).and_then(|outcome| {
                peak::print(&outcome);
                outcome
                    .peak
                    .context("not even the first rate of the peak search held")
            })
        }
        .with_context(|| format!("the cluster of {n} nodes"))?;
        measured.push(measured_row(&report));
        cluster_reports.push(report);
    }

    phase("(d) scale model: calibrating, validating against the sweep, projecting 3..999 nodes");
    let base = Calibration::new(&micro, &pipeline, cores);
    // The same model charged, per transaction and node, the CPU the smallest measured cluster's node processes
    // spent beyond the signatures and execution the model already counts (QUIC, the driver, messages, the store).
    let with_overhead = cluster_reports
        .first()
        .and_then(|report| base.with_node_overhead(report));
    let models: Vec<&Calibration> = std::iter::once(&base).chain(&with_overhead).collect();
    let validation: Vec<Validation> = models
        .iter()
        .flat_map(|model| cluster_reports.iter().map(|report| model.validate(report)))
        .collect();
    let projected: Vec<usize> = if args.project.is_empty() {
        WHITEPAPER_ROWS.iter().map(|row| row.0).collect()
    } else {
        args.project.clone()
    };
    ensure!(
        projected
            .iter()
            .all(|n| (TOTAL_NODES_MIN..=TOTAL_NODES_MAX).contains(n)),
        "projected node counts must be within {TOTAL_NODES_MIN}..={TOTAL_NODES_MAX}"
    );
    let mut simulated: Vec<SimulatedRow> = Vec::new();
    for model in &models {
        for &n in &projected {
            let result = project_saturated(&model.lan(n));
            phase(&format!(
                "(d) {n} nodes (simulated, {}): {:.0} TPS, p50 {:.0} ms, bound by {}",
                model.name, result.tps, result.latency_p50_ms, result.bottleneck
            ));
            simulated.push(SimulatedRow {
                nodes: n,
                model: model.name.clone(),
                committee: result.committee,
                tps: result.tps,
                p50_ms: result.latency_p50_ms,
                p99_ms: result.latency_p99_ms,
                bottleneck: format!("{} ({})", result.bottleneck, result.bottleneck_tier),
            });
        }
    }

    let report = Report {
        machine: Machine {
            cores,
            cpu_model: cpu_model(),
            quick: args.quick,
            written_unix_s: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            wall_s: started.elapsed().as_secs_f64(),
        },
        micro,
        pipeline,
        measured,
        simulated,
        validation,
        whitepaper: WHITEPAPER_ROWS
            .iter()
            .map(|&(nodes, tps, latency_s)| WhitepaperRow {
                nodes,
                tps,
                latency_s,
            })
            .collect(),
        model_parameters: base
            .describe()
            .into_iter()
            .chain(with_overhead.iter().map(|model| {
                format!(
                    "\"{}\": {:.2} us of CPU per tx and node on top (measured: the node processes' CPU seconds \
                     during the load / nodes / executed txs, less what the model already charges)",
                    model.name, model.node_overhead_us_per_tx
                )
            }))
            .collect(),
    };
    let files = report.write(&args.out)?;
    println!("{}", report.markdown());
    phase("done");
    for file in files {
        println!("wrote {}", file.display());
    }
    Ok(())
}

fn measure_pipeline(
    accounts: u32,
    blocks: u64,
    cores: usize,
    phase: &impl Fn(&str),
) -> PipelineFigures {
    let load = pipeline::load(accounts, blocks, cores);
    phase("(b) UTXO check + commit, signatures attested");
    let mut utxo_only: Vec<UtxoOnly> = vec![pipeline::utxo_only(&load, 1)];
    if cores > 1 {
        utxo_only.push(pipeline::utxo_only(&load, cores));
    }
    phase("(b) durable pipeline beside the verification limit of the same cores");
    let before = pipeline::verification_limit(&load, cores);
    let durable = pipeline::durable(&load, cores);
    let after = pipeline::verification_limit(&load, cores);
    PipelineFigures {
        accounts,
        blocks,
        utxo_only,
        durable,
        verify_limit_sig_s: before.max(after),
    }
}

fn measured_row(report: &ClusterReport) -> MeasuredRow {
    MeasuredRow {
        nodes: report.nodes,
        offered_tps: report.load.offered_rate_per_s as f64,
        tps: report.load.committed_tps,
        p50_ms: report.load.latency_p50_ms,
        p99_ms: report.load.latency_p99_ms,
        cpu_limit_tps: report.cpu_limit_tps,
        rejected: report.load.rejected_at_admission + report.load.rejected_in_block,
        commitments_equal: report.commitments_equal,
    }
}

/// The node's packaging (a package closes at `PACKAGE_TXS_MAX` transactions, as tools/src/cluster.rs configures,
/// or after the node's default wait, `PACKAGE_WAIT_MS_PER_MEMBER` per committee member): the model packs the same way.
const PACKAGE_TXS_MAX: usize = 2_000;
/// The model's validation runs: virtual seconds of load, the first of them not measured.
const VALIDATION_DURATION_MS: u64 = 3_000;
const VALIDATION_WARMUP_MS: u64 = 1_000;

/// The scale model's CPU costs, from this run's measurements.
#[derive(Clone)]
struct Calibration {
    /// How the report labels this model's rows.
    name: String,
    cores: usize,
    verify_us_per_signature: f64,
    execute_us_per_tx: f64,
    /// CPU per transaction and node beyond signatures and execution, measured on a real cluster (0: not charged).
    node_overhead_us_per_tx: f64,
    tx_bytes: usize,
}

/// Loopback: the sweep's nodes talk over 127.0.0.1.
const LOOPBACK_ONE_WAY_US: u64 = 50;
const LOOPBACK_BYTES_PER_S: u64 = 2_000_000_000;

impl Calibration {
    fn new(micro: &MicroSummary, pipeline: &PipelineFigures, cores: usize) -> Calibration {
        let verify_us_per_signature = 1e6 / micro.verify_batched_per_core_s;
        // Execution without signatures on one shard (tx ids, rules, commit, commitment), per CPU-second of the whole
        // process: CPU time, unlike wall time, does not grow when other work shares the cores.
        let execute_us_per_tx = 1e6 / pipeline.utxo_only[0].tx_per_cpu_s;
        Calibration {
            name: "signatures + execution".into(),
            cores,
            verify_us_per_signature,
            execute_us_per_tx,
            node_overhead_us_per_tx: 0.0,
            tx_bytes: cas_engine::codec::encode_tx(&cas_perf::transfers(1).1[0]).len(),
        }
    }

    /// This model plus the CPU a measured cluster's nodes spent per transaction beyond what the model counts:
    /// (node CPU seconds during the load / nodes / executed transactions) - (signatures checked per transaction and
    /// node x CPU per signature + CPU per execution). None without a CPU measurement or an executed transaction.
    fn with_node_overhead(&self, report: &ClusterReport) -> Option<Calibration> {
        let executed = (report.load.final_accepted + report.load.rejected_in_block) as f64;
        let cpu_s = report.nodes_cpu_s?;
        if executed < 1.0 {
            return None;
        }
        let nodes = report.nodes as f64;
        let measured_us = cpu_s * 1e6 / nodes / executed;
        let f = (report.nodes - 1) / 3;
        let modeled_us =
            (1 + f) as f64 / nodes * self.verify_us_per_signature + self.execute_us_per_tx;
        Some(Calibration {
            name: format!("+ node overhead measured at {} nodes", report.nodes),
            node_overhead_us_per_tx: (measured_us - modeled_us).max(0.0),
            ..self.clone()
        })
    }

    /// Each node on its own machine like this one, on a LAN (the model's stated link defaults), packing as our
    /// node does.
    fn lan(&self, total_nodes: usize) -> ScaleParams {
        let lan = ScaleParams::lan_default(total_nodes);
        let members = cas_consensus::sim::scale::committee_size(total_nodes, lan.committee_max);
        ScaleParams {
            cores_per_node: self.cores,
            verify_us_per_signature: self.verify_us_per_signature,
            execute_us_per_tx: self.execute_us_per_tx + self.node_overhead_us_per_tx,
            tx_bytes: self.tx_bytes,
            package_wait_ms: PACKAGE_WAIT_MS_PER_MEMBER * members as u64,
            package_txs_max: PACKAGE_TXS_MAX,
            ..lan
        }
    }

    /// The model at a measured run's configuration: its nodes (all in the committee), its offered rate, loopback
    /// links, and all nodes sharing this machine's cores. The model gives each node whole cores, so sharing is
    /// modeled as one core per node with every CPU cost scaled by nodes / cores (each node's fair share).
    fn validate(&self, report: &ClusterReport) -> Validation {
        let share = report.nodes as f64 / self.cores as f64;
        let params = ScaleParams {
            committee_max: report.nodes,
            cores_per_node: 1,
            verify_us_per_signature: self.verify_us_per_signature * share,
            execute_us_per_tx: (self.execute_us_per_tx + self.node_overhead_us_per_tx) * share,
            one_way_latency_us: LOOPBACK_ONE_WAY_US,
            bandwidth_bytes_per_s: LOOPBACK_BYTES_PER_S,
            offered_tps: report.load.offered_rate_per_s as f64,
            duration_ms: VALIDATION_DURATION_MS,
            warmup_ms: VALIDATION_WARMUP_MS,
            ..self.lan(report.nodes)
        };
        let result = project(&params);
        Validation {
            nodes: report.nodes,
            model: self.name.clone(),
            measured_tps: report.load.committed_tps,
            simulated_tps: result.tps,
            measured_p50_ms: report.load.latency_p50_ms,
            simulated_p50_ms: result.latency_p50_ms,
        }
    }

    fn describe(&self) -> Vec<String> {
        let lan = ScaleParams::lan_default(3);
        vec![
            format!(
                "CPU per signature {:.2} us (measured: 1 / batched verifications per core)",
                self.verify_us_per_signature
            ),
            format!(
                "CPU per tx beyond its signature {:.2} us (measured: 1 / UTXO check + commit per CPU-second, 1 shard)",
                self.execute_us_per_tx
            ),
            format!("cores per node {} (this machine's, each projected node on its own machine)", self.cores),
            format!("tx size {} bytes (an encoded one-input, two-output transfer)", self.tx_bytes),
            format!(
                "projection links: one-way latency {} us, uplink {} MB/s per node (assumed LAN defaults)",
                lan.one_way_latency_us,
                lan.bandwidth_bytes_per_s / 1_000_000
            ),
            format!(
                "committee (DPOS) at most {} (3f+1 members), relay fan-out {} (assumed defaults)",
                lan.committee_max, lan.relay_fanout
            ),
            format!(
                "packaging every {PACKAGE_WAIT_MS_PER_MEMBER} ms per committee member or {PACKAGE_TXS_MAX} transactions \
                 (the node's configuration)"
            ),
            format!(
                "validation: loopback links (one-way {LOOPBACK_ONE_WAY_US} us, {} MB/s), each node one core with CPU \
                 costs x nodes / cores (the nodes share this machine), {} s of load at the measured offered rate",
                LOOPBACK_BYTES_PER_S / 1_000_000,
                VALIDATION_DURATION_MS / 1_000
            ),
            "not modeled: disk, signing, forwarding CPU, QUIC and the node's own overheads, faults (see \
             consensus/src/sim/scale.rs)"
                .to_string(),
        ]
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

#[cfg(test)]
mod tests {
    use super::sweep_nodes;

    #[test]
    fn sweep_is_sized_to_the_cores() {
        assert_eq!(sweep_nodes(2, true), vec![4, 7, 10]);
        assert_eq!(sweep_nodes(2, false), vec![4, 7, 10]);
        let big = sweep_nodes(16, false);
        assert_eq!(big.first(), Some(&4));
        assert_eq!(big.last(), Some(&31));
        assert_eq!(big.len(), 5);
        assert!(big.iter().all(|n| n % 3 == 1));
    }
}
