//! Connections: reconnect after a healthy connection at once, backoff after failures (dials
//! refused or silent, authentication refused, connections that die young), draining with a
//! replacement opened at once, and the bound on attempts in flight.

use std::time::Duration;

use crate::fixtures::*;
use ccs_proto::client::{ClientConfig, ClientEvent, DownReason, Jitter, Output};
use ccs_proto::connection::CloseReason;
use ccs_proto::message::{Control, NackCode};

/// Exact delays: base 1 s, doubling, cap 8 s, no jitter; healthy after 10 s.
fn predictable() -> ClientConfig {
    let mut c = client_config();
    c.reconnect.jitter = Jitter::None;
    c.reconnect.base = secs(1);
    c.reconnect.factor = 2;
    c.reconnect.cap = secs(8);
    c.reconnect.healthy_after = secs(10);
    c
}

fn retry_delays(events: &[ClientEvent]) -> Vec<Option<Duration>> {
    downs(events).into_iter().map(|d| d.2).collect()
}

#[test]
fn a_healthy_connection_is_replaced_at_once_then_failures_back_off() {
    let mut net = net_up(predictable());
    let first = net.only_conn();
    net.advance(secs(11)); // healthy
    net.take_events();
    net.dial_default = Dial::Refuse;
    net.kill(first);
    net.advance(secs(20));
    let events = net.take_events();
    // Immediate attempt after the healthy one, then 1 s, 2 s, 4 s, 8 s, 8 s ...
    let delays = retry_delays(&events);
    assert_eq!(
        &delays[..6],
        &[
            Some(secs(0)),
            Some(secs(1)),
            Some(secs(2)),
            Some(secs(4)),
            Some(secs(8)),
            Some(secs(8))
        ]
    );
    assert!(matches!(downs(&events)[1].1, DownReason::ConnectFailed(_)));
    let s = net.client.stats();
    // 0 + 1 + 2 + 4 + 8 s: the sixth attempt was the last within 20 s.
    assert_eq!((s.connection_attempts, s.reconnects), (6, 5), "{s:?}");
}

#[test]
fn a_connection_that_dies_soon_after_authenticating_counts_as_a_failure() {
    let mut net = net_up(predictable());
    let mut delays = Vec::new();
    for _ in 0..5 {
        let c = net.only_conn();
        net.advance(secs(1)); // up, but not for 10 s
        net.take_events();
        net.kill(c);
        let d = retry_delays(&net.client_events)[0].unwrap();
        delays.push(d);
        net.advance(d + secs(1)); // the next one comes up
        assert_eq!(ups(&net.client_events).len(), 1);
    }
    assert_eq!(delays, [secs(1), secs(2), secs(4), secs(8), secs(8)]);
    // A connection that then stays up resets the count: its end is followed at once.
    let c = net.only_conn();
    net.advance(secs(10));
    net.take_events();
    net.kill(c);
    assert_eq!(retry_delays(&net.client_events), [Some(Duration::ZERO)]);
}

#[test]
fn a_server_that_drops_every_connection_at_once_meets_no_storm() {
    let mut config = client_config();
    config.seed = 7; // full jitter, default 1 s base, 60 s cap
    let mut net = net_up(config);
    let mut total = 0;
    for _ in 0..200 {
        if let Some(&c) = net.alive_links().first() {
            net.kill(c);
        }
        net.advance(secs(1));
        total += 1;
    }
    // 200 s of a server killing each connection at once: a handful of attempts per minute
    // at most once the backoff has grown, never one per round trip.
    let attempts = net.client.stats().connection_attempts;
    assert!(attempts < 40, "{attempts} attempts in {total} s");
    let late: Vec<_> = retry_delays(&net.client_events)
        .into_iter()
        .flatten()
        .skip(8)
        .collect();
    assert!(late.iter().any(|d| *d > secs(8)), "{late:?}");
}

