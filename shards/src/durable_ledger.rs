//! A durable ledger: the sharded ledger plus the block store and snapshots. It decides when a block is
//! acknowledged (applied and fsynced), when a snapshot is taken, and how a restart recovers: newest valid snapshot
//! at or below the durable height, then a replay of the stored blocks after it. It never validates by itself; the
//! ledger does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cas_engine::codec::{decode_block, encode_block, to_owned_block};
use cas_engine::{Hash32, TxId};

use crate::error::Error;
use crate::ledger::{
    check_genesis_commitment, genesis_parts, BlockOutcome, LedgerConfig, PendingBlock,
};
use crate::limits::{IN_FLIGHT_BLOCKS_MAX, SNAPSHOT_EVERY_BLOCKS_DEFAULT};
use crate::mirror::Mirror;
use crate::runtime::check_memlock;
use crate::snapshot;
use crate::store::{BlockStore, Location, PendingAppend, StoreConfig};
use crate::ShardedLedger;

#[derive(Clone, Debug)]
pub struct DurableLedgerConfig {
    pub ledger: LedgerConfig,
    pub store: StoreConfig,
    /// A UTXO snapshot is written after every block whose height is a multiple of this (must be > 0).
    pub snapshot_every_blocks: u64,
}

impl Default for DurableLedgerConfig {
    fn default() -> Self {
        DurableLedgerConfig {
            ledger: LedgerConfig::default(),
            store: StoreConfig::default(),
            snapshot_every_blocks: SNAPSHOT_EVERY_BLOCKS_DEFAULT,
        }
    }
}

/// What reopening found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// The last durable block; the ledger stands at this height.
    pub durable_height: u64,
    /// The snapshot recovery started from (None: from genesis).
    pub snapshot_height: Option<u64>,
    pub replayed_blocks: u64,
    /// Bytes of a torn record cut from the store's tail.
    pub truncated_bytes: u64,
    pub utxo_commitment: Hash32,
}

/// A block being validated and written at once. Its durable append is queued at `begin` when its parent's
/// commitment is known then (nothing else in flight), else at `complete`, once the header's commitment is checked:
/// a block whose header does not match is never written.
pub struct InFlight {
    pending: PendingBlock,
    append: Option<PendingAppend>,
}

/// The acknowledgement of a block: applied, and durable on disk.
#[derive(Clone, Debug)]
pub struct Receipt {
    pub outcome: BlockOutcome,
    pub location: Location,
    /// Whether the block's height is a snapshot height ([`snapshot::snapshot_due`]): its snapshot is being written
    /// (or was skipped, when the previous one was still writing).
    pub snapshot: bool,
}

pub struct DurableLedger {
    ledger: ShardedLedger,
    store: BlockStore,
    dir: PathBuf,
    snapshot_dir: PathBuf,
    snapshot_every_blocks: u64,
    /// The height the next `begin` must carry.
    next_height: u64,
    /// The set's sorted copy that snapshots are written from, one at a time, off the coordinator's thread.
    mirror: Mirror,
}

/// The genesis block kept beside a store that no longer holds height 0 (written before the first snapshot install).
const GENESIS_FILE: &str = "genesis.block";

fn check_same_genesis(
    stored: &cas_engine::Block,
    given: Option<&cas_engine::Block>,
) -> Result<(), Error> {
    if let Some(given) = given {
        if given.header.hash() != stored.header.hash() {
            return Err(Error::GenesisMismatch {
                stored: stored.header.hash(),
                given: given.header.hash(),
            });
        }
    }
    Ok(())
}

impl DurableLedger {
    /// Opens the node in `dir`, creating it from `genesis` when the store is empty, and recovers the ledger.
    pub fn open(
        dir: &Path,
        config: &DurableLedgerConfig,
        genesis: Option<&cas_engine::Block>,
    ) -> Result<(DurableLedger, Recovery), Error> {
        Self::open_observed(dir, config, genesis, None, &mut |_, _| {})
    }

