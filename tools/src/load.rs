//! The load generator (`cas load`, and the load of `cas local`): pre-signs transfers over many accounts, each a
//! chain of dependent transactions (every transfer spends its account's change from the previous one), with a
//! share of invalid ones (bad signature, double spend, unknown input), and with the `circulate` workload each also
//! spending a coin its account was paid earlier (so the set stays the same size); submits them open-loop at a fixed
//! rate to the nodes' ingest endpoints (each account always on the same connection to the same node, so its chain
//! stays in order), in one burst per tick (10 ms) over several connections, resubmitting what a node answers
//! `Overloaded` after its retry-after; and measures submit-to-final latency from the nodes' receipts and its own
//! CPU per transaction. `cas local` runs it as its own process, so it never shares a process with what it measures.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use cas_engine::client::ClientAnswer;
use cas_engine::codec::encode_tx;
use cas_engine::fixtures::{key, transfer, ACCOUNT_KEYS};
use cas_engine::text::quote;
use cas_engine::{Hash32, Keypair, OutPoint, PublicKey, Transaction, TxId, TxOutput};
use cas_netio::ingest::IngestClient;
use serde::Serialize;

use crate::id_table::IdTable;

/// Why a generated transaction is invalid on purpose, and so how it must be answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Sabotage {
    BadSignature,
    DoubleSpend,
    UnknownInput,
}

/// What the load's accounts do with the coins they are paid.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Each transfer spends the account's change and pays 1 CAS to the next account, which never spends it: the
    /// set gains an output per transfer (a node's memory grows with the run: 10 minutes at 20,000 tx/s leave 12
    /// million outputs in every node's set, about 6 GiB per node).
    #[default]
    Chain,
    /// As `chain`, and each transfer also spends the coin its account was paid [`RECEIVED_LAG_S`] seconds of schedule
    /// before (two inputs, two outputs), as wallets spend what they are paid: the set stays near accounts x (lag
    /// rounds + 2) outputs however long the run. The sender holds a transfer until the one that paid it is final.
    Circulate,
}

/// How far back in the schedule (seconds) a `circulate` transfer's received coin was paid: far enough that the
/// payment is final long before in a healthy run, so the sender's wait for it costs nothing there.
pub const RECEIVED_LAG_S: u64 = 10;

/// No payer to wait for ([`Planned::payer`]).
const NO_PAYER: u32 = u32::MAX;

pub struct LoadPlan {
    pub chain_id: u32,
    /// The first load account used (accounts `first_account..first_account + accounts`), so two loads can run
    /// side by side on one genesis without spending each other's coins.
    pub first_account: u32,
    pub accounts: u32,
    pub rounds: u32,
    pub fee: u64,
    /// One invalid transaction in every run of this many valid ones, at a drawn place in it (0: none).
    pub invalid_every: usize,
    pub rate_per_s: u64,
    pub workload: Workload,
}

impl LoadPlan {
    /// With `circulate`, how many rounds before its own a transfer's received coin was paid: [`RECEIVED_LAG_S`] of
    /// schedule (a round of all accounts takes accounts / rate seconds), at least one round (an unpaced plan's
    /// transactions are applied in plan order, where one round back is already earlier).
    pub fn received_lag_rounds(&self) -> Option<usize> {
        (self.workload == Workload::Circulate).then(|| {
            (RECEIVED_LAG_S * self.rate_per_s)
                .div_ceil(u64::from(self.accounts.max(1)))
                .max(1) as usize
        })
    }
}

/// One transaction of the plan, in submission order: its wire bytes and id (a long run plans millions, so the
/// signed transaction itself is not kept).
pub struct Planned {
    pub encoded: Bytes,
    pub id: TxId,
    pub account: u32,
    pub sabotage: Option<Sabotage>,
    /// The plan index of the transfer that paid a coin this one spends (`circulate`), or [`NO_PAYER`]: it is sent
    /// only once that one is final.
    payer: u32,
}

impl Planned {
    fn of(tx: &Transaction, account: u32, sabotage: Option<Sabotage>, payer: u32) -> Planned {
        Planned {
            encoded: Bytes::from(encode_tx(tx).to_vec()),
            id: tx.tx_id(),
            account,
            sabotage,
            payer,
        }
    }

    /// The plan index of the transfer whose payment this one spends, if any.
    pub fn payer(&self) -> Option<usize> {
        (self.payer != NO_PAYER).then_some(self.payer as usize)
    }
}

/// One account's transfer in one round, as its signer made it.
struct Signed {
    valid: Planned,
    invalid: Option<Planned>,
    change: (OutPoint, TxOutput),
}

