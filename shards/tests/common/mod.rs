//! Deterministic random chains for the shards tests: blocks mixing valid transfers, chains inside a block, double
//! spends, missing inputs, bad signatures and stake transactions (candidacies, bonds to declared and undeclared
//! candidates, unbonds) and token transactions (issues with offers and mint rights, repeated nonces, fills of
//! orders in and past their escrow, orders taken back) and CIP proposals and votes (repeated, without a ballot, after
//! the window) and VN registrations and payments with too few or enough endorsements, each ending with an issuance that pays the fee pot and names random committee members
//! absent (so conduct records are written, replaced, blacklist and evict, and elections leave the evicted out), with
//! the reference verdicts and commitments of `MemoryLedger`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use cas_engine::codec::{decode_block, encode_block};
use cas_engine::fixtures::{funded_spec, key, signed, transfer, ACCOUNT_KEYS, COMMITTEE_KEYS};
use cas_engine::genesis::genesis_block;
use cas_engine::rules::{fee_pot_outpoint, TxError};
use cas_engine::{
    merkle, AssetId, Block, BlockHeader, Hash32, Keypair, MemoryLedger, OutPoint, PublicKey,
    Transaction, TxBody, TxKind, TxOutput,
};
use cas_shards::{DurableLedgerConfig, LedgerConfig, StoreConfig};

pub const CHAIN_ID: u32 = 7;
const ACCOUNTS: u32 = 24;
const MEMBERS: u32 = 4;

/// A tiny deterministic generator (splitmix64), so a child process rebuilds the same chain from the seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

pub struct Chain {
    pub genesis: Block,
    /// Encoded blocks at heights 1..=n (`blocks[h - 1]`).
    pub blocks: Vec<Vec<u8>>,
    /// Reference verdicts per block.
    pub verdicts: Vec<Vec<Result<(), TxError>>>,
    /// Reference UTXO checksum after height h (`commitments[0]` is genesis).
    pub commitments: Vec<Hash32>,
    pub reference: MemoryLedger,
}

fn pick(rng: &mut Rng, coins: &mut Vec<(OutPoint, TxOutput)>) -> Option<(OutPoint, TxOutput)> {
    if coins.is_empty() {
        return None;
    }
    let index = rng.below(coins.len() as u64) as usize;
    Some(coins.swap_remove(index))
}

fn pay(
    rng: &mut Rng,
    keys: &HashMap<PublicKey, Keypair>,
    coin: (OutPoint, TxOutput),
) -> Option<Transaction> {
    if coin.1.amount < 3 {
        return None;
    }
    // The genesis committee's stake is not the generator's to spend.
    let owner = keys.get(&coin.1.owner)?;
    let to = key(ACCOUNT_KEYS, rng.below(u64::from(ACCOUNTS)) as u32);
    let amount = 1 + rng.below(coin.1.amount - 2);
    let tx = transfer(CHAIN_ID, owner, &[coin], &to, amount, 1);
    // One in four carries a client id from a small space, so a sender repeats one now and then, in a block and
    // across blocks (the ledger applies each once: issue 17).
    if rng.below(4) > 0 {
        return Some(tx);
    }
    let mut body = tx.body;
    body.client_id = Some(rng.below(4));
    Some(body.sign(&[owner]))
}

