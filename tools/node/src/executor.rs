//! The execution side of a node: committed consensus blocks, with their packages, become ledger blocks that the
//! shards validate and store durably (fsync) in height order; only then are the receipts sent to the clients that
//! submitted the transactions here. Runs on its own thread, fed by a bounded queue (back-pressure to consensus).
//! It also keeps the ledger's witness order ([`WitnessOrder`]): the witness headers each committed block carries go
//! into it in block order, and the rewards that mature are minted by the issuance transaction it appends last to
//! every ledger block, byte-identical on every node. After each block it signs its result for the committee's
//! ledger certificate ([`LedgerCertifier`]) and keeps the certificates that form in the index (settlement receipts).

use crossbeam_channel::Receiver;
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use cas_consensus::committee::MemberIndex;
use cas_consensus::ledger_cert::{
    results_root, CertifierStats, CommitteeHandover, HandoverSigning, HandoverVote,
    LedgerCertifier, LedgerStatement, LedgerVote,
};
use cas_consensus::messages::{Block as ConsensusBlock, Message};
use cas_consensus::rewards::{issuance_tx, Validators, WitnessOrder};
use cas_engine::block::signatures_root;
use cas_engine::client::{ClientAnswer, RuleFailure};
use cas_engine::codec::encode_block;
use cas_engine::rules::fee_pot_outpoint;
use cas_engine::stake::{elected_committee, elects_at, epoch_of, validator_payouts, Candidate};
use cas_engine::{merkle, Block, BlockHash, BlockHeader, Hash32, PublicKey, Transaction};

use crate::api::{GovernanceView, LedgerQuery, StakeView};
use crate::clients::{Client, Clients};
use crate::durable::{ExecutedFile, WitnessBaseFile};
use crate::epochs::{committee_of, Committees, EpochPlan, Handovers};
use crate::snapshot_serve::{Anchor, Anchors};
use crate::state_sync::Install;
use crate::tx_index::{Claim, TxIndex};
use crate::witness::WitnessInput;

/// A peer's vote the executor takes: on a block's result, or on the hand-over to the next committee.
pub enum PeerVote {
    Ledger(LedgerVote),
    Handover(HandoverVote),
}

/// Hand-over votes held for a hand-over this node has not reached yet (its executor is behind the sender's).
const EARLY_HANDOVER_VOTES_MAX: usize = 64;

/// What the driver hands the executor, in commit order.
pub enum Work {
    Block(Committed),
    /// A verified snapshot to install as the new base (the BFT continues from its height).
    Install(Install),
}

/// One committed block ready to execute: its transactions in order, and who submitted each here.
pub struct Committed {
    pub block: ConsensusBlock,
    pub proposer: PublicKey,
    pub txs: Vec<Transaction>,
    /// The ids of `txs`, computed once by the driver.
    pub ids: Vec<cas_engine::TxId>,
    pub clients: Vec<Option<Client>>,
    /// When this node admitted each of `txs` (driver clock, ms; 0 when another node admitted it).
    pub admitted_ms: Vec<u64>,
    /// Every package's certificate is attested: the signatures were verified by an honest member already.
    pub attested: bool,
}

/// Recent (height, UTXO commitment) pairs kept for the status file, so nodes stopped a few blocks apart can
/// still be compared at one height.
pub const RECENT_COMMITMENTS_MAX: usize = 16;

/// What the executor reports back (for `cas local`'s summary and the node's status file).
#[derive(Clone, Debug, Default)]
pub struct Executed {
    pub height: u64,
    pub utxo_commitment: Hash32,
    /// Client transactions executed and rejected (the executor's own issuance is not counted).
    pub txs: u64,
    pub rejected: u64,
    /// CAS minted (witness rewards, block rewards) by the blocks executed since this process started, and the
    /// witness reward outputs.
    pub issued: u64,
    pub reward_outputs: u64,
    /// CAS paid to validators (fee pots and block rewards) by the blocks executed since this process started.
    pub validator_rewards: u64,
    /// Carried witness headers the witness order took and skipped (invalid, duplicate, too late).
    pub witnesses_ordered: u64,
    pub witnesses_skipped: u64,
    /// The newest [`RECENT_COMMITMENTS_MAX`] heights and their commitments, oldest first.
    pub recent_commitments: std::collections::VecDeque<(u64, Hash32)>,
    /// Snapshots installed by state transfer since start, and the height of the last one.
    pub snapshot_installs: u64,
    pub snapshot_installed_height: u64,
    /// The ledger certifier's counters.
    pub certifier: CertifierStats,
    /// Client transactions the rules rejected, by code.
    pub rejected_by_code: std::collections::BTreeMap<u16, u64>,
}

