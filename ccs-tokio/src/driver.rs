//! The tokio loop around [`ccs_net::Engine`], and one task per connection.
//!
//! The loop makes no decision: it takes a listener, runs a turn of the engine, carries out
//! its [`Action`]s (spawn a connection task; retire one within its grace), and sleeps until
//! the next input, the core's next deadline, or a retired task's end.
//!
//! A connection task dials through the [`Dialer`], does the TLS handshake, then reads and
//! writes concurrently (two futures joined in the task, over the two halves of the TLS
//! stream, so a write blocked on a full socket never stops reading). The task owns the
//! socket: when it ends, or is aborted, the socket is closed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ccs_net::{Action, Engine, Link, Wait};
use ccs_proto::client::ConnectFailure;
use ccs_proto::connection::ConnId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsConnector;
use tracing::{Instrument, debug};

use crate::Dialer;

/// Runs the engine until the client has closed and every socket is closed.
pub(crate) async fn drive<D: Dialer>(mut engine: Engine, dialer: Arc<D>) {
    let mut tasks: HashMap<ConnId, JoinHandle<bool>> = HashMap::new();
    let mut retiring: JoinSet<(ConnId, bool)> = JoinSet::new();
    loop {
        let listener = engine.listen();
        let wait = engine.turn(Instant::now());
        while let Some(action) = engine.poll_action() {
            match action {
                Action::Dial(link) => {
                    let span = tracing::info_span!("ccs_connection", conn = %link.id(), endpoint = %link.endpoint());
                    let id = link.id();
                    let task = tokio::spawn(connection(link, Arc::clone(&dialer)).instrument(span));
                    tasks.insert(id, task);
                }
                Action::Retire { id, grace } => {
                    let task = tasks.remove(&id);
                    retiring.spawn(async move { (id, finish(task, grace).await) });
                }
                _ => {}
            }
        }
        let deadline = match wait {
            Wait::Done => break,
            Wait::Again => continue,
            Wait::Until(deadline) => deadline,
        };
        let sleep = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(done) = retiring.join_next(), if !retiring.is_empty() => {
                // A join error only if the runtime is shutting down.
                if let Ok((id, graceful)) = done {
                    engine.socket_closed(id, graceful);
                }
            }
            () = listener => {}
            () = sleep => {}
        }
    }
    engine.finish();
}

/// Waits up to `grace` for a connection task to end by itself, then aborts it; returns once
/// it is gone (its socket closed), with whether it ended gracefully.
async fn finish(task: Option<JoinHandle<bool>>, grace: Duration) -> bool {
    let Some(mut handle) = task else {
        return false;
    };
    match tokio::time::timeout(grace, &mut handle).await {
        Ok(ended) => ended.unwrap_or(false),
        Err(_) => {
            handle.abort();
            // Resolves once the aborted task has been dropped, with its socket.
            let _ = handle.await;
            false
        }
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
