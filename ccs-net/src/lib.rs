//! The runtime-neutral half of every ccs-rs adapter (`ccs-tokio`, `ccs-async-std`,
//! `ccs-blocking`): TLS set-up, the public types they share, the application's [`Handle`],
//! and the IO-free [`Engine`] that drives [`ccs_proto::Client`].
//!
//! All protocol decisions live in [`ccs_proto::Client`]; everything an adapter does that is
//! not a runtime lives here. An adapter is then: dial, move bytes both ways through a
//! [`Link`], sleep until the engine's next deadline, and run the engine's loop
//! ([`engine`] shows it). Applications use an adapter crate, which re-exports what they need
//! from here.
//!
//! # Upstream messages and acks
//!
//! An upstream message (or receipt) is acked once the application has it, never before:
//!
//! - **Auto-ack mode** (the default, [`ccs_proto::AckMode::Auto`]): it is acked when the
//!   application takes it from the [`UpstreamStream`]. Until then it waits un-acked, so the
//!   server's own limit on un-acked upstream messages per connection holds back the rest
//!   while the application is slow, and a crash loses nothing: what the application never
//!   took was never acked, and the server redelivers it. (Internally the core runs in manual
//!   mode and the engine acks on hand-over.) Each item's [`AckToken`] is then a no-op.
//! - **Manual-ack mode** ([`Config::manual_acks`]): ack each item's [`AckToken`] once the
//!   message is durably handled. A copy can come again after a reconnect (the server
//!   redelivers what was not acked on a connection that ended), so an application must be
//!   idempotent per `(from, message_id)`.
//!
//! The stream holds at most [`Config::upstream_capacity`] items. When it is full, a new item
//! is neither handed over nor acked: the server still counts it as un-acked and redelivers
//! it on a later connection. Nothing is lost, and [`Stats::upstream_deferred`] counts these.
//!
//! # Closing
//!
//! `close` refuses new messages at once and sends what was already queued. Acks keep working
//! until the deadline: the core ([`ccs_proto::Client::close`]) keeps each connection open
//! until every [`AckToken`] handed out on it has been acked or dropped, and its messages are
//! answered, or the deadline passes. `close` returns once every socket is closed (the stream
//! end and TLS `close_notify` written and the server's end seen, or
//! [`Config::disconnect_grace`] passed). The [`Report`] lists the messages never answered and
//! the upstream messages never acked (the server redelivers those).
//!
//! # Resources
//!
//! Every queue is bounded (see the table in [`engine`]). Bytes waiting to be written on a
//! connection are bounded by [`Config::write_limit`]: a server that stops reading makes its
//! connection fail rather than memory grow. When the core gives a connection up, its task
//! gets [`Config::disconnect_grace`] to flush and close cleanly and is then stopped,
//! whatever the peer does. [`Event::SocketClosed`] reports each socket's end, and
//! [`Stats::sockets`] counts the live ones.
//!
//! # Metrics
//!
//! With the `metrics` feature (off by default; each adapter forwards it as its own `metrics`
//! feature), the engine records through the [`metrics`](https://docs.rs/metrics/0.24) facade
//! to whatever recorder the application installed (a Prometheus exporter, say); each metric
//! is described to the recorder when a client is built. Without the feature the `metrics`
//! crate is not compiled and nothing is recorded. Labels take a small, fixed set of values.
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `ccs_messages_sent_total` | counter | | messages the core accepted (each gets one outcome) |
//! | `ccs_messages_acked_total` | counter | | outcomes [`Outcome::Acked`](ccs_proto::client::Outcome::Acked) |
//! | `ccs_messages_failed_total` | counter | `kind` | every other outcome, by [`Outcome::kind`](ccs_proto::client::Outcome::kind): `nacked`, `rejected`, `failed`, `expired`, `unsent` |
//! | `ccs_messages_nacked_total` | counter | `code` | outcomes ended by a nack ([`Outcome::nack`](ccs_proto::client::Outcome::nack): final, or the last retryable one), by code as CCS writes it (`DEVICE_UNREGISTERED`, ...; codes this crate does not know as `UNKNOWN`) |
//! | `ccs_messages_retried_total` | counter | | retries scheduled after a retryable nack ([`ClientEvent::Retrying`](ccs_proto::client::ClientEvent::Retrying)) |
//! | `ccs_messages_expired_total` | counter | | outcomes [`Outcome::Expired`](ccs_proto::client::Outcome::Expired) (also counted in `ccs_messages_failed_total{kind="expired"}`) |
//! | `ccs_upstream_received_total` | counter | `kind` | upstream items from the core: `message` or `receipt` (duplicates the core suppressed are not counted) |
//! | `ccs_reconnects_total` | counter | | connections (or attempts) that ended with a new one scheduled ([`ClientEvent::ConnectionDown`](ccs_proto::client::ClientEvent::ConnectionDown) with `will_retry_in`); a drained connection, already replaced, is not one |
//! | `ccs_drains_total` | counter | | CONNECTION_DRAINING announcements |
//! | `ccs_ack_latency_seconds` | histogram | | from the core's acceptance of a message to its outcome, whatever the outcome (seconds) |
//! | `ccs_in_flight` | gauge | | messages on the wire without an answer ([`ccs_proto::Client::in_flight`]) |
//! | `ccs_queued` | gauge | | messages accepted and not on the wire ([`ccs_proto::Client::queued`]; messages the engine holds for a full core queue are not in it) |
//! | `ccs_connections_up` | gauge | | connections set up and not ended (draining ones included) |
//!
//! So `ccs_messages_sent_total` = `ccs_messages_acked_total` + the sum of
//! `ccs_messages_failed_total` + the messages still waiting. Gauges are set after the
//! engine's turns, only when their value changed; the histogram measures with the engine's
//! clock (the `now` its adapter passes to [`Engine::turn`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod batch;
pub mod block;
mod config;
mod control;
mod delegate;
pub mod engine;
mod handle;
mod link;
mod sync;
pub mod tls;
mod types;
mod upstream;

pub use batch::PendingBatch;
pub use ccs_proto;
pub use config::Config;
pub use engine::{Action, Engine, FirstConnect, Nudge, Wait};
pub use handle::{Handle, PendingOutcome, QueuePlace};
pub use link::{Link, Listener};
pub use tls::{Endpoint, TlsOptions, describe_tls_error};
pub use types::{ConnectError, Event, Report, SendError, Stats, UnackedUpstream};

/// The receiver of a client's monitoring events (`Client::events`).
pub type EventReceiver = async_broadcast::Receiver<Event>;
pub use upstream::{AckToken, TryRecvError, UpstreamItem, UpstreamStream};

/// What an application of any adapter needs in scope: `use ccs_tokio::prelude::*;` (each
/// adapter re-exports this with its own `Client`).
pub mod prelude {
    pub use crate::{
        AckToken, Config, ConnectError, Endpoint, Event, PendingBatch, PendingOutcome, Report,
        SendError, Stats, TlsOptions, UpstreamItem,
    };
    pub use ccs_proto::AckMode;
    pub use ccs_proto::client::{FailReason, Outcome};
    pub use ccs_proto::credentials::{SenderId, ServerKey};
    pub use ccs_proto::message::{Downstream, MessageId, Nack, NackCode, Receipt, Upstream};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_types_are_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Handle>();
        check::<UpstreamStream>();
        check::<UpstreamItem>();
        check::<AckToken>();
        check::<PendingOutcome>();
        check::<PendingBatch>();
        check::<Engine>();
    }
}
