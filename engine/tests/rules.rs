//! The UTXO rules through the in-memory ledger: every rejection reason, batch order deciding double spends, and
//! rejected transactions changing nothing.

use cas_engine::codec::{decode_tx, encode_tx};
use cas_engine::crypto::{verify_batch, Keypair, SigEntry, VERIFY_BATCH_SIZE};
use cas_engine::fixtures::{funded_genesis, key, transfer, ACCOUNT_KEYS};
use cas_engine::genesis::genesis_outputs;
use cas_engine::rules::{check_tx, fee_pot_outpoint, fee_pot_output, verify_signatures};
use cas_engine::{
    AssetId, Hash32, MemoryLedger, OutPoint, Transaction, TxBody, TxError, TxKind, TxOutput,
};
use rkyv::util::AlignedVec;

const CHAIN: u32 = 7;
const AMOUNT: u64 = 1_000;

struct Fixture {
    ledger: MemoryLedger,
    /// The genesis coins of account i, in order.
    coins: Vec<Vec<(OutPoint, TxOutput)>>,
}

fn fixture(accounts: u32, outputs: u32) -> Fixture {
    let genesis = funded_genesis(CHAIN, 4, accounts, outputs, AMOUNT);
    let ledger = MemoryLedger::from_genesis(&genesis).unwrap();
    let mut coins = vec![Vec::new(); accounts as usize];
    for (outpoint, coin) in genesis_outputs(&genesis.txs) {
        let owner = (0..accounts)
            .position(|i| key(ACCOUNT_KEYS, i).public() == coin.owner)
            .unwrap();
        coins[owner].push((outpoint, coin));
    }
    Fixture { ledger, coins }
}

fn account(i: u32) -> Keypair {
    key(ACCOUNT_KEYS, i)
}

/// Applies `txs` as one block and returns the verdicts.
fn apply(ledger: &mut MemoryLedger, txs: &[Transaction]) -> Vec<Result<(), TxError>> {
    let encoded: Vec<AlignedVec> = txs.iter().map(encode_tx).collect();
    let archived: Vec<_> = encoded
        .iter()
        .map(|bytes| decode_tx(bytes).unwrap())
        .collect();
    let height = ledger.height + 1;
    ledger.apply(&archived, height)
}

fn body(inputs: Vec<OutPoint>, outputs: Vec<TxOutput>, fee: u64) -> TxBody {
    TxBody {
        chain_id: CHAIN,
        vn: 0,
        kind: TxKind::Transfer,
        inputs,
        outputs,
        fee,
        memo: Vec::new(),
        client_id: None,
    }
}

fn cas(owner: &Keypair, amount: u64) -> TxOutput {
    TxOutput {
        amount,
        asset: AssetId::CAS,
        owner: owner.public(),
        unlock_height: None,
    }
}

#[test]
fn valid_transfer_moves_value_and_changes_the_commitment() {
    let mut f = fixture(2, 1);
    let before = f.ledger.commitment();
    let tx = transfer(CHAIN, &account(0), &f.coins[0], &account(1), 300, 5);
    assert_eq!(
        apply(&mut f.ledger, std::slice::from_ref(&tx)),
        vec![Ok(())]
    );
    assert_ne!(f.ledger.commitment(), before);
    let id = tx.tx_id();
    assert_eq!(f.ledger.utxos()[&OutPoint { tx: id, index: 0 }].amount, 300);
    assert_eq!(f.ledger.utxos()[&OutPoint { tx: id, index: 1 }].amount, 695);
    assert!(!f.ledger.utxos().contains_key(&f.coins[0][0].0));
}

