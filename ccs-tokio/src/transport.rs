//! One connection's socket: the task that dials it, reads it and writes it, the outbox through
//! which the driver hands it bytes, and the handle that ends it.
//!
//! A connection is one task ([`run`]): it dials (TCP, then TLS), then reads and writes
//! concurrently (two futures joined in the task, over the two halves of the TLS stream, so a
//! write blocked on a full socket never stops reading). The task owns the socket: when it
//! ends, or is aborted, the socket is closed.
//!
//! It ends by itself once both halves are done: the writer has written everything queued
//! and closed its side (TLS `close_notify`, then TCP FIN) because the driver asked it to
//! ([`Outbox::close`]), and the reader has seen the peer's end. [`ConnTask::finish`] gives it
//! a grace period for that and aborts it after.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ccs_proto::client::ConnectFailure;
use ccs_proto::connection::ConnId;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tracing::debug;

/// What connection tasks tell the driver, over one bounded channel ([`NET_CAPACITY`]).
#[derive(Debug)]
pub(crate) enum Net {
    /// TCP and TLS are up.
    Connected(ConnId),
    /// Resolving, TCP or TLS failed; the task has ended. Whether retrying can help is the
    /// adapter's reading of the error (a name that does not resolve, a certificate not
    /// trusted: permanent); what to do about it is the core's decision.
    ConnectFailed(ConnId, ConnectFailure),
    /// Bytes read.
    Data(ConnId, Bytes),
    /// The transport ended (the peer closed it, or reading or writing failed).
    Eof(ConnId),
}

/// Messages from every connection task to the driver in flight at once. A reader that finds
/// the channel full waits before reading more (so the peer is slowed by TCP flow control);
/// with the default 64 KiB reads this bounds the bytes waiting for the driver to 4 MiB. No
/// cycle can form: the driver never waits for a connection task (it only ever appends to
/// outboxes, which do not block), so it always comes back to drain this channel.
pub(crate) const NET_CAPACITY: usize = 64;

/// What a connection task needs.
pub(crate) struct Dial {
    pub(crate) id: ConnId,
    pub(crate) endpoint: crate::Endpoint,
    pub(crate) server_name: ServerName<'static>,
    pub(crate) tls: TlsConnector,
    pub(crate) read_buffer: usize,
    pub(crate) net: mpsc::Sender<Net>,
    pub(crate) outbox: Arc<Outbox>,
}

/// Bytes on their way from the driver to one connection's writer: the per-connection writer
/// channel, as a byte queue. The driver appends without ever waiting ([`Outbox::push`]); the
/// writer takes everything queued at once, so each wake-up is one write and one flush.
///
/// It is bounded in bytes, not in messages: the driver must never wait for a writer (a
/// writer can be stuck for good on a peer that stopped reading), so when a writer is this far
/// behind, [`Outbox::push`] refuses and the driver treats the transport as failed.
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<OutboxState>,
    ready: Notify,
    limit: usize,
}

#[derive(Debug, Default)]
struct OutboxState {
    bytes: Vec<u8>,
    closing: bool,
}

