//! `cas vn`: business networks by hand. `register` builds and signs a VN registration offline with `cas tx`'s flags
//! ([`crate::offline::TxFlags`]); `endorse` adds an RS's endorsement to a signed transaction file; `stream` reads a
//! VN's routed stream as one of its endorsers (what `cas rs` follows). `cas tx --vn N` builds a VN's transaction.

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use cas_engine::codec::{decode_tx, encode_tx, to_owned_tx};
use cas_engine::text::quote;
use cas_engine::tx::TxSignature;
use cas_engine::vn::{stream_request_digest, Endorser, PolicyTerms, VnFee};
use cas_engine::{AssetId, Hash32, PublicKey, TxKind};

use crate::offline::{build, TxFlags};

#[derive(clap::Subcommand, Debug)]
pub enum VnCommand {
    /// Register a VN with its Policy (a transaction of the public network, vn 0); prints the tx id.
    Register {
        #[command(flatten)]
        tx: TxFlags,
        /// The new network's id (not 0).
        #[arg(long = "id")]
        id: u32,
        /// An endorser as KEY or KEY:WEIGHT (weight 1 when absent; repeat, up to 16; none: a VN without a Policy,
        /// only routed and isolated).
        #[arg(long = "endorser")]
        endorsers: Vec<String>,
        /// The endorsing weight a transaction of the VN needs (default: all, the total weight).
        #[arg(long)]
        threshold: Option<u32>,
        /// A fee rule: each transaction of the VN pays --fee-amount of this token (hex asset) to --fee-collector.
        #[arg(long, requires_all = ["fee_amount", "fee_collector"])]
        fee_token: Option<String>,
        #[arg(long)]
        fee_amount: Option<u64>,
        #[arg(long)]
        fee_collector: Option<String>,
    },
    /// Add the endorsement of --key (an RS key) to a signed transaction file, written to --out.
    Endorse {
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        tx: PathBuf,
        /// Refused if it exists.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a VN's routed stream (one JSON line per block, that VN's transactions only) as its endorser --key.
    Stream {
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        vn: u32,
        #[arg(long, env = "CAS_API")]
        api: String,
        #[arg(long, default_value_t = 1)]
        from: u64,
    },
}

pub fn vn(command: &VnCommand) -> Result<()> {
    match command {
        VnCommand::Register {
            tx,
            id,
            endorsers,
            threshold,
            fee_token,
            fee_amount,
            fee_collector,
        } => {
            let fee = match (fee_token, fee_amount, fee_collector) {
                (Some(token), Some(amount), Some(collector)) => Some(VnFee {
                    token: AssetId(Hash32::from_hex(token).with_context(|| {
                        format!("--fee-token {}: not a 32-byte hex asset", quote(token))
                    })?),
                    amount: *amount,
                    collector: PublicKey::from_hex(collector).with_context(|| {
                        format!(
                            "--fee-collector {}: not a 32-byte hex key",
                            quote(collector)
                        )
                    })?,
                }),
                _ => None,
            };
            let endorsers = endorsers
                .iter()
                .map(|text| endorser(text))
                .collect::<Result<Vec<_>>>()?;
            let total: u32 = endorsers.iter().map(|e| e.weight).sum();
            let policy = PolicyTerms {
                vn: *id,
                endorsers,
                threshold: threshold.unwrap_or(total),
                fee,
            };
            let kind = TxKind::VnRegister {
                policy: Box::new(policy),
            };
            build(tx, kind, None, None).map(drop)
        }
        VnCommand::Endorse { key, tx, out } => {
            let key = cas_node::keyfile::load(key)?;
            let bytes =
                std::fs::read(tx).with_context(|| format!("cannot read {}", tx.display()))?;
            let mut owned = to_owned_tx(decode_tx(&bytes)?);
            ensure!(
                owned.body.vn != 0,
                "a transaction of the public network needs no endorsement"
            );
            let id = owned.tx_id();
            owned.signatures.push(TxSignature {
                key: key.public(),
                signature: key.sign(&id.0),
            });
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            std::io::Write::write_all(&mut file, &encode_tx(&owned))?;
            println!("{}", id.to_hex());
            Ok(())
        }
        VnCommand::Stream { key, vn, api, from } => {
            let key = cas_node::keyfile::load(key)?;
            let signature = key.sign(&stream_request_digest(*vn, *from));
            let response = ureq::get(&format!("{api}/v1/vns/{vn}/blocks?from={from}"))
                .set("x-cas-key", &key.public().to_hex())
                .set("x-cas-signature", &hex::encode(signature.0))
                .call()
                .map_err(|error| match error {
                    ureq::Error::Status(status, response) => {
                        anyhow::anyhow!("{status}: {}", response.into_string().unwrap_or_default())
                    }
                    other => other.into(),
                })?;
            std::io::copy(&mut response.into_reader(), &mut std::io::stdout())?;
            Ok(())
        }
    }
}

/// `KEY` or `KEY:WEIGHT`.
fn endorser(text: &str) -> Result<Endorser> {
    let (key, weight) = text.split_once(':').unwrap_or((text, "1"));
    Ok(Endorser {
        key: PublicKey::from_hex(key)
            .with_context(|| format!("--endorser {}: not a 32-byte hex key", quote(text)))?,
        weight: weight
            .parse()
            .with_context(|| format!("--endorser {}: the weight is not a number", quote(text)))?,
    })
}
