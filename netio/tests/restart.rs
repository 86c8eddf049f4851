//! A peer that stops and comes back at the same address is reconnected by backoff, and traffic flows again
//! both ways, whichever side of the dial rule restarted.

mod common;

use bytes::Bytes;
use cas_netio::frame::Class;
use cas_netio::node::Origin;
use common::*;

#[test]
fn a_restarted_peer_is_reconnected() {
    init_logs();
    let keys = sorted_keys(40, 2);
    // keys[0] is smaller, so `dialer` dials `acceptor`.
    let (dialer, mut dialer_in) = start(&keys[0], loopback());
    let (acceptor, mut acceptor_in) = start(&keys[1], loopback());
    mesh(&[&dialer, &acceptor]);
    let acceptor_addr = acceptor.local_addr();

    dialer
        .try_send(
            &acceptor.key(),
            Class::Proposal,
            Bytes::from_static(b"before"),
        )
        .unwrap();
    assert_eq!(
        &recv(&mut acceptor_in.consensus, "the first proposal").payload[..],
        b"before"
    );

    // The accepting side restarts at the same address: the dialer notices the close and redials.
    drop(acceptor_in);
    drop(acceptor);
    wait_until("the dialer to notice", || {
        !stats_of(&dialer, keys[1].public()).connected
    });
    let (acceptor, mut acceptor_in) = start(&keys[1], acceptor_addr);
    mesh(&[&dialer, &acceptor]);
    wait_until("the reconnect", || {
        stats_of(&dialer, keys[1].public()).reconnects == 1
    });
    dialer
        .try_send(&acceptor.key(), Class::Vote, Bytes::from_static(b"after"))
        .unwrap();
    let message = recv(&mut acceptor_in.consensus, "a vote after the restart");
    assert_eq!(
        (message.origin, &message.payload[..]),
        (Origin::Peer(dialer.key()), &b"after"[..])
    );
    acceptor
        .try_send(&dialer.key(), Class::Timeout, Bytes::from_static(b"back"))
        .unwrap();
    assert_eq!(
        &recv(
            &mut dialer_in.consensus,
            "a timeout from the restarted peer"
        )
        .payload[..],
        b"back"
    );

    // Now the dialing side restarts: the acceptor takes its new connection in place of the dead one.
    let dialer_addr = dialer.local_addr();
    drop(dialer_in);
    drop(dialer);
    let (dialer, mut dialer_in) = start(&keys[0], dialer_addr);
    mesh(&[&dialer, &acceptor]);
    wait_until("the acceptor's second session", || {
        stats_of(&acceptor, keys[0].public()).reconnects == 1
    });
    acceptor
        .try_send(
            &dialer.key(),
            Class::Package,
            Bytes::from(vec![7u8; 300_000]),
        )
        .unwrap();
    assert_eq!(
        recv(&mut dialer_in.bulk, "a package after the restart")
            .payload
            .len(),
        300_000
    );
    let stats = stats_of(&dialer, keys[1].public());
    assert!(stats.connected, "{stats:?}");
}
