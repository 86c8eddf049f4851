//! ed25519 keys and signatures, and batch verification that reports exactly which entries are bad.
//!
//! Verification is **cofactored** (the ZIP-215 rules) in both the single and the batched check, so whether a
//! signature is accepted never depends on which batch it landed in: every node, whatever its shard count or batch
//! boundaries, reaches the same verdict. (ed25519-dalek's own `verify` is cofactorless and its `verify_batch` has
//! no cofactor either, so a crafted signature with a small-order component in R could pass in one batch and fail
//! in another; that would split a ledger.) Signing uses ed25519-dalek; the equations use curve25519-dalek.
//! Batch weights are derived from a blake3 hash of the whole batch, so this stays pure and deterministic.

use core::fmt;

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::Signer;
use rkyv::{Archive, Deserialize, Serialize};
use sha2::{Digest, Sha512};

use crate::id::domain;

/// Entries per batch equation. Measured by `cargo bench -p cas-perf -- verify` (see perf/README.md): the per-entry
/// cost keeps falling until about 256 and flattens past 1,024, while a failing batch costs more to bisect the
/// larger it is.
pub const VERIFY_BATCH_SIZE: usize = 1024;

/// The smallest batch [`BatchSizer`] shrinks to while bad signatures keep turning up.
pub const VERIFY_BATCH_SIZE_MIN: usize = 8;

/// A failing range this small is checked entry by entry instead of being bisected further.
const BISECT_SINGLES_BELOW: usize = 8;

/// An ed25519 public key as its 32 compressed bytes (decompressed only when a signature is checked).
#[derive(
    Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default,
)]
#[rkyv(derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord))]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    pub fn from_hex(text: &str) -> Result<PublicKey, hex::FromHexError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes)?;
        Ok(PublicKey(bytes))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl From<&ArchivedPublicKey> for PublicKey {
    fn from(archived: &ArchivedPublicKey) -> PublicKey {
        PublicKey(archived.0)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pk:{}", &self.to_hex()[..16])
    }
}

impl fmt::Debug for ArchivedPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&PublicKey(self.0), f)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// An ed25519 signature: R (32 bytes) then s (32 bytes).
#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Clone, Copy, PartialEq, Eq))]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sig:{}", hex::encode(&self.0[..8]))
    }
}

impl fmt::Debug for ArchivedSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&Signature(self.0), f)
    }
}

/// A signing key. The engine never makes randomness: callers supply the 32-byte seed.
pub struct Keypair {
    signing: ed25519_dalek::SigningKey,
}

impl Keypair {
    pub fn from_seed(seed: &[u8; 32]) -> Keypair {
        Keypair {
            signing: ed25519_dalek::SigningKey::from_bytes(seed),
        }
    }

    /// The seed, for writing a key file.
    pub fn seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.signing.sign(message).to_bytes())
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({:?})", self.public())
    }
}

/// One signature to check.
#[derive(Clone, Copy, Debug)]
pub struct SigEntry<'a> {
    pub message: &'a [u8],
    pub key: &'a [u8; 32],
    pub signature: &'a [u8; 64],
}

/// Decompressed public keys kept per thread.
pub const KEY_CACHE_SLOTS: usize = 16_384;
/// Slots per set: a key can sit in any of the `KEY_CACHE_WAYS` slots of its set, so two hot keys that share a set
/// do not evict each other at every use (direct-mapped, 10,000 keys in 16,384 slots left about 45% of them
/// sharing a slot with another).
const KEY_CACHE_WAYS: usize = 4;
const KEY_CACHE_SETS: usize = KEY_CACHE_SLOTS / KEY_CACHE_WAYS;
const _: () = assert!(KEY_CACHE_SLOTS.is_multiple_of(KEY_CACHE_WAYS));

/// A cache slot: the compressed key and its point.
type KeySlot = Option<([u8; 32], EdwardsPoint)>;

thread_local! {
    static KEY_CACHE: std::cell::RefCell<Vec<KeySlot>> = std::cell::RefCell::new(vec![None; KEY_CACHE_SLOTS]);
}

