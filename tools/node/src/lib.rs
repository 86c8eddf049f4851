//! `cas node --config node.toml`: the whole node wired in one place. netio (its own thread) carries peer and
//! client traffic; the driver thread runs the Synchronizer, package availability and the BFT state machine, in
//! that order of ownership, persisting safety state before any vote leaves; the executor thread turns committed
//! blocks into ledger blocks that the shards validate and fsync, then answers clients with final receipts.
//! Optional mining threads (`mining_threads`, at the lowest scheduling priority) build the POW witness chain over
//! the stored blocks; every node validates gossiped witnesses (and a standalone miner's, from `cas mine`) against
//! its own blocks ([`witness`]) and offers the accepted ones to the BFT to carry; the executor mints the witness
//! rewards that mature in the ledger's witness order, rebuilt here from the stored blocks at start.
//! A node too far behind for block catch-up (peers keep `blocks_kept` blocks) installs a snapshot that more than
//! a third of the stake vouches for ([`state_sync`]), with the ledger's witness order at its height; every node
//! serves its own from a thread ([`snapshot_serve`]). A store that starts at an installed snapshot rebuilds the
//! witness order from the one kept at its base (`witness-order-<height>.bin`) and the stored blocks above it.
//! SIGINT or SIGTERM stops intake, lets the executor finish what was committed, writes `status.json`, exits 0.

// The status counters are one `serde_json::json!` object of ~60 fields, deeper than the default macro limit.
#![recursion_limit = "256"]

mod api;
pub use api::HttpThread;
mod behind;
pub mod clients;
pub mod config;
#[cfg(test)]
mod disk_faults;
mod driver;
pub mod durable;
pub mod epochs;
mod executor;
mod follower;
#[cfg(test)]
mod fuzz;
pub mod in_flight;
pub mod journal;
pub mod keyfile;
pub mod ledger_stream;
pub mod memory;
pub mod operator;
pub mod receipt;
mod side_sync;
mod snapshot_serve;
mod state_sync;
pub mod tx_index;
pub mod wire;
pub mod witness;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use cas_consensus::availability::AvailabilityConfig;
use cas_consensus::bft::{Base, BftConfig};
use cas_consensus::committee::Committee;
use cas_consensus::committee::MemberIndex;
use cas_consensus::ledger_cert::LedgerCertifier;
use cas_consensus::messages::Message;
use cas_consensus::rewards::{WitnessOrder, REWARD_CONFIRMATIONS};
use cas_consensus::witness::{WitnessLimits, WitnessParams};
use cas_engine::codec::{decode_block, to_owned_block, to_owned_tx};
use cas_engine::genesis::genesis_committee;
use cas_engine::synchronizer::{Synchronizer, SynchronizerConfig};
use cas_engine::{Block, BlockHash, Keypair, PublicKey};
use serde::Serialize;

use config::NodeConfig;
use driver::Driver;
use durable::{EpochBaseFile, ExecutedFile, WitnessBaseFile};
use epochs::{committee_of, Committees, EpochPlan, Handovers};
use executor::{Executed, Executor};
use journal::Journal;

/// Committed blocks waiting for the executor; when full, consensus waits (back-pressure).
const EXECUTION_QUEUE_MAX: usize = 64;

/// What a node reports about itself, in `status.json` (every second and at exit).
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Status {
    pub height: u64,
    pub utxo_commitment: String,
    pub txs: u64,
    pub rejected: u64,
    pub round: u64,
    pub stopped: bool,
    /// The consensus side's counters (BFT commits, fast commits, timeouts; package availability; admission's
    /// in-flight and overloaded answers), as a JSON object, for operators.
    #[serde(default)]
    pub consensus: serde_json::Value,
    /// The best witness block's height, and the witnesses this node mined, accepted and refused.
    #[serde(default)]
    pub witness_height: u64,
    #[serde(default)]
    pub witness_mined: u64,
    #[serde(default)]
    pub witness_accepted: u64,
    #[serde(default)]
    pub witness_refused: u64,
    /// Nonces this node's miners tried, and witnesses dropped because the witness thread's inbox was full.
    #[serde(default)]
    pub witness_hashes: u64,
    #[serde(default)]
    pub witness_dropped: u64,
    /// CAS minted (witness and block rewards) by the blocks this process executed, and how many witness reward
    /// outputs.
    #[serde(default)]
    pub issued: u64,
    #[serde(default)]
    pub reward_outputs: u64,
    /// CAS the blocks this process executed paid to validators (fee pots and block rewards).
    #[serde(default)]
    pub validator_rewards: u64,
    /// Carried witnesses the ledger's witness order took and skipped; accepted witnesses dropped before the BFT
    /// could carry them (the carry queue was full).
    #[serde(default)]
    pub witnesses_ordered: u64,
    #[serde(default)]
    pub witnesses_skipped: u64,
    #[serde(default)]
    pub witness_carry_dropped: u64,
    /// The newest executed heights with their UTXO commitments (hex), oldest first: nodes stopped a few blocks
    /// apart are compared at a height they all executed.
    #[serde(default)]
    pub recent_commitments: Vec<(u64, String)>,
    /// Snapshots this node installed by state transfer since it started, and the height of the last one.
    #[serde(default)]
    pub snapshot_installs: u64,
    #[serde(default)]
    pub snapshot_installed_height: u64,
    /// Snapshot chunks this node served to peers, and peer requests dropped for a full serving queue.
    #[serde(default)]
    pub snapshot_chunks_served: u64,
    #[serde(default)]
    pub snapshot_requests_dropped: u64,
    /// The committee's ledger certificates: formed here, votes taken, refused, late, diverging from this node's
    /// result, and forged.
    #[serde(default)]
    pub ledger_certs_formed: u64,
    #[serde(default)]
    pub ledger_votes_taken: u64,
    #[serde(default)]
    pub ledger_votes_refused: u64,
    #[serde(default)]
    pub ledger_votes_late: u64,
    #[serde(default)]
    pub ledger_votes_diverging: u64,
    #[serde(default)]
    pub ledger_votes_bad_signatures: u64,
}

