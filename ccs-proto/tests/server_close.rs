//! How a server stream ends: the client's close, EOF, malformed input (with the stream error
//! RFC 6120 prescribes), the client's stream errors, the owner's `close` and
//! `stream_error`. Exactly one `Closed` event every time, nothing after it. Every scenario
//! runs whole, byte by byte and in random pieces with identical results; a property test
//! feeds arbitrary bytes.

mod server_support;

use std::time::Duration;

use ccs_proto::error::XmlErrorKind;
use ccs_proto::message::{Control, MessageId, NackCode, Receipt, Upstream};
use ccs_proto::server::{ServerCloseReason, ServerError, ServerEvent, ServerState};
use ccs_proto::xml::FramerConfig;
use proptest::prelude::*;
use serde_json::Map;
use server_support::*;

const END: &[u8] = b"</stream:stream>";

fn protocol_error(step: &Step) -> XmlErrorKind {
    match step.closed() {
        ServerCloseReason::ProtocolError(e) => e.kind,
        other => panic!("{other:?}"),
    }
}

fn upstream() -> Upstream {
    Upstream {
        from: "DEVICE".into(),
        category: None,
        message_id: MessageId::new("u1").unwrap(),
        data: Map::new(),
        time_to_live: None,
        extra: Map::new(),
    }
}

/// Every command is refused with `want` and writes nothing.
fn all_commands_refused(h: &mut Harness, want: &ServerError) {
    let now = h.now;
    let c = &mut h.conn;
    let receipt = Receipt::sent_to_device(&MessageId::new("m").unwrap(), "R", 0);
    let ack = ccs_proto::message::AppAck {
        to: "x".into(),
        message_id: MessageId::new("m").unwrap(),
    };
    let results = [
        c.ack("m1", None),
        c.nack("m1", NackCode::InvalidJson, None),
        c.nack_bad_ack(&ack, None),
        c.stanza_error("m1", "bad-request", None),
        c.send_stanza_error_raw(None, None, "bad-request", None),
        c.send_upstream(&upstream()),
        c.send_receipt(&receipt),
        c.send_control(&Control::connection_draining()),
        c.send_raw_incoming(&ccs_proto::message::Incoming::Upstream(upstream())),
        c.whitespace(),
        c.close(now),
        c.ping().map(drop),
    ];
    for r in results {
        assert_eq!(r.as_ref(), Err(want));
    }
    if *want == ServerError::Closed {
        assert_eq!(c.stream_error("x", None), Err(ServerError::Closed));
    }
    assert!(c.poll_transmit().is_none());
}

#[test]
fn client_close_is_answered() {
    run(|h| {
        h.handshake();
        send_one(h, "m1");
        let step = h.send(END);
        assert_eq!(step.bytes, END);
        assert_eq!(
            step.event(),
            ServerEvent::Closed {
                reason: ServerCloseReason::ClientClosed
            }
        );
        assert_eq!(h.conn.state(), ServerState::Closed);
        // What was never answered is still visible to the owner's ledger.
        assert_eq!(h.conn.pending(), 1);
        // Everything after is ignored, every command refused.
        let step = h.send(&downstream(&simple_downstream("m2")));
        assert!(step.events.is_empty() && step.bytes.is_empty());
        assert_eq!(h.conn.poll_timeout(), None);
        all_commands_refused(h, &ServerError::Closed);
        let step = h.eof();
        assert!(step.events.is_empty());
    });
}

fn send_one(h: &mut Harness, id: &str) {
    let step = h.send(&downstream(&simple_downstream(id)));
    assert!(matches!(step.event(), ServerEvent::Downstream { .. }));
}

#[test]
fn client_close_at_every_setup_stage() {
    // After the header, after the auth (new stream not opened: the server opens and
    // closes it), after the restart.
    let stages: [&[&[u8]]; 3] = [
        &[&header(DOMAIN)],
        &[&header(DOMAIN), &auth("", SENDER, KEY)],
        &[&header(DOMAIN), &auth("", SENDER, KEY), &header(DOMAIN)],
    ];
    for (i, stage) in stages.iter().enumerate() {
        run(|h| {
            for part in *stage {
                h.send(part);
            }
            if i == 1 {
                // The restarted stream has not begun: an end tag is not a header.
                let step = h.send(END);
                assert!(matches!(step.closed(), ServerCloseReason::ProtocolError(_)));
                assert!(step.ended());
                return;
            }
            let step = h.send(END);
            assert_eq!(step.bytes, END);
            assert_eq!(step.closed(), ServerCloseReason::ClientClosed);
        });
    }
}

