//! The blocking adapter of ccs-rs: a CCS (GCM/FCM XMPP) client for scripts and programs
//! without an async runtime, over `std::net` and rustls.
//!
//! All protocol decisions live in [`ccs_proto::Client`], and everything that is not IO in
//! [`ccs_net`]; this crate moves bytes over std sockets on plain threads. Every blocking
//! method is a [`ccs_net::Handle`] future run to completion on the calling thread with
//! [`ccs_net::block::wait`] (parking between wake-ups, with a deadline where the method has
//! a timeout).
//!
//! ```no_run
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use ccs_blocking::prelude::*;
//!
//! let key = ServerKey::new(std::env::var("CCS_API_KEY")?)?;
//! let config = Config::new(Endpoint::fcm(), SenderId::new("123456789012")?, key).manual_acks();
//! let client = Client::connect(config)?;
//!
//! // Many threads may share one client.
//! let sender = {
//!     let client = client.clone();
//!     std::thread::spawn(move || -> Result<(), SendError> {
//!         for i in 0..100 {
//!             let msg = Downstream::builder("REGISTRATION_TOKEN", format!("m-{i}"))
//!                 .expect("valid")
//!                 .build();
//!             let outcome = client.send(msg)?;
//!             println!("m-{i}: {}", outcome.kind());
//!         }
//!         Ok(())
//!     })
//! };
//!
//! let mut upstream = client.upstream().expect("first call");
//! while let Ok(item) = upstream.recv_timeout(Duration::from_secs(10)) {
//!     println!("from {}: {}", item.from(), item.message_id());
//!     let (_item, ack) = item.into_ack();
//!     ack.ack()?; // once handled durably
//! }
//! sender.join().expect("sender thread")?;
//! let report = client.close(Duration::from_secs(5));
//! println!("never answered: {:?}", report.unsent);
//! # Ok(()) }
//! ```
//!
//! - [`Client::send`] waits for queue room, then for the message's one outcome;
//!   [`Client::send_timeout`] gives up after a timeout and says whether the message was
//!   queued ([`SendTimeoutError`]): if it was, its outcome comes later as
//!   [`Event::DetachedOutcome`]; if not, the message is given back.
//!   [`Client::send_priority`] puts a reply ahead of a bulk backlog.
//! - [`Client::try_send`] never waits: it queues the message or gives it back. Its
//!   [`Pending`] outcome can be waited for later; dropped before that, the outcome is
//!   published as [`Event::DetachedOutcome`].
//! - [`Client::send_batch`] and [`Client::enqueue_batch`] queue many messages under one
//!   command and one wake-up of the IO thread per stretch of queue room; their
//!   [`PendingBatch`] is woken once, with every outcome, in the order of the messages. The
//!   fast path for bulk senders.
//! - [`Client::upstream`] yields upstream messages and receipts, each with an [`AckToken`]
//!   (a no-op in auto-ack mode).
//! - [`Client::close`] stops taking work, waits for answers until the deadline, closes every
//!   connection cleanly and reports what was never answered and which upstream messages were
//!   never acked.
//!
//! Acks, closing and resource bounds work as the [`ccs_net`] crate docs describe, for every
//! adapter alike.
//!
//! # Threads
//!
//! - **One IO thread per client** (`ccs-io`) runs the engine's loop: it takes a listener,
//!   runs a turn, starts or retires connections, and parks until the next input or the
//!   core's next deadline. It never blocks on a socket.
//! - **Two threads per connection.** `ccs-conn-N` dials (through the [`Dialer`]) and does
//!   the TLS handshake, then becomes the reader; `ccs-write-N` writes what the engine queues.
//!   They share the `rustls::ClientConnection` under a mutex, each with its own handle on
//!   the socket ([`Transport::try_clone`]), and never hold that lock while blocked on the
//!   socket. A write blocked on a peer that does not read never stops reading.
//! - **A short-lived reaper thread per retired connection** (`ccs-reap-N`): the core gave the
//!   connection up, so it gets [`Config::disconnect_grace`] to write what is queued, its
//!   stream end and TLS `close_notify` and see the server's end; then its socket is shut
//!   down ([`Transport::shutdown`]), which wakes both threads, and they are joined. Only then
//!   is the socket reported closed ([`Event::SocketClosed`], [`Stats::sockets`]): a peer that
//!   stops reading costs no thread once its connection is declared dead. The one exception
//!   is a connection given up while the [`Dialer`] itself is still running, which cannot be
//!   interrupted: its thread ends when the dialer returns ([`TcpDialer::connect_timeout`]).
//!
//! Application threads block only in the calls they make; any number of them may share one
//! [`Client`] (it is `Clone + Send + Sync`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod conn;
mod dialer;
mod driver;
mod slot;
mod types;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ccs_net::block;
use ccs_proto::client::{Outcome, SendErrorKind};
use ccs_proto::message::Downstream;