/// Checks a node config without starting the node: the file and its field relations, the key file (readable by its
/// owner only, a key of the genesis committee), the genesis, the peers (every other member, once, none a stranger),
/// distinct listen addresses and a writable data folder. Returns a one-line summary; the error says what is wrong in
/// one line.
pub fn check_config(path: &std::path::Path) -> Result<String> {
    let config = NodeConfig::load(path)?;
    let identity = Identity::load(&config)?;
    let Some(me) = identity.me else {
        if config.upstream.is_empty() {
            bail!(
                "this node's key is not in the genesis committee, so it follows the committee, but `upstream` names \
                 no node to follow"
            );
        }
        check_addresses(&config)?;
        check_writable(&config)?;
        return Ok(format!(
            "{}: ok: follower of the {}-member committee on chain {} (upstream {}), key {}, data in {}",
            path.display(),
            identity.committee.size(),
            identity.genesis.header.chain_id,
            config
                .upstream
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            identity.keypair.public().to_hex(),
            config.data_dir.display()
        ));
    };
    let mut peers = std::collections::BTreeSet::new();
    for peer in &config.peers {
        let key = PublicKey::from_hex(&peer.key)
            .with_context(|| format!("peer {}: the key is not 32 hex bytes", peer.addr))?;
        let Some(member) = identity.committee.index_of(&key) else {
            bail!(
                "peer {} ({}) is not a member of the genesis committee",
                peer.addr,
                peer.key
            );
        };
        if member == me {
            bail!("peer {} has this node's own key", peer.addr);
        }
        if !peers.insert(member) {
            bail!("committee member {member} is listed as a peer twice");
        }
    }
    if let Some(missing) = identity
        .committee
        .members()
        .find(|m| *m != me && !peers.contains(m))
    {
        bail!(
            "committee member {missing} ({}) is not among the peers: this node could not reach it",
            identity.keys[missing as usize].to_hex()
        );
    }
    check_addresses(&config)?;
    check_writable(&config)?;
    Ok(format!(
        "{}: ok: member {} of {} on chain {}, key {}, data in {}",
        path.display(),
        me,
        identity.committee.size(),
        identity.genesis.header.chain_id,
        identity.keypair.public().to_hex(),
        config.data_dir.display()
    ))
}

/// No two listeners of a config on one address.
fn check_addresses(config: &NodeConfig) -> Result<()> {
    let mut addresses = vec![
        ("listen", config.listen),
        ("ingest_listen", config.ingest_listen),
    ];
    addresses.extend(config.api_listen.map(|a| ("api_listen", a)));
    addresses.extend(config.operator_listen.map(|a| ("operator_listen", a)));
    for (i, (name, addr)) in addresses.iter().enumerate() {
        if let Some((other, _)) = addresses[..i].iter().find(|(_, a)| a == addr) {
            bail!("{name} and {other} are both {addr}");
        }
    }
    Ok(())
}

/// The data folder, or the nearest existing folder above it, takes a file.
fn check_writable(config: &NodeConfig) -> Result<()> {
    let mut folder = config.data_dir.as_path();
    while !folder.exists() {
        folder = folder
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
    }
    let probe = folder.join(".cas-config-check");
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .with_context(|| {
            format!(
                "data_dir {}: {} is not writable",
                config.data_dir.display(),
                folder.display()
            )
        })?;
    Ok(())
}

/// Runs a node until SIGINT or SIGTERM: its identity and ledger from disk, then the data path's stages in the
/// order a transaction meets them (netio, the driver's admission and consensus, the executor over the shards), with
/// the witness and snapshot-serving threads beside them; then stops them in reverse and writes the final status.
pub fn run(config_path: &std::path::Path) -> Result<()> {
    let config = NodeConfig::load(config_path)?;
    if !config.transparent_huge_pages {
        memory::refuse_transparent_huge_pages();
    }
    let identity = Identity::load(&config)?;
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    // The role follows the committee: a member that leaves it (or falls an epoch behind) follows the certified
    // ledger, a follower elected joins at its epoch's start, each over the same data folder, in this process.
    let mut member = identity.me.is_some();
    // What a member that leaves had admitted and its epoch did not commit: the follower relays it upstream.
    let mut carry = Vec::new();
    loop {
        let next = if member {
            run_member(&config, &identity, &stop)?
        } else {
            follower::run(&config, &identity, &stop, std::mem::take(&mut carry))?
        };
        member = match next {
            Next::Stop => return Ok(()),
            Next::Follow { carried } => {
                carry = carried;
                false
            }
            Next::Join => true,
        };
        tracing::info!(member, "the node changes its role");
    }
}

