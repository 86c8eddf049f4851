//! The driver thread: it owns the Synchronizer, package availability and the BFT, feeds them messages from netio's
//! lanes (consensus first), client submissions and timer ticks, and carries out their actions in order: a
//! `Persist` is fsynced before the next action runs, so a vote never leaves before the safety state is durable.
//! Packages and blocks to keep go to the journal; messages that follow them wait in the outbox until the journal is
//! fdatasynced, once per phase of a turn for everything written in it (group commit), so an ack or a vote is never
//! sent for something held only in memory.
//!
//! The consensus state machines of one committee epoch form an [`Instance`]. At a hand-over ([`crate::epochs`]) the
//! driver starts the next epoch's instance from the last block of the one that ended, once every block of the old
//! one is handed to execution and the ledger has recorded the next committee; the old instance stays a while beside
//! it, answering the block and package requests of members still finishing its epoch. Peer frames carry their
//! instance's epoch ([`wire`]) and go to the instance they belong to.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use cas_consensus::availability::{Availability, AvailabilityConfig};
use cas_consensus::bft::{Base, Bft, BftConfig, Event, Recovered, SafetyState};
use cas_consensus::committee::{Committee, MemberIndex};
use cas_consensus::messages::{Block as ConsensusBlock, Message, Package};
use cas_consensus::mining::{MiningAnswer, MiningRequest};
use cas_consensus::Action;
use cas_engine::client::ClientAnswer;
use cas_engine::codec::decode_tx;
use cas_engine::synchronizer::{Admission, Synchronizer};
use cas_engine::{BlockHash, Keypair, PackageId, PublicKey, Transaction};
use cas_netio::{Class, Inbound, InboundQueues, Origin};

use crate::api::Submission;
use crate::clients::{Client, Clients};
use crate::durable::{EpochBaseFile, SafetyFile};
use crate::epochs::{committee_of, Committees, EpochPlan};
use crate::executor::{Committed, Executed, Work};
use crate::in_flight::{InFlight, OVERLOADED_RETRY_AFTER_MS};
use crate::journal::Journal;
use crate::side_sync::SideSync;
use crate::snapshot_serve::{Anchors, ServeRequest};
use crate::state_sync::{Install, StateSync};
use crate::wire;
use crate::witness::{offer_input, WitnessInput, WitnessShared};

const TICK_MS: u64 = 10;
/// How often the node's status file and the operator's consensus view are refreshed.
const STATUS_EVERY_MS: u64 = 1_000;
/// Messages taken from the bulk lane per loop turn, so consensus is looked at again soon.
const BULK_PER_TURN: usize = 256;
/// Client submissions (transactions and mining requests) taken per loop turn.
const INGEST_PER_TURN: usize = 4_096;
/// Client transactions admitted (their signatures checked) in one batch: once this many wait, or when the package
/// they would join is due (the oldest has waited the package wait), so a package's transactions are checked
/// together, just before it is cut. A transaction waits for its package either way, and a package's worth verifies
/// cheaper per signature than the 2 ms' worth admitted before (perf/README.md, fifteenth session); only a refusal is
/// heard later.
const ADMISSION_BATCH_TXS: usize = 512;
/// How long a missing package request waits before it is sent again.
const PACKAGE_RETRY_MS: u64 = 300;
/// Ackers asked at once for a missing package.
const PACKAGE_REQUEST_FANOUT: usize = 2;
/// Committed blocks whose missing packages are fetched ahead of execution.
const PENDING_PREFETCH_BLOCKS: usize = 64;
/// How long an instance whose epoch ended keeps answering peers after the hand-over (stragglers of its epoch fetch
/// its last blocks and packages from it).
const ENDED_INSTANCE_KEPT_MS: u64 = 60_000;
/// How long members with more than a third of the stake must be heard from in a later epoch before this node
/// takes itself for behind (a hand-over reaches members a little apart).
const BEHIND_WAIT_MS: u64 = 5_000;

/// One committee epoch's consensus: the BFT instance, package availability and snapshot fetching of that committee,
/// its own safety state, and who its members are.
pub struct Instance {
    pub epoch: u64,
    pub bft: Bft,
    pub availability: Availability,
    pub state_sync: StateSync,
    pub safety_file: SafetyFile,
    pub committee: Committee,
    /// Member index by key, for every peer frame.
    members: HashMap<PublicKey, MemberIndex>,
}

/// What each instance of this node is made of, besides its committee and base.
pub struct InstanceMaker {
    pub keypair: Keypair,
    /// Every instance's configuration but its epoch, last height and proposal wait.
    pub bft: BftConfig,
    /// The proposal and package waits, resolved for each instance's committee.
    pub waits: crate::config::Waits,
    pub availability: AvailabilityConfig,
    pub snapshot_sync_gap_blocks: u64,
    pub data_dir: std::path::PathBuf,
    pub plan: EpochPlan,
}

impl InstanceMaker {
    /// Starts instance `epoch` of `committee` above `base`: from its safety state on disk and its journal `blocks` if
    /// it ran before (a restart), fresh otherwise; `committed` is the last block this node executed, when within
    /// the epoch. Returns the instance and what it asks for first.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        &self,
        epoch: u64,
        committee: Committee,
        base: Base,
        committed: Option<(u64, BlockHash)>,
        blocks: Vec<ConsensusBlock>,
        packages: Vec<Package>,
        now_ms: u64,
    ) -> Result<(Instance, Vec<Action>)> {
        let me = committee
            .index_of(&self.keypair.public())
            .with_context(|| format!("this node is no member of epoch {epoch}'s committee"))?;
        let mut safety_file = SafetyFile::for_epoch(&self.data_dir, epoch);
        let safety = if safety_file.exists() {
            safety_file.load()?
        } else {
            SafetyState {
                high_qc: base.qc(),
                ..SafetyState::default()
            }
        };
        let committed = match epoch {
            0 => committed,
            _ => committed
                .filter(|(height, _)| *height > base.height)
                .or(Some((base.height, base.hash))),
        };
        let recovered = Recovered {
            safety,
            blocks,
            committed,
            base,
        };
        let key = || Keypair::from_seed(&self.keypair.seed());
        let config = BftConfig {
            epoch,
            last_height: self.plan.last_height(epoch),
            proposal_wait_ms: self.waits.proposal_ms(committee.size()),
            ..self.bft.clone()
        };
        let (bft, actions) = Bft::new(committee.clone(), me, key(), config, recovered, now_ms);
        let mut availability = Availability::new(
            committee.clone(),
            me,
            key(),
            AvailabilityConfig {
                epoch,
                ..self.availability.clone()
            },
        );
        for package in packages {
            availability.restore(package);
        }
        let stakes = committee.members().map(|m| committee.stake(m)).collect();
        let state_sync = StateSync::new(
            me,
            stakes,
            committee.validity_stake(),
            self.snapshot_sync_gap_blocks,
        );
        let members = committee
            .members()
            .map(|m| (*committee.key(m).expect("a member"), m))
            .collect();
        Ok((
            Instance {
                epoch,
                bft,
                availability,
                state_sync,
                safety_file,
                committee,
                members,
            },
            actions,
        ))
    }
}

