//! Disk faults for the node's durable files (issue 16): the consensus journal ([`crate::journal`]) and the small
//! slot files ([`crate::durable`]: the safety state and the execution marker) under a torn write at every byte
//! offset of the last write, a flipped bit at every offset, and a lost fsync (the file back at its last synced
//! content, with any part of the unsynced write on top). What was synced is read back, a torn tail is recovered,
//! and damage is refused with an error naming the file and the offset; nothing is read back as other data, and
//! nothing panics. Tests only; the files' own tests stay beside them.

use std::fs;
use std::path::Path;

use cas_consensus::bft::SafetyState;
use cas_consensus::messages::{Package, QuorumCert};
use cas_engine::tx::{OutPoint, TxBody, TxKind};
use cas_engine::{Hash32, Keypair, Transaction};

use crate::durable::{ExecutedFile, SafetyFile};
use crate::journal::Journal;

fn safety(round: u64) -> SafetyState {
    SafetyState {
        last_voted_round: round,
        last_timeout_round: round.saturating_sub(1),
        high_qc: QuorumCert {
            round: round.saturating_sub(1),
            block: Hash32([round as u8; 32]),
            height: round / 2,
            signatures: Vec::new(),
        },
    }
}

/// The bytes a write changed: (first, one past the last) of the difference between two images of a file.
fn changed(before: &[u8], after: &[u8]) -> (usize, usize) {
    assert_eq!(before.len(), after.len(), "slot files keep their size");
    let first = (0..after.len())
        .find(|&i| before[i] != after[i])
        .expect("a write changes the file");
    let end = (0..after.len())
        .rev()
        .find(|&i| before[i] != after[i])
        .expect("as above")
        + 1;
    (first, end)
}

/// What the disk holds if a write of `before -> after` stopped with only `[first, cut)` (a prefix, in order) or
/// only `[cut, end)` (the sectors written out of order) of its bytes on disk.
fn torn(before: &[u8], after: &[u8], range: (usize, usize), cut: usize, prefix: bool) -> Vec<u8> {
    let mut bytes = before.to_vec();
    let written = if prefix { range.0..cut } else { cut..range.1 };
    bytes[written.clone()].copy_from_slice(&after[written]);
    bytes
}

// ---------------------------------------------------------------------------------------------------------------
// The safety state and the execution marker (two-slot files).

/// Every torn version of the next store reads back as the previous state or the new one (only when every changed
/// byte landed), never an error; storing on from there continues the sequence.
#[test]
fn a_torn_safety_write_at_every_offset_reads_back_the_previous_or_the_new_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("safety.bin");
    let mut file = SafetyFile::new(dir.path());
    for round in 1..=4 {
        file.store(&safety(round)).unwrap();
    }
    let before = fs::read(&path).unwrap();
    file.store(&safety(5)).unwrap();
    let after = fs::read(&path).unwrap();
    let range = changed(&before, &after);
    for cut in range.0..=range.1 {
        for prefix in [true, false] {
            fs::write(&path, torn(&before, &after, range, cut, prefix)).unwrap();
            let complete = if prefix {
                cut == range.1
            } else {
                cut == range.0
            };
            let mut reopened = SafetyFile::new(dir.path());
            let loaded = reopened
                .load()
                .unwrap_or_else(|e| panic!("cut at {cut}: {e:#}"));
            assert_eq!(
                loaded,
                if complete { safety(5) } else { safety(4) },
                "cut at {cut}, prefix {prefix}"
            );
            reopened.store(&safety(6)).unwrap();
            assert_eq!(
                SafetyFile::new(dir.path()).load().unwrap(),
                safety(6),
                "cut at {cut}"
            );
        }
    }
}

