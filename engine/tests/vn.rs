//! Business networks through the in-memory ledger: a VN registered with its Policy (k of n, weighted, none), its
//! transactions refused without the endorsements the Policy asks and accepted with them, a fee rule in a business
//! token, an unknown VN, a second registration, malformed Policies, and the public network untouched, each refusal
//! with its code.

use cas_engine::codec::{decode_tx, encode_tx};
use cas_engine::fixtures::{
    coins_of, funded_genesis, funded_spec, key, vn_register as register, ACCOUNT_KEYS,
};
use cas_engine::genesis::{genesis_block, AllocationSpec};
use cas_engine::vn::{policy_outpoint, PolicyHeader, PolicyTerms, VnFee};
use cas_engine::Hash32;
use cas_engine::{
    AssetId, Keypair, MemoryLedger, OutPoint, RejectCode, Transaction, TxBody, TxError, TxKind,
    TxOutput,
};
use rkyv::util::AlignedVec;

const CHAIN: u32 = 7;
const FEE: u64 = 1;

struct Chain {
    ledger: MemoryLedger,
}

impl Chain {
    fn new() -> Chain {
        let genesis = funded_genesis(CHAIN, 4, 4, 3, 100_000);
        Chain {
            ledger: MemoryLedger::from_genesis(&genesis).unwrap(),
        }
    }

    fn one(&mut self, tx: Transaction) -> Result<(), TxError> {
        let encoded: AlignedVec = encode_tx(&tx);
        let archived = decode_tx(&encoded).unwrap();
        let height = self.ledger.height + 1;
        self.ledger.apply(&[archived], height).remove(0)
    }

    fn coin(&self, owner: &Keypair) -> (OutPoint, TxOutput) {
        coins_of(&self.ledger, owner, AssetId::CAS)[0]
    }

    /// A payment of `owner` to itself on network `vn`, signed by the owner and then by `endorsers`.
    fn pay(&self, owner: &Keypair, vn: u32, endorsers: &[&Keypair]) -> Transaction {
        self.tx(owner, vn, TxKind::Transfer, endorsers)
    }

    fn tx(&self, owner: &Keypair, vn: u32, kind: TxKind, endorsers: &[&Keypair]) -> Transaction {
        let (outpoint, coin) = self.coin(owner);
        let body = TxBody {
            chain_id: CHAIN,
            vn,
            kind,
            inputs: vec![outpoint],
            outputs: vec![TxOutput {
                amount: coin.amount - FEE,
                ..coin
            }],
            fee: FEE,
            memo: Vec::new(),
            client_id: None,
        };
        let signers: Vec<&Keypair> = std::iter::once(owner)
            .chain(endorsers.iter().copied())
            .collect();
        body.sign(&signers)
    }

    fn register(
        &mut self,
        vn: u32,
        endorsers: &[(&Keypair, u32)],
        threshold: u32,
    ) -> Result<(), TxError> {
        let tx = self.tx(&account(0), 0, register(vn, endorsers, threshold), &[]);
        self.one(tx)
    }
}

/// A registration's VN, endorsers with their weights, and threshold.
type Registration<'a> = (u32, Vec<(&'a Keypair, u32)>, u32);

fn account(i: u32) -> Keypair {
    key(ACCOUNT_KEYS, i)
}

/// An RS key: not an account, holds nothing.
fn rs(i: u32) -> Keypair {
    key(ACCOUNT_KEYS, 100 + i)
}

#[test]
fn a_vn_transaction_is_final_only_with_the_endorsements_its_policy_asks() {
    let mut chain = Chain::new();
    let (r1, r2, r3) = (rs(1), rs(2), rs(3));
    chain
        .register(5, &[(&r1, 1), (&r2, 1), (&r3, 1)], 2)
        .unwrap();
    let header = chain.ledger.utxos()[&policy_outpoint(5)];
    assert_eq!(PolicyHeader::decode(&header).threshold, 2);
    let a = account(1);
    assert_eq!(
        chain.one(chain.pay(&a, 5, &[])),
        Err(TxError::NotEndorsed {
            weight: 0,
            threshold: 2
        })
    );
    assert_eq!(
        chain.one(chain.pay(&a, 5, &[&r3])),
        Err(TxError::NotEndorsed {
            weight: 1,
            threshold: 2
        })
    );
    assert_eq!(chain.one(chain.pay(&a, 5, &[&r1, &r3])), Ok(()));
    // Every endorser may sign; a signature of no endorser of this VN that spends nothing is unused.
    assert_eq!(chain.one(chain.pay(&a, 5, &[&r1, &r2, &r3])), Ok(()));
    assert_eq!(
        chain
            .one(chain.pay(&a, 5, &[&r1, &r2, &rs(9)]))
            .map_err(|e| e.code()),
        Err(RejectCode::UnusedSignature)
    );
    // The public network asks nothing, and an RS of VN 5 endorses nothing there.
    assert_eq!(chain.one(chain.pay(&a, 0, &[])), Ok(()));
    assert_eq!(
        chain.one(chain.pay(&a, 0, &[&r1])).map_err(|e| e.code()),
        Err(RejectCode::UnusedSignature)
    );
}

