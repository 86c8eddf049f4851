//! A follower: a node outside the committee that keeps the whole ledger without taking part in consensus, so it can
//! serve clients (and later join the committee) while the committee stays small.
//!
//! It reads the certified ledger ([`crate::ledger_stream`], `GET /v1/ledger`) from the nodes above it in the
//! broadcast tree (`upstream` in node.toml: its parent first, a committee member or a follower nearer the committee,
//! as [`cas_netio::broadcast::TwoTierTree`] lays them out), and trusts nothing it has not checked:
//!
//! - **Fetching** (thread `cas-follow`): each block must decode, extend the last block taken by its header's parent
//!   hash, carry the Merkle root of its transactions' ids and the hash of their signatures (which a tx id leaves
//!   out; the header covers both, so no signature is checked here). Blocks are held until a frame brings the committee's
//!   ledger certificate; a certificate on the newest held block, with more than two thirds of the stake's
//!   signatures, vouches for every held block through the hash chain, and the run goes to be applied. A refused
//!   frame, a stalled or closed stream, or more than [`UNCERTIFIED_BLOCKS_MAX`] blocks without a certificate drops
//!   what is held and moves to the next upstream, from the last certified height; after [`PARENT_RETRY_MS`] on a
//!   fallback it tries its parent again.
//! - **Applying** (the node's main thread): each block goes through this node's own shards under every UTXO rule
//!   (the certified header covers the signatures), durably;
//!   each header's commitment to its parent's set is checked against the set here, and after the run the result
//!   (block hash, results root, UTXO commitment) must be the certified one. A difference means this node's ledger
//!   is not the committee's: it stops and says so (nothing to retry: the rules are deterministic).
//! - **Serving**: the same client API as a member, reads answered between runs from this node's ledger, and the
//!   same ledger stream, so followers further down the tree follow this one. Submissions are relayed to the
//!   upstream (thread `cas-relay`); a client that waits hears `final` when this node executes the transaction.
//!   `operator_listen` serves `/metrics`, `/health` (ok while certified blocks keep being applied) and `/status`
//!   ([`crate::operator::FollowerSurface`]).
//!
//! Hand-overs ([`crate::epochs`]): a certificate must be signed as the instance its height belongs to, by that
//! instance's committee: the genesis one, or the one this follower's own ledger recorded at the epoch's election
//! (applied, and so checked, before the epoch's first certificate can arrive; the fetcher waits for the applier
//! when it is ahead).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cas_consensus::committee::Committee;
use cas_consensus::ledger_cert::{results_root, verify_ledger_cert, LedgerCert};
use cas_engine::client::{ClientAnswer, RuleFailure};
use cas_engine::codec::decode_block;
use cas_engine::{merkle, BlockHash, TxId};

use crate::api::{self, LedgerQuery, Submission, Waiters};
use crate::config::NodeConfig;
use crate::epochs::{committee_of, Committees, EpochPlan};
use crate::executor::{answer_query, Executed, RECENT_COMMITMENTS_MAX};
use crate::ledger_stream::{read_frame, Frame};
use crate::operator::{FollowerCounters, FollowerServer, FollowerSurface};
use crate::tx_index::{applied_claims, claims_of, results_of, Claim, TxIndex};
use crate::{Identity, Next, OpenLedger};