use crate::conn::block_on;
use crate::types::deadline_in;

pub use ccs_net::{self, ccs_proto};
pub use ccs_net::{
    Config, ConnectError, Endpoint, Event, Report, SendError, Stats, TlsOptions, UnackedUpstream,
    describe_tls_error,
};
pub use dialer::{Dialer, TcpDialer, Transport};
pub use types::{
    AckToken, EventRecvTimeoutError, Events, IntoIter, Iter, Pending, PendingBatch,
    SendTimeoutError, Upstream, UpstreamItem,
};

/// What an application needs in scope: `use ccs_blocking::prelude::*;`.
pub mod prelude {
    pub use ccs_net::prelude::*;
    // Named here, these win over the runtime-neutral ones of the same name above.
    pub use crate::{
        AckToken, Client, Dialer, Events, Pending, PendingBatch, SendTimeoutError, TcpDialer,
        Transport, Upstream, UpstreamItem,
    };
}

/// A CCS client. Cheap to clone; `Send` and `Sync`; every method may be called from many
/// threads at once. When the last clone is dropped without [`close`](Self::close), the
/// client finishes what was queued (for at most 10 s) and stops.
#[derive(Debug, Clone)]
pub struct Client {
    handle: ccs_net::Handle,
    threads: Arc<AtomicUsize>,
}

impl Client {
    /// Starts the client and waits for its first connection to be ready.
    ///
    /// The core decides when to give up ([`ccs_proto::client::ReconnectPolicy`]'s
    /// `first_connect_timeout`, default 30 s): at once when the server refuses the
    /// credentials, the certificate is not trusted or the host name does not resolve;
    /// otherwise transient failures are retried with the reconnect backoff until that
    /// deadline, and the last one is reported.
    pub fn connect(config: Config) -> Result<Self, ConnectError> {
        Self::connect_with(config, TcpDialer::default())
    }

    /// As [`connect`](Self::connect), over byte streams from `dialer` (TLS still runs over
    /// them, with [`Config::tls`] or [`Config::tls_config`]).
    pub fn connect_with(config: Config, dialer: impl Dialer) -> Result<Self, ConnectError> {
        let (engine, handle, first) = ccs_net::Engine::new(config, Instant::now())?;
        let threads = Arc::new(AtomicUsize::new(0));
        {
            let threads = Arc::clone(&threads);
            let dialer = Arc::new(dialer);
            std::thread::Builder::new()
                .name("ccs-io".into())
                .spawn(move || driver::drive(engine, dialer, threads))
                .map_err(|e| ConnectError::Connect(format!("cannot start the IO thread: {e}")))?;
        }
        block_on(first.wait(&handle))?;
        Ok(Self { handle, threads })
    }

    /// Queues a message (waiting for queue room if needed) and waits for its one outcome.
    pub fn send(&self, message: Downstream) -> Result<Outcome, SendError> {
        block_on(self.handle.send(message))
    }

    /// As [`send`](Self::send), in the priority lane: ahead of every normal message not yet
    /// on the wire (a reply that must not wait behind a bulk backlog).
    pub fn send_priority(&self, message: Downstream) -> Result<Outcome, SendError> {
        block_on(self.handle.send_priority(message))
    }

    /// As [`send`](Self::send), giving up after `timeout` (waiting for room and for the
    /// outcome together). The error says whether the message was queued: if it was, it is
    /// still sent and its outcome comes later as [`Event::DetachedOutcome`] (on receivers
    /// from [`events`](Self::events) taken before); if not, the message is given back.
    pub fn send_timeout(
        &self,
        message: Downstream,
        timeout: Duration,
    ) -> Result<Outcome, SendTimeoutError> {
        self.send_timeout_in(message, timeout, false)
    }

    /// As [`send_timeout`](Self::send_timeout), in the priority lane.
    pub fn send_priority_timeout(
        &self,
        message: Downstream,
        timeout: Duration,
    ) -> Result<Outcome, SendTimeoutError> {
        self.send_timeout_in(message, timeout, true)
    }

