//! The node's TOML configuration: its key, data folder, genesis, listen addresses, peers, tuning, and scheduled
//! protocol upgrades.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cas_consensus::protocol::{ProtocolSchedule, ProtocolUpgrade};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub key_file: PathBuf,
    pub genesis: PathBuf,
    pub data_dir: PathBuf,
    /// The peer (committee) endpoint.
    pub listen: SocketAddr,
    /// The client ingest endpoint.
    pub ingest_listen: SocketAddr,
    /// The other committee members, by key. With hand-overs, also where this node finds members when it is elected
    /// into the committee (one missing here is reached at the address its candidacy declared).
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// UTXO partitions. One runs on the executor's thread, which would only wait for it; more run on an executor
    /// thread each.
    #[serde(default = "one")]
    pub shards: usize,
    /// Pin shard executors to cores (off when several nodes share a machine).
    #[serde(default)]
    pub pin_cores: bool,
    #[serde(default = "default_round_timeout_ms")]
    pub round_timeout_ms: u64,
    /// A leader with no payload waits this long before proposing an empty block.
    #[serde(default = "default_empty_block_wait_ms")]
    pub empty_block_wait_ms: u64,
    /// A leader with some new payload but less than a package per member waits up to this long for more before
    /// proposing (0: at once): fewer, fuller blocks at low load, the same blocks under load. Absent:
    /// [`PROPOSAL_WAIT_MS_PER_MEMBER`] per committee member ([`Waits::proposal_ms`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal_wait_ms: Option<u64>,
    #[serde(default = "default_package_txs_max")]
    pub package_txs_max: usize,
    /// A package of admitted transactions closes once its oldest has waited this long (or at `package_txs_max`).
    /// Absent: [`PACKAGE_WAIT_MS_PER_MEMBER`] per committee member ([`Waits::package_ms`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_wait_ms: Option<u64>,
    /// Write a UTXO snapshot every this many blocks while the set is small (the spacing grows with the set; see
    /// `cas_shards::snapshot::snapshot_due`).
    #[serde(default = "default_snapshot_every_blocks")]
    pub snapshot_every_blocks: u64,
    /// Committed consensus blocks kept in memory for peers that catch up block by block; a peer further behind
    /// installs a snapshot instead.
    #[serde(default = "default_blocks_kept")]
    pub blocks_kept: u64,
    /// A node asks the committee for its snapshot when it sees a QC more than this many blocks above its committed
    /// height (and once at start), and installs one that lies more than this many blocks above it.
    #[serde(default = "default_snapshot_sync_gap_blocks")]
    pub snapshot_sync_gap_blocks: u64,
    /// Threads mining witness blocks at the lowest scheduling priority (0: none, the default on committee members).
    #[serde(default)]
    pub mining_threads: usize,
    /// Client transactions this node holds admitted but not yet executed; past it, new ones are answered
    /// `Overloaded` with a retry-after before their signatures are checked (a few seconds of what the node commits,
    /// so overload shows as pushback to clients, not as latency without bound).
    #[serde(default = "default_admission_in_flight_max")]
    pub admission_in_flight_max: usize,
    /// The HTTP/JSON client API's address (none: no HTTP API). See docs/openapi.yaml.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_listen: Option<SocketAddr>,
    /// The operator endpoints' address: `/metrics` (Prometheus), `/health`, `/status` (none: not served).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_listen: Option<SocketAddr>,
    /// Transactions the status index answers (the newest; older ones answer `unknown`): 88 bytes of map keys and values
    /// and 34 bytes of disk each.
    #[serde(default = "default_tx_index_kept")]
    pub tx_index_kept: usize,
    /// Scheduled protocol upgrades ([`cas_consensus::protocol`]): from `height` on, blocks follow `version`. Every
    /// member must schedule the same; in order, each raising the version, none newer than this binary runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protocol_upgrades: Vec<ProtocolUpgradeConfig>,
    /// Where a follower (a node whose key is not in the committee) reads the certified ledger from: the HTTP API
    /// addresses of the nodes above it in the broadcast tree, its parent first; it moves to the next one when one
    /// fails. With hand-overs (protocol version 3) a member follows from here when it leaves the committee or falls
    /// an epoch behind it.
    #[serde(default)]
    pub upstream: Vec<SocketAddr>,
    /// Let the allocator back this node's memory with transparent huge pages (off by default: see
    /// [`crate::memory::refuse_transparent_huge_pages`]).
    #[serde(default)]
    pub transparent_huge_pages: bool,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProtocolUpgradeConfig {
    pub version: u32,
    pub height: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub key: String,
    pub addr: SocketAddr,
}

