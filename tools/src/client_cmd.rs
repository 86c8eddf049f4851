//! The client API from the command line: `cas submit`, `cas status`, `cas balance`, `cas stake`, `cas watch` and
//! `cas receipt get`, each one call of a node's HTTP API (docs/openapi.yaml), printing its JSON answer (the node is
//! `--api URL` or `$CAS_API`); and `cas receipt verify`, which checks a settlement receipt offline against the
//! genesis committee, with no node.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

#[derive(clap::Args, Clone, Debug)]
pub struct ApiArg {
    /// A node's HTTP API, e.g. http://127.0.0.1:8080 (default: $CAS_API).
    #[arg(long, env = "CAS_API")]
    pub api: String,
}

#[derive(clap::Subcommand, Clone, Debug)]
pub enum ClientCommand {
    /// Submit a signed transaction file (from `cas tx`); with --wait, until it is final or rejected.
    Submit {
        file: PathBuf,
        #[arg(long)]
        wait: bool,
        /// How long --wait holds the request at most.
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: u64,
        #[command(flatten)]
        api: ApiArg,
    },
    /// A transaction's status: pending, final (with its rejection, if any) or unknown.
    Status {
        id: String,
        #[command(flatten)]
        api: ApiArg,
    },
    /// An owner's balance per asset.
    Balance {
        owner: String,
        #[command(flatten)]
        api: ApiArg,
    },
    /// Follow finalized blocks from a height, one JSON line each (the deposit watcher); runs until interrupted.
    Watch {
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Only transactions paying or signed by this key.
        #[arg(long)]
        owner: Option<String>,
        /// Only transactions with this memo (text).
        #[arg(long)]
        memo: Option<String>,
        #[command(flatten)]
        api: ApiArg,
    },
    /// The POS candidates, their stake and the committee an election now would pick.
    Stake {
        #[command(flatten)]
        api: ApiArg,
    },
    /// Settlement receipts: fetch one from a node, or check one offline.
    #[command(subcommand)]
    Receipt(ReceiptCommand),
}

#[derive(clap::Subcommand, Clone, Debug)]
pub enum ReceiptCommand {
    /// Fetch a final transaction's settlement receipt (JSON) from a node.
    Get {
        id: String,
        /// Write it to this file instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        api: ApiArg,
    },
    /// Check a receipt file with nothing but the genesis (its committee keys): prints what it proves, or fails
    /// saying which check did not hold.
    Verify {
        file: PathBuf,
        /// The chain's genesis block file (`cas genesis`).
        #[arg(long)]
        genesis: PathBuf,
    },
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().build()
}

/// The answer's body, whatever its HTTP status (the API answers every refusal with JSON saying why); a non-2xx
/// status makes the command fail after printing it.
fn print_answer(result: Result<ureq::Response, ureq::Error>) -> Result<()> {
    let (ok, response) = match result {
        Ok(response) => (true, response),
        Err(ureq::Error::Status(_, response)) => (false, response),
        Err(error) => return Err(error).context("the node did not answer"),
    };
    let status = response.status();
    let body = response.into_string().context("reading the answer")?;
    println!("{}", body.trim_end());
    if !ok {
        bail!("HTTP {status}");
    }
    Ok(())
}

pub fn run(command: &ClientCommand) -> Result<()> {
    match command {
        ClientCommand::Submit {
            file,
            wait,
            timeout_ms,
            api,
        } => {
            let bytes =
                std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            let mut request = agent()
                .post(&format!("{}/v1/tx", api.api.trim_end_matches('/')))
                .set("Content-Type", "application/octet-stream");
            if *wait {
                request = request
                    .query("wait", "final")
                    .query("timeout_ms", &timeout_ms.to_string());
            }
            print_answer(request.send_bytes(&bytes))
        }
        ClientCommand::Status { id, api } => print_answer(
            agent()
                .get(&format!("{}/v1/tx/{id}", api.api.trim_end_matches('/')))
                .call(),
        ),
        ClientCommand::Balance { owner, api } => print_answer(
            agent()
                .get(&format!(
                    "{}/v1/accounts/{owner}/balance",
                    api.api.trim_end_matches('/')
                ))
                .call(),
        ),
        ClientCommand::Stake { api } => print_answer(
            agent()
                .get(&format!("{}/v1/stake", api.api.trim_end_matches('/')))
                .call(),
        ),
        ClientCommand::Watch {
            from,
            owner,
            memo,
            api,
        } => {
            let mut request = agent()
                .get(&format!("{}/v1/blocks", api.api.trim_end_matches('/')))
                .query("from", &from.to_string());
            if let Some(owner) = owner {
                request = request.query("owner", owner);
            }
            if let Some(memo) = memo {
                request = request.query("memo", &hex::encode(memo));
            }
            let response = match request.call() {
                Ok(response) => response,
                Err(result) => return print_answer(Err(result)),
            };
            let mut out = std::io::stdout().lock();
            for line in BufReader::new(response.into_reader()).lines() {
                writeln!(out, "{}", line.context("the stream broke")?)?;
                out.flush()?;
            }
            Ok(())
        }
        ClientCommand::Receipt(ReceiptCommand::Get { id, out, api }) => {
            let url = format!("{}/v1/tx/{id}/receipt", api.api.trim_end_matches('/'));
            match (agent().get(&url).call(), out) {
                (Ok(response), Some(out)) => {
                    let body = response.into_string().context("reading the answer")?;
                    std::fs::write(out, body)
                        .with_context(|| format!("cannot write {}", out.display()))
                }
                (result, _) => print_answer(result),
            }
        }
        ClientCommand::Receipt(ReceiptCommand::Verify { file, genesis }) => {
            let settled = verify_receipt_file(file, genesis)?;
            let verdict = match settled.rejection {
                None => "applied".to_string(),
                Some(code) => format!("rejected with code {} ({})", code.number(), code.name()),
            };
            println!(
                "receipt good: tx {} is final at height {} index {} of ledger block {} (consensus block {}), {verdict}; \
                 certified by stake {} of {} of the epoch {} committee",
                settled.tx.to_hex(),
                settled.height,
                settled.index,
                settled.block.to_hex(),
                settled.consensus.to_hex(),
                settled.signed_stake,
                settled.committee_stake,
                settled.epoch
            );
            Ok(())
        }
    }
}

/// Reads a receipt file and checks it against the committee of a genesis file.
pub fn verify_receipt_file(
    file: &std::path::Path,
    genesis: &std::path::Path,
) -> Result<cas_consensus::receipt::Settled> {
    let genesis_bytes =
        std::fs::read(genesis).with_context(|| format!("cannot read {}", genesis.display()))?;
    let genesis = cas_engine::codec::to_owned_block(
        cas_engine::codec::decode_block(&genesis_bytes)
            .context("the genesis file is not a block")?,
    );
    let (members, _) = cas_engine::genesis::genesis_committee(&genesis)
        .context("the genesis block names no committee")?;
    let committee = cas_consensus::committee::Committee::new(
        members.iter().map(|m| (m.key, m.stake)).collect(),
    )?;
    let text = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let json: cas_node::receipt::ReceiptJson =
        serde_json::from_slice(&text).context("the receipt is not receipt JSON")?;
    let receipt = json
        .to_receipt()
        .context("the receipt does not hold together")?;
    cas_consensus::receipt::verify_receipt(&receipt, genesis.header.chain_id, committee)
        .context("the receipt does not verify")
}
