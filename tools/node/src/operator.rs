//! The operator's surface on `operator_listen` (node.toml): `GET /metrics` (Prometheus text format, `cas_`
//! prefix, base units), `GET /health` (200 `ok` only when the node is in sync with the committee and its disk is
//! writable; 503 with a one-line reason otherwise) and `GET /status` (JSON: version, chain, committee, heights,
//! peers, catching up, last snapshot).
//!
//! It runs on its own thread with a small runtime of its own, so a saturated client API never hides the node's
//! state, and it reads only what the other threads already publish: the executor's stats, the driver's consensus
//! view (refreshed every second), netio's per-peer and endpoint counters, the witness and snapshot counters, and
//! /proc for CPU and memory. A scrape builds a fresh registry from those values (the one histogram, submit to
//! final, is kept across scrapes), so nothing here can fall out of step with status.json.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cas_engine::PublicKey;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};
use serde_json::{json, Value};

use crate::executor::Executed;
use crate::snapshot_serve::Anchors;
use crate::witness::WitnessShared;

/// The consensus side as the driver last published it (every second).
#[derive(Clone, Debug)]
pub struct ConsensusView {
    /// The driver's counters (as in status.json's `consensus`).
    pub counters: Value,
    pub high_qc_height: u64,
    /// A snapshot is being fetched or installed.
    pub catching_up: bool,
    pub at: Instant,
    /// The committee of the instance running now (it changes at hand-overs), this node's place in it and its
    /// quorum; empty until the driver first reports.
    pub committee: Vec<(PublicKey, u64)>,
    pub member: u16,
    pub quorum_stake: u64,
}

impl Default for ConsensusView {
    fn default() -> Self {
        ConsensusView {
            counters: json!({}),
            high_qc_height: 0,
            catching_up: true,
            at: Instant::now(),
            committee: Vec::new(),
            member: 0,
            quorum_stake: 0,
        }
    }
}

/// Blocks the executor may trail the committed height by and still be in sync (a burst of commits under load).
pub const HEALTH_EXECUTION_LAG_MAX: u64 = 256;
/// Blocks the committed height may trail the highest certified block this node has seen (2 in steady state).
pub const HEALTH_COMMIT_LAG_MAX: u64 = 32;
/// The driver publishes every second; older than this, its loop is stuck.
pub const HEALTH_VIEW_STALE: Duration = Duration::from_secs(5);
/// How long a disk check's verdict is reused (each check writes and fsyncs a small file).
const DISK_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Submit-to-final latency buckets, seconds: 5 ms to about 41 s.
fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.005, 2.0, 14).expect("valid buckets")
}

/// What the operator endpoints read.
pub struct OperatorState {
    pub chain_id: u32,
    pub me: u16,
    pub committee: Vec<(PublicKey, u64)>,
    pub quorum_stake: u64,
    pub netio: Arc<cas_netio::Node>,
    pub stats: Arc<Mutex<Executed>>,
    pub consensus: Arc<Mutex<ConsensusView>>,
    pub witness: Arc<WitnessShared>,
    pub anchors: Arc<Anchors>,
    pub data_dir: PathBuf,
    pub started: Instant,
    /// Fed by the executor when it answers a client: from admission on this node to final.
    pub submit_to_final: Histogram,
    /// Fed by the block store, the index and the journal.
    pub fsync: prometheus::HistogramVec,
    /// The HTTP API's queues, when it runs.
    api: Option<ApiQueues>,
    disk: DiskProbe,
}