/// Signs the whole load up front (on all cores), in submission order: `rounds` rounds of one transfer per account,
/// each spending the account's change from its previous one (chains of dependent transactions) and sending 1 CAS
/// to the next account (with `circulate`, also spending the coin the previous account paid it
/// [`LoadPlan::received_lag_rounds`] rounds before); in each run of `invalid_every` valid ones, one is followed by
/// an invalid copy (rotating bad signature, double spend, unknown input; see [`sabotage_after`]). A round's
/// accounts are signed in parallel, and each signing thread encodes what it signs, so the plan never holds a signed
/// transaction and its wire bytes at once. An error if `genesis` funds none of the plan's accounts.
pub fn plan(plan: &LoadPlan, genesis: &[(OutPoint, TxOutput)]) -> Result<Vec<Planned>> {
    let threads = thread::available_parallelism().map_or(1, usize::from);
    let accounts = plan.accounts as usize;
    let keys: Vec<Keypair> = (0..plan.accounts)
        .map(|position| key(ACCOUNT_KEYS, plan.first_account + position))
        .collect();
    let funding: std::collections::HashMap<PublicKey, (OutPoint, TxOutput)> = genesis
        .iter()
        .rev()
        .map(|(outpoint, coin)| (coin.owner, (*outpoint, *coin)))
        .collect();
    let mut change = Vec::with_capacity(accounts);
    for (position, owner) in keys.iter().enumerate() {
        let coin = funding.get(&owner.public()).with_context(|| {
            format!(
                "load account {} holds no coin in the genesis (it funds fewer load accounts than asked for)",
                plan.first_account as usize + position
            )
        })?;
        change.push(*coin);
    }
    let lag = plan.received_lag_rounds();
    // Per round still to be spent from (the last `lag`), each account's payment: its plan index.
    let mut paid: std::collections::VecDeque<Vec<u32>> = Default::default();
    let mut planned: Vec<Planned> = Vec::with_capacity(accounts * plan.rounds as usize);
    // A thread signs at least this many accounts of a round (fewer are not worth a thread).
    const ACCOUNTS_PER_THREAD_MIN: usize = 64;
    let chunk = accounts
        .div_ceil(threads)
        .max(ACCOUNTS_PER_THREAD_MIN)
        .max(1);
    for round in 0..plan.rounds as usize {
        let received = lag
            .filter(|&lag| paid.len() == lag)
            .map(|_| paid.pop_front().expect("a full window"));
        let sign = |first: usize, changes: &[(OutPoint, TxOutput)]| -> Vec<Signed> {
            changes
                .iter()
                .enumerate()
                .map(|(offset, coin)| {
                    let position = first + offset;
                    let owner = &keys[position];
                    let payer = received
                        .as_ref()
                        .map(|paid| paid[(position + accounts - 1) % accounts]);
                    let mut inputs = vec![*coin];
                    if let Some(payer) = payer {
                        inputs.push((
                            OutPoint {
                                tx: planned[payer as usize].id,
                                index: 0,
                            },
                            TxOutput {
                                amount: 1,
                                asset: cas_engine::AssetId::CAS,
                                owner: owner.public(),
                                unlock_height: None,
                            },
                        ));
                    }
                    let tx = transfer(
                        plan.chain_id,
                        owner,
                        &inputs,
                        &keys[(position + 1) % accounts],
                        1,
                        plan.fee,
                    );
                    let account = plan.first_account + position as u32;
                    let payer = payer.unwrap_or(NO_PAYER);
                    let valid = round * accounts + position + 1;
                    let invalid = sabotage_after(plan, valid).map(|kind| {
                        Planned::of(&sabotage(&tx, kind, owner), account, Some(kind), payer)
                    });
                    let change = (
                        OutPoint {
                            tx: tx.tx_id(),
                            index: 1,
                        },
                        tx.body.outputs[1],
                    );
                    Signed {
                        valid: Planned::of(&tx, account, None, payer),
                        invalid,
                        change,
                    }
                })
                .collect()
        };
        let signed: Vec<Signed> = if accounts <= chunk {
            sign(0, &change)
        } else {
            thread::scope(|scope| {
                let sign = &sign;
                let handles: Vec<_> = change
                    .chunks(chunk)
                    .enumerate()
                    .map(|(i, changes)| scope.spawn(move || sign(i * chunk, changes)))
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().expect("signing thread"))
                    .collect()
            })
        };
        let mut payments = Vec::with_capacity(if lag.is_some() { accounts } else { 0 });
        for (position, transfer) in signed.into_iter().enumerate() {
            change[position] = transfer.change;
            if lag.is_some() {
                payments.push(planned.len() as u32);
            }
            planned.push(transfer.valid);
            planned.extend(transfer.invalid);
        }
        if lag.is_some() {
            paid.push_back(payments);
        }
    }
    Ok(planned)
}

/// The sabotage that follows the `valid`-th valid transaction of the plan (counted from 1 in submission order),
/// if any: one in each whole run of `invalid_every` valid ones (so as many as every `invalid_every`-th would give),
/// at a place in the run drawn from the run's number. A fixed place (every `invalid_every`-th) gave every invalid
/// copy accounts with the same remainder modulo the targets whenever the two counts shared a factor (100 and 10,000
/// over 4 nodes: all of them reached one node, whose admission then bisected its signature batches alone); drawn
/// places spread them over any number of targets.
fn sabotage_after(plan: &LoadPlan, valid: usize) -> Option<Sabotage> {
    let every = plan.invalid_every;
    let planned = plan.accounts as usize * plan.rounds as usize;
    if every == 0 || valid == 0 {
        return None;
    }
    let run = (valid - 1) / every;
    if (run + 1) * every > planned {
        return None; // The last run is cut short by the end of the plan: no copy in it.
    }
    // The simulator's SplitMix64 seeded with the run's number: the same load on every run and every machine.
    let place = cas_consensus::sim::Rng::new(run as u64).below(every);
    (valid - 1 == run * every + place).then(|| {
        [
            Sabotage::BadSignature,
            Sabotage::DoubleSpend,
            Sabotage::UnknownInput,
        ][run % 3]
    })
}

/// An invalid copy of `tx`, submitted right after it.
pub fn sabotage(tx: &Transaction, kind: Sabotage, owner: &Keypair) -> Transaction {
    let mut bad = tx.clone();
    bad.body.outputs[0].amount += 1;
    bad.body.outputs[1].amount -= 1;
    match kind {
        Sabotage::BadSignature => {
            bad.signatures[0].signature.0[7] ^= 1;
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
    use cas_engine::RejectCode;
    let code = |code: u16| RejectCode::from_u16(code);
    match (
        sabotage,
        outcome.admitted,
        outcome.finalised.map(|(_, a)| a),
    ) {
        (None, _, Some(Answer::Final { rejection: None })) => Ok(()),
        (Some(Sabotage::BadSignature), Some(Answer::Rejected { code: c }), None)
            if code(c) == Some(RejectCode::BadSignature) =>
        {
            Ok(())
        }
        (Some(Sabotage::DoubleSpend), _, Some(Answer::Final { rejection: Some(c) }))
            if matches!(
                code(c),
                Some(RejectCode::DoubleSpend | RejectCode::MissingInput)
            ) =>
        {
            Ok(())
        }
        (Some(Sabotage::UnknownInput), _, Some(Answer::Final { rejection: Some(c) }))
            if code(c) == Some(RejectCode::MissingInput) =>
        {
            Ok(())
        }
        (sabotage, admitted, finalised) => Err(format!(
            "{sabotage:?}: admitted {admitted:?}, final {finalised:?}"
        )),
    }
}

/// What the load keeps of a node's answer: its kind and reject code (a long run holds millions of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    Accepted,
    Duplicate,
    Rejected {
        code: u16,
    },
    /// Final; `rejection` is the code of the rule it broke, if any.
    Final {
        rejection: Option<u16>,
    },
}

impl Answer {
    /// `None` for `Overloaded`, which is not an answer about the transaction but a request to send it again.
    pub(crate) fn of(answer: &ClientAnswer) -> Option<Answer> {
        match answer {
            ClientAnswer::Accepted { .. } => Some(Answer::Accepted),
            ClientAnswer::Duplicate { .. } => Some(Answer::Duplicate),
            ClientAnswer::Rejected { code, .. } => Some(Answer::Rejected { code: *code }),
            ClientAnswer::Overloaded { .. } => None,
            ClientAnswer::Final { rejection, .. } => Some(Answer::Final {
                rejection: rejection.as_ref().map(|failure| failure.code),
            }),
        }
    }
}

/// What happened to one submitted transaction: its admission answer and its final receipt, each with when it came
/// (nanoseconds since the load started).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) admitted: Option<Answer>,
    pub(crate) finalised: Option<(u64, Answer)>,
}