/// Blocks held without a certificate before the upstream is given up (a member certifies nearly every block; one
/// that certifies none is not worth following).
pub const UNCERTIFIED_BLOCKS_MAX: usize = 256;
/// Their bytes, in all.
pub const UNCERTIFIED_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Certified runs waiting to be applied; when full, fetching waits (back-pressure to the upstream's stream).
const RUNS_QUEUE_MAX: usize = 16;
/// An upstream that sends nothing for this long is given up (members make blocks even when idle).
const STREAM_STALL_MS: u64 = 10_000;
/// How long connecting to an upstream, and relaying one submission to it, may take.
const CONNECT_TIMEOUT_MS: u64 = 2_000;
const RELAY_TIMEOUT_MS: u64 = 5_000;
/// A follower reading from a fallback upstream goes back to its parent after this long (the tree keeps the load off
/// the committee only while followers read from their parents).
const PARENT_RETRY_MS: u64 = 10_000;
/// In the data folder when this follower's result differed from the certified one: it refuses to start again.
pub const DIVERGED_FILE: &str = "DIVERGED";
/// Submissions relayed upstream at once.
const RELAY_WORKERS: usize = 4;
/// The pause after every upstream has failed in turn.
const RETRY_PAUSE_MS: u64 = 500;
/// At an instance boundary, how long a follower waits for the upstream to hold the hand-over to the next instance
/// before applying the run anyway (asking every [`HANDOVER_POLL_MS`]): a joiner that switches to member without
/// the chain of hand-overs keeps none of its own and serves receipts without one.
const HANDOVER_WAIT_MS: u64 = 3_000;
const HANDOVER_POLL_MS: u64 = 50;
/// How often the status file is written.
const STATUS_EVERY_MS: u64 = 1_000;

/// A block checked against the hash chain, waiting for (or covered by) a certificate.
struct Held {
    height: u64,
    hash: BlockHash,
    bytes: Vec<u8>,
    ids: Vec<TxId>,
    /// Every transaction's client-id claim, kept for those the rules apply.
    claims: Vec<Claim>,
}

/// Blocks that one certificate vouches for, oldest first; the certificate is on the last.
struct Run {
    blocks: Vec<Held>,
    cert: LedgerCert,
}

/// Runs a follower until `stop` (SIGINT or SIGTERM), or until its ledger ends at the base of an instance whose
/// committee it is in ([`Next::Join`]).
/// `carried`: transactions this node admitted as a member and its epoch did not commit, relayed first.
pub(crate) fn run(
    config: &NodeConfig,
    identity: &Identity,
    stop: &Arc<AtomicBool>,
    carried: Vec<cas_engine::Transaction>,
) -> Result<Next> {
    if config.upstream.is_empty() {
        bail!(
            "this node's key is not in the genesis committee, so it follows the committee, but `upstream` in {} \
             names no node to follow",
            config.data_dir.display()
        );
    }
    let diverged_path = config.data_dir.join(DIVERGED_FILE);
    if let Ok(reason) = std::fs::read_to_string(&diverged_path) {
        bail!(
            "{} says this follower's ledger left the committee's: {}; it will not serve it again (move the data \
             folder away and follow from genesis)",
            diverged_path.display(),
            reason.trim()
        );
    }
    let fsync = crate::operator::fsync_histogram();
    let (mut ledger, _witness_node) = OpenLedger::open(config, identity, &fsync)?;
    ledger.index.fsync = Some(fsync.with_label_values(&["index"]));
    let plan = ledger.epoch_plan(config)?;
    let committees = Arc::new(Committees::default());
    ledger.epoch_facts(&committees)?;
    let stats = Arc::new(Mutex::new(Executed {
        height: ledger.recovery.durable_height,
        utxo_commitment: ledger.recovery.utxo_commitment,
        ..Executed::default()
    }));
    let waiters = Arc::new(Waiters::default());
    let handovers = identity.handovers(config)?;
    let (queries, queries_rx) = crossbeam_channel::bounded(api::QUERY_QUEUE_MAX);
    let (submit, submissions) = std::sync::mpsc::sync_channel(api::SUBMIT_QUEUE_MAX);
    let relayed = submit.clone();
    let api = config
        .api_listen
        .map(|listen| {
            api::ApiServer::start(
                listen,
                api::ApiState {
                    waiters: waiters.clone(),
                    submit,
                    waker: Arc::new(cas_netio::InboundWaker::default()),
                    queries,
                    index: ledger.index.view(),
                    stats: stats.clone(),
                    stopping: AtomicBool::new(false),
                    forms_certificates: false,
                    streams: Arc::new(AtomicUsize::new(0)),
                    handovers: handovers.clone(),
                },
            )
        })
        .transpose()?;
    // This run's own flag: set by the node's, or when the follower joins the committee.
    let stopping = Arc::new(AtomicBool::new(false));
    let follow = Arc::new(FollowerCounters::default());
    let surface = Arc::new(FollowerSurface::new(
        identity.genesis.header.chain_id,
        identity
            .committee
            .members()
            .map(|m| (identity.keys[m as usize], identity.committee.stake(m)))
            .collect(),
        config.upstream.clone(),
        stats.clone(),
        follow.clone(),
        fsync.clone(),
        config.data_dir.clone(),
    ));
    let operator = config
        .operator_listen
        .map(|listen| FollowerServer::start(listen, surface.clone()))
        .transpose()?;
    let (runs, runs_rx) = crossbeam_channel::bounded(RUNS_QUEUE_MAX);
    let fetcher = Fetcher {
        upstream: config.upstream.clone(),
        chain_id: identity.genesis.header.chain_id,
        plan,
        genesis_committee: identity.committee.clone(),
        committees: committees.clone(),
        handovers,
        handovers_asked: None,
        next: ledger.shards.height() + 1,
        last_hash: ledger.previous_ledger_hash,
        held: Vec::new(),
        held_bytes: 0,
        runs,
        stop: stopping.clone(),
        stats: follow.clone(),
    };
    // Not joined at the end: it may sit in a read for up to STREAM_STALL_MS and holds nothing durable.
    std::thread::Builder::new()
        .name("cas-follow".into())
        .spawn(move || fetcher.run())?;
    if !carried.is_empty() {
        tracing::info!(
            transactions = carried.len(),
            "relaying what this node admitted as a member and its epoch did not commit"
        );
    }
    for tx in carried {
        let bytes = bytes::Bytes::from(cas_engine::codec::encode_tx(&tx).to_vec());
        // No client waits here for it: the answer goes nowhere, the transaction to the committee.
        let nobody = crate::clients::Client::Http(SocketAddr::from(([0, 0, 0, 0], 0)));
        if relayed.try_send((nobody, bytes)).is_err() {
            tracing::warn!("the relay queue is full: a carried transaction is dropped");
        }
    }
    // The relay ends when the API's end of the queue goes too.
    drop(relayed);
    let relay = {
        let upstream = config.upstream.clone();
        let waiters = waiters.clone();
        let stop = stopping.clone();
        std::thread::Builder::new()
            .name("cas-relay".into())
            .spawn(move || relay(&upstream, submissions, &waiters, &stop))?
    };
    tracing::info!(
        upstream = ?config.upstream,
        height = ledger.shards.height(),
        "following the committee"
    );
    let mut applier = Applier {
        ledger: ledger.shards,
        index: ledger.index,
        stats: stats.clone(),
        counters: follow.clone(),
        waiters,
        diverged_path,
        committees,
        join: Joining {
            plan,
            me: identity.keypair.public(),
            data_dir: config.data_dir.clone(),
            marked: ledger.committed,
            first_run: true,
        },
        joined: false,
    };
    let status_path = config.data_dir.join("status.json");
    let status = |stopped: bool| {
        let consensus = surface.view();
        crate::write_status(
            &status_path,
            &stats,
            &crate::witness::WitnessShared::default(),
            &crate::snapshot_serve::Anchors::default(),
            0,
            &consensus,
            stopped,
        )
    };
    let applied = applier.run(&runs_rx, &queries_rx, stop, &|| status(false));
    stopping.store(true, Ordering::Relaxed);
    if let Some(api) = api {
        api.stop()?;
    }
    if let Some(operator) = operator {
        operator.stop()?;
    }
    crate::join(relay, "relay")?;
    applier
        .ledger
        .wait_snapshot()
        .context("finishing the last snapshot")?;
    applier.index.sync().context("syncing the index")?;
    applied?;
    if applier.joined {
        tracing::info!(
            height = applier.ledger.height(),
            "this node is in the committee from here: it joins"
        );
        status(false)?;
        return Ok(Next::Join);
    }
    status(true)?;
    Ok(Next::Stop)
}

/// The fetching side: one upstream stream at a time, blocks checked and held until certified.
struct Fetcher {
    upstream: Vec<SocketAddr>,
    chain_id: u32,
    /// Which instance certifies which heights, and the committees that sign them.
    plan: EpochPlan,
    genesis_committee: Committee,
    committees: Arc<Committees>,
    /// The certified hand-overs this node serves with receipts, taken from the upstream as new epochs come, and the
    /// newest epoch asked for.
    handovers: Arc<crate::epochs::Handovers>,
    /// When the upstream was last asked for hand-overs.
    handovers_asked: Option<Instant>,
    /// The next height to take, and the hash of the block below it (the last one certified).
    next: u64,
    last_hash: BlockHash,
    held: Vec<Held>,
    held_bytes: usize,
    runs: crossbeam_channel::Sender<Run>,
    stop: Arc<AtomicBool>,
    stats: Arc<FollowerCounters>,
}

impl Fetcher {
    fn run(mut self) {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .timeout_read(Duration::from_millis(STREAM_STALL_MS))
            .build();
        let mut current = 0;
        let mut failures = 0;
        while !self.stop.load(Ordering::Relaxed) {
            let addr = self.upstream[current];
            self.stats.upstream.store(current, Ordering::Relaxed);
            let from = self.next;
            let parent_retry =
                (current != 0).then(|| Instant::now() + Duration::from_millis(PARENT_RETRY_MS));
            let outcome = self.follow(&agent, addr, parent_retry);
            self.held.clear();
            self.held_bytes = 0;
            self.stats.held.store(0, Ordering::Relaxed);
            match outcome {
                Ok(Ended::Stopped) => return,
                Ok(Ended::BackToParent) => {
                    tracing::info!(%addr, height = self.next - 1, "back to the parent upstream");
                    current = 0;
                    failures = 0;
                    continue;
                }
                Ok(Ended::Closed) if self.next > from => {
                    tracing::info!(%addr, height = self.next - 1, "the upstream closed its stream; reconnecting");
                    failures = 0;
                    continue;
                }
                Ok(Ended::Closed) => {
                    tracing::warn!(%addr, from, "the upstream does not serve this height (its store starts above it)")
                }
                Err(error) => {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%addr, height = self.next, %error, "following this upstream failed; trying the next");
                }
            }
            if self.next > from {
                failures = 0;
            }
            failures += 1;
            current = (current + 1) % self.upstream.len();
            if failures >= self.upstream.len() {
                failures = 0;
                std::thread::sleep(Duration::from_millis(RETRY_PAUSE_MS));
            }
        }
    }

    /// Follows one upstream's stream until it ends, fails, the node stops, or `parent_retry` passes at a certified
    /// block (nothing held).
    fn follow(
        &mut self,
        agent: &ureq::Agent,
        addr: SocketAddr,
        parent_retry: Option<Instant>,
    ) -> Result<Ended> {
        let url = format!("http://{addr}/v1/ledger?from={}", self.next);
        let response = agent
            .get(&url)
            .call()
            .with_context(|| format!("GET {url}"))?;
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        if let Some(height) = response
            .header(crate::ledger_stream::HEIGHT_HEADER)
            .and_then(|h| h.parse::<u64>().ok())
        {
            self.stats
                .upstream_height
                .fetch_max(height, Ordering::Relaxed);
        }
        let mut reader = response.into_reader();
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(Ended::Stopped);
            }
            let Some(frame) = read_frame(&mut reader)? else {
                return Ok(Ended::Closed);
            };
            if let Some(run) = self.take(frame)? {
                // The hand-overs up to the instance after this run's last block: one it may join, or whose
                // certificates come next.
                let upcoming = self.plan.instance_of(run.cert.statement.height + 1);
                let crossing = upcoming != self.plan.instance_of(run.cert.statement.height);
                self.take_handovers(agent, addr, upcoming, crossing);
                if self.runs.send(run).is_err() {
                    return Ok(Ended::Stopped);
                }
                if parent_retry.is_some_and(|at| Instant::now() >= at) {
                    return Ok(Ended::BackToParent);
                }
            }
        }
    }

    /// Checks one frame against the chain held so far; returns the run its certificate completes.
    fn take(&mut self, frame: Frame) -> Result<Option<Run>> {
        let expected = self.next + self.held.len() as u64;
        if frame.height != expected {
            bail!("sent height {} where {expected} was due", frame.height);
        }
        let parent = self.held.last().map_or(self.last_hash, |h| h.hash);
        let held = check_block(frame.block, frame.height, self.chain_id, parent)?;
        if self.held.len() >= UNCERTIFIED_BLOCKS_MAX
            || self.held_bytes + held.bytes.len() > UNCERTIFIED_BYTES_MAX
        {
            bail!(
                "{} blocks ({} bytes) came without a ledger certificate",
                self.held.len() + 1,
                self.held_bytes + held.bytes.len()
            );
        }
        let hash = held.hash;
        self.held_bytes += held.bytes.len();
        self.held.push(held);
        self.stats
            .held
            .store(self.held.len() as u64, Ordering::Relaxed);
        let Some(cert) = frame.cert else {
            return Ok(None);
        };
        let statement = &cert.statement;
        if statement.chain_id != self.chain_id
            || statement.height != frame.height
            || statement.block != hash
        {
            bail!(
                "the certificate at height {} names chain {} height {} block {}, not this block {}",
                frame.height,
                statement.chain_id,
                statement.height,
                statement.block,
                hash
            );
        }
        let epoch = self.plan.instance_of(frame.height);
        if statement.epoch != epoch {
            bail!(
                "the certificate at height {} is signed as epoch {}, but epoch {epoch} serves that height",
                frame.height,
                statement.epoch
            );
        }
        let committee = self.committee(epoch)?;
        verify_ledger_cert(&cert, &committee)
            .map_err(|e| anyhow::anyhow!("the certificate at height {}: {e}", frame.height))?;
        let blocks = std::mem::take(&mut self.held);
        self.held_bytes = 0;
        self.stats.held.store(0, Ordering::Relaxed);
        self.stats
            .certified_tip
            .store(frame.height, Ordering::Relaxed);
        self.next = frame.height + 1;
        self.last_hash = hash;
        Ok(Some(Run { blocks, cert }))
    }
}

