//! Fuzz targets (issue 16) for the node's own untrusted inputs, proptest-driven so they run on stable in every
//! `cargo test`: node.toml (`NodeConfig::load`) under random and edited text, and snapshot state sync
//! ([`crate::state_sync::StateSync`]) fed arbitrary reports and chunks by members, the HTTP API under arbitrary
//! requests and the transaction index under arbitrary files. Nothing panics; a config error names the file; a
//! snapshot is installed only as more than a third of the stake reported it, with its entries.
//! Tests only. Cases per property: `CAS_FUZZ_CASES` (default small); the long run is in the README's test section.

use std::collections::BTreeMap;

use cas_consensus::messages::{Message, SnapshotChunk, SnapshotInfo};
use cas_consensus::Action;
use cas_engine::{AssetId, Hash32, OutPoint, PublicKey, SetCommitment, TxOutput};
use cas_shards::transfer::encode_chunk;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

use crate::config::NodeConfig;
use crate::state_sync::StateSync;

fn config(default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("CAS_FUZZ_CASES")
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(default),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const SAMPLE_CONFIG: &str = "key_file = \"node0.key\"\ngenesis = \"genesis.bin\"\ndata_dir = \"node0\"\n\
listen = \"127.0.0.1:7000\"\ningest_listen = \"127.0.0.1:8000\"\nshards = 2\nround_timeout_ms = 1000\n\
empty_block_wait_ms = 100\nproposal_wait_ms = 20\nblocks_kept = 10000\n\n[[peers]]\n\
key = \"ab0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\"\naddr = \"127.0.0.1:7001\"\n";

fn load(text: &[u8]) -> Result<NodeConfig, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(&path, text).unwrap();
    NodeConfig::load(&path).map_err(|error| {
        let error = format!("{error:#}");
        assert!(error.contains("node.toml"), "{error}");
        assert!(
            error.len() <= 2 * cas_engine::text::REASON_BYTES_MAX + 200,
            "{} bytes",
            error.len()
        );
        error
    })
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn fuzz_node_config_random_and_edited(
        random in vec(any::<u8>(), 0..200),
        edits in vec((any::<Index>(), 0u8..3, prop_oneof![Just(b'0'), Just(b'9'), Just(b'"'), Just(b'['), Just(b'\n'), Just(b':'), any::<u8>()]), 1..5),
    ) {
        let _ = load(&random);
        let mut bytes = SAMPLE_CONFIG.as_bytes().to_vec();
        for (at, kind, byte) in edits {
            let at = at.index(bytes.len());
            match kind {
                0 => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ => {
                    bytes.remove(at);
                }
            }
        }
        if let Ok(config) = load(&bytes) {
            // Whatever loads also writes back (cas local writes configs).
            let _ = config.to_toml();
        }
    }
}

#[test]
fn fuzz_sample_config_loads() {
    let config = load(SAMPLE_CONFIG.as_bytes()).unwrap();
    assert_eq!(config.peers.len(), 1);
}

