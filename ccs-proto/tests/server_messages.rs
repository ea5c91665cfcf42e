//! The server role once bound: downstream messages and their answers (ack, nack, stanza
//! error), the window and the pending limit, invalid payloads, upstream messages and
//! receipts and their acks, control messages, pings. Every scenario runs whole, byte by
//! byte and in random pieces with identical results.

mod server_support;

use ccs_proto::message::{
    AppAck, Control, Downstream, Incoming, MessageId, NackCode, Receipt, Upstream,
};
use ccs_proto::server::{ServerCloseReason, ServerError, ServerEvent, ServerState};
use ccs_proto::stanza::{IqPayload, IqType, Message, Stanza};
use serde_json::{Map, Value, json};
use server_support::*;

fn only_message(step: &Step) -> Message {
    match step.stanzas().as_slice() {
        [Stanza::Message(m)] => m.clone(),
        other => panic!("{other:?}"),
    }
}

fn upstream(id: &str) -> Upstream {
    let mut data = Map::new();
    data.insert("hello".into(), Value::String("world <&> \"q\"".into()));
    Upstream {
        from: format!("DEVICE-{id}"),
        category: Some("com.example.app".into()),
        message_id: MessageId::new(id).unwrap(),
        data,
        time_to_live: Some(86400),
        extra: Map::new(),
    }
}

/// Sends a downstream message and checks it is reported and pending.
fn send_down(h: &mut Harness, id: &str) -> Downstream {
    let d = simple_downstream(id);
    let before = h.conn.pending();
    let step = h.send(&downstream(&d));
    assert_eq!(
        step.events.last(),
        Some(&ServerEvent::Downstream {
            message: Box::new(d.clone()),
            stanza_id: Some(id.to_owned())
        })
    );
    assert!(step.bytes.is_empty(), "nothing is answered by itself");
    assert_eq!(h.conn.pending(), before + 1);
    assert!(h.conn.is_pending(id));
    d
}

#[test]
fn downstream_is_reported_and_pending() {
    run(|h| {
        h.handshake();
        let d = Downstream::builder("REG", "m-1")
            .unwrap()
            .data(json!({"text": "a < b && c > d ]]>"}))
            .unwrap()
            .time_to_live(600)
            .unwrap()
            .delivery_receipt_requested(true)
            .build();
        let step = h.send(&downstream(&d));
        assert_eq!(
            step.event(),
            ServerEvent::Downstream {
                message: Box::new(d),
                stanza_id: Some("m-1".into())
            }
        );
        // Forms without a stanza id, with an empty one, pretty-printed, prefixed.
        let step = h.send(&gcm(None, "{\"to\":\"R\",\"message_id\":\"m-2\"}"));
        assert!(
            matches!(step.event(), ServerEvent::Downstream { stanza_id: None, message } if message.message_id().as_str() == "m-2")
        );
        let step = h.send_str(
            "<message id=\"\">\n  <gcm xmlns=\"google:mobile:data\">\n  {\n \"to\":\"R\",\n \
             \"message_id\":\"m-3\",\n \"time_to_live\":600\n }\n  </gcm>\n</message>",
        );
        assert!(
            matches!(step.event(), ServerEvent::Downstream { stanza_id: Some(s), .. } if s.is_empty())
        );
        let step = h.send_str(
            "<message><data:gcm xmlns:data=\"google:mobile:data\">{\"to\":\"R\",\
             \"message_id\":\"m-4\"}</data:gcm></message>",
        );
        assert!(matches!(step.event(), ServerEvent::Downstream { .. }));
        assert_eq!(h.conn.pending(), 4);
        let ids: Vec<&str> = h.conn.pending_ids().iter().map(|i| i.as_str()).collect();
        assert_eq!(ids, ["m-1", "m-2", "m-3", "m-4"]);
        assert_eq!(h.conn.stats().downstream_received, 4);
    });
}

