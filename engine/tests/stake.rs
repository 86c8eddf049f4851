//! Stake and candidacy through the in-memory ledger: a candidacy with its self-bond, delegation, unbonding into
//! locked CAS, moving a stake position, and every refusal with its code. After every block the registry kept from
//! the blocks' changes equals the one read from the whole set, and CAS (fee pots included) plus stake stays the
//! genesis supply.

use cas_engine::codec::{decode_tx, encode_tx};
use cas_engine::fixtures::{funded_genesis, key, ACCOUNT_KEYS, COMMITTEE_KEYS};
use cas_engine::genesis::{genesis_outputs, DEFAULT_UNBOND_DELAY_BLOCKS};
use cas_engine::stake::{encode_address, StakeRegistry};
use cas_engine::{
    AssetId, Keypair, MemoryLedger, OutPoint, RejectCode, Transaction, TxBody, TxError, TxKind,
    TxOutput,
};
use rkyv::util::AlignedVec;

const CHAIN: u32 = 7;
const AMOUNT: u64 = 1_000;
const ACCOUNTS: u32 = 5;

struct Chain {
    ledger: MemoryLedger,
    /// Account i's genesis coins.
    coins: Vec<Vec<(OutPoint, TxOutput)>>,
    supply: u64,
}

impl Chain {
    fn new() -> Chain {
        let genesis = funded_genesis(CHAIN, 4, ACCOUNTS, 2, AMOUNT);
        let ledger = MemoryLedger::from_genesis(&genesis).unwrap();
        let mut coins = vec![Vec::new(); ACCOUNTS as usize];
        for (outpoint, coin) in genesis_outputs(&genesis.txs) {
            let owner = (0..ACCOUNTS)
                .position(|i| account(i).public() == coin.owner)
                .unwrap();
            coins[owner].push((outpoint, coin));
        }
        Chain {
            ledger,
            coins,
            supply: u64::from(ACCOUNTS) * 2 * AMOUNT,
        }
    }

    /// Applies `txs` as the next block, checks the registry and the supply, and returns the verdicts.
    fn block(&mut self, txs: &[Transaction]) -> Vec<Result<(), TxError>> {
        let encoded: Vec<AlignedVec> = txs.iter().map(encode_tx).collect();
        let archived: Vec<_> = encoded.iter().map(|b| decode_tx(b).unwrap()).collect();
        let height = self.ledger.height + 1;
        let verdicts = self.ledger.apply(&archived, height);
        let set: Vec<(OutPoint, TxOutput)> =
            self.ledger.utxos().iter().map(|(o, c)| (*o, *c)).collect();
        assert_eq!(
            self.ledger.stake(),
            &StakeRegistry::from_entries(&set),
            "the registry kept block by block is the set's"
        );
        let held: u64 = set
            .iter()
            .filter(|(_, c)| c.asset == AssetId::CAS || self.is_stake(&c.asset))
            .map(|(_, c)| c.amount)
            .sum();
        assert_eq!(held, self.supply, "CAS (fee pots included) + stake");
        verdicts
    }

    fn is_stake(&self, asset: &AssetId) -> bool {
        (0..ACCOUNTS).any(|i| *asset == AssetId::stake_of(&account(i).public()))
    }

    fn stake_of(&self, candidate: u32) -> u64 {
        self.ledger
            .stake()
            .candidate(&account(candidate).public())
            .map_or(0, |c| c.stake)
    }
}

fn account(i: u32) -> Keypair {
    key(ACCOUNT_KEYS, i)
}

fn output(owner: &Keypair, amount: u64, asset: AssetId, unlock_height: Option<u64>) -> TxOutput {
    TxOutput {
        amount,
        asset,
        owner: owner.public(),
        unlock_height,
    }
}

fn stake(owner: &Keypair, candidate: u32, amount: u64) -> TxOutput {
    output(
        owner,
        amount,
        AssetId::stake_of(&account(candidate).public()),
        None,
    )
}

fn cas(owner: &Keypair, amount: u64) -> TxOutput {
    output(owner, amount, AssetId::CAS, None)
}

