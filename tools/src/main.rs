//! The `cas` binary: offline key, genesis and transaction tools, the main job (`cas local`) and the perf suite
//! (`cas bench`).
//! Errors print as one line and exit non-zero; nothing here panics on user input.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod bench;
mod client_cmd;
mod cluster;
mod gov_cmd;
mod http_load;
mod id_table;
mod load;
mod local;
mod mine_cmd;
mod mining_compare;
mod netns;
mod node_json;
mod offline;
mod peak;
mod rs;
mod serve;
mod storm;
mod token_cmd;
mod upgrade;
mod vn_cmd;
mod wallet_cmd;
mod witness_cmd;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "cas", version, about = "CAS settlement engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a key file (mode 0600) and print its public key.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Build the genesis block from a TOML spec.
    Genesis {
        #[arg(long)]
        spec: PathBuf,
        #[arg(long, default_value = "genesis.bin")]
        out: PathBuf,
    },
    /// Build and sign a transfer offline; prints its tx id.
    Tx {
        #[command(flatten)]
        flags: offline::TxFlags,
        /// Bond the transaction's stake outputs to this candidate (its node key, hex): a delegation.
        #[arg(long, conflicts_with_all = ["unbond", "candidacy"])]
        bond: Option<String>,
        /// Unbond stake from this candidate into CAS locked for the chain's unbonding delay.
        #[arg(long, conflicts_with = "candidacy")]
        unbond: Option<String>,
        /// Declare the first key's candidacy, announcing this address (IP:PORT, or `none`).
        #[arg(long)]
        candidacy: Option<String>,
    },
    /// Business tokens, built and signed offline like `cas tx`: issue, mint, buy from the issuer's offer, approve
    /// a spender, transfer from an allowance.
    #[command(subcommand)]
    Token(token_cmd::TokenCommand),
    /// DEX limit orders for token/CAS pairs, built and signed offline like `cas tx`: place, fill, cancel.
    #[command(subcommand)]
    Order(token_cmd::OrderCommand),
    /// Contracts (docs/contracts.md), built and signed offline like `cas tx`: deploy, call.
    #[command(subcommand)]
    Contract(token_cmd::ContractCommand),
    /// CIP governance, built and signed offline like `cas tx`: propose (a vote, optionally a parameter change),
    /// vote.
    #[command(subcommand)]
    Gov(gov_cmd::GovCommand),
    /// Business networks (VNs): register one with its endorsement Policy, endorse a transaction as an RS, read a
    /// VN's routed stream.
    #[command(subcommand)]
    Vn(vn_cmd::VnCommand),
    /// A runtime sandbox (RS): the adapter of one VN's participant, serving its AI, endorsing for its VN, keeping a
    /// local ledger of its accounts from the VN's routed blocks (see tools/src/rs.rs).
    Rs {
        #[arg(long)]
        config: PathBuf,
    },
    /// Decode a transaction or block file with the untrusted decoder and print it.
    Show { file: PathBuf },
    /// Run a node: consensus, availability, shards and the client endpoint.
    Node {
        #[arg(long)]
        config: PathBuf,
        /// Log one JSON object per line (also with `CAS_LOG_FORMAT=json` in the environment, which `cas local`
        /// passes on to its nodes); the level is `CAS_LOG`'s (default `warn`; `info` adds one line per event:
        /// start, peers, snapshots, protocol switches, never one per transaction or block).
        #[arg(long)]
        log_json: bool,
    },
    /// The main job: a local cluster of node processes under generated load, printing TPS and latency.
    Local(cluster::ClusterArgs),
    /// One process, no consensus: generated load through the ledger pipeline, beside the verification limit.
    Pipeline(LocalArgs),
    /// The perf suite: micro summary, single-node pipeline, a real cluster sweep and the scale model to 999 nodes,
    /// written as a report folder (report.md, report.json, plots).
    Bench(bench::BenchArgs),
    /// Drive running nodes with signed transfers (accounts funded by a `cas local` genesis) and measure receipts.
    Load(load::LoadArgs),
    /// A standalone witness miner that follows one node (templates and finds over its client endpoint).
    Mine(mine_cmd::MineArgs),
    /// The POW witness chain: audit a node's stored blocks against it.
    #[command(subcommand)]
    Witness(WitnessCommand),
    #[command(flatten)]
    Client(client_cmd::ClientCommand),
    /// A light (SPV) wallet that keeps certified ledger headers only: sync them from a node, check a payment's
    /// receipt against them, and an owner's balance as far as SPV proves it.
    #[command(subcommand)]
    Wallet(wallet_cmd::WalletCommand),
    /// Node configs.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// A UDP relay that delays, jitters and drops datagrams between one client and a target (one committee link of
    /// `cas local --netns`; see netns.rs).
    #[command(hide = true)]
    Relay {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        to: std::net::SocketAddr,
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        #[arg(long, default_value_t = 0)]
        jitter_ms: u64,
        #[arg(long, default_value_t = 0.0)]
        loss_pct: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a node.toml without starting the node: prints one line, ok or what is wrong.
    Check { file: PathBuf },
}

