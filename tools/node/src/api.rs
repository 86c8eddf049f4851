//! The client API over HTTP/JSON (`api_listen` in node.toml), for integrators in any language: submit a signed
//! transaction (and wait for it to be final), ask a transaction's status from the durable index, read an account's
//! balance and outputs, read a block, fetch a settlement receipt checked offline, and follow finalized blocks from a height as a resumable stream of JSON lines
//! (the deposit watcher). Documented in `docs/openapi.yaml`; a test checks the two agree.
//!
//! It runs on its own thread (`cas-api`, a small tokio runtime) and never touches consensus or the ledger itself:
//! submissions go into the driver's admission like a QUIC client's (bounded queue; full: `overloaded`), their
//! answers come back by tx id ([`Waiters`]), and reads are asked of the executor through a queue of their own
//! (bounded; full: `overloaded`) that it serves only when no committed block waits: every read sees the ledger at
//! one block height, and no number of readers can hold up execution or, behind it, consensus. At most
//! [`STREAMS_MAX`] block streams are open at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use cas_engine::client::ClientAnswer;
use cas_engine::codec::{decode_block, decode_tx, to_owned_block};
use cas_engine::governance::{ParamChange, ProposalState};
use cas_engine::rules::is_record;
use cas_engine::stake::{first_height, Candidate, StakeRegistry};
use cas_engine::token::{
    decode_definition, definition_outpoint, mint_right_of, object_kind, Allowance, ObjectKind,
    Order, Side, TokenEvent, ALLOWANCE_INDEX, ALLOWANCE_TERMS_INDEX, ORDER_INDEX,
    ORDER_TERMS_INDEX,
};
use cas_engine::tx::VnId;
use cas_engine::tx::{OutPoint, StakeParams, TxKind, TxOutput};
use cas_engine::vn::{
    decode_fee, endorser_outpoint, fee_outpoint, policy_outpoint, stream_request_digest,
    PolicyHeader, VnFee,
};
use cas_engine::{AssetId, Hash32, PublicKey, RejectCode, Transaction, TxId};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::clients::Client;
use crate::executor::Executed;
use crate::in_flight::OVERLOADED_RETRY_AFTER_MS;
use crate::tx_index::TxIndexView;

/// Requests waiting for their transaction's answers; more are answered `overloaded`.
pub const WAITERS_MAX: usize = 16_384;
/// Submissions on their way from the API to the driver's admission.
pub const SUBMIT_QUEUE_MAX: usize = 4_096;
/// How long a submission waits for its answer unless the caller says (`timeout_ms`), and the most it may say.
pub const WAIT_MS_DEFAULT: u64 = 30_000;
pub const WAIT_MS_MAX: u64 = 120_000;
/// The largest request body (a transaction, in bytes or hex JSON).
pub const BODY_BYTES_MAX: usize = 2 * cas_engine::codec::TX_BYTES_MAX + 1_024;
/// Reads waiting for the executor (it answers them only between blocks); more are answered `overloaded`.
pub const QUERY_QUEUE_MAX: usize = 256;
/// Block streams open at once; more are answered `overloaded`.
pub const STREAMS_MAX: usize = 64;
/// How far back `?height=` reads an account: this many blocks below the executed height (each one read from the
/// store through the executor's query queue, newest first; a past read holds one of the [`STREAMS_MAX`] slots).
pub const HISTORY_BLOCKS_MAX: u64 = 10_000;
/// How often the block stream looks for the next block when it is at the tip.
const STREAM_POLL_MS: u64 = 50;
/// How often the ledger stream looks for the next block, or its certificate, at the tip.
const LEDGER_POLL_MS: u64 = 10;
/// How long the ledger stream waits for a block's certificate, while it may still form, before it sends the block
/// without one (the follower then waits for a later certificate, which covers it through the hash chain, but holds
/// no certificate of its own for that block to serve receipts with).
const LEDGER_CERT_WAIT_MS: u64 = 2_000;
/// Headers `GET /v1/headers` answers at most per request (each a stored block read by the executor between blocks),
/// and when the caller names no limit.
pub const HEADERS_LIMIT_MAX: u64 = 256;
pub const HEADERS_LIMIT_DEFAULT: u64 = 128;
/// How long a stopping node lets open requests finish.
const DRAIN_MS: u64 = 1_000;

/// A submission for the driver: who answers it (the HTTP peer) and the transaction's bytes.
pub type Submission = (Client, bytes::Bytes);

/// The requests waiting for answers about their transactions, by tx id (one request per transaction: a second
/// submission of a transaction someone is waiting for is answered `duplicate` here).
#[derive(Default)]
pub struct Waiters {
    by_tx: Mutex<HashMap<TxId, tokio::sync::mpsc::Sender<ClientAnswer>>>,
}

