//! An in-memory ledger: the whole UTXO set in one map with its set commitment. It is the reference the sharded
//! ledger is tested against, and what single-process tools and benchmarks run on. Applying a block here is the
//! same rule code the shards run, in one partition.

use std::collections::HashMap;

use crate::block::{ArchivedBlock, Block};
use crate::commitment::SetCommitment;
use crate::genesis::{genesis_committee, genesis_set};
use crate::governance::{cas_holdings, Governance};
use crate::id::Hash32;
use crate::rules::{apply_batch, verify_signatures, BatchOutcome, RuleContext, TxError};
use crate::stake::{BlockRecords, StakeRegistry};
use crate::tx::{tx_ids, ArchivedTransaction, ChainParams, OutPoint, TxOutput};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("block {height}: genesis block has no committee and parameters")]
    NotGenesis { height: u64 },
    #[error("genesis header commits to {header:?} but its outputs give {computed:?}")]
    CommitmentMismatch { header: Hash32, computed: Hash32 },
}

#[derive(Debug, Clone)]
pub struct MemoryLedger {
    pub chain_id: u32,
    pub params: ChainParams,
    /// The height of the last applied block.
    pub height: u64,
    utxos: HashMap<OutPoint, TxOutput>,
    commitment: SetCommitment,
    /// Candidates and their stake, as the set holds them.
    stake: StakeRegistry,
    /// CIP proposals, ballots and votes, as the set holds them.
    governance: Governance,
}

impl MemoryLedger {
    /// Starts from a genesis block, checking that its header commits to its outputs.
    pub fn from_genesis(genesis: &Block) -> Result<MemoryLedger, LedgerError> {
        let (_, params) = genesis_committee(genesis).ok_or(LedgerError::NotGenesis {
            height: genesis.header.height,
        })?;
        let mut ledger = MemoryLedger {
            chain_id: genesis.header.chain_id,
            params: params.clone(),
            height: 0,
            utxos: HashMap::new(),
            commitment: SetCommitment::default(),
            stake: StakeRegistry::default(),
            governance: Governance::default(),
        };
        let outputs = genesis_set(&genesis.txs);
        ledger.stake.apply(&[], &outputs);
        ledger.governance.apply(&[], &outputs);
        for (outpoint, output) in outputs {
            ledger.commitment.insert(&outpoint, &output);
            ledger.utxos.insert(outpoint, output);
        }
        let computed = ledger.commitment.checksum();
        if computed != genesis.header.utxo_commitment {
            return Err(LedgerError::CommitmentMismatch {
                header: genesis.header.utxo_commitment,
                computed,
            });
        }
        Ok(ledger)
    }

    pub fn context_for(&self, height: u64) -> RuleContext {
        let params = self.governance.params_at(&self.params, height);
        RuleContext::of(self.chain_id, &params, height)
    }

    /// Verifies signatures in batches, applies `txs` in order as block `height`, commits the accepted ones and
    /// returns every transaction's verdict.
    pub fn apply(&mut self, txs: &[&ArchivedTransaction], height: u64) -> Vec<Result<(), TxError>> {
        let ids = tx_ids(txs);
        let signature_verdicts = verify_signatures(txs, &ids);
        let outcome = apply_batch(
            txs,
            &ids,
            &signature_verdicts,
            &self.utxos,
            &self.context_for(height),
        );
        self.commit(&outcome, height);
        outcome.verdicts
    }

    /// Applies a block's transactions at its height.
    pub fn apply_block(&mut self, block: &ArchivedBlock) -> Vec<Result<(), TxError>> {
        let txs: Vec<&ArchivedTransaction> = block.txs.iter().collect();
        self.apply(&txs, block.header.height.to_native())
    }

    /// Writes a batch's net change, applied as block `height`, into the set and its commitment, with the records the
    /// ledger writes itself ([`StakeRegistry::end_block`]: conduct, and an election at an election height;
    /// [`Governance::end_block`]: ballots at a proposal's snapshot, a resolution at its window's end).
    pub fn commit(&mut self, outcome: &BatchOutcome, height: u64) {
        assert!(height > self.height, "blocks apply in height order");
        for (outpoint, coin) in &outcome.spent {
            let removed = self.utxos.remove(outpoint);
            assert_eq!(
                removed.as_ref(),
                Some(coin),
                "a spent coin must be in the set"
            );
            self.commitment.remove(outpoint, coin);
        }
        for (outpoint, coin) in &outcome.created {
            let previous = self.utxos.insert(*outpoint, *coin);
            assert!(previous.is_none(), "an outpoint is created once");
            self.commitment.insert(outpoint, coin);
        }
        self.stake.apply(&outcome.spent, &outcome.created);
        let records = self
            .stake
            .end_block(&self.params.stake, height, outcome.absent.as_deref());
        self.governance.apply(&outcome.spent, &outcome.created);
        self.write_records(records);
        let utxos = &self.utxos;
        let records = self
            .governance
            .end_block(height, || cas_holdings(utxos.iter()));
        self.write_records(records);
        self.height = height;
    }

    /// Writes the records the ledger itself spends and creates at the end of a block.
    fn write_records(&mut self, records: BlockRecords) {
        for (outpoint, record) in &records.spent {
            let removed = self.utxos.remove(outpoint);
            assert_eq!(
                removed.as_ref(),
                Some(record),
                "a replaced record is in the set"
            );
            self.commitment.remove(outpoint, record);
        }
        for (outpoint, record) in records.created {
            let previous = self.utxos.insert(outpoint, record);
            assert!(previous.is_none(), "a record is written once");
            self.commitment.insert(&outpoint, &record);
        }
    }

    /// The CIP proposals and their votes after the last applied block.
    pub fn governance(&self) -> &Governance {
        &self.governance
    }

    /// The candidates and their stake after the last applied block.
    pub fn stake(&self) -> &StakeRegistry {
        &self.stake
    }

    pub fn utxos(&self) -> &HashMap<OutPoint, TxOutput> {
        &self.utxos
    }

    pub fn commitment(&self) -> Hash32 {
        self.commitment.checksum()
    }
}
