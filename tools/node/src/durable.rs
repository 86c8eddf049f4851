//! The node's small durable files: the consensus safety state (written before any vote leaves) and the execution
//! marker (which consensus block each executed height was), each in place in one of two checksummed slots
//! ([`SlotFile`]: one pwrite and one fdatasync a store); and the witness order at the base of a store that starts at
//! an installed snapshot, which goes to a temporary file, is fsynced, renamed over the old one, and the folder is
//! fsynced: a crash leaves the old or the new, never half.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use cas_consensus::bft::SafetyState;
use cas_consensus::messages::QuorumCert;
use cas_consensus::rewards::order_state_hash;
use cas_engine::{BlockHash, Hash32};

/// Writes `bytes` to `path` through a temporary file that is fsynced and renamed over it, then fsyncs the folder: a
/// crash leaves the old file or the new one, never half.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
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

/// magic, sequence (u64), payload length (u32); the payload; then its blake3 checksum.
const SLOT_HEADER_BYTES: usize = 8 + 8 + 4;
const SLOT_CHECKSUM_BYTES: usize = 32;

/// One small record kept durable in place: two fixed slots of one preallocated file, written in turn, so a store
/// costs one `pwrite` and one `fdatasync` (no create, rename or folder sync). Each record carries a sequence number
/// and a blake3 checksum, so a write torn by a crash spoils only the slot being written (the other still holds the
/// previous record, and whatever the new one guarded has not happened yet); loading takes the intact record with
/// the highest sequence. A file with no intact record is corruption: an error naming the file and what to do.
struct SlotFile {
    path: PathBuf,
    magic: [u8; 8],
    slot_bytes: usize,
    /// What the operator can do when the file is corrupt, for the error.
    way_out: &'static str,
    file: Option<File>,
    /// The sequence of the next record written.
    sequence: u64,
    /// The file was read (or found missing): `sequence` follows what it holds.
    loaded: bool,
    /// A record was written since the last sync (into slot `sequence % 2`; the other slot holds the last synced
    /// record, untouched until the sync).
    dirty: bool,
}

impl SlotFile {
    fn new(path: PathBuf, magic: [u8; 8], slot_bytes: usize, way_out: &'static str) -> SlotFile {
        SlotFile {
            path,
            magic,
            slot_bytes,
            way_out,
            file: None,
            sequence: 0,
            loaded: false,
            dirty: false,
        }
    }

    /// The newest intact record's payload; None when the file does not exist.
    fn load(&mut self) -> Result<Option<Vec<u8>>> {
        self.loaded = true;
        if !self.path.exists() {
            return Ok(None);
        }
        let bytes =
            fs::read(&self.path).with_context(|| format!("cannot read {}", self.path.display()))?;
        if bytes.len() != 2 * self.slot_bytes {
            bail!(
                "{} is {} bytes, not {}: truncated, or not written by this version; {}",
                self.path.display(),
                bytes.len(),
                2 * self.slot_bytes,
                self.way_out
            );
        }
        let newest = bytes
            .chunks_exact(self.slot_bytes)
            .filter_map(|slot| self.decode(slot))
            .max_by_key(|(sequence, _)| *sequence);
        let Some((sequence, payload)) = newest else {
            bail!(
                "{}: neither record is intact (checksum mismatch at offsets 0 and {}): the file is corrupt; {}",
                self.path.display(),
                self.slot_bytes,
                self.way_out
            );
        };
        // What was read counts as the last synced record from here on (the next write goes over the other slot),
        // so it is made durable first: a handle that wrote it may never have synced it (its process crashed, or an
        // instance ended between a write and its sync, see `SlotFile::write`).
        File::open(&self.path)
            .and_then(|file| file.sync_data())
            .with_context(|| format!("syncing {}", self.path.display()))?;
        self.sequence = sequence + 1;
        Ok(Some(payload.to_vec()))
    }

