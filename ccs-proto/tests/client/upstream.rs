//! Upstream messages and receipts: acked on the connection they came on, handed over once
//! per `(from, message_id)` within the de-duplication window (a redelivered copy is acked
//! again, not handed over twice); manual ack handles tied to their connection.

use crate::fixtures::*;
use ccs_proto::AckMode;
use ccs_proto::client::{ClientConfig, ClientEvent};
use ccs_proto::connection::{AckError, AckHandle, ConnId};
use ccs_proto::message::{Receipt, Upstream};
use ccs_proto::server::ServerEvent;

fn up(id: &str) -> Upstream {
    Upstream {
        from: "device-1".into(),
        category: Some("com.example".into()),
        message_id: mid(id),
        data: serde_json::from_value(serde_json::json!({"k": id})).unwrap(),
        time_to_live: None,
        extra: Default::default(),
    }
}

/// What the application was handed: (id, handle).
fn handed(events: &[ClientEvent]) -> Vec<(String, Option<AckHandle>)> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Upstream { message, ack } => {
                Some((message.message_id.as_str().to_owned(), ack.clone()))
            }
            ClientEvent::Receipt { receipt, ack } => {
                Some((receipt.message_id.as_str().to_owned(), ack.clone()))
            }
            _ => None,
        })
        .collect()
}

fn app_acks(events: &[(ConnId, ServerEvent)]) -> Vec<(ConnId, String)> {
    events
        .iter()
        .filter_map(|(c, e)| match e {
            ServerEvent::AppAck(a) => Some((*c, a.message_id.as_str().to_owned())),
            _ => None,
        })
        .collect()
}

fn config(manual: bool) -> ClientConfig {
    let mut c = client_config();
    c.reconnect.base = ms(10);
    if manual {
        c.connection.ack_mode = AckMode::Manual;
    }
    c
}

/// Sends `up` on `c`, lets the link die just before the client's ack reaches the server,
/// and returns the new connection (the server redelivers there).
fn lose_the_ack(net: &mut Net, c: ConnId, message: &Upstream) -> ConnId {
    net.kill_after(c, Direction::ToServer, 0);
    net.server(c).send_upstream(message).unwrap();
    net.drive();
    assert!(!net.servers.contains_key(&c), "the link should be dead");
    net.advance(secs(3));
    net.only_conn()
}

#[test]
fn a_redelivered_message_is_acked_again_but_handed_over_once() {
    let mut net = net_up(config(false));
    let c = net.only_conn();
    let m = up("up-1");
    let new = lose_the_ack(&mut net, c, &m);
    assert_eq!(handed(&net.client_events).len(), 1);
    // The server did not get the ack: it redelivers on the new connection.
    net.server(new).send_upstream(&m).unwrap();
    net.drive();
    assert_eq!(handed(&net.client_events).len(), 1, "not handed over twice");
    assert_eq!(app_acks(&net.server_events), [(new, "up-1".to_owned())]);
    let s = net.client.stats();
    assert_eq!((s.upstream_received, s.duplicates_suppressed), (2, 1));
}

#[test]
fn with_the_window_off_every_copy_is_handed_over() {
    let mut c = config(false);
    c.dedup_window = 0;
    let mut net = net_up(c);
    let conn = net.only_conn();
    let m = up("up-1");
    let new = lose_the_ack(&mut net, conn, &m);
    net.server(new).send_upstream(&m).unwrap();
    net.drive();
    assert_eq!(handed(&net.client_events).len(), 2);
}

#[test]
fn the_window_is_bounded() {
    let mut c = config(false);
    c.dedup_window = 2;
    let mut net = net_up(c);
    let conn = net.only_conn();
    for id in ["up-1", "up-2", "up-3", "up-3", "up-1"] {
        // The server forgets what was acked, so it may send the same id again.
        net.server(conn).send_upstream(&up(id)).unwrap();
        net.drive();
    }
    let ids: Vec<String> = handed(&net.client_events)
        .into_iter()
        .map(|h| h.0)
        .collect();
    // "up-3" again is within the window; "up-1" fell out of it.
    assert_eq!(ids, ["up-1", "up-2", "up-3", "up-1"]);
    assert_eq!(app_acks(&net.server_events).len(), 5);
}

