//! Deterministic fixtures for tests, benchmarks and load generation: keys from an index, a funded genesis, and
//! signed transfers. Pure: the same arguments give the same bytes on every machine.

use crate::block::Block;
use crate::crypto::Keypair;
use crate::genesis::{genesis_block, AllocationSpec, GenesisSpec, MemberSpec, ParamsSpec};
use crate::id::AssetId;
use crate::tx::{OutPoint, Transaction, TxBody, TxKind, TxOutput};

/// `member`'s proof of voting for blocks `[a; 32]` and `[b; 32]` (both at height `round`) in `round` of `epoch`.
pub fn equivocation(
    member: &Keypair,
    epoch: u64,
    round: u64,
    a: u8,
    b: u8,
) -> crate::evidence::EquivocationProof {
    use crate::evidence::{vote_digest, EquivocationProof, SignedVote};
    let vote = |block: u8| {
        let block = crate::Hash32([block; 32]);
        SignedVote {
            block,
            height: round,
            signature: member.sign(&vote_digest(epoch, round, &block, round).0),
        }
    };
    EquivocationProof {
        member: member.public(),
        epoch,
        round,
        first: vote(a),
        second: vote(b),
    }
}

/// The key of account `index` under a seed namespace (`namespace` keeps committee keys apart from accounts').
pub fn key(namespace: u8, index: u32) -> Keypair {
    Keypair::from_seed(&seed(namespace, index))
}

/// The seed of [`key`].
pub fn seed(namespace: u8, index: u32) -> [u8; 32] {
    let mut seed = [0u8; 32];
    seed[0] = namespace;
    seed[1..5].copy_from_slice(&index.to_le_bytes());
    seed[31] = 0xca;
    seed
}

pub const ACCOUNT_KEYS: u8 = 1;
pub const COMMITTEE_KEYS: u8 = 2;

/// A genesis spec with `members` committee members and `accounts` accounts, each holding `outputs_per_account`
/// CAS outputs of `amount`.
pub fn funded_spec(
    chain_id: u32,
    members: u32,
    accounts: u32,
    outputs_per_account: u32,
    amount: u64,
) -> GenesisSpec {
    GenesisSpec {
        chain_id,
        timestamp_ms: 0,
        params: ParamsSpec {
            min_fee: 1,
            block_interval_ms: 100,
            witness_span: crate::genesis::DEFAULT_WITNESS_SPAN,
            stake: Default::default(),
            matching_fee_bps: crate::genesis::DEFAULT_MATCHING_FEE_BPS,
            governance: Default::default(),
        },
        committee: (0..members)
            .map(|i| MemberSpec {
                key: key(COMMITTEE_KEYS, i).public().to_hex(),
                stake: 100,
            })
            .collect(),
        allocations: (0..accounts)
            .map(|i| AllocationSpec {
                owner: key(ACCOUNT_KEYS, i).public().to_hex(),
                amount,
                asset: None,
                outputs: outputs_per_account,
            })
            .collect(),
    }
}

/// The genesis block of [`funded_spec`].
pub fn funded_genesis(
    chain_id: u32,
    members: u32,
    accounts: u32,
    outputs_per_account: u32,
    amount: u64,
) -> Block {
    genesis_block(&funded_spec(
        chain_id,
        members,
        accounts,
        outputs_per_account,
        amount,
    ))
    .expect("the fixture spec is valid")
}

/// A transaction of `kind` on chain `chain_id` (network 0, no memo or client id), signed by `signer`.
pub fn signed(
    chain_id: u32,
    kind: TxKind,
    inputs: Vec<OutPoint>,
    outputs: Vec<TxOutput>,
    fee: u64,
    signer: &Keypair,
) -> Transaction {
    TxBody {
        chain_id,
        vn: 0,
        kind,
        inputs,
        outputs,
        fee,
        memo: Vec::new(),
        client_id: None,
    }
    .sign(&[signer])
}

/// One transfer per funded account of `genesis` (`funded_genesis`'s accounts 0..`accounts`): account i pays 10 to
/// account i + 1 (the last to account 0) out of its genesis coins, fee 1.
pub fn ring_transfers(chain_id: u32, genesis: &Block, accounts: u32) -> Vec<Transaction> {
    let coins = crate::genesis::genesis_outputs(&genesis.txs);
    (0..accounts)
        .map(|i| {
            let owner = key(ACCOUNT_KEYS, i);
            let owned: Vec<_> = coins
                .iter()
                .filter(|(_, c)| c.owner == owner.public())
                .copied()
                .collect();
            let to = key(ACCOUNT_KEYS, (i + 1) % accounts);
            transfer(chain_id, &owner, &owned, &to, 10, 1)
        })
        .collect()
}

/// A VN registration of `vn` with these endorsers (keys and weights) and threshold.
pub fn vn_register(vn: u32, endorsers: &[(&Keypair, u32)], threshold: u32) -> TxKind {
    let endorsers = endorsers
        .iter()
        .map(|(k, weight)| crate::vn::Endorser {
            key: k.public(),
            weight: *weight,
        })
        .collect();
    TxKind::VnRegister {
        policy: Box::new(crate::vn::PolicyTerms {
            vn,
            endorsers,
            threshold,
            fee: None,
        }),
    }
}

