//! The ledger's witness order: a [`WitnessChain`] fed only from committed consensus blocks, in height order, so
//! every node holds the same one and mints the same witness rewards. Its finalized DPOS hashes are the ledger
//! blocks executed, its clock is the committed block's timestamp (never a local clock), and it takes the witness
//! headers each block carries in block order (an invalid one is skipped, the same way everywhere). This module owns
//! that order and the issuance transaction it yields per block; it never reads a clock, a file or a socket.
//! Restarts rebuild it from the stored ledger blocks ([`WitnessOrder::replay`]): each block's issuance
//! transaction records the headers its consensus block carried, and its outputs are checked again on the way.
//! A node that installs a UTXO snapshot at height h has no ledger blocks up to h to replay, so the order's whole
//! state after h travels with the snapshot ([`WitnessOrder::export`], [`decode_order_state`]): its hash is part of
//! what more than a third of the stake must report identically, the receiver checks the bytes against it, restores
//! the order from them ([`WitnessOrder::restore`]) and keeps them on disk as the base a restart replays on top of.

use cas_engine::codec::{ISSUANCE_EVIDENCE_MAX, WITNESS_REWARD_OUTPUTS_MAX};
use cas_engine::{
    AssetId, Block, BlockHash, OutPoint, PublicKey, Transaction, TxBody, TxKind, TxOutput,
};

use cas_engine::Hash32;
use rkyv::{Archive, Deserialize, Serialize};

use crate::witness::{
    decode_witness, encode_witness, ChainState, ChainStateError, Reward, WitnessChain,
    WitnessDecodeError, WitnessError, WitnessHeader, WitnessLimits, WitnessParams,
};

pub use crate::limits::{ORDER_STATE_BYTES_MAX, REWARD_HEIGHTS_PER_BLOCK_MAX};

/// The ledger's witness order after ledger block `executed_height`, as it travels with a snapshot at that height.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct OrderState {
    pub executed_height: u64,
    pub chain: ChainState,
}

/// Why bytes are not the witness order a snapshot at some height needs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OrderStateError {
    #[error("{len} bytes exceed the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("malformed witness order state: {0}")]
    Malformed(String),
    #[error("the state is after ledger height {got}, the snapshot's is {expected}")]
    WrongHeight { expected: u64, got: u64 },
    #[error("finalized hashes end at {got}, the state is after ledger height {expected}")]
    FinalizedHeight { expected: u64, got: u64 },
    #[error(transparent)]
    Chain(#[from] ChainStateError),
}

/// What the committee agrees on for a witness order state: the hash of its encoding.
pub fn order_state_hash(bytes: &[u8]) -> Hash32 {
    Hash32::of("CAS 2026-11 witness order state v1", bytes)
}

/// Validates untrusted bytes as an [`OrderState`] (size, bytecheck) and returns it owned.
pub fn decode_order_state(bytes: &[u8]) -> Result<OrderState, OrderStateError> {
    if bytes.len() > ORDER_STATE_BYTES_MAX {
        return Err(OrderStateError::TooLarge {
            len: bytes.len(),
            max: ORDER_STATE_BYTES_MAX,
        });
    }
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<OrderState, cas_engine::codec::CheckError>(&aligned)
        .map_err(|e| OrderStateError::Malformed(cas_engine::text::reason(&e)))
}

/// A best-chain witness is paid once this many witness blocks are mined on top of it.
pub const REWARD_CONFIRMATIONS: u64 = 2;

/// Why a stored ledger block does not replay into the witness order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("ledger block {height} does not end with its issuance transaction")]
    MissingIssuance { height: u64 },
    #[error("ledger block {height}: issuance evidence {index}: {source}")]
    Evidence {
        height: u64,
        index: usize,
        #[source]
        source: WitnessDecodeError,
    },
    #[error("ledger block {height}: its issuance mints other outputs than the witness order pays")]
    Mismatch { height: u64 },
    #[error("ledger block {got} replayed after {executed}: blocks replay in height order from 1")]
    OutOfOrder { executed: u64, got: u64 },
}

