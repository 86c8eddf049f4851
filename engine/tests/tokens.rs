//! Tokens and contracts through the in-memory ledger: issuance with an offer and mint rights, mints, buying from the
//! issuer's offer, allowances (approve, transfer-from, expiry, revoke), DEX orders and fills, the ERC-20 cases,
//! contract deploys and calls, and every refusal with its code. After every block each token's supply plus its outstanding mint rights is its maximum supply, and CAS
//! (fee pots included) is the genesis supply: nothing is created or lost.

use cas_engine::codec::{decode_tx, encode_tx};
use cas_engine::contract::ledger::{contract_account, contract_id, ContractArg, ContractCall};
use cas_engine::fixtures::{coins_of, funded_genesis, key, ACCOUNT_KEYS};
use cas_engine::rules::{fee_pot_outpoint, is_record};
use cas_engine::token::{
    decode_definition, definition_outpoint, events, matching_fee, mint_right_of, object_kind,
    token_asset, Allowance, AllowanceTerms, Definition, ObjectKind, Order, OrderTerms, Side, Spend,
    TokenEvent, TokenSpec,
};
use cas_engine::{
    AssetId, Keypair, MemoryLedger, OutPoint, PublicKey, RejectCode, Transaction, TxBody, TxError,
    TxKind, TxOutput,
};
use rkyv::util::AlignedVec;

const CHAIN: u32 = 7;
const AMOUNT: u64 = 100_000;
const ACCOUNTS: u32 = 5;
const FEE: u64 = 1;
const MAX_SUPPLY: u64 = 1_000_000;
/// The genesis default: 10 basis points per side.
const FEE_BPS: u32 = cas_engine::genesis::DEFAULT_MATCHING_FEE_BPS;

struct Chain {
    ledger: MemoryLedger,
    cas_supply: u64,
    /// Tokens issued so far, with their maximum supply.
    tokens: Vec<(AssetId, u64)>,
}

impl Chain {
    fn new() -> Chain {
        let genesis = funded_genesis(CHAIN, 4, ACCOUNTS, 3, AMOUNT);
        Chain {
            ledger: MemoryLedger::from_genesis(&genesis).unwrap(),
            cas_supply: u64::from(ACCOUNTS) * 3 * AMOUNT,
            tokens: Vec::new(),
        }
    }

    /// Applies `txs` as the next block, checks that every asset is conserved, and returns the verdicts.
    fn block(&mut self, txs: &[Transaction]) -> Vec<Result<(), TxError>> {
        let encoded: Vec<AlignedVec> = txs.iter().map(encode_tx).collect();
        let archived: Vec<_> = encoded.iter().map(|b| decode_tx(b).unwrap()).collect();
        let height = self.ledger.height + 1;
        let verdicts = self.ledger.apply(&archived, height);
        let held = |asset: AssetId| -> u64 {
            self.ledger
                .utxos()
                .values()
                .filter(|c| c.asset == asset)
                .map(|c| c.amount)
                .sum()
        };
        assert_eq!(held(AssetId::CAS), self.cas_supply, "CAS with the fee pots");
        for (token, max_supply) in &self.tokens {
            assert_eq!(
                held(*token) + held(mint_right_of(token)),
                *max_supply,
                "supply and mint rights of {token:?}"
            );
        }
        verdicts
    }

    /// One transaction as its own block: its verdict.
    fn one(&mut self, tx: Transaction) -> Result<(), TxError> {
        self.block(&[tx]).remove(0)
    }

    /// The coins (not records) of `owner` in `asset`.
    fn coins(&self, owner: &Keypair, asset: AssetId) -> Vec<(OutPoint, TxOutput)> {
        coins_of(&self.ledger, owner, asset)
    }

    /// What `owner` holds of `asset`, coins and the escrow of its objects (the balance view).
    fn balance(&self, owner: &Keypair, asset: AssetId) -> u64 {
        self.ledger
            .utxos()
            .values()
            .filter(|c| c.owner == owner.public() && c.asset == asset)
            .map(|c| c.amount)
            .sum()
    }

    /// The live objects of one kind, with the place of their escrow entry.
    fn objects(&self, kind: ObjectKind) -> Vec<(OutPoint, TxOutput, TxOutput)> {
        let mut found: Vec<_> = self
            .ledger
            .utxos()
            .iter()
            .filter(|(o, _)| object_kind(o) == Some(kind))
            .map(|(o, escrow)| {
                let terms = self.ledger.utxos()[&kind.terms_at(o.tx)];
                (*o, *escrow, terms)
            })
            .collect();
        found.sort_by_key(|(o, _, _)| *o);
        found
    }

    fn orders(&self) -> Vec<(OutPoint, Order)> {
        self.objects(ObjectKind::Order)
            .into_iter()
            .map(|(o, escrow, terms)| (o, Order::of(&escrow, &terms)))
            .collect()
    }

    fn allowances(&self) -> Vec<(OutPoint, Allowance)> {
        self.objects(ObjectKind::Allowance)
            .into_iter()
            .map(|(o, escrow, terms)| (o, Allowance::of(&escrow, &terms)))
            .collect()
    }

    fn pot(&self, height: u64) -> u64 {
        self.ledger
            .utxos()
            .get(&fee_pot_outpoint(height))
            .map_or(0, |p| p.amount)
    }
}

fn account(i: u32) -> Keypair {
    key(ACCOUNT_KEYS, i)
}

fn out(owner: &Keypair, amount: u64, asset: AssetId) -> TxOutput {
    TxOutput {
        amount,
        asset,
        owner: owner.public(),
        unlock_height: None,
    }
}

/// A transaction of `kind` signed by `signer` (and `cosigners`): `objects` first as inputs, then enough of the
/// signer's coins of each asset in `pays` (the fee's CAS added), with `outputs` and the change back to the signer.
struct Build<'a> {
    kind: TxKind,
    signer: &'a Keypair,
    objects: Vec<OutPoint>,
    pays: Vec<(AssetId, u64)>,
    outputs: Vec<TxOutput>,
}

