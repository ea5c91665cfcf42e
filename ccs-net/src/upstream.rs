//! Upstream messages and receipts on their way to the application: [`UpstreamStream`],
//! [`UpstreamItem`], [`AckToken`], and what the engine needs to know about them (which
//! tokens are still out, when an item is taken).
//!
//! The core always runs in manual-ack mode; in the application's auto-ack mode the stream
//! acks each item when the application takes it (see the crate docs).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use ccs_proto::connection::{AckError, AckHandle};
use ccs_proto::message::{MessageId, Receipt, Upstream};
use futures_channel::oneshot;
use futures_core::Stream;

use crate::control::{Command, TokenGuard};
use crate::link::Inbox;

/// An upstream message or receipt, from the client's upstream stream. `A` is the adapter's
/// ack token ([`AckToken`] for the async adapters).
#[derive(Debug)]
#[non_exhaustive]
pub enum UpstreamItem<A = AckToken> {
    /// A message from a device.
    Message {
        /// The message.
        message: Box<Upstream>,
        /// The token to ack it with once it is handled (a no-op in auto-ack mode, where
        /// taking it from the stream acked it).
        ack: A,
    },
    /// A delivery receipt.
    Receipt {
        /// The receipt.
        receipt: Box<Receipt>,
        /// The token to ack it with (a no-op in auto-ack mode).
        ack: A,
    },
}

impl<A> UpstreamItem<A> {
    /// The message's id (a receipt's keeps its `dr2:` prefix).
    pub fn message_id(&self) -> &MessageId {
        match self {
            Self::Message { message, .. } => &message.message_id,
            Self::Receipt { receipt, .. } => &receipt.message_id,
        }
    }

    /// Who sent it: the device's registration token, or the server for a receipt.
    pub fn from(&self) -> &str {
        match self {
            Self::Message { message, .. } => &message.from,
            Self::Receipt { receipt, .. } => &receipt.from,
        }
    }

    /// The same item with its token turned into another type (what an adapter does to give
    /// its own token type).
    pub fn map_ack<B>(self, f: impl FnOnce(A) -> B) -> UpstreamItem<B> {
        match self {
            Self::Message { message, ack } => UpstreamItem::Message {
                message,
                ack: f(ack),
            },
            Self::Receipt { receipt, ack } => UpstreamItem::Receipt {
                receipt,
                ack: f(ack),
            },
        }
    }

    /// Splits off the token.
    pub fn into_ack(self) -> (UpstreamItem<()>, A) {
        match self {
            Self::Message { message, ack } => (UpstreamItem::Message { message, ack: () }, ack),
            Self::Receipt { receipt, ack } => (UpstreamItem::Receipt { receipt, ack: () }, ack),
        }
    }
}

/// Acks one upstream message or receipt.
///
/// In manual-ack mode it is valid while the connection the message arrived on lives, and
/// during `Client::close` until its deadline; after that the server redelivers the message
/// and the new copy has its own token. Dropping a token without acking leaves the message
/// un-acked: the server redelivers it on a later connection. In auto-ack mode the item was
/// acked when it was taken from the stream, and [`AckToken::ack`] does nothing: a handler
/// written for manual mode works unchanged in auto mode.
#[derive(Debug)]
pub struct AckToken(TokenState);

#[derive(Debug)]
enum TokenState {
    Auto(MessageId),
    Manual {
        handle: AckHandle,
        control: Inbox<Command>,
        guard: TokenGuard,
    },
}

impl AckToken {
    pub(crate) fn manual(handle: AckHandle, control: Inbox<Command>, guard: TokenGuard) -> Self {
        Self(TokenState::Manual {
            handle,
            control,
            guard,
        })
    }

    pub(crate) fn auto(id: MessageId) -> Self {
        Self(TokenState::Auto(id))
    }

    /// The id of the message this token acks.
    pub fn message_id(&self) -> &MessageId {
        match &self.0 {
            TokenState::Auto(id) => id,
            TokenState::Manual { handle, .. } => handle.message_id(),
        }
    }

    /// Whether acking is up to the application (manual-ack mode).
    pub fn is_manual(&self) -> bool {
        matches!(self.0, TokenState::Manual { .. })
    }