/// Seconds of submissions each [`LatencyWindow`] covers.
pub const LATENCY_WINDOW_S: u64 = 10;

/// Submit-to-final latency of the valid transactions submitted in one window of the run: whether latency holds
/// over a long run, or grows.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct LatencyWindow {
    /// Seconds from the start of sending.
    pub start_s: u64,
    pub finals: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
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
    /// The same, per [`LATENCY_WINDOW_S`] seconds of submissions, in order.
    #[serde(default)]
    pub latency_windows: Vec<LatencyWindow>,
    /// The same per minute of submissions (the last one cut short by the end of sending).
    #[serde(default)]
    pub latency_minutes: Vec<LatencyWindow>,
    pub elapsed_s: f64,
    /// Valid transactions that did not end final-and-accepted, or invalid ones not rejected for their reason.
    pub wrong_answer_count: usize,
    /// The first few of them.
    pub wrong_answers: Vec<String>,
    /// Transactions answered `accepted` that never got their final receipt (must be 0: accepted means held by
    /// a quorum, so it commits).
    #[serde(default)]
    pub accepted_not_final: usize,
    /// Their ids (hex): a client cut off before its receipts came can still find them in the ledger.
    #[serde(default)]
    pub accepted_not_final_ids: Vec<String>,
    /// Client connections the load was spread over (each account always on the same one).
    #[serde(default)]
    pub connections: usize,
    /// `Overloaded` answers: each transaction so answered was submitted again after its retry-after.
    #[serde(default)]
    pub overloaded_answers: usize,
    /// How far the sender fell behind its schedule at worst (it sends what is due every tick).
    #[serde(default)]
    pub schedule_lag_max_ms: f64,
    /// The most transactions that were due but held back at once (connections paused by `Overloaded`, or at
    /// their window of unanswered submissions): above capacity, the load waits here rather than at the nodes.
    #[serde(default)]
    pub backlog_max: usize,
    /// What the accounts did with the coins they were paid.
    #[serde(default)]
    pub workload: Workload,
    /// `circulate`: transfers the sender held back because the transfer that paid them was not final yet (none in
    /// a run whose finality keeps up: the payment is [`RECEIVED_LAG_S`] of schedule older).
    #[serde(default)]
    pub held_for_payer: usize,
    /// Connections that ended before the load did, with why (a generator that reads its answers must never be
    /// disconnected: each is a failure of the run).
    #[serde(default)]
    pub lost_connections: Vec<String>,
    /// CPU the load generator's process spent from the first submission to the last answer (signing, which
    /// happens before, not included), and per submitted transaction.
    #[serde(default)]
    pub load_cpu_s: f64,
    #[serde(default)]
    pub load_cpu_us_per_tx: f64,
}

/// Milliseconds between the sender's bursts by default. A transaction due between two bursts waits for the next in
/// the generator (latency is measured from its burst), and a burst costs a wake of the netio thread and a packet per
/// connection: at 20,000 tx/s on 4 nodes, 10 ms spent 2.62-2.72 µs of the generator's CPU per transaction against
/// 3.07-3.14 at 5 ms, with p99 165-189 ms against 183-258 (perf/README.md, 2026-12-07).
pub const LOAD_TICK_MS_DEFAULT: u64 = 10;

/// Submissions one connection may have unanswered by default (`SendOptions::window`). Past capacity the rest waits
/// in the generator, where its wait is not counted as latency and the nodes' batches stay as small as the window
/// lets them be: with 4 connections of 2,048, a step at 30,937 tx/s (p50 ~220 ms) hit the window (Little's law:
/// 8,192 in flight / 0.22 s is ~37,000 tx/s at best) and committed 29,115 / 29,483 TPS, against 30,492 / 30,501
/// with 4,096 (perf/README.md, 2026-12-07, twelfth session). Half the node's own bound per client, so the
/// generator still never asks a node for more than it admits.
pub const LOAD_WINDOW_DEFAULT: usize = cas_node::in_flight::IN_FLIGHT_PER_CLIENT_MAX / 2;

/// How the load is sent.
#[derive(Clone, Debug)]
pub struct SendOptions {
    /// Client connections per target node.
    pub connections_per_target: usize,
    /// How long to wait for the next answer once the schedule is over: the load ends when everything is settled or
    /// nothing more was settled for this long.
    pub drain: Duration,
    /// How often the sender wakes to send what is due: what falls due in between leaves in one burst, one write
    /// per connection. Shorter ticks send smaller bursts (more packets per transaction, more CPU); latency is
    /// measured from each burst.
    pub tick: Duration,
    /// Submissions one connection may have unanswered (neither final, refused nor answered `Overloaded`); what
    /// falls due beyond it waits in the generator's backlog. At most the node's own bound per client
    /// (`IN_FLIGHT_PER_CLIENT_MAX`), so the generator never asks a node for more than it would admit; smaller
    /// keeps latency at saturation near window / throughput (Little's law) instead of the node's whole backlog.
    pub window: usize,
    /// A hostile flooder: it keeps no window (everything due is sent), an `Overloaded` answer neither pauses the
    /// connection nor sends the transaction again (it is counted and dropped), and the later transactions of its
    /// chain go out regardless. Its answers are not judged right or wrong, except that every one accepted must be
    /// final.
    pub hostile: bool,
}

/// A transaction to send again once an `Overloaded` answer's retry-after has passed.
struct Retry {
    index: u32,
    due_ns: u64,
}

/// What one connection's reader saw: answers by plan index, with when each came.
type Answers = Vec<(u32, u64, Answer)>;

