//! Business tokens on the UTXO set: issuance, mint rights, allowances and DEX orders, with their ERC-20 events.
//!
//! A token is an asset whose id derives from its issuer and a nonce ([`token_asset`]); its definition record
//! ([`definition_outpoint`]) exists once, so an asset is issued once. Supply beyond the initial one exists as *mint
//! rights*: coins of [`mint_right_of`] the token, created by the issue up to the maximum supply, owned (and
//! transferable) like any coin; a mint converts rights into tokens one for one, so the supply never passes the
//! maximum and needs no counter that changes.
//!
//! Allowances and orders are *ledger objects*: an escrow entry at `(place, OBJECT index)` holding the amount, asset
//! and owner (so it counts in its owner's balance), and a terms record at `(place, TERMS index)` with amount 0:
//! an allowance's terms name the token, the spender and the last height it may be used; an order's the token,
//! the maker and the price in CAS per token unit (in the record's lock field: records are never spent as coins).
//! A place is new for every object ([`object_place`]: the creating transaction and a slot), so what changes is
//! written at a new outpoint, as the shards' mirror needs. The spender of an allowance or the taker of an order
//! consumes the object named as input 0 of its transaction; the rest (if any) is written again at a new place; the
//! owner alone can take it back (any transaction it signs may spend its objects).
//!
//! Matching fees: both sides of a fill pay `matching_fee_bps` of the CAS notional into the block's
//! fee pot (the validators' reward pool), rounded down; the maker's share comes out of what it receives, or, for a buy order,
//! out of its escrow, which holds the price and the fee of what it asks.

use rkyv::{Archive, Deserialize, Serialize};

use crate::crypto::PublicKey;
use crate::id::{AssetId, Hash32, TxId};
use crate::tx::{OutPoint, TxOutput};

/// A token's name, at most this many bytes.
pub const NAME_BYTES_MAX: usize = 32;
/// A token's symbol, at most this many bytes.
pub const SYMBOL_BYTES_MAX: usize = 12;
/// The most decimals a token may declare (ERC-20's customary 18).
pub const DECIMALS_MAX: u8 = 18;
/// Basis points: the unit of the matching fee rate.
pub const BPS: u64 = 10_000;

/// What an issue transaction declares about its token.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct TokenSpec {
    /// With the issuer's key, the token's id: one issuer may issue many tokens.
    pub nonce: u64,
    pub name: String,
    pub symbol: String,
    pub decimals: u8,
    /// The most that will ever exist; the issue creates exactly this much as tokens, offer and mint rights.
    pub max_supply: u64,
    /// The issuer's offer: this many of the new tokens are put on sale at `price` (0: no offer).
    pub offered: u64,
    /// CAS per token unit the issuer sells at.
    pub price: u64,
    /// Who may mint more: the owner of every mint-right output of the issue (None: no rights, the supply is fixed).
    pub mint_authority: Option<PublicKey>,
}

/// What an approve transaction grants: `spender` may move up to `amount` of `asset` of the signer's until height
/// `expires_at` (inclusive).
#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct AllowanceTerms {
    pub asset: AssetId,
    pub spender: PublicKey,
    pub amount: u64,
    pub expires_at: u64,
}

/// What a transfer-from asks (ERC-20's `transferFrom(from, to, value)`; the outputs are the `to`): `amount` out of
/// `from`'s allowance to the signer.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct Spend {
    pub from: PublicKey,
    pub amount: u64,
}

/// Which way an order trades its token against CAS.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum Side {
    /// Gives the token, wants CAS: the escrow holds `amount` tokens.
    Sell,
    /// Gives CAS, wants the token: the escrow holds the price and the maker's fee of `amount` tokens.
    Buy,
}

/// A limit order: `amount` units of `token` at `price` CAS each.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct OrderTerms {
    pub token: AssetId,
    pub side: Side,
    pub amount: u64,
    pub price: u64,
}