#[test]
fn receipts_are_acked_and_de_duplicated_too() {
    let mut net = net_up(config(false));
    let c = net.only_conn();
    let r = Receipt::sent_to_device(&mid("m-1"), "tok", 1);
    net.server(c).send_receipt(&r).unwrap();
    net.drive();
    net.server(c).send_receipt(&r).unwrap();
    net.drive();
    let ids: Vec<String> = handed(&net.client_events)
        .into_iter()
        .map(|h| h.0)
        .collect();
    assert_eq!(ids, ["dr2:m-1"]);
    assert_eq!(app_acks(&net.server_events).len(), 2);
    let s = net.client.stats();
    assert_eq!((s.receipts_received, s.duplicates_suppressed), (2, 1));
}

#[test]
fn manual_acks_go_through_the_handle_on_its_connection() {
    let mut net = net_up(config(true));
    let c = net.only_conn();
    net.server(c).send_upstream(&up("up-1")).unwrap();
    net.drive();
    let h = handed(&net.client_events);
    let handle = h[0].1.clone().expect("manual mode gives a handle");
    assert_eq!(handle.conn(), c);
    assert_eq!(handle.message_id().as_str(), "up-1");
    assert!(
        app_acks(&net.server_events).is_empty(),
        "not acked before the application"
    );
    let now = net.now;
    net.client.ack(now, &handle).unwrap();
    net.drive();
    assert_eq!(app_acks(&net.server_events), [(c, "up-1".to_owned())]);
    assert_eq!(net.client.ack(now, &handle), Err(AckError::NotPending));
}

#[test]
fn an_ack_after_the_connection_died_is_refused_and_the_redelivery_comes_with_a_new_handle() {
    let mut net = net_up(config(true));
    let c = net.only_conn();
    let m = up("up-1");
    net.server(c).send_upstream(&m).unwrap();
    net.drive();
    let first = handed(&net.client_events)[0].1.clone().unwrap();
    net.kill(c);
    net.advance(secs(3));
    let now = net.now;
    let err = net.client.ack(now, &first).unwrap_err();
    assert_eq!(err, AckError::ConnectionGone);
    assert!(err.to_string().contains("redeliver"));
    let new = net.only_conn();
    net.server(new).send_upstream(&m).unwrap();
    net.drive();
    let h = handed(&net.client_events);
    assert_eq!(h.len(), 2, "the application never acked: it gets the copy");
    let second = h[1].1.clone().unwrap();
    assert_eq!(second.conn(), new);
    let now = net.now;
    net.client.ack(now, &second).unwrap();
    net.drive();
    assert_eq!(app_acks(&net.server_events), [(new, "up-1".to_owned())]);
}

#[test]
fn a_copy_of_a_message_the_application_acked_is_acked_by_the_client() {
    let mut net = net_up(config(true));
    let c = net.only_conn();
    let m = up("up-1");
    net.server(c).send_upstream(&m).unwrap();
    net.drive();
    let h = handed(&net.client_events)[0].1.clone().unwrap();
    // The application's ack is lost on the wire.
    net.kill_after(c, Direction::ToServer, 0);
    let now = net.now;
    net.client.ack(now, &h).unwrap();
    net.drive();
    net.advance(secs(3));
    let new = net.only_conn();
    net.server(new).send_upstream(&m).unwrap();
    net.drive();
    assert_eq!(handed(&net.client_events).len(), 1);
    assert_eq!(app_acks(&net.server_events), [(new, "up-1".to_owned())]);
    assert_eq!(net.client.stats().duplicates_suppressed, 1);
}

#[test]
fn a_copy_on_another_connection_waits_for_the_applications_ack() {
    let mut c = config(true);
    c.connections = 2;
    let mut net = net_up(c);
    let conns: Vec<ConnId> = net.servers.keys().copied().collect();
    let m = up("up-1");
    net.server(conns[0]).send_upstream(&m).unwrap();
    net.drive();
    net.server(conns[1]).send_upstream(&m).unwrap();
    net.drive();
    let h = handed(&net.client_events);
    assert_eq!(h.len(), 1);
    assert!(app_acks(&net.server_events).is_empty());
    let now = net.now;
    net.client.ack(now, h[0].1.as_ref().unwrap()).unwrap();
    net.drive();
    let mut acks = app_acks(&net.server_events);
    acks.sort();
    assert_eq!(
        acks,
        [(conns[0], "up-1".to_owned()), (conns[1], "up-1".to_owned())]
    );
}

