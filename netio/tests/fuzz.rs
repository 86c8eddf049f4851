//! Fuzz target (issue 16), proptest-driven so it runs on stable in every `cargo test`: the frame header decoder,
//! the first thing netio reads of every peer's and client's stream, through the public API. Random and mutated
//! bytes never panic; an accepted header names a known class and a length within that class's limit, and whatever
//! `decode_frame` accepts re-encodes to the same bytes.
//!
//! Cases per property: `CAS_FUZZ_CASES` (default small, for CI); the long run is in the README's test section.

use cas_netio::frame::{decode_frame, decode_header, encode_frame, encode_header};
use cas_netio::limits::FRAME_HEADER_BYTES;
use cas_netio::{Class, FrameError};
use proptest::collection::vec;
use proptest::prelude::*;

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

fn header_is_sound(header: &[u8; FRAME_HEADER_BYTES]) {
    match decode_header(header) {
        Ok((class, len)) => {
            assert!(Class::ALL.contains(&class));
            assert!(len <= class.payload_bytes_max());
            assert_eq!(&encode_header(class, len), header);
        }
        Err(FrameError::UnknownClass(byte)) => assert_eq!(byte, header[4]),
        Err(FrameError::Oversize { class, len, max }) => {
            assert_eq!(max, class.payload_bytes_max());
            assert!(len > max);
        }
        Err(other) => panic!("a header can only be refused for its class or length: {other}"),
    }
}

fn frame_is_sound(bytes: &[u8]) {
    if let Ok((class, payload, rest)) = decode_frame(bytes) {
        assert!(payload.len() <= class.payload_bytes_max());
        assert_eq!(FRAME_HEADER_BYTES + payload.len() + rest.len(), bytes.len());
        let again = encode_frame(class, payload);
        assert_eq!(&bytes[..again.len()], &again[..]);
    }
}

proptest! {
    #![proptest_config(config(2_048))]

    #[test]
    fn fuzz_frame_header_random(header in any::<[u8; FRAME_HEADER_BYTES]>()) {
        header_is_sound(&header);
    }

    /// Lengths at and around each class's limit, with every class byte.
    #[test]
    fn fuzz_frame_header_at_the_limits(class in any::<u8>(), which in 0usize..8, delta in -2i64..=2) {
        let limit = Class::from_byte(class).map_or(1 << 20, Class::payload_bytes_max);
        let len = match which {
            0 => u32::MAX as i64,
            1 => 0,
            _ => limit as i64 + delta,
        }
        .clamp(0, u32::MAX as i64) as u32;
        let mut header = [0u8; FRAME_HEADER_BYTES];
        header[..4].copy_from_slice(&len.to_le_bytes());
        header[4] = class;
        header_is_sound(&header);
    }

    #[test]
    fn fuzz_frames_random_and_mutated(
        random in vec(any::<u8>(), 0..300),
        class in proptest::sample::select(Class::ALL.to_vec()),
        payload in vec(any::<u8>(), 0..200),
        flips in vec((any::<proptest::sample::Index>(), any::<u8>()), 0..4),
    ) {
        frame_is_sound(&random);
        let mut bytes = encode_frame(class, &payload);
        bytes.extend_from_slice(&random);
        for (at, value) in flips {
            let at = at.index(bytes.len());
            bytes[at] ^= value;
        }
        frame_is_sound(&bytes);
        // Splitting frame after frame ends, whatever the bytes.
        let mut rest: &[u8] = &bytes;
        while let Ok((_, _, next)) = decode_frame(rest) {
            assert!(next.len() < rest.len());
            rest = next;
        }
    }
}