/// What one block did to the order (for logs and counters).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockWitnesses {
    /// Carried headers the chain took.
    pub accepted: usize,
    /// Carried headers it refused (invalid, duplicate, too late): their index in the block and why. The driver
    /// logs them; the order is unaffected.
    pub skipped: Vec<(usize, WitnessError)>,
    /// The rewards that matured with this block, in payment order.
    pub rewards: Vec<Reward>,
}

/// The deterministic witness chain of the ledger (see the module header).
#[derive(Clone, Debug)]
pub struct WitnessOrder {
    chain: WitnessChain,
    confirmations: u64,
    /// The last ledger height executed (0 before block 1).
    executed_height: u64,
}

impl WitnessOrder {
    pub fn new(params: WitnessParams, limits: WitnessLimits, confirmations: u64) -> WitnessOrder {
        WitnessOrder {
            chain: WitnessChain::new(params, limits),
            confirmations,
            executed_height: 0,
        }
    }

    /// The order's state, encoded: byte-identical on every node that executed the same ledger blocks.
    pub fn export(&self) -> Vec<u8> {
        let state = OrderState {
            executed_height: self.executed_height,
            chain: self.chain.export(),
        };
        rkyv::to_bytes::<rkyv::rancor::Error>(&state)
            .expect("archiving into memory cannot fail")
            .to_vec()
    }

    /// The order after ledger block `height`, from the bytes [`Self::export`] gave there (untrusted until the
    /// caller has checked them against the hash the committee vouched for; decoded and checked again here).
    pub fn restore(
        params: WitnessParams,
        limits: WitnessLimits,
        confirmations: u64,
        height: u64,
        bytes: &[u8],
    ) -> Result<WitnessOrder, OrderStateError> {
        let state = decode_order_state(bytes)?;
        if state.executed_height != height {
            return Err(OrderStateError::WrongHeight {
                expected: height,
                got: state.executed_height,
            });
        }
        let chain = WitnessChain::restore(params, limits, state.chain)?;
        if chain.finalized_height() != height {
            return Err(OrderStateError::FinalizedHeight {
                expected: height,
                got: chain.finalized_height(),
            });
        }
        Ok(WitnessOrder {
            chain,
            confirmations,
            executed_height: height,
        })
    }

    /// [`Self::restore`] under this order's params, limits and confirmations.
    pub fn restored(&self, height: u64, bytes: &[u8]) -> Result<WitnessOrder, OrderStateError> {
        WitnessOrder::restore(
            self.chain.params().clone(),
            self.chain.limits().clone(),
            self.confirmations,
            height,
            bytes,
        )
    }

    pub fn chain(&self) -> &WitnessChain {
        &self.chain
    }

    pub fn executed_height(&self) -> u64 {
        self.executed_height
    }

    /// Ledger block `height`, stamped `timestamp_ms` by its proposer, carries `witnesses`: the chain takes them
    /// in order (every ledger block below `height` is final in it), and the rewards that mature are returned.
    /// Call [`Self::finalize`] with the block's hash once it is built.
    pub fn execute(
        &mut self,
        height: u64,
        timestamp_ms: u64,
        witnesses: &[WitnessHeader],
    ) -> BlockWitnesses {
        assert_eq!(
            height,
            self.executed_height + 1,
            "ledger blocks execute in height order"
        );
        let mut outcome = BlockWitnesses::default();
        for (index, header) in witnesses.iter().enumerate() {
            match self.chain.insert(header.clone(), timestamp_ms) {
                Ok(_) => outcome.accepted += 1,
                Err(error) => outcome.skipped.push((index, error)),
            }
        }
        outcome.rewards = self
            .chain
            .mature_rewards_bounded(self.confirmations, REWARD_HEIGHTS_PER_BLOCK_MAX);
        assert!(outcome.rewards.len() <= WITNESS_REWARD_OUTPUTS_MAX);
        outcome
    }

    /// Ledger block `height` (the one just executed) is stored with `hash`: witnesses may now commit to it.
    pub fn finalize(&mut self, height: u64, hash: BlockHash) {
        assert_eq!(height, self.executed_height + 1, "finalize follows execute");
        self.chain.add_finalized(height, hash);
        self.executed_height = height;
    }

