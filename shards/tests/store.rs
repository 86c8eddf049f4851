//! The durable node on disk: a bit flip inside a record is a typed error naming segment and offset; a torn tail
//! is cut and the node reopens at the last whole block; snapshots shorten recovery and a damaged one is skipped.
//! A header that commits to another parent state is refused before anything is written.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

use cas_shards::store::segment_path;
use cas_shards::{DurableLedger, DurableLedgerConfig, Error};

static SERIAL: Mutex<()> = Mutex::new(());

fn config(snapshot_every_blocks: u64) -> DurableLedgerConfig {
    common::node_config(64 * 1024, snapshot_every_blocks)
}

/// Writes `chain`'s blocks 1..=count into a new node in `dir`; returns each block's location.
fn write_blocks(
    dir: &Path,
    chain: &common::Chain,
    count: usize,
    snapshot_every: u64,
) -> Vec<cas_shards::Location> {
    let (mut node, recovery) =
        DurableLedger::open(dir, &config(snapshot_every), Some(&chain.genesis)).unwrap();
    assert_eq!(recovery.durable_height, 0);
    let mut locations = Vec::new();
    for (index, bytes) in chain.blocks[..count].iter().enumerate() {
        let receipt = node.append(bytes.clone()).unwrap();
        // Let each snapshot finish before the next block, so none is skipped for a slow disk or a busy machine.
        node.wait_snapshot().unwrap();

        assert_eq!(
            receipt.outcome.utxo_commitment,
            chain.commitments[index + 1]
        );
        assert_eq!(receipt.outcome.verdicts, chain.verdicts[index]);
        // The ledger counts its set as it changes, and a set this small is snapshotted at the configured spacing.
        let outputs = node.ledger().dump().unwrap().len() as u64;
        assert_eq!(node.ledger().outputs(), outputs);
        let height = index as u64 + 1;
        assert!(outputs <= snapshot_every * cas_shards::limits::SNAPSHOT_OUTPUTS_PER_BLOCK);
        assert_eq!(receipt.snapshot, height.is_multiple_of(snapshot_every));
        locations.push(receipt.location);
    }
    locations
}

fn flip_bit(path: &Path, offset: u64) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, offset).unwrap();
    byte[0] ^= 0x10;
    file.write_all_at(&byte, offset).unwrap();
}

