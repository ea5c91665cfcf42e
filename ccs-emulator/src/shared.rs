//! State shared by the accept loop, every connection task and the handle: the ledger, the
//! upstream store (messages and receipts waiting for a connection, across connections), and
//! the signals that wake connections.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use ccs_proto::message::Incoming;
use tokio::sync::watch;

use crate::config::EmulatorConfig;
use crate::ledger::{Ledger, LiveLedger};

/// Everything the tasks of one emulator share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: EmulatorConfig,
    state: Mutex<State>,
    /// Bumped when connections should look at the state again: upstream queued, drain or
    /// shutdown requested.
    wake: watch::Sender<u64>,
    /// Bumped whenever the ledger may have changed (for [`crate::EmulatorHandle::wait_until`]).
    ledger_tick: watch::Sender<u64>,
}

/// The mutable part, behind one lock taken once per connection loop iteration.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) ledger: LiveLedger,
    /// Upstream messages and receipts waiting for a bound connection, oldest first
    /// (redeliveries go to the front).
    pub(crate) upstream: VecDeque<Queued>,
    /// Bumped by [`crate::EmulatorHandle::drain_all`]: a connection drains when this is above
    /// the value it saw when it was accepted.
    pub(crate) drain_epoch: u64,
    pub(crate) shutting_down: bool,
    /// Set by [`crate::EmulatorHandle::pause_reading`]: connections read nothing from their
    /// sockets until it is cleared.
    pub(crate) reading_paused: bool,
    /// Connections accepted and not yet over.
    pub(crate) live: usize,
    /// For the ids of injected and generated upstream messages.
    pub(crate) next_upstream: u64,
}

/// An upstream message or receipt waiting for a connection.
#[derive(Debug, Clone)]
pub(crate) struct Queued {
    /// [`Incoming::Upstream`] or [`Incoming::Receipt`].
    pub(crate) message: Incoming,
    /// How many times it was sent before (each time on a connection that ended before the
    /// client acked it).
    pub(crate) deliveries: u32,
}

impl Shared {
    pub(crate) fn new(config: EmulatorConfig) -> Self {
        let state = State {
            ledger: LiveLedger::new(config.track_ids),
            upstream: VecDeque::new(),
            drain_epoch: 0,
            shutting_down: false,
            reading_paused: false,
            live: 0,
            next_upstream: 0,
        };
        Self {
            config,
            state: Mutex::new(state),
            wake: watch::Sender::new(0),
            ledger_tick: watch::Sender::new(0),
        }
    }

    /// The state. A task that panicked while holding the lock leaves counters that are still
    /// meaningful, so a poisoned lock is used as is.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes every connection (and the accept loop) look at the state again.
    pub(crate) fn wake_all(&self) {
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver of [`Self::wake_all`].
    pub(crate) fn wake_receiver(&self) -> watch::Receiver<u64> {
        self.wake.subscribe()
    }

    /// Says that the ledger may have changed.
    pub(crate) fn ledger_changed(&self) {
        self.ledger_tick.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver of [`Self::ledger_changed`].
    pub(crate) fn ledger_receiver(&self) -> watch::Receiver<u64> {
        self.ledger_tick.subscribe()
    }

    /// A consistent snapshot of the ledger.
    pub(crate) fn ledger(&self) -> Ledger {
        let st = self.lock();
        st.ledger.snapshot(st.upstream.len())
    }

    /// Queues an upstream message or receipt for the next connection that can take it;
    /// `false` if the store is full (`force` ignores the limit: injected messages are never
    /// dropped).
    pub(crate) fn enqueue(&self, message: Incoming, force: bool) -> bool {
        let mut st = self.lock();
        if !force && st.upstream.len() >= self.config.max_queued_upstream {
            return false;
        }
        st.upstream.push_back(Queued {
            message,
            deliveries: 0,
        });
        drop(st);
        self.wake_all();
        true
    }
}
