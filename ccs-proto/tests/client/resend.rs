//! Connection lost: every message without an answer goes again, with its original
//! `message_id`, on the next connection, ahead of newer messages and in its original order;
//! the application hears nothing until the answer. Cut at every byte offset, both ways.

use crate::fixtures::*;
use ccs_proto::client::{ClientConfig, ClientEvent};

fn config(window: usize) -> ClientConfig {
    let mut c = client_config();
    c.connection.window = window;
    c.reconnect.base = ms(10);
    c
}

#[test]
fn unanswered_messages_go_first_on_the_next_connection_in_their_order() {
    let mut net = net_up(config(3));
    let first = net.only_conn();
    for i in 0..6 {
        net.send(msg(&format!("m-{i}")));
    }
    net.drive();
    assert_eq!(net.pending(first), ["m-0", "m-1", "m-2"]);
    net.server(first).ack("m-1", None).unwrap();
    net.drive();
    assert_eq!(net.pending(first), ["m-0", "m-2", "m-3"]);
    net.take_events();

    net.kill(first);
    // Nothing reported for the lost messages.
    assert!(outcomes(&net.client_events).is_empty());
    net.advance(secs(5));
    let second = net.only_conn();
    assert_ne!(second, first);
    assert_eq!(net.pending(second), ["m-0", "m-2", "m-3"]);
    while net.client.queued() + net.client.in_flight() > 0 {
        net.ack_all();
        net.drive();
    }
    assert_eq!(
        acked_ids(&net.client_events),
        ["m-0", "m-2", "m-3", "m-4", "m-5"]
    );
    let s = net.client.stats();
    assert_eq!((s.resent, s.sent, s.acked), (3, 9, 6));
}

/// Kills the link after `cut` bytes in one direction while three messages are answered, and
/// checks that each message is reported exactly once, acked, whatever the cut.
fn cut_at(cut: usize, dir: Direction) -> (usize, u64) {
    let mut net = net_up(config(10));
    net.auto_ack = true;
    net.max_piece = Some(7);
    let c = net.only_conn();
    net.kill_after(c, dir, cut);
    for i in 0..3 {
        net.send(msg(&format!("m-{i}")));
    }
    net.advance(secs(10));
    let got = outcomes(&net.client_events);
    let mut ids: Vec<String> = got.iter().map(|(_, id, _)| id.clone()).collect();
    ids.sort();
    assert_eq!(ids, ["m-0", "m-1", "m-2"], "cut {cut} {dir:?}: {got:?}");
    assert!(got.iter().all(|(_, _, o)| o.is_acked()));
    assert!(net.violations.is_empty(), "{:?}", net.violations);
    let downs = net
        .client_events
        .iter()
        .filter(|e| matches!(e, ClientEvent::ConnectionDown { .. }))
        .count();
    (downs, net.client.stats().resent)
}

#[test]
fn a_cut_at_any_byte_loses_nothing_and_reports_nothing_twice() {
    let mut cuts_that_resent = 0;
    // The three downstream stanzas are 318 bytes, the three acks a little more.
    for cut in 0..400 {
        for dir in [Direction::ToServer, Direction::ToClient] {
            let (downs, resent) = cut_at(cut, dir);
            if cut < 318 {
                assert!(downs >= 1, "cut {cut} {dir:?} should have ended the link");
            }
            cuts_that_resent += usize::from(resent > 0);
        }
    }
    assert!(cuts_that_resent > 300, "{cuts_that_resent}");
}
