//! The coordinator of the shards: it decodes a block once, spreads its signature checks over the shards, prefetches
//! the inputs from their owning shards, runs the engine's rules in block order over that small view, and routes
//! the net change back to the shards. It holds no UTXO itself and never touches a shard's state directly.

use std::sync::Arc;

use cas_engine::codec::{access_block_trusted, decode_block};
use cas_engine::genesis::{genesis_committee, genesis_set};
use cas_engine::governance::Governance;
use cas_engine::ledger::LedgerError;
use cas_engine::rules::{apply_batch, records_read, RuleContext, TxError, UtxoView};
use cas_engine::stake::StakeRegistry;
use cas_engine::tx::ChainParams;
use cas_engine::vn::{ENDORSER_INDEX, VN_FEE_INDEX, VN_INDEX};
use cas_engine::{
    ArchivedTransaction, AssetId, Block, Hash32, OutPoint, PublicKey, SetCommitment, TxId, TxOutput,
};
use crossbeam_channel::{bounded, Receiver};

use crate::error::Error;
use crate::hash::FastMap;
use crate::limits::{SHARDS_MAX, VERIFY_CHUNK_TXS};
use crate::mirror::MirrorFeed;
use crate::partition::shard_of;
use crate::runtime::{check_memlock, BulkLane, ShardHandle};
use crate::shard::{Command, ValidatedBlock, VerifyDone, VerifyJob};

/// How many shards and where they run.
#[derive(Clone, Debug)]
pub struct LedgerConfig {
    /// Shards (glommio executors); default: the available cores.
    pub shards: usize,
    /// Pin shard `i` to core `i % cores`.
    pub pin_cores: bool,
    /// Run the one shard on the caller's thread instead of an executor of its own (`shards` must be 1): a caller
    /// that waits for every lookup and commit anyway (a node's executor) then skips two thread hand-offs per
    /// command. Signature jobs run on the caller's thread too, so a caller that checks signatures loses the
    /// overlap of its rules with the next block's checks.
    pub on_caller_thread: bool,
    /// The first height whose blocks may carry business transactions ([`RuleContext::business_from`]): a node
    /// sets it from its protocol schedule, so blocks replayed at start are judged as they were first.
    pub business_from: u64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            shards: std::thread::available_parallelism().map_or(1, usize::from),
            pin_cores: true,
            on_caller_thread: false,
            business_from: 0,
        }
    }
}

/// A block whose signature jobs are queued at the shards; [`ShardedLedger::finish`] completes it.
pub struct PendingBlock {
    bytes: ValidatedBlock,
    pub height: u64,
    /// The header's `utxo_commitment`: the set's commitment after the parent block (see
    /// [`cas_engine::BlockHeader::utxo_commitment`]); [`crate::DurableLedger`] checks it before the block is applied.
    pub parent_commitment: Hash32,
    tx_count: usize,
    /// The transactions' ids when the caller gave them ([`ShardedLedger::begin_attested_with_ids`]): no job runs.
    ids: Option<Vec<TxId>>,
    jobs: usize,
    replies: Receiver<VerifyDone>,
}

/// What applying one block did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockOutcome {
    pub height: u64,
    /// One verdict per transaction, in block order.
    pub verdicts: Vec<Result<(), TxError>>,
    pub fees: u64,
    /// CAS minted by the block's issuance transaction (witness rewards): supply grows only by this.
    pub issued: u64,
    /// The UTXO set checksum after this block (the combine of every shard's commitment).
    pub utxo_commitment: Hash32,
}

pub struct ShardedLedger {
    pub chain_id: u32,
    pub params: ChainParams,
    /// The height of the last applied block.
    pub height: u64,
    shards: Vec<ShardHandle>,
    /// Signature jobs, taken by whichever shard is free.
    bulk: BulkLane,
    /// Each shard's commitment after its last commit.
    shard_commitments: Vec<SetCommitment>,
    /// Where every commit's changes are copied, when a durable ledger keeps a mirror for its snapshots.
    mirror: Option<MirrorFeed>,
    /// Unspent outputs in the set (created minus spent over every commit).
    outputs: u64,
    /// Candidates and their stake, as the set holds them (kept with every commit, rebuilt with every load).
    stake: StakeRegistry,
    /// CIP proposals, ballots and votes, as the set holds them (the same).
    governance: Governance,
    /// The VN Policy records of the set (headers and endorsers), by outpoint: every transaction of a VN reads its
    /// VN's header and an endorser record per signer, answered from here instead of asking the shards (one shard
    /// would get every header lookup of a block). The shards keep them too, for the commitment and snapshots.
    policies: FastMap<OutPoint, TxOutput>,
    /// See [`LedgerConfig::business_from`].
    business_from: u64,
}

