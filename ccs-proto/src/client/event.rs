//! What a [`Client`] hands out: its [`Output`]s and [`ClientEvent`]s, the one [`Outcome`] of
//! every message, the counters, and the errors of [`Client::send`].

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::connection::{AckHandle, Anomaly, CloseReason, ConnId};
use crate::message::{Downstream, Incoming, MessageId, Nack, Receipt, Upstream};
use crate::stanza::StanzaError;

#[cfg(doc)]
use {
    super::{Client, ClientConfig, ReconnectPolicy, RetryPolicy, UNKNOWN_NACK_CODES},
    crate::connection::config::ConnectionConfig,
};

/// The number [`Client::send`] gives an accepted message; its [`ClientEvent::Outcome`]
/// carries the same number. Unique for the life of the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageTicket(pub(super) u64);

impl MessageTicket {
    /// The number (0, 1, 2, ... in the order `send` accepted the messages).
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for MessageTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ticket#{}", self.0)
    }
}

/// What the client asks of its adapter, from [`Client::poll_output`].
///
/// `Debug` shows the length of [`Output::Transmit`]'s bytes, never the bytes (they may be
/// the SASL `<auth>`, which carries the server key).
#[must_use]
#[non_exhaustive]
pub enum Output {
    /// Open a transport (TCP, then TLS) to the server for this new id; then call
    /// [`Client::handle_connected`] or [`Client::handle_connect_failed`].
    Connect(ConnId),
    /// Write these bytes on this connection's transport (and flush).
    Transmit(ConnId, Vec<u8>),
    /// Close this connection's transport once everything emitted before is written, and
    /// forget the id: later inputs for it are ignored.
    Disconnect(ConnId),
    /// Something for the application.
    Event(ClientEvent),
}

/// What the client reports to the application.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The one outcome of a message `send` accepted.
    Outcome {
        /// The ticket `send` returned.
        ticket: MessageTicket,
        /// The message, given back.
        message: Box<Downstream>,
        /// What became of it.
        outcome: Outcome,
    },
    /// An upstream message from a device. In manual-ack mode `ack` is the handle to ack it
    /// with, valid while the connection it came on lives.
    Upstream {
        /// The message.
        message: Box<Upstream>,
        /// The ack handle ([`AckMode::Manual`](crate::AckMode::Manual) only).
        ack: Option<AckHandle>,
    },
    /// A delivery receipt. In manual-ack mode `ack` is the handle to ack it with.
    Receipt {
        /// The receipt.
        receipt: Box<Receipt>,
        /// The ack handle ([`AckMode::Manual`](crate::AckMode::Manual) only).
        ack: Option<AckHandle>,
    },
    /// A connection finished its setup: messages flow on it.
    ConnectionUp {
        /// The connection.
        id: ConnId,
        /// The JID the server bound.
        jid: String,
    },
    /// The server announced CONNECTION_DRAINING on a connection: nothing new is sent on it,
    /// its answers and upstream messages are still taken until the server closes it, and a
    /// replacement is being opened.
    ConnectionDraining {
        /// The connection.
        id: ConnId,
    },
    /// No connection has come up yet and the client gave up on the first one: the first
    /// connection's deadline ([`ReconnectPolicy::first_connect_timeout`]) passed, or an
    /// attempt failed in a way retrying cannot fix ([`DownReason::is_permanent`]). `error` is
    /// the last failure. The client then closes itself at once: every message accepted so
    /// far is given back as [`Outcome::Unsent`] and [`ClientEvent::Closed`] follows.
    FirstConnectFailed {
        /// The last failure (for a deadline with no attempt finished,
        /// [`DownReason::ConnectTimeout`]).
        error: DownReason,
        /// Whether retrying could not have helped (rather than the deadline passing).
        permanent: bool,
    },
    /// A connection (or an attempt at one) ended. Its unanswered messages went back to the
    /// front of the queue.
    ConnectionDown {
        /// The connection.
        id: ConnId,
        /// Why.
        reason: DownReason,
        /// When its slot opens the next connection, if it does (`None` for a draining
        /// connection, already replaced, and while closing with nothing left to send).
        will_retry_in: Option<Duration>,
    },
    /// The server refused the credentials (after the [`ClientEvent::ConnectionDown`] of that
    /// connection). Retrying backs off; a bad key will not fix itself.
    AuthFailed {
        /// The connection.
        id: ConnId,
        /// The SASL condition (`not-authorized`).
        condition: String,
        /// The server's text, if any.
        text: Option<String>,
        /// Consecutive failures of that connection slot so far.
        consecutive_failures: u32,
    },
    /// A message was nacked with a retryable code and will be sent again.
    Retrying {
        /// Its ticket.
        ticket: MessageTicket,
        /// Its id.
        message_id: MessageId,
        /// The nack.
        nack: Nack,
        /// The attempt that comes next (2 for the first retry).
        attempt: u32,
        /// The delay before it goes back to the front of the queue.
        after: Duration,
    },
    /// The queue had been full (a `send` was refused) and has room again.
    QueueOpen,
    /// An answer arrived for a message already reported [`Outcome::Expired`]; nothing else is
    /// reported for it.
    LateAnswer {
        /// The connection it came on.
        id: ConnId,
        /// The message's id.
        message_id: MessageId,
    },
    /// A control message of an unknown type, or a message of an unknown `message_type`:
    /// reported, never acked.
    Unrecognized {
        /// The connection it came on.
        id: ConnId,
        /// The message.
        message: Incoming,
    },
    /// The server did something odd that did not end the connection.
    Anomaly {
        /// The connection.
        id: ConnId,
        /// What.
        anomaly: Anomaly,
    },
    /// [`Client::close`] finished: every connection is closed and every message has had its
    /// outcome. The last event.
    Closed {
        /// What was never answered.
        report: CloseReport,
    },
}

