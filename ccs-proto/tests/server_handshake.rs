//! The server role from the client's first byte to a bound resource: stream headers, SASL
//! PLAIN in every form CCS accepted and refused (PROTOCOL.md §2.4), restart, bind, session,
//! pings, other IQs and presence. Every scenario runs whole, byte by byte and in random
//! pieces with identical results.

mod server_support;

use std::time::Duration;

use base64::Engine as _;
use ccs_proto::sasl::plain_payload;
use ccs_proto::server::{ServerCloseReason, ServerEvent, ServerState};
use ccs_proto::stanza::{Features, Iq, IqPayload, IqType, Stanza, ns};
use ccs_proto::xml::write;
use server_support::*;

fn is_upper_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// Asserts a server header: `from` as expected, a 16-digit upper-case hex id, jabber:client.
fn check_header(step: &Step, from: &str) -> String {
    let headers = step.headers();
    assert_eq!(headers.len(), 1, "{:?}", step.out);
    let h = &headers[0];
    assert_eq!(h.from(), Some(from));
    assert_eq!(h.version(), Some("1.0"));
    assert_eq!(h.default_namespace(), Some(ns::CLIENT));
    let id = h.id().unwrap().to_owned();
    assert!(is_upper_hex(&id, 16), "{id}");
    id
}

fn features(step: &Step) -> Features {
    match step.stanzas().as_slice() {
        [Stanza::Features(f)] => f.clone(),
        other => panic!("{other:?}"),
    }
}

fn only_iq(step: &Step) -> Iq {
    match step.stanzas().as_slice() {
        [Stanza::Iq(iq)] => iq.clone(),
        other => panic!("{other:?}"),
    }
}

fn sasl_failure(step: &Step) -> String {
    match step.stanzas().as_slice() {
        [Stanza::SaslFailure(f), ..] => f.condition.clone(),
        other => panic!("{other:?}"),
    }
}

/// The whole handshake with the given stream `to` and SASL payload text.
fn handshake_with(h: &mut Harness, to: &str, payload_text: &str, expect_authcid: &str) {
    let step = h.send(&header(to));
    check_header(&step, to);
    let f = features(&step);
    assert_eq!(f.mechanisms, ["X-OAUTH2", "X-GOOGLE-TOKEN", "PLAIN"]);
    assert!(!f.bind && !f.session && f.other.is_empty());
    assert_eq!(h.conn.state(), ServerState::Authenticating);
    assert!(step.events.is_empty());

    let step = h.send(&auth_raw("PLAIN", payload_text));
    assert_eq!(
        step.event(),
        ServerEvent::Authenticated {
            authcid: expect_authcid.to_owned()
        }
    );
    assert_eq!(step.stanzas(), [Stanza::SaslSuccess]);
    assert_eq!(h.conn.state(), ServerState::AwaitingRestart);

    let step = h.send(&header(to));
    check_header(&step, to);
    let f = features(&step);
    assert!(f.bind && f.session && f.mechanisms.is_empty());
    assert_eq!(h.conn.state(), ServerState::Binding);

    let step = h.send(&bind("b1", None));
    let ServerEvent::Bound { jid } = step.event() else {
        panic!("{:?}", step.events)
    };
    assert!(jid.starts_with(&format!("{SENDER}@{DOMAIN}/")), "{jid}");
    assert_eq!(h.conn.jid(), Some(jid.as_str()));
    assert_eq!(h.conn.state(), ServerState::Bound);
    let iq = only_iq(&step);
    assert_eq!(iq.kind, IqType::Result);
    assert_eq!(iq.id.as_deref(), Some("b1"));
    assert_eq!(
        iq.payload,
        IqPayload::Bind {
            resource: None,
            jid: Some(jid)
        }
    );
}

#[test]
fn every_accepted_plain_form_authenticates() {
    let full = format!("{SENDER}@{DOMAIN}");
    // (stream to, authzid, authcid): PROTOCOL.md §2.4's table.
    let forms = [
        (DOMAIN, "", full.as_str()), // GIMMM, the recommended form
        ("fcm-xmpp.googleapis.com", "", full.as_str()), // FCMStream: `to` did not matter
        (DOMAIN, "", SENDER),        // go-xmpp: bare sender, to = domain
        (DOMAIN, full.as_str(), SENDER), // xmpppy
        ("GCM.GOOGLEAPIS.COM", "", SENDER), // domains compare case-insensitively
    ];
    for (to, authzid, authcid) in forms {
        let payload = plain_payload(authzid, authcid, KEY);
        run(|h| handshake_with(h, to, &payload, authcid));
    }
}

