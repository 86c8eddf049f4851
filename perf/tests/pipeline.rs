//! The shards pipeline's generated load is one the durable node accepts whole: every block's header commits to the
//! UTXO set after its parent (the node refuses a block whose header does not), and every transfer is final.

use cas_perf::pipeline::{durable, load};

#[test]
fn the_durable_node_takes_the_generated_load_whole() {
    let load = load(16, 6, 2);
    // `durable` asserts that every transfer was accepted; a wrong header commitment would fail the first block.
    let measured = durable(&load, 1);
    assert_eq!(measured.shards, 1);
    assert!(measured.tps > 0.0);
}