pub struct Executor {
    pub node: cas_shards::DurableLedger,
    pub chain_id: u32,
    pub executed_file: ExecutedFile,
    /// The last two (height, consensus hash) handed to execution.
    pub executed_marks: Vec<(u64, BlockHash)>,
    pub previous_ledger_hash: BlockHash,
    /// Where final receipts go (QUIC clients and HTTP requests).
    pub clients: Clients,
    /// Each block's transactions and verdicts, durable before its receipts leave.
    pub index: TxIndex,
    pub stats: Arc<std::sync::Mutex<Executed>>,
    /// Each stored block's hash goes to the witness thread (what miners commit to and validators check against).
    /// A bounded queue to a normal-priority thread: a full one makes the executor wait, never lose a hash.
    pub witness: std::sync::mpsc::SyncSender<WitnessInput>,
    /// The ledger's witness order, rebuilt from the stored blocks at start (see [`WitnessOrder::replay`]).
    pub order: WitnessOrder,
    /// Block hashes at this node's snapshot heights, for serving its snapshots to peers.
    pub anchors: Arc<Anchors>,
    /// Where the witness order state at an installed snapshot's height is kept for restarts.
    pub witness_base: WitnessBaseFile,
    /// Collects the committee's votes on each executed block's result: the committee of the instance serving the
    /// last executed height ([`EpochPlan`]).
    pub certifier: LedgerCertifier,
    /// The certifier of the instance before, and its last height, kept for the votes on its last blocks that
    /// arrive after this node executed past them.
    pub ended_certifier: Option<(u64, LedgerCertifier)>,
    /// The counts of the certifiers dropped before those two.
    pub certifier_before: CertifierStats,
    /// Which instance serves which heights, the committees the ledger elected (recorded here for the driver), the
    /// genesis committee, and this node's key (to sign as a member of each).
    pub plan: EpochPlan,
    pub committees: Arc<Committees>,
    pub genesis_committee: cas_consensus::committee::Committee,
    pub keypair: cas_engine::Keypair,
    /// The current committee's signatures on the hand-over to the next one, while they are collected; this
    /// node's own vote on each hand-over (sent again to a member that asks after it formed); votes that came
    /// before this node recorded the election; and the certified hand-overs (receipts carry them).
    pub handover: Option<HandoverSigning>,
    pub handover_votes: std::collections::BTreeMap<u64, HandoverVote>,
    pub early_handover_votes: Vec<(PublicKey, HandoverVote)>,
    pub handovers: Arc<Handovers>,
    /// Where this node's ledger votes go out.
    pub netio: Arc<cas_netio::Node>,
    /// Admission to final of the transactions admitted here (the operator's `/metrics`).
    pub submit_to_final: prometheus::Histogram,
}

impl Executor {
    /// Executes what the driver hands over until it closes the queue; the client API's reads (`queries`) are
    /// answered only when no committed block waits, so readers, however many, never hold up the ledger or, through
    /// the full execution queue, consensus.
    /// Peers' ledger votes (`votes`) are taken before each block and whenever nothing else waits.
    pub fn run(
        mut self,
        queue: Receiver<Work>,
        queries: Receiver<LedgerQuery>,
        votes: Receiver<(PublicKey, PeerVote)>,
    ) -> Result<()> {
        let mut queries = queries;
        let mut votes = votes;
        loop {
            while let Ok((sender, vote)) = votes.try_recv() {
                self.on_vote(sender, vote)?;
            }
            let work = match queue.try_recv() {
                Ok(work) => Some(work),
                Err(crossbeam_channel::TryRecvError::Disconnected) => break,
                Err(crossbeam_channel::TryRecvError::Empty) => {
                    crossbeam_channel::select! {
                        recv(queue) -> work => match work {
                            Ok(work) => Some(work),
                            Err(_) => break,
                        },
                        recv(queries) -> query => {
                            match query {
                                Ok(query) => self.answer(query),
                                // The API stopped: nothing more will come from it.
                                Err(_) => queries = crossbeam_channel::never(),
                            }
                            None
                        }
                        recv(votes) -> vote => {
                            match vote {
                                Ok((sender, vote)) => self.on_vote(sender, vote)?,
                                Err(_) => votes = crossbeam_channel::never(),
                            }
                            None
                        }
                    }
                }
            };
            match work {
                Some(Work::Block(committed)) => self.execute(committed)?,
                Some(Work::Install(install)) => self.install(install)?,
                None => {}
            }
        }
        self.node
            .wait_snapshot()
            .context("finishing the last snapshot")?;
        self.index.sync().context("syncing the index")?;
        Ok(())
    }

