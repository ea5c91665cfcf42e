//! The engine's routing of the core's events: outcomes to the senders waiting for them (or,
//! when nobody waits, to the events channel), upstream messages and receipts to the stream,
//! everything else to the events channel; and the list of upstream messages never acked for
//! the close report.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::time::Instant;

use ccs_proto::client::ClientEvent;
use ccs_proto::connection::{AckError, AckHandle};
use ccs_proto::message::MessageId;
use tracing::{debug, info, warn};

use super::Engine;
use crate::upstream::Delivery;
use crate::{AckToken, ConnectError, Event, UnackedUpstream, UpstreamItem};

/// Upstream messages and receipts remembered for the close report's `unacked_upstream`: the
/// oldest are forgotten beyond this.
const UNACKED_MEMORY: usize = 10_000;

impl Engine {
    pub(super) fn on_event(&mut self, now: Instant, ev: ClientEvent) {
        self.meter.event(now, &ev);
        match ev {
            ClientEvent::Outcome {
                ticket,
                message,
                outcome,
            } => {
                // The message id is the application's data: debug level and below only.
                debug!(message_id = %message.message_id(), %ticket, outcome = outcome.kind(), "outcome");
                // The message goes with the outcome, so that whoever finds nobody waiting
                // (here, or the future dropped with the answer in it) can publish both.
                let detached = match self.waiters.remove(&ticket) {
                    Some(reply) => reply.send(Ok((message, outcome))),
                    None => Some(Ok((message, outcome))),
                };
                if let Some(Ok((message, outcome))) = detached {
                    let _ = self
                        .events
                        .try_broadcast(Event::DetachedOutcome { message, outcome });
                }
            }
            ClientEvent::Upstream { message, ack } => {
                let (from, id) = (message.from.clone(), message.message_id.clone());
                self.hand_over(now, ack, from, id, false, |ack| UpstreamItem::Message {
                    message,
                    ack,
                });
            }
            ClientEvent::Receipt { receipt, ack } => {
                let (from, id) = (receipt.from.clone(), receipt.message_id.clone());
                self.hand_over(now, ack, from, id, true, |ack| UpstreamItem::Receipt {
                    receipt,
                    ack,
                });
            }
            ClientEvent::QueueOpen => self.queue_open = true,
            ClientEvent::ConnectionUp { id, jid } => {
                info!(conn = %id, %jid, "connection up");
                if let Some(first) = self.first.take() {
                    let _ = first.send(Ok(()));
                }
                let _ = self.events.try_broadcast(Event::ConnectionUp { id, jid });
            }
            ClientEvent::FirstConnectFailed { error, permanent } => {
                warn!(%error, permanent, "giving up on the first connection");
                if let Some(first) = self.first.take() {
                    let _ = first.send(Err(ConnectError::from_first(&error)));
                }
            }
            ClientEvent::ConnectionDown {
                id,
                reason,
                will_retry_in,
            } => {
                info!(conn = %id, reason = ?reason, retry_in = ?will_retry_in, "connection down");
                let _ = self.events.try_broadcast(Event::ConnectionDown {
                    id,
                    reason,
                    will_retry_in,
                });
            }
            ClientEvent::AuthFailed {
                id,
                condition,
                text,
                consecutive_failures,
            } => {
                warn!(conn = %id, %condition, ?text, "authentication failed: check the sender id and server key");
                let _ = self.events.try_broadcast(Event::AuthFailed {
                    id,
                    condition,
                    consecutive_failures,
                });
            }
            ClientEvent::Closed { report } => {
                // Reported once every socket has closed (see `finish`).
                self.closed = Some(report);
            }
            other => {
                debug!(event = ?other, "client event");
                let _ = self.events.try_broadcast(Event::Core(Box::new(other)));
            }
        }
    }

    pub(super) fn ack(&mut self, now: Instant, handle: &AckHandle) -> Result<(), AckError> {
        self.core.ack(now, handle)?;
        self.unacked.remove(handle.to(), handle.message_id());
        Ok(())
    }