/// Whether the data folder takes a write: a small file written and fsynced, the verdict reused for
/// [`DISK_CHECK_EVERY`].
pub(crate) struct DiskProbe {
    data_dir: PathBuf,
    last: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl DiskProbe {
    pub(crate) fn new(data_dir: PathBuf) -> DiskProbe {
        DiskProbe {
            data_dir,
            last: Mutex::new(None),
        }
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        let mut last = self.last.lock().expect("disk lock");
        if let Some((at, verdict)) = last.as_ref() {
            if at.elapsed() < DISK_CHECK_EVERY {
                return verdict.clone();
            }
        }
        let path = self.data_dir.join("health.probe");
        let verdict = (|| -> std::io::Result<()> {
            use std::io::Write;
            let mut file = std::fs::File::create(&path)?;
            file.write_all(b"ok\n")?;
            file.sync_all()
        })()
        .map_err(|e| {
            format!(
                "the data folder {} is not writable: {e}",
                self.data_dir.display()
            )
        });
        *last = Some((Instant::now(), verdict.clone()));
        verdict
    }
}

/// What the HTTP API holds in its bounded queues, read for their depths.
pub struct ApiQueues {
    /// Reads waiting for the executor (at most [`crate::api::QUERY_QUEUE_MAX`]).
    pub queries: crossbeam_channel::Sender<crate::api::LedgerQuery>,
    /// Block streams open (at most [`crate::api::STREAMS_MAX`]).
    pub streams: Arc<std::sync::atomic::AtomicUsize>,
    /// Requests held until their transaction is final (`?wait=final`).
    pub waiters: Arc<crate::api::Waiters>,
}

/// fdatasync durations by file: the ledger's block store (`ledger`), the transaction index (`index`) and the
/// consensus journal (`journal`); made before the node opens them (they observe into it).
pub fn fsync_histogram() -> prometheus::HistogramVec {
    prometheus::HistogramVec::new(
        HistogramOpts::new(
            "cas_fsync_seconds",
            "How long each fdatasync took, by file.",
        )
        .buckets(prometheus::exponential_buckets(0.000_05, 2.0, 16).expect("valid buckets")),
        &["file"],
    )
    .expect("valid histogram")
}

/// The submit-to-final histogram, made before the executor starts (it observes into it).
pub fn submit_to_final_histogram() -> Histogram {
    Histogram::with_opts(
        HistogramOpts::new(
            "cas_submit_to_final_seconds",
            "From admission on this node to the transaction's final answer (executed and indexed).",
        )
        .buckets(latency_buckets()),
    )
    .expect("valid histogram")
}

impl OperatorState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        chain_id: u32,
        me: u16,
        committee: Vec<(PublicKey, u64)>,
        quorum_stake: u64,
        netio: Arc<cas_netio::Node>,
        stats: Arc<Mutex<Executed>>,
        consensus: Arc<Mutex<ConsensusView>>,
        witness: Arc<WitnessShared>,
        anchors: Arc<Anchors>,
        data_dir: PathBuf,
        submit_to_final: Histogram,
        fsync: prometheus::HistogramVec,
    ) -> OperatorState {
        OperatorState {
            chain_id,
            me,
            committee,
            quorum_stake,
            netio,
            stats,
            consensus,
            witness,
            anchors,
            disk: DiskProbe::new(data_dir.clone()),
            data_dir,
            started: Instant::now(),
            submit_to_final,
            fsync,
            api: None,
        }
    }

    /// With the HTTP API's queues to export.
    pub fn with_api(self, api: Option<ApiQueues>) -> OperatorState {
        OperatorState { api, ..self }
    }

    /// The committee of the running instance, this node's place and the quorum: as the driver last reported them
    /// (they change at hand-overs), the ones it started with before that.
    fn committee_now<'a>(&'a self, view: &'a ConsensusView) -> (&'a [(PublicKey, u64)], u16, u64) {
        if view.committee.is_empty() {
            (&self.committee, self.me, self.quorum_stake)
        } else {
            (&view.committee, view.member, view.quorum_stake)
        }
    }

    /// None when in sync with a writable disk, else the first reason it is not.
    pub fn unhealthy(&self) -> Option<String> {
        if let Err(reason) = self.disk.check() {
            return Some(reason);
        }
        let view = self.consensus.lock().expect("consensus view lock").clone();
        if view.at.elapsed() > HEALTH_VIEW_STALE {
            return Some(format!(
                "the consensus loop has not reported for {} s",
                view.at.elapsed().as_secs()
            ));
        }
        if view.catching_up {
            return Some(
                "catching up: fetching or installing a snapshot from the committee".into(),
            );
        }
        let committed = view.counters["committed_height"].as_u64().unwrap_or(0);
        if view.high_qc_height > committed + HEALTH_COMMIT_LAG_MAX {
            return Some(format!(
                "catching up: committed height {committed}, the committee has certified {}",
                view.high_qc_height
            ));
        }
        let executed = self.stats.lock().expect("stats lock").height;
        if committed > executed + HEALTH_EXECUTION_LAG_MAX {
            return Some(format!(
                "catching up: executed height {executed}, committed {committed}"
            ));
        }
        let connected: std::collections::HashSet<PublicKey> = self
            .netio
            .peer_stats()
            .into_iter()
            .filter(|p| p.connected)
            .map(|p| p.key)
            .collect();
        let (committee, me, quorum_stake) = self.committee_now(&view);
        let stake: u64 = committee
            .iter()
            .enumerate()
            .filter(|(i, (key, _))| *i == me as usize || connected.contains(key))
            .map(|(_, (_, stake))| stake)
            .sum();
        if stake < quorum_stake {
            return Some(format!(
                "cut off: this node and its connected peers hold stake {stake}, a quorum is {quorum_stake}"
            ));
        }
        None
    }
}

