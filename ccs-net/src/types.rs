//! The public types every adapter shares: errors, events, the close report and the counters.

use std::fmt;
use std::time::Duration;

use ccs_proto::client::{ClientEvent, ClientStats, DownReason, Outcome};
use ccs_proto::connection::ConnId;
use ccs_proto::message::{Downstream, MessageId};

/// Why an adapter's `connect` failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectError {
    /// A setting is invalid.
    Config(String),
    /// The server refused the sender id or key.
    AuthFailed {
        /// The SASL condition (`not-authorized`).
        condition: String,
        /// The server's text, if any.
        text: Option<String>,
    },
    /// No connection came up: the server could not be reached, or TLS failed (an untrusted
    /// certificate, a wrong server name), or the stream broke before it was ready, on every
    /// attempt until the first-connection deadline; or at once for a failure retrying cannot
    /// fix. The text is the last failure.
    Connect(String),
}

impl ConnectError {
    /// The core's verdict on the first connection ([`ClientEvent::FirstConnectFailed`]).
    pub(crate) fn from_first(error: &DownReason) -> Self {
        match error {
            DownReason::Closed(ccs_proto::connection::CloseReason::AuthFailed {
                condition,
                text,
            }) => Self::AuthFailed {
                condition: condition.clone(),
                text: text.clone(),
            },
            DownReason::ConnectFailed(why) | DownReason::ConnectFailedPermanently(why) => {
                Self::Connect(why.clone())
            }
            other => Self::Connect(other.to_string()),
        }
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => write!(f, "invalid configuration: {e}"),
            Self::AuthFailed { condition, text } => {
                write!(
                    f,
                    "the server refused the credentials (`{condition}`): check the sender id and the server key"
                )?;
                match text {
                    Some(t) => write!(f, " ({t})"),
                    None => Ok(()),
                }
            }
            Self::Connect(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for ConnectError {}

/// Why a message was not queued. The message is given back where there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct SendError {
    /// What was wrong.
    pub kind: ccs_proto::client::SendErrorKind,
    /// The message, untouched (`None` only if the client task is gone).
    pub message: Option<Box<Downstream>>,
}

impl SendError {
    pub(crate) fn from_core(e: ccs_proto::client::SendError) -> Self {
        Self {
            kind: e.kind,
            message: Some(e.message),
        }
    }

    pub(crate) fn closed(message: Option<Box<Downstream>>) -> Self {
        Self {
            kind: ccs_proto::client::SendErrorKind::Closed,
            message,
        }
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "message not queued: {:?}", self.kind)
    }
}

impl std::error::Error for SendError {}

/// Monitoring events, from `Client::events`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A connection is ready.
    ConnectionUp {
        /// Which.
        id: ConnId,
        /// Its bound JID.
        jid: String,
    },
    /// A connection ended.
    ConnectionDown {
        /// Which.
        id: ConnId,
        /// Why.
        reason: DownReason,
        /// When its replacement is dialled, if it is.
        will_retry_in: Option<Duration>,
    },
    /// The server refused the credentials.
    AuthFailed {
        /// The connection.
        id: ConnId,
        /// The SASL condition.
        condition: String,
        /// Consecutive failures so far.
        consecutive_failures: u32,
    },
    /// The outcome of a message whose `send` future was dropped after it was queued.
    DetachedOutcome {
        /// The message.
        message: Box<Downstream>,
        /// Its outcome.
        outcome: Outcome,
    },
    /// The socket of a connection (or connection attempt) is closed and its task has ended.
    /// Comes once per connection, after the core gave it up ([`Event::ConnectionDown`]).
    SocketClosed {
        /// Which.
        id: ConnId,
        /// Whether it ended cleanly: everything queued, the stream end and our TLS
        /// `close_notify` were written, and the server closed its side with its own, within
        /// [`Config::disconnect_grace`](crate::Config::disconnect_grace). Otherwise the socket failed, or was closed at the
        /// end of the grace with whatever was still unwritten.
        graceful: bool,
    },
    /// Any other event of the core (draining, retries, anomalies, ...).
    Core(Box<ClientEvent>),
    /// The client has closed.
    Closed,
}

/// What `Client::close` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Messages never answered (each also got an `Unsent` outcome).
    pub unsent: Vec<MessageId>,
    /// Whether the deadline ended the close.
    pub deadline_passed: bool,
    /// Upstream messages and receipts received and never acked, in the order they arrived:
    /// those whose [`AckToken`](crate::AckToken) was dropped or came too late, those still buffered in the
    /// [`UpstreamStream`](crate::UpstreamStream), and those left un-acked because it was full or, in manual-ack
    /// mode, not read. The server redelivers each of them (to a later client). One whose
    /// redelivered copy was acked is not listed. The last 10 000 are remembered.
    pub unacked_upstream: Vec<UnackedUpstream>,
}

/// An upstream message or receipt received and never acked, in [`Report::unacked_upstream`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnackedUpstream {
    /// Its id (a receipt's keeps its `dr2:` prefix).
    pub message_id: MessageId,
    /// Its `from`: the device's registration token, or the server for a receipt.
    pub from: String,
    /// Whether it is a delivery receipt.
    pub receipt: bool,
}

/// Counters of a client, from `Client::stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// The core's counters.
    pub core: ClientStats,
    /// Auto-ack mode: upstream messages and receipts acked at once without being handed
    /// over, because nobody reads the [`UpstreamStream`](crate::UpstreamStream) (it was never taken, or dropped).
    pub upstream_discarded: u64,
    /// Upstream messages and receipts neither handed over nor acked, so that the server
    /// redelivers them later: the [`UpstreamStream`](crate::UpstreamStream) was full, or (manual-ack mode) nobody
    /// reads it.
    pub upstream_deferred: u64,
    /// Connections whose task is running: dialling, open, or closing (within
    /// [`Config::disconnect_grace`](crate::Config::disconnect_grace)). Each has at most one socket.
    pub sockets: usize,
}

/// What the engine answers a queued message with: the message back and its outcome.
pub(crate) type Answer = Result<(Box<Downstream>, Outcome), SendError>;