impl Build<'_> {
    fn sign(self, chain: &Chain) -> Transaction {
        let mut pays = self.pays;
        match pays.iter_mut().find(|(asset, _)| *asset == AssetId::CAS) {
            Some((_, amount)) => *amount += FEE,
            None => pays.push((AssetId::CAS, FEE)),
        }
        let mut inputs = self.objects;
        let mut outputs = self.outputs;
        for (asset, need) in pays.into_iter().filter(|(_, need)| *need > 0) {
            let mut gathered = 0;
            for (outpoint, coin) in chain.coins(self.signer, asset) {
                if gathered >= need {
                    break;
                }
                inputs.push(outpoint);
                gathered += coin.amount;
            }
            assert!(gathered >= need, "the signer holds {need} of {asset:?}");
            if gathered > need {
                outputs.push(out(self.signer, gathered - need, asset));
            }
        }
        TxBody {
            chain_id: CHAIN,
            vn: 0,
            kind: self.kind,
            inputs,
            outputs,
            fee: FEE,
            memo: Vec::new(),
            client_id: None,
        }
        .sign(&[self.signer])
    }
}

fn spec(nonce: u64, offered: u64, price: u64, authority: Option<&Keypair>) -> TokenSpec {
    TokenSpec {
        nonce,
        name: "Gold of the Northern Mines".into(),
        symbol: "GOLD".into(),
        decimals: 6,
        max_supply: MAX_SUPPLY,
        offered,
        price,
        mint_authority: authority.map(Keypair::public),
    }
}

/// Issues GOLD from account 0: 600,000 to itself, 100,000 offered at 3 CAS, 300,000 mint rights to itself.
fn issue_gold(chain: &mut Chain) -> AssetId {
    let issuer = account(0);
    let gold = token_asset(&issuer.public(), 1);
    let tx = Build {
        kind: TxKind::TokenIssue {
            spec: Box::new(spec(1, 100_000, 3, Some(&issuer))),
        },
        signer: &issuer,
        objects: vec![],
        pays: vec![],
        outputs: vec![
            out(&issuer, 600_000, gold),
            out(&issuer, 300_000, mint_right_of(&gold)),
        ],
    }
    .sign(chain);
    chain.tokens.push((gold, MAX_SUPPLY));
    assert_eq!(chain.one(tx), Ok(()));
    gold
}

fn code(verdict: Result<(), TxError>) -> Option<RejectCode> {
    verdict.err().map(|e| e.code())
}

#[test]
fn an_issue_creates_the_supply_its_offer_and_mint_rights_once() {
    let mut chain = Chain::new();
    let issuer = account(0);
    let gold = issue_gold(&mut chain);
    assert_eq!(
        chain.balance(&issuer, gold),
        700_000,
        "its coins and its offer"
    );
    assert_eq!(chain.balance(&issuer, mint_right_of(&gold)), 300_000);
    let definition = chain.ledger.utxos()[&definition_outpoint(&gold)];
    assert_eq!(
        decode_definition(&definition),
        Definition {
            issuer: issuer.public(),
            decimals: 6,
            max_supply: MAX_SUPPLY,
            symbol: "GOLD".into()
        }
    );
    let orders = chain.orders();
    assert_eq!(orders.len(), 1);
    assert_eq!(
        orders[0].1,
        Order {
            maker: issuer.public(),
            token: gold,
            side: Side::Sell,
            escrow: 100_000,
            price: 3
        }
    );

    // The same issuer and nonce again: refused, even for a smaller token.
    let again = Build {
        kind: TxKind::TokenIssue {
            spec: Box::new(TokenSpec {
                max_supply: 10,
                offered: 0,
                ..spec(1, 0, 0, None)
            }),
        },
        signer: &issuer,
        objects: vec![],
        pays: vec![],
        outputs: vec![out(&issuer, 10, gold)],
    };
    assert_eq!(
        code(chain.one(again.sign(&chain))),
        Some(RejectCode::TokenExists)
    );

    // Issues that break a rule change nothing: each gets its code.
    let silver = token_asset(&issuer.public(), 2);
    let cases: Vec<(TokenSpec, Vec<TxOutput>, RejectCode)> = vec![
        (
            TokenSpec {
                decimals: 19,
                ..spec(2, 0, 0, None)
            },
            vec![out(&issuer, MAX_SUPPLY, silver)],
            RejectCode::BadTokenSpec,
        ),
        (
            TokenSpec {
                symbol: "S-1".into(),
                ..spec(2, 0, 0, None)
            },
            vec![out(&issuer, MAX_SUPPLY, silver)],
            RejectCode::BadTokenSpec,
        ),
        (
            spec(2, 10, 0, None),
            vec![out(&issuer, MAX_SUPPLY - 10, silver)],
            RejectCode::BadTokenSpec,
        ),
        // Mint rights with no authority, and to another key than the authority.
        (
            spec(2, 0, 0, None),
            vec![
                out(&issuer, 1, silver),
                out(&issuer, MAX_SUPPLY - 1, mint_right_of(&silver)),
            ],
            RejectCode::BadTokenSpec,
        ),
        (
            spec(2, 0, 0, Some(&issuer)),
            vec![
                out(&issuer, 1, silver),
                out(&account(1), MAX_SUPPLY - 1, mint_right_of(&silver)),
            ],
            RejectCode::BadTokenSpec,
        ),
        // More, or less, than the maximum supply.
        (
            spec(2, 0, 0, None),
            vec![out(&issuer, MAX_SUPPLY + 1, silver)],
            RejectCode::ValueNotConserved,
        ),
        (
            spec(2, 0, 0, None),
            vec![out(&issuer, MAX_SUPPLY - 1, silver)],
            RejectCode::ValueNotConserved,
        ),
    ];
    for (spec, outputs, expected) in cases {
        let before = chain.ledger.commitment();
        let tx = Build {
            kind: TxKind::TokenIssue {
                spec: Box::new(spec.clone()),
            },
            signer: &issuer,
            objects: vec![],
            pays: vec![],
            outputs,
        };
        assert_eq!(code(chain.one(tx.sign(&chain))), Some(expected), "{spec:?}");
        assert_eq!(
            chain.ledger.commitment(),
            before,
            "a refusal changes nothing"
        );
    }
}

