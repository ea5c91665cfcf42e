//! Targets over one stream: the client [`Connection`](crate::Connection) after a handshake,
//! and the server role from its first byte.

use std::time::{Duration, Instant};

use crate::ConnectionEvent;
use crate::connection::State;
use crate::message::Downstream;
use crate::server::{ServerConnection, ServerEvent, ServerState};
use crate::testing::{Direction, Pair};
use crate::xml::FramerConfig;

/// A client connection after a real handshake with the server role ([`Pair::connect`]),
/// both directions then muted: `data[0] % 5` messages are sent (ids `m-0`, `m-1`, ...),
/// `data[1]` picks a piece size, and the rest is fed to the client as the server's bytes in
/// pieces of that size, `now` the simulated clock's start. The same property as
/// `tests/connection_fuzz.rs`: the messages in flight never exceed those sent, and after the
/// end of the transport exactly one `Closed` is reported, the connection is closed, and every
/// message was answered once or handed back.
pub fn connection_input(data: &[u8], now: Instant) {
    let Some((&sends, rest)) = data.split_first() else {
        return;
    };
    let sends = usize::from(sends % 5);
    let (_, pieces) = super::pieces(rest);
    let mut pair = Pair::new(Pair::client_config(), Pair::server_config(), now);
    pair.connect();
    pair.mute(Direction::ToClient);
    pair.mute(Direction::ToServer);
    let now = pair.now;
    let window = Pair::client_config().window;
    for i in 0..sends {
        let m = Downstream::builder("t", format!("m-{i}")).unwrap().build();
        pair.client.send(now, m).unwrap();
    }
    let limit = input_limit(&Pair::client_config().framer);
    for piece in pieces {
        pair.client.handle_input(now, piece);
        assert!(pair.client.in_flight() <= sends.min(window));
        assert!(pair.client.buffered_input() <= limit);
        while pair.client.poll_transmit().is_some() {}
    }
    pair.client.handle_eof(now + Duration::from_secs(1));
    let events: Vec<_> = std::iter::from_fn(|| pair.client.poll_event()).collect();
    let closed = events
        .iter()
        .filter(|e| matches!(e, ConnectionEvent::Closed { .. }))
        .count();
    assert_eq!(closed, 1, "{events:?}");
    assert_eq!(pair.client.state(), State::Closed);
    let mut answered = 0;
    for e in &events {
        match e {
            ConnectionEvent::Acked { .. }
            | ConnectionEvent::Nacked { .. }
            | ConnectionEvent::StanzaError { .. }
            | ConnectionEvent::Returned { .. } => answered += 1,
            ConnectionEvent::Closed { unanswered, .. } => answered += unanswered.len(),
            _ => {}
        }
    }
    assert_eq!(answered, sends, "{events:?}");
}

/// The most input a connection may hold undecoded between calls: one open stanza or header.
pub(super) fn input_limit(framer: &FramerConfig) -> usize {
    framer.max_stanza_bytes.max(framer.max_header_bytes)
}

/// The server role (what the emulator runs) fed `data` from its first byte: `data[0]` picks
/// a piece size, the rest arrives in pieces of that size, its output drained after each,
/// `now` the clock's start. It reports at most one `Closed`; the pending messages never
/// exceed the downstream messages reported; after the end of the transport it is closed and
/// has reported exactly one `Closed`.
pub fn server_input(data: &[u8], now: Instant) {
    let (_, pieces) = super::pieces(data);
    let limit = input_limit(&Pair::server_config().framer);
    let mut s = ServerConnection::new(Pair::server_config(), now);
    let mut closed = 0;
    let mut messages = 0;
    let mut drain = |s: &mut ServerConnection| {
        while s.poll_transmit().is_some() {}
        while let Some(e) = s.poll_event() {
            match e {
                ServerEvent::Closed { .. } => closed += 1,
                ServerEvent::Downstream { .. } | ServerEvent::InvalidPayload { .. } => {
                    messages += 1;
                }
                _ => {}
            }
        }
        assert!(closed <= 1);
        assert!(s.pending() <= messages);
        assert!(s.buffered_input() <= limit);
    };
    for piece in pieces {
        s.handle_input(now, piece);
        drain(&mut s);
    }
    s.handle_eof(now);
    drain(&mut s);
    assert_eq!(s.state(), ServerState::Closed);
    assert_eq!(closed, 1);
}