/// What became of a message.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Outcome {
    /// CCS accepted it.
    Acked {
        /// The canonical registration id to use from now on, if CCS gave one.
        canonical_registration_id: Option<String>,
    },
    /// CCS refused it with a code the retry policy does not retry.
    Nacked {
        /// The nack.
        nack: Nack,
    },
    /// CCS answered it with a stanza error (final).
    Rejected {
        /// The error.
        error: Box<StanzaError>,
    },
    /// The retry policy gave up, or the message cannot be sent at all.
    Failed {
        /// Why.
        reason: FailReason,
        /// How many times CCS nacked it.
        attempts: u32,
    },
    /// It ran out of time ([`ClientConfig::ack_timeout`], [`ClientConfig::max_queue_time`]).
    Expired {
        /// Which limit.
        kind: ExpiryKind,
        /// How many times it went on the wire.
        sends: u32,
    },
    /// [`Client::close`] ended before it was answered: given back.
    Unsent {
        /// Whether it had gone on the wire (the server may have delivered it).
        maybe_delivered: bool,
    },
}

impl Outcome {
    /// Whether CCS accepted the message.
    pub fn is_acked(&self) -> bool {
        matches!(self, Self::Acked { .. })
    }

    /// The nack that ended the message: the final nack of [`Outcome::Nacked`], or the last
    /// retryable nack of [`Outcome::Failed`] with [`FailReason::Nack`]. `None` for every
    /// other outcome (a message that failed as [`FailReason::Unsendable`] was never nacked
    /// for good; the nacks of a message that later expired or went unsent are not kept).
    pub fn nack(&self) -> Option<&Nack> {
        match self {
            Self::Nacked { nack }
            | Self::Failed {
                reason: FailReason::Nack(nack),
                ..
            } => Some(nack),
            _ => None,
        }
    }