#[derive(Subcommand)]
enum WitnessCommand {
    /// Check a stopped node's stored DPOS blocks against its witness chain; names the first that does not match.
    Verify {
        #[arg(long)]
        data_dir: PathBuf,
    },
}

#[derive(Args)]
pub struct LocalArgs {
    /// Funded accounts; each runs a chain of dependent transfers.
    #[arg(long, default_value_t = 4_000)]
    pub accounts: u32,
    /// Transfers per account.
    #[arg(long, default_value_t = 50)]
    pub rounds: u32,
    /// Transactions per block.
    #[arg(long, default_value_t = 10_000)]
    pub block_txs: usize,
    /// Add one invalid transaction in every N valid ones, at a drawn place among them (0: none).
    #[arg(long, default_value_t = 100)]
    pub invalid_every: usize,
    /// What accounts do with the coins they are paid (see `cas local --help`).
    #[arg(long, value_enum, default_value_t = load::Workload::Chain)]
    pub workload: load::Workload,
    /// Threads for signing and signature checks (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Keygen { out } => offline::keygen(out),
        Command::Genesis { spec, out } => offline::genesis(spec, out),
        Command::Tx {
            flags,
            bond,
            unbond,
            candidacy,
        } => offline::tx(
            flags,
            bond.as_deref(),
            unbond.as_deref(),
            candidacy.as_deref(),
        ),
        Command::Token(command) => token_cmd::token(command),
        Command::Order(command) => token_cmd::order(command),
        Command::Contract(command) => token_cmd::contract(command),
        Command::Gov(command) => gov_cmd::gov(command),
        Command::Vn(command) => vn_cmd::vn(command),
        Command::Rs { config } => rs::run(config),
        Command::Show { file } => offline::show(file),
        Command::Node { config, log_json } => {
            init_node_logging(
                *log_json || std::env::var("CAS_LOG_FORMAT").is_ok_and(|format| format == "json"),
            );
            cas_node::run(config)
        }
        Command::Config(ConfigCommand::Check { file }) => {
            cas_node::check_config(file).map(|summary| println!("{summary}"))
        }
        Command::Relay {
            listen,
            to,
            delay_ms,
            jitter_ms,
            loss_pct,
            seed,
        } => netns::relay(*listen, *to, *delay_ms, *jitter_ms, *loss_pct, *seed),
        Command::Local(args) => cluster::run(args),
        Command::Pipeline(args) => local::run(args),
        Command::Load(args) => load::run_command(args),
        Command::Bench(args) => bench::run(args),
        Command::Mine(args) => mine_cmd::run(args),
        Command::Witness(WitnessCommand::Verify { data_dir }) => witness_cmd::verify(data_dir),
        Command::Client(command) => client_cmd::run(command),
        Command::Wallet(command) => wallet_cmd::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// A node logs to stderr at the level `CAS_LOG` names (default `warn`), as text or one JSON object per line.
fn init_node_logging(json: bool) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("CAS_LOG").unwrap_or_else(|_| "warn".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        logs.json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        logs.try_init()
    };
}
