//! Connection slots. Each of the [`ClientConfig::connections`] is a slot that opens a
//! connection, lets a draining one finish while its replacement opens, and reopens after its
//! connection ends: at once after a connection that did its job, after a backoff otherwise.
//! Also: closing every connection, and giving up on the first connection.

use crate::hash::FastSet;
use std::time::{Duration, Instant};

use crate::connection::{CloseReason, ConnId, Connection, later};
use crate::message::{Downstream, MessageId};

#[cfg(doc)]
use super::ClientConfig;
use super::live::{Meta, MsgState};
use super::{Client, ClientEvent, DownReason, Lifecycle, Output, backoff};

#[derive(Debug, Default)]
pub(super) struct Slot {
    pub(super) conn: Option<ConnId>,
    pub(super) failures: u32,
    pub(super) due: Option<Instant>,
    /// The next attempt replaces a connection that ended (for the `reconnects` counter).
    pub(super) reconnecting: bool,
}

#[derive(Debug)]
pub(super) struct Entry {
    /// The slot it serves; `None` once draining (its slot has a replacement).
    pub(super) slot: Option<usize>,
    /// `None` until the transport is up.
    pub(super) conn: Option<Connection>,
    pub(super) connect_deadline: Instant,
    pub(super) up_since: Option<Instant>,
    /// Answers (acks, nacks, stanza errors) it brought to downstream messages.
    pub(super) answers: u64,
    pub(super) counted_connecting: bool,
    pub(super) told_to_close: bool,
    pub(super) forced: bool,
    /// Messages in flight here already reported expired (their placeholders still take
    /// window room on the connection until answered or the connection ends).
    pub(super) expired: FastSet<MessageId>,
    pub(super) dirty: bool,
    pub(super) timer: Option<Instant>,
}

impl Entry {
    /// Whether the connection achieved something: answers to downstream messages, or a life
    /// of at least `healthy_after` after setup. Judges its end for the reconnect backoff.
    pub(super) fn did_its_job(&self, now: Instant, healthy_after: Duration) -> bool {
        self.answers > 0
            || self
                .up_since
                .is_some_and(|t| now.saturating_duration_since(t) >= healthy_after)
    }
}

impl Client {
    pub(super) fn refresh_timer(&mut self, id: ConnId) {
        let Some(e) = self.conns.get_mut(&id) else {
            return;
        };
        let next = match &e.conn {
            Some(c) => c.poll_timeout(),
            None => Some(e.connect_deadline),
        };
        if next != e.timer {
            if let Some(t) = e.timer {
                self.timers.remove(&(t, id));
            }
            if let Some(t) = next {
                self.timers.insert((t, id));
            }
            e.timer = next;
        }
    }

    /// Opens connections for slots whose time has come, and runs the close.
    pub(super) fn maintain(&mut self, now: Instant) {
        let deadline = match self.lifecycle {
            Lifecycle::Closed => return,
            Lifecycle::Running => None,
            Lifecycle::Closing { deadline } => Some(deadline),
        };
        if let Some(deadline) = deadline {
            let work = self.has_work();
            let passed = now >= deadline;
            if passed || !work {
                self.close_all(now, deadline, passed);
            }
            if self.conns.is_empty() && (passed || !work) {
                self.finalize(passed);
                return;
            }
            if passed {
                return;
            }
        }
        if !self.may_open() {
            return;
        }
        while self.connecting < self.config.reconnect.max_connecting {
            let Some(&(due, s)) = self.waiting.first() else {
                break;
            };
            if due > now {
                break;
            }
            self.waiting.pop_first();
            self.open(now, s);
        }
    }