/// The operator endpoints' thread.
pub struct OperatorServer(crate::api::HttpThread);

impl OperatorServer {
    /// Binds `listen` now (an address in use fails the node's start) and serves on a thread of its own.
    pub fn start(listen: SocketAddr, state: OperatorState) -> Result<OperatorServer> {
        let app = router(Arc::new(state));
        crate::api::HttpThread::start("cas-operator", "the operator endpoints", listen, app)
            .map(OperatorServer)
    }

    pub fn stop(self) -> Result<()> {
        self.0.stop()
    }
}

fn router(state: Arc<OperatorState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/status", get(status))
        .with_state(state)
}

async fn health(State(state): State<Arc<OperatorState>>) -> Response {
    health_response(state.unhealthy())
}

async fn status(State(state): State<Arc<OperatorState>>) -> Response {
    let view = state.consensus.lock().expect("consensus view lock").clone();
    let stats = state.stats.lock().expect("stats lock").clone();
    let peers: Vec<Value> = state
        .netio
        .peer_stats()
        .iter()
        .map(|p| {
            json!({
                "key": p.key.to_hex(),
                "connected": p.connected,
                "rtt_ms": p.rtt.as_secs_f64() * 1e3,
                "reconnects": p.reconnects,
            })
        })
        .collect();
    let (committee, member, _) = state.committee_now(&view);
    let committee: Vec<Value> = committee
        .iter()
        .map(|(key, stake)| json!({"key": key.to_hex(), "stake": stake}))
        .collect();
    let unhealthy = state.unhealthy();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "chain_id": state.chain_id,
        "member": member,
        "committee": committee,
        "height": stats.height,
        "final_height": view.counters["committed_height"],
        "round": view.counters["round"],
        "protocol": view.counters["protocol"],
        "protocol_max": view.counters["protocol_max"],
        "protocol_next_upgrade": view.counters["protocol_next_upgrade"],
        "high_qc_height": view.high_qc_height,
        "catching_up": view.catching_up,
        "healthy": unhealthy.is_none(),
        "health_reason": unhealthy,
        "peers": peers,
        "last_snapshot_height": state.anchors.latest_height(),
        "snapshot_installs": stats.snapshot_installs,
        "uptime_s": state.started.elapsed().as_secs(),
    }))
    .into_response()
}

async fn metrics(State(state): State<Arc<OperatorState>>) -> Response {
    metrics_response(render(&state))
}

/// A scrape's answer: the text, or 500 with why it could not be rendered.
fn metrics_response(rendered: Result<String>) -> Response {
    match rendered {
        Ok(text) => (
            StatusCode::OK,
            [("content-type", prometheus::TEXT_FORMAT)],
            text,
        )
            .into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("metrics: {error:#}\n"),
        )
            .into_response(),
    }
}

/// `/health`'s answer: 200 `ok`, or 503 with the one-line reason.
fn health_response(unhealthy: Option<String>) -> Response {
    match unhealthy {
        None => (StatusCode::OK, "ok\n").into_response(),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response(),
    }
}

