//! The node's small durable files: the consensus safety state (written before any vote leaves, in place in one of
//! two checksummed slots: see [`SafetyFile`]) and the execution marker (which consensus block each executed height
//! was), and the witness order at the base of a store that starts at an installed snapshot. The last two go to a
//! temporary file, are fsynced, renamed over the old one, and the folder is fsynced: a crash leaves the old or the
//! new, never half.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use cas_consensus::bft::SafetyState;
use cas_consensus::messages::QuorumCert;
use cas_consensus::rewards::order_state_hash;
use cas_engine::{BlockHash, Hash32};

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let temporary = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&temporary, path)?;
    if let Some(folder) = path.parent() {
        File::open(folder)?.sync_all()?;
    }
    Ok(())
}

/// Bytes of one safety record slot: room for a quorum certificate of the largest committee.
const SAFETY_SLOT_BYTES: usize = 128 * 1024;
/// What every safety record starts with (and, with the version, what the checksum covers first).
const SAFETY_MAGIC: [u8; 8] = *b"CASSAFE1";
/// magic, sequence (u64), payload length (u32); the payload; then its blake3 checksum.
const SAFETY_HEADER_BYTES: usize = 8 + 8 + 4;
const SAFETY_CHECKSUM_BYTES: usize = 32;
/// Two signatures' worth per member (index and signature, with the archive's overhead) for the largest committee.
const _: () = assert!(
    SAFETY_HEADER_BYTES + 16 + 256 + cas_engine::codec::COMMITTEE_MAX * 80 + SAFETY_CHECKSUM_BYTES
        <= SAFETY_SLOT_BYTES
);

/// The consensus safety state, in two fixed slots of one preallocated file written in turn, in place: a vote
/// costs one `pwrite` and one `fdatasync` (no create, rename or folder sync). Each record carries a sequence
/// number and a blake3 checksum, so a write torn by a crash spoils only the slot being written (the other still
/// holds the previous state, and the vote it guarded never left); loading takes the intact record with the highest
/// sequence. A file with no intact record is corruption: an error that names the file and what to do, never a
/// silent start from the default state (which could vote twice in a round).
pub struct SafetyFile {
    path: PathBuf,
    file: Option<File>,
    /// The sequence of the next record written.
    sequence: u64,
}

impl SafetyFile {
    pub fn new(data_dir: &Path) -> SafetyFile {
        SafetyFile {
            path: data_dir.join("safety.bin"),
            file: None,
            sequence: 0,
        }
    }

    /// The stored state; the default when the node has never voted (no file).
    pub fn load(&mut self) -> Result<SafetyState> {
        if !self.path.exists() {
            return Ok(SafetyState::default());
        }
        let bytes =
            fs::read(&self.path).with_context(|| format!("cannot read {}", self.path.display()))?;
        if bytes.len() != 2 * SAFETY_SLOT_BYTES {
            bail!(
                "{} is {} bytes, not the {} of a safety file: truncated, or not written by this version. Voting \
                 from a default state could vote twice in a round; restore the data folder from a backup, or give \
                 the node a new key and folder",
                self.path.display(),
                bytes.len(),
                2 * SAFETY_SLOT_BYTES
            );
        }
        let newest = bytes
            .chunks_exact(SAFETY_SLOT_BYTES)
            .filter_map(decode_safety_record)
            .max_by_key(|(sequence, _)| *sequence);
        let Some((sequence, state)) = newest else {
            bail!(
                "{}: neither safety record is intact (checksum mismatch at offsets 0 and {SAFETY_SLOT_BYTES}): the \
                 file is corrupt. Voting from a default state could vote twice in a round; restore the data folder \
                 from a backup, or give the node a new key and folder",
                self.path.display()
            );
        };
        self.sequence = sequence + 1;
        Ok(state)
    }

