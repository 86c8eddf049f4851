//! The hand-over simulator: committees that change at epoch boundaries, each epoch's committee running its own BFT
//! instance ([`crate::bft`]: `BftConfig::epoch`, `last_height`; `Recovered::at_base`) under a seeded simulated
//! network. [`run_epochs`] runs [`EPOCHS`] epochs of [`EPOCH_BLOCKS`] blocks over a pool of [`POOL`] keys
//! (committees {0,1,2,3}, {1,2,3,4}, {2,3,4,0}: a member leaves and one joins at every boundary; the joiner learns
//! the base the way a follower does, from what the old committee made final, a little later), with 2% message loss
//! and reordering throughout and one [`EpochFault`] aimed at a boundary: a member crashes and restarts from its disk
//! (each instance's safety state and stored blocks), or the network splits 2/2 and heals. The report holds every
//! delivered commit and every epoch end; [`EpochReport::problems`] checks one block per height across all nodes and
//! epochs, no commit outside an epoch's heights, every member of an epoch ending it at the same base, the first
//! block of each later epoch extending its base, and liveness (every epoch ends on every member). No payload: the
//! instances order empty blocks (the packages' hand-over is the node's part).

use std::collections::BTreeMap;

use cas_engine::fixtures::{key, COMMITTEE_KEYS};
use cas_engine::BlockHash;

use crate::bft::{Base, Bft, BftConfig, Event, Recovered, SafetyState};
use crate::committee::{Committee, MemberIndex};
use crate::messages::{Block, Message};
use crate::sim::machines::EventQueue;
use crate::sim::Rng;
use crate::Action;

/// Blocks per epoch.
pub const EPOCH_BLOCKS: u64 = 10;
const E: u64 = EPOCH_BLOCKS;
/// Epochs a run goes through.
pub const EPOCHS: u64 = 3;
/// Keys the committees are drawn from.
pub const POOL: usize = 5;
const TICK_MS: u64 = 10;
/// Virtual time a run may take before liveness is judged lost.
const RUN_MS: u64 = 60_000;
/// How long a joiner takes to learn the base from the ledger after the old committee made it final.
const FOLLOW_DELAY_MS: u64 = 50;

/// The pool keys that form epoch `e`'s committee, in committee order.
pub fn members_of(epoch: u64) -> Vec<usize> {
    let first = epoch as usize;
    (0..4).map(|i| (first + i) % POOL).collect()
}

/// Epoch `e`'s committee: [`members_of`] with equal stakes.
pub fn committee_of(epoch: u64) -> Committee {
    Committee::new(
        members_of(epoch)
            .iter()
            .map(|k| (key(COMMITTEE_KEYS, *k as u32).public(), 100))
            .collect(),
    )
    .unwrap()
}

