//! How an emulator behaves: [`EmulatorConfig`], its TLS source, the upstream generator and
//! the faults it injects.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use ccs_proto::credentials::{DEFAULT_DOMAIN, SenderId, ServerKey};

use crate::error::EmulatorError;

/// The sender id of [`EmulatorConfig::default`].
pub const DEFAULT_SENDER_ID: &str = "123456789012";
/// The server key of [`EmulatorConfig::default`] (a test value, not a secret).
pub const DEFAULT_SERVER_KEY: &str = "emulator-key";
/// The largest `data` object CCS accepted for a message to a token, keys and values counted:
/// "Message Too Big" = payload data over 4096 bytes, XMPP code `INVALID_JSON` (PROTOCOL.md
/// §4 "Size limits", D14R Table 11; the later GCM/FCM error text also says 4096 bytes for
/// most messages).
pub const MAX_DATA_BYTES: usize = 4096;
/// The largest `data` object for a message to a topic (`to` starting with `/topics/`, or a
/// `condition`): "2048 bytes in the case of messages to topics" in the later GCM/FCM error
/// text (PROTOCOL.md §4 "Size limits" and §9 item 10).
pub const MAX_TOPIC_DATA_BYTES: usize = 2048;

/// Everything an emulator needs. [`EmulatorConfig::new`] gives CCS's behaviour (PROTOCOL.md
/// Part 2) with no faults; change fields afterwards.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EmulatorConfig {
    /// Where to listen. Default `127.0.0.1:0` (a free port: read it from
    /// [`EmulatorHandle::local_addr`](crate::EmulatorHandle::local_addr)).
    pub listen: SocketAddr,
    /// The server certificate. Default [`TlsSource::Generate`].
    pub tls: TlsSource,
    /// The one sender id accepted.
    pub sender_id: SenderId,
    /// Its server key (the SASL PLAIN password). Every PLAIN identity form CCS accepted works
    /// (`SENDER@gcm.googleapis.com` or a bare `SENDER`, with or without an authzid).
    pub server_key: ServerKey,
    /// The XMPP domain (bound JIDs, the stream `from`). Default `gcm.googleapis.com`.
    pub domain: String,
    /// Pending downstream messages per connection before a new one counts as a window
    /// violation. Default 100 (PROTOCOL.md §7.1).
    pub window: usize,
    /// Answer a window violation with the stream error `policy-violation` (CCS documented
    /// no such thing; for tests of a client's flow control). Default `false`: only counted.
    pub strict_window: bool,
    /// Seed of every random choice (stream ids, bind resources, faults). Default 0.
    pub seed: u64,
    /// Registration tokens with a canonical replacement: an ack for a message to a key
    /// carries the value as `registration_id`.
    pub canonical: HashMap<String, String>,
    /// Tokens answered with `DEVICE_UNREGISTERED`.
    pub unregistered: HashSet<String>,
    /// Tokens answered with `BAD_REGISTRATION`.
    pub bad_registrations: HashSet<String>,
    /// The largest `data` object accepted for a message to a token, keys plus values in
    /// bytes. Default [`MAX_DATA_BYTES`]; larger ones are nacked `INVALID_JSON` ("Message
    /// too big").
    pub max_data_bytes: usize,
    /// The same for a message to a topic (`to` starting with `/topics/`, or a `condition`).
    /// Default [`MAX_TOPIC_DATA_BYTES`].
    pub max_topic_data_bytes: usize,
    /// Refuse a client ack whose `to` is not the device that sent the message (PROTOCOL.md
    /// §3.3: `to` = the registration id that sent it): it gets a `BAD_ACK` nack and the
    /// message stays un-acked, to be redelivered on the next connection, so a buggy ack
    /// does not pass unnoticed. `false` (lenient): an ack whose `message_id` names exactly
    /// one un-acked message counts, whatever its `to`. Default `true`.
    pub strict_acks: bool,
    /// Upstream messages and receipts sent on one connection and not yet acked beyond which
    /// no more are sent to it (CCS held upstream back from a client that did not ack).
    /// Default 100.
    pub max_unacked_upstream: usize,
    /// Upstream messages and receipts waiting for a connection beyond which generated ones
    /// and receipts are dropped (injected ones are always kept). Default 100 000.
    pub max_queued_upstream: usize,
    /// Upstream messages and receipts go to a freshly bound connection once the client has
    /// sent any stanza after its bind request (typically the optional session request, whose
    /// result a client may wait for before it takes messages), or this long after the bind,
    /// whichever comes first. Default 1 s.
    pub upstream_after_bind: Duration,
    /// `category` of generated upstream messages and of receipts. Default `com.example.app`.
    pub category: String,
    /// Generate upstream messages at a steady rate. Default `None`.
    pub upstream_generator: Option<UpstreamGenerator>,
    /// Send `CONNECTION_DRAINING` after this many downstream messages on a connection (the
    /// last one is still answered normally). Default `None`.
    pub drain_after: Option<u64>,
    /// How long a draining connection waits for its pending messages to be answered and its
    /// upstream messages acked before the server closes it anyway. Default 10 s.
    pub drain_grace: Duration,
    /// How long the server waits for the client's `</stream:stream>` after its own before it
    /// considers the stream over. Default 5 s.
    pub close_timeout: Duration,
    /// A client that has not bound a resource this long after connecting gets the stream
    /// error `connection-timeout` (the TLS handshake gets the same time). Default 30 s.
    pub setup_timeout: Duration,
    /// Send a whitespace keepalive (one space, as CCS did) after this long without writing.
    /// Default `None`.
    pub whitespace_keepalive: Option<Duration>,
    /// Remember every downstream `message_id` in the ledger (for
    /// [`Ledger::unanswered_ids`](crate::Ledger::unanswered_ids),
    /// [`Ledger::answered`](crate::Ledger::answered) and the resend count). Turn off for
    /// long benchmarks to keep memory flat. Default `true`.
    pub track_ids: bool,
    /// Faults to inject. Default: none.
    pub faults: Faults,
}

