//! The tokio adapter of ccs-rs: a CCS (GCM/FCM XMPP) client for tokio applications.
//!
//! All protocol decisions live in [`ccs_proto::Client`], and everything that is not tokio
//! (TLS set-up, the public types, routing outcomes, the close report) in [`ccs_net`]; this
//! crate is the loop that moves bytes over tokio sockets and reads tokio's clock.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use ccs_tokio::prelude::*;
//!
//! let key = ServerKey::new(std::env::var("CCS_API_KEY")?)?;
//! let config = Config::new(Endpoint::fcm(), SenderId::new("123456789012")?, key).manual_acks();
//! let client = Client::connect(config).await?;
//! let mut upstream = client.upstream().expect("first call");
//! let outcome = client
//!     .send(Downstream::builder("REGISTRATION_TOKEN", "m-1")?.build())
//!     .await?;
//! println!("{}: {outcome:?}", outcome.kind());
//! while let Some(item) = upstream.recv().await {
//!     println!("from {}: {}", item.from(), item.message_id());
//!     let (_item, ack) = item.into_ack();
//!     ack.ack().await?; // once handled durably
//! }
//! let report = client.close(std::time::Duration::from_secs(5)).await;
//! println!("never answered: {:?}", report.unsent);
//! # Ok(()) }
//! ```
//!
//! - [`Client::send`] waits for queue room, then for the message's one outcome. It is
//!   cancel-safe: dropping the future while it waits for room sends nothing; dropping it
//!   after the message was queued neither loses nor duplicates the message: it is still
//!   delivered, and its outcome is published as [`Event::DetachedOutcome`] on
//!   [`Client::events`]. [`Client::send_priority`] puts a reply ahead of a bulk backlog.
//! - [`Client::try_send`] never waits: it queues the message or gives it back. Its
//!   [`PendingOutcome`], dropped before it resolves, publishes the outcome the same way.
//! - [`Client::send_batch`] and [`Client::enqueue_batch`] queue many messages under one
//!   command and one wake-up of the client per stretch of queue room; their
//!   [`PendingBatch`] is woken once, with every outcome, in the order of the messages. The
//!   fast path for bulk senders.
//! - [`Client::upstream`] yields upstream messages and receipts, each with an [`AckToken`]
//!   (a no-op in auto-ack mode).
//! - [`Client::close`] stops taking work, waits for answers until the deadline, closes every
//!   connection cleanly and reports what was never answered and which upstream messages were
//!   never acked.
//!
//! Acks, closing and resource bounds work as the [`ccs_net`] crate docs describe, for every
//! adapter alike. Each client runs on an IO thread of its own (`ccs-io`), on a current-thread
//! tokio runtime: the engine and every connection's socket IO (each connection a future that
//! owns its socket) share one task there, so bytes cross no task on their way in or out, and
//! your runtime's workers run only your code. (So the client's timers use real time, also
//! under `tokio::time::pause`.) [`Client::connect_with`] dials through a [`Dialer`] of your own (a proxy, a unix socket,
//! an in-memory pipe) and does TLS over it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod driver;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use ccs_proto::client::ConnectFailure;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub use ccs_net::{self, ccs_proto};
pub use ccs_net::{
    AckToken, Config, ConnectError, Endpoint, Event, PendingBatch, PendingOutcome, Report,
    SendError, Stats, TlsOptions, UnackedUpstream, UpstreamItem, UpstreamStream,
    describe_tls_error,
};

/// What an application needs in scope: `use ccs_tokio::prelude::*;`.
pub mod prelude {
    pub use crate::{Client, Dialer};
    pub use ccs_net::prelude::*;
}

/// Opens the byte stream a connection runs TLS over. [`TcpDialer`] is the default; your own
/// can go through an HTTP CONNECT or SOCKS5 proxy, a unix socket or an in-memory pipe. It is
/// called again for every new connection the reconnect policy makes.
pub trait Dialer: Send + Sync + 'static {
    /// The byte stream.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Opens a stream to `endpoint`. Say whether retrying can help with
    /// [`ConnectFailure::permanent`] or [`ConnectFailure::transient`]; what to do about it
    /// is the core's decision.
    fn dial(
        &self,
        endpoint: &Endpoint,
    ) -> impl Future<Output = Result<Self::Stream, ConnectFailure>> + Send;
}

