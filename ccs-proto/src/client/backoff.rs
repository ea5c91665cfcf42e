//! Exponential backoff with optional full jitter, shared by the retry and reconnect policies.

use std::time::Duration;

use super::Jitter;
use crate::rng::SplitMix64;

/// The delay before attempt number `n + 1` after `n` consecutive failures:
/// `min(cap, base * factor^n)`, then, with [`Jitter::Full`], a uniform draw from
/// `0..=that` ("full jitter": spreads clients that failed together over the whole interval).
pub(super) fn delay(
    rng: &mut SplitMix64,
    base: Duration,
    factor: u32,
    cap: Duration,
    n: u32,
    jitter: Jitter,
) -> Duration {
    let grown = u128::from(factor)
        .checked_pow(n)
        .and_then(|m| base.as_nanos().checked_mul(m))
        .unwrap_or(u128::MAX);
    let limit = u64::try_from(grown.min(cap.as_nanos())).unwrap_or(u64::MAX);
    let nanos = match jitter {
        Jitter::None => limit,
        Jitter::Full => match limit.checked_add(1) {
            Some(n) => rng.below(n),
            None => rng.next(),
        },
    };
    Duration::from_nanos(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn grows_by_the_factor_up_to_the_cap() {
        let mut rng = SplitMix64(1);
        let d = |rng: &mut SplitMix64, n| delay(rng, S, 2, 10 * S, n, Jitter::None);
        assert_eq!(d(&mut rng, 0), S);
        assert_eq!(d(&mut rng, 1), 2 * S);
        assert_eq!(d(&mut rng, 3), 8 * S);
        assert_eq!(d(&mut rng, 4), 10 * S);
        assert_eq!(d(&mut rng, u32::MAX), 10 * S);
        assert_eq!(delay(&mut rng, S, 1, 10 * S, 50, Jitter::None), S);
    }

    #[test]
    fn full_jitter_stays_within_the_limit_and_spreads() {
        let mut rng = SplitMix64(7);
        let draws: Vec<Duration> = (0..1000)
            .map(|_| delay(&mut rng, S, 2, 60 * S, 2, Jitter::Full))
            .collect();
        assert!(draws.iter().all(|d| *d <= 4 * S));
        assert!(draws.iter().any(|d| *d < S));
        assert!(draws.iter().any(|d| *d > 3 * S));
        let huge = delay(&mut rng, Duration::MAX, 2, Duration::MAX, 9, Jitter::Full);
        assert!(huge <= Duration::from_nanos(u64::MAX));
    }

    #[test]
    fn same_seed_same_delays() {
        let run = |seed| {
            let mut rng = SplitMix64(seed);
            (0..20)
                .map(|n| delay(&mut rng, S, 2, 60 * S, n, Jitter::Full))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }
}