#[test]
fn only_mint_rights_mint_and_never_past_the_maximum() {
    let mut chain = Chain::new();
    let issuer = account(0);
    let gold = issue_gold(&mut chain);
    let rights = mint_right_of(&gold);
    let mint = |chain: &Chain, signer: &Keypair, spend: u64, outputs: Vec<TxOutput>| {
        Build {
            kind: TxKind::TokenMint { token: gold },
            signer,
            objects: vec![],
            pays: vec![(rights, spend)],
            outputs,
        }
        .sign(chain)
    };
    // 50,000 minted to account 1 out of the issuer's rights.
    let tx = mint(
        &chain,
        &issuer,
        50_000,
        vec![out(&account(1), 50_000, gold)],
    );
    assert_eq!(chain.one(tx), Ok(()));
    assert_eq!(chain.balance(&account(1), gold), 50_000);
    assert_eq!(chain.balance(&issuer, rights), 250_000);

    // A mint that gives back more rights than it spends.
    let tx = mint(
        &chain,
        &issuer,
        10,
        vec![out(&issuer, 20, rights), out(&issuer, 1, gold)],
    );
    assert_eq!(code(chain.one(tx)), Some(RejectCode::MintCreatesRights));
    // Tokens beyond the rights spent.
    let tx = mint(&chain, &issuer, 10, vec![out(&issuer, 11, gold)]);
    assert_eq!(code(chain.one(tx)), Some(RejectCode::ValueNotConserved));
    // Account 1 holds no rights: a mint out of nothing is not conserved.
    let tx = Build {
        kind: TxKind::TokenMint { token: gold },
        signer: &account(1),
        objects: vec![],
        pays: vec![],
        outputs: vec![out(&account(1), 5, gold)],
    }
    .sign(&chain);
    assert_eq!(code(chain.one(tx)), Some(RejectCode::ValueNotConserved));

    // Rights move like coins: the issuer hands 1,000 to account 2, which mints them.
    let tx = Build {
        kind: TxKind::Transfer,
        signer: &issuer,
        objects: vec![],
        pays: vec![(rights, 1_000)],
        outputs: vec![out(&account(2), 1_000, rights)],
    }
    .sign(&chain);
    assert_eq!(chain.one(tx), Ok(()));
    let tx = mint(
        &chain,
        &account(2),
        1_000,
        vec![out(&account(2), 1_000, gold)],
    );
    assert_eq!(chain.one(tx), Ok(()));
    // Every right minted: the supply reaches the maximum and stops there (the block check holds it).
    let tx = mint(&chain, &issuer, 249_000, vec![out(&issuer, 249_000, gold)]);
    assert_eq!(chain.one(tx), Ok(()));
    assert!(chain.coins(&issuer, rights).is_empty());
}

#[test]
fn buying_from_the_issuers_offer_is_one_atomic_swap_at_its_price() {
    let mut chain = Chain::new();
    let (issuer, buyer) = (account(0), account(1));
    let gold = issue_gold(&mut chain);
    let (offer, _) = chain.orders()[0];
    let fee = matching_fee(3_000, FEE_BPS).unwrap();
    assert_eq!(fee, 3, "10 bps of 3,000, rounded up");
    let buy = |chain: &Chain, amount: u64, maker_gets: u64, pays: u64| {
        Build {
            kind: TxKind::Fill { amount },
            signer: &buyer,
            objects: vec![offer],
            pays: vec![(AssetId::CAS, pays)],
            outputs: vec![
                out(&issuer, maker_gets, AssetId::CAS),
                out(&buyer, amount, gold),
            ],
        }
        .sign(chain)
    };
    let issuer_cas = chain.balance(&issuer, AssetId::CAS);
    let buyer_cas = chain.balance(&buyer, AssetId::CAS);
    let height = chain.ledger.height + 1;
    assert_eq!(
        chain.one(buy(&chain, 1_000, 3_000 - fee, 3_000 + fee)),
        Ok(())
    );
    assert_eq!(chain.balance(&buyer, gold), 1_000);
    assert_eq!(
        chain.balance(&buyer, AssetId::CAS),
        buyer_cas - 3_000 - fee - FEE
    );
    assert_eq!(
        chain.balance(&issuer, AssetId::CAS),
        issuer_cas + 3_000 - fee
    );
    assert_eq!(
        chain.pot(height),
        FEE + 2 * fee,
        "both sides' fees in the pot"
    );
    let orders = chain.orders();
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0].1.escrow, 99_000, "the rest stays on offer");
    assert_ne!(orders[0].0, offer, "at a new place");

    // Fewer tokens out than taken, an underpaid maker, more than the offer holds, and a buyer short of CAS.
    let offer = orders[0].0;
    let short_tokens = Build {
        kind: TxKind::Fill { amount: 10 },
        signer: &buyer,
        objects: vec![orders[0].0],
        pays: vec![(AssetId::CAS, 30)],
        outputs: vec![out(&issuer, 30, AssetId::CAS), out(&buyer, 9, gold)],
    };
    assert_eq!(
        code(chain.one(short_tokens.sign(&chain))),
        Some(RejectCode::ValueNotConserved),
        "tokens out must match tokens taken"
    );
    // 30 CAS of notional pays no fee (10 bps rounds down to 0).
    let underpaid = buy_at(&chain, &buyer, offer, 10, 29, 30, gold, &issuer);
    assert_eq!(code(chain.one(underpaid)), Some(RejectCode::MakerUnpaid));
    let too_much = buy_at(&chain, &buyer, offer, 99_001, 0, 0, gold, &issuer);
    assert_eq!(code(chain.one(too_much)), Some(RejectCode::OrderExceeded));
    let poor = account(4);
    let all_cas = chain.balance(&poor, AssetId::CAS);
    let unaffordable = Build {
        kind: TxKind::Fill { amount: 99_000 },
        signer: &poor,
        objects: vec![offer],
        pays: vec![(AssetId::CAS, all_cas - FEE)],
        outputs: vec![
            out(&issuer, 99_000 * 3 - 297, AssetId::CAS),
            out(&poor, 99_000, gold),
        ],
    };
    let before = chain.ledger.commitment();
    assert_eq!(
        code(chain.one(unaffordable.sign(&chain))),
        Some(RejectCode::ValueNotConserved)
    );
    assert_eq!(chain.ledger.commitment(), before, "neither leg happened");
}