impl PendingBlock {
    /// The validated block bytes (shared with the store's append).
    pub(crate) fn bytes(&self) -> &ValidatedBlock {
        &self.bytes
    }
}

impl ShardedLedger {
    /// Starts the shards empty, at `height`, then loads `outputs` into their owners.
    pub fn from_outputs(
        chain_id: u32,
        params: ChainParams,
        height: u64,
        outputs: Vec<(OutPoint, TxOutput)>,
        config: &LedgerConfig,
    ) -> Result<ShardedLedger, Error> {
        let mut ledger = Self::start(chain_id, params, height, config)?;
        ledger.load(outputs)?;
        Ok(ledger)
    }

    /// Starts empty shards (their locked-memory budget is checked here, before any executor starts).
    pub(crate) fn start(
        chain_id: u32,
        params: ChainParams,
        height: u64,
        config: &LedgerConfig,
    ) -> Result<ShardedLedger, Error> {
        if config.shards == 0 || config.shards > SHARDS_MAX {
            return Err(Error::ShardCount {
                count: config.shards,
                max: SHARDS_MAX,
            });
        }
        let (bulk, shards) = if config.on_caller_thread {
            if config.shards != 1 {
                return Err(Error::CallerThreadShards {
                    count: config.shards,
                });
            }
            (BulkLane::Caller, vec![ShardHandle::on_caller_thread(0)])
        } else {
            check_memlock(config.shards)?;
            let (bulk, jobs) = BulkLane::new(config.shards);
            let shards = (0..config.shards)
                .map(|index| ShardHandle::start(index, config.pin_cores, jobs.clone()))
                .collect::<Result<Vec<_>, _>>()?;
            (bulk, shards)
        };
        tracing::info!(shards = config.shards, height, "shards started");
        Ok(ShardedLedger {
            chain_id,
            params,
            height,
            shard_commitments: vec![SetCommitment::default(); shards.len()],
            shards,
            bulk,
            mirror: None,
            outputs: 0,
            stake: StakeRegistry::default(),
            governance: Governance::default(),
            policies: FastMap::default(),
            business_from: config.business_from,
        })
    }

    /// Starts from a genesis block, checking that its header commits to its outputs.
    pub fn from_genesis(genesis: &Block, config: &LedgerConfig) -> Result<ShardedLedger, Error> {
        let (chain_id, params, outputs) = genesis_parts(genesis)?;
        let ledger = Self::from_outputs(chain_id, params, 0, outputs, config)?;
        check_genesis_commitment(genesis, ledger.commitment())?;
        Ok(ledger)
    }

    /// Copies every later commit's changes to `feed` (attached before anything is loaded, so the mirror sees the
    /// whole set).
    pub(crate) fn attach_mirror(&mut self, feed: MirrorFeed) {
        self.mirror = Some(feed);
    }

    /// Adds outputs to their shards (genesis or snapshot load).
    pub(crate) fn load(&mut self, outputs: Vec<(OutPoint, TxOutput)>) -> Result<(), Error> {
        self.stake.apply(&[], &outputs);
        self.governance.apply(&[], &outputs);
        self.commit_changes(Vec::new(), outputs)
    }

    /// Replaces the whole set with `outputs`, standing at `height` (an installed snapshot; the caller checked its
    /// commitment). Returns the new commitment.
    pub(crate) fn replace(
        &mut self,
        height: u64,
        outputs: Vec<(OutPoint, TxOutput)>,
    ) -> Result<Hash32, Error> {
        let mut asked = Vec::with_capacity(self.shards.len());
        for shard in &self.shards {
            let (reply, answer) = bounded(1);
            shard.urgent(Command::Clear { reply })?;
            asked.push((shard, answer));
        }
        for (shard, answer) in asked {
            shard.wait(&answer)?;
        }
        self.shard_commitments
            .iter_mut()
            .for_each(|c| *c = SetCommitment::default());
        if let Some(mirror) = &self.mirror {
            mirror.clear()?;
        }
        self.outputs = 0;
        self.stake = StakeRegistry::default();
        self.governance = Governance::default();
        self.policies.clear();
        self.height = height;
        self.load(outputs)?;
        Ok(self.commitment())
    }