/// One scrape's worth of metrics, in Prometheus text format.
pub fn render(state: &OperatorState) -> Result<String> {
    let scrape = Scrape::default();
    let registry = &scrape.registry;
    let gauge = |name: &str, help: &str, value: i64| scrape.gauge(name, help, value);
    let counter = |name: &str, help: &str, value: u64| scrape.counter(name, help, value);
    let view = state.consensus.lock().expect("consensus view lock").clone();
    let stats = state.stats.lock().expect("stats lock").clone();
    let field = |key: &str| view.counters[key].as_u64().unwrap_or(0);

    gauge(
        "cas_height",
        "The executed ledger height.",
        stats.height as i64,
    )?;
    gauge(
        "cas_final_height",
        "The committed (final) consensus height.",
        field("committed_height") as i64,
    )?;
    gauge("cas_round", "The consensus round.", field("round") as i64)?;
    gauge(
        "cas_high_qc_height",
        "The highest certified block this node has seen.",
        view.high_qc_height as i64,
    )?;
    gauge(
        "cas_catching_up",
        "1 while fetching or installing a snapshot.",
        view.catching_up as i64,
    )?;
    gauge(
        "cas_healthy",
        "1 when /health answers ok.",
        state.unhealthy().is_none() as i64,
    )?;
    if let Some(api) = &state.api {
        gauge(
            "cas_api_query_queue",
            "HTTP API reads waiting for the executor (bounded).",
            api.queries.len() as i64,
        )?;
        gauge(
            "cas_api_streams_open",
            "HTTP block streams open (bounded).",
            api.streams.load(std::sync::atomic::Ordering::Relaxed) as i64,
        )?;
        gauge(
            "cas_api_waiting_requests",
            "HTTP submissions held until final (?wait=final).",
            api.waiters.len() as i64,
        )?;
    }
    counter(
        "cas_committed_txs_total",
        "Client transactions executed in final blocks (applied or rejected by the rules).",
        stats.txs,
    )?;
    scrape.rejects(&stats)?;
    counter(
        "cas_issued_total",
        "CAS minted (witness rewards and block rewards) since this process started (smallest unit).",
        stats.issued,
    )?;
    counter(
        "cas_validator_rewards_total",
        "CAS paid to validators (fee pots and block rewards, 70% committee / 30% POS) since this process started.",
        stats.validator_rewards,
    )?;
    // The driver's counters, by name: (status.json key, metric, help, counter or gauge).
    for (key, name, help, is_counter) in CONSENSUS_METRICS {
        if *is_counter {
            counter(name, help, field(key))?;
        } else {
            gauge(name, help, field(key) as i64)?;
        }
    }
    let certifier = &stats.certifier;
    counter(
        "cas_ledger_certs_formed_total",
        "Ledger certificates (committee signatures on executed blocks' results) formed here.",
        certifier.certs_formed,
    )?;
    counter(
        "cas_ledger_votes_diverging_total",
        "Ledger votes for another result than this node's at the same height.",
        certifier.votes_diverging,
    )?;
    counter(
        "cas_snapshot_installs_total",
        "Snapshots installed by state transfer since start.",
        stats.snapshot_installs,
    )?;
    counter(
        "cas_snapshot_chunks_served_total",
        "Snapshot chunks served to peers.",
        state.anchors.served_chunks.load(Ordering::Relaxed),
    )?;
    gauge(
        "cas_last_snapshot_height",
        "The height of this node's latest snapshot.",
        state.anchors.latest_height().unwrap_or(0) as i64,
    )?;
    let witness = &state.witness;
    gauge(
        "cas_witness_height",
        "The best POW witness block's height.",
        witness.best_height.load(Ordering::Relaxed) as i64,
    )?;
    counter(
        "cas_witness_mined_total",
        "Witness blocks mined here.",
        witness.mined.load(Ordering::Relaxed),
    )?;
    counter(
        "cas_witness_accepted_total",
        "Witness blocks accepted.",
        witness.accepted.load(Ordering::Relaxed),
    )?;
    peer_metrics(registry, &state.netio)?;
    let endpoint = state.netio.endpoint_stats();
    for (name, help, value) in [
        (
            "cas_ingest_connections_total",
            "Client connections accepted on the ingest endpoint.",
            endpoint.ingest_connections,
        ),
        (
            "cas_ingest_refused_total",
            "Client connections refused (endpoint or per-source bound).",
            endpoint.ingest_refused_full + endpoint.ingest_refused_per_source,
        ),
        (
            "cas_ingest_messages_total",
            "Client transactions delivered by the ingest endpoint.",
            endpoint.ingest_messages,
        ),
        (
            "cas_answers_sent_total",
            "Answers written to QUIC clients.",
            endpoint.answers_sent,
        ),
        (
            "cas_answers_refused_total",
            "Answers refused for a full client answer queue (the client was cut off).",
            endpoint.answers_refused_full,
        ),
        (
            "cas_refused_handshakes_total",
            "Peer or client handshakes that failed.",
            endpoint.refused_handshakes,
        ),
    ] {
        counter(name, help, value)?;
    }
    gauge(
        "cas_ingest_clients_open",
        "Client connections open now.",
        endpoint.ingest_clients_open as i64,
    )?;
    scrape.process()?;
    registry.register(Box::new(state.submit_to_final.clone()))?;
    registry.register(Box::new(state.fsync.clone()))?;
    scrape.text()
}