#[test]
fn double_spend_inside_a_batch_first_spender_wins() {
    let mut f = fixture(3, 1);
    let first = transfer(CHAIN, &account(0), &f.coins[0], &account(1), 100, 1);
    let second = transfer(CHAIN, &account(0), &f.coins[0], &account(2), 200, 1);
    let verdicts = apply(&mut f.ledger, &[first.clone(), second.clone()]);
    assert_eq!(
        verdicts,
        vec![Ok(()), Err(TxError::DoubleSpend { input: 0 })]
    );
    assert!(f.ledger.utxos().contains_key(&OutPoint {
        tx: first.tx_id(),
        index: 0
    }));
    assert!(!f.ledger.utxos().contains_key(&OutPoint {
        tx: second.tx_id(),
        index: 0
    }));
    // Across blocks, the spent outpoint is simply gone.
    assert_eq!(
        apply(&mut f.ledger, &[second]),
        vec![Err(TxError::MissingInput { input: 0 })]
    );
}

#[test]
fn a_chain_of_dependent_transactions_applies_in_one_batch() {
    let mut f = fixture(3, 1);
    let a = transfer(CHAIN, &account(0), &f.coins[0], &account(1), 500, 1);
    let a_out = (
        OutPoint {
            tx: a.tx_id(),
            index: 0,
        },
        cas(&account(1), 500),
    );
    let b = transfer(CHAIN, &account(1), &[a_out], &account(2), 400, 1);
    let b_out = (
        OutPoint {
            tx: b.tx_id(),
            index: 0,
        },
        cas(&account(2), 400),
    );
    let c = transfer(CHAIN, &account(2), &[b_out], &account(0), 300, 1);
    assert_eq!(
        apply(&mut f.ledger, &[a, b.clone(), c]),
        vec![Ok(()), Ok(()), Ok(())]
    );
    // b's first output was created and spent inside the block: it is not in the set.
    assert!(!f.ledger.utxos().contains_key(&b_out.0));
}

#[test]
fn value_not_conserved_is_rejected() {
    let mut f = fixture(2, 1);
    let minted =
        body(vec![f.coins[0][0].0], vec![cas(&account(1), AMOUNT + 1)], 1).sign(&[&account(0)]);
    let burned = body(vec![f.coins[0][0].0], vec![cas(&account(1), 10)], 1).sign(&[&account(0)]);
    let before = f.ledger.commitment();
    let verdicts = apply(&mut f.ledger, &[minted, burned]);
    assert_eq!(
        verdicts,
        vec![
            Err(TxError::ValueNotConserved {
                asset: AssetId::CAS,
                inputs: AMOUNT,
                outputs: AMOUNT + 2
            }),
            Err(TxError::ValueNotConserved {
                asset: AssetId::CAS,
                inputs: AMOUNT,
                outputs: 11
            }),
        ]
    );
    assert_eq!(
        f.ledger.commitment(),
        before,
        "rejected transactions change nothing"
    );
}

#[test]
fn an_asset_cannot_be_created_by_a_transfer() {
    let mut f = fixture(2, 1);
    let token = AssetId(Hash32([5; 32]));
    let outputs = vec![
        cas(&account(1), AMOUNT - 1),
        TxOutput {
            asset: token,
            ..cas(&account(1), 10)
        },
    ];
    let tx = body(vec![f.coins[0][0].0], outputs, 1).sign(&[&account(0)]);
    assert_eq!(
        apply(&mut f.ledger, &[tx]),
        vec![Err(TxError::ValueNotConserved {
            asset: token,
            inputs: 0,
            outputs: 10
        })]
    );
}