    /// Unspent outputs in the set after the last applied block.
    pub fn outputs(&self) -> u64 {
        self.outputs
    }

    /// The set's entry at `outpoint` (a coin or a record), asked of its shard.
    pub fn get(&self, outpoint: &OutPoint) -> Result<Option<TxOutput>, Error> {
        let shard = &self.shards[shard_of(outpoint, self.shards.len())];
        let (reply, answer) = bounded(1);
        shard.urgent(Command::Lookup {
            outpoints: vec![*outpoint],
            reply,
        })?;
        let found = shard.wait(&answer)?;
        Ok(found
            .into_iter()
            .find(|(o, _)| o == outpoint)
            .map(|(_, entry)| entry))
    }

    /// The candidates and their stake after the last applied block.
    pub fn stake(&self) -> &StakeRegistry {
        &self.stake
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The rules' context at `height`: the genesis parameters with the CIP changes in effect there.
    pub fn context_for(&self, height: u64) -> RuleContext {
        let params = self.governance.params_at(&self.params, height);
        RuleContext::of(self.chain_id, &params, height).with_business_from(self.business_from)
    }

    /// The CIP proposals and their votes after the last applied block.
    pub fn governance(&self) -> &Governance {
        &self.governance
    }

    /// Validates untrusted block bytes and queues their signature checks on the shards.
    pub fn begin(&self, bytes: Vec<u8>) -> Result<PendingBlock, Error> {
        self.begin_with(bytes, true, None)
    }

    /// Like [`ShardedLedger::begin`] for a block whose signatures a quorum certificate already attests (DESIGN:
    /// f+1 valid-attestations include an honest checker, so executors skip re-verification). Tx ids are still
    /// computed on the shards.
    pub fn begin_attested(&self, bytes: Vec<u8>) -> Result<PendingBlock, Error> {
        self.begin_with(bytes, false, None)
    }

    /// Like [`ShardedLedger::begin_attested`] for a caller that holds the transactions' ids already (a node's
    /// executor built the block from packages whose ids the driver computed at admission): `ids[i]` must be the id
    /// of the block's `i`-th transaction. Nothing goes to the shards until the block is applied.
    pub fn begin_attested_with_ids(
        &self,
        bytes: Vec<u8>,
        ids: Vec<TxId>,
    ) -> Result<PendingBlock, Error> {
        self.begin_with(bytes, false, Some(ids))
    }

    fn begin_with(
        &self,
        bytes: Vec<u8>,
        check_signatures: bool,
        ids: Option<Vec<TxId>>,
    ) -> Result<PendingBlock, Error> {
        let (height, parent_commitment, tx_count) = {
            let block = decode_block(&bytes)?;
            let chain_id = block.header.chain_id.to_native();
            if chain_id != self.chain_id {
                return Err(Error::WrongChain {
                    expected: self.chain_id,
                    got: chain_id,
                });
            }
            if let Some(ids) = &ids {
                if ids.len() != block.txs.len() {
                    return Err(Error::IdCountMismatch {
                        ids: ids.len(),
                        txs: block.txs.len(),
                    });
                }
                debug_assert!(
                    block.txs.iter().zip(ids).all(|(tx, id)| tx.tx_id() == *id),
                    "the given ids are the block's"
                );
            }
            (
                block.header.height.to_native(),
                Hash32::from(&block.header.utxo_commitment),
                block.txs.len(),
            )
        };
        let bytes: ValidatedBlock = Arc::new(bytes);
        let jobs = match ids {
            Some(_) => 0,
            None => tx_count.div_ceil(VERIFY_CHUNK_TXS),
        };
        let (reply, replies) = bounded(jobs.max(1));
        for job in 0..jobs {
            let start = job * VERIFY_CHUNK_TXS;
            self.bulk.send(VerifyJob {
                block: bytes.clone(),
                start,
                end: (start + VERIFY_CHUNK_TXS).min(tx_count),
                check_signatures,
                reply: reply.clone(),
            })?;
        }
        Ok(PendingBlock {
            bytes,
            height,
            parent_commitment,
            tx_count,
            ids,
            jobs,
            replies,
        })
    }

    /// Applies a begun block: waits for its signature verdicts, prefetches its inputs, runs the rules in block
    /// order and commits the accepted transactions on the shards. Blocks finish in height order.
    pub fn finish(&mut self, pending: PendingBlock) -> Result<BlockOutcome, Error> {
        if pending.height != self.height + 1 {
            return Err(Error::HeightOutOfOrder {
                expected: self.height + 1,
                got: pending.height,
            });
        }
        let mut ids = pending
            .ids
            .unwrap_or_else(|| vec![TxId::default(); pending.tx_count]);
        let mut signature_verdicts = vec![Ok(()); pending.tx_count];
        for _ in 0..pending.jobs {
            let done = self.shards[0].wait(&pending.replies)?;
            let range = done.start..done.start + done.ids.len();
            ids[range.clone()].copy_from_slice(&done.ids);
            signature_verdicts[range]
                .iter_mut()
                .zip(done.verdicts)
                .for_each(|(slot, verdict)| *slot = verdict);
        }
        // SAFETY: `begin` validated these bytes with `decode_block`.
        let block = unsafe { access_block_trusted(&pending.bytes) };
        let txs: Vec<&ArchivedTransaction> = block.txs.iter().collect();
        let outcome = {
            let view = self.prefetch(&txs)?;
            apply_batch(
                &txs,
                &ids,
                &signature_verdicts,
                &view,
                &self.context_for(pending.height),
            )
        };
        self.stake.apply(&outcome.spent, &outcome.created);
        let records = self.stake.end_block(
            &self.params.stake,
            pending.height,
            outcome.absent.as_deref(),
        );
        let (mut spent, mut created) = (outcome.spent, outcome.created);
        spent.extend(records.spent);
        created.extend(records.created);
        self.governance.apply(&spent, &created);
        let holdings = match self.governance.needs_holdings(pending.height) {
            true => Some(self.cas_holdings_after(&spent, &created)?),
            false => None,
        };
        let records = self
            .governance
            .end_block(pending.height, || holdings.unwrap_or_default());
        spent.extend(records.spent);
        created.extend(records.created);
        self.commit_changes(spent, created)?;
        self.height = pending.height;
        let utxo_commitment = self.commitment();
        tracing::debug!(height = self.height, txs = txs.len(), %utxo_commitment, "block applied");
        Ok(BlockOutcome {
            height: self.height,
            verdicts: outcome.verdicts,
            fees: outcome.fees,
            issued: outcome.issued,
            utxo_commitment,
        })
    }

    /// Begins and finishes one block.
    pub fn apply_block(&mut self, bytes: Vec<u8>) -> Result<BlockOutcome, Error> {
        let pending = self.begin(bytes)?;
        self.finish(pending)
    }

    /// The coins of every input of `txs` that exist in the set, and the records they read (client id claims and
    /// candidacies, see [`cas_engine::rules::records_read`]), asked of their owning shards in parallel.
    fn prefetch(&self, txs: &[&ArchivedTransaction]) -> Result<PrefetchedView<'_>, Error> {
        let per_shard = txs.len() / self.shards.len() + 1;
        let mut routed: Vec<Vec<OutPoint>> = (0..self.shards.len())
            .map(|_| Vec::with_capacity(per_shard))
            .collect();
        let mut inputs = 0usize;
        for tx in txs {
            for input in tx.body.inputs.iter() {
                let outpoint = OutPoint::from(input);
                routed[shard_of(&outpoint, self.shards.len())].push(outpoint);
                inputs += 1;
            }
            for record in records_read(tx) {
                routed[shard_of(&record, self.shards.len())].push(record);
                inputs += 1;
            }
        }
        let mut asked = Vec::with_capacity(self.shards.len());
        for (shard, outpoints) in self.shards.iter().zip(routed) {
            if outpoints.is_empty() {
                continue;
            }
            let (reply, answer) = bounded(1);
            shard.urgent(Command::Lookup { outpoints, reply })?;
            asked.push((shard, answer));
        }
        let mut view = FastMap::with_capacity_and_hasher(inputs, Default::default());
        for (shard, answer) in asked {
            view.extend(shard.wait(&answer)?);
        }
        Ok(PrefetchedView {
            entries: view,
            policies: &self.policies,
        })
    }

