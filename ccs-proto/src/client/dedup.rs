//! The bounded de-duplication window for upstream messages and receipts.
//!
//! CCS redelivers every upstream message whose ack it did not get, on a later connection
//! (PROTOCOL.md §7.3). The window remembers the last `capacity` `(from, message_id)` pairs
//! handed to the application, so that a redelivered copy is acked again but not handed over
//! twice.
//!
//! In manual-ack mode a pair is only "done" once the application has acked it. Until then it
//! is tied to the connection the first copy came on: a copy arriving meanwhile on another
//! live connection is held and acked together with the first; if the first copy's
//! connection ends before the application acks, the pair is forgotten, because that ack will
//! be refused and the server's next copy must reach the application with a valid handle.

use std::collections::{HashMap, VecDeque};

use crate::connection::{AckHandle, ConnId};
use crate::message::MessageId;

type Key = (String, MessageId);

/// What to do with an upstream message or receipt.
#[derive(Debug)]
pub(super) enum Verdict {
    /// First copy: hand it to the application.
    Deliver,
    /// A copy already handed over. `ack_now`: ack this copy at once (manual mode, the
    /// application already acked the first).
    Duplicate { ack_now: Option<AckHandle> },
}

#[derive(Debug)]
enum State {
    /// Handed over and acked (by the connection, or by the application).
    Done,
    /// Handed over in manual mode; the application has not acked it yet.
    Awaiting { conn: ConnId, held: Vec<AckHandle> },
}

#[derive(Debug)]
pub(super) struct Dedup {
    capacity: usize,
    /// Insertion order, for eviction; an entry whose generation no longer matches the map's
    /// is stale (the pair was forgotten and seen again) and is skipped.
    order: VecDeque<(Key, u64)>,
    map: HashMap<Key, (u64, State)>,
    next_gen: u64,
    awaiting: usize,
}

impl Dedup {
    /// A window of `capacity` pairs; `0` disables de-duplication.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            order: VecDeque::new(),
            map: HashMap::new(),
            next_gen: 0,
            awaiting: 0,
        }
    }

    /// A message `(from, id)` arrived on `conn`, with its ack handle in manual mode.
    pub(super) fn observe(
        &mut self,
        from: &str,
        id: &MessageId,
        conn: ConnId,
        handle: Option<&AckHandle>,
    ) -> Verdict {
        if self.capacity == 0 {
            return Verdict::Deliver;
        }
        let key = (from.to_owned(), id.clone());
        if let Some((_, state)) = self.map.get_mut(&key) {
            return match state {
                State::Done => Verdict::Duplicate {
                    ack_now: handle.cloned(),
                },
                State::Awaiting { held, .. } => {
                    held.extend(handle.cloned());
                    Verdict::Duplicate { ack_now: None }
                }
            };
        }
        let state = match handle {
            Some(_) => {
                self.awaiting += 1;
                State::Awaiting {
                    conn,
                    held: Vec::new(),
                }
            }
            None => State::Done,
        };
        let generation = self.next_gen;
        self.next_gen += 1;
        self.order.push_back((key.clone(), generation));
        self.map.insert(key, (generation, state));
        self.evict();
        Verdict::Deliver
    }

    /// The application acked `(from, id)`: it is done; returns the held copies to ack too.
    pub(super) fn app_acked(&mut self, from: &str, id: &MessageId) -> Vec<AckHandle> {
        if self.awaiting == 0 {
            return Vec::new();
        }
        let key = (from.to_owned(), id.clone());
        match self.map.get_mut(&key) {
            Some((_, state @ State::Awaiting { .. })) => {
                self.awaiting -= 1;
                match std::mem::replace(state, State::Done) {
                    State::Awaiting { held, .. } => held,
                    State::Done => Vec::new(),
                }
            }
            _ => Vec::new(),
        }
    }

    /// `conn` ended: pairs still awaiting the application's ack on it are forgotten.
    pub(super) fn connection_gone(&mut self, conn: ConnId) {
        if self.awaiting == 0 {
            return;
        }
        let before = self.map.len();
        self.map
            .retain(|_, (_, s)| !matches!(s, State::Awaiting { conn: c, .. } if *c == conn));
        self.awaiting -= before - self.map.len();
    }

    fn evict(&mut self) {
        while self.map.len() > self.capacity {
            let Some((key, generation)) = self.order.pop_front() else {
                return;
            };
            if self.map.get(&key).is_some_and(|(g, _)| *g == generation)
                && let Some((_, State::Awaiting { .. })) = self.map.remove(&key)
            {
                self.awaiting -= 1;
            }
        }
        // Stale entries (forgotten pairs) would otherwise pile up in `order`.
        if self.order.len() > 2 * self.capacity.max(64) {
            let map = &self.map;
            self.order
                .retain(|(k, g)| map.get(k).is_some_and(|(mg, _)| mg == g));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> MessageId {
        MessageId::new(s).unwrap()
    }

    #[test]
    fn duplicates_within_the_window_are_suppressed_and_old_ones_evicted() {
        let mut d = Dedup::new(2);
        let c = ConnId(1);
        assert!(matches!(
            d.observe("a", &id("1"), c, None),
            Verdict::Deliver
        ));
        assert!(matches!(
            d.observe("b", &id("1"), c, None),
            Verdict::Deliver
        ));
        assert!(matches!(
            d.observe("a", &id("1"), c, None),
            Verdict::Duplicate { ack_now: None }
        ));
        assert!(matches!(
            d.observe("a", &id("2"), c, None),
            Verdict::Deliver
        ));
        // ("a", "1") was the oldest: evicted.
        assert!(matches!(
            d.observe("a", &id("1"), c, None),
            Verdict::Deliver
        ));
    }

    #[test]
    fn capacity_zero_disables() {
        let mut d = Dedup::new(0);
        for _ in 0..3 {
            assert!(matches!(
                d.observe("a", &id("1"), ConnId(1), None),
                Verdict::Deliver
            ));
        }
    }

    #[test]
    fn forgotten_pairs_do_not_evict_newer_ones_early() {
        let mut d = Dedup::new(2);
        for i in 0..500 {
            let key = id(&i.to_string());
            assert!(matches!(
                d.observe("a", &key, ConnId(1), None),
                Verdict::Deliver
            ));
        }
        assert!(d.order.len() <= 2 * 64 + 1);
        assert_eq!(d.map.len(), 2);
    }
}
