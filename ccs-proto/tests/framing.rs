//! The framer and decoder on whole streams, one byte at a time, and in random pieces.

mod framing_support;

use framing_support::{Out, SERVER_SESSION, cfg, run_all_ways, run_cuts, stanzas};

use ccs_proto::error::XmlErrorKind;
use ccs_proto::stanza::{IqPayload, IqType, Stanza};
use ccs_proto::xml::{Event, Frame, Framer, FramerConfig, StreamReader};
use proptest::prelude::*;

const HEADER: &str = "<stream:stream from='gcm.googleapis.com' id='1' version='1.0' \
    xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>";

fn with_header(body: &str) -> String {
    format!("{HEADER}{body}")
}

fn last_error(out: &[Out]) -> Option<&XmlErrorKind> {
    match out.last() {
        Some(Out::Error(k)) => Some(k),
        _ => None,
    }
}

#[test]
fn whole_server_session() {
    let out = run_all_ways(SERVER_SESSION.as_bytes(), &cfg());
    assert!(last_error(&out).is_none(), "{out:?}");
    let headers: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Out::Event(Event::Header(h)) => Some(h.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        headers.len(),
        2,
        "header, then the restarted stream's header"
    );
    assert_eq!(headers[0].id(), Some("AF8BB607948BF55F"));
    assert_eq!(headers[0].from(), Some("gcm.googleapis.com"));
    assert_eq!(headers[0].default_namespace(), Some("jabber:client"));
    assert_eq!(headers[0].prefix.as_deref(), Some("stream"));
    assert_eq!(headers[1].id(), Some("A89EBEF93CBB12CF"));

    let s = stanzas(&out);
    let Stanza::Features(f) = &s[0] else {
        panic!("{s:?}")
    };
    assert_eq!(f.mechanisms, ["X-OAUTH2", "X-GOOGLE-TOKEN", "PLAIN"]);
    assert!(f.offers_plain() && !f.bind);
    assert_eq!(s[1], Stanza::SaslSuccess);
    let Stanza::Features(f) = &s[2] else { panic!() };
    assert!(f.bind && f.session && f.mechanisms.is_empty());
    let Stanza::Iq(iq) = &s[3] else { panic!() };
    assert_eq!(iq.kind, IqType::Result);
    assert_eq!(iq.id.as_deref(), Some("bind_1"));
    assert_eq!(
        iq.payload,
        IqPayload::Bind {
            resource: None,
            jid: Some("123456789012@gcm.googleapis.com/test0FAD177A".into())
        }
    );
    let Stanza::Message(ack) = &s[4] else {
        panic!()
    };
    assert_eq!(ack.id.as_deref(), Some(""));
    assert_eq!(
        ack.gcm.as_deref(),
        Some(r#"{"from":"REGID","message_id":"m-1366082849205","message_type":"ack"}"#)
    );
    let Stanza::Message(nack) = &s[5] else {
        panic!()
    };
    assert!(nack.gcm.as_deref().unwrap().contains("BAD_REGISTRATION"));
    let Stanza::Message(control) = &s[6] else {
        panic!()
    };
    assert!(
        control
            .gcm
            .as_deref()
            .unwrap()
            .contains("CONNECTION_DRAINING")
    );
    let Stanza::Message(up) = &s[7] else { panic!() };
    assert_eq!(up.kind.as_deref(), Some("normal"));
    assert_eq!(up.from.as_deref(), Some("devices@gcm.googleapis.com"));
    assert!(
        up.gcm
            .as_deref()
            .unwrap()
            .contains(r#""hello":"world & <you>""#)
    );
    let Stanza::Message(err) = &s[8] else {
        panic!()
    };
    assert_eq!(err.kind.as_deref(), Some("error"));
    assert_eq!(err.id.as_deref(), Some("3"));
    assert_eq!(err.gcm.as_deref(), Some(r#"{"random": "text"}"#));
    let e = err.error.as_ref().unwrap();
    assert_eq!(e.code.as_deref(), Some("400"));
    assert_eq!(e.kind.as_deref(), Some("modify"));
    assert_eq!(e.condition, "bad-request");
    assert_eq!(
        e.text.as_deref(),
        Some("InvalidJson: JSON_PARSING_ERROR : Missing Required Field: message_id\\n")
    );
    assert_eq!(s.len(), 9);
    assert_eq!(out.last(), Some(&Out::Event(Event::End)));
    let ws: usize = out
        .iter()
        .map(|o| match o {
            Out::Event(Event::Whitespace(n)) => *n,
            _ => 0,
        })
        .sum();
    assert_eq!(ws, 1 + 3 + 1);
}

#[test]
fn doc_features_with_str_prefix() {
    // The 2013 page prints the features with a `str:` prefix and no default namespace.
    let input = with_header(concat!(
        "<str:features xmlns:str=\"http://etherx.jabber.org/streams\">\n",
        " <mechanisms xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\">\n",
        "   <mechanism>X-OAUTH2</mechanism>\n   <mechanism>X-GOOGLE-TOKEN</mechanism>\n",
        "   <mechanism>PLAIN</mechanism>\n </mechanisms>\n</str:features>"
    ));
    let out = run_all_ways(input.as_bytes(), &cfg());
    let s = stanzas(&out);
    let [Stanza::Features(f)] = s.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(f.mechanisms, ["X-OAUTH2", "X-GOOGLE-TOKEN", "PLAIN"]);
}

#[test]
fn prefixed_streams_namespace_and_gcm_with_other_prefixes() {
    let input = concat!(
        "<x:stream xmlns:x=\"http://etherx.jabber.org/streams\" xmlns=\"jabber:client\">",
        "<x:features><bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\"/></x:features>",
        "<c:message xmlns:c=\"jabber:client\"><q:gcm xmlns:q=\"google:mobile:data\">{}</q:gcm></c:message>",
        "<message><gcm>not in the gcm namespace</gcm></message>",
        "<x:error><system-shutdown xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/></x:error>",
    );
    let out = run_all_ways(input.as_bytes(), &cfg());
    let s = stanzas(&out);
    assert!(matches!(&s[0], Stanza::Features(f) if f.bind));
    assert!(matches!(&s[1], Stanza::Message(m) if m.gcm.as_deref() == Some("{}")));
    assert!(matches!(&s[2], Stanza::Message(m) if m.gcm.is_none()));
    let Some(Out::Event(Event::StreamError(e))) = out.last() else {
        panic!("{out:?}")
    };
    assert_eq!(e.condition, "system-shutdown");
}

#[test]
fn attributes_any_order_and_quote_style_with_quoted_gt() {
    let input = with_header(concat!(
        "<message type='normal' id=\"a>b\" from='x>\"y' to=\"z&apos;&gt;\">",
        "<gcm xmlns='google:mobile:data'>{}</gcm></message>"
    ));
    let out = run_all_ways(input.as_bytes(), &cfg());
    let s = stanzas(&out);
    let [Stanza::Message(m)] = s.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(m.id.as_deref(), Some("a>b"));
    assert_eq!(m.from.as_deref(), Some("x>\"y"));
    assert_eq!(m.to.as_deref(), Some("z'>"));
    assert_eq!(m.kind.as_deref(), Some("normal"));
}

#[test]
fn cdata_entities_and_split_text_are_joined() {
    let input = with_header(concat!(
        "<message><gcm xmlns=\"google:mobile:data\">",
        "{\"a\":\"<![CDATA[<b>]]]]><![CDATA[>&amp;]]>&amp;&#x1F600;&#233;\"}",
        "</gcm></message>",
        "<message><gcm xmlns=\"google:mobile:data\"><![CDATA[{\"x\":\"]]]>\"}</gcm></message>",
    ));
    let out = run_all_ways(input.as_bytes(), &cfg());
    let s = stanzas(&out);
    let Stanza::Message(m) = &s[0] else {
        panic!("{out:?}")
    };
    assert_eq!(m.gcm.as_deref(), Some("{\"a\":\"<b>]]>&amp;&\u{1F600}é\"}"));
    let Stanza::Message(m) = &s[1] else { panic!() };
    assert_eq!(m.gcm.as_deref(), Some("{\"x\":\"]\"}"));
}

#[test]
fn self_closing_stanzas_and_unknown_elements_kept() {
    let input = with_header(concat!(
        "<presence/>",
        "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
    ));
    let out = run_all_ways(input.as_bytes(), &cfg());
    let s = stanzas(&out);
    let Stanza::Other(o) = &s[0] else { panic!() };
    assert_eq!(
        (o.ns.as_str(), o.name.as_str()),
        ("jabber:client", "presence")
    );
    assert_eq!(&o.raw[..], b"<presence/>");
    assert_eq!(s[1], Stanza::SaslSuccess);
}

#[test]
fn restart_bytes_in_the_same_read_as_success() {
    // The new header arrives in the same piece as <success/>: it must not be lost.
    let input = with_header(concat!(
        "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
        "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client' id='2'>",
        "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>",
    ));
    let out = run_all_ways(input.as_bytes(), &cfg());
    assert!(
        matches!(&out[2], Out::Event(Event::Header(h)) if h.id() == Some("2")),
        "{out:?}"
    );
    assert!(matches!(&out[3], Out::Event(Event::Stanza(Stanza::Features(f))) if f.bind));
}

#[test]
fn sasl_failure_and_iq_kinds() {
    let input = with_header(concat!(
        "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/><text>bad key</text></failure>",
        "<iq type='get' id='p1' from='gcm.googleapis.com'><ping xmlns='urn:xmpp:ping'/></iq>",
        "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r1</resource></bind></iq>",
        "<iq type='set' id='s'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>",
        "<iq type='error' id='e'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>",
        "<error type='cancel'><conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
        "<iq type='result' id='r'/>",
        "<iq type='get' id='q'><query xmlns='jabber:iq:roster'/></iq>",
    ));
    let out = run_all_ways(input.as_bytes(), &cfg());
    let s = stanzas(&out);
    let Stanza::SaslFailure(f) = &s[0] else {
        panic!("{out:?}")
    };
    assert_eq!(f.condition, "not-authorized");
    assert_eq!(f.text.as_deref(), Some("bad key"));
    let Stanza::Iq(ping) = &s[1] else { panic!() };
    assert_eq!(
        (ping.kind.clone(), ping.payload.clone()),
        (IqType::Get, IqPayload::Ping)
    );
    let Stanza::Iq(bind) = &s[2] else { panic!() };
    assert_eq!(
        bind.payload,
        IqPayload::Bind {
            resource: Some("r1".into()),
            jid: None
        }
    );
    let Stanza::Iq(sess) = &s[3] else { panic!() };
    assert_eq!(sess.payload, IqPayload::Session);
    let Stanza::Iq(err) = &s[4] else { panic!() };
    assert_eq!(err.error.as_ref().unwrap().condition, "conflict");
    let Stanza::Iq(res) = &s[5] else { panic!() };
    assert_eq!(
        (res.kind.clone(), res.payload.clone()),
        (IqType::Result, IqPayload::None)
    );
    let Stanza::Iq(q) = &s[6] else { panic!() };
    assert_eq!(
        q.payload,
        IqPayload::Other {
            ns: "jabber:iq:roster".into(),
            name: "query".into()
        }
    );
}

#[test]
fn stream_error_with_text() {
    let input = with_header(concat!(
        "<stream:error><invalid-xml xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/>",
        "<text xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\">parse failed</text></stream:error>",
        "</stream:stream>"
    ));
    let out = run_all_ways(input.as_bytes(), &cfg());
    let Out::Event(Event::StreamError(e)) = &out[1] else {
        panic!("{out:?}")
    };
    assert_eq!(e.condition, "invalid-xml");
    assert_eq!(e.text.as_deref(), Some("parse failed"));
    assert_eq!(out[2], Out::Event(Event::End));
}

#[test]
fn self_closed_header_is_an_empty_stream() {
    // Google's doc printed the header self-closed; that stream is over at once.
    let input = "<stream:stream to=\"gcm.googleapis.com\" version=\"1.0\" xmlns=\"jabber:client\" \
                 xmlns:stream=\"http://etherx.jabber.org/streams\"/>";
    let out = run_all_ways(input.as_bytes(), &cfg());
    assert!(
        matches!(&out[0], Out::Event(Event::Header(h)) if h.to() == Some("gcm.googleapis.com"))
    );
    assert_eq!(out[1], Out::Event(Event::End));
    assert_eq!(out.len(), 2);
}

fn error_of(input: &[u8], config: &FramerConfig) -> XmlErrorKind {
    let out = run_all_ways(input, config);
    last_error(&out)
        .cloned()
        .unwrap_or_else(|| panic!("no error: {out:?}"))
}

#[test]
fn restricted_xml_is_refused() {
    let c = cfg();
    let billion_laughs = concat!(
        "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">",
        "<!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">]>",
        "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>&lol2;"
    );
    assert_eq!(error_of(billion_laughs.as_bytes(), &c), XmlErrorKind::Dtd);
    assert_eq!(
        error_of(with_header("<!DOCTYPE x>").as_bytes(), &c),
        XmlErrorKind::Dtd
    );
    assert_eq!(
        error_of(
            with_header("<message><!DOCTYPE x></message>").as_bytes(),
            &c
        ),
        XmlErrorKind::Dtd
    );
    assert_eq!(
        error_of(with_header("<!-- hi -->").as_bytes(), &c),
        XmlErrorKind::Comment
    );
    assert_eq!(
        error_of(with_header("<message><!-- hi --></message>").as_bytes(), &c),
        XmlErrorKind::Comment
    );
    assert_eq!(
        error_of(b"<!-- before --><stream:stream>", &c),
        XmlErrorKind::Comment
    );
    assert_eq!(
        error_of(with_header("<?php evil ?>").as_bytes(), &c),
        XmlErrorKind::ProcessingInstruction
    );
    assert_eq!(
        error_of(with_header("<message><?pi x?></message>").as_bytes(), &c),
        XmlErrorKind::ProcessingInstruction
    );
    assert_eq!(
        error_of(b"<?xml-stylesheet href='x'?><stream:stream>", &c),
        XmlErrorKind::ProcessingInstruction
    );
    // The XML declaration's content is not interpreted, but it must be XML text: found by
    // fuzzing (a declaration holding NUL bytes was skipped silently).
    for decl in [
        &b"<?xml version='1.0'\0?><stream:stream>"[..],
        b"<?xml version='1.0' encoding='\xff'?><stream:stream>",
        b"<?xml version='1.0' x='\xef\xbf\xbf'?><stream:stream>",
    ] {
        assert!(
            matches!(error_of(decl, &c), XmlErrorKind::Malformed { .. }),
            "{decl:?}"
        );
    }
    assert_eq!(
        error_of(with_header("<message>&lol;</message>").as_bytes(), &c),
        XmlErrorKind::UndefinedEntity { name: "lol".into() }
    );
    assert_eq!(
        error_of(with_header("<message id='&nbsp;'/>").as_bytes(), &c),
        XmlErrorKind::UndefinedEntity {
            name: "nbsp".into()
        }
    );
    assert!(matches!(
        error_of(with_header("<message>&#0;</message>").as_bytes(), &c),
        XmlErrorKind::InvalidCharRef { .. }
    ));
    assert!(matches!(
        error_of(with_header("<message>&#xD800;</message>").as_bytes(), &c),
        XmlErrorKind::InvalidCharRef { .. }
    ));
    assert!(matches!(
        error_of(with_header("<message>&amp</message>").as_bytes(), &c),
        XmlErrorKind::UndefinedEntity { .. }
    ));
}

#[test]
fn invalid_utf8_is_refused() {
    let mut input = with_header("<message><gcm xmlns='google:mobile:data'>").into_bytes();
    input.extend_from_slice(b"{\"a\":\"\xff\xfe\"}</gcm></message>");
    assert_eq!(error_of(&input, &cfg()), XmlErrorKind::InvalidUtf8);
    let mut header =
        b"<stream:stream id='\xc3' xmlns:stream='http://etherx.jabber.org/streams'>".to_vec();
    header.push(b' ');
    assert_eq!(error_of(&header, &cfg()), XmlErrorKind::InvalidUtf8);
}

#[test]
fn stream_level_errors() {
    let c = cfg();
    assert_eq!(
        error_of(with_header("hello").as_bytes(), &c),
        XmlErrorKind::TextOutsideStanza
    );
    assert_eq!(
        error_of(with_header("<![CDATA[x]]>").as_bytes(), &c),
        XmlErrorKind::TextOutsideStanza
    );
    assert_eq!(
        error_of(with_header("</stream:stream> <message/>").as_bytes(), &c),
        XmlErrorKind::DataAfterEnd
    );
    assert!(matches!(
        error_of(with_header("</stream:wrong>").as_bytes(), &c),
        XmlErrorKind::Malformed { .. }
    ));
    assert!(matches!(
        error_of(with_header("<message><a></b></message>").as_bytes(), &c),
        XmlErrorKind::Malformed { .. }
    ));
    assert!(matches!(
        error_of(b"\x15\x03\x01\x00\x02\x02\x0a", &c),
        XmlErrorKind::NotAStreamHeader { found } if found.contains("TLS")
    ));
    assert!(matches!(
        error_of(b"<html><body>", &c),
        XmlErrorKind::NotAStreamHeader { .. }
    ));
    assert!(matches!(
        error_of(b"<stream:stream xmlns:stream='urn:wrong'>", &c),
        XmlErrorKind::NotAStreamHeader { .. }
    ));
    assert!(matches!(
        error_of(with_header("<message a='1' a='2'/>").as_bytes(), &c),
        XmlErrorKind::Malformed { .. }
    ));
    assert!(matches!(
        error_of(with_header("<message id='<'/>").as_bytes(), &c),
        XmlErrorKind::Malformed { .. }
    ));
}

#[test]
fn nesting_past_the_limit() {
    let config = FramerConfig {
        max_depth: 4,
        ..cfg()
    };
    let ok = with_header("<a><b><c><d/></c></b></a>");
    assert!(last_error(&run_all_ways(ok.as_bytes(), &config)).is_none());
    let deep = with_header("<a><b><c><d><e>");
    assert_eq!(
        error_of(deep.as_bytes(), &config),
        XmlErrorKind::TooDeep { limit: 4 }
    );
}

#[test]
fn unclosed_stanza_is_refused_once_past_the_limit_without_buffering() {
    let limit = 4096;
    let config = FramerConfig {
        max_stanza_bytes: limit,
        ..cfg()
    };
    let mut framer = Framer::new(config.clone());
    framer.push(HEADER.as_bytes());
    assert!(matches!(framer.next_frame(), Ok(Some(Frame::Header(_)))));
    framer.push(b"<message><gcm xmlns='google:mobile:data'>");
    let chunk = [b'a'; 1000];
    let mut pushed = 0;
    let err = loop {
        framer.push(&chunk);
        pushed += chunk.len();
        match framer.next_frame() {
            Ok(None) => assert!(framer.buffered() <= limit + chunk.len()),
            Ok(Some(f)) => panic!("unexpected {f:?}"),
            Err(e) => break e,
        }
        assert!(pushed < 10 * limit, "never refused");
    };
    assert_eq!(err.kind, XmlErrorKind::StanzaTooLarge { limit });
    assert!(pushed <= limit + chunk.len());
    // Sticky, and the buffer is released.
    framer.push(&chunk);
    assert_eq!(framer.next_frame().unwrap_err(), err);
    assert_eq!(framer.buffered(), 0);

    // The same for a stanza that closes but is too big, and for an endless start tag.
    let big = with_header(&format!("<message>{}</message>", "x".repeat(limit)));
    assert_eq!(
        error_of(big.as_bytes(), &config),
        XmlErrorKind::StanzaTooLarge { limit }
    );
    let endless_tag = with_header(&format!("<message id='{}", "x".repeat(2 * limit)));
    assert_eq!(
        error_of(endless_tag.as_bytes(), &config),
        XmlErrorKind::StanzaTooLarge { limit }
    );
    let endless_header = format!("<stream:stream id='{}", "x".repeat(2 * limit));
    assert_eq!(
        error_of(endless_header.as_bytes(), &config),
        XmlErrorKind::HeaderTooLarge { limit: 4096 }
    );
}

#[test]
fn a_stanza_exactly_at_the_limit_is_accepted() {
    let stanza = "<message><gcm xmlns='google:mobile:data'>{}</gcm></message>";
    let config = FramerConfig {
        max_stanza_bytes: stanza.len(),
        ..cfg()
    };
    let out = run_all_ways(with_header(stanza).as_bytes(), &config);
    assert!(last_error(&out).is_none(), "{out:?}");
    let config = FramerConfig {
        max_stanza_bytes: stanza.len() - 1,
        ..cfg()
    };
    assert!(last_error(&run_all_ways(with_header(stanza).as_bytes(), &config)).is_some());
}

#[test]
fn stanzas_are_cut_without_copying_and_offsets_reported() {
    let mut framer = Framer::new(cfg());
    let input = with_header("<presence/><message/>");
    framer.push(input.as_bytes());
    assert!(matches!(framer.next_frame(), Ok(Some(Frame::Header(_)))));
    let Ok(Some(Frame::Stanza(a))) = framer.next_frame() else {
        panic!()
    };
    assert_eq!(&a[..], b"<presence/>");
    let Ok(Some(Frame::Stanza(b))) = framer.next_frame() else {
        panic!()
    };
    assert_eq!(&b[..], b"<message/>");
    assert_eq!(framer.consumed(), input.len() as u64);
    framer.push(b" x");
    assert_eq!(framer.next_frame(), Ok(Some(Frame::Whitespace(1))));
    let err = framer.next_frame().unwrap_err();
    assert_eq!(err.offset, input.len() as u64 + 1);
}

#[test]
fn reader_survives_many_stanzas_in_one_push() {
    let mut body = String::new();
    for i in 0..1000 {
        body.push_str(&format!(
            "<message><gcm xmlns='google:mobile:data'>{{\"message_id\":\"{i}\",\"message_type\":\"ack\"}}</gcm></message>"
        ));
    }
    let mut reader = StreamReader::new(cfg());
    reader.push(with_header(&body).as_bytes());
    let mut n = 0;
    while let Some(ev) = reader.next_event().unwrap() {
        if matches!(ev, Event::Stanza(Stanza::Message(_))) {
            n += 1;
        }
    }
    assert_eq!(n, 1000);
}

fn all_vectors() -> Vec<Vec<u8>> {
    vec![
        SERVER_SESSION.as_bytes().to_vec(),
        with_header("<message id='a>b'><gcm xmlns='google:mobile:data'><![CDATA[x]]]]><![CDATA[>]]>&amp;&#65;</gcm></message>").into_bytes(),
        with_header("<message><!-- c --></message>").into_bytes(),
        with_header("<message>&bogus;</message>").into_bytes(),
        with_header("<a><b><c><d><e><f><g><h><i><j><k><l><m><n><o><p><q><r><s><t><u><v><w><x><y><z><aa><bb><cc><dd><ee><ff><gg><hh>").into_bytes(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_splits_give_identical_events(
        which in 0usize..5,
        cuts in proptest::collection::vec(0usize..4000, 0..40),
    ) {
        let input = &all_vectors()[which];
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (input.len() + 1)).collect();
        cuts.sort_unstable();
        let whole = run_cuts(input, &[], &cfg());
        let split = run_cuts(input, &cuts, &cfg());
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut input = HEADER.as_bytes().to_vec();
        input.extend_from_slice(&data);
        let whole = run_cuts(&input, &[], &cfg());
        let bytewise: Vec<usize> = (1..input.len()).collect();
        prop_assert_eq!(whole, run_cuts(&input, &bytewise, &cfg()));
    }

    #[test]
    fn arbitrary_markup_never_panics(data in "[<>/!?&;#x\\[\\]CDAT=\"' a-z:-]{0,200}") {
        let input = with_header(&data);
        let whole = run_cuts(input.as_bytes(), &[], &cfg());
        let bytewise: Vec<usize> = (1..input.len()).collect();
        prop_assert_eq!(whole, run_cuts(input.as_bytes(), &bytewise, &cfg()));
    }
}
