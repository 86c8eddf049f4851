//! Bad peers and bad bytes: a wrong or unknown key is refused at the handshake; garbage, truncated, oversize,
//! undecodable and misplaced frames close that connection with a reason, and the endpoint keeps serving others.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use cas_engine::codec::encode_tx;
use cas_netio::frame::{encode_frame, encode_header, Class};
use cas_netio::identity::{self, Identity};
use cas_netio::ingest::IngestClient;
use cas_netio::node::{close_code, Origin, Peer};
use common::*;

/// A raw quinn client on its own runtime, to send bytes the real client never would.
struct RawClient {
    runtime: tokio::runtime::Runtime,
    endpoint: quinn::Endpoint,
}

impl RawClient {
    fn new() -> RawClient {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let endpoint = runtime.block_on(async { quinn::Endpoint::client(loopback()).unwrap() });
        RawClient { runtime, endpoint }
    }

    fn connect(
        &self,
        config: quinn::ClientConfig,
        addr: SocketAddr,
    ) -> Result<quinn::Connection, String> {
        self.runtime.block_on(async {
            let connecting = self
                .endpoint
                .connect_with(config, addr, identity::SERVER_NAME)
                .unwrap();
            tokio::time::timeout(WAIT, connecting)
                .await
                .map_err(|_| "timeout".to_string())?
                .map_err(|e| e.to_string())
        })
    }

    /// Sends `bytes` on a new stream (finished if `finish`) and returns the node's close code and reason.
    fn send_and_await_close(
        &self,
        connection: &quinn::Connection,
        bytes: &[u8],
        finish: bool,
    ) -> (u64, String) {
        self.runtime.block_on(async {
            let mut send = connection.open_uni().await.unwrap();
            // The node may close while we still write: that is the point, so write errors are fine.
            let _ = send.write_all(bytes).await;
            if finish {
                let _ = send.finish();
            }
            match tokio::time::timeout(WAIT, connection.closed())
                .await
                .expect("the node closes the connection")
            {
                quinn::ConnectionError::ApplicationClosed(close) => (
                    close.error_code.into_inner(),
                    String::from_utf8_lossy(&close.reason).into_owned(),
                ),
                other => panic!("expected an application close, got {other}"),
            }
        })
    }
}

#[test]
fn wrong_and_unknown_keys_are_refused() {
    init_logs();
    let keys = sorted_keys(30, 4);
    let (a, mut a_in) = start(&keys[0], loopback());
    let (b, _b_in) = start(&keys[1], loopback());
    let (impostor, _impostor_in) = start(&keys[2], loopback());
    // A expects the node of key 3 at the impostor's address; A has the smaller key, so A dials it and sees key 2.
    let expected = keys[3].public();
    a.set_peers(&[
        peer(&b),
        Peer {
            key: expected,
            addr: impostor.local_addr(),
        },
    ])
    .unwrap();
    b.set_peers(&[peer(&a)]).unwrap();
    impostor.set_peers(&[peer(&a)]).unwrap();

    wait_until("A's dial to the impostor to fail", || {
        stats_of(&a, expected).connect_failures >= 2
    });
    assert!(!stats_of(&a, expected).connected);
    assert_eq!(stats_of(&a, expected).messages_received, 0);

    // An unknown key dialing A directly is refused by A's certificate check.
    let raw = RawClient::new();
    let stranger = Identity::new(&cas_engine::fixtures::key(31, 0)).unwrap();
    let config = identity::node_client_config(&stranger, a.key()).unwrap();
    // In TLS 1.3 the client finishes its handshake before the server has checked the client's certificate, so
    // the stranger may see the connection open for a moment: what matters is that A closes it at once.
    if let Ok(connection) = raw.connect(config, a.local_addr()) {
        let closed = raw
            .runtime
            .block_on(async { tokio::time::timeout(WAIT, connection.closed()).await });
        let error = closed.expect("A closes the stranger's connection");
        assert!(
            error.to_string().contains("certificate"),
            "closed because of {error}"
        );
    }
    wait_until("A to count the refused handshake", || {
        a.endpoint_stats().refused_handshakes >= 1
    });

    // A client dialing the node endpoint while expecting a different node key fails on its own side too.
    let config =
        identity::node_client_config(&Identity::new(&keys[1]).unwrap(), keys[3].public()).unwrap();
    assert!(raw.connect(config, a.local_addr()).is_err());

    // A keeps serving its real peer.
    b.try_send(&a.key(), Class::Vote, Bytes::from_static(b"still here"))
        .unwrap();
    let message = recv(&mut a_in.consensus, "B's vote");
    assert_eq!(
        (message.origin, &message.payload[..]),
        (Origin::Peer(b.key()), &b"still here"[..])
    );
}