/// What ends a role's run ([`run`]).
#[derive(Debug)]
pub(crate) enum Next {
    /// A stop signal.
    Stop,
    /// Follow the certified ledger: not in the committee of the next instance, or behind the committee by an epoch.
    /// `carried`: the transactions this node admitted that its epoch did not commit, to relay to the committee.
    Follow {
        carried: Vec<cas_engine::Transaction>,
    },
    /// Join the committee: the ledger here ends at the base of an instance this node is a member of.
    Join,
}

/// A committee member's run (see [`run`]); [`Next::Follow`] at once when the instance serving the next height has
/// another committee.
fn run_member(config: &NodeConfig, identity: &Identity, stop: &Arc<AtomicBool>) -> Result<Next> {
    let fsync = operator::fsync_histogram();
    let (mut ledger, witness_node) = OpenLedger::open(config, identity, &fsync)?;
    ledger.index.fsync = Some(fsync.with_label_values(&["index"]));
    let committed = ledger.consensus_base()?;
    let plan = ledger.epoch_plan(config)?;
    let committees = Arc::new(Committees::default());
    let base_timestamp_ms = ledger.epoch_facts(&committees)?;
    let handovers = identity.handovers(config)?;
    let epoch = plan.instance_of(committed.map_or(0, |(height, _)| height) + 1);
    let (committee, elected) = instance_committee(identity, epoch, &committees)?;
    let me = identity.keypair.public();
    let Some(member) = committee.index_of(&me) else {
        tracing::info!(
            epoch,
            "this node is not in the committee of the epoch its ledger is in: it follows"
        );
        return Ok(Next::Follow {
            carried: Vec::new(),
        });
    };
    let peer_addresses = config.peer_addresses()?;
    let peers = match &elected {
        None => peer_addresses
            .iter()
            .map(|(key, addr)| cas_netio::Peer {
                key: *key,
                addr: *addr,
            })
            .collect(),
        Some(elected) => driver::peers_of(elected, &me, &peer_addresses),
    };
    let (netio, queues) = start_netio(config, &peers)?;
    let witness = WitnessThread::start(identity, &netio, witness_node, &ledger.order)?;
    let stats = Arc::new(Mutex::new(Executed {
        height: ledger.recovery.durable_height,
        utxo_commitment: ledger.recovery.utxo_commitment,
        ..Executed::default()
    }));
    let anchors = Arc::new(snapshot_serve::Anchors::default());
    let waiters = Arc::new(api::Waiters::default());
    let clients = clients::Clients::new(netio.clone(), waiters.clone());
    let index_view = ledger.index.view();
    let (queries, queries_rx) = crossbeam_channel::bounded(api::QUERY_QUEUE_MAX);
    let (ledger_votes, ledger_votes_rx) = crossbeam_channel::bounded(LEDGER_VOTES_QUEUE_MAX);
    let submit_to_final = operator::submit_to_final_histogram();
    let (execution, executor_thread) = start_executor(
        config,
        identity,
        ledger,
        Queues {
            clients: &clients,
            stats: &stats,
            witness: &witness,
            anchors: &anchors,
            netio: &netio,
            queries: queries_rx,
            votes: ledger_votes_rx,
            submit_to_final: submit_to_final.clone(),
        },
        plan,
        committees.clone(),
        handovers.clone(),
    )?;
    let view = Arc::new(Mutex::new(operator::ConsensusView::default()));
    let streams = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let operator = match config.operator_listen {
        Some(listen) => Some(operator::OperatorServer::start(
            listen,
            operator::OperatorState::new(
                identity.genesis.header.chain_id,
                member,
                committee
                    .members()
                    .map(|m| (*committee.key(m).expect("member"), committee.stake(m)))
                    .collect(),
                committee.quorum_stake(),
                netio.clone(),
                stats.clone(),
                view.clone(),
                witness.shared.clone(),
                anchors.clone(),
                config.data_dir.clone(),
                submit_to_final,
                fsync.clone(),
            )
            .with_api(config.api_listen.map(|_| operator::ApiQueues {
                queries: queries.clone(),
                streams: streams.clone(),
                waiters: waiters.clone(),
            })),
        )?),
        None => None,
    };
    let (api_submit, api_submissions) = std::sync::mpsc::sync_channel(api::SUBMIT_QUEUE_MAX);
    let api = match config.api_listen {
        Some(listen) => Some(api::ApiServer::start(
            listen,
            api::ApiState {
                waiters,
                submit: api_submit,
                waker: queues.waker.clone(),
                queries,
                index: index_view.clone(),
                stats: stats.clone(),
                stopping: AtomicBool::new(false),
                forms_certificates: true,
                streams,
                handovers: handovers.clone(),
            },
        )?),
        None => None,
    };
    let (serve, serve_thread) = start_snapshot_server(config, &netio, &anchors)?;
    let mut consensus = ConsensusState::recover(
        config,
        identity,
        committed,
        plan,
        &committees,
        base_timestamp_ms,
    )?;
    consensus.journal.fsync = Some(fsync.with_label_values(&["journal"]));
    let status_path = config.data_dir.join("status.json");
    let upstream_watch = behind::UpstreamWatch::spawn(config.upstream.clone())?;
    let mut driver = Driver::new(driver::Parts {
        instance: consensus.instance,
        maker: consensus.maker,
        committees,
        peer_addresses,
        later_blocks: consensus.later_blocks,
        epoch_bases: consensus.epoch_bases,
        synchronizer: consensus.synchronizer,
        netio,
        queues,
        journal: consensus.journal,
        execution,
        serve,
        anchors: anchors.clone(),
        started: consensus.started,
        started_wall_ms: consensus.started_wall_ms,
        status_path: status_path.clone(),
        stats: stats.clone(),
        witness: witness.shared.clone(),
        witness_inbox: witness.inbox.clone(),
        admission_in_flight_max: config.admission_in_flight_max,
        api_submissions,
        clients,
        index: index_view,
        ledger_votes,
        view,
        upstream_watch: upstream_watch.clone(),
    });
    let miners = witness.spawn_miners(config.mining_threads)?;
    driver.execute(consensus.actions)?;
    driver.flush_outbox()?;
    let ran = driver.run(stop);
    upstream_watch.stop();
    let (round, consensus, next) = ran?;
    // The API first: it holds ends of the driver's and the executor's queues.
    if let Some(api) = api {
        api.stop()?;
    }
    if let Some(operator) = operator {
        operator.stop()?;
    }
    miners.stop()?;
    drop(driver); // closes the execution and serving queues: the executor drains its queue and stops
    join(serve_thread, "snapshot serving")?;
    join(executor_thread, "executor")??;
    let shared = witness.stop()?;
    write_status(
        &status_path,
        &stats,
        &shared,
        &anchors,
        round,
        &consensus,
        matches!(next, Next::Stop),
    )?;
    Ok(next)
}

