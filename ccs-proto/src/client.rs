//! Many CCS connections behind one queue, sans-IO: [`Client`].
//!
//! A [`Connection`] is one XMPP stream. The client owns every connection and all the policy
//! around them: how many to keep open, where each message goes, what happens to messages in
//! flight when a connection ends, which nacks are retried and when, reconnect backoff,
//! upstream de-duplication, expiry and the graceful close. It reads no clock and touches no
//! socket: an adapter feeds it transport events and time, and carries out its outputs.
//!
//! # The contract
//!
//! - **Inputs** (from the adapter): [`Client::handle_connected`],
//!   [`Client::handle_connect_failed`], [`Client::handle_input`], [`Client::handle_eof`],
//!   [`Client::handle_timeout`] (may be called spuriously: it then does nothing).
//! - **Commands** (from the application): [`Client::send`], [`Client::ack`] and
//!   [`Client::release`] (manual acks), [`Client::close`].
//! - **Outputs**: [`Client::poll_output`] gives, in order, [`Output::Connect`] (open a
//!   transport for this id), [`Output::Transmit`] (write these bytes on it),
//!   [`Output::Disconnect`] (close it after writing what came before; forget the id), and
//!   [`Output::Event`] for the application. [`Client::poll_timeout`] says when to call
//!   `handle_timeout` next. Drain `poll_output` after every input and every command.
//! - **Getters**: [`Client::stats`], [`Client::queued`], [`Client::in_flight`],
//!   [`Client::connections`], [`Client::is_closed`].
//!
//! The loop an adapter runs:
//!
//! ```text
//! let mut client = Client::new(config, clock())?;
//! loop {
//!     while let Some(out) = client.poll_output() {
//!         match out {
//!             Output::Connect(id) => dial(id),        // later: handle_connected / handle_connect_failed
//!             Output::Transmit(id, bytes) => { sockets[id].write_all(&bytes); sockets[id].flush() }
//!             Output::Disconnect(id) => drop(sockets.remove(id)),
//!             Output::Event(event) => app(event),     // may call client.send / ack / close
//!         }
//!     }
//!     if client.is_closed() { break }
//!     match wait_until(client.poll_timeout()) {       // readable socket, dial result, app command
//!         Dialled(id, Ok(s)) => { sockets.insert(id, s); client.handle_connected(clock(), id) }
//!         Dialled(id, Err(e)) => client.handle_connect_failed(clock(), id, e.to_string()),
//!         Read(id, bytes) if bytes.is_empty() => client.handle_eof(clock(), id),
//!         Read(id, bytes) => client.handle_input(clock(), id, &bytes),
//!         TimedOut => client.handle_timeout(clock()),
//!     }
//! }
//! ```
//!
//! Every [`Output::Connect`] is followed, sooner or later, by exactly one
//! [`Output::Disconnect`] and one [`ClientEvent::ConnectionDown`] for the same id (and by a
//! second `Disconnect` only if the adapter reports a transport up for an attempt the client
//! had already given up on, so that it closes that stray transport too).
//!
//! # Guarantees
//!
//! Every message `send` accepts gets exactly one [`ClientEvent::Outcome`]: acked, nacked with
//! a final code, rejected with a stanza error, failed after the retry policy gave up,
//! expired, or unsent at close. A message may go on the wire more than once (again after its
//! connection died, with the same `message_id`), never be reported twice. No connection ever
//! has more than its window of messages in flight, and nothing new is sent on a draining
//! connection. Every upstream message and receipt is acked on the connection it came on and
//! handed to the application at least once; with de-duplication on (the default), once per
//! `(from, message_id)` within the window.
//!
//! # Bounded time
//!
//! Every message gets its outcome in bounded time, whatever the server or the network does.
//! With the defaults: a message not yet sent after [`ClientConfig::max_queue_time`] (10 min,
//! e.g. while no connection can be made) expires unsent; a message on the wire without an
//! answer after [`ClientConfig::ack_timeout`] (60 s, e.g. a server that answers pings but not
//! messages) expires, maybe delivered. So an outcome comes within 11 minutes of `send`
//! at the latest; set both to `None` to wait as long as it takes.
//!
//! # Protocol decisions
//!
//! Where the CCS documents are silent, the client decides as follows.
//!
//! - **Liveness** comes from complete frames only (a stanza, a whitespace keepalive between
//!   stanzas). Bytes of an unfinished stanza do not move the ping deadline, and a stanza left
//!   unfinished for [`ConnectionConfig::stanza_timeout`] (30 s) ends the connection: a peer
//!   trickling bytes cannot hold messages in flight forever.
//! - **Draining** (CONNECTION_DRAINING, by control message or nack, in any state where
//!   messages are processed) stops sends on the connection at once and opens a replacement;
//!   the old connection keeps receiving and acking until the server closes it, or until
//!   [`ConnectionConfig::drain_timeout`] (60 s) passes: then the client closes it itself
//!   and only then gives its unanswered messages back for resending with the same ids (no
//!   answer can arrive on a closed connection, so none is reported twice).
//! - **The first connection**: transient failures (refused, timed out, a stream error, a
//!   protocol violation, an early close) are retried with the reconnect backoff until
//!   [`ReconnectPolicy::first_connect_timeout`] (30 s); a failure retrying cannot fix
//!   ([`DownReason::is_permanent`]) ends it at once. Either way
//!   [`ClientEvent::FirstConnectFailed`] says why and the client closes itself. After one
//!   connection has come up, the client never gives up by itself.
//! - **Backoff** is for connections that achieve nothing. A connection that got at least one
//!   answer, or lived [`ReconnectPolicy::healthy_after`], is replaced at once when it ends.
//! - **Leniency**: an upstream message or receipt with a usable `from` and `message_id`
//!   always reaches the application and is acked, whatever its other fields hold (see
//!   [`crate::message`]); nothing the server sends can become a poison message that loops.
//! - **Acks of our acks**: a `BAD_ACK` nack, or a stanza error echoing one of our acks, is
//!   about that upstream message ([`Anomaly::AckRefused`]), never about a downstream message
//!   that shares its id.
//!
//! # Example
//!
//! A client and the crate's own server role, wired by hand:
//!
//! ```
//! use std::time::Instant;
//! use ccs_proto::client::{Client, ClientConfig, ClientEvent, Outcome, Output};
//! use ccs_proto::credentials::{SenderId, ServerKey};
//! use ccs_proto::message::Downstream;
//! use ccs_proto::server::{ServerConfig, ServerConnection, ServerEvent};
//! use ccs_proto::ConnectionConfig;
//!
//! # #[allow(clippy::disallowed_methods)]
//! let now = Instant::now();
//! let (sender, key) = (SenderId::new("1234")?, ServerKey::new("key")?);
//! let mut client = Client::new(ClientConfig::new(ConnectionConfig::new(sender.clone(), key.clone())), now)?;
//! let mut server = ServerConnection::new(ServerConfig::new(sender, key), now);
//! let ticket = client.send(now, Downstream::builder("device-token", "m-1")?.build()).unwrap();
//!
//! let mut outcome = None;
//! for _ in 0..20 {
//!     while let Some(out) = client.poll_output() {
//!         match out {
//!             Output::Connect(id) => client.handle_connected(now, id),
//!             Output::Transmit(_, bytes) => server.handle_input(now, &bytes),
//!             Output::Event(ClientEvent::Outcome { ticket: t, outcome: o, .. }) => outcome = Some((t, o)),
//!             _ => {}
//!         }
//!     }
//!     while let Some(event) = server.poll_event() {
//!         if let ServerEvent::Downstream { message, .. } = event {
//!             server.ack(message.message_id().as_str(), None)?;
//!         }
//!     }
//!     if let Some(bytes) = server.poll_transmit() {
//!         let id = client.connections().next().unwrap().id;
//!         client.handle_input(now, id, &bytes);
//!     }
//! }
//! let (t, o) = outcome.unwrap();
//! assert_eq!(t, ticket);
//! assert!(matches!(o, Outcome::Acked { .. }));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod backoff;
mod dedup;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use crate::config::ConnectionConfig;
use crate::connection::{
    AckError, AckHandle, Anomaly, CloseReason, ConnId, Connection, ConnectionEvent,
    SendErrorKind as ConnSendErrorKind, State, later,
};
use crate::error::UsageError;
use crate::message::{
    Downstream, Incoming, MessageId, Nack, NackCode, Receipt, RetryClass, Upstream,
};
use crate::rng::SplitMix64;
use crate::stanza::StanzaError;