/// The BFT configuration of epoch `e`'s instances: short timeouts, empty blocks at once, the epoch's last height.
pub fn epoch_config(epoch: u64) -> BftConfig {
    BftConfig {
        round_timeout_ms: 300,
        round_timeout_max_ms: 2_400,
        empty_block_wait_ms: 5,
        proposal_wait_ms: 0,
        epoch,
        last_height: Some((epoch + 1) * E),
        ..BftConfig::default()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpochFault {
    /// Loss and reordering only.
    None,
    /// A member of the epoch ending crashes a few blocks before its last height and restarts from its disk.
    CrashAtBoundary,
    /// The network splits 2/2 around a boundary, then heals.
    SplitAtBoundary,
}

impl EpochFault {
    pub const ALL: [EpochFault; 3] = [
        EpochFault::None,
        EpochFault::CrashAtBoundary,
        EpochFault::SplitAtBoundary,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EpochFault::None => "loss-only",
            EpochFault::CrashAtBoundary => "crash-at-boundary",
            EpochFault::SplitAtBoundary => "split-at-boundary",
        }
    }
}

/// What one instance of one node keeps durably.
#[derive(Default, Clone)]
struct Disk {
    safety: Option<SafetyState>,
    blocks: BTreeMap<BlockHash, Block>,
    committed: Option<(u64, BlockHash)>,
}

struct Node {
    /// This node's instances by epoch (old ones keep running, so stragglers of their epoch can still finish it).
    instances: BTreeMap<u64, Bft>,
    disks: BTreeMap<u64, Disk>,
    bases: BTreeMap<u64, Base>,
    down_until: Option<u64>,
}

enum Ev {
    Deliver {
        to: usize,
        epoch: u64,
        from: MemberIndex,
        message: Box<Message>,
    },
    Tick(usize),
    /// A node learns epoch `epoch`'s base (a joiner, from the ledger).
    Learn {
        node: usize,
        epoch: u64,
        base: Base,
    },
    /// `node` crashes: its instances are lost, its disks kept; it restarts `down_ms` later.
    Crash {
        node: usize,
        down_ms: u64,
    },
}

/// What a run saw: every delivered commit, every epoch end, and the violations found as it went.
pub struct EpochReport {
    /// Every delivered commit, by height, with the epoch that delivered it.
    pub chain: BTreeMap<u64, (BlockHash, u64)>,
    /// Each epoch's end (its base for the next), as each node (pool index) saw it.
    pub ends: BTreeMap<u64, BTreeMap<usize, Base>>,
    pub violations: Vec<String>,
    /// Some epoch's last height was made final through a tail block's certificate on some node.
    pub ended_through_tail: bool,
    /// Virtual time when the run stopped.
    pub now_ms: u64,
}

impl EpochReport {
    /// The violations, then what liveness and the chain's shape require: every epoch ended on every member, every
    /// height committed once, by its own epoch.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = self.violations.clone();
        for epoch in 0..EPOCHS {
            let ended: Vec<usize> = self
                .ends
                .get(&epoch)
                .map_or(Vec::new(), |e| e.keys().copied().collect());
            let mut members = members_of(epoch);
            members.sort();
            if ended != members {
                problems.push(format!(
                    "epoch {epoch} ended on {ended:?} of {members:?} by {} ms",
                    self.now_ms
                ));
            }
        }
        let heights: Vec<u64> = self.chain.keys().copied().collect();
        if heights != (1..=EPOCHS * E).collect::<Vec<_>>() {
            problems.push(format!("committed heights {heights:?}"));
        }
        for (height, (_, epoch)) in &self.chain {
            if *epoch != (height - 1) / E {
                problems.push(format!("height {height} committed by epoch {epoch}"));
            }
        }
        problems
    }
}

/// Runs one seed with `fault` aimed at a boundary.
pub fn run_epochs(seed: u64, fault: EpochFault) -> EpochReport {
    let run = Run::new(seed, fault).run();
    let ended_through_tail = run
        .nodes
        .iter()
        .flat_map(|n| n.instances.values())
        .any(|bft| bft.stats.ends_through_tail > 0);
    EpochReport {
        chain: run.chain,
        ends: run.ends,
        violations: run.violations,
        ended_through_tail,
        now_ms: run.now,
    }
}

struct Run {
    rng: Rng,
    now: u64,
    queue: EventQueue<Ev>,
    nodes: Vec<Node>,
    /// Every delivered commit, by height, with the epoch that delivered it.
    chain: BTreeMap<u64, (BlockHash, u64)>,
    /// Each epoch's end as each node saw it.
    ends: BTreeMap<u64, BTreeMap<usize, Base>>,
    fault: EpochFault,
    /// (from, until) of the split, and which nodes are on side A.
    split: Option<(u64, u64, Vec<usize>)>,
    crash_done: bool,
    violations: Vec<String>,
}

impl Run {
    fn new(seed: u64, fault: EpochFault) -> Run {
        let mut run = Run {
            rng: Rng::new(seed),
            now: 0,
            queue: EventQueue::default(),
            nodes: (0..POOL)
                .map(|_| Node {
                    instances: BTreeMap::new(),
                    disks: BTreeMap::new(),
                    bases: BTreeMap::new(),
                    down_until: None,
                })
                .collect(),
            chain: BTreeMap::new(),
            ends: BTreeMap::new(),
            fault,
            split: None,
            crash_done: false,
            violations: Vec::new(),
        };
        for node in members_of(0) {
            run.start(node, 0, Base::GENESIS);
        }
        for node in 0..POOL {
            run.queue.push(TICK_MS, Ev::Tick(node));
        }
        run
    }

    fn member_index(epoch: u64, node: usize) -> Option<MemberIndex> {
        members_of(epoch)
            .iter()
            .position(|k| *k == node)
            .map(|i| i as MemberIndex)
    }

