//! Upstream messages and receipts: de-duplicated, acked, and handed to the application.

use std::time::Instant;

use crate::connection::{AckHandle, ConnId};
use crate::message::{Receipt, Upstream};

use super::dedup::Verdict;
use super::{Client, ClientEvent};

/// An upstream message or receipt kept while an earlier copy awaits the application's ack.
#[derive(Debug)]
pub(super) enum Held {
    Upstream(Upstream),
    Receipt(Receipt),
}

impl Client {
    // (A command of the client, kept beside the hand-over it can trigger.)
    /// The application will not ack this handle (manual mode: it dropped it unused). A
    /// graceful close then need not wait for it; the message stays un-acked and the server
    /// redelivers it. A copy of it held back by de-duplication on another connection is
    /// handed over in its place. Handles already acked, or of a connection that is gone, are
    /// ignored.
    pub fn release(&mut self, now: Instant, handle: &AckHandle) {
        let id = handle.conn();
        let Some(conn) = self.conns.get_mut(&id).and_then(|e| e.conn.as_mut()) else {
            return;
        };
        if !conn.release(now, handle) {
            return;
        }
        self.touch(id);
        let conns = &self.conns;
        let next = self
            .dedup
            .released(handle.to(), handle.message_id(), id, |c| {
                conns.contains_key(&c)
            });
        if let Some((held, message)) = next {
            self.hand_over(message, Some(held));
        }
        self.pump(now);
    }

    /// An upstream message or receipt: to the application unless it is a copy of one
    /// already handed over (de-duplication).
    pub(super) fn upstream(
        &mut self,
        now: Instant,
        conn: ConnId,
        message: Held,
        ack: Option<AckHandle>,
    ) {
        let (from, id) = match &message {
            Held::Upstream(m) => (&m.from, &m.message_id),
            Held::Receipt(r) => (&r.from, &r.message_id),
        };
        match self.dedup.observe(from, id, conn, ack.as_ref()) {
            Verdict::Deliver => self.hand_over(message, ack),
            Verdict::Duplicate { ack_now } => {
                self.stats.duplicates_suppressed += 1;
                if let Some(h) = ack_now
                    && let Some(c) = self.conns.get_mut(&conn).and_then(|e| e.conn.as_mut())
                    && c.ack(now, &h).is_ok()
                {
                    self.touch(conn);
                }
            }
            Verdict::Hold => {
                self.stats.duplicates_suppressed += 1;
                if let Some(h) = ack {
                    let (from, id) = (from.clone(), id.clone());
                    self.dedup.hold(&from, &id, h, message);
                }
            }
        }
    }

    pub(super) fn hand_over(&mut self, message: Held, ack: Option<AckHandle>) {
        self.emit(match message {
            Held::Upstream(m) => ClientEvent::Upstream {
                message: Box::new(m),
                ack,
            },
            Held::Receipt(r) => ClientEvent::Receipt {
                receipt: Box::new(r),
                ack,
            },
        });
    }
}