    fn on_vote(&mut self, sender: PublicKey, vote: PeerVote) -> Result<()> {
        match vote {
            PeerVote::Ledger(vote) => self.on_ledger_vote(sender, vote),
            PeerVote::Handover(vote) => self.on_handover_vote(sender, vote),
        }
    }

    /// Starts collecting the signatures on the hand-over to `epoch` (when it is the next instance's, its election
    /// is recorded and it is not held yet): this member signs the committee and its first height, and sends its vote
    /// to the committee.
    pub fn start_handover(&mut self, epoch: u64) -> Result<()> {
        if self.plan.next(self.certifier.epoch()) != Some(epoch)
            || self.handovers.has(epoch)
            || self.handover.as_ref().is_some_and(|h| h.epoch() == epoch)
        {
            return Ok(());
        }
        let Some(elected) = read_election(&self.node, epoch) else {
            return Ok(());
        };
        let committee = self.certifier.committee().clone();
        let Some(me) = committee.index_of(&self.keypair.public()) else {
            return Ok(());
        };
        let proposal = CommitteeHandover {
            chain_id: self.chain_id,
            epoch,
            first_height: self.plan.base_height(epoch) + 1,
            members: elected.iter().map(|m| (m.key, m.stake)).collect(),
            signatures: Vec::new(),
        };
        let (signing, vote) = HandoverSigning::new(committee, me, &self.keypair, proposal);
        self.handover = Some(signing);
        self.handover_votes.insert(epoch, vote);
        while self.handover_votes.len() > 2 {
            self.handover_votes.pop_first();
        }
        let (class, bytes) =
            crate::wire::encode(self.certifier.epoch(), &Message::HandoverVote(vote));
        for (peer, error) in self.netio.broadcast(class, bytes) {
            tracing::debug!(?peer, %error, "hand-over vote refused for a peer");
        }
        for (sender, vote) in std::mem::take(&mut self.early_handover_votes) {
            self.on_handover_vote(sender, vote)?;
        }
        Ok(())
    }

    /// A peer's vote on a hand-over. For one this node certified already, its own vote goes back to the sender (a
    /// member that restarted before it formed asks again); for one it has not reached, it waits (bounded).
    fn on_handover_vote(&mut self, sender: PublicKey, vote: HandoverVote) -> Result<()> {
        if self.handovers.has(vote.epoch) {
            if let Some(own) = self.handover_votes.get(&vote.epoch) {
                let (class, bytes) =
                    crate::wire::encode(self.certifier.epoch(), &Message::HandoverVote(*own));
                if let Err(error) = self.netio.try_send(&sender, class, bytes) {
                    tracing::debug!(%error, "hand-over vote not sent back");
                }
            }
            return Ok(());
        }
        let Some(signing) = self.handover.as_mut().filter(|h| h.epoch() == vote.epoch) else {
            if vote.epoch > self.certifier.epoch()
                && self.early_handover_votes.len() < EARLY_HANDOVER_VOTES_MAX
            {
                self.early_handover_votes.push((sender, vote));
            }
            return Ok(());
        };
        if self.certifier.committee().key(vote.signer) != Some(&sender) {
            return Ok(());
        }
        match signing.on_vote(&vote) {
            Ok(Some(handover)) => {
                tracing::info!(
                    epoch = handover.epoch,
                    first_height = handover.first_height,
                    signers = handover.signatures.len(),
                    "the hand-over to the next committee is certified"
                );
                self.handovers.add(handover)?;
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%sender, %error, "a hand-over vote refused"),
        }
        Ok(())
    }

