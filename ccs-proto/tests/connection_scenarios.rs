//! Connection scenarios over the in-memory `Pair`: a real client against the real server role
//! with simulated time. Every scenario also runs with transfers cut into random pieces.

use std::time::{Duration, Instant};

use ccs_proto::connection::{AckError, CloseReason, ConnectionSendErrorKind, State};
use ccs_proto::message::{
    Control, Downstream, Incoming, MessageId, NackCode, Notification, Priority, Receipt, Upstream,
};
use ccs_proto::server::{ServerConfig, ServerEvent};
use ccs_proto::testing::{Direction, Pair, ServerPolicy};
use ccs_proto::{AckMode, ConnectionConfig, ConnectionEvent};

/// Runs a scenario unsplit and under several chunking seeds.
fn each_way(scenario: impl Fn(&mut Pair)) {
    for chunking in [
        None,
        Some((1, 1)),
        Some((7, 5)),
        Some((42, 64)),
        Some((99, 300)),
    ] {
        let mut pair = make(Pair::client_config(), Pair::server_config(), chunking);
        scenario(&mut pair);
    }
}

#[allow(clippy::disallowed_methods)] // the simulated clock's epoch
fn epoch() -> Instant {
    Instant::now()
}

fn make(client: ConnectionConfig, server: ServerConfig, chunking: Option<(u64, usize)>) -> Pair {
    let pair = Pair::new(client, server, epoch());
    match chunking {
        Some((seed, max)) => pair.with_chunking(seed, max),
        None => pair,
    }
}

fn msg(id: &str) -> Downstream {
    Downstream::builder("APA91bTOKEN", id).unwrap().build()
}

fn closed(pair: &Pair) -> Option<(&CloseReason, &[Box<Downstream>])> {
    pair.client_events.iter().find_map(|e| match e {
        ConnectionEvent::Closed { reason, unanswered } => Some((reason, unanswered.as_slice())),
        _ => None,
    })
}

fn count(pair: &Pair, f: impl Fn(&ConnectionEvent) -> bool) -> usize {
    pair.client_events.iter().filter(|e| f(e)).count()
}

fn ids(messages: &[Box<Downstream>]) -> Vec<&str> {
    messages.iter().map(|m| m.message_id().as_str()).collect()
}

fn send(pair: &mut Pair, id: &str) {
    let now = pair.now;
    pair.client.send(now, msg(id)).unwrap();
}

