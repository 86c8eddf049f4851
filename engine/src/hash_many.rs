//! Many short blake3 hashes at once: sixteen messages per pass, one message per 32-bit lane of AVX-512 registers.
//!
//! The ledger's hot path hashes many small, independent messages: a block's tx ids (a transfer's canonical body is
//! about 230 bytes) and the UTXO set's elements (109 to 117 bytes each, three per transfer). The `blake3` crate
//! parallelises the chunks of one long input, not separate inputs, so each of these costs two to four serial
//! compressions. Here sixteen messages of at most one chunk (1,024 bytes) go through the compression function side
//! by side, each with its own length and flags; a lane whose message has no block left keeps its chaining value.
//!
//! The output is exactly `blake3`'s, in derive-key mode under a context key (the mode [`crate::id::DomainKey`]
//! uses): a test checks it against the crate for every length up to past one chunk. Longer messages, the tail of
//! fewer than sixteen, and CPUs without AVX-512 go through the crate. The choice changes speed only, never a hash.

use crate::id::Hash32;

/// Messages hashed side by side.
pub const LANES: usize = 16;
/// The longest message the wide path takes: one blake3 chunk.
const CHUNK_LEN: usize = 1024;
const BLOCK_LEN: usize = 64;

/// Hashes every message in blake3's derive-key mode under `context_key` (a context string's key, as
/// `blake3::hazmat::hash_derive_key_context` makes it): `out[i]` is the hash of `messages[i]`.
pub fn derive_key_many(context_key: &[u8; 32], messages: &[&[u8]], out: &mut [Hash32]) {
    assert_eq!(messages.len(), out.len(), "one output per message");
    let mut start = 0;
    #[cfg(target_arch = "x86_64")]
    if wide::available() {
        while start + LANES <= messages.len() {
            let group: &[&[u8]; LANES] = messages[start..start + LANES]
                .try_into()
                .expect("a group is LANES messages");
            let outputs: &mut [Hash32; LANES] = (&mut out[start..start + LANES])
                .try_into()
                .expect("a group is LANES outputs");
            if group.iter().all(|m| m.len() <= CHUNK_LEN) {
                // SAFETY: the CPU has AVX-512F (checked above).
                unsafe { wide::hash16(context_key, group, outputs) };
            } else {
                one_by_one(context_key, group, outputs);
            }
            start += LANES;
        }
    }
    one_by_one(context_key, &messages[start..], &mut out[start..]);
}

fn one_by_one(context_key: &[u8; 32], messages: &[&[u8]], out: &mut [Hash32]) {
    use blake3::hazmat::HasherExt;
    for (message, hash) in messages.iter().zip(out) {
        let mut hasher = blake3::Hasher::new_from_context_key(context_key);
        hasher.update(message);
        *hash = Hash32(*hasher.finalize().as_bytes());
    }
}

#[cfg(target_arch = "x86_64")]
mod wide {
    use std::arch::x86_64::*;

    use super::{BLOCK_LEN, LANES};
    use crate::id::Hash32;

    const IV: [u32; 8] = [
        0x6A09_E667,
        0xBB67_AE85,
        0x3C6E_F372,
        0xA54F_F53A,
        0x510E_527F,
        0x9B05_688C,
        0x1F83_D9AB,
        0x5BE0_CD19,
    ];
    const CHUNK_START: u32 = 1 << 0;
    const CHUNK_END: u32 = 1 << 1;
    const ROOT: u32 = 1 << 3;
    const DERIVE_KEY_MATERIAL: u32 = 1 << 6;

