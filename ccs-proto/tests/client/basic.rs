//! The client's basic contract: outcomes by ticket, back-pressure, duplicate ids, window and
//! round robin over connections, the Connect/Disconnect pairing.

use std::time::Duration;

use crate::fixtures::*;
use ccs_proto::client::{ClientEvent, Outcome, Output, Phase, SendErrorKind};
use ccs_proto::connection::ConnId;
use ccs_proto::message::{Incoming, NackCode};
use ccs_proto::server::ServerEvent;

#[test]
fn sends_and_reports_each_outcome_with_its_ticket() {
    let mut net = net_up(client_config());
    net.auto_ack = true;
    let tickets: Vec<u64> = (0..3)
        .map(|i| net.send(msg(&format!("m-{i}"))).get())
        .collect();
    assert_eq!(tickets, [0, 1, 2]);
    net.drive();
    let got = outcomes(&net.client_events);
    assert_eq!(got.len(), 3);
    for (i, (ticket, id, outcome)) in got.iter().enumerate() {
        assert_eq!(*ticket, i as u64);
        assert_eq!(id, &format!("m-{i}"));
        assert_eq!(
            outcome,
            &Outcome::Acked {
                canonical_registration_id: None
            }
        );
    }
    let s = net.client.stats();
    assert_eq!((s.queued, s.sent, s.acked, s.outcomes()), (3, 3, 3, 3));
    assert_eq!(s.connection_attempts, 1);
    assert_eq!(s.connections_opened, 1);
    assert!(s.bytes_in > 0 && s.bytes_out > 0);
    assert_eq!(net.client.queued(), 0);
    assert_eq!(net.client.in_flight(), 0);
}

#[test]
fn canonical_ids_nacks_and_stanza_errors_are_outcomes() {
    let mut net = net_up(client_config());
    let c = net.only_conn();
    for id in ["a", "b", "c"] {
        net.send(msg(id));
    }
    net.drive();
    net.server(c).ack("a", Some("new-token")).unwrap();
    net.server(c)
        .nack("b", NackCode::DeviceUnregistered, None)
        .unwrap();
    net.server(c)
        .stanza_error("c", "bad-request", Some("no"))
        .unwrap();
    net.drive();
    let got = outcomes(&net.client_events);
    assert_eq!(
        got[0].2,
        Outcome::Acked {
            canonical_registration_id: Some("new-token".into())
        }
    );
    assert!(
        matches!(&got[1].2, Outcome::Nacked { nack } if nack.error == NackCode::DeviceUnregistered)
    );
    assert!(matches!(&got[2].2, Outcome::Rejected { error } if error.condition == "bad-request"));
    let s = net.client.stats();
    assert_eq!(
        (s.acked, s.nacked_final, s.rejected, s.nacked),
        (1, 1, 1, 1)
    );
    assert_eq!(s.nacked_by_code.get("DEVICE_UNREGISTERED"), Some(&1));
}

#[test]
fn a_full_queue_gives_the_message_back_and_says_when_it_has_room() {
    let mut config = client_config();
    config.max_queue = 2;
    let mut net = new_net(config);
    net.dial_default = Dial::Silent; // no connection yet: everything stays queued
    let now = net.now;
    net.client.send(now, msg("a")).unwrap();
    net.client.send(now, msg("b")).unwrap();
    let err = net.client.send(now, msg("c")).unwrap_err();
    assert_eq!(err.kind, SendErrorKind::QueueFull { limit: 2 });
    assert_eq!(err.message.message_id().as_str(), "c");
    assert!(err.to_string().contains("queue is full"));
    assert_eq!(net.client.queued(), 2);
    assert!(!net.take_events().contains(&ClientEvent::QueueOpen));

    // A connection comes up (the silent dial times out, the next one is accepted).
    net.dial_default = Dial::Accept;
    net.advance(Duration::from_secs(20));
    let events = net.take_events();
    assert_eq!(
        events
            .iter()
            .filter(|e| **e == ClientEvent::QueueOpen)
            .count(),
        1
    );
    assert_eq!(net.client.queued(), 0);
    assert_eq!(net.client.in_flight(), 2);
    net.send(msg("c"));
}

#[test]
fn a_message_id_still_pending_is_refused() {
    let mut net = net_up(client_config());
    net.send(msg("same"));
    let now = net.now;
    let err = net.client.send(now, msg("same")).unwrap_err();
    assert_eq!(err.kind, SendErrorKind::DuplicateId);
    net.drive();
    net.ack_all();
    net.drive();
    assert_eq!(acked_ids(&net.client_events), ["same"]);
    net.send(msg("same")); // answered: the id may be used again
}

#[test]
fn the_optional_payload_limit_is_checked_at_send() {
    let mut config = client_config();
    config.connection.max_payload_bytes = Some(64);
    let mut net = net_up(config);
    let big = ccs_proto::message::Downstream::builder("tok", "big")
        .unwrap()
        .data(serde_json::json!({"x": "y".repeat(100)}))
        .unwrap()
        .build();
    let now = net.now;
    let err = net.client.send(now, big).unwrap_err();
    assert!(matches!(
        err.kind,
        SendErrorKind::TooLarge { limit: 64, .. }
    ));
    net.send(msg("small"));
}

