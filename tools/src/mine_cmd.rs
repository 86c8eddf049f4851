//! `cas mine --node ADDR=KEY --key FILE --threads K`: a standalone miner that follows one node. It asks the node
//! for a mining template over the client endpoint ([`cas_consensus::mining`]), mines it on K threads at the lowest
//! scheduling priority (the node's own mining loop, shared), submits each find and prints the node's verdict and
//! its progress. Rewards go to the key in FILE. It never validates witnesses itself: the node it follows does,
//! and gossips the good ones on.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use cas_consensus::mining::{MiningAnswer, MiningRequest, Verdict};
use cas_engine::text::quote;
use cas_engine::PublicKey;
use cas_netio::ingest::IngestClient;

use cas_node::keyfile;
use cas_node::witness::{spawn_miners, WitnessInput, WitnessShared};

/// How often the miner asks for a fresh template (a new best tip elsewhere makes its work stale).
const TEMPLATE_POLL: Duration = Duration::from_millis(500);
/// How long the main loop waits for an answer before looking at its miners again.
const ANSWER_WAIT: Duration = Duration::from_millis(20);
/// How often a progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Finds waiting for the main loop to submit them; a miner that finds more than this waits (it has just found one,
/// and mining resumes on the next template anyway).
const FINDS_QUEUE_MAX: usize = 16;

#[derive(clap::Args, Clone, Debug)]
pub struct MineArgs {
    /// The node to follow, as ADDR=PUBLIC_KEY (its ingest endpoint and node key, as `cas load --target` takes).
    #[arg(long)]
    pub node: String,
    /// The key file whose public key gets the rewards.
    #[arg(long)]
    pub key: std::path::PathBuf,
    /// Mining threads (each at the lowest scheduling priority).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Stop after this many witnesses were accepted by the node (0: run until SIGINT or SIGTERM).
    #[arg(long, default_value_t = 0)]
    pub blocks: u64,
}

/// What the miner did, for the last line it prints.
#[derive(Debug, Default)]
struct Progress {
    templates: u64,
    found: u64,
    accepted: u64,
    pending: u64,
    refused: u64,
}

fn parse_node(text: &str) -> Result<(SocketAddr, PublicKey)> {
    let (addr, key) = text
        .split_once('=')
        .with_context(|| format!("--node {} is not ADDR=PUBLIC_KEY", quote(text)))?;
    let addr = addr
        .parse()
        .with_context(|| format!("{} is not a socket address", quote(addr)))?;
    let key =
        PublicKey::from_hex(key).with_context(|| format!("{} is not a public key", quote(key)))?;
    Ok((addr, key))
}

pub fn run(args: &MineArgs) -> Result<()> {
    if args.threads == 0 {
        bail!("--threads must be at least 1");
    }
    let (addr, node_key) = parse_node(&args.node)?;
    let miner = keyfile::load(&args.key)?.public();
    let client = IngestClient::connect(addr, node_key)
        .with_context(|| format!("cannot reach the node at {addr}"))?;
    println!(
        "cas mine: following {addr} with {} thread(s); rewards to {miner}",
        args.threads
    );

    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    let shared = Arc::new(WitnessShared::default());
    let (finds, found_rx) = sync_channel(FINDS_QUEUE_MAX);
    let mining_stop = Arc::new(AtomicBool::new(false));
    let miners = spawn_miners(args.threads, shared.clone(), finds, mining_stop.clone())?;

    let result = follow(args, &client, miner, &shared, &found_rx, &stop);
    mining_stop.store(true, Ordering::Relaxed);
    for handle in miners {
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("a mining thread panicked"))?;
    }
    client.finish();
    let progress = result?;
    println!(
        "cas mine: done: {} found, {} accepted, {} pending, {} refused, {} nonces tried",
        progress.found,
        progress.accepted,
        progress.pending,
        progress.refused,
        shared.hashes.load(Ordering::Relaxed)
    );
    Ok(())
}

/// The main loop: templates in, finds out, verdicts counted, until stopped or `--blocks` were accepted.
fn follow(
    args: &MineArgs,
    client: &IngestClient,
    miner: PublicKey,
    shared: &WitnessShared,
    found_rx: &std::sync::mpsc::Receiver<WitnessInput>,
    stop: &AtomicBool,
) -> Result<Progress> {
    let template_request = Bytes::from(MiningRequest::Template { miner }.encode());
    let mut progress = Progress::default();
    let mut last_request: Option<Instant> = None;
    let mut last_progress = Instant::now();
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if args.blocks > 0 && progress.accepted >= args.blocks {
            break;
        }
        if last_request.is_none_or(|at| at.elapsed() >= TEMPLATE_POLL) {
            client
                .submit_mining(template_request.clone())
                .context("the node closed the connection")?;
            last_request = Some(Instant::now());
        }
        loop {
            match found_rx.try_recv() {
                Ok(WitnessInput::Mined(header)) => {
                    progress.found += 1;
                    println!(
                        "found witness {} at height {} (difficulty {})",
                        header.hash(),
                        header.height,
                        header.difficulty
                    );
                    let request = MiningRequest::Submit(header);
                    client
                        .submit_mining(Bytes::from(request.encode()))
                        .context("the node closed the connection")?;
                    // The node moves on from this parent if it accepts: ask for the next template at once.
                    last_request = None;
                }
                Ok(_) => {}
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => bail!("every mining thread stopped"),
            }
        }
        let Some(bytes) = client
            .recv_answer(ANSWER_WAIT)
            .context("the node closed the connection")?
        else {
            continue;
        };
        match MiningAnswer::decode(&bytes).context("the node's answer")? {
            MiningAnswer::Template(template) => {
                progress.templates += 1;
                shared.set_template(template);
            }
            MiningAnswer::Submitted { hash, verdict } => {
                match &verdict {
                    Verdict::Accepted => progress.accepted += 1,
                    Verdict::Pending => progress.pending += 1,
                    Verdict::Refused { .. } => progress.refused += 1,
                }
                println!("witness {hash}: {verdict:?}");
            }
        }
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            let hashes = shared.hashes.load(Ordering::Relaxed);
            println!(
                "progress: {:.0} s, {hashes} nonces ({:.0}/s), {} found, {} accepted",
                started.elapsed().as_secs_f64(),
                hashes as f64 / started.elapsed().as_secs_f64().max(1e-3),
                progress.found,
                progress.accepted
            );
        }
    }
    Ok(progress)
}
