//! Snapshot state transfer, the bytes side: a snapshot's entries (sorted by outpoint) cut into bounded chunks for
//! the wire, and the [`Assembler`] that takes chunks from an untrusted peer, validates each one (position, size,
//! entry encoding, strictly increasing outpoints across the stream) and checks that the assembled set reproduces
//! the trusted commitment before it hands out a [`Snapshot`] to install. No IO; a refused chunk changes nothing.
//!
//! Chunk `i` holds entries `i * SNAPSHOT_CHUNK_ENTRIES ..` of the sorted set, each in the snapshot file's entry
//! layout ([`crate::snapshot::ENTRY_BYTES`] bytes), with nothing around them: its height and index travel beside it.

use cas_engine::{Hash32, OutPoint, SetCommitment, TxOutput};

use crate::limits::{SNAPSHOT_CHUNK_ENTRIES, SNAPSHOT_ENTRIES_MAX};
use crate::snapshot::{decode_entry, encode_entry, Snapshot, ENTRY_BYTES};

/// The largest chunk in bytes.
pub const CHUNK_BYTES_MAX: usize = SNAPSHOT_CHUNK_ENTRIES * ENTRY_BYTES;

/// Why a transfer was refused; each names the chunk and entry at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("a snapshot of {entries} entries exceeds the limit of {max}")]
    TooLarge { entries: u64, max: u64 },
    #[error("chunk {index} arrived, chunk {expected} is next")]
    OutOfOrder { index: u32, expected: u32 },
    #[error("chunk {index} is for height {got}, the transfer is for height {expected}")]
    WrongHeight { index: u32, got: u64, expected: u64 },
    #[error("chunk {index} has {len} bytes, expected {expected}")]
    WrongSize {
        index: u32,
        len: usize,
        expected: usize,
    },
    #[error("chunk {index}, entry {entry}: {reason}")]
    BadEntry {
        index: u32,
        entry: usize,
        reason: String,
    },
    #[error("chunk {index}, entry {entry}: outpoint is not after the previous one (entries are sorted and unique)")]
    Unsorted { index: u32, entry: usize },
    #[error("{received} of {expected} chunks received")]
    Incomplete { received: u32, expected: u32 },
    #[error(
        "the assembled set of {entries} entries gives commitment {computed}, the trusted snapshot at height {height} \
         says {trusted}"
    )]
    CommitmentMismatch {
        height: u64,
        entries: u64,
        computed: Hash32,
        trusted: Hash32,
    },
}

/// Chunks a snapshot of `entries` entries is cut into.
pub fn chunk_count(entries: u64) -> u64 {
    entries.div_ceil(SNAPSHOT_CHUNK_ENTRIES as u64)
}

/// Chunk `index` of `entries` (sorted by outpoint), or None past the last one.
pub fn encode_chunk(entries: &[(OutPoint, TxOutput)], index: u32) -> Option<Vec<u8>> {
    let start = (index as usize).checked_mul(SNAPSHOT_CHUNK_ENTRIES)?;
    if start >= entries.len() {
        return None;
    }
    let end = (start + SNAPSHOT_CHUNK_ENTRIES).min(entries.len());
    let mut bytes = Vec::with_capacity((end - start) * ENTRY_BYTES);
    for (outpoint, coin) in &entries[start..end] {
        encode_entry(&mut bytes, outpoint, coin);
    }
    Some(bytes)
}

/// Builds a snapshot from chunks taken in order, for a (height, commitment, entry count) the caller trusts.
pub struct Assembler {
    height: u64,
    commitment: Hash32,
    entries_expected: u64,
    chunks: u32,
    next_chunk: u32,
    entries: Vec<(OutPoint, TxOutput)>,
    set: SetCommitment,
}

impl Assembler {
    pub fn new(height: u64, commitment: Hash32, entries: u64) -> Result<Assembler, TransferError> {
        let chunks = chunk_count(entries);
        if entries > SNAPSHOT_ENTRIES_MAX || chunks > u64::from(u32::MAX) {
            return Err(TransferError::TooLarge {
                entries,
                max: SNAPSHOT_ENTRIES_MAX,
            });
        }
        Ok(Assembler {
            height,
            commitment,
            entries_expected: entries,
            chunks: chunks as u32,
            next_chunk: 0,
            // Grown as chunks arrive and pass their checks, never sized from the announced count.
            entries: Vec::new(),
            set: SetCommitment::default(),
        })
    }