    /// A short, stable name of the variant, for logs and metric labels: `"acked"`,
    /// `"nacked"`, `"rejected"`, `"failed"`, `"expired"` or `"unsent"`. The names will not
    /// change; a variant added later gets a new one.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Acked { .. } => "acked",
            Self::Nacked { .. } => "nacked",
            Self::Rejected { .. } => "rejected",
            Self::Failed { .. } => "failed",
            Self::Expired { .. } => "expired",
            Self::Unsent { .. } => "unsent",
        }
    }

    /// Whether the device may have received the message: `true` for [`Outcome::Acked`]
    /// (CCS took it), for [`Outcome::Unsent`] with `maybe_delivered`, and for
    /// [`Outcome::Expired`] with `sends > 0` (it went on the wire and no answer came; CCS
    /// may have taken it). `false` for [`Outcome::Nacked`], [`Outcome::Rejected`] and
    /// [`Outcome::Failed`] (CCS refused it, every time it was sent) and for a message that
    /// never went on the wire.
    pub fn maybe_delivered(&self) -> bool {
        match self {
            Self::Acked { .. } => true,
            Self::Unsent { maybe_delivered } => *maybe_delivered,
            Self::Expired { sends, .. } => *sends > 0,
            Self::Nacked { .. } | Self::Rejected { .. } | Self::Failed { .. } => false,
        }
    }
}

/// Why a message [`Outcome::Failed`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailReason {
    /// Nacked with a retryable code as often as [`RetryPolicy::max_attempts`] allows; the
    /// last nack.
    Nack(Nack),
    /// A connection refused to send it (it cannot be encoded).
    Unsendable(String),
}

/// Which time limit a message ran out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExpiryKind {
    /// [`ClientConfig::ack_timeout`]: sent, not answered in time.
    AckTimeout,
    /// [`ClientConfig::max_queue_time`]: not sent in time.
    QueueTime,
}

/// Why a connection or an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DownReason {
    /// The stream ended (see [`CloseReason`]; [`CloseReason::is_auth_failure`] tells a
    /// refused key).
    Closed(CloseReason),
    /// The adapter could not open the transport (a transient failure: retried).
    ConnectFailed(String),
    /// The adapter could not open the transport for a reason retrying cannot fix (the
    /// server's certificate is not trusted, the host name does not resolve): see
    /// [`ConnectFailure::permanent`].
    ConnectFailedPermanently(String),
    /// The transport was not up within [`ReconnectPolicy::connect_timeout`].
    ConnectTimeout,
    /// The client closed before the transport was up.
    Cancelled,
}

impl DownReason {
    /// Whether the server refused the credentials.
    pub fn is_auth_failure(&self) -> bool {
        matches!(self, Self::Closed(r) if r.is_auth_failure())
    }

    /// Whether retrying soon cannot help: credentials refused, SASL PLAIN not offered, or a
    /// transport failure the adapter marked permanent. Only the first connection gives up
    /// on these ([`ReconnectPolicy::first_connect_timeout`]); later ones back off.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::ConnectFailedPermanently(_)
                | Self::Closed(CloseReason::AuthFailed { .. })
                | Self::Closed(CloseReason::PlainNotOffered { .. })
        )
    }
}

/// Why the adapter could not open a transport, for [`Client::handle_connect_failed`]. A
/// plain string converts into a transient failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectFailure {
    /// What went wrong, for a person.
    pub message: String,
    /// Whether retrying cannot fix it (see [`ConnectFailure::permanent`]).
    pub permanent: bool,
}

impl ConnectFailure {
    /// A failure that may go away (refused, reset, timed out, unreachable network).
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: false,
        }
    }

    /// A failure retrying cannot fix: the server's certificate is not trusted (unknown
    /// issuer, wrong name, expired), the host name does not resolve.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: true,
        }
    }
}

impl From<String> for ConnectFailure {
    fn from(message: String) -> Self {
        Self::transient(message)
    }
}

impl From<&str> for ConnectFailure {
    fn from(message: &str) -> Self {
        Self::transient(message)
    }
}

impl fmt::Display for DownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed(r) => r.fmt(f),
            Self::ConnectFailed(e) => write!(f, "could not connect: {e}"),
            Self::ConnectFailedPermanently(e) => write!(f, "could not connect: {e}"),
            Self::ConnectTimeout => f.write_str("connecting timed out"),
            Self::Cancelled => f.write_str("connection attempt cancelled by close"),
        }
    }
}

