//! One CCS stream, client side, from the first byte to the last: [`Connection`].
//!
//! [`Connection`]'s docs are its contract: inputs, commands, outputs and the run loop. Its
//! settings are in [`config`]; what it reports, in [`ConnectionEvent`] and the types around it.

pub mod config;
mod event;
mod flow;
mod inbound;
mod setup;

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use crate::error::{PeerError, UsageError, XmlError};
use crate::message::{AppAck, Downstream, MessageId};
use crate::xml::{StreamReader, write};
use config::ConnectionConfig;
use flow::InFlight;

pub use event::{
    AckError, AckHandle, Anomaly, CloseReason, ConnectionEvent, ConnectionSendError,
    ConnectionSendErrorKind, State, Stats,
};

/// The old name of [`ConnectionSendError`] (renamed so that it is not mistaken for the
/// client's [`crate::client::SendError`]).
#[deprecated(since = "0.1.0", note = "renamed `ConnectionSendError`")]
pub type SendError = ConnectionSendError;

/// The old name of [`ConnectionSendErrorKind`].
#[deprecated(since = "0.1.0", note = "renamed `ConnectionSendErrorKind`")]
pub type SendErrorKind = ConnectionSendErrorKind;

/// Identifies a connection among the many a client may hold. Chosen by the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// One CCS stream, client side, sans-IO.
///
/// The connection never touches a socket or a clock: its owner feeds it bytes and time and
/// carries out what it asks for.
///
/// - **Getters:** [`state`](Self::state), [`in_flight`](Self::in_flight),
///   [`window`](Self::window), [`stats`](Self::stats), [`jid`](Self::jid), [`id`](Self::id).
/// - **Outputs:** [`poll_transmit`](Self::poll_transmit) (bytes to write),
///   [`poll_event`](Self::poll_event), [`poll_timeout`](Self::poll_timeout).
/// - **Inputs:** [`handle_input`](Self::handle_input) (bytes received),
///   [`handle_eof`](Self::handle_eof) (the transport ended),
///   [`handle_timeout`](Self::handle_timeout) (the deadline from `poll_timeout` passed; a
///   spurious call does nothing).
/// - **Commands:** [`send`](Self::send), [`ack`](Self::ack) and [`release`](Self::release)
///   (manual mode), [`close`](Self::close).
///
/// After any input or command, drain every output: events first (handling one may call
/// `send` or `ack`, which queue bytes), then transmits, until both are empty. Bytes queued
/// by a handler then go out in the same turn, not at the next wake-up. The run loop, after
/// creating it (its stream header is already queued):
///
/// ```text
/// loop {
///     loop {
///         let mut idle = true;
///         while let Some(event) = conn.poll_event() { idle = false; handle(event); /* may call send/ack */ }
///         while let Some(bytes) = conn.poll_transmit() { idle = false; socket.write_all(&bytes); }
///         if idle { break; }
///     }
///     socket.flush();
///     if conn.state() == State::Closed { break; }
///     match wait_for(socket readable, conn.poll_timeout()) {
///         Readable(bytes) if bytes.is_empty() => conn.handle_eof(now()),
///         Readable(bytes) => conn.handle_input(now(), &bytes),
///         TimedOut => conn.handle_timeout(now()),
///     }
/// }
/// ```
///
/// `now` is the only clock; every deadline is computed from the instants passed in.
///
/// Liveness comes from complete frames: a stanza, a whitespace keepalive between stanzas, a
/// stream header. Bytes of an unfinished stanza do not count, and a stanza left unfinished
/// for [`ConnectionConfig::stanza_timeout`] ends the connection
/// ([`CloseReason::StanzaTimeout`]). A draining connection ends itself
/// [`ConnectionConfig::drain_timeout`] after the announcement
/// ([`CloseReason::DrainTimeout`]) and hands back what is unanswered.
///
/// `Debug` output never shows buffered bytes (they hold the SASL `<auth>`, the server key in
/// base64, between authentication and the next transmit): only their length.
pub struct Connection {
    id: ConnId,
    config: ConnectionConfig,
    state: State,
    reader: StreamReader,
    out: Vec<u8>,
    events: VecDeque<ConnectionEvent>,
    in_flight: InFlight,
    window_was_full: bool,
    /// Upstream `(from, message_id)` pairs handed to the application for a manual ack.
    /// Device-chosen ids collide across devices, so the id alone is not a key.
    awaiting_ack: HashSet<AppAck>,
    jid: Option<String>,
    session_offered: bool,
    setup_deadline: Option<Instant>,
    last_sent: Instant,
    last_received: Instant,
    ping_deadline: Option<Instant>,
    close_deadline: Option<Instant>,
    /// Since when a stanza has been open (bytes buffered, not yet a frame).
    stanza_open_since: Option<Instant>,
    drain_deadline: Option<Instant>,
    /// CONNECTION_DRAINING arrived before setup finished: drain as soon as it does.
    drain_pending: bool,
    end_sent: bool,
    pings: u64,
    stats: Stats,
}
impl Connection {
    /// Starts a connection: the client stream header is queued for sending at once.
    pub fn new(id: ConnId, config: ConnectionConfig, now: Instant) -> Result<Self, UsageError> {
        config.validate()?;
        let mut conn = Self {
            id,
            reader: StreamReader::new(config.framer.clone()),
            in_flight: InFlight::with_capacity(config.window),
            setup_deadline: Some(later(now, config.setup_timeout)),
            config,
            state: State::AwaitingHeader,
            out: Vec::with_capacity(4096),
            events: VecDeque::new(),
            window_was_full: false,
            awaiting_ack: HashSet::new(),
            jid: None,
            session_offered: false,
            last_sent: now,
            last_received: now,
            ping_deadline: None,
            close_deadline: None,
            stanza_open_since: None,
            drain_deadline: None,
            drain_pending: false,
            end_sent: false,
            pings: 0,
            stats: Stats::default(),
        };
        write::client_header(&mut conn.out, &conn.config.domain);
        Ok(conn)
    }

