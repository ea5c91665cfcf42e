//! What an adapter's connection task holds: a [`Link`] to the engine (bytes read, the end of
//! the stream, the dial's result) and the [`Outbox`] of bytes to write.
//!
//! Every method that waits is an `async fn` with no runtime in it: async adapters await
//! it, the blocking adapter runs it with [`crate::block::wait`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use ccs_proto::client::ConnectFailure;
use ccs_proto::connection::ConnId;
use rustls::pki_types::ServerName;

use crate::sync::{lock, register};
use crate::tls::Endpoint;

/// Messages from every connection to the engine in flight at once. A reader that finds the
/// channel full waits before reading more (so the peer is slowed by TCP flow control); with
/// the default 64 KiB reads this bounds the bytes waiting for the engine to 4 MiB. No cycle
/// can form: the engine never waits for a connection (it only appends to outboxes, which do
/// not block), so it always comes back to drain this channel.
pub(crate) const NET_CAPACITY: usize = 64;

/// Wakes the adapter's loop when an input for the engine has arrived. A notification finds
/// the loop either waiting on its [`Listener`] or about to run a turn: the loop listens
/// before each turn, so none is missed.
///
/// Wake-ups are coalesced: the first input after the loop listened wakes it; the inputs
/// after that, until it listens again, cost one atomic operation each (the loop takes them
/// all in its next turn).
#[derive(Debug, Clone, Default)]
pub(crate) struct Wake(Arc<WakeState>);

#[derive(Debug, Default)]
struct WakeState {
    /// An input arrived since the loop last listened.
    pending: AtomicBool,
    /// The loop, while it waits.
    waker: Mutex<Option<Waker>>,
}

impl Wake {
    pub(crate) fn notify(&self) {
        if !self.0.pending.swap(true, Ordering::AcqRel) {
            let waker = lock(&self.0.waker).take();
            if let Some(w) = waker {
                w.wake();
            }
        }
    }

    pub(crate) fn listen(&self) -> Listener {
        self.0.pending.store(false, Ordering::Release);
        Listener(Arc::clone(&self.0))
    }
}

/// Resolves once an input for the engine has arrived since it was taken
/// ([`Engine::listen`](crate::Engine::listen)), or a [`Nudge`](crate::Nudge) came. Only the
/// adapter's loop listens, one listener at a time.
#[derive(Debug)]
#[must_use = "a listener does nothing unless awaited"]
pub struct Listener(Arc<WakeState>);

impl Future for Listener {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.pending.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        register(&mut lock(&self.0.waker), cx.waker());
        // A notification between the first look and the waker's registration found no
        // waker to wake: it is seen here.
        if self.0.pending.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// What connections tell the engine, over one bounded channel ([`NET_CAPACITY`]).
#[derive(Debug)]
pub(crate) enum Net {
    /// TCP and TLS are up.
    Connected(ConnId),
    /// Dialling failed; the connection's task has ended.
    ConnectFailed(ConnId, ConnectFailure),
    /// Bytes read.
    Data(ConnId, Bytes),
    /// The transport ended (the peer closed it, or reading or writing failed).
    Eof(ConnId),
}

/// A sender into the engine that wakes it.
#[derive(Debug)]
pub(crate) struct Inbox<T> {
    tx: async_channel::Sender<T>,
    wake: Wake,
}

impl<T> Clone for Inbox<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            wake: self.wake.clone(),
        }
    }
}

impl<T> Inbox<T> {
    pub(crate) fn new(tx: async_channel::Sender<T>, wake: Wake) -> Self {
        Self { tx, wake }
    }

    /// Waits for room; `Err` with the item once the engine is gone.
    pub(crate) async fn send(&self, item: T) -> Result<(), T> {
        self.tx.send(item).await.map_err(|e| e.into_inner())?;
        self.wake.notify();
        Ok(())
    }

    /// Never waits.
    pub(crate) fn try_send(&self, item: T) -> Result<(), async_channel::TrySendError<T>> {
        self.tx.try_send(item)?;
        self.wake.notify();
        Ok(())
    }
}