    /// Routes spends and creations to their shards and waits for their new commitments.
    fn commit_changes(
        &mut self,
        spent: Vec<(OutPoint, TxOutput)>,
        created: Vec<(OutPoint, TxOutput)>,
    ) -> Result<(), Error> {
        if let Some(mirror) = &self.mirror {
            mirror.changes(
                spent.iter().map(|(outpoint, _)| *outpoint).collect(),
                created.clone(),
            )?;
        }
        // Only outputs in the set are spent, and a creation is new to it (the rules check both).
        self.outputs = self.outputs + created.len() as u64 - spent.len() as u64;
        for (outpoint, _) in spent.iter().filter(|(o, _)| is_policy_record(o)) {
            self.policies.remove(outpoint);
        }
        let policies = created.iter().filter(|(o, _)| is_policy_record(o));
        self.policies.extend(policies.copied());
        let count = self.shards.len();
        // Sized for an even spread (outpoints are uniform hashes), so routing rarely grows a vector.
        let share = |total: usize| total / count + total / (8 * count) + 16;
        let (spent_share, created_share) = (share(spent.len()), share(created.len()));
        let mut routed_spent: Vec<Vec<(OutPoint, TxOutput)>> = (0..count)
            .map(|_| Vec::with_capacity(spent_share))
            .collect();
        let mut routed_created: Vec<Vec<(OutPoint, TxOutput)>> = (0..count)
            .map(|_| Vec::with_capacity(created_share))
            .collect();
        for entry in spent {
            routed_spent[shard_of(&entry.0, count)].push(entry);
        }
        for entry in created {
            routed_created[shard_of(&entry.0, count)].push(entry);
        }
        let mut asked = Vec::with_capacity(count);
        for ((shard, spent), created) in self.shards.iter().zip(routed_spent).zip(routed_created) {
            if spent.is_empty() && created.is_empty() {
                continue;
            }
            let (reply, answer) = bounded(1);
            shard.urgent(Command::Commit {
                spent,
                created,
                reply,
            })?;
            asked.push((shard.index, answer));
        }
        for (index, answer) in asked {
            self.shard_commitments[index] = self.shards[index].wait(&answer)?;
        }
        Ok(())
    }

