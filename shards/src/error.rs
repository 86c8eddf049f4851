//! The crate's one error type. Every variant carries what an operator needs to act: the limit, the height, the
//! segment file and byte offset. Bad input and bad disks are errors; broken invariants panic instead.

use std::path::PathBuf;

use cas_engine::codec::DecodeError;
use cas_engine::ledger::LedgerError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("shard count {count} is outside 1..={max}")]
    ShardCount { count: usize, max: usize },
    #[error("only a ledger of one shard can run it on the caller's thread, not {count} shards")]
    CallerThreadShards { count: usize },
    #[error(
        "RLIMIT_MEMLOCK is {limit_bytes} bytes, but {executors} glommio executors need {needed_bytes} bytes of locked \
         io memory (at least {per_executor_min_bytes} for any executor); raise the limit (ulimit -l) or run fewer shards"
    )]
    MemlockTooLow {
        limit_bytes: u64,
        needed_bytes: u64,
        executors: usize,
        per_executor_min_bytes: u64,
    },
    #[error(
        "could not start glommio executor {name} (RLIMIT_MEMLOCK is {limit_bytes} bytes): {reason}"
    )]
    ExecutorStart {
        name: String,
        limit_bytes: u64,
        reason: String,
    },
    #[error("executor {name} stopped unexpectedly")]
    ExecutorStopped { name: String },
    #[error("block bytes rejected: {0}")]
    Decode(#[from] DecodeError),
    #[error("block height {got} arrived, expected {expected}")]
    HeightOutOfOrder { expected: u64, got: u64 },
    #[error("block is for chain {got}, this ledger is chain {expected}")]
    WrongChain { expected: u32, got: u32 },
    #[error("{ids} transaction ids were given for a block of {txs} transactions")]
    IdCountMismatch { ids: usize, txs: usize },
    #[error("genesis: {0}")]
    Genesis(#[from] LedgerError),
    #[error("the store holds genesis {stored:?} but genesis {given:?} was given")]
    GenesisMismatch {
        stored: cas_engine::Hash32,
        given: cas_engine::Hash32,
    },
    #[error("the store is empty and no genesis block was given")]
    NoGenesis,
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt record in segment {segment} at byte offset {offset}: {reason}")]
    Corrupt {
        segment: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("record of {len} bytes exceeds the limit of {max}")]
    RecordTooLarge { len: usize, max: usize },
    #[error("height {height} is not in the store (durable up to {durable:?})")]
    NotStored { height: u64, durable: Option<u64> },
    #[error(
        "block {height}'s header commits to UTXO set {header} before it, but the set after block {} is {computed}",
        height - 1
    )]
    ParentCommitmentMismatch {
        height: u64,
        header: cas_engine::Hash32,
        computed: cas_engine::Hash32,
    },
    #[error("snapshot {path}: {reason}")]
    Snapshot { path: PathBuf, reason: String },
}

impl Error {
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Error {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }
}
