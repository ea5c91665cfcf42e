//! The server role's answers as CCS gave them: every copy of a pending id answered, a
//! `from` in every ack and nack, and acks that must name the device (strict by default,
//! lenient on request). Every scenario runs whole, byte by byte and in random pieces.

mod server_support;

use ccs_proto::message::{Incoming, MessageId, NackCode, Upstream};
use ccs_proto::server::ServerEvent;
use ccs_proto::stanza::Stanza;
use serde_json::Map;
use server_support::*;

/// The one CCS message the step wrote.
fn answer(step: &Step) -> Incoming {
    match step.stanzas().as_slice() {
        [Stanza::Message(m)] => Incoming::from_json(m.gcm.as_deref().unwrap()).unwrap(),
        other => panic!("{other:?}"),
    }
}

fn upstream(id: &str, from: &str) -> Upstream {
    Upstream {
        from: from.into(),
        category: Some("com.example.app".into()),
        message_id: MessageId::new(id).unwrap(),
        data: Map::new(),
        time_to_live: None,
        extra: Map::new(),
    }
}

/// PROTOCOL.md §7.1: every downstream message gets an answer, a copy of a pending id too.
#[test]
fn every_copy_of_a_pending_id_is_owed_an_answer() {
    run(|h| {
        h.handshake();
        h.send(&downstream(&simple_downstream("m1")));
        let step = h.send(&downstream(&simple_downstream("m1")));
        assert_eq!(step.events.len(), 2, "{:?}", step.events);
        assert_eq!(
            step.events[0],
            ServerEvent::DuplicatePending {
                message_id: MessageId::new("m1").unwrap()
            }
        );
        assert!(matches!(step.events[1], ServerEvent::Downstream { .. }));
        // Also when the copy is not valid JSON: its InvalidPayload follows.
        let step = h.send(&gcm(None, r#"{"message_id":"m1","time_to_live":"x"}"#));
        assert!(matches!(
            step.events[0],
            ServerEvent::DuplicatePending { .. }
        ));
        assert!(matches!(
            &step.events[1],
            ServerEvent::InvalidPayload { message_id: Some(id), .. } if id == "m1"
        ));
        assert_eq!(h.conn.pending(), 3);
        assert_eq!(h.conn.pending_ids().len(), 1);
        h.cmd(|c| c.ack("m1", None)).0.unwrap();
        h.cmd(|c| c.ack("m1", None)).0.unwrap();
        assert!(h.conn.is_pending("m1"));
        h.cmd(|c| c.nack("m1", NackCode::InvalidJson, None))
            .0
            .unwrap();
        assert_eq!(h.conn.pending(), 0);
        assert!(
            h.cmd(|c| c.ack("m1", None)).0.is_err(),
            "three copies, three answers"
        );
        assert_eq!(h.conn.stats().acks_sent, 2);
    });
}

/// PROTOCOL.md §6.1: `from` is in every ack and nack.
#[test]
fn every_ack_and_nack_names_from() {
    run(|h| {
        h.handshake();
        h.send(&gcm(
            Some("c1"),
            r#"{"condition":"'a' in topics","message_id":"c1"}"#,
        ));
        let (r, step) = h.cmd(|c| c.ack("c1", None));
        r.unwrap();
        let Incoming::Ack(ack) = answer(&step) else {
            panic!()
        };
        assert_eq!(ack.from.as_deref(), Some("'a' in topics"));
        // An invalid payload without `to` or `condition`: `from` is there, empty.
        h.send(&gcm(None, r#"{"message_id":"x1","time_to_live":"x"}"#));
        let (r, step) = h.cmd(|c| c.nack("x1", NackCode::InvalidJson, None));
        r.unwrap();
        let Incoming::Nack(nack) = answer(&step) else {
            panic!()
        };
        assert_eq!(nack.from.as_deref(), Some(""));
        // BAD_ACK names the ack's `to`.
        let step = h.send(&app_ack("DEVICE-9", "never-sent"));
        let ServerEvent::UnknownAck(bad) = step.event() else {
            panic!()
        };
        let (r, step) = h.cmd(|c| c.nack_bad_ack(&bad, None));
        r.unwrap();
        let Incoming::Nack(nack) = answer(&step) else {
            panic!()
        };
        assert_eq!(nack.error, NackCode::BadAck);
        assert_eq!(nack.from.as_deref(), Some("DEVICE-9"));
    });
}

/// An ack must name the device that sent the message (PROTOCOL.md §3.3); lenient mode
/// takes the `message_id` alone when it names one unacked message.
#[test]
fn acks_naming_another_device_strict_and_lenient() {
    run(|h| {
        h.handshake();
        h.cmd(|c| c.send_upstream(&upstream("u1", "DEV-A")))
            .0
            .unwrap();
        let step = h.send(&app_ack("DEV-B", "u1"));
        assert!(matches!(step.event(), ServerEvent::UnknownAck(_)));
        assert_eq!(h.conn.unacked_upstream().count(), 1, "still to redeliver");
    });
    let mut lenient = config();
    lenient.strict_ack_to = false;
    run_all_ways(lenient, |h| {
        h.handshake();
        h.cmd(|c| c.send_upstream(&upstream("u1", "DEV-A")))
            .0
            .unwrap();
        let step = h.send(&app_ack("DEV-B", "u1"));
        // The event names the message acked as it was sent (DEV-A), not the ack's `to`.
        assert!(
            matches!(step.event(), ServerEvent::AppAck(a) if a.to == "DEV-A" && a.message_id.as_str() == "u1"),
            "{:?}",
            step.event()
        );
        assert_eq!(h.conn.unacked_upstream().count(), 0);
        // Ambiguous: two devices chose the same id.
        h.cmd(|c| c.send_upstream(&upstream("u2", "DEV-A")))
            .0
            .unwrap();
        h.cmd(|c| c.send_upstream(&upstream("u2", "DEV-C")))
            .0
            .unwrap();
        let step = h.send(&app_ack("DEV-B", "u2"));
        assert!(matches!(step.event(), ServerEvent::UnknownAck(_)));
        assert_eq!(h.conn.unacked_upstream().count(), 2);
    });
}
