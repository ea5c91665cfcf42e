//! Every encoder in `ccs_proto::xml::write`: exact bytes for the fixed forms of PROTOCOL.md,
//! and every output parsed back with quick-xml.

mod xml_tree;

use std::collections::BTreeMap;

use ccs_proto::stanza::ns;
use ccs_proto::xml::write::{self, MessageAttrs};
use xml_tree::{parse, parse_bytes, sanitized};

fn written(f: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut out = Vec::new();
    f(&mut out);
    String::from_utf8(out).expect("UTF-8")
}

/// A stream header is never closed on its own; parse it with the closing tag after it.
fn parse_stream(header: &str) -> xml_tree::El {
    let mut doc = header.to_owned();
    doc.push_str(&written(write::stream_end));
    parse(&doc)
}

#[test]
fn client_header_exact() {
    let h = written(|o| write::client_header(o, "gcm.googleapis.com"));
    assert_eq!(
        h,
        r#"<stream:stream to="gcm.googleapis.com" version="1.0" xmlns="jabber:client" xmlns:stream="http://etherx.jabber.org/streams">"#
    );
    assert!(!h.ends_with("/>"));
    let root = parse_stream(&h);
    assert_eq!(root.ns.as_deref(), Some(ns::STREAMS));
    assert_eq!(root.name, "stream");
    assert_eq!(root.attr("to"), Some("gcm.googleapis.com"));
    assert_eq!(root.attr("version"), Some("1.0"));
    assert!(root.children.is_empty());
}

