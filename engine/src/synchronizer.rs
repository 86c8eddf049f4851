//! The Synchronizer's admission and packing logic: untrusted transaction bytes in, packages out. It decodes each
//! transaction with the untrusted decoder, checks its chain, verifies signatures in batches (the one check a
//! transaction gets before a package is certified), drops duplicates, and queues the rest in a bounded queue that
//! it cuts into packages by size or by age. Pure: the caller passes the time in; no threads, no IO.
//!
//! Every submission gets an answer: accepted, duplicate (with the first transaction's id), rejected with a typed
//! reason, or overloaded with a retry-after when the queue is full. Nothing is dropped silently.

use std::collections::VecDeque;

use crate::codec::{decode_tx, to_owned_tx, DecodeError};
use crate::crypto::{BatchSizer, PublicKey};
use crate::fasthash::{FastMap, FastSet};
use crate::id::TxId;
use crate::rules::{check_evidence_alone, verify_signatures_sized, TxError};
use crate::tx::{ArchivedTransaction, ArchivedTxKind, Transaction};

#[derive(Clone, Debug)]
pub struct SynchronizerConfig {
    pub chain_id: u32,
    /// Transactions waiting to be packed; past it, submissions are answered `Overloaded`.
    pub queue_txs_max: usize,
    /// Their encoded bytes ([`crate::codec::encoded_tx_len`]), the same way: the queue's memory does not depend
    /// on how large clients make their transactions.
    pub queue_bytes_max: usize,
    /// A package is cut as soon as this many transactions wait.
    pub package_txs_max: usize,
    /// A package is cut when its oldest transaction has waited this long, however few there are.
    pub package_wait_ms: u64,
    /// Transactions remembered for duplicate detection, with their (sender, client id) pairs: the newest this
    /// many (a duplicate older than this window is still caught: its inputs are spent, so the UTXO rules reject it;
    /// a client id older than it is free again until the ledger enforces idempotency).
    pub seen_ids_max: usize,
}

impl SynchronizerConfig {
    pub fn new(chain_id: u32) -> SynchronizerConfig {
        SynchronizerConfig {
            chain_id,
            queue_txs_max: 200_000,
            queue_bytes_max: 64 * 1024 * 1024,
            package_txs_max: 2_000,
            package_wait_ms: 20,
            seen_ids_max: 1_000_000,
        }
    }
}

/// The answer to one submitted transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    Accepted {
        id: TxId,
    },
    /// Already seen: the same transaction, or the same sender's `client_id` (answered with the first one's id).
    Duplicate {
        id: TxId,
    },
    Rejected {
        reason: Rejection,
    },
    /// The queue is full: try again later.
    Overloaded {
        retry_after_ms: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("undecodable: {0}")]
    Decode(#[from] DecodeError),
    #[error("signed for chain {got}, this chain is {expected}")]
    WrongChain { expected: u32, got: u32 },
    #[error("unsigned: a transaction must carry a signature")]
    Unsigned,
    #[error("{0}")]
    Signature(TxError),
    /// A rule that no client transaction can meet (an issuance is the executor's own).
    #[error("{0}")]
    Rule(TxError),
}

impl Rejection {
    /// The stable code for clients ([`crate::RejectCode`]).
    pub fn code(&self) -> crate::RejectCode {
        match self {
            Rejection::Decode(_) => crate::RejectCode::Undecodable,
            Rejection::WrongChain { .. } => crate::RejectCode::WrongChain,
            Rejection::Unsigned => crate::RejectCode::Unsigned,
            Rejection::Signature(error) | Rejection::Rule(error) => error.code(),
        }
    }
}

pub struct Synchronizer {
    config: SynchronizerConfig,
    queue: VecDeque<Transaction>,
    /// The encoded bytes of `queue`.
    queued_bytes: usize,
    oldest_queued_ms: Option<u64>,
    seen: FastSet<TxId>,
    /// What `seen` and `client_ids` hold, oldest first: both forget together, so neither outgrows
    /// `seen_ids_max`.
    seen_order: VecDeque<(TxId, Option<(PublicKey, u64)>)>,
    client_ids: FastMap<(PublicKey, u64), TxId>,
    /// Admission's signature work: transactions verified (with [`Synchronizer::signature_batches`], the batches
    /// they were verified in, their ratio is the mean batch size, what batching gains).
    pub signatures_checked: u64,
    /// Sizes admission's verification batches from the bad signatures of the last calls: clients' submissions are
    /// one stream, and a few bad ones among many good would otherwise make every call's one large batch fail and
    /// be bisected.
    sizer: BatchSizer,
    /// Whether business transactions (tokens, orders, contracts) are admitted: only once every member can decode
    /// them (the node turns it on at the protocol version that brings them).
    business: bool,
}