use dedup::{Dedup, Verdict};

/// The most connections a client may keep (the per-sender limit CCS was known to enforce).
pub const MAX_CONNECTIONS: usize = 1000;

pub use crate::config::MAX_DURATION;

/// The key of [`ClientStats::nacked_by_code`] that counts every nack code this crate does
/// not know ([`NackCode::Unknown`]).
pub const UNKNOWN_NACK_CODES: &str = "UNKNOWN";

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// How a backoff delay is randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// Uniform in `0..=limit` ("full jitter"): clients that failed together do not come back
    /// together.
    #[default]
    Full,
    /// Exactly the limit (predictable, for tests and for callers that jitter themselves).
    None,
}

/// What to do with a message nacked with a retryable code (PROTOCOL.md Part 1, "Retry").
///
/// `SERVICE_UNAVAILABLE`, `INTERNAL_SERVER_ERROR` and unknown codes are retried (and the rate
/// limit codes if [`retry_rate_limited`](Self::retry_rate_limited)): the message waits
/// `min(cap, base * factor^(n-1))` after its `n`-th nack (with jitter), then goes to the front
/// of the queue, until it has been nacked [`max_attempts`](Self::max_attempts) times; then
/// it is reported [`Outcome::Failed`]. Every other code is final ([`Outcome::Nacked`]).
/// `CONNECTION_DRAINING` is not a failure: the message goes again at once on another
/// connection and no attempt is counted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// How many times a message may be nacked with a retryable code before it is reported
    /// failed (the first send included; `1` = never retry). Default 5.
    pub max_attempts: u32,
    /// Delay before the first retry. Default 1 s (CCS's documented initial delay).
    pub base: Duration,
    /// Growth of the delay per retry (at least 1). Default 2.
    pub factor: u32,
    /// Longest delay. Default 30 s.
    pub cap: Duration,
    /// Randomisation of each delay. Default [`Jitter::Full`].
    pub jitter: Jitter,
    /// Retry `DEVICE_MESSAGE_RATE_EXCEEDED`, `TOPICS_MESSAGE_RATE_EXCEEDED` and
    /// `QUOTA_EXCEEDED` like the server errors. Default `false`: they are reported, so the
    /// caller can slow down for that device or topic.
    pub retry_rate_limited: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base: Duration::from_secs(1),
            factor: 2,
            cap: Duration::from_secs(30),
            jitter: Jitter::Full,
            retry_rate_limited: false,
        }
    }
}

impl RetryPolicy {
    /// Never retry: every nack is reported at once (retryable codes as
    /// [`Outcome::Failed`] with `attempts: 1`). For callers who schedule retries themselves
    /// and want predictable timing.
    pub fn never() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }
}

/// When to open connections again (PROTOCOL.md Part 1, "Reconnect").
///
/// Each of the [`ClientConfig::connections`] slots counts its consecutive failures. A
/// connection that did its job resets the count and is replaced at once when it ends: it got
/// at least one answer (ack, nack or stanza error) to a downstream message, or it stayed up
/// for [`healthy_after`](Self::healthy_after). A failed attempt (refused, timed out,
/// authentication refused, setup failed) or a connection that ended sooner without a single
/// answer counts as a failure: after `n` failures the next attempt waits
/// `min(cap, base * factor^(n-1))`, with jitter. So a server that drops every connection at
/// once never meets a reconnect storm, and a busy connection lost now and then is replaced
/// at once however young it was.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReconnectPolicy {
    /// How long a connection must have been up (after authentication and bind) to count as
    /// healthy. Default 10 s.
    pub healthy_after: Duration,
    /// Delay after the first failure. Default 1 s.
    pub base: Duration,
    /// Growth of the delay per failure (at least 1). Default 2.
    pub factor: u32,
    /// Longest delay. Default 60 s.
    pub cap: Duration,
    /// Randomisation of each delay. Default [`Jitter::Full`].
    pub jitter: Jitter,
    /// Connection attempts (transport or stream setup under way) at most at once. Default 8.
    pub max_connecting: usize,
    /// Time allowed between [`Output::Connect`] and [`Client::handle_connected`] (TCP and
    /// TLS). Default 15 s.
    pub connect_timeout: Duration,
    /// Time allowed for the client's first connection to come up, counted from
    /// [`Client::new`]. Until then every transient failure (refused, timed out, a stream
    /// error, a protocol violation, an early close) is retried with this policy's backoff;
    /// when it passes, or at once on a failure retrying cannot fix (credentials refused,
    /// PLAIN not offered, [`ConnectFailure::permanent`] from the adapter), the client gives
    /// up: [`ClientEvent::FirstConnectFailed`], then it closes itself. Once a connection has
    /// come up, the client never gives up by itself. Default 30 s.
    pub first_connect_timeout: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            healthy_after: Duration::from_secs(10),
            base: Duration::from_secs(1),
            factor: 2,
            cap: Duration::from_secs(60),
            jitter: Jitter::Full,
            max_connecting: 8,
            connect_timeout: Duration::from_secs(15),
            first_connect_timeout: Duration::from_secs(30),
        }
    }
}

