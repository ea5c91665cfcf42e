//! Upstream messages and receipts on their way to the application: [`UpstreamStream`],
//! [`UpstreamItem`], [`AckToken`], and what the driver needs to know about them (which
//! tokens are still out, when an item is taken).
//!
//! The core always runs in manual-ack mode; in the application's auto-ack mode the stream
//! acks each item when the application takes it (see the crate docs).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use ccs_proto::connection::{AckError, AckHandle};
use ccs_proto::message::{MessageId, Receipt, Upstream};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use crate::control::{Command, TokenGuard};

/// An upstream message or receipt, from [`Client::upstream`](crate::Client::upstream).
#[derive(Debug)]
#[non_exhaustive]
pub enum UpstreamItem {
    /// A message from a device.
    Message {
        /// The message.
        message: Box<Upstream>,
        /// In manual-ack mode, the token to ack it with once it is handled; `None` in
        /// auto-ack mode, where taking it from the stream acked it.
        ack: Option<AckToken>,
    },
    /// A delivery receipt.
    Receipt {
        /// The receipt.
        receipt: Box<Receipt>,
        /// In manual-ack mode, the token to ack it with; `None` in auto-ack mode.
        ack: Option<AckToken>,
    },
}

/// Acks one upstream message or receipt (manual-ack mode). Valid while the connection it
/// arrived on lives, and during [`Client::close`](crate::Client::close) until its deadline;
/// after that the server redelivers the message and the new copy has its own token. Dropping
/// a token without acking leaves the message un-acked: the server redelivers it on a later
/// connection.
#[derive(Debug)]
pub struct AckToken {
    handle: AckHandle,
    control: mpsc::Sender<Command>,
    guard: TokenGuard,
}

impl AckToken {
    pub(crate) fn new(
        handle: AckHandle,
        control: mpsc::Sender<Command>,
        guard: TokenGuard,
    ) -> Self {
        Self {
            handle,
            control,
            guard,
        }
    }

    /// The id of the message this token acks.
    pub fn message_id(&self) -> &MessageId {
        self.handle.message_id()
    }

    /// Acks the message on its connection. Waits while the client's command queue is full.
    /// Dropping the future before it completes may leave the message un-acked (as dropping
    /// the token does).
    pub async fn ack(self) -> Result<(), AckError> {
        let Self {
            handle,
            control,
            guard,
        } = self;
        let (reply, rx) = oneshot::channel();
        let command = Command::Ack {
            handle,
            guard,
            reply,
        };
        if control.send(command).await.is_err() {
            return Err(AckError::ConnectionGone);
        }
        rx.await.unwrap_or(Err(AckError::ConnectionGone))
    }
}

/// The stream of upstream messages and receipts, from
/// [`Client::upstream`](crate::Client::upstream). In auto-ack mode, taking an item from it
/// ([`UpstreamStream::recv`], or polling it as a [`Stream`](futures_core::Stream)) acks it.
/// It ends once the client has closed; items still buffered then are not handed over (they
/// were never acked: [`Report::unacked_upstream`](crate::Report::unacked_upstream) lists
/// them and the server redelivers them).
#[derive(Debug)]
pub struct UpstreamStream {
    rx: mpsc::Receiver<Delivery>,
    taken: mpsc::Sender<Taken>,
    shared: Arc<StreamShared>,
}

impl UpstreamStream {
    pub(crate) fn new(
        rx: mpsc::Receiver<Delivery>,
        taken: mpsc::Sender<Taken>,
        shared: Arc<StreamShared>,
    ) -> Self {
        Self { rx, taken, shared }
    }

    /// The next upstream message or receipt; `None` once the client has closed. Cancel-safe.
    pub async fn recv(&mut self) -> Option<UpstreamItem> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<UpstreamItem>> {
        if self.shared.finished.load(Ordering::Acquire) {
            return Poll::Ready(None);
        }
        let Some(delivery) = ready!(self.rx.poll_recv(cx)) else {
            return Poll::Ready(None);
        };
        let Delivery {
            item,
            auto_ack,
            room,
        } = delivery;
        if let Some((handle, guard)) = auto_ack {
            // Never full: every `Taken` holds one of the upstream room permits, and this
            // channel has a slot for each. Closed only once the client has stopped, when no
            // ack can be sent any more.
            let _ = self.taken.try_send(Taken {
                handle,
                guard,
                _room: room,
            });
        }
        Poll::Ready(Some(item))
    }
}

impl futures_core::Stream for UpstreamStream {
    type Item = UpstreamItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<UpstreamItem>> {
        self.poll_recv(cx)
    }
}

/// An item in the upstream channel.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) item: UpstreamItem,
    /// Auto-ack mode: the handle the stream acks with when the item is taken.
    pub(crate) auto_ack: Option<(AckHandle, TokenGuard)>,
    /// A permit of the upstream room: released once the item is taken (manual mode) or once
    /// the driver has acked it (auto mode).
    pub(crate) room: OwnedSemaphorePermit,
}

/// An item taken from the stream in auto-ack mode: the driver acks it.
#[derive(Debug)]
pub(crate) struct Taken {
    pub(crate) handle: AckHandle,
    pub(crate) guard: TokenGuard,
    _room: OwnedSemaphorePermit,
}

/// What the stream and the driver share.
#[derive(Debug, Default)]
pub(crate) struct StreamShared {
    /// [`Client::upstream`](crate::Client::upstream) was called: someone may read.
    pub(crate) taken: AtomicBool,
    /// The client has stopped: the stream ends.
    pub(crate) finished: AtomicBool,
}
