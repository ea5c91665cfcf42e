//! The server side of one CCS stream, sans-IO: what the emulator and the in-memory test pair
//! drive.
//!
//! [`ServerConnection`] speaks CCS as the real connection server did (PROTOCOL.md Part 2):
//! stream header and SASL features with `X-OAUTH2`, `X-GOOGLE-TOKEN`, `PLAIN`; SASL PLAIN
//! against a configured sender id and server key, accepting every identity form CCS accepted
//! (§2.4); the stream restart; binding with a server suffix on the resource (§2.8); the
//! optional session; XEP-0199 pings; then `<message>` stanzas carrying CCS JSON both ways. It
//! stays within RFC 6120, so unmodified XMPP clients work against it.
//!
//! It decides nothing about the messages themselves: each downstream message is reported as
//! a [`ServerEvent`] and stays *pending* until the owner answers it with exactly one
//! [`ServerConnection::ack`], [`ServerConnection::nack`] or
//! [`ServerConnection::stanza_error`]. Upstream messages and receipts the owner sends stay
//! *unacked* until the client acks them ([`ServerConnection::unacked_upstream`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use serde::Deserialize as _;
use serde_json::Value;

use crate::credentials::{DEFAULT_DOMAIN, SenderId, ServerKey};
use crate::error::{JsonError, XmlError, XmlErrorKind};
use crate::message::{
    Ack, AppAck, ClientMessage, Control, ControlType, Downstream, Incoming, MessageId, Nack,
    NackCode, Receipt, Upstream,
};
use crate::rng::SplitMix64;
use crate::sasl;
use crate::stanza::{Auth, Iq, IqPayload, IqType, Message, Stanza, StreamError, StreamHeader, ns};
use crate::xml::write::{self, MessageAttrs};
use crate::xml::{Event, FramerConfig, StreamReader};

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// How a [`ServerConnection`] behaves. [`ServerConfig::new`] gives CCS's defaults; change
/// fields afterwards.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The XMPP domain of the service: the domain of bound JIDs, the `from` of the stream
    /// header when the client's header has no `to`, and the domain a bare SASL authcid must
    /// be paired with. Default [`DEFAULT_DOMAIN`] (`gcm.googleapis.com`).
    pub domain: String,
    /// The one sender id this connection accepts.
    pub sender_id: SenderId,
    /// Its server key (the SASL PLAIN password).
    pub server_key: ServerKey,
    /// The SASL mechanisms offered, in order. Default `X-OAUTH2`, `X-GOOGLE-TOKEN`, `PLAIN`
    /// (as CCS offered them). Only `PLAIN` can succeed, and only when it is listed.
    pub mechanisms: Vec<String>,
    /// Whether the post-authentication features offer `<session/>`. Default `true`.
    pub offer_session: bool,
    /// Pending downstream messages (received, not yet answered) allowed before a new one
    /// counts as a window violation. Default 100 (PROTOCOL.md §7.1).
    pub window: usize,
    /// Pending downstream messages beyond which the connection is closed with the stream
    /// error `policy-violation`, so that memory stays bounded. Default `10 * window`.
    pub max_pending: usize,
    /// Upstream messages and receipts sent and not yet acked by the client beyond which
    /// [`ServerConnection::send_upstream`] and [`ServerConnection::send_receipt`] are refused
    /// (CCS stopped sending upstream messages to a client that did not ack). Default 1000.
    pub max_unacked_upstream: usize,
    /// Failed SASL attempts after which the stream is closed with `policy-violation`
    /// (RFC 6120 §6.4.5). Default 3.
    pub max_auth_failures: u32,
    /// If set, a client that has not bound a resource this long after
    /// [`ServerConnection::new`] gets the stream error `connection-timeout`. Default `None`.
    pub setup_timeout: Option<Duration>,
    /// How long after [`ServerConnection::close`] the server waits for the client's
    /// `</stream:stream>` before it considers the stream closed anyway. Default 5 s.
    pub close_timeout: Duration,
    /// Limits of the XML framer (stanza size, depth, header size).
    pub framer: FramerConfig,
    /// Seed of the generator for stream ids (16 upper-case hex digits) and bind resources.
    /// Give each connection its own seed (for example a connection counter) to get distinct
    /// ids. Default 0.
    pub seed: u64,
}