#[test]
fn ack_frees_exactly_one_slot() {
    run(|h| {
        h.handshake();
        for id in ["m1", "m2", "m3"] {
            send_down(h, id);
        }
        let (r, step) = h.cmd(|c| c.ack("m2", None));
        r.unwrap();
        assert!(step.events.is_empty());
        assert_eq!(
            step.text(),
            "<message><gcm xmlns=\"google:mobile:data\">{\"message_type\":\"ack\",\
             \"from\":\"REG-m2\",\"message_id\":\"m2\"}</gcm></message>"
        );
        assert_eq!(h.conn.pending(), 2);
        assert!(!h.conn.is_pending("m2"));
        // The ledger cannot answer twice.
        let (r, step) = h.cmd(|c| c.ack("m2", None));
        assert_eq!(r, Err(ServerError::NotPending { id: "m2".into() }));
        assert!(step.bytes.is_empty());
        let (r, _) = h.cmd(|c| c.nack("m2", NackCode::InvalidJson, None));
        assert_eq!(r, Err(ServerError::NotPending { id: "m2".into() }));
        // A canonical registration id.
        let (r, step) = h.cmd(|c| c.ack("m3", Some("CANONICAL")));
        r.unwrap();
        let m = only_message(&step);
        assert_eq!(m.kind, None);
        let Ok(Incoming::Ack(ack)) = Incoming::from_json(m.gcm.as_deref().unwrap()) else {
            panic!()
        };
        assert_eq!(ack.registration_id.as_deref(), Some("CANONICAL"));
        assert_eq!(ack.from.as_deref(), Some("REG-m3"));
        assert_eq!(h.conn.pending(), 1);
        assert_eq!(h.conn.stats().acks_sent, 2);
    });
}

#[test]
fn ack_of_an_id_never_received_is_refused() {
    run(|h| {
        h.handshake();
        let (r, step) = h.cmd(|c| c.ack("never", None));
        assert_eq!(r, Err(ServerError::NotPending { id: "never".into() }));
        assert!(step.bytes.is_empty() && step.events.is_empty());
        let (r, _) = h.cmd(|c| c.stanza_error("never", "bad-request", None));
        assert_eq!(r, Err(ServerError::NotPending { id: "never".into() }));
    });
}

#[test]
fn nack_frees_exactly_one_slot() {
    run(|h| {
        h.handshake();
        send_down(h, "m1");
        send_down(h, "m2");
        let (r, step) = h.cmd(|c| {
            c.nack(
                "m1",
                NackCode::BadRegistration,
                Some("Invalid token on 'to' field: REG-m1"),
            )
        });
        r.unwrap();
        assert_eq!(
            step.text(),
            "<message><gcm xmlns=\"google:mobile:data\">{\"message_type\":\"nack\",\
             \"from\":\"REG-m1\",\"message_id\":\"m1\",\"error\":\"BAD_REGISTRATION\",\
             \"error_description\":\"Invalid token on 'to' field: REG-m1\"}</gcm></message>"
        );
        assert_eq!(h.conn.pending(), 1);
        let (r, step) = h.cmd(|c| c.nack("m2", NackCode::ServiceUnavailable, None));
        r.unwrap();
        let Ok(Incoming::Nack(nack)) = Incoming::from_json(&gcm_json_text(&step)) else {
            panic!()
        };
        assert_eq!(nack.error, NackCode::ServiceUnavailable);
        assert_eq!(nack.error_description, None);
        assert_eq!(h.conn.pending(), 0);
        assert_eq!(h.conn.stats().nacks_sent, 2);
    });
}

fn gcm_json_text(step: &Step) -> String {
    only_message(step).gcm.unwrap().into_string()
}

