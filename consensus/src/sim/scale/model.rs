//! One run of the scale model: the committee's real `Bft` and `Availability` state machines, every node's CPU and
//! uplink queue, the two-tier broadcast tree, and open-loop clients, under virtual time in µs. Transactions travel
//! as cohorts (a node's submissions of one forwarding interval) rather than one by one; packages are real packages
//! with no transactions inside, their modeled contents kept beside them. It never touches a clock, a socket or a
//! thread: the same parameters and seed give the same run.

use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use cas_engine::{BlockHash, PackageId};

use crate::availability::{Availability, AvailabilityConfig};
use crate::bft::{Bft, BftConfig, Recovered};
use crate::committee::{Committee, MemberIndex};
use crate::messages::{Block, Message};
use crate::sim::machines::{
    member_keypair, offer_payload, route_message, simulated_committee, tick, EventQueue,
};
use crate::sim::network::Rng;
use crate::Action;

use super::measure::{Measurements, ProtocolCounts, ResourceUse, RunStats};
use super::resources::{Cpu, Lane, Uplink, Window, Work};
use super::wire::{block_bytes, encoded_bytes};
use super::{ScaleParams, Topology};

/// The members' timer tick (the node driver's).
const TICK_US: u64 = 10_000;
/// How often a node hands its clients' transactions on (to its own Synchronizer, or up the tree): the
/// resolution of submit times, whose cohort carries the interval's midpoint.
pub const FORWARD_INTERVAL_US: u64 = 10_000;
/// Framing of a forwarded batch of transactions.
const FORWARD_HEADER_BYTES: usize = 64;
/// CPU to receive and dispatch any message, apart from its signatures (decode, hashing, bookkeeping): an assumption,
/// small beside a signature check.
const MESSAGE_HANDLING_US: f64 = 2.0;
/// After submissions stop, the run goes on at most this long for the window's transactions to become final.
pub const DRAIN_MS_MAX: u64 = 2_000;

/// A node's clients' submissions of one forwarding interval.
#[derive(Clone, Copy, Debug)]
struct Cohort {
    origin: u32,
    submit_us: u64,
    count: u32,
}

/// What a package stands for: the modeled transactions, by the node their clients submitted them to.
struct PackageContent {
    txs: u64,
    by_origin: BTreeMap<u32, Vec<(u64, u32)>>,
}

/// A committed block as executors see it.
struct CommittedBlock {
    packages: Vec<PackageId>,
    txs: u64,
    /// Transactions of packages whose certificate is not attested: executors verify their signatures.
    unattested_txs: u64,
    header_bytes: usize,
}

enum Payload {
    Message(Box<Message>),
    Forward(Cohort),
    Block(Rc<CommittedBlock>),
}

enum Event {
    Flush(usize),
    Arrive {
        to: usize,
        from: usize,
        payload: Payload,
    },
    Handle {
        member: usize,
        from: usize,
        message: Box<Message>,
    },
    Ingested {
        member: usize,
        cohort: Cohort,
    },
    PackageTick,
    Tick(usize),
    Executed {
        node: usize,
        block: Rc<CommittedBlock>,
    },
}

struct Member {
    bft: Bft,
    availability: Availability,
    pending: VecDeque<Cohort>,
    pending_txs: u64,
    /// Committed blocks waiting to be relayed and executed, in commit order.
    to_execute: VecDeque<Rc<CommittedBlock>>,
    executing: bool,
}

struct Node {
    cpu: Cpu,
    uplink: Uplink,
}

struct Model<'a> {
    params: &'a ScaleParams,
    topology: &'a Topology,
    committee: Committee,
    rng: Rng,
    now_us: u64,
    queue: EventQueue<Event>,
    nodes: Vec<Node>,
    members: Vec<Member>,
    window: Window,
    submit_end_us: u64,
    packages: BTreeMap<PackageId, PackageContent>,
    blocks: BTreeMap<BlockHash, Rc<CommittedBlock>>,
    /// Fractional arrivals carried to a node's next interval.
    arrival_carry: Vec<f64>,
    measurements: Measurements,
    protocol: ProtocolCounts,
}