fn join<T>(thread: std::thread::JoinHandle<T>, name: &str) -> Result<T> {
    thread
        .join()
        .map_err(|_| anyhow::anyhow!("the {name} thread panicked"))
}

/// Who this node is in which chain: its key, the genesis block, the committee and its own place in it.
struct Identity {
    keypair: Keypair,
    genesis: Block,
    witness_span: u32,
    committee: Committee,
    /// This node's place in the committee; none for a follower.
    me: Option<MemberIndex>,
    /// The members' keys, by member index.
    keys: Vec<PublicKey>,
}

impl Identity {
    fn load(config: &NodeConfig) -> Result<Identity> {
        let keypair = keyfile::load(&config.key_file)?;
        let genesis_bytes = std::fs::read(&config.genesis)
            .with_context(|| format!("cannot read genesis {}", config.genesis.display()))?;
        let genesis = to_owned_block(
            decode_block(&genesis_bytes).context("the genesis file is not a block")?,
        );
        let (members, params) =
            genesis_committee(&genesis).context("the genesis block names no committee")?;
        let witness_span = params.witness_span;
        let committee = Committee::new(members.iter().map(|m| (m.key, m.stake)).collect())?;
        let me = committee.index_of(&keypair.public());
        let keys = committee
            .members()
            .map(|m| *committee.key(m).expect("member"))
            .collect();
        Ok(Identity {
            keypair,
            genesis,
            witness_span,
            committee,
            me,
            keys,
        })
    }

    /// The certified hand-overs kept in the data folder, checked from this chain's genesis committee.
    fn handovers(&self, config: &NodeConfig) -> Result<Arc<Handovers>> {
        Ok(Arc::new(Handovers::open(
            &config.data_dir,
            self.genesis.header.chain_id,
            &self.committee,
        )?))
    }

    /// The node's key again, for a component that owns one (a `Keypair` is not `Clone`: each owner loads its own).
    fn key(&self, config: &NodeConfig) -> Result<Keypair> {
        keyfile::load(&config.key_file)
    }
}

/// The ledger as recovered from disk: the shards' durable ledger, the consensus block of its height (from the
/// execution marker) and the ledger's witness order rebuilt from the stored blocks; opened with the node's witness
/// chain, which starts from that order.
struct OpenLedger {
    shards: cas_shards::DurableLedger,
    /// The transaction index, caught up with the stored blocks.
    index: tx_index::TxIndex,
    recovery: cas_shards::Recovery,
    executed_file: ExecutedFile,
    marks: Vec<(u64, BlockHash)>,
    committed: Option<(u64, BlockHash)>,
    previous_ledger_hash: BlockHash,
    order: WitnessOrder,
    witness_base: WitnessBaseFile,
}

impl OpenLedger {
    /// Which instance serves which heights: the genesis's epochs under the config's protocol schedule.
    fn epoch_plan(&self, config: &NodeConfig) -> Result<EpochPlan> {
        let schedule = config
            .protocol_schedule()
            .map_err(|error| anyhow::anyhow!("protocol_upgrades: {error}"))?;
        Ok(EpochPlan::new(
            self.shards.ledger().params.stake.epoch_blocks,
            &schedule,
        ))
    }

    /// What consensus needs from the ledger before the executor takes it: the committees recorded for the epoch of
    /// the next height and the one after (into `committees`), and the timestamp of the last stored block (the base
    /// of an instance that starts above it).
    fn epoch_facts(&self, committees: &Committees) -> Result<u64> {
        let height = self.recovery.durable_height;
        let params = self.shards.ledger().params.stake;
        let epoch = cas_engine::stake::epoch_of(&params, height + 1);
        for epoch in [epoch, epoch + 1] {
            if let Some(members) = executor::read_election(&self.shards, epoch) {
                committees.record(epoch, members);
            }
        }
        if height == 0 {
            return Ok(0);
        }
        let bytes = self
            .shards
            .store()
            .read(height)
            .with_context(|| format!("reading stored block {height}"))?;
        let block = decode_block(&bytes)
            .map_err(|error| anyhow::anyhow!("stored block {height} does not decode: {error}"))?;
        Ok(block.header.timestamp_ms.to_native())
    }

