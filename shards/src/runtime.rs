//! Where shards run: glommio executors (the locked-memory budget check, core placement, the handles the coordinator
//! keeps: bounded command lanes and the join handle), or, for a ledger of one shard whose caller would only wait
//! for it, the caller's own thread. It owns no ledger state beyond such a caller-thread shard, and runs no ledger
//! code beyond handing that shard its commands.

use std::future::Future;
use std::sync::Mutex;

use crossbeam_channel::{bounded, Receiver, Sender};
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

use crate::error::Error;
use crate::limits::{
    GLOMMIO_MEMLOCK_MIN_BYTES, RING_DEPTH, SHARD_BULK_QUEUE_MAX, SHARD_IO_MEMORY_BYTES,
    SHARD_URGENT_QUEUE_MAX,
};
use crate::shard::{self, Command, ShardState, VerifyJob};

/// The soft RLIMIT_MEMLOCK in bytes (`u64::MAX` when unlimited).
pub fn memlock_limit_bytes() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    if rc != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return u64::MAX;
    }
    limit.rlim_cur
}

/// Locked io memory that `shards` shard executors take (the store's writer is a plain thread and locks none).
pub fn memlock_needed_bytes(shards: usize) -> u64 {
    (shards * SHARD_IO_MEMORY_BYTES) as u64
}

/// Refuses to start when RLIMIT_MEMLOCK cannot hold every executor's io memory, or is below glommio's own minimum.
pub fn check_memlock(shards: usize) -> Result<(), Error> {
    let limit_bytes = memlock_limit_bytes();
    let needed_bytes = memlock_needed_bytes(shards).max(GLOMMIO_MEMLOCK_MIN_BYTES);
    if limit_bytes < needed_bytes {
        return Err(Error::MemlockTooLow {
            limit_bytes,
            needed_bytes,
            executors: shards,
            per_executor_min_bytes: GLOMMIO_MEMLOCK_MIN_BYTES,
        });
    }
    Ok(())
}

/// Where executor `index` runs: pinned to core `index % cores`, or anywhere.
pub fn placement(index: usize, pin_cores: bool) -> Placement {
    if !pin_cores {
        return Placement::Unbound;
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    Placement::Fixed(index % cores)
}

/// Starts one glommio executor running `task` to completion.
pub(crate) fn spawn_executor<F, T>(
    name: &str,
    placement: Placement,
    io_memory_bytes: usize,
    task: impl FnOnce() -> F + Send + 'static,
) -> Result<ExecutorJoinHandle<T>, Error>
where
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    LocalExecutorBuilder::new(placement)
        .name(name)
        .io_memory(io_memory_bytes)
        .ring_depth(RING_DEPTH)
        .spawn(task)
        .map_err(|error| Error::ExecutorStart {
            name: name.to_string(),
            limit_bytes: memlock_limit_bytes(),
            reason: error.to_string(),
        })
}

/// The coordinator's end of one shard: its own urgent lane and its executor, or the shard itself when it runs on
/// the caller's thread. The bulk lane (signature jobs) is one queue shared by every executor shard ([`BulkLane`]):
/// whichever shard is free takes the next job, so a shard slowed by the coordinator or a commit never leaves the
/// others idle at the end of a block.
pub(crate) struct ShardHandle {
    pub index: usize,
    runs: Runs,
}

enum Runs {
    /// On a glommio executor of its own, fed through its urgent lane (closed on drop, then joined).
    Executor {
        urgent: Option<Sender<Command>>,
        join: Option<ExecutorJoinHandle<()>>,
    },
    /// On the caller's thread: each command is handled when it is sent, so its reply is ready when waited for.
    /// Behind a lock only so the ledger stays shareable; one caller at a time uses it.
    Caller(Mutex<ShardState>),
}

/// The sending end of the shards' shared bulk lane, or none when the one shard runs on the caller's thread.
pub(crate) enum BulkLane {
    Shared(Sender<Command>),
    /// Signature jobs run when sent, on the caller's thread (they read no shard state).
    Caller,
}

impl BulkLane {
    /// A lane holding at most `SHARD_BULK_QUEUE_MAX` jobs per shard, and the receiving end each shard takes a
    /// clone of.
    pub fn new(shards: usize) -> (BulkLane, Receiver<Command>) {
        let (lane, jobs) = bounded(SHARD_BULK_QUEUE_MAX * shards);
        (BulkLane::Shared(lane), jobs)
    }

    /// Queues a signature job for whichever shard is free first; waits while the lane is full (back-pressure on
    /// the caller). On the caller's thread, runs it.
    pub fn send(&self, job: VerifyJob) -> Result<(), Error> {
        match self {
            BulkLane::Shared(lane) => {
                lane.send(Command::Verify(job))
                    .map_err(|_| Error::ExecutorStopped {
                        name: "cas-shard-*".to_string(),
                    })
            }
            BulkLane::Caller => {
                job.run();
                Ok(())
            }
        }
    }
}

impl ShardHandle {
    pub fn start(
        index: usize,
        pin_cores: bool,
        bulk_rx: Receiver<Command>,
    ) -> Result<ShardHandle, Error> {
        let (urgent_tx, urgent_rx) = bounded(SHARD_URGENT_QUEUE_MAX);
        let join = spawn_executor(
            &format!("cas-shard-{index}"),
            placement(index, pin_cores),
            SHARD_IO_MEMORY_BYTES,
            move || async move { shard::run(index, urgent_rx, bulk_rx) },
        )?;
        Ok(ShardHandle {
            index,
            runs: Runs::Executor {
                urgent: Some(urgent_tx),
                join: Some(join),
            },
        })
    }

    /// A shard that runs on the caller's thread (the ledger's only one).
    pub fn on_caller_thread(index: usize) -> ShardHandle {
        ShardHandle {
            index,
            runs: Runs::Caller(Mutex::new(ShardState::default())),
        }
    }

    fn stopped(&self) -> Error {
        Error::ExecutorStopped {
            name: format!("cas-shard-{}", self.index),
        }
    }

    /// Queues a lookup, commit or query; waits while the lane is full. On the caller's thread, handles it: its
    /// reply is then waiting in the reply channel.
    pub fn urgent(&self, command: Command) -> Result<(), Error> {
        match &self.runs {
            Runs::Executor { urgent, .. } => {
                let lane = urgent.as_ref().expect("lanes close only on drop");
                lane.send(command).map_err(|_| self.stopped())
            }
            Runs::Caller(state) => {
                state.lock().expect("a shard lock").handle(command);
                Ok(())
            }
        }
    }

    /// Waits for a reply from this shard.
    pub fn wait<T>(&self, reply: &crossbeam_channel::Receiver<T>) -> Result<T, Error> {
        reply.recv().map_err(|_| self.stopped())
    }
}

impl Drop for ShardHandle {
    fn drop(&mut self) {
        // Closing its urgent lane ends the shard's loop (jobs left on the shared bulk lane are dropped with it);
        // then its thread is joined.
        let Runs::Executor { urgent, join } = &mut self.runs else {
            return;
        };
        urgent.take();
        if let Some(join) = join.take() {
            if let Err(error) = join.join() {
                tracing::error!(shard = self.index, %error, "shard executor ended badly");
            }
        }
    }
}