#[test]
fn messages_spread_over_connections_and_never_exceed_a_window() {
    let mut config = client_config();
    config.connections = 2;
    config.connection.window = 3;
    let mut net = net_up(config);
    for i in 0..10 {
        net.send(msg(&format!("m-{i}")));
    }
    net.drive();
    let conns: Vec<ConnId> = net.servers.keys().copied().collect();
    assert_eq!(conns.len(), 2);
    // Round robin: alternate connections, three each, the rest waits.
    assert_eq!(net.pending(conns[0]), ["m-0", "m-2", "m-4"]);
    assert_eq!(net.pending(conns[1]), ["m-1", "m-3", "m-5"]);
    assert_eq!(net.client.queued(), 4);
    assert_eq!(net.client.in_flight(), 6);
    assert!(
        net.client
            .connections()
            .all(|c| c.in_flight == 3 && c.window == 3)
    );

    // One answer frees one slot: the oldest queued message takes it.
    net.server(conns[1]).ack("m-3", None).unwrap();
    net.drive();
    assert_eq!(net.pending(conns[1]), ["m-1", "m-5", "m-6"]);
    while net.client.queued() + net.client.in_flight() > 0 {
        net.ack_all();
        net.drive();
    }
    assert_eq!(acked_ids(&net.client_events).len(), 10);
    assert!(
        !net.server_events
            .iter()
            .any(|(_, e)| matches!(e, ServerEvent::WindowViolation { .. }))
    );
}

#[test]
fn every_connect_has_one_disconnect_and_one_down() {
    let mut config = client_config();
    config.reconnect.base = Duration::from_millis(10);
    let mut net = new_net(config);
    net.dial_plan.extend([Dial::Refuse, Dial::Accept]);
    net.advance(Duration::from_secs(5));
    let c = net.only_conn();
    // (After a first connection, a refused key backs off rather than ending the client.)
    net.dial_plan
        .extend([Dial::Refuse, Dial::BadKey, Dial::Accept]);
    net.kill(c);
    net.advance(Duration::from_secs(5));
    let now = net.now;
    net.client.close(now, now + Duration::from_secs(1));
    net.advance(Duration::from_secs(2));
    assert!(net.client.is_closed());
    assert!(net.violations.is_empty(), "{:?}", net.violations);
    let mut connects = net.connects.clone();
    let mut disconnects = net.disconnects.clone();
    connects.sort();
    disconnects.sort();
    assert_eq!(connects, disconnects);
    let down: Vec<ConnId> = downs(&net.client_events).iter().map(|d| d.0).collect();
    assert_eq!(down.len(), connects.len());
    assert_eq!(net.client.poll_timeout(), None);
}

#[test]
fn a_transport_for_a_forgotten_id_is_disconnected() {
    let mut net = net_up(client_config());
    let now = net.now;
    net.client.handle_connected(now, ConnId(999));
    assert!(matches!(
        net.client.poll_output(),
        Some(Output::Disconnect(ConnId(999)))
    ));
    net.client.handle_input(now, ConnId(999), b"<junk");
    net.client.handle_eof(now, ConnId(999));
    net.client.handle_connect_failed(now, ConnId(999), "x");
    assert!(net.client.poll_output().is_none());
}

#[test]
fn connection_phases_are_visible() {
    let mut net = new_net(client_config());
    let phases = |net: &Net| {
        net.client
            .connections()
            .map(|c| c.phase)
            .collect::<Vec<_>>()
    };
    assert_eq!(phases(&net), [Phase::Connecting]);
    net.advance(net.latency);
    assert_eq!(phases(&net), [Phase::SettingUp]);
    net.drive();
    assert_eq!(phases(&net), [Phase::Up]);
}

#[test]
fn unknown_messages_and_anomalies_reach_the_application() {
    let mut net = net_up(client_config());
    let c = net.only_conn();
    let unknown = Incoming::from_json(r#"{"message_type":"shiny","x":1}"#).unwrap();
    net.server(c).send_raw_incoming(&unknown).unwrap();
    let bogus = Incoming::from_json(r#"{"message_type":"ack","message_id":"nope"}"#).unwrap();
    net.server(c).send_raw_incoming(&bogus).unwrap();
    net.drive();
    let events = net.take_events();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ClientEvent::Unrecognized { id, .. } if *id == c))
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ClientEvent::Anomaly { id, .. } if *id == c))
    );
    assert_eq!(net.client.stats().outcomes(), 0);
}

#[test]
fn debug_output_never_shows_the_queued_auth() {
    use base64::Engine as _;
    use ccs_proto::Client;
    let now = epoch();
    let mut client = Client::new(client_config(), now).unwrap();
    let Some(Output::Connect(id)) = client.poll_output() else {
        panic!("a connect first")
    };
    client.handle_connected(now, id);
    client.handle_input(
        now,
        id,
        b"<stream:stream from='gcm.googleapis.com' id='1' version='1.0' \
          xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>\
          <stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
          <mechanism>PLAIN</mechanism></mechanisms></stream:features>",
    );
    let config = client_config();
    let secret = base64::engine::general_purpose::STANDARD.encode(format!(
        "\u{0}{}@gcm.googleapis.com\u{0}{}",
        config.connection.sender_id,
        config.connection.server_key.expose()
    ));
    let debug = format!("{client:?}");
    // Neither as text nor as the byte list a derived `Debug` of a `Vec<u8>` prints.
    let as_bytes = format!("{:?}", secret.as_bytes());
    let as_bytes = as_bytes.trim_start_matches('[').trim_end_matches(']');
    assert!(!debug.contains(&secret), "{debug}");
    assert!(!debug.contains(as_bytes), "{debug}");
    let outputs: Vec<Output> = std::iter::from_fn(|| client.poll_output()).collect();
    let debug = format!("{outputs:?}");
    assert!(!debug.contains(&secret), "{debug}");
    assert!(!debug.contains(as_bytes), "{debug}");
    let wire: Vec<u8> = outputs
        .into_iter()
        .filter_map(|o| match o {
            Output::Transmit(_, b) => Some(b),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(
        String::from_utf8(wire).unwrap().contains(&secret),
        "the test looks for the right bytes"
    );
}