pub struct Parts {
    pub instance: Instance,
    pub maker: InstanceMaker,
    /// The committees the ledger elected (the executor records them).
    pub committees: Arc<Committees>,
    /// The addresses of the nodes this one may connect to as committee peers, besides the candidacies' own:
    /// node.toml's `peers`.
    pub peer_addresses: HashMap<PublicKey, std::net::SocketAddr>,
    /// Journal blocks of instances after the current one (a restart inside a hand-over), for when they start.
    pub later_blocks: Vec<ConsensusBlock>,
    pub epoch_bases: EpochBaseFile,
    pub synchronizer: Synchronizer,
    pub netio: Arc<cas_netio::Node>,
    pub queues: InboundQueues,
    pub journal: Journal,
    pub execution: crossbeam_channel::Sender<Work>,
    /// Snapshot serving (a thread fed by `serve`): who asked, the epoch to tag the answer with, what.
    pub serve: SyncSender<(PublicKey, u64, ServeRequest)>,
    pub anchors: Arc<Anchors>,
    pub started: Instant,
    /// The wall clock (ms since the Unix epoch) at `started`: the driver's clock runs monotonically from it, so
    /// proposals are stamped with wall time (the witness order judges carried witnesses by it) that never goes back.
    pub started_wall_ms: u64,
    pub status_path: std::path::PathBuf,
    pub stats: Arc<Mutex<Executed>>,
    pub witness: Arc<WitnessShared>,
    pub witness_inbox: SyncSender<WitnessInput>,
    /// See `NodeConfig::admission_in_flight_max`.
    pub admission_in_flight_max: usize,
    /// Submissions from the HTTP API (bounded; it wakes this thread as netio does).
    pub api_submissions: std::sync::mpsc::Receiver<Submission>,
    /// Where answers to clients go.
    pub clients: Clients,
    /// The client ids the ledger applied (for `duplicate` answers after restarts and on every node).
    pub index: Arc<crate::tx_index::TxIndexView>,
    /// Peers' votes on executed blocks' results with their sender, for the executor's certifier (bounded; full
    /// drops, counted).
    pub ledger_votes: crossbeam_channel::Sender<(PublicKey, crate::executor::PeerVote)>,
    /// Where the consensus side is published every second (the operator endpoints read it).
    pub view: Arc<Mutex<crate::operator::ConsensusView>>,
    /// How far the upstream nodes are while this instance commits nothing ([`crate::behind`]).
    pub upstream_watch: Arc<crate::behind::UpstreamWatch>,
}

pub struct Driver {
    parts: Parts,
    /// The instance whose epoch ended, kept until this time (ms) for stragglers of its epoch.
    ended: Option<(Instance, u64)>,
    /// The current instance's epoch ended at this base: the hand-over is due.
    epoch_end: Option<Base>,
    /// Why the hand-over cannot happen, once told (the operator's status).
    handover_stuck: Option<String>,
    /// Peer frames tagged with an epoch no instance here runs.
    other_epoch_frames: u64,
    /// Members of the current committee heard from in a later epoch while this instance had not ended, and since
    /// when: the committee moved on without this node (see [`Driver::later_epoch`]).
    ahead: (std::collections::BTreeSet<MemberIndex>, u64),
    /// The loop ends for this node to follow instead: it leaves the committee, or fell an epoch behind.
    follow: bool,
    /// Instances dropped, with their last height: each one's safety file goes once the ledger is past it.
    retired: Vec<(u64, u64)>,
    /// The counters of the instances that ended, added to the current one's in the status.
    ended_bft: cas_consensus::bft::BftStats,
    ended_availability: cas_consensus::availability::AvailabilityStats,
    /// Admitted client transactions not yet handed to execution, and whom to answer.
    in_flight: InFlight,
    /// Submissions answered `Overloaded` (in-flight bounds or the Synchronizer's queue).
    overloaded_answers: u64,
    /// Frames from committee peers that were no consensus message for the driver (see [`wire::peer_message`]).
    peer_messages_refused: u64,
    /// Ledger votes dropped: naming another signer than their sender, or for a full executor queue.
    ledger_votes_dropped: u64,
    /// Committed blocks waiting for packages this node does not hold yet.
    pending: VecDeque<ConsensusBlock>,
    /// The thread that flushes the safety state beside the journal; started at the first such flush.
    side_sync: Option<SideSync>,
    /// Messages held until the journal records before them are durable, in order.
    outbox: Vec<Action>,
    /// Missing packages asked for: when last, and how many times (each retry asks the next ackers in turn).
    package_requests: BTreeMap<PackageId, (u64, usize)>,
    last_tick_ms: u64,
    last_status_ms: u64,
    /// Blocks refused for their protocol version when the operator was last told.
    protocol_refused_told: u64,
    /// The protocol version of the next block when last looked at (a switch is logged).
    protocol: u32,
    /// Client transactions waiting to be admitted together, and when the oldest arrived.
    admission: Vec<Submission>,
    admission_since_ms: u64,
}

impl Driver {
    pub fn new(mut parts: Parts) -> Driver {
        let in_flight = InFlight::new(parts.admission_in_flight_max);
        // Business transactions wait for the protocol version every member can decode them under (rechecked each
        // second as the committed height passes a switch).
        let next = parts.instance.bft.committed_height() + 1;
        let business =
            parts.instance.bft.protocol_at(next) >= cas_consensus::protocol::PROTOCOL_BUSINESS;
        parts.synchronizer.set_business(business);
        Driver {
            parts,
            ended: None,
            epoch_end: None,
            handover_stuck: None,
            other_epoch_frames: 0,
            ahead: (Default::default(), 0),
            follow: false,
            retired: Vec::new(),
            ended_bft: Default::default(),
            ended_availability: Default::default(),
            in_flight,
            overloaded_answers: 0,
            peer_messages_refused: 0,
            ledger_votes_dropped: 0,
            pending: VecDeque::new(),
            side_sync: None,
            outbox: Vec::new(),
            package_requests: BTreeMap::new(),
            last_tick_ms: 0,
            last_status_ms: 0,
            protocol_refused_told: 0,
            protocol: 0,
            admission: Vec::with_capacity(ADMISSION_BATCH_TXS),
            admission_since_ms: 0,
        }
    }