#[test]
fn an_authentication_failure_backs_off_and_is_reported() {
    // Once a connection has come up, a refused key is retried with backoff (a key rotated
    // on the server may come back); only the first connection gives up on it.
    let mut net = net_up(predictable());
    let first = net.only_conn();
    net.advance(secs(11)); // healthy: replaced at once
    net.dial_default = Dial::BadKey;
    net.kill(first);
    net.take_events();
    net.advance(ms(2500)); // refusals at about 0 s and 1 s; the next would be at 3 s

    let events = net.take_events();
    let auth: Vec<(u32, String)> = events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::AuthFailed {
                consecutive_failures,
                condition,
                ..
            } => Some((*consecutive_failures, condition.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(auth.len(), 2, "{events:?}");
    assert_eq!(auth[0], (1, "not-authorized".to_owned()));
    assert_eq!(auth[1].0, 2);
    let d = downs(&events);
    assert!(d[0].1.is_auth_failure());
    assert!(matches!(
        &d[0].1,
        DownReason::Closed(CloseReason::AuthFailed { .. })
    ));
    assert_eq!(retry_delays(&events), [Some(secs(1)), Some(secs(2))]);
    assert_eq!(net.client.stats().auth_failures, 2);
    // The key is fixed: the next attempt succeeds.
    net.dial_default = Dial::Accept;
    net.advance(secs(5));
    assert_eq!(ups(&net.client_events).len(), 1);
}

#[test]
fn a_silent_dial_times_out() {
    let mut config = predictable();
    config.reconnect.connect_timeout = secs(3);
    let mut net = new_net(config);
    net.dial_plan.push_back(Dial::Silent);
    net.advance(secs(2));
    assert!(downs(&net.client_events).is_empty());
    net.advance(secs(1));
    let d = downs(&net.client_events);
    assert_eq!(d[0].1, DownReason::ConnectTimeout);
    assert_eq!(d[0].2, Some(secs(1)));
    net.advance(secs(2));
    assert_eq!(ups(&net.client_events).len(), 1);
}

#[test]
fn attempts_in_flight_are_bounded() {
    let mut config = client_config();
    config.connections = 10;
    config.reconnect.max_connecting = 3;
    let mut net = new_net(config);
    net.pump();
    assert_eq!(net.connects.len(), 3);
    assert_eq!(net.client.connections().count(), 3);
    net.drive();
    assert_eq!(ups(&net.client_events).len(), 10);
    assert_eq!(net.connects.len(), 10);
}

#[test]
fn draining_opens_a_replacement_at_once_and_the_old_connection_finishes_its_work() {
    let mut config = predictable();
    config.connection.window = 2;
    let mut net = net_up(config);
    let old = net.only_conn();
    net.advance(secs(11)); // healthy
    net.send(msg("a"));
    net.send(msg("b"));
    net.drive();
    assert_eq!(net.pending(old), ["a", "b"]);
    net.take_events();

    net.server(old)
        .send_control(&Control::connection_draining())
        .unwrap();
    net.drive();
    let events = net.take_events();
    assert!(events.contains(&ClientEvent::ConnectionDraining { id: old }));
    let new = *ups(&events).last().expect("a replacement came up");
    assert_ne!(new, old);
    assert_eq!(net.client.stats().drains, 1);

    // New messages go to the new connection only; the old one still answers and acks.
    net.send(msg("c"));
    net.drive();
    assert_eq!(net.pending(new), ["c"]);
    net.server(old).ack("a", None).unwrap();
    let up = ccs_proto::message::Upstream {
        from: "dev".into(),
        category: None,
        message_id: mid("up-1"),
        data: Default::default(),
        time_to_live: None,
        extra: Default::default(),
    };
    net.server(old).send_upstream(&up).unwrap();
    net.drive();
    assert_eq!(acked_ids(&net.client_events), ["a"]);
    assert_eq!(net.server(old).unacked_upstream().count(), 0);

    // The server closes the old one: "b" goes again on the new connection, same id.
    let now = net.now;
    net.server(old).close(now).unwrap();
    net.drive();
    let events = net.take_events();
    let d = downs(&events);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].0, old);
    assert_eq!(d[0].2, None, "a drained connection is already replaced");
    // "c" was already on the wire; "b" follows with its original id.
    assert_eq!(net.pending(new), ["c", "b"]);
    assert!(net.violations.is_empty(), "{:?}", net.violations);
    assert_eq!(net.client.stats().resent, 1);
}

#[test]
fn a_connection_drained_right_after_it_came_up_counts_as_a_failure() {
    let mut net = net_up(predictable());
    let mut delays = Vec::new();
    for _ in 0..4 {
        let c = net.only_conn();
        let start = net.connects.len();
        net.server(c)
            .send_control(&Control::connection_draining())
            .unwrap();
        net.drive();
        let now = net.now;
        net.server(c).close(now).unwrap();
        let t0 = net.now;
        net.run_until(10_000, |n| n.connects.len() > start);
        delays.push(net.now - t0);
        net.drive();
    }
    assert!(delays[0] >= secs(1) && delays[3] >= secs(8), "{delays:?}");
}

