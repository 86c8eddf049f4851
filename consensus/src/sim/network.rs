//! The simulator's randomness and links: a seeded SplitMix64 generator (the one source of randomness of a run) and
//! a link model giving each message a latency, or loss, or a duplicate.

/// SplitMix64: small, fast, and the same sequence on every machine for a seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `low..=high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        debug_assert!(low <= high);
        low + self.next_u64() % (high - low + 1)
    }

    /// True with probability `per_million / 1e6`.
    pub fn chance(&mut self, per_million: u32) -> bool {
        (self.next_u64() % 1_000_000) < u64::from(per_million)
    }

    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }
}

/// How one link treats a message. Jitter wider than the gap between messages reorders them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkModel {
    pub latency_ms_min: u64,
    pub latency_ms_max: u64,
    /// Per-million chance a message is lost.
    pub loss_ppm: u32,
    /// Per-million chance a message is delivered twice.
    pub duplicate_ppm: u32,
}

impl LinkModel {
    pub fn fixed(latency_ms: u64) -> LinkModel {
        LinkModel {
            latency_ms_min: latency_ms,
            latency_ms_max: latency_ms,
            loss_ppm: 0,
            duplicate_ppm: 0,
        }
    }

    /// The delivery delays of one message: none (lost), one, or two (duplicated).
    pub fn deliveries(&self, rng: &mut Rng) -> Vec<u64> {
        if rng.chance(self.loss_ppm) {
            return Vec::new();
        }
        let mut delays = vec![rng.range(self.latency_ms_min, self.latency_ms_max)];
        if rng.chance(self.duplicate_ppm) {
            delays.push(rng.range(self.latency_ms_min, self.latency_ms_max));
        }
        delays
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert!((0..100).all(|_| a.next_u64() == b.next_u64()));
        assert_ne!(Rng::new(7).next_u64(), Rng::new(8).next_u64());
    }

    #[test]
    fn loss_and_duplication_follow_their_rates() {
        let mut rng = Rng::new(1);
        let link = LinkModel {
            latency_ms_min: 1,
            latency_ms_max: 9,
            loss_ppm: 100_000,
            duplicate_ppm: 100_000,
        };
        let counts: Vec<usize> = (0..10_000)
            .map(|_| link.deliveries(&mut rng).len())
            .collect();
        let lost = counts.iter().filter(|c| **c == 0).count();
        let doubled = counts.iter().filter(|c| **c == 2).count();
        assert!((800..1200).contains(&lost), "{lost}");
        assert!((700..1100).contains(&doubled), "{doubled}");
    }
}
