//! The tokio adapter of ccs-rs: a CCS (GCM/FCM XMPP) client for tokio applications.
//!
//! All protocol decisions live in [`ccs_proto::Client`]; this crate is a loop that moves
//! bytes over TLS (rustls, ring) and reads the clock.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use ccs_tokio::{Client, Config, Endpoint};
//! use ccs_proto::message::Downstream;
//! use ccs_proto::credentials::{SenderId, ServerKey};
//!
//! let key = ServerKey::new(std::env::var("CCS_API_KEY")?)?;
//! let config = Config::new(Endpoint::fcm(), SenderId::new("123456789012")?, key);
//! let client = Client::connect(config).await?;
//! let mut upstream = client.upstream().expect("first call");
//! let outcome = client
//!     .send(Downstream::builder("REGISTRATION_TOKEN", "m-1")?.build())
//!     .await?;
//! println!("{outcome:?}");
//! while let Some(item) = upstream.recv().await {
//!     println!("from a device: {item:?}");
//! }
//! let report = client.close(std::time::Duration::from_secs(5)).await;
//! println!("never answered: {:?}", report.unsent);
//! # Ok(()) }
//! ```
//!
//! - [`Client::send`] waits for queue space, then for the message's one outcome. It is
//!   cancel-safe: dropping the future while it waits for space sends nothing; dropping it
//!   after the message was queued neither loses nor duplicates the message: it is still
//!   delivered, and its outcome is published as [`Event::DetachedOutcome`] on
//!   [`Client::events`].
//! - [`Client::try_send`] never waits: it queues the message or gives it back.
//! - [`Client::upstream`] yields upstream messages and receipts (with an [`AckToken`] in
//!   manual-ack mode).
//! - [`Client::close`] stops taking work, waits for answers until the deadline and reports
//!   what was never answered.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod driver;
mod tls;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ccs_proto::client::{ClientEvent, ClientStats, DownReason, Outcome};
use ccs_proto::connection::{AckError, AckHandle, ConnId};
use ccs_proto::credentials::{SenderId, ServerKey};
use ccs_proto::message::{Downstream, MessageId, Receipt, Upstream};
use ccs_proto::{ClientConfig, ConnectionConfig};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};
use tokio_rustls::TlsConnector;

pub use ccs_proto;
pub use tls::{Endpoint, TlsOptions};

use driver::{Command, Driver};

/// Everything [`Client::connect`] needs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Where to connect.
    pub endpoint: Endpoint,
    /// How to trust it.
    pub tls: TlsOptions,
    /// The sans-IO client's settings (connections, queue, retry, reconnect, and each
    /// connection's credentials, window, ack mode and timers).
    pub client: ClientConfig,
    /// Bytes read from a socket at a time. Default 64 KiB.
    pub read_buffer: usize,
    /// Capacity of the [`Client::events`] channel. Default 1024.
    pub event_capacity: usize,
}

impl Config {
    /// The defaults for this endpoint and credentials.
    pub fn new(endpoint: Endpoint, sender_id: SenderId, server_key: ServerKey) -> Self {
        Self {
            endpoint,
            tls: TlsOptions::default(),
            client: ClientConfig::new(ConnectionConfig::new(sender_id, server_key)),
            read_buffer: 64 * 1024,
            event_capacity: 1024,
        }
    }
}

/// Why [`Client::connect`] failed.
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
    /// The server could not be reached, or TLS failed (an untrusted certificate, a wrong
    /// server name), or the stream broke before it was ready.
    Connect(String),
}

impl ConnectError {
    fn from_down(reason: &DownReason) -> Self {
        Self::Connect(match reason {
            DownReason::ConnectFailed(why) => why.clone(),
            DownReason::ConnectTimeout => "the connection attempt timed out".into(),
            other => format!("{other:?}"),
        })
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
    fn from_core(e: ccs_proto::client::SendError) -> Self {
        Self {
            kind: e.kind,
            message: Some(e.message),
        }
    }

    fn closed(message: Option<Downstream>) -> Self {
        Self {
            kind: ccs_proto::client::SendErrorKind::Closed,
            message: message.map(Box::new),
        }
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "message not queued: {:?}", self.kind)
    }
}

impl std::error::Error for SendError {}

