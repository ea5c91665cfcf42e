//! Hostile server bytes, fed to the client's `Connection`.

use ccs_proto::ConnectionEvent;
use ccs_proto::connection::{Anomaly, CloseReason, State};
use ccs_proto::error::XmlErrorKind as K;
use ccs_proto::message::{ControlType, Incoming};
use ccs_proto::stanza::Stanza;

use super::{
    BIND_FEATURES, Case, MAX_PIECE, MB, Role, Run, SASL_FEATURES, SERVER_HEADER, SUCCESS, Start,
    Then, bind_result, gcm, repeat, server_handshake,
};

const C: Role = Role::ClientFacingServerBytes;

fn anomaly(r: &Run, f: fn(&Anomaly) -> bool) -> bool {
    r.client_events
        .iter()
        .any(|e| matches!(e, ConnectionEvent::Anomaly(a) if f(a)))
}

fn invalid_payload(r: &Run) -> bool {
    r.open() && anomaly(r, |a| matches!(a, Anomaly::InvalidPayload { .. }))
}

fn connected(r: &Run) -> bool {
    r.client_state == Some(State::Connected)
}

const LAUGHS: &str = "<!DOCTYPE lolz [<!ENTITY lol \"lol\">\
    <!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\
    <!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">\
    <!ENTITY lol9 \"&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;\">]>";

