//! `cargo run --release -p cas-consensus --example epochs -- --seeds N [--first S]`: runs N seeds of every
//! hand-over fault ([`cas_consensus::sim::epochs`]) and prints one line per fault (runs, runs whose boundary was
//! made final through tail blocks, problems), each problem with its seed, and a final
//! `epochs: <runs> runs, <problems> problems`.

use cas_consensus::sim::epochs::{run_epochs, EpochFault};
use cas_consensus::sim::flag;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seeds: u64 = flag(&args, "--seeds").unwrap_or(100);
    let first: u64 = flag(&args, "--first").unwrap_or(1);
    let (mut runs_total, mut problems_total) = (0u64, 0u64);
    for fault in EpochFault::ALL {
        let (mut through_tail, mut problems) = (0u64, 0u64);
        for seed in first..first + seeds {
            let report = run_epochs(seed, fault);
            through_tail += report.ended_through_tail as u64;
            for problem in report.problems() {
                eprintln!("seed={seed} fault={}: {problem}", fault.name());
                problems += 1;
            }
        }
        runs_total += seeds;
        problems_total += problems;
        println!(
            "{:<20} runs {:>6}  ended through tail blocks {:>6}  problems {:>3}",
            fault.name(),
            seeds,
            through_tail,
            problems
        );
    }
    println!("epochs: {runs_total} runs, {problems_total} problems");
}