/// An upstream message or receipt, from [`Client::upstream`].
#[derive(Debug)]
#[non_exhaustive]
pub enum UpstreamItem {
    /// A message from a device.
    Message {
        /// The message.
        message: Box<Upstream>,
        /// In manual-ack mode, the token to ack it with once it is handled.
        ack: Option<AckToken>,
    },
    /// A delivery receipt.
    Receipt {
        /// The receipt.
        receipt: Box<Receipt>,
        /// In manual-ack mode, the token to ack it with.
        ack: Option<AckToken>,
    },
}

/// Acks one upstream message or receipt (manual-ack mode). Valid while the connection it
/// arrived on lives; after that the server redelivers the message and the new copy has its
/// own token.
#[derive(Debug)]
pub struct AckToken {
    handle: AckHandle,
    cmd: mpsc::WeakUnboundedSender<Command>,
}

impl AckToken {
    fn new(handle: AckHandle, cmd: mpsc::WeakUnboundedSender<Command>) -> Self {
        Self { handle, cmd }
    }

    /// The id of the message this token acks.
    pub fn message_id(&self) -> &MessageId {
        self.handle.message_id()
    }

    /// Acks the message on its connection.
    pub async fn ack(self) -> Result<(), AckError> {
        let (reply, rx) = oneshot::channel();
        let sent = self.cmd.upgrade().is_some_and(|tx| {
            tx.send(Command::Ack {
                handle: self.handle,
                reply,
            })
            .is_ok()
        });
        if !sent {
            return Err(AckError::ConnectionGone);
        }
        rx.await.unwrap_or(Err(AckError::ConnectionGone))
    }
}

/// The stream of upstream messages and receipts.
#[derive(Debug)]
pub struct UpstreamStream {
    rx: mpsc::UnboundedReceiver<UpstreamItem>,
}

impl UpstreamStream {
    /// The next upstream message or receipt; `None` once the client has stopped.
    pub async fn recv(&mut self) -> Option<UpstreamItem> {
        self.rx.recv().await
    }
}

impl futures_core::Stream for UpstreamStream {
    type Item = UpstreamItem;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<UpstreamItem>> {
        self.rx.poll_recv(cx)
    }
}

/// Monitoring events, from [`Client::events`].
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
    /// The socket of a connection (or connection attempt) is closed and every task of that
    /// connection has ended. Comes once per connection, after the core gave it up.
    SocketClosed {
        /// Which.
        id: ConnId,
        /// Whether it ended cleanly: everything queued, the stream end and the TLS
        /// `close_notify` were written.
        graceful: bool,
    },
    /// Any other event of the core (draining, retries, anomalies, ...).
    Core(Box<ClientEvent>),
    /// The client has closed.
    Closed,
}

/// What [`Client::close`] reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Messages never answered (each also got an `Unsent` outcome).
    pub unsent: Vec<MessageId>,
    /// Whether the deadline ended the close.
    pub deadline_passed: bool,
}

/// A CCS client. Cheap to clone; `Send` and `Sync`.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cmd: mpsc::UnboundedSender<Command>,
    closing: std::sync::atomic::AtomicBool,
    permits: Arc<Semaphore>,
    max_queue: usize,
    upstream: Mutex<Option<UpstreamStream>>,
    events: broadcast::Sender<Event>,
}