impl Waiters {
    /// Requests waiting now.
    pub fn len(&self) -> usize {
        self.by_tx.lock().expect("waiters lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hands an answer to the request waiting for its transaction (`submitted`, when the answer names another: a
    /// `Duplicate` of a client id names the first transaction that used it); the last answer it will get removes
    /// the request.
    pub fn deliver_for(&self, submitted: Option<TxId>, answer: ClientAnswer) {
        let (named, last) = match &answer {
            ClientAnswer::Accepted { tx } => (*tx, false),
            ClientAnswer::Duplicate { tx }
            | ClientAnswer::Overloaded { tx, .. }
            | ClientAnswer::Final { tx, .. } => (*tx, true),
            ClientAnswer::Rejected { tx: Some(tx), .. } => (*tx, true),
            ClientAnswer::Rejected { tx: None, .. } => return,
        };
        let id = submitted.unwrap_or(named);
        let mut by_tx = self.by_tx.lock().expect("waiters lock");
        let Some(waiter) = by_tx.get(&id) else {
            return;
        };
        if waiter.try_send(answer).is_err() || last {
            by_tx.remove(&id);
        }
    }

    fn register(&self, id: TxId) -> Result<tokio::sync::mpsc::Receiver<ClientAnswer>, Refusal> {
        let mut by_tx = self.by_tx.lock().expect("waiters lock");
        if by_tx.contains_key(&id) {
            return Err(Refusal::Waited);
        }
        if by_tx.len() >= WAITERS_MAX {
            return Err(Refusal::Full);
        }
        let (sender, receiver) = tokio::sync::mpsc::channel(2);
        by_tx.insert(id, sender);
        Ok(receiver)
    }

    fn forget(&self, id: &TxId) {
        self.by_tx.lock().expect("waiters lock").remove(id);
    }

    fn waiting(&self, id: &TxId) -> bool {
        self.by_tx.lock().expect("waiters lock").contains_key(id)
    }
}

enum Refusal {
    /// Another request is waiting for this transaction.
    Waited,
    Full,
}

/// What the API asks the executor, answered between blocks.
pub enum LedgerQuery {
    /// A stored ledger block's bytes (None: not stored here, above the height or below the store's base).
    Block {
        height: u64,
        reply: tokio::sync::oneshot::Sender<Option<Vec<u8>>>,
    },
    /// An owner's unspent outputs, with the height they are read at.
    Outputs {
        owner: PublicKey,
        reply: tokio::sync::oneshot::Sender<OwnedOutputs>,
    },
    /// The candidates and their stake, the epoch, and the committee elected for `epoch` (the next one when None),
    /// as the executed height has them.
    Stake {
        epoch: Option<u64>,
        reply: tokio::sync::oneshot::Sender<StakeView>,
    },
    /// Every CIP proposal with its vote, and the parameters in effect for the next block.
    Governance {
        reply: tokio::sync::oneshot::Sender<GovernanceView>,
    },
    /// Set entries by outpoint (records and ledger objects included) and the supplies of assets, at the executed
    /// height.
    Entries {
        outpoints: Vec<OutPoint>,
        supplies: Vec<AssetId>,
        reply: tokio::sync::oneshot::Sender<EntriesView>,
    },
}

/// What [`LedgerQuery::Entries`] answers: the height, the entry at each outpoint asked (if any) and each supply.
pub type EntriesView = Result<(u64, Vec<Option<TxOutput>>, Vec<u128>), String>;

/// What `GET /v1/proposals` shows, read by the executor.
pub struct GovernanceView {
    pub height: u64,
    pub proposals: Vec<ProposalState>,
    /// The rules' parameters for block `height + 1` (genesis values with the passed changes in effect).
    pub min_fee: u64,
    pub unbond_delay_blocks: u64,
}

/// What `GET /v1/stake` shows, read by the executor.
pub struct StakeView {
    pub height: u64,
    pub params: StakeParams,
    pub registry: StakeRegistry,
    /// The epoch of the executed height.
    pub epoch: u64,
    /// The epoch asked about (the next one by default) and the committee the ledger recorded for it, if its
    /// election height is executed.
    pub elected_for: (u64, Option<Vec<Candidate>>),
}

#[derive(Deserialize)]
struct StakeQuery {
    /// The epoch whose recorded committee to show (default: the next one).
    epoch: Option<u64>,
}

/// An owner's unspent outputs at a height, or why they could not be read.
pub type OwnedOutputs = Result<(u64, Vec<(OutPoint, TxOutput)>), String>;

/// A request answered early (bad input, overload): boxed, so the `Result`s that carry it stay small.
type Refused = Box<Response>;

/// What the handlers share.
pub struct ApiState {
    pub waiters: Arc<Waiters>,
    pub submit: SyncSender<Submission>,
    pub waker: Arc<cas_netio::InboundWaker>,
    /// Reads for the executor (bounded; see [`QUERY_QUEUE_MAX`]).
    pub queries: crossbeam_channel::Sender<LedgerQuery>,
    /// Block streams open now (at most [`STREAMS_MAX`]).
    pub streams: Arc<AtomicUsize>,
    /// The certified committee hand-overs, for receipts of later epochs.
    pub handovers: Arc<crate::epochs::Handovers>,
    pub index: Arc<TxIndexView>,
    pub stats: Arc<Mutex<Executed>>,
    pub stopping: AtomicBool,
    /// This node forms ledger certificates (a member; a follower keeps only those it is sent): the ledger stream
    /// waits for one that may still form.
    pub forms_certificates: bool,
}

/// The API's thread; [`ApiServer::stop`] ends it.
pub struct ApiServer {
    http: HttpThread,
    state: Arc<ApiState>,
}

/// An axum router served on a thread of its own with a small current-thread runtime; [`HttpThread::stop`] ends it,
/// giving open requests (block streams among them) up to [`DRAIN_MS`]. The client API and the operator endpoints
/// each run on one.
pub struct HttpThread {
    stop: tokio::sync::watch::Sender<bool>,
    thread: std::thread::JoinHandle<Result<()>>,
}

impl HttpThread {
    /// Binds `listen` now (an address in use fails the node's start; `what` names it in the error and the log).
    pub fn start(name: &str, what: &str, listen: SocketAddr, app: Router) -> Result<HttpThread> {
        let listener = std::net::TcpListener::bind(listen)
            .with_context(|| format!("cannot listen for {what} on {listen}"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let served_what = what.to_string();
        let thread =
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || -> Result<()> {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    runtime.block_on(async move {
                        let listener = tokio::net::TcpListener::from_std(listener)?;
                        let mut drain = stopped.clone();
                        let server = axum::serve(
                            listener,
                            app.into_make_service_with_connect_info::<SocketAddr>(),
                        )
                        .with_graceful_shutdown(async move {
                            let _ = stopped.wait_for(|s| *s).await;
                        });
                        tokio::select! {
                            served = server => served.with_context(|| served_what.clone()),
                            _ = async {
                                let _ = drain.wait_for(|s| *s).await;
                                tokio::time::sleep(Duration::from_millis(DRAIN_MS)).await;
                            } => Ok(()),
                        }
                    })
                })?;
        tracing::info!(%addr, "{what} listening");
        Ok(HttpThread { stop, thread })
    }

    pub fn stop(self) -> Result<()> {
        let _ = self.stop.send(true);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("an HTTP server thread panicked"))?
    }
}

impl ApiServer {
    /// Binds `listen` now (an address in use fails the node's start) and serves on a thread of its own.
    pub fn start(listen: SocketAddr, state: ApiState) -> Result<ApiServer> {
        let state = Arc::new(state);
        let http = HttpThread::start("cas-api", "the HTTP API", listen, router(state.clone()))?;
        Ok(ApiServer { http, state })
    }

    /// Stops serving (open requests get up to a second), and drops the API's ends of the driver's and executor's
    /// queues.
    pub fn stop(self) -> Result<()> {
        self.state.stopping.store(true, Ordering::Relaxed);
        let ApiServer { http, state } = self;
        let stopped = http.stop();
        drop(state);
        stopped
    }
}

/// Every route the API answers, as (method, path): the router is built from this list, and a test checks it
/// against docs/openapi.yaml.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/tx"),
    ("get", "/v1/tx/{id}"),
    ("get", "/v1/tx/{id}/receipt"),
    ("get", "/v1/tx/by-client/{sender}/{client_id}"),
    ("get", "/v1/accounts/{owner}/balance"),
    ("get", "/v1/accounts/{owner}/utxos"),
    ("get", "/v1/accounts/{owner}/objects"),
    ("get", "/v1/tokens/{asset}"),
    ("get", "/v1/blocks"),
    ("get", "/v1/blocks/{height}"),
    ("get", "/v1/codes"),
    ("get", "/v1/stake"),
    ("get", "/v1/proposals"),
    ("get", "/v1/proposals/{id}"),
    ("get", "/v1/vns/{vn}"),
    ("get", "/v1/vns/{vn}/blocks"),
    ("get", "/v1/ledger"),
    ("get", "/v1/handovers"),
    ("get", "/v1/headers"),
];

fn handler(path: &str) -> MethodRouter<Arc<ApiState>> {
    match path {
        "/v1/tx" => post(submit),
        "/v1/tx/{id}" => get(tx_status),
        "/v1/tx/{id}/receipt" => get(tx_receipt),
        "/v1/tx/by-client/{sender}/{client_id}" => get(tx_by_client),
        "/v1/accounts/{owner}/balance" => get(balance),
        "/v1/accounts/{owner}/utxos" => get(utxos),
        "/v1/accounts/{owner}/objects" => get(objects),
        "/v1/tokens/{asset}" => get(token),
        "/v1/blocks" => get(blocks_stream),
        "/v1/blocks/{height}" => get(block),
        "/v1/codes" => get(codes),
        "/v1/stake" => get(stake),
        "/v1/proposals" => get(proposals),
        "/v1/proposals/{id}" => get(proposal),
        "/v1/vns/{vn}" => get(vn_policy),
        "/v1/vns/{vn}/blocks" => get(vn_blocks),
        "/v1/ledger" => get(ledger_stream),
        "/v1/handovers" => get(handovers),
        "/v1/headers" => get(headers),
        other => unreachable!("{other} is in ROUTES without a handler"),
    }
}

pub(crate) fn router(state: Arc<ApiState>) -> Router {
    ROUTES
        .iter()
        .fold(Router::new(), |router, (_, path)| {
            router.route(path, handler(path))
        })
        .layer(axum::extract::DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(state)
}

fn reply(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn stopping() -> Response {
    reply(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"status": "stopping"}),
    )
}

fn bad_request(reason: impl std::fmt::Display) -> Response {
    reply(
        StatusCode::BAD_REQUEST,
        json!({"status": "bad_request", "reason": reason.to_string()}),
    )
}

fn overloaded(tx: Option<TxId>, retry_after_ms: u64) -> Response {
    let mut response = reply(
        StatusCode::TOO_MANY_REQUESTS,
        json!({"status": "overloaded", "tx": tx.map(|t| t.to_hex()), "retry_after_ms": retry_after_ms}),
    );
    let seconds = retry_after_ms.div_ceil(1_000).max(1);
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_str(&seconds.to_string()).expect("digits"),
    );
    response
}

fn code_json(code: u16) -> Value {
    match RejectCode::from_u16(code) {
        Some(c) => json!({"code": code, "code_name": c.name()}),
        None => json!({"code": code, "code_name": "unknown"}),
    }
}

fn rejected(tx: Option<TxId>, code: u16, reason: &str) -> Response {
    let mut body = code_json(code);
    body["status"] = json!("rejected");
    body["tx"] = json!(tx.map(|t| t.to_hex()));
    body["reason"] = json!(reason);
    reply(StatusCode::UNPROCESSABLE_ENTITY, body)
}

/// How a submitted or asked-about transaction stands, as JSON.
fn answer_json(answer: &ClientAnswer) -> (StatusCode, Value) {
    match answer {
        ClientAnswer::Accepted { tx } => (
            StatusCode::ACCEPTED,
            json!({"status": "accepted", "tx": tx.to_hex()}),
        ),
        ClientAnswer::Duplicate { tx } => (
            StatusCode::OK,
            json!({"status": "duplicate", "tx": tx.to_hex()}),
        ),
        ClientAnswer::Final {
            tx,
            height,
            index,
            block,
            rejection,
        } => (
            StatusCode::OK,
            json!({
                "status": "final",
                "tx": tx.to_hex(),
                "height": height,
                "index": index,
                "block": block.to_hex(),
                "rejection": rejection.as_ref().map(|r| {
                    let mut body = code_json(r.code);
                    body["reason"] = json!(r.reason);
                    body
                }),
            }),
        ),
        // Rejected and Overloaded are answered by their own responses.
        other => (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"status": "error", "reason": format!("{other:?}")}),
        ),
    }
}

