//! Frames survive any cut: the reader buffers what arrives and cuts frames from it, so frames written in pieces of
//! any size (a frame split over many writes, many frames in one) reach the node whole, in order, and only once.

mod common;

use cas_netio::frame::{encode_frame, Class};
use cas_netio::limits::CLIENT_TX_PAYLOAD_BYTES_MAX;
use cas_netio::IngestLimits;
use common::*;

#[test]
fn frames_written_in_pieces_of_any_size_arrive_whole_and_in_order() {
    init_logs();
    let (node, mut inbound) = start_with_limits(62, IngestLimits::default());
    let raw = RawEndpoint::bound("127.0.0.1:0");
    let connection = raw.connect_ingest(&node).unwrap();
    // Sizes from empty to the class's limit, mostly small (as transactions are), a fixed sequence.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut below = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let payloads: Vec<Vec<u8>> = (0..400usize)
        .map(|i| {
            let len = match i % 10 {
                0 => below(CLIENT_TX_PAYLOAD_BYTES_MAX + 1),
                1 => 0,
                _ => 1 + below(400),
            };
            (0..len).map(|j| (i * 31 + j) as u8).collect()
        })
        .collect();
    let stream: Vec<u8> = payloads
        .iter()
        .flat_map(|payload| encode_frame(Class::ClientTx, payload))
        .collect();
    // Written from a thread of its own while this one takes the frames: the node reads only as fast as its queue
    // is emptied.
    std::thread::scope(|scope| {
        scope.spawn(|| {
            raw.block_on(async {
                let mut send = connection.open_uni().await.unwrap();
                let mut at = 0;
                while at < stream.len() {
                    let piece = (1 + below(3_000)).min(stream.len() - at);
                    send.write_all(&stream[at..at + piece]).await.unwrap();
                    at += piece;
                    if below(8) == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                send.finish().unwrap();
                std::mem::forget(send);
            })
        });
        for (index, payload) in payloads.iter().enumerate() {
            let message = recv(&mut inbound.ingest, "a client frame");
            assert_eq!(message.class, Class::ClientTx);
            assert_eq!(&message.payload[..], &payload[..], "frame {index}");
        }
    });
    assert!(inbound.ingest.try_recv().is_err(), "no frame twice");
    assert_eq!(node.endpoint_stats().ingest_bad_frames, 0);
}
