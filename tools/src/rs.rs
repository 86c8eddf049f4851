//! `cas rs --config rs.toml`: a runtime sandbox (RS), the thin adapter a participant of one business network (VN)
//! runs in front of the engine. It never touches the node's hot path: it is a client of the node's HTTP API.
//!
//! - **Its AI** (the business's own program) calls it over HTTP: `POST /v1/pay {from, to, amount}` pays from one of
//!   the RS's accounts (it holds their keys) on its VN; `GET /v1/balances` answers its accounts' balances.
//! - **Endorsement** (the Policy's step): a pay (with the VN's fee rule's output in its business token, if it has
//!   one) is signed by the account, endorsed by this RS and by every peer RS
//!   of the VN it knows (`POST /v1/endorse` on each: the peer checks the transaction is of its VN and its
//!   signatures verify, then adds its own), and submitted to the node, waiting until final.
//! - **Its local ledger** holds only its own accounts' coins (account isolation): started from the node's view of
//!   each account, then kept from the VN's routed stream (`GET /v1/vns/{vn}/blocks`, which the node serves only to
//!   the VN's endorsers and which carries only that VN's transactions: VN isolation), written to `dir/ledger.json`
//!   whenever a block changes it.
//!   Every line read off that stream is appended to `dir/wire.ndjson`, so what reached this RS can be audited.
//!
//! What this isolation protects against: another business's RS (it is served nothing of this VN) and this VN's
//! RS seeing accounts not theirs in their ledgers. What it does not: the committee (every node executes every
//! transaction) and the node an RS talks to. The RS stops on SIGINT or SIGTERM, or a `stop` file in its dir.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cas_engine::codec::{decode_tx, encode_tx, to_owned_tx};
use cas_engine::crypto::{verify_one, SigEntry};
use cas_engine::tx::{TxSignature, VnId};
use cas_engine::vn::{stream_request_digest, VnFee};
use cas_engine::{
    AssetId, Hash32, Keypair, OutPoint, PublicKey, Transaction, TxBody, TxKind, TxOutput,
};
use cas_node::durable::write_atomic;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::node_json::{pick_coins, OutputJson, UtxosPage};

/// How long a refused or broken stream waits before it reconnects.
const RECONNECT_MS: u64 = 500;
/// How long one HTTP exchange with the node or a peer may take (a pay waits for finality).
const EXCHANGE_TIMEOUT_S: u64 = 60;
/// The largest transaction `POST /v1/endorse` reads.
const TX_BYTES_MAX: usize = 64 * 1024;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RsConfig {
    /// The node's HTTP API.
    pub api: String,
    /// Where this RS serves its AI.
    pub listen: SocketAddr,
    pub vn: VnId,
    pub chain_id: u32,
    /// This RS's endorsement key (an endorser of the VN's Policy).
    pub key: PathBuf,
    /// Key files of the accounts this RS holds.
    pub accounts: Vec<PathBuf>,
    /// The other RS of the VN (their HTTP endpoints), asked to endorse every pay.
    #[serde(default)]
    pub peers: Vec<String>,
    /// The fee each pay offers, in CAS.
    pub fee: u64,
    /// Where the local ledger and the wire log are kept.
    pub dir: PathBuf,
}

/// The accounts' coins as the routed blocks left them, and the last height applied.
#[derive(Default)]
struct LocalLedger {
    height: u64,
    coins: BTreeMap<OutPoint, TxOutput>,
}

struct Rs {
    config: RsConfig,
    /// The VN's fee rule, read from the node at the start (a Policy does not change once registered).
    fee: Option<VnFee>,
    key: Keypair,
    accounts: BTreeMap<PublicKey, Keypair>,
    ledger: Mutex<LocalLedger>,
    stop: Arc<AtomicBool>,
}