impl Synchronizer {
    /// The batches admission verified signatures in (a call may split into several: see `sizer`).
    pub fn signature_batches(&self) -> u64 {
        self.sizer.batches()
    }

    pub fn new(config: SynchronizerConfig) -> Synchronizer {
        assert!(config.package_txs_max > 0 && config.queue_txs_max >= config.package_txs_max);
        Synchronizer {
            config,
            queue: VecDeque::new(),
            queued_bytes: 0,
            oldest_queued_ms: None,
            seen: FastSet::default(),
            seen_order: VecDeque::new(),
            client_ids: FastMap::default(),
            signatures_checked: 0,
            sizer: BatchSizer::new(),
            business: true,
        }
    }

    /// Admit business transactions ([`crate::tx::TxKind::is_business`]) or refuse them with
    /// [`TxError::NotEnabled`].
    pub fn set_business(&mut self, admitted: bool) {
        self.business = admitted;
    }

    /// How long the oldest admitted transaction waits for more before a package closes (a committee of another
    /// size took over).
    pub fn set_package_wait_ms(&mut self, wait_ms: u64) {
        self.config.package_wait_ms = wait_ms;
    }

    /// How long the oldest admitted transaction waits for more before a package closes.
    pub fn package_wait_ms(&self) -> u64 {
        self.config.package_wait_ms
    }

