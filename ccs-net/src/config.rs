//! [`Config`]: everything an adapter's `connect` needs, with one-call setters for the common
//! settings.

use std::sync::Arc;
use std::time::Duration;

use ccs_proto::credentials::{SenderId, ServerKey};
use ccs_proto::{AckMode, ClientConfig, ConnectionConfig};

use crate::tls::{Endpoint, TlsOptions};

/// Everything an adapter's `connect` needs.
///
/// The common settings are one call each: [`manual_acks`](Self::manual_acks),
/// [`window`](Self::window), [`connections`](Self::connections),
/// [`max_queue`](Self::max_queue); everything else is in [`client`](Self::client) (the core's
/// [`ClientConfig`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Where to connect.
    pub endpoint: Endpoint,
    /// How to trust it.
    pub tls: TlsOptions,
    /// A rustls client configuration to use instead of the one built from
    /// [`tls`](Self::tls): custom roots, the platform verifier, client certificates. Its
    /// crypto provider is the caller's choice. The server name still comes from
    /// [`TlsOptions::server_name`] or the endpoint's host.
    pub tls_config: Option<Arc<rustls::ClientConfig>>,
    /// The sans-IO client's settings (connections, queue, retry, reconnect, and each
    /// connection's credentials, window, ack mode and timers).
    pub client: ClientConfig,
    /// Bytes read from a socket at a time. Default 64 KiB.
    pub read_buffer: usize,
    /// Capacity of the events channel (`Client::events`). Default 1024.
    pub event_capacity: usize,
    /// Upstream messages and receipts waiting in the upstream stream (in auto-ack mode,
    /// counting those taken whose ack is on its way). When it is full, a new one is neither
    /// handed over nor acked: the server redelivers it on a later connection. Default 1024,
    /// at least 1.
    pub upstream_capacity: usize,
    /// Bytes waiting to be written on one connection beyond which the connection counts as
    /// failed (the server has stopped reading). Default 16 MiB, at least 64 KiB; a
    /// connection holds at most twice this (the batch being written and the queue behind it).
    pub write_limit: usize,
    /// How long a connection the client gave up (closed, dead, replaced) gets to write what
    /// is queued, its stream end and TLS `close_notify`, and see the server close its side,
    /// before its socket is closed regardless. Default 2 s.
    pub disconnect_grace: Duration,
}

impl Config {
    /// The defaults for this endpoint and credentials.
    pub fn new(endpoint: Endpoint, sender_id: SenderId, server_key: ServerKey) -> Self {
        Self {
            endpoint,
            tls: TlsOptions::default(),
            tls_config: None,
            client: ClientConfig::new(ConnectionConfig::new(sender_id, server_key)),
            read_buffer: 64 * 1024,
            event_capacity: 1024,
            upstream_capacity: 1024,
            write_limit: 16 * 1024 * 1024,
            disconnect_grace: Duration::from_secs(2),
        }
    }

    /// Manual-ack mode: each upstream message and receipt is acked only when the application
    /// calls `ack` on its token, once it has handled it durably. (The default, auto-ack mode,
    /// acks an item when the application takes it from the upstream stream.)
    pub fn manual_acks(mut self) -> Self {
        self.client.connection.ack_mode = AckMode::Manual;
        self
    }

    /// Messages on the wire without an answer, per connection (CCS allows at most 100).
    pub fn window(mut self, window: usize) -> Self {
        self.client.connection.window = window;
        self
    }

    /// Connections kept open at once (CCS allows up to 1000 per sender id).
    pub fn connections(mut self, connections: usize) -> Self {
        self.client.connections = connections;
        self
    }

    /// Messages accepted and not yet on the wire; a full queue makes `send` wait and
    /// `try_send` refuse.
    pub fn max_queue(mut self, max_queue: usize) -> Self {
        self.client.max_queue = max_queue;
        self
    }

    /// Trusts one more CA or self-signed certificate, given as PEM text (the emulator's, for
    /// example), and only the extra ones: not the public web roots.
    pub fn trust_only_pem(mut self, pem: impl Into<String>) -> Self {
        self.tls.ca_pem.push(pem.into());
        self.tls.only_extra_roots = true;
        self
    }

    /// Whether the application asked for auto-ack mode.
    pub(crate) fn auto_acks(&self) -> bool {
        !matches!(self.client.connection.ack_mode, AckMode::Manual)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_call_setters_reach_the_core_config() {
        let config = Config::new(
            Endpoint::new("localhost", 1),
            SenderId::new("1").unwrap(),
            ServerKey::new("k").unwrap(),
        );
        assert!(config.auto_acks());
        let config = config.manual_acks().window(7).connections(3).max_queue(9);
        assert!(!config.auto_acks());
        assert_eq!(config.client.connection.window, 7);
        assert_eq!(config.client.connections, 3);
        assert_eq!(config.client.max_queue, 9);
        let config = config.trust_only_pem("PEM");
        assert!(config.tls.only_extra_roots);
        assert_eq!(config.tls.ca_pem, vec!["PEM".to_string()]);
    }
}