#[test]
fn stanza_error_frees_exactly_one_slot_and_echoes_the_json() {
    run(|h| {
        let jid = h.handshake();
        let d = Downstream::builder("REG", "m1")
            .unwrap()
            .data(json!({"x": "<&>"}))
            .unwrap()
            .build();
        let sent = downstream(&d);
        h.send(&sent);
        send_down(h, "m2");
        let (r, step) = h.cmd(|c| c.stanza_error("m1", "bad-request", Some("InvalidJson: x")));
        r.unwrap();
        let original_json = serde_json::to_string(&d).unwrap();
        let m = only_message(&step);
        assert_eq!(m.id.as_deref(), Some("m1"));
        assert_eq!(m.kind.as_deref(), Some("error"));
        assert_eq!(m.to.as_deref(), Some(jid.as_str()));
        assert_eq!(m.gcm.as_deref(), Some(original_json.as_str()));
        let e = m.error.unwrap();
        assert_eq!(e.code.as_deref(), Some("400"));
        assert_eq!(e.kind.as_deref(), Some("modify"));
        assert_eq!(e.condition, "bad-request");
        assert_eq!(e.text.as_deref(), Some("InvalidJson: x"));
        assert_eq!(h.conn.pending(), 1);
        assert!(!h.conn.is_pending("m1") && h.conn.is_pending("m2"));
        let (r, _) = h.cmd(|c| c.ack("m1", None));
        assert!(matches!(r, Err(ServerError::NotPending { .. })));
        // Another condition gets its own type and legacy code.
        let (r, step) = h.cmd(|c| c.stanza_error("m2", "service-unavailable", None));
        r.unwrap();
        let e = only_message(&step).error.unwrap();
        assert_eq!(
            (e.code.as_deref(), e.kind.as_deref(), e.text),
            (Some("503"), Some("cancel"), None)
        );
        assert_eq!(h.conn.pending(), 0);
        assert_eq!(h.conn.stats().stanza_errors_sent, 2);
    });
}

#[test]
fn stanza_error_by_stanza_id_of_a_pending_message() {
    run(|h| {
        h.handshake();
        h.send(&gcm(Some("S-7"), "{\"to\":\"R\",\"message_id\":\"m7\"}"));
        let (r, step) = h.cmd(|c| c.stanza_error("S-7", "bad-request", None));
        r.unwrap();
        assert_eq!(only_message(&step).id.as_deref(), Some("S-7"));
        assert_eq!(h.conn.pending(), 0);
    });
}

#[test]
fn missing_message_id_is_answered_like_ccs_did() {
    run(|h| {
        let jid = h.handshake();
        // PROTOCOL.md §3.8: `{"random": "text"}` in a message with id 3.
        let step = h.send(&gcm(Some("3"), "{\"random\": \"text\"}"));
        let ServerEvent::InvalidPayload {
            stanza_id,
            message_id,
            json,
            error,
        } = step.event()
        else {
            panic!("{:?}", step.events)
        };
        assert_eq!(stanza_id.as_deref(), Some("3"));
        assert_eq!(message_id, None);
        assert_eq!(json, "{\"random\": \"text\"}");
        assert!(error.detail.contains("message_id"), "{error}");
        assert_eq!(h.conn.pending(), 0);
        let text = "InvalidJson: JSON_PARSING_ERROR : Missing Required Field: message_id\n";
        let (r, step) = h.cmd(|c| c.stanza_error("3", "bad-request", Some(text)));
        r.unwrap();
        assert_eq!(
            step.text(),
            format!(
                "<message id=\"3\" type=\"error\" to=\"{jid}\"><gcm xmlns=\"google:mobile:data\">\
                 {{\"random\": \"text\"}}</gcm><error code=\"400\" type=\"modify\"><bad-request \
                 xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/><text \
                 xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\">{text}</text></error></message>"
            )
        );
        // Answered once only.
        let (r, _) = h.cmd(|c| c.stanza_error("3", "bad-request", None));
        assert!(matches!(r, Err(ServerError::NotPending { .. })));
        // The raw form needs no memory of the payload.
        let (r, step) =
            h.cmd(|c| c.send_stanza_error_raw(Some("9"), Some("{oops"), "bad-request", Some("t")));
        r.unwrap();
        let m = only_message(&step);
        assert_eq!(
            (m.id.as_deref(), m.gcm.as_deref()),
            (Some("9"), Some("{oops"))
        );
    });
}

