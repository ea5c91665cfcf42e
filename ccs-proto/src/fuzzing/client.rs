//! The operation-sequence target over [`Client`](crate::Client), on the in-memory network of
//! [`Net`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::client::{ClientConfig, ClientEvent};
use crate::connection::ConnId;
use crate::message::{Control, Downstream, NackCode};
use crate::testing::Pair;
use crate::testing::net::Net;

/// One operation, decoded from the bytes.
#[derive(Debug)]
enum Op {
    /// Hand `n` messages to the client.
    Send(u8),
    /// A server acks its `i`-th pending message.
    Ack(u8),
    /// A server nacks its `i`-th pending message with a code.
    Nack(u8, u8),
    /// Raw bytes from a server to the client.
    Inject(u8, Vec<u8>),
    /// The `i`-th live link dies.
    Kill(u8),
    /// A server sends `CONNECTION_DRAINING`.
    Drain(u8),
    /// The clock moves forward by `n` × 250 ms.
    Advance(u8),
    /// Everything in flight is delivered.
    Drive,
}

const CODES: [NackCode; 5] = [
    NackCode::BadRegistration,
    NackCode::ServiceUnavailable,
    NackCode::ConnectionDraining,
    NackCode::InvalidJson,
    NackCode::DeviceMessageRateExceeded,
];

fn decode(mut data: &[u8]) -> Vec<Op> {
    let mut ops = Vec::new();
    let next = |data: &mut &[u8]| -> u8 {
        let (&b, rest) = data.split_first().unwrap_or((&0, &[]));
        *data = rest;
        b
    };
    while !data.is_empty() && ops.len() < 64 {
        let op = match next(&mut data) % 8 {
            0 => Op::Send(next(&mut data) % 8 + 1),
            1 => Op::Ack(next(&mut data)),
            2 => Op::Nack(next(&mut data), next(&mut data)),
            3 => {
                let conn = next(&mut data);
                let len = usize::from(next(&mut data) % 128).min(data.len());
                let (bytes, rest) = data.split_at(len);
                data = rest;
                Op::Inject(conn, bytes.to_vec())
            }
            4 => Op::Kill(next(&mut data)),
            5 => Op::Drain(next(&mut data)),
            6 => Op::Advance(next(&mut data)),
            _ => Op::Drive,
        };
        ops.push(op);
    }
    ops
}

/// The `i`-th (modulo) of the live server connections.
fn pick(net: &Net, i: u8) -> Option<ConnId> {
    let live: Vec<ConnId> = net.servers.keys().copied().collect();
    (!live.is_empty()).then(|| live[usize::from(i) % live.len()])
}

/// Counts the outcomes per ticket among the events not looked at yet, and checks the rules
/// that hold after every step: at most one outcome per accepted message (and none for a
/// message never accepted), no connection over its window, no rule broken that the harness
/// itself watches, and memory within the configured limits: no more messages held (accepted
/// and not answered) than `max_queue` plus a window per connection, no more undecoded input
/// on any connection (client or server side) than one open stanza. (`queued()` alone may pass
/// `max_queue`: messages coming back from an ended connection are always taken back.)
fn check(net: &mut Net, outcomes: &mut BTreeMap<u64, u32>, accepted: u64, conns: &mut usize) {
    for e in net.take_events() {
        if let ClientEvent::Outcome { ticket, .. } = e {
            assert!(ticket.get() < accepted, "an outcome for ticket {ticket:?}");
            let n = outcomes.entry(ticket.get()).or_default();
            *n += 1;
            assert_eq!(*n, 1, "a second outcome for ticket {ticket:?}");
        }
    }
    let config = net.client.config();
    *conns = (*conns).max(net.client.connections().count());
    let held = accepted - outcomes.len() as u64;
    let bound = config.max_queue + config.connection.window * *conns;
    assert!(
        held as usize <= bound,
        "{held} messages held, bound {bound}"
    );
    // In flight counts expired messages (answered already) until their connection ends.
    let kept = net.client.queued() + net.client.in_flight();
    assert!(
        kept <= bound,
        "{kept} messages queued or in flight, bound {bound}"
    );
    let limit = super::stream::input_limit(&config.connection.framer);
    for c in net.client.connections() {
        assert!(c.in_flight <= c.window, "{c:?}");
        assert!(c.buffered_in <= limit, "{c:?}");
    }
    let limit = super::stream::input_limit(&Pair::server_config().framer);
    for s in net.servers.values() {
        assert!(s.buffered_input() <= limit);
    }
    assert!(net.violations.is_empty(), "{:?}", net.violations);
}