/// A stake transaction spending `coin`: from CAS a candidacy with a self-bond or a bond to a random account
/// (declared or not); from stake, an unbond into CAS locked for the delay (or, one time in four, not long enough).
fn stake(
    rng: &mut Rng,
    keys: &HashMap<PublicKey, Keypair>,
    coin: (OutPoint, TxOutput),
    height: u64,
    unbond_delay_blocks: u64,
) -> Option<Transaction> {
    if coin.1.amount < 3 {
        return None;
    }
    // The genesis committee's stake is not the generator's to spend.
    let owner = keys.get(&coin.1.owner)?;
    let amount = 1 + rng.below(coin.1.amount - 2);
    let change = coin.1.amount - amount - 1;
    let output = |amount, asset, unlock_height| TxOutput {
        amount,
        asset,
        owner: owner.public(),
        unlock_height,
    };
    let backed = (0..ACCOUNTS)
        .map(|i| key(ACCOUNT_KEYS, i).public())
        .find(|k| AssetId::stake_of(k) == coin.1.asset);
    let (kind, outputs) = match backed {
        Some(candidate) => {
            let short = u64::from(rng.below(4) == 0);
            let locked = output(
                coin.1.amount - 1,
                AssetId::CAS,
                Some(height + unbond_delay_blocks - short),
            );
            (TxKind::Unbond { candidate }, vec![locked])
        }
        None if coin.1.asset != AssetId::CAS => return None,
        None => {
            let (kind, candidate) = if rng.below(2) == 0 {
                let address = vec![10, 0, 0, rng.below(255) as u8, 0x23, 0x28];
                (TxKind::Candidacy { address }, owner.public())
            } else {
                let candidate = key(ACCOUNT_KEYS, rng.below(u64::from(ACCOUNTS)) as u32).public();
                (TxKind::Bond { candidate }, candidate)
            };
            let mut outputs = vec![output(amount, AssetId::stake_of(&candidate), None)];
            if change > 0 {
                outputs.push(output(change, AssetId::CAS, None));
            }
            (kind, outputs)
        }
    };
    Some(signed(CHAIN_ID, kind, vec![coin.0], outputs, 1, owner))
}

fn outputs_of(tx: &Transaction) -> Vec<(OutPoint, TxOutput)> {
    let id = tx.tx_id();
    tx.body
        .outputs
        .iter()
        .enumerate()
        .map(|(i, o)| {
            (
                OutPoint {
                    tx: id,
                    index: i as u32,
                },
                *o,
            )
        })
        .collect()
}

/// The issuance ending block `height`: it pays the previous block's fee pot, if any, to the first member, and names
/// each member absent with odds one in two (and, one time in five, names no one: a certificate not the committee's).
fn issuance(
    rng: &mut Rng,
    reference: &MemoryLedger,
    height: u64,
    members: &[PublicKey],
) -> Transaction {
    let pot = fee_pot_outpoint(height - 1);
    let pot = reference.utxos().get(&pot).map(|entry| (pot, entry.amount));
    let absent = (rng.below(5) > 0).then(|| {
        members
            .iter()
            .filter(|_| rng.below(2) == 0)
            .copied()
            .collect()
    });
    Transaction {
        body: TxBody {
            chain_id: CHAIN_ID,
            vn: 0,
            kind: TxKind::Issuance {
                height,
                evidence: Vec::new(),
                absent,
            },
            inputs: pot.iter().map(|(outpoint, _)| *outpoint).collect(),
            outputs: pot
                .iter()
                .map(|(_, amount)| TxOutput {
                    amount: *amount,
                    asset: AssetId::CAS,
                    owner: members[0],
                    unlock_height: None,
                })
                .collect(),
            fee: 0,
            memo: Vec::new(),
            client_id: None,
        },
        signatures: Vec::new(),
    }
}

