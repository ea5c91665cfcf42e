//! A tiny seeded generator (splitmix64) for fault schedules: the same seed and connection
//! number always give the same faults. Not for secrets.

/// splitmix64, as in `ccs_proto::testing::SplitMix64` (copied: that module is a test harness
/// behind a feature, and the emulator is a library).
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator for connection `conn` of an emulator seeded with `seed`: distinct
    /// connections get unrelated streams.
    pub(crate) fn for_connection(seed: u64, conn: u64) -> Self {
        let mut mix = Self(seed ^ conn.wrapping_mul(0xD1B5_4A32_D192_ED03));
        Self(mix.next())
    }

    /// The next 64 random bits.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`0` when `n` is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    /// A number in `lo..=hi` (`lo` when `hi <= lo`).
    pub(crate) fn between(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below(hi - lo + 1)
    }

    /// `true` with probability `p` (`p <= 0` never, `p >= 1` always; NaN never).
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        if p.is_nan() || p <= 0.0 {
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        // 53 random bits as a float in [0, 1).
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        unit < p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_values() {
        let mut r = SplitMix64(0);
        assert_eq!(r.next(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn connections_differ_and_repeat() {
        let a = SplitMix64::for_connection(7, 1).next();
        let b = SplitMix64::for_connection(7, 2).next();
        assert_ne!(a, b);
        assert_eq!(a, SplitMix64::for_connection(7, 1).next());
    }

    #[test]
    fn ranges_hold() {
        let mut r = SplitMix64(3);
        for _ in 0..1000 {
            let v = r.between(1, 16);
            assert!((1..=16).contains(&v));
        }
        assert_eq!(r.below(0), 0);
        assert_eq!(r.between(5, 5), 5);
        assert!(!r.chance(0.0));
        assert!(r.chance(1.0));
        assert!(!r.chance(f64::NAN));
    }
}