/// What [`Client::close`] left unanswered. Each of these messages was also given back in its
/// own [`Outcome::Unsent`] event (so that every message has exactly one outcome, in one
/// place); the report names them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloseReport {
    /// The tickets and ids of the messages never answered, in queue order.
    pub unsent: Vec<(MessageTicket, MessageId)>,
    /// Whether the deadline ended the close (rather than every answer arriving).
    pub deadline_passed: bool,
}

/// Counters of a [`Client`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Messages `send` accepted.
    pub queued: u64,
    /// Messages written to a connection (every copy).
    pub sent: u64,
    /// Copies sent again after their connection ended or returned them (CONNECTION_DRAINING).
    pub resent: u64,
    /// Retries scheduled by the retry policy.
    pub retried: u64,
    /// Outcomes [`Outcome::Acked`].
    pub acked: u64,
    /// Nacks received, every code (CONNECTION_DRAINING included).
    pub nacked: u64,
    /// Nacks received, by code: the documented codes by name, every code this crate does
    /// not know under one key, [`UNKNOWN_NACK_CODES`] (a server's free text cannot grow the
    /// map).
    pub nacked_by_code: BTreeMap<String, u64>,
    /// Outcomes [`Outcome::Nacked`] (final nacks).
    pub nacked_final: u64,
    /// Outcomes [`Outcome::Rejected`] (stanza errors).
    pub rejected: u64,
    /// Outcomes [`Outcome::Failed`].
    pub failed: u64,
    /// Outcomes [`Outcome::Expired`].
    pub expired: u64,
    /// Outcomes [`Outcome::Unsent`].
    pub unsent: u64,
    /// Answers to messages already expired.
    pub late_answers: u64,
    /// Messages returned with CONNECTION_DRAINING.
    pub returned: u64,
    /// Upstream messages received (duplicates included).
    pub upstream_received: u64,
    /// Receipts received (duplicates included).
    pub receipts_received: u64,
    /// Upstream messages and receipts not handed over again.
    pub duplicates_suppressed: u64,
    /// [`Output::Connect`]s emitted.
    pub connection_attempts: u64,
    /// Connections that finished setup.
    pub connections_opened: u64,
    /// Connections and attempts that ended.
    pub connections_closed: u64,
    /// CONNECTION_DRAINING announcements.
    pub drains: u64,
    /// Attempts made after a connection of the same slot ended.
    pub reconnects: u64,
    /// Authentication refusals.
    pub auth_failures: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes handed out in [`Output::Transmit`].
    pub bytes_out: u64,
}

impl ClientStats {
    /// Outcomes reported so far (equals [`queued`](Self::queued) once the client is closed).
    pub fn outcomes(&self) -> u64 {
        self.acked + self.nacked_final + self.rejected + self.failed + self.expired + self.unsent
    }
}

/// Where a connection of the client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Waiting for the adapter to open the transport.
    Connecting,
    /// Transport up; stream setup (header, SASL, bind) under way.
    SettingUp,
    /// Messages flow.
    Up,
    /// CONNECTION_DRAINING: answers still arrive, nothing new is sent.
    Draining,
    /// The client is closing it: waiting for the answers in flight.
    Closing,
}

/// A connection of the client, from [`Client::connections`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// Its id.
    pub id: ConnId,
    /// Where it is.
    pub phase: Phase,
    /// Messages in flight on it.
    pub in_flight: usize,
    /// Its window.
    pub window: usize,
    /// Bytes received on it and not yet decoded (at most one open stanza).
    pub buffered_in: usize,
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(id) => f.debug_tuple("Connect").field(id).finish(),
            Self::Transmit(id, bytes) => write!(f, "Transmit({id:?}, <{} bytes>)", bytes.len()),
            Self::Disconnect(id) => f.debug_tuple("Disconnect").field(id).finish(),
            Self::Event(e) => f.debug_tuple("Event").field(e).finish(),
        }
    }
}

/// Why [`Client::send`] or [`Client::send_priority`] refused a message. The message is given
/// back.
#[derive(Debug, Clone, PartialEq)]
pub struct SendError {
    /// What was wrong.
    pub kind: SendErrorKind,
    /// The message, untouched.
    pub message: Box<Downstream>,
}