/// A fill of `amount` from `order`, paying the maker `maker_gets` CAS, the buyer putting in `pays` CAS.
#[allow(clippy::too_many_arguments)]
fn buy_at(
    chain: &Chain,
    buyer: &Keypair,
    order: OutPoint,
    amount: u64,
    maker_gets: u64,
    pays: u64,
    token: AssetId,
    maker: &Keypair,
) -> Transaction {
    Build {
        kind: TxKind::Fill { amount },
        signer: buyer,
        objects: vec![order],
        pays: vec![(AssetId::CAS, pays)],
        outputs: vec![
            out(maker, maker_gets.max(1), AssetId::CAS),
            out(buyer, amount, token),
        ],
    }
    .sign(chain)
}

/// Account 0 gives account 1 40,000 GOLD to work with.
fn gold_for_account_1(chain: &mut Chain) -> AssetId {
    let gold = issue_gold(chain);
    let tx = Build {
        kind: TxKind::Transfer,
        signer: &account(0),
        objects: vec![],
        pays: vec![(gold, 40_000)],
        outputs: vec![out(&account(1), 40_000, gold)],
    }
    .sign(chain);
    assert_eq!(chain.one(tx), Ok(()));
    gold
}

fn approve(chain: &Chain, owner: &Keypair, terms: AllowanceTerms) -> Transaction {
    Build {
        kind: TxKind::Approve {
            terms: Box::new(terms),
        },
        signer: owner,
        objects: vec![],
        pays: vec![(terms.asset, terms.amount)],
        outputs: vec![],
    }
    .sign(chain)
}

fn transfer_from(
    chain: &Chain,
    spender: &Keypair,
    allowance: OutPoint,
    amount: u64,
    to: &Keypair,
    token: AssetId,
) -> Transaction {
    Build {
        kind: spend(&account(1), amount),
        signer: spender,
        objects: vec![allowance],
        pays: vec![],
        outputs: vec![out(to, amount, token)],
    }
    .sign(chain)
}

/// A transfer-from of `amount` out of `from`'s allowance.
fn spend(from: &Keypair, amount: u64) -> TxKind {
    TxKind::TransferFrom {
        spend: Box::new(Spend {
            from: from.public(),
            amount,
        }),
    }
}

#[test]
fn an_allowance_is_spent_by_its_spender_only_within_its_amount_and_time() {
    let mut chain = Chain::new();
    let gold = gold_for_account_1(&mut chain);
    let (owner, spender, receiver) = (account(1), account(2), account(3));
    let expires_at = chain.ledger.height + 4;
    let terms = AllowanceTerms {
        asset: gold,
        spender: spender.public(),
        amount: 500,
        expires_at,
    };
    assert_eq!(chain.one(approve(&chain, &owner, terms)), Ok(()));
    assert_eq!(
        chain.balance(&owner, gold),
        40_000,
        "approving moves nothing away"
    );
    let allowances = chain.allowances();
    assert_eq!(allowances.len(), 1);
    let (place, allowance) = allowances[0];
    assert_eq!(
        allowance,
        Allowance {
            owner: owner.public(),
            asset: gold,
            amount: 500,
            spender: spender.public(),
            expires_at
        }
    );

    // The spender moves 200 to the receiver; 300 stay allowed at a new place.
    assert_eq!(
        chain.one(transfer_from(&chain, &spender, place, 200, &receiver, gold)),
        Ok(())
    );
    assert_eq!(chain.balance(&receiver, gold), 200);
    assert_eq!(chain.balance(&owner, gold), 39_800);
    let (place, rest) = chain.allowances()[0];
    assert_eq!(rest.amount, 300);

    // More than allowed, the wrong spender, a zero amount, and a coin that is no allowance: each its code.
    let over = transfer_from(&chain, &spender, place, 301, &receiver, gold);
    assert_eq!(code(chain.one(over)), Some(RejectCode::AllowanceExceeded));
    let wrong = transfer_from(&chain, &receiver, place, 10, &receiver, gold);
    assert_eq!(code(chain.one(wrong)), Some(RejectCode::WrongSpender));
    let zero = transfer_from(&chain, &spender, place, 0, &receiver, gold);
    assert_eq!(code(chain.one(zero)), Some(RejectCode::BadAllowance));
    let other_owner = Build {
        kind: spend(&receiver, 10),
        signer: &spender,
        objects: vec![place],
        pays: vec![],
        outputs: vec![out(&receiver, 10, gold)],
    }
    .sign(&chain);
    assert_eq!(
        code(chain.one(other_owner)),
        Some(RejectCode::AllowanceOwner),
        "ERC-20's `from` must be the allowance's owner"
    );
    let (coin, _) = chain.coins(&owner, gold)[0];
    let not_one = transfer_from(&chain, &spender, coin, 10, &receiver, gold);
    assert_eq!(
        code(chain.one(not_one)),
        Some(RejectCode::InputUnsigned),
        "a coin as input 0 needs its owner's signature"
    );
    let not_allowance = Build {
        kind: spend(&owner, 1),
        signer: &spender,
        objects: vec![],
        pays: vec![],
        outputs: vec![],
    }
    .sign(&chain);
    assert_eq!(
        code(chain.one(not_allowance)),
        Some(RejectCode::NotAnAllowance)
    );

    // Past its last height it is expired; an approve that has expired already is refused too.
    while chain.ledger.height < expires_at {
        chain.block(&[]);
    }
    let late = transfer_from(&chain, &spender, place, 10, &receiver, gold);
    assert_eq!(code(chain.one(late)), Some(RejectCode::AllowanceExpired));
    let stale_terms = AllowanceTerms {
        expires_at: chain.ledger.height,
        ..terms
    };
    assert_eq!(
        code(chain.one(approve(&chain, &owner, stale_terms))),
        Some(RejectCode::AllowanceExpired)
    );
    let zero_terms = AllowanceTerms {
        amount: 0,
        expires_at: u64::MAX,
        ..terms
    };
    assert_eq!(
        code(chain.one(approve(&chain, &owner, zero_terms))),
        Some(RejectCode::BadAllowance)
    );

    // The owner takes it back (revoke): any transaction it signs may spend its allowance.
    let revoke = Build {
        kind: TxKind::Transfer,
        signer: &owner,
        objects: vec![place],
        pays: vec![],
        outputs: vec![out(&owner, 300, gold)],
    }
    .sign(&chain);
    assert_eq!(chain.one(revoke), Ok(()));
    assert!(chain.allowances().is_empty());
    assert_eq!(chain.balance(&owner, gold), 39_800);
    // Nobody else can.
    let stolen = Build {
        kind: TxKind::Approve {
            terms: Box::new(AllowanceTerms {
                expires_at: u64::MAX,
                ..terms
            }),
        },
        signer: &owner,
        objects: vec![],
        pays: vec![(gold, 500)],
        outputs: vec![],
    }
    .sign(&chain);
    assert_eq!(chain.one(stolen), Ok(()));
    let (place, _) = chain.allowances()[0];
    let theft = Build {
        kind: TxKind::Transfer,
        signer: &spender,
        objects: vec![place],
        pays: vec![],
        outputs: vec![out(&spender, 500, gold)],
    }
    .sign(&chain);
    assert_eq!(code(chain.one(theft)), Some(RejectCode::InputUnsigned));
}

