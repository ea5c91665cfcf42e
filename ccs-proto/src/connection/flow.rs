//! The in-flight table of one connection: downstream messages sent and not yet answered.
//!
//! An answer (ack, nack, stanza error) finds its message in O(1) by `message_id`. When the
//! connection ends, every unanswered message comes back in the order it was sent, so the
//! caller can resend them ahead of newer messages. A message the owner gave up waiting for
//! ([`InFlight::take`]) leaves a placeholder: it still counts toward the window (the server
//! has not answered it) until its late answer comes or the connection ends.

use crate::hash::FastMap;

use crate::message::{Downstream, MessageId};

/// Downstream messages in flight on one connection, bounded by the window.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    map: FastMap<MessageId, Entry>,
    next_seq: u64,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    /// `None` once taken by the owner (expired): a placeholder.
    message: Option<Box<Downstream>>,
}

/// A free place in the table, from [`InFlight::vacant`]; dropping it inserts nothing.
pub(crate) struct Vacant<'a> {
    entry: std::collections::hash_map::VacantEntry<'a, MessageId, Entry>,
    next_seq: &'a mut u64,
}

impl Vacant<'_> {
    /// Records the message (whose id this place was found for) as sent.
    pub(crate) fn insert(self, message: Box<Downstream>) {
        debug_assert_eq!(self.entry.key(), message.message_id());
        let seq = *self.next_seq;
        *self.next_seq += 1;
        self.entry.insert(Entry {
            seq,
            message: Some(message),
        });
    }
}

/// What an answer found in the table.
#[derive(Debug)]
pub(crate) enum Found {
    /// The message, answered.
    Message(Box<Downstream>),
    /// The placeholder of a message taken earlier: a late answer.
    Taken,
}

impl InFlight {
    pub(crate) fn with_capacity(window: usize) -> Self {
        Self {
            map: FastMap::with_capacity_and_hasher(window, Default::default()),
            next_seq: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.map.contains_key(id)
    }

    /// Records a message as sent. The caller has checked that its id is not in flight.
    #[cfg(test)]
    pub(crate) fn insert(&mut self, message: Box<Downstream>) {
        if let Some(slot) = self.vacant(message.message_id()) {
            slot.insert(message);
        }
    }

    /// The place for a message with this id, `None` if one is in flight already: one lookup
    /// for the check and the insert (the message is written in between).
    pub(crate) fn vacant(&mut self, id: &MessageId) -> Option<Vacant<'_>> {
        match self.map.entry(id.clone()) {
            std::collections::hash_map::Entry::Occupied(_) => None,
            std::collections::hash_map::Entry::Vacant(entry) => Some(Vacant {
                entry,
                next_seq: &mut self.next_seq,
            }),
        }
    }

    /// Removes the entry answered by `id`: its message, or the placeholder of a taken one.
    pub(crate) fn remove(&mut self, id: &str) -> Option<Found> {
        let entry = self.map.remove(id)?;
        Some(entry.message.map_or(Found::Taken, Found::Message))
    }

    /// Hands the message out without forgetting that it is in flight: its entry stays, as a
    /// placeholder, until answered or drained. `None` for an unknown or already taken id.
    pub(crate) fn take(&mut self, id: &str) -> Option<Box<Downstream>> {
        self.map.get_mut(id)?.message.take()
    }

    /// Every message still in flight (placeholders left out), in the order they were sent;
    /// the table is left empty.
    #[expect(
        clippy::vec_box,
        reason = "boxed once when sent; each box moves on to its outcome"
    )]
    pub(crate) fn drain_in_order(&mut self) -> Vec<Box<Downstream>> {
        let mut entries: Vec<Entry> = self.map.drain().map(|(_, e)| e).collect();
        entries.sort_unstable_by_key(|e| e.seq);
        entries.into_iter().filter_map(|e| e.message).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str) -> Box<Downstream> {
        Box::new(Downstream::builder("tok", id).unwrap().build())
    }

    #[test]
    fn answers_in_any_order_and_drains_in_send_order() {
        let mut f = InFlight::with_capacity(4);
        for id in ["c", "a", "d", "b"] {
            f.insert(msg(id));
        }
        assert!(f.contains("a"));
        assert!(matches!(f.remove("d"), Some(Found::Message(m)) if m.message_id().as_str() == "d"));
        assert!(f.remove("d").is_none());
        assert_eq!(f.len(), 3);
        let ids: Vec<_> = f
            .drain_in_order()
            .iter()
            .map(|m| m.message_id().as_str().to_owned())
            .collect();
        assert_eq!(ids, ["c", "a", "b"]);
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn a_taken_message_leaves_a_placeholder_that_counts_until_answered() {
        let mut f = InFlight::with_capacity(4);
        for id in ["a", "b", "c"] {
            f.insert(msg(id));
        }
        assert_eq!(f.take("b").unwrap().message_id().as_str(), "b");
        assert!(f.take("b").is_none(), "taken once");
        assert_eq!(f.len(), 3, "still in flight");
        assert!(matches!(f.remove("b"), Some(Found::Taken)));
        f.insert(msg("d"));
        assert!(f.take("d").is_some());
        let ids: Vec<_> = f
            .drain_in_order()
            .iter()
            .map(|m| m.message_id().as_str().to_owned())
            .collect();
        assert_eq!(ids, ["a", "c"], "placeholders are not handed back");
    }
}
