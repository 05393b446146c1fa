//! A Bloom filter of the fingerprints ever marked sprayed, so that the common attempt, whose
//! password is not sprayed, is told so without a lookup in the spray map.
//!
//! Invariant: no false negatives. A fingerprint hash is inserted before its spray mark can be
//! seen (the engine inserts while it holds the spray entry it marks, and when it loads a marked
//! entry), and bits are never cleared. So [`SprayFilter::may_contain`] answering `false` means the
//! fingerprint has never been marked sprayed by this engine, and `true` means "look it up".
//! Marks expire in the map but stay in the filter: an expired one only costs a lookup.
//!
//! Keys are keyed SipHash outputs (uniform), so two independent bit positions are taken from the
//! two halves of the hash. With 2^16 bits, a thousand sprayed passwords leave about one attempt
//! in a thousand to the lookup, ten thousand about one in fifteen.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bits in the filter (a power of two).
const BITS: usize = 1 << 16;

/// See the module docs.
pub(crate) struct SprayFilter {
    words: Box<[AtomicU64]>,
}

impl Default for SprayFilter {
    fn default() -> Self {
        SprayFilter {
            words: (0..BITS / 64).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl SprayFilter {
    /// The two bits of `h`: (word index, mask) each.
    fn bits(h: u64) -> [(usize, u64); 2] {
        let bit = |b: u64| {
            let b = b as usize & (BITS - 1);
            (b / 64, 1u64 << (b % 64))
        };
        [bit(h), bit(h >> 32)]
    }

    /// Adds the fingerprint hash `h`.
    pub(crate) fn insert(&self, h: u64) {
        for (w, m) in Self::bits(h) {
            self.words[w].fetch_or(m, Ordering::Relaxed);
        }
    }

    /// `false` when `h` was never inserted; `true` when it may have been.
    pub(crate) fn may_contain(&self, h: u64) -> bool {
        Self::bits(h)
            .iter()
            .all(|&(w, m)| self.words[w].load(Ordering::Relaxed) & m != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn what_was_inserted_is_always_found(hs in prop::collection::vec(any::<u64>(), 1..2_000)) {
            let f = SprayFilter::default();
            for &h in &hs {
                f.insert(h);
            }
            for &h in &hs {
                prop_assert!(f.may_contain(h));
            }
        }
    }

    #[test]
    fn an_empty_filter_contains_nothing_and_a_sparse_one_little() {
        let f = SprayFilter::default();
        assert!(!f.may_contain(0) && !f.may_contain(u64::MAX));
        // 1,000 pseudo-random members; a false positive rate near 0.1% on others.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..1_000 {
            f.insert(next());
        }
        let positives = (0..100_000).filter(|_| f.may_contain(next())).count();
        assert!(positives < 500, "{positives} of 100,000");
    }
}