/// node.toml used to accept settings that the node then died on with a panic instead of a config error:
/// `empty_block_wait_ms` at or above `round_timeout_ms` tripped `assert!` in `Bft::new`, and a `round_timeout_ms`
/// above u64::MAX / 8 overflowed `round_timeout_ms * 8` in `node::run`. `NodeConfig::load` refuses them now.
#[test]
fn a_config_the_node_cannot_run_with_is_refused() {
    let text = SAMPLE_CONFIG.replace("empty_block_wait_ms = 100", "empty_block_wait_ms = 1000");
    assert!(
        load(text.as_bytes()).is_err(),
        "empty_block_wait_ms = round_timeout_ms is accepted"
    );
    let text = SAMPLE_CONFIG.replace(
        "round_timeout_ms = 1000",
        "round_timeout_ms = 4611686018427387904",
    );
    assert!(
        load(text.as_bytes()).is_err(),
        "round_timeout_ms * 8 overflows"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Snapshot state sync.

const MEMBERS: u16 = 4;
const GAP_BLOCKS: u64 = 10;
const HEIGHT: u64 = 500;

fn entries(count: u32) -> (Vec<(OutPoint, TxOutput)>, Hash32) {
    let mut entries: Vec<(OutPoint, TxOutput)> = (0..count)
        .map(|i| {
            (
                OutPoint {
                    tx: Hash32::of("state sync fuzz", &i.to_le_bytes()),
                    index: 0,
                },
                TxOutput {
                    amount: u64::from(i) + 1,
                    asset: AssetId::CAS,
                    owner: PublicKey([1; 32]),
                    unlock_height: None,
                },
            )
        })
        .collect();
    entries.sort_unstable_by_key(|(o, _)| *o);
    let mut set = SetCommitment::default();
    entries.iter().for_each(|(o, c)| set.insert(o, c));
    (entries, set.checksum())
}

fn true_info(count: u64, commitment: Hash32) -> SnapshotInfo {
    SnapshotInfo {
        height: HEIGHT,
        ledger_hash: Hash32([1; 32]),
        commitment,
        consensus_hash: Hash32([2; 32]),
        entries: count,
        witness_state: cas_consensus::rewards::order_state_hash(&[]),
        witness_state_bytes: 0,
    }
}

#[derive(Clone, Debug)]
enum SyncOp {
    Tick {
        ms: u64,
        committed: u64,
        high_qc: u64,
    },
    /// A member's report: the true one, or one with fields changed.
    Info {
        from: u16,
        tamper: Option<(u8, u64)>,
    },
    /// A member's chunk: the true one (possibly flipped), or any bytes, for any index and height.
    Chunk {
        from: u16,
        index: u32,
        height_off: u64,
        flips: Vec<(Index, u8)>,
        random: Option<Vec<u8>>,
    },
}

fn sync_op() -> impl Strategy<Value = SyncOp> {
    let number = prop_oneof![3 => 0u64..1_000, 1 => Just(u64::MAX), 1 => any::<u64>()];
    prop_oneof![
        2 => (0u64..4_000, 0u64..600, 0u64..2_000).prop_map(|(ms, committed, high_qc)| SyncOp::Tick { ms, committed, high_qc }),
        3 => (0..MEMBERS, proptest::option::weighted(0.4, (0u8..5, number))).prop_map(|(from, tamper)| SyncOp::Info { from, tamper }),
        5 => (
            0..MEMBERS,
            0u32..4,
            prop_oneof![4 => Just(0u64), 1 => any::<u64>()],
            vec((any::<Index>(), any::<u8>()), 0..2),
            proptest::option::weighted(0.2, vec(any::<u8>(), 0..300)),
        )
            .prop_map(|(from, index, height_off, flips, random)| SyncOp::Chunk { from, index, height_off, flips, random }),
    ]
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn fuzz_state_sync_reports_and_chunks(count in 0u32..30, ops in vec(sync_op(), 1..60)) {
        let (set, commitment) = entries(count);
        let honest = true_info(u64::from(count), commitment);
        let mut sync = StateSync::new(0, vec![1; MEMBERS as usize], 2, GAP_BLOCKS);
        let mut now_ms = 0;
        let mut committed = 0;
        // Who reported what, the latest per member (the trust rule's input).
        // Every report each member made: one that vouched and then changed its report still vouched when the
        // node chose what to fetch.
        let mut reports: BTreeMap<u16, Vec<SnapshotInfo>> = BTreeMap::new();
        for op in ops {
            let (actions, install) = match op {
                SyncOp::Tick { ms, committed: c, high_qc } => {
                    now_ms += ms;
                    committed = c;
                    (sync.on_tick(now_ms, committed, high_qc), None)
                }
                SyncOp::Info { from, tamper } => {
                    let mut info = honest;
                    if let Some((field, value)) = tamper {
                        match field {
                            0 => info.height = value,
                            1 => info.entries = value,
                            2 => info.commitment = Hash32([value as u8; 32]),
                            3 => info.witness_state_bytes = value,
                            _ => info.witness_state = Hash32([value as u8; 32]),
                        }
                    }
                    reports.entry(from).or_default().push(info);
                    (sync.on_info(from, info, committed, now_ms), None)
                }
                SyncOp::Chunk { from, index, height_off, flips, random } => {
                    let mut bytes = random.unwrap_or_else(|| encode_chunk(&set, index).unwrap_or_default());
                    if !bytes.is_empty() {
                        for (at, value) in flips {
                            let at = at.index(bytes.len());
                            bytes[at] ^= value;
                        }
                    }
                    let chunk = SnapshotChunk { height: HEIGHT.wrapping_add(height_off), index, entries: bytes };
                    sync.on_chunk(from, chunk, now_ms)
                }
            };
            for action in &actions {
                match action {
                    Action::Broadcast(Message::SnapshotInfoRequest) => {}
                    Action::Send { to, message: Message::SnapshotChunkRequest(_) } => {
                        prop_assert!(*to < MEMBERS && *to != 0, "asked member {}", to);
                    }
                    other => panic!("state sync only asks: {other:?}"),
                }
            }
            if let Some(install) = install {
                let vouching = reports
                    .values()
                    .filter(|infos| infos.contains(&install.info))
                    .count();
                prop_assert!(vouching >= 2, "installed a snapshot {} members reported", vouching);
                prop_assert_eq!(install.snapshot.commitment, install.info.commitment);
                prop_assert_eq!(install.snapshot.height, install.info.height);
                prop_assert_eq!(cas_consensus::rewards::order_state_hash(&install.witness_state), install.info.witness_state);
                if install.info == honest {
                    prop_assert_eq!(&install.snapshot.entries, &set);
                }
            }
        }
    }
}

/// A request to the HTTP API: a route template with its holes filled by arbitrary text, a query and a body.
fn api_request() -> impl Strategy<Value = (bool, String, String, Vec<u8>, bool)> {
    let routes = prop::sample::select(vec![
        "/v1/tx",
        "/v1/tx/{}",
        "/v1/tx/by-client/{}/{}",
        "/v1/accounts/{}/balance",
        "/v1/accounts/{}/utxos",
        "/v1/blocks/{}",
        "/v1/codes",
        "/v1/{}",
        "/{}",
    ]);
    let hole = prop_oneof![
        "[0-9a-f]{64}",
        "[0-9]{1,20}",
        "[a-zA-Z0-9%._~-]{0,80}",
        Just("ab".repeat(40)),
    ];
    let query = prop_oneof![
        Just(String::new()),
        "wait=[a-z]{0,8}&timeout_ms=[0-9]{0,22}",
        "from=[0-9]{0,22}&owner=[0-9a-f]{0,70}&memo=[0-9a-fz]{0,20}&asset=[0-9a-f]{0,66}",
        "[a-z=&%0-9]{0,60}",
    ];
    (
        any::<bool>(),
        routes,
        vec(hole, 2),
        query,
        vec(any::<u8>(), 0..300),
        any::<bool>(),
    )
        .prop_map(|(post, route, holes, query, body, json)| {
            let mut path = route.to_string();
            for hole in &holes {
                path = path.replacen("{}", hole, 1);
            }
            let uri = if query.is_empty() {
                path
            } else {
                format!("{path}?{query}")
            };
            (post, uri, holes.concat(), body, json)
        })
}

proptest! {
    #![proptest_config(config(256))]

    /// Issue 17 on issue 16's terms: no request to the HTTP API panics it or answers with anything but its own JSON
    /// (or the router's plain 404/405 for a path or method it does not serve), whatever the path, query and body.
    #[test]
    fn fuzz_api_requests((post, uri, _holes, body, json) in api_request()) {
        use axum::body::Body;
        use tower::ServiceExt;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let router = crate::api::router(crate::api::detached_state());
        let mut request = axum::http::Request::builder()
            .method(if post { "POST" } else { "GET" })
            .extension(axum::extract::ConnectInfo(std::net::SocketAddr::from(([127, 0, 0, 1], 9))));
        if json {
            request = request.header("content-type", "application/json");
        }
        let Ok(request) = request.uri(uri.as_str()).body(Body::from(body)) else {
            // Not a URI at all: nothing reaches the server.
            return Ok(());
        };
        // The block stream never ends on a node without blocks (its bounds are the stream limit, not the body).
        if request.uri().path() == "/v1/blocks" {
            return Ok(());
        }
        let (status, bytes) = runtime.block_on(async {
            let response = router.oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap_or_default();
            (status, bytes)
        });
        prop_assert!(status != axum::http::StatusCode::INTERNAL_SERVER_ERROR || !bytes.is_empty(), "{} {}", uri, status);
        let ours = serde_json::from_slice::<serde_json::Value>(&bytes).is_ok();
        let routers_own = matches!(status.as_u16(), 400 | 404 | 405 | 415 | 413 | 422);
        prop_assert!(ours || routers_own, "{} -> {} {:?}", uri, status, String::from_utf8_lossy(&bytes));
    }

    /// The transaction index's files under arbitrary bytes: the only segment's bad tail is cut, a bad earlier
    /// segment refuses the open with a reason; nothing panics, and what opens answers lookups.
    #[test]
    fn fuzz_tx_index_files(first in vec(any::<u8>(), 0..400), second in vec(any::<u8>(), 0..400), two in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(format!("{:012}.log", 1)), &first).unwrap();
        if two {
            std::fs::write(dir.path().join(format!("{:012}.log", 2)), &second).unwrap();
        }
        match crate::tx_index::TxIndex::open(dir.path(), 100) {
            Ok(index) => {
                prop_assert!(index.view().get(&Hash32([7; 32])).is_none());
            }
            Err(error) => {
                prop_assert!(two, "a lone segment's bad bytes are a torn tail, not an error: {}", error);
                prop_assert!(error.to_string().contains("corrupt"), "{}", error);
            }
        }
    }
}