/// A public key as a curve point, from this thread's cache when the key signed here before (an account's next
/// transfer, a member's next vote): a decompression is about a quarter of a batched verification. The set is
/// chosen by the key's first bytes and each way checked against all 32, so a collision (even a crafted one) only
/// costs a miss. A hit moves its key one way forward, a miss fills an empty way or else replaces the last: keys
/// used often stay, one-off keys pass through the back. The cache is bounded (about 3 MiB per verifying thread) and never changes a
/// verdict, since decompression is a pure function of the bytes. Keys that do not decompress are not kept.
fn decompress_key(bytes: &[u8; 32]) -> Option<EdwardsPoint> {
    let set = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize % KEY_CACHE_SETS;
    KEY_CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        let ways = &mut cache[set * KEY_CACHE_WAYS..(set + 1) * KEY_CACHE_WAYS];
        let hit = ways
            .iter()
            .position(|slot| matches!(slot, Some((key, _)) if key == bytes));
        if let Some(way) = hit {
            let point = ways[way].as_ref().expect("a hit is a filled slot").1;
            if way > 0 {
                ways.swap(way, way - 1);
            }
            return Some(point);
        }
        let point = CompressedEdwardsY(*bytes).decompress()?;
        let victim = ways
            .iter()
            .position(Option::is_none)
            .unwrap_or(KEY_CACHE_WAYS - 1);
        ways[victim] = Some((*bytes, point));
        Some(point)
    })
}

/// A signature parsed for the verification equation.
struct Parsed {
    r_bytes: [u8; 32],
    r: EdwardsPoint,
    a: EdwardsPoint,
    s: Scalar,
    /// H(R || A || M) reduced mod l.
    k: Scalar,
}

/// The signature's R, compressed.
fn r_of(entry: &SigEntry<'_>) -> CompressedEdwardsY {
    CompressedEdwardsY(entry.signature[..32].try_into().expect("32 of 64 bytes"))
}

/// Parses `entry` whose R decompressed to `r` (None: R is not a curve point, so the entry does not parse).
fn parse(entry: &SigEntry<'_>, r: Option<EdwardsPoint>) -> Option<Parsed> {
    let (r_bytes, s_bytes) = entry.signature.split_at(32);
    let r_bytes: [u8; 32] = r_bytes.try_into().ok()?;
    let s: Option<Scalar> = Scalar::from_canonical_bytes(s_bytes.try_into().ok()?).into();
    let r = r?;
    let a = decompress_key(entry.key)?;
    let mut hasher = Sha512::new();
    hasher.update(r_bytes);
    hasher.update(entry.key);
    hasher.update(entry.message);
    let k = Scalar::from_bytes_mod_order_wide(&hasher.finalize().into());
    Some(Parsed {
        r_bytes,
        r,
        a,
        s: s?,
        k,
    })
}

/// The cofactored single equation: [8]([s]B - [k]A - R) = 0.
fn equation_holds(parsed: &Parsed) -> bool {
    let r_expected =
        EdwardsPoint::vartime_double_scalar_mul_basepoint(&parsed.k, &-parsed.a, &parsed.s);
    (r_expected - parsed.r).mul_by_cofactor().is_identity()
}

/// The cofactored batch equation over `members` with weights z:
/// [8]( -(sum z_i s_i) B + sum z_i R_i + sum (z_i k_i) A_i ) = 0.
fn batch_equation_holds(parsed: &[Parsed], weights: &[Scalar], members: &[usize]) -> bool {
    let basepoint_coefficient: Scalar = members.iter().map(|&i| weights[i] * parsed[i].s).sum();
    let scalars = core::iter::once(-basepoint_coefficient)
        .chain(members.iter().map(|&i| weights[i]))
        .chain(members.iter().map(|&i| weights[i] * parsed[i].k));
    let points = core::iter::once(curve25519_dalek::constants::ED25519_BASEPOINT_POINT)
        .chain(members.iter().map(|&i| parsed[i].r))
        .chain(members.iter().map(|&i| parsed[i].a));
    EdwardsPoint::vartime_multiscalar_mul(scalars, points)
        .mul_by_cofactor()
        .is_identity()
}

