//! The sharded ledger gives the same verdicts and UTXO commitments as `MemoryLedger`, whatever the shard count,
//! on random blocks with double spends, missing inputs, bad signatures, stake transactions and chains inside a
//! block, token issues, fills and orders taken back, and CIP proposals and votes; its stake and governance
//! registries are the reference's (and rebuild from the set), and its balance index agrees with a scan of the
//! reference set.

mod common;

use std::collections::HashMap;
use std::sync::Mutex;

use cas_engine::{AssetId, PublicKey};
use cas_shards::{LedgerConfig, ShardedLedger};
use proptest::prelude::*;

/// Tests in this file start executors; one at a time keeps the locked-memory and CPU budget small.
static SERIAL: Mutex<()> = Mutex::new(());

fn config(shards: usize) -> LedgerConfig {
    LedgerConfig {
        shards,
        pin_cores: false,
        ..LedgerConfig::default()
    }
}

/// One shard, run on the caller's thread (as a node's executor runs it).
fn on_caller_thread() -> LedgerConfig {
    LedgerConfig {
        on_caller_thread: true,
        ..config(1)
    }
}

fn check_chain(seed: u64, blocks: usize, txs_per_block: usize) {
    let chain = common::chain(seed, blocks, txs_per_block);
    let rejected: usize = chain
        .verdicts
        .iter()
        .flatten()
        .filter(|v| v.is_err())
        .count();
    // About three transactions in ten are generated invalid, so a chain of 60 or more without a rejection (odds
    // near 0.7^60) means the generator broke; a shorter one may honestly have none.
    assert!(
        rejected > 0 || blocks * txs_per_block < 60,
        "the chain exercises rejections"
    );
    let configs = [
        ("1", config(1)),
        ("2", config(2)),
        ("4", config(4)),
        ("1 on the caller's thread", on_caller_thread()),
    ];
    for (shards, config) in configs {
        let mut ledger = ShardedLedger::from_genesis(&chain.genesis, &config).unwrap();
        assert_eq!(ledger.commitment(), chain.commitments[0]);
        // Two blocks in flight, as the node runs them.
        let mut pending = std::collections::VecDeque::new();
        let mut outcomes = Vec::new();
        for bytes in &chain.blocks {
            pending.push_back(ledger.begin(bytes.clone()).unwrap());
            if pending.len() == 2 {
                outcomes.push(ledger.finish(pending.pop_front().unwrap()).unwrap());
            }
        }
        while let Some(p) = pending.pop_front() {
            outcomes.push(ledger.finish(p).unwrap());
        }
        for (index, outcome) in outcomes.iter().enumerate() {
            assert_eq!(outcome.height, index as u64 + 1);
            assert_eq!(
                outcome.verdicts,
                chain.verdicts[index],
                "seed {seed} shards {shards} height {}",
                index + 1
            );
            assert_eq!(
                outcome.utxo_commitment,
                chain.commitments[index + 1],
                "seed {seed} shards {shards}"
            );
        }
        let mut expected: Vec<_> = chain
            .reference
            .utxos()
            .iter()
            .map(|(o, c)| (*o, *c))
            .collect();
        expected.sort_unstable_by_key(|(o, _)| *o);
        assert_eq!(ledger.dump().unwrap(), expected);
        assert_eq!(
            ledger.stake(),
            chain.reference.stake(),
            "seed {seed} shards {shards}"
        );
        let proposals = |g: &cas_engine::governance::Governance| g.all().collect::<Vec<_>>();
        assert_eq!(
            proposals(ledger.governance()),
            proposals(chain.reference.governance()),
            "seed {seed} shards {shards}"
        );
        check_balances(&ledger, &chain.reference);
    }
    // The conduct the blocks wrote is the set's (a restart or a snapshot rebuilds the same registry), and a long
    // enough chain blacklisted a member: the issuances name each absent one time in two and two in a row blacklist.
    let set: Vec<_> = chain
        .reference
        .utxos()
        .iter()
        .map(|(o, c)| (*o, *c))
        .collect();
    assert_eq!(
        &cas_engine::stake::StakeRegistry::from_entries(&set),
        chain.reference.stake()
    );
    // So is every proposal, its ballots, votes and resolution.
    let mut rebuilt = cas_engine::governance::Governance::default();
    rebuilt.apply(&[], &set);
    assert!(rebuilt.all().eq(chain.reference.governance().all()));
    if blocks >= 12 {
        assert!(
            chain
                .reference
                .stake()
                .conducts()
                .any(|(_, c)| c.blacklists > 0),
            "seed {seed}: no member blacklisted in {blocks} blocks"
        );
    }
}

