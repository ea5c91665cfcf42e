//! What a [`ServerConnection`](super::ServerConnection) reports: its state, events,
//! the reasons it closes, command errors and counters.

use std::fmt;

use crate::error::{JsonError, XmlError};
use crate::message::{AppAck, Downstream, MessageId};
use crate::stanza::{Stanza, StreamError};

#[cfg(doc)]
use super::{ServerConfig, ServerConnection};

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
pub enum ServerCloseReason {
    /// The client sent `</stream:stream>` (the server answered with its own).
    ClientClosed,
    /// The owner called [`ServerConnection::close`] and the client answered with its
    /// `</stream:stream>`.
    ServerClosed,
    /// The bytes ended (TCP/TLS EOF) before the stream was closed.
    Eof,
    /// The client's bytes were not an acceptable XMPP stream; the server sent the matching
    /// stream error (`invalid-xml`, `restricted-xml`, `policy-violation`, ...).
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
    /// A message arrived with a `message_id` that is already pending. It is a message of its
    /// own (PROTOCOL.md §7.1: every downstream message gets exactly one ACK or NACK): it
    /// takes a pending slot of its own, and its [`ServerEvent::Downstream`] or
    /// [`ServerEvent::InvalidPayload`] follows this event. Answer it like any message; the
    /// answers to the copies go out under the one `message_id`, each naming the first
    /// copy's `to` as `from`, and the id stays pending until every copy is answered.
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
    /// longer in [`ServerConnection::unacked_upstream`]. It names the message acked, as this
    /// connection sent it: in lenient mode an ack may name another `to`, and the event still
    /// gives the message's own (so it can be looked up by what was sent).
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
        reason: ServerCloseReason,
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