#[test]
fn orders_fill_in_block_order_and_pay_both_fees_to_the_pot() {
    let mut chain = Chain::new();
    let gold = gold_for_account_1(&mut chain);
    let (seller, maker, late) = (account(1), account(2), account(3));
    let to_late = Build {
        kind: TxKind::Transfer,
        signer: &seller,
        objects: vec![],
        pays: vec![(gold, 1_000)],
        outputs: vec![out(&late, 1_000, gold)],
    }
    .sign(&chain);
    assert_eq!(chain.one(to_late), Ok(()));
    // Account 2 bids for 1,000 GOLD at 4 CAS: it escrows 4,000 and its fee of 4.
    let place = Build {
        kind: TxKind::OrderPlace {
            terms: Box::new(OrderTerms {
                token: gold,
                side: Side::Buy,
                amount: 1_000,
                price: 4,
            }),
        },
        signer: &maker,
        objects: vec![],
        pays: vec![(AssetId::CAS, 4_004)],
        outputs: vec![],
    }
    .sign(&chain);
    assert_eq!(chain.one(place), Ok(()));
    let bid = |chain: &Chain| {
        chain
            .orders()
            .into_iter()
            .find(|(_, o)| o.side == Side::Buy)
    };
    let (place, order) = bid(&chain).unwrap();
    assert_eq!(order.escrow, 4_004);

    // Two sellers fill it in one block: the first in block order takes 600, the second finds its place spent.
    let sell = |chain: &Chain, who: &Keypair, place: OutPoint, amount: u64| {
        let fee = matching_fee(amount * 4, FEE_BPS).unwrap();
        Build {
            kind: TxKind::Fill { amount },
            signer: who,
            objects: vec![place],
            pays: vec![(gold, amount), (AssetId::CAS, fee)],
            outputs: vec![
                out(&maker, amount, gold),
                out(who, amount * 4, AssetId::CAS),
            ],
        }
        .sign(chain)
    };
    let first = sell(&chain, &seller, place, 600);
    let second = sell(&chain, &late, place, 500);
    let height = chain.ledger.height + 1;
    let verdicts = chain.block(&[first, second]);
    assert_eq!(verdicts[0], Ok(()));
    assert_eq!(
        code(verdicts[1].clone()),
        Some(RejectCode::DoubleSpend),
        "the order's place was taken earlier in the block"
    );
    assert_eq!(chain.balance(&maker, gold), 600);
    assert_eq!(
        chain.pot(height),
        FEE + 2 * 2,
        "2 CAS from each side of 2,400"
    );
    let (place, rest) = bid(&chain).unwrap();
    assert_eq!(rest.escrow, 4_004 - 2_400 - 2);

    // More than the rest, and a maker paid short: refused. The later seller fills the rest; the bid is gone.
    let over = sell(&chain, &late, place, 401);
    assert_eq!(code(chain.one(over)), Some(RejectCode::OrderExceeded));
    let short = Build {
        kind: TxKind::Fill { amount: 400 },
        signer: &late,
        objects: vec![place],
        pays: vec![(gold, 399), (AssetId::CAS, 1)],
        outputs: vec![out(&maker, 399, gold), out(&late, 1_600, AssetId::CAS)],
    }
    .sign(&chain);
    assert_eq!(code(chain.one(short)), Some(RejectCode::MakerUnpaid));
    assert_eq!(chain.one(sell(&chain, &late, place, 400)), Ok(()));
    assert_eq!(chain.balance(&maker, gold), 1_000);
    let (leftover, rest) = bid(&chain).unwrap();
    assert_eq!(
        rest.escrow, 1,
        "fees of the parts round down: 3 of the 4 escrowed, the rest is the maker's"
    );
    let cancel = Build {
        kind: TxKind::Transfer,
        signer: &maker,
        objects: vec![leftover],
        pays: vec![],
        outputs: vec![out(&maker, 1, AssetId::CAS)],
    }
    .sign(&chain);
    assert_eq!(chain.one(cancel), Ok(()));
    assert!(bid(&chain).is_none());

    // A sell order, cancelled by its maker: the tokens come back. A fill's input 0 must be an order.
    let ask = Build {
        kind: TxKind::OrderPlace {
            terms: Box::new(OrderTerms {
                token: gold,
                side: Side::Sell,
                amount: 100,
                price: 5,
            }),
        },
        signer: &maker,
        objects: vec![],
        pays: vec![(gold, 100)],
        outputs: vec![],
    }
    .sign(&chain);
    assert_eq!(chain.one(ask), Ok(()));
    assert_eq!(
        chain.balance(&maker, gold),
        1_000,
        "escrow counts as its own"
    );
    let (ask, _) = chain
        .orders()
        .into_iter()
        .find(|(_, o)| o.maker == maker.public())
        .unwrap();
    let not_order = Build {
        kind: TxKind::Fill { amount: 1 },
        signer: &late,
        objects: vec![],
        pays: vec![],
        outputs: vec![],
    }
    .sign(&chain);
    assert_eq!(code(chain.one(not_order)), Some(RejectCode::NotAnOrder));
    let on_cas = Build {
        kind: TxKind::OrderPlace {
            terms: Box::new(OrderTerms {
                token: AssetId::CAS,
                side: Side::Sell,
                amount: 1,
                price: 1,
            }),
        },
        signer: &maker,
        objects: vec![],
        pays: vec![(AssetId::CAS, 1)],
        outputs: vec![],
    }
    .sign(&chain);
    assert_eq!(code(chain.one(on_cas)), Some(RejectCode::BadOrder));
    let cancel = Build {
        kind: TxKind::Transfer,
        signer: &maker,
        objects: vec![ask],
        pays: vec![],
        outputs: vec![out(&maker, 100, gold)],
    }
    .sign(&chain);
    assert_eq!(chain.one(cancel), Ok(()));
    assert_eq!(
        chain
            .coins(&maker, gold)
            .iter()
            .map(|(_, c)| c.amount)
            .sum::<u64>(),
        1_000
    );
}

