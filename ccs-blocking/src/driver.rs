//! The IO thread around [`ccs_net::Engine`], and the retiring of connections.
//!
//! The loop makes no decision: it takes a listener, reports the retired connections whose
//! threads have ended, runs a turn of the engine, carries out its [`Action`]s (start a
//! connection's thread; retire one within its grace), and parks until the next input or the
//! core's next deadline.
//!
//! Retiring never blocks the loop: a small reaper thread waits up to the grace for the
//! connection's threads to end by themselves, then shuts the socket down (which wakes both
//! threads), joins them, and hands the result back through a shared list and
//! [`ccs_net::Nudge`].

use std::collections::HashMap;
use std::mem;
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ccs_net::{Action, Engine, Nudge, Wait, block};
use ccs_proto::connection::ConnId;
use tracing::{debug, warn};

use crate::dialer::{Dialer, Transport};
use crate::slot::{Slot, ThreadGuard, lock};

/// A connection's thread as the IO thread knows it.
struct ConnThread<S> {
    slot: Arc<Slot<S>>,
    thread: JoinHandle<()>,
    /// Sends whether the connection ended gracefully, as its thread ends.
    done: mpsc::Receiver<bool>,
}

/// Retired connections whose threads have ended, for [`Engine::socket_closed`].
type Reaped = Arc<Mutex<Vec<(ConnId, bool)>>>;

/// Runs the engine until the client has closed and every socket is closed.
pub(crate) fn drive<D: Dialer>(mut engine: Engine, dialer: Arc<D>, threads: Arc<AtomicUsize>) {
    let reaped: Reaped = Arc::default();
    let nudge = engine.nudge();
    let mut conns: HashMap<ConnId, ConnThread<D::Stream>> = HashMap::new();
    loop {
        // Listening before looking at the reaped list: a reaper's nudge is not missed.
        let listener = engine.listen();
        let ended = mem::take(&mut *lock(&reaped));
        for (id, graceful) in ended {
            engine.socket_closed(id, graceful);
        }
        let wait = engine.turn(Instant::now());
        while let Some(action) = engine.poll_action() {
            match action {
                Action::Dial(link) => {
                    let id = link.id();
                    let slot = Slot::new();
                    let (done_tx, done) = mpsc::channel();
                    let spawned = {
                        let (slot, dialer, threads) =
                            (Arc::clone(&slot), Arc::clone(&dialer), Arc::clone(&threads));
                        let guard = ThreadGuard::new(&threads);
                        thread::Builder::new()
                            .name(format!("ccs-conn-{id}"))
                            .spawn(move || {
                                let _guard = guard;
                                let span = tracing::info_span!("ccs_connection", conn = %link.id(), endpoint = %link.endpoint());
                                let _enter = span.enter();
                                let graceful =
                                    crate::conn::run(&link, &*dialer, &slot, &threads);
                                let _ = done_tx.send(graceful);
                            })
                    };
                    match spawned {
                        Ok(thread) => {
                            conns.insert(id, ConnThread { slot, thread, done });
                        }
                        // The core's connect timeout gives this attempt up; it is then
                        // retired with no thread to wait for.
                        Err(e) => warn!(conn = %id, error = %e, "cannot start a connection thread"),
                    }
                }
                Action::Retire { id, grace } => match conns.remove(&id) {
                    Some(conn) => retire(id, conn, grace, &reaped, &nudge),
                    None => {
                        lock(&reaped).push((id, false));
                        nudge.nudge();
                    }
                },
                _ => {}
            }
        }
        let deadline = match wait {
            Wait::Done => break,
            Wait::Again => continue,
            Wait::Until(deadline) => deadline,
        };
        block::wait(listener, deadline);
    }
    engine.finish();
}

/// Stops a connection off the IO thread and reports its end through `reaped`.
fn retire<S: Transport>(
    id: ConnId,
    conn: ConnThread<S>,
    grace: Duration,
    reaped: &Reaped,
    nudge: &Nudge,
) {
    let work = Arc::new(Mutex::new(Some(conn)));
    let spawned = {
        let (work, reaped, nudge) = (Arc::clone(&work), Arc::clone(reaped), nudge.clone());
        thread::Builder::new()
            .name(format!("ccs-reap-{id}"))
            .spawn(move || {
                if let Some(conn) = lock(&work).take() {
                    let graceful = reap(conn, grace);
                    lock(&reaped).push((id, graceful));
                    nudge.nudge();
                }
            })
    };
    if let Err(e) = spawned {
        // No thread to spare: the IO thread reaps it itself (waiting at most the grace).
        warn!(conn = %id, error = %e, "cannot start a reaper thread: reaping on the IO thread");
        if let Some(conn) = lock(&work).take() {
            let graceful = reap(conn, grace);
            lock(reaped).push((id, graceful));
            nudge.nudge();
        }
    }
}

/// Waits up to `grace` for the connection's thread to end by itself, then stops it; returns
/// whether it ended gracefully.
fn reap<S: Transport>(conn: ConnThread<S>, grace: Duration) -> bool {
    let ConnThread { slot, thread, done } = conn;
    match done.recv_timeout(grace) {
        Ok(graceful) => {
            let _ = thread.join();
            graceful
        }
        // The thread panicked.
        Err(RecvTimeoutError::Disconnected) => {
            let _ = thread.join();
            false
        }
        Err(RecvTimeoutError::Timeout) => {
            if slot.cancel() {
                let _ = thread.join();
            } else {
                debug!("the dialer is still running: its thread ends when it returns");
            }
            false
        }
    }
}
