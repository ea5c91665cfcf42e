//! The priority lane (`Client::send_priority`): ahead of every `send` message, FIFO among
//! itself, behind messages put back for a resend; one outcome each, whatever happens; and
//! counted with the rest of the queue.

use crate::fixtures::*;
use ccs_proto::client::{
    ClientConfig, ClientEvent, ExpiryKind, MessageTicket, Outcome, SendErrorKind,
};
use ccs_proto::message::Downstream;

fn config(window: usize) -> ClientConfig {
    let mut c = client_config();
    c.connection.window = window;
    c.reconnect.base = ms(10);
    c
}

fn send_priority(net: &mut Net, m: Downstream) -> MessageTicket {
    let now = net.now;
    let t = net
        .client
        .send_priority(now, m)
        .expect("send_priority accepted");
    net.pump();
    t
}

/// Acks whatever is pending, one round at a time, until nothing is left; the ids the server
/// received, in order.
fn ack_to_the_end(net: &mut Net) -> Vec<String> {
    while net.client.queued() + net.client.in_flight() > 0 {
        net.ack_all();
        net.drive();
    }
    ccs_proto::testing::net::received(&net.server_events)
        .into_iter()
        .map(|(_, id)| id)
        .collect()
}

#[test]
fn a_priority_message_overtakes_a_backlog_of_100_000() {
    let mut c = config(1);
    c.max_queue = 100_001;
    c.max_queue_time = None;
    let mut net = net_up(c);
    let conn = net.only_conn();
    let now = net.now;
    for i in 0..100_000 {
        net.client.send(now, msg(&format!("b-{i}"))).unwrap();
    }
    net.drive();
    assert_eq!(net.pending(conn), ["b-0"]);
    assert_eq!(net.client.queued(), 99_999);

    let reply = send_priority(&mut net, msg("reply"));
    assert_eq!(net.client.queued(), 100_000);
    net.drive();
    assert_eq!(net.pending(conn), ["b-0"], "the window is full");
    net.server(conn).ack("b-0", None).unwrap();
    net.drive();
    assert_eq!(net.pending(conn), ["reply"]);
    net.server(conn).ack("reply", None).unwrap();
    net.drive();
    assert_eq!(net.pending(conn), ["b-1"]);
    let got = outcomes(&net.client_events);
    assert_eq!(got.len(), 2);
    assert_eq!((got[1].0, got[1].1.as_str()), (reply.get(), "reply"));
    assert!(got[1].2.is_acked());
}

#[test]
fn priority_messages_keep_their_order_among_themselves() {
    let mut net = net_up(config(1));
    for i in 0..3 {
        net.send(msg(&format!("b-{i}")));
    }
    send_priority(&mut net, msg("p-0"));
    net.send(msg("b-3"));
    send_priority(&mut net, msg("p-1"));
    send_priority(&mut net, msg("p-2"));
    net.send(msg("b-4"));
    let wire = ack_to_the_end(&mut net);
    assert_eq!(
        wire,
        ["b-0", "p-0", "p-1", "p-2", "b-1", "b-2", "b-3", "b-4"]
    );
    assert_eq!(acked_ids(&net.client_events), wire);
    assert_eq!(net.client.stats().outcomes(), 8);
}

#[test]
fn messages_put_back_by_a_dead_connection_go_before_priority_ones_and_all_once() {
    let mut net = net_up(config(2));
    let first = net.only_conn();
    for i in 0..5 {
        net.send(msg(&format!("b-{i}")));
    }
    send_priority(&mut net, msg("p-0"));
    send_priority(&mut net, msg("p-1"));
    net.drive();
    assert_eq!(net.pending(first), ["b-0", "b-1"]);
    net.server(first).ack("b-0", None).unwrap();
    net.drive();
    assert_eq!(net.pending(first), ["b-1", "p-0"]);

    net.kill(first);
    assert_eq!(outcomes(&net.client_events).len(), 1, "only b-0 so far");
    net.advance(secs(5));
    let second = net.only_conn();
    assert_ne!(second, first);
    // Put back in their order, ahead of p-1 (still in the priority lane).
    assert_eq!(net.pending(second), ["b-1", "p-0"]);
    ack_to_the_end(&mut net);
    assert_eq!(
        acked_ids(&net.client_events),
        ["b-0", "b-1", "p-0", "p-1", "b-2", "b-3", "b-4"]
    );
    let got = outcomes(&net.client_events);
    assert_eq!(got.len(), 7, "one outcome each: {got:?}");
    assert_eq!(net.client.stats().resent, 2);
    assert!(net.violations.is_empty(), "{:?}", net.violations);
}