#[test]
fn u64_overflow_is_rejected_on_both_sides() {
    let mut f = fixture(2, 2);
    let outputs = vec![cas(&account(1), u64::MAX), cas(&account(1), 2)];
    let tx = body(vec![f.coins[0][0].0], outputs, 1).sign(&[&account(0)]);
    assert_eq!(
        apply(&mut f.ledger, &[tx]),
        vec![Err(TxError::OutputOverflow { output: 0 })]
    );
    let outputs = vec![cas(&account(1), 10)];
    let fee_overflow = body(vec![f.coins[0][0].0], outputs, u64::MAX).sign(&[&account(0)]);
    assert_eq!(
        apply(&mut f.ledger, &[fee_overflow]),
        vec![Err(TxError::OutputOverflow { output: 0 })]
    );

    // Inputs that sum past u64::MAX: a genesis that hands out two outputs of u64::MAX of a token (CAS's supply is
    // bounded to a u64 by the genesis).
    let mut spec = cas_engine::fixtures::funded_spec(CHAIN, 4, 1, 2, u64::MAX);
    spec.params.min_fee = 0;
    spec.allocations[0].asset = Some("ab".repeat(32));
    let genesis = cas_engine::genesis::genesis_block(&spec).unwrap();
    let mut ledger = MemoryLedger::from_genesis(&genesis).unwrap();
    let inputs = genesis_outputs(&genesis.txs)
        .iter()
        .map(|(o, _)| *o)
        .collect();
    let tx = body(inputs, vec![cas(&account(1), 1)], 0).sign(&[&account(0)]);
    assert_eq!(
        apply(&mut ledger, &[tx]),
        vec![Err(TxError::InputOverflow { input: 1 })]
    );
}

#[test]
fn each_structural_rule_has_its_own_error() {
    let mut f = fixture(3, 2);
    let (c0, c1) = (f.coins[0][0], f.coins[0][1]);
    let out = |amount| vec![cas(&account(1), amount)];
    let cases: Vec<(Transaction, TxError)> = vec![
        (
            body(vec![], out(1), 1).sign(&[&account(0)]),
            TxError::NoInputs,
        ),
        (
            body(vec![c0.0, c1.0, c0.0], out(1), 1).sign(&[&account(0)]),
            TxError::DuplicateInput { input: 2 },
        ),
        (
            body(
                vec![OutPoint {
                    tx: Hash32([9; 32]),
                    index: 0,
                }],
                out(1),
                1,
            )
            .sign(&[&account(0)]),
            TxError::MissingInput { input: 0 },
        ),
        (
            body(vec![c0.0], out(AMOUNT), 0).sign(&[&account(0)]),
            TxError::FeeTooLow { fee: 0, min_fee: 1 },
        ),
        (
            body(vec![c0.0], vec![cas(&account(1), 0)], 1).sign(&[&account(0)]),
            TxError::ZeroAmount { output: 0 },
        ),
        (
            body(vec![c0.0], out(AMOUNT - 1), 1).sign(&[&account(1)]),
            TxError::Unsigned { input: 0 },
        ),
        (
            body(vec![c0.0], out(AMOUNT - 1), 1).sign(&[&account(0), &account(2)]),
            TxError::UnusedSignature { index: 1 },
        ),
        (
            body(vec![c0.0], out(AMOUNT - 1), 1).sign(&[&account(0), &account(0)]),
            TxError::DuplicateSigner { index: 1 },
        ),
        (
            TxBody {
                chain_id: CHAIN + 1,
                ..body(vec![c0.0], out(AMOUNT - 1), 1)
            }
            .sign(&[&account(0)]),
            TxError::WrongChain {
                expected: CHAIN,
                got: CHAIN + 1,
            },
        ),
    ];
    let before = f.ledger.commitment();
    for (tx, expected) in cases {
        assert_eq!(
            apply(&mut f.ledger, &[tx]),
            vec![Err(expected.clone())],
            "{expected}"
        );
    }
    assert_eq!(f.ledger.commitment(), before);
}

#[test]
fn genesis_kind_is_rejected_after_genesis() {
    let f = fixture(1, 1);
    let genesis = funded_genesis(CHAIN, 4, 1, 1, AMOUNT);
    let bytes = encode_tx(&genesis.txs[0]);
    let tx = decode_tx(&bytes).unwrap();
    assert_eq!(
        check_tx(tx, f.ledger.utxos(), &f.ledger.context_for(1)),
        Err(TxError::GenesisOnly)
    );
}

