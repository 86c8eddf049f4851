//! One shard: the unspent outputs of its hash partition, their LtHash commitment, and the balance index
//! ((owner, asset) -> balance, owner -> outpoints). It owns this state alone, on its own executor, and changes it
//! only through [`Command`]s that arrive in order; it never sees another shard's state.

use std::sync::Arc;

use cas_engine::codec::access_block_trusted;
use cas_engine::rules::{verify_signatures, TxError};
use cas_engine::{
    ArchivedTransaction, AssetId, OutPoint, PublicKey, SetCommitment, TxId, TxOutput,
};
use crossbeam_channel::{select_biased, Receiver, Sender};

use crate::hash::{FastMap, FastSet};

/// A result of a signature job: the tx ids and verdicts of `txs[start..start + ids.len()]`.
pub(crate) struct VerifyDone {
    pub start: usize,
    pub ids: Vec<TxId>,
    pub verdicts: Vec<Result<(), TxError>>,
}

/// Bytes of a block that the coordinator already decoded with the validating decoder.
pub(crate) type ValidatedBlock = Arc<Vec<u8>>;

pub(crate) enum Command {
    /// Compute tx ids (and, when `check_signatures`, verify signatures) of `txs[start..end]`.
    Verify {
        block: ValidatedBlock,
        start: usize,
        end: usize,
        check_signatures: bool,
        reply: Sender<VerifyDone>,
    },
    /// The outpoints of `outpoints` that are in this shard's set, with their coins.
    Lookup {
        outpoints: Vec<OutPoint>,
        reply: Sender<Vec<(OutPoint, TxOutput)>>,
    },
    /// Remove `spent`, add `created`; answer with the shard's commitment afterwards.
    Commit {
        spent: Vec<(OutPoint, TxOutput)>,
        created: Vec<(OutPoint, TxOutput)>,
        reply: Sender<SetCommitment>,
    },
    Balance {
        owner: PublicKey,
        asset: AssetId,
        reply: Sender<u128>,
    },
    Outputs {
        owner: PublicKey,
        reply: Sender<Vec<(OutPoint, TxOutput)>>,
    },
    /// Every unspent output of the shard (for snapshots).
    Dump {
        reply: Sender<Vec<(OutPoint, TxOutput)>>,
    },
    /// Forget the whole partition (an installed snapshot replaces it); answers once empty.
    Clear { reply: Sender<()> },
}

#[derive(Default)]
pub(crate) struct ShardState {
    utxos: FastMap<OutPoint, TxOutput>,
    commitment: SetCommitment,
    balances: FastMap<(PublicKey, AssetId), u128>,
    owned: FastMap<PublicKey, FastSet<OutPoint>>,
}

impl ShardState {
    fn insert(&mut self, outpoint: OutPoint, coin: TxOutput) {
        let previous = self.utxos.insert(outpoint, coin);
        assert!(previous.is_none(), "outpoint {outpoint:?} is created once");
        self.commitment.insert(&outpoint, &coin);
        *self.balances.entry((coin.owner, coin.asset)).or_default() += u128::from(coin.amount);
        self.owned.entry(coin.owner).or_default().insert(outpoint);
    }

    fn remove(&mut self, outpoint: OutPoint, coin: TxOutput) {
        let removed = self.utxos.remove(&outpoint);
        assert_eq!(removed, Some(coin), "a spent coin must be in its shard");
        self.commitment.remove(&outpoint, &coin);
        let key = (coin.owner, coin.asset);
        let balance = self
            .balances
            .get_mut(&key)
            .expect("an owned coin has a balance");
        *balance = balance
            .checked_sub(u128::from(coin.amount))
            .expect("a balance covers its coins");
        if *balance == 0 {
            self.balances.remove(&key);
        }
        let outpoints = self
            .owned
            .get_mut(&coin.owner)
            .expect("an owned coin is indexed");
        assert!(outpoints.remove(&outpoint), "the index holds every coin");
        if outpoints.is_empty() {
            self.owned.remove(&coin.owner);
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Verify {
                block,
                start,
                end,
                check_signatures,
                reply,
            } => {
                // SAFETY: the coordinator sends only bytes it validated with `decode_block`.
                let block = unsafe { access_block_trusted(&block) };
                let txs: Vec<&ArchivedTransaction> = block.txs[start..end].iter().collect();
                let ids: Vec<TxId> = txs.iter().map(|tx| tx.tx_id()).collect();
                let verdicts = if check_signatures {
                    verify_signatures(&txs, &ids)
                } else {
                    vec![Ok(()); txs.len()]
                };
                let _ = reply.send(VerifyDone {
                    start,
                    ids,
                    verdicts,
                });
            }
            Command::Clear { reply } => {
                *self = ShardState::default();
                let _ = reply.send(());
            }
            Command::Lookup { outpoints, reply } => {
                let coins = outpoints
                    .into_iter()
                    .filter_map(|o| self.utxos.get(&o).map(|coin| (o, *coin)))
                    .collect();
                let _ = reply.send(coins);
            }
            Command::Commit {
                spent,
                created,
                reply,
            } => {
                for (outpoint, coin) in spent {
                    self.remove(outpoint, coin);
                }
                for (outpoint, coin) in created {
                    self.insert(outpoint, coin);
                }
                let _ = reply.send(self.commitment.clone());
            }
            Command::Balance {
                owner,
                asset,
                reply,
            } => {
                let _ = reply.send(self.balances.get(&(owner, asset)).copied().unwrap_or(0));
            }
            Command::Outputs { owner, reply } => {
                let outputs = self.owned.get(&owner).map_or_else(Vec::new, |outpoints| {
                    outpoints.iter().map(|o| (*o, self.utxos[o])).collect()
                });
                let _ = reply.send(outputs);
            }
            Command::Dump { reply } => {
                let _ = reply.send(self.utxos.iter().map(|(o, c)| (*o, *c)).collect());
            }
        }
        // A reply that cannot be sent means the coordinator gave up on it (it is stopping): nothing to undo.
    }
}

/// The shard's loop: urgent commands (lookups, commits, queries) before bulk ones (signature jobs), until both
/// lanes are closed by the coordinator.
pub(crate) fn run(index: usize, urgent: Receiver<Command>, bulk: Receiver<Command>) {
    let mut state = ShardState::default();
    tracing::debug!(shard = index, "shard started");
    let mut bulk_open = true;
    loop {
        let command = if let Ok(command) = urgent.try_recv() {
            command
        } else if bulk_open {
            select_biased! {
                recv(urgent) -> command => match command {
                    Ok(command) => command,
                    Err(_) => break,
                },
                recv(bulk) -> command => match command {
                    Ok(command) => command,
                    Err(_) => {
                        bulk_open = false;
                        continue;
                    }
                },
            }
        } else {
            match urgent.recv() {
                Ok(command) => command,
                Err(_) => break,
            }
        };
        state.handle(command);
    }
    tracing::debug!(shard = index, utxos = state.utxos.len(), "shard stopped");
}
