//! The node's small durable files: the consensus safety state (written before any vote leaves) and the
//! execution marker (which consensus block each executed height was), and the witness order at the base of a store
//! that starts at an installed snapshot. Each write goes to a temporary file, is
//! fsynced, renamed over the old one, and the folder is fsynced: a crash leaves the old or the new, never half.

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

pub struct SafetyFile {
    path: PathBuf,
}

impl SafetyFile {
    pub fn new(data_dir: &Path) -> SafetyFile {
        SafetyFile {
            path: data_dir.join("safety.bin"),
        }
    }

    pub fn load(&self) -> Result<SafetyState> {
        if !self.path.exists() {
            return Ok(SafetyState::default());
        }
        let bytes =
            fs::read(&self.path).with_context(|| format!("cannot read {}", self.path.display()))?;
        if bytes.len() < 16 {
            bail!("{} is truncated", self.path.display());
        }
        let last_voted_round = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        let last_timeout_round = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        let archived = rkyv::access::<
            cas_consensus::messages::ArchivedQuorumCert,
            rkyv::rancor::Error,
        >(&bytes[16..])
        .with_context(|| format!("{}: bad QC", self.path.display()))?;
        let high_qc = rkyv::deserialize::<QuorumCert, rkyv::rancor::Error>(archived)?;
        Ok(SafetyState {
            last_voted_round,
            high_qc,
            last_timeout_round,
        })
    }

    pub fn store(&self, safety: &SafetyState) -> Result<()> {
        let mut bytes = Vec::with_capacity(256);
        bytes.extend_from_slice(&safety.last_voted_round.to_le_bytes());
        bytes.extend_from_slice(&safety.last_timeout_round.to_le_bytes());
        bytes.extend_from_slice(&rkyv::to_bytes::<rkyv::rancor::Error>(&safety.high_qc)?);
        write_atomic(&self.path, &bytes)
    }
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
