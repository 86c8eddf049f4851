//! The load generator (`cas load`, and the load of `cas local`): pre-signs transfers over many accounts, each a
//! chain of dependent transactions (every transfer spends its account's change from the previous one), with a
//! share of invalid ones (bad signature, double spend, unknown input); submits them open-loop at a fixed rate to
//! the nodes' ingest endpoints (each account always to the same node, so its chain stays in order); and measures
//! submit-to-final latency from the nodes' receipts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use cas_engine::client::ClientAnswer;
use cas_engine::codec::encode_tx;
use cas_engine::fixtures::{key, transfer, ACCOUNT_KEYS};
use cas_engine::{Hash32, Keypair, OutPoint, PublicKey, Transaction, TxId, TxOutput};
use cas_netio::ingest::IngestClient;
use serde::Serialize;

/// Why a generated transaction is invalid on purpose, and so how it must be answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Sabotage {
    BadSignature,
    DoubleSpend,
    UnknownInput,
}

pub struct LoadPlan {
    pub chain_id: u32,
    pub accounts: u32,
    pub rounds: u32,
    pub fee: u64,
    /// One invalid transaction after every this many valid ones (0: none).
    pub invalid_every: usize,
    pub rate_per_s: u64,
}

/// One transaction of the plan, in submission order.
pub struct Planned {
    pub tx: Transaction,
    pub account: u32,
    pub sabotage: Option<Sabotage>,
}

/// What happened to one submitted transaction.
#[derive(Clone, Debug, Default)]
struct Outcome {
    submitted: Option<Instant>,
    admitted: Option<ClientAnswer>,
    finalised: Option<(Instant, ClientAnswer)>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadReport {
    pub offered_rate_per_s: u64,
    pub submitted: usize,
    pub final_accepted: usize,
    pub rejected_at_admission: usize,
    pub rejected_in_block: usize,
    pub unanswered: usize,
    pub committed_tps: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub elapsed_s: f64,
    /// Valid transactions that did not end final-and-accepted, or invalid ones not rejected for their reason.
    pub wrong_answer_count: usize,
    /// The first few of them.
    pub wrong_answers: Vec<String>,
}

/// Signs the whole load up front (on all cores), in submission order: `rounds` transfers per account, each
/// spending the account's change from its previous one (chains of dependent transactions), sending 1 CAS to the
/// next account; after every `invalid_every`-th valid one an invalid copy follows (rotating bad signature, double
/// spend, unknown input).
pub fn plan(plan: &LoadPlan, genesis: &[(OutPoint, TxOutput)]) -> Vec<Planned> {
    let threads = thread::available_parallelism().map_or(1, usize::from);
    let accounts: Vec<u32> = (0..plan.accounts).collect();
    let chains: Vec<Vec<Transaction>> = thread::scope(|scope| {
        let handles: Vec<_> = accounts
            .chunks(accounts.len().div_ceil(threads).max(1))
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|&a| chain(plan, a, genesis))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("signing thread"))
            .collect()
    });
    let mut planned = Vec::new();
    let mut valid = 0usize;
    for round in 0..plan.rounds as usize {
        for (account, chain) in chains.iter().enumerate() {
            let tx = &chain[round];
            planned.push(Planned {
                tx: tx.clone(),
                account: account as u32,
                sabotage: None,
            });
            valid += 1;
            if plan.invalid_every > 0 && valid.is_multiple_of(plan.invalid_every) {
                let kind = [
                    Sabotage::BadSignature,
                    Sabotage::DoubleSpend,
                    Sabotage::UnknownInput,
                ][(valid / plan.invalid_every) % 3];
                let bad = sabotage(tx, kind, &key(ACCOUNT_KEYS, account as u32));
                planned.push(Planned {
                    tx: bad,
                    account: account as u32,
                    sabotage: Some(kind),
                });
            }
        }
    }
    planned
}

fn chain(plan: &LoadPlan, account: u32, genesis: &[(OutPoint, TxOutput)]) -> Vec<Transaction> {
    let owner = key(ACCOUNT_KEYS, account);
    let next = key(ACCOUNT_KEYS, (account + 1) % plan.accounts);
    let mut coin = *genesis
        .iter()
        .find(|(_, c)| c.owner == owner.public())
        .expect("every account is funded");
    (0..plan.rounds)
        .map(|_| {
            let tx = transfer(plan.chain_id, &owner, &[coin], &next, 1, plan.fee);
            coin = (
                OutPoint {
                    tx: tx.tx_id(),
                    index: 1,
                },
                tx.body.outputs[1],
            );
            tx
        })
        .collect()
}

/// An invalid copy of `tx`, submitted right after it.
pub fn sabotage(tx: &Transaction, kind: Sabotage, owner: &Keypair) -> Transaction {
    let mut bad = tx.clone();
    bad.body.outputs[0].amount += 1;
    bad.body.outputs[1].amount -= 1;
    match kind {
        Sabotage::BadSignature => {
            bad.witnesses[0].signature.0[7] ^= 1;
            bad
        }
        Sabotage::DoubleSpend => bad.body.sign(&[owner]),
        Sabotage::UnknownInput => {
            bad.body.inputs[0].tx = Hash32(*blake3::hash(&tx.tx_id().0).as_bytes());
            bad.body.sign(&[owner])
        }
    }
}

