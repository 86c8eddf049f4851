//! Checking a payment against the certified headers a [`HeaderChain`] holds: a transaction's Merkle path to the tx
//! root of the header at its height, and its verdict's path to that block's certified results root. Nothing the
//! proof says about the header is taken: the header is the one held. It must never report outputs of a transaction
//! the rules rejected, nor of one at a height no certificate reached.

use cas_engine::merkle::{self, ProofStep};
use cas_engine::{BlockHash, Hash32, OutPoint, PublicKey, RejectCode, TxId, TxOutput};

use super::{HeaderChain, SpvError};
use crate::ledger_cert::{result_leaf, LedgerCert};
use crate::receipt::{check_tx_bytes, Receipt, TxBytesError};

/// Steps a Merkle path may have: a block holds far fewer than 2^40 transactions.
pub const PATH_STEPS_MAX: usize = 40;

/// A transaction's place in a block, as a node proves it (a settlement receipt less its header and hand-overs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentProof {
    /// The signed transaction's canonical bytes.
    pub tx: Vec<u8>,
    pub height: u64,
    pub index: u32,
    /// 0 when applied, else the [`RejectCode`] number.
    pub code: u16,
    pub tx_path: Vec<ProofStep>,
    pub results_path: Vec<ProofStep>,
    /// The committee's certificate on the block: used only when the chain holds the header through a later
    /// certificate (so not its results root), and then only if it verifies and names the header held.
    pub cert: Option<LedgerCert>,
}

impl From<&Receipt> for PaymentProof {
    fn from(receipt: &Receipt) -> PaymentProof {
        PaymentProof {
            tx: receipt.tx.clone(),
            height: receipt.header.height,
            index: receipt.index,
            code: receipt.code,
            tx_path: receipt.tx_path.clone(),
            results_path: receipt.results_path.clone(),
            cert: Some(receipt.cert.clone()),
        }
    }
}

/// What a good proof shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    pub tx: TxId,
    pub height: u64,
    pub index: u32,
    pub block: BlockHash,
    /// The rule the transaction broke (it changed nothing), or None when it was applied.
    pub rejection: Option<RejectCode>,
    /// The outputs it created: all of the transaction's outputs when applied, none when rejected.
    pub created: Vec<(OutPoint, TxOutput)>,
}

impl Payment {
    /// The outputs created that pay `owner`.
    pub fn paying<'a>(
        &'a self,
        owner: &'a PublicKey,
    ) -> impl Iterator<Item = &'a (OutPoint, TxOutput)> + 'a {
        self.created.iter().filter(move |(_, o)| o.owner == *owner)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    #[error(transparent)]
    Tx(#[from] TxBytesError),
    #[error("the transaction is for chain {found}, this chain is {expected}")]
    ChainId { found: u32, expected: u32 },
    #[error("height {height} is not certified here (the certified tip is {tip}): sync first")]
    UnknownHeight { height: u64, tip: u64 },
    #[error("height 0 is the genesis block: its outputs are checked against the genesis file")]
    Genesis,
    #[error("a Merkle path of {steps} steps (at most {PATH_STEPS_MAX})")]
    PathTooLong { steps: usize },
    #[error("the transaction is not under the tx root of the certified header at height {height} by the path given")]
    TxPath { height: u64 },
    #[error("no certified results root for height {height}: the header is held through a later certificate and the proof carries none for it")]
    NoResultsRoot { height: u64 },
    #[error("the proof's certificate is for block {cert_block} at height {cert_height}, not the certified header {held} at height {height}")]
    HeaderMismatch {
        height: u64,
        held: BlockHash,
        cert_height: u64,
        cert_block: BlockHash,
    },
    #[error("the proof's certificate: {0}")]
    Certificate(#[source] SpvError),
    #[error("the transaction's place and verdict are not under the certified results root by the path given")]
    ResultsPath,
    #[error("verdict code {0} is not a known code")]
    Code(u16),
}

impl HeaderChain {
    /// Checks `proof` against the certified header at its height; returns what it proves.
    pub fn check_payment(&self, proof: &PaymentProof) -> Result<Payment, PaymentError> {
        let (tx, tx_id) = check_tx_bytes(&proof.tx)?;
        if tx.body.chain_id != self.chain_id {
            return Err(PaymentError::ChainId {
                found: tx.body.chain_id,
                expected: self.chain_id,
            });
        }
        if proof.height == 0 {
            return Err(PaymentError::Genesis);
        }
        let header = self
            .header(proof.height)
            .ok_or(PaymentError::UnknownHeight {
                height: proof.height,
                tip: self.tip(),
            })?;
        for path in [&proof.tx_path, &proof.results_path] {
            if path.len() > PATH_STEPS_MAX {
                return Err(PaymentError::PathTooLong { steps: path.len() });
            }
        }
        if !merkle::verify(&header.tx_root, &tx_id, &proof.tx_path) {
            return Err(PaymentError::TxPath {
                height: proof.height,
            });
        }
        let results_root = self.results_root(proof, header.hash, header.own_cert)?;
        let leaf = result_leaf(proof.index, &tx_id, proof.code);
        if !merkle::verify(&results_root, &leaf, &proof.results_path) {
            return Err(PaymentError::ResultsPath);
        }
        let rejection = match proof.code {
            0 => None,
            code => Some(RejectCode::from_u16(code).ok_or(PaymentError::Code(code))?),
        };
        let created = match rejection {
            Some(_) => Vec::new(),
            None => tx
                .body
                .outputs
                .iter()
                .enumerate()
                .map(|(index, output)| {
                    let outpoint = OutPoint {
                        tx: tx_id,
                        index: index as u32,
                    };
                    (outpoint, *output)
                })
                .collect(),
        };
        Ok(Payment {
            tx: tx_id,
            height: proof.height,
            index: proof.index,
            block: header.hash,
            rejection,
            created,
        })
    }

    /// The certified results root of the block at the proof's height: the one held, or the proof's certificate's
    /// once it verifies here and names the header held.
    fn results_root(
        &self,
        proof: &PaymentProof,
        held: BlockHash,
        own: Option<super::OwnCert>,
    ) -> Result<Hash32, PaymentError> {
        if let Some(own) = own {
            return Ok(own.results_root);
        }
        let height = proof.height;
        let cert = proof
            .cert
            .as_ref()
            .ok_or(PaymentError::NoResultsRoot { height })?;
        let statement = &cert.statement;
        if statement.height != height
            || statement.block != held
            || statement.chain_id != self.chain_id
        {
            return Err(PaymentError::HeaderMismatch {
                height,
                held,
                cert_height: statement.height,
                cert_block: statement.block,
            });
        }
        self.verify_cert(cert).map_err(PaymentError::Certificate)?;
        Ok(statement.results_root)
    }
}
