//! One shard: the unspent outputs of its hash partition, their LtHash commitment, and the balance index (owner ->
//! balance per asset and unspent outpoints, one entry per owner so a coin costs one index probe). It owns this
//! state alone, on its own executor, and changes it only through [`Command`]s that arrive in order; it never sees
//! another shard's state.

use std::sync::Arc;

use cas_engine::codec::access_block_trusted;
use cas_engine::parted_map::PartedMap;
use cas_engine::rules::{verify_signatures, TxError};
use cas_engine::tx::tx_ids;
use cas_engine::{
    ArchivedTransaction, AssetId, OutPoint, PublicKey, SetCommitment, TxId, TxOutput,
};
use crossbeam_channel::{select_biased, Receiver, Sender};

use crate::hash::FastMap;

/// A result of a signature job: the tx ids and verdicts of `txs[start..start + ids.len()]`.
pub(crate) struct VerifyDone {
    pub start: usize,
    pub ids: Vec<TxId>,
    pub verdicts: Vec<Result<(), TxError>>,
}

/// Bytes of a block that the coordinator already decoded with the validating decoder.
pub(crate) type ValidatedBlock = Arc<Vec<u8>>;

/// A signature job: compute the tx ids (and, when `check_signatures`, verify the signatures) of `txs[start..end]`.
/// It reads no shard state, so any shard, or the caller's thread, may run it.
pub(crate) struct VerifyJob {
    pub block: ValidatedBlock,
    pub start: usize,
    pub end: usize,
    pub check_signatures: bool,
    pub reply: Sender<VerifyDone>,
}

impl VerifyJob {
    pub(crate) fn run(self) {
        // SAFETY: the coordinator sends only bytes it validated with `decode_block`.
        let block = unsafe { access_block_trusted(&self.block) };
        let txs: Vec<&ArchivedTransaction> = block.txs[self.start..self.end].iter().collect();
        let ids = tx_ids(&txs);
        let verdicts = if self.check_signatures {
            verify_signatures(&txs, &ids)
        } else {
            vec![Ok(()); txs.len()]
        };
        let _ = self.reply.send(VerifyDone {
            start: self.start,
            ids,
            verdicts,
        });
    }
}

pub(crate) enum Command {
    /// A signature job (from the lane every shard takes from).
    Verify(VerifyJob),
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
    /// How much of `asset` (not CAS) the partition holds.
    Supply { asset: AssetId, reply: Sender<u128> },
    /// Every owner holding some `asset` in the partition, with how much (a CIP proposal's snapshot).
    Holders {
        asset: AssetId,
        reply: Sender<Vec<(PublicKey, u128)>>,
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
    /// The partition's unspent outputs: a map of staggered parts, so the set outgrows its tables a part at a time
    /// (one map of millions doubling at once made a 10 s window's p99 3.7 s).
    utxos: PartedMap<OutPoint, TxOutput>,
    commitment: SetCommitment,
    owners: FastMap<PublicKey, Holdings>,
    /// The amount held per asset other than CAS (tokens, their mint rights, stake): totals a token's supply
    /// without a scan. CAS, on every transfer, is left out.
    supplies: FastMap<AssetId, u128>,
}

/// What one owner holds in this shard. An owner holds few assets, so balances are a short list. Its outpoints are
/// an append-only list pruned lazily: a spend only counts down `live` (no probe), the list is compacted against
/// the set when more than half of it is stale, and listing skips the spent ones. An outpoint is created once, so
/// a stale entry never comes back to life. Listing and compaction cost O(live) amortized.
#[derive(Default)]
struct Holdings {
    balances: Vec<(AssetId, u128)>,
    outpoints: Vec<OutPoint>,
    /// How many of `outpoints` are unspent.
    live: usize,
}

impl Holdings {
    fn balance(&self, asset: &AssetId) -> u128 {
        self.balances
            .iter()
            .find(|(a, _)| a == asset)
            .map_or(0, |(_, balance)| *balance)
    }
}

impl ShardState {
    /// Applies a block's net change. The index probes (cache misses on a large set) run back to back so the CPU
    /// overlaps them; the commitment's hashing (pure computation) follows in its own pass.
    fn commit(&mut self, spent: &[(OutPoint, TxOutput)], created: &[(OutPoint, TxOutput)]) {
        for (outpoint, coin) in spent {
            self.remove(*outpoint, *coin);
        }
        for (outpoint, coin) in created {
            self.insert(*outpoint, *coin);
        }
        self.commitment.apply(spent, created);
    }

    /// Indexes a new coin (the caller updates the commitment).
    fn insert(&mut self, outpoint: OutPoint, coin: TxOutput) {
        let previous = self.utxos.insert(outpoint, coin);
        assert!(previous.is_none(), "outpoint {outpoint:?} is created once");
        let holdings = self.owners.entry(coin.owner).or_default();
        // A record of amount 0 (a claim, a candidacy, an object's terms) holds no balance.
        if coin.amount > 0 {
            match holdings.balances.iter_mut().find(|(a, _)| *a == coin.asset) {
                Some((_, balance)) => *balance += u128::from(coin.amount),
                None => holdings
                    .balances
                    .push((coin.asset, u128::from(coin.amount))),
            }
        }
        holdings.outpoints.push(outpoint);
        holdings.live += 1;
        if coin.asset != AssetId::CAS && coin.amount > 0 {
            *self.supplies.entry(coin.asset).or_default() += u128::from(coin.amount);
        }
    }