fn tx(kind: TxKind, inputs: &[OutPoint], outputs: Vec<TxOutput>, signer: &Keypair) -> Transaction {
    TxBody {
        chain_id: CHAIN,
        vn: 0,
        kind,
        inputs: inputs.to_vec(),
        outputs,
        fee: 1,
        memo: Vec::new(),
        client_id: None,
    }
    .sign(&[signer])
}

fn out(tx: &Transaction, index: u32) -> OutPoint {
    OutPoint {
        tx: tx.tx_id(),
        index,
    }
}

fn bond(candidate: u32) -> TxKind {
    TxKind::Bond {
        candidate: account(candidate).public(),
    }
}

fn unbond(candidate: u32) -> TxKind {
    TxKind::Unbond {
        candidate: account(candidate).public(),
    }
}

fn candidacy(address: &str) -> TxKind {
    TxKind::Candidacy {
        address: encode_address(Some(address.parse().unwrap())),
    }
}

#[test]
fn candidacy_delegation_unbonding_and_a_moved_position() {
    let mut chain = Chain::new();
    let (a0, a1, a2, a4) = (account(0), account(1), account(2), account(4));
    let coin = |chain: &Chain, i: usize, n: usize| chain.coins[i][n].0;

    // Block 1: account 0 declares with a self-bond of 600; account 1 delegates 300 to it in the same block;
    // account 2 bonds to account 3, which never declared.
    let declare = tx(
        candidacy("10.0.0.1:9000"),
        &[coin(&chain, 0, 0)],
        vec![stake(&a0, 0, 600), cas(&a0, 399)],
        &a0,
    );
    let delegate = tx(
        bond(0),
        &[coin(&chain, 1, 0)],
        vec![stake(&a1, 0, 300), cas(&a1, 699)],
        &a1,
    );
    let stray = tx(
        bond(3),
        &[coin(&chain, 2, 0)],
        vec![stake(&a2, 3, 300), cas(&a2, 699)],
        &a2,
    );
    assert_eq!(
        chain.block(&[declare.clone(), delegate.clone(), stray]),
        vec![Ok(()), Ok(()), Err(TxError::NotACandidate)]
    );
    assert_eq!(chain.stake_of(0), 900);
    let candidate = chain.ledger.stake().candidate(&a0.public()).unwrap();
    assert_eq!(candidate.address, Some("10.0.0.1:9000".parse().unwrap()));

    // Block 2: account 1 unbonds its 300, locked for the delay; account 0 moves its self-bond position to
    // account 4 (a plain transfer of the stake asset: the candidate's stake is unchanged).
    let height = chain.ledger.height + 1;
    let until = height + DEFAULT_UNBOND_DELAY_BLOCKS;
    let unbonded = tx(
        unbond(0),
        &[out(&delegate, 0), out(&delegate, 1)],
        vec![output(&a1, 300, AssetId::CAS, Some(until)), cas(&a1, 698)],
        &a1,
    );
    let moved = tx(
        TxKind::Transfer,
        &[out(&declare, 0), out(&declare, 1)],
        vec![stake(&a4, 0, 600), cas(&a0, 398)],
        &a0,
    );
    assert_eq!(
        chain.block(&[unbonded.clone(), moved.clone()]),
        vec![Ok(()), Ok(())]
    );
    assert_eq!(chain.stake_of(0), 600);

    // The unbonded CAS is locked until the delay has passed.
    let early = tx(
        TxKind::Transfer,
        &[out(&unbonded, 0)],
        vec![cas(&a1, 299)],
        &a1,
    );
    assert_eq!(
        chain.block(&[early]),
        vec![Err(TxError::Locked {
            input: 0,
            unlock_height: until
        })]
    );

    // Account 4 now owns the position and can unbond it; account 0 can no longer.
    let height = chain.ledger.height + 1;
    let stolen = tx(
        unbond(0),
        &[out(&moved, 0), out(&moved, 1)],
        vec![
            output(
                &a0,
                600,
                AssetId::CAS,
                Some(height + DEFAULT_UNBOND_DELAY_BLOCKS),
            ),
            cas(&a0, 397),
        ],
        &a0,
    );
    assert_eq!(
        chain.block(&[stolen]),
        vec![Err(TxError::Unsigned { input: 0 })]
    );
    let height = chain.ledger.height + 1;
    let released = tx(
        unbond(0),
        &[out(&moved, 0), coin(&chain, 4, 0)],
        vec![
            output(
                &a4,
                600,
                AssetId::CAS,
                Some(height + DEFAULT_UNBOND_DELAY_BLOCKS),
            ),
            cas(&a4, 999),
        ],
        &a4,
    );
    assert_eq!(chain.block(&[released]), vec![Ok(())]);
    assert_eq!(chain.stake_of(0), 0);
    assert!(chain.ledger.stake().candidate(&a0.public()).is_some());
}

