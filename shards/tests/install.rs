//! Snapshot install (state transfer): a snapshot taken from one node, cut into chunks and assembled, installs into
//! a node far behind as its new base; the node then takes the following blocks, and reopens at a consistent state,
//! also after a reset interrupted before its old segments were deleted, or a crash before the reset. A tampered
//! chunk stream or a snapshot whose set does not give its commitment is refused and installs nothing.

mod common;

use std::path::Path;
use std::sync::Mutex;

use cas_engine::codec::decode_block;
use cas_engine::Hash32;
use cas_shards::snapshot::{self, Snapshot};
use cas_shards::transfer::{chunk_count, encode_chunk, Assembler, TransferError};
use cas_shards::{DurableLedger, DurableLedgerConfig, Error};

static SERIAL: Mutex<()> = Mutex::new(());

fn config() -> DurableLedgerConfig {
    common::node_config(64 * 1024, 4)
}

/// A source node that stored `count` blocks of `chain`, and its snapshot at `height`.
fn source_snapshot(dir: &Path, chain: &common::Chain, count: usize, height: u64) -> Snapshot {
    let (mut node, _) = DurableLedger::open(dir, &config(), Some(&chain.genesis)).unwrap();
    for bytes in &chain.blocks[..count] {
        node.append(bytes.clone()).unwrap();
        node.wait_snapshot().unwrap();
    }
    drop(node);
    snapshot::read(&snapshot::snapshot_path(&dir.join("snapshots"), height)).unwrap()
}

/// The snapshot sent chunk by chunk through an assembler, each chunk passed through `tamper` first.
fn transfer(
    snapshot: &Snapshot,
    commitment: Hash32,
    tamper: impl Fn(u32, &mut Vec<u8>),
) -> Result<Snapshot, TransferError> {
    let count = snapshot.entries.len() as u64;
    let mut assembler = Assembler::new(snapshot.height, commitment, count)?;
    for index in 0..chunk_count(count) as u32 {
        let mut chunk = encode_chunk(&snapshot.entries, index).unwrap();
        tamper(index, &mut chunk);
        assembler.push(snapshot.height, index, &chunk)?;
    }
    assembler.finish()
}

fn block_hash(chain: &common::Chain, height: u64) -> Hash32 {
    decode_block(&chain.blocks[height as usize - 1])
        .unwrap()
        .header
        .hash()
}

#[test]
fn a_tampered_transfer_is_refused_and_installs_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let chain = common::chain(21, 8, 12);
    let source = common::temp_dir("install-source-bad");
    let snapshot = source_snapshot(&source, &chain, 8, 8);
    assert_eq!(snapshot.commitment, chain.commitments[8]);

    // One flipped bit in an entry's amount: the assembled set misses the trusted commitment.
    let flipped = transfer(&snapshot, chain.commitments[8], |index, chunk| {
        if index == 0 {
            chunk[40] ^= 0x01;
        }
    });
    match flipped {
        Err(TransferError::CommitmentMismatch {
            height, trusted, ..
        }) => {
            assert_eq!(height, 8);
            assert_eq!(trusted, chain.commitments[8]);
        }
        other => panic!("expected CommitmentMismatch, got {other:?}"),
    }
    // The right bytes against a commitment nobody computed.
    assert!(matches!(
        transfer(&snapshot, chain.commitments[7], |_, _| {}),
        Err(TransferError::CommitmentMismatch { .. })
    ));

    // A snapshot handed to the node directly with a commitment its set does not give: refused, nothing written.
    let target = common::temp_dir("install-target-bad");
    let (mut node, _) = DurableLedger::open(&target, &config(), Some(&chain.genesis)).unwrap();
    node.append(chain.blocks[0].clone()).unwrap();
    let forged = Snapshot {
        commitment: chain.commitments[7],
        ..snapshot.clone()
    };
    match node.install_snapshot(forged, block_hash(&chain, 8)) {
        Err(Error::Snapshot { reason, .. }) => {
            assert!(reason.contains("give commitment"), "{reason}")
        }
        other => panic!("expected Error::Snapshot, got {other:?}"),
    }
    assert_eq!(node.height(), 1);
    assert_eq!(node.ledger().commitment(), chain.commitments[1]);
    assert_eq!(node.store().first_height(), 0);
    assert!(snapshot::list(&target.join("snapshots"))
        .unwrap()
        .is_empty());
    // A snapshot at or below the node's height is refused too.
    let stale = Snapshot {
        height: 1,
        ..snapshot.clone()
    };
    assert!(matches!(
        node.install_snapshot(stale, block_hash(&chain, 1)),
        Err(Error::Snapshot { .. })
    ));
    // The node goes on from where it was.
    let receipt = node.append(chain.blocks[1].clone()).unwrap();
    assert_eq!(receipt.outcome.utxo_commitment, chain.commitments[2]);
    drop(node);
    std::fs::remove_dir_all(&source).unwrap();
    std::fs::remove_dir_all(&target).unwrap();
}

