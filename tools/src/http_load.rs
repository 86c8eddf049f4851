//! `cas load --api`: the same signed load as `cas load`, submitted through the nodes' HTTP API instead of the QUIC
//! ingest endpoint, to weigh the two paths against each other (`cas local --compare-http`). Each account's chain
//! of transfers stays on one worker thread, which posts them in order (a later transfer spends the change of the
//! earlier one, so it is posted once the earlier one is `accepted`); the workers of a node share its accounts.
//! Finality comes from one block stream (`GET /v1/blocks`, resumed on another node from the next height when its
//! node stops), so no request waits for a block: a worker waits only for admission. Refusals are answers as on the QUIC path: `overloaded` pauses the worker for the retry-after and
//! the transaction is posted again. With `wait_final` each post holds until the transaction is final
//! (`?wait=final`) and its latency is the HTTP answer's: no block stream is read.

/// How long a `?wait=final` post may be held by the node.
const WAIT_FINAL_TIMEOUT_MS: u64 = 30_000;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use cas_engine::client::{ClientAnswer, RuleFailure};
use cas_engine::tx::OutPoint;
use cas_engine::{Hash32, TxId, TxOutput};

use crate::load::{plan, summarise, Answer, LoadPlan, LoadReport, Outcome};

/// How one worker's post ended.
enum Posted {
    Answer(ClientAnswer),
    Overloaded(u64),
}

/// How long the load waits for every node's API to answer before it starts, and how long a post may keep failing
/// to connect (a node restarting) before the load gives up.
const API_START_TIMEOUT: Duration = Duration::from_secs(60);
const POST_RETRY_FOR: Duration = Duration::from_secs(30);

fn post(agent: &ureq::Agent, url: &str, bytes: &[u8], id: TxId) -> Result<Posted> {
    let failing_since = Instant::now();
    let response = loop {
        match agent
            .post(url)
            .set("Content-Type", "application/octet-stream")
            .send_bytes(bytes)
        {
            Ok(response) => break response,
            Err(ureq::Error::Status(_, response)) => break response,
            // Not reached (a node restarting): sent again shortly.
            Err(_) if failing_since.elapsed() < POST_RETRY_FOR => {
                thread::sleep(Duration::from_millis(100))
            }
            Err(error) => return Err(error).context("posting a transaction"),
        }
    };
    let body: serde_json::Value =
        serde_json::from_reader(response.into_reader()).context("the answer is not JSON")?;
    let text = |key: &str| body[key].as_str().unwrap_or_default().to_string();
    Ok(match body["status"].as_str() {
        Some("final") => Posted::Answer(ClientAnswer::Final {
            tx: id,
            height: body["height"].as_u64().unwrap_or(0),
            index: body["index"].as_u64().unwrap_or(0) as u32,
            block: Hash32::from_hex(&text("block")).unwrap_or_default(),
            rejection: body["rejection"].as_object().map(|r| RuleFailure {
                code: r["code"].as_u64().unwrap_or(0) as u16,
                reason: r["reason"].as_str().unwrap_or_default().to_string(),
            }),
        }),
        Some("accepted") | Some("pending") => Posted::Answer(ClientAnswer::Accepted { tx: id }),
        Some("duplicate") => Posted::Answer(ClientAnswer::Duplicate { tx: id }),
        Some("rejected") => Posted::Answer(ClientAnswer::Rejected {
            tx: Some(id),
            code: body["code"].as_u64().unwrap_or(0) as u16,
            reason: text("reason"),
        }),
        Some("overloaded") => Posted::Overloaded(body["retry_after_ms"].as_u64().unwrap_or(100)),
        _ => anyhow::bail!("an answer the load does not know: {body}"),
    })
}

