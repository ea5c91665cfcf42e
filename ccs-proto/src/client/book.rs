//! The book of pending messages: every downstream message from [`Client::send`] to its one
//! [`Outcome`]. Dispatch to the connections with room, answers, retries after a nack, messages
//! taken back from a connection, both kinds of expiry, and the close report.

use std::collections::VecDeque;

use std::time::{Duration, Instant};

use crate::connection::{ConnId, ConnectionSendErrorKind, later};
use crate::message::{Downstream, MessageId, Nack, NackCode, RetryClass};

use super::live::{Key, Live, Meta, MsgState};
use super::{
    Client, ClientEvent, CloseReport, ExpiryKind, FailReason, Lifecycle, MessageTicket, Outcome,
    UNKNOWN_NACK_CODES, backoff,
};

/// Deadlines in the order they were set. A fixed limit added to a `now` that never goes
/// back gives non-decreasing deadlines, so a FIFO is a priority queue here. Entries of
/// messages answered meanwhile are dropped lazily.
#[derive(Debug, Default)]
pub(super) struct Deadlines {
    pub(super) q: VecDeque<(Instant, Key, u64)>,
}

impl Deadlines {
    pub(super) fn push(&mut self, at: Instant, key: Key, tag: u64) {
        self.q.push_back((at, key, tag));
    }

    pub(super) fn front(&self) -> Option<Instant> {
        self.q.front().map(|e| e.0)
    }

    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(Key, u64)> {
        if self.q.front().is_some_and(|e| e.0 <= now) {
            self.q.pop_front().map(|(_, key, tag)| (key, tag))
        } else {
            None
        }
    }

    /// Drops stale entries at the front (so `front` wakes nobody for nothing), and all of
    /// them when they outnumber the live ones (so memory stays bounded).
    pub(super) fn trim(&mut self, live: usize, valid: impl Fn(Key, u64) -> bool) {
        while self
            .q
            .front()
            .is_some_and(|&(_, key, tag)| !valid(key, tag))
        {
            self.q.pop_front();
        }
        if self.q.len() > 2 * live.max(512) {
            self.q.retain(|&(_, key, tag)| valid(key, tag));
        }
    }
}

impl Client {
    /// Sends queued messages in queue order (put back, priority, normal), round robin over the connections with room.
    pub(super) fn dispatch(&mut self, now: Instant) {
        let mut idle = 0;
        while !self.queue.is_empty() && idle < self.sendable.len() {
            if self.rr >= self.sendable.len() {
                self.rr = 0;
            }
            let Some(&id) = self.sendable.get(self.rr) else {
                break;
            };
            self.rr += 1;
            let Some(entry) = self.conns.get_mut(&id) else {
                idle += 1;
                continue;
            };
            let Some(conn) = entry.conn.as_mut().filter(|c| c.can_send()) else {
                idle += 1;
                continue;
            };
            idle = 0;
            let Some((key, message)) = self.queue.pop_front() else {
                break;
            };
            let Some((_, meta)) = self.live.by_key_mut(key) else {
                // Every queued message has its record; without one it could not be reported.
                debug_assert!(false, "queued message without a record");
                continue;
            };
            if past_queue_time(self.config.max_queue_time, now, meta) {
                self.expire_unsent(message);
                continue;
            }
            // Only the record's key: on expiry the connection hands the message over itself.
            let ack_deadline = self.config.ack_timeout.map(|t| later(now, t));
            // Its size was checked when it was accepted.
            match conn.send_sized(now, message, None) {
                Ok(()) => {
                    meta.state = MsgState::InFlight(id);
                    meta.sends = meta.sends.saturating_add(1);
                    meta.generation += 1;
                    if meta.requeued {
                        meta.requeued = false;
                        self.stats.resent += 1;
                    }
                    self.stats.sent += 1;
                    if let Some(at) = ack_deadline {
                        self.ack_deadlines.push(at, key, meta.generation);
                    }
                    if !entry.dirty {
                        entry.dirty = true;
                        self.touched.push(id);
                    }
                }
                Err(e) => match e.kind {
                    ConnectionSendErrorKind::Unencodable(_)
                    | ConnectionSendErrorKind::TooLarge { .. } => {
                        let (ticket, attempts) = (meta.ticket, meta.nacks);
                        self.live.remove(e.message.message_id());
                        let reason = FailReason::Unsendable(e.kind.to_string());
                        self.report(ticket, e.message, Outcome::Failed { reason, attempts });
                    }
                    // `can_send` said yes, so nothing else can come back; keep the message.
                    _ => {
                        self.queue.push_front(key, e.message);
                        break;
                    }
                },
            }
        }
    }

