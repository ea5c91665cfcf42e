//! Upstream messages and receipts on their way to the application: [`UpstreamStream`],
//! [`UpstreamItem`], [`AckToken`].

use std::pin::Pin;
use std::task::{Context, Poll};

use ccs_proto::connection::{AckError, AckHandle};
use ccs_proto::message::{MessageId, Receipt, Upstream};
use tokio::sync::{mpsc, oneshot};

use crate::driver::Command;

/// An upstream message or receipt, from [`Client::upstream`](crate::Client::upstream).
#[derive(Debug)]
#[non_exhaustive]
pub enum UpstreamItem {
    /// A message from a device.
    Message {
        /// The message.
        message: Box<Upstream>,
        /// In manual-ack mode, the token to ack it with once it is handled.
        ack: Option<AckToken>,
    },
    /// A delivery receipt.
    Receipt {
        /// The receipt.
        receipt: Box<Receipt>,
        /// In manual-ack mode, the token to ack it with.
        ack: Option<AckToken>,
    },
}

/// Acks one upstream message or receipt (manual-ack mode). Valid while the connection it
/// arrived on lives; after that the server redelivers the message and the new copy has its
/// own token. Dropping a token without acking leaves the message un-acked: the server
/// redelivers it on a later connection.
#[derive(Debug)]
pub struct AckToken {
    handle: AckHandle,
    control: mpsc::Sender<Command>,
}

impl AckToken {
    pub(crate) fn new(handle: AckHandle, control: mpsc::Sender<Command>) -> Self {
        Self { handle, control }
    }

    /// The id of the message this token acks.
    pub fn message_id(&self) -> &MessageId {
        self.handle.message_id()
    }

    /// Acks the message on its connection. Waits while the client's command queue is full.
    /// Dropping the future before it completes may leave the message un-acked (as dropping
    /// the token does).
    pub async fn ack(self) -> Result<(), AckError> {
        let Self { handle, control } = self;
        let (reply, rx) = oneshot::channel();
        let command = Command::Ack { handle, reply };
        if control.send(command).await.is_err() {
            return Err(AckError::ConnectionGone);
        }
        rx.await.unwrap_or(Err(AckError::ConnectionGone))
    }
}

/// The stream of upstream messages and receipts, from
/// [`Client::upstream`](crate::Client::upstream).
#[derive(Debug)]
pub struct UpstreamStream {
    rx: mpsc::UnboundedReceiver<UpstreamItem>,
}

impl UpstreamStream {
    pub(crate) fn new(rx: mpsc::UnboundedReceiver<UpstreamItem>) -> Self {
        Self { rx }
    }

    /// The next upstream message or receipt; `None` once the client has stopped.
    pub async fn recv(&mut self) -> Option<UpstreamItem> {
        self.rx.recv().await
    }
}

impl futures_core::Stream for UpstreamStream {
    type Item = UpstreamItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<UpstreamItem>> {
        self.rx.poll_recv(cx)
    }
}
