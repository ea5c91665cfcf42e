//! The client's IO thread: the loop around [`ccs_net::Engine`] on a current-thread tokio
//! runtime of its own, with every connection's IO in the same task.
//!
//! The loop makes no decision: it takes a listener, runs a turn of the engine, carries out
//! its [`Action`]s (start a connection; retire one within its grace), and waits for the next
//! input, the core's next deadline, or a retired connection's end.
//!
//! Each connection is a future the loop polls itself, not a task of its own: it dials
//! through the [`Dialer`], does the TLS handshake, then reads and writes concurrently (two
//! futures joined, over the two halves of the TLS stream, so a write blocked on a full socket
//! never stops reading). So the bytes read and the bytes to write cross no task: the engine
//! and the sockets share one task and one wake-up. Each connection has its own waker, and a
//! wake-up polls only the connections that were woken. The future owns its socket: when it
//! ends, or is dropped at the end of its grace, the socket is closed. A panic in it (the
//! application's [`Dialer`] or stream) ends that connection only.
//!
//! Why a thread of its own (measured, BENCHMARKS.md): on the application's multi-thread
//! runtime the client's task moves between workers, and with the allocator's per-thread
//! arenas the memory it allocates and frees on each of them added up (peak RSS grew over a
//! long run on a busy machine); a task per connection instead cost more CPU per message in
//! wake-ups between tasks. On one thread of its own the client's memory stays flat, its CPU
//! per message is no higher, and the application's blocking code cannot stall it.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use bytes::BytesMut;
use ccs_net::{Action, Engine, Link, Wait};
use ccs_proto::client::ConnectFailure;
use ccs_proto::connection::ConnId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tracing::{Instrument, debug, warn};

use crate::Dialer;