    /// When the loop next has timed work without new input: the next tick, status write, or package (with the
    /// admission batch that joins it), whichever is first.
    fn next_due_ms(&self) -> u64 {
        let due = (self.last_tick_ms + TICK_MS).min(self.last_status_ms + STATUS_EVERY_MS);
        self.package_due_ms()
            .map_or(due, |package| due.min(package))
    }

    /// When the next package is due: the synchronizer's wait for the oldest transaction queued there, or for the
    /// oldest still waiting for admission, whichever arrived first.
    fn package_due_ms(&self) -> Option<u64> {
        let queued = self.parts.synchronizer.package_due_ms();
        let waiting = (!self.admission.is_empty())
            .then(|| self.admission_since_ms + self.parts.synchronizer.package_wait_ms());
        queued.into_iter().chain(waiting).min()
    }

    fn now_ms(&self) -> u64 {
        self.parts.started_wall_ms + self.parts.started.elapsed().as_millis() as u64
    }

    /// Runs until `stop` is set, or until this node must follow instead (it left the committee, or the committee
    /// went on to a later epoch without it); returns the round it stopped in, the BFT's counters and what next.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(u64, serde_json::Value, crate::Next)> {
        self.parts.queues.waker.register_current();
        while !stop.load(Ordering::Relaxed) && !self.follow {
            let now = self.now_ms();
            let mut busy = false;
            while let Ok(inbound) = self.parts.queues.consensus.try_recv() {
                busy = true;
                self.on_peer(inbound, now)?;
            }
            self.flush_outbox()?;
            for _ in 0..BULK_PER_TURN {
                let Ok(inbound) = self.parts.queues.bulk.try_recv() else {
                    break;
                };
                busy = true;
                self.on_peer(inbound, now)?;
            }
            // Mining requests count against the same per-turn bound, so a flood of them cannot hold this loop.
            for _ in 0..INGEST_PER_TURN {
                let Ok(inbound) = self.parts.queues.ingest.try_recv() else {
                    break;
                };
                busy = true;
                if inbound.class == Class::Mining {
                    self.on_mining(inbound);
                    continue;
                }
                let Origin::Client(addr) = inbound.origin else {
                    continue;
                };
                self.queue_admission((Client::Quic(addr), inbound.payload), now);
            }
            for _ in 0..INGEST_PER_TURN {
                let Ok(submission) = self.parts.api_submissions.try_recv() else {
                    break;
                };
                busy = true;
                self.queue_admission(submission, now);
            }
            if self.package_due_ms().is_some_and(|due| now >= due) {
                self.admit_waiting();
            }
            while let Some(txs) = self.parts.synchronizer.take_package(now) {
                let actions = self.parts.instance.availability.create(txs, true, now);
                self.execute(actions)?;
            }
            if now >= self.last_tick_ms + TICK_MS {
                self.last_tick_ms = now;
                self.hand_over(now)?;
                if self.ended.as_ref().is_some_and(|(_, until)| now >= *until) {
                    if let Some((ended, _)) = self.ended.take() {
                        self.retire(ended);
                    }
                }
                self.remove_retired_safety();
                // Witnesses this node accepted wait in the BFT's pool for a proposal of ours to carry them.
                for header in self.parts.witness.take_for_carrying() {
                    self.parts.instance.bft.add_witness(header);
                }
                let expired = self.in_flight.expire(now);
                if !expired.is_empty() {
                    self.parts.index.unmark_pending(&expired);
                    tracing::warn!(
                        expired = expired.len(),
                        "admitted transactions never reached execution; their answers are not sent"
                    );
                }
                let mut actions = self.parts.instance.bft.handle(Event::Tick { now_ms: now });
                actions.extend(self.parts.instance.availability.on_tick(now));
                actions.extend(self.parts.instance.state_sync.on_tick(
                    now,
                    self.parts.instance.bft.committed_height(),
                    self.parts.instance.bft.high_qc_height(),
                ));
                self.execute(actions)?;
                self.drain_pending(now)?;
            }
            self.flush_outbox()?;
            // A commit that does not extend our committed chain means more than a third of the stake broke the
            // rules (or a bug): going on would execute a forked ledger, so the node stops and says so.
            anyhow::ensure!(
                self.parts.instance.bft.stats.conflicting_commits == 0,
                "safety violation: the committee committed a block that conflicts with this node's committed \
                 chain (round {}, committed height {}); the node stops rather than execute a fork: keep its data \
                 folder for the investigation",
                self.parts.instance.bft.round(),
                self.parts.instance.bft.committed_height()
            );
            if now >= self.last_status_ms + STATUS_EVERY_MS {
                self.last_status_ms = now;
                self.behind_upstream();
                let next = self.parts.instance.bft.committed_height() + 1;
                let protocol = self.parts.instance.bft.protocol_at(next);
                if protocol != self.protocol {
                    self.parts
                        .synchronizer
                        .set_business(protocol >= cas_consensus::protocol::PROTOCOL_BUSINESS);
                    tracing::info!(
                        protocol,
                        height = next,
                        "blocks follow protocol version {protocol}"
                    );
                    self.protocol = protocol;
                }
                let refused = self.parts.instance.bft.stats.protocol_refused;
                if refused > self.protocol_refused_told {
                    self.protocol_refused_told = refused;
                    tracing::warn!(
                        refused,
                        height = next,
                        protocol,
                        "blocks of another protocol version than this node's schedule gives their height were \
                         refused: if the committee upgraded, install its binary and its protocol_upgrades"
                    );
                }
                let consensus = self.counters();
                let round = self.parts.instance.bft.round();
                *self.parts.view.lock().expect("consensus view lock") =
                    crate::operator::ConsensusView {
                        counters: consensus.clone(),
                        high_qc_height: self.parts.instance.bft.high_qc_height(),
                        catching_up: self.parts.instance.state_sync.busy(),
                        at: Instant::now(),
                        committee: {
                            let committee = &self.parts.instance.committee;
                            committee
                                .members()
                                .map(|m| (*committee.key(m).expect("a member"), committee.stake(m)))
                                .collect()
                        },
                        member: self.parts.instance.bft.me(),
                        quorum_stake: self.parts.instance.committee.quorum_stake(),
                    };
                crate::write_status(
                    &self.parts.status_path,
                    &self.parts.stats,
                    &self.parts.witness,
                    &self.parts.anchors,
                    round,
                    &consensus,
                    false,
                )?;
            }
            if !busy {
                // Nothing came in: sleep until the next timer is due, unless input wakes the loop first (netio and
                // the API unpark it on every delivery). A fixed 1 ms nap woke each idle node a thousand times a
                // second, and on a virtual machine every wake of an idle core costs tens of microseconds.
                let wait_ms = self.next_due_ms().saturating_sub(self.now_ms());
                if wait_ms > 0 {
                    std::thread::park_timeout(Duration::from_millis(wait_ms));
                }
            }
        }
        // A graceful stop leaves every journal record durable; held messages are not sent (nothing waits on them).
        self.parts.journal.sync()?;
        let next = match self.follow {
            true => crate::Next::Follow {
                carried: self.uncommitted(),
            },
            false => crate::Next::Stop,
        };
        Ok((self.parts.instance.bft.round(), self.counters(), next))
    }

    /// The consensus side's counters for `status.json`: the BFT's, package availability's and admission's.
    fn counters(&self) -> serde_json::Value {
        let mut bft = self.ended_bft.clone();
        bft.add(&self.parts.instance.bft.stats);
        let mut availability = self.ended_availability.clone();
        availability.add(&self.parts.instance.availability.stats);
        let fetch = self.parts.instance.state_sync.progress();
        let sync = &self.parts.instance.state_sync.stats;
        serde_json::json!({
            "round": self.parts.instance.bft.round(),
            "committed_height": self.parts.instance.bft.committed_height(),
            "proposals": bft.proposals,
            "votes_sent": bft.votes_sent,
            "qcs_formed": bft.qcs_formed,
            "commit_votes_sent": bft.commit_votes_sent,
            "fast_commits": bft.fast_commits,
            "tcs_formed": bft.tcs_formed,
            "timeouts_sent": bft.timeouts_sent,
            "commits": bft.commits,
            "refused": bft.refused,
            "conflicting_commits": bft.conflicting_commits,
            "payload_refused": bft.payload_refused,
            "witnesses_refused": bft.witnesses_refused,
            "witnesses_committed": bft.witnesses_committed,
            "protocol": self.parts.instance.bft.protocol_at(self.parts.instance.bft.committed_height() + 1),
            "protocol_max": cas_consensus::protocol::PROTOCOL_VERSION_MAX,
            "protocol_next_upgrade": self.parts.instance.bft
                .protocol_next_after(self.parts.instance.bft.committed_height())
                .map(|u| serde_json::json!({"version": u.version, "height": u.height})),
            "protocol_refused": bft.protocol_refused,
            "timestamps_refused": bft.timestamps_refused,
            "equivocations": bft.equivocations,
            "late_votes": bft.late_votes,
            "packages_created": availability.packages_created,
            "signatures_checked": availability.signatures_checked,
            "package_signature_batches": availability.signature_batches,
            "admission_signatures_checked": self.parts.synchronizer.signatures_checked,
            "admission_signature_batches": self.parts.synchronizer.signature_batches(),
            "catch_up_snapshot_height": fetch.map_or(0, |(height, _, _)| height),
            "catch_up_chunks_taken": fetch.map_or(0, |(_, taken, _)| taken),
            "catch_up_chunks_total": fetch.map_or(0, |(_, _, total)| total),
            "catch_up_queries": sync.queries,
            "catch_up_chunks_received": sync.chunks_received,
            "catch_up_transfers_failed": sync.transfers_failed,
            "certs_formed": availability.certs_formed,
            "certs_attested": availability.certs_attested,
            "certs_unattested_after_wait": availability.certs_unattested_after_wait,
            "packages_refused": availability.refused,
            "in_flight": self.in_flight.len(),
            "overloaded_answers": self.overloaded_answers,
            "peer_messages_refused": self.peer_messages_refused,
            "ledger_votes_dropped": self.ledger_votes_dropped,
            "synchronizer_queued": self.parts.synchronizer.queued(),
            "execution_queue": self.parts.execution.len(),
            "pending_blocks": self.pending.len(),
            "ledger_votes_queue": self.parts.ledger_votes.len(),
            "epoch": self.parts.instance.epoch,
            "epoch_last_height": self.parts.maker.plan.last_height(self.parts.instance.epoch),
            "other_epoch_frames": self.other_epoch_frames,
            "handover_stuck": self.handover_stuck,
        })
    }

    fn on_peer(&mut self, inbound: Inbound, now: u64) -> Result<()> {
        let Origin::Peer(key) = inbound.origin else {
            return Ok(());
        };
        let (epoch, message) = match wire::peer_message(inbound.class, &inbound.payload) {
            Ok(tagged) => tagged,
            Err(error) => {
                self.peer_messages_refused += 1;
                tracing::debug!(peer = %key, %error, "a peer's frame refused");
                return Ok(());
            }
        };
        // What no instance owns: snapshot serving, witnesses, and ledger votes (each signs its own epoch; the
        // executor's certifier checks the signer against the committee of the vote's height).
        match message {
            Message::SnapshotInfoRequest => {
                self.serve(key, epoch, ServeRequest::Info);
                return Ok(());
            }
            Message::SnapshotChunkRequest(request) => {
                self.serve(key, epoch, ServeRequest::Chunk(request));
                return Ok(());
            }
            Message::Witness(header) => {
                self.on_witness(header);
                return Ok(());
            }
            Message::LedgerVote(vote) => {
                let vote = crate::executor::PeerVote::Ledger(vote);
                if self.parts.ledger_votes.try_send((key, vote)).is_err() {
                    self.ledger_votes_dropped += 1;
                }
                return Ok(());
            }
            Message::HandoverVote(vote) => {
                let vote = crate::executor::PeerVote::Handover(vote);
                if self.parts.ledger_votes.try_send((key, vote)).is_err() {
                    self.ledger_votes_dropped += 1;
                }
                return Ok(());
            }
            _ => {}
        }
        if epoch != self.parts.instance.epoch {
            return self.on_ended_instance(key, epoch, message, now);
        }
        let Some(&from) = self.parts.instance.members.get(&key) else {
            return Ok(());
        };
        let got_package = matches!(message, Message::Package(_));
        let actions = match message {
            Message::SnapshotInfo(info) => {
                let committed = self.parts.instance.bft.committed_height();
                // A snapshot of another epoch's heights is not this instance's to install.
                if self.parts.maker.plan.instance_of(info.height) != self.parts.instance.epoch {
                    return Ok(());
                }
                self.parts
                    .instance
                    .state_sync
                    .on_info(from, info, committed, now)
            }
            Message::SnapshotChunk(chunk) => {
                let (actions, install) = self.parts.instance.state_sync.on_chunk(from, chunk, now);
                if let Some(install) = install {
                    self.install(install)?;
                }
                actions
            }
            Message::Package(_)
            | Message::Ack(_)
            | Message::Cert(_)
            | Message::PackageRequest(_) => {
                self.parts.instance.availability.handle(from, message, now)
            }
            message => self
                .parts
                .instance
                .bft
                .handle(Event::Message { from, message }),
        };
        self.execute(actions)?;
        if got_package {
            self.drain_pending(now)?;
        }
        Ok(())
    }

    /// A frame for the instance whose epoch ended here: it still answers (block and package requests, votes of its
    /// stragglers) until it is dropped; its answers leave at once (it keeps nothing new in the journal). Frames of
    /// any other epoch are counted and dropped.
    fn on_ended_instance(
        &mut self,
        key: PublicKey,
        epoch: u64,
        message: Message,
        now: u64,
    ) -> Result<()> {
        let Some((ended, _)) = self
            .ended
            .as_mut()
            .filter(|(ended, _)| ended.epoch == epoch)
        else {
            self.other_epoch_frames += 1;
            self.later_epoch(key, epoch, now);
            return Ok(());
        };
        let Some(&from) = ended.members.get(&key) else {
            return Ok(());
        };
        let actions = match message {
            Message::Package(_)
            | Message::Ack(_)
            | Message::Cert(_)
            | Message::PackageRequest(_) => ended.availability.handle(from, message, now),
            Message::SnapshotInfo(_) | Message::SnapshotChunk(_) => Vec::new(),
            message => ended.bft.handle(Event::Message { from, message }),
        };
        for action in actions {
            match action {
                Action::Send { to, message } => {
                    let (class, bytes) = wire::encode(epoch, &message);
                    if let Err(error) = self.parts.netio.try_send(
                        ended.committee.key(to).expect("a member"),
                        class,
                        bytes,
                    ) {
                        tracing::debug!(to, %error, "send refused");
                    }
                }
                Action::Persist(safety) => ended
                    .safety_file
                    .store(&safety)
                    .context("persisting the ended instance's safety state")?,
                // Nothing else matters to an epoch this node finished: it committed its last height already.
                _ => {}
            }
        }
        Ok(())
    }

    /// A frame of a later epoch than this instance's, from a member of its committee. Around a hand-over some members
    /// switch a little before the others; but when members with more than a third of the stake are heard from in a
    /// later epoch for [`BEHIND_WAIT_MS`] while this instance has not ended, the committee went on without this
    /// node (it was down, or cut off, past the end of its epoch) and no instance here can catch up: the node
    /// follows the certified ledger instead, up to an epoch it can join ([`crate::follower`]).
    fn later_epoch(&mut self, key: PublicKey, epoch: u64, now: u64) {
        let instance = &self.parts.instance;
        if epoch <= instance.epoch || self.epoch_end.is_some() || self.follow {
            return;
        }
        let Some(&member) = instance.members.get(&key) else {
            return;
        };
        let (members, since) = &mut self.ahead;
        if members.is_empty() {
            *since = now;
        }
        members.insert(member);
        let committee = &instance.committee;
        let stake: u64 = members.iter().map(|m| committee.stake(*m)).sum();
        if stake >= committee.validity_stake() && now >= *since + BEHIND_WAIT_MS {
            tracing::warn!(
                epoch = instance.epoch,
                later = epoch,
                committed = instance.bft.committed_height(),
                "the committee went on to a later epoch without this node: following the certified ledger to catch up"
            );
            self.follow = true;
        }
    }

    /// A member of this instance's committee voted for two blocks in one round (the BFT checked both votes): the
    /// proof goes to the ledger as an equivocation record, admitted here like a client's transaction, so it travels
    /// to the committee in this node's next package and every node records it in the same block (the member earns
    /// nothing from then on and no election picks it again). Several members may submit it; the ledger takes one.
    fn report_equivocation(&mut self, evidence: &cas_consensus::messages::Equivocation, now: u64) {
        let instance = &self.parts.instance;
        let Some(member) = instance.committee.key(evidence.first.signer).copied() else {
            return;
        };
        tracing::warn!(
            %member,
            epoch = instance.epoch,
            round = evidence.first.round,
            first = %evidence.first.block,
            second = %evidence.second.block,
            "a committee member voted for two blocks in one round: recording the proof on the ledger"
        );
        let tx = evidence
            .ledger_proof(member, instance.epoch)
            .record_tx(self.parts.synchronizer.chain_id());
        let bytes = cas_engine::codec::encode_tx(&tx);
        let admission = self.parts.synchronizer.admit(&[&bytes[..]], now);
        tracing::info!(?admission, "the equivocation record was submitted");
    }

    /// The upstream nodes' ledger is past the last height of this instance while it committed nothing for a while
    /// ([`crate::behind`]): the committee went on without this node and left it out (no member sends it frames of
    /// a later epoch to say so), so the node follows the certified ledger instead.
    fn behind_upstream(&mut self) {
        let watch = &self.parts.upstream_watch;
        let instance = &self.parts.instance;
        watch.committed(instance.bft.committed_height());
        let Some(last) = self.parts.maker.plan.last_height(instance.epoch) else {
            return;
        };
        if watch.height() > last && !self.follow {
            tracing::warn!(
                epoch = instance.epoch,
                last,
                upstream = watch.height(),
                committed = instance.bft.committed_height(),
                "the upstream nodes' ledger is past this instance's epoch while it commits nothing: following the \
                 certified ledger to catch up"
            );
            self.follow = true;
        }
    }

    /// An ended instance is dropped: its safety file is removed once the executed height is past its epoch (a
    /// restart below that would run the instance again, and must find what it voted).
    fn retire(&mut self, instance: Instance) {
        if instance.epoch == 0 {
            return;
        }
        if let Some(last) = self.parts.maker.plan.last_height(instance.epoch) {
            self.retired.push((instance.epoch, last));
        }
    }

    fn remove_retired_safety(&mut self) {
        if self.retired.is_empty() {
            return;
        }
        let executed = self.parts.stats.lock().expect("stats lock").height;
        let data_dir = &self.parts.maker.data_dir;
        self.retired.retain(|(epoch, last)| {
            if executed <= *last {
                return true;
            }
            let path = SafetyFile::for_epoch(data_dir, *epoch).path().to_path_buf();
            if let Err(error) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), %error, "an ended epoch's safety file is not removed");
            }
            false
        });
    }

    /// The transactions admitted here and not handed to execution: those of this node's packages still held, and
    /// those waiting to be packaged (for the follower this node becomes to relay to the committee).
    fn uncommitted(&mut self) -> Vec<Transaction> {
        // Those still waiting for admission (up to a package wait's worth) are admitted now, so they go too.
        self.admit_waiting();
        let mut carried = Self::carried(&self.parts.instance, &self.in_flight);
        carried.extend(self.parts.synchronizer.take_all());
        carried
    }

    /// The transactions of this node's packages held by `instance` that are still in flight (admitted here, never
    /// handed to execution): what its epoch did not commit.
    fn carried(instance: &Instance, in_flight: &InFlight) -> Vec<Transaction> {
        let mut carried = Vec::new();
        for (package, ids) in instance.availability.own_packages() {
            carried.extend(
                package
                    .txs
                    .iter()
                    .zip(ids)
                    .filter(|(_, id)| in_flight.client_of(id).is_some())
                    .map(|(tx, _)| tx.clone()),
            );
        }
        carried
    }

    /// Hands a peer's snapshot request to the serving thread; a full queue drops it (counted; the peer retries).
    fn serve(&self, from: PublicKey, epoch: u64, request: ServeRequest) {
        if self.parts.serve.try_send((from, epoch, request)).is_err() {
            self.parts
                .anchors
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Starts the next epoch's instance once the current one ended, every block up to its base is with the executor,
    /// and the ledger has recorded the next committee. The old instance is kept a while for stragglers; the
    /// transactions of this node's packages that its epoch did not commit go into the next one's packages (they
    /// were admitted and are owed an answer). A committee this build cannot serve (this node not re-elected, or a
    /// member netio does not connect to) stops consensus here, said once (docs/dpos.md: the switch between member
    /// and follower is not built).
    fn hand_over(&mut self, now: u64) -> Result<()> {
        let Some(base) = self.epoch_end else {
            return Ok(());
        };
        let epoch = self.parts.instance.epoch;
        let next = self
            .parts
            .maker
            .plan
            .next(epoch)
            .context("an epoch ended that the plan never ends")?;
        if !self.pending.is_empty() {
            return Ok(());
        }
        // Recorded E/2 blocks before the base: only an executor far behind makes this wait.
        let Some(elected) = self.parts.committees.get(next) else {
            return Ok(());
        };
        let me = self.parts.maker.keypair.public();
        let committee = match committee_of(&elected) {
            Ok(committee) => committee,
            Err(error) => {
                self.stuck(format!(
                    "epoch {next}'s elected committee is no committee: {error}"
                ));
                return Ok(());
            }
        };
        if committee.index_of(&me).is_none() {
            tracing::info!(
                epoch,
                next,
                "this node is not in the next committee: it follows the certified ledger from here"
            );
            self.follow = true;
            return Ok(());
        }
        let peers = peers_of(&elected, &me, &self.parts.peer_addresses);
        if peers.len() + 1 < elected.len() {
            self.stuck(format!(
                "epoch {next}'s committee has a member with no address (none in node.toml's peers, none declared \
                 with its candidacy)"
            ));
            return Ok(());
        }
        if committee.members().any(|m| {
            !self
                .parts
                .instance
                .members
                .contains_key(committee.key(m).expect("member"))
        }) || committee.size() != self.parts.instance.committee.size()
        {
            self.parts.netio.set_peers(&peers)?;
        }
        self.flush_outbox()?;
        self.parts.epoch_bases.store(next, base)?;
        let (blocks, later) =
            split_epoch_blocks(std::mem::take(&mut self.parts.later_blocks), next);
        self.parts.later_blocks = later;
        let (instance, actions) =
            self.parts
                .maker
                .start(next, committee, base, None, blocks, Vec::new(), now)?;
        let old = std::mem::replace(&mut self.parts.instance, instance);
        self.ended_bft.add(&old.bft.stats);
        self.ended_availability.add(&old.availability.stats);
        let carried = Self::carried(&old, &self.in_flight);
        tracing::info!(
            epoch = next,
            base = base.height,
            members = elected.len(),
            carried = carried.len(),
            "handed over to the next committee"
        );
        let members = self.parts.instance.committee.size();
        self.parts
            .synchronizer
            .set_package_wait_ms(self.parts.maker.waits.package_ms(members));
        self.parts.synchronizer.requeue(carried, now);
        if let Some((older, _)) = self.ended.replace((old, now + ENDED_INSTANCE_KEPT_MS)) {
            self.retire(older);
        }
        self.epoch_end = None;
        self.handover_stuck = None;
        // Members heard ahead of the old instance were only switching first.
        self.ahead = (Default::default(), 0);
        self.package_requests.clear();
        self.execute(actions)
    }

    /// The hand-over cannot happen, for `refusal`: said once (the log and the operator's status) until it changes.
    fn stuck(&mut self, refusal: String) {
        if self.handover_stuck.as_ref() != Some(&refusal) {
            tracing::error!(epoch = self.parts.instance.epoch, "no hand-over: {refusal}");
            self.handover_stuck = Some(refusal);
        }
    }

    /// A verified snapshot above the committed height becomes the base: the executor installs it (after every
    /// block already handed to it, which it then skips as below it), the BFT continues from its consensus block,
    /// and committed blocks at or below it waiting for packages are dropped.
    fn install(&mut self, install: Install) -> Result<()> {
        let height = install.info.height;
        if height <= self.parts.instance.bft.committed_height() {
            tracing::info!(
                height,
                "snapshot no longer ahead of the committed height; dropped"
            );
            return Ok(());
        }
        let consensus_hash = install.info.consensus_hash;
        self.parts
            .execution
            .send(Work::Install(install))
            .context("the executor stopped")?;
        self.pending.retain(|block| block.height > height);
        // Requests for packages of the dropped blocks are moot; those still needed are asked again.
        self.package_requests.clear();
        let actions = self.parts.instance.bft.install_base(height, consensus_hash);
        self.execute(actions)
    }

    /// A gossiped witness goes to the witness thread, which validates it against this node's stored blocks and
    /// passes it on if new; a full inbox drops it (counted), never making consensus wait.
    fn on_witness(&mut self, header: cas_consensus::witness::WitnessHeader) {
        offer_input(
            &self.parts.witness_inbox,
            &self.parts.witness,
            WitnessInput::Gossip(header),
        );
    }

    /// A standalone miner's request: a template is answered from the witness thread's current one, sealed for the
    /// miner's key; a found witness goes to the witness thread, which validates it, answers the miner and, if it
    /// is good, gossips it like a find of this node's own miners. A full witness inbox refuses it at once.
    fn on_mining(&mut self, inbound: Inbound) {
        let Origin::Client(client) = inbound.origin else {
            return;
        };
        // netio validated the payload with this decoder; this cannot fail for a validated frame.
        let Ok(request) = MiningRequest::decode(&inbound.payload) else {
            return;
        };
        let answer = match request {
            MiningRequest::Template { miner } => {
                let template = self.parts.witness.current_template().map(|mut header| {
                    header.miner = miner;
                    header
                });
                MiningAnswer::Template(template)
            }
            MiningRequest::Submit(header) => {
                let hash = header.hash();
                match self
                    .parts
                    .witness_inbox
                    .try_send(WitnessInput::Submitted { header, client })
                {
                    Ok(()) => return,
                    Err(_) => {
                        self.parts.witness.dropped.fetch_add(1, Ordering::Relaxed);
                        MiningAnswer::refused(hash, "the node is busy: submit again")
                    }
                }
            }
        };
        if let Err(error) = self
            .parts
            .netio
            .answer(client, Bytes::from(answer.encode()))
        {
            tracing::debug!(%client, %error, "mining answer not delivered");
        }
    }

    /// Queues a client transaction for the next admission batch, admitting the batch once it is full.
    fn queue_admission(&mut self, submission: Submission, now: u64) {
        if self.admission.is_empty() {
            self.admission_since_ms = now;
        }
        self.admission.push(submission);
        if self.admission.len() >= ADMISSION_BATCH_TXS {
            self.admit_waiting();
        }
    }

    /// Admits the submissions waiting for admission, if any, as of the oldest's arrival: the package they join is
    /// then due when it would have been had each been admitted on arrival.
    fn admit_waiting(&mut self) {
        if self.admission.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.admission);
        self.on_clients(batch, self.admission_since_ms);
    }

    /// Admits a batch of client transactions. Those from a client over its in-flight share, or arriving while the
    /// node is over its own, are answered `Overloaded` before any signature is checked ([`InFlight`]). `now` is
    /// when the oldest of them arrived.
    fn on_clients(&mut self, submissions: Vec<Submission>, now: u64) {
        let mut admitted = Vec::with_capacity(submissions.len());
        for (client, payload) in submissions {
            if self.in_flight.admits(&client, now) {
                admitted.push((client, payload));
                continue;
            }
            self.overloaded_answers += 1;
            let answer = ClientAnswer::Overloaded {
                tx: decode_tx(&payload).map(|tx| tx.tx_id()).unwrap_or_default(),
                retry_after_ms: OVERLOADED_RETRY_AFTER_MS,
            };
            self.answer(client, answer);
        }
        let payloads: Vec<&[u8]> = admitted.iter().map(|(_, payload)| &payload[..]).collect();
        let index = &self.parts.index;
        let admissions =
            self.parts
                .synchronizer
                .admit_known(&payloads, now, &|sender, client_id| {
                    index.by_client(sender, client_id)
                });
        let mut accepted = Vec::with_capacity(admitted.len());
        for ((client, payload), admission) in admitted.iter().zip(admissions) {
            let answer = match admission {
                // Answered once the package holding it is certified: "accepted" means held by a quorum, so it
                // survives the crash of this node (see `answer_accepted`).
                Admission::Accepted { id } => {
                    self.in_flight.insert(id, *client, now);
                    accepted.push(id);
                    continue;
                }
                Admission::Duplicate { id } => {
                    // It names the first transaction (of the same bytes, or of the same client id): an HTTP request
                    // waits under the id it submitted.
                    let submitted = matches!(client, Client::Http(_))
                        .then(|| decode_tx(payload).ok().map(|tx| tx.tx_id()))
                        .flatten();
                    let answer = ClientAnswer::Duplicate { tx: id };
                    self.parts.clients.answer_for(*client, submitted, answer);
                    continue;
                }
                Admission::Rejected { reason } => ClientAnswer::Rejected {
                    tx: decode_tx(payload).ok().map(|tx| tx.tx_id()),
                    code: reason.code().number(),
                    reason: ClientAnswer::reason(&reason),
                },
                Admission::Overloaded { retry_after_ms } => {
                    self.overloaded_answers += 1;
                    self.in_flight.refuse(*client, now);
                    ClientAnswer::Overloaded {
                        tx: decode_tx(payload).map(|tx| tx.tx_id()).unwrap_or_default(),
                        retry_after_ms,
                    }
                }
            };
            self.answer(*client, answer);
        }
        if !accepted.is_empty() {
            self.parts.index.mark_pending(&accepted);
        }
    }

    fn answer(&self, client: Client, answer: ClientAnswer) {
        self.parts.clients.answer(client, answer);
    }

    /// Tells the submitters of a package of ours that it is certified: their transactions are accepted.
    fn answer_accepted(&mut self, package: &PackageId) {
        let Some(ids) = self.parts.instance.availability.tx_ids(package) else {
            return;
        };
        for id in ids {
            if let Some(client) = self.in_flight.client_of(id) {
                self.answer(client, ClientAnswer::Accepted { tx: *id });
            }
        }
    }

    /// Sends what the outbox holds, after one fdatasync of the journal records written before it.
    pub fn flush_outbox(&mut self) -> Result<()> {
        if self.outbox.is_empty() {
            return Ok(());
        }
        let (journal, safety) = (
            &mut self.parts.journal,
            &mut self.parts.instance.safety_file,
        );
        if journal.is_dirty() && safety.is_dirty() {
            // Two files, two device flushes: side by side (the safety state's on the side thread), the outbox
            // waits for one flush's time, not two.
            let side = match &mut self.side_sync {
                Some(side) => side,
                None => self
                    .side_sync
                    .insert(SideSync::start().context("starting the side sync thread")?),
            };
            let mut journal_synced = None;
            let safety_synced = safety.sync_with(|file| {
                let (synced, journal) = side.sync_data_beside(file, || journal.sync());
                journal_synced = Some(journal);
                synced
            });
            journal_synced.unwrap_or_else(|| journal.sync())?;
            safety_synced?;
        } else {
            journal.sync()?;
            safety.sync()?;
        }
        for action in std::mem::take(&mut self.outbox) {
            self.transmit(action);
        }
        Ok(())
    }

    fn transmit(&self, action: Action) {
        match action {
            Action::Send { to, message } => {
                let (class, bytes) = wire::encode(self.parts.instance.epoch, &message);
                if let Err(error) = self.parts.netio.try_send(
                    self.parts.instance.committee.key(to).expect("a member"),
                    class,
                    bytes,
                ) {
                    tracing::debug!(to, %error, "send refused");
                }
            }
            Action::Broadcast(message) => {
                let (class, bytes) = wire::encode(self.parts.instance.epoch, &message);
                for (peer, error) in self.parts.netio.broadcast(class, bytes) {
                    tracing::debug!(?peer, %error, "broadcast refused for a peer");
                }
            }
            other => unreachable!("only messages are transmitted, not {other:?}"),
        }
    }

    pub fn execute(&mut self, actions: Vec<Action>) -> Result<()> {
        for action in actions {
            match action {
                // Behind a journal record or a safety state not yet durable (or behind a message that is): wait for
                // the group commit.
                action @ (Action::Send { .. } | Action::Broadcast(_))
                    if self.parts.journal.is_dirty()
                        || self.parts.instance.safety_file.is_dirty()
                        || !self.outbox.is_empty() =>
                {
                    self.outbox.push(action)
                }
                action @ (Action::Send { .. } | Action::Broadcast(_)) => self.transmit(action),
                // Synced with the journal's group commit, before any message after it leaves.
                Action::Persist(safety) => self
                    .parts
                    .instance
                    .safety_file
                    .write(&safety)
                    .context("persisting safety state")?,
                Action::StoreBlock(block) => self.parts.journal.append_block(block)?,
                Action::StorePackage(package) => self.parts.journal.append_package(package)?,
                Action::Certified { cert, verified } => {
                    if cert.creator == self.parts.instance.bft.me() {
                        self.answer_accepted(&cert.package);
                    }
                    self.parts.instance.bft.add_payload(cert, verified);
                    let released = self.parts.instance.bft.take_deferred();
                    self.execute(released)?;
                }
                Action::Commit(block) => {
                    self.pending.push_back(block);
                    let now = self.now_ms();
                    self.drain_pending(now)?;
                }
                Action::Equivocation(evidence) => {
                    let now = self.now_ms();
                    self.report_equivocation(&evidence, now)
                }
                // The hand-over runs from the loop, once every block up to the base is handed to execution.
                Action::EpochEnd(base) => {
                    tracing::info!(
                        epoch = self.parts.instance.epoch,
                        height = base.height,
                        "the committee's epoch ended"
                    );
                    self.epoch_end = Some(base);
                }
            }
        }
        Ok(())
    }

    /// Hands committed blocks to the executor in order, as soon as every package of the next one is here.
    fn drain_pending(&mut self, now: u64) -> Result<()> {
        while let Some(block) = self.pending.front() {
            let mut txs: Vec<Transaction> = Vec::new();
            let mut ids = Vec::new();
            let mut missing = Vec::new();
            let mut attested = true;
            for cert in &block.payload {
                match self.parts.instance.availability.executable(cert) {
                    Ok((package, package_ids, needs_verification)) => {
                        attested &= !needs_verification;
                        txs.extend(package.txs.iter().cloned());
                        ids.extend_from_slice(package_ids);
                    }
                    Err(requests) => missing.push((cert.package, requests)),
                }
            }

            if !missing.is_empty() {
                self.request_missing_packages(now)?;
                return Ok(());
            }
            let block = self.pending.pop_front().expect("front exists");
            for cert in &block.payload {
                self.package_requests.remove(&cert.package);
            }
            let (clients, admitted_ms) = ids
                .iter()
                .map(|id| match self.in_flight.remove(id) {
                    Some((client, admitted_ms)) => (Some(client), admitted_ms),
                    None => (None, 0),
                })
                .unzip();
            let proposer = *self
                .parts
                .instance
                .committee
                .key(block.author)
                .expect("a committed block's author is a member");
            self.parts
                .execution
                .send(Work::Block(Committed {
                    block,
                    proposer,
                    txs,
                    ids,
                    clients,
                    admitted_ms,
                    attested,
                }))
                .context("the executor stopped")?;
        }
        Ok(())
    }

    /// Asks for the packages missing from the next committed blocks (a catching-up node fetches ahead rather than
    /// one block per round trip), each from two of its ackers at a time, rotating on every retry.
    fn request_missing_packages(&mut self, now: u64) -> Result<()> {
        let mut due = Vec::new();
        for block in self.pending.iter().take(PENDING_PREFETCH_BLOCKS) {
            for cert in &block.payload {
                let Err(requests) = self.parts.instance.availability.executable(cert) else {
                    continue;
                };
                let (last, attempt) = self
                    .package_requests
                    .get(&cert.package)
                    .copied()
                    .unwrap_or((0, 0));
                if requests.is_empty() || (attempt > 0 && now < last + PACKAGE_RETRY_MS) {
                    continue;
                }
                self.package_requests
                    .insert(cert.package, (now, attempt + 1));
                due.extend((0..PACKAGE_REQUEST_FANOUT.min(requests.len())).map(|k| {
                    requests[(attempt * PACKAGE_REQUEST_FANOUT + k) % requests.len()].clone()
                }));
            }
        }
        self.execute(due)
    }
}

/// The netio peers of an elected committee (every member but `me`), each at its address in node.toml's `peers`, or
/// the one its candidacy declared; a member with neither is left out.
pub fn peers_of(
    elected: &[cas_engine::stake::Candidate],
    me: &PublicKey,
    configured: &HashMap<PublicKey, std::net::SocketAddr>,
) -> Vec<cas_netio::Peer> {
    elected
        .iter()
        .filter(|member| member.key != *me)
        .filter_map(|member| {
            let addr = configured.get(&member.key).copied().or(member.address)?;
            Some(cas_netio::Peer {
                key: member.key,
                addr,
            })
        })
        .collect()
}

/// Journal blocks of instance `epoch` and of the ones after it (those before are done).
pub fn split_epoch_blocks(
    blocks: Vec<ConsensusBlock>,
    epoch: u64,
) -> (Vec<ConsensusBlock>, Vec<ConsensusBlock>) {
    blocks
        .into_iter()
        .filter(|block| block.epoch >= epoch)
        .partition(|block| block.epoch == epoch)
}
