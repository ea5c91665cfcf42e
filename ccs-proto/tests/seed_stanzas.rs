//! Every XML example of the 2013 CCS page (shared/seeds/001_*.txt), verbatim (HTML entities of
//! the page undone), through the framer, the stanza decoder and the JSON decoder. Where the
//! page's JSON is invalid (missing commas, `//` comments), the payload decodes to a clean
//! `JsonError`; the corrected copies are in `message_vectors.rs`.

mod framing_support;

use ccs_proto::message::{Incoming, NackCode};
use ccs_proto::sasl;
use ccs_proto::stanza::Stanza;
use ccs_proto::xml::{Event, FramerConfig};
use framing_support::{Out, run_all_ways, stanzas};

const SERVER_HEADER: &str = "<stream:stream from=\"gcm.googleapis.com\" id=\"AF8BB607948BF55F\" \
    version=\"1.0\" xmlns:stream=\"http://etherx.jabber.org/streams\" xmlns=\"jabber:client\">";

/// Decodes one verbatim stanza inside a server stream, all three ways.
fn stanza(verbatim: &str) -> Stanza {
    let input = format!("{SERVER_HEADER}{verbatim}");
    let out = run_all_ways(input.as_bytes(), &FramerConfig::default());
    let s = stanzas(&out);
    assert_eq!(s.len(), 1, "{out:?}");
    s.into_iter().next().unwrap()
}

fn gcm(verbatim: &str) -> String {
    match stanza(verbatim) {
        Stanza::Message(m) => m.gcm.expect("a gcm payload").into_string(),
        other => panic!("not a message: {other:?}"),
    }
}

#[test]
fn server_features_with_str_prefix() {
    let s = stanza(
        "<str:features xmlns:str=\"http://etherx.jabber.org/streams\">\n \
         <mechanisms xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\">\n   \
         <mechanism>X-OAUTH2</mechanism>\n   <mechanism>X-GOOGLE-TOKEN</mechanism>\n   \
         <mechanism>PLAIN</mechanism>\n </mechanisms>\n</str:features>",
    );
    let Stanza::Features(f) = s else { panic!() };
    assert_eq!(f.mechanisms, ["X-OAUTH2", "X-GOOGLE-TOKEN", "PLAIN"]);
}

#[test]
fn client_auth_example_decodes_but_its_blob_is_not_plain() {
    // The page's blob spans two lines and decodes to no NUL bytes (PROTOCOL.md §2.4).
    let s = stanza(
        "<auth mechanism=\"PLAIN\"\nxmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\">\
         MTI2MjAwMzQ3OTMzQHByb2plY3RzLmdjbS5hb\nmFTeUIzcmNaTmtmbnFLZEZiOW1oekNCaVlwT1JEQTJKV1d0dw==</auth>",
    );
    let Stanza::Auth(a) = s else { panic!() };
    assert_eq!(a.mechanism, "PLAIN");
    let err = sasl::decode_plain(&a.payload).unwrap_err();
    assert_eq!(err.condition(), "malformed-request");
}

