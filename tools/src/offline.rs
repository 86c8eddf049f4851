//! The offline commands: `cas keygen`, `cas genesis`, `cas tx` (build and sign a transfer without a node; `cas
//! token` and `cas order` build the token kinds in [`crate::token_cmd`] with the same flags) and `cas show` (decode
//! a transaction or block file through the untrusted decoder).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use cas_engine::codec::{decode_block, decode_tx, encode_block, encode_tx};
use cas_engine::genesis::{genesis_block, genesis_committee, GenesisSpec};
use cas_engine::stake::encode_address;
use cas_engine::text::quote;
use cas_engine::token::mint_right_of;
use cas_engine::{AssetId, Hash32, OutPoint, PublicKey, TxBody, TxKind, TxOutput};

use cas_node::keyfile;

pub fn keygen(out: &Path) -> Result<()> {
    let keypair = keyfile::create(out)?;
    println!("{}", keypair.public());
    Ok(())
}

pub fn genesis(spec_path: &Path, out: &Path) -> Result<()> {
    let text = std::fs::read_to_string(spec_path)
        .with_context(|| format!("cannot read spec {}", spec_path.display()))?;
    let spec = GenesisSpec::from_toml(&text).with_context(|| spec_path.display().to_string())?;
    let block = genesis_block(&spec).with_context(|| spec_path.display().to_string())?;
    write_synced(out, &encode_block(&block))?;
    let (committee, _) = genesis_committee(&block).expect("a built genesis has a committee");
    let outputs: usize = block.txs.iter().map(|tx| tx.body.outputs.len()).sum();
    println!("genesis {}", block.header.hash());
    println!(
        "chain_id {}  committee {}  outputs {}",
        spec.chain_id,
        committee.len(),
        outputs
    );
    println!("utxo_commitment {}", block.header.utxo_commitment);
    println!("written to {}", out.display());
    Ok(())
}

/// The flags every command that builds and signs a transaction offline shares.
#[derive(clap::Args, Debug)]
pub struct TxFlags {
    /// A key file per signer (repeat): the owners of the inputs. The first signs as the sender: the issuer, the
    /// maker of an order, the owner of an allowance, the spender of a transfer-from.
    #[arg(long = "key", required = true)]
    pub keys: Vec<PathBuf>,
    #[arg(long)]
    pub chain_id: u32,
    /// Business network id.
    #[arg(long, default_value_t = 0)]
    pub vn: u32,
    /// An input as TXID:INDEX (repeat).
    #[arg(long = "input")]
    pub inputs: Vec<String>,
    /// An output as OWNER:AMOUNT[:ASSET][@UNLOCK_HEIGHT] (repeat). ASSET is hex, `stake-CANDIDATE` for stake
    /// bonded to a candidate's node key, `rights-TOKEN` for a token's mint rights, and in a token issue `new`
    /// and `new-rights` for the token it issues and its mint rights.
    #[arg(long = "output")]
    pub outputs: Vec<String>,
    #[arg(long)]
    pub fee: u64,
    #[arg(long)]
    pub memo: Option<String>,
    #[arg(long)]
    pub client_id: Option<u64>,
    /// Where to write the signed transaction (refused if it exists).
    #[arg(long)]
    pub out: PathBuf,
}

/// Builds a transaction of `kind` from `flags` (with `first` before the flags' inputs: the ledger object a fill,
/// transfer-from or cancel spends), signs it, checks it against the codec and writes it; prints its id.
/// `issued` is the token a token issue creates (what `new` names in outputs).
pub fn build(
    flags: &TxFlags,
    kind: TxKind,
    first: Option<OutPoint>,
    issued: Option<AssetId>,
) -> Result<cas_engine::TxId> {
    let signers = flags
        .keys
        .iter()
        .map(|path| keyfile::load(path))
        .collect::<Result<Vec<_>>>()?;
    if signers.is_empty() {
        bail!("give at least one --key: one per distinct owner of the inputs");
    }
    let inputs = first
        .into_iter()
        .map(Ok)
        .chain(flags.inputs.iter().map(|text| parse_outpoint(text)))
        .collect::<Result<Vec<_>>>()?;
    let outputs = flags
        .outputs
        .iter()
        .map(|text| parse_output(text, issued))
        .collect::<Result<Vec<_>>>()?;
    let memo = flags
        .memo
        .as_ref()
        .map(|m| m.as_bytes().to_vec())
        .unwrap_or_default();
    let body = TxBody {
        chain_id: flags.chain_id,
        vn: flags.vn,
        kind,
        inputs,
        outputs,
        fee: flags.fee,
        memo,
        client_id: flags.client_id,
    };
    let tx = body.sign(&signers.iter().collect::<Vec<_>>());
    let bytes = encode_tx(&tx);
    // What we write must pass the same decoder a node runs (sizes, counts, memo length).
    decode_tx(&bytes).context("the transaction breaks a codec limit")?;
    write_synced(&flags.out, &bytes)?;
    let id = tx.tx_id();
    println!("{id}");
    Ok(id)
}

/// The public key of the first --key: the sender.
pub fn first_key(flags: &TxFlags) -> Result<PublicKey> {
    let path = flags
        .keys
        .first()
        .context("give at least one --key: one per distinct owner of the inputs")?;
    Ok(keyfile::load(path)?.public())
}

