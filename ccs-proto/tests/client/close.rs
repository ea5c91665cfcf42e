//! The graceful close: no new work, the queue flushed while connections live (and opened
//! while there is something to send), answers awaited until the deadline, then every
//! connection closed and everything never answered given back, once.

use crate::fixtures::*;
use ccs_proto::client::{
    ClientConfig, ClientEvent, CloseReport, DownReason, Outcome, SendErrorKind,
};
use ccs_proto::connection::CloseReason;
use ccs_proto::message::NackCode;

fn report(events: &[ClientEvent]) -> CloseReport {
    let mut reports = events.iter().filter_map(|e| match e {
        ClientEvent::Closed { report } => Some(report.clone()),
        _ => None,
    });
    let r = reports.next().expect("a Closed event");
    assert!(reports.next().is_none(), "one Closed event");
    assert!(
        matches!(events.last(), Some(ClientEvent::Closed { .. })),
        "Closed comes last"
    );
    r
}

fn config() -> ClientConfig {
    let mut c = client_config();
    c.connection.window = 2;
    c
}

#[test]
fn close_flushes_the_queue_then_closes_every_connection() {
    let mut net = net_up(config());
    net.auto_ack = true;
    for i in 0..5 {
        net.send(msg(&format!("m-{i}")));
    }
    let now = net.now;
    net.client.close(now, now + secs(60));
    let err = net.client.send(now, msg("late")).unwrap_err();
    assert_eq!(err.kind, SendErrorKind::Closing);
    assert_eq!(err.message.message_id().as_str(), "late");
    assert!(net.client.is_closing() && !net.client.is_closed());
    net.drive();
    assert!(net.client.is_closed());
    assert_eq!(acked_ids(&net.client_events).len(), 5);
    let r = report(&net.client_events);
    assert!(r.unsent.is_empty());
    assert!(!r.deadline_passed);
    let d = downs(&net.client_events);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].1, DownReason::Closed(CloseReason::Local));
    assert_eq!(d[0].2, None);
    assert_eq!(net.client.poll_timeout(), None);
    let now = net.now;
    let err = net.client.send(now, msg("later")).unwrap_err();
    assert_eq!(err.kind, SendErrorKind::Closed);
    assert!(net.violations.is_empty(), "{:?}", net.violations);
}

#[test]
fn at_the_deadline_everything_unanswered_is_given_back_once() {
    let mut net = net_up(config());
    for i in 0..5 {
        net.send(msg(&format!("m-{i}")));
    }
    net.drive();
    let c = net.only_conn();
    net.server(c).ack("m-0", None).unwrap();
    net.drive();
    let now = net.now;
    net.client.close(now, now + secs(2));
    net.advance(ms(1999));
    assert!(!net.client.is_closed());
    net.advance(ms(1));
    assert!(net.client.is_closed());
    let got = outcomes(&net.client_events);
    let unsent: Vec<(String, bool)> = got
        .iter()
        .filter_map(|(_, id, o)| match o {
            Outcome::Unsent { maybe_delivered } => Some((id.clone(), *maybe_delivered)),
            _ => None,
        })
        .collect();
    // m-1, m-2 were on the wire; m-3 then m-4 waited in the queue.
    assert_eq!(
        unsent,
        [
            ("m-1".to_owned(), true),
            ("m-2".to_owned(), true),
            ("m-3".to_owned(), false),
            ("m-4".to_owned(), false),
        ]
    );
    let r = report(&net.client_events);
    assert!(r.deadline_passed);
    let ids: Vec<&str> = r.unsent.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids, ["m-1", "m-2", "m-3", "m-4"]);
    assert_eq!(net.client.stats().outcomes(), 5);
    assert_eq!(net.connects.len(), net.disconnects.len());
}

#[test]
fn a_close_right_after_sending_still_connects_and_delivers() {
    // The command-line case: send, close, before any connection is up.
    let mut net = new_net(config());
    net.auto_ack = true;
    let now = net.now;
    for i in 0..3 {
        net.client.send(now, msg(&format!("m-{i}"))).unwrap();
    }
    net.client.close(now, now + secs(10));
    net.drive();
    assert!(net.client.is_closed());
    assert_eq!(acked_ids(&net.client_events), ["m-0", "m-1", "m-2"]);
    assert!(report(&net.client_events).unsent.is_empty());
}

#[test]
fn an_unreachable_server_gives_everything_back_at_the_deadline() {
    let mut c = config();
    c.reconnect.base = ms(100);
    let mut net = new_net(c);
    net.dial_default = Dial::Refuse;
    let now = net.now;
    net.client.send(now, msg("m")).unwrap();
    net.client.close(now, now + secs(3));
    net.advance(secs(4));
    assert!(net.client.is_closed());
    let got = outcomes(&net.client_events);
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].2,
        Outcome::Unsent {
            maybe_delivered: false
        }
    );
    assert!(net.connects.len() > 2, "it kept trying until the deadline");
    assert_eq!(net.connects.len(), net.disconnects.len());
}

#[test]
fn with_nothing_to_send_close_is_quick() {
    let mut net = net_up(config());
    let now = net.now;
    net.client.close(now, now + secs(30));
    net.drive();
    assert!(net.client.is_closed());
    assert!(net.elapsed() < secs(1));
    assert!(report(&net.client_events).unsent.is_empty());
}

#[test]
fn a_message_waiting_for_a_retry_past_the_deadline_is_given_back() {
    let mut net = net_up(config());
    net.send(msg("m"));
    net.drive();
    let c = net.only_conn();
    net.server(c)
        .nack("m", NackCode::ServiceUnavailable, None)
        .unwrap();
    net.drive();
    assert_eq!(net.client.queued(), 1);
    let now = net.now;
    net.client.close(now, now + ms(100));
    // A second close can only bring the deadline forward.
    net.client.close(now, now + secs(100));
    net.advance(ms(200));
    assert!(net.client.is_closed());
    let got = outcomes(&net.client_events);
    assert_eq!(
        got[0].2,
        Outcome::Unsent {
            maybe_delivered: true
        }
    );
}

#[test]
fn a_connection_closed_by_the_server_during_close_hands_its_messages_to_another() {
    let mut c = config();
    c.connections = 2;
    let mut net = net_up(c);
    for i in 0..4 {
        net.send(msg(&format!("m-{i}")));
    }
    net.drive();
    let now = net.now;
    net.client.close(now, now + secs(30));
    let conns: Vec<_> = net.servers.keys().copied().collect();
    net.kill(conns[0]);
    net.auto_ack = true;
    net.ack_all();
    net.advance(secs(10));
    assert!(net.client.is_closed());
    let mut ids = acked_ids(&net.client_events);
    ids.sort();
    assert_eq!(ids, ["m-0", "m-1", "m-2", "m-3"]);
}