/// The set index of an allowance's escrow entry.
pub const ALLOWANCE_INDEX: u32 = u32::MAX - 6;
/// The set index of an allowance's terms record.
pub const ALLOWANCE_TERMS_INDEX: u32 = u32::MAX - 7;
/// The set index of an order's escrow entry.
pub const ORDER_INDEX: u32 = u32::MAX - 8;
/// The set index of an order's terms record.
pub const ORDER_TERMS_INDEX: u32 = u32::MAX - 9;
/// The set index of a token's definition record.
pub const DEFINITION_INDEX: u32 = u32::MAX - 10;
const _: () = assert!(DEFINITION_INDEX >= crate::rules::RECORD_INDEX_MIN);

/// The id of the token `issuer` issues with `nonce`.
pub fn token_asset(issuer: &PublicKey, nonce: u64) -> AssetId {
    let mut hasher = blake3::Hasher::new_derive_key(crate::id::domain::TOKEN_ASSET);
    hasher.update(&issuer.0);
    hasher.update(&nonce.to_le_bytes());
    AssetId(Hash32::from(hasher.finalize()))
}

/// The asset of the rights to mint `token`: one right mints one unit.
pub fn mint_right_of(token: &AssetId) -> AssetId {
    AssetId(Hash32::of(crate::id::domain::MINT_RIGHT, &token.0 .0))
}

/// Where the set holds `token`'s definition record.
pub fn definition_outpoint(token: &AssetId) -> OutPoint {
    OutPoint {
        tx: Hash32::of(crate::id::domain::TOKEN_DEFINITION, &token.0 .0),
        index: DEFINITION_INDEX,
    }
}

/// A token's definition record: issued by `issuer`, with its decimals, maximum supply and symbol packed in the
/// asset field (amount 0: a record is no balance). The name stays in the issue transaction.
pub fn definition_record(issuer: &PublicKey, spec: &ArchivedTokenSpec) -> TxOutput {
    const _: () = assert!(10 + SYMBOL_BYTES_MAX <= 32);
    let mut packed = [0u8; 32];
    packed[0] = spec.decimals;
    packed[1..9].copy_from_slice(&spec.max_supply.to_native().to_le_bytes());
    let symbol = spec.symbol.as_bytes();
    packed[9] = symbol.len() as u8;
    packed[10..10 + symbol.len()].copy_from_slice(symbol);
    TxOutput {
        amount: 0,
        asset: AssetId(Hash32(packed)),
        owner: *issuer,
        unlock_height: None,
    }
}

/// What a token's definition record says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Definition {
    pub issuer: PublicKey,
    pub decimals: u8,
    pub max_supply: u64,
    pub symbol: String,
}

/// A definition record's issuer, decimals, maximum supply and symbol.
pub fn decode_definition(entry: &TxOutput) -> Definition {
    let packed = entry.asset.0 .0;
    let max_supply = u64::from_le_bytes(packed[1..9].try_into().expect("8 bytes"));
    let len = usize::from(packed[9]).min(SYMBOL_BYTES_MAX);
    Definition {
        issuer: entry.owner,
        decimals: packed[0],
        max_supply,
        symbol: String::from_utf8_lossy(&packed[10..10 + len]).into_owned(),
    }
}

/// The place of the object that slot `slot` of transaction `tx` creates.
pub fn object_place(tx: &TxId, slot: u32) -> Hash32 {
    let mut hasher = blake3::Hasher::new_derive_key(crate::id::domain::LEDGER_OBJECT);
    hasher.update(&tx.0);
    hasher.update(&slot.to_le_bytes());
    Hash32::from(hasher.finalize())
}

/// What kind of ledger object an escrow entry at `outpoint` is, if it is one.
pub fn object_kind(outpoint: &OutPoint) -> Option<ObjectKind> {
    match outpoint.index {
        ALLOWANCE_INDEX => Some(ObjectKind::Allowance),
        ORDER_INDEX => Some(ObjectKind::Order),
        _ => None,
    }
}

