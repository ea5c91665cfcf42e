//! Settings of a [`Client`]: [`ClientConfig`], with its [`RetryPolicy`] for nacked messages
//! and its [`ReconnectPolicy`] for connections, and their validation.

use std::time::Duration;

use crate::connection::config::ConnectionConfig;
use crate::error::UsageError;

#[cfg(doc)]
use super::{Client, ClientEvent, ConnectFailure, ExpiryKind, Outcome, Output, SendErrorKind};
use super::{MAX_CONNECTIONS, MAX_DURATION};

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
