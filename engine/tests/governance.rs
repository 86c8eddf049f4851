//! CIP governance through the in-memory ledger: a vote that passes and changes a parameter at its stated height, one
//! short of quorum, one short of approval, a holder who moves its coins after the snapshot and tries to vote again,
//! the ballots' weights, and every refusal with its code.

use cas_engine::codec::{decode_tx, encode_tx};
use cas_engine::fixtures::{coins_of, funded_genesis, key, signed, ACCOUNT_KEYS};
use cas_engine::governance::{
    ballot_asset, ballot_outpoint, vote_outpoint, Param, ParamChange, ProposalState, ProposalTerms,
    VoteCast,
};
use cas_engine::{
    AssetId, Hash32, Keypair, MemoryLedger, OutPoint, RejectCode, Transaction, TxError, TxKind,
    TxOutput,
};
use rkyv::util::AlignedVec;

const CHAIN: u32 = 7;
const AMOUNT: u64 = 100_000;
const ACCOUNTS: u32 = 5;
const FEE: u64 = 1;
/// The genesis floor the fixtures' genesis keeps.
const WINDOW: u64 = cas_engine::genesis::DEFAULT_WINDOW_BLOCKS_MIN;

struct Chain {
    ledger: MemoryLedger,
}

impl Chain {
    fn new() -> Chain {
        let genesis = funded_genesis(CHAIN, 4, ACCOUNTS, 3, AMOUNT);
        Chain {
            ledger: MemoryLedger::from_genesis(&genesis).unwrap(),
        }
    }

    fn block(&mut self, txs: &[Transaction]) -> Vec<Result<(), TxError>> {
        let encoded: Vec<AlignedVec> = txs.iter().map(encode_tx).collect();
        let archived: Vec<_> = encoded.iter().map(|b| decode_tx(b).unwrap()).collect();
        let height = self.ledger.height + 1;
        self.ledger.apply(&archived, height)
    }

    fn one(&mut self, tx: Transaction) -> Result<(), TxError> {
        self.block(&[tx]).remove(0)
    }

    /// Empty blocks until the last applied one is `height`.
    fn advance_to(&mut self, height: u64) {
        while self.ledger.height < height {
            self.block(&[]);
        }
    }

    fn coins(&self, owner: &Keypair) -> Vec<(OutPoint, TxOutput)> {
        coins_of(&self.ledger, owner, AssetId::CAS)
    }

    fn cas(&self, owner: &Keypair) -> u64 {
        self.coins(owner).iter().map(|(_, c)| c.amount).sum()
    }

    /// A transaction of `kind` by `signer` paying the fee out of its first coin, the change back to it.
    fn paying(&self, signer: &Keypair, kind: TxKind, fee: u64) -> Transaction {
        self.paid(signer, 0, kind, fee)
    }

    /// [`Chain::paying`] the usual fee out of the signer's coin number `coin`.
    fn paying_with(&self, signer: &Keypair, coin: usize, kind: TxKind) -> Transaction {
        self.paid(signer, coin, kind, FEE)
    }

    fn paid(&self, signer: &Keypair, coin: usize, kind: TxKind, fee: u64) -> Transaction {
        let (outpoint, coin) = self.coins(signer)[coin];
        let change = TxOutput {
            amount: coin.amount - fee,
            ..coin
        };
        signed(CHAIN, kind, vec![outpoint], vec![change], fee, signer)
    }

    fn propose(&mut self, proposer: &Keypair, terms: ProposalTerms) -> Result<Hash32, TxError> {
        let tx = self.paying(
            proposer,
            TxKind::Propose {
                terms: Box::new(terms),
            },
            FEE,
        );
        let id = tx.body.tx_id();
        self.one(tx).map(|()| id)
    }

    fn vote_tx(&self, voter: &Keypair, proposal: Hash32, approve: bool) -> Transaction {
        self.paying(voter, vote(proposal, voter, approve), FEE)
    }

