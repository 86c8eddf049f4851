//! `cas wallet`: a light (SPV) wallet that keeps certified ledger headers only ([`cas_consensus::spv`]). `sync`
//! fetches headers and hand-overs from any node and keeps those a verified committee certificate reached; `verify`
//! checks a payment's receipt against the stored headers alone; `balance` asks a node for an owner's outputs and
//! checks, for each, the receipt of the transaction that created it; `send` signs a payment and hands it to any
//! node (a member admits it, a follower relays it to the committee), waiting until it is final. The node is trusted for nothing a check here
//! covers; what SPV cannot show (that an output is still unspent) is said, never implied.
//!
//! The folder holds `genesis.bin` (a copy of the genesis file, the root of trust), `handovers.json` (the certified
//! committee hand-overs, as a node serves them) and `headers.bin` ([`cas_consensus::spv::store`]), each written
//! atomically with fsync.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use cas_consensus::committee::Committee;
use cas_consensus::ledger_cert::EpochError;
use cas_consensus::spv::payment::{Payment, PaymentProof};
use cas_consensus::spv::{store, HeaderChain, Pushed, SpvError};
use cas_engine::{AssetId, Block, OutPoint, PublicKey, TxOutput};
use cas_node::durable::write_atomic;
use cas_node::receipt::{CertJson, HandoverJson, HeaderJson, ReceiptJson};
use serde::Deserialize;

use crate::node_json::{pick_coins, UtxosPage};

const GENESIS_FILE: &str = "genesis.bin";
const HANDOVERS_FILE: &str = "handovers.json";
const HEADERS_FILE: &str = "headers.bin";
/// Headers asked per request (the node answers at most 256).
const HEADERS_PER_REQUEST: u64 = 256;
/// The header file is rewritten after this many requests that certified something, so an interrupted sync resumes
/// near where it stopped without rewriting the whole file for every request.
const SAVE_EVERY_REQUESTS: u32 = 64;
/// Tries of one request the node answered `overloaded` (or did not answer) before the sync stops.
const REQUEST_TRIES_MAX: u32 = 5;
const RETRY_PAUSE_MS: u64 = 500;
/// Times a sync takes the node's hand-overs again when a certificate names an epoch they do not reach yet.
const HANDOVER_REFRESHES_MAX: u32 = 3;
/// Transactions whose receipts `balance` fetches; outputs of more are counted as not checked.
const BALANCE_TXS_MAX: usize = 1_000;
const HTTP_TIMEOUT_MS: u64 = 30_000;

#[derive(clap::Subcommand, Clone, Debug)]
pub enum WalletCommand {
    /// Fetch ledger headers and committee hand-overs from a node, keep those a verified certificate reached, and
    /// store them in DIR (resumes from the last stored height).
    Sync {
        /// A node's HTTP API, e.g. http://127.0.0.1:8080 (default: $CAS_API).
        #[arg(long, env = "CAS_API")]
        api: String,
        /// The chain's genesis block file (`cas genesis`): needed for the first sync, checked on later ones.
        #[arg(long)]
        genesis: Option<PathBuf>,
        #[arg(long)]
        dir: PathBuf,
    },
    /// Check a payment against the stored headers alone: a receipt file (`cas receipt get --out`), or a tx id
    /// whose receipt is fetched from --api. The receipt's header and hand-overs are not used.
    Verify {
        #[arg(long)]
        dir: PathBuf,
        /// A receipt file, or a transaction id (64 hex digits) with --api.
        receipt: String,
        #[arg(long, env = "CAS_API")]
        api: Option<String>,
    },
    /// Pay CAS from a key's coins (the node lists them) to another key: signed here, submitted to --api (any
    /// node), held until final. Prints the node's answer (JSON), whose tx id `verify` then checks.
    Send {
        #[arg(long, env = "CAS_API")]
        api: String,
        /// The payer's key file.
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        chain_id: u32,
        /// The payee's public key (hex).
        #[arg(long)]
        to: String,
        #[arg(long)]
        amount: u64,
        #[arg(long)]
        fee: u64,
    },
    /// An owner's balance as far as SPV proves it: each unspent output the node reports is checked against the
    /// stored headers through the receipt of the transaction that created it.
    Balance {
        #[arg(long)]
        dir: PathBuf,
        /// The owner's public key (hex).
        #[arg(long)]
        owner: String,
        #[arg(long, env = "CAS_API")]
        api: String,
    },
}