fn check_balances(ledger: &ShardedLedger, reference: &cas_engine::MemoryLedger) {
    let mut balances: HashMap<(PublicKey, AssetId), u128> = HashMap::new();
    let mut outputs: HashMap<PublicKey, Vec<_>> = HashMap::new();
    for (outpoint, coin) in reference.utxos() {
        *balances.entry((coin.owner, coin.asset)).or_default() += u128::from(coin.amount);
        outputs
            .entry(coin.owner)
            .or_default()
            .push((*outpoint, *coin));
    }
    for ((owner, asset), balance) in &balances {
        assert_eq!(ledger.balance(owner, asset).unwrap(), *balance);
    }
    for owner in outputs.keys() {
        let mut expected = outputs[owner].clone();
        expected.sort_unstable_by_key(|(o, _)| *o);
        assert_eq!(&ledger.outputs_of(owner).unwrap(), &expected);
    }
    let stranger = PublicKey([9; 32]);
    assert_eq!(ledger.balance(&stranger, &AssetId::CAS).unwrap(), 0);
    assert!(ledger.outputs_of(&stranger).unwrap().is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn shard_count_never_changes_verdicts_or_commitments(
        seed in any::<u64>(),
        blocks in 1usize..5,
        txs_per_block in 1usize..60,
    ) {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        check_chain(seed, blocks, txs_per_block);
    }
}

/// Forty blocks whose issuances name members absent at random: conduct records are written, replaced and dropped,
/// members are blacklisted and evicted, and elections leave the evicted out, the same on every shard count.
#[test]
fn conduct_records_and_elections_agree_over_a_long_chain() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    check_chain(11, 40, 4);
    let chain = common::chain(11, 40, 4);
    let evicted = chain
        .reference
        .stake()
        .conducts()
        .filter(|(_, c)| c.evicted)
        .count();
    assert!(evicted > 0, "no member evicted in 40 blocks");
}

/// The generator's chains do what the equivalence is checked on: tokens issued and orders filled, and some of each
/// refused (a repeated nonce, a fill past the escrow); proposals opened and votes counted, and some votes refused (a
/// second vote, a closed window); VNs registered and their payments endorsed enough or not. Over a few long chains
/// (one alone may miss a case: the mix is random).
#[test]
fn the_random_chains_exercise_every_business_kind_accepted_and_refused() {
    let mut kinds: HashMap<(&str, bool), usize> = HashMap::new();
    let chains = (11..=14).map(|seed| common::chain(seed, 40, 4));
    let blocks = chains.flat_map(|chain| chain.blocks.into_iter().zip(chain.verdicts));
    for (bytes, verdicts) in blocks {
        let block = cas_engine::codec::decode_block(&bytes).unwrap();
        for (tx, verdict) in block.txs.iter().zip(&verdicts) {
            let kind = match tx.body.kind {
                cas_engine::tx::ArchivedTxKind::TokenIssue { .. } => "issue",
                cas_engine::tx::ArchivedTxKind::Fill { .. } => "fill",
                cas_engine::tx::ArchivedTxKind::Propose { .. } => "propose",
                cas_engine::tx::ArchivedTxKind::Vote { .. } => "vote",
                cas_engine::tx::ArchivedTxKind::VnRegister { .. } => "vn register",
                cas_engine::tx::ArchivedTxKind::Transfer if tx.body.vn != 0 => "vn transfer",
                _ => continue,
            };
            *kinds.entry((kind, verdict.is_ok())).or_default() += 1;
        }
    }
    for key in [
        ("issue", true),
        ("issue", false),
        ("fill", true),
        ("fill", false),
        ("propose", true),
        ("vote", true),
        ("vote", false),
        ("vn register", true),
        ("vn transfer", true),
        ("vn transfer", false),
    ] {
        assert!(
            kinds.contains_key(&key),
            "{key:?} never happened: {kinds:?}"
        );
    }
}

