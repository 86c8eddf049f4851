//! The consensus journal: every package and consensus block the state machines ask to keep (`StorePackage`,
//! `StoreBlock`) is appended to segment files of checksummed records and fdatasynced before any later action
//! leaves the node, so an ack of a package or a vote for a block is never sent for something held only in memory.
//! On start the journal is read back (a torn tail is cut) to restore availability and the BFT. Only the newest
//! segments, up to [`JOURNAL_KEPT_BYTES`], are kept: older history is served by peers (catch-up), as before.
//!
//! Record layout (little-endian): `magic "CASJ" | payload length u32 | blake3 checksum (32) | payload`, the payload
//! a consensus message (`Package` or `BlockResponse`) read back through the one validating message decoder.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use cas_consensus::messages::{
    decode_message, encode_message, Block, Message, Package, MESSAGE_BYTES_MAX,
};

const MAGIC: [u8; 4] = *b"CASJ";
const HEADER_BYTES: usize = 4 + 4 + 32;
const CHECKSUM_DOMAIN: &str = "CAS 2026-11 consensus journal record v1";
/// A new segment starts when the current one passes this size.
pub const JOURNAL_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Segments are deleted, oldest first, while the rest still hold at least this much.
pub const JOURNAL_KEPT_BYTES: u64 = 256 * 1024 * 1024;
/// Buffered bytes written before a sync forces them out.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// What the journal held at start.
#[derive(Default)]
pub struct Replayed {
    pub packages: Vec<Package>,
    pub blocks: Vec<Block>,
    /// Bytes of a torn last record cut off.
    pub truncated: u64,
}

pub struct Journal {
    dir: PathBuf,
    segment: u64,
    segment_bytes: u64,
    writer: BufWriter<File>,
    /// Records written since the last sync.
    dirty: bool,
    pub syncs: u64,
    /// Told each group commit's fdatasync duration (the operator's metrics).
    pub fsync: Option<prometheus::Histogram>,
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:010}.journal"))
}

