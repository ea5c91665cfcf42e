//! Encoders: every byte sequence either side of a CCS stream writes.
//!
//! Every function appends to an `out: &mut Vec<u8>` and never fails. Arguments are strings the
//! caller has already checked (ids, JIDs, JSON); what this module guarantees on its own is that
//! the bytes it appends are always well-formed XML for their place in the stream:
//!
//! - **Text and attribute values are escaped here.** Text gets `&amp;`, `&lt;`, `&gt;` (so
//!   `]]>` can never appear) and `&#13;` for a carriage return (an XML parser would otherwise
//!   turn a raw CR into LF). Attribute values also get `&quot;`, `&apos;` and `&#9;`, `&#10;`,
//!   `&#13;`, so attribute-value normalization cannot turn tabs and line breaks into spaces.
//! - **Characters XML 1.0 cannot carry at all** (C0 controls other than tab, LF and CR, and
//!   the non-characters U+FFFE and U+FFFF) are replaced by U+FFFD in text and attribute
//!   values, so a bad argument can never make the stream ill-formed (which would cost the
//!   whole connection). [`gcm_message_serialize`] loses nothing: serde_json already escapes
//!   control characters, and U+FFFE/U+FFFF inside JSON strings are written as the JSON escapes
//!   `\ufffe`/`\uffff`.
//! - **Condition names** (`not-authorized`, `bad-request`, `invalid-xml`, ...) are element
//!   names, so the caller should pass a valid XML NCName. They are sanitized rather than
//!   trusted, and never panic: a first character that cannot start a name becomes `_`, any
//!   later character that cannot be in a name (including `:`) becomes `-`, and an empty
//!   condition becomes `undefined-condition`.
//!
//! Attributes are written with double quotes, in a fixed order documented on each function.

use serde::Serialize;

use crate::message::{AppAck, Downstream};
use crate::stanza::ns;

pub use super::escape::{TextEscaper, escape_attr, escape_text};
use super::escape::{XmlJson, write_name};

// ------------------------------------------------------------------------------------------
// Client stream
// ------------------------------------------------------------------------------------------

/// The client's stream header (PROTOCOL.md §2.2), never self-closed:
///
/// `<stream:stream to="gcm.googleapis.com" version="1.0" xmlns="jabber:client"
/// xmlns:stream="http://etherx.jabber.org/streams">` (on one line, `to` escaped).
///
/// Written at connect and again after SASL success (§2.6). No XML declaration.
pub fn client_header(out: &mut Vec<u8>, to: &str) {
    out.reserve(128 + to.len());
    out.extend_from_slice(b"<stream:stream");
    attr(out, "to", to);
    out.extend_from_slice(b" version=\"1.0\"");
    raw_attr(out, "xmlns", ns::CLIENT);
    raw_attr(out, "xmlns:stream", ns::STREAMS);
    out.push(b'>');
}

/// Closes the stream: `</stream:stream>` (either side).
pub fn stream_end(out: &mut Vec<u8>) {
    out.extend_from_slice(b"</stream:stream>");
}

/// A whitespace keepalive: one space between stanzas (either side, PROTOCOL.md §2.11).
pub fn whitespace_keepalive(out: &mut Vec<u8>) {
    out.push(b' ');
}

// ------------------------------------------------------------------------------------------
// Server stream
// ------------------------------------------------------------------------------------------

/// The server's stream header, in CCS's attribute order (PROTOCOL.md §2.3):
///
/// `<stream:stream from=".." id=".." version="1.0"
/// xmlns:stream="http://etherx.jabber.org/streams" xmlns="jabber:client">`.
pub fn server_header(out: &mut Vec<u8>, from: &str, id: &str) {
    out.reserve(128 + from.len() + id.len());
    out.extend_from_slice(b"<stream:stream");
    attr(out, "from", from);
    attr(out, "id", id);
    out.extend_from_slice(b" version=\"1.0\"");
    raw_attr(out, "xmlns:stream", ns::STREAMS);
    raw_attr(out, "xmlns", ns::CLIENT);
    out.push(b'>');
}