pub fn run(command: &WalletCommand) -> Result<()> {
    match command {
        WalletCommand::Sync { api, genesis, dir } => sync(api, genesis.as_deref(), dir),
        WalletCommand::Verify { dir, receipt, api } => verify(dir, receipt, api.as_deref()),
        WalletCommand::Balance { dir, owner, api } => balance(dir, owner, api),
        WalletCommand::Send {
            api,
            key,
            chain_id,
            to,
            amount,
            fee,
        } => send(api, key, *chain_id, to, *amount, *fee),
    }
}

/// `cas wallet send`: the payer's spendable CAS coins, largest first, until they cover the amount and fee; the
/// change back to the payer.
fn send(api: &str, key: &Path, chain_id: u32, to: &str, amount: u64, fee: u64) -> Result<()> {
    let payer = cas_node::keyfile::load(key)?;
    let to = PublicKey::from_hex(to).context("--to: not a 32-byte hex key")?;
    let needed = amount
        .checked_add(fee)
        .context("the amount and fee overflow")?;
    let agent = agent();
    let page: UtxosPage = get_json(
        &agent,
        &format!("{api}/v1/accounts/{}/utxos", payer.public().to_hex()),
    )?;
    let mut spendable = Vec::new();
    for utxo in &page.utxos {
        let (outpoint, coin) = utxo.parse().context("the node's outputs do not read")?;
        if coin.asset == AssetId::CAS && coin.unlock_height.is_none() {
            spendable.push((outpoint, coin.amount));
        }
    }
    let (inputs, held) = pick_coins(spendable, needed).context("the payer's spendable CAS")?;
    let output = |owner, amount| TxOutput {
        amount,
        asset: AssetId::CAS,
        owner,
        unlock_height: None,
    };
    let mut outputs = vec![output(to, amount)];
    if held > needed {
        outputs.push(output(payer.public(), held - needed));
    }
    let tx = cas_engine::TxBody {
        chain_id,
        vn: 0,
        kind: cas_engine::TxKind::Transfer,
        inputs,
        outputs,
        fee,
        memo: Vec::new(),
        client_id: None,
    }
    .sign(&[&payer]);
    let url = format!("{api}/v1/tx?wait=final&timeout_ms={HTTP_TIMEOUT_MS}");
    let answer: serde_json::Value = match agent
        .post(&url)
        .set("content-type", "application/octet-stream")
        .send_bytes(&cas_engine::codec::encode_tx(&tx))
    {
        Ok(response) => response.into_json()?,
        Err(ureq::Error::Status(_, response)) => response.into_json()?,
        Err(error) => return Err(error).with_context(|| format!("POST {url}")),
    };
    println!("{answer}");
    ensure!(
        answer["status"] == "final" && answer["rejection"].is_null(),
        "the payment is not final and applied"
    );
    Ok(())
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_millis(HTTP_TIMEOUT_MS))
        .build()
}

/// GET `url` as JSON: retried while the node is overloaded or unreachable; a refusal is an error with its body.
fn get_json<T: serde::de::DeserializeOwned>(agent: &ureq::Agent, url: &str) -> Result<T> {
    let mut tries = 0;
    loop {
        tries += 1;
        match agent.get(url).call() {
            Ok(response) => {
                return response
                    .into_json()
                    .with_context(|| format!("GET {url}: not the JSON expected"))
            }
            Err(ureq::Error::Status(429, _)) | Err(ureq::Error::Transport(_))
                if tries < REQUEST_TRIES_MAX =>
            {
                std::thread::sleep(Duration::from_millis(RETRY_PAUSE_MS));
            }
            Err(ureq::Error::Status(status, response)) => {
                let body = response.into_string().unwrap_or_default();
                bail!("GET {url}: HTTP {status}: {}", body.trim())
            }
            Err(error) => return Err(error).with_context(|| format!("GET {url}")),
        }
    }
}