/// The kinds of [`SendError`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendErrorKind {
    /// [`ClientConfig::max_queue`] messages are waiting: try again after
    /// [`ClientEvent::QueueOpen`].
    QueueFull {
        /// The limit.
        limit: usize,
    },
    /// A message with this `message_id` is still waiting for its outcome (or, expired, still
    /// in flight): CCS could not tell the answers apart.
    DuplicateId,
    /// [`Client::close`] was called: no new work.
    Closing,
    /// The client is closed.
    Closed,
    /// The payload is larger than [`ConnectionConfig::max_payload_bytes`].
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "message {} not queued: ", self.message.message_id())?;
        match &self.kind {
            SendErrorKind::QueueFull { limit } => {
                write!(f, "the queue is full ({limit} messages)")
            }
            SendErrorKind::DuplicateId => {
                f.write_str("a message with this message_id is still pending")
            }
            SendErrorKind::Closing => f.write_str("the client is closing"),
            SendErrorKind::Closed => f.write_str("the client is closed"),
            SendErrorKind::TooLarge { bytes, limit } => {
                write!(f, "payload of {bytes} bytes exceeds the limit of {limit}")
            }
        }
    }
}

impl std::error::Error for SendError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::NackCode;

    fn nack(code: NackCode) -> Nack {
        Nack::new(MessageId::new("m-1").unwrap(), code)
    }

    /// One outcome of each variant, with the expected `kind`, `nack` and `maybe_delivered`.
    fn table() -> Vec<(Outcome, &'static str, Option<Nack>, bool)> {
        let final_nack = nack(NackCode::DeviceUnregistered);
        let last_nack = nack(NackCode::ServiceUnavailable);
        vec![
            (
                Outcome::Acked {
                    canonical_registration_id: None,
                },
                "acked",
                None,
                true,
            ),
            (
                Outcome::Nacked {
                    nack: final_nack.clone(),
                },
                "nacked",
                Some(final_nack),
                false,
            ),
            (
                Outcome::Rejected {
                    error: Box::default(),
                },
                "rejected",
                None,
                false,
            ),
            (
                Outcome::Failed {
                    reason: FailReason::Nack(last_nack.clone()),
                    attempts: 3,
                },
                "failed",
                Some(last_nack),
                false,
            ),
            (
                Outcome::Failed {
                    reason: FailReason::Unsendable("bad".into()),
                    attempts: 0,
                },
                "failed",
                None,
                false,
            ),
            (
                Outcome::Expired {
                    kind: ExpiryKind::AckTimeout,
                    sends: 1,
                },
                "expired",
                None,
                true,
            ),
            (
                Outcome::Expired {
                    kind: ExpiryKind::QueueTime,
                    sends: 2,
                },
                "expired",
                None,
                true,
            ),
            (
                Outcome::Expired {
                    kind: ExpiryKind::QueueTime,
                    sends: 0,
                },
                "expired",
                None,
                false,
            ),
            (
                Outcome::Unsent {
                    maybe_delivered: true,
                },
                "unsent",
                None,
                true,
            ),
            (
                Outcome::Unsent {
                    maybe_delivered: false,
                },
                "unsent",
                None,
                false,
            ),
        ]
    }

    #[test]
    fn nack_is_the_nack_of_nacked_and_of_failed_by_nack_only() {
        for (outcome, _, want, _) in table() {
            assert_eq!(outcome.nack(), want.as_ref(), "{outcome:?}");
        }
    }

    #[test]
    fn kind_names_every_variant_once() {
        let mut kinds: Vec<&str> = table().iter().map(|(o, ..)| o.kind()).collect();
        for (outcome, want, ..) in table() {
            assert_eq!(outcome.kind(), want, "{outcome:?}");
        }
        kinds.dedup();
        assert_eq!(
            kinds,
            ["acked", "nacked", "rejected", "failed", "expired", "unsent"]
        );
    }

    #[test]
    fn maybe_delivered_when_acked_or_once_on_the_wire_without_a_refusal() {
        for (outcome, _, _, want) in table() {
            assert_eq!(outcome.maybe_delivered(), want, "{outcome:?}");
        }
    }
}