#[test]
fn a_bit_flip_inside_a_record_names_segment_and_offset() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let chain = common::chain(11, 6, 20);
    let dir = common::temp_dir("bitflip");
    let locations = write_blocks(&dir, &chain, 6, 1000);
    // Block 3's record, in the middle of its payload; later records follow it.
    let victim = locations[2];
    let segment = segment_path(&dir.join("blocks"), victim.segment);
    flip_bit(
        &segment,
        victim.offset + 48 + u64::from(victim.payload_len) / 2,
    );
    let error = DurableLedger::open(&dir, &config(1000), Some(&chain.genesis))
        .err()
        .expect("corruption is refused");
    match &error {
        Error::Corrupt {
            segment: at,
            offset,
            reason,
        } => {
            assert_eq!(at, &segment);
            assert_eq!(*offset, victim.offset);
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("segment-") && message.contains(&victim.offset.to_string()),
        "{message}"
    );
    // Flipping it back makes the store whole again.
    flip_bit(
        &segment,
        victim.offset + 48 + u64::from(victim.payload_len) / 2,
    );
    let (node, recovery) = DurableLedger::open(&dir, &config(1000), Some(&chain.genesis)).unwrap();
    assert_eq!(recovery.durable_height, 6);
    assert_eq!(node.ledger().commitment(), chain.commitments[6]);
    drop(node);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bit_flip_in_a_sealed_segment_header_is_corruption_too() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let chain = common::chain(12, 12, 40);
    let dir = common::temp_dir("sealed");
    let locations = write_blocks(&dir, &chain, 12, 1000);
    assert!(
        locations.last().unwrap().segment > 0,
        "64 KiB segments roll over"
    );
    // The magic of the last record of segment 0: nothing valid follows it in that segment, but the segment is
    // sealed (a later segment exists), so it cannot be a torn append.
    let victim = locations
        .iter()
        .rev()
        .find(|l| l.segment == 0)
        .copied()
        .unwrap();
    let segment = segment_path(&dir.join("blocks"), 0);
    flip_bit(&segment, victim.offset);
    match DurableLedger::open(&dir, &config(1000), Some(&chain.genesis)).err() {
        Some(Error::Corrupt {
            segment: at,
            offset,
            ..
        }) => {
            assert_eq!(at, segment);
            assert_eq!(offset, victim.offset);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_torn_tail_is_cut_and_the_node_reopens_at_the_last_whole_block() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let chain = common::chain(13, 5, 20);
    let dir = common::temp_dir("torn");
    let locations = write_blocks(&dir, &chain, 5, 1000);
    let last = locations[4];
    let segment = segment_path(&dir.join("blocks"), last.segment);
    // The last append got only its header and part of its payload to disk.
    let file = OpenOptions::new().write(true).open(&segment).unwrap();
    file.set_len(last.offset + 48 + u64::from(last.payload_len) / 3)
        .unwrap();
    drop(file);
    let (mut node, recovery) =
        DurableLedger::open(&dir, &config(1000), Some(&chain.genesis)).unwrap();
    assert_eq!(recovery.durable_height, 4);
    assert!(recovery.truncated_bytes > 0);
    assert_eq!(recovery.utxo_commitment, chain.commitments[4]);
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), last.offset);
    // The block can be appended again and lands where the torn one was.
    let receipt = node.append(chain.blocks[4].clone()).unwrap();
    assert_eq!(receipt.location, last);
    assert_eq!(receipt.outcome.utxo_commitment, chain.commitments[5]);
    drop(node);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn snapshots_shorten_recovery_and_a_damaged_one_is_skipped() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let chain = common::chain(14, 9, 15);
    let dir = common::temp_dir("snapshots");
    write_blocks(&dir, &chain, 9, 4);
    let (node, recovery) = DurableLedger::open(&dir, &config(4), Some(&chain.genesis)).unwrap();
    assert_eq!(recovery.snapshot_height, Some(8));
    assert_eq!(recovery.replayed_blocks, 1);
    assert_eq!(recovery.utxo_commitment, chain.commitments[9]);
    // The stake registry is the set's: rebuilt from the snapshot, then followed through the replay. The chain holds
    // candidacies and stake beyond the genesis member's.
    assert!(chain.reference.stake().candidates().count() >= 2);
    assert_eq!(node.ledger().stake(), chain.reference.stake());
    drop(node);
    // Damage the newest snapshot: recovery falls back to the one before and replays more.
    let newest = cas_shards::snapshot::snapshot_path(&dir.join("snapshots"), 8);
    flip_bit(&newest, 100);
    let (node, recovery) = DurableLedger::open(&dir, &config(4), Some(&chain.genesis)).unwrap();
    assert_eq!(recovery.snapshot_height, Some(4));
    assert_eq!(recovery.replayed_blocks, 5);
    assert_eq!(node.ledger().commitment(), chain.commitments[9]);
    assert_eq!(node.ledger().stake(), chain.reference.stake());
    // A snapshot load and a replay count the set as the blocks did.
    let outputs = node.ledger().dump().unwrap().len() as u64;
    assert_eq!(node.ledger().outputs(), outputs);
    drop(node);
    // Another genesis is refused.
    let other = common::chain(15, 0, 1);
    let mut different = other.genesis.clone();
    different.header.timestamp_ms += 1;
    assert!(matches!(
        DurableLedger::open(&dir, &config(4), Some(&different)).err(),
        Some(Error::GenesisMismatch { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Re-encodes block bytes with another header commitment (the block is otherwise the same).
fn with_parent_commitment(bytes: &[u8], commitment: cas_engine::Hash32) -> Vec<u8> {
    let mut block =
        cas_engine::codec::to_owned_block(cas_engine::codec::decode_block(bytes).unwrap());
    block.header.utxo_commitment = commitment;
    cas_engine::codec::encode_block(&block).to_vec()
}

#[test]
fn a_header_committing_to_another_parent_state_is_refused_and_changes_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let chain = common::chain(16, 4, 10);
    let dir = common::temp_dir("parent-commitment");
    write_blocks(&dir, &chain, 2, 1000);
    let (mut node, _) = DurableLedger::open(&dir, &config(1000), Some(&chain.genesis)).unwrap();
    // Block 3 claiming the set after block 3 (its own post-state) instead of after block 2.
    let wrong = with_parent_commitment(&chain.blocks[2], chain.commitments[3]);
    match node.append(wrong).err() {
        Some(Error::ParentCommitmentMismatch {
            height,
            header,
            computed,
        }) => {
            assert_eq!(height, 3);
            assert_eq!(header, chain.commitments[3]);
            assert_eq!(computed, chain.commitments[2]);
        }
        other => panic!("expected ParentCommitmentMismatch, got {other:?}"),
    }
    assert_eq!(node.height(), 2);
    assert_eq!(node.store().durable_height(), Some(2));
    assert_eq!(node.ledger().commitment(), chain.commitments[2]);
    // Pipelined: a bad block 4 begun while block 3 is in flight is checked when it completes, and is not written.
    let good = node.begin(chain.blocks[2].clone()).unwrap();
    let bad = node
        .begin(with_parent_commitment(
            &chain.blocks[3],
            cas_engine::Hash32::ZERO,
        ))
        .unwrap();
    let receipt = node.complete(good).unwrap();
    assert_eq!(receipt.outcome.utxo_commitment, chain.commitments[3]);
    assert!(matches!(
        node.complete(bad).err(),
        Some(Error::ParentCommitmentMismatch { height: 4, .. })
    ));
    assert_eq!(node.store().durable_height(), Some(3));
    // The true block 4 is then taken, and a reopen replays (and re-checks) what is stored.
    let receipt = node.append(chain.blocks[3].clone()).unwrap();
    assert_eq!(receipt.outcome.utxo_commitment, chain.commitments[4]);
    drop(node);
    let (node, recovery) = DurableLedger::open(&dir, &config(1000), Some(&chain.genesis)).unwrap();
    assert_eq!(recovery.durable_height, 4);
    assert_eq!(node.ledger().commitment(), chain.commitments[4]);
    drop(node);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A snapshot is written off the shards from the set's mirror while later blocks go on: it holds the set at its
/// own height exactly (the later blocks' changes are not in it), and it equals what the shards held there.
#[test]
fn a_snapshot_holds_the_set_at_its_height_while_later_blocks_apply() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let chain = common::chain(16, 8, 15);
    let dir = common::temp_dir("mirror");
    let (mut node, _) = DurableLedger::open(&dir, &config(4), Some(&chain.genesis)).unwrap();
    let mut at_four = None;
    for (index, bytes) in chain.blocks[..8].iter().enumerate() {
        node.append(bytes.clone()).unwrap();
        if index + 1 == 4 {
            at_four = Some(node.ledger().dump().unwrap());
        }
    }
    node.wait_snapshot().unwrap();
    let snapshots = cas_shards::snapshot::list(&dir.join("snapshots")).unwrap();
    let heights: Vec<u64> = snapshots.iter().map(|(height, _)| *height).collect();
    assert!(heights.contains(&4), "snapshots at {heights:?}");
    let snapshot = cas_shards::snapshot::read(&cas_shards::snapshot::snapshot_path(
        &dir.join("snapshots"),
        4,
    ))
    .unwrap();
    assert_eq!(snapshot.height, 4);
    assert_eq!(snapshot.commitment, chain.commitments[4]);
    assert_eq!(Some(snapshot.entries), at_four);
    assert_ne!(
        node.ledger().dump().unwrap(),
        at_four.unwrap(),
        "later blocks changed the set"
    );
    drop(node);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A caller that keeps something derived from each block (the node's transaction index) and lags the store sees
/// the blocks it lacks again on reopen, with the verdicts they had: recovery starts from a snapshot below them.
#[test]
fn a_lagging_observer_sees_the_blocks_it_lacks_replayed_with_their_verdicts() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let chain = common::chain(21, 9, 15);
    let dir = common::temp_dir("observed");
    write_blocks(&dir, &chain, 9, 4);
    let mut seen = Vec::new();
    // The observer has blocks up to 8: the newest snapshot is at 8, so block 9 is the one replayed.
    let (_, recovery) = DurableLedger::open_observed(
        &dir,
        &config(4),
        Some(&chain.genesis),
        Some(9),
        &mut |bytes, outcome| seen.push((bytes.len(), outcome.height, outcome.verdicts.clone())),
    )
    .unwrap();
    assert_eq!(recovery.snapshot_height, Some(8));
    assert_eq!(
        seen.iter().map(|s| s.1).collect::<Vec<_>>(),
        vec![9],
        "only what the observer lacks"
    );
    assert_eq!(seen[0].0, chain.blocks[8].len());
    // It has blocks up to 6 only: recovery starts from the snapshot at 4, and blocks 7..=9 come with their verdicts.
    seen.clear();
    let (node, recovery) = DurableLedger::open_observed(
        &dir,
        &config(4),
        Some(&chain.genesis),
        Some(7),
        &mut |_, outcome| seen.push((0, outcome.height, outcome.verdicts.clone())),
    )
    .unwrap();
    assert_eq!(recovery.snapshot_height, Some(4));
    assert_eq!(node.ledger().commitment(), chain.commitments[9]);
    let heights: Vec<u64> = seen.iter().map(|s| s.1).collect();
    assert_eq!(heights, vec![7, 8, 9]);
    for (_, height, verdicts) in &seen {
        assert_eq!(verdicts, &chain.verdicts[*height as usize - 1]);
    }
    drop(node);
    std::fs::remove_dir_all(&dir).unwrap();
}
