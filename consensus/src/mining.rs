//! The standalone miner's protocol with the node it follows (`cas mine`), sans-IO: a miner asks for a mining
//! template (the witness to extend, the next DPOS range's hashes, the difficulty and a timestamp, sealed for the
//! miner's key) and submits the witnesses it finds; the node answers with the template or its verdict on a
//! find. This module owns the two message types and their one validating decoder each; transport, threads and
//! clocks are the node's and the miner's.

use cas_engine::PublicKey;
use rkyv::{Archive, Deserialize, Serialize};

use crate::witness::{check_witness_bounds, WitnessDecodeError, WitnessHash, WitnessHeader};

pub use crate::limits::{MINING_BYTES_MAX, MINING_REASON_BYTES_MAX};

/// What a miner sends.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum MiningRequest {
    /// The header to mine next, for rewards to `miner`.
    Template { miner: PublicKey },
    /// A witness found on a template; the node validates it and, if good, gossips it like its own miners' finds.
    Submit(WitnessHeader),
}

/// The node's verdict on a submitted witness.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Valid and new: the node keeps it and passes it on.
    Accepted,
    /// Valid so far, but its DPOS range is not final at this node yet: it waits there and is judged then.
    Pending,
    /// Refused, with the reason.
    Refused { reason: String },
}

/// What the node answers.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum MiningAnswer {
    /// The header to mine (nonce 0), or none while the next range is not final yet.
    Template(Option<WitnessHeader>),
    /// The verdict on the submitted witness `hash`.
    Submitted { hash: WitnessHash, verdict: Verdict },
}

/// Why bytes are not a mining message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MiningDecodeError {
    #[error("{len} bytes exceed the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("malformed mining message: {0}")]
    Malformed(String),
    #[error("witness: {0}")]
    Witness(#[from] WitnessDecodeError),
    #[error("a refusal reason of {len} bytes exceeds {max}")]
    ReasonTooLong { len: usize, max: usize },
}

fn check_size(bytes: &[u8]) -> Result<(), MiningDecodeError> {
    if bytes.len() > MINING_BYTES_MAX {
        return Err(MiningDecodeError::TooLarge {
            len: bytes.len(),
            max: MINING_BYTES_MAX,
        });
    }
    Ok(())
}

impl MiningRequest {
    pub fn encode(&self) -> Vec<u8> {
        rkyv::to_bytes::<rkyv::rancor::Error>(self)
            .expect("archiving into memory cannot fail")
            .to_vec()
    }

    /// Validates untrusted bytes as a request (size, bytecheck, the witness's bounds).
    pub fn decode(bytes: &[u8]) -> Result<MiningRequest, MiningDecodeError> {
        check_size(bytes)?;
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        let archived =
            rkyv::access::<ArchivedMiningRequest, cas_engine::codec::CheckError>(&aligned)
                .map_err(|e| MiningDecodeError::Malformed(cas_engine::text::reason(&e)))?;
        if let ArchivedMiningRequest::Submit(header) = archived {
            check_witness_bounds(header)?;
        }
        rkyv::deserialize::<MiningRequest, cas_engine::codec::CheckError>(archived)
            .map_err(|e| MiningDecodeError::Malformed(cas_engine::text::reason(&e)))
    }
}

impl MiningAnswer {
    /// A refusal with its reason cut to [`MINING_REASON_BYTES_MAX`] (at a character boundary).
    pub fn refused(hash: WitnessHash, reason: impl ToString) -> MiningAnswer {
        let mut reason = reason.to_string();
        if reason.len() > MINING_REASON_BYTES_MAX {
            let mut end = MINING_REASON_BYTES_MAX;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        MiningAnswer::Submitted {
            hash,
            verdict: Verdict::Refused { reason },
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        rkyv::to_bytes::<rkyv::rancor::Error>(self)
            .expect("archiving into memory cannot fail")
            .to_vec()
    }

    /// Validates untrusted bytes as an answer (size, bytecheck, the template's bounds, the reason's length).
    pub fn decode(bytes: &[u8]) -> Result<MiningAnswer, MiningDecodeError> {
        check_size(bytes)?;
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        let archived =
            rkyv::access::<ArchivedMiningAnswer, cas_engine::codec::CheckError>(&aligned)
                .map_err(|e| MiningDecodeError::Malformed(cas_engine::text::reason(&e)))?;
        match archived {
            ArchivedMiningAnswer::Template(template) => {
                if let Some(header) = template.as_ref() {
                    check_witness_bounds(header)?;
                }
            }
            ArchivedMiningAnswer::Submitted { verdict, .. } => {
                if let ArchivedVerdict::Refused { reason } = verdict {
                    if reason.len() > MINING_REASON_BYTES_MAX {
                        return Err(MiningDecodeError::ReasonTooLong {
                            len: reason.len(),
                            max: MINING_REASON_BYTES_MAX,
                        });
                    }
                }
            }
        }
        rkyv::deserialize::<MiningAnswer, cas_engine::codec::CheckError>(archived)
            .map_err(|e| MiningDecodeError::Malformed(cas_engine::text::reason(&e)))
    }
}