#[derive(Deserialize)]
struct SubmitParams {
    /// `final`: hold the request until the transaction is final or rejected.
    wait: Option<String>,
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
struct HexTx {
    tx: String,
}

/// `POST /v1/tx`: the signed transaction's bytes (`application/octet-stream`) or `{"tx": "<hex>"}`.
async fn submit(
    State(state): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(params): Query<SubmitParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let wait_final = match params.wait.as_deref() {
        None => false,
        Some("final") => true,
        Some(other) => return bad_request(format!("wait={other}: only wait=final is known")),
    };
    let timeout = Duration::from_millis(
        params
            .timeout_ms
            .unwrap_or(WAIT_MS_DEFAULT)
            .min(WAIT_MS_MAX),
    );
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let bytes = if json_body {
        let hex_tx: HexTx = match serde_json::from_slice(&body) {
            Ok(parsed) => parsed,
            Err(error) => {
                return bad_request(format!("the body is not {{\"tx\": \"<hex>\"}}: {error}"))
            }
        };
        match hex::decode(hex_tx.tx.trim()) {
            Ok(bytes) => Bytes::from(bytes),
            Err(error) => return bad_request(format!("tx is not hex: {error}")),
        }
    } else {
        body
    };
    let id = match decode_tx(&bytes) {
        Ok(tx) => tx.tx_id(),
        Err(error) => {
            return rejected(
                None,
                RejectCode::Undecodable.number(),
                &ClientAnswer::reason(format!("undecodable: {error}")),
            )
        }
    };
    let mut answers = match state.waiters.register(id) {
        Ok(receiver) => receiver,
        Err(Refusal::Waited) => {
            return reply(
                StatusCode::OK,
                json!({"status": "duplicate", "tx": id.to_hex(), "reason": "another request is waiting for it"}),
            )
        }
        Err(Refusal::Full) => return overloaded(Some(id), OVERLOADED_RETRY_AFTER_MS),
    };
    match state.submit.try_send((Client::Http(peer), bytes)) {
        Ok(()) => state.waker.wake(),
        Err(TrySendError::Full(_)) => {
            state.waiters.forget(&id);
            return overloaded(Some(id), OVERLOADED_RETRY_AFTER_MS);
        }
        Err(TrySendError::Disconnected(_)) => {
            state.waiters.forget(&id);
            return reply(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "stopping", "tx": id.to_hex()}),
            );
        }
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let response = loop {
        let answer = match tokio::time::timeout_at(deadline, answers.recv()).await {
            Ok(Some(answer)) => answer,
            // Timed out, or the node dropped the waiter: the transaction may still become final; ask its status.
            Ok(None) | Err(_) => {
                break reply(
                    StatusCode::ACCEPTED,
                    json!({"status": "pending", "tx": id.to_hex()}),
                )
            }
        };
        match answer {
            ClientAnswer::Accepted { .. } if wait_final => continue,
            ClientAnswer::Rejected { code, reason, .. } => break rejected(Some(id), code, &reason),
            ClientAnswer::Overloaded { retry_after_ms, .. } => {
                break overloaded(Some(id), retry_after_ms)
            }
            answer => {
                let (status, body) = answer_json(&answer);
                break reply(status, body);
            }
        }
    };
    state.waiters.forget(&id);
    response
}

fn parse_hash(text: &str, what: &str) -> std::result::Result<Hash32, Refused> {
    Hash32::from_hex(text)
        .map_err(|e| Box::new(bad_request(format!("{what} is not 32 bytes of hex: {e}"))))
}

fn parse_owner(text: &str) -> std::result::Result<PublicKey, Refused> {
    PublicKey::from_hex(text)
        .map_err(|e| Box::new(bad_request(format!("owner is not a 32-byte hex key: {e}"))))
}

/// How long a client waits before asking again for a receipt whose certificate has not formed yet.
const RECEIPT_RETRY_AFTER_MS: u64 = 200;

/// `GET /v1/tx/{id}/receipt`: the transaction, its Merkle paths to the ledger block's tx root and to the certified
/// results root, the block's header and the committee's ledger certificate (see [`crate::receipt`]). 404 for a
/// transaction this node does not hold as final; 503 with Retry-After while the certificate has not formed here.
async fn tx_receipt(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> Response {
    let id = match parse_hash(&id, "the tx id") {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let Some(landed) = state.index.get(&id) else {
        return reply(
            StatusCode::NOT_FOUND,
            json!({"status": "unknown", "tx": id.to_hex(), "reason": "not final on this node (or out of retention)"}),
        );
    };
    let error = |reason: String| {
        reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"status": "error", "reason": reason}),
        )
    };
    let results = match state.index.results(landed.height) {
        Ok(Some(results)) => results,
        Ok(None) => {
            return reply(
                StatusCode::NOT_FOUND,
                json!({"status": "unknown", "tx": id.to_hex(), "reason": "the block fell out of retention"}),
            )
        }
        Err(e) => return error(format!("{e:#}")),
    };
    let Some(cert) = results.cert else {
        let executed = state.stats.lock().expect("stats lock").height;
        let mut response = reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({
                "status": "uncertified",
                "tx": id.to_hex(),
                "height": landed.height,
                "retry_after_ms": RECEIPT_RETRY_AFTER_MS,
                "reason": if executed > landed.height + cas_consensus::ledger_cert::VOTES_BEHIND {
                    "this node holds no ledger certificate for the block (it formed while the node was down): ask another node"
                } else {
                    "the committee's ledger certificate for the block has not formed yet"
                },
            }),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    };
    let height = landed.height;
    let bytes = match ask(&state, |reply| LedgerQuery::Block { height, reply }).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return error(format!("block {height} is indexed but not stored")),
        Err(response) => return *response,
    };
    match build_receipt(&bytes, landed.index, &results.results, cert) {
        Ok(mut receipt) => {
            // The hand-overs from genesis to the committee that certified it.
            receipt.handovers = state.handovers.up_to(receipt.cert.statement.height);
            reply(
                StatusCode::OK,
                serde_json::to_value(crate::receipt::ReceiptJson::from_receipt(&receipt))
                    .expect("a receipt serializes"),
            )
        }
        Err(reason) => error(reason),
    }
}

/// A receipt for the transaction at `index` of a stored block, from the block's indexed results and certificate.
fn build_receipt(
    bytes: &[u8],
    index: u32,
    results: &[(TxId, u16)],
    cert: cas_consensus::ledger_cert::LedgerCert,
) -> std::result::Result<cas_consensus::receipt::Receipt, String> {
    let block = to_owned_block(decode_block(bytes).map_err(|e| e.to_string())?);
    // The index holds every id of the block: only the receipt's own transaction is hashed again, to check that the
    // stored block is the indexed one.
    let ids: Vec<TxId> = results.iter().map(|(id, _)| *id).collect();
    let at = index as usize;
    let (Some(tx), Some((result_id, code))) = (block.txs.get(at), results.get(at)) else {
        return Err(format!("index {index} is outside the block"));
    };
    if tx.tx_id() != *result_id
        || block.txs.len() != results.len()
        || block.header.hash() != cert.statement.block
    {
        return Err("the stored block is not the indexed one".into());
    }
    let leaves = cas_consensus::ledger_cert::result_leaves(results);
    Ok(cas_consensus::receipt::Receipt {
        tx: cas_engine::codec::encode_tx(tx).to_vec(),
        index,
        code: *code,
        tx_path: cas_engine::merkle::proof(&ids, at).expect("in range"),
        results_path: cas_engine::merkle::proof(&leaves, at).expect("in range"),
        header: block.header,
        cert,
        handovers: Vec::new(),
    })
}

