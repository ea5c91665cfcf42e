//! Shared helpers for the framing tests (`framing`, `seed_stanzas`): run one input through a
//! `StreamReader` whole, one byte at a time and in arbitrary pieces, and compare.
#![allow(dead_code, unreachable_pub)]

use ccs_proto::error::XmlErrorKind;
use ccs_proto::stanza::Stanza;
use ccs_proto::xml::{Event, FramerConfig, StreamReader};

/// One observable outcome: an event, or the (fatal) error kind that ended the run.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum Out {
    Event(Event),
    Error(XmlErrorKind),
}

/// Feeds `input` cut at `cuts` (sorted positions) and drains events after every piece. The
/// stream is restarted after `<success/>`, as a client does. Adjacent whitespace events are
/// merged: how whitespace is split into keepalive events depends on how it arrived.
pub fn run_cuts(input: &[u8], cuts: &[usize], config: &FramerConfig) -> Vec<Out> {
    let mut reader = StreamReader::new(config.clone());
    let mut out = Vec::new();
    let mut last = 0;
    let ends = cuts
        .iter()
        .copied()
        .filter(|&c| c > 0 && c < input.len())
        .chain(std::iter::once(input.len()));
    for end in ends {
        if end < last {
            continue;
        }
        reader.push(&input[last..end]);
        last = end;
        loop {
            match reader.next_event() {
                Ok(Some(ev)) => {
                    if ev == Event::Stanza(Stanza::SaslSuccess) {
                        reader.reset();
                    }
                    match (out.last_mut(), ev) {
                        (Some(Out::Event(Event::Whitespace(n))), Event::Whitespace(m)) => *n += m,
                        (_, ev) => out.push(Out::Event(ev)),
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    out.push(Out::Error(e.kind));
                    // Errors are sticky.
                    assert_eq!(reader.next_event().unwrap_err().kind, out_err(&out));
                    return out;
                }
            }
        }
    }
    out
}

fn out_err(out: &[Out]) -> XmlErrorKind {
    match out.last() {
        Some(Out::Error(k)) => k.clone(),
        _ => unreachable!(),
    }
}

/// Runs `input` whole and one byte at a time, asserts both give the same outcomes, and
/// returns them.
pub fn run_all_ways(input: &[u8], config: &FramerConfig) -> Vec<Out> {
    let whole = run_cuts(input, &[], config);
    let bytewise: Vec<usize> = (1..input.len()).collect();
    let by_byte = run_cuts(input, &bytewise, config);
    assert_eq!(whole, by_byte, "byte-at-a-time differs from whole input");
    whole
}

/// The default config.
pub fn cfg() -> FramerConfig {
    FramerConfig::default()
}

/// The stanzas among the outcomes.
pub fn stanzas(out: &[Out]) -> Vec<Stanza> {
    out.iter()
        .filter_map(|o| match o {
            Out::Event(Event::Stanza(s)) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

/// The server's side of a whole CCS session as captured (PROTOCOL.md §2.1, §3), with doc
/// variants: prefixed namespaces, pretty-printed payloads, a stanza error, whitespace.
pub const SERVER_SESSION: &str = concat!(
    "<?xml version='1.0' encoding='UTF-8'?>\n",
    "<stream:stream from=\"gcm.googleapis.com\" id=\"AF8BB607948BF55F\" version=\"1.0\" ",
    "xmlns:stream=\"http://etherx.jabber.org/streams\" xmlns=\"jabber:client\">",
    "<stream:features><mechanisms xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\">",
    "<mechanism>X-OAUTH2</mechanism><mechanism>X-GOOGLE-TOKEN</mechanism>",
    "<mechanism>PLAIN</mechanism></mechanisms></stream:features>",
    "<success xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"/>",
    "<stream:stream from=\"gcm.googleapis.com\" id=\"A89EBEF93CBB12CF\" version=\"1.0\" ",
    "xmlns:stream=\"http://etherx.jabber.org/streams\" xmlns=\"jabber:client\">",
    "<stream:features><bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\"/>",
    "<session xmlns=\"urn:ietf:params:xml:ns:xmpp-session\"/></stream:features>",
    "<iq type=\"result\" id=\"bind_1\"><bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\">",
    "<jid>123456789012@gcm.googleapis.com/test0FAD177A</jid></bind></iq>",
    " ",
    "<message id=\"\">\n  <gcm xmlns=\"google:mobile:data\">\n  ",
    "{\"from\":\"REGID\",\"message_id\":\"m-1366082849205\",\"message_type\":\"ack\"}\n",
    "  </gcm>\n</message>",
    "<message><data:gcm xmlns:data=\"google:mobile:data\">",
    "{\"error\":\"BAD_REGISTRATION\",\"message_id\":\"msgId1\",\"from\":\"PA91bHFOtaQGSwupt5l1og\",",
    "\"message_type\":\"nack\"}</data:gcm></message>",
    "\n \n",
    "<message><data:gcm xmlns:data=\"google:mobile:data\">{\"message_type\":\"control\",",
    "\"control_type\":\"CONNECTION_DRAINING\"}</data:gcm></message>",
    "<message to=\"123456789012@gcm.googleapis.com\" from=\"devices@gcm.googleapis.com\" ",
    "type=\"normal\"><gcm xmlns=\"google:mobile:data\">{\"category\":\"com.example.yourapp\",",
    "\"data\":{\"hello\":\"world &amp; &lt;you&gt;\"},\"message_id\":\"m-123\",\"from\":\"REGID\"}",
    "</gcm></message>",
    "<message id=\"3\" type=\"error\" to=\"123456789@gcm.googleapis.com/ABC\">",
    "<gcm xmlns=\"google:mobile:data\">{\"random\": \"text\"}</gcm>",
    "<error code=\"400\" type=\"modify\">",
    "<bad-request xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/>",
    "<text xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\">\n",
    "InvalidJson: JSON_PARSING_ERROR : Missing Required Field: message_id\\n\n",
    "</text></error></message>",
    " ",
    "</stream:stream>",
);
