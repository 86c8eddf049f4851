//! Fuzz targets (issue 16), proptest-driven so they run on stable in every `cargo test`: snapshot state transfer's
//! untrusted side (the [`Assembler`] fed chunks by a peer) and the snapshot file reader under damaged files. Nothing
//! panics; a transfer whose bytes differ from the trusted snapshot's is never assembled; a damaged file is refused
//! with an error naming it, or read back exactly as written.
//!
//! Cases per property: `CAS_FUZZ_CASES` (default small, for CI); the long run is in the README's test section.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use cas_engine::{AssetId, Hash32, OutPoint, PublicKey, SetCommitment, TxOutput};
use cas_shards::snapshot::{self, ENTRY_BYTES};
use cas_shards::transfer::{encode_chunk, Assembler, CHUNK_BYTES_MAX};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

fn config(default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("CAS_FUZZ_CASES")
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(default),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A sorted set of `count` entries, some locked, and its commitment.
fn entries(count: u32) -> (Vec<(OutPoint, TxOutput)>, Hash32) {
    let mut entries: Vec<(OutPoint, TxOutput)> = (0..count)
        .map(|i| {
            (
                OutPoint {
                    tx: Hash32::of("fuzz snapshot", &i.to_le_bytes()),
                    index: i % 3,
                },
                TxOutput {
                    amount: u64::from(i) + 1,
                    asset: if i % 4 == 0 {
                        AssetId(Hash32([4; 32]))
                    } else {
                        AssetId::CAS
                    },
                    owner: PublicKey([i as u8; 32]),
                    unlock_height: (i % 5 == 0).then_some(u64::from(i) * 7),
                },
            )
        })
        .collect();
    entries.sort_unstable_by_key(|(outpoint, _)| *outpoint);
    let mut set = SetCommitment::default();
    entries.iter().for_each(|(o, c)| set.insert(o, c));
    (entries, set.checksum())
}

#[derive(Clone, Debug)]
enum Push {
    /// The true chunk at `index`, its bytes mutated by `flips`.
    Chunk {
        height_off: u64,
        index: u32,
        flips: Vec<(Index, u8)>,
        cut: Option<Index>,
    },
    /// Bytes of any length for any index.
    Random { index: u32, bytes: Vec<u8> },
}

fn push() -> impl Strategy<Value = Push> {
    prop_oneof![
        4 => (prop_oneof![4 => Just(0u64), 1 => any::<u64>()], 0u32..3, vec((any::<Index>(), any::<u8>()), 0..3), proptest::option::weighted(0.1, any::<Index>()))
            .prop_map(|(height_off, index, flips, cut)| Push::Chunk { height_off, index, flips, cut }),
        1 => (0u32..3, vec(any::<u8>(), 0..(3 * ENTRY_BYTES))).prop_map(|(index, bytes)| Push::Random { index, bytes }),
    ]
}

fn scratch() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "cas-shards-fuzz-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

proptest! {
    #![proptest_config(config(256))]

    /// A peer's chunks, true, damaged or made up, in any order: the assembler either refuses them or, when every
    /// chunk it took carried the true entries, yields the trusted snapshot. Different entries never assemble.
    #[test]
    fn fuzz_snapshot_transfer_chunks(
        count in 0u32..40,
        claimed in prop_oneof![4 => Just(None), 1 => any::<u64>().prop_map(Some)],
        pushes in vec(push(), 0..6),
    ) {
        const HEIGHT: u64 = 77;
        let (set, commitment) = entries(count);
        let entries_claimed = claimed.unwrap_or(u64::from(count));
        let Ok(mut assembler) = Assembler::new(HEIGHT, commitment, entries_claimed) else {
            return Ok(());
        };
        for push in pushes {
            let (height, index, bytes) = match push {
                Push::Chunk { height_off, index, flips, cut } => {
                    let mut bytes = encode_chunk(&set, index).unwrap_or_default();
                    if !bytes.is_empty() {
                        for (at, value) in flips {
                            let at = at.index(bytes.len());
                            bytes[at] ^= value | 1;
                        }
                    }
                    if let Some(cut) = cut {
                        bytes.truncate(cut.index(bytes.len() + 1));
                    }
                    (HEIGHT.wrapping_add(height_off), index, bytes)
                }
                Push::Random { index, bytes } => (HEIGHT, index, bytes),
            };
            if assembler.push(height, index, &bytes).is_ok() {
                prop_assert!(bytes.len() <= CHUNK_BYTES_MAX);
            }
        }
        if let Ok(snapshot) = assembler.finish() {
            // The same entries, whatever bytes carried them (an unlocked entry's unused height bytes are not read).
            prop_assert_eq!(snapshot.entries, set);
            prop_assert_eq!(snapshot.commitment, commitment);
        }
    }

    /// A snapshot file with flipped bytes or a cut is refused naming the file, never read as other data.
    #[test]
    fn fuzz_snapshot_file_damage(
        count in 0u32..20,
        flips in vec((any::<Index>(), any::<u8>()), 0..4),
        cut in proptest::option::weighted(0.2, any::<Index>()),
    ) {
        let dir = scratch();
        let (set, commitment) = entries(count);
        let path = snapshot::write(&dir, 5, &set, commitment).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let whole = bytes.clone();
        for (at, value) in flips {
            let at = at.index(bytes.len());
            bytes[at] ^= value;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        std::fs::write(&path, &bytes).unwrap();
        let read = snapshot::read(&path);
        let _ = std::fs::remove_dir_all(&dir);
        match read {
            Ok(read) => {
                prop_assert_eq!(&bytes, &whole, "damaged bytes were read as a snapshot");
                prop_assert_eq!(read.entries, set);
                prop_assert_eq!(read.commitment, commitment);
                prop_assert_eq!(read.height, 5);
            }
            Err(error) => {
                let error = error.to_string();
                prop_assert!(error.contains("snapshot-"), "{}", error);
            }
        }
    }
}