/// One scrape's registry, and the kinds of metric every node exports.
#[derive(Default)]
struct Scrape {
    registry: prometheus::Registry,
}

impl Scrape {
    fn gauge(&self, name: &str, help: &str, value: i64) -> Result<()> {
        let g = IntGauge::new(name, help)?;
        g.set(value);
        self.registry.register(Box::new(g))?;
        Ok(())
    }

    fn counter(&self, name: &str, help: &str, value: u64) -> Result<()> {
        let c = IntCounter::new(name, help)?;
        c.inc_by(value);
        self.registry.register(Box::new(c))?;
        Ok(())
    }

    /// Client transactions the rules rejected, by code.
    fn rejects(&self, stats: &Executed) -> Result<()> {
        let rejects = IntCounterVec::new(
            Opts::new(
                "cas_rejected_txs_total",
                "Client transactions the rules rejected in block order, by code.",
            ),
            &["code"],
        )?;
        for (code, count) in &stats.rejected_by_code {
            let name = cas_engine::RejectCode::from_u16(*code).map_or("unknown", |c| c.name());
            rejects.with_label_values(&[name]).inc_by(*count);
        }
        self.registry.register(Box::new(rejects))?;
        Ok(())
    }

    /// The process's CPU time and resident memory.
    fn process(&self) -> Result<()> {
        let (cpu_s, rss_bytes) = process_usage();
        let cpu = prometheus::Counter::new(
            "cas_process_cpu_seconds_total",
            "CPU time of the node process, user and system.",
        )?;
        cpu.inc_by(cpu_s);
        self.registry.register(Box::new(cpu))?;
        self.gauge(
            "cas_process_resident_memory_bytes",
            "Resident memory of the node process.",
            rss_bytes as i64,
        )
    }

    /// Prometheus text format.
    fn text(&self) -> Result<String> {
        let mut text = Vec::new();
        prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut text)?;
        Ok(String::from_utf8(text)?)
    }
}

