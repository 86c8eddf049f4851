//! The certified headers as bytes, for the driver's file: one validating decoder, a checksum over everything, so a
//! torn or edited file is refused rather than trusted. It never holds hand-overs (they carry their own signatures
//! and are stored as a node serves them).
//!
//! `magic "CASH" | version u32 | chain id u32 | count u64 | count x record | blake3 checksum (32)`, little-endian;
//! a record is `hash (32) | tx root (32) | own certificate u8 (0 or 1) | epoch u64 | results root (32)` (zeros
//! when there is no own certificate).

use cas_engine::Hash32;

use super::{CertifiedHeader, OwnCert};

pub const MAGIC: [u8; 4] = *b"CASH";
pub const VERSION: u32 = 1;
const CHECKSUM_DOMAIN: &str = "CAS 2026-12 wallet headers v1";
const PREFIX_BYTES: usize = 4 + 4 + 4 + 8;
pub const RECORD_BYTES: usize = 32 + 32 + 1 + 8 + 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("not a header file (magic {0:02x?})")]
    Magic([u8; 4]),
    #[error("header file version {0}, this build reads {VERSION}")]
    Version(u32),
    #[error("{len} bytes, {count} headers need {expected}")]
    Length {
        len: usize,
        count: u64,
        expected: u128,
    },
    #[error("the checksum does not match: the file is torn or was changed")]
    Checksum,
    #[error("record {0}: the certificate flag is neither 0 nor 1")]
    Flag(u64),
    #[error("no headers: a chain holds its genesis header at least")]
    Empty,
}

pub fn encode(chain_id: u32, headers: &[CertifiedHeader]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREFIX_BYTES + headers.len() * RECORD_BYTES + 32);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&chain_id.to_le_bytes());
    out.extend_from_slice(&(headers.len() as u64).to_le_bytes());
    for header in headers {
        out.extend_from_slice(&header.hash.0);
        out.extend_from_slice(&header.tx_root.0);
        let own = header.own_cert.unwrap_or(OwnCert {
            epoch: 0,
            results_root: Hash32([0; 32]),
        });
        out.push(u8::from(header.own_cert.is_some()));
        out.extend_from_slice(&own.epoch.to_le_bytes());
        out.extend_from_slice(&own.results_root.0);
    }
    let checksum = Hash32::of(CHECKSUM_DOMAIN, &out);
    out.extend_from_slice(&checksum.0);
    out
}

/// Reads [`encode`]'s bytes: the chain id and the headers, genesis first.
pub fn decode(bytes: &[u8]) -> Result<(u32, Vec<CertifiedHeader>), StoreError> {
    let Some((prefix, rest)) = bytes.split_first_chunk::<PREFIX_BYTES>() else {
        return Err(StoreError::Length {
            len: bytes.len(),
            count: 0,
            expected: (PREFIX_BYTES + 32) as u128,
        });
    };
    let word = |at: usize| u32::from_le_bytes(prefix[at..at + 4].try_into().expect("4 bytes"));
    let magic: [u8; 4] = prefix[..4].try_into().expect("4 bytes");
    if magic != MAGIC {
        return Err(StoreError::Magic(magic));
    }
    if word(4) != VERSION {
        return Err(StoreError::Version(word(4)));
    }
    let chain_id = word(8);
    let count = u64::from_le_bytes(prefix[12..20].try_into().expect("8 bytes"));
    let expected = PREFIX_BYTES as u128 + u128::from(count) * RECORD_BYTES as u128 + 32;
    if bytes.len() as u128 != expected {
        return Err(StoreError::Length {
            len: bytes.len(),
            count,
            expected,
        });
    }
    let (body, checksum) = bytes.split_at(bytes.len() - 32);
    if Hash32::of(CHECKSUM_DOMAIN, body).0 != checksum {
        return Err(StoreError::Checksum);
    }
    if count == 0 {
        return Err(StoreError::Empty);
    }
    let hash = |record: &[u8], at: usize| Hash32(record[at..at + 32].try_into().expect("32 bytes"));
    let headers = rest[..rest.len() - 32]
        .chunks_exact(RECORD_BYTES)
        .enumerate()
        .map(|(i, record)| {
            let own_cert = match record[64] {
                0 => None,
                1 => Some(OwnCert {
                    epoch: u64::from_le_bytes(record[65..73].try_into().expect("8 bytes")),
                    results_root: hash(record, 73),
                }),
                _ => return Err(StoreError::Flag(i as u64)),
            };
            Ok(CertifiedHeader {
                hash: hash(record, 0),
                tx_root: hash(record, 32),
                own_cert,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((chain_id, headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers() -> Vec<CertifiedHeader> {
        (0..3u8)
            .map(|i| CertifiedHeader {
                hash: Hash32([i; 32]),
                tx_root: Hash32([i + 10; 32]),
                own_cert: (i != 1).then_some(OwnCert {
                    epoch: u64::from(i),
                    results_root: Hash32([i + 20; 32]),
                }),
            })
            .collect()
    }

    #[test]
    fn headers_round_trip_and_any_changed_byte_is_refused() {
        let bytes = encode(7, &headers());
        assert_eq!(decode(&bytes), Ok((7, headers())));
        for at in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[at] ^= 1;
            assert!(decode(&changed).is_err(), "byte {at} changed");
        }
        for cut in [0, 5, PREFIX_BYTES, bytes.len() - 1] {
            assert!(
                matches!(decode(&bytes[..cut]), Err(StoreError::Length { .. })),
                "cut at {cut}"
            );
        }
    }
}
