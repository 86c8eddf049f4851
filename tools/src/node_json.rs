//! What the tools read back from a node's JSON API: outputs as `/v1/blocks` and `/v1/accounts/{owner}/utxos` write
//! them, and the choice of coins a payment spends.

use anyhow::{ensure, Context, Result};
use cas_engine::{AssetId, Hash32, OutPoint, PublicKey, TxOutput};
use serde::Deserialize;

/// One output as the API writes it.
#[derive(Deserialize)]
pub struct OutputJson {
    owner: String,
    asset: String,
    amount: u64,
    unlock_height: Option<u64>,
}

impl OutputJson {
    pub fn parse(&self) -> Result<TxOutput> {
        Ok(TxOutput {
            amount: self.amount,
            asset: AssetId(Hash32::from_hex(&self.asset).context("an asset not 32 bytes of hex")?),
            owner: PublicKey::from_hex(&self.owner).context("an owner not a 32-byte hex key")?,
            unlock_height: self.unlock_height,
        })
    }
}

/// One unspent output of `GET /v1/accounts/{owner}/utxos`.
#[derive(Deserialize)]
pub struct UtxoJson {
    tx: String,
    index: u32,
    #[serde(flatten)]
    output: OutputJson,
}

impl UtxoJson {
    pub fn parse(&self) -> Result<(OutPoint, TxOutput)> {
        let tx = Hash32::from_hex(&self.tx).context("a tx id not 32 bytes of hex")?;
        Ok((
            OutPoint {
                tx,
                index: self.index,
            },
            self.output.parse()?,
        ))
    }
}

/// `GET /v1/accounts/{owner}/utxos`: the owner's unspent outputs at the executed height.
#[derive(Deserialize)]
pub struct UtxosPage {
    pub height: u64,
    pub utxos: Vec<UtxoJson>,
}

/// The coins a payment of `needed` spends: of `coins` (outpoint, amount) the largest first until they cover it.
/// Returns them and what they hold.
pub fn pick_coins(
    coins: impl IntoIterator<Item = (OutPoint, u64)>,
    needed: u64,
) -> Result<(Vec<OutPoint>, u64)> {
    let mut coins: Vec<(OutPoint, u64)> = coins.into_iter().collect();
    coins.sort_by_key(|(_, amount)| std::cmp::Reverse(*amount));
    let (mut inputs, mut held) = (Vec::new(), 0u64);
    for (outpoint, amount) in coins {
        if held >= needed {
            break;
        }
        inputs.push(outpoint);
        held = held.saturating_add(amount);
    }
    ensure!(
        held >= needed,
        "the coins hold {held}, the payment needs {needed}"
    );
    Ok((inputs, held))
}