#[test]
fn handles_are_refused_after_the_client_closed() {
    let mut net = net_up(config(true));
    let c = net.only_conn();
    net.server(c).send_upstream(&up("up-1")).unwrap();
    net.drive();
    let h = handed(&net.client_events)[0].1.clone().unwrap();
    let now = net.now;
    net.client.close(now, now + secs(1));
    net.advance(secs(2));
    assert!(net.client.is_closed());
    let now = net.now;
    assert_eq!(net.client.ack(now, &h), Err(AckError::ConnectionGone));
}

#[test]
fn a_held_copy_is_handed_over_when_the_first_copys_connection_dies() {
    let mut c = config(true);
    c.connections = 2;
    let mut net = net_up(c);
    let conns: Vec<ConnId> = net.servers.keys().copied().collect();
    let m = up("up-1");
    net.server(conns[0]).send_upstream(&m).unwrap();
    net.drive();
    net.server(conns[1]).send_upstream(&m).unwrap();
    net.drive();
    let first = handed(&net.client_events)[0].1.clone().unwrap();
    assert_eq!(first.conn(), conns[0]);
    assert_eq!(handed(&net.client_events).len(), 1, "the copy is held");
    // The first copy's connection dies before the application acks it.
    net.kill(conns[0]);
    let h = handed(&net.client_events);
    assert_eq!(h.len(), 2, "the held copy now stands for the message");
    let second = h[1].1.clone().unwrap();
    assert_eq!(second.conn(), conns[1]);
    let now = net.now;
    assert_eq!(net.client.ack(now, &first), Err(AckError::ConnectionGone));
    net.client.ack(now, &second).unwrap();
    net.drive();
    assert_eq!(
        app_acks(&net.server_events),
        [(conns[1], "up-1".to_owned())]
    );
}

#[test]
fn acks_of_handles_held_at_close_go_through_until_the_deadline() {
    // An app server echoing a message when it shuts down: its ack must still reach the
    // server, or the message is redelivered (and echoed twice).
    let mut net = net_up(config(true));
    let c = net.only_conn();
    net.server(c).send_upstream(&up("up-1")).unwrap();
    net.server(c).send_upstream(&up("up-2")).unwrap();
    net.drive();
    let handles: Vec<_> = handed(&net.client_events)
        .into_iter()
        .map(|(_, h)| h.unwrap())
        .collect();
    let now = net.now;
    net.client.close(now, now + secs(30));
    net.advance(secs(5));
    assert!(!net.client.is_closed(), "waits for the acks it is owed");
    let now = net.now;
    net.client.ack(now, &handles[0]).unwrap();
    net.client.release(now, &handles[1]);
    net.drive();
    assert!(net.client.is_closed(), "nothing left to wait for");
    assert!(
        net.server_events
            .iter()
            .any(|(_, e)| matches!(e, ServerEvent::AppAck(a) if a.message_id.as_str() == "up-1"))
    );
}

#[test]
fn a_held_copy_is_handed_over_when_the_application_gives_the_first_up() {
    // The application drops the handle of the first copy (its adapter could not deliver
    // it): the copy held back on the other connection must reach it instead of waiting
    // for the first connection to end.
    let mut c = config(true);
    c.connections = 2;
    let mut net = net_up(c);
    let conns: Vec<ConnId> = net.servers.keys().copied().collect();
    let m = up("up-1");
    net.server(conns[0]).send_upstream(&m).unwrap();
    net.drive();
    net.server(conns[1]).send_upstream(&m).unwrap();
    net.drive();
    let first = handed(&net.client_events)[0].1.clone().unwrap();
    assert_eq!(handed(&net.client_events).len(), 1, "the copy is held");
    let now = net.now;
    net.client.release(now, &first);
    net.drive();
    let h = handed(&net.client_events);
    assert_eq!(h.len(), 2, "the held copy is handed over");
    let second = h[1].1.clone().unwrap();
    assert_eq!(second.conn(), conns[1]);
    let now = net.now;
    net.client.ack(now, &second).unwrap();
    net.drive();
    assert_eq!(
        app_acks(&net.server_events),
        [(conns[1], "up-1".to_owned())]
    );
    assert_eq!(
        net.server(conns[0]).unacked_upstream().count(),
        1,
        "the released copy is left for redelivery"
    );
}
