//! [`async_client_methods!`](crate::async_client_methods): the application's methods of an
//! async adapter's `Client`, written once. Each async adapter's `Client` is a `handle:
//! ccs_net::Handle` plus its own `connect`; the rest is this.

/// Expands, inside `impl Client { ... }` of a type with a field `handle: ccs_net::Handle`,
/// to the application's async API: `send`, `send_priority`, `enqueue`, `enqueue_batch`,
/// `send_batch`, `reserve`, `try_send`, `try_send_priority`, `upstream`, `events`, `stats`,
/// `close`, `handle`.
#[macro_export]
macro_rules! async_client_methods {
    () => {
        /// Queues a message (waiting for queue room if needed) and waits for its one outcome.
        ///
        /// Cancel-safe: dropping the future while it waits for room sends nothing; dropping
        /// it after the message was queued neither loses nor duplicates the message: it is
        /// still delivered, and its outcome is published as
        /// [`Event::DetachedOutcome`]($crate::Event::DetachedOutcome).
        pub async fn send(
            &self,
            message: $crate::ccs_proto::message::Downstream,
        ) -> ::std::result::Result<$crate::ccs_proto::client::Outcome, $crate::SendError> {
            self.handle.send(message).await
        }

        /// As [`send`](Self::send), in the priority lane: ahead of every normal message not
        /// yet on the wire (a reply that must not wait behind a bulk backlog).
        pub async fn send_priority(
            &self,
            message: $crate::ccs_proto::message::Downstream,
        ) -> ::std::result::Result<$crate::ccs_proto::client::Outcome, $crate::SendError> {
            self.handle.send_priority(message).await
        }

        /// Queues a message, waiting for queue room if needed, and returns once it is
        /// queued, with the future of its outcome: many messages in flight from one task.
        pub async fn enqueue(
            &self,
            message: $crate::ccs_proto::message::Downstream,
            priority: bool,
        ) -> ::std::result::Result<$crate::PendingOutcome, $crate::SendError> {
            self.handle.enqueue(message, priority).await
        }

        /// Queues many messages under one command and one wake-up per stretch of free
        /// queue room, and returns once all are queued, with the future of their outcomes
        /// in the same order (woken once, when the last one has come). See
        /// [`Handle::enqueue_batch`]($crate::Handle::enqueue_batch).
        pub async fn enqueue_batch(
            &self,
            messages: ::std::vec::Vec<$crate::ccs_proto::message::Downstream>,
            priority: bool,
        ) -> $crate::PendingBatch {
            self.handle.enqueue_batch(messages, priority).await
        }

        /// Queues many messages as [`enqueue_batch`](Self::enqueue_batch) does and waits
        /// for all their outcomes, in the order of the messages.
        pub async fn send_batch(
            &self,
            messages: ::std::vec::Vec<$crate::ccs_proto::message::Downstream>,
        ) -> ::std::vec::Vec<
            ::std::result::Result<$crate::ccs_proto::client::Outcome, $crate::SendError>,
        > {
            self.handle.send_batch(messages).await
        }

        /// Waits for a place in the queue without giving up the message yet (`None` once
        /// the client is closing); see [`Handle::reserve`]($crate::Handle::reserve).
        pub async fn reserve(&self) -> ::std::option::Option<$crate::QueuePlace> {
            self.handle.reserve().await
        }

        /// Queues a message without waiting. Returns a future of its outcome, or the
        /// message back when the queue is full or the client is closing.
        pub fn try_send(
            &self,
            message: $crate::ccs_proto::message::Downstream,
        ) -> ::std::result::Result<$crate::PendingOutcome, $crate::SendError> {
            self.handle.try_send(message)
        }

        /// As [`try_send`](Self::try_send), in the priority lane.
        pub fn try_send_priority(
            &self,
            message: $crate::ccs_proto::message::Downstream,
        ) -> ::std::result::Result<$crate::PendingOutcome, $crate::SendError> {
            self.handle.try_send_priority(message)
        }

        /// The upstream messages and receipts. The first call takes the stream; later calls
        /// get `None`. See [`Handle::upstream`]($crate::Handle::upstream) for what happens
        /// when nobody reads it.
        pub fn upstream(&self) -> ::std::option::Option<$crate::UpstreamStream> {
            self.handle.upstream()
        }

        /// Monitoring events from now on. A receiver that falls behind by more than
        /// [`Config::event_capacity`]($crate::Config::event_capacity) misses the oldest
        /// events (it is told how many); the channel ends after
        /// [`Event::Closed`]($crate::Event::Closed).
        pub fn events(&self) -> $crate::EventReceiver {
            self.handle.events()
        }

        /// The counters; `None` once the client has stopped.
        pub async fn stats(&self) -> ::std::option::Option<$crate::Stats> {
            self.handle.stats().await
        }

        /// Stops taking work, sends what is queued while connections live, waits for
        /// answers until `deadline` from now, closes every connection, and reports what was
        /// never answered and which upstream messages were never acked. See
        /// [`Handle::close`]($crate::Handle::close).
        pub async fn close(&self, deadline: ::std::time::Duration) -> $crate::Report {
            self.handle.close(deadline).await
        }

        /// The runtime-neutral handle under this client.
        pub fn handle(&self) -> &$crate::Handle {
            &self.handle
        }
    };
}
