//! One CCS stream, client side, from the first byte to the last: [`Connection`].

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use crate::config::{AckMode, AuthcidForm, ConnectionConfig};
use crate::error::{JsonError, PeerError, UsageError, XmlError};
use crate::flow::{Found, InFlight};
use crate::message::{
    Ack, AppAck, Control, ControlType, Downstream, Incoming, MessageId, Nack, NackCode, Receipt,
    Upstream,
};
use crate::stanza::{Features, Iq, IqPayload, IqType, Message, Stanza, StanzaError, StreamError};
use crate::xml::{Event as XmlEvent, StreamReader, write};

/// Identifies a connection among the many a client may hold. Chosen by the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum State {
    /// Our header is sent; waiting for the server's.
    AwaitingHeader,
    /// Waiting for the SASL mechanisms.
    AwaitingFeatures,
    /// `<auth>` sent; waiting for success or failure.
    Authenticating,
    /// SASL succeeded and the stream restarted; waiting for the new header.
    AwaitingRestart,
    /// Waiting for the post-authentication features (bind).
    AwaitingBindFeatures,
    /// Bind requested; waiting for the JID.
    Binding,
    /// Session requested; waiting for the result.
    StartingSession,
    /// Ready: messages flow both ways.
    Connected,
    /// The server announced CONNECTION_DRAINING: nothing new is sent; answers and upstream
    /// messages are still received and acked until the server closes the stream, or until
    /// [`ConnectionConfig::drain_timeout`] passes and the connection closes itself.
    Draining,
    /// [`Connection::close`] was called: nothing new is sent; waiting for answers to the
    /// messages in flight until the deadline.
    Closing,
    /// Over. [`ConnectionEvent::Closed`] has been (or is about to be) emitted.
    Closed,
}

impl State {
    /// Whether the stream is still being set up.
    pub fn is_setup(self) -> bool {
        matches!(
            self,
            Self::AwaitingHeader
                | Self::AwaitingFeatures
                | Self::Authenticating
                | Self::AwaitingRestart
                | Self::AwaitingBindFeatures
                | Self::Binding
                | Self::StartingSession
        )
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// [`Connection::close`]: every answer arrived, or the deadline passed.
    Local,
    /// The server sent `</stream:stream>`.
    ServerClosed,
    /// The transport ended without a closing tag.
    Eof {
        /// Whether a stanza was cut off.
        mid_stanza: bool,
    },
    /// The server sent `<stream:error>`.
    StreamError(StreamError),
    /// SASL failed (`not-authorized`: wrong sender id or key). It will not fix itself.
    AuthFailed {
        /// The SASL condition.
        condition: String,
        /// The server's text, if any.
        text: Option<String>,
    },
    /// The server does not offer SASL PLAIN, the only mechanism CCS uses for app servers.
    PlainNotOffered {
        /// The mechanisms it offered.
        offered: Vec<String>,
    },
    /// Resource binding failed or was not offered.
    BindFailed {
        /// The error condition, or a description.
        condition: String,
    },
    /// A stream-setup step got no answer in time.
    SetupTimeout {
        /// The step that timed out.
        state: State,
    },
    /// No complete frame arrived within the ping timeout.
    PingTimeout,
    /// A stanza stayed open (begun, never finished) longer than
    /// [`ConnectionConfig::stanza_timeout`]: the peer trickles bytes or is stuck.
    StanzaTimeout,
    /// The server announced CONNECTION_DRAINING and had not closed the stream
    /// [`ConnectionConfig::drain_timeout`] later: the client closed it.
    DrainTimeout,
    /// The server broke the protocol (bad XML, an oversized stanza, ...).
    Protocol(PeerError),
}

impl CloseReason {
    /// Whether the credentials were refused (retrying soon will not help).
    pub fn is_auth_failure(&self) -> bool {
        matches!(self, Self::AuthFailed { .. })
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local => f.write_str("closed locally"),
            Self::ServerClosed => f.write_str("the server closed the stream"),
            Self::Eof { mid_stanza: true } => {
                f.write_str("connection lost in the middle of a stanza")
            }
            Self::Eof { mid_stanza: false } => f.write_str("connection lost"),
            Self::StreamError(e) => write!(f, "stream error `{}`", e.condition),
            Self::AuthFailed { condition, .. } => write!(
                f,
                "authentication failed (`{condition}`): check the sender id and server key"
            ),
            Self::PlainNotOffered { offered } => {
                write!(
                    f,
                    "the server does not offer SASL PLAIN (offered: {offered:?})"
                )
            }
            Self::BindFailed { condition } => write!(f, "resource binding failed: {condition}"),
            Self::SetupTimeout { state } => write!(f, "stream setup timed out in {state:?}"),
            Self::PingTimeout => f.write_str("no answer to a ping: connection dead"),
            Self::StanzaTimeout => {
                f.write_str("a stanza stayed unfinished too long: connection dead")
            }
            Self::DrainTimeout => {
                f.write_str("the server drained the connection but never closed it")
            }
            Self::Protocol(e) => write!(f, "protocol error: {e}"),
        }
    }
}