/// A flipped bit anywhere: in the newest record it falls back to the previous one (a flip there cannot be told
/// from a torn write), in the older record or the slack the newest is read; with a single record the file is
/// refused naming it and the offsets. Never another state, never a panic.
#[test]
fn a_flipped_bit_in_the_safety_file_falls_back_a_record_or_is_refused_never_misread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("safety.bin");
    let mut file = SafetyFile::new(dir.path());
    file.store(&safety(7)).unwrap();
    let single = fs::read(&path).unwrap();
    file.store(&safety(8)).unwrap();
    let both = fs::read(&path).unwrap();
    let slot_bytes = both.len() / 2;
    let newest = changed(&single, &both);
    // The first record lies in slot 0, the second in slot 1; each record is a few hundred bytes.
    let record_bytes = newest.1 - newest.0 + 64;
    let offsets: Vec<usize> = (0..record_bytes)
        .flat_map(|i| [i, slot_bytes + i])
        .chain((record_bytes..slot_bytes).step_by(4093))
        .collect();
    for at in offsets {
        let mut bytes = both.clone();
        bytes[at] ^= 1 << (at % 8);
        fs::write(&path, &bytes).unwrap();
        let loaded = SafetyFile::new(dir.path()).load();
        let in_newest =
            (slot_bytes..slot_bytes + record_bytes).contains(&at) && bytes[at] != both[at];
        match loaded {
            Ok(state) if state == safety(8) => {}
            Ok(state) if state == safety(7) => {
                assert!(in_newest, "offset {at}: fell back without cause")
            }
            Ok(other) => panic!("offset {at}: read as another state: {other:?}"),
            Err(error) => panic!("offset {at}: the other slot was intact: {error:#}"),
        }
        // With only one record written, a flip in it is refused, naming the file and where.
        if at < record_bytes {
            let mut bytes = single.clone();
            bytes[at] ^= 1 << (at % 8);
            fs::write(&path, &bytes).unwrap();
            match SafetyFile::new(dir.path()).load() {
                Ok(state) => assert_eq!(state, safety(7), "offset {at}: read as another state"),
                Err(error) => {
                    let error = format!("{error:#}");
                    assert!(
                        error.contains("safety.bin") && error.contains("offsets 0 and"),
                        "offset {at}: {error}"
                    );
                }
            }
        }
    }
}

/// A lost fsync: the disk said the store was durable, then lost it (the file is back at an earlier synced image,
/// with any part of the lost write on top). What is read back is the last store that did reach the disk.
#[test]
fn after_a_lost_fsync_the_safety_file_reads_back_the_last_synced_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("safety.bin");
    let mut file = SafetyFile::new(dir.path());
    let mut images = Vec::new();
    for round in 1..=6 {
        file.store(&safety(round)).unwrap();
        images.push(fs::read(&path).unwrap());
    }
    for lost in 1..images.len() {
        // Stores lost+1 ..= 6 never reached the disk: it holds the image after store `lost`.
        fs::write(&path, &images[lost - 1]).unwrap();
        assert_eq!(
            SafetyFile::new(dir.path()).load().unwrap(),
            safety(lost as u64)
        );
        // Only the older of the two slots of a lost store is ever written: a later store that did land (into the
        // other slot) is read, whatever became of the lost one.
        let mut mixed = images[lost - 1].clone();
        let slot_bytes = mixed.len() / 2;
        let landed = (lost + 1) % 2; // store `lost + 2` (1-based) lands in this slot
        if lost + 1 < images.len() {
            let range = landed * slot_bytes..(landed + 1) * slot_bytes;
            mixed[range.clone()].copy_from_slice(&images[lost + 1][range]);
            fs::write(&path, &mixed).unwrap();
            assert_eq!(
                SafetyFile::new(dir.path()).load().unwrap(),
                safety(lost as u64 + 2),
                "lost {lost}"
            );
        }
    }
}

/// Safety states written but not synced yet (the driver syncs them beside the journal, before any message that
/// depends on them leaves) all go over the older slot with one sequence: the last synced state stays intact in the
/// other, so whatever part of those writes a crash keeps, the file reads back that state or the last one written,
/// never an error. After the sync the next write takes the other slot.
#[test]
fn unsynced_safety_writes_never_touch_the_last_synced_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("safety.bin");
    let mut file = SafetyFile::new(dir.path());
    file.store(&safety(1)).unwrap();
    file.store(&safety(2)).unwrap();
    let synced = fs::read(&path).unwrap();
    file.write(&safety(3)).unwrap();
    file.write(&safety(4)).unwrap();
    assert!(file.is_dirty());
    let written = fs::read(&path).unwrap();
    let range = changed(&synced, &written);
    let slot_bytes = synced.len() / 2;
    assert_eq!(
        range.0 / slot_bytes,
        (range.1 - 1) / slot_bytes,
        "both writes went to one slot"
    );
    for cut in range.0..=range.1 {
        for prefix in [true, false] {
            fs::write(&path, torn(&synced, &written, range, cut, prefix)).unwrap();
            let loaded = SafetyFile::new(dir.path()).load().unwrap();
            assert!(
                loaded == safety(2) || loaded == safety(4),
                "cut {cut} prefix {prefix}: read back round {}",
                loaded.last_voted_round
            );
        }
    }
    fs::write(&path, &written).unwrap();
    file.sync().unwrap();
    assert!(!file.is_dirty());
    assert_eq!(SafetyFile::new(dir.path()).load().unwrap(), safety(4));
    file.write(&safety(5)).unwrap();
    let next = changed(&written, &fs::read(&path).unwrap());
    assert_ne!(
        next.0 / slot_bytes,
        range.0 / slot_bytes,
        "after a sync the next write goes to the other slot"
    );
    assert_eq!(SafetyFile::new(dir.path()).load().unwrap(), safety(5));
}

