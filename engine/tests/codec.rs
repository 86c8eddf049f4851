//! The codec's promises under random input: encode -> decode round trips for random transactions and blocks, and
//! random or mutated bytes never panic the untrusted decoder (they are rejected, or decode to a value that itself
//! round-trips and respects every bound).

use cas_engine::codec::{
    decode_block, decode_tx, encode_block, encode_tx, encoded_block_len, encoded_tx_len,
    to_owned_block, to_owned_tx, DecodeError, COMMITTEE_MAX, INPUTS_MAX,
    ISSUANCE_EVIDENCE_BYTES_MAX, ISSUANCE_EVIDENCE_MAX, ISSUANCE_OUTPUTS_MAX, MEMO_BYTES_MAX,
    OUTPUTS_MAX, SIGNATURES_MAX, TX_BYTES_MAX,
};
use cas_engine::governance::GovernanceParams;
use cas_engine::tx::{ChainParams, CommitteeMember, StakeParams};
use cas_engine::{
    AssetId, Block, BlockHeader, Hash32, OutPoint, PublicKey, Signature, Transaction, TxBody,
    TxKind, TxOutput, TxSignature,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

fn hash() -> impl Strategy<Value = Hash32> {
    any::<[u8; 32]>().prop_map(Hash32)
}

fn key() -> impl Strategy<Value = PublicKey> {
    any::<[u8; 32]>().prop_map(PublicKey)
}

fn output() -> impl Strategy<Value = TxOutput> {
    (
        any::<u64>(),
        prop_oneof![Just(AssetId::CAS), hash().prop_map(AssetId)],
        key(),
        any::<Option<u64>>(),
    )
        .prop_map(|(amount, asset, owner, unlock_height)| TxOutput {
            amount,
            asset,
            owner,
            unlock_height,
        })
}

fn kind() -> impl Strategy<Value = TxKind> {
    prop_oneof![
        4 => Just(TxKind::Transfer),
        1 => (any::<u32>(), vec((key(), any::<u64>()), 0..4), any::<(u64, u64, u32)>(), any::<(u64, u32, u64, u64, u64, u32)>()).prop_map(|(part, members, p, s)| {
            TxKind::Genesis {
                part,
                committee: members.into_iter().map(|(key, stake)| CommitteeMember { key, stake }).collect(),
                params: Box::new(ChainParams {
                    min_fee: p.0,
                    block_interval_ms: p.1,
                    witness_span: p.2,
                    stake: StakeParams {
                        epoch_blocks: s.0,
                        committee_size: s.1,
                        candidacy_stake_min: s.2,
                        unbond_delay_blocks: s.3,
                        block_reward: s.4,
                        committee_share_percent: s.5,
                        absence_limit: p.2,
                        blacklist_blocks: s.3 / 2,
                        evict_after: s.1 / 2,
                    },
                    matching_fee_bps: p.2 / 3,
                    governance: GovernanceParams {
                        window_blocks_min: s.4 / 5,
                        quorum_bps_min: s.5 / 7,
                        approval_bps_min: p.2 / 11,
                    },
                }),
            }
        }),
        1 => (any::<u64>(), vec(vec(any::<u8>(), 0..64), 0..4), option::of(vec(key(), 0..4))).prop_map(|(height, evidence, absent)| {
            TxKind::Issuance { height, evidence, absent }
        }),
        1 => key().prop_map(|candidate| TxKind::Bond { candidate }),
        1 => key().prop_map(|candidate| TxKind::Unbond { candidate }),
        1 => vec(any::<u8>(), 0..19).prop_map(|address| TxKind::Candidacy { address }),
        1 => vec(any::<u8>(), 0..=cas_engine::evidence::EQUIVOCATION_PROOF_BYTES).prop_map(|proof| TxKind::Equivocation { proof }),
        1 => token_kind(),
    ]
}

/// A token transaction's kind: names and symbols of every length the codec takes, the other kinds as fixtures.
fn token_kind() -> impl Strategy<Value = TxKind> {
    use cas_engine::token::{NAME_BYTES_MAX, SYMBOL_BYTES_MAX};
    let fixtures = cas_engine::fixtures::token_kinds();
    (
        0..fixtures.len(),
        "[a-zA-Z ]{0,32}",
        "[A-Z0-9]{0,12}",
        any::<(u64, u64, u8)>(),
    )
        .prop_map(move |(pick, name, symbol, (nonce, max_supply, decimals))| {
            let mut kind = fixtures[pick].clone();
            if let TxKind::TokenIssue { spec } = &mut kind {
                assert!(name.len() <= NAME_BYTES_MAX && symbol.len() <= SYMBOL_BYTES_MAX);
                spec.name = name;
                spec.symbol = symbol;
                spec.nonce = nonce;
                spec.max_supply = max_supply;
                spec.decimals = decimals;
            }
            kind
        })
}

fn transaction() -> impl Strategy<Value = Transaction> {
    let body = (
        any::<(u32, u32, u64)>(),
        kind(),
        vec(
            (hash(), any::<u32>()).prop_map(|(tx, index)| OutPoint { tx, index }),
            0..6,
        ),
        vec(output(), 0..6),
        vec(any::<u8>(), 0..=MEMO_BYTES_MAX),
        any::<Option<u64>>(),
    )
        .prop_map(
            |((chain_id, vn, fee), kind, inputs, outputs, memo, client_id)| TxBody {
                chain_id,
                vn,
                kind,
                inputs,
                outputs,
                fee,
                memo,
                client_id,
            },
        );
    let signature = (key(), any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(key, r, s)| {
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(&r);
        signature[32..].copy_from_slice(&s);
        TxSignature {
            key,
            signature: Signature(signature),
        }
    });
    (body, vec(signature, 0..4)).prop_map(|(body, signatures)| Transaction { body, signatures })
}

fn block() -> impl Strategy<Value = Block> {
    let header = (
        any::<(u32, u64, u64, u64)>(),
        hash(),
        (hash(), hash()),
        key(),
        hash(),
    )
        .prop_map(
            |(
                (chain_id, height, round, timestamp_ms),
                parent,
                (tx_root, sig_root),
                proposer,
                utxo_commitment,
            )| {
                BlockHeader {
                    chain_id,
                    height,
                    round,
                    parent,
                    tx_root,
                    sig_root,
                    proposer,
                    timestamp_ms,
                    utxo_commitment,
                }
            },
        );
    (header, vec(transaction(), 0..8)).prop_map(|(header, txs)| Block { header, txs })
}

/// Whatever the decoder accepts respects the bounds and survives a round trip unchanged.
fn accepted_tx_is_sound(bytes: &[u8]) {
    if let Ok(tx) = decode_tx(bytes) {
        assert!(tx.body.inputs.len() <= INPUTS_MAX && tx.body.outputs.len() <= OUTPUTS_MAX);
        assert!(tx.signatures.len() <= SIGNATURES_MAX && tx.body.memo.len() <= MEMO_BYTES_MAX);
        let owned = to_owned_tx(tx);
        assert_eq!(owned.tx_id(), tx.tx_id());
        let again = encode_tx(&owned);
        assert_eq!(to_owned_tx(decode_tx(&again).unwrap()), owned);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn transaction_round_trips(tx in transaction()) {
        let bytes = encode_tx(&tx);
        let archived = decode_tx(&bytes).unwrap();
        prop_assert_eq!(archived.tx_id(), tx.tx_id());
        prop_assert_eq!(to_owned_tx(archived), tx);
    }

    /// The computed length is the archived one, alone and inside a block: what bounds a block's bytes before it
    /// is built (consensus sums it over the certified packages).
    #[test]
    fn encoded_lengths_are_computed_exactly(block in block()) {
        let mut sum = 0;
        for tx in &block.txs {
            prop_assert_eq!(encoded_tx_len(tx), encode_tx(tx).len());
            sum += encoded_tx_len(tx);
        }
        prop_assert_eq!(encoded_block_len(sum), encode_block(&block).len());
    }

    #[test]
    fn block_round_trips(block in block()) {
        let bytes = encode_block(&block);
        let archived = decode_block(&bytes).unwrap();
        prop_assert_eq!(archived.header.hash(), block.header.hash());
        prop_assert_eq!(archived.compute_tx_root(), block.compute_tx_root());
        prop_assert_eq!(archived.compute_sig_root(), block.compute_sig_root());
        prop_assert_eq!(to_owned_block(archived), block);
    }

    /// The signatures root is its format hashed piece by piece: per transaction the count, then each key and
    /// signature (the implementation gathers the bytes and hashes them in one call).
    #[test]
    fn signatures_root_is_its_format(block in block()) {
        let mut h = blake3::Hasher::new_derive_key(cas_engine::id::domain::SIGNATURES_ROOT);
        for tx in &block.txs {
            h.update(&(tx.signatures.len() as u64).to_le_bytes());
            for signed in &tx.signatures {
                h.update(&signed.key.0);
                h.update(&signed.signature.0);
            }
        }
        prop_assert_eq!(block.compute_sig_root().0, *h.finalize().as_bytes());
    }

    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..2_048)) {
        accepted_tx_is_sound(&bytes);
        if let Ok(block) = decode_block(&bytes) {
            let _ = to_owned_block(block);
        }
    }

    #[test]
    fn mutated_transactions_never_panic(
        tx in transaction(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = encode_tx(&tx).to_vec();
        for (at, value) in flips {
            let at = at.index(bytes.len());
            bytes[at] ^= value | 1;
        }
        accepted_tx_is_sound(&bytes);
        // Truncations are rejected: the root object sits at the end of an archive.
        let cut = cut.index(bytes.len());
        accepted_tx_is_sound(&bytes[..cut]);
    }

    #[test]
    fn mutated_blocks_never_panic(
        block in block(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = encode_block(&block).to_vec();
        for (at, value) in flips {
            let at = at.index(bytes.len());
            bytes[at] ^= value | 1;
        }
        if let Ok(archived) = decode_block(&bytes) {
            let owned = to_owned_block(archived);
            prop_assert_eq!(to_owned_block(decode_block(&encode_block(&owned)).unwrap()), owned);
        }
    }
}

#[test]
fn oversize_and_over_count_inputs_are_typed_errors() {
    let big = vec![0u8; TX_BYTES_MAX + 1];
    assert_eq!(
        decode_tx(&big).unwrap_err(),
        DecodeError::TooLarge {
            len: TX_BYTES_MAX + 1,
            max: TX_BYTES_MAX
        }
    );
    let too_many = Transaction {
        body: TxBody {
            chain_id: 1,
            vn: 0,
            kind: TxKind::Transfer,
            inputs: vec![
                OutPoint {
                    tx: Hash32::ZERO,
                    index: 0
                };
                INPUTS_MAX + 1
            ],
            outputs: vec![],
            fee: 0,
            memo: vec![],
            client_id: None,
        },
        signatures: vec![],
    };
    assert_eq!(
        decode_tx(&encode_tx(&too_many)).unwrap_err(),
        DecodeError::TooMany {
            what: "inputs",
            count: INPUTS_MAX + 1,
            max: INPUTS_MAX
        }
    );
    let long_memo = Transaction {
        body: TxBody {
            memo: vec![7; MEMO_BYTES_MAX + 1],
            inputs: vec![],
            ..too_many.body.clone()
        },
        signatures: vec![],
    };
    assert!(matches!(
        decode_tx(&encode_tx(&long_memo)),
        Err(DecodeError::TooMany {
            what: "memo bytes",
            ..
        })
    ));
    let block = Block {
        header: BlockHeader {
            chain_id: 1,
            height: 1,
            round: 1,
            parent: Hash32::ZERO,
            tx_root: Hash32::ZERO,
            sig_root: Hash32::ZERO,
            proposer: PublicKey::default(),
            timestamp_ms: 0,
            utxo_commitment: Hash32::ZERO,
        },
        txs: vec![long_memo.clone(), too_many],
    };
    assert!(matches!(
        decode_block(&encode_block(&block)),
        Err(DecodeError::InBlock { index: 0, .. })
    ));
    assert!(matches!(decode_tx(&[]), Err(DecodeError::Malformed { .. })));
}

#[test]
fn tx_id_ignores_signatures_and_covers_every_body_field() {
    let base = Transaction {
        body: TxBody {
            chain_id: 1,
            vn: 2,
            kind: TxKind::Transfer,
            inputs: vec![OutPoint {
                tx: Hash32([1; 32]),
                index: 3,
            }],
            outputs: vec![TxOutput {
                amount: 5,
                asset: AssetId::CAS,
                owner: PublicKey([2; 32]),
                unlock_height: None,
            }],
            fee: 1,
            memo: vec![],
            client_id: None,
        },
        signatures: vec![],
    };
    let id = base.tx_id();
    let mut signed = base.clone();
    signed.signatures.push(TxSignature {
        key: PublicKey([3; 32]),
        signature: Signature([4; 64]),
    });
    assert_eq!(signed.tx_id(), id);
    let variants: [fn(&mut TxBody); 8] = [
        |b| b.chain_id += 1,
        |b| b.vn += 1,
        |b| b.inputs[0].index += 1,
        |b| b.outputs[0].amount += 1,
        |b| b.outputs[0].unlock_height = Some(0),
        |b| b.fee += 1,
        |b| b.memo.push(0),
        |b| b.client_id = Some(0),
    ];
    for change in variants {
        let mut other = base.clone();
        change(&mut other.body);
        assert_ne!(other.tx_id(), id);
    }
}

#[test]
fn issuance_evidence_and_outputs_are_bounded_by_the_decoder() {
    let issuance = |evidence: Vec<Vec<u8>>, outputs: usize| Transaction {
        body: TxBody {
            chain_id: 1,
            vn: 0,
            kind: TxKind::Issuance {
                height: 4,
                evidence,
                absent: Some(vec![PublicKey([2; 32]); COMMITTEE_MAX]),
            },
            inputs: Vec::new(),
            outputs: vec![
                TxOutput {
                    amount: 1,
                    asset: AssetId::CAS,
                    owner: PublicKey([1; 32]),
                    unlock_height: None,
                };
                outputs
            ],
            fee: 0,
            memo: Vec::new(),
            client_id: None,
        },
        signatures: Vec::new(),
    };
    let refused = |tx: &Transaction| decode_tx(&encode_tx(tx)).err();
    // At every bound: accepted, and the largest issuance still fits one transaction.
    let full = issuance(
        vec![vec![7; ISSUANCE_EVIDENCE_BYTES_MAX / ISSUANCE_EVIDENCE_MAX]; ISSUANCE_EVIDENCE_MAX],
        ISSUANCE_OUTPUTS_MAX,
    );
    assert_eq!(refused(&full), None);
    assert_eq!(
        refused(&issuance(vec![Vec::new(); ISSUANCE_EVIDENCE_MAX + 1], 1)),
        Some(DecodeError::TooMany {
            what: "issuance evidence items",
            count: ISSUANCE_EVIDENCE_MAX + 1,
            max: ISSUANCE_EVIDENCE_MAX
        })
    );
    assert_eq!(
        refused(&issuance(vec![vec![7; ISSUANCE_EVIDENCE_BYTES_MAX + 1]], 1)),
        Some(DecodeError::TooMany {
            what: "issuance evidence bytes",
            count: ISSUANCE_EVIDENCE_BYTES_MAX + 1,
            max: ISSUANCE_EVIDENCE_BYTES_MAX
        })
    );
    assert_eq!(
        refused(&issuance(Vec::new(), ISSUANCE_OUTPUTS_MAX + 1)),
        Some(DecodeError::TooMany {
            what: "issuance outputs",
            count: ISSUANCE_OUTPUTS_MAX + 1,
            max: ISSUANCE_OUTPUTS_MAX
        })
    );
    let mut crowded = issuance(Vec::new(), 1);
    if let TxKind::Issuance { absent, .. } = &mut crowded.body.kind {
        *absent = Some(vec![PublicKey([2; 32]); COMMITTEE_MAX + 1]);
    }
    assert_eq!(
        refused(&crowded),
        Some(DecodeError::TooMany {
            what: "issuance absent members",
            count: COMMITTEE_MAX + 1,
            max: COMMITTEE_MAX
        })
    );
}

/// Issue 16: in release builds rancor's plain `Error` answered every malformed input with "failed without error
/// information; enable debug assertions and the `alloc` feature in rancor" (the workspace builds rancor without
/// debug assertions in every profile, so this test sees what operators see). The decoder now says what failed,
/// within a bound.
#[test]
fn malformed_bytes_say_what_failed_within_a_bound() {
    let useless = ["without error information", "enable debug assertions"];
    let mut garbage = vec![0xab_u8; 200];
    garbage[..4].copy_from_slice(&0u32.to_le_bytes());
    for (what, error) in [
        ("garbage tx", decode_tx(&garbage).unwrap_err().to_string()),
        ("empty tx", decode_tx(&[]).unwrap_err().to_string()),
        (
            "garbage block",
            decode_block(&[0x5a; 300]).unwrap_err().to_string(),
        ),
        (
            "garbage answer",
            cas_engine::client::ClientAnswer::decode(&[0xcd; 64]).unwrap_err(),
        ),
    ] {
        assert!(
            useless.iter().all(|text| !error.contains(text)),
            "{what}: {error}"
        );
        assert!(error.len() > "malformed bytes: ".len(), "{what}: {error:?}");
        assert!(
            error.len() <= cas_engine::text::REASON_BYTES_MAX + 64,
            "{what}: {} bytes",
            error.len()
        );
    }
}