    /// Replays a stored ledger block (heights in order from 1): the headers its issuance recorded go through
    /// [`Self::execute`] again, and the outputs it minted must be the ones the order pays.
    pub fn replay(&mut self, block: &Block) -> Result<(), OrderError> {
        self.replay_issuance(
            block.header.height,
            block.header.timestamp_ms,
            block.header.hash(),
            block.txs.last(),
        )
    }

    /// [`Self::replay`] from the parts it reads: the block's height, timestamp and hash, and its last transaction
    /// (so a restart need not deserialize every transaction of every stored block).
    pub fn replay_issuance(
        &mut self,
        height: u64,
        timestamp_ms: u64,
        hash: BlockHash,
        last: Option<&Transaction>,
    ) -> Result<(), OrderError> {
        if height != self.executed_height + 1 {
            return Err(OrderError::OutOfOrder {
                executed: self.executed_height,
                got: height,
            });
        }
        let Some(TxKind::Issuance {
            height: issued_at,
            evidence,
            ..
        }) = last.map(|tx| &tx.body.kind)
        else {
            return Err(OrderError::MissingIssuance { height });
        };
        if *issued_at != height {
            return Err(OrderError::MissingIssuance { height });
        }
        let mut witnesses = Vec::with_capacity(evidence.len());
        for (index, bytes) in evidence.iter().enumerate() {
            let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
            aligned.extend_from_slice(bytes);
            let header = decode_witness(&aligned).map_err(|source| OrderError::Evidence {
                height,
                index,
                source,
            })?;
            witnesses.push(header);
        }
        let outcome = self.execute(height, timestamp_ms, &witnesses);
        // The witness rewards come first; the validator payouts after them follow from the ledger's state, not the
        // witness order, and were checked against the committee's commitment when the block was certified.
        let minted = &last.expect("checked above").body.outputs;
        let paid = reward_outputs(&outcome.rewards);
        if minted.get(..paid.len()) != Some(&paid[..]) {
            return Err(OrderError::Mismatch { height });
        }
        self.finalize(height, hash);
        Ok(())
    }
}

/// The outputs that pay `rewards`: one unlocked CAS output per reward, in payment order.
pub fn reward_outputs(rewards: &[Reward]) -> Vec<TxOutput> {
    rewards
        .iter()
        .map(|reward| TxOutput {
            amount: reward.amount,
            asset: AssetId::CAS,
            owner: reward.to,
            unlock_height: None,
        })
        .collect()
}

/// What one block's issuance pays and reports besides the witness order's part.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Validators {
    /// The previous block's fee pot, when there is one.
    pub pot: Option<OutPoint>,
    /// The validator payouts ([`cas_engine::stake::validator_payouts`]).
    pub payouts: Vec<(PublicKey, u64)>,
    /// The committee members absent from the carried certificate (see [`TxKind::Issuance`]).
    pub absent: Option<Vec<PublicKey>>,
}

/// The issuance transaction of ledger block `height`: the carried headers as evidence and the absent members; the
/// previous block's fee pot as its input, when there is one; the witness rewards, then the validator payouts as
/// outputs. Built the same way by every node, so its id and outputs are byte-identical across the committee.
pub fn issuance_tx(
    chain_id: u32,
    height: u64,
    witnesses: &[WitnessHeader],
    rewards: &[Reward],
    validators: Validators,
) -> Transaction {
    let Validators {
        pot,
        payouts: validators,
        absent,
    } = validators;
    assert!(witnesses.len() <= ISSUANCE_EVIDENCE_MAX);
    let mut outputs = reward_outputs(rewards);
    outputs.extend(validators.iter().map(|(to, amount)| TxOutput {
        amount: *amount,
        asset: AssetId::CAS,
        owner: *to,
        unlock_height: None,
    }));
    Transaction {
        body: TxBody {
            chain_id,
            vn: 0,
            kind: TxKind::Issuance {
                height,
                evidence: witnesses
                    .iter()
                    .map(|w| encode_witness(w).to_vec())
                    .collect(),
                absent,
            },
            inputs: pot.into_iter().collect(),
            outputs,
            fee: 0,
            memo: Vec::new(),
            client_id: None,
        },
        signatures: Vec::new(),
    }
}