    fn send_timeout_in(
        &self,
        message: Downstream,
        timeout: Duration,
        priority: bool,
    ) -> Result<Outcome, SendTimeoutError> {
        let deadline = deadline_in(timeout);
        let message_id = message.message_id().clone();
        let queued = if priority {
            self.handle.try_send_priority(message)
        } else {
            self.handle.try_send(message)
        };
        let mut pending = match queued {
            Ok(p) => p,
            Err(e) if matches!(e.kind, SendErrorKind::QueueFull { .. }) => {
                let Some(message) = e.message else {
                    return Err(SendTimeoutError::Refused(e));
                };
                // Waiting for room without giving up the message: at the deadline it is
                // given back.
                match block::wait(self.handle.reserve(), deadline) {
                    Some(Some(place)) => place
                        .send(*message, priority)
                        .map_err(SendTimeoutError::Refused)?,
                    Some(None) => {
                        return Err(SendTimeoutError::Refused(SendError {
                            kind: SendErrorKind::Closing,
                            message: Some(message),
                        }));
                    }
                    None => return Err(SendTimeoutError::NotQueued(message)),
                }
            }
            Err(e) => return Err(SendTimeoutError::Refused(e)),
        };
        match block::wait(&mut pending, deadline) {
            Some(Ok(outcome)) => Ok(outcome),
            Some(Err(e)) => Err(SendTimeoutError::Refused(e)),
            // Dropping `pending` publishes the outcome as an event when it comes.
            None => Err(SendTimeoutError::OutcomeLater { message_id }),
        }
    }

    /// Queues a message, waiting for queue room if needed, and returns once it is queued,
    /// with its [`Pending`] outcome: many messages in flight from one thread.
    pub fn enqueue(&self, message: Downstream, priority: bool) -> Result<Pending, SendError> {
        block_on(self.handle.enqueue(message, priority)).map(Pending)
    }

    /// Queues many messages under one command and one wake-up of the IO thread per stretch
    /// of free queue room (waiting for room as [`enqueue`](Self::enqueue) does), and
    /// returns once all are queued, with their [`PendingBatch`] outcomes: woken once, when
    /// the last one has come. See [`ccs_net::Handle::enqueue_batch`].
    pub fn enqueue_batch(&self, messages: Vec<Downstream>, priority: bool) -> PendingBatch {
        PendingBatch(block_on(self.handle.enqueue_batch(messages, priority)))
    }

    /// Queues many messages as [`enqueue_batch`](Self::enqueue_batch) does and waits for all
    /// their outcomes, in the order of the messages.
    pub fn send_batch(&self, messages: Vec<Downstream>) -> Vec<Result<Outcome, SendError>> {
        block_on(self.handle.send_batch(messages))
    }

    /// Queues a message without waiting. Returns its [`Pending`] outcome, or the message
    /// back when the queue is full or the client is closing.
    pub fn try_send(&self, message: Downstream) -> Result<Pending, SendError> {
        self.handle.try_send(message).map(Pending)
    }

    /// As [`try_send`](Self::try_send), in the priority lane.
    pub fn try_send_priority(&self, message: Downstream) -> Result<Pending, SendError> {
        self.handle.try_send_priority(message).map(Pending)
    }

    /// The upstream messages and receipts. The first call takes them; later calls get
    /// `None`. See [`ccs_net::Handle::upstream`] for what happens when nobody reads them.
    pub fn upstream(&self) -> Option<Upstream> {
        self.handle.upstream().map(Upstream)
    }

    /// Monitoring events from now on. A receiver that falls behind by more than
    /// [`Config::event_capacity`] misses the oldest events (it is told how many).
    pub fn events(&self) -> Events {
        Events(self.handle.events())
    }

    /// The counters; `None` once the client has stopped.
    pub fn stats(&self) -> Option<Stats> {
        block_on(self.handle.stats())
    }

    /// Stops taking work, sends what is queued while connections live, waits for answers
    /// until `deadline` from now, closes every connection, and reports what was never
    /// answered and which upstream messages were never acked. Returns once every socket is
    /// closed and every connection thread has ended. See [`ccs_net::Handle::close`].
    pub fn close(&self, deadline: Duration) -> Report {
        block_on(self.handle.close(deadline))
    }

    /// Connection threads (readers and writers) alive now, for monitoring: at most two per
    /// connection counted in [`Stats::sockets`].
    pub fn connection_threads(&self) -> usize {
        self.threads.load(Ordering::Acquire)
    }

    /// The runtime-neutral handle under this client.
    pub fn handle(&self) -> &ccs_net::Handle {
        &self.handle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_types_are_send_sync() {
        fn check<T: Send + Sync>() {}
        fn clone<T: Clone>() {}
        check::<Client>();
        clone::<Client>();
        check::<Upstream>();
        check::<AckToken>();
        check::<Pending>();
        check::<PendingBatch>();
        check::<Events>();
    }
}