/// (status.json `consensus` key, metric name, help, is a counter).
const CONSENSUS_METRICS: &[(&str, &str, &str, bool)] = &[
    (
        "proposals",
        "cas_proposals_total",
        "Blocks proposed by this node.",
        true,
    ),
    ("votes_sent", "cas_votes_sent_total", "Votes sent.", true),
    (
        "qcs_formed",
        "cas_qcs_formed_total",
        "Quorum certificates formed here.",
        true,
    ),
    ("commits", "cas_commits_total", "Blocks committed.", true),
    (
        "fast_commits",
        "cas_fast_commits_total",
        "Blocks committed on the fast path.",
        true,
    ),
    (
        "timeouts_sent",
        "cas_timeouts_sent_total",
        "Round timeouts sent.",
        true,
    ),
    (
        "tcs_formed",
        "cas_view_changes_total",
        "Timeout certificates formed (view changes).",
        true,
    ),
    (
        "refused",
        "cas_consensus_refused_total",
        "Consensus messages refused (bad signature, wrong sender, ...).",
        true,
    ),
    (
        "protocol_refused",
        "cas_protocol_refused_total",
        "Blocks refused for a protocol version their height does not have here (one side of an unscheduled \
         upgrade).",
        true,
    ),
    (
        "timestamps_refused",
        "cas_timestamps_refused_total",
        "Proposals not voted for: timestamp behind the parent's or too far ahead (protocol 2).",
        true,
    ),
    (
        "equivocations",
        "cas_equivocations_total",
        "Committee members this node proved voting for two blocks in one round (once per member and round).",
        true,
    ),
    (
        "protocol",
        "cas_protocol_version",
        "The protocol version the next block follows here.",
        false,
    ),
    (
        "protocol_max",
        "cas_protocol_version_max",
        "The newest protocol version this binary runs.",
        false,
    ),
    (
        "payload_refused",
        "cas_payload_refused_total",
        "Peer package certificates refused for a full payload pool.",
        true,
    ),
    (
        "packages_created",
        "cas_packages_created_total",
        "Packages of client transactions created here.",
        true,
    ),
    (
        "certs_formed",
        "cas_package_certs_formed_total",
        "Package availability certificates formed here.",
        true,
    ),
    (
        "certs_attested",
        "cas_package_certs_attested_total",
        "Of those, attested valid by enough checkers.",
        true,
    ),
    (
        "signatures_checked",
        "cas_signatures_checked_total",
        "Transaction signatures verified checking packages (as a checker, or unattested at execution).",
        true,
    ),
    (
        "package_signature_batches",
        "cas_package_signature_batches_total",
        "Batches those were verified in (one per package): checked / batches is the batch size.",
        true,
    ),
    (
        "admission_signatures_checked",
        "cas_admission_signatures_checked_total",
        "Client transactions whose signatures admission verified.",
        true,
    ),
    (
        "admission_signature_batches",
        "cas_admission_signature_batches_total",
        "Batches admission verified them in (a call splits into batches sized by the bad share it sees): checked / batches is the mean batch size.",
        true,
    ),
    (
        "catch_up_snapshot_height",
        "cas_catch_up_snapshot_height",
        "The height of the snapshot being fetched (0: none).",
        false,
    ),
    (
        "catch_up_chunks_taken",
        "cas_catch_up_chunks_taken",
        "Chunks of that snapshot taken so far.",
        false,
    ),
    (
        "catch_up_chunks_total",
        "cas_catch_up_chunks",
        "Chunks of that snapshot in all.",
        false,
    ),
    (
        "catch_up_queries",
        "cas_catch_up_queries_total",
        "Rounds of snapshot queries to the committee.",
        true,
    ),
    (
        "catch_up_chunks_received",
        "cas_catch_up_chunks_received_total",
        "Snapshot chunks received.",
        true,
    ),
    (
        "catch_up_transfers_failed",
        "cas_catch_up_transfers_failed_total",
        "Snapshot transfers abandoned (a chunk refused, a wrong commitment, a silent source).",
        true,
    ),
    (
        "packages_refused",
        "cas_packages_refused_total",
        "Peer packages refused.",
        true,
    ),
    (
        "overloaded_answers",
        "cas_overloaded_answers_total",
        "Submissions answered overloaded (retry-after).",
        true,
    ),
    (
        "peer_messages_refused",
        "cas_peer_messages_refused_total",
        "Peer frames that were no consensus message.",
        true,
    ),
    (
        "ledger_votes_dropped",
        "cas_ledger_votes_dropped_total",
        "Ledger votes dropped (full queue or wrong signer).",
        true,
    ),
    (
        "in_flight",
        "cas_in_flight_txs",
        "Client transactions admitted here and not yet executed.",
        false,
    ),
    (
        "synchronizer_queued",
        "cas_admission_queued_txs",
        "Admitted transactions waiting for a package.",
        false,
    ),
    (
        "execution_queue",
        "cas_execution_queue_blocks",
        "Committed blocks queued for the executor (bounded).",
        false,
    ),
    (
        "pending_blocks",
        "cas_pending_blocks",
        "Committed blocks waiting for packages this node lacks.",
        false,
    ),
    (
        "ledger_votes_queue",
        "cas_ledger_votes_queue",
        "Peer ledger votes queued for the executor (bounded).",
        false,
    ),
];