pub fn run(config_path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("cannot read {}", config_path.display()))?;
    let config: RsConfig = toml::from_str(&text)
        .with_context(|| format!("{} is not an RS config", config_path.display()))?;
    ensure!(
        config.vn != 0,
        "vn 0 is the public network: an RS serves a VN"
    );
    std::fs::create_dir_all(&config.dir)?;
    let key = cas_node::keyfile::load(&config.key)?;
    let accounts = config
        .accounts
        .iter()
        .map(|path| cas_node::keyfile::load(path).map(|k| (k.public(), k)))
        .collect::<Result<BTreeMap<_, _>>>()?;
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    let fee = vn_fee(&config)?;
    let rs = Arc::new(Rs {
        config,
        fee,
        key,
        accounts,
        ledger: Mutex::new(LocalLedger::default()),
        stop,
    });
    rs.load_accounts()?;
    let follower = {
        let rs = rs.clone();
        std::thread::Builder::new()
            .name("cas-rs-follow".into())
            .spawn(move || rs.follow())?
    };
    let router = Router::new()
        .route("/v1/pay", post(pay))
        .route("/v1/endorse", post(endorse))
        .route("/v1/balances", get(balances))
        .with_state(rs.clone());
    let http =
        cas_node::HttpThread::start("cas-rs-http", "the RS endpoint", rs.config.listen, router)?;
    println!(
        "rs of vn {} listening on {} (key {}, {} accounts)",
        rs.config.vn,
        rs.config.listen,
        rs.key.public().to_hex(),
        rs.accounts.len()
    );
    let stop_file = rs.config.dir.join("stop");
    while !rs.stop.load(Ordering::Relaxed) && !stop_file.exists() {
        std::thread::sleep(Duration::from_millis(100));
    }
    rs.stop.store(true, Ordering::Relaxed);
    http.stop()?;
    follower
        .join()
        .map_err(|_| anyhow::anyhow!("the follower thread panicked"))?;
    Ok(())
}

/// The fee rule of the RS's VN, as the node's `GET /v1/vns/{vn}` says (the VN must be registered).
fn vn_fee(config: &RsConfig) -> Result<Option<VnFee>> {
    let url = format!("{}/v1/vns/{}", config.api, config.vn);
    let policy: Value = agent()
        .get(&url)
        .call()
        .with_context(|| {
            format!(
                "VN {} is not registered (or the node does not answer)",
                config.vn
            )
        })?
        .into_json()?;
    let Some(fee) = policy.get("fee").filter(|fee| !fee.is_null()) else {
        return Ok(None);
    };
    Ok(Some(VnFee {
        token: AssetId(Hash32::from_hex(
            fee["token"].as_str().context("a fee without a token")?,
        )?),
        amount: fee["amount"].as_u64().context("a fee without an amount")?,
        collector: PublicKey::from_hex(
            fee["collector"]
                .as_str()
                .context("a fee without a collector")?,
        )?,
    }))
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(EXCHANGE_TIMEOUT_S))
        .build()
}

impl Rs {
    /// Starts the local ledger from the node's view of each account; the stream resumes after the lowest height
    /// read (applying a block twice changes nothing: coins are keyed by outpoint).
    fn load_accounts(&self) -> Result<()> {
        let mut ledger = self.ledger.lock().expect("ledger lock");
        let mut lowest = u64::MAX;
        for owner in self.accounts.keys() {
            let url = format!("{}/v1/accounts/{}/utxos", self.config.api, owner.to_hex());
            let page: UtxosPage = agent().get(&url).call()?.into_json()?;
            lowest = lowest.min(page.height);
            for utxo in &page.utxos {
                let (outpoint, coin) = utxo.parse()?;
                ledger.coins.insert(outpoint, coin);
            }
        }
        ledger.height = if lowest == u64::MAX { 0 } else { lowest };
        Ok(())
    }

    /// Follows the VN's routed stream until told to stop, reconnecting after the last height applied.
    fn follow(&self) {
        while !self.stop.load(Ordering::Relaxed) {
            if let Err(error) = self.follow_once() {
                eprintln!("rs: the routed stream broke ({error:#}); reconnecting");
            }
            std::thread::sleep(Duration::from_millis(RECONNECT_MS));
        }
    }

