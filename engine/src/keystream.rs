//! The keystream that expands one UTXO element into its LtHash lanes: AES-256 in counter mode under a 32-byte key
//! (the element's blake3 hash), counter blocks 0, 1, 2, ... as little-endian 128-bit integers. Expanding a hashed
//! seed with AES-256-CTR is the construction the "90s" variants of Kyber and Dilithium use for their matrices; here
//! it replaces a 2 KiB blake3 XOF because AES rounds in VAES registers are cheaper, and their output is added to
//! the lanes straight from the registers: one element update measured 312 ns against 471 ns with the XOF (`cargo
//! bench -p cas-perf --bench micro -- utxo_commitment`, medians, 2-vCPU EPYC VM).
//!
//! Two implementations give the same bytes: four blocks per instruction with VAES (AVX-512) when the CPU has it, and
//! the `aes` crate otherwise (AES-NI, or its constant-time software fallback). A test checks they agree. The choice
//! changes speed only, never a commitment: nodes on different CPUs agree.

use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};

use crate::id::Hash32;

/// Bytes one element expands to.
pub const KEYSTREAM_BYTES: usize = 2048;
/// The keystream read as little-endian u16 lanes.
pub const KEYSTREAM_LANES: usize = KEYSTREAM_BYTES / 2;
const BLOCKS: usize = KEYSTREAM_BYTES / 16;

/// Adds (or subtracts) the keystream of `key`, read as little-endian u16 lanes, to `lanes` mod 2^16. With VAES the
/// keystream never touches memory: each register of it is added to its lanes as it comes out of the last round.
pub fn add_to_lanes(key: &[u8; 32], lanes: &mut [u16; KEYSTREAM_LANES], subtract: bool) {
    #[cfg(target_arch = "x86_64")]
    if vaes::available() {
        // SAFETY: the CPU has every feature `vaes::add_to_lanes` enables (checked just above).
        unsafe { vaes::add_to_lanes(key, lanes, subtract) };
        return;
    }
    portable_add(key, lanes, subtract);
}

/// [`add_to_lanes`] for each of `keys` in turn, all added or all subtracted. With VAES the AES-256 key schedules of
/// four keys run side by side in one register each round (a schedule is a chain of dependent steps, about a third
/// of one key's time alone), so a group of elements costs less per element than one at a time.
pub fn add_many_to_lanes(keys: &[Hash32], lanes: &mut [u16; KEYSTREAM_LANES], subtract: bool) {
    #[cfg(target_arch = "x86_64")]
    if vaes::available() {
        // SAFETY: the CPU has every feature `vaes::add_many_to_lanes` enables (checked just above).
        unsafe { vaes::add_many_to_lanes(keys, lanes, subtract) };
        return;
    }
    for key in keys {
        portable_add(&key.0, lanes, subtract);
    }
}

fn portable_add(key: &[u8; 32], lanes: &mut [u16; KEYSTREAM_LANES], subtract: bool) {
    let mut bytes = [0u8; KEYSTREAM_BYTES];
    portable(key, &mut bytes);
    let stream = bytes
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]));
    if subtract {
        lanes
            .iter_mut()
            .zip(stream)
            .for_each(|(lane, e)| *lane = lane.wrapping_sub(e));
    } else {
        lanes
            .iter_mut()
            .zip(stream)
            .for_each(|(lane, e)| *lane = lane.wrapping_add(e));
    }
}

/// Fills `out` with the AES-256-CTR keystream of `key` from counter 0.
pub fn fill(key: &[u8; 32], out: &mut [u8; KEYSTREAM_BYTES]) {
    #[cfg(target_arch = "x86_64")]
    if vaes::available() {
        // SAFETY: the CPU has every feature `vaes::fill` enables (checked just above).
        unsafe { vaes::fill(key, out) };
        return;
    }
    portable(key, out);
}

/// The `aes` crate's path (AES-NI when present, else constant-time software).
fn portable(key: &[u8; 32], out: &mut [u8; KEYSTREAM_BYTES]) {
    let cipher = aes::Aes256::new(GenericArray::from_slice(key));
    for (counter, block) in out.chunks_exact_mut(16).enumerate() {
        block.copy_from_slice(&(counter as u128).to_le_bytes());
    }
    let blocks: &mut [GenericArray<u8, aes::cipher::consts::U16>] = {
        // SAFETY: GenericArray<u8, U16> is a [u8; 16] (same size, alignment 1), and `out` holds exactly BLOCKS of
        // them back to back.
        unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast(), BLOCKS) }
    };
    cipher.encrypt_blocks(blocks);
}

#[cfg(target_arch = "x86_64")]
mod vaes {
    use std::arch::x86_64::*;

    use super::{Hash32, BLOCKS, KEYSTREAM_BYTES, KEYSTREAM_LANES};