    /// One slot's record, if it is intact: (sequence, payload).
    fn decode<'a>(&self, slot: &'a [u8]) -> Option<(u64, &'a [u8])> {
        if slot[..8] != self.magic {
            return None;
        }
        let sequence = u64::from_le_bytes(slot[8..16].try_into().ok()?);
        let len = u32::from_le_bytes(slot[16..20].try_into().ok()?) as usize;
        let end = SLOT_HEADER_BYTES.checked_add(len)?;
        let stored = slot.get(end..end.checked_add(SLOT_CHECKSUM_BYTES)?)?;
        if blake3::hash(&slot[..end]).as_bytes() != stored {
            return None;
        }
        Some((sequence, &slot[SLOT_HEADER_BYTES..end]))
    }

    /// Makes `payload` durable before returning: written over the older of the two slots, then fdatasynced.
    fn store(&mut self, payload: &[u8]) -> Result<()> {
        self.write(payload)?;
        self.sync()
    }

    /// Writes `payload` over the older of the two slots without syncing it. Until [`SlotFile::sync`], every write
    /// goes to that same slot with the same sequence, so the slot holding the last synced record is never touched:
    /// a crash before the sync reads back that record, whatever became of the writes after it.
    fn write(&mut self, payload: &[u8]) -> Result<()> {
        // A record must outnumber those on disk, or the next load would take an older one for the newest.
        if !self.loaded {
            self.load()?;
        }
        let mut record =
            Vec::with_capacity(SLOT_HEADER_BYTES + payload.len() + SLOT_CHECKSUM_BYTES);
        record.extend_from_slice(&self.magic);
        record.extend_from_slice(&self.sequence.to_le_bytes());
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(payload);
        let checksum = blake3::hash(&record);
        record.extend_from_slice(checksum.as_bytes());
        assert!(
            record.len() <= self.slot_bytes,
            "a record of {} bytes fits its slot of {} (sized for the largest record)",
            record.len(),
            self.slot_bytes
        );
        let slot = (self.sequence % 2) * self.slot_bytes as u64;
        let path = self.path.clone();
        let file = self.open()?;
        std::os::unix::fs::FileExt::write_all_at(file, &record, slot)
            .with_context(|| format!("writing {}", path.display()))?;
        self.dirty = true;
        Ok(())
    }

    /// Makes the last write durable (one fdatasync); nothing to do when nothing was written since.
    fn sync(&mut self) -> Result<()> {
        self.sync_with(File::sync_data)
    }

    /// [`SlotFile::sync`] by `sync_data`, which must make the file's written data durable (`fdatasync`), on this
    /// thread or another before it returns.
    fn sync_with(&mut self, sync_data: impl FnOnce(&File) -> std::io::Result<()>) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let file = self.file.as_ref().expect("a written file is open");
        sync_data(file).with_context(|| format!("syncing {}", self.path.display()))?;
        self.sequence += 1;
        self.dirty = false;
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
                file.set_len(2 * self.slot_bytes as u64)?;
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

/// Bytes of one safety record slot: room for a quorum certificate of the largest committee.
const SAFETY_SLOT_BYTES: usize = 128 * 1024;
/// Two signatures' worth per member (index and signature, with the archive's overhead) for the largest committee.
const _: () = assert!(
    SLOT_HEADER_BYTES + 16 + 256 + cas_engine::codec::COMMITTEE_MAX * 80 + SLOT_CHECKSUM_BYTES
        <= SAFETY_SLOT_BYTES
);

/// The consensus safety state (`safety.bin`), durable before any vote leaves, in a [`SlotFile`]: a torn write
/// falls back to the previous state, and a file with no intact record stops the node rather than start it from
/// the default state, which could vote twice in a round.
pub struct SafetyFile {
    slots: SlotFile,
}

impl SafetyFile {
    pub fn new(data_dir: &Path) -> SafetyFile {
        SafetyFile::for_epoch(data_dir, 0)
    }

    /// The safety state of the BFT instance of committee epoch `epoch` (each instance votes in its own rounds,
    /// from 1): `safety.bin` for the genesis committee's, `safety-<epoch>.bin` for later ones.
    pub fn for_epoch(data_dir: &Path, epoch: u64) -> SafetyFile {
        let name = match epoch {
            0 => "safety.bin".to_string(),
            epoch => format!("safety-{epoch}.bin"),
        };
        SafetyFile {
            slots: SlotFile::new(
                data_dir.join(name),
                *b"CASSAFE1",
                SAFETY_SLOT_BYTES,
                "voting from a default state could vote twice in a round: restore the data folder from a backup, or \
                 give the node a new key and folder",
            ),
        }
    }

