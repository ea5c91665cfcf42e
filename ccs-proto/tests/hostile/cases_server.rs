//! Hostile client bytes, fed to the server role's `ServerConnection` (the emulator's core),
//! and the documented cases covered elsewhere.

use ccs_proto::error::XmlErrorKind as K;
use ccs_proto::server::{ServerCloseReason, ServerEvent, ServerState};
use ccs_proto::xml::write;

use super::{Case, MAX_PIECE, MB, Role, Run, Start, Then, client_handshake, gcm, repeat};

const S: Role = Role::ServerFacingClientBytes;

const HEADER: &str = "<stream:stream to='gcm.googleapis.com' version='1.0' \
    xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>";

fn header_then(rest: &[u8]) -> Vec<u8> {
    [HEADER.as_bytes(), rest].concat()
}

fn invalid_payload(r: &Run) -> bool {
    r.open()
        && r.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::InvalidPayload { .. }))
}

fn bound(r: &Run) -> bool {
    r.server_state == Some(ServerState::Bound)
}

fn auth_failed(r: &Run, condition: &str) -> bool {
    r.server_events
        .iter()
        .any(|e| matches!(e, ServerEvent::AuthFailed { condition: c } if c == condition))
}

pub fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "server/billion-laughs-dtd",
            role: S,
            start: Start::Fresh,
            input: || {
                b"<?xml version='1.0'?><!DOCTYPE l [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;\">]><stream:stream>&b;".to_vec()
            },
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "ProtocolError(Dtd), stream error restricted-xml sent",
            check: |r| r.xml() == Some(&K::Dtd) && r.wrote("restricted-xml"),
        },
        Case {
            name: "server/external-entity-in-stanza",
            role: S,
            start: Start::Ready,
            input: || b"<message><body>&xxe;</body></message>".to_vec(),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "ProtocolError(UndefinedEntity)",
            check: |r| matches!(r.xml(), Some(K::UndefinedEntity { .. })),
        },
        Case {
            name: "server/deep-nesting-100k",
            role: S,
            start: Start::Ready,
            input: || {
                b"<message>"
                    .iter()
                    .copied()
                    .chain(b"<a>".repeat(100_000))
                    .collect()
            },
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "ProtocolError(TooDeep { limit: 32 })",
            check: |r| r.xml() == Some(&K::TooDeep { limit: 32 }),
        },
        Case {
            name: "server/endless-stanza-10mb",
            role: S,
            start: Start::Ready,
            input: || {
                repeat(
                    "<message><gcm xmlns='google:mobile:data'>",
                    b'x',
                    10 * MB,
                    "",
                )
            },
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "ProtocolError(StanzaTooLarge { limit: 65536 }), policy-violation sent",
            check: |r| r.xml() == Some(&K::StanzaTooLarge { limit: 65536 }),
        },
        Case {
            name: "server/endless-attribute-10mb",
            role: S,
            start: Start::Ready,
            input: || repeat("<message to='", b'a', 10 * MB, ""),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "ProtocolError(StanzaTooLarge)",
            check: |r| r.xml() == Some(&K::StanzaTooLarge { limit: 65536 }),
        },
        Case {
            name: "server/endless-header-10mb",
            role: S,
            start: Start::Fresh,
            input: || repeat("<stream:stream to='", b'a', 10 * MB, ""),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "ProtocolError(HeaderTooLarge { limit: 4096 })",
            check: |r| r.xml() == Some(&K::HeaderTooLarge { limit: 4096 }),
        },
        Case {
            name: "server/id-attribute-1mb",
            role: S,
            start: Start::Ready,
            input: || repeat("<message id='", b'7', MB, "'/>"),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "ProtocolError(StanzaTooLarge)",
            check: |r| r.xml() == Some(&K::StanzaTooLarge { limit: 65536 }),
        },
        Case {
            name: "server/invalid-utf8",
            role: S,
            start: Start::Ready,
            input: || b"<message><body>\xed\xa0\x80</body></message>".to_vec(),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "ProtocolError(InvalidUtf8) (a UTF-8-encoded surrogate)",
            check: |r| r.xml() == Some(&K::InvalidUtf8),
        },
        Case {
            name: "server/nul-byte",
            role: S,
            start: Start::Ready,
            input: || b"<message><body>\0</body></message>".to_vec(),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            // FOUND BY THIS CATALOGUE (see client/nul-byte); fixed.
            expect: "ProtocolError(Malformed), stream error invalid-xml",
            check: |r| matches!(r.xml(), Some(K::Malformed { .. })) && r.wrote("invalid-xml"),
        },
        Case {
            name: "server/lone-surrogate-json-escape",
            role: S,
            start: Start::Ready,
            input: || gcm(r#"{"to":"REG","message_id":"m1","data":{"k":"\udc00"}}"#),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "InvalidPayload with message_id m1 (pending, to be nacked INVALID_JSON), stream open",
            check: invalid_payload,
        },
        Case {
            name: "server/deeply-nested-json",
            role: S,
            start: Start::Ready,
            input: || {
                gcm(&format!(
                    r#"{{"to":"REG","message_id":"m1","data":{{"k":{}}}}}"#,
                    "[".repeat(20_000)
                ))
            },
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "InvalidPayload, stream open",
            check: invalid_payload,
        },
        Case {
            name: "server/duplicate-json-keys",
            role: S,
            start: Start::Ready,
            input: || gcm(r#"{"to":"REG","message_id":"m1","message_id":"m2","data":{}}"#),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "InvalidPayload (duplicate field), stream open",
            check: invalid_payload,
        },
        Case {
            name: "server/huge-json-number",
            role: S,
            start: Start::Ready,
            input: || {
                gcm(&format!(
                    r#"{{"to":"REG","message_id":"m1","time_to_live":{}}}"#,
                    "9".repeat(30_000)
                ))
            },
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "InvalidPayload (time_to_live out of range), stream open",
            check: invalid_payload,
        },
        Case {
            name: "server/gcm-without-text",
            role: S,
            start: Start::Ready,
            input: || b"<message id='s1'><gcm xmlns='google:mobile:data'/></message>".to_vec(),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "InvalidPayload without message_id (answered by stanza id), stream open",
            check: |r| {
                r.open() && r.server_events.iter().any(|e| matches!(e, ServerEvent::InvalidPayload { message_id: None, stanza_id: Some(s), .. } if s == "s1"))
            },
        },
        Case {
            name: "server/two-gcm-elements",
            role: S,
            start: Start::Ready,
            input: || {
                b"<message><gcm xmlns='google:mobile:data'>{\"to\":\"A\",\"message_id\":\"m1\"}</gcm><gcm xmlns='google:mobile:data'>{\"to\":\"B\",\"message_id\":\"m2\"}</gcm></message>".to_vec()
            },
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "tolerated: the first <gcm> is taken (m1), the second ignored; stream open",
            check: |r| {
                r.open()
                    && r.events_total == 1
                    && matches!(&r.server_events[0], ServerEvent::Downstream { message, .. } if message.message_id().as_str() == "m1")
            },
        },
        Case {
            name: "server/stanza-before-header",
            role: S,
            start: Start::Fresh,
            input: || gcm(r#"{"to":"REG","message_id":"m1"}"#),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "ProtocolError(NotAStreamHeader)",
            check: |r| matches!(r.xml(), Some(K::NotAStreamHeader { .. })),
        },
        Case {
            name: "server/message-before-auth",
            role: S,
            start: Start::Fresh,
            input: || header_then(&gcm(r#"{"to":"REG","message_id":"m1"}"#)),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "StreamError not-authorized; no Downstream event",
            check: |r| {
                r.stream_error() == Some("not-authorized")
                    && !r
                        .server_events
                        .iter()
                        .any(|e| matches!(e, ServerEvent::Downstream { .. }))
            },
        },
        Case {
            name: "server/bind-before-auth",
            role: S,
            start: Start::Fresh,
            input: || {
                let mut b = HEADER.as_bytes().to_vec();
                write::iq_bind_set(&mut b, "bind_1", None);
                b
            },
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "StreamError not-authorized; nothing bound",
            check: |r| {
                r.stream_error() == Some("not-authorized")
                    && !r
                        .server_events
                        .iter()
                        .any(|e| matches!(e, ServerEvent::Bound { .. }))
            },
        },
        Case {
            name: "server/bytes-after-stream-end",
            role: S,
            start: Start::Ready,
            input: || b"</stream:stream><message><body>x</body></message>".to_vec(),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "ClientClosed; the bytes after the end are not processed",
            check: |r| {
                r.server_close() == Some(&ServerCloseReason::ClientClosed) && r.events_total == 1
            },
        },
        Case {
            name: "server/second-header-after-bind",
            role: S,
            start: Start::Ready,
            input: || HEADER.as_bytes().to_vec(),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            // Documented tolerance, as on the client side: taken as a restart, ignored.
            expect: "tolerated: ignored, no event, still Bound",
            check: |r| r.open() && bound(r) && r.events_total == 0,
        },
        Case {
            name: "server/acks-for-unknown-ids-flood",
            role: S,
            start: Start::Ready,
            input: || {
                (0..20_000)
                    .flat_map(|i| {
                        gcm(&format!(
                            r#"{{"to":"D","message_id":"u{i}","message_type":"ack"}}"#
                        ))
                    })
                    .collect()
            },
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "one UnknownAck each, nothing retained, stream open",
            check: |r| {
                r.open()
                    && r.events_total == 20_000
                    && r.server_events
                        .iter()
                        .all(|e| matches!(e, ServerEvent::UnknownAck(_)))
            },
        },
        Case {
            name: "server/unanswered-downstream-flood",
            role: S,
            start: Start::Ready,
            input: || {
                (0..2_000)
                    .flat_map(|i| gcm(&format!(r#"{{"to":"REG","message_id":"m{i}"}}"#)))
                    .collect()
            },
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "WindowViolation past 100 pending, StreamError policy-violation past max_pending (1000)",
            check: |r| r.stream_error() == Some("policy-violation") && r.events_total > 1000,
        },
        Case {
            name: "server/large-unanswered-downstream-flood",
            role: S,
            start: Start::Ready,
            input: || {
                let data = "d".repeat(4000);
                (0..1_200)
                    .flat_map(|i| {
                        gcm(&format!(
                            r#"{{"to":"REG","message_id":"m{i}","data":{{"k":"{data}"}}}}"#
                        ))
                    })
                    .collect()
            },
            piece: MAX_PIECE,
            // By design the server keeps every pending message (up to max_pending = 1000):
            // allowed here at 2x the stanza size each.
            retained: 1_000 * 2 * 4_100,
            then: Then::Nothing,
            expect: "StreamError policy-violation past max_pending (1000); memory grows with pending messages only",
            check: |r| r.stream_error() == Some("policy-violation") && r.events_total > 1000,
        },
        Case {
            name: "server/whitespace-flood-10mb",
            role: S,
            start: Start::Ready,
            input: || vec![b'\n'; 10 * MB],
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "tolerated, nothing buffered, stream open",
            check: |r| r.open() && bound(r),
        },
        Case {
            name: "server/trickle-whole-handshake-1-byte-per-call",
            role: S,
            start: Start::Fresh,
            input: client_handshake,
            piece: 1,
            retained: 0,
            then: Then::Nothing,
            expect: "works: Authenticated, Bound",
            check: |r| {
                bound(r)
                    && r.server_events
                        .iter()
                        .any(|e| matches!(e, ServerEvent::Bound { .. }))
            },
        },
        Case {
            name: "server/sasl-base64-garbage",
            role: S,
            start: Start::Fresh,
            input: || {
                header_then(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>!!!not*base64@@</auth>")
            },
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "AuthFailed incorrect-encoding",
            check: |r| auth_failed(r, "incorrect-encoding"),
        },
        Case {
            name: "server/sasl-wrong-mechanism",
            role: S,
            start: Start::Fresh,
            input: || {
                header_then(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='DIGEST-MD5'>=</auth>")
            },
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "AuthFailed invalid-mechanism",
            check: |r| auth_failed(r, "invalid-mechanism"),
        },
        Case {
            name: "server/sasl-wrong-key-repeated",
            role: S,
            start: Start::Fresh,
            input: || {
                let mut b = HEADER.as_bytes().to_vec();
                for _ in 0..10 {
                    write::auth_plain(&mut b, "", "123456789012@gcm.googleapis.com", "guess");
                }
                b
            },
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "AuthFailed not-authorized, then StreamError policy-violation after max_auth_failures (3)",
            check: |r| {
                auth_failed(r, "not-authorized") && r.stream_error() == Some("policy-violation")
            },
        },
        Case {
            name: "server/processing-instruction",
            role: S,
            start: Start::Ready,
            input: || b"<?php system('id'); ?>".to_vec(),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "ProtocolError(ProcessingInstruction)",
            check: |r| r.xml() == Some(&K::ProcessingInstruction),
        },
        Case {
            name: "server/comment",
            role: S,
            start: Start::Ready,
            input: || b"<!-- -->".to_vec(),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "ProtocolError(Comment)",
            check: |r| r.xml() == Some(&K::Comment),
        },
        Case {
            name: "server/mismatched-end-tag",
            role: S,
            start: Start::Ready,
            input: || b"<message><gcm xmlns='google:mobile:data'>{}</gcn></message>".to_vec(),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "ProtocolError(Malformed)",
            check: |r| matches!(r.xml(), Some(K::Malformed { .. })),
        },
        Case {
            name: "server/client-stream-error",
            role: S,
            start: Start::Ready,
            input: || {
                b"<stream:error><see-other-host xmlns='urn:ietf:params:xml:ns:xmpp-streams'>evil.example</see-other-host></stream:error>".to_vec()
            },
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Nothing,
            expect: "ClientStreamError(see-other-host)",
            check: |r| matches!(r.server_close(), Some(ServerCloseReason::ClientStreamError(e)) if e.condition == "see-other-host"),
        },
        Case {
            name: "server/eof-mid-stanza",
            role: S,
            start: Start::Ready,
            input: || b"<message><gcm xmlns='google:mobile:data'>{\"to\":".to_vec(),
            piece: MAX_PIECE,
            retained: 0,
            then: Then::Eof,
            expect: "Eof",
            check: |r| r.server_close() == Some(&ServerCloseReason::Eof),
        },
        Case {
            name: "documented/peer-stops-reading",
            role: Role::Documented,
            start: Start::Ready,
            input: Vec::new,
            piece: 1,
            retained: 0,
            then: Then::Nothing,
            expect: "the adapters bound what waits to be written (write_limit, upstream_capacity) and \
                     close a connection whose peer stops reading; covered by the adapters' tests, not here",
            check: |_| true,
        },
    ]
}