/// Settings of a [`Client`]. Build with [`ClientConfig::new`] and adjust the fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The settings of every connection (credentials, window, ack mode, timers).
    pub connection: ConnectionConfig,
    /// Connections to keep open for sending (1..=1000, default 1). Draining connections do
    /// not count: each is replaced while it finishes.
    pub connections: usize,
    /// Messages waiting to be sent (not yet on the wire, or waiting for a retry) at most;
    /// [`Client::send`] refuses more with [`SendErrorKind::QueueFull`]. Messages coming
    /// back from a connection that ended are always taken back, even past the limit.
    /// Default 10,000.
    pub max_queue: usize,
    /// Retries of nacked messages.
    pub retry: RetryPolicy,
    /// Reconnects.
    pub reconnect: ReconnectPolicy,
    /// If set, a message sent and not answered within this time is reported
    /// [`Outcome::Expired`] ([`ExpiryKind::AckTimeout`]); an answer arriving later is
    /// reported as [`ClientEvent::LateAnswer`], never as a second outcome. A connection whose
    /// whole window is taken by such messages is closed and replaced. Default 60 s: this is
    /// what bounds the wait for an answer from a server that stays alive (answers pings,
    /// sends keepalives) but never answers a message. `None` waits for as long as the
    /// connection lives.
    pub ack_timeout: Option<Duration>,
    /// If set, a message is never sent (or sent again) later than this after `send` accepted
    /// it: it is reported [`Outcome::Expired`] ([`ExpiryKind::QueueTime`]) instead. A
    /// message already on the wire is left to its answer (and to `ack_timeout`). Default
    /// 10 minutes: this is what bounds the wait while no connection can be made. `None`
    /// keeps messages queued for as long as it takes.
    pub max_queue_time: Option<Duration>,
    /// Upstream `(from, message_id)` pairs remembered to suppress redelivered copies
    /// (default 10,000; `0` disables de-duplication).
    pub dedup_window: usize,
    /// Seed of the generator behind every jitter: the same seed and inputs give the same
    /// outputs.
    pub seed: u64,
}

impl ClientConfig {
    /// The defaults, with these connection settings.
    pub fn new(connection: ConnectionConfig) -> Self {
        Self {
            connection,
            connections: 1,
            max_queue: 10_000,
            retry: RetryPolicy::default(),
            reconnect: ReconnectPolicy::default(),
            ack_timeout: Some(Duration::from_secs(60)),
            max_queue_time: Some(Duration::from_secs(600)),
            dedup_window: 10_000,
            seed: 0,
        }
    }