fn one() -> usize {
    1
}
/// The longest first round timeout a config may set (an hour): the backoff cap is eight times it.
pub const ROUND_TIMEOUT_MS_MAX: u64 = 3_600_000;

fn default_round_timeout_ms() -> u64 {
    1_000
}
fn default_empty_block_wait_ms() -> u64 {
    100
}
fn default_package_txs_max() -> usize {
    2_000
}
fn default_snapshot_every_blocks() -> u64 {
    500
}
fn default_blocks_kept() -> u64 {
    cas_consensus::bft::BftConfig::default().blocks_kept
}
fn default_snapshot_sync_gap_blocks() -> u64 {
    1_000
}
/// The package wait where node.toml leaves it out: this much per committee member (20 ms at 4 members, 50 at 10).
/// Every member acks each package, checks each certificate and votes on each block with signatures, so each package
/// and block costs every member work that grows with the committee; bigger committees wait longer for fewer, fuller
/// ones, which keeps that work per transaction from growing with the committee. Ten nodes on one 2-core machine at
/// 5,000 tx/s: p50 203-241 ms with 50 ms waits against 337-410 ms with 20 ms (perf/README.md, issue 15).
pub const PACKAGE_WAIT_MS_PER_MEMBER: u64 = 5;

/// The proposal wait where node.toml leaves it out: this much per committee member (40 ms at 4 members, 100 at 10,
/// never past the empty-block wait). A block costs every member a fixed amount whatever it holds (votes, fsyncs, a
/// ledger block and its votes, thread hand-offs); a leader that waits two package waits for a package from every
/// member makes fewer blocks when packages come unevenly. 4 nodes on 2 cores, 40 against 20 ms (perf/README.md,
/// issue 15, sixteenth session): at 20,000 tx/s blocks -26%, node CPU -5%, p50 no higher; at 2,000 tx/s node CPU
/// -15%, p50 +1-6 ms.
pub const PROPOSAL_WAIT_MS_PER_MEMBER: u64 = 10;
fn default_tx_index_kept() -> usize {
    crate::tx_index::TX_INDEX_KEPT_DEFAULT
}
fn default_admission_in_flight_max() -> usize {
    crate::in_flight::IN_FLIGHT_MAX_DEFAULT
}

impl NodeConfig {
    /// A config with the given identity and endpoints and every other field at its default.
    pub fn with_defaults(
        key_file: PathBuf,
        genesis: PathBuf,
        data_dir: PathBuf,
        listen: SocketAddr,
        ingest_listen: SocketAddr,
    ) -> NodeConfig {
        NodeConfig {
            key_file,
            genesis,
            data_dir,
            listen,
            ingest_listen,
            peers: Vec::new(),
            shards: one(),
            pin_cores: false,
            round_timeout_ms: default_round_timeout_ms(),
            empty_block_wait_ms: default_empty_block_wait_ms(),
            proposal_wait_ms: None,
            package_txs_max: default_package_txs_max(),
            package_wait_ms: None,
            snapshot_every_blocks: default_snapshot_every_blocks(),
            blocks_kept: default_blocks_kept(),
            snapshot_sync_gap_blocks: default_snapshot_sync_gap_blocks(),
            mining_threads: 0,
            admission_in_flight_max: default_admission_in_flight_max(),
            api_listen: None,
            operator_listen: None,
            tx_index_kept: default_tx_index_kept(),
            protocol_upgrades: Vec::new(),
            upstream: Vec::new(),
            transparent_huge_pages: false,
        }
    }