#[test]
fn xmpppy_line_wrapped_base64_authenticates() {
    // xmpppy's base64.encodestring: a line break every 76 characters and one at the end.
    let raw = format!("{SENDER}@{DOMAIN}\0{SENDER}\0{KEY}");
    let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
    assert!(b64.len() > 76);
    let wrapped: String = b64
        .as_bytes()
        .chunks(76)
        .map(|c| format!("{}\n", std::str::from_utf8(c).unwrap()))
        .collect();
    run(|h| handshake_with(h, DOMAIN, &wrapped, SENDER));
}

#[test]
fn refused_plain_forms_get_not_authorized_and_may_retry() {
    let full = format!("{SENDER}@{DOMAIN}");
    let cases = [
        (DOMAIN, "", full.clone(), "wrong-key".to_owned()),
        (DOMAIN, "", format!("999@{DOMAIN}"), KEY.to_owned()),
        (DOMAIN, "", "999".to_owned(), KEY.to_owned()),
        // The go-xmpp failure of I35 / KIK: bare sender, stream to = the dialled host.
        (
            "fcm-xmpp.googleapis.com",
            "",
            SENDER.to_owned(),
            KEY.to_owned(),
        ),
        (
            "gcm-xmpp.googleapis.com",
            "",
            SENDER.to_owned(),
            KEY.to_owned(),
        ),
        (
            DOMAIN,
            "",
            format!("{SENDER}@gcm-xmpp.googleapis.com"),
            KEY.to_owned(),
        ),
        (
            DOMAIN,
            "",
            format!("{SENDER}@fcm.googleapis.com"),
            KEY.to_owned(),
        ),
        (DOMAIN, "", format!("{full}/res"), KEY.to_owned()),
        (DOMAIN, "999", full.clone(), KEY.to_owned()),
        (DOMAIN, "", full.clone(), format!("{KEY}x")),
    ];
    for (to, authzid, authcid, key) in &cases {
        run(|h| {
            h.send(&header(to));
            let step = h.send(&auth(authzid, authcid, key));
            assert_eq!(sasl_failure(&step), "not-authorized", "{authcid} {to}");
            assert_eq!(
                step.event(),
                ServerEvent::AuthFailed {
                    condition: "not-authorized".into()
                }
            );
            assert_eq!(h.conn.state(), ServerState::Authenticating);
            // A second attempt with the right identity succeeds on the same stream.
            let step = h.send(&auth("", &full, KEY));
            assert_eq!(step.stanzas(), [Stanza::SaslSuccess]);
        });
    }
}