fn peer_metrics(registry: &prometheus::Registry, netio: &cas_netio::Node) -> Result<()> {
    let labels = &["peer"];
    let family = |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), labels);
    let sent = family(
        "cas_peer_sent_bytes_total",
        "Bytes sent to a committee peer.",
    )?;
    let received = family(
        "cas_peer_received_bytes_total",
        "Bytes received from a committee peer.",
    )?;
    let reconnects = family(
        "cas_peer_reconnects_total",
        "Sessions re-established with a peer.",
    )?;
    let queue_full = family(
        "cas_peer_queue_full_total",
        "Messages refused for a full queue to a peer.",
    )?;
    let connected = IntGaugeVec::new(
        Opts::new(
            "cas_peer_connected",
            "1 while a session with the peer is up.",
        ),
        labels,
    )?;
    let rtt = prometheus::GaugeVec::new(
        Opts::new(
            "cas_peer_rtt_seconds",
            "The QUIC round-trip time to a peer.",
        ),
        labels,
    )?;
    for peer in netio.peer_stats() {
        // A short prefix of the key names the peer: enough to tell committee members apart, and bounded.
        let key = peer.key.to_hex()[..16].to_string();
        let label = [key.as_str()];
        sent.with_label_values(&label).inc_by(peer.bytes_sent);
        received
            .with_label_values(&label)
            .inc_by(peer.bytes_received);
        reconnects.with_label_values(&label).inc_by(peer.reconnects);
        queue_full.with_label_values(&label).inc_by(peer.queue_full);
        connected
            .with_label_values(&label)
            .set(peer.connected as i64);
        rtt.with_label_values(&label).set(peer.rtt.as_secs_f64());
    }
    for metric in [sent, received, reconnects, queue_full] {
        registry.register(Box::new(metric))?;
    }
    registry.register(Box::new(connected))?;
    registry.register(Box::new(rtt))?;
    Ok(())
}

/// The process's CPU seconds (user + system) and resident bytes, from /proc/self (0 where it cannot be read).
fn process_usage() -> (f64, u64) {
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // The command name may hold spaces: fields are counted after its closing parenthesis.
            let rest = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let user: f64 = fields.get(11)?.parse().ok()?;
            let system: f64 = fields.get(12)?.parse().ok()?;
            Some((user + system) / ticks)
        })
        .unwrap_or(0.0);
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page);
    (cpu, rss)
}

/// What a follower's fetching and applying sides publish ([`crate::follower`]).
#[derive(Default)]
pub struct FollowerCounters {
    /// Which upstream (index into `upstream`) the stream comes from now.
    pub upstream: AtomicUsize,
    /// Streams opened, and frames or streams refused (each moves to the next upstream).
    pub connects: AtomicU64,
    pub refused: AtomicU64,
    /// Blocks held now without a certificate.
    pub held: AtomicU64,
    /// When the last certified run was applied (Unix ms; 0: none since start).
    pub applied_ms: AtomicU64,
    /// The newest height a certificate vouched for (fetched, maybe not applied yet).
    pub certified_tip: AtomicU64,
    /// The highest executed height an upstream reported when its stream started.
    pub upstream_height: AtomicU64,
}

/// A follower that has applied no certified block for this long is not following (members make blocks even when
/// idle, and an upstream that stalls is left after 10 s).
pub const HEALTH_FOLLOWER_STALE: Duration = Duration::from_secs(15);

/// A follower's operator endpoints: the same three paths as a member's, with what a follower has.
pub struct FollowerSurface {
    pub chain_id: u32,
    pub committee: Vec<(PublicKey, u64)>,
    pub upstream: Vec<SocketAddr>,
    pub stats: Arc<Mutex<Executed>>,
    pub counters: Arc<FollowerCounters>,
    pub fsync: prometheus::HistogramVec,
    disk: DiskProbe,
    started: Instant,
}

impl FollowerSurface {
    pub fn new(
        chain_id: u32,
        committee: Vec<(PublicKey, u64)>,
        upstream: Vec<SocketAddr>,
        stats: Arc<Mutex<Executed>>,
        counters: Arc<FollowerCounters>,
        fsync: prometheus::HistogramVec,
        data_dir: PathBuf,
    ) -> FollowerSurface {
        FollowerSurface {
            chain_id,
            committee,
            upstream,
            stats,
            counters,
            fsync,
            disk: DiskProbe::new(data_dir),
            started: Instant::now(),
        }
    }

    /// The upstream the stream comes from now.
    pub fn upstream_now(&self) -> SocketAddr {
        self.upstream[self.counters.upstream.load(Ordering::Relaxed) % self.upstream.len()]
    }

