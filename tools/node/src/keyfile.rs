//! Key files: a TOML file holding an ed25519 seed and its public key, created with mode 0600 and never
//! overwritten.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use cas_engine::Keypair;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    secret: String,
    public: String,
}

/// Creates `path` (which must not exist) with a fresh key from the OS's randomness, synced to disk.
pub fn create(path: &Path) -> Result<Keypair> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).context("the OS gave no randomness")?;
    create_from_seed(path, seed)
}

/// Creates `path` (which must not exist) holding the key of `seed` (a known test key: `cas local --serve` hands
/// out its funded accounts' keys this way).
pub fn create_from_seed(path: &Path, seed: [u8; 32]) -> Result<Keypair> {
    let keypair = Keypair::from_seed(&seed);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create key file {}", path.display()))?;
    let text = format!(
        "secret = \"{}\"\npublic = \"{}\"\n",
        hex::encode(seed),
        keypair.public().to_hex()
    );
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(keypair)
}

/// Reads a key file and checks that its public key matches its secret. A key file that its group or others may
/// read, write or run is refused: the secret would not be the node's alone.
pub fn load(path: &Path) -> Result<Keypair> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("cannot read key file {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "key file {} has mode {:o}: others than its owner may use it; `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read key file {}", path.display()))?;
    // toml's full message quotes the offending line, which may hold the secret: only its bounded message here.
    let file: KeyFile = toml::from_str(&text).map_err(|error| {
        anyhow::anyhow!(
            "{} is not a key file: {}",
            path.display(),
            cas_engine::text::reason(&error.message())
        )
    })?;
    let mut seed = [0u8; 32];
    hex::decode_to_slice(&file.secret, &mut seed)
        .with_context(|| format!("{}: secret is not 32 hex bytes", path.display()))?;
    let keypair = Keypair::from_seed(&seed);
    if keypair.public().to_hex() != file.public {
        bail!(
            "{}: the public key does not belong to the secret",
            path.display()
        );
    }
    Ok(keypair)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A key file is created for its owner only and loads; once others may read it, it is refused with the fix.
    #[test]
    fn a_key_file_others_may_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let created = create(&path).unwrap();
        assert_eq!(load(&path).unwrap().public(), created.public());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = load(&path).err().unwrap().to_string();
        assert!(
            error.contains("mode 644") && error.contains("chmod 600"),
            "{error}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load(&path).is_ok());
    }
}