/// `GET /v1/tx/{id}`: final (with its rejection, if the rules refused it in block order), pending (this node
/// admitted it and has not executed it yet), or unknown.
async fn tx_status(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> Response {
    let id = match parse_hash(&id, "the tx id") {
        Ok(id) => id,
        Err(response) => return *response,
    };
    if let Some(landed) = state.index.get(&id) {
        let rejection = landed.rejection.map(|code| {
            json!({"code": code.number(), "code_name": code.name(), "reason": code.meaning()})
        });
        return reply(
            StatusCode::OK,
            json!({
                "status": "final",
                "tx": id.to_hex(),
                "height": landed.height,
                "index": landed.index,
                "block": landed.block.to_hex(),
                "rejection": rejection,
            }),
        );
    }
    // Admitted here and not executed yet (a node knows what it admitted; another node's admissions it learns
    // when they are final).
    if state.index.is_pending(&id) || state.waiters.waiting(&id) {
        return reply(
            StatusCode::OK,
            json!({"status": "pending", "tx": id.to_hex()}),
        );
    }
    reply(
        StatusCode::NOT_FOUND,
        json!({
            "status": "unknown",
            "tx": id.to_hex(),
            "indexed_from_height": state.index.first_height(),
        }),
    )
}

/// `GET /v1/tx/by-client/{sender}/{client_id}`: the status of the transaction that used this client id, if the
/// ledger applied one (within the index's retention).
async fn tx_by_client(
    State(state): State<Arc<ApiState>>,
    Path((sender, client_id)): Path<(String, u64)>,
) -> Response {
    let sender = match parse_owner(&sender) {
        Ok(sender) => sender,
        Err(response) => return *response,
    };
    match state.index.by_client(&sender, client_id) {
        Some(id) => tx_status(State(state), Path(id.to_hex())).await,
        None => reply(
            StatusCode::NOT_FOUND,
            json!({
                "status": "unknown",
                "sender": sender.to_hex(),
                "client_id": client_id,
                "indexed_from_height": state.index.first_height(),
            }),
        ),
    }
}

/// Asks the executor (it answers when no committed block waits); a full query queue is `overloaded`.
async fn ask<T>(
    state: &ApiState,
    query: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> LedgerQuery,
) -> std::result::Result<T, Refused> {
    let (reply_to, answer) = tokio::sync::oneshot::channel();
    match state.queries.try_send(query(reply_to)) {
        Ok(()) => {}
        Err(crossbeam_channel::TrySendError::Full(_)) => {
            return Err(Box::new(overloaded(None, OVERLOADED_RETRY_AFTER_MS)))
        }
        Err(crossbeam_channel::TrySendError::Disconnected(_)) => return Err(Box::new(stopping())),
    }
    answer.await.map_err(|_| Box::new(stopping()))
}

/// The owner's coins and the escrow of its ledger objects (orders, allowances it granted) at the executed height.
async fn outputs(
    state: &ApiState,
    owner: &str,
) -> std::result::Result<(PublicKey, u64, Vec<(OutPoint, TxOutput)>), Refused> {
    let (owner, height, entries) = owner_entries(state, owner).await?;
    // Client id claims, candidacies and the terms of objects are set records, not coins.
    let outputs = entries
        .into_iter()
        .filter(|(outpoint, _)| !is_record(outpoint) || object_kind(outpoint).is_some())
        .collect();
    Ok((owner, height, outputs))
}

/// Every set entry the owner's index holds (records included) at the executed height.
async fn owner_entries(
    state: &ApiState,
    owner: &str,
) -> std::result::Result<(PublicKey, u64, Vec<(OutPoint, TxOutput)>), Refused> {
    let owner = parse_owner(owner)?;
    let (height, entries) = ask(state, |reply| LedgerQuery::Outputs { owner, reply })
        .await?
        .map_err(internal_error)?;
    Ok((owner, height, entries))
}

fn internal_error(reason: String) -> Refused {
    Box::new(reply(
        StatusCode::INTERNAL_SERVER_ERROR,
        json!({"status": "error", "reason": reason}),
    ))
}

/// Set entries and asset supplies at the executed height ([`LedgerQuery::Entries`]).
async fn entries(
    state: &ApiState,
    outpoints: Vec<OutPoint>,
    supplies: Vec<AssetId>,
) -> std::result::Result<(u64, Vec<Option<TxOutput>>, Vec<u128>), Refused> {
    ask(state, |reply| LedgerQuery::Entries {
        outpoints,
        supplies,
        reply,
    })
    .await?
    .map_err(internal_error)
}

/// `GET /v1/tokens/{asset}`: a token's issuer, decimals, maximum and total supply and the mint rights still
/// unspent (totalSupply in ERC-20's words), at the executed height; 404 for an asset no issue created.
async fn token(State(state): State<Arc<ApiState>>, Path(asset): Path<String>) -> Response {
    let asset = match parse_hash(&asset, "the asset") {
        Ok(hash) => AssetId(hash),
        Err(refused) => return *refused,
    };
    let rights = mint_right_of(&asset);
    let asked = entries(
        &state,
        vec![definition_outpoint(&asset)],
        vec![asset, rights],
    );
    let (height, found, supplies) = match asked.await {
        Ok(answer) => answer,
        Err(refused) => return *refused,
    };
    let Some(definition) = found[0] else {
        return reply(
            StatusCode::NOT_FOUND,
            json!({"status": "unknown", "height": height, "reason": "no token issue created this asset"}),
        );
    };
    let definition = decode_definition(&definition);
    reply(
        StatusCode::OK,
        json!({
            "asset": asset.0.to_hex(),
            "height": height,
            "issuer": definition.issuer.to_hex(),
            "symbol": definition.symbol,
            "decimals": definition.decimals,
            "max_supply": definition.max_supply.to_string(),
            "total_supply": supplies[0].to_string(),
            "mint_rights": supplies[1].to_string(),
        }),
    )
}

/// `GET /v1/accounts/{owner}/objects`: the owner's ledger objects at the executed height: its orders, the
/// allowances it granted and those granted to it (as spender), each with its place (what a fill, transfer-from or
/// cancel names as input `PLACE:INDEX`).
async fn objects(State(state): State<Arc<ApiState>>, Path(owner): Path<String>) -> Response {
    let (owner, _, held) = match owner_entries(&state, &owner).await {
        Ok(found) => found,
        Err(refused) => return *refused,
    };
    // The other half of each object the owner's index holds one half of.
    let mut halves = Vec::new();
    let mut asked = Vec::new();
    for (outpoint, entry) in &held {
        let (kind, escrow_half) = match outpoint.index {
            ORDER_INDEX => (ObjectKind::Order, true),
            ALLOWANCE_INDEX => (ObjectKind::Allowance, true),
            ORDER_TERMS_INDEX => continue, // the maker's own: found from its escrow
            ALLOWANCE_TERMS_INDEX => (ObjectKind::Allowance, false),
            _ => continue,
        };
        let other = if escrow_half {
            kind.terms_at(outpoint.tx)
        } else {
            kind.escrow_at(outpoint.tx)
        };
        halves.push((kind, *outpoint, *entry, escrow_half));
        asked.push(other);
    }
    let (height, others, _) = match entries(&state, asked, Vec::new()).await {
        Ok(answer) => answer,
        Err(refused) => return *refused,
    };
    let mut orders = Vec::new();
    let mut allowances = Vec::new();
    for ((kind, outpoint, entry, escrow_half), other) in halves.into_iter().zip(others) {
        let Some(other) = other else { continue };
        let (escrow, terms) = if escrow_half {
            (entry, other)
        } else {
            (other, entry)
        };
        let place = json!(outpoint.tx.to_hex());
        match kind {
            ObjectKind::Order => {
                let order = Order::of(&escrow, &terms);
                orders.push(json!({
                    "place": place,
                    "input": format!("{}:{}", outpoint.tx.to_hex(), ORDER_INDEX),
                    "maker": order.maker.to_hex(),
                    "token": order.token.0.to_hex(),
                    "side": match order.side { Side::Sell => "sell", Side::Buy => "buy" },
                    "escrow": order.escrow.to_string(),
                    "price": order.price.to_string(),
                }));
            }
            ObjectKind::Allowance => {
                let allowance = Allowance::of(&escrow, &terms);
                allowances.push(json!({
                    "place": place,
                    "input": format!("{}:{}", outpoint.tx.to_hex(), ALLOWANCE_INDEX),
                    "owner": allowance.owner.to_hex(),
                    "spender": allowance.spender.to_hex(),
                    "asset": allowance.asset.0.to_hex(),
                    "amount": allowance.amount.to_string(),
                    "expires_at": allowance.expires_at,
                }));
            }
        }
    }
    reply(
        StatusCode::OK,
        json!({"owner": owner.to_hex(), "height": height, "orders": orders, "allowances": allowances}),
    )
}

/// The POS candidates at the executed height, their stake, the committee an election there would pick, and the
/// epoch schedule: the current epoch and the committee the ledger recorded for `?epoch=` (default: the next one),
/// once its election height is executed.
async fn stake(State(state): State<Arc<ApiState>>, Query(query): Query<StakeQuery>) -> Response {
    let epoch = query.epoch;
    let view = match ask(&state, |reply| LedgerQuery::Stake { epoch, reply }).await {
        Ok(view) => view,
        Err(refused) => return *refused,
    };
    let StakeView {
        height,
        params,
        registry,
        epoch,
        elected_for: (next_epoch, next),
    } = view;
    let pos: std::collections::HashSet<PublicKey> =
        registry.pos_nodes(&params).map(|c| c.key).collect();
    let candidates: Vec<Value> = registry
        .candidates()
        .map(|c| {
            let conduct = registry.conduct(&c.key);
            json!({
                "key": c.key.to_hex(),
                "address": c.address.map(|a| a.to_string()),
                "stake": c.stake,
                "pos": pos.contains(&c.key),
                "absences": conduct.absences,
                "blacklists": conduct.blacklists,
                "blacklisted_until": (conduct.blacklisted_until > 0).then_some(conduct.blacklisted_until),
                "blacklisted": conduct.blacklisted_at(height + 1),
                "evicted": conduct.evicted || registry.equivocated_at(&c.key).is_some(),
                "equivocated_at": registry.equivocated_at(&c.key),
            })
        })
        .collect();
    let elected: Vec<String> = registry
        .elect(&params)
        .iter()
        .map(|c| c.key.to_hex())
        .collect();
    let next = next.map(|members| {
        json!({
            "epoch": next_epoch,
            "first_height": first_height(&params, next_epoch),
            "members": members.iter().map(|m| json!({
                "key": m.key.to_hex(),
                "address": m.address.map(|a| a.to_string()),
                "stake": m.stake,
            })).collect::<Vec<_>>(),
        })
    });
    reply(
        StatusCode::OK,
        json!({
            "height": height,
            "epoch": epoch,
            "params": {
                "epoch_blocks": params.epoch_blocks,
                "committee_size": params.committee_size,
                "candidacy_stake_min": params.candidacy_stake_min,
                "unbond_delay_blocks": params.unbond_delay_blocks,
                "block_reward": params.block_reward,
                "committee_share_percent": params.committee_share_percent,
                "absence_limit": params.absence_limit,
                "blacklist_blocks": params.blacklist_blocks,
                "evict_after": params.evict_after,
            },
            "candidates": candidates,
            "elected": elected,
            "next": next,
        }),
    )
}

#[derive(Deserialize)]
struct AtHeight {
    height: Option<u64>,
}

/// The owner's outputs at `at` (the executed height when None): the outputs now, with the blocks above `at` undone
/// newest first (an applied transaction's outputs to the owner taken out, and the inputs it spent that the owner
/// held put back). Only a transaction the owner signed can spend the owner's outputs, so only those inputs are
/// looked up (their creating transaction from the index, its block from the store).
async fn outputs_at(
    state: &Arc<ApiState>,
    owner: &str,
    at: Option<u64>,
) -> std::result::Result<(PublicKey, u64, Vec<(OutPoint, TxOutput)>), Refused> {
    let (owner, now, outputs) = outputs(state, owner).await?;
    let Some(at) = at else {
        return Ok((owner, now, outputs));
    };
    // Ledger objects are not undone block by block: a height asked for shows coins only (the executed one too,
    // so an answer for a height is the same on every node).
    let outputs: Vec<_> = outputs
        .into_iter()
        .filter(|(outpoint, _)| !is_record(outpoint))
        .collect();
    if at == now {
        return Ok((owner, now, outputs));
    }
    let refuse = |status: StatusCode, reason: String| {
        Box::new(reply(
            status,
            json!({"status": "unknown", "height": at, "executed_height": now, "reason": reason}),
        ))
    };
    if at > now {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            "above the executed height".into(),
        ));
    }
    if now - at > HISTORY_BLOCKS_MAX {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            format!("more than {HISTORY_BLOCKS_MAX} blocks below the executed height"),
        ));
    }
    let Some(_slot) = StreamSlot::take(state) else {
        return Err(Box::new(overloaded(None, OVERLOADED_RETRY_AFTER_MS)));
    };
    let mut set: std::collections::BTreeMap<OutPoint, TxOutput> = outputs.into_iter().collect();
    let mut blocks: HashMap<u64, Arc<cas_engine::Block>> = HashMap::new();
    for height in (at + 1..=now).rev() {
        let block = stored_block(state, &mut blocks, height)
            .await?
            .ok_or_else(|| {
                refuse(
                    StatusCode::NOT_FOUND,
                    format!("block {height} is not stored here"),
                )
            })?;
        let results = state.index.results(height).ok().flatten().ok_or_else(|| {
            refuse(
                StatusCode::NOT_FOUND,
                format!("block {height} is out of the index's retention"),
            )
        })?;
        for (tx, (id, code)) in block.txs.iter().zip(&results.results).rev() {
            if *code != 0 {
                continue;
            }
            for (index, output) in tx.body.outputs.iter().enumerate() {
                if output.owner == owner {
                    set.remove(&OutPoint {
                        tx: *id,
                        index: index as u32,
                    });
                }
            }
            if !tx.signatures.iter().any(|s| s.key == owner) {
                continue;
            }
            for input in &tx.body.inputs {
                let output = spent_output(state, &mut blocks, input)
                    .await?
                    .ok_or_else(|| {
                        refuse(
                            StatusCode::NOT_FOUND,
                            format!(
                                "the output {}:{} it spent is out of the index's retention",
                                input.tx.to_hex(),
                                input.index
                            ),
                        )
                    })?;
                if output.owner == owner {
                    set.insert(*input, output);
                }
            }
        }
    }
    Ok((owner, at, set.into_iter().collect()))
}

