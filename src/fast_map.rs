//! [`FastMap`]: the hash map the crate uses for small integer keys (page addresses,
//! block numbers), with a fast unkeyed hasher. A utility below every layer.

use core::hash::{BuildHasherDefault, Hasher};

/// A hash map keyed by small integers (block addresses, LUN numbers), using [`FastHasher`].
pub(crate) type FastMap<K, V> = hashbrown::HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// A fast, non-cryptographic hasher for integer keys (FxHash-style accumulation with a
/// folded 128-bit multiply as finaliser so both the low bits (bucket index) and the high
/// bits (hashbrown's control byte) depend on every input bit).
///
/// It has no secret key, so it is not resistant to deliberately colliding keys; the maps
/// that use it are bounded in size, so colliding keys cost time, never memory or safety.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FastHasher {
    hash: u64,
}

impl FastHasher {
    const K: u64 = 0xf135_7aea_2e62_a9c5;

    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(Self::K);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn finish(&self) -> u64 {
        let m = u128::from(self.hash) * u128::from(0x9e37_79b9_7f4a_7c15_u64);
        (m as u64) ^ ((m >> 64) as u64)
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            // Mix in the length so that trailing zero bytes are not ignored.
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 56));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.add(i as u64);
        self.add((i >> 64) as u64);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::hash::BuildHasher;

    #[test]
    fn hasher_spreads_sequential_keys() {
        let s = BuildHasherDefault::<FastHasher>::default();
        let mut low = [0u32; 256];
        let mut high = [0u32; 128];
        for k in 0u64..(1 << 16) {
            let h = s.hash_one(k);
            low[(h & 0xFF) as usize] += 1;
            high[(h >> 57) as usize] += 1;
        }
        // 65536 keys over 256 / 128 buckets: expect ~256 / ~512 each.
        assert!(low.iter().all(|&c| (128..=384).contains(&c)), "{low:?}");
        assert!(high.iter().all(|&c| (256..=768).contains(&c)), "{high:?}");
        // bytes hashing distinguishes trailing zeros
        let mut a = FastHasher::default();
        a.write(&[1, 0]);
        let mut b = FastHasher::default();
        b.write(&[1]);
        assert_ne!(a.finish(), b.finish());
        let mut m: FastMap<u64, u32> = FastMap::default();
        m.insert(7, 1);
        assert_eq!(m.get(&7), Some(&1));
    }
}