/// Pre-authentication features offering SASL mechanisms, in the given order:
///
/// `<stream:features><mechanisms xmlns="urn:ietf:params:xml:ns:xmpp-sasl"><mechanism>X</mechanism>...</mechanisms></stream:features>`.
///
/// CCS offered `X-OAUTH2`, `X-GOOGLE-TOKEN`, `PLAIN`. Mechanism names are escaped as text.
pub fn features_sasl(out: &mut Vec<u8>, mechanisms: &[&str]) {
    out.reserve(96 + mechanisms.iter().map(|m| m.len() + 23).sum::<usize>());
    out.extend_from_slice(b"<stream:features><mechanisms");
    raw_attr(out, "xmlns", ns::SASL);
    out.push(b'>');
    for m in mechanisms {
        out.extend_from_slice(b"<mechanism>");
        escape_text(out, m);
        out.extend_from_slice(b"</mechanism>");
    }
    out.extend_from_slice(b"</mechanisms></stream:features>");
}

/// Post-authentication features (PROTOCOL.md §2.7):
///
/// `<stream:features><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"/><session xmlns="urn:ietf:params:xml:ns:xmpp-session"/></stream:features>`,
/// the `<session/>` only when `session` is true.
pub fn features_bind(out: &mut Vec<u8>, session: bool) {
    out.reserve(160);
    out.extend_from_slice(b"<stream:features><bind");
    raw_attr(out, "xmlns", ns::BIND);
    out.extend_from_slice(b"/>");
    if session {
        out.extend_from_slice(b"<session");
        raw_attr(out, "xmlns", ns::SESSION);
        out.extend_from_slice(b"/>");
    }
    out.extend_from_slice(b"</stream:features>");
}

/// SASL success: `<success xmlns="urn:ietf:params:xml:ns:xmpp-sasl"/>`.
pub fn sasl_success(out: &mut Vec<u8>) {
    out.extend_from_slice(b"<success");
    raw_attr(out, "xmlns", ns::SASL);
    out.extend_from_slice(b"/>");
}

/// SASL failure with a condition element and an optional text:
///
/// `<failure xmlns="urn:ietf:params:xml:ns:xmpp-sasl"><not-authorized/><text>..</text></failure>`.
///
/// `condition` is an element name (`not-authorized`, `incorrect-encoding`,
/// `malformed-request`, ...), sanitized as described in the [module documentation](self).
pub fn sasl_failure(out: &mut Vec<u8>, condition: &str, text: Option<&str>) {
    out.reserve(80 + condition.len() + text.map_or(0, |t| t.len() + 13));
    out.extend_from_slice(b"<failure");
    raw_attr(out, "xmlns", ns::SASL);
    out.extend_from_slice(b"><");
    write_name(out, condition);
    out.extend_from_slice(b"/>");
    if let Some(text) = text {
        out.extend_from_slice(b"<text>");
        escape_text(out, text);
        out.extend_from_slice(b"</text>");
    }
    out.extend_from_slice(b"</failure>");
}

/// A stream error (the stream is over after it):
///
/// `<stream:error><COND xmlns="urn:ietf:params:xml:ns:xmpp-streams"/><text xmlns="urn:ietf:params:xml:ns:xmpp-streams">..</text></stream:error>`,
/// the `<text>` only when given.
///
/// `condition` is an element name (`invalid-xml`, `not-authorized`, `policy-violation`, ...),
/// sanitized as described in the [module documentation](self).
pub fn stream_error(out: &mut Vec<u8>, condition: &str, text: Option<&str>) {
    out.reserve(128 + condition.len() + text.map_or(0, |t| t.len() + 56));
    out.extend_from_slice(b"<stream:error><");
    write_name(out, condition);
    raw_attr(out, "xmlns", ns::STREAM_ERRORS);
    out.extend_from_slice(b"/>");
    if let Some(text) = text {
        out.extend_from_slice(b"<text");
        raw_attr(out, "xmlns", ns::STREAM_ERRORS);
        out.push(b'>');
        escape_text(out, text);
        out.extend_from_slice(b"</text>");
    }
    out.extend_from_slice(b"</stream:error>");
}

// ------------------------------------------------------------------------------------------
// SASL
// ------------------------------------------------------------------------------------------

