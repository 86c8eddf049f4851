//! The scale model's tests: the shape rules, determinism, and that projections move the way physics says they
//! must. Small committees and short runs keep them fast; none asserts a wall-clock speed.

use super::*;

/// A small, quick network: a committee of 4, short runs.
fn small(total_nodes: usize) -> ScaleParams {
    ScaleParams {
        committee_max: 4,
        duration_ms: 900,
        warmup_ms: 300,
        ..ScaleParams::lan_default(total_nodes)
    }
}

#[test]
fn committee_is_the_largest_3f_plus_1_under_the_cap() {
    let cases = [
        (1, 21, 1),
        (3, 21, 1),
        (4, 21, 4),
        (5, 21, 4),
        (7, 21, 7),
        (13, 21, 13),
    ];
    for (total, cap, expected) in cases {
        assert_eq!(
            committee_size(total, cap),
            expected,
            "{total} nodes, cap {cap}"
        );
    }
    assert_eq!(committee_size(999, 21), 19);
    assert_eq!(committee_size(999, 22), 22);
}

#[test]
fn broadcast_tree_has_two_tiers_and_respects_the_fanout_at_the_committee() {
    for total in [3, 21, 49, 171, 999] {
        let t = Topology::new(total, 21, 8);
        assert_eq!(t.committee + t.relays + t.plains, total);
        for member in 0..t.committee {
            assert!(t.children[member].len() <= 8);
            assert_eq!(t.parent[member], None);
        }
        for node in t.committee..total {
            let parent = t.parent[node].expect("every non-member has a parent");
            if node < t.committee + t.relays {
                assert!(parent < t.committee, "a relay hangs under a member");
            } else {
                assert!(
                    (t.committee..t.committee + t.relays).contains(&parent),
                    "a plain node hangs under a relay"
                );
            }
        }
    }
    let t = Topology::new(999, 21, 8);
    assert_eq!((t.committee, t.relays, t.plains), (19, 152, 828));
}

#[test]
fn default_tx_bytes_is_an_encoded_transfer() {
    use cas_engine::codec::encode_tx;
    use cas_engine::fixtures::{funded_genesis, key, transfer, ACCOUNT_KEYS};
    use cas_engine::genesis::genesis_outputs;
    let genesis = funded_genesis(1, 2, 1, 1, 1_000);
    let coin = genesis_outputs(&genesis.txs)[0];
    let tx = transfer(
        1,
        &key(ACCOUNT_KEYS, 0),
        &[coin],
        &key(ACCOUNT_KEYS, 1),
        1,
        1,
    );
    assert_eq!(ScaleParams::lan_default(3).tx_bytes, encode_tx(&tx).len());
}

#[test]
fn same_params_and_seed_give_the_same_result() {
    let mut params = small(40);
    params.offered_tps = 30_000.0;
    let first = project(&params);
    assert_eq!(project(&params), first);
    assert!(first.tps > 0.0 && first.latency_p50_ms.is_finite());
    params.seed = 2;
    let other = project(&params);
    assert!((other.tps - first.tps).abs() / first.tps < 0.05);
    let saturated = project_saturated(&small(40));
    assert_eq!(project_saturated(&small(40)), saturated);
}

#[test]
fn throughput_follows_offered_load_when_nothing_is_scarce() {
    for offered in [5_000.0, 40_000.0, 150_000.0] {
        let params = ScaleParams {
            bandwidth_bytes_per_s: 100_000_000_000,
            verify_us_per_signature: 0.01,
            execute_us_per_tx: 0.01,
            offered_tps: offered,
            ..small(40)
        };
        let result = project(&params);
        assert!(
            (result.tps - offered).abs() / offered < 0.03,
            "offered {offered}, got {result:?}"
        );
        assert!(result.sustained, "{result:?}");
        assert_eq!(result.bottleneck, "latency", "{result:?}");
    }
}

#[test]
fn cutting_bandwidth_never_raises_throughput() {
    let full = project_saturated(&small(60));
    let mut cut = small(60);
    cut.bandwidth_bytes_per_s /= 4;
    let cut = project_saturated(&cut);
    assert!(full.sustained && cut.sustained, "{full:?} {cut:?}");
    assert!(cut.tps <= full.tps * 1.02, "{cut:?} vs {full:?}");
    assert_eq!(cut.bottleneck, "bandwidth", "{cut:?}");
    assert!(
        cut.tps < full.tps * 0.5,
        "a quarter of the bandwidth: {cut:?} vs {full:?}"
    );
}

#[test]
fn latency_grows_with_link_latency() {
    let mut near = small(40);
    near.offered_tps = 20_000.0;
    let mut far = near.clone();
    far.one_way_latency_us = 20_000;
    let (near, far) = (project(&near), project(&far));
    assert!(near.sustained && far.sustained, "{near:?} {far:?}");
    // A transaction crosses at least three links after its package (to checkers, acks back, the proposal) and
    // more before it is final: 20 ms links must add well over 40 ms.
    assert!(
        far.latency_p50_ms > near.latency_p50_ms + 40.0,
        "{near:?} {far:?}"
    );
}

#[test]
fn more_nodes_never_raise_throughput() {
    // The committee stays 4 members; only the tree below it grows.
    let mut previous: Option<ScaleResult> = None;
    for total in [4, 12, 40, 150, 600] {
        let result = project_saturated(&small(total));
        assert!(result.sustained, "{result:?}");
        if let Some(previous) = &previous {
            assert!(
                result.tps <= previous.tps * 1.03,
                "{total} nodes: {result:?} after {previous:?}"
            );
        }
        previous = Some(result);
    }
}

#[test]
fn more_nodes_never_raise_throughput_with_the_default_committee() {
    let mut previous: Option<ScaleResult> = None;
    for total in [21, 99, 499, 999] {
        let params = ScaleParams {
            duration_ms: 900,
            warmup_ms: 300,
            ..ScaleParams::lan_default(total)
        };
        let result = project_saturated(&params);
        assert_eq!(result.committee, 19);
        assert!(result.sustained, "{result:?}");
        if let Some(previous) = &previous {
            assert!(
                result.tps <= previous.tps * 1.03,
                "{total} nodes: {result:?} after {previous:?}"
            );
        }
        previous = Some(result);
    }
}

#[test]
fn the_saturated_rate_loads_the_busiest_resource_near_the_target() {
    let result = project_saturated(&small(100));
    assert!(result.sustained, "{result:?}");
    assert!(
        result.bottleneck_utilization > 0.75 && result.bottleneck_utilization < 1.0,
        "{result:?}"
    );
    // Offered twice the saturated rate, the same network does not sustain it.
    let over = project(&ScaleParams {
        offered_tps: result.offered_tps * 2.0,
        ..small(100)
    });
    assert!(!over.sustained, "{over:?}");
    assert!(over.tps < result.offered_tps * 2.0 * 0.9, "{over:?}");
}

#[test]
fn the_real_committee_of_nineteen_runs_at_a_thousand_nodes() {
    let mut params = ScaleParams::lan_default(999);
    params.offered_tps = 20_000.0;
    params.duration_ms = 800;
    params.warmup_ms = 300;
    let result = project(&params);
    assert_eq!(
        (result.committee, result.relays, result.plain_nodes),
        (19, 152, 828)
    );
    assert!(
        result.sustained && result.protocol.blocks_committed > 5,
        "{result:?}"
    );
    // The checkers keep up: every certificate is attested, so executors skip re-verification.
    assert_eq!(result.protocol.txs_unattested, 0, "{result:?}");
    assert!(result.protocol.txs_committed > 10_000, "{result:?}");
}
