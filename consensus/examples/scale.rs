//! `cargo run --release -p cas-consensus --example scale [-- --verify-us X --execute-us Y --cores N --fanout F
//! --committee-max M --tx-bytes B --latency-us L --bandwidth BYTES_PER_S --package-wait-ms W --nodes N]`: projects saturated TPS and
//! submit-to-final latency for the whitepaper's node counts (or one `--nodes`) with the scale model, and prints
//! each beside the whitepaper's row. Without flags it uses `ScaleParams::lan_default`'s calibration (the perf
//! README's measurements on the development VM); `cas bench` feeds freshly measured ones.

use std::time::Instant;

use cas_consensus::sim::scale::{project_saturated, ScaleParams, WHITEPAPER_ROWS};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| cas_consensus::sim::flag::<f64>(&args, name);
    let calibrate = |nodes: usize| {
        let mut params = ScaleParams::lan_default(nodes);
        if let Some(v) = value("--verify-us") {
            params.verify_us_per_signature = v;
        }
        if let Some(v) = value("--execute-us") {
            params.execute_us_per_tx = v;
        }
        if let Some(v) = value("--cores") {
            params.cores_per_node = v as usize;
        }
        if let Some(v) = value("--fanout") {
            params.relay_fanout = v as usize;
        }
        if let Some(v) = value("--committee-max") {
            params.committee_max = v as usize;
        }
        if let Some(v) = value("--tx-bytes") {
            params.tx_bytes = v as usize;
        }
        if let Some(v) = value("--latency-us") {
            params.one_way_latency_us = v as u64;
        }
        if let Some(v) = value("--bandwidth") {
            params.bandwidth_bytes_per_s = v as u64;
        }
        if let Some(v) = value("--package-wait-ms") {
            params.package_wait_ms = v as u64;
        }
        params
    };
    let counts: Vec<usize> = match value("--nodes") {
        Some(n) => vec![n as usize],
        None => WHITEPAPER_ROWS.iter().map(|row| row.0).collect(),
    };
    let p = calibrate(counts[0]);
    println!(
        "scale model: committee cap {}, relay fanout {}, {} cores, {} µs/signature, {} µs/tx, {} B/tx, {} µs one-way, \
         {} B/s uplink, packages every {} ms or {} txs",
        p.committee_max,
        p.relay_fanout,
        p.cores_per_node,
        p.verify_us_per_signature,
        p.execute_us_per_tx,
        p.tx_bytes,
        p.one_way_latency_us,
        p.bandwidth_bytes_per_s,
        p.package_wait_ms,
        p.package_txs_max
    );
    println!(
        "| nodes | committee | relays | plain | TPS | p50 ms | p99 ms | bottleneck | busiest use | sustained | blocks | \
         unattested | whitepaper TPS | whitepaper latency ms | wall ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let started = Instant::now();
    for nodes in counts {
        let one = Instant::now();
        let result = project_saturated(&calibrate(nodes));
        let paper = WHITEPAPER_ROWS.iter().find(|row| row.0 == nodes);
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {} ({}) | {:.2} | {} | {} | {:.1}% | {} | {} | {} |",
            result.total_nodes,
            result.committee,
            result.relays,
            result.plain_nodes,
            result.tps,
            result.latency_p50_ms,
            result.latency_p99_ms,
            result.bottleneck,
            result.bottleneck_tier,
            result.bottleneck_utilization,
            if result.sustained { "yes" } else { "no" },
            result.protocol.blocks_committed,
            100.0 * result.protocol.txs_unattested as f64
                / result.protocol.txs_committed.max(1) as f64,
            paper.map_or("-".to_string(), |row| format!("{:.0}", row.1)),
            paper.map_or("-".to_string(), |row| format!("{:.0}", row.2 * 1_000.0)),
            one.elapsed().as_millis()
        );
    }
    println!(
        "TPS: the highest offered rate sustained (busiest CPU or uplink near 90%, nearly all final, latency not \
         growing); p50/p99: submit to final at the node the client submitted to; blocks: committed in that run; \
         unattested: share of transactions every executor had to verify"
    );
    println!(
        "scale: {:.1} s wall in all (one thread)",
        started.elapsed().as_secs_f64()
    );
}