#[test]
fn invalid_json_with_a_message_id_is_pending() {
    run(|h| {
        h.handshake();
        let bad = "{\"to\":\"REG\",\"message_id\":\"bad-1\",\"time_to_live\":\"abc\"}";
        let step = h.send(&gcm(Some("bad-1"), bad));
        let ServerEvent::InvalidPayload {
            message_id, json, ..
        } = step.event()
        else {
            panic!("{:?}", step.events)
        };
        assert_eq!(message_id.as_deref(), Some("bad-1"));
        assert_eq!(json, bad);
        assert_eq!(h.conn.pending(), 1);
        let (r, step) = h.cmd(|c| {
            c.nack(
                "bad-1",
                NackCode::InvalidJson,
                Some("InvalidJson: JSON_TYPE_ERROR : Field \"time_to_live\" must be a JSON java.lang.Number: abc"),
            )
        });
        r.unwrap();
        let Ok(Incoming::Nack(nack)) = Incoming::from_json(&gcm_json_text(&step)) else {
            panic!()
        };
        assert_eq!(nack.error, NackCode::InvalidJson);
        assert_eq!(nack.from.as_deref(), Some("REG"));
        assert_eq!(h.conn.pending(), 0);

        // Not JSON at all, a JSON array, a nack from the client, an ack without `to`.
        for (payload, id) in [
            ("{not json", None),
            ("[1,2]", None),
            (
                "{\"message_type\":\"nack\",\"message_id\":\"n1\"}",
                Some("n1"),
            ),
            (
                "{\"message_type\":\"ack\",\"message_id\":\"u9\"}",
                Some("u9"),
            ),
            ("{\"message_id\":17,\"to\":\"R\"}", None),
        ] {
            let step = h.send(&gcm(None, payload));
            let ServerEvent::InvalidPayload { message_id, .. } = step.event() else {
                panic!("{payload}: {:?}", step.events)
            };
            assert_eq!(message_id.as_deref(), id, "{payload}");
        }
        assert_eq!(h.conn.pending(), 2);
        // A bad ack draws BAD_ACK, with the ack's id.
        let (r, step) = h.cmd(|c| c.nack("u9", NackCode::BadAck, None));
        r.unwrap();
        assert!(gcm_json_text(&step).contains("\"BAD_ACK\""));
        assert_eq!(h.conn.stats().invalid_payloads, 6);
        assert_eq!(h.conn.state(), ServerState::Bound);
    });
}

#[test]
fn window_violations_are_counted_and_the_message_accepted() {
    let mut config = config();
    config.window = 2;
    config.max_pending = 10;
    run_all_ways(config, |h| {
        h.handshake();
        send_down(h, "m1");
        send_down(h, "m2");
        assert_eq!(h.conn.window_violations(), 0);
        let d = send_down(h, "m3");
        let last_two = &h.events[h.events.len() - 2..];
        assert_eq!(
            last_two,
            [
                ServerEvent::WindowViolation {
                    pending: 2,
                    window: 2
                },
                ServerEvent::Downstream {
                    message: Box::new(d),
                    stanza_id: Some("m3".into())
                }
            ]
        );
        assert_eq!(h.conn.window_violations(), 1);
        send_down(h, "m4");
        assert_eq!(h.conn.window_violations(), 2);
        // Answers make room again; acks of upstream messages never count.
        for id in ["m1", "m2", "m3"] {
            h.cmd(|c| c.ack(id, None)).0.unwrap();
        }
        h.cmd(|c| c.send_upstream(&upstream("u1"))).0.unwrap();
        h.send(&app_ack("DEVICE-u1", "u1"));
        let step = h.send(&downstream(&simple_downstream("m5")));
        assert_eq!(step.events.len(), 1, "{:?}", step.events);
        assert_eq!(h.conn.window_violations(), 2);
    });
}

#[test]
fn beyond_max_pending_the_stream_is_closed() {
    let mut config = config();
    config.window = 2;
    config.max_pending = 3;
    run_all_ways(config, |h| {
        h.handshake();
        for id in ["m1", "m2", "m3"] {
            send_down(h, id);
        }
        let step = h.send(&downstream(&simple_downstream("m4")));
        assert_eq!(step.events.len(), 1, "{:?}", step.events);
        assert!(matches!(
            step.closed(),
            ServerCloseReason::StreamError { condition, .. } if condition == "policy-violation"
        ));
        assert_eq!(
            step.stream_error().map(|e| e.condition).as_deref(),
            Some("policy-violation")
        );
        assert!(step.ended());
        assert_eq!(h.conn.pending(), 3, "the refused message is not pending");
        assert!(!h.conn.is_pending("m4"));
        let (r, step) = h.cmd(|c| c.ack("m1", None));
        assert_eq!(r, Err(ServerError::Closed));
        assert!(step.bytes.is_empty());
    });
}