pub fn run(params: &ScaleParams, topology: &Topology) -> RunStats {
    // The members share good signature verdicts: the same outcomes, each distinct signature checked once.
    let _memo = crate::verdicts::memo_on();
    let committee = simulated_committee(topology.committee);
    let bft_config = BftConfig {
        round_timeout_ms: 1_000,
        round_timeout_max_ms: 8_000,
        empty_block_wait_ms: 100,
        ..BftConfig::default()
    };
    let submit_end_us = params.duration_ms * 1_000;
    let window = Window {
        from_us: (params.warmup_ms * 1_000).min(submit_end_us / 2),
        to_us: submit_end_us,
    };
    let mut model = Model {
        params,
        topology,
        committee: committee.clone(),
        rng: Rng::new(params.seed),
        now_us: 0,
        queue: EventQueue::default(),
        nodes: (0..topology.total)
            .map(|_| Node {
                cpu: Cpu::new(params.cores_per_node),
                uplink: Uplink::new(params.bandwidth_bytes_per_s),
            })
            .collect(),
        members: Vec::with_capacity(topology.committee),
        window,
        submit_end_us,
        packages: BTreeMap::new(),
        blocks: BTreeMap::new(),
        arrival_carry: vec![0.0; topology.total],
        measurements: Measurements::new(window),
        protocol: ProtocolCounts::default(),
    };
    let mut started = Vec::new();
    for index in 0..topology.committee {
        let (bft, actions) = Bft::new(
            committee.clone(),
            index as MemberIndex,
            member_keypair(index),
            bft_config.clone(),
            Recovered::default(),
            0,
        );
        let availability = Availability::new(
            committee.clone(),
            index as MemberIndex,
            member_keypair(index),
            AvailabilityConfig::default(),
        );
        model.members.push(Member {
            bft,
            availability,
            pending: VecDeque::new(),
            pending_txs: 0,
            to_execute: VecDeque::new(),
            executing: false,
        });
        started.push(actions);
        model.queue.push(TICK_US, Event::Tick(index));
    }
    for (index, actions) in started.into_iter().enumerate() {
        model.execute(index, actions);
    }
    for node in 0..topology.total {
        let phase = model.rng.range(1, FORWARD_INTERVAL_US);
        model.queue.push(phase, Event::Flush(node));
    }
    model
        .queue
        .push(params.package_wait_ms * 1_000, Event::PackageTick);
    let end_us = submit_end_us + DRAIN_MS_MAX * 1_000;
    while let Some((at_us, event)) = model.queue.pop() {
        if at_us > end_us {
            break;
        }
        model.now_us = at_us;
        model.dispatch(event);
        if at_us >= submit_end_us && model.measurements.all_final() {
            break;
        }
    }
    model.stats()
}