    /// The committed consensus block of the stored ledger's height, from the execution marker: where a member's
    /// consensus resumes. A follower keeps no marker (it applies ledger blocks, not consensus blocks).
    fn consensus_base(&self) -> Result<Option<(u64, BlockHash)>> {
        let durable_height = self.recovery.durable_height;
        if durable_height > 0 && self.committed.is_none() {
            bail!(
                "{}: the execution marker names heights {:?}, not the stored ledger's height {}, so the consensus \
                 block of that height is unknown; {}",
                self.executed_file.path().display(),
                self.marks.iter().map(|(height, _)| *height).collect::<Vec<_>>(),
                durable_height,
                durable::EXECUTED_WAY_OUT
            );
        }
        Ok(self.committed)
    }

    fn open(
        config: &NodeConfig,
        identity: &Identity,
        fsync: &prometheus::HistogramVec,
    ) -> Result<(OpenLedger, witness::WitnessNode)> {
        let ledger_fsync = fsync.with_label_values(&["ledger"]);
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
        // Business transactions are valid from the height of the protocol version that brings them (never while
        // none is scheduled): every node of the committee configures the same schedule, so all judge them alike.
        let business_from = config
            .protocol_schedule()
            .map_err(|error| anyhow::anyhow!("protocol_upgrades: {error}"))?
            .first_height_of(cas_consensus::protocol::PROTOCOL_BUSINESS)
            .unwrap_or(u64::MAX);
        let shards = config.shards.max(1);
        let shards_config = cas_shards::DurableLedgerConfig {
            ledger: cas_shards::LedgerConfig {
                shards,
                pin_cores: config.pin_cores,
                // The executor waits for every lookup and commit: one shard may as well run on its thread.
                on_caller_thread: shards == 1,
                business_from,
            },
            snapshot_every_blocks: config.snapshot_every_blocks.max(1),
            store: cas_shards::StoreConfig {
                on_fsync: Some(cas_shards::store::FsyncObserver(Arc::new(move |took| {
                    ledger_fsync.observe(took.as_secs_f64())
                }))),
                ..cas_shards::StoreConfig::default()
            },
        };
        // The transaction index first: stored blocks it lacks (a crash between a block's fsync and its index
        // record) are indexed from their replay, with the verdicts the replay gives.
        let mut index =
            tx_index::TxIndex::open(&config.data_dir.join("txindex"), config.tx_index_kept)?;
        let replay_from = index.last_height().map(|last| last + 1);
        let mut index_error = None;
        let (shards, recovery) = cas_shards::DurableLedger::open_observed(
            &config.data_dir.join("ledger"),
            &shards_config,
            Some(&identity.genesis),
            replay_from,
            &mut |bytes, outcome| {
                if index_error.is_none() {
                    index_error = index.append_stored(bytes, &outcome.verdicts).err();
                }
            },
        )?;
        if let Some(error) = index_error {
            return Err(error.context("indexing the replayed blocks"));
        }
        if index
            .last_height()
            .is_some_and(|h| h < recovery.durable_height)
        {
            tracing::warn!(
                indexed = index.last_height(),
                durable_height = recovery.durable_height,
                "stored blocks below the recovery snapshot are not in the transaction index: their transactions \
                 answer `unknown`"
            );
        }
        let mut executed_file = ExecutedFile::new(&config.data_dir);
        let marks = executed_file.load()?;
        let committed = marks
            .iter()
            .find(|(height, _)| *height == recovery.durable_height)
            .copied();
        let witness_base = WitnessBaseFile::new(&config.data_dir);
        let order = rebuild_witness_order(identity, &shards, &recovery, &witness_base)?;
        // The node's own witness chain starts as the ledger's (every stored block final in it, every witness the
        // ledger took); witness.bin, compacted to the recent witnesses, is replayed on top.
        let witness_node = witness::WitnessNode::open_with(
            &config.data_dir,
            order.chain().clone(),
            witness::WITNESS_FILE_BYTES_MAX,
        )?;
        let previous_ledger_hash = shards.last_block_hash()?;
        tracing::info!(?recovery, "ledger open");
        let ledger = OpenLedger {
            shards,
            index,
            recovery,
            executed_file,
            marks,
            committed,
            previous_ledger_hash,
            order,
            witness_base,
        };
        Ok((ledger, witness_node))
    }
}

/// The ledger's witness order, rebuilt from the stored blocks (each records the witnesses its consensus block
/// carried and the rewards it minted, checked again here), so a restart never mints twice or differently. A store
/// that starts at an installed snapshot starts from the order that came with it, kept at its base.
fn rebuild_witness_order(
    identity: &Identity,
    shards: &cas_shards::DurableLedger,
    recovery: &cas_shards::Recovery,
    witness_base: &WitnessBaseFile,
) -> Result<WitnessOrder> {
    let witness_params = WitnessParams {
        span: identity.witness_span,
        ..WitnessParams::default()
    };
    let mut order = WitnessOrder::new(
        witness_params,
        WitnessLimits::default(),
        REWARD_CONFIRMATIONS,
    );
    let base_height = shards.store().first_height().saturating_sub(1);
    if base_height > 0 {
        order = order
            .restored(base_height, &witness_base.load(base_height)?)
            .with_context(|| {
                format!("restoring the witness order at the store's base {base_height}")
            })?;
    }
    for height in base_height + 1..=recovery.durable_height {
        let bytes = shards.store().read(height)?;
        let block = decode_block(&bytes)?;
        let last = block.txs.last().map(to_owned_tx);
        order
            .replay_issuance(
                block.header.height.to_native(),
                block.header.timestamp_ms.to_native(),
                block.header.hash(),
                last.as_ref(),
            )
            .context("rebuilding the witness order from the stored blocks")?;
    }
    Ok(order)
}

