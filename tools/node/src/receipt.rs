//! The settlement receipt as JSON: what `GET /v1/tx/{id}/receipt` answers and `cas receipt verify` reads. Every
//! field is checked by [`cas_consensus::receipt::verify_receipt`] or against what it proves (`tx_id`, `height`);
//! unknown fields are refused, so nothing unchecked rides along in a receipt file.

use anyhow::{bail, ensure, Context, Result};
use cas_consensus::ledger_cert::{CommitteeHandover, LedgerCert, LedgerStatement};
use cas_consensus::messages::SignerSignature;
use cas_consensus::receipt::Receipt;
use cas_engine::merkle::ProofStep;
use cas_engine::{BlockHeader, Hash32, PublicKey, Signature};
use serde::{Deserialize, Serialize};

/// The receipt format's version.
pub const RECEIPT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ReceiptJson {
    pub version: u32,
    /// The transaction's id: must be the id of `tx`.
    pub tx_id: String,
    /// The signed transaction's canonical bytes, hex.
    pub tx: String,
    /// Must be the certified height.
    pub height: u64,
    pub index: u32,
    /// 0 when applied, else the rejection code.
    pub code: u16,
    pub tx_path: Vec<StepJson>,
    pub results_path: Vec<StepJson>,
    pub header: HeaderJson,
    pub certificate: CertJson,
    /// Committee hand-overs since genesis, oldest first (empty while the genesis committee signs).
    pub handovers: Vec<HandoverJson>,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct StepJson {
    pub sibling: String,
    /// Where the sibling sits: "left" or "right".
    pub side: String,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct HeaderJson {
    pub chain_id: u32,
    pub height: u64,
    pub round: u64,
    pub parent: String,
    pub tx_root: String,
    pub sig_root: String,
    pub proposer: String,
    pub timestamp_ms: u64,
    pub utxo_commitment: String,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct StatementJson {
    pub chain_id: u32,
    pub epoch: u64,
    pub height: u64,
    pub block: String,
    pub consensus: String,
    pub results_root: String,
    pub utxo_commitment: String,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct SignatureJson {
    pub signer: u16,
    pub signature: String,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct CertJson {
    pub statement: StatementJson,
    pub signatures: Vec<SignatureJson>,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct MemberJson {
    pub key: String,
    pub stake: u64,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct HandoverJson {
    pub chain_id: u32,
    pub epoch: u64,
    pub first_height: u64,
    pub members: Vec<MemberJson>,
    pub signatures: Vec<SignatureJson>,
}

impl HandoverJson {
    pub fn from_handover(h: &CommitteeHandover) -> HandoverJson {
        HandoverJson {
            chain_id: h.chain_id,
            epoch: h.epoch,
            first_height: h.first_height,
            members: h
                .members
                .iter()
                .map(|(key, stake)| MemberJson {
                    key: key.to_hex(),
                    stake: *stake,
                })
                .collect(),
            signatures: signatures_to_json(&h.signatures),
        }
    }

    pub fn to_handover(&self) -> Result<CommitteeHandover> {
        Ok(CommitteeHandover {
            chain_id: self.chain_id,
            epoch: self.epoch,
            first_height: self.first_height,
            members: self
                .members
                .iter()
                .map(|m| Ok((key(&m.key, "a member key")?, m.stake)))
                .collect::<Result<_>>()?,
            signatures: signatures_from_json(&self.signatures)?,
        })
    }
}

impl HeaderJson {
    pub fn from_header(header: &BlockHeader) -> HeaderJson {
        HeaderJson {
            chain_id: header.chain_id,
            height: header.height,
            round: header.round,
            parent: header.parent.to_hex(),
            tx_root: header.tx_root.to_hex(),
            sig_root: header.sig_root.to_hex(),
            proposer: header.proposer.to_hex(),
            timestamp_ms: header.timestamp_ms,
            utxo_commitment: header.utxo_commitment.to_hex(),
        }
    }

    pub fn to_header(&self) -> Result<BlockHeader> {
        Ok(BlockHeader {
            chain_id: self.chain_id,
            height: self.height,
            round: self.round,
            parent: hash(&self.parent, "header.parent")?,
            tx_root: hash(&self.tx_root, "header.tx_root")?,
            sig_root: hash(&self.sig_root, "header.sig_root")?,
            proposer: key(&self.proposer, "header.proposer")?,
            timestamp_ms: self.timestamp_ms,
            utxo_commitment: hash(&self.utxo_commitment, "header.utxo_commitment")?,
        })
    }
}

impl CertJson {
    pub fn from_cert(cert: &LedgerCert) -> CertJson {
        let statement = &cert.statement;
        CertJson {
            statement: StatementJson {
                chain_id: statement.chain_id,
                epoch: statement.epoch,
                height: statement.height,
                block: statement.block.to_hex(),
                consensus: statement.consensus.to_hex(),
                results_root: statement.results_root.to_hex(),
                utxo_commitment: statement.utxo_commitment.to_hex(),
            },
            signatures: signatures_to_json(&cert.signatures),
        }
    }

    pub fn to_cert(&self) -> Result<LedgerCert> {
        let s = &self.statement;
        ensure!(
            self.signatures.len() <= cas_consensus::committee::COMMITTEE_MEMBERS_MAX,
            "{} signatures, a committee has at most {}",
            self.signatures.len(),
            cas_consensus::committee::COMMITTEE_MEMBERS_MAX
        );
        Ok(LedgerCert {
            statement: LedgerStatement {
                chain_id: s.chain_id,
                epoch: s.epoch,
                height: s.height,
                block: hash(&s.block, "statement.block")?,
                consensus: hash(&s.consensus, "statement.consensus")?,
                results_root: hash(&s.results_root, "statement.results_root")?,
                utxo_commitment: hash(&s.utxo_commitment, "statement.utxo_commitment")?,
            },
            signatures: signatures_from_json(&self.signatures)?,
        })
    }
}

/// Hex as this format writes it: lowercase only, so a receipt has one spelling and no byte of it can change
/// without failing the check.
fn lower_hex(text: &str, what: &str) -> Result<()> {
    ensure!(
        text.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{what} is not lowercase hex"
    );
    Ok(())
}

fn hash(text: &str, what: &str) -> Result<Hash32> {
    lower_hex(text, what)?;
    Hash32::from_hex(text).with_context(|| format!("{what} is not 32 bytes of hex"))
}

fn key(text: &str, what: &str) -> Result<PublicKey> {
    lower_hex(text, what)?;
    PublicKey::from_hex(text).with_context(|| format!("{what} is not a 32-byte hex key"))
}

fn signature(text: &str) -> Result<Signature> {
    lower_hex(text, "a signature")?;
    let bytes = hex::decode(text).context("a signature is not hex")?;
    let bytes: [u8; 64] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| anyhow::anyhow!("a signature of {} bytes, not 64", b.len()))?;
    Ok(Signature(bytes))
}

fn signatures_to_json(signatures: &[SignerSignature]) -> Vec<SignatureJson> {
    signatures
        .iter()
        .map(|s| SignatureJson {
            signer: s.signer,
            signature: hex::encode(s.signature.0),
        })
        .collect()
}

fn signatures_from_json(signatures: &[SignatureJson]) -> Result<Vec<SignerSignature>> {
    signatures
        .iter()
        .map(|s| {
            Ok(SignerSignature {
                signer: s.signer,
                signature: signature(&s.signature)?,
            })
        })
        .collect()
}

fn path_to_json(path: &[ProofStep]) -> Vec<StepJson> {
    path.iter()
        .map(|step| StepJson {
            sibling: step.sibling.to_hex(),
            side: if step.sibling_is_left {
                "left"
            } else {
                "right"
            }
            .into(),
        })
        .collect()
}

fn path_from_json(path: &[StepJson], what: &str) -> Result<Vec<ProofStep>> {
    path.iter()
        .map(|step| {
            let sibling_is_left = match step.side.as_str() {
                "left" => true,
                "right" => false,
                other => bail!("{what}: side {other:?} is neither \"left\" nor \"right\""),
            };
            Ok(ProofStep {
                sibling: hash(&step.sibling, what)?,
                sibling_is_left,
            })
        })
        .collect()
}

impl ReceiptJson {
    pub fn from_receipt(receipt: &Receipt) -> ReceiptJson {
        let tx_id = cas_engine::codec::decode_tx(&receipt.tx)
            .map(|tx| tx.tx_id().to_hex())
            .unwrap_or_default();
        ReceiptJson {
            version: RECEIPT_VERSION,
            tx_id,
            tx: hex::encode(&receipt.tx),
            height: receipt.cert.statement.height,
            index: receipt.index,
            code: receipt.code,
            tx_path: path_to_json(&receipt.tx_path),
            results_path: path_to_json(&receipt.results_path),
            header: HeaderJson::from_header(&receipt.header),
            certificate: CertJson::from_cert(&receipt.cert),
            handovers: receipt
                .handovers
                .iter()
                .map(HandoverJson::from_handover)
                .collect(),
        }
    }

    /// The receipt these fields describe; `tx_id` and `height` must be what the receipt proves.
    pub fn to_receipt(&self) -> Result<Receipt> {
        ensure!(
            self.version == RECEIPT_VERSION,
            "receipt version {}, this build reads {RECEIPT_VERSION}",
            self.version
        );
        lower_hex(&self.tx, "tx")?;
        let tx = hex::decode(&self.tx).context("tx is not hex")?;
        let decoded = cas_engine::codec::decode_tx(&tx).context("tx does not decode")?;
        ensure!(
            decoded.tx_id() == hash(&self.tx_id, "tx_id")?,
            "tx_id is not the id of tx"
        );
        ensure!(
            self.height == self.certificate.statement.height,
            "height {} is not the certified height {}",
            self.height,
            self.certificate.statement.height
        );
        Ok(Receipt {
            tx,
            index: self.index,
            code: self.code,
            tx_path: path_from_json(&self.tx_path, "tx_path")?,
            results_path: path_from_json(&self.results_path, "results_path")?,
            header: self.header.to_header()?,
            cert: self.certificate.to_cert()?,
            handovers: self
                .handovers
                .iter()
                .map(HandoverJson::to_handover)
                .collect::<Result<_>>()?,
        })
    }
}
