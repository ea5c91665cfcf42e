//! [`Handle`]: the application's side of a client, shared by every adapter. Its waiting
//! methods are `async fn`s with no runtime in them: the async adapters expose them as they
//! are, the blocking adapter runs them with [`crate::block::wait`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use ccs_proto::client::{Outcome, SendErrorKind};
use ccs_proto::message::Downstream;
use event_listener::Event as Notify;
use futures_channel::oneshot;

use crate::batch::{BatchShared, BatchSlot, PendingBatch};
use crate::control::Command;
use crate::link::Inbox;
use crate::sync::lock;
use crate::types::Answer;
use crate::upstream::{StreamShared, UpstreamStream};
use crate::{Event, Report, SendError, Stats};

/// Which queue of the core a message goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    Normal,
    Priority,
}

/// Where the engine answers a queued message.
#[derive(Debug)]
pub(crate) enum Reply {
    /// A message sent on its own: a one-shot to its [`PendingOutcome`].
    One(oneshot::Sender<Answer>),
    /// A message of a batch: its place in the batch's outcomes.
    Batch(BatchSlot),
}

impl Reply {
    /// Answers; gives the answer back if nobody waits for it any more (the engine then
    /// publishes it as an event).
    pub(crate) fn send(self, answer: Answer) -> Option<Answer> {
        match self {
            Self::One(tx) => tx.send(answer).err(),
            Self::Batch(slot) => slot.send(answer),
        }
    }
}

/// One message for the engine, with where to answer it.
pub(crate) struct Queued {
    /// Boxed on the caller's thread: from here to its outcome it moves as a pointer.
    pub(crate) message: Box<Downstream>,
    pub(crate) reply: Reply,
    pub(crate) lane: Lane,
}

/// What the submit channel carries: one message, or many under one item (and one wake-up).
/// Every message in it holds a place in the queue count, so the channel (`max_queue` items)
/// is never full for a sender that reserved its places.
pub(crate) enum Submit {
    One(Queued),
    Batch {
        /// Messages `first..first + messages.len()` of the batch.
        #[expect(
            clippy::vec_box,
            reason = "boxed on the caller's thread; each box moves on to its outcome"
        )]
        messages: Vec<Box<Downstream>>,
        first: usize,
        batch: Arc<BatchShared>,
        lane: Lane,
    },
}

impl Submit {
    /// The messages in it, each with where to answer it.
    pub(crate) fn into_queued(self) -> QueuedIter {
        match self {
            Self::One(q) => QueuedIter::One(Some(q)),
            Self::Batch {
                messages,
                first,
                batch,
                lane,
            } => QueuedIter::Batch {
                messages: messages.into_iter(),
                next: first,
                batch,
                lane,
            },
        }
    }

    /// How many messages it holds.
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::One(_) => 1,
            Self::Batch { messages, .. } => messages.len(),
        }
    }
}

/// The messages of a [`Submit`], in order, each with where to answer it (a plain iterator:
/// the engine takes every message through it).
pub(crate) enum QueuedIter {
    One(Option<Queued>),
    Batch {
        messages: std::vec::IntoIter<Box<Downstream>>,
        /// The batch index of the next message.
        next: usize,
        batch: Arc<BatchShared>,
        lane: Lane,
    },
}

impl Iterator for QueuedIter {
    type Item = Queued;

    fn next(&mut self) -> Option<Queued> {
        match self {
            Self::One(q) => q.take(),
            Self::Batch {
                messages,
                next,
                batch,
                lane,
            } => {
                let message = messages.next()?;
                let reply = Reply::Batch(BatchShared::slot(batch, *next));
                *next += 1;
                Some(Queued {
                    message,
                    reply,
                    lane: *lane,
                })
            }
        }
    }
}

/// What the handles and the engine share.
#[derive(Debug, Default)]
pub(crate) struct HandleShared {
    /// `close` was called (or every handle dropped): new messages are refused.
    pub(crate) closing: AtomicBool,
    /// Messages in the core's queue (not yet on the wire), held by the engine for queue
    /// room, or in the submit channel: what `max_queue` limits. Handles add theirs before
    /// submitting; the engine reconciles it with the core's own count after every turn.
    pub(crate) load: AtomicUsize,
    /// Notified when `load` went down or the client is closing.
    pub(crate) room: Notify,
}