    /// Acks the message on its connection (manual-ack mode; `Ok` at once in auto-ack mode).
    /// Waits while the client's command queue is full. Dropping the future before it
    /// completes may leave the message un-acked (as dropping the token does).
    pub async fn ack(self) -> Result<(), AckError> {
        let TokenState::Manual {
            handle,
            control,
            guard,
        } = self.0
        else {
            return Ok(());
        };
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

/// The stream of upstream messages and receipts, from `Client::upstream`. In auto-ack mode,
/// taking an item from it ([`UpstreamStream::recv`], or polling it as a [`Stream`]) acks it.
/// It ends once the client has closed; items still buffered then are not handed over (they
/// were never acked: [`Report::unacked_upstream`](crate::Report::unacked_upstream) lists them
/// and the server redelivers them).
#[derive(Debug)]
pub struct UpstreamStream {
    rx: Pin<Box<async_channel::Receiver<Delivery>>>,
    taken: Inbox<Taken>,
    shared: Arc<StreamShared>,
}

impl UpstreamStream {
    pub(crate) fn new(
        rx: async_channel::Receiver<Delivery>,
        taken: Inbox<Taken>,
        shared: Arc<StreamShared>,
    ) -> Self {
        Self {
            rx: Box::pin(rx),
            taken,
            shared,
        }
    }

    /// The next upstream message or receipt; `None` once the client has closed. Cancel-safe.
    pub async fn recv(&mut self) -> Option<UpstreamItem> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next item if one is waiting, without waiting.
    pub fn try_recv(&mut self) -> Result<UpstreamItem, TryRecvError> {
        if self.shared.finished.load(Ordering::Acquire) {
            return Err(TryRecvError::Closed);
        }
        match self.rx.try_recv() {
            Ok(d) => Ok(self.take(d)),
            Err(async_channel::TryRecvError::Empty) => Err(TryRecvError::Empty),
            Err(async_channel::TryRecvError::Closed) => Err(TryRecvError::Closed),
        }
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<UpstreamItem>> {
        if self.shared.finished.load(Ordering::Acquire) {
            return Poll::Ready(None);
        }
        let Some(delivery) = ready!(self.rx.as_mut().poll_next(cx)) else {
            return Poll::Ready(None);
        };
        Poll::Ready(Some(self.take(delivery)))
    }

    fn take(&mut self, delivery: Delivery) -> UpstreamItem {
        let Delivery { item, auto_ack } = delivery;
        match auto_ack {
            Some((handle, guard)) => {
                // Never full: the engine delivers only while fewer than the channel's
                // capacity are outstanding (in the stream or taken and not yet acked). Closed
                // only once the client has stopped, when no ack can be sent any more.
                let _ = self.taken.try_send(Taken { handle, guard });
            }
            None => {
                self.shared.outstanding.fetch_sub(1, Ordering::AcqRel);
            }
        }
        item
    }
}

impl Drop for UpstreamStream {
    fn drop(&mut self) {
        // Items still buffered go with the stream: their tokens come back unused (so a close
        // does not wait for them) and the server redelivers them. The engine holds a sender,
        // so the channel would keep them otherwise.
        self.rx.close();
        while self.rx.try_recv().is_ok() {}
    }
}

impl Stream for UpstreamStream {
    type Item = UpstreamItem;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<UpstreamItem>> {
        self.get_mut().poll_recv(cx)
    }
}

/// Why [`UpstreamStream::try_recv`] returned no item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing is waiting now.
    Empty,
    /// The client has closed: nothing more will come.
    Closed,
}

impl std::fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Empty => "no upstream message is waiting",
            Self::Closed => "the client has closed",
        })
    }
}

impl std::error::Error for TryRecvError {}

/// An item in the upstream channel.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) item: UpstreamItem,
    /// Auto-ack mode: the handle the stream acks with when the item is taken.
    pub(crate) auto_ack: Option<(AckHandle, TokenGuard)>,
}

/// An item taken from the stream in auto-ack mode: the engine acks it.
#[derive(Debug)]
pub(crate) struct Taken {
    pub(crate) handle: AckHandle,
    pub(crate) guard: TokenGuard,
}

/// What the stream and the engine share.
#[derive(Debug, Default)]
pub(crate) struct StreamShared {
    /// `Client::upstream` was called: someone may read.
    pub(crate) taken: AtomicBool,
    /// The client has stopped: the stream ends.
    pub(crate) finished: AtomicBool,
    /// Items in the stream, or taken in auto-ack mode and not yet acked by the engine.
    pub(crate) outstanding: AtomicUsize,
}