/// The transport: peers from the config, the client ingest endpoint, and the queues the driver reads.
fn start_netio(
    config: &NodeConfig,
    peers: &[cas_netio::Peer],
) -> Result<(Arc<cas_netio::Node>, cas_netio::InboundQueues)> {
    let (netio, queues) = cas_netio::Node::start(
        cas_netio::NodeConfig {
            keypair: keyfile::load(&config.key_file)?,
            listen: config.listen,
            ingest_listen: Some(config.ingest_listen),
            ingest_limits: Default::default(),
        },
        wire::WireValidator,
    )?;
    netio.set_peers(peers)?;
    Ok((Arc::new(netio), queues))
}

/// The witness thread: it validates gossiped and mined witnesses against the stored blocks, gossips the accepted
/// ones, and answers standalone miners. It ends once every holder of its inbox has dropped it.
struct WitnessThread {
    shared: Arc<witness::WitnessShared>,
    inbox: std::sync::mpsc::SyncSender<witness::WitnessInput>,
    thread: std::thread::JoinHandle<()>,
}

impl WitnessThread {
    fn start(
        identity: &Identity,
        netio: &Arc<cas_netio::Node>,
        node: witness::WitnessNode,
        order: &WitnessOrder,
    ) -> Result<WitnessThread> {
        let shared = Arc::new(witness::WitnessShared::default());
        let (inbox, witness_rx) = std::sync::mpsc::sync_channel(witness::WITNESS_INBOX_MAX);
        let publish: witness::Publish = {
            let netio = netio.clone();
            Arc::new(move |header| {
                let (class, bytes) = wire::encode(0, &Message::Witness(header.clone()));
                for (peer, error) in netio.broadcast(class, bytes) {
                    tracing::debug!(?peer, %error, "witness gossip refused for a peer");
                }
            })
        };
        // Witnesses held here that the ledger's order has not taken yet (mined or heard before a restart) are
        // offered for carrying again; the newest first survive the queue's bound.
        shared.queue_for_carrying(
            node.chain
                .headers()
                .into_iter()
                .filter(|h| !order.chain().contains(&h.hash()))
                .cloned(),
        );
        let answer: witness::AnswerClient = {
            let netio = netio.clone();
            Arc::new(move |client, bytes| {
                if let Err(error) = netio.answer(client, bytes::Bytes::from(bytes)) {
                    tracing::debug!(%client, %error, "mining verdict not delivered");
                }
            })
        };
        let service = witness::WitnessService {
            node,
            shared: shared.clone(),
            publish,
            miner: identity.keypair.public(),
            answer,
        };
        let thread = std::thread::Builder::new()
            .name("cas-witness".into())
            .spawn(move || service.run(witness_rx))?;
        Ok(WitnessThread {
            shared,
            inbox,
            thread,
        })
    }

    fn spawn_miners(&self, count: usize) -> Result<Miners> {
        let stop = Arc::new(AtomicBool::new(false));
        let threads =
            witness::spawn_miners(count, self.shared.clone(), self.inbox.clone(), stop.clone())?;
        Ok(Miners { stop, threads })
    }

    /// Drops this inbox and waits for the thread; the driver, the executor and the miners must be gone.
    fn stop(self) -> Result<Arc<witness::WitnessShared>> {
        drop(self.inbox);
        join(self.thread, "witness")?;
        Ok(self.shared)
    }
}

/// Mining threads (`mining_threads`, at the lowest scheduling priority) and their stop flag.
struct Miners {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Miners {
    fn stop(self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        for miner in self.threads {
            join(miner, "mining")?;
        }
        Ok(())
    }
}

/// Peers' ledger votes waiting for the executor: a few blocks' worth from every member. A full queue drops a vote
/// (counted): a certificate needs only a quorum of them.
const LEDGER_VOTES_QUEUE_MAX: usize = 4_096;

/// What the executor thread is connected to.
struct Queues<'a> {
    clients: &'a clients::Clients,
    stats: &'a Arc<Mutex<Executed>>,
    witness: &'a WitnessThread,
    anchors: &'a Arc<snapshot_serve::Anchors>,
    netio: &'a Arc<cas_netio::Node>,
    queries: crossbeam_channel::Receiver<api::LedgerQuery>,
    votes: crossbeam_channel::Receiver<(PublicKey, executor::PeerVote)>,
    submit_to_final: prometheus::Histogram,
}

