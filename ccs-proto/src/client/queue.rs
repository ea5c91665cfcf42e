//! The queue of messages accepted and waiting for window room, in three lanes, and the one
//! way into it ([`Client::send`] and [`Client::send_priority`]).
//!
//! Dispatch takes, in this order: messages put back at the front (taken back from a
//! connection that ended or returned them, or due for a retry), in the order they were put
//! back; then priority messages, oldest first; then normal messages, oldest first. A
//! priority message put back goes to the front lane like any other, so it keeps its place
//! ahead of later priority messages.

use std::collections::VecDeque;
use std::time::Instant;

use crate::connection::later;
use crate::message::Downstream;
use crate::xml::write;

use super::live::{Key, Meta};
use super::{Client, Lifecycle, MessageTicket, SendError, SendErrorKind};

/// Where [`Client::enqueue`] puts a new message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lane {
    Normal,
    Priority,
}

/// A queued message with the key of its record ([`super::live`]), so that dispatch finds the
/// record without hashing the id.
type Entry = (Key, Box<Downstream>);

#[derive(Debug, Default)]
pub(super) struct Queue {
    /// Put back at the front: taken back from a connection, or released for a retry.
    front: VecDeque<Entry>,
    priority: VecDeque<Entry>,
    normal: VecDeque<Entry>,
}

impl Queue {
    pub(super) fn len(&self) -> usize {
        self.front.len() + self.priority.len() + self.normal.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.front.is_empty() && self.priority.is_empty() && self.normal.is_empty()
    }

    /// A new message, behind the others of its lane.
    pub(super) fn push_back(&mut self, lane: Lane, key: Key, message: Box<Downstream>) {
        match lane {
            Lane::Normal => self.normal.push_back((key, message)),
            Lane::Priority => self.priority.push_back((key, message)),
        }
    }

    /// A message put back: ahead of everything.
    pub(super) fn push_front(&mut self, key: Key, message: Box<Downstream>) {
        self.front.push_front((key, message));
    }

    /// The next message to send, with its record's key.
    pub(super) fn pop_front(&mut self) -> Option<Entry> {
        self.front
            .pop_front()
            .or_else(|| self.priority.pop_front())
            .or_else(|| self.normal.pop_front())
    }

    /// Every message, in the order dispatch would take them; the queue is left empty.
    pub(super) fn drain_in_order(&mut self) -> impl Iterator<Item = Box<Downstream>> + use<> {
        let lanes = [
            std::mem::take(&mut self.front),
            std::mem::take(&mut self.priority),
            std::mem::take(&mut self.normal),
        ];
        lanes.into_iter().flatten().map(|(_, message)| message)
    }

    /// Takes out the messages `pick` chooses, in dispatch order; the others keep their places.
    #[expect(
        clippy::vec_box,
        reason = "boxed once when sent; each box moves on to its outcome"
    )]
    pub(super) fn take_where(
        &mut self,
        mut pick: impl FnMut(&Downstream) -> bool,
    ) -> Vec<Box<Downstream>> {
        let mut picked = Vec::new();
        for lane in [&mut self.front, &mut self.priority, &mut self.normal] {
            for (key, message) in std::mem::take(lane) {
                if pick(&message) {
                    picked.push(message);
                } else {
                    lane.push_back((key, message));
                }
            }
        }
        picked
    }
}

impl Client {
    /// Accepts a message into `lane`: the checks and bookkeeping of both `send`s.
    pub(super) fn enqueue(
        &mut self,
        now: Instant,
        message: Box<Downstream>,
        lane: Lane,
    ) -> Result<MessageTicket, SendError> {
        let refuse =
            |kind: SendErrorKind, message: Box<Downstream>| Err(SendError { kind, message });
        match self.lifecycle {
            Lifecycle::Running => {}
            Lifecycle::Closing { .. } => return refuse(SendErrorKind::Closing, message),
            Lifecycle::Closed => return refuse(SendErrorKind::Closed, message),
        }
        if self.queued() >= self.config.max_queue {
            self.queue_was_full = true;
            let limit = self.config.max_queue;
            return refuse(SendErrorKind::QueueFull { limit }, message);
        }
        // One lookup for the duplicate check and the record.
        let Some(slot) = self.live.vacant(message.message_id().clone()) else {
            return refuse(SendErrorKind::DuplicateId, message);
        };
        if let Some(limit) = self.config.connection.max_payload_bytes {
            // Counted without a copy; the connection writes it once, unchecked.
            let bytes = write::json_len(&message).unwrap_or(usize::MAX);
            if bytes > limit {
                return refuse(SendErrorKind::TooLarge { bytes, limit }, message);
            }
        }
        let ticket = MessageTicket(self.next_ticket);
        self.next_ticket += 1;
        let key = slot.insert(Meta::new(ticket, now));
        if let Some(limit) = self.config.max_queue_time {
            self.queue_deadlines.push(later(now, limit), key, ticket.0);
        }
        self.queue.push_back(lane, key, message);
        self.stats.queued += 1;
        self.pump(now);
        Ok(ticket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str) -> Box<Downstream> {
        Box::new(Downstream::builder("device-token", id).unwrap().build())
    }

    fn ids(messages: impl IntoIterator<Item = Box<Downstream>>) -> Vec<String> {
        messages
            .into_iter()
            .map(|m| m.message_id().as_str().to_owned())
            .collect()
    }

    /// Each message with a key of its own (slot `n`), to check that they travel together.
    fn filled() -> Queue {
        let mut q = Queue::default();
        q.push_back(Lane::Normal, Key::for_test(10), m("n-0"));
        q.push_back(Lane::Priority, Key::for_test(20), m("p-0"));
        q.push_back(Lane::Normal, Key::for_test(11), m("n-1"));
        q.push_back(Lane::Priority, Key::for_test(21), m("p-1"));
        q.push_front(Key::for_test(1), m("f-1"));
        q.push_front(Key::for_test(0), m("f-0"));
        q
    }

    #[test]
    fn front_then_priority_then_normal_each_in_order() {
        let mut q = filled();
        assert_eq!(q.len(), 6);
        let mut popped = Vec::new();
        let mut keys = Vec::new();
        while let Some((key, message)) = q.pop_front() {
            keys.push(key);
            popped.push(message);
        }
        assert!(q.is_empty());
        assert_eq!(ids(popped), ["f-0", "f-1", "p-0", "p-1", "n-0", "n-1"]);
        let expected = [0, 1, 20, 21, 10, 11].map(Key::for_test);
        assert_eq!(keys, expected, "each message comes out with its own key");
        assert_eq!(
            ids(filled().drain_in_order()),
            ["f-0", "f-1", "p-0", "p-1", "n-0", "n-1"]
        );
    }

    #[test]
    fn take_where_keeps_the_rest_in_place() {
        let mut q = filled();
        let taken = q.take_where(|m| m.message_id().as_str().ends_with('1'));
        assert_eq!(ids(taken), ["f-1", "p-1", "n-1"]);
        let rest: Vec<_> = std::iter::from_fn(|| q.pop_front()).collect();
        let keys: Vec<_> = rest.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [0, 20, 10].map(Key::for_test),
            "the rest keep their keys"
        );
        assert_eq!(ids(rest.into_iter().map(|(_, m)| m)), ["f-0", "p-0", "n-0"]);
        assert!(q.is_empty());
    }
}