/// The two kinds of ledger objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    Allowance,
    Order,
}

impl ObjectKind {
    fn indexes(self) -> (u32, u32) {
        match self {
            ObjectKind::Allowance => (ALLOWANCE_INDEX, ALLOWANCE_TERMS_INDEX),
            ObjectKind::Order => (ORDER_INDEX, ORDER_TERMS_INDEX),
        }
    }

    /// Where the object at `place` keeps its escrow.
    pub fn escrow_at(self, place: Hash32) -> OutPoint {
        OutPoint {
            tx: place,
            index: self.indexes().0,
        }
    }

    /// Where the object at `place` keeps its terms.
    pub fn terms_at(self, place: Hash32) -> OutPoint {
        OutPoint {
            tx: place,
            index: self.indexes().1,
        }
    }
}

/// An allowance as the set holds it: `owner`'s `amount` of `asset` that `spender` may move until `expires_at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowance {
    pub owner: PublicKey,
    pub asset: AssetId,
    pub amount: u64,
    pub spender: PublicKey,
    pub expires_at: u64,
}

impl Allowance {
    /// The escrow entry and terms record of this allowance.
    pub fn entries(&self) -> (TxOutput, TxOutput) {
        (
            TxOutput {
                amount: self.amount,
                asset: self.asset,
                owner: self.owner,
                unlock_height: None,
            },
            TxOutput {
                amount: 0,
                asset: self.asset,
                owner: self.spender,
                unlock_height: Some(self.expires_at),
            },
        )
    }

    /// The allowance an escrow entry and its terms record make.
    pub fn of(escrow: &TxOutput, terms: &TxOutput) -> Allowance {
        Allowance {
            owner: escrow.owner,
            asset: escrow.asset,
            amount: escrow.amount,
            spender: terms.owner,
            expires_at: terms.unlock_height.unwrap_or(0),
        }
    }
}

/// An order as the set holds it: `maker`'s escrow of `escrow` (tokens for a sell, CAS for a buy) on `token` at
/// `price` CAS per token unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Order {
    pub maker: PublicKey,
    pub token: AssetId,
    pub side: Side,
    pub escrow: u64,
    pub price: u64,
}

impl Order {
    /// The escrow entry and terms record of this order.
    pub fn entries(&self) -> (TxOutput, TxOutput) {
        let gives = match self.side {
            Side::Sell => self.token,
            Side::Buy => AssetId::CAS,
        };
        (
            TxOutput {
                amount: self.escrow,
                asset: gives,
                owner: self.maker,
                unlock_height: None,
            },
            TxOutput {
                amount: 0,
                asset: self.token,
                owner: self.maker,
                unlock_height: Some(self.price),
            },
        )
    }

    /// The order an escrow entry and its terms record make.
    pub fn of(escrow: &TxOutput, terms: &TxOutput) -> Order {
        Order {
            maker: escrow.owner,
            token: terms.asset,
            side: if escrow.asset == AssetId::CAS {
                Side::Buy
            } else {
                Side::Sell
            },
            escrow: escrow.amount,
            price: terms.unlock_height.unwrap_or(0),
        }
    }

    /// What filling `amount` token units takes: (CAS notional, the fee each side pays), None on overflow.
    pub fn fill_cost(&self, amount: u64, fee_bps: u32) -> Option<(u64, u64)> {
        let notional = amount.checked_mul(self.price)?;
        Some((notional, matching_fee(notional, fee_bps)?))
    }
}

/// The matching fee on a CAS notional at `fee_bps`, rounded down: so the fees of an order filled in parts never
/// sum past the fee of the whole, which a buy order's escrow holds.
pub fn matching_fee(notional: u64, fee_bps: u32) -> Option<u64> {
    let fee = u128::from(notional) * u128::from(fee_bps) / u128::from(BPS);
    u64::try_from(fee).ok()
}