/// The executor thread over the shards' ledger, fed committed blocks through a bounded queue.
fn start_executor(
    config: &NodeConfig,
    identity: &Identity,
    ledger: OpenLedger,
    queues: Queues<'_>,
    plan: EpochPlan,
    committees: Arc<Committees>,
    handovers: Arc<Handovers>,
) -> Result<(
    crossbeam_channel::Sender<executor::Work>,
    std::thread::JoinHandle<Result<()>>,
)> {
    let (execution, execution_rx) = crossbeam_channel::bounded(EXECUTION_QUEUE_MAX);
    let Queues {
        clients,
        stats,
        witness,
        anchors,
        netio,
        queries,
        votes,
        submit_to_final,
    } = queues;
    // The certifier of the instance serving the next height; the executor switches to the committee of the
    // instance serving each height it executes (at its first block).
    let durable_height = ledger.recovery.durable_height;
    let epoch = plan.instance_of(durable_height + 1);
    let (committee, _) = instance_committee(identity, epoch, &committees)?;
    let certifier = LedgerCertifier::new(
        committee.clone(),
        committee
            .index_of(&identity.keypair.public())
            .context("this node is no member of its instance's committee")?,
        identity.key(config)?,
        epoch,
        durable_height,
    );
    let mut executor = Executor {
        node: ledger.shards,
        chain_id: identity.genesis.header.chain_id,
        executed_file: ledger.executed_file,
        executed_marks: ledger.marks,
        previous_ledger_hash: ledger.previous_ledger_hash,
        clients: clients.clone(),
        index: ledger.index,
        stats: stats.clone(),
        witness: witness.inbox.clone(),
        order: ledger.order,
        anchors: anchors.clone(),
        witness_base: ledger.witness_base,
        certifier,
        ended_certifier: None,
        certifier_before: Default::default(),
        plan,
        committees,
        genesis_committee: identity.committee.clone(),
        keypair: identity.key(config)?,
        handover: None,
        handover_votes: Default::default(),
        early_handover_votes: Vec::new(),
        handovers,
        netio: netio.clone(),
        submit_to_final,
    };
    // Restarted after the next committee's election but before its hand-over formed here: sign it again (members
    // that formed it answer with their votes).
    if let Some(next) = plan.next(epoch) {
        executor.start_handover(next)?;
    }
    let thread = std::thread::Builder::new()
        .name("cas-executor".into())
        .spawn(move || executor.run(execution_rx, queries, votes))?;
    Ok((execution, thread))
}

/// Peers' snapshot requests on their way to the serving thread.
type ServeQueue = std::sync::mpsc::SyncSender<(PublicKey, u64, snapshot_serve::ServeRequest)>;

/// The thread that serves this node's snapshots to peers, fed through a bounded queue.
fn start_snapshot_server(
    config: &NodeConfig,
    netio: &Arc<cas_netio::Node>,
    anchors: &Arc<snapshot_serve::Anchors>,
) -> Result<(ServeQueue, std::thread::JoinHandle<()>)> {
    let (serve, serve_rx) = std::sync::mpsc::sync_channel(snapshot_serve::SERVE_QUEUE_MAX);
    let server = snapshot_serve::SnapshotServer {
        snapshot_dir: config.data_dir.join("ledger").join("snapshots"),
        anchors: anchors.clone(),
        netio: netio.clone(),
        cached: None,
    };
    let thread = std::thread::Builder::new()
        .name("cas-snapshot-serve".into())
        .spawn(move || server.run(serve_rx))?;
    Ok((serve, thread))
}

/// The driver's consensus state recovered from disk: the BFT from the safety state and the journal's blocks,
/// package availability from the journal's packages, a fresh Synchronizer and state-sync fetcher.
struct ConsensusState {
    instance: driver::Instance,
    /// What the instance asks for on start (its first round's messages), executed before the driver's loop.
    actions: Vec<cas_consensus::Action>,
    maker: driver::InstanceMaker,
    /// Journal blocks of the instances after the recovered one.
    later_blocks: Vec<cas_consensus::messages::Block>,
    epoch_bases: EpochBaseFile,
    synchronizer: Synchronizer,
    journal: Journal,
    started: Instant,
    started_wall_ms: u64,
}

impl ConsensusState {
    /// Recovers the instance serving the height after `committed` (the last executed block): its committee (the
    /// genesis one, or the one the ledger elected, in `committees`), its base (genesis; the executed block itself
    /// when it is the last of the epoch before, its timestamp `base_timestamp_ms`; else the base kept when this
    /// node handed over), its safety state and its blocks from the journal.
    fn recover(
        config: &NodeConfig,
        identity: &Identity,
        committed: Option<(u64, BlockHash)>,
        plan: EpochPlan,
        committees: &Committees,
        base_timestamp_ms: u64,
    ) -> Result<ConsensusState> {
        let started = Instant::now();
        let started_wall_ms = witness::wall_ms();
        let (journal, replayed) = Journal::open(&config.data_dir.join("journal"))?;
        tracing::info!(
            packages = replayed.packages.len(),
            blocks = replayed.blocks.len(),
            truncated = replayed.truncated,
            "journal read back"
        );
        let height = committed.map_or(0, |(height, _)| height);
        let epoch = plan.instance_of(height + 1);
        let mut epoch_bases = EpochBaseFile::new(&config.data_dir);
        let (committee, _) = instance_committee(identity, epoch, committees)?;
        let members = committee.size();
        // Instances before this one ended at or below the executed height: none will run again here.
        remove_safety_files_before(&config.data_dir, epoch);
        let base = match (epoch, committed) {
            (0, _) => Base::GENESIS,
            (epoch, Some((height, hash))) => {
                if height == plan.base_height(epoch) {
                    Base {
                        height,
                        hash,
                        timestamp_ms: base_timestamp_ms,
                    }
                } else {
                    epoch_bases
                        .load()?
                        .into_iter()
                        .find(|(e, _)| *e == epoch)
                        .map(|(_, base)| base)
                        .with_context(|| {
                            format!(
                                "the ledger is inside epoch {epoch} (height {height}) but this node kept no base \
                                 for it; {}",
                                durable::EXECUTED_WAY_OUT
                            )
                        })?
                }
            }
            (epoch, None) => bail!("epoch {epoch} serves height 1: no epoch plan does that"),
        };
        let maker = driver::InstanceMaker {
            keypair: identity.key(config)?,
            bft: BftConfig {
                blocks_kept: config.blocks_kept.max(1),
                round_timeout_ms: config.round_timeout_ms,
                round_timeout_max_ms: config.round_timeout_ms * 8,
                empty_block_wait_ms: config.empty_block_wait_ms,
                protocol: config
                    .protocol_schedule()
                    .map_err(|error| anyhow::anyhow!("protocol_upgrades: {error}"))?,
                ..BftConfig::default()
            },
            waits: config.waits(),
            availability: AvailabilityConfig::default(),
            snapshot_sync_gap_blocks: config.snapshot_sync_gap_blocks,
            data_dir: config.data_dir.clone(),
            plan,
        };
        let (blocks, later_blocks) = driver::split_epoch_blocks(replayed.blocks, epoch);
        let (instance, actions) = maker.start(
            epoch,
            committee,
            base,
            committed,
            blocks,
            replayed.packages,
            started_wall_ms,
        )?;
        let synchronizer = Synchronizer::new(SynchronizerConfig {
            package_txs_max: config.package_txs_max,
            package_wait_ms: maker.waits.package_ms(members),
            ..SynchronizerConfig::new(identity.genesis.header.chain_id)
        });
        Ok(ConsensusState {
            instance,
            actions,
            maker,
            later_blocks,
            epoch_bases,
            synchronizer,
            journal,
            started,
            started_wall_ms,
        })
    }
}