impl HandleShared {
    /// Takes up to `want` places in the queue; how many it took (0 if it is full).
    fn reserve_up_to(&self, max_queue: usize, want: usize) -> usize {
        match self
            .load
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max_queue).then(|| n + want.min(max_queue - n))
            }) {
            Ok(n) => want.min(max_queue - n),
            Err(_) => 0,
        }
    }

    fn unreserve(&self, places: usize) {
        self.load.fetch_sub(places, Ordering::AcqRel);
        self.room.notify(usize::MAX);
    }
}

/// The application's side of a client. Cheap to clone; `Send` and `Sync`. When the last
/// clone is dropped without `close`, the client finishes what was queued (for at most 10 s)
/// and stops.
#[derive(Clone)]
pub struct Handle {
    inner: Arc<Inner>,
}

struct Inner {
    submit: Inbox<Submit>,
    control: Inbox<Command>,
    shared: Arc<HandleShared>,
    upstream: Mutex<Option<UpstreamStream>>,
    stream: Arc<StreamShared>,
    events: async_broadcast::Sender<Event>,
    events_rx: async_broadcast::InactiveReceiver<Event>,
    max_queue: usize,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field(
                "closing",
                &self.inner.shared.closing.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

impl Handle {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        submit: Inbox<Submit>,
        control: Inbox<Command>,
        shared: Arc<HandleShared>,
        upstream: UpstreamStream,
        stream: Arc<StreamShared>,
        events: async_broadcast::Sender<Event>,
        events_rx: async_broadcast::InactiveReceiver<Event>,
        max_queue: usize,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                submit,
                control,
                shared,
                upstream: Mutex::new(Some(upstream)),
                stream,
                events,
                events_rx,
                max_queue,
            }),
        }
    }

    /// Queues a message (waiting for queue room if needed) and waits for its one outcome.
    ///
    /// Cancel-safe: dropping the future while it waits for room sends nothing; dropping it
    /// after the message was queued neither loses nor duplicates the message: it is still
    /// delivered, and its outcome is published as [`Event::DetachedOutcome`].
    pub async fn send(&self, message: Downstream) -> Result<Outcome, SendError> {
        self.enqueue(message, false).await?.await
    }

    /// As [`send`](Self::send), in the priority lane: the message goes out before every
    /// message of the normal lane that is not yet on the wire (for replies that must not wait
    /// behind a bulk backlog). Both lanes share the queue limit.
    pub async fn send_priority(&self, message: Downstream) -> Result<Outcome, SendError> {
        self.enqueue(message, true).await?.await
    }

    /// Queues a message, waiting for queue room if needed, and returns as soon as it is
    /// queued with the future of its outcome (for pipelining many messages from one task).
    /// `priority` puts it in the priority lane (see [`send_priority`](Self::send_priority)).
    pub async fn enqueue(
        &self,
        message: Downstream,
        priority: bool,
    ) -> Result<PendingOutcome, SendError> {
        match self.reserve().await {
            Some(place) => place.send(message, priority),
            None => Err(refused(SendErrorKind::Closing, message)),
        }
    }

    /// Waits for a place in the queue without giving up the message yet: `None` once the
    /// client is closing. Dropping the future, or the [`QueuePlace`], gives the place back;
    /// so a caller that stops waiting (at a deadline of its own) still has its message.
    pub async fn reserve(&self) -> Option<QueuePlace> {
        self.reserve_many(1).await.map(|_| QueuePlace {
            handle: self.clone(),
            held: true,
        })
    }

    /// Puts a message whose place is reserved into the submit channel.
    fn submit_reserved(
        &self,
        message: Box<Downstream>,
        lane: Lane,
    ) -> Result<PendingOutcome, SendError> {
        let (reply, rx) = oneshot::channel();
        let submit = Submit::One(Queued {
            message,
            reply: Reply::One(reply),
            lane,
        });
        // Never full for a reserved place: the channel holds `max_queue` items, and it holds
        // only messages counted in the load, which is at most `max_queue` with this one.
        match self.inner.submit.try_send(submit) {
            Ok(()) => Ok(self.pending(rx)),
            Err(e) => {
                self.inner.shared.unreserve(1);
                let message = e.into_inner().into_queued().next().map(|q| q.message);
                Err(self.not_taken(message))
            }
        }
    }

    /// Why the engine did not take a message: the client is closing, or gone.
    fn not_taken(&self, message: Option<Box<Downstream>>) -> SendError {
        let kind = if self.inner.shared.closing.load(Ordering::Acquire) {
            SendErrorKind::Closing
        } else {
            SendErrorKind::Closed
        };
        SendError { kind, message }
    }

    /// Queues many messages under one command and one wake-up of the engine per stretch of
    /// free queue room, and returns once all are queued (or refused), with the future of
    /// their outcomes in the same order. `priority` puts them all in the priority lane.
    ///
    /// A batch may hold more messages than the queue: it waits for room as [`enqueue`]
    /// does, and takes whatever room there is, a stretch at a time. The batch's future is
    /// woken once, when its last outcome has come, not once per message; so the batch is
    /// the unit of waiting: many small batches in flight keep the wire busy.
    ///
    /// A message refused before it reached the client (the client began closing meanwhile,
    /// or has stopped) has its `Err` in its place, with the message back. Dropping this
    /// future while it waits for room queues none of the messages it has not queued yet;
    /// those already queued are delivered, and their outcomes published as
    /// [`Event::DetachedOutcome`].
    ///
    /// [`enqueue`]: Self::enqueue
    pub async fn enqueue_batch(&self, messages: Vec<Downstream>, priority: bool) -> PendingBatch {
        let lane = if priority {
            Lane::Priority
        } else {
            Lane::Normal
        };
        let batch = PendingBatch::new(messages.len(), self.inner.events.clone());
        let mut rest = messages.into_iter();
        let mut next = 0;
        while rest.len() > 0 {
            let Some(places) = self.reserve_many(rest.len()).await else {
                for (i, message) in rest.by_ref().enumerate() {
                    batch.answer(next + i, Err(refused(SendErrorKind::Closing, message)));
                }
                break;
            };
            let messages = if places == rest.len() {
                // All the rest at once, each boxed here, on the caller's thread (the boxes
                // reuse the batch's own allocation for their pointers: in-place collect).
                std::mem::take(&mut rest).map(Box::new).collect()
            } else {
                rest.by_ref().take(places).map(Box::new).collect()
            };
            let submit = Submit::Batch {
                messages,
                first: next,
                batch: Arc::clone(batch.shared()),
                lane,
            };
            // Never full: see `submit_reserved`.
            if let Err(e) = self.inner.submit.try_send(submit) {
                self.inner.shared.unreserve(places);
                for q in e.into_inner().into_queued() {
                    let _ = q.reply.send(Err(self.not_taken(Some(q.message))));
                }
            }
            next += places;
        }
        batch
    }

    /// Queues many messages as [`enqueue_batch`](Self::enqueue_batch) does and waits for
    /// all their outcomes, returned in the order of the messages.
    pub async fn send_batch(&self, messages: Vec<Downstream>) -> Vec<Result<Outcome, SendError>> {
        self.enqueue_batch(messages, false).await.await
    }

    /// Waits for at least one place in the queue and takes up to `want`; `None` once the
    /// client is closing.
    async fn reserve_many(&self, want: usize) -> Option<usize> {
        let shared = &self.inner.shared;
        // The common case, room at once, takes no listener. Every wait is on a listener made
        // before the last look, so room made between that look and the wait is not missed.
        let mut listener = None;
        loop {
            if shared.closing.load(Ordering::Acquire) {
                return None;
            }
            let places = shared.reserve_up_to(self.inner.max_queue, want);
            if places > 0 {
                return Some(places);
            }
            match listener.take() {
                None => listener = Some(shared.room.listen()),
                Some(l) => l.await,
            }
        }
    }

    /// Queues a message without waiting: its outcome's future, or the message back when the
    /// queue is full or the client is closing.
    pub fn try_send(&self, message: Downstream) -> Result<PendingOutcome, SendError> {
        self.try_enqueue(message, Lane::Normal)
    }

    /// As [`try_send`](Self::try_send), in the priority lane (see
    /// [`send_priority`](Self::send_priority)).
    pub fn try_send_priority(&self, message: Downstream) -> Result<PendingOutcome, SendError> {
        self.try_enqueue(message, Lane::Priority)
    }

    fn try_enqueue(&self, message: Downstream, lane: Lane) -> Result<PendingOutcome, SendError> {
        if self.inner.shared.closing.load(Ordering::Acquire) {
            return Err(refused(SendErrorKind::Closing, message));
        }
        if self.inner.shared.reserve_up_to(self.inner.max_queue, 1) == 0 {
            let full = SendErrorKind::QueueFull {
                limit: self.inner.max_queue,
            };
            return Err(refused(full, message));
        }
        self.submit_reserved(Box::new(message), lane)
    }

    fn pending(&self, rx: oneshot::Receiver<Answer>) -> PendingOutcome {
        PendingOutcome {
            rx,
            events: self.inner.events.clone(),
        }
    }

    /// The upstream messages and receipts. The first call takes the stream; later calls get
    /// `None`.
    ///
    /// In auto-ack mode an item is acked when it is taken from the stream; until the stream
    /// is taken, and once it is dropped, upstream messages are acked on arrival and
    /// discarded ([`Stats::upstream_discarded`] counts them). In manual-ack mode they are
    /// left un-acked instead ([`Stats::upstream_deferred`]), and the server redelivers them
    /// on a later connection.
    pub fn upstream(&self) -> Option<UpstreamStream> {
        let stream = lock(&self.inner.upstream).take();
        if stream.is_some() {
            self.inner.stream.taken.store(true, Ordering::Release);
        }
        stream
    }

    /// Monitoring events from now on. A receiver that falls behind by more than the channel
    /// capacity misses the oldest events (it is told how many: `Overflowed`).
    pub fn events(&self) -> crate::EventReceiver {
        self.inner.events_rx.activate_cloned()
    }

    /// The counters; `None` once the client has stopped.
    pub async fn stats(&self) -> Option<Stats> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .control
            .send(Command::Stats { reply })
            .await
            .ok()?;
        rx.await.ok()
    }

    /// Stops taking work, sends what is queued while connections live, waits for answers
    /// until `deadline` from now, closes every connection, and reports what was never
    /// answered and which upstream messages were never acked.
    ///
    /// Messages that were still waiting for queue room when `close` was called get their
    /// message back with [`SendErrorKind::Closing`]. Acks of tokens already handed out (and
    /// items already in the stream, which auto-ack mode acks when they are taken) still go
    /// through until the deadline. Returns once every socket is closed.
    pub async fn close(&self, deadline: Duration) -> Report {
        self.inner.shared.closing.store(true, Ordering::Release);
        let (reply, rx) = oneshot::channel();
        if self
            .inner
            .control
            .send(Command::Close { deadline, reply })
            .await
            .is_err()
        {
            return Report::default();
        }
        rx.await.unwrap_or_default()
    }

    /// Whether `close` was called or the client has stopped.
    pub fn is_closing(&self) -> bool {
        self.inner.shared.closing.load(Ordering::Acquire)
    }
}