    /// None while it applies certified blocks with a writable disk, else the first reason it does not.
    pub fn unhealthy(&self) -> Option<String> {
        if let Err(reason) = self.disk.check() {
            return Some(reason);
        }
        let applied_ms = self.counters.applied_ms.load(Ordering::Relaxed);
        let since = match applied_ms {
            0 => self.started.elapsed(),
            at => Duration::from_millis(crate::witness::wall_ms().saturating_sub(at)),
        };
        if since > HEALTH_FOLLOWER_STALE {
            return Some(format!(
                "not following: no certified block applied for {} s (upstream {}, {} streams refused)",
                since.as_secs(),
                self.upstream_now(),
                self.counters.refused.load(Ordering::Relaxed)
            ));
        }
        None
    }

    /// The follower's side of status.json's `consensus` field and of `/status`.
    pub fn view(&self) -> Value {
        json!({
            "role": "follower",
            "upstream": self.upstream_now().to_string(),
            "connects": self.counters.connects.load(Ordering::Relaxed),
            "refused": self.counters.refused.load(Ordering::Relaxed),
            "uncertified_held": self.counters.held.load(Ordering::Relaxed),
        })
    }

    fn render(&self) -> Result<String> {
        let scrape = Scrape::default();
        let stats = self.stats.lock().expect("stats lock").clone();
        scrape.gauge(
            "cas_height",
            "The executed ledger height.",
            stats.height as i64,
        )?;
        scrape.gauge(
            "cas_healthy",
            "1 when /health answers ok.",
            self.unhealthy().is_none() as i64,
        )?;
        scrape.counter(
            "cas_committed_txs_total",
            "Client transactions executed in final blocks (applied or rejected by the rules).",
            stats.txs,
        )?;
        scrape.rejects(&stats)?;
        scrape.counter(
            "cas_issued_total",
            "CAS minted (witness rewards and block rewards) since this process started (smallest unit).",
            stats.issued,
        )?;
        scrape.counter(
            "cas_follower_connects_total",
            "Ledger streams this follower opened to its upstream nodes.",
            self.counters.connects.load(Ordering::Relaxed),
        )?;
        scrape.counter(
            "cas_follower_refused_total",
            "Ledger streams left for a refused frame, a stall or an error (each moves to the next upstream).",
            self.counters.refused.load(Ordering::Relaxed),
        )?;
        scrape.gauge(
            "cas_follower_uncertified_blocks",
            "Blocks held now until a ledger certificate covers them.",
            self.counters.held.load(Ordering::Relaxed) as i64,
        )?;
        scrape.process()?;
        scrape.registry.register(Box::new(self.fsync.clone()))?;
        scrape.text()
    }
}

/// A follower's operator endpoints' thread.
pub struct FollowerServer(crate::api::HttpThread);

impl FollowerServer {
    /// Binds `listen` now (an address in use fails the follower's start) and serves on a thread of its own.
    pub fn start(listen: SocketAddr, surface: Arc<FollowerSurface>) -> Result<FollowerServer> {
        let app = Router::new()
            .route("/metrics", get(follower_metrics))
            .route("/health", get(follower_health))
            .route("/status", get(follower_status))
            .with_state(surface);
        crate::api::HttpThread::start("cas-operator", "the operator endpoints", listen, app)
            .map(FollowerServer)
    }

    pub fn stop(self) -> Result<()> {
        self.0.stop()
    }
}

async fn follower_metrics(State(surface): State<Arc<FollowerSurface>>) -> Response {
    metrics_response(surface.render())
}

async fn follower_health(State(surface): State<Arc<FollowerSurface>>) -> Response {
    health_response(surface.unhealthy())
}

async fn follower_status(State(surface): State<Arc<FollowerSurface>>) -> Response {
    let stats = surface.stats.lock().expect("stats lock").clone();
    let committee: Vec<Value> = surface
        .committee
        .iter()
        .map(|(key, stake)| json!({"key": key.to_hex(), "stake": stake}))
        .collect();
    let unhealthy = surface.unhealthy();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "chain_id": surface.chain_id,
        "member": null,
        "committee": committee,
        "height": stats.height,
        "utxo_commitment": stats.utxo_commitment.to_hex(),
        "follower": surface.view(),
        "healthy": unhealthy.is_none(),
        "unhealthy_reason": unhealthy,
    }))
    .into_response()
}