    /// The UTXO set checksum: the combine of every shard's commitment.
    pub fn commitment(&self) -> Hash32 {
        let mut combined = SetCommitment::default();
        self.shard_commitments
            .iter()
            .for_each(|c| combined.combine(c));
        combined.checksum()
    }

    /// The balance of `owner` in `asset`, from the shards' indexes (no scan of the set).
    pub fn balance(&self, owner: &PublicKey, asset: &AssetId) -> Result<u128, Error> {
        self.sum(|reply| Command::Balance {
            owner: *owner,
            asset: *asset,
            reply,
        })
    }

    /// How much of `asset` exists (a token's total supply), from the shards' totals; 0 for CAS, which they do not
    /// keep.
    pub fn supply(&self, asset: &AssetId) -> Result<u128, Error> {
        self.sum(|reply| Command::Supply {
            asset: *asset,
            reply,
        })
    }

    /// Asks every shard at once and sums their answers.
    fn sum(
        &self,
        command: impl Fn(crossbeam_channel::Sender<u128>) -> Command,
    ) -> Result<u128, Error> {
        let mut answers = Vec::with_capacity(self.shards.len());
        for shard in &self.shards {
            let (reply, answer) = bounded(1);
            shard.urgent(command(reply))?;
            answers.push((shard, answer));
        }
        answers
            .into_iter()
            .try_fold(0u128, |sum, (shard, answer)| Ok(sum + shard.wait(&answer)?))
    }

