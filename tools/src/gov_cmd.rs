//! `cas gov`: CIP governance transactions (propose, vote), built and signed offline with `cas tx`'s flags
//! ([`crate::offline::TxFlags`]). A proposal's id is its transaction's id (printed); `GET /v1/proposals` shows
//! every proposal with its ballots, votes and status.

use anyhow::{Context, Result};
use cas_engine::governance::{Param, ParamChange, ProposalTerms, VoteCast};
use cas_engine::text::quote;
use cas_engine::{Hash32, TxKind};

use crate::offline::{build, first_key, TxFlags};

#[derive(clap::Subcommand, Debug)]
pub enum GovCommand {
    /// Open a vote from the block this lands in (its snapshot: ballots are minted from every key's CAS after it)
    /// for --window-blocks blocks; prints the proposal id. The window, quorum and approval ratio may be stricter
    /// than the genesis floors, never laxer.
    Propose {
        #[command(flatten)]
        tx: TxFlags,
        #[arg(long)]
        title: String,
        #[arg(long)]
        window_blocks: u64,
        /// Turnout (yes + no) the vote needs, in basis points of the ballots minted.
        #[arg(long)]
        quorum_bps: u32,
        /// The share of the turnout that yes must exceed, in basis points.
        #[arg(long)]
        approval_bps: u32,
        /// A parameter the proposal changes if it passes: `min_fee` or `unbond_delay_blocks`.
        #[arg(long, requires_all = ["value", "effective_at"])]
        param: Option<String>,
        #[arg(long)]
        value: Option<u64>,
        /// The height the change takes effect at (after the window's end).
        #[arg(long)]
        effective_at: Option<u64>,
    },
    /// Cast the first key's ballot (the vote names it): its signature need spend no input (another key may pay
    /// the fee).
    Vote {
        #[command(flatten)]
        tx: TxFlags,
        #[arg(long)]
        proposal: String,
        /// `yes` or `no`.
        #[arg(long, value_parser = ["yes", "no"])]
        choice: String,
    },
}

pub fn gov(command: &GovCommand) -> Result<()> {
    match command {
        GovCommand::Propose {
            tx,
            title,
            window_blocks,
            quorum_bps,
            approval_bps,
            param,
            value,
            effective_at,
        } => {
            let change = match (param, value, effective_at) {
                (Some(name), Some(value), Some(effective_at)) => Some(ParamChange {
                    param: Param::from_name(name).with_context(|| {
                        format!(
                            "--param {}: not min_fee or unbond_delay_blocks",
                            quote(name)
                        )
                    })?,
                    value: *value,
                    effective_at: *effective_at,
                }),
                _ => None,
            };
            let terms = ProposalTerms {
                title: title.clone(),
                window_blocks: *window_blocks,
                quorum_bps: *quorum_bps,
                approval_bps: *approval_bps,
                change,
            };
            let kind = TxKind::Propose {
                terms: Box::new(terms),
            };
            build(tx, kind, None, None).map(drop)
        }
        GovCommand::Vote {
            tx,
            proposal,
            choice,
        } => {
            let proposal = Hash32::from_hex(proposal)
                .with_context(|| format!("--proposal {}: not a 32-byte hex id", quote(proposal)))?;
            let cast = VoteCast {
                proposal,
                voter: first_key(tx)?,
                approve: choice == "yes",
            };
            let kind = TxKind::Vote {
                cast: Box::new(cast),
            };
            build(tx, kind, None, None).map(drop)
        }
    }
}