    /// Closes every connection: gracefully (answers awaited until `deadline`), or, when
    /// `force`, at once.
    pub(super) fn close_all(&mut self, now: Instant, deadline: Instant, force: bool) {
        let ids: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, e)| if force { !e.forced } else { !e.told_to_close })
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            let Some(e) = self.conns.get_mut(&id) else {
                continue;
            };
            e.told_to_close = true;
            e.forced |= force;
            match e.conn.as_mut() {
                None => self.end_entry(now, id, DownReason::Cancelled, vec![]),
                Some(conn) => {
                    if force {
                        conn.close(now, now);
                        conn.handle_timeout(now);
                    } else {
                        conn.close(now, deadline);
                    }
                    self.sendable.retain(|c| *c != id);
                    self.touch(id);
                }
            }
        }
    }

    pub(super) fn on_draining(&mut self, now: Instant, id: ConnId) {
        self.sendable.retain(|c| *c != id);
        self.stats.drains += 1;
        let healthy_after = self.config.reconnect.healthy_after;
        let detached = self.conns.get_mut(&id).and_then(|e| {
            let healthy = e.did_its_job(now, healthy_after);
            e.slot.take().map(|s| (s, healthy))
        });
        if let Some((s, healthy)) = detached {
            // A replacement at once; but a connection drained soon after it came up, before
            // any answer, counts as a failure, so that a server draining every connection
            // causes no storm.
            self.release_slot(now, s, healthy, false);
        }
        self.emit(ClientEvent::ConnectionDraining { id });
    }

    /// A connection or attempt ended: its messages go back, its slot plans the next one.
    #[expect(
        clippy::vec_box,
        reason = "boxed once when sent; each box moves on to its outcome"
    )]
    pub(super) fn end_entry(
        &mut self,
        now: Instant,
        id: ConnId,
        reason: DownReason,
        unanswered: Vec<Box<Downstream>>,
    ) {
        let Some(mut entry) = self.conns.remove(&id) else {
            return;
        };
        if let Some(t) = entry.timer {
            self.timers.remove(&(t, id));
        }
        self.sendable.retain(|c| *c != id);
        if entry.counted_connecting {
            self.connecting = self.connecting.saturating_sub(1);
        }
        if let Some(bytes) = entry.conn.as_mut().and_then(Connection::poll_transmit) {
            self.stats.bytes_out += bytes.len() as u64;
            self.outputs.push_back(Output::Transmit(id, bytes));
        }
        self.take_back(now, unanswered);
        // Expired messages still in flight here: already reported, and no answer can come now.
        for message_id in entry.expired.drain() {
            if let Some(Meta {
                state: MsgState::Expired(c),
                ..
            }) = self.live.get(&message_id)
                && *c == id
            {
                self.live.remove(&message_id);
            }
        }
        self.outputs.push_back(Output::Disconnect(id));
        let conns = &self.conns;
        let handed = self.dedup.connection_gone(id, |c| conns.contains_key(&c));
        for (handle, message) in handed {
            self.hand_over(message, Some(handle));
        }
        self.stats.connections_closed += 1;
        let healthy = entry.did_its_job(now, self.config.reconnect.healthy_after);
        let auth = reason.is_auth_failure();
        let mut will_retry_in = None;
        let mut failures = 0;
        if let Some(s) = entry.slot {
            let delay = self.release_slot(now, s, healthy && !auth, true);
            failures = self.slots.get(s).map_or(0, |slot| slot.failures);
            if self.may_open() {
                will_retry_in = Some(delay);
            }
        }
        let auth_detail = match &reason {
            DownReason::Closed(CloseReason::AuthFailed { condition, text }) => {
                Some((condition.clone(), text.clone()))
            }
            _ => None,
        };
        let (reason_permanent, reason_copy) = (reason.is_permanent(), reason.clone());
        self.emit(ClientEvent::ConnectionDown {
            id,
            reason,
            will_retry_in,
        });
        if let Some((condition, text)) = auth_detail {
            self.stats.auth_failures += 1;
            self.emit(ClientEvent::AuthFailed {
                id,
                condition,
                text,
                consecutive_failures: failures,
            });
        }
        if self.first_deadline.is_some() && self.lifecycle == Lifecycle::Running {
            if reason_permanent {
                self.give_up(now, reason_copy, true);
            } else {
                self.first_error = Some(reason_copy);
            }
        }
    }

    /// The first connection will not come: say why, then close at once (every message is
    /// given back unsent).
    pub(super) fn give_up(&mut self, now: Instant, error: DownReason, permanent: bool) {
        if self.first_deadline.take().is_none() || self.lifecycle != Lifecycle::Running {
            return;
        }
        self.first_error = None;
        self.emit(ClientEvent::FirstConnectFailed { error, permanent });
        // Every caller pumps next, and the pump runs the close.
        self.lifecycle = Lifecycle::Closing { deadline: now };
    }

    /// Slot `s` lost its connection (it ended, or it is draining and will end by itself):
    /// schedules the slot's next attempt, at once after a healthy connection, after a backoff
    /// otherwise, and returns the delay. `reconnecting` says the old connection is gone.
    pub(super) fn release_slot(
        &mut self,
        now: Instant,
        s: usize,
        healthy: bool,
        reconnecting: bool,
    ) -> Duration {
        let delay = if healthy {
            if let Some(slot) = self.slots.get_mut(s) {
                slot.failures = 0;
            }
            Duration::ZERO
        } else {
            self.failure_delay(s)
        };
        if let Some(slot) = self.slots.get_mut(s) {
            slot.conn = None;
            slot.reconnecting = reconnecting;
        }
        self.schedule(s, later(now, delay));
        delay
    }

    /// Counts a failure of slot `s` and draws the backoff before its next attempt.
    pub(super) fn failure_delay(&mut self, s: usize) -> Duration {
        let Some(slot) = self.slots.get_mut(s) else {
            return Duration::ZERO;
        };
        let n = slot.failures;
        slot.failures = n.saturating_add(1);
        let p = &self.config.reconnect;
        backoff::delay(&mut self.rng, p.base, p.factor, p.cap, n, p.jitter)
    }

    pub(super) fn schedule(&mut self, s: usize, at: Instant) {
        if let Some(slot) = self.slots.get_mut(s) {
            if let Some(old) = slot.due.replace(at) {
                self.waiting.remove(&(old, s));
            }
            self.waiting.insert((at, s));
        }
    }

    pub(super) fn open(&mut self, now: Instant, s: usize) {
        let id = ConnId(self.next_conn);
        let Some(slot) = self.slots.get_mut(s) else {
            return;
        };
        self.next_conn += 1;
        slot.conn = Some(id);
        slot.due = None;
        if slot.reconnecting {
            self.stats.reconnects += 1;
        }
        self.stats.connection_attempts += 1;
        self.connecting += 1;
        self.conns.insert(
            id,
            Entry {
                slot: Some(s),
                conn: None,
                connect_deadline: later(now, self.config.reconnect.connect_timeout),
                up_since: None,
                answers: 0,
                counted_connecting: true,
                told_to_close: false,
                forced: false,
                expired: FastSet::default(),
                dirty: false,
                timer: None,
            },
        );
        self.refresh_timer(id);
        self.outputs.push_back(Output::Connect(id));
    }
}