impl EmulatorConfig {
    /// CCS's behaviour for these credentials, no faults.
    pub fn new(sender_id: SenderId, server_key: ServerKey) -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            tls: TlsSource::Generate,
            sender_id,
            server_key,
            domain: DEFAULT_DOMAIN.to_owned(),
            window: 100,
            strict_window: false,
            seed: 0,
            canonical: HashMap::new(),
            unregistered: HashSet::new(),
            bad_registrations: HashSet::new(),
            max_data_bytes: MAX_DATA_BYTES,
            max_topic_data_bytes: MAX_TOPIC_DATA_BYTES,
            strict_acks: true,
            max_unacked_upstream: 100,
            max_queued_upstream: 100_000,
            upstream_after_bind: Duration::from_secs(1),
            category: "com.example.app".to_owned(),
            upstream_generator: None,
            drain_after: None,
            drain_grace: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            setup_timeout: Duration::from_secs(30),
            whitespace_keepalive: None,
            track_ids: true,
            faults: Faults::default(),
        }
    }

    /// Checks the values [`Emulator::start`](crate::Emulator::start) cannot work with.
    pub fn validate(&self) -> Result<(), EmulatorError> {
        let bad = |field, reason: &str| {
            Err(EmulatorError::Config {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.window == 0 {
            return bad("window", "must be at least 1");
        }
        if self.max_unacked_upstream == 0 {
            return bad("max_unacked_upstream", "must be at least 1");
        }
        if self.domain.is_empty()
            || self
                .domain
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '@' | '/'))
        {
            return bad("domain", "must be a non-empty host name");
        }
        if self.category.is_empty() {
            return bad("category", "must not be empty");
        }
        for (field, d) in [
            ("drain_grace", self.drain_grace),
            ("close_timeout", self.close_timeout),
            ("setup_timeout", self.setup_timeout),
        ] {
            if d.is_zero() {
                return bad(field, "must be more than zero");
            }
        }
        if self.whitespace_keepalive.is_some_and(|d| d.is_zero()) {
            return bad("whitespace_keepalive", "must be more than zero when set");
        }
        if let Some(g) = &self.upstream_generator
            && !(g.per_second.is_finite() && g.per_second > 0.0)
        {
            return bad("upstream_generator", "per_second must be a positive number");
        }
        self.faults.validate()
    }
}

impl Default for EmulatorConfig {
    /// [`EmulatorConfig::new`] for sender [`DEFAULT_SENDER_ID`] and key
    /// [`DEFAULT_SERVER_KEY`].
    fn default() -> Self {
        Self::new(
            SenderId::new(DEFAULT_SENDER_ID).expect("the default sender id is a valid literal"),
            ServerKey::new(DEFAULT_SERVER_KEY).expect("the default server key is a valid literal"),
        )
    }
}

/// Where the server certificate comes from.
#[derive(Clone)]
#[non_exhaustive]
pub enum TlsSource {
    /// A self-signed certificate generated at start for `localhost`, `127.0.0.1`, `::1`,
    /// `gcm.googleapis.com`, `fcm-xmpp.googleapis.com` and `gcm-xmpp.googleapis.com`. Clients
    /// trust it through [`EmulatorHandle::cert_pem`](crate::EmulatorHandle::cert_pem).
    Generate,
    /// A certificate chain (leaf first) and its private key, both PEM.
    Provided {
        /// `-----BEGIN CERTIFICATE-----` blocks, leaf first.
        cert_chain_pem: String,
        /// One PKCS#8, PKCS#1 or SEC1 private key block.
        key_pem: String,
    },
}

