//! The stanza fast path ([`super::fast`]) against the general path ([`read::decode_general`]):
//! on every input the fast path either declines or gives exactly what the general path gives,
//! and [`read::decode_with`] (fast, then general) always equals the general path.

use bytes::Bytes;
use proptest::prelude::*;

use super::fast;
use super::header::parse_header;
use super::read::{self, Scratch};
use crate::mutation::{apply, ops};
use crate::stanza::{Message, Stanza, StreamHeader};

const CLIENT_HEADER: &[u8] = b"<stream:stream from=\"gcm.googleapis.com\" id=\"AF8BB607948BF55F\" \
    version=\"1.0\" xmlns:stream=\"http://etherx.jabber.org/streams\" xmlns=\"jabber:client\">";

const ACK: &str = r#"<message><gcm xmlns="google:mobile:data">{"from":"APA91bHFOtaQGSwupt5l1og000001","message_id":"m-0000000001","message_type":"ack"}</gcm></message>"#;

/// What CCS sends (and what the server role reads), the shapes the fast path takes and those
/// it must leave alone.
const SEEDS: &[&str] = &[
    ACK,
    r#"<message id=""><gcm xmlns="google:mobile:data">{"from":"APA91b","message_id":"m-1","message_type":"ack","registration_id":"APA91c"}</gcm></message>"#,
    r#"<message id=""><gcm xmlns="google:mobile:data">{"message_type":"nack","message_id":"m-2","from":"APA91b","error":"BAD_REGISTRATION","error_description":"Invalid token"}</gcm></message>"#,
    r#"<message id=""><gcm xmlns="google:mobile:data">{"category":"com.example","data":{"message_status":"MESSAGE_SENT_TO_DEVICE","original_message_id":"m-3","device_registration_id":"APA91b","message_sent_timestamp":"1430277821658"},"message_id":"dr2:m-3","message_type":"receipt","from":"gcm.googleapis.com"}</gcm></message>"#,
    r#"<message to="123@gcm.googleapis.com" from="devices@gcm.googleapis.com" type="normal" id="u-1"><gcm xmlns="google:mobile:data">{"category":"com.example.yourapp","data":{"hello":"world"},"message_id":"u-1","from":"APA91b"}</gcm></message>"#,
    r#"<message><data:gcm xmlns:data="google:mobile:data">{"message_type":"control","control_type":"CONNECTION_DRAINING"}</data:gcm></message>"#,
    r#"<message id="m-4" type="error" to="123@gcm.googleapis.com" from="gcm.googleapis.com"><gcm xmlns="google:mobile:data">{"to":"APA91b","message_id":"m-4"}</gcm><error code="400" type="modify"><bad-request xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/><text xmlns="urn:ietf:params:xml:ns:xmpp-stanzas">InvalidJson : JSON_PARSING_ERROR</text></error></message>"#,
    r#"<message id='m-5'><gcm xmlns="google:mobile:data">{"to":"APA91b","message_id":"m-5","data":{"note":"a &lt; b &amp; c"}}</gcm></message>"#,
    "<message>\n  <gcm xmlns=\"google:mobile:data\">\n{\"message_type\":\"ack\",\"message_id\":\"m-6\"}\n</gcm>\n</message>",
    r#"<iq type="get" id="p1" from="gcm.googleapis.com"><ping xmlns="urn:xmpp:ping"/></iq>"#,
];

/// Pieces that change what a stanza means or whether it is well-formed.
const TOKENS: &[&[u8]] = &[
    b"&amp;",
    b"&#65;",
    b"&#x0;",
    b"&bogus;",
    b"<![CDATA[x]]>",
    b"]]>",
    b"<!-- c -->",
    b"<?pi?>",
    b"\r",
    b"\r\n",
    b"\t",
    b"\n",
    b" ",
    b"\x0c",
    b"\0",
    b"'",
    b"\"",
    b"=",
    b"/",
    b">",
    b"<",
    b"</gcm>",
    b"</message>",
    b"<gcm xmlns=\"google:mobile:data\">",
    b" xmlns=\"jabber:client\"",
    b" xmlns=\"\"",
    b" xmlns:x=\"google:mobile:data\"",
    b"x:",
    b" id=\"x\"",
    b" id='y'",
    b" type=\"error\"",
    b" to=\"a\"",
    b" from=\"b\"",
    b" lang=\"en\"",
    b" xml:lang=\"en\"",
    b"<error/>",
    "\u{FFFE}".as_bytes(),
    "\u{FFFF}".as_bytes(),
    "\u{FEFF}".as_bytes(),
    "\u{00A0}".as_bytes(),
    "\u{2028}".as_bytes(),
    "\u{3000}".as_bytes(),
    "é".as_bytes(),
    "😀".as_bytes(),
    b"\xC3",
    b"\xFF",
    b"\x85",
    b"a",
];