// ERC-20 conformance: the cases of OpenZeppelin's `ERC20.behavior.js` and `ERC20.test.js` that apply to a UTXO
// ledger, rewritten here (README.md lists every case, with the ones that do not apply and why). The balance view is
// coins plus the escrow of the owner's own objects; `allowance(owner, spender)` is the sum of the live allowances.

/// ERC-20's `allowance(owner, spender)` over the set.
fn allowance_of(chain: &Chain, owner: &Keypair, spender: &Keypair) -> u64 {
    chain
        .allowances()
        .iter()
        .filter(|(_, a)| a.owner == owner.public() && a.spender == spender.public())
        .map(|(_, a)| a.amount)
        .sum()
}

/// The token's total supply: every unit held, escrow included (mint rights are not tokens).
fn total_supply(chain: &Chain, token: AssetId) -> u64 {
    chain
        .ledger
        .utxos()
        .values()
        .filter(|c| c.asset == token)
        .map(|c| c.amount)
        .sum()
}

/// A transfer of `amount` of `token` from `from` to `to` (its events are checked against what it raised).
fn send(chain: &Chain, from: &Keypair, to: &Keypair, token: AssetId, amount: u64) -> Transaction {
    Build {
        kind: TxKind::Transfer,
        signer: from,
        objects: vec![],
        pays: vec![(token, amount)],
        outputs: vec![out(to, amount, token)],
    }
    .sign(chain)
}

#[test]
fn erc20_total_supply_balance_of_decimals_and_symbol() {
    let mut chain = Chain::new();
    let gold = issue_gold(&mut chain);
    // "total supply: returns the total token value" (the offer's escrow is issued supply).
    assert_eq!(total_supply(&chain, gold), 700_000);
    // "balanceOf: when the requested account has no tokens: returns zero"
    assert_eq!(chain.balance(&account(3), gold), 0);
    // "balanceOf: when the requested account has some tokens: returns the total token value"
    assert_eq!(chain.balance(&account(0), gold), 700_000);
    // "has a decimals", "has a symbol" (the name stays in the issue transaction)
    let definition = decode_definition(&chain.ledger.utxos()[&definition_outpoint(&gold)]);
    assert_eq!(
        (definition.decimals, definition.symbol.as_str()),
        (6, "GOLD")
    );
}

#[test]
fn erc20_transfer() {
    let mut chain = Chain::new();
    let gold = gold_for_account_1(&mut chain);
    let (holder, recipient) = (account(1), account(2));
    // "when the sender does not have enough balance: reverts" (a UTXO spend cannot name more than it holds: the
    // sender's coins with one unit more than their sum out is not conserved).
    let (coin, held) = chain.coins(&holder, gold)[0];
    let cas = chain.coins(&holder, AssetId::CAS)[0];
    let overdraft = TxBody {
        chain_id: CHAIN,
        vn: 0,
        kind: TxKind::Transfer,
        inputs: vec![coin, cas.0],
        outputs: vec![
            out(&recipient, held.amount + 1, gold),
            out(&holder, cas.1.amount - FEE, AssetId::CAS),
        ],
        fee: FEE,
        memo: vec![],
        client_id: None,
    }
    .sign(&[&holder]);
    assert_eq!(
        code(chain.one(overdraft)),
        Some(RejectCode::ValueNotConserved)
    );
    // "when the sender transfers all balance: transfers the requested value" and "emits a transfer event".
    let all = send(&chain, &holder, &recipient, gold, 40_000);
    let raised = events(&all);
    assert_eq!(chain.one(all), Ok(()));
    assert_eq!(chain.balance(&holder, gold), 0);
    assert_eq!(chain.balance(&recipient, gold), 40_000);
    assert_eq!(
        raised,
        vec![TokenEvent::Transfer {
            asset: gold,
            from: holder.public(),
            to: recipient.public(),
            value: 40_000
        }]
    );
}

#[test]
fn erc20_approve() {
    let mut chain = Chain::new();
    let gold = gold_for_account_1(&mut chain);
    let (owner, spender) = (account(1), account(2));
    let terms = |amount| AllowanceTerms {
        asset: gold,
        spender: spender.public(),
        amount,
        expires_at: u64::MAX,
    };
    // "when there was no approved value before: approves the requested value" and "emits an approval event".
    let first = approve(&chain, &owner, terms(100));
    let raised = events(&first);
    assert_eq!(chain.one(first), Ok(()));
    assert_eq!(allowance_of(&chain, &owner, &spender), 100);
    assert_eq!(
        raised,
        vec![TokenEvent::Approval {
            asset: gold,
            owner: owner.public(),
            spender: spender.public(),
            value: 100
        }]
    );
    // "when the spender had an approved value: approves the requested value" (replaces it: the new approve takes
    // the old allowance back as an input).
    let (old, _) = chain.allowances()[0];
    let replace = Build {
        kind: TxKind::Approve {
            terms: Box::new(terms(250)),
        },
        signer: &owner,
        objects: vec![old],
        pays: vec![(gold, 150)],
        outputs: vec![],
    }
    .sign(&chain);
    assert_eq!(chain.one(replace), Ok(()));
    assert_eq!(allowance_of(&chain, &owner, &spender), 250);
    assert_eq!(
        chain.balance(&owner, gold),
        40_000,
        "approving moves nothing out"
    );
}