/// The wallet's folder: the genesis it trusts and the chain stored from it.
struct Wallet {
    dir: PathBuf,
    genesis: Block,
    chain: HeaderChain,
}

/// The genesis block in `bytes` and its committee.
fn read_genesis(bytes: &[u8]) -> Result<(Block, Committee)> {
    let genesis = cas_engine::codec::to_owned_block(
        cas_engine::codec::decode_block(bytes).context("the genesis file is not a block")?,
    );
    let (members, _) = cas_engine::genesis::genesis_committee(&genesis)
        .context("the genesis block names no committee")?;
    let committee = Committee::new(members.iter().map(|m| (m.key, m.stake)).collect())?;
    Ok((genesis, committee))
}

impl Wallet {
    /// Opens the wallet in `dir`; with `genesis`, creates it there if it holds none (and checks it is the one held).
    fn open(dir: &Path, genesis: Option<&Path>) -> Result<Wallet> {
        let held = dir.join(GENESIS_FILE);
        let given = genesis
            .map(|path| {
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
            })
            .transpose()?;
        let bytes = match (std::fs::read(&held), given) {
            (Ok(bytes), Some(given)) => {
                ensure!(
                    bytes == given,
                    "{} is another chain's genesis than the one this wallet follows",
                    genesis.expect("given").display()
                );
                bytes
            }
            (Ok(bytes), None) => bytes,
            (Err(_), Some(given)) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                read_genesis(&given)?;
                write_atomic(&held, &given)?;
                given
            }
            (Err(error), None) => {
                bail!("{}: {error}: sync with --genesis first", held.display())
            }
        };
        let (genesis, committee) = read_genesis(&bytes)?;
        let chain = match std::fs::read(dir.join(HEADERS_FILE)) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let mut chain = HeaderChain::new(&genesis.header, committee)?;
                chain.follow(&read_handovers(dir)?)?;
                chain
            }
            Err(error) => return Err(error).context("cannot read the stored headers"),
            Ok(bytes) => {
                let (chain_id, headers) =
                    store::decode(&bytes).context("the stored headers do not read")?;
                ensure!(
                    chain_id == genesis.header.chain_id,
                    "the stored headers are of chain {chain_id}, the genesis of chain {}",
                    genesis.header.chain_id
                );
                let handovers = read_handovers(dir)?;
                HeaderChain::restore(&genesis.header, committee, &handovers, headers)
                    .context("the stored headers do not fit the genesis and hand-overs")?
            }
        };
        Ok(Wallet {
            dir: dir.to_path_buf(),
            genesis,
            chain,
        })
    }

    /// Stores the hand-overs, then the certified headers (a crash between the two leaves hand-overs that only
    /// extend the ones the headers were checked with).
    fn save(&self) -> Result<()> {
        let handovers: Vec<HandoverJson> = self
            .chain
            .handovers()
            .iter()
            .map(HandoverJson::from_handover)
            .collect();
        write_atomic(
            &self.dir.join(HANDOVERS_FILE),
            &serde_json::to_vec_pretty(&handovers)?,
        )?;
        let bytes = store::encode(self.chain.chain_id(), self.chain.headers());
        write_atomic(&self.dir.join(HEADERS_FILE), &bytes)
    }
}

fn read_handovers(dir: &Path) -> Result<Vec<cas_consensus::ledger_cert::CommitteeHandover>> {
    match std::fs::read(dir.join(HANDOVERS_FILE)) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(error) => Err(error).context("cannot read the stored hand-overs"),
        Ok(bytes) => {
            let list: Vec<HandoverJson> =
                serde_json::from_slice(&bytes).context("the stored hand-overs do not read")?;
            list.iter().map(HandoverJson::to_handover).collect()
        }
    }
}

