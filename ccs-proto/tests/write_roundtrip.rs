//! Escaping round trips: whatever string goes in, quick-xml reads back the same value.

mod xml_tree;

use ccs_proto::message::Downstream;
use ccs_proto::stanza::ns;
use ccs_proto::xml::write::{self, MessageAttrs};
use proptest::prelude::*;
use serde_json::{Value, json};
use xml_tree::{parse, parse_bytes, sanitized};

/// Strings made of pieces that stress the escaper: markup characters, `]]>`, quotes,
/// whitespace XML normalizes, control characters (JSON escapes them, XML cannot carry them),
/// the non-characters U+FFFE/U+FFFF, characters starting with the byte 0xEF, non-BMP
/// characters, text that looks like an entity or a JSON escape, and any `char` at all.
fn awkward_string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => any::<char>().prop_map(String::from),
        2 => "[a-zA-Z0-9 ]{1,8}",
        1 => Just("<".to_owned()),
        1 => Just(">".to_owned()),
        1 => Just("&".to_owned()),
        1 => Just("]]>".to_owned()),
        1 => Just("\"".to_owned()),
        1 => Just("'".to_owned()),
        1 => Just("\t".to_owned()),
        1 => Just("\n".to_owned()),
        1 => Just("\r".to_owned()),
        1 => Just("\r\n".to_owned()),
        1 => (0u32..0x20).prop_map(|c| char::from_u32(c).map(String::from).unwrap_or_default()),
        1 => Just("\u{7F}\u{85}\u{2028}".to_owned()),
        1 => Just("\u{FFFE}".to_owned()),
        1 => Just("\u{FFFF}".to_owned()),
        1 => Just("\u{FFFD}\u{FF21}\u{E000}".to_owned()),
        1 => Just("\u{1F600}\u{10FFFF}".to_owned()),
        1 => Just("&amp;&lt;&#13;&#x0;".to_owned()),
        1 => Just("\\u0000\\\"".to_owned()),
        1 => Just("<!--".to_owned()),
        1 => Just("<![CDATA[".to_owned()),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

fn json_of(s: &str) -> Value {
    json!({
        "to": s,
        "message_id": s,
        "data": { s: s, "nested": [s, 1, -2.5, true, null, {"k": s}] },
        "time_to_live": 600,
    })
}

/// `s` with U+FFFE and U+FFFF replaced by U+FFFD: what survives of a JSON string written raw
/// (serde_json escapes control characters but not these two).
fn nonchars_replaced(s: &str) -> String {
    s.replace(['\u{FFFE}', '\u{FFFF}'], "\u{FFFD}")
}

