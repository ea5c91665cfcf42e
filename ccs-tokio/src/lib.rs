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
//! - [`Client::try_send`] never waits: it queues the message or gives it back. Its
//!   [`PendingOutcome`], dropped before it resolves, publishes the outcome the same way.
//! - [`Client::upstream`] yields upstream messages and receipts (with an [`AckToken`] in
//!   manual-ack mode).
//! - [`Client::close`] stops taking work, waits for answers until the deadline, closes every
//!   connection cleanly and reports what was never answered and which upstream messages were
//!   never acked.
//!
//! # Upstream messages and acks
//!
//! An upstream message (or receipt) is acked once the application has it, never before:
//!
//! - **Auto-ack mode** (the default, [`ccs_proto::AckMode::Auto`]): it is acked when the
//!   application takes it from the [`UpstreamStream`] ([`UpstreamStream::recv`] or
//!   `poll_next`). Until then it waits un-acked, so the server's own limit on un-acked
//!   upstream messages per connection holds back the rest while the application is slow,
//!   and a crash loses nothing: what the application never took was never acked, and the
//!   server redelivers it. (Internally the core runs in manual mode and the adapter acks on
//!   hand-over.)
//! - **Manual-ack mode**: each item carries an [`AckToken`]; ack it once the message is
//!   durably handled.
//!
//! The stream holds at most [`Config::upstream_capacity`] items. When it is full, a new item
//! is neither handed over nor acked: the server still counts it as un-acked and redelivers
//! it on a later connection (when this one ends, by a drain, an error or a close). Nothing is
//! lost, and [`Stats::upstream_deferred`] counts these.
//!
//! An application that never takes the stream, or drops it, does not read upstream
//! messages: in auto-ack mode they are then acked on arrival and discarded
//! ([`Stats::upstream_discarded`]); in manual-ack mode they are left un-acked for the server
//! to redeliver ([`Stats::upstream_deferred`]).
//!
//! # Closing
//!
//! [`Client::close`] refuses new messages at once and sends what was already queued. Acks
//! keep working until the deadline: the core ([`ccs_proto::Client::close`]) keeps each
//! connection open until every [`AckToken`] handed out on it (and, in auto-ack mode, every
//! item already in the stream) has been acked or dropped, and its messages are answered, or
//! the deadline passes; so an application finishing the message in hand does not get it
//! redelivered. `close` returns once every socket is closed: the stream end and the TLS
//! `close_notify` are written and the server has closed its side, or
//! [`Config::disconnect_grace`] has passed (so at most that long after the deadline), and a
//! process may exit at once. The [`Report`] lists the messages never answered
//! and the upstream messages and receipts never acked (the server redelivers those). The
//! [`UpstreamStream`] ends then.
//!
//! # Resources
//!
//! Every queue is bounded: messages by `max_queue` (of [`ClientConfig`]); the adapter's
//! commands, socket reads and upstream items by fixed or configured capacities; bytes waiting
//! to be written on a connection by [`Config::write_limit`] (a server that stops reading
//! makes its connection fail rather than memory grow). Each connection is one task owning
//! its socket; when the core gives a connection up (closed, dead after an unanswered ping,
//! replaced), the task gets [`Config::disconnect_grace`] to flush and close cleanly and is
//! then stopped, whatever the peer does. [`Event::SocketClosed`] reports each socket's end,
//! and [`Stats::sockets`] counts the live ones.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod control;
mod driver;
mod tls;
mod transport;
mod upstream;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ccs_proto::client::{ClientEvent, ClientStats, DownReason, Outcome};
use ccs_proto::connection::ConnId;
use ccs_proto::credentials::{SenderId, ServerKey};
use ccs_proto::message::{Downstream, MessageId};
use ccs_proto::{AckMode, ClientConfig, ConnectionConfig};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};
use tokio_rustls::TlsConnector;

pub use ccs_proto;
pub use tls::describe_tls_error;
pub use tls::{Endpoint, TlsOptions};
pub use upstream::{AckToken, UpstreamItem, UpstreamStream};

use control::{Command, Tokens};
use driver::{Driver, Parts, Submit, UpstreamSide};
use upstream::StreamShared;

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
    /// Upstream messages and receipts waiting in the [`UpstreamStream`] (in auto-ack mode,
    /// counting those taken whose ack is on its way). When it is full, a new one is neither
    /// handed over nor acked: the server redelivers it on a later connection (see the crate
    /// docs). Default 1024, at least 1.
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
            client: ClientConfig::new(ConnectionConfig::new(sender_id, server_key)),
            read_buffer: 64 * 1024,
            event_capacity: 1024,
            upstream_capacity: 1024,
            write_limit: 16 * 1024 * 1024,
            disconnect_grace: Duration::from_secs(2),
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
    /// No connection came up: the server could not be reached, or TLS failed (an untrusted
    /// certificate, a wrong server name), or the stream broke before it was ready, on every
    /// attempt until the first-connection deadline; or at once for a failure retrying cannot
    /// fix. The text is the last failure.
    Connect(String),
}