    /// Every key's CAS once `spent` and `created` (a block's change, not yet committed) are: the shards' owner
    /// indexes, summed, with the change applied.
    fn cas_holdings_after(
        &self,
        spent: &[(OutPoint, TxOutput)],
        created: &[(OutPoint, TxOutput)],
    ) -> Result<Vec<(PublicKey, u128)>, Error> {
        let mut answers = Vec::with_capacity(self.shards.len());
        for shard in &self.shards {
            let (reply, answer) = bounded(1);
            shard.urgent(Command::Holders {
                asset: AssetId::CAS,
                reply,
            })?;
            answers.push((shard, answer));
        }
        let mut held: FastMap<PublicKey, u128> = FastMap::default();
        for (shard, answer) in answers {
            for (owner, amount) in shard.wait(&answer)? {
                *held.entry(owner).or_default() += amount;
            }
        }
        let cas = |entries: &[(OutPoint, TxOutput)]| {
            entries
                .iter()
                .filter(|(_, entry)| entry.asset == AssetId::CAS)
                .map(|(_, entry)| (entry.owner, u128::from(entry.amount)))
                .collect::<Vec<_>>()
        };
        for (owner, amount) in cas(spent) {
            let balance = held.entry(owner).or_default();
            *balance = balance.checked_sub(amount).expect("a spent entry was held");
        }
        for (owner, amount) in cas(created) {
            *held.entry(owner).or_default() += amount;
        }
        Ok(held.into_iter().collect())
    }

    /// The unspent outputs of `owner`, sorted by outpoint, from the shards' indexes.
    pub fn outputs_of(&self, owner: &PublicKey) -> Result<Vec<(OutPoint, TxOutput)>, Error> {
        let mut outputs = self.gather(|reply| Command::Outputs {
            owner: *owner,
            reply,
        })?;
        outputs.sort_unstable_by_key(|(outpoint, _)| *outpoint);
        Ok(outputs)
    }

    /// Every unspent output, sorted by outpoint (tests).
    pub fn dump(&self) -> Result<Vec<(OutPoint, TxOutput)>, Error> {
        let mut outputs = self.gather(|reply| Command::Dump { reply })?;
        outputs.sort_unstable_by_key(|(outpoint, _)| *outpoint);
        Ok(outputs)
    }

    fn gather(
        &self,
        command: impl Fn(crossbeam_channel::Sender<Vec<(OutPoint, TxOutput)>>) -> Command,
    ) -> Result<Vec<(OutPoint, TxOutput)>, Error> {
        let mut answers = Vec::with_capacity(self.shards.len());
        for shard in &self.shards {
            let (reply, answer) = bounded(1);
            shard.urgent(command(reply))?;
            answers.push((shard, answer));
        }
        let mut all = Vec::new();
        for (shard, answer) in answers {
            all.extend(shard.wait(&answer)?);
        }
        Ok(all)
    }
}

/// The coins of one block's inputs, fetched from their shards: the only state the rules see.
/// What a block's rules read: the entries its transactions name, asked of the shards, and the VN Policy records,
/// read from the ledger's own copy (a VN transaction's reads of them are computed by the rules, never prefetched).
struct PrefetchedView<'a> {
    entries: FastMap<OutPoint, TxOutput>,
    policies: &'a FastMap<OutPoint, TxOutput>,
}

/// A VN Policy record: kept by the ledger itself ([`ShardedLedger::policies`]), not asked of the shards.
fn is_policy_record(outpoint: &OutPoint) -> bool {
    matches!(outpoint.index, VN_INDEX | ENDORSER_INDEX | VN_FEE_INDEX)
}

impl UtxoView for PrefetchedView<'_> {
    fn get(&self, outpoint: &OutPoint) -> Option<TxOutput> {
        match is_policy_record(outpoint) {
            true => self.policies.get(outpoint).copied(),
            false => self.entries.get(outpoint).copied(),
        }
    }
}

/// A genesis block's chain id, parameters and initial outputs.
pub(crate) type GenesisParts = (u32, ChainParams, Vec<(OutPoint, TxOutput)>);

/// The chain id, parameters and initial outputs of a genesis block.
pub(crate) fn genesis_parts(genesis: &Block) -> Result<GenesisParts, Error> {
    let (_, params) = genesis_committee(genesis).ok_or(LedgerError::NotGenesis {
        height: genesis.header.height,
    })?;
    Ok((
        genesis.header.chain_id,
        params.clone(),
        genesis_set(&genesis.txs),
    ))
}

pub(crate) fn check_genesis_commitment(genesis: &Block, computed: Hash32) -> Result<(), Error> {
    if computed != genesis.header.utxo_commitment {
        return Err(LedgerError::CommitmentMismatch {
            header: genesis.header.utxo_commitment,
            computed,
        }
        .into());
    }
    Ok(())
}
