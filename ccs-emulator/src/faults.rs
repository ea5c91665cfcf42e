//! The fault plan: every fault the emulator injects, decided without IO.
//!
//! A session owns one [`FaultPlan`], built from the config's [`Faults`] and the connection's
//! seeded generator, and asks it at the few points where a fault can strike: how to answer a
//! downstream message ([`FaultPlan::answering`]), where to cut a write
//! ([`FaultPlan::cut`]), and whether and how to split a write into tiny pieces
//! ([`FaultPlan::writes_tiny`], [`FaultPlan::tiny_piece`]). The plan holds no clock and no
//! socket; the session carries out what it decides.
//!
//! All random draws of a connection after the core's seed come from the plan's generator, in
//! the order the session asks, so the same seed and connection number repeat the same faults.
//! A decision must draw exactly as before when a fault is added, or seeded runs change.
//!
//! # Adding a fault
//!
//! 1. One field in [`Faults`] (documented, checked in `Faults::validate` if it has a range).
//! 2. One decision here: a new variant of [`Answering`] or a new question on [`FaultPlan`],
//!    asked by the session at the point where the fault strikes. Draw nothing when the fault
//!    is off, so that other seeded faults keep their sequence.
//! 3. One test: a unit test of the decision below, and an end-to-end one in
//!    `tests/faults.rs` if the client has to see it.

use std::time::Duration;

use crate::config::Faults;
use crate::rng::SplitMix64;

/// Pieces of [`Faults::tiny_writes`], in bytes.
const TINY_WRITE: (u64, u64) = (1, 16);

/// What to do with a downstream message that has a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answering {
    /// Answer at once.
    Now,
    /// Answer after this long ([`Faults::slow_ack`]).
    Later(Duration),
    /// Never answer on this connection ([`Faults::missing_ack_probability`]).
    Never,
    /// End the stream with this error condition instead
    /// ([`Faults::stream_error_probability`]).
    StreamError(&'static str),
}

/// The faults of one connection: the configured [`Faults`] and the generator they draw from.
#[derive(Debug, Clone)]
pub(crate) struct FaultPlan {
    faults: Faults,
    rng: SplitMix64,
}

impl FaultPlan {
    /// A plan drawing from `rng` (the connection's generator, after the core's seed).
    pub(crate) fn new(faults: Faults, rng: SplitMix64) -> Self {
        Self { faults, rng }
    }

    /// How to answer the downstream message just judged.
    #[must_use]
    pub(crate) fn answering(&mut self) -> Answering {
        let f = &self.faults;
        if self.rng.chance(f.stream_error_probability) {
            return Answering::StreamError(if self.rng.below(2) == 0 {
                "internal-server-error"
            } else {
                "system-shutdown"
            });
        }
        if self.rng.chance(f.missing_ack_probability) {
            return Answering::Never;
        }
        if let Some((lo, hi)) = f.slow_ack {
            let nanos = self.rng.between(nanos_of(lo), nanos_of(hi));
            return Answering::Later(Duration::from_nanos(nanos));
        }
        Answering::Now
    }

    /// Where to cut a write of `len` bytes holding `stanzas` new stanzas, after `written`
    /// bytes already went out on the connection; `None` writes it whole. A cut ends the
    /// connection without a TLS `close_notify`.
    #[must_use]
    pub(crate) fn cut(&mut self, written: u64, len: usize, stanzas: u64) -> Option<usize> {
        let mut cut = None;
        if let Some(limit) = self.faults.drop_after_bytes {
            let remaining = limit.saturating_sub(written);
            if len as u64 >= remaining {
                // `remaining <= len`, so it fits in usize.
                cut = Some(usize::try_from(remaining).unwrap_or(len));
            }
        }
        if self.faults.drop_probability > 0.0 {
            for _ in 0..stanzas {
                if self.rng.chance(self.faults.drop_probability) {
                    // Strictly inside the write when it has room: mid-stanza.
                    let at = if len > 1 {
                        1 + self.rng.below(len as u64 - 1) as usize
                    } else {
                        0
                    };
                    cut = Some(cut.map_or(at, |c: usize| c.min(at)));
                    break;
                }
            }
        }
        cut
    }