/// Runs the load against `targets` (ingest address and node key): signs it all first, then submits it open-loop
/// at the plan's rate, each account always on the same connection (accounts go to targets round-robin), and reads
/// the answers of every connection on one thread that takes them in passes. `progress` is called with (submitted,
/// total) about every 100 ms once sending has started.
pub fn run(
    targets: &[(SocketAddr, PublicKey)],
    load: &LoadPlan,
    genesis: &[(OutPoint, TxOutput)],
    options: &SendOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<LoadReport> {
    anyhow::ensure!(!targets.is_empty(), "the load needs at least one target");
    let planned = plan(load, genesis)?;
    anyhow::ensure!(
        planned.len() < u32::MAX as usize,
        "{} transactions is more than one load can track",
        planned.len()
    );
    let per_target = options.connections_per_target.max(1);
    let connections: Vec<(SocketAddr, PublicKey)> = targets
        .iter()
        .flat_map(|target| std::iter::repeat_n(*target, per_target))
        .collect();
    let clients: Vec<Arc<IngestClient>> =
        connect(&connections)?.into_iter().map(Arc::new).collect();
    let connection_of = |account: u32| -> usize {
        let target = account as usize % targets.len();
        let lane = (account as usize / targets.len()) % per_target;
        target * per_target + lane
    };
    // Every answer is looked up here, a batch at a time (see id_table).
    let index_of = Arc::new(IdTable::new(planned.iter().map(|p| p.id)));
    // Which transactions are final, for the sender to hold a `circulate` transfer until its payer is.
    let finals = Arc::new(Finals::new(planned.len()));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Transactions answered for good (final, or refused at admission): the sender stops once all are.
    let settled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Per connection, submissions answered for good or refused as overloaded: with what was sent, the window.
    let answered: Vec<Arc<std::sync::atomic::AtomicUsize>> =
        (0..clients.len()).map(|_| Arc::default()).collect();
    let (retry_tx, retry_rx) = std::sync::mpsc::channel::<Retry>();
    let started = Instant::now();
    let cpu_before = cas_perf::pipeline::process_cpu_time("self");
    let reader = {
        let counts = Counts {
            settled: settled.clone(),
            answered: answered.clone(),
            finals: finals.clone(),
        };
        let (clients, index_of, done) = (clients.clone(), index_of.clone(), done.clone());
        thread::Builder::new()
            .name("cas-load-read".to_string())
            .spawn(move || read_answers(&clients, &index_of, &done, &counts, &retry_tx, started))
            .expect("spawning the reader thread")
    };

    let total = planned.len();
    let mut submitted_ns = vec![0u64; total];
    let mut lost: Vec<Option<String>> = vec![None; clients.len()];
    let mut paused_until_ns = vec![0u64; clients.len()];
    let mut sent = vec![0usize; clients.len()];
    let mut backlog_max = 0usize;
    let mut backlog: Vec<std::collections::BTreeSet<usize>> =
        vec![Default::default(); clients.len()];
    let mut overloaded = 0usize;
    // Transfers held back because the one that paid them was not final yet, and the one each connection waits on.
    let mut held_for_payer = 0usize;
    let mut holding: Vec<Option<usize>> = vec![None; clients.len()];
    let mut next = 0usize;
    let mut lag_max = Duration::ZERO;
    let mut last_progress = Instant::now();
    let mut drain_until: Option<Instant> = None;
    // Transactions settled when the drain was last extended.
    let mut drain_settled = 0usize;
    let per_tx = Duration::from_secs_f64(1.0 / load.rate_per_s.max(1) as f64);
    // This tick's transactions per connection, submitted together at the end of the tick.
    let mut batches: Vec<Vec<Bytes>> = vec![Vec::new(); clients.len()];
    let mut queue = |index: usize, at_ns: u64, batches: &mut Vec<Vec<Bytes>>| {
        batches[connection_of(planned[index].account)].push(planned[index].encoded.clone());
        // Latency runs from the first submission: a retry after an overload is part of the wait.
        if submitted_ns[index] == 0 {
            submitted_ns[index] = at_ns.max(1);
        }
    };
    loop {
        let now = started.elapsed();
        let now_ns = now.as_nanos() as u64;
        // Everything due by now leaves in this burst.
        let due = ((now.as_secs_f64() * load.rate_per_s as f64) as usize + 1).min(total);
        if next < due {
            lag_max = lag_max.max(now.saturating_sub(per_tx * next as u32));
        }
        // An `Overloaded` answer pauses its connection for the retry-after: what falls due meanwhile waits in the
        // connection's backlog with the refused transaction, and all leave in plan order once the pause is over, so
        // every account's chain reaches the node in order and a busy node is not asked again at once.
        for retry in retry_rx.try_iter() {
            overloaded += 1;
            if options.hostile {
                continue;
            }
            let connection = connection_of(planned[retry.index as usize].account);
            paused_until_ns[connection] = paused_until_ns[connection].max(retry.due_ns);
            backlog[connection].insert(retry.index as usize);
        }
        while next < due {
            backlog[connection_of(planned[next].account)].insert(next);
            next += 1;
        }
        // Each connection keeps at most WINDOW submissions unanswered: above what the nodes can take, the rest wait
        // here (counted as backlog) instead of being refused again and again.
        for (connection, waiting) in backlog.iter_mut().enumerate() {
            if paused_until_ns[connection] > now_ns {
                continue;
            }
            let answered = answered[connection].load(std::sync::atomic::Ordering::Relaxed);
            // A flooder keeps no window: everything due goes out.
            while options.hostile || sent[connection] - answered < options.window {
                let Some(&index) = waiting.first() else {
                    break;
                };
                // A wallet spends a coin it was paid once the payment is final; the connection's later
                // transactions wait behind it, so every account's chain still leaves in order.
                if let Some(payer) = planned[index].payer() {
                    if !options.hostile && !finals.contains(payer) {
                        if holding[connection] != Some(index) {
                            holding[connection] = Some(index);
                            held_for_payer += 1;
                        }
                        break;
                    }
                }
                waiting.pop_first();
                queue(index, now_ns, &mut batches);
                sent[connection] += 1;
            }
        }
        backlog_max = backlog_max.max(backlog.iter().map(|b| b.len()).sum());
        for (connection, batch) in batches.iter_mut().enumerate() {
            if batch.is_empty() || lost[connection].is_some() {
                batch.clear();
                continue;
            }
            if let Err(error) = clients[connection].submit_batch(std::mem::take(batch)) {
                // Only the error: taking an answer here to learn the close reason would steal it from the reader.
                lost[connection] = Some(format!("connection {connection}: {error}"));
            }
        }
        if last_progress.elapsed() >= Duration::from_millis(100) {
            last_progress = Instant::now();
            progress(next, total);
        }
        if next == total && options.hostile {
            // A flooder's schedule is over: it stops sending and only waits for the answers owed.
            backlog
                .iter_mut()
                .for_each(std::collections::BTreeSet::clear);
        }
        if next == total {
            let now_settled = settled.load(std::sync::atomic::Ordering::Relaxed);
            if drain_until.is_none() {
                progress(total, total);
            }
            // Above capacity the backlog still leaves after the schedule's end, as fast as the nodes answer: the
            // drain runs from the last progress, so a load that is still being settled is never cut off. A
            // flooder's refused transactions are never settled: it waits out its drain from the schedule's end.
            if drain_until.is_none() || (!options.hostile && now_settled > drain_settled) {
                drain_until = Some(Instant::now() + options.drain);
                drain_settled = now_settled;
            }
            let all_settled = !options.hostile && now_settled >= total;
            let until = drain_until.expect("set above");
            if (all_settled && backlog.iter().all(|b| b.is_empty())) || Instant::now() >= until {
                break;
            }
        }
        let next_tick = now + options.tick;
        if let Some(wait) = next_tick.checked_sub(started.elapsed()) {
            thread::sleep(wait);
        }
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut outcomes = vec![Outcome::default(); total];
    for (index, at_ns, answer) in reader.join().expect("reader thread") {
        let outcome = &mut outcomes[index as usize];
        match answer {
            Answer::Final { .. } => outcome.finalised = Some((at_ns, answer)),
            answer => outcome.admitted = Some(answer),
        }
    }
    let cpu_s = match (cpu_before, cas_perf::pipeline::process_cpu_time("self")) {
        (Some(before), Some(after)) => (after - before).as_secs_f64(),
        _ => 0.0,
    };
    let mut report = summarise(load, &planned, &outcomes, &submitted_ns);
    if options.hostile {
        report.wrong_answer_count = 0;
        report.wrong_answers.clear();
    }
    report.connections = clients.len();
    report.overloaded_answers = overloaded;
    report.held_for_payer = held_for_payer;
    report.schedule_lag_max_ms = lag_max.as_secs_f64() * 1e3;
    report.backlog_max = backlog_max;
    report.lost_connections = lost.into_iter().flatten().collect();
    report.load_cpu_s = cpu_s;
    report.load_cpu_us_per_tx = cpu_s * 1e6 / total.max(1) as f64;
    Ok(report)
}

/// What the reader counts: all transactions settled (for the end of the run), each connection's submissions
/// answered (for the sender's window), and which transactions are final (for `circulate`'s payers).
struct Counts {
    settled: Arc<std::sync::atomic::AtomicUsize>,
    /// Per connection.
    answered: Vec<Arc<std::sync::atomic::AtomicUsize>>,
    finals: Arc<Finals>,
}

/// One bit per plan index: final (accepted or rejected in a block).
struct Finals(Vec<std::sync::atomic::AtomicU64>);

impl Finals {
    fn new(len: usize) -> Finals {
        Finals((0..len.div_ceil(64)).map(|_| Default::default()).collect())
    }

    fn insert(&self, index: usize) {
        self.0[index / 64].fetch_or(1 << (index % 64), std::sync::atomic::Ordering::Release);
    }

    fn contains(&self, index: usize) -> bool {
        self.0[index / 64].load(std::sync::atomic::Ordering::Acquire) & (1 << (index % 64)) != 0
    }
}

/// How long the reader pauses between its passes over the connections: answers that arrive meanwhile wait in their
/// connection's inbox and are taken together, so the netio thread hands them over without waking anyone (a reader
/// blocked per connection was woken per batch, a context switch each on both sides). Latency is measured from when
/// the netio thread read each answer ([`IngestClient::recv_answers_timed`]), so the pause adds nothing to it; it
/// only delays the window's release and an overloaded transaction's retry by up to its length.
const ANSWER_PAUSE: Duration = Duration::from_millis(5);

/// Reads every connection's answers until `done`: each is matched to its plan index; an `Overloaded` one is handed
/// back to the sender to submit again after its retry-after.
fn read_answers(
    clients: &[Arc<IngestClient>],
    index_of: &IdTable,
    done: &std::sync::atomic::AtomicBool,
    counts: &Counts,
    retry: &std::sync::mpsc::Sender<Retry>,
    started: Instant,
) -> Answers {
    let mut answers = Answers::new();
    let (mut decoded, mut found) = (Vec::new(), Vec::new());
    // A connection that ended is read no more (the sender notices at its next submission and reports why).
    let mut open = vec![true; clients.len()];
    while !done.load(std::sync::atomic::Ordering::Relaxed) && open.contains(&true) {
        for (connection, client) in clients.iter().enumerate() {
            if !open[connection] {
                continue;
            }
            let batch = match client.recv_answers_timed(Duration::ZERO) {
                Ok(batch) if batch.is_empty() => continue,
                Ok(batch) => batch,
                Err(_) => {
                    open[connection] = false;
                    continue;
                }
            };
            let (mut newly_settled, mut newly_answered) = (0, 0);
            decoded.clear();
            decoded.extend(batch.iter().filter_map(|(arrived, bytes)| {
                let answer = ClientAnswer::decode(bytes).ok()?;
                let id = match &answer {
                    ClientAnswer::Accepted { tx }
                    | ClientAnswer::Duplicate { tx }
                    | ClientAnswer::Overloaded { tx, .. }
                    | ClientAnswer::Final { tx, .. } => *tx,
                    ClientAnswer::Rejected { tx: Some(tx), .. } => *tx,
                    ClientAnswer::Rejected { tx: None, .. } => return None,
                };
                let at_ns = arrived.saturating_duration_since(started).as_nanos() as u64;
                Some((id, (at_ns, answer)))
            }));
            index_of.find_all(&decoded, |(id, _)| id, &mut found);
            for ((_, (at_ns, answer)), index) in decoded.drain(..).zip(&found) {
                let Some(index) = *index else {
                    continue;
                };
                match &answer {
                    ClientAnswer::Overloaded { retry_after_ms, .. } => {
                        let due_ns = at_ns + retry_after_ms.saturating_mul(1_000_000);
                        let _ = retry.send(Retry { index, due_ns });
                        newly_answered += 1;
                    }
                    ClientAnswer::Final { .. } => {
                        counts.finals.insert(index as usize);
                        newly_settled += 1;
                        newly_answered += 1;
                    }
                    ClientAnswer::Rejected { .. } => {
                        newly_settled += 1;
                        newly_answered += 1;
                    }
                    ClientAnswer::Duplicate { .. } => newly_answered += 1,
                    ClientAnswer::Accepted { .. } => {}
                }
                // An overload is not an admission: the transaction is sent again.
                if let Some(answer) = Answer::of(&answer) {
                    answers.push((index, at_ns, answer));
                }
            }
            counts
                .settled
                .fetch_add(newly_settled, std::sync::atomic::Ordering::Relaxed);
            counts.answered[connection]
                .fetch_add(newly_answered, std::sync::atomic::Ordering::Relaxed);
        }
        thread::sleep(ANSWER_PAUSE);
    }
    answers
}

/// Connects to every target on one netio thread (see [`IngestClient::connect_all`]), trying again for 20 s while
/// a node is not up yet.
fn connect(targets: &[(SocketAddr, PublicKey)]) -> Result<Vec<IngestClient>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match IngestClient::connect_all(targets) {
            Ok(clients) => return Ok(clients),
            Err(error) if Instant::now() < deadline => {
                tracing::debug!(%error, "a node is not up yet");
                thread::sleep(Duration::from_millis(200));
            }
            Err(error) => return Err(error).context("cannot connect to the nodes"),
        }
    }
}