impl Outbox {
    /// An empty outbox holding at most `limit` unwritten bytes.
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(OutboxState::default()),
            ready: Notify::new(),
            limit,
        })
    }

    /// Queues bytes for the writer. `false` (and nothing queued) if that would put more than
    /// the limit in the queue: the writer is not keeping up. Bytes pushed after
    /// [`Outbox::close`] are dropped: the connection is over.
    pub(crate) fn push(&self, data: &[u8]) -> bool {
        let mut st = self.lock();
        if st.closing {
            return true;
        }
        if st.bytes.len().saturating_add(data.len()) > self.limit {
            return false;
        }
        st.bytes.extend_from_slice(data);
        drop(st);
        self.ready.notify_one();
        true
    }

    /// Asks the writer to write what is queued, then close its side of the connection.
    pub(crate) fn close(&self) {
        self.lock().closing = true;
        self.ready.notify_one();
    }

    /// Waits until there are bytes or a close; swaps the queued bytes into `batch` (which
    /// must be empty) and says whether to close once they are written.
    async fn take(&self, batch: &mut Vec<u8>) -> bool {
        loop {
            {
                let mut st = self.lock();
                if !st.bytes.is_empty() || st.closing {
                    std::mem::swap(&mut st.bytes, batch);
                    return st.closing;
                }
            }
            // One consumer: `notify_one` stores a permit when nobody waits, so a push between
            // the check above and this wait is not missed.
            self.ready.notified().await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutboxState> {
        // Nothing panics while holding the lock; should it, the bytes are still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection's task. Dropping it aborts the task (and so closes its socket).
#[derive(Debug)]
pub(crate) struct ConnTask(JoinHandle<bool>);

impl ConnTask {
    /// Starts a connection task.
    pub(crate) fn spawn(dial: Dial, span: tracing::Span) -> Self {
        use tracing::Instrument;
        Self(tokio::spawn(run(dial).instrument(span)))
    }

    /// Waits up to `grace` for the task to end by itself, then aborts it; returns once it is
    /// gone (its socket closed), with whether it ended gracefully.
    pub(crate) async fn finish(mut self, grace: Duration) -> bool {
        let handle = &mut self.0;
        match tokio::time::timeout(grace, &mut *handle).await {
            Ok(ended) => ended.unwrap_or(false),
            Err(_) => {
                handle.abort();
                // Resolves once the aborted task has been dropped, with its socket.
                let _ = handle.await;
                false
            }
        }
    }
}

impl Drop for ConnTask {
    fn drop(&mut self) {
        // A no-op for a task that has ended.
        self.0.abort();
    }
}

/// Runs one connection from the dial to the end of its socket. Returns whether it ended
/// gracefully: everything queued was written, then our TLS `close_notify`, and the peer
/// closed its side with its own.
async fn run(d: Dial) -> bool {
    debug!("dialling");
    let stream = match connect(&d).await {
        Ok(s) => s,
        Err(reason) => {
            let _ = d.net.send(Net::ConnectFailed(d.id, reason)).await;
            return false;
        }
    };
    debug!("TLS up");
    if d.net.send(Net::Connected(d.id)).await.is_err() {
        return false;
    }
    let (rd, wr) = tokio::io::split(stream);
    let (peer_closed, closed) = tokio::join!(
        read_loop(d.id, rd, d.read_buffer, &d.net),
        write_loop(d.id, wr, &d.outbox, &d.net),
    );
    peer_closed && closed
}

async fn connect(d: &Dial) -> Result<TlsStream<TcpStream>, ConnectFailure> {
    let endpoint = &d.endpoint;
    // Resolving apart from connecting tells a name that does not resolve (permanent) from a
    // refused connection (transient).
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
    d.tls
        .connect(d.server_name.clone(), tcp)
        .await
        .map_err(|e| {
            let why = crate::tls::describe_tls_error(endpoint, &d.server_name, &e);
            // A certificate the configuration does not trust stays untrusted on retry.
            let untrusted = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)));
            if untrusted {
                ConnectFailure::permanent(why)
            } else {
                ConnectFailure::transient(why)
            }
        })
}

/// Reads until the peer closes or reading fails, and says so with [`Net::Eof`]. Returns
/// whether the peer closed cleanly (TLS `close_notify`).
async fn read_loop(
    id: ConnId,
    mut rd: ReadHalf<TlsStream<TcpStream>>,
    read_buffer: usize,
    net: &mpsc::Sender<Net>,
) -> bool {
    let mut buf = BytesMut::with_capacity(read_buffer);
    loop {
        if buf.capacity() < read_buffer / 4 {
            buf.reserve(read_buffer);
        }
        let clean = match rd.read_buf(&mut buf).await {
            // rustls reports the end of a stream without close_notify as an error.
            Ok(0) => true,
            Err(e) => {
                debug!(error = %e, "read failed");
                false
            }
            Ok(_) => {
                // Waits while the driver is behind (see NET_CAPACITY).
                if net.send(Net::Data(id, buf.split().freeze())).await.is_err() {
                    return false;
                }
                continue;
            }
        };
        let _ = net.send(Net::Eof(id)).await;
        return clean;
    }
}

/// Writes what the driver queues, one write and one flush per batch, until told to close:
/// then writes the rest and closes our side (TLS `close_notify`, TCP FIN). Returns whether
/// that close happened; a failed write says [`Net::Eof`].
async fn write_loop(
    id: ConnId,
    mut wr: WriteHalf<TlsStream<TcpStream>>,
    outbox: &Outbox,
    net: &mpsc::Sender<Net>,
) -> bool {
    let mut batch = Vec::new();
    loop {
        let close = outbox.take(&mut batch).await;
        if !batch.is_empty() {
            let written = match wr.write_all(&batch).await {
                Ok(()) => wr.flush().await,
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                debug!(error = %e, "write failed");
                let _ = net.send(Net::Eof(id)).await;
                return false;
            }
            batch.clear();
        }
        if close {
            return wr.shutdown().await.is_ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn outbox_batches_bounds_and_closes() {
        let outbox = Outbox::new(10);
        assert!(outbox.push(b"hello"));
        assert!(outbox.push(b"world"));
        assert!(!outbox.push(b"!"), "over the limit: refused");
        let mut batch = Vec::new();
        assert!(!outbox.take(&mut batch).await);
        assert_eq!(batch, b"helloworld");
        batch.clear();
        assert!(
            outbox.push(b"!"),
            "room again once the writer took the bytes"
        );
        outbox.close();
        assert!(outbox.push(b"ignored"));
        assert!(outbox.take(&mut batch).await);
        assert_eq!(batch, b"!");
    }

    #[tokio::test]
    async fn outbox_wakes_a_waiting_writer() {
        let outbox = Outbox::new(100);
        let writer = {
            let outbox = Arc::clone(&outbox);
            tokio::spawn(async move {
                let mut batch = Vec::new();
                let close = outbox.take(&mut batch).await;
                (batch, close)
            })
        };
        outbox.push(b"x");
        let (batch, close) = writer.await.unwrap();
        assert_eq!(batch, b"x");
        assert!(!close);
    }
}