#[test]
fn client_header_escapes_to() {
    let h = written(|o| write::client_header(o, "a\"b<c>&'d"));
    assert!(h.contains(r#"to="a&quot;b&lt;c&gt;&amp;&apos;d""#), "{h}");
    assert_eq!(parse_stream(&h).attr("to"), Some("a\"b<c>&'d"));
}

#[test]
fn stream_end_and_keepalive() {
    assert_eq!(written(write::stream_end), "</stream:stream>");
    assert_eq!(written(write::whitespace_keepalive), " ");
    // A keepalive between stanzas is plain whitespace inside the stream.
    let mut doc = written(|o| write::client_header(o, "gcm.googleapis.com"));
    doc.push_str(&written(write::whitespace_keepalive));
    let root = parse_stream(&doc);
    assert_eq!(root.text(), " ");
}

#[test]
fn server_header_exact() {
    let h = written(|o| write::server_header(o, "gcm.googleapis.com", "AF8BB607948BF55F"));
    assert_eq!(
        h,
        r#"<stream:stream from="gcm.googleapis.com" id="AF8BB607948BF55F" version="1.0" xmlns:stream="http://etherx.jabber.org/streams" xmlns="jabber:client">"#
    );
    let root = parse_stream(&h);
    assert_eq!(root.ns.as_deref(), Some(ns::STREAMS));
    assert_eq!(root.attr("id"), Some("AF8BB607948BF55F"));
    assert_eq!(root.attr("from"), Some("gcm.googleapis.com"));
}

#[test]
fn features_sasl_exact() {
    let f = written(|o| write::features_sasl(o, &["X-OAUTH2", "X-GOOGLE-TOKEN", "PLAIN"]));
    assert_eq!(
        f,
        r#"<stream:features><mechanisms xmlns="urn:ietf:params:xml:ns:xmpp-sasl"><mechanism>X-OAUTH2</mechanism><mechanism>X-GOOGLE-TOKEN</mechanism><mechanism>PLAIN</mechanism></mechanisms></stream:features>"#
    );
    // Inside a stream, so the `stream:` prefix is bound.
    let mut doc = written(|o| write::server_header(o, "gcm.googleapis.com", "X"));
    doc.push_str(&f);
    let root = parse_stream(&doc);
    let features = root.child(ns::STREAMS, "features").unwrap();
    let mechs = features.child(ns::SASL, "mechanisms").unwrap();
    let names: Vec<String> = mechs.elements().map(|m| m.text()).collect();
    assert_eq!(names, ["X-OAUTH2", "X-GOOGLE-TOKEN", "PLAIN"]);

    let empty = written(|o| write::features_sasl(o, &[]));
    assert_eq!(
        empty,
        r#"<stream:features><mechanisms xmlns="urn:ietf:params:xml:ns:xmpp-sasl"></mechanisms></stream:features>"#
    );
    let odd = written(|o| write::features_sasl(o, &["A<B"]));
    let mut doc = written(|o| write::server_header(o, "d", "X"));
    doc.push_str(&odd);
    let root = parse_stream(&doc);
    let mechs = root
        .child(ns::STREAMS, "features")
        .and_then(|f| f.child(ns::SASL, "mechanisms"))
        .unwrap();
    assert_eq!(mechs.elements().next().unwrap().text(), "A<B");
}

#[test]
fn features_bind_exact() {
    let f = written(|o| write::features_bind(o, true));
    assert_eq!(
        f,
        r#"<stream:features><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"/><session xmlns="urn:ietf:params:xml:ns:xmpp-session"/></stream:features>"#
    );
    let g = written(|o| write::features_bind(o, false));
    assert_eq!(
        g,
        r#"<stream:features><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"/></stream:features>"#
    );
    for features in [f, g] {
        let mut doc = written(|o| write::server_header(o, "d", "X"));
        doc.push_str(&features);
        let root = parse_stream(&doc);
        let el = root.child(ns::STREAMS, "features").unwrap();
        assert!(el.child(ns::BIND, "bind").is_some());
    }
}

#[test]
fn sasl_success_and_failure_exact() {
    let s = written(write::sasl_success);
    assert_eq!(s, r#"<success xmlns="urn:ietf:params:xml:ns:xmpp-sasl"/>"#);
    assert_eq!(parse(&s).ns.as_deref(), Some(ns::SASL));

    let f = written(|o| write::sasl_failure(o, "not-authorized", None));
    assert_eq!(
        f,
        r#"<failure xmlns="urn:ietf:params:xml:ns:xmpp-sasl"><not-authorized/></failure>"#
    );
    let root = parse(&f);
    assert_eq!(root.ns.as_deref(), Some(ns::SASL));
    assert!(root.child(ns::SASL, "not-authorized").is_some());

    let f = written(|o| write::sasl_failure(o, "incorrect-encoding", Some("bad <base64> & co")));
    assert_eq!(
        f,
        r#"<failure xmlns="urn:ietf:params:xml:ns:xmpp-sasl"><incorrect-encoding/><text>bad &lt;base64&gt; &amp; co</text></failure>"#
    );
    let root = parse(&f);
    assert_eq!(
        root.child(ns::SASL, "text").unwrap().text(),
        "bad <base64> & co"
    );
}

#[test]
fn stream_error_exact() {
    let e = written(|o| write::stream_error(o, "invalid-xml", None));
    // The form FCMS/BAU matched exactly (PROTOCOL.md §8).
    assert_eq!(
        e,
        r#"<stream:error><invalid-xml xmlns="urn:ietf:params:xml:ns:xmpp-streams"/></stream:error>"#
    );
    let e2 = written(|o| write::stream_error(o, "policy-violation", Some("too <big>")));
    assert_eq!(
        e2,
        r#"<stream:error><policy-violation xmlns="urn:ietf:params:xml:ns:xmpp-streams"/><text xmlns="urn:ietf:params:xml:ns:xmpp-streams">too &lt;big&gt;</text></stream:error>"#
    );
    for (err, cond) in [(e, "invalid-xml"), (e2, "policy-violation")] {
        let mut doc = written(|o| write::server_header(o, "d", "X"));
        doc.push_str(&err);
        let root = parse_stream(&doc);
        let el = root.child(ns::STREAMS, "error").unwrap();
        assert!(el.child(ns::STREAM_ERRORS, cond).is_some());
    }
}

#[test]
fn auth_plain_exact() {
    let a =
        written(|o| write::auth_plain(o, "", "123456789012@gcm.googleapis.com", "AIza...key..."));
    assert_eq!(
        a,
        r#"<auth mechanism="PLAIN" xmlns="urn:ietf:params:xml:ns:xmpp-sasl">ADEyMzQ1Njc4OTAxMkBnY20uZ29vZ2xlYXBpcy5jb20AQUl6YS4uLmtleS4uLg==</auth>"#
    );
    let root = parse(&a);
    assert_eq!(root.ns.as_deref(), Some(ns::SASL));
    assert_eq!(root.attr("mechanism"), Some("PLAIN"));
    let creds = ccs_proto::sasl::decode_plain(&root.text()).unwrap();
    assert_eq!(creds.authzid, "");
    assert_eq!(creds.authcid, "123456789012@gcm.googleapis.com");
    assert_eq!(creds.password, "AIza...key...");

    // A long FCM-era key still gives one line with no whitespace.
    let key = "AAAA1234567:APA91b".to_owned() + &"x".repeat(140);
    let a = written(|o| write::auth_plain(o, "", "1@gcm.googleapis.com", &key));
    let text = parse(&a).text();
    assert!(!text.contains(char::is_whitespace));
    assert_eq!(ccs_proto::sasl::decode_plain(&text).unwrap().password, key);
}

#[test]
fn iq_bind_exact() {
    let b = written(|o| write::iq_bind_set(o, "b1", None));
    assert_eq!(
        b,
        r#"<iq type="set" id="b1"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"/></iq>"#
    );
    let root = parse(&b);
    assert_eq!(root.attr("type"), Some("set"));
    assert!(root.child(ns::BIND, "bind").is_some());

    let b = written(|o| write::iq_bind_set(o, "GUID-1", Some("test")));
    assert_eq!(
        b,
        r#"<iq type="set" id="GUID-1"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"><resource>test</resource></bind></iq>"#
    );
    let root = parse(&b);
    let bind = root.child(ns::BIND, "bind").unwrap();
    assert_eq!(bind.child(ns::BIND, "resource").unwrap().text(), "test");

    let r =
        written(|o| write::iq_bind_result(o, Some("b1"), "SENDER_ID@gcm.googleapis.com/RESOURCE"));
    assert_eq!(
        r,
        r#"<iq type="result" id="b1"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"><jid>SENDER_ID@gcm.googleapis.com/RESOURCE</jid></bind></iq>"#
    );
    let r = written(|o| write::iq_bind_result(o, None, "1@gcm.googleapis.com/test0FAD177A"));
    assert_eq!(
        r,
        r#"<iq type="result"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"><jid>1@gcm.googleapis.com/test0FAD177A</jid></bind></iq>"#
    );
    let root = parse(&r);
    assert_eq!(root.attr("id"), None);
    let jid = root
        .child(ns::BIND, "bind")
        .and_then(|b| b.child(ns::BIND, "jid"))
        .unwrap();
    assert_eq!(jid.text(), "1@gcm.googleapis.com/test0FAD177A");
}

#[test]
fn iq_session_ping_result_error_exact() {
    let s = written(|o| write::iq_session_set(o, "s1"));
    assert_eq!(
        s,
        r#"<iq type="set" id="s1"><session xmlns="urn:ietf:params:xml:ns:xmpp-session"/></iq>"#
    );
    assert!(parse(&s).child(ns::SESSION, "session").is_some());

    let p = written(|o| write::iq_ping(o, "c2s1", Some("gcm.googleapis.com")));
    assert_eq!(
        p,
        r#"<iq type="get" id="c2s1" to="gcm.googleapis.com"><ping xmlns="urn:xmpp:ping"/></iq>"#
    );
    let p2 = written(|o| write::iq_ping(o, "c2s1", None));
    assert_eq!(
        p2,
        r#"<iq type="get" id="c2s1"><ping xmlns="urn:xmpp:ping"/></iq>"#
    );
    for p in [p, p2] {
        assert!(parse(&p).child(ns::PING, "ping").is_some());
    }

    let r = written(|o| write::iq_result(o, Some("c2s1"), None));
    assert_eq!(r, r#"<iq type="result" id="c2s1"/>"#);
    let r2 = written(|o| write::iq_result(o, Some("p1"), Some("1@gcm.googleapis.com/r")));
    assert_eq!(
        r2,
        r#"<iq type="result" id="p1" to="1@gcm.googleapis.com/r"/>"#
    );
    let r3 = written(|o| write::iq_result(o, None, None));
    assert_eq!(r3, r#"<iq type="result"/>"#);
    for r in [r, r2, r3] {
        let root = parse(&r);
        assert_eq!(root.attr("type"), Some("result"));
        assert!(root.children.is_empty());
    }

    let e = written(|o| {
        write::iq_error(
            o,
            Some("x1"),
            Some("gcm.googleapis.com"),
            "cancel",
            "service-unavailable",
        )
    });
    assert_eq!(
        e,
        r#"<iq type="error" id="x1" to="gcm.googleapis.com"><error type="cancel"><service-unavailable xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></iq>"#
    );
    let e2 = written(|o| write::iq_error(o, None, None, "cancel", "feature-not-implemented"));
    assert_eq!(
        e2,
        r#"<iq type="error"><error type="cancel"><feature-not-implemented xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></iq>"#
    );
    let root = parse(&e);
    let err = root.child(ns::CLIENT, "error").or_else(|| {
        // No default namespace on a lone stanza: the error element is unbound.
        root.elements().find(|e| e.name == "error")
    });
    let err = err.unwrap();
    assert_eq!(err.attr("type"), Some("cancel"));
    assert!(err.child(ns::STANZAS, "service-unavailable").is_some());
    parse(&e2);
}

#[test]
fn gcm_message_exact() {
    let json = r#"{"to":"REGID","message_id":"m-123","message_type":"ack"}"#;
    let m = written(|o| {
        write::gcm_message(
            o,
            &MessageAttrs {
                id: Some(""),
                ..MessageAttrs::default()
            },
            json,
        )
    });
    // PROTOCOL.md §3.3, the app-server ack.
    assert_eq!(
        m,
        r#"<message id=""><gcm xmlns="google:mobile:data">{"to":"REGID","message_id":"m-123","message_type":"ack"}</gcm></message>"#
    );
    let root = parse(&m);
    assert_eq!(root.attr("id"), Some(""));
    assert_eq!(root.child(ns::GCM, "gcm").unwrap().text(), json);

    let m = written(|o| write::gcm_message(o, &MessageAttrs::default(), "{}"));
    assert_eq!(
        m,
        r#"<message><gcm xmlns="google:mobile:data">{}</gcm></message>"#
    );

    let attrs = MessageAttrs {
        id: Some("m-1"),
        to: Some("123@gcm.googleapis.com"),
        from: Some("devices@gcm.googleapis.com"),
        kind: Some("normal"),
    };
    let json = r#"{"data":{"a":"<b> & ]]> 'c' \"d\""},"from":"x"}"#;
    let m = written(|o| write::gcm_message(o, &attrs, json));
    assert_eq!(
        m,
        r#"<message id="m-1" to="123@gcm.googleapis.com" from="devices@gcm.googleapis.com" type="normal"><gcm xmlns="google:mobile:data">{"data":{"a":"&lt;b&gt; &amp; ]]&gt; 'c' \"d\""},"from":"x"}</gcm></message>"#
    );
    let root = parse(&m);
    assert_eq!(root.attr("to"), Some("123@gcm.googleapis.com"));
    assert_eq!(root.attr("from"), Some("devices@gcm.googleapis.com"));
    assert_eq!(root.attr("type"), Some("normal"));
    assert_eq!(root.child(ns::GCM, "gcm").unwrap().text(), json);
}

#[test]
fn gcm_message_serialize_matches_gcm_message() {
    let value = serde_json::json!({
        "to": "REGISTRATION_ID",
        "message_id": "m-1366082849205",
        "data": {"hello": "world", "html": "<p>a & b</p>"},
        "time_to_live": 600,
        "delivery_receipt_requested": true
    });
    let attrs = MessageAttrs {
        id: Some("m-1366082849205"),
        ..MessageAttrs::default()
    };
    let mut a = Vec::new();
    write::gcm_message_serialize(&mut a, &attrs, &value).unwrap();
    let json = serde_json::to_string(&value).unwrap();
    let b = written(|o| write::gcm_message(o, &attrs, &json));
    assert_eq!(String::from_utf8(a.clone()).unwrap(), b);
    let root = parse_bytes(&a);
    let text = root.child(ns::GCM, "gcm").unwrap().text();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text).unwrap(),
        value
    );

    // Unsized values too.
    let mut out = Vec::new();
    let s: &str = "a<b";
    write::gcm_message_serialize(&mut out, &MessageAttrs::default(), s).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"<message><gcm xmlns="google:mobile:data">"a&lt;b"</gcm></message>"#
    );
}

#[test]
fn gcm_message_serialize_error_leaves_no_half_stanza() {
    let mut bad: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
    bad.insert(vec![1, 2], 3);
    let mut out = b"<message id=\"prev\"/>".to_vec();
    let before = out.clone();
    let err = write::gcm_message_serialize(&mut out, &MessageAttrs::default(), &bad);
    assert!(err.is_err());
    assert_eq!(out, before);

    // A value that fails halfway through.
    let half = serde_json::json!({"a": "x".repeat(300)});
    #[derive(serde::Serialize)]
    struct Half<'a> {
        ok: &'a serde_json::Value,
        bad: BTreeMap<Vec<u8>, u32>,
    }
    let mut out = Vec::new();
    let err =
        write::gcm_message_serialize(&mut out, &MessageAttrs::default(), &Half { ok: &half, bad });
    assert!(err.is_err());
    assert!(out.is_empty());
}

#[test]
fn text_escaper_with_serde_json() {
    let value = serde_json::json!({"a": "<&>]]>", "b": [1, 2.5, null, "\u{1F600}"]});
    let mut out = b"<x>".to_vec();
    serde_json::to_writer(write::TextEscaper(&mut out), &value).unwrap();
    out.extend_from_slice(b"</x>");
    let root = parse_bytes(&out);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&root.text()).unwrap(),
        value
    );
    use std::io::Write;
    let mut out = Vec::new();
    let mut w = write::TextEscaper(&mut out);
    assert_eq!(w.write(b"a<b").unwrap(), 3);
    w.flush().unwrap();
    let tail = "&\r";
    write!(w, "{tail}").unwrap();
    assert_eq!(out, b"a&lt;b&amp;&#13;");
}