pub(crate) fn summarise(
    load: &LoadPlan,
    planned: &[Planned],
    outcomes: &[Outcome],
    submitted_ns: &[u64],
) -> LoadReport {
    let mut report = LoadReport {
        offered_rate_per_s: load.rate_per_s,
        submitted: planned.len(),
        workload: load.workload,
        ..LoadReport::default()
    };
    let mut latencies = Vec::new();
    let mut timed: Vec<(u64, f64)> = Vec::new();
    let mut last_final_ns = 0u64;
    for (index, (p, outcome)) in planned.iter().zip(outcomes).enumerate() {
        match &outcome.finalised {
            Some((at_ns, Answer::Final { rejection: None })) => {
                report.final_accepted += 1;
                last_final_ns = last_final_ns.max(*at_ns);
                if submitted_ns[index] > 0 {
                    let latency = at_ns.saturating_sub(submitted_ns[index]) as f64 / 1e6;
                    latencies.push(latency);
                    timed.push((submitted_ns[index], latency));
                }
            }
            Some(_) => report.rejected_in_block += 1,
            None if matches!(outcome.admitted, Some(Answer::Rejected { .. })) => {
                report.rejected_at_admission += 1
            }
            None => report.unanswered += 1,
        }
        if matches!(outcome.admitted, Some(Answer::Accepted)) && outcome.finalised.is_none() {
            report.accepted_not_final += 1;
            report.accepted_not_final_ids.push(p.id.to_string());
        }
        if let Err(wrong) = right_answer(p.sabotage, outcome) {
            report.wrong_answer_count += 1;
            if report.wrong_answers.len() < 20 {
                report.wrong_answers.push(format!("tx {:?}: {wrong}", p.id));
            }
        }
    }
    [report.latency_p50_ms, report.latency_p99_ms] = percentiles(&mut latencies);
    report.latency_windows = latency_windows(&timed, LATENCY_WINDOW_S);
    report.latency_minutes = latency_windows(&timed, 60);
    report.elapsed_s = last_final_ns as f64 / 1e9;
    report.committed_tps = report.final_accepted as f64 / report.elapsed_s.max(1e-9);
    report
}