/// One connection's side of the engine, given to the adapter with
/// [`Action::Dial`](crate::Action::Dial): where to dial and how, where to report, and the
/// bytes to write.
///
/// A link dropped before it said how the connection ended ([`Link::connect_failed`] or
/// [`Link::eof`]), as when its task panicked or was cancelled, says so itself: the engine
/// learns at once that the dial failed or the transport ended, instead of at the next
/// timeout.
#[derive(Debug)]
pub struct Link {
    id: ConnId,
    net: Inbox<Net>,
    outbox: Arc<Outbox>,
    pub(crate) dial: Arc<DialInfo>,
    /// The end was reported (or the link was dropped after saying so).
    ended: AtomicBool,
    orphans: Arc<Orphans>,
}

/// Links dropped without reporting their end, for the engine's next turn. At most one entry
/// per connection.
#[derive(Debug)]
pub(crate) struct Orphans {
    ids: Mutex<Vec<ConnId>>,
    wake: Wake,
}

impl Orphans {
    pub(crate) fn new(wake: Wake) -> Arc<Self> {
        Arc::new(Self {
            ids: Mutex::default(),
            wake,
        })
    }

    pub(crate) fn take(&self) -> Vec<ConnId> {
        let mut ids = lock(&self.ids);
        if ids.is_empty() {
            Vec::new()
        } else {
            std::mem::take(&mut *ids)
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if !self.ended.load(Ordering::Acquire) {
            lock(&self.orphans.ids).push(self.id);
            self.orphans.wake.notify();
        }
    }
}

/// Where and how every connection dials.
#[derive(Debug)]
pub(crate) struct DialInfo {
    pub(crate) endpoint: Endpoint,
    pub(crate) server_name: ServerName<'static>,
    pub(crate) tls: Arc<rustls::ClientConfig>,
    pub(crate) read_buffer: usize,
}

impl Link {
    pub(crate) fn new(
        id: ConnId,
        net: Inbox<Net>,
        outbox: Arc<Outbox>,
        dial: Arc<DialInfo>,
        orphans: Arc<Orphans>,
    ) -> Self {
        Self {
            id,
            net,
            outbox,
            dial,
            ended: AtomicBool::new(false),
            orphans,
        }
    }

    /// The connection.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Where to dial.
    pub fn endpoint(&self) -> &Endpoint {
        &self.dial.endpoint
    }

    /// The name the server's certificate must carry.
    pub fn server_name(&self) -> &ServerName<'static> {
        &self.dial.server_name
    }

    /// The rustls configuration to connect with.
    pub fn tls_config(&self) -> &Arc<rustls::ClientConfig> {
        &self.dial.tls
    }

    /// Bytes to read from the socket at a time.
    pub fn read_buffer(&self) -> usize {
        self.dial.read_buffer
    }

    /// TCP and TLS are up. `false` once the engine is gone (the task should end).
    pub async fn connected(&self) -> bool {
        self.net.send(Net::Connected(self.id)).await.is_ok()
    }

    /// Dialling failed (the task ends after this). Whether retrying can help is the
    /// adapter's reading of the error; what to do about it is the core's decision.
    pub async fn connect_failed(&self, failure: ConnectFailure) {
        let _ = self.net.send(Net::ConnectFailed(self.id, failure)).await;
        self.ended.store(true, Ordering::Release);
    }

    /// Bytes read. Waits while the engine is behind. `false` once the engine is gone.
    pub async fn data(&self, bytes: Bytes) -> bool {
        self.net.send(Net::Data(self.id, bytes)).await.is_ok()
    }

    /// The transport ended: the peer closed it, or reading or writing failed.
    pub async fn eof(&self) {
        let _ = self.net.send(Net::Eof(self.id)).await;
        self.ended.store(true, Ordering::Release);
    }

    /// Waits until there are bytes to write or a close; swaps them into `batch` (which must
    /// be empty) and says whether to close our side once they are written. Called by the
    /// connection's one writer: two callers waiting at once would not both be woken.
    pub async fn next_batch(&self, batch: &mut Vec<u8>) -> bool {
        self.outbox.take(batch).await
    }
}