/// A place in the client's queue, from [`Handle::reserve`]: [`QueuePlace::send`] fills it
/// without waiting; dropping it gives it back.
#[derive(Debug)]
pub struct QueuePlace {
    handle: Handle,
    held: bool,
}

impl QueuePlace {
    /// Queues `message` in this place (`priority`: in the priority lane) and returns the
    /// future of its outcome. Refused, with the message back, only if the client began
    /// closing meanwhile.
    pub fn send(
        mut self,
        message: Downstream,
        priority: bool,
    ) -> Result<PendingOutcome, SendError> {
        self.held = false;
        let lane = if priority {
            Lane::Priority
        } else {
            Lane::Normal
        };
        self.handle.submit_reserved(Box::new(message), lane)
    }
}

impl Drop for QueuePlace {
    fn drop(&mut self) {
        if self.held {
            self.handle.inner.shared.unreserve(1);
        }
    }
}

fn refused(kind: SendErrorKind, message: Downstream) -> SendError {
    SendError {
        kind,
        message: Some(Box::new(message)),
    }
}

/// The outcome of a queued message. Dropping it before it resolves loses nothing: the
/// outcome is published as [`Event::DetachedOutcome`] (also when it had already arrived).
#[derive(Debug)]
pub struct PendingOutcome {
    rx: oneshot::Receiver<Answer>,
    events: async_broadcast::Sender<Event>,
}

impl Future for PendingOutcome {
    type Output = Result<Outcome, SendError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|r| match r {
            Ok(Ok((_, outcome))) => Ok(outcome),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SendError::closed(None)),
        })
    }
}

impl Drop for PendingOutcome {
    fn drop(&mut self) {
        // After the close the engine can no longer answer here (it publishes the outcome
        // itself); an answer that came before is taken and published instead of lost.
        self.rx.close();
        if let Ok(Some(Ok((message, outcome)))) = self.rx.try_recv() {
            let _ = self
                .events
                .try_broadcast(Event::DetachedOutcome { message, outcome });
        }
    }
}