/// Latency percentiles per `width_s` seconds of submissions, from (submitted at ns, latency ms) pairs.
fn latency_windows(timed: &[(u64, f64)], width_s: u64) -> Vec<LatencyWindow> {
    let mut by_window: Vec<Vec<f64>> = Vec::new();
    for &(submitted_ns, latency) in timed {
        let window = (submitted_ns / (width_s * 1_000_000_000)) as usize;
        if by_window.len() <= window {
            by_window.resize_with(window + 1, Vec::new);
        }
        by_window[window].push(latency);
    }
    by_window
        .into_iter()
        .enumerate()
        .map(|(index, mut window)| {
            let [p50_ms, p99_ms] = percentiles(&mut window);
            LatencyWindow {
                start_s: index as u64 * width_s,
                finals: window.len(),
                p50_ms,
                p99_ms,
            }
        })
        .collect()
}

/// The 50th and 99th percentiles of `latencies` (sorted here), 0 when empty.
fn percentiles(latencies: &mut [f64]) -> [f64; 2] {
    latencies.sort_by(f64::total_cmp);
    let at = |p: usize| {
        let index = (latencies.len() * p / 100).min(latencies.len().saturating_sub(1));
        latencies.get(index).copied().unwrap_or(0.0)
    };
    [at(50), at(99)]
}

#[derive(clap::Args, Clone, Debug)]
pub struct LoadArgs {
    /// The genesis the nodes run (its accounts must be the deterministic load accounts, as `cas local` makes).
    #[arg(long)]
    pub genesis: std::path::PathBuf,
    /// A node's ingest endpoint as ADDR=PUBLIC_KEY (repeat).
    #[arg(long = "target", required_unless_present = "apis")]
    pub targets: Vec<String>,
    /// Submit through nodes' HTTP APIs instead (ADDR, repeat; see `http_load`).
    #[arg(long = "api", conflicts_with = "targets")]
    pub apis: Vec<SocketAddr>,
    /// With --api: worker threads per node.
    #[arg(long, default_value_t = 32)]
    pub workers: usize,
    /// With --api: every post holds until its transaction is final (`?wait=final`); latency is the HTTP answer's.
    #[arg(long, requires = "apis")]
    pub wait_final: bool,
    #[arg(long, default_value_t = 1_000)]
    pub rate: u64,
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
    /// Accounts to use (at most the genesis's funded load accounts).
    #[arg(long, default_value_t = 1_000)]
    pub accounts: u32,
    /// The first of them (load accounts are numbered; two loads on one genesis use disjoint ranges).
    #[arg(long, default_value_t = 0)]
    pub first_account: u32,
    /// Act as a hostile flooder: ignore `Overloaded` (no pause, no resend; see `SendOptions::hostile`).
    #[arg(long)]
    pub hostile: bool,
    #[arg(long, default_value_t = 100)]
    pub invalid_every: usize,
    /// What accounts do with the coins they are paid: `chain` never spends them (the set grows an output per
    /// transfer), `circulate` spends each 10 s of schedule later (the set stays the same size).
    #[arg(long, value_enum, default_value_t = Workload::Chain)]
    pub workload: Workload,
    /// Client connections per target.
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// Once the schedule is over, how long to wait for more answers before giving up on the rest (seconds).
    #[arg(long, default_value_t = 20)]
    pub drain_s: u64,
    /// Submissions a connection may have unanswered before the rest waits in the generator (see `SendOptions`).
    #[arg(long, default_value_t = LOAD_WINDOW_DEFAULT)]
    pub window: usize,
    /// Milliseconds between the sender's bursts (see [`LOAD_TICK_MS_DEFAULT`]).
    #[arg(long, default_value_t = LOAD_TICK_MS_DEFAULT)]
    pub tick_ms: u64,
    /// Also write the report (JSON) to this file.
    #[arg(long)]
    pub report: Option<std::path::PathBuf>,
}