    /// [`DurableLedger::open`] for a caller that keeps something derived from each block's outcome (the node's
    /// transaction index): recovery starts from a snapshot at or below `replay_from - 1` where one is kept (else
    /// from the newest, and blocks below it are not seen again), and `observe` gets every replayed block at or above
    /// `replay_from`, with its bytes, in height order.
    pub fn open_observed(
        dir: &Path,
        config: &DurableLedgerConfig,
        genesis: Option<&cas_engine::Block>,
        replay_from: Option<u64>,
        observe: &mut dyn FnMut(&[u8], &BlockOutcome),
    ) -> Result<(DurableLedger, Recovery), Error> {
        assert!(
            config.snapshot_every_blocks > 0,
            "snapshot_every_blocks > 0"
        );
        check_memlock(config.ledger.shards)?;
        let (mut store, truncated_bytes) = BlockStore::open(&dir.join("blocks"), &config.store)?;
        let genesis_path = dir.join(GENESIS_FILE);
        let stored_genesis = if store.first_height() > 0 {
            // The store was reset to an installed snapshot: genesis is kept beside it.
            let bytes =
                std::fs::read(&genesis_path).map_err(|e| Error::io("read", &genesis_path, e))?;
            let stored = to_owned_block(decode_block(&bytes)?);
            check_same_genesis(&stored, genesis)?;
            stored
        } else {
            match store.durable_height() {
                None => {
                    let genesis = genesis.ok_or(Error::NoGenesis)?;
                    store.append_durable(0, encode_block(genesis).to_vec())?;
                    genesis.clone()
                }
                Some(_) => {
                    let bytes = store.read(0)?;
                    let stored = to_owned_block(decode_block(&bytes)?);
                    check_same_genesis(&stored, genesis)?;
                    stored
                }
            }
        };
        let (chain_id, params, genesis_outputs) = genesis_parts(&stored_genesis)?;
        // The ledger stands at the last durable block, or just below the base of a store that holds none yet.
        let durable_height = store.next_height() - 1;
        let snapshot_dir = dir.join("snapshots");
        let base = store.first_height();
        // The observer's first height, when a snapshot below it is kept and usable (at or above the store's base).
        let wanted = replay_from
            .filter(|from| *from >= 1 && *from <= durable_height)
            .map(|from| from - 1)
            .and_then(|below| Self::newest_snapshot(&snapshot_dir, below).transpose())
            .transpose()?
            .filter(|s| s.height + 1 >= base);
        let snapshot = match wanted {
            Some(snapshot) => Some(snapshot),
            None => Self::newest_snapshot(&snapshot_dir, durable_height)?,
        };
        if base > 0 && snapshot.as_ref().is_none_or(|s| s.height + 1 < base) {
            return Err(Error::Snapshot {
                path: snapshot::snapshot_path(&snapshot_dir, base - 1),
                reason: format!(
                    "the block store starts at height {base}, but neither this installed snapshot nor a later \
                     one reads back intact"
                ),
            });
        }
        let start_height = snapshot.as_ref().map_or(0, |s| s.height);
        let mut ledger = ShardedLedger::start(chain_id, params, start_height, &config.ledger)?;
        let (mirror, feed) = Mirror::start()?;
        ledger.attach_mirror(feed);
        match snapshot {
            Some(snapshot) => {
                ledger.load(snapshot.entries)?;
                if ledger.commitment() != snapshot.commitment {
                    return Err(Error::Snapshot {
                        path: snapshot::snapshot_path(&snapshot_dir, snapshot.height),
                        reason: format!(
                            "its entries give commitment {}, it recorded {}",
                            ledger.commitment(),
                            snapshot.commitment
                        ),
                    });
                }
            }
            None => {
                ledger.load(genesis_outputs)?;
                check_genesis_commitment(&stored_genesis, ledger.commitment())?;
            }
        }
        let mut node = DurableLedger {
            ledger,
            store,
            dir: dir.to_path_buf(),
            snapshot_dir,
            snapshot_every_blocks: config.snapshot_every_blocks,
            next_height: durable_height + 1,
            mirror,
        };
        let replayed_blocks = node.replay(
            start_height + 1,
            durable_height,
            replay_from.unwrap_or(u64::MAX),
            observe,
        )?;
        let recovery = Recovery {
            durable_height,
            snapshot_height: (start_height > 0).then_some(start_height),
            replayed_blocks,
            truncated_bytes,
            utxo_commitment: node.ledger.commitment(),
        };
        tracing::info!(?recovery, "node recovered");
        Ok((node, recovery))
    }

