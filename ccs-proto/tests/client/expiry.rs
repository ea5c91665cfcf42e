//! Time limits: `ack_timeout` (sent, not answered in time: expired; a later answer is a
//! late answer, never a second outcome; a window full of such messages gets the connection
//! replaced) and `max_queue_time` (never sent, or sent again, after the limit).

use crate::fixtures::*;
use ccs_proto::client::{
    ClientConfig, ClientEvent, DownReason, ExpiryKind, Outcome, SendErrorKind,
};
use ccs_proto::connection::CloseReason;

fn config() -> ClientConfig {
    let mut c = client_config();
    c.reconnect.base = ms(10);
    c
}

fn expired(events: &[ClientEvent]) -> Vec<(String, ExpiryKind, u32)> {
    outcomes(events)
        .into_iter()
        .filter_map(|(_, id, o)| match o {
            Outcome::Expired { kind, sends } => Some((id, kind, sends)),
            _ => None,
        })
        .collect()
}

#[test]
fn an_unanswered_message_expires_and_a_late_answer_is_not_a_second_outcome() {
    let mut c = config();
    c.ack_timeout = Some(secs(5));
    let mut net = net_up(c);
    let conn = net.only_conn();
    net.send(msg("m"));
    net.advance(ms(4999));
    assert!(outcomes(&net.client_events).is_empty());
    net.advance(ms(1));
    assert_eq!(
        expired(&net.client_events),
        [("m".into(), ExpiryKind::AckTimeout, 1)]
    );
    // Still in flight on its connection: the id stays taken.
    let now = net.now;
    let err = net.client.send(now, msg("m")).unwrap_err();
    assert_eq!(err.kind, SendErrorKind::DuplicateId);
    net.server(conn).ack("m", None).unwrap();
    net.drive();
    assert_eq!(outcomes(&net.client_events).len(), 1);
    assert!(net.client_events.iter().any(|e| matches!(
        e,
        ClientEvent::LateAnswer { id, message_id } if *id == conn && message_id.as_str() == "m"
    )));
    let s = net.client.stats();
    assert_eq!((s.expired, s.late_answers, s.acked), (1, 1, 0));
    net.send(msg("m"));
}

/// A message's ack deadline is its own: one sent again with the id of a message already
/// answered is not expired at the first one's deadline, even while that deadline is still
/// queued behind an earlier message's.
#[test]
fn a_message_sent_again_with_an_answered_id_gets_its_own_ack_deadline() {
    let mut c = config();
    c.ack_timeout = Some(secs(10));
    let mut net = net_up(c);
    let conn = net.only_conn();
    // "a" is never answered: its deadline stays at the front of the queue of deadlines.
    net.send(msg("a"));
    net.send(msg("m"));
    net.drive();
    net.server(conn).ack("m", None).unwrap();
    net.drive();
    assert_eq!(net.client.stats().acked, 1);
    net.advance(secs(5));
    // The id is free again; this message has until 15 s.
    net.send(msg("m"));
    net.drive();
    assert_eq!(net.pending(conn), ["a", "m"]);
    net.advance(secs(5) + ms(1));
    assert_eq!(
        expired(&net.client_events),
        [("a".into(), ExpiryKind::AckTimeout, 1)],
        "only a: m was sent 5 s later"
    );
    net.advance(secs(5));
    assert_eq!(
        expired(&net.client_events),
        [
            ("a".into(), ExpiryKind::AckTimeout, 1),
            ("m".into(), ExpiryKind::AckTimeout, 1)
        ]
    );
}