#[test]
fn time_locked_output_opens_at_its_height() {
    let mut f = fixture(2, 1);
    let locked = TxOutput {
        unlock_height: Some(3),
        ..cas(&account(1), AMOUNT - 1)
    };
    let lock_tx = body(vec![f.coins[0][0].0], vec![locked], 1).sign(&[&account(0)]);
    assert_eq!(
        apply(&mut f.ledger, std::slice::from_ref(&lock_tx)),
        vec![Ok(())]
    ); // height 1
    let spend = transfer(
        CHAIN,
        &account(1),
        &[(
            OutPoint {
                tx: lock_tx.tx_id(),
                index: 0,
            },
            locked,
        )],
        &account(0),
        10,
        1,
    );
    assert_eq!(
        apply(&mut f.ledger, std::slice::from_ref(&spend)), // height 2
        vec![Err(TxError::Locked {
            input: 0,
            unlock_height: 3
        })]
    );
    assert_eq!(apply(&mut f.ledger, &[spend]), vec![Ok(())]); // height 3
}

#[test]
fn bad_signature_at_a_known_index_in_a_batch_of_1024() {
    assert_eq!(VERIFY_BATCH_SIZE, 1024, "the test covers one full batch");
    let keys: Vec<Keypair> = (0..64).map(|i| key(ACCOUNT_KEYS, i)).collect();
    let publics: Vec<[u8; 32]> = (0..1024).map(|i| keys[i % 64].public().0).collect();
    let messages: Vec<[u8; 32]> = (0..1024u32)
        .map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes())
        .collect();
    let mut signatures: Vec<[u8; 64]> = (0..1024)
        .map(|i| keys[i % 64].sign(&messages[i]).0)
        .collect();
    for bad_index in [0usize, 511, 777, 1023] {
        let original = signatures[bad_index];
        signatures[bad_index][40] ^= 0x10;
        let entries: Vec<SigEntry<'_>> = (0..1024)
            .map(|i| SigEntry {
                message: &messages[i],
                key: &publics[i],
                signature: &signatures[i],
            })
            .collect();
        assert_eq!(verify_batch(&entries), vec![bad_index]);
        signatures[bad_index] = original;
    }
}

#[test]
fn bad_signature_is_reported_per_transaction_and_signature() {
    let f = fixture(4, 1);
    let mut txs: Vec<Transaction> = (0..4)
        .map(|i| {
            transfer(
                CHAIN,
                &account(i),
                &f.coins[i as usize],
                &account((i + 1) % 4),
                10,
                1,
            )
        })
        .collect();
    txs[2].signatures[0].signature.0[3] ^= 1;
    let encoded: Vec<AlignedVec> = txs.iter().map(encode_tx).collect();
    let archived: Vec<_> = encoded.iter().map(|b| decode_tx(b).unwrap()).collect();
    let ids: Vec<_> = archived.iter().map(|tx| tx.tx_id()).collect();
    assert_eq!(
        verify_signatures(&archived, &ids),
        vec![
            Ok(()),
            Ok(()),
            Err(TxError::BadSignature { index: 0 }),
            Ok(())
        ]
    );
}

fn issuance(height: u64, outputs: Vec<TxOutput>) -> Transaction {
    Transaction {
        body: TxBody {
            kind: TxKind::Issuance {
                height,
                evidence: vec![vec![1, 2, 3]],
                absent: None,
            },
            ..body(Vec::new(), outputs, 0)
        },
        signatures: Vec::new(),
    }
}

fn total_supply(ledger: &MemoryLedger) -> u128 {
    ledger.utxos().values().map(|c| u128::from(c.amount)).sum()
}