pub fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "client/billion-laughs-dtd-before-header",
            role: C,
            start: Start::Fresh,
            input: || {
                format!("<?xml version='1.0'?>{LAUGHS}{SERVER_HEADER}<message>&lol9;</message>")
                    .into_bytes()
            },
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "Protocol(Xml(Dtd)): nothing expanded",
            check: |r| r.xml() == Some(&K::Dtd),
        },
        Case {
            name: "client/billion-laughs-entity-in-stanza",
            role: C,
            start: Start::Ready,
            input: || b"<message><body>&lol9;&lol9;&lol9;</body></message>".to_vec(),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "Protocol(Xml(UndefinedEntity))",
            check: |r| matches!(r.xml(), Some(K::UndefinedEntity { .. })),
        },
        Case {
            name: "client/external-entity-declaration",
            role: C,
            start: Start::Ready,
            input: || {
                b"<!DOCTYPE x [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]><message>&xxe;</message>".to_vec()
            },
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "Protocol(Xml(Dtd)): no file read, nothing fetched",
            check: |r| r.xml() == Some(&K::Dtd),
        },
        Case {
            name: "client/external-entity-reference",
            role: C,
            start: Start::Ready,
            input: || b"<message><gcm xmlns='google:mobile:data'>&xxe;</gcm></message>".to_vec(),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "Protocol(Xml(UndefinedEntity))",
            check: |r| matches!(r.xml(), Some(K::UndefinedEntity { .. })),
        },
        Case {
            name: "client/dtd-between-stanzas",
            role: C,
            start: Start::Ready,
            input: || b"<!DOCTYPE message>".to_vec(),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "Protocol(Xml(Dtd))",
            check: |r| r.xml() == Some(&K::Dtd),
        },
        Case {
            name: "client/deep-nesting-100k",
            role: C,
            start: Start::Ready,
            input: || {
                "<message>"
                    .to_owned()
                    .into_bytes()
                    .into_iter()
                    .chain(b"<a>".repeat(100_000))
                    .collect()
            },
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "Protocol(Xml(TooDeep { limit: 32 }))",
            check: |r| r.xml() == Some(&K::TooDeep { limit: 32 }),
        },
        Case {
            name: "client/endless-stanza-10mb",
            role: C,
            start: Start::Ready,
            input: || repeat("<message><body>", b'x', 10 * MB, ""),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "Protocol(Xml(StanzaTooLarge { limit: 65536 })) at 64 KiB",
            check: |r| r.xml() == Some(&K::StanzaTooLarge { limit: 65536 }),
        },
        Case {
            name: "client/endless-attribute-10mb",
            role: C,
            start: Start::Ready,
            input: || repeat("<message id='", b'a', 10 * MB, ""),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "Protocol(Xml(StanzaTooLarge))",
            check: |r| r.xml() == Some(&K::StanzaTooLarge { limit: 65536 }),
        },
        Case {
            name: "client/endless-header-attribute-10mb",
            role: C,
            start: Start::Fresh,
            input: || repeat("<stream:stream from='", b'a', 10 * MB, ""),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "Protocol(Xml(HeaderTooLarge { limit: 4096 }))",
            check: |r| r.xml() == Some(&K::HeaderTooLarge { limit: 4096 }),
        },
        Case {
            name: "client/id-attribute-1mb",
            role: C,
            start: Start::Ready,
            input: || repeat("<message id='", b'7', MB, "'/>"),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "Protocol(Xml(StanzaTooLarge))",
            check: |r| r.xml() == Some(&K::StanzaTooLarge { limit: 65536 }),
        },
        Case {
            name: "client/invalid-utf8",
            role: C,
            start: Start::Ready,
            input: || b"<message><body>\xff\xfe</body></message>".to_vec(),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "Protocol(Xml(InvalidUtf8))",
            check: |r| r.xml() == Some(&K::InvalidUtf8),
        },
        Case {
            name: "client/overlong-utf8-lt",
            role: C,
            start: Start::Ready,
            input: || b"<message><body>\xc0\xbcmessage/></body></message>".to_vec(),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "Protocol(Xml(InvalidUtf8))",
            check: |r| r.xml() == Some(&K::InvalidUtf8),
        },
        Case {
            name: "client/nul-byte",
            role: C,
            start: Start::Ready,
            input: || b"<message><body>a\0b</body></message>".to_vec(),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            // FOUND BY THIS CATALOGUE: a raw NUL (any C0 control) inside an element the
            // decoder skips was accepted. Fixed: xml::chars::check_raw_chars.
            expect: "Protocol(Xml(Malformed)) (NUL is not an XML character)",
            check: |r| matches!(r.xml(), Some(K::Malformed { .. })),
        },
        Case {
            name: "client/nul-byte-in-header",
            role: C,
            start: Start::Fresh,
            input: || SERVER_HEADER.replace("id='1'", "id='1\0'").into_bytes(),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            // Fixed with client/nul-byte (the header parser had the same gap).
            expect: "Protocol(Xml(Malformed))",
            check: |r| matches!(r.xml(), Some(K::Malformed { .. })),
        },
        Case {
            name: "client/noncharacter-uffff",
            role: C,
            start: Start::Ready,
            input: || {
                "<message><body>\u{FFFF}</body></message>"
                    .as_bytes()
                    .to_vec()
            },
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            // Fixed with client/nul-byte.
            expect: "Protocol(Xml(Malformed)) (U+FFFF is not an XML character)",
            check: |r| matches!(r.xml(), Some(K::Malformed { .. })),
        },
        Case {
            name: "client/nul-char-ref",
            role: C,
            start: Start::Ready,
            input: || b"<message><body>&#0;</body></message>".to_vec(),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "Protocol(Xml(InvalidCharRef))",
            check: |r| matches!(r.xml(), Some(K::InvalidCharRef { .. })),
        },
        Case {
            name: "client/lone-surrogate-json-escape",
            role: C,
            start: Start::Ready,
            input: || gcm(r#"{"from":"d","message_id":"u1","data":{"k":"\ud800"}}"#),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "Anomaly(InvalidPayload), stream open, not acked",
            check: invalid_payload,
        },
        Case {
            name: "client/deeply-nested-json",
            role: C,
            start: Start::Ready,
            input: || {
                let mut j = r#"{"from":"d","message_id":"u1","data":{"k":"#.to_owned();
                j.push_str(&"[".repeat(20_000));
                gcm(&j)
            },
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "Anomaly(InvalidPayload) (serde_json's recursion limit), stream open",
            check: invalid_payload,
        },
        Case {
            name: "client/duplicate-json-keys",
            role: C,
            start: Start::Ready,
            input: || gcm(r#"{"message_type":"ack","message_id":"a","message_id":"b","from":"x"}"#),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "Anomaly(InvalidPayload) (duplicate field), stream open",
            check: invalid_payload,
        },
        Case {
            name: "client/huge-json-number",
            role: C,
            start: Start::Ready,
            input: || {
                let n = "9".repeat(30_000);
                gcm(&format!(
                    r#"{{"from":"d","message_id":"u1","data":{{"n":{n}}},"ttl":1e999999}}"#
                ))
            },
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            // serde_json refuses a number beyond f64 ("number out of range"), so even the
            // lenient upstream decoding cannot take it: not acked, CCS would redeliver it.
            expect: "Anomaly(InvalidPayload) (number out of range), not acked, stream open",
            check: |r| invalid_payload(r) && !r.wrote("\"ack\""),
        },
        Case {
            name: "client/huge-json-string",
            role: C,
            start: Start::Ready,
            input: || {
                let s = "x".repeat(60_000);
                gcm(&format!(
                    r#"{{"from":"d","message_id":"u1","data":{{"s":"{s}"}}}}"#
                ))
            },
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "tolerated: Upstream event and ack (within the 64 KiB stanza limit)",
            check: |r| {
                r.open()
                    && r.client_events
                        .iter()
                        .any(|e| matches!(e, ConnectionEvent::Upstream { .. }))
                    && r.wrote("\"message_type\":\"ack\"")
            },
        },
        Case {
            name: "client/json-trailing-garbage",
            role: C,
            start: Start::Ready,
            input: || gcm(r#"{"message_type":"ack","message_id":"a","from":"x"} trailing"#),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "Anomaly(InvalidPayload), stream open",
            check: invalid_payload,
        },
        Case {
            name: "client/message-type-not-a-string",
            role: C,
            start: Start::Ready,
            input: || gcm(r#"{"message_type":5,"message_id":"a","from":"x"}"#),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "Anomaly(InvalidPayload), stream open",
            check: invalid_payload,
        },
        Case {
            name: "client/gcm-without-text",
            role: C,
            start: Start::Ready,
            input: || b"<message><gcm xmlns='google:mobile:data'/></message>".to_vec(),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "Anomaly(InvalidPayload) with empty text, stream open",
            check: |r| {
                r.open()
                    && anomaly(
                        r,
                        |a| matches!(a, Anomaly::InvalidPayload { json, .. } if json.is_empty()),
                    )
            },
        },
        Case {
            name: "client/two-gcm-elements",
            role: C,
            start: Start::Ready,
            input: || {
                let a = r#"{"from":"d","message_id":"u1","data":{}}"#;
                let b = r#"{"from":"d","message_id":"u2","data":{}}"#;
                format!("<message><gcm xmlns='google:mobile:data'>{a}</gcm><gcm xmlns='google:mobile:data'>{b}</gcm></message>").into_bytes()
            },
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "tolerated: the first <gcm> is taken (u1, acked), the second ignored; stream open",
            check: |r| {
                let ups: Vec<_> = r
                    .client_events
                    .iter()
                    .filter_map(|e| match e {
                        ConnectionEvent::Upstream { message, .. } => {
                            Some(message.message_id.as_str())
                        }
                        _ => None,
                    })
                    .collect();
                r.open() && ups == ["u1"] && !r.wrote("u2")
            },
        },
        Case {
            name: "client/nack-unknown-error-code",
            role: C,
            start: Start::Ready,
            input: || {
                gcm(
                    r#"{"message_type":"nack","message_id":"nope","from":"x","error":"NEW_CODE_FROM_THE_FUTURE"}"#,
                )
            },
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "Anomaly(UnknownNack), stream open",
            check: |r| r.open() && anomaly(r, |a| matches!(a, Anomaly::UnknownNack(_))),
        },
        Case {
            name: "client/control-unknown-type",
            role: C,
            start: Start::Ready,
            input: || gcm(r#"{"message_type":"control","control_type":"SELF_DESTRUCT"}"#),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "Unrecognized(Control(ControlType::Unknown)), ignored, stream open",
            check: |r| {
                r.open() && connected(r) && r.client_events.iter().any(|e| matches!(e, ConnectionEvent::Unrecognized(Incoming::Control(c)) if matches!(c.control_type, ControlType::Unknown(_))))
            },
        },
        Case {
            name: "client/unknown-message-type",
            role: C,
            start: Start::Ready,
            input: || gcm(r#"{"message_type":"ransom","message_id":"m"}"#),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "Unrecognized(Incoming::Unknown), not acked, stream open",
            check: |r| {
                r.open()
                    && r.client_events.iter().any(|e| {
                        matches!(e, ConnectionEvent::Unrecognized(Incoming::Unknown { .. }))
                    })
            },
        },
        Case {
            name: "client/ack-with-extra-fields",
            role: C,
            start: Start::Ready,
            input: || {
                gcm(
                    r#"{"message_type":"ack","message_id":"nope","from":"x","extra":{"deep":[1,2,3]},"z":null}"#,
                )
            },
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "Anomaly(UnknownAck) (extra fields tolerated), stream open",
            check: |r| r.open() && anomaly(r, |a| matches!(a, Anomaly::UnknownAck(_))),
        },
        Case {
            name: "client/acks-for-unknown-ids-flood",
            role: C,
            start: Start::Ready,
            input: || {
                (0..20_000)
                    .flat_map(|i| {
                        gcm(&format!(
                            r#"{{"message_type":"ack","message_id":"x{i}","from":"d"}}"#
                        ))
                    })
                    .collect()
            },
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "one Anomaly(UnknownAck) each, nothing retained, stream open",
            check: |r| {
                r.open()
                    && r.events_total == 20_000
                    && anomaly(r, |a| matches!(a, Anomaly::UnknownAck(_)))
            },
        },
        Case {
            name: "client/whitespace-flood-10mb",
            role: C,
            start: Start::Ready,
            input: || vec![b' '; 10 * MB],
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "tolerated (keepalives), nothing buffered, stream open",
            check: |r| r.open() && connected(r),
        },
        Case {
            name: "client/stanza-before-header",
            role: C,
            start: Start::Fresh,
            input: || gcm(r#"{"message_type":"ack","message_id":"a","from":"x"}"#),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "Protocol(Xml(NotAStreamHeader))",
            check: |r| matches!(r.xml(), Some(K::NotAStreamHeader { .. })),
        },
        Case {
            name: "client/bytes-after-stream-end",
            role: C,
            start: Start::Ready,
            input: || b"</stream:stream><message><body>more</body></message>".to_vec(),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "ServerClosed at the end tag; the bytes after it are not processed",
            check: |r| r.client_close() == Some(&CloseReason::ServerClosed) && r.events_total == 1,
        },
        Case {
            name: "client/second-header-mid-stream",
            role: C,
            start: Start::Ready,
            input: || SERVER_HEADER.as_bytes().to_vec(),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            // Documented tolerance: the framer takes a header as a stream restart; in the
            // Connected state the connection ignores it (no event, no state change).
            expect: "tolerated: ignored, no event, still Connected",
            check: |r| r.open() && connected(r) && r.events_total == 0,
        },
        Case {
            name: "client/sasl-success-before-auth",
            role: C,
            start: Start::Fresh,
            input: || format!("{SERVER_HEADER}{SUCCESS}").into_bytes(),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Advance(16),
            expect: "Anomaly(UnexpectedStanza(SaslSuccess)): not authenticated by it, no key sent; SetupTimeout",
            check: |r| {
                anomaly(
                    r,
                    |a| matches!(a, Anomaly::UnexpectedStanza(s) if **s == Stanza::SaslSuccess),
                ) && matches!(
                    r.client_close(),
                    Some(CloseReason::SetupTimeout {
                        state: State::AwaitingFeatures
                    })
                ) && !r.wrote("<auth")
            },
        },
        Case {
            name: "client/bind-result-for-wrong-id",
            role: C,
            start: Start::Fresh,
            input: || {
                format!(
                    "{SERVER_HEADER}{SASL_FEATURES}{SUCCESS}{SERVER_HEADER}{BIND_FEATURES}{}",
                    bind_result("evil")
                )
                .into_bytes()
            },
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Advance(16),
            expect: "not bound by it; closed at the setup timeout (or as a bind failure)",
            check: |r| {
                !r.client_events
                    .iter()
                    .any(|e| matches!(e, ConnectionEvent::Connected { .. }))
                    && matches!(
                        r.client_close(),
                        Some(
                            CloseReason::SetupTimeout { .. }
                                | CloseReason::BindFailed { .. }
                                | CloseReason::Protocol(_)
                        )
                    )
            },
        },
        Case {
            name: "client/plain-not-offered",
            role: C,
            start: Start::Fresh,
            input: || {
                format!("{SERVER_HEADER}<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>X-OAUTH2</mechanism></mechanisms></stream:features>").into_bytes()
            },
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "PlainNotOffered; the key is never sent",
            check: |r| {
                matches!(r.client_close(), Some(CloseReason::PlainNotOffered { .. }))
                    && !r.wrote("<auth")
            },
        },
        Case {
            name: "client/trickle-whole-handshake-1-byte-per-call",
            role: C,
            start: Start::Fresh,
            input: || server_handshake().into_bytes(),
            piece: 1,
            retained: 0,
            then: Then::Nothing,
            expect: "works: Connected",
            check: |r| {
                connected(r)
                    && r.client_events
                        .iter()
                        .any(|e| matches!(e, ConnectionEvent::Connected { .. }))
            },
        },
        Case {
            name: "client/stanza-never-finished",
            role: C,
            start: Start::Ready,
            input: || b"<message><gcm xmlns='google:mobile:data'>{".to_vec(),
            piece: 1,
            retained: 0,
            then: Then::Advance(31),
            expect: "StanzaTimeout after stanza_timeout (30 s)",
            check: |r| r.client_close() == Some(&CloseReason::StanzaTimeout),
        },
        Case {
            name: "client/eof-mid-stanza",
            role: C,
            start: Start::Ready,
            input: || b"<message><gcm".to_vec(),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Eof,
            expect: "Eof { mid_stanza: true }",
            check: |r| r.client_close() == Some(&CloseReason::Eof { mid_stanza: true }),
        },
        Case {
            name: "client/see-other-host-redirect",
            role: C,
            start: Start::Ready,
            input: || {
                b"<stream:error><see-other-host xmlns='urn:ietf:params:xml:ns:xmpp-streams'>evil.example:5222</see-other-host></stream:error>".to_vec()
            },
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "CloseReason::StreamError(see-other-host): typed close, no new connection",
            check: |r| r.stream_error() == Some("see-other-host"),
        },
        Case {
            name: "client/see-other-host-during-setup",
            role: C,
            start: Start::Fresh,
            input: || {
                format!("{SERVER_HEADER}<stream:error><see-other-host xmlns='urn:ietf:params:xml:ns:xmpp-streams'>evil.example</see-other-host></stream:error>").into_bytes()
            },
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "CloseReason::StreamError(see-other-host) before any credential is sent",
            check: |r| r.stream_error() == Some("see-other-host") && !r.wrote("<auth"),
        },
        Case {
            name: "client/processing-instruction",
            role: C,
            start: Start::Ready,
            input: || b"<?xml-stylesheet href='http://evil.example/x.xsl'?>".to_vec(),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "Protocol(Xml(ProcessingInstruction))",
            check: |r| r.xml() == Some(&K::ProcessingInstruction),
        },
        Case {
            name: "client/comment",
            role: C,
            start: Start::Ready,
            input: || b"<message><!-- hi --></message>".to_vec(),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "Protocol(Xml(Comment))",
            check: |r| r.xml() == Some(&K::Comment),
        },
        Case {
            name: "client/cdata-section",
            role: C,
            start: Start::Ready,
            input: || {
                b"<message><gcm xmlns='google:mobile:data'><![CDATA[{\"message_type\":\"ack\"}]]></gcm></message>".to_vec()
            },
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            // Documented tolerance: CDATA is character data (XMPP does not forbid it); its
            // text is the JSON, here refused for a missing message_id.
            expect: "tolerated: the CDATA text is the payload; Anomaly(InvalidPayload), stream open",
            check: |r| {
                r.open()
                    && anomaly(
                        r,
                        |a| matches!(a, Anomaly::InvalidPayload { json, .. } if json == r#"{"message_type":"ack"}"#),
                    )
            },
        },
        Case {
            name: "client/char-ref-for-lt",
            role: C,
            start: Start::Ready,
            input: || b"<message><body>&#60;message/&#62;&lt;</body></message>".to_vec(),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "tolerated: text, not markup; Anomaly(UnexpectedStanza), stream open",
            check: |r| r.open() && anomaly(r, |a| matches!(a, Anomaly::UnexpectedStanza(_))),
        },
        Case {
            name: "client/4-byte-utf8-element-name",
            role: C,
            start: Start::Ready,
            input: || {
                "<message><\u{1F600} xmlns='x'/></message>"
                    .as_bytes()
                    .to_vec()
            },
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "tolerated: Anomaly(UnexpectedStanza), stream open",
            check: |r| r.open() && anomaly(r, |a| matches!(a, Anomaly::UnexpectedStanza(_))),
        },
        Case {
            name: "client/attribute-without-quotes",
            role: C,
            start: Start::Ready,
            input: || b"<message id=abc><body/></message>".to_vec(),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "Protocol(Xml(Malformed))",
            check: |r| matches!(r.xml(), Some(K::Malformed { .. })),
        },
        Case {
            name: "client/mismatched-end-tag",
            role: C,
            start: Start::Ready,
            input: || b"<message><body></bodx></message>".to_vec(),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "Protocol(Xml(Malformed))",
            check: |r| matches!(r.xml(), Some(K::Malformed { .. })),
        },
        Case {
            name: "client/unknown-namespace-prefix",
            role: C,
            start: Start::Ready,
            input: || b"<evil:message><evil:gcm>{}</evil:gcm></evil:message>".to_vec(),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            // Documented tolerance: an undeclared prefix is not resolved to any namespace,
            // so the element is not a CCS message.
            expect: "tolerated: Anomaly(UnexpectedStanza(Other)), no message taken, stream open",
            check: |r| {
                r.open()
                    && r.events_total == 1
                    && anomaly(
                        r,
                        |a| matches!(a, Anomaly::UnexpectedStanza(s) if matches!(**s, Stanza::Other(_))),
                    )
            },
        },
    ]
}
