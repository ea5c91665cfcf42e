//! The in-flight table of one connection: downstream messages sent and not yet answered.
//!
//! An answer (ack, nack, stanza error) finds its message in O(1) by `message_id`. When the
//! connection ends, every unanswered message comes back in the order it was sent, so the
//! caller can resend them ahead of newer messages.

use std::collections::HashMap;

use crate::message::{Downstream, MessageId};

/// Downstream messages in flight on one connection, bounded by the window.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    map: HashMap<MessageId, Entry>,
    next_seq: u64,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    message: Downstream,
}

impl InFlight {
    pub(crate) fn with_capacity(window: usize) -> Self {
        Self {
            map: HashMap::with_capacity(window),
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
    pub(crate) fn insert(&mut self, message: Downstream) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.map
            .insert(message.message_id().clone(), Entry { seq, message });
    }

    /// Removes and returns the message answered by `id`.
    pub(crate) fn remove(&mut self, id: &str) -> Option<Downstream> {
        self.map.remove(id).map(|e| e.message)
    }

    /// Every message still in flight, in the order they were sent; the table is left empty.
    pub(crate) fn drain_in_order(&mut self) -> Vec<Downstream> {
        let mut entries: Vec<Entry> = self.map.drain().map(|(_, e)| e).collect();
        entries.sort_unstable_by_key(|e| e.seq);
        entries.into_iter().map(|e| e.message).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str) -> Downstream {
        Downstream::builder("tok", id).unwrap().build()
    }

    #[test]
    fn answers_in_any_order_and_drains_in_send_order() {
        let mut f = InFlight::with_capacity(4);
        for id in ["c", "a", "d", "b"] {
            f.insert(msg(id));
        }
        assert!(f.contains("a"));
        assert_eq!(f.remove("d").unwrap().message_id().as_str(), "d");
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
}