    /// Gives back everything never answered and ends the client.
    pub(super) fn finalize(&mut self, deadline_passed: bool) {
        let mut rest: Vec<Box<Downstream>> = self.queue.drain_in_order().collect();
        rest.extend(self.delayed.drain_in_order().into_iter().map(|(_, m)| m));
        let mut unsent = Vec::new();
        for message in rest {
            if let Some(meta) = self.live.remove(message.message_id()) {
                unsent.push((meta.ticket, message.message_id().clone()));
                let maybe_delivered = meta.sends > 0;
                self.report(meta.ticket, message, Outcome::Unsent { maybe_delivered });
            }
        }
        self.live.clear();
        self.lifecycle = Lifecycle::Closed;
        self.waiting.clear();
        self.timers.clear();
        self.sendable.clear();
        self.ack_deadlines = Deadlines::default();
        self.queue_deadlines = Deadlines::default();
        self.emit(ClientEvent::Closed {
            report: CloseReport {
                unsent,
                deadline_passed,
            },
        });
    }

    /// Retries whose time has come go to the front of the queue; whether there were any.
    pub(super) fn release_retries(&mut self, now: Instant) -> bool {
        let mut due = Vec::new();
        while let Some((_, message)) = self.delayed.pop_due(now) {
            due.push(message);
        }
        let released = !due.is_empty();
        for message in due.into_iter().rev() {
            // Every delayed message has its record (a retry is scheduled only for one).
            let Some((key, meta)) = self.live.get_keyed_mut(message.message_id()) else {
                debug_assert!(false, "delayed message without a record");
                continue;
            };
            meta.state = MsgState::Queued;
            self.queue.push_front(key, message);
        }
        released
    }

    pub(super) fn report(
        &mut self,
        ticket: MessageTicket,
        message: Box<Downstream>,
        outcome: Outcome,
    ) {
        let counter = match &outcome {
            Outcome::Acked { .. } => &mut self.stats.acked,
            Outcome::Nacked { .. } => &mut self.stats.nacked_final,
            Outcome::Rejected { .. } => &mut self.stats.rejected,
            Outcome::Failed { .. } => &mut self.stats.failed,
            Outcome::Expired { .. } => &mut self.stats.expired,
            Outcome::Unsent { .. } => &mut self.stats.unsent,
        };
        *counter += 1;
        self.emit(ClientEvent::Outcome {
            ticket,
            message,
            outcome,
        });
    }

    pub(super) fn count_nack(&mut self, code: &NackCode) {
        self.stats.nacked += 1;
        let key = match code {
            NackCode::Unknown(_) => UNKNOWN_NACK_CODES,
            known => known.as_str(),
        };
        match self.stats.nacked_by_code.get_mut(key) {
            Some(n) => *n += 1,
            None => {
                self.stats.nacked_by_code.insert(key.to_owned(), 1);
            }
        }
    }

    /// A final answer: the message's one outcome (or a late answer, if it expired).
    pub(super) fn answered(&mut self, conn: ConnId, message: Box<Downstream>, outcome: Outcome) {
        match self.live.remove(message.message_id()) {
            Some(Meta {
                state: MsgState::InFlight(_),
                ticket,
                ..
            }) => self.report(ticket, message, outcome),
            Some(Meta {
                state: MsgState::Expired(c),
                ..
            }) => self.late_answer(c, message.message_id().clone()),
            // A message is always in flight when its connection answers it.
            Some(meta) => self.report(meta.ticket, message, outcome),
            None => self.late_answer(conn, message.message_id().clone()),
        }
    }

    pub(super) fn late_answer(&mut self, conn: ConnId, message_id: MessageId) {
        if let Some(e) = self.conns.get_mut(&conn) {
            e.expired.remove(&message_id);
        }
        self.stats.late_answers += 1;
        self.emit(ClientEvent::LateAnswer {
            id: conn,
            message_id,
        });
    }

    pub(super) fn on_nack(
        &mut self,
        now: Instant,
        conn: ConnId,
        message: Box<Downstream>,
        nack: Nack,
    ) {
        let Some(meta) = self.live.get_mut(message.message_id()) else {
            return self.late_answer(conn, message.message_id().clone());
        };
        if let MsgState::Expired(c) = meta.state {
            self.live.remove(message.message_id());
            return self.late_answer(c, message.message_id().clone());
        }
        let policy = &self.config.retry;
        let retryable = match nack.error.retry_class() {
            RetryClass::Backoff => true,
            RetryClass::RateLimited => policy.retry_rate_limited,
            RetryClass::OtherConnection => {
                // The connection turns these into `Returned`; should one come as a nack,
                // it is still not a failure.
                return self.take_back(now, vec![message]);
            }
            RetryClass::Final => false,
        };
        meta.nacks = meta.nacks.saturating_add(1);
        let (ticket, attempts) = (meta.ticket, meta.nacks);
        if !retryable {
            self.live.remove(message.message_id());
            return self.report(ticket, message, Outcome::Nacked { nack });
        }
        if attempts >= policy.max_attempts {
            self.live.remove(message.message_id());
            let reason = FailReason::Nack(nack);
            return self.report(ticket, message, Outcome::Failed { reason, attempts });
        }
        let after = backoff::delay(
            &mut self.rng,
            policy.base,
            policy.factor,
            policy.cap,
            attempts.saturating_sub(1),
            policy.jitter,
        );
        meta.state = MsgState::Delayed;
        self.stats.retried += 1;
        let message_id = message.message_id().clone();
        self.delayed.push(later(now, after), message);
        self.emit(ClientEvent::Retrying {
            ticket,
            message_id,
            nack,
            attempt: attempts.saturating_add(1),
            after,
        });
    }

