//! How a [`ServerConnection`](super::ServerConnection) behaves.

use std::time::Duration;

use crate::credentials::{DEFAULT_DOMAIN, SenderId, ServerKey};
use crate::xml::FramerConfig;

#[cfg(doc)]
use super::ServerConnection;

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
    /// Whether a client ack must name the device that sent the message: an ack counts only
    /// when its `to` is the `from` of the upstream message (or receipt) with its
    /// `message_id` (PROTOCOL.md §3.3: "`to` = registration ID that sent the upstream
    /// message", D14R Table 9). Otherwise it is reported as [`ServerEvent::UnknownAck`] (the
    /// owner answers `BAD_ACK`) and the message stays unacked, to be redelivered on the next
    /// connection. `false` (lenient): an ack whose `message_id` names exactly one unacked
    /// message is accepted whatever its `to`. Default `true`.
    ///
    /// [`ServerEvent::UnknownAck`]: super::ServerEvent::UnknownAck
    pub strict_ack_to: bool,
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
            strict_ack_to: true,
            seed: 0,
        }
    }
}