#[test]
fn every_stake_refusal_has_its_code_and_changes_nothing() {
    let mut chain = Chain::new();
    let (a0, a1) = (account(0), account(1));
    let declare = tx(
        candidacy("[2001:db8::1]:9000"),
        &[chain.coins[0][0].0],
        vec![stake(&a0, 0, 500), cas(&a0, 499)],
        &a0,
    );
    assert_eq!(chain.block(std::slice::from_ref(&declare)), vec![Ok(())]);
    let commitment = chain.ledger.commitment();
    // Each case is a block of its own; the unbond's is the sixth from here.
    let until = chain.ledger.height + 6 + DEFAULT_UNBOND_DELAY_BLOCKS;
    let cases: Vec<(Transaction, TxError, RejectCode)> = vec![
        (
            tx(
                candidacy("10.0.0.2:1"),
                &[chain.coins[0][1].0],
                vec![cas(&a0, 999)],
                &a0,
            ),
            TxError::AlreadyCandidate,
            RejectCode::AlreadyCandidate,
        ),
        (
            tx(
                TxKind::Candidacy {
                    address: vec![1, 2, 3],
                },
                &[chain.coins[1][0].0],
                vec![cas(&a1, 999)],
                &a1,
            ),
            TxError::BadAddress { len: 3 },
            RejectCode::BadAddress,
        ),
        (
            // A transfer cannot turn CAS into stake: per-asset conservation.
            tx(
                TxKind::Transfer,
                &[chain.coins[1][0].0],
                vec![stake(&a1, 0, 999)],
                &a1,
            ),
            TxError::ValueNotConserved {
                asset: AssetId::CAS,
                inputs: 1000,
                outputs: 1,
            },
            RejectCode::ValueNotConserved,
        ),
        (
            // A bond that hands back part of the stake as free CAS.
            tx(
                bond(0),
                &[out(&declare, 0)],
                vec![stake(&a0, 0, 100), cas(&a0, 399)],
                &a0,
            ),
            TxError::BondFreesStake {
                spent: 500,
                bonded: 100,
            },
            RejectCode::BondFreesStake,
        ),
        (
            tx(
                unbond(0),
                &[out(&declare, 1)],
                vec![stake(&a0, 0, 200), cas(&a0, 298)],
                &a0,
            ),
            TxError::UnbondAddsStake {
                spent: 0,
                created: 200,
            },
            RejectCode::UnbondAddsStake,
        ),
        (
            tx(
                unbond(0),
                &[out(&declare, 0)],
                vec![output(&a0, 499, AssetId::CAS, Some(until - 1))],
                &a0,
            ),
            TxError::UnbondNotLocked {
                unbonded: 500,
                locked: 0,
                until,
            },
            RejectCode::UnbondNotLocked,
        ),
    ];
    for (tx, error, code) in cases {
        assert_eq!(
            chain.block(std::slice::from_ref(&tx)),
            vec![Err(error.clone())]
        );
        assert_eq!(error.code(), code);
        assert_eq!(
            chain.ledger.commitment(),
            commitment,
            "{error} changed the set"
        );
    }
    assert_eq!(chain.stake_of(0), 500);
}