/// A stored block, read once per request.
async fn stored_block(
    state: &ApiState,
    blocks: &mut HashMap<u64, Arc<cas_engine::Block>>,
    height: u64,
) -> std::result::Result<Option<Arc<cas_engine::Block>>, Refused> {
    if let Some(block) = blocks.get(&height) {
        return Ok(Some(block.clone()));
    }
    let Some(bytes) = ask(state, |reply| LedgerQuery::Block { height, reply }).await? else {
        return Ok(None);
    };
    let block = Arc::new(to_owned_block(decode_block(&bytes).map_err(|e| {
        Box::new(reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"status": "error", "reason": format!("stored block {height}: {e}")}),
        ))
    })?));
    blocks.insert(height, block.clone());
    Ok(Some(block))
}

/// The output an input spent: from its creating transaction's block (the index says where), or from the genesis.
async fn spent_output(
    state: &ApiState,
    blocks: &mut HashMap<u64, Arc<cas_engine::Block>>,
    input: &OutPoint,
) -> std::result::Result<Option<TxOutput>, Refused> {
    let place = state.index.get(&input.tx).map(|l| (l.height, l.index));
    let block = stored_block(state, blocks, place.map_or(0, |p| p.0)).await?;
    let tx = block.as_ref().and_then(|block| match place {
        Some((_, index)) => block.txs.get(index as usize).cloned(),
        // Not indexed: a genesis transaction (the genesis block is stored at height 0, never executed).
        None => block.txs.iter().find(|tx| tx.tx_id() == input.tx).cloned(),
    });
    Ok(tx
        .filter(|tx| tx.tx_id() == input.tx)
        .and_then(|tx| tx.body.outputs.get(input.index as usize).copied()))
}