/// An operation sequence over a [`Client`](crate::Client) with 1 or 2 connections and a
/// window of 1 to 4 (`data[0]`), against the server role on the in-memory [`Net`]: the rest
/// of `data` decodes to up to 64 operations (send, server ack or nack, raw bytes from a
/// server, kill a link, drain, advance time, deliver). `now` is the simulated clock's start.
///
/// After every step: every accepted message has at most one outcome, and no connection has
/// more in flight than its window. At the end the client is closed (a 30 s deadline) and the
/// network run until it is: then every accepted message has exactly one outcome.
pub fn client_ops(data: &[u8], now: Instant) {
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    let mut config = ClientConfig::new(Pair::client_config());
    config.connections = 1 + usize::from(shape & 1);
    config.connection.window = 1 + usize::from((shape >> 1) % 4);
    config.max_queue = 16;
    let mut net = Net::new(config, Pair::server_config(), now);
    net.drive();
    let mut accepted = 0u64;
    let mut next_id = 0u64;
    let mut outcomes = BTreeMap::new();
    let mut conns = 0;
    check(&mut net, &mut outcomes, accepted, &mut conns);
    for op in decode(rest) {
        let now = net.now;
        match op {
            Op::Send(n) => {
                for _ in 0..n {
                    let m = Downstream::builder("token", format!("m-{next_id}"))
                        .unwrap()
                        .build();
                    next_id += 1;
                    if let Ok(t) = net.client.send(now, m) {
                        assert_eq!(t.get(), accepted);
                        accepted += 1;
                    }
                }
                net.pump();
            }
            Op::Ack(i) | Op::Nack(i, _) => {
                if let Some(c) = pick(&net, i) {
                    let pending = net.pending(c);
                    if !pending.is_empty() {
                        let id = &pending[usize::from(i) % pending.len()];
                        let s = net.server(c);
                        let _ = match op {
                            Op::Nack(_, code) => {
                                let code = CODES[usize::from(code) % CODES.len()].clone();
                                s.nack(id, code, None)
                            }
                            _ => s.ack(id, None),
                        };
                    }
                }
                net.pump();
            }
            Op::Inject(i, bytes) => {
                if let Some(c) = pick(&net, i) {
                    net.inject_to_client(c, bytes);
                }
            }
            Op::Kill(i) => {
                let live = net.alive_links();
                if !live.is_empty() {
                    net.kill(live[usize::from(i) % live.len()]);
                }
            }
            Op::Drain(i) => {
                if let Some(c) = pick(&net, i) {
                    let _ = net.server(c).send_control(&Control::connection_draining());
                }
                net.pump();
            }
            Op::Advance(n) => {
                net.advance(Duration::from_millis(250) * u32::from(n));
            }
            Op::Drive => {
                net.drive();
            }
        }
        check(&mut net, &mut outcomes, accepted, &mut conns);
    }
    let now = net.now;
    net.client.close(now, now + Duration::from_secs(30));
    let closed = net.run_until(1_000_000, |n| n.client.is_closed());
    assert!(closed, "the client did not close");
    check(&mut net, &mut outcomes, accepted, &mut conns);
    for t in 0..accepted {
        assert_eq!(outcomes.get(&t), Some(&1), "ticket {t}: no outcome");
    }
}