    pub fn path(&self) -> &Path {
        &self.slots.path
    }

    /// Whether a state was ever stored (the instance voted or timed out in some round).
    pub fn exists(&self) -> bool {
        self.slots.path.exists()
    }

    /// The stored state; the default when the node has never voted (no file).
    pub fn load(&mut self) -> Result<SafetyState> {
        let Some(payload) = self.slots.load()? else {
            return Ok(SafetyState::default());
        };
        let path = self.slots.path.display();
        if payload.len() < 16 {
            bail!(
                "{path}: the safety record is {} bytes, too short",
                payload.len()
            );
        }
        let last_voted_round = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
        let last_timeout_round = u64::from_le_bytes(payload[8..16].try_into().expect("8 bytes"));
        // rkyv needs its archive aligned; the payload's place in the record is not.
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(payload.len() - 16);
        aligned.extend_from_slice(&payload[16..]);
        let archived = rkyv::access::<
            cas_consensus::messages::ArchivedQuorumCert,
            rkyv::rancor::Error,
        >(&aligned)
        .map_err(|_| anyhow::anyhow!("{path}: the safety record's certificate does not decode"))?;
        let high_qc =
            rkyv::deserialize::<QuorumCert, rkyv::rancor::Error>(archived).map_err(|_| {
                anyhow::anyhow!("{path}: the safety record's certificate does not decode")
            })?;
        Ok(SafetyState {
            last_voted_round,
            high_qc,
            last_timeout_round,
        })
    }

    /// Makes `safety` durable before returning.
    pub fn store(&mut self, safety: &SafetyState) -> Result<()> {
        self.write(safety)?;
        self.sync()
    }

    /// Writes `safety` without syncing it: the caller syncs ([`SafetyFile::sync`]) before any message that
    /// depends on it leaves the node, and can do so beside its other syncs. Until then a crash reads back the last
    /// synced state (see [`SlotFile::write`]).
    pub fn write(&mut self, safety: &SafetyState) -> Result<()> {
        let mut payload = Vec::with_capacity(256);
        payload.extend_from_slice(&safety.last_voted_round.to_le_bytes());
        payload.extend_from_slice(&safety.last_timeout_round.to_le_bytes());
        payload.extend_from_slice(&rkyv::to_bytes::<rkyv::rancor::Error>(&safety.high_qc)?);
        self.slots.write(&payload)
    }

    /// Makes the last [`SafetyFile::write`] durable; nothing to do when there was none since the last sync.
    pub fn sync(&mut self) -> Result<()> {
        self.slots.sync()
    }

    /// [`SafetyFile::sync`] with the fdatasync made by `sync_data` (on another thread, beside the caller's other
    /// syncs), which must return only once the file's data is durable.
    pub fn sync_with(
        &mut self,
        sync_data: impl FnOnce(&File) -> std::io::Result<()>,
    ) -> Result<()> {
        self.slots.sync_with(sync_data)
    }

    /// Whether a written state is not durable yet.
    pub fn is_dirty(&self) -> bool {
        self.slots.dirty
    }
}

/// Bytes of one epoch base: epoch, height, consensus block hash, timestamp.
const BASE_ENTRY_BYTES: usize = 8 + 8 + 32 + 8;
const BASE_SLOT_BYTES: usize = 512;
const _: () =
    assert!(SLOT_HEADER_BYTES + 2 * BASE_ENTRY_BYTES + SLOT_CHECKSUM_BYTES <= BASE_SLOT_BYTES);

/// The bases of the last two BFT instances this node started at a hand-over (`epoch_bases.bin`, a [`SlotFile`]):
/// an instance restarted inside its epoch starts from its base again, which the ledger alone does not give (it
/// keeps the consensus hash of the last two executed heights only).
pub struct EpochBaseFile {
    slots: SlotFile,
}

impl EpochBaseFile {
    pub fn new(data_dir: &Path) -> EpochBaseFile {
        EpochBaseFile {
            slots: SlotFile::new(
                data_dir.join("epoch_bases.bin"),
                *b"CASBASE1",
                BASE_SLOT_BYTES,
                EXECUTED_WAY_OUT,
            ),
        }
    }