/// `blocks` blocks of `txs_per_block` transactions from `seed`.
/// A token transaction over the CAS `coin`: an issue with an offer (nonces from a small space, so some repeat and
/// are refused, and one in four past its maximum supply), or a fill of a random order of the set (sometimes of more than it holds), or its maker taking it
/// back.
fn token(
    rng: &mut Rng,
    keys: &HashMap<PublicKey, Keypair>,
    coin: (OutPoint, TxOutput),
    reference: &MemoryLedger,
) -> Option<Transaction> {
    use cas_engine::token::{matching_fee, mint_right_of, object_kind, ObjectKind, Order, Side};
    if coin.1.asset != AssetId::CAS || coin.1.amount < 10_000 {
        return None;
    }
    let owner = keys.get(&coin.1.owner)?;
    let output = |owner: PublicKey, amount, asset| TxOutput {
        amount,
        asset,
        owner,
        unlock_height: None,
    };
    let mut orders: Vec<(OutPoint, Order)> = reference
        .utxos()
        .iter()
        .filter(|(o, _)| object_kind(o) == Some(ObjectKind::Order))
        .map(|(o, escrow)| {
            let terms = reference.utxos()[&ObjectKind::Order.terms_at(o.tx)];
            (*o, Order::of(escrow, &terms))
        })
        .collect();
    orders.sort_unstable_by_key(|(o, _)| *o);
    let change = |spent: u64| output(owner.public(), coin.1.amount - spent - 1, AssetId::CAS);
    let (kind, inputs, outputs) = match rng.below(3) {
        0 | 1 if !orders.is_empty() => {
            let (place, order) = orders[rng.below(orders.len() as u64) as usize];
            let mine = order.maker == owner.public();
            if mine && order.side == Side::Sell {
                // Taken back: the escrowed tokens return to the maker.
                let back = output(owner.public(), order.escrow, order.token);
                (TxKind::Transfer, vec![place, coin.0], vec![back, change(0)])
            } else if order.side == Side::Sell {
                let amount = 1 + rng.below(order.escrow + order.escrow / 8);
                let notional = amount * order.price;
                let fee = matching_fee(notional, 10).unwrap();
                if notional + fee + 1 >= coin.1.amount || notional <= fee {
                    return None;
                }
                let outputs = vec![
                    output(order.maker, notional - fee, AssetId::CAS),
                    output(owner.public(), amount, order.token),
                    change(notional + fee),
                ];
                (TxKind::Fill { amount }, vec![place, coin.0], outputs)
            } else {
                return None;
            }
        }
        _ => {
            let nonce = rng.below(4);
            let max_supply = 1 + rng.below(100_000);
            let offered = rng.below(max_supply);
            let token = cas_engine::token::token_asset(&owner.public(), nonce);
            let mut outputs = vec![change(0)];
            let (kept, rights) = if rng.below(2) == 0 {
                (max_supply - offered, 0)
            } else {
                let kept = rng.below(max_supply - offered + 1);
                (kept, max_supply - offered - kept)
            };
            // One in four creates a unit past the maximum supply (refused).
            let kept = kept + u64::from(rng.below(4) == 0);
            if kept > 0 {
                outputs.push(output(owner.public(), kept, token));
            }
            if rights > 0 {
                outputs.push(output(owner.public(), rights, mint_right_of(&token)));
            }
            let spec = cas_engine::token::TokenSpec {
                nonce,
                name: "Random".into(),
                symbol: "RND".into(),
                decimals: 0,
                max_supply,
                offered,
                price: 1 + rng.below(3),
                mint_authority: (rights > 0).then(|| owner.public()),
            };
            let kind = TxKind::TokenIssue {
                spec: Box::new(spec),
            };
            (kind, vec![coin.0], outputs)
        }
    };
    Some(signed(CHAIN_ID, kind, inputs, outputs, 1, owner))
}

/// A CIP proposal (a window of 2 to 5 blocks, half of them changing the unbond delay) or, three times in four, a
/// vote by the coin's owner (who may have voted already) on an open proposal or, one time in four, a closed one.
fn governance(
    rng: &mut Rng,
    keys: &HashMap<PublicKey, Keypair>,
    coin: (OutPoint, TxOutput),
    reference: &MemoryLedger,
    height: u64,
) -> Option<Transaction> {
    use cas_engine::governance::{Param, ParamChange, ProposalTerms, VoteCast};
    if coin.1.asset != AssetId::CAS || coin.1.amount < 2 {
        return None;
    }
    let owner = keys.get(&coin.1.owner)?;
    let (open, closed): (Vec<_>, Vec<_>) = reference
        .governance()
        .all()
        .partition(|state| state.resolution.is_none());
    // One vote in four goes to a closed proposal when there is one (refused).
    let targets = match rng.below(4) {
        0 if !closed.is_empty() => closed,
        _ => open,
    };
    let kind = if targets.is_empty() || rng.below(4) == 0 {
        let window_blocks = 2 + rng.below(4);
        let change = (rng.below(2) == 0).then(|| ParamChange {
            param: Param::UnbondDelayBlocks,
            value: 2 + rng.below(5),
            effective_at: height + window_blocks + 1 + rng.below(3),
        });
        TxKind::Propose {
            terms: Box::new(ProposalTerms {
                title: "Random".into(),
                window_blocks,
                quorum_bps: 1_000 * (1 + rng.below(3) as u32),
                approval_bps: 5_000,
                change,
            }),
        }
    } else {
        TxKind::Vote {
            cast: Box::new(VoteCast {
                proposal: targets[rng.below(targets.len() as u64) as usize]
                    .proposal
                    .id,
                voter: owner.public(),
                approve: rng.below(3) > 0,
            }),
        }
    };
    let change = TxOutput {
        amount: coin.1.amount - 1,
        ..coin.1
    };
    Some(signed(CHAIN_ID, kind, vec![coin.0], vec![change], 1, owner))
}