/// The coins (not records) of `owner` in `asset` in `ledger`'s set, sorted by outpoint.
pub fn coins_of(
    ledger: &crate::MemoryLedger,
    owner: &Keypair,
    asset: AssetId,
) -> Vec<(OutPoint, TxOutput)> {
    let mut coins: Vec<_> = ledger
        .utxos()
        .iter()
        .filter(|(o, c)| {
            !crate::rules::is_record(o) && c.owner == owner.public() && c.asset == asset
        })
        .map(|(o, c)| (*o, *c))
        .collect();
    coins.sort_by_key(|(o, _)| *o);
    coins
}

/// A CAS transfer spending `inputs` (all owned by `owner`) to `to`, paying `fee`, with the change back to the
/// owner. Panics if the inputs do not cover `amount + fee`: fixtures are built by code that knows the coins.
pub fn transfer(
    chain_id: u32,
    owner: &Keypair,
    inputs: &[(OutPoint, TxOutput)],
    to: &Keypair,
    amount: u64,
    fee: u64,
) -> Transaction {
    let total: u64 = inputs.iter().map(|(_, coin)| coin.amount).sum();
    let change = total
        .checked_sub(amount + fee)
        .expect("inputs cover amount and fee");
    let mut outputs = vec![TxOutput {
        amount,
        asset: AssetId::CAS,
        owner: to.public(),
        unlock_height: None,
    }];
    if change > 0 {
        outputs.push(TxOutput {
            amount: change,
            asset: AssetId::CAS,
            owner: owner.public(),
            unlock_height: None,
        });
    }
    TxBody {
        chain_id,
        vn: 0,
        kind: TxKind::Transfer,
        inputs: inputs.iter().map(|(outpoint, _)| *outpoint).collect(),
        outputs,
        fee,
        memo: Vec::new(),
        client_id: None,
    }
    .sign(&[owner])
}

/// One kind of each business transaction (tokens, allowances, orders, contracts, CIP proposals and votes, a VN
/// registration), over a
/// token of account 1's (its names past and within rkyv's inline string bytes): for id, codec, size and admission
/// tests.
pub fn token_kinds() -> Vec<TxKind> {
    use crate::token::{AllowanceTerms, OrderTerms, Side, TokenSpec};
    let token = crate::token::token_asset(&key(ACCOUNT_KEYS, 1).public(), 3);
    let spec = |name: &str, authority| TokenSpec {
        nonce: 3,
        name: name.into(),
        symbol: "GLD".into(),
        decimals: 6,
        max_supply: 1_000_000,
        offered: 10,
        price: 7,
        mint_authority: authority,
    };
    vec![
        TxKind::TokenIssue {
            spec: Box::new(spec("Gold", None)),
        },
        TxKind::TokenIssue {
            spec: Box::new(spec(
                "Gold of the Northern Mines",
                Some(key(ACCOUNT_KEYS, 2).public()),
            )),
        },
        TxKind::TokenMint { token },
        TxKind::Approve {
            terms: Box::new(AllowanceTerms {
                asset: token,
                spender: key(ACCOUNT_KEYS, 2).public(),
                amount: 50,
                expires_at: 90,
            }),
        },
        TxKind::TransferFrom {
            spend: Box::new(crate::token::Spend {
                from: key(ACCOUNT_KEYS, 1).public(),
                amount: 20,
            }),
        },
        TxKind::OrderPlace {
            terms: Box::new(OrderTerms {
                token,
                side: Side::Buy,
                amount: 5,
                price: 9,
            }),
        },
        TxKind::Fill { amount: 4 },
        TxKind::ContractDeploy {
            code: b"function main() { return 1; }".to_vec(),
        },
        TxKind::ContractCall {
            call: Box::new(crate::contract::ledger::ContractCall {
                contract: crate::Hash32([7; 32]),
                function: "pay".into(),
                args: vec![
                    crate::contract::ledger::ContractArg::Int(-3),
                    crate::contract::ledger::ContractArg::Text("short".into()),
                    crate::contract::ledger::ContractArg::Text(
                        "a text past rkyv's inline string bytes".into(),
                    ),
                ],
                code: b"function pay(n, a, b) { return n; }".to_vec(),
            }),
        },
        TxKind::Propose {
            terms: Box::new(crate::governance::ProposalTerms {
                title: "Raise the minimum fee to two".into(),
                window_blocks: 120,
                quorum_bps: 2_500,
                approval_bps: 6_000,
                change: Some(crate::governance::ParamChange {
                    param: crate::governance::Param::MinFee,
                    value: 2,
                    effective_at: 400,
                }),
            }),
        },
        TxKind::Propose {
            terms: Box::new(crate::governance::ProposalTerms {
                title: "A text resolution".into(),
                window_blocks: 100,
                quorum_bps: 2_000,
                approval_bps: 5_000,
                change: None,
            }),
        },
        TxKind::VnRegister {
            policy: Box::new(crate::vn::PolicyTerms {
                vn: 7,
                endorsers: (0..3)
                    .map(|i| crate::vn::Endorser {
                        key: key(ACCOUNT_KEYS, 10 + i).public(),
                        weight: i + 1,
                    })
                    .collect(),
                threshold: 4,
                fee: Some(crate::vn::VnFee {
                    token: crate::token::token_asset(&key(ACCOUNT_KEYS, 1).public(), 3),
                    amount: 5,
                    collector: key(ACCOUNT_KEYS, 13).public(),
                }),
            }),
        },
        TxKind::Vote {
            cast: Box::new(crate::governance::VoteCast {
                proposal: crate::Hash32([5; 32]),
                voter: key(ACCOUNT_KEYS, 2).public(),
                approve: false,
            }),
        },
    ]
}