    /// Unindexes a spent coin (the caller updates the commitment).
    fn remove(&mut self, outpoint: OutPoint, coin: TxOutput) {
        let removed = self.utxos.remove(&outpoint);
        assert_eq!(removed, Some(coin), "a spent coin must be in its shard");
        let holdings = self
            .owners
            .get_mut(&coin.owner)
            .expect("an owned coin is indexed");
        if coin.amount > 0 {
            let position = holdings
                .balances
                .iter()
                .position(|(a, _)| *a == coin.asset)
                .expect("an owned coin has a balance");
            let balance = &mut holdings.balances[position].1;
            *balance = balance
                .checked_sub(u128::from(coin.amount))
                .expect("a balance covers its coins");
            if *balance == 0 {
                holdings.balances.swap_remove(position);
            }
        }
        if coin.asset != AssetId::CAS && coin.amount > 0 {
            let supply = self
                .supplies
                .get_mut(&coin.asset)
                .expect("a held asset has a supply");
            *supply -= u128::from(coin.amount);
            if *supply == 0 {
                self.supplies.remove(&coin.asset);
            }
        }
        holdings.live -= 1;
        if holdings.live == 0 {
            debug_assert!(holdings.balances.is_empty());
            self.owners.remove(&coin.owner);
        } else if holdings.outpoints.len() > 2 * holdings.live + 8 {
            let utxos = &self.utxos;
            holdings.outpoints.retain(|o| utxos.contains_key(o));
            debug_assert_eq!(holdings.outpoints.len(), holdings.live);
        }
    }

    pub(crate) fn handle(&mut self, command: Command) {
        match command {
            Command::Verify(job) => job.run(),
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
                self.commit(&spent, &created);
                let _ = reply.send(self.commitment.clone());
            }
            Command::Balance {
                owner,
                asset,
                reply,
            } => {
                let _ = reply.send(self.owners.get(&owner).map_or(0, |h| h.balance(&asset)));
            }
            Command::Outputs { owner, reply } => {
                let outputs = self.owners.get(&owner).map_or_else(Vec::new, |holdings| {
                    holdings
                        .outpoints
                        .iter()
                        .filter_map(|o| self.utxos.get(o).map(|coin| (*o, *coin)))
                        .collect()
                });
                let _ = reply.send(outputs);
            }
            Command::Supply { asset, reply } => {
                let _ = reply.send(self.supplies.get(&asset).copied().unwrap_or(0));
            }
            Command::Holders { asset, reply } => {
                let holders = self.owners.iter().filter_map(|(owner, holdings)| {
                    let balance = holdings.balance(&asset);
                    (balance > 0).then_some((*owner, balance))
                });
                let _ = reply.send(holders.collect());
            }
            Command::Dump { reply } => {
                let mut all = Vec::with_capacity(self.utxos.len());
                all.extend(self.utxos.iter().map(|(o, c)| (*o, *c)));
                let _ = reply.send(all);
            }
        }
        // A reply that cannot be sent means the coordinator gave up on it (it is stopping): nothing to undo.
    }
}

/// The shard's loop: its own urgent commands (lookups, commits, queries) before bulk ones (signature jobs, from the
/// lane every shard takes from), until the coordinator closes its urgent lane.
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

#[cfg(test)]
mod tests {
    use super::*;
    use cas_engine::id::domain;
    use cas_engine::Hash32;

    fn coin(owner: u8, amount: u64) -> TxOutput {
        TxOutput {
            amount,
            asset: AssetId::CAS,
            owner: PublicKey([owner; 32]),
            unlock_height: None,
        }
    }

    fn outpoint(i: u32) -> OutPoint {
        OutPoint {
            tx: Hash32::of(domain::TX_ID, &i.to_le_bytes()),
            index: i % 3,
        }
    }

    /// An owner's outputs as the `Outputs` command answers them, sorted.
    fn listed(state: &mut ShardState, owner: u8) -> Vec<(OutPoint, TxOutput)> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        state.handle(Command::Outputs {
            owner: PublicKey([owner; 32]),
            reply,
        });
        let mut outputs = answer.recv().expect("answered");
        outputs.sort_unstable_by_key(|(o, _)| *o);
        outputs
    }

    #[test]
    fn the_owner_index_stays_exact_and_compact_through_spends() {
        let mut state = ShardState::default();
        let created: Vec<_> = (0..100).map(|i| (outpoint(i), coin(1, 10))).collect();
        state.commit(&[], &created);
        state.commit(&[], &[(outpoint(1000), coin(2, 7))]);
        let (spent, kept) = created.split_at(90);
        state.commit(spent, &[]);
        let holdings = &state.owners[&PublicKey([1; 32])];
        assert_eq!(holdings.live, 10);
        assert!(
            holdings.outpoints.len() <= 2 * holdings.live + 8,
            "compacted: {} entries for {} live",
            holdings.outpoints.len(),
            holdings.live
        );
        assert_eq!(holdings.balance(&AssetId::CAS), 100);
        let mut expected = kept.to_vec();
        expected.sort_unstable_by_key(|(o, _)| *o);
        assert_eq!(listed(&mut state, 1), expected);
        assert_eq!(listed(&mut state, 2), vec![(outpoint(1000), coin(2, 7))]);
        state.commit(kept, &[]);
        assert!(!state.owners.contains_key(&PublicKey([1; 32])));
        assert!(listed(&mut state, 1).is_empty());
        assert_eq!(state.utxos.len(), 1);
    }
}