    /// The chain whose transactions it admits.
    pub fn chain_id(&self) -> u32 {
        self.config.chain_id
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Admits a batch of submissions (signatures are verified together, in one batch).
    pub fn admit(&mut self, submissions: &[&[u8]], now_ms: u64) -> Vec<Admission> {
        self.admit_known(submissions, now_ms, &|_, _| None)
    }

    /// [`Synchronizer::admit`], also answering `Duplicate` for a client id the ledger already applied:
    /// `claimed(sender, client_id)` is the transaction that used it (the node's index of applied claims), so a
    /// repeat is answered with the first one's id on every node and after restarts, not only while this
    /// Synchronizer remembers it.
    pub fn admit_known(
        &mut self,
        submissions: &[&[u8]],
        now_ms: u64,
        claimed: &dyn Fn(&PublicKey, u64) -> Option<TxId>,
    ) -> Vec<Admission> {
        let mut answers: Vec<Option<Admission>> = vec![None; submissions.len()];
        let mut decoded: Vec<(usize, &ArchivedTransaction, TxId)> = Vec::new();
        // Equivocation records carry no signature of their own: their proof is checked here instead.
        let mut evidence: Vec<(usize, &ArchivedTransaction, TxId)> = Vec::new();
        for (index, bytes) in submissions.iter().enumerate() {
            let tx = match decode_tx(bytes) {
                Ok(tx) => tx,
                Err(error) => {
                    answers[index] = Some(Admission::Rejected {
                        reason: Rejection::Decode(error),
                    });
                    continue;
                }
            };
            let chain_id = tx.body.chain_id.to_native();
            if chain_id != self.config.chain_id {
                let reason = Rejection::WrongChain {
                    expected: self.config.chain_id,
                    got: chain_id,
                };
                answers[index] = Some(Admission::Rejected { reason });
            } else if !self.business && tx.body.kind.is_business() {
                answers[index] = Some(Admission::Rejected {
                    reason: Rejection::Rule(TxError::NotEnabled),
                });
            } else if let ArchivedTxKind::Issuance { .. } = tx.body.kind {
                answers[index] = Some(Admission::Rejected {
                    reason: Rejection::Rule(TxError::IssuanceReserved),
                });
            } else if let ArchivedTxKind::Equivocation { .. } = tx.body.kind {
                match check_evidence_alone(tx, self.config.chain_id) {
                    Ok(_) => evidence.push((index, tx, tx.tx_id())),
                    Err(error) => {
                        answers[index] = Some(Admission::Rejected {
                            reason: Rejection::Rule(error),
                        })
                    }
                }
            } else if tx.signatures.is_empty() {
                answers[index] = Some(Admission::Rejected {
                    reason: Rejection::Unsigned,
                });
            } else {
                decoded.push((index, tx, tx.tx_id()));
            }
        }
        let txs: Vec<&ArchivedTransaction> = decoded.iter().map(|(_, tx, _)| *tx).collect();
        let ids: Vec<TxId> = decoded.iter().map(|(_, _, id)| *id).collect();
        let verdicts = verify_signatures_sized(&txs, &ids, &mut self.sizer);
        self.signatures_checked += txs.len() as u64;
        for ((index, tx, id), verdict) in decoded.into_iter().zip(verdicts) {
            answers[index] = Some(match verdict {
                Err(error) => Admission::Rejected {
                    reason: Rejection::Signature(error),
                },
                Ok(()) => self.enqueue(tx, id, now_ms, claimed),
            });
        }
        for (index, tx, id) in evidence {
            answers[index] = Some(self.enqueue(tx, id, now_ms, claimed));
        }
        answers
            .into_iter()
            .map(|a| a.expect("every submission is answered"))
            .collect()
    }

    fn enqueue(
        &mut self,
        tx: &ArchivedTransaction,
        id: TxId,
        now_ms: u64,
        claimed: &dyn Fn(&PublicKey, u64) -> Option<TxId>,
    ) -> Admission {
        if self.seen.contains(&id) {
            return Admission::Duplicate { id };
        }
        let client_key = tx
            .signatures
            .first()
            .zip(tx.body.client_id.as_ref())
            .map(|(signer, c)| (PublicKey::from(&signer.key), c.to_native()));
        if let Some(first) = client_key.and_then(|key| self.client_ids.get(&key)) {
            return Admission::Duplicate { id: *first };
        }
        if let Some(first) = client_key.and_then(|(sender, client_id)| claimed(&sender, client_id))
        {
            return Admission::Duplicate { id: first };
        }
        let overloaded = Admission::Overloaded {
            retry_after_ms: self.config.package_wait_ms.max(1) * 5,
        };
        if self.queue.len() >= self.config.queue_txs_max {
            return overloaded;
        }
        let owned = to_owned_tx(tx);
        let bytes = crate::codec::encoded_tx_len(&owned);
        if self.queued_bytes + bytes > self.config.queue_bytes_max {
            return overloaded;
        }
        self.remember(id, client_key);
        self.queued_bytes += bytes;
        self.queue.push_back(owned);
        self.oldest_queued_ms.get_or_insert(now_ms);
        Admission::Accepted { id }
    }

    fn remember(&mut self, id: TxId, client_key: Option<(PublicKey, u64)>) {
        self.seen.insert(id);
        if let Some(key) = client_key {
            self.client_ids.insert(key, id);
        }
        self.seen_order.push_back((id, client_key));
        while self.seen_order.len() > self.config.seen_ids_max {
            let Some((old, old_key)) = self.seen_order.pop_front() else {
                break;
            };
            self.seen.remove(&old);
            if let Some(key) = old_key {
                self.client_ids.remove(&key);
            }
        }
    }

    /// Takes every queued transaction, in order (a member leaving the committee hands them on).
    pub fn take_all(&mut self) -> Vec<Transaction> {
        self.queued_bytes = 0;
        self.oldest_queued_ms = None;
        self.queue.drain(..).collect()
    }

    /// Puts admitted transactions back at the front of the queue, in order: their package was never committed (a
    /// committee hand-over ended its epoch first), and they were admitted (and answered for) already, so no
    /// bound refuses them and no check runs again.
    pub fn requeue(&mut self, txs: Vec<Transaction>, now_ms: u64) {
        if txs.is_empty() {
            return;
        }
        self.queued_bytes += txs.iter().map(crate::codec::encoded_tx_len).sum::<usize>();
        for tx in txs.into_iter().rev() {
            self.queue.push_front(tx);
        }
        self.oldest_queued_ms = Some(now_ms);
    }

    /// When [`Synchronizer::take_package`] next gives a package if nothing more is admitted meanwhile: once the
    /// oldest queued transaction has waited the package wait; `None` with nothing queued.
    pub fn package_due_ms(&self) -> Option<u64> {
        self.oldest_queued_ms
            .map(|oldest| oldest + self.config.package_wait_ms)
    }

    /// The next package, when one is due: a full one, or whatever waits once the oldest has waited long enough.
    pub fn take_package(&mut self, now_ms: u64) -> Option<Vec<Transaction>> {
        let oldest = self.oldest_queued_ms?;
        let full = self.queue.len() >= self.config.package_txs_max;
        if !full && now_ms < oldest + self.config.package_wait_ms {
            return None;
        }
        let count = self.queue.len().min(self.config.package_txs_max);
        let package: Vec<Transaction> = self.queue.drain(..count).collect();
        self.queued_bytes -= package
            .iter()
            .map(crate::codec::encoded_tx_len)
            .sum::<usize>();
        self.oldest_queued_ms = if self.queue.is_empty() {
            None
        } else {
            Some(now_ms)
        };
        Some(package)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode_tx;
    use crate::fixtures::{funded_genesis, key, transfer, ACCOUNT_KEYS};
    use crate::genesis::genesis_outputs;

    fn signed(count: u32) -> Vec<Transaction> {
        let genesis = funded_genesis(3, 4, count, 1, 100);
        genesis_outputs(&genesis.txs)
            .iter()
            .enumerate()
            .map(|(i, coin)| {
                transfer(
                    3,
                    &key(ACCOUNT_KEYS, i as u32),
                    &[*coin],
                    &key(ACCOUNT_KEYS, 0),
                    5,
                    1,
                )
            })
            .collect()
    }

    fn config() -> SynchronizerConfig {
        SynchronizerConfig {
            queue_txs_max: 6,
            package_txs_max: 4,
            package_wait_ms: 10,
            ..SynchronizerConfig::new(3)
        }
    }

    /// The package is due when its oldest transaction has waited the package wait (what a caller sleeps until),
    /// and not a millisecond before; nothing queued, nothing due.
    #[test]
    fn a_package_is_due_when_its_oldest_has_waited() {
        let txs = signed(2);
        let mut sync = Synchronizer::new(config());
        assert_eq!(sync.package_due_ms(), None);
        let bytes: Vec<_> = txs.iter().map(encode_tx).collect();
        sync.admit(&[&bytes[0][..]], 100);
        sync.admit(&[&bytes[1][..]], 104);
        assert_eq!(
            sync.package_due_ms(),
            Some(110),
            "the oldest's arrival plus the wait"
        );
        assert!(sync.take_package(109).is_none());
        assert_eq!(sync.take_package(110).map(|p| p.len()), Some(2));
        assert_eq!(sync.package_due_ms(), None);
    }

    #[test]
    fn requeued_transactions_go_first_in_their_order_without_a_check() {
        let txs = signed(3);
        let mut sync = Synchronizer::new(config());
        let late = encode_tx(&txs[2]);
        assert!(matches!(
            sync.admit(&[&late[..]], 0)[0],
            Admission::Accepted { .. }
        ));
        sync.requeue(txs[..2].to_vec(), 5);
        assert_eq!(sync.queued(), 3);
        let taken: Vec<Transaction> = std::iter::from_fn(|| sync.take_package(1_000))
            .flatten()
            .collect();
        assert_eq!(taken, txs, "the carried ones first, in order");
        assert_eq!(
            sync.signatures_checked, 1,
            "only the admitted one was checked"
        );
    }

    #[test]
    fn every_submission_gets_its_answer() {
        let txs = signed(3);
        let mut bad_signature = txs[1].clone();
        bad_signature.signatures[0].signature.0[3] ^= 1;
        let mut other_chain = txs[2].clone();
        other_chain.body.chain_id = 4;
        let bytes: Vec<_> = [&txs[0], &bad_signature, &other_chain, &txs[0]]
            .iter()
            .map(|t| encode_tx(t))
            .collect();
        let mut submissions: Vec<&[u8]> = bytes.iter().map(|b| &b[..]).collect();
        submissions.push(&[1, 2, 3]);
        let mut sync = Synchronizer::new(config());
        let answers = sync.admit(&submissions, 0);
        assert_eq!(answers[0], Admission::Accepted { id: txs[0].tx_id() });
        assert_eq!(
            answers[1],
            Admission::Rejected {
                reason: Rejection::Signature(TxError::BadSignature { index: 0 })
            }
        );
        assert_eq!(
            answers[2],
            Admission::Rejected {
                reason: Rejection::WrongChain {
                    expected: 3,
                    got: 4
                }
            }
        );
        assert_eq!(answers[3], Admission::Duplicate { id: txs[0].tx_id() });
        assert!(matches!(
            &answers[4],
            Admission::Rejected {
                reason: Rejection::Decode(_)
            }
        ));
        assert_eq!(sync.queued(), 1);
    }

    /// Business transactions wait for the protocol version that admits them; everything else is admitted as before.
    #[test]
    fn business_transactions_are_refused_until_turned_on() {
        use crate::tx::TxBody;
        let owner = key(ACCOUNT_KEYS, 0);
        let transfer = signed(1).remove(0);
        let kinds = crate::fixtures::token_kinds();
        let business: Vec<Transaction> = kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| {
                TxBody {
                    kind,
                    client_id: Some(i as u64),
                    ..transfer.body.clone()
                }
                .sign(&[&owner])
            })
            .collect();
        let bytes: Vec<_> = business.iter().map(encode_tx).collect();
        let submissions: Vec<&[u8]> = bytes.iter().map(|b| &b[..]).collect();
        let mut sync = Synchronizer::new(SynchronizerConfig {
            queue_txs_max: 64,
            ..config()
        });
        sync.set_business(false);
        for answer in sync.admit(&submissions, 0) {
            assert_eq!(
                answer,
                Admission::Rejected {
                    reason: Rejection::Rule(TxError::NotEnabled)
                }
            );
        }
        let plain = encode_tx(&transfer);
        assert!(matches!(
            sync.admit(&[&plain[..]], 0)[0],
            Admission::Accepted { .. }
        ));
        sync.set_business(true);
        let answers = sync.admit(&submissions, 0);
        assert!(
            answers
                .iter()
                .all(|a| matches!(a, Admission::Accepted { .. })),
            "{answers:?}"
        );
    }

    #[test]
    fn a_client_issuance_is_refused_with_its_reason() {
        use crate::tx::{TxBody, TxKind, TxOutput};
        let owner = key(ACCOUNT_KEYS, 0);
        let body = TxBody {
            chain_id: 3,
            vn: 0,
            kind: TxKind::Issuance {
                height: 1,
                evidence: Vec::new(),
                absent: None,
            },
            inputs: Vec::new(),
            outputs: vec![TxOutput {
                amount: 1_000_000,
                asset: crate::AssetId::CAS,
                owner: owner.public(),
                unlock_height: None,
            }],
            fee: 0,
            memo: Vec::new(),
            client_id: None,
        };
        // Unsigned as the executor builds it, and signed by a client hoping that helps: both refused.
        let unsigned = Transaction {
            body: body.clone(),
            signatures: Vec::new(),
        };
        let signed = body.sign(&[&owner]);
        let bytes = [encode_tx(&unsigned), encode_tx(&signed)];
        let submissions: Vec<&[u8]> = bytes.iter().map(|b| &b[..]).collect();
        let mut sync = Synchronizer::new(config());
        let answers = sync.admit(&submissions, 0);
        for answer in &answers {
            assert_eq!(
                answer,
                &Admission::Rejected {
                    reason: Rejection::Rule(TxError::IssuanceReserved)
                }
            );
        }
        let Admission::Rejected { reason } = &answers[0] else {
            unreachable!()
        };
        assert_eq!(reason.code(), crate::RejectCode::IssuanceReserved);
        assert_eq!(sync.queued(), 0);
    }

    #[test]
    fn an_equivocation_record_is_admitted_unsigned_once_its_proof_checks() {
        let member = key(ACCOUNT_KEYS, 0);
        let record =
            |second: u8| crate::fixtures::equivocation(&member, 2, 9, 1, second).record_tx(3);
        let (good, same_block) = (record(2), record(1));
        let bytes = [encode_tx(&good), encode_tx(&same_block), encode_tx(&good)];
        let submissions: Vec<&[u8]> = bytes.iter().map(|b| &b[..]).collect();
        let mut sync = Synchronizer::new(config());
        let answers = sync.admit(&submissions, 0);
        assert_eq!(answers[0], Admission::Accepted { id: good.tx_id() });
        let Admission::Rejected { reason } = &answers[1] else {
            panic!("a proof of nothing admitted: {:?}", answers[1])
        };
        assert_eq!(reason.code(), crate::RejectCode::BadEvidence);
        assert_eq!(answers[2], Admission::Duplicate { id: good.tx_id() });
        assert_eq!(sync.queued(), 1);
    }

    #[test]
    fn client_id_repeats_are_duplicates_of_the_first() {
        let txs = signed(2);
        let owner = key(ACCOUNT_KEYS, 0);
        let with_id = |tx: &Transaction, amount| {
            let mut body = tx.body.clone();
            body.client_id = Some(77);
            body.outputs[0].amount = amount;
            body.outputs[1].amount = 100 - amount - 1;
            body.sign(&[&owner])
        };
        let first = with_id(&txs[0], 5);
        let second = with_id(&txs[0], 6);
        let bytes = [encode_tx(&first), encode_tx(&second)];
        let mut sync = Synchronizer::new(config());
        let answers = sync.admit(&[&bytes[0], &bytes[1]], 0);
        assert_eq!(
            answers,
            vec![
                Admission::Accepted { id: first.tx_id() },
                Admission::Duplicate { id: first.tx_id() }
            ]
        );
    }

    /// Issue 16 item 13: the (sender, client id) map was never pruned, so it grew with every transaction carrying
    /// a client id. It now forgets with the seen ids, after `seen_ids_max` newer transactions.
    #[test]
    fn client_ids_are_forgotten_with_the_seen_ids() {
        let txs = signed(4);
        let owner = key(ACCOUNT_KEYS, 0);
        let with_id = |tx: &Transaction, client_id, amount| {
            let mut body = tx.body.clone();
            body.client_id = Some(client_id);
            body.outputs[0].amount = amount;
            body.outputs[1].amount = 100 - amount - 1;
            body.sign(&[&owner])
        };
        let mut sync = Synchronizer::new(SynchronizerConfig {
            seen_ids_max: 2,
            ..config()
        });
        let first = encode_tx(&with_id(&txs[0], 1, 5));
        assert!(matches!(
            sync.admit(&[&first], 0)[0],
            Admission::Accepted { .. }
        ));
        let again = encode_tx(&with_id(&txs[0], 1, 6));
        assert!(matches!(
            sync.admit(&[&again], 0)[0],
            Admission::Duplicate { .. }
        ));
        for (client_id, tx) in [(2, &txs[1]), (3, &txs[2])] {
            let bytes = encode_tx(&with_id(tx, client_id, 5));
            assert!(matches!(
                sync.admit(&[&bytes], 0)[0],
                Admission::Accepted { .. }
            ));
        }
        assert_eq!(sync.client_ids.len(), 2);
        assert_eq!(sync.seen.len(), 2);
        assert!(
            matches!(sync.admit(&[&again], 0)[0], Admission::Accepted { .. }),
            "past the retention the first client id is free again"
        );
    }

    /// The queue is bounded in bytes too: large transactions fill it sooner than the count bound.
    #[test]
    fn the_queue_pushes_back_on_bytes() {
        let txs = signed(3);
        let one = crate::codec::encoded_tx_len(&txs[0]);
        let mut sync = Synchronizer::new(SynchronizerConfig {
            queue_bytes_max: 2 * one,
            ..config()
        });
        let bytes: Vec<_> = txs.iter().map(encode_tx).collect();
        let submissions: Vec<&[u8]> = bytes.iter().map(|b| &b[..]).collect();
        let answers = sync.admit(&submissions, 0);
        assert!(matches!(answers[1], Admission::Accepted { .. }));
        assert!(
            matches!(answers[2], Admission::Overloaded { .. }),
            "{answers:?}"
        );
        assert_eq!(sync.take_package(1_000).map(|p| p.len()), Some(2));
        assert!(matches!(
            sync.admit(&submissions[2..], 1_000)[0],
            Admission::Accepted { .. }
        ));
    }

    #[test]
    fn packs_by_size_and_by_age_and_pushes_back_when_full() {
        let txs = signed(8);
        let bytes: Vec<_> = txs.iter().map(encode_tx).collect();
        let submissions: Vec<&[u8]> = bytes.iter().map(|b| &b[..]).collect();
        let mut sync = Synchronizer::new(config());
        let answers = sync.admit(&submissions, 100);
        assert!(answers[..6]
            .iter()
            .all(|a| matches!(a, Admission::Accepted { .. })));
        assert!(answers[6..]
            .iter()
            .all(|a| matches!(a, Admission::Overloaded { .. })));
        assert_eq!(
            sync.take_package(100).map(|p| p.len()),
            Some(4),
            "a full package is cut at once"
        );
        assert_eq!(
            sync.take_package(105),
            None,
            "two waiting, not yet old enough"
        );
        let rest = sync.take_package(111).unwrap();
        assert_eq!(
            rest.iter().map(Transaction::tx_id).collect::<Vec<_>>(),
            vec![txs[4].tx_id(), txs[5].tx_id()]
        );
        assert_eq!(sync.take_package(1_000), None);
        // Room again: the overloaded ones are accepted now.
        assert!(matches!(
            sync.admit(&submissions[6..7], 1_000)[0],
            Admission::Accepted { .. }
        ));
    }
}
