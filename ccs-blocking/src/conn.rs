//! One connection: dial and TLS handshake, then a reader (this thread) and a writer (a
//! second thread) sharing the `rustls::ClientConnection` under a mutex, each with its own
//! handle on the socket.
//!
//! Neither holds the TLS lock while blocked on the socket: the reader reads raw bytes
//! without it, then locks to decrypt; the writer waits for the engine's next batch without
//! it, locks to encrypt into a buffer, unlocks, and writes the buffer. TLS records are
//! written in the order they were made: they are only ever taken out of rustls under the
//! write-side mutex, which is held until they are on the socket.

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::pin::{Pin, pin};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::thread;

use bytes::Bytes;
use ccs_net::{Link, block};
use ccs_proto::client::ConnectFailure;
use rustls::ClientConnection;
use tracing::debug;

use crate::dialer::{Dialer, Transport};
use crate::slot::{Slot, ThreadGuard, lock};

/// Plaintext taken out of rustls at a time.
const PLAIN_CHUNK: usize = 16 * 1024;

/// Runs a future to its end on this thread.
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    block::on(fut)
}

/// One connection from the dial to the end of its socket, on its own thread (which becomes
/// the reader). Returns whether it ended gracefully: everything queued was written, then
/// our TLS `close_notify`, and the peer closed its side with its own.
pub(crate) fn run<D: Dialer>(
    link: &Link,
    dialer: &D,
    slot: &Arc<Slot<D::Stream>>,
    threads: &Arc<AtomicUsize>,
) -> bool {
    debug!("dialling");
    let (mut socket, tls) = match dial(link, dialer, slot) {
        Ok(Some(up)) => up,
        // Stopped while dialling: the engine has given this attempt up already.
        Ok(None) => return false,
        Err(reason) => {
            // Out of the dialer: a reaper may join this thread now (it ends at once).
            slot.cancel();
            block_on(link.connect_failed(reason));
            return false;
        }
    };
    debug!("TLS up");
    let write_socket = match socket.try_clone() {
        Ok(s) => s,
        Err(e) => {
            let why = format!("cannot clone the socket: {e}");
            block_on(link.connect_failed(ConnectFailure::transient(why)));
            return false;
        }
    };
    if !block_on(link.connected()) {
        return false;
    }
    let shared = Shared {
        tls: Mutex::new(tls),
        write: Mutex::new(write_socket),
    };
    // A scoped thread: the writer borrows the link, and the scope joins it before this
    // thread ends.
    thread::scope(|scope| {
        let guard = ThreadGuard::new(threads);
        let writer = thread::Builder::new()
            .name(format!("ccs-write-{}", link.id()))
            .spawn_scoped(scope, || {
                let _guard = guard;
                write_loop(link, &shared, slot)
            });
        let writer = match writer {
            Ok(w) => w,
            Err(e) => {
                debug!(error = %e, "cannot start the writer thread");
                block_on(link.eof());
                return false;
            }
        };
        let peer_closed = read_loop(link, &mut socket, &shared);
        let closed = writer.join().unwrap_or(false);
        peer_closed && closed
    })
}

/// What the reader and the writer share.
struct Shared<S> {
    tls: Mutex<ClientConnection>,
    /// The writing handle on the socket; held while TLS records go out.
    write: Mutex<S>,
}

/// Dials and does the TLS handshake. `Ok(None)` if the connection was stopped meanwhile.
fn dial<D: Dialer>(
    link: &Link,
    dialer: &D,
    slot: &Slot<D::Stream>,
) -> Result<Option<(D::Stream, ClientConnection)>, ConnectFailure> {
    let mut socket = dialer.dial(link.endpoint())?;
    let handle = socket
        .try_clone()
        .map_err(|e| ConnectFailure::transient(format!("cannot clone the socket: {e}")))?;
    // From here on the IO thread can stop the handshake by shutting the socket down.
    if !slot.open(handle) {
        return Ok(None);
    }
    let mut tls = ClientConnection::new(Arc::clone(link.tls_config()), link.server_name().clone())
        .map_err(|e| ConnectFailure::permanent(format!("cannot start TLS: {e}")))?;
    // The engine bounds what it queues for a connection (`Config::write_limit`).
    tls.set_buffer_limit(None);
    while tls.is_handshaking() {
        if let Err(e) = tls.complete_io(&mut socket) {
            return Err(ccs_net::tls::connect_failure(
                link.endpoint(),
                link.server_name(),
                &e,
            ));
        }
    }
    Ok(Some((socket, tls)))
}

/// Reads until the peer closes or reading fails (also when the IO thread shuts the socket
/// down), and says so. Returns whether the peer closed cleanly (TLS `close_notify`).
fn read_loop<S: Transport>(link: &Link, socket: &mut S, shared: &Shared<S>) -> bool {
    // Application data that came with the end of the handshake is already in rustls.
    let mut early = Vec::new();
    let early_closed = drain_plaintext(&mut lock(&shared.tls), &mut early);
    if !early.is_empty() && !block_on(link.data(Bytes::from(early))) {
        return false;
    }
    let clean = match early_closed {
        Ok(false) => read_more(link, socket, shared),
        Ok(true) => true,
        Err(e) => {
            debug!(error = %e, "TLS failed");
            false
        }
    };
    block_on(link.eof());
    clean
}