    fn vote(&mut self, voter: &Keypair, proposal: Hash32, approve: bool) -> Result<(), TxError> {
        let tx = self.vote_tx(voter, proposal, approve);
        self.one(tx)
    }

    /// Moves every CAS coin of `from` to `to`, less the fee.
    fn move_all(&mut self, from: &Keypair, to: &Keypair) {
        let coins = self.coins(from);
        let total: u64 = coins.iter().map(|(_, c)| c.amount).sum();
        let out = TxOutput {
            amount: total - FEE,
            asset: AssetId::CAS,
            owner: to.public(),
            unlock_height: None,
        };
        let inputs = coins.iter().map(|(o, _)| *o).collect();
        self.one(signed(
            CHAIN,
            TxKind::Transfer,
            inputs,
            vec![out],
            FEE,
            from,
        ))
        .unwrap();
    }

    fn state(&self, proposal: &Hash32) -> ProposalState {
        self.ledger.governance().get(proposal).unwrap()
    }

    /// The weight of `holder`'s unused ballot.
    fn ballot(&self, proposal: &Hash32, holder: &Keypair) -> Option<u64> {
        let at = ballot_outpoint(proposal, &holder.public());
        self.ledger.utxos().get(&at).map(|b| b.amount)
    }
}

fn vote(proposal: Hash32, voter: &Keypair, approve: bool) -> TxKind {
    TxKind::Vote {
        cast: Box::new(VoteCast {
            proposal,
            voter: voter.public(),
            approve,
        }),
    }
}

fn account(i: u32) -> Keypair {
    key(ACCOUNT_KEYS, i)
}

fn terms(quorum_bps: u32, approval_bps: u32, change: Option<ParamChange>) -> ProposalTerms {
    ProposalTerms {
        title: "Raise the minimum fee".into(),
        window_blocks: WINDOW,
        quorum_bps,
        approval_bps,
        change,
    }
}

fn code(verdict: Result<(), TxError>) -> RejectCode {
    verdict.expect_err("refused").code()
}

#[test]
fn a_passed_change_takes_effect_at_its_height_and_not_before() {
    let mut chain = Chain::new();
    let start = chain.ledger.height + 1;
    let effective_at = start + WINDOW + 5;
    let change = ParamChange {
        param: Param::MinFee,
        value: 5,
        effective_at,
    };
    let id = chain
        .propose(&account(0), terms(2_000, 5_000, Some(change)))
        .unwrap();
    // Ballots: every account's CAS after the proposal's block (the proposer paid its fee).
    let held: Vec<u64> = (0..ACCOUNTS).map(|i| chain.cas(&account(i))).collect();
    for i in 0..ACCOUNTS {
        assert_eq!(chain.ballot(&id, &account(i)), Some(held[i as usize]));
    }
    let minted: u64 = held.iter().sum();
    assert_eq!(chain.state(&id).minted, Some(u128::from(minted)));
    let verdicts = chain.block(&[
        chain.vote_tx(&account(1), id, true),
        chain.vote_tx(&account(2), id, true),
        chain.vote_tx(&account(3), id, false),
    ]);
    assert!(verdicts.iter().all(Result::is_ok), "{verdicts:?}");
    let state = chain.state(&id);
    assert_eq!(state.yes, u128::from(held[1] + held[2]));
    assert_eq!(state.no, u128::from(held[3]));
    assert_eq!(state.resolution, None, "the window is open");
    chain.advance_to(start + WINDOW);
    let resolution = chain.state(&id).resolution.expect("tallied at the end");
    assert!(resolution.passed);
    assert_eq!((resolution.yes, resolution.no), (state.yes, state.no));
    // Unused ballots are spent at the tally; votes stay as the record of who voted how.
    assert_eq!(chain.ballot(&id, &account(4)), None);
    let ballots = chain.ledger.utxos().values();
    assert_eq!(ballots.filter(|e| e.asset == ballot_asset(&id)).count(), 0);
    assert!(chain
        .ledger
        .utxos()
        .contains_key(&vote_outpoint(&id, &account(3).public())));
    assert_eq!(
        code(chain.vote(&account(4), id, true)),
        RejectCode::VotingClosed
    );
    // The old minimum holds until the change's height, the new one from it on.
    chain.advance_to(effective_at - 2);
    let cheap = chain.paying(&account(4), TxKind::Transfer, 1);
    assert_eq!(chain.one(cheap), Ok(()), "block {}", effective_at - 1);
    assert_eq!(chain.ledger.context_for(effective_at).min_fee, 5);
    let cheap = chain.paying(&account(4), TxKind::Transfer, 1);
    assert_eq!(
        chain.one(cheap),
        Err(TxError::FeeTooLow { fee: 1, min_fee: 5 })
    );
    let paid = chain.paying(&account(4), TxKind::Transfer, 5);
    assert_eq!(chain.one(paid), Ok(()));
}

