//! The blocking faces of the shared plumbing: [`Pending`], [`PendingBatch`], [`Upstream`],
//! [`AckToken`], [`Events`], and the errors of the methods with a timeout.

use std::fmt;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use ccs_net::block;
use ccs_proto::client::Outcome;
use ccs_proto::connection::AckError;
use ccs_proto::message::{Downstream, MessageId};

use crate::conn::block_on;
use crate::{Event, SendError};

/// An upstream message or receipt with this crate's blocking [`AckToken`].
pub type UpstreamItem = ccs_net::UpstreamItem<AckToken>;

/// `now + d`, or no deadline if that is too far to say.
pub(crate) fn deadline_in(d: Duration) -> Option<Instant> {
    Instant::now().checked_add(d)
}

/// The outcome of a queued message, from [`Client::try_send`](crate::Client::try_send).
/// Dropping it before the outcome was taken loses nothing: the outcome is published as
/// [`Event::DetachedOutcome`] on [`Client::events`](crate::Client::events).
#[derive(Debug)]
pub struct Pending(pub(crate) ccs_net::PendingOutcome);

impl Pending {
    /// Waits for the outcome.
    pub fn wait(self) -> Result<Outcome, SendError> {
        block_on(self.0)
    }

    /// Waits at most `timeout` for the outcome; `None` if it has not come yet (wait again,
    /// or drop this to get it as [`Event::DetachedOutcome`]). Once it returned `Some`, the
    /// outcome is spent: waiting again gives a `Closed` error.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<Result<Outcome, SendError>> {
        block::wait(&mut self.0, deadline_in(timeout))
    }

    /// The runtime-neutral future under this.
    pub fn into_inner(self) -> ccs_net::PendingOutcome {
        self.0
    }
}

/// The outcomes of a batch of messages, from
/// [`Client::enqueue_batch`](crate::Client::enqueue_batch), in the order of the messages.
/// Dropping it before they were taken loses nothing: each outcome is published as
/// [`Event::DetachedOutcome`] on [`Client::events`](crate::Client::events).
#[derive(Debug)]
pub struct PendingBatch(pub(crate) ccs_net::PendingBatch);

impl PendingBatch {
    /// Waits for every outcome.
    pub fn wait(self) -> Vec<Result<Outcome, SendError>> {
        block_on(self.0)
    }

    /// Waits at most `timeout` for every outcome; `None` if some have not come yet (wait
    /// again, or drop this to get them as [`Event::DetachedOutcome`]). Once it returned
    /// `Some`, the outcomes are spent: waiting again gives an empty list.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<Vec<Result<Outcome, SendError>>> {
        block::wait(&mut self.0, deadline_in(timeout))
    }

    /// How many outcomes have not come yet.
    pub fn missing(&self) -> usize {
        self.0.missing()
    }

    /// The runtime-neutral future under this.
    pub fn into_inner(self) -> ccs_net::PendingBatch {
        self.0
    }
}

/// Why [`Client::send_timeout`](crate::Client::send_timeout) returned without an outcome.
#[derive(Debug)]
#[non_exhaustive]
pub enum SendTimeoutError {
    /// The queue stayed full for the whole timeout: the message was **not** queued, and is
    /// given back untouched.
    NotQueued(Box<Downstream>),
    /// The message **was** queued but its outcome did not come within the timeout. It is
    /// still sent (do not send it again); its outcome will be published as
    /// [`Event::DetachedOutcome`] on [`Client::events`](crate::Client::events) (subscribe
    /// before sending to see it).
    OutcomeLater {
        /// The message's id, to match the event with.
        message_id: MessageId,
    },
    /// The message was refused (the client is closing or closed, or the message is
    /// invalid); [`SendError::message`] gives it back.
    Refused(SendError),
}

impl SendTimeoutError {
    /// Whether the message was queued (and its outcome comes later as an event).
    pub fn was_queued(&self) -> bool {
        matches!(self, Self::OutcomeLater { .. })
    }
}