/// Runs the engine until the client has closed and every socket is closed.
pub(crate) async fn drive<D: Dialer>(mut engine: Engine, dialer: Arc<D>) {
    let mut conns = Conns::default();
    loop {
        let listener = engine.listen();
        let wait = engine.turn(Instant::now());
        while let Some(action) = engine.poll_action() {
            match action {
                Action::Dial(link) => {
                    let span = tracing::info_span!("ccs_connection", conn = %link.id(), endpoint = %link.endpoint());
                    let id = link.id();
                    conns.start(id, connection(link, Arc::clone(&dialer)).instrument(span));
                }
                Action::Retire { id, grace } if !conns.retire(id, Instant::now() + grace) => {
                    engine.socket_closed(id, false);
                }
                _ => {}
            }
        }
        // A connection retired after it had already ended (a failed dial, say) will never
        // wake this task again: report it now and let the engine take it into account.
        if conns.reap(&mut engine, Instant::now()) {
            continue;
        }
        let deadline = match wait {
            Wait::Done => break,
            Wait::Again => {
                // Inputs are waiting: turn again, yielding to other tasks when this one's
                // budget is spent, and letting the connections (this task's) move their
                // bytes between turns.
                tokio::task::consume_budget().await;
                std::future::poll_fn(|cx| {
                    conns.poll(cx);
                    Poll::Ready(())
                })
                .await;
                conns.reap(&mut engine, Instant::now());
                continue;
            }
            Wait::Until(deadline) => deadline,
        };
        let wake_at = match (deadline, conns.next_retire_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut sleep = std::pin::pin!(async {
            match wake_at {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        });
        let mut listener = std::pin::pin!(listener);
        std::future::poll_fn(|cx| {
            let ended = conns.poll(cx);
            if ended || listener.as_mut().poll(cx).is_ready() || sleep.as_mut().poll(cx).is_ready()
            {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        conns.reap(&mut engine, Instant::now());
    }
    engine.finish();
}

/// The connections' futures, polled by the loop's task when their own waker was woken.
#[derive(Default)]
struct Conns {
    list: Vec<Conn>,
    /// The loop task's waker, woken by every connection's waker.
    task: Arc<TaskWaker>,
}

/// One connection as the loop holds it.
struct Conn {
    id: ConnId,
    state: ConnState,
    wake: Arc<ConnWake>,
    waker: Waker,
    /// Retired: stopped at this deadline unless it has ended by then.
    retire_by: Option<Instant>,
}

/// A connection's IO: running, or ended and how.
enum ConnState {
    /// Its IO, until it ends (or is dropped, which closes the socket).
    Running(Pin<Box<dyn Future<Output = bool> + Send>>),
    /// Ended: whether gracefully.
    Ended(bool),
}

impl Conns {
    fn start(&mut self, id: ConnId, io: impl Future<Output = bool> + Send + 'static) {
        let wake = Arc::new(ConnWake {
            // Polled first on the loop's next wait.
            woken: AtomicBool::new(true),
            task: Arc::clone(&self.task),
        });
        self.list.push(Conn {
            id,
            state: ConnState::Running(Box::pin(io)),
            waker: Waker::from(Arc::clone(&wake)),
            wake,
            retire_by: None,
        });
    }

    /// Gives a connection until `by` to end by itself; `false` if there is no such
    /// connection.
    fn retire(&mut self, id: ConnId, by: Instant) -> bool {
        match self.list.iter_mut().find(|c| c.id == id) {
            Some(c) => {
                c.retire_by = Some(by);
                true
            }
            None => false,
        }
    }

    fn next_retire_deadline(&self) -> Option<Instant> {
        self.list
            .iter()
            .filter(|c| matches!(c.state, ConnState::Running(_)))
            .filter_map(|c| c.retire_by)
            .min()
    }

    /// Polls the connections that were woken; whether one of them ended.
    fn poll(&mut self, cx: &mut Context<'_>) -> bool {
        self.task.set(cx.waker());
        let mut ended = false;
        for c in &mut self.list {
            if !c.wake.woken.swap(false, Ordering::AcqRel) {
                continue;
            }
            let ConnState::Running(io) = &mut c.state else {
                continue;
            };
            let mut own = Context::from_waker(&c.waker);
            let polled = std::panic::catch_unwind(AssertUnwindSafe(|| io.as_mut().poll(&mut own)));
            let graceful = match polled {
                Ok(Poll::Pending) => continue,
                Ok(Poll::Ready(graceful)) => graceful,
                Err(_) => {
                    // Dropping it drops its link, which tells the engine the dial failed or
                    // the transport ended.
                    warn!(conn = %c.id, "the connection's IO panicked");
                    false
                }
            };
            c.state = ConnState::Ended(graceful);
            ended = true;
        }
        ended
    }

    /// Stops the retired connections past their grace, and reports those that have ended.
    /// Reports (and forgets) the retired connections that have ended or whose grace has run
    /// out, closing those still open; whether there was any.
    fn reap(&mut self, engine: &mut Engine, now: Instant) -> bool {
        let before = self.list.len();
        self.list.retain_mut(|c| {
            let Some(by) = c.retire_by else {
                return true;
            };
            if matches!(c.state, ConnState::Running(_)) && by <= now {
                // Dropping the future closes its socket.
                c.state = ConnState::Ended(false);
            }
            match c.state {
                ConnState::Ended(graceful) => {
                    engine.socket_closed(c.id, graceful);
                    false
                }
                ConnState::Running(_) => true,
            }
        });
        self.list.len() != before
    }
}

/// The loop task's current waker.
#[derive(Default)]
struct TaskWaker(Mutex<Option<Waker>>);

impl TaskWaker {
    fn set(&self, waker: &Waker) {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }

    fn wake(&self) {
        // Nothing panics while holding the lock; a poisoned one still holds a valid waker.
        if let Some(w) = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            w.wake_by_ref();
        }
    }
}

/// A connection's waker: marks it to be polled, then wakes the loop's task.
struct ConnWake {
    woken: AtomicBool,
    task: Arc<TaskWaker>,
}

impl Wake for ConnWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// One connection from the dial to the end of its socket. Returns whether it ended
/// gracefully: everything queued was written, then our TLS `close_notify`, and the peer
/// closed its side with its own.
async fn connection<D: Dialer>(link: Link, dialer: Arc<D>) -> bool {
    debug!("dialling");
    let stream = match dial(&link, &*dialer).await {
        Ok(s) => s,
        Err(reason) => {
            link.connect_failed(reason).await;
            return false;
        }
    };
    debug!("TLS up");
    if !link.connected().await {
        return false;
    }
    let (rd, wr) = tokio::io::split(stream);
    let (peer_closed, closed) = tokio::join!(read_loop(&link, rd), write_loop(&link, wr));
    peer_closed && closed
}

async fn dial<D: Dialer>(
    link: &Link,
    dialer: &D,
) -> Result<tokio_rustls::client::TlsStream<D::Stream>, ConnectFailure> {
    let transport = dialer.dial(link.endpoint()).await?;
    let tls = TlsConnector::from(Arc::clone(link.tls_config()));
    tls.connect(link.server_name().clone(), transport)
        .await
        .map_err(|e| ccs_net::tls::connect_failure(link.endpoint(), link.server_name(), &e))
}

/// Reads until the peer closes or reading fails, and says so. Returns whether the peer
/// closed cleanly (TLS `close_notify`).
async fn read_loop(link: &Link, mut rd: impl AsyncRead + Unpin) -> bool {
    let size = link.read_buffer();
    let mut buf = BytesMut::with_capacity(size);
    loop {
        if buf.capacity() < size / 4 {
            buf.reserve(size);
        }
        let clean = match rd.read_buf(&mut buf).await {
            // rustls reports the end of a stream without close_notify as an error.
            Ok(0) => true,
            Err(e) => {
                debug!(error = %e, "read failed");
                false
            }
            Ok(_) => {
                // Waits while the engine is behind.
                if !link.data(buf.split().freeze()).await {
                    return false;
                }
                continue;
            }
        };
        link.eof().await;
        return clean;
    }
}

/// Writes what the engine queues, one write and one flush per batch, until told to close:
/// then writes the rest and closes our side (TLS `close_notify`, then the transport).
/// Returns whether that close happened; a failed write ends the stream.
async fn write_loop(link: &Link, mut wr: impl AsyncWrite + Unpin) -> bool {
    let mut batch = Vec::new();
    loop {
        let close = link.next_batch(&mut batch).await;
        if !batch.is_empty() {
            let written = match wr.write_all(&batch).await {
                Ok(()) => wr.flush().await,
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                debug!(error = %e, "write failed");
                link.eof().await;
                return false;
            }
            batch.clear();
        }
        if close {
            // A peer that answered our close_notify and reset the socket at once makes the
            // shutdown fail with `NotConnected`: the close still happened.
            return match wr.shutdown().await {
                Ok(()) => true,
                Err(e) => e.kind() == std::io::ErrorKind::NotConnected,
            };
        }
    }
}