impl ServerConfig {
    /// CCS's defaults for the given credentials.
    pub fn new(sender_id: SenderId, server_key: ServerKey) -> Self {
        let window = 100;
        Self {
            domain: DEFAULT_DOMAIN.to_owned(),
            sender_id,
            server_key,
            mechanisms: ["X-OAUTH2", "X-GOOGLE-TOKEN", "PLAIN"]
                .into_iter()
                .map(str::to_owned)
                .collect(),
            offer_session: true,
            window,
            max_pending: 10 * window,
            max_unacked_upstream: 1000,
            max_auth_failures: 3,
            setup_timeout: None,
            close_timeout: Duration::from_secs(5),
            framer: FramerConfig::default(),
            seed: 0,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Outputs, states, errors
// ---------------------------------------------------------------------------------------------

/// Where the stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServerState {
    /// Waiting for the client's stream header.
    AwaitingHeader,
    /// Header and SASL features sent; waiting for `<auth>`.
    Authenticating,
    /// `<success/>` sent; waiting for the client's new stream header.
    AwaitingRestart,
    /// Post-authentication features sent; waiting for the bind request.
    Binding,
    /// A resource is bound: messages flow both ways.
    Bound,
    /// Bound, and `CONNECTION_DRAINING` has been sent: messages still flow, and the owner may
    /// nack new downstream messages with `CONNECTION_DRAINING`.
    Draining,
    /// The server sent `</stream:stream>` ([`ServerConnection::close`]) and waits for the
    /// client's: input is still read (acks, late messages), nothing more is written.
    Closing,
    /// Over: every input is ignored and every command refused.
    Closed,
}

/// Why the connection closed (in [`ServerEvent::Closed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client sent `</stream:stream>` (the server answered with its own).
    ClientClosed,
    /// The owner called [`ServerConnection::close`] and the client answered with its
    /// `</stream:stream>`.
    ServerClosed,
    /// The bytes ended (TCP/TLS EOF) before the stream was closed.
    Eof,
    /// The client's bytes were not an acceptable XMPP stream; the server sent the matching
    /// stream error (`not-well-formed`, `restricted-xml`, `policy-violation`, ...).
    ProtocolError(XmlError),
    /// The client sent a `<stream:error>`.
    ClientStreamError(StreamError),
    /// The server ended the stream with this stream error: by the owner's command
    /// ([`ServerConnection::stream_error`]) or on its own (`not-authorized` for a stanza
    /// before authentication, `policy-violation` after too many failed authentications or
    /// beyond `max_pending`, `unsupported-stanza-type`, `invalid-namespace`, ...). If the
    /// server had already sent `</stream:stream>`, nothing more was written.
    StreamError {
        /// The stream error condition.
        condition: String,
        /// The text sent with it.
        text: Option<String>,
    },
    /// The client did not bind a resource within [`ServerConfig::setup_timeout`]; the
    /// stream error `connection-timeout` was sent.
    SetupTimeout,
    /// The client did not answer [`ServerConnection::close`] within
    /// [`ServerConfig::close_timeout`].
    CloseTimeout,
}

/// What happened on the stream, for the owner. Drain with [`ServerConnection::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[must_use]
pub enum ServerEvent {
    /// SASL PLAIN succeeded for this authentication identity.
    Authenticated {
        /// The authcid as the client sent it (`SENDER@gcm.googleapis.com` or `SENDER`).
        authcid: String,
    },
    /// A SASL attempt failed; `<failure>` with this condition was sent.
    AuthFailed {
        /// `not-authorized`, `invalid-mechanism`, `incorrect-encoding`, `malformed-request`
        /// or `aborted`.
        condition: String,
    },
    /// A resource was bound: the stream is ready for messages.
    Bound {
        /// The full JID, `SENDER@domain/RESOURCE`.
        jid: String,
    },
    /// A downstream message arrived; it is now pending until answered.
    Downstream {
        /// The message.
        message: Box<Downstream>,
        /// The `id` attribute of its `<message>` stanza, as received.
        stanza_id: Option<String>,
    },
    /// A message arrived with a `message_id` that is already pending. It is not accepted a
    /// second time (still one pending slot, still one answer) and nothing else is reported
    /// for it.
    DuplicatePending {
        /// The id.
        message_id: MessageId,
    },
    /// A downstream message arrived while `pending >= window` (reported before the message's
    /// own event; the message is still accepted).
    WindowViolation {
        /// Pending messages before this one.
        pending: usize,
        /// The configured window.
        window: usize,
    },
    /// The client acked an upstream message or receipt this connection sent; it is no
    /// longer in [`ServerConnection::unacked_upstream`].
    AppAck(AppAck),
    /// The client acked a `message_id` this connection has not sent (or already had
    /// acked). The real server answered a malformed ack with a `BAD_ACK` nack:
    /// see [`ServerConnection::nack_bad_ack`].
    UnknownAck(AppAck),
    /// The text of a `<gcm>` element is not a message an app server may send (not JSON, not
    /// an object, a field of the wrong type, a missing `message_id`, an ack without `to`,
    /// ...). If it had a string `message_id`, that id is now pending: answer it like any
    /// downstream message (CCS nacked such messages with `INVALID_JSON`, or `BAD_ACK` for a
    /// bad ack). Without one, answer with [`ServerConnection::stanza_error`] by stanza id (as
    /// CCS did for a missing `message_id`), or [`ServerConnection::send_stanza_error_raw`].
    InvalidPayload {
        /// The `id` attribute of the `<message>` stanza, as received.
        stanza_id: Option<String>,
        /// The `message_id`, if the JSON is an object with a string `message_id`.
        message_id: Option<String>,
        /// The JSON text as received (entities decoded, trimmed).
        json: String,
        /// What is wrong with it.
        error: JsonError,
    },
    /// A `<message>` without a `<gcm xmlns="google:mobile:data">` child, or one of
    /// `type="error"`: ignored otherwise.
    UnexpectedStanza(Box<Stanza>),
    /// The client answered a ping sent with [`ServerConnection::ping`] (with a result, or
    /// with an error, which shows it is alive just as well).
    Pong {
        /// The ping's id.
        id: String,
    },
    /// The connection is over. Always the last event, and there is exactly one.
    Closed {
        /// Why.
        reason: CloseReason,
    },
}

/// Why a command was refused. Nothing was written and nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerError {
    /// The stream is not ready for this command (not bound yet, for messages and pings;
    /// not opened yet, for a whitespace keepalive).
    NotReady {
        /// The state it is in.
        state: ServerState,
    },
    /// The server has already sent `</stream:stream>`: nothing more can be written.
    Closing,
    /// The connection is closed.
    Closed,
    /// No pending message has this id (never received, or already answered).
    NotPending {
        /// The id given.
        id: String,
    },
    /// [`ServerConfig::max_unacked_upstream`] upstream messages and receipts are waiting for
    /// the client's ack.
    TooManyUnacked {
        /// The limit.
        limit: usize,
    },
    /// The message could not be serialized as JSON (serde_json's message).
    Encode(JsonError),
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotReady { state } => write!(f, "the stream is not ready (state {state:?})"),
            Self::Closing => f.write_str("the server has already closed its side of the stream"),
            Self::Closed => f.write_str("the connection is closed"),
            Self::NotPending { id } => write!(f, "no pending message with id {id:?}"),
            Self::TooManyUnacked { limit } => write!(
                f,
                "{limit} upstream messages and receipts are waiting for the client's ack"
            ),
            Self::Encode(e) => write!(f, "cannot encode the message: {e}"),
        }
    }
}

impl std::error::Error for ServerError {}

/// Counters of one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Bytes given to [`ServerConnection::handle_input`] (including ignored ones).
    pub bytes_in: u64,
    /// Bytes handed out by [`ServerConnection::poll_transmit`].
    pub bytes_out: u64,
    /// Top-level elements received (not counting headers, whitespace and the end tag).
    pub stanzas_in: u64,
    /// Top-level elements written (not counting headers, whitespace and the end tag).
    pub stanzas_out: u64,
    /// Downstream messages received, duplicates included.
    pub downstream_received: u64,
    /// `<gcm>` payloads that were not a valid app-server message.
    pub invalid_payloads: u64,
    /// Acks sent.
    pub acks_sent: u64,
    /// Nacks sent (including [`ServerConnection::nack_bad_ack`]).
    pub nacks_sent: u64,
    /// Stanza errors sent.
    pub stanza_errors_sent: u64,
    /// Upstream messages sent with [`ServerConnection::send_upstream`].
    pub upstream_sent: u64,
    /// Receipts sent with [`ServerConnection::send_receipt`].
    pub receipts_sent: u64,
    /// Acks received from the client, known or not.
    pub app_acks_received: u64,
}

// ---------------------------------------------------------------------------------------------
// The connection
// ---------------------------------------------------------------------------------------------