    pub fn height(&self) -> u64 {
        self.height
    }

    /// The chunk to take next, or None when every chunk is in.
    pub fn next_chunk(&self) -> Option<u32> {
        (self.next_chunk < self.chunks).then_some(self.next_chunk)
    }

    /// Chunks in the whole transfer.
    pub fn chunks(&self) -> u32 {
        self.chunks
    }

    /// Validates chunk `index` of the snapshot at `height` and adds it; on an error nothing is added.
    pub fn push(&mut self, height: u64, index: u32, bytes: &[u8]) -> Result<(), TransferError> {
        if height != self.height {
            return Err(TransferError::WrongHeight {
                index,
                got: height,
                expected: self.height,
            });
        }
        if index != self.next_chunk || index >= self.chunks {
            return Err(TransferError::OutOfOrder {
                index,
                expected: self.next_chunk,
            });
        }
        let first = u64::from(index) * SNAPSHOT_CHUNK_ENTRIES as u64;
        let count = (self.entries_expected - first).min(SNAPSHOT_CHUNK_ENTRIES as u64) as usize;
        if bytes.len() != count * ENTRY_BYTES {
            return Err(TransferError::WrongSize {
                index,
                len: bytes.len(),
                expected: count * ENTRY_BYTES,
            });
        }
        let mut decoded = Vec::with_capacity(count);
        let mut previous = self.entries.last().map(|(outpoint, _)| *outpoint);
        for (entry, raw) in bytes.chunks_exact(ENTRY_BYTES).enumerate() {
            let (outpoint, coin) = decode_entry(raw).map_err(|reason| TransferError::BadEntry {
                index,
                entry,
                reason,
            })?;
            if previous.is_some_and(|p| p >= outpoint) {
                return Err(TransferError::Unsorted { index, entry });
            }
            previous = Some(outpoint);
            decoded.push((outpoint, coin));
        }
        for (outpoint, coin) in &decoded {
            self.set.insert(outpoint, coin);
        }
        self.entries.extend(decoded);
        self.next_chunk += 1;
        Ok(())
    }