/// A handle to ack one upstream message or receipt in [`AckMode::Manual`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckHandle {
    conn: ConnId,
    ack: AppAck,
}

impl AckHandle {
    #[cfg(test)]
    pub(crate) fn for_tests(conn: ConnId, to: &str, message_id: &str) -> Self {
        Self {
            conn,
            ack: AppAck {
                to: to.to_owned(),
                message_id: MessageId::new(message_id).expect("a valid test id"),
            },
        }
    }

    /// The connection the message arrived on (the only one the ack is valid on).
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// The id of the message to ack (receipts keep their `dr2:` prefix).
    pub fn message_id(&self) -> &MessageId {
        &self.ack.message_id
    }

    /// The `from` of the message to ack (the `to` of the ack).
    pub fn to(&self) -> &str {
        &self.ack.to
    }
}

/// Something the server did that does not fit the protocol but does not end the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Anomaly {
    /// An ack for a `message_id` not in flight.
    UnknownAck(Ack),
    /// A nack for a `message_id` not in flight.
    UnknownNack(Nack),
    /// A stanza error that matches no message in flight.
    UnmatchedStanzaError {
        /// The stanza id.
        id: Option<String>,
        /// The error.
        error: Option<Box<StanzaError>>,
    },
    /// A `<gcm>` payload that is not a CCS message; it was not acked.
    InvalidPayload {
        /// The payload text.
        json: String,
        /// Why it was refused.
        error: JsonError,
    },
    /// A stanza that is not part of CCS (a presence, a message without `<gcm>`); ignored.
    UnexpectedStanza(Box<Stanza>),
    /// The server refused one of our acks of an upstream message or receipt: a `BAD_ACK`
    /// nack, or a stanza error echoing the ack. No downstream message is affected (an
    /// upstream id may equal a downstream id in flight); the server redelivers the upstream
    /// message if it still wants the ack.
    AckRefused {
        /// The `message_id` the ack carried.
        message_id: Option<String>,
        /// The nack, if it came as one.
        nack: Option<Box<Nack>>,
        /// The stanza error, if it came as one.
        error: Option<Box<StanzaError>>,
    },
}