    /// A peer's vote on a block's result, taken by the certifier of its height's committee when `sender` is the
    /// member it names (a member signs its own result, never relays another's).
    fn on_ledger_vote(&mut self, sender: PublicKey, vote: LedgerVote) -> Result<()> {
        let certifier = match &mut self.ended_certifier {
            Some((last, ended)) if vote.height <= *last => ended,
            _ => &mut self.certifier,
        };
        if certifier.committee().key(vote.signer) != Some(&sender) {
            certifier.stats.votes_refused += 1;
            return Ok(());
        }
        let (_, cert) = certifier.on_vote(vote);
        self.certified(cert)
    }

    /// Before executing `height`: the certifier of the instance that serves it (a new one at the first height of an
    /// instance, from the committee the ledger elected for it).
    pub fn certifier_for(&mut self, height: u64) -> Result<()> {
        let epoch = self.plan.instance_of(height);
        if epoch == self.certifier.epoch() {
            return Ok(());
        }
        let committee = match epoch {
            0 => self.genesis_committee.clone(),
            epoch => {
                let elected = read_election(&self.node, epoch).with_context(|| {
                    format!("block {height}: the ledger holds no committee for epoch {epoch}")
                })?;
                committee_of(&elected)
                    .map_err(|error| anyhow::anyhow!("epoch {epoch}'s committee: {error}"))?
            }
        };
        let me = committee
            .index_of(&self.keypair.public())
            .with_context(|| {
                format!("block {height}: this node is no member of epoch {epoch}'s committee")
            })?;
        let certifier = LedgerCertifier::new(
            committee,
            me,
            cas_engine::Keypair::from_seed(&self.keypair.seed()),
            epoch,
            height - 1,
        );
        let ended = std::mem::replace(&mut self.certifier, certifier);
        if let Some((_, dropped)) = self.ended_certifier.replace((height - 1, ended)) {
            self.certifier_before.add(&dropped.stats);
        }
        Ok(())
    }

    /// Keeps a certificate that formed, and the certifier's counters for the status.
    fn certified(&mut self, cert: Option<cas_consensus::ledger_cert::LedgerCert>) -> Result<()> {
        if let Some(cert) = cert {
            self.index.append_cert(&cert).with_context(|| {
                format!(
                    "keeping the ledger certificate of block {}",
                    cert.statement.height
                )
            })?;
        }
        let mut stats = self.certifier_before;
        stats.add(&self.certifier.stats);
        if let Some((_, ended)) = &self.ended_certifier {
            stats.add(&ended.stats);
        }
        self.stats.lock().expect("stats lock").certifier = stats;
        Ok(())
    }

    /// Answers a client API read at the executed height (a requester that left gets nothing).
    fn answer(&self, query: LedgerQuery) {
        answer_query(&self.node, query)
    }

    /// Installs a verified snapshot as the ledger's new base. The execution marker names its consensus block first,
    /// so a restart after the install resumes consensus from there.
    fn install(&mut self, install: Install) -> Result<()> {
        let Install {
            info,
            snapshot,
            witness_state,
        } = install;
        if info.height <= self.node.height() {
            tracing::info!(
                height = info.height,
                executed = self.node.height(),
                "snapshot no longer ahead of execution; not installed"
            );
            return Ok(());
        }
        // The witness order after the snapshot height comes with it (its hash vouched for with the set): without
        // it this node would mint other rewards than its peers from the next block on.
        let order = match self.order.restored(info.height, &witness_state) {
            Ok(order) => order,
            Err(error) => {
                tracing::error!(height = info.height, %error, "the snapshot's witness order does not restore; not installed");
                return Ok(());
            }
        };
        // Kept before the store moves to the new base, so a restart at that base finds it.
        self.witness_base
            .store(info.height, &witness_state)
            .context("storing the witness order at the snapshot height")?;
        self.executed_marks.push((info.height, info.consensus_hash));
        if self.executed_marks.len() > 2 {
            self.executed_marks.remove(0);
        }
        self.executed_file.store(&self.executed_marks)?;
        self.node
            .install_snapshot(snapshot, info.ledger_hash)
            .with_context(|| format!("installing the snapshot at height {}", info.height))?;
        self.witness_base.keep_only(info.height);
        self.order = order;
        self.previous_ledger_hash = info.ledger_hash;
        self.anchors.record(
            info.height,
            Anchor::new(info.ledger_hash, info.consensus_hash, witness_state),
        );
        if self
            .witness
            .send(WitnessInput::Reseed(Box::new(self.order.chain().clone())))
            .is_err()
        {
            tracing::warn!("the witness thread stopped");
        }
        tracing::warn!(
            height = info.height,
            commitment = %info.commitment,
            "installed a snapshot from the committee; catching up from the next block"
        );
        let mut stats = self.stats.lock().expect("stats lock");
        stats.height = info.height;
        stats.utxo_commitment = info.commitment;
        stats.snapshot_installs += 1;
        stats.snapshot_installed_height = info.height;
        Ok(())
    }

