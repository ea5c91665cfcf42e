//! The timed state of one connection, without IO: answers held back by
//! [`crate::Faults::slow_ack`], the drain grace period, readiness for upstream after the
//! bind, and whitespace keepalives. The session feeds it `now` and asks what is due and when
//! to wake up next.

use std::time::Duration;

use ccs_proto::message::MessageId;
use ccs_proto::server::ServerState;
use ccs_proto::timer::TimerQueue;
use tokio::time::Instant;

use crate::config::EmulatorConfig;
use crate::policy::Verdict;

/// What is due on one connection, and when.
#[derive(Debug)]
pub(crate) struct Schedule {
    drain_grace: Duration,
    upstream_after_bind: Duration,
    keepalive: Option<Duration>,
    /// Answers held back, with when they are due (the core's std instants).
    delayed: TimerQueue<(MessageId, Verdict)>,
    /// Set once draining was asked for; it starts when the stream is bound.
    drain_asked: bool,
    /// When draining, the end of the grace period.
    grace_end: Option<Instant>,
    /// When the resource was bound, and how many stanzas the client had sent by then.
    bound_at: Option<(Instant, u64)>,
    /// Whether the client is ready for upstream messages (see
    /// [`EmulatorConfig::upstream_after_bind`]).
    ready: bool,
    last_write: Instant,
}

impl Schedule {
    /// Nothing due yet; the connection was accepted at `now`.
    pub(crate) fn new(config: &EmulatorConfig, now: Instant) -> Self {
        Self {
            drain_grace: config.drain_grace,
            upstream_after_bind: config.upstream_after_bind,
            keepalive: config.whitespace_keepalive,
            delayed: TimerQueue::new(),
            drain_asked: false,
            grace_end: None,
            bound_at: None,
            ready: false,
            last_write: now,
        }
    }

    // ---- delayed answers -----------------------------------------------------------------

    /// Holds an answer back until `at`; answers due at the same time keep their order.
    pub(crate) fn answer_at(&mut self, at: Instant, id: MessageId, verdict: Verdict) {
        self.delayed.push(at.into_std(), (id, verdict));
    }

    /// The next held-back answer due at `now`, if any.
    pub(crate) fn due_answer(&mut self, now: Instant) -> Option<(MessageId, Verdict)> {
        self.delayed
            .pop_due(now.into_std())
            .map(|(_, answer)| answer)
    }

    // ---- drain ---------------------------------------------------------------------------

    /// Draining was asked for; it starts once the stream is bound.
    pub(crate) fn ask_drain(&mut self) {
        self.drain_asked = true;
    }

    pub(crate) fn drain_asked(&self) -> bool {
        self.drain_asked
    }

    /// `CONNECTION_DRAINING` went out at `now`: the grace period starts.
    pub(crate) fn start_grace(&mut self, now: Instant) {
        self.grace_end = Some(now + self.drain_grace);
    }

    /// Whether `CONNECTION_DRAINING` went out.
    pub(crate) fn draining(&self) -> bool {
        self.grace_end.is_some()
    }

    /// Whether the grace period of a draining connection is over at `now`.
    pub(crate) fn grace_over(&self, now: Instant) -> bool {
        self.grace_end.is_some_and(|end| now >= end)
    }

    // ---- readiness for upstream ----------------------------------------------------------

    /// The resource was bound at `now`, after the client's `stanzas_in` stanzas.
    pub(crate) fn bound(&mut self, now: Instant, stanzas_in: u64) {
        self.bound_at = Some((now, stanzas_in));
    }

    /// A client that requests a session is not ready for messages until the result arrives,
    /// so upstream waits for the client's first stanza after the bind, or for
    /// `upstream_after_bind`.
    pub(crate) fn update_ready(&mut self, now: Instant, stanzas_in: u64) {
        if let Some((at, stanzas)) = self.bound_at
            && !self.ready
        {
            self.ready = stanzas_in > stanzas || now >= at + self.upstream_after_bind;
        }
    }