    /// The newest snapshot at or below `durable_height` that reads back intact; damaged ones are skipped.
    fn newest_snapshot(
        dir: &Path,
        durable_height: u64,
    ) -> Result<Option<snapshot::Snapshot>, Error> {
        for (height, path) in snapshot::list(dir)? {
            if height > durable_height {
                continue;
            }
            match snapshot::read(&path) {
                Ok(snapshot) if snapshot.height == height => return Ok(Some(snapshot)),
                Ok(_) => {
                    tracing::warn!(path = %path.display(), "snapshot height differs from its name")
                }
                Err(error) => tracing::warn!(%error, "skipping snapshot"),
            }
        }
        Ok(None)
    }

    /// Re-applies stored blocks `from..=to` (pipelined like live blocks); `observe` sees those from `observed_from`.
    fn replay(
        &mut self,
        from: u64,
        to: u64,
        observed_from: u64,
        observe: &mut dyn FnMut(&[u8], &BlockOutcome),
    ) -> Result<u64, Error> {
        let mut in_flight = std::collections::VecDeque::new();
        for height in from..=to {
            in_flight.push_back(self.ledger.begin(self.store.read(height)?)?);
            if in_flight.len() >= IN_FLIGHT_BLOCKS_MAX {
                let pending = in_flight.pop_front().expect("non-empty");
                self.finish_replayed(pending, observed_from, observe)?;
            }
        }
        while let Some(pending) = in_flight.pop_front() {
            self.finish_replayed(pending, observed_from, observe)?;
        }
        Ok(to.saturating_sub(from - 1))
    }

    fn finish_replayed(
        &mut self,
        pending: PendingBlock,
        observed_from: u64,
        observe: &mut dyn FnMut(&[u8], &BlockOutcome),
    ) -> Result<(), Error> {
        self.check_parent_commitment(&pending)?;
        let outcome = self.ledger.finish(pending)?;
        if outcome.height >= observed_from {
            observe(&self.store.read(outcome.height)?, &outcome);
        }
        Ok(())
    }

    /// Validates untrusted block bytes, queues their signature checks and their durable append.
    pub fn begin(&mut self, bytes: Vec<u8>) -> Result<InFlight, Error> {
        let pending = self.ledger.begin(bytes)?;
        self.begun(pending)
    }

    /// Like [`DurableLedger::begin`] for a block whose every package carries an attested availability certificate (more
    /// than a third of the stake verified its signatures, so an honest member did): signatures are not checked
    /// again. Everything else (decoding, UTXO rules, durability) is the same.
    pub fn begin_attested(&mut self, bytes: Vec<u8>) -> Result<InFlight, Error> {
        let pending = self.ledger.begin_attested(bytes)?;
        self.begun(pending)
    }

    /// Like [`DurableLedger::begin_attested`] with the transactions' ids given (see
    /// [`ShardedLedger::begin_attested_with_ids`]): they are not computed again.
    pub fn begin_attested_with_ids(
        &mut self,
        bytes: Vec<u8>,
        ids: Vec<TxId>,
    ) -> Result<InFlight, Error> {
        let pending = self.ledger.begin_attested_with_ids(bytes, ids)?;
        self.begun(pending)
    }