    fn follow_once(&self) -> Result<()> {
        let from = self.ledger.lock().expect("ledger lock").height + 1;
        let vn = self.config.vn;
        let signature = self.key.sign(&stream_request_digest(vn, from));
        let url = format!("{}/v1/vns/{vn}/blocks?from={from}", self.config.api);
        let response = ureq::AgentBuilder::new()
            .build()
            .get(&url)
            .set("x-cas-key", &self.key.public().to_hex())
            .set("x-cas-signature", &hex::encode(signature.0))
            .call()?;
        let mut wire = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.config.dir.join("wire.ndjson"))?;
        for line in BufReader::new(response.into_reader()).lines() {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let line = line?;
            writeln!(wire, "{line}")?;
            let block: Value = serde_json::from_str(&line)?;
            if let Some(error) = block.get("error") {
                bail!("the node ended the stream: {error}");
            }
            self.apply(&block)?;
        }
        Ok(())
    }

    /// Applies one routed block's accepted transactions to this RS's accounts, and keeps the ledger on disk when
    /// they changed it.
    fn apply(&self, block: &Value) -> Result<()> {
        let height = block["height"]
            .as_u64()
            .context("a block without a height")?;
        let mut ledger = self.ledger.lock().expect("ledger lock");
        let mut changed = false;
        for tx in block["txs"].as_array().context("a block without txs")? {
            ensure!(
                tx["vn"].as_u64() == Some(u64::from(self.config.vn)),
                "the node routed a transaction of another VN: {tx}"
            );
            if !tx["rejection"].is_null() {
                continue;
            }
            let id = Hash32::from_hex(tx["tx"].as_str().context("a tx without an id")?)?;
            for input in tx["inputs"].as_array().context("a tx without inputs")? {
                let outpoint = OutPoint {
                    tx: Hash32::from_hex(input["tx"].as_str().context("an input without a tx")?)?,
                    index: input["index"]
                        .as_u64()
                        .context("an input without an index")? as u32,
                };
                changed |= ledger.coins.remove(&outpoint).is_some();
            }
            let outputs: Vec<OutputJson> =
                serde_json::from_value(tx["outputs"].clone()).context("a tx without outputs")?;
            for (index, output) in outputs.iter().enumerate() {
                let coin = output.parse()?;
                if self.accounts.contains_key(&coin.owner) {
                    let outpoint = OutPoint {
                        tx: id,
                        index: index as u32,
                    };
                    changed |= ledger.coins.insert(outpoint, coin).is_none();
                }
            }
        }
        ledger.height = ledger.height.max(height);
        if !changed {
            return Ok(());
        }
        let path = self.config.dir.join("ledger.json");
        write_atomic(&path, ledger_json(&ledger).to_string().as_bytes())
    }

    /// Builds, signs, endorses and submits a payment of `amount` CAS from `from` to `to` on this VN.
    fn pay(&self, from: &PublicKey, to: &PublicKey, amount: u64) -> Result<Value> {
        let payer = self
            .accounts
            .get(from)
            .with_context(|| format!("{} is not an account of this RS", from.to_hex()))?;
        let needed = amount
            .checked_add(self.config.fee)
            .context("the amount and fee overflow")?;
        let coin = |owner: PublicKey, amount: u64, asset: AssetId| TxOutput {
            amount,
            asset,
            owner,
            unlock_height: None,
        };
        let (mut inputs, held) = self.coins_for(from, AssetId::CAS, needed)?;
        let mut outputs = vec![coin(*to, amount, AssetId::CAS)];
        if held > needed {
            outputs.push(coin(*from, held - needed, AssetId::CAS));
        }
        // The VN's fee rule, in its business token, to its collector.
        if let Some(fee) = self.fee {
            let (token_inputs, held) = self.coins_for(from, fee.token, fee.amount)?;
            inputs.extend(token_inputs);
            outputs.push(coin(fee.collector, fee.amount, fee.token));
            if held > fee.amount {
                outputs.push(coin(*from, held - fee.amount, fee.token));
            }
        }
        let body = TxBody {
            chain_id: self.config.chain_id,
            vn: self.config.vn,
            kind: TxKind::Transfer,
            inputs,
            outputs,
            fee: self.config.fee,
            memo: Vec::new(),
            client_id: None,
        };
        let mut tx = body.sign(&[payer, &self.key]);
        for peer in &self.config.peers {
            match endorsed_by(peer, &tx) {
                Ok(endorsed) => add_signatures(&mut tx, &endorsed),
                Err(error) => eprintln!("rs: peer {peer} did not endorse: {error:#}"),
            }
        }
        let url = format!("{}/v1/tx?wait=final&timeout_ms=30000", self.config.api);
        let answer: Value = match agent()
            .post(&url)
            .set("content-type", "application/octet-stream")
            .send_bytes(&encode_tx(&tx))
        {
            Ok(response) => response.into_json()?,
            Err(ureq::Error::Status(_, response)) => response.into_json()?,
            Err(error) => return Err(error.into()),
        };
        // Spent now, whatever the stream has applied yet: the next pay must not pick them again.
        if answer["status"] == "final" && answer["rejection"].is_null() {
            let mut ledger = self.ledger.lock().expect("ledger lock");
            tx.body.inputs.iter().for_each(|input| {
                ledger.coins.remove(input);
            });
        }
        Ok(answer)
    }

    /// Coins of `owner` in `asset` (spendable now), largest first, until they cover `needed`: the outpoints and
    /// what they hold.
    fn coins_for(
        &self,
        owner: &PublicKey,
        asset: AssetId,
        needed: u64,
    ) -> Result<(Vec<OutPoint>, u64)> {
        let ledger = self.ledger.lock().expect("ledger lock");
        let coins = ledger
            .coins
            .iter()
            .filter(|(_, c)| c.owner == *owner && c.asset == asset && c.unlock_height.is_none())
            .map(|(o, c)| (*o, c.amount));
        pick_coins(coins, needed)
            .with_context(|| format!("{}'s coins of {}", owner.to_hex(), asset.0.to_hex()))
    }

    /// The Policy's endorsement step: a transaction of this RS's VN and chain whose signatures all verify gets
    /// this RS's signature too.
    fn endorse(&self, bytes: &[u8]) -> Result<Vec<u8>> {
        ensure!(
            bytes.len() <= TX_BYTES_MAX,
            "a transaction of {} bytes",
            bytes.len()
        );
        let mut tx = to_owned_tx(decode_tx(bytes)?);
        ensure!(
            tx.body.vn == self.config.vn,
            "a transaction of vn {}, not {}",
            tx.body.vn,
            self.config.vn
        );
        ensure!(
            tx.body.chain_id == self.config.chain_id,
            "a transaction of chain {}",
            tx.body.chain_id
        );
        let id = tx.tx_id();
        let verified = tx.signatures.iter().all(|w| {
            verify_one(&SigEntry {
                message: &id.0,
                key: &w.key.0,
                signature: &w.signature.0,
            })
        });
        ensure!(verified, "a signature of the transaction does not verify");
        if !tx.signatures.iter().any(|w| w.key == self.key.public()) {
            tx.signatures.push(TxSignature {
                key: self.key.public(),
                signature: self.key.sign(&id.0),
            });
        }
        Ok(encode_tx(&tx).to_vec())
    }
}

