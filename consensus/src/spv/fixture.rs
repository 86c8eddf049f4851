//! A small certified chain for the SPV tests: a funded genesis, `n` linked headers, three transfers at
//! [`PAY_HEIGHT`] (the second rejected), and certificates signed by three of four committee members on demand.

use std::collections::BTreeMap;

use cas_engine::fixtures::{funded_genesis, key, ring_transfers, ACCOUNT_KEYS, COMMITTEE_KEYS};
use cas_engine::merkle;
use cas_engine::{BlockHeader, Hash32, Keypair, PublicKey, Transaction, TxId};

use super::payment::PaymentProof;
use crate::committee::Committee;
use crate::ledger_cert::{result_leaves, results_root, LedgerCert, LedgerStatement};
use crate::messages::SignerSignature;

pub const CHAIN_ID: u32 = 7;
/// The height whose block holds the fixture's transfers.
pub const PAY_HEIGHT: u64 = 3;

/// A block's transactions and their (id, verdict code), in block order.
pub type BlockBody = (Vec<Transaction>, Vec<(TxId, u16)>);

pub struct Fixture {
    pub genesis: BlockHeader,
    pub keys: Vec<Keypair>,
    pub committee: Committee,
    /// Heights 1..=n, at index height - 1.
    pub headers: Vec<BlockHeader>,
    /// The blocks with transactions, by height (the others are empty).
    pub blocks: BTreeMap<u64, BlockBody>,
}

/// Keys of the genesis committee (stake 1 each).
pub fn committee_keys(from: u32) -> (Committee, Vec<Keypair>) {
    let keys: Vec<Keypair> = (from..from + 4).map(|i| key(COMMITTEE_KEYS, i)).collect();
    let committee = Committee::new(keys.iter().map(|k| (k.public(), 1)).collect()).unwrap();
    (committee, keys)
}

pub fn payee() -> Keypair {
    key(ACCOUNT_KEYS, 1)
}

impl Fixture {
    pub fn new(n: u64) -> Fixture {
        let genesis_block = funded_genesis(CHAIN_ID, 4, 3, 1, 1_000);
        let txs: Vec<Transaction> = ring_transfers(CHAIN_ID, &genesis_block, 3);
        let ids: Vec<TxId> = txs.iter().map(|t| t.tx_id()).collect();
        let mut blocks = BTreeMap::new();
        blocks.insert(
            PAY_HEIGHT,
            (txs, vec![(ids[0], 0), (ids[1], 13), (ids[2], 0)]),
        );
        let (committee, keys) = committee_keys(0);
        let mut fixture = Fixture {
            genesis: genesis_block.header,
            keys,
            committee,
            headers: Vec::new(),
            blocks,
        };
        let mut parent = fixture.genesis.hash();
        for height in 1..=n {
            let header = fixture.header_over(height, parent);
            parent = header.hash();
            fixture.headers.push(header);
        }
        fixture
    }

    fn header_over(&self, height: u64, parent: Hash32) -> BlockHeader {
        let txs = self
            .blocks
            .get(&height)
            .map(|b| b.0.as_slice())
            .unwrap_or(&[]);
        let ids: Vec<TxId> = txs.iter().map(|t| t.tx_id()).collect();
        BlockHeader {
            chain_id: CHAIN_ID,
            height,
            round: height + 2,
            parent,
            tx_root: merkle::root(&ids),
            sig_root: cas_engine::block::signatures_root(txs),
            proposer: PublicKey([2; 32]),
            timestamp_ms: 1_000 * height,
            utxo_commitment: Hash32([3; 32]),
        }
    }

    pub fn header(&self, height: u64) -> &BlockHeader {
        &self.headers[height as usize - 1]
    }

    fn results(&self, height: u64) -> &[(TxId, u16)] {
        self.blocks
            .get(&height)
            .map(|b| b.1.as_slice())
            .unwrap_or(&[])
    }

    /// The statement on the header at `height` as epoch `epoch`.
    pub fn statement(&self, height: u64, epoch: u64) -> LedgerStatement {
        LedgerStatement {
            chain_id: CHAIN_ID,
            epoch,
            height,
            block: self.header(height).hash(),
            consensus: Hash32([4; 32]),
            results_root: results_root(self.results(height)),
            utxo_commitment: Hash32([5; 32]),
        }
    }

    /// `statement` signed by the first three of `keys`.
    pub fn sign(statement: LedgerStatement, keys: &[Keypair]) -> LedgerCert {
        let digest = statement.digest();
        LedgerCert {
            statement,
            signatures: (0..3)
                .map(|i| SignerSignature {
                    signer: i as u16,
                    signature: keys[i].sign(&digest.0),
                })
                .collect(),
        }
    }

    /// The genesis committee's certificate on the header at `height`.
    pub fn cert(&self, height: u64) -> LedgerCert {
        Fixture::sign(self.statement(height, 0), &self.keys)
    }

    /// The proof of the transaction at `index` of the block at `height`, with the block's certificate.
    pub fn proof(&self, height: u64, index: usize) -> PaymentProof {
        let (txs, results) = &self.blocks[&height];
        let ids: Vec<TxId> = results.iter().map(|r| r.0).collect();
        PaymentProof {
            tx: cas_engine::codec::encode_tx(&txs[index]).to_vec(),
            height,
            index: index as u32,
            code: results[index].1,
            tx_path: merkle::proof(&ids, index).unwrap(),
            results_path: merkle::proof(&result_leaves(results), index).unwrap(),
            cert: Some(self.cert(height)),
        }
    }
}
