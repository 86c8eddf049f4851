//! CAS Slaves: the UTXO set split into hash partitions, one per glommio executor (thread per core), with a
//! validation pipeline that is deterministic whatever the shard count, a durable block store on io_uring, UTXO
//! snapshots and crash recovery.
//!
//! # The pipeline ([`ledger::ShardedLedger`])
//! For each block, in height order:
//! 1. **Decode** the untrusted bytes once ([`cas_engine::codec::decode_block`]) on the coordinator.
//! 2. **Signatures**: the block's transactions are cut into ranges of [`limits::VERIFY_CHUNK_TXS`] on one bulk
//!    lane shared by the shards: whichever shard is free takes the next range, computes its tx ids and runs the
//!    engine's batched, cofactored verification. Verdicts never depend on where a range landed (the engine's
//!    batch verdicts are batch-independent), so neither the shard count nor the timing can change them. The
//!    signature checks of block k+1 run while block k commits.
//! 3. **Prefetch**: every input outpoint is looked up at its owning shard ([`partition::shard_of`]) in parallel.
//! 4. **Rules**: the engine's [`cas_engine::rules::apply_batch`] runs in block order over the prefetched view on
//!    the coordinator (about 1 µs per transaction): earlier transaction wins a double spend, chains inside the
//!    block work, rejected transactions change nothing and keep their [`cas_engine::TxError`].
//! 5. **Commit**: spent and created outputs go to their owning shards, which update their maps, balance indexes
//!    and LtHash commitments in parallel; the block's UTXO commitment is the combine of the shards' states, equal
//!    to [`cas_engine::MemoryLedger`]'s.
//!
//! # Durability ([`durable_ledger::DurableLedger`])
//! A block is appended to the [`store::BlockStore`] (checksummed, 4 KiB-aligned records in append-only segments,
//! written through io_uring with O_DIRECT and `fdatasync`ed, appends queued meanwhile as one group) while it is validated; its receipt is returned only once both
//! are done. Every `snapshot_every_blocks` (further apart as the set grows: [`snapshot::snapshot_due`]) a UTXO
//! snapshot is written (temp file, fsync, rename, fsync dir) from the set's mirror ([`mirror`]), a sorted copy kept on its own thread, so the shards never stop for it.
//! Reopening truncates a torn tail, loads the newest valid snapshot and replays the blocks after it. Each block's
//! header must commit to the UTXO set after its parent; it is checked before the block is written or applied.
//!
//! # State transfer ([`transfer`], [`durable_ledger::DurableLedger::install_snapshot`])
//! A node too far behind takes a snapshot from peers instead of every block: [`transfer::Assembler`] validates the
//! chunks and the whole set against a trusted commitment, and the install makes it the node's new base (the block
//! store then starts at the next height; see [`store`]).
//!
//! # Threads
//! One glommio executor per shard (pinned to core `i % cores` unless told otherwise) plus a plain thread for the
//! store's writes (its own io_uring: one submission and one sleep per group of appends). Nothing else burns CPU: signature checks run on the shards themselves (no rayon pool competing for
//! the same cores); the coordinator is the caller's thread and mostly waits. Each executor runs a single task that
//! blocks on its bounded command channels, which is sound because no other task shares that executor.
//! glommio locks `io_memory` per shard executor; [`runtime::check_memlock`] refuses to start, naming
//! `RLIMIT_MEMLOCK`, when the limit cannot hold every executor's share.

pub mod error;
pub mod runtime;
pub(crate) use cas_engine::fasthash as hash;
pub mod durable_ledger;
pub mod ledger;
pub mod limits;
mod mirror;
pub mod partition;
mod shard;
pub mod snapshot;
pub mod store;
mod store_writer;
pub mod transfer;

pub use durable_ledger::{DurableLedger, DurableLedgerConfig, InFlight, Receipt, Recovery};
pub use error::Error;
pub use ledger::{BlockOutcome, LedgerConfig, PendingBlock, ShardedLedger};
pub use store::{BlockStore, Location, StoreConfig};
pub use transfer::{Assembler, TransferError};