/// VN `vn`'s endorsers in the generated chains: three accounts, weights 1, 1 and 2.
fn vn_endorsers(vn: u32) -> [(Keypair, u32); 3] {
    [0, 1, 2].map(|i| (key(ACCOUNT_KEYS, vn + i), 1 + i / 2))
}

/// One time in four a registration of VN 1, 2 or 3 (threshold 2; a second one is refused), else a payment of the
/// coin's owner to itself on one of them, signed by a random subset of that VN's endorsers (too few, enough, or
/// the VN not registered yet).
fn business_network(
    rng: &mut Rng,
    keys: &HashMap<PublicKey, Keypair>,
    coin: (OutPoint, TxOutput),
) -> Option<Transaction> {
    if coin.1.asset != AssetId::CAS || coin.1.amount < 2 {
        return None;
    }
    let owner = keys.get(&coin.1.owner)?;
    let vn = 1 + rng.below(3) as u32;
    let endorsers = vn_endorsers(vn);
    let (kind, network) = if rng.below(4) == 0 {
        let weighted: Vec<_> = endorsers.iter().map(|(k, w)| (k, *w)).collect();
        (cas_engine::fixtures::vn_register(vn, &weighted, 2), 0)
    } else {
        (TxKind::Transfer, vn)
    };
    let mut signers = vec![owner];
    signers.extend(
        endorsers
            .iter()
            .filter(|(k, _)| network != 0 && k.public() != owner.public() && rng.below(2) == 0)
            .map(|(k, _)| k),
    );
    let change = TxOutput {
        amount: coin.1.amount - 1,
        ..coin.1
    };
    let body = TxBody {
        chain_id: CHAIN_ID,
        vn: network,
        kind,
        inputs: vec![coin.0],
        outputs: vec![change],
        fee: 1,
        memo: Vec::new(),
        client_id: None,
    };
    Some(body.sign(&signers))
}