impl Client {
    /// Starts the client and waits for its first connection to be ready. Fails fast when the
    /// server refuses the credentials, cannot be reached, or presents a certificate that is
    /// not trusted.
    pub async fn connect(config: Config) -> Result<Self, ConnectError> {
        let tls_config = tls::client_config(&config.tls).map_err(ConnectError::Config)?;
        let server_name =
            tls::server_name(&config.endpoint, &config.tls).map_err(ConnectError::Config)?;
        let permits = config.client.max_queue;
        let core = ccs_proto::Client::new(config.client, Instant::now())
            .map_err(|e| ConnectError::Config(e.to_string()))?;
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (up_tx, up_rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(config.event_capacity.max(1));
        let (first_tx, first_rx) = oneshot::channel();
        let driver = Driver {
            core,
            cmd_rx,
            upstream_tx: Some(up_tx),
            events: events.clone(),
            cmd_tx: cmd_tx.downgrade(),
            endpoint: config.endpoint,
            server_name,
            tls: TlsConnector::from(tls_config),
            read_buffer: config.read_buffer.max(4096),
            first: Some(first_tx),
        };
        tokio::spawn(driver.run());
        let client = Self {
            inner: Arc::new(Inner {
                cmd: cmd_tx,
                closing: std::sync::atomic::AtomicBool::new(false),
                permits: Arc::new(Semaphore::new(permits)),
                max_queue: permits,
                upstream: Mutex::new(Some(UpstreamStream { rx: up_rx })),
                events,
            }),
        };
        match first_rx.await {
            Ok(Ok(())) => Ok(client),
            Ok(Err(e)) => {
                client.close(Duration::ZERO).await;
                Err(e)
            }
            Err(_) => Err(ConnectError::Connect("the client stopped".into())),
        }
    }

    /// Queues a message (waiting for queue space if needed) and waits for its one outcome.
    /// See the crate docs for what dropping this future does.
    pub async fn send(&self, message: Downstream) -> Result<Outcome, SendError> {
        let Ok(permit) = self.inner.permits.clone().acquire_owned().await else {
            return Err(SendError::closed(Some(message)));
        };
        let rx = self.submit(message, permit)?;
        rx.await.unwrap_or(Err(SendError::closed(None)))
    }

    /// Queues a message without waiting. Returns a future of its outcome, or the message
    /// back when the queue is full or the client is closing.
    pub fn try_send(&self, message: Downstream) -> Result<PendingOutcome, SendError> {
        let Ok(permit) = self.inner.permits.clone().try_acquire_owned() else {
            return Err(SendError {
                kind: ccs_proto::client::SendErrorKind::QueueFull {
                    limit: self.inner.max_queue,
                },
                message: Some(Box::new(message)),
            });
        };
        Ok(PendingOutcome {
            rx: self.submit(message, permit)?,
        })
    }

    fn submit(
        &self,
        message: Downstream,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<oneshot::Receiver<Result<Outcome, SendError>>, SendError> {
        if self
            .inner
            .closing
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(SendError {
                kind: ccs_proto::client::SendErrorKind::Closing,
                message: Some(Box::new(message)),
            });
        }
        let (reply, rx) = oneshot::channel();
        self.inner
            .cmd
            .send(Command::Send {
                message,
                reply,
                permit,
            })
            .map_err(|e| match e.0 {
                Command::Send { message, .. } => SendError::closed(Some(message)),
                _ => SendError::closed(None),
            })?;
        Ok(rx)
    }

    /// The upstream messages and receipts. The first call takes the stream; later calls get
    /// `None`. In auto-ack mode a message is acked on arrival whether or not it is read:
    /// read this stream, or the messages are dropped (and logged) once it is gone.
    pub fn upstream(&self) -> Option<UpstreamStream> {
        self.inner
            .upstream
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Monitoring events. A receiver that falls behind by more than the channel capacity
    /// misses the oldest events (it is told how many).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// The core's counters.
    pub async fn stats(&self) -> Option<ClientStats> {
        let (reply, rx) = oneshot::channel();
        self.inner.cmd.send(Command::Stats { reply }).ok()?;
        rx.await.ok()
    }

    /// Stops taking work, sends what is queued while connections live, waits for answers
    /// until `deadline` from now, closes every connection, and reports what was never
    /// answered.
    pub async fn close(&self, deadline: Duration) -> Report {
        self.inner
            .closing
            .store(true, std::sync::atomic::Ordering::Release);
        let (reply, rx) = oneshot::channel();
        if self
            .inner
            .cmd
            .send(Command::Close { deadline, reply })
            .is_err()
        {
            return Report::default();
        }
        rx.await.unwrap_or_default()
    }
}

/// The TLS connector and server name [`Client`] uses for `endpoint`, for tools that need a
/// bare TLS connection to the same server (the benchmark's ceiling, diagnostics).
pub fn tls_connector(
    endpoint: &Endpoint,
    opts: &TlsOptions,
) -> Result<(TlsConnector, rustls::pki_types::ServerName<'static>), String> {
    let config = tls::client_config(opts)?;
    Ok((
        TlsConnector::from(config),
        tls::server_name(endpoint, opts)?,
    ))
}

/// The outcome of a message queued by [`Client::try_send`].
#[derive(Debug)]
pub struct PendingOutcome {
    rx: oneshot::Receiver<Result<Outcome, SendError>>,
}

impl std::future::Future for PendingOutcome {
    type Output = Result<Outcome, SendError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(SendError::closed(None))))
    }
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