#[test]
fn a_vote_short_of_its_quorum_fails_and_changes_nothing() {
    let mut chain = Chain::new();
    let start = chain.ledger.height + 1;
    let change = ParamChange {
        param: Param::UnbondDelayBlocks,
        value: 3,
        effective_at: start + WINDOW + 1,
    };
    let id = chain
        .propose(&account(0), terms(5_000, 5_000, Some(change)))
        .unwrap();
    // Two of five equal holders: 40% turnout against a 50% quorum, unanimous.
    chain.vote(&account(1), id, true).unwrap();
    chain.vote(&account(2), id, true).unwrap();
    chain.advance_to(start + WINDOW + 1);
    let resolution = chain.state(&id).resolution.unwrap();
    assert!(!resolution.passed && resolution.no == 0);
    let before = cas_engine::genesis::DEFAULT_UNBOND_DELAY_BLOCKS;
    assert_eq!(
        chain
            .ledger
            .context_for(start + WINDOW + 2)
            .unbond_delay_blocks,
        before
    );
}

#[test]
fn a_vote_short_of_its_approval_ratio_fails() {
    let mut chain = Chain::new();
    let start = chain.ledger.height + 1;
    let id = chain
        .propose(&account(0), terms(2_000, 6_000, None))
        .unwrap();
    // Three of five vote, yes 2 : no 1 by holders of equal weight (the proposer's fee aside): 66% > 60%...
    chain.vote(&account(1), id, true).unwrap();
    chain.vote(&account(0), id, true).unwrap();
    chain.vote(&account(2), id, false).unwrap();
    // ... but a fourth against brings yes to half.
    chain.vote(&account(3), id, false).unwrap();
    chain.advance_to(start + WINDOW);
    let state = chain.state(&id);
    let resolution = state.resolution.unwrap();
    assert!(resolution.yes * 10_000 < 6_000 * (resolution.yes + resolution.no));
    assert!(!resolution.passed);
    assert!((resolution.yes + resolution.no) * 10_000 >= 2_000 * state.minted.unwrap());
}