/// `GET /v1/accounts/{owner}/balance[?height=H]`: per asset, at the executed height or at H (within
/// [`HISTORY_BLOCKS_MAX`] blocks below it); the answer gives the height.
async fn balance(
    State(state): State<Arc<ApiState>>,
    Path(owner): Path<String>,
    Query(at): Query<AtHeight>,
) -> Response {
    let (owner, height, outputs) = match outputs_at(&state, &owner, at.height).await {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let mut by_asset: std::collections::BTreeMap<AssetId, (u128, u128)> = Default::default();
    for (_, output) in &outputs {
        let (total, locked) = by_asset.entry(output.asset).or_default();
        *total += u128::from(output.amount);
        // Spendable from the block at its unlock height on; the next block is `height + 1`.
        if output.unlock_height.is_some_and(|h| h > height + 1) {
            *locked += u128::from(output.amount);
        }
    }
    let balances: Vec<Value> = by_asset
        .iter()
        .map(|(asset, (total, locked))| {
            json!({"asset": asset.0.to_hex(), "amount": total.to_string(), "locked": locked.to_string()})
        })
        .collect();
    reply(
        StatusCode::OK,
        json!({"owner": owner.to_hex(), "height": height, "balances": balances}),
    )
}

/// `GET /v1/accounts/{owner}/utxos[?height=H]`: the owner's unspent outputs at the executed height or at H.
async fn utxos(
    State(state): State<Arc<ApiState>>,
    Path(owner): Path<String>,
    Query(at): Query<AtHeight>,
) -> Response {
    let (owner, height, outputs) = match outputs_at(&state, &owner, at.height).await {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let utxos: Vec<Value> = outputs
        .iter()
        .filter(|(outpoint, _)| !is_record(outpoint))
        .map(|(outpoint, output)| {
            let mut body = output_json(output);
            body["tx"] = json!(outpoint.tx.to_hex());
            body["index"] = json!(outpoint.index);
            body
        })
        .collect();
    reply(
        StatusCode::OK,
        json!({"owner": owner.to_hex(), "height": height, "utxos": utxos}),
    )
}

fn output_json(output: &TxOutput) -> Value {
    json!({
        "owner": output.owner.to_hex(),
        "asset": output.asset.0.to_hex(),
        "amount": output.amount,
        "unlock_height": output.unlock_height,
    })
}

fn kind_name(kind: &TxKind) -> &'static str {
    match kind {
        TxKind::Transfer => "transfer",
        TxKind::Genesis { .. } => "genesis",
        TxKind::Issuance { .. } => "issuance",
        TxKind::Bond { .. } => "bond",
        TxKind::Unbond { .. } => "unbond",
        TxKind::Candidacy { .. } => "candidacy",
        TxKind::Equivocation { .. } => "equivocation",
        TxKind::TokenIssue { .. } => "token_issue",
        TxKind::TokenMint { .. } => "token_mint",
        TxKind::Approve { .. } => "approve",
        TxKind::TransferFrom { .. } => "transfer_from",
        TxKind::OrderPlace { .. } => "order_place",
        TxKind::Fill { .. } => "fill",
        TxKind::ContractDeploy { .. } => "contract_deploy",
        TxKind::ContractCall { .. } => "contract_call",
        TxKind::Propose { .. } => "propose",
        TxKind::Vote { .. } => "vote",
        TxKind::VnRegister { .. } => "vn_register",
    }
}

/// What a CIP transaction says: a proposal's terms (its id is the tx id), a vote's proposal and choice.
fn governance_json(tx: &Transaction) -> Value {
    match &tx.body.kind {
        TxKind::Propose { terms } => json!({
            "title": terms.title,
            "window_blocks": terms.window_blocks,
            "quorum_bps": terms.quorum_bps,
            "approval_bps": terms.approval_bps,
            "change": terms.change.as_ref().map(change_json),
        }),
        TxKind::Vote { cast } => json!({
            "proposal": cast.proposal.to_hex(),
            "voter": cast.voter.to_hex(),
            "approve": cast.approve,
        }),
        _ => Value::Null,
    }
}

fn change_json(change: &ParamChange) -> Value {
    json!({"param": change.param.name(), "value": change.value, "effective_at": change.effective_at})
}

fn proposal_json(state: &ProposalState) -> Value {
    let p = &state.proposal;
    let status = match state.resolution {
        None => "open",
        Some(r) if r.passed => "passed",
        Some(_) => "failed",
    };
    json!({
        "id": p.id.to_hex(),
        "proposer": p.proposer.to_hex(),
        "snapshot": p.snapshot,
        "end": p.end,
        "quorum_bps": p.quorum_bps,
        "approval_bps": p.approval_bps,
        "change": p.change.as_ref().map(change_json),
        "ballots": state.minted.map(|m| m.to_string()),
        "yes": state.yes.to_string(),
        "no": state.no.to_string(),
        "status": status,
    })
}

/// `GET /v1/proposals`: every CIP proposal at the executed height, with its ballots, votes and status (open,
/// passed, failed), and the parameters a passed change may set as they are for the next block.
async fn proposals(State(state): State<Arc<ApiState>>) -> Response {
    let view = match ask(&state, |reply| LedgerQuery::Governance { reply }).await {
        Ok(view) => view,
        Err(refused) => return *refused,
    };
    reply(
        StatusCode::OK,
        json!({
            "height": view.height,
            "params": {"min_fee": view.min_fee, "unbond_delay_blocks": view.unbond_delay_blocks},
            "proposals": view.proposals.iter().map(proposal_json).collect::<Vec<_>>(),
        }),
    )
}

/// `GET /v1/proposals/{id}`: one proposal (its id is its transaction's id), 404 when the ledger holds none.
async fn proposal(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> Response {
    let id = match parse_hash(&id, "the proposal id") {
        Ok(hash) => hash,
        Err(refused) => return *refused,
    };
    let view = match ask(&state, |reply| LedgerQuery::Governance { reply }).await {
        Ok(view) => view,
        Err(refused) => return *refused,
    };
    match view.proposals.iter().find(|p| p.proposal.id == id) {
        Some(found) => {
            let mut body = proposal_json(found);
            body["height"] = json!(view.height);
            reply(StatusCode::OK, body)
        }
        None => reply(
            StatusCode::NOT_FOUND,
            json!({"status": "unknown", "height": view.height, "reason": "no proposal with this id"}),
        ),
    }
}

/// What a stake transaction is about: the candidate it bonds to or unbonds from, or the address it declares.
fn stake_json(tx: &Transaction) -> Value {
    match &tx.body.kind {
        TxKind::Bond { candidate } | TxKind::Unbond { candidate } => {
            json!({"candidate": candidate.to_hex()})
        }
        TxKind::Candidacy { address } => json!({
            "candidate": tx.signatures.first().map(|s| s.key.to_hex()),
            "address": cas_engine::stake::decode_address(address)
                .ok()
                .flatten()
                .map(|a| a.to_string()),
        }),
        TxKind::Equivocation { proof } => {
            match cas_engine::evidence::EquivocationProof::decode(proof) {
                Ok(proof) => json!({
                    "equivocated": proof.member.to_hex(),
                    "epoch": proof.epoch,
                    "round": proof.round,
                    "blocks": [proof.first.block.to_hex(), proof.second.block.to_hex()],
                }),
                Err(error) => json!({"malformed": error.to_string()}),
            }
        }
        _ => Value::Null,
    }
}

fn tx_json(tx: &Transaction, id: &TxId, index: usize, verdict: Option<Value>) -> Value {
    json!({
        "tx": id.to_hex(),
        "index": index,
        "kind": kind_name(&tx.body.kind),
        "stake": stake_json(tx),
        "governance": governance_json(tx),
        "vn": tx.body.vn,
        "policy": match &tx.body.kind {
            TxKind::VnRegister { policy } => json!({
                "vn": policy.vn,
                "threshold": policy.threshold,
                "endorsers": policy.endorsers.iter()
                    .map(|e| json!({"key": e.key.to_hex(), "weight": e.weight}))
                    .collect::<Vec<_>>(),
                "fee": policy.fee.as_ref().map(vn_fee_json),
            }),
            _ => Value::Null,
        },
        "inputs": tx.body.inputs.iter().map(|i| json!({"tx": i.tx.to_hex(), "index": i.index})).collect::<Vec<_>>(),
        "outputs": tx.body.outputs.iter().map(output_json).collect::<Vec<_>>(),
        "fee": tx.body.fee,
        "memo": hex::encode(&tx.body.memo),
        "client_id": tx.body.client_id,
        "signers": tx.signatures.iter().map(|s| s.key.to_hex()).collect::<Vec<_>>(),
        "events": if verdict.is_none() { events_json(tx) } else { Vec::new() },
        "rejection": verdict,
    })
}

/// The ERC-20 events of an accepted transaction ([`cas_engine::token::events`]).
fn events_json(tx: &Transaction) -> Vec<Value> {
    cas_engine::token::events(tx)
        .iter()
        .map(|event| match event {
            TokenEvent::Transfer {
                asset,
                from,
                to,
                value,
            } => json!({"event": "Transfer", "asset": asset.0.to_hex(), "from": from.to_hex(),
                "to": to.to_hex(), "value": value.to_string()}),
            TokenEvent::Approval {
                asset,
                owner,
                spender,
                value,
            } => json!({"event": "Approval", "asset": asset.0.to_hex(), "owner": owner.to_hex(),
                "spender": spender.to_hex(), "value": value.to_string()}),
        })
        .collect()
}

/// Which transactions of a block a stream asks for (all when no filter is given).
#[derive(Deserialize, Default)]
struct Filter {
    owner: Option<String>,
    memo: Option<String>,
    asset: Option<String>,
}

struct ParsedFilter {
    /// The network whose transactions are shown: 0 (the public network) on the public routes, a VN on its
    /// routed stream (VN isolation: nobody else is served a VN's transactions).
    vn: VnId,
    owner: Option<PublicKey>,
    memo: Option<Vec<u8>>,
    asset: Option<AssetId>,
}

impl ParsedFilter {
    fn parse(filter: &Filter, vn: VnId) -> std::result::Result<ParsedFilter, Refused> {
        Ok(ParsedFilter {
            vn,
            owner: filter.owner.as_deref().map(parse_owner).transpose()?,
            memo: filter
                .memo
                .as_deref()
                .map(hex::decode)
                .transpose()
                .map_err(|e| Box::new(bad_request(format!("memo is not hex: {e}"))))?,
            asset: filter
                .asset
                .as_deref()
                .map(|a| parse_hash(a, "asset").map(AssetId))
                .transpose()?,
        })
    }

    /// A transaction matches when it pays the owner (or is signed by it, or one of its token events names it),
    /// carries the memo, and moves the asset (or raises an event about it).
    fn matches(&self, tx: &Transaction) -> bool {
        if tx.body.vn != self.vn {
            return false;
        }
        // Computed once, and only when a filter may need them: a plain CAS transfer raises none.
        let plain = matches!(tx.body.kind, TxKind::Transfer)
            && tx.body.outputs.iter().all(|o| o.asset == AssetId::CAS);
        let events = if plain || (self.owner.is_none() && self.asset.is_none()) {
            Vec::new()
        } else {
            cas_engine::token::events(tx)
        };
        let owner = self.owner.is_none_or(|owner| {
            tx.body.outputs.iter().any(|o| o.owner == owner)
                || tx.signatures.iter().any(|s| s.key == owner)
                || events.iter().any(|e| e.involves(&owner))
        });
        let memo = self.memo.as_ref().is_none_or(|memo| tx.body.memo == *memo);
        let asset = self.asset.is_none_or(|asset| {
            tx.body.outputs.iter().any(|o| o.asset == asset)
                || events.iter().any(|e| e.asset() == asset)
        });
        owner && memo && asset
    }
}

/// A stored block as JSON, with each transaction's verdict from the index; `filter` keeps only what matches (a
/// block read without one shows the public network's transactions).
fn block_json(
    state: &ApiState,
    bytes: &[u8],
    filter: Option<&ParsedFilter>,
) -> std::result::Result<Value, String> {
    let archived = decode_block(bytes).map_err(|e| e.to_string())?;
    let block = to_owned_block(archived);
    let header = &block.header;
    let shown: Vec<(usize, &Transaction)> = block
        .txs
        .iter()
        .enumerate()
        .filter(|(_, tx)| filter.map_or(tx.body.vn == 0, |f| f.matches(tx)))
        .collect();
    // Each place's own verdict (a transaction in the block twice was refused the second time): from the block's
    // index record, read only when a transaction is shown, or by id where the record is out of reach.
    let results = (!shown.is_empty())
        .then(|| state.index.results(header.height).ok().flatten())
        .flatten()
        .map(|r| r.results);
    let txs: Vec<Value> = shown
        .into_iter()
        .map(|(index, tx)| {
            let id = tx.tx_id();
            let code = match results.as_ref().and_then(|r| r.get(index)) {
                Some((_, code)) => RejectCode::from_u16(*code),
                None => state.index.get(&id).and_then(|l| l.rejection),
            };
            let verdict = code.map(|code| {
                json!({"code": code.number(), "code_name": code.name(), "reason": code.meaning()})
            });
            tx_json(tx, &id, index, verdict)
        })
        .collect();
    Ok(json!({
        "height": header.height,
        "hash": header.hash().to_hex(),
        "parent": header.parent.to_hex(),
        "round": header.round,
        "timestamp_ms": header.timestamp_ms,
        "proposer": header.proposer.to_hex(),
        "tx_root": header.tx_root.to_hex(),
        "sig_root": header.sig_root.to_hex(),
        "utxo_commitment_before": header.utxo_commitment.to_hex(),
        "tx_count": block.txs.len(),
        "txs": txs,
    }))
}

/// `GET /v1/blocks/{height}`.
async fn block(State(state): State<Arc<ApiState>>, Path(height): Path<u64>) -> Response {
    let bytes = match ask(&state, |reply| LedgerQuery::Block { height, reply }).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            let executed = state.stats.lock().expect("stats lock").height;
            return reply(
                StatusCode::NOT_FOUND,
                json!({"status": "unknown", "height": height, "executed_height": executed}),
            );
        }
        Err(response) => return *response,
    };
    match block_json(&state, &bytes, None) {
        Ok(body) => reply(StatusCode::OK, body),
        Err(reason) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"status": "error", "reason": reason}),
        ),
    }
}

