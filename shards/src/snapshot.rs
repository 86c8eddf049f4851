//! UTXO snapshots: the whole unspent set at one height, written to a temp file, fsynced, renamed into place and
//! the directory fsynced, so a snapshot file is either absent or complete. A blake3 checksum over the file and
//! the set commitment guard it on read. It owns only its directory; it never reads the block store.
//!
//! Layout (little-endian): `magic "CASSNAP1" | height u64 | count u64 | count x entry (117 bytes) |
//! commitment checksum (32) | blake3 of everything before (32)`; an entry is
//! `tx id (32) | index u32 | amount u64 | asset (32) | owner (32) | lock flag u8 | unlock height u64`.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use cas_engine::{AssetId, Hash32, OutPoint, PublicKey, TxOutput};

use crate::error::Error;
use crate::limits::{
    SNAPSHOTS_KEPT, SNAPSHOT_ENTRIES_MAX, SNAPSHOT_OUTPUTS_PER_BLOCK,
    SNAPSHOT_SPACING_DOUBLINGS_MAX,
};
use crate::store::sync_dir;

const MAGIC: &[u8; 8] = b"CASSNAP1";
const CHECKSUM_DOMAIN: &str = "CAS 2026-11 utxo snapshot v1";
/// One encoded entry (the layout in the module header); snapshot files and transfer chunks share it.
pub const ENTRY_BYTES: usize = 117;
const HEAD_BYTES: usize = 24;
/// The buffer a snapshot is written through.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// A file written through a buffer whose every flushed byte also feeds the checksum.
struct ChecksummedWriter {
    file: File,
    hasher: blake3::Hasher,
    buffer: Vec<u8>,
}

impl ChecksummedWriter {
    fn flush_when_full(&mut self) -> std::io::Result<()> {
        if self.buffer.len() >= WRITE_BUFFER_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.hasher.update(&self.buffer);
        self.file.write_all(&self.buffer)?;
        self.buffer.clear();
        Ok(())
    }

    /// Writes what is buffered, then the checksum of everything before it, and syncs the file.
    fn finish(mut self) -> std::io::Result<()> {
        self.flush()?;
        let checksum = self.hasher.finalize();
        self.file.write_all(checksum.as_bytes())?;
        self.file.sync_all()
    }
}

/// A snapshot read back and checked (or assembled from a transfer, see [`crate::transfer`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub height: u64,
    pub entries: Vec<(OutPoint, TxOutput)>,
    /// The UTXO set checksum at `height`, as the ledger computed it when writing.
    pub commitment: Hash32,
}

pub fn snapshot_path(dir: &Path, height: u64) -> PathBuf {
    dir.join(format!("snapshot-{height:016}.snap"))
}

pub(crate) fn encode_entry(out: &mut Vec<u8>, outpoint: &OutPoint, coin: &TxOutput) {
    out.extend_from_slice(&outpoint.tx.0);
    out.extend_from_slice(&outpoint.index.to_le_bytes());
    out.extend_from_slice(&coin.amount.to_le_bytes());
    out.extend_from_slice(&coin.asset.0 .0);
    out.extend_from_slice(&coin.owner.0);
    out.push(u8::from(coin.unlock_height.is_some()));
    out.extend_from_slice(&coin.unlock_height.unwrap_or(0).to_le_bytes());
}

pub(crate) fn decode_entry(bytes: &[u8]) -> Result<(OutPoint, TxOutput), String> {
    let take32 = |at: usize| -> [u8; 32] { bytes[at..at + 32].try_into().expect("32 bytes") };
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let outpoint = OutPoint {
        tx: Hash32(take32(0)),
        index: u32::from_le_bytes(bytes[32..36].try_into().expect("4 bytes")),
    };
    let unlock_height = match bytes[108] {
        0 => None,
        1 => Some(u64_at(109)),
        flag => return Err(format!("lock flag {flag}")),
    };
    let coin = TxOutput {
        amount: u64_at(36),
        asset: AssetId(Hash32(take32(44))),
        owner: PublicKey(take32(76)),
        unlock_height,
    };
    Ok((outpoint, coin))
}

