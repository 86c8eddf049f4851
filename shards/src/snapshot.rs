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
use crate::limits::{SNAPSHOTS_KEPT, SNAPSHOT_ENTRIES_MAX};
use crate::store::sync_dir;

const MAGIC: &[u8; 8] = b"CASSNAP1";
const CHECKSUM_DOMAIN: &str = "CAS 2026-11 utxo snapshot v1";
/// One encoded entry (the layout in the module header); snapshot files and transfer chunks share it.
pub const ENTRY_BYTES: usize = 117;
const HEAD_BYTES: usize = 24;

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

/// Writes the snapshot of `entries` at `height` durably, then deletes all but the newest [`SNAPSHOTS_KEPT`].
pub fn write(
    dir: &Path,
    height: u64,
    entries: &[(OutPoint, TxOutput)],
    commitment: Hash32,
) -> Result<PathBuf, Error> {
    fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let mut bytes = Vec::with_capacity(HEAD_BYTES + entries.len() * ENTRY_BYTES + 64);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&height.to_le_bytes());
    bytes.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for (outpoint, coin) in entries {
        encode_entry(&mut bytes, outpoint, coin);
    }
    bytes.extend_from_slice(&commitment.0);
    let checksum = blake3::Hasher::new_derive_key(CHECKSUM_DOMAIN)
        .update(&bytes)
        .finalize();
    bytes.extend_from_slice(checksum.as_bytes());

    let path = snapshot_path(dir, height);
    let temp = path.with_extension("tmp");
    let mut file = File::create(&temp).map_err(|e| Error::io("create", &temp, e))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("write", &temp, e))?;
    drop(file);
    fs::rename(&temp, &path).map_err(|e| Error::io("rename", &temp, e))?;
    sync_dir(dir)?;
    tracing::info!(height, entries = entries.len(), path = %path.display(), "snapshot written");
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