    pub fn load(path: &Path) -> Result<NodeConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        // One line: toml's own message, with the line it found it on (its full text quotes the line, and the file
        // may hold anything, so it is bounded).
        let config: NodeConfig = toml::from_str(&text).map_err(|error| {
            let line = error.span().map(|span| {
                format!(
                    "line {}: ",
                    text[..span.start.min(text.len())].matches('\n').count() + 1
                )
            });
            anyhow::anyhow!(
                "{} is not a node config: {}{}",
                path.display(),
                line.unwrap_or_default(),
                cas_engine::text::reason(&error.message().replace('\n', " "))
            )
        })?;
        config
            .check()
            .map_err(|reason| anyhow::anyhow!("{}: {reason}", path.display()))?;
        Ok(config)
    }

    /// The relations between fields that the node relies on, each refused with the field it names.
    fn check(&self) -> std::result::Result<(), String> {
        if self.round_timeout_ms == 0 || self.round_timeout_ms > ROUND_TIMEOUT_MS_MAX {
            return Err(format!(
                "round_timeout_ms = {} is outside 1..={ROUND_TIMEOUT_MS_MAX}",
                self.round_timeout_ms
            ));
        }
        if self.empty_block_wait_ms >= self.round_timeout_ms {
            return Err(format!(
                "empty_block_wait_ms = {} must be below round_timeout_ms = {} (a round must have time to finish)",
                self.empty_block_wait_ms, self.round_timeout_ms
            ));
        }
        if let Some(wait) = self.proposal_wait_ms {
            if self.empty_block_wait_ms != 0 && wait > self.empty_block_wait_ms {
                return Err(format!(
                    "proposal_wait_ms = {wait} must not exceed empty_block_wait_ms = {}",
                    self.empty_block_wait_ms
                ));
            }
        }
        self.protocol_schedule()
            .map_err(|error| format!("protocol_upgrades: {error}"))?;
        Ok(())
    }

    /// The committee peers' addresses by key (`peers`).
    pub fn peer_addresses(
        &self,
    ) -> anyhow::Result<std::collections::HashMap<cas_engine::PublicKey, std::net::SocketAddr>>
    {
        self.peers
            .iter()
            .map(|p| {
                let key = cas_engine::PublicKey::from_hex(&p.key)
                    .map_err(|_| anyhow::anyhow!("peer key {} is not 32 hex bytes", p.key))?;
                Ok((key, p.addr))
            })
            .collect()
    }

    /// The schedule `protocol_upgrades` gives (refused by [`NodeConfig::load`] when it is not one).
    pub fn protocol_schedule(
        &self,
    ) -> std::result::Result<ProtocolSchedule, cas_consensus::protocol::ScheduleError> {
        ProtocolSchedule::new(
            self.protocol_upgrades
                .iter()
                .map(|u| ProtocolUpgrade {
                    version: u.version,
                    height: u.height,
                })
                .collect(),
        )
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a config always serialises")
    }

    /// The proposal and package waits this config sets, to resolve for each epoch's committee.
    pub fn waits(&self) -> Waits {
        Waits {
            proposal_ms: self.proposal_wait_ms,
            package_ms: self.package_wait_ms,
            empty_block_ms: self.empty_block_wait_ms,
        }
    }
}

/// node.toml's `proposal_wait_ms` and `package_wait_ms`, each absent or set, resolved for a committee's size.
#[derive(Clone, Copy, Debug)]
pub struct Waits {
    proposal_ms: Option<u64>,
    package_ms: Option<u64>,
    empty_block_ms: u64,
}

impl Waits {
    /// How long a leader with some payload waits for more, in a committee of `members`: the configured wait, else
    /// [`PROPOSAL_WAIT_MS_PER_MEMBER`] each; never longer than a leader without payload waits (none waits when that
    /// is 0).
    pub fn proposal_ms(&self, members: usize) -> u64 {
        self.proposal_ms
            .unwrap_or(PROPOSAL_WAIT_MS_PER_MEMBER * members as u64)
            .min(self.empty_block_ms)
    }