/// The server side of one CCS stream, from the client's first byte to the last. Sans-IO: no
/// sockets, no clock, no threads; time is passed in.
///
/// # Run loop
///
/// ```text
/// let mut conn = ServerConnection::new(config, now);          // a client connected
/// loop {
///     // inputs: bytes, EOF, or the deadline of poll_timeout() passing
///     conn.handle_input(now, &bytes) | conn.handle_eof(now) | conn.handle_timeout(now);
///     while let Some(ev) = conn.poll_event() { /* answer: conn.ack(..), conn.nack(..) */ }
///     if let Some(buf) = conn.poll_transmit() { /* write and flush buf */ }
///     if conn.state() == ServerState::Closed { break; }        // then close the socket
///     // sleep until readable or until conn.poll_timeout()
/// }
/// ```
///
/// Methods fall in four groups: inputs (`handle_*`), outputs (`poll_*`, drain them after
/// every input and every command), commands (verbs: [`ack`](Self::ack),
/// [`nack`](Self::nack), [`send_upstream`](Self::send_upstream), [`close`](Self::close), ...;
/// caller mistakes come back as a [`ServerError`], nothing else changes) and getters (nouns).
/// Misbehaviour of the client never panics and never returns an error: it closes the stream
/// with the stream error RFC 6120 prescribes and shows up once, as [`ServerEvent::Closed`].
///
/// ```
/// use std::time::Instant;
/// use ccs_proto::credentials::{SenderId, ServerKey};
/// use ccs_proto::server::{ServerConfig, ServerConnection, ServerEvent, ServerState};
/// use ccs_proto::xml::write;
///
/// # #[allow(clippy::disallowed_methods)]
/// let now = Instant::now();
/// let config = ServerConfig::new(SenderId::new("1234")?, ServerKey::new("key")?);
/// let mut conn = ServerConnection::new(config, now);
///
/// let mut client = Vec::new();
/// write::client_header(&mut client, "gcm.googleapis.com");
/// write::auth_plain(&mut client, "", "1234@gcm.googleapis.com", "key");
/// conn.handle_input(now, &client);
/// assert_eq!(
///     conn.poll_event(),
///     Some(ServerEvent::Authenticated { authcid: "1234@gcm.googleapis.com".into() })
/// );
/// let out = conn.poll_transmit().unwrap();
/// assert!(out.ends_with(b"<success xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"/>"));
///
/// client.clear();
/// write::client_header(&mut client, "gcm.googleapis.com");
/// write::iq_bind_set(&mut client, "b1", Some("test"));
/// conn.handle_input(now, &client);
/// let Some(ServerEvent::Bound { jid }) = conn.poll_event() else { panic!() };
/// assert!(jid.starts_with("1234@gcm.googleapis.com/test"));
/// assert_eq!(conn.state(), ServerState::Bound);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ServerConnection {
    config: ServerConfig,
    state: ServerState,
    reader: StreamReader,
    rng: SplitMix64,
    /// The latest `now` given to any method: [`Self::close`] measures its timeout from it.
    last_now: Instant,
    deadline: Option<Instant>,
    /// Whether this stream's header (the current one, after a restart) has been written.
    header_sent: bool,
    /// Whether `</stream:stream>` has been written.
    end_sent: bool,
    /// The `to` of the client's current stream header.
    stream_to: Option<String>,
    stream_id: Option<String>,
    auth_failures: u32,
    authenticated: bool,
    jid: Option<String>,
    /// Pending downstream messages by `message_id`.
    pending: HashMap<MessageId, Pending>,
    pending_seq: u64,
    window_violations: u64,
    /// Invalid payloads without a `message_id` but with a stanza id, newest last, so that
    /// [`Self::stanza_error`] can answer them by stanza id.
    recent_invalid: VecDeque<(String, String)>,
    /// Upstream messages and receipts sent and not acked, in send order.
    unacked: BTreeMap<u64, Incoming>,
    /// Keyed by the ack each expects: `(from, message_id)`, since device-chosen ids collide
    /// across devices.
    unacked_by_id: HashMap<AppAck, u64>,
    unacked_seq: u64,
    /// Ids of pings sent and not answered, oldest first.
    pings: VecDeque<String>,
    ping_seq: u64,
    out: Vec<u8>,
    events: VecDeque<ServerEvent>,
    stats: ServerStats,
}

/// A downstream message waiting for its answer.
#[derive(Debug)]
struct Pending {
    /// The message's `to` (an ack or nack names it as `from`).
    to: Option<String>,
    /// The `id` attribute of its stanza.
    stanza_id: Option<String>,
    /// The JSON text as received (a stanza error echoes it).
    json: String,
    /// Arrival order.
    seq: u64,
}

/// How many invalid payloads without a `message_id` are remembered for
/// [`ServerConnection::stanza_error`].
const RECENT_INVALID: usize = 32;
/// How many unanswered pings are remembered.
const MAX_PINGS: usize = 16;
/// The longest resource a client may request (RFC 6120 allows 1023 bytes, the server
/// appends 8).
const MAX_RESOURCE: usize = 1023 - 8;

impl ServerConnection {
    /// A connection whose client has just connected (nothing is written until the client's
    /// stream header arrives).
    pub fn new(config: ServerConfig, now: Instant) -> Self {
        let deadline = config.setup_timeout.and_then(|t| now.checked_add(t));
        Self {
            reader: StreamReader::new(config.framer.clone()),
            rng: SplitMix64(config.seed),
            config,
            state: ServerState::AwaitingHeader,
            last_now: now,
            deadline,
            header_sent: false,
            end_sent: false,
            stream_to: None,
            stream_id: None,
            auth_failures: 0,
            authenticated: false,
            jid: None,
            pending: HashMap::new(),
            pending_seq: 0,
            window_violations: 0,
            recent_invalid: VecDeque::new(),
            unacked: BTreeMap::new(),
            unacked_by_id: HashMap::new(),
            unacked_seq: 0,
            pings: VecDeque::new(),
            ping_seq: 0,
            out: Vec::new(),
            events: VecDeque::new(),
            stats: ServerStats::default(),
        }
    }

    // ---- inputs -------------------------------------------------------------------------