/// Verifies one signature with the same (cofactored) rule as the batch.
pub fn verify_one(entry: &SigEntry<'_>) -> bool {
    parse(entry, r_of(entry).decompress()).is_some_and(|parsed| equation_holds(&parsed))
}

/// Verifies `entries` and returns the indices of the bad ones, ascending. Empty means all are good.
///
/// Entries are checked in batches of at most [`VERIFY_BATCH_SIZE`]. A failing batch is bisected: when the left
/// half of a failing range passes, the right half must fail and is split without being checked. Work is bounded:
/// once the bisection of a batch has spent twice its length in entry-checks, the remaining suspects are checked one
/// by one, so even a batch of nothing but bad signatures costs under twice a one-by-one check. Batches are sized
/// by a fresh [`BatchSizer`]: full until bad signatures turn up, smaller while they do. None of this changes a
/// verdict (see the module doc).
///
/// It runs from a fixed place within a stack page ([`VERIFY_STACK_OFFSET`]), which only its speed depends on.
pub fn verify_batch(entries: &[SigEntry<'_>]) -> Vec<usize> {
    verify_batch_sized(entries, &mut BatchSizer::new())
}

/// [`verify_batch`] with batches sized by `sizer`, which learns from them: for a verifier that checks one stream
/// of signatures in many calls (a node's admission), so what the last calls found sizes the next call's batches.
pub fn verify_batch_sized(entries: &[SigEntry<'_>], sizer: &mut BatchSizer) -> Vec<usize> {
    at_stack_offset(VERIFY_STACK_OFFSET, 4096 / 64, || {
        verify_batches(entries, sizer)
    })
}

/// Sizes verification batches from the share of bad signatures seen lately.
///
/// A clean batch of n costs n entry-checks and a fixed part (the weights, the multiscalar set-up: about
/// [`BATCH_FIXED_COST_ENTRIES`] entry-checks); a failing one costs about n more per bad entry, for the bisection.
/// At a bad share p the cost per entry beyond the equation itself is about fixed / n + p x n, least at
/// n = sqrt(fixed / p). The share is counted over the last few thousand signatures (a half-life of
/// [`BAD_SHARE_HALF_LIFE`] entries), so a burst of spam shrinks batches and they grow back once it stops. Only
/// entries that failed the equation count: one that does not even parse costs no bisection. Speed only: no verdict
/// depends on the size.
#[derive(Clone, Debug, Default)]
pub struct BatchSizer {
    /// Entries checked and bad ones among them, both decayed by their age in entries.
    checked: f64,
    bad: f64,
    /// Batches recorded so far.
    batches: u64,
}

/// A batch's fixed cost in entry-checks. With the AVX-512 IFMA backend a signature costs 13.4 µs in a batch of 16,
/// 10.7 at 64, 9.4 at 96, 8.8 at 128 and 6.6 at 1,024 (`cargo bench -p cas-perf --bench micro -- verify`, Pippenger
/// from 48 signatures: vendor/curve25519-dalek/CAS-PATCH.md), a fixed part of some 40 entries above 48 and 17 below.
/// A stream with one bad signature in 300, checked in batches of 27 to 256, was cheapest at 80 (bad s, every one
/// failing the equation) to 128 (bad R, some not even parsing): 20 sizes it at about 77 for a bad share of 1/300
/// and 110 for 1/600, 4-10% cheaper than the 27 of the 2.5 fitted on the AVX2 backend's flatter curve.
const BATCH_FIXED_COST_ENTRIES: f64 = 20.0;

/// Entries after which a bad one seen counts half as much.
const BAD_SHARE_HALF_LIFE: f64 = 4096.0;

impl BatchSizer {
    pub const fn new() -> BatchSizer {
        BatchSizer {
            checked: 0.0,
            bad: 0.0,
            batches: 0,
        }
    }

    /// How many batches it sized and saw checked.
    pub fn batches(&self) -> u64 {
        self.batches
    }

    /// The size of the next batch.
    pub fn size(&self) -> usize {
        if self.bad <= 0.0 {
            return VERIFY_BATCH_SIZE;
        }
        let share = self.bad / self.checked;
        let best = (BATCH_FIXED_COST_ENTRIES / share).sqrt();
        (best as usize).clamp(VERIFY_BATCH_SIZE_MIN, VERIFY_BATCH_SIZE)
    }

    /// A batch of `checked` entries had `bad` that failed the equation.
    pub fn record(&mut self, checked: usize, bad: usize) {
        let decay = 0.5f64.powf(checked as f64 / BAD_SHARE_HALF_LIFE);
        self.checked = self.checked * decay + checked as f64;
        self.bad = self.bad * decay + bad as f64;
        self.batches += 1;
    }
}

/// Where in its 4 KiB page the frame that starts a verification lies. The batched verification's speed depends on
/// it by up to a quarter: stack temporaries of the multiscalar multiplication whose addresses share their low 12
/// bits with the heap data it loads stall those loads (4K aliasing). Measured on the 2-vCPU AMD EPYC development
/// VM, single-threaded over the offsets (11.4 µs per signature from 256 to 3,072, 12.6 to 13.1 µs from 3,328 to
/// 128) and in the shards pipeline (the same plateau); 1,536 is the middle of the good range there, and another
/// CPU may have its slow range elsewhere. Which offset a thread happens to run at otherwise depends on its call
/// depth, so the same build could be fast on one thread and slow on another. Speed only: no verdict depends on it.
const VERIFY_STACK_OFFSET: usize = 1536;

/// Runs `f` from a frame that starts at most 128 bytes above `offset` within its 4 KiB page: each level of the
/// recursion descends one frame (about 110 bytes in a release build) until the stack pointer is there. At most
/// `levels_left` levels: where frames are larger than the window (an unoptimised build), it may give up and run `f`
/// where it stands.
#[inline(never)]
fn at_stack_offset<R>(offset: usize, levels_left: usize, f: impl FnOnce() -> R) -> R {
    let marker = 0u8;
    let here = core::hint::black_box(&marker) as *const u8 as usize;
    if levels_left == 0 || here.wrapping_sub(offset) % 4096 < 128 {
        return f();
    }
    // Live across the call, so the call cannot reuse this frame.
    let pad = [0u8; 64];
    core::hint::black_box(&pad);
    let result = at_stack_offset(offset, levels_left - 1, f);
    core::hint::black_box(&pad);
    result
}

/// [`verify_batch_sized`] wherever the stack stands.
fn verify_batches(entries: &[SigEntry<'_>], sizer: &mut BatchSizer) -> Vec<usize> {
    let mut bad = Vec::new();
    let mut start = 0;
    while start < entries.len() {
        let end = entries.len().min(start + sizer.size());
        let failed = verify_chunk(&entries[start..end], &mut |index| bad.push(start + index));
        sizer.record(end - start, failed);
        start = end;
    }
    debug_assert!(bad.windows(2).all(|pair| pair[0] < pair[1]));
    bad
}

/// Verifies one batch, reporting its bad entries in order; returns how many failed the equation (those that do
/// not parse are reported too, but cost no bisection).
fn verify_chunk(entries: &[SigEntry<'_>], report_bad: &mut dyn FnMut(usize)) -> usize {
    debug_assert!(entries.len() <= VERIFY_BATCH_SIZE);
    // Entries that do not even parse (non-canonical s, a point off the curve) are bad without any equation. The
    // R points decompress together: eight side by side where the CPU allows (vendor/curve25519-dalek/CAS-PATCH.md).
    let rs: Vec<CompressedEdwardsY> = entries.iter().map(r_of).collect();
    let r_points = CompressedEdwardsY::decompress_many(&rs);
    let mut parsed = Vec::with_capacity(entries.len());
    let mut members = Vec::with_capacity(entries.len());
    let mut unparsable = Vec::new();
    for ((index, entry), r) in entries.iter().enumerate().zip(r_points) {
        match parse(entry, r) {
            Some(p) => {
                members.push(index);
                parsed.push(p);
            }
            None => unparsable.push(index),
        }
    }
    let weights = batch_weights(&parsed);
    let all: Vec<usize> = (0..parsed.len()).collect();
    let mut bad = Vec::new();
    if !all.is_empty() && !batch_equation_holds(&parsed, &weights, &all) {
        let mut bisection = Bisection {
            parsed: &parsed,
            weights: &weights,
            budget: 2 * parsed.len(),
            bad: Vec::new(),
        };
        bisection.split(&all);
        bad = bisection.bad;
    }
    let failed = bad.len();
    let mut bad: Vec<usize> = bad.iter().map(|&p| members[p]).chain(unparsable).collect();
    bad.sort_unstable();
    bad.into_iter().for_each(report_bad);
    failed
}

/// 128-bit weights from a blake3 hash of every (k, s, R) in the batch: a signer cannot pick its signature after
/// seeing its weight, which is what makes the random linear combination sound, and no RNG is needed.
fn batch_weights(parsed: &[Parsed]) -> Vec<Scalar> {
    let mut hasher = blake3::Hasher::new_derive_key(domain::BATCH_WEIGHTS);
    for p in parsed {
        hasher.update(p.k.as_bytes());
        hasher.update(p.s.as_bytes());
        hasher.update(&p.r_bytes);
    }
    let mut reader = hasher.finalize_xof();
    parsed
        .iter()
        .map(|_| {
            let mut bytes = [0u8; 32];
            reader.fill(&mut bytes[..16]);
            Scalar::from_bytes_mod_order(bytes)
        })
        .collect()
}

struct Bisection<'a> {
    parsed: &'a [Parsed],
    weights: &'a [Scalar],
    /// Batched entry-checks the bisection may still spend before falling back to one-by-one checks.
    budget: usize,
    bad: Vec<usize>,
}

impl Bisection<'_> {
    /// Finds the bad members of a range known to fail.
    fn split(&mut self, members: &[usize]) {
        debug_assert!(!members.is_empty());
        if members.len() < BISECT_SINGLES_BELOW || self.budget < members.len() {
            self.one_by_one(members);
            return;
        }
        let (left, right) = members.split_at(members.len() / 2);
        let left_clean = self.check(left);
        if left_clean {
            // The whole range fails and the left half is clean: the culprits are on the right.
            self.split(right);
        } else {
            self.check(right);
        }
    }

    /// Finds the bad members of a range not yet checked; returns whether it was clean.
    fn check(&mut self, members: &[usize]) -> bool {
        if members.len() < BISECT_SINGLES_BELOW || self.budget < members.len() {
            let bad_before = self.bad.len();
            self.one_by_one(members);
            return self.bad.len() == bad_before;
        }
        self.budget -= members.len();
        if batch_equation_holds(self.parsed, self.weights, members) {
            return true;
        }
        self.split(members);
        false
    }

    fn one_by_one(&mut self, members: &[usize]) {
        for &member in members {
            if !equation_holds(&self.parsed[member]) {
                self.bad.push(member);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(count: usize) -> (Vec<Keypair>, Vec<Vec<u8>>, Vec<Signature>) {
        let keys: Vec<Keypair> = (0..count)
            .map(|i| Keypair::from_seed(&[(i % 251) as u8 + 1; 32]))
            .collect();
        let messages: Vec<Vec<u8>> = (0..count)
            .map(|i| format!("message {i}").into_bytes())
            .collect();
        let signatures = keys.iter().zip(&messages).map(|(k, m)| k.sign(m)).collect();
        (keys, messages, signatures)
    }

    fn entries<'a>(
        publics: &'a [[u8; 32]],
        messages: &'a [Vec<u8>],
        sigs: &'a [Signature],
    ) -> Vec<SigEntry<'a>> {
        (0..publics.len())
            .map(|i| SigEntry {
                message: &messages[i],
                key: &publics[i],
                signature: &sigs[i].0,
            })
            .collect()
    }

    /// What one-by-one decompression gives, as comparable bytes.
    fn decompressed(points: &[Option<EdwardsPoint>]) -> Vec<Option<[u8; 32]>> {
        points.iter().map(|p| p.map(|p| p.compress().0)).collect()
    }

    /// The batched decompression the verifier uses gives what `decompress` gives one by one, on curve points, the
    /// edge cases and arbitrary bytes (about half of which are no point), in runs of every length around the
    /// eight it works in (on a CPU without AVX-512 IFMA this checks the one-by-one fallback).
    #[test]
    fn batched_decompression_matches_one_by_one() {
        use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
        let mut inputs: Vec<CompressedEdwardsY> = (1..=40u64)
            .map(|i| (ED25519_BASEPOINT_POINT * Scalar::from(i * 7_919)).compress())
            .collect();
        let (_, _, signatures) = signed(24);
        inputs.extend(
            signatures
                .iter()
                .map(|s| CompressedEdwardsY(s.0[..32].try_into().unwrap())),
        );
        let mut edge = Vec::new();
        for low in [0u8, 1, 0xec, 0xed, 0xee, 0xff] {
            for high in [0u8, 0x7f, 0x80, 0xff] {
                let mut bytes = [if low >= 0xec { 0xff } else { 0 }; 32];
                bytes[0] = low;
                bytes[31] = if low >= 0xec { high | 0x7f } else { high };
                edge.push(CompressedEdwardsY(bytes));
            }
        }
        inputs.extend(edge);
        let one_by_one: Vec<Option<EdwardsPoint>> = inputs.iter().map(|c| c.decompress()).collect();
        assert!(one_by_one.iter().any(Option::is_none) && one_by_one.iter().any(Option::is_some));
        for start in 0..9 {
            for len in [0, 1, 7, 8, 9, 15, 16, 17, 33] {
                let end = (start + len).min(inputs.len());
                assert_eq!(
                    decompressed(&CompressedEdwardsY::decompress_many(&inputs[start..end])),
                    decompressed(&one_by_one[start..end]),
                    "inputs {start}..{end}"
                );
            }
        }
        let all = CompressedEdwardsY::decompress_many(&inputs);
        for (many, one) in all.iter().zip(&one_by_one) {
            if let (Some(many), Some(one)) = (many, one) {
                // The same point, and the same point after an addition (which reads the extended coordinate T).
                assert!(
                    many == one && many + ED25519_BASEPOINT_POINT == one + ED25519_BASEPOINT_POINT
                );
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn batched_decompression_matches_on_arbitrary_bytes(
            inputs in proptest::collection::vec(proptest::array::uniform32(proptest::num::u8::ANY), 0..40)
        ) {
            let inputs: Vec<CompressedEdwardsY> = inputs.into_iter().map(CompressedEdwardsY).collect();
            let one_by_one: Vec<Option<EdwardsPoint>> = inputs.iter().map(|c| c.decompress()).collect();
            proptest::prop_assert_eq!(
                decompressed(&CompressedEdwardsY::decompress_many(&inputs)),
                decompressed(&one_by_one)
            );
        }
    }

    #[test]
    fn work_runs_near_the_asked_stack_offset_and_returns_its_result() {
        for offset in (0..4096).step_by(64) {
            let (value, at) = at_stack_offset(offset, 4096 / 64, || {
                let marker = 0u8;
                (
                    offset * 3,
                    core::hint::black_box(&marker) as *const u8 as usize,
                )
            });
            assert_eq!(value, offset * 3);
            // The closure's frame lies just below the frame that stopped descending.
            let below = (offset + 128).wrapping_sub(at) % 4096;
            if cfg!(not(debug_assertions)) {
                assert!(
                    below < 1024,
                    "offset {offset}: closure {below} bytes below the window"
                );
            }
        }
    }

    #[test]
    fn good_signatures_pass_single_and_batched() {
        let (keys, messages, sigs) = signed(40);
        let publics: Vec<[u8; 32]> = keys.iter().map(|k| k.public().0).collect();
        let batch = entries(&publics, &messages, &sigs);
        assert!(batch.iter().all(verify_one));
        assert!(verify_batch(&batch).is_empty());
    }

    #[test]
    fn bad_entries_are_found_exactly() {
        let (keys, messages, mut sigs) = signed(100);
        let mut publics: Vec<[u8; 32]> = keys.iter().map(|k| k.public().0).collect();
        sigs[3].0[5] ^= 1; // corrupt R
        sigs[50].0[40] ^= 1; // corrupt s
        sigs[99] = sigs[98]; // a valid signature of another message
        publics[7] = [0xff; 32]; // not a curve point
        let mut tampered = messages.clone();
        tampered[64] = b"other message".to_vec();
        assert_eq!(
            verify_batch(&entries(&publics, &tampered, &sigs)),
            vec![3, 7, 50, 64, 99]
        );
    }

    #[test]
    fn all_bad_is_reported_entirely() {
        let (keys, messages, mut sigs) = signed(64);
        let publics: Vec<[u8; 32]> = keys.iter().map(|k| k.public().0).collect();
        for sig in &mut sigs {
            sig.0[0] ^= 0x80;
        }
        assert_eq!(
            verify_batch(&entries(&publics, &messages, &sigs)),
            (0..64).collect::<Vec<_>>()
        );
    }

    /// Scattered bad entries over several adaptive batches are found exactly, whatever their density.
    #[test]
    fn adaptive_batches_find_exactly_the_bad_entries() {
        let (keys, messages, signatures) = signed(3000);
        let publics: Vec<[u8; 32]> = keys.iter().map(|k| k.public().0).collect();
        for stride in [7usize, 97, 331, 2999] {
            let mut sigs = signatures.clone();
            let expected: Vec<usize> = (stride / 2..3000).step_by(stride).collect();
            for &i in &expected {
                sigs[i].0[33] ^= 4;
            }
            assert_eq!(
                verify_batch(&entries(&publics, &messages, &sigs)),
                expected,
                "stride {stride}"
            );
        }
    }

    /// Batches stay full while every signature is good, shrink toward sqrt(fixed / share) while bad ones keep
    /// turning up at a steady share, and grow back once they stop.
    #[test]
    fn batch_sizes_follow_the_share_of_bad_signatures() {
        let mut sizer = BatchSizer::new();
        assert_eq!(sizer.size(), VERIFY_BATCH_SIZE);
        for _ in 0..100 {
            sizer.record(1000, 0);
        }
        assert_eq!(sizer.size(), VERIFY_BATCH_SIZE);
        // One bad in 300, seen in batches of 30: the best size is sqrt(20 x 300), about 77.
        for batch in 0..2000 {
            sizer.record(30, usize::from(batch % 10 == 0));
        }
        let steady = sizer.size();
        assert!((60..=95).contains(&steady), "steady size {steady}");
        // Every signature bad (for some 2,400 entries, once the share passes a quarter): the smallest batch.
        for _ in 0..300 {
            sizer.record(8, 8);
        }
        assert_eq!(sizer.size(), VERIFY_BATCH_SIZE_MIN);
        // A long clean stream after it: back to full batches.
        let mut clean = 0;
        while sizer.size() < VERIFY_BATCH_SIZE {
            let size = sizer.size();
            sizer.record(size, 0);
            clean += size;
            assert!(clean < 200_000, "batches never grew back");
        }
    }

    /// One sizer carried over many calls, through a stretch of dense bad signatures and back to clean ones: every
    /// call's verdicts stay exact.
    #[test]
    fn a_sizer_carried_across_calls_keeps_every_verdict() {
        let (keys, messages, signatures) = signed(1200);
        let publics: Vec<[u8; 32]> = keys.iter().map(|k| k.public().0).collect();
        let mut sigs = signatures.clone();
        let bad: Vec<usize> = (0..1200)
            .filter(|i| (300..700).contains(i) && i % 9 == 0)
            .collect();
        for &i in &bad {
            sigs[i].0[33] ^= 4;
        }
        let all = entries(&publics, &messages, &sigs);
        let mut sizer = BatchSizer::new();
        for (index, chunk) in all.chunks(150).enumerate() {
            let start = index * 150;
            let expected: Vec<usize> = bad
                .iter()
                .filter(|&&i| (start..start + chunk.len()).contains(&i))
                .map(|&i| i - start)
                .collect();
            assert_eq!(
                verify_batch_sized(chunk, &mut sizer),
                expected,
                "call {index}"
            );
        }
        // Through the dense stretch the calls split into small batches, and the sizer counted every one.
        assert!(sizer.batches() > 2 * 8, "{} batches", sizer.batches());
    }

    #[test]
    fn agrees_with_ed25519_dalek_on_honest_signatures() {
        let (keys, messages, sigs) = signed(8);
        for i in 0..8 {
            let vk = ed25519_dalek::VerifyingKey::from_bytes(&keys[i].public().0).unwrap();
            let sig = ed25519_dalek::Signature::from_bytes(&sigs[i].0);
            assert!(vk.verify_strict(&messages[i], &sig).is_ok());
            let public = keys[i].public().0;
            assert!(verify_one(&SigEntry {
                message: &messages[i],
                key: &public,
                signature: &sigs[i].0
            }));
        }
    }

    /// The key cache never changes a verdict: a key that shares a cached key's slot (same first bytes) is its own
    /// key, and a repeated key verifies as it did the first time.
    #[test]
    fn cached_keys_keep_every_verdict() {
        let (keys, messages, sigs) = signed(2);
        let first = keys[0].public().0;
        let mut colliding = keys[1].public().0;
        colliding[..8].copy_from_slice(&first[..8]);
        let check = |key: &[u8; 32], i: usize| {
            verify_one(&SigEntry {
                message: &messages[i],
                key,
                signature: &sigs[i].0,
            })
        };
        assert!(check(&first, 0));
        assert!(!check(&colliding, 0), "a signature under another key");
        assert!(!check(&colliding, 1), "the colliding bytes are not key 1");
        assert!(check(&first, 0), "evicted or not, key 0 still verifies");
        assert!(!check(&first, 1));
        let second = keys[1].public().0;
        assert!(check(&second, 1));
        assert!(
            verify_batch(&[
                SigEntry {
                    message: &messages[0],
                    key: &first,
                    signature: &sigs[0].0
                },
                SigEntry {
                    message: &messages[1],
                    key: &second,
                    signature: &sigs[1].0
                },
                SigEntry {
                    message: &messages[1],
                    key: &colliding,
                    signature: &sigs[1].0
                },
            ]) == vec![2]
        );
    }

    /// A signature whose R carries a small-order component is accepted by the cofactored rule, alone and in any
    /// batch, so nodes with different batch boundaries agree on it.
    #[test]
    fn small_order_component_gets_the_same_verdict_in_every_batch() {
        let (keys, messages, sigs) = signed(32);
        let publics: Vec<[u8; 32]> = keys.iter().map(|k| k.public().0).collect();
        // A point of order 2: (0, -1). Adding it to R and recomputing s keeps the cofactored equation true.
        let torsion = CompressedEdwardsY({
            let mut y = [0u8; 32];
            y[0] = 0xec;
            y[1..31].fill(0xff);
            y[31] = 0x7f;
            y
        })
        .decompress()
        .unwrap();
        assert!(torsion.is_small_order());
        let seed = [9u8; 32];
        // The secret scalar as ed25519 derives it: the clamped low half of SHA-512(seed).
        let mut clamped: [u8; 32] = Sha512::digest(seed)[..32].try_into().unwrap();
        clamped[0] &= 248;
        clamped[31] &= 127;
        clamped[31] |= 64;
        let secret = Scalar::from_bytes_mod_order(clamped);
        let public = Keypair::from_seed(&seed).public();
        let message = b"crafted".to_vec();
        let nonce = Scalar::from_bytes_mod_order([42u8; 32]);
        let r = EdwardsPoint::mul_base(&nonce) + torsion;
        let r_bytes = r.compress().to_bytes();
        let mut hasher = Sha512::new();
        hasher.update(r_bytes);
        hasher.update(public.0);
        hasher.update(&message);
        let k = Scalar::from_bytes_mod_order_wide(&hasher.finalize().into());
        let s = nonce + k * secret;
        let mut crafted = [0u8; 64];
        crafted[..32].copy_from_slice(&r_bytes);
        crafted[32..].copy_from_slice(s.as_bytes());
        let entry = SigEntry {
            message: &message,
            key: &public.0,
            signature: &crafted,
        };
        assert!(verify_one(&entry));
        for split in [1usize, 5, 17, 31] {
            let mut batch = entries(&publics[..split], &messages[..split], &sigs[..split]);
            batch.push(entry);
            assert!(
                verify_batch(&batch).is_empty(),
                "verdict changed with batch of {}",
                batch.len()
            );
        }
    }
}