    pub fn available() -> bool {
        is_x86_feature_detected!("vaes")
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("aes")
    }

    /// AES-256's key schedule after its first two round keys (the key itself): round keys 2..=14 come in pairs, an
    /// even one from the odd before it with the step's round constant, then an odd one, the last alone.
    const SCHEDULE_STEPS: [(usize, u8); 7] = [
        (2, 0x01),
        (4, 0x02),
        (6, 0x04),
        (8, 0x08),
        (10, 0x10),
        (12, 0x20),
        (14, 0x40),
    ];

    /// The 15 round keys of AES-256 (FIPS-197 key expansion with AES-NI's assist instruction).
    #[target_feature(enable = "aes")]
    fn round_keys(key: &[u8; 32]) -> [__m128i; 15] {
        // w[i] = w[i-8] ^ f(w[i-1]): the shifted xors spread the previous key's words, `assist` supplies f.
        #[target_feature(enable = "sse2")]
        fn mix(previous: __m128i, assist: __m128i) -> __m128i {
            let mut k = previous;
            k = _mm_xor_si128(k, _mm_slli_si128(k, 4));
            k = _mm_xor_si128(k, _mm_slli_si128(k, 4));
            k = _mm_xor_si128(k, _mm_slli_si128(k, 4));
            _mm_xor_si128(k, assist)
        }
        let mut keys = [_mm_setzero_si128(); 15];
        // SAFETY: `key` is 32 readable bytes; unaligned loads.
        let (mut even, mut odd) = unsafe {
            (
                _mm_loadu_si128(key.as_ptr().cast()),
                _mm_loadu_si128(key.as_ptr().add(16).cast()),
            )
        };
        keys[0] = even;
        keys[1] = odd;
        for (pair, rcon) in SCHEDULE_STEPS {
            even = mix(even, _mm_shuffle_epi32(keygen_assist(odd, rcon), 0xff));
            keys[pair] = even;
            if pair + 1 < keys.len() {
                odd = mix(
                    odd,
                    _mm_shuffle_epi32(_mm_aeskeygenassist_si128(even, 0), 0xaa),
                );
                keys[pair + 1] = odd;
            }
        }
        keys
    }

    /// `_mm_aeskeygenassist_si128` with its round constant as a run-time value (the instruction takes an immediate).
    #[target_feature(enable = "aes")]
    fn keygen_assist(key: __m128i, rcon: u8) -> __m128i {
        match rcon {
            0x01 => _mm_aeskeygenassist_si128(key, 0x01),
            0x02 => _mm_aeskeygenassist_si128(key, 0x02),
            0x04 => _mm_aeskeygenassist_si128(key, 0x04),
            0x08 => _mm_aeskeygenassist_si128(key, 0x08),
            0x10 => _mm_aeskeygenassist_si128(key, 0x10),
            0x20 => _mm_aeskeygenassist_si128(key, 0x20),
            0x40 => _mm_aeskeygenassist_si128(key, 0x40),
            _ => unreachable!("AES-256 uses seven round constants"),
        }
    }

    /// 8 registers of 4 blocks in flight: enough independent rounds to hide the instruction's latency.
    const LANES: usize = 8;

    /// The round keys of four AES-256 keys at once, key j in 128-bit lane j of every register: the key schedule
    /// of [`round_keys`] with AES-NI's assist instruction (128 bits wide only) replaced by the usual equivalent,
    /// one `aesenclast` of the word to substitute copied into all four columns (ShiftRows then moves nothing)
    /// with the round constant as its round key; RotWord is a rotation of that word by 8 bits.
    #[target_feature(enable = "avx512f,avx512bw,vaes,aes")]
    fn round_keys_x4(keys: [&[u8; 32]; 4]) -> [__m512i; 15] {
        #[target_feature(enable = "avx512f,avx512bw")]
        fn mix(previous: __m512i, assist: __m512i) -> __m512i {
            let mut k = previous;
            k = _mm512_xor_si512(k, _mm512_bslli_epi128::<4>(k));
            k = _mm512_xor_si512(k, _mm512_bslli_epi128::<4>(k));
            k = _mm512_xor_si512(k, _mm512_bslli_epi128::<4>(k));
            _mm512_xor_si512(k, assist)
        }
        let (mut halves, mut odd_halves) = ([0u8; 64], [0u8; 64]);
        for (lane, key) in keys.iter().enumerate() {
            halves[lane * 16..][..16].copy_from_slice(&key[..16]);
            odd_halves[lane * 16..][..16].copy_from_slice(&key[16..]);
        }
        // SAFETY: 64 readable bytes each; unaligned loads.
        let (mut even, mut odd) = unsafe {
            (
                _mm512_loadu_si512(halves.as_ptr().cast()),
                _mm512_loadu_si512(odd_halves.as_ptr().cast()),
            )
        };
        let mut round = [_mm512_setzero_si512(); 15];
        round[0] = even;
        round[1] = odd;
        for (pair, rcon) in SCHEDULE_STEPS {
            // SubWord(RotWord(w3)) ^ rcon in every column.
            let rotated = _mm512_ror_epi32::<8>(_mm512_shuffle_epi32::<0xff>(odd));
            even = mix(
                even,
                _mm512_aesenclast_epi128(rotated, _mm512_set1_epi32(i32::from(rcon))),
            );
            round[pair] = even;
            if pair + 1 < round.len() {
                // SubWord(w3) in every column.
                let last = _mm512_shuffle_epi32::<0xff>(even);
                odd = mix(odd, _mm512_aesenclast_epi128(last, _mm512_setzero_si512()));
                round[pair + 1] = odd;
            }
        }
        round
    }