    /// What block `height`'s issuance pays the validators and reports: the previous block's fee pot (if it has one)
    /// plus the block reward, split by [`validator_payouts`] between the members whose votes certified the previous
    /// block (the certificate this block carries) and the POS nodes, as the ledger holds them now, leaving out the
    /// blacklisted; and the members absent from that certificate, when it is this committee's own (it holds a
    /// quorum of its stake: the first block of an instance carries its base's, signed by nobody). Also the pot's
    /// amount.
    fn validators_for(&self, height: u64, committed: &Committed) -> Result<(u64, Validators)> {
        let ledger = self.node.ledger();
        let pot_outpoint = fee_pot_outpoint(height - 1);
        let pot = ledger
            .get(&pot_outpoint)?
            .map(|entry| (pot_outpoint, entry.amount));
        let committee = self.certifier.committee();
        let signers: Vec<MemberIndex> = committed
            .block
            .qc
            .signatures
            .iter()
            .map(|s| s.signer)
            .filter(|signer| committee.key(*signer).is_some())
            .collect();
        let signed: u64 = signers.iter().map(|s| committee.stake(*s)).sum();
        let absent = (signed >= committee.quorum_stake()).then(|| {
            let mut voted = vec![false; committee.size()];
            signers.iter().for_each(|s| voted[usize::from(*s)] = true);
            committee
                .members()
                .filter(|member| !voted[usize::from(*member)])
                .filter_map(|member| committee.key(member).copied())
                .collect()
        });
        let registry = ledger.stake();
        let voters: Vec<(PublicKey, u64)> = signers
            .iter()
            .filter_map(|s| committee.key(*s).map(|key| (*key, committee.stake(*s))))
            .filter(|(key, _)| registry.rewarded(key, height))
            .collect();
        let params = ledger.params.stake;
        let pos: Vec<(PublicKey, u64)> = registry
            .pos_nodes(&params)
            .filter(|c| registry.rewarded(&c.key, height))
            .map(|c| (c.key, c.stake))
            .collect();
        let pot_amount = pot.map_or(0, |(_, amount)| amount);
        let payouts = validator_payouts(
            &params,
            pot_amount + params.block_reward,
            &voters,
            &pos,
            committed.proposer,
        );
        Ok((
            pot_amount,
            Validators {
                pot: pot.map(|(outpoint, _)| outpoint),
                payouts,
                absent,
            },
        ))
    }