pub fn chain(seed: u64, blocks: usize, txs_per_block: usize) -> Chain {
    let mut rng = Rng::new(seed);
    let mut spec = funded_spec(CHAIN_ID, MEMBERS, ACCOUNTS, 3, 1_000_000);
    // Punishment and elections within a short chain.
    spec.params.stake.epoch_blocks = 8;
    spec.params.stake.absence_limit = 2;
    spec.params.stake.blacklist_blocks = 3;
    spec.params.stake.evict_after = 2;
    // CIP votes that open and close within a short chain.
    spec.params.governance.window_blocks_min = 2;
    spec.params.governance.quorum_bps_min = 1_000;
    let genesis = genesis_block(&spec).expect("fixture genesis");
    let members: Vec<PublicKey> = (0..MEMBERS)
        .map(|i| key(COMMITTEE_KEYS, i).public())
        .collect();
    let mut reference = MemoryLedger::from_genesis(&genesis).expect("fixture genesis");
    let keys: HashMap<PublicKey, Keypair> = (0..ACCOUNTS)
        .map(|i| (key(ACCOUNT_KEYS, i).public(), key(ACCOUNT_KEYS, i)))
        .collect();
    let mut chain = Chain {
        genesis: genesis.clone(),
        blocks: Vec::new(),
        verdicts: Vec::new(),
        commitments: vec![reference.commitment()],
        reference: reference.clone(),
    };
    let mut parent = genesis.header.hash();
    for height in 1..=blocks as u64 {
        let mut fresh: Vec<(OutPoint, TxOutput)> =
            reference.utxos().iter().map(|(o, c)| (*o, *c)).collect();
        fresh.sort_unstable_by_key(|(o, _)| *o);
        let mut spent_here: Vec<(OutPoint, TxOutput)> = Vec::new();
        let mut created_here: Vec<(OutPoint, TxOutput)> = Vec::new();
        let mut txs = Vec::new();
        let mut attempts = 0;
        while txs.len() < txs_per_block && attempts < 20 * txs_per_block {
            attempts += 1;
            let roll = rng.below(10);
            let tx = match roll {
                // A second spend of a coin spent earlier in this block (or a missing input when none).
                0 if !spent_here.is_empty() => {
                    let coin = spent_here[rng.below(spent_here.len() as u64) as usize];
                    pay(&mut rng, &keys, coin)
                }
                // An input that never existed.
                0 | 1 => fresh.first().copied().and_then(|mut ghost| {
                    ghost.0.tx = Hash32(rng.next().to_le_bytes().repeat(4).try_into().unwrap());
                    pay(&mut rng, &keys, ghost)
                }),
                // A bad signature over a real coin (the coin stays unspent).
                2 => {
                    let index = rng.below(fresh.len() as u64) as usize;
                    let flip = rng.below(64) as usize;
                    fresh
                        .get(index)
                        .copied()
                        .and_then(|coin| pay(&mut rng, &keys, coin))
                        .map(|mut tx| {
                            tx.signatures[0].signature.0[flip] ^= 1;
                            tx
                        })
                }
                // Spend an output created earlier in this block.
                3 if !created_here.is_empty() => {
                    let coin =
                        created_here.swap_remove(rng.below(created_here.len() as u64) as usize);
                    spent_here.push(coin);
                    pay(&mut rng, &keys, coin)
                }
                // A stake transaction; half of them over a stake coin when there is one (an unbond).
                4 => {
                    let staked = fresh.iter().position(|(o, c)| {
                        c.asset != AssetId::CAS
                            && !cas_engine::rules::is_record(o)
                            && keys.contains_key(&c.owner)
                    });
                    match staked.filter(|_| rng.below(2) == 0) {
                        Some(index) => Some(fresh.swap_remove(index)),
                        None => pick(&mut rng, &mut fresh),
                    }
                }
                .and_then(|coin| {
                    spent_here.push(coin);
                    let delay = reference.context_for(height).unbond_delay_blocks;
                    stake(&mut rng, &keys, coin, height, delay)
                }),
                // A token issue, a fill of an order of the set or an order taken back.
                5 => pick(&mut rng, &mut fresh).and_then(|coin| {
                    spent_here.push(coin);
                    token(&mut rng, &keys, coin, &reference)
                }),
                // A CIP proposal or a vote.
                6 => pick(&mut rng, &mut fresh).and_then(|coin| {
                    spent_here.push(coin);
                    governance(&mut rng, &keys, coin, &reference, height)
                }),
                // A VN registration or a payment on a VN, endorsed or not.
                7 => pick(&mut rng, &mut fresh).and_then(|coin| {
                    spent_here.push(coin);
                    business_network(&mut rng, &keys, coin)
                }),
                _ => pick(&mut rng, &mut fresh).and_then(|coin| {
                    spent_here.push(coin);
                    pay(&mut rng, &keys, coin)
                }),
            };
            if let Some(tx) = tx {
                created_here.extend(outputs_of(&tx));
                txs.push(tx);
            }
        }
        txs.push(issuance(&mut rng, &reference, height, &members));
        let ids: Vec<Hash32> = txs.iter().map(Transaction::tx_id).collect();
        let block = Block {
            header: BlockHeader {
                chain_id: CHAIN_ID,
                height,
                round: height,
                parent,
                tx_root: merkle::root(&ids),
                sig_root: cas_engine::block::signatures_root(&txs),
                proposer: PublicKey::default(),
                timestamp_ms: height * 100,
                // The set after the parent: the header commits to the state the block applies to.
                utxo_commitment: reference.commitment(),
            },
            txs,
        };
        let verdicts = {
            let bytes = encode_block(&block);
            reference.apply_block(decode_block(&bytes).expect("fixture block decodes"))
        };
        parent = block.header.hash();
        chain.blocks.push(encode_block(&block).to_vec());
        chain.verdicts.push(verdicts);
        chain.commitments.push(reference.commitment());
    }
    chain.reference = reference;
    chain
}

/// A fresh empty directory under the system temp dir, unique to this process and `name`.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cas-shards-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A node of 2 unpinned shards with small segments (so tests roll them) and a snapshot every
/// `snapshot_every_blocks` blocks.
pub fn node_config(segment_bytes_max: u64, snapshot_every_blocks: u64) -> DurableLedgerConfig {
    DurableLedgerConfig {
        ledger: LedgerConfig {
            shards: 2,
            pin_cores: false,
            ..LedgerConfig::default()
        },
        store: StoreConfig {
            segment_bytes_max,
            ..StoreConfig::default()
        },
        snapshot_every_blocks,
    }
}