/// What a connection reports to its owner, from [`Connection::poll_event`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// Stream setup finished: messages can be sent.
    Connected {
        /// The bound JID.
        jid: String,
    },
    /// The server acked a message.
    Acked {
        /// The message, given back.
        message: Downstream,
        /// The canonical registration id to use from now on, if the server gave one.
        canonical_registration_id: Option<String>,
    },
    /// The server nacked a message (never with CONNECTION_DRAINING: see `Returned`).
    Nacked {
        /// The message, given back.
        message: Downstream,
        /// The nack.
        nack: Nack,
    },
    /// The server answered a message with a stanza error: a final failure for it.
    StanzaError {
        /// The message, given back.
        message: Downstream,
        /// The error.
        error: Box<StanzaError>,
    },
    /// The server refused a message because the connection is draining: send it again on
    /// another connection. Not a failure.
    Returned {
        /// The message, given back.
        message: Downstream,
    },
    /// An upstream message from a device. In manual mode `ack` is the handle to ack it with.
    Upstream {
        /// The message.
        message: Upstream,
        /// The ack handle ([`AckMode::Manual`] only).
        ack: Option<AckHandle>,
    },
    /// A delivery receipt. In manual mode `ack` is the handle to ack it with.
    Receipt {
        /// The receipt.
        receipt: Receipt,
        /// The ack handle ([`AckMode::Manual`] only).
        ack: Option<AckHandle>,
    },
    /// The server announced CONNECTION_DRAINING: open another connection for new messages.
    Draining,
    /// The window had been full and has room again.
    WindowOpen,
    /// An answer (ack, nack or stanza error) for a message the owner took back with
    /// [`Connection::expire`]: the message is not given again; only its id.
    LateAnswer {
        /// The message's id.
        message_id: MessageId,
    },
    /// A control message of an unknown type, or a message of an unknown `message_type`:
    /// reported, never acked.
    Unrecognized(Incoming),
    /// The server did something odd that does not end the connection.
    Anomaly(Anomaly),
    /// The connection is over. Emitted exactly once. `unanswered` holds every message that
    /// got no answer, in the order sent: resend them on another connection. (Messages taken
    /// back with [`Connection::expire`] are not in it: the owner already has them.)
    Closed {
        /// Why.
        reason: CloseReason,
        /// Messages in flight that got no ack, nack or stanza error.
        unanswered: Vec<Downstream>,
    },
}

/// Why [`Connection::send`] refused a message. The message is given back.
#[derive(Debug, Clone, PartialEq)]
pub struct SendError {
    /// What was wrong.
    pub kind: SendErrorKind,
    /// The message, untouched.
    pub message: Box<Downstream>,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "message {} not sent: {}",
            self.message.message_id(),
            self.kind
        )
    }
}

impl std::error::Error for SendError {}

/// The kinds of [`SendError`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendErrorKind {
    /// The stream is still being set up.
    NotReady,
    /// The window is full; [`ConnectionEvent::WindowOpen`] says when there is room.
    Blocked,
    /// The connection is draining: use another one.
    Draining,
    /// The connection is closing or closed.
    Closed,
    /// A message with this `message_id` is already in flight.
    DuplicateId,
    /// The message could not be encoded as JSON.
    Unencodable(String),
    /// The payload is larger than `max_payload_bytes`.
    TooLarge {
        /// The payload's size.
        bytes: usize,
        /// The configured limit.
        limit: usize,
    },
}

impl fmt::Display for SendErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotReady => f.write_str("the connection is not ready yet"),
            Self::Blocked => f.write_str("the window is full"),
            Self::Draining => f.write_str("the connection is draining"),
            Self::Closed => f.write_str("the connection is closing or closed"),
            Self::DuplicateId => f.write_str("a message with this message_id is in flight"),
            Self::Unencodable(e) => write!(f, "the message cannot be encoded: {e}"),
            Self::TooLarge { bytes, limit } => {
                write!(f, "payload of {bytes} bytes exceeds the limit of {limit}")
            }
        }
    }
}

/// Why [`Connection::ack`] refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AckError {
    /// The connection the message arrived on is gone; the server will redeliver it.
    ConnectionGone,
    /// The handle belongs to another connection.
    WrongConnection,
    /// This message was already acked (or never needed an ack).
    NotPending,
}

impl fmt::Display for AckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ConnectionGone => {
                "the connection is gone: the server will redeliver the message; ack that copy"
            }
            Self::WrongConnection => "the handle belongs to another connection",
            Self::NotPending => "the message is not waiting for an ack",
        })
    }
}