#[test]
fn a_weighted_policy_counts_weights_not_signers() {
    let mut chain = Chain::new();
    let (big, small1, small2) = (rs(1), rs(2), rs(3));
    chain
        .register(6, &[(&big, 3), (&small1, 1), (&small2, 1)], 3)
        .unwrap();
    let a = account(2);
    assert_eq!(chain.one(chain.pay(&a, 6, &[&big])), Ok(()));
    assert_eq!(
        chain.one(chain.pay(&a, 6, &[&small1, &small2])),
        Err(TxError::NotEndorsed {
            weight: 2,
            threshold: 3
        })
    );
    // No Policy: no endorsers, threshold 0; the VN's transactions need no endorsement.
    chain.register(12, &[], 0).unwrap();
    assert_eq!(chain.one(chain.pay(&a, 12, &[])), Ok(()));
    // "All": the threshold is the total weight.
    chain.register(8, &[(&small1, 1), (&small2, 1)], 2).unwrap();
    assert!(chain.one(chain.pay(&a, 8, &[&small1])).is_err());
    assert_eq!(chain.one(chain.pay(&a, 8, &[&small1, &small2])), Ok(()));
}

#[test]
fn unknown_vns_repeated_registrations_and_malformed_policies_are_refused() {
    let mut chain = Chain::new();
    let (r1, r2) = (rs(1), rs(2));
    let a = account(1);
    assert_eq!(
        chain.one(chain.pay(&a, 9, &[&r1])).map_err(|e| e.code()),
        Err(RejectCode::UnknownVn)
    );
    chain.register(9, &[(&r1, 1)], 1).unwrap();
    assert_eq!(
        chain.register(9, &[(&r2, 1)], 1),
        Err(TxError::VnExists { vn: 9 })
    );
    let bad: [Registration; 5] = [
        (0, vec![(&r1, 1)], 1),
        (10, vec![], 1),
        (10, vec![(&r1, 0), (&r2, 1)], 1),
        (10, vec![(&r1, 1), (&r1, 1)], 1),
        (10, vec![(&r1, 1), (&r2, 1)], 3),
    ];
    for (vn, endorsers, threshold) in bad {
        let verdict = chain.register(vn, &endorsers, threshold);
        assert_eq!(verdict.map_err(|e| e.code()), Err(RejectCode::BadPolicy));
    }
    // A registration is a transaction of the public network.
    let on_vn = chain.tx(&a, 9, register(11, &[(&r2, 1)], 1), &[&r1]);
    assert_eq!(
        chain.one(on_vn).map_err(|e| e.code()),
        Err(RejectCode::BadPolicy)
    );
    assert!(!chain.ledger.utxos().contains_key(&policy_outpoint(10)));
}

#[test]
fn a_vn_fee_rule_asks_its_token_of_every_transaction() {
    let gold = AssetId(Hash32::of("CAS test gold", b"gold"));
    let mut spec = funded_spec(CHAIN, 4, 4, 3, 100_000);
    spec.allocations.push(AllocationSpec {
        owner: account(1).public().to_hex(),
        amount: 1_000,
        asset: Some(gold.0.to_hex()),
        outputs: 1,
    });
    let mut chain = Chain {
        ledger: MemoryLedger::from_genesis(&genesis_block(&spec).unwrap()).unwrap(),
    };
    let collector = rs(7);
    let policy = PolicyTerms {
        vn: 21,
        endorsers: Vec::new(),
        threshold: 0,
        fee: Some(VnFee {
            token: gold,
            amount: 5,
            collector: collector.public(),
        }),
    };
    let kind = TxKind::VnRegister {
        policy: Box::new(policy),
    };
    let registration = chain.tx(&account(0), 0, kind, &[]);
    chain.one(registration).unwrap();
    // A payment on the VN without the fee output is refused; with 5 GOLD to the collector it is final.
    let a = account(1);
    assert_eq!(
        chain.one(chain.pay(&a, 21, &[])).map_err(|e| e.code()),
        Err(RejectCode::VnFeeUnpaid)
    );
    let pays_fee = |chain: &Chain, amount: u64| {
        let (cas, cas_coin) = chain.coin(&a);
        let (gold_at, gold_coin) = coins_of(&chain.ledger, &a, gold)[0];
        let output = |owner: &Keypair, amount, asset| TxOutput {
            amount,
            asset,
            owner: owner.public(),
            unlock_height: None,
        };
        TxBody {
            chain_id: CHAIN,
            vn: 21,
            kind: TxKind::Transfer,
            inputs: vec![cas, gold_at],
            outputs: vec![
                output(&a, cas_coin.amount - FEE, AssetId::CAS),
                output(&collector, amount, gold),
                output(&a, gold_coin.amount - amount, gold),
            ],
            fee: FEE,
            memo: Vec::new(),
            client_id: None,
        }
        .sign(&[&a])
    };
    assert_eq!(
        chain.one(pays_fee(&chain, 4)).map_err(|e| e.code()),
        Err(RejectCode::VnFeeUnpaid)
    );
    assert_eq!(chain.one(pays_fee(&chain, 5)), Ok(()));
    assert_eq!(coins_of(&chain.ledger, &collector, gold)[0].1.amount, 5);
    // A fee rule of 0 is refused.
    let zero = PolicyTerms {
        vn: 22,
        endorsers: Vec::new(),
        threshold: 0,
        fee: Some(VnFee {
            token: gold,
            amount: 0,
            collector: collector.public(),
        }),
    };
    let kind = TxKind::VnRegister {
        policy: Box::new(zero),
    };
    let registration = chain.tx(&account(0), 0, kind, &[]);
    assert_eq!(
        chain.one(registration).map_err(|e| e.code()),
        Err(RejectCode::BadPolicy)
    );
}