    // ---- getters ----

    /// The id given at creation.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Where the connection is in its life.
    pub fn state(&self) -> State {
        self.state
    }

    /// Downstream messages sent and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The configured window.
    pub fn window(&self) -> usize {
        self.config.window
    }

    /// Whether [`send`](Self::send) would take a message now.
    pub fn can_send(&self) -> bool {
        self.state == State::Connected && self.in_flight.len() < self.config.window
    }

    /// The JID the server bound, once connected.
    pub fn jid(&self) -> Option<&str> {
        self.jid.as_deref()
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &ConnectionConfig {
        &self.config
    }

    /// Bytes received and not yet decoded: after [`handle_input`](Self::handle_input)
    /// returns, at most one open stanza (or stream header), so never more than the larger of
    /// the framer's `max_stanza_bytes` and `max_header_bytes`.
    pub fn buffered_input(&self) -> usize {
        self.reader.framer().buffered()
    }

    // ---- outputs ----

    /// Bytes to write to the transport, if any (all that was queued, as one buffer).
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.out.is_empty() {
            return None;
        }
        let cap = self.out.capacity().clamp(4096, 1 << 20);
        Some(std::mem::replace(&mut self.out, Vec::with_capacity(cap)))
    }

    /// Appends the bytes to write to `buf` (an allocation-free form of
    /// [`poll_transmit`](Self::poll_transmit)); returns whether there were any.
    pub fn transmit_into(&mut self, buf: &mut Vec<u8>) -> bool {
        if self.out.is_empty() {
            return false;
        }
        buf.extend_from_slice(&self.out);
        self.out.clear();
        true
    }