#[test]
fn upstream_and_receipts_are_tracked_until_acked() {
    run(|h| {
        h.handshake();
        let up = upstream("u1");
        let (r, step) = h.cmd(|c| c.send_upstream(&up));
        r.unwrap();
        let m = only_message(&step);
        assert_eq!(m.to.as_deref(), Some(format!("{SENDER}@{DOMAIN}").as_str()));
        assert_eq!(m.from.as_deref(), Some("devices@gcm.googleapis.com"));
        assert_eq!(m.kind.as_deref(), Some("normal"));
        assert_eq!(m.id, None);
        assert_eq!(
            Incoming::from_json(m.gcm.as_deref().unwrap()).unwrap(),
            Incoming::Upstream(up.clone())
        );
        let original = MessageId::new("m-1").unwrap();
        let receipt = Receipt::sent_to_device(&original, "REG", 1_498_801_519_251);
        let (r, step) = h.cmd(|c| c.send_receipt(&receipt));
        r.unwrap();
        let m = only_message(&step);
        assert_eq!(m.kind.as_deref(), Some("normal"));
        assert_eq!(
            Incoming::from_json(m.gcm.as_deref().unwrap()).unwrap(),
            Incoming::Receipt(receipt.clone())
        );
        let unacked: Vec<_> = h.conn.unacked_upstream().cloned().collect();
        assert_eq!(
            unacked,
            [
                Incoming::Upstream(up.clone()),
                Incoming::Receipt(receipt.clone())
            ]
        );

        let step = h.send(&app_ack("DEVICE-u1", "u1"));
        assert_eq!(step.event(), ServerEvent::AppAck(up.ack()));
        assert!(step.bytes.is_empty(), "the server never acks an ack");
        assert_eq!(h.conn.unacked_upstream().count(), 1);
        let step = h.send(&app_ack("gcm.googleapis.com", "dr2:m-1"));
        assert_eq!(step.event(), ServerEvent::AppAck(receipt.ack()));
        assert_eq!(h.conn.unacked_upstream().count(), 0);
        let s = h.conn.stats();
        assert_eq!(
            (s.upstream_sent, s.receipts_sent, s.app_acks_received),
            (1, 1, 2)
        );
    });
}

#[test]
fn unknown_app_acks_are_reported() {
    run(|h| {
        h.handshake();
        let step = h.send(&app_ack("X", "never-sent"));
        let ack = AppAck {
            to: "X".into(),
            message_id: MessageId::new("never-sent").unwrap(),
        };
        assert_eq!(step.event(), ServerEvent::UnknownAck(ack.clone()));
        // Acking twice: the second is unknown.
        h.cmd(|c| c.send_upstream(&upstream("u1"))).0.unwrap();
        assert!(matches!(
            h.send(&app_ack("DEVICE-u1", "u1")).event(),
            ServerEvent::AppAck(_)
        ));
        assert!(matches!(
            h.send(&app_ack("DEVICE-u1", "u1")).event(),
            ServerEvent::UnknownAck(_)
        ));
        // The owner may answer like CCS did.
        let (r, step) = h.cmd(|c| c.nack_bad_ack(&ack, Some("unknown message_id")));
        r.unwrap();
        let Ok(Incoming::Nack(nack)) = Incoming::from_json(&gcm_json_text(&step)) else {
            panic!()
        };
        assert_eq!(nack.error, NackCode::BadAck);
        assert_eq!(nack.message_id.as_str(), "never-sent");
        assert_eq!(h.conn.stats().app_acks_received, 3);
    });
}