    /// The stored bases, oldest first: (epoch, base).
    pub fn load(&mut self) -> Result<Vec<(u64, cas_consensus::bft::Base)>> {
        let Some(payload) = self.slots.load()? else {
            return Ok(Vec::new());
        };
        if payload.len() % BASE_ENTRY_BYTES != 0 || payload.len() > 2 * BASE_ENTRY_BYTES {
            bail!(
                "{}: {} bytes, not up to two epoch bases; {EXECUTED_WAY_OUT}",
                self.slots.path.display(),
                payload.len()
            );
        }
        Ok(payload
            .chunks_exact(BASE_ENTRY_BYTES)
            .map(|c| {
                let word = |at: usize| u64::from_le_bytes(c[at..at + 8].try_into().expect("8"));
                (
                    word(0),
                    cas_consensus::bft::Base {
                        height: word(8),
                        hash: Hash32(c[16..48].try_into().expect("32")),
                        timestamp_ms: word(48),
                    },
                )
            })
            .collect())
    }

    /// Keeps `base` as epoch `epoch`'s (with the newest one before it), durable before returning.
    pub fn store(&mut self, epoch: u64, base: cas_consensus::bft::Base) -> Result<()> {
        let mut entries = self.load()?;
        entries.retain(|(e, _)| *e < epoch);
        entries.push((epoch, base));
        let skip = entries.len().saturating_sub(2);
        let mut payload = Vec::with_capacity(2 * BASE_ENTRY_BYTES);
        for (epoch, base) in &entries[skip..] {
            payload.extend_from_slice(&epoch.to_le_bytes());
            payload.extend_from_slice(&base.height.to_le_bytes());
            payload.extend_from_slice(&base.hash.0);
            payload.extend_from_slice(&base.timestamp_ms.to_le_bytes());
        }
        self.slots.store(&payload)
    }
}

/// Entries an execution marker holds: the last two blocks handed to execution.
const EXECUTED_ENTRIES_MAX: usize = 2;
/// Bytes of one entry: height (u64) and consensus block hash.
const EXECUTED_ENTRY_BYTES: usize = 8 + 32;
const EXECUTED_SLOT_BYTES: usize = 4096;
const _: () = assert!(
    SLOT_HEADER_BYTES + EXECUTED_ENTRIES_MAX * EXECUTED_ENTRY_BYTES + SLOT_CHECKSUM_BYTES
        <= EXECUTED_SLOT_BYTES
);

/// What an operator can do when the execution marker cannot be trusted.
pub const EXECUTED_WAY_OUT: &str = "restore the data folder from a backup, or move it aside and start the node on \
                                    an empty one: it catches up from its peers (by snapshot when far behind)";

/// (height, consensus block hash) of the last two blocks handed to execution (`executed.bin`, a [`SlotFile`]):
/// written before a block is executed, so whichever of the two the block store ends at, its consensus hash is
/// known.
pub struct ExecutedFile {
    slots: SlotFile,
}

impl ExecutedFile {
    pub fn new(data_dir: &Path) -> ExecutedFile {
        ExecutedFile {
            slots: SlotFile::new(
                data_dir.join("executed.bin"),
                *b"CASEXEC1",
                EXECUTED_SLOT_BYTES,
                EXECUTED_WAY_OUT,
            ),
        }
    }

    pub fn path(&self) -> &Path {
        &self.slots.path
    }

    pub fn load(&mut self) -> Result<Vec<(u64, BlockHash)>> {
        let Some(payload) = self.slots.load()? else {
            return Ok(Vec::new());
        };
        if payload.len() % EXECUTED_ENTRY_BYTES != 0
            || payload.len() > EXECUTED_ENTRIES_MAX * EXECUTED_ENTRY_BYTES
        {
            bail!(
                "{}: the execution marker holds {} bytes, not up to {EXECUTED_ENTRIES_MAX} entries of \
                 {EXECUTED_ENTRY_BYTES}; {EXECUTED_WAY_OUT}",
                self.slots.path.display(),
                payload.len()
            );
        }
        Ok(payload
            .chunks_exact(EXECUTED_ENTRY_BYTES)
            .map(|c| {
                (
                    u64::from_le_bytes(c[..8].try_into().expect("8")),
                    Hash32(c[8..].try_into().expect("32")),
                )
            })
            .collect())
    }

