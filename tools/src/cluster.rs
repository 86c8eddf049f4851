//! `cas local`: a real cluster on this machine. It makes node keys, a genesis with funded accounts and the
//! committee, configs on loopback ports; starts N `cas node` processes; drives them with the load generator for a
//! set time; then stops them gracefully and prints the whitepaper-style table (nodes, offered rate, committed TPS,
//! p50/p99 submit-to-final latency, blocks, rejected) and whether every node ends with the same UTXO commitment,
//! and writes the same as JSON.

use std::collections::BTreeMap;
use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use cas_engine::codec::encode_block;
use cas_engine::fixtures::{key, ACCOUNT_KEYS};
use cas_engine::genesis::{
    genesis_block, genesis_outputs, AllocationSpec, GenesisSpec, MemberSpec, ParamsSpec,
};
use cas_engine::PublicKey;
use serde::Serialize;

use crate::load::{LoadReport, PROGRESS_PREFIX};
use crate::peak::{self, PeakSearch};
use cas_node::config::{NodeConfig, PeerConfig};
use cas_node::keyfile;
use cas_node::Status;

pub const CHAIN_ID: u32 = 1;

#[derive(clap::Args, Clone, Debug)]
pub struct ClusterArgs {
    /// Committee nodes, each its own process.
    #[arg(long, default_value_t = 4)]
    pub nodes: usize,
    /// Follower nodes (keys outside the committee), each its own process: they follow the committee's certified
    /// ledger over the broadcast tree (the first `--nodes` of them as the POS tier, children of the members; the
    /// rest below them) and serve the client API; the report gives their CPU and checks their commitment too.
    #[arg(long, default_value_t = 0)]
    pub followers: usize,
    /// How long the load runs.
    #[arg(long, default_value_t = 20)]
    pub duration_s: u64,
    /// Offered load, transactions per second (open loop) [default: 1500, and the run ends with a short peak
    /// search; with --find-peak: the search's first rate].
    #[arg(long)]
    pub rate: Option<u64>,
    /// Step the offered rate up from --rate (--duration-s per step) until committed TPS falls below 95% of the
    /// offered rate or p99 passes 1 s, then bisect twice; print every step and the peak row.
    #[arg(long)]
    pub find_peak: bool,
    /// Funded accounts; each runs a chain of dependent transfers.
    #[arg(long, default_value_t = 1_500)]
    pub accounts: u32,
    /// Add one invalid transaction in every N valid ones, at a drawn place among them (0: none).
    #[arg(long, default_value_t = 100)]
    pub invalid_every: usize,
    /// What accounts do with the coins they are paid: `chain` never spends them (every node's set grows an output
    /// per transfer: memory grows with the run), `circulate` spends each 10 s of schedule later (the set stays the
    /// same size, for long runs).
    #[arg(long, value_enum, default_value_t = crate::load::Workload::Chain)]
    pub workload: crate::load::Workload,
    /// Where keys, configs, data and logs go (default: a new folder under the system's temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Fault drill: SIGKILL the last node a third of the way into the load and restart it at two thirds; it must
    /// catch up and end with the same commitment. The load goes to the other nodes.
    #[arg(long)]
    pub kill_one: bool,
    /// SIGKILL storm: every this many seconds of the load, SIGKILL a random node other than node 0 (which alone
    /// takes the load) and restart it half an interval later; report the longest gap between committed blocks.
    #[arg(long, conflicts_with = "kill_one")]
    pub kill_every_s: Option<f64>,
    /// Rolling-upgrade drill: every node in turn (node 0 too) is stopped with SIGTERM and started again with an
    /// upgrade to this binary's newest protocol version scheduled at one height after the last restart; every node
    /// must switch there, nothing may be lost, and the longest gap between committed blocks is reported. Needs
    /// --via-http: the HTTP load moves to another node while one restarts.
    #[arg(long, requires = "via_http", conflicts_with_all = ["kill_one", "kill_every_s", "serve", "compare_http", "compare_mining", "find_peak"])]
    pub upgrade_drill: bool,
    /// Flood drill: besides the load, one hostile client sends this many valid transactions per second to node 0
    /// on its own connection and ignores `Overloaded`; report what the honest load kept of its rate.
    #[arg(long)]
    pub flood_rate: Option<u64>,
    /// Funded accounts of the flooder (its own, apart from the load's).
    #[arg(long, default_value_t = 10_000)]
    pub flood_accounts: u32,
    /// Witness mining threads per node (at the lowest scheduling priority; 0: no mining).
    #[arg(long, default_value_t = 0)]
    pub mining_threads: usize,
    /// DPOS blocks per witness, written into the genesis (a chain parameter).
    #[arg(long, default_value_t = cas_engine::genesis::DEFAULT_WITNESS_SPAN)]
    pub witness_span: u32,
    /// Blocks per election epoch, written into the genesis (0: no elections; else at least 8). The ledger records
    /// each next committee at the middle of the epoch before (`GET /v1/stake` shows it); with --hand-over it
    /// takes over at the epoch's start.
    #[arg(long, default_value_t = 0)]
    pub epoch_blocks: u64,
    /// Certificates in a row a member may miss before it is blacklisted, written into the genesis (0: never).
    #[arg(long, default_value_t = cas_engine::genesis::DEFAULT_ABSENCE_LIMIT)]
    pub absence_limit: u32,
    /// Blocks a blacklist withholds a member's rewards for; the second blacklist in a row evicts it (no election
    /// picks it again), written into the genesis.
    #[arg(long, default_value_t = cas_engine::genesis::DEFAULT_BLACKLIST_BLOCKS)]
    pub blacklist_blocks: u64,
    /// Schedule protocol version 3 from height 1 on every node: each epoch's elected committee runs its own BFT
    /// instance (needs --epoch-blocks). This build hands over only among the running members (docs/dpos.md).
    #[arg(long)]
    pub hand_over: bool,
    /// Let the nodes' allocator use transparent huge pages (node.toml `transparent_huge_pages`; off by default, see
    /// cas_node::memory): for comparing the two in one build.
    #[arg(long)]
    pub transparent_huge_pages: bool,
    /// Schedule protocol version 4 from height 1 on every node: business transactions (tokens, orders, contracts)
    /// are admitted (with --hand-over too: version 4 includes version 3's hand-overs).
    #[arg(long)]
    pub business: bool,
    /// With --kill-one: restart the killed node once every other node's height is this many blocks past the
    /// killed node's last reported height (instead of at two thirds of the run), waiting after the load if needed
    /// (0: at two thirds). Puts the node beyond its peers' in-memory block window on purpose.
    #[arg(long, default_value_t = 0)]
    pub restart_behind_blocks: u64,
    /// The first timeout of a BFT round (a round led by a stopped node costs this much).
    #[arg(long, default_value_t = 1_000)]
    pub round_timeout_ms: u64,
    /// A leader with no payload waits this long before proposing an empty block (0: at once, so an idle chain
    /// grows as fast as rounds complete; used to build long chains for catch-up measurements).
    #[arg(long, default_value_t = 100)]
    pub empty_block_wait_ms: u64,
    /// A leader with some new payload but less than a package per member waits up to this long for more
    /// (node.toml `proposal_wait_ms`) [default: 10 ms per committee member]
    #[arg(long)]
    pub proposal_wait_ms: Option<u64>,
    /// A node forms a package of the transactions it admitted once it holds `package_txs_max` or its oldest has
    /// waited this long (node.toml `package_wait_ms`): longer makes fewer, fuller packages at low per-node rates
    /// [default: 5 ms per committee member]
    #[arg(long)]
    pub package_wait_ms: Option<u64>,
    /// Committed consensus blocks each node keeps in memory for peers catching up block by block.
    #[arg(long, default_value_t = cas_consensus::bft::BftConfig::default().blocks_kept)]
    pub blocks_kept: u64,
    /// Blocks between UTXO snapshots on each node.
    #[arg(long, default_value_t = 500)]
    pub snapshot_every: u64,
    /// How far behind (in blocks) a node fetches a snapshot instead of blocks.
    #[arg(long, default_value_t = 1_000)]
    pub snapshot_sync_gap: u64,
    /// Client connections the load generator opens per node.
    #[arg(long, default_value_t = 1)]
    pub load_connections: usize,
    /// Milliseconds between the load generator's bursts (`cas load --tick-ms`).
    #[arg(long, default_value_t = crate::load::LOAD_TICK_MS_DEFAULT)]
    pub load_tick_ms: u64,
    /// Submissions each load connection may have unanswered (`cas load --window`).
    #[arg(long, default_value_t = crate::load::LOAD_WINDOW_DEFAULT)]
    pub load_window: usize,
    /// No load: start the cluster and hold it for driving its HTTP APIs by hand or from a script (cluster.json in
    /// the folder says where everything is), restarting a node that dies, until SIGINT, SIGTERM or a `stop` file.
    #[arg(long, conflicts_with_all = ["find_peak", "kill_one", "kill_every_s", "compare_mining"])]
    pub serve: bool,
    /// Submit the load through the nodes' HTTP API (`cas load --api`) instead of the QUIC ingest endpoint.
    #[arg(long)]
    pub via_http: bool,
    /// With --via-http: worker threads per node, each posting its accounts' transfers in order.
    #[arg(long, default_value_t = 32)]
    pub http_workers: usize,
    /// With --via-http (or --compare-http): every post holds until final (`?wait=final`), and latency is measured
    /// from the post to its HTTP answer.
    #[arg(long)]
    pub wait_final: bool,
    /// Run the same cluster and load twice, through QUIC then through the HTTP API, and print both with the ratio
    /// of node CPU per committed transaction.
    #[arg(long, conflicts_with_all = ["compare_mining", "find_peak", "via_http"])]
    pub compare_http: bool,
    /// Run the cluster twice, mining off then on (`--mining-threads`, at least 1), and print the TPS ratio.
    #[arg(long)]
    pub compare_mining: bool,
    /// Run every node in a network namespace of its own on a bridge (veth + iproute2; needs root), the load
    /// generator in another: real interfaces instead of one loopback.
    #[arg(long, conflicts_with_all = ["serve", "compare_http", "compare_mining", "kill_one", "kill_every_s", "flood_rate", "find_peak"])]
    pub netns: bool,
    /// With --netns: one-way delay on every committee link, each direction, ms (a UDP relay per link: the
    /// kernels here have no netem).
    #[arg(long, default_value_t = 0, requires = "netns")]
    pub link_delay_ms: u64,
    /// With --netns: jitter around that delay, +/- ms (uniform).
    #[arg(long, default_value_t = 0, requires = "netns")]
    pub link_jitter_ms: u64,
    /// With --netns: datagrams lost on every committee link, each direction, percent.
    #[arg(long, default_value_t = 0.0, requires = "netns")]
    pub link_loss_pct: f64,
    /// With --netns: every node's egress bandwidth, Mbit/s (tc tbf on its interface; 0: unshaped).
    #[arg(long, default_value_t = 0, requires = "netns")]
    pub link_mbit: u64,
}

