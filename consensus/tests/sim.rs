//! The simulator as the main test of consensus: seeded runs of every fault class, each checked for safety,
//! liveness after the faults heal, valid certificates and honest attestation. A failure names its seed; replay it
//! with `Scenario::new(seed, fault)`.

use cas_consensus::sim::{run, FaultClass, LinkModel, Scenario};

/// Seeds per fault class in the test suite (9 classes: 1,080 runs). The example runs more.
const SEEDS_PER_CLASS: u64 = 120;

/// Runs the class's seeds; fails on any violation. Returns the equivocations proven (an honest member proven
/// equivocating is a violation, so these are all the Byzantine members').
fn run_class(fault: FaultClass) -> u64 {
    let mut failures = Vec::new();
    let mut commits = 0;
    let mut equivocations = 0;
    for seed in 1..=SEEDS_PER_CLASS {
        let report = run(&Scenario::new(seed, fault));
        commits += report.commits;
        equivocations += report.equivocations_proven;
        if !report.violations.is_empty() {
            failures.push(format!(
                "seed={seed} fault={}: {:?}",
                fault.name(),
                report.violations
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "replay with Scenario::new(seed, fault):\n{}",
        failures.join("\n")
    );
    // Every run must also make real progress, or "no violation" means nothing.
    assert!(
        commits >= SEEDS_PER_CLASS * 10,
        "{}: only {commits} commits in {SEEDS_PER_CLASS} runs",
        fault.name()
    );
    equivocations
}

#[test]
fn clean() {
    run_class(FaultClass::Clean);
}

#[test]
fn lossy() {
    run_class(FaultClass::Lossy);
}

#[test]
fn partition() {
    run_class(FaultClass::Partition);
}

#[test]
fn crash_restart() {
    run_class(FaultClass::CrashRestart);
}

#[test]
fn equivocating_leader() {
    run_class(FaultClass::EquivocatingLeader);
}

#[test]
fn double_voter() {
    run_class(FaultClass::DoubleVoter);
}

#[test]
fn byzantine_acker() {
    run_class(FaultClass::ByzantineAcker);
}

#[test]
fn forking_leader() {
    run_class(FaultClass::ForkingLeader);
}

#[test]
fn mixed() {
    // The double voter votes for both of the equivocating leader's proposals: the others prove it.
    let proven = run_class(FaultClass::Mixed);
    assert!(
        proven > 0,
        "no equivocation was proven in {SEEDS_PER_CLASS} runs"
    );
    eprintln!("mixed: {proven} equivocations proven");
}

#[test]
fn a_seed_replays_exactly() {
    for fault in [
        FaultClass::Lossy,
        FaultClass::CrashRestart,
        FaultClass::Mixed,
    ] {
        let first = run(&Scenario::new(42, fault));
        let second = run(&Scenario::new(42, fault));
        assert_eq!(first.commits, second.commits);
        assert_eq!(first.messages, second.messages);
        assert_eq!(first.commit_latencies_ms, second.commit_latencies_ms);
        assert_ne!(
            run(&Scenario::new(43, fault)).messages,
            first.messages,
            "another seed, another run"
        );
    }
}

#[test]
fn clean_commit_latency_is_three_message_delays() {
    let mut scenario = Scenario::new(7, FaultClass::Clean);
    scenario.link = LinkModel::fixed(50);
    let mut latencies = run(&scenario).commit_latencies_ms;
    latencies.sort_unstable();
    let median = latencies[latencies.len() / 2];
    // Proposal, votes to all (each member forms the QC), commit votes to all, plus up to one 10 ms tick.
    assert!(
        (150..=170).contains(&median),
        "median commit latency {median} ms"
    );
}

/// Issue 16 item 7: a member down for 11.6 s of a 30 s run used to cost a round timeout in every round it would
/// lead (one in n). With leaders chosen from the committed history ([`cas_consensus::leader`]) it costs a few, and
/// once it is back it leads again. Timeout certificates per run for these seeds: round-robin (before) 14-15 with 4
/// members and 9-10 with 7; now 3-5 and 1-4.
#[test]
fn a_long_crash_costs_a_few_rounds_and_the_member_leads_again() {
    for members in [4, 7] {
        for seed in 1..=6 {
            let scenario = Scenario {
                members,
                duration_ms: 30_000,
                faults_until_ms: 12_000,
                liveness_bound_ms: 15_000,
                ..Scenario::new(seed, FaultClass::LongCrash)
            };
            let report = run(&scenario);
            assert!(
                report.violations.is_empty(),
                "seed={seed} members={members}: {:?}",
                report.violations
            );
            assert!(
                report.tcs_formed_max <= 5,
                "seed={seed} members={members}: {} rounds timed out",
                report.tcs_formed_max
            );
            let victim = report.crashed[0];
            assert!(
                report.proposals[victim] > 0,
                "seed={seed} members={members}: member {victim} did not lead after its restart"
            );
        }
    }
}

/// Issue 18 (rolling upgrade): every member schedules protocol 2 at height 8, inside the faults' window, in every
/// fault class: each committed block carries its height's version (the runner checks it, and the version's
/// timestamp rule), the committee crosses the switch without a violation, and blocks of the new version commit.
#[test]
fn the_committee_switches_protocol_at_the_scheduled_height_through_every_fault() {
    use cas_consensus::protocol::{ProtocolSchedule, ProtocolUpgrade};
    let schedule = ProtocolSchedule::new(vec![ProtocolUpgrade {
        version: 2,
        height: 8,
    }])
    .unwrap();
    for fault in FaultClass::ALL {
        for seed in 1..=12 {
            // Twice the usual run, so every class gets well past the switch after its faults heal.
            let mut scenario = Scenario {
                duration_ms: 8_000,
                ..Scenario::new(seed, fault)
            };
            scenario.bft.protocol = schedule.clone();
            let report = run(&scenario);
            assert!(
                report.violations.is_empty(),
                "seed={seed} fault={}: {:?}",
                fault.name(),
                report.violations
            );
            assert!(
                report.commits > 8 && report.protocol_committed_max == 2,
                "seed={seed} fault={}: {} commits, newest protocol {}",
                fault.name(),
                report.commits,
                report.protocol_committed_max
            );
        }
    }
}