fn headers() -> Vec<Option<StreamHeader>> {
    let parsed = |s: &str| Some(parse_header(s.as_bytes()).unwrap());
    let hand = |ns: &[(Option<&str>, &str)]| {
        Some(StreamHeader {
            namespaces: ns
                .iter()
                .map(|(p, u)| (p.map(str::to_owned), (*u).to_owned()))
                .collect(),
            ..StreamHeader::default()
        })
    };
    vec![
        Some(parse_header(CLIENT_HEADER).unwrap()),
        None,
        parsed(
            "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:server'>",
        ),
        parsed("<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns=''>"),
        parsed("<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>"),
        parsed("<stream xmlns='http://etherx.jabber.org/streams'>"),
        hand(&[(None, "jabber:server"), (None, "jabber:client")]),
        hand(&[(None, ""), (None, "jabber:client")]),
        hand(&[(Some("c"), "jabber:client"), (None, "jabber:client")]),
    ]
}

fn general(
    input: &[u8],
    header: Option<&StreamHeader>,
) -> Result<Stanza, crate::error::XmlErrorKind> {
    read::decode_general(
        &Bytes::copy_from_slice(input),
        header,
        &mut Scratch::default(),
    )
}

/// Checks both paths on one input; `true` when the fast path took it.
fn agree(input: &[u8], header: Option<&StreamHeader>) -> Result<bool, TestCaseError> {
    let general = general(input, header);
    let fast = fast::message(&Bytes::copy_from_slice(input), header);
    let took = fast.is_some();
    if let Some(m) = fast {
        prop_assert_eq!(
            Ok(Stanza::Message(m)),
            general.clone(),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    let combined = read::decode_with(
        &Bytes::copy_from_slice(input),
        header,
        &mut Scratch::default(),
    );
    prop_assert_eq!(combined, general);
    Ok(took)
}

fn mutated() -> impl Strategy<Value = (Vec<u8>, usize)> {
    // Mostly the header of a real stream, so that a fair share of the inputs is taken.
    let header = prop_oneof![3 => Just(0), 1 => 0..9usize];
    (0..SEEDS.len(), ops(TOKENS.len(), 4), header)
        .prop_map(|(seed, ops, header)| (apply(SEEDS[seed].as_bytes(), &ops, TOKENS), header))
}

/// Near-misses of the accepted shape: attributes, whitespace and text from small alphabets.
const NEAR: &str = concat!(
    "<message",
    "([ \t]{0,2}(id|type|to|from|xmlns|lang)=",
    "(\"([a-z]{0,3}|[a-z&;<> \t\r\n'\u{FFFE}\u{FFFF}é]{0,3})\"",
    "|'([a-z]{0,3}|[a-z&;<> \t\r\n\"\u{FFFE}\u{FFFF}é]{0,3})'|[ax]{0,3})){0,3}",
    "[ \t\r\n]{0,2}>[ \t\r\n]{0,2}<gcm xmlns=\"google:mobile:data\">",
    "([a-z{}\":]{0,8}|[a-z{}\":&;<>/ \t\r\n\\]\u{A0}\u{2028}\u{FFFE}\u{FFFF}é]{0,8})",
    "</gcm>[ \t\r\n\u{C}]{0,2}</message>",
);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn mutations_of_ccs_stanzas_decline_or_agree((input, header) in mutated()) {
        agree(&input, headers()[header].as_ref())?;
    }

    #[test]
    fn near_misses_decline_or_agree(input in NEAR, header in 0..9usize) {
        agree(input.as_bytes(), headers()[header].as_ref())?;
    }

    #[test]
    fn arbitrary_bytes_decline_or_agree(
        tail in proptest::collection::vec(any::<u8>(), 0..200),
        prefixed in any::<bool>(),
    ) {
        let mut input = if prefixed { b"<message".to_vec() } else { Vec::new() };
        input.extend_from_slice(&tail);
        for h in headers() {
            agree(&input, h.as_ref())?;
        }
    }
}

/// How many of 1,000 inputs drawn from `strategy` the fast path takes, and declines.
fn outcomes(strategy: impl Strategy<Value = (Vec<u8>, usize)>) -> (usize, usize) {
    crate::mutation::outcomes(strategy, |(input, header)| {
        agree(input, headers()[*header].as_ref())
    })
}

#[test]
fn the_properties_reach_both_outcomes() {
    // The strategies must make the fast path accept often and decline often, or the
    // properties above prove little.
    for (took, declined) in [
        outcomes(mutated()),
        outcomes(NEAR.prop_map(|s| (s.into_bytes(), 0))),
    ] {
        assert!(
            took >= 100 && declined >= 100,
            "took {took}, declined {declined}"
        );
    }
}

fn client() -> StreamHeader {
    parse_header(CLIENT_HEADER).unwrap()
}

/// The fast path takes `input` and agrees with the general path.
fn takes(input: &str) -> Message {
    let m = fast::message(&Bytes::copy_from_slice(input.as_bytes()), Some(&client()))
        .unwrap_or_else(|| panic!("declined {input}"));
    assert_eq!(
        general(input.as_bytes(), Some(&client())),
        Ok(Stanza::Message(m.clone()))
    );
    m
}

#[test]
fn takes_what_ccs_writes() {
    let m = takes(ACK);
    assert_eq!(m.id, None);
    assert!(m.gcm.unwrap().starts_with(r#"{"from":"APA91b"#));
    let m = takes(r#"<message id=""><gcm xmlns="google:mobile:data">{}</gcm></message>"#);
    assert_eq!(m.id.as_deref(), Some(""));
    let m = takes(
        "<message id='a\"b' type=\"error\"\tto='x>y' from=\"é\" >\n <gcm xmlns=\"google:mobile:data\">\t {\"k\":\"]]> é\tx\"} \n</gcm> \r\n</message>",
    );
    assert_eq!(
        (
            m.id.as_deref(),
            m.kind.as_deref(),
            m.to.as_deref(),
            m.from.as_deref()
        ),
        (Some("a\"b"), Some("error"), Some("x>y"), Some("é"))
    );
    assert_eq!(m.gcm.as_deref(), Some("{\"k\":\"]]> é\tx\"}"));
    let m = takes("<message><gcm xmlns=\"google:mobile:data\"> \u{3000}</gcm></message>");
    assert_eq!(m.gcm.as_deref(), Some(""));
}

#[test]
fn declines_each_shape_it_does_not_check() {
    let gcm = |attrs: &str, text: &str| {
        format!("<message{attrs}><gcm xmlns=\"google:mobile:data\">{text}</gcm></message>")
    };
    let cases: Vec<(&str, String)> = vec![
        ("prefixed message", r#"<c:message xmlns:c="jabber:client"><gcm xmlns="google:mobile:data">{}</gcm></message>"#.into()),
        ("namespace declared on message", gcm(r#" xmlns="jabber:client""#, "{}")),
        ("prefix declared on message", gcm(r#" xmlns:x="google:mobile:data""#, "{}")),
        ("unknown attribute", gcm(r#" lang="en""#, "{}")),
        ("prefixed attribute", gcm(r#" xml:lang="en""#, "{}")),
        ("duplicate attribute", gcm(r#" id="a" id="b""#, "{}")),
        ("entity in attribute", gcm(r#" id="a&amp;b""#, "{}")),
        ("tab in attribute", gcm(" id=\"a\tb\"", "{}")),
        ("line feed in attribute", gcm(" id=\"a\nb\"", "{}")),
        ("carriage return in attribute", gcm(" id=\"a\rb\"", "{}")),
        ("`<` in attribute", gcm(" id=\"a<b\"", "{}")),
        ("space around `=`", gcm(" id = \"a\"", "{}")),
        ("no space between attributes", gcm(" id=\"a\"type=\"b\"", "{}")),
        ("unquoted attribute", gcm(" id=a", "{}")),
        ("unclosed attribute", r#"<message id="a><gcm xmlns="google:mobile:data">{}</gcm></message>"#.into()),
        ("empty message", "<message/>".into()),
        ("another element", "<messages><gcm xmlns=\"google:mobile:data\">{}</gcm></messages>".into()),
        ("prefixed gcm", r#"<message><d:gcm xmlns:d="google:mobile:data">{}</d:gcm></message>"#.into()),
        ("gcm in single quotes", "<message><gcm xmlns='google:mobile:data'>{}</gcm></message>".into()),
        ("gcm with another attribute", r#"<message><gcm xmlns="google:mobile:data" a="b">{}</gcm></message>"#.into()),
        ("gcm in another namespace", r#"<message><gcm xmlns="google:mobile:data2">{}</gcm></message>"#.into()),
        ("entity in text", gcm("", "a &amp; b")),
        ("character reference in text", gcm("", "&#65;")),
        ("CDATA", gcm("", "<![CDATA[x]]>")),
        ("comment", gcm("", "<!-- c -->")),
        ("child element", gcm("", "<b/>")),
        ("carriage return in text", gcm("", "a\rb")),
        ("NUL in text", gcm("", "a\0b")),
        ("form feed in text", gcm("", "a\u{c}b")),
        ("U+FFFE in text", gcm("", "a\u{FFFE}b")),
        ("U+FFFF in attribute", gcm(" id=\"\u{FFFF}\"", "{}")),
        ("text before gcm", r#"<message>x<gcm xmlns="google:mobile:data">{}</gcm></message>"#.into()),
        ("form feed before </message>", "<message><gcm xmlns=\"google:mobile:data\">{}</gcm>\u{c}</message>".into()),
        ("error after gcm", r#"<message><gcm xmlns="google:mobile:data">{}</gcm><error/></message>"#.into()),
        ("space in end tag", r#"<message><gcm xmlns="google:mobile:data">{}</gcm ></message>"#.into()),
        ("data after the stanza", format!("{} ", gcm("", "{}"))),
        ("whitespace before the stanza", format!(" {}", gcm("", "{}"))),
    ];
    for (why, input) in &cases {
        assert!(
            fast::message(&Bytes::copy_from_slice(input.as_bytes()), Some(&client())).is_none(),
            "{why}: took {input}"
        );
        // Whatever the general path makes of it, the combined path does the same.
        agree(input.as_bytes(), Some(&client())).unwrap();
    }
    let invalid_utf8 = b"<message><gcm xmlns=\"google:mobile:data\">\xC3(</gcm></message>";
    assert!(fast::message(&Bytes::copy_from_slice(invalid_utf8), Some(&client())).is_none());
    agree(invalid_utf8, Some(&client())).unwrap();
}

#[test]
fn declines_unless_the_stream_puts_message_in_jabber_client() {
    for (i, header) in headers().iter().enumerate() {
        let took =
            fast::message(&Bytes::copy_from_slice(ACK.as_bytes()), header.as_ref()).is_some();
        assert_eq!(took, i == 0 || i == 8, "header {i}: {header:?}");
        agree(ACK.as_bytes(), header.as_ref()).unwrap();
    }
}

#[test]
fn every_single_edit_of_an_ack_declines_or_agrees() {
    let alphabet = crate::mutation::edit_alphabet();
    let seeds = [
        ACK,
        "<message id='i' type=\"t\"><gcm xmlns=\"google:mobile:data\"> {} </gcm> </message>",
    ];
    let header = client();
    let mut took = 0;
    for seed in seeds {
        for input in crate::mutation::single_edits(seed.as_bytes(), &alphabet) {
            took += usize::from(agree(&input, Some(&header)).unwrap());
        }
    }
    assert!(took > 10_000, "took {took}");
}

#[test]
fn the_fast_path_shares_the_payload_with_the_frame_and_the_general_path_owns_it() {
    let frame = Bytes::from_static(ACK.as_bytes());
    let Some(m) = fast::message(&frame, Some(&client())) else {
        panic!("the fast path declined CCS's own ack");
    };
    let gcm = m.gcm.unwrap();
    let inside = frame.as_ptr_range();
    assert!(
        inside.contains(&gcm.as_ptr()),
        "the payload was copied out of the frame"
    );
    assert!(gcm.starts_with('{') && gcm.ends_with('}'), "{gcm:?}");
    // What a text with an entity needs: unescaped, so a `String` of its own.
    let escaped = Bytes::from_static(
        b"<message><gcm xmlns=\"google:mobile:data\">{\"k\":\"a&amp;b\"}</gcm></message>",
    );
    let Ok(Stanza::Message(m)) =
        read::decode_with(&escaped, Some(&client()), &mut Scratch::default())
    else {
        panic!("not a message");
    };
    let gcm = m.gcm.unwrap();
    assert_eq!(gcm, r#"{"k":"a&b"}"#);
    assert!(!escaped.as_ptr_range().contains(&gcm.as_ptr()));
    assert_eq!(format!("{gcm:?}"), r#""{\"k\":\"a&b\"}""#);
    assert_eq!(gcm.into_string(), r#"{"k":"a&b"}"#);
}
