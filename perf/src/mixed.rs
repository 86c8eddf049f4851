//! The transfer path with and without business transactions: loads of the same size, one of plain transfers, one
//! where every tenth account makes token and contract transactions instead (an approve of its own GOLD, a
//! transfer-from of that allowance, a contract call, in turn, one per block), and one of the same transfers on a
//! business network without a Policy (the VN layer on: each transaction reads its VN's records), run through the
//! durable pipeline (`durable`) in alternating rounds by `cargo bench -p cas-perf --bench mixed`. The blocks'
//! commitments come from the reference ledger, which also checks that every transaction of every load is accepted.

use cas_engine::contract::ledger::{contract_id, ContractArg, ContractCall};
use cas_engine::fixtures::{funded_spec, key, signed, transfer, ACCOUNT_KEYS};
use cas_engine::genesis::{genesis_block, genesis_outputs, AllocationSpec};
use cas_engine::token::{object_place, AllowanceTerms, ObjectKind, Spend};
use cas_engine::{AssetId, Hash32, Keypair, MemoryLedger, OutPoint, Transaction, TxKind, TxOutput};

use crate::pipeline::Load;
use crate::CHAIN_ID;

/// The contract every mixed account calls: a check on its argument, so a call parses, costs and runs the code.
pub const CONTRACT: &str =
    r#"function ok(n) { require(n > 0, "positive"); emit("ok", n); return n; }"#;

/// The asset the mixed accounts approve and move (allocated at genesis).
pub fn gold() -> AssetId {
    AssetId(Hash32::of("CAS bench gold", b"gold"))
}

/// One account's coins as its chain goes.
struct Wallet {
    key: Keypair,
    cas: (OutPoint, TxOutput),
    gold: Vec<(OutPoint, TxOutput)>,
    /// The allowance it granted itself last block, if any.
    allowance: Option<OutPoint>,
}

/// What a load's accounts send.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mix {
    /// Transfers on the public network.
    Plain,
    /// Every tenth account makes business transactions instead (block 1 also deploys the contract).
    Business,
    /// Transfers on VN 1, which block 1 registers first with no Policy.
    Vn,
}

/// The VN of [`Mix::Vn`].
pub const BENCH_VN: u32 = 1;

/// `accounts` accounts over `blocks` dependent blocks sending what `mix` says. `transfers` counts the transfers.
pub fn load(accounts: u32, blocks: u64, mix: Mix) -> (Load, usize) {
    let mixed = mix == Mix::Business;
    let deployer_index = accounts;
    let mut spec = funded_spec(CHAIN_ID, 4, accounts + 1, 1, 1_000_000_000);
    spec.allocations
        .extend((0..accounts).step_by(10).map(|a| AllocationSpec {
            owner: key(ACCOUNT_KEYS, a).public().to_hex(),
            amount: 1_000_000,
            asset: Some(gold().0.to_hex()),
            outputs: 1,
        }));
    let genesis = genesis_block(&spec).expect("the bench genesis is valid");
    let mut reference = MemoryLedger::from_genesis(&genesis).expect("the bench genesis is valid");
    let coins = genesis_outputs(&genesis.txs);
    let mut wallets: Vec<Wallet> = (0..=accounts)
        .map(|a| {
            let key = key(ACCOUNT_KEYS, a);
            let mine = |asset: AssetId| {
                coins
                    .iter()
                    .filter(|(_, c)| c.owner == key.public() && c.asset == asset)
                    .copied()
                    .collect::<Vec<_>>()
            };
            Wallet {
                cas: mine(AssetId::CAS)[0],
                gold: mine(gold()),
                allowance: None,
                key,
            }
        })
        .collect();
    let deployer = &wallets[deployer_index as usize];
    let deploy = signed(
        CHAIN_ID,
        TxKind::ContractDeploy {
            code: CONTRACT.as_bytes().to_vec(),
        },
        vec![deployer.cas.0],
        vec![TxOutput {
            amount: deployer.cas.1.amount - 1,
            ..deployer.cas.1
        }],
        1,
        &deployer.key,
    );
    let contract = contract_id(&deploy.tx_id());
    let mut parent = genesis.header.hash();
    let (mut encoded, mut all, mut transfers) = (Vec::new(), Vec::new(), 0);
    for height in 1..=blocks {
        let mut txs = Vec::with_capacity(accounts as usize + 1);
        if height == 1 && mixed {
            txs.push(deploy.clone());
        }
        if height == 1 && mix == Mix::Vn {
            txs.push(register_vn(&wallets[deployer_index as usize]));
        }
        for a in 0..accounts {
            let next = key(ACCOUNT_KEYS, (a + 1) % accounts);
            let wallet = &mut wallets[a as usize];
            let tx = if mixed && a % 10 == 0 {
                business(wallet, height, &contract)
            } else if mix == Mix::Vn {
                transfers += 1;
                let mut body = transfer(CHAIN_ID, &wallet.key, &[wallet.cas], &next, 1, 1).body;
                body.vn = BENCH_VN;
                body.sign(&[&wallet.key])
            } else {
                transfers += 1;
                transfer(CHAIN_ID, &wallet.key, &[wallet.cas], &next, 1, 1)
            };
            // The CAS change is output 1 of a transfer, output 0 of a transfer-from or call, the last of an approve.
            let change = tx
                .body
                .outputs
                .iter()
                .rposition(|o| o.asset == AssetId::CAS && o.owner == wallet.key.public())
                .expect("every transaction returns the sender's CAS change");
            wallet.cas = (
                OutPoint {
                    tx: tx.tx_id(),
                    index: change as u32,
                },
                tx.body.outputs[change],
            );
            txs.push(tx);
        }
        let mut block = crate::block_at(height, parent, txs);
        block.header.utxo_commitment = reference.commitment();
        let bytes = cas_engine::codec::encode_block(&block);
        let archived = cas_engine::codec::decode_block(&bytes).expect("the bench block decodes");
        let verdicts = reference.apply_block(archived);
        assert!(
            verdicts.iter().all(Result::is_ok),
            "every bench transaction is valid: {:?}",
            verdicts.iter().find(|v| v.is_err())
        );
        parent = block.header.hash();
        all.extend(block.txs.iter().cloned());
        encoded.push(bytes.to_vec());
    }
    let load = Load {
        genesis,
        blocks: encoded,
        txs: all,
    };
    (load, transfers)
}