/// Ports every node uses on its own address in namespaces: committee, ingest, HTTP API, operator.
const NETNS_PORTS: [u16; 4] = [7000, 7001, 8080, 9100];

/// What one cluster run measured (also written as `report.json` in its folder).
#[derive(Clone, Debug, Serialize)]
pub struct ClusterReport {
    pub nodes: usize,
    pub cores: usize,
    pub shards_per_node: usize,
    pub verifications_per_core_s: f64,
    pub verifications_per_tx: u64,
    pub cpu_limit_tps: f64,
    pub load: LoadReport,
    pub blocks: u64,
    pub commitments_equal: bool,
    pub statuses: Vec<Status>,
    /// CPU seconds all node processes used while the load ran (None in the kill drill, where one was replaced).
    pub nodes_cpu_s: Option<f64>,
    /// The same per committed transaction, in microseconds.
    pub node_cpu_us_per_tx: Option<f64>,
    /// The same by thread role ([`THREAD_ROLES`]), summing to it.
    pub node_cpu_by_thread_us_per_tx: Option<BTreeMap<String, f64>>,
    /// Followers, and the CPU each spent per committed tx, on average.
    pub followers: usize,
    pub followers_cpu_us_per_tx: Option<f64>,
    /// Nodes SIGKILLed by the storm (`--kill-every-s`).
    pub kills: u64,
    /// The longest gap between consecutive committed blocks while the load ran (node 0's stored blocks), in the
    /// storm; with the height that ended it.
    pub longest_block_gap_ms: Option<(u64, u64)>,
    /// The rolling-upgrade drill's (`--upgrade-drill`).
    pub upgrade: Option<crate::upgrade::UpgradeReport>,
    /// The flooder's own report (`--flood-rate`).
    pub flood: Option<LoadReport>,
    /// Each node's largest resident memory seen while the load ran (sampled every second), in MiB.
    pub nodes_rss_max_mib: Vec<f64>,
}

/// Kills every node still running when dropped (an error path must not leave processes behind); then the network
/// namespaces they ran in, if any, go (the field drops after [`Drop::drop`]).
pub struct Nodes(pub Vec<Child>, pub Option<crate::netns::Network>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_tcp_ports(count: usize) -> Result<Vec<u16>> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    Ok(listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?)
}

fn free_ports(count: usize) -> Result<Vec<u16>> {
    let sockets: Vec<UdpSocket> = (0..count)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    Ok(sockets
        .iter()
        .map(|s| s.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?)
}

/// The offered rate of a plain `cas local`.
pub const DEFAULT_RATE: u64 = 1_500;
/// Seconds per step of the short peak search that ends a plain `cas local`.
const SHORT_SEARCH_STEP_S: u64 = 5;
/// Steps of that search (a failed step's confirmation counts, and may run one past): up three times and one
/// bisection, a rough peak in one to two minutes, `--find-peak` for a precise one.
const SHORT_SEARCH_STEPS: usize = 5;
/// Where that search starts, per core: 15,000 tx/s on 2 cores, so its steps (x1.5) reach past the 4-node peak of
/// the development VM (30,437 TPS at 30,937 offered, perf/README.md, 2026-12-07).
const SHORT_SEARCH_START_PER_CORE: u64 = 7_500;

impl ClusterArgs {
    /// Every node's protocol schedule: from height 1, version 4 with --business, 3 with --hand-over; none otherwise.
    fn protocol_upgrades(&self) -> Vec<cas_node::config::ProtocolUpgradeConfig> {
        use cas_consensus::protocol::{PROTOCOL_BUSINESS, PROTOCOL_HANDOVERS};
        let version = match (self.business, self.hand_over) {
            (true, _) => PROTOCOL_BUSINESS,
            (false, true) => PROTOCOL_HANDOVERS,
            (false, false) => return Vec::new(),
        };
        vec![cas_node::config::ProtocolUpgradeConfig { version, height: 1 }]
    }

    pub fn rate(&self) -> u64 {
        self.rate.unwrap_or(DEFAULT_RATE)
    }

    pub fn base_dir(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("cas-local-{}", std::process::id()))
        })
    }
}