/// Resolves the endpoint's host and connects over TCP (with `TCP_NODELAY`). A name that
/// does not resolve is a permanent failure; a refused connection a transient one.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpDialer;

impl Dialer for TcpDialer {
    type Stream = TcpStream;

    async fn dial(&self, endpoint: &Endpoint) -> Result<TcpStream, ConnectFailure> {
        // Resolving apart from connecting tells a name that does not resolve (permanent)
        // from a refused connection (transient).
        let addrs: Vec<std::net::SocketAddr> =
            tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port))
                .await
                .map_err(|e| {
                    ConnectFailure::permanent(format!("cannot resolve {}: {e}", endpoint.host))
                })?
                .collect();
        let tcp = TcpStream::connect(addrs.as_slice())
            .await
            .map_err(|e| ConnectFailure::transient(format!("cannot connect to {endpoint}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }
}

/// A CCS client. Cheap to clone; `Send` and `Sync`. When the last clone is dropped without
/// [`close`](Self::close), the client finishes what was queued (for at most 10 s) and stops.
#[derive(Debug, Clone)]
pub struct Client {
    handle: ccs_net::Handle,
}

impl Client {
    /// Starts the client and waits for its first connection to be ready.
    ///
    /// The core decides when to give up ([`ccs_proto::client::ReconnectPolicy`]'s
    /// `first_connect_timeout`, default 30 s): at once when the server refuses the
    /// credentials, the certificate is not trusted or the host name does not resolve;
    /// otherwise transient failures (refused, reset, a stream error, an early close) are
    /// retried with the reconnect backoff until that deadline, and the last one is reported.
    pub async fn connect(config: Config) -> Result<Self, ConnectError> {
        Self::connect_with(config, TcpDialer).await
    }

    /// As [`connect`](Self::connect), over byte streams from `dialer` (TLS still runs over
    /// them, with [`Config::tls`] or [`Config::tls_config`]). The dialer's futures run on the
    /// client's IO thread, on its current-thread tokio runtime.
    pub async fn connect_with(config: Config, dialer: impl Dialer) -> Result<Self, ConnectError> {
        let (engine, handle, first) = ccs_net::Engine::new(config, Instant::now())?;
        let dialer = Arc::new(dialer);
        // The runtime is built on the IO thread itself: a runtime must not be dropped in an
        // async context, which is where it would be dropped should the spawn fail.
        let (started_tx, started) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("ccs-io".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => {
                        let _ = started_tx.send(Ok(()));
                        runtime.block_on(driver::drive(engine, dialer));
                    }
                    Err(e) => {
                        let _ = started_tx.send(Err(e.to_string()));
                    }
                }
            })
            .map_err(|e| ConnectError::Connect(format!("cannot start the IO thread: {e}")))?;
        match started.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(ConnectError::Connect(format!(
                    "cannot start the IO runtime: {e}"
                )));
            }
            Err(_) => {
                return Err(ConnectError::Connect(
                    "the IO thread stopped at once".into(),
                ));
            }
        }
        first.wait(&handle).await?;
        Ok(Self { handle })
    }

    ccs_net::async_client_methods!();
}

/// The TLS connector and server name [`Client`] uses for `endpoint`, for tools that need a
/// bare TLS connection to the same server (the benchmark's ceiling, diagnostics).
pub fn tls_connector(
    endpoint: &Endpoint,
    opts: &TlsOptions,
) -> Result<(TlsConnector, rustls::pki_types::ServerName<'static>), String> {
    let config = ccs_net::tls::client_config(opts)?;
    Ok((
        TlsConnector::from(config),
        ccs_net::tls::server_name(endpoint, opts)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone>() {}
        check::<Client>();
    }
}
