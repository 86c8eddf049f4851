//! What a frame costs before its bytes arrive (issue 16): a header announcing a large frame made the node
//! allocate the whole declared length at once, so half-sent frames on many streams took hundreds of MB. The
//! payload buffer now grows with the bytes received. Counted with a global allocator that tracks the peak of
//! live bytes, in this test binary alone.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cas_netio::frame::{encode_frame, encode_header, Class};
use cas_netio::identity::{self, Identity};
use cas_netio::node::Peer;
use common::*;

struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let live = LIVE_BYTES.fetch_add(by, Ordering::Relaxed) + by;
    PEAK_BYTES.fetch_max(live, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        grew(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn a_declared_length_is_not_allocated_before_its_bytes_arrive() {
    init_logs();
    let keys = sorted_keys(64, 2);
    // The node has the larger key, so its peer (played by the raw connection) is the one that dials.
    let (node, mut inbound) = start(&keys[1], loopback());
    node.set_peers(&[Peer {
        key: keys[0].public(),
        addr: "127.0.0.1:9".parse().unwrap(),
    }])
    .unwrap();
    let raw = RawEndpoint::bound("127.0.0.1:0");
    let config =
        identity::node_client_config(&Identity::new(&keys[0]).unwrap(), node.key()).unwrap();
    let connection = raw
        .block_on(async {
            let connecting = raw
                .endpoint
                .connect_with(config, node.local_addr(), identity::SERVER_NAME)
                .unwrap();
            tokio::time::timeout(WAIT, connecting).await
        })
        .expect("no timeout")
        .expect("the node accepts its peer");
    let declared = Class::Package.payload_bytes_max();
    PEAK_BYTES.store(LIVE_BYTES.load(Ordering::Relaxed), Ordering::Relaxed);
    let baseline = PEAK_BYTES.load(Ordering::Relaxed);
    // Two streams, each a header announcing the largest package and 16 bytes of it; then a vote, so we know
    // the node has been reading this connection.
    let _streams = raw.block_on(async {
        let mut streams = Vec::new();
        for _ in 0..2 {
            let mut send = connection.open_uni().await.unwrap();
            send.write_all(&encode_header(Class::Package, declared))
                .await
                .unwrap();
            send.write_all(&[7u8; 16]).await.unwrap();
            streams.push(send);
        }
        let mut vote = connection.open_uni().await.unwrap();
        vote.write_all(&encode_frame(Class::Vote, b"vote"))
            .await
            .unwrap();
        streams.push(vote);
        streams
    });
    assert_eq!(
        recv(&mut inbound.consensus, "the vote").payload,
        Bytes::from_static(b"vote")
    );
    // Had the node allocated the declared lengths (2 x 16 MiB), the peak would show it at once.
    let deadline = Instant::now() + Duration::from_millis(1_000);
    while Instant::now() < deadline {
        let grown = PEAK_BYTES.load(Ordering::Relaxed).saturating_sub(baseline);
        assert!(
            grown < declared / 2,
            "{grown} bytes allocated for frames that sent 16 bytes each"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
