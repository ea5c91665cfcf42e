//! A connection's socket as the threads that share it see it ([`Slot`]), the count of live
//! connection threads ([`ThreadGuard`]), and the lock helper they use.

use std::mem;
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use event_listener::{Event, EventListener};

use crate::dialer::Transport;

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

#[cfg(test)]
mod tests {
    use super::*;
    use ccs_net::block;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::thread;

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