fn segments(dir: &Path) -> Result<Vec<u64>> {
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(number) = name.strip_suffix(".journal").and_then(|n| n.parse().ok()) {
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

fn checksum(payload: &[u8]) -> [u8; 32] {
    *blake3::Hasher::new_derive_key(CHECKSUM_DOMAIN)
        .update(payload)
        .finalize()
        .as_bytes()
}

/// What an operator can do about a corrupt journal, said with the error.
const CORRUPT_WAY_OUT: &str = "to recover, stop the node, move its journal folder aside and start it again: it \
     fetches the consensus blocks and packages it lacks from its peers, and its votes are kept apart in safety.bin";

/// Whether the bad record at `offset` of the last segment is an append cut short by a crash rather than damage:
/// no intact chain of records starts after it and runs to the end of the file. (After damage the records that
/// follow are still there, one after another, to the end; in a torn append anything after its start is its own
/// payload, which a client may fill with record-like bytes, but such bytes do not chain, as whole records holding
/// messages, exactly to where the crash cut the file.)
fn torn_tail(bytes: &[u8], offset: usize) -> bool {
    (offset + 1..bytes.len().saturating_sub(HEADER_BYTES - 1))
        .filter(|&at| bytes[at..at + 4] == MAGIC)
        .all(|at| !chains_to_end(bytes, at))
}

/// Whether intact records, each holding a message the journal writes, follow one another from `offset` to exactly
/// the end of `bytes`.
fn chains_to_end(bytes: &[u8], mut offset: usize) -> bool {
    while offset < bytes.len() {
        match parse_record(bytes, offset) {
            Ok((payload, next))
                if matches!(
                    decode_message(payload),
                    Ok(Message::Package(_) | Message::BlockResponse(_))
                ) =>
            {
                offset = next
            }
            _ => return false,
        }
    }
    true
}

/// The record at `offset`: Ok((payload, next offset)), or Err(reason) when it is torn or corrupt.
fn parse_record(bytes: &[u8], offset: usize) -> std::result::Result<(&[u8], usize), String> {
    let header = bytes
        .get(offset..offset + HEADER_BYTES)
        .ok_or("a partial header")?;
    if header[..4] != MAGIC {
        return Err("no record magic".into());
    }
    let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
    if len > MESSAGE_BYTES_MAX {
        return Err(format!("a length of {len} bytes"));
    }
    let payload = bytes
        .get(offset + HEADER_BYTES..offset + HEADER_BYTES + len)
        .ok_or("a partial payload")?;
    if header[8..40] != checksum(payload) {
        return Err("a checksum mismatch".into());
    }
    Ok((payload, offset + HEADER_BYTES + len))
}

impl Journal {
    /// Opens (or creates) the journal in `dir` and reads back what it holds. A bad record at the end of the last
    /// segment ([`torn_tail`]: cut short by the end of the file, or with no intact record after it) is a torn append
    /// and is cut; a bad record anywhere else is
    /// corruption: an error naming the segment, the offset and the way out, and nothing is cut.
    pub fn open(dir: &Path) -> Result<(Journal, Replayed)> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let numbers = segments(dir)?;
        let mut replayed = Replayed::default();
        let mut tail_bytes = 0u64;
        for (position, &segment) in numbers.iter().enumerate() {
            let path = segment_path(dir, segment);
            let bytes =
                fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let mut offset = 0usize;
            while offset < bytes.len() {
                match parse_record(&bytes, offset) {
                    Ok((payload, next)) => {
                        match decode_message(payload).with_context(|| {
                            format!("{} at offset {offset}: a bad message", path.display())
                        })? {
                            Message::Package(package) => replayed.packages.push(package),
                            Message::BlockResponse(block) => replayed.blocks.push(block),
                            other => bail!(
                                "{} at offset {offset}: an unexpected {other:?}",
                                path.display()
                            ),
                        }
                        offset = next;
                    }
                    Err(reason)
                        if position + 1 == numbers.len()
                            && torn_tail(&bytes, offset) =>
                    {
                        // Only the append being written when the process died can be incomplete.
                        let cut = (bytes.len() - offset) as u64;
                        let file = OpenOptions::new().write(true).open(&path)?;
                        file.set_len(offset as u64)?;
                        file.sync_all()?;
                        tracing::warn!(segment = %path.display(), offset, %reason, cut, "journal: torn tail cut");
                        replayed.truncated = cut;
                        break;
                    }
                    Err(reason) => bail!(
                        "the journal is corrupt: {} at offset {offset}: {reason}, and it is no torn last \
                         append; {CORRUPT_WAY_OUT}",
                        path.display()
                    ),
                }
            }
            tail_bytes = offset as u64;
        }
        let segment = numbers.last().copied().unwrap_or(0);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(dir, segment))?;
        File::open(dir)?.sync_all()?;
        Ok((
            Journal {
                dir: dir.to_path_buf(),
                segment,
                segment_bytes: tail_bytes,
                writer: BufWriter::with_capacity(WRITE_BUFFER_BYTES, file),
                dirty: false,
                syncs: 0,
                fsync: None,
            },
            replayed,
        ))
    }

    /// Takes the package by value: it is encoded once, never copied (a received package is stored on this path).
    pub fn append_package(&mut self, package: Package) -> Result<()> {
        self.append(&Message::Package(package))
    }

    pub fn append_block(&mut self, block: Block) -> Result<()> {
        self.append(&Message::BlockResponse(block))
    }

    fn append(&mut self, message: &Message) -> Result<()> {
        let payload = encode_message(message);
        if self.segment_bytes + (HEADER_BYTES + payload.len()) as u64 > JOURNAL_SEGMENT_BYTES
            && self.segment_bytes > 0
        {
            self.rotate()?;
        }
        self.writer.write_all(&MAGIC)?;
        self.writer
            .write_all(&(payload.len() as u32).to_le_bytes())?;
        self.writer.write_all(&checksum(&payload))?;
        self.writer.write_all(&payload)?;
        self.segment_bytes += (HEADER_BYTES + payload.len()) as u64;
        self.dirty = true;
        Ok(())
    }

    /// Whether records were appended since the last sync.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Makes every record appended so far durable (one fdatasync for all of them); nothing to do when clean.
    pub fn sync(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        self.writer.flush().context("journal write")?;
        let syncing = std::time::Instant::now();
        self.writer
            .get_ref()
            .sync_data()
            .context("journal fdatasync")?;
        if let Some(fsync) = &self.fsync {
            fsync.observe(syncing.elapsed().as_secs_f64());
        }
        self.dirty = false;
        self.syncs += 1;
        Ok(())
    }

    /// Closes the current segment (durably) and starts the next; deletes the oldest beyond the retention.
    fn rotate(&mut self) -> Result<()> {
        self.dirty = true;
        self.sync()?;
        self.segment += 1;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(&self.dir, self.segment))?;
        self.writer = BufWriter::with_capacity(WRITE_BUFFER_BYTES, file);
        self.segment_bytes = 0;
        let numbers = segments(&self.dir)?;
        let mut kept = 0u64;
        for &number in numbers.iter().rev() {
            let path = segment_path(&self.dir, number);
            if kept >= JOURNAL_KEPT_BYTES {
                fs::remove_file(&path)
                    .with_context(|| format!("cannot delete {}", path.display()))?;
            } else {
                kept += fs::metadata(&path).map_or(0, |m| m.len());
            }
        }
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cas_engine::fixtures::{funded_genesis, transfer};
    use cas_engine::genesis::genesis_outputs;

    fn package(sequence: u64) -> Package {
        let genesis = funded_genesis(1, 4, 2, 1, 1_000);
        let coins = genesis_outputs(&genesis.txs);
        let owner = cas_engine::fixtures::key(cas_engine::fixtures::ACCOUNT_KEYS, 0);
        let to = cas_engine::fixtures::key(cas_engine::fixtures::ACCOUNT_KEYS, 1);
        Package {
            creator: 1,
            sequence,
            txs: vec![transfer(1, &owner, &[coins[0]], &to, 10, 1)],
        }
    }

    #[test]
    fn reads_back_what_was_synced_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut journal, replayed) = Journal::open(dir.path()).unwrap();
            assert!(replayed.packages.is_empty() && replayed.blocks.is_empty());
            for sequence in 0..3 {
                journal.append_package(package(sequence)).unwrap();
            }
            journal.sync().unwrap();
        }
        let path = segment_path(dir.path(), 0);
        let whole = fs::read(&path).unwrap();
        // A torn append: half of a fourth record.
        let mut torn = whole.clone();
        torn.extend_from_slice(&whole[..whole.len() / 6]);
        fs::write(&path, &torn).unwrap();
        let (_, replayed) = Journal::open(dir.path()).unwrap();
        assert_eq!(replayed.packages, (0..3).map(package).collect::<Vec<_>>());
        assert_eq!(replayed.truncated, (whole.len() / 6) as u64);
        assert_eq!(fs::read(&path).unwrap(), whole, "the torn tail is cut");
    }

    /// Issue 16 item 3: a flipped byte early in the active segment was taken for a torn tail, and everything after
    /// it (acknowledged packages and blocks) was cut with a warning.
    #[test]
    fn a_flipped_bit_in_the_active_segment_is_corruption_and_nothing_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut journal, _) = Journal::open(dir.path()).unwrap();
            for sequence in 0..3 {
                journal.append_package(package(sequence)).unwrap();
            }
            journal.sync().unwrap();
        }
        let path = segment_path(dir.path(), 0);
        for at in [HEADER_BYTES + 5, 5, 10] {
            let mut bytes = fs::read(&path).unwrap();
            let whole = bytes.clone();
            bytes[at] ^= 0x10;
            fs::write(&path, &bytes).unwrap();
            let error = Journal::open(dir.path())
                .err()
                .expect("corruption is refused")
                .to_string();
            assert!(
                error.contains("0000000000.journal")
                    && error.contains("offset 0")
                    && error.contains("move its journal folder aside"),
                "{error}"
            );
            assert_eq!(fs::read(&path).unwrap(), bytes, "nothing is cut");
            fs::write(&path, &whole).unwrap();
        }
    }

    #[test]
    fn a_flipped_bit_before_the_tail_is_an_error_naming_the_place() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut journal, _) = Journal::open(dir.path()).unwrap();
            journal.append_package(package(0)).unwrap();
            journal.rotate().unwrap();
            journal.append_package(package(1)).unwrap();
            journal.sync().unwrap();
        }
        let first = segment_path(dir.path(), 0);
        let mut bytes = fs::read(&first).unwrap();
        bytes[HEADER_BYTES + 5] ^= 0x10;
        fs::write(&first, &bytes).unwrap();
        let error = Journal::open(dir.path())
            .err()
            .expect("corruption is refused")
            .to_string();
        assert!(
            error.contains("0000000000.journal") && error.contains("offset 0"),
            "{error}"
        );
    }
}
