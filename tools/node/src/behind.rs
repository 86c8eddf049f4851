//! A stalled member's look outside. A member learns that its committee moved on without it from the committee's
//! frames tagged with a later epoch (`Driver::later_epoch`); but a member left out of the later committees (evicted
//! while it was down or paused) hears no frame at all: its old peers no longer connect to it. So while this
//! member's instance commits nothing for [`STALL_MS`], a thread asks its `upstream` nodes (node.toml) how far their
//! ledger is (`GET /v1/stake`'s executed height), and the driver follows the certified ledger once that is past the
//! last height of the instance it runs ([`UpstreamWatch::height`]). An upstream that lies can only move a member that
//! is stalled anyway to follow, from where it joins again at its next epoch (followers check every certificate).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An instance that has not committed for this long asks the upstream nodes.
pub const STALL_MS: u64 = 10_000;
/// How often a stalled member asks.
const PROBE_EVERY_MS: u64 = 2_000;
/// How long one answer may take.
const PROBE_TIMEOUT_MS: u64 = 1_000;
/// The largest answer read.
const ANSWER_BYTES_MAX: u64 = 1 << 20;

/// What the driver and the probing thread share.
#[derive(Default)]
pub struct UpstreamWatch {
    /// The driver's committed height, as it last said.
    committed: AtomicU64,
    /// The highest executed height an upstream node answered while this member was stalled.
    upstream: AtomicU64,
    stop: AtomicBool,
}

impl UpstreamWatch {
    /// Starts the probing thread over `upstream` (none: nothing to ask, no thread).
    pub fn spawn(upstream: Vec<SocketAddr>) -> std::io::Result<Arc<UpstreamWatch>> {
        let watch = Arc::new(UpstreamWatch::default());
        if !upstream.is_empty() {
            let shared = watch.clone();
            std::thread::Builder::new()
                .name("cas-upstream".into())
                .spawn(move || shared.probe(&upstream))?;
        }
        Ok(watch)
    }

    /// The driver's committed height now (once a second is enough).
    pub fn committed(&self, height: u64) {
        self.committed.store(height, Ordering::Relaxed);
    }

    /// The highest height an upstream node answered while this member was stalled (0: none).
    pub fn height(&self) -> u64 {
        self.upstream.load(Ordering::Relaxed)
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn probe(&self, upstream: &[SocketAddr]) {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_millis(PROBE_TIMEOUT_MS))
            .build();
        let (mut seen, mut since) = (self.committed.load(Ordering::Relaxed), Instant::now());
        while !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(PROBE_EVERY_MS));
            let committed = self.committed.load(Ordering::Relaxed);
            if committed != seen {
                (seen, since) = (committed, Instant::now());
                continue;
            }
            if since.elapsed() < Duration::from_millis(STALL_MS) {
                continue;
            }
            for addr in upstream {
                match executed_height(&agent, *addr) {
                    Ok(height) => {
                        self.upstream.fetch_max(height, Ordering::Relaxed);
                    }
                    Err(error) => {
                        tracing::debug!(%addr, %error, "an upstream node did not say its height")
                    }
                }
            }
        }
    }
}

/// The executed height `addr`'s API reports.
fn executed_height(agent: &ureq::Agent, addr: SocketAddr) -> anyhow::Result<u64> {
    use std::io::Read;
    let mut body = Vec::new();
    agent
        .get(&format!("http://{addr}/v1/stake"))
        .call()?
        .into_reader()
        .take(ANSWER_BYTES_MAX)
        .read_to_end(&mut body)?;
    let answer: serde_json::Value = serde_json::from_slice(&body)?;
    answer["height"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no height in its answer"))
}