#[test]
fn a_window_full_of_expired_messages_gets_the_connection_replaced() {
    let mut c = config();
    c.ack_timeout = Some(secs(5));
    c.connection.window = 2;
    let mut net = net_up(c);
    let first = net.only_conn();
    for id in ["a", "b", "c"] {
        net.send(msg(id));
    }
    net.drive();
    assert_eq!(net.pending(first), ["a", "b"]);
    net.advance(secs(6));
    let e = expired(&net.client_events);
    assert_eq!(e.len(), 2, "{e:?}");
    let d = downs(&net.client_events);
    assert_eq!(d[0].0, first);
    assert_eq!(d[0].1, DownReason::Closed(CloseReason::Local));
    let second = net.only_conn();
    assert_ne!(second, first);
    // The expired ones are not sent again; the queued one goes on the new connection.
    assert_eq!(net.pending(second), ["c"]);
    net.ack_all();
    net.drive();
    assert_eq!(acked_ids(&net.client_events), ["c"]);
    assert_eq!(net.client.stats().outcomes(), 3);
    net.send(msg("a")); // its connection is gone: the id is free
}

#[test]
fn a_message_never_sent_in_time_expires() {
    let mut c = config();
    c.max_queue_time = Some(secs(10));
    let mut net = new_net(c);
    net.dial_default = Dial::Silent;
    let now = net.now;
    net.client.send(now, msg("a")).unwrap();
    net.advance(secs(4));
    let now = net.now;
    net.client.send(now, msg("b")).unwrap();
    net.advance(secs(6));
    assert_eq!(
        expired(&net.client_events),
        [("a".into(), ExpiryKind::QueueTime, 0)]
    );
    net.advance(secs(4));
    assert_eq!(expired(&net.client_events).len(), 2);
    assert_eq!(net.client.queued(), 0);
}

#[test]
fn a_message_back_from_a_dead_connection_past_its_queue_time_is_not_sent_again() {
    let mut c = config();
    c.max_queue_time = Some(secs(10));
    let mut net = net_up(c);
    let conn = net.only_conn();
    net.send(msg("old"));
    net.drive();
    net.advance(secs(11)); // on the wire: the queue limit does not touch it
    assert!(outcomes(&net.client_events).is_empty());
    net.send(msg("new"));
    net.drive();
    net.kill(conn);
    assert_eq!(
        expired(&net.client_events),
        [("old".into(), ExpiryKind::QueueTime, 1)]
    );
    net.advance(secs(1));
    let c2 = net.only_conn();
    assert_eq!(net.pending(c2), ["new"]);
}

#[test]
fn a_retry_due_after_the_queue_limit_expires_at_the_limit() {
    let mut c = config();
    c.max_queue_time = Some(secs(3));
    c.retry.base = secs(10);
    c.retry.jitter = ccs_proto::client::Jitter::None;
    let mut net = net_up(c);
    let conn = net.only_conn();
    let accepted = net.now;
    net.send(msg("m"));
    net.drive();
    net.server(conn)
        .nack("m", ccs_proto::message::NackCode::ServiceUnavailable, None)
        .unwrap();
    net.drive();
    assert_eq!(net.client.queued(), 1); // waiting 10 s for its retry
    let until = accepted + secs(3) - ms(1) - net.now;
    net.advance(until);
    assert!(expired(&net.client_events).is_empty());
    net.advance(ms(1));
    assert_eq!(
        expired(&net.client_events),
        [("m".into(), ExpiryKind::QueueTime, 1)]
    );
    assert_eq!(net.client.queued(), 0);
}

#[test]
fn by_default_every_outcome_comes_in_bounded_time() {
    // A server that stays alive (answers pings, the link carries keepalives) but never
    // answers a message; and a network where no connection can be made. The defaults bound
    // both waits: 60 s for an answer, 10 minutes in the queue.
    let mut net = net_up(client_config());
    net.send(msg("on-the-wire"));
    net.advance(secs(59));
    assert!(outcomes(&net.client_events).is_empty());
    net.advance(secs(2));
    assert_eq!(
        expired(&net.client_events),
        [("on-the-wire".into(), ExpiryKind::AckTimeout, 1)]
    );

    let mut net = net_up(client_config());
    let c = net.only_conn();
    net.dial_default = Dial::Refuse;
    net.kill(c);
    net.send(msg("never-sent"));
    net.advance(secs(599));
    assert!(outcomes(&net.client_events).is_empty());
    net.advance(secs(2));
    assert_eq!(
        expired(&net.client_events),
        [("never-sent".into(), ExpiryKind::QueueTime, 0)]
    );
}
