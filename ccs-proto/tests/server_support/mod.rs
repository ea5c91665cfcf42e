//! Shared harness for the `server_*` tests: drives a `ServerConnection` with raw client bytes
//! (written with `ccs_proto::xml::write`), reads its output back with a client-side
//! `StreamReader`, and runs every scenario whole, one byte at a time and in seeded random
//! pieces, asserting identical transcripts.
#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

use ccs_proto::credentials::{SenderId, ServerKey};
use ccs_proto::error::XmlErrorKind;
use ccs_proto::message::{AppAck, Downstream};
use ccs_proto::server::{ServerCloseReason, ServerConfig, ServerConnection, ServerEvent};
use ccs_proto::stanza::{Stanza, StreamError, StreamHeader};
use ccs_proto::xml::write::{self, MessageAttrs};
use ccs_proto::xml::{Event, FramerConfig, StreamReader};

pub const SENDER: &str = "123456789012";
pub const KEY: &str = "AIzaSyB3rcZNkfnqKdFb9mhzCBiYpORDA2JWWtw";
pub const DOMAIN: &str = "gcm.googleapis.com";

/// A fixed starting time: the server never reads the clock, but `Instant` has no constant.
#[allow(clippy::disallowed_methods)]
pub fn t0() -> Instant {
    Instant::now()
}

pub fn config() -> ServerConfig {
    let mut c = ServerConfig::new(SenderId::new(SENDER).unwrap(), ServerKey::new(KEY).unwrap());
    c.seed = 42;
    c
}

/// How client bytes are fed to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    Whole,
    Bytewise,
    /// Pieces of 1..=13 bytes from a seeded generator.
    Random(u64),
}

/// One thing the server wrote, as a client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum Out {
    Event(Event),
    Error(XmlErrorKind),
}

/// What one input or command produced.
#[derive(Debug, Default, Clone)]
pub struct Step {
    pub events: Vec<ServerEvent>,
    pub out: Vec<Out>,
    pub bytes: Vec<u8>,
}

impl Step {
    pub fn stanzas(&self) -> Vec<Stanza> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Out::Event(Event::Stanza(s)) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn headers(&self) -> Vec<StreamHeader> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Out::Event(Event::Header(h)) => Some(h.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn stream_error(&self) -> Option<StreamError> {
        self.out.iter().find_map(|o| match o {
            Out::Event(Event::StreamError(e)) => Some(e.clone()),
            _ => None,
        })
    }

    pub fn ended(&self) -> bool {
        self.out.iter().any(|o| *o == Out::Event(Event::End))
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.bytes.clone()).unwrap()
    }

    /// The only event, asserting there is exactly one.
    pub fn event(&self) -> ServerEvent {
        assert_eq!(self.events.len(), 1, "{:?}", self.events);
        self.events[0].clone()
    }

    /// The `ServerCloseReason` of the last event, asserting it is `Closed`.
    pub fn closed(&self) -> ccs_proto::server::ServerCloseReason {
        match self.events.last() {
            Some(ServerEvent::Closed { reason }) => reason.clone(),
            other => panic!("expected Closed, got {other:?} in {:?}", self.events),
        }
    }
}

pub struct Harness {
    pub conn: ServerConnection,
    pub feed: Feed,
    pub now: Instant,
    rng: u64,
    client: StreamReader,
    client_dead: bool,
    /// Everything the server emitted, in order.
    pub events: Vec<ServerEvent>,
    /// Everything the server wrote, in order.
    pub wire: Vec<u8>,
}

impl Harness {
    pub fn new(config: ServerConfig, feed: Feed) -> Self {
        let now = t0();
        let rng = match feed {
            Feed::Random(seed) => seed,
            _ => 0,
        };
        Self {
            conn: ServerConnection::new(config, now),
            feed,
            now,
            rng,
            client: StreamReader::new(FramerConfig::default()),
            client_dead: false,
            events: Vec::new(),
            wire: Vec::new(),
        }
    }