    /// Hands an upstream message or receipt to the stream, or, when that cannot be done,
    /// acks it as discarded (auto mode, nobody reads) or leaves it un-acked for the server to
    /// redeliver (the stream is full; or manual mode and nobody reads).
    fn hand_over(
        &mut self,
        now: Instant,
        handle: Option<AckHandle>,
        from: String,
        id: MessageId,
        receipt: bool,
        item: impl FnOnce(AckToken) -> UpstreamItem,
    ) {
        let Some(handle) = handle else {
            // Acked by the core already: only in its auto mode, which the engine never asks
            // for. Handed over as it is, if it can be.
            if self.reader_present() && self.stream_has_room() {
                self.deliver(Delivery {
                    item: item(AckToken::auto(id)),
                    auto_ack: None,
                });
            }
            return;
        };
        self.unacked.insert(UnackedUpstream {
            message_id: id,
            from,
            receipt,
        });
        if !self.reader_present() {
            if self.upstream.auto && self.ack(now, &handle).is_ok() {
                self.stats.upstream_discarded += 1;
                debug!(message_id = %handle.message_id(), "upstream message discarded: nobody reads the stream");
            } else {
                self.stats.upstream_deferred += 1;
                debug!(message_id = %handle.message_id(), "upstream message left un-acked: nobody reads the stream");
                // Nobody will ack it: a close must not wait for it.
                self.core.release(now, &handle);
            }
            return;
        }
        if !self.stream_has_room() {
            self.stats.upstream_deferred += 1;
            debug!(message_id = %handle.message_id(), "upstream stream full: left un-acked for redelivery");
            self.core.release(now, &handle);
            return;
        }
        let guard = self.upstream.tokens.issue(&handle);
        let delivery = if self.upstream.auto {
            Delivery {
                item: item(AckToken::auto(handle.message_id().clone())),
                auto_ack: Some((handle, guard)),
            }
        } else {
            let token = AckToken::manual(handle, self.control_tx.clone(), guard);
            Delivery {
                item: item(token),
                auto_ack: None,
            }
        };
        if !self.deliver(delivery) {
            self.stats.upstream_deferred += 1;
        }
    }

    /// Fewer items than the stream's capacity are outstanding (in it, or taken in auto-ack
    /// mode and not yet acked).
    fn stream_has_room(&self) -> bool {
        self.upstream.shared.outstanding.load(Ordering::Acquire) < self.upstream.capacity
    }

    /// Puts an item in the stream (checked for room first). Never full: fewer than its
    /// capacity are outstanding. `false` if the stream was dropped just now: the item goes
    /// with it, un-acked (its token comes back unused and the server redelivers it).
    fn deliver(&mut self, delivery: Delivery) -> bool {
        let outstanding = &self.upstream.shared.outstanding;
        outstanding.fetch_add(1, Ordering::AcqRel);
        if self.upstream.tx.try_send(delivery).is_err() {
            outstanding.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Whether someone may read the stream: it was taken and is not dropped.
    fn reader_present(&self) -> bool {
        self.upstream.shared.taken.load(Ordering::Acquire) && !self.upstream.tx.is_closed()
    }
}

/// Upstream messages and receipts received and not acked (yet), in arrival order, for the
/// close report. Keyed by `(from, message_id)`, so that the ack of a redelivered copy
/// settles the original.
#[derive(Debug, Default)]
pub(super) struct Unacked {
    by_key: HashMap<(String, MessageId), u64>,
    order: BTreeMap<u64, UnackedUpstream>,
    next: u64,
}

impl Unacked {
    fn insert(&mut self, u: UnackedUpstream) {
        let key = (u.from.clone(), u.message_id.clone());
        if self.by_key.contains_key(&key) {
            return;
        }
        self.next += 1;
        self.by_key.insert(key, self.next);
        self.order.insert(self.next, u);
        if self.order.len() > UNACKED_MEMORY
            && let Some((_, old)) = self.order.pop_first()
        {
            self.by_key.remove(&(old.from, old.message_id));
        }
    }

    fn remove(&mut self, from: &str, id: &MessageId) {
        if let Some(seq) = self.by_key.remove(&(from.to_owned(), id.clone())) {
            self.order.remove(&seq);
        }
    }

    pub(super) fn list(&self) -> Vec<UnackedUpstream> {
        self.order.values().cloned().collect()
    }
}