impl ConnectError {
    /// The core's verdict on the first connection ([`ClientEvent::FirstConnectFailed`]).
    fn from_first(error: &DownReason) -> Self {
        match error {
            DownReason::Closed(ccs_proto::connection::CloseReason::AuthFailed {
                condition,
                text,
            }) => Self::AuthFailed {
                condition: condition.clone(),
                text: text.clone(),
            },
            DownReason::ConnectFailed(why) | DownReason::ConnectFailedPermanently(why) => {
                Self::Connect(why.clone())
            }
            other => Self::Connect(other.to_string()),
        }
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
    /// The socket of a connection (or connection attempt) is closed and its task has ended.
    /// Comes once per connection, after the core gave it up ([`Event::ConnectionDown`]).
    SocketClosed {
        /// Which.
        id: ConnId,
        /// Whether it ended cleanly: everything queued, the stream end and our TLS
        /// `close_notify` were written, and the server closed its side with its own, within
        /// [`Config::disconnect_grace`]. Otherwise the socket failed, or was closed at the
        /// end of the grace with whatever was still unwritten.
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
    /// Upstream messages and receipts received and never acked, in the order they arrived:
    /// those whose [`AckToken`] was dropped or came too late, those still buffered in the
    /// [`UpstreamStream`], and those left un-acked because it was full or, in manual-ack
    /// mode, not read. The server redelivers each of them (to a later client). One whose
    /// redelivered copy was acked is not listed. The last 10 000 are remembered.
    pub unacked_upstream: Vec<UnackedUpstream>,
}

/// An upstream message or receipt received and never acked, in [`Report::unacked_upstream`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnackedUpstream {
    /// Its id (a receipt's keeps its `dr2:` prefix).
    pub message_id: MessageId,
    /// Its `from`: the device's registration token, or the server for a receipt.
    pub from: String,
    /// Whether it is a delivery receipt.
    pub receipt: bool,
}

/// Counters of a [`Client`], from [`Client::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// The core's counters.
    pub core: ClientStats,
    /// Auto-ack mode: upstream messages and receipts acked at once without being handed
    /// over, because nobody reads the [`UpstreamStream`] (it was never taken, or dropped).
    pub upstream_discarded: u64,
    /// Upstream messages and receipts neither handed over nor acked, so that the server
    /// redelivers them later: the [`UpstreamStream`] was full, or (manual-ack mode) nobody
    /// reads it.
    pub upstream_deferred: u64,
    /// Connections whose task is running: dialling, open, or closing (within
    /// [`Config::disconnect_grace`]). Each has at most one socket.
    pub sockets: usize,
}