#[test]
fn coins_moved_after_the_snapshot_vote_no_more() {
    let mut chain = Chain::new();
    let id = chain
        .propose(&account(0), terms(2_000, 5_000, None))
        .unwrap();
    let weight = |chain: &Chain, i: u32| chain.ballot(&id, &account(i)).unwrap();
    let (w1, w2, w4) = (weight(&chain, 1), weight(&chain, 2), weight(&chain, 4));
    // Holder 1 votes, moves every coin to holder 4, and tries again: its ballot is spent.
    chain.vote(&account(1), id, true).unwrap();
    chain.move_all(&account(1), &account(4));
    let again = chain.paying(&account(4), vote(id, &account(4), true), FEE);
    let by_1_paid_by_4 = two_signers(
        &chain,
        &account(1),
        &account(4),
        vote(id, &account(1), false),
    );
    assert_eq!(code(chain.one(by_1_paid_by_4)), RejectCode::AlreadyVoted);
    // Holder 4 now holds 1's coins too, but votes with what it held at the snapshot.
    chain.one(again).unwrap();
    assert_eq!(chain.state(&id).yes, u128::from(w1 + w4));
    // A key that held nothing at the snapshot has no ballot, whatever it holds now.
    let fresh = key(ACCOUNT_KEYS, 77);
    chain.move_all(&account(3), &fresh);
    assert_eq!(code(chain.vote(&fresh, id, true)), RejectCode::NoBallot);
    // Holder 2 moves everything first, then votes with its ballot, the fee paid by holder 4: its full weight.
    chain.move_all(&account(2), &account(4));
    assert_eq!(chain.cas(&account(2)), 0);
    let late = two_signers(
        &chain,
        &account(2),
        &account(4),
        vote(id, &account(2), false),
    );
    // The voter is in the tx id: the same vote with the voter's signature dropped is not the payer's vote.
    let mut stripped = late.clone();
    stripped.signatures.remove(0);
    assert_eq!(code(chain.one(stripped)), RejectCode::VoterUnsigned);
    chain.one(late).unwrap();
    assert_eq!(chain.state(&id).no, u128::from(w2));
    // Two votes by one holder in one block, each paid from its own coin: the second finds the ballot spent.
    let verdicts = chain.block(&[
        chain.paying_with(&account(0), 0, vote(id, &account(0), true)),
        chain.paying_with(&account(0), 1, vote(id, &account(0), false)),
    ]);
    assert_eq!(verdicts, vec![Ok(()), Err(TxError::AlreadyVoted)]);
}

/// A vote by `voter` whose fee `payer` pays: the voter signs first and spends nothing.
fn two_signers(chain: &Chain, voter: &Keypair, payer: &Keypair, kind: TxKind) -> Transaction {
    let (outpoint, coin) = chain.coins(payer)[0];
    let change = TxOutput {
        amount: coin.amount - FEE,
        ..coin
    };
    cas_engine::TxBody {
        chain_id: CHAIN,
        vn: 0,
        kind,
        inputs: vec![outpoint],
        outputs: vec![change],
        fee: FEE,
        memo: Vec::new(),
        client_id: None,
    }
    .sign(&[voter, payer])
}

#[test]
fn malformed_proposals_and_votes_are_refused_with_their_codes() {
    let mut chain = Chain::new();
    let height = chain.ledger.height + 1;
    let bad = [
        ProposalTerms {
            window_blocks: WINDOW - 1,
            ..terms(2_000, 5_000, None)
        },
        terms(1_999, 5_000, None),
        terms(2_000, 4_999, None),
        terms(2_000, 10_000, None),
        terms(10_001, 5_000, None),
        ProposalTerms {
            title: String::new(),
            ..terms(2_000, 5_000, None)
        },
        terms(
            2_000,
            5_000,
            Some(ParamChange {
                param: Param::MinFee,
                value: 2,
                effective_at: height + WINDOW,
            }),
        ),
    ];
    for terms in bad {
        let verdict = chain.propose(&account(0), terms.clone()).map(|_| ());
        assert_eq!(code(verdict), RejectCode::BadProposal, "{terms:?}");
    }
    let unknown = Hash32([9; 32]);
    assert_eq!(
        code(chain.vote(&account(1), unknown, true)),
        RejectCode::UnknownProposal
    );
    // A vote in the proposal's own block finds no ballot yet: they are minted at its end.
    let proposal = chain.paying(
        &account(0),
        TxKind::Propose {
            terms: Box::new(terms(2_000, 5_000, None)),
        },
        FEE,
    );
    let id = proposal.body.tx_id();
    let early = chain.vote_tx(&account(1), id, true);
    let verdicts = chain.block(&[proposal, early]);
    assert_eq!(verdicts[0], Ok(()));
    assert_eq!(verdicts[1], Err(TxError::NoBallot));
    assert_eq!(chain.ballot(&id, &account(1)).map(|w| w > 0), Some(true));
}