    /// The round keys of one key, each in all four lanes.
    #[target_feature(enable = "avx512f,aes")]
    fn broadcast_keys(key: &[u8; 32]) -> [__m512i; 15] {
        round_keys(key).map(|k| _mm512_broadcast_i32x4(k))
    }

    /// Lane `LANE`'s key of [`round_keys_x4`] in all four lanes.
    #[target_feature(enable = "avx512f")]
    fn broadcast_lane<const LANE: i32>(round: &[__m512i; 15]) -> [__m512i; 15] {
        round.map(|k| _mm512_shuffle_i32x4::<LANE>(k, k))
    }

    /// The keystream, one 64-byte register (four blocks) at a time with its byte offset, to `sink`.
    #[inline(always)]
    unsafe fn stream(key: &[u8; 32], sink: impl FnMut(usize, __m512i)) {
        // SAFETY: the caller's target features include every one used here.
        unsafe { stream_keyed(broadcast_keys(key), sink) }
    }

    /// The keystream under round keys given in every lane.
    #[inline(always)]
    unsafe fn stream_keyed(keys: [__m512i; 15], mut sink: impl FnMut(usize, __m512i)) {
        // SAFETY (whole body): the caller's target features include every one used here.
        unsafe {
            // Four consecutive little-endian 128-bit counters per register (high halves stay zero: 128 blocks).
            let mut counters = _mm512_set_epi64(0, 3, 0, 2, 0, 1, 0, 0);
            let step = _mm512_set_epi64(0, 4, 0, 4, 0, 4, 0, 4);
            for group in 0..BLOCKS / (4 * LANES) {
                let mut state = [_mm512_setzero_si512(); LANES];
                for lane in state.iter_mut() {
                    *lane = _mm512_xor_si512(counters, keys[0]);
                    counters = _mm512_add_epi64(counters, step);
                }
                for round_key in &keys[1..14] {
                    for lane in state.iter_mut() {
                        *lane = _mm512_aesenc_epi128(*lane, *round_key);
                    }
                }
                for (index, lane) in state.iter().enumerate() {
                    sink(
                        (group * LANES + index) * 64,
                        _mm512_aesenclast_epi128(*lane, keys[14]),
                    );
                }
            }
        }
    }

    /// # Safety
    /// The CPU must support VAES, AVX-512F/BW and AES-NI ([`available`]).
    #[target_feature(enable = "avx512f,avx512bw,vaes,aes")]
    pub unsafe fn fill(key: &[u8; 32], out: &mut [u8; KEYSTREAM_BYTES]) {
        // SAFETY: same features; offset + 64 <= KEYSTREAM_BYTES for every register of the stream.
        unsafe {
            stream(key, |offset, block| {
                _mm512_storeu_si512(out.as_mut_ptr().add(offset).cast(), block)
            })
        };
    }

    /// # Safety
    /// The CPU must support VAES, AVX-512F/BW and AES-NI ([`available`]).
    #[target_feature(enable = "avx512f,avx512bw,vaes,aes")]
    pub unsafe fn add_to_lanes(key: &[u8; 32], lanes: &mut [u16; KEYSTREAM_LANES], subtract: bool) {
        // SAFETY: same features.
        unsafe { add_keyed(broadcast_keys(key), lanes, subtract) };
    }

    /// # Safety
    /// The CPU must support VAES, AVX-512F/BW and AES-NI ([`available`]).
    #[target_feature(enable = "avx512f,avx512bw,vaes,aes")]
    pub unsafe fn add_many_to_lanes(
        keys: &[Hash32],
        lanes: &mut [u16; KEYSTREAM_LANES],
        subtract: bool,
    ) {
        let mut groups = keys.chunks_exact(4);
        for group in &mut groups {
            let round = round_keys_x4([&group[0].0, &group[1].0, &group[2].0, &group[3].0]);
            // SAFETY (each): same features.
            unsafe {
                add_keyed(broadcast_lane::<0x00>(&round), lanes, subtract);
                add_keyed(broadcast_lane::<0x55>(&round), lanes, subtract);
                add_keyed(broadcast_lane::<0xaa>(&round), lanes, subtract);
                add_keyed(broadcast_lane::<0xff>(&round), lanes, subtract);
            }
        }
        for key in groups.remainder() {
            // SAFETY: same features.
            unsafe { add_to_lanes(&key.0, lanes, subtract) };
        }
    }