#[test]
fn bad_sasl_requests_get_their_conditions() {
    let cases: [(&[u8], &str); 6] = [
        (b"<auth mechanism=\"PLAIN\" xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\">!!!not base64!!!</auth>", "incorrect-encoding"),
        (b"<auth mechanism=\"PLAIN\" xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\">AB C=</auth>", "incorrect-encoding"),
        (b"<auth mechanism=\"PLAIN\" xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\">=</auth>", "malformed-request"),
        (b"<auth mechanism=\"PLAIN\" xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"/>", "malformed-request"),
        (b"<auth mechanism=\"X-OAUTH2\" xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\">AHRva2Vu</auth>", "invalid-mechanism"),
        (b"<auth mechanism=\"DIGEST-MD5\" xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"/>", "invalid-mechanism"),
    ];
    for (bytes, condition) in cases {
        run(|h| {
            h.send(&header(DOMAIN));
            let step = h.send(bytes);
            assert_eq!(sasl_failure(&step), condition);
            assert_eq!(
                step.event(),
                ServerEvent::AuthFailed {
                    condition: condition.into()
                }
            );
        });
    }
    // A payload that decodes to two fields only.
    let two = base64::engine::general_purpose::STANDARD.encode(format!("{SENDER}\0{KEY}"));
    run(|h| {
        h.send(&header(DOMAIN));
        assert_eq!(
            sasl_failure(&h.send(&auth_raw("PLAIN", &two))),
            "malformed-request"
        );
    });
}

#[test]
fn plain_is_refused_when_not_offered() {
    let mut config = config();
    config.mechanisms = vec!["X-OAUTH2".into()];
    run_all_ways(config, |h| {
        let step = h.send(&header(DOMAIN));
        assert_eq!(features(&step).mechanisms, ["X-OAUTH2"]);
        let step = h.send(&auth("", &format!("{SENDER}@{DOMAIN}"), KEY));
        assert_eq!(sasl_failure(&step), "invalid-mechanism");
    });
}

#[test]
fn sasl_abort_is_a_failure() {
    run(|h| {
        h.send(&header(DOMAIN));
        let step = h.send(b"<abort xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"/>");
        assert_eq!(sasl_failure(&step), "aborted");
        assert_eq!(
            step.event(),
            ServerEvent::AuthFailed {
                condition: "aborted".into()
            }
        );
    });
}

#[test]
fn three_failures_end_the_stream() {
    run(|h| {
        h.send(&header(DOMAIN));
        for _ in 0..2 {
            let step = h.send(&auth("", SENDER, "wrong"));
            assert_eq!(sasl_failure(&step), "not-authorized");
            assert_eq!(h.conn.state(), ServerState::Authenticating);
        }
        let step = h.send(&auth_raw("X-OAUTH2", "AA=="));
        assert_eq!(sasl_failure(&step), "invalid-mechanism");
        assert_eq!(
            step.stream_error().map(|e| e.condition).as_deref(),
            Some("policy-violation")
        );
        assert!(step.ended());
        assert_eq!(step.events.len(), 2, "{:?}", step.events);
        assert!(matches!(
            step.closed(),
            ServerCloseReason::StreamError { condition, .. } if condition == "policy-violation"
        ));
        assert_eq!(h.conn.state(), ServerState::Closed);
        // Everything after is ignored.
        let step = h.send(&auth("", SENDER, KEY));
        assert!(step.events.is_empty() && step.bytes.is_empty());
    });
}

#[test]
fn restart_bytes_in_the_same_input_as_the_auth_are_kept() {
    run(|h| {
        // One client write: header, auth, then (pipelined after the success it expects) the
        // restarted header and the bind request.
        let all = cat(&[
            &header(DOMAIN),
            &auth("", &format!("{SENDER}@{DOMAIN}"), KEY),
            &header(DOMAIN),
            &bind("b1", Some("test")),
            b" ",
            &write_iq_session("s1"),
        ]);
        let step = h.send(&all);
        assert_eq!(step.events.len(), 2, "{:?}", step.events);
        assert!(matches!(step.events[0], ServerEvent::Authenticated { .. }));
        assert!(matches!(step.events[1], ServerEvent::Bound { .. }));
        assert_eq!(step.headers().len(), 2);
        let s = step.stanzas();
        assert_eq!(s.len(), 5, "{s:?}");
        assert!(matches!(&s[0], Stanza::Features(f) if f.offers_plain()));
        assert_eq!(s[1], Stanza::SaslSuccess);
        assert!(matches!(&s[2], Stanza::Features(f) if f.bind));
        assert!(matches!(&s[3], Stanza::Iq(iq) if iq.kind == IqType::Result));
        assert!(
            matches!(&s[4], Stanza::Iq(iq) if iq.kind == IqType::Result && iq.id.as_deref() == Some("s1"))
        );
        assert_eq!(h.conn.state(), ServerState::Bound);
    });
}

fn write_iq_session(id: &str) -> Vec<u8> {
    let mut b = Vec::new();
    write::iq_session_set(&mut b, id);
    b
}

fn write_iq_ping(id: &str) -> Vec<u8> {
    let mut b = Vec::new();
    write::iq_ping(&mut b, id, Some(DOMAIN));
    b
}

#[test]
fn stream_ids_are_fresh_on_restart() {
    run(|h| {
        let first = check_header(&h.send(&header(DOMAIN)), DOMAIN);
        h.send(&auth("", SENDER, KEY));
        let second = check_header(&h.send(&header(DOMAIN)), DOMAIN);
        assert_ne!(first, second);
        assert_eq!(h.conn.stream_id(), Some(second.as_str()));
    });
}

#[test]
fn bind_with_a_requested_resource_gets_an_8_digit_suffix() {
    run(|h| {
        h.authenticate();
        h.send(&header(DOMAIN));
        let step = h.send(&bind("b1", Some("test")));
        let ServerEvent::Bound { jid } = step.event() else {
            panic!()
        };
        let prefix = format!("{SENDER}@{DOMAIN}/test");
        let suffix = jid.strip_prefix(&prefix).unwrap();
        assert!(is_upper_hex(suffix, 8), "{jid}");
    });
}

#[test]
fn bind_without_a_resource_gets_a_generated_one() {
    run(|h| {
        let jid = h.handshake();
        let resource = jid.strip_prefix(&format!("{SENDER}@{DOMAIN}/")).unwrap();
        assert!(is_upper_hex(resource, 16), "{jid}");
    });
    // Another seed, another resource.
    let mut other = config();
    other.seed = 7;
    let mut a = Harness::new(config(), Feed::Whole);
    let mut b = Harness::new(other, Feed::Whole);
    assert_ne!(a.handshake(), b.handshake());
}

#[test]
fn bind_without_id_and_a_second_bind() {
    run(|h| {
        h.authenticate();
        h.send(&header(DOMAIN));
        let step =
            h.send_str("<iq type=\"set\"><bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\"/></iq>");
        let iq = only_iq(&step);
        assert_eq!((iq.kind, iq.id), (IqType::Result, None));
        // Binding twice is not allowed (RFC 6120 has one resource per stream).
        let step = h.send(&bind("b2", Some("again")));
        assert!(step.events.is_empty());
        let iq = only_iq(&step);
        assert_eq!(iq.kind, IqType::Error);
        assert_eq!(iq.error.unwrap().condition, "not-allowed");
    });
}

#[test]
fn bad_resource_is_refused_with_bad_request() {
    run(|h| {
        h.authenticate();
        h.send(&header(DOMAIN));
        let long = "r".repeat(1020);
        let step = h.send(&bind("b1", Some(&long)));
        let iq = only_iq(&step);
        assert_eq!(iq.kind, IqType::Error);
        let err = iq.error.unwrap();
        assert_eq!(
            (err.condition.as_str(), err.kind.as_deref()),
            ("bad-request", Some("modify"))
        );
        assert_eq!(h.conn.state(), ServerState::Binding);
        // The client may try again.
        let step = h.send(&bind("b2", Some("ok")));
        assert!(matches!(step.event(), ServerEvent::Bound { .. }));
    });
}

#[test]
fn session_and_ping_are_answered() {
    run(|h| {
        h.handshake();
        let step = h.send(&write_iq_session("s1"));
        assert!(step.events.is_empty());
        assert_eq!(step.text(), "<iq type=\"result\" id=\"s1\"/>");
        let step = h.send(&write_iq_ping("c2s1"));
        assert_eq!(step.text(), "<iq type=\"result\" id=\"c2s1\"/>");
        // go-xmpp's ping form, with `from` and single quotes.
        let step = h.send_str(&format!(
            "<iq from='{}' to='{DOMAIN}' id='c2s2' type='get'><ping xmlns='urn:xmpp:ping'/></iq>",
            h.conn.jid().unwrap()
        ));
        assert_eq!(step.text(), "<iq type=\"result\" id=\"c2s2\"/>");
    });
}

#[test]
fn ping_is_answered_before_authentication() {
    run(|h| {
        h.send(&header(DOMAIN));
        let step = h.send(&write_iq_ping("p1"));
        assert_eq!(step.text(), "<iq type=\"result\" id=\"p1\"/>");
        assert_eq!(h.conn.state(), ServerState::Authenticating);
        h.send(&auth("", SENDER, KEY));
        h.send(&header(DOMAIN));
        let step = h.send(&write_iq_ping("p2"));
        assert_eq!(step.text(), "<iq type=\"result\" id=\"p2\"/>");
        assert_eq!(h.conn.state(), ServerState::Binding);
    });
}

#[test]
fn other_iqs_get_service_unavailable() {
    run(|h| {
        h.handshake();
        for request in [
            "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>",
            "<iq type='get' id='r1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
            "<iq type='set' id='r1'><query xmlns='jabber:iq:private'><x/></query></iq>",
            "<iq type='get' id='r1'/>",
        ] {
            let step = h.send_str(request);
            assert!(step.events.is_empty());
            assert_eq!(
                step.text(),
                "<iq type=\"error\" id=\"r1\"><error type=\"cancel\"><service-unavailable \
                 xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></error></iq>"
            );
        }
        // Results and errors from the client are not answered.
        let step = h.send_str("<iq type='result' id='x'/><iq type='error' id='y'/>");
        assert!(step.events.is_empty() && step.bytes.is_empty());
        // An iq without a valid type gets bad-request.
        let step = h.send_str("<iq type='bogus' id='z'><ping xmlns='urn:xmpp:ping'/></iq>");
        let iq = only_iq(&step);
        assert_eq!(iq.error.unwrap().condition, "bad-request");
        assert_eq!(h.conn.state(), ServerState::Bound);
    });
}

#[test]
fn presence_is_ignored() {
    run(|h| {
        h.handshake();
        // go-xmpp's initial presence, and slixmpp's.
        let step = h.send_str(
            "<presence xml:lang='en'><show></show><status></status></presence><presence/>",
        );
        assert!(step.events.is_empty() && step.bytes.is_empty());
        assert_eq!(h.conn.state(), ServerState::Bound);
        assert_eq!(h.conn.stats().stanzas_in, 4, "auth, bind, two presences");
    });
}

#[test]
fn stanzas_before_authentication_are_not_authorized() {
    let early: [&[u8]; 4] = [
        &gcm(Some("m1"), "{\"to\":\"x\",\"message_id\":\"m1\"}"),
        &bind("b1", None),
        b"<presence/>",
        b"<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>",
    ];
    for bytes in early {
        run(|h| {
            h.send(&header(DOMAIN));
            let step = h.send(bytes);
            assert_eq!(
                step.stream_error().map(|e| e.condition).as_deref(),
                Some("not-authorized")
            );
            assert!(step.ended());
            assert_eq!(step.events.len(), 1);
            assert!(matches!(
                step.closed(),
                ServerCloseReason::StreamError { condition, .. } if condition == "not-authorized"
            ));
        });
    }
}

#[test]
fn message_after_auth_but_before_bind_is_not_authorized() {
    run(|h| {
        h.authenticate();
        h.send(&header(DOMAIN));
        let step = h.send(&downstream(&simple_downstream("m1")));
        assert_eq!(
            step.stream_error().map(|e| e.condition).as_deref(),
            Some("not-authorized")
        );
        assert_eq!(h.conn.pending(), 0);
    });
}

#[test]
fn auth_after_success_is_a_policy_violation() {
    run(|h| {
        h.authenticate();
        h.send(&header(DOMAIN));
        let step = h.send(&auth("", SENDER, KEY));
        assert_eq!(
            step.stream_error().map(|e| e.condition).as_deref(),
            Some("policy-violation")
        );
        assert_eq!(h.conn.state(), ServerState::Closed);
    });
}

#[test]
fn header_forms_of_real_clients() {
    // go-xmpp: XML declaration, single quotes, version last.
    let go_xmpp = "<?xml version='1.0'?>\n<stream:stream to='gcm.googleapis.com' \
        xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";
    // No `to` at all: the server answers from its own domain, and a bare sender id is
    // completed with it.
    let no_to = "<stream:stream version=\"1.0\" xmlns=\"jabber:client\" \
        xmlns:stream=\"http://etherx.jabber.org/streams\">";
    // Another prefix for the stream namespace.
    let other_prefix = "<s:stream to=\"gcm.googleapis.com\" version=\"1.0\" \
        xmlns=\"jabber:client\" xmlns:s=\"http://etherx.jabber.org/streams\">";
    for header in [go_xmpp, no_to, other_prefix] {
        run(|h| {
            let step = h.send_str(header);
            check_header(&step, DOMAIN);
            let step = h.send(&auth("", SENDER, KEY));
            assert_eq!(step.stanzas(), [Stanza::SaslSuccess], "{header}");
        });
    }
}

#[test]
fn wrong_stream_namespace_gets_a_header_then_a_stream_error() {
    let cases = [
        (
            "<stream:stream to='gcm.googleapis.com' version='1.0' xmlns='jabber:server' \
             xmlns:stream='http://etherx.jabber.org/streams'>",
            "invalid-namespace",
        ),
        (
            "<stream:stream to='gcm.googleapis.com' version='1.0' xmlns='jabber:client' \
             xmlns:stream='urn:wrong'>",
            "invalid-namespace",
        ),
        (
            "<stream:stream to='gcm.googleapis.com' version='2.0' xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams'>",
            "unsupported-version",
        ),
        ("<message/>", "not-well-formed"),
    ];
    for (header, condition) in cases {
        run(|h| {
            let step = h.send_str(header);
            // RFC 6120 §4.9.1.1: the server opens its stream before the error.
            assert_eq!(step.headers().len(), 1, "{header}: {:?}", step.out);
            assert_eq!(
                step.stream_error().map(|e| e.condition).as_deref(),
                Some(condition),
                "{header}"
            );
            assert!(step.ended());
            assert_eq!(step.events.len(), 1);
            assert_eq!(h.conn.state(), ServerState::Closed);
        });
    }
}

#[test]
fn tls_bytes_on_the_plain_port() {
    run(|h| {
        let step = h.send(&[0x16, 0x03, 0x01, 0x00, 0xa5, 0x01]);
        assert_eq!(
            step.stream_error().map(|e| e.condition).as_deref(),
            Some("not-well-formed")
        );
        assert!(matches!(step.closed(), ServerCloseReason::ProtocolError(_)));
    });
}

#[test]
fn setup_timeout() {
    let mut config = config();
    config.setup_timeout = Some(Duration::from_secs(10));
    run_all_ways(config.clone(), |h| {
        let start = h.now;
        assert_eq!(h.conn.poll_timeout(), Some(start + Duration::from_secs(10)));
        h.send(&header(DOMAIN));
        let step = h.advance(Duration::from_secs(5));
        assert!(step.events.is_empty() && step.bytes.is_empty());
        let step = h.advance(Duration::from_secs(5));
        assert_eq!(
            step.stream_error().map(|e| e.condition).as_deref(),
            Some("connection-timeout")
        );
        assert_eq!(step.closed(), ServerCloseReason::SetupTimeout);
        assert_eq!(h.conn.poll_timeout(), None);
    });
    // Binding in time clears the timer; late timeouts are harmless.
    run_all_ways(config, |h| {
        h.handshake();
        assert_eq!(h.conn.poll_timeout(), None);
        let step = h.advance(Duration::from_secs(60));
        assert!(step.events.is_empty() && step.bytes.is_empty());
        assert_eq!(h.conn.state(), ServerState::Bound);
    });
}

#[test]
fn no_timer_by_default() {
    run(|h| {
        assert_eq!(h.conn.poll_timeout(), None);
        let step = h.advance(Duration::from_secs(3600));
        assert!(step.events.is_empty() && step.bytes.is_empty());
        assert_eq!(h.conn.state(), ServerState::AwaitingHeader);
    });
}

#[test]
fn session_is_not_offered_when_configured_off() {
    let mut config = config();
    config.offer_session = false;
    run_all_ways(config, |h| {
        h.authenticate();
        let f = features(&h.send(&header(DOMAIN)));
        assert!(f.bind && !f.session);
        // A client that sends it anyway still gets a result.
        h.send(&bind("b1", None));
        assert_eq!(
            h.send(&write_iq_session("s")).text(),
            "<iq type=\"result\" id=\"s\"/>"
        );
    });
}

#[test]
fn exact_bytes_of_the_handshake() {
    let mut h = Harness::new(config(), Feed::Whole);
    let step = h.send(&header(DOMAIN));
    let id = h.conn.stream_id().unwrap().to_owned();
    assert_eq!(
        step.text(),
        format!(
            "<stream:stream from=\"gcm.googleapis.com\" id=\"{id}\" version=\"1.0\" \
             xmlns:stream=\"http://etherx.jabber.org/streams\" xmlns=\"jabber:client\">\
             <stream:features><mechanisms xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\">\
             <mechanism>X-OAUTH2</mechanism><mechanism>X-GOOGLE-TOKEN</mechanism>\
             <mechanism>PLAIN</mechanism></mechanisms></stream:features>"
        )
    );
    let step = h.send(&auth("", SENDER, KEY));
    assert_eq!(
        step.text(),
        "<success xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"/>"
    );
    let step = h.send(&auth("", SENDER, KEY));
    // Before the restarted header the old stream is over: an <auth> here is the start of
    // the new stream, which must be a header.
    assert!(matches!(step.closed(), ServerCloseReason::ProtocolError(_)));
}
