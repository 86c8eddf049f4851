//! The ingest endpoint's bounds (issue 16): one source cannot take every connection slot, and a client that
//! goes silent, in the middle of a frame or between frames, is closed with `TIMEOUT` and gives its slot back.

mod common;

use bytes::Bytes;
use cas_netio::frame::{encode_frame, encode_header, Class};
use cas_netio::node::{close_code, Origin};
use cas_netio::IngestLimits;
use common::*;

#[test]
fn one_source_at_its_limit_does_not_lock_out_another() {
    init_logs();
    let limits = IngestLimits {
        connections_per_source_max: 3,
        ..IngestLimits::default()
    };
    let (node, mut inbound) = start_with_limits(60, limits);
    // One endpoint (one port) per connection: the node tells clients apart by address and port.
    let greedy: Vec<RawEndpoint> = (0..4).map(|_| RawEndpoint::bound("127.0.0.1:0")).collect();
    let held: Vec<quinn::Connection> = greedy[..3]
        .iter()
        .map(|raw| {
            raw.connect_ingest(&node)
                .expect("within the source's limit")
        })
        .collect();
    // The source is at its limit: one more from it is refused before the handshake...
    let refused = greedy[3].connect_ingest(&node).unwrap_err();
    assert!(refused.contains("refused"), "{refused}");
    assert_eq!(node.endpoint_stats().ingest_refused_per_source, 1);
    // ...while another source connects and is served.
    let other = RawEndpoint::bound("127.0.0.2:0");
    let connection = other
        .connect_ingest(&node)
        .expect("another source connects");
    other.block_on(async {
        let mut send = connection.open_uni().await.unwrap();
        send.write_all(&encode_frame(Class::ClientTx, b"from another source"))
            .await
            .unwrap();
        // This runtime drives the connection only inside `block_on`: stay until the node has it all.
        send.finish().unwrap();
        let _ = send.stopped().await;
    });
    let message = recv(&mut inbound.ingest, "the other source's transaction");
    assert_eq!(message.payload, Bytes::from_static(b"from another source"));
    let Origin::Client(from) = message.origin else {
        panic!("a client's transaction has a client origin")
    };
    assert_eq!(from.ip().to_string(), "127.0.0.2");
    // A slot given back is free again for the first source.
    held[0].close(0u32.into(), b"done");
    wait_until("the closed connection's slot to come back", || {
        greedy[3].connect_ingest(&node).is_ok()
    });
    let stats = node.endpoint_stats();
    assert_eq!(stats.ingest_refused_full, 0);
    assert!(stats.ingest_refused_per_source >= 1);
}

#[test]
fn a_half_sent_frame_is_closed_with_timeout() {
    init_logs();
    let limits = IngestLimits {
        frame_timeout_ms: 300,
        ..IngestLimits::default()
    };
    let (node, _inbound) = start_with_limits(61, limits);
    let raw = RawEndpoint::bound("127.0.0.1:0");
    for (what, bytes) in [
        (
            "half a header",
            encode_header(Class::ClientTx, 1000)[..3].to_vec(),
        ),
        ("a header and part of its payload", {
            let mut bytes = encode_header(Class::ClientTx, 1000).to_vec();
            bytes.extend([7u8; 100]);
            bytes
        }),
    ] {
        let connection = raw.connect_ingest(&node).unwrap();
        raw.block_on(async {
            let mut send = connection.open_uni().await.unwrap();
            send.write_all(&bytes).await.unwrap();
            // Kept open (not finished): the node must not wait for the rest for ever.
            std::mem::forget(send);
        });
        let (code, reason) = raw.await_close(&connection);
        assert_eq!(code, u64::from(close_code::TIMEOUT), "{what}: {reason}");
        assert!(
            reason.contains("not completed within 300 ms"),
            "{what}: {reason}"
        );
    }
    assert_eq!(node.endpoint_stats().ingest_timeouts, 2);
    assert_eq!(node.endpoint_stats().ingest_bad_frames, 0);
}

#[test]
fn an_idle_client_is_closed_with_timeout_and_a_busy_one_is_not() {
    init_logs();
    let limits = IngestLimits {
        idle_timeout_ms: 1_000,
        ..IngestLimits::default()
    };
    let (node, mut inbound) = start_with_limits(62, limits);
    let raw = RawEndpoint::bound("127.0.0.1:0");
    let idle_endpoint = RawEndpoint::bound("127.0.0.1:0");
    let idle = idle_endpoint.connect_ingest(&node).unwrap();
    let busy = raw.connect_ingest(&node).unwrap();
    // The busy client sends a frame every 100 ms for 3 idle periods; the idle one sends nothing.
    let busy_closed = raw.block_on(async {
        let mut send = busy.open_uni().await.unwrap();
        for index in 0..30u32 {
            let payload = format!("tick {index}");
            send.write_all(&encode_frame(Class::ClientTx, payload.as_bytes()))
                .await
                .unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        busy.close_reason()
    });
    assert!(
        busy_closed.is_none(),
        "the busy client was closed: {busy_closed:?}"
    );
    let (code, reason) = idle_endpoint.await_close(&idle);
    assert_eq!(code, u64::from(close_code::TIMEOUT), "{reason}");
    assert!(reason.contains("idle for 1000 ms"), "{reason}");
    for _ in 0..30 {
        recv(&mut inbound.ingest, "the busy client's ticks");
    }
    assert_eq!(node.endpoint_stats().ingest_timeouts, 1);
}