    /// The assembled snapshot, once every chunk is in and the set reproduces the trusted commitment.
    pub fn finish(self) -> Result<Snapshot, TransferError> {
        if self.next_chunk != self.chunks {
            return Err(TransferError::Incomplete {
                received: self.next_chunk,
                expected: self.chunks,
            });
        }
        let computed = self.set.checksum();
        if computed != self.commitment {
            return Err(TransferError::CommitmentMismatch {
                height: self.height,
                entries: self.entries.len() as u64,
                computed,
                trusted: self.commitment,
            });
        }
        Ok(Snapshot {
            height: self.height,
            entries: self.entries,
            commitment: self.commitment,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cas_engine::{AssetId, PublicKey};

    /// `count` distinct entries sorted by outpoint, and their commitment.
    fn set(count: u32) -> (Vec<(OutPoint, TxOutput)>, Hash32) {
        let mut entries: Vec<(OutPoint, TxOutput)> = (0..count)
            .map(|i| {
                let outpoint = OutPoint {
                    tx: Hash32(*blake3::hash(&i.to_le_bytes()).as_bytes()),
                    index: i % 3,
                };
                let coin = TxOutput {
                    amount: u64::from(i) + 1,
                    asset: AssetId::CAS,
                    owner: PublicKey([(i % 251) as u8; 32]),
                    unlock_height: (i % 5 == 0).then_some(u64::from(i)),
                };
                (outpoint, coin)
            })
            .collect();
        entries.sort_unstable_by_key(|(outpoint, _)| *outpoint);
        let mut commitment = SetCommitment::default();
        entries.iter().for_each(|(o, c)| commitment.insert(o, c));
        (entries, commitment.checksum())
    }

    fn chunks(entries: &[(OutPoint, TxOutput)]) -> Vec<Vec<u8>> {
        (0..chunk_count(entries.len() as u64) as u32)
            .map(|i| encode_chunk(entries, i).unwrap())
            .collect()
    }

    fn assemble(
        height: u64,
        commitment: Hash32,
        entries: u64,
        chunks: &[Vec<u8>],
    ) -> Result<Snapshot, TransferError> {
        let mut assembler = Assembler::new(height, commitment, entries)?;
        for (index, chunk) in chunks.iter().enumerate() {
            assembler.push(height, index as u32, chunk)?;
        }
        assembler.finish()
    }

    #[test]
    fn a_set_over_several_chunks_round_trips() {
        let (entries, commitment) = set(2 * SNAPSHOT_CHUNK_ENTRIES as u32 + 17);
        let chunks = chunks(&entries);
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[2].len(), 17 * ENTRY_BYTES);
        assert!(encode_chunk(&entries, 3).is_none());
        let snapshot = assemble(40, commitment, entries.len() as u64, &chunks).unwrap();
        assert_eq!(snapshot.height, 40);
        assert_eq!(snapshot.entries, entries);
        assert_eq!(snapshot.commitment, commitment);
    }

    #[test]
    fn a_flipped_byte_or_a_wrong_commitment_is_refused() {
        let (entries, commitment) = set(SNAPSHOT_CHUNK_ENTRIES as u32 + 5);
        let count = entries.len() as u64;
        let good = chunks(&entries);
        // A flipped amount byte decodes, but the set no longer gives the trusted commitment.
        let mut flipped = good.clone();
        flipped[1][ENTRY_BYTES + 40] ^= 0x01;
        match assemble(9, commitment, count, &flipped) {
            Err(TransferError::CommitmentMismatch {
                height, trusted, ..
            }) => {
                assert_eq!(height, 9);
                assert_eq!(trusted, commitment);
            }
            other => panic!("expected CommitmentMismatch, got {other:?}"),
        }
        // A flipped lock flag is refused in its chunk, naming chunk and entry.
        let mut bad_flag = good.clone();
        bad_flag[0][2 * ENTRY_BYTES + 108] = 7;
        assert_eq!(
            assemble(9, commitment, count, &bad_flag).err(),
            Some(TransferError::BadEntry {
                index: 0,
                entry: 2,
                reason: "lock flag 7".to_string()
            })
        );
        // A flipped outpoint byte breaks the order (or the commitment, if the order happens to survive).
        let mut bad_order = good.clone();
        bad_order[0][ENTRY_BYTES] ^= 0xff;
        assert!(matches!(
            assemble(9, commitment, count, &bad_order).err(),
            Some(TransferError::Unsorted { index: 0, .. })
                | Some(TransferError::CommitmentMismatch { .. })
        ));
        // The right chunks against a wrong commitment.
        assert!(matches!(
            assemble(9, Hash32([3; 32]), count, &good).err(),
            Some(TransferError::CommitmentMismatch { .. })
        ));
    }

    #[test]
    fn a_chunk_out_of_place_or_of_the_wrong_size_changes_nothing() {
        let (entries, commitment) = set(SNAPSHOT_CHUNK_ENTRIES as u32 + 5);
        let good = chunks(&entries);
        let mut assembler = Assembler::new(3, commitment, entries.len() as u64).unwrap();
        assert_eq!(
            assembler.push(3, 1, &good[1]).err(),
            Some(TransferError::OutOfOrder {
                index: 1,
                expected: 0
            })
        );
        assert!(matches!(
            assembler.push(4, 0, &good[0]).err(),
            Some(TransferError::WrongHeight { .. })
        ));
        assert!(matches!(
            assembler.push(3, 0, &good[0][..good[0].len() - 1]).err(),
            Some(TransferError::WrongSize { index: 0, .. })
        ));
        // A duplicate of the first chunk's entries as chunk 1 is out of order.
        assembler.push(3, 0, &good[0]).unwrap();
        assert_eq!(assembler.next_chunk(), Some(1));
        let replayed = good[0][..5 * ENTRY_BYTES].to_vec();
        assert!(matches!(
            assembler.push(3, 1, &replayed).err(),
            Some(TransferError::Unsorted { index: 1, entry: 0 })
        ));
        assert!(matches!(
            Assembler::new(3, commitment, entries.len() as u64)
                .unwrap()
                .finish()
                .err(),
            Some(TransferError::Incomplete {
                received: 0,
                expected: 2
            })
        ));
        assembler.push(3, 1, &good[1]).unwrap();
        assert_eq!(assembler.next_chunk(), None);
        assert_eq!(assembler.finish().unwrap().entries, entries);
    }
}