/// `cas tx`: a transfer, or a stake transaction with one of the stake flags.
pub fn tx(
    flags: &TxFlags,
    bond: Option<&str>,
    unbond: Option<&str>,
    candidacy: Option<&str>,
) -> Result<()> {
    build(flags, kind(bond, unbond, candidacy)?, None, None).map(|_| ())
}

/// The kind `cas tx`'s flags ask for (clap lets at most one through): a transfer when none.
fn kind(bond: Option<&str>, unbond: Option<&str>, candidacy: Option<&str>) -> Result<TxKind> {
    let key = |flag: &str, text: &str| {
        PublicKey::from_hex(text)
            .with_context(|| format!("--{flag} {}: not a 32-byte hex key", quote(text)))
    };
    Ok(match (bond, unbond, candidacy) {
        (Some(candidate), _, _) => TxKind::Bond {
            candidate: key("bond", candidate)?,
        },
        (_, Some(candidate), _) => TxKind::Unbond {
            candidate: key("unbond", candidate)?,
        },
        (_, _, Some("none")) => TxKind::Candidacy {
            address: Vec::new(),
        },
        (_, _, Some(address)) => TxKind::Candidacy {
            address: encode_address(Some(address.parse().with_context(|| {
                format!("--candidacy {}: not IP:PORT or none", quote(address))
            })?)),
        },
        (None, None, None) => TxKind::Transfer,
    })
}

pub fn show(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if let Ok(tx) = decode_tx(&bytes) {
        println!("transaction {}", tx.tx_id());
        println!("{tx:#?}");
        return Ok(());
    }
    match decode_block(&bytes) {
        Ok(block) => {
            println!(
                "block {} at height {}",
                block.header.hash(),
                block.header.height
            );
            println!("{:#?}", block.header);
            println!("{} transactions", block.txs.len());
            Ok(())
        }
        Err(error) => bail!(
            "{} is neither a transaction nor a block: {error}",
            path.display()
        ),
    }
}

/// `TXID:INDEX`.
pub(crate) fn parse_outpoint(text: &str) -> Result<OutPoint> {
    let (tx, index) = text
        .split_once(':')
        .with_context(|| format!("input {} is not TXID:INDEX", quote(text)))?;
    let tx = Hash32::from_hex(tx)
        .with_context(|| format!("input {}: tx id is not 32 hex bytes", quote(text)))?;
    let index = index
        .parse()
        .with_context(|| format!("input {}: index is not a number", quote(text)))?;
    Ok(OutPoint { tx, index })
}

/// `OWNER:AMOUNT[:ASSET][@UNLOCK_HEIGHT]`; `issued` is what `new` names (a token issue's token).
fn parse_output(text: &str, issued: Option<AssetId>) -> Result<TxOutput> {
    let (main, unlock_height) = match text.split_once('@') {
        Some((main, height)) => (
            main,
            Some(height.parse().with_context(|| {
                format!("output {}: unlock height is not a number", quote(text))
            })?),
        ),
        None => (text, None),
    };
    let mut parts = main.split(':');
    let (Some(owner), Some(amount)) = (parts.next(), parts.next()) else {
        bail!(
            "output {} is not OWNER:AMOUNT[:ASSET][@UNLOCK_HEIGHT]",
            quote(text)
        );
    };
    let owner = PublicKey::from_hex(owner)
        .with_context(|| format!("output {}: owner is not 32 hex bytes", quote(text)))?;
    let amount = amount
        .parse()
        .with_context(|| format!("output {}: amount is not a number", quote(text)))?;
    let hex_asset = |hex: &str| {
        Hash32::from_hex(hex)
            .map(AssetId)
            .with_context(|| format!("output {}: bad asset", quote(text)))
    };
    let new =
        || issued.with_context(|| format!("output {}: `new` only in a token issue", quote(text)));
    let asset = match parts.next() {
        None => AssetId::CAS,
        Some("new") => new()?,
        Some("new-rights") => mint_right_of(&new()?),
        Some(asset) if asset.starts_with("stake-") => AssetId::stake_of(
            &PublicKey::from_hex(&asset["stake-".len()..])
                .with_context(|| format!("output {}: bad stake candidate", quote(text)))?,
        ),
        Some(asset) if asset.starts_with("rights-") => {
            mint_right_of(&hex_asset(&asset["rights-".len()..])?)
        }
        Some(asset) => hex_asset(asset)?,
    };
    if parts.next().is_some() {
        bail!("output {} has too many ':' parts", quote(text));
    }
    Ok(TxOutput {
        amount,
        asset,
        owner,
        unlock_height,
    })
}

/// Writes a file and syncs it, refusing to overwrite one that exists.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16: an error about a bad argument quotes it within a bound, never whole (one echoed 1 MB).
    #[test]
    fn bad_arguments_are_quoted_within_a_bound() {
        let huge = "k".repeat(1 << 20);
        for error in [
            parse_output(&format!("{huge}:5"), None).unwrap_err(),
            parse_output(&huge, None).unwrap_err(),
            parse_outpoint(&format!("{huge}:1")).unwrap_err(),
        ] {
            let text = format!("{error:#}");
            assert!(text.contains("more bytes)"), "{text:.200}");
            assert!(text.len() < 1024, "{} bytes", text.len());
        }
    }
}