/// The registration of [`BENCH_VN`] without a Policy, paid from the deployer's coin (which nothing else spends).
fn register_vn(deployer: &Wallet) -> Transaction {
    let kind = cas_engine::fixtures::vn_register(BENCH_VN, &[], 0);
    let change = TxOutput {
        amount: deployer.cas.1.amount - 1,
        ..deployer.cas.1
    };
    signed(
        CHAIN_ID,
        kind,
        vec![deployer.cas.0],
        vec![change],
        1,
        &deployer.key,
    )
}

/// A mixed account's transaction at `height`: approve 1 GOLD to itself, then move it with a transfer-from, then
/// call the contract, in turn (the call from block 3 on, after the deploy of block 1).
fn business(wallet: &mut Wallet, height: u64, contract: &Hash32) -> Transaction {
    let me = wallet.key.public();
    let cas = |amount| TxOutput {
        amount,
        asset: AssetId::CAS,
        owner: me,
        unlock_height: None,
    };
    let (kind, inputs, outputs) = match (height % 3, wallet.allowance.take()) {
        (2, Some(allowance)) => {
            let kind = TxKind::TransferFrom {
                spend: Box::new(Spend {
                    from: me,
                    amount: 1,
                }),
            };
            let outputs = vec![
                cas(wallet.cas.1.amount - 1),
                TxOutput {
                    amount: 1,
                    asset: gold(),
                    owner: me,
                    unlock_height: None,
                },
            ];
            (kind, vec![allowance, wallet.cas.0], outputs)
        }
        (0, _) => {
            let kind = TxKind::ContractCall {
                call: Box::new(ContractCall {
                    contract: *contract,
                    function: "ok".into(),
                    args: vec![ContractArg::Int(height as i64)],
                    code: CONTRACT.as_bytes().to_vec(),
                }),
            };
            (kind, vec![wallet.cas.0], vec![cas(wallet.cas.1.amount - 1)])
        }
        _ => {
            let held: u64 = wallet.gold.iter().map(|(_, c)| c.amount).sum();
            let kind = TxKind::Approve {
                terms: Box::new(AllowanceTerms {
                    asset: gold(),
                    spender: me,
                    amount: 1,
                    expires_at: u64::MAX,
                }),
            };
            let mut inputs: Vec<OutPoint> = wallet.gold.iter().map(|(o, _)| *o).collect();
            inputs.push(wallet.cas.0);
            let change = TxOutput {
                amount: held - 1,
                asset: gold(),
                owner: me,
                unlock_height: None,
            };
            (kind, inputs, vec![change, cas(wallet.cas.1.amount - 1)])
        }
    };
    let tx = signed(CHAIN_ID, kind, inputs, outputs, 1, &wallet.key);
    let id = tx.tx_id();
    match tx.body.kind {
        TxKind::Approve { .. } => {
            wallet.gold = vec![(OutPoint { tx: id, index: 0 }, tx.body.outputs[0])];
            wallet.allowance = Some(ObjectKind::Allowance.escrow_at(object_place(&id, 0)));
        }
        TxKind::TransferFrom { .. } => {
            wallet
                .gold
                .push((OutPoint { tx: id, index: 1 }, tx.body.outputs[1]));
        }
        _ => {}
    }
    tx
}