#[test]
fn the_execution_marker_survives_torn_writes_flips_and_lost_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let mut file = ExecutedFile::new(dir.path());
    let path = file.path().to_path_buf();
    let marks = |h: u64| {
        vec![
            (h - 1, Hash32([h as u8 - 1; 32])),
            (h, Hash32([h as u8; 32])),
        ]
    };
    file.store(&marks(3)).unwrap();
    let before = fs::read(&path).unwrap();
    file.store(&marks(4)).unwrap();
    let after = fs::read(&path).unwrap();
    let range = changed(&before, &after);
    for cut in range.0..=range.1 {
        fs::write(&path, torn(&before, &after, range, cut, true)).unwrap();
        let loaded = ExecutedFile::new(dir.path()).load().unwrap();
        assert_eq!(
            loaded,
            if cut == range.1 { marks(4) } else { marks(3) },
            "cut at {cut}"
        );
    }
    let slot_bytes = after.len() / 2;
    for at in (0..160).flat_map(|i| [i, slot_bytes + i]) {
        let mut bytes = after.clone();
        bytes[at] ^= 1 << (at % 8);
        fs::write(&path, &bytes).unwrap();
        let loaded = ExecutedFile::new(dir.path()).load().unwrap();
        assert!(
            loaded == marks(4) || loaded == marks(3),
            "offset {at}: {loaded:?}"
        );
    }
    // Lost fsync of the second store: the first is read.
    fs::write(&path, &before).unwrap();
    assert_eq!(ExecutedFile::new(dir.path()).load().unwrap(), marks(3));
}

// ---------------------------------------------------------------------------------------------------------------
// The journal.

fn tx(seed: u8, memo: Vec<u8>) -> Transaction {
    TxBody {
        chain_id: 1,
        vn: 0,
        kind: TxKind::Transfer,
        inputs: vec![OutPoint {
            tx: Hash32([seed; 32]),
            index: 0,
        }],
        outputs: Vec::new(),
        fee: 1,
        memo,
        client_id: None,
    }
    .sign(&[&Keypair::from_seed(&[200; 32])])
}

fn package(sequence: u64) -> Package {
    Package {
        creator: 1,
        sequence,
        txs: vec![tx(sequence as u8, vec![sequence as u8; 5])],
    }
}

fn segment(dir: &Path) -> std::path::PathBuf {
    dir.join("0000000000.journal")
}

/// Appends `packages`, syncing after each, and returns the segment's image after each sync.
fn journal_with(dir: &Path, packages: &[Package]) -> Vec<Vec<u8>> {
    let (mut journal, _) = Journal::open(dir).unwrap();
    let mut images = Vec::new();
    for package in packages {
        journal.append_package(package.clone()).unwrap();
        journal.sync().unwrap();
        images.push(fs::read(segment(dir)).unwrap());
    }
    images
}

/// A torn last append, at every byte offset, in order or with a zero-filled rest (a file extended before its
/// data landed): every synced record is read back, the tail is cut, and appending goes on.
#[test]
fn a_torn_last_append_at_every_offset_keeps_every_synced_record() {
    let dir = tempfile::tempdir().unwrap();
    let packages: Vec<Package> = (0..4).map(package).collect();
    let images = journal_with(dir.path(), &packages);
    let (synced, whole) = (&images[2], &images[3]);
    for cut in synced.len()..whole.len() {
        for zero_filled in [false, true] {
            let mut bytes = whole[..cut].to_vec();
            if zero_filled {
                bytes.resize(whole.len(), 0);
            }
            fs::write(segment(dir.path()), &bytes).unwrap();
            let (mut journal, replayed) =
                Journal::open(dir.path()).unwrap_or_else(|e| panic!("cut at {cut}: {e:#}"));
            if bytes == *whole {
                // The zeros were the record's own last bytes: it is whole.
                assert_eq!(replayed.packages, packages, "cut at {cut}");
                continue;
            }
            assert_eq!(replayed.packages, packages[..3], "cut at {cut}");
            assert_eq!(replayed.truncated, (bytes.len() - synced.len()) as u64);
            assert_eq!(
                fs::read(segment(dir.path())).unwrap(),
                *synced,
                "cut at {cut}: the tail is cut"
            );
            journal.append_package(packages[3].clone()).unwrap();
            journal.sync().unwrap();
            drop(journal);
            assert_eq!(
                Journal::open(dir.path()).unwrap().1.packages,
                packages,
                "cut at {cut}"
            );
        }
    }
}