fn right_answer(sabotage: Option<Sabotage>, outcome: &Outcome) -> Result<(), String> {
    let admitted = outcome.admitted.as_ref();
    let finalised = outcome.finalised.as_ref().map(|(_, a)| a);
    match (sabotage, admitted, finalised) {
        (
            None,
            _,
            Some(ClientAnswer::Final {
                rejection: None, ..
            }),
        ) => Ok(()),
        (Some(Sabotage::BadSignature), Some(ClientAnswer::Rejected { reason, .. }), None)
            if reason.contains("bad signature") =>
        {
            Ok(())
        }
        (
            Some(Sabotage::DoubleSpend),
            _,
            Some(ClientAnswer::Final {
                rejection: Some(reason),
                ..
            }),
        ) if reason.contains("already spent") || reason.contains("does not exist") => Ok(()),
        (
            Some(Sabotage::UnknownInput),
            _,
            Some(ClientAnswer::Final {
                rejection: Some(reason),
                ..
            }),
        ) if reason.contains("does not exist") => Ok(()),
        _ => Err(format!(
            "{sabotage:?}: admitted {admitted:?}, final {finalised:?}"
        )),
    }
}

/// Runs the load against `targets` (ingest address and node key); accounts go to targets round-robin.
pub fn run(
    targets: &[(SocketAddr, PublicKey)],
    load: &LoadPlan,
    genesis: &[(OutPoint, TxOutput)],
    drain: Duration,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<LoadReport> {
    let planned = plan(load, genesis);
    let clients: Vec<Arc<IngestClient>> = targets
        .iter()
        .map(|(addr, key)| connect(*addr, *key).map(Arc::new))
        .collect::<Result<_>>()?;
    let ids: Vec<TxId> = planned.iter().map(|p| p.tx.tx_id()).collect();
    let outcomes: Arc<Mutex<HashMap<TxId, Outcome>>> = Arc::new(Mutex::new(
        ids.iter().map(|id| (*id, Outcome::default())).collect(),
    ));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let receivers: Vec<_> = clients
        .iter()
        .map(|client| {
            let (client, outcomes, done) = (client.clone(), outcomes.clone(), done.clone());
            thread::spawn(move || receive(&client, &outcomes, &done))
        })
        .collect();
    let encoded: Vec<Bytes> = planned
        .iter()
        .map(|p| Bytes::from(encode_tx(&p.tx).to_vec()))
        .collect();
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / load.rate_per_s.max(1) as f64);
    for (index, (p, bytes)) in planned.iter().zip(encoded).enumerate() {
        let due = started + interval * index as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let client = &clients[p.account as usize % clients.len()];
        outcomes
            .lock()
            .expect("outcomes")
            .get_mut(&ids[index])
            .expect("planned")
            .submitted = Some(Instant::now());
        client.submit(bytes).context("submitting a transaction")?;
        if index % 100 == 0 {
            progress(index, planned.len());
        }
    }
    progress(planned.len(), planned.len());
    // Wait for every receipt, up to the drain time.
    let drain_until = Instant::now() + drain;
    while Instant::now() < drain_until {
        let pending = outcomes
            .lock()
            .expect("outcomes")
            .values()
            .filter(|o| !answered(o))
            .count();
        if pending == 0 {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    for receiver in receivers {
        let _ = receiver.join();
    }
    let outcomes = outcomes.lock().expect("outcomes");
    let report = summarise(load, &planned, &ids, &outcomes, started);
    Ok(report)
}

fn answered(outcome: &Outcome) -> bool {
    outcome.finalised.is_some() || matches!(outcome.admitted, Some(ClientAnswer::Rejected { .. }))
}

fn connect(addr: SocketAddr, key: PublicKey) -> Result<IngestClient> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match IngestClient::connect(addr, key) {
            Ok(client) => return Ok(client),
            Err(error) if Instant::now() < deadline => {
                tracing::debug!(%addr, %error, "node not up yet");
                thread::sleep(Duration::from_millis(200));
            }
            Err(error) => {
                return Err(error).with_context(|| format!("cannot connect to the node at {addr}"))
            }
        }
    }
}

