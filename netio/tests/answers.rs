//! The answer path on the ingest endpoint: the node answers each client's transactions on that client's own
//! stream, in order; a gone client is a typed error that disturbs no one; a client sending an answer frame, or
//! not reading its answers, is disconnected while the others keep working.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cas_engine::Keypair;
use cas_netio::frame::{encode_frame, Class};
use cas_netio::identity;
use cas_netio::ingest::IngestClient;
use cas_netio::limits::CLIENT_ANSWER_PAYLOAD_BYTES_MAX;
use cas_netio::node::{close_code, InboundQueues, Node, NodeConfig, Origin, Peer};
use cas_netio::{NetError, SendError};
use common::*;

/// A node whose validator accepts any bytes: these tests are about answers, not transaction decoding.
fn start_open(namespace: u8) -> (Node, InboundQueues) {
    Node::start(
        NodeConfig {
            keypair: Keypair::from_seed(&cas_engine::fixtures::key(namespace, 0).seed()),
            listen: loopback(),
            ingest_listen: Some(loopback()),
            ingest_limits: Default::default(),
        },
        |_: Class, _: &[u8]| Ok(()),
    )
    .expect("node starts")
}

fn connect(node: &Node) -> IngestClient {
    IngestClient::connect(node.ingest_addr().unwrap(), node.key()).expect("client connects")
}

/// The answer the test's node gives to a transaction: derived from its bytes, so a misrouted or reordered
/// answer cannot pass for the right one.
fn answer_to(payload: &[u8]) -> Bytes {
    let mut answer = b"answer to ".to_vec();
    answer.extend(payload.iter().rev());
    Bytes::from(answer)
}

/// The next answer, or a panic after [`WAIT`].
fn next_answer(client: &IngestClient, what: &str) -> Bytes {
    match client.recv_answer(WAIT) {
        Ok(Some(answer)) => answer,
        Ok(None) => panic!("no answer for {what} within {WAIT:?}"),
        Err(error) => panic!("waiting for {what}: {error}"),
    }
}

/// Receives one transaction and answers it; returns the client it came from.
fn answer_one(node: &Node, inbound: &mut InboundQueues) -> SocketAddr {
    let message = recv(&mut inbound.ingest, "a client transaction");
    let Origin::Client(client) = message.origin else {
        panic!("a transaction from a peer on the ingest queue")
    };
    assert_eq!(message.class, Class::ClientTx);
    node.answer(client, answer_to(&message.payload))
        .expect("the client's queue has room");
    client
}

#[test]
fn each_client_gets_exactly_its_own_answers_in_order() {
    init_logs();
    const TXS_PER_CLIENT: usize = 300;
    let (node, mut inbound) = start_open(40);
    let clients = [connect(&node), connect(&node)];
    let sent: Vec<Vec<Bytes>> = (0..clients.len())
        .map(|who| {
            (0..TXS_PER_CLIENT)
                .map(|index| Bytes::from(format!("client {who} transaction {index}")))
                .collect()
        })
        .collect();
    // Interleaved, so both connections are live at once; fewer than CLIENT_QUEUE_MAX, so submit never blocks.
    for index in 0..TXS_PER_CLIENT {
        for (client, payloads) in clients.iter().zip(&sent) {
            client.submit(payloads[index].clone()).unwrap();
        }
    }
    let mut answered_ports = std::collections::BTreeSet::new();
    for _ in 0..clients.len() * TXS_PER_CLIENT {
        answered_ports.insert(answer_one(&node, &mut inbound).port());
    }
    let client_ports: std::collections::BTreeSet<u16> =
        clients.iter().map(|c| c.local_addr().port()).collect();
    assert_eq!(answered_ports, client_ports);

    for (who, (client, payloads)) in clients.iter().zip(&sent).enumerate() {
        // The first client takes its answers one by one; the second a few that way, then the rest in bulk, so
        // answers taken out of a batch and those still in the channel keep one order.
        let one_by_one = if who == 0 { payloads.len() } else { 3 };
        let mut answers: Vec<Bytes> = (0..one_by_one)
            .map(|index| next_answer(client, &format!("client {who} answer {index}")))
            .collect();
        let deadline = Instant::now() + WAIT;
        while answers.len() < payloads.len() && Instant::now() < deadline {
            answers.extend(client.recv_answers(Duration::from_millis(100)).unwrap());
        }
        let expected: Vec<Bytes> = payloads.iter().map(|p| answer_to(p)).collect();
        assert_eq!(answers, expected, "client {who}'s answers");
        // Exactly N: nothing more arrives.
        assert_eq!(
            client.recv_answer(Duration::from_millis(100)).unwrap(),
            None
        );
        assert_eq!(client.try_recv_answer().unwrap(), None);
    }
    let stats = node.endpoint_stats();
    assert_eq!(stats.answers_sent, (clients.len() * TXS_PER_CLIENT) as u64);
    assert_eq!(
        (stats.ingest_clients_open, stats.answers_refused_full),
        (2, 0)
    );
}