    /// Bytes received from the client, in pieces of any size. Bytes that arrive after a
    /// stream restart point (SASL success) in the same piece are kept for the new stream.
    /// Ignored once closed.
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) {
        self.touch(now);
        self.stats.bytes_in += data.len() as u64;
        if self.state == ServerState::Closed {
            return;
        }
        self.reader.push(data);
        while self.state != ServerState::Closed {
            match self.reader.next_event() {
                Ok(Some(event)) => self.on_event(event),
                Ok(None) => break,
                Err(e) => {
                    self.on_xml_error(e);
                    break;
                }
            }
        }
    }

    /// The client's bytes ended (TCP or TLS EOF): [`CloseReason::Eof`] unless already closed.
    pub fn handle_eof(&mut self, now: Instant) {
        self.touch(now);
        self.close_with(CloseReason::Eof);
    }

    /// Time passed. Does nothing unless the deadline of [`Self::poll_timeout`] has come
    /// (calling it early or twice is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.touch(now);
        let Some(deadline) = self.deadline else {
            return;
        };
        if now < deadline {
            return;
        }
        self.deadline = None;
        match self.state {
            ServerState::Closed | ServerState::Bound | ServerState::Draining => {}
            ServerState::Closing => self.close_with(CloseReason::CloseTimeout),
            _ => self.fail_with(
                "connection-timeout",
                Some("stream setup did not complete in time"),
                CloseReason::SetupTimeout,
            ),
        }
    }

    // ---- outputs ------------------------------------------------------------------------

    /// Everything queued for the wire since the last call, as one buffer; `None` if nothing.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.out.is_empty() {
            return None;
        }
        self.stats.bytes_out += self.out.len() as u64;
        Some(std::mem::take(&mut self.out))
    }

    /// Appends everything queued for the wire to `buf` (an allocation-free form of
    /// [`poll_transmit`](Self::poll_transmit)); returns whether there was anything.
    pub fn transmit_into(&mut self, buf: &mut Vec<u8>) -> bool {
        if self.out.is_empty() {
            return false;
        }
        self.stats.bytes_out += self.out.len() as u64;
        buf.extend_from_slice(&self.out);
        self.out.clear();
        true
    }

    /// The next event, oldest first; `None` when there is none.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] should be called next: the setup deadline (if
    /// [`ServerConfig::setup_timeout`] is set and the client has not bound yet) or the end of
    /// the wait after [`Self::close`]. `None` when there is no timer.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            ServerState::Closed => None,
            _ => self.deadline,
        }
    }

    // ---- getters ------------------------------------------------------------------------

    /// Where the stream is.
    pub fn state(&self) -> ServerState {
        self.state
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Downstream messages received and not yet answered (with an invalid payload that had a
    /// `message_id`).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Whether a message with this id is pending.
    pub fn is_pending(&self, message_id: &str) -> bool {
        self.pending.contains_key(message_id)
    }

    /// The ids of the pending messages, in arrival order.
    pub fn pending_ids(&self) -> Vec<&MessageId> {
        let mut ids: Vec<(&MessageId, u64)> =
            self.pending.iter().map(|(id, p)| (id, p.seq)).collect();
        ids.sort_unstable_by_key(|&(_, seq)| seq);
        ids.into_iter().map(|(id, _)| id).collect()
    }

    /// How many downstream messages arrived while `pending >= window`.
    pub fn window_violations(&self) -> u64 {
        self.window_violations
    }

    /// The bound JID (`SENDER@domain/RESOURCE`), once bound.
    pub fn jid(&self) -> Option<&str> {
        self.jid.as_deref()
    }

    /// The `id` of the server's current stream header, once written.
    pub fn stream_id(&self) -> Option<&str> {
        self.stream_id.as_deref()
    }

    /// Upstream messages and receipts sent by [`Self::send_upstream`] and
    /// [`Self::send_receipt`] that the client has not acked, in send order (the real server
    /// redelivered them on the client's next connection).
    pub fn unacked_upstream(&self) -> impl Iterator<Item = &Incoming> {
        self.unacked.values()
    }

    /// The counters.
    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    // ---- commands -----------------------------------------------------------------------

    /// Acks a pending downstream message: `{"message_type":"ack","from":<its to>,
    /// "message_id":..[,"registration_id":<canonical_registration_id>]}`, stanza without
    /// `type`. The message is no longer pending.
    pub fn ack(
        &mut self,
        message_id: &str,
        canonical_registration_id: Option<&str>,
    ) -> Result<(), ServerError> {
        self.ready()?;
        self.pending_entry(message_id)?;
        let (id, pending) = self
            .pending
            .remove_entry(message_id)
            .expect("pending_entry just found it");
        let mut ack = Ack::new(id);
        ack.from = pending.to;
        ack.registration_id = canonical_registration_id.map(str::to_owned);
        if let Err(e) = self.write_gcm(None, &ack) {
            let pending = Pending {
                to: ack.from,
                ..pending
            };
            self.pending.insert(ack.message_id, pending);
            return Err(e);
        }
        self.stats.acks_sent += 1;
        Ok(())
    }

    /// Nacks a pending downstream message: `{"message_type":"nack","from":<its to>,
    /// "message_id":..,"error":<code>[,"error_description":..]}`, stanza without `type`.
    /// The message is no longer pending.
    pub fn nack(
        &mut self,
        message_id: &str,
        code: NackCode,
        description: Option<&str>,
    ) -> Result<(), ServerError> {
        self.ready()?;
        let (id, pending) = self.pending_entry(message_id)?;
        let mut nack = Nack::new(id.clone(), code);
        nack.from = pending.to.clone();
        nack.error_description = description.map(str::to_owned);
        self.write_gcm(None, &nack)?;
        self.pending.remove(message_id);
        self.stats.nacks_sent += 1;
        Ok(())
    }

    /// Nacks a client ack with `BAD_ACK` (as CCS answered a malformed ack; the nack's
    /// `message_id` is the ack's). Touches neither pending nor unacked messages.
    pub fn nack_bad_ack(
        &mut self,
        ack: &AppAck,
        description: Option<&str>,
    ) -> Result<(), ServerError> {
        self.ready()?;
        let mut nack = Nack::new(ack.message_id.clone(), NackCode::BadAck);
        nack.error_description = description.map(str::to_owned);
        self.write_gcm(None, &nack)?;
        self.stats.nacks_sent += 1;
        Ok(())
    }

    /// Answers a message with a stanza error in CCS's form (PROTOCOL.md §3.8): the original
    /// stanza id, `type="error"`, `to` the bound JID, the original JSON echoed in `<gcm>`, and
    /// `<error code=.. type=..><CONDITION/><text>TEXT</text></error>` with the error type and
    /// the legacy code of the condition (`modify` and `400` for `bad-request`).
    ///
    /// `id` is looked up as a pending `message_id` first, then as the stanza id of a pending
    /// message, then as the stanza id of one of the last 32 invalid payloads that had no
    /// `message_id` (as CCS answered a missing `message_id`). A pending message is then no
    /// longer pending.
    pub fn stanza_error(
        &mut self,
        id: &str,
        condition: &str,
        text: Option<&str>,
    ) -> Result<(), ServerError> {
        self.ready()?;
        let (stanza_id, json, found) = if let Some(p) = self.pending.get(id) {
            (
                p.stanza_id.clone(),
                p.json.to_string(),
                Found::Pending(None),
            )
        } else if let Some((mid, p)) = self
            .pending
            .iter()
            .filter(|(_, p)| !id.is_empty() && p.stanza_id.as_deref() == Some(id))
            .min_by_key(|(_, p)| p.seq)
        {
            (
                p.stanza_id.clone(),
                p.json.to_string(),
                Found::Pending(Some(mid.clone())),
            )
        } else if let Some(i) = self
            .recent_invalid
            .iter()
            .rposition(|(sid, _)| !id.is_empty() && sid == id)
        {
            let json = self
                .recent_invalid
                .get(i)
                .map(|(_, json)| json.clone())
                .unwrap_or_default();
            (Some(id.to_owned()), json, Found::Invalid(i))
        } else {
            return Err(ServerError::NotPending { id: id.to_owned() });
        };
        self.write_stanza_error(stanza_id.as_deref(), Some(&json), condition, text);
        match found {
            Found::Pending(None) => {
                self.pending.remove(id);
            }
            Found::Pending(Some(mid)) => {
                self.pending.remove(&mid);
            }
            Found::Invalid(i) => {
                self.recent_invalid.remove(i);
            }
        }
        Ok(())
    }

    /// Writes a stanza error as [`Self::stanza_error`] does, with the stanza id and the
    /// echoed JSON given here. Touches no pending message.
    pub fn send_stanza_error_raw(
        &mut self,
        stanza_id: Option<&str>,
        echoed_json: Option<&str>,
        condition: &str,
        text: Option<&str>,
    ) -> Result<(), ServerError> {
        self.ready()?;
        self.write_stanza_error(stanza_id, echoed_json, condition, text);
        Ok(())
    }

    /// Sends an upstream message (stanza `to` the client's bare JID, `from`
    /// `devices@DOMAIN`, `type="normal"`, as captured in PROTOCOL.md §3.2). It stays in
    /// [`Self::unacked_upstream`] until the client acks it (sending the same `message_id`
    /// again replaces the entry).
    pub fn send_upstream(&mut self, message: &Upstream) -> Result<(), ServerError> {
        self.ready()?;
        self.check_unacked(&message.ack())?;
        self.write_gcm(Some("normal"), message)?;
        self.track_unacked(Incoming::Upstream(message.clone()));
        self.stats.upstream_sent += 1;
        Ok(())
    }

    /// Sends a delivery receipt (stanza as for [`Self::send_upstream`]). It stays in
    /// [`Self::unacked_upstream`] until the client acks it.
    pub fn send_receipt(&mut self, receipt: &Receipt) -> Result<(), ServerError> {
        self.ready()?;
        self.check_unacked(&receipt.ack())?;
        self.write_gcm(Some("normal"), receipt)?;
        self.track_unacked(Incoming::Receipt(receipt.clone()));
        self.stats.receipts_sent += 1;
        Ok(())
    }

    /// Sends a control message (stanza without `type`). `CONNECTION_DRAINING` puts the stream
    /// in [`ServerState::Draining`].
    pub fn send_control(&mut self, control: &Control) -> Result<(), ServerError> {
        self.ready()?;
        self.write_gcm(None, control)?;
        if control.control_type == ControlType::ConnectionDraining {
            self.state = ServerState::Draining;
        }
        Ok(())
    }

    /// Sends any server message as is (for tests: a bogus ack, an unknown `message_type`):
    /// stanza `type="normal"` for upstream messages and receipts, no `type` otherwise. It is
    /// not tracked: pending and unacked messages are not touched.
    pub fn send_raw_incoming(&mut self, message: &Incoming) -> Result<(), ServerError> {
        self.ready()?;
        let kind = match message {
            Incoming::Upstream(_) | Incoming::Receipt(_) => Some("normal"),
            _ => None,
        };
        self.write_gcm(kind, message)
    }

    /// Sends an XEP-0199 ping and returns its id; the client's answer is reported as
    /// [`ServerEvent::Pong`]. At most 16 unanswered pings are remembered.
    pub fn ping(&mut self) -> Result<String, ServerError> {
        self.ready()?;
        self.ping_seq += 1;
        let id = format!("s2c-ping-{}", self.ping_seq);
        write::iq_ping(&mut self.out, &id, self.jid.as_deref());
        self.stats.stanzas_out += 1;
        if self.pings.len() >= MAX_PINGS {
            self.pings.pop_front();
        }
        self.pings.push_back(id.clone());
        Ok(id)
    }

    /// Sends a whitespace keepalive (one space), as CCS did when idle. Allowed whenever the
    /// server's stream is open (after its header, before its end tag).
    pub fn whitespace(&mut self) -> Result<(), ServerError> {
        self.writable()?;
        if !self.header_sent {
            return Err(ServerError::NotReady { state: self.state });
        }
        write::whitespace_keepalive(&mut self.out);
        Ok(())
    }

    /// Ends the stream with a stream error (`<stream:error>` with the condition and text,
    /// then `</stream:stream>`, preceded by a stream header if the server had not sent one on
    /// this stream). The connection is then closed ([`CloseReason::StreamError`]). After
    /// [`Self::close`], nothing can be written any more and this only closes.
    pub fn stream_error(&mut self, condition: &str, text: Option<&str>) -> Result<(), ServerError> {
        if self.state == ServerState::Closed {
            return Err(ServerError::Closed);
        }
        self.fail(condition, text);
        Ok(())
    }

    /// Closes the server's side of the stream: writes `</stream:stream>` (preceded by a
    /// stream header if none was sent on this stream) and enters [`ServerState::Closing`].
    /// The client's input is still read (its acks and late messages are reported) until its
    /// `</stream:stream>` ([`CloseReason::ServerClosed`]), its EOF, or
    /// [`ServerConfig::close_timeout`] after the latest `now` this connection was given
    /// ([`CloseReason::CloseTimeout`]).
    pub fn close(&mut self) -> Result<(), ServerError> {
        self.writable()?;
        if !self.header_sent {
            self.write_header();
        }
        write::stream_end(&mut self.out);
        self.end_sent = true;
        self.state = ServerState::Closing;
        self.deadline = self.last_now.checked_add(self.config.close_timeout);
        Ok(())
    }

    // ---- private: input -----------------------------------------------------------------

    fn touch(&mut self, now: Instant) {
        if now > self.last_now {
            self.last_now = now;
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Header(h) => self.on_header(&h),
            Event::Stanza(s) => {
                self.stats.stanzas_in += 1;
                self.on_stanza(s);
            }
            Event::Whitespace(_) => {}
            Event::StreamError(e) => {
                self.end_stream();
                self.close_with(CloseReason::ClientStreamError(e));
            }
            Event::End => {
                if self.end_sent {
                    self.close_with(CloseReason::ServerClosed);
                } else {
                    self.end_stream();
                    self.close_with(CloseReason::ClientClosed);
                }
            }
        }
    }

    fn on_header(&mut self, header: &StreamHeader) {
        if self.end_sent {
            // Only possible when close() was called before the client's first header: the
            // server's stream is over, the client's is ignored until it ends.
            return;
        }
        self.stream_to = header.to().map(str::to_owned);
        self.write_header();
        if header.default_namespace() != Some(ns::CLIENT) {
            return self.fail(
                "invalid-namespace",
                Some("the stream's default namespace must be jabber:client"),
            );
        }
        if let Some(version) = header.version() {
            let major = version.split('.').next().map(str::trim);
            if major != Some("1") {
                return self.fail("unsupported-version", Some("only XMPP 1.0 is supported"));
            }
        }
        match self.state {
            ServerState::AwaitingHeader => {
                let mechanisms: Vec<&str> =
                    self.config.mechanisms.iter().map(String::as_str).collect();
                write::features_sasl(&mut self.out, &mechanisms);
                self.stats.stanzas_out += 1;
                self.state = ServerState::Authenticating;
            }
            _ => {
                write::features_bind(&mut self.out, self.config.offer_session);
                self.stats.stanzas_out += 1;
                self.state = ServerState::Binding;
            }
        }
    }

    fn on_stanza(&mut self, stanza: Stanza) {
        if self.end_sent {
            // Closing: nothing can be answered any more; late messages and acks are still
            // reported.
            if let Stanza::Message(m) = stanza
                && self.jid.is_some()
            {
                self.on_message(m);
            }
            return;
        }
        match stanza {
            Stanza::Auth(auth) => self.on_auth(&auth),
            Stanza::Iq(iq) => self.on_iq(iq),
            Stanza::Message(m) => self.on_message(m),
            Stanza::Other(o) if o.ns == ns::CLIENT && o.name == "presence" => {
                if !self.authenticated {
                    self.not_authorized();
                }
                // Presence means nothing to CCS: ignored (go-xmpp and slixmpp send it).
            }
            Stanza::Other(o) if o.ns == ns::SASL && o.name == "abort" => {
                if self.state == ServerState::Authenticating {
                    self.auth_failed("aborted");
                } else {
                    self.fail("policy-violation", Some("no SASL negotiation in progress"));
                }
            }
            Stanza::Other(o) => {
                let text = format!("unsupported top-level element {{{}}}{}", o.ns, o.name);
                self.fail("unsupported-stanza-type", Some(&text));
            }
            Stanza::Features(_) | Stanza::SaslSuccess | Stanza::SaslFailure(_) => {
                self.fail(
                    "unsupported-stanza-type",
                    Some("a client does not send this element"),
                );
            }
        }
    }

    fn on_auth(&mut self, auth: &Auth) {
        if self.state != ServerState::Authenticating {
            return self.fail("policy-violation", Some("already authenticated"));
        }
        if auth.mechanism != "PLAIN" || !self.config.mechanisms.iter().any(|m| m == "PLAIN") {
            return self.auth_failed("invalid-mechanism");
        }
        let creds = match sasl::decode_plain(&auth.payload) {
            Ok(c) => c,
            Err(e) => return self.auth_failed(e.condition()),
        };
        // PROTOCOL.md §2.4 (inference from what worked and what failed): a bare sender id is
        // completed with the stream's `to`, which must then be the service's domain; an
        // authcid that names its domain is checked by `identity_matches` alone.
        let domain = &self.config.domain;
        let domain_ok = creds.authcid.contains('@')
            || self
                .stream_to
                .as_deref()
                .is_none_or(|to| to.eq_ignore_ascii_case(domain));
        let ok = domain_ok
            && sasl::identity_matches(&creds, self.config.sender_id.as_str(), domain)
            && sasl::key_matches(&creds.password, self.config.server_key.expose());
        if !ok {
            return self.auth_failed("not-authorized");
        }
        write::sasl_success(&mut self.out);
        self.stats.stanzas_out += 1;
        self.authenticated = true;
        self.state = ServerState::AwaitingRestart;
        self.header_sent = false;
        // Bytes after the </auth> already buffered belong to the restarted stream.
        self.reader.reset();
        self.events.push_back(ServerEvent::Authenticated {
            authcid: creds.authcid,
        });
    }

    fn auth_failed(&mut self, condition: &str) {
        write::sasl_failure(&mut self.out, condition, None);
        self.stats.stanzas_out += 1;
        self.auth_failures = self.auth_failures.saturating_add(1);
        self.events.push_back(ServerEvent::AuthFailed {
            condition: condition.to_owned(),
        });
        if self.auth_failures >= self.config.max_auth_failures {
            self.fail(
                "policy-violation",
                Some("too many failed authentication attempts"),
            );
        }
    }

    fn on_iq(&mut self, iq: Iq) {
        match (&iq.kind, &iq.payload) {
            (IqType::Get, IqPayload::Ping) => self.iq_result(&iq),
            (IqType::Result | IqType::Error, _) => {
                if let Some(id) = &iq.id
                    && let Some(i) = self.pings.iter().position(|p| p == id)
                {
                    self.pings.remove(i);
                    self.events.push_back(ServerEvent::Pong { id: id.clone() });
                }
            }
            _ if !self.authenticated => self.not_authorized(),
            (IqType::Set, IqPayload::Bind { resource, .. }) => {
                let resource = resource.clone();
                self.on_bind(&iq, resource.as_deref());
            }
            (IqType::Set, IqPayload::Session) => self.iq_result(&iq),
            (IqType::Get | IqType::Set, _) => {
                self.iq_error(&iq, "cancel", "service-unavailable");
            }
            (IqType::Unknown(_), _) => self.iq_error(&iq, "modify", "bad-request"),
        }
    }

    fn on_bind(&mut self, iq: &Iq, requested: Option<&str>) {
        if self.jid.is_some() {
            return self.iq_error(iq, "cancel", "not-allowed");
        }
        let resource = match requested {
            Some(r) if !r.is_empty() => {
                if r.len() > MAX_RESOURCE || r.chars().any(char::is_control) {
                    return self.iq_error(iq, "modify", "bad-request");
                }
                format!("{r}{:08X}", self.rng.next() >> 32)
            }
            _ => format!("{:016X}", self.rng.next()),
        };
        let jid = format!(
            "{}@{}/{}",
            self.config.sender_id, self.config.domain, resource
        );
        write::iq_bind_result(&mut self.out, iq.id.as_deref(), &jid);
        self.stats.stanzas_out += 1;
        self.jid = Some(jid.clone());
        self.state = ServerState::Bound;
        self.deadline = None;
        self.events.push_back(ServerEvent::Bound { jid });
    }

    fn on_message(&mut self, mut m: Message) {
        if self.jid.is_none() {
            return self.not_authorized();
        }
        if m.kind.as_deref() == Some("error") {
            return self.unexpected(Stanza::Message(m));
        }
        let Some(json) = m.gcm.take() else {
            return self.unexpected(Stanza::Message(m));
        };
        match ClientMessage::from_json(&json) {
            Ok(ClientMessage::Downstream(d)) => self.on_downstream(d, m.id, json),
            Ok(ClientMessage::Ack(ack)) => self.on_app_ack(ack),
            Err(error) => self.on_invalid(m.id, json, error),
        }
    }

    fn on_downstream(&mut self, message: Downstream, stanza_id: Option<String>, json: String) {
        self.stats.downstream_received += 1;
        let to = message.to().map(|t| t.as_str().to_owned());
        if !self.admit(message.message_id(), to, stanza_id.clone(), json) {
            return;
        }
        self.events.push_back(ServerEvent::Downstream {
            message: Box::new(message),
            stanza_id,
        });
    }

    fn on_invalid(&mut self, stanza_id: Option<String>, json: String, error: JsonError) {
        self.stats.invalid_payloads += 1;
        let (message_id, to) = probe_invalid(&json);
        if let Some(id) = &message_id {
            if !self.admit(id, to, stanza_id.clone(), json.clone()) {
                return;
            }
        } else if let Some(sid) = stanza_id.as_deref().filter(|s| !s.is_empty()) {
            if self.recent_invalid.len() >= RECENT_INVALID {
                self.recent_invalid.pop_front();
            }
            self.recent_invalid
                .push_back((sid.to_owned(), json.clone()));
        }
        self.events.push_back(ServerEvent::InvalidPayload {
            stanza_id,
            message_id: message_id.map(MessageId::into_string),
            json,
            error,
        });
    }

    /// Makes a message pending. Returns whether the caller should report it: `false` for a
    /// duplicate (reported here) and when the connection was closed for `max_pending`.
    fn admit(
        &mut self,
        id: &MessageId,
        to: Option<String>,
        stanza_id: Option<String>,
        json: String,
    ) -> bool {
        if self.pending.contains_key(id) {
            self.events.push_back(ServerEvent::DuplicatePending {
                message_id: id.clone(),
            });
            return false;
        }
        let pending = self.pending.len();
        if pending >= self.config.max_pending {
            self.fail(
                "policy-violation",
                Some("too many pending messages: wait for acks before sending more"),
            );
            return false;
        }
        if pending >= self.config.window {
            self.window_violations += 1;
            self.events.push_back(ServerEvent::WindowViolation {
                pending,
                window: self.config.window,
            });
        }
        self.pending_seq += 1;
        self.pending.insert(
            id.clone(),
            Pending {
                to,
                stanza_id,
                json,
                seq: self.pending_seq,
            },
        );
        true
    }

    fn on_app_ack(&mut self, ack: AppAck) {
        self.stats.app_acks_received += 1;
        match self.unacked_by_id.remove(&ack) {
            Some(seq) => {
                self.unacked.remove(&seq);
                self.events.push_back(ServerEvent::AppAck(ack));
            }
            None => self.events.push_back(ServerEvent::UnknownAck(ack)),
        }
    }

    fn unexpected(&mut self, stanza: Stanza) {
        self.events
            .push_back(ServerEvent::UnexpectedStanza(Box::new(stanza)));
    }

    fn not_authorized(&mut self) {
        self.fail(
            "not-authorized",
            Some("authenticate and bind a resource before sending stanzas"),
        );
    }

    fn on_xml_error(&mut self, e: XmlError) {
        let condition = stream_error_condition(&e.kind);
        // The kind only: the offset depends on how the bytes were split for size limits,
        // and the wire should not.
        let text = e.kind.to_string();
        self.fail_with(condition, Some(&text), CloseReason::ProtocolError(e));
    }

    // ---- private: output ----------------------------------------------------------------

    /// Commands that write messages need a bound, open stream.
    fn ready(&self) -> Result<(), ServerError> {
        match self.state {
            ServerState::Bound | ServerState::Draining => Ok(()),
            ServerState::Closing => Err(ServerError::Closing),
            ServerState::Closed => Err(ServerError::Closed),
            state => Err(ServerError::NotReady { state }),
        }
    }

    /// Commands that write anything need the server's stream not to be over.
    fn writable(&self) -> Result<(), ServerError> {
        match self.state {
            ServerState::Closed => Err(ServerError::Closed),
            _ if self.end_sent => Err(ServerError::Closing),
            _ => Ok(()),
        }
    }

    fn pending_entry(&self, message_id: &str) -> Result<(&MessageId, &Pending), ServerError> {
        self.pending
            .get_key_value(message_id)
            .ok_or_else(|| ServerError::NotPending {
                id: message_id.to_owned(),
            })
    }

    fn check_unacked(&self, key: &AppAck) -> Result<(), ServerError> {
        let limit = self.config.max_unacked_upstream;
        if self.unacked.len() >= limit && !self.unacked_by_id.contains_key(key) {
            return Err(ServerError::TooManyUnacked { limit });
        }
        Ok(())
    }

    fn track_unacked(&mut self, message: Incoming) {
        let Some(key) = message.ack_for() else {
            return;
        };
        self.unacked_seq += 1;
        if let Some(old) = self.unacked_by_id.insert(key, self.unacked_seq) {
            self.unacked.remove(&old);
        }
        self.unacked.insert(self.unacked_seq, message);
    }

    /// Writes a `<message>` with CCS JSON: `type` as given, `to` the bare JID and `from`
    /// `devices@DOMAIN` for upstream-like messages (`type="normal"`), no attributes
    /// otherwise.
    fn write_gcm<T: serde::Serialize>(
        &mut self,
        kind: Option<&str>,
        value: &T,
    ) -> Result<(), ServerError> {
        let (to, from) = if kind.is_some() {
            (
                Some(format!("{}@{}", self.config.sender_id, self.config.domain)),
                Some(format!("devices@{}", self.config.domain)),
            )
        } else {
            (None, None)
        };
        let attrs = MessageAttrs {
            id: None,
            to: to.as_deref(),
            from: from.as_deref(),
            kind,
        };
        write::gcm_message_serialize(&mut self.out, &attrs, value)
            .map_err(|e| ServerError::Encode(e.into()))?;
        self.stats.stanzas_out += 1;
        Ok(())
    }

    fn write_stanza_error(
        &mut self,
        stanza_id: Option<&str>,
        echoed_json: Option<&str>,
        condition: &str,
        text: Option<&str>,
    ) {
        let (kind, code) = stanza_error_type(condition);
        let attrs = MessageAttrs {
            id: stanza_id,
            to: self.jid.as_deref(),
            ..MessageAttrs::default()
        };
        write::stanza_error_message(
            &mut self.out,
            &attrs,
            echoed_json,
            code,
            kind,
            condition,
            text,
        );
        self.stats.stanzas_out += 1;
        self.stats.stanza_errors_sent += 1;
    }

    fn iq_result(&mut self, iq: &Iq) {
        write::iq_result(&mut self.out, iq.id.as_deref(), None);
        self.stats.stanzas_out += 1;
    }

    fn iq_error(&mut self, iq: &Iq, kind: &str, condition: &str) {
        write::iq_error(&mut self.out, iq.id.as_deref(), None, kind, condition);
        self.stats.stanzas_out += 1;
    }

    /// Writes the server's stream header for the current stream.
    fn write_header(&mut self) {
        let id = format!("{:016X}", self.rng.next());
        let from = self.stream_to.as_deref().unwrap_or(&self.config.domain);
        write::server_header(&mut self.out, from, &id);
        self.stream_id = Some(id);
        self.header_sent = true;
    }

    /// Answers the client's end of stream with ours, unless ours was sent.
    fn end_stream(&mut self) {
        if !self.end_sent {
            if !self.header_sent {
                self.write_header();
            }
            write::stream_end(&mut self.out);
            self.end_sent = true;
        }
    }

    fn fail(&mut self, condition: &str, text: Option<&str>) {
        let reason = CloseReason::StreamError {
            condition: condition.to_owned(),
            text: text.map(str::to_owned),
        };
        self.fail_with(condition, text, reason);
    }

    /// Sends a stream error and the end tag (with a header first if this stream has none,
    /// RFC 6120 §4.9.1.1) unless the end tag was already sent, then closes.
    fn fail_with(&mut self, condition: &str, text: Option<&str>, reason: CloseReason) {
        if self.state == ServerState::Closed {
            return;
        }
        if !self.end_sent {
            if !self.header_sent {
                self.write_header();
            }
            write::stream_error(&mut self.out, condition, text);
            self.stats.stanzas_out += 1;
            write::stream_end(&mut self.out);
            self.end_sent = true;
        }
        self.close_with(reason);
    }

    /// Closes once: the one place that emits [`ServerEvent::Closed`].
    fn close_with(&mut self, reason: CloseReason) {
        if self.state == ServerState::Closed {
            return;
        }
        self.state = ServerState::Closed;
        self.deadline = None;
        self.events.push_back(ServerEvent::Closed { reason });
    }
}

/// Where [`ServerConnection::stanza_error`] found its message.
enum Found {
    /// Pending, under the id given (`None`) or under this `message_id` (found by stanza id).
    Pending(Option<MessageId>),
    /// An invalid payload in `recent_invalid` at this index.
    Invalid(usize),
}

/// The `message_id` and `to` of a payload that is not a valid app-server message, if it is a
/// JSON object with those as strings.
fn probe_invalid(json: &str) -> (Option<MessageId>, Option<String>) {
    let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(json) else {
        return (None, None);
    };
    let id = obj
        .get("message_id")
        .and_then(Value::as_str)
        // Peer ids are kept as received: MessageId's deserializer accepts any string (this
        // cannot fail on a string; if it ever did, the payload is treated as having no id).
        .and_then(|s| {
            MessageId::deserialize(
                serde::de::value::StrDeserializer::<serde::de::value::Error>::new(s),
            )
            .ok()
        });
    let to = obj.get("to").and_then(Value::as_str).map(str::to_owned);
    (id, to)
}

/// The stream error condition for an XML problem (RFC 6120 §4.9.3).
fn stream_error_condition(kind: &XmlErrorKind) -> &'static str {
    match kind {
        XmlErrorKind::StanzaTooLarge { .. }
        | XmlErrorKind::HeaderTooLarge { .. }
        | XmlErrorKind::TooDeep { .. } => "policy-violation",
        XmlErrorKind::Dtd
        | XmlErrorKind::Comment
        | XmlErrorKind::ProcessingInstruction
        | XmlErrorKind::UndefinedEntity { .. } => "restricted-xml",
        XmlErrorKind::InvalidUtf8 | XmlErrorKind::TextOutsideStanza => "bad-format",
        XmlErrorKind::NotAStreamHeader { found } => {
            let local = found.rsplit(':').next().unwrap_or(found);
            if local == "stream" {
                "invalid-namespace"
            } else {
                "not-well-formed"
            }
        }
        XmlErrorKind::InvalidCharRef { .. }
        | XmlErrorKind::DataAfterEnd
        | XmlErrorKind::Malformed { .. } => "not-well-formed",
    }
}