/// Bytes on their way from the engine to one connection's writer, as a byte queue. The
/// engine appends without ever waiting ([`Outbox::push`]); the writer takes everything
/// queued at once, so each wake-up is one write and one flush.
///
/// It is bounded in bytes: the engine must never wait for a writer (a writer can be stuck for
/// good on a peer that stopped reading), so when a writer is this far behind,
/// [`Outbox::push`] refuses and the engine treats the transport as failed.
///
/// There is one writer, so its waker is kept beside the bytes under the same lock: a push
/// that finds the queue empty takes it and wakes the writer; nothing is allocated per wait.
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<OutboxState>,
    limit: usize,
}

#[derive(Debug, Default)]
struct OutboxState {
    bytes: Vec<u8>,
    closing: bool,
    /// The writer, while it waits for bytes.
    writer: Option<Waker>,
}

impl Outbox {
    /// An empty outbox holding at most `limit` unwritten bytes.
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(OutboxState::default()),
            limit,
        })
    }

    /// Queues bytes for the writer. `false` (and nothing queued) if that would put more than
    /// the limit in the queue: the writer is not keeping up. Bytes pushed after
    /// [`Outbox::close`] are dropped: the connection is over.
    pub(crate) fn push(&self, data: &[u8]) -> bool {
        let mut st = lock(&self.state);
        if st.closing {
            return true;
        }
        if st.bytes.len().saturating_add(data.len()) > self.limit {
            return false;
        }
        // A writer waits only on an empty queue: later pushes find it awake already.
        let writer = if st.bytes.is_empty() {
            st.writer.take()
        } else {
            None
        };
        st.bytes.extend_from_slice(data);
        drop(st);
        if let Some(w) = writer {
            w.wake();
        }
        true
    }

    /// Asks the writer to write what is queued, then close its side of the connection.
    pub(crate) fn close(&self) {
        let writer = {
            let mut st = lock(&self.state);
            st.closing = true;
            st.writer.take()
        };
        if let Some(w) = writer {
            w.wake();
        }
    }

    /// Waits for bytes or the close (one writer at a time: a second one waiting at once
    /// would take the first one's place).
    async fn take(&self, batch: &mut Vec<u8>) -> bool {
        std::future::poll_fn(|cx| {
            let mut st = lock(&self.state);
            if !st.bytes.is_empty() || st.closing {
                std::mem::swap(&mut st.bytes, batch);
                st.writer = None;
                return Poll::Ready(st.closing);
            }
            register(&mut st.writer, cx.waker());
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::wait;

    #[test]
    fn outbox_batches_bounds_and_closes() {
        let outbox = Outbox::new(10);
        assert!(outbox.push(b"hello"));
        assert!(outbox.push(b"world"));
        assert!(!outbox.push(b"!"), "over the limit: refused");
        let mut batch = Vec::new();
        assert_eq!(wait(outbox.take(&mut batch), None), Some(false));
        assert_eq!(batch, b"helloworld");
        batch.clear();
        assert!(
            outbox.push(b"!"),
            "room again once the writer took the bytes"
        );
        outbox.close();
        assert!(outbox.push(b"ignored"));
        assert_eq!(wait(outbox.take(&mut batch), None), Some(true));
        assert_eq!(batch, b"!");
    }

    #[test]
    fn a_listener_sees_inputs_after_it_was_taken_and_not_before() {
        let wake = Wake::default();
        wake.notify();
        let now = || Some(std::time::Instant::now());
        assert_eq!(
            wait(wake.listen(), now()),
            None,
            "the turn's, not the listener's"
        );
        let listener = wake.listen();
        wake.notify();
        wake.notify();
        assert_eq!(wait(listener, None), Some(()));
        let listener = wake.listen();
        let notifier = {
            let wake = wake.clone();
            std::thread::spawn(move || wake.notify())
        };
        assert_eq!(wait(listener, None), Some(()), "woken from another thread");
        notifier.join().unwrap();
    }

    #[test]
    fn outbox_wakes_a_waiting_writer() {
        let outbox = Outbox::new(100);
        let writer = {
            let outbox = Arc::clone(&outbox);
            std::thread::spawn(move || {
                let mut batch = Vec::new();
                let close = wait(outbox.take(&mut batch), None).unwrap();
                (batch, close)
            })
        };
        outbox.push(b"x");
        let (batch, close) = writer.join().unwrap();
        assert_eq!(batch, b"x");
        assert!(!close);
    }
}
