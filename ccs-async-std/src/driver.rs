//! The client's IO thread: the loop around [`ccs_net::Engine`], and one task per connection,
//! on an [`async_executor::LocalExecutor`] driven by [`async_io::block_on`].
//!
//! The loop makes no decision: it takes a listener, runs a turn of the engine, carries out
//! its [`Action`]s (spawn a connection task; retire one within its grace), and sleeps until
//! the next input, the core's next deadline, or a retired task's end (which wakes the loop
//! through the engine's [`Nudge`](ccs_net::Nudge)).
//!
//! A connection task dials through the [`Dialer`], does the TLS handshake, then reads and
//! writes concurrently (two futures zipped in the task, over the two halves of the TLS
//! stream, so a write blocked on a full socket never stops reading). The task owns the
//! socket: when it ends, or is cancelled, the socket is closed.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_executor::{LocalExecutor, Task};
use async_io::Timer;
use bytes::Bytes;
use ccs_net::{Action, Engine, Link, Wait};
use ccs_proto::client::ConnectFailure;
use ccs_proto::connection::ConnId;
use futures_io::{AsyncRead, AsyncWrite};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use futures_lite::{FutureExt, future};
use futures_rustls::TlsConnector;
use tracing::{Instrument, debug, warn};

use crate::Dialer;

/// Starts the IO thread; it ends once the client has closed and every socket is closed.
pub(crate) fn spawn<D: Dialer>(engine: Engine, dialer: Arc<D>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("ccs-io".into())
        .spawn(move || {
            let ex = LocalExecutor::new();
            async_io::block_on(ex.run(drive(&ex, engine, dialer)));
        })
        .map(drop)
}

/// Runs the engine until the client has closed and every socket is closed.
async fn drive<D: Dialer>(ex: &LocalExecutor<'_>, mut engine: Engine, dialer: Arc<D>) {
    let mut tasks: HashMap<ConnId, Task<bool>> = HashMap::new();
    // Retired sockets that are gone, with whether each ended gracefully; their retiring
    // tasks push here and nudge the loop.
    let closed: Rc<RefCell<Vec<(ConnId, bool)>>> = Rc::default();
    loop {
        let listener = engine.listen();
        // After the listener: a socket that ends from now on wakes it.
        for (id, graceful) in closed.borrow_mut().drain(..) {
            engine.socket_closed(id, graceful);
        }
        let wait = engine.turn(Instant::now());
        while let Some(action) = engine.poll_action() {
            match action {
                Action::Dial(link) => {
                    let span = tracing::info_span!("ccs_connection", conn = %link.id(), endpoint = %link.endpoint());
                    let id = link.id();
                    let conn = connection(link, Arc::clone(&dialer));
                    let task = ex.spawn(conn.instrument(span));
                    tasks.insert(id, task);
                }
                Action::Retire { id, grace } => {
                    let task = tasks.remove(&id);
                    let closed = Rc::clone(&closed);
                    let nudge = engine.nudge();
                    ex.spawn(async move {
                        let graceful = finish(task, grace).await;
                        closed.borrow_mut().push((id, graceful));
                        nudge.nudge();
                    })
                    .detach();
                }
                _ => {}
            }
        }
        let deadline = match wait {
            Wait::Done => break,
            Wait::Again => {
                // The connection tasks share this thread: let them run between turns.
                future::yield_now().await;
                continue;
            }
            Wait::Until(deadline) => deadline,
        };
        let timer = match deadline {
            Some(t) => Timer::at(t),
            None => Timer::never(),
        };
        future::or(listener, async {
            timer.await;
        })
        .await;
    }
    engine.finish();
}

/// Waits up to `grace` for a connection task to end by itself, then cancels it; returns once
/// it is gone (its socket closed), with whether it ended gracefully.
async fn finish(task: Option<Task<bool>>, grace: Duration) -> bool {
    let Some(mut task) = task else {
        return false;
    };
    let ended = future::or(async { Some((&mut task).await) }, async {
        Timer::after(grace).await;
        None
    })
    .await;
    match ended {
        Some(graceful) => graceful,
        None => {
            // Resolves once the cancelled task has been dropped, with its socket.
            task.cancel().await;
            false
        }
    }
}

/// One connection from the dial to the end of its socket. Returns whether it ended
/// gracefully: everything queued was written, then our TLS `close_notify`, and the peer
/// closed its side with its own.
///
/// A panic in the application's code (its [`Dialer`], or its stream's reads and writes) ends
/// only this connection, as a failed dial or a failed transport, so the core reconnects at
/// once instead of waiting for its connect timeout or a missed ping.
async fn connection<D: Dialer>(link: Link, dialer: Arc<D>) -> bool {
    let up = Cell::new(false);
    let run = AssertUnwindSafe(run_connection(&link, &*dialer, &up));
    match run.catch_unwind().await {
        Ok(graceful) => graceful,
        Err(_) => {
            warn!("the connection's task panicked");
            if up.get() {
                link.eof().await;
            } else {
                let why = format!("dialling {} panicked", link.endpoint());
                link.connect_failed(ConnectFailure::transient(why)).await;
            }
            false
        }
    }
}

/// [`connection`], with `up` set once the engine knows the connection is up.
async fn run_connection<D: Dialer>(link: &Link, dialer: &D, up: &Cell<bool>) -> bool {
    debug!("dialling");
    let stream = match dial(link, dialer).await {
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
    up.set(true);
    let (rd, wr) = futures_lite::io::split(stream);
    let (peer_closed, closed) = future::zip(read_loop(link, rd), write_loop(link, wr)).await;
    peer_closed && closed
}

async fn dial<D: Dialer>(
    link: &Link,
    dialer: &D,
) -> Result<futures_rustls::client::TlsStream<D::Stream>, ConnectFailure> {
    let transport = dialer.dial(link.endpoint()).await?;
    let tls = TlsConnector::from(Arc::clone(link.tls_config()));
    tls.connect(link.server_name().clone(), transport)
        .await
        .map_err(|e| ccs_net::tls::connect_failure(link.endpoint(), link.server_name(), &e))
}

/// Reads until the peer closes or reading fails, and says so. Returns whether the peer
/// closed cleanly (TLS `close_notify`).
async fn read_loop(link: &Link, mut rd: impl AsyncRead + Unpin) -> bool {
    // futures-io reads into an initialised buffer: one scratch buffer, and each read's
    // bytes copied out of it (cheaper than zeroing a fresh buffer per read).
    let mut scratch = vec![0; link.read_buffer()];
    let clean = loop {
        match rd.read(&mut scratch).await {
            // rustls reports the end of a stream without close_notify as an error.
            Ok(0) => break true,
            Err(e) => {
                debug!(error = %e, "read failed");
                break false;
            }
            Ok(n) => {
                // Waits while the engine is behind.
                if !link.data(Bytes::copy_from_slice(&scratch[..n])).await {
                    return false;
                }
            }
        }
    };
    link.eof().await;
    clean
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
            // close fail with `NotConnected`: the close still happened.
            return match wr.close().await {
                Ok(()) => true,
                Err(e) => e.kind() == std::io::ErrorKind::NotConnected,
            };
        }
    }
}