#[test]
fn an_installed_snapshot_is_a_base_that_survives_reopens_and_takes_the_next_blocks() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let chain = common::chain(22, 14, 12);
    let source = common::temp_dir("install-source");
    let snapshot = source_snapshot(&source, &chain, 14, 8);
    let assembled = transfer(&snapshot, chain.commitments[8], |_, _| {}).unwrap();

    // A node that holds blocks 1..=2 only.
    let target = common::temp_dir("install-target");
    let (mut node, _) = DurableLedger::open(&target, &config(), Some(&chain.genesis)).unwrap();
    for bytes in &chain.blocks[..2] {
        node.append(bytes.clone()).unwrap();
    }
    node.wait_snapshot().unwrap();
    let old_segments: Vec<(String, Vec<u8>)> = std::fs::read_dir(target.join("blocks"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with("segment-"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().to_string(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    assert!(!old_segments.is_empty());

    node.install_snapshot(assembled, block_hash(&chain, 8))
        .unwrap();
    assert_eq!(node.height(), 8);
    assert_eq!(node.ledger().commitment(), chain.commitments[8]);
    assert_eq!(node.store().first_height(), 9);
    assert_eq!(node.store().durable_height(), None);
    assert_eq!(node.last_block_hash().unwrap(), block_hash(&chain, 8));
    // Blocks below the base are gone, and so are snapshots below it.
    assert!(matches!(node.store().read(2), Err(Error::NotStored { .. })));
    drop(node);

    // Reopened before any new block: the base alone.
    let (mut node, recovery) =
        DurableLedger::open(&target, &config(), Some(&chain.genesis)).unwrap();
    assert_eq!(recovery.durable_height, 8);
    assert_eq!(recovery.snapshot_height, Some(8));
    assert_eq!(recovery.replayed_blocks, 0);
    assert_eq!(recovery.utxo_commitment, chain.commitments[8]);
    assert_eq!(node.last_block_hash().unwrap(), block_hash(&chain, 8));
    // Block 9 commits to the set after block 8: the installed one.
    for (offset, bytes) in chain.blocks[8..12].iter().enumerate() {
        let receipt = node.append(bytes.clone()).unwrap();
        assert_eq!(
            receipt.outcome.utxo_commitment,
            chain.commitments[9 + offset]
        );
    }
    node.wait_snapshot().unwrap();
    assert_eq!(node.last_block_hash().unwrap(), block_hash(&chain, 12));
    drop(node);

    // A crash in the reset after its base file was durable leaves old segments behind: the open deletes them.
    for (name, bytes) in &old_segments {
        std::fs::write(target.join("blocks").join(name), bytes).unwrap();
    }
    let (mut node, recovery) =
        DurableLedger::open(&target, &config(), Some(&chain.genesis)).unwrap();
    assert_eq!(recovery.durable_height, 12);
    assert_eq!(recovery.snapshot_height, Some(12));
    assert_eq!(recovery.utxo_commitment, chain.commitments[12]);
    for (name, _) in &old_segments {
        assert!(!target.join("blocks").join(name).exists(), "{name} left");
    }
    node.append(chain.blocks[12].clone()).unwrap();
    drop(node);

    // With every snapshot after the base damaged, the installed one is still what recovery starts from.
    let snapshots = target.join("snapshots");
    for (height, path) in snapshot::list(&snapshots).unwrap() {
        if height > 8 {
            std::fs::remove_file(path).unwrap();
        }
    }
    let (node, recovery) = DurableLedger::open(&target, &config(), Some(&chain.genesis)).unwrap();
    assert_eq!(recovery.snapshot_height, Some(8));
    assert_eq!(recovery.replayed_blocks, 5);
    assert_eq!(node.ledger().commitment(), chain.commitments[13]);
    drop(node);
    // Without the base snapshot, the store cannot be replayed: a clear error, not a wrong state.
    std::fs::remove_file(snapshot::snapshot_path(&snapshots, 8)).unwrap();
    match DurableLedger::open(&target, &config(), Some(&chain.genesis)).err() {
        Some(Error::Snapshot { reason, .. }) => {
            assert!(reason.contains("starts at height 9"), "{reason}")
        }
        other => panic!("expected Error::Snapshot, got {other:?}"),
    }
    std::fs::remove_dir_all(&source).unwrap();
    std::fs::remove_dir_all(&target).unwrap();
}

#[test]
fn a_crash_after_the_snapshot_is_written_but_before_the_reset_reopens_at_the_old_state() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let chain = common::chain(23, 8, 12);
    let source = common::temp_dir("install-source-crash");
    let snapshot = source_snapshot(&source, &chain, 8, 8);
    let target = common::temp_dir("install-target-crash");
    let (mut node, _) = DurableLedger::open(&target, &config(), Some(&chain.genesis)).unwrap();
    node.append(chain.blocks[0].clone()).unwrap();
    drop(node);
    // What an install leaves when it dies right after writing the snapshot: the file, above the durable height.
    snapshot::write(
        &target.join("snapshots"),
        snapshot.height,
        &snapshot.entries,
        snapshot.commitment,
    )
    .unwrap();
    let (mut node, recovery) =
        DurableLedger::open(&target, &config(), Some(&chain.genesis)).unwrap();
    assert_eq!(recovery.durable_height, 1);
    assert_eq!(recovery.snapshot_height, None);
    assert_eq!(recovery.utxo_commitment, chain.commitments[1]);
    // The install is simply done again.
    node.install_snapshot(snapshot, block_hash(&chain, 8))
        .unwrap();
    drop(node);
    let (node, recovery) = DurableLedger::open(&target, &config(), Some(&chain.genesis)).unwrap();
    assert_eq!(recovery.durable_height, 8);
    assert_eq!(node.ledger().commitment(), chain.commitments[8]);
    drop(node);
    std::fs::remove_dir_all(&source).unwrap();
    std::fs::remove_dir_all(&target).unwrap();
}
