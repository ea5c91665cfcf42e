//! [`PendingBatch`]: the outcomes of many messages queued together
//! ([`Handle::enqueue_batch`](crate::Handle::enqueue_batch)), collected in one place that the
//! engine fills and wakes once, when the last one has come.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use ccs_proto::client::Outcome;

use crate::sync::{lock, register};
use crate::types::Answer;
use crate::{Event, SendError};

/// The outcomes of a batch of messages, in the order the messages were given: a future of
/// them all, from [`Handle::enqueue_batch`](crate::Handle::enqueue_batch).
///
/// The engine wakes it once, when the last outcome has come (not once per message). Dropping
/// it before then loses nothing: the messages are still delivered, and every outcome not yet
/// taken (also those that had already come) is published as [`Event::DetachedOutcome`].
pub struct PendingBatch {
    shared: Arc<BatchShared>,
    events: async_broadcast::Sender<Event>,
    len: usize,
}

impl fmt::Debug for PendingBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingBatch")
            .field("len", &self.len)
            .field("missing", &lock(&self.shared.state).missing)
            .finish()
    }
}

impl PendingBatch {
    pub(crate) fn new(len: usize, events: async_broadcast::Sender<Event>) -> Self {
        let state = BatchState {
            answers: std::iter::repeat_with(|| None).take(len).collect(),
            missing: len,
            waker: None,
            detached: false,
        };
        Self {
            shared: Arc::new(BatchShared {
                state: Mutex::new(state),
            }),
            events,
            len,
        }
    }

    /// How many messages the batch holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch holds no message (its outcomes are ready at once).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many outcomes have not come yet.
    pub fn missing(&self) -> usize {
        lock(&self.shared.state).missing
    }

    /// What the engine fills.
    pub(crate) fn shared(&self) -> &Arc<BatchShared> {
        &self.shared
    }

    /// Answers message `index` at once (it was refused before it reached the engine).
    pub(crate) fn answer(&self, index: usize, answer: Answer) {
        // The batch is not detached while its future is here: nothing is given back.
        let _ = BatchShared::slot(&self.shared, index).send(answer);
    }
}

impl Future for PendingBatch {
    type Output = Vec<Result<Outcome, SendError>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut st = lock(&self.shared.state);
        if st.missing > 0 {
            register(&mut st.waker, cx.waker());
            return Poll::Pending;
        }
        let answers = std::mem::take(&mut st.answers);
        drop(st);
        // The messages are dropped here, on the application's side (where they were made).
        Poll::Ready(
            answers
                .into_iter()
                .map(|a| match a {
                    Some(Ok((_, outcome))) => Ok(outcome),
                    Some(Err(e)) => Err(e),
                    // Not reachable: every slot is filled before `missing` reaches zero.
                    None => Err(SendError::closed(None)),
                })
                .collect(),
        )
    }
}

impl Drop for PendingBatch {
    fn drop(&mut self) {
        // From here on the engine publishes each outcome itself; those already here are
        // published now.
        let answers = {
            let mut st = lock(&self.shared.state);
            st.detached = true;
            st.waker = None;
            std::mem::take(&mut st.answers)
        };
        for (message, outcome) in answers.into_iter().flatten().filter_map(Result::ok) {
            let _ = self
                .events
                .try_broadcast(Event::DetachedOutcome { message, outcome });
        }
    }
}

/// What a batch's future and the engine share.
#[derive(Debug)]
pub(crate) struct BatchShared {
    state: Mutex<BatchState>,
}

impl BatchShared {
    /// Where the engine answers message `index` of the batch.
    pub(crate) fn slot(this: &Arc<Self>, index: usize) -> BatchSlot {
        BatchSlot {
            shared: Arc::clone(this),
            index,
            answered: false,
        }
    }
}

#[derive(Debug)]
struct BatchState {
    /// One per message; emptied when the future takes them (or is dropped).
    answers: Vec<Option<Answer>>,
    /// Messages without an answer yet.
    missing: usize,
    waker: Option<Waker>,
    /// The future was dropped: answers go back to the engine to publish.
    detached: bool,
}

/// The engine's side of one message of a batch. Dropped unanswered (the engine stopped), it
/// answers that the client is gone, as a dropped one-shot does for a single message.
#[derive(Debug)]
pub(crate) struct BatchSlot {
    shared: Arc<BatchShared>,
    index: usize,
    answered: bool,
}

impl BatchSlot {
    /// Puts the answer in its place (waking the future if it was the last one); gives it back
    /// if the batch's future was dropped.
    pub(crate) fn send(mut self, answer: Answer) -> Option<Answer> {
        self.answered = true;
        self.fill(answer)
    }

    fn fill(&self, answer: Answer) -> Option<Answer> {
        let mut st = lock(&self.shared.state);
        if st.detached {
            return Some(answer);
        }
        if let Some(place) = st.answers.get_mut(self.index) {
            *place = Some(answer);
        }
        st.missing = st.missing.saturating_sub(1);
        let waker = if st.missing == 0 {
            st.waker.take()
        } else {
            None
        };
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
        None
    }
}

impl Drop for BatchSlot {
    fn drop(&mut self) {
        if !self.answered {
            let _ = self.fill(Err(SendError::closed(None)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block;
    use ccs_proto::message::Downstream;

    fn acked(id: &str) -> Answer {
        let message = Downstream::builder("token", id).unwrap().build();
        let outcome = Outcome::Acked {
            canonical_registration_id: None,
        };
        Ok((Box::new(message), outcome))
    }

    #[test]
    fn answers_come_back_in_the_order_of_the_messages_once_all_are_in() {
        let (events, _rx) = async_broadcast::broadcast(4);
        let mut batch = PendingBatch::new(3, events);
        let slots: Vec<_> = (0..3)
            .map(|i| BatchShared::slot(batch.shared(), i))
            .collect();
        let mut slots = slots.into_iter();
        let (s0, s1, s2) = (slots.next(), slots.next(), slots.next());
        assert!(s2.unwrap().send(acked("m-2")).is_none());
        assert!(s0.unwrap().send(acked("m-0")).is_none());
        assert_eq!(batch.missing(), 1);
        assert!(block::wait(&mut batch, Some(std::time::Instant::now())).is_none());
        // Dropped unanswered (the engine stopped): a `Closed` error in its place.
        drop(s1);
        let outcomes = block::on(&mut batch);
        assert_eq!(outcomes.len(), 3);
        assert!(outcomes[0].as_ref().unwrap().is_acked());
        let closed = outcomes[1].as_ref().unwrap_err();
        assert_eq!(closed.kind, ccs_proto::client::SendErrorKind::Closed);
        assert!(outcomes[2].as_ref().unwrap().is_acked());
        assert!(block::on(&mut batch).is_empty(), "spent");
    }

    #[test]
    fn a_dropped_batch_publishes_what_came_and_gives_back_what_comes_later() {
        let (events, mut rx) = async_broadcast::broadcast(4);
        let batch = PendingBatch::new(2, events);
        let first = BatchShared::slot(batch.shared(), 0);
        let second = BatchShared::slot(batch.shared(), 1);
        assert!(first.send(acked("m-0")).is_none());
        drop(batch);
        match rx.try_recv() {
            Ok(Event::DetachedOutcome { message, .. }) => {
                assert_eq!(message.message_id().as_str(), "m-0");
            }
            other => panic!("{other:?}"),
        }
        let back = second.send(acked("m-1")).expect("given back");
        assert_eq!(back.unwrap().0.message_id().as_str(), "m-1");
    }
}