/// A peer RS's endorsement of `tx`: the transaction it sends back.
fn endorsed_by(peer: &str, tx: &Transaction) -> Result<Transaction> {
    let response = agent()
        .post(&format!("{peer}/v1/endorse"))
        .set("content-type", "application/octet-stream")
        .send_bytes(&encode_tx(tx))?;
    let mut bytes = Vec::new();
    response
        .into_reader()
        .take(TX_BYTES_MAX as u64)
        .read_to_end(&mut bytes)?;
    let endorsed = to_owned_tx(decode_tx(&bytes)?);
    ensure!(
        endorsed.body == tx.body,
        "the peer sent back another transaction"
    );
    Ok(endorsed)
}

/// Adds the signatures of `other` (the same body) that `tx` lacks.
fn add_signatures(tx: &mut Transaction, other: &Transaction) {
    let known: BTreeSet<PublicKey> = tx.signatures.iter().map(|w| w.key).collect();
    let new: Vec<TxSignature> = other
        .signatures
        .iter()
        .filter(|w| !known.contains(&w.key))
        .copied()
        .collect();
    tx.signatures.extend(new);
}

fn ledger_json(ledger: &LocalLedger) -> Value {
    let mut balances: BTreeMap<String, BTreeMap<String, u128>> = BTreeMap::new();
    for coin in ledger.coins.values() {
        *balances
            .entry(coin.owner.to_hex())
            .or_default()
            .entry(coin.asset.0.to_hex())
            .or_default() += u128::from(coin.amount);
    }
    json!({"height": ledger.height, "coins": ledger.coins.len(), "balances": balances})
}

fn refused(status: StatusCode, error: &anyhow::Error) -> Response {
    (
        status,
        Json(json!({"status": "refused", "reason": format!("{error:#}")})),
    )
        .into_response()
}

#[derive(Deserialize)]
struct PayRequest {
    from: String,
    to: String,
    amount: u64,
}

/// `POST /v1/pay {from, to, amount}`: the node's answer to the endorsed payment (final, with its verdict).
async fn pay(State(rs): State<Arc<Rs>>, Json(request): Json<PayRequest>) -> Response {
    let parsed = PublicKey::from_hex(&request.from)
        .and_then(|from| Ok((from, PublicKey::from_hex(&request.to)?)));
    let (from, to) = match parsed {
        Ok(keys) => keys,
        Err(error) => {
            return refused(
                StatusCode::BAD_REQUEST,
                &anyhow::anyhow!("a key is not hex: {error}"),
            )
        }
    };
    let answered = tokio::task::spawn_blocking(move || rs.pay(&from, &to, request.amount)).await;
    match answered {
        Ok(Ok(answer)) => Json(answer).into_response(),
        Ok(Err(error)) => refused(StatusCode::UNPROCESSABLE_ENTITY, &error),
        Err(error) => refused(StatusCode::INTERNAL_SERVER_ERROR, &error.into()),
    }
}

/// `POST /v1/endorse` (a signed transaction's bytes): the same transaction with this RS's endorsement.
async fn endorse(State(rs): State<Arc<Rs>>, body: Bytes) -> Response {
    match rs.endorse(&body) {
        Ok(bytes) => bytes.into_response(),
        Err(error) => refused(StatusCode::BAD_REQUEST, &error),
    }
}

/// `GET /v1/balances`: this RS's accounts' balances per asset, from its local ledger, and its height.
async fn balances(State(rs): State<Arc<Rs>>) -> Response {
    let ledger = rs.ledger.lock().expect("ledger lock");
    Json(ledger_json(&ledger)).into_response()
}