#[test]
fn unacked_upstream_is_bounded() {
    let mut config = config();
    config.max_unacked_upstream = 2;
    run_all_ways(config, |h| {
        h.handshake();
        h.cmd(|c| c.send_upstream(&upstream("u1"))).0.unwrap();
        h.cmd(|c| c.send_upstream(&upstream("u2"))).0.unwrap();
        let (r, step) = h.cmd(|c| c.send_upstream(&upstream("u3")));
        assert_eq!(r, Err(ServerError::TooManyUnacked { limit: 2 }));
        assert!(step.bytes.is_empty());
        // Redelivering one already unacked replaces it.
        h.cmd(|c| c.send_upstream(&upstream("u1"))).0.unwrap();
        let ids: Vec<_> = h
            .conn
            .unacked_upstream()
            .map(|m| m.message_id().unwrap().as_str().to_owned())
            .collect();
        assert_eq!(ids, ["u2", "u1"]);
        h.send(&app_ack("DEVICE-u2", "u2"));
        h.cmd(|c| c.send_upstream(&upstream("u3"))).0.unwrap();
    });
}

#[test]
fn connection_draining() {
    run(|h| {
        h.handshake();
        let (r, step) = h.cmd(|c| c.send_control(&Control::connection_draining()));
        r.unwrap();
        assert_eq!(
            step.text(),
            "<message><gcm xmlns=\"google:mobile:data\">{\"message_type\":\"control\",\
             \"control_type\":\"CONNECTION_DRAINING\"}</gcm></message>"
        );
        assert_eq!(h.conn.state(), ServerState::Draining);
        // Messages still flow; the owner nacks new ones.
        send_down(h, "late");
        h.cmd(|c| c.nack("late", NackCode::ConnectionDraining, None))
            .0
            .unwrap();
        h.cmd(|c| c.send_upstream(&upstream("u1"))).0.unwrap();
        assert!(matches!(
            h.send(&app_ack("DEVICE-u1", "u1")).event(),
            ServerEvent::AppAck(_)
        ));
        assert_eq!(h.conn.state(), ServerState::Draining);
    });
}

#[test]
fn raw_incoming_is_written_untracked() {
    run(|h| {
        h.handshake();
        send_down(h, "m1");
        let bogus = Incoming::from_json(
            "{\"message_type\":\"ack\",\"message_id\":\"not-pending\",\"from\":\"X\"}",
        )
        .unwrap();
        let (r, step) = h.cmd(|c| c.send_raw_incoming(&bogus));
        r.unwrap();
        let m = only_message(&step);
        assert_eq!(m.kind, None);
        assert_eq!(
            Incoming::from_json(m.gcm.as_deref().unwrap()).unwrap(),
            bogus
        );
        assert_eq!(h.conn.pending(), 1);
        let up = Incoming::Upstream(upstream("raw"));
        let (r, step) = h.cmd(|c| c.send_raw_incoming(&up));
        r.unwrap();
        assert_eq!(only_message(&step).kind.as_deref(), Some("normal"));
        assert_eq!(h.conn.unacked_upstream().count(), 0);
        let unknown = Incoming::from_json("{\"message_type\":\"future\",\"x\":1}").unwrap();
        h.cmd(|c| c.send_raw_incoming(&unknown)).0.unwrap();
    });
}

#[test]
fn unexpected_messages_are_reported() {
    run(|h| {
        h.handshake();
        let step = h.send_str("<message id='c1'><body>hello</body></message>");
        let ServerEvent::UnexpectedStanza(s) = step.event() else {
            panic!()
        };
        assert!(matches!(*s, Stanza::Message(ref m) if m.id.as_deref() == Some("c1")));
        // A client's error bounce is not taken for a downstream message.
        let step = h.send_str(
            "<message type='error' id='e1'><gcm xmlns='google:mobile:data'>\
             {\"to\":\"R\",\"message_id\":\"e1\"}</gcm></message>",
        );
        assert!(matches!(step.event(), ServerEvent::UnexpectedStanza(_)));
        assert_eq!(h.conn.pending(), 0);
        assert!(step.bytes.is_empty());
        // An unknown top-level element ends the stream (RFC 6120 §4.9.3.23).
        let step = h.send_str("<enable xmlns='urn:xmpp:sm:3'/>");
        assert_eq!(
            step.stream_error().map(|e| e.condition).as_deref(),
            Some("unsupported-stanza-type")
        );
        assert!(matches!(
            step.closed(),
            ServerCloseReason::StreamError { .. }
        ));
    });
}