/// The reader's loop: whether the peer closed cleanly (`false` too when reading failed or
/// the engine is gone).
fn read_more<S: Transport>(link: &Link, socket: &mut S, shared: &Shared<S>) -> bool {
    let mut raw = vec![0u8; link.read_buffer()];
    loop {
        let n = match socket.read(&mut raw) {
            // The end of the stream without `close_notify` (or our own shutdown).
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                debug!(error = %e, "read failed");
                return false;
            }
        };
        let mut plain = Vec::new();
        let result = decrypt(&mut lock(&shared.tls), &raw[..n], &mut plain);
        flush_pending(shared);
        // What was decrypted before an error still goes to the engine. Waits while the
        // engine is behind.
        if !plain.is_empty() && !block_on(link.data(Bytes::from(plain))) {
            return false;
        }
        match result {
            Ok(true) => return true,
            Ok(false) => {}
            Err(e) => {
                debug!(error = %e, "TLS failed");
                return false;
            }
        }
    }
}

/// Feeds `raw` to rustls and appends the plaintext to `plain`; `Ok(true)` once the peer's
/// `close_notify` came.
fn decrypt(tls: &mut ClientConnection, mut raw: &[u8], plain: &mut Vec<u8>) -> io::Result<bool> {
    let mut closed = false;
    while !raw.is_empty() {
        if tls.read_tls(&mut raw)? == 0 {
            break;
        }
        let state = tls
            .process_new_packets()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        closed |= state.peer_has_closed();
        closed |= drain_plaintext(tls, plain)?;
    }
    Ok(closed)
}

/// Appends the plaintext rustls holds to `plain`; `Ok(true)` once the peer's
/// `close_notify` came.
fn drain_plaintext(tls: &mut ClientConnection, plain: &mut Vec<u8>) -> io::Result<bool> {
    loop {
        let old = plain.len();
        plain.resize(old + PLAIN_CHUNK, 0);
        let read = tls.reader().read(&mut plain[old..]);
        plain.truncate(old + *read.as_ref().unwrap_or(&0));
        match read {
            Ok(0) => return Ok(true),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// Sends the TLS records rustls made while reading (a key update's answer: rare), unless the
/// writer is busy: it then sends them with its next batch.
fn flush_pending<S: Transport>(shared: &Shared<S>) {
    let Ok(mut socket) = shared.write.try_lock() else {
        return;
    };
    let mut records = Vec::new();
    {
        let mut tls = lock(&shared.tls);
        while tls.wants_write() {
            if tls.write_tls(&mut records).is_err() {
                break;
            }
        }
    }
    if !records.is_empty() {
        let _ = socket.write_all(&records).and_then(|()| socket.flush());
    }
}

/// Writes what the engine queues, one socket write per batch, until told to close: then
/// writes the rest, our TLS `close_notify`, and shuts the socket's writing side down.
/// Returns whether that close happened; a failed write ends the stream.
fn write_loop<S: Transport>(link: &Link, shared: &Shared<S>, slot: &Slot<S>) -> bool {
    let mut batch = Vec::new();
    let mut records = Vec::new();
    loop {
        let Some(close) = next_batch(link, slot, &mut batch) else {
            return false;
        };
        let mut socket = lock(&shared.write);
        let encrypted = {
            let mut tls = lock(&shared.tls);
            let mut r = tls.writer().write_all(&batch);
            if close {
                tls.send_close_notify();
            }
            while r.is_ok() && tls.wants_write() {
                r = tls.write_tls(&mut records).map(|_| ());
            }
            r
        };
        let written = encrypted
            .and_then(|()| socket.write_all(&records))
            .and_then(|()| socket.flush());
        batch.clear();
        records.clear();
        if let Err(e) = written {
            debug!(error = %e, "write failed");
            drop(socket);
            block_on(link.eof());
            return false;
        }
        if close {
            // `NotConnected`: the peer has closed the whole connection already (it answered
            // our stream end and `close_notify` and reset the socket): nothing is left to do.
            return match socket.shutdown(Shutdown::Write) {
                Ok(()) => true,
                Err(e) => e.kind() == io::ErrorKind::NotConnected,
            };
        }
    }
}

/// The engine's next batch (and whether to close after it), or `None` once the IO thread
/// stopped the connection.
fn next_batch<S: Transport>(link: &Link, slot: &Slot<S>, batch: &mut Vec<u8>) -> Option<bool> {
    let mut cancel = slot.listen();
    if slot.is_cancelled() {
        return None;
    }
    let mut next = pin!(link.next_batch(batch));
    block_on(std::future::poll_fn(|cx| {
        if let Poll::Ready(close) = next.as_mut().poll(cx) {
            return Poll::Ready(Some(close));
        }
        if Pin::new(&mut cancel).poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    }))
}