#[derive(Deserialize)]
struct HandoversPage {
    handovers: Vec<HandoverJson>,
}

#[derive(Deserialize)]
struct HeadersPage {
    executed_height: u64,
    headers: Vec<HeaderItem>,
}

#[derive(Deserialize)]
struct HeaderItem {
    header: HeaderJson,
    certificate: Option<CertJson>,
}

/// Takes the node's hand-overs into the chain.
fn follow_node(agent: &ureq::Agent, api: &str, chain: &mut HeaderChain) -> Result<()> {
    let page: HandoversPage = get_json(agent, &format!("{api}/v1/handovers"))?;
    let handovers = page
        .handovers
        .iter()
        .map(HandoverJson::to_handover)
        .collect::<Result<Vec<_>>>()?;
    chain
        .follow(&handovers)
        .context("the node's hand-overs do not follow from this wallet's")
}

fn sync(api: &str, genesis: Option<&Path>, dir: &Path) -> Result<()> {
    let api = api.trim_end_matches('/');
    let mut wallet = Wallet::open(dir, genesis)?;
    let agent = agent();
    let start = wallet.chain.tip();
    println!("wallet at certified height {start}; syncing from {api}");
    follow_node(&agent, api, &mut wallet.chain)?;
    let (mut refreshes, mut unsaved) = (0, 0);
    let synced = loop {
        let from = wallet.chain.next_height();
        let url = format!("{api}/v1/headers?from={from}&limit={HEADERS_PER_REQUEST}");
        let page: HeadersPage = match get_json(&agent, &url) {
            Ok(page) => page,
            Err(error) => break Err(error),
        };
        let count = page.headers.len() as u64;
        match take_page(&mut wallet.chain, page.headers) {
            Ok(certified) => unsaved += u32::from(certified),
            Err(TakeError::Unreached(epoch)) if refreshes < HANDOVER_REFRESHES_MAX => {
                // A new committee took over since the hand-overs were read: read them again.
                refreshes += 1;
                println!("a certificate of epoch {epoch}: taking the node's hand-overs again");
                if let Err(error) = follow_node(&agent, api, &mut wallet.chain) {
                    break Err(error);
                }
                continue;
            }
            Err(TakeError::Refused(error)) => break Err(error),
            Err(TakeError::Unreached(epoch)) => {
                break Err(anyhow::anyhow!(
                    "the node's certificates are signed as epoch {epoch}, which its hand-overs do not reach"
                ))
            }
        }
        println!(
            "certified to height {} of the node's {} ({} held for a later certificate)",
            wallet.chain.tip(),
            page.executed_height,
            wallet.chain.pending()
        );
        if unsaved >= SAVE_EVERY_REQUESTS {
            wallet.save()?;
            unsaved = 0;
        }
        if count < HEADERS_PER_REQUEST || wallet.chain.next_height() > page.executed_height {
            break Ok(());
        }
    };
    // What was certified is kept even when the node failed or lied partway.
    wallet.save()?;
    synced?;
    println!(
        "synced: certified headers 0..={} stored in {} ({} new); {} newer headers await a certificate and are not \
         stored; newest committee epoch known: {} ({} hand-overs followed)",
        wallet.chain.tip(),
        dir.display(),
        wallet.chain.tip() - start,
        wallet.chain.pending(),
        wallet.chain.last_epoch(),
        wallet.chain.handovers().len()
    );
    Ok(())
}

/// Why a page of headers stopped being taken.
enum TakeError {
    /// A certificate names an epoch the hand-overs do not reach yet.
    Unreached(u64),
    Refused(anyhow::Error),
}