#[test]
fn issuance_mints_only_in_the_executors_slot_and_is_counted() {
    let mut f = fixture(2, 1);
    let supply = total_supply(&f.ledger);
    let payment = transfer(CHAIN, &account(0), &f.coins[0], &account(1), 300, 5);
    let mint = issuance(1, vec![cas(&account(1), 70), cas(&account(0), 3)]);

    // A client's issuance, before the block's last transaction, is refused; the transfer after it applies. Its fee
    // stays in the set, in the block's fee pot.
    let verdicts = apply(&mut f.ledger, &[mint.clone(), payment.clone()]);
    assert_eq!(verdicts, vec![Err(TxError::IssuanceReserved), Ok(())]);
    assert_eq!(total_supply(&f.ledger), supply);
    assert_eq!(f.ledger.utxos()[&fee_pot_outpoint(1)], fee_pot_output(5));

    // The last slot, with the block's own height, spending the previous block's pot: it pays the pot out and mints
    // what it pays beyond it; only there does supply grow.
    let payment = transfer(
        CHAIN,
        &account(1),
        &[(
            OutPoint {
                tx: payment.tx_id(),
                index: 0,
            },
            cas(&account(1), 300),
        )],
        &account(0),
        100,
        5,
    );
    let with_pot = |outputs: Vec<TxOutput>| {
        let mut tx = issuance(2, outputs);
        tx.body.inputs.push(fee_pot_outpoint(1));
        tx
    };
    let mint = with_pot(vec![cas(&account(1), 70), cas(&account(0), 8)]);
    let apply_with = |f: &Fixture, txs: &[&Transaction]| {
        let encoded: Vec<AlignedVec> = txs.iter().map(|t| encode_tx(t)).collect();
        let archived: Vec<_> = encoded.iter().map(|b| decode_tx(b).unwrap()).collect();
        let ids: Vec<_> = archived.iter().map(|t| t.tx_id()).collect();
        cas_engine::rules::apply_batch(
            &archived,
            &ids,
            &verify_signatures(&archived, &ids),
            f.ledger.utxos(),
            &f.ledger.context_for(2),
        )
    };
    // Leaving the pot, or paying out less than it holds, is refused.
    let leaves = issuance(2, vec![cas(&account(1), 70)]);
    let burns = with_pot(vec![cas(&account(1), 4)]);
    for (tx, error) in [
        (leaves, TxError::IssuancePotUnspent { pot: 5 }),
        (burns, TxError::IssuanceBurnsFees { pot: 5, paid: 4 }),
    ] {
        let outcome = apply_with(&f, &[&payment, &tx]);
        assert_eq!(outcome.verdicts, vec![Ok(()), Err(error)]);
    }
    let outcome = apply_with(&f, &[&payment, &mint]);
    assert_eq!(outcome.verdicts, vec![Ok(()), Ok(())]);
    assert_eq!(outcome.issued, 73);
    assert_eq!(outcome.fees, 5);
    f.ledger.commit(&outcome, 2);
    assert_eq!(total_supply(&f.ledger), supply + 73);
    assert!(!f.ledger.utxos().contains_key(&fee_pot_outpoint(1)));
    assert_eq!(f.ledger.utxos()[&fee_pot_outpoint(2)], fee_pot_output(5));
    let minted = OutPoint {
        tx: mint.tx_id(),
        index: 0,
    };
    assert_eq!(f.ledger.utxos()[&minted], cas(&account(1), 70));

    // A client cannot spend a pot: it is a record, not a coin.
    let thief = body(vec![fee_pot_outpoint(2)], vec![cas(&account(0), 4)], 1).sign(&[&account(0)]);
    assert_eq!(
        apply(&mut f.ledger, &[thief]),
        vec![Err(TxError::MissingInput { input: 0 })]
    );

    // Through the client path (`check_tx`), an issuance is always reserved.
    let bytes = encode_tx(&issuance(3, vec![cas(&account(0), 1)]));
    assert_eq!(
        check_tx(
            decode_tx(&bytes).unwrap(),
            f.ledger.utxos(),
            &f.ledger.context_for(3)
        ),
        Err(TxError::IssuanceReserved)
    );
}