    /// The message word each G step of each round reads: round 0 reads them in order, each later round applies
    /// blake3's permutation to the one before.
    const SCHEDULE: [[usize; 16]; 7] = {
        const PERMUTATION: [usize; 16] = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8];
        let mut schedule = [[0; 16]; 7];
        let mut i = 0;
        while i < 16 {
            schedule[0][i] = i;
            i += 1;
        }
        let mut round = 1;
        while round < 7 {
            let mut i = 0;
            while i < 16 {
                schedule[round][i] = schedule[round - 1][PERMUTATION[i]];
                i += 1;
            }
            round += 1;
        }
        schedule
    };

    pub fn available() -> bool {
        is_x86_feature_detected!("avx512f")
    }

    #[inline(always)]
    fn g(
        v: &mut [__m512i; 16],
        (a, b, c, d): (usize, usize, usize, usize),
        x: __m512i,
        y: __m512i,
    ) {
        // SAFETY (whole body): only called from `hash16`, whose caller guarantees AVX-512F.
        unsafe {
            v[a] = _mm512_add_epi32(_mm512_add_epi32(v[a], v[b]), x);
            v[d] = _mm512_ror_epi32::<16>(_mm512_xor_si512(v[d], v[a]));
            v[c] = _mm512_add_epi32(v[c], v[d]);
            v[b] = _mm512_ror_epi32::<12>(_mm512_xor_si512(v[b], v[c]));
            v[a] = _mm512_add_epi32(_mm512_add_epi32(v[a], v[b]), y);
            v[d] = _mm512_ror_epi32::<8>(_mm512_xor_si512(v[d], v[a]));
            v[c] = _mm512_add_epi32(v[c], v[d]);
            v[b] = _mm512_ror_epi32::<7>(_mm512_xor_si512(v[b], v[c]));
        }
    }

    /// blake3's compression of one block per lane (chunk counter 0), returning the lanes' next chaining values.
    #[inline(always)]
    fn compress(
        cv: &[__m512i; 8],
        m: &[__m512i; 16],
        block_len: __m512i,
        flags: __m512i,
    ) -> [__m512i; 8] {
        // SAFETY (whole body): as `g`.
        unsafe {
            let zero = _mm512_setzero_si512();
            let mut v = [
                cv[0],
                cv[1],
                cv[2],
                cv[3],
                cv[4],
                cv[5],
                cv[6],
                cv[7],
                _mm512_set1_epi32(IV[0] as i32),
                _mm512_set1_epi32(IV[1] as i32),
                _mm512_set1_epi32(IV[2] as i32),
                _mm512_set1_epi32(IV[3] as i32),
                zero,
                zero,
                block_len,
                flags,
            ];
            for s in &SCHEDULE {
                g(&mut v, (0, 4, 8, 12), m[s[0]], m[s[1]]);
                g(&mut v, (1, 5, 9, 13), m[s[2]], m[s[3]]);
                g(&mut v, (2, 6, 10, 14), m[s[4]], m[s[5]]);
                g(&mut v, (3, 7, 11, 15), m[s[6]], m[s[7]]);
                g(&mut v, (0, 5, 10, 15), m[s[8]], m[s[9]]);
                g(&mut v, (1, 6, 11, 12), m[s[10]], m[s[11]]);
                g(&mut v, (2, 7, 8, 13), m[s[12]], m[s[13]]);
                g(&mut v, (3, 4, 9, 14), m[s[14]], m[s[15]]);
            }
            std::array::from_fn(|i| _mm512_xor_si512(v[i], v[i + 8]))
        }
    }

    /// The 16 x 16 transpose of 32-bit words: row i of the result is word i of every input row, in row order.
    /// Interleaves 32-bit, then 64-bit, then twice 128-bit lanes (the pattern of blake3's own AVX-512 code).
    #[inline(always)]
    fn transpose(rows: [__m512i; 16]) -> [__m512i; 16] {
        // SAFETY (whole body): as `g`.
        unsafe {
            let pairs: [__m512i; 16] = std::array::from_fn(|i| {
                let (a, b) = (rows[i & !1], rows[i | 1]);
                if i % 2 == 0 {
                    _mm512_unpacklo_epi32(a, b)
                } else {
                    _mm512_unpackhi_epi32(a, b)
                }
            });
            let quads: [__m512i; 16] = std::array::from_fn(|i| {
                let (group, k) = (i / 4, i % 4);
                let (a, b) = (pairs[4 * group + k / 2], pairs[4 * group + 2 + k / 2]);
                if k % 2 == 0 {
                    _mm512_unpacklo_epi64(a, b)
                } else {
                    _mm512_unpackhi_epi64(a, b)
                }
            });
            // Even 128-bit lanes of a then b (0x88), or odd ones (0xdd).
            let lanes_128 = |a, b, odd: bool| {
                if odd {
                    _mm512_shuffle_i32x4::<0xdd>(a, b)
                } else {
                    _mm512_shuffle_i32x4::<0x88>(a, b)
                }
            };
            let octets: [__m512i; 16] = std::array::from_fn(|i| {
                let (half, k) = (i / 8, i % 8);
                lanes_128(quads[8 * half + k % 4], quads[8 * half + 4 + k % 4], k >= 4)
            });
            std::array::from_fn(|i| lanes_128(octets[i % 8], octets[8 + i % 8], i >= 8))
        }
    }

    /// Hashes sixteen messages of at most one chunk each (derive-key mode under `context_key`).
    ///
    /// # Safety
    /// The CPU must support AVX-512F ([`available`]).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn hash16(
        context_key: &[u8; 32],
        messages: &[&[u8]; LANES],
        out: &mut [Hash32; LANES],
    ) {
        let blocks: [usize; LANES] =
            std::array::from_fn(|lane| messages[lane].len().div_ceil(BLOCK_LEN).max(1));
        let rounds = *blocks.iter().max().expect("LANES > 0");
        let mut cv: [__m512i; 8] = std::array::from_fn(|i| {
            let word =
                u32::from_le_bytes(context_key[4 * i..4 * i + 4].try_into().expect("4 bytes"));
            _mm512_set1_epi32(word as i32)
        });
        for block in 0..rounds {
            // Each lane's block as one register (zero past its message's end), then transposed so that m[w] holds
            // word w of every lane.
            let mut rows = [_mm512_setzero_si512(); LANES];
            let mut block_len = [0u32; LANES];
            let mut flags = [0u32; LANES];
            let mut active: u16 = 0;
            for lane in 0..LANES {
                if block >= blocks[lane] {
                    continue;
                }
                let message = messages[lane];
                let start = block * BLOCK_LEN;
                let end = message.len().min(start + BLOCK_LEN);
                rows[lane] = if end - start == BLOCK_LEN {
                    // SAFETY: message[start..start + 64] is in bounds; unaligned load.
                    unsafe { _mm512_loadu_si512(message.as_ptr().add(start).cast()) }
                } else {
                    let mut bytes = [0u8; BLOCK_LEN];
                    bytes[..end - start].copy_from_slice(&message[start..end]);
                    // SAFETY: 64 readable bytes; unaligned load.
                    unsafe { _mm512_loadu_si512(bytes.as_ptr().cast()) }
                };
                block_len[lane] = (end - start) as u32;
                flags[lane] = DERIVE_KEY_MATERIAL
                    | if block == 0 { CHUNK_START } else { 0 }
                    | if block + 1 == blocks[lane] {
                        CHUNK_END | ROOT
                    } else {
                        0
                    };
                active |= 1 << lane;
            }
            let m = transpose(rows);
            // SAFETY: each array is 16 u32 = 64 readable bytes; unaligned loads.
            let (block_len, flags) = unsafe {
                (
                    _mm512_loadu_si512(block_len.as_ptr().cast()),
                    _mm512_loadu_si512(flags.as_ptr().cast()),
                )
            };
            let next = compress(&cv, &m, block_len, flags);
            for (cv, next) in cv.iter_mut().zip(next) {
                *cv = _mm512_mask_mov_epi32(*cv, active, next);
            }
        }
        let mut words = [[0u32; LANES]; 8];
        for (w, cv) in words.iter_mut().zip(cv) {
            // SAFETY: 64 writable bytes; unaligned store.
            unsafe { _mm512_storeu_si512(w.as_mut_ptr().cast(), cv) };
        }
        for (lane, hash) in out.iter_mut().enumerate() {
            for (w, bytes) in hash.0.chunks_exact_mut(4).enumerate() {
                bytes.copy_from_slice(&words[w][lane].to_le_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{domain, DomainKey};

    fn message(length: usize, seed: usize) -> Vec<u8> {
        (0..length)
            .map(|i| (i * 31 + seed * 7 + length) as u8)
            .collect()
    }

    #[test]
    fn every_length_hashes_as_the_crate_does() {
        let context_key = blake3::hazmat::hash_derive_key_context(domain::TX_ID);
        let key = DomainKey::new(domain::TX_ID);
        // Groups of sixteen with mixed lengths (0 to past a chunk), then a short tail.
        let lengths: Vec<usize> = (0..=CHUNK_LEN + 70).chain([0, 1, 63, 64, 65]).collect();
        let messages: Vec<Vec<u8>> = lengths
            .iter()
            .enumerate()
            .map(|(seed, &l)| message(l, seed))
            .collect();
        let slices: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        let mut hashes = vec![Hash32::ZERO; slices.len()];
        derive_key_many(&context_key, &slices, &mut hashes);
        for (message, hash) in slices.iter().zip(&hashes) {
            assert_eq!(*hash, key.hash(message), "length {}", message.len());
        }
        // Sixteen of one length each, for every block count of a chunk.
        for length in [0, 1, 64, 109, 117, 230, 1023, 1024] {
            let messages: Vec<Vec<u8>> = (0..LANES).map(|seed| message(length, seed)).collect();
            let slices: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
            let mut hashes = vec![Hash32::ZERO; LANES];
            derive_key_many(&context_key, &slices, &mut hashes);
            for (message, hash) in slices.iter().zip(&hashes) {
                assert_eq!(*hash, key.hash(message), "length {length}");
            }
        }
    }
}