    /// Adds (or subtracts) the keystream under round keys `keys` (each in every lane) to `lanes`.
    #[inline(always)]
    unsafe fn add_keyed(keys: [__m512i; 15], lanes: &mut [u16; KEYSTREAM_LANES], subtract: bool) {
        let base = lanes.as_mut_ptr().cast::<u8>();
        // SAFETY: the caller's features; a register's 64 bytes at `offset` are 32 lanes inside `lanes` (2,048
        // bytes), and x86 is little-endian, so byte order matches the portable path's u16::from_le_bytes.
        unsafe {
            stream_keyed(keys, |offset, block| {
                let at = base.add(offset).cast();
                let current = _mm512_loadu_si512(at);
                let next = if subtract {
                    _mm512_sub_epi16(current, block)
                } else {
                    _mm512_add_epi16(current, block)
                };
                _mm512_storeu_si512(at, next);
            })
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FIPS-197 appendix C.3: AES-256 of 00112233..ff under key 00010203..1f.
    #[test]
    fn the_block_cipher_is_aes_256() {
        let key: [u8; 32] = std::array::from_fn(|i| i as u8);
        let cipher = aes::Aes256::new(GenericArray::from_slice(&key));
        let mut block =
            GenericArray::clone_from_slice(&std::array::from_fn::<u8, 16, _>(|i| (i as u8) * 0x11));
        cipher.encrypt_block(&mut block);
        assert_eq!(hex::encode(block), "8ea2b7ca516745bfeafc49904b496089");
        // And the keystream's block 0 is that cipher on counter 0.
        let mut stream = [0u8; KEYSTREAM_BYTES];
        fill(&key, &mut stream);
        let mut zero = GenericArray::clone_from_slice(&[0u8; 16]);
        cipher.encrypt_block(&mut zero);
        assert_eq!(&stream[..16], zero.as_slice());
    }

    /// Many keys at once (groups of four with the side-by-side schedule, and a remainder) give the lanes that one
    /// key at a time gives, for every count around the group size and both directions.
    #[test]
    fn many_keys_at_once_add_what_one_at_a_time_adds() {
        let keys: Vec<Hash32> = (0..11u8)
            .map(|seed| {
                Hash32(std::array::from_fn(|i| {
                    seed.wrapping_mul(97) ^ (i as u8).wrapping_mul(13)
                }))
            })
            .collect();
        for count in 0..=keys.len() {
            for subtract in [false, true] {
                let start: [u16; KEYSTREAM_LANES] = std::array::from_fn(|i| i as u16 ^ 0x5a5a);
                let (mut one_by_one, mut many) = (start, start);
                keys[..count]
                    .iter()
                    .for_each(|key| portable_add(&key.0, &mut one_by_one, subtract));
                add_many_to_lanes(&keys[..count], &mut many, subtract);
                assert_eq!(one_by_one, many, "{count} keys, subtract {subtract}");
            }
        }
    }

    #[test]
    fn every_implementation_gives_the_same_bytes() {
        for seed in 0..64u8 {
            let key: [u8; 32] =
                std::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8 * 7));
            let mut reference = [0u8; KEYSTREAM_BYTES];
            portable(&key, &mut reference);
            let mut dispatched = [0u8; KEYSTREAM_BYTES];
            fill(&key, &mut dispatched);
            assert_eq!(reference, dispatched, "key {seed}");
            #[cfg(target_arch = "x86_64")]
            if vaes::available() {
                let mut wide = [0u8; KEYSTREAM_BYTES];
                // SAFETY: checked just above.
                unsafe { vaes::fill(&key, &mut wide) };
                assert_eq!(reference, wide, "key {seed}");
            }
            let start: [u16; KEYSTREAM_LANES] =
                std::array::from_fn(|i| (i as u16).wrapping_mul(seed as u16 + 3));
            for subtract in [false, true] {
                let (mut reference_lanes, mut lanes) = (start, start);
                portable_add(&key, &mut reference_lanes, subtract);
                add_to_lanes(&key, &mut lanes, subtract);
                assert_eq!(reference_lanes, lanes, "key {seed} subtract {subtract}");
            }
            // Counter blocks differ: no two 16-byte blocks of one stream repeat.
            let blocks: std::collections::HashSet<&[u8]> = reference.chunks_exact(16).collect();
            assert_eq!(blocks.len(), BLOCKS);
        }
    }
}
