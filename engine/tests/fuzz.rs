//! Fuzz targets (issue 16), proptest-driven so they run on stable in every `cargo test`: the engine's untrusted
//! inputs that tests/codec.rs does not already cover, the client answer decoder (what a wallet or `cas load` reads
//! from a node) and the genesis spec (TOML from an operator, then `genesis_block`). Random and mutated inputs never
//! panic; whatever is accepted respects its bounds and round-trips. (Transactions and blocks: tests/codec.rs.)
//!
//! Cases per property: `CAS_FUZZ_CASES` (default small, for CI); the long run is in the README's test section.

use cas_engine::client::{ClientAnswer, ANSWER_BYTES_MAX, REASON_BYTES_MAX};
use cas_engine::codec::{decode_block, encode_block, to_owned_block};
use cas_engine::genesis::{
    genesis_block, genesis_committee, genesis_outputs, GenesisSpec, GENESIS_OUTPUTS_MAX,
    WITNESS_SPAN_MAX,
};
use cas_engine::{Hash32, Keypair};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

fn config(default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("CAS_FUZZ_CASES")
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(default),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn answers() -> Vec<ClientAnswer> {
    vec![
        ClientAnswer::Accepted {
            tx: Hash32([1; 32]),
        },
        ClientAnswer::Duplicate {
            tx: Hash32([2; 32]),
        },
        ClientAnswer::Rejected {
            tx: Some(Hash32([3; 32])),
            code: 7,
            reason: ClientAnswer::reason("double spend of an input"),
        },
        ClientAnswer::Rejected {
            tx: None,
            code: 1,
            reason: ClientAnswer::reason("x".repeat(REASON_BYTES_MAX + 40)),
        },
        ClientAnswer::Overloaded {
            tx: Hash32([4; 32]),
            retry_after_ms: 100,
        },
        ClientAnswer::Final {
            tx: Hash32([5; 32]),
            height: 9,
            index: 3,
            block: Hash32([6; 32]),
            rejection: Some(cas_engine::client::RuleFailure {
                code: cas_engine::RejectCode::FeeTooLow.number(),
                reason: "fee below the minimum".into(),
            }),
        },
        ClientAnswer::Final {
            tx: Hash32([5; 32]),
            height: u64::MAX,
            index: u32::MAX,
            block: Hash32([6; 32]),
            rejection: None,
        },
    ]
}

fn answer_is_sound(bytes: &[u8]) {
    if let Ok(answer) = ClientAnswer::decode(bytes) {
        assert!(bytes.len() <= ANSWER_BYTES_MAX);
        assert_eq!(ClientAnswer::decode(&answer.encode()).unwrap(), answer);
    }
}

fn mutate(mut bytes: Vec<u8>, flips: &[(Index, u8)], cut: Option<Index>, tail: &[u8]) -> Vec<u8> {
    if !bytes.is_empty() {
        for (at, value) in flips {
            let at = at.index(bytes.len());
            bytes[at] ^= value | 1;
        }
    }
    if let Some(cut) = cut {
        bytes.truncate(cut.index(bytes.len() + 1));
    }
    bytes.extend_from_slice(tail);
    bytes
}

fn mutation() -> impl Strategy<Value = (Vec<(Index, u8)>, Option<Index>, Vec<u8>)> {
    (
        vec((any::<Index>(), any::<u8>()), 0..6),
        proptest::option::weighted(0.2, any::<Index>()),
        prop_oneof![4 => Just(Vec::new()), 1 => vec(any::<u8>(), 1..48)],
    )
}

fn key_hex(seed: u8) -> String {
    Keypair::from_seed(&[seed; 32]).public().to_hex()
}

/// A valid spec that uses every field.
fn spec_text() -> String {
    format!(
        "chain_id = 7\ntimestamp_ms = 1700000000000\n\n[params]\nmin_fee = 1\nblock_interval_ms = 500\n\
         witness_span = 16\n\n[[committee]]\nkey = \"{}\"\nstake = 10\n\n[[committee]]\nkey = \"{}\"\nstake = 20\n\n\
         [[allocations]]\nowner = \"{}\"\namount = 1000\noutputs = 3\n\n[[allocations]]\nowner = \"{}\"\n\
         amount = 5\nasset = \"{}\"\n",
        key_hex(1),
        key_hex(2),
        key_hex(3),
        key_hex(4),
        Hash32([9; 32]).to_hex(),
    )
}

/// Whatever genesis a spec yields is a block every node's decoder takes, with its committee in it.
fn genesis_is_sound(text: &str) {
    let Ok(spec) = GenesisSpec::from_toml(text) else {
        return;
    };
    let Ok(block) = genesis_block(&spec) else {
        return;
    };
    assert_eq!(block.header.height, 0);
    assert_eq!(block.header.tx_root, block.compute_tx_root());
    let (committee, params) = genesis_committee(&block).expect("a genesis carries its committee");
    assert_eq!(committee.len(), spec.committee.len());
    assert!(params.witness_span >= 1 && params.witness_span <= WITNESS_SPAN_MAX);
    let outputs = genesis_outputs(&block.txs);
    assert!(outputs.len() as u64 <= GENESIS_OUTPUTS_MAX);
    let bytes = encode_block(&block);
    let decoded = decode_block(&bytes).expect("a genesis fits the block decoder");
    assert_eq!(to_owned_block(decoded), block);
}

/// Text edits that keep a TOML file's shape often (digits, quotes, brackets, signs, newlines) or break it.
fn text_edit() -> impl Strategy<Value = (Index, u8, u8)> {
    let replacement = prop_oneof![
        Just(b'0'),
        Just(b'9'),
        Just(b'-'),
        Just(b'"'),
        Just(b'['),
        Just(b']'),
        Just(b'\n'),
        Just(b'='),
        Just(b'f'),
        any::<u8>(),
    ];
    // 0: replace, 1: insert, 2: delete.
    (any::<Index>(), 0u8..3, replacement)
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn fuzz_client_answer_random_bytes(bytes in vec(any::<u8>(), 0..512)) {
        answer_is_sound(&bytes);
    }

    #[test]
    fn fuzz_client_answer_mutated(which in any::<Index>(), (flips, cut, tail) in mutation()) {
        let answers = answers();
        let sample = answers[which.index(answers.len())].encode();
        answer_is_sound(&mutate(sample, &flips, cut, &tail));
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn fuzz_genesis_spec_random_text(text in "\\PC{0,300}") {
        genesis_is_sound(&text);
    }

    /// The valid spec, edited a few characters at a time: numbers overflow, keys lose a digit, tables break.
    #[test]
    fn fuzz_genesis_spec_mutated(edits in vec(text_edit(), 1..5)) {
        let mut bytes = spec_text().into_bytes();
        for (at, kind, byte) in edits {
            let at = at.index(bytes.len());
            match kind {
                0 => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ => {
                    bytes.remove(at);
                }
            }
        }
        genesis_is_sound(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn fuzz_genesis_sample_is_valid() {
    let spec = GenesisSpec::from_toml(&spec_text()).unwrap();
    let block = genesis_block(&spec).unwrap();
    assert_eq!(genesis_outputs(&block.txs).len(), 4);
    genesis_is_sound(&spec_text());
}
