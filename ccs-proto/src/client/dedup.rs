//! The bounded de-duplication window for upstream messages and receipts.
//!
//! CCS redelivers every upstream message whose ack it did not get, on a later connection
//! (PROTOCOL.md §7.3). The window remembers the last `capacity` `(from, message_id)` pairs
//! handed to the application and done with, so that a redelivered copy is acked again but
//! not handed over twice. Every operation is O(1) (amortized), however many pairs await
//! the application's ack.
//!
//! In manual-ack mode a pair is only "done" once the application has acked it. Until then it
//! is tied to the connection the first copy came on: a copy arriving meanwhile on another
//! connection is held (message and handle) and acked together with the first. If the first
//! copy's connection ends before the application acks, that ack will be refused: a held copy
//! on a live connection is then handed over with its own handle (else the pair is forgotten,
//! and the server's next copy reaches the application). So in manual mode a copy is handed
//! over again only when the earlier one can no longer be acked. Pairs awaiting the
//! application are never evicted (the server bounds how many it leaves unacked).

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
    /// A copy of one the application has not acked yet: give it to [`Dedup::hold`].
    Hold,
}

#[derive(Debug)]
enum State<T> {
    /// Handed over and acked (by the connection, or by the application).
    Done,
    /// Handed over in manual mode; the application has not acked it yet.
    Awaiting {
        conn: ConnId,
        held: Vec<(AckHandle, T)>,
    },
}

/// The window; `T` is the message kept with a held copy.
#[derive(Debug)]
pub(super) struct Dedup<T> {
    capacity: usize,
    /// Pairs that are done, in the order they became done, for eviction. Pairs awaiting the
    /// application are not in it (they are never evicted), so an insert costs O(1) however
    /// many await. An entry whose generation no longer matches the map's is stale (the pair
    /// was forgotten, or seen again) and is skipped.
    order: VecDeque<(Key, u64)>,
    map: HashMap<Key, (u64, State<T>)>,
    next_gen: u64,
    awaiting: usize,
}