    /// Feeds client bytes, split as `self.feed` says, draining after each piece.
    pub fn send(&mut self, bytes: &[u8]) -> Step {
        let mut step = Step::default();
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = match self.feed {
                Feed::Whole => rest.len(),
                Feed::Bytewise => 1,
                Feed::Random(_) => {
                    self.rng = self
                        .rng
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    1 + (self.rng >> 60) as usize % 13
                }
            }
            .min(rest.len());
            let (piece, tail) = rest.split_at(n);
            rest = tail;
            self.conn.handle_input(self.now, piece);
            self.drain(&mut step);
        }
        step
    }

    pub fn send_str(&mut self, s: &str) -> Step {
        self.send(s.as_bytes())
    }

    pub fn eof(&mut self) -> Step {
        self.conn.handle_eof(self.now);
        self.drain_new()
    }

    pub fn advance(&mut self, by: Duration) -> Step {
        self.now += by;
        self.conn.handle_timeout(self.now);
        self.drain_new()
    }

    /// Runs a command and drains what it produced.
    pub fn cmd<R>(&mut self, f: impl FnOnce(&mut ServerConnection) -> R) -> (R, Step) {
        let r = f(&mut self.conn);
        (r, self.drain_new())
    }

    fn drain_new(&mut self) -> Step {
        let mut step = Step::default();
        self.drain(&mut step);
        step
    }

    fn drain(&mut self, step: &mut Step) {
        while let Some(ev) = self.conn.poll_event() {
            assert!(
                !self
                    .events
                    .iter()
                    .any(|e| matches!(e, ServerEvent::Closed { .. })),
                "an event after Closed: {ev:?}"
            );
            self.events.push(ev.clone());
            step.events.push(ev);
        }
        if let Some(bytes) = self.conn.poll_transmit() {
            assert!(!bytes.is_empty(), "poll_transmit returned an empty buffer");
            self.wire.extend_from_slice(&bytes);
            step.bytes.extend_from_slice(&bytes);
            if !self.client_dead {
                self.client.push(&bytes);
                loop {
                    match self.client.next_event() {
                        Ok(Some(ev)) => {
                            if ev == Event::Stanza(Stanza::SaslSuccess) {
                                self.client.reset();
                            }
                            step.out.push(Out::Event(ev));
                        }
                        Ok(None) => break,
                        Err(e) => {
                            self.client_dead = true;
                            step.out.push(Out::Error(e.kind));
                            break;
                        }
                    }
                }
            }
        }
        assert!(self.conn.poll_transmit().is_none());
    }

    /// Opens the stream and authenticates with the recommended PLAIN form.
    pub fn authenticate(&mut self) -> Step {
        let mut b = header(DOMAIN);
        write::auth_plain(&mut b, "", &format!("{SENDER}@{DOMAIN}"), KEY);
        let step = self.send(&b);
        assert_eq!(
            step.events,
            [ServerEvent::Authenticated {
                authcid: format!("{SENDER}@{DOMAIN}")
            }]
        );
        step
    }

    /// Full handshake up to a bound resource; returns the JID.
    pub fn handshake(&mut self) -> String {
        self.authenticate();
        let mut b = header(DOMAIN);
        write::iq_bind_set(&mut b, "bind_1", None);
        let step = self.send(&b);
        match step.event() {
            ServerEvent::Bound { jid } => jid,
            other => panic!("{other:?}"),
        }
    }
}

/// Runs `scenario` whole, one byte at a time and in random pieces; asserts that every run
/// gives the same events and the same bytes on the wire.
pub fn run_all_ways(config: ServerConfig, scenario: impl Fn(&mut Harness)) {
    let mut whole = Harness::new(config.clone(), Feed::Whole);
    scenario(&mut whole);
    for feed in [Feed::Bytewise, Feed::Random(1), Feed::Random(0xDEAD_BEEF)] {
        let mut h = Harness::new(config.clone(), feed);
        scenario(&mut h);
        assert_eq!(
            normalized(&whole.events),
            normalized(&h.events),
            "events differ with {feed:?}"
        );
        assert_eq!(
            String::from_utf8_lossy(&whole.wire),
            String::from_utf8_lossy(&h.wire),
            "wire differs with {feed:?}"
        );
    }
}

/// The events with the offset of a size-limit error zeroed: the framer reports where it
/// noticed the stanza had grown too large, which depends on how the bytes arrived.
fn normalized(events: &[ServerEvent]) -> Vec<ServerEvent> {
    events
        .iter()
        .cloned()
        .map(|mut e| {
            if let ServerEvent::Closed {
                reason: ServerCloseReason::ProtocolError(x),
            } = &mut e
                && matches!(
                    x.kind,
                    XmlErrorKind::StanzaTooLarge { .. } | XmlErrorKind::HeaderTooLarge { .. }
                )
            {
                x.offset = 0;
            }
            e
        })
        .collect()
}

/// [`run_all_ways`] with the default test config.
pub fn run(scenario: impl Fn(&mut Harness)) {
    run_all_ways(config(), scenario);
}

// ---- client bytes ------------------------------------------------------------------------

pub fn header(to: &str) -> Vec<u8> {
    let mut b = Vec::new();
    write::client_header(&mut b, to);
    b
}

pub fn auth(authzid: &str, authcid: &str, password: &str) -> Vec<u8> {
    let mut b = Vec::new();
    write::auth_plain(&mut b, authzid, authcid, password);
    b
}

pub fn auth_raw(mechanism: &str, payload: &str) -> Vec<u8> {
    format!(
        "<auth mechanism=\"{mechanism}\" xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\">{payload}</auth>"
    )
    .into_bytes()
}

pub fn bind(id: &str, resource: Option<&str>) -> Vec<u8> {
    let mut b = Vec::new();
    write::iq_bind_set(&mut b, id, resource);
    b
}

pub fn downstream(msg: &Downstream) -> Vec<u8> {
    let mut b = Vec::new();
    write::downstream(&mut b, msg).unwrap();
    b
}

pub fn simple_downstream(id: &str) -> Downstream {
    Downstream::builder(format!("REG-{id}"), id)
        .unwrap()
        .data(serde_json::json!({"k": "v"}))
        .unwrap()
        .build()
}

pub fn app_ack(to: &str, message_id: &str) -> Vec<u8> {
    let mut b = Vec::new();
    let ack = AppAck {
        to: to.to_owned(),
        message_id: message_id.try_into().unwrap(),
    };
    write::app_ack(&mut b, &ack);
    b
}

/// A `<message>` with the given stanza id and raw `<gcm>` text.
pub fn gcm(stanza_id: Option<&str>, json: &str) -> Vec<u8> {
    let mut b = Vec::new();
    let attrs = MessageAttrs {
        id: stanza_id,
        ..MessageAttrs::default()
    };
    write::gcm_message(&mut b, &attrs, json);
    b
}

pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// The pieces of a JSON message from the server, parsed.
pub fn gcm_json(stanza: &Stanza) -> serde_json::Value {
    match stanza {
        Stanza::Message(m) => serde_json::from_str(m.gcm.as_deref().expect("a gcm child")).unwrap(),
        other => panic!("not a message: {other:?}"),
    }
}