    /// Queues the durable append of a begun block.
    fn begun(&mut self, pending: PendingBlock) -> Result<InFlight, Error> {
        if pending.height != self.next_height {
            return Err(Error::HeightOutOfOrder {
                expected: self.next_height,
                got: pending.height,
            });
        }
        // With nothing in flight the ledger stands at the parent: check now and write while validating.
        let append = if pending.height == self.ledger.height + 1 {
            self.check_parent_commitment(&pending)?;
            Some(
                self.store
                    .append(pending.height, Arc::clone(pending.bytes()))?,
            )
        } else {
            None
        };
        self.next_height += 1;
        Ok(InFlight { pending, append })
    }

    /// The header of a block about to be applied must commit to the set the ledger holds now (its parent's
    /// post-state); a mismatch is refused before anything changes.
    fn check_parent_commitment(&self, pending: &PendingBlock) -> Result<(), Error> {
        if pending.height != self.ledger.height + 1 {
            return Err(Error::HeightOutOfOrder {
                expected: self.ledger.height + 1,
                got: pending.height,
            });
        }
        let computed = self.ledger.commitment();
        if pending.parent_commitment != computed {
            return Err(Error::ParentCommitmentMismatch {
                height: pending.height,
                header: pending.parent_commitment,
                computed,
            });
        }
        Ok(())
    }

    /// Applies a begun block and waits until it is durable: only then is it acknowledged. Blocks complete in the
    /// order they were begun. A block refused here (its header's commitment does not match) is not written, and
    /// the blocks begun after it must be dropped: the node takes the next block at the refused one's height.
    pub fn complete(&mut self, in_flight: InFlight) -> Result<Receipt, Error> {
        let append = match in_flight.append {
            Some(append) => append,
            None => {
                if let Err(error) = self.check_parent_commitment(&in_flight.pending) {
                    if matches!(error, Error::ParentCommitmentMismatch { .. }) {
                        self.next_height = in_flight.pending.height;
                    }
                    return Err(error);
                }
                self.store.append(
                    in_flight.pending.height,
                    Arc::clone(in_flight.pending.bytes()),
                )?
            }
        };
        let outcome = self.ledger.finish(in_flight.pending)?;
        let location = self.store.acknowledge(append)?;
        let snapshot = snapshot::snapshot_due(
            outcome.height,
            self.ledger.outputs(),
            self.snapshot_every_blocks,
        );
        if snapshot {
            self.snapshot(outcome.height, outcome.utxo_commitment)?;
        }
        Ok(Receipt {
            outcome,
            location,
            snapshot,
        })
    }

    /// Begins and completes one block.
    pub fn append(&mut self, bytes: Vec<u8>) -> Result<Receipt, Error> {
        let in_flight = self.begin(bytes)?;
        self.complete(in_flight)
    }

    /// Begins and completes one block whose signatures are attested (see [`DurableLedger::begin_attested`]).
    pub fn append_attested(&mut self, bytes: Vec<u8>) -> Result<Receipt, Error> {
        let in_flight = self.begin_attested(bytes)?;
        self.complete(in_flight)
    }

    /// Begins and completes one attested block whose transactions' ids the caller holds (see
    /// [`DurableLedger::begin_attested_with_ids`]).
    pub fn append_attested_with_ids(
        &mut self,
        bytes: Vec<u8>,
        ids: Vec<TxId>,
    ) -> Result<Receipt, Error> {
        let in_flight = self.begin_attested_with_ids(bytes, ids)?;
        self.complete(in_flight)
    }

    /// Asks the mirror for the snapshot at `height` (it writes on its own thread); skipped (and logged) while the
    /// previous snapshot is still being written. Returns the previous write's error, if it failed.
    fn snapshot(&mut self, height: u64, commitment: Hash32) -> Result<(), Error> {
        if self.mirror.writing() {
            tracing::warn!(height, "previous snapshot still writing; skipping this one");
            return Ok(());
        }
        self.mirror.write(&self.snapshot_dir, height, commitment)
    }