#[test]
fn blocks_larger_than_one_signature_job_split_over_shards() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // 1,500 transactions: two signature jobs per block, landing on different shards; three blocks, so stake bonded
    // in one is unbonded in a later one.
    check_chain(42, 3, 1500);
    let chain = common::chain(42, 3, 1500);
    let errors: Vec<_> = chain
        .verdicts
        .iter()
        .flatten()
        .filter_map(|v| v.clone().err())
        .collect();
    for kind in [
        "DoubleSpend",
        "MissingInput",
        "BadSignature",
        "AlreadyCandidate",
        "NotACandidate",
        "UnbondNotLocked",
    ] {
        assert!(
            errors.iter().any(|e| format!("{e:?}").starts_with(kind)),
            "no {kind} in the chain"
        );
    }
    // Stake transactions were accepted too: candidates hold stake, and one was unbonded into locked CAS.
    let stake = chain.reference.stake();
    assert!(stake.candidates().filter(|c| c.stake > 0).count() >= 2);
    let unbonded = chain
        .reference
        .utxos()
        .values()
        .any(|c| c.unlock_height.is_some());
    assert!(unbonded, "no unbond was accepted");
}

#[test]
fn a_block_out_of_height_order_is_refused() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let chain = common::chain(3, 2, 5);
    let mut ledger = ShardedLedger::from_genesis(&chain.genesis, &config(2)).unwrap();
    let pending = ledger.begin(chain.blocks[1].clone()).unwrap();
    let error = ledger.finish(pending).unwrap_err();
    assert!(
        matches!(
            error,
            cas_shards::Error::HeightOutOfOrder {
                expected: 1,
                got: 2
            }
        ),
        "{error}"
    );
    let garbage = ledger
        .begin(vec![1, 2, 3])
        .err()
        .expect("garbage is rejected");
    assert!(matches!(garbage, cas_shards::Error::Decode(_)), "{garbage}");
    // The ledger is unchanged and still applies the right block.
    assert_eq!(ledger.commitment(), chain.commitments[0]);
    let outcome = ledger.apply_block(chain.blocks[0].clone()).unwrap();
    assert_eq!(outcome.utxo_commitment, chain.commitments[1]);
}

/// Attested blocks begun with their ids given (a node's executor) apply exactly as those whose ids the shards
/// compute; a wrong number of ids is refused before anything changes.
#[test]
fn attested_blocks_with_given_ids_apply_as_with_computed_ones() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let chain = common::chain(11, 12, 30);
    let mut computed = ShardedLedger::from_genesis(&chain.genesis, &config(2)).unwrap();
    let mut given = ShardedLedger::from_genesis(&chain.genesis, &config(2)).unwrap();
    for bytes in &chain.blocks {
        let ids: Vec<cas_engine::TxId> = cas_engine::codec::decode_block(bytes)
            .unwrap()
            .txs
            .iter()
            .map(|tx| tx.tx_id())
            .collect();
        let short = ids[..ids.len() - 1].to_vec();
        let error = given
            .begin_attested_with_ids(bytes.clone(), short)
            .err()
            .expect("a wrong id count is refused");
        assert!(
            matches!(error, cas_shards::Error::IdCountMismatch { ids, txs } if ids + 1 == txs),
            "{error}"
        );
        let expected = computed
            .finish(computed.begin_attested(bytes.clone()).unwrap())
            .unwrap();
        let outcome = given
            .finish(given.begin_attested_with_ids(bytes.clone(), ids).unwrap())
            .unwrap();
        assert_eq!(outcome, expected);
    }
    assert_eq!(given.dump().unwrap(), computed.dump().unwrap());
}

#[test]
fn too_many_shards_is_a_typed_error() {
    let chain = common::chain(1, 0, 1);
    let error = ShardedLedger::from_genesis(&chain.genesis, &config(0))
        .err()
        .unwrap();
    assert!(matches!(
        error,
        cas_shards::Error::ShardCount { count: 0, .. }
    ));
    let two_on_the_caller = LedgerConfig {
        shards: 2,
        ..on_caller_thread()
    };
    let error = ShardedLedger::from_genesis(&chain.genesis, &two_on_the_caller)
        .err()
        .unwrap();
    assert!(matches!(
        error,
        cas_shards::Error::CallerThreadShards { count: 2 }
    ));
}
