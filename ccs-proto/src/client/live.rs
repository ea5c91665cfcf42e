//! The records of the messages between `send` and their outcome ([`Meta`]), found by message
//! id (answers, queue moves) and by a [`Key`] that the deadline queues keep: checking whether
//! a deadline is still current costs an index and a compare, not a hash of the id, and a
//! deadline holds no clone of the id.

use std::time::Instant;

use crate::connection::ConnId;
use crate::hash::FastMap;
use crate::message::MessageId;

use super::MessageTicket;

/// What the client knows of a message between `send` and its outcome.
#[derive(Debug)]
pub(super) struct Meta {
    pub(super) ticket: MessageTicket,
    pub(super) accepted_at: Instant,
    pub(super) nacks: u32,
    pub(super) sends: u32,
    /// Bumped at every send: tells a stale ack deadline from the current one.
    pub(super) generation: u64,
    pub(super) state: MsgState,
    /// Sent again after its connection ended or returned it (for the `resent` counter).
    pub(super) requeued: bool,
    pub(super) expire_now: bool,
}

impl Meta {
    /// The record of a message accepted `now` with this ticket: queued, never sent.
    pub(super) fn new(ticket: MessageTicket, now: Instant) -> Self {
        Self {
            ticket,
            accepted_at: now,
            nacks: 0,
            sends: 0,
            generation: 0,
            state: MsgState::Queued,
            requeued: false,
            expire_now: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MsgState {
    Queued,
    Delayed,
    InFlight(ConnId),
    /// Reported expired while in flight on this connection.
    Expired(ConnId),
}

/// Where a record lives, and which record it was: a slot is reused once its record is gone,
/// with a new stamp, so the key of a record that is gone finds nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Key {
    slot: u32,
    stamp: u64,
}

#[cfg(test)]
impl Key {
    /// A key for tests of the structures that carry keys.
    pub(super) fn for_test(slot: u32) -> Self {
        Self { slot, stamp: 0 }
    }
}

#[derive(Debug)]
struct Slot<T> {
    stamp: u64,
    record: Option<(MessageId, T)>,
}

/// The records (the client's are [`Meta`]), by message id and by [`Key`].
#[derive(Debug)]
pub(super) struct Live<T> {
    index: FastMap<MessageId, u32>,
    slots: Vec<Slot<T>>,
    /// Slots without a record, to reuse.
    free: Vec<u32>,
}

impl<T> Default for Live<T> {
    fn default() -> Self {
        Self {
            index: FastMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Live<T> {
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    /// Removes every record (their keys find nothing after, as after `remove`).
    pub(super) fn clear(&mut self) {
        self.index.clear();
        self.free.clear();
        for (slot, s) in (0u32..).zip(&mut self.slots) {
            if s.record.take().is_some() {
                s.stamp = s.stamp.wrapping_add(1);
            }
            self.free.push(slot);
        }
    }

    pub(super) fn get(&self, id: &MessageId) -> Option<&T> {
        let &slot = self.index.get(id)?;
        self.slots[slot as usize].record.as_ref().map(|(_, m)| m)
    }

    pub(super) fn get_mut(&mut self, id: &MessageId) -> Option<&mut T> {
        self.get_keyed_mut(id).map(|(_, m)| m)
    }

    /// The record and its key (for a deadline).
    pub(super) fn get_keyed_mut(&mut self, id: &MessageId) -> Option<(Key, &mut T)> {
        let &slot = self.index.get(id)?;
        let s = &mut self.slots[slot as usize];
        let stamp = s.stamp;
        s.record.as_mut().map(|(_, m)| (Key { slot, stamp }, m))
    }

    pub(super) fn remove(&mut self, id: &MessageId) -> Option<T> {
        let slot = self.index.remove(id)?;
        let s = &mut self.slots[slot as usize];
        s.stamp = s.stamp.wrapping_add(1);
        self.free.push(slot);
        s.record.take().map(|(_, m)| m)
    }

    /// The record with this key, if it is still there.
    pub(super) fn by_key(&self, key: Key) -> Option<&T> {
        let s = self.slots.get(key.slot as usize)?;
        if s.stamp != key.stamp {
            return None;
        }
        s.record.as_ref().map(|(_, m)| m)
    }

    /// The record with this key, if it is still there, with its message id.
    pub(super) fn by_key_mut(&mut self, key: Key) -> Option<(&MessageId, &mut T)> {
        let s = self.slots.get_mut(key.slot as usize)?;
        if s.stamp != key.stamp {
            return None;
        }
        s.record.as_mut().map(|(id, m)| (&*id, m))
    }

    /// The place for a record of `id`, `None` if there is one already: one lookup for the
    /// duplicate check and the insert.
    pub(super) fn vacant(&mut self, id: MessageId) -> Option<Vacant<'_, T>> {
        match self.index.entry(id) {
            std::collections::hash_map::Entry::Occupied(_) => None,
            std::collections::hash_map::Entry::Vacant(entry) => Some(Vacant {
                entry,
                slots: &mut self.slots,
                free: &mut self.free,
            }),
        }
    }
}

/// A free place for a record, from [`Live::vacant`]; dropping it records nothing.
pub(super) struct Vacant<'a, T> {
    entry: std::collections::hash_map::VacantEntry<'a, MessageId, u32>,
    slots: &'a mut Vec<Slot<T>>,
    free: &'a mut Vec<u32>,
}

impl<T> Vacant<'_, T> {
    /// Records `record`; its key.
    pub(super) fn insert(self, record: T) -> Key {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                // More records than `u32::MAX` cannot be: `max_queue` bounds them far below.
                let slot = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
                self.slots.push(Slot {
                    stamp: 0,
                    record: None,
                });
                slot
            }
        };
        let s = &mut self.slots[slot as usize];
        s.record = Some((self.entry.key().clone(), record));
        let key = Key {
            slot,
            stamp: s.stamp,
        };
        self.entry.insert(slot);
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> MessageId {
        MessageId::new(s).unwrap()
    }

    #[test]
    fn a_key_finds_its_record_and_nothing_once_the_record_is_gone() {
        let mut live: Live<u64> = Live::default();
        let a = live.vacant(id("a")).unwrap().insert(1);
        assert!(live.vacant(id("a")).is_none(), "one record per id");
        let b = live.vacant(id("b")).unwrap().insert(2);
        assert_eq!(live.len(), 2);
        assert_eq!(live.by_key(a), Some(&1));
        assert_eq!(live.get(&id("b")), Some(&2));
        let (found, record) = live.by_key_mut(b).unwrap();
        assert_eq!(found.as_str(), "b");
        *record = 20;
        assert_eq!(live.get_keyed_mut(&id("b")).unwrap().0, b);

        assert_eq!(live.remove(&id("a")), Some(1));
        assert!(live.by_key(a).is_none());
        assert!(live.remove(&id("a")).is_none());
        // The slot is reused for the next record, which the old key does not find.
        let c = live.vacant(id("c")).unwrap().insert(3);
        assert!(live.by_key(a).is_none());
        assert_eq!(live.by_key(c), Some(&3));
        assert_eq!(live.get_mut(&id("b")).copied(), Some(20));
        // A place given up records nothing.
        drop(live.vacant(id("d")));
        assert!(live.get(&id("d")).is_none());
        assert_eq!(live.len(), 2);
        live.clear();
        assert_eq!(live.len(), 0);
        assert!(live.by_key(c).is_none(), "a key finds nothing after clear");
        let d = live.vacant(id("d")).unwrap().insert(4);
        assert!(live.by_key(b).is_none() && live.by_key(c).is_none());
        assert_eq!(live.by_key(d), Some(&4));
    }
}
