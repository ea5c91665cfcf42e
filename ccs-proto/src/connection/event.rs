//! What a [`Connection`] reports and refuses: [`ConnectionEvent`] and the reasons, errors,
//! handles and counters that come with it.

use std::fmt;

use crate::error::{JsonError, PeerError};
use crate::message::{Ack, AppAck, Downstream, Incoming, MessageId, Nack, Receipt, Upstream};
use crate::stanza::{Stanza, StanzaError, StreamError};

use super::ConnId;
#[cfg(doc)]
use super::{
    Connection,
    config::{AckMode, ConnectionConfig},
};

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
    pub(super) conn: ConnId,
    pub(super) ack: AppAck,
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
        message: Box<Downstream>,
        /// The canonical registration id to use from now on, if the server gave one.
        canonical_registration_id: Option<String>,
    },
    /// The server nacked a message (never with CONNECTION_DRAINING: see `Returned`).
    Nacked {
        /// The message, given back.
        message: Box<Downstream>,
        /// The nack.
        nack: Nack,
    },
    /// The server answered a message with a stanza error: a final failure for it.
    StanzaError {
        /// The message, given back.
        message: Box<Downstream>,
        /// The error.
        error: Box<StanzaError>,
    },
    /// The server refused a message because the connection is draining: send it again on
    /// another connection. Not a failure.
    Returned {
        /// The message, given back.
        message: Box<Downstream>,
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
        unanswered: Vec<Box<Downstream>>,
    },
}

/// Why [`Connection::send`] refused a message. The message is given back.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionSendError {
    /// What was wrong.
    pub kind: ConnectionSendErrorKind,
    /// The message, untouched.
    pub message: Box<Downstream>,
}

impl fmt::Display for ConnectionSendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "message {} not sent: {}",
            self.message.message_id(),
            self.kind
        )
    }
}

impl std::error::Error for ConnectionSendError {}

/// The kinds of [`ConnectionSendError`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionSendErrorKind {
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

impl fmt::Display for ConnectionSendErrorKind {
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