#[test]
fn a_message_nacked_with_connection_draining_goes_again_on_another_connection() {
    let mut net = net_up(predictable());
    let old = net.only_conn();
    net.advance(secs(11));
    net.send(msg("x"));
    net.drive();
    net.server(old)
        .nack("x", NackCode::ConnectionDraining, None)
        .unwrap();
    net.drive();
    let new = net.only_conn();
    assert_ne!(new, old);
    assert_eq!(net.pending(new), ["x"]);
    net.ack_all();
    net.drive();
    let got = outcomes(&net.client_events);
    assert_eq!(got.len(), 1);
    assert!(got[0].2.is_acked());
    let s = net.client.stats();
    assert_eq!((s.returned, s.retried, s.resent), (1, 0, 1));
    assert_eq!(s.nacked_by_code.get("CONNECTION_DRAINING"), Some(&1));
    assert!(
        !net.client_events
            .iter()
            .any(|e| matches!(e, ClientEvent::Retrying { .. }))
    );
}

#[test]
fn connect_outputs_come_before_anything_else() {
    let mut net = new_net(client_config());
    net.pump();
    assert_eq!(net.connects.len(), 1);
    let c = net.connects[0];
    // The adapter reports the transport up; the header is the first transmit.
    let mut config = client_config();
    config.connections = 1;
    let mut client = ccs_proto::Client::new(config, net.now).unwrap();
    let Some(Output::Connect(id)) = client.poll_output() else {
        panic!()
    };
    client.handle_connected(net.now, id);
    let Some(Output::Transmit(tid, bytes)) = client.poll_output() else {
        panic!()
    };
    assert_eq!(tid, id);
    assert!(bytes.starts_with(b"<stream:stream"));
    assert_eq!(c.0, id.0);
}

#[test]
fn a_busy_connection_lost_young_is_replaced_at_once_every_time() {
    // One connection lost every couple of seconds, each after carrying messages: the backoff
    // must not grow (it exists for connections that achieve nothing).
    let mut net = net_up(predictable());
    net.auto_ack = true;
    let mut delays = Vec::new();
    for round in 0..8 {
        let c = net.only_conn();
        for i in 0..20 {
            net.send(msg(&format!("m-{round}-{i}")));
        }
        net.advance(secs(2));
        net.take_events();
        net.kill(c);
        delays.push(retry_delays(&net.client_events)[0]);
        net.drive();
        assert_eq!(ups(&net.client_events).len(), 1, "replaced at once");
    }
    assert!(
        delays.iter().all(|d| *d == Some(Duration::ZERO)),
        "{delays:?}"
    );
    assert_eq!(net.client.stats().acked, 160);
}

#[test]
fn a_young_connection_without_a_single_answer_still_backs_off() {
    // Messages sent but never answered do not make a connection healthy.
    let mut net = net_up(predictable());
    let mut delays = Vec::new();
    for round in 0..4 {
        let c = net.only_conn();
        net.send(msg(&format!("m-{round}")));
        net.advance(secs(1));
        net.take_events();
        net.kill(c);
        let d = retry_delays(&net.client_events)[0].unwrap();
        delays.push(d);
        net.advance(d + secs(1));
    }
    assert_eq!(delays, [secs(1), secs(2), secs(4), secs(8)]);
}