/// Pushes a page of headers in order; returns whether any became certified.
fn take_page(chain: &mut HeaderChain, items: Vec<HeaderItem>) -> Result<bool, TakeError> {
    let mut certified = false;
    for item in items {
        let header = item.header.to_header().map_err(TakeError::Refused)?;
        let cert = item
            .certificate
            .map(|c| c.to_cert())
            .transpose()
            .map_err(TakeError::Refused)?;
        match chain.push(&header, cert.as_ref()) {
            Ok(Pushed::Certified { .. }) => certified = true,
            Ok(Pushed::Held { .. }) => {}
            Err(SpvError::Epoch {
                source: EpochError::Unreached(epoch),
                ..
            }) => return Err(TakeError::Unreached(epoch)),
            Err(error) => {
                return Err(TakeError::Refused(
                    anyhow::Error::from(error)
                        .context("the node sent a header this wallet refuses"),
                ))
            }
        }
    }
    Ok(certified)
}

/// A receipt from a file, or fetched by tx id.
fn read_receipt(receipt: &str, api: Option<&str>) -> Result<ReceiptJson> {
    let is_id = receipt.len() == 64 && receipt.bytes().all(|b| b.is_ascii_hexdigit());
    if is_id && !Path::new(receipt).exists() {
        let api = api.context("a tx id needs --api (or $CAS_API) to fetch its receipt")?;
        let url = format!("{}/v1/tx/{receipt}/receipt", api.trim_end_matches('/'));
        return get_json(&agent(), &url);
    }
    let text = std::fs::read(receipt).with_context(|| format!("cannot read {receipt}"))?;
    serde_json::from_slice(&text).context("the receipt is not receipt JSON")
}

fn check_receipt(chain: &HeaderChain, json: &ReceiptJson) -> Result<Payment> {
    let receipt = json
        .to_receipt()
        .context("the receipt does not hold together")?;
    chain
        .check_payment(&PaymentProof::from(&receipt))
        .context("the payment does not verify against the stored certified headers")
}

fn verify(dir: &Path, receipt: &str, api: Option<&str>) -> Result<()> {
    let wallet = Wallet::open(dir, None)?;
    let payment = check_receipt(&wallet.chain, &read_receipt(receipt, api)?)?;
    let verdict = match payment.rejection {
        None => "applied".to_string(),
        Some(code) => format!(
            "rejected with code {} ({}): it created nothing",
            code.number(),
            code.name()
        ),
    };
    println!(
        "payment good: tx {} is at height {} index {} of certified ledger block {}, {verdict} (checked against \
         the wallet's stored header, certified to height {})",
        payment.tx.to_hex(),
        payment.height,
        payment.index,
        payment.block.to_hex(),
        wallet.chain.tip()
    );
    for (outpoint, output) in &payment.created {
        println!(
            "  output {}: {} of asset {} to {}{}",
            outpoint.index,
            output.amount,
            asset_name(&output.asset),
            output.owner.to_hex(),
            output
                .unlock_height
                .map_or(String::new(), |h| format!(" (locked until height {h})"))
        );
    }
    Ok(())
}

fn asset_name(asset: &AssetId) -> String {
    if *asset == AssetId::CAS {
        "CAS".into()
    } else {
        asset.0.to_hex()
    }
}

/// What `balance` found of one output the node reports.
enum Checked {
    /// Created in a certified block (or the genesis), as the node says.
    Proved,
    /// No proof could be had (the receipt is not served yet, the height is above the stored headers, ...).
    Unchecked(String),
    /// The node's proof fails, or proves something else than the node reports.
    Refused(String),
}

