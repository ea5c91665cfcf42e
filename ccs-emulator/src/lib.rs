//! A local server that speaks CCS, the XMPP endpoint of Google Cloud Messaging and Firebase
//! Cloud Messaging (shut down by Google), as the real one did: for tests, demos and
//! benchmarks of app servers.
//!
//! It serves direct TLS from the first byte (a self-signed certificate generated at start,
//! or one you provide), SASL PLAIN against one sender id and server key (every identity form
//! CCS accepted), resource binding, then CCS JSON both ways: it acks downstream messages
//! (with canonical registration ids where configured), nacks the documented error cases
//! (`INVALID_JSON` with CCS's descriptions, `BAD_REGISTRATION`, `DEVICE_UNREGISTERED`,
//! `BAD_ACK`, `CONNECTION_DRAINING`), answers a payload without `message_id` with a stanza
//! error, sends delivery receipts, delivers injected or generated upstream messages and
//! redelivers the un-acked ones on the next connection, drains connections on demand, and
//! injects faults from a seed. A [`Ledger`] records everything, per connection and in total:
//! every downstream `message_id` with its `to` and answer, every upstream message and receipt
//! with where it was sent, redelivered and acked.
//!
//! # How it answers the cases the documents leave open
//!
//! - **A copy of a pending `message_id`** (sent again on the same connection before its
//!   answer): answered like any other message, so the id gets one answer per copy. PROTOCOL.md
//!   §7.1 says every downstream message gets exactly one ACK or NACK, and §9 item 13 leaves
//!   de-duplication undocumented; a nack would need a code CCS never documented for this and
//!   would fail the original under the same id. Counted in
//!   [`Counters::duplicates_pending`].
//! - **A `<message>` without `<gcm xmlns="google:mobile:data">`**: a `bad-request` stanza
//!   error, as for a payload without `message_id` (§3.8); counted in
//!   [`Counters::messages_without_gcm`].
//! - **`to` of `""`**: nacked `BAD_REGISTRATION`, as CCS nacked invalid tokens (§3.5).
//! - **An ack whose `to` is not the device that sent the message**: `BAD_ACK`, and the
//!   message stays un-acked and is redelivered on the next connection
//!   ([`EmulatorConfig::strict_acks`], on by default; off accepts it by `message_id`).
//! - **Ill-formed XML** (a raw `&`): the stream error `invalid-xml`, which clients of the
//!   real server matched on (§8), not RFC 6120's `not-well-formed`.
//! - **`from`** is in every ack and nack (§6.1): the message's `to`, else its `condition`,
//!   else `""`; for `BAD_ACK`, the ack's `to`.
//! - **Payload limits**: `data` up to 4096 bytes for a token, 2048 for a topic or a condition
//!   (§4 "Size limits"; [`MAX_DATA_BYTES`], [`MAX_TOPIC_DATA_BYTES`]).
//!
//! Each connection is a thin tokio loop around [`ccs_proto::server::ServerConnection`], the
//! sans-IO server side of one stream: every protocol decision lives there; what to answer
//! and which faults to inject lives here.
//!
//! Faults have one home, the fault plan in `src/faults.rs`: a session asks it, without IO,
//! how to answer each downstream message and where to cut or split each write; every draw
//! comes from the seed, in the order the session asks. To add a fault: one field in
//! [`Faults`], one decision in the plan (asked by the session where the fault strikes,
//! drawing nothing while the fault is off), one test of that decision next to it.
//!
//! ```
//! use ccs_emulator::{Emulator, EmulatorConfig};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let mut config = EmulatorConfig::default(); // sender 123456789012, key "emulator-key"
//! config.canonical.insert("old-token".into(), "new-token".into());
//! let emulator = Emulator::start(config).await?;
//! println!("CCS on {} (trust this certificate):\n{}", emulator.local_addr(), emulator.cert_pem());
//!
//! // Queued for the first client that binds; redelivered until one acks it.
//! let data = serde_json::json!({"hello": "world"}).as_object().cloned().unwrap_or_default();
//! let id = emulator.inject_upstream_data("device-token", data);
//! assert_eq!(id.as_str(), "emu-up-1");
//!
//! let ledger = emulator.shutdown().await;
//! assert_eq!(ledger.upstream_queued, 1);
//! assert!(ledger.unanswered_ids().is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! # Testing your app server
//!
//! Start the emulator in your test (`#[tokio::test]`; it listens on an ephemeral port of
//! 127.0.0.1 by default), point any adapter at it with
//! [`EmulatorHandle::client_config`] (its address, credentials and certificate, and the quick
//! reconnects a fault test wants), inject upstream messages, and assert on the [`Ledger`].
//! Drains ([`EmulatorHandle::drain_all`]), nacks ([`EmulatorConfig::unregistered`],
//! [`EmulatorConfig::bad_registrations`]) and faults ([`Faults`]) make the hard cases happen
//! on demand. In manual-ack mode a message can come again after a reconnect (the server
//! redelivers what was not acked on a connection that ended): an app server must be
//! idempotent per `(from, message_id)`.
//!
//! A manual-ack echo server and its test:
//!
//! ```
//! use ccs_emulator::{Answer, Emulator, EmulatorConfig};
//! use ccs_tokio::prelude::*;
//! use std::time::Duration;
//!
//! /// The app server under test: echoes each upstream message, acks it once the echo is
//! /// accepted (an echo not acked leaves the message for the server to redeliver).
//! async fn echo_server(client: Client) {
//!     let mut upstream = client.upstream().expect("taken once");
//!     while let Some(item) = upstream.recv().await {
//!         let (item, ack) = item.into_ack();
//!         if let UpstreamItem::Message { message, .. } = item {
//!             let id = format!("echo-{}", message.message_id);
//!             let echo = Downstream::builder(message.from.clone(), id)
//!                 .unwrap()
//!                 .data_object(message.data.clone())
//!                 .build();
//!             if !client.send_priority(echo).await.is_ok_and(|o| o.is_acked()) {
//!                 continue;
//!             }
//!         }
//!         ack.ack().await.ok();
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! // #[tokio::test] async fn echoes_every_upstream_message() {
//! let mut config = EmulatorConfig::default();
//! config.upstream_after_bind = Duration::ZERO;
//! let emu = Emulator::start(config).await.unwrap();
//! let client = Client::connect(emu.client_config().manual_acks()).await.unwrap();
//! tokio::spawn(echo_server(client.clone()));
//!
//! let id = emu.inject_upstream_data("device-1", Default::default());
//! let echo = format!("echo-{id}");
//! let ledger = emu
//!     .wait_until(|l| {
//!         matches!(l.answered(&echo), Some(Answer::Acked { .. })) && l.total.upstream_acked == 1
//!     })
//!     .await;
//! assert_eq!(ledger.ids[&echo].to.as_deref(), Some("device-1"));
//! assert!(ledger.unacked_upstream().is_empty());
//! client.close(Duration::from_secs(5)).await;
//! emu.shutdown().await;
//! // }
//! # });
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod emulator;
mod error;
mod faults;
mod ledger;
mod policy;
mod rng;
mod schedule;
mod session;
mod shared;
mod tls;

pub use config::{
    DEFAULT_SENDER_ID, DEFAULT_SERVER_KEY, EmulatorConfig, Faults, MAX_DATA_BYTES,
    MAX_TOPIC_DATA_BYTES, TlsSource, UpstreamGenerator,
};
pub use emulator::{Emulator, EmulatorHandle};
pub use error::EmulatorError;
pub use ledger::{
    Answer, ConnectionEnd, ConnectionLedger, Counters, IdRecord, Ledger, UpstreamRecord,
};
pub use tls::GENERATED_NAMES;