    /// Makes `safety` durable before returning: written over the older of the two slots, then fdatasynced.
    pub fn store(&mut self, safety: &SafetyState) -> Result<()> {
        let mut payload = Vec::with_capacity(256);
        payload.extend_from_slice(&safety.last_voted_round.to_le_bytes());
        payload.extend_from_slice(&safety.last_timeout_round.to_le_bytes());
        payload.extend_from_slice(&rkyv::to_bytes::<rkyv::rancor::Error>(&safety.high_qc)?);
        let mut record =
            Vec::with_capacity(SAFETY_HEADER_BYTES + payload.len() + SAFETY_CHECKSUM_BYTES);
        record.extend_from_slice(&SAFETY_MAGIC);
        record.extend_from_slice(&self.sequence.to_le_bytes());
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&payload);
        let checksum = blake3::hash(&record);
        record.extend_from_slice(checksum.as_bytes());
        assert!(
            record.len() <= SAFETY_SLOT_BYTES,
            "a safety record fits its slot (checked at compile time for the largest committee)"
        );
        let slot = (self.sequence % 2) as usize * SAFETY_SLOT_BYTES;
        let path = self.path.clone();
        let file = self.open()?;
        std::os::unix::fs::FileExt::write_all_at(file, &record, slot as u64)
            .with_context(|| format!("writing {}", path.display()))?;
        file.sync_data()
            .with_context(|| format!("syncing {}", path.display()))?;
        self.sequence += 1;
        Ok(())
    }

    /// The open file, created at its full size (and its folder synced) the first time.
    fn open(&mut self) -> Result<&File> {
        if self.file.is_none() {
            let created = !self.path.exists();
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&self.path)
                .with_context(|| format!("opening {}", self.path.display()))?;
            if created {
                file.set_len(2 * SAFETY_SLOT_BYTES as u64)?;
                file.sync_all()?;
                if let Some(folder) = self.path.parent() {
                    File::open(folder)?.sync_all()?;
                }
            }
            self.file = Some(file);
        }
        Ok(self.file.as_ref().expect("opened above"))
    }
}

/// One slot's record, if it is intact: (sequence, state).
fn decode_safety_record(slot: &[u8]) -> Option<(u64, SafetyState)> {
    if slot[..8] != SAFETY_MAGIC {
        return None;
    }
    let sequence = u64::from_le_bytes(slot[8..16].try_into().ok()?);
    let len = u32::from_le_bytes(slot[16..20].try_into().ok()?) as usize;
    let end = SAFETY_HEADER_BYTES.checked_add(len)?;
    let stored = slot.get(end..end + SAFETY_CHECKSUM_BYTES)?;
    if blake3::hash(&slot[..end]).as_bytes() != stored || len < 16 {
        return None;
    }
    let payload = &slot[SAFETY_HEADER_BYTES..end];
    let last_voted_round = u64::from_le_bytes(payload[..8].try_into().ok()?);
    let last_timeout_round = u64::from_le_bytes(payload[8..16].try_into().ok()?);
    // rkyv needs its archive aligned; the payload's place in the slot is not.
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(len - 16);
    aligned.extend_from_slice(&payload[16..]);
    let archived =
        rkyv::access::<cas_consensus::messages::ArchivedQuorumCert, rkyv::rancor::Error>(&aligned)
            .ok()?;
    let high_qc = rkyv::deserialize::<QuorumCert, rkyv::rancor::Error>(archived).ok()?;
    Some((
        sequence,
        SafetyState {
            last_voted_round,
            high_qc,
            last_timeout_round,
        },
    ))
}

/// (height, consensus block hash) of the last two blocks handed to execution: written before a block is
/// executed, so whichever of the two the block store ends at, its consensus hash is known.
pub struct ExecutedFile {
    path: PathBuf,
}

impl ExecutedFile {
    pub fn new(data_dir: &Path) -> ExecutedFile {
        ExecutedFile {
            path: data_dir.join("executed.bin"),
        }
    }

    pub fn load(&self) -> Result<Vec<(u64, BlockHash)>> {
        if !self.path.exists() {
            return Ok(Vec::new());
        }
        let bytes = fs::read(&self.path)?;
        if bytes.len() % 40 != 0 {
            bail!("{} is malformed", self.path.display());
        }
        Ok(bytes
            .chunks_exact(40)
            .map(|c| {
                (
                    u64::from_le_bytes(c[..8].try_into().expect("8")),
                    Hash32(c[8..].try_into().expect("32")),
                )
            })
            .collect())
    }

    pub fn store(&self, entries: &[(u64, BlockHash)]) -> Result<()> {
        let bytes: Vec<u8> = entries
            .iter()
            .flat_map(|(height, hash)| height.to_le_bytes().into_iter().chain(hash.0))
            .collect();
        write_atomic(&self.path, &bytes)
    }
}

/// The ledger's witness order state at the base of a store that starts at an installed snapshot (the bytes the
/// committee vouched for), one file per base height: a restart restores it and replays the stored blocks above.
/// Written before the store is reset to the new base, so a crash between the two leaves a file for each base. The
/// file starts with the state's hash (the one the committee vouched for), checked again on load.
pub struct WitnessBaseFile {
    dir: PathBuf,
}