/// Whether a snapshot is taken at `height`, whose block left `outputs` unspent outputs in the set: every
/// `every_blocks` while the set is small, the spacing doubling (at most [`SNAPSHOT_SPACING_DOUBLINGS_MAX`] times)
/// while the set holds more than [`SNAPSHOT_OUTPUTS_PER_BLOCK`] outputs per block of spacing. A function of the
/// height and the set's size, which every member's ledger has the same after the block, so members snapshot at the
/// same heights and a node that fetches one finds it on many of them. Spacings are `every_blocks` times a power
/// of two, so a height due under a longer spacing is due under every shorter one.
pub fn snapshot_due(height: u64, outputs: u64, every_blocks: u64) -> bool {
    let mut spacing = every_blocks.max(1);
    for _ in 0..SNAPSHOT_SPACING_DOUBLINGS_MAX {
        if spacing.saturating_mul(SNAPSHOT_OUTPUTS_PER_BLOCK) >= outputs {
            break;
        }
        spacing = spacing.saturating_mul(2);
    }
    height.is_multiple_of(spacing)
}

/// Writes the snapshot of `entries` at `height` durably, then deletes all but the newest [`SNAPSHOTS_KEPT`].
pub fn write(
    dir: &Path,
    height: u64,
    entries: &[(OutPoint, TxOutput)],
    commitment: Hash32,
) -> Result<PathBuf, Error> {
    write_sorted(dir, height, entries.iter().map(|(o, c)| (o, c)), commitment)
}

/// [`write`] from entries already sorted by outpoint, as the mirror's sorted set yields them. In debug builds the
/// entries' order and commitment are checked (a mirror that drifted from the shards fails loudly there): every node
/// writes the same set in the same bytes.
pub(crate) fn write_sorted<'a>(
    dir: &Path,
    height: u64,
    entries: impl ExactSizeIterator<Item = (&'a OutPoint, &'a TxOutput)>,
    commitment: Hash32,
) -> Result<PathBuf, Error> {
    let count = entries.len();
    fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let path = snapshot_path(dir, height);
    let temp = path.with_extension("tmp");
    let file = File::create(&temp).map_err(|e| Error::io("create", &temp, e))?;
    // Streamed through a buffer with the checksum computed on the way: the file is never held in memory whole.
    let mut out = ChecksummedWriter {
        file,
        hasher: blake3::Hasher::new_derive_key(CHECKSUM_DOMAIN),
        buffer: Vec::with_capacity(WRITE_BUFFER_BYTES + ENTRY_BYTES),
    };
    let written = (|| {
        out.buffer.extend_from_slice(MAGIC);
        out.buffer.extend_from_slice(&height.to_le_bytes());
        out.buffer.extend_from_slice(&(count as u64).to_le_bytes());
        let mut check = cfg!(debug_assertions).then(cas_engine::SetCommitment::default);
        let mut previous: Option<&OutPoint> = None;
        for (outpoint, coin) in entries {
            debug_assert!(
                previous < Some(outpoint),
                "snapshot entries in strictly ascending outpoint order"
            );
            previous = Some(outpoint);
            encode_entry(&mut out.buffer, outpoint, coin);
            out.flush_when_full()?;
            if let Some(check) = check.as_mut() {
                check.insert(outpoint, coin);
            }
        }
        if let Some(check) = check {
            assert_eq!(
                check.checksum(),
                commitment,
                "snapshot entries match the commitment they are written with"
            );
        }
        out.buffer.extend_from_slice(&commitment.0);
        out.finish()
    })();
    written.map_err(|e| Error::io("write", &temp, e))?;
    fs::rename(&temp, &path).map_err(|e| Error::io("rename", &temp, e))?;
    sync_dir(dir)?;
    tracing::info!(height, entries = count, path = %path.display(), "snapshot written");
    for (_, old) in list(dir)?.into_iter().skip(SNAPSHOTS_KEPT) {
        fs::remove_file(&old).map_err(|e| Error::io("remove", &old, e))?;
    }
    Ok(path)
}

