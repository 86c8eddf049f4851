//! The client API from the command line: `cas submit`, `cas status`, `cas balance` and `cas watch`, each one call
//! of a node's HTTP API (docs/openapi.yaml), printing its JSON answer. The node is `--api URL` or `$CAS_API`.

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
    }
}
