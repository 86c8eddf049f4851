//! Transport benchmark (`cargo bench -p cas-perf --bench netio`): package-sized messages (256 KiB) from one node
//! to another over loopback QUIC through netio (queues, frames, validation, lanes), printed beside raw quinn
//! moving the same bytes in the same run with the same TLS and transport settings, and the ratio.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use cas_engine::fixtures::key;
use cas_netio::identity::{self, Identity};
use cas_netio::{Class, Node, NodeConfig, Peer};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MESSAGE_BYTES: usize = 256 * 1024;
const MESSAGES: usize = 800;
const ROUNDS: usize = 5;

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Seconds to move `MESSAGES` packages from A to B through netio, for each round.
fn netio_rounds() -> Vec<f64> {
    let mut keys = [key(50, 0), key(50, 1)];
    keys.sort_by_key(|k| k.public());
    let start = |index: usize| {
        Node::start(
            NodeConfig {
                keypair: cas_engine::Keypair::from_seed(&keys[index].seed()),
                listen: loopback(),
                ingest_listen: None,
                ingest_limits: Default::default(),
            },
            |_: Class, _: &[u8]| Ok(()),
        )
        .expect("node starts")
    };
    let (a, _a_in) = start(0);
    let (b, mut b_in) = start(1);
    a.set_peers(&[Peer {
        key: b.key(),
        addr: b.local_addr(),
    }])
    .unwrap();
    b.set_peers(&[Peer {
        key: a.key(),
        addr: a.local_addr(),
    }])
    .unwrap();
    let payload = Bytes::from(vec![0x5a; MESSAGE_BYTES]);
    let b_key = b.key();
    let mut rounds = Vec::new();
    for round in 0..=ROUNDS {
        let started = Instant::now();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for _ in 0..MESSAGES {
                    a.send_blocking(&b_key, Class::Package, payload.clone())
                        .unwrap();
                }
            });
            for _ in 0..MESSAGES {
                let message = b_in.bulk.blocking_recv().expect("a package");
                assert_eq!(message.payload.len(), MESSAGE_BYTES);
            }
        });
        // Round 0 warms up (connection set-up, congestion window).
        if round > 0 {
            rounds.push(started.elapsed().as_secs_f64());
        }
    }
    rounds
}

/// The same transfer with quinn alone: one stream, `MESSAGES` writes and exact reads of `MESSAGE_BYTES`.
fn raw_quinn_rounds() -> Vec<f64> {
    let server_identity = Identity::new(&key(51, 0)).unwrap();
    let client_identity = Identity::new(&key(51, 1)).unwrap();
    let accepted = std::sync::Arc::new(std::sync::RwLock::new(
        [client_identity.key()].into_iter().collect(),
    ));
    let server_config = identity::node_server_config(&server_identity, accepted).unwrap();
    let client_config =
        identity::node_client_config(&client_identity, server_identity.key()).unwrap();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    // The receiver runs on its own thread and runtime, as netio's receiving node does.
    let server = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let endpoint = identity::endpoint(loopback(), Some(server_config)).unwrap();
            addr_tx.send(endpoint.local_addr().unwrap()).unwrap();
            let connection = endpoint.accept().await.unwrap().await.unwrap();
            let mut recv = connection.accept_uni().await.unwrap();
            let mut buffer = vec![0u8; MESSAGE_BYTES];
            for _ in 0..=ROUNDS {
                for _ in 0..MESSAGES {
                    recv.read_exact(&mut buffer).await.unwrap();
                }
                done_tx.send(()).unwrap();
            }
            recv.read_to_end(0).await.ok();
            connection.closed().await;
        });
    });
    let addr = addr_rx.recv().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rounds = runtime.block_on(async move {
        let endpoint = identity::endpoint(loopback(), None).unwrap();
        let connection = endpoint
            .connect_with(client_config, addr, identity::SERVER_NAME)
            .unwrap()
            .await
            .unwrap();
        let mut send = connection.open_uni().await.unwrap();
        let payload = Bytes::from(vec![0x5a; MESSAGE_BYTES]);
        let mut rounds = Vec::new();
        for round in 0..=ROUNDS {
            let started = Instant::now();
            for _ in 0..MESSAGES {
                send.write_chunk(payload.clone()).await.unwrap();
            }
            // The round ends when the receiver has read everything, as in the netio round.
            done_rx
                .recv()
                .await
                .expect("the receiver reports each round");
            if round > 0 {
                rounds.push(started.elapsed().as_secs_f64());
            }
        }
        send.finish().unwrap();
        send.stopped().await.ok();
        connection.close(0u32.into(), b"done");
        endpoint.wait_idle().await;
        rounds
    });
    server.join().unwrap();
    rounds
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let megabytes = (MESSAGES * MESSAGE_BYTES) as f64 / 1e6;
    let netio = median(netio_rounds());
    let raw = median(raw_quinn_rounds());
    let (netio_rate, raw_rate) = (megabytes / netio, megabytes / raw);
    println!("netio transport: {MESSAGES} x {} KiB messages per round, median of {ROUNDS} rounds, loopback QUIC", MESSAGE_BYTES / 1024);
    println!("| what | median per round | MB/s | messages/s | vs raw quinn |");
    println!("|---|---|---|---|---|");
    println!(
        "| raw quinn (peer), one stream | {:.1} ms | {raw_rate:.0} | {:.0} | 1.00x |",
        raw * 1e3,
        MESSAGES as f64 / raw
    );
    println!(
        "| netio, bulk lane (queue, frame, validator, inbound queue) | {:.1} ms | {netio_rate:.0} | {:.0} | {:.2}x |",
        netio * 1e3,
        MESSAGES as f64 / netio,
        netio_rate / raw_rate
    );
}
