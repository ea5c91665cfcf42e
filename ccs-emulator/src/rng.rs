//! A tiny seeded generator (splitmix64) for fault schedules: the same seed and connection
//! number always give the same faults. Not for secrets.

pub(crate) use ccs_proto::rng::SplitMix64;

/// A generator for connection `conn` of an emulator seeded with `seed`: distinct connections
/// get unrelated streams.
pub(crate) fn for_connection(seed: u64, conn: u64) -> SplitMix64 {
    let mut mix = SplitMix64(seed ^ conn.wrapping_mul(0xD1B5_4A32_D192_ED03));
    SplitMix64(mix.next())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_differ_and_repeat() {
        let a = for_connection(7, 1).next();
        let b = for_connection(7, 2).next();
        assert_ne!(a, b);
        assert_eq!(a, for_connection(7, 1).next());
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
