//! The futures-io adapter of ccs-rs: a CCS (GCM/FCM XMPP) client for smol, async-std and
//! any other runtime that speaks [`futures_io`].
//!
//! One adapter serves them all: it depends on no runtime, only on the smol-rs building
//! blocks ([`async_io`] for sockets and timers, [`async_executor`] for its own tasks,
//! [`blocking`] for DNS look-ups) and on `futures-rustls` for TLS. async-std is discontinued
//! upstream, but it still speaks futures-io, so this crate serves it as it serves smol.
//!
//! All protocol decisions live in [`ccs_proto::Client`], and everything that is not IO (TLS
//! set-up, the public types, routing outcomes, the close report) in [`ccs_net`]; this crate
//! is the loop that moves bytes over futures-io sockets and reads async-io's clock.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use ccs_async_std::prelude::*;
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
//! // The same code under smol: smol::block_on(demo()); under async-std:
//! // async_std::task::block_on(demo()).
//! ```
//!
//! # Threading
//!
//! Each [`Client`] has one IO thread of its own, named `ccs-io`. It runs
//! [`async_io::block_on`] over an [`async_executor::LocalExecutor`] that holds the engine's
//! loop and one task per connection; the thread ends once the client has closed and every
//! socket is closed (after the last clone of the `Client` is dropped without `close`, within
//! the 10 s the client gets to finish, or once a `connect` future is dropped before it
//! resolves). Shared by every client: async-io's reactor thread (`async-io`, started on
//! first use) and [`blocking`]'s pool, which resolves host names and lets its threads go
//! when idle.
//!
//! Why a thread of its own rather than tasks on the application's executor: there is no
//! runtime-neutral way to spawn (smol and async-std each have their own `spawn`, and an
//! executor handed in would tie the adapter to one of them), and a client's loop must keep
//! running while the application awaits nothing (acks, keep-alives, reconnects). The
//! application's futures ([`Client::send`], [`UpstreamStream::recv`](ccs_net::UpstreamStream),
//! [`Client::close`], ...) come from [`ccs_net::Handle`]: they contain no runtime, are `Send`,
//! and can be awaited on any executor, or with [`ccs_net::block::wait`] on a plain thread.
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
//! adapter alike. Each connection is one task on the IO thread owning its socket;
//! [`Client::connect_with`] dials through a [`Dialer`] of your own (a proxy, a unix socket,
//! an in-memory pipe) and does TLS over it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod driver;

use std::future::Future;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Instant;

use async_io::Async;
use ccs_proto::client::ConnectFailure;
use futures_io::{AsyncRead, AsyncWrite};
use futures_rustls::TlsConnector;

pub use ccs_net::{self, ccs_proto};
pub use ccs_net::{
    AckToken, Config, ConnectError, Endpoint, Event, PendingBatch, PendingOutcome, Report,
    SendError, Stats, TlsOptions, UnackedUpstream, UpstreamItem, UpstreamStream,
    describe_tls_error,
};

/// What an application needs in scope: `use ccs_async_std::prelude::*;`.
pub mod prelude {
    pub use crate::{Client, Dialer};
    pub use ccs_net::prelude::*;
}

/// Opens the byte stream a connection runs TLS over. [`TcpDialer`] is the default; your own
/// can go through an HTTP CONNECT or SOCKS5 proxy, a unix socket or an in-memory pipe. It is
/// called again for every new connection the reconnect policy makes, on the client's IO
/// thread (see [threading](crate#threading)): its future must not block that thread.
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

/// Resolves the endpoint's host (on [`blocking`]'s thread pool, so that a slow look-up
/// holds up no other connection) and connects over TCP (with `TCP_NODELAY`). A name that
/// does not resolve is a permanent failure; a refused connection a transient one.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpDialer;

impl Dialer for TcpDialer {
    type Stream = Async<TcpStream>;

    async fn dial(&self, endpoint: &Endpoint) -> Result<Async<TcpStream>, ConnectFailure> {
        // Resolving apart from connecting tells a name that does not resolve (permanent)
        // from a refused connection (transient).
        let (host, port) = (endpoint.host.clone(), endpoint.port);
        let addrs: Vec<SocketAddr> = blocking::unblock(move || {
            (host.as_str(), port)
                .to_socket_addrs()
                .map(Iterator::collect)
        })
        .await
        .map_err(|e| ConnectFailure::permanent(format!("cannot resolve {}: {e}", endpoint.host)))?;
        let mut last = None;
        for addr in addrs {
            match Async::<TcpStream>::connect(addr).await {
                Ok(tcp) => {
                    let _ = tcp.get_ref().set_nodelay(true);
                    return Ok(tcp);
                }
                Err(e) => last = Some(e),
            }
        }
        let why = last.map_or_else(|| "no address".to_owned(), |e| e.to_string());
        Err(ConnectFailure::transient(format!(
            "cannot connect to {endpoint}: {why}"
        )))
    }
}

/// A CCS client. Cheap to clone; `Send` and `Sync`. When the last clone is dropped without
/// [`close`](Self::close), the client finishes what was queued (for at most 10 s) and stops.
#[derive(Debug, Clone)]
pub struct Client {
    handle: ccs_net::Handle,
}

impl Client {
    /// Starts the client (its IO thread) and waits for its first connection to be ready.
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
    /// them, with [`Config::tls`] or [`Config::tls_config`]).
    pub async fn connect_with(config: Config, dialer: impl Dialer) -> Result<Self, ConnectError> {
        let (engine, handle, first) = ccs_net::Engine::new(config, Instant::now())?;
        driver::spawn(engine, Arc::new(dialer))
            .map_err(|e| ConnectError::Connect(format!("cannot start the IO thread: {e}")))?;
        first.wait(&handle).await?;
        Ok(Self { handle })
    }

    ccs_net::async_client_methods!();
}

/// The TLS connector and server name [`Client`] uses for `endpoint`, for tools that need a
/// bare TLS connection to the same server (a benchmark's ceiling, diagnostics).
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

    #[test]
    fn the_applications_futures_are_send() {
        fn check<T: Send>(_: &T) {}
        let config = Config::new(
            Endpoint::new("127.0.0.1", 1),
            ccs_proto::credentials::SenderId::new("1").unwrap(),
            ccs_proto::credentials::ServerKey::new("k").unwrap(),
        );
        check(&Client::connect(config));
    }
}