    /// The next event for the owner.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ConnectionEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next; `None` once
    /// closed.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Closed {
            return None;
        }
        let mut next = [
            self.setup_deadline,
            self.close_deadline,
            self.ping_deadline,
            self.drain_deadline,
            self.stanza_open_since
                .map(|t| later(t, self.config.stanza_timeout)),
            None,
            None,
        ];
        if !self.state.is_setup() {
            next[5] = Some(later(self.last_sent, self.config.keepalive_interval));
            if self.ping_deadline.is_none() {
                next[6] = Some(later(self.last_received, self.config.ping_after));
            }
        }
        next.into_iter().flatten().min()
    }

    // ---- inputs ----

    /// Bytes received from the transport.
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) {
        if self.state == State::Closed || data.is_empty() {
            return;
        }
        self.stats.bytes_in += data.len() as u64;
        self.reader.push(data);
        loop {
            match self.reader.next_event() {
                Ok(Some(ev)) => {
                    // A complete frame: the only thing that proves the peer alive. Bytes
                    // after it belong to a stanza begun now.
                    self.last_received = now;
                    self.ping_deadline = None;
                    self.stanza_open_since = None;
                    self.handle_xml(now, ev)
                }
                Ok(None) => break,
                Err(e) => {
                    self.fail_protocol(now, e);
                    break;
                }
            }
            if self.state == State::Closed {
                break;
            }
        }
        self.stanza_open_since = match self.reader.framer().buffered() {
            0 => None,
            _ => self.stanza_open_since.or(Some(now)),
        };
        self.maybe_finish_close(now);
    }

    /// The transport ended (also in the middle of a stanza).
    pub fn handle_eof(&mut self, now: Instant) {
        let mid_stanza = self.reader.framer().buffered() > 0;
        self.end_sent = true; // nothing can be written any more
        self.finish(now, CloseReason::Eof { mid_stanza });
    }

    /// A deadline passed. Safe to call at any time.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        if let Some(d) = self.setup_deadline
            && now >= d
        {
            let state = self.state;
            self.finish(now, CloseReason::SetupTimeout { state });
            return;
        }
        if let Some(d) = self.close_deadline
            && now >= d
        {
            self.finish(now, CloseReason::Local);
            return;
        }
        if let Some(d) = self.ping_deadline
            && now >= d
        {
            self.finish(now, CloseReason::PingTimeout);
            return;
        }
        if let Some(t) = self.stanza_open_since
            && now >= later(t, self.config.stanza_timeout)
        {
            self.finish(now, CloseReason::StanzaTimeout);
            return;
        }
        if let Some(d) = self.drain_deadline
            && now >= d
        {
            self.finish(now, CloseReason::DrainTimeout);
            return;
        }
        if self.state.is_setup() {
            return;
        }
        if self.ping_deadline.is_none() && now >= later(self.last_received, self.config.ping_after)
        {
            self.pings += 1;
            let id = format!("ping_{}", self.pings);
            write::iq_ping(&mut self.out, &id, Some(&self.config.domain));
            self.stats.pings_sent += 1;
            self.ping_deadline = Some(later(now, self.config.ping_timeout));
            self.sent(now);
        }
        if now >= later(self.last_sent, self.config.keepalive_interval) {
            write::whitespace_keepalive(&mut self.out);
            self.stats.keepalives_sent += 1;
            self.sent(now);
        }
    }

    // ---- commands ----

    /// Sends a downstream message. Its stanza `id` is its `message_id`.
    ///
    /// Refused (with the message given back) while setting up, when the window is full, while
    /// draining or closing, for a `message_id` already in flight, and over the optional
    /// payload limit.
    pub fn send(
        &mut self,
        now: Instant,
        message: impl Into<Box<Downstream>>,
    ) -> Result<(), ConnectionSendError> {
        self.send_sized(now, message.into(), self.config.max_payload_bytes)
    }

    /// [`send`](Self::send) with the payload limit to check while writing: the client passes
    /// `None` for a message whose size it checked when it was accepted.
    pub(crate) fn send_sized(
        &mut self,
        now: Instant,
        message: Box<Downstream>,
        max_payload_bytes: Option<usize>,
    ) -> Result<(), ConnectionSendError> {
        let refuse = |kind, message| Err(ConnectionSendError { kind, message });
        match self.state {
            State::Connected => {}
            State::Draining => return refuse(ConnectionSendErrorKind::Draining, message),
            State::Closing | State::Closed => {
                return refuse(ConnectionSendErrorKind::Closed, message);
            }
            _ => return refuse(ConnectionSendErrorKind::NotReady, message),
        }
        if self.in_flight.len() >= self.config.window {
            self.window_was_full = true;
            return refuse(ConnectionSendErrorKind::Blocked, message);
        }
        let Some(slot) = self.in_flight.vacant(message.message_id()) else {
            return refuse(ConnectionSendErrorKind::DuplicateId, message);
        };
        let start = self.out.len();
        // One serialization: the stanza is written and its JSON measured at once; a message
        // over the limit is taken back out of the buffer.
        match write::downstream_measured(&mut self.out, &message) {
            Ok(bytes) => match max_payload_bytes {
                Some(limit) if bytes > limit => {
                    self.out.truncate(start);
                    return refuse(ConnectionSendErrorKind::TooLarge { bytes, limit }, message);
                }
                _ => {}
            },
            // A built Downstream always serializes; should it not, say so rather than drop it.
            Err(e) => {
                return refuse(ConnectionSendErrorKind::Unencodable(e.to_string()), message);
            }
        }
        self.stats.bytes_out += (self.out.len() - start) as u64;
        self.stats.sent += 1;
        slot.insert(message);
        if self.in_flight.len() >= self.config.window {
            self.window_was_full = true;
        }
        self.last_sent = now;
        Ok(())
    }

    /// Acks an upstream message or receipt (manual mode). Refused once the connection is gone:
    /// the server will redeliver the message on a later connection.
    pub fn ack(&mut self, now: Instant, handle: &AckHandle) -> Result<(), AckError> {
        if handle.conn != self.id {
            return Err(AckError::WrongConnection);
        }
        if self.state == State::Closed || self.end_sent {
            return Err(AckError::ConnectionGone);
        }
        if !self.awaiting_ack.remove(&handle.ack) {
            return Err(AckError::NotPending);
        }
        self.write_ack(now, &handle.ack);
        self.maybe_finish_close(now);
        Ok(())
    }

    /// Starts a graceful close: nothing new is sent; answers to messages in flight, and the
    /// application's acks of upstream messages it holds handles for (manual mode), are
    /// awaited until `deadline` ([`ack`](Self::ack) works meanwhile;
    /// [`release`](Self::release) says a handle will not be used); then `</stream:stream>`
    /// is sent and the connection is closed. Messages still unanswered come back in
    /// [`ConnectionEvent::Closed`].
    pub fn close(&mut self, now: Instant, deadline: Instant) {
        match self.state {
            State::Closed => return,
            s if s.is_setup() => {
                self.finish(now, CloseReason::Local);
                return;
            }
            _ => {}
        }
        self.state = State::Closing;
        self.close_deadline = Some(self.close_deadline.map_or(deadline, |d| d.min(deadline)));
        self.maybe_finish_close(now);
    }

    /// The application will not ack this handle (manual mode; it dropped it): a graceful
    /// close need not wait for it. The message stays un-acked, so the server redelivers it.
    /// Returns whether the handle was pending.
    pub fn release(&mut self, now: Instant, handle: &AckHandle) -> bool {
        if handle.conn != self.id || !self.awaiting_ack.remove(&handle.ack) {
            return false;
        }
        self.maybe_finish_close(now);
        true
    }

    /// Gives up waiting for the answer to a message in flight and hands the message back (to
    /// report it expired) without a copy. It still counts toward the window until its answer
    /// comes ([`ConnectionEvent::LateAnswer`]) or the connection ends (it is then not in
    /// [`ConnectionEvent::Closed`]'s `unanswered`). `None` for an id not in flight or
    /// already expired.
    pub fn expire(&mut self, message_id: &MessageId) -> Option<Box<Downstream>> {
        self.in_flight.take(message_id.as_str())
    }

    /// Upstream messages and receipts handed over for a manual ack and not acked yet.
    pub fn awaiting_acks(&self) -> usize {
        self.awaiting_ack.len()
    }

    // ---- internals ----

    fn sent(&mut self, now: Instant) {
        self.last_sent = now;
    }

    fn emit(&mut self, event: ConnectionEvent) {
        self.events.push_back(event);
    }

    fn anomaly(&mut self, a: Anomaly) {
        self.stats.anomalies += 1;
        self.emit(ConnectionEvent::Anomaly(a));
    }

    fn maybe_finish_close(&mut self, now: Instant) {
        if self.state == State::Closing && self.in_flight.len() == 0 && self.awaiting_ack.is_empty()
        {
            self.finish(now, CloseReason::Local);
        }
    }

    fn fail(&mut self, now: Instant, detail: &str) {
        let e = XmlError {
            kind: crate::error::XmlErrorKind::Malformed {
                detail: detail.to_owned(),
            },
            offset: self.reader.framer().consumed(),
        };
        self.fail_protocol(now, e);
    }

    fn fail_protocol(&mut self, now: Instant, e: XmlError) {
        if !self.end_sent {
            let condition = stream_condition(&e);
            write::stream_error(&mut self.out, condition, None);
        }
        self.finish(now, CloseReason::Protocol(PeerError::Xml(e)));
    }

    /// Ends the connection once: closes our stream if the transport is still there, and
    /// reports every unanswered message.
    fn finish(&mut self, now: Instant, reason: CloseReason) {
        if self.state == State::Closed {
            return;
        }
        if !self.end_sent {
            write::stream_end(&mut self.out);
            self.end_sent = true;
            self.sent(now);
        }
        self.state = State::Closed;
        self.setup_deadline = None;
        self.close_deadline = None;
        self.ping_deadline = None;
        self.drain_deadline = None;
        self.stanza_open_since = None;
        self.awaiting_ack.clear();
        let unanswered = self.in_flight.drain_in_order();
        self.emit(ConnectionEvent::Closed { reason, unanswered });
    }
}