    fn execute(&mut self, committed: Committed) -> Result<()> {
        let height = committed.block.height;
        if height <= self.node.height() {
            // Committed below a snapshot installed meanwhile: the set already includes it.
            tracing::debug!(
                height,
                "committed block below the installed snapshot skipped"
            );
            return Ok(());
        }
        ensure!(
            height == self.order.executed_height() + 1,
            "block {height} follows executed height {}",
            self.order.executed_height()
        );
        self.certifier_for(height)?;
        // Mark first: after a crash, whichever height the store ends at, its consensus hash is on disk.
        let consensus_hash = committed.block.hash();
        self.executed_marks.push((height, consensus_hash));
        if self.executed_marks.len() > 2 {
            self.executed_marks.remove(0);
        }
        self.executed_file.store(&self.executed_marks)?;
        let carried = &committed.block.witnesses;
        let witnesses = self
            .order
            .execute(height, committed.block.timestamp_ms, carried);
        for (index, error) in &witnesses.skipped {
            tracing::debug!(height, index, %error, "a carried witness is skipped by the witness order");
        }
        let witness_minted: u64 = witnesses.rewards.iter().map(|r| r.amount).sum();
        let (pot, validators) = self.validators_for(height, &committed)?;
        let paid: u64 = validators.payouts.iter().map(|(_, amount)| amount).sum();
        let minted = witness_minted + paid - pot;
        let client_txs = committed.txs.len();
        let mut txs = committed.txs;
        let issuance = issuance_tx(
            self.chain_id,
            height,
            carried,
            &witnesses.rewards,
            validators,
        );
        let mut ids = committed.ids;
        debug_assert_eq!(ids.len(), txs.len());
        ids.push(issuance.tx_id());
        txs.push(issuance);
        let block = Block {
            header: BlockHeader {
                chain_id: self.chain_id,
                height,
                round: committed.block.round,
                parent: self.previous_ledger_hash,
                tx_root: merkle::root(&ids),
                sig_root: signatures_root(&txs),
                proposer: committed.proposer,
                timestamp_ms: committed.block.timestamp_ms,
                // The set after the parent block, which this node holds now (the durable ledger checks it again).
                utxo_commitment: self.node.ledger().commitment(),
            },
            txs,
        };
        let ledger_hash = block.header.hash();
        let bytes = encode_block(&block).to_vec();
        let receipt = if committed.attested {
            self.node.append_attested_with_ids(bytes, ids.clone())
        } else {
            self.node.append(bytes)
        };
        let receipt = receipt.with_context(|| format!("block {height}"))?;
        // The issuance is built by the same rules that check it: a refusal or another amount is a bug that would
        // fork this node's ledger from the others', so it stops the node.
        assert_eq!(
            receipt.outcome.verdicts.last(),
            Some(&Ok(())),
            "block {height}: the executor's issuance was refused"
        );
        assert_eq!(
            receipt.outcome.issued, minted,
            "block {height}: minted other than the rewards"
        );
        self.stats.lock().expect("stats lock").validator_rewards += paid;
        self.order.finalize(height, ledger_hash);
        if !witnesses.rewards.is_empty() {
            tracing::info!(
                height,
                minted,
                outputs = witnesses.rewards.len(),
                "witness rewards minted"
            );
        }
        self.previous_ledger_hash = ledger_hash;
        if receipt.snapshot {
            // The snapshot the shards write at this height is served with the witness order after it.
            self.anchors.record(
                height,
                Anchor::new(ledger_hash, committed.block.hash(), self.order.export()),
            );
        }
        if self
            .witness
            .send(WitnessInput::Finalized(height, ledger_hash))
            .is_err()
        {
            tracing::warn!(
                height,
                "the witness thread stopped; the block is not witnessed here"
            );
        }
        // Indexed (and fdatasynced) before any receipt leaves: every `final` a client heard is answered after a
        // restart too.
        let claims: Vec<Claim> = block
            .txs
            .iter()
            .zip(&receipt.outcome.verdicts)
            .enumerate()
            .filter(|(_, (_, verdict))| verdict.is_ok())
            .filter_map(|(index, (tx, _))| {
                Some(Claim {
                    sender: tx.signatures.first()?.key,
                    client_id: tx.body.client_id?,
                    index: index as u32,
                })
            })
            .collect();
        let results = crate::tx_index::results_of(&ids, &receipt.outcome.verdicts);
        self.index
            .append_results(height, ledger_hash, &results, &claims)
            .with_context(|| format!("indexing block {height}"))?;
        // The committee certifies the block's result: this node's vote goes to every peer.
        let (vote, cert) = self.certifier.executed(LedgerStatement {
            chain_id: self.chain_id,
            epoch: self.certifier.epoch(),
            height,
            block: ledger_hash,
            consensus: consensus_hash,
            results_root: results_root(&results),
            utxo_commitment: receipt.outcome.utxo_commitment,
        });
        let (class, bytes) =
            crate::wire::encode(self.certifier.epoch(), &Message::LedgerVote(vote));
        for (peer, error) in self.netio.broadcast(class, bytes) {
            tracing::debug!(?peer, %error, "ledger vote refused for a peer");
        }
        self.certified(cert)?;
        let mut rejected = 0;
        let mut rejected_by_code = std::collections::BTreeMap::<u16, u64>::new();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        for (index, (((id, verdict), client), admitted_ms)) in ids[..client_txs]
            .iter()
            .zip(&receipt.outcome.verdicts)
            .zip(&committed.clients)
            .zip(&committed.admitted_ms)
            .enumerate()
        {
            if let Err(error) = verdict {
                rejected += 1;
                *rejected_by_code.entry(error.code().number()).or_default() += 1;
            }
            if *admitted_ms > 0 {
                self.submit_to_final
                    .observe(now_ms.saturating_sub(*admitted_ms) as f64 / 1e3);
            }
            if let Some(client) = client {
                let answer = ClientAnswer::Final {
                    tx: *id,
                    height,
                    index: index as u32,
                    block: ledger_hash,
                    rejection: verdict.as_ref().err().map(RuleFailure::of),
                };
                self.clients.answer(*client, answer);
            }
        }
        // The committee an election after this block picks, for the driver's hand-over, and this member's
        // signature on the hand-over to it.
        if let Some(epoch) = elects_at(&self.node.ledger().params.stake, height) {
            if let Some(members) = read_election(&self.node, epoch) {
                self.committees.record(epoch, members);
            }
            self.start_handover(epoch)?;
        }
        let mut stats = self.stats.lock().expect("stats lock");
        stats.height = height;
        stats.utxo_commitment = receipt.outcome.utxo_commitment;
        stats.txs += client_txs as u64;
        stats.rejected += rejected;
        for (code, count) in rejected_by_code {
            *stats.rejected_by_code.entry(code).or_default() += count;
        }
        stats.issued += minted;
        stats.reward_outputs += witnesses.rewards.len() as u64;
        stats.witnesses_ordered += witnesses.accepted as u64;
        stats.witnesses_skipped += witnesses.skipped.len() as u64;
        stats
            .recent_commitments
            .push_back((height, receipt.outcome.utxo_commitment));
        while stats.recent_commitments.len() > RECENT_COMMITMENTS_MAX {
            stats.recent_commitments.pop_front();
        }
        Ok(())
    }
}

