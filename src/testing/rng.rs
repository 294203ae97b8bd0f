//! [`Rng`]: the one pseudo-random generator of lunsnap's tests (SplitMix64).

use alloc::vec::Vec;

/// SplitMix64 (Steele, Lea and Flood, 2014): a tiny, fast, seedable generator,
/// good enough to pick operations, offsets, data patterns and crash outcomes, and
/// replayable from its seed. Not for anything that needs unpredictability.
///
/// ```
/// use lunsnap::testing::Rng;
///
/// let mut a = Rng::new(7);
/// let mut b = Rng::new(7);
/// assert_eq!(a.next_u64(), b.next_u64()); // the same seed, the same sequence
/// assert!(a.below(10) < 10);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose sequence is determined by `seed` (any value, 0 included).
    pub const fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// A value in `0..n`; 0 when `n` is 0. The modulo bias (below 2^-40 for `n`
    /// under 2^24) does not matter for tests.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = alloc::vec![0u8; len];
        self.fill(&mut v);
        v
    }
}

/// SplitMix64's finaliser: a bijective mix of the 64 bits of `z`, usable on its own
/// as a stateless hash of a counter (a pattern for block `n` is `mix(seed ^ n)`).
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_and_spreads() {
        let mut a = Rng::new(1);
        let first: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let mut b = Rng::new(1);
        assert_eq!(first, (0..4).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert_eq!(Rng::new(3).below(0), 0);
        let mut c = Rng::new(9);
        let mut seen = [0u32; 8];
        for _ in 0..8000 {
            seen[c.below(8) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
        let mut buf = [0u8; 13];
        c.fill(&mut buf);
        assert!(buf.iter().any(|&x| x != 0));
    }
}
