//! `cas local --serve`: the cluster without load, held up for a person or a script to drive through each node's
//! HTTP API. It writes `cluster.json` in its folder (each node's API URL, ingest address, config and process id, the
//! followers' (`--followers`) API URL, config and process id, the genesis, and key files of the first funded
//! accounts) once every node has committed a block, supervises the nodes
//! (one that dies, for example SIGKILLed by a test, is restarted a second later and cluster.json gets its new pid),
//! and stops them gracefully on SIGINT, SIGTERM or a file named `stop` in the folder; then it checks that every node
//! ends with the same UTXO commitment.

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use cas_engine::fixtures::{key, seed, ACCOUNT_KEYS};
use serde_json::json;

use crate::cluster::{
    commitments_agree, read_status, settle_and_stop, start_cluster, start_node, ClusterArgs,
};

/// Funded accounts whose key files `--serve` writes.
const ACCOUNT_KEY_FILES: u32 = 8;
/// How long the nodes get to commit their first block.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a dead node stays down before it is restarted.
const RESTART_AFTER: Duration = Duration::from_secs(1);

pub fn serve(args: &ClusterArgs) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let dir = args.base_dir();
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let _ = fs::remove_file(dir.join("stop"));
    let _ = fs::remove_file(dir.join("cluster.json"));
    let shards_per_node = (cores / args.nodes).max(1);
    let mut started = start_cluster(args, &dir, shards_per_node, cores)?;
    let mut accounts = Vec::new();
    for i in 0..args.accounts.min(ACCOUNT_KEY_FILES) {
        let path = dir.join(format!("account{i}.key"));
        let _ = fs::remove_file(&path);
        cas_node::keyfile::create_from_seed(&path, seed(ACCOUNT_KEYS, i))?;
        accounts.push(json!({"key_file": path, "owner": key(ACCOUNT_KEYS, i).public().to_hex()}));
    }
    let total = args.nodes + args.followers;
    let deadline = Instant::now() + START_TIMEOUT;
    while !(0..total).all(|i| {
        read_status(&dir.join(format!("node{i}/status.json"))).is_some_and(|s| s.height > 0)
    }) {
        ensure!(
            Instant::now() < deadline,
            "the nodes did not commit a block in {START_TIMEOUT:?}; see the node logs in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let write_cluster = |pids: Vec<u32>| -> Result<()> {
        let nodes: Vec<_> = (0..args.nodes)
            .map(|i| {
                json!({
                    "index": i,
                    "api": format!("http://{}", started.apis[i]),
                    "operator": format!("http://{}", started.operators[i]),
                    "ingest": started.targets_all[i].to_string(),
                    "config": dir.join(format!("node{i}.toml")),
                    "pid": pids[i],
                })
            })
            .collect();
        let followers: Vec<_> = (args.nodes..total)
            .map(|i| {
                json!({
                    "index": i,
                    "api": format!("http://{}", started.follower_apis[i - args.nodes]),
                    "operator": format!("http://{}", started.operators[i]),
                    "config": dir.join(format!("node{i}.toml")),
                    "pid": pids[i],
                })
            })
            .collect();
        let cluster = json!({
            "chain_id": crate::cluster::CHAIN_ID,
            "genesis": started.genesis_path,
            "min_fee": 1,
            "nodes": nodes,
            "followers": followers,
            "accounts": accounts,
        });
        // Written whole, then renamed: a reader never sees half a file.
        let path = dir.join("cluster.json");
        let temporary = dir.join("cluster.json.tmp");
        fs::write(&temporary, serde_json::to_vec_pretty(&cluster)?)?;
        fs::rename(&temporary, &path)?;
        Ok(())
    };
    let pids =
        |started: &crate::cluster::Started| started.children.0.iter().map(|c| c.id()).collect();
    write_cluster(pids(&started))?;
    println!(
        "serving {} nodes: {} (cluster.json in {}); SIGINT, SIGTERM or a `stop` file there ends it",
        args.nodes,
        started
            .apis
            .iter()
            .map(|a| format!("http://{a}"))
            .collect::<Vec<_>>()
            .join(" "),
        dir.display()
    );
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    let mut down_since: Vec<Option<Instant>> = vec![None; total];
    while !stop.load(Ordering::Relaxed) && !dir.join("stop").exists() {
        for (i, down) in down_since.iter_mut().enumerate() {
            if down.is_none() && started.children.0[i].try_wait()?.is_some() {
                eprintln!("node {i} exited; restarting it in {RESTART_AFTER:?}");
                *down = Some(Instant::now());
            }
            if down.is_some_and(|at| at.elapsed() >= RESTART_AFTER) {
                started.children.0[i] = start_node(&dir, i)?;
                *down = None;
                write_cluster(pids(&started))?;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let statuses = settle_and_stop(&dir, &mut started.children, total)?;
    ensure!(
        commitments_agree(&statuses),
        "the nodes ended with different commitments: {:?}",
        statuses
            .iter()
            .map(|s| (s.height, &s.utxo_commitment))
            .collect::<Vec<_>>()
    );
    println!(
        "stopped; every node at the same commitment {} (height {})",
        statuses.first().map_or("-", |s| s.utxo_commitment.as_str()),
        statuses.iter().map(|s| s.height).min().unwrap_or(0)
    );
    Ok(())
}