/// A CCS client. Cheap to clone; `Send` and `Sync`.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    submit: mpsc::Sender<Submit>,
    control: mpsc::Sender<Command>,
    closing: AtomicBool,
    permits: Arc<Semaphore>,
    max_queue: usize,
    upstream: Mutex<Option<UpstreamStream>>,
    stream: Arc<StreamShared>,
    events: broadcast::Sender<Event>,
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
        let tls_config = tls::client_config(&config.tls).map_err(ConnectError::Config)?;
        let server_name =
            tls::server_name(&config.endpoint, &config.tls).map_err(ConnectError::Config)?;
        let mut core_config = config.client;
        // The adapter acks on hand-over in auto mode (see the crate docs): the core only
        // ever acks when told.
        let auto = !matches!(core_config.connection.ack_mode, AckMode::Manual);
        core_config.connection.ack_mode = AckMode::Manual;
        let max_queue = core_config.max_queue;
        let core = ccs_proto::Client::new(core_config, Instant::now())
            .map_err(|e| ConnectError::Config(e.to_string()))?;
        // One slot per queue permit: never full for a sender holding a permit.
        let (submit_tx, submit_rx) = mpsc::channel(max_queue);
        let (control_tx, control_rx) = mpsc::channel(control::CONTROL_CAPACITY);
        let upstream_capacity = config.upstream_capacity.max(1);
        let (up_tx, up_rx) = mpsc::channel(upstream_capacity);
        let (taken_tx, taken_rx) = mpsc::channel(upstream_capacity);
        let stream = Arc::new(StreamShared::default());
        let (events, _) = broadcast::channel(config.event_capacity.max(1));
        let (first_tx, first_rx) = oneshot::channel();
        let driver = Driver::new(Parts {
            core,
            submit_rx,
            control_rx,
            control_tx: control_tx.clone(),
            taken_rx,
            upstream: UpstreamSide {
                tx: up_tx,
                room: Arc::new(Semaphore::new(upstream_capacity)),
                shared: Arc::clone(&stream),
                tokens: Arc::new(Tokens::default()),
                auto,
            },
            events: events.clone(),
            endpoint: config.endpoint,
            server_name,
            tls: TlsConnector::from(tls_config),
            read_buffer: config.read_buffer.max(4096),
            write_limit: config.write_limit.max(64 * 1024),
            disconnect_grace: config.disconnect_grace,
            first: first_tx,
        });
        tokio::spawn(driver.run());
        let client = Self {
            inner: Arc::new(Inner {
                submit: submit_tx,
                control: control_tx,
                closing: AtomicBool::new(false),
                permits: Arc::new(Semaphore::new(max_queue)),
                max_queue,
                upstream: Mutex::new(Some(UpstreamStream::new(
                    up_rx,
                    taken_tx,
                    Arc::clone(&stream),
                ))),
                stream,
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
        self.submit(message, permit)?.await
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
        self.submit(message, permit)
    }

    fn submit(
        &self,
        message: Downstream,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<PendingOutcome, SendError> {
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(SendError {
                kind: ccs_proto::client::SendErrorKind::Closing,
                message: Some(Box::new(message)),
            });
        }
        let (reply, rx) = oneshot::channel();
        let submit = Submit {
            message,
            reply,
            permit,
        };
        // Never full: the channel has a slot for each queue permit, and `permit` is one.
        self.inner.submit.try_send(submit).map_err(|e| {
            let submit = match e {
                mpsc::error::TrySendError::Full(s) | mpsc::error::TrySendError::Closed(s) => s,
            };
            SendError::closed(Some(submit.message))
        })?;
        Ok(PendingOutcome {
            rx,
            events: self.inner.events.clone(),
        })
    }

    /// The upstream messages and receipts. The first call takes the stream; later calls get
    /// `None`.
    ///
    /// In auto-ack mode an item is acked when it is taken from the stream; until the stream
    /// is taken, and once it is dropped, upstream messages are acked on arrival and
    /// discarded ([`Stats::upstream_discarded`] counts them). In manual-ack mode they are
    /// left un-acked instead ([`Stats::upstream_deferred`]), and the server redelivers them
    /// on a later connection.
    pub fn upstream(&self) -> Option<UpstreamStream> {
        let stream = self
            .inner
            .upstream
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if stream.is_some() {
            self.inner.stream.taken.store(true, Ordering::Release);
        }
        stream
    }

    /// Monitoring events. A receiver that falls behind by more than the channel capacity
    /// misses the oldest events (it is told how many).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// The counters; `None` once the client has stopped.
    pub async fn stats(&self) -> Option<Stats> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .control
            .send(Command::Stats { reply })
            .await
            .ok()?;
        rx.await.ok()
    }

    /// Stops taking work, sends what is queued while connections live, waits for answers
    /// until `deadline` from now, closes every connection, and reports what was never
    /// answered and which upstream messages were never acked.
    ///
    /// Acks of [`AckToken`]s already handed out (and items already in the
    /// [`UpstreamStream`], which auto-ack mode acks when they are taken) still go through
    /// until the deadline: the connections stay open until every such token is acked or
    /// dropped, or the deadline passes. Drop the stream if you will not read it any more.
    ///
    /// Returns once every socket is closed: the stream end and the TLS `close_notify` are
    /// written (a connection that cannot get them out within [`Config::disconnect_grace`] is
    /// closed without them). Cancel-safe until the close is asked for (while it waits for
    /// room in the command queue).
    pub async fn close(&self, deadline: Duration) -> Report {
        let Ok(slot) = self.inner.control.reserve().await else {
            return Report::default();
        };
        self.inner.closing.store(true, Ordering::Release);
        let (reply, rx) = oneshot::channel();
        slot.send(Command::Close { deadline, reply });
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

/// What the driver answers a queued message with: the message back and its outcome.
type Answer = Result<(Box<Downstream>, Outcome), SendError>;

/// The outcome of a message queued by [`Client::try_send`]. Dropping it before it resolves
/// loses nothing: the outcome is published as [`Event::DetachedOutcome`] (also when it had
/// already arrived).
#[derive(Debug)]
pub struct PendingOutcome {
    rx: oneshot::Receiver<Answer>,
    events: broadcast::Sender<Event>,
}

impl std::future::Future for PendingOutcome {
    type Output = Result<Outcome, SendError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.rx).poll(cx).map(|r| match r {
            Ok(Ok((_, outcome))) => Ok(outcome),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SendError::closed(None)),
        })
    }
}

impl Drop for PendingOutcome {
    fn drop(&mut self) {
        // After `close` the driver can no longer answer here (it publishes the outcome
        // itself); an answer that came before is taken and published instead of lost.
        self.rx.close();
        if let Ok(Ok((message, outcome))) = self.rx.try_recv() {
            let _ = self
                .events
                .send(Event::DetachedOutcome { message, outcome });
        }
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

    #[test]
    fn upstream_types_are_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<UpstreamStream>();
        check::<UpstreamItem>();
        check::<AckToken>();
    }
}
