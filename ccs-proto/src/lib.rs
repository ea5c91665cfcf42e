//! The sans-IO core of ccs-rs: everything an app server needs to speak to Google's Cloud
//! Connection Server (CCS, the XMPP endpoint of GCM and later FCM), without sockets, clocks,
//! threads or a runtime.
//!
//! Bytes go in, typed events and bytes come out; time is an argument. The layers, bottom up:
//!
//! - [`xml`]: a resumable framer for one endless XMPP stream ([`xml::Framer`]), a decoder
//!   that turns each complete stanza into a typed [`stanza::Stanza`], and the encoders for
//!   everything either side writes.
//! - [`message`]: the CCS JSON carried inside `<gcm xmlns="google:mobile:data">`: the
//!   [`message::Downstream`] builder and the typed [`message::Incoming`] messages (upstream,
//!   ack, nack, receipt, control). Decoding what CCS sends is lenient where the documentation
//!   is silent: an upstream message or a receipt with a string `from` and `message_id` always
//!   decodes (odd optional fields are kept raw in `extra`), so that it is acked and never
//!   redelivered forever ([`message`](message#leniency-what-ccs-sends) has the rules).
//! - [`connection`]: one stream, client side ([`Connection`]); [`client`]: every connection
//!   and the policy around them ([`Client`]: queue, resend, drain, retry, reconnect, close).
//! - [`credentials`]: the sender id and the server key (a secret that never prints).
//! - [`error`]: errors split by blame, [`error::UsageError`] for the caller and
//!   [`error::PeerError`] for the other side of the connection.
//!
//! ```
//! use ccs_proto::message::{Downstream, Incoming};
//! use ccs_proto::xml::{Framer, FramerConfig, Frame, StreamReader, Event};
//! use ccs_proto::stanza::Stanza;
//!
//! // Encode a downstream message as the stanza the server expects.
//! let msg = Downstream::builder("REGISTRATION_ID", "m-1")
//!     .unwrap()
//!     .data(serde_json::json!({"hello": "world"}))
//!     .unwrap()
//!     .time_to_live(600)
//!     .unwrap()
//!     .build();
//! let mut out = Vec::new();
//! ccs_proto::xml::write::downstream(&mut out, &msg).unwrap();
//! assert!(out.starts_with(b"<message id=\"m-1\"><gcm xmlns=\"google:mobile:data\">"));
//!
//! // Read the server's side of a stream, in pieces of any size.
//! let mut reader = StreamReader::new(FramerConfig::default());
//! reader.push(b"<stream:stream from='gcm.googleapis.com' id='A1' version='1.0' \
//!     xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>");
//! reader.push(br#"<message><data:gcm xmlns:data="google:mobile:data">{"message_type":"ack","#);
//! reader.push(br#""message_id":"m-1","from":"REGISTRATION_ID"}</data:gcm></message>"#);
//! assert!(matches!(reader.next_event().unwrap(), Some(Event::Header(_))));
//! let Some(Event::Stanza(Stanza::Message(m))) = reader.next_event().unwrap() else { panic!() };
//! let Incoming::Ack(ack) = Incoming::from_json(m.gcm.as_deref().unwrap()).unwrap() else { panic!() };
//! assert_eq!(ack.message_id.as_str(), "m-1");
//! # let _ = (Framer::new(FramerConfig::default()), None::<Frame>);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod connection;
pub mod credentials;
pub mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod hash;
pub mod message;
#[cfg(test)]
mod mutation;
pub mod rng;
pub mod sasl;
pub mod server;
pub mod stanza;
#[cfg(feature = "testing")]
pub mod testing;
pub mod timer;
pub mod xml;

/// Connection settings, also at their home [`connection::config`].
pub use connection::config;

pub use client::{Client, ClientConfig, ClientEvent, Outcome, Output};
pub use config::{AckMode, AuthcidForm, ConnectionConfig};
pub use connection::{ConnId, Connection, ConnectionEvent};