fn receive(
    client: &IngestClient,
    outcomes: &Mutex<HashMap<TxId, Outcome>>,
    done: &std::sync::atomic::AtomicBool,
) {
    /// Answers taken per lock of the shared outcomes, so reading keeps up with the node at high rates.
    const ANSWERS_PER_BATCH: usize = 4_096;
    let mut batch: Vec<(Instant, ClientAnswer)> = Vec::with_capacity(ANSWERS_PER_BATCH);
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        let Ok(Some(first)) = client.recv_answer(Duration::from_millis(100)) else {
            continue;
        };
        let now = Instant::now();
        batch.extend(ClientAnswer::decode(&first).ok().map(|a| (now, a)));
        while batch.len() < ANSWERS_PER_BATCH {
            let Ok(Some(bytes)) = client.try_recv_answer() else {
                break;
            };
            batch.extend(ClientAnswer::decode(&bytes).ok().map(|a| (now, a)));
        }
        let mut outcomes = outcomes.lock().expect("outcomes");
        for (at, answer) in batch.drain(..) {
            let id = match &answer {
                ClientAnswer::Accepted { tx }
                | ClientAnswer::Duplicate { tx }
                | ClientAnswer::Overloaded { tx, .. }
                | ClientAnswer::Final { tx, .. } => *tx,
                ClientAnswer::Rejected { tx: Some(tx), .. } => *tx,
                ClientAnswer::Rejected { tx: None, .. } => continue,
            };
            let Some(outcome) = outcomes.get_mut(&id) else {
                continue;
            };
            if matches!(answer, ClientAnswer::Final { .. }) {
                outcome.finalised = Some((at, answer));
            } else {
                outcome.admitted = Some(answer);
            }
        }
    }
}

fn summarise(
    load: &LoadPlan,
    planned: &[Planned],
    ids: &[TxId],
    outcomes: &HashMap<TxId, Outcome>,
    started: Instant,
) -> LoadReport {
    let mut report = LoadReport {
        offered_rate_per_s: load.rate_per_s,
        submitted: planned.len(),
        ..LoadReport::default()
    };
    let mut latencies = Vec::new();
    let mut last_final = started;
    for (p, id) in planned.iter().zip(ids) {
        let outcome = &outcomes[id];
        match &outcome.finalised {
            Some((
                at,
                ClientAnswer::Final {
                    rejection: None, ..
                },
            )) => {
                report.final_accepted += 1;
                last_final = last_final.max(*at);
                if let Some(submitted) = outcome.submitted {
                    latencies.push(at.duration_since(submitted).as_secs_f64() * 1e3);
                }
            }
            Some(_) => report.rejected_in_block += 1,
            None if matches!(outcome.admitted, Some(ClientAnswer::Rejected { .. })) => {
                report.rejected_at_admission += 1
            }
            None => report.unanswered += 1,
        }
        if let Err(wrong) = right_answer(p.sabotage, outcome) {
            report.wrong_answer_count += 1;
            if report.wrong_answers.len() < 20 {
                report.wrong_answers.push(format!("tx {id:?}: {wrong}"));
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    let percentile = |p: usize| {
        latencies.get((latencies.len() * p / 100).min(latencies.len().saturating_sub(1)))
    };
    report.latency_p50_ms = percentile(50).copied().unwrap_or(0.0);
    report.latency_p99_ms = percentile(99).copied().unwrap_or(0.0);
    report.elapsed_s = last_final.duration_since(started).as_secs_f64();
    report.committed_tps = report.final_accepted as f64 / report.elapsed_s.max(1e-9);
    report
}

#[derive(clap::Args, Clone, Debug)]
pub struct LoadArgs {
    /// The genesis the nodes run (its accounts must be the deterministic load accounts, as `cas local` makes).
    #[arg(long)]
    pub genesis: std::path::PathBuf,
    /// A node's ingest endpoint as ADDR=PUBLIC_KEY (repeat).
    #[arg(long = "target", required = true)]
    pub targets: Vec<String>,
    #[arg(long, default_value_t = 1_000)]
    pub rate: u64,
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
    /// Accounts to use (at most the genesis's funded load accounts).
    #[arg(long, default_value_t = 1_000)]
    pub accounts: u32,
    #[arg(long, default_value_t = 100)]
    pub invalid_every: usize,
}

/// `cas load`: the load generator against nodes that are already running.
pub fn run_command(args: &LoadArgs) -> Result<()> {
    let bytes = std::fs::read(&args.genesis)
        .with_context(|| format!("cannot read {}", args.genesis.display()))?;
    let genesis = cas_engine::codec::to_owned_block(cas_engine::codec::decode_block(&bytes)?);
    let targets = args
        .targets
        .iter()
        .map(|t| {
            let (addr, key) = t
                .split_once('=')
                .with_context(|| format!("target {t:?} is not ADDR=PUBLIC_KEY"))?;
            Ok((
                addr.parse()
                    .with_context(|| format!("bad address in {t:?}"))?,
                PublicKey::from_hex(key)?,
            ))
        })
        .collect::<Result<Vec<(SocketAddr, PublicKey)>>>()?;
    let plan = LoadPlan {
        chain_id: genesis.header.chain_id,
        accounts: args.accounts,
        rounds: (args.rate * args.duration_s)
            .div_ceil(u64::from(args.accounts))
            .max(1) as u32,
        fee: 1,
        invalid_every: args.invalid_every,
        rate_per_s: args.rate,
    };
    let outputs = cas_engine::genesis::genesis_outputs(&genesis.txs);
    let report = run(
        &targets,
        &plan,
        &outputs,
        Duration::from_secs(20),
        &mut |sent, total| {
            if sent % 1_000 == 0 || sent == total {
                eprintln!("submitted {sent}/{total}");
            }
        },
    )?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    anyhow::ensure!(
        report.wrong_answer_count == 0,
        "{} wrong answers",
        report.wrong_answer_count
    );
    Ok(())
}