/// The text of the `<gcm>` child of a written message, as a reader sees it.
fn gcm_text(out: &[u8]) -> String {
    parse_bytes(out)
        .child(ns::GCM, "gcm")
        .expect("a <gcm> child")
        .text()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn serialized_json_round_trips(s in awkward_string()) {
        let value = json_of(&s);
        let attrs = MessageAttrs { id: Some(&s), ..MessageAttrs::default() };
        let mut out = Vec::new();
        write::gcm_message_serialize(&mut out, &attrs, &value).unwrap();
        let root = parse_bytes(&out);
        let want = sanitized(&s);
        prop_assert_eq!(root.attr("id"), Some(want.as_str()));
        let text = root.child(ns::GCM, "gcm").unwrap().text();
        let back: Value = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(back, value.clone());

        // Byte for byte what `gcm_message` writes for serde_json's own text, except for the
        // two non-characters (JSON escapes here, U+FFFD there).
        if !s.contains(['\u{FFFE}', '\u{FFFF}']) {
            let mut pre = Vec::new();
            write::gcm_message(&mut pre, &attrs, &serde_json::to_string(&value).unwrap());
            prop_assert_eq!(String::from_utf8(out).unwrap(), String::from_utf8(pre).unwrap());
        }
    }

    /// The size measured while writing (what `max_payload_bytes` limits) and the one counted
    /// without writing are both serde_json's own length, whatever the escapes add.
    #[test]
    fn measured_json_size_is_serde_jsons(s in awkward_string(), id in "[a-z0-9-]{1,12}") {
        let message = Downstream::builder("tok", id)
            .unwrap()
            .data(json_of(&s))
            .unwrap()
            .build();
        let want = serde_json::to_vec(&message).unwrap().len();
        let mut out = b"<r/>".to_vec();
        let measured = write::downstream_measured(&mut out, &message).unwrap();
        prop_assert_eq!(measured, want);
        prop_assert_eq!(write::json_len(&message).unwrap(), want);
        let mut plain = b"<r/>".to_vec();
        write::downstream(&mut plain, &message).unwrap();
        prop_assert_eq!(out, plain);
    }

    #[test]
    fn prebuilt_json_round_trips(s in awkward_string()) {
        // serde_json's own output (control characters escaped, U+FFFE/U+FFFF raw) through
        // `gcm_message`: the two non-characters become U+FFFD, everything else comes back.
        let value = json_of(&s);
        let json = serde_json::to_string(&value).unwrap();
        let mut out = Vec::new();
        write::gcm_message(&mut out, &MessageAttrs::default(), &json);
        let back: Value = serde_json::from_str(&gcm_text(&out)).unwrap();
        prop_assert_eq!(back, json_of(&nonchars_replaced(&s)));
    }

    #[test]
    fn text_escaper_round_trips(s in awkward_string()) {
        let value = json_of(&s);
        let mut out = b"<x>".to_vec();
        serde_json::to_writer(write::TextEscaper(&mut out), &value).unwrap();
        out.extend_from_slice(b"</x>");
        let back: Value = serde_json::from_str(&parse_bytes(&out).text()).unwrap();
        prop_assert_eq!(back, json_of(&nonchars_replaced(&s)));
    }

    #[test]
    fn raw_text_round_trips(s in awkward_string()) {
        // Any text (not JSON) comes back exactly, carriage returns included.
        let mut out = Vec::new();
        write::gcm_message(&mut out, &MessageAttrs::default(), &s);
        prop_assert_eq!(gcm_text(&out), sanitized(&s));

        let mut out = Vec::new();
        write::stanza_error_message(
            &mut out, &MessageAttrs::default(), Some(&s), None, "modify", "bad-request", Some(&s),
        );
        let root = parse_bytes(&out);
        prop_assert_eq!(root.child(ns::GCM, "gcm").unwrap().text(), sanitized(&s));
        let error = root.elements().find(|e| e.name == "error").unwrap();
        prop_assert_eq!(error.child(ns::STANZAS, "text").unwrap().text(), sanitized(&s));
    }

    #[test]
    fn attribute_values_round_trip(s in awkward_string()) {
        let mut escaped = Vec::new();
        write::escape_attr(&mut escaped, &s);
        let escaped = String::from_utf8(escaped).unwrap();
        let want = sanitized(&s);
        for quote in ['"', '\''] {
            let doc = format!("<a v={quote}{escaped}{quote}/>");
            let root = parse(&doc);
            prop_assert_eq!(root.attr("v"), Some(want.as_str()));
        }
        // And through every encoder that writes attributes.
        let attrs = MessageAttrs { id: Some(&s), to: Some(&s), from: Some(&s), kind: Some(&s) };
        let mut out = Vec::new();
        write::gcm_message(&mut out, &attrs, "{}");
        let root = parse_bytes(&out);
        for a in ["id", "to", "from", "type"] {
            prop_assert_eq!(root.attr(a), Some(want.as_str()));
        }
        let mut out = Vec::new();
        write::iq_ping(&mut out, &s, Some(&s));
        let root = parse_bytes(&out);
        prop_assert_eq!(root.attr("id"), Some(want.as_str()));
        prop_assert_eq!(root.attr("to"), Some(want.as_str()));
    }

    #[test]
    fn conditions_always_give_well_formed_xml(s in awkward_string()) {
        let mut out = Vec::new();
        write::sasl_failure(&mut out, &s, Some(&s));
        let root = parse_bytes(&out);
        prop_assert_eq!(root.elements().count(), 2);
        prop_assert_eq!(root.child(ns::SASL, "text").unwrap().text(), sanitized(&s));

        let mut out = Vec::new();
        write::iq_error(&mut out, Some(&s), Some(&s), &s, &s);
        parse_bytes(&out);

        let mut out = Vec::new();
        write::stanza_error_message(
            &mut out, &MessageAttrs::default(), None, Some(&s), &s, &s, Some(&s),
        );
        parse_bytes(&out);
    }

    #[test]
    fn sasl_payload_round_trips(
        authzid in "[^\u{0}]{0,40}",
        authcid in "[^\u{0}]{1,40}",
        password in "[^\u{0}]{1,200}",
    ) {
        let mut out = Vec::new();
        write::auth_plain(&mut out, &authzid, &authcid, &password);
        let text = parse_bytes(&out).text();
        prop_assert!(!text.contains(char::is_whitespace));
        let creds = ccs_proto::sasl::decode_plain(&text).unwrap();
        prop_assert_eq!(creds.authzid, authzid);
        prop_assert_eq!(creds.authcid, authcid);
        prop_assert_eq!(creds.password, password);
    }

    #[test]
    fn sasl_decoder_never_panics(s in any::<String>()) {
        let _ = ccs_proto::sasl::decode_plain(&s);
    }
}
