//! The execution side of a node: committed consensus blocks, with their packages, become ledger blocks that the
//! shards validate and store durably (fsync) in height order; only then are the receipts sent to the clients that
//! submitted the transactions here. Runs on its own thread, fed by a bounded queue (back-pressure to consensus).

use std::net::SocketAddr;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use cas_consensus::messages::Block as ConsensusBlock;
use cas_engine::client::ClientAnswer;
use cas_engine::codec::encode_block;
use cas_engine::{merkle, Block, BlockHash, BlockHeader, Hash32, PublicKey, Transaction};

use super::durable::ExecutedFile;
use super::snapshot_serve::{Anchor, Anchors};
use super::state_sync::Install;
use super::witness::WitnessInput;

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
    pub clients: Vec<Option<SocketAddr>>,
    /// Every package's certificate is attested: the signatures were verified by an honest member already.
    pub attested: bool,
}

/// What the executor reports back (for `cas local`'s summary and the node's status file).
#[derive(Clone, Debug, Default)]
pub struct Executed {
    pub height: u64,
    pub utxo_commitment: Hash32,
    pub txs: u64,
    pub rejected: u64,
    /// Snapshots installed by state transfer since start, and the height of the last one.
    pub snapshot_installs: u64,
    pub snapshot_installed_height: u64,
}

pub struct Executor {
    pub node: cas_shards::Node,
    pub chain_id: u32,
    pub executed_file: ExecutedFile,
    /// The last two (height, consensus hash) handed to execution.
    pub executed_marks: Vec<(u64, BlockHash)>,
    pub previous_ledger_hash: BlockHash,
    pub netio: Arc<cas_netio::Node>,
    pub stats: Arc<std::sync::Mutex<Executed>>,
    /// Each stored block's hash goes to the witness thread (what miners commit to and validators check against).
    /// A bounded queue to a normal-priority thread: a full one makes the executor wait, never lose a hash.
    pub witness: std::sync::mpsc::SyncSender<WitnessInput>,
    /// Block hashes at this node's snapshot heights, for serving its snapshots to peers.
    pub anchors: Arc<Anchors>,
    pub snapshot_every_blocks: u64,
}

impl Executor {
    pub fn run(mut self, queue: Receiver<Work>) -> Result<()> {
        while let Ok(work) = queue.recv() {
            match work {
                Work::Block(committed) => self.execute(committed)?,
                Work::Install(install) => self.install(install)?,
            }
        }
        self.node
            .wait_snapshot()
            .context("finishing the last snapshot")?;
        Ok(())
    }

    /// Installs a verified snapshot as the ledger's new base. The execution marker names its consensus block first,
    /// so a restart after the install resumes consensus from there.
    fn install(&mut self, install: Install) -> Result<()> {
        let Install { info, snapshot } = install;
        if info.height <= self.node.height() {
            tracing::info!(
                height = info.height,
                executed = self.node.height(),
                "snapshot no longer ahead of execution; not installed"
            );
            return Ok(());
        }
        self.executed_marks.push((info.height, info.consensus_hash));
        if self.executed_marks.len() > 2 {
            self.executed_marks.remove(0);
        }
        self.executed_file.store(&self.executed_marks)?;
        self.node
            .install_snapshot(snapshot, info.ledger_hash)
            .with_context(|| format!("installing the snapshot at height {}", info.height))?;
        self.previous_ledger_hash = info.ledger_hash;
        self.anchors.record(
            info.height,
            Anchor {
                ledger_hash: info.ledger_hash,
                consensus_hash: info.consensus_hash,
            },
        );
        if self
            .witness
            .send(WitnessInput::SkipTo(info.height + 1))
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
        // Mark first: after a crash, whichever height the store ends at, its consensus hash is on disk.
        self.executed_marks.push((height, committed.block.hash()));
        if self.executed_marks.len() > 2 {
            self.executed_marks.remove(0);
        }
        self.executed_file.store(&self.executed_marks)?;
        let ids: Vec<Hash32> = committed.txs.iter().map(Transaction::tx_id).collect();
        let block = Block {
            header: BlockHeader {
                chain_id: self.chain_id,
                height,
                round: committed.block.round,
                parent: self.previous_ledger_hash,
                tx_root: merkle::root(&ids),
                proposer: committed.proposer,
                timestamp_ms: committed.block.timestamp_ms,
                // The set after the parent block, which this node holds now (the shards node checks it again).
                utxo_commitment: self.node.ledger().commitment(),
            },
            txs: committed.txs,
        };
        let ledger_hash = block.header.hash();
        let bytes = encode_block(&block).to_vec();
        let receipt = if committed.attested {
            self.node.append_attested(bytes)
        } else {
            self.node.append(bytes)
        };
        let receipt = receipt.with_context(|| format!("block {height}"))?;
        self.previous_ledger_hash = ledger_hash;
        if height % self.snapshot_every_blocks == 0 {
            self.anchors.record(
                height,
                Anchor {
                    ledger_hash,
                    consensus_hash: committed.block.hash(),
                },
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
        let mut rejected = 0;
        for (index, ((id, verdict), client)) in ids
            .iter()
            .zip(&receipt.outcome.verdicts)
            .zip(&committed.clients)
            .enumerate()
        {
            if verdict.is_err() {
                rejected += 1;
            }
            if let Some(client) = client {
                let answer = ClientAnswer::Final {
                    tx: *id,
                    height,
                    index: index as u32,
                    block: ledger_hash,
                    rejection: verdict.as_ref().err().map(ClientAnswer::reason),
                };
                // A client that left, or that does not read its answers, loses them; the ledger is unaffected.
                if let Err(error) = self.netio.answer(*client, Bytes::from(answer.encode())) {
                    tracing::debug!(%client, %error, "receipt not delivered");
                }
            }
        }
        let mut stats = self.stats.lock().expect("stats lock");
        stats.height = height;
        stats.utxo_commitment = receipt.outcome.utxo_commitment;
        stats.txs += ids.len() as u64;
        stats.rejected += rejected;
        Ok(())
    }
}