/// Reads the block stream and records, by plan index, when each planned transaction was final and its verdict,
/// until `done`. The stream is resumable: when it breaks (its node restarting), it is opened again on the next node
/// from the height after the last one read, so nothing is missed or seen twice; it gives up after
/// [`POST_RETRY_FOR`] without a stream.
fn follow(
    apis: &[SocketAddr],
    index_of: &HashMap<TxId, u32>,
    finals: &Mutex<Vec<Option<(u64, ClientAnswer)>>>,
    settled: &AtomicUsize,
    done: &AtomicBool,
    started: Instant,
) -> Result<()> {
    let agent = ureq::AgentBuilder::new().build();
    let mut from = 1u64;
    let mut attempt = 0usize;
    let mut failing_since: Option<Instant> = None;
    while !done.load(Ordering::Relaxed) {
        let api = apis[attempt % apis.len()];
        attempt += 1;
        let lines = agent
            .get(&format!("http://{api}/v1/blocks"))
            .query("from", &from.to_string())
            .call()
            .map(|response| BufReader::new(response.into_reader()).lines());
        let Ok(lines) = lines else {
            let since = *failing_since.get_or_insert_with(Instant::now);
            anyhow::ensure!(
                since.elapsed() < POST_RETRY_FOR,
                "no node served the block stream for {POST_RETRY_FOR:?}"
            );
            thread::sleep(Duration::from_millis(200));
            continue;
        };
        failing_since = None;
        for line in lines {
            if done.load(Ordering::Relaxed) {
                return Ok(());
            }
            // A broken stream (its node stopped) is opened again elsewhere from `from`.
            let Ok(line) = line else { break };
            let block: serde_json::Value = serde_json::from_str(&line)?;
            let at_ns = started.elapsed().as_nanos() as u64;
            let height = block["height"].as_u64().unwrap_or(0);
            from = height + 1;
            let hash =
                Hash32::from_hex(block["hash"].as_str().unwrap_or_default()).unwrap_or_default();
            let mut finals = finals.lock().expect("finals lock");
            for tx in block["txs"].as_array().into_iter().flatten() {
                let Some(id) = tx["tx"].as_str().and_then(|t| Hash32::from_hex(t).ok()) else {
                    continue;
                };
                let Some(&index) = index_of.get(&id) else {
                    continue;
                };
                let rejection = tx["rejection"].as_object().map(|r| RuleFailure {
                    code: r["code"].as_u64().unwrap_or(0) as u16,
                    reason: r["reason"].as_str().unwrap_or_default().to_string(),
                });
                let answer = ClientAnswer::Final {
                    tx: id,
                    height,
                    index: tx["index"].as_u64().unwrap_or(0) as u32,
                    block: hash,
                    rejection,
                };
                // The first time it is in a block is what happened to it (a later copy is refused, spending
                // nothing).
                if finals[index as usize].is_none() {
                    finals[index as usize] = Some((at_ns, answer));
                    settled.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    Ok(())
}

/// Runs the load through the HTTP APIs `apis` (accounts go to them round-robin, as on the QUIC path), with
/// `workers` threads per node; waits up to `drain` after the last post for the last finals. With `wait_final`
/// every post holds until final and the answer is the final.
#[allow(clippy::too_many_arguments)]
pub fn run(
    apis: &[SocketAddr],
    load: &LoadPlan,
    genesis: &[(OutPoint, TxOutput)],
    workers: usize,
    wait_final: bool,
    drain: Duration,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<LoadReport> {
    anyhow::ensure!(!apis.is_empty(), "the load needs at least one node");
    // A circulate transfer must wait for the one that paid it, which only the QUIC sender tracks.
    anyhow::ensure!(
        load.workload == crate::load::Workload::Chain,
        "the HTTP load runs the chain workload only (--workload circulate needs the ingest path)"
    );
    let planned = plan(load, genesis)?;
    // The nodes may still be starting: every API must answer before the clock starts.
    let agent = ureq::AgentBuilder::new().build();
    for api in apis {
        let deadline = Instant::now() + API_START_TIMEOUT;
        while let Err(error) = agent.get(&format!("http://{api}/v1/codes")).call() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the HTTP API at {api} did not answer in {API_START_TIMEOUT:?}: {error}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
    let total = planned.len();
    let ids: Vec<TxId> = planned.iter().map(|p| p.id).collect();
    let index_of: Arc<HashMap<TxId, u32>> = Arc::new(
        ids.iter()
            .enumerate()
            .map(|(i, id)| (*id, i as u32))
            .collect(),
    );
    let encoded: Arc<Vec<Bytes>> = Arc::new(planned.iter().map(|p| p.encoded.clone()).collect());
    // Each worker's transactions, in plan (submission) order: all of an account's on one worker.
    let workers = workers.max(1);
    let lanes = apis.len() * workers;
    let mut lane_txs: Vec<Vec<u32>> = vec![Vec::new(); lanes];
    for (index, p) in planned.iter().enumerate() {
        let target = p.account as usize % apis.len();
        let worker = (p.account as usize / apis.len()) % workers;
        lane_txs[target * workers + worker].push(index as u32);
    }
    let finals = Arc::new(Mutex::new(vec![None; total]));
    let admitted = Arc::new(Mutex::new(vec![None; total]));
    let submitted_ns = Arc::new(Mutex::new(vec![0u64; total]));
    let settled = Arc::new(AtomicUsize::new(0));
    let posted = Arc::new(AtomicUsize::new(0));
    let overloaded = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let cpu_before = cas_perf::pipeline::process_cpu_time("self");
    let follower = (!wait_final)
        .then(|| {
            let (index_of, finals, settled, done) = (
                index_of.clone(),
                finals.clone(),
                settled.clone(),
                done.clone(),
            );
            let apis = apis.to_vec();
            thread::Builder::new()
                .name("cas-load-stream".into())
                .spawn(move || follow(&apis, &index_of, &finals, &settled, &done, started))
        })
        .transpose()?;
    let per_tx_ns = 1e9 / load.rate_per_s.max(1) as f64;
    let handles: Vec<thread::JoinHandle<Result<()>>> = lane_txs
        .into_iter()
        .enumerate()
        .map(|(lane, txs)| {
            let url = match wait_final {
                false => format!("http://{}/v1/tx", apis[lane / workers]),
                true => format!(
                    "http://{}/v1/tx?wait=final&timeout_ms={WAIT_FINAL_TIMEOUT_MS}",
                    apis[lane / workers]
                ),
            };
            let finals = finals.clone();
            let failed = failed.clone();
            let (encoded, ids, admitted, submitted_ns, settled, posted, overloaded, done) = (
                encoded.clone(),
                ids.clone(),
                admitted.clone(),
                submitted_ns.clone(),
                settled.clone(),
                posted.clone(),
                overloaded.clone(),
                done.clone(),
            );
            thread::Builder::new()
                .name(format!("cas-load-http-{lane}"))
                .stack_size(256 * 1024)
                .spawn(move || -> Result<()> {
                    let agent = ureq::AgentBuilder::new()
                        .max_idle_connections_per_host(1)
                        .build();
                    for index in txs {
                        let due = Duration::from_nanos((index as f64 * per_tx_ns) as u64);
                        if let Some(wait) = due.checked_sub(started.elapsed()) {
                            thread::sleep(wait);
                        }
                        let at_ns = started.elapsed().as_nanos() as u64;
                        submitted_ns.lock().expect("lock")[index as usize] = at_ns.max(1);
                        loop {
                            if done.load(Ordering::Relaxed) {
                                return Ok(());
                            }
                            let answer =
                                post(&agent, &url, &encoded[index as usize], ids[index as usize])
                                    .inspect_err(|_| failed.store(true, Ordering::Relaxed))?;
                            match answer {
                                Posted::Overloaded(retry_after_ms) => {
                                    overloaded.fetch_add(1, Ordering::Relaxed);
                                    thread::sleep(Duration::from_millis(retry_after_ms));
                                }
                                // Final already (a repeat post after overload): nothing new.
                                Posted::Answer(ClientAnswer::Final { .. })
                                    if finals.lock().expect("lock")[index as usize].is_some() =>
                                {
                                    break
                                }
                                Posted::Answer(answer @ ClientAnswer::Final { .. }) => {
                                    // The held request's answer is the final: admitted, and final now.
                                    let at_ns = started.elapsed().as_nanos() as u64;
                                    let tx = ids[index as usize];
                                    admitted.lock().expect("lock")[index as usize] =
                                        Some(ClientAnswer::Accepted { tx });
                                    finals.lock().expect("lock")[index as usize] =
                                        Some((at_ns, answer));
                                    settled.fetch_add(1, Ordering::Relaxed);
                                    break;
                                }
                                Posted::Answer(answer) => {
                                    if !matches!(answer, ClientAnswer::Accepted { .. }) {
                                        settled.fetch_add(1, Ordering::Relaxed);
                                    }
                                    admitted.lock().expect("lock")[index as usize] = Some(answer);
                                    break;
                                }
                            }
                        }
                        posted.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                })
                .map_err(anyhow::Error::from)
        })
        .collect::<Result<_>>()?;
    let mut last_progress = Instant::now();
    let mut drain_until = None;
    loop {
        let sent = posted.load(Ordering::Relaxed);
        if last_progress.elapsed() >= Duration::from_millis(100) {
            last_progress = Instant::now();
            progress(sent, total);
        }
        if sent == total && drain_until.is_none() {
            drain_until = Some(Instant::now() + drain);
        }
        let all_settled = settled.load(Ordering::Relaxed) >= total;
        // A worker that failed ends the run with its error (joined below).
        let failed = failed.load(Ordering::Relaxed);
        if all_settled || failed || drain_until.is_some_and(|until| Instant::now() >= until) {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    progress(posted.load(Ordering::Relaxed), total);
    done.store(true, Ordering::Relaxed);
    for handle in handles {
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("a load worker panicked"))??;
    }
    let cpu_s = match (cpu_before, cas_perf::pipeline::process_cpu_time("self")) {
        (Some(before), Some(after)) => (after - before).as_secs_f64(),
        _ => 0.0,
    };
    // The stream thread ends at its next block line; it is waited for only when it already ended (with an error,
    // the finals it would have seen are missing: say why).
    if let Some(follower) = follower.filter(|f| f.is_finished()) {
        follower
            .join()
            .map_err(|_| anyhow::anyhow!("the block stream thread panicked"))?
            .context("following the block stream")?;
    }
    let finals = finals.lock().expect("lock").clone();
    let admitted = admitted.lock().expect("lock").clone();
    let outcomes: Vec<Outcome> = admitted
        .into_iter()
        .zip(finals)
        .map(|(admitted, finalised)| Outcome {
            admitted: admitted.as_ref().and_then(Answer::of),
            finalised: finalised.and_then(|(at_ns, answer)| Some((at_ns, Answer::of(&answer)?))),
        })
        .collect();
    let submitted_ns = submitted_ns.lock().expect("lock").clone();
    let mut report = summarise(load, &planned, &outcomes, &submitted_ns);
    report.connections = lanes;
    report.overloaded_answers = overloaded.load(Ordering::Relaxed);
    report.load_cpu_s = cpu_s;
    report.load_cpu_us_per_tx = cpu_s * 1e6 / total.max(1) as f64;
    Ok(report)
}