/// A timed answer carries when the netio thread read it, not when the client took it: a client that polls rarely
/// (the load generator) measures no pause of its own as latency.
#[test]
fn timed_answers_carry_their_arrival_not_their_reading() {
    init_logs();
    let (node, mut inbound) = start_open(48);
    let client = connect(&node);
    client.submit(Bytes::from_static(b"timed")).unwrap();
    let before = Instant::now();
    answer_one(&node, &mut inbound);
    // Let it arrive, then leave it waiting in the inbox well past its arrival.
    let deadline = Instant::now() + WAIT;
    let mut answers = Vec::new();
    while answers.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1_000));
        answers = client.recv_answers_timed(Duration::ZERO).unwrap();
    }
    let taken = Instant::now();
    assert_eq!(answers.len(), 1, "one answer within {WAIT:?}");
    let (arrived, answer) = &answers[0];
    assert_eq!(*answer, answer_to(b"timed"));
    assert!(*arrived >= before, "arrived before it was sent");
    assert!(
        taken.duration_since(*arrived) >= Duration::from_millis(500),
        "the arrival is the reading time: {:?} before it was taken",
        taken.duration_since(*arrived)
    );
}

#[test]
fn answering_a_gone_client_is_a_typed_error_and_disturbs_no_one() {
    init_logs();
    let (node, mut inbound) = start_open(41);
    let leaving = connect(&node);
    let staying = connect(&node);
    leaving
        .submit(Bytes::from_static(b"from the leaving client"))
        .unwrap();
    let leaving_addr = answer_one(&node, &mut inbound);
    assert_eq!(leaving_addr.port(), leaving.local_addr().port());
    assert_eq!(
        next_answer(&leaving, "the leaving client's answer"),
        answer_to(b"from the leaving client")
    );
    staying.submit(Bytes::from_static(b"first")).unwrap();
    let staying_addr = answer_one(&node, &mut inbound);

    drop(leaving);
    // Until the node sees the close, answers are still queued (Ok means queued, not delivered).
    wait_until("the node to forget the leaving client", || {
        match node.answer(leaving_addr, Bytes::from_static(b"too late")) {
            Ok(()) => false,
            Err(error) => {
                assert_eq!(error, SendError::UnknownClient(leaving_addr));
                true
            }
        }
    });
    wait_until("the per-client state to be cleaned up", || {
        node.endpoint_stats().ingest_clients_open == 1
    });
    let never: SocketAddr = "127.0.0.1:9".parse().unwrap();
    assert_eq!(
        node.answer(never, Bytes::from_static(b"x")),
        Err(SendError::UnknownClient(never))
    );
    let oversize = Bytes::from(vec![0u8; CLIENT_ANSWER_PAYLOAD_BYTES_MAX + 1]);
    assert!(matches!(
        node.answer(staying_addr, oversize),
        Err(SendError::Oversize {
            class: Class::ClientAnswer,
            ..
        })
    ));
    // An answer is never sent to a peer.
    assert_eq!(
        node.try_send(&node.key(), Class::ClientAnswer, Bytes::from_static(b"x")),
        Err(SendError::WrongClass(Class::ClientAnswer))
    );

    // The staying client still gets its answers, in order, and nothing of the other's.
    assert_eq!(
        next_answer(&staying, "the first answer"),
        answer_to(b"first")
    );
    staying.submit(Bytes::from_static(b"second")).unwrap();
    assert_eq!(answer_one(&node, &mut inbound), staying_addr);
    assert_eq!(
        next_answer(&staying, "the second answer"),
        answer_to(b"second")
    );
    assert_eq!(staying.try_recv_answer().unwrap(), None);
}