/// A flipped bit at every offset: in an earlier record, an error naming the segment and the record's offset, and
/// nothing cut; in the last record, whose damage cannot be told from a torn append, that record is cut (and
/// warned about). Never a record read back different, never a panic.
#[test]
fn a_flipped_bit_anywhere_in_the_journal_is_refused_or_cut_never_misread() {
    let dir = tempfile::tempdir().unwrap();
    let packages: Vec<Package> = (0..3).map(package).collect();
    let images = journal_with(dir.path(), &packages);
    let whole = images.last().unwrap().clone();
    let starts = [0, images[0].len(), images[1].len()];
    for at in 0..whole.len() {
        let mut bytes = whole.clone();
        bytes[at] ^= 1 << (at % 8);
        fs::write(segment(dir.path()), &bytes).unwrap();
        let record = starts.iter().rposition(|start| *start <= at).unwrap();
        match Journal::open(dir.path()) {
            Ok((_, replayed)) => {
                assert_eq!(
                    record, 2,
                    "offset {at}: damage in record {record} was not refused"
                );
                assert_eq!(replayed.packages, packages[..2], "offset {at}");
            }
            Err(error) => {
                let error = format!("{error:#}");
                assert!(
                    error.contains("0000000000.journal")
                        && error.contains(&format!("offset {}", starts[record])),
                    "offset {at}: {error}"
                );
                assert_eq!(
                    fs::read(segment(dir.path())).unwrap(),
                    bytes,
                    "offset {at}: nothing is cut"
                );
            }
        }
        fs::write(segment(dir.path()), &whole).unwrap();
    }
}

/// A lost fsync: the segment is back at an earlier synced image, with any prefix of the lost appends on top. What
/// is read back is every record whose bytes all reached the disk, in order.
#[test]
fn after_a_lost_fsync_the_journal_reads_back_what_reached_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let packages: Vec<Package> = (0..4).map(package).collect();
    let images = journal_with(dir.path(), &packages);
    let whole = images.last().unwrap();
    for (kept, image) in images.iter().enumerate() {
        // Lost: everything after sync `kept`; on disk, that image plus a part of what followed.
        for extra in [0, 1, 17, 40, 41, (whole.len() - image.len()) / 2] {
            let len = (image.len() + extra).min(whole.len());
            fs::write(segment(dir.path()), &whole[..len]).unwrap();
            let (_, replayed) = Journal::open(dir.path()).unwrap();
            let complete = images.iter().filter(|i| i.len() <= len).count();
            assert_eq!(
                replayed.packages,
                packages[..complete],
                "kept {kept}, extra {extra}"
            );
        }
    }
}

/// A client could make a node's next torn journal append look like corruption, so that after a crash the node
/// refused to start until an operator moved the journal aside: a transaction's memo (64 bytes) holds a whole,
/// intact journal record (40 bytes: magic, length 0 and the checksum of nothing), and the torn-tail check found it
/// inside the torn bytes. A record whose whole header claims more than the file holds is now a torn tail whatever
/// its payload holds.
#[test]
fn a_record_hidden_in_a_memo_does_not_turn_a_torn_tail_into_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let mut embedded = b"CASJ".to_vec();
    embedded.extend_from_slice(&0u32.to_le_bytes());
    // The journal's record checksum (journal.rs CHECKSUM_DOMAIN) of an empty payload.
    embedded.extend_from_slice(
        blake3::Hasher::new_derive_key("CAS 2026-11 consensus journal record v1")
            .update(&[])
            .finalize()
            .as_bytes(),
    );
    let hostile = Package {
        creator: 2,
        sequence: 9,
        txs: vec![tx(9, embedded)],
    };
    let packages = vec![package(0), hostile];
    let images = journal_with(dir.path(), &packages);
    let (synced, whole) = (&images[0], &images[1]);
    let mut refused = Vec::new();
    for cut in synced.len()..whole.len() {
        fs::write(segment(dir.path()), &whole[..cut]).unwrap();
        if Journal::open(dir.path()).is_err() {
            refused.push(cut);
        }
    }
    assert!(
        refused.is_empty(),
        "torn appends refused as corrupt at {} offsets, from {:?}",
        refused.len(),
        refused.first()
    );
}