#[test]
fn the_election_follows_the_bonds() {
    let mut chain = Chain::new();
    // Accounts 0..4 declare with self-bonds 100, 400, 300, 200; account 4 then delegates 500 to account 0.
    let mut declares = Vec::new();
    for (i, amount) in [(0u32, 100u64), (1, 400), (2, 300), (3, 200)] {
        let who = account(i);
        declares.push(tx(
            candidacy(&format!("10.0.0.{}:9000", i + 1)),
            &[chain.coins[i as usize][0].0],
            vec![stake(&who, i, amount), cas(&who, AMOUNT - amount - 1)],
            &who,
        ));
    }
    assert!(chain.block(&declares).iter().all(Result::is_ok));
    let mut params = chain.ledger.params.stake;
    params.committee_size = 3;
    let elected = |chain: &Chain| -> Vec<u32> {
        chain
            .ledger
            .stake()
            .elect(&params)
            .iter()
            .map(|c| {
                (0..ACCOUNTS)
                    .find(|&i| account(i).public() == c.key)
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(elected(&chain), vec![1, 2, 3]);
    let a4 = account(4);
    let delegate = tx(
        bond(0),
        &[chain.coins[4][0].0],
        vec![stake(&a4, 0, 500), cas(&a4, 499)],
        &a4,
    );
    assert_eq!(chain.block(&[delegate]), vec![Ok(())]);
    assert_eq!(elected(&chain), vec![0, 1, 2]);
}

/// Two votes of `member` in `round` of epoch 0 for blocks `a` and `b`, as an equivocation record.
fn equivocation(member: &Keypair, round: u64, a: u8, b: u8) -> Transaction {
    cas_engine::fixtures::equivocation(member, 0, round, a, b).record_tx(CHAIN)
}

/// Issue 19: a proven equivocation is a ledger record, once per member: the member is no POS node, takes no rewards
/// and no election picks it; a proof that proves nothing, one with anything beside the proof, one against a key that
/// is no candidate and a second one against the same member are refused with their codes and change nothing.
#[test]
fn an_equivocation_record_puts_the_member_out_once() {
    let mut chain = Chain::new();
    let member = key(COMMITTEE_KEYS, 0);
    let params = chain.ledger.params.stake;
    assert!(chain
        .ledger
        .stake()
        .pos_nodes(&params)
        .any(|c| c.key == member.public()));
    let before = chain.ledger.commitment();
    let mut with_fee = equivocation(&member, 5, 1, 2);
    with_fee.body.fee = 1;
    let verdicts = chain.block(&[
        equivocation(&member, 5, 1, 1),
        with_fee,
        equivocation(&account(0), 5, 1, 2),
    ]);
    let codes: Vec<RejectCode> = verdicts
        .iter()
        .map(|v| v.clone().unwrap_err().code())
        .collect();
    assert_eq!(
        codes,
        vec![
            RejectCode::BadEvidence,
            RejectCode::EvidenceNotPlain,
            RejectCode::NotACandidate
        ]
    );
    assert_eq!(chain.ledger.commitment(), before, "refusals change nothing");
    // The proof, twice in one block (the second is known by then), then again in a later block from another round.
    let verdicts = chain.block(&[
        equivocation(&member, 5, 1, 2),
        equivocation(&member, 6, 3, 4),
    ]);
    assert_eq!(verdicts[0], Ok(()));
    assert_eq!(
        verdicts[1].clone().unwrap_err().code(),
        RejectCode::EvidenceKnown
    );
    let recorded = chain.ledger.height;
    let registry = chain.ledger.stake();
    assert_eq!(registry.equivocated_at(&member.public()), Some(recorded));
    assert!(!registry.rewarded(&member.public(), recorded + 1));
    assert!(registry.rewarded(&key(COMMITTEE_KEYS, 1).public(), recorded + 1));
    assert!(registry
        .pos_nodes(&params)
        .all(|c| c.key != member.public()));
    assert!(registry
        .elect(&params)
        .iter()
        .all(|c| c.key != member.public()));
    let verdicts = chain.block(&[equivocation(&member, 7, 5, 6)]);
    assert_eq!(
        verdicts[0].clone().unwrap_err().code(),
        RejectCode::EvidenceKnown
    );
}