#[test]
fn bad_frames_close_only_their_connection() {
    init_logs();
    let keys = sorted_keys(32, 2);
    // `peer_key` has the smaller key, so it is the side that dials the node: the raw client plays it.
    let (node, mut inbound) = start(&keys[1], loopback());
    let peer_identity = Identity::new(&keys[0]).unwrap();
    node.set_peers(&[Peer {
        key: keys[0].public(),
        addr: "127.0.0.1:9".parse().unwrap(),
    }])
    .unwrap();
    let ingest = node.ingest_addr().unwrap();
    let raw = RawClient::new();
    let client_config = || identity::ingest_client_config(node.key()).unwrap();
    let tx = encode_tx(&cas_engine::fixtures::funded_genesis(7, 4, 2, 1, 5).txs[0]).to_vec();

    let mut oversize = encode_header(Class::ClientTx, 0).to_vec();
    oversize[..4]
        .copy_from_slice(&((Class::ClientTx.payload_bytes_max() + 1) as u32).to_le_bytes());
    let mut truncated = encode_frame(Class::ClientTx, &tx);
    truncated.truncate(tx.len() / 2);
    let cases: Vec<(&str, Vec<u8>, bool, &str)> = vec![
        ("garbage", vec![0xfe; 64], false, "unknown message class"),
        ("oversize", oversize, false, "exceeds the limit"),
        ("truncated", truncated, true, "stream ended inside a frame"),
        (
            "undecodable",
            encode_frame(Class::ClientTx, &[0xab; 100]),
            false,
            "rejected by the decoder",
        ),
        (
            "consensus class on ingest",
            encode_frame(Class::Vote, b"vote"),
            false,
            "not allowed on this ingest",
        ),
    ];
    for (what, bytes, finish, reason) in &cases {
        let connection = raw.connect(client_config(), ingest).unwrap();
        let (code, said) = raw.send_and_await_close(&connection, bytes, *finish);
        assert_eq!(code, u64::from(close_code::BAD_FRAME), "{what}");
        assert!(said.contains(reason), "{what}: the node said {said:?}");
    }
    assert_eq!(node.endpoint_stats().ingest_bad_frames, cases.len() as u64);

    // An authenticated peer sending garbage is cut off too, and counted on that peer.
    let connection = raw
        .connect(
            identity::node_client_config(&peer_identity, node.key()).unwrap(),
            node.local_addr(),
        )
        .unwrap();
    let (code, said) =
        raw.send_and_await_close(&connection, &[0x01, 0x00, 0x00, 0x7f, 0x02], false);
    assert_eq!(code, u64::from(close_code::BAD_FRAME));
    assert!(said.contains("exceeds the limit"), "the node said {said:?}");
    wait_until("the peer's bad frame to be counted", || {
        stats_of(&node, keys[0].public()).bad_frames == 1
    });

    // A consensus stream switching lanes mid-way is refused as well.
    let connection = raw
        .connect(
            identity::node_client_config(&peer_identity, node.key()).unwrap(),
            node.local_addr(),
        )
        .unwrap();
    let mut mixed = encode_frame(Class::Vote, b"vote");
    mixed.extend(encode_frame(Class::Package, b"package"));
    let (code, said) = raw.send_and_await_close(&connection, &mixed, false);
    assert_eq!(code, u64::from(close_code::BAD_FRAME));
    assert!(
        said.contains("not allowed on this consensus lane"),
        "the node said {said:?}"
    );
    assert_eq!(
        recv(&mut inbound.consensus, "the vote before the bad frame").payload,
        Bytes::from_static(b"vote")
    );

    // The endpoint still serves everyone else: a well-behaved client's transactions arrive.
    let client = IngestClient::connect(ingest, node.key()).unwrap();
    client.submit(Bytes::from(tx.clone())).unwrap();
    client.finish();
    assert_eq!(recv(&mut inbound.ingest, "a good transaction").payload, tx);
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        inbound.ingest.try_recv().is_err(),
        "nothing from the bad connections was delivered"
    );
}
