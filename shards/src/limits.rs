//! Every bound of the shards crate as a named constant, with their relations checked at compile time.
//! Nothing here allocates or runs; change a limit here and nowhere else.

use cas_engine::codec::BLOCK_BYTES_MAX;
use cas_engine::crypto::VERIFY_BATCH_SIZE;

/// Most shards one ledger runs.
pub const SHARDS_MAX: usize = 64;

/// glommio's locked io memory for a shard executor. Shards do no IO, so they take glommio's minimum (64 KiB).
pub const SHARD_IO_MEMORY_BYTES: usize = 64 * 1024;
/// glommio refuses to start any executor when RLIMIT_MEMLOCK is below this (its own check).
pub const GLOMMIO_MEMLOCK_MIN_BYTES: u64 = 512 * 1024;
/// io_uring submission queue depth per shard executor (shards do no IO).
pub const RING_DEPTH: usize = 64;

/// Transactions per signature job: one engine batch, so a job is one batched verification.
pub const VERIFY_CHUNK_TXS: usize = VERIFY_BATCH_SIZE;
/// Commands queued on a shard's urgent lane (lookups, commits, queries).
pub const SHARD_URGENT_QUEUE_MAX: usize = 64;
/// Signature jobs queued per shard on the shared bulk lane; a full lane makes the coordinator wait (back-pressure).
pub const SHARD_BULK_QUEUE_MAX: usize = 256;
/// Appends queued at the store's writer; also the most appends one group commit writes.
pub const STORE_QUEUE_MAX: usize = 16;
/// The most bytes one group commit gathers (a single larger record is written alone): bounds the writer's buffer
/// at this or one record, whichever is larger.
pub const GROUP_COMMIT_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Blocks a caller may keep between `begin` and `complete` (the pipeline depth used by replay and benchmarks).
pub const IN_FLIGHT_BLOCKS_MAX: usize = 4;

/// Records start on this boundary, so appending never rewrites a page that holds an acknowledged record.
pub const RECORD_ALIGN_BYTES: usize = 4096;
/// magic (4) + payload length (4) + height (8) + blake3 checksum (32).
pub const RECORD_HEADER_BYTES: usize = 48;
/// The largest record payload: one encoded block.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = BLOCK_BYTES_MAX;
/// Default segment size before a new segment file is started.
pub const SEGMENT_BYTES_DEFAULT: u64 = 256 * 1024 * 1024;
/// Default blocks between UTXO snapshots while the set is small (see `snapshot::snapshot_due`).
pub const SNAPSHOT_EVERY_BLOCKS_DEFAULT: u64 = 1024;
/// A snapshot writes the whole set, so the spacing between snapshots doubles (from `snapshot_every_blocks`) until
/// the set holds at most this many outputs per block of spacing: the snapshot bytes written per block stay bounded
/// as the set grows, instead of growing with it.
pub const SNAPSHOT_OUTPUTS_PER_BLOCK: u64 = 1024;
/// At most this many doublings (64 x `snapshot_every_blocks`): a restart replays at most that many blocks.
pub const SNAPSHOT_SPACING_DOUBLINGS_MAX: u32 = 6;
/// Commits (one per block, or a load) queued for the set's mirror. Full: the committing thread waits until the
/// mirror catches up (it falls behind only while it writes a snapshot), so memory stays bounded.
pub const MIRROR_QUEUE_MAX: usize = 1024;
/// Changes (spent outpoints plus created outputs) the mirror logs before it folds them into its sorted copy, when
/// the copy is smaller than that: past `max(copy, this)` it folds them in (a snapshot folds whatever is logged), so
/// the log stays within the copy's size and each change is moved a bounded number of times.
pub const MIRROR_LOG_MIN: usize = 1 << 18;
/// The nice value of the mirror's thread (0 is normal, 19 the lowest): snapshots yield to block commits.
pub const MIRROR_NICE: libc::c_int = 10;
/// Snapshots kept on disk; older ones are deleted after a new one is durable.
pub const SNAPSHOTS_KEPT: usize = 2;
/// Entries a snapshot may hold (bounds what recovery reads before checking the checksum).
pub const SNAPSHOT_ENTRIES_MAX: u64 = 1 << 32;

/// Entries per snapshot transfer chunk (4,096 x 117 bytes = 468 KiB, under the wire's chunk limit).
pub const SNAPSHOT_CHUNK_ENTRIES: usize = 4096;

const _: () = assert!(SHARDS_MAX > 0);
const _: () = assert!(SNAPSHOT_CHUNK_ENTRIES > 0);
const _: () = assert!(SNAPSHOT_OUTPUTS_PER_BLOCK > 0 && SNAPSHOT_SPACING_DOUBLINGS_MAX < 32);
const _: () = assert!(MIRROR_QUEUE_MAX > 0 && MIRROR_LOG_MIN > 0);
const _: () = assert!(VERIFY_CHUNK_TXS > 0);
const _: () = assert!(SHARD_BULK_QUEUE_MAX >= IN_FLIGHT_BLOCKS_MAX);
const _: () = assert!(STORE_QUEUE_MAX >= IN_FLIGHT_BLOCKS_MAX);
const _: () = assert!(RECORD_HEADER_BYTES < RECORD_ALIGN_BYTES);
const _: () = assert!(RECORD_ALIGN_BYTES.is_power_of_two());
const _: () = assert!(GROUP_COMMIT_BYTES_MAX.is_multiple_of(RECORD_ALIGN_BYTES));
const _: () =
    assert!(SEGMENT_BYTES_DEFAULT > (RECORD_PAYLOAD_BYTES_MAX + RECORD_ALIGN_BYTES) as u64);