#[test]
fn success() {
    assert_eq!(
        stanza("<success xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"/>"),
        Stanza::SaslSuccess
    );
}

#[test]
fn message_format_body_is_not_xml() {
    // `<gcm xmlns:google:mobile:data>` is not well-formed: a clean error, no panic.
    let input =
        format!("{SERVER_HEADER}<message><gcm xmlns:google:mobile:data>\n{{}}\n</gcm></message>");
    let out = run_all_ways(input.as_bytes(), &FramerConfig::default());
    assert!(matches!(out.last(), Some(Out::Error(_))), "{out:?}");
}

#[test]
fn request_example_has_invalid_json() {
    let json = gcm("<message id=\"\">\n<gcm xmlns=\"google:mobile:data\">\n{\n\
        \"to\":\"REGISTRATION_ID\", // \"to\" replaces \"registration_ids\"\n\
        \"message_id\":\"m-1366082849205\" // new required field\n\
        \"data\":\n{\n\"hello\":\"world\",\n}\n\"time_to_live\":\"600\",\n\
        \"delay_while_idle\": true/false\n}\n</gcm>\n</message>\n");
    assert!(json.starts_with('{') && json.ends_with('}'));
    // As the server role reads it: a clean decode error.
    assert!(ccs_proto::message::ClientMessage::from_json(&json).is_err());
}

#[test]
fn ack_example_has_invalid_json() {
    let json = gcm("<message id=\"\">\n<gcm xmlns=\"google:mobile:data\">\n{\n\
        \"from\":\"REGID\",\n\"message_id\":\"m-1366082849205\"\n\"message_type\":\"ack\"\n}\n\
        </gcm>\n</message>\n");
    assert!(Incoming::from_json(&json).is_err());
    let fixed = json.replace("\"\n\"message_type", "\",\n\"message_type");
    let Incoming::Ack(ack) = Incoming::from_json(&fixed).unwrap() else {
        panic!()
    };
    assert_eq!(ack.message_id.as_str(), "m-1366082849205");
    assert_eq!(ack.from.as_deref(), Some("REGID"));
}

#[test]
fn nack_bad_registration_prefixed_with_comment() {
    let json = gcm(
        "<message>\n<data:gcm xmlns:data=\"google:mobile:data\">\n{\n\
        \"error\":\"BAD_REGISTRATION\", // error code\n\"message_id\":\"msgId1\",\n\
        \"from\":\"PA91bHFOtaQGSwupt5l1og\",\n\"message_type\":\"nack\"\n}\n</data:gcm>\n</message>",
    );
    assert!(Incoming::from_json(&json).is_err());
    let fixed = json.replace(" // error code", "");
    let Incoming::Nack(n) = Incoming::from_json(&fixed).unwrap() else {
        panic!()
    };
    assert_eq!(n.error, NackCode::BadRegistration);
    assert_eq!(n.message_id.as_str(), "msgId1");
    assert!(!n.error.is_retryable());
}

#[test]
fn nack_invalid_ttl_composite_with_escaped_quotes() {
    let json = gcm(
        "<message>\n<data:gcm xmlns:data=\"google:mobile:data\">\n{\n\
        \"error\":\"InvalidJson : INVALID_TTL : Invalid value (-1) for \\\"time_to_live\\\": must be between 0 and \\\"2419200\\\"\\n\",\n\
        \"message_id\":\"msgId1\",\n\"from\":\"APA91bHFOtaQGSwupt5l1og\",\n\"message_type\":\"nack\"\n}\n\
        </data:gcm>\n</message>",
    );
    let Incoming::Nack(n) = Incoming::from_json(&json).unwrap() else {
        panic!("{json}")
    };
    assert_eq!(n.error, NackCode::InvalidTtl);
    assert!(
        n.raw_error
            .starts_with("InvalidJson : INVALID_TTL : Invalid value (-1)")
    );
}

#[test]
fn nack_json_type_error_composite() {
    let json = gcm(
        "<message>\n<data:gcm xmlns:data=\"google:mobile:data\">\n{\n\
        \"error\":\"InvalidJson : JSON_TYPE_ERROR : Field \\\"delay_while_idle\\\" must be a JSON java.lang.Boolean: not-boolean-user-supplied-value\\n\",\n\
        \"message_id\":\"msgId1\",\n\"from\":\"APA91bHFOtaQGSwupt5l1og\",\n\"message_type\":\"nack\"\n}\n\
        </data:gcm>\n</message>",
    );
    let Incoming::Nack(n) = Incoming::from_json(&json).unwrap() else {
        panic!()
    };
    assert_eq!(n.error, NackCode::JsonTypeError);
}

#[test]
fn stanza_error_example() {
    let s = stanza(
        "<message id=\"3\" type=\"error\" to=\"123456789@gcm.googleapis.com/ABC\">\n\
        <gcm xmlns=\"google:mobile:data\">\n{\"random\": \"text\"}\n</gcm>\n\
        <error code=\"400\" type=\"modify\">\n\
        <bad-request xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/>\n\
        <text xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\">\n\
        InvalidJson: JSON_PARSING_ERROR : Missing Required Field: message_id\\n\n\
        </text>\n</error>\n</message>\n",
    );
    let Stanza::Message(m) = s else { panic!() };
    assert_eq!(m.kind.as_deref(), Some("error"));
    assert_eq!(m.id.as_deref(), Some("3"));
    assert_eq!(m.to.as_deref(), Some("123456789@gcm.googleapis.com/ABC"));
    assert_eq!(m.gcm.as_deref(), Some("{\"random\": \"text\"}"));
    let e = m.error.unwrap();
    assert_eq!(
        (e.code.as_deref(), e.kind.as_deref()),
        (Some("400"), Some("modify"))
    );
    assert_eq!(e.condition, "bad-request");
    assert_eq!(
        e.text.as_deref(),
        Some("InvalidJson: JSON_PARSING_ERROR : Missing Required Field: message_id\\n")
    );
}

#[test]
fn upstream_example_and_its_ack() {
    let json = gcm("<message id=\"\">\n<gcm xmlns=\"google:mobile:data\">\n{\n\
        \"category\":\"com.example.yourapp\", // to know which app sent it\n\
        \"data\":\n{\n\"hello\":\"world\",\n},\n\"message_id\":\"m-123\",\n\"from\":\"REGID\"\n}\n\
        </gcm>\n</message>");
    assert!(Incoming::from_json(&json).is_err());
    let fixed = json
        .replace(" // to know which app sent it", "")
        .replace("\"world\",\n}", "\"world\"\n}");
    let up = Incoming::from_json(&fixed).unwrap();
    let Incoming::Upstream(u) = &up else { panic!() };
    assert_eq!(u.category.as_deref(), Some("com.example.yourapp"));
    assert_eq!(u.data["hello"], "world");
    // The page's ack for it, verbatim, has a missing comma too.
    let ack_json = gcm("<message id=\"\">\n<gcm xmlns=\"google:mobile:data\">\n{\n\
        \"to\":\"REGID\",\n\"message_id\":\"m-123\"\n\"message_type\":\"ack\"\n}\n</gcm>\n</message>");
    assert!(ccs_proto::message::ClientMessage::from_json(&ack_json).is_err());
    // Ours is what the page meant.
    let ours = up.ack_for().unwrap();
    assert_eq!(
        serde_json::to_value(&ours).unwrap(),
        serde_json::json!({"to": "REGID", "message_id": "m-123", "message_type": "ack"})
    );
}

#[test]
fn control_message_verbatim_is_clean_error_and_fixed_is_draining() {
    // PROTOCOL.md §3.6 (late-2014 page), missing comma included.
    let json = gcm(
        "<message>\n  <data:gcm xmlns:data=\"google:mobile:data\">\n  {\n    \
        \"message_type\":\"control\"\n    \"control_type\":\"CONNECTION_DRAINING\"\n  }\n  \
        </data:gcm>\n</message>",
    );
    assert!(Incoming::from_json(&json).is_err());
    let fixed = json.replace("\"control\"\n", "\"control\",\n");
    let Incoming::Control(c) = Incoming::from_json(&fixed).unwrap() else {
        panic!()
    };
    assert_eq!(
        c.control_type,
        ccs_proto::message::ControlType::ConnectionDraining
    );
}

#[test]
fn whitespace_keepalives_between_examples() {
    let input = format!("{SERVER_HEADER} <success xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"/> ");
    let out = run_all_ways(input.as_bytes(), &FramerConfig::default());
    assert!(matches!(out[1], Out::Event(Event::Whitespace(1))));
}