    /// Reports a message that waited past `max_queue_time` without going (again) on the
    /// wire: its one outcome, [`ExpiryKind::QueueTime`].
    fn expire_unsent(&mut self, message: Box<Downstream>) {
        if let Some(meta) = self.live.remove(message.message_id()) {
            let (kind, sends) = (ExpiryKind::QueueTime, meta.sends);
            self.report(meta.ticket, message, Outcome::Expired { kind, sends });
        }
    }

    /// Messages back from a connection (it ended, or returned them): to the front of the
    /// queue in their order, unless expired.
    #[expect(
        clippy::vec_box,
        reason = "boxed once when sent; each box moves on to its outcome"
    )]
    pub(super) fn take_back(&mut self, now: Instant, messages: Vec<Box<Downstream>>) {
        let mut back = Vec::with_capacity(messages.len());
        for message in messages {
            let Some((key, meta)) = self.live.get_keyed_mut(message.message_id()) else {
                continue;
            };
            if let MsgState::Expired(_) = meta.state {
                // Already reported; its connection is gone, so no answer will come.
                self.live.remove(message.message_id());
                continue;
            }
            if past_queue_time(self.config.max_queue_time, now, meta) {
                self.expire_unsent(message);
                continue;
            }
            meta.state = MsgState::Queued;
            meta.requeued = true;
            back.push((key, message));
        }
        for (key, message) in back.into_iter().rev() {
            self.queue.push_front(key, message);
        }
    }

    pub(super) fn expire_acks(&mut self, now: Instant) {
        while let Some((key, generation)) = self.ack_deadlines.pop_due(now) {
            let Some((id, meta)) = self.live.by_key_mut(key) else {
                continue;
            };
            let MsgState::InFlight(c) = meta.state else {
                continue;
            };
            if meta.generation != generation {
                continue;
            }
            let Some(e) = self.conns.get_mut(&c) else {
                continue;
            };
            let Some(conn) = e.conn.as_mut() else {
                continue;
            };
            // The connection hands the message over and keeps its place in the window.
            let Some(message) = conn.expire(id) else {
                continue;
            };
            meta.state = MsgState::Expired(c);
            let (ticket, sends) = (meta.ticket, meta.sends);
            e.expired.insert(id.clone());
            if conn.in_flight() >= conn.window() && e.expired.len() >= conn.in_flight() {
                // Stuck: its whole window is taken by messages nobody answers. Replace it.
                conn.close(now, now);
                conn.handle_timeout(now);
                self.touch(c);
            }
            let kind = ExpiryKind::AckTimeout;
            self.report(ticket, message, Outcome::Expired { kind, sends });
        }
    }

    pub(super) fn expire_queued(&mut self, now: Instant) {
        let mut any = false;
        while let Some((key, ticket)) = self.queue_deadlines.pop_due(now) {
            if let Some((_, meta)) = self.live.by_key_mut(key)
                && meta.ticket.0 == ticket
                && matches!(meta.state, MsgState::Queued | MsgState::Delayed)
            {
                meta.expire_now = true;
                any = true;
            }
        }
        if !any {
            return;
        }
        let marked = |live: &Live<Meta>, m: &Downstream| {
            live.get(m.message_id()).is_some_and(|meta| meta.expire_now)
        };
        let mut expired = self.queue.take_where(|m| marked(&self.live, m));
        for (due, message) in self.delayed.drain_in_order() {
            if marked(&self.live, &message) {
                expired.push(message);
            } else {
                self.delayed.push(due, message);
            }
        }
        for message in expired {
            self.expire_unsent(message);
        }
    }
}

/// Whether the message of `meta` has waited past the queue-time limit since `send` took it.
fn past_queue_time(limit: Option<Duration>, now: Instant, meta: &Meta) -> bool {
    limit.is_some_and(|limit| now.saturating_duration_since(meta.accepted_at) >= limit)
}
