//! Configuration of one connection ([`ConnectionConfig`]).
//!
//! Defaults follow PROTOCOL.md Part 1: window 100, 15 s per stream-setup step, a whitespace
//! keepalive after 30 s without sending, an XEP-0199 ping after 60 s without receiving a
//! complete frame, and the connection dead 30 s after an unanswered ping. Two limits of our
//! own bound what the document leaves open: a stanza may stay open (started, not finished)
//! for at most 30 s ([`ConnectionConfig::stanza_timeout`]), and a draining connection is
//! closed by the client 60 s after CONNECTION_DRAINING if the server has not closed it
//! ([`ConnectionConfig::drain_timeout`]).

use std::time::Duration;

use crate::credentials::{DEFAULT_DOMAIN, SenderId, ServerKey};
use crate::error::UsageError;
use crate::xml::FramerConfig;

/// The largest window allowed (the 2013 page's figure).
pub const MAX_WINDOW: usize = 1000;

/// The longest duration any setting may have (ten years): keeps every deadline
/// representable (`now + MAX_DURATION` never overflows an `Instant`).
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Who acks upstream messages and receipts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AckMode {
    /// The connection acks each upstream message and receipt as soon as it arrives.
    #[default]
    Auto,
    /// The application acks through the handle it is given, after it has durably handled the
    /// message. Until then, the server redelivers it on a later connection if this one ends.
    Manual,
}

/// How the SASL PLAIN authentication identity is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AuthcidForm {
    /// `SENDER_ID@DOMAIN` with an empty authorization identity: CCS's documented form, which
    /// worked whatever host was dialled (PROTOCOL.md §2.4).
    #[default]
    Qualified,
    /// The bare `SENDER_ID` (go-xmpp's form; the server appends the stream's domain). Also the
    /// form most general-purpose XMPP servers expect for a local user.
    Bare,
}

/// Settings of one connection. Build with [`ConnectionConfig::new`] and adjust the fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConnectionConfig {
    /// The sender id (project number).
    pub sender_id: SenderId,
    /// The server key (SASL PLAIN password).
    pub server_key: ServerKey,
    /// The XMPP domain: stream `to` and the JID's domain. `gcm.googleapis.com` whatever host is
    /// dialled (PROTOCOL.md §1.1).
    pub domain: String,
    /// How the PLAIN identity is written (default: `SENDER_ID@DOMAIN`).
    pub authcid: AuthcidForm,
    /// A resource to request at bind (the server appends to it); `None` lets the server pick.
    pub resource: Option<String>,
    /// Send the (optional) session request when the server offers it.
    pub request_session: bool,
    /// Downstream messages in flight at most (1..=1000, default 100).
    pub window: usize,
    /// Who acks upstream messages and receipts.
    pub ack_mode: AckMode,
    /// Time allowed for each step of stream setup (header, features, SASL, bind, session).
    pub setup_timeout: Duration,
    /// Send a whitespace keepalive after this long without sending anything.
    pub keepalive_interval: Duration,
    /// Send an XEP-0199 ping after this long without receiving anything.
    pub ping_after: Duration,
    /// The connection is dead if no complete frame arrives this long after a ping.
    pub ping_timeout: Duration,
    /// The connection is dead if a stanza stays open (its first bytes arrived, its end did
    /// not) this long. Liveness comes from complete frames only, so a peer trickling the
    /// bytes of a stanza that never ends cannot keep a connection alive. Default 30 s.
    pub stanza_timeout: Duration,
    /// After CONNECTION_DRAINING, the server should answer what is in flight and close the
    /// stream. If it has not closed it this long after the announcement, the client closes it
    /// and hands every unanswered message back for resending. Default 60 s.
    pub drain_timeout: Duration,
    /// Limits of the inbound XML stream.
    pub framer: FramerConfig,
    /// If set, a downstream message whose JSON is larger than this many bytes is refused by
    /// `send` (the server's own limit is 4096 bytes of `data`; it answers with a nack
    /// otherwise). Off by default.
    pub max_payload_bytes: Option<usize>,
}