/// The SASL PLAIN request (PROTOCOL.md §2.4):
///
/// `<auth mechanism="PLAIN" xmlns="urn:ietf:params:xml:ns:xmpp-sasl">BASE64</auth>`, where
/// `BASE64` is [`crate::sasl::plain_payload`]: standard base64 with padding of
/// `authzid NUL authcid NUL password`, on one line with no whitespace.
///
/// CCS's recommended form is an empty `authzid`, `authcid` = `SENDER@gcm.googleapis.com` and
/// the server key as `password`.
pub fn auth_plain(out: &mut Vec<u8>, authzid: &str, authcid: &str, password: &str) {
    let payload = crate::sasl::plain_payload(authzid, authcid, password);
    out.reserve(80 + payload.len());
    out.extend_from_slice(b"<auth mechanism=\"PLAIN\"");
    raw_attr(out, "xmlns", ns::SASL);
    out.push(b'>');
    // Base64 text is only [A-Za-z0-9+/=]: nothing to escape.
    out.extend_from_slice(payload.as_bytes());
    out.extend_from_slice(b"</auth>");
}

// ------------------------------------------------------------------------------------------
// IQs
// ------------------------------------------------------------------------------------------

/// A resource-binding request (PROTOCOL.md §2.8):
///
/// `<iq type="set" id=".."><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"/></iq>`, or with
/// `<resource>..</resource>` inside `<bind>` when a resource is requested.
pub fn iq_bind_set(out: &mut Vec<u8>, id: &str, resource: Option<&str>) {
    out.reserve(96 + id.len() + resource.map_or(0, |r| r.len() + 28));
    iq_open(out, "set", Some(id), None);
    out.extend_from_slice(b"<bind");
    raw_attr(out, "xmlns", ns::BIND);
    match resource {
        Some(resource) => {
            out.extend_from_slice(b"><resource>");
            escape_text(out, resource);
            out.extend_from_slice(b"</resource></bind>");
        }
        None => out.extend_from_slice(b"/>"),
    }
    out.extend_from_slice(b"</iq>");
}

/// The server's answer to a binding request:
///
/// `<iq type="result" id=".."><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"><jid>..</jid></bind></iq>`,
/// with no `id` attribute when `id` is `None`.
pub fn iq_bind_result(out: &mut Vec<u8>, id: Option<&str>, jid: &str) {
    out.reserve(112 + id.map_or(0, str::len) + jid.len());
    iq_open(out, "result", id, None);
    out.extend_from_slice(b"<bind");
    raw_attr(out, "xmlns", ns::BIND);
    out.extend_from_slice(b"><jid>");
    escape_text(out, jid);
    out.extend_from_slice(b"</jid></bind></iq>");
}

/// A session request (PROTOCOL.md §2.9, optional in practice):
///
/// `<iq type="set" id=".."><session xmlns="urn:ietf:params:xml:ns:xmpp-session"/></iq>`.
pub fn iq_session_set(out: &mut Vec<u8>, id: &str) {
    out.reserve(96 + id.len());
    iq_open(out, "set", Some(id), None);
    out.extend_from_slice(b"<session");
    raw_attr(out, "xmlns", ns::SESSION);
    out.extend_from_slice(b"/></iq>");
}

/// An XEP-0199 ping:
///
/// `<iq type="get" id=".." to=".."><ping xmlns="urn:xmpp:ping"/></iq>`, with no `to`
/// attribute when `to` is `None`.
pub fn iq_ping(out: &mut Vec<u8>, id: &str, to: Option<&str>) {
    out.reserve(64 + id.len() + to.map_or(0, |t| t.len() + 6));
    iq_open(out, "get", Some(id), to);
    out.extend_from_slice(b"<ping");
    raw_attr(out, "xmlns", ns::PING);
    out.extend_from_slice(b"/></iq>");
}

/// An empty result (a pong, the answer to a session request):
///
/// `<iq type="result" id=".." to=".."/>`, each of `id` and `to` only when given.
pub fn iq_result(out: &mut Vec<u8>, id: Option<&str>, to: Option<&str>) {
    out.reserve(32 + id.map_or(0, |i| i.len() + 6) + to.map_or(0, |t| t.len() + 6));
    out.extend_from_slice(b"<iq type=\"result\"");
    opt_attr(out, "id", id);
    opt_attr(out, "to", to);
    out.extend_from_slice(b"/>");
}