#[test]
fn stanza_error_message_exact() {
    let attrs = MessageAttrs {
        id: Some("3"),
        to: Some("123456789@gcm.googleapis.com/ABC"),
        from: None,
        kind: Some("ignored"),
    };
    let text = "InvalidJson: JSON_PARSING_ERROR : Missing Required Field: message_id\n";
    let m = written(|o| {
        write::stanza_error_message(
            o,
            &attrs,
            Some(r#"{"random": "text"}"#),
            Some("400"),
            "modify",
            "bad-request",
            Some(text),
        )
    });
    assert_eq!(
        m,
        "<message id=\"3\" type=\"error\" to=\"123456789@gcm.googleapis.com/ABC\">\
         <gcm xmlns=\"google:mobile:data\">{\"random\": \"text\"}</gcm>\
         <error code=\"400\" type=\"modify\">\
         <bad-request xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/>\
         <text xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\">InvalidJson: JSON_PARSING_ERROR : Missing Required Field: message_id\n</text>\
         </error></message>"
    );
    let root = parse(&m);
    assert_eq!(root.attr("type"), Some("error"));
    assert_eq!(root.attr("id"), Some("3"));
    assert_eq!(
        root.child(ns::GCM, "gcm").unwrap().text(),
        r#"{"random": "text"}"#
    );
    let err = root.elements().find(|e| e.name == "error").unwrap();
    assert_eq!(err.attr("code"), Some("400"));
    assert_eq!(err.attr("type"), Some("modify"));
    assert!(err.child(ns::STANZAS, "bad-request").is_some());
    assert_eq!(err.child(ns::STANZAS, "text").unwrap().text(), text);

    let minimal = written(|o| {
        write::stanza_error_message(
            o,
            &MessageAttrs::default(),
            None,
            None,
            "cancel",
            "service-unavailable",
            None,
        )
    });
    assert_eq!(
        minimal,
        r#"<message type="error"><error type="cancel"><service-unavailable xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></message>"#
    );
    parse(&minimal);
}

#[test]
fn bad_condition_names_still_parse() {
    let conditions = ["", "a b", "x:y", "1x", "<x/>", "ok\u{0}", "é", "\u{FFFF}"];
    for c in conditions {
        let docs = [
            written(|o| write::sasl_failure(o, c, Some(c))),
            written(|o| {
                write::stanza_error_message(
                    o,
                    &MessageAttrs::default(),
                    None,
                    Some(c),
                    c,
                    c,
                    Some(c),
                )
            }),
            written(|o| write::iq_error(o, Some(c), Some(c), c, c)),
        ];
        for d in docs {
            parse(&d);
        }
        let mut doc = written(|o| write::server_header(o, c, c));
        doc.push_str(&written(|o| write::stream_error(o, c, Some(c))));
        let root = parse_stream(&doc);
        assert_eq!(root.attr("id"), Some(sanitized(c).as_str()));
    }
}

#[test]
fn attributes_and_text_keep_awkward_values() {
    let awkward = "tab\there\nnl\r\ncrlf \"q\" 'a' <&> ]]> \u{1F600} \u{0}\u{FFFE}";
    let attrs = MessageAttrs {
        id: Some(awkward),
        to: Some(awkward),
        from: Some(awkward),
        kind: Some(awkward),
    };
    let m = written(|o| write::gcm_message(o, &attrs, awkward));
    let root = parse(&m);
    let want = sanitized(awkward);
    for a in ["id", "to", "from", "type"] {
        assert_eq!(root.attr(a), Some(want.as_str()), "attribute {a}");
    }
    assert_eq!(root.child(ns::GCM, "gcm").unwrap().text(), want);
}

// The checker itself must be strict, or the tests above prove nothing.

#[test]
#[should_panic]
fn checker_rejects_raw_ampersand() {
    parse("<a>&</a>");
}

#[test]
#[should_panic]
fn checker_rejects_raw_lt_in_attribute() {
    parse(r#"<a x="<"/>"#);
}

#[test]
#[should_panic]
fn checker_rejects_mismatched_end() {
    parse("<a><b></a></b>");
}

#[test]
#[should_panic]
fn checker_rejects_unbound_prefix() {
    parse("<stream:features/>");
}

#[test]
#[should_panic]
fn checker_rejects_control_characters() {
    parse("<a>\u{1}</a>");
}

#[test]
#[should_panic]
fn checker_rejects_unclosed_root() {
    parse("<a>");
}