#[test]
fn self_closed_header_is_answered_and_closed() {
    // The docs' broken header (PROTOCOL.md §2.2): the server closes at once.
    run(|h| {
        let step = h.send_str(
            "<stream:stream to=\"gcm.googleapis.com\" version=\"1.0\" xmlns=\"jabber:client\" \
             xmlns:stream=\"http://etherx.jabber.org/streams\"/>",
        );
        assert_eq!(step.headers().len(), 1);
        assert!(step.ended());
        assert_eq!(step.closed(), ServerCloseReason::ClientClosed);
    });
}

#[test]
fn eof_closes_once() {
    run(|h| {
        h.handshake();
        send_one(h, "m1");
        // Half a stanza, then the connection drops.
        h.send(b"<message id='m2'><gcm xmlns='google:mobile:data'>{\"to\":");
        let step = h.eof();
        assert_eq!(step.closed(), ServerCloseReason::Eof);
        assert!(step.bytes.is_empty(), "nobody to write to");
        assert_eq!(h.conn.pending(), 1);
        assert!(h.eof().events.is_empty(), "one Closed only");
        assert!(h.send(END).events.is_empty());
    });
    run(|h| {
        assert_eq!(h.eof().closed(), ServerCloseReason::Eof);
    });
}

#[test]
fn client_stream_error_is_answered_with_the_end_tag() {
    run(|h| {
        h.handshake();
        let step = h.send_str(
            "<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>bye</text></stream:error>",
        );
        assert_eq!(step.bytes, END);
        let ServerCloseReason::ClientStreamError(e) = step.closed() else {
            panic!()
        };
        assert_eq!(e.condition, "policy-violation");
        assert_eq!(e.text.as_deref(), Some("bye"));
    });
}

/// Malformed input, each with the stream error condition it must draw.
fn malformed_cases() -> Vec<(Vec<u8>, &'static str)> {
    vec![
        (b"<message><gcm></message></gcm>".to_vec(), "invalid-xml"),
        (b"<message id='a' id='b'/>".to_vec(), "invalid-xml"),
        (
            b"<message><gcm xmlns='google:mobile:data'>a < b</gcm></message>".to_vec(),
            "invalid-xml",
        ),
        (b"</wrong>".to_vec(), "invalid-xml"),
        // A raw `&` in the JSON (PROTOCOL.md §3.1, §8: CCS sent `invalid-xml`).
        (
            br#"<message><gcm xmlns='google:mobile:data'>{"a":"b & c"}</gcm></message>"#.to_vec(),
            "invalid-xml",
        ),
        (b"<!-- a comment -->".to_vec(), "restricted-xml"),
        (b"<!DOCTYPE x>".to_vec(), "restricted-xml"),
        (b"<?pi data?>".to_vec(), "restricted-xml"),
        (
            b"<message><body>&ent;</body></message>".to_vec(),
            "invalid-xml",
        ),
        (
            b"<message><body>\xff\xfe</body></message>".to_vec(),
            "bad-format",
        ),
        (b"some text".to_vec(), "bad-format"),
        (
            format!("<message>{}</message>", "x".repeat(2000)).into_bytes(),
            "policy-violation",
        ),
        (
            format!("{}{}", "<a>".repeat(40), "</a>".repeat(40)).into_bytes(),
            "policy-violation",
        ),
    ]
}

fn small_config() -> ccs_proto::server::ServerConfig {
    let mut c = config();
    c.framer = FramerConfig {
        max_stanza_bytes: 1024,
        ..FramerConfig::default()
    };
    c
}