pub fn run(args: &ClusterArgs) -> Result<()> {
    if args.serve {
        return crate::serve::serve(args);
    }
    if args.compare_mining {
        return crate::mining_compare::compare(args);
    }
    if args.compare_http {
        return crate::mining_compare::compare_http(args);
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as u64;
    let search = if args.find_peak {
        PeakSearch {
            start_rate: args.rate.unwrap_or(2_500 * cores),
            growth: 1.5,
            refinements: 2,
            step_s: args.duration_s,
            steps_max: None,
        }
    } else {
        measure(args)?;
        // A plain run (no rate given, no drill) ends with a short search, so a newcomer sees what the machine can
        // do, not only the small default rate.
        if args.rate.is_some()
            || args.kill_one
            || args.kill_every_s.is_some()
            || args.upgrade_drill
            || args.netns
        {
            return Ok(());
        }
        PeakSearch {
            start_rate: SHORT_SEARCH_START_PER_CORE * cores,
            growth: 1.5,
            refinements: 1,
            step_s: SHORT_SEARCH_STEP_S,
            steps_max: Some(SHORT_SEARCH_STEPS),
        }
    };
    let base = args.base_dir();
    let outcome = peak::search(args, &search, base.clone())?;
    peak::print(&outcome);
    let path = base.join("peak.json");
    fs::write(&path, serde_json::to_vec_pretty(&outcome)?)?;
    println!("peak report: {}", path.display());
    Ok(())
}

/// Runs the cluster, prints its table, writes `report.json`, and returns the report; an error if any transaction got
/// a wrong answer or the nodes ended with different commitments.
pub fn measure(args: &ClusterArgs) -> Result<ClusterReport> {
    ensure!(
        args.nodes >= 1 && args.accounts > 0 && args.rate() > 0,
        "nodes, accounts and rate must be positive"
    );
    ensure!(
        args.kill_every_s.is_none_or(|every| every >= 0.5 && args.nodes >= 4),
        "the storm needs at least 4 nodes (one down at a time of at least 4) and at least 0.5 s between kills"
    );
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let dir = args.base_dir();
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Shards per node so the CPU-bound threads (a driver and the shards per node) add up to about the cores.
    let shards_per_node = (cores / args.nodes).max(1);
    // A node's one shard runs on its execution thread (cas_node::config::NodeConfig::shards).
    let shards_run = match shards_per_node {
        1 => "1 shard on its execution thread".to_string(),
        n => format!("{n} shard executors"),
    };
    println!(
        "cas local: {} nodes on {cores} cores in {}; each node runs 1 consensus driver, {shards_run} and netio, \
         unpinned ({} CPU-bound threads over {cores} cores)",
        args.nodes,
        dir.display(),
        args.nodes * (1 + shards_per_node)
    );

    let Started {
        genesis_path,
        mut children,
        targets,
        targets_all: _,
        apis,
        follower_apis,
        operators: _,
        verifications_per_core_s,
        verifications_per_tx,
        cpu_limit_tps,
    } = start_cluster(args, &dir, shards_per_node, cores)?;

    if !follower_apis.is_empty() {
        println!(
            "cas local: {} followers (nodes {}..{}) follow the committee's certified ledger over the broadcast tree; \
             their HTTP APIs: {}",
            follower_apis.len(),
            args.nodes,
            args.nodes + follower_apis.len() - 1,
            follower_apis
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    // CPU of the node processes while the load runs: what the nodes themselves spend per transaction. The members'
    // and the followers' apart.
    let nodes_cpu = |children: &Nodes| -> Option<f64> { processes_cpu(&children.0[..args.nodes]) };
    let followers_cpu =
        |children: &Nodes| -> Option<f64> { processes_cpu(&children.0[args.nodes..]) };
    // The flooder signs its transactions first, then floods from before the load starts until after it ends.
    let mut flood = match args.flood_rate {
        Some(rate) => {
            let flooder = start_load(
                args,
                &dir,
                &genesis_path,
                Via::Quic(&targets[..1]),
                Some(rate),
            )?;
            wait_for_flood(&dir)?;
            Some(flooder)
        }
        None => None,
    };
    let via = if args.via_http {
        Via::Http(&apis)
    } else {
        Via::Quic(&targets)
    };
    let mut load = start_load(args, &dir, &genesis_path, via, None)?;
    let (progress_tx, progress_rx) = std::sync::mpsc::channel();
    let stderr = load.0[0].stderr.take().expect("the load's stderr is piped");
    std::thread::spawn(move || forward_load_progress(stderr, progress_tx));
    // The load signs everything first; the clock, and the nodes' CPU, start with its first submission.
    let Ok(first) = progress_rx.recv() else {
        let status = load.0[0].wait()?;
        bail!(
            "the load generator exited with {status} before sending anything; see its output above"
        );
    };
    let cpu_before = nodes_cpu(&children);
    let threads_before = threads_cpu(&children.0[..args.nodes]);
    let followers_cpu_before = followers_cpu(&children);
    let started = Instant::now();
    let started_wall_ms = wall_ms();
    let mut storm = args.kill_every_s.map(|every| {
        crate::storm::Storm::new(every, args.duration_s as f64, args.nodes, wall_ms())
    });
    let mut upgrade = args
        .upgrade_drill
        .then(|| crate::upgrade::UpgradeDrill::new(&dir, args.nodes, args.duration_s as f64));
    let mut rss_max_mib = vec![0f64; args.nodes + args.followers];
    let mut rss_sampled = Instant::now() - Duration::from_secs(1);
    let mut last_shown = Instant::now();
    let victim = args.nodes - 1;
    let (kill_at, restart_at) = (
        args.duration_s as f64 / 3.0,
        args.duration_s as f64 * 2.0 / 3.0,
    );
    let mut killed = false;
    let mut restarted = false;
    let mut drill_error = None;
    // A height the victim had not passed when it was killed: the others' highest, read once their status files
    // (written every second) are newer than the kill. They must pass it by `restart_behind_blocks`.
    let mut killed_at = Instant::now();
    let mut killed_height: Option<u64> = None;
    let heights = |dir: &Path| -> Vec<u64> {
        (0..args.nodes)
            .filter(|i| *i != victim)
            .map(|i| read_status(&dir.join(format!("node{i}/status.json"))).map_or(0, |s| s.height))
            .collect()
    };
    let restart_due = |elapsed: f64, killed_at: Instant, killed_height: &mut Option<u64>| -> bool {
        if args.restart_behind_blocks == 0 {
            return elapsed >= restart_at;
        }
        if killed_height.is_none() && killed_at.elapsed() >= Duration::from_millis(1_500) {
            *killed_height = heights(&dir).into_iter().max();
        }
        killed_height.is_some_and(|killed| {
            heights(&dir)
                .iter()
                .all(|h| *h >= killed + args.restart_behind_blocks)
        })
    };
    let mut progress = |sent: usize, total: usize| {
        let elapsed = started.elapsed().as_secs_f64();
        if args.kill_one && !killed && elapsed >= kill_at {
            eprintln!("  {elapsed:>5.1} s  SIGKILL node {victim}");
            let _ = children.0[victim].kill();
            let _ = children.0[victim].wait();
            killed_at = Instant::now();
            killed = true;
        }
        if args.kill_one
            && killed
            && !restarted
            && restart_due(elapsed, killed_at, &mut killed_height)
            && children.0[victim].try_wait().ok().flatten().is_some()
        {
            eprintln!("  {elapsed:>5.1} s  restarting node {victim}");
            restarted = true;
            match start_node(&dir, victim) {
                Ok(child) => children.0[victim] = child,
                Err(error) => drill_error = Some(error),
            }
        }
        // The storm blows while the load is being sent; once it is all out, the node still down comes back and the
        // cluster drains (what was accepted must then become final).
        if let Some(storm) = storm.as_mut() {
            let result = if sent < total {
                storm.step(elapsed, &mut children.0, |i| start_node(&dir, i))
            } else {
                storm.finish(&mut children.0, |i| start_node(&dir, i))
            };
            if let Err(error) = result {
                drill_error = Some(error);
            }
        }
        if let Some(drill) = upgrade.as_mut() {
            if let Err(error) = drill.step(elapsed, &mut children.0, |i| start_node(&dir, i)) {
                drill_error = Some(error);
            }
        }
        if rss_sampled.elapsed() >= Duration::from_secs(1) {
            rss_sampled = Instant::now();
            for (max, child) in rss_max_mib.iter_mut().zip(&children.0) {
                *max = max.max(rss_mib(child.id()).unwrap_or(0.0));
            }
        }
        if last_shown.elapsed() >= Duration::from_secs(1) || sent == total {
            last_shown = Instant::now();
            eprintln!("  {elapsed:>5.1} s  submitted {sent}/{total}");
        }
    };
    progress(first.0, first.1);
    let load_status = loop {
        while let Ok((sent, total)) = progress_rx.try_recv() {
            progress(sent, total);
        }
        if let Some(status) = load.0[0].try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for (sent, total) in progress_rx.try_iter() {
        progress(sent, total);
    }
    let ended_wall_ms = wall_ms();
    load.0.clear();
    let flood = match flood.as_mut() {
        Some(flooder) => {
            let status = flooder.0[0].wait()?;
            let path = dir.join("flood.json");
            let report: LoadReport =
                serde_json::from_slice(&fs::read(&path).with_context(|| {
                    format!(
                        "the flooder ({status}) wrote no report to {}; see flood.log",
                        path.display()
                    )
                })?)
                .context("the flooder's report")?;
            Some(report)
        }
        None => None,
    };
    let report_path = dir.join("load.json");
    let report: LoadReport =
        serde_json::from_slice(&fs::read(&report_path).with_context(|| {
            format!(
                "the load generator ({load_status}) wrote no report to {}",
                report_path.display()
            )
        })?)
        .context("the load generator's report")?;
    let threads_after = threads_cpu(&children.0[..args.nodes]);
    let nodes_cpu_s = match (cpu_before, nodes_cpu(&children)) {
        (Some(before), Some(after)) if !args.kill_one && storm.is_none() && upgrade.is_none() => {
            Some(after - before)
        }
        _ => None,
    };
    let nodes_cpu_by_role_s = match (nodes_cpu_s, threads_before, threads_after) {
        (Some(total_s), Some(before), Some(after)) => Some(cpu_by_role(total_s, &before, &after)),
        _ => None,
    };
    let followers_cpu_s = match (followers_cpu_before, followers_cpu(&children)) {
        (Some(before), Some(after)) if args.followers > 0 => Some(after - before),
        _ => None,
    };
    if args.kill_one && killed && !restarted {
        // The load ended before the others got far enough ahead: wait for them (empty blocks keep coming).
        let deadline = Instant::now() + Duration::from_secs(1_800);
        while !restart_due(f64::MAX, killed_at, &mut killed_height) {
            ensure!(
                Instant::now() < deadline,
                "the other nodes did not get {} blocks past height {killed_height:?} in 30 minutes",
                args.restart_behind_blocks
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "  {:>5.1} s  restarting node {victim} (others at heights {:?}, it stopped at or below {killed_height:?})",
            started.elapsed().as_secs_f64(),
            heights(&dir)
        );
        let target = heights(&dir).into_iter().max().unwrap_or(0);
        let restarted_at = Instant::now();
        match start_node(&dir, victim) {
            Ok(child) => children.0[victim] = child,
            Err(error) => drill_error = Some(error),
        }
        // How long the restarted node takes to reach the height the others had when it restarted.
        let status_path = dir.join(format!("node{victim}/status.json"));
        let deadline = restarted_at + Duration::from_secs(600);
        while drill_error.is_none() && Instant::now() < deadline {
            let status = read_status(&status_path);
            if status
                .as_ref()
                .is_some_and(|s| !s.stopped && s.height >= target)
            {
                let status = status.expect("checked above");
                eprintln!(
                    "  node {victim} caught up to height {target} in {:.1} s (snapshots installed: {}, at height {})",
                    restarted_at.elapsed().as_secs_f64(),
                    status.snapshot_installs,
                    status.snapshot_installed_height
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if let Some(storm) = storm.as_mut() {
        if let Err(error) = storm.finish(&mut children.0, |i| start_node(&dir, i)) {
            drill_error = Some(error);
        }
    }
    if let Some(drill) = upgrade.as_mut() {
        if drill_error.is_none() {
            if let Err(error) = drill.finish(started, &mut children.0, |i| start_node(&dir, i)) {
                drill_error = Some(error);
            }
        }
    }
    if let Some(error) = drill_error {
        return Err(error.context("restarting a node in a drill"));
    }

    let statuses = settle_and_stop(&dir, &mut children, args.nodes + args.followers)?;
    let commitments_equal = commitments_agree(&statuses);
    // A flooder cut off as a slow reader never got the receipts of what it had been told `accepted`: those must be
    // in the ledger all the same.
    let flood_accepted_missing = match &flood {
        Some(flood) if !flood.accepted_not_final_ids.is_empty() => {
            let stored = crate::storm::stored_tx_ids(&dir.join("node0"))?;
            flood
                .accepted_not_final_ids
                .iter()
                .filter(|id| {
                    cas_engine::TxId::from_hex(id).map_or(true, |id| !stored.contains(&id))
                })
                .count()
        }
        _ => 0,
    };
    if let Some(drill) = upgrade.as_mut() {
        drill.count_final(&statuses);
    }
    let longest_block_gap_ms = match (&storm, &upgrade) {
        (None, None) => None,
        _ => crate::storm::longest_block_gap(&dir.join("node0"), started_wall_ms, ended_wall_ms)?,
    };

    let blocks = statuses.iter().map(|s| s.height).max().unwrap_or(0);
    println!();
    println!("| nodes | offered tx/s | committed TPS | p50 ms | p99 ms | blocks | rejected | same commitment |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {} |",
        args.nodes,
        report.offered_rate_per_s,
        report.committed_tps,
        report.latency_p50_ms,
        report.latency_p99_ms,
        blocks,
        report.rejected_at_admission + report.rejected_in_block,
        if commitments_equal { "yes" } else { "NO" },
    );
    println!(
        "{} submitted, {} final, {} unanswered; commitment {}",
        report.submitted,
        report.final_accepted,
        report.unanswered,
        statuses.first().map_or("-", |s| s.utxo_commitment.as_str())
    );
    if report.workload == crate::load::Workload::Circulate {
        println!(
            "workload circulate: each transfer also spent a coin paid {} s of schedule before; {} held until their \
             payment was final",
            crate::load::RECEIVED_LAG_S,
            report.held_for_payer
        );
    }
    if report.latency_windows.len() > 2 {
        print_latency_windows(&report);
    }
    let per_committed_tx_us = |cpu_s: f64| cpu_s * 1e6 / report.final_accepted.max(1) as f64;
    let node_cpu_us_per_tx = nodes_cpu_s.map(per_committed_tx_us);
    let node_cpu_by_thread_us_per_tx: Option<BTreeMap<String, f64>> =
        nodes_cpu_by_role_s.map(|by_role| {
            by_role
                .into_iter()
                .map(|(role, cpu_s)| (role.to_string(), per_committed_tx_us(cpu_s)))
                .collect()
        });
    match node_cpu_us_per_tx {
        Some(us) => println!(
            "CPU per committed tx: nodes {us:.0} µs ({} nodes summed); load generator {:.1} µs per submitted tx \
             (its own process, {} connections)",
            args.nodes, report.load_cpu_us_per_tx, report.connections
        ),
        None => println!(
            "CPU per tx: load generator {:.1} µs per submitted tx (nodes not counted: one was replaced)",
            report.load_cpu_us_per_tx
        ),
    }
    if let Some(by_thread) = &node_cpu_by_thread_us_per_tx {
        let parts: Vec<String> = THREAD_ROLES
            .iter()
            .filter_map(|role| Some(format!("{role} {:.1}", by_thread.get(*role)?)))
            .collect();
        println!(
            "node CPU by thread, µs per committed tx: {}",
            parts.join(", ")
        );
    }
    if let Some(cpu_s) = followers_cpu_s {
        let follower_statuses = &statuses[args.nodes..];
        println!(
            "followers: {} (heights {}), {:.0} µs of CPU per committed tx each, on average; same commitment as the \
             committee: {}",
            args.followers,
            follower_statuses
                .iter()
                .map(|s| s.height.to_string())
                .collect::<Vec<_>>()
                .join(" / "),
            cpu_s * 1e6 / report.final_accepted.max(1) as f64 / args.followers as f64,
            if commitments_equal { "yes" } else { "NO" }
        );
    }
    if let Some(flood) = &flood {
        println!(
            "flood: one hostile client offered {} tx/s to node 0 ({} planned): {} final, {} answered overloaded, \
             {} accepted without a receipt ({} of them missing from the ledger){}; the honest load committed {:.0} \
             of its {} tx/s ({:.2})",
            flood.offered_rate_per_s,
            flood.submitted,
            flood.final_accepted,
            flood.overloaded_answers,
            flood.accepted_not_final,
            flood_accepted_missing,
            if flood.lost_connections.is_empty() {
                String::new()
            } else {
                format!("; the flooder was cut off: {}", flood.lost_connections.join(", "))
            },
            report.committed_tps,
            report.offered_rate_per_s,
            report.committed_tps / report.offered_rate_per_s.max(1) as f64
        );
    }
    println!(
        "node memory: largest RSS seen {} MiB",
        rss_max_mib
            .iter()
            .map(|m| format!("{m:.0}"))
            .collect::<Vec<_>>()
            .join(" / ")
    );
    if let Some(storm) = &storm {
        println!(
            "SIGKILL storm: {} kills, at most one node down at a time; longest gap between committed blocks {} \
             (node 0's stored blocks; one round timeout is {} ms)",
            storm.kills,
            longest_block_gap_ms.map_or("-".to_string(), |(gap, height)| format!("{gap} ms, ended by height {height}")),
            args.round_timeout_ms
        );
    }
    if let Some(drill) = &upgrade {
        let upgrade = &drill.report;
        println!(
            "rolling upgrade: {} nodes restarted one at a time (SIGTERM, new config) at {} s; protocol {} from height \
             {}, {}; blocks refused for their version {}, proposals refused for their timestamp {}; longest gap \
             between committed blocks {} (node 0's stored blocks; one round timeout is {} ms)",
            upgrade.restarts_s.len(),
            upgrade
                .restarts_s
                .iter()
                .map(|s| format!("{s:.1}"))
                .collect::<Vec<_>>()
                .join(" / "),
            upgrade.version,
            upgrade.height,
            upgrade.switched_s.map_or("reached after the load".to_string(), |s| format!(
                "reached by node 0 {s:.1} s into the load"
            )),
            upgrade.protocol_refused,
            upgrade.timestamps_refused,
            longest_block_gap_ms.map_or("-".to_string(), |(gap, height)| format!(
                "{gap} ms, ended by height {height}"
            )),
            args.round_timeout_ms
        );
    }
    println!(
        "CPU limit: {cores} cores x {verifications_per_core_s:.0} batched verifications/s per core / \
         {verifications_per_tx} verifications per tx = {cpu_limit_tps:.0} tx/s; committed TPS is {:.2} of it",
        report.committed_tps / cpu_limit_tps
    );
    let followers_cpu_us_per_tx = followers_cpu_s
        .map(|cpu_s| cpu_s * 1e6 / report.final_accepted.max(1) as f64 / args.followers as f64);
    let cluster = ClusterReport {
        nodes: args.nodes,
        cores,
        shards_per_node,
        verifications_per_core_s,
        verifications_per_tx,
        cpu_limit_tps,
        load: report,
        blocks,
        commitments_equal,
        statuses,
        nodes_cpu_s,
        node_cpu_us_per_tx,
        node_cpu_by_thread_us_per_tx,
        followers: args.followers,
        followers_cpu_us_per_tx,
        kills: storm.as_ref().map_or(0, |storm| storm.kills),
        longest_block_gap_ms,
        upgrade: upgrade.as_ref().map(|drill| drill.report.clone()),
        flood,
        nodes_rss_max_mib: rss_max_mib,
    };
    let json_path = dir.join("report.json");
    fs::write(&json_path, serde_json::to_vec_pretty(&cluster)?)?;
    println!("report: {}", json_path.display());
    let report = &cluster.load;
    for wrong in &report.wrong_answers {
        eprintln!("wrong answer: {wrong}");
    }
    if report.wrong_answer_count > 0 {
        bail!(
            "{} transactions did not get the answer they should have",
            report.wrong_answer_count
        );
    }
    ensure!(
        commitments_equal,
        "the nodes ended with different UTXO commitments, or one too far behind to compare: {}",
        commitments_detail(&cluster.statuses)
    );
    ensure!(
        report.lost_connections.is_empty(),
        "the load generator lost connections: {:?}",
        report.lost_connections
    );
    if let Some(upgrade) = &cluster.upgrade {
        ensure!(
            upgrade.protocol_refused == 0,
            "{} blocks were refused for their protocol version during the upgrade",
            upgrade.protocol_refused
        );
    }
    ensure!(
        flood_accepted_missing == 0,
        "{flood_accepted_missing} of the flooder's transactions were answered accepted and are not in the ledger"
    );
    Ok(cluster)
}

/// Batched signature verifications per second on one core, on up to 2,048 freshly signed transfers of this genesis.
/// A started cluster: its genesis, the node processes, where the load goes and where each node's HTTP API listens,
/// and the CPU's verification limit measured before the nodes started.
pub struct Started {
    pub genesis_path: PathBuf,
    pub children: Nodes,
    /// The load's targets (ingest address and key), without the drills' victims.
    pub targets: Vec<(SocketAddr, PublicKey)>,
    /// Every node's ingest address, and its HTTP API address.
    pub targets_all: Vec<SocketAddr>,
    pub apis: Vec<SocketAddr>,
    /// The followers' HTTP API addresses (node `nodes + j` is follower `j`).
    pub follower_apis: Vec<SocketAddr>,
    /// Each node's operator endpoints (`/metrics`, `/health`, `/status`), the followers' after the members'.
    pub operators: Vec<SocketAddr>,
    pub verifications_per_core_s: f64,
    pub verifications_per_tx: u64,
    pub cpu_limit_tps: f64,
}

/// Makes the node keys, the genesis (funded accounts and the committee) and the configs on loopback ports, and
/// starts the node processes.
pub fn start_cluster(
    args: &ClusterArgs,
    dir: &Path,
    shards_per_node: usize,
    cores: usize,
) -> Result<Started> {
    let mut node_keys = Vec::new();
    for i in 0..args.nodes {
        let path = dir.join(format!("node{i}.key"));
        let _ = fs::remove_file(&path);
        node_keys.push(keyfile::create(&path)?.public());
    }
    let amount = 1_000_000_000u64;
    let spec = GenesisSpec {
        chain_id: CHAIN_ID,
        timestamp_ms: 0,
        params: ParamsSpec {
            min_fee: 1,
            block_interval_ms: 100,
            witness_span: args.witness_span,
            stake: cas_engine::genesis::StakeSpec {
                epoch_blocks: args.epoch_blocks,
                absence_limit: args.absence_limit,
                blacklist_blocks: args.blacklist_blocks,
                ..Default::default()
            },
            matching_fee_bps: cas_engine::genesis::DEFAULT_MATCHING_FEE_BPS,
            governance: Default::default(),
        },
        committee: node_keys
            .iter()
            .map(|k| MemberSpec {
                key: k.to_hex(),
                stake: 100,
            })
            .collect(),
        allocations: (0..args.accounts + args.flood_rate.map_or(0, |_| args.flood_accounts))
            .map(|i| AllocationSpec {
                owner: key(ACCOUNT_KEYS, i).public().to_hex(),
                amount,
                asset: None,
                outputs: 1,
            })
            .collect(),
    };
    let genesis = genesis_block(&spec)?;
    let genesis_path = dir.join("genesis.bin");
    fs::write(&genesis_path, encode_block(&genesis))?;

    // The CPU's limit for this cluster, measured here before the nodes start: batched verifications per core.
    let verifications_per_core_s = verification_rate_per_core(&genesis);
    let committee_size = args.nodes as u64;
    let f = (committee_size - 1) / 3;
    // Per transaction across the cluster: the receiving node's Synchronizer, then f more checkers of its package
    // (its certificate is then attested and executors skip the signatures).
    let verifications_per_tx = 1 + f;
    let cpu_limit_tps = cores as f64 * verifications_per_core_s / verifications_per_tx as f64;
    ensure!(
        !args.hand_over || args.epoch_blocks > 0,
        "--hand-over needs --epoch-blocks: without epochs there is nothing to hand over"
    );
    ensure!(
        !(args.netns && args.followers > 0),
        "--followers does not run in network namespaces yet"
    );
    let total = args.nodes + args.followers;
    let ports = free_ports(total * 2)?;
    // One call for both, so no port is handed out twice.
    let tcp_ports = free_tcp_ports(2 * total)?;
    let (api_ports, operator_ports) = tcp_ports.split_at(total);
    let mut apis = Vec::new();
    let mut operators = Vec::new();
    let mut targets_all = Vec::new();
    let addr = |port: u16| -> SocketAddr { SocketAddr::from(([127, 0, 0, 1], port)) };
    // In namespaces every node has an address of its own on the bridge, with the same ports.
    let at = |i: usize, port: u16| -> SocketAddr {
        match args.netns {
            true => SocketAddr::from((
                crate::netns::Network::node_ip(i),
                NETNS_PORTS[port as usize],
            )),
            false => addr(port),
        }
    };
    let shape = crate::netns::LinkShape {
        delay_ms: args.link_delay_ms,
        jitter_ms: args.link_jitter_ms,
        loss_pct: args.link_loss_pct,
        mbit: args.link_mbit,
    };
    let network = if args.netns {
        crate::netns::Network::available()
            .map_err(|why| anyhow::anyhow!("--netns cannot run here: {why}"))?;
        let network = crate::netns::Network::create(args.nodes, &shape)?;
        fs::write(dir.join("client.netns"), network.client_ns())?;
        Some(network)
    } else {
        let _ = fs::remove_file(dir.join("client.netns"));
        None
    };
    let mut children = Nodes(Vec::new(), network);
    let mut targets: Vec<(SocketAddr, PublicKey)> = Vec::new();
    for i in 0..args.nodes {
        let data_dir = dir.join(format!("node{i}"));
        let _ = fs::remove_dir_all(&data_dir);
        let config = NodeConfig {
            key_file: dir.join(format!("node{i}.key")),
            genesis: genesis_path.clone(),
            data_dir: data_dir.clone(),
            listen: if args.netns {
                at(i, 0)
            } else {
                addr(ports[2 * i])
            },
            ingest_listen: if args.netns {
                at(i, 1)
            } else {
                addr(ports[2 * i + 1])
            },
            peers: (0..args.nodes)
                .filter(|j| *j != i)
                .map(|j| PeerConfig {
                    key: node_keys[j].to_hex(),
                    // The smaller key dials: in namespaces with shaped links it dials the relay on its loopback.
                    addr: match args.netns {
                        true if node_keys[i] < node_keys[j] => {
                            crate::netns::Network::dial_addr(&shape, j, NETNS_PORTS[0])
                        }
                        true => at(j, 0),
                        false => addr(ports[2 * j]),
                    },
                })
                .collect(),
            shards: shards_per_node,
            pin_cores: false,
            round_timeout_ms: args.round_timeout_ms,
            empty_block_wait_ms: args.empty_block_wait_ms,
            proposal_wait_ms: args.proposal_wait_ms,
            package_txs_max: 2_000,
            package_wait_ms: args.package_wait_ms,
            snapshot_every_blocks: args.snapshot_every,
            blocks_kept: args.blocks_kept,
            snapshot_sync_gap_blocks: args.snapshot_sync_gap,
            mining_threads: args.mining_threads,
            admission_in_flight_max: cas_node::in_flight::IN_FLIGHT_MAX_DEFAULT,
            api_listen: Some(if args.netns {
                at(i, 2)
            } else {
                addr(api_ports[i])
            }),
            operator_listen: Some(if args.netns {
                at(i, 3)
            } else {
                addr(operator_ports[i])
            }),
            tx_index_kept: cas_node::tx_index::TX_INDEX_KEPT_DEFAULT,
            protocol_upgrades: args.protocol_upgrades(),
            // A member that leaves the committee at a hand-over follows the others' certified ledger.
            upstream: match args.hand_over {
                true => (0..args.nodes)
                    .filter(|j| *j != i)
                    .map(|j| {
                        if args.netns {
                            at(j, 2)
                        } else {
                            addr(api_ports[j])
                        }
                    })
                    .collect(),
                false => Vec::new(),
            },
            transparent_huge_pages: args.transparent_huge_pages,
        };
        apis.push(config.api_listen.expect("set above"));
        operators.push(config.operator_listen.expect("set above"));
        targets_all.push(config.ingest_listen);
        let config_path = dir.join(format!("node{i}.toml"));
        fs::write(&config_path, config.to_toml())?;
        let netns_path = dir.join(format!("node{i}.netns"));
        match children.1.as_mut() {
            Some(network) => {
                fs::write(&netns_path, network.node_ns(i))?;
                if shape.relayed() {
                    let dials: Vec<usize> = (0..args.nodes)
                        .filter(|j| node_keys[i] < node_keys[*j])
                        .collect();
                    network.start_relays(&shape, i, &dials, NETNS_PORTS[0])?;
                }
            }
            None => {
                let _ = fs::remove_file(&netns_path);
            }
        }
        children.0.push(start_node(dir, i)?);
        let victim_only =
            (args.kill_one && i + 1 == args.nodes) || (args.kill_every_s.is_some() && i > 0);
        if !victim_only {
            targets.push((config.ingest_listen, node_keys[i]));
        }
    }

    let (follower_apis, follower_operators) = start_followers(
        args,
        dir,
        &genesis_path,
        &node_keys,
        &apis,
        &ports,
        (&api_ports[args.nodes..], &operator_ports[args.nodes..]),
        &mut children,
    )?;
    operators.extend(follower_operators);

    Ok(Started {
        genesis_path,
        follower_apis,
        targets_all,
        children,
        targets,
        apis,
        operators,
        verifications_per_core_s,
        verifications_per_tx,
        cpu_limit_tps,
    })
}

/// Starts `--followers` nodes (node `nodes + j`), each with a key outside the committee, reading the ledger from its
/// ancestors in the broadcast tree ([`cas_netio::broadcast::TwoTierTree`]: the first `nodes` followers form the
/// POS tier, one under each member, the rest hang below them two by two), then from the other members. Returns their
/// HTTP API and operator endpoint addresses.
#[allow(clippy::too_many_arguments)]
fn start_followers(
    args: &ClusterArgs,
    dir: &Path,
    genesis_path: &Path,
    member_keys: &[PublicKey],
    member_apis: &[SocketAddr],
    udp_ports: &[u16],
    (api_ports, operator_ports): (&[u16], &[u16]),
    children: &mut Nodes,
) -> Result<(Vec<SocketAddr>, Vec<SocketAddr>)> {
    let addr = |port: u16| -> SocketAddr { SocketAddr::from(([127, 0, 0, 1], port)) };
    let mut keys = Vec::new();
    for j in 0..args.followers {
        let path = dir.join(format!("node{}.key", args.nodes + j));
        let _ = fs::remove_file(&path);
        keys.push(keyfile::create(&path)?.public());
    }
    let pos = args.followers.min(args.nodes);
    let tree = cas_netio::broadcast::TwoTierTree::new(
        member_keys.to_vec(),
        keys[..pos].to_vec(),
        keys[pos..].to_vec(),
        FOLLOWER_FANOUT,
    )?;
    let api_of = |key: &PublicKey| -> SocketAddr {
        match member_keys.iter().position(|k| k == key) {
            Some(member) => member_apis[member],
            None => addr(api_ports[keys.iter().position(|k| k == key).expect("in the tree")]),
        }
    };
    let (mut apis, mut operators) = (Vec::new(), Vec::new());
    for (j, key) in keys.iter().enumerate() {
        let i = args.nodes + j;
        let data_dir = dir.join(format!("node{i}"));
        let _ = fs::remove_dir_all(&data_dir);
        let mut upstream: Vec<SocketAddr> = tree.ancestors(key).iter().map(api_of).collect();
        for member in member_apis {
            if !upstream.contains(member) {
                upstream.push(*member);
            }
        }
        let config = NodeConfig {
            api_listen: Some(addr(api_ports[j])),
            operator_listen: Some(addr(operator_ports[j])),
            upstream,
            snapshot_every_blocks: args.snapshot_every,
            protocol_upgrades: args.protocol_upgrades(),
            // Where the members are, for when this follower is elected into the committee.
            peers: match args.hand_over {
                true => member_keys
                    .iter()
                    .enumerate()
                    .map(|(m, key)| PeerConfig {
                        key: key.to_hex(),
                        addr: addr(udp_ports[2 * m]),
                    })
                    .collect(),
                false => Vec::new(),
            },
            ..NodeConfig::with_defaults(
                dir.join(format!("node{i}.key")),
                genesis_path.to_path_buf(),
                data_dir,
                addr(udp_ports[2 * i]),
                addr(udp_ports[2 * i + 1]),
            )
        };
        apis.push(addr(api_ports[j]));
        operators.push(addr(operator_ports[j]));
        fs::write(dir.join(format!("node{i}.toml")), config.to_toml())?;
        let _ = fs::remove_file(dir.join(format!("node{i}.netns")));
        children.0.push(start_node(dir, i)?);
    }
    Ok((apis, operators))
}

/// Children per follower below the POS tier in `cas local`'s broadcast tree.
const FOLLOWER_FANOUT: usize = 2;

fn verification_rate_per_core(genesis: &cas_engine::Block) -> f64 {
    use cas_engine::crypto::{verify_batch, SigEntry};
    let outputs = genesis_outputs(&genesis.txs);
    let count = outputs.len().min(2_048);
    let txs: Vec<cas_engine::Transaction> = outputs[..count]
        .iter()
        .enumerate()
        .map(|(i, coin)| {
            cas_engine::fixtures::transfer(
                CHAIN_ID,
                &key(ACCOUNT_KEYS, i as u32),
                &[*coin],
                &key(ACCOUNT_KEYS, 0),
                1,
                1,
            )
        })
        .collect();
    let ids: Vec<cas_engine::TxId> = txs.iter().map(|tx| tx.tx_id()).collect();
    let entries: Vec<SigEntry<'_>> = txs
        .iter()
        .zip(&ids)
        .map(|(tx, id)| SigEntry {
            message: &id.0,
            key: &tx.signatures[0].key.0,
            signature: &tx.signatures[0].signature.0,
        })
        .collect();
    // The best of five passes: the limit is what the core can do, not what a noisy moment let it do.
    (0..5)
        .map(|_| {
            let started = Instant::now();
            assert!(
                verify_batch(&entries).is_empty(),
                "freshly signed transfers verify"
            );
            entries.len() as f64 / started.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

/// Where the load goes: the nodes' QUIC ingest endpoints, or their HTTP APIs (`cas load --api`).
enum Via<'a> {
    Quic(&'a [(SocketAddr, PublicKey)]),
    Http(&'a [SocketAddr]),
}

/// Starts the load generator as its own process (`cas load`), so its CPU is its own and never the nodes': the
/// nodes' processes measure only themselves. Its report goes to `load.json` in `dir`. With `flood_rate` it is the
/// hostile flooder instead (its own accounts after the load's, one QUIC connection, `Overloaded` ignored; its
/// report in flood.json, its output in flood.log).
fn start_load(
    args: &ClusterArgs,
    dir: &Path,
    genesis: &Path,
    via: Via<'_>,
    flood_rate: Option<u64>,
) -> Result<Nodes> {
    let mut command = cas_command(&dir.join("client.netns"))?;
    command.arg("load").arg("--genesis").arg(genesis);
    let lanes = match via {
        Via::Quic(targets) => {
            for (addr, key) in targets {
                command
                    .arg("--target")
                    .arg(format!("{addr}={}", key.to_hex()));
            }
            vec![
                "--connections".to_string(),
                args.load_connections.to_string(),
                "--window".to_string(),
                args.load_window.to_string(),
            ]
        }
        Via::Http(apis) => {
            for api in apis {
                command.arg("--api").arg(api.to_string());
            }
            let mut lanes = vec!["--workers".to_string(), args.http_workers.to_string()];
            if args.wait_final {
                lanes.push("--wait-final".to_string());
            }
            lanes
        }
    };
    match flood_rate {
        None => command
            .args(["--duration-s", &args.duration_s.to_string()])
            .args(["--rate", &args.rate().to_string()])
            .args(["--accounts", &args.accounts.to_string()])
            .args(["--invalid-every", &args.invalid_every.to_string()])
            .args([
                "--workload",
                clap::ValueEnum::to_possible_value(&args.workload)
                    .expect("no workload is skipped")
                    .get_name(),
            ])
            .args(["--tick-ms", &args.load_tick_ms.to_string()])
            .args(lanes)
            .args(["--drain-s", "20"])
            .arg("--report")
            .arg(dir.join("load.json"))
            .stderr(Stdio::piped()),
        Some(rate) => command
            .args([
                "--duration-s",
                &(args.duration_s + FLOOD_MARGIN_S).to_string(),
            ])
            .args(["--rate", &rate.to_string()])
            .args(["--first-account", &args.accounts.to_string()])
            .args(["--accounts", &args.flood_accounts.to_string()])
            .args([
                "--invalid-every",
                "0",
                "--connections",
                "1",
                "--drain-s",
                "10",
                "--hostile",
            ])
            .args([
                "--window",
                &cas_node::in_flight::IN_FLIGHT_PER_CLIENT_MAX.to_string(),
            ])
            .arg("--report")
            .arg(dir.join("flood.json"))
            .stderr(fs::File::create(dir.join("flood.log"))?),
    };
    command.stdin(Stdio::null()).stdout(Stdio::null());
    Ok(Nodes(
        vec![command.spawn().context("cannot start the load generator")?],
        None,
    ))
}

/// The flood runs this much longer than the load: it covers the load's signing and its drain.
const FLOOD_MARGIN_S: u64 = 20;

/// Waits until the flooder has signed its transactions and started sending (its first progress line).
fn wait_for_flood(dir: &Path) -> Result<()> {
    let log = dir.join("flood.log");
    let deadline = Instant::now() + Duration::from_secs(900);
    while Instant::now() < deadline {
        if fs::read_to_string(&log).is_ok_and(|text| text.contains(PROGRESS_PREFIX)) {
            eprintln!("  the flooder is sending");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!(
        "the flooder did not start sending in 15 minutes; see {}",
        log.display()
    )
}

/// Passes the load generator's progress lines on as (submitted, total); anything else it prints goes to our stderr.
fn forward_load_progress(
    stderr: std::process::ChildStderr,
    progress: std::sync::mpsc::Sender<(usize, usize)>,
) {
    use std::io::BufRead;
    for line in std::io::BufReader::new(stderr).lines() {
        let Ok(line) = line else { return };
        let parsed = line.strip_prefix(PROGRESS_PREFIX).and_then(|rest| {
            let (sent, total) = rest.split_once('/')?;
            Some((sent.parse().ok()?, total.parse().ok()?))
        });
        match parsed {
            Some(counts) => {
                if progress.send(counts).is_err() {
                    return;
                }
            }
            None => eprintln!("load: {line}"),
        }
    }
}

/// Starts node `i` from its config in `dir`, its log appended to `node{i}.log`.
/// A command that runs `cas` in the namespace named in `ns_file` when the cluster runs in namespaces.
fn cas_command(ns_file: &Path) -> Result<Command> {
    Ok(match fs::read_to_string(ns_file) {
        Ok(ns) => {
            let mut command = crate::netns::Network::command_in(ns.trim());
            command.arg(std::env::current_exe()?);
            command
        }
        Err(_) => Command::new(std::env::current_exe()?),
    })
}

pub fn start_node(dir: &Path, i: usize) -> Result<Child> {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("node{i}.log")))?;
    cas_command(&dir.join(format!("node{i}.netns")))?
        .args(["node", "--config"])
        .arg(dir.join(format!("node{i}.toml")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("cannot start a node process")
}

pub fn read_status(path: &Path) -> Option<Status> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

/// What each node ended at, for a disagreement's message: its height, and its commitment at the lowest height they
/// all executed ("not kept" when that height is out of its recent window: it is too far ahead to compare).
fn commitments_detail(statuses: &[Status]) -> String {
    let common = statuses.iter().map(|s| s.height).min().unwrap_or(0);
    statuses
        .iter()
        .enumerate()
        .map(|(i, status)| {
            let at_common = commitment_at(status, common);
            format!(
                "node {i} at height {} ({} at height {common})",
                status.height,
                at_common.map_or("not kept".to_string(), |c| c.chars().take(16).collect())
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Whether every node had the same UTXO commitment at the lowest height they all executed. Blocks may mint witness
/// rewards even after the load, so nodes stopped a block apart are compared at one height, from each one's
/// recent commitments (a node too far ahead to still list that height counts as a disagreement).
pub fn commitments_agree(statuses: &[Status]) -> bool {
    let Some(common) = statuses.iter().map(|s| s.height).min() else {
        return true;
    };
    let commitments: Vec<Option<&str>> = statuses
        .iter()
        .map(|status| commitment_at(status, common))
        .collect();
    commitments.iter().all(Option::is_some) && commitments.windows(2).all(|w| w[0] == w[1])
}

/// A node's commitment after `height`: its last, or one of its recent ones (None when out of that window).
fn commitment_at(status: &Status, height: u64) -> Option<&str> {
    if status.height == height {
        return Some(&status.utxo_commitment);
    }
    status
        .recent_commitments
        .iter()
        .find(|(h, _)| *h == height)
        .map(|(_, commitment)| commitment.as_str())
}

/// Waits for the nodes to agree on a height, then stops them with SIGTERM and reads their final status.
pub fn settle_and_stop(dir: &Path, nodes: &mut Nodes, count: usize) -> Result<Vec<Status>> {
    let status_paths: Vec<PathBuf> = (0..count)
        .map(|i| dir.join(format!("node{i}/status.json")))
        .collect();
    // A node that is catching up (after a restart) needs time to reach the others' state.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let states: Option<Vec<Status>> = status_paths.iter().map(|p| read_status(p)).collect();
        let settled = states.is_some_and(|states| {
            commitments_agree(&states)
                && states
                    .windows(2)
                    .all(|w| w[0].height.abs_diff(w[1].height) <= 1)
        });
        if settled {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    for child in &nodes.0 {
        // SAFETY: kill(2) on our own child's pid, with a valid signal number.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    }
    for (i, child) in nodes.0.iter_mut().enumerate() {
        let status = child.wait()?;
        ensure!(
            status.success(),
            "node {i} exited with {status}; see {}",
            dir.join(format!("node{i}.log")).display()
        );
    }
    nodes.0.clear();
    status_paths
        .iter()
        .map(|p| read_status(p).with_context(|| format!("no final status in {}", p.display())))
        .collect()
}

/// The CPU seconds `processes` have used so far (None when one cannot be read).
fn processes_cpu(processes: &[Child]) -> Option<f64> {
    processes
        .iter()
        .map(|child| cas_perf::pipeline::process_cpu_time(&child.id().to_string()))
        .sum::<Option<Duration>>()
        .map(|total| total.as_secs_f64())
}

/// The roles a node's threads play, by the names they are given where they are spawned, in the order they are
/// printed. `exited`: threads that ended while the load ran (io_uring workers the kernel retired, mostly), whose
/// time only the process total still holds.
const THREAD_ROLES: [&str; 9] = [
    "driver", "executor", "shards", "netio", "mirror", "store", "witness", "other", "exited",
];

/// The role of a node thread: the driver runs on the process's main thread; the rest go by their names.
fn thread_role(pid: u32, tid: u32, name: &str) -> &'static str {
    match name {
        _ if tid == pid => "driver",
        // The driver's second flush (the safety state beside the journal).
        "cas-side-sync" => "driver",
        "cas-executor" => "executor",
        "cas-netio" => "netio",
        "cas-mirror" => "mirror",
        "cas-store" => "store",
        "cas-witness" => "witness",
        _ if name.starts_with("cas-shard-") => "shards",
        _ if name.starts_with("iou-wrk-") => "store",
        _ if name.starts_with("cas-miner-") => "witness",
        _ => "other",
    }
}

/// Live threads by (pid, tid): each one's role and CPU seconds so far.
type ThreadsCpu = BTreeMap<(u32, u32), (&'static str, f64)>;

/// Each live thread's CPU time so far, with its role (None when a process cannot be read).
fn threads_cpu(processes: &[Child]) -> Option<ThreadsCpu> {
    let mut threads = BTreeMap::new();
    for child in processes {
        let pid = child.id();
        for (tid, name, time) in cas_perf::pipeline::threads_cpu_time(&pid.to_string())? {
            threads.insert(
                (pid, tid),
                (thread_role(pid, tid, &name), time.as_secs_f64()),
            );
        }
    }
    Some(threads)
}

/// CPU seconds by role between two looks at the threads, with `total_s` (the processes' own count, which keeps
/// the time of threads that ended) as the whole: what the live threads do not account for is `exited`. A thread
/// that started between the looks counts from zero.
fn cpu_by_role(
    total_s: f64,
    before: &ThreadsCpu,
    after: &ThreadsCpu,
) -> BTreeMap<&'static str, f64> {
    let mut by_role: BTreeMap<&'static str, f64> = BTreeMap::new();
    for (thread, (role, cpu_s)) in after {
        let earlier = before.get(thread).map_or(0.0, |(_, cpu_s)| *cpu_s);
        *by_role.entry(role).or_default() += (cpu_s - earlier).max(0.0);
    }
    let live: f64 = by_role.values().sum();
    by_role.insert("exited", (total_s - live).max(0.0));
    by_role
}

/// Milliseconds since the Unix epoch: what nodes stamp their proposals with.
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A process's resident memory in MiB, from /proc (None where it cannot be read).
fn rss_mib(pid: u32) -> Option<f64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// p99 per window of submissions, and the last full minute's against the first's: does latency hold over the run?
fn print_latency_windows(report: &LoadReport) {
    let p99s: Vec<String> = report
        .latency_windows
        .iter()
        .map(|w| format!("{:.0}", w.p99_ms))
        .collect();
    println!(
        "p99 ms per {} s of submissions: {}",
        crate::load::LATENCY_WINDOW_S,
        p99s.join(" ")
    );
    // The last minute is cut short by the end of sending: compare full minutes only.
    let minutes = &report.latency_minutes;
    if minutes.len() >= 3 {
        let (first, last) = (&minutes[0], &minutes[minutes.len() - 2]);
        println!(
            "sustained: p99 {:.0} ms in minute {} against {:.0} ms in the first ({:.2}x); p50 {:.0} against {:.0} ms",
            last.p99_ms,
            minutes.len() - 1,
            first.p99_ms,
            last.p99_ms / first.p99_ms.max(1e-9),
            last.p50_ms,
            first.p50_ms
        );
    }
}