#[test]
fn server_pings_are_reported_when_answered() {
    run(|h| {
        let jid = h.handshake();
        let (id, step) = h.cmd(|c| c.ping());
        let id = id.unwrap();
        let iq = match step.stanzas().as_slice() {
            [Stanza::Iq(iq)] => iq.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(iq.kind, IqType::Get);
        assert_eq!(iq.payload, IqPayload::Ping);
        assert_eq!(iq.id.as_deref(), Some(id.as_str()));
        assert_eq!(iq.to.as_deref(), Some(jid.as_str()));
        let answer = format!("<iq type='result' id='{id}'/>");
        assert_eq!(
            h.send_str(&answer).event(),
            ServerEvent::Pong { id: id.clone() }
        );
        assert!(h.send_str(&answer).events.is_empty(), "answered once");
        // An error answer shows the client is alive too.
        let id2 = h.cmd(|c| c.ping()).0.unwrap();
        assert_ne!(id, id2);
        let step = h.send_str(&format!(
            "<iq type='error' id='{id2}'><error type='cancel'><service-unavailable \
             xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
        ));
        assert_eq!(step.event(), ServerEvent::Pong { id: id2 });
    });
}

#[test]
fn commands_are_refused_before_bind() {
    run(|h| {
        let up = upstream("u1");
        let not_ready = |state| Err(ServerError::NotReady { state });
        assert_eq!(
            h.conn.ack("m", None),
            not_ready(ServerState::AwaitingHeader)
        );
        assert_eq!(
            h.conn.whitespace(),
            not_ready(ServerState::AwaitingHeader),
            "no stream to put whitespace in"
        );
        h.send(&header(DOMAIN));
        assert_eq!(
            h.conn.send_upstream(&up),
            not_ready(ServerState::Authenticating)
        );
        assert_eq!(
            h.conn.send_control(&Control::connection_draining()),
            not_ready(ServerState::Authenticating)
        );
        assert_eq!(
            h.conn.ping(),
            not_ready(ServerState::Authenticating).map(|()| String::new())
        );
        h.conn.whitespace().unwrap();
        h.send(&auth("", SENDER, KEY));
        assert_eq!(
            h.conn.nack("m", NackCode::InvalidJson, None),
            not_ready(ServerState::AwaitingRestart)
        );
        assert_eq!(
            h.conn.whitespace(),
            not_ready(ServerState::AwaitingRestart),
            "the restarted stream has no header yet"
        );
        h.send(&header(DOMAIN));
        assert_eq!(
            h.conn.send_receipt(&Receipt::sent_to_device(
                &MessageId::new("x").unwrap(),
                "R",
                0
            )),
            not_ready(ServerState::Binding)
        );
        let step = h.send(&bind("b", None));
        assert!(matches!(step.event(), ServerEvent::Bound { .. }));
        let (r, step) = h.cmd(|c| c.whitespace());
        r.unwrap();
        assert_eq!(step.bytes, b" ");
    });
}

#[test]
fn stats_count_both_directions() {
    let mut h = Harness::new(config(), Feed::Whole);
    h.handshake();
    send_down(&mut h, "m1");
    h.cmd(|c| c.ack("m1", None)).0.unwrap();
    h.cmd(|c| c.send_upstream(&upstream("u1"))).0.unwrap();
    h.send(&app_ack("DEVICE-u1", "u1"));
    let s = h.conn.stats();
    assert_eq!(s.bytes_out, h.wire.len() as u64);
    assert!(s.bytes_in > 300);
    // In: auth, bind, message, ack. Out: features, success, features, bind result, ack,
    // upstream.
    assert_eq!((s.stanzas_in, s.stanzas_out), (4, 6));
    assert_eq!(
        (
            s.downstream_received,
            s.acks_sent,
            s.upstream_sent,
            s.app_acks_received
        ),
        (1, 1, 1, 1)
    );
}