fn write_status(
    path: &std::path::Path,
    stats: &Mutex<Executed>,
    witness: &witness::WitnessShared,
    anchors: &snapshot_serve::Anchors,
    round: u64,
    consensus: &serde_json::Value,
    stopped: bool,
) -> Result<()> {
    let stats = stats.lock().expect("stats lock").clone();
    let status = Status {
        height: stats.height,
        utxo_commitment: stats.utxo_commitment.to_hex(),
        txs: stats.txs,
        rejected: stats.rejected,
        round,
        stopped,
        consensus: consensus.clone(),
        witness_height: witness.best_height.load(Ordering::Relaxed),
        witness_mined: witness.mined.load(Ordering::Relaxed),
        witness_accepted: witness.accepted.load(Ordering::Relaxed),
        witness_refused: witness.refused.load(Ordering::Relaxed),
        witness_hashes: witness.hashes.load(Ordering::Relaxed),
        witness_dropped: witness.dropped.load(Ordering::Relaxed),
        issued: stats.issued,
        reward_outputs: stats.reward_outputs,
        validator_rewards: stats.validator_rewards,
        witnesses_ordered: stats.witnesses_ordered,
        witnesses_skipped: stats.witnesses_skipped,
        witness_carry_dropped: witness.carry_dropped.load(Ordering::Relaxed),
        recent_commitments: stats
            .recent_commitments
            .iter()
            .map(|(height, commitment)| (*height, commitment.to_hex()))
            .collect(),
        snapshot_installs: stats.snapshot_installs,
        snapshot_installed_height: stats.snapshot_installed_height,
        snapshot_chunks_served: anchors.served_chunks.load(Ordering::Relaxed),
        snapshot_requests_dropped: anchors.dropped.load(Ordering::Relaxed),
        ledger_certs_formed: stats.certifier.certs_formed,
        ledger_votes_taken: stats.certifier.votes_taken,
        ledger_votes_refused: stats.certifier.votes_refused,
        ledger_votes_late: stats.certifier.votes_late,
        ledger_votes_diverging: stats.certifier.votes_diverging,
        ledger_votes_bad_signatures: stats.certifier.bad_signatures,
    };
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, serde_json::to_vec_pretty(&status)?)?;
    std::fs::rename(&temporary, path)?;
    Ok(())
}

/// The committee of instance `epoch` (the genesis one, or the one the ledger elected, from `committees`) and, for an
/// elected one, its members as the ledger recorded them.
fn instance_committee(
    identity: &Identity,
    epoch: u64,
    committees: &Committees,
) -> Result<(Committee, Option<Vec<cas_engine::stake::Candidate>>)> {
    if epoch == 0 {
        return Ok((identity.committee.clone(), None));
    }
    let elected = committees
        .get(epoch)
        .with_context(|| format!("the ledger here holds no committee for epoch {epoch}"))?;
    let committee = committee_of(&elected)
        .map_err(|error| anyhow::anyhow!("epoch {epoch}'s committee: {error}"))?;
    Ok((committee, Some(elected)))
}

/// Removes the safety files of the instances before `epoch` (`safety-<e>.bin`, e < epoch; the genesis committee's
/// `safety.bin` stays, small and the one an old data folder has).
fn remove_safety_files_before(data_dir: &std::path::Path, epoch: u64) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(e) = name
            .to_str()
            .and_then(|n| n.strip_prefix("safety-"))
            .and_then(|n| n.strip_suffix(".bin"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if e < epoch {
            if let Err(error) = std::fs::remove_file(entry.path()) {
                tracing::warn!(path = %entry.path().display(), %error, "an old safety file is not removed");
            }
        }
    }
}