fn balance(dir: &Path, owner: &str, api: &str) -> Result<()> {
    let api = api.trim_end_matches('/');
    let wallet = Wallet::open(dir, None)?;
    let owner_key = PublicKey::from_hex(owner).context("--owner is not a 32-byte hex key")?;
    let agent = agent();
    let page: UtxosPage = get_json(&agent, &format!("{api}/v1/accounts/{owner}/utxos"))?;
    let mut by_tx: BTreeMap<cas_engine::TxId, Vec<(OutPoint, TxOutput)>> = BTreeMap::new();
    for utxo in &page.utxos {
        let (outpoint, output) = utxo.parse().context("the node's outputs do not read")?;
        by_tx
            .entry(outpoint.tx)
            .or_default()
            .push((outpoint, output));
    }
    let genesis_outputs = cas_engine::genesis::genesis_outputs(&wallet.genesis.txs);
    // Per asset: (proved, unchecked) amounts.
    let mut totals: BTreeMap<AssetId, (u128, u128)> = BTreeMap::new();
    let mut refused = Vec::new();
    for (position, (tx, outputs)) in by_tx.iter().enumerate() {
        let checked = if position >= BALANCE_TXS_MAX {
            Checked::Unchecked(format!("more than {BALANCE_TXS_MAX} transactions"))
        } else if outputs.iter().all(|o| genesis_outputs.contains(o)) {
            Checked::Proved
        } else {
            check_outputs(&wallet.chain, &agent, api, tx, outputs)
        };
        for (outpoint, output) in outputs {
            ensure!(
                output.owner == owner_key,
                "the node reports output {}:{} of another owner",
                outpoint.tx.to_hex(),
                outpoint.index
            );
            let (proved, unchecked) = totals.entry(output.asset).or_default();
            match &checked {
                Checked::Proved => *proved += u128::from(output.amount),
                Checked::Unchecked(why) => {
                    *unchecked += u128::from(output.amount);
                    println!(
                        "not checked: output {}:{} ({why})",
                        tx.to_hex(),
                        outpoint.index
                    );
                }
                Checked::Refused(why) => {
                    refused.push(format!("{}:{}: {why}", tx.to_hex(), outpoint.index))
                }
            }
        }
    }
    print_balance(&owner_key, page.height, wallet.chain.tip(), &totals);
    ensure!(
        refused.is_empty(),
        "the node's proofs failed for {} output(s), left out above: {}",
        refused.len(),
        refused.join("; ")
    );
    Ok(())
}

/// Checks the outputs the node reports for one transaction against its receipt and the stored headers.
fn check_outputs(
    chain: &HeaderChain,
    agent: &ureq::Agent,
    api: &str,
    tx: &cas_engine::TxId,
    outputs: &[(OutPoint, TxOutput)],
) -> Checked {
    let url = format!("{api}/v1/tx/{}/receipt", tx.to_hex());
    let receipt: ReceiptJson = match get_json(agent, &url) {
        Ok(receipt) => receipt,
        Err(error) => return Checked::Unchecked(format!("no receipt: {error:#}")),
    };
    if receipt.height > chain.tip() {
        return Checked::Unchecked(format!(
            "created at height {}, above the stored headers (sync first)",
            receipt.height
        ));
    }
    let payment = match check_receipt(chain, &receipt) {
        Ok(payment) => payment,
        Err(error) => return Checked::Refused(format!("{error:#}")),
    };
    if payment.tx != *tx {
        return Checked::Refused("the receipt is of another transaction".into());
    }
    for output in outputs {
        if !payment.created.contains(output) {
            return Checked::Refused(format!(
                "the transaction did not create output {} as the node reports it",
                output.0.index
            ));
        }
    }
    Checked::Proved
}

fn print_balance(
    owner: &PublicKey,
    node_height: u64,
    tip: u64,
    totals: &BTreeMap<AssetId, (u128, u128)>,
) {
    println!(
        "SPV balance of {} (outputs the node reports unspent at its height {node_height}; headers certified to \
         height {tip}):",
        owner.to_hex()
    );
    for (asset, (proved, unchecked)) in totals {
        println!(
            "  {}: {proved} proved{}",
            asset_name(asset),
            if *unchecked > 0 {
                format!(", {unchecked} more not checked")
            } else {
                String::new()
            }
        );
    }
    println!(
        "proved: each counted output was created in a block the committee certified (or in the genesis). not \
         proved: that it is still unspent; that is the node's word, unless this wallet signed every spend of the \
         owner's coins."
    );
}
