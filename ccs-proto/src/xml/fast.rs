//! The fast path of stanza decoding: the one shape CCS writes for every message,
//!
//! `<message ATTRS><gcm xmlns="google:mobile:data">TEXT</gcm></message>`,
//!
//! recognised byte by byte, without quick-xml, and decoded to the [`Message`] the general
//! decoder ([`super::read`]) gives for it. Anything else declines (`None`) and goes to the
//! general decoder, which then also reports every error: this path never fails, it only
//! accepts what the general path accepts, with the same result. In detail, it accepts:
//!
//! - `<message`, then attributes `id`, `type`, `to`, `from` (each at most once, each after
//!   whitespace, written `name="value"` or `name='value'`), optional whitespace, `>`;
//! - optional whitespace, `<gcm xmlns="google:mobile:data">` exactly;
//! - the text, up to `</gcm>`; then optional whitespace and `</message>`, which ends the input;
//! - only after a stream header whose default namespace is `jabber:client` (the general path
//!   would otherwise not see a `<message>` of the client namespace).
//!
//! Attribute values and the text must be UTF-8 without `&` or `<` (no reference, no markup,
//! no CDATA), without a carriage return (which XML turns into a line feed) and without a
//! character XML 1.0 forbids; attribute values also without tab or line feed (which
//! attribute-value normalization turns into spaces). Whitespace is XML's: space, tab, line
//! feed, carriage return. The property tests in `fast_tests.rs` compare both paths.

use memchr::memchr;

use bytes::Bytes;

use crate::stanza::{Message, Payload, StreamHeader, ns};

/// The stanza as a CCS message, when it has exactly the shape above; `None` otherwise.
pub(super) fn message(stanza: &Bytes, header: Option<&StreamHeader>) -> Option<Message> {
    let rest = stanza.strip_prefix(b"<message")?;
    if !default_namespace_is_client(header) {
        return None;
    }
    let mut msg = Message::default();
    let rest = attributes(rest, &mut msg)?;
    let rest = skip_ws(rest).strip_prefix(GCM_OPEN)?;
    let rest = rest.strip_suffix(b"</message>")?;
    let text = trim_ws_end(rest).strip_suffix(b"</gcm>")?;
    let text = plain(text, Context::Text)?;
    msg.gcm = Some(Payload::slice_of(stanza, text.trim()));
    Some(msg)
}

/// The `<gcm>` start tag CCS writes (the namespace declared on it, so that it is in
/// [`ns::GCM`] whatever the stream header declares).
const GCM_OPEN: &[u8] = b"<gcm xmlns=\"google:mobile:data\">";

/// Whether an unprefixed element resolves to [`ns::CLIENT`] through the stream header, as
/// the general path resolves it (the first default declaration, unless empty).
fn default_namespace_is_client(header: Option<&StreamHeader>) -> bool {
    header
        .and_then(|h| h.namespaces.iter().find(|(prefix, _)| prefix.is_none()))
        .is_some_and(|(_, uri)| uri == ns::CLIENT)
}

/// Reads the `<message>` start tag's attributes into `msg`, and its `>`; returns what follows.
fn attributes<'a>(mut rest: &'a [u8], msg: &mut Message) -> Option<&'a [u8]> {
    loop {
        let after_ws = skip_ws(rest);
        if let Some(after) = after_ws.strip_prefix(b">") {
            return Some(after);
        }
        if after_ws.len() == rest.len() {
            // No whitespace before a name (or `/`, or the name goes on: `<messages`).
            return None;
        }
        let (slot, after) = if let Some(a) = after_ws.strip_prefix(b"id=") {
            (&mut msg.id, a)
        } else if let Some(a) = after_ws.strip_prefix(b"type=") {
            (&mut msg.kind, a)
        } else if let Some(a) = after_ws.strip_prefix(b"to=") {
            (&mut msg.to, a)
        } else if let Some(a) = after_ws.strip_prefix(b"from=") {
            (&mut msg.from, a)
        } else {
            return None;
        };
        if slot.is_some() {
            return None;
        }
        let (&quote, after) = after.split_first()?;
        if quote != b'"' && quote != b'\'' {
            return None;
        }
        let end = memchr(quote, after)?;
        *slot = Some(plain(&after[..end], Context::Attribute)?.to_owned());
        rest = &after[end + 1..];
    }
}

fn skip_ws(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| is_ws(b)).count();
    &s[n..]
}

fn trim_ws_end(s: &[u8]) -> &[u8] {
    let n = s.iter().rev().take_while(|&&b| is_ws(b)).count();
    &s[..s.len() - n]
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Where [`plain`] text stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    /// Character data: tab and line feed are kept as they are.
    Text,
    /// An attribute value: tab and line feed would become spaces.
    Attribute,
}

/// `s` as a string when the general path would hand it over unchanged: UTF-8, no `&` or `<`,
/// no carriage return, no character XML 1.0 forbids, and in an attribute value no tab or
/// line feed either. `None` when any of that does not hold.
fn plain(s: &[u8], context: Context) -> Option<&str> {
    // One branch-free pass (about two instructions a byte): printable ASCII other than `&`
    // and `<` is the common case, and needs no other check.
    let unusual = s.iter().fold(false, |acc, &b| {
        acc | !(0x20..0x80).contains(&b) | (b == b'&') | (b == b'<')
    });
    if unusual && !plain_slow(s, context) {
        return None;
    }
    std::str::from_utf8(s).ok()
}

/// The exact check behind [`plain`], for text holding other than printable ASCII.
fn plain_slow(s: &[u8], context: Context) -> bool {
    let bytes_ok = s.iter().all(|&b| match b {
        b'\t' | b'\n' => context == Context::Text,
        0..0x20 | b'&' | b'<' => false,
        _ => true,
    });
    // U+FFFE and U+FFFF (EF BF BE, EF BF BF in UTF-8) are not XML characters.
    bytes_ok && !s.windows(3).any(|w| matches!(w, [0xEF, 0xBF, 0xBE | 0xBF]))
}
