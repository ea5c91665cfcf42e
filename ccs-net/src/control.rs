//! The control channel: what the application asks of the engine besides sending (acks,
//! close, stats), and the bookkeeping of ack handles out of the engine's hands ([`Tokens`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ccs_proto::connection::{AckError, AckHandle};
use futures_channel::oneshot;

use crate::link::Wake;
use crate::sync::lock;
use crate::{Report, Stats};

/// Commands in the control channel at once; a caller finding it full waits for room.
/// Enough for bursts of acks from many tasks; each one is handled in microseconds.
pub(crate) const CONTROL_CAPACITY: usize = 64;

/// What the application asks of the engine, besides sending (the control channel).
pub(crate) enum Command {
    Ack {
        handle: AckHandle,
        guard: TokenGuard,
        reply: oneshot::Sender<Result<(), AckError>>,
    },
    Close {
        deadline: Duration,
        reply: oneshot::Sender<Report>,
    },
    Stats {
        reply: oneshot::Sender<Stats>,
    },
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ack { .. } => "Ack",
            Self::Close { .. } => "Close",
            Self::Stats { .. } => "Stats",
        })
    }
}

/// The ack handles out of the engine's hands (in the upstream channel, in the application's
/// [`AckToken`](crate::AckToken)s, or taken in auto-ack mode and not yet acked). A handle
/// that comes back unused (its token or item dropped) is [`Tokens::take_released`] by the
/// engine, which tells the core ([`ccs_proto::Client::release`]): a graceful close then need
/// not wait for its ack.
#[derive(Debug)]
pub(crate) struct Tokens {
    released: Mutex<Vec<AckHandle>>,
    wake: Wake,
}

impl Tokens {
    pub(crate) fn new(wake: Wake) -> Arc<Self> {
        Arc::new(Self {
            released: Mutex::default(),
            wake,
        })
    }

    /// A guard for a handle that goes out.
    pub(crate) fn issue(self: &Arc<Self>, handle: &AckHandle) -> TokenGuard {
        TokenGuard {
            handle: Some(handle.clone()),
            tokens: Arc::clone(self),
        }
    }

    /// The handles that came back unused since the last call.
    pub(crate) fn take_released(&self) -> Vec<AckHandle> {
        let mut released = lock(&self.released);
        if released.is_empty() {
            Vec::new()
        } else {
            std::mem::take(&mut *released)
        }
    }
}

/// Gives its handle back to [`Tokens`] when dropped unused; [`TokenGuard::used`] once the
/// handle was acked (or the ack refused: then there is nothing to release either).
#[derive(Debug)]
pub(crate) struct TokenGuard {
    handle: Option<AckHandle>,
    tokens: Arc<Tokens>,
}

impl TokenGuard {
    /// The handle was used: nothing to release.
    pub(crate) fn used(mut self) {
        self.handle = None;
    }
}

impl Drop for TokenGuard {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            lock(&self.tokens.released).push(handle);
            self.tokens.wake.notify();
        }
    }
}