#[derive(Deserialize)]
struct StreamParams {
    from: Option<u64>,
    #[serde(flatten)]
    filter: Filter,
}

/// `GET /v1/blocks?from=H[&owner=..][&memo=..][&asset=..]`: every finalized block from H on, one JSON line each, as
/// they are executed; a block's line lists only the transactions that match the filter, but every height gets its
/// line, so a client that reconnects with `from` = its last height + 1 misses nothing and sees nothing twice.
async fn blocks_stream(
    State(state): State<Arc<ApiState>>,
    Query(params): Query<StreamParams>,
) -> Response {
    let filter = match ParsedFilter::parse(&params.filter, 0) {
        Ok(filter) => filter,
        Err(response) => return *response,
    };
    stream_blocks(state, filter, params.from.unwrap_or(1))
}

/// A VN's fee rule as the API shows it (in a registration and in `GET /v1/vns/{vn}`).
fn vn_fee_json(fee: &VnFee) -> Value {
    json!({"token": fee.token.0.to_hex(), "amount": fee.amount, "collector": fee.collector.to_hex()})
}

/// `GET /v1/vns/{vn}`: a VN's Policy at the executed height (registrar, threshold, endorser count and total
/// weight); 404 for a VN no registration created.
async fn vn_policy(State(state): State<Arc<ApiState>>, Path(vn): Path<VnId>) -> Response {
    let asked = vec![policy_outpoint(vn), fee_outpoint(vn)];
    let (height, found, _) = match entries(&state, asked, Vec::new()).await {
        Ok(answer) => answer,
        Err(refused) => return *refused,
    };
    let Some(header) = found[0].map(|entry| PolicyHeader::decode(&entry)) else {
        return reply(
            StatusCode::NOT_FOUND,
            json!({"status": "unknown", "height": height, "reason": "no registration created this VN"}),
        );
    };
    reply(
        StatusCode::OK,
        json!({
            "vn": vn,
            "height": height,
            "registrar": header.registrar.to_hex(),
            "threshold": header.threshold,
            "endorsers": header.endorsers,
            "total_weight": header.total_weight,
            "fee": found[1].map(|entry| vn_fee_json(&decode_fee(&entry))),
        }),
    )
}

/// `GET /v1/vns/{vn}/blocks?from=H[&owner=K]`: the routed stream of one VN, served only to its endorsers (its RS):
/// the request carries the RS's key (`x-cas-key`) and its signature (`x-cas-signature`, hex) over
/// [`stream_request_digest`]`(vn, from)`, and the key must be an endorser of the VN at the executed height. Each
/// line is a block with that VN's transactions only (VN isolation); `owner` narrows them to one account's.
async fn vn_blocks(
    State(state): State<Arc<ApiState>>,
    Path(vn): Path<VnId>,
    headers: HeaderMap,
    Query(params): Query<StreamParams>,
) -> Response {
    let from = params.from.unwrap_or(1);
    let filter = match ParsedFilter::parse(&params.filter, vn) {
        Ok(filter) => filter,
        Err(response) => return *response,
    };
    if vn == 0 {
        return bad_request("VN 0 is the public network: GET /v1/blocks");
    }
    let header_text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let key = header_text("x-cas-key").and_then(|k| PublicKey::from_hex(k).ok());
    let signature = header_text("x-cas-signature")
        .and_then(|s| hex::decode(s).ok())
        .and_then(|s| <[u8; 64]>::try_from(s).ok());
    let (Some(key), Some(signature)) = (key, signature) else {
        return reply(
            StatusCode::UNAUTHORIZED,
            json!({"status": "unauthorized", "reason": "x-cas-key and x-cas-signature (an endorser's signature over the request) are required"}),
        );
    };
    let digest = stream_request_digest(vn, from);
    let signed = cas_engine::crypto::verify_one(&cas_engine::crypto::SigEntry {
        message: &digest,
        key: &key.0,
        signature: &signature,
    });
    let endorser = match entries(&state, vec![endorser_outpoint(vn, &key)], Vec::new()).await {
        Ok((_, found, _)) => found[0].is_some(),
        Err(refused) => return *refused,
    };
    if !signed || !endorser {
        return reply(
            StatusCode::FORBIDDEN,
            json!({"status": "forbidden", "reason": "the signature does not verify, or the key is no endorser of this VN"}),
        );
    }
    stream_blocks(state, filter, from)
}

/// Streams the blocks from height `from` on as JSON lines, with the transactions `filter` keeps.
fn stream_blocks(state: Arc<ApiState>, filter: ParsedFilter, from: u64) -> Response {
    let Some(slot) = StreamSlot::take(&state) else {
        return overloaded(None, OVERLOADED_RETRY_AFTER_MS);
    };
    let stream = futures_util::stream::unfold(
        (slot, filter, Some(from)),
        |(slot, filter, height)| async move {
            let height = height?;
            let state = &slot.0;
            loop {
                if state.stopping.load(Ordering::Relaxed) {
                    return None;
                }
                let executed = state.stats.lock().expect("stats lock").height;
                if height > executed {
                    tokio::time::sleep(Duration::from_millis(STREAM_POLL_MS)).await;
                    continue;
                }
                let line = match ask(state, |reply| LedgerQuery::Block { height, reply }).await {
                    Ok(Some(bytes)) => match block_json(state, &bytes, Some(&filter)) {
                        Ok(body) => body,
                        Err(reason) => json!({"height": height, "error": reason}),
                    },
                    // Below the store's base (this node installed a snapshot): say so and end the stream.
                    Ok(None) => json!({"height": height, "error": "not stored on this node"}),
                    Err(_) => {
                        // Overloaded: try again shortly.
                        tokio::time::sleep(Duration::from_millis(STREAM_POLL_MS)).await;
                        continue;
                    }
                };
                let ended = line.get("error").is_some();
                let mut text = line.to_string();
                text.push('\n');
                let next = (!ended).then_some(height + 1);
                return Some((Ok::<_, std::io::Error>(text), (slot, filter, next)));
            }
        },
    );
    streamed(stream, "application/x-ndjson")
}