    /// Starts (or restarts, from its disk) `node`'s instance of `epoch`.
    fn start(&mut self, node: usize, epoch: u64, base: Base) {
        let me = Self::member_index(epoch, node).expect("a member of the epoch");
        self.nodes[node].bases.insert(epoch, base);
        let disk = self.nodes[node].disks.entry(epoch).or_default().clone();
        let recovered = match disk.safety {
            None => Recovered::at_base(base),
            Some(safety) => Recovered {
                safety,
                blocks: disk.blocks.values().cloned().collect(),
                committed: disk.committed.or(Some((base.height, base.hash))),
                base,
            },
        };
        let (bft, actions) = Bft::new(
            committee_of(epoch),
            me,
            key(COMMITTEE_KEYS, node as u32),
            epoch_config(epoch),
            recovered,
            self.now,
        );
        self.nodes[node].instances.insert(epoch, bft);
        self.execute(node, epoch, actions);
    }

    fn reachable(&self, from: usize, to: usize) -> bool {
        if self.nodes[to].down_until.is_some() {
            return false;
        }
        match &self.split {
            Some((start, end, side)) if self.now >= *start && self.now < *end => {
                side.contains(&from) == side.contains(&to)
            }
            _ => true,
        }
    }

    fn send(&mut self, from_node: usize, epoch: u64, to_node: usize, message: Message) {
        if !self.reachable(from_node, to_node) || self.rng.chance(20_000) {
            return; // lost: 2% of messages, and everything across a split or to a node that is down
        }
        let from = Self::member_index(epoch, from_node).expect("a member sends");
        let delay = self.rng.range(1, 30);
        self.queue.push(
            self.now + delay,
            Ev::Deliver {
                to: to_node,
                epoch,
                from,
                message: Box::new(message),
            },
        );
    }