impl Model<'_> {
    fn now_ms(&self) -> u64 {
        self.now_us / 1_000
    }

    fn is_member(&self, node: usize) -> bool {
        node < self.topology.committee
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Flush(node) => self.flush(node),
            Event::Arrive { to, from, payload } => self.arrive(to, from, payload),
            Event::Handle {
                member,
                from,
                message,
            } => {
                let is_package = matches!(*message, Message::Package(_));
                let now_ms = self.now_ms();
                let m = &mut self.members[member];
                let actions = route_message(
                    &mut m.bft,
                    &mut m.availability,
                    from as MemberIndex,
                    *message,
                    now_ms,
                );
                self.execute(member, actions);
                if is_package {
                    self.try_execute(member);
                }
            }
            Event::Ingested { member, cohort } => {
                let m = &mut self.members[member];
                m.pending_txs += u64::from(cohort.count);
                m.pending.push_back(cohort);
                while self.members[member].pending_txs >= self.params.package_txs_max as u64 {
                    self.make_package(member);
                }
            }
            Event::PackageTick => {
                for member in 0..self.topology.committee {
                    while self.members[member].pending_txs > 0 {
                        self.make_package(member);
                    }
                }
                self.queue.push(
                    self.now_us + self.params.package_wait_ms * 1_000,
                    Event::PackageTick,
                );
            }
            Event::Tick(member) => {
                let now_ms = self.now_ms();
                let m = &mut self.members[member];
                let actions = tick(&mut m.bft, &mut m.availability, now_ms);
                self.execute(member, actions);
                self.queue.push(self.now_us + TICK_US, Event::Tick(member));
            }
            Event::Executed { node, block } => self.executed(node, &block),
        }
    }

    /// A node's clients' transactions of the last interval: open loop, the offered rate spread evenly over the
    /// nodes, the fraction of a transaction carried over (with a random rounding drawn from the seed).
    fn flush(&mut self, node: usize) {
        if self.now_us > self.submit_end_us {
            return;
        }
        self.queue
            .push(self.now_us + FORWARD_INTERVAL_US, Event::Flush(node));
        let per_node_tps = self.params.offered_tps / self.topology.total as f64;
        let expected = per_node_tps * FORWARD_INTERVAL_US as f64 / 1e6 + self.arrival_carry[node];
        let jitter = (self.rng.next_u64() % 1_000) as f64 / 1_000.0;
        let count = (expected + jitter - 0.5).max(0.0).round();
        self.arrival_carry[node] = expected - count;
        if count < 1.0 {
            return;
        }
        let cohort = Cohort {
            origin: node as u32,
            submit_us: self.now_us.saturating_sub(FORWARD_INTERVAL_US / 2),
            count: count as u32,
        };
        self.measurements
            .submitted(cohort.submit_us, u64::from(cohort.count));
        self.take_up(node, cohort);
    }

    /// A cohort reaches a node on its way to the committee: a member's Synchronizer checks its signatures (the
    /// creator's check) before packing it; any other node forwards it to its parent.
    fn take_up(&mut self, node: usize, cohort: Cohort) {
        if self.is_member(node) {
            let work = f64::from(cohort.count) * self.params.verify_us_per_signature;
            let done =
                self.nodes[node]
                    .cpu
                    .run_parallel(self.now_us, work, Work::Load, self.window);
            self.queue.push(
                done,
                Event::Ingested {
                    member: node,
                    cohort,
                },
            );
        } else {
            let parent = self.topology.parent[node].expect("a non-member has a parent");
            let bytes = FORWARD_HEADER_BYTES + cohort.count as usize * self.params.tx_bytes;
            self.transmit(
                node,
                parent,
                bytes,
                Lane::Bulk,
                Work::Load,
                Payload::Forward(cohort),
            );
        }
    }

    fn transmit(
        &mut self,
        from: usize,
        to: usize,
        bytes: usize,
        lane: Lane,
        work: Work,
        payload: Payload,
    ) {
        let left = self.nodes[from]
            .uplink
            .send(self.now_us, bytes, lane, work, self.window);
        self.queue.push(
            left + self.params.one_way_latency_us,
            Event::Arrive { to, from, payload },
        );
    }

    /// A member packs up to `package_txs_max` of its checked transactions into a real (empty) package, keeping
    /// the modeled contents beside it.
    fn make_package(&mut self, member: usize) {
        let limit = self.params.package_txs_max as u64;
        let now_ms = self.now_ms();
        let m = &mut self.members[member];
        let mut content = PackageContent {
            txs: 0,
            by_origin: BTreeMap::new(),
        };
        while content.txs < limit {
            let Some(mut cohort) = m.pending.pop_front() else {
                break;
            };
            let room = limit - content.txs;
            if u64::from(cohort.count) > room {
                let rest = Cohort {
                    count: cohort.count - room as u32,
                    ..cohort
                };
                m.pending.push_front(rest);
                cohort.count = room as u32;
            }
            content.txs += u64::from(cohort.count);
            content
                .by_origin
                .entry(cohort.origin)
                .or_default()
                .push((cohort.submit_us, cohort.count));
        }
        m.pending_txs -= content.txs;
        let actions = m.availability.create(Vec::new(), true, now_ms);
        let id = actions
            .iter()
            .find_map(|a| match a {
                Action::StorePackage(package) => Some(package.id()),
                _ => None,
            })
            .expect("a new package is stored");
        self.packages.insert(id, content);
        self.execute(member, actions);
    }

    fn execute(&mut self, member: usize, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send { to, message } => {
                    let bytes = self.message_bytes(&message);
                    self.send_message(member, to as usize, message, bytes);
                }
                Action::Broadcast(message) => {
                    let bytes = self.message_bytes(&message);
                    // In ring order from the next member: a package's checkers (the next members) get it first.
                    let size = self.topology.committee;
                    for step in 1..size {
                        self.send_message(member, (member + step) % size, message.clone(), bytes);
                    }
                }
                Action::Certified { cert, verified } => {
                    let released = offer_payload(&mut self.members[member].bft, cert, verified);
                    self.execute(member, released);
                }
                Action::Commit(block) => self.commit(member, &block),
                Action::Persist(_)
                | Action::StoreBlock(_)
                | Action::StorePackage(_)
                | Action::EpochEnd(_)
                | Action::Equivocation(_) => {}
            }
        }
    }

    fn message_bytes(&self, message: &Message) -> usize {
        let txs = match message {
            Message::Package(package) => self.packages.get(&package.id()).map_or(0, |c| c.txs),
            _ => 0,
        };
        encoded_bytes(message) + txs as usize * self.params.tx_bytes
    }

    fn send_message(&mut self, from: usize, to: usize, message: Message, bytes: usize) {
        let (lane, work) = if message.is_consensus() {
            (Lane::Consensus, Work::Overhead)
        } else if matches!(message, Message::Package(_)) {
            (Lane::Bulk, Work::Load)
        } else {
            (Lane::Bulk, Work::Overhead)
        };
        self.transmit(
            from,
            to,
            bytes,
            lane,
            work,
            Payload::Message(Box::new(message)),
        );
    }

    fn arrive(&mut self, to: usize, from: usize, payload: Payload) {
        match payload {
            Payload::Message(message) => {
                let (signatures, work) = self.signatures_to_check(to, from, &message);
                let cpu_us =
                    MESSAGE_HANDLING_US + signatures as f64 * self.params.verify_us_per_signature;
                let done = if work == Work::Load {
                    self.nodes[to]
                        .cpu
                        .run_parallel(self.now_us, cpu_us, work, self.window)
                } else {
                    self.nodes[to]
                        .cpu
                        .run(self.now_us, cpu_us, work, self.window)
                };
                self.queue.push(
                    done,
                    Event::Handle {
                        member: to,
                        from,
                        message,
                    },
                );
            }
            Payload::Forward(cohort) => self.take_up(to, cohort),
            Payload::Block(block) => {
                self.relay_block(to, &block);
                let done = self.execute_block_cpu(to, &block);
                self.queue.push(done, Event::Executed { node: to, block });
            }
        }
    }

    /// The signatures a member verifies on receiving a message: a checker verifies a package's transactions; a
    /// certificate's acks are verified once; a vote, commit vote, ack or proposal costs one (votes and acks are
    /// verified in one batch per certificate, one signature each).
    fn signatures_to_check(&self, to: usize, from: usize, message: &Message) -> (u64, Work) {
        match message {
            Message::Package(package) => {
                let checker = from == package.creator as usize
                    && Availability::is_checker(
                        &self.committee,
                        package.creator,
                        to as MemberIndex,
                    );
                let txs = self.packages.get(&package.id()).map_or(0, |c| c.txs);
                (if checker { txs } else { 0 }, Work::Load)
            }
            Message::Cert(cert) => (cert.acks.len() as u64, Work::Overhead),
            Message::Proposal(block) | Message::BlockResponse(block) => (
                1 + block.tc.as_ref().map_or(0, |tc| tc.signatures.len() as u64),
                Work::Overhead,
            ),
            Message::Vote(_) | Message::CommitVote(_) | Message::Ack(_) | Message::Timeout(_) => {
                (1, Work::Overhead)
            }
            // Witness blocks are node gossip the committee's state machines never send; their check is hashing.
            Message::BlockRequest(_)
            | Message::PackageRequest(_)
            | Message::Witness(_)
            | Message::SnapshotInfoRequest
            | Message::SnapshotInfo(_)
            | Message::SnapshotChunkRequest(_)
            | Message::SnapshotChunk(_)
            | Message::LedgerVote(_)
            | Message::HandoverVote(_) => (0, Work::Overhead),
        }
    }

    fn commit(&mut self, member: usize, block: &Block) {
        let hash = block.hash();
        let committed = match self.blocks.get(&hash) {
            Some(committed) => committed.clone(),
            None => {
                let mut committed = CommittedBlock {
                    packages: Vec::with_capacity(block.payload.len()),
                    txs: 0,
                    unattested_txs: 0,
                    header_bytes: block_bytes(block),
                };
                for cert in &block.payload {
                    let txs = self.packages.get(&cert.package).map_or(0, |c| c.txs);
                    committed.packages.push(cert.package);
                    committed.txs += txs;
                    if !cert.attested(&self.committee) {
                        committed.unattested_txs += txs;
                    }
                }
                self.protocol.blocks_committed += 1;
                self.protocol.txs_committed += committed.txs;
                self.protocol.txs_unattested += committed.unattested_txs;
                let committed = Rc::new(committed);
                self.blocks.insert(hash, committed.clone());
                committed
            }
        };
        self.members[member].to_execute.push_back(committed);
        self.try_execute(member);
    }

    /// A member relays and executes its committed blocks in order, each once all its packages are here.
    fn try_execute(&mut self, member: usize) {
        let m = &self.members[member];
        let Some(block) = m.to_execute.front() else {
            return;
        };
        if m.executing
            || block
                .packages
                .iter()
                .any(|id| m.availability.package(id).is_none())
        {
            return;
        }
        let block = self.members[member]
            .to_execute
            .pop_front()
            .expect("checked above");
        self.members[member].executing = true;
        self.relay_block(member, &block);
        let done = self.execute_block_cpu(member, &block);
        self.queue.push(
            done,
            Event::Executed {
                node: member,
                block,
            },
        );
    }

    /// Sends a final block's transactions on to the node's children in the broadcast tree.
    fn relay_block(&mut self, node: usize, block: &Rc<CommittedBlock>) {
        let bytes = block.header_bytes + block.txs as usize * self.params.tx_bytes;
        for index in 0..self.topology.children[node].len() {
            let child = self.topology.children[node][index];
            self.transmit(
                node,
                child,
                bytes,
                Lane::Bulk,
                Work::Load,
                Payload::Block(block.clone()),
            );
        }
    }

    fn execute_block_cpu(&mut self, node: usize, block: &CommittedBlock) -> u64 {
        let work = block.txs as f64 * self.params.execute_us_per_tx
            + block.unattested_txs as f64 * self.params.verify_us_per_signature;
        self.nodes[node]
            .cpu
            .run_parallel(self.now_us, work, Work::Load, self.window)
    }

    /// A block is executed at `node`: its transactions submitted there are final.
    fn executed(&mut self, node: usize, block: &CommittedBlock) {
        let origin = node as u32;
        for id in &block.packages {
            let Some(cohorts) = self.packages.get(id).and_then(|c| c.by_origin.get(&origin)) else {
                continue;
            };
            for &(submit_us, count) in cohorts {
                self.measurements
                    .became_final(submit_us, count, self.now_us);
            }
        }
        if self.is_member(node) {
            self.members[node].executing = false;
            self.try_execute(node);
        }
    }

    fn stats(self) -> RunStats {
        let window_us = self.window.length_us() as f64;
        let txs = self.measurements.submitted_run().max(1) as f64;
        let resources = self
            .nodes
            .iter()
            .enumerate()
            .flat_map(|(node, n)| {
                let cores = n.cpu.cores() as f64;
                [
                    ResourceUse {
                        node,
                        cpu: true,
                        overhead: n.cpu.busy.overhead_us / (cores * window_us),
                        load: n.cpu.busy.load_us / (cores * window_us),
                        load_us_per_tx: n.cpu.busy.load_run_us / cores / txs,
                    },
                    ResourceUse {
                        node,
                        cpu: false,
                        overhead: n.uplink.busy.overhead_us / window_us,
                        load: n.uplink.busy.load_us / window_us,
                        load_us_per_tx: n.uplink.busy.load_run_us / txs,
                    },
                ]
            })
            .collect();
        let protocol = ProtocolCounts {
            rounds: self.members[0].bft.round(),
            packages: self.packages.len() as u64,
            simulated_ms: self.now_ms(),
            ..self.protocol
        };
        self.measurements
            .into_stats(self.params.offered_tps, resources, protocol)
    }
}