impl ConnectionConfig {
    /// The defaults for this sender and key.
    pub fn new(sender_id: SenderId, server_key: ServerKey) -> Self {
        Self {
            sender_id,
            server_key,
            domain: DEFAULT_DOMAIN.to_owned(),
            authcid: AuthcidForm::Qualified,
            resource: None,
            request_session: true,
            window: 100,
            ack_mode: AckMode::Auto,
            setup_timeout: Duration::from_secs(15),
            keepalive_interval: Duration::from_secs(30),
            ping_after: Duration::from_secs(60),
            ping_timeout: Duration::from_secs(30),
            stanza_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(60),
            framer: FramerConfig::default(),
            max_payload_bytes: None,
        }
    }

    /// Checks every value; the connection refuses a config that fails this.
    pub fn validate(&self) -> Result<(), UsageError> {
        let bad = |field, reason: &str| {
            Err(UsageError::InvalidConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        if !(1..=MAX_WINDOW).contains(&self.window) {
            return bad("window", "must be between 1 and 1000");
        }
        if self.domain.is_empty()
            || self
                .domain
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '@' | '/'))
        {
            return bad("domain", "must be a non-empty host name");
        }
        if let Some(r) = &self.resource
            && (r.is_empty() || r.chars().any(char::is_control))
        {
            return bad("resource", "must be non-empty with no control characters");
        }
        for (field, d) in [
            ("setup_timeout", self.setup_timeout),
            ("keepalive_interval", self.keepalive_interval),
            ("ping_after", self.ping_after),
            ("ping_timeout", self.ping_timeout),
            ("stanza_timeout", self.stanza_timeout),
            ("drain_timeout", self.drain_timeout),
        ] {
            if d.is_zero() {
                return bad(field, "must be more than zero");
            }
            if d > MAX_DURATION {
                return bad(field, "must be at most ten years");
            }
        }
        if self.framer.max_stanza_bytes < 1024 || self.framer.max_depth < 4 {
            return bad(
                "framer",
                "max_stanza_bytes must be at least 1024 and max_depth at least 4",
            );
        }
        if self.max_payload_bytes == Some(0) {
            return bad("max_payload_bytes", "must be more than zero when set");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ConnectionConfig {
        ConnectionConfig::new(SenderId::new("1").unwrap(), ServerKey::new("k").unwrap())
    }

    #[test]
    fn defaults_are_valid_and_bad_values_refused() {
        assert!(cfg().validate().is_ok());
        for window in [0, 1001] {
            let mut c = cfg();
            c.window = window;
            assert!(c.validate().is_err());
        }
        let mut c = cfg();
        c.window = 1000;
        assert!(c.validate().is_ok());
        let mut c = cfg();
        c.ping_timeout = Duration::ZERO;
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.domain = "a b".into();
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.resource = Some(String::new());
        assert!(c.validate().is_err());
    }

    #[test]
    fn durations_the_clock_cannot_hold_are_refused() {
        for set in [
            |c: &mut ConnectionConfig| c.setup_timeout = Duration::MAX,
            |c: &mut ConnectionConfig| c.keepalive_interval = Duration::MAX,
            |c: &mut ConnectionConfig| c.ping_after = Duration::MAX,
            |c: &mut ConnectionConfig| c.ping_timeout = Duration::MAX,
            |c: &mut ConnectionConfig| c.stanza_timeout = Duration::MAX,
            |c: &mut ConnectionConfig| c.drain_timeout = Duration::MAX,
        ] {
            let mut c = cfg();
            set(&mut c);
            assert!(c.validate().is_err());
        }
        let mut c = cfg();
        c.drain_timeout = MAX_DURATION;
        assert!(c.validate().is_ok());
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let c = ConnectionConfig::new(
            SenderId::new("1").unwrap(),
            ServerKey::new("SECRET").unwrap(),
        );
        assert!(!format!("{c:?}").contains("SECRET"));
    }
}