fn first_connect_failed(events: &[ClientEvent]) -> Vec<(DownReason, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::FirstConnectFailed { error, permanent } => {
                Some((error.clone(), *permanent))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_first_connection_that_fails_transiently_is_retried_until_one_comes_up() {
    // A server that breaks its first connections (refused, a stream cut after bind, a
    // silent dial): the client keeps trying within the first-connection deadline.
    let mut net = new_net(predictable());
    net.dial_plan
        .extend([Dial::Refuse, Dial::Accept, Dial::Refuse, Dial::Accept]);
    net.send(msg("m"));
    net.run_until(10_000, |n| !n.bound().is_empty());
    let first_up = net.bound()[0];
    net.kill(first_up); // dies young, before any answer
    net.advance(secs(10));
    assert!(first_connect_failed(&net.client_events).is_empty());
    net.ack_all();
    net.drive();
    assert!(outcomes(&net.client_events)[0].2.is_acked());
    assert!(!net.client.is_closing());
}

#[test]
fn the_first_connection_gives_up_at_its_deadline_with_the_last_error() {
    let mut config = predictable();
    config.reconnect.first_connect_timeout = secs(20);
    let mut net = new_net(config);
    net.dial_default = Dial::Refuse;
    let t = net.send(msg("m"));
    net.advance(secs(19));
    assert!(first_connect_failed(&net.client_events).is_empty());
    assert!(!net.client.is_closing());
    net.advance(secs(2));
    let gave_up = first_connect_failed(&net.client_events);
    assert_eq!(gave_up.len(), 1, "{:?}", net.client_events);
    assert!(matches!(gave_up[0], (DownReason::ConnectFailed(_), false)));
    assert!(net.client.is_closed());
    let got = outcomes(&net.client_events);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, t.get());
    assert_eq!(
        got[0].2,
        ccs_proto::Outcome::Unsent {
            maybe_delivered: false
        }
    );
    assert!(
        matches!(net.client_events.last(), Some(ClientEvent::Closed { .. })),
        "Closed is the last event"
    );
}

#[test]
fn refused_credentials_on_the_first_connection_give_up_at_once() {
    let mut net = new_net(predictable());
    net.dial_default = Dial::BadKey;
    net.advance(ms(500));
    let gave_up = first_connect_failed(&net.client_events);
    assert_eq!(gave_up.len(), 1, "{:?}", net.client_events);
    assert!(gave_up[0].0.is_auth_failure());
    assert!(gave_up[0].1, "permanent");
    assert!(net.client.is_closed());
    assert_eq!(net.client.stats().connection_attempts, 1);
}

#[test]
fn a_permanent_transport_failure_on_the_first_connection_gives_up_at_once() {
    use ccs_proto::client::ConnectFailure;
    let now = epoch();
    let mut client = ccs_proto::Client::new(predictable(), now).unwrap();
    let Some(Output::Connect(id)) = client.poll_output() else {
        panic!("a connect first")
    };
    client.handle_connect_failed(
        now,
        id,
        ConnectFailure::permanent("certificate not trusted"),
    );
    let events: Vec<ClientEvent> = std::iter::from_fn(|| client.poll_output())
        .filter_map(|o| match o {
            Output::Event(e) => Some(e),
            _ => None,
        })
        .collect();
    let gave_up = first_connect_failed(&events);
    assert_eq!(
        gave_up,
        [(
            DownReason::ConnectFailedPermanently("certificate not trusted".into()),
            true
        )]
    );
    assert!(client.is_closed());
}

#[test]
fn after_a_first_connection_nothing_gives_up() {
    let mut net = net_up(predictable());
    let c = net.only_conn();
    net.dial_default = Dial::BadKey;
    net.kill(c);
    net.advance(secs(600));
    assert!(first_connect_failed(&net.client_events).is_empty());
    assert!(!net.client.is_closing());
    assert!(net.client.stats().auth_failures > 5);
}

#[test]
fn a_drained_connection_never_closed_by_the_server_hands_its_messages_back_at_the_deadline() {
    let mut config = predictable();
    config.connection.drain_timeout = secs(5);
    config.ack_timeout = None;
    let mut net = net_up(config);
    let old = net.only_conn();
    net.advance(secs(11)); // healthy: its replacement opens at once
    net.send(msg("a"));
    net.send(msg("b"));
    net.drive();
    net.server(old)
        .send_control(&Control::connection_draining())
        .unwrap();
    net.drive();
    let new = net.only_conn();
    assert_ne!(new, old);
    // The old server answers pings but never the messages, and never closes.
    net.advance(secs(4));
    assert!(net.pending(new).is_empty());
    net.advance(secs(2));
    let d = downs(&net.client_events);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].0, old);
    assert_eq!(d[0].1, DownReason::Closed(CloseReason::DrainTimeout));
    assert_eq!(net.pending(new), ["a", "b"], "same ids, on the replacement");
    // Answers that the old server might still send cannot reach the client: it is gone.
    net.ack_all();
    net.drive();
    let got = outcomes(&net.client_events);
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|o| o.2.is_acked()));
    assert!(net.violations.is_empty(), "{:?}", net.violations);
}