impl fmt::Display for SendTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotQueued(m) => write!(
                f,
                "message {} not queued: the queue stayed full until the timeout",
                m.message_id()
            ),
            Self::OutcomeLater { message_id } => write!(
                f,
                "message {message_id} queued, but no outcome before the timeout: it comes later as a DetachedOutcome event"
            ),
            Self::Refused(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for SendTimeoutError {}

/// Acks one upstream message or receipt: the blocking face of [`ccs_net::AckToken`] (its
/// docs say when a token is valid). A no-op in auto-ack mode.
#[derive(Debug)]
pub struct AckToken(ccs_net::AckToken);

impl AckToken {
    /// The id of the message this token acks.
    pub fn message_id(&self) -> &MessageId {
        self.0.message_id()
    }

    /// Whether acking is up to the application (manual-ack mode).
    pub fn is_manual(&self) -> bool {
        self.0.is_manual()
    }

    /// Acks the message on its connection; waits while the client's command queue is full
    /// and for the answer. `Ok` at once in auto-ack mode.
    pub fn ack(self) -> Result<(), AckError> {
        block_on(self.0.ack())
    }

    /// The runtime-neutral token under this.
    pub fn into_inner(self) -> ccs_net::AckToken {
        self.0
    }
}

/// The upstream messages and receipts, from [`Client::upstream`](crate::Client::upstream):
/// the blocking face of [`ccs_net::UpstreamStream`]. In auto-ack mode taking an item acks
/// it. It ends once the client has closed.
#[derive(Debug)]
pub struct Upstream(pub(crate) ccs_net::UpstreamStream);

impl Upstream {
    /// Waits for the next item; `None` once the client has closed.
    pub fn recv(&mut self) -> Option<UpstreamItem> {
        block_on(self.0.recv()).map(wrap)
    }

    /// Waits at most `timeout` for the next item.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<UpstreamItem, RecvTimeoutError> {
        match block::wait(self.0.recv(), deadline_in(timeout)) {
            Some(Some(item)) => Ok(wrap(item)),
            Some(None) => Err(RecvTimeoutError::Disconnected),
            None => Err(RecvTimeoutError::Timeout),
        }
    }

    /// The next item if one is waiting, without waiting; the error says whether nothing is
    /// waiting or the client has closed.
    pub fn try_recv(&mut self) -> Result<UpstreamItem, ccs_net::TryRecvError> {
        self.0.try_recv().map(wrap)
    }

    /// The items as they come (blocking), until the client has closed.
    pub fn iter(&mut self) -> Iter<'_> {
        Iter(self)
    }

    /// The runtime-neutral stream under this.
    pub fn into_inner(self) -> ccs_net::UpstreamStream {
        self.0
    }
}

fn wrap(item: ccs_net::UpstreamItem) -> UpstreamItem {
    item.map_ack(AckToken)
}

/// A blocking iterator over the upstream items, from [`Upstream::iter`].
#[derive(Debug)]
pub struct Iter<'a>(&'a mut Upstream);

impl Iterator for Iter<'_> {
    type Item = UpstreamItem;

    fn next(&mut self) -> Option<UpstreamItem> {
        self.0.recv()
    }
}

/// An owning blocking iterator over the upstream items.
#[derive(Debug)]
pub struct IntoIter(Upstream);

impl Iterator for IntoIter {
    type Item = UpstreamItem;

    fn next(&mut self) -> Option<UpstreamItem> {
        self.0.recv()
    }
}

impl IntoIterator for Upstream {
    type Item = UpstreamItem;
    type IntoIter = IntoIter;

    fn into_iter(self) -> IntoIter {
        IntoIter(self)
    }
}

impl<'a> IntoIterator for &'a mut Upstream {
    type Item = UpstreamItem;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        Iter(self)
    }
}

/// Why [`Events::recv_timeout`] returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventRecvTimeoutError {
    /// No event within the timeout.
    Timeout,
    /// This receiver fell behind and missed this many of the oldest events; the next call
    /// gives the oldest one still there.
    Overflowed(u64),
    /// No event can come any more.
    Closed,
}

impl fmt::Display for EventRecvTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("no event before the timeout"),
            Self::Overflowed(n) => write!(f, "missed {n} events"),
            Self::Closed => f.write_str("the events channel is closed"),
        }
    }
}

impl std::error::Error for EventRecvTimeoutError {}

/// Monitoring events from [`Client::events`](crate::Client::events): a blocking receiver
/// over the client's broadcast channel. One that falls behind by more than
/// [`Config::event_capacity`](crate::Config::event_capacity) misses the oldest events (it
/// is told how many).
#[derive(Debug)]
pub struct Events(pub(crate) async_broadcast::Receiver<Event>);

impl Events {
    /// Waits for the next event.
    pub fn recv(&mut self) -> Result<Event, async_broadcast::RecvError> {
        block_on(self.0.recv())
    }

    /// Waits at most `timeout` for the next event.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Event, EventRecvTimeoutError> {
        match block::wait(self.0.recv(), deadline_in(timeout)) {
            Some(Ok(e)) => Ok(e),
            Some(Err(async_broadcast::RecvError::Overflowed(n))) => {
                Err(EventRecvTimeoutError::Overflowed(n))
            }
            Some(Err(_)) => Err(EventRecvTimeoutError::Closed),
            None => Err(EventRecvTimeoutError::Timeout),
        }
    }

    /// The next event if one is waiting, without waiting.
    pub fn try_recv(&mut self) -> Result<Event, async_broadcast::TryRecvError> {
        self.0.try_recv()
    }

    /// The broadcast receiver under this.
    pub fn into_inner(self) -> async_broadcast::Receiver<Event> {
        self.0
    }
}