impl WitnessBaseFile {
    pub fn new(data_dir: &Path) -> WitnessBaseFile {
        WitnessBaseFile {
            dir: data_dir.to_path_buf(),
        }
    }

    fn path(&self, height: u64) -> PathBuf {
        self.dir.join(format!("witness-order-{height:020}.bin"))
    }

    pub fn load(&self, height: u64) -> Result<Vec<u8>> {
        let path = self.path(height);
        let mut bytes = std::fs::read(&path).with_context(|| {
            format!(
                "reading {} (the witness order at the store's base)",
                path.display()
            )
        })?;
        if bytes.len() < 32 || bytes[..32] != order_state_hash(&bytes[32..]).0 {
            bail!(
                "{} does not match the hash it was stored with",
                path.display()
            );
        }
        bytes.drain(..32);
        Ok(bytes)
    }

    pub fn store(&self, height: u64, state: &[u8]) -> Result<()> {
        let mut bytes = Vec::with_capacity(32 + state.len());
        bytes.extend_from_slice(&order_state_hash(state).0);
        bytes.extend_from_slice(state);
        write_atomic(&self.path(height), &bytes)
    }

    /// Removes the files of bases other than `height` (best effort: a leftover is only disk space).
    pub fn keep_only(&self, height: u64) {
        let keep = self.path(height);
        let Ok(listed) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in listed.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if path != keep && name.starts_with("witness-order-") && name.ends_with(".bin") {
                if let Err(error) = std::fs::remove_file(&path) {
                    tracing::debug!(path = %path.display(), %error, "old witness order base not removed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn safety(round: u64) -> SafetyState {
        SafetyState {
            last_voted_round: round,
            last_timeout_round: round / 2,
            high_qc: QuorumCert {
                round: round - 1,
                ..QuorumCert::genesis()
            },
        }
    }

    #[test]
    fn the_safety_file_keeps_the_newest_record_and_survives_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = SafetyFile::new(dir.path());
        assert_eq!(file.load().unwrap(), SafetyState::default());
        for round in 1..=5 {
            file.store(&safety(round)).unwrap();
        }
        assert_eq!(SafetyFile::new(dir.path()).load().unwrap(), safety(5));
        // A crash in the middle of the next write tears the slot it was writing (the older one, round 4's):
        // the newest intact record is still there.
        let path = dir.path().join("safety.bin");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[SAFETY_SLOT_BYTES + 30] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let mut reopened = SafetyFile::new(dir.path());
        assert_eq!(reopened.load().unwrap(), safety(5));
        // Writing on after a reload continues the sequence: the next record is the newest.
        reopened.store(&safety(6)).unwrap();
        assert_eq!(SafetyFile::new(dir.path()).load().unwrap(), safety(6));
    }

    #[test]
    fn a_safety_file_with_no_intact_record_is_refused_with_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = SafetyFile::new(dir.path());
        file.store(&safety(7)).unwrap();
        file.store(&safety(8)).unwrap();
        let path = dir.path().join("safety.bin");
        let mut bytes = std::fs::read(&path).unwrap();
        // A flipped byte in each record's last-voted round (the bug of old: round 4.6e18, never voting again).
        bytes[SAFETY_HEADER_BYTES + 7] ^= 0x40;
        bytes[SAFETY_SLOT_BYTES + SAFETY_HEADER_BYTES + 7] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let error = SafetyFile::new(dir.path()).load().unwrap_err().to_string();
        assert!(error.contains("safety.bin"), "{error}");
        assert!(error.contains("neither safety record is intact"), "{error}");
        assert!(error.contains("restore the data folder"), "{error}");
        // A truncated file is refused too.
        std::fs::write(&path, &bytes[..100]).unwrap();
        let error = SafetyFile::new(dir.path()).load().unwrap_err().to_string();
        assert!(error.contains("is 100 bytes"), "{error}");
    }

    #[test]
    fn the_witness_base_file_round_trips_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let file = WitnessBaseFile::new(dir.path());
        file.store(40, b"state at 40").unwrap();
        file.store(80, b"state at 80").unwrap();
        assert_eq!(file.load(80).unwrap(), b"state at 80");
        file.keep_only(80);
        assert!(file.load(40).is_err());
        let path = file.path(80);
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(file.load(80).is_err());
    }
}