    /// Checks every value; [`Client::new`] refuses a config that fails this.
    pub fn validate(&self) -> Result<(), UsageError> {
        let bad = |field, reason: &str| {
            Err(UsageError::InvalidConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        self.connection.validate()?;
        if !(1..=MAX_CONNECTIONS).contains(&self.connections) {
            return bad("connections", "must be between 1 and 1000");
        }
        if self.max_queue == 0 {
            return bad("max_queue", "must be at least 1");
        }
        if self.retry.max_attempts == 0 {
            return bad("retry.max_attempts", "must be at least 1");
        }
        if self.retry.factor == 0 || self.reconnect.factor == 0 {
            return bad("factor", "must be at least 1");
        }
        if self.reconnect.max_connecting == 0 {
            return bad("reconnect.max_connecting", "must be at least 1");
        }
        let c = &self.connection;
        let durations = [
            ("retry.base", Some(self.retry.base)),
            ("retry.cap", Some(self.retry.cap)),
            ("reconnect.base", Some(self.reconnect.base)),
            ("reconnect.cap", Some(self.reconnect.cap)),
            (
                "reconnect.healthy_after",
                Some(self.reconnect.healthy_after),
            ),
            (
                "reconnect.connect_timeout",
                Some(self.reconnect.connect_timeout),
            ),
            (
                "reconnect.first_connect_timeout",
                Some(self.reconnect.first_connect_timeout),
            ),
            ("ack_timeout", self.ack_timeout),
            ("max_queue_time", self.max_queue_time),
            ("connection.setup_timeout", Some(c.setup_timeout)),
            ("connection.keepalive_interval", Some(c.keepalive_interval)),
            ("connection.ping_after", Some(c.ping_after)),
            ("connection.ping_timeout", Some(c.ping_timeout)),
        ];
        for (field, d) in durations {
            if d.is_some_and(|d| d > MAX_DURATION) {
                return bad(field, "must be at most ten years");
            }
        }
        if self.reconnect.connect_timeout.is_zero() {
            return bad("reconnect.connect_timeout", "must be more than zero");
        }
        if self.reconnect.first_connect_timeout.is_zero() {
            return bad("reconnect.first_connect_timeout", "must be more than zero");
        }
        if self.ack_timeout.is_some_and(|d| d.is_zero()) {
            return bad("ack_timeout", "must be more than zero when set");
        }
        if self.max_queue_time.is_some_and(|d| d.is_zero()) {
            return bad("max_queue_time", "must be more than zero when set");
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Outputs and events
// ---------------------------------------------------------------------------------------------

/// The number [`Client::send`] gives an accepted message; its [`ClientEvent::Outcome`]
/// carries the same number. Unique for the life of the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageTicket(u64);

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

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why [`Client::send`] refused a message. The message is given back.
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

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

/// Every connection to CCS and the policy around them, sans-IO. See the [module
/// docs](self) for the contract, the run loop and the guarantees.
///
/// Messages go to the connections with window room, round robin. When a connection ends,
/// its unanswered messages go back to the front of the queue in their original order, with
/// their original `message_id`s, ahead of newer messages; the application is not told (no
/// outcome yet) unless a time limit passes. `now` must not go backwards between calls.
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    rng: SplitMix64,
    lifecycle: Lifecycle,
    next_conn: u64,
    next_ticket: u64,
    next_seq: u64,
    conns: BTreeMap<ConnId, Entry>,
    /// Each connection's next deadline (or, while connecting, its connect deadline).
    timers: BTreeSet<(Instant, ConnId)>,
    /// Connections up, not draining, not closing: where messages may go.
    sendable: Vec<ConnId>,
    rr: usize,
    slots: Vec<Slot>,
    /// Slots without a connection, by the time they may open one.
    waiting: BTreeSet<(Instant, usize)>,
    /// Attempts not yet up (transport or stream setup).
    connecting: usize,
    queue: VecDeque<Downstream>,
    delayed: BinaryHeap<Delayed>,
    /// Every message accepted and not yet reported (plus expired ones still in flight).
    live: HashMap<MessageId, Meta>,
    ack_deadlines: Deadlines,
    queue_deadlines: Deadlines,
    dedup: Dedup<Held>,
    outputs: VecDeque<Output>,
    touched: Vec<ConnId>,
    scratch: Vec<ConnectionEvent>,
    queue_was_full: bool,
    /// Until the first connection comes up: when the client gives up on it.
    first_deadline: Option<Instant>,
    /// The last failure before the first connection came up.
    first_error: Option<DownReason>,
    stats: ClientStats,
}

/// An upstream message or receipt kept while an earlier copy awaits the application's ack.
#[derive(Debug)]
enum Held {
    Upstream(Upstream),
    Receipt(Receipt),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    Running,
    Closing { deadline: Instant },
    Closed,
}

#[derive(Debug, Default)]
struct Slot {
    conn: Option<ConnId>,
    failures: u32,
    due: Option<Instant>,
    /// The next attempt replaces a connection that ended (for the `reconnects` counter).
    reconnecting: bool,
}

#[derive(Debug)]
struct Entry {
    /// The slot it serves; `None` once draining (its slot has a replacement).
    slot: Option<usize>,
    /// `None` until the transport is up.
    conn: Option<Connection>,
    connect_deadline: Instant,
    up_since: Option<Instant>,
    /// Answers (acks, nacks, stanza errors) it brought to downstream messages.
    answers: u64,
    counted_connecting: bool,
    told_to_close: bool,
    forced: bool,
    /// Messages in flight here already reported expired (their placeholders still take
    /// window room on the connection until answered or the connection ends).
    expired: HashSet<MessageId>,
    dirty: bool,
    timer: Option<Instant>,
}

#[derive(Debug)]
struct Meta {
    ticket: MessageTicket,
    accepted_at: Instant,
    nacks: u32,
    sends: u32,
    /// Bumped at every send: tells a stale ack deadline from the current one.
    generation: u64,
    state: MsgState,
    /// Sent again after its connection ended or returned it (for the `resent` counter).
    requeued: bool,
    expire_now: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MsgState {
    Queued,
    Delayed,
    InFlight(ConnId),
    /// Reported expired while in flight on this connection.
    Expired(ConnId),
}

/// A message waiting for its retry; the heap's top is the earliest.
#[derive(Debug)]
struct Delayed {
    due: Instant,
    seq: u64,
    message: Downstream,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Delayed {}

impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

/// Deadlines in the order they were set. A fixed limit added to a `now` that never goes
/// back gives non-decreasing deadlines, so a FIFO is a priority queue here. Entries of
/// messages answered meanwhile are dropped lazily.
#[derive(Debug, Default)]
struct Deadlines {
    q: VecDeque<(Instant, MessageId, u64)>,
}

impl Deadlines {
    fn push(&mut self, at: Instant, id: MessageId, tag: u64) {
        self.q.push_back((at, id, tag));
    }

    fn front(&self) -> Option<Instant> {
        self.q.front().map(|e| e.0)
    }

    fn pop_due(&mut self, now: Instant) -> Option<(MessageId, u64)> {
        if self.q.front().is_some_and(|e| e.0 <= now) {
            self.q.pop_front().map(|(_, id, tag)| (id, tag))
        } else {
            None
        }
    }

    /// Drops stale entries at the front (so `front` wakes nobody for nothing), and all of
    /// them when they outnumber the live ones (so memory stays bounded).
    fn trim(&mut self, live: usize, valid: impl Fn(&MessageId, u64) -> bool) {
        while self.q.front().is_some_and(|(_, id, tag)| !valid(id, *tag)) {
            self.q.pop_front();
        }
        if self.q.len() > 2 * live.max(512) {
            self.q.retain(|(_, id, tag)| valid(id, *tag));
        }
    }
}

impl Entry {
    /// Whether the connection achieved something: answers to downstream messages, or a life
    /// of at least `healthy_after` after setup. Judges its end for the reconnect backoff.
    fn did_its_job(&self, now: Instant, healthy_after: Duration) -> bool {
        self.answers > 0
            || self
                .up_since
                .is_some_and(|t| now.saturating_duration_since(t) >= healthy_after)
    }
}

impl Client {
    /// A client that starts opening its connections at once (drain
    /// [`poll_output`](Self::poll_output) for the [`Output::Connect`]s).
    pub fn new(config: ClientConfig, now: Instant) -> Result<Self, UsageError> {
        config.validate()?;
        let slots = config.connections;
        let mut client = Self {
            rng: SplitMix64(config.seed),
            dedup: Dedup::new(config.dedup_window),
            config,
            lifecycle: Lifecycle::Running,
            next_conn: 1,
            next_ticket: 0,
            next_seq: 0,
            conns: BTreeMap::new(),
            timers: BTreeSet::new(),
            sendable: Vec::new(),
            rr: 0,
            slots: Vec::with_capacity(slots),
            waiting: BTreeSet::new(),
            connecting: 0,
            queue: VecDeque::new(),
            delayed: BinaryHeap::new(),
            live: HashMap::new(),
            ack_deadlines: Deadlines::default(),
            queue_deadlines: Deadlines::default(),
            outputs: VecDeque::new(),
            touched: Vec::new(),
            scratch: Vec::new(),
            queue_was_full: false,
            first_deadline: None,
            first_error: None,
            stats: ClientStats::default(),
        };
        client.first_deadline = Some(later(now, client.config.reconnect.first_connect_timeout));
        for s in 0..slots {
            client.slots.push(Slot::default());
            client.schedule(s, now);
        }
        client.pump(now);
        Ok(client)
    }

    // ---- getters ----

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The counters.
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// Messages accepted and not on the wire: waiting in the queue or for a retry.
    pub fn queued(&self) -> usize {
        self.queue.len() + self.delayed.len()
    }

    /// Messages on the wire without an answer, over every connection (expired ones
    /// included until answered or their connection ends).
    pub fn in_flight(&self) -> usize {
        self.conns
            .values()
            .filter_map(|e| e.conn.as_ref())
            .map(Connection::in_flight)
            .sum()
    }

    /// Every connection and connection attempt, by id.
    pub fn connections(&self) -> impl Iterator<Item = ConnectionInfo> + '_ {
        self.conns.iter().map(|(&id, e)| ConnectionInfo {
            id,
            phase: match &e.conn {
                None => Phase::Connecting,
                Some(c) => match c.state() {
                    s if s.is_setup() => Phase::SettingUp,
                    State::Connected => Phase::Up,
                    State::Draining => Phase::Draining,
                    _ => Phase::Closing,
                },
            },
            in_flight: e.conn.as_ref().map_or(0, Connection::in_flight),
            window: self.config.connection.window,
        })
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closing(&self) -> bool {
        self.lifecycle != Lifecycle::Running
    }

    /// Whether the close finished ([`ClientEvent::Closed`] was emitted).
    pub fn is_closed(&self) -> bool {
        self.lifecycle == Lifecycle::Closed
    }

    // ---- outputs ----

    /// The next thing to do, oldest first.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next; `None` once
    /// closed.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let closing = match self.lifecycle {
            Lifecycle::Closed => return None,
            Lifecycle::Closing { deadline } => Some(deadline),
            Lifecycle::Running => None,
        };
        let opening = (self.may_open() && self.connecting < self.config.reconnect.max_connecting)
            .then(|| self.waiting.first().map(|&(t, _)| t))
            .flatten();
        [
            self.timers.first().map(|&(t, _)| t),
            opening,
            self.delayed.peek().map(|d| d.due),
            self.ack_deadlines.front(),
            self.queue_deadlines.front(),
            self.first_deadline,
            closing,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ---- inputs ----

    /// The transport of `id` is up (TCP and TLS): the connection starts (its stream header
    /// is the first [`Output::Transmit`]). For an id the client no longer knows (its
    /// attempt timed out), a [`Output::Disconnect`] asks to close the stray transport.
    pub fn handle_connected(&mut self, now: Instant, id: ConnId) {
        let Some(entry) = self.conns.get_mut(&id) else {
            self.outputs.push_back(Output::Disconnect(id));
            return;
        };
        if entry.conn.is_some() {
            return;
        }
        match Connection::new(id, self.config.connection.clone(), now) {
            Ok(conn) => {
                entry.conn = Some(conn);
                self.touch(id);
            }
            // Unreachable: the config was validated by `Client::new`.
            Err(e) => self.end_entry(now, id, DownReason::ConnectFailed(e.to_string()), vec![]),
        }
        self.pump(now);
    }

    /// The transport of `id` could not be opened.
    pub fn handle_connect_failed(
        &mut self,
        now: Instant,
        id: ConnId,
        failure: impl Into<ConnectFailure>,
    ) {
        match self.conns.get(&id) {
            None => return,
            Some(e) if e.conn.is_some() => return self.handle_eof(now, id),
            Some(_) => {
                let failure = failure.into();
                let reason = if failure.permanent {
                    DownReason::ConnectFailedPermanently(failure.message)
                } else {
                    DownReason::ConnectFailed(failure.message)
                };
                self.end_entry(now, id, reason, vec![])
            }
        }
        self.pump(now);
    }

    /// Bytes received on `id`.
    pub fn handle_input(&mut self, now: Instant, id: ConnId, data: &[u8]) {
        let Some(conn) = self.conns.get_mut(&id).and_then(|e| e.conn.as_mut()) else {
            return;
        };
        self.stats.bytes_in += data.len() as u64;
        conn.handle_input(now, data);
        self.touch(id);
        self.pump(now);
    }

    /// The transport of `id` ended (also in the middle of a stanza).
    pub fn handle_eof(&mut self, now: Instant, id: ConnId) {
        match self.conns.get_mut(&id) {
            None => return,
            Some(Entry {
                conn: Some(conn), ..
            }) => {
                conn.handle_eof(now);
                self.touch(id);
            }
            Some(_) => {
                let reason =
                    DownReason::ConnectFailed("the transport ended before it was up".into());
                self.end_entry(now, id, reason, vec![]);
            }
        }
        self.pump(now);
    }

    /// A deadline from [`poll_timeout`](Self::poll_timeout) passed. Safe to call at any
    /// time.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.lifecycle == Lifecycle::Closed {
            return;
        }
        let due: Vec<ConnId> = self
            .timers
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|&(_, id)| id)
            .collect();
        for id in due {
            match self.conns.get_mut(&id) {
                None => {}
                Some(Entry {
                    conn: Some(conn), ..
                }) => {
                    conn.handle_timeout(now);
                    self.touch(id);
                }
                Some(e) if e.connect_deadline <= now => {
                    self.end_entry(now, id, DownReason::ConnectTimeout, vec![]);
                }
                Some(_) => {}
            }
        }
        self.expire_acks(now);
        self.expire_queued(now);
        if self.first_deadline.is_some_and(|d| now >= d) {
            let error = self
                .first_error
                .take()
                .unwrap_or(DownReason::ConnectTimeout);
            self.give_up(now, error, false);
        }
        self.pump(now);
    }

    // ---- commands ----

    /// Queues a message. It goes out as soon as a connection has window room, and its one
    /// [`ClientEvent::Outcome`] carries the returned ticket.
    ///
    /// Refused, with the message given back, when the queue is full (back-pressure: wait for
    /// [`ClientEvent::QueueOpen`]), when a message with the same `message_id` is still
    /// pending, over the optional payload limit, and once [`close`](Self::close) was called.
    pub fn send(&mut self, now: Instant, message: Downstream) -> Result<MessageTicket, SendError> {
        let refuse = |kind: SendErrorKind, message: Downstream| {
            Err(SendError {
                kind,
                message: Box::new(message),
            })
        };
        match self.lifecycle {
            Lifecycle::Running => {}
            Lifecycle::Closing { .. } => return refuse(SendErrorKind::Closing, message),
            Lifecycle::Closed => return refuse(SendErrorKind::Closed, message),
        }
        if self.queued() >= self.config.max_queue {
            self.queue_was_full = true;
            let limit = self.config.max_queue;
            return refuse(SendErrorKind::QueueFull { limit }, message);
        }
        if self.live.contains_key(message.message_id()) {
            return refuse(SendErrorKind::DuplicateId, message);
        }
        if let Some(limit) = self.config.connection.max_payload_bytes {
            let bytes = serde_json::to_vec(&message).map_or(usize::MAX, |v| v.len());
            if bytes > limit {
                return refuse(SendErrorKind::TooLarge { bytes, limit }, message);
            }
        }
        let ticket = MessageTicket(self.next_ticket);
        self.next_ticket += 1;
        let id = message.message_id().clone();
        if let Some(limit) = self.config.max_queue_time {
            self.queue_deadlines
                .push(later(now, limit), id.clone(), ticket.0);
        }
        self.live.insert(
            id,
            Meta {
                ticket,
                accepted_at: now,
                nacks: 0,
                sends: 0,
                generation: 0,
                state: MsgState::Queued,
                requeued: false,
                expire_now: false,
            },
        );
        self.queue.push_back(message);
        self.stats.queued += 1;
        self.pump(now);
        Ok(ticket)
    }

    /// Acks an upstream message or receipt handed over with a handle (manual-ack mode), on
    /// the connection it came on. Refused with [`AckError::ConnectionGone`] once that
    /// connection has ended: the server redelivers the message, and its new copy comes with
    /// a new handle.
    pub fn ack(&mut self, now: Instant, handle: &AckHandle) -> Result<(), AckError> {
        let id = handle.conn();
        let Some(conn) = self.conns.get_mut(&id).and_then(|e| e.conn.as_mut()) else {
            return Err(AckError::ConnectionGone);
        };
        conn.ack(now, handle)?;
        self.touch(id);
        for held in self.dedup.app_acked(handle.to(), handle.message_id()) {
            let hid = held.conn();
            if let Some(c) = self.conns.get_mut(&hid).and_then(|e| e.conn.as_mut())
                && c.ack(now, &held).is_ok()
            {
                self.touch(hid);
            }
        }
        self.pump(now);
        Ok(())
    }

    /// Starts a graceful close: `send` refuses new messages; the queue is still sent while
    /// connections live (and connections are still opened while there is something to
    /// send); once nothing waits to be sent, each connection is closed after the answers to
    /// its messages in flight and the application's acks of the upstream messages it holds
    /// handles for (manual mode: [`ack`](Self::ack) goes through until the deadline, and
    /// [`release`](Self::release) gives a handle up), or at `deadline`. Then every message never answered is given
    /// back as [`Outcome::Unsent`], and [`ClientEvent::Closed`] ends it all. Calling it
    /// again can only bring the deadline forward.
    pub fn close(&mut self, now: Instant, deadline: Instant) {
        self.lifecycle = match self.lifecycle {
            Lifecycle::Closed => return,
            Lifecycle::Closing { deadline: d } => Lifecycle::Closing {
                deadline: d.min(deadline),
            },
            Lifecycle::Running => Lifecycle::Closing { deadline },
        };
        self.pump(now);
    }

    /// The application will not ack this handle (manual mode: it dropped it unused). A
    /// graceful close then need not wait for it; the message stays un-acked and the server
    /// redelivers it. Handles already acked, or of a connection that is gone, are ignored.
    pub fn release(&mut self, now: Instant, handle: &AckHandle) {
        let id = handle.conn();
        if let Some(conn) = self.conns.get_mut(&id).and_then(|e| e.conn.as_mut())
            && conn.release(now, handle)
        {
            self.touch(id);
            self.pump(now);
        }
    }

    // ---- internals: the pump ----

    fn emit(&mut self, event: ClientEvent) {
        self.outputs.push_back(Output::Event(event));
    }

    fn touch(&mut self, id: ConnId) {
        if let Some(e) = self.conns.get_mut(&id)
            && !e.dirty
        {
            e.dirty = true;
            self.touched.push(id);
        }
    }

    fn has_work(&self) -> bool {
        !self.queue.is_empty() || !self.delayed.is_empty()
    }

    /// Whether slots may open connections (running, or closing with messages to send).
    fn may_open(&self) -> bool {
        match self.lifecycle {
            Lifecycle::Running => true,
            Lifecycle::Closing { .. } => self.has_work(),
            Lifecycle::Closed => false,
        }
    }

    /// Runs after every input and command: moves everything that can move.
    fn pump(&mut self, now: Instant) {
        if self.lifecycle == Lifecycle::Closed {
            return;
        }
        loop {
            while let Some(id) = self.touched.pop() {
                self.flush_conn(now, id);
            }
            let released = self.release_retries(now);
            self.dispatch(now);
            self.maintain(now);
            if self.touched.is_empty() && !released {
                break;
            }
        }
        let live = &self.live;
        self.ack_deadlines.trim(live.len(), |id, generation| {
            live.get(id).is_some_and(|m| {
                m.generation == generation && matches!(m.state, MsgState::InFlight(_))
            })
        });
        self.queue_deadlines.trim(live.len(), |id, ticket| {
            live.get(id).is_some_and(|m| m.ticket.0 == ticket)
        });
        if self.queue_was_full
            && self.lifecycle == Lifecycle::Running
            && self.queued() < self.config.max_queue
        {
            self.queue_was_full = false;
            self.emit(ClientEvent::QueueOpen);
        }
    }

    /// Takes a connection's bytes and events until it has none.
    fn flush_conn(&mut self, now: Instant, id: ConnId) {
        loop {
            let Some(entry) = self.conns.get_mut(&id) else {
                return;
            };
            entry.dirty = false;
            let Some(conn) = entry.conn.as_mut() else {
                return;
            };
            if let Some(bytes) = conn.poll_transmit() {
                self.stats.bytes_out += bytes.len() as u64;
                self.outputs.push_back(Output::Transmit(id, bytes));
            }
            let mut events = std::mem::take(&mut self.scratch);
            while let Some(ev) = conn.poll_event() {
                events.push(ev);
            }
            if events.is_empty() {
                self.scratch = events;
                self.refresh_timer(id);
                return;
            }
            for ev in events.drain(..) {
                self.on_conn_event(now, id, ev);
            }
            self.scratch = events;
        }
    }

    fn refresh_timer(&mut self, id: ConnId) {
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

    /// Sends queued messages, oldest first, round robin over the connections with room.
    fn dispatch(&mut self, now: Instant) {
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
            let Some(message) = self.queue.pop_front() else {
                break;
            };
            let Some(meta) = self.live.get_mut(message.message_id()) else {
                // Every queued message has its record; without one it could not be reported.
                debug_assert!(false, "queued message without a record");
                continue;
            };
            if let Some(limit) = self.config.max_queue_time
                && now.saturating_duration_since(meta.accepted_at) >= limit
            {
                let (ticket, sends) = (meta.ticket, meta.sends);
                self.live.remove(message.message_id());
                let kind = ExpiryKind::QueueTime;
                self.report(ticket, message, Outcome::Expired { kind, sends });
                continue;
            }
            let ack_deadline = self.config.ack_timeout.map(|t| {
                // Only the id: on expiry the connection hands the message over itself.
                (later(now, t), message.message_id().clone())
            });
            match conn.send(now, message) {
                Ok(()) => {
                    meta.state = MsgState::InFlight(id);
                    meta.sends = meta.sends.saturating_add(1);
                    meta.generation += 1;
                    if meta.requeued {
                        meta.requeued = false;
                        self.stats.resent += 1;
                    }
                    self.stats.sent += 1;
                    if let Some((at, mid)) = ack_deadline {
                        self.ack_deadlines.push(at, mid, meta.generation);
                    }
                    if !entry.dirty {
                        entry.dirty = true;
                        self.touched.push(id);
                    }
                }
                Err(e) => match e.kind {
                    ConnSendErrorKind::Unencodable(_) | ConnSendErrorKind::TooLarge { .. } => {
                        let (ticket, attempts) = (meta.ticket, meta.nacks);
                        self.live.remove(e.message.message_id());
                        let reason = FailReason::Unsendable(e.kind.to_string());
                        self.report(ticket, *e.message, Outcome::Failed { reason, attempts });
                    }
                    // `can_send` said yes, so nothing else can come back; keep the message.
                    _ => {
                        self.queue.push_front(*e.message);
                        break;
                    }
                },
            }
        }
    }

    /// Opens connections for slots whose time has come, and runs the close.
    fn maintain(&mut self, now: Instant) {
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
    fn close_all(&mut self, now: Instant, deadline: Instant, force: bool) {
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

    /// Gives back everything never answered and ends the client.
    fn finalize(&mut self, deadline_passed: bool) {
        let mut rest: Vec<Downstream> = self.queue.drain(..).collect();
        let mut delayed = std::mem::take(&mut self.delayed).into_vec();
        delayed.sort_unstable_by_key(|d| (d.due, d.seq));
        rest.extend(delayed.into_iter().map(|d| d.message));
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
    fn release_retries(&mut self, now: Instant) -> bool {
        let mut due = Vec::new();
        while self.delayed.peek().is_some_and(|d| d.due <= now) {
            due.extend(self.delayed.pop().map(|d| d.message));
        }
        let released = !due.is_empty();
        for message in due.into_iter().rev() {
            if let Some(meta) = self.live.get_mut(message.message_id()) {
                meta.state = MsgState::Queued;
            }
            self.queue.push_front(message);
        }
        released
    }

    fn report(&mut self, ticket: MessageTicket, message: Downstream, outcome: Outcome) {
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
            message: Box::new(message),
            outcome,
        });
    }

    // ---- internals: connection events ----

    fn on_conn_event(&mut self, now: Instant, id: ConnId, ev: ConnectionEvent) {
        if matches!(
            ev,
            ConnectionEvent::Acked { .. }
                | ConnectionEvent::Nacked { .. }
                | ConnectionEvent::StanzaError { .. }
        ) && let Some(e) = self.conns.get_mut(&id)
        {
            e.answers += 1;
        }
        match ev {
            ConnectionEvent::Connected { jid } => {
                if let Some(e) = self.conns.get_mut(&id) {
                    e.up_since = Some(now);
                    if e.counted_connecting {
                        e.counted_connecting = false;
                        self.connecting = self.connecting.saturating_sub(1);
                    }
                    if !e.told_to_close
                        && e.conn
                            .as_ref()
                            .is_some_and(|c| c.state() == State::Connected)
                    {
                        self.sendable.push(id);
                    }
                }
                self.stats.connections_opened += 1;
                self.first_deadline = None;
                self.first_error = None;
                self.emit(ClientEvent::ConnectionUp { id, jid });
            }
            ConnectionEvent::Acked {
                message,
                canonical_registration_id,
            } => self.answered(
                id,
                message,
                Outcome::Acked {
                    canonical_registration_id,
                },
            ),
            ConnectionEvent::Nacked { message, nack } => {
                self.count_nack(&nack.error);
                self.on_nack(now, id, message, nack);
            }
            ConnectionEvent::StanzaError { message, error } => {
                self.answered(id, message, Outcome::Rejected { error });
            }
            ConnectionEvent::Returned { message } => {
                self.count_nack(&NackCode::ConnectionDraining);
                self.stats.returned += 1;
                if let Some(MsgState::Expired(c)) =
                    self.live.get(message.message_id()).map(|m| m.state)
                {
                    self.live.remove(message.message_id());
                    self.late_answer(c, message.message_id().clone());
                } else {
                    self.take_back(now, vec![message]);
                }
            }
            ConnectionEvent::Upstream { message, ack } => {
                self.stats.upstream_received += 1;
                self.upstream(now, id, Held::Upstream(message), ack);
            }
            ConnectionEvent::Receipt { receipt, ack } => {
                self.stats.receipts_received += 1;
                self.upstream(now, id, Held::Receipt(receipt), ack);
            }
            ConnectionEvent::Draining => self.on_draining(now, id),
            ConnectionEvent::LateAnswer { message_id } => {
                if let Some(Meta {
                    state: MsgState::Expired(c),
                    ..
                }) = self.live.get(&message_id)
                    && *c == id
                {
                    self.live.remove(&message_id);
                }
                self.late_answer(id, message_id);
            }
            ConnectionEvent::WindowOpen => {}
            ConnectionEvent::Unrecognized(message) => {
                self.emit(ClientEvent::Unrecognized { id, message });
            }
            ConnectionEvent::Anomaly(anomaly) => self.emit(ClientEvent::Anomaly { id, anomaly }),
            ConnectionEvent::Closed { reason, unanswered } => {
                self.end_entry(now, id, DownReason::Closed(reason), unanswered);
            }
        }
    }

    fn count_nack(&mut self, code: &NackCode) {
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
    fn answered(&mut self, conn: ConnId, message: Downstream, outcome: Outcome) {
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

    fn late_answer(&mut self, conn: ConnId, message_id: MessageId) {
        if let Some(e) = self.conns.get_mut(&conn) {
            e.expired.remove(&message_id);
        }
        self.stats.late_answers += 1;
        self.emit(ClientEvent::LateAnswer {
            id: conn,
            message_id,
        });
    }

    fn on_nack(&mut self, now: Instant, conn: ConnId, message: Downstream, nack: Nack) {
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
        self.delayed.push(Delayed {
            due: later(now, after),
            seq: self.next_seq,
            message,
        });
        self.next_seq += 1;
        self.emit(ClientEvent::Retrying {
            ticket,
            message_id,
            nack,
            attempt: attempts.saturating_add(1),
            after,
        });
    }

    /// Messages back from a connection (it ended, or returned them): to the front of the
    /// queue in their order, unless expired.
    fn take_back(&mut self, now: Instant, messages: Vec<Downstream>) {
        let mut back = Vec::with_capacity(messages.len());
        for message in messages {
            let Some(meta) = self.live.get_mut(message.message_id()) else {
                continue;
            };
            if let MsgState::Expired(_) = meta.state {
                // Already reported; its connection is gone, so no answer will come.
                self.live.remove(message.message_id());
                continue;
            }
            if let Some(limit) = self.config.max_queue_time
                && now.saturating_duration_since(meta.accepted_at) >= limit
            {
                let (ticket, sends) = (meta.ticket, meta.sends);
                self.live.remove(message.message_id());
                let kind = ExpiryKind::QueueTime;
                self.report(ticket, message, Outcome::Expired { kind, sends });
                continue;
            }
            meta.state = MsgState::Queued;
            meta.requeued = true;
            back.push(message);
        }
        for message in back.into_iter().rev() {
            self.queue.push_front(message);
        }
    }

    /// An upstream message or receipt: to the application unless it is a copy of one
    /// already handed over (de-duplication).
    fn upstream(&mut self, now: Instant, conn: ConnId, message: Held, ack: Option<AckHandle>) {
        let (from, id) = match &message {
            Held::Upstream(m) => (&m.from, &m.message_id),
            Held::Receipt(r) => (&r.from, &r.message_id),
        };
        match self.dedup.observe(from, id, conn, ack.as_ref()) {
            Verdict::Deliver => self.hand_over(message, ack),
            Verdict::Duplicate { ack_now } => {
                self.stats.duplicates_suppressed += 1;
                if let Some(h) = ack_now
                    && let Some(c) = self.conns.get_mut(&conn).and_then(|e| e.conn.as_mut())
                    && c.ack(now, &h).is_ok()
                {
                    self.touch(conn);
                }
            }
            Verdict::Hold => {
                self.stats.duplicates_suppressed += 1;
                if let Some(h) = ack {
                    let (from, id) = (from.clone(), id.clone());
                    self.dedup.hold(&from, &id, h, message);
                }
            }
        }
    }

    fn hand_over(&mut self, message: Held, ack: Option<AckHandle>) {
        self.emit(match message {
            Held::Upstream(m) => ClientEvent::Upstream {
                message: Box::new(m),
                ack,
            },
            Held::Receipt(r) => ClientEvent::Receipt {
                receipt: Box::new(r),
                ack,
            },
        });
    }

    fn on_draining(&mut self, now: Instant, id: ConnId) {
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
    fn end_entry(
        &mut self,
        now: Instant,
        id: ConnId,
        reason: DownReason,
        unanswered: Vec<Downstream>,
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
    fn give_up(&mut self, now: Instant, error: DownReason, permanent: bool) {
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
    fn release_slot(
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
    fn failure_delay(&mut self, s: usize) -> Duration {
        let Some(slot) = self.slots.get_mut(s) else {
            return Duration::ZERO;
        };
        let n = slot.failures;
        slot.failures = n.saturating_add(1);
        let p = &self.config.reconnect;
        backoff::delay(&mut self.rng, p.base, p.factor, p.cap, n, p.jitter)
    }

    fn schedule(&mut self, s: usize, at: Instant) {
        if let Some(slot) = self.slots.get_mut(s) {
            if let Some(old) = slot.due.replace(at) {
                self.waiting.remove(&(old, s));
            }
            self.waiting.insert((at, s));
        }
    }

    fn open(&mut self, now: Instant, s: usize) {
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
                expired: HashSet::new(),
                dirty: false,
                timer: None,
            },
        );
        self.refresh_timer(id);
        self.outputs.push_back(Output::Connect(id));
    }

    // ---- internals: expiry ----

    fn expire_acks(&mut self, now: Instant) {
        while let Some((id, generation)) = self.ack_deadlines.pop_due(now) {
            let Some(meta) = self.live.get_mut(&id) else {
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
            let Some(message) = conn.expire(&id) else {
                continue;
            };
            meta.state = MsgState::Expired(c);
            let (ticket, sends) = (meta.ticket, meta.sends);
            e.expired.insert(id);
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

    fn expire_queued(&mut self, now: Instant) {
        let mut any = false;
        while let Some((id, ticket)) = self.queue_deadlines.pop_due(now) {
            if let Some(meta) = self.live.get_mut(&id)
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
        let marked = |live: &HashMap<MessageId, Meta>, m: &Downstream| {
            live.get(m.message_id()).is_some_and(|meta| meta.expire_now)
        };
        let mut expired = Vec::new();
        for message in std::mem::take(&mut self.queue) {
            if marked(&self.live, &message) {
                expired.push(message);
            } else {
                self.queue.push_back(message);
            }
        }
        let mut delayed = std::mem::take(&mut self.delayed).into_vec();
        delayed.sort_unstable_by_key(|d| (d.due, d.seq));
        let (gone, kept): (Vec<Delayed>, Vec<Delayed>) = delayed
            .into_iter()
            .partition(|d| marked(&self.live, &d.message));
        self.delayed = kept.into();
        expired.extend(gone.into_iter().map(|d| d.message));
        for message in expired {
            if let Some(meta) = self.live.remove(message.message_id()) {
                let kind = ExpiryKind::QueueTime;
                let sends = meta.sends;
                self.report(meta.ticket, message, Outcome::Expired { kind, sends });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::{SenderId, ServerKey};

    fn config() -> ClientConfig {
        ClientConfig::new(ConnectionConfig::new(
            SenderId::new("1").unwrap(),
            ServerKey::new("k").unwrap(),
        ))
    }

    #[test]
    fn client_is_send() {
        fn is_send<T: Send>() {}
        is_send::<Client>();
        is_send::<Output>();
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(config().validate().is_ok());
        let cases: [fn(&mut ClientConfig); 10] = [
            |c| c.connections = 0,
            |c| c.connections = 1001,
            |c| c.max_queue = 0,
            |c| c.retry.max_attempts = 0,
            |c| c.retry.factor = 0,
            |c| c.reconnect.max_connecting = 0,
            |c| c.reconnect.connect_timeout = Duration::ZERO,
            |c| c.ack_timeout = Some(Duration::ZERO),
            |c| c.max_queue_time = Some(Duration::ZERO),
            |c| c.retry.cap = Duration::MAX,
        ];
        for change in cases {
            let mut c = config();
            change(&mut c);
            assert!(c.validate().is_err(), "{c:?}");
        }
    }
}