/// An error answer to an `<iq>` (for example to an unknown `get` or `set`):
///
/// `<iq type="error" id=".." to=".."><error type="cancel"><service-unavailable xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></iq>`,
/// each of `id` and `to` only when given; `kind` is the error `type` (`cancel`, `modify`,
/// `wait`, `auth`, `continue`), `condition` the condition element's name (sanitized as
/// described in the [module documentation](self)).
pub fn iq_error(
    out: &mut Vec<u8>,
    id: Option<&str>,
    to: Option<&str>,
    kind: &str,
    condition: &str,
) {
    out.reserve(128 + id.map_or(0, |i| i.len() + 6) + to.map_or(0, |t| t.len() + 6) + kind.len());
    iq_open(out, "error", id, to);
    out.extend_from_slice(b"<error");
    attr(out, "type", kind);
    out.extend_from_slice(b"><");
    write_name(out, condition);
    raw_attr(out, "xmlns", ns::STANZAS);
    out.extend_from_slice(b"/></error></iq>");
}

// ------------------------------------------------------------------------------------------
// Messages
// ------------------------------------------------------------------------------------------

/// The attributes of a `<message>`; each is written only when present.
///
/// A downstream CCS message needs only `id` (ccs-rs sets it to the JSON `message_id`,
/// PROTOCOL.md Part 1); the others are for the server role (upstream messages carry `to`,
/// `from` and `type="normal"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageAttrs<'a> {
    /// The `id` attribute.
    pub id: Option<&'a str>,
    /// The `to` attribute.
    pub to: Option<&'a str>,
    /// The `from` attribute.
    pub from: Option<&'a str>,
    /// The `type` attribute.
    pub kind: Option<&'a str>,
}

/// A CCS message carrying JSON text:
///
/// `<message id=".." to=".." from=".." type=".."><gcm xmlns="google:mobile:data">ESCAPED_JSON</gcm></message>`,
/// attributes in that order and only those present. `json` is written as escaped text, as is:
/// it is not parsed or checked here.
pub fn gcm_message(out: &mut Vec<u8>, attrs: &MessageAttrs<'_>, json: &str) {
    out.reserve(GCM_OVERHEAD + attrs_len(attrs) + json.len());
    message_open(out, attrs);
    out.extend_from_slice(GCM_OPEN);
    escape_text(out, json);
    out.extend_from_slice(GCM_CLOSE_MESSAGE);
}

/// Like [`gcm_message`], serializing `value` as JSON straight into `out`, with no
/// intermediate `String`.
///
/// The JSON is compact (serde_json's `to_writer` form) and escaped as it is written, with the
/// same escaping as [`TextEscaper`], applied by a serde_json formatter to the contents of
/// JSON strings (the only place `&`, `<`, `>` can occur in JSON); the result is byte for byte
/// what [`gcm_message`] writes for `serde_json::to_string(value)`, except that U+FFFE and
/// U+FFFF inside strings are written as `\ufffe`/`\uffff` (XML cannot carry them raw; JSON
/// reads them back as the same characters) where [`gcm_message`] must replace them.
///
/// # Errors
///
/// Whatever serde_json reports (a map with non-string keys, a `Serialize` impl that fails).
/// On error `out` is truncated back to its length before the call: no half stanza is left.
pub fn gcm_message_serialize<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    attrs: &MessageAttrs<'_>,
    value: &T,
) -> Result<(), serde_json::Error> {
    gcm_message_measured(out, attrs, value).map(|_| ())
}