#[test]
fn erc20_transfer_from() {
    let mut chain = Chain::new();
    let gold = gold_for_account_1(&mut chain);
    let (owner, spender, recipient) = (account(1), account(2), account(3));
    let terms = AllowanceTerms {
        asset: gold,
        spender: spender.public(),
        amount: 1_000,
        expires_at: u64::MAX,
    };
    assert_eq!(chain.one(approve(&chain, &owner, terms)), Ok(()));
    // "when the spender has enough allowance, the owner enough balance: transfers the requested value",
    // "decreases the spender allowance", "emits a transfer event", "does not emit an approval event".
    let (place, _) = chain.allowances()[0];
    let moved = transfer_from(&chain, &spender, place, 400, &recipient, gold);
    let raised = events(&moved);
    assert_eq!(chain.one(moved), Ok(()));
    assert_eq!(chain.balance(&recipient, gold), 400);
    assert_eq!(chain.balance(&owner, gold), 39_600);
    assert_eq!(allowance_of(&chain, &owner, &spender), 600);
    assert_eq!(
        raised,
        vec![TokenEvent::Transfer {
            asset: gold,
            from: owner.public(),
            to: recipient.public(),
            value: 400
        }]
    );
    // "when the spender does not have enough allowance: reverts with ERC20InsufficientAllowance".
    let (place, _) = chain.allowances()[0];
    let over = transfer_from(&chain, &spender, place, 601, &recipient, gold);
    assert_eq!(code(chain.one(over)), Some(RejectCode::AllowanceExceeded));
    // A spender that was never approved (OpenZeppelin: an allowance of zero) is refused too.
    let stranger = transfer_from(&chain, &account(4), place, 1, &recipient, gold);
    assert_eq!(code(chain.one(stranger)), Some(RejectCode::WrongSpender));
}

#[test]
fn erc20_mint() {
    let mut chain = Chain::new();
    let gold = issue_gold(&mut chain);
    let rights = mint_right_of(&gold);
    let before = total_supply(&chain, gold);
    // "_mint for a non zero account: increments totalSupply", "increments recipient balance",
    // "emits Transfer event" (from the zero address).
    let mint = Build {
        kind: TxKind::TokenMint { token: gold },
        signer: &account(0),
        objects: vec![],
        pays: vec![(rights, 5_000)],
        outputs: vec![out(&account(2), 5_000, gold)],
    }
    .sign(&chain);
    let raised = events(&mint);
    assert_eq!(chain.one(mint), Ok(()));
    assert_eq!(total_supply(&chain, gold), before + 5_000);
    assert_eq!(chain.balance(&account(2), gold), 5_000);
    assert!(raised.contains(&TokenEvent::Transfer {
        asset: gold,
        from: PublicKey::default(),
        to: account(2).public(),
        value: 5_000
    }));
    // "_mint: rejects overflow" (past the maximum supply: more than the rights spent).
    let past = Build {
        kind: TxKind::TokenMint { token: gold },
        signer: &account(0),
        objects: vec![],
        pays: vec![(rights, 295_000)],
        outputs: vec![out(&account(0), 295_001, gold)],
    }
    .sign(&chain);
    assert_eq!(code(chain.one(past)), Some(RejectCode::ValueNotConserved));
}

#[test]
fn erc20_events_of_a_buy_name_the_maker_and_the_taker() {
    let mut chain = Chain::new();
    let (issuer, buyer) = (account(0), account(1));
    let gold = issue_gold(&mut chain);
    let (offer, _) = chain.orders()[0];
    let fee = matching_fee(300, FEE_BPS).unwrap();
    let buy = buy_at(
        &chain,
        &buyer,
        offer,
        100,
        300 - fee,
        300 + fee,
        gold,
        &issuer,
    );
    let raised = events(&buy);
    assert_eq!(chain.one(buy), Ok(()));
    assert_eq!(
        raised,
        vec![TokenEvent::Transfer {
            asset: gold,
            from: issuer.public(),
            to: buyer.public(),
            value: 100
        }]
    );
}

// Contracts on the ledger: deploy, fund, call; the budget, a failure and foreign code refused with nothing changed.

const SPLITTER: &str = r#"
// Splits 100 of the contract's CAS between two accounts.
function split(a, b) {
  require(balance("contract") >= 100, "underfunded");
  transfer(a, 60);
  transfer(b, 40);
  emit("split", 100);
  return 1;
}
// A million turns: over the 100,000 budget, refused before its first transfer.
function spin(a) {
  transfer(a, 1);
  let n = 0;
  for (let i = 0; i < 1000; i++) {
    for (let j = 0; j < 1000; j++) { n = n + 1; }
  }
  return n;
}
"#;

fn call(
    chain: &Chain,
    caller: &Keypair,
    contract: cas_engine::Hash32,
    function: &str,
    args: Vec<ContractArg>,
    code: &str,
    held: Vec<OutPoint>,
) -> Transaction {
    Build {
        kind: TxKind::ContractCall {
            call: Box::new(ContractCall {
                contract,
                function: function.into(),
                args,
                code: code.as_bytes().to_vec(),
            }),
        },
        signer: caller,
        objects: held,
        pays: vec![],
        outputs: vec![],
    }
    .sign(chain)
}