/// The line `cas load` prints on stderr when sending starts and then about every 100 ms: `cas local` reads it.
pub const PROGRESS_PREFIX: &str = "load: submitted ";

/// `cas load`: the load generator against nodes that are already running.
pub fn run_command(args: &LoadArgs) -> Result<()> {
    // Like a node (cas_node::memory): with huge pages allowed the generator spent 4.2-4.7 µs of CPU per
    // transaction against 3.5-3.8 without (two 20 s runs each at 20,000 tx/s).
    cas_node::memory::refuse_transparent_huge_pages();
    let bytes = std::fs::read(&args.genesis)
        .with_context(|| format!("cannot read {}", args.genesis.display()))?;
    let genesis = cas_engine::codec::to_owned_block(cas_engine::codec::decode_block(&bytes)?);
    let targets = args
        .targets
        .iter()
        .map(|t| {
            let (addr, key) = t
                .split_once('=')
                .with_context(|| format!("target {} is not ADDR=PUBLIC_KEY", quote(t)))?;
            Ok((
                addr.parse()
                    .with_context(|| format!("bad address in {}", quote(t)))?,
                PublicKey::from_hex(key)?,
            ))
        })
        .collect::<Result<Vec<(SocketAddr, PublicKey)>>>()?;
    let plan = LoadPlan {
        chain_id: genesis.header.chain_id,
        first_account: args.first_account,
        accounts: args.accounts,
        rounds: (args.rate * args.duration_s)
            .div_ceil(u64::from(args.accounts))
            .max(1) as u32,
        fee: 1,
        invalid_every: args.invalid_every,
        rate_per_s: args.rate,
        workload: args.workload,
    };
    let outputs = cas_engine::genesis::genesis_outputs(&genesis.txs);
    let options = SendOptions {
        connections_per_target: args.connections,
        drain: Duration::from_secs(args.drain_s),
        tick: Duration::from_millis(args.tick_ms.max(1)),
        window: args
            .window
            .clamp(1, cas_node::in_flight::IN_FLIGHT_PER_CLIENT_MAX),
        hostile: args.hostile,
    };
    let mut progress = |sent: usize, total: usize| {
        eprintln!("{PROGRESS_PREFIX}{sent}/{total}");
    };
    let report = if args.apis.is_empty() {
        run(&targets, &plan, &outputs, &options, &mut progress)?
    } else {
        crate::http_load::run(
            &args.apis,
            &plan,
            &outputs,
            args.workers,
            args.wait_final,
            options.drain,
            &mut progress,
        )?
    };
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &args.report {
        std::fs::write(path, &json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("{json}");
    anyhow::ensure!(
        report.wrong_answer_count == 0,
        "{} wrong answers",
        report.wrong_answer_count
    );
    // A flooder cut off as a slow reader loses the receipts of what it had accepted; `cas local` looks for
    // those in the ledger instead.
    anyhow::ensure!(
        report.accepted_not_final == 0 || (args.hostile && !report.lost_connections.is_empty()),
        "{} transactions answered accepted never became final",
        report.accepted_not_final
    );
    anyhow::ensure!(
        report.lost_connections.is_empty(),
        "connections lost: {:?}",
        report.lost_connections
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use cas_engine::codec::decode_tx;
    use cas_engine::fixtures::funded_genesis;
    use cas_engine::genesis::genesis_outputs;
    use cas_engine::rules::TxError;
    use cas_engine::{ArchivedTransaction, MemoryLedger};
    use rkyv::util::AlignedVec;

    use super::*;

    const ACCOUNTS: u32 = 16;
    const ROUNDS: u32 = 24;

    fn load_plan(workload: Workload, rate_per_s: u64) -> LoadPlan {
        LoadPlan {
            chain_id: 7,
            first_account: 0,
            accounts: ACCOUNTS,
            rounds: ROUNDS,
            fee: 1,
            invalid_every: 5,
            rate_per_s,
            workload,
        }
    }

    /// A planned transaction's bytes where the decoder can read them in place.
    fn aligned(planned: &Planned) -> AlignedVec {
        let mut bytes = AlignedVec::with_capacity(planned.encoded.len());
        bytes.extend_from_slice(&planned.encoded);
        bytes
    }

    /// The plan applied in its order, a round's worth of transactions per block: every transaction's verdict, and
    /// the set's size after each block.
    fn apply(plan: &LoadPlan) -> (Vec<Planned>, Vec<Result<(), TxError>>, Vec<usize>) {
        let genesis = funded_genesis(plan.chain_id, 4, plan.accounts, 1, 1_000_000);
        let mut ledger = MemoryLedger::from_genesis(&genesis).expect("a valid genesis");
        let planned = super::plan(plan, &genesis_outputs(&genesis.txs)).expect("funded accounts");
        let (mut verdicts, mut sizes) = (Vec::new(), Vec::new());
        for (block, chunk) in planned.chunks(plan.accounts as usize).enumerate() {
            let aligned: Vec<AlignedVec> = chunk.iter().map(aligned).collect();
            let txs: Vec<&ArchivedTransaction> = aligned
                .iter()
                .map(|bytes| decode_tx(bytes).expect("the plan's own encoding"))
                .collect();
            verdicts.extend(ledger.apply(&txs, block as u64 + 1));
            sizes.push(ledger.utxos().len());
        }
        (planned, verdicts, sizes)
    }

    fn assert_right(planned: &[Planned], verdicts: &[Result<(), TxError>]) {
        for (index, (p, verdict)) in planned.iter().zip(verdicts).enumerate() {
            let right = matches!(
                (p.sabotage, verdict),
                (None, Ok(()))
                    | (
                        Some(Sabotage::BadSignature),
                        Err(TxError::BadSignature { .. })
                    )
                    | (
                        Some(Sabotage::DoubleSpend),
                        Err(TxError::DoubleSpend { .. })
                    )
                    | (
                        Some(Sabotage::UnknownInput),
                        Err(TxError::MissingInput { .. })
                    )
            );
            assert!(right, "tx {index} ({:?}): {verdict:?}", p.sabotage);
        }
    }

    #[test]
    fn a_plan_for_more_accounts_than_the_genesis_funds_is_refused() {
        let genesis = funded_genesis(7, 4, ACCOUNTS, 1, 1_000_000);
        let plan = LoadPlan {
            first_account: 1,
            ..load_plan(Workload::Chain, 0)
        };
        let error = super::plan(&plan, &genesis_outputs(&genesis.txs))
            .err()
            .expect("account 16 is not funded");
        assert!(error.to_string().contains("load account 16"), "{error}");
    }

    /// One invalid copy in each run of `invalid_every` valid transfers, the kinds in turn, and their accounts spread
    /// over the targets even when the run length and the account count share the target count as a factor (each
    /// account always goes to target `account % targets`).
    #[test]
    fn invalid_copies_come_one_per_run_and_reach_every_target() {
        let plan = LoadPlan {
            accounts: 10_000,
            rounds: 20,
            invalid_every: 100,
            ..load_plan(Workload::Chain, 0)
        };
        let valid_count = 200_000;
        let sabotaged: Vec<(usize, Sabotage)> = (1..=valid_count)
            .filter_map(|valid| sabotage_after(&plan, valid).map(|kind| (valid, kind)))
            .collect();
        assert_eq!(sabotaged.len(), valid_count / plan.invalid_every);
        for (run, &(valid, kind)) in sabotaged.iter().enumerate() {
            assert_eq!((valid - 1) / plan.invalid_every, run, "one per run");
            let kinds = [
                Sabotage::BadSignature,
                Sabotage::DoubleSpend,
                Sabotage::UnknownInput,
            ];
            assert_eq!(kind, kinds[run % 3]);
        }
        for targets in [3, 4, 7, 10] {
            let mut per_target = vec![0usize; targets];
            for &(valid, _) in &sabotaged {
                let account = (valid - 1) % plan.accounts as usize;
                per_target[account % targets] += 1;
            }
            let even = sabotaged.len() / targets;
            assert!(
                per_target
                    .iter()
                    .all(|&n| n > even * 3 / 4 && n < even * 5 / 4),
                "{targets} targets: {per_target:?}"
            );
        }
        let none = LoadPlan {
            invalid_every: 0,
            ..load_plan(Workload::Chain, 0)
        };
        assert!((1..1_000).all(|valid| sabotage_after(&none, valid).is_none()));
        // 150 valid ones in runs of 20: seven whole runs, seven copies, as every 20th would give.
        let short = LoadPlan {
            accounts: 150,
            rounds: 1,
            invalid_every: 20,
            ..load_plan(Workload::Chain, 0)
        };
        let copies = (1..=150)
            .filter(|&valid| sabotage_after(&short, valid).is_some())
            .count();
        assert_eq!(copies, 7);
    }

    #[test]
    fn a_chain_load_applies_in_order_and_grows_the_set_an_output_per_transfer() {
        let (planned, verdicts, sizes) = apply(&load_plan(Workload::Chain, 0));
        assert_right(&planned, &verdicts);
        assert!(planned.iter().all(|p| p.payer().is_none()));
        let transfers = planned.iter().filter(|p| p.sabotage.is_none()).count();
        assert_eq!(transfers, (ACCOUNTS * ROUNDS) as usize);
        // Each transfer leaves its payment unspent.
        assert!(
            sizes.last().unwrap() - sizes.first().unwrap() >= transfers - 2 * ACCOUNTS as usize
        );
    }

    #[test]
    fn a_circulating_load_spends_what_it_was_paid_and_keeps_the_set_bounded() {
        // Paced so that the lag is several rounds: 10 s at 8 tx/s over 16 accounts is 5 rounds.
        for (rate, lag) in [(0, 1), (8, 5)] {
            let plan = load_plan(Workload::Circulate, rate);
            assert_eq!(plan.received_lag_rounds(), Some(lag));
            let (planned, verdicts, sizes) = apply(&plan);
            assert_right(&planned, &verdicts);
            let genesis = sizes[0] - ACCOUNTS as usize;
            // Once spending starts, the set holds the genesis, each account's change and the `lag` payments not
            // yet spent (plus this block's), however many rounds follow.
            let bound = genesis + ACCOUNTS as usize * (lag + 2);
            assert!(
                sizes.iter().all(|&size| size <= bound),
                "lag {lag}: sizes {sizes:?} over {bound}"
            );
            assert!(*sizes.last().unwrap() + (ACCOUNTS as usize) >= sizes[lag]);
            // Every transfer after the first `lag` rounds names the transfer that paid it: the previous account's,
            // `lag` rounds earlier, whose payment output is one of its inputs.
            for (index, p) in planned.iter().enumerate() {
                let Some(payer) = p.payer() else {
                    continue;
                };
                assert!(payer < index);
                let payer = &planned[payer];
                assert!(payer.sabotage.is_none());
                assert_eq!(payer.account, (p.account + ACCOUNTS - 1) % ACCOUNTS);
                let bytes = aligned(p);
                let tx = decode_tx(&bytes).unwrap();
                let payment = OutPoint {
                    tx: payer.id,
                    index: 0,
                };
                assert!(tx
                    .body
                    .inputs
                    .iter()
                    .any(|input| OutPoint::from(input) == payment));
            }
            let paid = planned.iter().filter(|p| p.payer().is_some()).count();
            let transfers_after_lag = (ACCOUNTS as usize) * (ROUNDS as usize - lag);
            assert!(
                paid >= transfers_after_lag,
                "{paid} < {transfers_after_lag}"
            );
        }
    }
}
