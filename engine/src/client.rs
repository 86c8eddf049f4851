//! What a node answers a client, on the wire: the admission of each submitted transaction (accepted once certified, duplicate,
//! rejected with a code and reason, overloaded with a retry-after), then its final receipt (final in block H at
//! index i with the verdict). One finality level: a receipt is sent only once the block is committed and stored.

use rkyv::{Archive, Deserialize, Serialize};

use crate::codec::CheckError;
use crate::id::{BlockHash, TxId};

/// The longest reason text an answer carries.
pub const REASON_BYTES_MAX: usize = 512;
/// The largest encoded answer accepted.
pub const ANSWER_BYTES_MAX: usize = 4 * 1024;

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum ClientAnswer {
    /// The package holding the transaction is certified: more than two thirds of the stake hold it, so it is not
    /// lost if the receiving node crashes. `Final` follows once it is ordered and executed.
    Accepted {
        tx: TxId,
    },
    Duplicate {
        tx: TxId,
    },
    /// Refused at admission; `tx` is absent when the bytes did not even decode. `code` is a
    /// [`crate::RejectCode`] number.
    Rejected {
        tx: Option<TxId>,
        code: u16,
        reason: String,
    },
    Overloaded {
        tx: TxId,
        retry_after_ms: u64,
    },
    /// Final: the transaction is in block `height` at `index`; `rejection` is the rule it broke, if any (a rejected
    /// transaction in a block changed nothing).
    Final {
        tx: TxId,
        height: u64,
        index: u32,
        block: BlockHash,
        rejection: Option<RuleFailure>,
    },
}

/// A rule a transaction broke in block order: its [`crate::RejectCode`] number and the reason in words.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RuleFailure {
    pub code: u16,
    pub reason: String,
}

impl RuleFailure {
    pub fn of(error: &crate::TxError) -> RuleFailure {
        RuleFailure {
            code: error.code().number(),
            reason: ClientAnswer::reason(error),
        }
    }
}

impl ClientAnswer {
    pub fn encode(&self) -> Vec<u8> {
        rkyv::to_bytes::<rkyv::rancor::Error>(self)
            .expect("archiving into memory cannot fail")
            .to_vec()
    }

    /// Decodes an answer from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<ClientAnswer, String> {
        if bytes.len() > ANSWER_BYTES_MAX {
            return Err(format!(
                "answer of {} bytes exceeds {ANSWER_BYTES_MAX}",
                bytes.len()
            ));
        }
        let archived = rkyv::access::<ArchivedClientAnswer, CheckError>(bytes)
            .map_err(|e| crate::text::reason(&e))?;
        rkyv::deserialize::<ClientAnswer, CheckError>(archived).map_err(|e| crate::text::reason(&e))
    }

    /// Bounds a reason for the wire.
    pub fn reason(text: impl ToString) -> String {
        let mut text = text.to_string();
        if text.len() > REASON_BYTES_MAX {
            let mut end = REASON_BYTES_MAX;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Hash32;

    #[test]
    fn answers_round_trip_and_garbage_is_refused() {
        let answers = [
            ClientAnswer::Accepted {
                tx: Hash32([1; 32]),
            },
            ClientAnswer::Rejected {
                tx: None,
                code: 1,
                reason: ClientAnswer::reason("x".repeat(2_000)),
            },
            ClientAnswer::Final {
                tx: Hash32([2; 32]),
                height: 9,
                index: 3,
                block: Hash32([4; 32]),
                rejection: None,
            },
        ];
        for answer in answers {
            assert_eq!(ClientAnswer::decode(&answer.encode()).unwrap(), answer);
        }
        assert!(ClientAnswer::decode(&[0xff; 7]).is_err());
        assert!(ClientAnswer::decode(&vec![0; ANSWER_BYTES_MAX + 1]).is_err());
    }
}