    /// Whether writes go out in tiny pieces, each flushed ([`Faults::tiny_writes`]).
    #[must_use]
    pub(crate) fn writes_tiny(&self) -> bool {
        self.faults.tiny_writes
    }

    /// The length of the next tiny piece when `left` bytes remain (at most `left`).
    #[must_use]
    pub(crate) fn tiny_piece(&mut self, left: usize) -> usize {
        let piece = self.rng.between(TINY_WRITE.0, TINY_WRITE.1);
        usize::try_from(piece).unwrap_or(left).min(left)
    }
}

fn nanos_of(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(faults: Faults, seed: u64) -> FaultPlan {
        FaultPlan::new(faults, crate::rng::for_connection(seed, 1))
    }

    fn every_fault(p: f64) -> Faults {
        Faults {
            drop_after_bytes: None,
            drop_probability: p,
            stream_error_probability: p,
            slow_ack: None,
            missing_ack_probability: p,
            tiny_writes: false,
        }
    }

    /// A run of decisions of each kind, for comparing plans.
    fn decisions(plan: &mut FaultPlan) -> (Vec<Answering>, Vec<Option<usize>>, Vec<usize>) {
        let answers = (0..50).map(|_| plan.answering()).collect();
        let cuts = (0..50).map(|_| plan.cut(0, 100, 3)).collect();
        let pieces = (0..50).map(|_| plan.tiny_piece(usize::MAX)).collect();
        (answers, cuts, pieces)
    }

    #[test]
    fn same_seed_same_decisions() {
        let mut faults = every_fault(0.3);
        faults.slow_ack = Some((Duration::from_millis(1), Duration::from_millis(50)));
        let a = decisions(&mut plan(faults.clone(), 42));
        assert_eq!(a, decisions(&mut plan(faults.clone(), 42)));
        assert_ne!(a, decisions(&mut plan(faults, 43)));
    }

    #[test]
    fn probability_zero_never_strikes() {
        let mut p = plan(every_fault(0.0), 5);
        for _ in 0..1000 {
            assert_eq!(p.answering(), Answering::Now);
            assert_eq!(p.cut(0, 100, 10), None);
        }
        assert!(!p.writes_tiny());
    }

    #[test]
    fn probability_one_always_strikes() {
        let mut p = plan(every_fault(1.0), 5);
        for _ in 0..1000 {
            // The stream error comes first and hides the missing ack.
            assert!(matches!(p.answering(), Answering::StreamError(_)));
            let at = p.cut(0, 100, 1).expect("always cut");
            assert!((1..100).contains(&at), "strictly inside: {at}");
        }
        let mut faults = every_fault(0.0);
        faults.missing_ack_probability = 1.0;
        assert_eq!(plan(faults, 5).answering(), Answering::Never);
    }

    #[test]
    fn slow_acks_stay_in_range() {
        let mut faults = every_fault(0.0);
        let (lo, hi) = (Duration::from_millis(5), Duration::from_millis(40));
        faults.slow_ack = Some((lo, hi));
        let mut p = plan(faults, 9);
        for _ in 0..1000 {
            let Answering::Later(d) = p.answering() else {
                panic!("slow acks are always late")
            };
            assert!((lo..=hi).contains(&d), "{d:?}");
        }
    }

    #[test]
    fn drop_after_bytes_cuts_at_the_count() {
        let mut faults = every_fault(0.0);
        faults.drop_after_bytes = Some(150);
        let mut p = plan(faults, 0);
        assert_eq!(p.cut(0, 100, 1), None);
        assert_eq!(p.cut(100, 100, 1), Some(50));
        assert_eq!(p.cut(150, 10, 1), Some(0));
    }

    #[test]
    fn tiny_pieces_fit() {
        let mut faults = every_fault(0.0);
        faults.tiny_writes = true;
        let mut p = plan(faults, 13);
        assert!(p.writes_tiny());
        for _ in 0..1000 {
            assert!((1..=16).contains(&p.tiny_piece(usize::MAX)));
            assert!((1..=3).contains(&p.tiny_piece(3)));
        }
    }
}