    /// Whether the client is ready for upstream messages.
    pub(crate) fn ready(&self) -> bool {
        self.ready
    }

    // ---- keepalive -----------------------------------------------------------------------

    /// Bytes went out at `now`.
    pub(crate) fn wrote(&mut self, now: Instant) {
        self.last_write = now;
    }

    /// Whether a whitespace keepalive is due at `now` on a stream in `state`.
    pub(crate) fn keepalive_due(&self, now: Instant, state: ServerState) -> bool {
        self.keepalive
            .is_some_and(|every| keeps_alive(state) && now >= self.last_write + every)
    }

    // ---- wake-up -------------------------------------------------------------------------

    /// When the session must wake up even if nothing arrives, given the core's own deadline
    /// and the stream's state.
    pub(crate) fn next_deadline(
        &self,
        core: Option<Instant>,
        state: ServerState,
    ) -> Option<Instant> {
        let mut next = core;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(at) = self.delayed.next_at() {
            consider(Instant::from_std(at));
        }
        if let Some(end) = self.grace_end
            && state == ServerState::Draining
        {
            consider(end);
        }
        if let Some((at, _)) = self.bound_at
            && !self.ready
        {
            consider(at + self.upstream_after_bind);
        }
        if let Some(every) = self.keepalive
            && keeps_alive(state)
        {
            consider(self.last_write + every);
        }
        next
    }
}

/// Whether a stream in `state` gets whitespace keepalives.
fn keeps_alive(state: ServerState) -> bool {
    matches!(state, ServerState::Bound | ServerState::Draining)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack() -> Verdict {
        Verdict::Ack {
            registration_id: None,
            receipt_to: None,
        }
    }

    fn id(s: &str) -> MessageId {
        MessageId::new(s).expect("a valid id")
    }

    #[test]
    fn delayed_answers_come_due_in_time_order() {
        let t0 = Instant::now();
        let mut s = Schedule::new(&EmulatorConfig::default(), t0);
        let ms = Duration::from_millis;
        s.answer_at(t0 + ms(20), id("b"), ack());
        s.answer_at(t0 + ms(10), id("a"), ack());
        s.answer_at(t0 + ms(20), id("c"), ack());
        assert!(s.due_answer(t0).is_none());
        assert_eq!(s.next_deadline(None, ServerState::Bound), Some(t0 + ms(10)));
        let due: Vec<String> = std::iter::from_fn(|| s.due_answer(t0 + ms(20)))
            .map(|(id, _)| id.as_str().to_owned())
            .collect();
        assert_eq!(due, ["a", "b", "c"]);
    }

    #[test]
    fn grace_and_readiness() {
        let t0 = Instant::now();
        let config = EmulatorConfig::default();
        let mut s = Schedule::new(&config, t0);
        assert!(!s.draining() && !s.grace_over(t0 + config.drain_grace));
        s.start_grace(t0);
        assert!(!s.grace_over(t0) && s.grace_over(t0 + config.drain_grace));
        s.bound(t0, 2);
        s.update_ready(t0, 2);
        assert!(!s.ready());
        s.update_ready(t0, 3);
        assert!(s.ready(), "a stanza after the bind");
    }

    #[test]
    fn keepalive_only_when_configured_and_bound() {
        let t0 = Instant::now();
        let every = Duration::from_millis(10);
        let mut config = EmulatorConfig::default();
        assert!(!Schedule::new(&config, t0).keepalive_due(t0 + every, ServerState::Bound));
        config.whitespace_keepalive = Some(every);
        let mut s = Schedule::new(&config, t0);
        assert!(!s.keepalive_due(t0, ServerState::Bound));
        assert!(s.keepalive_due(t0 + every, ServerState::Bound));
        assert!(!s.keepalive_due(t0 + every, ServerState::Closing));
        s.wrote(t0 + every);
        assert!(!s.keepalive_due(t0 + every, ServerState::Bound));
    }
}