#[test]
fn happy_path_ten_thousand_messages() {
    each_way(|pair| {
        pair.server_policy = ServerPolicy::AutoAck;
        pair.connect();
        let total = 10_000;
        let mut next = 0;
        while next < total {
            while next < total && pair.client.can_send() {
                send(pair, &format!("m-{next}"));
                next += 1;
            }
            pair.drive();
        }
        assert_eq!(
            count(pair, |e| matches!(e, ConnectionEvent::Acked { .. })),
            total
        );
        assert_eq!(pair.client.in_flight(), 0);
        assert_eq!(pair.server.window_violations(), 0);
        assert_eq!(pair.client.stats().sent, total as u64);
        // Acks come back in order here, each carrying its message.
        let acked: Vec<_> = pair
            .client_events
            .iter()
            .filter_map(|e| match e {
                ConnectionEvent::Acked { message, .. } => Some(message.message_id().as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(acked[0], "m-0");
        assert_eq!(acked[total - 1], format!("m-{}", total - 1));
    });
}

#[test]
fn connected_event_carries_the_jid_with_resource_suffix() {
    let mut c = Pair::client_config();
    c.resource = Some("app".into());
    let mut pair = make(c, Pair::server_config(), None);
    pair.connect();
    let jid = pair.client.jid().unwrap();
    assert!(
        jid.starts_with("123456789012@gcm.googleapis.com/app"),
        "{jid}"
    );
    assert_eq!(jid.len(), "123456789012@gcm.googleapis.com/app".len() + 8);
    assert!(matches!(&pair.client_events[0], ConnectionEvent::Connected { jid: j } if j == jid));
}

#[test]
fn plain_not_offered() {
    let mut s = Pair::server_config();
    s.mechanisms = vec!["X-OAUTH2".into(), "X-GOOGLE-TOKEN".into()];
    let mut pair = make(Pair::client_config(), s, None);
    pair.drive();
    let (reason, _) = closed(&pair).unwrap();
    assert_eq!(
        reason,
        &CloseReason::PlainNotOffered {
            offered: vec!["X-OAUTH2".into(), "X-GOOGLE-TOKEN".into()]
        }
    );
    assert_eq!(pair.client.state(), State::Closed);
}

#[test]
fn wrong_key_is_not_authorized() {
    let mut s = Pair::server_config();
    s.server_key = ccs_proto::credentials::ServerKey::new("other-key").unwrap();
    let mut pair = make(Pair::client_config(), s, Some((3, 7)));
    pair.drive();
    let (reason, unanswered) = closed(&pair).unwrap();
    assert!(reason.is_auth_failure(), "{reason:?}");
    assert!(
        matches!(reason, CloseReason::AuthFailed { condition, .. } if condition == "not-authorized")
    );
    assert!(unanswered.is_empty());
    assert_eq!(
        count(&pair, |e| matches!(e, ConnectionEvent::Closed { .. })),
        1
    );
}

#[test]
fn window_full_then_room_again() {
    each_way(|pair| {
        let mut c = Pair::client_config();
        c.window = 2;
        *pair = make(c, Pair::server_config(), None);
        pair.connect();
        send(pair, "a");
        send(pair, "b");
        let now = pair.now;
        let err = pair.client.send(now, msg("c")).unwrap_err();
        assert_eq!(err.kind, ConnectionSendErrorKind::Blocked);
        assert_eq!(err.message.message_id().as_str(), "c");
        assert!(!pair.client.can_send());
        pair.drive();
        assert_eq!(pair.server.pending(), 2);
        assert_eq!(pair.server.window_violations(), 0);
        pair.server.ack("a", None).unwrap();
        pair.drive();
        assert_eq!(count(pair, |e| matches!(e, ConnectionEvent::WindowOpen)), 1);
        send(pair, "c");
        // Our acks of upstream messages are never held back by a full window.
        send_upstream(pair, "up-1");
        pair.drive();
        assert!(
            pair.server_events
                .iter()
                .any(|e| matches!(e, ServerEvent::AppAck(a) if a.message_id.as_str() == "up-1"))
        );
    });
}

#[test]
fn duplicate_id_in_flight_is_refused() {
    let mut pair = make(Pair::client_config(), Pair::server_config(), None);
    pair.connect();
    send(&mut pair, "a");
    let now = pair.now;
    let err = pair.client.send(now, msg("a")).unwrap_err();
    assert_eq!(err.kind, ConnectionSendErrorKind::DuplicateId);
    assert_eq!(pair.client.in_flight(), 1);
}

#[test]
fn sends_before_connected_are_refused_with_the_message() {
    let mut pair = make(Pair::client_config(), Pair::server_config(), None);
    let now = pair.now;
    let err = pair.client.send(now, msg("early")).unwrap_err();
    assert_eq!(err.kind, ConnectionSendErrorKind::NotReady);
    assert_eq!(err.message.message_id().as_str(), "early");
}

fn every_kind_of_message() -> Vec<Downstream> {
    let notification = Notification {
        title: Some("t <&> ]]>".into()),
        body: Some("b \u{1F600}".into()),
        ..Notification::default()
    };
    vec![
        msg("plain"),
        Downstream::builder("/topics/news", "topic")
            .unwrap()
            .build(),
        Downstream::builder_condition("'a' in topics && 'b' in topics", "cond")
            .unwrap()
            .build(),
        Downstream::builder("tok", "full")
            .unwrap()
            .collapse_key("ck")
            .priority(Priority::High)
            .content_available(true)
            .mutable_content(true)
            .time_to_live(0)
            .unwrap()
            .delay_while_idle(false)
            .delivery_receipt_requested(true)
            .dry_run(true)
            .data(serde_json::json!({"k": "v \"<x>\" &amp; \u{0001}"}))
            .unwrap()
            .notification(notification)
            .build(),
        Downstream::builder("tok", "id with <&\"'> chars")
            .unwrap()
            .build(),
    ]
}

#[test]
fn ack_nack_and_stanza_error_for_every_kind() {
    each_way(|pair| {
        pair.connect();
        let kinds = every_kind_of_message();
        // Ack each (with a canonical id), then nack each with every code, then stanza errors.
        let codes = [
            NackCode::BadRegistration,
            NackCode::DeviceUnregistered,
            NackCode::InternalServerError,
            NackCode::ServiceUnavailable,
            // (BAD_ACK answers our acks, never a downstream message: see below.)
            NackCode::InvalidJson,
            NackCode::DeviceMessageRateExceeded,
            NackCode::TopicsMessageRateExceeded,
            NackCode::QuotaExceeded,
            NackCode::AuthenticationFailed,
            NackCode::InvalidTtl,
            NackCode::JsonTypeError,
            NackCode::InvalidApnsCredential,
            NackCode::Unknown("SOMETHING_NEW".into()),
        ];
        for round in 0..(2 + codes.len()) {
            for m in &kinds {
                let now = pair.now;
                pair.client.send(now, m.clone()).unwrap();
            }
            pair.drive();
            for m in &kinds {
                let id = m.message_id().as_str();
                match round {
                    0 => pair.server.ack(id, Some("canonical-1")).unwrap(),
                    1 => pair
                        .server
                        .stanza_error(id, "bad-request", Some("InvalidJson: JSON_PARSING_ERROR"))
                        .unwrap(),
                    r => pair
                        .server
                        .nack(id, codes[r - 2].clone(), Some("why"))
                        .unwrap(),
                }
            }
            let before = pair.client_events.len();
            pair.drive();
            let answers = &pair.client_events[before..];
            assert_eq!(answers.len(), kinds.len(), "round {round}: {answers:?}");
            for (m, e) in kinds.iter().zip(answers) {
                match (round, e) {
                    (
                        0,
                        ConnectionEvent::Acked {
                            message,
                            canonical_registration_id,
                        },
                    ) => {
                        assert_eq!(**message, *m);
                        assert_eq!(canonical_registration_id.as_deref(), Some("canonical-1"));
                    }
                    (1, ConnectionEvent::StanzaError { message, error }) => {
                        assert_eq!(**message, *m);
                        assert_eq!(error.condition, "bad-request");
                    }
                    (r, ConnectionEvent::Nacked { message, nack }) if r >= 2 => {
                        assert_eq!(**message, *m);
                        assert_eq!(nack.error, codes[r - 2]);
                        assert_eq!(nack.error_description.as_deref(), Some("why"));
                    }
                    other => panic!("round {round}: unexpected {other:?}"),
                }
            }
        }
        assert_eq!(pair.client.in_flight(), 0);
        assert_eq!(pair.server.pending(), 0);
    });
}

#[test]
fn stanza_error_tied_by_echoed_message_id_when_stanza_id_is_unusable() {
    let mut pair = make(Pair::client_config(), Pair::server_config(), None);
    pair.connect();
    send(&mut pair, "m-7");
    pair.drive();
    pair.server
        .send_stanza_error_raw(
            Some("not-our-id"),
            Some(r#"{"to":"APA91bTOKEN","message_id":"m-7"}"#),
            "bad-request",
            None,
        )
        .unwrap();
    pair.drive();
    assert!(
        matches!(pair.client_events.last(), Some(ConnectionEvent::StanzaError { message, .. }) if message.message_id().as_str() == "m-7")
    );
    assert_eq!(pair.client.in_flight(), 0);
}

#[test]
fn answers_for_unknown_ids_are_anomalies_not_crashes() {
    let mut pair = make(Pair::client_config(), Pair::server_config(), None);
    pair.connect();
    let id = MessageId::new("never-sent").unwrap();
    pair.server
        .send_raw_incoming(&Incoming::Ack(ccs_proto::message::Ack::new(id.clone())))
        .unwrap();
    pair.server
        .send_raw_incoming(&Incoming::Nack(ccs_proto::message::Nack::new(
            id,
            NackCode::BadRegistration,
        )))
        .unwrap();
    pair.drive();
    assert_eq!(
        count(&pair, |e| matches!(e, ConnectionEvent::Anomaly(_))),
        2
    );
    assert_eq!(pair.client.state(), State::Connected);
    // Nothing was acked back for them.
    assert!(
        !pair
            .server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::AppAck(_)))
    );
}

/// The ack handles of the upstream messages the client reported (manual mode).
fn upstream_ack_handles(pair: &Pair) -> Vec<ccs_proto::connection::AckHandle> {
    pair.client_events
        .iter()
        .filter_map(|e| match e {
            ConnectionEvent::Upstream { ack: Some(h), .. } => Some(h.clone()),
            _ => None,
        })
        .collect()
}

fn upstream_from(from: &str, id: &str) -> Upstream {
    match Incoming::from_json(&format!(
        r#"{{"from":"{from}","category":"com.example","message_id":"{id}","data":{{"hello":"world"}}}}"#
    ))
    .unwrap()
    {
        Incoming::Upstream(u) => u,
        _ => unreachable!(),
    }
}

fn send_upstream(pair: &mut Pair, id: &str) {
    pair.server
        .send_upstream(&upstream_from("DEVICE", id))
        .unwrap();
}

#[test]
fn upstream_auto_ack() {
    each_way(|pair| {
        pair.connect();
        for i in 0..20 {
            send_upstream(pair, &format!("up-{i}"));
        }
        pair.drive();
        assert_eq!(
            count(pair, |e| matches!(
                e,
                ConnectionEvent::Upstream { ack: None, .. }
            )),
            20
        );
        assert_eq!(pair.server.unacked_upstream().count(), 0);
        let acks = pair
            .server_events
            .iter()
            .filter(|e| matches!(e, ServerEvent::AppAck(a) if a.to == "DEVICE"))
            .count();
        assert_eq!(acks, 20);
    });
}

#[test]
fn upstream_manual_ack() {
    let mut c = Pair::client_config();
    c.ack_mode = AckMode::Manual;
    let mut pair = make(c, Pair::server_config(), Some((5, 9)));
    pair.connect();
    send_upstream(&mut pair, "up-1");
    send_upstream(&mut pair, "up-2");
    pair.drive();
    let handles = upstream_ack_handles(&pair);
    assert_eq!(handles.len(), 2);
    assert_eq!(
        pair.server.unacked_upstream().count(),
        2,
        "nothing acked before the app says so"
    );
    let now = pair.now;
    pair.client.ack(now, &handles[0]).unwrap();
    assert_eq!(pair.client.ack(now, &handles[0]), Err(AckError::NotPending));
    pair.drive();
    assert_eq!(pair.server.unacked_upstream().count(), 1);
    // After the connection is gone the ack is refused: the server redelivers instead.
    pair.disconnect();
    let now = pair.now;
    assert_eq!(
        pair.client.ack(now, &handles[1]),
        Err(AckError::ConnectionGone)
    );
}

/// One turn of the run loop in `Connection`'s docs: events first, then transmits, until both
/// are empty. Returns every byte written in the turn.
fn documented_turn(
    conn: &mut ccs_proto::Connection,
    mut handle: impl FnMut(&mut ccs_proto::Connection, ConnectionEvent),
) -> Vec<u8> {
    let mut written = Vec::new();
    loop {
        let mut idle = true;
        while let Some(event) = conn.poll_event() {
            idle = false;
            handle(conn, event);
        }
        while let Some(bytes) = conn.poll_transmit() {
            idle = false;
            written.extend_from_slice(&bytes);
        }
        if idle {
            break;
        }
    }
    written
}

#[test]
fn an_ack_issued_while_handling_upstream_goes_out_in_the_same_turn() {
    let mut c = Pair::client_config();
    c.ack_mode = AckMode::Manual;
    let mut pair = make(c, Pair::server_config(), None);
    pair.connect();
    send_upstream(&mut pair, "up-1");
    let now = pair.now;
    let mut inbound = Vec::new();
    while let Some(bytes) = pair.server.poll_transmit() {
        inbound.extend_from_slice(&bytes);
    }
    pair.client.handle_input(now, &inbound);

    let mut handled = 0;
    let written = documented_turn(&mut pair.client, |conn, event| {
        if let ConnectionEvent::Upstream { ack: Some(h), .. } = event {
            handled += 1;
            conn.ack(now, &h).unwrap();
        }
    });
    assert_eq!(handled, 1);
    assert!(
        pair.client.poll_transmit().is_none(),
        "nothing left for the next wake-up"
    );
    assert!(pair.client.poll_event().is_none());
    let text = String::from_utf8(written.clone()).unwrap();
    assert!(text.contains(r#""message_type":"ack""#), "{text}");
    assert!(text.contains(r#""message_id":"up-1""#), "{text}");

    // The server takes exactly those bytes as the ack of its message.
    pair.server.handle_input(now, &written);
    assert_eq!(pair.server.unacked_upstream().count(), 0);
    let mut acked = Vec::new();
    while let Some(event) = pair.server.poll_event() {
        if let ServerEvent::AppAck(a) = event {
            acked.push(a.message_id.as_str().to_owned());
        }
    }
    assert_eq!(acked, ["up-1"]);
}

#[test]
fn receipt_acked_with_its_dr2_id() {
    each_way(|pair| {
        pair.connect();
        let id = MessageId::new("m-42").unwrap();
        let receipt = Receipt::sent_to_device(&id, "DEVICE_TOKEN", 1_498_801_519_251);
        pair.server.send_receipt(&receipt).unwrap();
        pair.drive();
        let got = pair.client_events.iter().find_map(|e| match e {
            ConnectionEvent::Receipt { receipt, .. } => Some(receipt.clone()),
            _ => None,
        });
        let got = got.unwrap();
        assert_eq!(got.message_id.as_str(), "dr2:m-42");
        assert_eq!(
            got.original_message_id.as_ref().map(|m| m.as_str()),
            Some("m-42")
        );
        assert!(pair.server_events.iter().any(|e| matches!(e,
            ServerEvent::AppAck(a) if a.message_id.as_str() == "dr2:m-42" && a.to == "gcm.googleapis.com")));
        assert_eq!(pair.server.unacked_upstream().count(), 0);
    });
}

/// Connects, sends "a" and "b", then the server announces CONNECTION_DRAINING.
fn drain_with_a_and_b_in_flight(pair: &mut Pair) {
    pair.connect();
    send(pair, "a");
    send(pair, "b");
    pair.drive();
    pair.server
        .send_control(&Control::connection_draining())
        .unwrap();
    pair.drive();
    assert_eq!(pair.client.state(), State::Draining);
}

#[test]
fn draining_by_control_message() {
    each_way(|pair| {
        drain_with_a_and_b_in_flight(pair);
        assert_eq!(count(pair, |e| matches!(e, ConnectionEvent::Draining)), 1);
        let now = pair.now;
        let err = pair.client.send(now, msg("c")).unwrap_err();
        assert_eq!(err.kind, ConnectionSendErrorKind::Draining);
        // In-flight answers and upstream messages still flow and are acked.
        pair.server.ack("a", None).unwrap();
        send_upstream(pair, "up-d");
        pair.drive();
        assert_eq!(
            count(pair, |e| matches!(e, ConnectionEvent::Acked { .. })),
            1
        );
        assert!(
            pair.server_events
                .iter()
                .any(|e| matches!(e, ServerEvent::AppAck(_)))
        );
        // The server closes it: "b" comes back unanswered, for sending elsewhere.
        pair.server.close(pair.now).unwrap();
        pair.drive();
        let (reason, unanswered) = closed(pair).unwrap();
        assert_eq!(reason, &CloseReason::ServerClosed);
        assert_eq!(ids(unanswered), ["b"]);
    });
}

#[test]
fn draining_by_nack_hands_the_message_back() {
    each_way(|pair| {
        pair.connect();
        send(pair, "a");
        send(pair, "b");
        pair.drive();
        pair.server
            .nack("a", NackCode::ConnectionDraining, None)
            .unwrap();
        pair.drive();
        assert_eq!(pair.client.state(), State::Draining);
        let returned: Vec<_> = pair
            .client_events
            .iter()
            .filter_map(|e| match e {
                ConnectionEvent::Returned { message } => Some(message.message_id().as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(returned, ["a"]);
        assert_eq!(
            count(pair, |e| matches!(e, ConnectionEvent::Nacked { .. })),
            0
        );
        assert_eq!(pair.client.in_flight(), 1);
    });
}

#[test]
fn ping_timeout_when_the_server_goes_quiet() {
    let mut pair = make(Pair::client_config(), Pair::server_config(), None);
    pair.connect();
    send(&mut pair, "a");
    pair.drive();
    pair.mute(Direction::ToClient);
    pair.advance(Duration::from_secs(59));
    assert_eq!(pair.client.stats().pings_sent, 0);
    assert!(
        pair.client.stats().keepalives_sent >= 1,
        "a keepalive after 30 s idle"
    );
    pair.advance(Duration::from_secs(2));
    assert_eq!(pair.client.stats().pings_sent, 1);
    assert_eq!(pair.client.state(), State::Connected);
    pair.advance(Duration::from_secs(31));
    let (reason, unanswered) = closed(&pair).unwrap();
    assert_eq!(reason, &CloseReason::PingTimeout);
    assert_eq!(ids(unanswered), ["a"]);
}

#[test]
fn a_live_server_answers_pings_and_the_connection_stays() {
    let mut pair = make(Pair::client_config(), Pair::server_config(), Some((11, 4)));
    pair.connect();
    pair.advance(Duration::from_secs(3600));
    assert_eq!(pair.client.state(), State::Connected);
    assert!(pair.client.stats().pings_sent >= 30);
    assert!(
        pair.server_events
            .iter()
            .all(|e| !matches!(e, ServerEvent::Closed { .. }))
    );
}

#[test]
fn setup_timeout_when_the_server_never_answers() {
    let mut pair = make(Pair::client_config(), Pair::server_config(), None);
    pair.mute(Direction::ToClient);
    pair.advance(Duration::from_secs(16));
    let (reason, _) = closed(&pair).unwrap();
    assert_eq!(
        reason,
        &CloseReason::SetupTimeout {
            state: State::AwaitingHeader
        }
    );
}

#[test]
fn eof_mid_stanza() {
    for cut in [1, 10, 40, 80, 120] {
        let mut pair = make(Pair::client_config(), Pair::server_config(), None);
        pair.connect();
        send(&mut pair, "a");
        send(&mut pair, "b");
        pair.drive();
        pair.kill_after(Direction::ToClient, cut);
        pair.server.ack("a", None).unwrap();
        pair.server.ack("b", None).unwrap();
        pair.drive();
        let (reason, unanswered) = closed(&pair).unwrap();
        let acked = count(&pair, |e| matches!(e, ConnectionEvent::Acked { .. }));
        assert_eq!(
            acked + unanswered.len(),
            2,
            "cut {cut}: every message answered or handed back"
        );
        assert!(
            matches!(reason, CloseReason::Eof { mid_stanza: true }),
            "cut {cut}: {reason:?}"
        );
    }
}

#[test]
fn stream_error_from_the_server() {
    each_way(|pair| {
        pair.connect();
        send(pair, "a");
        pair.drive();
        pair.server
            .stream_error("system-shutdown", Some("bye"))
            .unwrap();
        pair.drive();
        let (reason, unanswered) = closed(pair).unwrap();
        assert!(
            matches!(reason, CloseReason::StreamError(e) if e.condition == "system-shutdown" && e.text.as_deref() == Some("bye"))
        );
        assert_eq!(ids(unanswered), ["a"]);
    });
}

#[test]
fn server_close_hands_back_what_is_in_flight() {
    each_way(|pair| {
        pair.connect();
        for id in ["a", "b", "c"] {
            send(pair, id);
        }
        pair.drive();
        pair.server.ack("b", None).unwrap();
        pair.server.close(pair.now).unwrap();
        pair.drive();
        let (reason, unanswered) = closed(pair).unwrap();
        assert_eq!(reason, &CloseReason::ServerClosed);
        assert_eq!(ids(unanswered), ["a", "c"]);
        assert_eq!(
            count(pair, |e| matches!(e, ConnectionEvent::Closed { .. })),
            1
        );
    });
}

#[test]
fn local_close_waits_for_answers_until_the_deadline() {
    each_way(|pair| {
        pair.connect();
        for id in ["a", "b", "c"] {
            send(pair, id);
        }
        pair.drive();
        let now = pair.now;
        pair.client.close(now, now + Duration::from_secs(5));
        assert_eq!(
            pair.client.send(now, msg("late")).unwrap_err().kind,
            ConnectionSendErrorKind::Closed
        );
        pair.server.ack("a", None).unwrap();
        pair.drive();
        assert_eq!(pair.client.state(), State::Closing);
        pair.advance(Duration::from_secs(5));
        let (reason, unanswered) = closed(pair).unwrap();
        assert_eq!(reason, &CloseReason::Local);
        assert_eq!(ids(unanswered), ["b", "c"]);
    });
}

#[test]
fn local_close_finishes_early_when_everything_is_answered() {
    let mut pair = make(Pair::client_config(), Pair::server_config(), None);
    pair.server_policy = ServerPolicy::AutoAck;
    pair.connect();
    send(&mut pair, "a");
    let now = pair.now;
    pair.client.close(now, now + Duration::from_secs(60));
    pair.drive();
    let (reason, unanswered) = closed(&pair).unwrap();
    assert_eq!(reason, &CloseReason::Local);
    assert!(unanswered.is_empty());
    assert!(pair.now < now + Duration::from_secs(1));
    assert!(
        pair.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::Closed { .. }))
    );
}

const SERVER_HEADER: &str = "<stream:stream from='gcm.googleapis.com' id='1' version='1.0' \
    xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>";
const SASL_FEATURES: &str = "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
    <mechanism>PLAIN</mechanism></mechanisms></stream:features>";
const SUCCESS: &str = "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>";

fn bind_features(session: bool) -> String {
    let session = if session {
        "<session xmlns='urn:ietf:params:xml:ns:xmpp-session'/>"
    } else {
        ""
    };
    format!(
        "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>{session}</stream:features>"
    )
}

fn bind_result(id: Option<&str>) -> String {
    let id = id.map(|i| format!(" id='{i}'")).unwrap_or_default();
    format!(
        "<iq type='result'{id}><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
         <jid>123456789012@gcm.googleapis.com/R</jid></bind></iq>"
    )
}

/// Everything a server sends up to and including the bind result, as one read.
fn through_bind(session: bool, bind_id: Option<&str>) -> String {
    format!(
        "{SERVER_HEADER}{SASL_FEATURES}{SUCCESS}{SERVER_HEADER}{}{}",
        bind_features(session),
        bind_result(bind_id)
    )
}

#[test]
fn restart_bytes_in_the_same_read_as_success() {
    // A server that sends <success/> and, in the same read, the new header and features
    // (as a pipelining server may once it has seen our new header).
    use ccs_proto::Connection;
    use ccs_proto::connection::ConnId;
    let now = epoch();
    let mut conn = Connection::new(ConnId(9), Pair::client_config(), now).unwrap();
    conn.handle_input(now, format!("{SERVER_HEADER}{SASL_FEATURES}").as_bytes());
    assert_eq!(conn.state(), State::Authenticating);
    let restart = format!("{SUCCESS}{SERVER_HEADER}{}", bind_features(false));
    conn.handle_input(now, restart.as_bytes());
    assert_eq!(conn.state(), State::Binding);
    conn.handle_input(now, bind_result(Some("bind_1")).as_bytes());
    assert_eq!(conn.state(), State::Connected);
    let out = String::from_utf8(
        std::iter::from_fn(|| conn.poll_transmit())
            .flatten()
            .collect(),
    )
    .unwrap();
    assert_eq!(out.matches("<stream:stream ").count(), 2, "{out}");
    assert!(out.contains("<auth mechanism=\"PLAIN\""));
    assert!(
        !out.contains("<session"),
        "session not offered, not requested"
    );
}

#[test]
fn protocol_error_closes_with_a_stream_error() {
    let mut pair = make(Pair::client_config(), Pair::server_config(), None);
    pair.connect();
    send(&mut pair, "a");
    pair.drive();
    let now = pair.now;
    pair.client
        .handle_input(now, b"<message><!-- no --></message>");
    let (reason, unanswered) = closed(&pair)
        .map(|(r, u)| (r.clone(), u.to_vec()))
        .unwrap_or_else(|| {
            let evs: Vec<_> = std::iter::from_fn(|| pair.client.poll_event()).collect();
            evs.into_iter()
                .find_map(|e| match e {
                    ConnectionEvent::Closed { reason, unanswered } => Some((reason, unanswered)),
                    _ => None,
                })
                .unwrap()
        });
    assert!(matches!(reason, CloseReason::Protocol(_)), "{reason:?}");
    assert_eq!(ids(&unanswered), ["a"]);
    let out = String::from_utf8(
        std::iter::from_fn(|| pair.client.poll_transmit())
            .flatten()
            .collect(),
    )
    .unwrap();
    assert!(out.contains("restricted-xml"), "{out}");
    assert!(out.ends_with("</stream:stream>"));
}

#[test]
fn connection_is_send() {
    fn is_send<T: Send>() {}
    is_send::<ccs_proto::Connection>();
    is_send::<ccs_proto::server::ServerConnection>();
}

#[test]
fn upstream_right_after_bind_before_the_session_result_is_taken_and_acked() {
    use ccs_proto::Connection;
    use ccs_proto::connection::ConnId;
    let now = epoch();
    let mut conn = Connection::new(ConnId(3), Pair::client_config(), now).unwrap();
    conn.handle_input(now, through_bind(true, Some("bind_1")).as_bytes());
    assert_eq!(conn.state(), State::StartingSession);
    conn.handle_input(
        now,
        br#"<message><gcm xmlns="google:mobile:data">{"from":"DEV","message_id":"u1","data":{}}</gcm></message>"#,
    );
    let events: Vec<_> = std::iter::from_fn(|| conn.poll_event()).collect();
    assert!(
        events.iter().any(|e| matches!(e, ConnectionEvent::Upstream { message, .. } if message.message_id.as_str() == "u1")),
        "{events:?}"
    );
    let out = String::from_utf8(
        std::iter::from_fn(|| conn.poll_transmit())
            .flatten()
            .collect(),
    )
    .unwrap();
    assert!(
        out.contains(r#""message_id":"u1","message_type":"ack""#),
        "{out}"
    );
    conn.handle_input(now, b"<iq type='result' id='sess_1'/>");
    assert_eq!(conn.state(), State::Connected);
}

#[test]
fn bare_authcid_form_is_accepted_by_the_server_role() {
    let mut c = Pair::client_config();
    c.authcid = ccs_proto::AuthcidForm::Bare;
    let mut pair = make(c, Pair::server_config(), None);
    pair.connect();
    assert!(
        pair.server_events.iter().any(
            |e| matches!(e, ServerEvent::Authenticated { authcid } if authcid == "123456789012")
        )
    );
}

#[test]
fn a_bind_result_without_an_id_is_taken() {
    use ccs_proto::Connection;
    use ccs_proto::connection::ConnId;
    let now = epoch();
    let mut c = Pair::client_config();
    c.request_session = false;
    let mut conn = Connection::new(ConnId(4), c, now).unwrap();
    conn.handle_input(now, through_bind(false, None).as_bytes());
    assert_eq!(conn.state(), State::Connected);
    assert_eq!(conn.jid(), Some("123456789012@gcm.googleapis.com/R"));
}

// ---- hardening: ack keys, drain deadline, liveness, draining anywhere, BAD_ACK ----

#[test]
fn manual_acks_of_colliding_ids_from_two_devices_both_go_out() {
    let mut c = Pair::client_config();
    c.ack_mode = AckMode::Manual;
    let mut pair = make(c, Pair::server_config(), Some((8, 13)));
    pair.connect();
    pair.server
        .send_upstream(&upstream_from("DEV-A", "1"))
        .unwrap();
    pair.server
        .send_upstream(&upstream_from("DEV-B", "1"))
        .unwrap();
    pair.drive();
    let handles = upstream_ack_handles(&pair);
    assert_eq!(handles.len(), 2);
    let now = pair.now;
    for h in &handles {
        pair.client.ack(now, h).unwrap();
    }
    assert_eq!(pair.client.ack(now, &handles[1]), Err(AckError::NotPending));
    pair.drive();
    assert_eq!(pair.server.unacked_upstream().count(), 0);
    let mut acked: Vec<_> = pair
        .server_events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::AppAck(a) => Some((a.to.clone(), a.message_id.as_str().to_owned())),
            _ => None,
        })
        .collect();
    acked.sort();
    assert_eq!(
        acked,
        [("DEV-A".into(), "1".into()), ("DEV-B".into(), "1".into())]
    );
}

#[test]
fn a_drained_connection_the_server_never_closes_ends_at_the_drain_deadline() {
    each_way(|pair| {
        drain_with_a_and_b_in_flight(pair);
        // The server answers pings (the connection is alive) but never the messages.
        pair.advance(Duration::from_secs(59));
        assert_eq!(pair.client.state(), State::Draining);
        pair.advance(Duration::from_secs(2));
        let (reason, unanswered) = closed(pair).unwrap();
        assert_eq!(reason, &CloseReason::DrainTimeout);
        assert_eq!(ids(unanswered), ["a", "b"]);
        assert!(
            pair.server_events
                .iter()
                .any(|e| matches!(e, ServerEvent::Closed { .. })),
            "the client closed its stream: {:?}",
            pair.server_events
        );
    });
}

#[test]
fn the_drain_deadline_is_configurable() {
    let mut c = Pair::client_config();
    c.drain_timeout = Duration::from_secs(5);
    let mut pair = make(c, Pair::server_config(), None);
    pair.connect();
    send(&mut pair, "a");
    pair.drive();
    pair.server
        .nack("a", NackCode::ConnectionDraining, None)
        .unwrap();
    pair.drive();
    pair.advance(Duration::from_secs(6));
    let (reason, unanswered) = closed(&pair).unwrap();
    assert_eq!(reason, &CloseReason::DrainTimeout);
    assert!(
        unanswered.is_empty(),
        "`a` was returned, not left in flight"
    );
}

/// Feeds the client one byte of an unfinished stanza every `every`, for `total`.
fn trickle(pair: &mut Pair, every: Duration, total: Duration) {
    pair.mute(Direction::ToClient);
    let bytes = b"<message id='x'><gcm xmlns='google:mobile:data'>{\"from\":\"D\"";
    let mut t = Duration::ZERO;
    let mut i = 0;
    while t < total && pair.client.state() != State::Closed {
        let now = pair.now;
        pair.client
            .handle_input(now, &bytes[i % bytes.len()..][..1]);
        i += 1;
        pair.advance(every);
        t += every;
    }
}

#[test]
fn a_trickled_stanza_that_never_ends_is_a_dead_connection() {
    let mut pair = make(Pair::client_config(), Pair::server_config(), None);
    pair.connect();
    send(&mut pair, "a");
    pair.drive();
    let start = pair.now;
    trickle(&mut pair, Duration::from_secs(2), Duration::from_secs(600));
    let (reason, unanswered) = closed(&pair).unwrap();
    assert_eq!(reason, &CloseReason::StanzaTimeout);
    assert_eq!(ids(unanswered), ["a"]);
    let took = pair.now - start;
    assert!(took <= Duration::from_secs(34), "{took:?}");
}

#[test]
fn bytes_of_an_unfinished_stanza_are_not_life() {
    // With the stanza limit out of the way, the ping still fires: a trickle is not an answer.
    let mut c = Pair::client_config();
    c.stanza_timeout = Duration::from_secs(3600);
    let mut pair = make(c, Pair::server_config(), None);
    pair.connect();
    send(&mut pair, "a");
    pair.drive();
    let start = pair.now;
    trickle(&mut pair, Duration::from_secs(2), Duration::from_secs(600));
    let (reason, _) = closed(&pair).unwrap();
    assert_eq!(reason, &CloseReason::PingTimeout);
    assert!(pair.now - start <= Duration::from_secs(94));
}

#[test]
fn whitespace_keepalives_between_stanzas_are_life() {
    let mut pair = make(Pair::client_config(), Pair::server_config(), None);
    pair.connect();
    pair.mute(Direction::ToClient);
    for _ in 0..100 {
        let now = pair.now;
        pair.client.handle_input(now, b" ");
        pair.advance(Duration::from_secs(20));
    }
    assert_eq!(pair.client.state(), State::Connected);
    assert_eq!(pair.client.stats().pings_sent, 0);
}

#[test]
fn draining_during_session_setup_takes_effect_when_setup_ends() {
    use ccs_proto::Connection;
    use ccs_proto::connection::ConnId;
    let now = epoch();
    let mut conn = Connection::new(ConnId(3), Pair::client_config(), now).unwrap();
    conn.handle_input(now, through_bind(true, Some("bind_1")).as_bytes());
    assert_eq!(conn.state(), State::StartingSession);
    conn.handle_input(
        now,
        br#"<message><gcm xmlns="google:mobile:data">{"message_type":"control","control_type":"CONNECTION_DRAINING"}</gcm></message>"#,
    );
    conn.handle_input(now, b"<iq type='result' id='sess_1'/>");
    let events: Vec<_> = std::iter::from_fn(|| conn.poll_event()).collect();
    assert!(
        matches!(events[0], ConnectionEvent::Connected { .. }),
        "{events:?}"
    );
    assert!(matches!(events[1], ConnectionEvent::Draining), "{events:?}");
    assert_eq!(conn.state(), State::Draining);
    let err = conn.send(now, msg("a")).unwrap_err();
    assert_eq!(err.kind, ConnectionSendErrorKind::Draining);
}

#[test]
fn draining_while_closing_is_reported_and_bounds_the_close() {
    let mut pair = make(Pair::client_config(), Pair::server_config(), None);
    pair.connect();
    send(&mut pair, "a");
    pair.drive();
    let now = pair.now;
    pair.client.close(now, now + Duration::from_secs(3600));
    pair.server
        .send_control(&Control::connection_draining())
        .unwrap();
    pair.drive();
    assert_eq!(count(&pair, |e| matches!(e, ConnectionEvent::Draining)), 1);
    pair.advance(Duration::from_secs(61));
    let (reason, unanswered) = closed(&pair).unwrap();
    assert_eq!(reason, &CloseReason::DrainTimeout);
    assert_eq!(ids(unanswered), ["a"]);
}

#[test]
fn bad_ack_is_about_our_ack_not_a_downstream_message_with_the_same_id() {
    each_way(|pair| {
        pair.connect();
        send(pair, "1");
        pair.drive();
        pair.server
            .send_upstream(&upstream_from("DEV", "1"))
            .unwrap();
        pair.drive();
        let ack = upstream_from("DEV", "1").ack();
        pair.server.nack_bad_ack(&ack, None).unwrap();
        pair.drive();
        assert_eq!(pair.client.in_flight(), 1, "{:?}", pair.client_events);
        assert_eq!(
            count(pair, |e| matches!(e, ConnectionEvent::Nacked { .. })),
            0
        );
        assert_eq!(
            count(pair, |e| matches!(
                e,
                ConnectionEvent::Anomaly(ccs_proto::connection::Anomaly::AckRefused { .. })
            )),
            1
        );
        // A stanza error echoing our ack is the same: not an answer to "1".
        let now = pair.now;
        pair.client.handle_input(
            now,
            br#"<message type="error"><gcm xmlns="google:mobile:data">{"to":"DEV","message_id":"1","message_type":"ack"}</gcm><error type="modify"><bad-request xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></message>"#,
        );
        pair.drive();
        assert_eq!(pair.client.in_flight(), 1);
        assert_eq!(
            count(pair, |e| matches!(e, ConnectionEvent::StanzaError { .. })),
            0
        );
        pair.server.ack("1", None).unwrap();
        pair.drive();
        assert_eq!(
            count(pair, |e| matches!(e, ConnectionEvent::Acked { .. })),
            1
        );
    });
}

#[test]
fn durations_the_clock_cannot_hold_are_refused_not_a_panic() {
    use ccs_proto::Connection;
    use ccs_proto::connection::ConnId;
    let mut c = Pair::client_config();
    c.setup_timeout = Duration::MAX;
    assert!(Connection::new(ConnId(1), c, epoch()).is_err());
}

/// `bytes` as a derived `Debug` of a `Vec<u8>` shows them: `60, 97, ...`.
fn byte_list(text: &str) -> String {
    let list = format!("{:?}", text.as_bytes());
    list.trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

#[test]
fn debug_output_never_shows_the_queued_auth() {
    use base64::Engine as _;
    use ccs_proto::Connection;
    use ccs_proto::connection::ConnId;
    let now = epoch();
    let mut conn = Connection::new(ConnId(3), Pair::client_config(), now).unwrap();
    conn.handle_input(now, format!("{SERVER_HEADER}{SASL_FEATURES}").as_bytes());
    assert_eq!(conn.state(), State::Authenticating);
    let secret = base64::engine::general_purpose::STANDARD
        .encode("\u{0}123456789012@gcm.googleapis.com\u{0}test-key");
    let debug = format!("{conn:?}");
    // Neither as text nor as the byte list a derived `Debug` of a `Vec<u8>` prints.
    assert!(!debug.contains(&secret), "{debug}");
    assert!(!debug.contains(&byte_list(&secret)), "{debug}");
    assert!(!debug.contains("test-key"), "{debug}");
    let out = String::from_utf8(conn.poll_transmit().unwrap()).unwrap();
    assert!(
        out.contains(&secret),
        "the test looks for the right bytes: {out}"
    );
}

#[test]
fn a_close_waits_for_the_acks_the_application_owes_until_its_deadline() {
    let mut c = Pair::client_config();
    c.ack_mode = AckMode::Manual;
    let mut pair = make(c, Pair::server_config(), None);
    pair.connect();
    send_upstream(&mut pair, "up-1");
    send_upstream(&mut pair, "up-2");
    send_upstream(&mut pair, "up-3");
    pair.drive();
    let handles = upstream_ack_handles(&pair);
    let now = pair.now;
    pair.client.close(now, now + Duration::from_secs(10));
    pair.advance(Duration::from_secs(5));
    assert_eq!(pair.client.state(), State::Closing);
    // The acks still go out while closing; a released handle is not waited for.
    let now = pair.now;
    pair.client.ack(now, &handles[0]).unwrap();
    assert!(pair.client.release(now, &handles[1]));
    assert!(!pair.client.release(now, &handles[1]), "released once");
    assert_eq!(pair.client.awaiting_acks(), 1);
    pair.drive();
    assert_eq!(pair.client.state(), State::Closing);
    let now = pair.now;
    pair.client.ack(now, &handles[2]).unwrap();
    pair.drive();
    let (reason, _) = closed(&pair).unwrap();
    assert_eq!(reason, &CloseReason::Local);
    let left: Vec<_> = pair
        .server
        .unacked_upstream()
        .filter_map(|m| m.message_id().map(|id| id.as_str().to_owned()))
        .collect();
    assert_eq!(left, ["up-2"], "the released one is left for redelivery");

    // With a handle never used, the deadline ends it.
    let mut c = Pair::client_config();
    c.ack_mode = AckMode::Manual;
    let mut pair = make(c, Pair::server_config(), None);
    pair.connect();
    send_upstream(&mut pair, "up-1");
    pair.drive();
    let now = pair.now;
    pair.client.close(now, now + Duration::from_secs(10));
    pair.advance(Duration::from_secs(9));
    assert_eq!(pair.client.state(), State::Closing);
    pair.advance(Duration::from_secs(2));
    assert_eq!(closed(&pair).unwrap().0, &CloseReason::Local);
}

#[test]
fn an_expired_message_keeps_its_window_place_until_its_late_answer() {
    let mut c = Pair::client_config();
    c.window = 2;
    let mut pair = make(c, Pair::server_config(), None);
    pair.connect();
    send(&mut pair, "a");
    send(&mut pair, "b");
    pair.drive();
    let a = MessageId::new("a").unwrap();
    let given = pair.client.expire(&a).unwrap();
    assert_eq!(given.message_id(), &a);
    assert!(pair.client.expire(&a).is_none(), "handed over once");
    assert_eq!(pair.client.in_flight(), 2);
    let now = pair.now;
    assert_eq!(
        pair.client.send(now, msg("c")).unwrap_err().kind,
        ConnectionSendErrorKind::Blocked,
        "the server still counts it"
    );
    pair.server.ack("a", None).unwrap();
    pair.drive();
    assert!(
        pair.client_events
            .iter()
            .any(|e| matches!(e, ConnectionEvent::LateAnswer { message_id } if message_id == &a))
    );
    assert_eq!(
        count(&pair, |e| matches!(e, ConnectionEvent::Acked { .. })),
        0
    );
    assert_eq!(pair.client.in_flight(), 1);
    // An expired message is not handed back when the connection ends: it was reported.
    let b = MessageId::new("b").unwrap();
    pair.client.expire(&b).unwrap();
    pair.disconnect();
    let (_, unanswered) = closed(&pair).unwrap();
    assert!(unanswered.is_empty());
}

#[test]
fn a_busy_stream_whose_reads_always_end_mid_stanza_stays_alive() {
    // Every read completes one stanza and begins the next: a stanza is always open, but
    // never the same one for long. Only a stanza that stays open counts against the limit.
    let mut pair = make(Pair::client_config(), Pair::server_config(), None);
    pair.connect();
    pair.mute(Direction::ToClient);
    let stanza = |i: u32| {
        format!(
            r#"<message><gcm xmlns="google:mobile:data">{{"from":"D","message_id":"u-{i}","data":{{}}}}</gcm></message>"#
        )
    };
    let mut pending = stanza(0);
    for i in 1..120 {
        let next = stanza(i);
        let (head, tail) = next.split_at(next.len() / 2);
        let read = format!("{pending}{head}");
        let now = pair.now;
        pair.client.handle_input(now, read.as_bytes());
        pending = tail.to_owned();
        pair.advance(Duration::from_secs(1));
    }
    assert_eq!(pair.client.state(), State::Connected, "{:?}", closed(&pair));
    assert_eq!(
        count(&pair, |e| matches!(e, ConnectionEvent::Upstream { .. })),
        119
    );
}