    /// Waits for a snapshot being written, returning its error if it failed.
    pub fn wait_snapshot(&mut self) -> Result<(), Error> {
        self.mirror.wait()
    }

    /// Installs a UTXO snapshot as the node's new base (state transfer for a node too far behind to replay): the set
    /// at `snapshot.height`, whose ledger block hashes to `block_hash`. The set must reproduce the snapshot's
    /// commitment, else [`Error::Snapshot`] and nothing changes. Then, crash-safe in this order: genesis is kept
    /// beside the store, the snapshot is written durably, the store is reset to start at `height + 1` (its base
    /// file durable before any old segment goes), older snapshots are deleted, and the shards take the new set. A
    /// crash before the reset reopens at the old state (the new snapshot lies above it, unused); after it, at the
    /// snapshot. Nothing may be in flight; the snapshot must be above the node's height.
    pub fn install_snapshot(
        &mut self,
        snapshot: snapshot::Snapshot,
        block_hash: Hash32,
    ) -> Result<(), Error> {
        let path = snapshot::snapshot_path(&self.snapshot_dir, snapshot.height);
        if snapshot.height <= self.ledger.height {
            return Err(Error::Snapshot {
                path,
                reason: format!(
                    "height {} is not above the node's height {}",
                    snapshot.height, self.ledger.height
                ),
            });
        }
        assert_eq!(
            self.next_height,
            self.ledger.height + 1,
            "no block in flight during an install"
        );
        let mut set = cas_engine::SetCommitment::default();
        for (outpoint, coin) in &snapshot.entries {
            set.insert(outpoint, coin);
        }
        if set.checksum() != snapshot.commitment {
            return Err(Error::Snapshot {
                path,
                reason: format!(
                    "its {} entries give commitment {}, it claims {}",
                    snapshot.entries.len(),
                    set.checksum(),
                    snapshot.commitment
                ),
            });
        }
        self.wait_snapshot()?;
        if self.store.first_height() == 0 {
            let genesis = self.store.read(0)?;
            crate::store::write_atomic(&self.dir.join(GENESIS_FILE), &genesis)?;
        }
        snapshot::write(
            &self.snapshot_dir,
            snapshot.height,
            &snapshot.entries,
            snapshot.commitment,
        )?;
        self.store
            .reset_to_base(snapshot.height + 1, block_hash.0)?;
        for (height, old) in snapshot::list(&self.snapshot_dir)? {
            if height < snapshot.height {
                std::fs::remove_file(&old).map_err(|e| Error::io("remove", &old, e))?;
            }
        }
        let commitment = self.ledger.replace(snapshot.height, snapshot.entries)?;
        assert_eq!(
            commitment, snapshot.commitment,
            "the shards hold the set that was checked"
        );
        self.next_height = snapshot.height + 1;
        tracing::info!(height = snapshot.height, %commitment, "snapshot installed");
        Ok(())
    }

    /// The hash of the last block the ledger applied (the parent of the next): read from the store, or the
    /// installed snapshot's block when the store holds none after its base yet.
    pub fn last_block_hash(&self) -> Result<Hash32, Error> {
        match self.store.base() {
            Some(base) if self.ledger.height + 1 == base.height => Ok(Hash32(base.anchor)),
            _ => Ok(decode_block(&self.store.read(self.ledger.height)?)?
                .header
                .hash()),
        }
    }

    pub fn ledger(&self) -> &ShardedLedger {
        &self.ledger
    }

    pub fn store(&self) -> &BlockStore {
        &self.store
    }

    pub fn height(&self) -> u64 {
        self.ledger.height
    }
}

impl Drop for DurableLedger {
    fn drop(&mut self) {
        if let Err(error) = self.wait_snapshot() {
            tracing::error!(%error, "snapshot failed");
        }
    }
}
