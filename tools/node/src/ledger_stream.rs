//! The certified ledger as a byte stream: what `GET /v1/ledger?from=H` sends and a follower reads. Each executed
//! height is one frame, in height order:
//!
//! `magic "CASF" | height u64 | block length u32 | certificate length u32 | ledger block | ledger certificate`
//!
//! (little-endian). The block is the stored ledger block's bytes; the certificate is the committee's
//! [`LedgerCert`] on its result ([`LedgerCert::to_bytes`]), or nothing (length 0) when the serving node holds none
//! for that height. Every length is bounded before anything is allocated; the bytes are untrusted until the
//! follower has checked the certificate and the hash chain ([`crate::follower`]).

/// The response header of `GET /v1/ledger` that gives the serving node's executed height when the stream started.
pub const HEIGHT_HEADER: &str = "x-cas-height";

use std::io::Read;

use cas_consensus::committee::COMMITTEE_MEMBERS_MAX;
use cas_consensus::ledger_cert::{LedgerCert, STATEMENT_BYTES};
use cas_engine::codec::BLOCK_BYTES_MAX;

pub const FRAME_MAGIC: [u8; 4] = *b"CASF";
/// Magic, height, and the two lengths.
pub const FRAME_HEADER_BYTES: usize = 4 + 8 + 4 + 4;
/// A certificate with a signature from every member the committee may have.
pub const CERT_BYTES_MAX: usize = STATEMENT_BYTES + 2 + 66 * COMMITTEE_MEMBERS_MAX;

/// One executed height as the stream carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub height: u64,
    pub block: Vec<u8>,
    pub cert: Option<LedgerCert>,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("the stream is not a ledger stream (magic {0:02x?})")]
    Magic([u8; 4]),
    #[error("height {height}: a {len}-byte block is over the {BLOCK_BYTES_MAX}-byte bound")]
    BlockSize { height: u64, len: usize },
    #[error("height {height}: a {len}-byte certificate is over the {CERT_BYTES_MAX}-byte bound")]
    CertSize { height: u64, len: usize },
    #[error("height {height}: the certificate does not decode: {reason}")]
    Cert { height: u64, reason: String },
    #[error("the stream ended inside a frame")]
    Truncated,
    #[error("reading the stream: {0}")]
    Io(#[from] std::io::Error),
}

pub fn encode_frame(height: u64, block: &[u8], cert: Option<&LedgerCert>) -> Vec<u8> {
    let cert = cert.map(LedgerCert::to_bytes).unwrap_or_default();
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + block.len() + cert.len());
    out.extend_from_slice(&FRAME_MAGIC);
    out.extend_from_slice(&height.to_le_bytes());
    out.extend_from_slice(&(block.len() as u32).to_le_bytes());
    out.extend_from_slice(&(cert.len() as u32).to_le_bytes());
    out.extend_from_slice(block);
    out.extend_from_slice(&cert);
    out
}

/// Reads the next frame; `None` when the stream ends cleanly between frames.
pub fn read_frame(reader: &mut impl Read) -> Result<Option<Frame>, FrameError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    let mut filled = 0;
    while filled < header.len() {
        match reader.read(&mut header[filled..]) {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let magic: [u8; 4] = header[..4].try_into().expect("4 bytes");
    if magic != FRAME_MAGIC {
        return Err(FrameError::Magic(magic));
    }
    let height = u64::from_le_bytes(header[4..12].try_into().expect("8 bytes"));
    let block_len = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes")) as usize;
    let cert_len = u32::from_le_bytes(header[16..20].try_into().expect("4 bytes")) as usize;
    if block_len > BLOCK_BYTES_MAX {
        return Err(FrameError::BlockSize {
            height,
            len: block_len,
        });
    }
    if cert_len > CERT_BYTES_MAX {
        return Err(FrameError::CertSize {
            height,
            len: cert_len,
        });
    }
    let mut block = vec![0u8; block_len];
    read_exact(reader, &mut block)?;
    let cert = if cert_len == 0 {
        None
    } else {
        let mut bytes = vec![0u8; cert_len];
        read_exact(reader, &mut bytes)?;
        Some(LedgerCert::from_bytes(&bytes).map_err(|reason| FrameError::Cert { height, reason })?)
    };
    Ok(Some(Frame {
        height,
        block,
        cert,
    }))
}

fn read_exact(reader: &mut impl Read, buf: &mut [u8]) -> Result<(), FrameError> {
    reader.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cas_consensus::ledger_cert::LedgerStatement;
    use cas_consensus::messages::SignerSignature;
    use cas_engine::{Hash32, Signature};

    fn cert(height: u64) -> LedgerCert {
        LedgerCert {
            statement: LedgerStatement {
                chain_id: 1,
                epoch: 0,
                height,
                block: Hash32([1; 32]),
                consensus: Hash32([2; 32]),
                results_root: Hash32([3; 32]),
                utxo_commitment: Hash32([4; 32]),
            },
            signatures: vec![SignerSignature {
                signer: 2,
                signature: Signature([9; 64]),
            }],
        }
    }

    #[test]
    fn frames_round_trip_in_order() {
        let mut stream = encode_frame(7, b"block seven", Some(&cert(7)));
        stream.extend(encode_frame(8, b"eight", None));
        let mut reader = stream.as_slice();
        let first = read_frame(&mut reader).unwrap().unwrap();
        assert_eq!(
            (first.height, first.block.as_slice(), first.cert),
            (7, &b"block seven"[..], Some(cert(7)))
        );
        let second = read_frame(&mut reader).unwrap().unwrap();
        assert_eq!((second.height, second.cert), (8, None));
        assert!(read_frame(&mut reader).unwrap().is_none());
    }

    #[test]
    fn bad_streams_are_refused_before_allocating() {
        let good = encode_frame(3, b"abc", Some(&cert(3)));
        let mut magic = good.clone();
        magic[0] = b'X';
        assert!(matches!(
            read_frame(&mut magic.as_slice()),
            Err(FrameError::Magic(_))
        ));
        let mut huge = good.clone();
        huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            read_frame(&mut huge.as_slice()),
            Err(FrameError::BlockSize { height: 3, .. })
        ));
        let mut cert_huge = good.clone();
        cert_huge[16..20].copy_from_slice(&(CERT_BYTES_MAX as u32 + 1).to_le_bytes());
        assert!(matches!(
            read_frame(&mut cert_huge.as_slice()),
            Err(FrameError::CertSize { .. })
        ));
        for cut in [1, FRAME_HEADER_BYTES, good.len() - 1] {
            assert!(
                matches!(read_frame(&mut &good[..cut]), Err(FrameError::Truncated)),
                "cut at {cut}"
            );
        }
        let mut garbled = good;
        let len = garbled.len();
        garbled[len - 66..len - 64].copy_from_slice(&[0xff, 0xff]);
        garbled[FRAME_HEADER_BYTES + 3 + STATEMENT_BYTES..][..2]
            .copy_from_slice(&5u16.to_le_bytes());
        assert!(matches!(
            read_frame(&mut garbled.as_slice()),
            Err(FrameError::Cert { height: 3, .. })
        ));
    }
}