/// [`gcm_message_serialize`], also giving the length of the JSON as `serde_json::to_vec` would
/// write it (the XML escapes left out), measured while writing.
fn gcm_message_measured<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    attrs: &MessageAttrs<'_>,
    value: &T,
) -> Result<usize, serde_json::Error> {
    let start = out.len();
    out.reserve(GCM_OVERHEAD + attrs_len(attrs) + SERIALIZE_RESERVE);
    message_open(out, attrs);
    out.extend_from_slice(GCM_OPEN);
    let json_start = out.len();
    let mut added = 0;
    let formatter = XmlJson { added: &mut added };
    let result = value.serialize(&mut serde_json::Serializer::with_formatter(
        &mut *out, formatter,
    ));
    match result {
        Ok(()) => {
            let json_len = out.len() - json_start - added;
            out.extend_from_slice(GCM_CLOSE_MESSAGE);
            Ok(json_len)
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// A downstream message as the stanza CCS expects: `<message id="MESSAGE_ID"><gcm
/// xmlns="google:mobile:data">JSON</gcm></message>`. The stanza `id` is the `message_id`, so
/// a stanza error can be tied to its message even when the echoed JSON is unusable.
///
/// # Errors
///
/// Only if serde_json fails, which a [`Downstream`] built by its builder never makes it do;
/// `out` is then left as it was.
pub fn downstream(out: &mut Vec<u8>, message: &Downstream) -> Result<(), serde_json::Error> {
    downstream_measured(out, message).map(|_| ())
}

/// [`downstream`], also giving the size of the message's JSON in bytes (what
/// `serde_json::to_vec(message)` would give, and what `max_payload_bytes` limits), measured
/// while writing: one serialization for the stanza and its size.
///
/// # Errors
///
/// As [`downstream`]; `out` is then left as it was.
pub fn downstream_measured(
    out: &mut Vec<u8>,
    message: &Downstream,
) -> Result<usize, serde_json::Error> {
    let attrs = MessageAttrs {
        id: Some(message.message_id().as_str()),
        ..MessageAttrs::default()
    };
    gcm_message_measured(out, &attrs, message)
}

/// The size in bytes of `value` as compact JSON (what `serde_json::to_vec` would give),
/// counted without allocating.
///
/// # Errors
///
/// Whatever serde_json reports for `value`.
pub fn json_len<T: Serialize + ?Sized>(value: &T) -> Result<usize, serde_json::Error> {
    /// A writer that only counts.
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value)?;
    Ok(count.0)
}

/// The app server's ack of an upstream message or receipt:
/// `<message><gcm xmlns="google:mobile:data">{"to":..,"message_id":..,"message_type":"ack"}</gcm></message>`.
pub fn app_ack(out: &mut Vec<u8>, ack: &AppAck) {
    if gcm_message_serialize(out, &MessageAttrs::default(), ack).is_err() {
        // AppAck is two strings and a constant: serde_json cannot fail on it. Should it ever,
        // write the same JSON by hand rather than drop the ack.
        let json = serde_json::json!({
            "to": ack.to,
            "message_id": ack.message_id.as_str(),
            "message_type": "ack",
        });
        gcm_message(out, &MessageAttrs::default(), &json.to_string());
    }
}

/// A stanza error in CCS's form (PROTOCOL.md §3.8), for the server role:
///
/// `<message id=".." type="error" to=".." from=".."><gcm xmlns="google:mobile:data">ECHOED_JSON</gcm><error code="400" type="modify"><bad-request xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/><text xmlns="urn:ietf:params:xml:ns:xmpp-stanzas">..</text></error></message>`.
///
/// Attributes in the order of CCS's example: `id`, `type`, `to`, `from`; `attrs.kind` is
/// ignored (the type is always `error`). The echoed `<gcm>`, the legacy `code` attribute and
/// the `<text>` are each written only when given. `kind` is the error `type` (`modify`,
/// `cancel`, ...), `condition` the condition element's name (sanitized as described in the
/// [module documentation](self)).
pub fn stanza_error_message(
    out: &mut Vec<u8>,
    attrs: &MessageAttrs<'_>,
    echoed_json: Option<&str>,
    code: Option<&str>,
    kind: &str,
    condition: &str,
    text: Option<&str>,
) {
    out.reserve(
        256 + attrs_len(attrs)
            + echoed_json.map_or(0, str::len)
            + code.map_or(0, str::len)
            + kind.len()
            + condition.len()
            + text.map_or(0, str::len),
    );
    out.extend_from_slice(b"<message");
    opt_attr(out, "id", attrs.id);
    out.extend_from_slice(b" type=\"error\"");
    opt_attr(out, "to", attrs.to);
    opt_attr(out, "from", attrs.from);
    out.push(b'>');
    if let Some(json) = echoed_json {
        out.extend_from_slice(GCM_OPEN);
        escape_text(out, json);
        out.extend_from_slice(b"</gcm>");
    }
    out.extend_from_slice(b"<error");
    opt_attr(out, "code", code);
    attr(out, "type", kind);
    out.extend_from_slice(b"><");
    write_name(out, condition);
    raw_attr(out, "xmlns", ns::STANZAS);
    out.extend_from_slice(b"/>");
    if let Some(text) = text {
        out.extend_from_slice(b"<text");
        raw_attr(out, "xmlns", ns::STANZAS);
        out.push(b'>');
        escape_text(out, text);
        out.extend_from_slice(b"</text>");
    }
    out.extend_from_slice(b"</error></message>");
}

// ------------------------------------------------------------------------------------------
// Private helpers
// ------------------------------------------------------------------------------------------

/// `<gcm xmlns="google:mobile:data">`. Checked against [`ns::GCM`] in the tests.
const GCM_OPEN: &[u8] = b"<gcm xmlns=\"google:mobile:data\">";
/// `</gcm></message>`.
const GCM_CLOSE_MESSAGE: &[u8] = b"</gcm></message>";
/// `<message>` + `>` + [`GCM_OPEN`] + [`GCM_CLOSE_MESSAGE`] and a little slack.
const GCM_OVERHEAD: usize = 64;
/// What [`gcm_message_serialize`] reserves for the JSON up front (a typical downstream
/// message is around 200 bytes; larger ones grow the vector once or twice).
const SERIALIZE_RESERVE: usize = 256;

/// The bytes the present attributes of a `<message>` take, before escaping.
fn attrs_len(attrs: &MessageAttrs<'_>) -> usize {
    [attrs.id, attrs.to, attrs.from, attrs.kind]
        .iter()
        .map(|a| a.map_or(0, |v| v.len() + 8))
        .sum()
}

/// `<message` + attributes in the order id, to, from, type + `>`.
fn message_open(out: &mut Vec<u8>, attrs: &MessageAttrs<'_>) {
    out.extend_from_slice(b"<message");
    opt_attr(out, "id", attrs.id);
    opt_attr(out, "to", attrs.to);
    opt_attr(out, "from", attrs.from);
    opt_attr(out, "type", attrs.kind);
    out.push(b'>');
}

/// `<iq type=".." id=".." to="..">`.
fn iq_open(out: &mut Vec<u8>, kind: &'static str, id: Option<&str>, to: Option<&str>) {
    out.extend_from_slice(b"<iq");
    raw_attr(out, "type", kind);
    opt_attr(out, "id", id);
    opt_attr(out, "to", to);
    out.push(b'>');
}

/// ` name="escaped value"`.
#[inline]
fn attr(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(b' ');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"=\"");
    escape_attr(out, value);
    out.push(b'"');
}

/// ` name="value"` for a value known to need no escaping (a constant).
#[inline]
fn raw_attr(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(b' ');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"=\"");
    out.extend_from_slice(value.as_bytes());
    out.push(b'"');
}

/// [`attr`] when the value is present.
#[inline]
fn opt_attr(out: &mut Vec<u8>, name: &str, value: Option<&str>) {
    if let Some(value) = value {
        attr(out, name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(out: &[u8]) -> &str {
        std::str::from_utf8(out).unwrap()
    }

    #[test]
    fn gcm_open_matches_namespace_constant() {
        assert_eq!(GCM_OPEN, format!("<gcm xmlns=\"{}\">", ns::GCM).as_bytes());
    }

    #[test]
    fn nonchars_become_json_escapes() {
        let mut out = Vec::new();
        let v = serde_json::json!({"k\u{FFFF}": "a\u{FFFE}b\u{FF21}"});
        gcm_message_serialize(&mut out, &MessageAttrs::default(), &v).unwrap();
        assert_eq!(
            s(&out),
            "<message><gcm xmlns=\"google:mobile:data\">{\"k\\uffff\":\"a\\ufffeb\u{FF21}\"}</gcm></message>"
        );
    }
}
