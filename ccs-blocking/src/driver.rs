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
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ccs_net::{Action, Engine, Nudge, Wait, block};
use ccs_proto::connection::ConnId;
use event_listener::{Event, EventListener};
use tracing::{debug, warn};

use crate::dialer::{Dialer, Transport};

/// Locks, ignoring poisoning: nothing here leaves shared state half-changed on a panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counts a connection thread while it lives.
#[derive(Debug)]
pub(crate) struct ThreadGuard(Arc<AtomicUsize>);

impl ThreadGuard {
    /// Counts one more thread (taken before spawning it, moved into it).
    pub(crate) fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(count))
    }
}

impl Drop for ThreadGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the IO thread holds of one connection to stop it from outside: a handle on its
/// socket once there is one, and a flag its writer watches.
#[derive(Debug)]
pub(crate) struct Slot<S> {
    state: Mutex<SlotState<S>>,
    cancelled: AtomicBool,
    cancel: Event,
}

#[derive(Debug)]
enum SlotState<S> {
    /// The dialer has not returned yet.
    Dialling,
    /// A handle on the socket, for shutting it down.
    Open(S),
    /// Stopped.
    Cancelled,
}

impl<S: Transport> Slot<S> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(SlotState::Dialling),
            cancelled: AtomicBool::new(false),
            cancel: Event::new(),
        })
    }

    /// Keeps a handle on the dialled socket; `false` (and the handle is dropped) if the
    /// connection was stopped meanwhile.
    pub(crate) fn open(&self, socket: S) -> bool {
        let mut st = lock(&self.state);
        if matches!(*st, SlotState::Cancelled) {
            return false;
        }
        *st = SlotState::Open(socket);
        true
    }

    /// Stops the connection: shuts its socket down (waking whatever blocks on it) and wakes
    /// its writer. Returns whether the connection's thread can be joined promptly: `false`
    /// when it is still in the dialer, which cannot be interrupted (it ends when the dialer
    /// returns).
    pub(crate) fn cancel(&self) -> bool {
        let was = mem::replace(&mut *lock(&self.state), SlotState::Cancelled);
        self.cancelled.store(true, Ordering::Release);
        self.cancel.notify(usize::MAX);
        match was {
            SlotState::Open(socket) => {
                let _ = socket.shutdown(Shutdown::Both);
                true
            }
            SlotState::Dialling => false,
            SlotState::Cancelled => true,
        }
    }

    /// Whether [`Slot::cancel`] was called.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// Woken by [`Slot::cancel`]; take it before looking at [`Slot::is_cancelled`].
    pub(crate) fn listen(&self) -> EventListener {
        self.cancel.listen()
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn a_slot_stops_a_dial_in_progress_and_wakes_a_blocked_read() {
        let slot = Slot::<TcpStream>::new();
        assert!(!slot.cancel(), "still in the dialer: nothing to join yet");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let late = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert!(
            !slot.open(late),
            "a dial that returns after the cancel is dropped"
        );

        let slot = Slot::<TcpStream>::new();
        let mut socket = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let _peer = listener.accept().unwrap();
        assert!(slot.open(socket.try_clone().unwrap()));
        let woken = slot.listen();
        let reader = thread::spawn(move || socket.read(&mut [0u8; 16]).map_err(|e| e.kind()));
        assert!(!slot.is_cancelled());
        assert!(slot.cancel(), "an open socket: the thread can be joined");
        assert!(slot.is_cancelled());
        // The shutdown ends the read blocked on another handle of the socket.
        assert_eq!(reader.join().unwrap(), Ok(0));
        block::wait(woken, None).expect("the writer's listener is woken");
    }
}