/// A raw quinn connection on its own runtime, to send what a real client or peer never would.
struct Raw {
    runtime: tokio::runtime::Runtime,
    endpoint: quinn::Endpoint,
}

impl Raw {
    fn new() -> Raw {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let endpoint = runtime.block_on(async { quinn::Endpoint::client(loopback()).unwrap() });
        Raw { runtime, endpoint }
    }

    /// Connects, sends `frame` on a new stream and returns the node's close code and reason.
    fn send_and_await_close(
        &self,
        config: quinn::ClientConfig,
        addr: SocketAddr,
        frame: &[u8],
    ) -> (u64, String) {
        self.runtime.block_on(async {
            let connecting = self
                .endpoint
                .connect_with(config, addr, identity::SERVER_NAME)
                .unwrap();
            let connection = tokio::time::timeout(WAIT, connecting)
                .await
                .expect("handshake in time")
                .expect("handshake succeeds");
            let mut send = connection.open_uni().await.unwrap();
            // The node may close while we still write: that is the point.
            let _ = send.write_all(frame).await;
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
fn a_client_or_peer_sending_an_answer_is_disconnected_while_others_keep_working() {
    init_logs();
    let keys = sorted_keys(42, 2);
    // The node has the larger key, so its peer (played by the raw connection) is the one that dials.
    let (node, mut inbound) = start(&keys[1], loopback());
    node.set_peers(&[Peer {
        key: keys[0].public(),
        addr: "127.0.0.1:9".parse().unwrap(),
    }])
    .unwrap();
    let tx = Bytes::from(
        cas_engine::codec::encode_tx(&cas_engine::fixtures::funded_genesis(7, 4, 2, 1, 5).txs[0])
            .to_vec(),
    );
    let good = connect(&node);
    good.submit(tx.clone()).unwrap();
    let good_addr = answer_one(&node, &mut inbound);

    let raw = Raw::new();
    let answer_frame = encode_frame(Class::ClientAnswer, b"I am not the node");
    let (code, reason) = raw.send_and_await_close(
        identity::ingest_client_config(node.key()).unwrap(),
        node.ingest_addr().unwrap(),
        &answer_frame,
    );
    assert_eq!(code, u64::from(close_code::BAD_FRAME));
    assert!(
        reason.contains("ClientAnswer is not allowed on this ingest stream from a client"),
        "the node said {reason:?}"
    );
    assert_eq!(node.endpoint_stats().ingest_bad_frames, 1);

    let peer_identity = identity::Identity::new(&keys[0]).unwrap();
    let (code, reason) = raw.send_and_await_close(
        identity::node_client_config(&peer_identity, node.key()).unwrap(),
        node.local_addr(),
        &answer_frame,
    );
    assert_eq!(code, u64::from(close_code::BAD_FRAME));
    assert!(
        reason.contains("ClientAnswer is not allowed on this node connection"),
        "the node said {reason:?}"
    );
    wait_until("the peer's bad frame to be counted", || {
        stats_of(&node, keys[0].public()).bad_frames == 1
    });

    // The good client was never touched: its answer arrives, and it goes on submitting and being answered.
    assert_eq!(next_answer(&good, "the first answer"), answer_to(&tx));
    good.submit(tx.clone()).unwrap();
    assert_eq!(answer_one(&node, &mut inbound), good_addr);
    assert_eq!(next_answer(&good, "the second answer"), answer_to(&tx));
    assert!(inbound.ingest.try_recv().is_err(), "nothing else delivered");
    assert!(inbound.consensus.try_recv().is_err() && inbound.bulk.try_recv().is_err());
}

#[test]
fn a_client_that_does_not_read_its_answers_is_disconnected() {
    init_logs();
    let (node, mut inbound) = start_open(43);
    let slow = connect(&node);
    let other = connect(&node);
    slow.submit(Bytes::from_static(b"slow")).unwrap();
    let slow_addr = answer_one(&node, &mut inbound);
    other.submit(Bytes::from_static(b"other")).unwrap();
    let other_addr = answer_one(&node, &mut inbound);

    // The slow client reads nothing: its inbox fills, then flow control, then the node's queue for it. The
    // bound on calls is far above what the limits allow (inbox + stream window + queue), so a missing limit
    // fails the test instead of hanging it.
    let answer = Bytes::from(vec![7u8; 1024]);
    let deadline = Instant::now() + WAIT;
    let mut queued = 0u64;
    let refusal = loop {
        match node.answer(slow_addr, answer.clone()) {
            Ok(()) => queued += 1,
            Err(error) => break error,
        }
        assert!(queued < 1_000_000, "the slow client's queue never filled");
        if queued.is_multiple_of(1024) {
            assert!(
                Instant::now() < deadline,
                "the slow client's queue never filled"
            );
            // Let the netio thread write on a loaded machine.
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    assert!(
        matches!(
            refusal,
            SendError::QueueFull {
                class: Class::ClientAnswer,
                ..
            }
        ),
        "{refusal:?}"
    );
    assert_eq!(
        node.answer(slow_addr, answer.clone()),
        Err(SendError::UnknownClient(slow_addr))
    );
    assert_eq!(node.endpoint_stats().answers_refused_full, 1);

    // The slow client still finds what it had received, in order, then learns why it was cut off.
    assert_eq!(
        next_answer(&slow, "the slow client's first answer"),
        answer_to(b"slow")
    );
    let mut received = 0u64;
    let error = loop {
        match slow.recv_answer(WAIT) {
            Ok(Some(got)) => {
                assert_eq!(got, answer);
                received += 1;
            }
            Ok(None) => panic!("neither an answer nor the disconnection within {WAIT:?}"),
            Err(error) => break error,
        }
    };
    // How many of the queued answers get through before the close depends on timing (the close may overtake
    // data still in flight, or follow the last of it); never more than were queued, and each one intact.
    assert!(received <= queued, "{received} of {queued}");
    let NetError::ConnectionLost { reason, .. } = error else {
        panic!("expected ConnectionLost, got {error}")
    };
    // QUIC sends the close once: if that packet is lost (here, in a client socket buffer still full of the
    // flood), the node forgets the connection after a few PTOs and the client's next packet gets a stateless
    // reset. Either way the client learns it is disconnected; usually with the node's reason.
    assert!(
        reason.contains("answer queue full: the client does not read its answers (code 4)")
            || reason.contains("reset by peer"),
        "{reason}"
    );
    assert!(matches!(
        slow.submit(Bytes::from_static(b"after")),
        Err(SendError::Closed)
    ));

    // The other client is untouched.
    assert_eq!(
        next_answer(&other, "the other's answer"),
        answer_to(b"other")
    );
    node.answer(other_addr, Bytes::from_static(b"still here"))
        .unwrap();
    assert_eq!(
        next_answer(&other, "the other's second answer"),
        Bytes::from_static(b"still here")
    );
    wait_until("the slow client's state to be gone", || {
        node.endpoint_stats().ingest_clients_open == 1
    });
}

/// A validator that refuses payloads starting with `bad` and gives the client a rejection answer for them.
struct Rejecting;

impl cas_netio::Validator for Rejecting {
    fn validate(&self, _: Class, payload: &[u8]) -> Result<(), String> {
        match payload.starts_with(b"bad") {
            true => Err("starts with bad".to_string()),
            false => Ok(()),
        }
    }

    fn rejection(&self, _: Class, reason: &str) -> Option<Bytes> {
        Some(Bytes::from(format!("rejected: {reason}")))
    }
}

/// Issue 16 item 5: a refused payload closed the connection, and the answers owed for the client's earlier
/// (valid) transactions were never sent. Now the refusal is an answer and the connection carries on.
#[test]
fn a_refused_payload_is_answered_and_the_connection_keeps_its_answers() {
    init_logs();
    let (node, mut inbound) = Node::start(
        NodeConfig {
            keypair: Keypair::from_seed(&cas_engine::fixtures::key(46, 0).seed()),
            listen: loopback(),
            ingest_listen: Some(loopback()),
            ingest_limits: Default::default(),
        },
        Rejecting,
    )
    .expect("node starts");
    let client = connect(&node);
    for payload in ["good 1", "bad 2", "good 3"] {
        client.submit(Bytes::from(payload)).unwrap();
    }
    // Both valid transactions arrive (the connection outlived the bad one) and are answered after it.
    let first = recv(&mut inbound.ingest, "the first good transaction");
    let second = recv(&mut inbound.ingest, "the second good transaction");
    assert_eq!(
        (&first.payload[..], &second.payload[..]),
        (&b"good 1"[..], &b"good 3"[..])
    );
    let Origin::Client(addr) = first.origin else {
        panic!("a client's transaction has a client origin")
    };
    node.answer(addr, answer_to(&first.payload)).unwrap();
    node.answer(addr, answer_to(&second.payload)).unwrap();
    let mut answers: Vec<Bytes> = (0..3)
        .map(|index| next_answer(&client, &format!("answer {index}")))
        .collect();
    answers.sort();
    let mut expected = vec![
        answer_to(b"good 1"),
        answer_to(b"good 3"),
        Bytes::from_static(b"rejected: starts with bad"),
    ];
    expected.sort();
    assert_eq!(answers, expected);
    let stats = node.endpoint_stats();
    assert_eq!((stats.ingest_rejected, stats.ingest_bad_frames), (1, 0));
    assert_eq!(stats.ingest_clients_open, 1);
}

/// Issue 16 item 5: a broken frame (here a class clients may not send) still closes the connection, but only
/// after the answers already queued for it are delivered: 100 answers of 60 KiB, far more than the client's
/// stream window, queued while the client reads nothing, all arrive before the close.
#[test]
fn answers_queued_before_a_broken_frame_are_delivered_before_the_close() {
    init_logs();
    const ANSWERS: usize = 100;
    let (node, mut inbound) = start_open(47);
    let raw = RawEndpoint::bound("127.0.0.1:0");
    let connection = raw.connect_ingest(&node).unwrap();
    let mut send = raw.block_on(async {
        let mut send = connection.open_uni().await.unwrap();
        send.write_all(&encode_frame(Class::ClientTx, b"valid"))
            .await
            .unwrap();
        send
    });
    let message = recv(&mut inbound.ingest, "the valid transaction");
    let Origin::Client(addr) = message.origin else {
        panic!("a client's transaction has a client origin")
    };
    let answer = |index: usize| Bytes::from(vec![index as u8; 60 * 1024]);
    for index in 0..ANSWERS {
        node.answer(addr, answer(index)).unwrap();
    }
    let (received, code, reason) = raw.block_on(async {
        send.write_all(&encode_frame(Class::Vote, b"not for clients"))
            .await
            .unwrap();
        let mut answers = cas_netio::frame::FrameReader::new(
            connection.accept_uni().await.expect("the answer stream"),
        );
        let mut received = Vec::new();
        while let Ok(Some((class, payload))) = answers.next(None, |_| Ok(())).await {
            assert_eq!(class, Class::ClientAnswer);
            received.push(payload);
        }
        let closed = tokio::time::timeout(WAIT, connection.closed())
            .await
            .unwrap();
        let quinn::ConnectionError::ApplicationClosed(close) = closed else {
            panic!("expected an application close, got {closed}")
        };
        let reason = String::from_utf8_lossy(&close.reason).into_owned();
        (received, close.error_code.into_inner(), reason)
    });
    assert_eq!(
        received.len(),
        ANSWERS,
        "answers delivered before the close"
    );
    for (index, payload) in received.iter().enumerate() {
        assert_eq!(payload, &answer(index), "answer {index}");
    }
    assert_eq!(code, u64::from(close_code::BAD_FRAME));
    assert!(reason.contains("Vote is not allowed"), "{reason}");
    assert_eq!(node.endpoint_stats().ingest_bad_frames, 1);
    // Forgotten at the refusal: a later answer is a typed error, not a silent drop.
    assert_eq!(
        node.answer(addr, Bytes::from_static(b"late")),
        Err(SendError::UnknownClient(addr))
    );
}

#[test]
fn clients_connected_together_share_a_thread_and_each_gets_its_own_answers() {
    init_logs();
    const TXS_PER_CLIENT: usize = 200;
    let (a, mut a_inbound) = start_open(44);
    let (b, mut b_inbound) = start_open(45);
    let (a_addr, b_addr) = (a.ingest_addr().unwrap(), b.ingest_addr().unwrap());
    // Node a twice: the repeat needs its own endpoint, since a node tells its clients apart by address.
    let clients =
        IngestClient::connect_all(&[(a_addr, a.key()), (b_addr, b.key()), (a_addr, a.key())])
            .expect("clients connect");
    assert_eq!(
        clients[0].local_addr(),
        clients[1].local_addr(),
        "one endpoint for distinct nodes"
    );
    assert_ne!(
        clients[0].local_addr(),
        clients[2].local_addr(),
        "another for a repeated node"
    );
    let payload =
        |who: usize, index: usize| Bytes::from(format!("client {who} transaction {index}"));
    for index in 0..TXS_PER_CLIENT {
        for (who, client) in clients.iter().enumerate() {
            client.submit(payload(who, index)).unwrap();
        }
    }
    for _ in 0..2 * TXS_PER_CLIENT {
        answer_one(&a, &mut a_inbound);
    }
    for _ in 0..TXS_PER_CLIENT {
        answer_one(&b, &mut b_inbound);
    }
    for (who, client) in clients.iter().enumerate() {
        for index in 0..TXS_PER_CLIENT {
            let answer = next_answer(client, &format!("client {who} answer {index}"));
            assert_eq!(
                answer,
                answer_to(&payload(who, index)),
                "client {who} answer {index}"
            );
        }
        assert_eq!(
            client.recv_answer(Duration::from_millis(100)).unwrap(),
            None
        );
    }
    // One finishes (the node reads everything it sent), one is dropped; the last keeps working on the thread.
    let mut clients = clients.into_iter();
    let (first, second, third) = (
        clients.next().unwrap(),
        clients.next().unwrap(),
        clients.next().unwrap(),
    );
    first.submit(Bytes::from_static(b"last words")).unwrap();
    first.finish();
    assert_eq!(
        recv(
            &mut a_inbound.ingest,
            "the finished client's last transaction"
        )
        .payload,
        Bytes::from_static(b"last words")
    );
    drop(second);
    third.submit(Bytes::from_static(b"still here")).unwrap();
    let client = answer_one(&a, &mut a_inbound);
    assert_eq!(client.port(), third.local_addr().port());
    assert_eq!(
        next_answer(&third, "the last client's answer"),
        answer_to(b"still here")
    );
}