/// A streamed body of `content_type`.
fn streamed<S, B>(stream: S, content_type: &'static str) -> Response
where
    S: futures_util::Stream<Item = std::result::Result<B, std::io::Error>> + Send + 'static,
    B: Into<Bytes> + 'static,
{
    let mut response = Body::from_stream(stream).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[derive(Deserialize)]
struct LedgerParams {
    from: Option<u64>,
}

/// `GET /v1/ledger?from=H`: the certified ledger from height H on, as executed here, for followers
/// ([`crate::ledger_stream`] frames: each stored ledger block with the committee's certificate on its result when
/// this node holds one). It waits up to [`LEDGER_CERT_WAIT_MS`] for a certificate that may still form. Ends with the
/// stream when H is below this node's store (it installed a snapshot): the follower asks another node.
async fn ledger_stream(
    State(state): State<Arc<ApiState>>,
    Query(params): Query<LedgerParams>,
) -> Response {
    let from = params.from.unwrap_or(1).max(1);
    let Some(slot) = StreamSlot::take(&state) else {
        return overloaded(None, OVERLOADED_RETRY_AFTER_MS);
    };
    let executed = state.stats.lock().expect("stats lock").height;
    let stream = futures_util::stream::unfold((slot, Some(from)), |(slot, height)| async move {
        let height = height?;
        let state = &slot.0;
        let mut cert_wait_ms = 0;
        loop {
            if state.stopping.load(Ordering::Relaxed) {
                return None;
            }
            let executed = state.stats.lock().expect("stats lock").height;
            if height > executed {
                tokio::time::sleep(Duration::from_millis(LEDGER_POLL_MS)).await;
                continue;
            }
            // A missing certificate may still form here while the height is within the certifier's vote window:
            // waited for by a lookup in memory, read from the index once.
            let may_form = state.forms_certificates
                && height + cas_consensus::ledger_cert::VOTES_BEHIND > executed;
            if may_form && cert_wait_ms < LEDGER_CERT_WAIT_MS && !state.index.has_cert(height) {
                tokio::time::sleep(Duration::from_millis(LEDGER_POLL_MS)).await;
                cert_wait_ms += LEDGER_POLL_MS;
                continue;
            }
            let cert = match state.index.results(height) {
                Ok(results) => results.and_then(|r| r.cert),
                Err(error) => {
                    tracing::warn!(height, %error, "the index does not read; the stream ends");
                    return None;
                }
            };
            let block = match ask(state, |reply| LedgerQuery::Block { height, reply }).await {
                Ok(Some(bytes)) => bytes,
                // Below the store's base: this node cannot serve the height.
                Ok(None) => return None,
                Err(_) => {
                    // Overloaded: try again shortly.
                    tokio::time::sleep(Duration::from_millis(STREAM_POLL_MS)).await;
                    continue;
                }
            };
            let frame = crate::ledger_stream::encode_frame(height, &block, cert.as_ref());
            return Some((
                Ok::<_, std::io::Error>(Bytes::from(frame)),
                (slot, Some(height + 1)),
            ));
        }
    });
    let mut response = streamed(stream, "application/octet-stream");
    // How far this node is: a follower deciding whether it may join the committee compares it with the epoch.
    response.headers_mut().insert(
        crate::ledger_stream::HEIGHT_HEADER,
        axum::http::HeaderValue::from(executed),
    );
    response
}

/// `GET /v1/handovers`: the certified committee hand-overs this node holds, oldest first (each signed by more than
/// two thirds of the stake of the committee before it): what a follower or a light client follows from genesis.
async fn handovers(State(state): State<Arc<ApiState>>) -> Response {
    let list: Vec<_> = state
        .handovers
        .all()
        .iter()
        .map(crate::receipt::HandoverJson::from_handover)
        .collect();
    reply(StatusCode::OK, json!({ "handovers": list }))
}

#[derive(Deserialize)]
struct HeadersParams {
    from: Option<u64>,
    limit: Option<u64>,
}

/// `GET /v1/headers?from=H&limit=N`: the ledger block headers from height H (at least 1; the genesis header is the
/// genesis file's) up to N of them ([`HEADERS_LIMIT_MAX`]) and the executed height, each with the committee's
/// ledger certificate on its result when this node holds one: what a light client keeps ([`crate::receipt`]'s
/// header and certificate JSON). Fewer than N when the executed height is reached; none when H is above it. 404
/// when H is below this node's store (it installed a snapshot): ask another node.
async fn headers(
    State(state): State<Arc<ApiState>>,
    Query(params): Query<HeadersParams>,
) -> Response {
    let from = params.from.unwrap_or(1);
    let limit = params.limit.unwrap_or(HEADERS_LIMIT_DEFAULT);
    if from == 0 {
        return bad_request("from=0: the genesis header is the genesis file's; headers start at 1");
    }
    if limit == 0 || limit > HEADERS_LIMIT_MAX {
        return bad_request(format!("limit={limit}: from 1 to {HEADERS_LIMIT_MAX}"));
    }
    let executed = state.stats.lock().expect("stats lock").height;
    let mut list = Vec::new();
    for height in from..=executed.min(from.saturating_add(limit - 1)) {
        let bytes = match ask(&state, |reply| LedgerQuery::Block { height, reply }).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) if list.is_empty() => {
                return reply(
                    StatusCode::NOT_FOUND,
                    json!({"status": "not_stored", "height": height, "executed_height": executed,
                           "reason": "this node does not store the height (its store starts above it): ask another node"}),
                )
            }
            // Pruned while this request ran: the caller asks again from the next height.
            Ok(None) => break,
            Err(response) => return *response,
        };
        let header = match decode_block(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|block| {
                rkyv::deserialize::<cas_engine::BlockHeader, rkyv::rancor::Error>(&block.header)
                    .map_err(|e| e.to_string())
            }) {
            Ok(header) => header,
            Err(error) => {
                return reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"status": "error", "reason": format!("stored block {height} does not decode: {error}")}),
                )
            }
        };
        let cert = match state.index.results(height) {
            Ok(results) => results.and_then(|r| r.cert),
            Err(error) => {
                return reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"status": "error", "reason": format!("{error:#}")}),
                )
            }
        };
        list.push(json!({
            "header": crate::receipt::HeaderJson::from_header(&header),
            "certificate": cert.as_ref().map(crate::receipt::CertJson::from_cert),
        }));
    }
    reply(
        StatusCode::OK,
        json!({"from": from, "executed_height": executed, "headers": list}),
    )
}

/// One of the [`STREAMS_MAX`] block streams, given back when the stream ends or its client leaves.
struct StreamSlot(Arc<ApiState>);

impl StreamSlot {
    fn take(state: &Arc<ApiState>) -> Option<StreamSlot> {
        let taken = state
            .streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < STREAMS_MAX).then_some(open + 1)
            })
            .is_ok();
        taken.then(|| StreamSlot(state.clone()))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `GET /v1/codes`: every rejection code with its name and meaning.
async fn codes() -> Response {
    let codes: Vec<Value> = RejectCode::ALL
        .iter()
        .map(|c| json!({"code": c.number(), "code_name": c.name(), "meaning": c.meaning()}))
        .collect();
    reply(StatusCode::OK, json!({ "codes": codes }))
}

/// A state whose driver and executor are gone (tests): every route still answers, 503 for what needs them.
#[cfg(test)]
pub(crate) fn detached_state() -> Arc<ApiState> {
    let (submit, _) = std::sync::mpsc::sync_channel(1);
    let (queries, _) = crossbeam_channel::bounded(1);
    let dir = tempfile::tempdir().unwrap();
    let index = crate::tx_index::TxIndex::open(dir.path(), 10).unwrap();
    Arc::new(ApiState {
        waiters: Arc::new(Waiters::default()),
        submit,
        waker: Arc::new(cas_netio::InboundWaker::default()),
        queries,
        streams: Arc::new(AtomicUsize::new(0)),
        index: index.view(),
        stats: Arc::new(Mutex::new(Executed::default())),
        stopping: AtomicBool::new(false),
        forms_certificates: true,
        handovers: Arc::new(
            crate::epochs::Handovers::open(
                dir.path(),
                1,
                &cas_consensus::committee::Committee::new(vec![(
                    cas_engine::PublicKey([1; 32]),
                    1,
                )])
                .unwrap(),
            )
            .unwrap(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    /// The (method, path) pairs docs/openapi.yaml documents.
    fn documented() -> Vec<(String, String)> {
        let text = include_str!("../../../docs/openapi.yaml");
        let mut routes = Vec::new();
        let mut path = None;
        for line in text.lines() {
            if let Some(p) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
                path = Some(format!("/{p}"));
            } else if !line.starts_with("   ") && !line.starts_with("  /") {
                path = None;
            }
            let method = line.strip_prefix("    ").and_then(|l| l.strip_suffix(':'));
            if let (Some(path), Some(method)) = (&path, method) {
                if ["get", "post", "put", "delete"].contains(&method) {
                    routes.push((method.to_string(), path.clone()));
                }
            }
        }
        routes.sort();
        routes
    }

    #[tokio::test]
    async fn headers_are_asked_within_bounds() {
        let router = router(super::detached_state());
        let ask = |query: String| {
            let request = axum::http::Request::builder()
                .uri(format!("/v1/headers{query}"))
                .body(Body::empty())
                .unwrap();
            let router = router.clone();
            async move {
                let response = router.oneshot(request).await.unwrap();
                let status = response.status();
                let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .unwrap();
                (status, serde_json::from_slice::<Value>(&body).unwrap())
            }
        };
        let too_many = format!("?limit={}", HEADERS_LIMIT_MAX + 1);
        for query in ["?from=0".to_string(), "?limit=0".to_string(), too_many] {
            let (status, body) = ask(query.clone()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
            assert_eq!(body["status"], "bad_request", "{query}");
        }
        // Above the executed height (0 here): nothing yet, and the height to come back for.
        let (status, body) = ask("?from=1&limit=5".into()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["headers"], json!([]));
        assert_eq!(body["executed_height"], 0);
    }

    #[tokio::test]
    async fn the_openapi_file_lists_every_route_the_server_answers() {
        let mut served: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        served.sort();
        assert_eq!(
            documented(),
            served,
            "docs/openapi.yaml and the server's routes differ"
        );
        let router = router(super::detached_state());
        let key = "ab".repeat(32);
        for (method, path) in ROUTES {
            let uri = path
                .replace("{id}", &key)
                .replace("{sender}", &key)
                .replace("{client_id}", "7")
                .replace("{owner}", &key)
                .replace("{height}", "1")
                .replace("{vn}", "7");
            let request = axum::http::Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(format!("{uri}?from=999999999"))
                .extension(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 9))))
                .body(Body::from(vec![0u8; 3]))
                .unwrap();
            let response = router.clone().oneshot(request).await.unwrap();
            let status = response.status();
            let is_stream = ["/v1/blocks", "/v1/ledger"].contains(path);
            if is_stream {
                assert_eq!(status, StatusCode::OK, "{method} {path}");
                continue;
            }
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            let parsed: Value = serde_json::from_slice(&body)
                .unwrap_or_else(|_| panic!("{method} {path}: {status}, not our JSON: {body:?}"));
            assert!(parsed.is_object(), "{method} {path}: {parsed}");
        }
    }
}