impl std::fmt::Debug for TlsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Generate => f.write_str("Generate"),
            // The key is a secret: never printed.
            Self::Provided { cert_chain_pem, .. } => f
                .debug_struct("Provided")
                .field(
                    "cert_chain_pem",
                    &format_args!("<{} bytes>", cert_chain_pem.len()),
                )
                .field("key_pem", &format_args!("<redacted>"))
                .finish(),
        }
    }
}

/// Upstream messages made up at a steady rate and queued for delivery like injected ones:
/// `from` the configured token, `message_id` `gen-N`, `data` `{"seq": "N"}`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct UpstreamGenerator {
    /// Messages per second (a positive number; fractions allowed).
    pub per_second: f64,
    /// The `from` (device token) of every generated message.
    pub from: String,
}

impl UpstreamGenerator {
    /// `per_second` messages from `from`.
    pub fn new(per_second: f64, from: impl Into<String>) -> Self {
        Self {
            per_second,
            from: from.into(),
        }
    }
}

/// Faults to inject, for testing clients. All random choices come from the config's seed and
/// the connection's number, so a failing run repeats. Default: no faults.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Faults {
    /// Cut each connection after the server has written exactly this many bytes of XMPP
    /// (mid-stanza if that is where the count ends), then close TCP without a TLS
    /// `close_notify`.
    pub drop_after_bytes: Option<u64>,
    /// For each stanza the server writes, the chance that the connection is cut at a random
    /// byte inside that write (then closed as for `drop_after_bytes`). In `0.0..=1.0`.
    pub drop_probability: f64,
    /// For each downstream message received, the chance that the server answers with a
    /// stream error (`internal-server-error` or `system-shutdown`, equally likely) instead,
    /// ending the connection. In `0.0..=1.0`.
    pub stream_error_probability: f64,
    /// Answer each downstream message after a delay drawn uniformly from this range
    /// (inclusive), instead of at once.
    pub slow_ack: Option<(Duration, Duration)>,
    /// For each downstream message, the chance that it is never answered on its connection
    /// (the client has to time out or resend it on another connection). In `0.0..=1.0`.
    pub missing_ack_probability: f64,
    /// Write output in pieces of 1 to 16 bytes, each flushed (each its own TLS record).
    pub tiny_writes: bool,
}

impl Faults {
    fn validate(&self) -> Result<(), EmulatorError> {
        for (field, p) in [
            ("faults.drop_probability", self.drop_probability),
            (
                "faults.stream_error_probability",
                self.stream_error_probability,
            ),
            (
                "faults.missing_ack_probability",
                self.missing_ack_probability,
            ),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(EmulatorError::Config {
                    field,
                    reason: "must be a probability in 0.0..=1.0".to_owned(),
                });
            }
        }
        if let Some((lo, hi)) = self.slow_ack
            && lo > hi
        {
            return Err(EmulatorError::Config {
                field: "faults.slow_ack",
                reason: "the lower bound is above the upper bound".to_owned(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = EmulatorConfig::default();
        assert!(c.validate().is_ok());
        assert_eq!(c.window, 100);
        assert_eq!(c.listen.ip(), Ipv4Addr::LOCALHOST);
        assert_eq!(c.listen.port(), 0);
    }

    #[test]
    fn bad_values_are_refused() {
        let mut c = EmulatorConfig::default();
        c.faults.drop_probability = 1.5;
        assert!(c.validate().is_err());
        let mut c = EmulatorConfig::default();
        c.faults.missing_ack_probability = f64::NAN;
        assert!(c.validate().is_err());
        let c = EmulatorConfig {
            window: 0,
            ..EmulatorConfig::default()
        };
        assert!(c.validate().is_err());
        let c = EmulatorConfig {
            upstream_generator: Some(UpstreamGenerator::new(0.0, "d")),
            ..EmulatorConfig::default()
        };
        assert!(c.validate().is_err());
        let mut c = EmulatorConfig::default();
        c.faults.slow_ack = Some((Duration::from_secs(2), Duration::from_secs(1)));
        assert!(c.validate().is_err());
    }

    #[test]
    fn provided_key_never_prints() {
        let t = TlsSource::Provided {
            cert_chain_pem: "CERT".into(),
            key_pem: "SECRET KEY".into(),
        };
        assert!(!format!("{t:?}").contains("SECRET"));
    }
}