impl std::error::Error for AckError {}

/// Counters of one connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes queued for sending.
    pub bytes_out: u64,
    /// Downstream messages sent.
    pub sent: u64,
    /// Acks received for our messages.
    pub acked: u64,
    /// Nacks received (including CONNECTION_DRAINING).
    pub nacked: u64,
    /// Stanza errors received for our messages.
    pub stanza_errors: u64,
    /// Upstream messages received.
    pub upstream: u64,
    /// Receipts received.
    pub receipts: u64,
    /// Acks we sent.
    pub acks_sent: u64,
    /// Whitespace keepalives sent.
    pub keepalives_sent: u64,
    /// XEP-0199 pings sent.
    pub pings_sent: u64,
    /// Anomalies reported.
    pub anomalies: u64,
}

const BIND_ID: &str = "bind_1";
const SESSION_ID: &str = "sess_1";

/// One CCS stream, client side, sans-IO.
///
/// The connection never touches a socket or a clock: its owner feeds it bytes and time and
/// carries out what it asks for.
///
/// - **Inputs:** [`handle_input`](Self::handle_input) (bytes received),
///   [`handle_eof`](Self::handle_eof) (the transport ended),
///   [`handle_timeout`](Self::handle_timeout) (the deadline from `poll_timeout` passed; a
///   spurious call does nothing).
/// - **Commands:** [`send`](Self::send), [`ack`](Self::ack) and [`release`](Self::release)
///   (manual mode), [`close`](Self::close).
/// - **Outputs:** [`poll_transmit`](Self::poll_transmit) (bytes to write),
///   [`poll_event`](Self::poll_event), [`poll_timeout`](Self::poll_timeout).
/// - **Getters:** [`state`](Self::state), [`in_flight`](Self::in_flight),
///   [`window`](Self::window), [`stats`](Self::stats), [`jid`](Self::jid), [`id`](Self::id).
///
/// The run loop, after creating it (its stream header is already queued):
///
/// ```text
/// loop {
///     while let Some(bytes) = conn.poll_transmit() { socket.write_all(&bytes); }
///     socket.flush();
///     while let Some(event) = conn.poll_event() { handle(event); /* may call send/ack */ }
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
    pub fn send(&mut self, now: Instant, message: Downstream) -> Result<(), SendError> {
        let refuse = |kind, message| {
            Err(SendError {
                kind,
                message: Box::new(message),
            })
        };
        match self.state {
            State::Connected => {}
            State::Draining => return refuse(SendErrorKind::Draining, message),
            State::Closing | State::Closed => return refuse(SendErrorKind::Closed, message),
            _ => return refuse(SendErrorKind::NotReady, message),
        }
        if self.in_flight.len() >= self.config.window {
            self.window_was_full = true;
            return refuse(SendErrorKind::Blocked, message);
        }
        if self.in_flight.contains(message.message_id().as_str()) {
            return refuse(SendErrorKind::DuplicateId, message);
        }
        if let Some(limit) = self.config.max_payload_bytes {
            let bytes = serde_json::to_vec(&message).map_or(usize::MAX, |v| v.len());
            if bytes > limit {
                return refuse(SendErrorKind::TooLarge { bytes, limit }, message);
            }
        }
        let start = self.out.len();
        if let Err(e) = write::downstream(&mut self.out, &message) {
            // A built Downstream always serializes; should it not, say so rather than drop it.
            return refuse(SendErrorKind::Unencodable(e.to_string()), message);
        }
        self.stats.bytes_out += (self.out.len() - start) as u64;
        self.stats.sent += 1;
        self.in_flight.insert(message);
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
    pub fn expire(&mut self, message_id: &MessageId) -> Option<Downstream> {
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

    fn handle_xml(&mut self, now: Instant, ev: XmlEvent) {
        match ev {
            XmlEvent::Whitespace(_) => {}
            XmlEvent::Header(_) => match self.state {
                State::AwaitingHeader => self.step(now, State::AwaitingFeatures),
                State::AwaitingRestart => self.step(now, State::AwaitingBindFeatures),
                _ => self.fail(now, "unexpected stream header"),
            },
            XmlEvent::End => {
                self.finish(now, CloseReason::ServerClosed);
            }
            XmlEvent::StreamError(e) => {
                self.finish(now, CloseReason::StreamError(e));
            }
            XmlEvent::Stanza(s) => self.handle_stanza(now, s),
        }
    }

    fn step(&mut self, now: Instant, state: State) {
        self.state = state;
        self.setup_deadline = state
            .is_setup()
            .then(|| later(now, self.config.setup_timeout));
    }

    fn handle_stanza(&mut self, now: Instant, stanza: Stanza) {
        match (self.state, stanza) {
            (State::AwaitingFeatures, Stanza::Features(f)) => self.authenticate(now, f),
            (State::Authenticating, Stanza::SaslSuccess) => {
                self.reader.reset();
                write::client_header(&mut self.out, &self.config.domain);
                self.sent(now);
                self.step(now, State::AwaitingRestart);
            }
            (State::Authenticating, Stanza::SaslFailure(f)) => self.finish(
                now,
                CloseReason::AuthFailed {
                    condition: f.condition,
                    text: f.text,
                },
            ),
            (State::AwaitingBindFeatures, Stanza::Features(f)) => self.bind(now, f),
            // A result without an id is taken too: some servers answered an id-less request
            // that way (PROTOCOL.md §2.8), and only our setup iq can be waiting.
            (State::Binding, Stanza::Iq(iq))
                if matches!(iq.id.as_deref(), Some(BIND_ID) | None)
                    && matches!(iq.kind, IqType::Result | IqType::Error) =>
            {
                self.setup_iq(now, iq)
            }
            (State::StartingSession, Stanza::Iq(iq))
                if matches!(iq.id.as_deref(), Some(SESSION_ID) | None)
                    && matches!(iq.kind, IqType::Result | IqType::Error) =>
            {
                self.setup_iq(now, iq)
            }
            (_, Stanza::Iq(iq)) => self.handle_iq(now, iq),
            // Once bound the server may send at once, before the optional session result.
            (
                State::StartingSession | State::Connected | State::Draining | State::Closing,
                Stanza::Message(m),
            ) => self.handle_message(now, m),
            (_, other) => self.anomaly(Anomaly::UnexpectedStanza(Box::new(other))),
        }
    }

    fn authenticate(&mut self, now: Instant, f: Features) {
        if !f.offers_plain() {
            self.finish(
                now,
                CloseReason::PlainNotOffered {
                    offered: f.mechanisms,
                },
            );
            return;
        }
        let authcid = match self.config.authcid {
            AuthcidForm::Qualified => format!("{}@{}", self.config.sender_id, self.config.domain),
            AuthcidForm::Bare => self.config.sender_id.to_string(),
        };
        write::auth_plain(&mut self.out, "", &authcid, self.config.server_key.expose());
        self.sent(now);
        self.step(now, State::Authenticating);
    }

    fn bind(&mut self, now: Instant, f: Features) {
        if !f.bind {
            self.finish(
                now,
                CloseReason::BindFailed {
                    condition: "the server did not offer resource binding".into(),
                },
            );
            return;
        }
        self.session_offered = f.session;
        write::iq_bind_set(&mut self.out, BIND_ID, self.config.resource.as_deref());
        self.sent(now);
        self.step(now, State::Binding);
    }

    fn setup_iq(&mut self, now: Instant, iq: Iq) {
        match (self.state, iq.kind) {
            (State::Binding, IqType::Result) => {
                let jid = match iq.payload {
                    IqPayload::Bind { jid: Some(jid), .. } => jid,
                    _ => {
                        return self.finish(
                            now,
                            CloseReason::BindFailed {
                                condition: "bind result without a JID".into(),
                            },
                        );
                    }
                };
                self.jid = Some(jid);
                if self.session_offered && self.config.request_session {
                    write::iq_session_set(&mut self.out, SESSION_ID);
                    self.sent(now);
                    self.step(now, State::StartingSession);
                } else {
                    self.connected(now);
                }
            }
            (State::Binding, _) => {
                let condition = iq
                    .error
                    .map(|e| e.condition)
                    .unwrap_or_else(|| "bind refused".into());
                self.finish(now, CloseReason::BindFailed { condition });
            }
            // Session is optional in practice (PROTOCOL.md §2.9): an error does not stop us.
            (State::StartingSession, _) => self.connected(now),
            _ => {}
        }
    }

    fn connected(&mut self, now: Instant) {
        self.step(now, State::Connected);
        let jid = self.jid.clone().unwrap_or_default();
        self.emit(ConnectionEvent::Connected { jid });
        if self.drain_pending {
            self.start_draining(now);
        }
    }

    fn handle_iq(&mut self, now: Instant, iq: Iq) {
        match iq.kind {
            IqType::Get | IqType::Set => {
                if iq.payload == IqPayload::Ping {
                    write::iq_result(&mut self.out, iq.id.as_deref(), iq.from.as_deref());
                } else {
                    write::iq_error(
                        &mut self.out,
                        iq.id.as_deref(),
                        iq.from.as_deref(),
                        "cancel",
                        "service-unavailable",
                    );
                }
                self.sent(now);
            }
            // Results (our pings) and errors need nothing: the frame already counted as life.
            _ => {}
        }
    }

    fn handle_message(&mut self, now: Instant, m: Message) {
        if m.kind.as_deref() == Some("error") {
            return self.stanza_error(m);
        }
        let Some(json) = m.gcm else {
            return self.anomaly(Anomaly::UnexpectedStanza(Box::new(Stanza::Message(m))));
        };
        let incoming = match Incoming::from_json(&json) {
            Ok(i) => i,
            Err(error) => return self.anomaly(Anomaly::InvalidPayload { json, error }),
        };
        match incoming {
            Incoming::Ack(ack) => match self.answered(&ack.message_id) {
                Some(Found::Message(message)) => {
                    self.stats.acked += 1;
                    self.emit(ConnectionEvent::Acked {
                        message,
                        canonical_registration_id: ack.registration_id,
                    });
                }
                Some(Found::Taken) => {
                    self.stats.acked += 1;
                    self.late_answer(ack.message_id);
                }
                None => self.anomaly(Anomaly::UnknownAck(ack)),
            },
            // BAD_ACK answers one of our acks of an upstream message, never a downstream
            // message, whatever id it carries.
            Incoming::Nack(nack) if nack.error == NackCode::BadAck => {
                self.anomaly(Anomaly::AckRefused {
                    message_id: Some(nack.message_id.as_str().to_owned()),
                    nack: Some(Box::new(nack)),
                    error: None,
                })
            }
            Incoming::Nack(nack) => match self.answered(&nack.message_id) {
                Some(found) => {
                    self.stats.nacked += 1;
                    let draining = nack.error == NackCode::ConnectionDraining;
                    if draining {
                        self.start_draining(now);
                    }
                    match found {
                        Found::Message(message) if draining => {
                            self.emit(ConnectionEvent::Returned { message })
                        }
                        Found::Message(message) => {
                            self.emit(ConnectionEvent::Nacked { message, nack })
                        }
                        Found::Taken => self.late_answer(nack.message_id),
                    }
                }
                None => self.anomaly(Anomaly::UnknownNack(nack)),
            },
            Incoming::Upstream(message) => {
                self.stats.upstream += 1;
                let ack = self.ack_or_handle(now, message.ack());
                self.emit(ConnectionEvent::Upstream { message, ack });
            }
            Incoming::Receipt(receipt) => {
                self.stats.receipts += 1;
                let ack = self.ack_or_handle(now, receipt.ack());
                self.emit(ConnectionEvent::Receipt { receipt, ack });
            }
            Incoming::Control(Control {
                control_type: ControlType::ConnectionDraining,
                ..
            }) => self.start_draining(now),
            other => self.emit(ConnectionEvent::Unrecognized(other)),
        }
    }

    fn stanza_error(&mut self, m: Message) {
        let echoed = m.gcm.as_deref().and_then(echoed_payload);
        if let Some(Echo {
            message_id,
            message_type: Some(t),
        }) = &echoed
            && t == "ack"
        {
            // The server refused one of our acks (which carry no stanza id): it concerns an
            // upstream message, not a downstream message that happens to share its id.
            let message_id = message_id.clone();
            return self.anomaly(Anomaly::AckRefused {
                message_id,
                nack: None,
                error: m.error,
            });
        }
        // Tie it to the message by stanza id, else by the message_id in the echoed JSON.
        let by_stanza_id = m.id.as_deref().filter(|id| self.in_flight.contains(id));
        let echoed = echoed.and_then(|e| e.message_id);
        let id = by_stanza_id
            .map(str::to_owned)
            .or(echoed.filter(|id| self.in_flight.contains(id)));
        let found = id.and_then(|id| {
            let mid = MessageId::new(id).ok()?;
            Some((self.answered(&mid)?, mid))
        });
        match found {
            Some((Found::Message(message), _)) => {
                self.stats.stanza_errors += 1;
                let error = m.error.unwrap_or_default();
                self.emit(ConnectionEvent::StanzaError { message, error });
            }
            Some((Found::Taken, message_id)) => {
                self.stats.stanza_errors += 1;
                self.late_answer(message_id);
            }
            None => self.anomaly(Anomaly::UnmatchedStanzaError {
                id: m.id,
                error: m.error,
            }),
        }
    }

    /// Removes an answered message from the in-flight table, reporting window room.
    fn answered(&mut self, id: &MessageId) -> Option<Found> {
        let found = self.in_flight.remove(id.as_str())?;
        if self.window_was_full && self.in_flight.len() < self.config.window {
            self.window_was_full = false;
            if self.state == State::Connected {
                self.emit(ConnectionEvent::WindowOpen);
            }
        }
        Some(found)
    }

    fn late_answer(&mut self, message_id: MessageId) {
        self.emit(ConnectionEvent::LateAnswer { message_id });
    }

    fn ack_or_handle(&mut self, now: Instant, ack: AppAck) -> Option<AckHandle> {
        match self.config.ack_mode {
            AckMode::Auto => {
                self.write_ack(now, &ack);
                None
            }
            AckMode::Manual => {
                self.awaiting_ack.insert(ack.clone());
                Some(AckHandle { conn: self.id, ack })
            }
        }
    }

    fn write_ack(&mut self, now: Instant, ack: &AppAck) {
        let start = self.out.len();
        write::app_ack(&mut self.out, ack);
        self.stats.bytes_out += (self.out.len() - start) as u64;
        self.stats.acks_sent += 1;
        self.sent(now);
    }

    /// CONNECTION_DRAINING, in whatever state messages are processed: while the session is
    /// still being set up it takes effect as setup ends; while closing it bounds the close.
    fn start_draining(&mut self, now: Instant) {
        if self.drain_deadline.is_some() {
            return;
        }
        match self.state {
            State::Connected => self.state = State::Draining,
            State::Closing => {}
            s if s.is_setup() => {
                self.drain_pending = true;
                return;
            }
            _ => return,
        }
        self.drain_deadline = Some(later(now, self.config.drain_timeout));
        self.emit(ConnectionEvent::Draining);
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

/// The parts of an echoed payload that tell what it answers.
#[derive(serde::Deserialize)]
struct Echo {
    message_id: Option<String>,
    message_type: Option<String>,
}

/// The echoed payload of a stanza error, if it is a JSON object with string fields.
fn echoed_payload(json: &str) -> Option<Echo> {
    serde_json::from_str::<Echo>(json).ok()
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