/// The stream error condition (RFC 6120 §4.9.3) for an XML problem we found.
fn stream_condition(e: &XmlError) -> &'static str {
    use crate::error::XmlErrorKind as K;
    match e.kind {
        K::StanzaTooLarge { .. } | K::HeaderTooLarge { .. } | K::TooDeep { .. } => {
            "policy-violation"
        }
        K::Dtd | K::Comment | K::ProcessingInstruction | K::UndefinedEntity { .. } => {
            "restricted-xml"
        }
        K::InvalidUtf8 => "unsupported-encoding",
        _ => "not-well-formed",
    }
}

/// `now + d`, or `now` should it not be representable (durations are validated to at most
/// ten years, so it always is in practice; a deadline that fires at once beats a panic).
pub(crate) fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or(now)
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Field by field, without the buffers: `out` may hold the SASL `<auth>` element.
        f.debug_struct("Connection")
            .field("id", &self.id)
            .field("state", &self.state)
            .field("config", &self.config)
            .field("jid", &self.jid)
            .field("in_flight", &self.in_flight.len())
            .field("awaiting_ack", &self.awaiting_ack.len())
            .field("queued_out_bytes", &self.out.len())
            .field("events", &self.events.len())
            .field("buffered_in_bytes", &self.reader.framer().buffered())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}