#[test]
fn a_contract_is_deployed_funded_and_called_and_its_budget_is_checked_before_it_runs() {
    let mut chain = Chain::new();
    let (deployer, a, b) = (account(0), account(1), account(2));
    let deploy = Build {
        kind: TxKind::ContractDeploy {
            code: SPLITTER.as_bytes().to_vec(),
        },
        signer: &deployer,
        objects: vec![],
        pays: vec![],
        outputs: vec![],
    }
    .sign(&chain);
    let contract = contract_id(&deploy.tx_id());
    assert_eq!(chain.one(deploy), Ok(()));
    let account_key = contract_account(&contract);
    // Funded by a plain transfer to its account.
    let fund = Build {
        kind: TxKind::Transfer,
        signer: &deployer,
        objects: vec![],
        pays: vec![(AssetId::CAS, 250)],
        outputs: vec![TxOutput {
            amount: 250,
            asset: AssetId::CAS,
            owner: account_key,
            unlock_height: None,
        }],
    }
    .sign(&chain);
    assert_eq!(chain.one(fund), Ok(()));
    let held = |chain: &Chain| -> Vec<(OutPoint, TxOutput)> {
        chain
            .ledger
            .utxos()
            .iter()
            .filter(|(o, c)| !is_record(o) && c.owner == account_key)
            .map(|(o, c)| (*o, *c))
            .collect()
    };
    let coins: Vec<OutPoint> = held(&chain).iter().map(|(o, _)| *o).collect();
    let args = vec![
        ContractArg::Text(a.public().to_hex()),
        ContractArg::Text(b.public().to_hex()),
    ];
    let (a_before, b_before) = (
        chain.balance(&a, AssetId::CAS),
        chain.balance(&b, AssetId::CAS),
    );

    // Nobody spends the contract's coins by a plain transfer: they need a signature nobody can make.
    let theft = Build {
        kind: TxKind::Transfer,
        signer: &a,
        objects: coins.clone(),
        pays: vec![],
        outputs: vec![out(&a, 250, AssetId::CAS)],
    }
    .sign(&chain);
    assert_eq!(code(chain.one(theft)), Some(RejectCode::InputUnsigned));

    // Over the budget, other code, a failing require, bad code: refused, nothing changed.
    let before = chain.ledger.commitment();
    let over = call(
        &chain,
        &a,
        contract,
        "spin",
        vec![args[0].clone()],
        SPLITTER,
        coins.clone(),
    );
    assert_eq!(code(chain.one(over)), Some(RejectCode::ContractBudget));
    let forged = SPLITTER.replace("transfer(a, 60)", "transfer(a, 100)");
    let other = call(
        &chain,
        &a,
        contract,
        "split",
        args.clone(),
        &forged,
        coins.clone(),
    );
    assert_eq!(code(chain.one(other)), Some(RejectCode::NotAContract));
    let unfunded = call(
        &chain,
        &a,
        contract,
        "split",
        args.clone(),
        SPLITTER,
        vec![],
    );
    assert_eq!(code(chain.one(unfunded)), Some(RejectCode::ContractFailed));
    let bad = Build {
        kind: TxKind::ContractDeploy {
            code: b"function f() { return f(); }".to_vec(),
        },
        signer: &deployer,
        objects: vec![],
        pays: vec![],
        outputs: vec![],
    }
    .sign(&chain);
    assert_eq!(code(chain.one(bad)), Some(RejectCode::BadContract));
    // Refused transactions change nothing but the empty blocks' heights (no fee pot is written).
    assert_eq!(chain.ledger.commitment(), before);

    // The call: 60 to a, 40 to b, 150 stay the contract's, in one coin.
    let split = call(&chain, &b, contract, "split", args, SPLITTER, coins);
    assert_eq!(chain.one(split), Ok(()));
    assert_eq!(chain.balance(&a, AssetId::CAS), a_before + 60);
    assert_eq!(chain.balance(&b, AssetId::CAS), b_before + 40 - FEE);
    let left = held(&chain);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].1.amount, 150);
}

/// Below the height of the protocol version that brings them, business transactions are refused by the rules
/// themselves (not only at admission), so a block that carries one early is judged the same on every node.
#[test]
fn business_transactions_are_refused_below_their_protocol_height() {
    let chain = Chain::new();
    let issuer = account(0);
    let gold = token_asset(&issuer.public(), 1);
    let issue = Build {
        kind: TxKind::TokenIssue {
            spec: Box::new(spec(1, 0, 0, None)),
        },
        signer: &issuer,
        objects: vec![],
        pays: vec![],
        outputs: vec![out(&issuer, MAX_SUPPLY, gold)],
    }
    .sign(&chain);
    let bytes = encode_tx(&issue);
    let archived = decode_tx(&bytes).unwrap();
    let height = chain.ledger.height + 1;
    let at = |business_from| {
        cas_engine::rules::check_tx(
            archived,
            chain.ledger.utxos(),
            &chain
                .ledger
                .context_for(height)
                .with_business_from(business_from),
        )
    };
    assert_eq!(at(height + 1), Err(TxError::NotEnabled));
    assert_eq!(at(u64::MAX), Err(TxError::NotEnabled));
    assert_eq!(at(height), Ok(()));
    // A plain transfer is never gated.
    let plain = send(&chain, &issuer, &account(1), AssetId::CAS, 5);
    let bytes = encode_tx(&plain);
    let ctx = chain
        .ledger
        .context_for(height)
        .with_business_from(u64::MAX);
    assert_eq!(
        cas_engine::rules::check_tx(decode_tx(&bytes).unwrap(), chain.ledger.utxos(), &ctx),
        Ok(())
    );
}

/// Signatures are outside the tx id: whoever relays a transaction could reorder them. The first signer is whom the
/// ledger records (here the allowance's owner), so it must own input 0: an approve escrowing account 1's GOLD with
/// account 2 paying the fee, its signatures swapped, would have made account 2 the owner (able to take the GOLD
/// back); it is refused instead, and the same body in order is accepted.
#[test]
fn reordered_signatures_cannot_change_whom_the_ledger_records() {
    let mut chain = Chain::new();
    let gold = gold_for_account_1(&mut chain);
    let (owner, payer, spender) = (account(1), account(2), account(3));
    let (gold_at, gold_coin) = chain.coins(&owner, gold)[0];
    let (cas_at, cas_coin) = chain.coins(&payer, AssetId::CAS)[0];
    let body = TxBody {
        chain_id: CHAIN,
        vn: 0,
        kind: TxKind::Approve {
            terms: Box::new(AllowanceTerms {
                asset: gold,
                spender: spender.public(),
                amount: 100,
                expires_at: 1_000,
            }),
        },
        inputs: vec![gold_at, cas_at],
        outputs: vec![
            out(&owner, gold_coin.amount - 100, gold),
            out(&payer, cas_coin.amount - FEE, AssetId::CAS),
        ],
        fee: FEE,
        memo: Vec::new(),
        client_id: None,
    };
    let swapped = body.clone().sign(&[&payer, &owner]);
    assert_eq!(chain.one(swapped), Err(TxError::SenderMismatch));
    assert!(chain.allowances().is_empty());
    assert_eq!(chain.one(body.sign(&[&owner, &payer])), Ok(()));
    let allowances = chain.allowances();
    assert_eq!(allowances.len(), 1);
    assert_eq!(allowances[0].1.owner, owner.public());
}