#[test]
fn malformed_xml_after_bind_draws_a_stream_error() {
    for (bytes, condition) in malformed_cases() {
        run_all_ways(small_config(), |h| {
            h.handshake();
            send_one(h, "m1");
            let step = h.send(&bytes);
            assert_eq!(
                step.stream_error().map(|e| e.condition).as_deref(),
                Some(condition),
                "{}",
                String::from_utf8_lossy(&bytes)
            );
            assert!(step.ended());
            assert!(step.headers().is_empty());
            assert_eq!(step.events.len(), 1, "{:?}", step.events);
            protocol_error(&step);
            // The error's text says what was wrong.
            assert!(step.stream_error().unwrap().text.is_some());
            // Nothing more, whatever comes.
            let step = h.send(&downstream(&simple_downstream("m9")));
            assert!(step.events.is_empty() && step.bytes.is_empty());
            all_commands_refused(h, &ServerError::Closed);
        });
    }
}

#[test]
fn malformed_xml_during_setup_draws_a_stream_error() {
    for (bytes, condition) in malformed_cases() {
        // Before authentication.
        run_all_ways(small_config(), |h| {
            h.send(&header(DOMAIN));
            let step = h.send(&bytes);
            assert_eq!(
                step.stream_error().map(|e| e.condition).as_deref(),
                Some(condition)
            );
            protocol_error(&step);
        });
        // Right after the restarted header (the server's header is out already).
        run_all_ways(small_config(), |h| {
            h.authenticate();
            h.send(&header(DOMAIN));
            let step = h.send(&bytes);
            assert!(step.headers().is_empty());
            assert_eq!(
                step.stream_error().map(|e| e.condition).as_deref(),
                Some(condition)
            );
        });
    }
}

#[test]
fn header_limits() {
    let long = format!(
        "<stream:stream to=\"{}\" version=\"1.0\" xmlns=\"jabber:client\" \
         xmlns:stream=\"http://etherx.jabber.org/streams\">",
        "a".repeat(5000)
    );
    run(|h| {
        let step = h.send_str(&long);
        assert_eq!(step.headers().len(), 1, "the server still opens its stream");
        assert_eq!(
            step.stream_error().map(|e| e.condition).as_deref(),
            Some("policy-violation")
        );
        assert!(matches!(
            protocol_error(&step),
            XmlErrorKind::HeaderTooLarge { .. }
        ));
    });
}

#[test]
fn owner_close_waits_for_the_client() {
    run(|h| {
        h.handshake();
        send_one(h, "m1");
        h.cmd(|c| c.send_upstream(&upstream())).0.unwrap();
        let now = h.now;
        let (r, step) = h.cmd(|c| c.close(now));
        r.unwrap();
        assert_eq!(step.bytes, END);
        assert!(step.events.is_empty());
        assert_eq!(h.conn.state(), ServerState::Closing);
        assert_eq!(h.conn.poll_timeout(), Some(h.now + Duration::from_secs(5)));
        all_commands_refused(h, &ServerError::Closing);

        // The client's ack and a late message crossing the close are still reported; its
        // ping is not answered any more.
        let step = h.send(&app_ack("DEVICE", "u1"));
        assert!(matches!(step.event(), ServerEvent::AppAck(_)));
        assert_eq!(h.conn.unacked_upstream().count(), 0);
        send_one(h, "m2");
        assert_eq!(h.conn.pending(), 2);
        let step = h.send_str("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>");
        assert!(step.bytes.is_empty() && step.events.is_empty());

        let step = h.send(END);
        assert!(step.bytes.is_empty(), "the end tag was sent already");
        assert_eq!(step.closed(), ServerCloseReason::ServerClosed);
        assert_eq!(h.conn.poll_timeout(), None);
    });
}

#[test]
fn owner_close_times_out() {
    run(|h| {
        h.handshake();
        // Measured from the `now` given to close, however long the stream was quiet before.
        h.now += Duration::from_secs(100);
        let now = h.now;
        h.cmd(|c| c.close(now)).0.unwrap();
        let deadline = h.now + Duration::from_secs(5);
        assert_eq!(h.conn.poll_timeout(), Some(deadline));
        assert!(h.advance(Duration::from_secs(4)).events.is_empty());
        let step = h.advance(Duration::from_secs(1));
        assert_eq!(step.closed(), ServerCloseReason::CloseTimeout);
        assert!(step.bytes.is_empty());
    });
    run(|h| {
        h.handshake();
        let now = h.now;
        h.cmd(|c| c.close(now)).0.unwrap();
        assert_eq!(h.eof().closed(), ServerCloseReason::Eof);
    });
}

