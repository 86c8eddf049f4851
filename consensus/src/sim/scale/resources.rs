//! The scale model's two kinds of queue: a node's CPU (`cores` identical servers) and its uplink (one link with a
//! priority lane for consensus messages). Both only compute when work finishes, in virtual µs; they also count
//! the busy time that started inside the measurement window, split into work proportional to transactions
//! (load) and fixed protocol work (overhead), which is what the saturation search extrapolates from.

/// What a piece of work is, for the utilization split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    /// Grows with transactions: signature checks, execution, package and block bytes, forwarded transactions.
    Load,
    /// Fixed protocol work: votes, certificates, proposals, acks.
    Overhead,
}

/// Busy µs that started inside the window, and load µs of the whole run (work a transaction causes can start after
/// the window closes: a long latency defers it).
#[derive(Clone, Copy, Debug, Default)]
pub struct Busy {
    pub load_us: f64,
    pub overhead_us: f64,
    pub load_run_us: f64,
}

impl Busy {
    fn add(&mut self, work: Work, us: f64, in_window: bool) {
        match work {
            Work::Load => {
                self.load_run_us += us;
                if in_window {
                    self.load_us += us;
                }
            }
            Work::Overhead if in_window => self.overhead_us += us,
            Work::Overhead => {}
        }
    }
}

/// The measurement window `[from_us, to_us)`.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub from_us: u64,
    pub to_us: u64,
}

impl Window {
    pub fn contains(&self, at_us: u64) -> bool {
        at_us >= self.from_us && at_us < self.to_us
    }

    pub fn length_us(&self) -> u64 {
        self.to_us - self.from_us
    }
}

/// `cores` servers taking jobs first come, first served.
pub struct Cpu {
    cores_free_us: Vec<f64>,
    pub busy: Busy,
}

impl Cpu {
    pub fn new(cores: usize) -> Cpu {
        assert!(cores >= 1, "a node has at least one core");
        Cpu {
            cores_free_us: vec![0.0; cores],
            busy: Busy::default(),
        }
    }

    pub fn cores(&self) -> usize {
        self.cores_free_us.len()
    }

    /// Runs `work_us` of CPU arriving at `now_us` on the core free first; returns when it finishes.
    pub fn run(&mut self, now_us: u64, work_us: f64, work: Work, window: Window) -> u64 {
        let core = (0..self.cores_free_us.len())
            .min_by(|a, b| self.cores_free_us[*a].total_cmp(&self.cores_free_us[*b]))
            .expect("at least one core");
        let start = self.cores_free_us[core].max(now_us as f64);
        self.cores_free_us[core] = start + work_us;
        self.busy.add(work, work_us, window.contains(start as u64));
        (start + work_us).ceil() as u64
    }

    /// Runs `work_us` split evenly over every core (batched signature checks and sharded execution parallelize);
    /// returns when the last part finishes.
    pub fn run_parallel(&mut self, now_us: u64, work_us: f64, work: Work, window: Window) -> u64 {
        let part = work_us / self.cores_free_us.len() as f64;
        let mut done = now_us as f64;
        for free in &mut self.cores_free_us {
            let start = free.max(now_us as f64);
            *free = start + part;
            done = done.max(*free);
            self.busy.add(work, part, window.contains(start as u64));
        }
        done.ceil() as u64
    }
}

/// Which lane of the uplink a message takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// Proposals, votes, timeouts: sent before any queued bulk bytes (the node's netio consensus lane).
    Consensus,
    /// Everything else, first in first out.
    Bulk,
}

/// A node's uplink: a message of S bytes holds it for S / bandwidth. Consensus messages overtake queued bulk
/// messages (at message granularity: a message already on the wire is not interrupted) and delay them by their
/// own transmission time.
pub struct Uplink {
    bytes_per_us: f64,
    consensus_free_us: f64,
    bulk_free_us: f64,
    pub busy: Busy,
}

impl Uplink {
    pub fn new(bandwidth_bytes_per_s: u64) -> Uplink {
        assert!(bandwidth_bytes_per_s > 0, "an uplink needs bandwidth");
        Uplink {
            bytes_per_us: bandwidth_bytes_per_s as f64 / 1e6,
            consensus_free_us: 0.0,
            bulk_free_us: 0.0,
            busy: Busy::default(),
        }
    }

    /// Queues `bytes` at `now_us`; returns when the last byte has left.
    pub fn send(
        &mut self,
        now_us: u64,
        bytes: usize,
        lane: Lane,
        work: Work,
        window: Window,
    ) -> u64 {
        let now = now_us as f64;
        let wire_us = bytes as f64 / self.bytes_per_us;
        let (start, done) = match lane {
            Lane::Consensus => {
                let start = self.consensus_free_us.max(now);
                self.consensus_free_us = start + wire_us;
                // The bulk lane loses the bandwidth this message took.
                self.bulk_free_us = self.bulk_free_us.max(now) + wire_us;
                (start, start + wire_us)
            }
            Lane::Bulk => {
                let start = self.bulk_free_us.max(now);
                self.bulk_free_us = start + wire_us;
                (start, start + wire_us)
            }
        };
        self.busy.add(work, wire_us, window.contains(start as u64));
        done.ceil() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Window = Window {
        from_us: 0,
        to_us: u64::MAX,
    };

    #[test]
    fn cpu_serves_on_the_first_free_core() {
        let mut cpu = Cpu::new(2);
        assert_eq!(cpu.run(0, 10.0, Work::Load, ALL), 10);
        assert_eq!(cpu.run(0, 10.0, Work::Load, ALL), 10);
        assert_eq!(cpu.run(0, 10.0, Work::Overhead, ALL), 20);
        assert_eq!(cpu.run_parallel(0, 20.0, Work::Load, ALL), 30);
        assert_eq!(cpu.busy.load_us, 40.0);
        assert_eq!(cpu.busy.overhead_us, 10.0);
    }

    #[test]
    fn uplink_takes_bytes_over_bandwidth_and_consensus_overtakes_bulk() {
        let mut uplink = Uplink::new(1_000_000); // 1 byte per µs
        assert_eq!(uplink.send(0, 1_000, Lane::Bulk, Work::Load, ALL), 1_000);
        assert_eq!(uplink.send(0, 1_000, Lane::Bulk, Work::Load, ALL), 2_000);
        // A vote queued now leaves before the second bulk message, which it then delays.
        assert_eq!(
            uplink.send(10, 100, Lane::Consensus, Work::Overhead, ALL),
            110
        );
        assert_eq!(uplink.send(10, 1, Lane::Bulk, Work::Load, ALL), 2_101);
    }
}