/// The error `type` and legacy `code` (XEP-0086) of a stanza error condition.
fn stanza_error_type(condition: &str) -> (&'static str, Option<&'static str>) {
    match condition {
        "bad-request" => ("modify", Some("400")),
        "conflict" => ("cancel", Some("409")),
        "feature-not-implemented" => ("cancel", Some("501")),
        "forbidden" => ("auth", Some("403")),
        "gone" => ("modify", Some("302")),
        "internal-server-error" => ("wait", Some("500")),
        "item-not-found" => ("cancel", Some("404")),
        "jid-malformed" => ("modify", Some("400")),
        "not-acceptable" => ("modify", Some("406")),
        "not-allowed" => ("cancel", Some("405")),
        "not-authorized" => ("auth", Some("401")),
        "policy-violation" => ("modify", None),
        "recipient-unavailable" => ("wait", Some("404")),
        "redirect" => ("modify", Some("302")),
        "registration-required" => ("auth", Some("407")),
        "remote-server-not-found" => ("cancel", Some("404")),
        "remote-server-timeout" => ("wait", Some("504")),
        "resource-constraint" => ("wait", Some("500")),
        "service-unavailable" => ("cancel", Some("503")),
        "subscription-required" => ("auth", Some("407")),
        "undefined-condition" => ("cancel", Some("500")),
        "unexpected-request" => ("wait", Some("400")),
        _ => ("cancel", None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_is_send() {
        fn is_send<T: Send>() {}
        is_send::<ServerConnection>();
        is_send::<ServerEvent>();
    }

    #[test]
    fn xml_errors_map_to_stream_conditions() {
        let cases = [
            (
                XmlErrorKind::StanzaTooLarge { limit: 1 },
                "policy-violation",
            ),
            (XmlErrorKind::Comment, "restricted-xml"),
            (XmlErrorKind::Dtd, "restricted-xml"),
            (
                XmlErrorKind::UndefinedEntity { name: "x".into() },
                "restricted-xml",
            ),
            (XmlErrorKind::InvalidUtf8, "bad-format"),
            (
                XmlErrorKind::Malformed {
                    detail: String::new(),
                },
                "not-well-formed",
            ),
            (
                XmlErrorKind::NotAStreamHeader {
                    found: "x:stream".into(),
                },
                "invalid-namespace",
            ),
            (
                XmlErrorKind::NotAStreamHeader {
                    found: "message".into(),
                },
                "not-well-formed",
            ),
        ];
        for (kind, want) in cases {
            assert_eq!(stream_error_condition(&kind), want, "{kind:?}");
        }
    }

    #[test]
    fn probe_finds_string_ids_only() {
        let (id, to) = probe_invalid(r#"{"message_id":"m1","to":"t","time_to_live":"x"}"#);
        assert_eq!(id.map(MessageId::into_string).as_deref(), Some("m1"));
        assert_eq!(to.as_deref(), Some("t"));
        assert_eq!(probe_invalid(r#"{"message_id":1}"#).0, None);
        assert_eq!(probe_invalid("not json").0, None);
        assert_eq!(probe_invalid(r#"["message_id"]"#).0, None);
    }
}