/// Snapshot files in `dir`, newest first (leftover temp files are ignored).
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, Error> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let name = entry.file_name();
        if let Some(height) = name
            .to_string_lossy()
            .strip_prefix("snapshot-")
            .and_then(|rest| rest.strip_suffix(".snap"))
            .and_then(|digits| digits.parse::<u64>().ok())
        {
            found.push((height, entry.path()));
        }
    }
    found.sort_unstable_by_key(|(height, _)| std::cmp::Reverse(*height));
    Ok(found)
}

/// Reads and checks one snapshot file.
pub fn read(path: &Path) -> Result<Snapshot, Error> {
    let bad = |reason: String| Error::Snapshot {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = fs::read(path).map_err(|e| Error::io("read", path, e))?;
    if bytes.len() < HEAD_BYTES + 64 || &bytes[..8] != MAGIC {
        return Err(bad("not a snapshot".to_string()));
    }
    let (body, checksum) = bytes.split_at(bytes.len() - 32);
    let computed = blake3::Hasher::new_derive_key(CHECKSUM_DOMAIN)
        .update(body)
        .finalize();
    if computed.as_bytes() != checksum {
        return Err(bad("checksum mismatch".to_string()));
    }
    let height = u64::from_le_bytes(body[8..16].try_into().expect("8 bytes"));
    let count = u64::from_le_bytes(body[16..24].try_into().expect("8 bytes"));
    if count > SNAPSHOT_ENTRIES_MAX
        || body.len() as u64 != HEAD_BYTES as u64 + count * ENTRY_BYTES as u64 + 32
    {
        return Err(bad(format!(
            "{count} entries do not fit {} bytes",
            body.len()
        )));
    }
    let entries = body[HEAD_BYTES..body.len() - 32]
        .chunks_exact(ENTRY_BYTES)
        .map(decode_entry)
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    let commitment = Hash32(body[body.len() - 32..].try_into().expect("32 bytes"));
    Ok(Snapshot {
        height,
        entries,
        commitment,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spacing_is_the_configured_one_while_the_set_is_small() {
        let small = 500 * SNAPSHOT_OUTPUTS_PER_BLOCK;
        let due: Vec<u64> = (1..=2_000)
            .filter(|h| snapshot_due(*h, small, 500))
            .collect();
        assert_eq!(due, [500, 1_000, 1_500, 2_000]);
    }

    #[test]
    fn spacing_doubles_with_the_set_up_to_its_cap() {
        let every = 500;
        let spacing = |outputs: u64| {
            (1..=every * 200)
                .find(|h| snapshot_due(*h, outputs, every))
                .unwrap()
        };
        assert_eq!(spacing(every * SNAPSHOT_OUTPUTS_PER_BLOCK + 1), 2 * every);
        assert_eq!(spacing(4 * every * SNAPSHOT_OUTPUTS_PER_BLOCK), 4 * every);
        assert_eq!(
            spacing(4 * every * SNAPSHOT_OUTPUTS_PER_BLOCK + 1),
            8 * every
        );
        assert_eq!(
            spacing(u64::MAX),
            every << SNAPSHOT_SPACING_DOUBLINGS_MAX,
            "capped"
        );
        // A height due under a longer spacing is due under every shorter one.
        for outputs in [0, every * SNAPSHOT_OUTPUTS_PER_BLOCK * 3, u64::MAX] {
            for h in (0..every * 200).filter(|h| snapshot_due(*h, outputs, every)) {
                assert!(snapshot_due(h, 0, every));
            }
        }
        assert!(snapshot_due(7, u64::MAX, 1) == 7u64.is_multiple_of(64));
    }
}