    fn execute(&mut self, node: usize, epoch: u64, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send { to, message } => {
                    let to_node = members_of(epoch)[to as usize];
                    self.send(node, epoch, to_node, message);
                }
                Action::Broadcast(message) => {
                    for to_node in members_of(epoch) {
                        if to_node != node {
                            self.send(node, epoch, to_node, message.clone());
                        }
                    }
                }
                Action::Persist(safety) => {
                    self.nodes[node].disks.entry(epoch).or_default().safety = Some(safety)
                }
                Action::StoreBlock(block) => {
                    self.nodes[node]
                        .disks
                        .entry(epoch)
                        .or_default()
                        .blocks
                        .insert(block.hash(), block);
                }
                Action::StorePackage(_) | Action::Certified { .. } => {}
                Action::Commit(block) => self.commit(node, epoch, block),
                Action::EpochEnd(base) => self.epoch_end(node, epoch, base),
                // Every node here is honest: a proof against one is a violation.
                Action::Equivocation(evidence) => self.violations.push(format!(
                    "node {node} proved member {} of epoch {epoch} equivocating",
                    evidence.first.signer
                )),
            }
        }
    }

    fn commit(&mut self, node: usize, epoch: u64, block: Block) {
        let hash = block.hash();
        self.nodes[node].disks.entry(epoch).or_default().committed = Some((block.height, hash));
        let base = self.nodes[node].bases[&epoch];
        if block.height > (epoch + 1) * E || block.height <= base.height {
            self.violations.push(format!(
                "node {node} committed height {} in epoch {epoch}, outside {}..={}",
                block.height,
                base.height + 1,
                (epoch + 1) * E
            ));
        }
        if block.height == base.height + 1 && block.parent() != base.hash {
            self.violations.push(format!(
                "epoch {epoch}'s first block does not extend its base"
            ));
        }
        if block.epoch != epoch {
            self.violations.push(format!(
                "epoch {epoch} committed a block of epoch {}",
                block.epoch
            ));
        }
        match self.chain.get(&block.height) {
            Some((other, _)) if *other != hash => self.violations.push(format!(
                "node {node} committed another block at height {}",
                block.height
            )),
            _ => {
                self.chain.insert(block.height, (hash, epoch));
            }
        }
    }

    fn epoch_end(&mut self, node: usize, epoch: u64, base: Base) {
        let ends = self.ends.entry(epoch).or_default();
        if let Some((other_node, other)) = ends.iter().next() {
            if *other != base {
                self.violations.push(format!(
                    "epoch {epoch} ended at {base:?} on node {node}, at {other:?} on node {other_node}"
                ));
            }
        }
        let first = ends.is_empty();
        ends.insert(node, base);
        let next = epoch + 1;
        if next >= EPOCHS {
            return;
        }
        // A member of both epochs starts the next instance from its own commit; joiners learn the base a little
        // later, as a follower reads it from the ledger.
        if Self::member_index(next, node).is_some()
            && !self.nodes[node].instances.contains_key(&next)
        {
            self.start(node, next, base);
        }
        if first {
            for joiner in members_of(next) {
                if Self::member_index(epoch, joiner).is_none() {
                    self.queue.push(
                        self.now + FOLLOW_DELAY_MS,
                        Ev::Learn {
                            node: joiner,
                            epoch: next,
                            base,
                        },
                    );
                }
            }
        }
        // Faults aimed at the next boundary.
        self.plan_faults(next);
    }

    /// At the start of `epoch`, maybe schedules this run's fault around its end.
    fn plan_faults(&mut self, epoch: u64) {
        if epoch != 1 || self.crash_done {
            return;
        }
        self.crash_done = true;
        match self.fault {
            EpochFault::None => {}
            EpochFault::CrashAtBoundary => {
                // Crash a member of epoch 1 soon: blocks come every few tens of ms, so this lands near the end.
                let victim = members_of(1)[self.rng.below(4)];
                let at = self.now + self.rng.range(100, 400);
                let down = self.rng.range(200, 1_500);
                self.queue.push(
                    at,
                    Ev::Crash {
                        node: victim,
                        down_ms: down,
                    },
                );
            }
            EpochFault::SplitAtBoundary => {
                let start = self.now + self.rng.range(50, 300);
                let end = start + self.rng.range(300, 2_000);
                let mut side = members_of(1);
                side.rotate_left(self.rng.below(4));
                side.truncate(2);
                self.split = Some((start, end, side));
            }
        }
    }

    fn run(mut self) -> Run {
        while let Some((at, event)) = self.queue.pop() {
            let all_ended = (0..EPOCHS).all(|e| self.ends.get(&e).is_some_and(|e| e.len() == 4));
            if at > RUN_MS || all_ended {
                break;
            }
            self.now = at;
            match event {
                Ev::Tick(node) => {
                    self.queue.push(self.now + TICK_MS, Ev::Tick(node));
                    if let Some(until) = self.nodes[node].down_until {
                        if self.now < until {
                            continue;
                        }
                        self.nodes[node].down_until = None;
                        // Restart every instance this node ran, from its disk.
                        let epochs: Vec<(u64, Base)> = self.nodes[node]
                            .bases
                            .iter()
                            .map(|(e, b)| (*e, *b))
                            .collect();
                        for (epoch, base) in epochs {
                            self.start(node, epoch, base);
                        }
                    }
                    let epochs: Vec<u64> = self.nodes[node].instances.keys().copied().collect();
                    for epoch in epochs {
                        let now = self.now;
                        let actions = self.nodes[node]
                            .instances
                            .get_mut(&epoch)
                            .expect("listed")
                            .handle(Event::Tick { now_ms: now });
                        self.execute(node, epoch, actions);
                    }
                }
                Ev::Deliver {
                    to,
                    epoch,
                    from,
                    message,
                } => {
                    if self.nodes[to].down_until.is_some() {
                        continue;
                    }
                    let Some(bft) = self.nodes[to].instances.get_mut(&epoch) else {
                        continue; // not started yet: the sender's timeouts and re-sends recover it
                    };
                    let actions = bft.handle(Event::Message {
                        from,
                        message: *message,
                    });
                    self.execute(to, epoch, actions);
                }
                Ev::Learn { node, epoch, base } => {
                    if self.nodes[node].down_until.is_none()
                        && !self.nodes[node].instances.contains_key(&epoch)
                    {
                        self.start(node, epoch, base);
                    }
                }
                Ev::Crash { node, down_ms } => {
                    self.nodes[node].instances.clear();
                    self.nodes[node].down_until = Some(self.now + down_ms);
                }
            }
        }
        self
    }
}