impl Fetcher {
    /// If the hand-over to instance `epoch` is not held here, the upstream's (`GET /v1/handovers`) are taken when
    /// they follow from the genesis committee (at most once a second; a failure is only logged: receipts of that
    /// epoch served here lack their chain until a later try succeeds). When the run just taken ends its instance
    /// (`crossing`), the next instance may be one this node joins as a member, after which it follows no more:
    /// it then asks every [`HANDOVER_POLL_MS`] until the hand-over is held, for at most [`HANDOVER_WAIT_MS`] (a
    /// fast chain can reach the boundary before its committee has signed the hand-over).
    fn take_handovers(
        &mut self,
        agent: &ureq::Agent,
        addr: SocketAddr,
        epoch: u64,
        crossing: bool,
    ) {
        if epoch == 0
            || self.handovers.has(epoch)
            || (!crossing
                && self
                    .handovers_asked
                    .is_some_and(|at| at.elapsed() < Duration::from_secs(1)))
        {
            return;
        }
        let deadline = Instant::now() + Duration::from_millis(HANDOVER_WAIT_MS);
        loop {
            self.ask_handovers(agent, addr, epoch);
            if !crossing
                || self.handovers.has(epoch)
                || Instant::now() >= deadline
                || self.stop.load(Ordering::Relaxed)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(HANDOVER_POLL_MS));
        }
    }

    /// One `GET /v1/handovers` of the upstream, merged into the hand-overs held here.
    fn ask_handovers(&mut self, agent: &ureq::Agent, addr: SocketAddr, epoch: u64) {
        self.handovers_asked = Some(Instant::now());
        let url = format!("http://{addr}/v1/handovers");
        let fetched = agent
            .get(&url)
            .call()
            .map_err(anyhow::Error::from)
            .and_then(|response| Ok(response.into_json::<serde_json::Value>()?))
            .and_then(|body| {
                let list: Vec<crate::receipt::HandoverJson> =
                    serde_json::from_value(body["handovers"].clone())?;
                list.iter()
                    .map(crate::receipt::HandoverJson::to_handover)
                    .collect::<Result<Vec<_>>>()
            })
            .and_then(|list| self.handovers.merge(list));
        match fetched {
            Ok(added) => {
                tracing::info!(%addr, epoch, added, "committee hand-overs taken from the upstream")
            }
            Err(error) => {
                tracing::warn!(%addr, epoch, %error, "the upstream's hand-overs were not taken")
            }
        }
    }

    /// The committee of instance `epoch`: the genesis one, or the one the ledger here recorded for it. The election
    /// lies in a run already certified (half an epoch before the epoch starts), so an unknown committee means the
    /// applier has not reached it yet: this waits for it, as long as a stream may stall.
    fn committee(&self, epoch: u64) -> Result<Committee> {
        if epoch == 0 {
            return Ok(self.genesis_committee.clone());
        }
        let deadline = Instant::now() + Duration::from_millis(STREAM_STALL_MS);
        loop {
            if let Some(elected) = self.committees.get(epoch) {
                return committee_of(&elected)
                    .map_err(|error| anyhow::anyhow!("epoch {epoch}'s committee: {error}"));
            }
            if Instant::now() >= deadline || self.stop.load(Ordering::Relaxed) {
                bail!("the ledger here holds no committee for epoch {epoch} yet");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

enum Ended {
    /// The node is stopping.
    Stopped,
    /// The upstream ended the stream between frames.
    Closed,
    /// A fallback upstream was followed long enough: the parent is tried again.
    BackToParent,
}

/// Decodes a streamed block and checks what its hash does not cover by itself: its height, chain, parent, the root
/// of its transactions' ids and the root of their signatures (so the header hash, which a certificate covers,
/// vouches for every byte: no signature needs checking here).
fn check_block(bytes: Vec<u8>, height: u64, chain_id: u32, parent: BlockHash) -> Result<Held> {
    let block = decode_block(&bytes).with_context(|| format!("block {height} does not decode"))?;
    let header = &block.header;
    if header.height.to_native() != height || header.chain_id.to_native() != chain_id {
        bail!(
            "block {height} says height {} on chain {}",
            header.height.to_native(),
            header.chain_id.to_native()
        );
    }
    if cas_engine::Hash32(header.parent.0) != parent {
        bail!("block {height} does not extend the block below it (parent {parent})");
    }
    let ids: Vec<TxId> = block.txs.iter().map(|tx| tx.tx_id()).collect();
    if merkle::root(&ids).0 != header.tx_root.0 {
        bail!("block {height}: its transactions are not the ones its header's root names");
    }
    // A tx id leaves out the signatures; the header's signatures root covers them (the members checked them at
    // admission, and certify the header).
    if block.compute_sig_root().0 != header.sig_root.0 {
        bail!("block {height}: its signatures are not the ones its header's signatures root names: not the block the committee certified");
    }
    let claims = claims_of(block.txs.iter());
    let hash = header.hash();
    Ok(Held {
        height,
        hash,
        bytes,
        ids,
        claims,
    })
}

/// The applying side: certified runs into this node's ledger and index, API reads between them.
struct Applier {
    ledger: cas_shards::DurableLedger,
    index: TxIndex,
    stats: Arc<Mutex<Executed>>,
    counters: Arc<FollowerCounters>,
    waiters: Arc<Waiters>,
    /// Written when this node's result differs from the certified one ([`DIVERGED_FILE`]).
    diverged_path: std::path::PathBuf,
    /// Where the elections this node applies are told to the fetcher.
    committees: Arc<Committees>,
    join: Joining,
    /// The ledger here ends where this node joins the committee: the run stops.
    joined: bool,
}

/// What a follower needs to know when it may join the committee: at the base of an instance whose committee it is
/// in (or inside it, when it was a member before a restart), while the committee is still in that epoch.
struct Joining {
    plan: EpochPlan,
    me: cas_engine::PublicKey,
    data_dir: std::path::PathBuf,
    /// The consensus block of the ledger's height, when the execution marker names it (kept at every base this
    /// node could join at, and by a member).
    marked: Option<(u64, BlockHash)>,
    /// No run taken yet since start.
    first_run: bool,
}

impl Applier {
    fn run(
        &mut self,
        runs: &crossbeam_channel::Receiver<Run>,
        queries: &crossbeam_channel::Receiver<LedgerQuery>,
        stop: &AtomicBool,
        status: &dyn Fn() -> Result<()>,
    ) -> Result<()> {
        let mut queries = queries.clone();
        let mut status_at = Instant::now();
        while !stop.load(Ordering::Relaxed) && !self.joined {
            crossbeam_channel::select! {
                recv(runs) -> run => match run {
                    Ok(run) => self.apply(run)?,
                    // It stops on the same flag.
                    Err(_) if stop.load(Ordering::Relaxed) => break,
                    Err(_) => bail!("the fetching thread stopped"),
                },
                recv(queries) -> query => match query {
                    Ok(query) => answer_query(&self.ledger, query),
                    Err(_) => queries = crossbeam_channel::never(),
                },
                default(Duration::from_millis(100)) => {}
            }
            if status_at.elapsed() >= Duration::from_millis(STATUS_EVERY_MS) {
                status_at = Instant::now();
                status()?;
            }
        }
        Ok(())
    }

    fn apply(&mut self, run: Run) -> Result<()> {
        let Run { blocks, cert } = run;
        let last = blocks.len() - 1;
        let tip = self
            .counters
            .certified_tip
            .load(Ordering::Relaxed)
            .max(self.counters.upstream_height.load(Ordering::Relaxed));
        if std::mem::take(&mut self.join.first_run) && self.may_join(tip)? {
            self.joined = true;
            return Ok(());
        }
        let base_timestamp_ms = {
            let end = blocks[last].height;
            let epoch = self.join.plan.instance_of(end + 1);
            (epoch != 0 && self.join.plan.base_height(epoch) == end)
                .then(|| {
                    decode_block(&blocks[last].bytes).map(|b| b.header.timestamp_ms.to_native())
                })
                .transpose()
                .map_err(|error| anyhow::anyhow!("block {end}: {error}"))?
        };
        for (position, held) in blocks.into_iter().enumerate() {
            let Held {
                height,
                hash,
                bytes,
                ids,
                claims,
            } = held;
            let receipt = self
                .ledger
                .append_attested(bytes)
                .with_context(|| format!("applying certified block {height}"))?;
            let verdicts = &receipt.outcome.verdicts;
            let results = results_of(&ids, verdicts);
            if position == last {
                let statement = &cert.statement;
                let root = results_root(&results);
                if receipt.outcome.utxo_commitment != statement.utxo_commitment
                    || root != statement.results_root
                {
                    let reason = format!(
                        "block {height}: this node's result (UTXO commitment {}, results root {root}) is not the \
                         one the committee certified ({}, {})",
                        receipt.outcome.utxo_commitment,
                        statement.utxo_commitment,
                        statement.results_root
                    );
                    // Kept, so the node does not serve this ledger again after a restart.
                    std::fs::write(&self.diverged_path, format!("{reason}\n"))
                        .with_context(|| format!("writing {}", self.diverged_path.display()))?;
                    bail!(
                        "block {height}: this node's result (UTXO commitment {}, results root {root}) is not the \
                         one the committee certified ({}, {}): its ledger is not the committee's; stopping",
                        receipt.outcome.utxo_commitment,
                        statement.utxo_commitment,
                        statement.results_root
                    );
                }
            }
            let claims = applied_claims(claims, verdicts);
            self.index
                .append_results(height, hash, &results, &claims)
                .with_context(|| format!("indexing block {height}"))?;
            if position == last {
                self.index
                    .append_cert(&cert)
                    .with_context(|| format!("keeping the ledger certificate of block {height}"))?;
            }
            self.executed(height, hash, &ids, &receipt.outcome);
            let params = self.ledger.ledger().params.stake;
            if let Some(epoch) = cas_engine::stake::elects_at(&params, height) {
                if let Some(members) = crate::executor::read_election(&self.ledger, epoch) {
                    self.committees.record(epoch, members);
                }
            }
        }
        self.counters
            .applied_ms
            .store(crate::witness::wall_ms(), Ordering::Relaxed);
        if let Some(timestamp_ms) = base_timestamp_ms {
            self.at_base(&cert, timestamp_ms)?;
            if self.may_join(tip)? {
                self.joined = true;
            }
        }
        Ok(())
    }

    /// The run ended at the last block of an instance, certified (`cert`): if this node is in the next instance's
    /// committee, the block's consensus hash becomes the execution marker and the next instance's base is kept,
    /// so the member it becomes starts there.
    fn at_base(&mut self, cert: &LedgerCert, timestamp_ms: u64) -> Result<()> {
        let statement = &cert.statement;
        let epoch = self.join.plan.instance_of(statement.height + 1);
        if !self.in_committee(epoch) {
            return Ok(());
        }
        crate::durable::ExecutedFile::new(&self.join.data_dir)
            .store(&[(statement.height, statement.consensus)])?;
        crate::durable::EpochBaseFile::new(&self.join.data_dir).store(
            epoch,
            cas_consensus::bft::Base {
                height: statement.height,
                hash: statement.consensus,
                timestamp_ms,
            },
        )?;
        self.join.marked = Some((statement.height, statement.consensus));
        Ok(())
    }

    fn in_committee(&self, epoch: u64) -> bool {
        epoch != 0
            && self
                .committees
                .get(epoch)
                .is_some_and(|members| members.iter().any(|m| m.key == self.join.me))
    }

    /// Whether the member path can start from the ledger here: this node is in the committee of the instance
    /// serving the next height, the execution marker names the ledger's height, that instance's base is known,
    /// and the committee is still in that epoch (`tip`, the newest height certified or reported by an upstream, is
    /// within it; an instance the committee has left could not catch up).
    fn may_join(&self, tip: u64) -> Result<bool> {
        let height = self.ledger.height();
        let plan = &self.join.plan;
        let epoch = plan.instance_of(height + 1);
        if !self.in_committee(epoch)
            || self.join.marked.map(|(h, _)| h) != Some(height)
            || plan.last_height(epoch).is_some_and(|last| tip > last)
        {
            return Ok(false);
        }
        let base_known = height == plan.base_height(epoch)
            || crate::durable::EpochBaseFile::new(&self.join.data_dir)
                .load()?
                .iter()
                .any(|(e, _)| *e == epoch);
        Ok(base_known)
    }

    /// The block's counters, and its answers to the clients waiting here.
    fn executed(
        &mut self,
        height: u64,
        hash: BlockHash,
        ids: &[TxId],
        outcome: &cas_shards::BlockOutcome,
    ) {
        // The issuance, last, is the executors' own, not a client's.
        let client_txs = ids.len().saturating_sub(1);
        if !self.waiters.is_empty() {
            for (index, (id, verdict)) in
                ids[..client_txs].iter().zip(&outcome.verdicts).enumerate()
            {
                self.waiters.deliver_for(
                    None,
                    ClientAnswer::Final {
                        tx: *id,
                        height,
                        index: index as u32,
                        block: hash,
                        rejection: verdict.as_ref().err().map(RuleFailure::of),
                    },
                );
            }
        }
        let mut stats = self.stats.lock().expect("stats lock");
        stats.height = height;
        stats.utxo_commitment = outcome.utxo_commitment;
        stats.txs += client_txs as u64;
        for verdict in &outcome.verdicts[..client_txs] {
            if let Err(error) = verdict {
                stats.rejected += 1;
                *stats
                    .rejected_by_code
                    .entry(error.code().number())
                    .or_default() += 1;
            }
        }
        stats.issued += outcome.issued;
        stats
            .recent_commitments
            .push_back((height, outcome.utxo_commitment));
        while stats.recent_commitments.len() > RECENT_COMMITMENTS_MAX {
            stats.recent_commitments.pop_front();
        }
    }
}

/// Relays the API's submissions to the upstream, in turn, until one takes it; the answer goes to the waiting
/// request. [`RELAY_WORKERS`] at once, each waiting for its upstream's answer. Ends when the API stops.
fn relay(
    upstream: &[SocketAddr],
    submissions: std::sync::mpsc::Receiver<Submission>,
    waiters: &Waiters,
    stop: &AtomicBool,
) {
    let submissions = Mutex::new(submissions);
    std::thread::scope(|scope| {
        for _ in 0..RELAY_WORKERS {
            scope.spawn(|| {
                let agent = ureq::AgentBuilder::new()
                    .timeout_connect(Duration::from_millis(CONNECT_TIMEOUT_MS))
                    .timeout(Duration::from_millis(RELAY_TIMEOUT_MS))
                    .build();
                loop {
                    // One worker waits on the queue at a time; it lets go as soon as it has a submission.
                    let next = submissions.lock().expect("relay queue lock").recv();
                    let Ok((_client, bytes)) = next else {
                        return;
                    };
                    // Stopping: what is still queued is dropped (its requests time out `pending`), not relayed
                    // to an upstream that may be why it queued.
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    // The API decoded it before queueing it.
                    let Ok(id) = cas_engine::codec::decode_tx(&bytes).map(|tx| tx.tx_id()) else {
                        continue;
                    };
                    let answer = upstream
                        .iter()
                        .find_map(|addr| relay_one(&agent, *addr, &bytes, id))
                        .unwrap_or(ClientAnswer::Overloaded {
                            tx: id,
                            retry_after_ms: RETRY_PAUSE_MS * 2,
                        });
                    waiters.deliver_for(None, answer);
                }
            });
        }
    });
}

/// One upstream's answer to a relayed submission, as the client answer it stands for; None when that upstream
/// cannot take it now (unreachable, stopping) and the next one should be asked.
fn relay_one(
    agent: &ureq::Agent,
    addr: SocketAddr,
    bytes: &[u8],
    id: TxId,
) -> Option<ClientAnswer> {
    let url = format!("http://{addr}/v1/tx");
    let response = match agent
        .post(&url)
        .set("Content-Type", "application/octet-stream")
        .send_bytes(bytes)
    {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response,
        Err(error) => {
            tracing::debug!(%addr, %error, "relaying a submission failed");
            return None;
        }
    };
    let body: serde_json::Value = response.into_json().ok()?;
    let text = |field: &str| body.get(field).and_then(|v| v.as_str()).unwrap_or_default();
    let number = |field: &str| body.get(field).and_then(|v| v.as_u64());
    match text("status") {
        // Final there: this node answers `final` when it executes the block.
        "accepted" | "pending" | "final" => Some(ClientAnswer::Accepted { tx: id }),
        "duplicate" => Some(ClientAnswer::Duplicate { tx: id }),
        "rejected" => Some(ClientAnswer::Rejected {
            tx: Some(id),
            code: number("code")
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(0),
            reason: ClientAnswer::reason(format!("{} (relayed from {addr})", text("reason"))),
        }),
        "overloaded" => Some(ClientAnswer::Overloaded {
            tx: id,
            retry_after_ms: number("retry_after_ms").unwrap_or(RETRY_PAUSE_MS),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cas_consensus::ledger_cert::LedgerStatement;
    use cas_consensus::messages::SignerSignature;
    use cas_engine::codec::encode_block;
    use cas_engine::fixtures::{key, COMMITTEE_KEYS};
    use cas_engine::{Block, BlockHeader, Hash32, Keypair, PublicKey};

    const CHAIN: u32 = 1;

    fn members() -> Vec<Keypair> {
        (0..4).map(|i| key(COMMITTEE_KEYS, i)).collect()
    }

    fn fetcher(last_hash: BlockHash) -> (Fetcher, crossbeam_channel::Receiver<Run>) {
        let (runs, runs_rx) = crossbeam_channel::bounded(4);
        let committee =
            Committee::new(members().iter().map(|k| (k.public(), 1)).collect()).unwrap();
        let fetcher = Fetcher {
            upstream: vec!["127.0.0.1:1".parse().unwrap()],
            chain_id: CHAIN,
            plan: EpochPlan::new(0, &Default::default()),
            genesis_committee: committee.clone(),
            committees: Default::default(),
            handovers: Arc::new(
                crate::epochs::Handovers::open(
                    tempfile::tempdir().unwrap().path(),
                    CHAIN,
                    &committee,
                )
                .unwrap(),
            ),
            handovers_asked: None,
            next: 1,
            last_hash,
            held: Vec::new(),
            held_bytes: 0,
            runs,
            stop: Arc::new(AtomicBool::new(false)),
            stats: Arc::new(FollowerCounters::default()),
        };
        (fetcher, runs_rx)
    }

    /// An empty block at `height` over `parent`.
    fn block(height: u64, parent: BlockHash) -> Block {
        Block {
            header: BlockHeader {
                chain_id: CHAIN,
                height,
                round: height,
                parent,
                tx_root: merkle::root(&[]),
                sig_root: cas_engine::block::signatures_root(&[]),
                proposer: PublicKey([7; 32]),
                timestamp_ms: height,
                utxo_commitment: Hash32([height as u8; 32]),
            },
            txs: Vec::new(),
        }
    }

    /// A certificate on `block` signed by the first `signers` members.
    fn cert(block: &Block, signers: usize) -> LedgerCert {
        let statement = LedgerStatement {
            chain_id: CHAIN,
            epoch: 0,
            height: block.header.height,
            block: block.header.hash(),
            consensus: Hash32([1; 32]),
            results_root: Hash32([2; 32]),
            utxo_commitment: Hash32([3; 32]),
        };
        let digest = statement.digest();
        LedgerCert {
            statement,
            signatures: members()[..signers]
                .iter()
                .enumerate()
                .map(|(i, k)| SignerSignature {
                    signer: i as u16,
                    signature: k.sign(&digest.0),
                })
                .collect(),
        }
    }

    fn frame(block: &Block, cert: Option<LedgerCert>) -> Frame {
        Frame {
            height: block.header.height,
            block: encode_block(block).to_vec(),
            cert,
        }
    }

    /// Three blocks, the certificate on the third: one run of three, handed over only then.
    #[test]
    fn a_certificate_releases_every_block_it_covers() {
        let genesis = Hash32([9; 32]);
        let (mut fetcher, _runs) = fetcher(genesis);
        let b1 = block(1, genesis);
        let b2 = block(2, b1.header.hash());
        let b3 = block(3, b2.header.hash());
        assert!(fetcher.take(frame(&b1, None)).unwrap().is_none());
        assert!(fetcher.take(frame(&b2, None)).unwrap().is_none());
        let run = fetcher
            .take(frame(&b3, Some(cert(&b3, 3))))
            .unwrap()
            .unwrap();
        assert_eq!(
            run.blocks.iter().map(|b| b.height).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!((fetcher.next, fetcher.last_hash), (4, b3.header.hash()));
        assert!(fetcher.held.is_empty());
    }

    /// With hand-overs every 8 blocks, height 9 is epoch 1's: its certificate must name epoch 1 and carry a quorum
    /// of the committee the ledger elected for it (here the last two members with most of the stake), which the
    /// fetcher waits for until the applier records it.
    #[test]
    fn a_later_epoch_is_certified_by_its_elected_committee() {
        let genesis = Hash32([9; 32]);
        let (mut fetcher, _runs) = fetcher(genesis);
        fetcher.plan = EpochPlan::new(
            8,
            &cas_consensus::protocol::ProtocolSchedule::new(vec![
                cas_consensus::protocol::ProtocolUpgrade {
                    version: cas_consensus::protocol::PROTOCOL_HANDOVERS,
                    height: 1,
                },
            ])
            .unwrap(),
        );
        let mut parent = genesis;
        for height in 1..=8 {
            let b = block(height, parent);
            parent = b.header.hash();
            let certified = (height == 8).then(|| cert(&b, 3));
            fetcher.take(frame(&b, certified)).unwrap();
        }
        let b9 = block(9, parent);
        let signed = |epoch: u64, signers: &[usize]| {
            let mut c = cert(&b9, 0);
            c.statement.epoch = epoch;
            let digest = c.statement.digest();
            c.signatures = signers
                .iter()
                .enumerate()
                .map(|(i, m)| SignerSignature {
                    signer: i as u16,
                    signature: members()[*m].sign(&digest.0),
                })
                .collect();
            c
        };
        // Still the genesis committee's signatures, as epoch 0.
        let error = fetcher
            .take(frame(&b9, Some(signed(0, &[0, 1, 2]))))
            .err()
            .expect("refused");
        assert!(error.to_string().contains("epoch 1 serves"), "{error}");
        // Epoch 1 before the ledger here recorded its committee: given up (at once, as the node stops).
        let (mut fetcher, _runs) = {
            let plan = fetcher.plan;
            let (mut f, runs) = self::fetcher(genesis);
            f.plan = plan;
            f.next = 9;
            f.last_hash = parent;
            (f, runs)
        };
        fetcher.stop.store(true, Ordering::Relaxed);
        let error = fetcher
            .take(frame(&b9, Some(signed(1, &[3, 2]))))
            .err()
            .expect("refused");
        assert!(
            error.to_string().contains("no committee for epoch 1"),
            "{error}"
        );
        fetcher.stop.store(false, Ordering::Relaxed);
        // Recorded: members 3 and 2 elected with 10 each, 0 and 1 with 1: the first two are a quorum.
        let elected = |m: usize, stake: u64| cas_engine::stake::Candidate {
            key: members()[m].public(),
            address: None,
            stake,
        };
        fetcher.committees.record(
            1,
            vec![elected(3, 10), elected(2, 10), elected(0, 1), elected(1, 1)],
        );
        fetcher.held.clear();
        let error = fetcher
            .take(frame(&b9, Some(signed(1, &[0, 1]))))
            .err()
            .expect("refused");
        assert!(
            error.to_string().contains("certificate at height 9"),
            "{error}"
        );
        fetcher.held.clear();
        let run = fetcher
            .take(frame(&b9, Some(signed(1, &[3, 2]))))
            .unwrap()
            .expect("certified by epoch 1's quorum");
        assert_eq!(run.blocks.len(), 1);
    }

    #[test]
    fn what_the_chain_or_the_committee_does_not_vouch_for_is_refused() {
        let genesis = Hash32([9; 32]);
        let b1 = block(1, genesis);
        let refused = |frames: Vec<Frame>| -> String {
            let (mut fetcher, _runs) = fetcher(genesis);
            let mut last = None;
            for frame in frames {
                last = Some(fetcher.take(frame));
            }
            let error = last.unwrap().err().expect("refused").to_string();
            assert_eq!(
                (fetcher.next, fetcher.last_hash),
                (1, genesis),
                "nothing taken"
            );
            error
        };
        // Another height than the next.
        let skipped = block(2, genesis);
        assert!(refused(vec![frame(&skipped, None)]).contains("where 1 was due"));
        // Not over the last block.
        let stranger = block(1, Hash32([8; 32]));
        assert!(refused(vec![frame(&stranger, None)]).contains("does not extend"));
        // Transactions the header's root does not name.
        let mut swapped = block(1, genesis);
        swapped.header.tx_root = Hash32([5; 32]);
        assert!(refused(vec![frame(&swapped, None)]).contains("root"));
        // A certificate on another block, or short of a quorum, or of a later epoch.
        let other = block(1, Hash32([6; 32]));
        assert!(refused(vec![frame(&b1, Some(cert(&other, 3)))]).contains("not this block"));
        assert!(refused(vec![frame(&b1, Some(cert(&b1, 2)))]).contains("certificate at height 1"));
        let mut later = cert(&b1, 3);
        later.statement.epoch = 1;
        assert!(refused(vec![frame(&b1, Some(later))]).contains("signed as epoch 1"));
        // A signature on something else.
        let mut forged = cert(&b1, 3);
        forged.signatures[0].signature = members()[0].sign(b"something else");
        assert!(refused(vec![frame(&b1, Some(forged))]).contains("certificate at height 1"));
        // Undecodable bytes.
        let garbage = Frame {
            height: 1,
            block: vec![0xff; 40],
            cert: None,
        };
        assert!(refused(vec![garbage]).contains("does not decode"));
    }

    /// Signatures are outside the tx ids, but under the header's signatures root: a block whose signature an
    /// upstream changed is refused before anything is written; the same block as signed is taken.
    #[test]
    fn a_block_with_a_changed_signature_is_refused() {
        use cas_engine::fixtures::{transfer, ACCOUNT_KEYS};
        use cas_engine::{AssetId, OutPoint, TxOutput};
        let genesis = Hash32([9; 32]);
        let owner = key(ACCOUNT_KEYS, 0);
        let coin = (
            OutPoint {
                tx: Hash32([1; 32]),
                index: 0,
            },
            TxOutput {
                amount: 100,
                asset: AssetId::CAS,
                owner: owner.public(),
                unlock_height: None,
            },
        );
        let tx = transfer(CHAIN, &owner, &[coin], &key(ACCOUNT_KEYS, 1), 10, 1);
        let with = |tx: cas_engine::Transaction| {
            let mut b = block(1, genesis);
            b.header.tx_root = merkle::root(&[tx.tx_id()]);
            b.header.sig_root = cas_engine::block::signatures_root(std::slice::from_ref(&tx));
            b.txs = vec![tx];
            b
        };
        let signed = with(tx.clone());
        let (mut taker, _runs) = fetcher(genesis);
        assert!(taker.take(frame(&signed, None)).unwrap().is_none());
        // The certified header, another signature under it.
        let mut changed = signed.clone();
        changed.txs[0].signatures[0].signature.0[0] ^= 1;
        let (mut taker, _runs) = fetcher(genesis);
        let error = taker.take(frame(&changed, None)).err().unwrap();
        assert!(error.to_string().contains("signatures root"), "{error}");
        // A header made up for the changed signature is another block: no certificate on the real one covers it.
        let made_up = with(changed.txs[0].clone());
        assert_ne!(made_up.header.hash(), signed.header.hash());
    }

    #[test]
    fn an_upstream_that_never_certifies_is_given_up() {
        let genesis = Hash32([9; 32]);
        let (mut fetcher, _runs) = fetcher(genesis);
        let mut parent = genesis;
        for height in 1..=UNCERTIFIED_BLOCKS_MAX as u64 {
            let b = block(height, parent);
            parent = b.header.hash();
            assert!(fetcher.take(frame(&b, None)).unwrap().is_none());
        }
        let one_more = block(UNCERTIFIED_BLOCKS_MAX as u64 + 1, parent);
        let error = fetcher.take(frame(&one_more, None)).err().unwrap();
        assert!(
            error.to_string().contains("without a ledger certificate"),
            "{error}"
        );
    }
}