/// The escrow a buy order of `amount` tokens at `price` needs: their price and the maker's fee.
pub fn buy_escrow(amount: u64, price: u64, fee_bps: u32) -> Option<u64> {
    let notional = amount.checked_mul(price)?;
    notional.checked_add(matching_fee(notional, fee_bps)?)
}

/// An ERC-20 event a token transaction raised, as receipts and the event query report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenEvent {
    /// `value` of `asset` moved from `from` to `to`; `from` is the zero key for a mint (ERC-20's convention).
    Transfer {
        asset: AssetId,
        from: PublicKey,
        to: PublicKey,
        value: u64,
    },
    /// `owner` allows `spender` `value` of `asset` from now on.
    Approval {
        asset: AssetId,
        owner: PublicKey,
        spender: PublicKey,
        value: u64,
    },
}

/// The ERC-20 events an *accepted* transaction raised, from the transaction alone: `Transfer` for every amount of
/// an asset other than CAS that leaves the sender (the first signer) for another key, from the zero key for what an
/// issue or a mint creates, from the allowance's owner for a transfer-from, from the maker to the taker for a fill of
/// a sell order; `Approval` for an approve. Mint rights and stake moves are assets too and show as transfers; an
/// order's or allowance's escrow stays its owner's and raises none.
pub fn events(tx: &crate::tx::Transaction) -> Vec<TokenEvent> {
    use crate::tx::TxKind;
    let Some(sender) = tx.signatures.first().map(|s| s.key) else {
        return Vec::new();
    };
    let body = &tx.body;
    let minted = match &body.kind {
        TxKind::TokenIssue { spec } => Some(token_asset(&sender, spec.nonce)),
        TxKind::TokenMint { token } => Some(*token),
        TxKind::Bond { .. } | TxKind::Unbond { .. } | TxKind::Candidacy { .. } => {
            return Vec::new()
        }
        _ => None,
    };
    let from = match &body.kind {
        TxKind::TransferFrom { spend } => spend.from,
        _ => sender,
    };
    let mut events = Vec::new();
    for output in &body.outputs {
        if output.asset == AssetId::CAS {
            continue;
        }
        let event = |from| TokenEvent::Transfer {
            asset: output.asset,
            from,
            to: output.owner,
            value: output.amount,
        };
        if Some(output.asset) == minted {
            events.push(event(PublicKey::default()));
        } else if output.owner != from {
            events.push(event(from));
        }
    }
    match &body.kind {
        TxKind::Approve { terms } => events.push(TokenEvent::Approval {
            asset: terms.asset,
            owner: sender,
            spender: terms.spender,
            value: terms.amount,
        }),
        // A sell order's tokens go from its maker (paid by output 0) to the taker.
        TxKind::Fill { amount } => {
            let maker = body.outputs.first().filter(|o| o.asset == AssetId::CAS);
            let token = body
                .outputs
                .iter()
                .find(|o| o.asset != AssetId::CAS && o.owner == sender);
            if let (Some(maker), Some(token)) = (maker, token) {
                events.push(TokenEvent::Transfer {
                    asset: token.asset,
                    from: maker.owner,
                    to: sender,
                    value: *amount,
                });
            }
        }
        _ => {}
    }
    events
}

impl TokenEvent {
    /// The asset the event is about.
    pub fn asset(&self) -> AssetId {
        match self {
            TokenEvent::Transfer { asset, .. } | TokenEvent::Approval { asset, .. } => *asset,
        }
    }

    /// Whether `key` is a party to it (sender or receiver, owner or spender).
    pub fn involves(&self, key: &PublicKey) -> bool {
        match self {
            TokenEvent::Transfer { from, to, .. } => from == key || to == key,
            TokenEvent::Approval { owner, spender, .. } => owner == key || spender == key,
        }
    }
}