impl<T> Dedup<T> {
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
        if let Some((_, state)) = self.map.get(&key) {
            return match (state, handle) {
                (State::Awaiting { .. }, Some(_)) => Verdict::Hold,
                _ => Verdict::Duplicate {
                    ack_now: handle.cloned(),
                },
            };
        }
        let generation = self.next_gen;
        self.next_gen += 1;
        let state = match handle {
            Some(_) => {
                self.awaiting += 1;
                State::Awaiting {
                    conn,
                    held: Vec::new(),
                }
            }
            None => {
                self.order.push_back((key.clone(), generation));
                State::Done
            }
        };
        self.map.insert(key, (generation, state));
        self.evict();
        Verdict::Deliver
    }

    /// Keeps a copy ([`Verdict::Hold`]) until the application acks the first.
    pub(super) fn hold(&mut self, from: &str, id: &MessageId, handle: AckHandle, message: T) {
        let key = (from.to_owned(), id.clone());
        if let Some((_, State::Awaiting { held, .. })) = self.map.get_mut(&key) {
            held.push((handle, message));
        }
    }

    /// The application acked `(from, id)`: it is done; returns the held copies to ack too.
    pub(super) fn app_acked(&mut self, from: &str, id: &MessageId) -> Vec<AckHandle> {
        if self.awaiting == 0 {
            return Vec::new();
        }
        let key = (from.to_owned(), id.clone());
        let handles = match self.map.get_mut(&key) {
            Some((generation, state @ State::Awaiting { .. })) => {
                self.awaiting = self.awaiting.saturating_sub(1);
                // Done from now on: it joins the eviction order at the back.
                *generation = self.next_gen;
                self.next_gen += 1;
                self.order.push_back((key, *generation));
                match std::mem::replace(state, State::Done) {
                    State::Awaiting { held, .. } => held.into_iter().map(|(h, _)| h).collect(),
                    State::Done => Vec::new(),
                }
            }
            _ => return Vec::new(),
        };
        self.evict();
        handles
    }

    /// `conn` ended: the application's acks of copies that came on it will be refused. For
    /// each such pair, a held copy on a connection that is still `alive` becomes the one the
    /// application must ack: it is returned, to hand over. Pairs without one are forgotten.
    pub(super) fn connection_gone(
        &mut self,
        conn: ConnId,
        alive: impl Fn(ConnId) -> bool,
    ) -> Vec<(AckHandle, T)> {
        let mut handed = Vec::new();
        if self.awaiting == 0 {
            return handed;
        }
        let mut forget = Vec::new();
        for (key, (_, state)) in &mut self.map {
            let State::Awaiting { conn: c, held } = state else {
                continue;
            };
            if *c != conn {
                continue;
            }
            match next_copy(c, held, &alive) {
                Some(copy) => handed.push(copy),
                None => forget.push(key.clone()),
            }
        }
        for key in forget {
            self.map.remove(&key);
            self.awaiting = self.awaiting.saturating_sub(1);
        }
        // The map's order is arbitrary; hand the copies over in a deterministic one.
        handed.sort_by(|(a, _), (b, _)| {
            (a.conn(), a.message_id(), a.to()).cmp(&(b.conn(), b.message_id(), b.to()))
        });
        handed
    }

    /// The application gave up the handle of the copy of `(from, id)` it was handed on
    /// `conn` (it will not ack it): for this pair, as if `conn` had gone. A held copy on a
    /// connection still `alive` is returned, to hand over; without one the pair is forgotten,
    /// so that the server's next copy reaches the application.
    pub(super) fn released(
        &mut self,
        from: &str,
        id: &MessageId,
        conn: ConnId,
        alive: impl Fn(ConnId) -> bool,
    ) -> Option<(AckHandle, T)> {
        let key = (from.to_owned(), id.clone());
        let Some((_, State::Awaiting { conn: c, held })) = self.map.get_mut(&key) else {
            return None;
        };
        if *c != conn {
            return None;
        }
        let copy = next_copy(c, held, &alive);
        if copy.is_none() {
            self.map.remove(&key);
            self.awaiting = self.awaiting.saturating_sub(1);
        }
        copy
    }

    /// Forgets the oldest done pairs beyond the capacity. Each entry of `order` is popped at
    /// most once, so this is O(1) amortized per insert.
    fn evict(&mut self) {
        while self.map.len() - self.awaiting > self.capacity {
            let Some((key, generation)) = self.order.pop_front() else {
                return;
            };
            if let Some((g, State::Done)) = self.map.get(&key)
                && *g == generation
            {
                self.map.remove(&key);
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

/// The copy that takes over from one whose ack can no longer come: the first held copy on a
/// connection still `alive` (it becomes the awaited one, on its connection), if any.
fn next_copy<T>(
    awaited_on: &mut ConnId,
    held: &mut Vec<(AckHandle, T)>,
    alive: impl Fn(ConnId) -> bool,
) -> Option<(AckHandle, T)> {
    held.retain(|(h, _)| alive(h.conn()));
    if held.is_empty() {
        return None;
    }
    let (handle, message) = held.remove(0);
    *awaited_on = handle.conn();
    Some((handle, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> MessageId {
        MessageId::new(s).unwrap()
    }

    #[test]
    fn duplicates_within_the_window_are_suppressed_and_old_ones_evicted() {
        let mut d = Dedup::<()>::new(2);
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
        let mut d = Dedup::<()>::new(0);
        for _ in 0..3 {
            assert!(matches!(
                d.observe("a", &id("1"), ConnId(1), None),
                Verdict::Deliver
            ));
        }
    }

    #[test]
    fn forgotten_pairs_do_not_evict_newer_ones_early() {
        let mut d = Dedup::<()>::new(2);
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

    #[test]
    fn pairs_awaiting_the_application_cost_nothing_per_insert() {
        // 20,000 pairs await acks in a window of 10: each insert must not walk them all.
        let mut d = Dedup::<()>::new(10);
        let h = |i: usize| AckHandle::for_tests(ConnId(1), &format!("dev-{i}"), &i.to_string());
        for i in 0..20_000 {
            let handle = h(i);
            let key = id(&i.to_string());
            assert!(matches!(
                d.observe(handle.to(), &key, ConnId(1), Some(&handle)),
                Verdict::Deliver
            ));
        }
        assert!(
            d.order.is_empty(),
            "awaiting pairs are not in the eviction order"
        );
        assert_eq!(d.awaiting, 20_000);
        // Acked, they become done and are evicted beyond the capacity, oldest first.
        for i in 0..20_000 {
            d.app_acked(&format!("dev-{i}"), &id(&i.to_string()));
        }
        assert_eq!(d.awaiting, 0);
        assert_eq!(d.map.len(), 10);
        let last = h(19_999);
        assert!(matches!(
            d.observe(last.to(), last.message_id(), ConnId(1), None),
            Verdict::Duplicate { .. }
        ));
        let first = h(0);
        assert!(matches!(
            d.observe(first.to(), first.message_id(), ConnId(1), None),
            Verdict::Deliver
        ));
    }
}