    /// How long admitted transactions wait for more before they go out as a package, in a committee of `members`:
    /// the configured wait, else [`PACKAGE_WAIT_MS_PER_MEMBER`] each.
    pub fn package_ms(&self, members: usize) -> u64 {
        self.package_ms
            .unwrap_or(PACKAGE_WAIT_MS_PER_MEMBER * members as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../docs/deploy/node.toml");

    /// Left out, both waits grow with the committee; set, they hold for any committee; a leader with payload never
    /// waits longer than one without.
    #[test]
    fn waits_follow_the_committee_unless_set() {
        let mut config = NodeConfig::with_defaults(
            "k".into(),
            "g".into(),
            "d".into(),
            "127.0.0.1:7000".parse().unwrap(),
            "127.0.0.1:7001".parse().unwrap(),
        );
        let waits = config.waits();
        assert_eq!((waits.proposal_ms(4), waits.package_ms(4)), (40, 20));
        assert_eq!((waits.proposal_ms(10), waits.package_ms(10)), (100, 50));
        // 10 ms x 31 members is past the empty-block wait (100 ms): the leader waits no longer than that.
        assert_eq!((waits.proposal_ms(31), waits.package_ms(31)), (100, 155));
        config.proposal_wait_ms = Some(7);
        config.package_wait_ms = Some(30);
        let waits = config.waits();
        assert_eq!((waits.proposal_ms(10), waits.package_ms(10)), (7, 30));
        config.empty_block_wait_ms = 0;
        assert_eq!(config.waits().proposal_ms(10), 0);
    }

    /// docs/deploy/node.toml is a valid config that sets every field, each to its default (so its comments, which
    /// give the defaults, cannot drift from the code).
    #[test]
    fn the_deployment_example_sets_every_field_to_its_default() {
        let example: NodeConfig = toml::from_str(EXAMPLE).expect("the example parses");
        example.check().expect("the example passes the checks");
        let fields: Vec<String> = toml::from_str::<toml::Table>(&example.to_toml())
            .unwrap()
            .keys()
            .cloned()
            .collect();
        for field in &fields {
            assert!(
                EXAMPLE
                    .lines()
                    .any(|l| l.starts_with(&format!("{field} = ")))
                    || (field == "peers" && EXAMPLE.contains("[[peers]]")),
                "the example does not set `{field}`"
            );
        }
        let minimal: NodeConfig = toml::from_str(
            "key_file = \"k\"\ngenesis = \"g\"\ndata_dir = \"d\"\nlisten = \"0.0.0.0:7000\"\n\
             ingest_listen = \"0.0.0.0:7001\"\n",
        )
        .unwrap();
        let built = NodeConfig::with_defaults(
            "k".into(),
            "g".into(),
            "d".into(),
            minimal.listen,
            minimal.ingest_listen,
        );
        assert_eq!(
            built.to_toml(),
            minimal.to_toml(),
            "with_defaults gives the defaults"
        );
        let defaults: toml::Table = toml::from_str(&minimal.to_toml()).unwrap();
        let set: toml::Table = toml::from_str(&example.to_toml()).unwrap();
        for (field, default) in &defaults {
            if [
                "key_file",
                "genesis",
                "data_dir",
                "listen",
                "ingest_listen",
                "peers",
            ]
            .contains(&field.as_str())
            {
                continue;
            }
            assert_eq!(
                Some(default),
                set.get(field),
                "`{field}` in the example is not its default"
            );
        }
    }

    /// A schedule the binary cannot keep is refused with one line naming the field; the example's commented
    /// entry, uncommented, is one it can.
    #[test]
    fn protocol_upgrades_are_checked() {
        let base = EXAMPLE.replace(
            "# [[protocol_upgrades]]\n# version = 2\n# height = 1000000\n",
            "",
        );
        assert_ne!(base, EXAMPLE, "the example shows a commented upgrade");
        let with = |entries: &str| -> std::result::Result<NodeConfig, String> {
            let config: NodeConfig =
                toml::from_str(&format!("{base}{entries}")).map_err(|e| e.to_string())?;
            config.check().map(|()| config)
        };
        let good = with("[[protocol_upgrades]]\nversion = 2\nheight = 1000000\n").unwrap();
        assert_eq!(good.protocol_schedule().unwrap().at(1_000_000), 2);
        assert_eq!(good.protocol_schedule().unwrap().at(999_999), 1);
        let newer = with("[[protocol_upgrades]]\nversion = 99\nheight = 10\n").unwrap_err();
        assert!(
            newer.starts_with(
                "protocol_upgrades: protocol version 99 is newer than this binary runs"
            ),
            "{newer}"
        );
        let backwards =
            with("[[protocol_upgrades]]\nversion = 2\nheight = 10\n[[protocol_upgrades]]\nversion = 2\nheight = 20\n")
                .unwrap_err();
        assert!(backwards.contains("must raise the version"), "{backwards}");
    }
}