#[test]
fn a_retry_goes_before_priority_messages() {
    let mut c = config(1);
    c.retry.base = ms(100);
    c.retry.jitter = ccs_proto::client::Jitter::None;
    let mut net = net_up(c);
    let conn = net.only_conn();
    net.send(msg("b-0"));
    net.drive();
    net.server(conn)
        .nack(
            "b-0",
            ccs_proto::message::NackCode::ServiceUnavailable,
            None,
        )
        .unwrap();
    net.drive();
    send_priority(&mut net, msg("p-0"));
    send_priority(&mut net, msg("p-1"));
    net.drive();
    // p-0 took the window while b-0 waited for its retry; once due, b-0 goes next.
    assert_eq!(net.pending(conn), ["p-0"]);
    net.advance(secs(1));
    let wire = ack_to_the_end(&mut net);
    assert_eq!(wire, ["b-0", "p-0", "b-0", "p-1"]);
    assert_eq!(acked_ids(&net.client_events), ["p-0", "b-0", "p-1"]);
}

#[test]
fn at_close_priority_messages_are_given_back_once_in_queue_order() {
    let mut net = net_up(config(1));
    for i in 0..3 {
        net.send(msg(&format!("b-{i}")));
    }
    send_priority(&mut net, msg("p-0"));
    send_priority(&mut net, msg("p-1"));
    net.drive();
    let now = net.now;
    net.client.close(now, now + secs(2));
    let err = net.client.send_priority(now, msg("late")).unwrap_err();
    assert_eq!(err.kind, SendErrorKind::Closing);
    net.advance(secs(3));
    assert!(net.client.is_closed());
    let unsent: Vec<(String, bool)> = outcomes(&net.client_events)
        .into_iter()
        .map(|(_, id, o)| match o {
            Outcome::Unsent { maybe_delivered } => (id, maybe_delivered),
            other => panic!("{id}: {other:?}"),
        })
        .collect();
    let want = [
        ("b-0", true),
        ("p-0", false),
        ("p-1", false),
        ("b-1", false),
        ("b-2", false),
    ];
    let want: Vec<(String, bool)> = want.iter().map(|&(id, d)| (id.to_owned(), d)).collect();
    assert_eq!(unsent, want);
    let closed = net
        .client_events
        .iter()
        .filter(|e| matches!(e, ClientEvent::Closed { .. }))
        .count();
    assert_eq!(closed, 1);
}

#[test]
fn a_priority_message_never_sent_in_time_expires() {
    let mut c = config(1);
    c.max_queue_time = Some(secs(10));
    let mut net = new_net(c);
    net.dial_default = Dial::Silent;
    let now = net.now;
    net.client.send(now, msg("b-0")).unwrap();
    net.client.send_priority(now, msg("p-0")).unwrap();
    net.advance(secs(11));
    let got = outcomes(&net.client_events);
    let expired: Vec<&str> = got
        .iter()
        .filter(|(_, _, o)| {
            matches!(
                o,
                Outcome::Expired {
                    kind: ExpiryKind::QueueTime,
                    sends: 0
                }
            )
        })
        .map(|(_, id, _)| id.as_str())
        .collect();
    assert_eq!(expired, ["p-0", "b-0"]);
    assert_eq!(got.len(), 2);
    assert_eq!(net.client.queued(), 0);
}

#[test]
fn priority_messages_count_toward_max_queue() {
    let mut c = client_config();
    c.max_queue = 2;
    let mut net = new_net(c);
    net.dial_default = Dial::Silent; // nothing leaves the queue
    let now = net.now;
    net.client.send(now, msg("b-0")).unwrap();
    net.client.send_priority(now, msg("p-0")).unwrap();
    assert_eq!(net.client.queued(), 2);
    let err = net.client.send_priority(now, msg("p-1")).unwrap_err();
    assert_eq!(err.kind, SendErrorKind::QueueFull { limit: 2 });
    assert_eq!(err.message.message_id().as_str(), "p-1");
    let err = net.client.send(now, msg("b-1")).unwrap_err();
    assert_eq!(err.kind, SendErrorKind::QueueFull { limit: 2 });
    let err = net.client.send_priority(now, msg("b-0")).unwrap_err();
    assert_eq!(
        err.kind,
        SendErrorKind::QueueFull { limit: 2 },
        "the limit is checked first"
    );

    net.dial_default = Dial::Accept;
    net.advance(secs(20));
    assert!(net.take_events().contains(&ClientEvent::QueueOpen));
    assert_eq!(net.client.queued(), 0);
    let now = net.now;
    let err = net.client.send_priority(now, msg("b-0")).unwrap_err();
    assert_eq!(
        err.kind,
        SendErrorKind::DuplicateId,
        "b-0 is still in flight"
    );
    send_priority(&mut net, msg("p-1"));
}