    pub fn store(&mut self, entries: &[(u64, BlockHash)]) -> Result<()> {
        assert!(
            entries.len() <= EXECUTED_ENTRIES_MAX,
            "the executor keeps two marks"
        );
        let payload: Vec<u8> = entries
            .iter()
            .flat_map(|(height, hash)| height.to_le_bytes().into_iter().chain(hash.0))
            .collect();
        self.slots.store(&payload)
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

    /// A follower that is about to join writes the execution marker through a new handle, over a member's old
    /// marks with a higher sequence: its record must still be the one read back.
    #[test]
    fn a_store_through_a_new_handle_outnumbers_the_records_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut member = ExecutedFile::new(dir.path());
        for height in 1..=9u64 {
            member
                .store(&[(height, Hash32([height as u8; 32]))])
                .unwrap();
        }
        ExecutedFile::new(dir.path())
            .store(&[(64, Hash32([64; 32]))])
            .unwrap();
        assert_eq!(
            ExecutedFile::new(dir.path()).load().unwrap(),
            vec![(64, Hash32([64; 32]))]
        );
    }

    #[test]
    fn each_epoch_votes_from_its_own_safety_file() {
        let dir = tempfile::tempdir().unwrap();
        SafetyFile::for_epoch(dir.path(), 0)
            .store(&safety(9))
            .unwrap();
        let mut later = SafetyFile::for_epoch(dir.path(), 3);
        assert!(!later.exists(), "epoch 3's instance never voted");
        later.store(&safety(2)).unwrap();
        assert_eq!(SafetyFile::new(dir.path()).load().unwrap(), safety(9));
        assert_eq!(
            SafetyFile::for_epoch(dir.path(), 3).load().unwrap(),
            safety(2)
        );
    }

    #[test]
    fn the_epoch_base_file_keeps_the_two_newest_bases() {
        let dir = tempfile::tempdir().unwrap();
        let base = |height: u64| cas_consensus::bft::Base {
            height,
            hash: Hash32([height as u8; 32]),
            timestamp_ms: height * 1_000,
        };
        let mut file = EpochBaseFile::new(dir.path());
        assert!(file.load().unwrap().is_empty());
        for epoch in 1..=3 {
            file.store(epoch, base(epoch * 16)).unwrap();
        }
        // Storing an epoch again (a restart that hands over once more) replaces it and what came after.
        file.store(3, base(48)).unwrap();
        assert_eq!(
            EpochBaseFile::new(dir.path()).load().unwrap(),
            vec![(2, base(32)), (3, base(48))]
        );
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
        bytes[SLOT_HEADER_BYTES + 7] ^= 0x40;
        bytes[SAFETY_SLOT_BYTES + SLOT_HEADER_BYTES + 7] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let error = SafetyFile::new(dir.path()).load().unwrap_err().to_string();
        assert!(error.contains("safety.bin"), "{error}");
        assert!(error.contains("neither record is intact"), "{error}");
        assert!(error.contains("restore the data folder"), "{error}");
        // A truncated file is refused too.
        std::fs::write(&path, &bytes[..100]).unwrap();
        let error = SafetyFile::new(dir.path()).load().unwrap_err().to_string();
        assert!(error.contains("is 100 bytes"), "{error}");
    }

    #[test]
    fn the_execution_marker_is_checksummed_and_its_errors_name_the_file_and_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = ExecutedFile::new(dir.path());
        assert!(file.load().unwrap().is_empty());
        let marks = vec![(7, Hash32([7; 32])), (8, Hash32([8; 32]))];
        file.store(&marks[..1]).unwrap();
        file.store(&marks).unwrap();
        assert_eq!(ExecutedFile::new(dir.path()).load().unwrap(), marks);
        let path = file.path().to_path_buf();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[SLOT_HEADER_BYTES + 3] ^= 1;
        bytes[EXECUTED_SLOT_BYTES + SLOT_HEADER_BYTES + 3] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let error = ExecutedFile::new(dir.path())
            .load()
            .unwrap_err()
            .to_string();
        assert!(error.contains("executed.bin"), "{error}");
        assert!(error.contains("catches up from its peers"), "{error}");
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