#[test]
fn a_malformed_issuance_in_the_last_slot_gets_its_reason() {
    let f = fixture(1, 1);
    let mut locked = cas(&account(0), 5);
    locked.unlock_height = Some(9);
    let mut spends = issuance(1, vec![cas(&account(0), 5)]);
    spends.body.inputs.push(f.coins[0][0].0);
    let mut token = cas(&account(0), 5);
    token.asset = AssetId(Hash32([9; 32]));
    let cases = [
        (
            issuance(2, vec![cas(&account(0), 5)]),
            TxError::IssuanceWrongHeight {
                expected: 1,
                got: 2,
            },
        ),
        (spends, TxError::IssuanceNotPlain),
        (
            issuance(1, vec![cas(&account(0), 5), locked]),
            TxError::IssuanceNotCas { output: 1 },
        ),
        (
            issuance(1, vec![token]),
            TxError::IssuanceNotCas { output: 0 },
        ),
        (
            issuance(1, vec![cas(&account(0), 0)]),
            TxError::ZeroAmount { output: 0 },
        ),
        (
            issuance(1, vec![cas(&account(0), u64::MAX), cas(&account(0), 1)]),
            TxError::OutputOverflow { output: 1 },
        ),
    ];
    for (tx, expected) in cases {
        let bytes = encode_tx(&tx);
        let archived = decode_tx(&bytes).unwrap();
        let ids = [archived.tx_id()];
        let outcome = cas_engine::rules::apply_batch(
            &[archived],
            &ids,
            &[Ok(())],
            f.ledger.utxos(),
            &f.ledger.context_for(1),
        );
        assert_eq!(outcome.verdicts, vec![Err(expected)]);
        assert_eq!(outcome.issued, 0);
        assert!(outcome.created.is_empty());
    }
}

/// A transfer of `amount` from account `from`'s genesis coin `coin` to account `to`, with a client id.
fn with_client_id(
    f: &Fixture,
    from: u32,
    coin: usize,
    to: u32,
    amount: u64,
    client_id: u64,
) -> Transaction {
    let (outpoint, held) = f.coins[from as usize][coin];
    let mut body = body(
        vec![outpoint],
        vec![
            cas(&account(to), amount),
            cas(&account(from), held.amount - amount - 1),
        ],
        1,
    );
    body.client_id = Some(client_id);
    body.sign(&[&account(from)])
}

/// Issue 17 item 2: a sender's client id is applied once, by the ledger, in block order: a second transaction with
/// it is refused in the same block and in later ones, whoever admitted it; another sender's same id, or the same
/// sender's next id, is not a duplicate; the claim is in the set (and so in the commitment), and it is no coin.
#[test]
fn a_client_id_is_applied_once_per_sender_in_block_order() {
    let mut f = fixture(3, 3);
    let first = with_client_id(&f, 0, 0, 1, 10, 42);
    let again_same_block = with_client_id(&f, 0, 1, 1, 20, 42);
    let other_sender = with_client_id(&f, 2, 0, 1, 30, 42);
    let before = f.ledger.commitment();
    assert_eq!(
        apply(&mut f.ledger, &[first, again_same_block, other_sender]),
        vec![
            Ok(()),
            Err(TxError::DuplicateClientId { client_id: 42 }),
            Ok(())
        ]
    );
    assert_ne!(f.ledger.commitment(), before);
    assert_eq!(
        TxError::DuplicateClientId { client_id: 42 }.code(),
        cas_engine::RejectCode::DuplicateClientId
    );
    // The refused one changed nothing: its coin is still there.
    assert!(f.ledger.utxos().contains_key(&f.coins[0][1].0));
    // In a later block, from the set.
    let later = with_client_id(&f, 0, 2, 1, 5, 42);
    assert_eq!(
        apply(&mut f.ledger, &[later]),
        vec![Err(TxError::DuplicateClientId { client_id: 42 })]
    );
    let next_id = with_client_id(&f, 0, 2, 1, 5, 43);
    assert_eq!(apply(&mut f.ledger, &[next_id]), vec![Ok(())]);
    // The claim is an entry of the set, but no coin: spending it is a missing input.
    let claim = cas_engine::rules::claim_outpoint(&account(0).public(), 42);
    assert_eq!(
        f.ledger.utxos().get(&claim),
        Some(&cas_engine::rules::claim_output(&account(0).public()))
    );
    let spend_claim = body(vec![claim], vec![cas(&account(1), 1)], 1).sign(&[&account(0)]);
    assert_eq!(
        apply(&mut f.ledger, &[spend_claim]),
        vec![Err(TxError::MissingInput { input: 0 })]
    );
}