#[test]
fn malformed_input_while_closing_closes_silently() {
    run(|h| {
        h.handshake();
        let now = h.now;
        h.cmd(|c| c.close(now)).0.unwrap();
        let step = h.send(b"<message><oops></message></oops>");
        assert!(step.bytes.is_empty());
        assert!(matches!(step.closed(), ServerCloseReason::ProtocolError(_)));
    });
}

#[test]
fn owner_close_before_any_header() {
    run(|h| {
        let now = h.now;
        let (r, step) = h.cmd(|c| c.close(now));
        r.unwrap();
        assert_eq!(step.headers().len(), 1);
        assert!(step.ended());
        // The client's header and end arrive after.
        let step = h.send(&header(DOMAIN));
        assert!(step.bytes.is_empty() && step.events.is_empty());
        assert_eq!(h.send(END).closed(), ServerCloseReason::ServerClosed);
    });
}

#[test]
fn owner_stream_error() {
    run(|h| {
        h.handshake();
        let (r, step) = h.cmd(|c| c.stream_error("system-shutdown", Some("maintenance")));
        r.unwrap();
        let e = step.stream_error().unwrap();
        assert_eq!(
            (e.condition.as_str(), e.text.as_deref()),
            ("system-shutdown", Some("maintenance"))
        );
        assert!(step.ended());
        assert_eq!(
            step.closed(),
            ServerCloseReason::StreamError {
                condition: "system-shutdown".into(),
                text: Some("maintenance".into())
            }
        );
        all_commands_refused(h, &ServerError::Closed);
    });
    // Before the client's header: header, error, end (RFC 6120 §4.9.1.1).
    run(|h| {
        let (r, step) = h.cmd(|c| c.stream_error("host-unknown", None));
        r.unwrap();
        assert_eq!(step.headers().len(), 1);
        assert_eq!(
            step.stream_error().map(|e| e.condition).as_deref(),
            Some("host-unknown")
        );
        assert!(step.ended());
    });
    // After close(): nothing more can be written; it just ends the connection.
    run(|h| {
        h.handshake();
        let now = h.now;
        h.cmd(|c| c.close(now)).0.unwrap();
        let (r, step) = h.cmd(|c| c.stream_error("reset", None));
        r.unwrap();
        assert!(step.bytes.is_empty());
        assert!(matches!(
            step.closed(),
            ServerCloseReason::StreamError { .. }
        ));
    });
}

#[test]
fn whitespace_is_ignored_and_sent() {
    run(|h| {
        h.send(&header(DOMAIN));
        assert!(h.send(b" \n \t ").events.is_empty());
        h.send(&auth("", SENDER, KEY));
        h.send(&header(DOMAIN));
        h.send(&bind("b", None));
        assert!(h.send(b"   ").bytes.is_empty());
        let (r, step) = h.cmd(|c| c.whitespace());
        r.unwrap();
        assert_eq!(step.bytes, b" ");
        assert_eq!(h.conn.state(), ServerState::Bound);
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary client bytes after a handshake, split anywhere: no panic, at most one
    /// Closed (the harness asserts nothing follows it), and the server's output stays a
    /// well-formed stream.
    #[test]
    fn arbitrary_input_never_breaks_the_server(
        pieces in proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..40),
                Just(downstream(&simple_downstream("p1"))),
                Just(gcm(Some("x"), "{\"message_id\":\"p2\"}")),
                Just(app_ack("A", "B")),
                Just(b"<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>".to_vec()),
                Just(b"<message>".to_vec()),
                Just(b"</message>".to_vec()),
                Just(END.to_vec()),
            ],
            0..12,
        ),
        before_handshake in any::<bool>(),
    ) {
        let mut h = Harness::new(config(), Feed::Random(7));
        if !before_handshake {
            h.handshake();
        }
        for p in &pieces {
            let step = h.send(p);
            prop_assert!(!step.out.iter().any(|o| matches!(o, Out::Error(_))), "{:?}", step.out);
            let _ = h.conn.ack("p1", None);
            let _ = h.conn.stanza_error("x", "bad-request", None);
        }
        h.eof();
        let closed = h.events.iter().filter(|e| matches!(e, ServerEvent::Closed { .. })).count();
        prop_assert_eq!(closed, 1);
        prop_assert_eq!(h.conn.state(), ServerState::Closed);
    }
}
