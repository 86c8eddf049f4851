//! `cas token`, `cas order` and `cas contract`: the token transactions (issue, mint, buy, approve, transfer-from),
//! DEX orders (place, fill, cancel) and contracts (deploy, call), built and signed offline with `cas tx`'s flags ([`crate::offline::TxFlags`]). A ledger
//! object (an order, an allowance) is named by its place, as `GET /v1/accounts/{owner}/objects` lists it; the
//! command puts it first among the inputs, where the rules look for it.

use anyhow::{Context, Result};
use cas_engine::text::quote;
use cas_engine::token::{
    token_asset, AllowanceTerms, ObjectKind, OrderTerms, Side, Spend, TokenSpec,
};
use cas_engine::{AssetId, Hash32, OutPoint, PublicKey, TxKind};

use std::path::PathBuf;

use cas_engine::contract::ledger::{contract_id, parse_code, ContractArg, ContractCall};

use crate::offline::{build, TxFlags};

#[derive(clap::Subcommand, Debug)]
pub enum TokenCommand {
    /// Issue a token: outputs of `new` (the token) and `new-rights` (its mint rights, to the mint authority) and
    /// the offer add up to the maximum supply. Prints the tx id, then the asset id.
    Issue {
        #[command(flatten)]
        tx: TxFlags,
        /// With the first key (the issuer), the token's id.
        #[arg(long)]
        nonce: u64,
        #[arg(long)]
        name: String,
        #[arg(long)]
        symbol: String,
        #[arg(long, default_value_t = 0)]
        decimals: u8,
        #[arg(long)]
        max_supply: u64,
        /// Tokens the issuer puts on sale at --price (a sell order anyone can fill with `cas token buy`).
        #[arg(long, default_value_t = 0)]
        offered: u64,
        /// CAS per token unit of the offer.
        #[arg(long, default_value_t = 0)]
        price: u64,
        /// The key that may receive mint rights (hex); none: the supply is fixed.
        #[arg(long)]
        mint_authority: Option<String>,
    },
    /// Turn mint rights (inputs) into tokens one for one.
    Mint {
        #[command(flatten)]
        tx: TxFlags,
        #[arg(long)]
        token: String,
    },
    /// Buy from a sell order (the issuer's offer) at its price: output 0 must pay the maker its proceeds (the
    /// price less its matching fee). The same transaction as `cas order fill`.
    Buy {
        #[command(flatten)]
        tx: TxFlags,
        /// The offer's place.
        #[arg(long)]
        offer: String,
        /// Token units to buy.
        #[arg(long)]
        amount: u64,
    },
    /// Allow a spender to move up to --amount of the first key's --token until height --expires-at: the amount
    /// is escrowed out of the inputs.
    Approve {
        #[command(flatten)]
        tx: TxFlags,
        #[arg(long)]
        token: String,
        #[arg(long)]
        spender: String,
        #[arg(long)]
        amount: u64,
        #[arg(long)]
        expires_at: u64,
    },
    /// Move --amount out of --from's allowance (signed by its spender, the first key) to the outputs.
    TransferFrom {
        #[command(flatten)]
        tx: TxFlags,
        /// The allowance's place.
        #[arg(long)]
        allowance: String,
        /// The owner who granted it (hex key).
        #[arg(long)]
        from: String,
        #[arg(long)]
        amount: u64,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum OrderCommand {
    /// Place a limit order: a sell escrows --amount tokens, a buy escrows their price and the maker's matching fee.
    Place {
        #[command(flatten)]
        tx: TxFlags,
        #[arg(long)]
        token: String,
        #[arg(long, value_enum)]
        side: OrderSide,
        /// Token units.
        #[arg(long)]
        amount: u64,
        /// CAS per token unit.
        #[arg(long)]
        price: u64,
    },
    /// Fill --amount token units of an order at its price; output 0 pays the maker (CAS less its fee for a sell
    /// order, the tokens for a buy order).
    Fill {
        #[command(flatten)]
        tx: TxFlags,
        #[arg(long)]
        order: String,
        #[arg(long)]
        amount: u64,
    },
    /// Take an order back (signed by its maker): its escrow goes to the outputs.
    Cancel {
        #[command(flatten)]
        tx: TxFlags,
        #[arg(long)]
        order: String,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum ContractCommand {
    /// Deploy a contract's source. Prints the tx id, then the contract's id (also its account: send it CAS to
    /// fund it).
    Deploy {
        #[command(flatten)]
        tx: TxFlags,
        /// The source file (docs/contracts.md has the language).
        #[arg(long)]
        code: PathBuf,
    },
    /// Call a contract's function: --input may name coins of the contract's account (no signature needed), which
    /// its code moves; the rest of the inputs pay the fee.
    Call {
        #[command(flatten)]
        tx: TxFlags,
        #[arg(long)]
        contract: String,
        /// The contract's source, exactly as deployed.
        #[arg(long)]
        code: PathBuf,
        #[arg(long)]
        function: String,
        /// An argument (repeat): an integer, or text (an account's hex key).
        #[arg(long = "arg")]
        args: Vec<String>,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum OrderSide {
    Sell,
    Buy,
}

pub fn token(command: &TokenCommand) -> Result<()> {
    match command {
        TokenCommand::Issue {
            tx,
            nonce,
            name,
            symbol,
            decimals,
            max_supply,
            offered,
            price,
            mint_authority,
        } => {
            let issuer = crate::offline::first_key(tx)?;
            let asset = token_asset(&issuer, *nonce);
            let spec = TokenSpec {
                nonce: *nonce,
                name: name.clone(),
                symbol: symbol.clone(),
                decimals: *decimals,
                max_supply: *max_supply,
                offered: *offered,
                price: *price,
                mint_authority: mint_authority
                    .as_deref()
                    .map(|text| key("mint-authority", text))
                    .transpose()?,
            };
            let kind = TxKind::TokenIssue {
                spec: Box::new(spec),
            };
            build(tx, kind, None, Some(asset))?;
            println!("{}", asset.0.to_hex());
            Ok(())
        }
        TokenCommand::Mint { tx, token } => {
            let token = asset("token", token)?;
            build(tx, TxKind::TokenMint { token }, None, None).map(drop)
        }
        TokenCommand::Buy { tx, offer, amount } => fill(tx, offer, *amount),
        TokenCommand::Approve {
            tx,
            token,
            spender,
            amount,
            expires_at,
        } => {
            let terms = AllowanceTerms {
                asset: asset("token", token)?,
                spender: key("spender", spender)?,
                amount: *amount,
                expires_at: *expires_at,
            };
            let kind = TxKind::Approve {
                terms: Box::new(terms),
            };
            build(tx, kind, None, None).map(drop)
        }
        TokenCommand::TransferFrom {
            tx,
            allowance,
            from,
            amount,
        } => {
            let first = place("allowance", allowance, ObjectKind::Allowance)?;
            let spend = Spend {
                from: key("from", from)?,
                amount: *amount,
            };
            let kind = TxKind::TransferFrom {
                spend: Box::new(spend),
            };
            build(tx, kind, Some(first), None).map(drop)
        }
    }
}

pub fn order(command: &OrderCommand) -> Result<()> {
    match command {
        OrderCommand::Place {
            tx,
            token,
            side,
            amount,
            price,
        } => {
            let terms = OrderTerms {
                token: asset("token", token)?,
                side: match side {
                    OrderSide::Sell => Side::Sell,
                    OrderSide::Buy => Side::Buy,
                },
                amount: *amount,
                price: *price,
            };
            let kind = TxKind::OrderPlace {
                terms: Box::new(terms),
            };
            build(tx, kind, None, None).map(drop)
        }
        OrderCommand::Fill { tx, order, amount } => fill(tx, order, *amount),
        OrderCommand::Cancel { tx, order } => {
            let first = place("order", order, ObjectKind::Order)?;
            build(tx, TxKind::Transfer, Some(first), None).map(drop)
        }
    }
}

pub fn contract(command: &ContractCommand) -> Result<()> {
    let read = |path: &PathBuf| {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    match command {
        ContractCommand::Deploy { tx, code } => {
            let code = read(code)?;
            parse_code(&code)
                .map_err(|reason| anyhow::anyhow!("the contract is refused: {reason}"))?;
            let id = build(tx, TxKind::ContractDeploy { code }, None, None)?;
            println!("{}", contract_id(&id).to_hex());
            Ok(())
        }
        ContractCommand::Call {
            tx,
            contract,
            code,
            function,
            args,
        } => {
            let call = ContractCall {
                contract: Hash32::from_hex(contract).with_context(|| {
                    format!("--contract {}: not a 32-byte hex id", quote(contract))
                })?,
                function: function.clone(),
                args: args
                    .iter()
                    .map(|arg| match arg.parse::<i64>() {
                        Ok(value) => ContractArg::Int(value),
                        Err(_) => ContractArg::Text(arg.clone()),
                    })
                    .collect(),
                code: read(code)?,
            };
            let kind = TxKind::ContractCall {
                call: Box::new(call),
            };
            build(tx, kind, None, None).map(drop)
        }
    }
}

fn fill(tx: &TxFlags, order: &str, amount: u64) -> Result<()> {
    let first = place("order", order, ObjectKind::Order)?;
    build(tx, TxKind::Fill { amount }, Some(first), None).map(drop)
}

/// The escrow entry of the object of `kind` at a place (64 hex digits).
fn place(flag: &str, text: &str, kind: ObjectKind) -> Result<OutPoint> {
    let place = Hash32::from_hex(text)
        .with_context(|| format!("--{flag} {}: not a 32-byte hex place", quote(text)))?;
    Ok(kind.escrow_at(place))
}

fn asset(flag: &str, text: &str) -> Result<AssetId> {
    Hash32::from_hex(text)
        .map(AssetId)
        .with_context(|| format!("--{flag} {}: not a 32-byte hex asset", quote(text)))
}

fn key(flag: &str, text: &str) -> Result<PublicKey> {
    PublicKey::from_hex(text)
        .with_context(|| format!("--{flag} {}: not a 32-byte hex key", quote(text)))
}
