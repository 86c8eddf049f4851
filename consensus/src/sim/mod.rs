//! The deterministic simulator: many members' state machines under virtual time, driven by one seeded RNG, with
//! per-link latency, loss, duplication, reordering, partitions that heal, crashes with restart from persisted
//! state, and Byzantine members. After each run it checks safety (no two honest members commit different blocks at
//! one height), liveness (after the last fault heals, every honest member commits again within a bound), that
//! committed certificates verify, and that no package is attested valid while holding a bad signature. The same
//! seed replays the same run exactly; a failing run prints its seed.
//!
//! Usable by later crates' tests: [`runner::Scenario`] describes a run, [`runner::run`] executes it. The scale
//! model ([`scale`]) drives the same state machines with CPU and bandwidth queues to project TPS and latency for
//! networks of up to a thousand nodes.

pub mod epochs;
pub mod machines;
pub mod network;
pub mod runner;
pub mod scale;

pub use network::{LinkModel, Rng};
pub use runner::{run, FaultClass, Report, Scenario};

/// The number after `name` among the command-line `args` of the simulator's examples, if given; a value that does
/// not parse stops the example with a message.
pub fn flag<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number"))
        })
}