/// Answers a client API read from `node` at its executed height (a requester that left gets nothing): the
/// executor's, and a follower's ([`crate::follower`]).
pub(crate) fn answer_query(node: &cas_shards::DurableLedger, query: LedgerQuery) {
    match query {
        LedgerQuery::Block { height, reply } => {
            let store = node.store();
            let stored = height >= store.first_height() && height <= node.height();
            let bytes = stored.then(|| store.read(height)).and_then(|read| {
                read.inspect_err(
                    |error| tracing::warn!(height, %error, "a stored block does not read"),
                )
                .ok()
            });
            let _ = reply.send(bytes);
        }
        LedgerQuery::Outputs { owner, reply } => {
            let outputs = node
                .ledger()
                .outputs_of(&owner)
                .map(|outputs| (node.height(), outputs))
                .map_err(|e| e.to_string());
            let _ = reply.send(outputs);
        }
        LedgerQuery::Entries {
            outpoints,
            supplies,
            reply,
        } => {
            let ledger = node.ledger();
            let found = outpoints
                .iter()
                .map(|outpoint| ledger.get(outpoint))
                .collect::<Result<Vec<_>, _>>()
                .and_then(|found| {
                    let supplies = supplies
                        .iter()
                        .map(|asset| ledger.supply(asset))
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok((node.height(), found, supplies))
                })
                .map_err(|e| e.to_string());
            let _ = reply.send(found);
        }
        LedgerQuery::Governance { reply } => {
            let ledger = node.ledger();
            let height = node.height();
            let context = ledger.context_for(height + 1);
            let _ = reply.send(GovernanceView {
                height,
                proposals: ledger.governance().all().collect(),
                min_fee: context.min_fee,
                unbond_delay_blocks: context.unbond_delay_blocks,
            });
        }
        LedgerQuery::Stake {
            epoch: asked,
            reply,
        } => {
            let ledger = node.ledger();
            let (height, params) = (node.height(), ledger.params.stake);
            let epoch = epoch_of(&params, height);
            let asked = asked.unwrap_or(epoch + 1);
            let elected = read_election(node, asked);
            let _ = reply.send(StakeView {
                height,
                params,
                registry: ledger.stake().clone(),
                epoch,
                elected_for: (asked, elected),
            });
        }
    }
}

/// The committee the ledger in `node` recorded for `epoch`, if it holds its election.
pub(crate) fn read_election(
    node: &cas_shards::DurableLedger,
    epoch: u64,
) -> Option<Vec<Candidate>> {
    let ledger = node.ledger();
    elected_committee(epoch, |outpoint| {
        ledger
            .get(outpoint)
            .inspect_err(|error| tracing::warn!(%error, "an election record does not read"))
            .ok()
            .flatten()
    })
}
